//! rr and wrr: the table is one cycle of the sequence (IPVS's order, computed in
//! userspace; reals with weight 0 are not in it). A per-CPU cursor walks it, so CPUs never
//! contend; over many flows each CPU's share follows the weights.

use lb_common::ServiceInfo;

use super::table_entry;
use crate::maps::RR_CURSORS;

#[inline(always)]
pub fn pick(service: &ServiceInfo) -> Option<u32> {
    let len = service.table_len;
    if len == 0 {
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
    table_entry(service, pos)
}
