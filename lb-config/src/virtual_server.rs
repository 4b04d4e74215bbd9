//! `virtual_server` and its `real_server`s into the model. Keywords lbd does not implement
//! yet are reported as warnings (and ignored), values it cannot use as errors, each with
//! file:line.

use std::{
    collections::{BTreeMap, HashSet},
    net::IpAddr,
    time::Duration,
};

use super::{
    Diagnostic, Location,
    checkers::{CHECKERS, Timing, checker},
    forwarding,
    keywords::{Block, not_used},
    local_address::LocalAddressGroup,
    tree::Statement,
    values::{
        optional_bool, parse_addr, parse_granularity, parse_in_range, parse_port, parse_seconds,
        rest_of_line, single_arg,
    },
};
use crate::model::{
    ForwardMethod, Persistence, Protocol, RealServer, SchedFlags, Scheduler, ServiceExtras,
    SorryServer, TunnelType, VirtualServer, check::CheckKind,
};

/// keepalived's defaults.
const DEFAULT_DELAY_LOOP: Duration = Duration::from_secs(60);
const DEFAULT_SCHEDULER: &str = "wlc";
const DEFAULT_FORWARD: &str = "NAT";
const DEFAULT_WEIGHT: u32 = 1;
/// keepalived's `persistence_timeout` without a value.
const DEFAULT_PERSISTENCE_TIMEOUT: u32 = 360;
/// keepalived's largest `persistence_timeout` (31 days).
const MAX_PERSISTENCE_TIMEOUT: u32 = 2_678_400;
/// ipvsadm's weight range.
const MAX_WEIGHT: u32 = 65535;

/// What a `virtual_server` block stands for: its own `IP PORT`, each member of `group
/// NAME` (`virtual_server_group`), or `fwmark N`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    Address(IpAddr, u16),
    Fwmark(u32),
}

/// The services a `virtual_server` block stands for.
pub fn targets(
    statement: &Statement,
    server_groups: &BTreeMap<String, Vec<Target>>,
    diagnostics: &mut Vec<Diagnostic>,
) -> Vec<Target> {
    let location = statement.location();
    let args: Vec<&str> = statement.args.iter().map(|t| t.text.as_str()).collect();
    match args.as_slice() {
        ["group", name] => match server_groups.get(*name) {
            Some(members) => members.clone(),
            None => {
                diagnostics.push(Diagnostic::error(
                    location,
                    format!("virtual_server group {name}: no virtual_server_group of that name"),
                ));
                Vec::new()
            }
        },
        ["fwmark", mark] => match mark.parse::<u32>() {
            // IPVS has no service for mark 0 (unmarked packets).
            Ok(mark @ 1..) => vec![Target::Fwmark(mark)],
            _ => {
                diagnostics.push(Diagnostic::error(
                    location,
                    format!(
                        "virtual_server fwmark `{mark}` is not a firewall mark (1..={})",
                        u32::MAX
                    ),
                ));
                Vec::new()
            }
        },
        [addr, port] => {
            let target = parse_addr(addr, location, diagnostics).zip(parse_port(
                port,
                location,
                diagnostics,
            ));
            target
                .map(|(addr, port)| Target::Address(addr, port))
                .into_iter()
                .collect()
        }
        _ => {
            diagnostics.push(Diagnostic::error(
                location,
                "virtual_server needs an address and a port: `virtual_server IP PORT {`, `virtual_server group NAME {` or `virtual_server fwmark N {`",
            ));
            Vec::new()
        }
    }
}

/// The address family of a `virtual_server fwmark` block, as keepalived decides it:
/// `ip_family inet|inet6`, else the family its real servers and sorry server share, else
/// IPv4. Returned as the service's address (`VirtualServer::fwmark_addr`).
fn fwmark_family(statement: &Statement) -> IpAddr {
    let items = statement.block.as_deref().unwrap_or_default();
    let declared = items
        .iter()
        .filter(|item| item.name() == "ip_family")
        .find_map(|item| match item.args.first().map(|a| a.text.as_str()) {
            Some("inet") => Some(false),
            Some("inet6") => Some(true),
            _ => None,
        });
    let servers = items
        .iter()
        .filter(|item| matches!(item.name(), "real_server" | "sorry_server"))
        .filter_map(|item| item.args.first()?.text.parse::<IpAddr>().ok())
        .map(|addr| addr.is_ipv6());
    let ipv6 = declared.unwrap_or_else(|| {
        let families: HashSet<bool> = servers.collect();
        families.len() == 1 && families.contains(&true)
    });
    VirtualServer::fwmark_addr(ipv6)
}

