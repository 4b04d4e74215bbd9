//! Values of keywords, read the way keepalived reads them, each with an error at the
//! statement's location when it is not one: addresses, ports, seconds, netmasks, numbers
//! in a range, flags without a value.

use std::{net::IpAddr, time::Duration};

use super::{Diagnostic, Location, tree::Statement};

/// A track weight's bounds (keepalived's).
const MAX_WEIGHT: i32 = 253;

pub fn single_arg<'a>(
    statement: &'a Statement,
    diagnostics: &mut Vec<Diagnostic>,
) -> Option<&'a str> {
    match statement.args.as_slice() {
        [value] => Some(&value.text),
        _ => {
            diagnostics.push(Diagnostic::error(
                statement.location(),
                format!("`{}` takes exactly one value", statement.name()),
            ));
            None
        }
    }
}

pub fn parse_addr(
    text: &str,
    location: &Location,
    diagnostics: &mut Vec<Diagnostic>,
) -> Option<IpAddr> {
    text.parse()
        .map_err(|_| {
            diagnostics.push(Diagnostic::error(
                location,
                format!("`{text}` is not an IPv4 or IPv6 address"),
            ))
        })
        .ok()
}

pub fn parse_port(
    text: &str,
    location: &Location,
    diagnostics: &mut Vec<Diagnostic>,
) -> Option<u16> {
    match text.parse::<u16>() {
        Ok(0) => {
            diagnostics.push(Diagnostic::error(
                location,
                "port 0 (all ports) is not supported yet",
            ));
            None
        }
        Ok(port) => Some(port),
        Err(_) => {
            diagnostics.push(Diagnostic::error(
                location,
                format!("`{text}` is not a port number (1..=65535)"),
            ));
            None
        }
    }
}

/// `persistence_granularity`: an IPv4 netmask with contiguous ones, or an IPv6 prefix
/// length; as a prefix length.
pub fn parse_granularity(text: &str, ipv4: bool) -> Option<u8> {
    if ipv4 {
        let mask = u32::from(text.parse::<std::net::Ipv4Addr>().ok()?);
        let ones = mask.leading_ones();
        (ones > 0 && mask.checked_shl(ones).unwrap_or(0) == 0).then_some(ones as u8)
    } else {
        text.parse::<u8>().ok().filter(|p| (1..=128).contains(p))
    }
}

/// keepalived accepts fractional seconds (`delay_loop 1.5`).
pub fn parse_seconds(
    text: &str,
    location: &Location,
    diagnostics: &mut Vec<Diagnostic>,
) -> Option<Duration> {
    match text.parse::<f64>() {
        // To the microsecond (keepalived's timer resolution), so that `0.37` is 370 ms
        // and not a float's 369.999999 ms.
        Ok(secs) if (1e-6..1e9).contains(&secs) => {
            Some(Duration::from_micros((secs * 1e6).round() as u64))
        }
        _ => {
            diagnostics.push(Diagnostic::error(
                location,
                format!("`{text}` is not a positive number of seconds"),
            ));
            None
        }
    }
}

/// A number in `range` (written in decimal), or an error naming the keyword.
pub fn parse_in_range<T>(
    statement: &Statement,
    range: std::ops::RangeInclusive<T>,
    diagnostics: &mut Vec<Diagnostic>,
) -> Option<T>
where
    T: std::str::FromStr + PartialOrd + std::fmt::Display + Copy,
{
    let value = single_arg(statement, diagnostics)?;
    match value.parse::<T>() {
        Ok(n) if range.contains(&n) => Some(n),
        _ => {
            diagnostics.push(Diagnostic::error(
                statement.location(),
                format!(
                    "{} `{value}` is not a number in {}..={}",
                    statement.name(),
                    range.start(),
                    range.end()
                ),
            ));
            None
        }
    }
}

