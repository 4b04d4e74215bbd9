//! lbd: the load-balancer daemon. Reads a keepalived.conf, loads and attaches the XDP
//! balancer (or, with `--dataplane ipvs` or when XDP cannot run, programs the kernel's
//! IPVS), keeps it equal to the configuration, reloads on SIGHUP, stops on
//! SIGINT/SIGTERM (XDP detaches and its maps stay pinned, so a restart keeps established
//! flows; IPVS services lbd added are removed, as keepalived does).
//!
//! On a real server of TUN services, `lbd --decap IFACE` runs the decap program instead:
//! it strips the tunnel header of packets for the configuration's TUN VIPs.

mod control;
mod serve;
mod start;

use std::{net::SocketAddr, path::PathBuf, process::ExitCode};

use anyhow::Context as _;
use clap::Parser;
use lb_userspace::{
    alert::Alerts,
    config,
    daemon::{self, PidFiles},
    dataplane::{
        backend::{DataplaneChoice, ipvs_refusal, xdp_refusal},
        xdp::{AttachMode, Decap, Prefix, director_sources, pin_dir},
    },
    dump, metrics,
    model::{Config, ForwardMethod},
    status,
    vrrp::{self, Vrrp},
};
use tokio::signal::unix::{SignalKind, signal};
use tracing::{error, info, warn};

/// The default instance name (`--name`).
const DEFAULT_NAME: &str = "lbd";

