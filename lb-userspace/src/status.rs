//! What lbd knows beyond the maps: the state and counters of each VRRP instance and of
//! each checker. The tasks update these tables as they work; lbd serves them to lbctl
//! (control API) and to Prometheus (metrics), and writes them to a status file that lbctl
//! reads while lbd is stopped.

use std::{
    collections::BTreeMap,
    net::IpAddr,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use serde::{Deserialize, Serialize};

/// Milliseconds since the Unix epoch, now.
pub fn now_unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Counters of a VRRP instance, named after keepalived's (`show vrrp stats`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VrrpCounters {
    pub adverts_received: u64,
    pub adverts_sent: u64,
    pub became_master: u64,
    pub released_master: u64,
    pub priority_zero_received: u64,
    pub priority_zero_sent: u64,
    /// Packets the decoder refused (length, checksum, type, ...).
    pub invalid_packets: u64,
    /// Adverts with a TTL / hop limit other than 255.
    pub ttl_errors: u64,
    /// Adverts of another VRRP version.
    pub version_errors: u64,
    /// VRRPv2 adverts with a wrong password.
    pub auth_errors: u64,
    /// State changes, all kinds.
    pub transitions: u64,
}

/// One VRRP instance as it runs.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VrrpStatus {
    pub name: String,
    pub interface: String,
    pub vrid: u8,
    pub version: u8,
    /// INIT, BACKUP, MASTER or FAULT (keepalived's words).
    pub state: String,
    /// The priority in effect (tracking applied).
    pub priority: u8,
    pub configured_priority: u8,
    /// The current master's address: this director's when it is master, the sender of
    /// the adverts it follows when backup; none before the first advert.
    pub master: Option<IpAddr>,
    pub vips: Vec<IpAddr>,
    /// When the instance entered its state (ms since the epoch).
    pub since_unix_ms: u64,
    pub counters: VrrpCounters,
}

/// Upper bounds (seconds) of the probe latency histogram buckets.
pub const LATENCY_BUCKETS: [f64; 10] =
    [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0];

/// One checker of one real.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CheckStatus {
    /// The virtual service, `TCP 10.0.0.100:80`.
    pub service: String,
    pub real: IpAddr,
    pub port: u16,
    /// Which of the real's checkers (0-based, in configuration order).
    pub index: usize,
    /// keepalived's keyword: TCP_CHECK, HTTP_GET, ...
    pub kind: String,
    /// The checker's verdict (retries spent): up or down.
    pub up: bool,
    /// When the verdict last changed, or the checker started (ms since the epoch).
    pub since_unix_ms: u64,
    /// The last probe's result: `ok` or why it failed; none before the first probe.
    pub last_result: Option<String>,
    pub last_probe_unix_ms: Option<u64>,
    /// Failed probes in a row.
    pub consecutive_failures: u32,
    pub probes: u64,
    pub failures: u64,
    /// Probe durations: count per `LATENCY_BUCKETS` bound (not cumulative) and above the
    /// last, and their sum.
    pub latency_buckets: Vec<u64>,
    pub latency_sum_seconds: f64,
}

impl Default for CheckStatus {
    fn default() -> Self {
        Self {
            service: String::new(),
            real: IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
            port: 0,
            index: 0,
            kind: String::new(),
            up: false,
            since_unix_ms: 0,
            last_result: None,
            last_probe_unix_ms: None,
            consecutive_failures: 0,
            probes: 0,
            failures: 0,
            latency_buckets: Vec::new(),
            latency_sum_seconds: 0.0,
        }
    }
}

