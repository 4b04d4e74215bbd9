//! The kernel's own sync daemon over generic netlink (`IPVS_CMD_NEW_DAEMON`,
//! `IPVS_CMD_DEL_DAEMON`, `IPVS_CMD_GET_DAEMON`; `ip_vs_genl_new_daemon` and
//! `ip_vs_genl_dump_daemons` in `ip_vs_ctl.c`), for `lvs_sync_daemon` on the IPVS data
//! plane: the settings nest of a start request, and the daemons a dump reports.
//!
//! The nest (`IPVS_CMD_ATTR_DAEMON`): STATE (u32: 1 master, 2 backup), MCAST_IFN (a
//! NUL-terminated name), SYNC_ID (u32), then the optional SYNC_MAXLEN (u16), MCAST_GROUP
//! (an IPv4 address, network order) or MCAST_GROUP6, MCAST_PORT (u16, host order: the
//! kernel converts it when it opens its sockets) and MCAST_TTL (u8). A stop request
//! carries STATE alone.

use std::net::IpAddr;

use super::{
    error::DecodeError,
    genl::{self, AttrWriter},
    messages::{cmd, cmd_attr},
};

/// `IPVS_DAEMON_ATTR_*`.
mod daemon_attr {
    pub const STATE: u16 = 1;
    pub const MCAST_IFN: u16 = 2;
    pub const SYNC_ID: u16 = 3;
    pub const SYNC_MAXLEN: u16 = 4;
    pub const MCAST_GROUP: u16 = 5;
    pub const MCAST_GROUP6: u16 = 6;
    pub const MCAST_PORT: u16 = 7;
    pub const MCAST_TTL: u16 = 8;
}

/// Which of the kernel's two daemons (`IP_VS_STATE_MASTER`, `IP_VS_STATE_BACKUP`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum DaemonState {
    Master,
    Backup,
}

impl DaemonState {
    fn raw(self) -> u32 {
        match self {
            DaemonState::Master => 1,
            DaemonState::Backup => 2,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            DaemonState::Master => "master",
            DaemonState::Backup => "backup",
        }
    }
}

/// What a daemon is started with (keepalived's `lvs_sync_daemon`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DaemonConfig {
    pub interface: String,
    pub syncid: u8,
    /// The largest message; the kernel's default (from the MTU) when `None`.
    pub maxlen: Option<u16>,
    pub group: IpAddr,
    pub port: u16,
    pub ttl: u8,
}

/// A daemon the kernel runs, as its dump reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelDaemon {
    pub state: DaemonState,
    pub interface: String,
    pub syncid: u32,
}

/// The nest of a start request (`config`) or a stop request (`None`) for `state`.
pub(super) fn daemon_attrs(state: DaemonState, config: Option<&DaemonConfig>) -> AttrWriter {
    let mut attrs = AttrWriter::new();
    attrs.u32(daemon_attr::STATE, state.raw());
    let Some(config) = config else {
        return attrs;
    };
    attrs.string(daemon_attr::MCAST_IFN, &config.interface);
    attrs.u32(daemon_attr::SYNC_ID, u32::from(config.syncid));
    if let Some(maxlen) = config.maxlen {
        attrs.u16(daemon_attr::SYNC_MAXLEN, maxlen);
    }
    match config.group {
        IpAddr::V4(group) => attrs.bytes(daemon_attr::MCAST_GROUP, &group.octets()),
        IpAddr::V6(group) => attrs.bytes(daemon_attr::MCAST_GROUP6, &group.octets()),
    };
    attrs.u16(daemon_attr::MCAST_PORT, config.port);
    attrs.u8(daemon_attr::MCAST_TTL, config.ttl);
    attrs
}

