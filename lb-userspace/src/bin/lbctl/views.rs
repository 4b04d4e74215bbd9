//! lbctl's views: read the pinned maps (or ask lbd), print text or JSON.

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use lb_userspace::{
    api::{Change, Request, Response, ServiceRef, client},
    dataplane::{Counters, xdp::dump},
    status::{self, Status, now_unix_ms},
    view::{
        ipvsadm::{self, Columns, ListJson},
        status as status_view,
    },
};

use crate::{Args, Failure, source::Source};

fn print_json(value: &impl serde::Serialize) -> Result<(), Failure> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// Only `service`'s entry, when one is given (ipvsadm -L -t ...); an unknown service is
/// an error, as in ipvsadm.
fn filter(mut counters: Counters, service: Option<ServiceRef>) -> Result<Counters, Failure> {
    if let Some(s) = service {
        counters.services.retain(|c| c.id() == s.id());
        if counters.services.is_empty() {
            return Err(Failure {
                message: format!("no virtual service {s}"),
                code: 1,
            });
        }
    }
    Ok(counters)
}

/// `-L` with `--stats`, `--rate`, `--thresholds`, `--exact`.
pub fn list(args: &Args, service: Option<ServiceRef>) -> Result<(), Failure> {
    let source = Source::open(args)?;
    let counters = if args.rate {
        let first = source.counters()?;
        let started = Instant::now();
        std::thread::sleep(Duration::from_secs_f64(args.interval.clamp(0.1, 60.0)));
        let second = source.counters()?;
        ipvsadm::rates(&first, &second, started.elapsed())
    } else {
        source.counters()?
    };
    let counters = filter(counters, service)?;
    if args.json {
        return print_json(&ListJson::of(&counters));
    }
    let columns = if args.stats {
        Columns::Stats
    } else if args.rate {
        Columns::Rate
    } else if args.thresholds {
        Columns::Thresholds
    } else {
        Columns::Table
    };
    let header = service.is_none().then(|| source.header(args));
    print!(
        "{}",
        ipvsadm::list(&counters, header.as_deref(), columns, args.exact)
    );
    Ok(())
}

/// `-Lc`, for one service with -t/-u/-f, one real with --real.
pub fn connections(args: &Args, service: Option<ServiceRef>) -> Result<(), Failure> {
    let source = Source::open(args)?;
    let mut all = source.connections(args.limit)?;
    match service {
        // The connection table does not name the mark: a firewall-mark service's
        // connections are those to its reals.
        Some(s) if s.fwmark.is_some() => {
            let counters = filter(source.counters()?, Some(s))?;
            let reals: Vec<_> = counters.services[0].reals.iter().map(|r| r.addr).collect();
            all.retain(|c| reals.contains(&c.real.ip()));
        }
        Some(s) => all.retain(|c| {
            c.vip.ip() == s.addr && c.vip.port() == s.port && c.protocol == s.protocol()
        }),
        None => {}
    }
    if let Some(real) = &args.real {
        let real = crate::endpoint(real)?;
        all.retain(|c| {
            c.real.ip() == real.ip() && (real.port() == 0 || c.real.port() == real.port())
        });
    }
    if args.json {
        return print_json(&all);
    }
    print!("{}", ipvsadm::connections(&all));
    Ok(())
}

/// lbd's status: asked over the socket, else the file it wrote last (with a note).
fn status(args: &Args) -> Result<Status, Failure> {
    match client::call(&args.socket(), &Request::Status) {
        Ok(Response::Status { status }) => Ok(*status),
        Ok(other) => Err(Failure {
            message: format!("unexpected answer from lbd: {other:?}"),
            code: 1,
        }),
        Err(client::ClientError::Connect { .. }) => {
            let path = status::status_file(&args.run_dir());
            let status = status::read_status(&path).map_err(|e| Failure {
                message: format!("lbd is not running, and its status file cannot be read: {e}"),
                code: 1,
            })?;
            eprintln!(
                "lbd is not running: its last status, {} ago (from {})",
                status_view::ago(status.taken_unix_ms, now_unix_ms()),
                path.display()
            );
            Ok(status)
        }
        Err(e) => Err(e.into()),
    }
}

