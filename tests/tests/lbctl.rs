//! lbctl and the metrics against a running lbd in the DR lab: after the client sends a
//! known number of UDP datagrams (and TCP connections), `lbctl -Ln --stats --exact` and
//! the metrics endpoint report exactly those numbers; the views work with lbd stopped;
//! runtime changes go through the control socket; drain empties a real. Needs root.

use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpStream, UdpSocket},
    path::Path,
    process::Output,
    time::Duration,
};

use lb_tests::{
    http::KeepAlive,
    lbd::{Lbd, lbctl_in, lbctl_ok_in},
    privilege::require_root,
    topology::{ECHO_PORT, Topology, VIP, real_addr, vip_http},
};

const LAB: &str = env!("CARGO_BIN_EXE_lab");
const METRICS: &str = "127.0.0.1:9417";
/// Datagrams per flow, flows, and the UDP payload of each datagram.
const DATAGRAMS: usize = 10;
const FLOWS: usize = 3;
const PAYLOAD: usize = 100;
/// What the data plane counts of one datagram: Ethernet + IPv4 + UDP headers + payload.
const FRAME: usize = 14 + 20 + 8 + PAYLOAD;

fn config(lab: &Topology) -> String {
    let reals = |port: u16, check: bool| {
        lab.reals
            .iter()
            .map(|r| {
                let check = if check {
                    "        TCP_CHECK {\n            connect_timeout 1\n            delay_loop 1\n        }\n"
                } else {
                    ""
                };
                format!(
                    "    real_server {} {port} {{\n        weight 1\n{check}    }}\n",
                    r.addr
                )
            })
            .collect::<String>()
    };
    format!(
        "global_defs {{\n    vrrp_version 3\n}}\n\
         vrrp_instance VI_LB {{\n    interface eth0\n    virtual_router_id 61\n    priority 100\n    version 3\n    advert_int 0.1\n    virtual_ipaddress {{\n        10.0.0.200/24\n    }}\n}}\n\
         virtual_server {VIP} 80 {{\n    lb_algo rr\n    lb_kind DR\n    protocol TCP\n{}}}\n\
         virtual_server {VIP} {ECHO_PORT} {{\n    lb_algo rr\n    lb_kind DR\n    protocol UDP\n{}}}\n",
        reals(80, true),
        reals(ECHO_PORT, false)
    )
}

fn lbctl(prefix: &str, args: &[&str]) -> Output {
    lbctl_in(None, prefix, args)
}

/// lbctl's standard output; it must succeed.
fn lbctl_ok(prefix: &str, args: &[&str]) -> String {
    lbctl_ok_in(None, prefix, args)
}

/// The numbers of the `--stats` line that starts with `name`.
fn stats_line(text: &str, name: &str) -> Vec<u64> {
    let line = text
        .lines()
        .find(|l| l.starts_with(name))
        .unwrap_or_else(|| panic!("no line {name:?} in\n{text}"));
    line[name.len()..]
        .split_whitespace()
        .map(|n| n.parse().expect("a number"))
        .collect()
}

/// `GET /metrics` from inside the director.
fn scrape(lab: &Topology) -> String {
    lab.director
        .run(|| {
            let mut stream = TcpStream::connect(METRICS)?;
            stream.set_read_timeout(Some(Duration::from_secs(5)))?;
            stream.write_all(b"GET /metrics HTTP/1.1\r\nHost: lbd\r\n\r\n")?;
            let mut text = String::new();
            stream.read_to_string(&mut text)?;
            Ok(text)
        })
        .expect("scrape")
}

/// The value of the sample `series` (name and labels, exactly) in `text`.
fn sample(text: &str, series: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no sample {series} in\n{text}"))
        .parse()
        .expect("a number")
}

/// `FLOWS` flows of `DATAGRAMS` datagrams each to the UDP service, from the client. The
/// sockets stay open until the caller drops them: a closed one would answer the echoes
/// with ICMP port unreachable, which the director forwards (and counts) as part of the
/// flow.
fn send_datagrams(lab: &Topology) -> Vec<UdpSocket> {
    lab.client
        .run(|| {
            let mut sockets = Vec::new();
            for _ in 0..FLOWS {
                let socket = UdpSocket::bind("0.0.0.0:0")?;
                for _ in 0..DATAGRAMS {
                    socket.send_to(&[7u8; PAYLOAD], SocketAddr::new(VIP.into(), ECHO_PORT))?;
                }
                sockets.push(socket);
            }
            Ok(sockets)
        })
        .expect("send datagrams")
}

