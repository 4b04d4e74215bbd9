//! Persistence (`persistence_timeout`, `persistence_granularity`) through BPF_PROG_TEST_RUN:
//! a client's new connections follow its first, its network shares the pin, a removed
//! real breaks the pin and a quiesced one does not, pins time out and a sweep keeps those
//! with live connections. Needs root (BPF); see `lb_tests::privilege`.

use std::{collections::HashMap, net::IpAddr};

use aya::maps::{HashMap as BpfHashMap, MapData};
use lb_common::{PersistKey, PersistState, map_names, xdp_action};
use lb_tests::{
    packet::{Frame, TCP_ACK, v4},
    privilege::require_root,
    testrun::{StaticNextHops, TestBalancer, next_hop},
};

const VIP: [u8; 4] = [192, 0, 2, 60];
const PLAIN_VIP: [u8; 4] = [192, 0, 2, 61];

fn next_hops() -> StaticNextHops {
    StaticNextHops(
        (1..=3u8)
            .map(|n| {
                let hop = next_hop([0x02, 0xaa, 0, 0, 0, n], None);
                (IpAddr::from([10, 9, 0, n]), hop)
            })
            .collect::<HashMap<_, _>>(),
    )
}

/// The persistent service on VIP (timeout, reals with weights) and a plain one.
fn config(timeout: u32, weights: &[(u8, u32)]) -> String {
    let mut text = format!(
        "virtual_server 192.0.2.60 80 {{\n lb_algo rr\n lb_kind DR\n protocol TCP\n persistence_timeout {timeout}\n persistence_granularity 255.255.255.0\n"
    );
    for (n, weight) in weights {
        text += &format!(" real_server 10.9.0.{n} 80 {{\n  weight {weight}\n }}\n");
    }
    text += "}\nvirtual_server 192.0.2.61 80 {\n lb_algo rr\n lb_kind DR\n protocol TCP\n";
    for n in 1..=3 {
        text += &format!(" real_server 10.9.0.{n} 80 {{}}\n");
    }
    text + "}\n"
}

/// The real (1..=3) a new connection from `client`:`port` to `vip` goes to.
fn connect(balancer: &TestBalancer, client: [u8; 4], port: u16, vip: [u8; 4]) -> Option<u8> {
    let run = balancer
        .run(&Frame::tcp(v4(client, vip), port, 80).bytes())
        .expect("test run");
    (run.action == xdp_action::XDP_TX).then(|| run.output[5])
}

/// Set every pin's last use to 6 s ago (past the tests' 5 s timeout).
fn age_pins(balancer: &mut TestBalancer) {
    let last_seen_ns = lb_tests::testrun::ago(std::time::Duration::from_secs(6));
    let mut pins: BpfHashMap<&mut MapData, PersistKey, PersistState> = BpfHashMap::try_from(
        balancer
            .dataplane
            .ebpf_mut()
            .map_mut(map_names::PERSIST)
            .expect("LB_PERSIST"),
    )
    .expect("pin map");
    let all: Vec<_> = pins.iter().map(|e| e.expect("pin")).collect();
    for (key, pin) in all {
        pins.insert(
            key,
            PersistState {
                last_seen_ns,
                ..pin
            },
            0,
        )
        .expect("age pin");
    }
}

#[test]
fn clients_and_their_networks_keep_their_real() {
    if !require_root("clients_and_their_networks_keep_their_real") {
        return;
    }
    let mut balancer = TestBalancer::load(next_hops(), 1 << 12).expect("load");
    balancer
        .apply_config(&config(300, &[(1, 1), (2, 1), (3, 1)]))
        .expect("apply");
    let client = [198, 51, 100, 7];
    let pinned = connect(&balancer, client, 1000, VIP).expect("forwarded");
    for port in 1001..1010 {
        assert_eq!(connect(&balancer, client, port, VIP), Some(pinned));
    }
    // The same /24 shares the pin; another network is scheduled (rr moves on).
    assert_eq!(
        connect(&balancer, [198, 51, 100, 99], 2000, VIP),
        Some(pinned)
    );
    assert_ne!(
        connect(&balancer, [203, 0, 113, 5], 2000, VIP),
        Some(pinned)
    );
    // Without persistence the same client is spread.
    let plain: std::collections::BTreeSet<_> = (0..3)
        .map(|i| connect(&balancer, client, 3000 + i, PLAIN_VIP))
        .collect();
    assert_eq!(plain.len(), 3);

    // A quiesced real (weight 0) keeps its pinned clients, as IPVS does by default.
    let weights: Vec<(u8, u32)> = (1..=3).map(|n| (n, u32::from(n != pinned))).collect();
    balancer
        .apply_config(&config(300, &weights))
        .expect("apply");
    assert_eq!(connect(&balancer, client, 1100, VIP), Some(pinned));
    // A removed real does not: the client is scheduled again and pinned anew.
    let others: Vec<(u8, u32)> = (1..=3).filter(|&n| n != pinned).map(|n| (n, 1)).collect();
    balancer.apply_config(&config(300, &others)).expect("apply");
    let repinned = connect(&balancer, client, 1200, VIP).expect("forwarded");
    assert_ne!(repinned, pinned);
    assert_eq!(connect(&balancer, client, 1201, VIP), Some(repinned));
}

#[test]
fn pins_time_out_unless_their_connections_live_on() {
    if !require_root("pins_time_out_unless_their_connections_live_on") {
        return;
    }
    let mut balancer = TestBalancer::load(next_hops(), 1 << 12).expect("load");
    balancer
        .apply_config(&config(5, &[(1, 1), (2, 1), (3, 1)]))
        .expect("apply");
    let client = [198, 51, 100, 8];
    let pinned = connect(&balancer, client, 1000, VIP).expect("forwarded");
    // The connection is established and alive: a sweep keeps the (aged) pin.
    let ack = Frame::tcp(v4(client, VIP), 1000, 80).with_tcp_flags(TCP_ACK);
    balancer.run(&ack.bytes()).expect("ack");
    age_pins(&mut balancer);
    balancer.dataplane.sweep().expect("sweep");
    assert_eq!(connect(&balancer, client, 1001, VIP), Some(pinned));
    // Aged past its 5 s with no sweep to refresh it: the next connection is scheduled
    // anew (rr: another real).
    age_pins(&mut balancer);
    assert_ne!(connect(&balancer, client, 1002, VIP), Some(pinned));
}
