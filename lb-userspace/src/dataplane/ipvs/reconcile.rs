//! From the desired state and what the kernel's IPVS table holds, the operations that make
//! the table match: computed whole before anything is sent (so an unsupported forwarding
//! method changes nothing), without I/O (so it is tested on the host).
//!
//! Rules, keepalived's: services this backend owns (added, or adopted because the
//! configuration declares them) and no longer wanted are removed; services it never owned
//! are left alone whatever they hold. A wanted service that exists is edited in place
//! (SET_SERVICE rebinds the scheduler and rewrites flags, timeout and netmask), and its
//! destinations are made to match: removed, edited (SET_DEST changes weight and forwarding
//! method alike: `__ip_vs_update_dest` rehashes the real on a method change), added.
//! Timeouts are set only where they differ from the kernel's.

use std::collections::{BTreeMap, BTreeSet};

use lb_common::conn::{self, Timeouts};

use super::messages::{
    DestKey, DestSettings, KernelTimeouts, Netmask, Request, ServiceKey, ServiceSettings,
    TimeoutUpdate, Tunnel, fwd, svc_flag,
};
use crate::{
    dataplane::{DataplaneError, DesiredState, ServiceSpec},
    model::{ForwardMethod, TunnelChecksum, TunnelType},
};

/// A service as the kernel holds it (destinations only for the services wanted).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelEntry {
    pub settings: ServiceSettings,
    pub dests: BTreeMap<DestKey, DestSettings>,
}

/// The kernel's IPVS table as far as reconciling needs it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KernelTable {
    pub services: BTreeMap<ServiceKey, KernelEntry>,
    pub timeouts: KernelTimeouts,
}

/// A service as it should be.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WantedService {
    pub settings: ServiceSettings,
    pub dests: BTreeMap<DestKey, DestSettings>,
}

/// One change to the kernel's table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Operation {
    SetTimeouts(TimeoutUpdate),
    AddService(ServiceKey, ServiceSettings),
    EditService(ServiceKey, ServiceSettings),
    RemoveService(ServiceKey),
    AddDest(ServiceKey, DestKey, DestSettings),
    EditDest(ServiceKey, DestKey, DestSettings),
    RemoveDest(ServiceKey, DestKey),
}

impl Operation {
    pub fn request(&self) -> Request {
        match self {
            Operation::SetTimeouts(update) => Request::SetConfig(*update),
            Operation::AddService(key, settings) => Request::NewService(*key, settings.clone()),
            Operation::EditService(key, settings) => Request::SetService(*key, settings.clone()),
            Operation::RemoveService(key) => Request::DelService(*key),
            Operation::AddDest(service, dest, settings) => {
                Request::NewDest(*service, *dest, *settings)
            }
            Operation::EditDest(service, dest, settings) => {
                Request::SetDest(*service, *dest, *settings)
            }
            Operation::RemoveDest(service, dest) => Request::DelDest(*service, *dest),
        }
    }

    /// What the operation does, for errors: `adding service TCP 10.0.0.1:80`.
    pub fn describe(&self) -> String {
        match self {
            Operation::SetTimeouts(update) => {
                let show = |v: Option<u32>| v.map_or("-".to_owned(), |v| v.to_string());
                format!(
                    "setting IPVS timeouts (tcp {} tcpfin {} udp {})",
                    show(update.tcp),
                    show(update.tcp_fin),
                    show(update.udp)
                )
            }
            Operation::AddService(key, _) => format!("adding service {key}"),
            Operation::EditService(key, _) => format!("changing service {key}"),
            Operation::RemoveService(key) => format!("removing service {key}"),
            Operation::AddDest(service, dest, _) => {
                format!("adding real {dest} to service {service}")
            }
            Operation::EditDest(service, dest, _) => {
                format!("changing real {dest} of service {service}")
            }
            Operation::RemoveDest(service, dest) => {
                format!("removing real {dest} from service {service}")
            }
        }
    }
}

