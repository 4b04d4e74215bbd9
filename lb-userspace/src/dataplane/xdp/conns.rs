//! Each real's connection counts (`LB_REAL_CONNS`: ActiveConn and InActConn, what lc, wlc,
//! sed and nq schedule by), and how they stay equal to the flow table.
//!
//! The counting model: whoever changes the table counts the change, at once, atomically,
//! into the same memory.
//! - The data plane adds a flow it records, moves a flow whose state crosses between
//!   active and inactive (IPVS's `tcp_state_active_table`), and subtracts a timed-out flow
//!   it overwrites (`lb-ebpf`'s `conns`).
//! - Userspace subtracts each flow it removes because it timed out, by the state the flow
//!   had when it was taken out (`BPF_MAP_LOOKUP_AND_DELETE_ELEM` returns it), through its
//!   own mapping of the array (`BPF_F_MMAPABLE`), with atomic adds like the data plane's.
//!
//! One change is nobody's: the LRU evicting a flow to make room when the table is full.
//! Each full scan of the table recounts every real's flows, and a difference between that
//! recount and the counts is corrected when it is larger than the changes made while the
//! scan ran could explain (the data plane's `changes` counter and our own removals): those
//! are evictions, or the rare race of a removal with a packet of the same flow.

use std::{
    io,
    os::fd::BorrowedFd,
    sync::atomic::{AtomicU32, Ordering},
};

use lb_common::{ConnCounts, MAX_REALS, conn::is_active};

use super::sys::MappedArray;

/// `LB_REAL_CONNS`, mapped into this process.
pub struct ConnTable {
    mapped: MappedArray,
}

/// The `u32` fields of `ConnCounts`, in order.
const ACTIVE: usize = 0;
const INACTIVE: usize = 1;
const CHANGES: usize = 2;

impl ConnTable {
    /// Map array `map` (`LB_REAL_CONNS`, created with `BPF_F_MMAPABLE`).
    pub fn open(map: BorrowedFd<'_>) -> io::Result<Self> {
        Ok(Self {
            mapped: MappedArray::map(map, size_of::<ConnCounts>(), MAX_REALS)?,
        })
    }

    fn field(&self, id: u32, field: usize) -> Option<&AtomicU32> {
        if id >= MAX_REALS {
            return None;
        }
        let stride = size_of::<ConnCounts>().next_multiple_of(8);
        let at = self
            .mapped
            .at(id as usize * stride + field * 4, size_of::<u32>())?;
        // SAFETY: a u32-aligned address inside the live mapping (values start on 8-byte
        // boundaries, fields every 4 bytes); the kernel and we only access it atomically.
        Some(unsafe { AtomicU32::from_ptr(at.as_ptr().cast()) })
    }

    /// The counts of real `id` now.
    pub fn load(&self, id: u32) -> ConnCounts {
        let load = |field| {
            self.field(id, field)
                .map_or(0, |f| f.load(Ordering::Relaxed))
        };
        ConnCounts {
            active: load(ACTIVE),
            inactive: load(INACTIVE),
            changes: load(CHANGES),
            _reserved: 0,
        }
    }

    /// Add `active` and `inactive` (negative to subtract) to real `id`'s counts.
    pub fn add(&self, id: u32, active: i64, inactive: i64) {
        for (field, delta) in [(ACTIVE, active), (INACTIVE, inactive)] {
            if delta != 0
                && let Some(counter) = self.field(id, field)
            {
                // Two's complement: adding the wrapped delta subtracts.
                counter.fetch_add(delta as u32, Ordering::Relaxed);
            }
        }
    }

    /// A flow of real `id` in `state` was removed from the table.
    pub fn flow_removed(&self, id: u32, state: u8) {
        if is_active(state) {
            self.add(id, -1, 0);
        } else {
            self.add(id, 0, -1);
        }
    }

    /// Start real `id` (a newly used id) at zero.
    pub fn reset(&self, id: u32) {
        for field in [ACTIVE, INACTIVE] {
            if let Some(counter) = self.field(id, field) {
                counter.store(0, Ordering::Relaxed);
            }
        }
    }
}

/// What one full scan saw of one real.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Recount {
    /// Live flows in the table, active and inactive.
    pub active: u32,
    pub inactive: u32,
    /// The data plane's `changes` counter when the scan started.
    pub changes_before: u32,
    /// Flows of this real that we removed while the scan ran.
    pub removed_during: u32,
}

/// The correction (active, inactive) to add to `now` (read after the scan) so that it
/// matches `recount`, or `None` when the difference is within what the changes made during
/// the scan can explain.
pub fn correction(recount: &Recount, now: ConnCounts) -> Option<(i64, i64)> {
    let noise = i64::from(now.changes.wrapping_sub(recount.changes_before))
        + i64::from(recount.removed_during);
    let off = |counted: u32, seen: u32| {
        // Read as signed: a count a race took below zero is slightly negative, not huge.
        let difference = i64::from(seen) - i64::from(counted as i32);
        if difference.abs() > noise {
            difference
        } else {
            0
        }
    };
    let delta = (
        off(now.active, recount.active),
        off(now.inactive, recount.inactive),
    );
    (delta != (0, 0)).then_some(delta)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(active: u32, inactive: u32, changes: u32) -> ConnCounts {
        ConnCounts {
            changes,
            ..ConnCounts::new(active, inactive)
        }
    }

    #[test]
    fn counts_that_match_the_table_are_left_alone() {
        let recount = Recount {
            active: 10,
            inactive: 4,
            ..Recount::default()
        };
        assert_eq!(correction(&recount, counts(10, 4, 0)), None);
    }

    #[test]
    fn evicted_flows_leave_the_counts_after_a_quiet_scan() {
        // 300 flows were evicted: the counts say 1300 active, the table holds 1000.
        let recount = Recount {
            active: 1000,
            inactive: 50,
            changes_before: 7,
            removed_during: 0,
        };
        assert_eq!(correction(&recount, counts(1300, 50, 7)), Some((-300, 0)));
    }

    #[test]
    fn a_difference_the_scans_changes_explain_is_not_corrected() {
        // 40 changes while scanning (flows opened behind the scan, state moves), and 5 of
        // our own removals: a difference of up to 45 is noise.
        let recount = Recount {
            active: 1000,
            inactive: 200,
            changes_before: u32::MAX - 9,
            removed_during: 5,
        };
        let now = counts(1030, 185, 30);
        assert_eq!(correction(&recount, now), None);
        // Beyond it, the whole difference is corrected (the wrapped changes counter still
        // counts 40).
        assert_eq!(correction(&recount, counts(1100, 200, 30)), Some((-100, 0)));
    }

    #[test]
    fn a_count_taken_below_zero_is_brought_back() {
        let recount = Recount {
            active: 3,
            inactive: 0,
            ..Recount::default()
        };
        assert_eq!(correction(&recount, counts(u32::MAX, 0, 0)), Some((4, 0)));
    }
}