#[test]
fn lbctl_and_metrics_report_the_lab_traffic_exactly() {
    if !require_root("lbctl_and_metrics_report_the_lab_traffic_exactly") {
        return;
    }
    let prefix = "lbtctl";
    let mut lab = Topology::create(prefix, 2).expect("topology");
    lab.start_http_servers(Path::new(LAB)).expect("servers");
    let dir = lab.scratch_dir();
    let conf = dir.join("keepalived.conf");
    std::fs::write(&conf, config(&lab)).expect("config");
    let mut lbd = Lbd::start(
        &lab.director,
        &conf,
        "eth0",
        prefix,
        &dir.join("lbd.log"),
        &["--metrics-address", METRICS],
    )
    .expect("lbd");
    lbd.wait_for("Entering MASTER STATE", 1, Duration::from_secs(10))
        .expect("VRRP master");
    // Warm up (neighbours resolved, checks passed once), then count from zero.
    lab.spread(4).expect("HTTP through the VIP");
    assert!(lbctl_ok(prefix, &["-Z"]).contains("zeroed all counters"));

    let _sockets = send_datagrams(&lab);
    lab.spread(5).expect("HTTP through the VIP");
    std::thread::sleep(Duration::from_millis(500));

    let stats = lbctl_ok(prefix, &["-Ln", "--stats", "--exact"]);
    let udp = stats_line(&stats, &format!("UDP  {VIP}:{ECHO_PORT}"));
    let (packets, bytes) = (
        (FLOWS * DATAGRAMS) as u64,
        (FLOWS * DATAGRAMS * FRAME) as u64,
    );
    assert_eq!(udp, [FLOWS as u64, packets, 0, bytes, 0], "{stats}");
    let tcp = stats_line(&stats, &format!("TCP  {VIP}:80"));
    assert_eq!(tcp[0], 5, "five TCP connections: {stats}");
    let r1 = stats_line(&stats, &format!("  -> {}:{ECHO_PORT}", real_addr(0)));
    let r2 = stats_line(&stats, &format!("  -> {}:{ECHO_PORT}", real_addr(1)));
    assert_eq!(r1[1] + r2[1], packets, "{stats}");

    let metrics = scrape(&lab);
    let udp_labels = format!("protocol=\"UDP\",vip=\"{VIP}\",port=\"{ECHO_PORT}\"");
    let tcp_labels = format!("protocol=\"TCP\",vip=\"{VIP}\",port=\"80\"");
    assert_eq!(
        sample(
            &metrics,
            &format!("lbd_service_packets_total{{{udp_labels},direction=\"in\"}}")
        ),
        packets
    );
    assert_eq!(
        sample(
            &metrics,
            &format!("lbd_service_bytes_total{{{udp_labels},direction=\"in\"}}")
        ),
        bytes
    );
    assert_eq!(
        sample(
            &metrics,
            &format!("lbd_service_connections_total{{{udp_labels}}}")
        ),
        FLOWS as u64
    );
    assert_eq!(
        sample(
            &metrics,
            &format!("lbd_service_connections_total{{{tcp_labels}}}")
        ),
        5
    );
    assert_eq!(
        sample(
            &metrics,
            &format!("lbd_service_packets_total{{{tcp_labels},direction=\"in\"}}")
        ),
        tcp[1],
        "metrics and lbctl read the same counters"
    );
    assert_eq!(
        sample(
            &metrics,
            "lbd_vrrp_state{instance=\"VI_LB\",state=\"master\"}"
        ),
        1
    );
    assert_eq!(
        sample(&metrics, "lbd_vrrp_became_master_total{instance=\"VI_LB\"}"),
        1
    );
    let check = format!(
        "lbd_check_up{{service=\"TCP {VIP}:80\",real=\"{}\",real_port=\"80\",check=\"TCP_CHECK\",index=\"0\"}}",
        real_addr(0)
    );
    assert_eq!(sample(&metrics, &check), 1);
    assert!(metrics.contains("lbd_dropped_packets_total{reason=\"no_real\"}"));

    // The views: services, connections, VRRP, checkers, maps.
    let table = lbctl_ok(prefix, &["-Ln"]);
    assert!(
        table.contains(&format!("UDP  {VIP}:{ECHO_PORT} rr\n")),
        "{table}"
    );
    assert!(
        table.contains(&format!(
            "  -> {:<28} Route   1      ",
            format!("{}:80", real_addr(0))
        )),
        "{table}"
    );
    let conns = lbctl_ok(prefix, &["-Lnc", "-u", &format!("{VIP}:{ECHO_PORT}")]);
    assert_eq!(
        conns.lines().filter(|l| l.starts_with("UDP")).count(),
        FLOWS,
        "{conns}"
    );
    let vrrp: serde_json::Value =
        serde_json::from_str(&lbctl_ok(prefix, &["vrrp", "--json"])).expect("json");
    assert_eq!(vrrp[0]["state"], "MASTER");
    assert_eq!(vrrp[0]["vips"][0], "10.0.0.200");
    assert!(vrrp[0]["counters"]["adverts_sent"].as_u64().unwrap() > 0);
    let checks = lbctl_ok(prefix, &["checks"]);
    assert_eq!(
        checks
            .lines()
            .filter(|l| l.contains("TCP_CHECK#0 UP"))
            .count(),
        2,
        "{checks}"
    );
    assert!(lbctl_ok(prefix, &["map", "list"]).contains("LB_FLOWS"));
    let flows = lbctl_ok(prefix, &["map", "dump", "LB_FLOWS"]);
    assert!(flows.lines().count() >= FLOWS, "{flows}");
    // IPVS's timeouts per state (no lvs_timeouts in the configuration), decoded.
    assert_eq!(
        lbctl_ok(prefix, &["map", "dump", "LB_TIMEOUTS"]),
        "{\"key\":0,\"value\":[2,900,120,60,120,120,10,60,30,120,120,300]}\n"
    );
    let services = lbctl_ok(prefix, &["map", "dump", "LB_SERVICES"]);
    assert!(
        services.contains(&format!(
            "\"addr\":\"{VIP}\",\"port\":{ECHO_PORT},\"proto\":17"
        )),
        "{services}"
    );

    // Runtime changes: validated, applied, reported as not persisted.
    let service = format!("{VIP}:80");
    let added = lbctl_ok(
        prefix,
        &["-a", "-t", &service, "-r", "10.0.0.2:80", "-w", "0"],
    );
    assert!(added.contains("not persisted"), "{added}");
    assert!(lbctl_ok(prefix, &["-Ln", "-t", &service]).contains("10.0.0.2:80"));
    let refused = lbctl(
        prefix,
        &["-e", "-t", &service, "-r", "10.0.0.2:80", "-w", "70000"],
    );
    assert_eq!(refused.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("out of range"));
    lbctl_ok(prefix, &["-d", "-t", &service, "-r", "10.0.0.2:80"]);
    assert!(!lbctl_ok(prefix, &["-Ln"]).contains("10.0.0.2"));

    // lbd stopped: the maps stay, and so do the numbers; VRRP from the status file.
    let before = lbctl_ok(
        prefix,
        &[
            "-Ln",
            "--stats",
            "--exact",
            "-u",
            &format!("{VIP}:{ECHO_PORT}"),
        ],
    );
    lbd.stop().expect("stop lbd");
    let after = lbctl_ok(
        prefix,
        &[
            "-Ln",
            "--stats",
            "--exact",
            "-u",
            &format!("{VIP}:{ECHO_PORT}"),
        ],
    );
    assert_eq!(before, after);
    let stopped = lbctl(prefix, &["vrrp"]);
    assert!(stopped.status.success());
    assert!(String::from_utf8_lossy(&stopped.stderr).contains("lbd is not running"));
    assert!(lbctl_ok(prefix, &["-Lnc"]).starts_with("IPVS connection entries\n"));
    let refused = lbctl(prefix, &["-Z"]);
    assert!(!refused.status.success(), "changes need lbd");
}

