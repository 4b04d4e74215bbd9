//! DR end to end in network namespaces: lbd on the director, real TCP from the client to
//! the VIP, answered by the reals directly. Needs root; see `lb_tests::privilege`.

use std::{
    collections::BTreeMap,
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
};

use lb_common::Outcome;
use lb_tests::{
    http::{self, KeepAlive},
    lbd::Lbd,
    privilege::require_root,
    topology::{DIRECTOR_ADDR, Topology, VIP, vip_http},
};
use lb_userspace::dataplane::xdp::read_pinned_counters;

const LAB: &str = env!("CARGO_BIN_EXE_lab");

/// A topology with `reals` reals serving HTTP, and lbd running `reals` (name, weight) with
/// `scheduler`.
fn start(prefix: &str, reals: usize, scheduler: &str) -> (Topology, Lbd, PathBuf) {
    start_with(prefix, reals, scheduler, &[])
}

/// As `start`, with extra virtual_server keywords.
fn start_with(
    prefix: &str,
    reals: usize,
    scheduler: &str,
    keywords: &[&str],
) -> (Topology, Lbd, PathBuf) {
    let mut lab = Topology::create(prefix, reals).expect("topology");
    lab.start_http_servers(Path::new(LAB))
        .expect("HTTP servers");
    let names: Vec<String> = lab.reals.iter().map(|r| r.name.clone()).collect();
    let weighted: Vec<(&str, u32)> = names.iter().map(|n| (n.as_str(), 1)).collect();
    let dir = lab.scratch_dir();
    let config = dir.join("keepalived.conf");
    std::fs::write(
        &config,
        lab.keepalived_conf_with(scheduler, "DR", keywords, &weighted),
    )
    .expect("write config");
    let lbd = Lbd::start(
        &lab.director,
        &config,
        "eth0",
        prefix,
        &dir.join("lbd.log"),
        &["--flow-table-size", "65536"],
    )
    .expect("lbd");
    (lab, lbd, config)
}

/// Point lbd at reals `set` (name, weight) and wait for the reload.
fn reconfigure(lab: &Topology, lbd: &mut Lbd, config: &Path, set: &[(&str, u32)]) {
    std::fs::write(config, lab.keepalived_conf("rr", set)).expect("write config");
    lbd.reload().expect("reload");
}

/// `count` requests, each on a new connection from the client; answers per real.
fn spread(lab: &Topology, count: usize) -> BTreeMap<String, usize> {
    lab.spread(count).expect("requests through the VIP")
}

#[test]
fn rr_spreads_tcp_connections_over_all_reals() {
    if !require_root("rr_spreads_tcp_connections_over_all_reals") {
        return;
    }
    let (lab, lbd, _) = start("lbt-rr", 3, "rr");
    let answers = spread(&lab, 60);
    // Per-CPU round-robin cursors: with C CPUs no real is more than C away from an
    // even share.
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    for real in &lab.reals {
        let got = answers.get(&real.name).copied().unwrap_or(0);
        assert!(got.abs_diff(20) <= cpus, "{answers:?}");
    }
    let counters = read_pinned_counters(&lbd.pin_dir()).expect("counters");
    let service = &counters.services[0];
    assert_eq!(service.traffic.new_flows, 60, "{service:?}");
    for real in &service.reals {
        let name = &lab
            .reals
            .iter()
            .find(|r| IpAddr::from(r.addr) == real.addr)
            .unwrap()
            .name;
        assert_eq!(real.traffic.new_flows, answers[name] as u64, "{real:?}");
    }
}

