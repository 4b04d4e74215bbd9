//! Connection sync's events, through BPF_PROG_TEST_RUN: with `FEATURE_SYNC_EVENTS` the
//! balancer writes each flow it records and each change of a flow's state (by the
//! client's packets, and by a NAT real's replies) into `LB_SYNC_EVENTS`, and nothing for
//! packets that change nothing; without it, nothing at all. Needs root (BPF); see
//! `lb_tests::privilege`.

use std::{collections::HashMap, net::IpAddr};

use aya::maps::{MapData, RingBuf};
use lb_common::{
    SyncEvent,
    conn::{STATE_ESTABLISHED, STATE_FIN_WAIT, STATE_SYN_RECV},
    xdp_action,
};
use lb_tests::{
    packet::{Frame, TCP_ACK, TCP_FIN, v4},
    privilege::require_root,
    testrun::{StaticNextHops, TestBalancer, next_hop},
};
use lb_userspace::dataplane::xdp::XdpOptions;

const CLIENT: [u8; 4] = [198, 18, 20, 1];

fn balancer(sync_events: bool, lb_kind: &str) -> TestBalancer {
    let mut table = HashMap::new();
    table.insert(
        IpAddr::from([10, 9, 2, 1]),
        next_hop([0x02, 0xef, 0, 0, 2, 1], None),
    );
    let mut balancer = TestBalancer::load_with(
        StaticNextHops(table),
        XdpOptions {
            flow_table_size: 1 << 12,
            sync_events,
            ..XdpOptions::private()
        },
    )
    .expect("load");
    balancer
        .apply_config(&format!(
            "virtual_server 192.0.2.92 80 {{\n lb_algo rr\n lb_kind {lb_kind}\n protocol TCP\n real_server 10.9.2.1 8080 {{ }}\n}}\n"
        ))
        .expect("apply");
    balancer
}

/// The events waiting: (client port, real id, state).
fn events(ring: &mut RingBuf<MapData>) -> Vec<(u16, u32, u8)> {
    let mut events = Vec::new();
    while let Some(item) = ring.next() {
        assert_eq!(item.len(), size_of::<SyncEvent>());
        let event: SyncEvent = bytemuck::pod_read_unaligned(&item);
        assert_eq!(&event.key.src[..4], &CLIENT);
        assert_eq!(&event.key.dst[..4], &[192, 0, 2, 92]);
        events.push((
            u16::from_be_bytes(event.key.sport),
            event.real_id,
            event.state,
        ));
    }
    events
}

fn send(balancer: &TestBalancer, frame: Frame) {
    let action = balancer.run(&frame.bytes()).expect("run").action;
    assert!(
        action == xdp_action::XDP_TX || action == xdp_action::XDP_REDIRECT,
        "action {action}"
    );
}

#[test]
fn flows_recorded_and_their_state_changes_are_events() {
    if !require_root("flows_recorded_and_their_state_changes_are_events") {
        return;
    }
    let mut balancer = balancer(true, "DR");
    let mut ring = balancer.dataplane.take_sync_events().expect("ring");
    let flow = Frame::tcp(v4(CLIENT, [192, 0, 2, 92]), 7001, 80);
    send(&balancer, flow.clone());
    let real_id = match events(&mut ring).as_slice() {
        [(7001, real_id, STATE_SYN_RECV)] => *real_id,
        other => panic!("the new flow: {other:?}"),
    };
    send(&balancer, flow.clone().with_tcp_flags(TCP_ACK));
    assert_eq!(events(&mut ring), vec![(7001, real_id, STATE_ESTABLISHED)]);
    // Packets that change nothing write nothing.
    for _ in 0..5 {
        send(&balancer, flow.clone().with_tcp_flags(TCP_ACK));
    }
    assert_eq!(events(&mut ring), vec![]);
    send(&balancer, flow.clone().with_tcp_flags(TCP_FIN | TCP_ACK));
    assert_eq!(events(&mut ring), vec![(7001, real_id, STATE_FIN_WAIT)]);
    // A second flow is its own event.
    send(&balancer, Frame::tcp(v4(CLIENT, [192, 0, 2, 92]), 7002, 80));
    assert_eq!(events(&mut ring), vec![(7002, real_id, STATE_SYN_RECV)]);
}

#[test]
fn a_nat_reply_that_moves_the_state_is_an_event() {
    if !require_root("a_nat_reply_that_moves_the_state_is_an_event") {
        return;
    }
    let mut balancer = balancer(true, "NAT");
    let mut ring = balancer.dataplane.take_sync_events().expect("ring");
    let flow = Frame::tcp(v4(CLIENT, [192, 0, 2, 92]), 7003, 80);
    send(&balancer, flow.clone());
    let real_id = match events(&mut ring).as_slice() {
        [(7003, real_id, STATE_SYN_RECV)] => *real_id,
        other => panic!("the new flow: {other:?}"),
    };
    send(&balancer, flow.with_tcp_flags(TCP_ACK));
    assert_eq!(events(&mut ring), vec![(7003, real_id, STATE_ESTABLISHED)]);
    // The real closes: its FIN moves the flow to FIN_WAIT (IPVS's output table).
    let reply = Frame::tcp(v4([10, 9, 2, 1], CLIENT), 8080, 7003).with_tcp_flags(TCP_FIN | TCP_ACK);
    let run = balancer.run(&reply.bytes()).expect("run");
    assert_eq!(
        run.action,
        xdp_action::XDP_PASS,
        "translated back to the kernel"
    );
    assert_eq!(events(&mut ring), vec![(7003, real_id, STATE_FIN_WAIT)]);
}

#[test]
fn without_sync_nothing_is_written() {
    if !require_root("without_sync_nothing_is_written") {
        return;
    }
    let mut balancer = balancer(false, "DR");
    let mut ring = balancer.dataplane.take_sync_events().expect("ring");
    let flow = Frame::tcp(v4(CLIENT, [192, 0, 2, 92]), 7004, 80);
    send(&balancer, flow.clone());
    send(&balancer, flow.with_tcp_flags(TCP_ACK));
    assert_eq!(events(&mut ring), vec![]);
}
