//! Frame parsing: Ethernet with up to two VLAN tags (802.1ad + 802.1Q), IPv4 without
//! options or fragmentation, IPv6 without extension headers, TCP and UDP. The result is the
//! flow's 5-tuple, its outer VLAN and its TCP flags; anything the
//! balancer does not handle comes back as the `Outcome` that says why.

use aya_ebpf::programs::XdpContext;
use lb_common::{FAMILY_IPV4, FAMILY_IPV6, FlowKey, Outcome, PROTO_TCP, PROTO_UDP};

use crate::headers::*;
use crate::packet::ptr_at;

/// IPv6 next-header values that are extension headers, not an upper-layer protocol.
const IPV6_EXTENSION_HEADERS: [u8; 9] = [0, 43, 44, 50, 51, 60, 135, 139, 140];

/// What the balancer needs to know about a frame.
pub struct Flow {
    pub key: FlowKey,
    /// VLAN id of the outermost tag; 0 for an untagged frame.
    pub vlan: u16,
    /// TCP flags (`lb_common::conn::TCP_*`); 0 for UDP.
    pub tcp_flags: u8,
    /// Offset of the IP header (after Ethernet and VLAN tags).
    pub l3_offset: usize,
    /// An ICMP/ICMPv6 error about a flow: `key` is that flow as the client sent it (the
    /// error's quoted packet, turned around), so it finds the real that owns it.
    pub icmp_error: bool,
    /// An ICMP/ICMPv6 echo request: `key` has its addresses and protocol (ports 0).
    pub echo_request: bool,
}

impl Flow {
    /// TCP SYN without ACK or RST: the first packet of a connection (IPVS schedules no
    /// segment with RST; a client's SYN+ACK, which IPVS schedules for active FTP, is not
    /// a new connection here).
    #[inline(always)]
    pub fn opens_connection(&self) -> bool {
        self.tcp_flags & (TCP_FLAG_SYN | TCP_FLAG_ACK | TCP_FLAG_RST) == TCP_FLAG_SYN
    }
}

/// Parse the frame down to its TCP/UDP ports.
#[inline(always)]
pub fn parse_flow(ctx: &XdpContext) -> Result<Flow, Outcome> {
    let (ether_type, l3_offset, vlan) = parse_l2(ctx)?;
    let mut key = FlowKey {
        src: [0; 16],
        dst: [0; 16],
        sport: [0; 2],
        dport: [0; 2],
        proto: 0,
        family: 0,
        _pad: [0; 2],
    };
    let l4_offset = if ether_type == ETH_P_IPV4 {
        parse_ipv4(ctx, l3_offset, &mut key)?
    } else if ether_type == ETH_P_IPV6 {
        parse_ipv6(ctx, l3_offset, &mut key)?
    } else {
        return Err(Outcome::NotIp);
    };
    let icmp = key.proto == PROTO_ICMP || key.proto == PROTO_ICMPV6;
    let mut echo_request = false;
    let tcp_flags = if icmp {
        echo_request = parse_icmp(ctx, l4_offset, &mut key)?;
        0
    } else {
        parse_l4(ctx, l4_offset, &mut key)?
    };
    Ok(Flow {
        key,
        vlan,
        tcp_flags,
        l3_offset,
        icmp_error: icmp && !echo_request,
        echo_request,
    })
}

/// Ether type of the network layer, its offset, and the outer VLAN id (0 if untagged),
/// after at most two VLAN tags.
#[inline(always)]
pub fn parse_l2(ctx: &XdpContext) -> Result<([u8; 2], usize, u16), Outcome> {
    let eth = ptr_at::<EthHdr>(ctx, 0).ok_or(Outcome::TruncatedL2)?;
    // SAFETY: ptr_at checked that the header lies inside the frame.
    let mut ether_type = unsafe { (*eth).ether_type };
    let mut offset = core::mem::size_of::<EthHdr>();
    let mut outer_vlan = 0;
    for depth in 0..2 {
        if ether_type != ETH_P_8021Q && ether_type != ETH_P_8021AD {
            break;
        }
        // The tag (TCI, then the next ether type) follows the TPID just read.
        let vlan = ptr_at::<VlanHdr>(ctx, offset).ok_or(Outcome::TruncatedL2)?;
        // SAFETY: checked by ptr_at.
        let (tci, next) = unsafe { ((*vlan).tci, (*vlan).ether_type) };
        if depth == 0 {
            outer_vlan = u16::from_be_bytes(tci) & VLAN_VID_MASK;
        }
        ether_type = next;
        offset += core::mem::size_of::<VlanHdr>();
    }
    Ok((ether_type, offset, outer_vlan))
}

