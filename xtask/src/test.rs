//! `cargo xtask test`: what CI checks, in order, each stage timed: formatting, clippy for
//! the host crates and the eBPF crate, the binaries, every test (unit tests, the
//! configuration corpus and property test, the BPF test-run fixtures, the netns tests),
//! and short fuzz runs of the configuration reader and the VRRP decoder. The privileged
//! tests need root; with `CI` set they fail instead of skipping.

use std::time::Instant;

use crate::{cmd, setup};

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
    stage("fuzz smoke (20 s + 10 s)", &mut || {
        // The configuration reader, seeded from the golden corpus, then the VRRP decoder;
        // what the fuzzer finds goes to each crate's fuzz/corpus (not tracked).
        for (crate_name, target, seeds, seconds) in [
            ("lb-config", "parse", Some("tests/corpus"), 20),
            ("lb-vrrp", "decode", None, 10),
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
        eprintln!("    {name:<22} {elapsed:>8.1?}");
    }
    Ok(())
}
