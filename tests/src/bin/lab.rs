//! The demo lab (`cargo xtask lab`): builds the topology in network namespaces, starts lbd
//! on the director with a generated keepalived.conf (an HTTP service and a UDP echo
//! service on the VIP), sends HTTP and UDP echo requests from the client to the VIP, and
//! prints what each real answered and what the director counted. Exits non-zero if a
//! request failed or a real got nothing.

use std::{collections::BTreeMap, process::ExitCode};

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand, ValueEnum};
use lb_common::xdp_action;
use lb_tests::{
    echo, http,
    lbd::Lbd,
    topology::{self, RealSetup, Topology, VIP},
};
use lb_userspace::{
    dataplane::{Counters, xdp::read_pinned_counters},
    model::Scheduler,
};

/// Namespace prefix and lbd instance name of the lab.
const PREFIX: &str = "lblab";

#[derive(Parser)]
#[command(
    name = "lab",
    about = "Demo lab: client, director (lbd) and real servers in network namespaces"
)]
struct Args {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(clap::Args)]
struct RunArgs {
    /// Forwarding mode.
    #[arg(long, value_enum, default_value = "dr")]
    mode: Mode,
    /// Scheduler (keepalived lb_algo). The weighted ones (wrr, wlc, sed, mh) give the
    /// reals weights 1, 2, 3; sh and mh hash the client port too (sh-port, mh-port), as
    /// all requests come from one client address.
    #[arg(long, default_value = "rr", value_parser = parse_sched)]
    sched: Scheduler,
    /// HTTP requests to send.
    #[arg(long, default_value_t = 300)]
    requests: usize,
    /// Use IPv6 for the VIP, the reals and the client (every host is dual stack).
    #[arg(long)]
    ipv6: bool,
    /// Leave the lab running and print how to explore it.
    #[arg(long)]
    keep: bool,
}

#[derive(Subcommand)]
enum Command {
    /// Tear down a lab left running with --keep.
    Down,
    /// (internal) HTTP server answering with its name; with --echo-port, a UDP echo
    /// service answering with its name on each --echo-addr too.
    #[command(hide = true)]
    Serve {
        #[arg(long)]
        name: String,
        #[arg(long)]
        port: u16,
        #[arg(long)]
        echo_port: Option<u16>,
        #[arg(long)]
        echo_addr: Vec<std::net::IpAddr>,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum Mode {
    /// Direct routing.
    Dr,
    /// IPIP tunnel; the reals run `lbd --decap eth0`.
    Tun,
    /// NAT: the reals sit in their own subnet behind the director.
    Nat,
    /// FullNAT: the reals sit in their own subnet with no route out of it.
    Fnat,
}

impl Mode {
    fn kind(self) -> &'static str {
        match self {
            Mode::Dr => "DR",
            Mode::Tun => "TUN",
            Mode::Nat => "NAT",
            Mode::Fnat => "FNAT",
        }
    }
}

/// How the requests of one service spread over the three reals.
#[derive(Clone, Copy)]
enum Spread {
    /// Every real answers some requests.
    Every,
    /// One real answers everything, the one named (any, with `None`), for the reason given.
    One(Option<&'static str>, &'static str),
}

/// The lab's set-up for a scheduler and what it expects of it.
struct SchedSetup {
    /// The reals' weights.
    weights: [u32; 3],
    keywords: &'static [&'static str],
    /// Open every HTTP connection before closing any (each answers one request and stays
    /// open), so that the schedulers that count active connections see them. Otherwise
    /// one request at a time: no real ever has an active connection when a new one comes.
    held_open: bool,
    tcp: Spread,
    /// UDP flows are never active connections (IPVS counts them inactive), so the
    /// schedulers that look at active ones treat every real as idle.
    udp: Spread,
}

impl SchedSetup {
    const fn one_at_a_time(weights: [u32; 3], keywords: &'static [&'static str]) -> Self {
        Self {
            weights,
            keywords,
            held_open: false,
            tcp: Spread::Every,
            udp: Spread::Every,
        }
    }

    const fn both(weights: [u32; 3], spread: Spread) -> Self {
        Self {
            weights,
            keywords: &[],
            held_open: false,
            tcp: spread,
            udp: spread,
        }
    }

    /// Connections held open: TCP spreads over every real, UDP goes to one.
    const fn held_open(weights: [u32; 3], udp_real: &'static str, why: &'static str) -> Self {
        Self {
            weights,
            keywords: &[],
            held_open: true,
            tcp: Spread::Every,
            udp: Spread::One(Some(udp_real), why),
        }
    }
}

