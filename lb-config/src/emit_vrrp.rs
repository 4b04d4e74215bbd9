//! The VRRP part of the model written back as keepalived.conf text: `vrrp_script`,
//! `vrrp_instance` (every setting, the derived ones written out so that reading gives the
//! same values: `accept` / `no_accept`, `version`, `strict_mode`) and `vrrp_sync_group`.
//! Also `static_ipaddress` and `static_routes`. `emit` calls it; the property test in
//! `tests/roundtrip_vrrp.rs` holds it to the reader.

use std::{fmt::Write as _, time::Duration};

use crate::model::vrrp::{
    AuthType, InitialState, IpAddress, Notify, Route, Track, VrrpInstance, VrrpScript,
    VrrpSyncGroup,
};

/// Seconds as keepalived reads them (fractions allowed).
fn secs(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s.fract() == 0.0 {
        format!("{}", d.as_secs())
    } else {
        format!("{s}")
    }
}

/// `static_ipaddress` and `static_routes`.
pub fn statics(config: &crate::model::Config, text: &mut String) {
    for (keyword, lines) in [
        (
            "static_ipaddress",
            config
                .static_ipaddress
                .iter()
                .map(address)
                .collect::<Vec<_>>(),
        ),
        (
            "static_routes",
            config.static_routes.iter().map(route).collect::<Vec<_>>(),
        ),
    ] {
        if lines.is_empty() {
            continue;
        }
        let _ = writeln!(text, "{keyword} {{");
        for line in lines {
            let _ = writeln!(text, "    {line}");
        }
        text.push_str("}\n");
    }
}

pub fn vrrp_script(script: &VrrpScript, text: &mut String) {
    let _ = writeln!(text, "vrrp_script {} {{", script.name);
    let _ = writeln!(text, "    script \"{}\"", script.script);
    let _ = writeln!(text, "    interval {}", secs(script.interval));
    let _ = writeln!(text, "    timeout {}", secs(script.timeout));
    let _ = writeln!(
        text,
        "    weight {}{}",
        script.weight,
        if script.reverse { " reverse" } else { "" }
    );
    let _ = writeln!(text, "    rise {}", script.rise);
    let _ = writeln!(text, "    fall {}", script.fall);
    if let Some(user) = &script.user {
        let _ = writeln!(text, "    user {user}");
    }
    if script.init_fail {
        text.push_str("    init_fail\n");
    }
    text.push_str("}\n");
}

fn address(address: &IpAddress) -> String {
    let mut line = format!("{}/{}", address.addr, address.prefix_len);
    if let Some(brd) = address.broadcast {
        let _ = write!(line, " brd {brd}");
    }
    if let Some(dev) = &address.dev {
        let _ = write!(line, " dev {dev}");
    }
    if let Some(scope) = &address.scope {
        let _ = write!(line, " scope {scope}");
    }
    if let Some(label) = &address.label {
        let _ = write!(line, " label {label}");
    }
    if address.no_track {
        line.push_str(" no_track");
    }
    line
}

fn block(text: &mut String, name: &str, lines: impl IntoIterator<Item = String>) {
    let _ = writeln!(text, "    {name} {{");
    for line in lines {
        let _ = writeln!(text, "        {line}");
    }
    text.push_str("    }\n");
}

fn track(track: &Track) -> String {
    match track.weight {
        Some(weight) => format!(
            "{} weight {weight}{}",
            track.name,
            if track.reverse { " reverse" } else { "" }
        ),
        None => track.name.clone(),
    }
}

fn route(route: &Route) -> String {
    route.words.join(" ")
}

fn notify(notify: &Notify, text: &mut String) {
    for (keyword, command) in [
        ("notify_master", &notify.master),
        ("notify_backup", &notify.backup),
        ("notify_fault", &notify.fault),
        ("notify_stop", &notify.stop),
        ("notify", &notify.any),
    ] {
        if let Some(command) = command {
            let _ = writeln!(text, "    {keyword} \"{command}\"");
        }
    }
}

