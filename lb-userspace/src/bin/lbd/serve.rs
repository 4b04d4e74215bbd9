//! lbd balancing: the control plane's one event loop. It never waits for the data plane:
//! the data plane runs on a thread of its own (`dataplane::actor`), VRRP on another
//! (`vrrp`); this loop takes signals, lbctl's requests, the checkers' verdicts, VRRP's state
//! changes and the neighbour table's changes, and sends the data plane what to do.
//!
//! A configuration change (a reload, an lbctl change) is in flight until the data plane
//! answers: meanwhile further changes and checker verdicts wait in their queues, so that
//! each change starts from the configuration that runs; lbctl's other requests (status,
//! zeroing) are answered at once.

use std::{collections::VecDeque, time::Duration};

use lb_userspace::{
    alert::Alerts,
    api::{Request, Response, server::Call},
    check::{health::Health, supervisor::Checks},
    dataplane::{
        ApplyReport, DataplaneError,
        actor::{DataplaneHandle, Pacing},
        backend::{DataplaneKind, ipvs_refusal, xdp_refusal},
        xdp::pin_dir,
    },
    dump, metrics,
    model::Config,
    neighbour_events::NeighbourEvents,
    status::UpkeepTable,
    vrrp::{self, Vrrp},
};
use tokio::{signal::unix::Signal, sync::oneshot};
use tracing::{error, info, warn};

use crate::{
    Args,
    control::{Control, Prepared},
    load_config, log_diagnostics, run_dir,
    start::{Started, nat_forwarding_warnings, start_dataplane},
    start_metrics,
};

/// How long after a change of a real's neighbour entry its next hop is resolved again.
const NEIGHBOUR_CHANGE_DELAY: Duration = Duration::from_millis(50);

/// A configuration the data plane was asked to run, and why.
struct InFlight {
    config: Config,
    health: Health,
    why: Why,
    reply: oneshot::Receiver<Result<ApplyReport, DataplaneError>>,
}

enum Why {
    Reload,
    /// An lbctl change, described by `done`, to answer on `answer`.
    Change {
        done: String,
        answer: oneshot::Sender<Response>,
    },
}

