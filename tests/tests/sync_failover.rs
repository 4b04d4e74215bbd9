//! A director failover and failback with connection sync, in network namespaces: two
//! lbd directors (XDP, VRRP with `advert_int 0.1`, `lvs_sync_daemon`), three reals (DR,
//! or NAT with the reals' gateway moving with the VIP), and a client with 20 long-lived
//! TCP connections through the VIP, each asking every 100 ms.
//!
//! - The failover: the master dies as a crashed host would (lbd SIGKILLed, its link
//!   down); every connection goes on through the backup on the same real, none breaks,
//!   none stalls for long. The same without sync breaks the connections: the test shows
//!   that it would catch the loss.
//! - The failback: while the first director is away the client opens 20 more connections
//!   on the backup. The first director comes back as a rebooted host would (no VIP, no
//!   maps), with the higher priority: it asks the backup for all its connections, takes
//!   the VIP only once they are in, and none of the 40 breaks. Without that wait
//!   (`--resync-wait 0`) connections break.
//!
//! Needs root; see `lb_tests::privilege`.

use std::{
    collections::BTreeMap,
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use lb_tests::{
    http::KeepAlive,
    lbd::Lbd,
    privilege::require_root,
    topology::{NAT_GATEWAY, RealSetup, Topology, VIP, holds_vip, vip_http},
    wait::wait_until,
};

const LAB: &str = env!("CARGO_BIN_EXE_lab");
/// Connections opened before the failover, and as many again on the backup.
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

/// One run: the lab's reals, whether to sync, and whether the first director comes back
/// (with these extra lbd arguments).
struct Scenario {
    prefix: &'static str,
    setup: RealSetup,
    sync: bool,
    failback: Option<&'static [&'static str]>,
}

/// What a run saw: each connection (those opened before the failover first), and the
/// returning director's log after it came back.
struct Outcome {
    seen: Vec<Seen>,
    returned_log: Vec<String>,
}

fn config(lab: &Topology, setup: RealSetup, priority: u8, sync: bool) -> String {
    let reals: Vec<(&str, u32)> = lab.reals.iter().map(|r| (r.name.as_str(), 1)).collect();
    let sync = if sync {
        "global_defs {\n    lvs_sync_daemon eth0 VI_1\n}\n"
    } else {
        ""
    };
    let (kind, gateway) = match setup {
        RealSetup::Nat => ("NAT", format!("        {NAT_GATEWAY}/24\n")),
        _ => ("DR", String::new()),
    };
    format!(
        "{sync}vrrp_instance VI_1 {{\n    state BACKUP\n    interface eth0\n    virtual_router_id 51\n    priority {priority}\n    version 3\n    advert_int 0.1\n    virtual_ipaddress {{\n        {VIP}/32\n{gateway}    }}\n}}\n{}",
        lab.keepalived_conf_with("rr", kind, &[], &reals)
    )
}