fn sched_setup(scheduler: Scheduler) -> SchedSetup {
    match scheduler {
        Scheduler::Rr | Scheduler::Lc => SchedSetup::one_at_a_time([1, 1, 1], &[]),
        Scheduler::Wrr | Scheduler::Wlc | Scheduler::Twos => {
            SchedSetup::one_at_a_time([1, 2, 3], &[])
        }
        Scheduler::Sh => SchedSetup::one_at_a_time([1, 1, 1], &["sh-port"]),
        Scheduler::Mh => SchedSetup::one_at_a_time([1, 2, 3], &["mh-port"]),
        // dh hashes the destination, and the lab has one VIP.
        Scheduler::Dh => SchedSetup::both([1, 1, 1], Spread::One(None, "dh hashes the one VIP")),
        Scheduler::Fo => SchedSetup::both(
            [1, 3, 2],
            Spread::One(Some("r2"), "fo sends every new flow to the highest weight"),
        ),
        // One request at a time: the highest weight never has more active connections
        // than its weight.
        Scheduler::Ovf => SchedSetup::both(
            [1, 3, 2],
            Spread::One(
                Some("r2"),
                "ovf keeps the highest weight while it is not over its weight",
            ),
        ),
        Scheduler::Sed => SchedSetup::held_open(
            [1, 2, 3],
            "r3",
            "no UDP flow is active: sed's (0 + 1) / weight is least for the highest weight",
        ),
        Scheduler::Nq => SchedSetup::held_open(
            [1, 1, 1],
            "r1",
            "no UDP flow is active: nq takes the first idle real",
        ),
        Scheduler::Lblc => SchedSetup::held_open(
            [1, 1, 1],
            "r1",
            "the one VIP stays on its real, which no UDP flow makes overloaded",
        ),
        Scheduler::Lblcr => SchedSetup::held_open(
            [1, 1, 1],
            "r1",
            "the one VIP's set stays at its first real, which no UDP flow makes overloaded",
        ),
    }
}

/// What a service's answers show, checked against `spread`: "all 3 reals" or "r2 only
/// (why)".
fn check_spread(
    protocol: &str,
    spread: Spread,
    served: &BTreeMap<String, usize>,
    reals: &[String],
) -> anyhow::Result<String> {
    match spread {
        Spread::Every => {
            let idle: Vec<&str> = reals
                .iter()
                .filter(|r| !served.contains_key(*r))
                .map(String::as_str)
                .collect();
            if !idle.is_empty() {
                bail!("{protocol}: real(s) {} answered nothing", idle.join(", "));
            }
            Ok(format!("all {} reals", reals.len()))
        }
        Spread::One(which, why) => {
            let only = served.len() == 1 && which.is_none_or(|name| served.contains_key(name));
            if !only {
                bail!(
                    "{protocol}: every request should go to {} ({why}): {served:?}",
                    which.unwrap_or("one real")
                );
            }
            let name = served.keys().next().map_or("", String::as_str);
            Ok(format!("{name} only ({why})"))
        }
    }
}

/// `--sched`: one of the schedulers lbd supports, by keepalived's name.
fn parse_sched(name: &str) -> Result<Scheduler, String> {
    Scheduler::from_name(name).ok_or_else(|| format!("one of {}", Scheduler::SUPPORTED))
}