/// Balance `config` until SIGTERM or SIGINT.
pub async fn run(
    args: &Args,
    config: Config,
    [mut terminate, mut interrupt, mut hangup]: [Signal; 3],
    mut dumps: dump::Signals,
) -> anyhow::Result<()> {
    let mut alerts = Alerts::start(&config);
    let mut checks = Checks::start(&config, alerts.mailer());
    let services = config.virtual_servers.len();
    let reals: usize = config.virtual_servers.iter().map(|vs| vs.reals.len()).sum();
    let upkeep = UpkeepTable::default();
    let pacing = Pacing {
        refresh_interval: Duration::from_secs(args.refresh_interval.max(1)),
        upkeep: upkeep.clone(),
    };
    // Following the neighbour table starts before the data plane reads it, so that no
    // change between its reading and lbd saying ready is missed.
    let neighbour_events = NeighbourEvents::subscribe();
    let (start_args, start_config, overlay) = (args.clone(), config.clone(), checks.overlay());
    let (
        dataplane,
        Started {
            interfaces,
            status,
            sync,
        },
    ) = DataplaneHandle::spawn(pacing, move || {
        start_dataplane(&start_args, start_config, overlay)
    })
    .await?;
    let mut running = config;
    for warning in nat_forwarding_warnings(&running, status.kind) {
        warn!("{warning}");
    }
    // A change of a real's neighbour entry has its next hop resolved again soon (the delay
    // gathers the changes of one moment into one refresh). Lost events (a full socket
    // buffer) are taken as a change. Next hops are XDP's: IPVS resolves on its own.
    let mut neighbours = match (status.kind == DataplaneKind::Xdp, neighbour_events) {
        (false, _) => None,
        (true, Ok(events)) => Some(events),
        (true, Err(e)) => {
            warn!(
                "cannot follow the neighbour table ({e}); next hops are refreshed every {} s only",
                args.refresh_interval
            );
            None
        }
    };
    let pins = pin_dir(&args.name);
    match status.kind {
        DataplaneKind::Xdp => info!(
            "ready: {services} virtual service(s), {reals} real server(s), maps pinned under {}",
            pins.display()
        ),
        DataplaneKind::Ipvs => info!(
            "ready: {services} virtual service(s), {reals} real server(s) in the kernel's IPVS"
        ),
    }
    // A returning director preempts only once the connection sync has the master's
    // connections.
    let hold = sync
        .as_ref()
        .map(|runner| runner.preemption_hold())
        .unwrap_or_default();
    let mut vrrp = Vrrp::start(&running, hold);
    let mut control = Control::start(
        &run_dir(args),
        &args.name,
        &args.config,
        Some(status.clone()),
        vrrp.table(),
        checks.table(),
    );
    let counters = match status.kind {
        DataplaneKind::Xdp => metrics::CounterSource::Pinned(pins.clone()),
        DataplaneKind::Ipvs => metrics::CounterSource::Ipvs,
    };
    let sync_source =
        sync.as_ref()
            .zip(running.lvs_sync_daemon.as_ref())
            .map(|(runner, settings)| lb_userspace::sync::SyncSource {
                settings: settings.clone(),
                status: runner.status_source(),
            });
    if let Some(source) = &sync_source {
        control.follow_sync(source.clone());
    }
    let _metrics = start_metrics(
        args,
        counters,
        vrrp.table(),
        checks.table(),
        upkeep,
        sync_source.clone(),
    )
    .await?;
    if let Err(e) = lb_userspace::daemon::notify("READY=1") {
        warn!("cannot tell systemd lbd is ready: {e}");
    }

    let mut tick = tokio::time::interval(Duration::from_secs(args.refresh_interval.max(1)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    let mut soon: Option<tokio::time::Instant> = None;
    let mut in_flight: Option<InFlight> = None;
    let mut reload_wanted = false;
    // lbctl changes that came while another change was in flight.
    let mut changes_waiting: VecDeque<Call> = VecDeque::new();
    loop {
        if in_flight.is_none() {
            if reload_wanted {
                reload_wanted = false;
                in_flight = start_reload(args, &running, &checks, &dataplane, status.kind);
            } else if let Some((request, answer)) = changes_waiting.pop_front() {
                in_flight = serve_request(request, answer, &control, &running, &checks, &dataplane);
            }
        }
        tokio::select! {
            changed = next_change(&mut neighbours) => {
                let relevant = match changed {
                    Ok(addrs) => is_real(&running, &addrs),
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
                dataplane.refresh();
            }
            _ = terminate.recv() => { info!("SIGTERM: stopping"); break; }
            _ = interrupt.recv() => { info!("SIGINT: stopping"); break; }
            _ = hangup.recv() => {
                info!("SIGHUP: reloading {}", args.config.display());
                reload_wanted = true;
            }
            result = answer_of(&mut in_flight) => {
                let flight = in_flight.take().expect("an answer comes for a change in flight");
                finish(flight, result, &mut running, &mut checks, &mut control, &mut vrrp).await;
                alerts.reconfigure(&running);
            }
            (request, answer) = control.next() => {
                if in_flight.is_some() && matches!(request, Request::Change { .. }) {
                    changes_waiting.push_back((request, answer));
                } else if let Some(flight) =
                    serve_request(request, answer, &control, &running, &checks, &dataplane)
                {
                    in_flight = Some(flight);
                }
            }
            change = vrrp.next_change() => {
                if change.own_fault.is_none() {
                    info!("VRRP: {} is {}", change.instance, vrrp::state_name(change.state));
                    checks.follow_addresses(&running);
                    if let (Some(sync), Some(source)) = (&sync, &sync_source)
                        && source.settings.vrrp_instance.as_deref() == Some(&change.instance)
                    {
                        sync.set_role(lb_userspace::sync::role_of(change.state));
                    }
                }
                alerts.vrrp_change(&change);
                control.write_status();
            }
            asked = dumps.next() => {
                let dataplane = match status.kind {
                    DataplaneKind::Xdp => "XDP",
                    DataplaneKind::Ipvs => "IPVS",
                };
                let snapshot =
                    dump::Snapshot::take(&running, &vrrp.table(), &checks.table(), Some(dataplane));
                dump::answer(asked, snapshot);
            }
            report = checks.next(), if in_flight.is_none() => {
                checks.record(report);
                control.write_status();
                dataplane.set_overlay(checks.overlay());
            }
            _ = tick.tick() => {
                checks.follow_addresses(&running);
                control.write_status();
            }
        }
    }
    let _ = lb_userspace::daemon::notify("STOPPING=1");
    // Hand the addresses over first (priority 0), then stop balancing.
    vrrp.stop().await;
    control.write_status();
    checks.shutdown(&running).await;
    alerts.stop().await;
    dataplane.stop(args.dont_release).await?;
    // keepalived's `lvs_flush_on_stop`: without VS, every IPVS service goes, whoever made
    // it (with VS, and by default, lbd's own went with the data plane's stop).
    if !args.dont_release
        && running.lvs_flush_on_stop == Some(lb_config::model::LvsFlushOnStop::Full)
    {
        crate::start::flush_ipvs("lvs_flush_on_stop");
    }
    match (status.kind, args.dont_release) {
        (DataplaneKind::Xdp, false) => info!(
            "detached from {}; maps stay pinned under {} (a restart keeps established flows)",
            interfaces.join(", "),
            pins.display()
        ),
        (DataplaneKind::Xdp, true) => info!(
            "left the balancer attached to {} (--dont-release-ipvs): it forwards with the maps under {} until the next lbd adopts it",
            interfaces.join(", "),
            pins.display()
        ),
        (DataplaneKind::Ipvs, false) => info!("removed lbd's virtual services from IPVS"),
        (DataplaneKind::Ipvs, true) => {
            info!("left lbd's virtual services in IPVS (--dont-release-ipvs)")
        }
    }
    Ok(())
}

/// An lbctl request: answered now, or a change sent to the data plane (in flight).
fn serve_request(
    request: Request,
    answer: oneshot::Sender<Response>,
    control: &Control,
    running: &Config,
    checks: &Checks,
    dataplane: &DataplaneHandle,
) -> Option<InFlight> {
    match control.prepare(request, running, checks) {
        Prepared::Answer(response) => {
            let _ = answer.send(response);
            None
        }
        Prepared::Zero { service } => {
            let zeroed = dataplane.zero(service);
            tokio::spawn(async move {
                let result = match zeroed.await {
                    Ok(result) => result.map_err(|e| e.to_string()),
                    Err(_) => Err("the data plane has stopped".to_owned()),
                };
                let _ = answer.send(Control::zeroed(service, result));
            });
            None
        }
        Prepared::Change {
            config,
            health,
            done,
        } => {
            let reply = dataplane.apply((*config).clone(), health.overlay());
            Some(InFlight {
                config: *config,
                health,
                why: Why::Change { done, answer },
                reply,
            })
        }
    }
}

/// SIGHUP: the file read again and sent to the data plane; a bad file is reported and the
/// running configuration stays.
fn start_reload(
    args: &Args,
    running: &Config,
    checks: &Checks,
    dataplane: &DataplaneHandle,
    kind: DataplaneKind,
) -> Option<InFlight> {
    let loaded = match load_config(args) {
        Ok(loaded) => loaded,
        Err(e) => {
            error!("reload rejected, the running configuration stays: {e}");
            return None;
        }
    };
    log_diagnostics(&loaded.warnings);
    let refusal = match kind {
        DataplaneKind::Xdp => xdp_refusal(&loaded.config)
            .map(|r| format!("{r}; lbd runs on XDP: a restart changes the data plane")),
        DataplaneKind::Ipvs => ipvs_refusal(&loaded.config)
            .map(|r| format!("{r}; lbd runs on IPVS: a restart changes the data plane")),
    };
    if let Some(refusal) = refusal {
        error!("reload rejected, the running configuration stays: {refusal}");
        return None;
    }
    for warning in nat_forwarding_warnings(&loaded.config, kind) {
        warn!("{warning}");
    }
    let health = checks.health_for(running, &loaded.config);
    let reply = dataplane.apply(loaded.config.clone(), health.overlay());
    Some(InFlight {
        config: loaded.config,
        health,
        why: Why::Reload,
        reply,
    })
}

/// The data plane answered `flight`: adopt its configuration if it runs now.
async fn finish(
    flight: InFlight,
    result: Result<ApplyReport, DataplaneError>,
    running: &mut Config,
    checks: &mut Checks,
    control: &mut Control,
    vrrp: &mut Vrrp,
) {
    let InFlight {
        config,
        health,
        why,
        ..
    } = flight;
    match (why, result) {
        (Why::Reload, Ok(report)) => {
            checks.adopt(&config, health);
            for change in &report.changes {
                info!("reload: {change}");
            }
            if config.lvs_sync_daemon != running.lvs_sync_daemon {
                warn!(
                    "reload: lvs_sync_daemon changed; the sync daemon keeps its settings until lbd restarts"
                );
            }
            *running = config;
            control.reloaded();
            info!(
                "reload applied: {} virtual services",
                running.virtual_servers.len()
            );
            for name in vrrp.update(running).await {
                info!("reload: VRRP instance {name} (re)started or stopped");
            }
        }
        (Why::Reload, Err(e)) => {
            error!("reload rejected by the data plane, the running configuration stays: {e}");
        }
        (Why::Change { done, answer }, Ok(report)) => {
            checks.adopt(&config, health);
            for change in &report.changes {
                info!("lbctl: {change}");
            }
            *running = config;
            let _ = answer.send(control.changed(&done));
        }
        (Why::Change { answer, .. }, Err(e)) => {
            let _ = answer.send(Response::Refused {
                error: format!("the data plane refused the change, nothing changed: {e}"),
            });
        }
    }
}

/// The data plane's answer to the change in flight (never, without one).
async fn answer_of(flight: &mut Option<InFlight>) -> Result<ApplyReport, DataplaneError> {
    match flight {
        Some(flight) => (&mut flight.reply).await.unwrap_or_else(|_| {
            Err(DataplaneError::Thread {
                reason: "the data-plane thread has ended".into(),
            })
        }),
        None => std::future::pending().await,
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
