//! `cargo xtask setup`: what building and testing need, installed when missing, and the
//! kernel features the balancer needs, checked. Idempotent: a second run installs nothing.
//! One line per item: `ok`, `installed`, or `FAILED` with the reason.

use std::{path::Path, process::Command};

use anyhow::bail;

use crate::cmd;

/// Debian packages: llvm-22-dev to build bpf-linker (rustc nightly uses LLVM 22);
/// iproute2, ethtool, ping and curl for the lab and the netns tests.
/// keepalived: the reference the configuration tests compare `lbd -t` with, and (later) the
/// VRRP peer of the interop tests; its own service is not left running.
/// qemu-system-x86 and busybox-static for `cargo xtask vm` (a guest with Debian's kernel),
/// ipvsadm, the reference for the IPVS tests in that guest. python3-aiosmtpd: the SMTP
/// server the alert tests deliver to.
const APT_PACKAGES: &[&str] = &[
    "llvm-22-dev",
    "iproute2",
    "ethtool",
    "iputils-ping",
    "curl",
    "keepalived",
    "qemu-system-x86",
    "busybox-static",
    "ipvsadm",
    "python3-aiosmtpd",
];
const BPF_LINKER_VERSION: &str = "0.13.0";
/// cargo-fuzz, for the fuzz smoke run of `cargo xtask test`.
const CARGO_FUZZ_VERSION: &str = "0.13.2";
const MIN_KERNEL: (u32, u32) = (5, 15);

/// Full setup with a report.
pub fn run() -> anyhow::Result<()> {
    let failures = check_all(true);
    if failures > 0 {
        bail!("{failures} item(s) failed; see above");
    }
    eprintln!("setup: everything is in place");
    Ok(())
}

/// Setup as a first step of other commands: quiet when all is in place.
pub fn ensure() -> anyhow::Result<()> {
    if check_all(false) > 0 {
        bail!("setup failed; see above (run `cargo xtask setup` for the full report)");
    }
    Ok(())
}

/// A check; it gets whether we run as root (installing and the kernel checks need it).
type Check = fn(bool) -> State;

enum State {
    Ok(String),
    Installed(String),
    Failed(String),
}

