//! NAT (LVS "NAT", keepalived `lb_kind NAT`, the default): a client's packet gets the
//! real's address and port as destination; the real's replies, which come back through the
//! director (its gateway), get the VIP's address and port as source again (`reply`) and go
//! on through the kernel's forwarding (a fast path with the FIB helper is to come). The
//! replies of FullNAT flows (`fnat`) are translated here too. IPv4 header and TCP/UDP
//! checksums (pseudo-header included) are updated incrementally; a UDP datagram without
//! checksum (IPv4, 0) keeps none.

use aya_ebpf::{bindings::xdp_md, programs::XdpContext};
use lb_common::{FAMILY_IPV6, FEATURE_NAT, FlowKey, NatOrigin, Outcome, PROTO_TCP, RealInfo};

use super::{rebuild_l2, transmit};
use crate::{
    csum,
    maps::{NAT_REVERSE, SETTINGS},
    packet::ptr_at_mut,
    parse::Flow,
};

/// Client → real: destination rewritten, then sent to the real's next hop.
#[inline(always)]
pub fn forward(ctx: &XdpContext, flow: &Flow, real: &RealInfo) -> Result<Outcome, Outcome> {
    let ipv6 = flow.key.family == FAMILY_IPV6;
    if (real.family == FAMILY_IPV6) != ipv6 {
        return Err(Outcome::NextHopUnknown);
    }
    rewrite(ctx, flow, Side::Destination, &real.addr, real.port)?;
    rebuild_l2(ctx, flow.l3_offset, real)?;
    Ok(transmit(ctx, real))
}

/// Remember how to translate the replies of a new NAT flow. (Not inlined: its locals
/// would add to the balancer's stack, which `reply` shares.)
#[inline(never)]
pub fn remember(flow: &FlowKey, real: &RealInfo) {
    let reply = FlowKey {
        src: real.addr,
        dst: flow.src,
        sport: real.port,
        dport: flow.sport,
        proto: flow.proto,
        family: flow.family,
        _pad: [0; 2],
    };
    let origin = NatOrigin {
        vip: flow.dst,
        client: flow.src,
        vport: flow.dport,
        client_port: flow.sport,
        full_nat: 0,
        _pad: [0; 3],
    };
    let _ = NAT_REVERSE.insert(reply, origin, 0);
}

/// Mark the client's flow (as it arrives at the director) that a real's reply answers as
/// alive. (Not inlined, for the balancer's stack.)
#[inline(never)]
pub fn touch_client_flow(reply: &FlowKey, origin: &NatOrigin) {
    crate::conntrack::touch(&origin.client_flow(reply.proto, reply.family));
}

/// The VIP and port a real's reply must come from, if `flow` is one (looked up only when
/// some service uses NAT or FullNAT). Read in place: a copy would take 40 bytes of the
/// balancer's stack.
#[inline(always)]
pub fn origin(flow: &FlowKey) -> Option<&'static NatOrigin> {
    let features = SETTINGS.get(0).map_or(0, |s| s.features);
    if features & FEATURE_NAT == 0 {
        return None;
    }
    // SAFETY: a live LRU element; an entry replaced meanwhile gives another flow's values,
    // which translate this packet wrongly at worst (as a late packet after expiry would).
    NAT_REVERSE.get_ptr(flow).map(|origin| unsafe { &*origin })
}

/// Real → client: source rewritten to the VIP (FullNAT: and destination to the client),
/// then handed to the kernel, which routes it to the client (the director forwards IP, as
/// an IPVS NAT director does).
#[inline(always)]
pub fn reply(ctx: &XdpContext, flow: &Flow, origin: &NatOrigin) -> Result<Outcome, Outcome> {
    rewrite(ctx, flow, Side::Source, &origin.vip, origin.vport)?;
    if origin.full_nat != 0 {
        rewrite(
            ctx,
            flow,
            Side::Destination,
            &origin.client,
            origin.client_port,
        )?;
    }
    Ok(Outcome::NatReplyToKernel)
}

/// Which address and port of a packet `rewrite` sets.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Source,
    Destination,
}

