//! ICMP errors about NAT and FullNAT flows (such as "fragmentation needed" for a reply on
//! its way to the client, sent to the VIP by a router), translated for the real that owns
//! the flow, as IPVS does: the quoted packet becomes the one the real sent (its address and
//! port as source; for FullNAT the flow's local address and port as destination), the
//! error goes to the real (for FullNAT from the local address, which the real can reach),
//! and every checksum follows: the outer IPv4 header, the quoted IPv4 header, the quoted
//! TCP/UDP checksum when it is quoted, and the ICMP checksum over all of it (for ICMPv6
//! with its pseudo-header).

use aya_ebpf::{bindings::xdp_md, programs::XdpContext};
use lb_common::{FWD_FNAT, FWD_NAT, FlowKey, Outcome, RealInfo};

use super::{rebuild_l2, transmit};
use crate::{
    csum::Delta,
    edit,
    maps::{self, FLOWS, LOCAL_ADDRS, REALS},
    packet::ptr_at,
    parse::Flow,
};

/// `lookup`'s answer for an error that is not about a NAT or FullNAT flow of the service.
pub const NOT_NAT: u64 = u64::MAX;

/// The real, FullNAT flag and local end of the NAT or FullNAT flow `flow` of service
/// `service_id` (an ICMP error's key: the client flow it is about), packed for `to_real`,
/// or `NOT_NAT`.
#[inline(always)]
pub fn lookup(flow: &FlowKey, service_id: u32) -> u64 {
    lb_nat_icmp_lookup(flow, service_id)
}

/// Translate the ICMP error `flow` for the flow `found` by `lookup` and send it to its
/// real.
#[inline(always)]
pub fn to_real(ctx: &XdpContext, flow: &Flow, found: u64) -> Result<(u32, Outcome), Outcome> {
    let real_id = (found >> 40) as u32;
    let local = found as u32;
    let real = maps::real(real_id).ok_or(Outcome::NextHopUnknown)?;
    let mut how = edit::shape(flow);
    if (found >> 32) & 1 != 0 {
        how |= FULL_NAT;
    }
    let outer = lb_nat_icmp_outer(ctx.ctx, how, real_id, local);
    if outer == FAILED {
        // Nothing was written: the kernel may have the error.
        return Err(Outcome::TruncatedL4);
    }
    if lb_nat_icmp_quoted(ctx.ctx, how, real_id, local, outer as u32) != TRANSLATED {
        // Cannot happen once the outer part checked the bounds; never pass on a half
        // translated packet.
        return Err(Outcome::NextHopUnknown);
    }
    rebuild_l2(ctx, flow.l3_offset, real)?;
    Ok((real_id, transmit(ctx, real)))
}

/// The translation's answers: done, or the frame is too short or the real or local
/// address is gone.
const TRANSLATED: u64 = 0;
const FAILED: u64 = u64::MAX;
/// `how` (with the packet's `edit::shape`, whose protocol is the quoted packet's): the
/// flow is FullNAT.
const FULL_NAT: u32 = edit::SHAPE_FREE_BIT;
/// ICMP and ICMPv6 headers before the quoted packet.
const ICMP_HEADER_LEN: usize = 8;

/// `lookup` as a global BPF function (this and the two below are checked once by the
/// verifier, and each keeps its locals in a frame of its own): `real_id << 40 |
/// full_nat << 32 | local address id << 16 | local port`.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn lb_nat_icmp_lookup(flow: *const FlowKey, service_id: u32) -> u64 {
    // SAFETY: the caller passes a pointer to a flow key on its stack (or null).
    let Some(flow) = (unsafe { flow.as_ref() }) else {
        return NOT_NAT;
    };
    // The key on this frame: older verifiers (6.1) take no pointer argument of a global
    // function as a map key.
    let key = *flow;
    let Some(entry) = FLOWS.get_ptr(key) else {
        return NOT_NAT;
    };
    // SAFETY: a live LRU element, read in place.
    let entry = unsafe { &*entry };
    let Some(real) = maps::real(entry.real_id) else {
        return NOT_NAT;
    };
    if real.service_id != service_id || (real.fwd != FWD_NAT && real.fwd != FWD_FNAT) {
        return NOT_NAT;
    }
    (u64::from(entry.real_id) << 40)
        | (u64::from(real.fwd == FWD_FNAT) << 32)
        | (u64::from(entry.local_addr & 0xFFFF) << 16)
        | u64::from(u16::from_be_bytes(entry.local_port))
}