fn warn_unsaved(status: &Status) {
    for change in &status.unsaved_changes {
        eprintln!(
            "note: runtime change not in {}: {change}",
            status.config_file
        );
    }
}

pub fn vrrp(args: &Args) -> Result<(), Failure> {
    let status = status(args)?;
    if args.json {
        return print_json(&status.vrrp);
    }
    print!("{}", status_view::vrrp(&status.vrrp, now_unix_ms()));
    Ok(())
}

pub fn checks(args: &Args) -> Result<(), Failure> {
    let status = status(args)?;
    if args.json {
        return print_json(&status.checks);
    }
    warn_unsaved(&status);
    print!("{}", status_view::checks(&status.checks, now_unix_ms()));
    Ok(())
}

pub fn sync(args: &Args) -> Result<(), Failure> {
    let status = status(args)?;
    if args.json {
        return print_json(&status.sync);
    }
    print!("{}", status_view::sync(status.sync.as_ref(), now_unix_ms()));
    Ok(())
}

pub fn map_list(args: &Args) -> Result<(), Failure> {
    let maps = Source::maps(args)?;
    let list = dump::list(&args.pin_dir(), maps.maps())?;
    if args.json {
        return print_json(&list);
    }
    print!("{}", status_view::map_list(&list));
    Ok(())
}

pub fn map_dump(args: &Args, name: &str) -> Result<(), Failure> {
    let maps = Source::maps(args)?;
    let entries = dump::dump(maps.maps(), name)?;
    if args.json {
        return print_json(&entries);
    }
    for entry in entries {
        println!("{}", serde_json::to_string(&entry)?);
    }
    Ok(())
}

/// The real `real` of `service` in `counters`: its active and inactive connections.
fn real_conns(counters: &Counters, service: ServiceRef, real: SocketAddr) -> Option<(u32, u32)> {
    let s = counters.services.iter().find(|c| c.id() == service.id())?;
    s.reals
        .iter()
        .filter(|r| {
            r.addr == real.ip() && (real.port() == 0 || r.port == real.port() || r.port == s.port)
        })
        .map(|r| (r.active_conns, r.inactive_conns))
        .next()
}

/// Weight 0, then wait (reading the maps) until no active connection is left.
pub fn drain(
    args: &Args,
    service: ServiceRef,
    real: SocketAddr,
    timeout_secs: u64,
) -> Result<(), Failure> {
    let change = Change::EditReal {
        service,
        real,
        weight: 0,
    };
    match client::call(&args.socket(), &Request::Change { change })? {
        Response::Done { message } => eprintln!("{message}"),
        Response::Refused { error } => {
            return Err(Failure {
                message: error,
                code: 1,
            });
        }
        Response::Status { .. } => {}
    }
    let source = Source::open(args)?;
    let deadline = Instant::now() + Duration::from_secs(timeout_secs);
    let mut last = None;
    loop {
        let counters = source.counters()?;
        let Some((active, inactive)) = real_conns(&counters, service, real) else {
            return Err(Failure {
                message: format!("real server {real} is not in {service}"),
                code: 1,
            });
        };
        if last != Some((active, inactive)) {
            eprintln!("{real}: {active} active, {inactive} inactive connection(s)");
            last = Some((active, inactive));
        }
        if active == 0 {
            if args.json {
                println!(
                    "{}",
                    serde_json::json!({"drained": real.to_string(), "inactive": inactive})
                );
            } else {
                println!("{real} of {service} is drained: no active connection, no new ones");
            }
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(Failure {
                message: format!(
                    "{real} still has {active} active connection(s) after {timeout_secs} s; its weight stays 0"
                ),
                code: 1,
            });
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}
