//! The address and route lines of `virtual_ipaddress`, `virtual_ipaddress_excluded`,
//! `static_ipaddress` (`IP[/PREFIX] [brd IP] [dev IF] [scope S] [label L] [no_track]`) and
//! of `virtual_routes`, `static_routes` (`ip route` syntax).

use std::net::IpAddr;

use super::{Diagnostic, Location, tree::Statement};
use crate::model::vrrp::{IpAddress, Route};

/// Every line of an address block.
pub fn address_block(block: &Statement, diagnostics: &mut Vec<Diagnostic>) -> Vec<IpAddress> {
    block
        .block
        .as_deref()
        .unwrap_or_default()
        .iter()
        .filter_map(|line| address_line(line, diagnostics))
        .collect()
}

/// Every line of a route block.
pub fn route_block(block: &Statement, diagnostics: &mut Vec<Diagnostic>) -> Vec<Route> {
    block
        .block
        .as_deref()
        .unwrap_or_default()
        .iter()
        .filter_map(|line| route_line(line, diagnostics))
        .collect()
}

/// The words of a line whose first word is the statement's keyword.
fn words(line: &Statement) -> Vec<&str> {
    std::iter::once(line.name())
        .chain(line.args.iter().map(|t| t.text.as_str()))
        .collect()
}

fn address_line(line: &Statement, diagnostics: &mut Vec<Diagnostic>) -> Option<IpAddress> {
    let location = line.location();
    let words = words(line);
    let (addr, prefix_len) = prefix(words[0], location, diagnostics)?;
    let mut address = IpAddress {
        addr,
        prefix_len,
        broadcast: None,
        dev: None,
        scope: None,
        label: None,
        no_track: false,
    };
    let mut rest = words[1..].iter();
    while let Some(&word) = rest.next() {
        let mut value = |what: &str| {
            let value = rest.next().copied();
            if value.is_none() {
                diagnostics.push(Diagnostic::error(
                    location,
                    format!("`{word}` needs a {what}"),
                ));
            }
            value
        };
        match word {
            "brd" | "broadcast" => {
                let value = value("broadcast address")?;
                // `+` and `-` ask the kernel to derive it.
                if value != "+" && value != "-" {
                    address.broadcast = Some(ip(value, location, diagnostics)?);
                }
            }
            "dev" => address.dev = Some(value("interface")?.to_owned()),
            "scope" => address.scope = Some(value("scope")?.to_owned()),
            "label" => address.label = Some(value("label")?.to_owned()),
            "no_track" => address.no_track = true,
            // Accepted as keepalived does; nothing of lbd's depends on them.
            "home" | "-nodad" | "nodad" | "mngtmpaddr" | "noprefixroute" | "autojoin"
            | "use_vmac" => {}
            "peer" | "preferred_lft" | "track_group" => {
                value("value")?;
            }
            other => {
                diagnostics.push(Diagnostic::warning(
                    location,
                    format!("unknown address option `{other}`; ignored"),
                ));
            }
        }
    }
    Some(address)
}

fn route_line(line: &Statement, diagnostics: &mut Vec<Diagnostic>) -> Option<Route> {
    let location = line.location();
    let words = words(line);
    let mut route = Route {
        destination: IpAddr::from([0, 0, 0, 0]),
        prefix_len: 0,
        via: None,
        dev: None,
        src: None,
        table: None,
        metric: None,
        words: words.iter().map(|w| (*w).to_owned()).collect(),
    };
    let mut destination = None;
    let mut rest = words.iter();
    while let Some(&word) = rest.next() {
        let mut value = || rest.next().copied();
        match word {
            "to" => destination = value(),
            "via" | "gw" => route.via = Some(ip(value()?, location, diagnostics)?),
            "src" => route.src = Some(ip(value()?, location, diagnostics)?),
            "dev" | "oif" => route.dev = value().map(str::to_owned),
            "table" => route.table = value().map(str::to_owned),
            "metric" | "preference" | "priority" => {
                let text = value()?;
                route.metric = Some(text.parse().ok().or_else(|| {
                    diagnostics.push(Diagnostic::error(
                        location,
                        format!("route metric `{text}` is not a number"),
                    ));
                    None
                })?);
            }
            other if destination.is_none() && looks_like_destination(other) => {
                destination = Some(other)
            }
            _ => {}
        }
    }
    let Some(destination) = destination else {
        diagnostics.push(Diagnostic::error(location, "a route needs a destination"));
        return None;
    };
    if route.dev.is_none() && !words.contains(&"no_track") {
        diagnostics.push(Diagnostic::warning(
            location,
            format!("route {destination} has no `dev`: it cannot be tracked (keepalived says so and does not track it)"),
        ));
    }
    (route.destination, route.prefix_len) = match destination {
        // `default`: the family of the gateway, else IPv4.
        "default" => match route.via {
            Some(IpAddr::V6(_)) => (IpAddr::from([0u16; 8]), 0),
            _ => (IpAddr::from([0u8; 4]), 0),
        },
        text => prefix(text, location, diagnostics)?,
    };
    Some(route)
}

fn looks_like_destination(word: &str) -> bool {
    word == "default"
        || word
            .split('/')
            .next()
            .is_some_and(|a| a.parse::<IpAddr>().is_ok())
}

/// `ADDR[/PREFIX]` (the prefix defaults to the whole address).
fn prefix(
    text: &str,
    location: &Location,
    diagnostics: &mut Vec<Diagnostic>,
) -> Option<(IpAddr, u8)> {
    let (addr, length) = match text.split_once('/') {
        Some((addr, length)) => (addr, Some(length)),
        None => (text, None),
    };
    let addr = ip(addr, location, diagnostics)?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let prefix_len = match length {
        None => max,
        Some(length) => match length.parse::<u8>() {
            Ok(n) if n <= max => n,
            _ => {
                diagnostics.push(Diagnostic::error(
                    location,
                    format!("`{text}`: the prefix length must be 0..={max}"),
                ));
                return None;
            }
        },
    };
    Some((addr, prefix_len))
}

fn ip(text: &str, location: &Location, diagnostics: &mut Vec<Diagnostic>) -> Option<IpAddr> {
    super::values::parse_addr(text, location, diagnostics)
}
