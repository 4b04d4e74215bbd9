//! FullNAT local address ids: one `LB_LOCAL_ADDRS` entry per distinct local address over
//! all pools. Flows store the id of their local address, so an address keeps its id for
//! as long as a pool has it, also across restarts (ids are read back from the pinned map).
//! An address no pool has any more gives its id up; the entry keeps the address until the
//! id is taken by another one, so the few flows still on it are not rewritten to nothing.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
};

use lb_common::LocalAddr;

use super::keys::{addr_bytes, addr_from};

pub struct LocalAddrs {
    by_addr: BTreeMap<IpAddr, u32>,
    capacity: u32,
}

impl LocalAddrs {
    /// From the map's entries (`family == 0`: free).
    pub fn rebuild(entries: impl IntoIterator<Item = (u32, LocalAddr)>, capacity: u32) -> Self {
        let by_addr = entries
            .into_iter()
            .filter_map(|(id, entry)| Some((addr_from(entry.addr, entry.family)?, id)))
            .collect();
        Self { by_addr, capacity }
    }

    /// The id of `addr`, and the entry to write if it was not in the map yet; `None` when
    /// every id is taken.
    pub fn id(&mut self, addr: IpAddr) -> Option<(u32, Option<LocalAddr>)> {
        if let Some(&id) = self.by_addr.get(&addr) {
            return Some((id, None));
        }
        let used: BTreeSet<u32> = self.by_addr.values().copied().collect();
        let id = (0..self.capacity).find(|id| !used.contains(id))?;
        self.by_addr.insert(addr, id);
        let (bytes, family) = addr_bytes(addr);
        let entry = LocalAddr {
            addr: bytes,
            family,
            _pad: [0; 3],
        };
        Some((id, Some(entry)))
    }

    /// Give up the ids of the addresses not in `wanted`.
    pub fn retain(&mut self, wanted: &BTreeSet<IpAddr>) {
        self.by_addr.retain(|addr, _| wanted.contains(addr));
    }

    /// The address with id `id`.
    pub fn addr(&self, id: u32) -> Option<IpAddr> {
        self.by_addr
            .iter()
            .find_map(|(addr, &i)| (i == id).then_some(*addr))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn ids_are_stable_reused_and_bounded() {
        let mut addrs = LocalAddrs::rebuild([], 2);
        let (a, written) = addrs.id(ip("192.0.2.1")).unwrap();
        assert!(written.is_some());
        assert_eq!(addrs.id(ip("192.0.2.1")).unwrap(), (a, None));
        let (b, _) = addrs.id(ip("2001:db8::1")).unwrap();
        assert_ne!(a, b);
        assert!(addrs.id(ip("192.0.2.3")).is_none(), "capacity 2");
        addrs.retain(&[ip("2001:db8::1")].into());
        let (c, _) = addrs.id(ip("192.0.2.3")).unwrap();
        assert_eq!(c, a, "the freed id is taken");
        assert_eq!(addrs.addr(b), Some(ip("2001:db8::1")));
    }

    #[test]
    fn rebuilt_from_the_map_keeps_ids() {
        let (bytes, family) = addr_bytes(ip("198.51.100.7"));
        let entry = LocalAddr {
            addr: bytes,
            family,
            _pad: [0; 3],
        };
        let mut addrs = LocalAddrs::rebuild([(0, LocalAddr::default()), (5, entry)], 8);
        assert_eq!(addrs.id(ip("198.51.100.7")).unwrap(), (5, None));
        assert_eq!(addrs.id(ip("198.51.100.8")).unwrap().0, 0);
    }
}
