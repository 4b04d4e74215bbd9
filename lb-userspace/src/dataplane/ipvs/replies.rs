//! The kernel's IPVS replies decoded into `messages`' typed values: GET_SERVICE and
//! GET_DEST dump entries (`ip_vs_genl_fill_service`, `ip_vs_genl_fill_dest`, nested
//! without `NLA_F_NESTED`), GET_CONFIG's timeouts and GET_INFO's version.
//!
//! Total: a missing required attribute, a payload of the wrong size, an address of the
//! wrong length for its family are `DecodeError`s naming the attribute. Unknown attribute
//! types are skipped (newer kernels add attributes; netlink's rule). Counters come from
//! STATS64 when present (4.1+), else from STATS, whose packet counters are 32-bit but
//! byte counters 64-bit; a PAD attribute before a 64-bit value is skipped.

use std::net::IpAddr;

use super::{
    error::DecodeError,
    genl::{self, Attr},
    messages::{
        DestKey, DestSettings, Info, KernelDest, KernelService, KernelTimeouts, Netmask,
        ServiceKey, ServiceSettings, Stats, Tunnel, cmd, cmd_attr, dest_attr, family_of, fwd,
        inet_addr_from, info_attr, stats_attr, svc_attr, svc_flag,
    },
};

/// Check a reply's command.
fn expect_command(expected: u8, actual: u8) -> Result<(), DecodeError> {
    if expected == actual {
        Ok(())
    } else {
        Err(DecodeError::UnexpectedCommand { expected, actual })
    }
}

/// The one nest of type `kind` among a message's attributes.
fn top_level_nest<'a>(
    attrs: &'a [u8],
    kind: u16,
    attribute: &'static str,
    within: &'static str,
) -> Result<Attr<'a>, DecodeError> {
    let mut found = None;
    for attr in genl::attrs(attrs) {
        let attr = attr?;
        if attr.kind == kind {
            found = Some(attr);
        }
    }
    found.ok_or(DecodeError::Missing { attribute, within })
}

fn missing(attribute: &'static str, within: &'static str) -> DecodeError {
    DecodeError::Missing { attribute, within }
}

/// Counters from a STATS or STATS64 nest.
fn decode_stats(nest: &Attr<'_>) -> Result<Stats, DecodeError> {
    let mut stats = Stats::default();
    for attr in nest.nested() {
        let attr = attr?;
        let (field, name) = match attr.kind {
            stats_attr::CONNS => (&mut stats.conns, "IPVS_STATS_ATTR_CONNS"),
            stats_attr::INPKTS => (&mut stats.in_packets, "IPVS_STATS_ATTR_INPKTS"),
            stats_attr::OUTPKTS => (&mut stats.out_packets, "IPVS_STATS_ATTR_OUTPKTS"),
            stats_attr::INBYTES => (&mut stats.in_bytes, "IPVS_STATS_ATTR_INBYTES"),
            stats_attr::OUTBYTES => (&mut stats.out_bytes, "IPVS_STATS_ATTR_OUTBYTES"),
            stats_attr::CPS => (&mut stats.cps, "IPVS_STATS_ATTR_CPS"),
            stats_attr::INPPS => (&mut stats.in_pps, "IPVS_STATS_ATTR_INPPS"),
            stats_attr::OUTPPS => (&mut stats.out_pps, "IPVS_STATS_ATTR_OUTPPS"),
            stats_attr::INBPS => (&mut stats.in_bps, "IPVS_STATS_ATTR_INBPS"),
            stats_attr::OUTBPS => (&mut stats.out_bps, "IPVS_STATS_ATTR_OUTBPS"),
            _ => continue,
        };
        *field = attr.u32_or_u64(name)?;
    }
    Ok(stats)
}

/// STATS64 if the kernel sent it (4.1+), else STATS, else zeros (a request's nest, read
/// back, has none).
fn preferred_stats(
    stats: Option<Attr<'_>>,
    stats64: Option<Attr<'_>>,
) -> Result<Stats, DecodeError> {
    match stats64.or(stats) {
        Some(nest) => decode_stats(&nest),
        None => Ok(Stats::default()),
    }
}

