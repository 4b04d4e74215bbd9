//! The SIGUSR1 files in keepalived 2.2.7's layout: the global section every file starts
//! with, the VRRP topology, sync groups and scripts (`keepalived.data`), and the virtual
//! and real servers with their checkers (`keepalived_check.data`). A line keepalived
//! prints about something lbd does not have is left out; lines lbd adds are its own
//! (`Data plane = XDP`).

use std::fmt::Write as _;

use super::{Checks, Snapshot};
use crate::{
    alert::check::{address_text, service_text},
    calendar::Utc,
    model::{
        Config, ForwardMethod, RealServer, VirtualServer,
        vrrp::{AuthType, Track, VrrpInstance},
    },
    status::{CheckStatus, VrrpStatus},
};

/// `keepalived_parent.data`: the global section.
pub fn parent(snapshot: &Snapshot) -> String {
    global(&snapshot.config)
}

/// `keepalived.data`: the global section, then VRRP.
pub fn vrrp(snapshot: &Snapshot) -> String {
    let config = &snapshot.config;
    let mut text = global(config);
    if !config.vrrp_instances.is_empty() {
        text.push_str("------< VRRP Topology >------\n");
        for instance in &config.vrrp_instances {
            let status = snapshot.vrrp.iter().find(|s| s.name == instance.name);
            vrrp_instance(config, instance, status, &mut text);
        }
    }
    if !config.vrrp_sync_groups.is_empty() {
        text.push_str("------< VRRP Sync groups >------\n");
        for group in &config.vrrp_sync_groups {
            let state = group
                .group
                .iter()
                .filter_map(|m| snapshot.vrrp.iter().find(|s| &s.name == m))
                .map(|s| s.state.as_str())
                .next()
                .unwrap_or("INIT");
            let _ = writeln!(text, " VRRP Sync Group = {}, {state}", group.name);
            text.push_str("   VRRP member instances :\n");
            for member in &group.group {
                let _ = writeln!(text, "     {member}");
            }
            let smtp = config.alerts.vrrp(group.smtp_alert);
            let _ = writeln!(text, "   Using smtp notification = {}", yes_no(smtp));
        }
    }
    if !config.vrrp_scripts.is_empty() {
        text.push_str("------< VRRP Scripts >------\n");
        for script in &config.vrrp_scripts {
            let _ = writeln!(text, " VRRP Script = {}", script.name);
            let _ = writeln!(text, "   Command = {}", script.script);
            let _ = writeln!(text, "   Interval = {} sec", script.interval.as_secs());
            let _ = writeln!(text, "   Timeout = {} sec", script.timeout.as_secs());
            let _ = writeln!(
                text,
                "   Weight = {}{}",
                script.weight,
                if script.reverse { " reverse" } else { "" }
            );
            let _ = writeln!(text, "   Rise = {}", script.rise);
            let _ = writeln!(text, "   Fall = {}", script.fall);
            let users: Vec<&str> = config
                .vrrp_instances
                .iter()
                .filter(|vi| vi.track_script.iter().any(|t| t.name == script.name))
                .map(|vi| vi.name.as_str())
                .collect();
            text.push_str("   VRRP instances :\n");
            for user in users {
                let _ = writeln!(text, "     {user}");
            }
        }
    }
    text
}

