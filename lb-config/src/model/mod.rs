//! The typed configuration model: what the operator asked for, independent of the file
//! syntax it came from and of the data plane that will carry it out.

pub mod alert;
pub mod check;
pub mod vrrp;

use std::{net::IpAddr, time::Duration};

use serde::Serialize;

use vrrp::{IpAddress, Route, VrrpInstance, VrrpScript, VrrpSyncGroup};

/// Everything lbd runs from one configuration file.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Config {
    /// global_defs `lvs_timeouts`.
    pub lvs_timeouts: LvsTimeouts,
    /// global_defs `lvs_tun_source` (lbd's own): the outer source of TUN packets, at most
    /// one address per family, where a virtual_server sets none of the real's family.
    pub tun_sources: Vec<IpAddr>,
    /// global_defs `router_id` (default: the host name).
    pub router_id: Option<String>,
    /// global_defs' SMTP alert settings.
    pub alerts: alert::SmtpAlerts,
    pub static_ipaddress: Vec<IpAddress>,
    pub static_routes: Vec<Route>,
    pub vrrp_scripts: Vec<VrrpScript>,
    pub vrrp_sync_groups: Vec<VrrpSyncGroup>,
    pub vrrp_instances: Vec<VrrpInstance>,
    pub virtual_servers: Vec<VirtualServer>,
    /// `track_file` blocks, for FILE_CHECK.
    pub track_files: Vec<check::TrackFile>,
    /// global_defs `script_user USER [GROUP]`: who runs scripts (keepalived's default:
    /// `keepalived_script` if that user exists, else root).
    pub script_user: Option<(String, Option<String>)>,
    /// global_defs `enable_script_security`: no script runs as root from a path a
    /// non-root user could change.
    pub script_security: bool,
    /// global_defs `lvs_sync_daemon` (or a vrrp_instance's `lvs_sync_daemon_interface`):
    /// connection sync between the directors.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lvs_sync_daemon: Option<SyncDaemon>,
    /// global_defs `vrrp_rt_priority` (1-99): the real-time priority (`SCHED_RR`) VRRP
    /// runs at. lbd runs it at 1 when the file sets none (keepalived then uses none).
    pub vrrp_rt_priority: Option<u8>,
    /// global_defs `lvs_flush`: remove every IPVS service (whoever made it) at start.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub lvs_flush: bool,
    /// global_defs `lvs_flush_on_stop [VS]` (or the older `lvs_flush_onstop`): how lbd
    /// leaves IPVS when it stops.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lvs_flush_on_stop: Option<LvsFlushOnStop>,
}

/// keepalived's `lvs_flush_on_stop`: without an argument every IPVS service goes, whoever
/// made it; with `VS` lbd's services go whole (not real by real). keepalived's default,
/// without the keyword, removes its own services real by real.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum LvsFlushOnStop {
    Full,
    VirtualServers,
}

impl VirtualServer {
    /// The address a firewall-mark service of IPv6 (else IPv4) stands at: the family's
    /// unspecified address.
    pub fn fwmark_addr(ipv6: bool) -> IpAddr {
        if ipv6 {
            IpAddr::from(std::net::Ipv6Addr::UNSPECIFIED)
        } else {
            IpAddr::from(std::net::Ipv4Addr::UNSPECIFIED)
        }
    }

    /// How `real` is forwarded to: its own `lvs_method`, else the virtual server's
    /// `lb_kind` (and tunnel).
    pub fn forwarding(&self, real: &RealServer) -> (ForwardMethod, TunnelType) {
        real.lvs_method.unwrap_or((self.forward, self.tunnel))
    }

    /// Whether some real's replies come back through the director (NAT, FullNAT).
    pub fn translates_replies(&self) -> bool {
        self.forwards_by(ForwardMethod::Nat) || self.forwards_by(ForwardMethod::FullNat)
    }

    /// How each server the virtual server may forward to is forwarded: every real, and
    /// the sorry server, by its own method or the virtual server's; a virtual server with
    /// neither, by its own.
    fn methods(&self) -> impl Iterator<Item = (ForwardMethod, TunnelType)> + '_ {
        let own = (self.forward, self.tunnel);
        let sorry = self
            .extras
            .sorry_server
            .map(|_| self.extras.sorry_server_lvs_method.unwrap_or(own));
        let alone = (self.reals.is_empty() && sorry.is_none()).then_some(own);
        self.reals
            .iter()
            .map(|real| self.forwarding(real))
            .chain(sorry)
            .chain(alone)
    }

    /// The tunnels the virtual server's reals and sorry server are forwarded by (their own
    /// `lvs_method TUN type ...`, or the virtual server's `lb_kind TUN ...`).
    pub fn tunnels(&self) -> impl Iterator<Item = TunnelType> + '_ {
        self.methods()
            .filter(|&(method, _)| method == ForwardMethod::Tun)
            .map(|(_, tunnel)| tunnel)
    }

    /// Whether some real or the sorry server is forwarded to by `method` (a virtual
    /// server with neither: by its own).
    pub fn forwards_by(&self, method: ForwardMethod) -> bool {
        self.methods().any(|(m, _)| m == method)
    }
}

