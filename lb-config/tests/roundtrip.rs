//! Property: the load-balancing part of a model written as keepalived.conf text (`emit`)
//! reads back as the same model: families, protocols, every scheduler and forwarding
//! method, flags, persistence, ops, pools, tunnel sources, timeouts, quorum and sorry
//! server settings, and every checker kind. (`roundtrip_vrrp.rs` holds the VRRP part;
//! values are plain words, so quoting is not exercised.)

use std::{
    collections::BTreeSet,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::Path,
    time::Duration,
};

use lb_config::{
    emit::to_keepalived,
    model::{
        Config, ForwardMethod, LvsFlushOnStop, LvsTimeouts, Persistence, Protocol, RealServer,
        SchedFlags, Scheduler, ServiceExtras, SorryServer, TunnelChecksum, TunnelType,
        VirtualServer,
        alert::{SmtpAlerts, SmtpServer},
        check::{CheckKind, Checker, HttpCheck, MiscCheck, TrackFile, UdpCheck, Url},
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

fn seconds() -> impl Strategy<Value = Duration> {
    (1u64..600).prop_map(Duration::from_secs)
}

fn word() -> impl Strategy<Value = String> {
    "[a-z][a-z0-9_./-]{0,12}"
}

fn check_kind() -> impl Strategy<Value = CheckKind> {
    prop_oneof![
        Just(CheckKind::Tcp),
        Just(CheckKind::Ping),
        (
            any::<bool>(),
            "/[a-z]{0,8}",
            prop::option::of("[0-9a-f]{32}"),
            100u16..600,
            prop::option::of(word())
        )
            .prop_map(|(tls, path, digest, code, virtualhost)| CheckKind::Http(
                HttpCheck {
                    tls,
                    urls: vec![Url {
                        path,
                        digest,
                        status_code: vec![(code, code)],
                        virtualhost: None,
                        regex: None,
                        regex_no_match: false,
                    }],
                    virtualhost,
                    http_protocol: None,
                    enable_sni: false,
                    sni_name: None,
                    fast_recovery: false,
                }
            )),
        (word(), any::<bool>(), prop::option::of(seconds())).prop_map(
            |(path, dynamic, timeout)| CheckKind::Misc(MiscCheck {
                path,
                timeout,
                dynamic,
                user: None
            })
        ),
        word().prop_map(|helo_name| CheckKind::Smtp { helo_name }),
        (prop::sample::select(vec!["A", "AAAA", "SOA", "MX"]), word()).prop_map(|(t, name)| {
            CheckKind::Dns {
                query_type: t.into(),
                name,
            }
        }),
        (prop::option::of("[0-9a-f]{2,8}"), 0u32..100, 100u32..255).prop_map(
            |(payload, min, max)| CheckKind::Udp(UdpCheck {
                payload,
                require_reply: None,
                min_reply_length: min,
                max_reply_length: max
            })
        ),
        (word(), prop::option::of(-100i32..100), any::<bool>()).prop_map(
            |(track_file, weight, reverse)| CheckKind::File {
                track_file,
                reverse: reverse && weight.is_some(),
                weight
            }
        ),
    ]
}

prop_compose! {
    fn checker()(
        kind in check_kind(),
        connect_timeout in seconds(),
        retry in 0u32..10,
        delay_before_retry in seconds(),
        delay_loop in seconds(),
        warmup in prop::option::of(seconds()),
        connect_port in prop::option::of(1u16..),
        log_all_failures in any::<bool>(),
        alpha in any::<bool>(),
    ) -> Checker {
        // MISC_CHECK and FILE_CHECK take no connection settings.
        let connects = !matches!(kind, CheckKind::Misc(_) | CheckKind::File { .. });
        let connect_timeout = if connects { connect_timeout } else { Duration::from_secs(5) };
        Checker {
            kind,
            connect_ip: None,
            connect_port: connect_port.filter(|_| connects),
            bindto: None,
            bind_port: None,
            bind_if: None,
            fwmark: None,
            connect_timeout,
            retry,
            delay_before_retry,
            warmup,
            delay_loop,
            log_all_failures,
            alpha,
        }
    }
}

prop_compose! {
    fn extras()(
        quorum in 1u32..10,
        hysteresis in 0u32..5,
        quorum_up in prop::option::of(word()),
        sorry in prop::option::of(1u16..),
        flags in prop::array::uniform5(any::<bool>()),
        virtualhost in prop::option::of(word()),
        smtp_alert in prop::option::of(any::<bool>()),
    ) -> ServiceExtras {
        ServiceExtras {
            quorum,
            hysteresis,
            quorum_up,
            quorum_down: None,
            sorry_server: sorry.map(|port| SorryServer { addr: IpAddr::from([10, 9, 9, 9]), port }),
            sorry_server_inhibit: flags[0],
            sorry_server_lvs_method: None,
            alpha: flags[1],
            omega: flags[2],
            ha_suspend: flags[3],
            inhibit_on_failure: flags[4],
            virtualhost,
            smtp_alert,
        }
    }
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
        hosts in prop::collection::btree_set(1u16..2000, 1..6),
        weights in prop::collection::vec(0u32..=65_535, 6),
        pool in prop::collection::btree_set(1u16..250, 1..4),
        tun_source in any::<bool>(),
        real_ports_differ in any::<bool>(),
        extras in extras(),
        checkers in prop::collection::vec(checker(), 0..3),
        notify_up in prop::option::of(word()),
        inhibit in any::<bool>(),
        thresholds in (0u32..5000, 0u32..5000),
    ) -> VirtualServer {
        let full = if ipv6 { 128 } else { 32 };
        let protocol = if udp { Protocol::Udp } else { Protocol::Tcp };
        let translates = matches!(forward, ForwardMethod::Nat | ForwardMethod::FullNat);
        // As the reader leaves them: a quorum no higher than the reals' total weight, and
        // a hysteresis below the quorum.
        let total: u64 = weights.iter().take(hosts.len()).map(|&w| u64::from(w)).sum();
        let mut extras = extras;
        extras.quorum = extras.quorum.min(u32::try_from(total).unwrap_or(u32::MAX));
        if extras.hysteresis >= extras.quorum {
            extras.hysteresis = extras.quorum.saturating_sub(1);
        }
        let mut vs = VirtualServer {
            addr: addr(ipv6, 0, index + 1),
            port,
            protocol,
            fwmark: None,
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
            // TUN: IPIP, GUE or GRE by the VIP's index, their checksum options by the port.
            tunnel: match (forward, index % 3) {
                (ForwardMethod::Tun, 1) => TunnelType::Gue {
                    port: port.max(1),
                    checksum: checksum(port),
                },
                (ForwardMethod::Tun, 2) => TunnelType::Gre {
                    checksum: match checksum(port) {
                        TunnelChecksum::Remote => TunnelChecksum::Checksum,
                        other => other,
                    },
                },
                _ => TunnelType::Ipip,
            },
            delay_loop: Duration::from_secs(delay_loop),
            extras,
            reals: hosts
                .iter()
                .zip(&weights)
                .map(|(&host, &weight)| RealServer {
                    addr: addr(ipv6, 1, host),
                    // DR and TUN do not translate ports: a different one only warns.
                    port: if translates && real_ports_differ { port.wrapping_add(1).max(1) } else { port },
                    weight,
                    checkers: checkers.clone(),
                    notify_up: notify_up.clone(),
                    notify_down: None,
                    inhibit_on_failure: inhibit,
                    // As the reader takes them: lthreshold no higher than uthreshold.
                    upper_threshold: thresholds.0.max(thresholds.1),
                    lower_threshold: thresholds.0.min(thresholds.1),
                    smtp_alert: (weight % 3 != 0).then_some(weight % 3 == 1),
                    lvs_method: None,
                })
                .collect(),
        };
        // Every fourth a firewall-mark service (not FullNAT, which needs a VIP).
        if index % 4 == 3 && forward != ForwardMethod::FullNat {
            as_fwmark_service(&mut vs, u32::from(index) + 1, ops);
        }
        vs
    }
}

fn checksum(seed: u16) -> TunnelChecksum {
    match seed % 3 {
        0 => TunnelChecksum::None,
        1 => TunnelChecksum::Checksum,
        _ => TunnelChecksum::Remote,
    }
}

/// `vs` as `virtual_server fwmark MARK` reads back: no VIP or port, TCP, `ops` whatever
/// the protocol, no ha_suspend; DR and TUN reals and sorry server with port 0, the reals'
/// checkers connecting to the port they had.
fn as_fwmark_service(vs: &mut VirtualServer, mark: u32, ops: bool) {
    vs.addr = VirtualServer::fwmark_addr(vs.addr.is_ipv6());
    vs.port = 0;
    vs.protocol = Protocol::Tcp;
    vs.fwmark = Some(mark);
    vs.one_packet = ops;
    vs.extras.ha_suspend = false;
    if matches!(vs.forward, ForwardMethod::Dr | ForwardMethod::Tun) {
        if let Some(sorry) = &mut vs.extras.sorry_server {
            sorry.port = 0;
        }
        for real in &mut vs.reals {
            for checker in &mut real.checkers {
                if !matches!(
                    checker.kind,
                    CheckKind::Misc(_) | CheckKind::File { .. } | CheckKind::Ping
                ) {
                    checker.connect_port.get_or_insert(real.port);
                }
            }
            real.port = 0;
        }
    }
}

prop_compose! {
    fn alerts()(
        emails in prop::collection::vec("[a-z]{1,8}@[a-z]{1,8}\\.example", 0..3),
        from in prop::option::of("[a-z]{1,8}@[a-z]{1,8}\\.example"),
        server in prop::option::of((word(), 1u16..)),
        helo in prop::option::of(word()),
        timeout in 1u64..120,
        defaults in prop::array::uniform3(prop::option::of(any::<bool>())),
        no_email_faults in any::<bool>(),
    ) -> SmtpAlerts {
        SmtpAlerts {
            notification_email: emails,
            notification_email_from: from,
            smtp_server: server.map(|(host, port)| SmtpServer { host, port }),
            smtp_helo_name: helo,
            smtp_connect_timeout: Duration::from_secs(timeout),
            smtp_alert: defaults[0],
            smtp_alert_vrrp: defaults[1],
            smtp_alert_checker: defaults[2],
            no_email_faults,
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
        alerts(),
        (
            any::<bool>(),
            prop::option::of(prop_oneof![
                Just(LvsFlushOnStop::Full),
                Just(LvsFlushOnStop::VirtualServers)
            ]),
        ),
    )
        .prop_flat_map(|(indexes, tcp, tcpfin, udp, sources, alerts, flush)| {
            // Distinct VIPs, so services never collide.
            let indexes: BTreeSet<u16> = indexes.into_iter().collect();
            let servers: Vec<_> = indexes.into_iter().map(virtual_server).collect();
            (servers, Just((tcp, tcpfin, udp, sources, alerts, flush)))
        })
        .prop_map(
            |(
                virtual_servers,
                (tcp, tcpfin, udp, sources, alerts, (lvs_flush, lvs_flush_on_stop)),
            )| Config {
                alerts,
                lvs_flush,
                lvs_flush_on_stop,
                // A track_file block for every name a FILE_CHECK uses.
                track_files: virtual_servers
                    .iter()
                    .flat_map(|vs| &vs.reals)
                    .flat_map(|real| &real.checkers)
                    .filter_map(|checker| match &checker.kind {
                        CheckKind::File { track_file, .. } => Some(track_file.clone()),
                        _ => None,
                    })
                    .collect::<BTreeSet<String>>()
                    .into_iter()
                    .map(|name| TrackFile {
                        file: format!("/run/lbd-{name}"),
                        weight: 2,
                        reverse: name.len() % 2 == 0,
                        name,
                    })
                    .collect(),
                lvs_timeouts: LvsTimeouts { tcp, tcpfin, udp },
                tun_sources: if sources {
                    vec![addr(false, 4, 1), addr(true, 4, 1)]
                } else {
                    Vec::new()
                },
                virtual_servers,
                ..Config::default()
            },
        )
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
