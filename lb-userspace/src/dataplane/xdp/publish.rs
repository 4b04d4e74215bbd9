//! Publishing the desired state into the maps (`Dataplane::apply`): each real's entry
//! first, then the service's new scheduling table in free space of the `LB_TABLES` arena,
//! and the service entry last, so that a packet sees the old table or the new one; the
//! VIP set, the settings and the timeouts; and the trait's other operations (upkeep,
//! counters, stop).

use std::{
    collections::{BTreeSet, HashMap as StdHashMap},
    net::IpAddr,
    time::Instant,
};

use aya::{
    Ebpf,
    maps::{Array, HashMap, MapData},
};
use lb_common::{
    FEATURE_NAT, FWD_DR, FWD_FNAT, FWD_NAT, FWD_TUN, RealInfo, ServiceInfo, ServiceKey,
    TUNNEL_IPIP, TrafficStats, VipKey, map_names as names,
};

use super::{
    FREE_REAL, XdpDataplane, addr_bytes, arena::Region, counters, keys::vip_key, map_error, map_fd,
    map_mut, removed, service_key, slots::RealKey, sweep, sys, tunnel_kind, view_of,
};
use crate::{
    dataplane::{ApplyReport, Counters, Dataplane, DataplaneError, DesiredState, ServiceSpec},
    model::ForwardMethod,
    nexthop::{NextHop, NextHopError, NextHopResolver},
    sched::{self, TableReal},
};

impl<R: NextHopResolver> XdpDataplane<R> {
    /// Whether service `wanted.key` already runs with this entry (apart from where its
    /// table is) and this table.
    fn is_published(&self, wanted: &DesiredService) -> bool {
        self.slots.services.get(&wanted.key).is_some_and(|slot| {
            slot.info.is_some_and(|info| {
                ServiceInfo {
                    table_offset: 0,
                    table_len: 0,
                    ..info
                } == wanted.info
            }) && slot.table.as_ref() == Some(&wanted.table)
        })
    }

    /// Write the wanted table (real ids) into free space of the arena and point the
    /// service entry at it; the old range is released after the arena's grace period.
    /// When the space is there only once released ranges come out of their grace period,
    /// nothing changes and the time to try again is returned.
    fn publish(&mut self, wanted: DesiredService) -> Result<Option<Instant>, DataplaneError> {
        if self.is_published(&wanted) {
            return Ok(None);
        }
        let old = self
            .slots
            .services
            .get(&wanted.key)
            .and_then(|slot| slot.info);
        let region = match self
            .arena
            .allocate(wanted.table.len() as u32, Instant::now())
        {
            Some(region) => region,
            None => {
                return match self.arena.next_free_at() {
                    Some(at) => Ok(Some(at)),
                    None => Err(DataplaneError::Capacity {
                        what: "scheduling table entries (--sched-table-entries)",
                        max: self.arena.size(),
                    }),
                };
            }
        };
        // One call for the whole table (a Maglev table has 65,537 entries).
        let positions: Vec<u32> =
            (region.offset..region.offset + wanted.table.len() as u32).collect();
        sys::update_batch(
            map_fd(&self.ebpf, names::TABLES)?,
            &positions,
            &wanted.table,
            0,
        )
        .map_err(|source| DataplaneError::Sys {
            what: "writing a scheduling table",
            source,
        })?;
        // The FullNAT pool follows the scheduling table in the same range.
        let info = ServiceInfo {
            table_offset: region.offset,
            table_len: region.len - wanted.info.laddr_len,
            ..wanted.info
        };
        let mut services: HashMap<&mut MapData, ServiceKey, ServiceInfo> =
            HashMap::try_from(map_mut(&mut self.ebpf, names::SERVICES)?)
                .map_err(map_error(names::SERVICES))?;
        services
            .insert(wanted.key, info, 0)
            .map_err(map_error("writing a service"))?;
        if let Some(old) = old {
            self.arena.release(table_region(&old), Instant::now());
        }
        let slot = self
            .slots
            .services
            .get_mut(&wanted.key)
            .expect("service allocated before publish");
        slot.info = Some(info);
        slot.table = Some(wanted.table);
        Ok(None)
    }

