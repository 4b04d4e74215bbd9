//! lbctl: inspect and control lbd the way ipvsadm inspects and controls IPVS.
//!
//! Read-only views (`-Ln`, `--stats`, `--rate`, `-Lnc`, `map list|dump`) read the maps
//! pinned under /sys/fs/bpf/NAME directly (or, when lbd runs on IPVS, the kernel's IPVS
//! as ipvsadm does), so they work while lbd is stopped. Changes
//! (`-A -E -D -a -e -d -Z`, `drain`) go through lbd's control socket; `vrrp` and `checks`
//! ask lbd, or read its last status file when it is not running.

mod source;
mod views;

use std::{net::SocketAddr, path::PathBuf, process::ExitCode};

use clap::{ArgGroup, CommandFactory as _, Parser, Subcommand};
use lb_userspace::{
    api::{Change, Request, Response, ServiceProtocol, ServiceRef, client},
    dataplane::backend::DataplaneKind,
};

#[derive(Debug, Parser)]
#[command(
    name = "lbctl",
    version,
    about = "Inspect and control lbd, the XDP load balancer, with ipvsadm's options",
    group(ArgGroup::new("command").args(["list", "add_service", "edit_service", "delete_service", "add_server", "edit_server", "delete_server", "zero"])),
    group(ArgGroup::new("forward").args(["gatewaying", "ipip", "masquerading"])),
)]
pub struct Args {
    /// lbd's instance name (`lbd --name`): maps under /sys/fs/bpf/NAME, control socket
    /// under /run/lbd/NAME.
    #[arg(long, default_value = "lbd", global = true)]
    name: String,
    /// Where the maps are pinned (default /sys/fs/bpf/NAME).
    #[arg(long, value_name = "DIR", global = true)]
    pin_dir: Option<PathBuf>,
    /// lbd's run directory (default /run/lbd/NAME).
    #[arg(long, value_name = "DIR", global = true)]
    run_dir: Option<PathBuf>,
    /// Print JSON instead of text.
    #[arg(long, global = true)]
    json: bool,
    /// Read the XDP data plane's pinned maps or the kernel's IPVS. Default: the one lbd
    /// runs (its status file says), else XDP when maps are pinned, else IPVS.
    #[arg(long, value_enum, global = true)]
    dataplane: Option<DataplaneKind>,

    /// List the virtual services and their reals (the default command).
    #[arg(short = 'L', visible_short_alias = 'l', long = "list")]
    list: bool,
    /// Add a virtual service.
    #[arg(short = 'A', long = "add-service")]
    add_service: bool,
    /// Change a virtual service's scheduler or persistence.
    #[arg(short = 'E', long = "edit-service")]
    edit_service: bool,
    /// Delete a virtual service.
    #[arg(short = 'D', long = "delete-service")]
    delete_service: bool,
    /// Add a real server to a virtual service.
    #[arg(short = 'a', long = "add-server")]
    add_server: bool,
    /// Change a real server's weight.
    #[arg(short = 'e', long = "edit-server")]
    edit_server: bool,
    /// Delete a real server.
    #[arg(short = 'd', long = "delete-server")]
    delete_server: bool,
    /// Zero the packet, byte and connection counters (of one service with -t/-u).
    #[arg(short = 'Z', long = "zero")]
    zero: bool,

    #[command(flatten)]
    service: ServiceArgs,
    /// A real server, ADDR[:PORT].
    #[arg(short = 'r', long = "real-server", value_name = "SERVER")]
    real_server: Option<String>,
    /// Scheduler: rr wrr lc wlc sh dh sed nq mh (default wlc).
    #[arg(short = 's', long)]
    scheduler: Option<String>,
    /// Persistent service, with a timeout in seconds (0 turns it off; default 300).
    #[arg(short = 'p', long = "persistent", value_name = "TIMEOUT", num_args = 0..=1, default_missing_value = "300")]
    persistent: Option<u32>,
    /// Direct routing (DR; the default).
    #[arg(short = 'g', long)]
    gatewaying: bool,
    /// IP-in-IP tunnelling (TUN).
    #[arg(short = 'i', long)]
    ipip: bool,
    /// Masquerading (NAT).
    #[arg(short = 'm', long)]
    masquerading: bool,
    /// Real server weight (0..=65535; default 1).
    #[arg(short = 'w', long)]
    weight: Option<u32>,

