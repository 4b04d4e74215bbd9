//! Forwarding modes, chosen per real (`RealInfo::fwd`): DR (`dr`), TUN (`tun`), NAT
//! (`nat`) and FullNAT (`fnat`). Every mode ends in `transmit`.

pub mod dr;
pub mod fnat;
pub mod nat;
pub mod nat_icmp;
pub mod tun;

use aya_ebpf::{
    helpers::{bpf_redirect, bpf_xdp_adjust_head},
    programs::XdpContext,
};
use lb_common::{FWD_FNAT, FWD_NAT, FWD_TUN, Outcome, RealInfo};

use crate::{
    headers::{ETH_P_8021Q, ETH_P_IPV4, ETH_P_IPV6, EthHdr, VlanHdr},
    packet::ptr_at_mut,
    parse::Flow,
};

const ETH_LEN: usize = core::mem::size_of::<EthHdr>();
const VLAN_LEN: usize = core::mem::size_of::<VlanHdr>();

/// Rewrite the frame for `real` (id `real_id`) by its forwarding mode and send it.
/// FullNAT: `local` is the flow's local end, which an established flow must still hold
/// (checked with `check_local_end`).
#[inline(always)]
pub fn forward(
    ctx: &XdpContext,
    flow: &Flow,
    real_id: u32,
    real: &RealInfo,
    local: crate::local_end::LocalEnd,
    check_local_end: bool,
) -> Result<Outcome, Outcome> {
    if real.fwd == FWD_TUN {
        tun::forward::<true>(ctx, flow, real)
    } else if real.fwd == FWD_NAT {
        nat::forward(ctx, flow, real)
    } else if real.fwd == FWD_FNAT {
        fnat::forward(ctx, flow, real_id, real, local, check_local_end)
    } else {
        dr::forward(ctx, flow, real)
    }
}

/// Replace the link-layer header in front of the IP packet at `l3_offset` with one to
/// `real`'s next hop (tagged with its VLAN if it has one), for modes that route rather
/// than bridge the frame.
#[inline(always)]
fn rebuild_l2(ctx: &XdpContext, l3_offset: usize, real: &RealInfo) -> Result<(), Outcome> {
    let l2_len = if real.vlan != 0 {
        ETH_LEN + VLAN_LEN
    } else {
        ETH_LEN
    };
    if l3_offset != l2_len {
        let delta = l3_offset as i32 - l2_len as i32;
        // SAFETY: helper on this program's context; packet pointers are re-derived below.
        if unsafe { bpf_xdp_adjust_head(ctx.ctx, delta) } != 0 {
            return Err(Outcome::NoHeadroom);
        }
    }
    let ether_type = if real.family == lb_common::FAMILY_IPV6 {
        ETH_P_IPV6
    } else {
        ETH_P_IPV4
    };
    write_l2(ctx, real, ether_type)
}

/// The Ethernet addresses of `real`'s next hop into the header at `eth`: twelve byte
/// copies. (Assigned as arrays, the copy from a map value into the packet became two calls
/// to a byte-loop `memmove`, some 120 instructions; volatile stores keep LLVM from
/// turning the bytes back into a call.)
///
/// # Safety
/// `eth` points at a whole Ethernet header inside the packet.
#[inline(always)]
pub unsafe fn set_macs(eth: *mut EthHdr, real: &RealInfo) {
    for i in 0..6 {
        // SAFETY: the caller's header; `i` is within both arrays.
        unsafe {
            core::ptr::write_volatile(&mut (*eth).dst[i], real.mac[i]);
            core::ptr::write_volatile(&mut (*eth).src[i], real.src_mac[i]);
        }
    }
}

/// Ethernet header to `real`'s next hop at the start of the frame, with its VLAN tag.
#[inline(always)]
fn write_l2(ctx: &XdpContext, real: &RealInfo, ether_type: [u8; 2]) -> Result<(), Outcome> {
    let eth = ptr_at_mut::<EthHdr>(ctx, 0).ok_or(Outcome::TruncatedL2)?;
    // SAFETY: ptr_at_mut checked the bounds; nothing else refers to these bytes.
    unsafe {
        set_macs(eth, real);
        (*eth).ether_type = if real.vlan != 0 {
            ETH_P_8021Q
        } else {
            ether_type
        };
    }
    if real.vlan != 0 {
        let tag = ptr_at_mut::<VlanHdr>(ctx, ETH_LEN).ok_or(Outcome::TruncatedL2)?;
        // SAFETY: as above.
        unsafe {
            (*tag).tci = (real.vlan & 0x0FFF).to_be_bytes();
            (*tag).ether_type = ether_type;
        }
    }
    Ok(())
}

/// Send the rewritten frame out of the ingress interface (XDP_TX) or to the real's.
#[inline(always)]
fn transmit(ctx: &XdpContext, real: &RealInfo) -> Outcome {
    if real.ifindex == ctx.ingress_ifindex() as u32 {
        Outcome::ForwardedTx
    } else {
        // SAFETY: plain helper call; with flags 0 it returns XDP_REDIRECT.
        unsafe { bpf_redirect(real.ifindex, 0) };
        Outcome::ForwardedRedirect
    }
}
