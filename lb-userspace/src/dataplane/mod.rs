//! Data-plane backends behind one trait. The controller computes the desired state (the
//! services with the reals that may take traffic and their effective weights) and hands
//! all of it to `apply`, which reconciles the backend with it: adds, changes and removes
//! whatever differs, and leaves established flows alone.
//!
//! Backends: `xdp` (the XDP programs in lb-ebpf), `ipvs` (the kernel's IPVS over generic
//! netlink) and `fake` (in memory, for tests of the controller).

pub mod actor;
pub mod backend;
pub mod diff;
pub mod fake;
pub mod ipvs;
pub mod xdp;

use std::net::IpAddr;

use lb_common::{Outcome, conn::Timeouts};
use serde::Serialize;

use crate::model::{ForwardMethod, Persistence, Protocol, SchedFlags, Scheduler, TunnelType};

/// Everything the data plane should carry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DesiredState {
    pub services: Vec<ServiceSpec>,
    /// Connection timeouts per state.
    pub timeouts: Timeouts,
}

/// One virtual service as the data plane should carry it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceSpec {
    /// The VIP (unspecified for a firewall-mark service).
    pub addr: IpAddr,
    /// 0 for a firewall-mark service.
    pub port: u16,
    pub protocol: Protocol,
    /// `virtual_server fwmark N`: only the IPVS backend carries these.
    pub fwmark: Option<u32>,
    pub scheduler: Scheduler,
    pub sched_flags: SchedFlags,
    pub persistence: Option<Persistence>,
    /// `ops`: schedule every datagram on its own.
    pub one_packet: bool,
    pub forward: ForwardMethod,
    /// FullNAT: the local address pool (empty for the other methods).
    pub local_addresses: Vec<IpAddr>,
    /// TUN: the outer source per family (the virtual server's, then the global ones);
    /// for a family without one, the route's preferred source towards the real.
    pub tun_sources: Vec<IpAddr>,
    /// TUN: IPIP, or GUE and GRE, which only the IPVS backend has.
    pub tunnel: TunnelType,
    pub reals: Vec<RealSpec>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RealSpec {
    pub addr: IpAddr,
    pub port: u16,
    /// Effective weight; 0 takes no new flows.
    pub weight: u32,
    /// `uthreshold` and `lthreshold` (0: none): only IPVS has connection limits.
    pub upper_threshold: u32,
    pub lower_threshold: u32,
    /// The real's own forwarding method (`real_server lvs_method`); `None` follows the
    /// service (`ServiceSpec::forwarding`).
    pub lvs_method: Option<(ForwardMethod, TunnelType)>,
}

impl ServiceSpec {
    /// How `real` is forwarded to: its own method, else the service's.
    pub fn forwarding(&self, real: &RealSpec) -> (ForwardMethod, TunnelType) {
        real.lvs_method.unwrap_or((self.forward, self.tunnel))
    }

    /// Whether some real is forwarded to by `method` (a service without reals: by its
    /// own).
    pub fn forwards_by(&self, method: ForwardMethod) -> bool {
        self.methods().any(|(m, _)| m == method)
    }

    /// How each real is forwarded (a service without reals: by its own method); the
    /// sorry server, when in use, is one of the reals here.
    fn methods(&self) -> impl Iterator<Item = (ForwardMethod, TunnelType)> + '_ {
        let alone = self.reals.is_empty().then_some((self.forward, self.tunnel));
        self.reals
            .iter()
            .map(|real| self.forwarding(real))
            .chain(alone)
    }

    /// Whether some real's replies come back through the director (NAT, FullNAT).
    pub fn translates_replies(&self) -> bool {
        self.forwards_by(ForwardMethod::Nat) || self.forwards_by(ForwardMethod::FullNat)
    }

    /// The tunnels the service's reals are forwarded by (as `VirtualServer::tunnels`).
    pub fn tunnels(&self) -> impl Iterator<Item = TunnelType> + '_ {
        self.methods()
            .filter(|&(method, _)| method == ForwardMethod::Tun)
            .map(|(_, tunnel)| tunnel)
    }
}

