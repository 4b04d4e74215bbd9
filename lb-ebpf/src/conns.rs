//! Connection counts per real (`LB_REAL_CONNS`), as IPVS keeps them: a flow counts as
//! active or inactive by its state (`lb_common::conn::is_active`) and moves between the two
//! as its state changes. The least-connection schedulers read them. The data plane counts
//! what it does to flows (open, move, replace a timed-out one); userspace subtracts the
//! flows it removes when they time out, and corrects the counts of flows the LRU evicted
//! (`lb-userspace`'s `dataplane::xdp::conns`). Each change also bumps `changes`, which
//! tells userspace how far a recount made while packets flow can be off.

use core::intrinsics::{AtomicOrdering, atomic_xadd};

use lb_common::conn::is_active;

use crate::maps::REAL_CONNS;

/// A new flow of `real_id` in `state`.
#[inline(always)]
pub fn opened(real_id: u32, state: u8) {
    add(real_id, is_active(state), true);
}

/// A flow of `real_id` went from state `from` to `to`.
#[inline(always)]
pub fn moved(real_id: u32, from: u8, to: u8) {
    let (was, is) = (is_active(from), is_active(to));
    if was != is {
        add(real_id, was, false);
        add(real_id, is, true);
    }
}

/// A flow of `real_id` in `state` is gone (expired, or replaced by a new connection).
#[inline(always)]
pub fn closed(real_id: u32, state: u8) {
    add(real_id, is_active(state), false);
}

#[inline(always)]
fn add(real_id: u32, active: bool, up: bool) {
    let Some(counts) = REAL_CONNS.get_ptr_mut(real_id) else {
        return;
    };
    // SAFETY: `counts` points to a live array element (arrays never free elements) and is
    // aligned for u32. Every writer of these counters, here and in userspace (through its
    // mapping of the array), uses atomic operations (core has no atomic read-modify-write
    // types for BPF, hence the intrinsic: it compiles to BPF's atomic add).
    unsafe {
        let counter = if active {
            &raw mut (*counts).active
        } else {
            &raw mut (*counts).inactive
        };
        let delta = if up { 1 } else { u32::MAX };
        atomic_xadd::<u32, u32, { AtomicOrdering::Relaxed }>(counter, delta);
        atomic_xadd::<u32, u32, { AtomicOrdering::Relaxed }>(&raw mut (*counts).changes, 1);
    }
}