/// IPVS's forwarding method, or the error for one IPVS does not have.
fn forward_code(forward: ForwardMethod) -> Result<u32, DataplaneError> {
    match forward {
        ForwardMethod::Dr => Ok(fwd::DROUTE),
        ForwardMethod::Tun => Ok(fwd::TUNNEL),
        ForwardMethod::Nat => Ok(fwd::MASQ),
        ForwardMethod::FullNat => Err(DataplaneError::Unsupported {
            backend: "ipvs",
            forward,
        }),
    }
}

/// IPVS's tunnel settings (`IP_VS_CONN_F_TUNNEL_TYPE_*`, `IP_VS_TUNNEL_ENCAP_FLAG_*`).
fn tunnel(tunnel: TunnelType) -> Tunnel {
    let flags = |checksum| match checksum {
        TunnelChecksum::None => 0,
        TunnelChecksum::Checksum => 1,
        TunnelChecksum::Remote => 2,
    };
    match tunnel {
        TunnelType::Ipip => Tunnel::default(),
        TunnelType::Gue { port, checksum } => Tunnel {
            kind: 1,
            port,
            flags: flags(checksum),
        },
        TunnelType::Gre { checksum } => Tunnel {
            kind: 2,
            port: 0,
            flags: flags(checksum),
        },
    }
}

/// The key of a service spec.
pub fn service_key(spec: &ServiceSpec) -> ServiceKey {
    ServiceKey::from(crate::dataplane::diff::ServiceId::of_spec(spec))
}

/// IPVS's settings for a service spec.
fn service_settings(spec: &ServiceSpec) -> ServiceSettings {
    let mut flags = 0;
    if spec.sched_flags.fallback {
        flags |= svc_flag::SCHED1;
    }
    if spec.sched_flags.port {
        flags |= svc_flag::SCHED2;
    }
    if spec.one_packet {
        flags |= svc_flag::ONEPACKET;
    }
    let full_prefix = if spec.addr.is_ipv4() { 32 } else { 128 };
    let (timeout_secs, prefix_len) = match spec.persistence {
        Some(persistence) => {
            flags |= svc_flag::PERSISTENT;
            (persistence.timeout_secs, persistence.prefix_len)
        }
        None => (0, full_prefix),
    };
    ServiceSettings {
        scheduler: spec.scheduler.name().to_owned(),
        flags,
        timeout_secs,
        netmask: Netmask::from_prefix(spec.addr, prefix_len),
    }
}

/// What every desired service should be in IPVS. Fails, before anything is changed, on a
/// forwarding method IPVS does not have. TUN's outer sources (`tun_sources`) have no
/// IPVS counterpart: the kernel picks the tunnel's source by routing.
pub fn wanted(
    desired: &DesiredState,
) -> Result<BTreeMap<ServiceKey, WantedService>, DataplaneError> {
    let mut services = BTreeMap::new();
    for spec in &desired.services {
        // The service's method first: refused even without reals.
        forward_code(spec.forward)?;
        let dests = spec
            .reals
            .iter()
            .map(|real| {
                // IPVS keeps the method per destination: each real by its own.
                let (method, tunnel_type) = spec.forwarding(real);
                let forward = forward_code(method)?;
                let tunnel = match method {
                    ForwardMethod::Tun => tunnel(tunnel_type),
                    _ => Tunnel::default(),
                };
                let settings = DestSettings {
                    forward,
                    weight: real.weight.min(i32::MAX as u32),
                    upper_threshold: real.upper_threshold,
                    lower_threshold: real.lower_threshold,
                    tunnel,
                };
                Ok((
                    DestKey {
                        addr: real.addr,
                        port: real.port,
                    },
                    settings,
                ))
            })
            .collect::<Result<_, DataplaneError>>()?;
        services.insert(
            service_key(spec),
            WantedService {
                settings: service_settings(spec),
                dests,
            },
        );
    }
    Ok(services)
}

