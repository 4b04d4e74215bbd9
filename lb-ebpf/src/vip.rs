//! VIP lookup: the virtual service of a flow, by (destination address, destination port,
//! protocol).

use lb_common::{FlowKey, ServiceInfo, ServiceKey};

use crate::maps::SERVICES;

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
