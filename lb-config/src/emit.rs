//! The model written back as keepalived.conf text (what `lbd --dump-config` shows as JSON,
//! in keepalived's own syntax). Reading the text gives the same model again: the property
//! test in `tests/roundtrip.rs` holds the two directions together.

use std::{fmt::Write as _, net::IpAddr};

use crate::model::{Config, ForwardMethod, Persistence, Protocol, Scheduler, VirtualServer};

/// keepalived.conf text for `config`.
pub fn to_keepalived(config: &Config) -> String {
    let mut text = String::new();
    global_defs(config, &mut text);
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

fn global_defs(config: &Config, text: &mut String) {
    let t = config.lvs_timeouts;
    let timeouts: Vec<String> = [("tcp", t.tcp), ("tcpfin", t.tcpfin), ("udp", t.udp)]
        .into_iter()
        .filter_map(|(name, secs)| secs.map(|s| format!("{name} {s}")))
        .collect();
    if timeouts.is_empty() && config.tun_sources.is_empty() {
        return;
    }
    text.push_str("global_defs {\n");
    if !timeouts.is_empty() {
        let _ = writeln!(text, "    lvs_timeouts {}", timeouts.join(" "));
    }
    if !config.tun_sources.is_empty() {
        let _ = writeln!(
            text,
            "    lvs_tun_source {}",
            addresses(&config.tun_sources)
        );
    }
    text.push_str("}\n");
}

fn virtual_server(vs: &VirtualServer, index: usize, text: &mut String) {
    let _ = writeln!(text, "virtual_server {} {} {{", vs.addr, vs.port);
    let _ = writeln!(text, "    lb_algo {}", vs.scheduler.name());
    let _ = writeln!(text, "    lb_kind {}", vs.forward.name());
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
    for real in &vs.reals {
        let _ = writeln!(
            text,
            "    real_server {} {} {{\n        weight {}\n    }}",
            real.addr, real.port, real.weight
        );
    }
    text.push_str("}\n");
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
