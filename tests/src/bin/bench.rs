//! `cargo xtask bench`: per-packet cost of the balancer through BPF_PROG_TEST_RUN, in one
//! run so that ratios are comparable on a noisy shared machine. Prints a table and writes
//! `target/bench/report.json` (or the path given).
//!
//! Forwarding modes: DR, TUN, NAT and FNAT for IPv4 and IPv6, a new flow (every packet a
//! new client) and an established flow each, as the median of several test runs of
//! `--repeat` packets. A repeated test run feeds a program its own output, so the runs use
//! `lb_bench_balancer`, which puts the frame back (length and bytes, and for new flows a
//! new client) before balancing it; the time of putting it back, measured with
//! `lb_bench_generator`, is taken off. Next to them, two baselines repeated the same way:
//! a trivial XDP_PASS program (the harness's floor) and a MAC-swap XDP_TX program; the
//! ratio is to the MAC-swap baseline.
//!
//! Live frames: packets per second through the balancer attached to a veth in a network
//! namespace, for the established flow of every mode, as the median of several runs of
//! `--repeat` live frames from a generator program (see `live_rows`), next to the MAC-swap
//! program as the director, run the same way. Where live frames are refused, these rows
//! say why; the packet-socket rows (`lb_tests::socket_bench`) measure the same director
//! with frames from an `AF_PACKET` generator instead, next to that generator's ceiling.
//!
//! Against Katran: Katran's own balancer and ours on the same paths, timed the same way
//! in this process (repeat=1 test runs, mean, net of XDP_PASS), with the ratio
//! (`lb_tests::side_by_side`).
//!
//! Scheduling: for every scheduler and 2, 16 and 256 reals, the kernel-timed cost of a
//! new flow (a SYN from a client not seen before: parse, lookup, flow-table miss,
//! scheduling, rewrite, flow insert), as the median of single runs over distinct flows,
//! next to a trivial XDP_PASS program timed the same way (the harness's floor), and the
//! cost of a packet of an established flow (one frame repeated a million times).
//! Needs root.

use std::{
    collections::HashMap,
    net::IpAddr,
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use aya::{
    TestRun as _,
    maps::{Array, MapData},
    programs::{TestRunAttrs, TestRunOptions, Xdp, XdpMode},
};
use clap::Parser;
use lb_common::{BENCH_FRAME_LEN, BenchFrame, Outcome, map_names, program_names, xdp_action};
use lb_tests::{
    packet::{Frame, TCP_ACK, v4, v6},
    testrun::{INGRESS, StaticNextHops, TestBalancer, next_hop, pin_to_cpu0, run_program},
};
use lb_userspace::{
    dataplane::{
        Dataplane,
        xdp::{AttachMode, load_program},
    },
    model::Scheduler,
    nexthop::NextHop,
};
use serde::Serialize;

#[derive(Parser)]
#[command(
    name = "bench",
    about = "Per-packet cost of the XDP balancer (needs root)"
)]
struct Args {
    /// New flows timed per scheduler and real count.
    #[arg(long, default_value_t = 20_000)]
    new_flows: usize,
    /// Repetitions of the established-flow frame.
    #[arg(long, default_value_t = 1_000_000)]
    repeat: u32,
    /// Runs of `repeat` packets per mode benchmark; the median is reported.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Frames per run of the packet-socket benchmark.
    #[arg(long, default_value_t = 500_000)]
    socket_packets: u32,
    /// Where to write the JSON report.
    #[arg(long, default_value = "target/bench/report.json")]
    report: PathBuf,
    /// Checkers for the health-check row (TCP_CHECK every 0.1 s each).
    #[arg(long, default_value_t = 1000)]
    checkers: usize,
    /// Seconds the health-check row is measured over.
    #[arg(long, default_value_t = 10)]
    checks_seconds: u64,
    /// Measure the health-check row only (no report written).
    #[arg(long)]
    checks_only: bool,
    /// Measure the failover rows only (no report written).
    #[arg(long)]
    failover_only: bool,
    /// Measure the control-plane rows only (no report written).
    #[arg(long)]
    control_plane_only: bool,
    /// Measure the packet-socket rows only (no report written).
    #[arg(long)]
    socket_only: bool,
    /// Measure the connection-sync row only (no report written).
    #[arg(long)]
    sync_only: bool,
    /// Seconds each control-plane row is measured over.
    #[arg(long, default_value_t = 20)]
    control_plane_seconds: u64,
    /// Katran's balancer object, timed next to ours (default: the anchor in
    /// ../shared/anchors/katran/ when present).
    #[arg(long, env = "LB_KATRAN_OBJECT")]
    katran: Option<PathBuf>,
    /// Test runs per row of the table against Katran.
    #[arg(long, default_value_t = 300_000)]
    katran_calls: usize,
    /// Measure the table against Katran only (no report written).
    #[arg(long)]
    katran_only: bool,
    /// Run one path alone (`katran`, or our TUN, DR, NAT, FNAT; established, or a new flow
    /// every call with the prefix `new:`) for --katran-calls test runs and print its mean,
    /// for a profiler to sample.
    #[arg(long)]
    profile_path: Option<String>,
    /// Internal: be the health-check row's listener on this port.
    #[arg(long, hide = true)]
    listen: Option<u16>,
}

