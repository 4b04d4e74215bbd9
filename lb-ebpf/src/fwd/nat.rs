//! NAT (LVS "NAT", keepalived `lb_kind NAT`, the default): a client's packet gets the
//! real's address and port as destination; the real's replies, which come back through the
//! director (its gateway), get the VIP's address and port as source again (`reply`) and go
//! on through the kernel's forwarding (a fast path with the FIB helper is to come). The
//! replies of FullNAT flows (`fnat`) are translated here too. IPv4 header and TCP/UDP
//! checksums (pseudo-header included) are updated incrementally; a UDP datagram without
//! checksum (IPv4, 0) keeps none.

use aya_ebpf::{bindings::xdp_md, programs::XdpContext};
use lb_common::{FAMILY_IPV6, FEATURE_NAT, FlowKey, NatOrigin, Outcome, RealInfo};

use super::{rebuild_l2, transmit};
use crate::{
    csum::Delta,
    edit,
    maps::{NAT_REVERSE, SETTINGS},
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

/// Make sure the replies of NAT flow `flow` to `real` are translated: a new flow's
/// translation is written (over that of an older flow with the same reply 5-tuple); an
/// established flow's is made again if it is gone (evicted from a full table, say), and
/// kept recent in that LRU table otherwise. The balancer asks for an established flow at
/// its first packet in each tick of the flow table's clock, not at every packet. (Not
/// inlined: its locals would add to the balancer's stack, which `reply` shares.)
#[inline(never)]
// The key by reference: it is used twice, and a copy would take stack.
#[allow(clippy::needless_borrows_for_generic_args)]
pub fn remember(flow: &FlowKey, real: &RealInfo, new_flow: bool) {
    let reply = FlowKey {
        src: real.addr,
        dst: flow.src,
        sport: real.port,
        dport: flow.sport,
        proto: flow.proto,
        family: flow.family,
        _pad: [0; 2],
    };
    if !new_flow && NAT_REVERSE.get_ptr(&reply).is_some() {
        return;
    }
    let origin = NatOrigin {
        vip: flow.dst,
        client: flow.src,
        vport: flow.dport,
        client_port: flow.sport,
        full_nat: 0,
        _pad: [0; 3],
        reserved_ms: 0,
    };
    let _ = NAT_REVERSE.insert(reply, origin, 0);
}

/// A real's reply `reply` (with TCP flags `tcp_flags`) to the client flow that `origin`
/// names went by: that flow is alive and moves by it (`conntrack::reply_seen`). Its real,
/// or `conntrack::NO_REAL`. (Not inlined, for the balancer's stack.)
#[inline(never)]
pub fn reply_seen(reply: &FlowKey, tcp_flags: u8, origin: &NatOrigin) -> u32 {
    crate::conntrack::reply_seen(&origin.client_flow(reply.proto, reply.family), tcp_flags)
}

/// The VIP and port a real's reply must come from, if `flow` is one (looked up only when
/// some service uses NAT or FullNAT). Read in place: a copy would take 40 bytes of the
/// balancer's stack.
#[inline(always)]
pub fn origin(flow: &FlowKey) -> Option<&'static NatOrigin> {
    let settings = SETTINGS.get(0)?;
    if settings.features & FEATURE_NAT == 0 {
        return None;
    }
    // Not from a NAT or FullNAT real: no reply, no lookup.
    let bit = lb_common::hash::nat_source_bit(&flow.src, flow.family == FAMILY_IPV6);
    let word = settings.nat_sources.get((bit / 64) as usize)?;
    if (word >> (bit % 64)) & 1 == 0 {
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
    let mut how = edit::shape(flow);
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
pub const REWRITTEN: u32 = u32::MAX;
/// `lb_nat_rewrite`'s flag (with the packet's `edit::shape`): the source side.
const REWRITE_SOURCE: u32 = edit::SHAPE_FREE_BIT;

/// `rewrite` as a global BPF function: the verifier checks it once, instead of once per
/// path of the balancer that leads to one of its calls. `addr` may be null to the
/// verifier's eyes, so it is checked. Returns `REWRITTEN` or the `Outcome` of a frame too
/// short.
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
    let side = if how & REWRITE_SOURCE != 0 {
        Side::Source
    } else {
        Side::Destination
    };
    let done = set_side::<false>(&ctx, how, side, addr, (port as u16).to_be_bytes())
        .and_then(|changed| fix_checksums(&ctx, how, changed));
    match done {
        Ok(()) => REWRITTEN,
        Err(outcome) => outcome as u32,
    }
}

/// What setting a side of a packet changed: in its addresses (which the IPv4 header
/// checksum covers, and the TCP/UDP one through its pseudo-header) and in its ports (which
/// only the TCP/UDP checksum covers).
#[derive(Clone, Copy)]
pub struct Changed {
    pub addresses: Delta,
    pub ports: Delta,
}

impl Changed {
    #[inline(always)]
    pub fn plus(self, other: Changed) -> Changed {
        Changed {
            addresses: self.addresses.plus(other.addresses),
            ports: self.ports.plus(other.ports),
        }
    }
}

/// Set the address and port of one side of a packet of shape `how`, leaving the checksums
/// to `fix_checksums`. The TCP/UDP header follows the IP header directly (the parser
/// accepts neither IPv4 options nor IPv6 extension headers, and made sure the whole
/// TCP/UDP header is there).
#[inline(always)]
pub fn set_side<const APART: bool>(
    ctx: &XdpContext,
    how: u32,
    side: Side,
    addr: &[u8; 16],
    port: [u8; 2],
) -> Result<Changed, Outcome> {
    let l3 = edit::l3_offset(how);
    let (ip_len, words) = edit::ip_layout(how);
    let (src_at, dst_at) = edit::address_offsets(how);
    let source = side == Side::Source;
    let addr_at = l3 + if source { src_at } else { dst_at };
    let addresses = if APART {
        edit::set_addr_apart(ctx, addr_at, words, addr)
    } else {
        edit::set_addr(ctx, addr_at, words, addr)
    }
    .ok_or(Outcome::TruncatedL3)?;
    let port_at = l3 + ip_len + if source { 0 } else { 2 };
    let ports = edit::set_word(ctx, port_at, port).ok_or(Outcome::TruncatedL4)?;
    Ok(Changed { addresses, ports })
}

/// Adjust the checksums of a packet of shape `how` for what `set_side` changed.
#[inline(always)]
pub fn fix_checksums(ctx: &XdpContext, how: u32, changed: Changed) -> Result<(), Outcome> {
    let l3 = edit::l3_offset(how);
    let (ip_len, _) = edit::ip_layout(how);
    if how & edit::SHAPE_IPV6 == 0 && edit::update_check(ctx, l3 + 10, changed.addresses).is_none()
    {
        return Err(Outcome::TruncatedL3);
    }
    let l4 = l3 + ip_len;
    let l4_change = changed.addresses.plus(changed.ports);
    let updated = if how & edit::SHAPE_TCP != 0 {
        edit::update_check(ctx, l4 + 16, l4_change)
    } else {
        edit::update_udp_check(ctx, l4 + 6, l4_change)
    };
    updated.map(|_| ()).ok_or(Outcome::TruncatedL4)
}
