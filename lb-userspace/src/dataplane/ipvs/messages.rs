//! The IPVS generic netlink protocol (`include/uapi/linux/ip_vs.h`, parsed and filled by
//! `net/netfilter/ipvs/ip_vs_ctl.c`): typed requests and the typed values of the kernel's
//! replies.
//!
//! Layouts, as the kernel reads them:
//! - a service nest (`IPVS_CMD_ATTR_SERVICE`) is identified by AF (u16) and PROTOCOL (u16),
//!   ADDR (16 bytes, `union nf_inet_addr`: IPv4 in the first 4) and PORT (network order),
//!   or by AF and FWMARK; NEW and SET also need SCHED_NAME (NUL-terminated), FLAGS
//!   (`struct ip_vs_flags { u32 flags; u32 mask; }`, host order), TIMEOUT (seconds) and
//!   NETMASK: for IPv4 the mask in network order, for IPv6 the prefix length as a host-order
//!   u32 (`ip_vs_add_service` reads it as `plen` and wants 1..=128);
//! - a dest nest (`IPVS_CMD_ATTR_DEST`) is identified by ADDR and PORT (and ADDR_FAMILY,
//!   4.3+, for a real of the other family than its service); NEW and SET also need
//!   FWD_METHOD, WEIGHT, U_THRESH and L_THRESH; TUN_TYPE (u8), TUN_PORT (network order)
//!   and TUN_FLAGS (u16) are optional (5.2+) and sent only when not the default (IPIP);
//! - replies nest without `NLA_F_NESTED` (`nla_nest_start_noflag`), stats in STATS (32-bit
//!   counters but 64-bit byte counters) and STATS64 (all 64-bit); 64-bit values may be
//!   preceded by a PAD attribute on architectures without efficient unaligned access.
//!
//! Requests identify services by address only (IPVS parses the other service attributes
//! only for NEW and SET), and nest with `NLA_F_NESTED` like libnl 3 does. The replies are
//! decoded in `replies`. `fixtures.rs` checks both against traffic captured in the VM
//! (ipvsadm 1.31 and this backend on Linux 6.1, `captured/`).

