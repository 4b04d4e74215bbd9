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

/// One forwarded packet of `bytes` bytes, for the service and the real.
#[inline(always)]
pub fn count_traffic(service_id: u32, real_id: u32, bytes: usize) {
    add(SERVICE_STATS.get_ptr_mut(service_id), bytes);
    add(REAL_STATS.get_ptr_mut(real_id), bytes);
}

/// One new flow scheduled.
#[inline(always)]
pub fn count_new_flow(service_id: u32, real_id: u32) {
    for stats in [
        SERVICE_STATS.get_ptr_mut(service_id),
        REAL_STATS.get_ptr_mut(real_id),
    ]
    .into_iter()
    .flatten()
    {
        // SAFETY: per-CPU slot; XDP programs do not nest on one CPU.
        unsafe { (*stats).new_flows += 1 };
    }
}

#[inline(always)]
fn add(stats: Option<*mut TrafficStats>, bytes: usize) {
    if let Some(stats) = stats {
        // SAFETY: per-CPU slot; XDP programs do not nest on one CPU.
        unsafe {
            (*stats).packets += 1;
            (*stats).bytes += bytes as u64;
        }
    }
}
