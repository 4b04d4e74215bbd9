//! Connection counts stay exact under churn, and least-connection scheduling gives a real
//! added during churn its fair share.
//!
//! The lab's director balances VIP:80 over r1 and r2 with wlc (DR), with
//! `lvs_timeouts tcp 2 tcpfin 2`. A generator puts 4,000 connections a second through the
//! program lbd attached, each from a new client: SYN and ACK (ESTABLISHED, active), and
//! every other one a FIN (FIN_WAIT, inactive); each times out 2 s after its last packet.
//! While it runs:
//! - at five moments the flow table is read and each real's ActiveConn and InActConn, as
//!   the data plane keeps them (and `lbctl -Ln` shows them), must equal its live flows in
//!   the table within 1%;
//! - then r3 is added (reload) and over the next 10 s its share of the new flows must be
//!   within 20% of a third.
//!
//! Why 2-s timeouts: a least-connection scheduler gives a new real every new flow until its
//! count catches up with the others', as IPVS does; with flows living T seconds, that
//! excess is about `T·n / ((n+1)·W)` of a fair share over a window of W seconds (n reals
//! before the new one): 13% here, 33% with 5-s flows.

use std::{
    net::Ipv4Addr,
    path::Path,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use lb_tests::{
    lbd::Lbd,
    privilege::require_root,
    topology::{Topology, VIP},
    traffic::{AttachedBalancer, census, conn_counts, real_ids},
};
use lb_userspace::dataplane::xdp::read_pinned_counters;

const PREFIX: &str = "lbt-churn";
/// New connections per second.
const RATE: u32 = 4000;

fn config(lab: &Topology, reals: usize) -> String {
    let mut text = "global_defs {\n    lvs_timeouts tcp 2 tcpfin 2\n}\n".to_owned();
    text.push_str(&lab.keepalived_conf("wlc", &[("r1", 1), ("r2", 1), ("r3", 1)][..reals]));
    text
}

/// Connections from new clients at `RATE` per second, until stopped; `pause` is held
/// while a batch is made, so that taking it pauses the churn.
struct Churn {
    running: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<anyhow::Result<u32>>,
}

impl Churn {
    fn start(balancer: AttachedBalancer, pause: Arc<Mutex<()>>) -> Self {
        let running = Arc::new(AtomicBool::new(true));
        let still = running.clone();
        let thread = std::thread::spawn(move || {
            let started = Instant::now();
            let mut opened = 0u32;
            while still.load(Ordering::Relaxed) {
                let due = (started.elapsed().as_secs_f64() * f64::from(RATE)) as u32;
                if opened >= due {
                    std::thread::sleep(Duration::from_millis(2));
                    continue;
                }
                let _paused = pause.lock().unwrap_or_else(|e| e.into_inner());
                while opened < due {
                    balancer.connection(VIP, 80, opened, opened % 2 == 1)?;
                    opened += 1;
                }
            }
            Ok(opened)
        });
        Self { running, thread }
    }

    fn stop(self) -> u32 {
        self.running.store(false, Ordering::Relaxed);
        self.thread
            .join()
            .expect("generator thread")
            .expect("generator")
    }
}

/// Every real's counts against the table, within 1% (and one flow, for tiny counts).
fn check_counts(pins: &Path, reals: &[(Ipv4Addr, u32)]) {
    let (live, _) = census(pins).expect("census");
    for &(addr, id) in reals {
        let counted = conn_counts(pins, id).expect("counts");
        let in_table = live.get(&id).copied().unwrap_or_default();
        eprintln!(
            "real {addr}: ActiveConn {} InActConn {}; the table holds {} active and {} inactive",
            counted.active(),
            counted.inactive(),
            in_table.active,
            in_table.inactive
        );
        for (what, counted, in_table) in [
            ("ActiveConn", counted.active(), in_table.active),
            ("InActConn", counted.inactive(), in_table.inactive),
        ] {
            let allowed = (in_table / 100).max(1);
            assert!(
                counted.abs_diff(in_table) <= allowed,
                "real {addr}: {what} is {counted}, the table holds {in_table} (at most {allowed} apart)"
            );
            assert!(
                in_table > 500,
                "real {addr}: too few flows to judge ({in_table})"
            );
        }
    }
}

/// New flows scheduled to each real so far (ipvsadm's Conns), by address.
fn new_flows(pins: &Path) -> Vec<(std::net::IpAddr, u64)> {
    read_pinned_counters(pins)
        .expect("counters")
        .services
        .iter()
        .flat_map(|s| &s.reals)
        .map(|r| (r.addr, r.traffic.new_flows))
        .collect()
}

#[test]
fn connection_counts_stay_exact_under_churn_and_a_new_real_gets_its_share() {
    if !require_root("connection_counts_stay_exact_under_churn_and_a_new_real_gets_its_share") {
        return;
    }
    let lab = Topology::create(PREFIX, 3).expect("lab");
    let dir = lab.scratch_dir();
    let path = dir.join("lbd.conf");
    std::fs::write(&path, config(&lab, 2)).expect("config");
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
    let pins = lbd.pin_dir();
    let ids = real_ids(&pins).expect("real ids");
    let reals: Vec<(Ipv4Addr, u32)> = lab.reals[..2]
        .iter()
        .map(|r| (r.addr, ids[&r.addr.into()]))
        .collect();

    let pause = Arc::new(Mutex::new(()));
    let balancer = AttachedBalancer::of(&lab.director, "eth0").expect("attached program");
    let churn = Churn::start(balancer, pause.clone());
    // Steady state: every flow alive now was opened after the first ones timed out.
    std::thread::sleep(Duration::from_secs(5));
    for _ in 0..5 {
        {
            let _paused = pause.lock().unwrap_or_else(|e| e.into_inner());
            check_counts(&pins, &reals);
        }
        std::thread::sleep(Duration::from_millis(1700));
    }

    // A third real joins.
    std::fs::write(&path, config(&lab, 3)).expect("config");
    lbd.reload().expect("reload");
    lbd.wait_for("reload applied", 1, Duration::from_secs(10))
        .expect("reload applied");
    let before = new_flows(&pins);
    std::thread::sleep(Duration::from_secs(10));
    let after = new_flows(&pins);
    let opened = churn.stop();
    let deltas: Vec<(std::net::IpAddr, u64)> = after
        .iter()
        .map(|(addr, n)| {
            let was = before
                .iter()
                .find(|(a, _)| a == addr)
                .map_or(0, |(_, n)| *n);
            (*addr, n - was)
        })
        .collect();
    let total: u64 = deltas.iter().map(|(_, n)| n).sum();
    let newcomer = lab.reals[2].addr;
    let share = deltas
        .iter()
        .find(|(addr, _)| *addr == std::net::IpAddr::from(newcomer))
        .map_or(0, |(_, n)| *n) as f64
        / total as f64;
    eprintln!(
        "{opened} connections in all; over the 10 s after r3 joined: {deltas:?}, r3's share {share:.3}"
    );
    assert!(total > u64::from(RATE) * 8, "too few new flows: {total}");
    let fair = 1.0 / 3.0;
    assert!(
        (share - fair).abs() <= fair * 0.2,
        "the new real took {share:.3} of the new flows; fair is {fair:.3}"
    );
}
