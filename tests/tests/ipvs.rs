//! lbd on the kernel's IPVS, end to end in the DR lab: real TCP through DR, TUN and NAT
//! services that lbd programs from a keepalived.conf, checked with ipvsadm (the reference)
//! and lbctl (and the metrics, and `lbctl -Z`); a TCP_CHECK failure removes the dead real; `--dataplane auto` falls back to
//! IPVS when XDP cannot attach, and takes it at once for connection thresholds and
//! firewall-mark services (which only IPVS has: the marks come from tc here); a graceful
//! stop removes lbd's services. Needs IPVS, which
//! the project's machines lack: `cargo xtask test` runs this in a VM with Debian's kernel.

use std::{path::Path, time::Duration};

use lb_tests::{
    lbd::{Lbd, lbctl_ok_in},
    privilege::require_ipvs,
    topology::{HTTP_PORT, RealSetup, Topology, VIP},
};

const LAB: &str = env!("CARGO_BIN_EXE_lab");
/// lbd's metrics endpoint, in the director's namespace.
const METRICS: &str = "127.0.0.1:9418";

/// A TCP service on the VIP's HTTP port over the lab's reals, with `lines` (lb_kind, ...)
/// and a TCP_CHECK per real when `checked`.
fn service(lab: &Topology, lines: &str, checked: bool) -> String {
    let check = if checked {
        "        TCP_CHECK {\n            connect_timeout 1\n            delay_loop 1\n        }\n"
    } else {
        ""
    };
    let reals: String = lab
        .reals
        .iter()
        .map(|r| {
            format!(
                "    real_server {} {HTTP_PORT} {{\n        weight 1\n{check}    }}\n",
                r.addr
            )
        })
        .collect();
    format!(
        "virtual_server {VIP} {HTTP_PORT} {{\n    lb_algo rr\n    protocol TCP\n{lines}{reals}}}\n"
    )
}

fn start(lab: &Topology, config: &str, args: &[&str]) -> Lbd {
    let dir = lab.scratch_dir();
    let path = dir.join("keepalived.conf");
    std::fs::write(&path, config).expect("config");
    Lbd::start_like_keepalived(
        &lab.director,
        &path,
        lab.prefix(),
        &dir.join("lbd.log"),
        args,
    )
    .expect("lbd")
}

fn ipvsadm(lab: &Topology, args: &[&str]) -> String {
    let mut command = vec!["ipvsadm"];
    command.extend_from_slice(args);
    let out = lab.director.exec(&command).expect("ipvsadm");
    eprintln!("$ ipvsadm {}\n{out}", args.join(" "));
    out
}

/// lbctl in the director's namespace (IPVS is per namespace); it must succeed.
fn lbctl_ok(lab: &Topology, args: &[&str]) -> String {
    lbctl_ok_in(Some(&lab.director), lab.prefix(), args)
}

