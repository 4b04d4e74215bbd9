//! Connection state that never misroutes, through BPF_PROG_TEST_RUN: flows of a removed
//! real never follow its reused id to another real; TCP state follows IPVS's tables for
//! both directions (a server's FIN moves a NAT flow, a SYN reuses a closed 5-tuple for a
//! new connection); a TCP segment of no known connection is scheduled only by consistent
//! schedulers, and then as a short-lived flow; FullNAT and NAT reply translations are
//! neither lost to failed reservations nor left lost. Needs root (BPF); see
//! `lb_tests::privilege`.

use std::{collections::HashMap, net::IpAddr, time::Duration};

use lb_common::{
    Outcome,
    conn::{STATE_CLOSE, STATE_FIN_WAIT},
    map_names, xdp_action,
};
use lb_tests::{
    packet::{Frame, TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN, v4},
    privilege::require_root,
    testrun::{StaticNextHops, TestBalancer, next_hop},
};
use lb_userspace::dataplane::{
    Dataplane,
    xdp::{XdpOptions, flows},
};

const VIP: [u8; 4] = [192, 0, 2, 80];

fn next_hops() -> StaticNextHops {
    let mut table = HashMap::new();
    for last in 1..=4u8 {
        table.insert(
            IpAddr::from([10, 8, 0, last]),
            next_hop([0x02, 0xee, 0, 0, 0, last], None),
        );
    }
    // The FullNAT local address (the reals reply to it; the director has it).
    table.insert(
        IpAddr::from([10, 8, 0, 250]),
        next_hop([0x02, 0xee, 0, 0, 0, 250], None),
    );
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
    // The old flow's next packet is not real 2's connection: it is a segment of no known
    // connection, which rr does not schedule (it goes to the kernel), and real 2 counts
    // nothing for it.
    assert_eq!(real_of(&balancer, &ack), None, "went to real 2");
    assert_eq!(new_flows(&balancer), 0);
    let counters = balancer.dataplane.counters().expect("counters");
    assert_eq!(counters.outcome(Outcome::TcpNotSyn), 1);
    assert_eq!(counts(&mut balancer), (0, 0));
    // A consistent scheduler sends it where its connection would be now, as a new flow.
    balancer
        .apply_config(&service(&[2]).replace("lb_algo rr", "lb_algo mh"))
        .expect("apply");
    assert_eq!(real_of(&balancer, &ack), Some(2));
    assert_eq!(new_flows(&balancer), 1, "not scheduled anew");
    assert_eq!(counts(&mut balancer), (0, 1));
}

/// The state of the flow of client `client` port `sport`, if the table has it.
fn flow_state(balancer: &TestBalancer, client: [u8; 4], sport: u16) -> Option<u8> {
    flows::entries(balancer.dataplane.ebpf(), usize::MAX)
        .expect("flows")
        .into_iter()
        .find(|(key, _)| key.src[..4] == client && key.sport == sport.to_be_bytes())
        .map(|(_, state)| state.state)
}

/// The connection counts (active, inactive) of the one real of the configuration.
fn counts(balancer: &mut TestBalancer) -> (u32, u32) {
    let ids = balancer.real_ids().expect("ids");
    let id = ids.values().copied().next().expect("one real");
    let counts = balancer.conns(id).expect("counts");
    (counts.active(), counts.inactive())
}

const NAT: &str = "virtual_server 192.0.2.81 80 {\n lb_algo rr\n lb_kind NAT\n protocol TCP\n real_server 10.8.0.1 8080 { }\n}\n";

