//! Golden output of every lbctl view and of the metrics on one fixed dataset: two
//! services (DR with three reals, one retired; NAT IPv6 persistent sh with flags), large
//! counters for the K/M/G units, connections, VRRP instances and checkers.
//!
//! `UPDATE_GOLDEN=1 cargo test -p lb-userspace --test views` rewrites the files; review
//! the diff.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use lb_common::Outcome;
use lb_userspace::{
    dataplane::{
        Counters, RealCounters, ServiceCounters, Traffic, xdp::dump::MapSummary,
        xdp::flows::Connection,
    },
    metrics,
    model::Protocol,
    status::{CheckStatus, VrrpCounters, VrrpStatus},
    view::{
        ipvsadm::{self, Columns, ListJson},
        status as status_view,
    },
};

/// "Now" for every relative time: 2026-11-22 12:00:00 UTC.
const NOW_MS: u64 = 1_795_348_800_000;

fn traffic(scale: u64) -> Traffic {
    Traffic {
        packets: 1_000 * scale,
        bytes: 64_000 * scale,
        new_flows: 10 * scale,
        out_packets: 900 * scale,
        out_bytes: 1_200_000 * scale,
    }
}

fn real(addr: &str, port: u16, forward: &'static str, weight: u16, scale: u64) -> RealCounters {
    RealCounters {
        addr: addr.parse().unwrap(),
        port,
        forward,
        weight,
        retired: false,
        traffic: traffic(scale),
        active_conns: 3 * scale as u32,
        inactive_conns: scale as u32,
        upper_threshold: 0,
        lower_threshold: 0,
    }
}

fn dataset(scale: u64) -> Counters {
    let mut retired = real("10.0.1.9", 80, "Route", 0, 1);
    retired.retired = true;
    Counters {
        outcomes: Outcome::ALL
            .iter()
            .enumerate()
            .map(|(i, o)| (*o, i as u64 * scale))
            .collect(),
        services: vec![
            ServiceCounters {
                addr: "10.0.0.100".parse().unwrap(),
                port: 80,
                protocol: Protocol::Tcp,
                fwmark: None,
                scheduler: "wrr",
                sched_flags: vec![],
                persistent: None,
                ops: false,
                traffic: traffic(300_000 * scale),
                reals: vec![
                    real("10.0.1.2", 80, "Route", 3, 200_000 * scale),
                    real("10.0.1.3", 80, "Route", 1, 100_000 * scale),
                    retired,
                ],
            },
            ServiceCounters {
                addr: "2001:db8::100".parse().unwrap(),
                port: 53,
                protocol: Protocol::Udp,
                fwmark: None,
                scheduler: "sh",
                sched_flags: vec!["sh-fallback", "sh-port"],
                persistent: Some((300, 64)),
                ops: true,
                traffic: traffic(scale),
                reals: vec![real("2001:db8::2", 5353, "Masq", 1, scale)],
            },
            ServiceCounters {
                addr: "10.0.0.101".parse().unwrap(),
                port: 443,
                protocol: Protocol::Tcp,
                fwmark: None,
                scheduler: "mh",
                sched_flags: vec!["mh-port"],
                persistent: Some((60, 24)),
                ops: false,
                traffic: Traffic::default(),
                reals: vec![],
            },
            // `virtual_server fwmark 7` (IPVS only): DR keeps the packet's port.
            ServiceCounters {
                addr: "0.0.0.0".parse().unwrap(),
                port: 0,
                protocol: Protocol::Tcp,
                fwmark: Some(7),
                scheduler: "rr",
                sched_flags: vec![],
                persistent: Some((300, 32)),
                ops: false,
                traffic: traffic(2 * scale),
                reals: vec![real("10.0.1.5", 0, "Route", 1, 2 * scale)],
            },
        ],
    }
}

fn connections() -> Vec<Connection> {
    let conn = |client: &str, state, expire_secs, active| Connection {
        protocol: Protocol::Tcp,
        expire_secs,
        state,
        active,
        client: client.parse::<SocketAddr>().unwrap(),
        vip: "10.0.0.100:80".parse().unwrap(),
        real: "10.0.1.2:80".parse().unwrap(),
        forward: "Route",
    };
    vec![
        conn("192.0.2.10:40001", "ESTABLISHED", 899, true),
        conn("192.0.2.11:40002", "FIN_WAIT", 61, false),
        Connection {
            protocol: Protocol::Udp,
            expire_secs: 300,
            state: "UDP",
            active: false,
            client: "[2001:db8:1::7]:5000".parse().unwrap(),
            vip: "[2001:db8::100]:53".parse().unwrap(),
            real: "[2001:db8::2]:5353".parse().unwrap(),
            forward: "Masq",
        },
    ]
}

