//! The per-packet table against Katran (`cargo xtask bench`): the same paths through
//! Katran's balancer and ours, timed the same way in one process (see `katran_bench`):
//! an established IPIP flow, a new flow, a packet for no VIP (with only the TUN service,
//! and with a NAT service configured too); our DR, NAT and FullNAT established; and the
//! established paths again with 1,000,000 flows in the table visited in random order
//! (cache-cold), next to Katran with as many in its LRU. Net of XDP_PASS, with the ratio.
//! The hot rows are measured in rounds, the programs taking turns, so that both see the
//! same moments of a noisy machine.

use std::{
    collections::HashMap,
    net::IpAddr,
    os::fd::{AsFd, AsRawFd},
    path::Path,
};

use anyhow::Context as _;
use lb_common::xdp_action::{XDP_PASS, XDP_TX};
use serde::Serialize;

use crate::{
    katran_bench::{Katran, NOT_VIP, ProgramSize, VIP, mean_ns, program_size},
    packet::{Frame, TCP_ACK, TCP_SYN, v4},
    testrun::{INGRESS, StaticNextHops, TestBalancer, next_hop},
};

/// Flows in the table for the cache-cold rows.
pub const COLD_FLOWS: usize = 1_000_000;

/// One path through both balancers: net ns per packet.
#[derive(Clone, Debug, Serialize)]
pub struct SideRow {
    pub path: String,
    pub katran_ns: Option<f64>,
    pub ours_ns: f64,
    /// ours ÷ Katran's (for our DR, NAT and FullNAT rows: ÷ Katran's established IPIP).
    pub ratio: Option<f64>,
}

#[derive(Clone, Debug, Serialize)]
pub struct SideBySide {
    /// XDP_PASS timed the same way (before and after), taken off every row.
    pub floor_ns: f64,
    pub calls: usize,
    pub rows: Vec<SideRow>,
    /// Why Katran's column is empty, if it is.
    pub katran_unavailable: Option<String>,
    /// Both programs' sizes.
    pub katran_program: Option<ProgramSize>,
    pub our_program: ProgramSize,
}

/// A client's TCP segment to `dst`: client `n` (distinct address and port per n). The
/// frame is made once per destination and flags, then only the client's address and port
/// (and the IPv4 header checksum) change, so that little happens between test runs.
fn client_frame(n: usize, dst: [u8; 4], flags: u8, out: &mut Vec<u8>) {
    const SRC: usize = 14 + 12;
    const SPORT: usize = 14 + 20;
    const CHECKSUM: usize = 14 + 10;
    if out.len() < SPORT + 2 || out[14 + 16..14 + 20] != dst || out[14 + 20 + 13] != flags {
        *out = Frame::tcp(v4([10, 100, 0, 1], dst), 1024, 80)
            .with_tcp_flags(flags)
            .bytes();
    }
    out[SRC..SRC + 4].copy_from_slice(&[10, 100, (n / 50_000) as u8, 1]);
    out[SPORT..SPORT + 2].copy_from_slice(&(1024 + (n % 50_000) as u16).to_be_bytes());
    out[CHECKSUM..CHECKSUM + 2].fill(0);
    let sum: u32 = out[14..14 + 20]
        .chunks(2)
        .map(|pair| u32::from(u16::from_be_bytes([pair[0], pair[1]])))
        .sum();
    let folded = (sum & 0xffff) + (sum >> 16);
    let checksum = !(((folded & 0xffff) + (folded >> 16)) as u16);
    out[CHECKSUM..CHECKSUM + 2].copy_from_slice(&checksum.to_be_bytes());
}

/// An `xdp_md` with the ingress interface our balancer expects.
fn context() -> Vec<u8> {
    [0u32, 0, 0, INGRESS, 0, 0]
        .iter()
        .flat_map(|v| v.to_ne_bytes())
        .collect()
}

/// A permutation of 0..n (xorshift, fixed seed): the cache-cold visiting order.
fn shuffled(n: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    for i in (1..n).rev() {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        order.swap(i, (state % (i as u64 + 1)) as usize);
    }
    order
}