/// The service of a `virtual_server` block for `target` (its own address and port, a
/// group member's, or its firewall mark).
pub fn virtual_server(
    statement: &Statement,
    target: Target,
    local_groups: &BTreeMap<String, LocalAddressGroup>,
    diagnostics: &mut Vec<Diagnostic>,
) -> Option<VirtualServer> {
    let location = statement.location();
    let (addr, port, fwmark) = match target {
        Target::Address(addr, port) => (addr, port, None),
        Target::Fwmark(mark) => (fwmark_family(statement), 0, Some(mark)),
    };
    // What a real or sorry server without a port (or with 0) gets.
    let service_port = fwmark.is_none().then_some(port);
    let mut protocol = None;
    let mut scheduler = (DEFAULT_SCHEDULER.to_owned(), location.clone());
    let mut forward = (DEFAULT_FORWARD.to_owned(), location.clone());
    let mut delay_loop = DEFAULT_DELAY_LOOP;
    let mut reals = Vec::new();
    let mut flag_items = Vec::new();
    let mut persistence_timeout = None;
    let mut granularity = None;
    let mut ops = None;
    let mut timing = Timing::default();
    let mut extras = ServiceExtras::default();
    let mut real_items = Vec::new();
    let mut laddr_group = None;
    let mut tun_source = None;
    let mut tunnel = TunnelType::Ipip;
    let mut sorry_method = None;
    let mut ok = true;

    for item in statement.block.as_deref().unwrap_or_default() {
        match item.name() {
            "lb_algo" | "lvs_sched" => match single_arg(item, diagnostics) {
                Some(v) => scheduler = (v.to_owned(), item.location().clone()),
                None => ok = false,
            },
            "lb_kind" | "lvs_method" => match forwarding::method(item, diagnostics) {
                Some((method, at, parsed)) => (forward, tunnel) = ((method, at), parsed),
                None => ok = false,
            },
            "protocol" => match single_arg(item, diagnostics) {
                Some("TCP") => protocol = Some(Protocol::Tcp),
                Some("UDP") => protocol = Some(Protocol::Udp),
                Some(other) => {
                    diagnostics.push(Diagnostic::error(
                        item.location(),
                        format!("protocol `{other}` is not supported (supported: TCP, UDP)"),
                    ));
                    ok = false;
                }
                None => ok = false,
            },
            "delay_loop" => match single_arg(item, diagnostics)
                .and_then(|v| parse_seconds(v, item.location(), diagnostics))
            {
                Some(d) => {
                    delay_loop = d;
                    timing.delay_loop = Some(d);
                }
                None => ok = false,
            },
            _ if timing.read(item, diagnostics) => {}
            "quorum" => {
                extras.quorum = parse_in_range(item, 1..=u32::MAX, diagnostics).unwrap_or(1)
            }
            "hysteresis" => {
                extras.hysteresis = parse_in_range(item, 0..=u32::MAX, diagnostics).unwrap_or(0)
            }
            "quorum_up" => extras.quorum_up = rest_of_line(item, diagnostics),
            "quorum_down" => extras.quorum_down = rest_of_line(item, diagnostics),
            "sorry_server" => match item.args.as_slice() {
                [addr, port @ ..] if port.len() <= 1 => {
                    let at = item.location();
                    let port = port.first().map(|p| p.text.as_str());
                    extras.sorry_server = parse_addr(&addr.text, at, diagnostics)
                        .zip(server_port(port, service_port, at, diagnostics))
                        .map(|(addr, port)| SorryServer { addr, port });
                }
                _ => diagnostics.push(Diagnostic::error(
                    item.location(),
                    "sorry_server needs an address and may have a port: `sorry_server IP [PORT]`",
                )),
            },
            "sorry_server_inhibit" => extras.sorry_server_inhibit = true,
            "sorry_server_lvs_method" => match forwarding::real_method(item, diagnostics) {
                Some(method) => sorry_method = Some((method, item.location().clone())),
                None => ok = false,
            },
            "alpha" => extras.alpha = true,
            "omega" => extras.omega = true,
            "ha_suspend" => extras.ha_suspend = true,
            "inhibit_on_failure" => extras.inhibit_on_failure = true,
            "virtualhost" => extras.virtualhost = single_arg(item, diagnostics).map(str::to_owned),
            "smtp_alert" => extras.smtp_alert = optional_bool(item, diagnostics),
            "flag-1" | "flag-2" | "flag-3" | "sh-fallback" | "sh-port" | "mh-fallback"
            | "mh-port" => {
                if !item.args.is_empty() || item.block.is_some() {
                    diagnostics.push(Diagnostic::error(
                        item.location(),
                        format!("`{}` takes no value", item.name()),
                    ));
                    ok = false;
                }
                flag_items.push(item);
            }
            // Read before the block (`fwmark_family`) for a firewall-mark service.
            "ip_family" => match single_arg(item, diagnostics) {
                Some(family @ ("inet" | "inet6")) => {
                    if fwmark.is_none() && (family == "inet6") != addr.is_ipv6() {
                        diagnostics.push(Diagnostic::warning(
                            item.location(),
                            format!("ip_family {family} does not match the virtual server's address {addr}; ignored"),
                        ));
                    }
                }
                Some(other) => {
                    diagnostics.push(Diagnostic::error(
                        item.location(),
                        format!("ip_family `{other}` is not an address family (inet or inet6)"),
                    ));
                    ok = false;
                }
                None => ok = false,
            },
            // An older spelling of the tunnel type; keepalived's is `lb_kind TUN type ...`.
            "tun_type" => match single_arg(item, diagnostics) {
                Some("ipip") => {}
                Some(other) => {
                    diagnostics.push(Diagnostic::error(
                        item.location(),
                        format!("tun_type `{other}`: write keepalived's `lb_kind TUN type {other} ...` (type gue port N, type gre)"),
                    ));
                    ok = false;
                }
                None => ok = false,
            },
            "tun_source" => match tun_sources(item, diagnostics) {
                Some(sources) => tun_source = Some((sources, item.location().clone())),
                None => ok = false,
            },
            "ops" => {
                if !item.args.is_empty() || item.block.is_some() {
                    diagnostics.push(Diagnostic::error(item.location(), "`ops` takes no value"));
                    ok = false;
                }
                ops = Some(item.location().clone());
            }
            "persistence_timeout" => match item.args.as_slice() {
                [] => persistence_timeout = Some(DEFAULT_PERSISTENCE_TIMEOUT),
                [value] => match value.text.parse::<u32>() {
                    Ok(secs @ 1..=MAX_PERSISTENCE_TIMEOUT) => persistence_timeout = Some(secs),
                    // keepalived reports the value and goes on without it.
                    Ok(secs) => diagnostics.push(Diagnostic::warning(
                        item.location(),
                        format!(
                            "persistence_timeout {secs} is outside 1..={MAX_PERSISTENCE_TIMEOUT} seconds; ignored"
                        ),
                    )),
                    Err(_) => {
                        diagnostics.push(Diagnostic::error(
                            item.location(),
                            format!(
                                "persistence_timeout `{}` is not a number of seconds",
                                value.text
                            ),
                        ));
                        ok = false;
                    }
                },
                _ => {
                    diagnostics.push(Diagnostic::error(
                        item.location(),
                        "persistence_timeout takes at most one value (seconds)",
                    ));
                    ok = false;
                }
            },
            "persistence_granularity" => match single_arg(item, diagnostics) {
                Some(value) => match parse_granularity(value, addr.is_ipv4()) {
                    Some(prefix) => granularity = Some((prefix, item.location().clone())),
                    None => {
                        diagnostics.push(Diagnostic::error(
                            item.location(),
                            if addr.is_ipv4() {
                                format!("persistence_granularity `{value}` is not an IPv4 netmask (such as 255.255.255.0)")
                            } else {
                                format!("persistence_granularity `{value}` is not an IPv6 prefix length (1..=128)")
                            },
                        ));
                        ok = false;
                    }
                },
                None => ok = false,
            },
            "laddr_group_name" => match single_arg(item, diagnostics) {
                Some(name) => laddr_group = Some((name.to_owned(), item.location().clone())),
                None => ok = false,
            },
            // Read once the virtual server's timing is known, whatever the order.
            "real_server" => real_items.push(item),
            _ => not_used(item, Block::VirtualServer, diagnostics),
        }
    }

    for item in real_items {
        match real_server(item, timing, service_port, diagnostics) {
            Some(real) => reals.push((real, item.location().clone())),
            None => ok = false,
        }
    }
    // Settings left at keepalived's default (their location is the block's own).
    let defaulted: Vec<(&str, &str)> = [
        ("lb_algo", &scheduler.1, DEFAULT_SCHEDULER),
        ("lb_kind", &forward.1, DEFAULT_FORWARD),
    ]
    .into_iter()
    .filter(|(_, at, _)| *at == location)
    .map(|(name, _, default)| (name, default))
    .collect();
    let scheduler = match Scheduler::from_name(&scheduler.0) {
        Some(s) => Some(s),
        None => {
            diagnostics.push(Diagnostic::error(
                &scheduler.1,
                format!(
                    "lb_algo `{}`{} is not supported yet (supported: {})",
                    scheduler.0,
                    default_note(&scheduler.1, location),
                    Scheduler::SUPPORTED
                ),
            ));
            None
        }
    };
    let sched_flags = scheduler
        .map(|s| sched_flags(s, &flag_items, diagnostics))
        .unwrap_or_default();
    let forward = match ForwardMethod::from_name(&forward.0) {
        Some(f) => Some(f),
        None => {
            diagnostics.push(Diagnostic::error(
                &forward.1,
                format!(
                    "lb_kind `{}`{} is not supported yet (supported: {})",
                    forward.0,
                    default_note(&forward.1, location),
                    ForwardMethod::SUPPORTED
                ),
            ));
            None
        }
    };

    let name = fwmark.map_or_else(|| addr.to_string(), |mark| format!("fwmark {mark}"));
    let mut seen = HashSet::new();
    let vs_forward = forward;
    let mut mixed_with_fnat = false;
    reals.retain_mut(|(real, real_location)| {
        // The real's own lvs_method, else the virtual server's.
        let forward = real.lvs_method.map(|(method, _)| method).or(forward);
        if let (Some(ForwardMethod::FullNat), Some((method, _))) = (vs_forward, real.lvs_method) {
            diagnostics.push(Diagnostic::error(
                &*real_location,
                format!(
                    "real_server {} lvs_method {}: a FullNAT virtual server forwards every real by FullNAT (its replies need the director's local addresses)",
                    real.addr,
                    method.name()
                ),
            ));
            mixed_with_fnat = true;
            return false;
        }
        // TUN may carry an IPv4 VIP's packets to an IPv6 real (4in6).
        let four_in_six = forward == Some(ForwardMethod::Tun) && addr.is_ipv4();
        if real.addr.is_ipv4() != addr.is_ipv4() && !four_in_six {
            diagnostics.push(Diagnostic::warning(
                &*real_location,
                format!(
                    "real_server {} and virtual_server {name} are of different address families; real server skipped, as keepalived does",
                    real.addr
                ),
            ));
            return false;
        }
        // A firewall-mark service takes many ports, and DR and TUN keep the packet's:
        // keepalived clears the real's port for IPVS; its checkers still connect to it.
        if let (Some(mark), Some(ForwardMethod::Dr | ForwardMethod::Tun)) = (fwmark, forward)
            && real.port != 0
        {
            diagnostics.push(Diagnostic::warning(
                &*real_location,
                format!(
                    "virtual_server fwmark {mark}: real_server {} port {} is not used for forwarding (the packet keeps its port); checkers without connect_port connect to it, as keepalived does",
                    real.addr, real.port
                ),
            ));
            for checker in real.checkers.iter_mut().filter(|c| connects_to_port(&c.kind)) {
                checker.connect_port.get_or_insert(real.port);
            }
            real.port = 0;
        }
        // DR and TUN do not translate ports: keepalived resets the real's port.
        if let Some(method @ (ForwardMethod::Dr | ForwardMethod::Tun)) = forward
            && fwmark.is_none()
            && real.port != port
        {
            diagnostics.push(Diagnostic::warning(
                &*real_location,
                format!(
                    "real_server port {} differs from the virtual_server port {port}; {} does not translate ports, so {port} is used, as keepalived does",
                    real.port,
                    method.name()
                ),
            ));
            real.port = port;
        }
        if !seen.insert((real.addr, real.port)) {
            diagnostics.push(Diagnostic::warning(
                &*real_location,
                format!(
                    "duplicate real_server {} {}; the second is removed, as keepalived does",
                    real.addr, real.port
                ),
            ));
            return false;
        }
        true
    });
    // keepalived's checks of a virtual server with reals, with its corrections (one
    // without is ignored, below, once every error in it is reported).
    ok &= !mixed_with_fnat;
    if let Some(((method, _), at)) = &sorry_method
        && forward == Some(ForwardMethod::FullNat)
    {
        diagnostics.push(Diagnostic::error(
            at,
            format!(
                "sorry_server_lvs_method {}: a FullNAT virtual server forwards every real by FullNAT (its replies need the director's local addresses)",
                method.name()
            ),
        ));
        ok = false;
    }
    extras.sorry_server_lvs_method = sorry_method.map(|(method, _)| method);
    let has_reals = !reals.is_empty();
    // The kernel records a firewall-mark service as TCP, whatever `protocol` says (a
    // group's `protocol` is for its address members).
    let own_mark = statement.args.first().is_some_and(|a| a.text == "fwmark");
    if let (Some(mark), Some(_), true) = (fwmark, protocol, own_mark) {
        diagnostics.push(Diagnostic::warning(
            location,
            format!("virtual_server fwmark {mark}: `protocol` is ignored (the mark decides which packets the service takes), as keepalived does"),
        ));
    }
    let protocol = match (fwmark, protocol) {
        (Some(_), _) => Protocol::Tcp,
        (None, Some(protocol)) => protocol,
        (None, None) => {
            diagnostics.extend(has_reals.then(|| Diagnostic::warning(
                location,
                "no `protocol`: UDP, as keepalived and the kernel default to (write `protocol TCP` for TCP)",
            )));
            Protocol::Udp
        }
    };
    for (name, default) in defaulted.into_iter().filter(|_| has_reals) {
        diagnostics.push(Diagnostic::warning(
            location,
            format!("no `{name}`: {default}, keepalived's default"),
        ));
    }

    // A quorum above the total weight could never be met; keepalived lowers it.
    let weight_sum: u64 = reals.iter().map(|(real, _)| u64::from(real.weight)).sum();
    if u64::from(extras.quorum) > weight_sum && !reals.is_empty() {
        let lowered = u32::try_from(weight_sum).unwrap_or(u32::MAX);
        diagnostics.push(Diagnostic::warning(
            location,
            format!(
                "quorum {} exceeds the total weight of the real servers, {weight_sum}; lowered to {lowered}, as keepalived does",
                extras.quorum
            ),
        ));
        extras.quorum = lowered;
    }
    if extras.hysteresis >= extras.quorum && extras.hysteresis > 0 {
        let lowered = extras.quorum.saturating_sub(1);
        diagnostics.push(Diagnostic::warning(
            location,
            format!(
                "hysteresis {} is not below quorum {}; lowered to {lowered}, as keepalived does",
                extras.hysteresis, extras.quorum
            ),
        ));
        extras.hysteresis = lowered;
    }

    if let Some(scheduler) = scheduler {
        let buckets = lb_common::sched::SH_TABLE_SIZE as usize;
        if matches!(scheduler, Scheduler::Sh | Scheduler::Dh) && reals.len() > buckets {
            diagnostics.push(Diagnostic::warning(
                location,
                format!(
                    "lb_algo {} has {buckets} buckets: the real servers after the first {buckets} get no new flows (as in IPVS)",
                    scheduler.name()
                ),
            ));
        }
    }

    let local_addresses = match (forward, laddr_group) {
        (Some(ForwardMethod::FullNat), laddr_group) => {
            match full_nat_pool(addr, location, laddr_group, local_groups, diagnostics) {
                Some(pool) => pool,
                None => {
                    ok = false;
                    Vec::new()
                }
            }
        }
        (_, Some((_, at))) => {
            diagnostics.push(Diagnostic::warning(
                &at,
                "laddr_group_name applies to lb_kind FNAT only; ignored",
            ));
            Vec::new()
        }
        (_, None) => Vec::new(),
    };

    // TUN for the virtual server, or for one of its reals or its sorry server.
    let tunnels = forward == Some(ForwardMethod::Tun)
        || reals
            .iter()
            .filter_map(|(real, _)| real.lvs_method)
            .chain(extras.sorry_server_lvs_method)
            .any(|(method, _)| method == ForwardMethod::Tun);
    let tun_sources = match (tunnels, tun_source) {
        (true, Some((sources, _))) => sources,
        (false, Some((_, at))) => {
            diagnostics.push(Diagnostic::warning(
                &at,
                "tun_source applies to lb_kind TUN (or a real's lvs_method TUN) only; ignored",
            ));
            Vec::new()
        }
        (_, None) => Vec::new(),
    };

    if let Some(mark) = fwmark.filter(|_| extras.ha_suspend) {
        diagnostics.push(Diagnostic::warning(
            location,
            format!("virtual_server fwmark {mark}: ha_suspend needs a VIP to watch; cleared, as keepalived does"),
        ));
        extras.ha_suspend = false;
    }
    let sorry_forward = extras
        .sorry_server_lvs_method
        .map(|(method, _)| method)
        .or(forward);
    if let (Some(mark), Some(ForwardMethod::Dr | ForwardMethod::Tun), Some(sorry)) =
        (fwmark, sorry_forward, extras.sorry_server.as_mut())
        && sorry.port != 0
    {
        diagnostics.push(Diagnostic::warning(
            location,
            format!("virtual_server fwmark {mark}: sorry_server port {} is not used (the packet keeps its port), as keepalived does", sorry.port),
        ));
        sorry.port = 0;
    }
    if let (Some(mark), Some(ForwardMethod::FullNat)) = (fwmark, forward) {
        diagnostics.push(Diagnostic::error(
            location,
            format!("virtual_server fwmark {mark}: lb_kind FNAT needs a VIP and port (FullNAT runs in XDP, which cannot see firewall marks; the kernel's IPVS has no FullNAT)"),
        ));
        ok = false;
    }
    // IPVS schedules one packet at a time for UDP only (a firewall-mark service's UDP
    // packets).
    let one_packet = match (&ops, protocol) {
        (Some(_), _) if fwmark.is_some() => true,
        (Some(at), Protocol::Udp) if forward == Some(ForwardMethod::FullNat) => {
            // A datagram's local port would be free again before its answer came back.
            diagnostics.push(Diagnostic::error(
                at,
                "`ops` (one-packet scheduling) is not supported with lb_kind FNAT",
            ));
            ok = false;
            false
        }
        (Some(_), Protocol::Udp) => true,
        (Some(at), Protocol::Tcp) => {
            diagnostics.push(Diagnostic::warning(
                at,
                "`ops` (one-packet scheduling) applies to UDP services only; ignored",
            ));
            false
        }
        (None, _) => false,
    };
    let full = if addr.is_ipv4() { 32 } else { 128 };
    if let (None, Some((_, at))) = (persistence_timeout, &granularity) {
        diagnostics.push(Diagnostic::warning(
            at,
            "persistence_granularity has no effect without persistence_timeout",
        ));
    }
    let persistence = persistence_timeout.map(|timeout_secs| Persistence {
        timeout_secs,
        prefix_len: granularity.as_ref().map_or(full, |(prefix, _)| *prefix),
    });

    if !has_reals && ok && scheduler.is_some() && forward.is_some() {
        diagnostics.push(Diagnostic::warning(
            location,
            "virtual_server has no real_server; ignored, as keepalived does",
        ));
        return None;
    }
    Some(VirtualServer {
        addr,
        port,
        protocol,
        fwmark,
        scheduler: scheduler?,
        sched_flags,
        persistence,
        one_packet,
        forward: forward?,
        local_addresses,
        tun_sources,
        tunnel: if forward == Some(ForwardMethod::Tun) {
            tunnel
        } else {
            TunnelType::Ipip
        },
        delay_loop,
        extras,
        reals: ok.then(|| reals.into_iter().map(|(r, _)| r).collect())?,
    })
}