impl CheckStatus {
    /// Take one probe that lasted `latency` and passed (`None`) or failed (the reason).
    pub fn record_probe(&mut self, latency: Duration, failure: Option<&str>, now_ms: u64) {
        self.probes += 1;
        self.last_probe_unix_ms = Some(now_ms);
        match failure {
            None => {
                self.consecutive_failures = 0;
                self.last_result = Some("ok".to_owned());
            }
            Some(reason) => {
                self.failures += 1;
                self.consecutive_failures += 1;
                self.last_result = Some(reason.to_owned());
            }
        }
        if self.latency_buckets.len() != LATENCY_BUCKETS.len() + 1 {
            self.latency_buckets = vec![0; LATENCY_BUCKETS.len() + 1];
        }
        let secs = latency.as_secs_f64();
        let bucket = LATENCY_BUCKETS
            .iter()
            .position(|bound| secs <= *bound)
            .unwrap_or(LATENCY_BUCKETS.len());
        self.latency_buckets[bucket] += 1;
        self.latency_sum_seconds += secs;
    }

    /// Take a verdict change to `up`.
    pub fn record_verdict(&mut self, up: bool, now_ms: u64) {
        if up != self.up {
            self.up = up;
            self.since_unix_ms = now_ms;
        }
    }
}

/// Everything lbd reports about itself.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Status {
    pub pid: u32,
    /// The instance name (`--name`).
    pub instance: String,
    pub config_file: String,
    /// The data plane running (none with lbd -P).
    #[serde(default)]
    pub dataplane: Option<crate::dataplane::backend::DataplaneStatus>,
    /// Runtime changes (lbctl) not in the configuration file.
    pub unsaved_changes: Vec<String>,
    pub vrrp: Vec<VrrpStatus>,
    pub checks: Vec<CheckStatus>,
    /// Connection sync (`lvs_sync_daemon`), when it runs.
    #[serde(default)]
    pub sync: Option<SyncView>,
    /// When this was taken (ms since the epoch).
    pub taken_unix_ms: u64,
}

/// Connection sync (`lvs_sync_daemon`): its settings, role and counters, for `lbctl sync`,
/// the JSON view and the metrics.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncView {
    pub interface: String,
    pub group: String,
    pub port: u16,
    pub syncid: u8,
    pub vrrp_instance: Option<String>,
    /// MASTER (sending), BACKUP (receiving) or IDLE.
    pub role: String,
    pub messages_sent: u64,
    pub conns_sent: u64,
    pub messages_received: u64,
    pub conns_received: u64,
    /// Received connections written into the flow table, and those refused.
    pub installed: u64,
    pub install_errors: u64,
    pub last_install_error: Option<String>,
    /// Messages dropped: another sync id, received while not backup, malformed.
    pub other_syncid: u64,
    pub not_backup: u64,
    pub malformed: u64,
    pub last_malformed: Option<String>,
    /// Records skipped alone (as the kernel skips them).
    pub skipped_conns: u64,
    /// Flows a record cannot carry (FullNAT), not sent.
    pub not_synced: u64,
    pub send_errors: u64,
    /// Flows resent by the master's walks of its table, and the last walk's error.
    pub refreshed: u64,
    pub last_walk_error: Option<String>,
    /// The directors heard from (sync and resync messages).
    #[serde(default)]
    pub peers: Vec<SyncPeerView>,
    /// The failback: whether VRRP's preemption is held now (this director waits for the
    /// master's connections); the resync requests sent and how they ended; the requests
    /// this director answered as master and the connections it sent for them; resync
    /// messages dropped (malformed, another sync id, not for this director).
    #[serde(default)]
    pub holds_preemption: bool,
    #[serde(default)]
    pub resync_requests_sent: u64,
    #[serde(default)]
    pub resyncs_completed: u64,
    #[serde(default)]
    pub resyncs_timed_out: u64,
    #[serde(default)]
    pub resync_requests_served: u64,
    #[serde(default)]
    pub resync_conns_served: u64,
    #[serde(default)]
    pub resync_dropped: u64,
    #[serde(default)]
    pub last_resync_malformed: Option<String>,
    #[serde(default)]
    pub last_resync: Option<LastResyncView>,
    /// Whose daemon syncs: "lbd" (lbd's own, on XDP) or "kernel" (the kernel's, on
    /// IPVS); for the kernel's, the daemons it runs ("master on eth0, sync id 51") and
    /// the last failure to start or stop one.
    #[serde(default)]
    pub engine: String,
    #[serde(default)]
    pub kernel_daemons: Vec<String>,
    #[serde(default)]
    pub kernel_error: Option<String>,
}