const REAL_COUNTS: [usize; 3] = [2, 16, 256];
const IPV4_SRC: usize = 14 + 12;
const TCP_SPORT: usize = 14 + 20;

#[derive(Serialize)]
struct SchedulerRow {
    scheduler: &'static str,
    reals: usize,
    /// Median kernel time of one new-flow packet.
    new_flow_ns: u64,
    /// `new_flow_ns` minus the XDP_PASS floor.
    new_flow_net_ns: u64,
    /// Mean kernel time of one established-flow packet over `repeat` runs.
    established_ns: f64,
}

#[derive(Serialize)]
struct ModeRow {
    mode: &'static str,
    family: &'static str,
    /// Kernel time per packet of a new flow (a new client every packet), median of the
    /// runs of `repeat` packets, the time of putting the frame back taken off.
    new_flow_ns: f64,
    /// The same for the packets of one established flow.
    established_ns: f64,
    /// Both divided by the MAC-swap baseline's time per packet over `repeat` runs.
    new_flow_ratio: f64,
    established_ratio: f64,
}

#[derive(Serialize)]
struct Report {
    /// XDP_PASS program, single runs: the harness's per-run floor.
    xdp_pass_single_run_ns: u64,
    /// XDP_PASS program, mean over `repeat` runs.
    xdp_pass_repeated_ns: f64,
    /// MAC-swap XDP_TX program, single runs and mean over `repeat` runs.
    macswap_single_run_ns: u64,
    macswap_repeated_ns: f64,
    modes: Vec<ModeRow>,
    /// Live frames with the MAC-swap program as the director: median time per packet.
    macswap_live_ns: Option<f64>,
    /// Established flows with live frames through a director in a namespace.
    live: Vec<LiveRow>,
    /// Why there are no live-frame rows, if there are none.
    live_unavailable: Option<String>,
    /// Established flows through the same director, frames from a packet socket.
    socket: Option<lb_tests::socket_bench::SocketReport>,
    /// Why there are no packet-socket rows, if there are none.
    socket_unavailable: Option<String>,
    schedulers: Vec<SchedulerRow>,
    /// The health checkers' CPU time at a rate of TCP checks.
    checks: lb_tests::check_bench::ChecksRow,
    /// VRRP failovers: lbd and keepalived with advert_int 1, lbd VRRPv3 with 0.01.
    failover: Vec<lb_tests::failover_bench::FailoverRow>,
    /// Connection sync: connections and messages per second, each way, on one core.
    sync: lb_tests::sync_bench::SyncRow,
    /// lbd's CPU, flow-table scans and advert timing with 0, 100k and 1M flows.
    control_plane: Vec<lb_tests::control_plane_bench::ControlPlaneRow>,
    /// Katran's balancer and ours, the same paths timed the same way.
    katran: lb_tests::side_by_side::SideBySide,
}

/// The failover rows, printed: lbd and keepalived side by side at advert_int 1, and lbd
/// with VRRPv3 at advert_int 0.01 (target: under 50 ms).
fn failover_rows() -> anyhow::Result<Vec<lb_tests::failover_bench::FailoverRow>> {
    use lb_tests::failover_bench::{Daemon, measure};
    let lab = std::env::current_exe()?
        .parent()
        .context("bench has no directory")?
        .join("lab");
    let mut rows = Vec::new();
    println!();
    println!("failover   version advert_int  to VIP (ms)  to HTTP answer (ms)");
    for (daemon, version, advert_int) in [
        (Daemon::Lbd, 2, "1"),
        (Daemon::Keepalived, 2, "1"),
        (Daemon::Lbd, 3, "0.01"),
    ] {
        let row = measure(&lab, daemon, version, advert_int)?;
        println!(
            "{:<10} {:>7} {:>10} {:>12.1} {:>20.1}",
            format!("{daemon:?}"),
            version,
            advert_int,
            row.to_vip_ms,
            row.to_http_ms
        );
        rows.push(row);
    }
    Ok(rows)
}

