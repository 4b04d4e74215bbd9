//! NAT through BPF_PROG_TEST_RUN: the client's packet leaves with the real's address and
//! port (port mapping) and the real's reply with the VIP's, for IPv4 and IPv6, TCP and UDP.
//! Expected frames come from the packet builder, which computes every checksum from
//! scratch, so equal bytes prove the incremental updates. Needs root.

use lb_common::{Outcome, xdp_action};
use lb_tests::{
    packet::{DIRECTOR_MAC, Frame, Network, TCP_ACK, TCP_SYN, hex, v4, v6},
    privilege::require_root,
    testrun::{StaticNextHops, TestBalancer, next_hop},
};
use lb_userspace::dataplane::Dataplane;

/// The director's MAC, the source of what it sends (`testrun::next_hop`).
const SRC_MAC: [u8; 6] = DIRECTOR_MAC;
const REAL_MAC: [u8; 6] = [0x02, 0xaa, 0, 0, 0, 1];
const REAL6_MAC: [u8; 6] = [0x02, 0xaa, 0, 0, 0, 0x61];

const CONFIG: &str = "
virtual_server 192.0.2.90 80 {
    lb_kind NAT
    protocol TCP
    real_server 10.1.0.11 8080 {}
}
virtual_server 192.0.2.90 53 {
    lb_kind NAT
    protocol UDP
    real_server 10.1.0.11 5353 {}
}
virtual_server 2001:db8::90 80 {
    lb_kind NAT
    protocol TCP
    real_server 2001:db8:1::11 8080 {}
}
virtual_server 192.0.2.91 53 {
    lb_kind NAT
    protocol UDP
    ops
    real_server 10.1.0.11 5353 {}
}
virtual_server 2001:db8::90 53 {
    lb_kind NAT
    protocol UDP
    real_server 2001:db8:1::11 5353 {}
}
";

fn next_hops() -> StaticNextHops {
    StaticNextHops::of([
        ("10.1.0.11", next_hop(REAL_MAC, None)),
        ("2001:db8:1::11", next_hop(REAL6_MAC, None)),
    ])
}

/// `frame` with other addresses, ports and MACs (checksums recomputed by the builder).
fn translated(
    frame: &Frame,
    network: Network,
    ports: (u16, u16),
    macs: ([u8; 6], [u8; 6]),
) -> Vec<u8> {
    let mut out = frame.clone();
    out.network = network;
    match &mut out.transport {
        lb_tests::packet::Transport::Tcp { sport, dport, .. }
        | lb_tests::packet::Transport::Udp { sport, dport } => {
            (*sport, *dport) = ports;
        }
        lb_tests::packet::Transport::Other { .. } => unreachable!("TCP/UDP only"),
    }
    (out.dst_mac, out.src_mac) = macs;
    out.bytes()
}

