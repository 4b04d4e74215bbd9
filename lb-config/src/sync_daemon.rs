//! Connection sync settings, read with keepalived's checks
//! (`keepalived/core/global_parser.c` and `vrrp_parser.c`): global_defs
//! `lvs_sync_daemon IFACE [VRRP_INSTANCE] [inst NAME] [id N] [maxlen N] [port N] [ttl N]
//! [group ADDR]`, and the older `lvs_sync_daemon_interface IFACE` inside the vrrp_instance
//! the daemon follows. The sync id defaults to that instance's vrid (0 without one); the
//! multicast settings default to the kernel's (224.0.0.81, port 8848, TTL 1, `maxlen` from
//! the MTU).
//!
//! lbd runs the daemon on the XDP data plane (`lb-userspace`'s `sync`).

use std::net::{IpAddr, Ipv4Addr};

use super::{Diagnostic, Location, tree::Statement};
use crate::model::{SyncDaemon, vrrp::VrrpInstance};

/// The kernel's limit on an interface name, with its terminating NUL (`IP_VS_IFNAME_MAXLEN`).
const IFNAME_MAX: usize = 16;
/// The largest `maxlen` keepalived takes: a UDP datagram's payload over IPv4.
const MAXLEN_MAX: u32 = 65535 - 20 - 8;

/// The settings as read, before the instance is known.
#[derive(Debug)]
pub struct Pending {
    interface: String,
    instance: Option<String>,
    syncid: Option<u8>,
    maxlen: Option<u16>,
    port: Option<u16>,
    ttl: Option<u8>,
    group: Option<IpAddr>,
    location: Location,
}

impl Pending {
    /// The sync daemon on `interface`, following `instance`, with every option unset.
    fn new(interface: &str, instance: Option<&str>, location: &Location) -> Self {
        Pending {
            interface: interface.to_owned(),
            instance: instance.map(str::to_owned),
            syncid: None,
            maxlen: None,
            port: None,
            ttl: None,
            group: None,
            location: location.clone(),
        }
    }
}

/// global_defs `lvs_sync_daemon`.
pub fn lvs_sync_daemon(
    item: &Statement,
    pending: &mut Option<Pending>,
    diagnostics: &mut Vec<Diagnostic>,
) {
    let location = item.location();
    let error = |diagnostics: &mut Vec<Diagnostic>, message: String| {
        diagnostics.push(Diagnostic::error(location, message));
    };
    if let Some(set) = pending {
        let instance = set.instance.as_deref().unwrap_or_default();
        error(
            diagnostics,
            format!(
                "lvs_sync_daemon is already set to {} {instance}; this one is ignored",
                set.interface
            ),
        );
        return;
    }
    let words: Vec<&str> = item.args.iter().map(|t| t.text.as_str()).collect();
    let Some(&interface) = words.first() else {
        error(diagnostics, "lvs_sync_daemon needs an interface".into());
        return;
    };
    if interface.len() >= IFNAME_MAX {
        error(
            diagnostics,
            format!("lvs_sync_daemon interface name `{interface}` is longer than 15 bytes"),
        );
        return;
    }
    let mut set = Pending::new(interface, None, location);
    // Options from the second word on; the positional forms are keepalived's older syntax.
    let mut i = 1;
    while i < words.len() {
        let word = words[i];
        let value = words.get(i + 1).copied();
        let number = |low: u32, high: u32| {
            value
                .and_then(|v| v.parse::<u32>().ok())
                .filter(|n| (low..=high).contains(n))
        };
        let mut takes_value = true;
        match word {
            "inst" => match (value, &set.instance) {
                (Some(name), None) => set.instance = Some(name.to_owned()),
                (Some(_), Some(name)) => error(
                    diagnostics,
                    format!("lvs_sync_daemon's vrrp instance is already {name}"),
                ),
                (None, _) => error(
                    diagnostics,
                    "lvs_sync_daemon inst needs a vrrp instance".into(),
                ),
            },
            "id" => match number(0, 255) {
                Some(id) => set.syncid = Some(id as u8),
                None => error(diagnostics, option_error("id", value, "0-255")),
            },
            "maxlen" => match number(1, MAXLEN_MAX) {
                Some(maxlen) => set.maxlen = Some(maxlen as u16),
                None => error(diagnostics, option_error("maxlen", value, "1-65507")),
            },
            "port" => match number(1, 65535) {
                Some(port) => set.port = Some(port as u16),
                None => error(diagnostics, option_error("port", value, "1-65535")),
            },
            "ttl" => match number(1, 255) {
                Some(ttl) => set.ttl = Some(ttl as u8),
                None => error(diagnostics, option_error("ttl", value, "1-255")),
            },
            "group" => match value.map(str::parse::<IpAddr>) {
                Some(Ok(group)) if group.is_multicast() => set.group = Some(group),
                Some(Ok(group)) => error(
                    diagnostics,
                    format!("lvs_sync_daemon group {group} is not a multicast address"),
                ),
                _ => error(
                    diagnostics,
                    option_error("group", value, "a multicast address"),
                ),
            },
            // `lvs_sync_daemon IFACE INSTANCE [SYNCID]`.
            instance if i == 1 => {
                set.instance = Some(instance.to_owned());
                takes_value = false;
            }
            syncid if i == 2 => {
                takes_value = false;
                match syncid.parse::<u8>() {
                    Ok(id) => {
                        set.syncid = Some(id);
                        diagnostics.push(Diagnostic::warning(
                            location,
                            format!("lvs_sync_daemon: write the sync id as `id {id}`"),
                        ));
                    }
                    Err(_) => error(
                        diagnostics,
                        format!("lvs_sync_daemon sync id `{syncid}` is not 0-255"),
                    ),
                }
            }
            other => {
                takes_value = false;
                error(
                    diagnostics,
                    format!("lvs_sync_daemon has no option `{other}`"),
                );
            }
        }
        i += if takes_value { 2 } else { 1 };
    }
    *pending = Some(set);
}

