//! The VRRP statistics in keepalived 2.2.7's layouts: `keepalived.stats` (SIGUSR2) and
//! `keepalived.json` (SIGRTMIN+2: per instance its `data` and `stats`). lbd's decoder
//! counts what it refuses as length errors (it does not tell length, type, interval and
//! address-list errors apart), and keepalived's other error kinds stay 0.

use std::fmt::Write as _;

use serde_json::{Value, json};

use super::Snapshot;
use crate::{
    model::vrrp::{AuthType, VrrpInstance},
    status::VrrpStatus,
};

/// `keepalived.stats`.
pub fn text(snapshot: &Snapshot) -> String {
    let mut text = String::new();
    for instance in &snapshot.config.vrrp_instances {
        let counters = status_of(snapshot, instance)
            .map(|s| s.counters.clone())
            .unwrap_or_default();
        let _ = writeln!(text, "VRRP Instance: {}", instance.name);
        text.push_str("  Advertisements:\n");
        let _ = writeln!(text, "    Received: {}", counters.adverts_received);
        let _ = writeln!(text, "    Sent: {}", counters.adverts_sent);
        let _ = writeln!(text, "  Became master: {}", counters.became_master);
        let _ = writeln!(text, "  Released master: {}", counters.released_master);
        text.push_str("  Packet Errors:\n");
        let _ = writeln!(text, "    Length: {}", counters.invalid_packets);
        let _ = writeln!(text, "    TTL: {}", counters.ttl_errors);
        let _ = writeln!(text, "    Invalid Type: {}", counters.version_errors);
        text.push_str("    Advertisement Interval: 0\n");
        text.push_str("    Address List: 0\n");
        text.push_str("  Authentication Errors:\n");
        text.push_str("    Invalid Type: 0\n");
        text.push_str("    Type Mismatch: 0\n");
        let _ = writeln!(text, "    Failure: {}", counters.auth_errors);
        text.push_str("  Priority Zero:\n");
        let _ = writeln!(text, "    Received: {}", counters.priority_zero_received);
        let _ = writeln!(text, "    Sent: {}", counters.priority_zero_sent);
    }
    text
}

/// `keepalived.json`: one object per instance with keepalived's `data` and `stats` keys
/// (those that apply), on one line.
pub fn json(snapshot: &Snapshot) -> String {
    let instances: Vec<Value> = snapshot
        .config
        .vrrp_instances
        .iter()
        .map(|instance| {
            let status = status_of(snapshot, instance);
            json!({
                "data": data(snapshot, instance, status),
                "stats": stats(status),
            })
        })
        .collect();
    format!("{}\n", Value::Array(instances))
}

fn status_of<'a>(snapshot: &'a Snapshot, instance: &VrrpInstance) -> Option<&'a VrrpStatus> {
    snapshot.vrrp.iter().find(|s| s.name == instance.name)
}

/// keepalived's numbers for the states.
fn state_number(state: &str) -> u8 {
    match state {
        "BACKUP" => 1,
        "MASTER" => 2,
        "FAULT" => 3,
        _ => 0,
    }
}

