//! IP-in-IP tunnelling (LVS "TUN", keepalived `lb_kind TUN`): the client's IP packet,
//! unchanged, gets an outer header to the real (IPIP, protocol 4, for IPv4; ip6ip6, next
//! header 41, for IPv6; 4in6, next header 4, for an IPv4 VIP with an IPv6 real) from the director's address towards it (`RealInfo::tunnel_src`),
//! or with `type gre` (`RealInfo::tunnel` is `TUNNEL_GRE`) an outer header of protocol 47
//! and a 4-byte GRE header (no checksum, key or sequence; the inner packet's EtherType),
//! as the kernel's IPVS and its `gre`/`ip6gre` devices have it,
//! and a new Ethernet header to the real's next hop, tagged with the real's VLAN if it has
//! one. The real strips the outer header (its ipip/ip6_tunnel device, or `lb_decap`) and
//! answers the client directly. The outer header copies the inner TOS/traffic class, TTL/hop
//! limit, DF bit and (IPv4) identification; an IPv6 outer header carries a flow label
//! from the client's address and ports (`lb_common::hash::tunnel_flow_label`), so that the
//! real's NIC spreads the tunnels over its queues. A packet that would exceed the egress MTU once
//! encapsulated is answered with ICMP "fragmentation needed" / "packet too big" (`icmp`)
//! when it may not be fragmented, and dropped and counted (`tunnel_too_big`) otherwise.

use aya_ebpf::{helpers::bpf_xdp_adjust_head, programs::XdpContext};
use lb_common::{FAMILY_IPV6, Outcome, RealInfo, TUNNEL_GRE};

use super::{transmit, write_l2};
use crate::{
    headers::{ETH_P_IPV4, ETH_P_IPV6, EthHdr, Ipv4Hdr, Ipv6Hdr, VlanHdr},
    packet::{ptr_at, ptr_at_mut},
    parse::Flow,
};

const IPPROTO_IPIP: u8 = 4;
const IPPROTO_IPV6: u8 = 41;
const IPPROTO_GRE: u8 = 47;
/// GRE's header without options: flags and version 0, then the protocol (RFC 2784).
const GRE_LEN: usize = 4;
const IPV4_DF: u8 = 0x40;
/// The smallest MTU an IPv6 link may have (RFC 8200).
const IPV6_MIN_MTU: u16 = 1280;
const ETH_LEN: usize = core::mem::size_of::<EthHdr>();
const VLAN_LEN: usize = core::mem::size_of::<VlanHdr>();
const IPV4_LEN: usize = core::mem::size_of::<Ipv4Hdr>();
const IPV6_LEN: usize = core::mem::size_of::<Ipv6Hdr>();

/// Encapsulate for `real` and send. With `ANSWER_TOO_BIG`, a packet too big for the
/// tunnel that may not be fragmented is answered with ICMP; without (ICMP errors being
/// passed on to a real), it is dropped too.
#[inline(always)]
pub fn forward<const ANSWER_TOO_BIG: bool>(
    ctx: &XdpContext,
    flow: &Flow,
    real: &RealInfo,
) -> Result<Outcome, Outcome> {
    let inner_v6 = flow.key.family == FAMILY_IPV6;
    // The outer family is the real's: the VIP's, or IPv6 around IPv4 (4in6).
    let ipv6 = real.family == FAMILY_IPV6;
    if inner_v6 && !ipv6 {
        return Err(Outcome::NextHopUnknown);
    }
    let packet_len = (ctx.data_end() - ctx.data()).saturating_sub(flow.l3_offset);
    let ip_len = if ipv6 { IPV6_LEN } else { IPV4_LEN };
    let gre = real.tunnel == TUNNEL_GRE;
    let gre_len = if gre { GRE_LEN } else { 0 };
    let outer_len = ip_len + gre_len;
    let mut inner = Inner::read(ctx, flow.l3_offset, inner_v6)?;
    if packet_len + outer_len > usize::from(real.mtu) {
        // IPv6 is never fragmented on the way; IPv4 is not when DF is set.
        let fits = real.mtu.saturating_sub(outer_len as u16);
        // IPv6 hosts never go below 1280 bytes: a smaller answer would only repeat.
        let answerable = if inner_v6 {
            fits >= IPV6_MIN_MTU
        } else {
            inner.df != 0
        };
        if ANSWER_TOO_BIG && answerable {
            return crate::icmp::too_big(ctx, flow, flow.l3_offset + packet_len, fits);
        }
        return Err(Outcome::TunnelTooBig);
    }
    let l2_len = if real.vlan != 0 {
        ETH_LEN + VLAN_LEN
    } else {
        ETH_LEN
    };
    let delta = flow.l3_offset as i32 - (l2_len + outer_len) as i32;
    // SAFETY: helper on this program's context; every packet pointer is re-derived after.
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, delta) } != 0 {
        return Err(Outcome::NoHeadroom);
    }
    let ether_type = if ipv6 { ETH_P_IPV6 } else { ETH_P_IPV4 };
    write_l2(ctx, real, ether_type)?;
    // What follows the outer IP header: GRE, then the packet; or the packet.
    let payload_len = packet_len + gre_len;
    if gre {
        let inner_type = if inner_v6 { ETH_P_IPV6 } else { ETH_P_IPV4 };
        let header =
            ptr_at_mut::<[u8; GRE_LEN]>(ctx, l2_len + ip_len).ok_or(Outcome::TruncatedL3)?;
        let [high, low] = inner_type;
        // SAFETY: ptr_at_mut checked the bounds; nothing else refers to these bytes.
        unsafe { header.write([0, 0, high, low]) };
        inner.proto = IPPROTO_GRE;
    }
    if ipv6 {
        let label = lb_common::hash::tunnel_flow_label(
            &flow.key.src,
            inner_v6,
            flow.key.sport,
            flow.key.dport,
        );
        write_ipv6(ctx, l2_len, real, &inner, payload_len, label)?;
    } else {
        write_ipv4(ctx, l2_len, real, &inner, payload_len)?;
    }
    Ok(transmit(ctx, real))
}

