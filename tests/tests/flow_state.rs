//! Connection state that never misroutes, through BPF_PROG_TEST_RUN: flows of a removed
//! real never follow its reused id to another real. Needs root (BPF); see
//! `lb_tests::privilege`.

use std::{collections::HashMap, net::IpAddr};

use lb_common::xdp_action;
use lb_tests::{
    packet::{Frame, TCP_ACK, v4},
    privilege::require_root,
    testrun::{StaticNextHops, TestBalancer, next_hop},
};
use lb_userspace::dataplane::Dataplane;

const VIP: [u8; 4] = [192, 0, 2, 80];

fn next_hops() -> StaticNextHops {
    let mut table = HashMap::new();
    for last in 1..=4u8 {
        table.insert(
            IpAddr::from([10, 8, 0, last]),
            next_hop([0x02, 0xee, 0, 0, 0, last], None),
        );
    }
    StaticNextHops(table)
}

/// One DR service on VIP:80 over reals 10.8.0.N for each N of `reals`.
fn service(reals: &[u8]) -> String {
    let mut text =
        "virtual_server 192.0.2.80 80 {\n lb_algo rr\n lb_kind DR\n protocol TCP\n".to_owned();
    for last in reals {
        text += &format!(" real_server 10.8.0.{last} 80 {{ }}\n");
    }
    text + "}\n"
}

/// The real (last byte of its MAC) a frame went to.
fn real_of(balancer: &TestBalancer, frame: &[u8]) -> Option<u8> {
    let run = balancer.run(frame).expect("test run");
    (run.action == xdp_action::XDP_TX).then(|| run.output[5])
}

#[test]
fn a_flow_never_follows_its_reals_reused_id_to_another_real() {
    if !require_root("a_flow_never_follows_its_reals_reused_id_to_another_real") {
        return;
    }
    let mut balancer = TestBalancer::load(next_hops(), 1 << 12).expect("load");
    balancer.apply_config(&service(&[1])).expect("apply");
    let flow = Frame::tcp(v4([198, 18, 9, 1], VIP), 5000, 80);
    assert_eq!(real_of(&balancer, &flow.bytes()), Some(1));
    let ack = flow.with_tcp_flags(TCP_ACK).bytes();
    assert_eq!(real_of(&balancer, &ack), Some(1));
    // The service goes, and comes back with another real, which gets the freed ids.
    balancer.apply_config("").expect("no services");
    balancer.apply_config(&service(&[2])).expect("apply");
    let new_flows = |balancer: &TestBalancer| {
        balancer.dataplane.counters().expect("counters").services[0]
            .traffic
            .new_flows
    };
    assert_eq!(new_flows(&balancer), 0);
    // The old flow's next packet is not real 2's connection yet: it is scheduled anew
    // (rr has only real 2) and counted as such, on the real that now has it.
    assert_eq!(real_of(&balancer, &ack), Some(2));
    assert_eq!(
        new_flows(&balancer),
        1,
        "the old flow was not scheduled anew"
    );
    let ids = balancer.real_ids().expect("ids");
    let id = ids.values().copied().next().expect("one real");
    assert_eq!(balancer.conns(id).expect("counts").active(), 1);
}
