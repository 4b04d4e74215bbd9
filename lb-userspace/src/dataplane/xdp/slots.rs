//! Stable ids for services and reals in the data plane's arrays.
//!
//! A service keeps its id while it exists; a real (one per service it belongs to) keeps
//! its id while it is configured. A removed real's entry is *retired*, not cleared: flows
//! already scheduled to it keep reaching it (IPVS keeps connections to a deleted
//! destination the same way). New reals take never-used ids first, then the oldest
//! retired one that no flow uses, and only then the oldest retired one. Each time an id
//! goes to another real its generation goes up (`RealInfo::generation`; flows record the
//! generation of their real), so that a flow of the id's earlier real is never taken for
//! a connection of the new one: it is scheduled anew. On start the ids and generations are
//! rebuilt from the pinned maps, so a restarted lbd addresses the same entries and
//! established flows keep their reals.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use lb_common::{REAL_FLAG_RETIRED, RealInfo, ServiceInfo, ServiceKey};

use crate::dataplane::DataplaneError;

/// Identity of a real within a service. The forwarding method is part of it: when a
/// service changes its `lb_kind`, its reals get new entries, and the flows on the old ones
/// go on as they were scheduled (a NAT or DR flow cannot become a FullNAT one mid-way).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct RealKey {
    pub service_id: u32,
    pub addr: [u8; 16],
    pub port: [u8; 2],
    pub family: u8,
    /// `FWD_*`.
    pub fwd: u8,
}