#[test]
fn nat_translates_both_directions_with_valid_checksums() {
    if !require_root("nat_translates_both_directions_with_valid_checksums") {
        return;
    }
    let mut balancer = TestBalancer::load(next_hops(), 1 << 12).expect("load");
    balancer.apply_config(CONFIG).expect("apply");
    let client = [198, 51, 100, 7];
    let client6 = "2001:db8:c::7";
    let cases = [
        (
            "IPv4 TCP",
            Frame::tcp(v4(client, [192, 0, 2, 90]), 40000, 80),
            v4(client, [10, 1, 0, 11]),
            (40000, 8080),
            REAL_MAC,
            v4([10, 1, 0, 11], client),
            v4([192, 0, 2, 90], client),
        ),
        (
            "IPv4 UDP",
            Frame::udp(v4(client, [192, 0, 2, 90]), 40001, 53),
            v4(client, [10, 1, 0, 11]),
            (40001, 5353),
            REAL_MAC,
            v4([10, 1, 0, 11], client),
            v4([192, 0, 2, 90], client),
        ),
        (
            "IPv6 TCP",
            Frame::tcp(v6(client6, "2001:db8::90"), 40002, 80),
            v6(client6, "2001:db8:1::11"),
            (40002, 8080),
            REAL6_MAC,
            v6("2001:db8:1::11", client6),
            v6("2001:db8::90", client6),
        ),
        (
            "IPv6 UDP",
            Frame::udp(v6(client6, "2001:db8::90"), 40003, 53),
            v6(client6, "2001:db8:1::11"),
            (40003, 5353),
            REAL6_MAC,
            v6("2001:db8:1::11", client6),
            v6("2001:db8::90", client6),
        ),
    ];
    for (name, request, to_real, ports, mac, reply_net, reply_out) in cases {
        let run = balancer.run(&request.bytes()).expect("test run");
        assert_eq!(run.action, xdp_action::XDP_TX, "{name}");
        let expected = translated(&request, to_real, ports, (mac, SRC_MAC));
        assert_eq!(hex(&run.output), hex(&expected), "{name}: to the real");

        // The real's reply (from its MAC to the director's) leaves with the VIP's address
        // and port, for the kernel to route to the client.
        let vport = match request.transport {
            lb_tests::packet::Transport::Tcp { dport, .. }
            | lb_tests::packet::Transport::Udp { dport, .. } => dport,
            lb_tests::packet::Transport::Other { .. } => unreachable!(),
        };
        let mut reply = request.clone().with_tcp_flags(TCP_SYN | TCP_ACK);
        reply.network = reply_net;
        let reply = translated(
            &reply,
            reply.network.clone(),
            (ports.1, ports.0),
            (SRC_MAC, mac),
        );
        let run = balancer.run(&reply).expect("test run");
        assert_eq!(run.action, xdp_action::XDP_PASS, "{name}: reply");
        let mut want = request.clone().with_tcp_flags(TCP_SYN | TCP_ACK);
        want.network = reply_out.clone();
        let want = translated(&want, reply_out, (vport, ports.0), (SRC_MAC, mac));
        assert_eq!(hex(&run.output), hex(&want), "{name}: reply");
    }
    let counters = balancer.dataplane.counters().expect("counters");
    assert_eq!(counters.outcome(Outcome::NatReplyToKernel), 4);
    lb_tests::testrun::assert_replies_counted(&counters, 4);

    // ops: no flow is recorded, but the reply translation is.
    let ask = Frame::udp(v4(client, [192, 0, 2, 91]), 40006, 53);
    let run = balancer.run(&ask.bytes()).expect("test run");
    assert_eq!(run.action, xdp_action::XDP_TX);
    let answer = Frame::udp(v4([10, 1, 0, 11], client), 5353, 40006);
    let answer = Frame {
        dst_mac: SRC_MAC,
        src_mac: REAL_MAC,
        ..answer
    };
    let run = balancer.run(&answer.bytes()).expect("test run");
    let want = Frame::udp(v4([192, 0, 2, 91], client), 53, 40006);
    let want = Frame {
        dst_mac: SRC_MAC,
        src_mac: REAL_MAC,
        ..want
    };
    assert_eq!(hex(&run.output), hex(&want.bytes()), "ops reply");

    // With no NAT service left, replies are not looked up (and not translated).
    let reply = Frame {
        dst_mac: SRC_MAC,
        src_mac: REAL_MAC,
        ..Frame::udp(v4([10, 1, 0, 11], client), 5353, 40006)
    }
    .bytes();
    balancer
        .apply_config(
            "virtual_server 192.0.2.92 80 {\n lb_kind DR\n protocol TCP\n real_server 10.1.0.11 80 {}\n}\n",
        )
        .expect("apply without NAT");
    let run = balancer.run(&reply).expect("test run");
    assert_eq!(
        (run.action, hex(&run.output)),
        (xdp_action::XDP_PASS, hex(&reply))
    );
    balancer.apply_config(CONFIG).expect("apply");

    // An IPv4 UDP datagram without checksum (0) is translated and keeps none.
    let mut bare = Frame::udp(v4(client, [192, 0, 2, 90]), 40005, 53).bytes();
    let udp_check = 14 + 20 + 6;
    bare[udp_check..udp_check + 2].copy_from_slice(&[0, 0]);
    let run = balancer.run(&bare).expect("test run");
    assert_eq!(run.action, xdp_action::XDP_TX);
    assert_eq!(&run.output[udp_check..udp_check + 2], &[0, 0]);
    assert_eq!(&run.output[14 + 16..14 + 20], &[10, 1, 0, 11]);
    assert_eq!(&run.output[14 + 22..14 + 24], &5353u16.to_be_bytes());

    // A packet from a real that is no reply to a client is not touched.
    let stray = Frame::tcp(v4([10, 1, 0, 11], [198, 51, 100, 99]), 8080, 1234).bytes();
    let run = balancer.run(&stray).expect("test run");
    assert_eq!(
        (run.action, hex(&run.output)),
        (xdp_action::XDP_PASS, hex(&stray))
    );
}

