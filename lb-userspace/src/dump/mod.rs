//! keepalived's signal dumps, which operators' monitoring scripts read: SIGUSR1 writes the
//! running state (`keepalived.data` with the VRRP part, `keepalived_check.data` with the
//! checker part, `keepalived_parent.data` with the global part, as keepalived's three
//! processes each write theirs), SIGUSR2 the VRRP statistics (`keepalived.stats`), and
//! SIGRTMIN+2 both as JSON (`keepalived.json`), in keepalived 2.2.7's layouts as far as
//! they apply to lbd. The files go to `$TMPDIR` when it is an absolute path, else /tmp,
//! as keepalived's do, each replaced at once (written aside, then renamed) with mode 0600.
//!
//! `data` and `stats` format (sans IO); this module takes the signals and writes.

pub mod data;
pub mod stats;

use std::{
    collections::BTreeMap,
    io::Write as _,
    net::IpAddr,
    os::unix::fs::OpenOptionsExt as _,
    path::{Path, PathBuf},
};

use tokio::signal::unix::{Signal, SignalKind, signal};
use tracing::{info, warn};

use crate::{
    model::Config,
    status::{CheckStatus, CheckTable, VrrpStatus, VrrpTable},
};

/// What a signal asks to write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dump {
    /// SIGUSR1.
    Data,
    /// SIGUSR2.
    Stats,
    /// SIGRTMIN+2.
    Json,
}

/// The dump signals lbd listens to.
pub struct Signals {
    data: Signal,
    stats: Signal,
    json: Signal,
}

impl Signals {
    /// Listen (inside a tokio runtime).
    pub fn new() -> std::io::Result<Self> {
        Ok(Self {
            data: signal(SignalKind::user_defined1())?,
            stats: signal(SignalKind::user_defined2())?,
            json: signal(SignalKind::from_raw(json_signal()))?,
        })
    }

    /// The next dump asked for.
    pub async fn next(&mut self) -> Dump {
        tokio::select! {
            _ = self.data.recv() => Dump::Data,
            _ = self.stats.recv() => Dump::Stats,
            _ = self.json.recv() => Dump::Json,
        }
    }
}

/// keepalived's JSON signal: SIGRTMIN+2 (36 with glibc).
pub fn json_signal() -> i32 {
    libc::SIGRTMIN() + 2
}

/// keepalived's `--signum=NAME`: the signal that asks for NAME (STOP, RELOAD, DATA, STATS,
/// JSON).
pub fn signum(name: &str) -> Option<i32> {
    match name {
        "STOP" => Some(libc::SIGTERM),
        "RELOAD" => Some(libc::SIGHUP),
        "DATA" => Some(libc::SIGUSR1),
        "STATS" => Some(libc::SIGUSR2),
        "JSON" => Some(json_signal()),
        _ => None,
    }
}

/// What the dumps show: the running configuration and what the tables say now.
#[derive(Clone, Debug)]
pub struct Snapshot {
    pub config: Config,
    pub vrrp: Vec<VrrpStatus>,
    /// The checker table's rows, by its key (service, real, port, checker index).
    pub checks: Checks,
    /// `XDP`, `IPVS`, or none (`-P`).
    pub dataplane: Option<String>,
}

/// The rows of a `CheckTable`.
pub type Checks = BTreeMap<(String, IpAddr, u16, usize), CheckStatus>;

impl Snapshot {
    /// The running `config` with the tables' state now.
    pub fn take(
        config: &Config,
        vrrp: &VrrpTable,
        checks: &CheckTable,
        dataplane: Option<&str>,
    ) -> Self {
        let vrrp = vrrp
            .lock()
            .map(|table| table.values().cloned().collect())
            .unwrap_or_default();
        let checks = checks.lock().map(|table| table.clone()).unwrap_or_default();
        Self {
            config: config.clone(),
            vrrp,
            checks,
            dataplane: dataplane.map(str::to_owned),
        }
    }
}

/// Answer `dump` with `snapshot`, writing on a blocking thread (lbd's loop goes on).
pub fn answer(dump: Dump, snapshot: Snapshot) {
    tokio::task::spawn_blocking(move || {
        let dir = directory();
        match write(dump, &snapshot, &dir) {
            Ok(files) => {
                let names: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
                info!("{dump:?} asked for by signal: wrote {}", names.join(", "));
            }
            Err(e) => warn!("writing the {dump:?} dump into {}: {e}", dir.display()),
        }
    });
}

/// Where the dumps go: `$TMPDIR` when absolute, else /tmp.
pub fn directory() -> PathBuf {
    match std::env::var_os("TMPDIR").map(PathBuf::from) {
        Some(dir) if dir.is_absolute() => dir,
        _ => PathBuf::from("/tmp"),
    }
}

/// Write what `dump` asks for from `snapshot` into `dir`; the files written.
pub fn write(dump: Dump, snapshot: &Snapshot, dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let files: Vec<(&str, String)> = match dump {
        Dump::Data => vec![
            ("keepalived_parent.data", data::parent(snapshot)),
            ("keepalived.data", data::vrrp(snapshot)),
            ("keepalived_check.data", data::checker(snapshot)),
        ],
        Dump::Stats => vec![("keepalived.stats", stats::text(snapshot))],
        Dump::Json => vec![("keepalived.json", stats::json(snapshot))],
    };
    let mut written = Vec::new();
    for (name, text) in files {
        let path = dir.join(name);
        replace(&path, &text)?;
        written.push(path);
    }
    Ok(written)
}

/// Replace `path` with `text` at once: written aside (mode 0600), then renamed over it.
fn replace(path: &Path, text: &str) -> std::io::Result<()> {
    let aside = path.with_extension(format!("{}.tmp", std::process::id()));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&aside)?;
    file.write_all(text.as_bytes())?;
    drop(file);
    std::fs::rename(&aside, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signal_numbers_are_keepalived_ones() {
        assert_eq!(signum("DATA"), Some(10));
        assert_eq!(signum("STATS"), Some(12));
        assert_eq!(signum("RELOAD"), Some(1));
        assert_eq!(signum("STOP"), Some(15));
        assert_eq!(signum("JSON"), Some(libc::SIGRTMIN() + 2));
        assert_eq!(signum("TDUMP"), None);
    }
}
