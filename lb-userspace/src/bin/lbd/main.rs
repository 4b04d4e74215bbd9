//! lbd: the load-balancer daemon. Reads a keepalived.conf, loads and attaches the XDP
//! balancer (or, with `--dataplane ipvs` or when XDP cannot run, programs the kernel's
//! IPVS), keeps it equal to the configuration, reloads on SIGHUP, stops on
//! SIGINT/SIGTERM (XDP detaches and its maps stay pinned, so a restart keeps established
//! flows; IPVS services lbd added are removed, as keepalived does).
//!
//! On a real server of TUN services, `lbd --decap IFACE` runs the decap program instead:
//! it strips the tunnel header of packets for the configuration's TUN VIPs.

mod control;

use std::{net::SocketAddr, path::PathBuf, process::ExitCode, time::Duration};

use anyhow::Context as _;
use clap::Parser;
use lb_userspace::{
    check::supervisor::Checks,
    config,
    controller::Controller,
    daemon::{self, PidFiles},
    dataplane::{
        ApplyReport,
        backend::{
            Backend, DataplaneChoice, DataplaneKind, DataplaneStatus, ipvs_refusal, xdp_refusal,
        },
        ipvs::IpvsDataplane,
        xdp::{AttachMode, Decap, XdpDataplane, XdpOptions, pin_dir},
    },
    metrics,
    model::{Config, ForwardMethod},
    neighbour_events::NeighbourEvents,
    nexthop::KernelNextHops,
    status,
    vrrp::{self, Vrrp},
};
use tokio::signal::unix::{SignalKind, signal};
use tracing::{debug, error, info, warn};

/// The default instance name (`--name`).
const DEFAULT_NAME: &str = "lbd";

