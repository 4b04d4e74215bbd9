//! Starting the data plane `--dataplane` asks for (on the data-plane thread): XDP loaded,
//! programmed with the configuration and attached, or the kernel's IPVS; `auto` falls back
//! from XDP to IPVS with a warning. Also what NAT needs of the kernel's settings.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use lb_userspace::{
    check::health::Overlay,
    controller::Controller,
    dataplane::{
        ApplyReport, Dataplane as _,
        actor::log_report,
        backend::{
            Backend, DataplaneChoice, DataplaneKind, DataplaneStatus, ipvs_refusal, xdp_refusal,
        },
        ipvs::IpvsDataplane,
        xdp::{XdpDataplane, XdpOptions, pin_dir},
    },
    model::Config,
    nexthop::KernelNextHops,
    sync::{self, SyncHandle},
};
use tracing::{info, warn};

use crate::Args;

/// How long a real's ARP/NDP probe may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// A data plane programmed with the configuration, besides its controller.
pub struct Started {
    /// The interfaces XDP is attached to (none for IPVS).
    pub interfaces: Vec<String>,
    pub status: DataplaneStatus,
    /// The connection sync daemon (`lvs_sync_daemon`, XDP only), in no role yet.
    pub sync: Option<SyncHandle>,
}

/// What the data-plane thread starts with.
pub type Start = (Controller<Backend>, ApplyReport, Started);

