//! Health checks driving the XDP data plane, end to end: lbd checks the lab's reals
//! (TCP_CHECK, HTTP_GET); a real whose service stops gets no new connections once the
//! failure is detected while the others keep serving, and gets them again once it is
//! back. Needs root.

use std::{
    path::Path,
    time::{Duration, Instant},
};

use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
};

use lb_tests::{
    http,
    lbd::Lbd,
    privilege::require_root,
    topology::{Topology, vip_http},
};

const LAB: &str = env!("CARGO_BIN_EXE_lab");

/// Fast checks: every 0.5 s, one retry 0.2 s later, 1 s to connect.
const TIMING: &str = "connect_timeout 1\n            delay_loop 0.5\n            retry 1\n            delay_before_retry 0.2\n            warmup 0";

/// The lab with `reals` reals and lbd checking each with `checker` (a checker block).
fn start(prefix: &str, reals: usize, checker: &str) -> (Topology, Lbd) {
    let lab = Topology::create(prefix, reals).expect("topology");
    let names: Vec<String> = lab.reals.iter().map(|r| r.name.clone()).collect();
    start_with(lab, &names, &[], &format!("{checker}\n"))
}

/// lbd on `lab` (its servers started) balancing over `reals` with `keywords` in the
/// virtual server and `in_real` in each real.
fn start_with(
    lab: Topology,
    reals: &[String],
    keywords: &[&str],
    in_real: &str,
) -> (Topology, Lbd) {
    start_with_extra(lab, reals, keywords, in_real, "")
}

/// As `start_with`, with `extra` configuration (VRRP instances) after the service.
fn start_with_extra(
    mut lab: Topology,
    reals: &[String],
    keywords: &[&str],
    in_real: &str,
    extra: &str,
) -> (Topology, Lbd) {
    lab.start_http_servers(Path::new(LAB))
        .expect("HTTP servers");
    let weighted: Vec<(&str, u32)> = reals.iter().map(|n| (n.as_str(), 1)).collect();
    let config = lab
        .keepalived_conf_with("rr", "DR", keywords, &weighted)
        .replace(
            "        weight 1\n    }",
            &format!("        weight 1\n        {in_real}    }}"),
        )
        + extra;
    let mut lbd = lab.start_lbd(&config).expect("lbd");
    lbd.wait_for("checker(s) running", 1, Duration::from_secs(10))
        .expect("checkers started");
    (lab, lbd)
}

/// Stop real 2's service: it leaves within the retry budget; the others serve every
/// request; started again, it comes back.
fn a_failed_real_takes_no_new_connections_and_returns(prefix: &str, checker: &str) {
    let (mut lab, mut lbd) = start(prefix, 3, checker);
    let all = lab.spread(12).expect("requests");
    assert_eq!(all.len(), 3, "{all:?}");

    // A client asking all along, one new connection at a time.
    let stop = Arc::new(AtomicBool::new(false));
    let asking = stop.clone();
    let client = lab
        .client
        .spawn(move || {
            let mut answers = Vec::new();
            while !asking.load(Ordering::Relaxed) {
                answers.push((
                    Instant::now(),
                    http::get(vip_http()).map_err(|e| e.to_string()),
                ));
                std::thread::sleep(Duration::from_millis(20));
            }
            Ok(answers)
        })
        .expect("client");

    let stopped = lab.reals[1].name.clone();
    let addr = lab.reals[1].addr;
    let down_needle = format!("real {addr} 80 of");
    let began = Instant::now();
    lab.stop_http_server(&stopped);
    lbd.wait_for("is DOWN", 1, Duration::from_secs(10))
        .expect("failure detected");
    let detection = began.elapsed();
    // The data plane follows right after the verdict: wait for that, not the verdict.
    lbd.wait_for(
        &format!("health: remove real {addr} 80"),
        1,
        Duration::from_secs(5),
    )
    .expect("real out");
    let out_at = Instant::now();
    // Traffic goes on for a while with the real out.
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        lbd.log()
            .iter()
            .any(|l| l.contains(&down_needle) && l.contains("is DOWN")),
        "{:?}",
        lbd.log()
    );
    eprintln!("{prefix}: failure detected after {detection:?}");
    let after = lab
        .spread(12)
        .expect("every request answered after detection");
    assert!(!after.contains_key(&stopped), "{after:?}");
    assert_eq!(after.values().sum::<usize>(), 12);

    let restart_at = Instant::now();
    lab.start_http_servers(Path::new(LAB)).expect("restart");
    lbd.wait_for("is UP", 1, Duration::from_secs(10))
        .expect("recovery detected");
    lbd.wait_for(
        &format!("health: add real {addr} 80"),
        1,
        Duration::from_secs(5),
    )
    .expect("real back in");
    let back = lab.spread(12).expect("requests");
    assert!(back.contains_key(&stopped), "{back:?}");

    // While the real was out, every request was answered, by the others only.
    stop.store(true, Ordering::Relaxed);
    let answers = client.join().expect("client thread").expect("client");
    let while_out: Vec<_> = answers
        .iter()
        .filter(|(at, _)| *at >= out_at && *at < restart_at)
        .collect();
    assert!(!while_out.is_empty());
    for (_, answer) in &while_out {
        match answer {
            Ok(real) => assert_ne!(*real, stopped, "the failed real got a new connection"),
            Err(e) => panic!("a request failed while the real was out: {e}"),
        }
    }
    let failed_before = answers
        .iter()
        .filter(|(at, a)| *at < out_at && a.is_err())
        .count();
    eprintln!(
        "{prefix}: {} requests during the run, {} while the real was out, {failed_before} failed before it was taken out",
        answers.len(),
        while_out.len()
    );
}

