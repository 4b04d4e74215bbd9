//! Pinned maps across restarts of the XDP backend: state survives a restart with the same
//! layout; a changed layout recreates every map (with a warning), and maps an older build
//! pinned but this one does not use are removed. Needs root.

use std::path::PathBuf;

use aya::maps::MapData;
use lb_common::map_names;
use lb_tests::{privilege::require_root, testrun::StaticNextHops};
use lb_userspace::{
    config,
    controller::desired_state,
    dataplane::{
        Dataplane,
        xdp::{BPFFS_ROOT, XdpDataplane, XdpOptions, ensure_bpffs},
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
    assert!(warnings.contains("all recreated empty"), "{warnings}");
    assert!(!dir.0.join("LB_RINGS").exists());
    assert!(third.counters().expect("counters").services.is_empty());
}