/// The paths one program is timed on, net of `floor`.
struct Paths<'a> {
    program: std::os::fd::RawFd,
    /// The `xdp_md` to run with (ours reads the ingress interface).
    ctx: Option<&'a [u8]>,
    calls: usize,
    floor: f64,
}

impl Paths<'_> {
    /// One established flow (its SYN first), the same ACK every call.
    fn established(&self) -> anyhow::Result<f64> {
        let mut syn = Vec::new();
        client_frame(0, VIP, TCP_SYN, &mut syn);
        crate::katran_bench::test_run(self.program, &syn, self.ctx)?;
        let mean = mean_ns(self.program, self.calls, self.ctx, XDP_TX, |_, out| {
            client_frame(0, VIP, TCP_ACK, out)
        })?;
        Ok(mean - self.floor)
    }

    /// A new client every call (clients from `first` on).
    fn new_flows(&self, first: usize) -> anyhow::Result<f64> {
        let mean = mean_ns(self.program, self.calls, self.ctx, XDP_TX, |i, out| {
            client_frame(first + i, VIP, TCP_SYN, out)
        })?;
        Ok(mean - self.floor)
    }

    fn not_vip(&self) -> anyhow::Result<f64> {
        let mean = mean_ns(self.program, self.calls, self.ctx, XDP_PASS, |_, out| {
            client_frame(0, NOT_VIP, TCP_ACK, out)
        })?;
        Ok(mean - self.floor)
    }

    /// `COLD_FLOWS` flows opened (from client `first` on), then their ACKs in random
    /// order.
    fn cold(&self, first: usize) -> anyhow::Result<f64> {
        mean_ns(self.program, COLD_FLOWS, self.ctx, XDP_TX, |i, out| {
            client_frame(first + i, VIP, TCP_SYN, out)
        })?;
        let order = shuffled(COLD_FLOWS);
        let mean = mean_ns(self.program, self.calls, self.ctx, XDP_TX, |i, out| {
            client_frame(first + order[i % COLD_FLOWS], VIP, TCP_ACK, out)
        })?;
        Ok(mean - self.floor)
    }
}

/// Our balancer with `services` (keepalived.conf text naming `{VIP}`), 100 reals at
/// 10.0.0.1-100 reached with a source address (TUN's outer source), and FullNAT's pool.
fn ours(kind: &str) -> anyhow::Result<TestBalancer> {
    let src: IpAddr = "10.0.1.254".parse()?;
    let mut hops = HashMap::new();
    let mut reals = String::new();
    for n in 1..=100u8 {
        let addr = IpAddr::from([10, 0, 0, n]);
        hops.insert(addr, next_hop([0x02, 0xaa, 0, 0, 0, n], Some(src)));
        reals += &format!(" real_server {addr} 80 {{}}\n");
    }
    let mut balancer = TestBalancer::load(StaticNextHops(hops), 1 << 20)?;
    let vip = IpAddr::from(VIP);
    let pool = if kind == "FNAT" {
        " laddr_group_name pool\n"
    } else {
        ""
    };
    let mut config = format!(
        "local_address_group pool {{\n 10.0.2.1-254\n}}\nvirtual_server {vip} 80 {{\n lb_algo mh\n lb_kind {kind}\n protocol TCP\n{pool}{reals}}}\n"
    );
    if kind == "TUN+NAT" {
        config = config.replace("lb_kind TUN+NAT", "lb_kind TUN")
            + "virtual_server 10.200.2.1 80 {\n lb_algo rr\n lb_kind NAT\n protocol TCP\n real_server 10.0.0.1 8080 {}\n}\n";
    }
    balancer
        .apply_config(&config)
        .with_context(|| format!("configuring {kind}"))?;
    // FullNAT's port draws: this CPU's share of the pool (the bench runs on CPU 0).
    balancer.set_port_shares(1)?;
    Ok(balancer)
}

fn program_fd(balancer: &TestBalancer) -> anyhow::Result<std::os::fd::RawFd> {
    Ok(balancer.dataplane.balancer()?.fd()?.as_fd().as_raw_fd())
}

/// Rounds the hot rows are measured in, the two programs taking turns, so that both
/// see the same moments of a noisy machine.
const ROUNDS: usize = 10;

