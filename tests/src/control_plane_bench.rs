//! The control-plane rows of `cargo xtask bench`: lbd's own cost and timing with a full
//! flow table. lbd (release build, as the bench is) runs the lab's director as the VRRP
//! master of a VIP it balances (DR, one real), keepalived 2.2.7 in the client's namespace
//! is the backup; `flows` idle flows (SYN then ACK: ESTABLISHED, 900 s) are put into the
//! table through the program lbd attached. Over the window that follows the row gives:
//! - lbd's CPU time (every thread, from /proc), in percent of one core;
//! - the last full scan of the flow table (wall and CPU time, from lbd's metrics);
//! - the intervals between adverts as the peer's kernel timed them: p50, p99, max;
//! - how long lbd's control socket takes to answer lbctl's status request (the one every
//!   `lbctl -L` view makes), asked every 200 ms: the longest answer.

use std::{
    io::{Read as _, Write as _},
    net::{Ipv4Addr, TcpStream},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use serde::Serialize;

use crate::{
    adverts::{AdvertCapture, IntervalStats, intervals},
    keepalived::Keepalived,
    lbd::Lbd,
    netns::Netns,
    topology::{DIRECTOR_ADDR, Topology},
    traffic::AttachedBalancer,
};

const VIP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 200);
const METRICS_PORT: u16 = 19_190;

#[derive(Debug, Serialize)]
pub struct ControlPlaneRow {
    pub flows: u32,
    pub advert_int: String,
    /// Seconds measured (after the flows were in).
    pub window_secs: f64,
    /// lbd's CPU time over the window, in percent of one core.
    pub lbd_cpu_percent: f64,
    /// Live flows lbd's last scan found, and that scan's wall and CPU time.
    pub scanned_flows: f64,
    pub scan_ms: f64,
    pub scan_cpu_ms: f64,
    /// Advert intervals at the peer.
    pub adverts: Option<IntervalStats>,
    /// keepalived's takeovers over the window (should be 0).
    pub takeovers: usize,
    /// The longest and the median answer of the control socket over the window.
    pub control_max_ms: f64,
    pub control_p50_ms: f64,
}

fn vrrp_instance(priority: u8, advert_int: &str) -> String {
    format!(
        "global_defs {{\n    vrrp_version 3\n}}\nvrrp_instance VI_1 {{\n    state BACKUP\n    interface eth0\n    virtual_router_id 52\n    priority {priority}\n    advert_int {advert_int}\n    virtual_ipaddress {{\n        {VIP}/24\n    }}\n}}\n"
    )
}

/// lbd's user and system CPU time so far.
fn cpu_time(pid: u32) -> anyhow::Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may hold spaces), from field 3 on.
    let rest = stat.rsplit_once(')').context("stat")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>()? + fields[12].parse::<u64>()?;
    // SAFETY: sysconf has no preconditions.
    let per_sec = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Ok(Duration::from_nanos(ticks * 1_000_000_000 / per_sec))
}

/// One sample of lbd's metrics, in the director's namespace.
fn metric(ns: &Netns, name: &'static str) -> anyhow::Result<f64> {
    let text = ns.run(|| {
        let mut stream = TcpStream::connect(("127.0.0.1", METRICS_PORT))?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        stream.write_all(b"GET /metrics HTTP/1.1\r\nHost: lbd\r\nConnection: close\r\n\r\n")?;
        let mut text = String::new();
        stream.read_to_string(&mut text)?;
        Ok(text)
    })?;
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .with_context(|| format!("no {name} in lbd's metrics"))
}

/// One row: `flows` idle flows, adverts every `advert_int`, measured over `window`.
pub fn measure(flows: u32, advert_int: &str, window: Duration) -> anyhow::Result<ControlPlaneRow> {
    let prefix = "lbt-bcp";
    let lab = Topology::create(prefix, 1)?;
    let dir = lab.scratch_dir();
    let real = lab.reals[0].addr;
    let path = dir.join("lbd.conf");
    std::fs::write(
        &path,
        format!(
            "{}virtual_server {VIP} 80 {{\n    lb_algo rr\n    lb_kind DR\n    protocol TCP\n    real_server {real} 80 {{\n        weight 1\n    }}\n}}\n",
            vrrp_instance(150, advert_int)
        ),
    )?;
    let backup = Keepalived::start(
        &lab.client,
        &dir.join("keepalived"),
        &vrrp_instance(100, advert_int),
    )?;
    let name = format!("{prefix}-lbd");
    let metrics = format!("127.0.0.1:{METRICS_PORT}");
    let mut lbd = Lbd::start(
        &lab.director,
        &path,
        "eth0",
        &name,
        &dir.join("lbd.log"),
        &["--metrics-address", &metrics],
    )?;
    lbd.wait_for("Entering MASTER STATE", 1, Duration::from_secs(10))?;
    backup.wait_for("Entering BACKUP STATE", 1, Duration::from_secs(10))?;
    let balancer = AttachedBalancer::of(&lab.director, "eth0")?;
    let started = Instant::now();
    for n in 0..flows {
        balancer.connection(VIP, 80, n, false)?;
    }
    let fill = started.elapsed();
    // Let the first scan that sees them all go by.
    std::thread::sleep(Duration::from_secs(7));
    let masters_before = backup.log().matches("Entering MASTER STATE").count();
    let capture = AdvertCapture::start(&lab.client, "eth0", DIRECTOR_ADDR)?;
    let cpu_before = cpu_time(lbd.pid())?;
    let window_started = Instant::now();
    let socket = lb_userspace::api::socket_path(&lb_userspace::status::run_dir(&name));
    let mut answers = Vec::new();
    while window_started.elapsed() < window {
        let asked = Instant::now();
        match lb_userspace::api::client::call(&socket, &lb_userspace::api::Request::Status)? {
            lb_userspace::api::Response::Status { .. } => {}
            other => bail!("the control socket answered {other:?}"),
        }
        answers.push(asked.elapsed().as_secs_f64() * 1e3);
        std::thread::sleep(Duration::from_millis(200));
    }
    let cpu = cpu_time(lbd.pid())?.saturating_sub(cpu_before);
    answers.sort_by(f64::total_cmp);
    let elapsed = window_started.elapsed();
    let times = capture.finish()?;
    let takeovers = backup.log().matches("Entering MASTER STATE").count() - masters_before;
    let scanned_flows = metric(&lab.director, "lbd_flow_table_flows")?;
    if scanned_flows < f64::from(flows) * 0.9 {
        bail!("lbd's last scan found {scanned_flows} flows of {flows}");
    }
    let row = ControlPlaneRow {
        flows,
        advert_int: advert_int.to_owned(),
        window_secs: elapsed.as_secs_f64(),
        lbd_cpu_percent: 100.0 * cpu.as_secs_f64() / elapsed.as_secs_f64(),
        scanned_flows,
        scan_ms: metric(&lab.director, "lbd_flow_table_last_scan_seconds")? * 1e3,
        scan_cpu_ms: metric(&lab.director, "lbd_flow_table_last_scan_cpu_seconds")? * 1e3,
        adverts: IntervalStats::of(&intervals(&times)),
        takeovers,
        control_max_ms: answers.last().copied().unwrap_or(f64::NAN),
        control_p50_ms: answers.get(answers.len() / 2).copied().unwrap_or(f64::NAN),
    };
    eprintln!("control plane: {flows} flows put in in {fill:.1?}");
    Ok(row)
}