/// The control-plane rows, printed: lbd's CPU and its last flow-table scan with 0, 100k
/// and 1M idle flows, the advert intervals at the peer, at advert_int 0.1 and 0.01, and
/// the control socket's answers (median/longest).
fn control_plane_rows_over(
    window: Duration,
) -> anyhow::Result<Vec<lb_tests::control_plane_bench::ControlPlaneRow>> {
    use lb_tests::control_plane_bench::measure;
    let mut rows = Vec::new();
    println!();
    println!(
        "Control plane: lbd master (VRRPv3) with a keepalived backup, idle flows in the table, measured over {window:?}"
    );
    println!(
        "{:>9} {:>10} {:>9} {:>14} {:>10} {:>14} {:>9} {:>9} {:>9} {:>9} {:>13}",
        "flows",
        "advert_int",
        "lbd CPU%",
        "scanned flows",
        "scan (ms)",
        "scan CPU (ms)",
        "p50 (ms)",
        "p99 (ms)",
        "max (ms)",
        "takeovers",
        "control (ms)"
    );
    for (flows, advert_int) in [
        (0, "0.1"),
        (100_000, "0.1"),
        (1_000_000, "0.1"),
        (0, "0.01"),
        (1_000_000, "0.01"),
    ] {
        let row = measure(flows, advert_int, window)?;
        let (p50, p99, max) = row.adverts.map_or((f64::NAN, f64::NAN, f64::NAN), |a| {
            (a.p50_ms, a.p99_ms, a.max_ms)
        });
        println!(
            "{:>9} {:>10} {:>9.2} {:>14.0} {:>10.1} {:>14.1} {:>9.2} {:>9.2} {:>9.2} {:>9} {:>13}",
            row.flows,
            row.advert_int,
            row.lbd_cpu_percent,
            row.scanned_flows,
            row.scan_ms,
            row.scan_cpu_ms,
            p50,
            p99,
            max,
            row.takeovers,
            format!("{:.1}/{:.1}", row.control_p50_ms, row.control_max_ms)
        );
        rows.push(row);
    }
    Ok(rows)
}

/// The health-check row, printed.
/// The connection-sync row, printed.
fn sync_row() -> anyhow::Result<lb_tests::sync_bench::SyncRow> {
    let row = lb_tests::sync_bench::measure()?;
    println!(
        "\nConnection sync on one core ({} connections in {} messages of up to 1472 bytes): sending {:.0} connections/s ({:.0} messages/s), receiving and installing {:.0} connections/s ({:.0} messages/s)",
        row.connections,
        row.messages,
        row.send_connections_per_s,
        row.send_messages_per_s,
        row.receive_connections_per_s,
        row.receive_messages_per_s
    );
    Ok(row)
}

