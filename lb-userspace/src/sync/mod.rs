//! Connection sync (`lvs_sync_daemon`) in lbd. `convert` turns the XDP data plane's flows
//! into IPVS's sync records and back; `socket` opens the multicast sockets as the
//! kernel's daemon does; `runner` is the daemon's thread: as master it sends the data
//! plane's events, as backup it writes what it receives with
//! `dataplane::xdp::sync_table`. The codec and the daemon's logic are in `lb-sync`. On the
//! IPVS data plane `kernel` drives the kernel's own daemon instead. `status` is what
//! either has done; `SyncHandle` is lbd's handle on either.

pub mod convert;
pub mod kernel;
pub mod runner;
pub mod socket;
pub mod status;

use std::time::Duration;

use lb_common::conn::Timeouts;

use crate::{
    dataplane::{DataplaneError, xdp::XdpDataplane},
    model::{LvsTimeouts, SyncDaemon},
    nexthop::NextHopResolver,
    vrrp::PreemptionHold,
};

/// How long a record waits for its message to fill (IPVS waits up to 2 s; a shorter wait
/// leaves a failover less to lose).
const FLUSH_AFTER: Duration = Duration::from_secs(1);

/// How often a master resends the flows active since its last walk of the table: well
/// within the shortest timeout that matters (ESTABLISHED, 900 s by default), so that a
/// backup's copy of a live flow never times out.
const REFRESH_INTERVAL: Duration = Duration::from_secs(60);

/// The largest message by default: what a 1500-byte MTU carries in one UDP datagram, as
/// the kernel's master sends (`sync_maxlen` from the MTU).
fn default_maxlen(group: std::net::IpAddr) -> usize {
    if group.is_ipv6() {
        1500 - 48
    } else {
        1500 - 28
    }
}

/// Why the sync daemon did not start.
#[derive(Debug, thiserror::Error)]
pub enum SyncStartError {
    #[error("sync sockets on {interface} for {group} port {port}: {source}")]
    Sockets {
        interface: String,
        group: std::net::IpAddr,
        port: u16,
        source: std::io::Error,
    },
    #[error("{source}")]
    Dataplane { source: DataplaneError },
    #[error("starting the sync thread: {source}")]
    Thread { source: std::io::Error },
}

/// Start the sync daemon `settings` for `dataplane` (which must write sync events,
/// `XdpOptions::sync_events`), in no role until the VRRP instance gives it one. Called in
/// the network namespace of the sync interface. Following a VRRP instance, it holds
/// preemption (`SyncRunner::preemption_hold`) for up to `resync_wait` each time this
/// director comes back as backup, until the master sent its connections (zero: never).
pub fn start<R: NextHopResolver>(
    settings: &SyncDaemon,
    lvs_timeouts: LvsTimeouts,
    resync_wait: Duration,
    dataplane: &mut XdpDataplane<R>,
) -> Result<runner::SyncRunner, SyncStartError> {
    let open = |port: u16| {
        socket::SyncSockets::open(&settings.interface, settings.group, port, settings.ttl).map_err(
            |source| SyncStartError::Sockets {
                interface: settings.interface.clone(),
                group: settings.group,
                port,
                source,
            },
        )
    };
    let sockets = open(settings.port)?;
    let resync = open(lb_sync::resync::resync_port(settings.port))?;
    let holds = settings.vrrp_instance.is_some() && !resync_wait.is_zero();
    let dataplane_error = |source| SyncStartError::Dataplane { source };
    let parts = runner::SyncParts {
        settings: lb_sync::daemon::Settings {
            syncid: settings.syncid,
            maxlen: settings
                .maxlen
                .map_or_else(|| default_maxlen(settings.group), usize::from),
            flush_after: FLUSH_AFTER,
        },
        sockets,
        resync,
        hold: PreemptionHold::new(holds),
        resync_wait,
        events: dataplane.take_sync_events().map_err(dataplane_error)?,
        table: dataplane.sync_table().map_err(dataplane_error)?,
        timeouts: Timeouts::with_set(lvs_timeouts.tcp, lvs_timeouts.tcpfin, lvs_timeouts.udp),
        refresh_interval: REFRESH_INTERVAL,
    };
    let runner =
        runner::SyncRunner::spawn(parts).map_err(|source| SyncStartError::Thread { source })?;
    if settings.vrrp_instance.is_none() {
        // No instance to follow: send and receive, as keepalived runs both daemons.
        runner.set_role(lb_sync::daemon::Role::MasterBackup);
    }
    Ok(runner)
}

/// The kernel's daemon for `settings` (the IPVS data plane), stopped first if an earlier
/// run left it, started at once when no VRRP instance is followed. Called in the network
/// namespace of the sync interface.
pub fn start_kernel(settings: &SyncDaemon) -> Result<kernel::KernelSync, kernel::KernelSyncError> {
    let config = crate::dataplane::ipvs::daemon::DaemonConfig {
        interface: settings.interface.clone(),
        syncid: settings.syncid,
        maxlen: settings.maxlen,
        group: settings.group,
        port: settings.port,
        ttl: settings.ttl,
    };
    kernel::KernelSync::start(config, settings.vrrp_instance.is_some())
}

