//! `cargo xtask vm -- CMD [ARGS...]`: run a command as root in a QEMU guest that boots
//! Debian's stock kernel (for IPVS, which the build machines' kernel lacks, and for a
//! second kernel version). The guest sees the host's root (read-only over 9p, writable
//! through an overlay on tmpfs), so it runs the host's own binaries in the caller's
//! directory; the command's stdout and stderr come back to ours, its exit status is ours.
//!
//! - `vm/kernel.rs`: fetch, cache and unpack the kernel package; vmlinux from vmlinuz.
//! - `vm/initramfs.rs`: the initramfs: busybox, modules in load order, `/init`.
//! - `vm/init.sh`: the guest's `/init`: modules, mounts, chroot into the host's root, run
//!   the job, write its exit status, power off.
//! - `vm/cpio.rs`: the newc cpio writer for the initramfs.
//! - `vm/qemu.rs`: run qemu, copy the serial ports out, the boot time, the timeout.

mod cpio;
mod initramfs;
mod kernel;
mod qemu;

use std::{
    ffi::{OsStr, OsString},
    fs,
    os::unix::ffi::OsStrExt as _,
    path::PathBuf,
    time::Duration,
};

use anyhow::{Context as _, bail};

/// The caller's environment variables the guest command gets (plus every `LB_*`).
const PASSED_ENV: &[&str] = &[
    "PATH",
    "HOME",
    "USER",
    "CI",
    "RUST_BACKTRACE",
    "RUST_LOG",
    "RUST_TEST_THREADS",
    "NO_COLOR",
    "LBD_BIN",
    "LBCTL_BIN",
];
/// Directories the guest mounts fresh: a caller's directory under them is not there.
/// (/tmp is the host's, writable through the overlay like the rest.)
const FRESH_IN_GUEST: &[&str] = &["/run", "/proc", "/sys", "/dev"];
/// Set (to 1) for the guest command: tests that need what only the guest has (IPVS) fail
/// there instead of skipping (`lb_tests::privilege::IN_VM`).
const IN_VM: &str = "LB_IN_VM";
/// `--timeout`'s default.
pub const DEFAULT_TIMEOUT_SECS: u64 = 900;
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// What to run in the guest.
pub struct Options {
    pub command: Vec<OsString>,
    /// Where the command starts (the caller's directory for `cargo xtask vm`).
    pub cwd: PathBuf,
    /// Set in the guest in addition to (or instead of) the caller's variables.
    pub env: Vec<(OsString, OsString)>,
    /// Modules to load in addition to the usual ones.
    pub modules: Vec<String>,
    pub timeout: Duration,
}

impl Options {
    /// `command` in the caller's directory, with the default timeout.
    pub fn new(command: Vec<OsString>) -> anyhow::Result<Self> {
        Ok(Self {
            command,
            cwd: std::env::current_dir().context("no current directory")?,
            env: Vec::new(),
            modules: Vec::new(),
            timeout: Duration::from_secs(DEFAULT_TIMEOUT_SECS),
        })
    }
}

/// Boot the guest, run the command; its exit status (0-255).
pub fn run(options: &Options) -> anyhow::Result<u8> {
    if options.command.is_empty() {
        bail!("no command to run in the guest");
    }
    if let Some(fresh) = FRESH_IN_GUEST
        .iter()
        .find(|dir| options.cwd.starts_with(dir))
    {
        bail!(
            "cannot start in {}: the guest mounts its own {fresh}",
            options.cwd.display()
        );
    }
    let kernel = kernel::prepare()?;
    let run_dir = RunDir::create()?;
    let initramfs = run_dir.0.join("initramfs.cpio");
    let share = run_dir.0.join("share");
    fs::create_dir(&share)?;
    fs::write(&initramfs, initramfs::build(&kernel, &options.modules)?)?;
    fs::write(share.join("job"), job(options))?;
    eprintln!(
        "vm: booting Linux {} (qemu, TCG) to run {}",
        kernel.release,
        describe(&options.command)
    );
    let ended = qemu::Guest {
        kernel: &kernel,
        initramfs: &initramfs,
        share: &share,
        timeout: options.timeout,
    }
    .run()?;
    let status = match fs::read_to_string(share.join("status")) {
        Ok(status) => status
            .trim()
            .parse::<u8>()
            .with_context(|| format!("bad exit status from the guest: {status:?}"))?,
        Err(_) => bail!(
            "qemu exited ({}) without the guest command's exit status; {}",
            ended.qemu,
            ended.console
        ),
    };
    if status != 0 {
        eprintln!(
            "vm: {} exited with status {status}",
            describe(&options.command)
        );
    }
    Ok(status)
}