/// keepalived's connection sync daemon (`lvs_sync_daemon`), with the defaults filled in.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SyncDaemon {
    /// The interface sync messages go out of and come in on.
    pub interface: String,
    /// The VRRP instance the daemon follows: MASTER sends, BACKUP receives.
    pub vrrp_instance: Option<String>,
    /// `id`: default the instance's vrid (0 without an instance).
    pub syncid: u8,
    /// `maxlen`: the largest message (None: the kernel's, from the MTU).
    pub maxlen: Option<u16>,
    /// `port` (default 8848), `ttl` (default 1), `group` (default 224.0.0.81).
    pub port: u16,
    pub ttl: u8,
    pub group: IpAddr,
}

/// keepalived's global_defs `lvs_timeouts tcp N tcpfin N udp N` (`ipvsadm --set`), in
/// seconds; `None` keeps IPVS's default (900, 120, 300).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct LvsTimeouts {
    pub tcp: Option<u32>,
    pub tcpfin: Option<u32>,
    pub udp: Option<u32>,
}

/// keepalived `virtual_server IP PORT { ... }` or `virtual_server fwmark N { ... }`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct VirtualServer {
    /// The VIP; for a firewall-mark service, the unspecified address of its family.
    pub addr: IpAddr,
    /// 0 for a firewall-mark service.
    pub port: u16,
    /// TCP for a firewall-mark service (the kernel's IPVS records it so).
    pub protocol: Protocol,
    /// `virtual_server fwmark N`: the service takes the packets of its family that
    /// netfilter marked N, whatever their address and port. Only IPVS sees marks (they
    /// are set after XDP runs).
    pub fwmark: Option<u32>,
    /// `lb_algo` / `lvs_sched`.
    pub scheduler: Scheduler,
    /// `sh-fallback`/`mh-fallback`/`flag-1`, `sh-port`/`mh-port`/`flag-2`.
    pub sched_flags: SchedFlags,
    /// `persistence_timeout` and `persistence_granularity`.
    pub persistence: Option<Persistence>,
    /// `ops`: one-packet scheduling (UDP only): each datagram is scheduled on its own.
    pub one_packet: bool,
    /// `lb_kind` / `lvs_method`.
    pub forward: ForwardMethod,
    /// FullNAT: the local addresses of `laddr_group_name`'s `local_address_group` of the
    /// VIP's family (empty for the other methods).
    pub local_addresses: Vec<IpAddr>,
    /// TUN: `tun_source` (lbd's own), the outer source per family (empty: global_defs
    /// `lvs_tun_source`, else the route's preferred source towards the real).
    pub tun_sources: Vec<IpAddr>,
    /// TUN: the tunnel (`lb_kind TUN type gue port N`, `type gre`; IPIP by default).
    pub tunnel: TunnelType,
    /// `delay_loop`: interval between health checks.
    pub delay_loop: Duration,
    /// Quorum, sorry server and the other settings of the checkers' side.
    pub extras: ServiceExtras,
    pub reals: Vec<RealServer>,
}

/// What a virtual server says about its reals' health as a whole (keepalived's checker
/// side), with keepalived's defaults.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ServiceExtras {
    /// `quorum` (default 1): the weight of healthy reals below which the service is down;
    /// `hysteresis` (default 0) around it; scripts run on the way up and down.
    pub quorum: u32,
    pub hysteresis: u32,
    pub quorum_up: Option<String>,
    pub quorum_down: Option<String>,
    /// `sorry_server IP PORT`: takes the traffic when no real is healthy.
    pub sorry_server: Option<SorryServer>,
    pub sorry_server_inhibit: bool,
    /// `sorry_server_lvs_method`: the sorry server's own forwarding method (as a real's
    /// `lvs_method`); `None` follows the virtual server.
    pub sorry_server_lvs_method: Option<(ForwardMethod, TunnelType)>,
    /// `alpha`: reals start down until their first check passes; `omega`: quorum_down
    /// runs at shutdown.
    pub alpha: bool,
    pub omega: bool,
    /// `ha_suspend`: the service only while the VRRP instance owning the VIP is MASTER.
    pub ha_suspend: bool,
    /// `inhibit_on_failure`: failed reals get weight 0 instead of leaving.
    pub inhibit_on_failure: bool,
    pub virtualhost: Option<String>,
    /// `smtp_alert [BOOL]` (see `alert::SmtpAlerts::virtual_server`).
    pub smtp_alert: Option<bool>,
}

