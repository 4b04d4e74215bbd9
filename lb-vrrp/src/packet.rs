//! VRRP advertisements on the wire: the VRRPv3 packet of RFC 5798 (IPv4 and IPv6, the
//! advertisement interval in centiseconds, a checksum over an IP pseudo-header) and the
//! VRRPv2 packet of RFC 3768 (IPv4, the interval in seconds, the checksum over the VRRP
//! message alone, `auth_type PASS`). `decode` checks what RFC 5798 section 7.1 and RFC
//! 3768 section 7.1 ask of a receiver that the packet alone can show (version, type,
//! length, address count, checksum, authentication type); the I/O layer checks the TTL
//! or hop limit of 255 and the interface.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The IP protocol number of VRRP.
pub const IPPROTO_VRRP: u8 = 112;
/// The fixed part of both versions' header.
const HEADER_LEN: usize = 8;
/// VRRPv2's authentication data.
const AUTH_LEN: usize = 8;
/// The only packet type: an ADVERTISEMENT.
const TYPE_ADVERTISEMENT: u8 = 1;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    V2,
    V3,
}

/// VRRPv2's authentication (RFC 3768 section 5.3.6; type 2, IP AH, is refused as
/// keepalived refuses it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Auth {
    None,
    /// `auth_type PASS`: up to 8 bytes, zero-padded.
    Pass([u8; AUTH_LEN]),
}

impl Auth {
    /// `auth_pass` as keepalived sends it: the first 8 bytes, zero-padded.
    pub fn pass(password: &str) -> Self {
        let mut bytes = [0u8; AUTH_LEN];
        for (slot, byte) in bytes.iter_mut().zip(password.bytes()) {
            *slot = byte;
        }
        Auth::Pass(bytes)
    }
}

/// One advertisement.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Advertisement {
    pub version: Version,
    pub vrid: u8,
    /// 0: the master is leaving; 255: the address owner.
    pub priority: u8,
    /// The advertisement interval in centiseconds (VRRPv2 carries whole seconds).
    pub interval_cs: u16,
    /// The virtual addresses, all of one family.
    pub addresses: Vec<IpAddr>,
    /// VRRPv2 only; VRRPv3 has none.
    pub auth: Auth,
}

/// Why a packet was not taken.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("{len} bytes, shorter than a VRRP header")]
    TooShort { len: usize },
    #[error("version {version}, not 2 or 3")]
    Version { version: u8 },
    #[error("type {kind}, not an advertisement (1)")]
    Type { kind: u8 },
    #[error("{count} addresses do not fit {len} bytes")]
    Length { count: u8, len: usize },
    #[error("no virtual address")]
    NoAddress,
    #[error("checksum {got:#06x}, expected {want:#06x}")]
    Checksum { got: u16, want: u16 },
    #[error("authentication type {auth_type} is not supported (0 none, 1 PASS)")]
    AuthType { auth_type: u8 },
    #[error("VRRPv2 over IPv6 does not exist")]
    V2OverIpv6,
    #[error("advertisement interval 0")]
    ZeroInterval,
    #[error("the IP source and destination are of different families")]
    Families,
}

