//! Flow table: an LRU hash from the client 5-tuple to the real it was scheduled to, so an
//! established flow keeps its real when weights or the set of reals change.

use lb_common::{FlowKey, FlowState};

use crate::maps::FLOWS;

/// The real of an established flow.
#[inline(always)]
pub fn lookup(flow: &FlowKey) -> Option<u32> {
    // SAFETY: the value is copied out at once; an LRU eviction racing with this read can
    // only yield a real id, which the caller validates against LB_REALS.
    unsafe { FLOWS.get(flow) }.map(|state| state.real_id)
}

/// Remember the real of a new flow. A failed insert (never expected with an LRU map) only
/// means the next packet is scheduled again.
#[inline(always)]
pub fn insert(flow: &FlowKey, real_id: u32) {
    let _ = FLOWS.insert(flow, FlowState { real_id }, 0);
}
