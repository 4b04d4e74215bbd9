//! Publishing scheduling tables service by service, through BPF_PROG_TEST_RUN: a change
//! that touches many services is not refused because all their new tables cannot sit next
//! to the old ones at once; each service swaps atomically on its own, as soon as the arena
//! has room for its new table (a later apply, `ApplyReport::retry_at`, finishes the rest).
//! Needs root (BPF); see `lb_tests::privilege`.

use std::{collections::HashMap, net::IpAddr, time::Instant};

use lb_common::xdp_action;
use lb_tests::{
    packet::{Frame, v4},
    privilege::require_root,
    testrun::{StaticNextHops, TestBalancer, next_hop},
};
use lb_userspace::dataplane::xdp::XdpOptions;

fn next_hops() -> StaticNextHops {
    let mut table = HashMap::new();
    for last in 1..=3u8 {
        table.insert(
            IpAddr::from([10, 9, 0, last]),
            next_hop([0x02, 0xee, 0, 0, 0, last], None),
        );
    }
    StaticNextHops(table)
}

/// rr services on 192.0.2.60 (reals `x`) and 192.0.2.61 (reals `y`), port 80.
fn config(x: &[u8], y: &[u8]) -> String {
    let mut text = String::new();
    for (vip, reals) in [(60, x), (61, y)] {
        text += &format!(
            "virtual_server 192.0.2.{vip} 80 {{\n lb_algo rr\n lb_kind DR\n protocol TCP\n"
        );
        for last in reals {
            text += &format!(" real_server 10.9.0.{last} 80 {{ }}\n");
        }
        text += "}\n";
    }
    text
}

/// The reals (last byte of their MAC) that `count` new flows to `vip` went to, sorted.
fn reals_of(balancer: &TestBalancer, vip: u8, count: u16, first_port: u16) -> Vec<u8> {
    let mut reals: Vec<u8> = (0..count)
        .map(|i| {
            let syn = Frame::tcp(v4([198, 18, 20, vip], [192, 0, 2, vip]), first_port + i, 80);
            let run = balancer.run(&syn.bytes()).expect("run");
            assert_eq!(run.action, xdp_action::XDP_TX);
            run.output[5]
        })
        .collect();
    reals.sort();
    reals.dedup();
    reals
}

#[test]
fn a_change_to_many_services_is_published_service_by_service() {
    if !require_root("a_change_to_many_services_is_published_service_by_service") {
        return;
    }
    // Room for 7 table entries: 2 + 2 in use, 3 free.
    let options = XdpOptions {
        flow_table_size: 1 << 12,
        sched_table_entries: 7,
        ..XdpOptions::private()
    };
    let mut balancer = TestBalancer::load_with(next_hops(), options).expect("load");
    balancer
        .apply_config(&config(&[1, 2], &[1, 2]))
        .expect("apply");
    // Both tables change (3 and 2 entries): together they do not fit next to the old ones,
    // one at a time they do.
    let report = balancer
        .apply_config(&config(&[1, 2, 3], &[1, 3]))
        .expect("a change that fits service by service");
    let retry_at = report.retry_at.expect("one table waits for room");
    assert_eq!(
        reals_of(&balancer, 60, 6, 1000),
        [1, 2, 3],
        "the first swapped"
    );
    // The second waits with its old table, where the real that left takes no new flows.
    assert_eq!(reals_of(&balancer, 61, 6, 1000), [1], "the second waits");
    // Once the first's old table is out of its grace period, the second swaps too.
    std::thread::sleep(retry_at.saturating_duration_since(Instant::now()));
    let report = balancer
        .apply_config(&config(&[1, 2, 3], &[1, 3]))
        .expect("apply again");
    assert_eq!(report.retry_at, None);
    assert_eq!(reals_of(&balancer, 61, 6, 2000), [1, 3]);
    // A table that can never fit (wrr 1:7, 8 entries) is refused, and the running ones
    // serve on.
    let too_big = config(&[1, 2, 3], &[1, 3]).replacen(
        "lb_algo rr\n lb_kind DR\n protocol TCP\n real_server 10.9.0.1 80 { }\n real_server 10.9.0.3 80 { }",
        "lb_algo wrr\n lb_kind DR\n protocol TCP\n real_server 10.9.0.1 80 { }\n real_server 10.9.0.3 80 { weight 7 }",
        1,
    );
    assert!(too_big.contains("weight 7"));
    let error = balancer.apply_config(&too_big).expect_err("refused");
    assert!(
        format!("{error:#}").contains("scheduling table entries"),
        "{error:#}"
    );
    assert_eq!(reals_of(&balancer, 61, 6, 3000), [1, 3]);
}
