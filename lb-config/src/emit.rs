//! The load-balancing part of the model (global timeouts and tunnel sources, virtual
//! servers with their reals and checkers, track files; VRRP through `emit_vrrp`) written
//! back as keepalived.conf text. Reading
//! the text gives the same model again: the property test in `tests/roundtrip.rs` holds
//! the two directions together. Static addresses and routes are not written yet.

use std::{fmt::Write as _, net::IpAddr};

use crate::model::{
    Config, ForwardMethod, LvsFlushOnStop, Persistence, Protocol, RealServer, Scheduler,
    TunnelType, VirtualServer,
    alert::{DEFAULT_SMTP_CONNECT_TIMEOUT, SmtpAlerts},
    check::{CheckKind, Checker},
};

/// keepalived.conf text for `config`.
pub fn to_keepalived(config: &Config) -> String {
    let mut text = String::new();
    global_defs(config, &mut text);
    for track in &config.track_files {
        let _ = writeln!(
            text,
            "track_file {} {{\n    file {}\n    weight {}{}\n}}",
            track.name,
            track.file,
            track.weight,
            if track.reverse { " reverse" } else { "" }
        );
    }
    super::emit_vrrp::statics(config, &mut text);
    for script in &config.vrrp_scripts {
        super::emit_vrrp::vrrp_script(script, &mut text);
    }
    for instance in &config.vrrp_instances {
        super::emit_vrrp::vrrp_instance(instance, &mut text);
    }
    for group in &config.vrrp_sync_groups {
        super::emit_vrrp::vrrp_sync_group(group, &mut text);
    }
    for (index, vs) in config.virtual_servers.iter().enumerate() {
        if vs.forward == ForwardMethod::FullNat {
            let _ = writeln!(text, "local_address_group laddr_{index} {{");
            for addr in &vs.local_addresses {
                let _ = writeln!(text, "    {addr}");
            }
            text.push_str("}\n");
        }
        virtual_server(vs, index, &mut text);
    }
    text
}

/// A block's `smtp_alert` setting, if it has one, indented by `indent`.
pub(crate) fn smtp_alert(setting: Option<bool>, indent: &str, text: &mut String) {
    match setting {
        Some(true) => {
            let _ = writeln!(text, "{indent}smtp_alert");
        }
        Some(false) => {
            let _ = writeln!(text, "{indent}smtp_alert no");
        }
        None => {}
    }
}

/// global_defs' SMTP alert settings.
fn smtp_alerts(alerts: &SmtpAlerts, text: &mut String) {
    if !alerts.notification_email.is_empty() {
        text.push_str("    notification_email {\n");
        for address in &alerts.notification_email {
            let _ = writeln!(text, "        {address}");
        }
        text.push_str("    }\n");
    }
    if let Some(from) = &alerts.notification_email_from {
        let _ = writeln!(text, "    notification_email_from {from}");
    }
    if let Some(server) = &alerts.smtp_server {
        let _ = writeln!(text, "    smtp_server {} {}", server.host, server.port);
    }
    if let Some(helo) = &alerts.smtp_helo_name {
        let _ = writeln!(text, "    smtp_helo_name {helo}");
    }
    if alerts.smtp_connect_timeout != DEFAULT_SMTP_CONNECT_TIMEOUT {
        let _ = writeln!(
            text,
            "    smtp_connect_timeout {}",
            alerts.smtp_connect_timeout.as_secs()
        );
    }
    for (keyword, setting) in [
        ("smtp_alert", alerts.smtp_alert),
        ("smtp_alert_vrrp", alerts.smtp_alert_vrrp),
        ("smtp_alert_checker", alerts.smtp_alert_checker),
    ] {
        if let Some(on) = setting {
            let _ = writeln!(text, "    {keyword} {}", if on { "yes" } else { "no" });
        }
    }
    if alerts.no_email_faults {
        text.push_str("    no_email_faults\n");
    }
}

