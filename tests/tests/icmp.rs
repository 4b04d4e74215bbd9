//! ICMP errors about a VIP flow through BPF_PROG_TEST_RUN: "fragmentation needed" and
//! "packet too big" sent to the VIP by a router on the client's path reach the real that
//! owns the quoted flow (DR: same bytes, new MACs; TUN: tunnelled), so its stack learns
//! the path MTU; errors about unknown flows and NAT flows go to the kernel. Needs root.

use std::net::IpAddr;

use lb_common::xdp_action;
use lb_tests::{
    packet::{DIRECTOR_MAC, Frame, Transport, v4, v6},
    privilege::require_root,
    testrun::{StaticNextHops, TestBalancer, next_hop},
};

const CONFIG: &str = "
virtual_server 192.0.2.70 80 {
    lb_kind DR
    real_server 10.0.0.1 80
    real_server 10.0.0.2 80
}
virtual_server 2001:db8::70 80 {
    lb_kind DR
    real_server 2001:db8:1::1 80
}
virtual_server 192.0.2.71 80 {
    lb_kind TUN
    real_server 10.0.0.1 80
}
virtual_server 192.0.2.72 80 {
    lb_kind NAT
    real_server 10.0.0.1 8080
}
";
const REAL_MAC: [u8; 6] = [0x02, 0xaa, 0, 0, 0, 1];
const REAL2_MAC: [u8; 6] = [0x02, 0xaa, 0, 0, 0, 2];
const REAL6_MAC: [u8; 6] = [0x02, 0xaa, 0, 0, 0, 0x61];
/// The director's MAC, the source of what it sends (`testrun::next_hop`).
const SRC_MAC: [u8; 6] = DIRECTOR_MAC;
const CLIENT: [u8; 4] = [198, 51, 100, 7];
const ROUTER: [u8; 4] = [203, 0, 113, 1];

fn next_hops() -> StaticNextHops {
    let src4 = Some(IpAddr::from([10, 0, 0, 254]));
    let src6 = Some("2001:db8:1::fe".parse().expect("literal"));
    StaticNextHops::of([
        ("10.0.0.1", next_hop(REAL_MAC, src4)),
        ("10.0.0.2", next_hop(REAL2_MAC, src4)),
        ("2001:db8:1::1", next_hop(REAL6_MAC, src6)),
    ])
}

/// ICMP "fragmentation needed" (MTU 1400) from the router to `vip`, quoting the real's
/// reply from `vip`:80 to the client's `port`.
fn frag_needed(vip: [u8; 4], port: u16) -> Frame {
    let quoted = Frame::tcp(v4(vip, CLIENT), 80, port).bytes();
    let mut icmp = vec![3, 4, 0, 0, 0, 0, 0x05, 0x78];
    icmp.extend_from_slice(&quoted[14..14 + 28]);
    Frame::new(
        v4(ROUTER, vip),
        Transport::Other {
            proto: 1,
            bytes: icmp,
        },
    )
    .with_payload(&[])
}

/// ICMPv6 "packet too big" (MTU 1400) from a router to the VIP, quoting the real's reply.
fn packet_too_big(port: u16) -> Frame {
    let quoted = Frame::tcp(v6("2001:db8::70", "2001:db8:c::7"), 80, port).bytes();
    let mut icmp = vec![2, 0, 0, 0, 0, 0, 0x05, 0x78];
    icmp.extend_from_slice(&quoted[14..14 + 48]);
    Frame::new(
        v6("2001:db8:ff::1", "2001:db8::70"),
        Transport::Other {
            proto: 58,
            bytes: icmp,
        },
    )
    .with_payload(&[])
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn icmp_errors_reach_the_real_that_owns_the_flow() {
    if !require_root("icmp_errors_reach_the_real_that_owns_the_flow") {
        return;
    }
    let mut balancer = TestBalancer::load(next_hops(), 1 << 12).expect("load");
    balancer.apply_config(CONFIG).expect("apply");
    // The flows the errors are about; on the DR service two flows, one per real (rr).
    let mut dr_reals = Vec::new();
    for port in [41000, 41004] {
        let run = balancer
            .run(&Frame::tcp(v4(CLIENT, [192, 0, 2, 70]), port, 80).bytes())
            .expect("run");
        assert_eq!(run.action, xdp_action::XDP_TX);
        dr_reals.push(<[u8; 6]>::try_from(&run.output[..6]).expect("MAC"));
    }
    assert_ne!(dr_reals[0], dr_reals[1], "rr spread the two flows");
    for (vip, port) in [([192, 0, 2, 71], 41001), ([192, 0, 2, 72], 41002)] {
        let run = balancer
            .run(&Frame::tcp(v4(CLIENT, vip), port, 80).bytes())
            .expect("run");
        assert_eq!(run.action, xdp_action::XDP_TX);
    }
    let run = balancer
        .run(&Frame::tcp(v6("2001:db8:c::7", "2001:db8::70"), 41003, 80).bytes())
        .expect("run");
    assert_eq!(run.action, xdp_action::XDP_TX);

    // DR: the same packet, to the MAC of the real that owns the quoted flow.
    for (name, error, mac) in [
        (
            "frag needed",
            frag_needed([192, 0, 2, 70], 41000).bytes(),
            dr_reals[0],
        ),
        (
            "frag needed, the other flow",
            frag_needed([192, 0, 2, 70], 41004).bytes(),
            dr_reals[1],
        ),
        ("packet too big", packet_too_big(41003).bytes(), REAL6_MAC),
    ] {
        let run = balancer.run(&error).expect("run");
        assert_eq!(run.action, xdp_action::XDP_TX, "{name}");
        let mut expected = error.clone();
        expected[..6].copy_from_slice(&mac);
        expected[6..12].copy_from_slice(&SRC_MAC);
        assert_eq!(hex(&run.output), hex(&expected), "{name}");
    }
    // TUN: tunnelled to the real (outer IPIP to 10.0.0.1 around the ICMP packet).
    let error = frag_needed([192, 0, 2, 71], 41001).bytes();
    let run = balancer.run(&error).expect("run");
    assert_eq!(run.action, xdp_action::XDP_TX);
    assert_eq!(run.output.len(), error.len() + 20);
    assert_eq!(&run.output[14 + 9..14 + 10], &[4], "IPIP");
    assert_eq!(&run.output[14 + 16..14 + 20], &[10, 0, 0, 1]);
    assert_eq!(hex(&run.output[34..]), hex(&error[14..]));

    // No such flow, or a NAT flow: passed unchanged to the kernel.
    for error in [
        frag_needed([192, 0, 2, 70], 49999).bytes(),
        frag_needed([192, 0, 2, 72], 41002).bytes(),
    ] {
        let run = balancer.run(&error).expect("run");
        assert_eq!(
            (run.action, hex(&run.output)),
            (xdp_action::XDP_PASS, hex(&error))
        );
    }
}