    /// Numeric output (lbctl never resolves names; accepted for ipvsadm's habits).
    #[arg(short = 'n', long)]
    numeric: bool,
    /// List the connections (the flow table) instead.
    #[arg(short = 'c', long = "connection")]
    connection: bool,
    /// Show packet, byte and connection counters.
    #[arg(long, conflicts_with = "rate")]
    stats: bool,
    /// Show each real's connection limits (uthreshold, lthreshold) with its connections.
    #[arg(long, conflicts_with_all = ["stats", "rate"])]
    thresholds: bool,
    /// Show rates per second, from two readings `--interval` apart.
    #[arg(long)]
    rate: bool,
    /// Seconds between the two readings of --rate.
    #[arg(long, default_value_t = 1.0)]
    interval: f64,
    /// Exact numbers, without K/M/G units.
    #[arg(long = "exact")]
    exact: bool,
    /// -c: only the connections to this real server (ADDR[:PORT]).
    #[arg(long, value_name = "SERVER")]
    real: Option<String>,
    /// -c: at most this many connections.
    #[arg(long, default_value_t = 100_000)]
    limit: usize,

    /// Write lbctl's man page and shell completions into DIR, then exit.
    #[arg(long, value_name = "DIR", hide = true)]
    write_docs: Option<PathBuf>,

    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// VRRP instances: state, priority, master, VIPs, counters.
    Vrrp,
    /// Health checkers of each real: verdict, since when, last result, failures.
    Checks,
    /// Connection sync (lvs_sync_daemon): role, messages and connections sent and
    /// received, connections installed and refused, errors.
    Sync,
    /// The pinned maps, raw (for debugging).
    Map {
        #[command(subcommand)]
        command: MapCommand,
    },
    /// Set a real's weight to 0 and wait until its active connections reach 0.
    Drain {
        #[command(flatten)]
        service: ServiceArgs,
        /// The real server, ADDR[:PORT].
        #[arg(short = 'r', long = "real-server", value_name = "SERVER")]
        real_server: String,
        /// Give up after this many seconds (the weight stays 0).
        #[arg(long, default_value_t = 300)]
        timeout: u64,
    },
}

/// ipvsadm's ways to name a virtual service.
#[derive(Debug, clap::Args)]
struct ServiceArgs {
    /// A TCP virtual service, VIP:PORT ([VIP6]:PORT).
    #[arg(
        short = 't',
        long = "tcp-service",
        value_name = "SERVICE",
        conflicts_with_all = ["udp_service", "fwmark_service"]
    )]
    tcp_service: Option<String>,
    /// A UDP virtual service.
    #[arg(
        short = 'u',
        long = "udp-service",
        value_name = "SERVICE",
        conflicts_with = "fwmark_service"
    )]
    udp_service: Option<String>,
    /// A firewall-mark virtual service (`virtual_server fwmark MARK`).
    #[arg(short = 'f', long = "fwmark-service", value_name = "MARK")]
    fwmark_service: Option<u32>,
    /// With -f: the IPv6 service of that mark.
    #[arg(short = '6', long = "ipv6", requires = "fwmark_service")]
    ipv6: bool,
}

impl ServiceArgs {
    /// The service of -t, -u or -f, if given.
    fn service(&self) -> Result<Option<ServiceRef>, Failure> {
        let (protocol, text) = match (&self.tcp_service, &self.udp_service, self.fwmark_service) {
            (Some(text), ..) => (ServiceProtocol::Tcp, text),
            (None, Some(text), _) => (ServiceProtocol::Udp, text),
            (None, None, Some(mark)) => return Ok(Some(ServiceRef::fwmark(mark, self.ipv6))),
            (None, None, None) => return Ok(None),
        };
        Ok(Some(ServiceRef::address(protocol, endpoint(text)?)))
    }
}

#[derive(Debug, Subcommand)]
enum MapCommand {
    /// Name, type and sizes of every pinned map.
    List,
    /// Every entry of one map, decoded (all-zero array entries left out).
    Dump {
        /// The map's name, as `map list` shows it.
        #[arg(value_name = "NAME")]
        map: String,
    },
}

/// A failure to print as `lbctl: ...` with its exit code.
pub struct Failure {
    pub message: String,
    pub code: u8,
}

impl<E: std::fmt::Display> From<E> for Failure {
    fn from(error: E) -> Self {
        Self {
            message: error.to_string(),
            code: 1,
        }
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("lbctl: {}", failure.message);
            ExitCode::from(failure.code)
        }
    }
}

impl Args {
    pub fn pin_dir(&self) -> PathBuf {
        self.pin_dir
            .clone()
            .unwrap_or_else(|| lb_userspace::dataplane::xdp::pin_dir(&self.name))
    }

