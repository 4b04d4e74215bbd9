//! VIP lookup: the virtual service of a flow, by (destination address, destination port,
//! protocol).

use lb_common::{FlowKey, ServiceInfo, ServiceKey};

use crate::maps::SERVICES;

#[inline(always)]
pub fn lookup(flow: &FlowKey) -> Option<&'static ServiceInfo> {
    let key = ServiceKey {
        addr: flow.dst,
        port: flow.dport,
        proto: flow.proto,
        family: flow.family,
    };
    // SAFETY: SERVICES is preallocated; userspace replaces values with whole-element
    // updates and this program only reads, so a torn read can at worst pick a stale ring.
    unsafe { SERVICES.get(key) }
}
