#!/bin/sh
# Capture IPVS generic netlink traffic for the fixtures (see README.md here): run in the
# VM, from the repository's root, as
#
#   cargo xtask vm --module nlmon -- sh lb-userspace/src/dataplane/ipvs/captured/capture.sh ipvsadm
#   LB_CAPTURE_TEST_BIN=target/debug/deps/lb_userspace-HASH \
#     cargo xtask vm --module nlmon -- sh lb-userspace/src/dataplane/ipvs/captured/capture.sh ours
#
# `ipvsadm` runs ipvsadm's commands, `ours` the ignored test
# `dataplane::ipvs::fixtures::vm_capture::backend_requests` (IpvsDataplane);
# `ipvsadm-fwmark` and `ours-fwmark` (`backend_fwmark_requests`) the same for
# firewall-mark services. All under
# tcpdump on an nlmon device. Before each step a line `MARK <unix time> <label> <what>`
# goes to stdout; at the end the pcap, base64, between `PCAP-BEGIN` and `PCAP-END`.
# extract.py turns that output into the .txt fixtures.
set -eu
mode=${1:?usage: capture.sh ipvsadm|ours|ipvsadm-fwmark|ours-fwmark}

mark() {
    label=$1
    shift
    echo "MARK $(date +%s.%N) $label $*"
}

# ipvsadm, noting a failure (two steps fail on purpose).
step() {
    label=$1
    shift
    mark "$label" "ipvsadm $*"
    ipvsadm "$@" || echo "STATUS $label $?"
}

# Where the traffic goes: 10.0.0.0/24 and 2001:db8::/64 on a veth whose peer answers
# nothing; IPVS schedules the connections (LOCAL_OUT) and their first packets count.
ip link add lbcap0 type veth peer name lbcap1
ip link set lbcap1 up
ip link set lbcap0 up
ip addr add 10.0.0.1/24 dev lbcap0
ip -6 addr add 2001:db8::1/64 dev lbcap0 nodad

ip link add nlmon0 type nlmon
ip link set nlmon0 up
tcpdump -i nlmon0 -U -Z root -w /tmp/capture.pcap 2>/tmp/tcpdump.err &
tcpdump=$!
tries=0
until grep -q listening /tmp/tcpdump.err; do
    tries=$((tries + 1))
    [ "$tries" -lt 100 ] || { cat /tmp/tcpdump.err >&2; exit 1; }
    sleep 0.1
done
sleep 0.5

case $mode in
ipvsadm)
    step version --version
    step add-service-tcp-rr -A -t 10.0.0.100:80 -s rr
    step add-service-udp-sh -A -u 10.0.0.100:53 -s sh -b sh-fallback,sh-port
    step add-service-tcp-wlc-persistent -A -t 10.0.0.101:443 -s wlc -p 300 -M 255.255.255.0
    step add-service-ipv6-persistent -A -t '[2001:db8::100]:80' -s wrr -p 120 -M 64
    step add-dest-dr -a -t 10.0.0.100:80 -r 10.0.0.11:80 -g -w 3
    step add-dest-dr-2 -a -t 10.0.0.100:80 -r 10.0.0.12:80 -g -w 1
    step add-dest-tun -a -u 10.0.0.100:53 -r 10.0.0.21:53 -i -w 1
    step add-dest-masq-thresholds -a -t 10.0.0.101:443 -r 10.0.0.13:8443 -m -w 2 -x 100 -y 10
    step add-dest-ipv6 -a -t '[2001:db8::100]:80' -r '[2001:db8::11]:80' -g -w 1
    step add-service-exists -A -t 10.0.0.100:80 -s rr
    mark traffic "3 TCP SYNs to 10.0.0.100:80, 2 UDP datagrams to 10.0.0.100:53, 1 SYN each to 10.0.0.101:443 and [2001:db8::100]:80"
    for _ in 1 2 3; do
        timeout 0.5 bash -c 'exec 3<>/dev/tcp/10.0.0.100/80' 2>/dev/null || true
    done
    for _ in 1 2; do
        bash -c 'echo hello >/dev/udp/10.0.0.100/53' || true
    done
    timeout 0.5 bash -c 'exec 3<>/dev/tcp/10.0.0.101/443' 2>/dev/null || true
    timeout 0.5 bash -c 'exec 3<>/dev/tcp/2001:db8::100/80' 2>/dev/null || true
    step edit-service -E -t 10.0.0.100:80 -s wlc
    step edit-dest -e -t 10.0.0.100:80 -r 10.0.0.11:80 -g -w 5
    step set-timeouts --set 7200 30 60
    step get-timeouts -L --timeout
    step add-dest-gue -a -u 10.0.0.100:53 -r 10.0.0.22:53 -i -w 1 --tun-type gue --tun-port 6080 --tun-csum
    step list -Ln
    mark reference "ipvsadm -Ln --stats, --rate and -c (not kept)"
    ipvsadm -Ln --stats
    ipvsadm -Ln --rate
    ipvsadm -Lnc
    step zero-service -Z -t 10.0.0.100:80
    step zero-all -Z
    step del-service -D -u 10.0.0.100:53
    step del-dest -d -t 10.0.0.100:80 -r 10.0.0.12:80
    step del-dest-missing -d -t 10.0.0.100:80 -r 10.0.0.99:80
    mark stop "ipvsadm -D -t 10.0.0.100:80; -D -t 10.0.0.101:443; -D -t [2001:db8::100]:80"
    ipvsadm -D -t 10.0.0.100:80
    ipvsadm -D -t 10.0.0.101:443
    ipvsadm -D -t '[2001:db8::100]:80'
    ;;
ours)
    "${LB_CAPTURE_TEST_BIN:?the lb-userspace unit test binary}" --ignored --exact \
        dataplane::ipvs::fixtures::vm_capture::backend_requests --nocapture --test-threads 1
    ;;
ipvsadm-fwmark)
    step version --version
    step fwmark-add-service -A -f 7 -s rr
    step fwmark-add-service-ipv6 -A -f 7 -6 -s wlc
    step fwmark-add-dest -a -f 7 -r 10.0.0.11 -g -w 2
    step fwmark-add-dest-ipv6 -a -f 7 -6 -r '[2001:db8::11]:8080' -m -w 1
    step fwmark-list -Ln
    step fwmark-zero -Z -f 7
    step fwmark-del-service-ipv6 -D -f 7 -6
    step fwmark-stop -D -f 7
    ;;
ours-fwmark)
    "${LB_CAPTURE_TEST_BIN:?the lb-userspace unit test binary}" --ignored --exact \
        dataplane::ipvs::fixtures::vm_capture::backend_fwmark_requests --nocapture --test-threads 1
    ;;
*)
    echo "capture.sh: unknown mode $mode" >&2
    exit 2
    ;;
esac

mark end "capture stopped"
sleep 0.5
kill -INT "$tcpdump"
wait "$tcpdump" || true
cat /tmp/tcpdump.err >&2
echo PCAP-BEGIN
base64 /tmp/capture.pcap
echo PCAP-END
