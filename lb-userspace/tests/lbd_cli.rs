//! lbd's command line without privileges: `-t` validates a configuration, `--dump-config`
//! prints it, `--strict` and `-i` change how it is read, and keepalived's options are
//! accepted.

use std::{
    process::Command,
    sync::atomic::{AtomicU32, Ordering},
};

const LBD: &str = env!("CARGO_BIN_EXE_lbd");

/// Run lbd with `args` and `-f` a file holding `text`: exit code, stdout, stderr (the
/// file's path written as k.conf).
fn lbd_with(text: &str, args: &[&str]) -> (Option<i32>, String, String) {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let path = std::env::temp_dir().join(format!(
        "lbd-cli-{}-{}.conf",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::write(&path, text).unwrap();
    let output = Command::new(LBD)
        .args(args)
        .arg("-f")
        .arg(&path)
        .output()
        .unwrap();
    std::fs::remove_file(&path).unwrap();
    let name = path.display().to_string();
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).replace(&name, "k.conf"),
        String::from_utf8_lossy(&output.stderr).replace(&name, "k.conf"),
    )
}

/// keepalived's `-t` exit codes: no problem, warnings only, errors.
const VALID: Option<i32> = Some(0);
const WARNINGS: Option<i32> = Some(5);
const ERRORS: Option<i32> = Some(4);

fn config_test(text: &str) -> (Option<i32>, String) {
    let (code, _, stderr) = lbd_with(text, &["-t"]);
    (code, stderr)
}

#[test]
fn config_test_accepts_a_valid_file() {
    let valid = "virtual_server 192.0.2.1 80 {\n lb_algo rr\n lb_kind DR\n protocol TCP\n real_server 10.0.0.1 80 {}\n}\n";
    let (code, stderr) = config_test(valid);
    assert_eq!(code, VALID, "{stderr}");
    assert!(stderr.contains("configuration is valid"), "{stderr}");
    // A warning: usable, but keepalived's verdict is "problems".
    let (code, stderr) = config_test(&valid.replace(" protocol TCP\n", ""));
    assert_eq!(code, WARNINGS, "{stderr}");
    assert_eq!(
        stderr.lines().collect::<Vec<_>>(),
        [
            "k.conf:1: warning: no `protocol`: UDP, as keepalived and the kernel default to (write `protocol TCP` for TCP)",
            "k.conf: configuration is usable, with 1 warning(s)",
        ]
    );
}

