//! IPVS's services and destinations as the data plane's counters, with the names ipvsadm
//! prints: scheduler, scheduler flags (`print_sched_flags`), forwarding method
//! (`fwd_name`), persistence as timeout and prefix length.
//!
//! Every TCP and UDP address service of the kernel is shown, whoever made it, as
//! `ipvsadm -Ln` shows them; firewall-mark and SCTP services have no place in the model
//! and are left out. There are no outcome counters: those are the XDP program's.

use super::messages::{KernelDest, KernelService, Stats, fwd, svc_flag};
use crate::{
    dataplane::{RealCounters, ServiceCounters, Traffic},
    model::Protocol,
};

/// IPVS's schedulers (`net/netfilter/ipvs/ip_vs_*.c`), and `none`.
const SCHEDULERS: [&str; 15] = [
    "rr", "wrr", "lc", "wlc", "lblc", "lblcr", "dh", "sh", "sed", "nq", "fo", "ovf", "mh", "twos",
    "none",
];

/// The static name of a scheduler the kernel reports; `?` for one this list lacks.
pub fn scheduler_name(name: &str) -> &'static str {
    SCHEDULERS
        .iter()
        .find(|known| **known == name)
        .copied()
        .unwrap_or("?")
}

/// ipvsadm's names of a service's scheduler flags: `sh-`/`mh-` `fallback` and `port` for
/// those schedulers, `flag-1`, `flag-2` for the others, and `flag-3`.
pub fn sched_flag_names(scheduler: &str, flags: u32) -> Vec<&'static str> {
    let (first, second) = match scheduler {
        "sh" => ("sh-fallback", "sh-port"),
        "mh" => ("mh-fallback", "mh-port"),
        _ => ("flag-1", "flag-2"),
    };
    [
        (svc_flag::SCHED1, first),
        (svc_flag::SCHED2, second),
        (svc_flag::SCHED3, "flag-3"),
    ]
    .into_iter()
    .filter(|(bit, _)| flags & bit != 0)
    .map(|(_, name)| name)
    .collect()
}

/// ipvsadm's name of a forwarding method.
pub fn forward_name(forward: u32) -> &'static str {
    match forward & fwd::MASK {
        fwd::MASQ => "Masq",
        fwd::LOCALNODE => "Local",
        fwd::TUNNEL => "Tunnel",
        fwd::DROUTE => "Route",
        _ => "?",
    }
}

fn traffic(stats: &Stats) -> Traffic {
    Traffic {
        packets: stats.in_packets,
        bytes: stats.in_bytes,
        new_flows: stats.conns,
        out_packets: stats.out_packets,
        out_bytes: stats.out_bytes,
    }
}

fn real_counters(dest: &KernelDest) -> RealCounters {
    RealCounters {
        addr: dest.key.addr,
        port: dest.key.port,
        forward: forward_name(dest.settings.forward),
        weight: u16::try_from(dest.settings.weight).unwrap_or(u16::MAX),
        retired: false,
        traffic: traffic(&dest.stats),
        active_conns: dest.active_conns,
        inactive_conns: dest.inactive_conns,
        upper_threshold: dest.settings.upper_threshold,
        lower_threshold: dest.settings.lower_threshold,
    }
}

/// The counters of a TCP or UDP address service or of a firewall-mark service, and its
/// destinations (reals in address order); `None` for the services the model cannot show.
pub fn service_counters(service: &KernelService, dests: &[KernelDest]) -> Option<ServiceCounters> {
    let key = service.key;
    let protocol = match key.protocol {
        6 => Protocol::Tcp,
        17 => Protocol::Udp,
        _ => return None,
    };
    let settings = &service.settings;
    let mut reals: Vec<RealCounters> = dests.iter().map(real_counters).collect();
    reals.sort_by_key(|r| (r.addr, r.port));
    Some(ServiceCounters {
        addr: key.addr,
        port: key.port,
        protocol,
        fwmark: key.fwmark,
        scheduler: scheduler_name(&settings.scheduler),
        sched_flags: sched_flag_names(&settings.scheduler, settings.flags),
        persistent: (settings.flags & svc_flag::PERSISTENT != 0)
            .then(|| (settings.timeout_secs, settings.netmask.prefix_len())),
        ops: settings.flags & svc_flag::ONEPACKET != 0,
        traffic: traffic(&service.stats),
        reals,
    })
}

