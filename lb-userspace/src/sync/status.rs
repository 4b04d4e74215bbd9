//! What a sync daemon has done, for `lbctl sync`, the JSON view and the metrics: lbd's
//! own (`runner`) counts messages, connections, resyncs and peers; with the IPVS data
//! plane (`kernel`) the kernel's daemons are listed instead.

use lb_sync::{
    daemon::{Counters, Role},
    handover::{HandoverCounters, Outcome},
};
use std::time::Duration;

use crate::dataplane::ipvs::daemon::KernelDaemon;

/// A director the daemon heard from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerSeen {
    /// Datagrams from it (sync and resync messages), and when the last came.
    pub datagrams: u64,
    pub last_unix_ms: u64,
}

/// The last resync this director asked for, for `lbctl sync`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResyncReport {
    pub outcome: Outcome,
    pub took: Duration,
    pub ended_unix_ms: u64,
}

/// What the daemon has done, for `lbctl sync` and the metrics.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyncStatus {
    pub role: Role,
    pub counters: Counters,
    /// Received connections written into the flow table, and those refused (no such
    /// service or real here), with the last reason.
    pub installed: u64,
    pub install_errors: u64,
    pub last_install_error: Option<String>,
    /// Events of flows a record cannot carry (FullNAT), not sent.
    pub not_synced: u64,
    /// Datagrams the socket would not take (a full send buffer), lost.
    pub send_errors: u64,
    /// Flows resent by the master's walks of its table, and the last walk's error.
    pub refreshed: u64,
    pub last_walk_error: Option<String>,
    /// The failback: whether VRRP's preemption is held now, the resync messages, and
    /// the last resync this director asked for.
    pub holds_preemption: bool,
    pub handover: HandoverCounters,
    pub last_resync: Option<ResyncReport>,
    /// Connections sent in answer to returning directors' requests.
    pub resync_conns_served: u64,
    /// The directors heard from, by address.
    pub peers: std::collections::BTreeMap<std::net::IpAddr, PeerSeen>,
    /// With the IPVS data plane: the kernel's daemons, which do all of the above.
    pub kernel: Option<KernelSyncStatus>,
}

/// The kernel's sync daemons as lbd drives them (`sync::kernel`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KernelSyncStatus {
    /// What the kernel said it runs, at the last change.
    pub daemons: Vec<KernelDaemon>,
    /// The last start, stop or listing that failed.
    pub last_error: Option<String>,
}

impl Default for SyncStatus {
    fn default() -> Self {
        Self {
            role: Role::Idle,
            counters: Counters::default(),
            installed: 0,
            install_errors: 0,
            last_install_error: None,
            not_synced: 0,
            send_errors: 0,
            refreshed: 0,
            last_walk_error: None,
            holds_preemption: false,
            handover: HandoverCounters::default(),
            last_resync: None,
            resync_conns_served: 0,
            peers: Default::default(),
            kernel: None,
        }
    }
}
