//! Reading the counters: per outcome, per service, per real, summed over CPUs. Works on the
//! maps of a loaded program and on the pinned maps alone (lbd not running).

use std::{collections::BTreeMap, path::Path};

use aya::maps::{Array, HashMap, Map, MapData, PerCpuArray};
use lb_common::{
    ConnCounts, MAX_REALS, Outcome, RealInfo, ServiceInfo, ServiceKey, TrafficStats,
    map_names as names,
};

use super::keys::{addr_from, protocol_from};
use crate::dataplane::{Counters, DataplaneError, RealCounters, ServiceCounters, Traffic};

/// Something that has the balancer's maps by name.
pub trait MapSource {
    fn get_map(&self, name: &'static str) -> Result<&Map, DataplaneError>;
}

impl MapSource for aya::Ebpf {
    fn get_map(&self, name: &'static str) -> Result<&Map, DataplaneError> {
        self.map(name).ok_or_else(|| missing(name))
    }
}

/// The maps pinned under a directory, opened read-only in spirit (nothing here writes).
pub struct PinnedMaps {
    maps: BTreeMap<String, Map>,
}

impl PinnedMaps {
    /// Every map pinned under `dir`; the balancer's counters must be among them.
    pub fn open(dir: &Path) -> Result<Self, DataplaneError> {
        let pins_error = |reason: String| DataplaneError::Pins {
            path: dir.display().to_string(),
            reason,
        };
        let entries = std::fs::read_dir(dir).map_err(|e| {
            pins_error(format!(
                "{e} (has lbd run with this --name on this host since boot?)"
            ))
        })?;
        let mut maps = BTreeMap::new();
        for entry in entries {
            let path = entry.map_err(|e| pins_error(e.to_string()))?.path();
            let Some(name) = path.file_name().and_then(|n| n.to_str()).map(str::to_owned) else {
                continue;
            };
            // Maps only: the pinned links live in a directory of their own.
            if !name.starts_with("LB_") || path.is_dir() {
                continue;
            }
            let map = MapData::from_pin(&path)
                .and_then(Map::from_map_data)
                .map_err(|source| DataplaneError::Map {
                    what: format!("opening {}", path.display()),
                    source,
                })?;
            maps.insert(name, map);
        }
        for name in [
            names::SERVICES,
            names::REALS,
            names::SERVICE_STATS,
            names::REAL_STATS,
            names::REAL_CONNS,
            names::OUTCOMES,
        ] {
            if !maps.contains_key(name) {
                return Err(pins_error(format!("no map {name} is pinned there")));
            }
        }
        Ok(Self { maps })
    }