fn checks_row(args: &Args) -> anyhow::Result<lb_tests::check_bench::ChecksRow> {
    let checks = lb_tests::check_bench::measure(
        &std::env::current_exe()?,
        args.checkers,
        Duration::from_millis(100),
        Duration::from_secs(args.checks_seconds),
    )?;
    println!();
    println!(
        "Health checks: {} TCP_CHECKs every 0.1 s ({:.0}/s asked), {:.0}/s done, lbd's checker thread at {:.1}% of one core ({:.1}% user, {:.1}% kernel), {:.1}% scaled to 10,000/s (target: under 30%)",
        checks.checkers,
        checks.target_per_sec,
        checks.done_per_sec,
        checks.cpu_percent,
        checks.user_percent,
        checks.system_percent,
        checks.cpu_percent_at_10k
    );
    Ok(checks)
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(port) = args.listen {
        return lb_tests::check_bench::listen(port);
    }
    if args.failover_only {
        let rows = failover_rows()?;
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    if args.control_plane_only {
        let rows = control_plane_rows_over(Duration::from_secs(args.control_plane_seconds))?;
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    if args.socket_only {
        let report = socket_rows(args.socket_packets, args.runs)?;
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    let katran = args.katran.clone().or_else(|| {
        let anchor = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../shared/anchors/katran/balancer.bpf.o");
        anchor.exists().then_some(anchor)
    });
    if let Some(kind) = &args.profile_path {
        let mean =
            lb_tests::side_by_side::profile_path(katran.as_deref(), kind, args.katran_calls)?;
        println!("{kind}: {mean:.1} ns per call (gross, XDP_PASS not taken off)");
        return Ok(());
    }
    if args.katran_only {
        let report = lb_tests::side_by_side::measure(katran.as_deref(), args.katran_calls)?;
        lb_tests::side_by_side::print(&report);
        return Ok(());
    }
    if args.sync_only {
        sync_row()?;
        return Ok(());
    }
    if args.checks_only {
        let checks = checks_row(&args)?;
        println!("{}", serde_json::to_string_pretty(&checks)?);
        return Ok(());
    }
    // First, on a quiet process: the table against Katran.
    let katran = lb_tests::side_by_side::measure(katran.as_deref(), args.katran_calls)?;
    lb_tests::side_by_side::print(&katran);
    println!();
    let (reals, next_hops) = reals(REAL_COUNTS.iter().sum::<usize>() * Scheduler::ALL.len());
    let mut balancer = TestBalancer::load(next_hops, 1 << 20)?;
    let mut config = String::new();
    let mut services = Vec::new();
    let mut next_real = 0;
    for (s, scheduler) in Scheduler::ALL.iter().enumerate() {
        for (c, &count) in REAL_COUNTS.iter().enumerate() {
            let vip = [192, 0, 2 + s as u8, 1 + c as u8];
            config += &format!(
                "virtual_server {} 80 {{\n lb_algo {}\n lb_kind DR\n protocol TCP\n",
                IpAddr::from(vip),
                scheduler.name()
            );
            // ovf refuses a new flow once every real has more active connections than its
            // weight: its weights are scaled up so that no real overflows within a run
            // (the rows time scheduling, not refusal).
            let scale = if *scheduler == Scheduler::Ovf {
                16_000
            } else {
                1
            };
            for (i, real) in reals[next_real..next_real + count].iter().enumerate() {
                let weight = (1 + i % 4) * scale;
                config += &format!(" real_server {real} 80 {{\n  weight {weight}\n }}\n");
            }
            config += "}\n";
            next_real += count;
            services.push((*scheduler, count, vip));
        }
    }
    balancer.apply_config(&config)?;

    let pass = Baseline::load(program_names::PASS, xdp_action::XDP_PASS)?;
    let macswap = Baseline::load(program_names::BENCH_MACSWAP, xdp_action::XDP_TX)?;
    let syn = Frame::tcp(v4([198, 18, 0, 1], [192, 0, 2, 1]), 1024, 80).bytes();
    let floor = median(&single_runs(args.new_flows, &syn, |frame| {
        pass.run(frame, 1)
    })?);
    let pass_repeated = pass.run(&syn, args.repeat)?.as_nanos() as f64;
    let swap_single = median(&single_runs(args.new_flows, &syn, |frame| {
        macswap.run(frame, 1)
    })?);
    let swap_repeated = macswap.run(&syn, args.repeat)?.as_nanos() as f64;
    let modes = mode_rows(args.repeat, args.runs, swap_repeated)?;
    // Live frames need a capability some machines' root lacks (EPERM): the rows are then
    // reported as unavailable, with the reason, and the rest is measured.
    let (swap_live, live, live_unavailable) = match live_rows(args.repeat, args.runs) {
        Ok((swap, rows)) => (Some(swap), rows, None),
        Err(e) => (None, Vec::new(), Some(format!("{e:#}"))),
    };
    let (socket, socket_unavailable) = match socket_rows(args.socket_packets, args.runs) {
        Ok(report) => (Some(report), None),
        Err(e) => (None, Some(format!("{e:#}"))),
    };

    let mut rows = Vec::new();
    for (n, (scheduler, count, vip)) in services.iter().enumerate() {
        let mut frame = Frame::tcp(v4([198, 18, 0, 1], *vip), 1024, 80).bytes();
        let mut client = 0x0a00_0000u32 + (n as u32) * 0x0010_0000;
        let durations = single_runs(args.new_flows, &frame.clone(), |input| {
            client += 1;
            let mut input = input.to_vec();
            input[IPV4_SRC..IPV4_SRC + 4].copy_from_slice(&client.to_be_bytes());
            input[TCP_SPORT..TCP_SPORT + 2]
                .copy_from_slice(&(1024 + (client % 60000) as u16).to_be_bytes());
            let run = balancer.run(&input)?;
            anyhow::ensure!(
                run.action == xdp_action::XDP_TX,
                "{} new flow not forwarded",
                scheduler.name()
            );
            Ok(run.duration)
        })?;
        // One established flow, repeated.
        frame[IPV4_SRC..IPV4_SRC + 4].copy_from_slice(&[198, 18, 255, n as u8]);
        balancer.run(&frame)?;
        let ack = Frame::tcp(v4([198, 18, 255, n as u8], *vip), 1024, 80)
            .with_tcp_flags(TCP_ACK)
            .bytes();
        let established = balancer.run_repeat(&ack, args.repeat)?;
        anyhow::ensure!(
            established.action == xdp_action::XDP_TX,
            "established flow not forwarded"
        );
        let new_flow_ns = median(&durations);
        rows.push(SchedulerRow {
            scheduler: scheduler.name(),
            reals: *count,
            new_flow_ns,
            new_flow_net_ns: new_flow_ns.saturating_sub(floor),
            established_ns: established.duration.as_nanos() as f64,
        });
    }

    println!("XDP_PASS floor: {floor} ns per single run, {pass_repeated:.1} ns repeated");
    println!("MAC-swap baseline: {swap_single} ns per single run, {swap_repeated:.1} ns repeated");
    println!();
    println!(
        "Forwarding modes: ns per packet, median of {} runs of {} packets (every packet a new flow, or one established flow)",
        args.runs, args.repeat
    );
    println!(
        "{:<5} {:<5} {:>14} {:>8} {:>17} {:>8}",
        "mode", "ip", "new flow (ns)", "x swap", "established (ns)", "x swap"
    );
    for row in &modes {
        println!(
            "{:<5} {:<5} {:>14.1} {:>8.2} {:>17.1} {:>8.2}",
            row.mode,
            row.family,
            row.new_flow_ns,
            row.new_flow_ratio,
            row.established_ns,
            row.established_ratio
        );
    }
    println!();
    println!(
        "Live frames through a director in a namespace, established flows: median of {} runs of {} packets; time per packet of generator + director + sink on one CPU",
        args.runs, args.repeat
    );
    if let Some(reason) = &live_unavailable {
        println!("unavailable on this machine: {reason}");
    }
    if let Some(swap_live) = swap_live {
        println!(
            "MAC-swap program as the director: {swap_live:.1} ns per packet, {:.2} Mpps",
            1e3 / swap_live
        );
        println!(
            "{:<5} {:<5} {:>17} {:>8} {:>12}",
            "mode", "ip", "established (ns)", "x swap", "Mpps (1 CPU)"
        );
    }
    for row in &live {
        println!(
            "{:<5} {:<5} {:>17.1} {:>8.2} {:>12.2}",
            row.mode,
            row.family,
            row.established_ns,
            row.ratio,
            row.pps / 1e6
        );
    }
    println!();
    println!(
        "Packet socket through the same director, established flows: median of {} runs of {} frames sent with sendmmsg (AF_PACKET) into the veth; generator + director + sink on one CPU",
        args.runs, args.socket_packets
    );
    if let Some(reason) = &socket_unavailable {
        println!("unavailable on this machine: {reason}");
    }
    if let Some(socket) = &socket {
        println!(
            "generator's ceiling (director drops): {:.2} Mpps; MAC-swap program as the director: {:.2} Mpps, {:.0} ns per frame above the ceiling",
            socket.generator_pps / 1e6,
            socket.macswap_pps / 1e6,
            socket.macswap_ns_over_generator
        );
        println!(
            "{:<5} {:<5} {:>8} {:>10} {:>22}",
            "mode", "ip", "Mpps", "/ swap", "ns above the ceiling"
        );
        for row in &socket.rows {
            println!(
                "{:<5} {:<5} {:>8.2} {:>10.2} {:>22.0}",
                row.mode,
                row.family,
                row.pps / 1e6,
                row.ratio_to_swap,
                row.ns_over_generator
            );
        }
    }
    println!();
    println!(
        "{:<6} {:>6} {:>14} {:>18} {:>16}",
        "sched", "reals", "new flow (ns)", "new flow - floor", "established (ns)"
    );
    for row in &rows {
        println!(
            "{:<6} {:>6} {:>14} {:>18} {:>16.0}",
            row.scheduler, row.reals, row.new_flow_ns, row.new_flow_net_ns, row.established_ns
        );
    }
    let checks = checks_row(&args)?;
    let failover = failover_rows()?;
    let sync = sync_row()?;
    let control_plane = control_plane_rows_over(Duration::from_secs(args.control_plane_seconds))?;
    let report = Report {
        xdp_pass_single_run_ns: floor,
        xdp_pass_repeated_ns: pass_repeated,
        macswap_single_run_ns: swap_single,
        macswap_repeated_ns: swap_repeated,
        modes,
        macswap_live_ns: swap_live,
        live,
        live_unavailable,
        socket,
        socket_unavailable,
        schedulers: rows,
        checks,
        failover,
        sync,
        control_plane,
        katran,
    };
    if let Some(dir) = args.report.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    }
    std::fs::write(&args.report, serde_json::to_string_pretty(&report)?)
        .with_context(|| format!("write {}", args.report.display()))?;
    println!("\nreport: {}", args.report.display());
    Ok(())
}

/// `n` real addresses (10.10.x.y) and their next hops on the ingress interface.
fn reals(n: usize) -> (Vec<IpAddr>, StaticNextHops) {
    let mut table = HashMap::new();
    let addrs: Vec<IpAddr> = (0..n)
        .map(|i| {
            let addr = [10, 10, (i >> 8) as u8, i as u8];
            table.insert(
                IpAddr::from(addr),
                next_hop([0x02, 0xaa, 0, 0, addr[2], addr[3]], None),
            );
            IpAddr::from(addr)
        })
        .collect();
    (addrs, StaticNextHops(table))
}

/// `n` single runs of `run` on `frame`; the kernel's duration of each.
fn single_runs(
    n: usize,
    frame: &[u8],
    mut run: impl FnMut(&[u8]) -> anyhow::Result<Duration>,
) -> anyhow::Result<Vec<u64>> {
    (0..n)
        .map(|_| run(frame).map(|d| d.as_nanos() as u64))
        .collect()
}

fn median(values: &[u64]) -> u64 {
    let mut sorted = values.to_vec();
    sorted.sort_unstable();
    sorted.get(sorted.len() / 2).copied().unwrap_or(0)
}

/// A baseline program of the same object, timed like the balancer.
struct Baseline {
    ebpf: aya::Ebpf,
    name: &'static str,
    action: u32,
}

impl Baseline {
    fn load(name: &'static str, action: u32) -> anyhow::Result<Self> {
        let ebpf = lb_tests::socket_bench::load_alone(name)?;
        Ok(Self { ebpf, name, action })
    }

    fn program(&self) -> anyhow::Result<&Xdp> {
        Ok(self
            .ebpf
            .program(self.name)
            .with_context(|| format!("{} missing", self.name))?
            .try_into()?)
    }

    fn program_mut(&mut self) -> anyhow::Result<&mut Xdp> {
        Ok(self
            .ebpf
            .program_mut(self.name)
            .with_context(|| format!("{} missing", self.name))?
            .try_into()?)
    }

    fn run(&self, frame: &[u8], repeat: u32) -> anyhow::Result<Duration> {
        let run = run_program(self.program()?, frame, repeat)?;
        anyhow::ensure!(
            run.action == self.action,
            "{} returned {}",
            self.name,
            run.action
        );
        Ok(run.duration)
    }
}

/// Forwarding modes benchmarked, each with the third byte of its VIP.
const MODES: [(&str, u8); 4] = [("DR", 1), ("TUN", 2), ("NAT", 3), ("FNAT", 4)];

/// The balancer for the mode benchmarks: per mode a service over IPv4 and one over IPv6,
/// two reals each, reached through `ifindex`.
fn mode_balancer(ifindex: u32) -> anyhow::Result<TestBalancer> {
    let hop = |last: u8, src: IpAddr| NextHop {
        ifindex,
        ..next_hop([0x02, 0xaa, 0, 0, 1, last], Some(src))
    };
    let src4: IpAddr = "10.20.0.254".parse()?;
    let src6: IpAddr = "2001:db8:20::fe".parse()?;
    let next_hops = StaticNextHops(
        [
            ("10.20.0.1", hop(1, src4)),
            ("10.20.0.2", hop(2, src4)),
            ("2001:db8:20::1", hop(0x61, src6)),
            ("2001:db8:20::2", hop(0x62, src6)),
        ]
        .into_iter()
        .map(|(a, h)| (a.parse().expect("literal"), h))
        .collect(),
    );
    let mut balancer = TestBalancer::load(next_hops, 1 << 20)?;
    // FullNAT: enough local pairs on the benchmark's CPU (its share of the ports of 254
    // addresses per family, per real) for every new flow of the runs, which all stay
    // in the flow table or age less than the reservation grace.
    let mut config =
        "local_address_group pool {\n 10.20.1.1-254\n 2001:db8:20::1000-10ff\n}\n".to_owned();
    for (kind, n) in MODES {
        let pool = if kind == "FNAT" {
            " laddr_group_name pool\n"
        } else {
            ""
        };
        config += &format!(
            "virtual_server 198.18.{n}.1 80 {{\n lb_algo rr\n lb_kind {kind}\n protocol TCP\n{pool} real_server 10.20.0.1 80 {{}}\n real_server 10.20.0.2 80 {{}}\n}}\n"
        );
        config += &format!(
            "virtual_server 2001:db8:18::{n} 80 {{\n lb_algo rr\n lb_kind {kind}\n protocol TCP\n{pool} real_server 2001:db8:20::1 80 {{}}\n real_server 2001:db8:20::2 80 {{}}\n}}\n"
        );
    }
    balancer.apply_config(&config)?;
    Ok(balancer)
}

/// The first packet (SYN) of the benchmark flow of `kind` over `ipv6`.
fn mode_frame(n: u8, ipv6: bool) -> Frame {
    if ipv6 {
        Frame::tcp(v6("2001:db8:c::1", &format!("2001:db8:18::{n}")), 1024, 80)
    } else {
        Frame::tcp(v4([203, 0, 113, 1], [198, 18, n, 1]), 1024, 80)
    }
}

/// Every mode for IPv4 and IPv6: new and established flows, medians of `runs` test runs
/// of `repeat` packets (see the module doc).
fn mode_rows(repeat: u32, runs: usize, swap: f64) -> anyhow::Result<Vec<ModeRow>> {
    let mut balancer = mode_balancer(INGRESS)?;
    for name in [
        program_names::BENCH_BALANCER,
        program_names::BENCH_GENERATOR,
    ] {
        load_program(balancer.dataplane.ebpf_mut(), name)?;
    }
    let mut rows = Vec::new();
    for (kind, n) in MODES {
        for ipv6 in [false, true] {
            let syn = mode_frame(n, ipv6);
            // New flows: a new client address and port in every run.
            let vary = if ipv6 {
                (14 + 8 + 12, 14 + 40)
            } else {
                (IPV4_SRC as u16, TCP_SPORT as u16)
            };
            set_bench_frame(balancer.dataplane.ebpf_mut(), &syn.bytes(), Some(vary))?;
            let new_flow = harness_runs(&balancer, kind, &syn.bytes(), repeat, runs)?;
            // One established flow: its SYN, then the same ACK in every run.
            balancer.run(&syn.bytes())?;
            let ack = syn.with_tcp_flags(TCP_ACK).bytes();
            set_bench_frame(balancer.dataplane.ebpf_mut(), &ack, None)?;
            let established = harness_runs(&balancer, kind, &ack, repeat, runs)?;
            // The balancer's time as the MAC-swap program's harness measures it: the time
            // of putting the frame back (the generator's over the MAC-swap's) taken off.
            let (new_flow_ns, established_ns) = (
                new_flow.0 - new_flow.1 + swap,
                established.0 - established.1 + swap,
            );
            rows.push(ModeRow {
                mode: kind,
                family: if ipv6 { "IPv6" } else { "IPv4" },
                new_flow_ns,
                established_ns,
                new_flow_ratio: new_flow_ns / swap,
                established_ratio: established_ns / swap,
            });
        }
    }
    Ok(rows)
}

/// `runs` test runs of `repeat` repetitions each of the bench harness (the frame of
/// `LB_BENCH_FRAME`, also the input, put back, then balanced), and of the generator (only
/// put back): the median time per packet of each.
fn harness_runs(
    balancer: &TestBalancer,
    kind: &str,
    frame: &[u8],
    repeat: u32,
    runs: usize,
) -> anyhow::Result<(f64, f64)> {
    let ebpf = balancer.dataplane.ebpf();
    let harness = program(ebpf, program_names::BENCH_BALANCER)?;
    let generator = program(ebpf, program_names::BENCH_GENERATOR)?;
    let before = forwarded(balancer)?;
    let mut balanced = Vec::new();
    let mut restored = Vec::new();
    for _ in 0..runs {
        let ns = |p: &Xdp| -> anyhow::Result<f64> {
            Ok(run_program(p, frame, repeat)?.duration.as_nanos() as f64)
        };
        balanced.push(ns(harness)?);
        restored.push(ns(generator)?);
    }
    // FullNAT may refuse a few new flows when its tries miss the free ports (counted
    // as fnat_no_port); anything more is a broken set-up.
    let sent = forwarded(balancer)? - before;
    let expected = u64::from(repeat) * runs as u64;
    anyhow::ensure!(
        sent * 1000 >= expected * 999,
        "{kind}: {sent} of {expected} packets forwarded"
    );
    Ok((median_f64(balanced), median_f64(restored)))
}

/// Program `name` of a loaded object.
fn program<'a>(ebpf: &'a aya::Ebpf, name: &str) -> anyhow::Result<&'a Xdp> {
    Ok(ebpf
        .program(name)
        .with_context(|| format!("{name} missing"))?
        .try_into()?)
}