#[test]
fn long_lived_connection_keeps_its_real_while_reals_change() {
    if !require_root("long_lived_connection_keeps_its_real_while_reals_change") {
        return;
    }
    let (mut lab, mut lbd, config) = start("lbt-ll", 3, "rr");
    let mut conn = lab
        .client
        .run(|| KeepAlive::connect(vip_http()))
        .expect("connect");
    let first = conn.request().expect("first request");
    let others: Vec<String> = lab
        .reals
        .iter()
        .map(|r| r.name.clone())
        .filter(|n| *n != first)
        .collect();

    // Add r4, remove one of the other reals.
    lab.add_real().expect("add r4");
    lab.start_http_servers(Path::new(LAB)).expect("start r4");
    reconfigure(
        &lab,
        &mut lbd,
        &config,
        &[(&first, 1), (&others[1], 1), ("r4", 1)],
    );
    for _ in 0..3 {
        assert_eq!(conn.request().expect("request after reload"), first);
    }
    let answers = spread(&lab, 12);
    assert!(answers.contains_key("r4"), "{answers:?}");
    assert!(
        !answers.contains_key(&others[0]),
        "removed real got new flows: {answers:?}"
    );

    // Remove the connection's own real: established flows go on (IPVS keeps connections
    // to a deleted destination), new ones never reach it.
    reconfigure(&lab, &mut lbd, &config, &[(&others[1], 1), ("r4", 1)]);
    for _ in 0..3 {
        assert_eq!(conn.request().expect("request after removal"), first);
    }
    let answers = spread(&lab, 12);
    assert!(
        !answers.contains_key(&first),
        "removed real got new flows: {answers:?}"
    );
    assert_eq!(answers.values().sum::<usize>(), 12);

    // A broken file is refused: the running configuration keeps serving, flows included.
    let serving = std::fs::read_to_string(&config).expect("read config");
    std::fs::write(&config, serving.replace("lb_algo rr", "lb_algo nope")).expect("write");
    lbd.reload_rejected().expect("broken reload refused");
    assert_eq!(conn.request().expect("request after refusal"), first);
    let after = spread(&lab, 12);
    assert_eq!(
        after.keys().collect::<Vec<_>>(),
        answers.keys().collect::<Vec<_>>(),
        "a refused reload changed the reals in service"
    );
}

#[test]
fn traffic_not_for_a_service_reaches_the_director() {
    if !require_root("traffic_not_for_a_service_reaches_the_director") {
        return;
    }
    let (mut lab, mut lbd, _) = start("lbt-nv", 1, "rr");
    lab.start_director_server(Path::new(LAB), 2222)
        .expect("director server");
    for target in [DIRECTOR_ADDR, VIP] {
        lab.client
            .exec(&["ping", "-c", "1", "-W", "2", &target.to_string()])
            .unwrap_or_else(|e| panic!("ping {target}: {e}"));
    }
    // SSH-like TCP to the director's own address, and to the VIP on a port that is no
    // service: both answered by the director itself.
    for target in [IpAddr::from(DIRECTOR_ADDR), IpAddr::from(VIP)] {
        let name = lab
            .client
            .run(move || http::get(SocketAddr::new(target, 2222)))
            .unwrap_or_else(|e| panic!("TCP to {target}:2222: {e}"));
        assert_eq!(name, "director");
    }
    let counters = read_pinned_counters(&lbd.pin_dir()).expect("counters");
    assert!(
        counters.outcome(Outcome::NotTcpUdp) >= 2,
        "{:?}",
        counters.outcomes
    );
    assert!(
        counters.outcome(Outcome::NotService) >= 2 * 4,
        "{:?}",
        counters.outcomes
    );
    assert_eq!(counters.services[0].traffic.packets, 0);

    // Attached while running; SIGTERM detaches explicitly (the kernel would also release
    // the link at exit, so the log is what tells) and exits cleanly.
    let link = lab.director.ip(&["link", "show", "eth0"]).expect("ip link");
    assert!(link.contains("prog/xdp"), "not attached: {link}");
    let status = lbd.stop().expect("stop lbd");
    assert!(status.success(), "{status}");
    lbd.wait_for("detached from eth0", 1, std::time::Duration::from_secs(5))
        .expect("detach logged");
    let link = lab.director.ip(&["link", "show", "eth0"]).expect("ip link");
    assert!(!link.contains("prog/xdp"), "still attached: {link}");
}