/// Set the address and port of one side of the packet, with its checksums.
#[inline(always)]
pub fn rewrite(
    ctx: &XdpContext,
    flow: &Flow,
    side: Side,
    addr: &[u8; 16],
    port: [u8; 2],
) -> Result<(), Outcome> {
    let mut how = flow.l3_offset as u32 & L3_OFFSET_MASK;
    if flow.key.family == FAMILY_IPV6 {
        how |= REWRITE_IPV6;
    }
    if flow.key.proto == PROTO_TCP {
        how |= REWRITE_TCP;
    }
    if side == Side::Source {
        how |= REWRITE_SOURCE;
    }
    match lb_nat_rewrite(ctx.ctx, how, addr, u32::from(u16::from_be_bytes(port))) {
        REWRITTEN => Ok(()),
        code if code == Outcome::TruncatedL3 as u32 => Err(Outcome::TruncatedL3),
        _ => Err(Outcome::TruncatedL4),
    }
}

/// `lb_nat_rewrite`'s answer when it is done.
const REWRITTEN: u32 = u32::MAX;
/// `how` of `lb_nat_rewrite`: the IP header's offset (at most two VLAN tags: below 64)
/// and what to rewrite.
const L3_OFFSET_MASK: u32 = 0x3F;
const REWRITE_IPV6: u32 = 1 << 8;
const REWRITE_TCP: u32 = 1 << 9;
const REWRITE_SOURCE: u32 = 1 << 10;

/// `rewrite` as a global BPF function: the verifier checks it once, instead of once per
/// path of the balancer that leads to one of its five calls. It works on 16-bit words of
/// the packet in place, so that its frame stays small. The TCP/UDP header follows the IP
/// header directly (the parser accepts neither IPv4 options nor IPv6 extension headers).
/// `addr` may be null to the verifier's eyes, so it is checked. Returns `REWRITTEN` or
/// the `Outcome` of a frame too short.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn lb_nat_rewrite(
    ctx: *mut xdp_md,
    how: u32,
    addr: *const [u8; 16],
    port: u32,
) -> u32 {
    // SAFETY: the caller passes a pointer to 16 bytes (or null).
    let Some(addr) = (unsafe { addr.as_ref() }) else {
        return Outcome::TruncatedL3 as u32;
    };
    let ctx = XdpContext::new(ctx);
    let l3_offset = (how & L3_OFFSET_MASK) as usize;
    let ipv6 = how & REWRITE_IPV6 != 0;
    let source = how & REWRITE_SOURCE != 0;
    let tcp = how & REWRITE_TCP != 0;
    let (addr_offset, words, l4_offset) = match (ipv6, source) {
        (true, true) => (l3_offset + 8, 8, l3_offset + 40),
        (true, false) => (l3_offset + 24, 8, l3_offset + 40),
        (false, true) => (l3_offset + 12, 2, l3_offset + 20),
        (false, false) => (l3_offset + 16, 2, l3_offset + 20),
    };
    // The address is in the IPv4 header checksum and in the L4 pseudo-header.
    let mut address = csum::Delta::new();
    for i in 0..8 {
        if i >= words {
            break;
        }
        let Some(word) = ptr_at_mut::<[u8; 2]>(&ctx, addr_offset + 2 * i) else {
            return Outcome::TruncatedL3 as u32;
        };
        let new = [addr[2 * i], addr[2 * i + 1]];
        // SAFETY: checked by ptr_at_mut; nothing else refers to these bytes.
        unsafe {
            address.replace(&*word, &new);
            *word = new;
        }
    }
    if !ipv6 {
        let Some(check) = ptr_at_mut::<[u8; 2]>(&ctx, l3_offset + 10) else {
            return Outcome::TruncatedL3 as u32;
        };
        // SAFETY: as above.
        unsafe { *check = address.apply(*check) };
    }
    let port = (port as u16).to_be_bytes();
    let port_offset = l4_offset + if source { 0 } else { 2 };
    let check_offset = l4_offset + if tcp { 16 } else { 6 };
    let (Some(field), Some(check)) = (
        ptr_at_mut::<[u8; 2]>(&ctx, port_offset),
        ptr_at_mut::<[u8; 2]>(&ctx, check_offset),
    ) else {
        return Outcome::TruncatedL4 as u32;
    };
    // SAFETY: as above; the two fields do not overlap.
    unsafe {
        let mut delta = address;
        delta.replace(&*field, &port);
        *field = port;
        if tcp {
            *check = delta.apply(*check);
        } else if *check != [0, 0] {
            let sum = delta.apply(*check);
            // 0 means "no checksum" in UDP: a computed 0 is sent as all ones.
            *check = if sum == [0, 0] { [0xFF, 0xFF] } else { sum };
        }
    }
    REWRITTEN
}
