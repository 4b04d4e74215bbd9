//! VIP lookup: the virtual service of a flow, by (destination address, destination port,
//! protocol), behind a filter that answers "no service" for most other packets without a
//! hash lookup.

use lb_common::{FEATURE_SERVICE_FILTER, FlowKey, ServiceInfo, ServiceKey};

use crate::maps::{SERVICES, SETTINGS};

/// Whether `flow` may be for a virtual service: its bit in `Settings::services` is set, or
/// userspace has not written the filter yet. `false` is certain; `true` is to be checked
/// by a lookup.
#[inline(always)]
pub fn may_serve(flow: &FlowKey) -> bool {
    let Some(settings) = SETTINGS.get(0) else {
        return true;
    };
    if settings.features & FEATURE_SERVICE_FILTER == 0 {
        return true;
    }
    let bit = lb_common::hash::service_bit(&flow.dst, flow.dport, flow.proto);
    match settings.services.get((bit / 64) as usize) {
        Some(word) => (word >> (bit % 64)) & 1 != 0,
        None => true,
    }
}

/// A copy of the service entry, read once.
#[inline(always)]
pub fn lookup(flow: &FlowKey) -> Option<ServiceInfo> {
    let key = ServiceKey {
        addr: flow.dst,
        port: flow.dport,
        proto: flow.proto,
        family: flow.family,
    };
    // SAFETY: LB_SERVICES has no preallocation: an update links a new element and frees
    // the old one only after RCU readers such as this program are done, so the element
    // read here is never rewritten under us. It is copied at once all the same.
    unsafe { SERVICES.get(key) }.copied()
}
