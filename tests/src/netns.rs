//! Network namespaces made by a test or the lab. Each is deleted when its guard drops (also
//! when a test panics), after killing what still runs inside; leftovers of a crashed run
//! are removed by prefix before a new run starts.

use std::{
    ffi::OsStr,
    fs::File,
    io,
    os::{fd::AsRawFd, unix::process::CommandExt},
    process::Command,
    thread,
};

use anyhow::{Context as _, bail};

/// Run `command`; its stdout, or an error with its stderr.
pub fn run(command: &mut Command) -> anyhow::Result<String> {
    let output = command
        .output()
        .with_context(|| format!("cannot run {command:?}"))?;
    if !output.status.success() {
        bail!(
            "{command:?} failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// `ip ARGS`.
pub fn ip(args: &[&str]) -> anyhow::Result<String> {
    run(Command::new("ip").args(args))
}

pub struct Netns {
    name: String,
}

impl Netns {
    /// Create namespace `name` (replacing a leftover of the same name) with `lo` up.
    pub fn create(name: &str) -> anyhow::Result<Self> {
        if list()?.iter().any(|n| n == name) {
            delete(name);
        }
        ip(&["netns", "add", name])?;
        let ns = Self {
            name: name.to_owned(),
        };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `ip -n NAME ARGS`.
    pub fn ip(&self, args: &[&str]) -> anyhow::Result<String> {
        let mut full = vec!["-n", &self.name];
        full.extend_from_slice(args);
        ip(&full)
    }

    /// Run a program inside: `ip netns exec NAME ARGS`.
    pub fn exec(&self, args: &[&str]) -> anyhow::Result<String> {
        let mut full = vec!["netns", "exec", &self.name];
        full.extend_from_slice(args);
        ip(&full)
    }

    /// Set a sysctl inside.
    pub fn sysctl(&self, key: &str, value: &str) -> anyhow::Result<()> {
        self.exec(&["sysctl", "-q", "-w", &format!("{key}={value}")])
            .map(drop)
    }

    /// A command that runs `program` in this network namespace (see [`command_in`]).
    pub fn command(&self, program: impl AsRef<OsStr>) -> anyhow::Result<Command> {
        command_in(&self.name, program)
    }

    /// Run `f` on a thread inside this namespace: sockets it creates belong here.
    pub fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
    ) -> anyhow::Result<T> {
        let file = self.file()?;
        thread::spawn(move || {
            // SAFETY: plain syscall on a valid fd; affects only this new thread.
            if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                return Err(io::Error::last_os_error()).context("setns");
            }
            f()
        })
        .join()
        .map_err(|_| anyhow::anyhow!("thread in namespace panicked"))?
    }

    /// Start `f` on a thread inside this namespace and return at once.
    pub fn spawn<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
    ) -> anyhow::Result<thread::JoinHandle<anyhow::Result<T>>> {
        let file = self.file()?;
        Ok(thread::spawn(move || {
            // SAFETY: plain syscall on a valid fd; affects only this new thread.
            if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                return Err(io::Error::last_os_error()).context("setns");
            }
            f()
        }))
    }

    fn file(&self) -> anyhow::Result<File> {
        open(&self.name)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        delete(&self.name);
    }
}

fn open(name: &str) -> anyhow::Result<File> {
    File::open(format!("/run/netns/{name}")).with_context(|| format!("open namespace {name}"))
}

/// A command that runs `program` in network namespace `name` only: the mount namespace
/// stays the host's (unlike `ip netns exec`), so `/sys/fs/bpf` is the host's bpffs.
pub fn command_in(name: &str, program: impl AsRef<OsStr>) -> anyhow::Result<Command> {
    let file = open(name)?;
    let mut command = Command::new(program);
    // SAFETY: the closure only calls setns, which is async-signal-safe.
    unsafe {
        command.pre_exec(move || {
            if libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    Ok(command)
}

/// Names of all network namespaces.
pub fn list() -> anyhow::Result<Vec<String>> {
    Ok(ip(&["netns", "list"])?
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .map(str::to_owned)
        .collect())
}

/// Kill what runs in namespace `name` and delete it; errors are ignored (best effort).
pub fn delete(name: &str) {
    if let Ok(pids) = ip(&["netns", "pids", name]) {
        for pid in pids
            .split_whitespace()
            .filter_map(|p| p.parse::<i32>().ok())
        {
            // SAFETY: plain syscall.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
    let _ = ip(&["netns", "del", name]);
}

/// Delete every namespace whose name starts with `prefix` (leftovers of a crashed run).
pub fn remove_leftovers(prefix: &str) -> anyhow::Result<()> {
    for name in list()? {
        if name.starts_with(prefix) {
            delete(&name);
        }
    }
    Ok(())
}
