//! Pinned maps across restarts of the XDP backend: state survives a restart with the same
//! layout; a map whose shape or version changed is recreated (with a warning) with the
//! maps that hold its ids, and the others keep their state (an upgrade that changes a
//! counter map keeps the established flows); maps an older build pinned but this one
//! does not use are removed. Every map of the object is named in `lb_common::map_names`
//! and pinned with the shape `layout` expects. Needs root.

use std::{collections::BTreeSet, path::PathBuf};

use aya::maps::MapData;
use lb_common::{map_names, xdp_action};
use lb_tests::{
    packet::{Frame, TCP_ACK, v4},
    privilege::require_root,
    testrun::{StaticNextHops, TestBalancer, next_hop},
};
use lb_userspace::{
    config,
    controller::desired_state,
    dataplane::{
        Dataplane,
        xdp::{BPFFS_ROOT, XdpDataplane, XdpOptions, ensure_bpffs, expected_layouts, load_object},
    },
};

struct PinDir(PathBuf);

impl Drop for PinDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn load(dir: &PinDir, flow_table_size: u32) -> XdpDataplane<StaticNextHops> {
    let options = XdpOptions {
        pin_dir: Some(dir.0.clone()),
        flow_table_size,
        ..XdpOptions::private()
    };
    XdpDataplane::load(&options, StaticNextHops(Default::default())).expect("load")
}

#[test]
fn restarts_keep_matching_pins_and_replace_the_rest() {
    if !require_root("restarts_keep_matching_pins_and_replace_the_rest") {
        return;
    }
    ensure_bpffs().expect("bpffs");
    let dir = PinDir(PathBuf::from(BPFFS_ROOT).join("lbt-pins"));
    let _ = std::fs::remove_dir_all(&dir.0);
    let text = "virtual_server 192.0.2.1 80 {\n lb_algo mh\n lb_kind DR\n protocol TCP\n real_server 10.0.0.1 80 {}\n}\n";
    let loaded = config::parse(text, std::path::Path::new("pins.conf")).expect("config");

    let mut first = load(&dir, 4096);
    assert!(first.load_warnings.is_empty(), "{:?}", first.load_warnings);
    first.apply(&desired_state(&loaded.config)).expect("apply");
    drop(first);

    // Same layout: the service is still there.
    let second = load(&dir, 4096);
    assert!(
        second.load_warnings.is_empty(),
        "{:?}",
        second.load_warnings
    );
    assert_eq!(second.counters().expect("counters").services.len(), 1);
    drop(second);

    // A map of an older build, and a new flow table size.
    let outcomes = MapData::from_pin(dir.0.join(map_names::OUTCOMES)).expect("open pin");
    outcomes.pin(dir.0.join("LB_RINGS")).expect("pin old map");
    let third = load(&dir, 8192);
    let warnings = third.load_warnings.join("\n");
    assert!(
        warnings.contains("removed pinned map LB_RINGS"),
        "{warnings}"
    );
    assert!(
        warnings.contains("LB_FLOWS (entries 4096, now 8192)"),
        "{warnings}"
    );
    assert!(
        warnings.contains("established flows are not kept"),
        "{warnings}"
    );
    assert!(!dir.0.join("LB_RINGS").exists());
    // Nothing holds the flow table's ids: the service is still there.
    assert_eq!(third.counters().expect("counters").services.len(), 1);
}