/// A keyword that takes no value (`nopreempt`, `ops`): whether it was written so.
pub fn no_value(statement: &Statement, diagnostics: &mut Vec<Diagnostic>) -> bool {
    if statement.args.is_empty() && statement.block.is_none() {
        return true;
    }
    diagnostics.push(Diagnostic::error(
        statement.location(),
        format!("`{}` takes no value", statement.name()),
    ));
    false
}

/// The keyword's one value as an address.
pub fn addr_arg(statement: &Statement, diagnostics: &mut Vec<Diagnostic>) -> Option<IpAddr> {
    let at = statement.location();
    single_arg(statement, diagnostics).and_then(|v| parse_addr(v, at, diagnostics))
}

/// The keyword's one value as a port.
pub fn port_arg(statement: &Statement, diagnostics: &mut Vec<Diagnostic>) -> Option<u16> {
    let at = statement.location();
    single_arg(statement, diagnostics).and_then(|v| parse_port(v, at, diagnostics))
}

/// keepalived's optional boolean (`smtp_alert`, `smtp_alert no`): no value is true;
/// `yes`/`true`/`on` and `no`/`false`/`off`. Anything else is ignored with a warning, as
/// keepalived ignores it.
pub fn optional_bool(statement: &Statement, diagnostics: &mut Vec<Diagnostic>) -> Option<bool> {
    match statement.args.as_slice() {
        [] => Some(true),
        [word] => match word.text.to_ascii_lowercase().as_str() {
            "yes" | "true" | "on" => Some(true),
            "no" | "false" | "off" => Some(false),
            other => {
                diagnostics.push(Diagnostic::warning(
                    statement.location(),
                    format!(
                        "`{}` takes yes or no, not `{other}`; ignored",
                        statement.name()
                    ),
                ));
                None
            }
        },
        _ => {
            diagnostics.push(Diagnostic::warning(
                statement.location(),
                format!("`{}` takes at most yes or no; ignored", statement.name()),
            ));
            None
        }
    }
}

/// The rest of the line as one text (a script's command line).
pub fn rest_of_line(statement: &Statement, diagnostics: &mut Vec<Diagnostic>) -> Option<String> {
    if statement.args.is_empty() {
        diagnostics.push(Diagnostic::error(
            statement.location(),
            format!("`{}` needs a value", statement.name()),
        ));
        return None;
    }
    Some(
        statement
            .args
            .iter()
            .map(|t| t.text.as_str())
            .collect::<Vec<_>>()
            .join(" "),
    )
}

/// Seconds that may be 0.
pub fn parse_seconds_or_zero(
    text: &str,
    at: &Location,
    diagnostics: &mut Vec<Diagnostic>,
) -> Option<Duration> {
    if text.parse::<f64>() == Ok(0.0) {
        return Some(Duration::ZERO);
    }
    parse_seconds(text, at, diagnostics)
}

/// The `W [reverse]` of `weight W [reverse]` (the value after `weight` when the keyword
/// is the item's first argument, as in track lines).
pub fn weight_args(item: &Statement, diagnostics: &mut Vec<Diagnostic>) -> Option<(i32, bool)> {
    let mut args: Vec<&str> = item.args.iter().map(|t| t.text.as_str()).collect();
    if args.first() == Some(&"weight") {
        args.remove(0);
    }
    let (value, rest) = args
        .split_first()
        .map(|(v, r)| (*v, r))
        .unwrap_or(("", &[]));
    let weight = value.parse::<i32>().ok().filter(|w| w.abs() <= MAX_WEIGHT);
    let reverse = match rest {
        [] | ["noreverse"] => Some(false),
        ["reverse"] => Some(true),
        _ => None,
    };
    match (weight, reverse) {
        (Some(w), Some(r)) => Some((w, r)),
        _ => {
            diagnostics.push(Diagnostic::error(
                item.location(),
                format!(
                    "weight `{}` is not `N [reverse]` with N in -{MAX_WEIGHT}..={MAX_WEIGHT}",
                    args.join(" ")
                ),
            ));
            None
        }
    }
}