/// What an `apply` could not do fully; the rest was applied.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ApplyReport {
    /// Reals left out of scheduling because their next hop is unknown, with the reason.
    /// Retried on the next apply.
    pub unresolved: Vec<(IpAddr, String)>,
    /// Reals left out of scheduling while their next hop is being resolved (ARP/NDP
    /// probes sent): they join at an apply at or after `retry_at`.
    pub pending: Vec<IpAddr>,
    /// When to apply again to finish what this apply could not do yet (a next hop being
    /// resolved, a table waiting for arena space): `None` if nothing waits.
    pub retry_at: Option<std::time::Instant>,
    /// Services whose wrr weights had to be scaled down to fit the longest sequence.
    pub scaled: Vec<(IpAddr, u16)>,
    /// The updates from the previous desired state (set by the controller).
    pub changes: Vec<diff::Change>,
}

impl ApplyReport {
    /// Real `addr` takes no new flows: `reason`.
    pub fn unresolve(&mut self, addr: IpAddr, reason: String) {
        if !self.unresolved.iter().any(|(a, _)| *a == addr) {
            self.unresolved.push((addr, reason));
        }
    }

    /// Apply again at `at` (or earlier, if something else asked for that).
    pub fn retry_at(&mut self, at: std::time::Instant) {
        self.retry_at = Some(self.retry_at.map_or(at, |earlier| earlier.min(at)));
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DataplaneError {
    #[error("{what}: {source}")]
    Map {
        what: String,
        source: aya::maps::MapError,
    },
    #[error("loading the XDP programs failed: {source}")]
    Load { source: aya::EbpfError },
    #[error("XDP program {program}: {source}")]
    Program {
        program: &'static str,
        source: aya::programs::ProgramError,
    },
    #[error("cannot attach XDP to {interface}: {reason}")]
    Attach { interface: String, reason: String },
    #[error("pinned maps under {path}: {reason}")]
    Pins { path: String, reason: String },
    #[error("{what}: {source}")]
    Sys {
        what: &'static str,
        source: std::io::Error,
    },
    #[error("{reason}")]
    Thread { reason: String },
    #[error("cannot read the number of CPUs for per-CPU maps: {source}")]
    Cpus { source: std::io::Error },
    #[error("too many {what}: the data plane holds at most {max}")]
    Capacity { what: &'static str, max: u32 },
    #[error("{forward:?} is not supported by the {backend} data plane")]
    Unsupported {
        backend: &'static str,
        forward: ForwardMethod,
    },
    #[error(
        "virtual_server fwmark {mark}: the {backend} data plane cannot see firewall marks (netfilter sets them after XDP has run); only the kernel's IPVS can"
    )]
    FirewallMark { backend: &'static str, mark: u32 },
    #[error(
        "lb_kind TUN {tunnel}: the {backend} data plane tunnels by IPIP and GRE without checksum only"
    )]
    TunnelType {
        backend: &'static str,
        tunnel: String,
    },
    #[error(transparent)]
    Ipvs {
        #[from]
        source: ipvs::IpvsError,
    },
}

