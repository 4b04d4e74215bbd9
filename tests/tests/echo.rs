//! Echo requests to a VIP answered in XDP (`lbd --answer-ping`) through
//! BPF_PROG_TEST_RUN: the reply leaves where the request came from, byte for byte what the
//! packet builder makes of a reply (checksums from scratch), with TTL/hop limit 64 and the
//! request's VLAN tag; requests to other addresses, and every request when answering is
//! off, go to the kernel. Needs root.

use lb_common::{Outcome, xdp_action};
use lb_tests::{
    packet::{CLIENT_MAC, DIRECTOR_MAC, Frame, Network, Transport, checksum, hex, v4, v6},
    privilege::require_root,
    testrun::{StaticNextHops, TestBalancer, next_hop},
};
use lb_userspace::dataplane::{Dataplane, xdp::XdpOptions};

const CONFIG: &str = "
virtual_server 192.0.2.60 80 {
    lb_kind DR
    protocol TCP
    real_server 10.0.0.1 80 {}
}
virtual_server 2001:db8::60 53 {
    lb_kind DR
    protocol UDP
    real_server 2001:db8:1::1 53 {}
}
";

fn load(answer_echo: bool) -> TestBalancer {
    let next_hops = StaticNextHops::of([
        ("10.0.0.1", next_hop([2, 0xaa, 0, 0, 0, 1], None)),
        ("2001:db8:1::1", next_hop([2, 0xaa, 0, 0, 0, 0x61], None)),
    ]);
    let options = XdpOptions {
        flow_table_size: 1 << 12,
        answer_echo,
        ..XdpOptions::private()
    };
    let mut balancer = TestBalancer::load_with(next_hops, options).expect("load");
    balancer.apply_config(CONFIG).expect("apply");
    balancer
}

/// An echo request or reply (`kind`) with identifier 7, sequence 1 and a payload.
fn echo(network: Network, kind: u8) -> Frame {
    let proto = if matches!(network, Network::V6 { .. }) {
        58
    } else {
        1
    };
    let mut bytes = vec![kind, 0, 0, 0, 0, 7, 0, 1];
    bytes.extend_from_slice(b"lbd ping payload");
    Frame::new(network, Transport::Other { proto, bytes }).with_payload(&[])
}

#[test]
fn echo_requests_to_vips_are_answered_when_asked() {
    if !require_root("echo_requests_to_vips_are_answered_when_asked") {
        return;
    }
    let client = [198, 51, 100, 7];
    let vip = [192, 0, 2, 60];
    let balancer = load(true);
    // The request arrives with TTL 50 (the builder's 64, changed, checksum fixed).
    let mut request = echo(v4(client, vip), 8).bytes();
    request[14 + 8] = 50;
    request[14 + 10..14 + 12].copy_from_slice(&[0, 0]);
    let sum = checksum(&request[14..34], 0);
    request[14 + 10..14 + 12].copy_from_slice(&sum.to_be_bytes());
    let mut reply = echo(v4(vip, client), 0);
    (reply.dst_mac, reply.src_mac) = (CLIENT_MAC, DIRECTOR_MAC);
    // The IPv6 request arrives with hop limit 50 (no header checksum to fix).
    let mut request6 = echo(v6("2001:db8:c::7", "2001:db8::60"), 128).bytes();
    request6[14 + 7] = 50;
    let mut reply6 = echo(v6("2001:db8::60", "2001:db8:c::7"), 129);
    (reply6.dst_mac, reply6.src_mac) = (CLIENT_MAC, DIRECTOR_MAC);
    let tagged = echo(v4(client, vip), 8).with_vlans(&[(0x8100, 5)]).bytes();
    let tagged_reply = reply.clone().with_vlans(&[(0x8100, 5)]).bytes();
    for (name, input, want) in [
        ("IPv4", request.clone(), reply.bytes()),
        ("IPv6", request6, reply6.bytes()),
        ("IPv4 tagged", tagged, tagged_reply),
    ] {
        let run = balancer.run(&input).expect("test run");
        assert_eq!(
            (run.action, hex(&run.output)),
            (xdp_action::XDP_TX, hex(&want)),
            "{name}"
        );
    }
    let counters = balancer.dataplane.counters().expect("counters");
    assert_eq!(counters.outcome(Outcome::EchoAnswered), 3);

    // Not a VIP, a reply rather than a request, a request cut short (type and code only),
    // or answering off: to the kernel, untouched.
    let other = echo(v4(client, [192, 0, 2, 61]), 8).bytes();
    let not_request = echo(v4(client, vip), 0).bytes();
    let short = request[..14 + 20 + 2].to_vec();
    for input in [other, not_request, short] {
        let run = balancer.run(&input).expect("test run");
        assert_eq!((run.action, run.output), (xdp_action::XDP_PASS, input));
    }
    let off = load(false);
    let run = off.run(&request).expect("test run");
    assert_eq!((run.action, run.output), (xdp_action::XDP_PASS, request));
}
