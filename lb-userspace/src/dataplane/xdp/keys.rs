//! Conversions between model addresses and the byte layouts of the map keys.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use lb_common::{FAMILY_IPV4, FAMILY_IPV6, PROTO_TCP, PROTO_UDP, ServiceKey, VipKey};

use crate::model::Protocol;

/// Address as (16 network-order bytes, family); IPv4 in the first 4 bytes.
pub fn addr_bytes(addr: IpAddr) -> ([u8; 16], u8) {
    match addr {
        IpAddr::V4(v4) => {
            let mut bytes = [0; 16];
            bytes[..4].copy_from_slice(&v4.octets());
            (bytes, FAMILY_IPV4)
        }
        IpAddr::V6(v6) => (v6.octets(), FAMILY_IPV6),
    }
}

/// The inverse of [`addr_bytes`]; `None` for an unknown family.
pub fn addr_from(bytes: [u8; 16], family: u8) -> Option<IpAddr> {
    match family {
        FAMILY_IPV4 => Some(Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3]).into()),
        FAMILY_IPV6 => Some(Ipv6Addr::from(bytes).into()),
        _ => None,
    }
}

/// Key of a set of VIP addresses (`LB_VIPS`, `LB_DECAP_VIPS`).
pub fn vip_key(vip: IpAddr) -> VipKey {
    let (addr, family) = addr_bytes(vip);
    VipKey {
        addr,
        family,
        _pad: [0; 3],
    }
}

pub fn service_key(addr: IpAddr, port: u16, protocol: Protocol) -> ServiceKey {
    let (addr, family) = addr_bytes(addr);
    ServiceKey {
        addr,
        port: port.to_be_bytes(),
        proto: protocol.ip_proto(),
        family,
    }
}

pub fn protocol_from(proto: u8) -> Option<Protocol> {
    match proto {
        PROTO_TCP => Some(Protocol::Tcp),
        PROTO_UDP => Some(Protocol::Udp),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_round_trip() {
        for addr in ["192.0.2.7", "2001:db8::7"] {
            let addr: IpAddr = addr.parse().unwrap();
            let (bytes, family) = addr_bytes(addr);
            assert_eq!(addr_from(bytes, family), Some(addr));
        }
        assert_eq!(addr_from([0; 16], 0), None);
    }
}