    /// Fail before anything is published if some changed table could never be placed.
    /// Tables are published service by service, in order (`publish`): each new table
    /// needs room next to every table in place, its own old one included, which is
    /// released once the new one is in (and free after the arena's grace period, when a
    /// later apply goes on: `ApplyReport::retry_at`). So the changes need not fit all at
    /// once, only one after the other.
    fn check_table_room(&self, wanted: &[DesiredService]) -> Result<(), DataplaneError> {
        let mut room = self.arena.eventually_free();
        for wanted in wanted.iter().filter(|w| !self.is_published(w)) {
            let new = wanted.table.len() as u64;
            if new > room {
                return Err(DataplaneError::Capacity {
                    what: "scheduling table entries (--sched-table-entries)",
                    max: self.arena.size(),
                });
            }
            let old = self
                .slots
                .services
                .get(&wanted.key)
                .and_then(|slot| slot.info)
                .map_or(0, |info| u64::from(table_region(&info).len));
            room = room - new + old;
        }
        Ok(())
    }

    /// Remove service `key` and free its reals: without the service no packet uses them.
    fn remove_service(&mut self, key: ServiceKey) -> Result<(), DataplaneError> {
        let mut services: HashMap<&mut MapData, ServiceKey, ServiceInfo> =
            HashMap::try_from(map_mut(&mut self.ebpf, names::SERVICES)?)
                .map_err(map_error(names::SERVICES))?;
        removed(services.remove(&key)).map_err(map_error("removing a service"))?;
        let Some(slot) = self.slots.services.remove(&key) else {
            return Ok(());
        };
        if let Some(info) = slot.info {
            self.arena.release(table_region(&info), Instant::now());
        }
        let mut reals: Array<&mut MapData, RealInfo> =
            Array::try_from(map_mut(&mut self.ebpf, names::REALS)?)
                .map_err(map_error(names::REALS))?;
        for id in self.slots.release_service(slot.id) {
            // The generation stays with the id, for its next real.
            let free = RealInfo {
                generation: self.slots.generation(id),
                ..FREE_REAL
            };
            reals
                .set(id, free, 0)
                .map_err(map_error("freeing a real"))?;
        }
        Ok(())
    }

    /// The next hop of every real address in `services`, each asked for once.
    fn resolve_all(
        &mut self,
        services: &[ServiceSpec],
    ) -> StdHashMap<IpAddr, Result<NextHop, NextHopError>> {
        let mut addrs: Vec<IpAddr> = services
            .iter()
            .flat_map(|spec| spec.reals.iter().map(|real| real.addr))
            .collect();
        addrs.sort();
        addrs.dedup();
        let results = self.resolver.resolve(&addrs);
        addrs.into_iter().zip(results).collect()
    }
}