/// A service from a `NEW_SERVICE` message (a GET_SERVICE dump entry).
pub fn decode_service(command: u8, attrs: &[u8]) -> Result<KernelService, DecodeError> {
    const WITHIN: &str = "IPVS_CMD_ATTR_SERVICE";
    expect_command(cmd::NEW_SERVICE, command)?;
    let nest = top_level_nest(attrs, cmd_attr::SERVICE, WITHIN, "IPVS_CMD_NEW_SERVICE")?;
    let (mut af, mut protocol, mut addr, mut port, mut fwmark) = (None, None, None, None, None);
    let (mut scheduler, mut flags, mut timeout, mut netmask) = (None, None, None, None);
    let (mut stats, mut stats64) = (None, None);
    for attr in nest.nested() {
        let attr = attr?;
        match attr.kind {
            svc_attr::AF => af = Some(attr.u16("IPVS_SVC_ATTR_AF")?),
            svc_attr::PROTOCOL => protocol = Some(attr.u16("IPVS_SVC_ATTR_PROTOCOL")?),
            svc_attr::ADDR => addr = Some(attr.payload),
            svc_attr::PORT => port = Some(attr.be16("IPVS_SVC_ATTR_PORT")?),
            svc_attr::FWMARK => fwmark = Some(attr.u32("IPVS_SVC_ATTR_FWMARK")?),
            svc_attr::SCHED_NAME => scheduler = Some(attr.string("IPVS_SVC_ATTR_SCHED_NAME")?),
            svc_attr::FLAGS => {
                let raw: [u8; 8] =
                    attr.payload
                        .try_into()
                        .map_err(|_| DecodeError::PayloadSize {
                            attribute: "IPVS_SVC_ATTR_FLAGS",
                            expected: "8",
                            actual: attr.payload.len(),
                        })?;
                let mut value = [0; 4];
                value.copy_from_slice(&raw[..4]);
                flags = Some(u32::from_ne_bytes(value));
            }
            svc_attr::TIMEOUT => timeout = Some(attr.u32("IPVS_SVC_ATTR_TIMEOUT")?),
            svc_attr::NETMASK => netmask = Some(attr.raw32("IPVS_SVC_ATTR_NETMASK")?),
            svc_attr::STATS => stats = Some(attr),
            svc_attr::STATS64 => stats64 = Some(attr),
            _ => {}
        }
    }
    let af = af.ok_or(missing("IPVS_SVC_ATTR_AF", WITHIN))?;
    let key = match (fwmark, protocol, addr, port) {
        (Some(mark), ..) => ServiceKey::fwmark(af, mark),
        (None, Some(protocol), Some(addr), Some(port)) => ServiceKey {
            protocol,
            addr: inet_addr_from(af, addr, "IPVS_SVC_ATTR_ADDR")?,
            port,
            fwmark: None,
        },
        (None, None, ..) => return Err(missing("IPVS_SVC_ATTR_PROTOCOL", WITHIN)),
        (None, _, None, _) => return Err(missing("IPVS_SVC_ATTR_ADDR", WITHIN)),
        (None, _, _, None) => return Err(missing("IPVS_SVC_ATTR_PORT", WITHIN)),
    };
    let settings = ServiceSettings {
        scheduler: scheduler
            .ok_or(missing("IPVS_SVC_ATTR_SCHED_NAME", WITHIN))?
            .to_owned(),
        flags: flags.ok_or(missing("IPVS_SVC_ATTR_FLAGS", WITHIN))? & !svc_flag::HASHED,
        timeout_secs: timeout.ok_or(missing("IPVS_SVC_ATTR_TIMEOUT", WITHIN))?,
        netmask: Netmask::from_attr(af, netmask.ok_or(missing("IPVS_SVC_ATTR_NETMASK", WITHIN))?),
    };
    Ok(KernelService {
        key,
        settings,
        stats: preferred_stats(stats, stats64)?,
    })
}