/// `keepalived_check.data`: the global section, then the servers and their checkers.
pub fn checker(snapshot: &Snapshot) -> String {
    let config = &snapshot.config;
    let mut text = global(config);
    text.push_str("------< LVS Topology >------\n");
    if let Some(dataplane) = &snapshot.dataplane {
        let _ = writeln!(text, " Data plane = {dataplane}");
    }
    for vs in &config.virtual_servers {
        virtual_server(config, vs, &snapshot.checks, &mut text);
    }
    text.push_str("------< Health checkers >------\n");
    for vs in &config.virtual_servers {
        for real in &vs.reals {
            for (index, checker) in real.checkers.iter().enumerate() {
                let status = check_of(&snapshot.checks, vs, real, index);
                let _ = writeln!(
                    text,
                    " {} -> {}",
                    service_text(vs),
                    address_text(real.addr, vs.protocol, real.port)
                );
                let kind = status.map_or("", |s| s.kind.as_str());
                let _ = writeln!(text, "   Keepalive method = {kind}");
                let _ = writeln!(text, "   Enabled = yes");
                let up = status.is_some_and(|s| s.up);
                let _ = writeln!(text, "   Up = {}", yes_no(up));
                let ran = status.is_some_and(|s| s.probes > 0);
                let _ = writeln!(text, "   Has run = {}", yes_no(ran));
                let _ = writeln!(text, "   Alpha = {}", yes_no(checker.alpha));
                let _ = writeln!(
                    text,
                    "   Delay loop = {} us",
                    checker.delay_loop.as_micros()
                );
                let _ = writeln!(text, "   Retries = {}", checker.retry);
                let _ = writeln!(
                    text,
                    "   Default delay before retry = {} us",
                    checker.delay_before_retry.as_micros()
                );
                let _ = writeln!(
                    text,
                    "   Log all failures = {}",
                    yes_no(checker.log_all_failures)
                );
            }
        }
    }
    text
}

/// The section every file starts with.
fn global(config: &Config) -> String {
    let mut text = String::from("------< Global definitions >------\n");
    text.push_str(" Network namespace = (default)\n");
    let router_id = config
        .router_id
        .clone()
        .unwrap_or_else(crate::alert::host_name);
    let _ = writeln!(text, " Router ID = {router_id}");
    let alerts = &config.alerts;
    if let Some(server) = &alerts.smtp_server {
        let _ = writeln!(text, " Smtp server = {}", server.host);
        let _ = writeln!(text, " Smtp server port = {}", server.port);
    }
    if let Some(helo) = &alerts.smtp_helo_name {
        let _ = writeln!(text, " Smtp HELO name = {helo}");
    }
    if alerts.smtp_server.is_some() {
        let _ = writeln!(
            text,
            " Smtp server connection timeout = {}",
            alerts.smtp_connect_timeout.as_secs()
        );
    }
    if let Some(from) = &alerts.notification_email_from {
        let _ = writeln!(text, " Email notification from = {from}");
    }
    for address in &alerts.notification_email {
        let _ = writeln!(text, " Email notification = {address}");
    }
    for (name, setting) in [
        ("smtp_alert", alerts.smtp_alert),
        ("smtp_alert_vrrp", alerts.smtp_alert_vrrp),
        ("smtp_alert_checker", alerts.smtp_alert_checker),
    ] {
        let value = match setting {
            None => "unset",
            Some(true) => "on",
            Some(false) => "off",
        };
        let _ = writeln!(text, " Default {name} = {value}");
    }
    let t = config.lvs_timeouts;
    let _ = writeln!(
        text,
        " LVS Timeouts: TCP = {}, TCP FIN = {}, UDP = {}",
        t.tcp.unwrap_or(900),
        t.tcpfin.unwrap_or(120),
        t.udp.unwrap_or(300)
    );
    text
}