/// Set the frame the bench programs put back: `frame`, with a new client (4 bytes at the
/// first offset, a port at the second) in every run if `vary` is given.
fn set_bench_frame(
    ebpf: &mut aya::Ebpf,
    frame: &[u8],
    vary: Option<(u16, u16)>,
) -> anyhow::Result<()> {
    let mut bytes = [0; BENCH_FRAME_LEN];
    let n = frame.len().min(BENCH_FRAME_LEN);
    bytes[..n].copy_from_slice(&frame[..n]);
    let (client_at, sport_at) = vary.unwrap_or((0, 0));
    let value = BenchFrame {
        len: frame.len() as u16,
        client_at,
        sport_at,
        _pad: 0,
        bytes,
    };
    let mut map: Array<&mut MapData, BenchFrame> = Array::try_from(
        ebpf.map_mut(map_names::BENCH_FRAME)
            .context("LB_BENCH_FRAME missing")?,
    )?;
    map.set(0, value, 0)?;
    Ok(())
}

/// Frames the balancer sent (XDP_TX or redirect) so far.
fn forwarded(balancer: &TestBalancer) -> anyhow::Result<u64> {
    let counters = balancer.dataplane.counters()?;
    Ok(counters.outcome(Outcome::ForwardedTx) + counters.outcome(Outcome::ForwardedRedirect))
}

