//! rr and wrr: the table is one cycle of the sequence (IPVS's order, computed in
//! userspace; reals with weight 0 are not in it). A per-CPU cursor walks it, so CPUs never
//! contend; over many flows each CPU's share follows the weights.
//!
//! Userspace updates a real's entry (weight 0, retired) just before it publishes the table
//! without it; a packet in between skips such an entry, at most `SKIPS` in a row.

use lb_common::ServiceInfo;

use super::{NO_REAL, available_weight, table_entry};
use crate::maps::RR_CURSORS;

/// Unavailable entries skipped before giving up.
const SKIPS: u32 = 4;

#[inline(always)]
pub fn pick(service: &ServiceInfo) -> Option<u32> {
    let id = lb_sched_sequence(service.id, service.table_offset, service.table_len);
    (id != NO_REAL).then_some(id)
}

/// The next available real of the sequence of service `service_id` (table at
/// `table_offset`/`table_len`); `NO_REAL` if none. A global BPF function, checked once by
/// the verifier (see `least_conn`).
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn lb_sched_sequence(service_id: u32, table_offset: u32, table_len: u32) -> u32 {
    let service = ServiceInfo::table_only(service_id, table_offset, table_len, 0);
    next_available(&service).unwrap_or(NO_REAL)
}

#[inline(always)]
fn next_available(service: &ServiceInfo) -> Option<u32> {
    let len = service.table_len;
    if len == 0 {
        return None;
    }
    let cursor = RR_CURSORS.get_ptr_mut(service.id)?;
    // SAFETY: per-CPU slot of this service; XDP programs do not nest on one CPU.
    let mut pos = unsafe { *cursor };
    for _ in 0..=SKIPS {
        if pos >= len {
            pos = 0;
        }
        let id = table_entry(service, pos)?;
        pos += 1;
        if available_weight(service, id).is_some() {
            // SAFETY: as above.
            unsafe { *cursor = pos };
            return Some(id);
        }
    }
    // SAFETY: as above.
    unsafe { *cursor = pos };
    None
}
