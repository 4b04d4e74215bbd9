//! Property: a model written as keepalived.conf text (`emit`) reads back as the same
//! model, for valid models of every kind the model can hold (families, protocols, every
//! scheduler and forwarding method, flags, persistence, ops, pools, tunnel sources,
//! timeouts).

use std::{
    collections::BTreeSet,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::Path,
    time::Duration,
};

use lb_config::{
    emit::to_keepalived,
    model::{
        Config, ForwardMethod, LvsTimeouts, Persistence, Protocol, RealServer, SchedFlags,
        Scheduler, VirtualServer,
    },
    parse,
};
use proptest::prelude::*;

fn addr(ipv6: bool, net: u8, host: u16) -> IpAddr {
    if ipv6 {
        IpAddr::V6(Ipv6Addr::new(
            0x2001,
            0xdb8,
            u16::from(net),
            0,
            0,
            0,
            0,
            host,
        ))
    } else {
        IpAddr::V4(Ipv4Addr::new(10, net, (host >> 8) as u8, host as u8))
    }
}

fn scheduler() -> impl Strategy<Value = Scheduler> {
    prop::sample::select(Scheduler::ALL.to_vec())
}

fn forward() -> impl Strategy<Value = ForwardMethod> {
    prop::sample::select(vec![
        ForwardMethod::Dr,
        ForwardMethod::Tun,
        ForwardMethod::Nat,
        ForwardMethod::FullNat,
    ])
}

prop_compose! {
    fn virtual_server(index: u16)(
        ipv6 in any::<bool>(),
        udp in any::<bool>(),
        port in 1u16..,
        scheduler in scheduler(),
        forward in forward(),
        fallback in any::<bool>(),
        hash_port in any::<bool>(),
        persistence in prop::option::of((1u32..100_000, any::<u8>())),
        ops in any::<bool>(),
        delay_loop in 1u64..3600,
        hosts in prop::collection::btree_set(1u16..2000, 0..6),
        weights in prop::collection::vec(0u32..=65_535, 6),
        pool in prop::collection::btree_set(1u16..250, 1..4),
        tun_source in any::<bool>(),
        real_ports_differ in any::<bool>(),
    ) -> VirtualServer {
        let full = if ipv6 { 128 } else { 32 };
        let protocol = if udp { Protocol::Udp } else { Protocol::Tcp };
        let translates = matches!(forward, ForwardMethod::Nat | ForwardMethod::FullNat);
        VirtualServer {
            addr: addr(ipv6, 0, index + 1),
            port,
            protocol,
            scheduler,
            sched_flags: SchedFlags { fallback, port: hash_port },
            persistence: persistence.map(|(timeout_secs, prefix)| Persistence {
                timeout_secs,
                prefix_len: 1 + prefix % full,
            }),
            // ops: UDP only, and not with FullNAT (both refused or ignored when read).
            one_packet: ops && udp && forward != ForwardMethod::FullNat,
            forward,
            local_addresses: if forward == ForwardMethod::FullNat {
                pool.iter().map(|&h| addr(ipv6, 2, h)).collect()
            } else {
                Vec::new()
            },
            tun_sources: if forward == ForwardMethod::Tun && tun_source {
                vec![addr(ipv6, 3, 1)]
            } else {
                Vec::new()
            },
            delay_loop: Duration::from_secs(delay_loop),
            reals: hosts
                .iter()
                .zip(&weights)
                .map(|(&host, &weight)| RealServer {
                    addr: addr(ipv6, 1, host),
                    // DR and TUN do not translate ports: a different one only warns.
                    port: if translates && real_ports_differ { port.wrapping_add(1).max(1) } else { port },
                    weight,
                })
                .collect(),
        }
    }
}

fn config() -> impl Strategy<Value = Config> {
    (
        prop::collection::vec(0u16..200, 0..5),
        prop::option::of(1u32..86_400),
        prop::option::of(1u32..86_400),
        prop::option::of(1u32..86_400),
        any::<bool>(),
    )
        .prop_flat_map(|(indexes, tcp, tcpfin, udp, sources)| {
            // Distinct VIPs, so services never collide.
            let indexes: BTreeSet<u16> = indexes.into_iter().collect();
            let servers: Vec<_> = indexes.into_iter().map(virtual_server).collect();
            (servers, Just((tcp, tcpfin, udp, sources)))
        })
        .prop_map(|(virtual_servers, (tcp, tcpfin, udp, sources))| Config {
            lvs_timeouts: LvsTimeouts { tcp, tcpfin, udp },
            tun_sources: if sources {
                vec![addr(false, 4, 1), addr(true, 4, 1)]
            } else {
                Vec::new()
            },
            virtual_servers,
            ..Config::default()
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn emitted_text_reads_back_as_the_same_model(config in config()) {
        let text = to_keepalived(&config);
        let loaded = parse(&text, Path::new("emitted.conf"))
            .unwrap_or_else(|e| panic!("{e}\n{text}"));
        prop_assert_eq!(&loaded.config, &config, "{}", text);
    }
}
