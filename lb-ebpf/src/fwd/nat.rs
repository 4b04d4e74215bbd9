//! NAT (LVS "NAT", keepalived `lb_kind NAT`, the default): a client's packet gets the
//! real's address and port as destination; the real's replies, which come back through the
//! director (its gateway), get the VIP's address and port as source again (`reply`) and go
//! on through the kernel's forwarding (a fast path with the FIB helper is to come). IPv4
//! header and TCP/UDP checksums (pseudo-header included) are updated incrementally; a UDP
//! datagram without checksum (IPv4, 0) keeps none.

use aya_ebpf::programs::XdpContext;
use lb_common::{FAMILY_IPV6, FEATURE_NAT, FlowKey, NatOrigin, Outcome, PROTO_TCP, RealInfo};

use super::{rebuild_l2, transmit};
use crate::{
    csum,
    maps::{FEATURES, NAT_REVERSE},
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
        vport: flow.dport,
        _pad: [0; 2],
    };
    let _ = NAT_REVERSE.insert(reply, origin, 0);
}

/// Mark the client's flow (as it arrives at the director) that a real's reply answers as
/// alive. (Not inlined, for the balancer's stack.)
#[inline(never)]
pub fn touch_client_flow(reply: &FlowKey, origin: &NatOrigin) {
    let client = FlowKey {
        src: reply.dst,
        dst: origin.vip,
        sport: reply.dport,
        dport: origin.vport,
        proto: reply.proto,
        family: reply.family,
        _pad: [0; 2],
    };
    crate::conntrack::touch(&client);
}

/// The VIP and port a real's reply must come from, if `flow` is one (looked up only when
/// some service uses NAT).
#[inline(always)]
pub fn origin(flow: &FlowKey) -> Option<NatOrigin> {
    let features = FEATURES.get(0).copied().unwrap_or(0);
    if features & FEATURE_NAT == 0 {
        return None;
    }
    // SAFETY: copied out at once.
    unsafe { NAT_REVERSE.get(flow) }.copied()
}

/// Real → client: source rewritten to the VIP, then handed to the kernel, which routes
/// it to the client (the director forwards IP, as an IPVS NAT director does).
#[inline(always)]
pub fn reply(ctx: &XdpContext, flow: &Flow, origin: &NatOrigin) -> Result<Outcome, Outcome> {
    rewrite(ctx, flow, Side::Source, &origin.vip, origin.vport)?;
    Ok(Outcome::NatReplyToKernel)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Side {
    Source,
    Destination,
}

/// Set the address and port of one side of the packet, with its checksums. Not inlined:
/// one copy serves both directions, off the balancer's stack; it works on 16-bit words of
/// the packet in place, so that its own frame stays small too.
#[inline(never)]
fn rewrite(
    ctx: &XdpContext,
    flow: &Flow,
    side: Side,
    addr: &[u8; 16],
    port: [u8; 2],
) -> Result<(), Outcome> {
    let source = side == Side::Source;
    let ipv6 = flow.key.family == FAMILY_IPV6;
    let (addr_offset, words) = match (ipv6, source) {
        (true, true) => (flow.l3_offset + 8, 8),
        (true, false) => (flow.l3_offset + 24, 8),
        (false, true) => (flow.l3_offset + 12, 2),
        (false, false) => (flow.l3_offset + 16, 2),
    };
    // The address is in the IPv4 header checksum and in the L4 pseudo-header.
    let mut address = csum::Delta::new();
    for i in 0..8 {
        if i >= words {
            break;
        }
        let word = ptr_at_mut::<[u8; 2]>(ctx, addr_offset + 2 * i).ok_or(Outcome::TruncatedL3)?;
        let new = [addr[2 * i], addr[2 * i + 1]];
        // SAFETY: checked by ptr_at_mut; nothing else refers to these bytes.
        unsafe {
            address.replace(&*word, &new);
            *word = new;
        }
    }
    if !ipv6 {
        let check = ptr_at_mut::<[u8; 2]>(ctx, flow.l3_offset + 10).ok_or(Outcome::TruncatedL3)?;
        // SAFETY: as above.
        unsafe { *check = address.apply(*check) };
    }
    let tcp = flow.key.proto == PROTO_TCP;
    let port_offset = flow.l4_offset + if source { 0 } else { 2 };
    let check_offset = flow.l4_offset + if tcp { 16 } else { 6 };
    let field = ptr_at_mut::<[u8; 2]>(ctx, port_offset).ok_or(Outcome::TruncatedL4)?;
    let check = ptr_at_mut::<[u8; 2]>(ctx, check_offset).ok_or(Outcome::TruncatedL4)?;
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
    Ok(())
}
