//! keepalived 2.2.7 (Debian's) as a peer in a namespace: VRRP only (`-P`), logging to a
//! file the test reads; stopped gracefully on drop (SIGTERM, bounded), or killed.

use std::{
    path::{Path, PathBuf},
    process::{Child, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use crate::netns::Netns;

pub const BINARY: &str = "/usr/sbin/keepalived";

/// Whether the test may use keepalived; outside CI a missing one skips with a reason.
pub fn available(test: &str) -> bool {
    if Path::new(BINARY).exists() {
        return true;
    }
    let reason = "keepalived is not installed (`cargo xtask setup` installs it)";
    assert!(std::env::var_os("CI").is_none(), "{test}: {reason}");
    eprintln!("SKIPPED {test}: {reason}");
    false
}

pub struct Keepalived {
    child: Child,
    log: PathBuf,
    /// keepalived's VRRP process (a child of `child`) writes its pid here.
    vrrp_pid: PathBuf,
}

impl Keepalived {
    /// keepalived in `ns` with `config`, its files under `dir`.
    pub fn start(ns: &Netns, dir: &Path, config: &str) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join("keepalived.conf");
        std::fs::write(&path, config)?;
        let log = dir.join("keepalived.log");
        let vrrp_pid = dir.join("vrrp.pid");
        let child = ns
            .command(BINARY)?
            .args(["-n", "-l", "-D", "-P", "-f"])
            .arg(&path)
            .arg("-p")
            .arg(dir.join("keepalived.pid"))
            .arg("-r")
            .arg(&vrrp_pid)
            .arg("-c")
            .arg(dir.join("checkers.pid"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .spawn()
            .context("start keepalived")?;
        Ok(Self {
            child,
            log,
            vrrp_pid,
        })
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Wait until keepalived has logged `needle` `times` times.
    pub fn wait_for(&self, needle: &str, times: usize, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.log().matches(needle).count() >= times {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "keepalived did not log {needle:?} within {timeout:?}:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILL of the VRRP process, then of the parent: a crash, no handover (killing
    /// the parent alone makes the VRRP process stop gracefully).
    pub fn kill(&mut self) {
        if let Some(pid) = std::fs::read_to_string(&self.vrrp_pid)
            .ok()
            .and_then(|text| text.trim().parse::<i32>().ok())
        {
            // SAFETY: kill(2) on keepalived's VRRP process.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Keepalived {
    fn drop(&mut self) {
        if let Ok(pid) = i32::try_from(self.child.id()) {
            // SAFETY: kill(2) on our own child.
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.kill();
    }
}