/// The timeouts to set: `ipvsadm --set`'s three where the desired value (0: keep) differs
/// from the kernel's; `None` when nothing changes.
pub fn timeout_update(desired: &Timeouts, kernel: &KernelTimeouts) -> Option<TimeoutUpdate> {
    let differs = |state: u8, current: u32| {
        let secs = desired.secs.get(usize::from(state)).copied().unwrap_or(0);
        (secs != 0 && secs != current).then_some(secs)
    };
    let update = TimeoutUpdate {
        tcp: differs(conn::STATE_ESTABLISHED, kernel.tcp),
        tcp_fin: differs(conn::STATE_FIN_WAIT, kernel.tcp_fin),
        udp: differs(conn::STATE_UDP, kernel.udp),
    };
    (update != TimeoutUpdate::default()).then_some(update)
}

/// The operations, in order: timeouts; owned services no longer wanted removed; then per
/// wanted service: added with its destinations, or edited and its destinations removed,
/// edited and added.
pub fn plan(
    wanted: &BTreeMap<ServiceKey, WantedService>,
    timeouts: &Timeouts,
    kernel: &KernelTable,
    owned: &BTreeSet<ServiceKey>,
) -> Vec<Operation> {
    let mut operations = Vec::new();
    operations.extend(timeout_update(timeouts, &kernel.timeouts).map(Operation::SetTimeouts));
    for key in owned {
        if !wanted.contains_key(key) && kernel.services.contains_key(key) {
            operations.push(Operation::RemoveService(*key));
        }
    }
    for (key, service) in wanted {
        let Some(current) = kernel.services.get(key) else {
            operations.push(Operation::AddService(*key, service.settings.clone()));
            operations.extend(
                service
                    .dests
                    .iter()
                    .map(|(dest, settings)| Operation::AddDest(*key, *dest, *settings)),
            );
            continue;
        };
        if current.settings != service.settings {
            operations.push(Operation::EditService(*key, service.settings.clone()));
        }
        for dest in current.dests.keys() {
            if !service.dests.contains_key(dest) {
                operations.push(Operation::RemoveDest(*key, *dest));
            }
        }
        for (dest, settings) in &service.dests {
            match current.dests.get(dest) {
                Some(now) if now == settings => {}
                Some(_) => operations.push(Operation::EditDest(*key, *dest, *settings)),
                None => operations.push(Operation::AddDest(*key, *dest, *settings)),
            }
        }
    }
    operations
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};

    use super::*;
    use crate::{
        dataplane::{
            RealSpec,
            ipvs::{genl, messages::svc_attr},
        },
        model::{Persistence, Protocol, SchedFlags, Scheduler},
    };

    fn spec(addr: &str, reals: &[(&str, u32)]) -> ServiceSpec {
        ServiceSpec {
            addr: addr.parse().unwrap(),
            port: 80,
            protocol: Protocol::Tcp,
            fwmark: None,
            tunnel: TunnelType::Ipip,
            scheduler: Scheduler::Wlc,
            sched_flags: SchedFlags::default(),
            persistence: None,
            one_packet: false,
            forward: ForwardMethod::Dr,
            local_addresses: Vec::new(),
            tun_sources: Vec::new(),
            reals: reals
                .iter()
                .map(|(a, w)| RealSpec {
                    addr: a.parse().unwrap(),
                    port: 80,
                    weight: *w,
                    upper_threshold: 0,
                    lower_threshold: 0,
                    lvs_method: None,
                })
                .collect(),
        }
    }

    fn desired(services: Vec<ServiceSpec>) -> DesiredState {
        DesiredState {
            services,
            timeouts: Timeouts::IPVS,
        }
    }

    /// The kernel holding exactly what `desired` wants.
    fn kernel_of(desired: &DesiredState) -> KernelTable {
        KernelTable {
            services: wanted(desired)
                .unwrap()
                .into_iter()
                .map(|(key, w)| {
                    (
                        key,
                        KernelEntry {
                            settings: w.settings,
                            dests: w.dests,
                        },
                    )
                })
                .collect(),
            timeouts: KernelTimeouts {
                tcp: 900,
                tcp_fin: 120,
                udp: 300,
            },
        }
    }

    fn key(addr: &str) -> ServiceKey {
        ServiceKey {
            protocol: 6,
            addr: addr.parse().unwrap(),
            port: 80,
            fwmark: None,
        }
    }

    fn dest(addr: &str) -> DestKey {
        DestKey {
            addr: addr.parse().unwrap(),
            port: 80,
        }
    }

    fn plan_for(desired: &DesiredState, kernel: &KernelTable, owned: &[&str]) -> Vec<Operation> {
        let owned = owned.iter().map(|a| key(a)).collect();
        plan(&wanted(desired).unwrap(), &desired.timeouts, kernel, &owned)
    }

    #[test]
    fn a_missing_service_is_added_with_its_reals() {
        let empty = kernel_of(&desired(vec![]));
        let desired = desired(vec![spec("10.0.0.1", &[("10.0.1.1", 1), ("10.0.1.2", 0)])]);
        let ops = plan_for(&desired, &empty, &[]);
        assert_eq!(ops.len(), 3);
        let Operation::AddService(k, settings) = &ops[0] else {
            panic!("{ops:?}")
        };
        assert_eq!(*k, key("10.0.0.1"));
        assert_eq!(settings.scheduler, "wlc");
        assert_eq!(settings.flags, 0);
        assert_eq!(settings.netmask, Netmask::V4(Ipv4Addr::BROADCAST));
        assert_eq!(
            ops[2],
            Operation::AddDest(
                key("10.0.0.1"),
                dest("10.0.1.2"),
                DestSettings {
                    forward: fwd::DROUTE,
                    weight: 0,
                    upper_threshold: 0,
                    lower_threshold: 0,
                    tunnel: Tunnel::default()
                }
            )
        );
        assert_eq!(ops[0].describe(), "adding service TCP 10.0.0.1:80");
        assert_eq!(
            ops[2].describe(),
            "adding real 10.0.1.2:80 to service TCP 10.0.0.1:80"
        );
    }

    #[test]
    fn a_firewall_mark_service_is_its_mark_and_family() {
        let mut marked = spec("0.0.0.0", &[("10.0.1.1", 1)]);
        (marked.port, marked.fwmark) = (0, Some(7));
        marked.reals[0].port = 0;
        let mut marked6 = spec("::", &[("2001:db8::1", 1)]);
        (marked6.port, marked6.fwmark) = (0, Some(7));
        let empty = kernel_of(&desired(vec![]));
        let desired = desired(vec![marked, marked6]);
        let ops = plan_for(&desired, &empty, &[]);
        let added: Vec<String> = ops.iter().map(Operation::describe).collect();
        assert_eq!(
            added,
            [
                "adding service FWM 7",
                "adding real 10.0.1.1:0 to service FWM 7",
                "adding service FWM 7 IPv6",
                "adding real [2001:db8::1]:80 to service FWM 7 IPv6",
            ]
        );
        let Operation::AddService(k, _) = &ops[0] else {
            panic!("{ops:?}")
        };
        assert_eq!(*k, ServiceKey::fwmark(2, 7));
        // The request names the service by AF and FWMARK only.
        let nest = Request::DelService(*k).attributes();
        let kinds: Vec<u16> = genl::attrs(nest.as_bytes())
            .flat_map(|nest| genl::attrs(nest.unwrap().payload).collect::<Vec<_>>())
            .map(|attr| attr.unwrap().kind)
            .collect();
        assert_eq!(kinds, [svc_attr::AF, svc_attr::FWMARK]);
        // Once there, nothing to do.
        let owned = [ServiceKey::fwmark(2, 7), ServiceKey::fwmark(10, 7)].into();
        assert_eq!(
            plan(
                &wanted(&desired).unwrap(),
                &desired.timeouts,
                &kernel_of(&desired),
                &owned
            ),
            []
        );
    }

    #[test]
    fn tun_reals_carry_the_tunnel_type() {
        let mut gue = spec("10.0.0.1", &[("10.0.1.1", 1)]);
        gue.forward = ForwardMethod::Tun;
        gue.tunnel = TunnelType::Gue {
            port: 6080,
            checksum: TunnelChecksum::Remote,
        };
        let mut gre = spec("10.0.0.2", &[("10.0.1.1", 1)]);
        gre.forward = ForwardMethod::Tun;
        gre.tunnel = TunnelType::Gre {
            checksum: TunnelChecksum::Checksum,
        };
        // A tunnel type on another method means nothing.
        let mut dr = spec("10.0.0.3", &[("10.0.1.1", 1)]);
        dr.tunnel = gre.tunnel;
        let empty = kernel_of(&desired(vec![]));
        let ops = plan_for(&desired(vec![gue, gre, dr]), &empty, &[]);
        let tunnels: Vec<(u32, Tunnel)> = ops
            .iter()
            .filter_map(|op| match op {
                Operation::AddDest(_, _, settings) => Some((settings.forward, settings.tunnel)),
                _ => None,
            })
            .collect();
        assert_eq!(
            tunnels,
            [
                (
                    fwd::TUNNEL,
                    Tunnel {
                        kind: 1,
                        port: 6080,
                        flags: 2
                    }
                ),
                (
                    fwd::TUNNEL,
                    Tunnel {
                        kind: 2,
                        port: 0,
                        flags: 1
                    }
                ),
                (fwd::DROUTE, Tunnel::default()),
            ]
        );
    }

    #[test]
    fn each_destination_carries_its_reals_own_method() {
        // A DR service whose second real has `lvs_method NAT` and third `lvs_method TUN
        // type gre`: IPVS keeps the method per destination.
        let mut mixed = spec(
            "10.0.0.1",
            &[("10.0.1.1", 1), ("10.0.1.2", 1), ("10.0.1.3", 1)],
        );
        mixed.reals[1].lvs_method = Some((ForwardMethod::Nat, TunnelType::Ipip));
        let gre = TunnelType::Gre {
            checksum: TunnelChecksum::None,
        };
        mixed.reals[2].lvs_method = Some((ForwardMethod::Tun, gre));
        let empty = kernel_of(&desired(vec![]));
        let ops = plan_for(&desired(vec![mixed]), &empty, &[]);
        let methods: Vec<(u32, u8)> = ops
            .iter()
            .filter_map(|op| match op {
                Operation::AddDest(_, _, settings) => {
                    Some((settings.forward, settings.tunnel.kind))
                }
                _ => None,
            })
            .collect();
        assert_eq!(
            methods,
            [(fwd::DROUTE, 0), (fwd::MASQ, 0), (fwd::TUNNEL, 2)]
        );
    }

    #[test]
    fn a_table_that_matches_needs_nothing() {
        let desired = desired(vec![spec("10.0.0.1", &[("10.0.1.1", 1)])]);
        assert_eq!(plan_for(&desired, &kernel_of(&desired), &["10.0.0.1"]), []);
    }

    #[test]
    fn settings_weights_and_methods_are_edited_in_place() {
        let before = desired(vec![spec("10.0.0.1", &[("10.0.1.1", 1), ("10.0.1.2", 1)])]);
        let mut after = spec("10.0.0.1", &[("10.0.1.1", 5), ("10.0.1.3", 1)]);
        after.scheduler = Scheduler::Mh;
        after.sched_flags = SchedFlags {
            fallback: true,
            port: true,
        };
        after.persistence = Some(Persistence {
            timeout_secs: 300,
            prefix_len: 24,
        });
        after.forward = ForwardMethod::Tun;
        let ops = plan_for(&desired(vec![after]), &kernel_of(&before), &["10.0.0.1"]);
        let Operation::EditService(_, settings) = &ops[0] else {
            panic!("{ops:?}")
        };
        assert_eq!(settings.scheduler, "mh");
        assert_eq!(
            settings.flags,
            svc_flag::SCHED1 | svc_flag::SCHED2 | svc_flag::PERSISTENT
        );
        assert_eq!(settings.timeout_secs, 300);
        assert_eq!(
            settings.netmask,
            Netmask::V4(Ipv4Addr::new(255, 255, 255, 0))
        );
        assert_eq!(
            ops[1],
            Operation::RemoveDest(key("10.0.0.1"), dest("10.0.1.2"))
        );
        let Operation::EditDest(_, d, s) = &ops[2] else {
            panic!("{ops:?}")
        };
        assert_eq!(
            (*d, s.weight, s.forward),
            (dest("10.0.1.1"), 5, fwd::TUNNEL)
        );
        assert!(matches!(ops[3], Operation::AddDest(_, d, _) if d == dest("10.0.1.3")));
        assert_eq!(ops.len(), 4);
    }

    #[test]
    fn only_owned_services_are_removed() {
        let old = desired(vec![spec("10.0.0.1", &[]), spec("10.0.0.2", &[])]);
        let ops = plan_for(&desired(vec![]), &kernel_of(&old), &["10.0.0.1"]);
        assert_eq!(ops, [Operation::RemoveService(key("10.0.0.1"))]);
        // Owned but already gone from the kernel: nothing to do.
        let ops = plan_for(
            &desired(vec![]),
            &kernel_of(&desired(vec![])),
            &["10.0.0.1"],
        );
        assert_eq!(ops, []);
    }

    #[test]
    fn fullnat_is_refused_before_anything_changes() {
        let mut fnat = spec("10.0.0.9", &[]);
        fnat.forward = ForwardMethod::FullNat;
        let error = wanted(&desired(vec![spec("10.0.0.1", &[]), fnat])).unwrap_err();
        assert!(matches!(
            error,
            DataplaneError::Unsupported {
                backend: "ipvs",
                forward: ForwardMethod::FullNat
            }
        ));
    }

    #[test]
    fn ipv6_services_carry_a_prefix_length_and_ops_a_flag() {
        let mut v6 = spec("2001:db8::1", &[("2001:db8::2", 1)]);
        v6.protocol = Protocol::Udp;
        v6.one_packet = true;
        let services = wanted(&desired(vec![v6])).unwrap();
        let (key, service) = services.iter().next().unwrap();
        assert_eq!(key.protocol, 17);
        assert_eq!(key.addr, "2001:db8::1".parse::<IpAddr>().unwrap());
        assert_eq!(service.settings.netmask, Netmask::V6 { prefix_len: 128 });
        assert_eq!(service.settings.flags, svc_flag::ONEPACKET);
        assert_eq!(
            Netmask::from_prefix("2001:db8::1".parse().unwrap(), 0),
            Netmask::V6 { prefix_len: 1 }
        );
    }

    #[test]
    fn timeouts_are_set_where_they_differ() {
        let kernel = KernelTimeouts {
            tcp: 900,
            tcp_fin: 120,
            udp: 300,
        };
        assert_eq!(timeout_update(&Timeouts::IPVS, &kernel), None);
        let wanted = Timeouts::with_set(Some(3600), None, Some(60));
        assert_eq!(
            timeout_update(&wanted, &kernel),
            Some(TimeoutUpdate {
                tcp: Some(3600),
                tcp_fin: None,
                udp: Some(60)
            })
        );
        let mut desired = desired(vec![]);
        desired.timeouts = wanted;
        let ops = plan_for(&desired, &kernel_of(&desired), &[]);
        assert!(matches!(ops[..], [Operation::SetTimeouts(_)]));
        assert_eq!(
            ops[0].describe(),
            "setting IPVS timeouts (tcp 3600 tcpfin - udp 60)"
        );
    }
}