#[test]
fn an_upgrade_that_changes_a_counter_map_keeps_the_established_flows() {
    if !require_root("an_upgrade_that_changes_a_counter_map_keeps_the_established_flows") {
        return;
    }
    ensure_bpffs().expect("bpffs");
    let dir = PinDir(PathBuf::from(BPFFS_ROOT).join("lbt-pins-upgrade"));
    let _ = std::fs::remove_dir_all(&dir.0);
    let options = XdpOptions {
        pin_dir: Some(dir.0.clone()),
        flow_table_size: 4096,
        ..XdpOptions::private()
    };
    let next_hops = || StaticNextHops::of([("10.0.0.1", next_hop([2, 0xee, 0, 0, 0, 1], None))]);
    let text = "virtual_server 192.0.2.1 80 {\n lb_algo rr\n lb_kind DR\n protocol TCP\n real_server 10.0.0.1 80 {}\n}\n";
    let syn = Frame::tcp(v4([198, 18, 30, 1], [192, 0, 2, 1]), 7000, 80);
    let ack = syn.clone().with_tcp_flags(TCP_ACK).bytes();
    let new_flows = |balancer: &TestBalancer| {
        balancer.dataplane.counters().expect("counters").services[0]
            .traffic
            .new_flows
    };
    let mut first = TestBalancer::load_with(next_hops(), options.clone()).expect("load");
    first.apply_config(text).expect("apply");
    assert_eq!(
        first.run(&syn.bytes()).expect("run").action,
        xdp_action::XDP_TX
    );
    assert_eq!(first.run(&ack).expect("run").action, xdp_action::XDP_TX);
    drop(first);

    // The older build had one outcome counter fewer: its LB_OUTCOMES is smaller (here,
    // another per-CPU array of u64 pinned under its name).
    std::fs::remove_file(dir.0.join(map_names::OUTCOMES)).expect("unpin");
    let smaller = MapData::from_pin(dir.0.join(map_names::DECAP_STATS)).expect("open pin");
    smaller.pin(dir.0.join(map_names::OUTCOMES)).expect("pin");
    let mut upgraded = TestBalancer::load_with(next_hops(), options.clone()).expect("load");
    let warnings = upgraded.dataplane.load_warnings.join("\n");
    assert!(warnings.contains("LB_OUTCOMES (entries"), "{warnings}");
    assert!(
        warnings.contains("established flows are kept"),
        "{warnings}"
    );
    assert!(!warnings.contains("LB_FLOWS"), "{warnings}");
    upgraded.apply_config(text).expect("apply");
    // The flow goes on, on its real, as the same connection.
    assert_eq!(upgraded.run(&ack).expect("run").action, xdp_action::XDP_TX);
    assert_eq!(new_flows(&upgraded), 1);
    drop(upgraded);

    // A change of meaning with the same sizes: an older version stamped for LB_REALS.
    // The reals are recreated, and with them every map that holds their ids (the flows
    // among them), but not the VIPs or the outcome counters.
    let stamps = MapData::from_pin(dir.0.join(map_names::LAYOUT)).expect("open stamps");
    let mut stamps: aya::maps::HashMap<_, [u8; 16], u32> =
        aya::maps::HashMap::try_from(aya::maps::Map::HashMap(stamps)).expect("stamps");
    let mut key = [0u8; 16];
    key[..map_names::REALS.len()].copy_from_slice(map_names::REALS.as_bytes());
    stamps.insert(key, 0, 0).expect("stamp");
    let again = TestBalancer::load_with(next_hops(), options).expect("load");
    let warnings = again.dataplane.load_warnings.join("\n");
    assert!(
        warnings.contains("LB_REALS (version 0, this build's 1)"),
        "{warnings}"
    );
    assert!(
        warnings.contains("LB_FLOWS (holds ids of LB_REALS)"),
        "{warnings}"
    );
    assert!(!warnings.contains("LB_OUTCOMES"), "{warnings}");
    assert!(!warnings.contains("LB_VIPS"), "{warnings}");
}

#[test]
fn every_map_is_named_in_lb_common_and_pinned_as_the_layout_expects() {
    if !require_root("every_map_is_named_in_lb_common_and_pinned_as_the_layout_expects") {
        return;
    }
    ensure_bpffs().expect("bpffs");
    let dir = PinDir(PathBuf::from(BPFFS_ROOT).join("lbt-map-names"));
    let _ = std::fs::remove_dir_all(&dir.0);
    let options = XdpOptions {
        pin_dir: Some(dir.0.clone()),
        ..XdpOptions::private()
    };
    let (ebpf, _) = load_object(&options).expect("load");
    // The object's maps (the `#[map]` names; sections such as `.rodata` aside) are
    // lb_common's names.
    let in_object: BTreeSet<&str> = ebpf
        .maps()
        .map(|(name, _)| name)
        .filter(|name| !name.starts_with('.'))
        .collect();
    let named: BTreeSet<&str> = map_names::ALL.iter().copied().collect();
    assert_eq!(in_object, named);
    // Each map `layout` knows is pinned with the shape it expects.
    let layouts = expected_layouts(&options);
    for layout in &layouts {
        assert!(
            in_object.contains(layout.name),
            "{} not in the object",
            layout.name
        );
        let info = MapData::from_pin(dir.0.join(layout.name))
            .and_then(|map| map.info())
            .unwrap_or_else(|e| panic!("{}: {e}", layout.name));
        assert_eq!(
            (
                info.map_type().expect("map type"),
                info.key_size(),
                info.value_size(),
                info.max_entries(),
                info.map_flags()
            ),
            (
                layout.kind,
                layout.key_size,
                layout.value_size,
                layout.max_entries,
                layout.flags
            ),
            "{}",
            layout.name
        );
    }
    // What `expected_layouts` leaves out: scratch and benchmark maps, which are not
    // pinned, and the stamps, whose own shape `layout` checks apart.
    let unchecked: BTreeSet<&str> = in_object
        .iter()
        .copied()
        .filter(|name| !layouts.iter().any(|l| l.name == *name))
        .collect();
    assert_eq!(
        unchecked,
        BTreeSet::from([
            map_names::BENCH_COUNTER,
            map_names::BENCH_FRAME,
            map_names::FNAT_SCRATCH,
            map_names::LAYOUT,
            map_names::REPLACED,
        ])
    );
}