#[test]
fn a_servers_fin_moves_a_nat_flow_out_of_established() {
    if !require_root("a_servers_fin_moves_a_nat_flow_out_of_established") {
        return;
    }
    let mut balancer = TestBalancer::load(next_hops(), 1 << 12).expect("load");
    balancer.apply_config(NAT).expect("apply");
    let client = [198, 18, 9, 2];
    let to_vip = Frame::tcp(v4(client, [192, 0, 2, 81]), 5001, 80);
    let from_real = Frame::tcp(v4([10, 8, 0, 1], client), 8080, 5001);
    let run = |balancer: &TestBalancer, frame: Frame, flags: u8| {
        balancer
            .run(&frame.with_tcp_flags(flags).bytes())
            .expect("run")
            .action
    };
    assert_eq!(run(&balancer, to_vip.clone(), TCP_SYN), xdp_action::XDP_TX);
    assert_eq!(
        run(&balancer, from_real.clone(), TCP_SYN | TCP_ACK),
        xdp_action::XDP_PASS
    );
    assert_eq!(run(&balancer, to_vip.clone(), TCP_ACK), xdp_action::XDP_TX);
    assert_eq!(counts(&mut balancer), (1, 0));
    // The server closes first: IPVS's output table takes ESTABLISHED to FIN_WAIT.
    run(&balancer, from_real, TCP_FIN | TCP_ACK);
    assert_eq!(flow_state(&balancer, client, 5001), Some(STATE_FIN_WAIT));
    assert_eq!(counts(&mut balancer), (0, 1));
}

#[test]
fn a_syn_on_a_closed_flow_is_a_new_connection() {
    if !require_root("a_syn_on_a_closed_flow_is_a_new_connection") {
        return;
    }
    let mut balancer = TestBalancer::load(next_hops(), 1 << 12).expect("load");
    balancer.apply_config(&service(&[1, 2])).expect("apply");
    let flow = Frame::tcp(v4([198, 18, 9, 3], VIP), 5002, 80);
    let first = real_of(&balancer, &flow.bytes()).expect("forwarded");
    real_of(&balancer, &flow.clone().with_tcp_flags(TCP_ACK).bytes());
    // A reset: CLOSE. The client opens a new connection from the same port: IPVS's
    // conn_reuse_mode 1 schedules it anew (rr: the other real) instead of sending it where
    // the old one went.
    real_of(&balancer, &flow.clone().with_tcp_flags(TCP_RST).bytes());
    assert_eq!(
        flow_state(&balancer, [198, 18, 9, 3], 5002),
        Some(STATE_CLOSE)
    );
    assert_eq!(real_of(&balancer, &flow.bytes()), Some(3 - first));
    let new_flows = balancer.dataplane.counters().expect("counters").services[0]
        .traffic
        .new_flows;
    assert_eq!(new_flows, 2);
}

#[test]
fn a_segment_of_no_known_connection_is_scheduled_only_by_consistent_schedulers() {
    if !require_root("a_segment_of_no_known_connection_is_scheduled_only_by_consistent_schedulers")
    {
        return;
    }
    let mh = service(&[1]).replace("lb_algo rr", "lb_algo mh");
    for (scheduler, config) in [("rr", service(&[1])), ("mh", mh)] {
        let mut balancer = TestBalancer::load(next_hops(), 1 << 12).expect("load");
        balancer.apply_config(&config).expect("apply");
        let ack = Frame::tcp(v4([198, 18, 9, 4], VIP), 5003, 80).with_tcp_flags(TCP_ACK);
        let run = balancer.run(&ack.bytes()).expect("run");
        let counters = balancer.dataplane.counters().expect("counters");
        if scheduler == "rr" {
            // As IPVS (without sloppy_tcp): passed to the kernel, nothing recorded.
            assert_eq!(run.action, xdp_action::XDP_PASS, "{scheduler}");
            assert_eq!(counters.outcome(Outcome::TcpNotSyn), 1);
            assert_eq!(flow_state(&balancer, [198, 18, 9, 4], 5003), None);
            assert_eq!(counts(&mut balancer), (0, 0));
        } else {
            // A consistent scheduler carries on connections another director began: the
            // flow is kept, but in CLOSE (10 s, inactive) as IPVS's table puts it.
            assert_eq!(run.action, xdp_action::XDP_TX, "{scheduler}");
            assert_eq!(
                flow_state(&balancer, [198, 18, 9, 4], 5003),
                Some(STATE_CLOSE)
            );
            assert_eq!(counts(&mut balancer), (0, 1));
        }
    }
}