fn main() -> ExitCode {
    let args = Args::parse();
    let result = match args.command {
        Some(Command::Serve {
            name,
            port,
            echo_port,
            echo_addr,
        }) => echo_port
            .map_or(Ok(()), |echo_port| {
                echo::serve(&name, &echo_addr, echo_port)
            })
            .and_then(|()| http::serve(&name, port)),
        Some(Command::Down) => topology::remove_leftovers(PREFIX).map(|()| println!("lab removed")),
        None => run(&args.run),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("lab: FAILED: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &RunArgs) -> anyhow::Result<()> {
    let setup_of_sched = sched_setup(args.sched);
    let (weights, keywords) = (setup_of_sched.weights, setup_of_sched.keywords);
    let sched = args.sched.name();
    let kind = args.mode.kind();
    println!("lab: building the topology: client, director, 3 real servers on one L2 segment");
    let setup = match args.mode {
        Mode::Nat => RealSetup::Nat,
        Mode::Fnat => RealSetup::FullNat,
        Mode::Dr | Mode::Tun => RealSetup::Direct,
    };
    let mut lab = Topology::create_with(PREFIX, 3, setup)?;
    let lab_binary = std::env::current_exe()?;
    lab.start_http_servers(&lab_binary)?;

    let reals: Vec<(&str, u32)> = ["r1", "r2", "r3"].into_iter().zip(weights).collect();
    let ipv6 = args.ipv6;
    // TUN: the director's address as the tunnels' outer source, which the reals' decap
    // then accepts (it strips tunnels from the directors only).
    let tun_source = match args.mode {
        Mode::Tun if ipv6 => format!("tun_source {}", topology::DIRECTOR_ADDR6),
        Mode::Tun => format!("tun_source {}", topology::DIRECTOR_ADDR),
        _ => String::new(),
    };
    let mut keywords = keywords.to_vec();
    if !tun_source.is_empty() {
        keywords.push(&tun_source);
    }
    let config_text = lab.keepalived_conf_with_echo(ipv6, sched, kind, &keywords, &reals);
    let config_dir = lab.scratch_dir();
    let config_path = config_dir.join("keepalived.conf");
    std::fs::write(&config_path, &config_text)?;
    println!("lab: {} ({kind} mode):", config_path.display());
    for line in config_text.lines() {
        println!("    {line}");
    }

    // TUN: each real strips the tunnel itself (no ipip module needed).
    let mut decaps = Vec::new();
    if let Mode::Tun = args.mode {
        for real in &lab.reals {
            println!("lab: starting lbd --decap eth0 on {}", real.name);
            let name = format!("{PREFIX}-{}", real.name);
            let log = config_dir.join(format!("lbd-{}.log", real.name));
            decaps.push(Lbd::start_decap(
                &real.ns,
                &config_path,
                "eth0",
                &name,
                &log,
            )?);
        }
    }
    println!("lab: starting lbd on the director's eth0");
    let log_path = config_dir.join("lbd.log");
    let lbd = Lbd::start(&lab.director, &config_path, "eth0", PREFIX, &log_path, &[])?;

    let http_vip = topology::vip_http_in(ipv6);
    let echo_vip = std::net::SocketAddr::new(http_vip.ip(), topology::ECHO_PORT);
    let held_open = setup_of_sched.held_open;
    println!(
        "lab: sending {} HTTP requests to http://{http_vip}/{} and {} UDP echo requests to {echo_vip} from the client",
        args.requests,
        if held_open {
            ", each on its own connection, all held open until the last"
        } else {
            ""
        },
        args.requests
    );
    let requests = args.requests;
    let (answers, echoes, failures) = lab.client.run(move || {
        let mut answers: BTreeMap<String, usize> = BTreeMap::new();
        let mut echoes: BTreeMap<String, usize> = BTreeMap::new();
        let mut failures = Vec::new();
        // Held open: dropped (closed) together after the loop.
        let mut open = Vec::new();
        for i in 0..requests {
            let answer = if held_open {
                http::KeepAlive::connect(http_vip).and_then(|mut connection| {
                    let name = connection.request()?;
                    open.push(connection);
                    Ok(name)
                })
            } else {
                http::get(http_vip)
            };
            match answer {
                Ok(name) => *answers.entry(name).or_default() += 1,
                Err(e) => failures.push(format!("HTTP request {}: {e:#}", i + 1)),
            }
        }
        drop(open);
        for i in 0..requests {
            match echo::ask(echo_vip) {
                Ok(name) => *echoes.entry(name).or_default() += 1,
                Err(e) => failures.push(format!("UDP echo {}: {e:#}", i + 1)),
            }
        }
        Ok((answers, echoes, failures))
    })?;
    let counters =
        read_pinned_counters(&lbd.pin_dir()).context("reading the director's counters")?;
    println!();
    print_service(&lab, &counters, http_vip, "TCP", &answers, ipv6)?;
    print_service(&lab, &counters, echo_vip, "UDP", &echoes, ipv6)?;
    let outcomes: Vec<String> = counters
        .outcomes
        .iter()
        .filter(|(_, n)| *n > 0)
        .map(|(o, n)| format!("{}={n} ({})", o.name(), xdp_action::name(o.xdp_action())))
        .collect();
    println!("director outcomes: {}", outcomes.join(", "));
    println!();

    let answered: usize = answers.values().sum();
    let echoed: usize = echoes.values().sum();
    let real_names: Vec<String> = lab.reals.iter().map(|r| r.name.clone()).collect();
    for failure in failures.iter().take(5) {
        eprintln!("lab: {failure}");
    }
    if args.keep {
        lbd.keep();
        for decap in decaps {
            decap.keep();
        }
        lab.keep();
        println!("lab: left running (--keep). Explore it with, for example:");
        println!("    ip netns exec {PREFIX}-client curl -s http://{VIP}/");
        println!("    ip netns exec {PREFIX}-dir ip -s link show eth0");
        println!("    target/debug/lbctl --name {PREFIX} -Ln --stats");
        println!("    target/debug/lbctl --name {PREFIX} -Lnc");
        println!("    target/debug/lbctl --name {PREFIX} map dump LB_FLOWS");
        println!("    ip netns exec {PREFIX}-r1 tcpdump -ni eth0 port 80");
        println!("    tail -f {}", log_path.display());
        println!("  Tear it down with: cargo xtask lab --down");
    }
    if !failures.is_empty() {
        bail!("{} of {} requests failed", failures.len(), 2 * requests);
    }
    let tcp = check_spread("HTTP", setup_of_sched.tcp, &answers, &real_names)?;
    let udp = check_spread("UDP echo", setup_of_sched.udp, &echoes, &real_names)?;
    if tcp == udp {
        println!(
            "lab: OK: {answered}/{requests} HTTP and {echoed}/{requests} UDP echo requests answered, by {tcp}"
        );
    } else {
        println!(
            "lab: OK: {answered}/{requests} HTTP requests{} answered by {tcp}; {echoed}/{requests} UDP echo requests by {udp}",
            if held_open {
                " (held open together)"
            } else {
                ""
            }
        );
    }
    Ok(())
}

/// The table of one virtual service: what each real answered and what the director
/// counted for it.
fn print_service(
    lab: &Topology,
    counters: &Counters,
    vip: std::net::SocketAddr,
    protocol: &str,
    answers: &BTreeMap<String, usize>,
    ipv6: bool,
) -> anyhow::Result<()> {
    println!(
        "{:<6} {:<16} {:>8} | {:>17} {:>10} {:>10} {:>10} {:>9}",
        "real",
        "address",
        "answered",
        "director: packets",
        "bytes",
        "new flows",
        "ActiveConn",
        "InActConn"
    );
    let service = counters
        .services
        .iter()
        .find(|s| s.addr == vip.ip() && s.port == vip.port())
        .with_context(|| format!("{vip} {protocol} is not in the director's maps"))?;
    for real in &lab.reals {
        let addr: std::net::IpAddr = if ipv6 {
            real.addr6.into()
        } else {
            real.addr.into()
        };
        let counted = service.reals.iter().find(|r| r.addr == addr);
        let traffic = counted.map(|r| r.traffic).unwrap_or_default();
        let (active, inactive) = counted.map_or((0, 0), |r| (r.active_conns, r.inactive_conns));
        println!(
            "{:<6} {:<16} {:>8} | {:>17} {:>10} {:>10} {:>10} {:>9}",
            real.name,
            addr.to_string(),
            answers.get(&real.name).copied().unwrap_or(0),
            traffic.packets,
            traffic.bytes,
            traffic.new_flows,
            active,
            inactive
        );
    }
    println!(
        "virtual server {}:{} {protocol}: {} packets, {} bytes, {} new flows",
        service.addr,
        service.port,
        service.traffic.packets,
        service.traffic.bytes,
        service.traffic.new_flows
    );
    println!();
    Ok(())
}