fn vrrp_instance(
    config: &Config,
    instance: &VrrpInstance,
    status: Option<&VrrpStatus>,
    text: &mut String,
) {
    let _ = writeln!(text, " VRRP Instance = {}", instance.name);
    let _ = writeln!(text, "   VRRP Version = {}", instance.version);
    if let Some(group) = config
        .vrrp_sync_groups
        .iter()
        .find(|g| g.group.contains(&instance.name))
    {
        let _ = writeln!(text, "   Sync group = {}", group.name);
    }
    if instance
        .virtual_ipaddress
        .first()
        .is_some_and(|a| a.addr.is_ipv6())
    {
        text.push_str("   Using Native IPv6\n");
    }
    let state = status.map_or("INIT", |s| s.state.as_str());
    let _ = writeln!(text, "   State = {state}");
    if let (Some(status), "BACKUP") = (status, state)
        && let Some(master) = status.master
    {
        let _ = writeln!(text, "   Master router = {master}");
    }
    if let Some(status) = status {
        let ms = status.since_unix_ms;
        let _ = writeln!(
            text,
            "   Last transition = {}.{:06} ({})",
            ms / 1000,
            (ms % 1000) * 1000,
            ctime(ms)
        );
    }
    let _ = writeln!(text, "   Interface = {}", instance.interface);
    match instance.unicast_src_ip.or(instance.mcast_src_ip) {
        Some(source) => {
            let _ = writeln!(text, "   Using src_ip = {source} (from configuration)");
        }
        None => text.push_str("   Using src_ip = (none)\n"),
    }
    if instance.unicast_peer.is_empty() {
        let group = match instance.virtual_ipaddress.first().map(|a| a.addr.is_ipv6()) {
            Some(true) => "ff02::12",
            _ => "224.0.0.18",
        };
        let _ = writeln!(text, "   Multicast address {group}");
    }
    let _ = writeln!(
        text,
        "   Gratuitous ARP delay = {}",
        instance.garp_master_delay.as_secs()
    );
    let _ = writeln!(
        text,
        "   Gratuitous ARP repeat = {}",
        instance.garp_master_repeat
    );
    let _ = writeln!(
        text,
        "   Gratuitous ARP refresh = {}",
        instance.garp_master_refresh.map_or(0, |d| d.as_secs())
    );
    let _ = writeln!(
        text,
        "   Gratuitous ARP refresh repeat = {}",
        instance.garp_master_refresh_repeat
    );
    let _ = writeln!(text, "   Virtual Router ID = {}", instance.vrid);
    let _ = writeln!(text, "   Priority = {}", instance.priority);
    let effective = status.map_or(instance.priority, |s| s.priority);
    let _ = writeln!(text, "   Effective priority = {effective}");
    if instance.version == 3 {
        let _ = writeln!(
            text,
            "   Advert interval = {} milli-sec",
            instance.advert_int.as_millis()
        );
    } else {
        let _ = writeln!(
            text,
            "   Advert interval = {} sec",
            instance.advert_int.as_secs()
        );
    }
    let _ = writeln!(
        text,
        "   Accept = {}",
        if instance.accept {
            "enabled"
        } else {
            "disabled"
        }
    );
    let _ = writeln!(
        text,
        "   Preempt = {}",
        if instance.preempt {
            "enabled"
        } else {
            "disabled"
        }
    );
    if !instance.preempt_delay.is_zero() {
        let _ = writeln!(
            text,
            "   Preempt delay = {} secs",
            instance.preempt_delay.as_secs_f64()
        );
    }
    if instance.version == 2 {
        match &instance.authentication {
            None => text.push_str("   Authentication type = none\n"),
            Some(auth) if auth.auth_type == AuthType::Pass => {
                text.push_str("   Authentication type = SIMPLE_PASSWORD\n");
                let _ = writeln!(text, "   Password = {}", auth.auth_pass);
            }
            Some(_) => text.push_str("   Authentication type = IPSEC_AH\n"),
        }
    }
    let _ = writeln!(
        text,
        "   Virtual IP ({}):",
        instance.virtual_ipaddress.len()
    );
    for vip in &instance.virtual_ipaddress {
        let full = if vip.addr.is_ipv4() { 32 } else { 128 };
        let prefix = if vip.prefix_len == full {
            String::new()
        } else {
            format!("/{}", vip.prefix_len)
        };
        let dev = vip.dev.as_deref().unwrap_or(&instance.interface);
        let scope = vip.scope.as_deref().unwrap_or("global");
        let _ = writeln!(text, "     {}{prefix} dev {dev} scope {scope}", vip.addr);
    }
    if !instance.unicast_peer.is_empty() {
        text.push_str("   Unicast Peer :\n");
        for peer in &instance.unicast_peer {
            let _ = writeln!(text, "     {peer}");
        }
    }
    tracks(text, "Tracked interfaces", &instance.track_interface);
    tracks(text, "Tracked scripts", &instance.track_script);
    let smtp = config.alerts.vrrp(instance.smtp_alert);
    let _ = writeln!(text, "   Using smtp notification = {}", yes_no(smtp));
    for (what, script) in [
        ("Backup", &instance.notify.backup),
        ("Master", &instance.notify.master),
        ("Fault", &instance.notify.fault),
        ("Stop", &instance.notify.stop),
        ("Generic", &instance.notify.any),
    ] {
        if let Some(script) = script {
            let _ = writeln!(text, "   {what} state transition script = {script}");
        }
    }
}

