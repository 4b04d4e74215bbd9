//! Text views of what lbd reports about itself: the VRRP instances (state, priority,
//! master, VIPs, counters) and the checkers of each real (verdict, since when, last
//! result, failures). Times are shown relative to `now_ms`, so a view is reproducible.

use std::fmt::Write as _;

use crate::{
    dataplane::xdp::dump::MapSummary,
    status::{CheckStatus, VrrpStatus},
};

/// `5s`, `3m12s`, `2h05m`, `4d03h`: how long ago `then_ms` was at `now_ms`.
pub fn ago(then_ms: u64, now_ms: u64) -> String {
    let secs = now_ms.saturating_sub(then_ms) / 1000;
    match secs {
        0..60 => format!("{secs}s"),
        60..3600 => format!("{}m{:02}s", secs / 60, secs % 60),
        3600..86400 => format!("{}h{:02}m", secs / 3600, secs % 3600 / 60),
        _ => format!("{}d{:02}h", secs / 86400, secs % 86400 / 3600),
    }
}

/// The VRRP instances: one line each, then their counters.
pub fn vrrp(instances: &[VrrpStatus], now_ms: u64) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<16} {:<7} {:>4} {:>8} {:<3} {:<12} {:<24} {:>9}  VIPs",
        "Instance", "State", "VRID", "Priority", "Ver", "Interface", "Master", "Since"
    );
    for i in instances {
        let master = match i.master {
            Some(addr) if i.state == "MASTER" => format!("{addr} (this)"),
            Some(addr) => addr.to_string(),
            None => "-".to_owned(),
        };
        let vips: Vec<String> = i.vips.iter().map(|a| a.to_string()).collect();
        let _ = writeln!(
            out,
            "{:<16} {:<7} {:>4} {:>8} {:<3} {:<12} {:<24} {:>9}  {}",
            i.name,
            i.state,
            i.vrid,
            format!("{}/{}", i.priority, i.configured_priority),
            format!("v{}", i.version),
            i.interface,
            master,
            ago(i.since_unix_ms, now_ms),
            vips.join(",")
        );
    }
    if !instances.is_empty() {
        let _ = writeln!(
            out,
            "\n{:<16} {:>8} {:>8} {:>7} {:>8} {:>9} {:>9} {:>8} {:>5} {:>8} {:>5}",
            "Counters",
            "AdvRcvd",
            "AdvSent",
            "Master",
            "Released",
            "Prio0Rcvd",
            "Prio0Sent",
            "Invalid",
            "TTL",
            "Version",
            "Auth"
        );
    }
    for i in instances {
        let c = &i.counters;
        let _ = writeln!(
            out,
            "{:<16} {:>8} {:>8} {:>7} {:>8} {:>9} {:>9} {:>8} {:>5} {:>8} {:>5}",
            i.name,
            c.adverts_received,
            c.adverts_sent,
            c.became_master,
            c.released_master,
            c.priority_zero_received,
            c.priority_zero_sent,
            c.invalid_packets,
            c.ttl_errors,
            c.version_errors,
            c.auth_errors
        );
    }
    out
}

/// The checkers, one line each, by service and real.
pub fn checks(checks: &[CheckStatus], now_ms: u64) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<26} {:<26} {:<11} {:<5} {:>9} {:>7} {:>8} {:>8}  Last result",
        "Service", "Real", "Check", "State", "Since", "Failing", "Failures", "Probes"
    );
    for c in checks {
        let real = match c.real {
            std::net::IpAddr::V4(a) => format!("{a}:{}", c.port),
            std::net::IpAddr::V6(a) => format!("[{a}]:{}", c.port),
        };
        let last = match (&c.last_result, c.last_probe_unix_ms) {
            (Some(result), Some(at)) => format!("{result} ({} ago)", ago(at, now_ms)),
            _ => "not probed yet".to_owned(),
        };
        let _ = writeln!(
            out,
            "{:<26} {:<26} {:<11} {:<5} {:>9} {:>7} {:>8} {:>8}  {}",
            c.service,
            real,
            format!("{}#{}", c.kind, c.index),
            if c.up { "UP" } else { "DOWN" },
            ago(c.since_unix_ms, now_ms),
            c.consecutive_failures,
            c.failures,
            c.probes,
            last
        );
    }
    out
}

/// `lbctl map list`.
pub fn map_list(maps: &[MapSummary]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<20} {:<18} {:>8} {:>10} {:>11}",
        "Name", "Type", "KeySize", "ValueSize", "MaxEntries"
    );
    for m in maps {
        let _ = writeln!(
            out,
            "{:<20} {:<18} {:>8} {:>10} {:>11}",
            m.name, m.kind, m.key_size, m.value_size, m.max_entries
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::ago;

    #[test]
    fn ages_pick_two_units() {
        assert_eq!(ago(0, 59_999), "59s");
        assert_eq!(ago(0, 192_000), "3m12s");
        assert_eq!(ago(0, 7_500_000), "2h05m");
        assert_eq!(ago(0, 3 * 86_400_000 + 3_600_000), "3d01h");
        assert_eq!(ago(10, 0), "0s", "a clock that went back shows 0");
    }
}