/// The Internet checksum (RFC 1071) over the concatenation of `parts`.
fn checksum(parts: &[&[u8]]) -> u16 {
    let mut sum: u32 = 0;
    let mut odd: Option<u8> = None;
    for part in parts {
        for &byte in *part {
            match odd.take() {
                Some(high) => sum += u32::from(u16::from_be_bytes([high, byte])),
                None => odd = Some(byte),
            }
        }
    }
    if let Some(high) = odd {
        sum += u32::from(u16::from_be_bytes([high, 0]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// The IP pseudo-header of a VRRPv3 checksum (RFC 5798 section 5.2.8: as for TCP/UDP).
fn pseudo_header(src: IpAddr, dst: IpAddr, len: usize) -> Result<Vec<u8>, DecodeError> {
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let mut header = Vec::with_capacity(12);
            header.extend_from_slice(&s.octets());
            header.extend_from_slice(&d.octets());
            header.extend_from_slice(&[0, IPPROTO_VRRP]);
            header.extend_from_slice(&(len as u16).to_be_bytes());
            Ok(header)
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            let mut header = Vec::with_capacity(40);
            header.extend_from_slice(&s.octets());
            header.extend_from_slice(&d.octets());
            header.extend_from_slice(&(len as u32).to_be_bytes());
            header.extend_from_slice(&[0, 0, 0, IPPROTO_VRRP]);
            Ok(header)
        }
        _ => Err(DecodeError::Families),
    }
}

impl Advertisement {
    /// The packet (the IP payload) sent from `src` to `dst` (VRRPv3's checksum covers
    /// them).
    ///
    /// ```text
    /// VRRPv3 (RFC 5798 section 5.1):
    ///  0                   1                   2                   3
    ///  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
    /// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    /// |Version| Type  | Virtual Rtr ID|   Priority    |Count IPvX Addr|
    /// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    /// |(rsvd) |     Max Adver Int     |          Checksum             |
    /// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    /// |                       IPvX Address(es)                        |
    /// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    ///
    /// VRRPv2 (RFC 3768 section 5.1):
    /// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    /// |Version| Type  | Virtual Rtr ID|   Priority    | Count IP Addrs|
    /// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    /// |   Auth Type   |   Adver Int   |          Checksum             |
    /// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    /// |                         IP Address(es)                        |
    /// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    /// |                     Authentication Data (1)                   |
    /// |                     Authentication Data (2)                   |
    /// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    /// ```
    pub fn encode(&self, src: IpAddr, dst: IpAddr) -> Vec<u8> {
        let version = match self.version {
            Version::V2 => 2,
            Version::V3 => 3,
        };
        let count = self.addresses.len().min(usize::from(u8::MAX)) as u8;
        let mut packet = vec![
            version << 4 | TYPE_ADVERTISEMENT,
            self.vrid,
            self.priority,
            count,
        ];
        match self.version {
            Version::V2 => {
                let (auth_type, _) = self.auth_fields();
                let seconds = (self.interval_cs / 100).clamp(1, 255) as u8;
                packet.extend_from_slice(&[auth_type, seconds, 0, 0]);
            }
            Version::V3 => {
                let interval = self.interval_cs & 0x0fff;
                packet.extend_from_slice(&interval.to_be_bytes());
                packet.extend_from_slice(&[0, 0]);
            }
        }
        for addr in self.addresses.iter().take(usize::from(count)) {
            match addr {
                IpAddr::V4(a) => packet.extend_from_slice(&a.octets()),
                IpAddr::V6(a) => packet.extend_from_slice(&a.octets()),
            }
        }
        let sum = match self.version {
            Version::V2 => {
                packet.extend_from_slice(&self.auth_fields().1);
                checksum(&[&packet])
            }
            Version::V3 => match pseudo_header(src, dst, packet.len()) {
                Ok(header) => checksum(&[&header, &packet]),
                Err(_) => checksum(&[&packet]),
            },
        };
        packet[6..8].copy_from_slice(&sum.to_be_bytes());
        packet
    }

    fn auth_fields(&self) -> (u8, [u8; AUTH_LEN]) {
        match self.auth {
            Auth::None => (0, [0; AUTH_LEN]),
            Auth::Pass(bytes) => (1, bytes),
        }
    }

    /// An advertisement received from `src` for `dst`, checked.
    pub fn decode(packet: &[u8], src: IpAddr, dst: IpAddr) -> Result<Self, DecodeError> {
        if packet.len() < HEADER_LEN {
            return Err(DecodeError::TooShort { len: packet.len() });
        }
        if src.is_ipv4() != dst.is_ipv4() {
            return Err(DecodeError::Families);
        }
        let version = match packet[0] >> 4 {
            2 if src.is_ipv6() => return Err(DecodeError::V2OverIpv6),
            2 => Version::V2,
            3 => Version::V3,
            version => return Err(DecodeError::Version { version }),
        };
        let kind = packet[0] & 0x0f;
        if kind != TYPE_ADVERTISEMENT {
            return Err(DecodeError::Type { kind });
        }
        let (vrid, priority, count) = (packet[1], packet[2], packet[3]);
        let addr_len = if src.is_ipv4() { 4 } else { 16 };
        let auth_len = if version == Version::V2 { AUTH_LEN } else { 0 };
        let want_len = HEADER_LEN + usize::from(count) * addr_len + auth_len;
        // RFC 5798 section 7.1: the length must fit the address count (trailing bytes, as
        // some senders pad, are ignored).
        if packet.len() < want_len {
            return Err(DecodeError::Length {
                count,
                len: packet.len(),
            });
        }
        if count == 0 {
            return Err(DecodeError::NoAddress);
        }
        let message = &packet[..want_len];
        let got = u16::from_be_bytes([packet[6], packet[7]]);
        let mut zeroed = message.to_vec();
        zeroed[6..8].copy_from_slice(&[0, 0]);
        let want = match version {
            Version::V2 => checksum(&[&zeroed]),
            Version::V3 => checksum(&[&pseudo_header(src, dst, want_len)?, &zeroed]),
        };
        if got != want {
            return Err(DecodeError::Checksum { got, want });
        }
        let (interval_cs, auth) = match version {
            Version::V2 => {
                let auth = match packet[4] {
                    0 => Auth::None,
                    1 => {
                        let mut bytes = [0u8; AUTH_LEN];
                        bytes.copy_from_slice(&message[want_len - AUTH_LEN..]);
                        Auth::Pass(bytes)
                    }
                    auth_type => return Err(DecodeError::AuthType { auth_type }),
                };
                (u16::from(packet[5]) * 100, auth)
            }
            Version::V3 => (
                u16::from_be_bytes([packet[4], packet[5]]) & 0x0fff,
                Auth::None,
            ),
        };
        if interval_cs == 0 {
            return Err(DecodeError::ZeroInterval);
        }
        let addresses = message[HEADER_LEN..HEADER_LEN + usize::from(count) * addr_len]
            .chunks(addr_len)
            .map(|chunk| match chunk.len() {
                4 => IpAddr::V4(Ipv4Addr::new(chunk[0], chunk[1], chunk[2], chunk[3])),
                _ => {
                    let mut octets = [0u8; 16];
                    octets.copy_from_slice(chunk);
                    IpAddr::V6(Ipv6Addr::from(octets))
                }
            })
            .collect();
        Ok(Self {
            version,
            vrid,
            priority,
            interval_cs,
            addresses,
            auth,
        })
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const SRC4: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
    const DST4: IpAddr = IpAddr::V4(Ipv4Addr::new(224, 0, 0, 18));

    fn v3(addresses: Vec<IpAddr>) -> Advertisement {
        Advertisement {
            version: Version::V3,
            vrid: 51,
            priority: 100,
            interval_cs: 100,
            addresses,
            auth: Auth::None,
        }
    }

    #[test]
    fn vrrpv3_ipv4_has_the_rfc_layout_and_a_pseudo_header_checksum() {
        let advert = v3(vec!["10.0.0.100".parse().unwrap()]);
        let packet = advert.encode(SRC4, DST4);
        assert_eq!(packet[..6], [0x31, 51, 100, 1, 0x00, 100]);
        assert_eq!(packet[8..], [10, 0, 0, 100]);
        // The checksum verifies over the pseudo-header and the packet.
        let pseudo = pseudo_header(SRC4, DST4, packet.len()).unwrap();
        assert_eq!(checksum(&[&pseudo, &packet]), 0);
        assert_eq!(Advertisement::decode(&packet, SRC4, DST4), Ok(advert));
        // Another destination (a unicast peer) gives another checksum.
        let peer: IpAddr = "192.0.2.2".parse().unwrap();
        assert!(matches!(
            Advertisement::decode(&packet, SRC4, peer),
            Err(DecodeError::Checksum { .. })
        ));
    }

    #[test]
    fn vrrpv2_carries_seconds_and_the_password_and_no_pseudo_header() {
        let advert = Advertisement {
            version: Version::V2,
            vrid: 7,
            priority: 150,
            interval_cs: 300,
            addresses: vec!["10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap()],
            auth: Auth::pass("secret99longer"),
        };
        let packet = advert.encode(SRC4, DST4);
        assert_eq!(packet[..6], [0x21, 7, 150, 2, 1, 3]);
        assert_eq!(&packet[16..], b"secret99");
        assert_eq!(checksum(&[&packet]), 0);
        let decoded = Advertisement::decode(&packet, SRC4, DST4).unwrap();
        assert_eq!(decoded.auth, Auth::pass("secret99"));
        assert_eq!(decoded.interval_cs, 300);
        // The checksum does not depend on the addresses around it.
        assert!(Advertisement::decode(&packet, SRC4, "192.0.2.9".parse().unwrap()).is_ok());
    }

    #[test]
    fn vrrpv3_ipv6_uses_the_ipv6_pseudo_header() {
        let src: IpAddr = "fe80::1".parse().unwrap();
        let dst: IpAddr = "ff02::12".parse().unwrap();
        let advert = Advertisement {
            interval_cs: 5,
            ..v3(vec!["2001:db8::1".parse().unwrap()])
        };
        let packet = advert.encode(src, dst);
        assert_eq!(packet.len(), 8 + 16);
        let pseudo = pseudo_header(src, dst, packet.len()).unwrap();
        assert_eq!(pseudo.len(), 40);
        assert_eq!(checksum(&[&pseudo, &packet]), 0);
        assert_eq!(Advertisement::decode(&packet, src, dst), Ok(advert));
    }

    #[test]
    fn malformed_packets_are_refused_with_a_reason() {
        let good = v3(vec!["10.0.0.100".parse().unwrap()]).encode(SRC4, DST4);
        let decode = |packet: &[u8]| Advertisement::decode(packet, SRC4, DST4);
        assert_eq!(decode(&good[..7]), Err(DecodeError::TooShort { len: 7 }));
        let mut bad = good.clone();
        bad[0] = 0x41;
        assert_eq!(decode(&bad), Err(DecodeError::Version { version: 4 }));
        bad[0] = 0x32;
        assert_eq!(decode(&bad), Err(DecodeError::Type { kind: 2 }));
        let mut bad = good.clone();
        bad[3] = 2;
        assert_eq!(decode(&bad), Err(DecodeError::Length { count: 2, len: 12 }));
        let mut bad = good.clone();
        bad[9] ^= 1;
        assert!(matches!(decode(&bad), Err(DecodeError::Checksum { .. })));
        let v6: IpAddr = "fe80::1".parse().unwrap();
        let mut v2 = good.clone();
        v2[0] = 0x21;
        assert_eq!(
            Advertisement::decode(&v2, v6, "ff02::12".parse().unwrap()),
            Err(DecodeError::V2OverIpv6)
        );
        assert_eq!(
            Advertisement::decode(&good, SRC4, "ff02::12".parse().unwrap()),
            Err(DecodeError::Families)
        );
        let ah = Advertisement {
            version: Version::V2,
            ..v3(vec!["10.0.0.1".parse().unwrap()])
        };
        let mut packet = ah.encode(SRC4, DST4);
        packet[4] = 2;
        packet[6..8].copy_from_slice(&[0, 0]);
        let sum = checksum(&[&packet]);
        packet[6..8].copy_from_slice(&sum.to_be_bytes());
        assert_eq!(decode(&packet), Err(DecodeError::AuthType { auth_type: 2 }));
    }

    fn advert() -> impl Strategy<Value = (Advertisement, IpAddr, IpAddr)> {
        (
            any::<bool>(),
            any::<bool>(),
            1u8..,
            any::<u8>(),
            1u16..0x1000,
            1usize..8,
            any::<[u8; 8]>(),
        )
            .prop_map(|(v2, ipv6, vrid, priority, interval, count, pass)| {
                let ipv6 = ipv6 && !v2;
                let (src, dst): (IpAddr, IpAddr) = if ipv6 {
                    ("fe80::7".parse().unwrap(), "ff02::12".parse().unwrap())
                } else {
                    (SRC4, DST4)
                };
                let addresses = (0..count)
                    .map(|i| {
                        if ipv6 {
                            IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, i as u16))
                        } else {
                            IpAddr::V4(Ipv4Addr::new(10, 0, 0, i as u8))
                        }
                    })
                    .collect();
                let advert = Advertisement {
                    version: if v2 { Version::V2 } else { Version::V3 },
                    vrid,
                    priority,
                    // VRRPv2 carries whole seconds.
                    interval_cs: if v2 {
                        (interval % 255 + 1) * 100
                    } else {
                        interval
                    },
                    addresses,
                    auth: if v2 { Auth::Pass(pass) } else { Auth::None },
                };
                (advert, src, dst)
            })
    }

    proptest! {
        #[test]
        fn what_is_encoded_decodes_the_same((advert, src, dst) in advert()) {
            let packet = advert.encode(src, dst);
            prop_assert_eq!(Advertisement::decode(&packet, src, dst), Ok(advert));
        }

        #[test]
        fn any_bytes_decode_or_fail_without_panicking(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
            let _ = Advertisement::decode(&bytes, SRC4, DST4);
            let _ = Advertisement::decode(&bytes, "fe80::1".parse().unwrap(), "ff02::12".parse().unwrap());
        }
    }
}
