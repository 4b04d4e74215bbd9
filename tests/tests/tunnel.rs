//! TUN through BPF_PROG_TEST_RUN: the balancer's IPIP and ip6ip6 output, byte for byte
//! (outer header from the director's address, inner TOS/TTL/DF copied, an IPv6 outer
//! header's flow label from the client's address and ports, VLAN tag of the real), the MTU limit, and the real server's `lb_decap` giving back the client's packet.
//! Needs root (BPF); see `lb_tests::privilege`.

use std::net::IpAddr;

use lb_common::{Outcome, hash::tunnel_flow_label, xdp_action};
use lb_tests::{
    packet::{DIRECTOR_MAC, Frame, Network, checksum, hex, sum_words, v4, v6},
    privilege::require_root,
    testrun::{StaticNextHops, TestBalancer, next_hop, run_program},
};
use lb_userspace::{
    dataplane::{
        Dataplane,
        xdp::{AttachMode, Decap, Prefix},
    },
    nexthop::NextHop,
};

/// The director's MAC, the source of what it sends (`testrun::next_hop`).
const SRC_MAC: [u8; 6] = DIRECTOR_MAC;
const TUNNEL_SRC: [u8; 4] = [10, 0, 0, 254];
const TUNNEL_SRC6: &str = "2001:db8:1::fe";
const CLIENT: [u8; 4] = [198, 51, 100, 7];

const CONFIG: &str = "
virtual_server 192.0.2.80 80 {
    lb_kind TUN
    protocol TCP
    real_server 10.0.0.1 80 {}
}
virtual_server 192.0.2.81 80 {
    lb_kind TUN
    protocol TCP
    tun_type ipip
    real_server 10.0.0.2 80 {}
}
virtual_server 2001:db8::80 80 {
    lb_kind TUN
    protocol TCP
    real_server 2001:db8:1::1 80 {}
}
virtual_server 192.0.2.82 80 {
    lb_kind TUN
    protocol TCP
    real_server 2001:db8:1::1 80 {}
}
virtual_server 192.0.2.80 53 {
    lb_kind TUN
    protocol UDP
    real_server 10.0.0.1 53 {}
}
virtual_server 2001:db8::80 53 {
    lb_kind TUN
    protocol UDP
    real_server 2001:db8:1::1 53 {}
}
virtual_server 192.0.2.83 80 {
    lb_kind TUN type gre
    protocol TCP
    real_server 10.0.0.1 80 {}
}
virtual_server 2001:db8::83 80 {
    lb_kind TUN type gre nocsum
    protocol TCP
    real_server 2001:db8:1::1 80 {}
}
virtual_server 192.0.2.84 80 {
    lb_kind TUN
    protocol TCP
    real_server 10.0.0.1 80 {
        lvs_method TUN type gre
    }
    real_server 2001:db8:1::1 80 {
        lvs_method TUN type gre
    }
}
";

fn next_hops() -> StaticNextHops {
    let hop = |last: u8, vlan: u16, src: IpAddr| NextHop {
        vlan,
        ..next_hop([0x02, 0xaa, 0, 0, 0, last], Some(src))
    };
    let src6: IpAddr = TUNNEL_SRC6.parse().expect("literal");
    StaticNextHops::of([
        ("10.0.0.1", hop(1, 0, TUNNEL_SRC.into())),
        ("10.0.0.2", hop(2, 100, TUNNEL_SRC.into())),
        ("2001:db8:1::1", hop(0x61, 0, src6)),
    ])
}

/// The frame the balancer should send: Ethernet (and tag) to the real, then the outer
/// header, then the client's IP packet (`input` without its Ethernet header).
fn tunnelled(input: &[u8], real_mac: [u8; 6], vlan: u16, outer_dst: IpAddr) -> Vec<u8> {
    tunnelled_by(input, real_mac, vlan, outer_dst, false)
}

