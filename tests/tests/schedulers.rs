//! Every scheduler through BPF_PROG_TEST_RUN: shares over 100,000 synthetic flows, the
//! least-connection family against preloaded connection counts, connection counting from
//! TCP state, weight 0, and established flows across weight changes and table swaps.
//! Needs root (BPF); see `lb_tests::privilege`.

use std::{collections::HashMap, net::IpAddr, time::Duration};

use lb_common::{ConnCounts, Outcome, hash, xdp_action};
use lb_tests::{
    packet::{Frame, TCP_ACK, TCP_FIN, v4},
    privilege::require_root,
    testrun::{StaticNextHops, TestBalancer, next_hop},
};
use lb_userspace::dataplane::Dataplane;

const FLOWS: usize = 100_000;
/// Offsets in an untagged IPv4/TCP frame.
const IPV4_SRC: usize = 14 + 12;
const IPV4_DST: usize = 14 + 16;
const TCP_SPORT: usize = 14 + 20;

/// Real `net.n` (10.9.net.n) with MAC 02:aa:00:00:net:n.
fn real_addr(net: u8, n: u8) -> [u8; 4] {
    [10, 9, net, n]
}

fn mac_of(addr: [u8; 4]) -> [u8; 6] {
    [0x02, 0xaa, 0, 0, addr[2], addr[3]]
}

/// Next hops for reals 10.9.0..8.1..4 on the ingress interface.
fn next_hops() -> StaticNextHops {
    let mut table = HashMap::new();
    for net in 0..8 {
        for n in 1..=4 {
            let addr = real_addr(net, n);
            table.insert(IpAddr::from(addr), next_hop(mac_of(addr), None));
        }
    }
    StaticNextHops(table)
}

/// A virtual_server block on `vip`:80 with reals 10.9.`net`.1.. of the given weights.
fn service(vip: [u8; 4], sched: &str, extra: &str, net: u8, weights: &[u32]) -> String {
    let vip = IpAddr::from(vip);
    let mut text = format!(
        "virtual_server {vip} 80 {{\n lb_algo {sched}\n lb_kind DR\n protocol TCP\n{extra}\n"
    );
    for (i, weight) in weights.iter().enumerate() {
        let real = IpAddr::from(real_addr(net, i as u8 + 1));
        text.push_str(&format!(
            " real_server {real} 80 {{\n  weight {weight}\n }}\n"
        ));
    }
    text.push_str("}\n");
    text
}

/// xorshift64*: deterministic synthetic clients.
struct Clients(u64);

