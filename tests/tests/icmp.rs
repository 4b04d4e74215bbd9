//! ICMP errors about a VIP flow through BPF_PROG_TEST_RUN: "fragmentation needed",
//! "packet too big" and "port unreachable" sent to the VIP by a router on the client's
//! path reach the real that owns the quoted flow (DR: same bytes, new MACs; TUN:
//! tunnelled; NAT and FullNAT: translated back to what the real sent, every checksum
//! recomputed by the packet builder to compare), so its stack learns the path MTU; errors
//! about unknown flows go to the kernel. Needs root.

use std::net::IpAddr;

use lb_common::xdp_action;
use lb_tests::{
    packet::{DIRECTOR_MAC, Frame, Transport, hex, ip_between, v4, v6},
    privilege::require_root,
    testrun::{StaticNextHops, TestBalancer, next_hop},
};

const CONFIG: &str = "
virtual_server 192.0.2.70 80 {
    lb_kind DR
    protocol TCP
    real_server 10.0.0.1 80 {}
    real_server 10.0.0.2 80 {}
}
virtual_server 2001:db8::70 80 {
    lb_kind DR
    protocol TCP
    real_server 2001:db8:1::1 80 {}
}
virtual_server 192.0.2.71 80 {
    lb_kind TUN
    protocol TCP
    real_server 10.0.0.1 80 {}
}
virtual_server 192.0.2.72 80 {
    lb_kind NAT
    protocol TCP
    real_server 10.0.0.1 8080 {}
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

    // No such flow: passed unchanged to the kernel.
    let error = frag_needed([192, 0, 2, 70], 49999).bytes();
    let run = balancer.run(&error).expect("run");
    assert_eq!(
        (run.action, hex(&run.output)),
        (xdp_action::XDP_PASS, hex(&error))
    );
}

/// An ICMP error of `kind` (type, code, 4 more bytes) from `router` to `to`, quoting the
/// first `quote` bytes of the IP packet of `quoted`.
fn icmp_error(kind: [u8; 8], router: IpAddr, to: IpAddr, quoted: &Frame, quote: usize) -> Frame {
    let mut icmp = kind.to_vec();
    icmp.extend_from_slice(&quoted.bytes()[14..14 + quote]);
    let (network, proto) = match (router, to) {
        (IpAddr::V4(r), IpAddr::V4(t)) => (v4(r.octets(), t.octets()), 1),
        (r, t) => (v6(&r.to_string(), &t.to_string()), 58),
    };
    Frame::new(network, Transport::Other { proto, bytes: icmp }).with_payload(&[])
}

fn ip(text: &str) -> IpAddr {
    text.parse().expect("literal")
}