fn vrrp() -> Vec<VrrpStatus> {
    vec![
        VrrpStatus {
            name: "VI_1".into(),
            interface: "eth0".into(),
            vrid: 51,
            version: 2,
            state: "MASTER".into(),
            priority: 150,
            configured_priority: 150,
            master: Some("10.0.0.2".parse().unwrap()),
            vips: vec!["10.0.0.100".parse().unwrap(), "10.0.0.101".parse().unwrap()],
            since_unix_ms: NOW_MS - 192_000,
            counters: VrrpCounters {
                adverts_received: 3,
                adverts_sent: 192,
                became_master: 1,
                transitions: 2,
                ..VrrpCounters::default()
            },
        },
        VrrpStatus {
            name: "VI_6".into(),
            interface: "eth1".into(),
            vrid: 52,
            version: 3,
            state: "BACKUP".into(),
            priority: 90,
            configured_priority: 100,
            master: Some("fe80::1".parse().unwrap()),
            vips: vec!["2001:db8::100".parse().unwrap()],
            since_unix_ms: NOW_MS - 7_500_000,
            counters: VrrpCounters {
                adverts_received: 750_000,
                released_master: 1,
                became_master: 1,
                priority_zero_received: 1,
                invalid_packets: 2,
                ttl_errors: 1,
                version_errors: 1,
                auth_errors: 4,
                transitions: 3,
                ..VrrpCounters::default()
            },
        },
    ]
}

fn checks() -> Vec<CheckStatus> {
    vec![
        CheckStatus {
            service: "TCP 10.0.0.100:80".into(),
            real: "10.0.1.2".parse().unwrap(),
            port: 80,
            index: 0,
            kind: "HTTP_GET".into(),
            up: true,
            since_unix_ms: NOW_MS - 3_600_000,
            last_result: Some("ok".into()),
            last_probe_unix_ms: Some(NOW_MS - 2_000),
            consecutive_failures: 0,
            probes: 720,
            failures: 1,
            latency_buckets: vec![700, 15, 4, 1, 0, 0, 0, 0, 0, 0, 0],
            latency_sum_seconds: 0.75,
        },
        CheckStatus {
            service: "TCP 10.0.0.100:80".into(),
            real: "10.0.1.3".parse().unwrap(),
            port: 80,
            index: 0,
            kind: "TCP_CHECK".into(),
            up: false,
            since_unix_ms: NOW_MS - 45_000,
            last_result: Some("connect: connection refused".into()),
            last_probe_unix_ms: Some(NOW_MS - 1_000),
            consecutive_failures: 4,
            probes: 700,
            failures: 4,
            latency_buckets: vec![700, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            latency_sum_seconds: 0.07,
        },
        CheckStatus {
            service: "UDP [2001:db8::100]:53".into(),
            real: "2001:db8::2".parse().unwrap(),
            port: 5353,
            index: 1,
            kind: "DNS_CHECK".into(),
            up: true,
            since_unix_ms: NOW_MS - 5_000,
            ..CheckStatus::default()
        },
    ]
}

fn maps() -> Vec<MapSummary> {
    [
        ("LB_FLOWS", "LruHashMap", 40, 24, 1_048_576),
        ("LB_REALS", "Array", 4, 80, 4096),
        ("LB_SERVICE_STATS", "PerCpuArray", 4, 40, 512),
    ]
    .map(
        |(name, kind, key_size, value_size, max_entries)| MapSummary {
            name: name.into(),
            kind: kind.into(),
            key_size,
            value_size,
            max_entries,
        },
    )
    .to_vec()
}

/// Compare `actual` with the golden file `name` (or write it with UPDATE_GOLDEN=1).
fn golden(name: &str, actual: &str) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (UPDATE_GOLDEN=1 writes it)", path.display()));
    assert!(
        expected == actual,
        "{name} differs from its golden file:\n--- expected\n{expected}\n--- actual\n{actual}"
    );
}

const HEADER: &str = "lbd XDP Virtual Server, instance lbd (flow table size=1048576)";

#[test]
fn list_views_match_their_golden_output() {
    let counters = dataset(1);
    golden(
        "list.txt",
        &ipvsadm::list(&counters, Some(HEADER), Columns::Table, false),
    );
    golden(
        "list-stats.txt",
        &ipvsadm::list(&counters, Some(HEADER), Columns::Stats, false),
    );
    golden(
        "list-stats-exact.txt",
        &ipvsadm::list(&counters, Some(HEADER), Columns::Stats, true),
    );
    golden(
        "list-thresholds.txt",
        &ipvsadm::list(&counters, Some(HEADER), Columns::Thresholds, false),
    );
    let rates = ipvsadm::rates(&dataset(1), &dataset(3), Duration::from_secs(2));
    golden(
        "list-rate.txt",
        &ipvsadm::list(&rates, None, Columns::Rate, false),
    );
    golden(
        "list.json",
        &serde_json::to_string_pretty(&ListJson::of(&counters)).unwrap(),
    );
}

#[test]
fn connection_view_matches_its_golden_output() {
    golden("connections.txt", &ipvsadm::connections(&connections()));
    golden(
        "connections.json",
        &serde_json::to_string_pretty(&connections()).unwrap(),
    );
}

#[test]
fn status_views_match_their_golden_output() {
    golden("vrrp.txt", &status_view::vrrp(&vrrp(), NOW_MS));
    golden("vrrp.json", &serde_json::to_string_pretty(&vrrp()).unwrap());
    golden("checks.txt", &status_view::checks(&checks(), NOW_MS));
    golden(
        "checks.json",
        &serde_json::to_string_pretty(&checks()).unwrap(),
    );
    golden("maps.txt", &status_view::map_list(&maps()));
}

#[test]
fn metrics_match_their_golden_output() {
    golden(
        "metrics.txt",
        &metrics::render(Some(&dataset(1)), &vrrp(), &checks()),
    );
}