use std::{
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use super::{
    daemon::{DaemonConfig, DaemonState, daemon_attrs},
    error::DecodeError,
    genl::{self, AttrWriter, NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST, RequestHeader},
};

pub const IPVS_GENL_NAME: &str = "IPVS";
pub const IPVS_GENL_VERSION: u8 = 1;

/// Commands (`IPVS_CMD_*`).
pub mod cmd {
    pub const NEW_SERVICE: u8 = 1;
    pub const SET_SERVICE: u8 = 2;
    pub const DEL_SERVICE: u8 = 3;
    pub const GET_SERVICE: u8 = 4;
    pub const NEW_DEST: u8 = 5;
    pub const SET_DEST: u8 = 6;
    pub const DEL_DEST: u8 = 7;
    pub const GET_DEST: u8 = 8;
    pub const NEW_DAEMON: u8 = 9;
    pub const DEL_DAEMON: u8 = 10;
    pub const GET_DAEMON: u8 = 11;
    pub const SET_CONFIG: u8 = 12;
    pub const GET_CONFIG: u8 = 13;
    pub const SET_INFO: u8 = 14;
    pub const GET_INFO: u8 = 15;
    pub const ZERO: u8 = 16;
    pub const FLUSH: u8 = 17;
}

/// First-level attributes (`IPVS_CMD_ATTR_*`).
pub mod cmd_attr {
    pub const SERVICE: u16 = 1;
    pub const DEST: u16 = 2;
    pub const DAEMON: u16 = 3;
    pub const TIMEOUT_TCP: u16 = 4;
    pub const TIMEOUT_TCP_FIN: u16 = 5;
    pub const TIMEOUT_UDP: u16 = 6;
}

/// Service attributes (`IPVS_SVC_ATTR_*`).
pub(super) mod svc_attr {
    pub const AF: u16 = 1;
    pub const PROTOCOL: u16 = 2;
    pub const ADDR: u16 = 3;
    pub const PORT: u16 = 4;
    pub const FWMARK: u16 = 5;
    pub const SCHED_NAME: u16 = 6;
    pub const FLAGS: u16 = 7;
    pub const TIMEOUT: u16 = 8;
    pub const NETMASK: u16 = 9;
    pub const STATS: u16 = 10;
    pub const STATS64: u16 = 12;
}

/// Destination attributes (`IPVS_DEST_ATTR_*`).
pub(super) mod dest_attr {
    pub const ADDR: u16 = 1;
    pub const PORT: u16 = 2;
    pub const FWD_METHOD: u16 = 3;
    pub const WEIGHT: u16 = 4;
    pub const U_THRESH: u16 = 5;
    pub const L_THRESH: u16 = 6;
    pub const ACTIVE_CONNS: u16 = 7;
    pub const INACT_CONNS: u16 = 8;
    pub const PERSIST_CONNS: u16 = 9;
    pub const STATS: u16 = 10;
    pub const ADDR_FAMILY: u16 = 11;
    pub const STATS64: u16 = 12;
    pub const TUN_TYPE: u16 = 13;
    pub const TUN_PORT: u16 = 14;
    pub const TUN_FLAGS: u16 = 15;
}

/// Statistics attributes (`IPVS_STATS_ATTR_*`); `PAD` (11) only aligns.
pub(super) mod stats_attr {
    pub const CONNS: u16 = 1;
    pub const INPKTS: u16 = 2;
    pub const OUTPKTS: u16 = 3;
    pub const INBYTES: u16 = 4;
    pub const OUTBYTES: u16 = 5;
    pub const CPS: u16 = 6;
    pub const INPPS: u16 = 7;
    pub const OUTPPS: u16 = 8;
    pub const INBPS: u16 = 9;
    pub const OUTBPS: u16 = 10;
}

/// `IPVS_INFO_ATTR_*`.
pub(super) mod info_attr {
    pub const VERSION: u16 = 1;
    pub const CONN_TAB_SIZE: u16 = 2;
}

/// Service flags (`IP_VS_SVC_F_*`).
pub mod svc_flag {
    pub const PERSISTENT: u32 = 0x0001;
    /// Set by the kernel on every service in its table; never compared or sent.
    pub const HASHED: u32 = 0x0002;
    pub const ONEPACKET: u32 = 0x0004;
    /// sh-fallback / mh-fallback.
    pub const SCHED1: u32 = 0x0008;
    /// sh-port / mh-port.
    pub const SCHED2: u32 = 0x0010;
    pub const SCHED3: u32 = 0x0020;
}

/// Forwarding methods (`IP_VS_CONN_F_*` & `IP_VS_CONN_F_FWD_MASK`).
pub mod fwd {
    pub const MASQ: u32 = 0;
    pub const LOCALNODE: u32 = 1;
    pub const TUNNEL: u32 = 2;
    pub const DROUTE: u32 = 3;
    pub const MASK: u32 = 7;
}

pub(super) const AF_INET: u16 = libc::AF_INET as u16;
pub(super) const AF_INET6: u16 = libc::AF_INET6 as u16;

pub(super) fn family_of(addr: IpAddr) -> u16 {
    match addr {
        IpAddr::V4(_) => AF_INET,
        IpAddr::V6(_) => AF_INET6,
    }
}

/// `union nf_inet_addr`: 16 bytes, IPv4 in the first 4.
fn inet_addr_bytes(addr: IpAddr) -> [u8; 16] {
    match addr {
        IpAddr::V4(a) => {
            let mut bytes = [0; 16];
            bytes[..4].copy_from_slice(&a.octets());
            bytes
        }
        IpAddr::V6(a) => a.octets(),
    }
}

pub(super) fn inet_addr_from(
    family: u16,
    payload: &[u8],
    attribute: &'static str,
) -> Result<IpAddr, DecodeError> {
    let size_error = || DecodeError::PayloadSize {
        attribute,
        expected: "4 or 16",
        actual: payload.len(),
    };
    match family {
        AF_INET => {
            let octets: [u8; 4] = payload
                .get(..4)
                .and_then(|b| b.try_into().ok())
                .ok_or_else(size_error)?;
            if payload.len() != 4 && payload.len() != 16 {
                return Err(size_error());
            }
            Ok(IpAddr::V4(Ipv4Addr::from(octets)))
        }
        AF_INET6 => {
            let octets: [u8; 16] = payload.try_into().map_err(|_| size_error())?;
            Ok(IpAddr::V6(Ipv6Addr::from(octets)))
        }
        other => Err(DecodeError::UnknownValue {
            attribute: "address family",
            value: u64::from(other),
        }),
    }
}

/// IPVS's name of an IP protocol (`ip_vs_proto_name`).
pub fn protocol_name(protocol: u16) -> Option<&'static str> {
    match protocol {
        6 => Some("TCP"),
        17 => Some("UDP"),
        132 => Some("SCTP"),
        _ => None,
    }
}