fn global_defs(config: &Config, text: &mut String) {
    let t = config.lvs_timeouts;
    let timeouts: Vec<String> = [("tcp", t.tcp), ("tcpfin", t.tcpfin), ("udp", t.udp)]
        .into_iter()
        .filter_map(|(name, secs)| secs.map(|s| format!("{name} {s}")))
        .collect();
    if timeouts.is_empty()
        && config.tun_sources.is_empty()
        && config.router_id.is_none()
        && config.script_user.is_none()
        && !config.script_security
        && config.vrrp_rt_priority.is_none()
        && !config.lvs_flush
        && config.lvs_flush_on_stop.is_none()
        && config.alerts == SmtpAlerts::default()
    {
        return;
    }
    text.push_str("global_defs {\n");
    if let Some(id) = &config.router_id {
        let _ = writeln!(text, "    router_id {id}");
    }
    match &config.script_user {
        Some((user, Some(group))) => {
            let _ = writeln!(text, "    script_user {user} {group}");
        }
        Some((user, None)) => {
            let _ = writeln!(text, "    script_user {user}");
        }
        None => {}
    }
    if config.script_security {
        text.push_str("    enable_script_security\n");
    }
    if let Some(priority) = config.vrrp_rt_priority {
        let _ = writeln!(text, "    vrrp_rt_priority {priority}");
    }
    if !timeouts.is_empty() {
        let _ = writeln!(text, "    lvs_timeouts {}", timeouts.join(" "));
    }
    if config.lvs_flush {
        text.push_str("    lvs_flush\n");
    }
    match config.lvs_flush_on_stop {
        Some(LvsFlushOnStop::Full) => text.push_str("    lvs_flush_on_stop\n"),
        Some(LvsFlushOnStop::VirtualServers) => text.push_str("    lvs_flush_on_stop VS\n"),
        None => {}
    }
    if !config.tun_sources.is_empty() {
        let _ = writeln!(
            text,
            "    lvs_tun_source {}",
            addresses(&config.tun_sources)
        );
    }
    smtp_alerts(&config.alerts, text);
    text.push_str("}\n");
}

fn virtual_server(vs: &VirtualServer, index: usize, text: &mut String) {
    match vs.fwmark {
        Some(mark) => {
            let family = if vs.addr.is_ipv6() { "inet6" } else { "inet" };
            let _ = writeln!(
                text,
                "virtual_server fwmark {mark} {{\n    ip_family {family}"
            );
        }
        None => {
            let _ = writeln!(text, "virtual_server {} {} {{", vs.addr, vs.port);
        }
    }
    let _ = writeln!(text, "    lb_algo {}", vs.scheduler.name());
    let _ = writeln!(text, "    lb_kind {}", method(vs.forward, vs.tunnel));
    let protocol = match vs.protocol {
        Protocol::Tcp => "TCP",
        Protocol::Udp => "UDP",
    };
    let _ = writeln!(text, "    protocol {protocol}");
    let (fallback, port) = match vs.scheduler {
        Scheduler::Sh => ("sh-fallback", "sh-port"),
        Scheduler::Mh => ("mh-fallback", "mh-port"),
        _ => ("flag-1", "flag-2"),
    };
    if vs.sched_flags.fallback {
        let _ = writeln!(text, "    {fallback}");
    }
    if vs.sched_flags.port {
        let _ = writeln!(text, "    {port}");
    }
    if let Some(persistence) = vs.persistence {
        persistence_lines(persistence, vs.addr.is_ipv4(), text);
    }
    if vs.one_packet {
        text.push_str("    ops\n");
    }
    let _ = writeln!(text, "    delay_loop {}", vs.delay_loop.as_secs_f64());
    if vs.forward == ForwardMethod::FullNat {
        let _ = writeln!(text, "    laddr_group_name laddr_{index}");
    }
    if !vs.tun_sources.is_empty() {
        let _ = writeln!(text, "    tun_source {}", addresses(&vs.tun_sources));
    }
    let extras = &vs.extras;
    // 0 is what the reader makes of a quorum above the reals' total weight of 0.
    if extras.quorum > 0 {
        let _ = writeln!(text, "    quorum {}", extras.quorum);
    }
    let _ = writeln!(text, "    hysteresis {}", extras.hysteresis);
    for (keyword, script) in [
        ("quorum_up", &extras.quorum_up),
        ("quorum_down", &extras.quorum_down),
    ] {
        if let Some(script) = script {
            let _ = writeln!(text, "    {keyword} {script}");
        }
    }
    if let Some(sorry) = extras.sorry_server {
        let _ = writeln!(text, "    sorry_server {} {}", sorry.addr, sorry.port);
        if let Some((forward, tunnel)) = extras.sorry_server_lvs_method {
            let _ = writeln!(
                text,
                "    sorry_server_lvs_method {}",
                method(forward, tunnel)
            );
        }
    }
    for (keyword, set) in [
        ("sorry_server_inhibit", extras.sorry_server_inhibit),
        ("alpha", extras.alpha),
        ("omega", extras.omega),
        ("ha_suspend", extras.ha_suspend),
        ("inhibit_on_failure", extras.inhibit_on_failure),
    ] {
        if set {
            let _ = writeln!(text, "    {keyword}");
        }
    }
    if let Some(host) = &extras.virtualhost {
        let _ = writeln!(text, "    virtualhost {host}");
    }
    smtp_alert(extras.smtp_alert, "    ", text);
    for real in &vs.reals {
        real_server(real, text);
    }
    text.push_str("}\n");
}