/// Sums of the hot rows over the rounds (gross ns, before the floor is taken off).
#[derive(Default)]
struct Hot {
    established: f64,
    new_flow: f64,
    not_vip: f64,
}

impl Hot {
    /// One round of `paths`; new flows from client `first` on.
    fn add(&mut self, paths: &Paths, first: usize, not_vip: bool) -> anyhow::Result<()> {
        self.established += paths.established()?;
        self.new_flow += paths.new_flows(first)?;
        if not_vip {
            self.not_vip += paths.not_vip()?;
        }
        Ok(())
    }
}

/// One path alone for `calls` test runs, for a profiler to sample (`perf record -e
/// cpu-clock -C 0 -g`): Katran's IPIP (`kind` "katran", from the object at `katran`) or
/// ours with `lb_kind` `kind` (TUN, DR, NAT, FNAT); established, or with `kind` prefixed
/// "new:" a new flow every call. The mean gross ns.
pub fn profile_path(katran: Option<&Path>, kind: &str, calls: usize) -> anyhow::Result<f64> {
    crate::testrun::pin_to_cpu0()?;
    let ctx = context();
    let paths = |program| Paths {
        program,
        ctx: Some(&ctx),
        calls,
        floor: 0.0,
    };
    let (new_flows, kind) = match kind.strip_prefix("new:") {
        Some(kind) => (true, kind),
        None => (false, kind),
    };
    let run = |paths: Paths| {
        if new_flows {
            paths.new_flows(0)
        } else {
            paths.established()
        }
    };
    if kind == "katran" {
        let path = katran.context("no Katran object given (--katran PATH or LB_KATRAN_OBJECT)")?;
        let katran = Katran::load(path)?;
        return run(paths(katran.program()));
    }
    let balancer = ours(kind)?;
    run(paths(program_fd(&balancer)?))
}

