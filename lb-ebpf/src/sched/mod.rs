//! Scheduling of new flows: the real a new flow goes to, by the service's algorithm.
//!
//! Userspace computes every table (rr/wrr sequences, sh/dh buckets, Maglev lookup tables,
//! the lc family's list of reals) into a free range of the `LB_TABLES` arena and then
//! points the service entry at it in one map update; the data plane only reads them (it
//! writes only its own state: rr cursors, lblc/lblcr's `LB_LOCALITY`). A packet
//! copies the service entry once, so it reads either the old table or the new one, never a
//! mix (see `lb_userspace::dataplane::xdp::arena` for why the old range is not reused at
//! once).

mod hashing;
mod least_conn;
mod locality;
mod sequence;
mod two_choices;

use lb_common::{
    REAL_FLAG_RETIRED, ServiceInfo,
    sched::{
        KIND_DEST_HASH, KIND_LBLC, KIND_LBLCR, KIND_LC, KIND_MAGLEV, KIND_NQ, KIND_OVF, KIND_SED,
        KIND_SEQUENCE, KIND_SOURCE_HASH, KIND_TWOS, KIND_WLC,
    },
};

use crate::{
    maps::{REALS, TABLES},
    parse::Flow,
};

/// What the global scheduling functions return when no real can take the flow.
const NO_REAL: u32 = u32::MAX;

/// Real id for a new flow of `service` at `now`, or `None` if no real can take it.
#[inline(always)]
pub fn pick(service: &ServiceInfo, flow: &Flow, now: u64) -> Option<u32> {
    match service.sched {
        KIND_SEQUENCE => sequence::pick(service),
        KIND_SOURCE_HASH => hashing::source_hash(service, flow),
        KIND_DEST_HASH => hashing::dest_hash(service, flow),
        KIND_MAGLEV => hashing::maglev(service, flow),
        KIND_LC | KIND_WLC | KIND_SED | KIND_NQ | KIND_OVF => least_conn::pick(service),
        KIND_TWOS => two_choices::pick(service),
        KIND_LBLC | KIND_LBLCR => locality::pick(service, flow, now),
        _ => None,
    }
}

/// Entry `pos` of the service's table.
#[inline(always)]
fn table_entry(service: &ServiceInfo, pos: u32) -> Option<u32> {
    if pos >= service.table_len {
        return None;
    }
    TABLES.get(service.table_offset.wrapping_add(pos)).copied()
}

/// The weight of real `id` if it can take new flows of `service`: in use, of this
/// service, not retired, weight above 0 (IPVS's `is_unavailable` without overload).
#[inline(always)]
fn available_weight(service: &ServiceInfo, id: u32) -> Option<u16> {
    let real = REALS.get(id)?;
    (real.family != 0
        && real.service_id == service.id
        && real.flags & REAL_FLAG_RETIRED == 0
        && real.weight > 0)
        .then_some(real.weight)
}