impl<R: NextHopResolver> Dataplane for XdpDataplane<R> {
    fn apply(&mut self, desired: &DesiredState) -> Result<ApplyReport, DataplaneError> {
        let services = &desired.services;
        // Refused before anything changes: marks are set after XDP has run.
        if let Some(mark) = services.iter().find_map(|spec| spec.fwmark) {
            return Err(DataplaneError::FirewallMark {
                backend: "XDP",
                mark,
            });
        }
        if let Some(tunnel) = services
            .iter()
            .flat_map(ServiceSpec::tunnels)
            .find(|tunnel| tunnel_kind(*tunnel).is_none())
        {
            return Err(DataplaneError::TunnelType {
                backend: "XDP",
                tunnel: tunnel.keepalived_words(),
            });
        }
        // The least-connection loop compares so many reals; never a silent truncation.
        let max = lb_common::sched::LEAST_CONN_MAX_REALS;
        if services
            .iter()
            .any(|spec| spec.scheduler.compares_every_real() && spec.reals.len() > max as usize)
        {
            return Err(DataplaneError::Capacity {
                what: "reals in an lc/wlc/sed/nq/ovf/lblc/lblcr service",
                max,
            });
        }
        self.write_timeouts(desired.timeouts)?;
        let mut report = ApplyReport::default();
        let next_hops = self.resolve_all(services);
        let mut wanted_services = BTreeSet::new();
        let mut wanted_reals = BTreeSet::new();
        let mut wanted_local_addrs = BTreeSet::new();
        let mut tables = Vec::new();

        for spec in services {
            let key = service_key(spec.addr, spec.port, spec.protocol);
            wanted_services.insert(key);
            let (service_id, new) = self.slots.service(key)?;
            if new {
                self.reset_per_cpu::<TrafficStats>(names::SERVICE_STATS, service_id)?;
                self.reset_per_cpu::<u32>(names::RR_CURSORS, service_id)?;
            }
            // Real ids and what the table is built from, for the reals with a next hop.
            let mut members = Vec::new();
            let mut table_reals = Vec::new();
            for real in &spec.reals {
                let (addr, family) = addr_bytes(real.addr);
                // The real's own method (`lvs_method`), else the service's.
                let (forward, tunnel_type) = spec.forwarding(real);
                // Checked above: every tunnel has its kind.
                let tunnel = tunnel_kind(tunnel_type).unwrap_or(TUNNEL_IPIP);
                let fwd = match forward {
                    ForwardMethod::Dr => FWD_DR,
                    ForwardMethod::Tun => FWD_TUN,
                    ForwardMethod::Nat => FWD_NAT,
                    ForwardMethod::FullNat => FWD_FNAT,
                };
                // Port 0 is IPVS's "the service's port" (the configuration reader gives
                // such reals the service's port already): never a destination port 0.
                let port = if real.port == 0 { spec.port } else { real.port };
                let real_key = RealKey {
                    service_id,
                    addr,
                    port: port.to_be_bytes(),
                    family,
                    fwd,
                };
                wanted_reals.insert(real_key);
                let weight = real.weight.min(u32::from(u16::MAX));
                let tunnel_src = match (forward, &next_hops[&real.addr]) {
                    (ForwardMethod::Tun, Ok(next_hop)) => {
                        let configured = spec
                            .tun_sources
                            .iter()
                            .find(|s| s.is_ipv4() == real.addr.is_ipv4());
                        match configured.copied().or(next_hop.src) {
                            Some(src) if src.is_ipv4() == real.addr.is_ipv4() => {
                                Ok(addr_bytes(src).0)
                            }
                            _ => Err(format!(
                                "no local address of its family towards {} for the tunnel (set tun_source)",
                                real.addr
                            )),
                        }
                    }
                    _ => Ok([0; 16]),
                };
                // Without a next hop, any existing entry stays as it is: its established
                // flows go on.
                let next_hop = match (&next_hops[&real.addr], &tunnel_src) {
                    (Ok(next_hop), Ok(_)) => *next_hop,
                    (Err(NextHopError::Pending { retry_at, .. }), _) => {
                        if !report.pending.contains(&real.addr) {
                            report.pending.push(real.addr);
                        }
                        report.retry_at(*retry_at);
                        continue;
                    }
                    (Err(error), _) => {
                        report.unresolve(real.addr, error.to_string());
                        continue;
                    }
                    (_, Err(reason)) => {
                        report.unresolve(real.addr, reason.clone());
                        continue;
                    }
                };
                let conns = &self.conns;
                let (real_id, new) = self.slots.real(real_key, |id| {
                    let counts = conns.load(id);
                    counts.active() > 0 || counts.inactive() > 0
                })?;
                if new {
                    self.reset_per_cpu::<TrafficStats>(names::REAL_STATS, real_id)?;
                    self.conns.reset(real_id);
                }
                let last_weight = match (weight, self.slots.entries.get(&real_id)) {
                    (0, Some(entry)) if !new => u32::from(entry.last_weight),
                    _ => weight,
                };
                self.write_real(
                    real_id,
                    RealInfo {
                        addr,
                        ifindex: next_hop.ifindex,
                        service_id,
                        mac: next_hop.mac,
                        src_mac: next_hop.src_mac,
                        port: real_key.port,
                        family,
                        flags: 0,
                        vlan: next_hop.vlan,
                        weight: weight as u16,
                        last_weight: last_weight as u16,
                        mtu: next_hop.mtu,
                        fwd,
                        tunnel,
                        generation: self.slots.generation(real_id),
                        tunnel_src: tunnel_src.unwrap_or_default(),
                    },
                )?;
                members.push(real_id);
                table_reals.push(TableReal {
                    weight,
                    last_weight,
                    key: sched::permutation_key(real.addr, port),
                });
            }
            let table = sched::build(spec.scheduler, &table_reals);
            let pool = if spec.forward == ForwardMethod::FullNat {
                wanted_local_addrs.extend(spec.local_addresses.iter().copied());
                self.local_addr_ids(&spec.local_addresses)?
            } else {
                Vec::new()
            };
            if table.scaled {
                report.scaled.push((spec.addr, spec.port));
            }
            let full_prefix = if spec.addr.is_ipv4() { 32 } else { 128 };
            tables.push(DesiredService {
                key,
                info: ServiceInfo {
                    id: service_id,
                    table_offset: 0,
                    table_len: 0,
                    sched: sched::kind(spec.scheduler),
                    sched_flags: sched::flag_bits(spec.sched_flags),
                    persist_prefix: spec.persistence.map_or(full_prefix, |p| p.prefix_len),
                    flags: if spec.one_packet {
                        lb_common::SERVICE_FLAG_OPS
                    } else {
                        0
                    },
                    persist_timeout: spec.persistence.map_or(0, |p| p.timeout_secs),
                    laddr_len: pool.len() as u32,
                    scheduler: sched::name_index(spec.scheduler),
                    _pad: [0; 3],
                },
                table: table
                    .entries
                    .iter()
                    .map(|&i| members[i])
                    .chain(pool)
                    .collect(),
            });
        }

        self.check_table_room(&tables)?;
        // Retired reals keep their entry (flagged) for their established flows.
        for (key, _) in self.slots.reals_not_in(&wanted_reals) {
            if let Some((id, Some(entry))) = self.slots.retire(&key) {
                self.write_real(id, entry)?;
            }
        }
        // The reply sources and the service filter before the tables: a new real's replies
        // may come as soon as a table sends it a flow, and a new service's packets as soon
        // as it is published.
        let nat = services.iter().any(ServiceSpec::translates_replies);
        let features = if nat { FEATURE_NAT } else { 0 };
        self.write_settings(features)?;
        // Service by service: each swap is atomic on its own. Once one waits for room,
        // the rest wait too: the room `check_table_room` counted is taken in this order.
        for wanted in tables {
            if let Some(at) = self.publish(wanted)? {
                report.retry_at(at);
                break;
            }
        }
        self.local_addrs.retain(&wanted_local_addrs);
        let vips = services.iter().map(|s| s.addr).collect();
        sync_vip_set(&mut self.ebpf, names::VIPS, &mut self.vips, vips)?;
        let stale: Vec<ServiceKey> = self
            .slots
            .services
            .keys()
            .filter(|key| !wanted_services.contains(key))
            .copied()
            .collect();
        for key in stale {
            self.remove_service(key)?;
        }
        // Without the services and reals removed.
        self.write_settings(features)?;
        Ok(report)
    }