#[derive(Serialize)]
struct LiveRow {
    mode: &'static str,
    family: &'static str,
    /// Median over the runs of the wall time per forwarded packet of an established flow,
    /// through generator, director and sink on one CPU.
    established_ns: f64,
    /// Packets per second the director forwarded (median run).
    pps: f64,
    /// `established_ns` divided by the same with the MAC-swap program as the director.
    ratio: f64,
}

/// Packets per second through a director in a network namespace, driven by live frames
/// (BPF_F_TEST_XDP_LIVE_FRAMES): a generator program sends `repeat` copies of a frame out
/// of one end of a veth (XDP_TX, rewritten from a template each time), the balancer
/// attached in native mode to the other end forwards them (its established-flow path:
/// the flow's first packet went before), and they come back into a program that drops
/// them. All of it runs on the generator's CPU (the veth's NAPI runs there between
/// batches), so the wall time per packet is generator + director + sink; the MAC-swap
/// program as the director, measured the same way, is the baseline. Returns the
/// baseline's time per packet and the rows.
fn live_rows(repeat: u32, runs: usize) -> anyhow::Result<(f64, Vec<LiveRow>)> {
    let ns = lb_tests::socket_bench::veth_netns(LIVE_NETNS)?;
    ns.run(move || {
        pin_to_cpu0()?;
        let gen_index = interface_index("gen")?;
        let mut generator = Baseline::load(program_names::BENCH_GENERATOR, xdp_action::XDP_TX)?;
        let mut sink = Baseline::load(program_names::BENCH_DROP, xdp_action::XDP_DROP)?;
        sink.program_mut()?.attach("gen", XdpMode::Driver)?;
        // Wall time per forwarded packet: frames that came back into the sink.
        let mut generate = |frame: &[u8], repeat: u32| -> anyhow::Result<f64> {
            set_bench_frame(&mut generator.ebpf, frame, None)?;
            let before = sink_drops()?;
            let started = Instant::now();
            live_run(generator.program()?, frame, gen_index, repeat)?;
            let elapsed = started.elapsed().as_nanos() as f64;
            let forwarded = sink_drops()? - before;
            anyhow::ensure!(
                forwarded * 10 >= u64::from(repeat) * 9,
                "the director forwarded {forwarded} of {repeat} live frames"
            );
            Ok(elapsed / forwarded as f64)
        };

        let frame = mode_frame(1, false).with_tcp_flags(TCP_ACK).bytes();
        let mut swap_director = Baseline::load(program_names::BENCH_MACSWAP, xdp_action::XDP_TX)?;
        let link = swap_director
            .program_mut()?
            .attach("dir", XdpMode::Driver)?;
        let swap = median_f64(
            (0..runs)
                .map(|_| generate(&frame, repeat))
                .collect::<anyhow::Result<_>>()?,
        );
        swap_director.program_mut()?.detach(link)?;

        let mut balancer = mode_balancer(interface_index("dir")?)?;
        balancer.dataplane.attach("dir", AttachMode::Native)?;
        let mut rows = Vec::new();
        for (kind, n) in MODES {
            for ipv6 in [false, true] {
                let syn = mode_frame(n, ipv6);
                generate(&syn.bytes(), 1)?;
                let ack = syn.with_tcp_flags(TCP_ACK).bytes();
                let times = (0..runs)
                    .map(|_| generate(&ack, repeat).context(kind))
                    .collect::<anyhow::Result<Vec<f64>>>()?;
                let established_ns = median_f64(times);
                rows.push(LiveRow {
                    mode: kind,
                    family: if ipv6 { "IPv6" } else { "IPv4" },
                    established_ns,
                    pps: 1e9 / established_ns,
                    ratio: established_ns / swap,
                });
            }
        }
        balancer.dataplane.detach_all()?;
        Ok((swap, rows))
    })
}