/// As `tunnelled`, with a GRE header (no options, the inner EtherType) after the outer
/// header when `gre`.
fn tunnelled_by(
    input: &[u8],
    real_mac: [u8; 6],
    vlan: u16,
    outer_dst: IpAddr,
    gre: bool,
) -> Vec<u8> {
    let inner = &input[14..];
    let gre_header = [0, 0, input[12], input[13]];
    let gre_len = if gre { gre_header.len() } else { 0 };
    let mut frame = Vec::new();
    frame.extend_from_slice(&real_mac);
    frame.extend_from_slice(&SRC_MAC);
    let ether_type: u16 = if outer_dst.is_ipv4() { 0x0800 } else { 0x86DD };
    if vlan != 0 {
        frame.extend_from_slice(&0x8100u16.to_be_bytes());
        frame.extend_from_slice(&vlan.to_be_bytes());
    }
    frame.extend_from_slice(&ether_type.to_be_bytes());
    match outer_dst {
        IpAddr::V4(dst) => {
            let mut outer = vec![0x45, inner[1]];
            outer.extend_from_slice(&((inner.len() + 20 + gre_len) as u16).to_be_bytes());
            // Identification and DF from the inner header, no fragment offset.
            let proto = if gre { 47 } else { 4 };
            outer.extend_from_slice(&[
                inner[4],
                inner[5],
                inner[6] & 0x40,
                0,
                inner[8],
                proto,
                0,
                0,
            ]);
            outer.extend_from_slice(&TUNNEL_SRC);
            outer.extend_from_slice(&dst.octets());
            let sum = checksum(&outer, 0);
            outer[10..12].copy_from_slice(&sum.to_be_bytes());
            frame.extend_from_slice(&outer);
        }
        IpAddr::V6(dst) => {
            // ip6ip6, or 4in6 around an IPv4 packet: traffic class from the inner TOS/TC.
            let inner_v4 = input[12..14] == [0x08, 0x00];
            let (class, hop, next) = if inner_v4 {
                (inner[1], inner[8], 4)
            } else {
                ((inner[0] << 4) | (inner[1] >> 4), inner[7], 41)
            };
            // The flow label: the client's address and ports mixed (never 0).
            let (src, ports) = if inner_v4 {
                let mut src = [0; 16];
                src[..4].copy_from_slice(&inner[12..16]);
                (src, &inner[20..24])
            } else {
                (inner[8..24].try_into().expect("16 bytes"), &inner[40..44])
            };
            let label =
                tunnel_flow_label(&src, !inner_v4, [ports[0], ports[1]], [ports[2], ports[3]]);
            assert_ne!(label, 0);
            frame.extend_from_slice(&[
                0x60 | (class >> 4),
                (class << 4) | (label >> 16) as u8,
                (label >> 8) as u8,
                label as u8,
            ]);
            frame.extend_from_slice(&((inner.len() + gre_len) as u16).to_be_bytes());
            let next = if gre { 47 } else { next };
            frame.extend_from_slice(&[next, hop]);
            let src: std::net::Ipv6Addr = TUNNEL_SRC6.parse().expect("literal");
            frame.extend_from_slice(&src.octets());
            frame.extend_from_slice(&dst.octets());
        }
    }
    if gre {
        frame.extend_from_slice(&gre_header);
    }
    frame.extend_from_slice(inner);
    frame
}

/// A real's decap program (loaded, not attached) for `vips`, from the director's tunnel
/// sources.
fn decap_for(vips: &[&str]) -> Decap {
    let mut decap = Decap::load(None).expect("load decap");
    let vips: Vec<IpAddr> = vips.iter().map(|vip| vip.parse().expect("VIP")).collect();
    decap.set_vips(&vips).expect("VIPs");
    decap
        .set_sources(&[
            Prefix::host(IpAddr::from(TUNNEL_SRC)),
            Prefix::host(TUNNEL_SRC6.parse().unwrap()),
        ])
        .expect("sources");
    decap
}

fn run_decap(decap: &Decap, input: &[u8]) -> (u32, Vec<u8>) {
    let run = run_program(decap.program().expect("decap program"), input, 1).expect("test run");
    (run.action, run.output)
}