impl Clients {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// The real (its address's last byte, 1..) a forwarded frame went to; `None` if the frame
/// was not forwarded.
fn real_of(balancer: &TestBalancer, frame: &[u8]) -> Option<u8> {
    let run = balancer.run(frame).expect("test run");
    (run.action == xdp_action::XDP_TX).then(|| run.output[5])
}

/// Send `flows` SYNs from pseudo-random clients (address and port) to the VIPs in turn;
/// per real (last address byte), the flows it got, and the flows nobody took.
fn spread(
    balancer: &TestBalancer,
    vips: &[[u8; 4]],
    flows: usize,
    seed: u64,
) -> (HashMap<u8, usize>, usize) {
    let mut clients = Clients(seed);
    let mut frame = Frame::tcp(v4([198, 18, 0, 1], vips[0]), 1024, 80).bytes();
    let mut shares = HashMap::new();
    let mut refused = 0;
    for i in 0..flows {
        let r = clients.next();
        frame[IPV4_SRC..IPV4_SRC + 4].copy_from_slice(&(r as u32).to_be_bytes());
        frame[TCP_SPORT..TCP_SPORT + 2].copy_from_slice(&((r >> 32) as u16 | 1024).to_be_bytes());
        frame[IPV4_DST..IPV4_DST + 4].copy_from_slice(&vips[i % vips.len()]);
        match real_of(balancer, &frame) {
            Some(real) => *shares.entry(real).or_default() += 1,
            None => refused += 1,
        }
    }
    (shares, refused)
}

/// Observed shares must be within 2 percentage points of `expected` (per real 1..).
fn assert_shares(what: &str, shares: &HashMap<u8, usize>, expected: &[f64]) {
    let total: usize = shares.values().sum();
    for (i, want) in expected.iter().enumerate() {
        let got = shares.get(&(i as u8 + 1)).copied().unwrap_or(0) as f64 / total as f64;
        assert!(
            (got - want).abs() <= 0.02,
            "{what}: real {} got {:.4} of {total} flows, expected {want:.4} ({shares:?})",
            i + 1,
            got
        );
    }
    assert_eq!(
        shares.len(),
        expected.len(),
        "{what}: unexpected reals {shares:?}"
    );
}

/// 256 addresses whose dh buckets are all different (IPVS's dh hash depends on the last
/// byte only, pinned against IPVS's formula in `lb_common::hash`'s tests): flows spread
/// evenly over them hit every bucket equally often, so the shares are the table's.
fn one_vip_per_dh_bucket() -> Vec<[u8; 4]> {
    let mut by_bucket: Vec<Option<[u8; 4]>> = vec![None; 256];
    for n in 0u32.. {
        let addr = [10, 200, (n >> 8) as u8, n as u8];
        let mut full = [0; 16];
        full[..4].copy_from_slice(&addr);
        let bucket = hash::dh_bucket(hash::fold(&full, false)) as usize;
        by_bucket[bucket].get_or_insert(addr);
        if by_bucket.iter().all(Option::is_some) {
            break;
        }
    }
    by_bucket
        .into_iter()
        .map(|a| a.expect("all found"))
        .collect()
}

#[test]
fn shares_over_100k_flows_follow_each_scheduler() {
    if !require_root("shares_over_100k_flows_follow_each_scheduler") {
        return;
    }
    let dh_vips = one_vip_per_dh_bucket();
    let mut config = String::new();
    config += &service([192, 0, 2, 1], "rr", "", 0, &[1, 1, 1, 1]);
    config += &service([192, 0, 2, 2], "wrr", "", 1, &[1, 2, 3, 4]);
    config += &service([192, 0, 2, 3], "sh", "", 2, &[1, 2, 3, 4]);
    config += &service([192, 0, 2, 4], "mh", "", 3, &[1, 2, 3, 4]);
    for vip in &dh_vips {
        config += &service(*vip, "dh", "", 4, &[1, 2, 3, 4]);
    }
    let mut balancer = TestBalancer::load(next_hops(), 1 << 19).expect("load");
    balancer.apply_config(&config).expect("apply");

    let weighted = [0.1, 0.2, 0.3, 0.4];
    /// Scheduler, its VIPs, the expected share of reals 1..4.
    type Case = (&'static str, Vec<[u8; 4]>, [f64; 4]);
    let cases: [Case; 5] = [
        ("rr", vec![[192, 0, 2, 1]], [0.25; 4]),
        ("wrr", vec![[192, 0, 2, 2]], weighted),
        ("sh", vec![[192, 0, 2, 3]], weighted),
        ("mh", vec![[192, 0, 2, 4]], weighted),
        // IPVS's dh gives each real the same number of buckets, whatever the weights.
        ("dh", dh_vips, [0.25; 4]),
    ];
    for (i, (name, vips, expected)) in cases.iter().enumerate() {
        let (shares, refused) = spread(&balancer, vips, FLOWS, 0x9e37_79b9 + i as u64);
        assert_eq!(refused, 0, "{name}: flows refused");
        assert_shares(name, &shares, expected);
    }
}

#[test]
fn hashing_schedulers_are_deterministic_per_client() {
    if !require_root("hashing_schedulers_are_deterministic_per_client") {
        return;
    }
    let mut config = String::new();
    config += &service([192, 0, 2, 3], "sh", "", 0, &[1, 1, 1, 1]);
    config += &service([192, 0, 2, 4], "mh", "", 1, &[1, 1, 1, 1]);
    config += &service([192, 0, 2, 5], "sh", " sh-port", 2, &[1, 1, 1, 1]);
    config += &service([192, 0, 2, 6], "mh", " mh-port", 3, &[1, 1, 1, 1]);
    let mut balancer = TestBalancer::load(next_hops(), 1 << 14).expect("load");
    balancer.apply_config(&config).expect("apply");
    for (vip, by_port) in [(3, false), (4, false), (5, true), (6, true)] {
        let mut reals = std::collections::BTreeSet::new();
        for client in 1..=20u8 {
            let mut per_client = std::collections::BTreeSet::new();
            for port in 0..16u16 {
                let frame = Frame::tcp(v4([198, 18, 1, client], [192, 0, 2, vip]), 2000 + port, 80);
                let real = real_of(&balancer, &frame.bytes()).expect("forwarded");
                per_client.insert(real);
                reals.insert(real);
            }
            // Without the port flag a client always gets one real; with it, its
            // connections spread.
            assert_eq!(
                per_client.len() == 1,
                !by_port,
                "vip .{vip}: {per_client:?}"
            );
        }
        assert_eq!(reals.len(), 4, "vip .{vip}: clients reach every real");
    }
}

/// Preload `counts` (per real 1.., (active, inactive)) for the reals of net `net`.
fn preload(balancer: &mut TestBalancer, net: u8, counts: &[(u32, u32)]) {
    let ids = balancer.real_ids().expect("real ids");
    for (i, &(active, inactive)) in counts.iter().enumerate() {
        let addr = IpAddr::from(real_addr(net, i as u8 + 1));
        let id = ids
            .iter()
            .find(|((a, _, _), _)| *a == addr)
            .map(|(_, id)| *id)
            .expect("real id");
        balancer
            .set_conns(id, ConnCounts::new(active, inactive))
            .expect("set counts");
    }
}

#[test]
fn least_connection_schedulers_pick_by_weighted_counts() {
    if !require_root("least_connection_schedulers_pick_by_weighted_counts") {
        return;
    }
    // Reals 1..4 with weights 1, 2, 4 and 0 (never chosen, though it has no connections).
    let weights = [1, 2, 4, 0];
    let schedulers = ["lc", "wlc", "sed", "nq"];
    let mut config = String::new();
    for (i, sched) in schedulers.iter().enumerate() {
        config += &service([192, 0, 2, 10 + i as u8], sched, "", i as u8, &weights);
    }
    let mut balancer = TestBalancer::load(next_hops(), 1 << 12).expect("load");
    balancer.apply_config(&config).expect("apply");
    // (active, inactive) per real, and the real each of lc, wlc, sed, nq must pick:
    // - lc: least active*256+inactive; wlc: that over the weight;
    // - sed: least (active+1)/weight; nq: a real without active connections, else sed.
    type Counts = [(u32, u32); 4];
    let cases: [(Counts, [u8; 4]); 2] = [
        ([(1, 5), (1, 0), (2, 0), (0, 0)], [2, 2, 3, 3]),
        ([(0, 50), (1, 0), (2, 0), (0, 0)], [1, 1, 3, 1]),
    ];
    for (case, (counts, expected)) in cases.iter().enumerate() {
        for (i, sched) in schedulers.iter().enumerate() {
            preload(&mut balancer, i as u8, counts);
            let frame = Frame::tcp(
                v4([198, 18, 2, case as u8], [192, 0, 2, 10 + i as u8]),
                4000,
                80,
            );
            assert_eq!(
                real_of(&balancer, &frame.bytes()),
                Some(expected[i]),
                "case {case}: {sched} with counts {counts:?}"
            );
        }
    }
}

/// The id of the balancer's one real.
fn only_real(balancer: &mut TestBalancer) -> u32 {
    let ids = balancer.real_ids().expect("ids");
    ids.into_values().next().expect("one real")
}

#[test]
fn connections_are_counted_from_tcp_state_and_corrected_by_a_scan() {
    if !require_root("connections_are_counted_from_tcp_state_and_corrected_by_a_scan") {
        return;
    }
    let mut balancer = TestBalancer::load(next_hops(), 1 << 12).expect("load");
    balancer
        .apply_config(&service([192, 0, 2, 20], "lc", "", 0, &[1]))
        .expect("apply");
    let id = only_real(&mut balancer);
    let counts = |balancer: &mut TestBalancer| {
        let c = balancer.conns(id).expect("counts");
        (c.active, c.inactive)
    };
    let syn = Frame::tcp(v4([198, 18, 3, 1], [192, 0, 2, 20]), 5000, 80);
    let mut steps = vec![];
    for flags in [None, Some(TCP_ACK), Some(TCP_ACK), Some(TCP_FIN | TCP_ACK)] {
        let frame = flags.map_or(syn.clone(), |f| syn.clone().with_tcp_flags(f));
        assert!(real_of(&balancer, &frame.bytes()).is_some());
        steps.push(counts(&mut balancer));
    }
    // SYN_RECV and ESTABLISHED are active, FIN_WAIT inactive (IPVS's tcp_state_active_table).
    assert_eq!(steps, [(1, 0), (1, 0), (1, 0), (0, 1)]);
    // A second connection, established.
    let other = Frame::tcp(v4([198, 18, 3, 2], [192, 0, 2, 20]), 5001, 80);
    real_of(&balancer, &other.bytes());
    real_of(&balancer, &other.with_tcp_flags(TCP_ACK).bytes());
    assert_eq!(counts(&mut balancer), (1, 1));
    // Counts gone wrong (as after LRU evictions, which nobody counts) are corrected by the
    // next scan of the flow table: nothing changed while it ran, so all of the difference
    // is a drift.
    balancer
        .set_conns(id, ConnCounts::new(100, 7))
        .expect("set");
    let report = balancer.dataplane.sweep().expect("sweep");
    assert_eq!((report.flows, report.expired), (2, 0));
    assert_eq!(counts(&mut balancer), (1, 1));
}

#[test]
fn evicted_flows_leave_the_counts_within_one_scan() {
    if !require_root("evicted_flows_leave_the_counts_within_one_scan") {
        return;
    }
    // A table of 1,024 flows gets 3,000: the LRU evicts the oldest to make room, which
    // nobody counts; the next scan corrects the counts to what the table holds.
    let mut balancer = TestBalancer::load(next_hops(), 1024).expect("load");
    balancer
        .apply_config(&service([192, 0, 2, 21], "lc", "", 0, &[1]))
        .expect("apply");
    let id = only_real(&mut balancer);
    for n in 0..3000u32 {
        let client = (0xc612_0000 + n).to_be_bytes();
        let syn = Frame::tcp(v4(client, [192, 0, 2, 21]), 6000, 80);
        assert!(real_of(&balancer, &syn.bytes()).is_some());
    }
    assert_eq!(balancer.conns(id).expect("counts").active, 3000);
    let report = balancer.dataplane.sweep().expect("sweep");
    assert!(report.flows <= 1024, "{report:?}");
    let counts = balancer.conns(id).expect("counts");
    assert_eq!(
        (u64::from(counts.active), counts.inactive),
        (report.flows, 0)
    );
}

#[test]
fn weight_zero_takes_no_new_flows_unless_a_fallback_moves_them() {
    if !require_root("weight_zero_takes_no_new_flows_unless_a_fallback_moves_them") {
        return;
    }
    let config = |weights: &[u32]| {
        let mut text = String::new();
        text += &service([192, 0, 2, 30], "wrr", "", 0, weights);
        text += &service([192, 0, 2, 31], "sh", "", 1, weights);
        text += &service([192, 0, 2, 32], "sh", " sh-fallback", 2, weights);
        text += &service([192, 0, 2, 33], "mh", "", 3, weights);
        text += &service([192, 0, 2, 34], "mh", " mh-fallback", 4, weights);
        text += &service([192, 0, 2, 35], "wlc", "", 5, weights);
        text
    };
    let mut balancer = TestBalancer::load(next_hops(), 1 << 17).expect("load");
    balancer.apply_config(&config(&[1, 1, 1])).expect("apply");
    // Which real each client got on the Maglev services while all weights were 1.
    let clients: Vec<[u8; 4]> = (0..2000u32)
        .map(|i| [198, 19, (i >> 8) as u8, i as u8])
        .collect();
    let mh_before: Vec<Option<u8>> = clients
        .iter()
        .map(|c| {
            real_of(
                &balancer,
                &Frame::tcp(v4(*c, [192, 0, 2, 33]), 6000, 80).bytes(),
            )
        })
        .collect();

    balancer.apply_config(&config(&[1, 0, 1])).expect("apply");
    // Flows refused out of 3000, as IPVS without the fallback flag refuses the clients that
    // hash to a quiesced real: sh keeps one bucket of 256 for it, Maglev the slots of its
    // last weight (a third of the table).
    for (last, name, refused_range) in [
        (30, "wrr", 0..=0),
        (31, "sh", 1..=60),
        (32, "sh-fallback", 0..=0),
        (33, "mh", 800..=1200),
        (34, "mh-fallback", 0..=0),
        (35, "wlc", 0..=0),
    ] {
        let (shares, refused) = spread(&balancer, &[[192, 0, 2, last]], 3000, last.into());
        assert!(
            !shares.contains_key(&2),
            "{name}: real 2 (weight 0) got new flows"
        );
        assert!(
            refused_range.contains(&refused),
            "{name}: {refused} of 3000 refused, expected {refused_range:?}"
        );
    }
    // Maglev keeps every other client where it was (new flows: port 6001).
    for (client, before) in clients.iter().zip(&mh_before) {
        let now = real_of(
            &balancer,
            &Frame::tcp(v4(*client, [192, 0, 2, 33]), 6001, 80).bytes(),
        );
        match before {
            Some(2) => assert_eq!(now, None),
            other => assert_eq!(&now, other),
        }
    }
    assert!(
        balancer
            .dataplane
            .counters()
            .expect("counters")
            .outcome(Outcome::NoReal)
            > 0
    );
}

#[test]
fn established_flows_survive_weight_changes_and_table_swaps() {
    if !require_root("established_flows_survive_weight_changes_and_table_swaps") {
        return;
    }
    let vip = [192, 0, 2, 40];
    let mut balancer = TestBalancer::load(next_hops(), 1 << 14).expect("load");
    balancer
        .apply_config(&service(vip, "rr", "", 0, &[1, 1, 1]))
        .expect("apply");
    let flows: Vec<Frame> = (0..1000u16)
        .map(|i| Frame::tcp(v4([198, 20, (i >> 8) as u8, i as u8], vip), 7000 + i, 80))
        .collect();
    let before: Vec<Option<u8>> = flows
        .iter()
        .map(|f| real_of(&balancer, &f.bytes()))
        .collect();
    assert!(before.iter().all(Option::is_some));
    // New weights (real 2 quiesced), another scheduler, one more real: new tables.
    for (sched, weights) in [
        ("wrr", vec![5, 0, 1, 2]),
        ("mh", vec![1, 0, 3, 1]),
        ("wlc", vec![2, 0, 1, 1]),
    ] {
        balancer
            .apply_config(&service(vip, sched, "", 0, &weights))
            .expect("apply");
        for (flow, before) in flows.iter().zip(&before) {
            let now = real_of(&balancer, &flow.clone().with_tcp_flags(TCP_ACK).bytes());
            assert_eq!(&now, before, "after switching to {sched} {weights:?}");
        }
    }
}

/// Make every flow look idle since boot (last packet at 1 ns).
/// Past the 1 s of `SHORT_TCP`.
fn age_all_flows(balancer: &mut TestBalancer) {
    balancer
        .age_flows(Duration::from_secs(2))
        .expect("age flows");
}

/// ESTABLISHED and FIN_WAIT flows time out after 1 s, so that tests age them by a
/// moment and pass on a machine booted seconds earlier (`cargo xtask test` runs them so
/// in its VM).
const SHORT_TCP: &str = "global_defs {\n lvs_timeouts tcp 1 tcpfin 1\n}\n";

#[test]
fn timed_out_flows_are_scheduled_anew_and_swept() {
    if !require_root("timed_out_flows_are_scheduled_anew_and_swept") {
        return;
    }
    let vip = [192, 0, 2, 50];
    let mut balancer = TestBalancer::load(next_hops(), 1 << 12).expect("load");
    balancer
        .apply_config(&format!(
            "{SHORT_TCP}{}",
            service(vip, "rr", "", 0, &[1, 1])
        ))
        .expect("apply");
    let flow = Frame::tcp(v4([198, 21, 0, 1], vip), 8000, 80);
    let first = real_of(&balancer, &flow.bytes()).expect("forwarded");
    let ack = flow.clone().with_tcp_flags(TCP_ACK).bytes();
    assert_eq!(real_of(&balancer, &ack), Some(first));
    // The client closes: FIN_WAIT, which times out after 1 s here.
    let fin = flow.clone().with_tcp_flags(TCP_FIN | TCP_ACK).bytes();
    assert_eq!(real_of(&balancer, &fin), Some(first));
    let new_flows = |b: &TestBalancer| {
        let counters = b.dataplane.counters().expect("counters");
        counters.services[0].traffic.new_flows
    };
    assert_eq!(new_flows(&balancer), 1);
    // Idle for longer than that: the connection is gone. A segment of it is not
    // scheduled (rr, as IPVS without sloppy_tcp); a new connection from the same port is,
    // by rr to the other real.
    age_all_flows(&mut balancer);
    assert_eq!(real_of(&balancer, &ack), None);
    assert_eq!(real_of(&balancer, &flow.bytes()), Some(3 - first));
    assert_eq!(real_of(&balancer, &ack), Some(3 - first));
    assert_eq!(new_flows(&balancer), 2);
    let ids = balancer.real_ids().expect("ids");
    let old_id = ids[&(IpAddr::from(real_addr(0, first)), 80, 0)];
    assert_eq!(
        balancer.conns(old_id).expect("counts").active,
        0,
        "expired flow left its real"
    );
    // The sweep removes flows that timed out.
    let other = Frame::tcp(v4([198, 21, 0, 2], vip), 8001, 80);
    real_of(&balancer, &other.bytes());
    real_of(&balancer, &other.with_tcp_flags(TCP_ACK).bytes());
    age_all_flows(&mut balancer);
    let report = balancer.dataplane.sweep().expect("sweep");
    assert_eq!((report.flows, report.expired), (0, 2));
    balancer.dataplane.sweep().expect("second sweep");
    for id in ids.values() {
        let counts = balancer.conns(*id).expect("counts");
        assert_eq!((counts.active, counts.inactive), (0, 0));
    }
}

/// Make every flow's last packet `secs` seconds old.
fn set_flow_age(balancer: &mut TestBalancer, secs: u64) {
    balancer
        .age_flows(Duration::from_secs(secs))
        .expect("age flows");
}

#[test]
fn lvs_timeouts_set_how_long_established_flows_last() {
    if !require_root("lvs_timeouts_set_how_long_established_flows_last") {
        return;
    }
    let vip = [192, 0, 2, 51];
    let service = service(vip, "rr", "", 0, &[1, 1]);
    let mut balancer = TestBalancer::load(next_hops(), 1 << 12).expect("load");
    let flow = Frame::tcp(v4([198, 21, 1, 1], vip), 9000, 80);
    let ack = flow.clone().with_tcp_flags(TCP_ACK).bytes();
    for (tcp, survives) in [(900, true), (1, false)] {
        let config = format!("global_defs {{\n lvs_timeouts tcp {tcp}\n}}\n{service}");
        balancer.apply_config(&config).expect("apply");
        let first = real_of(&balancer, &flow.bytes()).expect("forwarded");
        assert_eq!(real_of(&balancer, &ack), Some(first));
        // Idle for 2 s: within 900 s, past 1 s (then the connection is gone, and its next
        // segment is not scheduled).
        set_flow_age(&mut balancer, 2);
        let now = real_of(&balancer, &ack);
        let expected = survives.then_some(first);
        assert_eq!(now, expected, "tcp timeout {tcp}");
        // The sweep goes by the same timeouts.
        set_flow_age(&mut balancer, 2);
        let report = balancer.dataplane.sweep().expect("sweep");
        assert_eq!(
            report.expired == 0,
            survives,
            "tcp timeout {tcp}: {report:?}"
        );
    }
}

#[test]
fn ops_schedules_every_udp_datagram_on_its_own() {
    if !require_root("ops_schedules_every_udp_datagram_on_its_own") {
        return;
    }
    let udp = |vip: [u8; 4], extra: &str, net: u8| {
        service(vip, "rr", &format!(" protocol UDP\n{extra}"), net, &[1, 1])
            .replace(" 80 ", " 53 ")
            .replace(" 80\n", " 53\n")
    };
    let config = udp([192, 0, 2, 70], " ops", 0) + &udp([192, 0, 2, 71], "", 1);
    let mut balancer = TestBalancer::load(next_hops(), 1 << 12).expect("load");
    balancer.apply_config(&config).expect("apply");
    let reals = |vip: [u8; 4]| -> Vec<Option<u8>> {
        (0..4)
            .map(|_| {
                real_of(
                    &balancer,
                    &Frame::udp(v4([198, 22, 0, 1], vip), 5353, 53).bytes(),
                )
            })
            .collect()
    };
    // One 5-tuple: with ops each datagram is scheduled (rr alternates), without it the
    // flow keeps its real.
    assert_eq!(reals([192, 0, 2, 70]), [Some(1), Some(2), Some(1), Some(2)]);
    let plain = reals([192, 0, 2, 71]);
    assert!(
        plain.iter().all(|r| *r == plain[0] && r.is_some()),
        "{plain:?}"
    );
    // Only the plain service's flow is recorded.
    assert_eq!(balancer.dataplane.sweep().expect("sweep").flows, 1);
}

#[test]
fn fo_sends_every_new_flow_to_the_highest_weight_and_fails_over_in_weight_order() {
    if !require_root("fo_sends_every_new_flow_to_the_highest_weight_and_fails_over_in_weight_order")
    {
        return;
    }
    let vip = [192, 0, 2, 9];
    let mut balancer = TestBalancer::load(next_hops(), 1 << 12).expect("load");
    // Weights 2, 4, 3, 4: the first of the two fours.
    balancer
        .apply_config(&service(vip, "fo", "", 5, &[2, 4, 3, 4]))
        .expect("apply");
    let (shares, refused) = spread(&balancer, &[vip], 1_000, 7);
    assert_eq!((refused, shares), (0, HashMap::from([(2, 1_000)])));
    // Real 2 drained: the other four takes over; then it too: the three.
    balancer
        .apply_config(&service(vip, "fo", "", 5, &[2, 0, 3, 4]))
        .expect("apply");
    let (shares, _) = spread(&balancer, &[vip], 1_000, 8);
    assert_eq!(shares, HashMap::from([(4, 1_000)]));
    balancer
        .apply_config(&service(vip, "fo", "", 5, &[2, 0, 3, 0]))
        .expect("apply");
    let (shares, _) = spread(&balancer, &[vip], 1_000, 9);
    assert_eq!(shares, HashMap::from([(3, 1_000)]));
    // Every weight 0: nobody takes new flows.
    balancer
        .apply_config(&service(vip, "fo", "", 5, &[0, 0, 0, 0]))
        .expect("apply");
    let (shares, refused) = spread(&balancer, &[vip], 100, 10);
    assert_eq!((shares.len(), refused), (0, 100));
}

#[test]
fn ovf_keeps_the_highest_weight_until_it_is_over_its_weight() {
    if !require_root("ovf_keeps_the_highest_weight_until_it_is_over_its_weight") {
        return;
    }
    let vip = [192, 0, 2, 20];
    let mut balancer = TestBalancer::load(next_hops(), 1 << 12).expect("load");
    // Weights 1, 3, 2, 0 (the last never chosen).
    balancer
        .apply_config(&service(vip, "ovf", "", 6, &[1, 3, 2, 0]))
        .expect("apply");
    let frame = |n: u8| Frame::tcp(v4([198, 18, 6, n], vip), 4000, 80).bytes();
    // (active, inactive) per real, and the real ovf must pick (None: every real is over).
    type Counts = [(u32, u32); 4];
    let cases: [(Counts, Option<u8>); 5] = [
        ([(0, 0); 4], Some(2)),
        // At its weight it still takes flows; inactive connections do not count.
        ([(0, 0), (3, 90), (0, 0), (0, 0)], Some(2)),
        ([(0, 0), (4, 0), (0, 0), (0, 0)], Some(3)),
        ([(0, 0), (4, 0), (3, 0), (0, 0)], Some(1)),
        ([(2, 0), (4, 0), (3, 0), (0, 0)], None),
    ];
    for (case, (counts, expected)) in cases.iter().enumerate() {
        preload(&mut balancer, 6, counts);
        assert_eq!(
            real_of(&balancer, &frame(case as u8)),
            *expected,
            "case {case}: counts {counts:?}"
        );
    }
}

#[test]
fn twos_draws_two_reals_by_weight_and_keeps_the_less_loaded() {
    if !require_root("twos_draws_two_reals_by_weight_and_keeps_the_less_loaded") {
        return;
    }
    let vip = [192, 0, 2, 21];
    let mut balancer = TestBalancer::load(next_hops(), 1 << 14).expect("load");
    balancer
        .apply_config(&service(vip, "twos", "", 7, &[1, 1, 2]))
        .expect("apply");
    // Real 3 holds half the weight and is far the most loaded: it takes a flow only when
    // both draws are it, (2/4)² = 1/4 of them. Drawn uniformly over the reals it would get
    // 1/9; without the comparison, 1/2.
    preload(&mut balancer, 7, &[(0, 0), (0, 0), (100_000, 0)]);
    let (shares, refused) = spread(&balancer, &[vip], 4000, 0x5eed);
    assert_eq!(refused, 0);
    let third = shares.get(&3).copied().unwrap_or(0) as f64 / 4000.0;
    assert!(
        (0.21..=0.29).contains(&third),
        "real 3 got {third:.3}: {shares:?}"
    );
    // The other two, equal in weight and load, share the rest evenly (within 5 points).
    let (first, second) = (shares[&1] as f64 / 4000.0, shares[&2] as f64 / 4000.0);
    assert!((first - second).abs() < 0.05, "{shares:?}");
    // No real with a weight: no choice.
    balancer
        .apply_config(&service(vip, "twos", "", 7, &[0, 0, 0]))
        .expect("apply");
    let frame = Frame::tcp(v4([198, 18, 7, 1], vip), 4000, 80).bytes();
    assert_eq!(real_of(&balancer, &frame), None);
}

/// The real ids of net `net`'s reals 1.., in order.
fn ids_of(balancer: &mut TestBalancer, net: u8, reals: u8) -> Vec<u32> {
    let ids = balancer.real_ids().expect("real ids");
    (1..=reals)
        .map(|n| {
            let addr = IpAddr::from(real_addr(net, n));
            ids.iter()
                .find(|((a, _, _), _)| *a == addr)
                .map(|(_, id)| *id)
                .expect("real id")
        })
        .collect()
}

/// The reals (1..) lblc/lblcr remember for `vip`.
fn remembered(balancer: &mut TestBalancer, vip: [u8; 4], ids: &[u32]) -> Vec<u8> {
    let entries = balancer.locality().expect("locality");
    let (_, entry) = entries
        .iter()
        .find(|(key, _)| key.addr[..4] == vip)
        .expect("an entry for the VIP");
    entry.reals[..entry.len as usize]
        .iter()
        .map(|id| {
            ids.iter()
                .position(|i| i == id)
                .expect("a real of the service") as u8
                + 1
        })
        .collect()
}

#[test]
fn lblc_keeps_a_destination_on_its_real_until_it_is_overloaded() {
    if !require_root("lblc_keeps_a_destination_on_its_real_until_it_is_overloaded") {
        return;
    }
    let vip = [192, 0, 2, 30];
    let mut balancer = TestBalancer::load(next_hops(), 1 << 12).expect("load");
    balancer
        .apply_config(&service(vip, "lblc", "", 1, &[1, 1, 1]))
        .expect("apply");
    let ids = ids_of(&mut balancer, 1, 3);
    let frame = |n: u8| Frame::tcp(v4([198, 18, 1, n], vip), 4000, 80).bytes();
    // (active, inactive) per real before the flow, and the real lblc must pick. Overloaded
    // (IPVS's rule): more active connections than its weight while some real has fewer
    // than half its weight.
    type Counts = [(u32, u32); 3];
    let cases: [(Counts, u8, &str); 5] = [
        ([(0, 0); 3], 1, "nothing remembered: wlc's choice"),
        ([(1, 0), (0, 0), (0, 0)], 1, "at its weight, not over it"),
        (
            [(2, 0), (0, 0), (0, 0)],
            2,
            "over its weight, real 2 idle: wlc's choice",
        ),
        (
            [(0, 0), (1, 0), (0, 0)],
            2,
            "remembered, though wlc would take real 1",
        ),
        (
            [(2, 0), (2, 0), (1, 0)],
            2,
            "over its weight, but no real below half of its own",
        ),
    ];
    for (case, (counts, expected, why)) in cases.iter().enumerate() {
        preload(&mut balancer, 1, counts);
        assert_eq!(
            real_of(&balancer, &frame(case as u8)),
            Some(*expected),
            "case {case} ({why}): counts {counts:?}"
        );
        assert_eq!(remembered(&mut balancer, vip, &ids), [*expected]);
    }
    // A destination unused for longer than the expiration is forgotten.
    balancer
        .set_locality_expiration(Duration::from_secs(1))
        .expect("expiration");
    balancer
        .age_locality(Duration::from_secs(2), Duration::from_secs(2))
        .expect("age");
    preload(&mut balancer, 1, &[(0, 0); 3]);
    assert_eq!(
        real_of(&balancer, &frame(10)),
        Some(1),
        "forgotten: wlc's choice"
    );
    // The remembered real drained: wlc among the others.
    balancer
        .apply_config(&service(vip, "lblc", "", 1, &[1, 0, 1]))
        .expect("apply");
    preload(&mut balancer, 1, &[(0, 0); 3]);
    balancer
        .age_locality(Duration::ZERO, Duration::ZERO)
        .expect("age");
    assert_eq!(real_of(&balancer, &frame(11)), Some(1));
    balancer
        .apply_config(&service(vip, "lblc", "", 1, &[0, 1, 1]))
        .expect("apply");
    preload(&mut balancer, 1, &[(0, 0); 3]);
    assert_eq!(real_of(&balancer, &frame(12)), Some(2), "real 1 drained");
    assert_eq!(remembered(&mut balancer, vip, &ids), [2]);
}

#[test]
fn lblcr_grows_a_destinations_set_when_its_members_are_overloaded() {
    if !require_root("lblcr_grows_a_destinations_set_when_its_members_are_overloaded") {
        return;
    }
    let vip = [192, 0, 2, 31];
    let mut balancer = TestBalancer::load(next_hops(), 1 << 12).expect("load");
    balancer
        .apply_config(&service(vip, "lblcr", "", 2, &[1, 1, 1]))
        .expect("apply");
    let ids = ids_of(&mut balancer, 2, 3);
    let frame = |n: u8| Frame::tcp(v4([198, 18, 2, n], vip), 4000, 80).bytes();
    // (active, inactive) per real, the real lblcr must pick, and the set after.
    type Counts = [(u32, u32); 3];
    let cases: [(Counts, u8, &[u8], &str); 6] = [
        ([(0, 0); 3], 1, &[1], "nothing remembered: wlc's choice"),
        (
            [(2, 0), (0, 0), (0, 0)],
            2,
            &[1, 2],
            "the set's one member overloaded: real 2 joins",
        ),
        (
            [(1, 0), (3, 0), (0, 0)],
            1,
            &[1, 2],
            "the set's least loaded, though wlc would take real 3",
        ),
        (
            [(1, 0), (0, 5), (0, 0)],
            2,
            &[1, 2],
            "the set's least loaded, by wlc's overhead",
        ),
        (
            [(2, 0), (2, 0), (0, 0)],
            3,
            &[1, 2, 3],
            "every member overloaded: real 3 joins",
        ),
        ([(1, 0), (1, 0), (0, 0)], 3, &[1, 2, 3], "a member"),
    ];
    for (case, (counts, expected, set, why)) in cases.iter().enumerate() {
        preload(&mut balancer, 2, counts);
        assert_eq!(
            real_of(&balancer, &frame(case as u8)),
            Some(*expected),
            "case {case} ({why}): counts {counts:?}"
        );
        assert_eq!(remembered(&mut balancer, vip, &ids), *set, "case {case}");
    }
    // A set unchanged for longer than the expiration loses its most loaded member; the
    // flow still goes to the least loaded one.
    balancer
        .set_locality_expiration(Duration::from_secs(1))
        .expect("expiration");
    balancer
        .age_locality(Duration::ZERO, Duration::from_secs(2))
        .expect("age");
    preload(&mut balancer, 2, &[(5, 0), (0, 0), (1, 0)]);
    assert_eq!(real_of(&balancer, &frame(10)), Some(2));
    assert_eq!(remembered(&mut balancer, vip, &ids), [2, 3]);
}

#[test]
fn a_full_lblcr_set_gives_a_drained_members_place_to_a_new_one() {
    if !require_root("a_full_lblcr_set_gives_a_drained_members_place_to_a_new_one") {
        return;
    }
    // Nine reals 10.9.9.1..9 (a set holds at most eight).
    let mut table = HashMap::new();
    for n in 1..=9 {
        let addr = real_addr(9, n);
        table.insert(IpAddr::from(addr), next_hop(mac_of(addr), None));
    }
    let vip = [192, 0, 2, 32];
    let mut balancer = TestBalancer::load(StaticNextHops(table), 1 << 12).expect("load");
    balancer
        .apply_config(&service(vip, "lblcr", "", 9, &[1; 9]))
        .expect("apply");
    let ids = ids_of(&mut balancer, 9, 9);
    let frame = |n: u8| Frame::tcp(v4([198, 18, 9, n], vip), 4000, 80).bytes();
    // Each round the set's members are overloaded (2 active, weight 1) while the others
    // are idle: wlc's choice, the first idle real, joins.
    for round in 1..=8u8 {
        let counts: Vec<(u32, u32)> = (1..=9)
            .map(|n| if n < round { (2, 0) } else { (0, 0) })
            .collect();
        preload(&mut balancer, 9, &counts);
        assert_eq!(
            real_of(&balancer, &frame(round)),
            Some(round),
            "round {round}"
        );
    }
    assert_eq!(
        remembered(&mut balancer, vip, &ids),
        [1, 2, 3, 4, 5, 6, 7, 8]
    );
    // Full. Real 3 drained; every member overloaded: real 9 takes real 3's place.
    let mut weights = [1; 9];
    weights[2] = 0;
    balancer
        .apply_config(&service(vip, "lblcr", "", 9, &weights))
        .expect("apply");
    let counts: Vec<(u32, u32)> = (1..=9)
        .map(|n| if n < 9 { (2, 0) } else { (0, 0) })
        .collect();
    preload(&mut balancer, 9, &counts);
    assert_eq!(real_of(&balancer, &frame(20)), Some(9));
    assert_eq!(
        remembered(&mut balancer, vip, &ids),
        [1, 2, 9, 4, 5, 6, 7, 8]
    );
}
