//! `cargo xtask test`: what CI checks, in order, each stage timed: formatting, clippy for
//! the host crates and the eBPF crate, the binaries, every test (unit tests, the
//! configuration corpus and property test, the BPF test-run fixtures, the netns tests),
//! then in the `cargo xtask vm` guest on Debian's stock kernel (6.1) the IPVS backend end
//! to end and the fixtures and the verifier test again, and short fuzz runs of the
//! configuration reader and the VRRP and sync message decoders. The privileged tests need root; with `CI` set they fail instead of skipping.

use std::{
    ffi::OsString, os::unix::ffi::OsStringExt, path::PathBuf, process::Stdio, time::Instant,
};

use anyhow::{Context as _, bail};

use crate::{cmd, setup, vm};

/// The integration tests of lb-tests run in the VM (Debian's kernel), with their
/// arguments: the IPVS backend (this machine's kernel has no IPVS), and the XDP program
/// on a second kernel version.
const VM_TESTS: &[(&str, &[&str])] = &[
    // First, seconds after the guest booted: no test may need a clock that has run for
    // long (entries are aged relative to now, by short timeouts).
    (
        "schedulers",
        &[
            "timed_out_flows_are_scheduled_anew_and_swept",
            "lvs_timeouts_set_how_long_established_flows_last",
        ],
    ),
    ("ipvs", &["--test-threads=1"]),
    // Connection sync against the kernel's sync daemon, both ways.
    ("sync_ipvs", &["--test-threads=1", "--show-output"]),
    ("fixtures", &[]),
    // XDP's GRE into the kernel's gre device (the machines' kernel has no GRE).
    ("kernel_tunnels", &["--nocapture"]),
    ("verifier", &["--show-output"]),
];

pub fn run() -> anyhow::Result<()> {
    let started = Instant::now();
    let mut timings = Vec::new();
    let mut stage = |name: &'static str, f: &mut dyn FnMut() -> anyhow::Result<()>| {
        eprintln!("xtask test: ── {name}");
        let t = Instant::now();
        let result = f();
        timings.push((name, t.elapsed()));
        result
    };
    stage("setup", &mut setup::ensure)?;
    stage("fmt", &mut || {
        cmd::run(cmd::cargo().args(["fmt", "--all", "--", "--check"]))
    })?;
    stage("clippy (host crates)", &mut || {
        cmd::run(cmd::cargo().args(["clippy", "--all-targets", "--", "-D", "warnings"]))
    })?;
    stage("clippy (eBPF crate)", &mut || {
        let target_dir = cmd::target_dir().join("ebpf-clippy");
        cmd::run(
            std::process::Command::new("rustup")
                .current_dir(cmd::root())
                .args(["run", "nightly", "cargo", "clippy", "--package", "lb-ebpf"])
                .args(["--target", "bpfel-unknown-none", "-Z", "build-std=core"])
                .arg("--target-dir")
                .arg(target_dir)
                .args(["--", "-D", "warnings"])
                // rustup's proxy would otherwise keep the stable toolchain of xtask.
                .env_remove("RUSTUP_TOOLCHAIN")
                .env_remove("CARGO")
                .env_remove("RUSTC"),
        )
    })?;
    stage("build binaries, man pages, completions", &mut || {
        cmd::run(cmd::cargo().args(["build", "--bins"]))?;
        crate::write_docs(false)
    })?;
    stage("tests", &mut || {
        let bins = cmd::target_dir().join("debug");
        cmd::run(
            cmd::cargo()
                .args(["test", "--no-fail-fast"])
                .env("LBD_BIN", bins.join("lbd"))
                .env("LBCTL_BIN", bins.join("lbctl")),
        )
    })?;
    stage("vm: IPVS and XDP on Debian's 6.1 kernel", &mut || {
        // IPVS needs a kernel that has it. The balancer must load, and act the same, on
        // the oldest kernel we meet in practice; the verifier test prints what that
        // kernel's verifier counts.
        let names: Vec<&str> = VM_TESTS.iter().map(|(name, _)| *name).collect();
        let executables = test_executables(&names)?;
        // Each test runs even if one before failed; the status says whether any did.
        let mut script = b"status=0".to_vec();
        for (executable, (_, args)) in executables.iter().zip(VM_TESTS) {
            script.extend(b"; ");
            script.extend(vm::shell_quote(executable.as_os_str()));
            for arg in *args {
                script.push(b' ');
                script.extend(arg.as_bytes());
            }
            script.extend(b" || status=1");
        }
        script.extend(b"; exit $status");
        let script = OsString::from_vec(script);
        let mut options = vm::Options::new(vec!["sh".into(), "-c".into(), script])?;
        // Where cargo runs a package's tests; privileged tests fail instead of skipping.
        options.cwd = cmd::root().join("tests");
        options.env.push(("CI".into(), "1".into()));
        match vm::run(&options)? {
            0 => Ok(()),
            status => bail!("tests failed in the VM (exit status {status})"),
        }
    })?;
    stage("fuzz smoke (20 s + 10 s + 10 s)", &mut || {
        // The configuration reader, seeded from the golden corpus, then the VRRP and the
        // sync message decoders;
        // what the fuzzer finds goes to each crate's fuzz/corpus (not tracked).
        for (crate_name, target, seeds, seconds) in [
            ("lb-config", "parse", Some("tests/corpus"), 20),
            ("lb-vrrp", "decode", None, 10),
            ("lb-sync", "decode", None, 10),
        ] {
            let crate_dir = cmd::root().join(crate_name);
            let corpus = format!("fuzz/corpus/{target}");
            std::fs::create_dir_all(crate_dir.join(&corpus))?;
            cmd::run(
                std::process::Command::new("rustup")
                    .current_dir(&crate_dir)
                    .args(["run", "nightly", "cargo", "fuzz", "run", target, &corpus])
                    .args(seeds)
                    .arg("--")
                    .arg(format!("-max_total_time={seconds}"))
                    .env_remove("RUSTUP_TOOLCHAIN")
                    .env_remove("CARGO")
                    .env_remove("RUSTC"),
            )?;
        }
        Ok(())
    })?;
    eprintln!("xtask test: all stages passed in {:.1?}", started.elapsed());
    for (name, elapsed) in timings {
        eprintln!("    {name:<40} {elapsed:>8.1?}");
    }
    Ok(())
}

