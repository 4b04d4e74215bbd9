//! lbd's VRRP keeps its timing while the data plane it drives carries a million flows.
//!
//! The lab's director runs lbd as the VRRP master (VRRPv3, `advert_int 0.1`, priority 150)
//! of a VIP it balances (DR, rr, one real); keepalived 2.2.7 in the client's namespace is
//! the backup (priority 100), so a silence of about 0.36 s makes it take over. One
//! million TCP flows are put into lbd's table through the program lbd attached, and a
//! thread keeps one CPU busy. For 60 s keepalived must never take over, and every interval
//! between two adverts, timed by the kernel at the peer, must be within 10% of 100 ms.
//! Needs root and keepalived.

use std::{
    net::Ipv4Addr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use lb_tests::{
    adverts::{self, AdvertCapture, IntervalStats},
    keepalived::{self, Keepalived},
    lbd::{Lbd, lbctl_ok_in},
    privilege::require_root,
    topology::{DIRECTOR_ADDR, Topology},
    traffic::AttachedBalancer,
};

const PREFIX: &str = "lbt-vload";
const VIP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 200);
const FLOWS: u32 = 1_000_000;
const OBSERVED: Duration = Duration::from_secs(60);
const ADVERT_INT: Duration = Duration::from_millis(100);

fn vrrp_instance(priority: u8) -> String {
    format!(
        "global_defs {{\n    vrrp_version 3\n}}\nvrrp_instance VI_1 {{\n    state BACKUP\n    interface eth0\n    virtual_router_id 51\n    priority {priority}\n    advert_int 0.1\n    virtual_ipaddress {{\n        {VIP}/24\n    }}\n}}\n"
    )
}

/// A thread spinning on one CPU until the flag is cleared.
fn cpu_hog(running: Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut x = 0u64;
        while running.load(Ordering::Relaxed) {
            x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
        }
    })
}

#[test]
fn vrrp_keeps_its_timing_with_a_million_flows() {
    let test = "vrrp_keeps_its_timing_with_a_million_flows";
    if !(require_root(test) && keepalived::available(test)) {
        return;
    }
    let lab = Topology::create(PREFIX, 1).expect("lab");
    let dir = lab.scratch_dir();
    let real = lab.reals[0].addr;
    let config = format!(
        "{}virtual_server {VIP} 80 {{\n    lb_algo rr\n    lb_kind DR\n    protocol TCP\n    real_server {real} 80 {{\n        weight 1\n    }}\n}}\n",
        vrrp_instance(150)
    );
    let path = dir.join("lbd.conf");
    std::fs::write(&path, config).expect("config");
    let backup = Keepalived::start(&lab.client, &dir.join("keepalived"), &vrrp_instance(100))
        .expect("keepalived");
    let name = format!("{PREFIX}-lbd");
    let mut lbd = Lbd::start(
        &lab.director,
        &path,
        "eth0",
        &name,
        &dir.join("lbd.log"),
        &[],
    )
    .expect("lbd");
    lbd.wait_for("Entering MASTER STATE", 1, Duration::from_secs(10))
        .expect("lbd master");
    backup
        .wait_for("Entering BACKUP STATE", 1, Duration::from_secs(10))
        .expect("keepalived backup");
    let capture = AdvertCapture::start(&lab.client, "eth0", DIRECTOR_ADDR).expect("capture");
    // keepalived, started first, may have been master until lbd preempted it.
    let masters_before = backup.log().matches("Entering MASTER STATE").count();

    let hog_running = Arc::new(AtomicBool::new(true));
    let hog = cpu_hog(hog_running.clone());
    let started = Instant::now();
    let balancer = AttachedBalancer::of(&lab.director, "eth0").expect("attached program");
    balancer
        .open_flows(VIP, 80, 0, FLOWS)
        .expect("a million flows");
    eprintln!("{FLOWS} flows opened in {:.1?}", started.elapsed());
    // The table holds them (SYN_RECV counts as active, as in ipvsadm).
    let listing = lbctl_ok_in(None, &name, &["-Ln", "--exact"]);
    let remaining = OBSERVED.saturating_sub(started.elapsed());
    std::thread::sleep(remaining);
    hog_running.store(false, Ordering::Relaxed);
    hog.join().expect("hog");
    let times = capture.finish().expect("adverts");

    let takeovers = backup.log().matches("Entering MASTER STATE").count() - masters_before;
    let intervals = adverts::intervals(&times);
    let stats = IntervalStats::of(&intervals).expect("adverts seen");
    eprintln!(
        "advert intervals at the peer over {OBSERVED:?}: {stats:?}; keepalived took over {takeovers} time(s)"
    );
    let late: Vec<_> = intervals
        .iter()
        .filter(|gap| gap.abs_diff(ADVERT_INT) > ADVERT_INT / 10)
        .collect();
    assert_eq!(takeovers, 0, "keepalived took over while lbd was master");
    assert!(
        stats.count >= 550,
        "only {} adverts in {OBSERVED:?}",
        stats.count
    );
    assert!(
        late.is_empty(),
        "{} of {} advert intervals were off by more than 10%: {late:?}",
        late.len(),
        intervals.len()
    );
    let active: u64 = listing
        .lines()
        .filter(|line| line.trim_start().starts_with("->") && line.contains("Route"))
        .filter_map(|line| line.split_whitespace().nth(4)?.parse::<u64>().ok())
        .sum();
    assert!(
        active >= u64::from(FLOWS) * 9 / 10,
        "the table does not hold the flows: {active} active"
    );
}