fn tracks(text: &mut String, title: &str, tracks: &[Track]) {
    if tracks.is_empty() {
        return;
    }
    let _ = writeln!(text, "   {title} :");
    for track in tracks {
        let _ = writeln!(
            text,
            "     {} weight {}{}",
            track.name,
            track.weight.unwrap_or(0),
            if track.reverse { " reverse" } else { "" }
        );
    }
}

fn virtual_server(config: &Config, vs: &VirtualServer, checks: &Checks, text: &mut String) {
    text.push_str(" ------< Virtual server >------\n");
    match vs.fwmark {
        Some(mark) => {
            let _ = writeln!(text, " VS FWMARK = {mark}");
        }
        None => {
            let _ = writeln!(text, " VS VIP = {}, VPORT = {}", vs.addr, vs.port);
        }
    }
    let family = if vs.addr.is_ipv6() { "inet6" } else { "inet" };
    let _ = writeln!(text, "   Address family = {family}");
    let _ = writeln!(text, "   delay_loop = {:.6}", vs.delay_loop.as_secs_f64());
    let _ = writeln!(text, "   lvs_sched = {}", vs.scheduler.name());
    if let Some(persistence) = vs.persistence {
        let _ = writeln!(
            text,
            "   persistence timeout = {}",
            persistence.timeout_secs
        );
    }
    let _ = writeln!(text, "   protocol = {}", vs.protocol.name());
    let on_off = |on: bool| if on { "ON" } else { "OFF" };
    let _ = writeln!(text, "   alpha is {}", on_off(vs.extras.alpha));
    let _ = writeln!(text, "   omega is {}", on_off(vs.extras.omega));
    let _ = writeln!(
        text,
        "   Inhibit on failure is {}",
        on_off(vs.extras.inhibit_on_failure)
    );
    let _ = writeln!(
        text,
        "   quorum = {}, hysteresis = {}",
        vs.extras.quorum, vs.extras.hysteresis
    );
    let smtp = config.alerts.virtual_server(vs.extras.smtp_alert);
    let _ = writeln!(text, "   Using smtp notification = {}", yes_no(smtp));
    let _ = writeln!(
        text,
        "   default forwarding method = {}",
        method(vs.forward)
    );
    if let Some(sorry) = vs.extras.sorry_server {
        let _ = writeln!(text, "   sorry server = [{}]:{}", sorry.addr, sorry.port);
    }
    for real in &vs.reals {
        let alive = (0..real.checkers.len())
            .all(|index| check_of(checks, vs, real, index).is_none_or(|s| s.up));
        text.push_str("   ------< Real server >------\n");
        let effective = if alive { real.weight } else { 0 };
        let _ = writeln!(
            text,
            "   RIP = {}, RPORT = {}, WEIGHT = {} EFF WEIGHT = {effective}",
            real.addr, real.port, real.weight
        );
        let _ = writeln!(
            text,
            "   forwarding method = {}",
            method(vs.forwarding(real).0)
        );
        let _ = writeln!(
            text,
            "   Inhibit on failure is {}",
            on_off(real.inhibit_on_failure)
        );
        let smtp = config.alerts.real_server(real.smtp_alert);
        let _ = writeln!(text, "   Using smtp notification = {}", yes_no(smtp));
        let _ = writeln!(text, "   alive = {}", u8::from(alive));
        let failed = (0..real.checkers.len())
            .filter(|index| check_of(checks, vs, real, *index).is_some_and(|s| !s.up))
            .count();
        let _ = writeln!(text, "   num failed checkers = {failed}");
    }
}

