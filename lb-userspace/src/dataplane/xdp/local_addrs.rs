//! FullNAT local address ids: one `LB_LOCAL_ADDRS` entry per distinct local address over
//! all pools. Flows store the id of their local address, so an id is never given to
//! another address while a flow may still use it: an address no pool has any more is
//! *retired* (its entry and its id stay), and its id is freed only when a sweep found no
//! flow on it (`release_unused`). Ids are read back from the pinned map on start, so a
//! restarted lbd keeps them.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
};

use lb_common::LocalAddr;

use super::keys::{addr_bytes, addr_from};

pub struct LocalAddrs {
    /// Address of each id in use (in a pool or retired).
    by_id: BTreeMap<u32, IpAddr>,
    /// Ids of the addresses some pool has.
    in_pools: BTreeSet<u32>,
    capacity: u32,
}

impl LocalAddrs {
    /// From the map's entries (`family == 0`: free). All count as in a pool until the
    /// first `retain`.
    pub fn rebuild(entries: impl IntoIterator<Item = (u32, LocalAddr)>, capacity: u32) -> Self {
        let by_id: BTreeMap<u32, IpAddr> = entries
            .into_iter()
            .filter_map(|(id, entry)| Some((id, addr_from(entry.addr, entry.family)?)))
            .collect();
        let in_pools = by_id.keys().copied().collect();
        Self {
            by_id,
            in_pools,
            capacity,
        }
    }

    /// The id of `addr` (now in a pool), and the entry to write if it was not in the map;
    /// `None` when every id is taken.
    pub fn id(&mut self, addr: IpAddr) -> Option<(u32, Option<LocalAddr>)> {
        if let Some((&id, _)) = self.by_id.iter().find(|(_, a)| **a == addr) {
            self.in_pools.insert(id);
            return Some((id, None));
        }
        let id = (0..self.capacity).find(|id| !self.by_id.contains_key(id))?;
        self.by_id.insert(id, addr);
        self.in_pools.insert(id);
        Some((id, Some(entry_of(addr))))
    }

    /// Retire the addresses not in `wanted` (their ids stay taken).
    pub fn retain(&mut self, wanted: &BTreeSet<IpAddr>) {
        let by_id = &self.by_id;
        self.in_pools
            .retain(|id| by_id.get(id).is_some_and(|a| wanted.contains(a)));
    }

    /// Free the ids of retired addresses no flow uses (`in_use`: the ids of the live
    /// FullNAT flows); returns them, for their entries to be cleared.
    pub fn release_unused(&mut self, in_use: &BTreeSet<u32>) -> Vec<u32> {
        let free: Vec<u32> = self
            .by_id
            .keys()
            .filter(|id| !self.in_pools.contains(id) && !in_use.contains(id))
            .copied()
            .collect();
        for id in &free {
            self.by_id.remove(id);
        }
        free
    }

    /// The address with id `id` (in a pool or retired).
    pub fn addr(&self, id: u32) -> Option<IpAddr> {
        self.by_id.get(&id).copied()
    }
}

fn entry_of(addr: IpAddr) -> LocalAddr {
    let (bytes, family) = addr_bytes(addr);
    LocalAddr {
        addr: bytes,
        family,
        _pad: [0; 3],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn ids_are_stable_and_bounded() {
        let mut addrs = LocalAddrs::rebuild([], 2);
        let (a, written) = addrs.id(ip("192.0.2.1")).unwrap();
        assert!(written.is_some());
        assert_eq!(addrs.id(ip("192.0.2.1")).unwrap(), (a, None));
        let (b, _) = addrs.id(ip("2001:db8::1")).unwrap();
        assert_ne!(a, b);
        assert!(addrs.id(ip("192.0.2.3")).is_none(), "capacity 2");
        assert_eq!(addrs.addr(b), Some(ip("2001:db8::1")));
    }

    #[test]
    fn a_retired_id_is_reused_only_once_no_flow_is_on_it() {
        let mut addrs = LocalAddrs::rebuild([], 2);
        let (a, _) = addrs.id(ip("192.0.2.1")).unwrap();
        addrs.id(ip("192.0.2.2")).unwrap();
        addrs.retain(&[ip("192.0.2.2")].into());
        // A flow still uses the retired address: its id stays, with its address.
        assert!(addrs.release_unused(&[a].into()).is_empty());
        assert!(addrs.id(ip("192.0.2.3")).is_none(), "no id free yet");
        assert_eq!(addrs.addr(a), Some(ip("192.0.2.1")));
        // Back in a pool before its flows ended: the same id.
        addrs.retain(&[ip("192.0.2.1"), ip("192.0.2.2")].into());
        assert_eq!(addrs.id(ip("192.0.2.1")).unwrap(), (a, None));
        // Retired again and unused: freed, then taken by a new address.
        addrs.retain(&[ip("192.0.2.2")].into());
        assert_eq!(addrs.release_unused(&BTreeSet::new()), [a]);
        let (c, written) = addrs.id(ip("192.0.2.3")).unwrap();
        assert_eq!((c, written.is_some()), (a, true));
    }

    #[test]
    fn rebuilt_from_the_map_keeps_ids() {
        let mut addrs = LocalAddrs::rebuild(
            [(0, LocalAddr::default()), (5, entry_of(ip("198.51.100.7")))],
            8,
        );
        assert_eq!(addrs.id(ip("198.51.100.7")).unwrap(), (5, None));
        assert_eq!(addrs.id(ip("198.51.100.8")).unwrap().0, 0);
    }
}