/// Build the named integration tests of lb-tests; their executables, in the same order.
fn test_executables(tests: &[&str]) -> anyhow::Result<Vec<PathBuf>> {
    let mut command = cmd::cargo();
    command.args([
        "test",
        "--package",
        "lb-tests",
        "--no-run",
        "--message-format=json",
    ]);
    for test in tests {
        command.args(["--test", test]);
    }
    eprintln!(
        "xtask: $ cargo test --package lb-tests --no-run --test {}",
        tests.join(" --test ")
    );
    let output = command
        .stderr(Stdio::inherit())
        .output()
        .context("cannot run cargo")?;
    if !output.status.success() {
        bail!("building the tests failed ({})", output.status);
    }
    let messages = String::from_utf8_lossy(&output.stdout);
    tests
        .iter()
        .map(|test| {
            // One compiler-artifact message per target, each on one line.
            let name = format!(r#""name":"{test}""#);
            messages
                .lines()
                .filter(|line| line.contains(r#""kind":["test"]"#) && line.contains(&name))
                .find_map(|line| json_string(line, "executable"))
                .map(PathBuf::from)
                .with_context(|| format!("cargo reported no executable for the test {test}"))
        })
        .collect()
}

/// The string value of `"key":"…"` in one line of JSON (paths: no escapes but `\\` and
/// `\"`).
fn json_string(line: &str, key: &str) -> Option<OsString> {
    let start = line.find(&format!(r#""{key}":""#))? + key.len() + 4;
    let mut value = String::new();
    let mut chars = line[start..].chars();
    loop {
        match chars.next()? {
            '"' => return Some(value.into()),
            '\\' => value.push(chars.next()?),
            c => value.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn executable_from_a_cargo_message() {
        let line = r#"{"reason":"compiler-artifact","target":{"kind":["test"],"name":"fixtures"},"executable":"/w/t/fixtures-1a\"b","fresh":true}"#;
        assert_eq!(
            json_string(line, "executable"),
            Some(OsString::from("/w/t/fixtures-1a\"b"))
        );
        assert_eq!(json_string(line, "missing"), None);
    }
}