impl Default for ServiceExtras {
    fn default() -> Self {
        Self {
            quorum: 1,
            hysteresis: 0,
            quorum_up: None,
            quorum_down: None,
            sorry_server: None,
            sorry_server_inhibit: false,
            sorry_server_lvs_method: None,
            alpha: false,
            omega: false,
            ha_suspend: false,
            inhibit_on_failure: false,
            virtualhost: None,
            smtp_alert: None,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct SorryServer {
    pub addr: IpAddr,
    pub port: u16,
}

/// keepalived `real_server IP PORT { ... }`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RealServer {
    pub addr: IpAddr,
    pub port: u16,
    /// 0 stops new connections to this real; established ones continue.
    pub weight: u32,
    pub checkers: Vec<check::Checker>,
    /// Scripts run when the real comes up or goes down.
    pub notify_up: Option<String>,
    pub notify_down: Option<String>,
    /// Weight 0 instead of leaving when its checks fail.
    pub inhibit_on_failure: bool,
    /// `uthreshold`: above this many connections the real takes no new ones (IPVS's
    /// overload flag) until it is back under `lthreshold` (0: no limit). Only the IPVS
    /// data plane has connection limits.
    pub upper_threshold: u32,
    /// `lthreshold` (0: IPVS's default, three quarters of `uthreshold`).
    pub lower_threshold: u32,
    /// `smtp_alert [BOOL]` (see `alert::SmtpAlerts::real_server`).
    pub smtp_alert: Option<bool>,
    /// The real's own `lvs_method` (DR, TUN with its tunnel, or NAT), which overrides its
    /// virtual server's `lb_kind` for it; `None` follows the virtual server
    /// (`VirtualServer::forwarding`).
    pub lvs_method: Option<(ForwardMethod, TunnelType)>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum Protocol {
    Tcp,
    Udp,
}

impl Protocol {
    pub const fn ip_proto(self) -> u8 {
        match self {
            Protocol::Tcp => lb_common::PROTO_TCP,
            Protocol::Udp => lb_common::PROTO_UDP,
        }
    }

    pub const fn name(self) -> &'static str {
        match self {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
        }
    }
}

/// Scheduling algorithms, with IPVS's names (`ipvsadm -s`, keepalived `lb_algo`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scheduler {
    /// Round robin: each real with a non-zero weight in turn.
    Rr,
    /// Weighted round robin in IPVS's order.
    Wrr,
    /// Least connections: fewest `active * 256 + inactive`.
    Lc,
    /// Weighted least connections (keepalived's default).
    Wlc,
    /// Source hashing: a client address always goes to the same real.
    Sh,
    /// Destination hashing: a destination address always goes to the same real.
    Dh,
    /// Shortest expected delay: fewest `(active + 1) / weight`.
    Sed,
    /// Never queue: an idle real first, else as sed.
    Nq,
    /// Maglev hashing: consistent hashing of the client address.
    Mh,
    /// Weighted failover: every new flow to the available real of highest weight (the
    /// first of them in configuration order).
    Fo,
    /// Overflow: the real of highest weight while its active connections do not exceed
    /// its weight, then the next.
    Ovf,
    /// Power of two choices: two reals drawn at random by weight, the one with fewer
    /// connections per weight.
    Twos,
    /// Locality-based least connections: a destination address keeps its real while that
    /// real is not overloaded; else as wlc.
    Lblc,
    /// Locality-based least connections with replication: a destination address keeps a
    /// set of reals, which grows when all its members are overloaded.
    Lblcr,
}

impl Scheduler {
    pub const ALL: [Scheduler; 14] = [
        Scheduler::Rr,
        Scheduler::Wrr,
        Scheduler::Lc,
        Scheduler::Wlc,
        Scheduler::Sh,
        Scheduler::Dh,
        Scheduler::Sed,
        Scheduler::Nq,
        Scheduler::Mh,
        Scheduler::Fo,
        Scheduler::Ovf,
        Scheduler::Twos,
        Scheduler::Lblc,
        Scheduler::Lblcr,
    ];
    pub const SUPPORTED: &'static str =
        "rr, wrr, lc, wlc, sh, dh, sed, nq, mh, fo, ovf, twos, lblc, lblcr";

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.name() == name)
    }

    pub const fn name(self) -> &'static str {
        match self {
            Scheduler::Rr => "rr",
            Scheduler::Wrr => "wrr",
            Scheduler::Lc => "lc",
            Scheduler::Wlc => "wlc",
            Scheduler::Sh => "sh",
            Scheduler::Dh => "dh",
            Scheduler::Sed => "sed",
            Scheduler::Nq => "nq",
            Scheduler::Mh => "mh",
            Scheduler::Fo => "fo",
            Scheduler::Ovf => "ovf",
            Scheduler::Twos => "twos",
            Scheduler::Lblc => "lblc",
            Scheduler::Lblcr => "lblcr",
        }
    }

    /// lc, wlc, sed, nq, ovf, lblc, lblcr: compare the connection counts of every real
    /// (the XDP data plane among at most `lb_common::sched::LEAST_CONN_MAX_REALS`).
    pub const fn compares_every_real(self) -> bool {
        matches!(
            self,
            Scheduler::Lc
                | Scheduler::Wlc
                | Scheduler::Sed
                | Scheduler::Nq
                | Scheduler::Ovf
                | Scheduler::Lblc
                | Scheduler::Lblcr
        )
    }
}

