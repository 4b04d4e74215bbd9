//! NAT (LVS "NAT", keepalived `lb_kind NAT`, the default): a client's packet gets the
//! real's address and port as destination; the real's replies, which come back through the
//! director (its gateway), get the VIP's address and port as source again (`reply`) and go
//! on through the kernel's forwarding (a fast path with the FIB helper is to come). IPv4
//! header and TCP/UDP checksums (pseudo-header included) are updated incrementally; a UDP
//! datagram without checksum (IPv4, 0) keeps none.

use aya_ebpf::programs::XdpContext;
use lb_common::{FAMILY_IPV6, FlowKey, NatOrigin, Outcome, PROTO_TCP, RealInfo};

use super::{rebuild_l2, transmit};
use crate::{
    csum,
    headers::{Ipv4Hdr, Ipv6Hdr, TcpHdr, UdpHdr},
    maps::NAT_REVERSE,
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

/// The VIP and port a real's reply must come from, if `flow` is one.
#[inline(always)]
pub fn origin(flow: &FlowKey) -> Option<NatOrigin> {
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
/// one copy serves both directions, off the balancer's stack.
#[inline(never)]
fn rewrite(
    ctx: &XdpContext,
    flow: &Flow,
    side: Side,
    addr: &[u8; 16],
    port: [u8; 2],
) -> Result<(), Outcome> {
    let source = side == Side::Source;
    // The address is in the IPv4 header checksum and in the L4 pseudo-header.
    let mut address = csum::Delta::new();
    if flow.key.family == FAMILY_IPV6 {
        let ip = ptr_at_mut::<Ipv6Hdr>(ctx, flow.l3_offset).ok_or(Outcome::TruncatedL3)?;
        // SAFETY: checked by ptr_at_mut; nothing else refers to these bytes.
        let field = unsafe {
            if source {
                &mut (*ip).src
            } else {
                &mut (*ip).dst
            }
        };
        address.replace(field, addr);
        *field = *addr;
    } else {
        let ip = ptr_at_mut::<Ipv4Hdr>(ctx, flow.l3_offset).ok_or(Outcome::TruncatedL3)?;
        let new = [addr[0], addr[1], addr[2], addr[3]];
        // SAFETY: as above.
        unsafe {
            let field = if source {
                &mut (*ip).src
            } else {
                &mut (*ip).dst
            };
            address.replace(field, &new);
            *field = new;
            (*ip).check = address.apply((*ip).check);
        }
    }
    if flow.key.proto == PROTO_TCP {
        let tcp = ptr_at_mut::<TcpHdr>(ctx, flow.l4_offset).ok_or(Outcome::TruncatedL4)?;
        // SAFETY: as above.
        unsafe {
            let field = if source {
                &mut (*tcp).sport
            } else {
                &mut (*tcp).dport
            };
            let mut delta = address;
            delta.replace(field, &port);
            *field = port;
            (*tcp).check = delta.apply((*tcp).check);
        }
    } else {
        let udp = ptr_at_mut::<UdpHdr>(ctx, flow.l4_offset).ok_or(Outcome::TruncatedL4)?;
        // SAFETY: as above.
        unsafe {
            let field = if source {
                &mut (*udp).sport
            } else {
                &mut (*udp).dport
            };
            let mut delta = address;
            delta.replace(field, &port);
            *field = port;
            if (*udp).check != [0, 0] {
                let check = delta.apply((*udp).check);
                // 0 means "no checksum" in UDP: a computed 0 is sent as all ones.
                (*udp).check = if check == [0, 0] { [0xFF, 0xFF] } else { check };
            }
        }
    }
    Ok(())
}