const FNAT: &str = "
local_address_group one {
    10.8.0.250
}
virtual_server 192.0.2.82 80 {
    lb_kind FNAT
    protocol TCP
    laddr_group_name one
    real_server 10.8.0.1 8080 {}
}
";

/// FullNAT's port range split into this many CPU shares in these tests, whatever the
/// machine has (so that a test of the shares can fail on a one-CPU machine too).
const SHARES: u16 = 4;

fn fnat_balancer(table: u32, ports: (u16, u16)) -> TestBalancer {
    let options = XdpOptions {
        flow_table_size: table,
        fnat_ports: ports,
        ..XdpOptions::private()
    };
    let mut balancer = TestBalancer::load_with(next_hops(), options).expect("load");
    balancer.apply_config(FNAT).expect("apply");
    balancer.set_port_shares(SHARES).expect("shares");
    balancer
}

/// The local port a FullNAT frame left from (IPv4, untagged).
fn local_port(output: &[u8]) -> u16 {
    u16::from_be_bytes([output[34], output[35]])
}

#[test]
fn failed_port_draws_never_evict_live_reservations() {
    if !require_root("failed_port_draws_never_evict_live_reservations") {
        return;
    }
    // 8 ports for this CPU (test runs happen on CPU 0, which has every 4th port of the
    // range) and a reply table of 8: the 8 flows that take the ports fill it.
    let balancer = fnat_balancer(8, (31000, 31000 + 8 * SHARES - 1));
    let syn = |n: u8| Frame::tcp(v4([198, 18, 10, n], [192, 0, 2, 82]), 6000, 80);
    for n in 0..8 {
        let run = balancer.run(&syn(n).bytes()).expect("run");
        assert_eq!(run.action, xdp_action::XDP_TX, "flow {n}");
    }
    // More flows find every pair taken (young reservations): refused, and their failed
    // draws must not push out a live flow's reservation.
    for n in 8..12 {
        let run = balancer.run(&syn(n).bytes()).expect("run");
        assert_eq!(run.action, xdp_action::XDP_DROP, "flow {n} got a port");
    }
    for n in 0..8 {
        let ack = syn(n).with_tcp_flags(TCP_ACK).bytes();
        let run = balancer.run(&ack).expect("run");
        assert_eq!(run.action, xdp_action::XDP_TX, "flow {n} lost its port");
    }
}

#[test]
fn a_fullnat_flow_that_lost_its_port_is_dropped_and_a_syn_starts_afresh() {
    if !require_root("a_fullnat_flow_that_lost_its_port_is_dropped_and_a_syn_starts_afresh") {
        return;
    }
    let mut balancer = fnat_balancer(1 << 12, (31000, 31063));
    let client = [198, 18, 11, 1];
    let flow = Frame::tcp(v4(client, [192, 0, 2, 82]), 6001, 80);
    let run = balancer.run(&flow.bytes()).expect("run");
    assert_eq!(run.action, xdp_action::XDP_TX);
    let port = local_port(&run.output);
    // Another client's flow holds the pair now (as after an eviction and a take-over).
    let mut translations = balancer.reply_translations().expect("translations");
    assert_eq!(translations.len(), 1);
    let (reply, mut origin) = translations.remove(0);
    origin.client[..4].copy_from_slice(&[198, 18, 11, 99]);
    set_translation(&mut balancer, reply, origin);
    // The flow checks its local end at its first packet in a tick of the flow table's
    // clock: its last packet was a while ago.
    balancer
        .age_flows(Duration::from_secs(2))
        .expect("age flows");
    let ack = flow.clone().with_tcp_flags(TCP_ACK).bytes();
    assert_eq!(
        balancer.run(&ack).expect("run").action,
        xdp_action::XDP_DROP
    );
    // The flow is gone with its port, not kept alive by its own retransmissions.
    assert_eq!(flow_state(&balancer, client, 6001), None);
    assert_eq!(counts(&mut balancer), (0, 0));
    let run = balancer.run(&flow.bytes()).expect("run");
    assert_eq!(run.action, xdp_action::XDP_TX, "a new SYN gets a new port");
    assert_ne!(local_port(&run.output), port);
}