    /// The pinned maps by name.
    pub fn maps(&self) -> &BTreeMap<String, Map> {
        &self.maps
    }
}

impl MapSource for PinnedMaps {
    fn get_map(&self, name: &'static str) -> Result<&Map, DataplaneError> {
        self.maps.get(name).ok_or_else(|| missing(name))
    }
}

/// The error for a map the object does not have.
pub(super) fn missing(name: &'static str) -> DataplaneError {
    DataplaneError::Map {
        what: format!("map {name}"),
        source: aya::maps::MapError::InvalidName { name: name.into() },
    }
}

fn map_error(what: &'static str) -> impl Fn(aya::maps::MapError) -> DataplaneError {
    move |source| DataplaneError::Map {
        what: format!("reading {what}"),
        source,
    }
}

/// Sum of a per-CPU counter slot.
fn per_cpu_sum(
    map: &PerCpuArray<&MapData, TrafficStats>,
    index: u32,
    what: &'static str,
) -> Result<Traffic, DataplaneError> {
    let values = map.get(&index, 0).map_err(map_error(what))?;
    Ok(values.iter().fold(Traffic::default(), |sum, v| Traffic {
        packets: sum.packets + v.packets,
        bytes: sum.bytes + v.bytes,
        new_flows: sum.new_flows + v.new_flows,
        out_packets: sum.out_packets + v.out_packets,
        out_bytes: sum.out_bytes + v.out_bytes,
    }))
}

/// All counters.
pub fn read(source: &impl MapSource) -> Result<Counters, DataplaneError> {
    let outcome_map: PerCpuArray<_, u64> = PerCpuArray::try_from(source.get_map(names::OUTCOMES)?)
        .map_err(map_error(names::OUTCOMES))?;
    let mut outcomes = Vec::with_capacity(Outcome::ALL.len());
    for outcome in Outcome::ALL {
        let values = outcome_map
            .get(&(outcome as u32), 0)
            .map_err(map_error(names::OUTCOMES))?;
        outcomes.push((outcome, values.iter().sum()));
    }

    let service_map: HashMap<_, ServiceKey, ServiceInfo> =
        HashMap::try_from(source.get_map(names::SERVICES)?).map_err(map_error(names::SERVICES))?;
    let real_map: Array<_, RealInfo> =
        Array::try_from(source.get_map(names::REALS)?).map_err(map_error(names::REALS))?;
    let service_stats: PerCpuArray<_, TrafficStats> =
        PerCpuArray::try_from(source.get_map(names::SERVICE_STATS)?)
            .map_err(map_error(names::SERVICE_STATS))?;
    let real_stats: PerCpuArray<_, TrafficStats> =
        PerCpuArray::try_from(source.get_map(names::REAL_STATS)?)
            .map_err(map_error(names::REAL_STATS))?;
    let real_conns: Array<_, ConnCounts> = Array::try_from(source.get_map(names::REAL_CONNS)?)
        .map_err(map_error(names::REAL_CONNS))?;

    let mut reals_by_service: BTreeMap<u32, Vec<RealCounters>> = BTreeMap::new();
    for id in 0..MAX_REALS {
        let real = real_map.get(&id, 0).map_err(map_error(names::REALS))?;
        let Some(addr) = addr_from(real.addr, real.family) else {
            continue;
        };
        let conns = real_conns
            .get(&id, 0)
            .map_err(map_error(names::REAL_CONNS))?;
        reals_by_service
            .entry(real.service_id)
            .or_default()
            .push(RealCounters {
                addr,
                port: u16::from_be_bytes(real.port),
                forward: forward_name(real.fwd),
                weight: real.weight,
                retired: real.flags & lb_common::REAL_FLAG_RETIRED != 0,
                traffic: per_cpu_sum(&real_stats, id, names::REAL_STATS)?,
                active_conns: conns.active(),
                inactive_conns: conns.inactive(),
                upper_threshold: 0,
                lower_threshold: 0,
            });
    }

    let mut services = Vec::new();
    for entry in service_map.iter() {
        let (key, info) = entry.map_err(map_error(names::SERVICES))?;
        let (Some(addr), Some(protocol)) =
            (addr_from(key.addr, key.family), protocol_from(key.proto))
        else {
            continue;
        };
        let mut reals = reals_by_service.remove(&info.id).unwrap_or_default();
        reals.sort_by_key(|r| (r.addr, r.port));
        services.push(ServiceCounters {
            addr,
            port: u16::from_be_bytes(key.port),
            protocol,
            fwmark: None,
            scheduler: lb_common::sched::NAMES
                .get(usize::from(info.scheduler))
                .copied()
                .unwrap_or("?"),
            sched_flags: sched_flag_names(info.scheduler, info.sched_flags),
            persistent: (info.persist_timeout != 0)
                .then_some((info.persist_timeout, info.persist_prefix)),
            ops: info.flags & lb_common::SERVICE_FLAG_OPS != 0,
            traffic: per_cpu_sum(&service_stats, info.id, names::SERVICE_STATS)?,
            reals,
        });
    }
    services.sort_by_key(|s| (s.addr, s.port, s.protocol.ip_proto()));
    Ok(Counters { outcomes, services })
}

/// ipvsadm's name of a forwarding method (`fwd_name`).
pub fn forward_name(fwd: u8) -> &'static str {
    match fwd {
        lb_common::FWD_DR => "Route",
        lb_common::FWD_TUN => "Tunnel",
        lb_common::FWD_NAT => "Masq",
        lb_common::FWD_FNAT => "FullNat",
        _ => "?",
    }
}

/// ipvsadm's names of scheduler flags (`print_sched_flags`): `sh-`/`mh-` `fallback` and
/// `port`.
fn sched_flag_names(scheduler: u8, bits: u8) -> Vec<&'static str> {
    let name = lb_common::sched::NAMES.get(usize::from(scheduler)).copied();
    let (fallback, port) = match name {
        Some("mh") => ("mh-fallback", "mh-port"),
        _ => ("sh-fallback", "sh-port"),
    };
    let mut names = Vec::new();
    if bits & lb_common::sched::FLAG_FALLBACK != 0 {
        names.push(fallback);
    }
    if bits & lb_common::sched::FLAG_HASH_PORT != 0 {
        names.push(port);
    }
    names
}

/// Counters from the maps pinned under `dir`, without a running lbd.
pub fn read_pinned(dir: &Path) -> Result<Counters, DataplaneError> {
    read(&PinnedMaps::open(dir)?)
}