#[test]
fn drain_empties_a_real_and_sends_it_no_new_flows() {
    if !require_root("drain_empties_a_real_and_sends_it_no_new_flows") {
        return;
    }
    let prefix = "lbtdrain";
    let mut lab = Topology::create(prefix, 2).expect("topology");
    lab.start_http_servers(Path::new(LAB)).expect("servers");
    let dir = lab.scratch_dir();
    let conf = dir.join("keepalived.conf");
    let names: Vec<String> = lab.reals.iter().map(|r| r.name.clone()).collect();
    let reals: Vec<(&str, u32)> = names.iter().map(|n| (n.as_str(), 1)).collect();
    std::fs::write(&conf, lab.keepalived_conf("rr", &reals)).expect("config");
    let _lbd = Lbd::start(
        &lab.director,
        &conf,
        "eth0",
        prefix,
        &dir.join("lbd.log"),
        &[],
    )
    .expect("lbd");
    lab.spread(4).expect("HTTP through the VIP");

    // A long-lived connection on some real; drain that real.
    let (mut held, first) = lab
        .client
        .run(|| {
            let mut held = KeepAlive::connect(vip_http())?;
            let first = held.request()?;
            Ok((held, first))
        })
        .expect("keep-alive connection");
    let index = names
        .iter()
        .position(|n| *n == first)
        .expect("a real answered");
    let real = format!("{}:80", real_addr(index));
    let service = format!("{VIP}:80");
    let drain = {
        let (prefix, service, real) = (prefix.to_owned(), service.clone(), real.clone());
        std::thread::spawn(move || {
            lbctl(
                &prefix,
                &["drain", "-t", &service, "-r", &real, "--timeout", "30"],
            )
        })
    };
    std::thread::sleep(Duration::from_millis(500));
    assert!(!drain.is_finished(), "drain waits for the held connection");
    // No new flow reaches the drained real; the held one still works.
    let answers = lab.spread(10).expect("HTTP through the VIP");
    assert!(!answers.contains_key(&first), "{answers:?}");
    assert_eq!(held.request().expect("held connection"), first);
    drop(held);
    let output = drain.join().expect("drain thread");
    assert!(
        output.status.success(),
        "drain completes once the connection closed"
    );
    assert!(String::from_utf8_lossy(&output.stdout).contains("is drained"));
    let table = lbctl_ok(prefix, &["-Ln", "-t", &service]);
    let line = table
        .lines()
        .find(|l| l.contains(&real))
        .expect("the real is listed");
    let columns: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(
        &columns[3..5],
        ["0", "0"],
        "weight 0, no active connection: {table}"
    );
}
