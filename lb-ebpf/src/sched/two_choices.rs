//! twos (IPVS's power of two choices, `ip_vs_twos.c`): two reals drawn at random with
//! probability by weight, and of the two the one with fewer connections per weight
//! (`active * 256 + inactive`, as wlc counts; the first drawn on a tie).
//!
//! IPVS draws by walking the list with two random weights below the total. Here the
//! service's table is a weighted multiset of its available reals (wrr's cycle: each real
//! as often as its weight over the weights' gcd), so a draw is one random slot of it, with
//! no loop.

use lb_common::{ConnCounts, ServiceInfo};

use aya_ebpf::helpers::bpf_get_prandom_u32;

use super::{NO_REAL, available_weight, table_entry};
use crate::maps::REAL_CONNS;

#[inline(always)]
pub fn pick(service: &ServiceInfo) -> Option<u32> {
    let id = lb_sched_two_choices(service.id, service.table_offset, service.table_len);
    (id != NO_REAL).then_some(id)
}

/// The choice for service `service_id` with the table at `table_offset`/`table_len`;
/// `NO_REAL` if neither draw can take the flow (only while userspace swaps a table out
/// for one without a real it just made unavailable). A global BPF function, checked once
/// by the verifier (see `least_conn`).
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn lb_sched_two_choices(service_id: u32, table_offset: u32, table_len: u32) -> u32 {
    if table_len == 0 {
        return NO_REAL;
    }
    let service = ServiceInfo::table_only(service_id, table_offset, table_len, 0);
    // SAFETY: helper without arguments.
    let (first, second) = unsafe { (bpf_get_prandom_u32(), bpf_get_prandom_u32()) };
    let first = drawn(&service, first % table_len);
    let second = drawn(&service, second % table_len);
    match (first, second) {
        (Some((id1, weight1, overhead1)), Some((id2, weight2, overhead2))) => {
            if weight2 * overhead1 > weight1 * overhead2 {
                id2
            } else {
                id1
            }
        }
        (Some((id, ..)), None) | (None, Some((id, ..))) => id,
        (None, None) => NO_REAL,
    }
}

/// The real at `pos` if it can take the flow: its id, weight and overhead.
#[inline(always)]
fn drawn(service: &ServiceInfo, pos: u32) -> Option<(u32, i64, i64)> {
    let id = table_entry(service, pos)?;
    let weight = available_weight(service, id)?;
    let counts = REAL_CONNS.get(id).copied().unwrap_or(ConnCounts::new(0, 0));
    // Signed, as in `least_conn`: a count a race took below zero reads as slightly negative.
    let overhead = i64::from(counts.active as i32) * 256 + i64::from(counts.inactive as i32);
    Some((id, i64::from(weight), overhead))
}