/// The job for the guest's /bin/sh (the host's): the caller's directory, a clean
/// environment with what matters, the command.
fn job(options: &Options) -> Vec<u8> {
    let mut env: Vec<(OsString, OsString)> = std::env::vars_os()
        .filter(|(name, _)| {
            let name = name.to_string_lossy();
            PASSED_ENV.contains(&name.as_ref()) || name.starts_with("LB_")
        })
        .collect();
    if !env.iter().any(|(name, _)| name == "PATH") {
        env.push(("PATH".into(), DEFAULT_PATH.into()));
    }
    let in_vm = (OsString::from(IN_VM), OsString::from("1"));
    for (name, value) in options.env.iter().chain([&in_vm]) {
        env.retain(|(existing, _)| existing != name);
        env.push((name.clone(), value.clone()));
    }
    let cwd = shell_quote(options.cwd.as_os_str());
    let mut job = b"cd ".to_vec();
    job.extend(&cwd);
    job.extend(b" || { echo \"vm: the guest has no directory \"");
    job.extend(&cwd);
    job.extend(b" >&2; exit 125; }\nexec /usr/bin/env -i");
    for (name, value) in env {
        let mut assignment = name;
        assignment.push("=");
        assignment.push(value);
        job.push(b' ');
        job.extend(shell_quote(&assignment));
    }
    for arg in &options.command {
        job.push(b' ');
        job.extend(shell_quote(arg));
    }
    job.push(b'\n');
    job
}

/// `'text'` for sh, byte for byte.
pub fn shell_quote(text: &OsStr) -> Vec<u8> {
    let mut quoted = vec![b'\''];
    for &byte in text.as_bytes() {
        if byte == b'\'' {
            quoted.extend(b"'\\''");
        } else {
            quoted.push(byte);
        }
    }
    quoted.push(b'\'');
    quoted
}

fn describe(command: &[OsString]) -> String {
    let words: Vec<_> = command.iter().map(|w| w.to_string_lossy()).collect();
    format!("`{}`", words.join(" "))
}

/// This run's files (initramfs, the share), removed at the end (and by a later run if
/// this one was killed).
struct RunDir(PathBuf);

impl RunDir {
    fn create() -> anyhow::Result<Self> {
        Self::remove_stale();
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .subsec_nanos();
        let path: PathBuf =
            std::env::temp_dir().join(format!("lb-vm-{}-{nanos:09}", std::process::id()));
        fs::create_dir(&path).with_context(|| format!("cannot create {}", path.display()))?;
        Ok(Self(path))
    }
}

impl RunDir {
    /// Directories of runs whose process is gone.
    fn remove_stale() {
        let Ok(entries) = fs::read_dir(std::env::temp_dir()) else {
            return;
        };
        for entry in entries.filter_map(Result::ok) {
            let name = entry.file_name();
            let Some(pid) = name
                .to_str()
                .and_then(|name| name.strip_prefix("lb-vm-"))
                .and_then(|rest| rest.split('-').next())
            else {
                continue;
            };
            if !pid.is_empty() && !std::path::Path::new("/proc").join(pid).exists() {
                let _ = fs::remove_dir_all(entry.path());
            }
        }
    }
}

impl Drop for RunDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_survives_quotes() {
        assert_eq!(shell_quote(OsStr::new("it's")), b"'it'\\''s'");
    }

    #[test]
    fn the_job_changes_directory_and_runs_the_command() {
        let options = Options {
            command: vec!["sh".into(), "-c".into(), "echo $X".into()],
            cwd: "/work/main".into(),
            env: vec![("X".into(), "1".into())],
            modules: Vec::new(),
            timeout: Duration::from_secs(1),
        };
        let job = String::from_utf8(job(&options)).expect("utf-8");
        assert!(job.starts_with("cd '/work/main' || "), "{job}");
        assert!(
            job.contains(" 'X=1' 'LB_IN_VM=1' 'sh' '-c' 'echo $X'\n"),
            "{job}"
        );
    }
}
