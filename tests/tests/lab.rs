//! README command one's binary: the demo lab exits 0 and says so, for each mode and a
//! set of schedulers (one after the other: the lab has one fixed name). Needs root.

use std::process::Command;

use lb_tests::privilege::require_root;

#[test]
fn lab_serves_every_real_with_each_scheduler() {
    if !require_root("lab_serves_every_real_with_each_scheduler") {
        return;
    }
    for (mode, sched, family) in [
        ("dr", "rr", "--ipv4"),
        ("dr", "wrr", "--ipv4"),
        ("dr", "lc", "--ipv4"),
        ("dr", "sh", "--ipv4"),
        ("dr", "mh", "--ipv4"),
        ("tun", "rr", "--ipv4"),
        ("nat", "rr", "--ipv4"),
        ("fnat", "rr", "--ipv4"),
        ("dr", "rr", "--ipv6"),
        ("tun", "rr", "--ipv6"),
        ("nat", "rr", "--ipv6"),
        ("fnat", "wlc", "--ipv6"),
        ("dr", "fo", "--ipv4"),
        ("dr", "ovf", "--ipv4"),
        ("dr", "twos", "--ipv4"),
        ("dr", "sed", "--ipv4"),
        ("dr", "nq", "--ipv4"),
        ("dr", "lblc", "--ipv4"),
        ("dr", "lblcr", "--ipv4"),
    ] {
        let mut command = Command::new(env!("CARGO_BIN_EXE_lab"));
        command.args(["--mode", mode, "--sched", sched, "--requests", "60"]);
        if family == "--ipv6" {
            command.arg("--ipv6");
        }
        let output = command.output().expect("run lab");
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "lab --mode {mode} --sched {sched} {family} failed:\n{stdout}\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        // fo and ovf send everything to the highest weight (the lab weights the reals 1,
        // 3, 2, and asks one request at a time). sed, nq, lblc and lblcr get HTTP
        // connections held open together, which spread over every real; UDP flows are
        // never active, so each of those sends them all to one real.
        let served = match sched {
            "fo" => {
                "60/60 HTTP and 60/60 UDP echo requests answered, by r2 only (fo sends every new flow to the highest weight)"
            }
            "ovf" => {
                "60/60 HTTP and 60/60 UDP echo requests answered, by r2 only (ovf keeps the highest weight while it is not over its weight)"
            }
            "sed" => {
                "60/60 HTTP requests (held open together) answered by all 3 reals; 60/60 UDP echo requests by r3 only"
            }
            "nq" | "lblc" | "lblcr" => {
                "60/60 HTTP requests (held open together) answered by all 3 reals; 60/60 UDP echo requests by r1 only"
            }
            _ => "60/60 HTTP and 60/60 UDP echo requests answered, by all 3 reals",
        };
        assert!(stdout.contains(&format!("lab: OK: {served}")), "{stdout}");
    }
}