fn run(scenario: &Scenario) -> Outcome {
    let prefix = scenario.prefix;
    let mut lab = Topology::create_with(prefix, 3, scenario.setup).expect("topology");
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
        std::fs::write(
            &config_path,
            config(&lab, scenario.setup, priority, scenario.sync),
        )
        .expect("config");
        let mut args = vec!["--flow-table-size", "65536"];
        if index == 0 {
            args.extend(scenario.failback.unwrap_or_default());
        }
        directors.push(
            Lbd::start(
                ns,
                &config_path,
                "eth0",
                &format!("{prefix}-{index}"),
                &dir.join(format!("lbd{index}.log")),
                &args,
            )
            .expect("lbd"),
        );
    }
    // The first director holds the VIP, the second does not (either may have been master
    // for a moment while the other started).
    wait_until(
        "the first director becomes master",
        Duration::from_secs(15),
        || holds_vip(&lab.director) && !holds_vip(&second),
    );

    // The client's connections, asking every 100 ms until told to stop; it opens more
    // when `wanted` grows, and counts them in `opened`.
    let stop = Arc::new(AtomicBool::new(false));
    let wanted = Arc::new(AtomicUsize::new(CONNECTIONS));
    let opened = Arc::new(AtomicUsize::new(0));
    let (stop_client, wanted_client, opened_client) =
        (Arc::clone(&stop), Arc::clone(&wanted), Arc::clone(&opened));
    let client = lab
        .client
        .spawn(move || {
            let mut connections = Vec::new();
            while !stop_client.load(Ordering::Relaxed) {
                while connections.len() < wanted_client.load(Ordering::Relaxed) {
                    connections.push((
                        KeepAlive::connect(vip_http())?,
                        Seen::default(),
                        Instant::now(),
                    ));
                    opened_client.store(connections.len(), Ordering::Relaxed);
                }
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
    wait_until("the client connects", Duration::from_secs(10), || {
        opened.load(Ordering::Relaxed) == CONNECTIONS
    });

    // Let the connections live and sync, then the master dies.
    std::thread::sleep(Duration::from_secs(2));
    directors[0].kill().expect("kill the master");
    lab.director
        .ip(&["link", "set", "eth0", "down"])
        .expect("link down");
    wait_until("the backup takes the VIP", Duration::from_secs(10), || {
        holds_vip(&second)
    });
    // Where the returning director's log starts.
    let mut returned_from = None;
    if scenario.failback.is_some() {
        // The first director reboots: the addresses VRRP gave it and its maps are gone.
        let mut vrrp_addresses = vec![format!("{VIP}/32")];
        if scenario.setup == RealSetup::Nat {
            vrrp_addresses.push(format!("{NAT_GATEWAY}/24"));
        }
        for address in &vrrp_addresses {
            lab.director
                .ip(&["addr", "del", address, "dev", "eth0"])
                .expect("remove a VRRP address");
        }
        std::fs::remove_dir_all(directors[0].pin_dir()).expect("remove the pinned maps");
        // Meanwhile the client opens more connections, on the backup alone.
        wanted.store(2 * CONNECTIONS, Ordering::Relaxed);
        wait_until("the client connects again", Duration::from_secs(10), || {
            opened.load(Ordering::Relaxed) == 2 * CONNECTIONS
        });
        std::thread::sleep(Duration::from_secs(2));
        let before = directors[0].log().len();
        lab.director
            .ip(&["link", "set", "eth0", "up"])
            .expect("link up");
        directors[0].start_again().expect("lbd comes back");
        wait_until(
            "the first director takes the VIP back",
            Duration::from_secs(40),
            || holds_vip(&lab.director) && !holds_vip(&second),
        );
        returned_from = Some(before);
    }
    std::thread::sleep(Duration::from_secs(3));
    let returned_log = returned_from
        .map(|before| directors[0].log().split_off(before))
        .unwrap_or_default();
    stop.store(true, Ordering::Relaxed);
    let seen = client
        .join()
        .expect("client thread")
        .expect("client connections");
    Outcome { seen, returned_log }
}

/// Every connection went on, on its first real, without a long stall; and rr spread them.
fn assert_none_broke(what: &str, seen: &[Seen]) {
    let broken: Vec<String> = seen
        .iter()
        .enumerate()
        .filter_map(|(index, seen)| {
            let error = seen.broke.as_ref()?;
            Some(format!("{index} after {} answers: {error}", seen.answers))
        })
        .collect();
    assert!(broken.is_empty(), "{what}: broken: {broken:#?}");
    let mut reals = BTreeMap::new();
    for (index, seen) in seen.iter().enumerate() {
        assert_eq!(
            seen.broke, None,
            "{what}: connection {index} broke: {seen:?}"
        );
        assert_eq!(
            seen.reals.len(),
            1,
            "{what}: connection {index} changed real: {seen:?}"
        );
        assert!(
            seen.longest_gap < Duration::from_secs(2),
            "{what}: connection {index} stalled: {seen:?}"
        );
        *reals.entry(seen.reals[0].clone()).or_insert(0) += 1;
    }
    assert!(
        reals.len() > 1,
        "{what}: rr spread the connections: {reals:?}"
    );
    let longest = seen.iter().map(|seen| seen.longest_gap).max();
    let answers: usize = seen.iter().map(|seen| seen.answers).sum();
    eprintln!(
        "{what}: {} connections on {reals:?}, {answers} answers, none broken, longest gap {longest:?}",
        seen.len()
    );
}

/// The returning director took the VIP only after its resync brought every connection.
fn assert_preempted_after_the_resync(what: &str, log: &[String]) {
    let position = |needle: &str| log.iter().position(|line| line.contains(needle));
    let resync = position("resync complete, the master sent")
        .unwrap_or_else(|| panic!("{what}: no resync; log:\n{}", log.join("\n")));
    let master = position("VRRP: VI_1 is MASTER")
        .unwrap_or_else(|| panic!("{what}: never master; log:\n{}", log.join("\n")));
    assert!(
        resync < master,
        "{what}: master before the resync; log:\n{}",
        log.join("\n")
    );
    let sent: usize = log[resync]
        .split("the master sent ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .expect("a count");
    assert!(
        sent >= 2 * CONNECTIONS,
        "{what}: the master sent {sent} connections"
    );
    eprintln!("{what}: {}", log[resync]);
}

#[test]
fn connections_survive_a_failover_with_sync_and_break_without() {
    if !require_root("connections_survive_a_failover_with_sync_and_break_without") {
        return;
    }
    let synced = run(&Scenario {
        prefix: "lbt-sfo",
        setup: RealSetup::Direct,
        sync: true,
        failback: Some(&[]),
    });
    assert_none_broke("DR, failover and failback", &synced.seen);
    assert_preempted_after_the_resync("DR", &synced.returned_log);

    let unsynced = run(&Scenario {
        prefix: "lbt-sfn",
        setup: RealSetup::Direct,
        sync: false,
        failback: None,
    });
    let broken = unsynced
        .seen
        .iter()
        .filter(|seen| seen.broke.is_some())
        .count();
    eprintln!("without sync: {broken} of {CONNECTIONS} connections broke");
    assert!(
        broken > 0,
        "without sync some connections must break: {:?}",
        unsynced.seen
    );
}

#[test]
fn a_failback_that_does_not_wait_for_the_resync_breaks_the_backups_connections() {
    if !require_root("a_failback_that_does_not_wait_for_the_resync_breaks_the_backups_connections")
    {
        return;
    }
    let hasty = run(&Scenario {
        prefix: "lbt-sfh",
        setup: RealSetup::Direct,
        sync: true,
        failback: Some(&["--resync-wait", "0"]),
    });
    // The returning director has none of the connections (it rebooted), and takes the
    // VIP before the backup sent them.
    let broken = hasty
        .seen
        .iter()
        .filter(|seen| seen.broke.is_some())
        .count();
    eprintln!(
        "without the resync wait: {broken} of {} connections broke",
        hasty.seen.len()
    );
    assert!(broken > 0, "{:?}", hasty.seen);
    assert!(
        !hasty
            .returned_log
            .iter()
            .any(|line| line.contains("resync complete")),
        "no resync was asked for"
    );
}

#[test]
fn nat_connections_survive_a_failover_and_the_failback_with_sync() {
    if !require_root("nat_connections_survive_a_failover_and_the_failback_with_sync") {
        return;
    }
    let synced = run(&Scenario {
        prefix: "lbt-sfa",
        setup: RealSetup::Nat,
        sync: true,
        failback: Some(&[]),
    });
    assert_none_broke("NAT, failover and failback", &synced.seen);
    assert_preempted_after_the_resync("NAT", &synced.returned_log);
}