/// An IPv4 address as a flow key holds it: its 4 bytes, then 12 zeros, written as four
/// 32-bit words. (Copied into the zeroed key, the zeros became a call to a byte-loop
/// `memset` per address and packet, some 130 instructions.)
#[inline(always)]
fn put_ipv4(slot: &mut [u8; 16], addr: &[u8; 4]) {
    let words = [u32::from_ne_bytes(*addr), 0, 0, 0];
    let slot = slot.as_mut_ptr().cast::<u32>();
    for (i, word) in words.into_iter().enumerate() {
        // SAFETY: four words within the exclusively borrowed 16 bytes.
        unsafe { slot.add(i).write_unaligned(word) };
    }
}

/// Fill the addresses and protocol from an IPv4 header; returns the L4 offset.
#[inline(always)]
fn parse_ipv4(ctx: &XdpContext, offset: usize, flow: &mut FlowKey) -> Result<usize, Outcome> {
    let ip = ptr_at::<Ipv4Hdr>(ctx, offset).ok_or(Outcome::TruncatedL3)?;
    // SAFETY: checked by ptr_at.
    let ip = unsafe { &*ip };
    let version = ip.version_ihl >> 4;
    let ihl = ip.version_ihl & 0x0F;
    if version != 4 || ihl < 5 {
        return Err(Outcome::MalformedL3);
    }
    if ihl != 5 {
        return Err(Outcome::Ipv4Options);
    }
    if u16::from_be_bytes(ip.frag_off) & IPV4_MF_OR_OFFSET != 0 {
        return Err(Outcome::Ipv4Fragment);
    }
    if ip.proto != PROTO_TCP && ip.proto != PROTO_UDP && ip.proto != PROTO_ICMP {
        return Err(Outcome::NotTcpUdp);
    }
    put_ipv4(&mut flow.src, &ip.src);
    put_ipv4(&mut flow.dst, &ip.dst);
    flow.proto = ip.proto;
    flow.family = FAMILY_IPV4;
    Ok(offset + core::mem::size_of::<Ipv4Hdr>())
}

/// Fill the addresses and protocol from an IPv6 header; returns the L4 offset.
#[inline(always)]
fn parse_ipv6(ctx: &XdpContext, offset: usize, flow: &mut FlowKey) -> Result<usize, Outcome> {
    let ip = ptr_at::<Ipv6Hdr>(ctx, offset).ok_or(Outcome::TruncatedL3)?;
    // SAFETY: checked by ptr_at.
    let ip = unsafe { &*ip };
    if ip.version_class_flow[0] >> 4 != 6 {
        return Err(Outcome::MalformedL3);
    }
    let next = ip.next_hdr;
    if next != PROTO_TCP && next != PROTO_UDP && next != PROTO_ICMPV6 {
        let mut i = 0;
        while i < IPV6_EXTENSION_HEADERS.len() {
            if IPV6_EXTENSION_HEADERS[i] == next {
                return Err(Outcome::Ipv6ExtHeader);
            }
            i += 1;
        }
        return Err(Outcome::NotTcpUdp);
    }
    flow.src = ip.src;
    flow.dst = ip.dst;
    flow.proto = next;
    flow.family = FAMILY_IPV6;
    Ok(offset + core::mem::size_of::<Ipv6Hdr>())
}

const PROTO_ICMP: u8 = 1;
const PROTO_ICMPV6: u8 = 58;
/// ICMP: destination unreachable (incl. fragmentation needed), time exceeded, parameter
/// problem. ICMPv6: destination unreachable, packet too big, time exceeded, parameter
/// problem.
const ICMP_ERRORS: [u8; 3] = [3, 11, 12];
const ICMPV6_ERRORS: [u8; 4] = [1, 2, 3, 4];
/// Type, code, checksum and 4 more bytes precede the quoted packet in both.
const ICMP_HEADER_LEN: usize = 8;