/// What IPVS looks a service up by: protocol, address and port; or, for a firewall-mark
/// service, its family and mark (its address is then the family's unspecified one, its
/// port 0 and its protocol TCP, as the kernel records it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServiceKey {
    /// IP protocol number.
    pub protocol: u16,
    pub addr: IpAddr,
    pub port: u16,
    pub fwmark: Option<u32>,
}

impl ServiceKey {
    /// The firewall-mark service `mark` of `family` (AF_INET or AF_INET6).
    pub fn fwmark(family: u16, mark: u32) -> Self {
        Self {
            protocol: u16::from(crate::model::Protocol::Tcp.ip_proto()),
            addr: crate::model::VirtualServer::fwmark_addr(family == AF_INET6),
            port: 0,
            fwmark: Some(mark),
        }
    }
}

impl fmt::Display for ServiceKey {
    /// `TCP 10.0.0.1:80`, `UDP [2001:db8::1]:53`, `FWM 1`, `FWM 1 IPv6`, as
    /// `diff::ServiceId` shows services.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(mark) = self.fwmark {
            let family = if self.addr.is_ipv6() { " IPv6" } else { "" };
            return write!(f, "FWM {mark}{family}");
        }
        match protocol_name(self.protocol) {
            Some(name) => write!(f, "{name} ")?,
            None => write!(f, "protocol {} ", self.protocol)?,
        }
        match self.addr {
            IpAddr::V4(a) => write!(f, "{a}:{}", self.port),
            IpAddr::V6(a) => write!(f, "[{a}]:{}", self.port),
        }
    }
}

impl From<crate::dataplane::diff::ServiceId> for ServiceKey {
    fn from(id: crate::dataplane::diff::ServiceId) -> Self {
        match id.fwmark {
            Some(mark) => Self::fwmark(family_of(id.addr), mark),
            None => Self {
                protocol: u16::from(id.protocol.ip_proto()),
                addr: id.addr,
                port: id.port,
                fwmark: None,
            },
        }
    }
}

/// The persistence granularity as IPVS keeps it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Netmask {
    /// An IPv4 service's mask (ipvsadm's `-M 255.255.255.0`).
    V4(Ipv4Addr),
    /// An IPv6 service's prefix length (ipvsadm's `-M 64`).
    V6 { prefix_len: u32 },
}

impl Netmask {
    /// The netmask of a service on `addr` whose clients share a real per `prefix_len`
    /// network. IPv6 wants 1..=128: 0 becomes 1.
    pub fn from_prefix(addr: IpAddr, prefix_len: u8) -> Self {
        match addr {
            IpAddr::V4(_) => {
                let prefix = u32::from(prefix_len.min(32));
                let mask = u32::MAX.checked_shl(32 - prefix).unwrap_or(0);
                Netmask::V4(Ipv4Addr::from(mask))
            }
            IpAddr::V6(_) => Netmask::V6 {
                prefix_len: u32::from(prefix_len.clamp(1, 128)),
            },
        }
    }