/// Services in the order the XDP backend lists them, firewall-mark services after.
pub fn sort_services(services: &mut [ServiceCounters]) {
    services.sort_by_key(|s| (s.fwmark, s.addr, s.port, s.protocol.ip_proto()));
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};

    use super::*;
    use crate::dataplane::ipvs::messages::{
        DestKey, DestSettings, Netmask, ServiceKey, ServiceSettings, Tunnel,
    };

    #[test]
    fn names_are_ipvsadms() {
        assert_eq!(scheduler_name("wlc"), "wlc");
        assert_eq!(scheduler_name("lblcr"), "lblcr");
        assert_eq!(scheduler_name("brand-new"), "?");
        assert_eq!(
            sched_flag_names("sh", svc_flag::SCHED1 | svc_flag::SCHED2),
            ["sh-fallback", "sh-port"]
        );
        assert_eq!(sched_flag_names("mh", svc_flag::SCHED2), ["mh-port"]);
        assert_eq!(
            sched_flag_names("rr", svc_flag::SCHED1 | svc_flag::SCHED3),
            ["flag-1", "flag-3"]
        );
        assert_eq!(forward_name(fwd::DROUTE), "Route");
        assert_eq!(forward_name(fwd::MASQ), "Masq");
        assert_eq!(forward_name(fwd::TUNNEL), "Tunnel");
        assert_eq!(forward_name(fwd::LOCALNODE), "Local");
    }

    #[test]
    fn a_persistent_service_shows_timeout_prefix_and_reals() {
        let service = KernelService {
            key: ServiceKey {
                protocol: 6,
                addr: "10.0.0.1".parse().unwrap(),
                port: 443,
                fwmark: None,
            },
            settings: ServiceSettings {
                scheduler: "sh".into(),
                flags: svc_flag::PERSISTENT | svc_flag::SCHED1,
                timeout_secs: 360,
                netmask: Netmask::V4(Ipv4Addr::new(255, 255, 255, 0)),
            },
            stats: Stats {
                conns: 4,
                in_packets: 40,
                in_bytes: 4000,
                out_packets: 30,
                out_bytes: 3000,
                ..Stats::default()
            },
        };
        let dest = |addr: &str, active| KernelDest {
            key: DestKey {
                addr: addr.parse().unwrap(),
                port: 443,
            },
            settings: DestSettings {
                forward: fwd::DROUTE,
                weight: 70_000,
                upper_threshold: 0,
                lower_threshold: 0,
                tunnel: Tunnel::default(),
            },
            active_conns: active,
            inactive_conns: 1,
            persistent_conns: 0,
            stats: Stats::default(),
        };
        let counters =
            service_counters(&service, &[dest("10.0.1.2", 2), dest("10.0.1.1", 3)]).unwrap();
        assert_eq!(counters.scheduler, "sh");
        assert_eq!(counters.sched_flags, ["sh-fallback"]);
        assert_eq!(counters.persistent, Some((360, 24)));
        assert!(!counters.ops);
        assert_eq!(counters.traffic.new_flows, 4);
        assert_eq!(counters.traffic.out_bytes, 3000);
        assert_eq!(
            counters.reals[0].addr,
            "10.0.1.1".parse::<IpAddr>().unwrap()
        );
        assert_eq!(counters.reals[0].active_conns, 3);
        assert_eq!(counters.reals[0].forward, "Route");
        assert_eq!(counters.reals[0].weight, u16::MAX, "saturated");

        // A firewall-mark service shows as its mark (and the kernel's TCP).
        let fwmark = KernelService {
            key: ServiceKey::fwmark(10, 7),
            ..service.clone()
        };
        let counters = service_counters(&fwmark, &[]).unwrap();
        assert_eq!(
            (
                counters.fwmark,
                counters.addr,
                counters.port,
                counters.protocol
            ),
            (Some(7), "::".parse().unwrap(), 0, Protocol::Tcp)
        );
        // SCTP services are not lbd's to show.
        let sctp = KernelService {
            key: ServiceKey {
                protocol: 132,
                ..service.key
            },
            ..service
        };
        assert_eq!(service_counters(&sctp, &[]), None);
    }
}
