//! A director failover with connection sync, in network namespaces: two lbd directors
//! (XDP, VRRP with `advert_int 0.1`, `lvs_sync_daemon`), three DR reals, and a client with
//! 20 long-lived TCP connections through the VIP, each asking every 100 ms. The master
//! dies as a crashed host would (lbd SIGKILLed, its link down); every connection goes on
//! through the backup on the same real, none breaks, none stalls for long. The same
//! without sync breaks the connections: the test shows that it would catch the loss.
//! Needs root; see `lb_tests::privilege`.

use std::{
    collections::BTreeMap,
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use lb_tests::{
    http::KeepAlive,
    lbd::Lbd,
    netns::Netns,
    privilege::require_root,
    topology::{Topology, vip_http},
};

const LAB: &str = env!("CARGO_BIN_EXE_lab");
const CONNECTIONS: usize = 20;

/// What the client saw on one connection.
#[derive(Debug, Default)]
struct Seen {
    /// The reals that answered, in order of first answer.
    reals: Vec<String>,
    answers: usize,
    /// The first error, if the connection broke.
    broke: Option<String>,
    /// The longest time between two answers.
    longest_gap: Duration,
}

fn config(lab: &Topology, priority: u8, sync: bool) -> String {
    let reals: Vec<(&str, u32)> = lab.reals.iter().map(|r| (r.name.as_str(), 1)).collect();
    let sync = if sync {
        "global_defs {\n    lvs_sync_daemon eth0 VI_1\n}\n"
    } else {
        ""
    };
    format!(
        "{sync}vrrp_instance VI_1 {{\n    state BACKUP\n    interface eth0\n    virtual_router_id 51\n    priority {priority}\n    advert_int 0.1\n    virtual_ipaddress {{\n        10.0.0.100/32\n    }}\n}}\n{}",
        lab.keepalived_conf("rr", &reals)
    )
}

fn holds_vip(ns: &Netns) -> bool {
    ns.ip(&["-4", "addr", "show", "dev", "eth0"])
        .is_ok_and(|out| out.contains("10.0.0.100/32"))
}

/// The failover, with or without sync: what each connection saw.
fn failover(prefix: &str, sync: bool) -> Vec<Seen> {
    let mut lab = Topology::create(prefix, 3).expect("topology");
    lab.start_http_servers(Path::new(LAB))
        .expect("HTTP servers");
    let second = lab.add_director().expect("second director");
    let dir = lab.scratch_dir();
    let mut directors = Vec::new();
    for (index, (ns, priority)) in [(&lab.director, 150), (&second, 100)]
        .into_iter()
        .enumerate()
    {
        let config_path = dir.join(format!("director{index}.conf"));
        std::fs::write(&config_path, config(&lab, priority, sync)).expect("config");
        directors.push(
            Lbd::start(
                ns,
                &config_path,
                "eth0",
                &format!("{prefix}-{index}"),
                &dir.join(format!("lbd{index}.log")),
                &["--flow-table-size", "65536"],
            )
            .expect("lbd"),
        );
    }
    // The first director holds the VIP, the second does not (either may have been master
    // for a moment while the other started).
    let deadline = Instant::now() + Duration::from_secs(15);
    while !holds_vip(&lab.director) || holds_vip(&second) {
        assert!(
            Instant::now() < deadline,
            "the first director did not become master"
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    // The client's connections, asking every 100 ms until told to stop.
    let stop = Arc::new(AtomicBool::new(false));
    let stop_client = Arc::clone(&stop);
    let client = lab
        .client
        .spawn(move || {
            let mut connections = Vec::new();
            for _ in 0..CONNECTIONS {
                connections.push((
                    KeepAlive::connect(vip_http())?,
                    Seen::default(),
                    Instant::now(),
                ));
            }
            while !stop_client.load(Ordering::Relaxed) {
                for (connection, seen, last) in &mut connections {
                    if seen.broke.is_some() {
                        continue;
                    }
                    match connection.request() {
                        Ok(real) => {
                            seen.longest_gap = seen.longest_gap.max(last.elapsed());
                            *last = Instant::now();
                            seen.answers += 1;
                            if seen.reals.last() != Some(&real) {
                                seen.reals.push(real);
                            }
                        }
                        Err(e) => seen.broke = Some(format!("{e:#}")),
                    }
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            Ok(connections
                .into_iter()
                .map(|(_, seen, _)| seen)
                .collect::<Vec<_>>())
        })
        .expect("client");

    // Let the connections live and sync, then the master dies.
    std::thread::sleep(Duration::from_secs(2));
    directors[0].kill().expect("kill the master");
    lab.director
        .ip(&["link", "set", "eth0", "down"])
        .expect("link down");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !holds_vip(&second) {
        assert!(Instant::now() < deadline, "the backup did not take the VIP");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_secs(3));
    stop.store(true, Ordering::Relaxed);
    client
        .join()
        .expect("client thread")
        .expect("client connections")
}

#[test]
fn connections_survive_a_failover_with_sync_and_break_without() {
    if !require_root("connections_survive_a_failover_with_sync_and_break_without") {
        return;
    }
    let synced = failover("lbt-sfo", true);
    let mut reals = BTreeMap::new();
    for (index, seen) in synced.iter().enumerate() {
        assert_eq!(seen.broke, None, "connection {index} broke: {seen:?}");
        assert_eq!(
            seen.reals.len(),
            1,
            "connection {index} changed real: {seen:?}"
        );
        assert!(
            seen.longest_gap < Duration::from_secs(2),
            "connection {index} stalled: {seen:?}"
        );
        *reals.entry(seen.reals[0].clone()).or_insert(0) += 1;
    }
    assert!(reals.len() > 1, "rr spread the connections: {reals:?}");
    let longest = synced.iter().map(|seen| seen.longest_gap).max();
    let answers: usize = synced.iter().map(|seen| seen.answers).sum();
    eprintln!(
        "with sync: {CONNECTIONS} connections on {reals:?}, {answers} answers, none broken, longest gap {longest:?}"
    );

    let unsynced = failover("lbt-sfn", false);
    let broken = unsynced.iter().filter(|seen| seen.broke.is_some()).count();
    eprintln!("without sync: {broken} of {CONNECTIONS} connections broke");
    assert!(
        broken > 0,
        "without sync some connections must break: {unsynced:?}"
    );
}