/// Check (and install) each item; returns the number of failures. With `verbose` every
/// item is reported, otherwise only installs and failures.
fn check_all(verbose: bool) -> usize {
    let root = is_root();
    let items: [(&str, Check); 10] = [
        ("root", check_root),
        ("apt packages", apt_packages),
        ("nightly toolchain", |_| nightly()),
        ("nightly rust-src, clippy", |_| nightly_components()),
        ("bpf-linker", |_| bpf_linker()),
        ("cargo-fuzz", |_| cargo_fuzz()),
        ("kernel version", |_| kernel_version()),
        ("kernel BTF", |_| btf()),
        ("bpf filesystem", bpffs),
        ("XDP programs", xdp),
    ];
    let mut failures = 0;
    for (name, check) in items {
        let (label, detail) = match check(root) {
            State::Ok(_) if !verbose => continue,
            State::Ok(detail) => ("ok", detail),
            State::Installed(detail) => ("installed", detail),
            State::Failed(detail) => {
                failures += 1;
                ("FAILED", detail)
            }
        };
        eprintln!("setup: [{label:^9}] {name}: {detail}");
    }
    failures
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

fn check_root(root: bool) -> State {
    if root {
        State::Ok("running as root".into())
    } else {
        State::Failed(
            "not root: loading XDP programs and network namespaces need root (sudo)".into(),
        )
    }
}

fn apt_packages(root: bool) -> State {
    let missing: Vec<&str> = APT_PACKAGES
        .iter()
        .copied()
        .filter(|package| {
            cmd::output(Command::new("dpkg-query").args(["-W", "-f=${Status}", package]))
                .map_or(true, |status| !status.contains("install ok installed"))
        })
        .collect();
    if missing.is_empty() {
        return State::Ok(APT_PACKAGES.join(" "));
    }
    if !root {
        return State::Failed(format!(
            "missing {} (installing needs root)",
            missing.join(" ")
        ));
    }
    eprintln!("setup: installing {} with apt-get", missing.join(" "));
    let installed = cmd::run(Command::new("apt-get").arg("update").arg("-q")).and_then(|()| {
        cmd::run(
            Command::new("apt-get")
                .args(["install", "-y", "-q", "--no-install-recommends"])
                .args(&missing)
                .env("DEBIAN_FRONTEND", "noninteractive"),
        )
    });
    // Debian starts keepalived's service on install; the tests run their own instances.
    if installed.is_ok()
        && missing.contains(&"keepalived")
        && Path::new("/run/systemd/system").exists()
    {
        eprintln!("setup: keepalived was just installed; stopping and disabling its service");
        let _ =
            cmd::run(Command::new("systemctl").args(["disable", "--now", "keepalived.service"]));
    }
    match installed {
        Ok(()) => State::Installed(missing.join(" ")),
        Err(e) => State::Failed(format!("{e:#}")),
    }
}

fn rustup() -> Command {
    Command::new("rustup")
}

fn nightly() -> State {
    let version = || cmd::output(rustup().args(["run", "nightly", "rustc", "--version"]));
    if let Ok(version) = version() {
        return State::Ok(version.trim().to_owned());
    }
    eprintln!("setup: installing the nightly toolchain (for the eBPF crate's -Z build-std)");
    match cmd::run(rustup().args([
        "toolchain",
        "install",
        "nightly",
        "--profile",
        "minimal",
        "-c",
        "rust-src",
        "-c",
        "clippy",
    ]))
    .and_then(|()| version())
    {
        Ok(version) => State::Installed(version.trim().to_owned()),
        Err(e) => State::Failed(format!("{e:#}")),
    }
}

fn nightly_components() -> State {
    let installed =
        cmd::output(rustup().args(["component", "list", "--toolchain", "nightly", "--installed"]))
            .unwrap_or_default();
    let missing: Vec<&str> = ["rust-src", "clippy"]
        .into_iter()
        .filter(|c| !installed.lines().any(|line| line.starts_with(c)))
        .collect();
    if missing.is_empty() {
        return State::Ok("rust-src clippy".into());
    }
    match cmd::run(
        rustup()
            .args(["component", "add", "--toolchain", "nightly"])
            .args(&missing),
    ) {
        Ok(()) => State::Installed(missing.join(" ")),
        Err(e) => State::Failed(format!("{e:#}")),
    }
}

fn cargo_fuzz() -> State {
    let version = || cmd::output(cmd::cargo().args(["fuzz", "--version"]));
    if let Ok(version) = version() {
        return State::Ok(version.trim().to_owned());
    }
    eprintln!("setup: building cargo-fuzz {CARGO_FUZZ_VERSION} (about a minute)");
    let built = cmd::run(cmd::cargo().args([
        "install",
        "cargo-fuzz",
        "--locked",
        "--version",
        CARGO_FUZZ_VERSION,
    ]))
    .and_then(|()| version());
    match built {
        Ok(version) => State::Installed(version.trim().to_owned()),
        Err(e) => State::Failed(format!("{e:#}")),
    }
}

fn bpf_linker() -> State {
    let version = || cmd::output(Command::new("bpf-linker").arg("--version"));
    if let Ok(version) = version() {
        return State::Ok(version.trim().to_owned());
    }
    eprintln!("setup: building bpf-linker {BPF_LINKER_VERSION} against LLVM 22 (about a minute)");
    let path = format!(
        "/usr/lib/llvm-22/bin:{}",
        std::env::var("PATH").unwrap_or_default()
    );
    let built = cmd::run(
        cmd::cargo()
            .args([
                "install",
                "bpf-linker",
                "--locked",
                "--version",
                BPF_LINKER_VERSION,
            ])
            .args(["--no-default-features", "--features", "llvm-22"])
            .env("PATH", path),
    )
    .and_then(|()| version());
    match built {
        Ok(version) => State::Installed(version.trim().to_owned()),
        Err(e) => State::Failed(format!("{e:#}")),
    }
}

fn kernel_version() -> State {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut numbers = release
        .trim()
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|n| n.parse::<u32>().ok());
    let version = (numbers.next().unwrap_or(0), numbers.next().unwrap_or(0));
    if version >= MIN_KERNEL {
        State::Ok(format!("Linux {}", release.trim()))
    } else {
        State::Failed(format!(
            "Linux {} is older than {}.{}",
            release.trim(),
            MIN_KERNEL.0,
            MIN_KERNEL.1
        ))
    }
}

