//! Scheduling of new flows. Userspace computes each service's sequence of reals (rr: each
//! real once; wrr: IPVS's weighted round-robin order) into the inactive one of two rings and
//! then flips `ServiceInfo::ring_slot`, so a packet never sees a half-written sequence.
//! Here a per-CPU cursor walks the active ring.

use lb_common::{RING_SIZE, ServiceInfo, ring_index};

use crate::maps::{RINGS, RR_CURSORS};

/// Real id for a new flow of `service`, or `None` if no real can take new flows.
#[inline(always)]
pub fn pick(service: &ServiceInfo) -> Option<u32> {
    let len = service.ring_len;
    if len == 0 || len > RING_SIZE {
        return None;
    }
    let cursor = RR_CURSORS.get_ptr_mut(service.id)?;
    // SAFETY: per-CPU slot of this service; XDP programs do not nest on one CPU.
    let mut pos = unsafe { *cursor };
    if pos >= len {
        pos = 0;
    }
    // SAFETY: as above.
    unsafe { *cursor = pos + 1 };
    RINGS
        .get(ring_index(service.id, service.ring_slot & 1, pos))
        .copied()
}