#[derive(Debug, Parser)]
#[command(
    name = "lbd",
    version,
    about = "XDP load balancer driven by keepalived.conf"
)]
struct Args {
    /// Configuration file (keepalived.conf syntax).
    #[arg(
        short = 'f',
        long = "use-file",
        default_value = "/etc/keepalived/keepalived.conf"
    )]
    config: PathBuf,
    /// Check the configuration, print every problem, and exit with keepalived's codes: 0
    /// without any problem, 5 with warnings only (lbd would run), 4 with errors or an
    /// unreadable file (lbd would not start).
    #[arg(short = 't', long = "config-test")]
    config_test: bool,
    /// Print the configuration as lbd reads it (JSON) and exit; problems as with -t.
    #[arg(long)]
    dump_config: bool,
    /// Make every configuration warning an error (unknown keywords, ...).
    #[arg(long)]
    strict: bool,
    /// keepalived's config id: lines `@ID ...` apply when ID is this, `@^ID ...` when it
    /// is not (default: the host name up to its first dot).
    #[arg(short = 'i', long = "config-id", value_name = "ID")]
    config_id: Option<String>,
    /// Interface to attach the balancer to; repeat for several. Default: the interfaces
    /// the real servers are reached through.
    #[arg(long = "interface", value_name = "IFACE")]
    interfaces: Vec<String>,
    /// Write lbd's process id to FILE (keepalived's main pid file); removed at exit.
    /// Default, as keepalived: /run/keepalived.pid for the default instance name.
    #[arg(short = 'p', long = "pid", value_name = "FILE")]
    pid_file: Option<PathBuf>,
    /// keepalived's VRRP pid file: lbd is one process and writes its own id there too,
    /// so that scripts signalling it reach lbd.
    #[arg(short = 'r', long = "vrrp_pid", value_name = "FILE")]
    vrrp_pid_file: Option<PathBuf>,
    /// keepalived's checkers pid file (as --vrrp_pid).
    #[arg(short = 'c', long = "checkers_pid", value_name = "FILE")]
    checkers_pid_file: Option<PathBuf>,
    /// keepalived compatibility: lbd never forks; accepted and ignored.
    #[arg(short = 'n', long = "dont-fork")]
    dont_fork: bool,
    /// keepalived compatibility: lbd always logs to standard error; accepted and ignored.
    #[arg(short = 'l', long = "log-console")]
    log_console: bool,
    /// Detailed log messages (debug level, unless RUST_LOG says otherwise); may repeat.
    #[arg(short = 'D', long = "log-detail", action = clap::ArgAction::Count)]
    log_detail: u8,
    /// keepalived compatibility: the syslog facility (0-7 for local0-7, or local0-7,
    /// user, daemon). lbd logs to standard error (the journal under systemd); a value
    /// keepalived would not take is reported, as keepalived does, and lbd goes on.
    #[arg(short = 'S', long = "log-facility")]
    log_facility: Option<String>,
    /// keepalived compatibility: run only the VRRP part (no load balancing, no XDP).
    #[arg(short = 'P', long = "vrrp")]
    vrrp_only: bool,
    /// keepalived compatibility: run only the checker (LVS) part, which is what lbd runs.
    #[arg(short = 'C', long = "check")]
    check_only: bool,
    /// Run on a real server instead: strip the IPIP/ip6ip6 header of packets for the
    /// configuration's `lb_kind TUN` VIPs arriving on IFACE (repeat for several).
    #[arg(long = "decap", value_name = "IFACE", conflicts_with = "interfaces")]
    decap: Vec<String>,
    /// The data plane: XDP; IPVS (the kernel's, through generic netlink); or auto: XDP,
    /// falling back to IPVS with a warning that names the reason when the XDP programs
    /// cannot load or attach.
    #[arg(long, value_enum, default_value = "auto")]
    dataplane: DataplaneChoice,
    /// XDP attach mode: auto tries native and falls back to generic with a warning.
    #[arg(long, value_enum, default_value = "auto")]
    xdp_mode: AttachMode,
    /// Instance name: maps are pinned under /sys/fs/bpf/NAME.
    #[arg(long, default_value = DEFAULT_NAME)]
    name: String,
    /// Entries of the flow table (about 100 bytes each).
    #[arg(long, default_value_t = lb_common::DEFAULT_FLOW_TABLE_SIZE)]
    flow_table_size: u32,
    /// Entries of the scheduling-table arena (4 bytes each; a Maglev table takes 65537,
    /// an sh/dh table 256, rr/wrr one per real or per wrr step).
    #[arg(long, default_value_t = lb_common::DEFAULT_SCHED_TABLE_ENTRIES)]
    sched_table_entries: u32,
    /// Seconds between sweeps of the flow table: timed-out flows are removed and the
    /// reals' connection counts (lc, wlc, sed, nq) recounted.
    #[arg(long, default_value_t = 5)]
    sweep_interval: u64,
    /// Seconds between refreshes of the reals' next hops (MAC addresses); a change in
    /// the neighbour table of a real's address brings the refresh forward.
    #[arg(long, default_value_t = 5)]
    refresh_interval: u64,
    /// FullNAT (lb_kind FNAT): the local ports handed out, FIRST-LAST. Keep them out of
    /// the kernel's net.ipv4.ip_local_port_range if the local addresses are also used by
    /// the director's own connections.
    #[arg(long, value_name = "FIRST-LAST", default_value = "1024-65535", value_parser = parse_port_range)]
    fnat_ports: (u16, u16),
    /// Answer ICMP/ICMPv6 echo requests to the VIPs in XDP, before the kernel sees them:
    /// for VIPs routed to the director but not assigned to one of its interfaces (the
    /// kernel answers those it holds).
    #[arg(long)]
    answer_ping: bool,
    /// Serve Prometheus metrics on ADDR:PORT (`GET /metrics`).
    #[arg(long, value_name = "ADDR:PORT")]
    metrics_address: Option<SocketAddr>,
    /// Write lbd's man page and shell completions into DIR, then exit.
    #[arg(long, value_name = "DIR", hide = true)]
    write_docs: Option<PathBuf>,
    /// Directory of the control socket (for lbctl) and of the status file.
    /// Default: /run/lbd/NAME.
    #[arg(long, value_name = "DIR")]
    run_dir: Option<PathBuf>,
}

/// Whether `text` is one of keepalived's `-S` values: 0-7 (local0-7), local0-7, user,
/// daemon.
fn is_facility(text: &str) -> bool {
    matches!(text, "user" | "daemon")
        || text.parse::<u8>().is_ok_and(|n| n <= 7)
        || text
            .strip_prefix("local")
            .is_some_and(|n| n.parse::<u8>().is_ok_and(|n| n <= 7))
}