fn btf() -> State {
    if Path::new("/sys/kernel/btf/vmlinux").exists() {
        State::Ok("/sys/kernel/btf/vmlinux".into())
    } else {
        State::Failed(
            "no /sys/kernel/btf/vmlinux (kernel built without CONFIG_DEBUG_INFO_BTF)".into(),
        )
    }
}

const BPF_FS_MAGIC: i64 = 0xcafe4a11;

fn bpffs(root: bool) -> State {
    let is_bpffs = || {
        // SAFETY: statfs fills the zeroed struct we own; the path is NUL-terminated.
        unsafe {
            let mut stat: libc::statfs = std::mem::zeroed();
            libc::statfs(c"/sys/fs/bpf".as_ptr(), &mut stat) == 0
                && stat.f_type as i64 == BPF_FS_MAGIC
        }
    };
    if is_bpffs() {
        return State::Ok("mounted on /sys/fs/bpf".into());
    }
    if !root {
        return State::Failed("not mounted on /sys/fs/bpf (mounting needs root)".into());
    }
    // SAFETY: all pointers are valid NUL-terminated strings.
    let rc = unsafe {
        libc::mount(
            c"bpf".as_ptr(),
            c"/sys/fs/bpf".as_ptr(),
            c"bpf".as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc == 0 && is_bpffs() {
        State::Installed("mounted on /sys/fs/bpf".into())
    } else {
        State::Failed(format!(
            "mount -t bpf on /sys/fs/bpf: {}",
            std::io::Error::last_os_error()
        ))
    }
}

/// Load a two-instruction XDP program (`r0 = XDP_PASS; exit`) with the bpf syscall.
fn xdp(root: bool) -> State {
    if !root {
        return State::Failed("cannot check without root".into());
    }
    const BPF_PROG_LOAD: libc::c_long = 5;
    const BPF_PROG_TYPE_XDP: u32 = 6;
    let instructions: [u64; 2] = [
        // BPF_ALU64 | BPF_MOV | BPF_K, dst r0, imm 2 (XDP_PASS)
        u64::from_le_bytes([0xb7, 0, 0, 0, 2, 0, 0, 0]),
        // BPF_JMP | BPF_EXIT
        u64::from_le_bytes([0x95, 0, 0, 0, 0, 0, 0, 0]),
    ];
    let license = c"GPL";
    // union bpf_attr for BPF_PROG_LOAD: prog_type, insn_cnt, insns, license, rest zero.
    let mut attr = [0u8; 128];
    attr[0..4].copy_from_slice(&BPF_PROG_TYPE_XDP.to_ne_bytes());
    attr[4..8].copy_from_slice(&(instructions.len() as u32).to_ne_bytes());
    attr[8..16].copy_from_slice(&(instructions.as_ptr() as u64).to_ne_bytes());
    attr[16..24].copy_from_slice(&(license.as_ptr() as u64).to_ne_bytes());
    // SAFETY: attr is a valid bpf_attr prefix; the pointers in it outlive the call.
    let fd = unsafe { libc::syscall(libc::SYS_bpf, BPF_PROG_LOAD, attr.as_ptr(), attr.len()) };
    if fd < 0 {
        return State::Failed(format!(
            "the kernel refused a trivial XDP program: {}",
            std::io::Error::last_os_error()
        ));
    }
    // SAFETY: fd was just returned to us.
    unsafe { libc::close(fd as libc::c_int) };
    State::Ok("a test program loads".into())
}