fn method(forward: ForwardMethod) -> &'static str {
    match forward {
        ForwardMethod::Dr => "DR",
        ForwardMethod::Tun => "TUN, type = IPIP",
        ForwardMethod::Nat => "NAT",
        ForwardMethod::FullNat => "FNAT",
    }
}

/// The status of checker `index` of `real` in `vs`.
fn check_of<'a>(
    checks: &'a Checks,
    vs: &VirtualServer,
    real: &RealServer,
    index: usize,
) -> Option<&'a CheckStatus> {
    let service = crate::dataplane::diff::ServiceId::of(vs).to_string();
    checks.get(&(service, real.addr, real.port, index))
}

fn yes_no(yes: bool) -> &'static str {
    if yes { "yes" } else { "no" }
}

/// `Tue Nov 14 22:13:20.123456 2023`, as keepalived prints a time (UTC here).
fn ctime(unix_ms: u64) -> String {
    let t = Utc::from_unix(unix_ms / 1000);
    format!(
        "{} {} {:2} {:02}:{:02}:{:02}.{:06} {}",
        t.weekday_name(),
        t.month_name(),
        t.day,
        t.hour,
        t.minute,
        t.second,
        (unix_ms % 1000) * 1000,
        t.year
    )
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    #[test]
    fn vrrp_and_checker_data_in_keepalived_layout() {
        let text = "global_defs {\n router_id LB1\n}\nvrrp_instance VI_1 {\n interface eth0\n virtual_router_id 51\n priority 150\n virtual_ipaddress {\n  10.0.0.100/24\n }\n}\nvirtual_server 10.0.0.100 80 {\n protocol TCP\n lb_kind DR\n lb_algo wrr\n real_server 10.0.0.11 80 {\n  weight 3\n  TCP_CHECK {\n  }\n }\n}\n";
        let config = lb_config::parse(text, Path::new("t.conf")).unwrap().config;
        let snapshot = Snapshot {
            vrrp: vec![VrrpStatus {
                name: "VI_1".into(),
                state: "MASTER".into(),
                priority: 150,
                since_unix_ms: 1_796_663_312_250,
                ..Default::default()
            }],
            checks: [(
                (
                    "TCP 10.0.0.100:80".to_owned(),
                    "10.0.0.11".parse().unwrap(),
                    80,
                    0,
                ),
                CheckStatus {
                    service: "TCP 10.0.0.100:80".into(),
                    real: "10.0.0.11".parse().unwrap(),
                    port: 80,
                    index: 0,
                    kind: "TCP_CHECK".into(),
                    up: false,
                    probes: 3,
                    ..Default::default()
                },
            )]
            .into(),
            dataplane: Some("XDP".into()),
            config,
        };
        let data = vrrp(&snapshot);
        for line in [
            " Router ID = LB1",
            " VRRP Instance = VI_1",
            "   State = MASTER",
            "   Last transition = 1796663312.250000 (Mon Dec  7 17:08:32.250000 2026)",
            "   Virtual Router ID = 51",
            "   Priority = 150",
            "     10.0.0.100/24 dev eth0 scope global",
            "   Using smtp notification = no",
        ] {
            assert!(data.lines().any(|l| l == line), "{line:?} not in\n{data}");
        }
        let check = checker(&snapshot);
        for line in [
            " VS VIP = 10.0.0.100, VPORT = 80",
            "   lvs_sched = wrr",
            "   RIP = 10.0.0.11, RPORT = 80, WEIGHT = 3 EFF WEIGHT = 0",
            "   alive = 0",
            " [10.0.0.100]:tcp:80 -> [10.0.0.11]:tcp:80",
            "   Keepalive method = TCP_CHECK",
            "   Up = no",
        ] {
            assert!(check.lines().any(|l| l == line), "{line:?} not in\n{check}");
        }
    }
}
