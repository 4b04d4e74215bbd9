//! Builds Ethernet frames for BPF test-run fixtures: optional VLAN tags, IPv4 (with
//! options or fragment fields when asked) or IPv6 (with an optional hop-by-hop header),
//! TCP, UDP, ICMP or ICMPv6 with valid checksums, or any raw payload.

use std::net::{Ipv4Addr, Ipv6Addr};

pub const ETH_P_IPV4: u16 = 0x0800;
pub const ETH_P_IPV6: u16 = 0x86DD;
pub const ETH_P_ARP: u16 = 0x0806;
pub const ETH_P_8021Q: u16 = 0x8100;
pub const ETH_P_8021AD: u16 = 0x88A8;

#[derive(Clone, Debug)]
pub enum Network {
    V4 {
        src: Ipv4Addr,
        dst: Ipv4Addr,
        /// IPv4 options (padded to 4 bytes by the caller).
        options: Vec<u8>,
        /// Flags and fragment offset field as on the wire (DF = 0x4000, MF = 0x2000).
        frag_off: u16,
    },
    V6 {
        src: Ipv6Addr,
        dst: Ipv6Addr,
        /// Put an 8-byte hop-by-hop options header before the transport header.
        hop_by_hop: bool,
    },
    /// Anything else: ether type and payload as given.
    Raw { ether_type: u16, bytes: Vec<u8> },
}

#[derive(Clone, Debug)]
pub enum Transport {
    Tcp {
        sport: u16,
        dport: u16,
        flags: u8,
    },
    Udp {
        sport: u16,
        dport: u16,
    },
    /// Another IP protocol with its bytes (e.g. ICMP).
    Other {
        proto: u8,
        bytes: Vec<u8>,
    },
}

pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;
pub const TCP_ACK: u8 = 0x10;

#[derive(Clone, Debug)]
pub struct Frame {
    pub dst_mac: [u8; 6],
    pub src_mac: [u8; 6],
    /// (TPID, VLAN id), outermost first.
    pub vlans: Vec<(u16, u16)>,
    pub network: Network,
    pub transport: Transport,
    pub payload: Vec<u8>,
}

pub fn v4(src: [u8; 4], dst: [u8; 4]) -> Network {
    Network::V4 {
        src: src.into(),
        dst: dst.into(),
        options: Vec::new(),
        frag_off: 0,
    }
}

pub fn v6(src: &str, dst: &str) -> Network {
    Network::V6 {
        src: src.parse().expect("IPv6 literal"),
        dst: dst.parse().expect("IPv6 literal"),
        hop_by_hop: false,
    }
}

pub const CLIENT_MAC: [u8; 6] = [0x02, 0xc1, 0, 0, 0, 0x01];
pub const DIRECTOR_MAC: [u8; 6] = [0x02, 0xd1, 0, 0, 0, 0x01];

impl Frame {
    /// A client frame to the director with the given layers and a small payload.
    pub fn new(network: Network, transport: Transport) -> Self {
        Self {
            dst_mac: DIRECTOR_MAC,
            src_mac: CLIENT_MAC,
            vlans: Vec::new(),
            network,
            transport,
            payload: b"hello".to_vec(),
        }
    }

    pub fn tcp(network: Network, sport: u16, dport: u16) -> Self {
        Self::new(
            network,
            Transport::Tcp {
                sport,
                dport,
                flags: TCP_SYN,
            },
        )
    }

    pub fn udp(network: Network, sport: u16, dport: u16) -> Self {
        Self::new(network, Transport::Udp { sport, dport })
    }

    /// The same TCP segment with other flags (no effect on other transports).
    pub fn with_tcp_flags(mut self, new_flags: u8) -> Self {
        if let Transport::Tcp { flags, .. } = &mut self.transport {
            *flags = new_flags;
        }
        self
    }

    pub fn with_vlans(mut self, vlans: &[(u16, u16)]) -> Self {
        self.vlans = vlans.to_vec();
        self
    }

    pub fn with_payload(mut self, payload: &[u8]) -> Self {
        self.payload = payload.to_vec();
        self
    }

