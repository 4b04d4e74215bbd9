//! A VRRP instance whose interface does not exist yet, as keepalived runs it: `lbd -t`
//! warns, lbd starts, the instance waits in FAULT, and it comes up (here to MASTER, with
//! its VIP) once the interface is created. Needs root.

use std::time::{Duration, Instant};

use lb_tests::{
    lbd::{Lbd, lbctl_ok_in},
    netns::Netns,
    privilege::require_root,
};

#[test]
fn an_instance_waits_in_fault_until_its_interface_appears() {
    if !require_root("an_instance_waits_in_fault_until_its_interface_appears") {
        return;
    }
    let ns = Netns::create("lbt-late").expect("netns");
    ns.ip(&["link", "set", "lo", "up"]).expect("lo up");
    let config = "global_defs {\n    vrrp_version 3\n}\nvrrp_instance VI_1 {\n    state BACKUP\n    interface late0\n    virtual_router_id 81\n    priority 150\n    advert_int 0.1\n    virtual_ipaddress {\n        10.9.6.100/24\n    }\n}\n";
    let mut lbd = Lbd::start_vrrp_only(&ns, config).expect("lbd starts without the interface");
    let name = "lbt-late-lbd";
    lbd.wait_for(
        "(VI_1) interface late0 does not exist: FAULT until it appears",
        1,
        Duration::from_secs(5),
    )
    .expect("waiting for the interface");
    // The status lbctl reads is published just after that line is logged: ask until it
    // says FAULT (bounded).
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let listing = lbctl_ok_in(Some(&ns), name, &["vrrp"]);
        if listing.contains("FAULT") {
            break;
        }
        assert!(Instant::now() < deadline, "{listing}");
        std::thread::sleep(Duration::from_millis(50));
    }

    ns.ip(&[
        "link", "add", "late0", "type", "veth", "peer", "name", "late1",
    ])
    .expect("veth");
    ns.ip(&["addr", "add", "10.9.6.1/24", "dev", "late0"])
        .expect("address");
    for interface in ["late0", "late1"] {
        ns.ip(&["link", "set", interface, "up"]).expect("up");
    }
    lbd.wait_for("(VI_1) Entering MASTER STATE", 1, Duration::from_secs(10))
        .expect("master once the interface is there");
    let deadline = Instant::now() + Duration::from_secs(5);
    while !ns
        .ip(&["addr", "show", "dev", "late0"])
        .expect("addresses")
        .contains("10.9.6.100/24")
    {
        assert!(Instant::now() < deadline, "the VIP never came to late0");
        std::thread::sleep(Duration::from_millis(50));
    }
    let listing = lbctl_ok_in(Some(&ns), name, &["vrrp"]);
    assert!(listing.contains("MASTER"), "{listing}");
}
