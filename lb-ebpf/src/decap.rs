//! `lb_decap`, for real servers in TUN mode: strips the outer IPv4/IPv6 header of a
//! tunnelled packet (IPIP, ip6ip6, and 4in6/6in4; or GRE around IPv4 or IPv6, without key
//! or sequence number, with or without checksum, which is not checked: the outer source
//! is, below) whose inner destination is one of the
//! VIPs in `LB_DECAP_VIPS` and whose outer source is a director's (`LB_DECAP_SOURCES`), so
//! that the real's stack sees the client's packet as if it had arrived directly, without
//! an ipip or ip6_tunnel device. The Ethernet header (and VLAN tags) move forward over the
//! removed bytes; everything else passes untouched (a tunnelled packet from another
//! source is counted: stripping it would let any host inject packets with a spoofed inner
//! source).

use aya_ebpf::{
    bindings::xdp_action, helpers::bpf_xdp_adjust_head, maps::lpm_trie::Key, programs::XdpContext,
};
use lb_common::{FAMILY_IPV4, FAMILY_IPV6, VipKey, decap_source, decap_stats};

use crate::{
    headers::{ETH_P_IPV4, ETH_P_IPV6, EthHdr, Ipv4Hdr, Ipv6Hdr, VlanHdr},
    maps::{DECAP_SOURCES, DECAP_STATS, DECAP_VIPS},
    packet::{ptr_at, ptr_at_mut},
    parse::parse_l2,
};

const IPPROTO_IPIP: u8 = 4;
const IPPROTO_IPV6: u8 = 41;
const IPPROTO_GRE: u8 = 47;
/// GRE's first two bytes with only the checksum-present bit (RFC 2784): a 4-byte checksum
/// field follows the protocol.
const GRE_CHECKSUM: [u8; 2] = [0x80, 0];
const ETH_LEN: usize = core::mem::size_of::<EthHdr>();
const VLAN_LEN: usize = core::mem::size_of::<VlanHdr>();

/// Strip the tunnel header of packets for a configured VIP; pass everything.
#[inline(always)]
pub fn decap(ctx: &XdpContext) -> u32 {
    if let Some(stat) = strip(ctx)
        && let Some(counter) = DECAP_STATS.get_ptr_mut(stat)
    {
        // SAFETY: per-CPU slot; XDP programs do not nest on one CPU.
        unsafe { *counter += 1 };
    }
    xdp_action::XDP_PASS
}

