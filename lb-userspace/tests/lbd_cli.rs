//! lbd's command line without privileges: `-t` validates a configuration.

use std::{
    process::Command,
    sync::atomic::{AtomicU32, Ordering},
};

const LBD: &str = env!("CARGO_BIN_EXE_lbd");

fn config_test(text: &str) -> (bool, String) {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let path = std::env::temp_dir().join(format!(
        "lbd-cli-{}-{}.conf",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::write(&path, text).unwrap();
    let output = Command::new(LBD)
        .arg("-t")
        .arg("-f")
        .arg(&path)
        .output()
        .unwrap();
    std::fs::remove_file(&path).unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stderr).replace(&path.display().to_string(), "k.conf"),
    )
}

#[test]
fn config_test_accepts_a_valid_file() {
    let (ok, stderr) = config_test(
        "virtual_server 192.0.2.1 80 {\n lb_algo rr\n lb_kind DR\n real_server 10.0.0.1 80\n}\n",
    );
    assert!(ok, "{stderr}");
    assert!(stderr.contains("configuration is valid"), "{stderr}");
}

#[test]
fn config_test_lists_every_problem_and_fails() {
    let (ok, stderr) = config_test(
        "vrrp_instance VI_1 {\n}\nvirtual_server 192.0.2.1 80 {\n lb_algo nope\n lb_kind FULLNAT\n}\n",
    );
    assert!(!ok);
    assert_eq!(
        stderr.lines().collect::<Vec<_>>(),
        [
            "k.conf:1: warning: `vrrp_instance` is not supported yet; ignored",
            "k.conf:4: error: lb_algo `nope` is not supported yet (supported: rr, wrr, lc, wlc, sh, dh, sed, nq, mh)",
            "k.conf:5: error: lb_kind `FULLNAT` is not supported yet (supported: DR, TUN, NAT, FNAT)",
        ]
    );
}

#[test]
fn missing_file_is_a_clear_error() {
    let output = Command::new(LBD)
        .args(["-t", "-f", "/nonexistent/keepalived.conf"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("cannot read /nonexistent/keepalived.conf"),
        "{stderr}"
    );
}