/// The outer packet: to the real, from the local address for FullNAT. Checks first that
/// the frame holds everything the translation writes (up to the quoted ports), so that
/// it fails before writing anything. Returns the change of the outer addresses (which
/// ICMPv6's checksum covers) or `FAILED`.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn lb_nat_icmp_outer(ctx: *mut xdp_md, how: u32, real_id: u32, local: u32) -> u64 {
    let ctx = XdpContext::new(ctx);
    let Some((real, local_addr)) = addresses(how, real_id, local) else {
        return FAILED;
    };
    let l3 = edit::l3_offset(how);
    let (ip_len, words) = edit::ip_layout(how);
    let quoted_ports = l3 + ip_len + ICMP_HEADER_LEN + ip_len;
    if ptr_at::<[u8; 4]>(&ctx, quoted_ports).is_none() {
        return FAILED;
    }
    let (src_at, dst_at) = edit::address_offsets(how);
    let Some(mut outer) = edit::set_addr_apart(&ctx, l3 + dst_at, words, &real.addr) else {
        return FAILED;
    };
    if how & FULL_NAT != 0 {
        let Some(delta) = edit::set_addr_apart(&ctx, l3 + src_at, words, local_addr) else {
            return FAILED;
        };
        outer = outer.plus(delta);
    }
    if how & edit::SHAPE_IPV6 == 0 && edit::update_check(&ctx, l3 + 10, outer).is_none() {
        return FAILED;
    }
    u64::from(outer.raw())
}

/// The quoted packet: from the real's address and port, to the local end (FullNAT); then
/// the ICMP checksum (with `outer`, the outer addresses' change, for ICMPv6).
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn lb_nat_icmp_quoted(
    ctx: *mut xdp_md,
    how: u32,
    real_id: u32,
    local: u32,
    outer: u32,
) -> u64 {
    let ctx = XdpContext::new(ctx);
    let Some((real, local_addr)) = addresses(how, real_id, local) else {
        return FAILED;
    };
    let (ip_len, words) = edit::ip_layout(how);
    let (src_at, dst_at) = edit::address_offsets(how);
    let icmp = edit::l3_offset(how) + ip_len;
    let quoted = icmp + ICMP_HEADER_LEN;
    let quoted_l4 = quoted + ip_len;
    let Some(mut addresses) = edit::set_addr_apart(&ctx, quoted + src_at, words, &real.addr) else {
        return FAILED;
    };
    let Some(mut ports) = edit::set_word(&ctx, quoted_l4, real.port) else {
        return FAILED;
    };
    if how & FULL_NAT != 0 {
        let local_port = (local as u16).to_be_bytes();
        let (Some(addr), Some(port)) = (
            edit::set_addr_apart(&ctx, quoted + dst_at, words, local_addr),
            edit::set_word(&ctx, quoted_l4 + 2, local_port),
        ) else {
            return FAILED;
        };
        addresses = addresses.plus(addr);
        ports = ports.plus(port);
    }
    // Everything changed in the ICMP payload, for the ICMP checksum.
    let mut payload = addresses.plus(ports);
    if how & edit::SHAPE_IPV6 == 0 {
        match edit::update_check(&ctx, quoted + 10, addresses) {
            Some(change) => payload = payload.plus(change),
            None => return FAILED,
        }
    }
    // The quoted TCP/UDP checksum, when the error quotes it (TCP quoted in 8 bytes has
    // none).
    let changed = addresses.plus(ports);
    let l4_check = if how & edit::SHAPE_TCP != 0 {
        edit::update_check(&ctx, quoted_l4 + 16, changed)
    } else {
        edit::update_udp_check(&ctx, quoted_l4 + 6, changed)
    };
    if let Some(change) = l4_check {
        payload = payload.plus(change);
    }
    // ICMPv6's checksum covers the outer addresses too.
    if how & edit::SHAPE_IPV6 != 0 {
        payload = payload.plus(Delta::from_raw(outer));
    }
    if edit::update_check(&ctx, icmp + 2, payload).is_none() {
        return FAILED;
    }
    TRANSLATED
}

/// The real and the local address (for NAT, which has none, the real's stands in).
#[inline(always)]
fn addresses(how: u32, real_id: u32, local: u32) -> Option<(&'static RealInfo, &'static [u8; 16])> {
    let real = REALS.get(real_id)?;
    if how & FULL_NAT == 0 {
        return Some((real, &real.addr));
    }
    let local = LOCAL_ADDRS
        .get(local >> 16)
        .filter(|l| l.family == real.family)?;
    Some((real, &local.addr))
}