/// One entry of a GET_DAEMON dump (the kernel fills each as a NEW_DAEMON message): its
/// daemon nest's state, interface and sync id.
pub(super) fn decode_daemon(command: u8, attrs: &[u8]) -> Result<KernelDaemon, DecodeError> {
    const WITHIN: &str = "IPVS_CMD_ATTR_DAEMON";
    if command != cmd::NEW_DAEMON {
        return Err(DecodeError::UnexpectedCommand {
            expected: cmd::NEW_DAEMON,
            actual: command,
        });
    }
    let mut nest = None;
    for attr in genl::attrs(attrs) {
        let attr = attr?;
        if attr.kind == cmd_attr::DAEMON {
            nest = Some(attr);
        }
    }
    let nest = nest.ok_or(DecodeError::Missing {
        attribute: WITHIN,
        within: "the kernel's GET_DAEMON answer",
    })?;
    let (mut state, mut interface, mut syncid) = (None, None, None);
    for attr in nest.nested() {
        let attr = attr?;
        match attr.kind {
            daemon_attr::STATE => {
                state = Some(match attr.u32("IPVS_DAEMON_ATTR_STATE")? {
                    1 => DaemonState::Master,
                    2 => DaemonState::Backup,
                    other => {
                        return Err(DecodeError::UnknownValue {
                            attribute: "IPVS_DAEMON_ATTR_STATE",
                            value: u64::from(other),
                        });
                    }
                })
            }
            daemon_attr::MCAST_IFN => {
                interface = Some(attr.string("IPVS_DAEMON_ATTR_MCAST_IFN")?.to_owned())
            }
            daemon_attr::SYNC_ID => syncid = Some(attr.u32("IPVS_DAEMON_ATTR_SYNC_ID")?),
            _ => {}
        }
    }
    let missing = |attribute| DecodeError::Missing {
        attribute,
        within: WITHIN,
    };
    Ok(KernelDaemon {
        state: state.ok_or_else(|| missing("IPVS_DAEMON_ATTR_STATE"))?,
        interface: interface.ok_or_else(|| missing("IPVS_DAEMON_ATTR_MCAST_IFN"))?,
        syncid: syncid.ok_or_else(|| missing("IPVS_DAEMON_ATTR_SYNC_ID"))?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: DaemonConfig = DaemonConfig {
        interface: String::new(),
        syncid: 51,
        maxlen: Some(1472),
        group: IpAddr::V4(std::net::Ipv4Addr::new(224, 0, 0, 81)),
        port: 8848,
        ttl: 1,
    };

    /// An attribute laid out by hand: length, type (host order), payload, padding.
    fn attr(kind: u16, payload: &[u8]) -> Vec<u8> {
        let mut bytes = ((4 + payload.len()) as u16).to_ne_bytes().to_vec();
        bytes.extend_from_slice(&kind.to_ne_bytes());
        bytes.extend_from_slice(payload);
        while !bytes.len().is_multiple_of(4) {
            bytes.push(0);
        }
        bytes
    }

    #[test]
    fn a_start_request_carries_what_ip_vs_genl_new_daemon_reads() {
        let config = DaemonConfig {
            interface: "eth0".into(),
            ..CONFIG
        };
        let expected: Vec<u8> = [
            attr(1, &1u32.to_ne_bytes()),
            attr(2, b"eth0\0"),
            attr(3, &51u32.to_ne_bytes()),
            attr(4, &1472u16.to_ne_bytes()),
            attr(5, &[224, 0, 0, 81]),
            attr(7, &8848u16.to_ne_bytes()),
            attr(8, &[1]),
        ]
        .concat();
        assert_eq!(
            daemon_attrs(DaemonState::Master, Some(&config)).as_bytes(),
            expected
        );
        // IPv6 groups go in their own attribute; no maxlen leaves the kernel's.
        let six = DaemonConfig {
            interface: "eth1".into(),
            maxlen: None,
            group: "ff02::8848".parse().unwrap(),
            ..CONFIG
        };
        let bytes = daemon_attrs(DaemonState::Backup, Some(&six));
        let kinds: Vec<u16> = genl::attrs(bytes.as_bytes())
            .map(|a| a.expect("attribute").kind)
            .collect();
        assert_eq!(kinds, [1, 2, 3, 6, 7, 8]);
        // A stop request: the state alone.
        assert_eq!(
            daemon_attrs(DaemonState::Backup, None).as_bytes(),
            attr(1, &2u32.to_ne_bytes())
        );
    }

    #[test]
    fn a_dump_entry_decodes_and_faults_are_named() {
        let nest = [
            attr(1, &2u32.to_ne_bytes()),
            attr(2, b"eth0\0"),
            attr(3, &51u32.to_ne_bytes()),
            attr(7, &8848u16.to_ne_bytes()),
        ]
        .concat();
        let entry = attr(cmd_attr::DAEMON, &nest);
        assert_eq!(
            decode_daemon(cmd::NEW_DAEMON, &entry),
            Ok(KernelDaemon {
                state: DaemonState::Backup,
                interface: "eth0".into(),
                syncid: 51,
            })
        );
        assert!(matches!(
            decode_daemon(cmd::GET_DAEMON, &entry),
            Err(DecodeError::UnexpectedCommand { .. })
        ));
        let odd_state = attr(
            cmd_attr::DAEMON,
            &[
                attr(1, &3u32.to_ne_bytes()),
                attr(2, b"eth0\0"),
                attr(3, &[0; 4]),
            ]
            .concat(),
        );
        assert_eq!(
            decode_daemon(cmd::NEW_DAEMON, &odd_state),
            Err(DecodeError::UnknownValue {
                attribute: "IPVS_DAEMON_ATTR_STATE",
                value: 3
            })
        );
        let no_id = attr(
            cmd_attr::DAEMON,
            &[attr(1, &1u32.to_ne_bytes()), attr(2, b"eth0\0")].concat(),
        );
        assert_eq!(
            decode_daemon(cmd::NEW_DAEMON, &no_id),
            Err(DecodeError::Missing {
                attribute: "IPVS_DAEMON_ATTR_SYNC_ID",
                within: "IPVS_CMD_ATTR_DAEMON"
            })
        );
    }
}