/// `tun_source ADDR [ADDR]` (virtual_server) and `lvs_tun_source ADDR [ADDR]`
/// (global_defs): the outer source of TUN packets, at most one address per family.
pub(super) fn tun_sources(
    item: &Statement,
    diagnostics: &mut Vec<Diagnostic>,
) -> Option<Vec<IpAddr>> {
    if item.args.is_empty() || item.args.len() > 2 {
        diagnostics.push(Diagnostic::error(
            item.location(),
            format!(
                "`{}` takes one address, or one IPv4 and one IPv6 address",
                item.name()
            ),
        ));
        return None;
    }
    let mut sources: Vec<IpAddr> = Vec::new();
    for arg in &item.args {
        let addr = parse_addr(&arg.text, item.location(), diagnostics)?;
        if sources.iter().any(|s| s.is_ipv4() == addr.is_ipv4()) {
            diagnostics.push(Diagnostic::error(
                item.location(),
                format!("`{}` has two addresses of one family", item.name()),
            ));
            return None;
        }
        sources.push(addr);
    }
    Some(sources)
}

/// The local addresses of a FullNAT service: those of its `laddr_group_name` group of the
/// VIP's family (a group may hold both families, for IPv4 and IPv6 services).
fn full_nat_pool(
    vip: IpAddr,
    vs: &Location,
    laddr_group: Option<(String, Location)>,
    local_groups: &BTreeMap<String, LocalAddressGroup>,
    diagnostics: &mut Vec<Diagnostic>,
) -> Option<Vec<IpAddr>> {
    let Some((name, at)) = laddr_group else {
        diagnostics.push(Diagnostic::error(
            vs,
            "lb_kind FNAT needs `laddr_group_name NAME`, naming a local_address_group with the director's local addresses",
        ));
        return None;
    };
    let Some(group) = local_groups.get(&name) else {
        diagnostics.push(Diagnostic::error(
            &at,
            format!("laddr_group_name `{name}`: no local_address_group of that name"),
        ));
        return None;
    };
    let pool: Vec<IpAddr> = group
        .addresses
        .iter()
        .copied()
        .filter(|a| a.is_ipv4() == vip.is_ipv4())
        .collect();
    if pool.is_empty() && !group.addresses.is_empty() {
        diagnostics.push(Diagnostic::error(
            &at,
            format!(
                "local_address_group {name} has no {} address for virtual_server {vip}",
                if vip.is_ipv4() { "IPv4" } else { "IPv6" }
            ),
        ));
        return None;
    }
    Some(pool)
}