/// What the outer header copies from the inner one.
struct Inner {
    /// IPv4 TOS or IPv6 traffic class.
    class: u8,
    /// The outer header's protocol: IPIP (4) or IPv6 (41) for the inner packet, or GRE.
    proto: u8,
    /// TTL or hop limit.
    ttl: u8,
    /// IPv4 flags byte (DF).
    df: u8,
    /// IPv4 identification (the outer header reuses it, so fragments downstream of the
    /// director never share an id across packets).
    id: [u8; 2],
}

impl Inner {
    #[inline(always)]
    fn read(ctx: &XdpContext, offset: usize, ipv6: bool) -> Result<Self, Outcome> {
        if ipv6 {
            let ip = ptr_at::<Ipv6Hdr>(ctx, offset).ok_or(Outcome::TruncatedL3)?;
            // SAFETY: checked by ptr_at.
            let (vcf, ttl) = unsafe { ((*ip).version_class_flow, (*ip).hop_limit) };
            Ok(Self {
                class: (vcf[0] << 4) | (vcf[1] >> 4),
                proto: IPPROTO_IPV6,
                ttl,
                df: 0,
                id: [0; 2],
            })
        } else {
            let ip = ptr_at::<Ipv4Hdr>(ctx, offset).ok_or(Outcome::TruncatedL3)?;
            // SAFETY: checked by ptr_at.
            let (tos, ttl, flags, id) =
                unsafe { ((*ip).tos, (*ip).ttl, (*ip).frag_off[0], (*ip).id) };
            Ok(Self {
                class: tos,
                proto: IPPROTO_IPIP,
                ttl,
                df: flags & IPV4_DF,
                id,
            })
        }
    }
}

#[inline(always)]
fn write_ipv4(
    ctx: &XdpContext,
    offset: usize,
    real: &RealInfo,
    inner: &Inner,
    packet_len: usize,
) -> Result<(), Outcome> {
    let ip = ptr_at_mut::<Ipv4Hdr>(ctx, offset).ok_or(Outcome::TruncatedL3)?;
    let mut header = Ipv4Hdr {
        version_ihl: 0x45,
        tos: inner.class,
        tot_len: ((packet_len + IPV4_LEN) as u16).to_be_bytes(),
        id: inner.id,
        frag_off: [inner.df, 0],
        ttl: inner.ttl,
        proto: inner.proto,
        check: [0; 2],
        src: [
            real.tunnel_src[0],
            real.tunnel_src[1],
            real.tunnel_src[2],
            real.tunnel_src[3],
        ],
        dst: [real.addr[0], real.addr[1], real.addr[2], real.addr[3]],
    };
    header.check = ipv4_checksum(&header);
    // SAFETY: ptr_at_mut checked the bounds; nothing else refers to these bytes.
    unsafe { ip.write(header) };
    Ok(())
}

#[inline(always)]
fn write_ipv6(
    ctx: &XdpContext,
    offset: usize,
    real: &RealInfo,
    inner: &Inner,
    packet_len: usize,
    label: u32,
) -> Result<(), Outcome> {
    let ip = ptr_at_mut::<Ipv6Hdr>(ctx, offset).ok_or(Outcome::TruncatedL3)?;
    // Version 6, the inner traffic class (or TOS), the flow's label.
    let class = [
        0x60 | (inner.class >> 4),
        (inner.class << 4) | (label >> 16) as u8,
        (label >> 8) as u8,
        label as u8,
    ];
    let header = Ipv6Hdr {
        version_class_flow: class,
        payload_len: (packet_len as u16).to_be_bytes(),
        next_hdr: inner.proto,
        hop_limit: inner.ttl,
        src: real.tunnel_src,
        dst: real.addr,
    };
    // SAFETY: ptr_at_mut checked the bounds; nothing else refers to these bytes.
    unsafe { ip.write(header) };
    Ok(())
}

/// The header checksum of an IPv4 header whose `check` is zero.
#[inline(always)]
fn ipv4_checksum(h: &Ipv4Hdr) -> [u8; 2] {
    let words = [
        u16::from_be_bytes([h.version_ihl, h.tos]),
        u16::from_be_bytes(h.tot_len),
        u16::from_be_bytes(h.id),
        u16::from_be_bytes(h.frag_off),
        u16::from_be_bytes([h.ttl, h.proto]),
        u16::from_be_bytes([h.src[0], h.src[1]]),
        u16::from_be_bytes([h.src[2], h.src[3]]),
        u16::from_be_bytes([h.dst[0], h.dst[1]]),
        u16::from_be_bytes([h.dst[2], h.dst[3]]),
    ];
    let mut sum: u32 = 0;
    for word in words {
        sum += u32::from(word);
    }
    sum = (sum & 0xFFFF) + (sum >> 16);
    sum = (sum & 0xFFFF) + (sum >> 16);
    (!(sum as u16)).to_be_bytes()
}