/// `FIRST-LAST`, a non-empty port range without port 0.
fn parse_port_range(text: &str) -> Result<(u16, u16), String> {
    let (first, last) = text
        .split_once('-')
        .ok_or_else(|| format!("`{text}` is not a port range FIRST-LAST"))?;
    let port = |p: &str| {
        p.trim()
            .parse::<u16>()
            .ok()
            .filter(|&p| p != 0)
            .ok_or_else(|| format!("`{p}` is not a port number (1..=65535)"))
    };
    let (first, last) = (port(first)?, port(last)?);
    if first > last {
        return Err(format!("the range {first}-{last} is empty"));
    }
    Ok((first, last))
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(dir) = &args.write_docs {
        return match lb_userspace::docs::write(<Args as clap::CommandFactory>::command(), dir) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("lbd: writing the docs into {}: {e}", dir.display());
                ExitCode::FAILURE
            }
        };
    }
    let level = if args.log_detail > 0 { "debug" } else { "info" };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level)),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    if let Some(facility) = args.log_facility.as_deref().filter(|f| !is_facility(f)) {
        eprintln!("lbd: invalid log facility `{facility}` (0-7, local0-7, user, daemon); ignored");
    }
    if args.config_test || args.dump_config {
        return config_test(&args);
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            error!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

/// How `args` asks the configuration to be read.
fn config_options(args: &Args) -> config::Options {
    let mut options = config::Options::default();
    if let Some(id) = &args.config_id {
        options.config_id = id.clone();
    }
    options.strict = args.strict;
    options
}

/// keepalived's exit code for a configuration it cannot use (`KEEPALIVED_EXIT_CONFIG`).
const EXIT_CONFIG: u8 = 4;
/// keepalived's exit code for a configuration test that reported problems
/// (`KEEPALIVED_EXIT_CONFIG_TEST`).
const EXIT_CONFIG_TEST: u8 = 5;

/// `-t` (every problem, keepalived's exit codes) and `--dump-config` (the problems, then
/// the model as JSON on standard output; fails only on errors).
fn config_test(args: &Args) -> ExitCode {
    match config::load_with(&args.config, &config_options(args)) {
        Ok(loaded) => {
            for warning in &loaded.warnings {
                eprintln!("{warning}");
            }
            let refusal = match args.dataplane {
                DataplaneChoice::Ipvs => ipvs_refusal(&loaded.config),
                DataplaneChoice::Xdp => xdp_refusal(&loaded.config),
                DataplaneChoice::Auto => ipvs_refusal(&loaded.config).and_then(|ipvs| {
                    xdp_refusal(&loaded.config).map(|xdp| format!("{xdp}; {ipvs}"))
                }),
            };
            if let Some(refusal) = refusal {
                eprintln!("{}: {refusal}", args.config.display());
                return ExitCode::from(EXIT_CONFIG);
            }
            if args.dump_config {
                match serde_json::to_string_pretty(&loaded.config) {
                    Ok(json) => println!("{json}"),
                    Err(e) => {
                        eprintln!("cannot print the configuration: {e}");
                        return ExitCode::FAILURE;
                    }
                }
                ExitCode::SUCCESS
            } else if !loaded
                .warnings
                .iter()
                .any(|w| w.severity == config::Severity::Warning)
            {
                eprintln!("{}: configuration is valid", args.config.display());
                ExitCode::SUCCESS
            } else {
                let warnings = loaded
                    .warnings
                    .iter()
                    .filter(|w| w.severity == config::Severity::Warning)
                    .count();
                eprintln!(
                    "{}: configuration is usable, with {warnings} warning(s)",
                    args.config.display()
                );
                ExitCode::from(EXIT_CONFIG_TEST)
            }
        }
        Err(config::ConfigError::Invalid {
            errors, warnings, ..
        }) => {
            let mut all: Vec<_> = errors.iter().chain(&warnings).collect();
            all.sort_by_key(|d| d.location.line);
            for diagnostic in all {
                eprintln!("{diagnostic}");
            }
            ExitCode::from(EXIT_CONFIG)
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(EXIT_CONFIG)
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    // First, so that a signal during start-up (loading can take seconds) is not fatal.
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut hangup = signal(SignalKind::hangup())?;
    let loaded = config::load_with(&args.config, &config_options(&args))?;
    log_diagnostics(&loaded.warnings);
    // keepalived always writes its main pid file; units and scripts read it.
    let main_pid = args
        .pid_file
        .clone()
        .or_else(|| (args.name == DEFAULT_NAME).then(|| PathBuf::from("/run/keepalived.pid")));
    let pid_files = [&main_pid, &args.vrrp_pid_file, &args.checkers_pid_file]
        .into_iter()
        .flatten()
        .cloned();
    let _pid_files = PidFiles::write(pid_files)?;
    if args.vrrp_only {
        return run_vrrp_only(&args, loaded.config, [terminate, interrupt, hangup]).await;
    }
    if !args.decap.is_empty() {
        return run_decap(&args, loaded.config, [terminate, interrupt, hangup]).await;
    }
    let mut checks = Checks::start(&loaded.config);
    let services = loaded.config.virtual_servers.len();
    let reals: usize = loaded
        .config
        .virtual_servers
        .iter()
        .map(|vs| vs.reals.len())
        .sum();
    let Started {
        mut controller,
        report: mut last_report,
        interfaces,
        status: dataplane_status,
    } = start_dataplane(&args, loaded.config, &checks)?;
    for warning in nat_forwarding_warnings(controller.running(), dataplane_status.kind) {
        warn!("{warning}");
    }
    let pins = pin_dir(&args.name);
    match dataplane_status.kind {
        DataplaneKind::Xdp => info!(
            "ready: {services} virtual service(s), {reals} real server(s), maps pinned under {}",
            pins.display()
        ),
        DataplaneKind::Ipvs => info!(
            "ready: {services} virtual service(s), {reals} real server(s) in the kernel's IPVS"
        ),
    }
    let mut vrrp = Vrrp::start(controller.running());
    let mut control = control::Control::start(
        &run_dir(&args),
        &args.name,
        &args.config,
        Some(dataplane_status.clone()),
        vrrp.table(),
        checks.table(),
    );
    let counters = match dataplane_status.kind {
        DataplaneKind::Xdp => metrics::CounterSource::Pinned(pins.clone()),
        DataplaneKind::Ipvs => metrics::CounterSource::Ipvs,
    };
    let _metrics = start_metrics(&args, counters, vrrp.table(), checks.table()).await?;
    if let Err(e) = daemon::notify("READY=1") {
        warn!("cannot tell systemd lbd is ready: {e}");
    }

    let mut refresh = tokio::time::interval(Duration::from_secs(args.refresh_interval.max(1)));
    // A slow refresh (ARP probes) must not be followed by a burst of catch-up refreshes.
    refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    refresh.tick().await;
    let mut sweep = tokio::time::interval(Duration::from_secs(args.sweep_interval.max(1)));
    sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    sweep.tick().await;
    // Next hops and the flow table are XDP's: IPVS resolves and expires on its own.
    let xdp = dataplane_status.kind == DataplaneKind::Xdp;
    // A change of a real's neighbour entry brings a refresh forward (`soon`; the delay
    // gathers the changes of one moment into one refresh). Lost events (a full socket
    // buffer) are taken as a change.
    let mut neighbours = match xdp.then(NeighbourEvents::subscribe) {
        None => None,
        Some(Ok(events)) => Some(events),
        Some(Err(e)) => {
            warn!(
                "cannot follow the neighbour table ({e}); next hops are refreshed every {} s only",
                args.refresh_interval
            );
            None
        }
    };
    let mut soon: Option<tokio::time::Instant> = None;
    loop {
        tokio::select! {
            changed = next_change(&mut neighbours) => {
                let relevant = match changed {
                    Ok(addrs) => is_real(controller.running(), &addrs),
                    Err(e) => {
                        warn!("neighbour table changes were lost ({e}); refreshing");
                        true
                    }
                };
                if relevant && soon.is_none() {
                    soon = Some(tokio::time::Instant::now() + NEIGHBOUR_CHANGE_DELAY);
                }
            }
            _ = sleep_until(soon) => {
                soon = None;
                refresh_now(&mut controller, &mut last_report);
            }
            _ = terminate.recv() => { info!("SIGTERM: stopping"); break; }
            _ = interrupt.recv() => { info!("SIGINT: stopping"); break; }
            _ = hangup.recv() => {
                if reload(&args, &mut controller, &mut checks, &mut last_report) {
                    control.reloaded();
                }
                for name in vrrp.update(controller.running()).await {
                    info!("reload: VRRP instance {name} (re)started or stopped");
                }
            }
            (request, answer) = control.next() => {
                let response = control.handle(request, &mut controller, &mut checks);
                let _ = answer.send(response);
            }
            change = vrrp.next_change() => {
                if change.own_fault.is_none() {
                    info!("VRRP: {} is {}", change.instance, vrrp::state_name(change.state));
                    checks.follow_addresses(controller.running());
                }
                control.write_status();
            }
            report = checks.next() => {
                checks.record(report);
                control.write_status();
                match controller.set_overlay(checks.overlay()) {
                    Ok(report) => {
                        for change in &report.changes {
                            info!("health: {change}");
                        }
                        log_report(&report, &last_report);
                        last_report = report;
                    }
                    Err(e) => error!("applying a health change failed: {e}"),
                }
            }
            _ = refresh.tick() => {
                refresh_now(&mut controller, &mut last_report);
                checks.follow_addresses(controller.running());
                control.write_status();
            }
            _ = sweep.tick(), if xdp => match controller.sweep() {
                Ok(report) if report.expired > 0 => debug!(
                    "sweep: {} flows expired, {} remain", report.expired, report.flows
                ),
                Ok(_) => {}
                Err(e) => error!("sweeping the flow table failed: {e}"),
            },
        }
    }
    let _ = daemon::notify("STOPPING=1");
    // Hand the addresses over first (priority 0), then stop balancing.
    vrrp.stop().await;
    control.write_status();
    checks.shutdown(controller.running()).await;
    controller.dataplane_mut().stop()?;
    match dataplane_status.kind {
        DataplaneKind::Xdp => info!(
            "detached from {}; maps stay pinned under {} (a restart keeps established flows)",
            interfaces.join(", "),
            pins.display()
        ),
        DataplaneKind::Ipvs => info!("removed lbd's virtual services from IPVS"),
    }
    Ok(())
}

/// A data plane programmed with the configuration.
struct Started {
    controller: Controller<Backend>,
    report: ApplyReport,
    /// The interfaces XDP is attached to (none for IPVS).
    interfaces: Vec<String>,
    status: DataplaneStatus,
}

/// The data plane `--dataplane` asks for, programmed with `config`: XDP attached to its
/// interfaces, or IPVS; `auto` falls back from XDP to IPVS with a warning.
fn start_dataplane(args: &Args, config: Config, checks: &Checks) -> anyhow::Result<Started> {
    let refusal = ipvs_refusal(&config);
    let only_ipvs = xdp_refusal(&config);
    match args.dataplane {
        DataplaneChoice::Xdp => match only_ipvs {
            Some(only_ipvs) => anyhow::bail!("{}: {only_ipvs}", args.config.display()),
            None => start_xdp(args, config, checks),
        },
        DataplaneChoice::Ipvs => match refusal {
            Some(refusal) => anyhow::bail!("{}: {refusal}", args.config.display()),
            None => start_ipvs(config, checks, None),
        },
        DataplaneChoice::Auto => {
            if let Some(only_ipvs) = only_ipvs {
                if let Some(refusal) = refusal {
                    anyhow::bail!("{}: {only_ipvs}; {refusal}", args.config.display());
                }
                warn!("{only_ipvs}: using the kernel's IPVS");
                return start_ipvs(config, checks, Some(only_ipvs));
            }
            let xdp_error = match start_xdp(args, config.clone(), checks) {
                Ok(started) => return Ok(started),
                Err(e) => format!("{e:#}"),
            };
            let reason = short_reason(&xdp_error);
            if let Some(refusal) = refusal {
                anyhow::bail!(
                    "the XDP data plane cannot run ({xdp_error}), and IPVS cannot take over: {refusal}"
                );
            }
            warn!("the XDP data plane cannot run ({xdp_error}); falling back to the kernel's IPVS");
            start_ipvs(config, checks, Some(reason.clone())).with_context(|| {
                format!("the XDP data plane cannot run ({reason}), and IPVS cannot either")
            })
        }
    }
}

/// The gist of why XDP cannot run, for the status and lbctl: its first line, without
/// the verifier's log (the warning in lbd's log has all of it).
fn short_reason(error: &str) -> String {
    let first = error.lines().next().unwrap_or(error);
    first
        .split_once(" Verifier output:")
        .map_or(first, |(gist, _)| gist)
        .to_owned()
}

/// IPVS, programmed with `config`; `fallback_reason`: why XDP did not run.
fn start_ipvs(
    config: Config,
    checks: &Checks,
    fallback_reason: Option<String>,
) -> anyhow::Result<Started> {
    let ipvs = IpvsDataplane::open()?;
    let mut controller = Controller::new(Backend::Ipvs(ipvs));
    let report = controller.apply_with(config, checks.overlay())?;
    log_report(&report, &ApplyReport::default());
    info!("data plane: the kernel's IPVS");
    Ok(Started {
        controller,
        report,
        interfaces: Vec::new(),
        status: DataplaneStatus {
            kind: DataplaneKind::Ipvs,
            fallback_reason,
        },
    })
}

/// The XDP programs, loaded, programmed with `config` and attached (to `--interface`s,
/// else to the VRRP instances' interfaces and those the reals are reached through).
/// Nothing stays attached when this fails.
fn start_xdp(args: &Args, config: Config, checks: &Checks) -> anyhow::Result<Started> {
    let resolver = KernelNextHops::new(Duration::from_secs(1)).context("rtnetlink")?;
    let options = XdpOptions {
        pin_dir: Some(pin_dir(&args.name)),
        flow_table_size: args.flow_table_size,
        sched_table_entries: args.sched_table_entries,
        persist_table_size: lb_common::PERSIST_TABLE_SIZE,
        fnat_ports: args.fnat_ports,
        answer_echo: args.answer_ping,
    };
    let dataplane = XdpDataplane::load(&options, resolver)?;
    for warning in &dataplane.load_warnings {
        warn!("{warning}");
    }
    let mut controller = Controller::new(Backend::Xdp(Box::new(dataplane)));
    let report = controller.apply_with(config, checks.overlay())?;
    log_report(&report, &ApplyReport::default());
    let interfaces = match xdp_interfaces(args, &mut controller) {
        Ok(interfaces) => interfaces,
        Err(e) => {
            let _ = controller.dataplane_mut().stop();
            return Err(e);
        }
    };
    Ok(Started {
        controller,
        report,
        interfaces,
        status: DataplaneStatus {
            kind: DataplaneKind::Xdp,
            fallback_reason: None,
        },
    })
}

/// Attach XDP to the interfaces asked for, else to those of the VRRP instances (where
/// the VIPs are) and those the reals are reached through; the interfaces.
fn xdp_interfaces(
    args: &Args,
    controller: &mut Controller<Backend>,
) -> anyhow::Result<Vec<String>> {
    let interfaces = if args.interfaces.is_empty() {
        let mut found = match controller.dataplane().xdp() {
            Some(xdp) => xdp.egress_interfaces()?,
            None => Vec::new(),
        };
        found.extend(
            controller
                .running()
                .vrrp_instances
                .iter()
                .map(|vrrp| vrrp.interface.clone())
                .filter(|name| !name.is_empty()),
        );
        found.sort();
        found.dedup();
        if found.is_empty() {
            anyhow::bail!(
                "no --interface given, and no real server resolved to an interface to attach to"
            );
        }
        info!(
            "no --interface: attaching to the VRRP instances' interfaces and those the reals are reached through: {}",
            found.join(", ")
        );
        found
    } else {
        args.interfaces.clone()
    };
    let Some(xdp) = controller.dataplane_mut().xdp_mut() else {
        return Ok(Vec::new());
    };
    for interface in &interfaces {
        let (native, fallback) = xdp.attach(interface, args.xdp_mode)?;
        if let Some(reason) = fallback {
            warn!(
                "native XDP failed on {interface} ({reason}); using generic mode, which is slower"
            );
        }
        info!(
            "attached to {interface} in {} mode",
            if native { "native" } else { "generic" }
        );
    }
    Ok(interfaces)
}

/// `--decap`: strip tunnels for the TUN VIPs until SIGINT/SIGTERM; SIGHUP reloads them.
async fn run_decap(
    args: &Args,
    config: Config,
    [mut terminate, mut interrupt, mut hangup]: [tokio::signal::unix::Signal; 3],
) -> anyhow::Result<()> {
    let mut decap = Decap::load()?;
    let vips = tun_vips(&config);
    decap.set_vips(&vips)?;
    for interface in &args.decap {
        let (native, fallback) = decap.attach(interface, args.xdp_mode)?;
        if let Some(reason) = fallback {
            warn!("native XDP failed on {interface} ({reason}); using generic mode");
        }
        info!(
            "decap attached to {interface} in {} mode",
            if native { "native" } else { "generic" }
        );
    }
    if vips.is_empty() {
        warn!("no lb_kind TUN virtual_server in the configuration: nothing to decapsulate");
    }
    info!(
        "ready: decapsulating tunnelled packets for {} VIP(s)",
        vips.len()
    );
    loop {
        tokio::select! {
            _ = terminate.recv() => { info!("SIGTERM: stopping"); break; }
            _ = interrupt.recv() => { info!("SIGINT: stopping"); break; }
            _ = hangup.recv() => match config::load(&args.config) {
                Ok(loaded) => {
                    let vips = tun_vips(&loaded.config);
                    match decap.set_vips(&vips) {
                        Ok(()) => info!("reload applied: {} VIP(s)", vips.len()),
                        Err(e) => error!("reload rejected: {e}"),
                    }
                }
                Err(e) => error!("reload rejected, the running VIPs stay: {e}"),
            },
        }
    }
    info!("{} packet(s) decapsulated", decap.decapsulated()?);
    decap.detach_all()?;
    info!("detached from {}", args.decap.join(", "));
    Ok(())
}

/// What NAT needs of the kernel's settings on data plane `kind`. XDP hands translated
/// replies to the kernel to route: it must forward IP, accept packets whose source (the
/// VIP) is one of its own addresses, and not filter them by reverse path. IPVS translates
/// replies on the forward path: it must forward IP.
fn nat_forwarding_warnings(config: &Config, kind: DataplaneKind) -> Vec<String> {
    let nat = |v4: bool| {
        config
            .virtual_servers
            .iter()
            .any(|vs| vs.forward.translates_replies() && vs.addr.is_ipv4() == v4)
    };
    let enabled = |path: &str| std::fs::read_to_string(path).is_ok_and(|v| v.trim() != "0");
    let (why, why6, settings): (&str, &str, &[(&str, &str)]) = match kind {
        DataplaneKind::Xdp => (
            "lb_kind NAT/FNAT: replies from the reals are routed by the kernel after translation",
            "lb_kind NAT/FNAT (IPv6): replies from the reals are routed by the kernel after translation",
            &[
                ("/proc/sys/net/ipv4/ip_forward", "net.ipv4.ip_forward=1"),
                (
                    "/proc/sys/net/ipv4/conf/all/accept_local",
                    "net.ipv4.conf.all.accept_local=1",
                ),
            ],
        ),
        DataplaneKind::Ipvs => (
            "lb_kind NAT on IPVS: the reals' replies are forwarded by the director",
            "lb_kind NAT on IPVS: the reals' replies are forwarded by the director",
            &[("/proc/sys/net/ipv4/ip_forward", "net.ipv4.ip_forward=1")],
        ),
    };
    let mut warnings = Vec::new();
    if nat(true) {
        for (path, setting) in settings {
            if !enabled(path) {
                warnings.push(format!("{why}; set sysctl {setting}"));
            }
        }
    }
    // Strict reverse-path filtering drops a reply whose source is the director's own VIP.
    if kind == DataplaneKind::Xdp
        && nat(true)
        && std::fs::read_to_string("/proc/sys/net/ipv4/conf/all/rp_filter")
            .is_ok_and(|v| v.trim() == "1")
    {
        warnings.push(
            "lb_kind NAT/FNAT: strict reverse-path filtering (net.ipv4.conf.all.rp_filter=1) drops translated replies; set it to 0 or 2 (and the interfaces' own rp_filter)".to_owned(),
        );
    }
    if nat(false) && !enabled("/proc/sys/net/ipv6/conf/all/forwarding") {
        warnings.push(format!("{why6}; set sysctl net.ipv6.conf.all.forwarding=1"));
    }
    warnings
}

/// Resolve the reals' next hops again and log what changed.
fn refresh_now(controller: &mut Controller<Backend>, last_report: &mut ApplyReport) {
    match controller.refresh() {
        Ok(report) => {
            log_report(&report, last_report);
            *last_report = report;
        }
        Err(e) => error!("refreshing the data plane failed: {e}"),
    }
}

/// The next neighbour table change, or never without a subscription.
async fn next_change(
    events: &mut Option<NeighbourEvents>,
) -> std::io::Result<Vec<std::net::IpAddr>> {
    match events {
        Some(events) => events.changed().await,
        None => std::future::pending().await,
    }
}

/// At `at`, or never.
async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// How long after a change of a real's neighbour entry its next hop is resolved again.
const NEIGHBOUR_CHANGE_DELAY: Duration = Duration::from_millis(50);

/// Whether any of `addrs` is a real server's address.
fn is_real(config: &Config, addrs: &[std::net::IpAddr]) -> bool {
    config.virtual_servers.iter().any(|vs| {
        vs.reals.iter().any(|real| addrs.contains(&real.addr))
            || vs
                .extras
                .sorry_server
                .is_some_and(|sorry| addrs.contains(&sorry.addr))
    })
}

/// The VIPs of the TUN services.
fn tun_vips(config: &Config) -> Vec<std::net::IpAddr> {
    let mut vips: Vec<_> = config
        .virtual_servers
        .iter()
        .filter(|vs| vs.forward == ForwardMethod::Tun && vs.fwmark.is_none())
        .map(|vs| vs.addr)
        .collect();
    vips.sort();
    vips.dedup();
    vips
}

/// `-P`: VRRP only, until SIGTERM or SIGINT; SIGHUP reloads (instances that changed are
/// restarted with all the others).
async fn run_vrrp_only(
    args: &Args,
    config: Config,
    [mut terminate, mut interrupt, mut hangup]: [tokio::signal::unix::Signal; 3],
) -> anyhow::Result<()> {
    if config.vrrp_instances.is_empty() {
        anyhow::bail!("-P/--vrrp: the configuration has no vrrp_instance");
    }
    let mut running = config;
    let mut vrrp = Vrrp::start(&running);
    let mut control = control::Control::start(
        &run_dir(args),
        &args.name,
        &args.config,
        None,
        vrrp.table(),
        status::CheckTable::default(),
    );
    let _metrics = start_metrics(
        args,
        metrics::CounterSource::None,
        vrrp.table(),
        status::CheckTable::default(),
    )
    .await?;
    info!(
        "ready: VRRP only, {} instance(s)",
        running.vrrp_instances.len()
    );
    if let Err(e) = daemon::notify("READY=1") {
        warn!("cannot tell systemd lbd is ready: {e}");
    }
    loop {
        tokio::select! {
            _ = terminate.recv() => { info!("SIGTERM: stopping"); break; }
            _ = interrupt.recv() => { info!("SIGINT: stopping"); break; }
            _ = hangup.recv() => match config::load_with(&args.config, &config_options(args)) {
                Ok(loaded) => {
                    log_diagnostics(&loaded.warnings);
                    running = loaded.config;
                    for name in vrrp.update(&running).await {
                        info!("reload: VRRP instance {name} (re)started or stopped");
                    }
                    info!("reload applied: {} VRRP instance(s)", running.vrrp_instances.len());
                }
                Err(e) => error!("reload rejected, the running configuration stays: {e}"),
            },
            (request, answer) = control.next() => {
                let _ = answer.send(control.handle_status_only(request));
            }
            change = vrrp.next_change() => {
                if change.own_fault.is_none() {
                    info!("VRRP: {} is {}", change.instance, vrrp::state_name(change.state));
                }
                control.write_status();
            }
        }
    }
    let _ = daemon::notify("STOPPING=1");
    vrrp.stop().await;
    control.write_status();
    Ok(())
}

/// SIGHUP: load the file again; a bad file is reported and the running config stays.
/// Whether the file's configuration now runs.
fn reload(
    args: &Args,
    controller: &mut Controller<Backend>,
    checks: &mut Checks,
    last_report: &mut ApplyReport,
) -> bool {
    info!("SIGHUP: reloading {}", args.config.display());
    let loaded = match config::load_with(&args.config, &config_options(args)) {
        Ok(loaded) => loaded,
        Err(e) => {
            error!("reload rejected, the running configuration stays: {e}");
            return false;
        }
    };
    log_diagnostics(&loaded.warnings);
    let refusal = match controller.dataplane().kind() {
        DataplaneKind::Xdp => xdp_refusal(&loaded.config)
            .map(|r| format!("{r}; lbd runs on XDP: a restart changes the data plane")),
        DataplaneKind::Ipvs => ipvs_refusal(&loaded.config)
            .map(|r| format!("{r}; lbd runs on IPVS: a restart changes the data plane")),
    };
    if let Some(refusal) = refusal {
        error!("reload rejected, the running configuration stays: {refusal}");
        return false;
    }
    for warning in nat_forwarding_warnings(&loaded.config, controller.dataplane().kind()) {
        warn!("{warning}");
    }
    let health = checks.health_for(controller.running(), &loaded.config);
    match controller.apply_with(loaded.config, health.overlay()) {
        Ok(report) => {
            checks.adopt(controller.running(), health);
            for change in &report.changes {
                info!("reload: {change}");
            }
            log_report(&report, &ApplyReport::default());
            *last_report = report;
            info!(
                "reload applied: {} virtual services",
                controller.running().virtual_servers.len()
            );
            true
        }
        Err(e) => {
            error!("reload rejected by the data plane, the running configuration stays: {e}");
            false
        }
    }
}

/// `--run-dir`, else /run/lbd/NAME.
fn run_dir(args: &Args) -> PathBuf {
    args.run_dir
        .clone()
        .unwrap_or_else(|| status::run_dir(&args.name))
}

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// `--metrics-address`: serve the metrics until the returned guard is dropped.
async fn start_metrics(
    args: &Args,
    counters: metrics::CounterSource,
    vrrp: status::VrrpTable,
    checks: status::CheckTable,
) -> anyhow::Result<Option<AbortOnDrop>> {
    let Some(addr) = args.metrics_address else {
        return Ok(None);
    };
    let listener = metrics::bind(addr)
        .await
        .with_context(|| format!("--metrics-address {addr}"))?;
    let sources = metrics::Sources {
        counters,
        vrrp,
        checks,
    };
    Ok(Some(AbortOnDrop(tokio::spawn(metrics::serve(
        listener, sources,
    )))))
}

/// The warnings (and notes) of a configuration that loaded.
fn log_diagnostics(diagnostics: &[config::Diagnostic]) {
    for diagnostic in diagnostics {
        match diagnostic.severity {
            config::Severity::Note => info!("{diagnostic}"),
            _ => warn!("{diagnostic}"),
        }
    }
}

/// Log what `report` says that `previous` did not.
fn log_report(report: &ApplyReport, previous: &ApplyReport) {
    for (addr, reason) in &report.unresolved {
        if !previous
            .unresolved
            .iter()
            .any(|(a, r)| a == addr && r == reason)
        {
            warn!("real {addr} takes no new flows until its next hop resolves: {reason}");
        }
    }
    for (addr, _) in &previous.unresolved {
        if !report.unresolved.iter().any(|(a, _)| a == addr) {
            info!("real {addr} resolved; it takes new flows");
        }
    }
    for (addr, port) in &report.scaled {
        if !previous.scaled.contains(&(*addr, *port)) {
            warn!(
                "virtual_server {addr} {port}: wrr weights scaled down to fit the longest sequence"
            );
        }
    }
}