    /// The prefix length (an IPv4 mask that is not contiguous counts its leading ones).
    pub fn prefix_len(self) -> u8 {
        match self {
            Netmask::V4(mask) => u32::from(mask).leading_ones() as u8,
            Netmask::V6 { prefix_len } => prefix_len.min(128) as u8,
        }
    }

    fn to_attr(self) -> [u8; 4] {
        match self {
            Netmask::V4(mask) => mask.octets(),
            Netmask::V6 { prefix_len } => prefix_len.to_ne_bytes(),
        }
    }

    pub(super) fn from_attr(family: u16, raw: [u8; 4]) -> Self {
        match family {
            AF_INET6 => Netmask::V6 {
                prefix_len: u32::from_ne_bytes(raw),
            },
            _ => Netmask::V4(Ipv4Addr::from(raw)),
        }
    }
}

/// How a service schedules: what NEW_SERVICE and SET_SERVICE carry besides its identity.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceSettings {
    /// IPVS's scheduler name (`wlc`), or `none`.
    pub scheduler: String,
    /// `svc_flag` bits (without `HASHED`).
    pub flags: u32,
    /// Persistence timeout in seconds (0: not persistent).
    pub timeout_secs: u32,
    pub netmask: Netmask,
}

/// IPVS's counters of a service or a destination.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub conns: u64,
    pub in_packets: u64,
    pub out_packets: u64,
    pub in_bytes: u64,
    pub out_bytes: u64,
    /// Rates estimated by the kernel, per second.
    pub cps: u64,
    pub in_pps: u64,
    pub out_pps: u64,
    pub in_bps: u64,
    pub out_bps: u64,
}

/// A service as the kernel reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelService {
    pub key: ServiceKey,
    pub settings: ServiceSettings,
    pub stats: Stats,
}

/// What IPVS looks a destination up by within its service.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DestKey {
    pub addr: IpAddr,
    pub port: u16,
}

impl fmt::Display for DestKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.addr {
            IpAddr::V4(a) => write!(f, "{a}:{}", self.port),
            IpAddr::V6(a) => write!(f, "[{a}]:{}", self.port),
        }
    }
}

/// The tunnel a TUN destination uses (`IP_VS_CONN_F_TUNNEL_TYPE_*`; 0 = IPIP).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tunnel {
    pub kind: u8,
    /// GUE's UDP port.
    pub port: u16,
    pub flags: u16,
}

/// What NEW_DEST and SET_DEST carry besides the destination's identity.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DestSettings {
    /// `fwd` value.
    pub forward: u32,
    /// IPVS keeps an `int`; 0 takes no new connections.
    pub weight: u32,
    pub upper_threshold: u32,
    pub lower_threshold: u32,
    pub tunnel: Tunnel,
}

/// A destination as the kernel reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelDest {
    pub key: DestKey,
    pub settings: DestSettings,
    pub active_conns: u32,
    pub inactive_conns: u32,
    pub persistent_conns: u32,
    pub stats: Stats,
}

/// `ipvsadm --set`'s three timeouts, in seconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelTimeouts {
    pub tcp: u32,
    pub tcp_fin: u32,
    pub udp: u32,
}

/// Timeouts to change (`None` keeps the kernel's).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TimeoutUpdate {
    pub tcp: Option<u32>,
    pub tcp_fin: Option<u32>,
    pub udp: Option<u32>,
}

/// `IPVS_CMD_GET_INFO`'s answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Info {
    /// `IP_VS_VERSION_CODE` (0x010201 is 1.2.1).
    pub version: u32,
    /// Size of the connection hash table.
    pub conn_table_size: u32,
}

