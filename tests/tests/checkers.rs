//! Health checks driving the XDP data plane, end to end: lbd checks the lab's reals
//! (TCP_CHECK, HTTP_GET); a real whose service stops gets no new connections once the
//! failure is detected while the others keep serving, and gets them again once it is
//! back. Needs root.

use std::{
    path::Path,
    time::{Duration, Instant},
};

use lb_tests::{lbd::Lbd, privilege::require_root, topology::Topology};

const LAB: &str = env!("CARGO_BIN_EXE_lab");

/// Fast checks: every 0.5 s, one retry 0.2 s later, 1 s to connect.
const TIMING: &str = "connect_timeout 1\n            delay_loop 0.5\n            retry 1\n            delay_before_retry 0.2\n            warmup 0";

/// The lab with `reals` reals and lbd checking each with `checker` (a checker block).
fn start(prefix: &str, reals: usize, checker: &str) -> (Topology, Lbd) {
    let mut lab = Topology::create(prefix, reals).expect("topology");
    lab.start_http_servers(Path::new(LAB))
        .expect("HTTP servers");
    let names: Vec<String> = lab.reals.iter().map(|r| r.name.clone()).collect();
    let weighted: Vec<(&str, u32)> = names.iter().map(|n| (n.as_str(), 1)).collect();
    let config = lab
        .keepalived_conf_with("rr", "DR", &[], &weighted)
        .replace(
            "        weight 1\n    }",
            &format!("        weight 1\n        {checker}\n    }}"),
        );
    let dir = lab.scratch_dir();
    let path = dir.join("keepalived.conf");
    std::fs::write(&path, config).expect("write config");
    let mut lbd = Lbd::start(
        &lab.director,
        &path,
        "eth0",
        prefix,
        &dir.join("lbd.log"),
        &["--flow-table-size", "65536"],
    )
    .expect("lbd");
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

    let stopped = lab.reals[1].name.clone();
    let down_needle = format!("real {} 80 of", lab.reals[1].addr);
    let began = Instant::now();
    lab.stop_http_server(&stopped);
    lbd.wait_for("is DOWN", 1, Duration::from_secs(10))
        .expect("failure detected");
    let detection = began.elapsed();
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

    lab.start_http_servers(Path::new(LAB)).expect("restart");
    lbd.wait_for("is UP", 1, Duration::from_secs(10))
        .expect("recovery detected");
    let back = lab.spread(12).expect("requests");
    assert!(back.contains_key(&stopped), "{back:?}");
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
