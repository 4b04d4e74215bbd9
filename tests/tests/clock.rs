//! The flow table's clock, through BPF_PROG_TEST_RUN: the program times flows by the
//! kernel's jiffies, scaled by the calibration userspace wrote into `LB_SETTINGS`, and the
//! time it records is `CLOCK_MONOTONIC_COARSE`, the clock userspace ages flows by; with
//! the calibration zeroed (as before userspace wrote it) it reads the coarse clock itself
//! and records the same time. Needs root (BPF); see `lb_tests::privilege`.

use std::{collections::HashMap, net::IpAddr, time::Duration};

use aya::maps::{Array, HashMap as BpfHashMap, MapData};
use lb_common::{FlowKey, FlowState, Settings, map_names, xdp_action};
use lb_tests::{
    packet::{Frame, v4},
    privilege::require_root,
    testrun::{StaticNextHops, TestBalancer, ago, next_hop},
};

const VIP: [u8; 4] = [192, 0, 2, 91];
const CONFIG: &str = "virtual_server 192.0.2.91 80 {\n lb_algo rr\n lb_kind DR\n protocol TCP\n real_server 10.9.1.1 80 { }\n}\n";

fn balancer() -> TestBalancer {
    let mut table = HashMap::new();
    table.insert(
        IpAddr::from([10, 9, 1, 1]),
        next_hop([0x02, 0xef, 0, 0, 1, 1], None),
    );
    let mut balancer = TestBalancer::load(StaticNextHops(table), 1 << 12).expect("load");
    balancer.apply_config(CONFIG).expect("apply");
    balancer
}

fn settings(balancer: &mut TestBalancer) -> Array<&mut MapData, Settings> {
    let map = balancer
        .dataplane
        .ebpf_mut()
        .map_mut(map_names::SETTINGS)
        .expect("LB_SETTINGS");
    Array::try_from(map).expect("array")
}

/// Send a new flow's first packet, and return the coarse clock before it, the time the
/// flow table recorded, and the coarse clock after it.
fn record_a_flow(balancer: &mut TestBalancer, client_port: u16) -> (u64, u64, u64) {
    let frame = Frame::tcp(v4([198, 18, 8, 1], VIP), client_port, 80).bytes();
    let before = ago(Duration::ZERO);
    let run = balancer.run(&frame).expect("test run");
    let after = ago(Duration::ZERO);
    assert_eq!(run.action, xdp_action::XDP_TX);
    let flows: BpfHashMap<&MapData, FlowKey, FlowState> = BpfHashMap::try_from(
        balancer
            .dataplane
            .ebpf()
            .map(map_names::FLOWS)
            .expect("LB_FLOWS"),
    )
    .expect("hash map");
    let recorded = flows
        .iter()
        .map(|entry| entry.expect("flow"))
        .find(|(key, _)| key.sport == client_port.to_be_bytes())
        .expect("the flow is recorded")
        .1
        .last_seen_ns;
    (before, recorded, after)
}

/// `recorded` is the coarse clock's reading between `before` and `after`, give or take
/// `slack_ns` (a tick: the jiffies and the coarse clock move at the same tick, one just
/// before the other).
fn assert_within(before: u64, recorded: u64, after: u64, slack_ns: u64) {
    assert!(
        recorded + slack_ns >= before && recorded <= after + slack_ns,
        "recorded {recorded} ns, the coarse clock read {before}..={after} ns (slack {slack_ns} ns)"
    );
}

#[test]
fn flows_are_timed_by_jiffies_on_the_monotonic_clock() {
    if !require_root("flows_are_timed_by_jiffies_on_the_monotonic_clock") {
        return;
    }
    let mut balancer = balancer();
    let written = settings(&mut balancer).get(&0, 0).expect("settings");
    assert_ne!(written.clock_tick_ns, 0, "the clock is calibrated");
    let hz = 1_000_000_000 / written.clock_tick_ns;
    assert!(
        (24..=1200).contains(&hz),
        "a tick of {} ns",
        written.clock_tick_ns
    );
    // Several flows, over several ticks: each is stamped with the monotonic time.
    for port in 0..5 {
        let (before, recorded, after) = record_a_flow(&mut balancer, 40000 + port);
        assert_within(before, recorded, after, written.clock_tick_ns);
        std::thread::sleep(Duration::from_millis(7));
    }
}

#[test]
fn without_a_calibration_flows_are_timed_by_the_coarse_clock() {
    if !require_root("without_a_calibration_flows_are_timed_by_the_coarse_clock") {
        return;
    }
    let mut balancer = balancer();
    let mut map = settings(&mut balancer);
    let written = map.get(&0, 0).expect("settings");
    let tick_ns = written.clock_tick_ns;
    // A wrong offset, to show it is not read: without a tick, the offset means nothing.
    let uncalibrated = Settings {
        clock_tick_ns: 0,
        clock_offset_ns: 12_345_678_901,
        ..written
    };
    map.set(0, uncalibrated, 0).expect("write settings");
    let (before, recorded, after) = record_a_flow(&mut balancer, 41000);
    assert_within(before, recorded, after, 0);
    // And a wrong offset with the tick is read: the time recorded moves by it.
    let mut map = settings(&mut balancer);
    map.set(
        0,
        Settings {
            clock_offset_ns: written.clock_offset_ns.wrapping_add(3_600_000_000_000),
            ..written
        },
        0,
    )
    .expect("write settings");
    let (before, recorded, after) = record_a_flow(&mut balancer, 41001);
    assert_within(
        before + 3_600_000_000_000,
        recorded,
        after + 3_600_000_000_000,
        tick_ns,
    );
}
