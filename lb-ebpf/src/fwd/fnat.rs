//! FullNAT (`lb_kind FNAT`, the convention of keepalived's FullNAT fork): a client's
//! packet leaves with a local address and port of the director (from the service's pool)
//! as source and the real's address and port as destination, so the real replies to the
//! director whatever its routes; the reply gets the VIP as source and the client as
//! destination again (`nat::reply`).
//!
//! Local ports are handed out here, in the data plane: a new flow draws random (address,
//! port) pairs from the pool and the configured range, and reserves one by inserting its
//! reply translation with `BPF_NOEXIST` into `LB_NAT_REVERSE` (the reply's 5-tuple is the
//! key, so two flows never share one). A pair already taken is reclaimed when the flow
//! that held it has ended (gone from the flow table, timed out, or moved to another pair);
//! after `FNAT_PORT_TRIES` draws the packet is dropped and counted (`FnatNoPort`). The
//! userspace sweep removes the reservations of expired flows as it removes the flows.

use aya_ebpf::{bindings::BPF_NOEXIST, helpers::bpf_get_prandom_u32, programs::XdpContext};
use lb_common::{FNAT_PORTS_DEFAULT, FlowKey, NatOrigin, Outcome, RealInfo, ServiceInfo};

use super::{
    nat::{Side, rewrite},
    rebuild_l2, transmit,
};
use crate::{
    conntrack,
    maps::{FLOWS, LOCAL_ADDRS, NAT_REVERSE, REALS, SETTINGS, TABLES},
    parse::Flow,
};

/// Random draws of a local address and port before a new flow is refused.
pub const FNAT_PORT_TRIES: u32 = 16;

/// `allocate`'s answer when every draw was taken.
pub const NO_LOCAL_PORT: u64 = u64::MAX;

/// The local end of a FullNAT flow: `LB_LOCAL_ADDRS` id and port (network order).
#[derive(Clone, Copy)]
pub struct LocalEnd {
    pub addr_id: u32,
    pub port: [u8; 2],
}

impl LocalEnd {
    /// For modes other than FullNAT.
    pub const NONE: LocalEnd = LocalEnd {
        addr_id: 0,
        port: [0; 2],
    };

    /// From `allocate`'s packed answer (not `NO_LOCAL_PORT`).
    #[inline(always)]
    pub fn unpack(packed: u64) -> LocalEnd {
        LocalEnd {
            addr_id: (packed >> 16) as u32,
            port: (packed as u16).to_be_bytes(),
        }
    }
}

/// Client → real: source becomes the local end, destination the real; then sent to the
/// real's next hop.
#[inline(always)]
pub fn forward(
    ctx: &XdpContext,
    flow: &Flow,
    real: &RealInfo,
    local: LocalEnd,
) -> Result<Outcome, Outcome> {
    if real.family != flow.key.family {
        return Err(Outcome::NextHopUnknown);
    }
    let local_addr = LOCAL_ADDRS.get(local.addr_id).ok_or(Outcome::FnatNoPort)?;
    rewrite(ctx, flow, Side::Source, &local_addr.addr, local.port)?;
    rewrite(ctx, flow, Side::Destination, &real.addr, real.port)?;
    rebuild_l2(ctx, flow.l3_offset, real)?;
    Ok(transmit(ctx, real))
}

/// Reserve a local address and port of `service`'s pool for the new client flow `flow`
/// to `real_id`: `(address id << 16) | port` (host order), or `NO_LOCAL_PORT`. The reply
/// translation is in place when this returns.
#[inline(always)]
pub fn allocate(flow: &FlowKey, service: &ServiceInfo, real_id: u32) -> u64 {
    lb_fnat_reserve(
        flow,
        real_id,
        service.table_offset.wrapping_add(service.table_len),
        service.laddr_len,
    )
}

/// `allocate`'s draws, as a global BPF function: the verifier checks its loop once, not
/// once per path of the balancer that leads here (as it would a static function). The
/// pool is `pool_len` local address ids at `pool_at` in `LB_TABLES`. `flow` may be null
/// to the verifier's eyes, so it is checked.
#[unsafe(no_mangle)]
#[inline(never)]
// Keys by reference: the loop reuses them, and a copy per call would take stack.
#[allow(clippy::needless_borrows_for_generic_args)]
pub extern "C" fn lb_fnat_reserve(
    flow: *const FlowKey,
    real_id: u32,
    pool_at: u32,
    pool_len: u32,
) -> u64 {
    // SAFETY: the caller passes a pointer to a flow key on its stack (or null).
    let Some(flow) = (unsafe { flow.as_ref() }) else {
        return NO_LOCAL_PORT;
    };
    let Some(real) = REALS.get(real_id) else {
        return NO_LOCAL_PORT;
    };
    if pool_len == 0 {
        return NO_LOCAL_PORT;
    }
    let (first, last) = match SETTINGS.get(0) {
        Some(s) if s.fnat_port_max != 0 && s.fnat_port_min <= s.fnat_port_max => {
            (s.fnat_port_min, s.fnat_port_max)
        }
        _ => FNAT_PORTS_DEFAULT,
    };
    let span = u32::from(last - first) + 1;
    let mut reply = FlowKey {
        src: real.addr,
        dst: [0; 16],
        sport: real.port,
        dport: [0; 2],
        proto: flow.proto,
        family: flow.family,
        _pad: [0; 2],
    };
    let origin = NatOrigin {
        vip: flow.dst,
        client: flow.src,
        vport: flow.dport,
        client_port: flow.sport,
        full_nat: 1,
        _pad: [0; 3],
    };
    for _ in 0..FNAT_PORT_TRIES {
        // SAFETY: helper without arguments.
        let draw = unsafe { bpf_get_prandom_u32() };
        let port = first as u32 + draw % span;
        let slot = (draw / span) % pool_len;
        let Some(&addr_id) = TABLES.get(pool_at.wrapping_add(slot)) else {
            return NO_LOCAL_PORT;
        };
        let Some(local) = LOCAL_ADDRS.get(addr_id) else {
            return NO_LOCAL_PORT;
        };
        reply.dst = local.addr;
        reply.dport = (port as u16).to_be_bytes();
        let packed = (u64::from(addr_id) << 16) | u64::from(port);
        if NAT_REVERSE
            .insert(&reply, &origin, u64::from(BPF_NOEXIST))
            .is_ok()
        {
            return packed;
        }
        if let Some(held) = NAT_REVERSE.get_ptr(&reply)
            // SAFETY: a live LRU element, read in place.
            && ended(unsafe { &*held }, &reply, addr_id)
            && NAT_REVERSE.insert(&reply, &origin, 0).is_ok()
        {
            return packed;
        }
    }
    NO_LOCAL_PORT
}

/// Whether the flow that reserved `reply` (the translation `held`) no longer uses it: its
/// client flow is gone, timed out, or holds another local end.
#[inline(always)]
fn ended(held: &NatOrigin, reply: &FlowKey, addr_id: u32) -> bool {
    if held.full_nat == 0 {
        return false;
    }
    let client = held.client_flow(reply.proto, reply.family);
    let Some(state) = FLOWS.get_ptr(client) else {
        return true;
    };
    // SAFETY: a live LRU element, read in place.
    let state = unsafe { &*state };
    conntrack::expired(state.state, state.last_seen_ns, conntrack::now_ns())
        || state.local_addr != addr_id
        || state.local_port != reply.dport
}
