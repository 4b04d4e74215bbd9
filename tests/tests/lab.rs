//! README command one's binary: the demo lab exits 0 and says so. Needs root.

use std::process::Command;

use lb_tests::privilege::require_root;

#[test]
fn lab_serves_every_real_with_each_scheduler() {
    if !require_root("lab_serves_every_real_with_each_scheduler") {
        return;
    }
    for (mode, sched) in [
        ("dr", "rr"),
        ("dr", "wrr"),
        ("dr", "lc"),
        ("dr", "sh"),
        ("dr", "mh"),
        ("tun", "rr"),
        ("nat", "rr"),
    ] {
        let output = Command::new(env!("CARGO_BIN_EXE_lab"))
            .args(["--mode", mode, "--sched", sched, "--requests", "60"])
            .output()
            .expect("run lab");
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "lab --mode {mode} --sched {sched} failed:\n{stdout}\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(
            stdout.contains("lab: OK: 60/60 requests answered, all 3 reals served"),
            "{stdout}"
        );
    }
}