/// A forwarding method as `lb_kind` and `lvs_method` take it, with TUN's tunnel options.
fn method(forward: ForwardMethod, tunnel: TunnelType) -> String {
    match forward {
        ForwardMethod::Tun if tunnel != TunnelType::Ipip => {
            format!("TUN {}", tunnel.keepalived_words())
        }
        _ => forward.name().to_owned(),
    }
}

fn real_server(real: &RealServer, text: &mut String) {
    let _ = writeln!(text, "    real_server {} {} {{", real.addr, real.port);
    let _ = writeln!(text, "        weight {}", real.weight);
    if let Some((forward, tunnel)) = real.lvs_method {
        let _ = writeln!(text, "        lvs_method {}", method(forward, tunnel));
    }
    if real.upper_threshold > 0 {
        let _ = writeln!(text, "        uthreshold {}", real.upper_threshold);
    }
    if real.lower_threshold > 0 {
        let _ = writeln!(text, "        lthreshold {}", real.lower_threshold);
    }
    for (keyword, script) in [
        ("notify_up", &real.notify_up),
        ("notify_down", &real.notify_down),
    ] {
        if let Some(script) = script {
            let _ = writeln!(text, "        {keyword} {script}");
        }
    }
    if real.inhibit_on_failure {
        text.push_str("        inhibit_on_failure\n");
    }
    smtp_alert(real.smtp_alert, "        ", text);
    for checker in &real.checkers {
        check(checker, text);
    }
    text.push_str("    }\n");
}