fn option_error(option: &str, value: Option<&str>, range: &str) -> String {
    match value {
        Some(value) => format!("lvs_sync_daemon {option} `{value}` is not {range}"),
        None => format!("lvs_sync_daemon {option} needs a value ({range})"),
    }
}

/// vrrp_instance `lvs_sync_daemon_interface IFACE`: the daemon follows this instance.
pub fn instance_interface(
    item: &Statement,
    instance: &str,
    pending: &mut Option<Pending>,
    diagnostics: &mut Vec<Diagnostic>,
) {
    let location = item.location();
    diagnostics.push(Diagnostic::warning(
        location,
        format!(
            "({instance}) lvs_sync_daemon_interface is deprecated: write global_defs \
             `lvs_sync_daemon IFACE {instance}`"
        ),
    ));
    let [interface] = item.args.as_slice() else {
        diagnostics.push(Diagnostic::error(
            location,
            "lvs_sync_daemon_interface takes one interface",
        ));
        return;
    };
    if let Some(set) = pending {
        diagnostics.push(Diagnostic::error(
            location,
            format!(
                "({instance}) the sync daemon is already set to {}; this one is ignored",
                set.interface
            ),
        ));
        return;
    }
    *pending = Some(Pending::new(&interface.text, Some(instance), location));
}

/// The settings with their instance found and their defaults filled in.
pub fn resolve(
    pending: Option<Pending>,
    instances: &[VrrpInstance],
    diagnostics: &mut Vec<Diagnostic>,
) -> Option<SyncDaemon> {
    let pending = pending?;
    let vrid = match &pending.instance {
        Some(name) => match instances.iter().find(|i| &i.name == name) {
            Some(instance) => Some(instance.vrid),
            None => {
                diagnostics.push(Diagnostic::error(
                    &pending.location,
                    format!("lvs_sync_daemon: no vrrp_instance `{name}`"),
                ));
                return None;
            }
        },
        None => None,
    };
    Some(SyncDaemon {
        interface: pending.interface,
        vrrp_instance: pending.instance,
        syncid: pending.syncid.or(vrid).unwrap_or(0),
        maxlen: pending.maxlen,
        port: pending.port.unwrap_or(SYNC_PORT),
        ttl: pending.ttl.unwrap_or(1),
        group: pending.group.unwrap_or(IpAddr::V4(SYNC_GROUP)),
    })
}

/// The kernel's sync group and port (`IP_VS_SYNC_GROUP`, `IP_VS_SYNC_PORT`).
const SYNC_GROUP: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 81);
const SYNC_PORT: u16 = 8848;
