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

/// One reply of a NAT or FullNAT flow of real `real_id` (`conntrack::NO_REAL`: the flow
/// is gone, not counted), translated towards the client: ipvsadm's OutPkts/OutBytes.
#[inline(never)]
pub fn count_reply(real_id: u32, bytes: usize) {
    let Some(real) = crate::maps::real(real_id) else {
        return;
    };
    add_out(SERVICE_STATS.get_ptr_mut(real.service_id), bytes);
    add_out(REAL_STATS.get_ptr_mut(real_id), bytes);
}

#[inline(always)]
fn add_out(stats: Option<*mut TrafficStats>, bytes: usize) {
    if let Some(stats) = stats {
        // SAFETY: per-CPU slot; XDP programs do not nest on one CPU.
        unsafe {
            (*stats).out_packets += 1;
            (*stats).out_bytes += bytes as u64;
        }
    }
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