impl Info {
    /// `ipvsadm`'s first line: `IP Virtual Server version 1.2.1 (size=4096)`.
    pub fn banner(&self) -> String {
        let v = self.version;
        format!(
            "IP Virtual Server version {}.{}.{} (size={})",
            (v >> 16) & 0xff,
            (v >> 8) & 0xff,
            v & 0xff,
            self.conn_table_size
        )
    }
}

/// One IPVS request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    NewService(ServiceKey, ServiceSettings),
    SetService(ServiceKey, ServiceSettings),
    DelService(ServiceKey),
    /// Dump of every service.
    GetServices,
    /// Dump of a service's destinations.
    GetDests(ServiceKey),
    NewDest(ServiceKey, DestKey, DestSettings),
    SetDest(ServiceKey, DestKey, DestSettings),
    DelDest(ServiceKey, DestKey),
    SetConfig(TimeoutUpdate),
    GetConfig,
    GetInfo,
    /// Zero the counters of a service, or of everything.
    Zero(Option<ServiceKey>),
    /// Start the kernel's sync daemon in a state, or stop it (`daemon`).
    NewDaemon(DaemonState, DaemonConfig),
    DelDaemon(DaemonState),
    /// Dump of the sync daemons running.
    GetDaemons,
    /// Remove every service (`ipvsadm -C`; keepalived's `lvs_flush`).
    Flush,
}

impl Request {
    pub fn command(&self) -> u8 {
        match self {
            Request::NewService(..) => cmd::NEW_SERVICE,
            Request::SetService(..) => cmd::SET_SERVICE,
            Request::DelService(_) => cmd::DEL_SERVICE,
            Request::GetServices => cmd::GET_SERVICE,
            Request::GetDests(_) => cmd::GET_DEST,
            Request::NewDest(..) => cmd::NEW_DEST,
            Request::SetDest(..) => cmd::SET_DEST,
            Request::DelDest(..) => cmd::DEL_DEST,
            Request::SetConfig(_) => cmd::SET_CONFIG,
            Request::GetConfig => cmd::GET_CONFIG,
            Request::GetInfo => cmd::GET_INFO,
            Request::Zero(_) => cmd::ZERO,
            Request::NewDaemon(..) => cmd::NEW_DAEMON,
            Request::DelDaemon(_) => cmd::DEL_DAEMON,
            Request::GetDaemons => cmd::GET_DAEMON,
            Request::Flush => cmd::FLUSH,
        }
    }

    /// Answered by a multi-part dump ending in `NLMSG_DONE` (else by an acknowledgement,
    /// after the one reply of a GET).
    pub fn is_dump(&self) -> bool {
        matches!(
            self,
            Request::GetServices | Request::GetDests(_) | Request::GetDaemons
        )
    }

    pub fn attributes(&self) -> AttrWriter {
        let mut attrs = AttrWriter::new();
        match self {
            Request::NewService(key, settings) | Request::SetService(key, settings) => {
                attrs.nested(cmd_attr::SERVICE, &service_attrs(key, Some(settings)));
            }
            Request::DelService(key) | Request::GetDests(key) | Request::Zero(Some(key)) => {
                attrs.nested(cmd_attr::SERVICE, &service_attrs(key, None));
            }
            Request::NewDest(service, dest, settings)
            | Request::SetDest(service, dest, settings) => {
                attrs.nested(cmd_attr::SERVICE, &service_attrs(service, None));
                attrs.nested(cmd_attr::DEST, &dest_attrs(dest, Some(settings)));
            }
            Request::DelDest(service, dest) => {
                attrs.nested(cmd_attr::SERVICE, &service_attrs(service, None));
                attrs.nested(cmd_attr::DEST, &dest_attrs(dest, None));
            }
            Request::SetConfig(update) => {
                for (kind, value) in [
                    (cmd_attr::TIMEOUT_TCP, update.tcp),
                    (cmd_attr::TIMEOUT_TCP_FIN, update.tcp_fin),
                    (cmd_attr::TIMEOUT_UDP, update.udp),
                ] {
                    if let Some(value) = value {
                        attrs.u32(kind, value);
                    }
                }
            }
            Request::NewDaemon(state, config) => {
                attrs.nested(cmd_attr::DAEMON, &daemon_attrs(*state, Some(config)));
            }
            Request::DelDaemon(state) => {
                attrs.nested(cmd_attr::DAEMON, &daemon_attrs(*state, None));
            }
            Request::GetServices
            | Request::GetConfig
            | Request::GetInfo
            | Request::Zero(None)
            | Request::GetDaemons
            | Request::Flush => {}
        }
        attrs
    }