#[test]
fn tun_encapsulates_and_the_real_decapsulates() {
    if !require_root("tun_encapsulates_and_the_real_decapsulates") {
        return;
    }
    let mut balancer = TestBalancer::load(next_hops(), 1 << 12).expect("load");
    balancer.apply_config(CONFIG).expect("apply");
    let mut decap = decap_for(&["192.0.2.80", "192.0.2.81", "192.0.2.82", "2001:db8::80"]);
    let _ = AttachMode::Auto; // (the test runs the program without attaching it)

    let with_df = Frame::tcp(
        Network::V4 {
            src: CLIENT.into(),
            dst: [192, 0, 2, 80].into(),
            options: Vec::new(),
            frag_off: 0x4000,
        },
        40004,
        80,
    );
    let cases: [(&str, Frame, [u8; 6], u16, IpAddr); 8] = [
        (
            "ipip, UDP",
            Frame::udp(v4(CLIENT, [192, 0, 2, 80]), 40006, 53),
            [2, 0xaa, 0, 0, 0, 1],
            0,
            "10.0.0.1".parse().unwrap(),
        ),
        (
            "ip6ip6, UDP",
            Frame::udp(v6("2001:db8:c::7", "2001:db8::80"), 40007, 53),
            [2, 0xaa, 0, 0, 0, 0x61],
            0,
            "2001:db8:1::1".parse().unwrap(),
        ),
        (
            "4in6",
            Frame::tcp(v4(CLIENT, [192, 0, 2, 82]), 40005, 80),
            [2, 0xaa, 0, 0, 0, 0x61],
            0,
            "2001:db8:1::1".parse().unwrap(),
        ),
        (
            "ipip with DF",
            with_df,
            [2, 0xaa, 0, 0, 0, 1],
            0,
            "10.0.0.1".parse().unwrap(),
        ),
        (
            "ipip",
            Frame::tcp(v4(CLIENT, [192, 0, 2, 80]), 40000, 80),
            [2, 0xaa, 0, 0, 0, 1],
            0,
            "10.0.0.1".parse().unwrap(),
        ),
        (
            "ipip from a tagged frame",
            Frame::tcp(v4(CLIENT, [192, 0, 2, 80]), 40001, 80).with_vlans(&[(0x8100, 5)]),
            [2, 0xaa, 0, 0, 0, 1],
            0,
            "10.0.0.1".parse().unwrap(),
        ),
        (
            "ipip to a real on VLAN 100",
            Frame::tcp(v4(CLIENT, [192, 0, 2, 81]), 40002, 80),
            [2, 0xaa, 0, 0, 0, 2],
            100,
            "10.0.0.2".parse().unwrap(),
        ),
        (
            "ip6ip6",
            Frame::tcp(v6("2001:db8:c::7", "2001:db8::80"), 40003, 80),
            [2, 0xaa, 0, 0, 0, 0x61],
            0,
            "2001:db8:1::1".parse().unwrap(),
        ),
    ];
    for (name, frame, mac, vlan, real) in cases {
        let input = frame.bytes();
        // The expected frame is built from the untagged packet: tags do not travel.
        let untagged = Frame {
            vlans: Vec::new(),
            ..frame.clone()
        }
        .bytes();
        let run = balancer.run(&input).expect("test run");
        if run.action != xdp_action::XDP_TX {
            let counters = balancer.dataplane.counters().expect("counters");
            let seen: Vec<_> = counters
                .outcomes
                .iter()
                .filter(|(_, n)| *n > 0)
                .map(|(o, n)| format!("{}={n}", o.name()))
                .collect();
            panic!("{name}: action {} ({seen:?})", run.action);
        }
        let expected = tunnelled(&untagged, mac, vlan, real);
        if name == "ipip with DF" {
            assert_eq!(
                expected[14 + 6] & 0x40,
                0x40,
                "the expected outer header has DF"
            );
            assert_eq!(&expected[14 + 4..14 + 6], &[0x12, 0x34], "and the inner id");
        }
        assert_eq!(hex(&run.output), hex(&expected), "{name}");
        // On the real, lb_decap gives back the client's packet behind the tunnel frame's
        // Ethernet header (and tag).
        let (action, stripped) = run_decap(&decap, &run.output);
        assert_eq!(action, xdp_action::XDP_PASS, "{name}");
        let l2 = if vlan != 0 { 18 } else { 14 };
        let mut want = expected[..l2].to_vec();
        // The client packet's own ether type (IPv4 inside IPv6 for 4in6).
        want[l2 - 2..l2].copy_from_slice(&untagged[12..14]);
        want.extend_from_slice(&untagged[14..]);
        assert_eq!(hex(&stripped), hex(&want), "{name}: decapsulated");
    }
    assert_eq!(decap.decapsulated().expect("stats"), 8);

    // A tunnel to another address passes untouched.
    decap.set_vips(&[]).expect("no VIPs");
    let other = balancer
        .run(&Frame::tcp(v4(CLIENT, [192, 0, 2, 80]), 40010, 80).bytes())
        .expect("test run")
        .output;
    assert_eq!(
        run_decap(&decap, &other),
        (xdp_action::XDP_PASS, other.clone())
    );

    // Too big once encapsulated, IPv4 with DF and IPv6: the client gets ICMP with the MTU
    // that fits the tunnel (1500 - 20, 1500 - 40), quoting its header and 8 bytes.
    let big_df = Frame::tcp(
        Network::V4 {
            src: CLIENT.into(),
            dst: [192, 0, 2, 80].into(),
            options: Vec::new(),
            frag_off: 0x4000,
        },
        40021,
        80,
    )
    .with_payload(&[0; 1450])
    .bytes();
    let flows_before = balancer.dataplane.sweep().expect("sweep").flows;
    let run = balancer.run(&big_df).expect("test run");
    assert_eq!(run.action, xdp_action::XDP_TX, "frag needed");
    // Answered, not forwarded: no flow recorded for it.
    assert_eq!(
        balancer.dataplane.sweep().expect("sweep").flows,
        flows_before
    );
    let mut icmp = vec![3, 4, 0, 0, 0, 0, 0x05, 0xc8];
    icmp.extend_from_slice(&big_df[14..14 + 28]);
    let sum = checksum(&icmp, 0).to_be_bytes();
    icmp[2..4].copy_from_slice(&sum);
    let mut ip = vec![0x45, 0, 0, 56, 0, 0, 0, 0, 64, 1, 0, 0, 192, 0, 2, 80];
    ip.extend_from_slice(&CLIENT);
    let sum = checksum(&ip, 0).to_be_bytes();
    ip[10..12].copy_from_slice(&sum);
    let mut want = big_df[6..12].to_vec();
    want.extend_from_slice(&big_df[0..6]);
    want.extend_from_slice(&[0x08, 0x00]);
    want.extend_from_slice(&ip);
    want.extend_from_slice(&icmp);
    assert_eq!(hex(&run.output), hex(&want), "frag needed");

    // 4in6: the tunnel takes 40 bytes, so 1460 fits.
    let big_4in6 = Frame::tcp(
        Network::V4 {
            src: CLIENT.into(),
            dst: [192, 0, 2, 82].into(),
            options: Vec::new(),
            frag_off: 0x4000,
        },
        40023,
        80,
    )
    .with_payload(&[0; 1450])
    .bytes();
    let run = balancer.run(&big_4in6).expect("test run");
    assert_eq!(run.action, xdp_action::XDP_TX, "4in6 frag needed");
    assert_eq!(&run.output[14 + 20..14 + 22], &[3, 4], "frag needed");
    assert_eq!(
        &run.output[14 + 26..14 + 28],
        &1460u16.to_be_bytes(),
        "4in6 MTU"
    );

    let big6 = Frame::tcp(v6("2001:db8:c::7", "2001:db8::80"), 40022, 80)
        .with_payload(&[0; 1430])
        .bytes();
    let run = balancer.run(&big6).expect("test run");
    assert_eq!(run.action, xdp_action::XDP_TX, "packet too big");
    let (client6, vip6) = (&big6[14 + 8..14 + 24], &big6[14 + 24..14 + 40]);
    let mut icmp = vec![2, 0, 0, 0, 0, 0, 0x05, 0xb4];
    icmp.extend_from_slice(&big6[14..14 + 48]);
    let mut pseudo = vip6.to_vec();
    pseudo.extend_from_slice(client6);
    pseudo.extend_from_slice(&(icmp.len() as u32).to_be_bytes());
    pseudo.extend_from_slice(&[0, 0, 0, 58]);
    let sum = checksum(&icmp, sum_words(&pseudo)).to_be_bytes();
    icmp[2..4].copy_from_slice(&sum);
    let mut want = big6[6..12].to_vec();
    want.extend_from_slice(&big6[0..6]);
    want.extend_from_slice(&[0x86, 0xdd, 0x60, 0, 0, 0, 0, icmp.len() as u8, 58, 64]);
    want.extend_from_slice(vip6);
    want.extend_from_slice(client6);
    want.extend_from_slice(&icmp);
    assert_eq!(hex(&run.output), hex(&want), "packet too big");

    // Too big without DF (the kernel could fragment it): dropped and counted.
    let big = Frame::tcp(v4(CLIENT, [192, 0, 2, 80]), 40020, 80).with_payload(&[0; 1450]);
    let before = balancer
        .dataplane
        .counters()
        .expect("counters")
        .outcome(Outcome::TunnelTooBig);
    let run = balancer.run(&big.bytes()).expect("test run");
    assert_eq!(run.action, xdp_action::XDP_DROP);
    let after = balancer
        .dataplane
        .counters()
        .expect("counters")
        .outcome(Outcome::TunnelTooBig);
    assert_eq!(after - before, 1);
}

