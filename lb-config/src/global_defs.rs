//! The `global_defs` block: what lbd uses of it (`router_id`, `lvs_timeouts`, the VRRP
//! defaults `vrrp_version`, `vrrp_strict`, `dynamic_interfaces`, `vrrp_rt_priority`, and
//! lbd's own `lvs_tun_source`); its other keywords are reported as not supported yet.

use super::{
    Diagnostic,
    keywords::{Block, not_used},
    tree::Statement,
    values::{no_value, parse_in_range, single_arg},
    virtual_server::tun_sources,
};
use crate::model::{Config, LvsTimeouts};

/// What global_defs sets for other blocks.
#[derive(Debug, Default)]
pub struct Globals {
    pub vrrp_version: Option<u8>,
    pub vrrp_strict: bool,
    pub dynamic_interfaces: bool,
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
            "vrrp_rt_priority" => {
                config.vrrp_rt_priority = parse_in_range(item, 1..=99u8, diagnostics)
            }
            "lvs_tun_source" => {
                if let Some(sources) = tun_sources(item, diagnostics) {
                    config.tun_sources = sources;
                }
            }
            _ => not_used(item, Block::GlobalDefs, diagnostics),
        }
    }
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
    fn lvs_timeouts_are_read_and_checked() {
        let loaded = parse(
            "global_defs {\n router_id LB1\n smtp_server 10.0.0.1\n lvs_timeouts tcp 7200 udp 0 tcpfin 60\n}\n",
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
        assert_eq!(loaded.warnings.len(), 1, "smtp_server is not supported yet");
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