#[test]
fn config_test_lists_every_problem_and_fails() {
    let (code, stderr) = config_test(
        "vrrp_instance VI_1 {\n}\nvirtual_server 192.0.2.1 80 {\n lb_algo nope\n lb_kind FULLNAT\n}\n",
    );
    assert_eq!(code, ERRORS);
    assert_eq!(
        stderr.lines().collect::<Vec<_>>(),
        [
            "k.conf:1: error: vrrp_instance VI_1 needs `interface` (or unicast_src_ip)",
            "k.conf:4: error: lb_algo `nope` is not supported yet (supported: rr, wrr, lc, wlc, sh, dh, sed, nq, mh, fo, ovf, twos, lblc, lblcr)",
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
    assert_eq!(output.status.code(), ERRORS);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("cannot read /nonexistent/keepalived.conf"),
        "{stderr}"
    );
}

const CONDITIONAL: &str = "
virtual_server 192.0.2.1 80 {
@lb1 lb_algo rr
@^lb1 lb_algo wrr
    lb_kind DR
    protocol TCP
    quorun 1
    real_server 10.0.0.1 80 {}
}
";

#[test]
fn dump_config_prints_the_model_as_json_with_the_config_id() {
    for (id, scheduler) in [("lb1", "\"rr\""), ("lb2", "\"wrr\"")] {
        let (code, stdout, stderr) = lbd_with(CONDITIONAL, &["--dump-config", "-i", id]);
        assert_eq!(code, VALID, "{stderr}");
        let json: serde_json::Value = serde_json::from_str(&stdout).expect("JSON");
        let vs = &json["virtual_servers"][0];
        assert_eq!(vs["addr"], "192.0.2.1");
        assert_eq!(vs["scheduler"].to_string(), scheduler, "-i {id}");
        assert_eq!(vs["reals"][0]["addr"], "10.0.0.1");
        assert!(stderr.contains("did you mean `quorum`?"), "{stderr}");
    }
}

#[test]
fn strict_makes_warnings_errors() {
    let (code, _, stderr) = lbd_with(CONDITIONAL, &["-t", "--strict", "-i", "lb1"]);
    assert_eq!(code, ERRORS);
    assert!(
        stderr.contains("k.conf:7: error: unknown virtual_server keyword `quorun`"),
        "{stderr}"
    );
}

#[test]
fn keepalived_options_are_accepted() {
    let (code, _, stderr) = lbd_with(
        CONDITIONAL,
        &[
            "-n",
            "-l",
            "-D",
            "-S",
            "local0",
            "-C",
            "--config-id",
            "lb1",
            "--config-test",
        ],
    );
    // Accepted (a usage error exits 2); the file's misspelt `quorun` is a warning.
    assert_eq!(code, WARNINGS, "{stderr}");
    // A facility keepalived would not take is reported, and the check goes on.
    let (code, _, stderr) = lbd_with(
        CONDITIONAL,
        &["-t", "-D", "-D", "-S", "local9", "-i", "lb1"],
    );
    assert_eq!(code, WARNINGS, "{stderr}");
    assert!(stderr.contains("invalid log facility `local9`"), "{stderr}");
    // VRRP only needs VRRP instances (the pid file is a scratch one, not the host's).
    let pid = std::env::temp_dir().join(format!("lbd-cli-{}.pid", std::process::id()));
    let pid = pid.display().to_string();
    let (code, _, stderr) = lbd_with(CONDITIONAL, &["-P", "-p", &pid]);
    assert_eq!(code, Some(1));
    assert!(
        stderr.contains("-P/--vrrp: the configuration has no vrrp_instance"),
        "{stderr}"
    );
}

#[test]
fn fullnat_is_a_config_error_on_ipvs() {
    let fnat = "local_address_group laddr {\n 10.1.0.250\n}\nvirtual_server 192.0.2.1 80 {\n lb_algo rr\n lb_kind FNAT\n protocol TCP\n laddr_group_name laddr\n real_server 10.1.0.11 80 {}\n}\n";
    let (code, _, stderr) = lbd_with(fnat, &["-t", "--dataplane", "ipvs"]);
    assert_eq!(code, ERRORS, "{stderr}");
    assert!(
        stderr.contains(
            "k.conf: virtual_server TCP 192.0.2.1:80: lb_kind FNAT needs the XDP data plane; IPVS has no FullNAT"
        ),
        "{stderr}"
    );
    // The XDP data plane (and auto, which would use it) take it.
    for dataplane in ["xdp", "auto"] {
        let (code, _, stderr) = lbd_with(fnat, &["-t", "--dataplane", dataplane]);
        assert_eq!(code, VALID, "{dataplane}: {stderr}");
    }
}

#[test]
fn ipvs_without_ipvs_in_the_kernel_is_a_clear_error() {
    if std::path::Path::new("/proc/net/ip_vs").exists() {
        eprintln!("SKIPPED: this kernel has IPVS; the test is for kernels without it");
        return;
    }
    let dr = "virtual_server 192.0.2.1 80 {\n lb_algo rr\n lb_kind DR\n protocol TCP\n real_server 10.0.0.1 80 {}\n}\n";
    let pid = std::env::temp_dir().join(format!("lbd-cli-{}.pid", std::process::id()));
    let pid = pid.display().to_string();
    let run_dir = std::env::temp_dir().join(format!("lbd-cli-run-{}", std::process::id()));
    let run_dir = run_dir.display().to_string();
    let (code, _, stderr) = lbd_with(
        dr,
        &[
            "--dataplane",
            "ipvs",
            "--name",
            "lbd-cli-ipvs",
            "-p",
            &pid,
            "--run-dir",
            &run_dir,
        ],
    );
    let _ = std::fs::remove_dir_all(&run_dir);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("the kernel has no IPVS"), "{stderr}");
}

#[test]
fn thresholds_are_a_config_error_on_xdp() {
    let limited = "virtual_server 192.0.2.1 80 {\n lb_algo rr\n lb_kind NAT\n protocol TCP\n real_server 10.1.0.11 80 {\n  uthreshold 100\n }\n}\n";
    let (code, _, stderr) = lbd_with(limited, &["-t", "--dataplane", "xdp"]);
    assert_eq!(code, ERRORS, "{stderr}");
    assert!(
        stderr.contains(
            "k.conf: virtual_server TCP 192.0.2.1:80: real_server 10.1.0.11 80 has uthreshold/lthreshold, connection limits that only the kernel's IPVS has"
        ),
        "{stderr}"
    );
    for dataplane in ["ipvs", "auto"] {
        let (code, _, stderr) = lbd_with(limited, &["-t", "--dataplane", dataplane]);
        assert_eq!(code, VALID, "{dataplane}: {stderr}");
    }
}

