//! IPVS's connection table as `/proc/net/ip_vs_conn` shows it (`ip_vs_conn_seq_show`): a
//! header line, then one line per connection (and per persistence template):
//!
//! ```text
//! Pro FromIP   FPrt ToIP     TPrt DestIP   DPrt State       Expires PEName PEData
//! TCP 0A000005 D431 0A000001 0050 0A000002 0050 ESTABLISHED     897
//! ```
//!
//! IPv4 addresses are 8 hex digits (the address as a host-order number, `%08X` of
//! `ntohl`), IPv6 addresses are `%pI6` (eight groups of four hex digits with colons), each
//! address on its own (a real may be of the other family, TUN only); ports are 4 hex
//! digits; Expires is seconds; a persistence engine adds its name and data. The file needs
//! no privilege. Forwarding methods are not in it: `forward` is `?` unless the caller fills
//! it in from the destinations.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use lb_common::conn;

use super::error::IpvsError;
use crate::{
    dataplane::xdp::flows::{Connection, state_name},
    model::Protocol,
};

pub const PATH: &str = "/proc/net/ip_vs_conn";

/// IPVS's TCP state names in `IP_VS_TCP_S_*` order, then UDP's one state.
const STATE_NAMES: [(&str, u8); 12] = [
    ("NONE", conn::STATE_NONE),
    ("ESTABLISHED", conn::STATE_ESTABLISHED),
    ("SYN_SENT", conn::STATE_SYN_SENT),
    ("SYN_RECV", conn::STATE_SYN_RECV),
    ("FIN_WAIT", conn::STATE_FIN_WAIT),
    ("TIME_WAIT", conn::STATE_TIME_WAIT),
    ("CLOSE", conn::STATE_CLOSE),
    ("CLOSE_WAIT", conn::STATE_CLOSE_WAIT),
    ("LAST_ACK", conn::STATE_LAST_ACK),
    ("LISTEN", conn::STATE_LISTEN),
    ("SYNACK", conn::STATE_SYNACK),
    ("UDP", conn::STATE_UDP),
];

fn address(field: &str) -> Option<IpAddr> {
    if field.contains(':') {
        field.parse::<Ipv6Addr>().ok().map(IpAddr::V6)
    } else if field.len() == 8 {
        u32::from_str_radix(field, 16)
            .ok()
            .map(|n| IpAddr::V4(Ipv4Addr::from(n)))
    } else {
        None
    }
}

fn port(field: &str) -> Option<u16> {
    (field.len() == 4)
        .then(|| u16::from_str_radix(field, 16).ok())
        .flatten()
}

/// One line, or `Ok(None)` for a protocol lbd does not model (SCTP, AH, ESP, `IP` of
/// firewall-mark templates).
fn parse_line(line: &str) -> Result<Option<Connection>, String> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    let [
        proto,
        from,
        from_port,
        to,
        to_port,
        dest,
        dest_port,
        state,
        expires,
        ..,
    ] = fields[..]
    else {
        return Err(format!(
            "{} fields where 9 or more were expected",
            fields.len()
        ));
    };
    let protocol = match proto {
        "TCP" => Protocol::Tcp,
        "UDP" => Protocol::Udp,
        _ => return Ok(None),
    };
    let endpoint = |addr: &str, port_field: &str| match (address(addr), port(port_field)) {
        (Some(addr), Some(port)) => Ok(SocketAddr::new(addr, port)),
        _ => Err(format!("bad address {addr} or port {port_field}")),
    };
    let expire_secs = expires
        .parse::<u64>()
        .map_err(|_| format!("bad expiry {expires}"))?;
    let state_number = STATE_NAMES
        .iter()
        .find(|(name, _)| *name == state)
        .map(|(_, number)| *number);
    Ok(Some(Connection {
        protocol,
        expire_secs,
        state: state_number.map_or("ERR!", state_name),
        active: state_number.is_some_and(conn::is_active),
        client: endpoint(from, from_port)?,
        vip: endpoint(to, to_port)?,
        real: endpoint(dest, dest_port)?,
        forward: "?",
    }))
}