#[derive(Clone, Debug, Parser)]
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
    /// keepalived compatibility: run only the checker (LVS) part: the data plane and the
    /// health checks, no VRRP (with `-P` too, both, as keepalived runs both).
    #[arg(short = 'C', long = "check")]
    check_only: bool,
    /// Leave the data plane running when lbd stops (keepalived's option): XDP stays
    /// attached (through its pinned links) with its maps, IPVS keeps lbd's services, and
    /// the next lbd adopts them. For upgrades without a gap; without it a stop detaches.
    /// (A crash always leaves XDP running.)
    #[arg(short = 'I', long = "dont-release-ipvs")]
    dont_release: bool,
    /// Run on a real server instead: strip the IPIP/ip6ip6 header of packets for the
    /// configuration's `lb_kind TUN` VIPs arriving on IFACE (repeat for several), sent by
    /// the directors: from the tunnel sources the configuration names (`tun_source`,
    /// `lvs_tun_source`, VRRP `unicast_src_ip` and `unicast_peer`) or `--decap-source`.
    #[arg(long = "decap", value_name = "IFACE", conflicts_with = "interfaces")]
    decap: Vec<String>,
    /// With `--decap`: also accept tunnels from ADDR, or from every address of ADDR/LEN
    /// (repeat for several), such as directors that tunnel from their route's source.
    #[arg(long = "decap-source", value_name = "ADDR[/LEN]", requires = "decap")]
    decap_sources: Vec<Prefix>,
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
    /// The longest time, in seconds, between two full reads of the flow table (which
    /// find the flows to remove when they time out, and correct the connection counts of
    /// flows the LRU evicted); shorter when the timeouts in use are short.
    #[arg(long, default_value_t = 10)]
    sweep_interval: u64,
    /// Connection sync (`lvs_sync_daemon`): the longest time, in seconds, a director that
    /// comes back as backup waits for the master's connections before it lets VRRP
    /// preempt; it preempts as soon as they are in. 0: preempt without waiting.
    #[arg(long, value_name = "SECS", default_value_t = 30)]
    resync_wait: u64,
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
    /// keepalived compatibility: print the number of the signal that asks lbd for NAME
    /// (STOP, RELOAD, DATA, STATS, JSON), then exit. SIGUSR1 (DATA) writes
    /// keepalived.data, keepalived_check.data and keepalived_parent.data, SIGUSR2 (STATS)
    /// keepalived.stats, SIGRTMIN+2 (JSON) keepalived.json, in $TMPDIR or /tmp.
    #[arg(long, value_name = "NAME")]
    signum: Option<String>,
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
    if let Some(name) = &args.signum {
        return match lb_userspace::dump::signum(name) {
            Some(number) => {
                println!("{number}");
                ExitCode::SUCCESS
            }
            None => {
                eprintln!("Unknown sigfunc {name}");
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

/// The configuration as this lbd runs it: with `-C` alone (keepalived's checker process),
/// without its VRRP part. For start and every reload.
fn load_config(args: &Args) -> Result<config::Loaded, config::ConfigError> {
    let mut loaded = config::load_with(&args.config, &config_options(args))?;
    if args.check_only && !args.vrrp_only {
        let config = &mut loaded.config;
        config.vrrp_instances.clear();
        config.vrrp_sync_groups.clear();
        config.vrrp_scripts.clear();
    }
    Ok(loaded)
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
    let terminate = signal(SignalKind::terminate())?;
    let interrupt = signal(SignalKind::interrupt())?;
    let hangup = signal(SignalKind::hangup())?;
    // keepalived's dump signals (SIGUSR1 would otherwise end lbd).
    let dumps = dump::Signals::new()?;
    let loaded = load_config(&args)?;
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
    // -P alone: VRRP only; with -C too, both (keepalived's two processes).
    if args.vrrp_only && !args.check_only {
        return run_vrrp_only(&args, loaded.config, [terminate, interrupt, hangup], dumps).await;
    }
    if !args.decap.is_empty() {
        return run_decap(&args, loaded.config, [terminate, interrupt, hangup]).await;
    }
    serve::run(&args, loaded.config, [terminate, interrupt, hangup], dumps).await
}

/// `--decap`: strip tunnels for the TUN VIPs until SIGINT/SIGTERM; SIGHUP reloads them.
async fn run_decap(
    args: &Args,
    config: Config,
    [mut terminate, mut interrupt, mut hangup]: [tokio::signal::unix::Signal; 3],
) -> anyhow::Result<()> {
    let vips = tun_vips(&config);
    let sources = decap_sources(args, &config, &vips)?;
    let mut decap = Decap::load(Some(&pin_dir(&args.name)))?;
    decap.set_sources(&sources)?;
    decap.set_vips(&vips)?;
    for interface in &args.decap {
        let attached = decap.attach(interface, args.xdp_mode)?;
        if let Some(reason) = &attached.fallback {
            warn!("native XDP failed on {interface} ({reason}); using generic mode");
        }
        match attached.native {
            None => info!(
                "decap adopted the program running on {interface} (an earlier lbd's): this one replaced it atomically"
            ),
            Some(native) => info!(
                "decap attached to {interface} in {} mode",
                if native { "native" } else { "generic" }
            ),
        }
    }
    if vips.is_empty() {
        warn!("no lb_kind TUN virtual_server in the configuration: nothing to decapsulate");
    }
    info!(
        "ready: decapsulating tunnelled packets for {} VIP(s) from {}",
        vips.len(),
        list(&sources)
    );
    // Tunnels to a VIP from sources not listed are passed untouched: say so while they
    // come (a director whose source is missing from the list is an outage of TUN).
    let mut watch = tokio::time::interval(std::time::Duration::from_secs(10));
    let mut unknown_seen = decap.from_unknown_sources()?;
    loop {
        tokio::select! {
            _ = terminate.recv() => { info!("SIGTERM: stopping"); break; }
            _ = interrupt.recv() => { info!("SIGINT: stopping"); break; }
            _ = watch.tick() => {
                let unknown = decap.from_unknown_sources()?;
                if unknown > unknown_seen {
                    warn!(
                        "{} tunnelled packet(s) to a VIP from a source that is not a known director's passed untouched in the last 10 s; if a director tunnels from it, add it (tun_source, or --decap-source)",
                        unknown - unknown_seen
                    );
                }
                unknown_seen = unknown;
            }
            _ = hangup.recv() => match config::load(&args.config) {
                Ok(loaded) => {
                    let vips = tun_vips(&loaded.config);
                    let applied = decap_sources(args, &loaded.config, &vips)
                        .and_then(|sources| {
                            decap.set_sources(&sources)?;
                            decap.set_vips(&vips)?;
                            Ok(sources)
                        });
                    match applied {
                        Ok(sources) => info!(
                            "reload applied: {} VIP(s) from {}",
                            vips.len(),
                            list(&sources)
                        ),
                        Err(e) => error!("reload rejected: {e:#}"),
                    }
                }
                Err(e) => error!("reload rejected, the running VIPs stay: {e}"),
            },
        }
    }
    info!(
        "{} packet(s) decapsulated; {} tunnelled to a VIP from another source, passed untouched",
        decap.decapsulated()?,
        decap.from_unknown_sources()?
    );
    if args.dont_release {
        decap.leave_all();
        info!(
            "left attached to {} (--dont-release-ipvs)",
            args.decap.join(", ")
        );
    } else {
        decap.detach_all()?;
        info!("detached from {}", args.decap.join(", "));
    }
    Ok(())
}

/// The directors' tunnel sources (`director_sources`): an error when there are VIPs to
/// strip tunnels for but none is known, since every tunnelled packet would be refused.
fn decap_sources(
    args: &Args,
    config: &Config,
    vips: &[std::net::IpAddr],
) -> anyhow::Result<Vec<Prefix>> {
    let sources = director_sources(config, &args.decap_sources);
    if sources.is_empty() && !vips.is_empty() {
        anyhow::bail!(
            "{}: no director tunnel source is known, so every tunnelled packet would be refused: set tun_source in the TUN virtual_servers (or lvs_tun_source in global_defs) as the directors use, or pass --decap-source ADDR[/LEN]",
            args.config.display()
        );
    }
    Ok(sources)
}

/// `items` as a comma-separated list ("none" when empty).
fn list(items: &[Prefix]) -> String {
    if items.is_empty() {
        return "none".to_owned();
    }
    items
        .iter()
        .map(Prefix::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The VIPs of the TUN services.
fn tun_vips(config: &Config) -> Vec<std::net::IpAddr> {
    let mut vips: Vec<_> = config
        .virtual_servers
        .iter()
        .filter(|vs| vs.forwards_by(ForwardMethod::Tun) && vs.fwmark.is_none())
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
    mut dumps: dump::Signals,
) -> anyhow::Result<()> {
    if config.vrrp_instances.is_empty() {
        anyhow::bail!("-P/--vrrp: the configuration has no vrrp_instance");
    }
    let mut running = config;
    let mut alerts = Alerts::start(&running);
    let mut vrrp = Vrrp::start(&running, Default::default());
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
        status::UpkeepTable::default(),
        None,
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
                    alerts.reconfigure(&running);
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
                alerts.vrrp_change(&change);
                control.write_status();
            }
            asked = dumps.next() => {
                let checks = status::CheckTable::default();
                dump::answer(asked, dump::Snapshot::take(&running, &vrrp.table(), &checks, None));
            }
        }
    }
    let _ = daemon::notify("STOPPING=1");
    vrrp.stop().await;
    control.write_status();
    alerts.stop().await;
    Ok(())
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
    upkeep: status::UpkeepTable,
    sync: Option<lb_userspace::sync::SyncSource>,
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
        upkeep,
        sync,
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