#[test]
fn fwmark_services_are_a_config_error_on_xdp() {
    let marked =
        "virtual_server fwmark 7 {\n lb_algo rr\n lb_kind DR\n real_server 10.1.0.11 0 {}\n}\n";
    let (code, _, stderr) = lbd_with(marked, &["-t", "--dataplane", "xdp"]);
    assert_eq!(code, ERRORS, "{stderr}");
    assert!(
        stderr.contains(
            "k.conf: virtual_server fwmark 7: firewall marks are set by netfilter after XDP has run, so only the kernel's IPVS can match them"
        ),
        "{stderr}"
    );
    for dataplane in ["ipvs", "auto"] {
        let (code, _, stderr) = lbd_with(marked, &["-t", "--dataplane", dataplane]);
        assert_eq!(code, VALID, "{dataplane}: {stderr}");
    }
}

#[test]
fn gue_and_gre_tunnels_are_a_config_error_on_xdp() {
    let gue = "virtual_server 192.0.2.1 80 {\n lb_algo rr\n lb_kind TUN type gue port 6080\n protocol TCP\n real_server 10.1.0.11 80 {}\n}\n";
    let (code, _, stderr) = lbd_with(gue, &["-t", "--dataplane", "xdp"]);
    assert_eq!(code, ERRORS, "{stderr}");
    assert!(
        stderr.contains(
            "k.conf: virtual_server TCP 192.0.2.1:80: lb_kind TUN type gue port 6080: the XDP data plane tunnels by IPIP and GRE without checksum only"
        ),
        "{stderr}"
    );
    for dataplane in ["ipvs", "auto"] {
        let (code, _, stderr) = lbd_with(gue, &["-t", "--dataplane", dataplane]);
        assert_eq!(code, VALID, "{dataplane}: {stderr}");
    }
    // GRE without checksum is the XDP data plane's; with one, and a real's own method
    // counts too.
    let real_gre = "virtual_server 192.0.2.1 80 {\n lb_algo rr\n lb_kind DR\n protocol TCP\n real_server 10.1.0.11 80 {\n  lvs_method TUN type gre\n }\n}\n";
    let (code, _, stderr) = lbd_with(real_gre, &["-t", "--dataplane", "xdp"]);
    assert_eq!(code, VALID, "{stderr}");
    let real_gre_csum = real_gre.replace("type gre", "type gre csum");
    let (code, _, stderr) = lbd_with(&real_gre_csum, &["-t", "--dataplane", "xdp"]);
    assert_eq!(code, ERRORS, "{stderr}");
    assert!(
        stderr.contains("virtual_server TCP 192.0.2.1:80: lb_kind TUN type gre csum: the XDP data plane tunnels by IPIP and GRE without checksum only"),
        "{stderr}"
    );
}

#[test]
fn more_than_256_least_connection_reals_are_a_config_error_on_xdp_only() {
    let mut many =
        String::from("virtual_server 192.0.2.1 80 {\n lb_algo wlc\n lb_kind DR\n protocol TCP\n");
    for i in 0..257 {
        many.push_str(&format!(
            " real_server 10.1.{}.{} 80 {{}}\n",
            i / 250,
            i % 250 + 1
        ));
    }
    many.push_str("}\n");
    let (code, _, stderr) = lbd_with(&many, &["-t", "--dataplane", "xdp"]);
    assert_eq!(code, ERRORS, "{stderr}");
    assert!(
        stderr.contains(
            "k.conf: virtual_server TCP 192.0.2.1:80: lb_algo wlc with 257 real servers: the XDP data plane compares at most 256"
        ),
        "{stderr}"
    );
    for dataplane in ["ipvs", "auto"] {
        let (code, _, stderr) = lbd_with(&many, &["-t", "--dataplane", dataplane]);
        assert_eq!(code, VALID, "{dataplane}: {stderr}");
    }
}

#[test]
fn decap_without_a_known_director_source_is_a_clear_error() {
    // Checked before anything is loaded or attached (no privilege needed to see it).
    let tun = "virtual_server 192.0.2.1 80 {\n lb_algo rr\n lb_kind TUN\n protocol TCP\n real_server 10.0.0.1 80 {}\n}\n";
    let pid = std::env::temp_dir().join(format!("lbd-cli-decap-{}.pid", std::process::id()));
    let pid = pid.display().to_string();
    let run_dir = std::env::temp_dir().join(format!("lbd-cli-decap-run-{}", std::process::id()));
    let run_dir = run_dir.display().to_string();
    let (code, _, stderr) = lbd_with(
        tun,
        &[
            "--decap",
            "lo",
            "--name",
            "lbd-cli-decap",
            "-p",
            &pid,
            "--run-dir",
            &run_dir,
        ],
    );
    let _ = std::fs::remove_dir_all(&run_dir);
    let _ = std::fs::remove_file(&pid);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("k.conf: no director tunnel source is known"),
        "{stderr}"
    );
    // A source that is not a prefix is refused by the command line.
    let (code, _, stderr) = lbd_with(tun, &["--decap", "lo", "--decap-source", "10.0.0.0/40"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("a prefix length is 0..=32 for IPv4"),
        "{stderr}"
    );
}
