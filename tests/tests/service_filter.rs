//! What the balancer looks up, and in which order, through BPF_PROG_TEST_RUN: the service
//! filter in `LB_SETTINGS` has the bit of every published service (and of no removed one),
//! so a packet for no service skips the lookups; a filter not written yet filters
//! nothing; and the flow table comes before the services (as in IPVS), so an established
//! flow keeps its real without a service lookup while a new one needs its service. Needs
//! root (BPF); see `lb_tests::privilege`.

use std::{collections::HashMap, net::IpAddr};

use aya::maps::{Array, HashMap as BpfHashMap, MapData};
use lb_common::{FEATURE_SERVICE_FILTER, Outcome, ServiceInfo, ServiceKey, Settings, map_names};
use lb_tests::{
    packet::{Frame, TCP_ACK, v4},
    privilege::require_root,
    testrun::{StaticNextHops, TestBalancer, next_hop},
};
use lb_userspace::dataplane::Dataplane;

const VIP: [u8; 4] = [192, 0, 2, 90];

fn next_hops() -> StaticNextHops {
    let mut table = HashMap::new();
    for last in 1..=2u8 {
        table.insert(
            IpAddr::from([10, 9, 0, last]),
            next_hop([0x02, 0xef, 0, 0, 0, last], None),
        );
    }
    StaticNextHops(table)
}

/// A DR service on VIP:`port` over real 10.9.0.`real`.
fn service(port: u16, real: u8) -> String {
    format!(
        "virtual_server 192.0.2.90 {port} {{\n lb_algo rr\n lb_kind DR\n protocol TCP\n real_server 10.9.0.{real} {port} {{ }}\n}}\n"
    )
}

fn settings(balancer: &TestBalancer) -> Settings {
    let map = balancer
        .dataplane
        .ebpf()
        .map(map_names::SETTINGS)
        .expect("LB_SETTINGS");
    let array: Array<&MapData, Settings> = Array::try_from(map).expect("array");
    array.get(&0, 0).expect("settings")
}

/// Whether the filter has the bit of TCP service VIP:`port`.
fn filter_has(settings: &Settings, port: u16) -> bool {
    let mut addr = [0; 16];
    addr[..4].copy_from_slice(&VIP);
    let bit = lb_common::hash::service_bit(&addr, port.to_be_bytes(), lb_common::PROTO_TCP);
    settings.services[(bit / 64) as usize] >> (bit % 64) & 1 == 1
}

fn not_service(balancer: &TestBalancer) -> u64 {
    let counters = balancer.dataplane.counters().expect("counters");
    counters.outcome(Outcome::NotService)
}

#[test]
fn the_service_filter_follows_the_published_services() {
    if !require_root("the_service_filter_follows_the_published_services") {
        return;
    }
    let mut balancer = TestBalancer::load(next_hops(), 1 << 12).expect("load");
    balancer.apply_config(&service(80, 1)).expect("apply");
    let written = settings(&balancer);
    assert_ne!(written.features & FEATURE_SERVICE_FILTER, 0);
    assert!(filter_has(&written, 80));
    let set: u32 = written.services.iter().map(|w| w.count_ones()).sum();
    assert_eq!(set, 1, "one service, one bit");

    let to_80 = Frame::tcp(v4([198, 18, 7, 1], VIP), 4000, 80).bytes();
    let to_8080 = Frame::tcp(v4([198, 18, 7, 1], VIP), 4000, 8080).bytes();
    assert_eq!(balancer.real_of(&to_80), Some(1));
    assert_eq!(balancer.real_of(&to_8080), None);
    assert_eq!(not_service(&balancer), 1);

    // A second service is served at once; the first, removed, is filtered out.
    balancer.apply_config(&service(8080, 2)).expect("apply");
    let written = settings(&balancer);
    assert!(filter_has(&written, 8080));
    assert!(
        !filter_has(&written, 80),
        "a removed service's bit stays set"
    );
    assert_eq!(balancer.real_of(&to_8080), Some(2));
    let new_client = Frame::tcp(v4([198, 18, 7, 2], VIP), 4000, 80).bytes();
    assert_eq!(balancer.real_of(&new_client), None);
    assert_eq!(not_service(&balancer), 2);
}

#[test]
fn a_filter_not_yet_written_filters_nothing() {
    if !require_root("a_filter_not_yet_written_filters_nothing") {
        return;
    }
    let mut balancer = TestBalancer::load(next_hops(), 1 << 12).expect("load");
    balancer.apply_config(&service(80, 1)).expect("apply");
    // As after a restart onto maps pinned by a build without the filter: settings zero.
    let map = balancer
        .dataplane
        .ebpf_mut()
        .map_mut(map_names::SETTINGS)
        .expect("LB_SETTINGS");
    let mut array: Array<&mut MapData, Settings> = Array::try_from(map).expect("array");
    array.set(0, Settings::default(), 0).expect("zero settings");
    let to_80 = Frame::tcp(v4([198, 18, 7, 3], VIP), 4000, 80).bytes();
    assert_eq!(balancer.real_of(&to_80), Some(1));
}

#[test]
fn an_established_flow_needs_no_service_lookup_and_a_new_one_does() {
    if !require_root("an_established_flow_needs_no_service_lookup_and_a_new_one_does") {
        return;
    }
    let mut balancer = TestBalancer::load(next_hops(), 1 << 12).expect("load");
    balancer.apply_config(&service(80, 1)).expect("apply");
    let syn = Frame::tcp(v4([198, 18, 7, 4], VIP), 4000, 80);
    assert_eq!(balancer.real_of(&syn.bytes()), Some(1));
    // The service entry goes (its reals stay, as for a moment while lbd removes a
    // service): the established flow goes on to its real, by the flow table alone; a new
    // client's SYN finds no service.
    let map = balancer
        .dataplane
        .ebpf_mut()
        .map_mut(map_names::SERVICES)
        .expect("LB_SERVICES");
    let mut services: BpfHashMap<&mut MapData, ServiceKey, ServiceInfo> =
        BpfHashMap::try_from(map).expect("hash");
    let key = services.keys().next().expect("one service").expect("key");
    services.remove(&key).expect("remove the service");
    let ack = syn.with_tcp_flags(TCP_ACK).bytes();
    assert_eq!(balancer.real_of(&ack), Some(1));
    let other = Frame::tcp(v4([198, 18, 7, 5], VIP), 4000, 80).bytes();
    assert_eq!(balancer.real_of(&other), None);
    assert_eq!(not_service(&balancer), 1);
}