/// The IPVS scheduler flags set by `flag-N` and the scheduler-specific names. As in
/// keepalived, `sh-*` applies only to sh and `mh-*` only to mh (otherwise a warning);
/// `flag-1`/`flag-2` are SCHED1/SCHED2 whatever the scheduler, and no scheduler uses
/// `flag-3`.
fn sched_flags(
    scheduler: Scheduler,
    items: &[&Statement],
    diagnostics: &mut Vec<Diagnostic>,
) -> SchedFlags {
    let mut flags = SchedFlags::default();
    for item in items {
        let name = item.name();
        let applies = match name.split_once('-') {
            Some((prefix @ ("sh" | "mh"), _)) => {
                let applies = scheduler.name() == prefix;
                if !applies {
                    diagnostics.push(Diagnostic::warning(
                        item.location(),
                        format!(
                            "`{name}` only applies to the {prefix} scheduler (this one is {}); ignored",
                            scheduler.name()
                        ),
                    ));
                }
                applies
            }
            _ => true,
        };
        match name {
            "flag-1" | "sh-fallback" | "mh-fallback" if applies => flags.fallback = true,
            "flag-2" | "sh-port" | "mh-port" if applies => flags.port = true,
            "flag-3" => diagnostics.push(Diagnostic::warning(
                item.location(),
                "`flag-3` is not used by any scheduler; ignored",
            )),
            _ => {}
        }
    }
    flags
}

/// " (keepalived's default)" when the value was not written but defaulted at `vs`.
fn default_note(at: &Location, vs: &Location) -> &'static str {
    if at == vs {
        " (keepalived's default, as none is set)"
    } else {
        ""
    }
}

/// The port of a real or sorry server, written as `text` (`None`: none written). None or
/// 0 means IPVS's "the service's port": `service_port`, or in a firewall-mark service
/// (`None`), which takes many ports, 0 (the packet's port), as keepalived sets it.
fn server_port(
    text: Option<&str>,
    service_port: Option<u16>,
    location: &Location,
    diagnostics: &mut Vec<Diagnostic>,
) -> Option<u16> {
    match text {
        None => Some(service_port.unwrap_or(0)),
        Some(text) if !text.is_empty() && text.bytes().all(|b| b == b'0') => {
            Some(service_port.unwrap_or(0))
        }
        Some(text) => parse_port(text, location, diagnostics),
    }
}

/// Whether a checker of this kind connects to a port (the real's unless `connect_port`).
fn connects_to_port(kind: &CheckKind) -> bool {
    !matches!(
        kind,
        CheckKind::Misc(_) | CheckKind::Ping | CheckKind::File { .. }
    )
}