    pub fn bytes(&self) -> Vec<u8> {
        let mut frame = Vec::new();
        frame.extend_from_slice(&self.dst_mac);
        frame.extend_from_slice(&self.src_mac);
        for &(tpid, id) in &self.vlans {
            frame.extend_from_slice(&tpid.to_be_bytes());
            frame.extend_from_slice(&id.to_be_bytes());
        }
        match &self.network {
            Network::Raw { ether_type, bytes } => {
                frame.extend_from_slice(&ether_type.to_be_bytes());
                frame.extend_from_slice(bytes);
            }
            Network::V4 {
                src,
                dst,
                options,
                frag_off,
            } => {
                frame.extend_from_slice(&ETH_P_IPV4.to_be_bytes());
                let (proto, l4) = self.transport_bytes(&src.octets(), &dst.octets());
                let header_len = 20 + options.len();
                let mut ip = Vec::with_capacity(header_len);
                ip.push(0x40 | (header_len / 4) as u8);
                ip.push(0);
                ip.extend_from_slice(&((header_len + l4.len()) as u16).to_be_bytes());
                ip.extend_from_slice(&0x1234u16.to_be_bytes());
                ip.extend_from_slice(&frag_off.to_be_bytes());
                ip.push(64);
                ip.push(proto);
                ip.extend_from_slice(&[0, 0]);
                ip.extend_from_slice(&src.octets());
                ip.extend_from_slice(&dst.octets());
                ip.extend_from_slice(options);
                let sum = checksum(&ip, 0);
                ip[10..12].copy_from_slice(&sum.to_be_bytes());
                frame.extend_from_slice(&ip);
                frame.extend_from_slice(&l4);
            }
            Network::V6 {
                src,
                dst,
                hop_by_hop,
            } => {
                frame.extend_from_slice(&ETH_P_IPV6.to_be_bytes());
                let (proto, l4) = self.transport_bytes(&src.octets(), &dst.octets());
                let mut extension = Vec::new();
                let next = if *hop_by_hop {
                    // Next header, length 0 (8 bytes), PadN option filling the rest.
                    extension.extend_from_slice(&[proto, 0, 1, 4, 0, 0, 0, 0]);
                    0
                } else {
                    proto
                };
                frame.extend_from_slice(&[0x60, 0, 0, 0]);
                frame.extend_from_slice(&((extension.len() + l4.len()) as u16).to_be_bytes());
                frame.push(next);
                frame.push(64);
                frame.extend_from_slice(&src.octets());
                frame.extend_from_slice(&dst.octets());
                frame.extend_from_slice(&extension);
                frame.extend_from_slice(&l4);
            }
        }
        frame
    }

    /// (IP protocol, transport header + payload) with the checksum over the pseudo-header.
    fn transport_bytes(&self, src: &[u8], dst: &[u8]) -> (u8, Vec<u8>) {
        let (proto, mut bytes, checksum_at) = match &self.transport {
            Transport::Tcp {
                sport,
                dport,
                flags,
            } => {
                let mut tcp = Vec::with_capacity(20);
                tcp.extend_from_slice(&sport.to_be_bytes());
                tcp.extend_from_slice(&dport.to_be_bytes());
                tcp.extend_from_slice(&1000u32.to_be_bytes());
                tcp.extend_from_slice(&0u32.to_be_bytes());
                tcp.push(5 << 4);
                tcp.push(*flags);
                tcp.extend_from_slice(&65535u16.to_be_bytes());
                tcp.extend_from_slice(&[0, 0, 0, 0]);
                (6, tcp, Some(16))
            }
            Transport::Udp { sport, dport } => {
                let mut udp = Vec::with_capacity(8);
                udp.extend_from_slice(&sport.to_be_bytes());
                udp.extend_from_slice(&dport.to_be_bytes());
                udp.extend_from_slice(&((8 + self.payload.len()) as u16).to_be_bytes());
                udp.extend_from_slice(&[0, 0]);
                (17, udp, Some(6))
            }
            // ICMP and ICMPv6 (at least their 4-byte header given): checksum at 2.
            Transport::Other { proto, bytes } if matches!(proto, 1 | 58) && bytes.len() >= 4 => {
                (*proto, bytes.clone(), Some(2))
            }
            Transport::Other { proto, bytes } => (*proto, bytes.clone(), None),
        };
        bytes.extend_from_slice(&self.payload);
        if let Some(at) = checksum_at {
            // ICMP (for IPv4) has no pseudo-header.
            let mut pseudo = Vec::new();
            if proto != 1 {
                pseudo.extend_from_slice(src);
                pseudo.extend_from_slice(dst);
                pseudo.extend_from_slice(&[0, proto]);
                pseudo.extend_from_slice(&(bytes.len() as u16).to_be_bytes());
            }
            bytes[at..at + 2].copy_from_slice(&[0, 0]);
            let sum = checksum(&bytes, sum_words(&pseudo));
            bytes[at..at + 2].copy_from_slice(&sum.to_be_bytes());
        }
        (proto, bytes)
    }
}