#[test]
fn icmp_errors_about_nat_flows_are_translated_for_the_real() {
    if !require_root("icmp_errors_about_nat_flows_are_translated_for_the_real") {
        return;
    }
    let mut balancer = TestBalancer::load(next_hops(), 1 << 12).expect("load");
    balancer
        .apply_config(&format!(
            "{CONFIG}
local_address_group pool {{
    10.0.0.250
    2001:db8:1::250
}}
virtual_server 2001:db8::72 80 {{
    lb_kind NAT
    protocol TCP
    real_server 2001:db8:1::1 8080 {{}}
}}
virtual_server 192.0.2.74 80 {{
    lb_kind FNAT
    protocol TCP
    laddr_group_name pool
    real_server 10.0.0.1 8080 {{}}
}}
virtual_server 192.0.2.73 53 {{
    lb_kind FNAT
    protocol UDP
    laddr_group_name pool
    real_server 10.0.0.2 5353 {{}}
}}
virtual_server 2001:db8::73 80 {{
    lb_kind FNAT
    protocol TCP
    laddr_group_name pool
    real_server 2001:db8:1::1 8080 {{}}
}}
"
        ))
        .expect("apply");
    let frag_needed = [3, 4, 0, 0, 0, 0, 0x05, 0x78];
    let too_big = [2, 0, 0, 0, 0, 0, 0x05, 0x78];
    let unreachable = [3, 3, 0, 0, 0, 0, 0, 0];
    let client = ip("198.51.100.7");
    let client6 = ip("2001:db8:c::7");
    // (name, client's first packet, error kind, router, bytes quoted, real, real port, MAC,
    // FullNAT)
    let cases = [
        (
            "NAT, IPv6 TCP, packet too big",
            Frame::tcp(ip_between(client6, ip("2001:db8::72")), 41014, 80),
            too_big,
            ip("2001:db8:ff::1"),
            60,
            ip("2001:db8:1::1"),
            8080,
            REAL6_MAC,
            false,
        ),
        (
            "FullNAT, IPv4 TCP, frag needed quoting the whole TCP header",
            Frame::tcp(ip_between(client, ip("192.0.2.74")), 41015, 80),
            frag_needed,
            ip("203.0.113.1"),
            40,
            ip("10.0.0.1"),
            8080,
            REAL_MAC,
            true,
        ),
        (
            "NAT, IPv4 TCP, frag needed quoting the whole TCP header",
            Frame::tcp(ip_between(client, ip("192.0.2.72")), 41010, 80),
            frag_needed,
            ip("203.0.113.1"),
            40,
            ip("10.0.0.1"),
            8080,
            REAL_MAC,
            false,
        ),
        (
            "NAT, IPv4 TCP, frag needed quoting 8 bytes of TCP",
            Frame::tcp(ip_between(client, ip("192.0.2.72")), 41011, 80),
            frag_needed,
            ip("203.0.113.1"),
            28,
            ip("10.0.0.1"),
            8080,
            REAL_MAC,
            false,
        ),
        (
            "FullNAT, IPv4 UDP, port unreachable",
            Frame::udp(ip_between(client, ip("192.0.2.73")), 41012, 53),
            unreachable,
            ip("203.0.113.1"),
            28,
            ip("10.0.0.2"),
            5353,
            REAL2_MAC,
            true,
        ),
        (
            "FullNAT, IPv6 TCP, packet too big",
            Frame::tcp(ip_between(client6, ip("2001:db8::73")), 41013, 80),
            too_big,
            ip("2001:db8:ff::1"),
            60,
            ip("2001:db8:1::1"),
            8080,
            REAL6_MAC,
            true,
        ),
    ];
    for (name, first, kind, router, quote, real, rport, mac, full_nat) in cases {
        let run = balancer.run(&first.bytes()).expect("run");
        assert_eq!(run.action, xdp_action::XDP_TX, "{name}: first packet");
        // Where the flow went: the real's address, and the source the real saw.
        let (to_real, ports) = match &run.output[12..14] {
            [0x86, 0xdd] => (
                (
                    IpAddr::from(<[u8; 16]>::try_from(&run.output[22..38]).unwrap()),
                    IpAddr::from(<[u8; 16]>::try_from(&run.output[38..54]).unwrap()),
                ),
                &run.output[54..58],
            ),
            _ => (
                (
                    IpAddr::from(<[u8; 4]>::try_from(&run.output[26..30]).unwrap()),
                    IpAddr::from(<[u8; 4]>::try_from(&run.output[30..34]).unwrap()),
                ),
                &run.output[34..38],
            ),
        };
        let (seen_src, seen_dst) = to_real;
        assert_eq!(seen_dst, real, "{name}");
        let seen_sport = u16::from_be_bytes([ports[0], ports[1]]);
        let (client, vip, cport, vport) = first.endpoints();
        // The reply the real sent, as the client's side of the director saw it (the VIP
        // put back), and as the real sent it.
        let with = |src: IpAddr, dst: IpAddr, sport: u16, dport: u16| {
            let mut frame = first.clone();
            frame.network = ip_between(src, dst);
            match &mut frame.transport {
                Transport::Tcp {
                    sport: s, dport: d, ..
                }
                | Transport::Udp { sport: s, dport: d } => {
                    (*s, *d) = (sport, dport);
                }
                Transport::Other { .. } => unreachable!(),
            }
            frame
        };
        let translated_reply = with(vip, client, vport, cport);
        let real_reply = with(real, seen_src, rport, seen_sport);
        let error = icmp_error(kind, router, vip, &translated_reply, quote);
        let run = balancer.run(&error.bytes()).expect("run");
        assert_eq!(run.action, xdp_action::XDP_TX, "{name}");
        // FullNAT: from the local address the real knows; NAT: from the router.
        let from = if full_nat { seen_src } else { router };
        let mut expected = icmp_error(kind, from, real, &real_reply, quote);
        (expected.dst_mac, expected.src_mac) = (mac, SRC_MAC);
        assert_eq!(hex(&run.output), hex(&expected.bytes()), "{name}");
    }
}
