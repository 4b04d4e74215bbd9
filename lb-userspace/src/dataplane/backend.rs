//! The data plane lbd runs (`--dataplane xdp|ipvs|auto`): the XDP programs, or the
//! kernel's IPVS where they cannot run. `auto` (the default) takes XDP and falls back to
//! IPVS, with a warning naming the reason, when loading or attaching the programs fails.
//! What only one backend can do decides before that: FullNAT needs XDP (IPVS has none);
//! firewall-mark services (`virtual_server fwmark N`) and connection thresholds
//! (`uthreshold`, `lthreshold`) need IPVS, and `auto` takes IPVS at once for them.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::{
    ApplyReport, Counters, Dataplane, DataplaneError, DesiredState,
    diff::ServiceId,
    ipvs::IpvsDataplane,
    xdp::{self, XdpDataplane},
};
use crate::{
    model::{Config, ForwardMethod},
    nexthop::KernelNextHops,
};

/// `--dataplane`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum DataplaneChoice {
    /// XDP, falling back to IPVS when the programs cannot load or attach.
    #[default]
    Auto,
    Xdp,
    Ipvs,
}

/// Which backend runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum DataplaneKind {
    Xdp,
    Ipvs,
}

impl fmt::Display for DataplaneKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DataplaneKind::Xdp => "XDP",
            DataplaneKind::Ipvs => "IPVS",
        })
    }
}

/// The backend in use and, when `auto` fell back to IPVS, why (shown by lbctl).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataplaneStatus {
    pub kind: DataplaneKind,
    pub fallback_reason: Option<String>,
}

/// Why `config` cannot run on IPVS (a configuration error, naming the virtual server).
pub fn ipvs_refusal(config: &Config) -> Option<String> {
    config
        .virtual_servers
        .iter()
        .find(|vs| vs.forward == ForwardMethod::FullNat)
        .map(|vs| {
            format!(
                "virtual_server {}: lb_kind FNAT needs the XDP data plane; IPVS has no FullNAT (use NAT, DR or TUN with --dataplane ipvs)",
                ServiceId::of(vs)
            )
        })
}

/// What in `config` only IPVS does (a configuration error for XDP; `auto` takes IPVS).
pub fn xdp_refusal(config: &Config) -> Option<String> {
    if let Some(mark) = config.virtual_servers.iter().find_map(|vs| vs.fwmark) {
        return Some(format!(
            "virtual_server fwmark {mark}: firewall marks are set by netfilter after XDP has run, so only the kernel's IPVS can match them (use --dataplane ipvs or auto)"
        ));
    }
    if let Some((vs, tunnel)) = config
        .virtual_servers
        .iter()
        .find_map(|vs| Some((vs, vs.tunnels().find(|t| xdp::tunnel_kind(*t).is_none())?)))
    {
        return Some(format!(
            "virtual_server {}: lb_kind TUN {}: the XDP data plane tunnels by IPIP and GRE without checksum only; GUE and GRE with checksum are the kernel's IPVS's (use --dataplane ipvs or auto)",
            ServiceId::of(vs),
            tunnel.keepalived_words()
        ));
    }
    let max = lb_common::sched::LEAST_CONN_MAX_REALS as usize;
    if let Some(vs) = config
        .virtual_servers
        .iter()
        .find(|vs| vs.scheduler.compares_every_real() && vs.reals.len() > max)
    {
        return Some(format!(
            "virtual_server {}: lb_algo {} with {} real servers: the XDP data plane compares at most {max} (the kernel's IPVS has no limit: use --dataplane ipvs or auto)",
            ServiceId::of(vs),
            vs.scheduler.name(),
            vs.reals.len()
        ));
    }
    config.virtual_servers.iter().find_map(|vs| {
        let real = vs
            .reals
            .iter()
            .find(|r| r.upper_threshold > 0 || r.lower_threshold > 0)?;
        Some(format!(
            "virtual_server {}: real_server {} {} has uthreshold/lthreshold, connection limits that only the kernel's IPVS has (use --dataplane ipvs or auto)",
            ServiceId::of(vs),
            real.addr,
            real.port
        ))
    })
}

/// The running backend.
pub enum Backend {
    Xdp(Box<XdpDataplane<KernelNextHops>>),
    Ipvs(IpvsDataplane),
}

impl Backend {
    pub fn kind(&self) -> DataplaneKind {
        match self {
            Backend::Xdp(_) => DataplaneKind::Xdp,
            Backend::Ipvs(_) => DataplaneKind::Ipvs,
        }
    }

    /// The XDP data plane, if that is the one running.
    pub fn xdp(&self) -> Option<&XdpDataplane<KernelNextHops>> {
        match self {
            Backend::Xdp(xdp) => Some(xdp),
            Backend::Ipvs(_) => None,
        }
    }

    pub fn xdp_mut(&mut self) -> Option<&mut XdpDataplane<KernelNextHops>> {
        match self {
            Backend::Xdp(xdp) => Some(xdp),
            Backend::Ipvs(_) => None,
        }
    }
}

impl Dataplane for Backend {
    fn apply(&mut self, desired: &DesiredState) -> Result<ApplyReport, DataplaneError> {
        match self {
            Backend::Xdp(xdp) => xdp.apply(desired),
            Backend::Ipvs(ipvs) => ipvs.apply(desired),
        }
    }

    fn upkeep(
        &mut self,
        now: std::time::Instant,
    ) -> Result<Option<std::time::Instant>, DataplaneError> {
        match self {
            Backend::Xdp(xdp) => xdp.upkeep(now),
            Backend::Ipvs(ipvs) => ipvs.upkeep(now),
        }
    }

    fn stop(&mut self) -> Result<(), DataplaneError> {
        match self {
            Backend::Xdp(xdp) => xdp.stop(),
            Backend::Ipvs(ipvs) => ipvs.stop(),
        }
    }

    fn leave(&mut self) -> Result<(), DataplaneError> {
        match self {
            Backend::Xdp(xdp) => xdp.leave(),
            Backend::Ipvs(ipvs) => ipvs.leave(),
        }
    }

    fn upkeep_stats(&self) -> Option<super::UpkeepStats> {
        match self {
            Backend::Xdp(xdp) => xdp.upkeep_stats(),
            Backend::Ipvs(ipvs) => ipvs.upkeep_stats(),
        }
    }

    fn counters(&self) -> Result<Counters, DataplaneError> {
        match self {
            Backend::Xdp(xdp) => xdp.counters(),
            Backend::Ipvs(ipvs) => ipvs.counters(),
        }
    }

    fn zero_counters(&mut self, service: Option<ServiceId>) -> Result<(), DataplaneError> {
        match self {
            Backend::Xdp(xdp) => xdp.zero_counters(service),
            Backend::Ipvs(ipvs) => ipvs.zero_counters(service),
        }
    }
}