#[test]
fn fullnat_ports_are_drawn_from_this_cpus_share_of_the_range() {
    if !require_root("fullnat_ports_are_drawn_from_this_cpus_share_of_the_range") {
        return;
    }
    // Test runs happen on CPU 0 (TestBalancer pins itself there): with 4 shares, CPU 0
    // draws ports first, first + 4, first + 8, ... so no other CPU can draw them.
    let balancer = fnat_balancer(1 << 12, (32000, 32999));
    for n in 0..50u16 {
        let syn = Frame::tcp(v4([198, 18, 12, n as u8], [192, 0, 2, 82]), 6002, 80);
        let run = balancer.run(&syn.bytes()).expect("run");
        assert_eq!(run.action, xdp_action::XDP_TX);
        assert_eq!((local_port(&run.output) - 32000) % SHARES, 0);
    }
}

#[test]
fn a_nat_reply_translation_lost_is_made_again_by_the_flow() {
    if !require_root("a_nat_reply_translation_lost_is_made_again_by_the_flow") {
        return;
    }
    let mut balancer = TestBalancer::load(next_hops(), 1 << 12).expect("load");
    balancer.apply_config(NAT).expect("apply");
    let client = [198, 18, 13, 1];
    let to_vip = Frame::tcp(v4(client, [192, 0, 2, 81]), 5004, 80);
    assert_eq!(
        balancer.run(&to_vip.bytes()).expect("run").action,
        xdp_action::XDP_TX
    );
    // The translation is gone (evicted from a full table, say) while the flow idled.
    let (reply, _) = balancer.reply_translations().expect("translations")[0];
    remove_translation(&mut balancer, reply);
    balancer
        .age_flows(Duration::from_secs(2))
        .expect("age flows");
    let ack = to_vip.with_tcp_flags(TCP_ACK).bytes();
    assert_eq!(balancer.run(&ack).expect("run").action, xdp_action::XDP_TX);
    // The flow's next packet made it again: the real's reply is translated.
    let from_real = Frame::tcp(v4([10, 8, 0, 1], client), 8080, 5004).with_tcp_flags(TCP_ACK);
    let run = balancer.run(&from_real.bytes()).expect("run");
    assert_eq!(run.action, xdp_action::XDP_PASS);
    assert_eq!(&run.output[26..30], &[192, 0, 2, 81], "source not the VIP");
}

/// The reply translations (`LB_NAT_REVERSE`), to change behind the data plane's back.
fn translations(
    balancer: &mut TestBalancer,
) -> aya::maps::HashMap<&mut aya::maps::MapData, lb_common::FlowKey, lb_common::NatOrigin> {
    let map = balancer
        .dataplane
        .ebpf_mut()
        .map_mut(map_names::NAT_REVERSE)
        .expect("LB_NAT_REVERSE");
    aya::maps::HashMap::try_from(map).expect("map")
}

fn set_translation(
    balancer: &mut TestBalancer,
    reply: lb_common::FlowKey,
    origin: lb_common::NatOrigin,
) {
    translations(balancer)
        .insert(reply, origin, 0)
        .expect("insert");
}

fn remove_translation(balancer: &mut TestBalancer, reply: lb_common::FlowKey) {
    translations(balancer).remove(&reply).expect("remove");
}
