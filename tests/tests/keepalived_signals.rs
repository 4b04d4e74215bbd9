//! keepalived's dump signals against a running lbd (a DR service with a TCP_CHECK and a
//! VRRP instance): SIGUSR1 writes keepalived.data and keepalived_check.data, SIGUSR2
//! keepalived.stats, SIGRTMIN+2 keepalived.json, in lbd's TMPDIR, in keepalived's
//! layouts; `lbd --signum` names the signals as keepalived does. Needs root.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use lb_tests::{
    lbd,
    privilege::require_root,
    topology::{Topology, VIP},
};

const LAB: &str = env!("CARGO_BIN_EXE_lab");

/// Wait until `path` exists with every one of `lines` (whole lines) in it; its text.
fn wait_for_file(path: &Path, lines: &[&str]) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if lines.iter().all(|want| text.lines().any(|l| l == *want)) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "{} lacks some of {lines:#?}:\n{text}",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn signum(name: &str) -> i32 {
    let output = Command::new(lbd::binary().expect("lbd"))
        .arg(format!("--signum={name}"))
        .output()
        .expect("lbd --signum");
    assert!(output.status.success(), "--signum={name}");
    String::from_utf8_lossy(&output.stdout)
        .trim()
        .parse()
        .expect("a number")
}

#[test]
fn dump_signals_write_keepalived_files() {
    assert_eq!(
        (
            signum("DATA"),
            signum("STATS"),
            signum("RELOAD"),
            signum("STOP")
        ),
        (10, 12, 1, 15)
    );
    if !require_root("dump_signals_write_keepalived_files") {
        return;
    }
    let mut lab = Topology::create("lbt-dump", 1).expect("topology");
    lab.start_http_servers(Path::new(LAB))
        .expect("HTTP servers");
    let real = lab.reals[0].addr;
    let config = format!(
        "global_defs {{\n    router_id LBT\n}}\n{}vrrp_instance VI_1 {{\n    state BACKUP\n    interface eth0\n    virtual_router_id 91\n    priority 150\n    advert_int 1\n    virtual_ipaddress {{\n        10.0.0.191/32\n    }}\n}}\n",
        lab.keepalived_conf("rr", &[(lab.reals[0].name.as_str(), 1)])
            .replace(
                "        weight 1\n    }",
                "        weight 1\n        TCP_CHECK {\n            connect_timeout 1\n            delay_loop 0.5\n        }\n    }"
            )
    );
    let mut lbd = lab.start_lbd(&config).expect("lbd");
    lbd.wait_for("(VI_1) Entering MASTER STATE", 1, Duration::from_secs(10))
        .expect("master");
    let dumps: PathBuf = lbd.dump_dir();

    lbd.signal(signum("DATA")).expect("SIGUSR1");
    wait_for_file(
        &dumps.join("keepalived.data"),
        &[
            "------< Global definitions >------",
            " Router ID = LBT",
            "------< VRRP Topology >------",
            " VRRP Instance = VI_1",
            "   State = MASTER",
            "   Virtual Router ID = 91",
        ],
    );
    wait_for_file(
        &dumps.join("keepalived_check.data"),
        &[
            &format!(" VS VIP = {VIP}, VPORT = 80"),
            &format!("   RIP = {real}, RPORT = 80, WEIGHT = 1 EFF WEIGHT = 1"),
            "   Keepalive method = TCP_CHECK",
            "   Up = yes",
        ],
    );

    lbd.signal(signum("STATS")).expect("SIGUSR2");
    let stats = wait_for_file(
        &dumps.join("keepalived.stats"),
        &[
            "VRRP Instance: VI_1",
            "  Advertisements:",
            "  Became master: 1",
        ],
    );
    let sent: u64 = stats
        .lines()
        .find_map(|l| l.strip_prefix("    Sent: "))
        .and_then(|n| n.parse().ok())
        .expect("Sent");
    assert!(sent > 0, "{stats}");

    lbd.signal(signum("JSON")).expect("SIGRTMIN+2");
    let deadline = Instant::now() + Duration::from_secs(10);
    let json: serde_json::Value = loop {
        let text = std::fs::read_to_string(dumps.join("keepalived.json")).unwrap_or_default();
        if let Ok(value) = serde_json::from_str(&text) {
            break value;
        }
        assert!(Instant::now() < deadline, "no keepalived.json: {text}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(json[0]["data"]["iname"], "VI_1", "{json}");
    assert_eq!(json[0]["data"]["state"], 2, "{json}");
    assert!(json[0]["stats"]["advert_sent"].as_u64() > Some(0), "{json}");
    // lbd goes on after each signal.
    lbd.stop().expect("stop");
}