impl RealKey {
    pub fn of(info: &RealInfo) -> Self {
        Self {
            service_id: info.service_id,
            addr: info.addr,
            port: info.port,
            family: info.family,
            fwd: info.fwd,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceSlot {
    pub id: u32,
    /// The service entry in the map, `None` before the first publish.
    pub info: Option<ServiceInfo>,
    /// Real ids in the published table, `None` when unknown (rebuilt from pins).
    pub table: Option<Vec<u32>>,
}

#[derive(Debug)]
pub struct Slots {
    max_services: u32,
    max_reals: u32,
    pub services: BTreeMap<ServiceKey, ServiceSlot>,
    /// Configured reals.
    active: BTreeMap<RealKey, u32>,
    /// Last entry written for each id in use (active or retired).
    pub entries: BTreeMap<u32, RealInfo>,
    /// Retired ids, oldest first.
    retired: VecDeque<u32>,
    /// The generation of each id that ever had a real (kept when it is freed).
    generations: BTreeMap<u32, u16>,
}

impl Slots {
    pub fn new(max_services: u32, max_reals: u32) -> Self {
        Self {
            max_services,
            max_reals,
            services: BTreeMap::new(),
            active: BTreeMap::new(),
            entries: BTreeMap::new(),
            retired: VecDeque::new(),
            generations: BTreeMap::new(),
        }
    }

    /// The generation of id `id` (0 for one never used).
    pub fn generation(&self, id: u32) -> u16 {
        self.generations.get(&id).copied().unwrap_or(0)
    }

    /// Rebuild from what the maps hold.
    pub fn rebuild(
        max_services: u32,
        max_reals: u32,
        services: impl IntoIterator<Item = (ServiceKey, ServiceInfo)>,
        reals: impl IntoIterator<Item = (u32, RealInfo)>,
    ) -> Self {
        let mut slots = Self::new(max_services, max_reals);
        for (key, info) in services {
            slots.services.insert(
                key,
                ServiceSlot {
                    id: info.id,
                    info: Some(info),
                    table: None,
                },
            );
        }
        for (id, info) in reals {
            if info.generation != 0 {
                slots.generations.insert(id, info.generation);
            }
            if info.family == 0 {
                continue;
            }
            slots.entries.insert(id, info);
            if info.flags & REAL_FLAG_RETIRED != 0 {
                slots.retired.push_back(id);
            } else {
                slots.active.insert(RealKey::of(&info), id);
            }
        }
        slots
    }

    /// The id of service `key`, allocating the lowest free one; `true` if new.
    pub fn service(&mut self, key: ServiceKey) -> Result<(u32, bool), DataplaneError> {
        if let Some(slot) = self.services.get(&key) {
            return Ok((slot.id, false));
        }
        let used: BTreeSet<u32> = self.services.values().map(|s| s.id).collect();
        let id = (0..self.max_services).find(|id| !used.contains(id)).ok_or(
            DataplaneError::Capacity {
                what: "virtual services",
                max: self.max_services,
            },
        )?;
        self.services.insert(
            key,
            ServiceSlot {
                id,
                info: None,
                table: None,
            },
        );
        Ok((id, true))
    }

    /// The id of configured real `key`, allocating one if it has none; `true` if new (its
    /// generation is then a new one). A real configured again while retired gets its old
    /// id (and its established flows) back. `has_flows` says whether flows may still use
    /// an id.
    pub fn real(
        &mut self,
        key: RealKey,
        has_flows: impl Fn(u32) -> bool,
    ) -> Result<(u32, bool), DataplaneError> {
        if let Some(&id) = self.active.get(&key) {
            return Ok((id, false));
        }
        let entries = &self.entries;
        if let Some(position) = self
            .retired
            .iter()
            .position(|id| entries.get(id).map(RealKey::of) == Some(key))
        {
            let id = self.retired.remove(position).expect("position is in range");
            self.active.insert(key, id);
            return Ok((id, false));
        }
        let in_use = |id: &u32| {
            self.entries.contains_key(id)
                || self.retired.contains(id)
                || self.active.values().any(|active| active == id)
        };
        let id = match (0..self.max_reals).find(|id| !in_use(id)) {
            Some(id) => id,
            None => {
                let position = self
                    .retired
                    .iter()
                    .position(|&id| !has_flows(id))
                    .unwrap_or(0);
                let id = self
                    .retired
                    .remove(position)
                    .ok_or(DataplaneError::Capacity {
                        what: "real servers",
                        max: self.max_reals,
                    })?;
                self.entries.remove(&id);
                id
            }
        };
        let generation = self.generation(id).wrapping_add(1).max(1);
        self.generations.insert(id, generation);
        self.active.insert(key, id);
        Ok((id, true))
    }

    /// Configured reals not in `keep`, as (key, id).
    pub fn reals_not_in(&self, keep: &BTreeSet<RealKey>) -> Vec<(RealKey, u32)> {
        self.active
            .iter()
            .filter(|(key, _)| !keep.contains(key))
            .map(|(key, id)| (*key, *id))
            .collect()
    }

    /// Forget every real of service `service_id` (the service is gone, so are its flows);
    /// returns their ids, whose map entries the caller clears.
    pub fn release_service(&mut self, service_id: u32) -> Vec<u32> {
        let ids: Vec<u32> = self
            .entries
            .iter()
            .filter(|(_, entry)| entry.service_id == service_id)
            .map(|(id, _)| *id)
            .collect();
        self.active.retain(|key, _| key.service_id != service_id);
        self.retired.retain(|id| !ids.contains(id));
        for id in &ids {
            self.entries.remove(id);
        }
        ids
    }

    /// Move a configured real to the retired queue; returns its id and its entry with
    /// the retired flag set, for the caller to write to the map.
    pub fn retire(&mut self, key: &RealKey) -> Option<(u32, Option<RealInfo>)> {
        let id = self.active.remove(key)?;
        self.retired.push_back(id);
        let entry = self.entries.get(&id).map(|entry| RealInfo {
            flags: entry.flags | REAL_FLAG_RETIRED,
            ..*entry
        });
        Some((id, entry))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service_key(last: u8) -> ServiceKey {
        let mut addr = [0; 16];
        addr[..4].copy_from_slice(&[10, 0, 0, last]);
        ServiceKey {
            addr,
            port: 80u16.to_be_bytes(),
            proto: 6,
            family: 4,
        }
    }

    fn real_key(service_id: u32, last: u8) -> RealKey {
        let mut addr = [0; 16];
        addr[..4].copy_from_slice(&[10, 0, 1, last]);
        RealKey {
            service_id,
            addr,
            port: 80u16.to_be_bytes(),
            family: 4,
            fwd: 0,
        }
    }

    fn entry(key: RealKey) -> RealInfo {
        RealInfo {
            addr: key.addr,
            ifindex: 2,
            service_id: key.service_id,
            mac: [2, 0, 0, 0, 0, 1],
            src_mac: [2, 0, 0, 0, 0, 2],
            port: key.port,
            family: key.family,
            flags: 0,
            vlan: 0,
            weight: 1,
            last_weight: 1,
            mtu: 1500,
            fwd: 0,
            tunnel: 0,
            generation: 1,
            tunnel_src: [0; 16],
        }
    }

    #[test]
    fn service_ids_are_stable_and_lowest_free() {
        let mut slots = Slots::new(2, 8);
        assert_eq!(slots.service(service_key(1)).unwrap(), (0, true));
        assert_eq!(slots.service(service_key(2)).unwrap(), (1, true));
        assert_eq!(slots.service(service_key(1)).unwrap(), (0, false));
        assert!(matches!(
            slots.service(service_key(3)),
            Err(DataplaneError::Capacity { max: 2, .. })
        ));
        slots.services.remove(&service_key(1));
        assert_eq!(slots.service(service_key(3)).unwrap(), (0, true));
    }

    #[test]
    fn retired_ids_are_reused_last_and_oldest_first() {
        let mut slots = Slots::new(1, 3);
        for last in 1..=3 {
            let key = real_key(0, last);
            let (id, new) = slots.real(key, |_| false).unwrap();
            assert!(new);
            slots.entries.insert(id, entry(key));
        }
        // Retire 2 then 1: the next new real takes 2's id (retired first).
        let (id2, retired) = slots.retire(&real_key(0, 2)).unwrap();
        assert_ne!(retired.unwrap().flags & REAL_FLAG_RETIRED, 0);
        slots.retire(&real_key(0, 1)).unwrap();
        assert_eq!(slots.real(real_key(0, 9), |_| false).unwrap(), (id2, true));
        let configured: Vec<RealKey> = slots
            .reals_not_in(&BTreeSet::new())
            .into_iter()
            .map(|(key, _)| key)
            .collect();
        assert_eq!(configured, [real_key(0, 3), real_key(0, 9)]);
    }

    #[test]
    fn a_reused_id_prefers_no_flows_and_gets_a_new_generation() {
        let mut slots = Slots::new(1, 3);
        for last in 1..=3 {
            let key = real_key(0, last);
            let (id, _) = slots.real(key, |_| false).unwrap();
            assert_eq!(slots.generation(id), 1);
            slots.entries.insert(id, entry(key));
        }
        let (id1, _) = slots.retire(&real_key(0, 1)).unwrap();
        let (id2, _) = slots.retire(&real_key(0, 2)).unwrap();
        // 1 was retired first, but flows still use it: 2's id goes.
        let (id, new) = slots.real(real_key(0, 9), |id| id == id1).unwrap();
        assert_eq!((id, new), (id2, true));
        assert_eq!(slots.generation(id2), 2);
        // Every retired id has flows: the oldest goes all the same, with a new generation.
        let (id, _) = slots.real(real_key(0, 8), |_| true).unwrap();
        assert_eq!((id, slots.generation(id1)), (id1, 2));
        // Freed ids keep their generation for their next real.
        slots.entries.insert(id2, entry(real_key(0, 9)));
        slots.release_service(0);
        let (id, _) = slots.real(real_key(0, 7), |_| false).unwrap();
        assert_eq!(slots.generation(id), 3, "id {id}");
    }

    #[test]
    fn a_retired_real_configured_again_gets_its_id_back() {
        let mut slots = Slots::new(1, 4);
        let key = real_key(0, 1);
        let (id, _) = slots.real(key, |_| false).unwrap();
        slots.entries.insert(id, entry(key));
        slots.retire(&key).unwrap();
        assert_eq!(slots.real(key, |_| false).unwrap(), (id, false));
        assert_eq!(slots.reals_not_in(&BTreeSet::new()), [(key, id)]);
    }

    #[test]
    fn an_allocated_id_without_an_entry_is_not_handed_out_again() {
        let mut slots = Slots::new(1, 4);
        let (first, _) = slots.real(real_key(0, 1), |_| false).unwrap();
        let (second, _) = slots.real(real_key(0, 2), |_| false).unwrap();
        assert_ne!(first, second);
    }

    #[test]
    fn releasing_a_service_frees_all_its_reals() {
        let mut slots = Slots::new(2, 4);
        for (service, last) in [(0, 1), (0, 2), (1, 3)] {
            let key = real_key(service, last);
            let (id, _) = slots.real(key, |_| false).unwrap();
            slots.entries.insert(id, entry(key));
        }
        slots.retire(&real_key(0, 2)).unwrap();
        let mut released = slots.release_service(0);
        released.sort();
        assert_eq!(released, [0, 1]);
        assert_eq!(slots.reals_not_in(&BTreeSet::new()).len(), 1);
        // Freed ids are never-used ids again, taken lowest first.
        assert_eq!(slots.real(real_key(1, 9), |_| false).unwrap(), (0, true));
    }

    #[test]
    fn rebuild_restores_ids_and_retirement() {
        let active = real_key(0, 1);
        let mut gone = entry(real_key(0, 2));
        gone.flags = REAL_FLAG_RETIRED;
        let info = ServiceInfo {
            table_offset: 7,
            ..ServiceInfo::table_only(0, 0, 1, 0)
        };
        let mut slots = Slots::rebuild(
            4,
            4,
            [(service_key(1), info)],
            [
                (3, entry(active)),
                (1, gone),
                (0, RealInfo { family: 0, ..gone }),
            ],
        );
        assert_eq!(slots.service(service_key(1)).unwrap(), (0, false));
        assert_eq!(slots.services[&service_key(1)].info, Some(info));
        assert_eq!(slots.real(active, |_| false).unwrap(), (3, false));
        // Never-used ids (0, 2) come before the retired one (1).
        assert_eq!(slots.real(real_key(0, 5), |_| false).unwrap(), (0, true));
    }
}