/// Every row, `calls` test runs each; Katran's from the object at `katran` if it loads.
pub fn measure(katran: Option<&Path>, calls: usize) -> anyhow::Result<SideBySide> {
    crate::testrun::pin_to_cpu0()?;
    let ctx = context();
    let loaded = match katran {
        Some(path) if path.exists() => Katran::load(path).map_err(|e| format!("{e:#}")),
        Some(path) => Err(format!("no Katran object at {}", path.display())),
        None => Err("no Katran object given (--katran PATH or LB_KATRAN_OBJECT)".into()),
    };
    let katran_unavailable = loaded.as_ref().err().cloned();
    if let Some(reason) = &katran_unavailable {
        eprintln!("Katran unavailable: {reason}");
    }
    let katran_program = match &loaded {
        Ok(katran) => Some(program_size(katran.program())?),
        Err(_) => None,
    };
    let pass = crate::katran_bench::xdp_pass_program()?;
    let chunk = (calls / ROUNDS).max(1);
    let paths = |program| Paths {
        program,
        ctx: Some(&ctx),
        calls: chunk,
        floor: 0.0,
    };
    // Hot rows: every program loaded at once, taking turns round by round.
    let kinds = ["TUN", "TUN+NAT", "DR", "NAT", "FNAT"];
    let balancers = kinds
        .iter()
        .map(|kind| ours(kind))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let our_program = program_size(program_fd(&balancers[0])?)?;
    let mut floor = 0.0;
    let mut katran_hot = Hot::default();
    let mut our_hot: Vec<Hot> = kinds.iter().map(|_| Hot::default()).collect();
    for round in 0..ROUNDS {
        let first = 1 + round * chunk;
        floor += mean_ns(pass.as_raw_fd(), chunk, Some(&ctx), XDP_PASS, |_, out| {
            client_frame(0, VIP, TCP_ACK, out)
        })?;
        if let Ok(katran) = &loaded {
            katran_hot
                .add(&paths(katran.program()), first, true)
                .context("Katran")?;
        }
        for ((kind, balancer), hot) in kinds.iter().zip(&balancers).zip(&mut our_hot) {
            let not_vip = kind.starts_with("TUN");
            hot.add(&paths(program_fd(balancer)?), first, not_vip)
                .with_context(|| format!("ours, {kind}"))?;
        }
    }
    drop(balancers);
    drop(loaded);
    let floor = floor / ROUNDS as f64;
    let net = |sum: f64| sum / ROUNDS as f64 - floor;
    let katran_of =
        |pick: fn(&Hot) -> f64| katran_unavailable.is_none().then(|| net(pick(&katran_hot)));
    // Cache-cold rows, one program at a time, each afresh (its table holds the
    // COLD_FLOWS flows only).
    let cold_paths = |program| Paths {
        program,
        ctx: Some(&ctx),
        calls,
        floor,
    };
    let katran_cold = match (katran, &katran_unavailable) {
        (Some(path), None) => {
            let fresh = Katran::load(path)?;
            Some(
                cold_paths(fresh.program())
                    .cold(0)
                    .context("Katran, cold")?,
            )
        }
        _ => None,
    };
    let mut our_cold = Vec::new();
    for kind in ["TUN", "DR", "NAT", "FNAT"] {
        let balancer = ours(kind)?;
        let cold = cold_paths(program_fd(&balancer)?)
            .cold(0)
            .with_context(|| format!("ours, {kind}, cold"))?;
        our_cold.push(cold);
    }
    let mut rows = Vec::new();
    let mut row = |path: &str, katran: Option<f64>, ours: f64| {
        rows.push(SideRow {
            path: path.to_owned(),
            katran_ns: katran,
            ours_ns: ours,
            ratio: katran.filter(|k| *k > 0.0).map(|k| ours / k),
        });
    };
    let established = katran_of(|h| h.established);
    row(
        "established IPv4 TCP, IPIP (TUN), one hot flow",
        established,
        net(our_hot[0].established),
    );
    row(
        "new flow (table miss, schedule, insert), IPIP",
        katran_of(|h| h.new_flow),
        net(our_hot[0].new_flow),
    );
    row(
        "not a VIP (passed to the kernel), TUN service only",
        katran_of(|h| h.not_vip),
        net(our_hot[0].not_vip),
    );
    row(
        "not a VIP, with a NAT service configured too",
        katran_of(|h| h.not_vip),
        net(our_hot[1].not_vip),
    );
    for (i, kind) in ["DR", "NAT", "FNAT"].iter().enumerate() {
        row(
            &format!("established {kind}, one hot flow (÷ Katran's IPIP)"),
            established,
            net(our_hot[2 + i].established),
        );
    }
    row(
        "established IPIP, 1,000,000 flows visited at random (cold)",
        katran_cold,
        our_cold[0],
    );
    for (i, kind) in ["DR", "NAT", "FNAT"].iter().enumerate() {
        row(
            &format!("established {kind}, 1,000,000 flows at random (÷ Katran's cold IPIP)"),
            katran_cold,
            our_cold[1 + i],
        );
    }
    Ok(SideBySide {
        floor_ns: floor,
        calls,
        rows,
        katran_unavailable,
        katran_program,
        our_program,
    })
}

/// The table as the bench prints it.
pub fn print(report: &SideBySide) {
    println!(
        "Per packet against Katran: mean kernel ns of {} BPF_PROG_TEST_RUN calls (repeat=1, CPU 0), minus XDP_PASS timed the same way ({:.1} ns)",
        report.calls, report.floor_ns
    );
    if let Some(reason) = &report.katran_unavailable {
        println!("Katran: unavailable ({reason}); our rows only");
    }
    let size = |s: &ProgramSize| {
        format!(
            "{} instructions ({} bytes JITed), {} verified",
            s.xlated_insns, s.jited_bytes, s.verified_insns
        )
    };
    if let Some(katran) = &report.katran_program {
        println!("Katran's program: {}", size(katran));
    }
    println!("our program:      {}", size(&report.our_program));
    println!(
        "{:<70} {:>9} {:>9} {:>10}",
        "path (net ns per packet)", "Katran", "lb", "lb/Katran"
    );
    for row in &report.rows {
        let katran = row.katran_ns.map_or("-".to_owned(), |k| format!("{k:.1}"));
        let ratio = row.ratio.map_or("-".to_owned(), |r| format!("{r:.2}"));
        println!(
            "{:<70} {:>9} {:>9.1} {:>10}",
            row.path, katran, row.ours_ns, ratio
        );
    }
}
