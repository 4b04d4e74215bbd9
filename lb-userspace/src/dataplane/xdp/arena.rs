//! Space in `LB_TABLES` for the services' scheduling tables.
//!
//! Why an arena and not map-in-map: a table is replaced by writing the new one into free
//! space and then pointing the service entry at it (`ServiceInfo::table_offset`/`len`) in
//! one update of the service hash, which the kernel swaps in atomically. A packet copies
//! the service entry once, so it reads either the whole old table or the whole new one.
//! Map-in-map (an array of per-service inner arrays) would give the same atomic swap, but
//! needs BTF map definitions, one map (and file descriptor, and pin) per table, and an
//! extra lookup per packet; a single flat array keeps every table reachable from one pin,
//! sized once (`--sched-table-entries`), with tables of any length side by side (256 for
//! sh, 65537 for Maglev, a few for rr).
//!
//! The old range is not handed out again at once: a packet that copied the old service
//! entry may still be reading it. Released ranges wait `GRACE` (far longer than any run of
//! an XDP program, which holds the RCU read lock throughout) before they are free.

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

/// How long a released range stays unusable.
pub const GRACE: Duration = Duration::from_secs(1);

/// A range of `LB_TABLES`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Region {
    pub offset: u32,
    pub len: u32,
}

#[derive(Debug)]
pub struct Arena {
    size: u32,
    /// Free ranges by offset (never adjacent: merged on release).
    free: BTreeMap<u32, u32>,
    /// Released ranges and when they were released.
    quarantine: Vec<(Instant, Region)>,
}

impl Arena {
    pub fn new(size: u32) -> Self {
        let mut free = BTreeMap::new();
        if size > 0 {
            free.insert(0, size);
        }
        Self {
            size,
            free,
            quarantine: Vec::new(),
        }
    }

    pub fn size(&self) -> u32 {
        self.size
    }

    /// Mark `region` as in use (rebuilding from pinned maps). False if it is not free.
    pub fn reserve(&mut self, region: Region) -> bool {
        if region.len == 0 {
            return true;
        }
        let Some((&start, &len)) = self.free.range(..=region.offset).next_back() else {
            return false;
        };
        let (end, region_end) = (start + len, region.offset.saturating_add(region.len));
        if region_end > end {
            return false;
        }
        self.free.remove(&start);
        if region.offset > start {
            self.free.insert(start, region.offset - start);
        }
        if end > region_end {
            self.free.insert(region_end, end - region_end);
        }
        true
    }

    /// A free range of `len` entries (first fit), after freeing the ranges whose grace
    /// period is over. `None` if there is no room now.
    pub fn allocate(&mut self, len: u32, now: Instant) -> Option<Region> {
        if len == 0 {
            return Some(Region { offset: 0, len: 0 });
        }
        self.end_grace(now);
        let (&start, _) = self.free.iter().find(|&(_, &free_len)| free_len >= len)?;
        let region = Region { offset: start, len };
        self.reserve(region);
        Some(region)
    }

    /// When the next quarantined range becomes free, if any is waiting.
    pub fn next_free_at(&self) -> Option<Instant> {
        self.quarantine.iter().map(|(at, _)| *at + GRACE).min()
    }

    /// Give `region` back; it is free again after `GRACE`.
    pub fn release(&mut self, region: Region, now: Instant) {
        if region.len > 0 {
            self.quarantine.push((now, region));
        }
    }

    /// Entries free once every released range is out of its grace period.
    pub fn eventually_free(&self) -> u64 {
        self.free_entries()
            + self
                .quarantine
                .iter()
                .map(|(_, region)| u64::from(region.len))
                .sum::<u64>()
    }

    /// Entries free now (not counting quarantined ranges).
    pub fn free_entries(&self) -> u64 {
        self.free.values().map(|&l| u64::from(l)).sum()
    }

    fn end_grace(&mut self, now: Instant) {
        let (done, waiting): (Vec<_>, Vec<_>) = self
            .quarantine
            .drain(..)
            .partition(|(at, _)| now.duration_since(*at) >= GRACE);
        self.quarantine = waiting;
        for (_, region) in done {
            self.free_range(region);
        }
    }

    fn free_range(&mut self, region: Region) {
        let mut start = region.offset;
        let mut end = region.offset + region.len;
        if let Some((&before, &len)) = self.free.range(..start).next_back()
            && before + len == start
        {
            self.free.remove(&before);
            start = before;
        }
        if let Some(&len) = self.free.get(&end) {
            self.free.remove(&end);
            end += len;
        }
        self.free.insert(start, end - start);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn released_ranges_wait_out_the_grace_period_then_merge() {
        let t0 = Instant::now();
        let mut arena = Arena::new(100);
        let a = arena.allocate(40, t0).unwrap();
        let b = arena.allocate(60, t0).unwrap();
        assert_eq!((a.offset, b.offset), (0, 40));
        assert_eq!(arena.allocate(1, t0), None);
        arena.release(a, t0);
        arena.release(b, t0);
        assert_eq!(arena.allocate(1, t0 + GRACE / 2), None, "still in grace");
        assert_eq!(arena.next_free_at(), Some(t0 + GRACE));
        // Both ranges merged: one allocation of the whole arena fits.
        assert_eq!(
            arena.allocate(100, t0 + GRACE),
            Some(Region {
                offset: 0,
                len: 100
            })
        );
    }

    #[test]
    fn reserve_carves_pinned_tables_out_of_free_space() {
        let t0 = Instant::now();
        let mut arena = Arena::new(100);
        assert!(arena.reserve(Region {
            offset: 10,
            len: 20
        }));
        assert!(
            !arena.reserve(Region {
                offset: 25,
                len: 10
            }),
            "overlaps"
        );
        assert_eq!(arena.free_entries(), 80);
        assert_eq!(arena.allocate(10, t0).unwrap().offset, 0);
        assert_eq!(arena.allocate(10, t0).unwrap().offset, 30);
        assert!(arena.reserve(Region { offset: 0, len: 0 }));
    }
}