/// A director the sync daemon heard from.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncPeerView {
    pub address: String,
    pub datagrams: u64,
    pub last_unix_ms: u64,
}

/// How the last resync this director asked for ended.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastResyncView {
    /// "complete", "timed out" or "became master".
    pub outcome: String,
    /// The connections the master said it sent (complete only).
    pub conns: Option<u32>,
    pub took_ms: u64,
    pub ended_unix_ms: u64,
}

/// The VRRP table the instances write (by name).
pub type VrrpTable = Arc<Mutex<BTreeMap<String, VrrpStatus>>>;

/// The checker table the checker tasks write (by service, real, port, index).
/// The data plane's upkeep (the XDP flow table's scans), kept by the data-plane thread.
pub type UpkeepTable = Arc<Mutex<Option<crate::dataplane::UpkeepStats>>>;

pub type CheckTable = Arc<Mutex<BTreeMap<(String, IpAddr, u16, usize), CheckStatus>>>;

/// The rows of a status table, in key order (a poisoned lock still gives its rows).
pub fn rows<K, V: Clone>(table: &Mutex<BTreeMap<K, V>>) -> Vec<V> {
    table
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .values()
        .cloned()
        .collect()
}

/// Where lbd writes its status for lbctl, under the instance's run directory.
pub fn status_file(run_dir: &Path) -> PathBuf {
    run_dir.join("status.json")
}

/// lbd's run directory for an instance: its control socket and status file.
pub fn run_dir(instance: &str) -> PathBuf {
    PathBuf::from("/run/lbd").join(instance)
}

/// Write `status` to `path` atomically (a temporary file renamed over it).
pub fn write_status(path: &Path, status: &Status) -> std::io::Result<()> {
    let json = serde_json::to_vec_pretty(status).map_err(std::io::Error::other)?;
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, json)?;
    std::fs::rename(&tmp, path)
}

/// The status lbd last wrote to `path`.
pub fn read_status(path: &Path) -> Result<Status, String> {
    let text = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    serde_json::from_slice(&text).map_err(|e| format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probes_fill_counters_and_latency_buckets() {
        let mut status = CheckStatus::default();
        status.record_probe(Duration::from_micros(800), None, 10);
        status.record_probe(Duration::from_millis(30), Some("refused"), 20);
        status.record_probe(Duration::from_secs(3), Some("timeout"), 30);
        assert_eq!(
            (status.probes, status.failures, status.consecutive_failures),
            (3, 2, 2)
        );
        assert_eq!(status.last_result.as_deref(), Some("timeout"));
        assert_eq!(status.latency_buckets, [1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1]);
        status.record_probe(Duration::from_millis(2), None, 40);
        assert_eq!(status.consecutive_failures, 0);
        status.record_verdict(true, 50);
        assert_eq!(status.since_unix_ms, 50);
        status.record_verdict(true, 60);
        assert_eq!(status.since_unix_ms, 50, "no change, no new since");
    }

    #[test]
    fn status_files_round_trip() {
        let dir = std::env::temp_dir().join(format!("lb-status-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = status_file(&dir);
        let status = Status {
            pid: 7,
            instance: "lbd".into(),
            dataplane: Some(crate::dataplane::backend::DataplaneStatus {
                kind: crate::dataplane::backend::DataplaneKind::Ipvs,
                fallback_reason: Some("cannot attach XDP to eth0".into()),
            }),
            vrrp: vec![VrrpStatus {
                name: "VI_1".into(),
                state: "MASTER".into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        write_status(&path, &status).unwrap();
        assert_eq!(read_status(&path).unwrap(), status);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