pub fn vrrp_instance(vi: &VrrpInstance, text: &mut String) {
    let _ = writeln!(text, "vrrp_instance {} {{", vi.name);
    let state = match vi.initial_state {
        InitialState::Master => "MASTER",
        InitialState::Backup => "BACKUP",
    };
    let _ = writeln!(text, "    state {state}");
    if !vi.interface.is_empty() {
        let _ = writeln!(text, "    interface {}", vi.interface);
    }
    let _ = writeln!(text, "    virtual_router_id {}", vi.vrid);
    let _ = writeln!(text, "    priority {}", vi.priority);
    let _ = writeln!(text, "    advert_int {}", secs(vi.advert_int));
    let _ = writeln!(text, "    version {}", vi.version);
    let _ = writeln!(
        text,
        "    strict_mode {}",
        if vi.strict_mode { "on" } else { "off" }
    );
    text.push_str(if vi.accept {
        "    accept\n"
    } else {
        "    no_accept\n"
    });
    if let Some(auth) = &vi.authentication {
        let kind = match auth.auth_type {
            AuthType::Pass => "PASS",
            AuthType::Ah => "AH",
        };
        block(
            text,
            "authentication",
            [
                format!("auth_type {kind}"),
                format!("auth_pass {}", auth.auth_pass),
            ],
        );
    }
    block(
        text,
        "virtual_ipaddress",
        vi.virtual_ipaddress.iter().map(address),
    );
    if !vi.virtual_ipaddress_excluded.is_empty() {
        block(
            text,
            "virtual_ipaddress_excluded",
            vi.virtual_ipaddress_excluded.iter().map(address),
        );
    }
    if !vi.virtual_routes.is_empty() {
        block(text, "virtual_routes", vi.virtual_routes.iter().map(route));
    }
    if !vi.track_interface.is_empty() {
        block(
            text,
            "track_interface",
            vi.track_interface.iter().map(track),
        );
    }
    if !vi.track_script.is_empty() {
        block(text, "track_script", vi.track_script.iter().map(track));
    }
    if let Some(src) = vi.unicast_src_ip {
        let _ = writeln!(text, "    unicast_src_ip {src}");
    }
    if !vi.unicast_peer.is_empty() {
        block(
            text,
            "unicast_peer",
            vi.unicast_peer.iter().map(|p| p.to_string()),
        );
    }
    if let Some(src) = vi.mcast_src_ip {
        let _ = writeln!(text, "    mcast_src_ip {src}");
    }
    text.push_str(if vi.preempt {
        "    preempt\n"
    } else {
        "    nopreempt\n"
    });
    let _ = writeln!(text, "    preempt_delay {}", secs(vi.preempt_delay));
    let _ = writeln!(text, "    garp_master_delay {}", secs(vi.garp_master_delay));
    let _ = writeln!(text, "    garp_master_repeat {}", vi.garp_master_repeat);
    if let Some(refresh) = vi.garp_master_refresh {
        let _ = writeln!(text, "    garp_master_refresh {}", secs(refresh));
    }
    let _ = writeln!(
        text,
        "    garp_master_refresh_repeat {}",
        vi.garp_master_refresh_repeat
    );
    notify(&vi.notify, text);
    if let Some(vmac) = &vi.use_vmac {
        let _ = writeln!(text, "    use_vmac {vmac}");
    }
    if vi.vmac_xmit_base {
        text.push_str("    vmac_xmit_base\n");
    }
    if vi.dont_track_primary {
        text.push_str("    dont_track_primary\n");
    }
    crate::emit::smtp_alert(vi.smtp_alert, "    ", text);
    text.push_str("}\n");
}

pub fn vrrp_sync_group(group: &VrrpSyncGroup, text: &mut String) {
    let _ = writeln!(text, "vrrp_sync_group {} {{", group.name);
    block(text, "group", group.group.iter().cloned());
    if !group.track_interface.is_empty() {
        block(
            text,
            "track_interface",
            group.track_interface.iter().map(track),
        );
    }
    if !group.track_script.is_empty() {
        block(text, "track_script", group.track_script.iter().map(track));
    }
    notify(&group.notify, text);
    crate::emit::smtp_alert(group.smtp_alert, "    ", text);
    text.push_str("}\n");
}