/// A `real_server IP [PORT]` block; `outer` is its virtual server's timing for the
/// checkers, `service_port` its port (`None` for a firewall-mark service). Without a port,
/// or with 0, the real gets the service's port (`server_port`); in a firewall-mark service
/// that is 0 (keep the packet's port, also for NAT), and then its checkers need a
/// `connect_port`.
fn real_server(
    statement: &Statement,
    outer: Timing,
    service_port: Option<u16>,
    diagnostics: &mut Vec<Diagnostic>,
) -> Option<RealServer> {
    let location = statement.location();
    let (addr, port) = match statement.args.as_slice() {
        [addr] => (addr, None),
        [addr, port] => (addr, Some(port.text.as_str())),
        _ => {
            diagnostics.push(Diagnostic::error(
                location,
                "real_server needs an address and may have a port: `real_server IP [PORT] {`",
            ));
            return None;
        }
    };
    let addr = parse_addr(&addr.text, location, diagnostics)?;
    let port = server_port(port, service_port, location, diagnostics)?;
    if statement.block.is_none() {
        diagnostics.push(Diagnostic::error(
            location,
            "real_server needs a block: `real_server IP PORT { … }` (`{}` when it has no settings)",
        ));
        return None;
    }
    let mut weight = DEFAULT_WEIGHT;
    let mut timing = Timing::default();
    let mut checker_items = Vec::new();
    let (mut notify_up, mut notify_down, mut inhibit_on_failure) = (None, None, false);
    let mut smtp_alert = None;
    let (mut upper_threshold, mut lower_threshold) = (0, 0);
    let mut lvs_method = None;
    for item in statement.block.as_deref().unwrap_or_default() {
        if timing.read(item, diagnostics) {
            continue;
        }
        match item.name() {
            name if CHECKERS.contains(&name) => checker_items.push(item),
            "notify_up" => notify_up = rest_of_line(item, diagnostics),
            "notify_down" => notify_down = rest_of_line(item, diagnostics),
            "inhibit_on_failure" => inhibit_on_failure = true,
            "smtp_alert" => smtp_alert = optional_bool(item, diagnostics),
            "uthreshold" => upper_threshold = parse_in_range(item, 0..=u32::MAX, diagnostics)?,
            "lthreshold" => lower_threshold = parse_in_range(item, 0..=u32::MAX, diagnostics)?,
            "lvs_method" => lvs_method = Some(forwarding::real_method(item, diagnostics)?),
            "weight" => {
                let value = single_arg(item, diagnostics)?;
                match value.parse::<u32>() {
                    Ok(w) if w <= MAX_WEIGHT => weight = w,
                    _ => {
                        diagnostics.push(Diagnostic::error(
                            item.location(),
                            format!("weight `{value}` is not an integer in 0..={MAX_WEIGHT}"),
                        ));
                        return None;
                    }
                }
            }
            _ => not_used(item, Block::RealServer, diagnostics),
        }
    }
    if lower_threshold > upper_threshold {
        diagnostics.push(Diagnostic::error(
            location,
            format!(
                "lthreshold {lower_threshold} is above uthreshold {upper_threshold} (IPVS refuses that; uthreshold 0 means no limit)"
            ),
        ));
        return None;
    }
    let timing = timing.or(outer);
    let checkers: Vec<_> = checker_items
        .into_iter()
        .flat_map(|item| checker(item, timing, diagnostics))
        .collect();
    if port == 0
        && checkers
            .iter()
            .any(|c| connects_to_port(&c.kind) && c.connect_port.is_none())
    {
        diagnostics.push(Diagnostic::error(
            location,
            "real_server port 0 keeps the packet's port: its checkers need `connect_port`",
        ));
        return None;
    }
    Some(RealServer {
        addr,
        port,
        weight,
        checkers,
        notify_up,
        notify_down,
        inhibit_on_failure,
        upper_threshold,
        lower_threshold,
        smtp_alert,
        lvs_method,
    })
}

#[cfg(test)]
mod tests {
    use std::{path::Path, time::Duration};

    use crate::{
        ConfigError, Diagnostic, Loaded, Severity,
        model::{
            ForwardMethod, Persistence, Protocol, SchedFlags, Scheduler, TunnelChecksum, TunnelType,
        },
        parse,
    };

    fn ok(text: &str) -> Loaded {
        parse(text, Path::new("k.conf")).unwrap_or_else(|e| panic!("{e}"))
    }

    fn errors(text: &str) -> Vec<Diagnostic> {
        match parse(text, Path::new("k.conf")) {
            Err(ConfigError::Invalid { errors, .. }) => errors,
            other => panic!("expected errors, got {other:?}"),
        }
    }

    /// As `lines`, without the notes on settings left at keepalived's defaults.
    fn specific(diagnostics: &[Diagnostic]) -> Vec<String> {
        lines(diagnostics)
            .into_iter()
            .filter(|l| !l.contains(": no `"))
            .collect()
    }

    /// "line: message" of each diagnostic.
    fn lines(diagnostics: &[Diagnostic]) -> Vec<String> {
        diagnostics
            .iter()
            .map(|d| format!("{}: {}", d.location.line, d.message))
            .collect()
    }