/// Packet counters of one service or real, summed over CPUs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Traffic {
    /// Packets and bytes from clients (ipvsadm's InPkts, InBytes).
    pub packets: u64,
    pub bytes: u64,
    /// Connections scheduled (ipvsadm's Conns).
    pub new_flows: u64,
    /// NAT and FullNAT replies translated towards the clients (OutPkts, OutBytes).
    pub out_packets: u64,
    pub out_bytes: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RealCounters {
    pub addr: IpAddr,
    pub port: u16,
    /// ipvsadm's name of the forwarding method: Route, Tunnel, Masq, FullNat.
    pub forward: &'static str,
    /// The weight the data plane schedules with (0: no new connections).
    pub weight: u16,
    /// Removed from the configuration; kept while established flows may use it.
    pub retired: bool,
    pub traffic: Traffic,
    /// Connections as `ipvsadm -L` counts them (ActiveConn, InActConn).
    pub active_conns: u32,
    pub inactive_conns: u32,
    /// `uthreshold` and `lthreshold` (0: none), as `ipvsadm -L --thresholds` shows them;
    /// only IPVS has connection limits, so the XDP data plane's are 0.
    pub upper_threshold: u32,
    pub lower_threshold: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ServiceCounters {
    pub addr: IpAddr,
    pub port: u16,
    pub protocol: Protocol,
    /// A firewall-mark service's mark (its address is unspecified, its port 0).
    pub fwmark: Option<u32>,
    /// IPVS's name of the scheduler.
    pub scheduler: &'static str,
    /// ipvsadm's scheduler flags (`sh-fallback`, `mh-port`, ...).
    pub sched_flags: Vec<&'static str>,
    /// `persistence_timeout` in seconds, with the granularity as a prefix length.
    pub persistent: Option<(u32, u8)>,
    /// `ops`: one-packet scheduling.
    pub ops: bool,
    pub traffic: Traffic,
    pub reals: Vec<RealCounters>,
}

impl ServiceCounters {
    pub fn id(&self) -> diff::ServiceId {
        diff::ServiceId {
            addr: self.addr,
            port: self.port,
            protocol: self.protocol,
            fwmark: self.fwmark,
        }
    }
}

/// A snapshot of all counters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Packets per outcome, in `Outcome::ALL` order.
    pub outcomes: Vec<(Outcome, u64)>,
    pub services: Vec<ServiceCounters>,
}

impl Counters {
    pub fn outcome(&self, outcome: Outcome) -> u64 {
        self.outcomes
            .iter()
            .find(|(o, _)| *o == outcome)
            .map_or(0, |(_, n)| *n)
    }
}

/// What a sweep of the flow table found.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SweepReport {
    /// Flows still alive.
    pub flows: u64,
    /// Flows removed because they timed out in their state.
    pub expired: u64,
}

pub trait Dataplane {
    /// Reconcile the data plane with `desired` (the complete desired state).
    fn apply(&mut self, desired: &DesiredState) -> Result<ApplyReport, DataplaneError>;

    /// Do the upkeep that is due by `now`, for a bounded time (the XDP flow table: timed-out
    /// flows removed, connection counts corrected; see `xdp::sweep`); when to call again,
    /// or `None` for a backend that needs none.
    fn upkeep(
        &mut self,
        now: std::time::Instant,
    ) -> Result<Option<std::time::Instant>, DataplaneError>;

    /// Current counters.
    fn counters(&self) -> Result<Counters, DataplaneError>;

    /// Zero the traffic counters of `service` and its reals, or of everything (with the
    /// outcome counters) for `None` (`ipvsadm -Z`). Connection counts are not counters.
    fn zero_counters(&mut self, service: Option<diff::ServiceId>) -> Result<(), DataplaneError>;

    /// Stop balancing: XDP detaches (its maps stay pinned, so a restart keeps the flows);
    /// IPVS removes the services lbd added, as keepalived does when it stops.
    fn stop(&mut self) -> Result<(), DataplaneError> {
        Ok(())
    }

    /// Stop managing the data plane and leave it running as it is (keepalived's
    /// `--dont-release-ipvs`): XDP stays attached through its pinned links, IPVS keeps its
    /// services, for the next lbd to adopt.
    fn leave(&mut self) -> Result<(), DataplaneError> {
        Ok(())
    }

    /// How the upkeep is going, for the metrics (`None`: this backend has none).
    fn upkeep_stats(&self) -> Option<UpkeepStats> {
        None
    }
}

/// The XDP flow table's upkeep, as the metrics show it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct UpkeepStats {
    /// Full scans done.
    pub scans: u64,
    /// Live flows at the last scan.
    pub flows: u64,
    /// Flows removed because they timed out, by scans and when due.
    pub expired: u64,
    /// Times a real's counts were corrected against a scan (evicted flows).
    pub corrections: u64,
    /// Flows waiting to be looked at when they are due.
    pub queued: u64,
    /// The last scan: from its first step to its last, and the CPU its steps used.
    pub last_scan_seconds: f64,
    pub last_scan_cpu_seconds: f64,
}