    /// The whole message for family id `family`.
    pub fn encode(&self, family: u16, sequence: u32) -> Vec<u8> {
        let flags = NLM_F_REQUEST
            | if self.is_dump() {
                NLM_F_DUMP
            } else {
                NLM_F_ACK
            };
        genl::encode_request(
            &RequestHeader {
                family,
                flags,
                sequence,
                command: self.command(),
                version: IPVS_GENL_VERSION,
            },
            &self.attributes(),
        )
    }
}

/// A service nest: the identity, and the settings for NEW and SET (in ipvsadm's order).
fn service_attrs(key: &ServiceKey, settings: Option<&ServiceSettings>) -> AttrWriter {
    let mut attrs = AttrWriter::new();
    attrs.u16(svc_attr::AF, family_of(key.addr));
    match key.fwmark {
        Some(mark) => {
            attrs.u32(svc_attr::FWMARK, mark);
        }
        None => {
            attrs
                .u16(svc_attr::PROTOCOL, key.protocol)
                .bytes(svc_attr::ADDR, &inet_addr_bytes(key.addr))
                .be16(svc_attr::PORT, key.port);
        }
    }
    if let Some(settings) = settings {
        let mut flags = [0; 8];
        flags[..4].copy_from_slice(&(settings.flags & !svc_flag::HASHED).to_ne_bytes());
        flags[4..].copy_from_slice(&u32::MAX.to_ne_bytes());
        attrs
            .string(svc_attr::SCHED_NAME, &settings.scheduler)
            .bytes(svc_attr::FLAGS, &flags)
            .u32(svc_attr::TIMEOUT, settings.timeout_secs)
            .bytes(svc_attr::NETMASK, &settings.netmask.to_attr());
    }
    attrs
}

/// A dest nest: the identity, and the settings for NEW and SET, in ipvsadm's order
/// (captured: ADDR_FAMILY, ADDR, PORT, FWD_METHOD, WEIGHT, TUN_TYPE, TUN_PORT, TUN_FLAGS,
/// U_THRESH, L_THRESH). ipvsadm always sends the tunnel; here it is sent only when not
/// IPIP's defaults (all zero, what the kernel takes when they are absent), so kernels
/// before 5.2 see no attribute they do not know.
fn dest_attrs(key: &DestKey, settings: Option<&DestSettings>) -> AttrWriter {
    let mut attrs = AttrWriter::new();
    attrs
        .u16(dest_attr::ADDR_FAMILY, family_of(key.addr))
        .bytes(dest_attr::ADDR, &inet_addr_bytes(key.addr))
        .be16(dest_attr::PORT, key.port);
    if let Some(settings) = settings {
        attrs
            .u32(dest_attr::FWD_METHOD, settings.forward & fwd::MASK)
            .u32(dest_attr::WEIGHT, settings.weight);
        if settings.tunnel != Tunnel::default() {
            attrs
                .u8(dest_attr::TUN_TYPE, settings.tunnel.kind)
                .be16(dest_attr::TUN_PORT, settings.tunnel.port)
                .u16(dest_attr::TUN_FLAGS, settings.tunnel.flags);
        }
        attrs
            .u32(dest_attr::U_THRESH, settings.upper_threshold)
            .u32(dest_attr::L_THRESH, settings.lower_threshold);
    }
    attrs
}