/// ICMP echo request and ICMPv6 echo request.
const ECHO_REQUEST: u8 = 8;
const ECHOV6_REQUEST: u8 = 128;

/// An echo request (`Ok(true)`: `flow` keeps its addresses), or an error about a TCP/UDP
/// flow (`Ok(false)`). An ICMP error quotes the packet that caused it: here one that the
/// real sent from the VIP to the client. `flow` becomes the client's flow (quoted
/// destination as source, ports swapped). Anything else ICMP (echo replies, errors quoting
/// other protocols or IPv4 options) is `NotTcpUdp`.
#[inline(always)]
fn parse_icmp(ctx: &XdpContext, offset: usize, flow: &mut FlowKey) -> Result<bool, Outcome> {
    let kind = ptr_at::<u8>(ctx, offset).ok_or(Outcome::TruncatedL4)?;
    // SAFETY: checked by ptr_at.
    let kind = unsafe { *kind };
    let echo = if flow.family == FAMILY_IPV6 {
        ECHOV6_REQUEST
    } else {
        ECHO_REQUEST
    };
    if kind == echo {
        return Ok(true);
    }
    let quoted = offset + ICMP_HEADER_LEN;
    let ports_at = if flow.family == FAMILY_IPV6 {
        if !ICMPV6_ERRORS.contains(&kind) {
            return Err(Outcome::NotTcpUdp);
        }
        let ip = ptr_at::<Ipv6Hdr>(ctx, quoted).ok_or(Outcome::TruncatedL4)?;
        // SAFETY: checked by ptr_at.
        let ip = unsafe { &*ip };
        if ip.next_hdr != PROTO_TCP && ip.next_hdr != PROTO_UDP {
            return Err(Outcome::NotTcpUdp);
        }
        flow.src = ip.dst;
        flow.dst = ip.src;
        flow.proto = ip.next_hdr;
        quoted + core::mem::size_of::<Ipv6Hdr>()
    } else {
        if !ICMP_ERRORS.contains(&kind) {
            return Err(Outcome::NotTcpUdp);
        }
        let ip = ptr_at::<Ipv4Hdr>(ctx, quoted).ok_or(Outcome::TruncatedL4)?;
        // SAFETY: checked by ptr_at.
        let ip = unsafe { &*ip };
        if ip.version_ihl != 0x45 || (ip.proto != PROTO_TCP && ip.proto != PROTO_UDP) {
            return Err(Outcome::NotTcpUdp);
        }
        put_ipv4(&mut flow.src, &ip.dst);
        put_ipv4(&mut flow.dst, &ip.src);
        flow.proto = ip.proto;
        quoted + core::mem::size_of::<Ipv4Hdr>()
    };
    // The first 8 bytes of the quoted TCP/UDP header: the ports come first in both.
    let ports = ptr_at::<[u8; 4]>(ctx, ports_at).ok_or(Outcome::TruncatedL4)?;
    // SAFETY: checked by ptr_at.
    let ports = unsafe { *ports };
    flow.sport = [ports[2], ports[3]];
    flow.dport = [ports[0], ports[1]];
    Ok(false)
}

/// Fill the ports; the whole fixed TCP (20 bytes) or UDP (8 bytes) header must be present.
/// Returns the TCP flags (0 for UDP).
#[inline(always)]
fn parse_l4(ctx: &XdpContext, offset: usize, flow: &mut FlowKey) -> Result<u8, Outcome> {
    let (sport, dport, flags) = if flow.proto == PROTO_TCP {
        let tcp = ptr_at::<TcpHdr>(ctx, offset).ok_or(Outcome::TruncatedL4)?;
        // SAFETY: checked by ptr_at.
        let (sport, dport, flags) = unsafe { ((*tcp).sport, (*tcp).dport, (*tcp).flags) };
        (sport, dport, flags)
    } else {
        let udp = ptr_at::<UdpHdr>(ctx, offset).ok_or(Outcome::TruncatedL4)?;
        // SAFETY: checked by ptr_at.
        let (sport, dport) = unsafe { ((*udp).sport, (*udp).dport) };
        (sport, dport, 0)
    };
    flow.sport = sport;
    flow.dport = dport;
    Ok(flags)
}
