//! FullNAT through BPF_PROG_TEST_RUN: the client's packet leaves from a local address and
//! port of the pool to the real's address and port, the real's reply to that local end
//! comes back as the VIP's to the client, for IPv4 and IPv6, TCP and UDP; local ports
//! never collide, run out cleanly (counted), and come back when their flows end. Expected
//! frames come from the packet builder, which computes every checksum from scratch, so
//! equal bytes prove the incremental updates. Needs root.

use std::{collections::HashSet, net::IpAddr, time::Duration};

use lb_common::{FNAT_PORTS_DEFAULT, Outcome, xdp_action};
use lb_tests::{
    packet::{DIRECTOR_MAC, Frame, Network, TCP_ACK, TCP_SYN, Transport, hex, ip_between, v4, v6},
    privilege::require_root,
    testrun::{StaticNextHops, TestBalancer, next_hop},
};
use lb_userspace::dataplane::{Dataplane, xdp::XdpOptions};

const REAL_MAC: [u8; 6] = [0x02, 0xaa, 0, 0, 0, 2];
const REAL6_MAC: [u8; 6] = [0x02, 0xaa, 0, 0, 0, 0x62];

const CONFIG: &str = "
local_address_group laddr_g1 {
    10.2.0.250-251
    2001:db8:2::250
}
virtual_server 192.0.2.95 80 {
    lb_kind FNAT
    protocol TCP
    laddr_group_name laddr_g1
    real_server 10.2.0.11 8080 {}
}
virtual_server 192.0.2.95 53 {
    lb_kind FNAT
    protocol UDP
    laddr_group_name laddr_g1
    real_server 10.2.0.11 5353 {}
}
virtual_server 2001:db8::95 80 {
    lb_kind FNAT
    protocol TCP
    laddr_group_name laddr_g1
    real_server 2001:db8:2::11 8080 {}
}
virtual_server 2001:db8::95 53 {
    lb_kind FNAT
    protocol UDP
    laddr_group_name laddr_g1
    real_server 2001:db8:2::11 5353 {}
}
";

fn next_hops() -> StaticNextHops {
    StaticNextHops::of([
        ("10.2.0.11", next_hop(REAL_MAC, None)),
        ("2001:db8:2::11", next_hop(REAL6_MAC, None)),
    ])
}

fn load(ports: (u16, u16)) -> TestBalancer {
    let options = XdpOptions {
        flow_table_size: 1 << 15,
        fnat_ports: ports,
        ..XdpOptions::private()
    };
    TestBalancer::load_with(next_hops(), options).expect("load")
}

/// `frame` with other addresses, ports and MACs (checksums recomputed by the builder).
fn translated(
    frame: &Frame,
    network: Network,
    ports: (u16, u16),
    macs: ([u8; 6], [u8; 6]),
) -> Frame {
    let mut out = frame.clone();
    out.network = network;
    match &mut out.transport {
        Transport::Tcp { sport, dport, .. } | Transport::Udp { sport, dport } => {
            (*sport, *dport) = ports;
        }
        Transport::Other { .. } => unreachable!("TCP/UDP only"),
    }
    (out.dst_mac, out.src_mac) = macs;
    out
}

/// The local end (source address and port) of a frame the balancer sent to a real.
fn local_end(output: &[u8]) -> (IpAddr, u16) {
    let ipv6 = output[12..14] == [0x86, 0xdd];
    if ipv6 {
        let src: [u8; 16] = output[14 + 8..14 + 24].try_into().unwrap();
        let port = u16::from_be_bytes([output[14 + 40], output[14 + 41]]);
        (IpAddr::from(src), port)
    } else {
        let src: [u8; 4] = output[14 + 12..14 + 16].try_into().unwrap();
        let port = u16::from_be_bytes([output[14 + 20], output[14 + 21]]);
        (IpAddr::from(src), port)
    }
}

