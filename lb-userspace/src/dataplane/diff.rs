//! What changes between two desired states, as the smallest list of updates: services and
//! reals added or removed, a service's settings changed, a real's weight changed. A reload
//! logs it. The backends do not take this list: they reconcile with the whole desired
//! state (the XDP backend keeps its service and real ids and established flows, and
//! rewrites entries and scheduling tables), so a wrong list cannot corrupt them.

use std::{collections::BTreeMap, fmt, net::IpAddr};

use super::{DesiredState, RealSpec, ServiceSpec};
use crate::model::{Protocol, VirtualServer};

/// A virtual service's identity: address, port, protocol; or, for a firewall-mark
/// service, its mark and family (address unspecified, port 0, TCP).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ServiceId {
    pub addr: IpAddr,
    pub port: u16,
    pub protocol: Protocol,
    pub fwmark: Option<u32>,
}

impl ServiceId {
    pub fn of(vs: &VirtualServer) -> Self {
        Self {
            addr: vs.addr,
            port: vs.port,
            protocol: vs.protocol,
            fwmark: vs.fwmark,
        }
    }

    pub fn of_spec(spec: &ServiceSpec) -> Self {
        Self {
            addr: spec.addr,
            port: spec.port,
            protocol: spec.protocol,
            fwmark: spec.fwmark,
        }
    }

    /// Whether `vs` is this service.
    pub fn is(&self, vs: &VirtualServer) -> bool {
        *self == Self::of(vs)
    }
}

impl fmt::Display for ServiceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // ipvsadm's names: `FWM 1`, `FWM 1 IPv6`, `TCP 10.0.0.1:80`, `UDP [::1]:53`.
        match (self.fwmark, self.addr) {
            (Some(mark), IpAddr::V4(_)) => write!(f, "FWM {mark}"),
            (Some(mark), IpAddr::V6(_)) => write!(f, "FWM {mark} IPv6"),
            (None, IpAddr::V4(a)) => write!(f, "{} {a}:{}", self.protocol.name(), self.port),
            (None, IpAddr::V6(a)) => write!(f, "{} [{a}]:{}", self.protocol.name(), self.port),
        }
    }
}

/// One update.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    AddService(ServiceId),
    RemoveService(ServiceId),
    /// Scheduler, flags, persistence, forwarding method, pools: anything but the reals.
    ChangeService(ServiceId),
    AddReal(ServiceId, IpAddr, u16),
    RemoveReal(ServiceId, IpAddr, u16),
    Weight {
        service: ServiceId,
        addr: IpAddr,
        port: u16,
        from: u32,
        to: u32,
    },
    Timeouts,
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Change::AddService(s) => write!(f, "add service {s}"),
            Change::RemoveService(s) => write!(f, "remove service {s}"),
            Change::ChangeService(s) => write!(f, "change service {s}"),
            Change::AddReal(s, addr, port) => write!(f, "add real {addr} {port} to {s}"),
            Change::RemoveReal(s, addr, port) => write!(f, "remove real {addr} {port} from {s}"),
            Change::Weight {
                service,
                addr,
                port,
                from,
                to,
            } => write!(
                f,
                "weight of real {addr} {port} of {service}: {from} -> {to}"
            ),
            Change::Timeouts => write!(f, "change connection timeouts"),
        }
    }
}

/// The updates from `old` to `new`, services in address order, reals in address order.
pub fn changes(old: &DesiredState, new: &DesiredState) -> Vec<Change> {
    let old_services = by_id(&old.services);
    let new_services = by_id(&new.services);
    let mut changes = Vec::new();
    if old.timeouts != new.timeouts {
        changes.push(Change::Timeouts);
    }
    for id in old_services.keys() {
        if !new_services.contains_key(id) {
            changes.push(Change::RemoveService(*id));
        }
    }
    for (id, after) in &new_services {
        let Some(before) = old_services.get(id) else {
            changes.push(Change::AddService(*id));
            changes.extend(
                after
                    .reals
                    .iter()
                    .map(|r| Change::AddReal(*id, r.addr, r.port)),
            );
            continue;
        };
        if settings(before) != settings(after) {
            changes.push(Change::ChangeService(*id));
        }
        changes.extend(real_changes(*id, &before.reals, &after.reals));
    }
    changes
}

fn by_id(services: &[ServiceSpec]) -> BTreeMap<ServiceId, &ServiceSpec> {
    services
        .iter()
        .map(|s| (ServiceId::of_spec(s), s))
        .collect()
}

/// A service without its reals.
fn settings(spec: &ServiceSpec) -> ServiceSpec {
    ServiceSpec {
        reals: Vec::new(),
        ..spec.clone()
    }
}

fn real_changes(service: ServiceId, before: &[RealSpec], after: &[RealSpec]) -> Vec<Change> {
    let before: BTreeMap<(IpAddr, u16), u32> = before
        .iter()
        .map(|r| ((r.addr, r.port), r.weight))
        .collect();
    let after: BTreeMap<(IpAddr, u16), u32> =
        after.iter().map(|r| ((r.addr, r.port), r.weight)).collect();
    let mut changes = Vec::new();
    for ((addr, port), from) in &before {
        match after.get(&(*addr, *port)) {
            None => changes.push(Change::RemoveReal(service, *addr, *port)),
            Some(to) if to != from => changes.push(Change::Weight {
                service,
                addr: *addr,
                port: *port,
                from: *from,
                to: *to,
            }),
            Some(_) => {}
        }
    }
    for (addr, port) in after.keys() {
        if !before.contains_key(&(*addr, *port)) {
            changes.push(Change::AddReal(service, *addr, *port));
        }
    }
    changes
}