/// A checker with every timing setting written out (so nothing depends on inheritance).
fn check(checker: &Checker, text: &mut String) {
    let name = match &checker.kind {
        CheckKind::Tcp => "TCP_CHECK",
        CheckKind::Http(http) if http.tls => "SSL_GET",
        CheckKind::Http(_) => "HTTP_GET",
        CheckKind::Misc(_) => "MISC_CHECK",
        CheckKind::Smtp { .. } => "SMTP_CHECK",
        CheckKind::Dns { .. } => "DNS_CHECK",
        CheckKind::Udp(_) => "UDP_CHECK",
        CheckKind::Ping => "PING_CHECK",
        CheckKind::File { .. } => "FILE_CHECK",
    };
    let _ = writeln!(text, "        {name} {{");
    let mut line = |line: String| {
        let _ = writeln!(text, "            {line}");
    };
    // keepalived takes no connection settings in MISC_CHECK and FILE_CHECK.
    if !matches!(checker.kind, CheckKind::Misc(_) | CheckKind::File { .. }) {
        line(format!(
            "connect_timeout {}",
            checker.connect_timeout.as_secs_f64()
        ));
    }
    line(format!("retry {}", checker.retry));
    line(format!(
        "delay_before_retry {}",
        checker.delay_before_retry.as_secs_f64()
    ));
    line(format!("delay_loop {}", checker.delay_loop.as_secs_f64()));
    if let Some(warmup) = checker.warmup {
        line(format!("warmup {}", warmup.as_secs_f64()));
    }
    if let Some(ip) = checker.connect_ip {
        line(format!("connect_ip {ip}"));
    }
    if let Some(port) = checker.connect_port {
        line(format!("connect_port {port}"));
    }
    if let Some(ip) = checker.bindto {
        line(format!("bindto {ip}"));
    }
    if let Some(port) = checker.bind_port {
        line(format!("bind_port {port}"));
    }
    if let Some(interface) = &checker.bind_if {
        line(format!("bind_if {interface}"));
    }
    if let Some(mark) = checker.fwmark {
        line(format!("fwmark {mark}"));
    }
    if checker.alpha {
        line("alpha".into());
    }
    if checker.log_all_failures {
        line("log_all_failures".into());
    }
    match &checker.kind {
        CheckKind::Tcp | CheckKind::Ping => {}
        CheckKind::Http(http) => {
            for url in &http.urls {
                let codes: Vec<String> = url
                    .status_code
                    .iter()
                    .map(|(low, high)| {
                        if low == high {
                            low.to_string()
                        } else {
                            format!("{low}-{high}")
                        }
                    })
                    .collect();
                let mut block = format!(
                    "url {{\n                path {}\n                status_code {}\n",
                    url.path,
                    codes.join(" ")
                );
                if let Some(digest) = &url.digest {
                    let _ = writeln!(block, "                digest {digest}");
                }
                if let Some(host) = &url.virtualhost {
                    let _ = writeln!(block, "                virtualhost {host}");
                }
                if let Some(regex) = &url.regex {
                    let _ = writeln!(block, "                regex {regex}");
                }
                if url.regex_no_match {
                    block.push_str("                regex_no_match\n");
                }
                block.push_str("            }");
                line(block);
            }
            if let Some(host) = &http.virtualhost {
                line(format!("virtualhost {host}"));
            }
            if let Some(protocol) = &http.http_protocol {
                line(format!("http_protocol {protocol}"));
            }
            if http.enable_sni {
                line("enable_sni".into());
            }
            if let Some(name) = &http.sni_name {
                line(format!("sni_name {name}"));
            }
            if http.fast_recovery {
                line("fast_recovery".into());
            }
        }
        CheckKind::Misc(misc) => {
            line(format!("misc_path {}", misc.path));
            if let Some(timeout) = misc.timeout {
                line(format!("misc_timeout {}", timeout.as_secs_f64()));
            }
            if misc.dynamic {
                line("misc_dynamic".into());
            }
            if let Some(user) = &misc.user {
                line(format!("user {user}"));
            }
        }
        CheckKind::Smtp { helo_name } => line(format!("helo_name {helo_name}")),
        CheckKind::Dns { query_type, name } => {
            line(format!("type {query_type}"));
            line(format!("name {name}"));
        }
        CheckKind::Udp(udp) => {
            if let Some(payload) = &udp.payload {
                line(format!("payload {payload}"));
            }
            if let Some(reply) = &udp.require_reply {
                line(format!("require_reply {reply}"));
            }
            line(format!("min_reply_length {}", udp.min_reply_length));
            line(format!("max_reply_length {}", udp.max_reply_length));
        }
        CheckKind::File {
            track_file,
            weight,
            reverse,
        } => {
            line(format!("track_file {track_file}"));
            if let Some(weight) = weight {
                line(format!(
                    "weight {weight}{}",
                    if *reverse { " reverse" } else { "" }
                ));
            }
        }
    }
    text.push_str("        }\n");
}

fn persistence_lines(persistence: Persistence, ipv4: bool, text: &mut String) {
    let _ = writeln!(text, "    persistence_timeout {}", persistence.timeout_secs);
    let granularity = if ipv4 {
        let mask = u32::MAX
            .checked_shl(32 - u32::from(persistence.prefix_len))
            .unwrap_or(0);
        std::net::Ipv4Addr::from(mask).to_string()
    } else {
        persistence.prefix_len.to_string()
    };
    let _ = writeln!(text, "    persistence_granularity {granularity}");
}

fn addresses(addrs: &[IpAddr]) -> String {
    addrs
        .iter()
        .map(IpAddr::to_string)
        .collect::<Vec<_>>()
        .join(" ")
}
