//! Property: the VRRP part of a model written as keepalived.conf text (`emit`) reads back
//! as the same model: instances of both families and versions (VRRPv3 with centisecond
//! intervals), both states, the owner's priority, PASS authentication, addresses with
//! their prefix, scope and label, unicast peers, preemption and its delay, the GARP
//! settings, accept and strict mode, tracked interfaces and scripts with their weights,
//! notify scripts, vmac, vrrp_scripts and sync groups; and static addresses and routes,
//! router_id, script_user, script security and vrrp_rt_priority.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::Path,
    time::Duration,
};

use lb_config::{
    emit::to_keepalived,
    model::{
        Config,
        vrrp::{
            AuthType, Authentication, InitialState, IpAddress, Notify, Route, Track, VrrpInstance,
            VrrpScript, VrrpSyncGroup,
        },
    },
    parse,
};
use proptest::prelude::*;

fn command() -> impl Strategy<Value = Option<String>> {
    prop::option::of("/[a-z]{1,8}(/[a-z]{1,8})?( [a-z0-9]{1,6})?")
}

fn track(names: Vec<&'static str>) -> impl Strategy<Value = Track> {
    (
        prop::sample::select(names),
        prop::option::of(-253i32..=253),
        any::<bool>(),
    )
        .prop_map(|(name, weight, reverse)| Track {
            name: name.into(),
            reverse: reverse && weight.is_some(),
            weight,
        })
}

fn vrrp_script(name: &'static str) -> impl Strategy<Value = VrrpScript> {
    (
        "/[a-z]{1,8}",
        1u64..100,
        1u64..100,
        -253i32..=253,
        any::<bool>(),
        1u32..5,
        1u32..5,
        any::<bool>(),
    )
        .prop_map(
            move |(script, interval, timeout, weight, reverse, rise, fall, init_fail)| VrrpScript {
                name: name.into(),
                script,
                interval: Duration::from_millis(interval * 100),
                timeout: Duration::from_millis(timeout * 100),
                weight,
                reverse,
                rise,
                fall,
                user: None,
                init_fail,
            },
        )
}

fn address(ipv6: bool, host: u16, wide: bool, scope: bool, label: bool) -> IpAddress {
    IpAddress {
        addr: if ipv6 {
            IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 7, 0, 0, 0, 0, host))
        } else {
            IpAddr::V4(Ipv4Addr::new(10, 7, (host >> 8) as u8, host as u8))
        },
        prefix_len: match (ipv6, wide) {
            (false, false) => 32,
            (false, true) => 24,
            (true, false) => 128,
            (true, true) => 64,
        },
        broadcast: None,
        dev: None,
        scope: scope.then(|| "link".into()),
        // keepalived's labels are IPv4's (`eth0:N`).
        label: (label && !ipv6).then(|| "eth0:1".into()),
        no_track: false,
    }
}

/// A route as the reader makes it from its line.
fn route(ipv6: bool, index: u16, metric: u32) -> Route {
    let (destination, via, prefix_len) = if ipv6 {
        (
            IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0x20, index, 0, 0, 0, 0)),
            IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 7, 0, 0, 0, 0, 1)),
            64,
        )
    } else {
        (
            IpAddr::V4(Ipv4Addr::new(10, 20, index as u8, 0)),
            IpAddr::V4(Ipv4Addr::new(10, 7, 0, 1)),
            24,
        )
    };
    let words = format!("{destination}/{prefix_len} via {via} dev eth1 metric {metric}");
    Route {
        destination,
        prefix_len,
        via: Some(via),
        dev: Some("eth1".into()),
        src: None,
        table: None,
        metric: Some(metric),
        words: words.split(' ').map(str::to_owned).collect(),
    }
}