fn data(snapshot: &Snapshot, instance: &VrrpInstance, status: Option<&VrrpStatus>) -> Value {
    let state = status.map_or(0, |s| state_number(&s.state));
    let master_priority = match status.map(|s| s.state.as_str()) {
        Some("MASTER") => status.map_or(0, |s| s.priority),
        _ => 0,
    };
    let notify = &instance.notify;
    let mut data = json!({
        "iname": instance.name,
        "dont_track_primary": u8::from(instance.dont_track_primary),
        "strict_mode": u8::from(instance.strict_mode),
        "ifp_ifname": instance.interface,
        "master_priority": master_priority,
        "last_transition": status.map_or(0.0, |s| s.since_unix_ms as f64 / 1000.0),
        "garp_delay": instance.garp_master_delay.as_secs_f64(),
        "garp_refresh": instance.garp_master_refresh.map_or(0, |d| d.as_secs()),
        "garp_rep": instance.garp_master_repeat,
        "garp_refresh_rep": instance.garp_master_refresh_repeat,
        "vrid": instance.vrid,
        "base_priority": instance.priority,
        "effective_priority": status.map_or(instance.priority, |s| s.priority),
        "vipset": state == 2,
        "adver_int": instance.advert_int.as_secs_f64(),
        "accept": u8::from(instance.accept),
        "nopreempt": !instance.preempt,
        "preempt_delay": instance.preempt_delay.as_secs(),
        "state": state,
        "wantstate": state,
        "version": instance.version,
        "smtp_alert": snapshot.config.alerts.vrrp(instance.smtp_alert),
        "auth_type": match instance.authentication.as_ref().map(|a| a.auth_type) {
            None => 0,
            Some(AuthType::Pass) => 1,
            Some(AuthType::Ah) => 2,
        },
    });
    let object = data.as_object_mut().expect("an object");
    for (key, script) in [
        ("script_backup", &notify.backup),
        ("script_master", &notify.master),
        ("script_fault", &notify.fault),
        ("script_stop", &notify.stop),
        ("script", &notify.any),
    ] {
        if let Some(script) = script {
            object.insert(key.into(), json!(script));
        }
    }
    let vips: Vec<String> = instance
        .virtual_ipaddress
        .iter()
        .map(|vip| format!("{}/{}", vip.addr, vip.prefix_len))
        .collect();
    if !vips.is_empty() {
        object.insert("vips".into(), json!(vips));
    }
    let tracked: Vec<&str> = instance
        .track_interface
        .iter()
        .map(|t| t.name.as_str())
        .collect();
    if !tracked.is_empty() {
        object.insert("track_ifp".into(), json!(tracked));
    }
    let scripts: Vec<&str> = instance
        .track_script
        .iter()
        .filter_map(|t| {
            let script = snapshot
                .config
                .vrrp_scripts
                .iter()
                .find(|s| s.name == t.name)?;
            Some(script.script.as_str())
        })
        .collect();
    if !scripts.is_empty() {
        object.insert("track_script".into(), json!(scripts));
    }
    data
}

fn stats(status: Option<&VrrpStatus>) -> Value {
    let c = status.map(|s| s.counters.clone()).unwrap_or_default();
    json!({
        "advert_rcvd": c.adverts_received,
        "advert_sent": c.adverts_sent,
        "become_master": c.became_master,
        "release_master": c.released_master,
        "packet_len_err": c.invalid_packets,
        "advert_interval_err": 0,
        "ip_ttl_err": c.ttl_errors,
        "invalid_type_rcvd": c.version_errors,
        "addr_list_err": 0,
        "invalid_authtype": 0,
        "authtype_mismatch": 0,
        "auth_failure": c.auth_errors,
        "pri_zero_rcvd": c.priority_zero_received,
        "pri_zero_sent": c.priority_zero_sent,
    })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::status::VrrpCounters;

    fn snapshot() -> Snapshot {
        let text = "vrrp_instance VI_1 {\n interface eth0\n virtual_router_id 51\n virtual_ipaddress {\n  10.0.0.100/24\n }\n}\n";
        Snapshot {
            config: lb_config::parse(text, Path::new("t.conf")).unwrap().config,
            vrrp: vec![VrrpStatus {
                name: "VI_1".into(),
                state: "MASTER".into(),
                priority: 100,
                counters: VrrpCounters {
                    adverts_sent: 42,
                    became_master: 1,
                    ..Default::default()
                },
                ..Default::default()
            }],
            checks: Default::default(),
            dataplane: None,
        }
    }

    #[test]
    fn stats_text_in_keepalived_layout() {
        let text = text(&snapshot());
        assert!(
            text.starts_with("VRRP Instance: VI_1\n  Advertisements:\n    Received: 0\n    Sent: 42\n  Became master: 1\n  Released master: 0\n  Packet Errors:\n    Length: 0\n"),
            "{text}"
        );
        assert!(
            text.ends_with("  Priority Zero:\n    Received: 0\n    Sent: 0\n"),
            "{text}"
        );
    }

    #[test]
    fn json_has_data_and_stats_per_instance() {
        let text = json(&snapshot());
        let value: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(value[0]["data"]["iname"], "VI_1");
        assert_eq!(value[0]["data"]["state"], 2);
        assert_eq!(value[0]["data"]["vips"][0], "10.0.0.100/24");
        assert_eq!(value[0]["stats"]["advert_sent"], 42);
        assert!(text.ends_with("]\n") && !text.trim_end().contains('\n'));
    }
}