/// lbd's handle on its sync daemon: its own on XDP, the kernel's on IPVS.
pub enum SyncHandle {
    Lbd(runner::SyncRunner),
    Kernel(kernel::KernelSync),
}

impl SyncHandle {
    /// Follow the VRRP instance: master sends, backup receives.
    pub fn set_role(&self, role: lb_sync::daemon::Role) {
        match self {
            SyncHandle::Lbd(runner) => runner.set_role(role),
            SyncHandle::Kernel(kernel) => kernel.set_role(role),
        }
    }

    /// The hold on VRRP preemption a returning director keeps until it is resynced
    /// (lbd's daemon only: the kernel's has no resync).
    pub fn preemption_hold(&self) -> PreemptionHold {
        match self {
            SyncHandle::Lbd(runner) => runner.preemption_hold(),
            SyncHandle::Kernel(_) => PreemptionHold::default(),
        }
    }

    pub fn status_source(&self) -> std::sync::Arc<std::sync::Mutex<status::SyncStatus>> {
        match self {
            SyncHandle::Lbd(runner) => runner.status_source(),
            SyncHandle::Kernel(kernel) => kernel.status_source(),
        }
    }
}

/// The daemon's role for VRRP state `state` of the instance it follows.
pub fn role_of(state: lb_vrrp::machine::State) -> lb_sync::daemon::Role {
    match state {
        lb_vrrp::machine::State::Master => lb_sync::daemon::Role::Master,
        lb_vrrp::machine::State::Backup => lb_sync::daemon::Role::Backup,
        _ => lb_sync::daemon::Role::Idle,
    }
}

/// A running daemon's status, for lbctl, the JSON view and the metrics: its settings and
/// where its thread keeps its counters.
#[derive(Clone)]
pub struct SyncSource {
    pub settings: SyncDaemon,
    pub status: std::sync::Arc<std::sync::Mutex<status::SyncStatus>>,
}

impl SyncSource {
    pub fn view(&self) -> crate::status::SyncView {
        let status = self.status.lock().map(|s| s.clone()).unwrap_or_default();
        let c = &status.counters;
        crate::status::SyncView {
            interface: self.settings.interface.clone(),
            group: self.settings.group.to_string(),
            port: self.settings.port,
            syncid: self.settings.syncid,
            vrrp_instance: self.settings.vrrp_instance.clone(),
            role: match status.role {
                lb_sync::daemon::Role::Master => "MASTER",
                lb_sync::daemon::Role::Backup => "BACKUP",
                lb_sync::daemon::Role::Idle => "IDLE",
                lb_sync::daemon::Role::MasterBackup => "MASTER+BACKUP",
            }
            .to_owned(),
            messages_sent: c.messages_sent,
            conns_sent: c.conns_sent,
            messages_received: c.messages_received,
            conns_received: c.conns_received,
            installed: status.installed,
            install_errors: status.install_errors,
            last_install_error: status.last_install_error.clone(),
            other_syncid: c.other_syncid,
            not_backup: c.not_backup,
            malformed: c.malformed,
            last_malformed: c.last_malformed.map(|e| e.to_string()),
            skipped_conns: c.skipped_conns,
            not_synced: status.not_synced,
            send_errors: status.send_errors,
            refreshed: status.refreshed,
            last_walk_error: status.last_walk_error.clone(),
            peers: status
                .peers
                .iter()
                .map(|(address, seen)| crate::status::SyncPeerView {
                    address: address.to_string(),
                    datagrams: seen.datagrams,
                    last_unix_ms: seen.last_unix_ms,
                })
                .collect(),
            holds_preemption: status.holds_preemption,
            resync_requests_sent: status.handover.requests_sent,
            resyncs_completed: status.handover.resyncs_completed,
            resyncs_timed_out: status.handover.resyncs_timed_out,
            resync_requests_served: status.handover.requests_served,
            resync_conns_served: status.resync_conns_served,
            resync_dropped: status.handover.malformed
                + status.handover.other_syncid
                + status.handover.ignored,
            last_resync_malformed: status.handover.last_malformed.map(|e| e.to_string()),
            engine: if status.kernel.is_some() {
                "kernel"
            } else {
                "lbd"
            }
            .to_owned(),
            kernel_daemons: status
                .kernel
                .as_ref()
                .map(|kernel| {
                    kernel
                        .daemons
                        .iter()
                        .map(|d| {
                            format!(
                                "{} on {}, sync id {}",
                                d.state.name(),
                                d.interface,
                                d.syncid
                            )
                        })
                        .collect()
                })
                .unwrap_or_default(),
            kernel_error: status.kernel.as_ref().and_then(|k| k.last_error.clone()),
            last_resync: status.last_resync.map(|last| {
                let (outcome, conns) = match last.outcome {
                    lb_sync::handover::Outcome::Complete { conns } => ("complete", Some(conns)),
                    lb_sync::handover::Outcome::TimedOut => ("timed out", None),
                    lb_sync::handover::Outcome::BecameMaster => ("became master", None),
                };
                crate::status::LastResyncView {
                    outcome: outcome.to_owned(),
                    conns,
                    took_ms: last.took.as_millis() as u64,
                    ended_unix_ms: last.ended_unix_ms,
                }
            }),
        }
    }
}
