//! Wire layouts of the headers the balancer reads. Every field is a byte array (alignment
//! 1), so a pointer into packet data may point at them whatever the frame's alignment.

/// Ethernet II header.
#[repr(C)]
pub struct EthHdr {
    pub dst: [u8; 6],
    pub src: [u8; 6],
    pub ether_type: [u8; 2],
}

/// 802.1Q / 802.1ad tag: the TCI and the ether type that follows it.
#[repr(C)]
pub struct VlanHdr {
    pub tci: [u8; 2],
    pub ether_type: [u8; 2],
}

/// IPv4 header without options.
#[repr(C)]
pub struct Ipv4Hdr {
    pub version_ihl: u8,
    pub tos: u8,
    pub tot_len: [u8; 2],
    pub id: [u8; 2],
    pub frag_off: [u8; 2],
    pub ttl: u8,
    pub proto: u8,
    pub check: [u8; 2],
    pub src: [u8; 4],
    pub dst: [u8; 4],
}

/// IPv6 fixed header.
#[repr(C)]
pub struct Ipv6Hdr {
    pub version_class_flow: [u8; 4],
    pub payload_len: [u8; 2],
    pub next_hdr: u8,
    pub hop_limit: u8,
    pub src: [u8; 16],
    pub dst: [u8; 16],
}

/// TCP header without options.
#[repr(C)]
pub struct TcpHdr {
    pub sport: [u8; 2],
    pub dport: [u8; 2],
    pub seq: [u8; 4],
    pub ack_seq: [u8; 4],
    pub data_offset: u8,
    pub flags: u8,
    pub window: [u8; 2],
    pub check: [u8; 2],
    pub urgent: [u8; 2],
}

pub const TCP_FLAG_SYN: u8 = 0x02;
pub const TCP_FLAG_RST: u8 = 0x04;
pub const TCP_FLAG_ACK: u8 = 0x10;

/// VLAN id bits of a TCI.
pub const VLAN_VID_MASK: u16 = 0x0FFF;

/// UDP header.
#[repr(C)]
pub struct UdpHdr {
    pub sport: [u8; 2],
    pub dport: [u8; 2],
    pub len: [u8; 2],
    pub check: [u8; 2],
}

pub const ETH_P_IPV4: [u8; 2] = 0x0800u16.to_be_bytes();
pub const ETH_P_IPV6: [u8; 2] = 0x86DDu16.to_be_bytes();
pub const ETH_P_8021Q: [u8; 2] = 0x8100u16.to_be_bytes();
pub const ETH_P_8021AD: [u8; 2] = 0x88A8u16.to_be_bytes();

/// IPv4 `frag_off`: More Fragments flag and fragment offset (DF excluded).
pub const IPV4_MF_OR_OFFSET: u16 = 0x3FFF;
