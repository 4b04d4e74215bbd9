//! The data plane outlives lbd: a crash (SIGKILL) or a restart of lbd never stops
//! forwarding. lbd attaches through a BPF link pinned under its pin directory, so the
//! program stays attached without lbd; a new lbd adopts the link and swaps its own
//! program into it atomically. A graceful stop detaches (it stops balancing, as
//! `systemctl stop` should), unless lbd runs with keepalived's `--dont-release-ipvs`
//! (`-I`), which leaves the data plane running for an upgrade.
//!
//! 12 long-lived HTTP connections go through one director (DR, rr over 3 reals); each
//! must keep being answered by its real while lbd is dead and after it is back.

use std::time::Duration;

use lb_tests::{
    http::KeepAlive,
    lbd::Lbd,
    netns::Netns,
    privilege::require_root,
    topology::{Topology, vip_http},
};

const LAB: &str = env!("CARGO_BIN_EXE_lab");
const CONNECTIONS: usize = 12;

fn start(prefix: &str, extra: &[&str]) -> (Topology, Lbd) {
    let mut lab = Topology::create(prefix, 3).expect("topology");
    lab.start_http_servers(std::path::Path::new(LAB))
        .expect("HTTP servers");
    let dir = lab.scratch_dir();
    let config = dir.join("keepalived.conf");
    std::fs::write(
        &config,
        lab.keepalived_conf("rr", &[("r1", 1), ("r2", 1), ("r3", 1)]),
    )
    .expect("config");
    let lbd = Lbd::start(
        &lab.director,
        &config,
        "eth0",
        prefix,
        &dir.join("lbd.log"),
        extra,
    )
    .expect("lbd");
    (lab, lbd)
}

/// `CONNECTIONS` keep-alive connections through the VIP, each with the real that answered.
fn connect(lab: &Topology) -> Vec<(KeepAlive, String)> {
    (0..CONNECTIONS)
        .map(|_| {
            let mut conn = lab
                .client
                .run(|| KeepAlive::connect(vip_http()))
                .expect("connect");
            let real = conn.request().expect("first request");
            (conn, real)
        })
        .collect()
}

/// How many connections are broken or answered by another real.
fn broken(connections: &mut [(KeepAlive, String)]) -> usize {
    let mut broken = 0;
    for (conn, real) in connections.iter_mut() {
        if conn.request().ok().as_ref() != Some(real) {
            broken += 1;
        }
    }
    broken
}

/// The id of the XDP program attached to `interface`, if any.
fn attached_program(ns: &Netns, interface: &str) -> Option<u64> {
    let text = ns
        .ip(&["-j", "-d", "link", "show", "dev", interface])
        .ok()?;
    let json: serde_json::Value = serde_json::from_str(&text).ok()?;
    let xdp = &json[0]["xdp"];
    xdp["prog"]["id"]
        .as_u64()
        .or_else(|| xdp["attached"][0]["prog"]["id"].as_u64())
}

#[test]
fn connections_survive_a_crash_and_a_restart_of_lbd() {
    if !require_root("connections_survive_a_crash_and_a_restart_of_lbd") {
        return;
    }
    let (lab, mut lbd) = start("lbt-crash", &[]);
    let mut connections = connect(&lab);
    let before = attached_program(&lab.director, "eth0").expect("attached");

    lbd.kill().expect("SIGKILL");
    assert_eq!(
        attached_program(&lab.director, "eth0"),
        Some(before),
        "the program left with lbd"
    );
    assert_eq!(broken(&mut connections), 0, "while lbd is dead");
    std::thread::sleep(Duration::from_millis(1500));
    lbd.start_again().expect("lbd again");
    lbd.wait_for("adopted", 1, Duration::from_secs(5))
        .expect("the running program adopted");
    assert_eq!(broken(&mut connections), 0, "after lbd came back");
    // The new lbd's own program now runs, swapped in without a gap.
    let after = attached_program(&lab.director, "eth0").expect("attached");
    assert_ne!(after, before, "the new lbd's program was not swapped in");

    // A graceful stop stops balancing.
    assert!(lbd.stop().expect("stop").success());
    assert_eq!(attached_program(&lab.director, "eth0"), None);
}

#[test]
fn an_upgrade_with_dont_release_keeps_every_connection() {
    if !require_root("an_upgrade_with_dont_release_keeps_every_connection") {
        return;
    }
    let (lab, mut lbd) = start("lbt-upgr", &["--dont-release-ipvs"]);
    let mut connections = connect(&lab);
    let before = attached_program(&lab.director, "eth0").expect("attached");
    // The old version stops, leaving the data plane running; the new one starts.
    assert!(lbd.stop().expect("stop").success());
    assert_eq!(attached_program(&lab.director, "eth0"), Some(before));
    assert_eq!(broken(&mut connections), 0, "between the two versions");
    lbd.start_again().expect("new version");
    assert_eq!(broken(&mut connections), 0, "after the upgrade");
    let after = attached_program(&lab.director, "eth0").expect("attached");
    assert_ne!(after, before);
    assert!(
        lab.spread(9)
            .expect("new connections")
            .values()
            .sum::<usize>()
            == 9,
        "new connections after the upgrade"
    );
}
