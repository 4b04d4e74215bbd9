//! The `global_defs` block: what lbd uses of it (`router_id`, `lvs_timeouts`, the VRRP
//! defaults `vrrp_version`, `vrrp_strict`, `dynamic_interfaces`, `vrrp_rt_priority`, the
//! SMTP alert settings, `lvs_sync_daemon` (read and checked by `sync_daemon`),
//! `lvs_flush`, `lvs_flush_on_stop`, and lbd's own `lvs_tun_source`); its other keywords
//! are reported as not supported yet.

use std::time::Duration;

use super::{
    Diagnostic,
    keywords::{Block, not_used},
    sync_daemon,
    tree::Statement,
    values::{no_value, optional_bool, parse_in_range, parse_port, single_arg},
    virtual_server::tun_sources,
};
use crate::model::{
    Config, LvsFlushOnStop, LvsTimeouts,
    alert::{DEFAULT_SMTP_PORT, SmtpAlerts, SmtpServer},
};

/// What global_defs sets for other blocks.
#[derive(Debug, Default)]
pub struct Globals {
    pub vrrp_version: Option<u8>,
    pub vrrp_strict: bool,
    pub dynamic_interfaces: bool,
    /// `lvs_sync_daemon`, until the VRRP instances are read.
    pub sync_daemon: Option<sync_daemon::Pending>,
}

/// Read a `global_defs` block into `config` and `globals`.
pub fn global_defs(
    statement: &Statement,
    config: &mut Config,
    globals: &mut Globals,
    diagnostics: &mut Vec<Diagnostic>,
) {
    for item in statement.block.as_deref().unwrap_or_default() {
        match item.name() {
            "router_id" => config.router_id = single_arg(item, diagnostics).map(str::to_owned),
            "vrrp_version" => globals.vrrp_version = parse_in_range(item, 2..=3u8, diagnostics),
            "vrrp_strict" => globals.vrrp_strict = no_value(item, diagnostics),
            "dynamic_interfaces" => globals.dynamic_interfaces = true,
            "script_user" => match item.args.as_slice() {
                [user] => config.script_user = Some((user.text.clone(), None)),
                [user, group] => {
                    config.script_user = Some((user.text.clone(), Some(group.text.clone())))
                }
                _ => diagnostics.push(Diagnostic::error(
                    item.location(),
                    "script_user takes a user and, optionally, a group",
                )),
            },
            "enable_script_security" => config.script_security = no_value(item, diagnostics),
            "lvs_timeouts" => lvs_timeouts(item, &mut config.lvs_timeouts, diagnostics),
            "lvs_sync_daemon" => {
                sync_daemon::lvs_sync_daemon(item, &mut globals.sync_daemon, diagnostics)
            }
            "vrrp_rt_priority" => {
                config.vrrp_rt_priority = parse_in_range(item, 1..=99u8, diagnostics)
            }
            // keepalived reads no argument of lvs_flush.
            "lvs_flush" => config.lvs_flush = true,
            "lvs_flush_on_stop" | "lvs_flush_onstop" => {
                lvs_flush_on_stop(item, &mut config.lvs_flush_on_stop, diagnostics)
            }
            keyword if smtp_setting(keyword, item, &mut config.alerts, diagnostics) => {}
            "lvs_tun_source" => {
                if let Some(sources) = tun_sources(item, diagnostics) {
                    config.tun_sources = sources;
                }
            }
            _ => not_used(item, Block::GlobalDefs, diagnostics),
        }
    }
}

/// `lvs_flush_on_stop [VS]`: as keepalived, any other word is reported and changes
/// nothing.
fn lvs_flush_on_stop(
    item: &Statement,
    setting: &mut Option<LvsFlushOnStop>,
    diagnostics: &mut Vec<Diagnostic>,
) {
    match item.args.first().map(|arg| arg.text.as_str()) {
        None => *setting = Some(LvsFlushOnStop::Full),
        Some("VS") => *setting = Some(LvsFlushOnStop::VirtualServers),
        Some(other) => diagnostics.push(Diagnostic::warning(
            item.location(),
            format!(
                "unknown {} type `{other}` (VS, or nothing for every service); ignored",
                item.name()
            ),
        )),
    }
}

