//! The forwarding method, as keepalived reads it: a virtual server's `lb_kind` (or
//! `lvs_method`) and a real server's own `lvs_method`, each with the tunnel options that
//! may follow TUN (`type ipip|gue|gre`, `port N`, `nocsum|csum|remcsum`).

use super::{Diagnostic, Location, tree::Statement};
use crate::model::{ForwardMethod, TunnelChecksum, TunnelType};

/// `lb_kind METHOD [tunnel options]`: the method as written (checked by the caller, which
/// reports an unknown one with keepalived's default in mind), where, and the tunnel.
/// `None` after an error.
pub(super) fn method(
    item: &Statement,
    diagnostics: &mut Vec<Diagnostic>,
) -> Option<(String, Location, TunnelType)> {
    let Some((method, options)) = item.args.split_first() else {
        diagnostics.push(Diagnostic::error(
            item.location(),
            format!("`{}` needs a value", item.name()),
        ));
        return None;
    };
    let words: Vec<&str> = options.iter().map(|t| t.text.as_str()).collect();
    let tunnel = match tunnel_type(&words) {
        Ok(_) if !words.is_empty() && method.text != "TUN" => {
            diagnostics.push(Diagnostic::warning(
                item.location(),
                format!(
                    "tunnel options apply to lb_kind TUN only; ignored for {}",
                    method.text
                ),
            ));
            TunnelType::Ipip
        }
        Ok(parsed) => parsed,
        Err(message) => {
            diagnostics.push(Diagnostic::error(item.location(), message));
            return None;
        }
    };
    Some((method.text.clone(), item.location().clone(), tunnel))
}

/// A `real_server`'s own `lvs_method` (keepalived's `rs_forwarding_handler`), or the
/// virtual server's `sorry_server_lvs_method` (`ss_forwarding_handler`), which overrides
/// its `lb_kind` for that server: DR, TUN (with its tunnel options) or NAT. FullNAT,
/// which keepalived does not know, is a virtual server's method only.
pub(super) fn real_method(
    item: &Statement,
    diagnostics: &mut Vec<Diagnostic>,
) -> Option<(ForwardMethod, TunnelType)> {
    let (name, at, tunnel) = method(item, diagnostics)?;
    // `lvs_method` in a real_server block, or the virtual server's `sorry_server_lvs_method`.
    let keyword = match item.name() {
        "lvs_method" => "real_server lvs_method",
        other => other,
    };
    match ForwardMethod::from_name(&name) {
        Some(ForwardMethod::FullNat) => {
            diagnostics.push(Diagnostic::error(
                &at,
                format!("{keyword} FNAT: FullNAT is a virtual server's method (lb_kind FNAT), for all its reals"),
            ));
            None
        }
        Some(ForwardMethod::Tun) => Some((ForwardMethod::Tun, tunnel)),
        Some(other) => Some((other, TunnelType::Ipip)),
        None => {
            diagnostics.push(Diagnostic::error(
                &at,
                format!("{keyword} `{name}` is not supported (supported: DR, TUN, NAT)"),
            ));
            None
        }
    }
}

/// keepalived's tunnel options after `lb_kind TUN`: `type ipip|gue|gre`, `port N` (GUE
/// only, and needed there), `nocsum|csum|remcsum` (not for IPIP; `remcsum` GUE only).
pub(super) fn tunnel_type(words: &[&str]) -> Result<TunnelType, String> {
    let (mut kind, mut port, mut checksum) = ("ipip", None, TunnelChecksum::None);
    let mut words = words.iter();
    while let Some(word) = words.next() {
        match *word {
            "type" => match words.next() {
                Some(&name @ ("ipip" | "gue" | "gre")) => kind = name,
                Some(other) => {
                    return Err(format!(
                        "tunnel type `{other}` is not one of ipip, gue, gre"
                    ));
                }
                None => return Err("`type` needs a tunnel type: ipip, gue or gre".to_owned()),
            },
            "port" => match words.next().map(|p| p.parse::<u16>()) {
                Some(Ok(p @ 1..)) => port = Some(p),
                _ => return Err("`port` needs the GUE port (1..=65535)".to_owned()),
            },
            "nocsum" => checksum = TunnelChecksum::None,
            "csum" => checksum = TunnelChecksum::Checksum,
            "remcsum" => checksum = TunnelChecksum::Remote,
            other => {
                return Err(format!(
                    "`{other}` is not a tunnel option (type ipip|gue|gre, port N, nocsum|csum|remcsum)"
                ));
            }
        }
    }
    match (kind, port, checksum) {
        ("gue", Some(port), checksum) => Ok(TunnelType::Gue { port, checksum }),
        ("gue", None, _) => Err("a GUE tunnel needs `port N`, the reals' GUE port".to_owned()),
        (_, Some(_), _) => Err("`port` applies to GUE tunnels only".to_owned()),
        ("gre", None, TunnelChecksum::Remote) => {
            Err("GRE tunnels have no remote checksum offload (remcsum)".to_owned())
        }
        ("gre", None, checksum) => Ok(TunnelType::Gre { checksum }),
        (_, None, TunnelChecksum::None) => Ok(TunnelType::Ipip),
        (_, None, _) => Err("IPIP tunnels have no checksum option".to_owned()),
    }
}
