//! Text views of what lbd reports about itself: the VRRP instances (state, priority,
//! master, VIPs, counters), the checkers of each real (verdict, since when, last result,
//! failures) and connection sync (role, messages and connections each way, errors).
//! Times are shown relative to `now_ms`, so a view is reproducible.

use std::fmt::Write as _;

use crate::{
    dataplane::xdp::dump::MapSummary,
    status::{CheckStatus, SyncView, VrrpStatus},
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

/// `lbctl sync`: the sync daemon's settings, role, peers and counters, and the failback's
/// resync; ages as of `now_ms`.
pub fn sync(view: Option<&SyncView>, now_ms: u64) -> String {
    let Some(v) = view else {
        return "no connection sync (lvs_sync_daemon) in this configuration\n".to_owned();
    };
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Sync daemon on {} ({} port {}, sync id {}), following {}: {}",
        v.interface,
        v.group,
        v.port,
        v.syncid,
        v.vrrp_instance.as_deref().unwrap_or("no VRRP instance"),
        v.role
    );
    if v.engine == "kernel" {
        // The kernel's daemon keeps its own counters, which it does not export.
        let daemons = if v.kernel_daemons.is_empty() {
            "none".to_owned()
        } else {
            v.kernel_daemons.join("; ")
        };
        let _ = writeln!(out, "the kernel's IPVS sync daemons: {daemons}");
        if let Some(error) = &v.kernel_error {
            let _ = writeln!(out, "last error: {error}");
        }
        return out;
    }
    let _ = writeln!(out, "{:<10} {:>10} {:>12}", "", "Messages", "Connections");
    let _ = writeln!(
        out,
        "{:<10} {:>10} {:>12}",
        "sent", v.messages_sent, v.conns_sent
    );
    let _ = writeln!(
        out,
        "{:<10} {:>10} {:>12}",
        "received", v.messages_received, v.conns_received
    );
    let _ = writeln!(
        out,
        "installed {}, refused {}, resent by table walks {}",
        v.installed, v.install_errors, v.refreshed
    );
    let _ = writeln!(
        out,
        "dropped: other sync id {}, while not backup {}, malformed {}; records skipped {}, not synced (FullNAT) {}, send errors {}",
        v.other_syncid, v.not_backup, v.malformed, v.skipped_conns, v.not_synced, v.send_errors
    );
    let peers: Vec<String> = v
        .peers
        .iter()
        .map(|p| {
            format!(
                "{} ({} datagrams, last {} ago)",
                p.address,
                p.datagrams,
                ago(p.last_unix_ms, now_ms)
            )
        })
        .collect();
    let _ = writeln!(
        out,
        "peers: {}",
        if peers.is_empty() {
            "none heard".to_owned()
        } else {
            peers.join(", ")
        }
    );
    let _ = writeln!(
        out,
        "failback: preemption {}; resync requests sent {}, complete {}, timed out {}; requests answered {} ({} connections); resync messages dropped {}",
        if v.holds_preemption {
            "held until the master's connections are in"
        } else {
            "free"
        },
        v.resync_requests_sent,
        v.resyncs_completed,
        v.resyncs_timed_out,
        v.resync_requests_served,
        v.resync_conns_served,
        v.resync_dropped
    );
    if let Some(last) = &v.last_resync {
        let conns = last
            .conns
            .map(|n| format!(", {n} connections"))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "last resync: {}{conns} after {} ms, {} ago",
            last.outcome,
            last.took_ms,
            ago(last.ended_unix_ms, now_ms)
        );
    }
    for (what, error) in [
        ("last refusal", &v.last_install_error),
        ("last malformed message", &v.last_malformed),
        ("last malformed resync message", &v.last_resync_malformed),
        ("last table walk error", &v.last_walk_error),
    ] {
        if let Some(error) = error {
            let _ = writeln!(out, "{what}: {error}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::{SyncView, ago, sync};
    use crate::status::{LastResyncView, SyncPeerView};

    #[test]
    fn sync_shows_role_counters_and_errors() {
        let view = SyncView {
            interface: "eth0".into(),
            group: "224.0.0.81".into(),
            port: 8848,
            syncid: 9,
            vrrp_instance: Some("VI_1".into()),
            role: "BACKUP".into(),
            messages_received: 3,
            conns_received: 16,
            installed: 15,
            install_errors: 1,
            last_install_error: Some(
                "no virtual service 192.0.2.1 port 443 protocol 6 here".into(),
            ),
            peers: vec![SyncPeerView {
                address: "10.0.0.3".into(),
                datagrams: 5,
                last_unix_ms: 9_000,
            }],
            resync_requests_sent: 2,
            resyncs_completed: 1,
            last_resync: Some(LastResyncView {
                outcome: "complete".into(),
                conns: Some(16),
                took_ms: 12,
                ended_unix_ms: 8_000,
            }),
            ..SyncView::default()
        };
        assert_eq!(
            sync(Some(&view), 10_000),
            "Sync daemon on eth0 (224.0.0.81 port 8848, sync id 9), following VI_1: BACKUP\n\
             \x20            Messages  Connections\n\
             sent                0            0\n\
             received            3           16\n\
             installed 15, refused 1, resent by table walks 0\n\
             dropped: other sync id 0, while not backup 0, malformed 0; records skipped 0, not synced (FullNAT) 0, send errors 0\n\
             peers: 10.0.0.3 (5 datagrams, last 1s ago)\n\
             failback: preemption free; resync requests sent 2, complete 1, timed out 0; requests answered 0 (0 connections); resync messages dropped 0\n\
             last resync: complete, 16 connections after 12 ms, 2s ago\n\
             last refusal: no virtual service 192.0.2.1 port 443 protocol 6 here\n"
        );
        let held = SyncView {
            holds_preemption: true,
            ..SyncView::default()
        };
        assert!(sync(Some(&held), 0).contains(
            "peers: none heard\nfailback: preemption held until the master's connections are in;"
        ));
        assert!(sync(None, 0).starts_with("no connection sync"));
        let kernel = SyncView {
            interface: "eth0".into(),
            group: "224.0.0.81".into(),
            port: 8848,
            syncid: 51,
            vrrp_instance: Some("VI_1".into()),
            role: "MASTER".into(),
            engine: "kernel".into(),
            kernel_daemons: vec!["master on eth0, sync id 51".into()],
            ..SyncView::default()
        };
        assert_eq!(
            sync(Some(&kernel), 0),
            "Sync daemon on eth0 (224.0.0.81 port 8848, sync id 51), following VI_1: MASTER\n\
             the kernel's IPVS sync daemons: master on eth0, sync id 51\n"
        );
    }

    #[test]
    fn ages_pick_two_units() {
        assert_eq!(ago(0, 59_999), "59s");
        assert_eq!(ago(0, 192_000), "3m12s");
        assert_eq!(ago(0, 7_500_000), "2h05m");
        assert_eq!(ago(0, 3 * 86_400_000 + 3_600_000), "3d01h");
        assert_eq!(ago(10, 0), "0s", "a clock that went back shows 0");
    }
}
