//! Connection sync's backup side, through BPF_PROG_TEST_RUN: a connection the master sent
//! (`lb_sync::wire::SyncConn`) is installed into the flow table on this director's real
//! with the same address and port, counted in its connections, and its next packet goes
//! there without being scheduled; a NAT connection's replies are translated at once.
//! Connections for a service or a real this director does not have are refused with the
//! reason. Needs root (BPF); see `lb_tests::privilege`.

use std::{collections::HashMap, net::IpAddr};

use lb_common::xdp_action;
use lb_sync::wire::{Ends, SyncConn, flags};
use lb_tests::{
    packet::{Frame, TCP_ACK, v4},
    privilege::require_root,
    testrun::{StaticNextHops, TestBalancer, next_hop},
};
use lb_userspace::{
    dataplane::xdp::{flows::monotonic_now_ns, sync_table::InstallError},
    sync::convert::incoming,
};

const VIP: [u8; 4] = [192, 0, 2, 93];
const CLIENT: [u8; 4] = [198, 18, 21, 1];

fn balancer(lb_kind: &str) -> TestBalancer {
    let mut table = HashMap::new();
    for last in 1..=2u8 {
        table.insert(
            IpAddr::from([10, 9, 3, last]),
            next_hop([0x02, 0xef, 0, 0, 3, last], None),
        );
    }
    let mut balancer = TestBalancer::load(StaticNextHops(table), 1 << 12).expect("load");
    balancer
        .apply_config(&format!(
            "virtual_server 192.0.2.93 80 {{\n lb_algo rr\n lb_kind {lb_kind}\n protocol TCP\n real_server 10.9.3.1 8080 {{ }}\n real_server 10.9.3.2 8080 {{ }}\n}}\n"
        ))
        .expect("apply");
    balancer
}

/// The master's record of an established connection from CLIENT:`port` on real
/// 10.9.3.`real`, forwarded by `forward` (for DR, IPVS sends the VIP's port as the
/// real's, as both directors hold it).
fn record(port: u16, real: u8, forward: u32) -> SyncConn {
    let real_port = if forward == flags::MASQ { 8080 } else { 80 };
    SyncConn {
        protocol: 6,
        flags: forward,
        state: 1,
        ends: Ends::V4 {
            client: CLIENT.into(),
            vip: VIP.into(),
            real: [10, 9, 3, real].into(),
        },
        client_port: port,
        vip_port: 80,
        real_port,
        fwmark: 0,
        timeout_secs: 900,
        seq: None,
        pe_data: Vec::new(),
        pe_name: Vec::new(),
    }
}

/// Install the master's `record` as the backup does.
fn install(balancer: &TestBalancer, record: &SyncConn) -> Result<(), InstallError> {
    let mut table = balancer.dataplane.sync_table().expect("sync maps");
    let flow = incoming(record, &lb_common::conn::Timeouts::IPVS).expect("a flow");
    table.install(&flow, monotonic_now_ns(), std::time::Instant::now())
}

#[test]
fn a_synced_connection_stays_on_its_real_and_is_counted() {
    if !require_root("a_synced_connection_stays_on_its_real_and_is_counted") {
        return;
    }
    let mut balancer = balancer("DR");
    let ack = |port| {
        Frame::tcp(v4(CLIENT, VIP), port, 80)
            .with_tcp_flags(TCP_ACK)
            .bytes()
    };
    // Without sync, a mid-stream segment is not scheduled (rr): it goes to the kernel.
    assert_eq!(balancer.real_of(&ack(9001)), None);
    // Synced on real 2 (rr would give a new flow real 1 first).
    install(&balancer, &record(9002, 2, flags::DROUTE)).expect("installed");
    for _ in 0..3 {
        assert_eq!(balancer.real_of(&ack(9002)), Some(2));
    }
    let real_2 = balancer
        .real_ids()
        .expect("ids")
        .into_iter()
        .find(|((addr, _, _), _)| *addr == IpAddr::from([10, 9, 3, 2]))
        .map(|(_, id)| id)
        .expect("real 2");
    let counts = balancer.conns(real_2).expect("counts");
    assert_eq!((counts.active, counts.inactive), (1, 0));
    // The same connection synced again (a refresh) is still one connection.
    install(&balancer, &record(9002, 2, flags::DROUTE)).expect("installed");
    let counts = balancer.conns(real_2).expect("counts");
    assert_eq!((counts.active, counts.inactive), (1, 0));
}

#[test]
fn a_synced_nat_connection_has_its_replies_translated() {
    if !require_root("a_synced_nat_connection_has_its_replies_translated") {
        return;
    }
    let balancer = balancer("NAT");
    install(&balancer, &record(9003, 1, flags::MASQ)).expect("installed");
    let reply = Frame::tcp(v4([10, 9, 3, 1], CLIENT), 8080, 9003).with_tcp_flags(TCP_ACK);
    let run = balancer.run(&reply.bytes()).expect("run");
    assert_eq!(run.action, xdp_action::XDP_PASS);
    assert_eq!(&run.output[26..30], &VIP, "the reply's source is the VIP");
}

#[test]
fn connections_for_what_this_director_lacks_are_refused() {
    if !require_root("connections_for_what_this_director_lacks_are_refused") {
        return;
    }
    let balancer = balancer("DR");
    let elsewhere = SyncConn {
        vip_port: 443,
        ..record(9004, 1, flags::DROUTE)
    };
    assert!(matches!(
        install(&balancer, &elsewhere),
        Err(InstallError::NoService { port: 443, .. })
    ));
    let unknown_real = record(9005, 9, flags::DROUTE);
    assert!(matches!(
        install(&balancer, &unknown_real),
        Err(InstallError::NoReal { .. })
    ));
}