/// The live-frames benchmark's namespace.
const LIVE_NETNS: &str = "lbbench";
/// The packet-socket benchmark's namespace.
const SOCKET_NETNS: &str = "lbbench-sock";

/// Frames the sink dropped so far (the veth's XDP statistics of `gen`); call inside the
/// benchmark's namespace.
fn sink_drops() -> anyhow::Result<u64> {
    lb_tests::socket_bench::xdp_drops("gen")
}

/// The established flow of every mode and family through the balancer, with frames from a
/// packet socket (`lb_tests::socket_bench`).
fn socket_rows(packets: u32, runs: usize) -> anyhow::Result<lb_tests::socket_bench::SocketReport> {
    let flows = MODES
        .iter()
        .flat_map(|&(mode, n)| {
            [false, true].map(|ipv6| {
                let syn = mode_frame(n, ipv6);
                lb_tests::socket_bench::BenchFlow {
                    mode,
                    family: if ipv6 { "IPv6" } else { "IPv4" },
                    first: syn.bytes(),
                    established: syn.with_tcp_flags(TCP_ACK).bytes(),
                }
            })
        })
        .collect();
    lb_tests::socket_bench::measure(SOCKET_NETNS, packets, runs, mode_balancer, flows)
}

/// One live-frames run of `repeat` copies of `frame` arriving on `ifindex`.
fn live_run(program: &Xdp, frame: &[u8], ifindex: u32, repeat: u32) -> anyhow::Result<()> {
    let ctx: Vec<u8> = [0, frame.len() as u32, 0, ifindex, 0, 0]
        .iter()
        .flat_map(|v: &u32| v.to_ne_bytes())
        .collect();
    program.test_run(TestRunOptions {
        data_in: Some(frame),
        ctx_in: Some(&ctx),
        repeat,
        attrs: TestRunAttrs::new().xdp_live_frames(64),
        ..TestRunOptions::default()
    })?;
    Ok(())
}

fn interface_index(name: &str) -> anyhow::Result<u32> {
    lb_tests::socket_bench::interface_index(name)
}

fn median_f64(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(0.0)
}
