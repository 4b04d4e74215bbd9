//! Per-CPU counters: per outcome, per service and per real.

use lb_common::{Outcome, TrafficStats};

use crate::maps::{OUTCOMES, REAL_STATS, SERVICE_STATS};

#[inline(always)]
pub fn count_outcome(outcome: Outcome) {
    if let Some(counter) = OUTCOMES.get_ptr_mut(outcome as u32) {
        // SAFETY: per-CPU slot; XDP programs do not nest on one CPU.
        unsafe { *counter += 1 };
    }
}

/// One forwarded packet of `bytes` bytes, for the service and the real; `new_flow` when it
/// started a flow (was scheduled).
#[inline(always)]
pub fn count_forwarded(service_id: u32, real_id: u32, bytes: usize, new_flow: bool) {
    // Two separate calls: iterating over both pointers lets LLVM test them for null with
    // one OR of the pointers, which the verifier rejects.
    add(SERVICE_STATS.get_ptr_mut(service_id), bytes, new_flow);
    add(REAL_STATS.get_ptr_mut(real_id), bytes, new_flow);
}

#[inline(always)]
fn add(stats: Option<*mut TrafficStats>, bytes: usize, new_flow: bool) {
    if let Some(stats) = stats {
        // SAFETY: per-CPU slot; XDP programs do not nest on one CPU.
        unsafe {
            (*stats).packets += 1;
            (*stats).bytes += bytes as u64;
            (*stats).new_flows += u64::from(new_flow);
        }
    }
}