/// The data plane `--dataplane` asks for, programmed with `config`: XDP attached to its
/// interfaces, or IPVS; `auto` falls back from XDP to IPVS with a warning.
pub fn start_dataplane(args: &Args, config: Config, overlay: Overlay) -> anyhow::Result<Start> {
    let refusal = ipvs_refusal(&config);
    let only_ipvs = xdp_refusal(&config);
    match args.dataplane {
        DataplaneChoice::Xdp => match only_ipvs {
            Some(only_ipvs) => anyhow::bail!("{}: {only_ipvs}", args.config.display()),
            None => start_xdp(args, config, overlay),
        },
        DataplaneChoice::Ipvs => match refusal {
            Some(refusal) => anyhow::bail!("{}: {refusal}", args.config.display()),
            None => start_ipvs(config, overlay, None),
        },
        DataplaneChoice::Auto => {
            if let Some(only_ipvs) = only_ipvs {
                if let Some(refusal) = refusal {
                    anyhow::bail!("{}: {only_ipvs}; {refusal}", args.config.display());
                }
                warn!("{only_ipvs}: using the kernel's IPVS");
                return start_ipvs(config, overlay, Some(only_ipvs));
            }
            let xdp_error = match start_xdp(args, config.clone(), overlay.clone()) {
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
            start_ipvs(config, overlay, Some(reason.clone())).with_context(|| {
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
    overlay: Overlay,
    fallback_reason: Option<String>,
) -> anyhow::Result<Start> {
    let mut ipvs = IpvsDataplane::open()?;
    if config.lvs_flush {
        // As keepalived: every service goes, whoever made it, before lbd's are added.
        match ipvs.flush() {
            Ok(()) => info!("lvs_flush: removed every IPVS service"),
            Err(e) => warn!("lvs_flush: {e}"),
        }
    }
    // As keepalived: the kernel's own daemon syncs IPVS's connections. One that cannot
    // start leaves lbd balancing, and says why.
    let sync = config.lvs_sync_daemon.as_ref().and_then(|settings| {
        match sync::start_kernel(settings) {
            Ok(kernel) => {
                info!(
                    "connection sync by the kernel's daemon on {} ({} port {}, sync id {}), following {}",
                    settings.interface,
                    settings.group,
                    settings.port,
                    settings.syncid,
                    settings.vrrp_instance.as_deref().unwrap_or("no VRRP instance (master and backup)")
                );
                Some(SyncHandle::Kernel(kernel))
            }
            Err(e) => {
                warn!("lvs_sync_daemon: {e:#}; connections are not synced");
                None
            }
        }
    });
    let mut controller = Controller::new(Backend::Ipvs(ipvs));
    let report = controller.apply_with(config, overlay)?;
    log_report(&report, &ApplyReport::default());
    info!("data plane: the kernel's IPVS");
    let started = Started {
        interfaces: Vec::new(),
        status: DataplaneStatus {
            kind: DataplaneKind::Ipvs,
            fallback_reason,
        },
        sync,
    };
    Ok((controller, report, started))
}

/// The XDP programs, loaded, programmed with `config` and attached (to `--interface`s,
/// else to the VRRP instances' interfaces and those the reals are reached through).
/// Nothing stays attached when this fails.
fn start_xdp(args: &Args, config: Config, overlay: Overlay) -> anyhow::Result<Start> {
    if config.lvs_flush {
        // What keepalived left in the kernel's IPVS would take the traffic XDP passes on.
        flush_ipvs("lvs_flush");
    }
    let resolver = KernelNextHops::new(PROBE_TIMEOUT).context("rtnetlink")?;
    let options = XdpOptions {
        pin_dir: Some(pin_dir(&args.name)),
        flow_table_size: args.flow_table_size,
        sched_table_entries: args.sched_table_entries,
        persist_table_size: lb_common::PERSIST_TABLE_SIZE,
        fnat_ports: args.fnat_ports,
        answer_echo: args.answer_ping,
        sweep_interval: Duration::from_secs(args.sweep_interval.max(1)),
        sync_events: config.lvs_sync_daemon.is_some(),
    };
    let mut dataplane = XdpDataplane::load(&options, resolver)?;
    for warning in &dataplane.load_warnings {
        warn!("{warning}");
    }
    // A sync daemon that cannot start leaves lbd balancing, as keepalived does when the
    // kernel refuses its daemon; failovers then reschedule connections.
    let sync = config.lvs_sync_daemon.as_ref().and_then(|settings| {
        let resync_wait = Duration::from_secs(args.resync_wait);
        match sync::start(settings, config.lvs_timeouts, resync_wait, &mut dataplane) {
            Ok(runner) => {
                info!(
                    "connection sync on {} ({} port {}, sync id {}), following {}",
                    settings.interface,
                    settings.group,
                    settings.port,
                    settings.syncid,
                    settings
                        .vrrp_instance
                        .as_deref()
                        .unwrap_or("no VRRP instance")
                );
                Some(SyncHandle::Lbd(runner))
            }
            Err(e) => {
                warn!("lvs_sync_daemon: {e:#}; connections are not synced");
                None
            }
        }
    });
    let mut controller = Controller::new(Backend::Xdp(Box::new(dataplane)));
    let report = controller.apply_with(config, overlay)?;
    let report = settle(&mut controller, report)?;
    log_report(&report, &ApplyReport::default());
    let interfaces = match xdp_interfaces(args, &mut controller) {
        Ok(interfaces) => interfaces,
        Err(e) => {
            let _ = controller.dataplane_mut().stop();
            return Err(e);
        }
    };
    let started = Started {
        interfaces,
        status: DataplaneStatus {
            kind: DataplaneKind::Xdp,
            fallback_reason: None,
        },
        sync,
    };
    Ok((controller, report, started))
}

/// Remove every service of the kernel's IPVS, if it has IPVS (`lvs_flush` at start,
/// `lvs_flush_on_stop` at stop, named by `why`), saying what happened.
pub fn flush_ipvs(why: &str) {
    match lb_userspace::dataplane::ipvs::flush_if_present() {
        Ok(true) => info!("{why}: removed every IPVS service"),
        Ok(false) => {}
        Err(e) => warn!("{why}: {e}"),
    }
}

/// At start, reals whose next hop is being resolved get the probe's time to answer
/// before lbd says it is ready (this runs on the data-plane thread, before it serves).
fn settle(
    controller: &mut Controller<Backend>,
    mut report: ApplyReport,
) -> anyhow::Result<ApplyReport> {
    let deadline = Instant::now() + PROBE_TIMEOUT + Duration::from_millis(100);
    while let Some(at) = report.retry_at.filter(|at| *at <= deadline) {
        std::thread::sleep(at.saturating_duration_since(Instant::now()));
        report = controller.refresh()?;
    }
    Ok(report)
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
        let attached = xdp.attach(interface, args.xdp_mode)?;
        if let Some(reason) = &attached.fallback {
            warn!(
                "native XDP failed on {interface} ({reason}); using generic mode, which is slower"
            );
        }
        match attached.native {
            None => info!(
                "adopted the XDP program running on {interface} (its link was pinned by an earlier lbd): this lbd's program replaced it atomically"
            ),
            Some(native) => info!(
                "attached to {interface} in {} mode",
                if native { "native" } else { "generic" }
            ),
        }
    }
    for interface in xdp.detach_others()? {
        info!("detached from {interface}, where an earlier lbd had attached");
    }
    Ok(interfaces)
}

/// What NAT needs of the kernel's settings on data plane `kind`. XDP hands translated
/// replies to the kernel to route: it must forward IP, accept packets whose source (the
/// VIP) is one of its own addresses, and not filter them by reverse path. IPVS translates
/// replies on the forward path: it must forward IP.
pub fn nat_forwarding_warnings(config: &Config, kind: DataplaneKind) -> Vec<String> {
    let nat = |v4: bool| {
        config
            .virtual_servers
            .iter()
            .any(|vs| vs.translates_replies() && vs.addr.is_ipv4() == v4)
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