/// An SMTP alert setting into `alerts`; whether `keyword` was one.
fn smtp_setting(
    keyword: &str,
    item: &Statement,
    alerts: &mut SmtpAlerts,
    diagnostics: &mut Vec<Diagnostic>,
) -> bool {
    match keyword {
        // keepalived reads a block of addresses; they may share lines.
        "notification_email" => {
            let lines = item.block.as_deref().unwrap_or_default();
            let words = item.args.iter().chain(
                lines
                    .iter()
                    .flat_map(|line| std::iter::once(&line.keyword).chain(&line.args)),
            );
            alerts
                .notification_email
                .extend(words.map(|word| word.text.clone()));
        }
        "notification_email_from" => {
            alerts.notification_email_from = single_arg(item, diagnostics).map(str::to_owned)
        }
        "smtp_server" => alerts.smtp_server = smtp_server(item, diagnostics),
        "smtp_helo_name" => {
            alerts.smtp_helo_name = single_arg(item, diagnostics).map(str::to_owned)
        }
        "smtp_connect_timeout" => {
            // keepalived turns 0 into 1.
            if let Some(secs) = parse_in_range(item, 0..=u32::MAX, diagnostics) {
                alerts.smtp_connect_timeout = Duration::from_secs(u64::from(secs.max(1)));
            }
        }
        "smtp_alert" => alerts.smtp_alert = optional_bool(item, diagnostics),
        "smtp_alert_vrrp" => alerts.smtp_alert_vrrp = optional_bool(item, diagnostics),
        "smtp_alert_checker" => alerts.smtp_alert_checker = optional_bool(item, diagnostics),
        "no_email_faults" => alerts.no_email_faults = no_value(item, diagnostics),
        _ => return false,
    }
    true
}

/// `smtp_server ADDR|NAME [PORT]`: an IPv6 address is written bare, as keepalived reads
/// it.
fn smtp_server(item: &Statement, diagnostics: &mut Vec<Diagnostic>) -> Option<SmtpServer> {
    let (host, port) = match item.args.as_slice() {
        [host] => (host, None),
        [host, port] => (host, Some(port)),
        _ => {
            diagnostics.push(Diagnostic::error(
                item.location(),
                "smtp_server takes an address or host name and, optionally, a port",
            ));
            return None;
        }
    };
    let port = match port {
        Some(port) => parse_port(&port.text, item.location(), diagnostics)?,
        None => DEFAULT_SMTP_PORT,
    };
    if host.text.starts_with('[') || host.text.is_empty() {
        diagnostics.push(Diagnostic::error(
            item.location(),
            format!(
                "smtp_server `{}` is not an address or host name (IPv6 is written without brackets)",
                host.text
            ),
        ));
        return None;
    }
    Some(SmtpServer {
        host: host.text.clone(),
        port,
    })
}