    fn upkeep(&mut self, now: Instant) -> Result<Option<Instant>, DataplaneError> {
        let now_ns = sweep::monotonic_coarse_ns();
        let interval = self.scan_interval();
        let view = view_of(self.timeouts, &self.slots, &self.local_addrs, &self.conns);
        let step = self.upkeep.step(&view, interval, now, now_ns)?;
        if let Some((stats, in_use)) = step.finished {
            tracing::debug!(
                "scan of the flow table: {} live flows, {} timed out, {} reals recounted, {:.1?} ({:.1?} CPU)",
                stats.flows,
                stats.expired,
                stats.corrected,
                stats.wall,
                stats.cpu
            );
            self.release_local_addrs(&in_use)?;
        }
        Ok(Some(
            self.upkeep
                .next_at(Instant::now(), sweep::monotonic_coarse_ns()),
        ))
    }

    fn counters(&self) -> Result<Counters, DataplaneError> {
        counters::read(&self.ebpf)
    }

    fn zero_counters(
        &mut self,
        service: Option<crate::dataplane::diff::ServiceId>,
    ) -> Result<(), DataplaneError> {
        self.zero(service)
    }

    fn stop(&mut self) -> Result<(), DataplaneError> {
        self.detach_all()
    }

    fn leave(&mut self) -> Result<(), DataplaneError> {
        self.leave_all();
        Ok(())
    }

    fn upkeep_stats(&self) -> Option<crate::dataplane::UpkeepStats> {
        Some(self.upkeep.stats())
    }
}

/// Make the set of VIP addresses `name` (a hash of `VipKey`), which holds `current`, hold
/// `wanted`.
pub(super) fn sync_vip_set(
    ebpf: &mut Ebpf,
    name: &'static str,
    current: &mut BTreeSet<IpAddr>,
    wanted: BTreeSet<IpAddr>,
) -> Result<(), DataplaneError> {
    if wanted == *current {
        return Ok(());
    }
    let mut map: HashMap<&mut MapData, VipKey, u8> =
        HashMap::try_from(map_mut(ebpf, name)?).map_err(map_error(name))?;
    for vip in wanted.difference(current) {
        map.insert(vip_key(*vip), 1, 0)
            .map_err(map_error(format!("adding a VIP to {name}")))?;
    }
    for vip in current.difference(&wanted) {
        removed(map.remove(&vip_key(*vip)))
            .map_err(map_error(format!("removing a VIP from {name}")))?;
    }
    *current = wanted;
    Ok(())
}

/// What a service should run with: its entry (`table_offset`/`table_len` left 0) and
/// table of real ids.
pub(super) struct DesiredService {
    key: ServiceKey,
    info: ServiceInfo,
    table: Vec<u32>,
}

/// The arena range of a published table (with the FullNAT pool after it).
pub(super) fn table_region(info: &ServiceInfo) -> Region {
    Region {
        offset: info.table_offset,
        len: info.table_len + info.laddr_len,
    }
}