#[test]
fn fnat_translates_both_directions_with_valid_checksums() {
    if !require_root("fnat_translates_both_directions_with_valid_checksums") {
        return;
    }
    let mut balancer = load(FNAT_PORTS_DEFAULT);
    balancer.apply_config(CONFIG).expect("apply");
    let client = [198, 51, 100, 8];
    let client6 = "2001:db8:c::8";
    let pool: [IpAddr; 3] =
        ["10.2.0.250", "10.2.0.251", "2001:db8:2::250"].map(|a| a.parse().unwrap());
    let cases = [
        (
            "IPv4 TCP",
            Frame::tcp(v4(client, [192, 0, 2, 95]), 41000, 80),
            "10.2.0.11",
            8080,
            REAL_MAC,
        ),
        (
            "IPv4 UDP",
            Frame::udp(v4(client, [192, 0, 2, 95]), 41001, 53),
            "10.2.0.11",
            5353,
            REAL_MAC,
        ),
        (
            "IPv6 TCP",
            Frame::tcp(v6(client6, "2001:db8::95"), 41002, 80),
            "2001:db8:2::11",
            8080,
            REAL6_MAC,
        ),
        (
            "IPv6 UDP",
            Frame::udp(v6(client6, "2001:db8::95"), 41003, 53),
            "2001:db8:2::11",
            5353,
            REAL6_MAC,
        ),
    ];
    for (name, request, real, rport, mac) in cases {
        let real: IpAddr = real.parse().unwrap();
        let run = balancer.run(&request.bytes()).expect("test run");
        assert_eq!(run.action, xdp_action::XDP_TX, "{name}");
        let (laddr, lport) = local_end(&run.output);
        assert!(
            pool.contains(&laddr) && laddr.is_ipv4() == real.is_ipv4(),
            "{name}: {laddr}"
        );
        assert!(lport >= FNAT_PORTS_DEFAULT.0, "{name}: port {lport}");
        let to_real = translated(
            &request,
            ip_between(laddr, real),
            (lport, rport),
            (mac, DIRECTOR_MAC),
        );
        assert_eq!(
            hex(&run.output),
            hex(&to_real.bytes()),
            "{name}: to the real"
        );

        // The next packet of the flow keeps its local end.
        let again = balancer
            .run(&request.clone().with_tcp_flags(TCP_ACK).bytes())
            .expect("test run");
        assert_eq!(
            local_end(&again.output),
            (laddr, lport),
            "{name}: established"
        );

        // The real answers the local end; the reply leaves from the VIP to the client.
        let reply = translated(
            &request.clone().with_tcp_flags(TCP_SYN | TCP_ACK),
            ip_between(real, laddr),
            (rport, lport),
            (DIRECTOR_MAC, mac),
        );
        let run = balancer.run(&reply.bytes()).expect("test run");
        assert_eq!(run.action, xdp_action::XDP_PASS, "{name}: reply");
        let (client, vip, cport, vport) = request.endpoints();
        let want = translated(
            &reply,
            ip_between(vip, client),
            (vport, cport),
            (DIRECTOR_MAC, mac),
        );
        assert_eq!(hex(&run.output), hex(&want.bytes()), "{name}: reply");
    }
    let counters = balancer.dataplane.counters().expect("counters");
    assert_eq!(counters.outcome(Outcome::NatReplyToKernel), 4);
    lb_tests::testrun::assert_replies_counted(&counters, 4);
}

#[test]
fn ten_thousand_flows_get_distinct_local_ports() {
    if !require_root("ten_thousand_flows_get_distinct_local_ports") {
        return;
    }
    let mut balancer = load(FNAT_PORTS_DEFAULT);
    balancer.apply_config(CONFIG).expect("apply");
    let mut ends = HashSet::new();
    for i in 0..10_000u32 {
        let client = [198, 18, (i >> 8) as u8, i as u8];
        let frame = Frame::tcp(v4(client, [192, 0, 2, 95]), 20000 + (i % 7) as u16, 80);
        let run = balancer.run(&frame.bytes()).expect("test run");
        assert_eq!(run.action, xdp_action::XDP_TX, "flow {i}");
        assert!(
            ends.insert(local_end(&run.output)),
            "flow {i}: local end {:?} taken twice",
            local_end(&run.output)
        );
    }
    let counters = balancer.dataplane.counters().expect("counters");
    assert_eq!(counters.outcome(Outcome::FnatNoPort), 0);
    let reservations = balancer.reply_translations().expect("translations");
    assert_eq!(reservations.len(), 10_000);
}