    pub fn run_dir(&self) -> PathBuf {
        self.run_dir
            .clone()
            .unwrap_or_else(|| lb_userspace::status::run_dir(&self.name))
    }

    pub fn socket(&self) -> PathBuf {
        lb_userspace::api::socket_path(&self.run_dir())
    }

    /// The service of -t, -u or -f, if given.
    pub fn service(&self) -> Result<Option<ServiceRef>, Failure> {
        self.service.service()
    }

    fn forward(&self) -> Option<String> {
        if self.masquerading {
            Some("NAT".into())
        } else if self.ipip {
            Some("TUN".into())
        } else if self.gatewaying {
            Some("DR".into())
        } else {
            None
        }
    }
}

/// `ADDR:PORT`, `[ADDR6]:PORT`, or an address alone (port 0).
fn endpoint(text: &str) -> Result<SocketAddr, Failure> {
    text.parse::<SocketAddr>()
        .or_else(|_| {
            text.trim_matches(|c| c == '[' || c == ']')
                .parse()
                .map(|ip| SocketAddr::new(ip, 0))
        })
        .map_err(|_| Failure {
            message: format!("`{text}` is not an address ADDR[:PORT] (IPv6 as [ADDR]:PORT)"),
            code: 2,
        })
}

fn usage(message: &str) -> Failure {
    Failure {
        message: message.to_owned(),
        code: 2,
    }
}

fn run(args: &Args) -> Result<(), Failure> {
    if let Some(dir) = &args.write_docs {
        return lb_userspace::docs::write(Args::command(), dir).map_err(Failure::from);
    }
    match &args.command {
        Some(Command::Vrrp) => return views::vrrp(args),
        Some(Command::Checks) => return views::checks(args),
        Some(Command::Sync) => return views::sync(args),
        Some(Command::Map { command }) => {
            return match command {
                MapCommand::List => views::map_list(args),
                MapCommand::Dump { map } => views::map_dump(args, map),
            };
        }
        Some(Command::Drain {
            service,
            real_server,
            timeout,
        }) => {
            let service = service
                .service()?
                .ok_or_else(|| usage("drain needs the service: -t or -u VIP:PORT, or -f MARK"))?;
            return views::drain(args, service, endpoint(real_server)?, *timeout);
        }
        None => {}
    }
    let service = args.service()?;
    let needs_service =
        || service.ok_or_else(|| usage("this needs the service: -t or -u VIP:PORT, or -f MARK"));
    let needs_real = || {
        args.real_server
            .as_deref()
            .ok_or_else(|| usage("this needs the real server: -r ADDR[:PORT]"))
            .and_then(endpoint)
    };
    let change = if args.add_service {
        Some(Change::AddService {
            service: needs_service()?,
            scheduler: args.scheduler.clone(),
            forward: args.forward(),
            persistent: args.persistent,
        })
    } else if args.edit_service {
        Some(Change::EditService {
            service: needs_service()?,
            scheduler: args.scheduler.clone(),
            persistent: args.persistent,
        })
    } else if args.delete_service {
        Some(Change::RemoveService {
            service: needs_service()?,
        })
    } else if args.add_server {
        Some(Change::AddReal {
            service: needs_service()?,
            real: needs_real()?,
            weight: args.weight,
            forward: args.forward(),
        })
    } else if args.edit_server {
        Some(Change::EditReal {
            service: needs_service()?,
            real: needs_real()?,
            weight: args
                .weight
                .ok_or_else(|| usage("-e changes the weight: give -w WEIGHT"))?,
        })
    } else if args.delete_server {
        Some(Change::RemoveReal {
            service: needs_service()?,
            real: needs_real()?,
        })
    } else {
        None
    };
    if let Some(change) = change {
        return ask(args, &Request::Change { change });
    }
    if args.zero {
        return ask(args, &Request::Zero { service });
    }
    if args.connection {
        return views::connections(args, service);
    }
    views::list(args, service)
}

/// Send `request` to lbd and print what it did.
fn ask(args: &Args, request: &Request) -> Result<(), Failure> {
    match client::call(&args.socket(), request)? {
        Response::Done { message } => {
            if args.json {
                println!("{}", serde_json::json!({ "done": message }));
            } else {
                println!("{message}");
            }
            Ok(())
        }
        Response::Refused { error } => Err(Failure {
            message: error,
            code: 1,
        }),
        Response::Status { .. } => Err(Failure {
            message: "lbd answered with its status, not with the change".into(),
            code: 1,
        }),
    }
}