prop_compose! {
    fn instance(index: u8)(
        ipv6 in any::<bool>(),
        v3 in any::<bool>(),
        priority in 1u8..=255,
        master in any::<bool>(),
        interval in 1u64..=4095,
        pass in prop::option::of("[a-zA-Z0-9]{1,8}"),
        addresses in prop::collection::vec((any::<bool>(), any::<bool>(), any::<bool>()), 1..4),
        unicast in any::<bool>(),
        preempt in any::<bool>(),
        preempt_delay in 0u64..60,
        garp in (0u64..10, 1u32..10, prop::option::of(1u64..100), 1u32..5),
        accept in any::<bool>(),
        strict in any::<bool>(),
        track_interface in prop::collection::vec(track(vec!["eth1", "eth2"]), 0..3),
        track_script in prop::collection::vec(track(vec!["chk_a", "chk_b"]), 0..3),
        notify in (command(), command(), command(), command(), command()),
        vmac in any::<bool>(),
    ) -> VrrpInstance {
        let version = if ipv6 || v3 { 3 } else { 2 };
        let owner = priority == 255;
        VrrpInstance {
            name: format!("VI_{index}"),
            initial_state: if master || owner { InitialState::Master } else { InitialState::Backup },
            interface: "eth0".into(),
            vrid: index + 1,
            priority,
            // VRRPv3 counts centiseconds, VRRPv2 seconds.
            advert_int: if version == 3 {
                Duration::from_millis(interval * 10)
            } else {
                Duration::from_secs(interval % 255 + 1)
            },
            version,
            // Only VRRPv2 outside strict mode keeps a password.
            authentication: pass.filter(|_| version == 2 && !strict).map(|auth_pass| Authentication {
                auth_type: AuthType::Pass,
                auth_pass,
            }),
            virtual_ipaddress: addresses
                .iter()
                .enumerate()
                .map(|(i, &(wide, scope, label))| address(ipv6, 100 + i as u16, wide, scope, label))
                .collect(),
            virtual_ipaddress_excluded: Vec::new(),
            virtual_routes: Vec::new(),
            track_interface,
            track_script,
            unicast_src_ip: unicast.then(|| address(ipv6, 1, false, false, false).addr),
            unicast_peer: if unicast { vec![address(ipv6, 2, false, false, false).addr] } else { Vec::new() },
            mcast_src_ip: None,
            preempt,
            preempt_delay: Duration::from_secs(preempt_delay),
            garp_master_delay: Duration::from_secs(garp.0),
            garp_master_repeat: garp.1,
            garp_master_refresh: garp.2.map(Duration::from_secs),
            garp_master_refresh_repeat: garp.3,
            notify: Notify {
                master: notify.0,
                backup: notify.1,
                fault: notify.2,
                stop: notify.3,
                any: notify.4,
            },
            use_vmac: vmac.then(|| format!("vrrp.{}", index + 1)),
            // Unicast through a vmac sends from the base interface (keepalived sets it).
            vmac_xmit_base: vmac && unicast,
            accept,
            dont_track_primary: false,
            smtp_alert: None,
            strict_mode: strict,
        }
    }
}

fn config() -> impl Strategy<Value = Config> {
    (
        prop::collection::vec(instance(0), 0..=1),
        prop::collection::vec(instance(1), 0..=1),
        vrrp_script("chk_a"),
        vrrp_script("chk_b"),
        any::<bool>(),
        (
            prop::option::of("[A-Za-z][A-Za-z0-9_]{0,8}"),
            prop::option::of(("[a-z]{1,8}", prop::option::of("[a-z]{1,8}"))),
            any::<bool>(),
            prop::collection::vec((any::<bool>(), any::<bool>(), any::<bool>()), 0..3),
            prop::collection::vec((any::<bool>(), 1u32..100), 0..3),
            prop::option::of(1u8..=99),
        ),
    )
        .prop_map(|(first, second, a, b, grouped, globals)| {
            let (router_id, script_user, script_security, statics, routes, vrrp_rt_priority) =
                globals;
            let vrrp_instances: Vec<VrrpInstance> = first.into_iter().chain(second).collect();
            let names: Vec<String> = vrrp_instances.iter().map(|i| i.name.clone()).collect();
            Config {
                vrrp_sync_groups: if grouped && !names.is_empty() {
                    vec![VrrpSyncGroup {
                        name: "VG_1".into(),
                        group: names,
                        track_interface: Vec::new(),
                        track_script: Vec::new(),
                        notify: Notify::default(),
                        smtp_alert: None,
                    }]
                } else {
                    Vec::new()
                },
                vrrp_scripts: vec![a, b],
                vrrp_instances,
                router_id,
                script_user,
                script_security,
                vrrp_rt_priority,
                static_ipaddress: statics
                    .iter()
                    .enumerate()
                    .map(|(i, &(ipv6, wide, scope))| {
                        let mut a = address(ipv6, 200 + i as u16, wide, scope, false);
                        a.dev = Some("eth1".into());
                        a
                    })
                    .collect(),
                static_routes: routes
                    .iter()
                    .enumerate()
                    .map(|(i, &(ipv6, metric))| route(ipv6, i as u16, metric))
                    .collect(),
                ..Config::default()
            }
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn emitted_vrrp_reads_back_as_the_same_model(config in config()) {
        let text = to_keepalived(&config);
        let loaded = parse(&text, Path::new("emitted.conf"))
            .map_err(|e| TestCaseError::fail(format!("{e}\n{text}")))?;
        prop_assert_eq!(&loaded.config, &config, "{}", text);
    }
}
