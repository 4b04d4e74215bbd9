//! lbd's connection sync on the wire: lbd balances the DR lab with `lvs_sync_daemon eth0
//! VI_1`, its VRRP instance MASTER; the client's TCP connections through the VIP go out
//! as IPVS sync messages to 224.0.0.81:8848 on the lab's segment, where a listener in a
//! real's namespace reads them with the codec: the client's address and port, the VIP,
//! the real that answered, ESTABLISHED. Needs root; see `lb_tests::privilege`.

use std::{
    collections::BTreeSet,
    net::{IpAddr, Ipv4Addr},
    path::Path,
    time::{Duration, Instant},
};

use lb_sync::wire::{Message, flags};
use lb_tests::{
    lbd::{Lbd, lbctl_ok_in},
    privilege::require_root,
    topology::{CLIENT_ADDR, Topology, VIP, real_addr},
};
use lb_userspace::sync::socket::SyncSockets;

const LAB: &str = env!("CARGO_BIN_EXE_lab");

#[test]
fn lbd_as_master_sends_its_connections() {
    if !require_root("lbd_as_master_sends_its_connections") {
        return;
    }
    let prefix = "lbt-syl";
    let mut lab = Topology::create(prefix, 2).expect("topology");
    lab.start_http_servers(Path::new(LAB))
        .expect("HTTP servers");
    let dir = lab.scratch_dir();
    let config = dir.join("keepalived.conf");
    // The instance's own address is not the VIP, which the lab puts on the director.
    let text = format!(
        "global_defs {{\n    lvs_sync_daemon eth0 VI_1 id 9\n}}\nvrrp_instance VI_1 {{\n    state MASTER\n    interface eth0\n    virtual_router_id 90\n    priority 255\n    advert_int 1\n    virtual_ipaddress {{\n        10.0.0.190/24\n    }}\n}}\n{}",
        lab.keepalived_conf(
            "rr",
            &[
                (lab.reals[0].name.as_str(), 1),
                (lab.reals[1].name.as_str(), 1)
            ]
        )
    );
    std::fs::write(&config, text).expect("write config");
    // The listener first, so that nothing sent is missed.
    let listener = lab.reals[0]
        .ns
        .run(|| {
            Ok(SyncSockets::open(
                "eth0",
                IpAddr::from([224, 0, 0, 81]),
                8848,
                1,
            )?)
        })
        .expect("listener");
    listener.receive.set_nonblocking(false).expect("blocking");
    listener
        .receive
        .set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    let mut lbd = Lbd::start(
        &lab.director,
        &config,
        "eth0",
        prefix,
        &dir.join("lbd.log"),
        &[],
    )
    .expect("lbd");
    lbd.wait_for("VRRP: VI_1 is MASTER", 1, Duration::from_secs(10))
        .expect("master");
    let answers = lab.spread(4).expect("requests through the VIP");
    assert_eq!(answers.values().sum::<usize>(), 4);

    // Each connection's records: the handshake's SYN_RECV, then ESTABLISHED, and so on.
    let reals: BTreeSet<Ipv4Addr> = [real_addr(0), real_addr(1)].into();
    let mut established = BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut buffer = [0u8; 65536];
    while established.len() < 4 {
        assert!(
            Instant::now() < deadline,
            "4 ESTABLISHED records within 10 s; got {established:?}\n{}",
            lbd.log().join("\n")
        );
        let Ok(len) = listener.receive.recv(&mut buffer) else {
            continue;
        };
        let decoded = Message::decode(&buffer[..len]).expect("lbd's message decodes");
        assert!(decoded.skipped.is_empty());
        assert_eq!(decoded.message.syncid, 9);
        for conn in decoded.message.conns {
            assert_eq!(conn.ends.client(), IpAddr::from(CLIENT_ADDR));
            assert_eq!(conn.ends.vip(), IpAddr::from(VIP));
            let IpAddr::V4(real) = conn.ends.real() else {
                panic!("an IPv4 real");
            };
            assert!(reals.contains(&real), "real {real}");
            assert_eq!((conn.protocol, conn.vip_port), (6, 80));
            assert_eq!(conn.flags & flags::FWD_MASK, flags::DROUTE);
            if conn.state == 1 {
                assert_eq!(conn.flags & flags::INACTIVE, 0);
                assert_eq!(conn.timeout_secs, 900);
                established.insert(conn.client_port);
            }
        }
    }
    // lbctl sync shows the daemon as master with what it sent.
    let text = lbctl_ok_in(Some(&lab.director), prefix, &["sync"]);
    assert!(
        text.contains("following VI_1: MASTER"),
        "lbctl sync:\n{text}"
    );
    let json: serde_json::Value = serde_json::from_str(&lbctl_ok_in(
        Some(&lab.director),
        prefix,
        &["--json", "sync"],
    ))
    .expect("JSON");
    assert_eq!(json["role"], "MASTER");
    assert_eq!(json["syncid"], 9);
    assert!(
        json["conns_sent"].as_u64().is_some_and(|n| n >= 8),
        "{json}"
    );
}
