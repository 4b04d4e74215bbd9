//! `cargo xtask`: tooling for this repository.
//!
//! - `setup`: install what building and testing need (idempotent) and check the kernel.
//! - `build`: build lbd and the lab.
//! - `run`: build and run lbd with the given arguments.
//! - `lab`: build and run the demo lab (README command one).
//! - `test`: everything CI checks (README command two; `.ci/run` runs it).
//! - `bench`: per-packet cost of the balancer (BPF test runs), table and JSON report.
//! - `vm`: run a command in a QEMU guest with Debian's stock kernel (IPVS, kernel 6.1).

mod cmd;
mod setup;
mod test;
mod vm;

use std::{ffi::OsString, process::ExitCode, time::Duration};

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask")]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Install missing build and test dependencies; check the kernel.
    Setup,
    /// Build lbd, lbctl and the lab binaries; write man pages and shell completions of
    /// lbd and lbctl into target/<profile>/docs.
    Build {
        #[arg(long)]
        release: bool,
    },
    /// Build lbd and run it (as root) with ARGS.
    Run {
        #[arg(long)]
        release: bool,
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Build and run the demo lab: client, director (lbd), 3 reals in network namespaces.
    Lab {
        /// Forwarding mode (dr, tun, nat).
        #[arg(long, default_value = "dr")]
        mode: String,
        /// Scheduler (rr, wrr, lc, wlc, sh, dh, sed, nq, mh, fo, ovf, twos, lblc, lblcr).
        #[arg(long, default_value = "rr")]
        sched: String,
        /// HTTP requests to send.
        #[arg(long, default_value_t = 300)]
        requests: usize,
        /// Use IPv6 for the VIP, the reals and the client.
        #[arg(long)]
        ipv6: bool,
        /// Leave the lab running and print how to explore it.
        #[arg(long)]
        keep: bool,
        /// Tear down a lab left running with --keep.
        #[arg(long, conflicts_with_all = ["keep"])]
        down: bool,
    },
    /// Run everything CI runs: fmt, clippy (host and eBPF), unit tests, test-run
    /// fixtures, netns tests.
    Test,
    /// Measure the per-packet cost (needs root); writes target/bench/report.json.
    Bench {
        /// Arguments for the bench binary (see `--help` after `--`).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Run CMD as root in a QEMU guest booted with Debian's stock kernel (it has IPVS),
    /// which sees the host's root (writes stay in the guest); exits with CMD's status.
    Vm {
        /// Kill the guest after this many seconds.
        #[arg(long, default_value_t = vm::DEFAULT_TIMEOUT_SECS, value_name = "SECS")]
        timeout: u64,
        /// Load this kernel module too (repeatable).
        #[arg(long = "module", value_name = "NAME")]
        modules: Vec<String>,
        /// The command and its arguments (after `--`).
        #[arg(last = true, required = true, value_name = "CMD")]
        command: Vec<OsString>,
    },
}

fn main() -> ExitCode {
    let result = match Args::parse().command {
        Command::Setup => setup::run(),
        Command::Build { release } => setup::ensure()
            .and_then(|()| build(release))
            .and_then(|()| write_docs(release)),
        Command::Run { release, args } => setup::ensure().and_then(|()| {
            build(release)?;
            let lbd = cmd::target_dir().join(profile(release)).join("lbd");
            cmd::run(std::process::Command::new(lbd).args(args))
        }),
        Command::Lab {
            mode,
            sched,
            requests,
            ipv6,
            keep,
            down,
        } => setup::ensure().and_then(|()| {
            build(false)?;
            let lab = cmd::target_dir().join("debug").join("lab");
            let mut command = std::process::Command::new(lab);
            if down {
                command.arg("down");
            } else {
                command.args(["--mode", &mode, "--sched", &sched]);
                command.args(["--requests", &requests.to_string()]);
                if ipv6 {
                    command.arg("--ipv6");
                }
                if keep {
                    command.arg("--keep");
                }
            }
            cmd::run(&mut command)
        }),
        Command::Test => test::run(),
        Command::Vm {
            timeout,
            modules,
            command,
        } => {
            let status = setup::ensure()
                .and_then(|()| vm::Options::new(command))
                .and_then(|options| {
                    vm::run(&vm::Options {
                        modules,
                        timeout: Duration::from_secs(timeout),
                        ..options
                    })
                });
            return match status {
                Ok(status) => ExitCode::from(status),
                Err(e) => {
                    eprintln!("xtask vm: {e:#}");
                    ExitCode::FAILURE
                }
            };
        }
        Command::Bench { args } => setup::ensure().and_then(|()| {
            // Release: the health-check row times lbd's own (userspace) code; the
            // failover rows run lbd and the lab's servers from the same directory.
            cmd::run(cmd::cargo().args([
                "build",
                "--release",
                "--package",
                "lb-tests",
                "--bin",
                "bench",
                "--bin",
                "lab",
            ]))?;
            cmd::run(cmd::cargo().args([
                "build",
                "--release",
                "--package",
                "lb-userspace",
                "--bin",
                "lbd",
            ]))?;
            let bench = cmd::target_dir().join("release").join("bench");
            let report = cmd::target_dir().join("bench").join("report.json");
            cmd::run(
                std::process::Command::new(bench)
                    .arg("--report")
                    .arg(report)
                    .args(args),
            )
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn profile(release: bool) -> &'static str {
    if release { "release" } else { "debug" }
}

/// Man pages and shell completions (bash, zsh, fish) of lbd and lbctl, from their clap
/// definitions (`--write-docs DIR`), into target/<profile>/docs.
pub fn write_docs(release: bool) -> anyhow::Result<()> {
    let dir = cmd::target_dir().join(profile(release));
    let docs = dir.join("docs");
    for binary in ["lbd", "lbctl"] {
        cmd::run(
            std::process::Command::new(dir.join(binary))
                .arg("--write-docs")
                .arg(&docs),
        )?;
    }
    eprintln!("man pages and completions in {}", docs.display());
    Ok(())
}

/// Build every binary of the default members (lbd, lbctl, lab).
fn build(release: bool) -> anyhow::Result<()> {
    let mut command = cmd::cargo();
    command.args(["build", "--bins"]);
    if release {
        command.arg("--release");
    }
    cmd::run(&mut command)
}