/// A destination from a `NEW_DEST` message (a GET_DEST dump entry) of the service on
/// `service_addr`, whose family the destination has when the kernel does not say (before
/// 4.3's ADDR_FAMILY).
pub fn decode_dest(
    command: u8,
    attrs: &[u8],
    service_addr: IpAddr,
) -> Result<KernelDest, DecodeError> {
    const WITHIN: &str = "IPVS_CMD_ATTR_DEST";
    expect_command(cmd::NEW_DEST, command)?;
    let nest = top_level_nest(attrs, cmd_attr::DEST, WITHIN, "IPVS_CMD_NEW_DEST")?;
    let (mut family, mut addr, mut port) = (None, None, None);
    let (mut forward, mut weight, mut upper, mut lower) = (None, None, 0, 0);
    let mut tunnel = Tunnel::default();
    let (mut active, mut inactive, mut persistent) = (0, 0, 0);
    let (mut stats, mut stats64) = (None, None);
    for attr in nest.nested() {
        let attr = attr?;
        match attr.kind {
            dest_attr::ADDR => addr = Some(attr.payload),
            dest_attr::PORT => port = Some(attr.be16("IPVS_DEST_ATTR_PORT")?),
            dest_attr::FWD_METHOD => forward = Some(attr.u32("IPVS_DEST_ATTR_FWD_METHOD")?),
            dest_attr::WEIGHT => weight = Some(attr.u32("IPVS_DEST_ATTR_WEIGHT")?),
            dest_attr::U_THRESH => upper = attr.u32("IPVS_DEST_ATTR_U_THRESH")?,
            dest_attr::L_THRESH => lower = attr.u32("IPVS_DEST_ATTR_L_THRESH")?,
            dest_attr::ACTIVE_CONNS => active = attr.u32("IPVS_DEST_ATTR_ACTIVE_CONNS")?,
            dest_attr::INACT_CONNS => inactive = attr.u32("IPVS_DEST_ATTR_INACT_CONNS")?,
            dest_attr::PERSIST_CONNS => persistent = attr.u32("IPVS_DEST_ATTR_PERSIST_CONNS")?,
            dest_attr::STATS => stats = Some(attr),
            dest_attr::ADDR_FAMILY => family = Some(attr.u16("IPVS_DEST_ATTR_ADDR_FAMILY")?),
            dest_attr::STATS64 => stats64 = Some(attr),
            dest_attr::TUN_TYPE => tunnel.kind = attr.u8("IPVS_DEST_ATTR_TUN_TYPE")?,
            dest_attr::TUN_PORT => tunnel.port = attr.be16("IPVS_DEST_ATTR_TUN_PORT")?,
            dest_attr::TUN_FLAGS => tunnel.flags = attr.u16("IPVS_DEST_ATTR_TUN_FLAGS")?,
            _ => {}
        }
    }
    let family = family.unwrap_or(family_of(service_addr));
    let addr = addr.ok_or(missing("IPVS_DEST_ATTR_ADDR", WITHIN))?;
    Ok(KernelDest {
        key: DestKey {
            addr: inet_addr_from(family, addr, "IPVS_DEST_ATTR_ADDR")?,
            port: port.ok_or(missing("IPVS_DEST_ATTR_PORT", WITHIN))?,
        },
        settings: DestSettings {
            forward: forward.ok_or(missing("IPVS_DEST_ATTR_FWD_METHOD", WITHIN))? & fwd::MASK,
            weight: weight.ok_or(missing("IPVS_DEST_ATTR_WEIGHT", WITHIN))?,
            upper_threshold: upper,
            lower_threshold: lower,
            tunnel,
        },
        active_conns: active,
        inactive_conns: inactive,
        persistent_conns: persistent,
        stats: preferred_stats(stats, stats64)?,
    })
}

/// The timeouts of a `SET_CONFIG` message (GET_CONFIG's answer). A kernel built without
/// TCP or UDP support leaves those out: they read as 0.
pub fn decode_config(command: u8, attrs: &[u8]) -> Result<KernelTimeouts, DecodeError> {
    expect_command(cmd::SET_CONFIG, command)?;
    let mut timeouts = KernelTimeouts::default();
    for attr in genl::attrs(attrs) {
        let attr = attr?;
        match attr.kind {
            cmd_attr::TIMEOUT_TCP => timeouts.tcp = attr.u32("IPVS_CMD_ATTR_TIMEOUT_TCP")?,
            cmd_attr::TIMEOUT_TCP_FIN => {
                timeouts.tcp_fin = attr.u32("IPVS_CMD_ATTR_TIMEOUT_TCP_FIN")?
            }
            cmd_attr::TIMEOUT_UDP => timeouts.udp = attr.u32("IPVS_CMD_ATTR_TIMEOUT_UDP")?,
            _ => {}
        }
    }
    Ok(timeouts)
}

/// The version and table size of a `SET_INFO` message (GET_INFO's answer).
pub fn decode_info(command: u8, attrs: &[u8]) -> Result<Info, DecodeError> {
    const WITHIN: &str = "IPVS_CMD_SET_INFO";
    expect_command(cmd::SET_INFO, command)?;
    let (mut version, mut size) = (None, None);
    for attr in genl::attrs(attrs) {
        let attr = attr?;
        match attr.kind {
            info_attr::VERSION => version = Some(attr.u32("IPVS_INFO_ATTR_VERSION")?),
            info_attr::CONN_TAB_SIZE => size = Some(attr.u32("IPVS_INFO_ATTR_CONN_TAB_SIZE")?),
            _ => {}
        }
    }
    Ok(Info {
        version: version.ok_or(missing("IPVS_INFO_ATTR_VERSION", WITHIN))?,
        conn_table_size: size.ok_or(missing("IPVS_INFO_ATTR_CONN_TAB_SIZE", WITHIN))?,
    })
}