/// Wait (bounded) until ipvsadm's listing satisfies `done`.
fn wait_listing(lab: &Topology, what: &str, done: impl Fn(&str) -> bool) {
    for _ in 0..100 {
        if done(&lab.director.exec(&["ipvsadm", "-Ln"]).expect("ipvsadm")) {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("{what}: not after 10 s\n{}", ipvsadm(lab, &["-Ln"]));
}

/// Every real answered some of `count` requests.
fn spread_over_all(lab: &Topology, count: usize) {
    let answers = lab.spread(count).expect("requests through the VIP");
    eprintln!("answers: {answers:?}");
    for real in &lab.reals {
        assert!(
            answers.get(&real.name).is_some_and(|n| *n > 0),
            "{answers:?}"
        );
    }
}

#[test]
fn dr_service_with_checkers_and_auto_fallback() {
    if !require_ipvs("dr_service_with_checkers_and_auto_fallback") {
        return;
    }
    let mut lab = Topology::create("lbt-ipvs-dr", 2).expect("lab");
    lab.start_http_servers(Path::new(LAB)).expect("servers");
    let config = format!(
        "global_defs {{\n    lvs_timeouts tcp 7200 tcpfin 30 udp 60\n}}\n{}",
        service(&lab, "    lb_kind DR\n", true)
    );
    // `lo` has no native XDP: auto falls back to IPVS and says why.
    let mut lbd = start(
        &lab,
        &config,
        &[
            "--dataplane",
            "auto",
            "--xdp-mode",
            "native",
            "--interface",
            "lo",
            "--metrics-address",
            METRICS,
        ],
    );
    lbd.wait_for(
        "falling back to the kernel's IPVS",
        1,
        Duration::from_secs(1),
    )
    .expect("fallback logged");
    let listing = ipvsadm(&lab, &["-Ln"]);
    assert!(listing.contains("TCP  10.0.0.100:80 rr"), "{listing}");
    for real in &lab.reals {
        assert!(
            listing.contains(&format!("-> {}:80", real.addr)) && listing.contains("Route"),
            "{listing}"
        );
    }
    let timeouts = ipvsadm(&lab, &["-L", "--timeout"]);
    assert!(timeouts.contains("7200 30 60"), "{timeouts}");

    spread_over_all(&lab, 20);
    // lbctl reads IPVS: the header names it and why, the counters are IPVS's (which the
    // kernel's estimator folds in every 2 s, so they may lag).
    let mut conns = 0;
    for _ in 0..20 {
        let listing = lbctl_ok(&lab, &["-Ln", "--stats", "--exact"]);
        assert!(listing.contains("IPVS"), "{listing}");
        assert!(listing.contains("XDP fell back"), "{listing}");
        let service_line = listing
            .lines()
            .find(|l| l.starts_with("TCP  10.0.0.100:80"))
            .expect("service line");
        conns = service_line
            .split_whitespace()
            .nth(2)
            .and_then(|n| n.parse().ok())
            .expect("Conns");
        if conns == 20 {
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    assert_eq!(conns, 20, "Conns of the service");
    // The metrics read IPVS too.
    let metrics = lab
        .director
        .exec(&["curl", "-sf", &format!("http://{METRICS}/metrics")])
        .expect("metrics");
    assert!(
        metrics.contains(
            "lbd_service_connections_total{protocol=\"TCP\",vip=\"10.0.0.100\",port=\"80\"} 20\n"
        ),
        "{metrics}"
    );
    // -Z zeroes IPVS's counters.
    lbctl_ok(&lab, &["-Z"]);
    let listing = lbctl_ok(&lab, &["-Ln", "--stats", "--exact"]);
    let service_line = listing
        .lines()
        .find(|l| l.starts_with("TCP  10.0.0.100:80"))
        .expect("service line");
    assert_eq!(
        service_line.split_whitespace().nth(2),
        Some("0"),
        "{service_line}"
    );
    let connections = lbctl_ok(&lab, &["-Lnc"]);
    assert!(connections.contains("10.0.0.100:80"), "{connections}");

    // A real stops answering: its TCP_CHECK fails and lbd removes it from IPVS.
    let dead = lab.reals[0].name.clone();
    let dead_addr = lab.reals[0].addr;
    lab.stop_http_server(&dead);
    wait_listing(&lab, "the dead real removed", |l| {
        !l.contains(&format!("-> {dead_addr}:80"))
    });
    let answers = lab.spread(6).expect("requests");
    assert_eq!(answers.get(&lab.reals[1].name), Some(&6), "{answers:?}");

    // A graceful stop removes the services lbd added.
    lbd.stop().expect("stop");
    let listing = ipvsadm(&lab, &["-Ln"]);
    assert!(!listing.contains("10.0.0.100:80"), "{listing}");
}

#[test]
fn tun_service_through_ipip() {
    if !require_ipvs("tun_service_through_ipip") {
        return;
    }
    let mut lab = Topology::create("lbt-ipvs-tun", 2).expect("lab");
    // The reals take the tunnel on the kernel's own ipip device (the VIP is on lo).
    for real in &lab.reals {
        real.take_tunnels_on(&["tunl0"]).expect("tunl0");
    }
    lab.start_http_servers(Path::new(LAB)).expect("servers");
    let config = service(&lab, "    lb_kind TUN\n    persistence_timeout 50\n", false);
    let mut lbd = start(&lab, &config, &["--dataplane", "ipvs"]);
    let listing = ipvsadm(&lab, &["-Ln"]);
    assert!(listing.contains("persistent 50"), "{listing}");
    assert!(listing.contains("Tunnel"), "{listing}");
    // Persistence: one client, one real, through the tunnel.
    let answers = lab.spread(5).expect("requests through the tunnel");
    assert_eq!(answers.len(), 1, "{answers:?}");
    assert_eq!(answers.values().sum::<usize>(), 5, "{answers:?}");
    lbd.stop().expect("stop");
}

#[test]
fn each_real_keeps_its_own_forwarding_method() {
    if !require_ipvs("each_real_keeps_its_own_forwarding_method") {
        return;
    }
    let mut lab = Topology::create("lbt-ipvs-mix", 2).expect("lab");
    // r2 takes the tunnel on the kernel's own ipip device; r1 gets plain DR frames.
    lab.reals[1].take_tunnels_on(&["tunl0"]).expect("tunl0");
    lab.start_http_servers(Path::new(LAB)).expect("servers");
    let config = format!(
        "virtual_server {VIP} {HTTP_PORT} {{\n    lb_algo rr\n    lb_kind DR\n    protocol TCP\n    real_server {} {HTTP_PORT} {{\n    }}\n    real_server {} {HTTP_PORT} {{\n        lvs_method TUN\n    }}\n}}\n",
        lab.reals[0].addr, lab.reals[1].addr
    );
    let mut lbd = start(&lab, &config, &["--dataplane", "ipvs"]);
    let listing = ipvsadm(&lab, &["-Ln"]);
    for (real, method) in [(&lab.reals[0], "Route"), (&lab.reals[1], "Tunnel")] {
        let line = listing
            .lines()
            .find(|line| line.contains(&format!("{}:{HTTP_PORT}", real.addr)))
            .unwrap_or_else(|| panic!("{} listed:\n{listing}", real.addr));
        assert!(line.contains(method), "{}: {method}: {line}", real.name);
    }
    spread_over_all(&lab, 10);
    lbd.stop().expect("stop");
}

#[test]
fn nat_service_and_runtime_changes() {
    if !require_ipvs("nat_service_and_runtime_changes") {
        return;
    }
    let mut lab = Topology::create_with("lbt-ipvs-nat", 2, RealSetup::Nat).expect("lab");
    lab.start_http_servers(Path::new(LAB)).expect("servers");
    // Connection limits, which only IPVS has: auto takes IPVS for them at once.
    let config = service(&lab, "    lb_kind NAT\n", false).replace(
        "        weight 1\n",
        "        weight 1\n        uthreshold 100\n        lthreshold 10\n",
    );
    let mut lbd = start(&lab, &config, &["--dataplane", "auto"]);
    lbd.wait_for("only the kernel's IPVS has", 1, Duration::from_secs(1))
        .expect("IPVS chosen for the thresholds");
    let listing = ipvsadm(&lab, &["-Ln"]);
    assert!(listing.contains("Masq"), "{listing}");
    let thresholds = ipvsadm(&lab, &["-Ln", "--thresholds"]);
    for real in &lab.reals {
        let line = thresholds
            .lines()
            .find(|l| l.contains(&format!("-> {}:80", real.addr)))
            .unwrap_or_else(|| panic!("{thresholds}"));
        // -> RemoteAddress:Port Uthreshold Lthreshold ActiveConn InActConn
        let columns: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(columns[2..4], ["100", "10"], "{line}");
    }
    // lbctl --thresholds prints what ipvsadm does, from its column titles on (lbctl's
    // header names the data plane instead of IPVS's version).
    let from_titles = |listing: &str| -> Vec<String> {
        listing
            .lines()
            .skip_while(|l| !l.starts_with("Prot"))
            .map(str::to_owned)
            .collect()
    };
    let ours = lbctl_ok(&lab, &["-Ln", "--thresholds"]);
    assert_eq!(from_titles(&ours), from_titles(&thresholds), "{ours}");
    spread_over_all(&lab, 10);
    // A weight changed with lbctl reaches IPVS.
    let real = lab.reals[0].addr;
    lbctl_ok(
        &lab,
        &[
            "-e",
            "-t",
            &format!("{VIP}:{HTTP_PORT}"),
            "-r",
            &format!("{real}:{HTTP_PORT}"),
            "-w",
            "0",
        ],
    );
    wait_listing(&lab, "weight 0", |l| {
        l.lines()
            .any(|line| line.contains(&format!("-> {real}:80")) && line.contains("Masq    0"))
    });
    let answers = lab.spread(4).expect("requests");
    assert_eq!(answers.get(&lab.reals[1].name), Some(&4), "{answers:?}");
    lbd.stop().expect("stop");
}

#[test]
fn fwmark_service_takes_the_marked_packets() {
    if !require_ipvs("fwmark_service_takes_the_marked_packets") {
        return;
    }
    let mut lab = Topology::create("lbt-ipvs-fwm", 2).expect("lab");
    lab.start_http_servers(Path::new(LAB)).expect("servers");
    // The director marks the VIP's HTTP packets 7 as they come in (tc's skbedit, as an
    // operator's `iptables -t mangle ... -j MARK --set-mark 7` would).
    let tc = |args: &[&str]| {
        let mut command = vec!["tc"];
        command.extend_from_slice(args);
        lab.director.exec(&command).expect("tc");
    };
    tc(&["qdisc", "add", "dev", "eth0", "clsact"]);
    tc(&[
        "filter",
        "add",
        "dev",
        "eth0",
        "ingress",
        "protocol",
        "ip",
        "flower",
        "dst_ip",
        &VIP.to_string(),
        "ip_proto",
        "tcp",
        "dst_port",
        &HTTP_PORT.to_string(),
        "action",
        "skbedit",
        "mark",
        "7",
    ]);
    // DR keeps the packet's port: the reals' port is for their TCP_CHECKs only.
    let reals: String = lab
        .reals
        .iter()
        .map(|r| {
            format!(
                "    real_server {} {HTTP_PORT} {{\n        TCP_CHECK {{\n            connect_timeout 1\n            delay_loop 1\n        }}\n    }}\n",
                r.addr
            )
        })
        .collect();
    let config = format!("virtual_server fwmark 7 {{\n    lb_algo rr\n    lb_kind DR\n{reals}}}\n");
    let mut lbd = start(&lab, &config, &["--dataplane", "auto"]);
    lbd.wait_for(
        "only the kernel's IPVS can match them",
        1,
        Duration::from_secs(1),
    )
    .expect("IPVS chosen for the firewall mark");
    let listing = ipvsadm(&lab, &["-Ln"]);
    assert!(listing.contains("FWM  7 rr"), "{listing}");
    for real in &lab.reals {
        assert!(
            listing.contains(&format!("-> {}:0", real.addr)),
            "{listing}"
        );
    }
    spread_over_all(&lab, 10);
    let listing = lbctl_ok(&lab, &["-Ln", "-f", "7"]);
    assert!(listing.contains("FWM  7 rr"), "{listing}");
    let connections = lbctl_ok(&lab, &["-Lnc", "-f", "7"]);
    assert!(
        connections.contains(&format!("{VIP}:{HTTP_PORT}")),
        "{connections}"
    );

    // lbctl names the service by its mark, as ipvsadm.
    let drained = lab.reals[0].addr;
    lbctl_ok(
        &lab,
        &["-e", "-f", "7", "-r", &drained.to_string(), "-w", "0"],
    );
    wait_listing(&lab, "weight 0", |l| {
        l.lines()
            .any(|line| line.contains(&format!("-> {drained}:0")) && line.contains("Route   0"))
    });
    lbctl_ok(
        &lab,
        &["-e", "-f", "7", "-r", &drained.to_string(), "-w", "1"],
    );

    // The checkers connect to the port the configuration gave: a dead real goes.
    let dead = lab.reals[1].name.clone();
    let dead_addr = lab.reals[1].addr;
    lab.stop_http_server(&dead);
    wait_listing(&lab, "the dead real removed", |l| {
        !l.contains(&format!("-> {dead_addr}:0"))
    });
    let answers = lab.spread(4).expect("requests");
    assert_eq!(answers.get(&lab.reals[0].name), Some(&4), "{answers:?}");

    lbd.stop().expect("stop");
    let listing = ipvsadm(&lab, &["-Ln"]);
    assert!(!listing.contains("FWM"), "{listing}");
}

#[test]
fn tun_service_through_gue_then_gre() {
    if !require_ipvs("tun_service_through_gue_then_gre") {
        return;
    }
    let mut lab = Topology::create("lbt-ipvs-gue", 2).expect("lab");
    // The reals take GUE on port 6080 (fou hands the inner IPIP packet to tunl0) and GRE
    // on the kernel's own gre0 (the VIP is on lo).
    for real in &lab.reals {
        real.ns
            .ip(&["fou", "add", "port", "6080", "gue"])
            .expect("fou");
        real.take_tunnels_on(&["tunl0", "gre0"]).expect("tunnels");
    }
    lab.start_http_servers(Path::new(LAB)).expect("servers");
    let dir = lab.scratch_dir();
    let gue = service(&lab, "    lb_kind TUN type gue port 6080 csum\n", false);
    let mut lbd = start(&lab, &gue, &["--dataplane", "auto"]);
    lbd.wait_for(
        "tunnels by IPIP and GRE without checksum only",
        1,
        Duration::from_secs(1),
    )
    .expect("IPVS chosen for GUE");
    let tunnels = ipvsadm(&lab, &["-Ln", "--tun-info"]);
    // ipvsadm's TunnelInfo: type, port, checksum (+c: csum).
    assert_eq!(
        tunnels.matches("Tunnel  gue:6080:+c").count(),
        2,
        "{tunnels}"
    );
    spread_over_all(&lab, 10);

    // A reload changes the reals' tunnel in place.
    let gre = service(&lab, "    lb_kind TUN type gre\n", false);
    std::fs::write(dir.join("keepalived.conf"), gre).expect("config");
    lbd.reload().expect("reload");
    let tunnels = ipvsadm(&lab, &["-Ln", "--tun-info"]);
    assert_eq!(tunnels.matches("Tunnel  gre:-c").count(), 2, "{tunnels}");
    spread_over_all(&lab, 10);
    lbd.stop().expect("stop");
}

#[test]
fn lvs_flush_and_lvs_flush_on_stop_remove_every_service() {
    if !require_ipvs("lvs_flush_and_lvs_flush_on_stop_remove_every_service") {
        return;
    }
    let mut lab = Topology::create("lbt-ipvs-fl", 2).expect("lab");
    lab.start_http_servers(Path::new(LAB)).expect("servers");
    // What an earlier keepalived left behind.
    lab.director
        .exec(&["ipvsadm", "-A", "-t", "10.9.9.9:80", "-s", "rr"])
        .expect("a leftover service");
    // Without lvs_flush lbd leaves it alone.
    let mut lbd = start(
        &lab,
        &service(&lab, "    lb_kind DR\n", false),
        &["--dataplane", "ipvs"],
    );
    let listing = ipvsadm(&lab, &["-Ln"]);
    assert!(
        listing.contains("10.9.9.9:80") && listing.contains("10.0.0.100:80"),
        "{listing}"
    );
    lbd.stop().expect("stop");
    let listing = ipvsadm(&lab, &["-Ln"]);
    assert!(
        listing.contains("10.9.9.9:80") && !listing.contains("10.0.0.100:80"),
        "{listing}"
    );

    // lvs_flush removes it at start; lvs_flush_on_stop removes everything at stop, even
    // what came while lbd ran.
    let config = format!(
        "global_defs {{\n    lvs_flush\n    lvs_flush_on_stop\n}}\n{}",
        service(&lab, "    lb_kind DR\n", false)
    );
    let mut lbd = start(&lab, &config, &["--dataplane", "ipvs"]);
    let listing = ipvsadm(&lab, &["-Ln"]);
    assert!(
        !listing.contains("10.9.9.9:80") && listing.contains("10.0.0.100:80"),
        "{listing}"
    );
    let answers = lab.spread(4).expect("requests");
    assert_eq!(answers.values().sum::<usize>(), 4, "{answers:?}");
    lab.director
        .exec(&["ipvsadm", "-A", "-u", "10.9.9.10:53", "-s", "rr"])
        .expect("another service");
    lbd.stop().expect("stop");
    let listing = ipvsadm(&lab, &["-Ln"]);
    assert!(
        !listing.contains("10.9.9.10:53") && !listing.contains("10.0.0.100:80"),
        "{listing}"
    );
}