#[test]
fn configured_tunnel_sources_come_before_the_route() {
    if !require_root("configured_tunnel_sources_come_before_the_route") {
        return;
    }
    // The route gives 10.0.0.254 / 2001:db8:1::fe; the configuration overrides it, per
    // virtual server first, then globally, per family.
    let mut balancer = TestBalancer::load(next_hops(), 1 << 12).expect("load");
    balancer
        .apply_config(
            "
global_defs {
    lvs_tun_source 10.9.9.9 2001:db8:9::9
}
virtual_server 192.0.2.80 80 {
    lb_kind TUN
    protocol TCP
    tun_source 10.8.8.8
    real_server 10.0.0.1 80 {}
}
virtual_server 192.0.2.81 80 {
    lb_kind TUN
    protocol TCP
    real_server 10.0.0.1 80 {}
}
virtual_server 192.0.2.82 80 {
    lb_kind TUN
    protocol TCP
    tun_source 10.8.8.8
    real_server 2001:db8:1::1 80 {}
}
",
        )
        .expect("apply");
    for (vip, source) in [
        ([192, 0, 2, 80], "10.8.8.8"),
        ([192, 0, 2, 81], "10.9.9.9"),
        ([192, 0, 2, 82], "2001:db8:9::9"),
    ] {
        let run = balancer
            .run(&Frame::tcp(v4(CLIENT, vip), 40100, 80).bytes())
            .expect("test run");
        assert_eq!(run.action, xdp_action::XDP_TX, "{vip:?}");
        let outer_src = match source.parse::<IpAddr>().expect("literal") {
            IpAddr::V4(_) => IpAddr::from(<[u8; 4]>::try_from(&run.output[26..30]).unwrap()),
            IpAddr::V6(_) => IpAddr::from(<[u8; 16]>::try_from(&run.output[22..38]).unwrap()),
        };
        assert_eq!(outer_src.to_string(), source, "{vip:?}");
    }
}