#[test]
fn a_nat_real_without_a_port_gets_the_services_port() {
    if !require_root("a_nat_real_without_a_port_gets_the_services_port") {
        return;
    }
    // keepalived accepts both forms; IPVS's meaning: the virtual service's port.
    let config = "
virtual_server 192.0.2.93 8443 {
    lb_kind NAT
    protocol TCP
    real_server 10.1.0.11 {}
}
virtual_server 192.0.2.94 8080 {
    lb_kind NAT
    protocol TCP
    real_server 10.1.0.11 0 {}
}
";
    let mut balancer = TestBalancer::load(next_hops(), 1 << 12).expect("load");
    balancer.apply_config(config).expect("apply");
    let client = [198, 51, 100, 8];
    for (vip, port) in [([192, 0, 2, 93], 8443), ([192, 0, 2, 94], 8080)] {
        let request = Frame::tcp(v4(client, vip), 40010, port);
        let run = balancer.run(&request.bytes()).expect("test run");
        assert_eq!(run.action, xdp_action::XDP_TX, "{vip:?}");
        let expected = translated(
            &request,
            v4(client, [10, 1, 0, 11]),
            (40010, port),
            (REAL_MAC, SRC_MAC),
        );
        assert_eq!(hex(&run.output), hex(&expected), "{vip:?}: to the real");
    }
}

/// Replies come from a real whose address lbd marked as a reply source
/// (`Settings::nat_sources`); one taken out of the configuration keeps its flows, so
/// their replies are still translated, and a new real's first reply is too.
#[test]
fn replies_of_a_removed_real_and_of_a_new_one_are_translated() {
    if !require_root("replies_of_a_removed_real_and_of_a_new_one_are_translated") {
        return;
    }
    let hops = StaticNextHops::of([
        ("10.1.0.11", next_hop(REAL_MAC, None)),
        ("10.1.0.12", next_hop([0x02, 0xaa, 0, 0, 0, 2], None)),
    ]);
    let mut balancer = TestBalancer::load(hops, 1 << 12).expect("load");
    let config = |real: &str| {
        format!(
            "virtual_server 192.0.2.90 80 {{\n lb_kind NAT\n protocol TCP\n real_server {real} 8080 {{}}\n}}\n"
        )
    };
    let client = [198, 51, 100, 7];
    let reply_from = |real: [u8; 4], port: u16| {
        Frame {
            dst_mac: SRC_MAC,
            src_mac: REAL_MAC,
            ..Frame::tcp(v4(real, client), 8080, port).with_tcp_flags(TCP_SYN | TCP_ACK)
        }
        .bytes()
    };
    let vip_source = |output: &[u8]| output[14 + 12..14 + 16].to_vec();
    balancer.apply_config(&config("10.1.0.11")).expect("apply");
    let syn = Frame::tcp(v4(client, [192, 0, 2, 90]), 41000, 80);
    assert_eq!(
        balancer.run(&syn.bytes()).expect("run").action,
        xdp_action::XDP_TX
    );
    // 10.1.0.11 leaves the service, 10.1.0.12 comes: a new client goes to the new real.
    balancer.apply_config(&config("10.1.0.12")).expect("apply");
    let run = balancer
        .run(&reply_from([10, 1, 0, 11], 41000))
        .expect("run");
    assert_eq!(
        vip_source(&run.output),
        [192, 0, 2, 90],
        "the removed real's reply"
    );
    let syn = Frame::tcp(v4(client, [192, 0, 2, 90]), 41001, 80);
    let run = balancer.run(&syn.bytes()).expect("run");
    assert_eq!(&run.output[14 + 16..14 + 20], &[10, 1, 0, 12]);
    let run = balancer
        .run(&reply_from([10, 1, 0, 12], 41001))
        .expect("run");
    assert_eq!(
        vip_source(&run.output),
        [192, 0, 2, 90],
        "the new real's reply"
    );
}