/// The connections of the table's text, at most `limit` of them, in a stable order
/// (virtual service, client) like the XDP flow table's.
pub fn parse(text: &str, limit: usize) -> Result<Vec<Connection>, IpvsError> {
    let mut connections = Vec::new();
    for (index, line) in text.lines().enumerate() {
        if line.trim().is_empty() || line.starts_with("Pro ") {
            continue;
        }
        if connections.len() >= limit {
            break;
        }
        let parsed = parse_line(line).map_err(|reason| IpvsError::ConnTable {
            path: PATH,
            line: index + 1,
            reason,
        })?;
        connections.extend(parsed);
    }
    connections.sort_by_key(|c| (c.vip, c.protocol.ip_proto(), c.client));
    Ok(connections)
}

/// The kernel's connections (see `parse`). No table means no IPVS.
pub fn read(limit: usize) -> Result<Vec<Connection>, IpvsError> {
    match std::fs::read_to_string(PATH) {
        Ok(text) => parse(&text, limit),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(IpvsError::NotRegistered),
        Err(source) => Err(IpvsError::ReadConnTable { path: PATH, source }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Shaped after `ip_vs_conn_seq_show`'s formats (derived, not captured): IPv4 TCP and
    /// UDP, a persistence template (client port 0, state NONE), an IPv6 connection, an
    /// SCTP one (skipped), one with a persistence engine's columns.
    const SAMPLE: &str = "\
Pro FromIP   FPrt ToIP     TPrt DestIP   DPrt State       Expires PEName PEData
TCP 0A000005 D431 0A000001 0050 0A000002 0050 ESTABLISHED     897
UDP 0A000006 8AE2 0A000001 0035 0A000003 0035 UDP             287
TCP 0A000005 0000 0A000001 0050 0A000002 0050 NONE            357
TCP 2001:0db8:0000:0000:0000:0000:0000:0005 C350 2001:0db8:0000:0000:0000:0000:0000:0001 01BB 2001:0db8:0000:0000:0000:0000:0000:0002 01BB SYN_RECV         55
SCTP 0A000005 0BB8 0A000001 0BB8 0A000002 0BB8 ESTABLISHED     900
UDP 0A000007 13C4 0A000001 13C4 0A000004 13C4 UDP             170 sip 3a2b1c
";

    #[test]
    fn the_table_parses_into_connections() {
        let connections = parse(SAMPLE, 100).unwrap();
        assert_eq!(connections.len(), 5, "SCTP is skipped");
        let established = connections
            .iter()
            .find(|c| c.state == "ESTABLISHED")
            .unwrap();
        assert_eq!(established.protocol, Protocol::Tcp);
        assert_eq!(established.client, "10.0.0.5:54321".parse().unwrap());
        assert_eq!(established.vip, "10.0.0.1:80".parse().unwrap());
        assert_eq!(established.real, "10.0.0.2:80".parse().unwrap());
        assert_eq!(established.expire_secs, 897);
        assert!(established.active);
        let template = connections.iter().find(|c| c.state == "NONE").unwrap();
        assert_eq!(template.client.port(), 0);
        assert!(!template.active);
        let v6 = connections.iter().find(|c| c.vip.is_ipv6()).unwrap();
        assert_eq!(v6.vip, "[2001:db8::1]:443".parse().unwrap());
        assert_eq!(v6.state, "SYN_RECV");
        let sip = connections
            .iter()
            .find(|c| c.client.port() == 5060)
            .unwrap();
        assert_eq!((sip.state, sip.active), ("UDP", false));
        assert!(connections.iter().all(|c| c.forward == "?"));
    }

    #[test]
    fn the_limit_and_bad_lines_are_honoured() {
        assert_eq!(parse(SAMPLE, 2).unwrap().len(), 2);
        let error = parse("TCP 0A000005 D431 0A000001\n", 10).unwrap_err();
        assert!(error.to_string().contains("line 1"), "{error}");
        let error = parse("TCP 0A0005 D431 0A000001 0050 0A000002 0050 CLOSE 5\n", 10).unwrap_err();
        assert!(error.to_string().contains("bad address"), "{error}");
        let unknown_state = parse(
            "TCP 0A000005 D431 0A000001 0050 0A000002 0050 WEIRD 5\n",
            10,
        )
        .unwrap();
        assert_eq!(unknown_state[0].state, "ERR!");
    }
}