    #[test]
    fn reads_services_with_keepalived_defaults_and_synonyms() {
        let loaded = ok("
global_defs {
    router_id LB1
}
virtual_server 192.0.2.1 80 {
    lb_algo rr
    lb_kind DR
    real_server 10.0.0.1 80 {
        weight 5
        TCP_CHECK {
            connect_timeout 3
        }
    }
    real_server 10.0.0.2 80 {}
}
virtual_server 2001:db8::1 53 {
    delay_loop 1.5
    lvs_sched wrr
    lvs_method DR
    protocol UDP
    real_server 2001:db8::2 53 {
        weight 0
    }
}
");
        let vs = &loaded.config.virtual_servers;
        assert_eq!(vs.len(), 2);
        // No protocol: UDP, as in keepalived (which says so).
        assert_eq!(vs[0].protocol, Protocol::Udp);
        assert_eq!(vs[0].scheduler, Scheduler::Rr);
        assert_eq!(vs[0].forward, ForwardMethod::Dr);
        assert_eq!(vs[0].delay_loop, Duration::from_secs(60));
        let weights: Vec<u32> = vs[0].reals.iter().map(|r| r.weight).collect();
        assert_eq!(weights, [5, 1]);
        assert_eq!(vs[1].protocol, Protocol::Udp);
        assert_eq!(vs[1].scheduler, Scheduler::Wrr);
        assert_eq!(vs[1].delay_loop, Duration::from_millis(1500));
        assert_eq!(vs[1].reals[0].weight, 0);
        assert_eq!(
            lines(&loaded.warnings),
            [
                "5: no `protocol`: UDP, as keepalived and the kernel default to (write `protocol TCP` for TCP)",
                "16: quorum 1 exceeds the total weight of the real servers, 0; lowered to 0, as keepalived does",
            ]
        );
        // The TCP_CHECK with its connect_timeout, the rest from keepalived's defaults.
        let check = &vs[0].reals[0].checkers[0];
        assert_eq!(check.kind, crate::model::check::CheckKind::Tcp);
        assert_eq!(check.connect_timeout, Duration::from_secs(3));
        assert_eq!(
            (check.retry, check.delay_loop),
            (1, Duration::from_secs(60))
        );
    }

    #[test]
    fn every_ipvs_scheduler_and_its_flags_are_read() {
        for scheduler in Scheduler::ALL {
            let loaded = ok(&format!(
                "virtual_server 192.0.2.1 80 {{\n lb_algo {}\n lb_kind DR\n protocol TCP\n real_server 10.0.0.1 80 {{}}\n}}\n",
                scheduler.name()
            ));
            assert_eq!(loaded.config.virtual_servers[0].scheduler, scheduler);
        }
        let loaded = ok("
virtual_server 192.0.2.1 80 {
    lvs_sched sh
    lb_kind DR
    sh-port
    sh-fallback
    protocol TCP
    real_server 10.0.0.1 80 {}
}
virtual_server 192.0.2.2 80 {
    lb_algo mh
    lb_kind DR
    mh-fallback
    sh-port
    flag-3
    protocol TCP
    real_server 10.0.0.1 80 {}
}
virtual_server 192.0.2.3 80 {
    lb_kind DR
    flag-2
    protocol TCP
    real_server 10.0.0.1 80 {}
}
");
        let vs = &loaded.config.virtual_servers;
        let flags = |fallback, port| SchedFlags { fallback, port };
        assert_eq!(vs[0].sched_flags, flags(true, true));
        assert_eq!(vs[1].sched_flags, flags(true, false));
        // keepalived's default scheduler.
        assert_eq!(vs[2].scheduler, Scheduler::Wlc);
        assert_eq!(vs[2].sched_flags, flags(false, true));
        assert_eq!(
            lines(&loaded.warnings),
            [
                "14: `sh-port` only applies to the sh scheduler (this one is mh); ignored",
                "15: `flag-3` is not used by any scheduler; ignored",
                "19: no `lb_algo`: wlc, keepalived's default",
            ]
        );
    }

    #[test]
    fn persistence_reads_keepalived_keywords() {
        let loaded = ok("
virtual_server 192.0.2.1 80 {
    lb_kind DR
    persistence_timeout 600
    persistence_granularity 255.255.255.0
    real_server 10.0.0.1 80 {}
}
virtual_server 192.0.2.2 80 {
    lb_kind DR
    persistence_timeout
    real_server 10.0.0.1 80 {}
}
virtual_server 2001:db8::1 80 {
    lb_kind DR
    persistence_timeout 50
    persistence_granularity 64
    real_server 2001:db8::2 80 {}
}
virtual_server 192.0.2.3 80 {
    lb_kind DR
    persistence_granularity 255.255.0.0
    persistence_timeout 0
    real_server 10.0.0.1 80 {}
}
");
        let p = |timeout_secs, prefix_len| {
            Some(Persistence {
                timeout_secs,
                prefix_len,
            })
        };
        let vs = &loaded.config.virtual_servers;
        assert_eq!(vs[0].persistence, p(600, 24));
        assert_eq!(vs[1].persistence, p(360, 32));
        assert_eq!(vs[2].persistence, p(50, 64));
        assert_eq!(vs[3].persistence, None);
        let warnings: Vec<String> = lines(&loaded.warnings)
            .into_iter()
            .filter(|w| !w.contains("no `lb_algo`") && !w.contains("no `protocol`"))
            .collect();
        assert_eq!(
            warnings,
            [
                "21: persistence_granularity has no effect without persistence_timeout",
                "22: persistence_timeout 0 is outside 1..=2678400 seconds; ignored",
            ]
        );
        assert_eq!(
            lines(&errors(
                "virtual_server 192.0.2.1 80 {\n lb_kind DR\n persistence_timeout x\n persistence_granularity 255.0.255.0\n real_server 10.0.0.1 80 {}\n}\n"
            )),
            [
                "3: persistence_timeout `x` is not a number of seconds",
                "4: persistence_granularity `255.0.255.0` is not an IPv4 netmask (such as 255.255.255.0)",
            ]
        );
    }

    #[test]
    fn tun_may_carry_ipv4_to_an_ipv6_real() {
        let loaded =
            ok("virtual_server 192.0.2.1 80 {\n lb_kind TUN\n real_server 2001:db8::1 80 {}\n}\n");
        assert_eq!(loaded.config.virtual_servers[0].reals.len(), 1);
        // Any other mix of families: keepalived skips the real.
        let loaded = ok(
            "virtual_server 192.0.2.1 80 {\n lb_kind DR\n real_server 2001:db8::1 80 {}\n real_server 10.0.0.1 80 {}\n}\n",
        );
        assert_eq!(loaded.config.virtual_servers[0].reals.len(), 1);
        assert_eq!(
            specific(&loaded.warnings)[0],
            "3: real_server 2001:db8::1 and virtual_server 192.0.2.1 are of different address families; real server skipped, as keepalived does"
        );
    }

    #[test]
    fn ops_applies_to_udp_only() {
        let loaded = ok("
virtual_server 192.0.2.1 53 {
    lb_algo rr
    lb_kind DR
    protocol UDP
    ops
    real_server 10.0.0.1 53 {}
}
virtual_server 192.0.2.1 80 {
    lb_algo rr
    lb_kind DR
    protocol TCP
    ops
    real_server 10.0.0.1 80 {}
}
");
        let vs = &loaded.config.virtual_servers;
        assert!(vs[0].one_packet);
        assert!(!vs[1].one_packet);
        assert_eq!(
            lines(&loaded.warnings),
            ["13: `ops` (one-packet scheduling) applies to UDP services only; ignored"]
        );
    }

    #[test]
    fn least_connection_schedulers_take_any_number_of_reals() {
        // IPVS has no limit; the XDP data plane's is its own refusal (lbd's backend).
        let mut text = String::from("virtual_server 192.0.2.1 80 {\n lb_algo wlc\n lb_kind DR\n");
        for i in 0..257 {
            text.push_str(&format!(
                " real_server 10.1.{}.{} 80 {{}}\n",
                i / 250,
                i % 250 + 1
            ));
        }
        text.push_str("}\n");
        assert_eq!(ok(&text).config.virtual_servers[0].reals.len(), 257);
    }

    #[test]
    fn every_error_is_reported_with_its_line() {
        let errors = errors(
            "
virtual_server 192.0.2.1 80 {
    lb_algo fastest
    lb_kind FULLNAT
}
virtual_server 192.0.2.2 80 {
    lb_kind DR
    real_server 10.0.0.300 80 {}
    real_server 10.0.0.1 80 {
        weight 70000
    }
}
virtual_server 192.0.2.3 80 {
    lb_algo rr
    lb_kind DR
    protocol SCTP
    real_server 2001:db8::1 80 {}
    real_server 2001:db8::1 80 {}
}
virtual_server 192.0.2.4 0 {
}
virtual_server fwmark 0 {
}
include /etc/keepalived/services/*.conf
",
        );
        assert!(errors.iter().all(|e| e.severity == Severity::Error));
        assert_eq!(
            lines(&errors),
            [
                "3: lb_algo `fastest` is not supported yet (supported: rr, wrr, lc, wlc, sh, dh, sed, nq, mh, fo, ovf, twos, lblc, lblcr)",
                "4: lb_kind `FULLNAT` is not supported yet (supported: DR, TUN, NAT, FNAT)",
                "8: `10.0.0.300` is not an IPv4 or IPv6 address",
                "10: weight `70000` is not an integer in 0..=65535",
                "16: protocol `SCTP` is not supported (supported: TCP, UDP)",
                "20: port 0 (all ports) is not supported yet",
                "22: virtual_server fwmark `0` is not a firewall mark (1..=4294967295)",
            ]
        );
        assert_eq!(
            errors[0].to_string(),
            "k.conf:3: error: lb_algo `fastest` is not supported yet (supported: rr, wrr, lc, wlc, sh, dh, sed, nq, mh, fo, ovf, twos, lblc, lblcr)"
        );
    }

    #[test]
    fn a_real_server_needs_its_block() {
        assert_eq!(
            lines(&errors(
                "virtual_server 192.0.2.1 80 {\n lb_kind DR\n real_server 10.0.0.1 80\n}\n"
            )),
            [
                "3: real_server needs a block: `real_server IP PORT { … }` (`{}` when it has no settings)"
            ]
        );
    }

    #[test]
    fn duplicate_services_and_dr_port_mismatch() {
        let errors = errors(
            "
virtual_server 192.0.2.1 80 {
    lb_algo rr
    lb_kind DR
    real_server 10.0.0.1 80 {}
}
virtual_server 192.0.2.1 80 {
    lb_algo rr
    lb_kind DR
    real_server 10.0.0.1 80 {}
}
",
        );
        assert_eq!(
            lines(&errors),
            ["7: duplicate virtual_server 192.0.2.1 80 UDP"]
        );

        let loaded = ok("
virtual_server 192.0.2.1 80 {
    lb_algo rr
    lb_kind DR
    protocol TCP
    persistence_engine sip
    real_server 10.0.0.1 8080 {}
    real_server 10.0.0.1 80 {}
}
");
        assert_eq!(
            lines(&loaded.warnings),
            [
                "6: virtual_server keyword `persistence_engine` is not supported yet; ignored",
                "7: real_server port 8080 differs from the virtual_server port 80; DR does not translate ports, so 80 is used, as keepalived does",
                "8: duplicate real_server 10.0.0.1 80; the second is removed, as keepalived does",
            ]
        );
        assert_eq!(loaded.config.virtual_servers[0].reals.len(), 1);
        assert_eq!(loaded.config.virtual_servers[0].reals[0].port, 80);
    }
    #[test]
    fn fwmark_services_take_their_family_from_ip_family_or_their_reals() {
        let loaded = ok("
virtual_server fwmark 1 {
    lb_algo rr
    lb_kind DR
    protocol UDP
    ops
    real_server 10.0.0.1 80 {
        TCP_CHECK {}
        MISC_CHECK { misc_path /bin/true }
    }
    real_server 10.0.0.2 80 {
        TCP_CHECK { connect_port 8080 }
    }
}
virtual_server fwmark 1 {
    lb_algo rr
    lb_kind NAT
    real_server 2001:db8::1 8080 {}
    real_server 2001:db8::2 0 {}
}
virtual_server fwmark 2 {
    ip_family inet
    lb_algo rr
    lb_kind TUN
    protocol TCP
    real_server 2001:db8::1 80 {}
}
");
        let [dr, nat, tun] = loaded.config.virtual_servers.as_slice() else {
            panic!("{:?}", loaded.config.virtual_servers)
        };
        // The kernel's firewall-mark services are TCP; ops applies to their UDP packets.
        assert_eq!(
            (dr.addr, dr.port, dr.protocol, dr.fwmark, dr.one_packet),
            ("0.0.0.0".parse().unwrap(), 0, Protocol::Tcp, Some(1), true)
        );
        // DR keeps the packet's port: the real's goes to its checkers.
        assert_eq!(dr.reals[0].port, 0);
        let ports: Vec<Option<u16>> = dr.reals[0]
            .checkers
            .iter()
            .map(|c| c.connect_port)
            .collect();
        assert_eq!(ports, [Some(80), None]);
        assert_eq!(dr.reals[1].checkers[0].connect_port, Some(8080));
        // The same mark, another family: another service. NAT keeps the real's port
        // (0: the packet's).
        assert_eq!((nat.addr, nat.fwmark), ("::".parse().unwrap(), Some(1)));
        let ports: Vec<u16> = nat.reals.iter().map(|r| r.port).collect();
        assert_eq!(ports, [8080, 0]);
        // ip_family decides over the reals: IPv4 packets tunnelled to an IPv6 real.
        assert_eq!(
            (tun.addr, tun.fwmark),
            ("0.0.0.0".parse().unwrap(), Some(2))
        );
        assert_eq!(
            (tun.reals[0].addr, tun.reals[0].port),
            ("2001:db8::1".parse().unwrap(), 0)
        );
        let warnings = specific(&loaded.warnings);
        assert!(
            warnings.contains(&"7: virtual_server fwmark 1: real_server 10.0.0.1 port 80 is not used for forwarding (the packet keeps its port); checkers without connect_port connect to it, as keepalived does".to_owned()),
            "{warnings:?}"
        );

        let errors = errors(
            "
virtual_server fwmark 3 {
    lb_algo rr
    lb_kind DR
    real_server 10.0.0.1 0 {
        TCP_CHECK { connect_port 80 }
    }
}
virtual_server fwmark 3 {
    lb_algo rr
    lb_kind DR
    real_server 10.0.0.1 0 {
        TCP_CHECK {}
    }
    real_server 10.0.0.2 80 {}
}
virtual_server fwmark 3 {
    lb_algo rr
    lb_kind DR
    real_server 10.0.0.1 80 {}
}
virtual_server fwmark 4 {
    ip_family inet5
    lb_algo rr
    lb_kind FNAT
    laddr_group_name pool
    real_server 10.0.0.1 80 {}
}
local_address_group pool {
    10.0.1.1
}
virtual_server 192.0.2.1 0 {
}
",
        );
        assert_eq!(
            lines(&errors),
            [
                "12: real_server port 0 keeps the packet's port: its checkers need `connect_port`",
                "17: duplicate virtual_server fwmark 3",
                "22: virtual_server fwmark 4: lb_kind FNAT needs a VIP and port (FullNAT runs in XDP, which cannot see firewall marks; the kernel's IPVS has no FullNAT)",
                "23: ip_family `inet5` is not an address family (inet or inet6)",
                "32: port 0 (all ports) is not supported yet",
            ]
        );
    }

    #[test]
    fn tun_takes_keepalived_tunnel_options() {
        let service = |kind: &str| {
            format!(
                "virtual_server 192.0.2.1 80 {{\n lb_algo rr\n {kind}\n protocol TCP\n real_server 10.0.0.1 80 {{}}\n}}\n"
            )
        };
        let tunnel = |kind: &str| ok(&service(kind)).config.virtual_servers[0].tunnel;
        assert_eq!(tunnel("lb_kind TUN"), TunnelType::Ipip);
        assert_eq!(tunnel("lb_kind TUN type ipip"), TunnelType::Ipip);
        assert_eq!(
            tunnel("lvs_method TUN type gue port 6080 csum"),
            TunnelType::Gue {
                port: 6080,
                checksum: TunnelChecksum::Checksum
            }
        );
        assert_eq!(
            tunnel("lb_kind TUN port 5555 type gue remcsum"),
            TunnelType::Gue {
                port: 5555,
                checksum: TunnelChecksum::Remote
            }
        );
        assert_eq!(
            tunnel("lb_kind TUN type gre"),
            TunnelType::Gre {
                checksum: TunnelChecksum::None
            }
        );
        for (kind, error) in [
            (
                "lb_kind TUN type gue",
                "a GUE tunnel needs `port N`, the reals' GUE port",
            ),
            (
                "lb_kind TUN type gre port 1",
                "`port` applies to GUE tunnels only",
            ),
            (
                "lb_kind TUN type gre remcsum",
                "GRE tunnels have no remote checksum offload (remcsum)",
            ),
            ("lb_kind TUN csum", "IPIP tunnels have no checksum option"),
            (
                "lb_kind TUN type vxlan",
                "tunnel type `vxlan` is not one of ipip, gue, gre",
            ),
            (
                "lb_kind TUN type gue port 0",
                "`port` needs the GUE port (1..=65535)",
            ),
        ] {
            assert_eq!(
                lines(&errors(&service(kind))),
                [format!("3: {error}")],
                "{kind}"
            );
        }
    }

    #[test]
    fn full_nat_takes_the_pool_of_its_family_from_the_named_group() {
        let loaded = ok("
virtual_server 192.0.2.1 80 {
    lb_kind FNAT
    laddr_group_name laddr_g1
    real_server 10.0.0.1 8080 {}
}
local_address_group laddr_g1 {
    10.0.1.10-12
    2001:db8:1::10
    10.0.1.10
}
virtual_server 2001:db8::1 80 {
    lvs_method FNAT
    laddr_group_name laddr_g1
    real_server 2001:db8:2::1 80 {}
}
virtual_server 192.0.2.2 80 {
    lb_kind NAT
    laddr_group_name laddr_g1
    real_server 10.0.0.1 8080 {}
}
");
        let vs = &loaded.config.virtual_servers;
        assert_eq!(vs[0].forward, ForwardMethod::FullNat);
        let pool: Vec<String> = vs[0]
            .local_addresses
            .iter()
            .map(|a| a.to_string())
            .collect();
        assert_eq!(pool, ["10.0.1.10", "10.0.1.11", "10.0.1.12"]);
        assert_eq!(
            vs[1].local_addresses,
            ["2001:db8:1::10".parse::<std::net::IpAddr>().unwrap()]
        );
        assert!(vs[2].local_addresses.is_empty());
        assert_eq!(
            specific(&loaded.warnings),
            ["19: laddr_group_name applies to lb_kind FNAT only; ignored"]
        );
    }

    #[test]
    fn full_nat_without_a_usable_pool_is_an_error() {
        let errors = errors(
            "
local_address_group v6only {
    2001:db8:1::10
}
local_address_group bad {
    10.0.1.300
    10.0.1.20-10
}
virtual_server 192.0.2.1 80 {
    lb_kind FNAT
}
virtual_server 192.0.2.2 80 {
    lb_kind FNAT
    laddr_group_name nosuch
}
virtual_server 192.0.2.3 80 {
    lb_kind FNAT
    laddr_group_name v6only
}
virtual_server 192.0.2.4 53 {
    protocol UDP
    ops
    lb_kind FNAT
    laddr_group_name v6only
}
",
        );
        assert_eq!(
            lines(&errors),
            [
                "5: local_address_group bad has no address",
                "6: `10.0.1.300` is not an address or an address range (such as 192.0.2.10-20)",
                "7: range `10.0.1.20-10` must end at or after its first address, at most 255",
                "9: lb_kind FNAT needs `laddr_group_name NAME`, naming a local_address_group with the director's local addresses",
                "14: laddr_group_name `nosuch`: no local_address_group of that name",
                "18: local_address_group v6only has no IPv4 address for virtual_server 192.0.2.3",
                "22: `ops` (one-packet scheduling) is not supported with lb_kind FNAT",
                "24: local_address_group v6only has no IPv4 address for virtual_server 192.0.2.4",
            ]
        );
    }
    #[test]
    fn tunnel_sources_per_virtual_server_and_global() {
        let loaded = ok("
global_defs {
    lvs_tun_source 2001:db8::fe 10.0.0.254
}
virtual_server 192.0.2.1 80 {
    lb_kind TUN
    tun_source 10.0.0.253
    real_server 10.0.0.1 80 {}
}
virtual_server 192.0.2.2 80 {
    lb_kind DR
    tun_source 10.0.0.253
    real_server 10.0.0.1 80 {}
}
");
        let config = &loaded.config;
        assert_eq!(config.tun_sources.len(), 2);
        assert_eq!(
            config.virtual_servers[0].tun_sources,
            ["10.0.0.253".parse::<std::net::IpAddr>().unwrap()]
        );
        assert!(config.virtual_servers[1].tun_sources.is_empty());
        assert_eq!(
            specific(&loaded.warnings),
            ["12: tun_source applies to lb_kind TUN (or a real's lvs_method TUN) only; ignored"]
        );
        let errors = errors(
            "
virtual_server 192.0.2.1 80 {
    lb_kind TUN
    tun_source 10.0.0.1 10.0.0.2
}
global_defs {
    lvs_tun_source
}
",
        );
        assert_eq!(
            lines(&errors),
            [
                "4: `tun_source` has two addresses of one family",
                "7: `lvs_tun_source` takes one address, or one IPv4 and one IPv6 address",
            ]
        );
    }

    #[test]
    fn misspelt_keywords_get_the_nearest_one_and_known_ones_say_not_yet() {
        let loaded = ok("
vrrp_instnace VI_1 {
}
virtual_server 192.0.2.1 80 {
    lb_algoo rr
    persistence_engine sip
    real_server 10.0.0.1 80 {
        wieght 2
    }
}
");
        assert_eq!(
            lines(&loaded.warnings),
            [
                "2: unknown `vrrp_instnace`; ignored (did you mean `vrrp_instance`?)",
                "4: no `protocol`: UDP, as keepalived and the kernel default to (write `protocol TCP` for TCP)",
                "4: no `lb_algo`: wlc, keepalived's default",
                "4: no `lb_kind`: NAT, keepalived's default",
                "5: unknown virtual_server keyword `lb_algoo`; ignored (did you mean `lb_algo`?)",
                "6: virtual_server keyword `persistence_engine` is not supported yet; ignored",
                "8: unknown real_server keyword `wieght`; ignored (did you mean `weight`?)",
            ]
        );
    }

    #[test]
    fn checkers_take_their_timing_from_the_real_then_the_virtual_server() {
        let loaded = ok("
virtual_server 192.0.2.1 80 {
    lb_kind DR
    delay_loop 10
    connect_timeout 7
    quorum 2
    sorry_server 10.0.0.9 80
    real_server 10.0.0.1 80 {
        weight 2
        retry 4
        notify_down /bin/down.sh now
        HTTP_GET {
            url {
                path /health
                status_code 200 301-302
            }
            nb_get_retry 2
        }
        MISC_CHECK {
            misc_path /bin/check 10.0.0.1
            misc_dynamic
        }
        DNS_CHECK {
            name example.org
        }
    }
}
");
        let vs = &loaded.config.virtual_servers[0];
        assert_eq!(vs.extras.quorum, 2);
        assert_eq!(vs.extras.sorry_server.map(|s| s.port), Some(80));
        let real = &vs.reals[0];
        assert_eq!(real.notify_down.as_deref(), Some("/bin/down.sh now"));
        let [http, misc, dns] = real.checkers.as_slice() else {
            panic!("{:?}", real.checkers)
        };
        // nb_get_retry is read as retry (with a warning); HTTP's delay_before_retry is 3 s.
        assert_eq!(
            (http.retry, http.delay_before_retry),
            (2, Duration::from_secs(3))
        );
        assert_eq!(http.connect_timeout, Duration::from_secs(7));
        assert_eq!(http.delay_loop, Duration::from_secs(10));
        let crate::model::check::CheckKind::Http(get) = &http.kind else {
            panic!("{http:?}")
        };
        assert_eq!(get.urls[0].status_code, [(200, 200), (301, 302)]);
        // The real's retry 4 wins over MISC_CHECK's default 0; DNS's delay_before_retry
        // is its delay_loop.
        assert_eq!(misc.retry, 4);
        assert_eq!(dns.delay_before_retry, Duration::from_secs(10));
        assert_eq!(
            specific(&loaded.warnings),
            ["17: `nb_get_retry` is deprecated; use `retry` (read as retry, as keepalived does)"]
        );
    }

    #[test]
    fn connection_thresholds_are_read_and_checked() {
        let loaded = ok("virtual_server 192.0.2.1 80 {
    lb_kind NAT
    protocol TCP
    real_server 10.1.0.11 80 {
        uthreshold 100
        lthreshold 10
    }
    real_server 10.1.0.12 80 {}
}
");
        let reals = &loaded.config.virtual_servers[0].reals;
        assert_eq!(
            (reals[0].upper_threshold, reals[0].lower_threshold),
            (100, 10)
        );
        assert_eq!((reals[1].upper_threshold, reals[1].lower_threshold), (0, 0));
        assert!(
            !lines(&loaded.warnings)
                .iter()
                .any(|l| l.contains("threshold")),
            "{:?}",
            lines(&loaded.warnings)
        );
        let errors = errors(
            "virtual_server 192.0.2.1 80 {
    lb_kind NAT
    protocol TCP
    real_server 10.1.0.11 80 {
        uthreshold 10
        lthreshold 100
    }
}
",
        );
        assert_eq!(
            lines(&errors),
            [
                "4: lthreshold 100 is above uthreshold 10 (IPVS refuses that; uthreshold 0 means no limit)"
            ]
        );
    }
}