/// `lvs_timeouts [tcp N] [tcpfin N] [udp N]`: pairs of a name and seconds.
fn lvs_timeouts(item: &Statement, timeouts: &mut LvsTimeouts, diagnostics: &mut Vec<Diagnostic>) {
    let args: Vec<&str> = item.args.iter().map(|t| t.text.as_str()).collect();
    if args.is_empty() || !args.len().is_multiple_of(2) {
        diagnostics.push(Diagnostic::error(
            item.location(),
            "lvs_timeouts takes pairs: `lvs_timeouts [tcp SECS] [tcpfin SECS] [udp SECS]`",
        ));
        return;
    }
    for pair in args.chunks(2) {
        let secs = match pair[1].parse::<u32>() {
            Ok(secs) if secs <= 86_400 * 365 => secs,
            _ => {
                diagnostics.push(Diagnostic::error(
                    item.location(),
                    format!(
                        "lvs_timeouts {} `{}` is not a number of seconds",
                        pair[0], pair[1]
                    ),
                ));
                continue;
            }
        };
        let slot = match pair[0] {
            "tcp" => &mut timeouts.tcp,
            "tcpfin" => &mut timeouts.tcpfin,
            "udp" => &mut timeouts.udp,
            other => {
                diagnostics.push(Diagnostic::error(
                    item.location(),
                    format!("lvs_timeouts has no `{other}` (tcp, tcpfin, udp)"),
                ));
                continue;
            }
        };
        // 0 keeps the default, as `ipvsadm --set` does.
        *slot = (secs > 0).then_some(secs);
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::{ConfigError, model::LvsTimeouts, parse};

    #[test]
    fn smtp_settings_are_read_as_keepalived_reads_them() {
        let loaded = parse(
            "global_defs {\n notification_email {\n  ops@example.org\n  a@example.org b@example.org\n }\n notification_email_from lb@example.org\n smtp_server 2001:db8::25 2525\n smtp_helo_name lb1\n smtp_connect_timeout 0\n smtp_alert\n smtp_alert_vrrp no\n no_email_faults\n}\n",
            Path::new("k.conf"),
        )
        .unwrap();
        assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
        let alerts = &loaded.config.alerts;
        assert_eq!(
            alerts.notification_email,
            ["ops@example.org", "a@example.org", "b@example.org"]
        );
        assert_eq!(
            alerts.notification_email_from.as_deref(),
            Some("lb@example.org")
        );
        let server = alerts.smtp_server.as_ref().unwrap();
        assert_eq!((server.host.as_str(), server.port), ("2001:db8::25", 2525));
        assert_eq!(alerts.smtp_helo_name.as_deref(), Some("lb1"));
        assert_eq!(
            alerts.smtp_connect_timeout,
            std::time::Duration::from_secs(1)
        );
        assert_eq!(
            (
                alerts.smtp_alert,
                alerts.smtp_alert_vrrp,
                alerts.smtp_alert_checker
            ),
            (Some(true), Some(false), None)
        );
        assert!(alerts.no_email_faults && alerts.configured());
        let loaded = parse(
            "global_defs {\n smtp_server [::1]\n smtp_alert maybe\n}\n",
            Path::new("k.conf"),
        );
        let Err(ConfigError::Invalid {
            errors, warnings, ..
        }) = loaded
        else {
            panic!("a bracketed address is an error");
        };
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(warnings[0].to_string().contains("takes yes or no"));
    }

    #[test]
    fn lvs_timeouts_are_read_and_checked() {
        let loaded = parse(
            "global_defs {\n router_id LB1\n process_names\n lvs_timeouts tcp 7200 udp 0 tcpfin 60\n}\n",
            Path::new("k.conf"),
        )
        .unwrap();
        assert_eq!(
            loaded.config.lvs_timeouts,
            LvsTimeouts {
                tcp: Some(7200),
                tcpfin: Some(60),
                udp: None
            }
        );
        assert_eq!(loaded.config.router_id.as_deref(), Some("LB1"));
        assert_eq!(
            loaded.warnings.len(),
            1,
            "process_names is not supported yet"
        );
        let Err(ConfigError::Invalid { errors, .. }) = parse(
            "global_defs {\n lvs_timeouts tcp\n lvs_timeouts tcp x\n lvs_timeouts sctp 5\n}\n",
            Path::new("k.conf"),
        ) else {
            panic!("expected errors");
        };
        let messages: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
        assert_eq!(
            messages,
            [
                "k.conf:2: error: lvs_timeouts takes pairs: `lvs_timeouts [tcp SECS] [tcpfin SECS] [udp SECS]`",
                "k.conf:3: error: lvs_timeouts tcp `x` is not a number of seconds",
                "k.conf:4: error: lvs_timeouts has no `sctp` (tcp, tcpfin, udp)",
            ]
        );
    }
}