#[test]
fn exhausted_ports_are_counted_and_come_back_when_flows_end() {
    if !require_root("exhausted_ports_are_counted_and_come_back_when_flows_end") {
        return;
    }
    // One local address and 8 ports for this CPU (test runs happen on CPU 0, which has
    // every 4th port of the range, split into 4 shares here): 8 flows at most to the one
    // real. ESTABLISHED flows time out after 1 s, so that the test ages them by a moment.
    let cpus = 4;
    let last = 30000 + 8 * cpus - 1;
    let mut balancer = load((30000, last));
    let config = "
global_defs {
    lvs_timeouts tcp 1
}
local_address_group one {
    10.2.0.250
}
virtual_server 192.0.2.95 80 {
    lb_kind FNAT
    protocol TCP
    laddr_group_name one
    real_server 10.2.0.11 8080 {}
}
";
    balancer.apply_config(config).expect("apply");
    balancer.set_port_shares(cpus).expect("shares");
    let frame = |i: u16| Frame::tcp(v4([198, 51, 100, 9], [192, 0, 2, 95]), 42000 + i, 80);
    let flow = |i: u16| frame(i).bytes();
    let established = |balancer: &TestBalancer, i: u16| {
        let run = balancer
            .run(&frame(i).with_tcp_flags(TCP_ACK).bytes())
            .expect("test run");
        assert_eq!(run.action, xdp_action::XDP_TX, "flow {i}'s ACK");
    };
    let mut ports = HashSet::new();
    // A flow tries 16 pairs in a row from a random one: the first 8 flows take the 8
    // ports, the others find them all taken.
    for i in 0..40 {
        let run = balancer.run(&flow(i)).expect("test run");
        match run.action {
            xdp_action::XDP_TX => {
                let (_, port) = local_end(&run.output);
                assert!((30000..=last).contains(&port), "port {port}");
                assert_eq!((port - 30000) % cpus, 0, "port {port} of another CPU");
                assert!(ports.insert(port), "port {port} given twice");
                established(&balancer, i);
            }
            xdp_action::XDP_DROP => {}
            other => panic!("flow {i}: action {other}"),
        }
    }
    assert_eq!(ports.len(), 8, "ports taken: {ports:?}");
    let counters = balancer.dataplane.counters().expect("counters");
    assert_eq!(counters.outcome(Outcome::FnatNoPort), 32);

    // Timed-out flows keep their ports while their reservations are young...
    balancer
        .age_flows(Duration::from_secs(2))
        .expect("age flows");
    let run = balancer.run(&flow(100)).expect("test run");
    assert_eq!(
        run.action,
        xdp_action::XDP_DROP,
        "a young reservation is kept"
    );
    // ...and the data plane reclaims them after.
    balancer.age_reservations().expect("age reservations");
    let run = balancer.run(&flow(101)).expect("test run");
    assert_eq!(
        run.action,
        xdp_action::XDP_TX,
        "the port of an ended flow is reused"
    );
    let (_, reused) = local_end(&run.output);
    assert!(ports.contains(&reused), "port {reused}");
    established(&balancer, 101);

    // The sweep removes the expired flows with their reservations, except the one
    // flow 101 took over.
    let swept = balancer.dataplane.sweep().expect("sweep");
    assert_eq!(swept.expired, 8, "{swept:?}");
    let left = balancer.reply_translations().expect("translations");
    assert_eq!(left.len(), 1, "{left:?}");
    assert_eq!(left[0].1.client_port, 42101u16.to_be_bytes());
    assert_eq!(left[0].0.dport, reused.to_be_bytes());
    // Once flow 101 times out too, nothing is left.
    balancer
        .age_flows(Duration::from_secs(2))
        .expect("age flows");
    balancer.dataplane.sweep().expect("sweep");
    assert!(
        balancer
            .reply_translations()
            .expect("translations")
            .is_empty()
    );
}

/// The source address of a frame the balancer sent (IPv4).
fn source_v4(output: &[u8]) -> [u8; 4] {
    output[14 + 12..14 + 16].try_into().unwrap()
}

#[test]
fn established_flows_keep_their_mode_and_local_address_across_reloads() {
    if !require_root("established_flows_keep_their_mode_and_local_address_across_reloads") {
        return;
    }
    let mut balancer = load(FNAT_PORTS_DEFAULT);
    let service = |kind: &str, group: &str| {
        format!(
            "local_address_group a {{\n 10.2.0.250\n}}\nlocal_address_group b {{\n 10.2.0.251\n}}\nvirtual_server 192.0.2.95 80 {{\n lb_kind {kind}\n protocol TCP\n laddr_group_name {group}\n real_server 10.2.0.11 8080 {{}}\n}}\n"
        )
    };
    let flow = |port: u16| Frame::tcp(v4([198, 51, 100, 20], [192, 0, 2, 95]), port, 80);
    let send = |balancer: &TestBalancer, frame: Frame| {
        let run = balancer.run(&frame.bytes()).expect("test run");
        assert_eq!(run.action, xdp_action::XDP_TX);
        run.output
    };

    // A NAT flow goes on as NAT after the service becomes FullNAT; new flows are FullNAT.
    balancer.apply_config(&service("NAT", "a")).expect("NAT");
    assert_eq!(source_v4(&send(&balancer, flow(43000))), [198, 51, 100, 20]);
    balancer.apply_config(&service("FNAT", "a")).expect("FNAT");
    let ack = flow(43000).with_tcp_flags(TCP_ACK);
    assert_eq!(
        source_v4(&send(&balancer, ack)),
        [198, 51, 100, 20],
        "still NAT"
    );
    assert_eq!(source_v4(&send(&balancer, flow(43001))), [10, 2, 0, 250]);

    // A FullNAT flow keeps its local address when the pool changes; new flows take the
    // new pool's.
    balancer
        .apply_config(&service("FNAT", "b"))
        .expect("pool b");
    let ack = flow(43001).with_tcp_flags(TCP_ACK);
    assert_eq!(source_v4(&send(&balancer, ack)), [10, 2, 0, 250], "kept");
    assert_eq!(source_v4(&send(&balancer, flow(43002))), [10, 2, 0, 251]);
    // Its address, out of every pool, keeps its id while the flow lives: a sweep with the
    // flow alive frees nothing, and a third address gets another id.
    balancer.dataplane.sweep().expect("sweep");
    balancer
        .apply_config(&service("FNAT", "a").replace("10.2.0.250", "10.2.0.252"))
        .expect("pool of a new address");
    let ack = flow(43001).with_tcp_flags(TCP_ACK);
    assert_eq!(
        source_v4(&send(&balancer, ack)),
        [10, 2, 0, 250],
        "still kept"
    );
    assert_eq!(source_v4(&send(&balancer, flow(43003))), [10, 2, 0, 252]);
}