#[test]
fn tcp_check_takes_a_dead_real_out_and_back() {
    if !require_root("tcp_check_takes_a_dead_real_out_and_back") {
        return;
    }
    a_failed_real_takes_no_new_connections_and_returns(
        "lbt-ckt",
        &format!("TCP_CHECK {{\n            {TIMING}\n        }}"),
    );
}

#[test]
fn http_get_takes_a_dead_real_out_and_back() {
    if !require_root("http_get_takes_a_dead_real_out_and_back") {
        return;
    }
    a_failed_real_takes_no_new_connections_and_returns(
        "lbt-ckh",
        &format!(
            "HTTP_GET {{\n            url {{\n                path /\n                status_code 200\n            }}\n            {TIMING}\n        }}"
        ),
    );
}

#[test]
fn quorum_brings_the_sorry_server_and_scripts_are_told() {
    if !require_root("quorum_brings_the_sorry_server_and_scripts_are_told") {
        return;
    }
    // Two checked reals with a quorum of 2; the third real is the sorry server.
    let lab = Topology::create("lbt-ckq", 3).expect("topology");
    let dir = lab.scratch_dir();
    let events = dir.join("events");
    let reals: Vec<String> = lab.reals[..2].iter().map(|r| r.name.clone()).collect();
    let sorry = (lab.reals[2].name.clone(), lab.reals[2].addr);
    let quorum_up = format!(
        "quorum_up \"/bin/sh -c 'echo quorum up >> {}'\"",
        events.display()
    );
    let quorum_down = format!(
        "quorum_down \"/bin/sh -c 'echo quorum down >> {}'\"",
        events.display()
    );
    let sorry_server = format!("sorry_server {} 80", sorry.1);
    let in_real = format!(
        "notify_down \"/bin/sh -c 'echo down $0 >> {}' real\"\n        notify_up \"/bin/sh -c 'echo up >> {}'\"\n        TCP_CHECK {{\n            {TIMING}\n        }}\n",
        events.display(),
        events.display()
    );
    let (mut lab, mut lbd) = start_with(
        lab,
        &reals,
        &["quorum 2", &quorum_up, &quorum_down, &sorry_server],
        &in_real,
    );
    let both = lab.spread(12).expect("requests");
    assert_eq!(both.len(), 2, "{both:?}");
    assert!(!both.contains_key(&sorry.0), "{both:?}");

    // One real down: below the quorum, the sorry server takes every request.
    lab.stop_http_server(&reals[0]);
    lbd.wait_for("lost its quorum", 1, Duration::from_secs(10))
        .expect("quorum lost");
    // The data plane follows right after the verdict: wait for that, not the verdict.
    lbd.wait_for(
        &format!("health: add real {} 80", sorry.1),
        1,
        Duration::from_secs(5),
    )
    .expect("sorry server in");
    let during = lab.spread(12).expect("requests");
    assert_eq!(during.keys().collect::<Vec<_>>(), [&sorry.0], "{during:?}");

    // Back: the reals serve again, the sorry server leaves.
    lab.start_http_servers(Path::new(LAB)).expect("restart");
    lbd.wait_for("regained its quorum", 1, Duration::from_secs(10))
        .expect("quorum regained");
    lbd.wait_for(
        &format!("health: remove real {} 80", sorry.1),
        1,
        Duration::from_secs(5),
    )
    .expect("sorry server out");
    let after = lab.spread(12).expect("requests");
    assert_eq!(after.len(), 2, "{after:?}");
    assert!(!after.contains_key(&sorry.0), "{after:?}");

    // The scripts ran with their arguments, in order (they run in the background).
    let deadline = Instant::now() + Duration::from_secs(5);
    let want = ["down real", "quorum down", "up", "quorum up"];
    loop {
        let text = std::fs::read_to_string(&events).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        if lines.len() >= want.len() || Instant::now() > deadline {
            let mut sorted = lines.clone();
            sorted.sort();
            let mut expected = want.to_vec();
            expected.sort();
            assert_eq!(sorted, expected, "{text}");
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn ha_suspend_pauses_checks_until_vrrp_brings_the_vip() {
    if !require_root("ha_suspend_pauses_checks_until_vrrp_brings_the_vip") {
        return;
    }
    // A check that can only fail (nothing listens on port 81), on a service with
    // ha_suspend whose VIP a VRRP instance of this director holds once master.
    let lab = Topology::create("lbt-cks", 1).expect("topology");
    let reals: Vec<String> = lab.reals.iter().map(|r| r.name.clone()).collect();
    let vip = lb_tests::topology::VIP;
    // The lab gives the director the VIP; here VRRP does, once master.
    lab.director
        .ip(&["addr", "del", &format!("{vip}/32"), "dev", "eth0"])
        .expect("VIP off");
    let in_real =
        format!("TCP_CHECK {{\n            connect_port 81\n            {TIMING}\n        }}\n");
    let (lab, mut lbd) = start_with_extra(
        lab,
        &reals,
        &["ha_suspend"],
        &in_real,
        &format!(
            "vrrp_instance VI_1 {{\n    state BACKUP\n    interface eth0\n    virtual_router_id 60\n    priority 100\n    advert_int 1\n    virtual_ipaddress {{\n        {vip}/32\n    }}\n}}\n"
        ),
    );
    // Backup for the master-down interval (3.6 s): no check runs.
    lbd.wait_for("Entering BACKUP STATE", 1, Duration::from_secs(5))
        .expect("backup");
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        !lbd.log().iter().any(|l| l.contains("failed: connect")),
        "a check ran while suspended: {:?}",
        lbd.log()
    );
    // Master: the VIP is here, the checks resume and find the real down.
    lbd.wait_for("Entering MASTER STATE", 1, Duration::from_secs(5))
        .expect("master");
    lbd.wait_for("failed: connect", 1, Duration::from_secs(5))
        .expect("checks resumed");
    drop(lab);
}

/// keepalived's `-C`: the checker process alone. lbd balances and checks, and runs no
/// VRRP instance of the file (its VIP is never added).
#[test]
fn dash_c_checks_and_balances_without_vrrp() {
    if !require_root("dash_c_checks_and_balances_without_vrrp") {
        return;
    }
    let mut lab = Topology::create("lbt-dashc", 2).expect("topology");
    lab.start_http_servers(Path::new(LAB))
        .expect("HTTP servers");
    let reals: Vec<(&str, u32)> = lab.reals.iter().map(|r| (r.name.as_str(), 1)).collect();
    let config = lab.keepalived_conf("rr", &reals).replace(
        "        weight 1\n    }",
        &format!(
            "        weight 1\n        TCP_CHECK {{\n            {TIMING}\n        }}\n    }}"
        ),
    ) + "vrrp_instance VI_1 {\n    state MASTER\n    interface eth0\n    virtual_router_id 77\n    priority 150\n    virtual_ipaddress {\n        10.0.0.177/32\n    }\n}\n";
    let mut lbd = lab.start_lbd_with(&config, &["-C"]).expect("lbd -C");
    lbd.wait_for("checker(s) running", 1, Duration::from_secs(10))
        .expect("checkers started");
    assert_eq!(lab.spread(8).expect("requests").len(), 2);
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        !lbd.log().iter().any(|line| line.contains("VRRPv")),
        "lbd -C started VRRP"
    );
    let addresses = lab
        .director
        .ip(&["addr", "show", "dev", "eth0"])
        .expect("addr");
    assert!(!addresses.contains("10.0.0.177"), "{addresses}");
}