#[test]
fn restart_keeps_established_flows() {
    if !require_root("restart_keeps_established_flows") {
        return;
    }
    let (lab, mut lbd, _) = start("lbt-rs", 3, "rr");
    let mut connections = Vec::new();
    for _ in 0..3 {
        let mut conn = lab
            .client
            .run(|| KeepAlive::connect(vip_http()))
            .expect("connect");
        let real = conn.request().expect("first request");
        connections.push((conn, real));
    }
    lbd.restart().expect("restart lbd");
    // Reverse order: rescheduling from scratch would not reproduce the old mapping.
    for (conn, real) in connections.iter_mut().rev() {
        assert_eq!(&conn.request().expect("request after restart"), real);
    }
    assert_eq!(spread(&lab, 6).values().sum::<usize>(), 6);
}

#[test]
fn lc_steers_new_connections_away_from_a_busy_real() {
    if !require_root("lc_steers_new_connections_away_from_a_busy_real") {
        return;
    }
    let (lab, lbd, _) = start("lbt-lc", 2, "lc");
    // One connection held open: its real has an active connection (ESTABLISHED).
    let mut conn = lab
        .client
        .run(|| KeepAlive::connect(vip_http()))
        .expect("connect");
    let busy = conn.request().expect("first request");
    // Short connections end (FIN: inactive, overhead 1 each) and still weigh less than
    // one active connection (256): every one goes to the other real. A short pause after
    // each lets the director see its FIN before the next SYN (they may be handled on
    // different CPUs; a still-active previous connection would tie the two reals).
    let answers = lab
        .client
        .run(|| {
            let mut answers = BTreeMap::new();
            for _ in 0..10 {
                *answers.entry(http::get(vip_http())?).or_insert(0) += 1;
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            Ok(answers)
        })
        .expect("requests through the VIP");
    assert!(
        !answers.contains_key(&busy),
        "lc sent new connections to {busy}: {answers:?}"
    );
    assert_eq!(
        conn.request().expect("request on the held connection"),
        busy
    );

    let counters = read_pinned_counters(&lbd.pin_dir()).expect("counters");
    let reals = &counters.services[0].reals;
    let conns: Vec<(u32, u32)> = reals
        .iter()
        .map(|r| (r.active_conns, r.inactive_conns))
        .collect();
    let busy_addr = lab
        .reals
        .iter()
        .find(|r| r.name == busy)
        .map(|r| IpAddr::from(r.addr))
        .expect("busy real");
    // The held connection is active; the ten short ones ended (FIN_WAIT, or CLOSE after
    // a reset, which a sweep may already have removed): inactive, at most ten.
    for real in reals {
        let counts = (real.active_conns, real.inactive_conns);
        if real.addr == busy_addr {
            assert_eq!(counts, (1, 0), "{}: {conns:?}", real.addr);
        } else {
            assert!(
                counts.0 == 0 && (1..=10).contains(&counts.1),
                "{}: {conns:?}",
                real.addr
            );
        }
    }
}

#[test]
fn persistence_keeps_a_client_on_one_real() {
    if !require_root("persistence_keeps_a_client_on_one_real") {
        return;
    }
    let (lab, _lbd, _) = start_with("lbt-ps", 3, "rr", &["persistence_timeout 60"]);
    let answers = spread(&lab, 12);
    assert_eq!(answers.len(), 1, "one client, one real: {answers:?}");
    assert_eq!(answers.values().sum::<usize>(), 12);
}

/// The MAC address the data plane sends real `addr` (of any service) to.
fn programmed_mac(lbd: &Lbd, addr: IpAddr) -> Option<[u8; 6]> {
    use aya::maps::{Array, Map, MapData};
    use lb_common::{RealInfo, map_names};
    let map = MapData::from_pin(lbd.pin_dir().join(map_names::REALS))
        .and_then(Map::from_map_data)
        .expect("pinned LB_REALS");
    let reals: Array<&MapData, RealInfo> = Array::try_from(&map).expect("array");
    (0..lb_common::MAX_REALS).find_map(|id| {
        let real = reals.get(&id, 0).ok()?;
        (lb_userspace::dataplane::xdp::addr_from(real.addr, real.family) == Some(addr))
            .then_some(real.mac)
    })
}

#[test]
fn a_changed_neighbour_entry_reaches_the_data_plane_at_once() {
    if !require_root("a_changed_neighbour_entry_reaches_the_data_plane_at_once") {
        return;
    }
    let mut lab = Topology::create("lbtnei", 1).expect("topology");
    lab.start_http_servers(Path::new(LAB))
        .expect("HTTP servers");
    let dir = lab.scratch_dir();
    let config = dir.join("keepalived.conf");
    std::fs::write(&config, lab.keepalived_conf("rr", &[("r1", 1)])).expect("write config");
    // No periodic refresh within the test: only the neighbour event can bring the change.
    let lbd = Lbd::start(
        &lab.director,
        &config,
        "eth0",
        "lbtnei",
        &dir.join("lbd.log"),
        &["--refresh-interval", "3600"],
    )
    .expect("lbd");
    let real: IpAddr = lab.reals[0].addr.into();
    let before = programmed_mac(&lbd, real).expect("the real is programmed");
    let moved = [0x02, 0x00, 0x00, 0x00, 0x99, 0x99];
    assert_ne!(before, moved);
    lab.director
        .ip(&[
            "neigh",
            "replace",
            &real.to_string(),
            "lladdr",
            "02:00:00:00:99:99",
            "dev",
            "eth0",
            "nud",
            "permanent",
        ])
        .expect("ip neigh replace");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while programmed_mac(&lbd, real) != Some(moved) {
        assert!(
            std::time::Instant::now() < deadline,
            "the data plane still sends {real} to {:02x?} 5 s after its neighbour entry changed",
            programmed_mac(&lbd, real)
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

#[test]
fn lbd_runs_from_a_keepalived_command_line() {
    if !require_root("lbd_runs_from_a_keepalived_command_line") {
        return;
    }
    let mut lab = Topology::create("lbtka", 2).expect("topology");
    lab.start_http_servers(Path::new(LAB))
        .expect("HTTP servers");
    let dir = lab.scratch_dir();
    let config = dir.join("keepalived.conf");
    std::fs::write(&config, lab.keepalived_conf("rr", &[("r1", 1), ("r2", 1)]))
        .expect("write config");
    let pid_files: Vec<PathBuf> = ["keepalived.pid", "vrrp.pid", "checkers.pid"]
        .iter()
        .map(|f| dir.join(f))
        .collect();
    let [main, vrrp, checkers] = [0, 1, 2].map(|i| pid_files[i].display().to_string());
    // As a keepalived unit starts it: no --interface.
    let mut lbd = Lbd::start_like_keepalived(
        &lab.director,
        &config,
        "lbtka",
        &dir.join("lbd.log"),
        &["-n", "-l", "-D", "-p", &main, "-r", &vrrp, "-c", &checkers],
    )
    .expect("lbd");
    assert!(
        lbd.log().iter().any(|l| l.contains("attached to eth0")),
        "{:?}",
        lbd.log()
    );
    let answers = spread(&lab, 20);
    assert_eq!(answers.len(), 2, "{answers:?}");
    let pid = lbd.pid().to_string();
    for file in &pid_files {
        let text = std::fs::read_to_string(file).expect("pid file");
        assert_eq!(text.trim(), pid, "{}", file.display());
    }
    lbd.stop().expect("stop");
    for file in &pid_files {
        assert!(!file.exists(), "{} left behind", file.display());
    }
}