/// A persistent service (`ipvsadm -p`): a client's new connections go to the real its
/// earlier ones went to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Persistence {
    /// `persistence_timeout` (keepalived's default when given without a value: 360 s).
    pub timeout_secs: u32,
    /// `persistence_granularity` as a prefix length: clients in one such network share
    /// their real (32 or 128: each address on its own).
    pub prefix_len: u8,
}

/// IPVS scheduler flags (`ipvsadm -b`); only sh and mh use them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct SchedFlags {
    /// `IP_VS_SVC_F_SCHED1`: when the hashed real is unavailable, use the next available.
    pub fallback: bool,
    /// `IP_VS_SVC_F_SCHED2`: hash the source port too.
    pub port: bool,
}

/// The tunnel of a TUN service, as keepalived reads it after `lb_kind TUN`: `type ipip`
/// (the default), `type gue port PORT [nocsum|csum|remcsum]`, `type gre [nocsum|csum]`.
/// Only IPVS has GUE and GRE (kernel 5.2 and 5.3).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub enum TunnelType {
    #[default]
    Ipip,
    Gue {
        /// The UDP port the reals' `ip fou add port PORT gue` listens on.
        port: u16,
        checksum: TunnelChecksum,
    },
    Gre {
        checksum: TunnelChecksum,
    },
}

/// A GUE or GRE tunnel's checksum option.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub enum TunnelChecksum {
    /// `nocsum`, the default.
    #[default]
    None,
    /// `csum`.
    Checksum,
    /// `remcsum` (GUE only): remote checksum offload.
    Remote,
}

impl TunnelType {
    /// keepalived's words after `lb_kind TUN` (empty for IPIP).
    pub fn keepalived_words(self) -> String {
        let checksum = |c: TunnelChecksum| match c {
            TunnelChecksum::None => "",
            TunnelChecksum::Checksum => " csum",
            TunnelChecksum::Remote => " remcsum",
        };
        match self {
            TunnelType::Ipip => String::new(),
            TunnelType::Gue { port, checksum: c } => format!("type gue port {port}{}", checksum(c)),
            TunnelType::Gre { checksum: c } => format!("type gre{}", checksum(c)),
        }
    }
}

/// Forwarding methods, with keepalived's `lb_kind` names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum ForwardMethod {
    /// Direct routing: MAC rewrite on the same L2 segment.
    Dr,
    /// IP-in-IP tunnel to the real (IPIP / ip6ip6).
    Tun,
    /// NAT: destination rewritten to the real (port mapping allowed); replies come back
    /// through the director, which puts the VIP back as source.
    Nat,
    /// FullNAT (`FNAT`): source rewritten to a local address and port of the director,
    /// destination to the real; replies come back to the director, whatever the real's
    /// routes.
    FullNat,
}

impl ForwardMethod {
    pub const SUPPORTED: &'static str = "DR, TUN, NAT, FNAT";

    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "DR" => Some(ForwardMethod::Dr),
            "TUN" => Some(ForwardMethod::Tun),
            "NAT" => Some(ForwardMethod::Nat),
            "FNAT" => Some(ForwardMethod::FullNat),
            _ => None,
        }
    }

    pub const fn name(self) -> &'static str {
        match self {
            ForwardMethod::Dr => "DR",
            ForwardMethod::Tun => "TUN",
            ForwardMethod::Nat => "NAT",
            ForwardMethod::FullNat => "FNAT",
        }
    }

    /// NAT and FullNAT: replies come back through the director to be translated.
    pub const fn translates_replies(self) -> bool {
        matches!(self, ForwardMethod::Nat | ForwardMethod::FullNat)
    }
}