/// Bytes as lowercase hex, for comparing frames in assertions.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// IPv4 or IPv6 from `src` to `dst` (of one family).
pub fn ip_between(src: std::net::IpAddr, dst: std::net::IpAddr) -> Network {
    match (src, dst) {
        (std::net::IpAddr::V4(s), std::net::IpAddr::V4(d)) => v4(s.octets(), d.octets()),
        (s, d) => v6(&s.to_string(), &d.to_string()),
    }
}

impl Frame {
    /// Source and destination address and port of a TCP/UDP frame.
    pub fn endpoints(&self) -> (std::net::IpAddr, std::net::IpAddr, u16, u16) {
        let (src, dst) = match &self.network {
            Network::V4 { src, dst, .. } => ((*src).into(), (*dst).into()),
            Network::V6 { src, dst, .. } => ((*src).into(), (*dst).into()),
            Network::Raw { .. } => panic!("endpoints of a frame that is not IP"),
        };
        match self.transport {
            Transport::Tcp { sport, dport, .. } | Transport::Udp { sport, dport } => {
                (src, dst, sport, dport)
            }
            Transport::Other { .. } => panic!("endpoints of a frame that is not TCP/UDP"),
        }
    }
}

/// Sum of the 16-bit words of `bytes` (a partial Internet checksum).
pub fn sum_words(bytes: &[u8]) -> u32 {
    bytes
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum()
}

/// Internet checksum of `bytes` with `initial` (a partial sum) folded in.
pub fn checksum(bytes: &[u8], initial: u32) -> u16 {
    let mut sum = initial + sum_words(bytes);
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An ARP request for `target` from `sender`.
pub fn arp_request(sender: [u8; 4], target: [u8; 4]) -> Frame {
    let mut arp = vec![0, 1, 8, 0, 6, 4, 0, 1];
    arp.extend_from_slice(&CLIENT_MAC);
    arp.extend_from_slice(&sender);
    arp.extend_from_slice(&[0; 6]);
    arp.extend_from_slice(&target);
    Frame {
        dst_mac: [0xff; 6],
        src_mac: CLIENT_MAC,
        vlans: Vec::new(),
        network: Network::Raw {
            ether_type: ETH_P_ARP,
            bytes: arp,
        },
        transport: Transport::Other {
            proto: 0,
            bytes: Vec::new(),
        },
        payload: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv4_header_checksum_verifies() {
        let bytes = Frame::tcp(v4([10, 0, 0, 2], [10, 0, 0, 100]), 1234, 80).bytes();
        assert_eq!(checksum(&bytes[14..34], 0), 0);
    }

    #[test]
    fn tcp_checksum_verifies_with_pseudo_header() {
        let bytes = Frame::tcp(v4([10, 0, 0, 2], [10, 0, 0, 100]), 1234, 80).bytes();
        let l4 = &bytes[34..];
        let mut pseudo = Vec::new();
        pseudo.extend_from_slice(&bytes[26..34]);
        pseudo.extend_from_slice(&[0, 6]);
        pseudo.extend_from_slice(&(l4.len() as u16).to_be_bytes());
        assert_eq!(checksum(l4, sum_words(&pseudo)), 0);
    }

    #[test]
    fn vlan_tags_sit_between_macs_and_ether_type() {
        let bytes = Frame::udp(v4([1, 1, 1, 1], [2, 2, 2, 2]), 1, 2)
            .with_vlans(&[(ETH_P_8021AD, 100), (ETH_P_8021Q, 200)])
            .bytes();
        assert_eq!(
            &bytes[12..22],
            &[0x88, 0xa8, 0, 100, 0x81, 0x00, 0, 200, 0x08, 0x00]
        );
    }
}