/// The counter to bump, if the packet was a tunnelled one.
#[inline(always)]
fn strip(ctx: &XdpContext) -> Option<u32> {
    let (ether_type, l3_offset, _) = parse_l2(ctx).ok()?;
    let mut outer_src = [0u8; 16];
    let (outer_len, inner_proto, outer_family) = if ether_type == ETH_P_IPV4 {
        let ip = ptr_at::<Ipv4Hdr>(ctx, l3_offset)?;
        // SAFETY: checked by ptr_at.
        let (version_ihl, proto, frag_off) =
            unsafe { ((*ip).version_ihl, (*ip).proto, (*ip).frag_off) };
        let len = usize::from(version_ihl & 0x0F) * 4;
        // A fragment of a tunnelled packet is left to the kernel to reassemble.
        if version_ihl >> 4 != 4 || len < 20 || u16::from_be_bytes(frag_off) & 0x3FFF != 0 {
            return None;
        }
        // SAFETY: checked by ptr_at.
        outer_src[..4].copy_from_slice(unsafe { &(*ip).src });
        (len, proto, FAMILY_IPV4)
    } else if ether_type == ETH_P_IPV6 {
        let ip = ptr_at::<Ipv6Hdr>(ctx, l3_offset)?;
        // SAFETY: checked by ptr_at.
        outer_src = unsafe { (*ip).src };
        // SAFETY: as above.
        (
            core::mem::size_of::<Ipv6Hdr>(),
            unsafe { (*ip).next_hdr },
            FAMILY_IPV6,
        )
    } else {
        return None;
    };
    // GRE: the inner packet's type from its header, which the outer one then includes.
    let (inner_proto, outer_len) = if inner_proto == IPPROTO_GRE {
        let gre = ptr_at::<[u8; 4]>(ctx, l3_offset + outer_len)?;
        // SAFETY: checked by ptr_at.
        let gre = unsafe { *gre };
        let gre_len = match [gre[0], gre[1]] {
            [0, 0] => 4,
            GRE_CHECKSUM => 8,
            // Keys, sequence numbers, other versions: not a director's.
            _ => return None,
        };
        let proto = match [gre[2], gre[3]] {
            ETH_P_IPV4 => IPPROTO_IPIP,
            ETH_P_IPV6 => IPPROTO_IPV6,
            _ => return None,
        };
        (proto, outer_len + gre_len)
    } else {
        (inner_proto, outer_len)
    };
    let inner_offset = l3_offset + outer_len;
    let (key, inner_type) = match inner_proto {
        IPPROTO_IPIP => {
            let inner = ptr_at::<Ipv4Hdr>(ctx, inner_offset)?;
            let mut addr = [0; 16];
            // SAFETY: checked by ptr_at.
            addr[..4].copy_from_slice(unsafe { &(*inner).dst });
            (vip_key(addr, FAMILY_IPV4), ETH_P_IPV4)
        }
        IPPROTO_IPV6 => {
            let inner = ptr_at::<Ipv6Hdr>(ctx, inner_offset)?;
            // SAFETY: checked by ptr_at.
            (vip_key(unsafe { (*inner).dst }, FAMILY_IPV6), ETH_P_IPV6)
        }
        _ => return None,
    };
    // SAFETY: the value is not used, only its presence.
    if unsafe { DECAP_VIPS.get(key) }.is_none() {
        return Some(decap_stats::OTHER_TUNNEL);
    }
    // The longest prefix of the trie: the family byte and every address bit.
    let source = Key::new(8 + 128, decap_source(outer_family, &outer_src));
    if DECAP_SOURCES.get(&source).is_none() {
        return Some(decap_stats::UNKNOWN_SOURCE);
    }
    // Keep the link-layer header: Ethernet and up to two tags.
    let eth = ptr_at::<EthHdr>(ctx, 0)?;
    // SAFETY: checked by ptr_at; copied out before the frame moves.
    let (dst, src, first_type) = unsafe { ((*eth).dst, (*eth).src, (*eth).ether_type) };
    let tags = (l3_offset - ETH_LEN) / VLAN_LEN;
    let mut tag = [[0u8; 2]; 2];
    let mut tag_type = [[0u8; 2]; 2];
    for i in 0..2 {
        if i < tags {
            let t = ptr_at::<VlanHdr>(ctx, ETH_LEN + i * VLAN_LEN)?;
            // SAFETY: checked by ptr_at.
            unsafe {
                tag[i] = (*t).tci;
                tag_type[i] = (*t).ether_type;
            }
        }
    }
    // SAFETY: helper on this program's context; packet pointers are re-derived below.
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, outer_len as i32) } != 0 {
        return None;
    }
    let eth = ptr_at_mut::<EthHdr>(ctx, 0)?;
    // SAFETY: checked by ptr_at_mut; nothing else refers to these bytes.
    unsafe {
        (*eth).dst = dst;
        (*eth).src = src;
        (*eth).ether_type = if tags == 0 { inner_type } else { first_type };
    }
    for i in 0..2 {
        if i < tags {
            let t = ptr_at_mut::<VlanHdr>(ctx, ETH_LEN + i * VLAN_LEN)?;
            // SAFETY: as above.
            unsafe {
                (*t).tci = tag[i];
                (*t).ether_type = if i + 1 == tags {
                    inner_type
                } else {
                    tag_type[i]
                };
            }
        }
    }
    Some(decap_stats::DECAPSULATED)
}

#[inline(always)]
fn vip_key(addr: [u8; 16], family: u8) -> VipKey {
    VipKey {
        addr,
        family,
        _pad: [0; 3],
    }
}