#[test]
fn the_real_strips_tunnels_only_from_the_directors() {
    if !require_root("the_real_strips_tunnels_only_from_the_directors") {
        return;
    }
    let mut balancer = TestBalancer::load(next_hops(), 1 << 12).expect("load");
    balancer.apply_config(CONFIG).expect("apply");
    let tunnelled = balancer
        .run(&Frame::tcp(v4(CLIENT, [192, 0, 2, 80]), 40030, 80).bytes())
        .expect("test run")
        .output;
    assert_eq!(
        &tunnelled[14 + 12..14 + 16],
        &TUNNEL_SRC,
        "the outer source"
    );
    let mut decap = Decap::load(None).expect("load decap");
    decap
        .set_vips(&["192.0.2.80".parse().unwrap()])
        .expect("VIPs");
    // Another host's tunnel to the VIP (its inner source could be anyone's): untouched,
    // and counted.
    decap
        .set_sources(&["10.0.0.253".parse().unwrap()])
        .expect("sources");
    assert_eq!(
        run_decap(&decap, &tunnelled),
        (xdp_action::XDP_PASS, tunnelled.clone())
    );
    assert_eq!(decap.from_unknown_sources().expect("stats"), 1);
    assert_eq!(decap.decapsulated().expect("stats"), 0);
    // The director's subnet (--decap-source 10.0.0.0/24): stripped.
    decap
        .set_sources(&["10.0.0.0/24".parse().unwrap()])
        .expect("sources");
    let (action, stripped) = run_decap(&decap, &tunnelled);
    assert_eq!(action, xdp_action::XDP_PASS);
    assert_eq!(stripped.len(), tunnelled.len() - 20, "not decapsulated");
    assert_eq!(decap.decapsulated().expect("stats"), 1);
}

#[test]
fn gre_encapsulates_and_the_real_decapsulates() {
    if !require_root("gre_encapsulates_and_the_real_decapsulates") {
        return;
    }
    let mut balancer = TestBalancer::load(next_hops(), 1 << 12).expect("load");
    balancer.apply_config(CONFIG).expect("apply");
    let decap = decap_for(&["192.0.2.83", "192.0.2.84", "2001:db8::83"]);
    let real4: IpAddr = "10.0.0.1".parse().unwrap();
    let real6: IpAddr = "2001:db8:1::1".parse().unwrap();
    let (mac4, mac6) = ([2, 0xaa, 0, 0, 0, 1], [2, 0xaa, 0, 0, 0, 0x61]);
    let mut reached = std::collections::BTreeSet::new();
    let cases = [
        (
            "GRE over IPv4",
            Frame::tcp(v4(CLIENT, [192, 0, 2, 83]), 41000, 80),
        ),
        (
            "GRE over IPv6",
            Frame::tcp(v6("2001:db8:c::7", "2001:db8::83"), 41001, 80),
        ),
        // A real's own lvs_method TUN type gre: over IPv4 to one, 4in6 to the other.
        (
            "a real's GRE",
            Frame::tcp(v4(CLIENT, [192, 0, 2, 84]), 41002, 80),
        ),
        (
            "a real's GRE",
            Frame::tcp(v4(CLIENT, [192, 0, 2, 84]), 41003, 80),
        ),
        (
            "a real's GRE",
            Frame::tcp(v4(CLIENT, [192, 0, 2, 84]), 41004, 80),
        ),
    ];
    for (name, frame) in cases {
        let input = frame.bytes();
        let run = balancer.run(&input).expect("test run");
        assert_eq!(run.action, xdp_action::XDP_TX, "{name}");
        let (mac, real) = if run.output[..6] == mac4 {
            (mac4, real4)
        } else {
            (mac6, real6)
        };
        reached.insert(real);
        let expected = tunnelled_by(&input, mac, 0, real, true);
        assert_eq!(hex(&run.output), hex(&expected), "{name}");
        let (action, stripped) = run_decap(&decap, &run.output);
        assert_eq!(action, xdp_action::XDP_PASS, "{name}");
        let mut want = expected[..14].to_vec();
        want[12..14].copy_from_slice(&input[12..14]);
        want.extend_from_slice(&input[14..]);
        assert_eq!(hex(&stripped), hex(&want), "{name}: decapsulated");
    }
    assert_eq!(
        reached.len(),
        2,
        "the service of two GRE reals reached both"
    );
    // GRE with a checksum (the kernel's `type gre csum`) is stripped too.
    let mut with_csum = tunnelled_by(
        &Frame::tcp(v4(CLIENT, [192, 0, 2, 83]), 41005, 80).bytes(),
        mac4,
        0,
        real4,
        true,
    );
    with_csum[14 + 20] = 0x80;
    with_csum.splice(14 + 24..14 + 24, [0, 0, 0, 0]);
    let total = u16::from_be_bytes([with_csum[16], with_csum[17]]) + 4;
    with_csum[16..18].copy_from_slice(&total.to_be_bytes());
    with_csum[24..26].copy_from_slice(&[0, 0]);
    let sum = checksum(&with_csum[14..34], 0);
    with_csum[24..26].copy_from_slice(&sum.to_be_bytes());
    let (action, stripped) = run_decap(&decap, &with_csum);
    assert_eq!(action, xdp_action::XDP_PASS);
    assert_eq!(
        stripped.len(),
        with_csum.len() - 28,
        "outer IPv4 and GRE with checksum"
    );
    assert_eq!(decap.decapsulated().expect("stats"), 6);
}
