//! FullNAT (`lb_kind FNAT`, the convention of keepalived's FullNAT fork): a client's
//! packet leaves with a local address and port of the director (from the service's pool)
//! as source and the real's address and port as destination, so the real replies to the
//! director whatever its routes; the reply gets the VIP as source and the client as
//! destination again (`nat::reply`).
//!
//! Local ports are handed out here, in the data plane. Each CPU has its own share of the
//! configured range (every `Settings::cpus`-th port, from the CPU's number on), so two
//! CPUs never draw the same pair. A new flow tries (address, port) pairs of the service's
//! pool and its CPU's share, from a random one on, and reserves the first free one by
//! inserting its reply translation into `LB_NAT_REVERSE` (the reply's 5-tuple is the key,
//! so two flows never share one). A pair is looked up before it is inserted: an LRU
//! insert takes (and if the table is full, evicts) a node before it finds the key taken,
//! so inserting blindly would push a live translation out for every pair found taken. A
//! pair already taken is reclaimed when the flow that held it has ended (gone from the
//! flow table, timed out, or moved to another pair) and its reservation is older than
//! `RESERVATION_GRACE_MS` (so a flow between its reservation and its flow-table entry
//! keeps it); after `FNAT_PORT_TRIES` pairs the packet is dropped and counted
//! (`FnatNoPort`). An established flow checks its reservation (`holds`, which also keeps
//! it recent in the LRU table) at its first packet in each tick of the flow table's clock,
//! as NAT flows check theirs: one the table evicted is made again, and one another flow
//! took meanwhile makes the packet drop (`FnatPortLost`) and the flow end (the balancer
//! forgets it), rather than reach the other client's connection; the client's next SYN
//! starts afresh. A take-over needs the reservation evicted first (a table full of live
//! flows), and the real still holds the first flow's connection on that 4-tuple, so the
//! check limits the damage rather than prevents it; once a tick (a few milliseconds)
//! limits it as well as every packet did, at a hash lookup less per packet. The userspace sweep removes the reservations of
//! expired flows as it removes the flows.

use aya_ebpf::{
    bindings::{BPF_NOEXIST, xdp_md},
    helpers::{bpf_get_prandom_u32, bpf_get_smp_processor_id},
    programs::XdpContext,
};
use lb_common::{FNAT_PORTS_DEFAULT, FlowKey, NatOrigin, Outcome, RealInfo, ServiceInfo};

use super::{
    nat::{REWRITTEN, Side, fix_checksums, set_side},
    rebuild_l2, transmit,
};
use crate::{
    conntrack, edit,
    local_end::LocalEnd,
    maps::{FLOWS, FNAT_SCRATCH, LOCAL_ADDRS, NAT_REVERSE, REALS, SETTINGS, TABLES},
    parse::Flow,
};

/// Local (address, port) pairs a new flow tries before it is refused.
pub const FNAT_PORT_TRIES: u32 = 16;

/// `allocate`'s answer when every pair tried was taken.
pub const NO_LOCAL_PORT: u64 = u64::MAX;

/// Client → real: source becomes the flow's local end (reserved just now for a new flow;
/// for an established one, with `check_local_end`, checked to be still its own),
/// destination the real (id `real_id`); then sent to the real's next hop.
#[inline(always)]
pub fn forward(
    ctx: &XdpContext,
    flow: &Flow,
    real_id: u32,
    real: &RealInfo,
    local: LocalEnd,
    check_local_end: bool,
) -> Result<Outcome, Outcome> {
    if real.family != flow.key.family {
        return Err(Outcome::NextHopUnknown);
    }
    let mut how = edit::shape(flow);
    if check_local_end {
        how |= CHECK_LOCAL_END;
    }
    match lb_fnat_forward(ctx.ctx, &flow.key, real_id, local.packed(), how) {
        REWRITTEN => {}
        code if code == Outcome::TruncatedL3 as u32 => return Err(Outcome::TruncatedL3),
        code if code == Outcome::TruncatedL4 as u32 => return Err(Outcome::TruncatedL4),
        _ => return Err(Outcome::FnatPortLost),
    }
    rebuild_l2(ctx, flow.l3_offset, real)?;
    Ok(transmit(ctx, real))
}

/// `lb_fnat_forward`'s flag (with the packet's `edit::shape`): the flow is established,
/// and its local end must still be its own.
const CHECK_LOCAL_END: u32 = edit::SHAPE_FREE_BIT;

/// `forward`'s rewrite, as one global BPF function: the verifier checks it once, and the
/// packet pays one call (each costs some 20 ns where the CPU's return-stack mitigation is
/// on) for the reservation check and both sides' rewrite. `local` is the packed local end
/// (`LocalEnd::packed`). Returns `nat::REWRITTEN`, the `Outcome` of a frame too short, or
/// another value when the flow has no local end or lost it. `flow` may be null to the
/// verifier's eyes, so it is checked.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn lb_fnat_forward(
    ctx: *mut xdp_md,
    flow: *const FlowKey,
    real_id: u32,
    local: u32,
    how: u32,
) -> u32 {
    // SAFETY: the caller passes a pointer to a flow key on its stack (or null).
    let Some(flow) = (unsafe { flow.as_ref() }) else {
        return LOST;
    };
    let Some(real) = REALS.get(real_id) else {
        return LOST;
    };
    let port = (local as u16).to_be_bytes();
    // A flow scheduled before its service became FullNAT has no local end.
    let Some(local_addr) = LOCAL_ADDRS
        .get(local >> 16)
        .filter(|l| l.family == real.family && port != [0, 0])
    else {
        return LOST;
    };
    if how & CHECK_LOCAL_END != 0 && !holds(flow, real, &local_addr.addr, port) {
        return LOST;
    }
    let ctx = XdpContext::new(ctx);
    let done = set_side::<false>(&ctx, how, Side::Source, &local_addr.addr, port)
        .and_then(|source| {
            let destination =
                set_side::<false>(&ctx, how, Side::Destination, &real.addr, real.port)?;
            Ok(source.plus(destination))
        })
        .and_then(|changed| fix_checksums(&ctx, how, changed));
    match done {
        Ok(()) => REWRITTEN,
        Err(outcome) => outcome as u32,
    }
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
    let Some(share) = PortShare::of_this_cpu() else {
        return NO_LOCAL_PORT;
    };
    // The key and value of the reservation live in a per-CPU scratch entry: on the stack
    // they would not fit next to the balancer's frame.
    let Some(scratch) = FNAT_SCRATCH.get_ptr_mut(0) else {
        return NO_LOCAL_PORT;
    };
    // SAFETY: this CPU's entry; nothing else runs on this CPU during the program.
    let scratch = unsafe { &mut *scratch };
    let now_ms = now_ms();
    // Field by field, in place: whole structs built first would take the stack (the
    // balancer's frame and this one's must fit in 512 bytes together).
    let reply = &mut scratch.reply;
    reply.src = real.addr;
    reply.sport = real.port;
    reply.proto = flow.proto;
    reply.family = flow.family;
    reply._pad = [0; 2];
    let origin = &mut scratch.origin;
    origin.vip = flow.dst;
    origin.client = flow.src;
    origin.vport = flow.dport;
    origin.client_port = flow.sport;
    origin.full_nat = 1;
    origin._pad = [0; 3];
    origin.reserved_ms = now_ms;
    // Pairs are numbered address by address, each address's ports in a row. A share of
    // no more pairs than tries is tried whole, in a row from a random one; a larger one at
    // random (pairs in a row would fail together where taken pairs cluster).
    let pairs = share.ports.wrapping_mul(pool_len);
    let in_a_row = pairs <= FNAT_PORT_TRIES;
    // SAFETY: helper without arguments.
    let start = unsafe { bpf_get_prandom_u32() };
    for step in 0..FNAT_PORT_TRIES {
        let draw = if in_a_row || step == 0 {
            start.wrapping_add(step)
        } else {
            // SAFETY: helper without arguments.
            unsafe { bpf_get_prandom_u32() }
        };
        // Checked: a division that can panic makes code the verifier refuses.
        let pair = draw.checked_rem(pairs).unwrap_or(0);
        let (Some(slot), Some(index)) =
            (pair.checked_div(share.ports), pair.checked_rem(share.ports))
        else {
            return NO_LOCAL_PORT;
        };
        let port = share.port(index);
        let Some(&addr_id) = TABLES.get(pool_at.wrapping_add(slot)) else {
            return NO_LOCAL_PORT;
        };
        let Some(local) = LOCAL_ADDRS.get(addr_id) else {
            return NO_LOCAL_PORT;
        };
        scratch.reply.dst = local.addr;
        scratch.reply.dport = port.to_be_bytes();
        let packed = (u64::from(addr_id) << 16) | u64::from(port);
        let taken = match NAT_REVERSE.get_ptr(&scratch.reply) {
            None => NAT_REVERSE
                .insert(&scratch.reply, &scratch.origin, u64::from(BPF_NOEXIST))
                .is_err(),
            // SAFETY: a live LRU element, read in place.
            // Taken over by removing the old entry first: an LRU update of a key that is
            // there still takes a new node first, which in a full table evicts another
            // flow's live reservation.
            Some(held) => {
                !ended(
                    unsafe { &*held },
                    &scratch.reply,
                    addr_id,
                    now_ms,
                    &mut scratch.client,
                ) || NAT_REVERSE.remove(&scratch.reply).is_err()
                    || NAT_REVERSE
                        .insert(&scratch.reply, &scratch.origin, u64::from(BPF_NOEXIST))
                        .is_err()
            }
        };
        if !taken {
            return packed;
        }
    }
    NO_LOCAL_PORT
}

/// The ports of the configured range that this CPU hands out: `first`, `first + stride`,
/// ... (`ports` of them). With fewer ports than CPUs, CPUs share.
struct PortShare {
    first: u32,
    stride: u32,
    ports: u32,
}

impl PortShare {
    #[inline(always)]
    fn of_this_cpu() -> Option<PortShare> {
        let settings = SETTINGS.get(0);
        let (low, high) = match settings {
            Some(s) if s.fnat_port_max != 0 && s.fnat_port_min <= s.fnat_port_max => {
                (s.fnat_port_min, s.fnat_port_max)
            }
            _ => FNAT_PORTS_DEFAULT,
        };
        let span = u32::from(high - low) + 1;
        // Checked, as below.
        let cpus = settings.map_or(1, |s| u32::from(s.cpus)).min(span).max(1);
        // SAFETY: helper without arguments.
        let lane = unsafe { bpf_get_smp_processor_id() }.checked_rem(cpus)?;
        // Ports `low + lane + k * cpus` within the range.
        let ports = (span - lane + cpus - 1).checked_div(cpus)?;
        (ports != 0).then_some(PortShare {
            first: u32::from(low) + lane,
            stride: cpus,
            ports,
        })
    }

    /// The `index`-th port of the share (`index < ports`).
    #[inline(always)]
    fn port(&self, index: u32) -> u16 {
        (self.first + index * self.stride) as u16
    }
}

/// Whether the flow that reserved `reply` (the translation `held`) no longer uses it: its
/// reservation is not young, and its client flow is gone, timed out, or holds another
/// local end. `client` is room for the client flow's key (in the scratch entry, off the stack).
#[inline(always)]
fn ended(
    held: &NatOrigin,
    reply: &FlowKey,
    addr_id: u32,
    now_ms: u32,
    client: &mut FlowKey,
) -> bool {
    if held.full_nat == 0 || now_ms.wrapping_sub(held.reserved_ms) < RESERVATION_GRACE_MS {
        return false;
    }
    client.src = held.client;
    client.dst = held.vip;
    client.sport = held.client_port;
    client.dport = held.vport;
    client.proto = reply.proto;
    client.family = reply.family;
    client._pad = [0; 2];
    let Some(state) = FLOWS.get_ptr(client) else {
        return true;
    };
    // SAFETY: a live LRU element, read in place.
    let state = unsafe { &*state };
    conntrack::expired(state.state, state.last_seen_ns, crate::clock::now_ns())
        || state.local_addr != addr_id
        || state.local_port != reply.dport
}

/// How long a new reservation is never taken over.
const RESERVATION_GRACE_MS: u32 = 1000;

#[inline(always)]
fn now_ms() -> u32 {
    (crate::clock::now_ns() / 1_000_000) as u32
}

/// The reply translation of FullNAT flow `flow`, reserved at `now_ms`.
#[inline(always)]
fn origin_of(flow: &FlowKey, now_ms: u32) -> NatOrigin {
    NatOrigin {
        vip: flow.dst,
        client: flow.src,
        vport: flow.dport,
        client_port: flow.sport,
        full_nat: 1,
        _pad: [0; 3],
        reserved_ms: now_ms,
    }
}

/// Whether the established flow `flow` to `real` still holds its local end
/// (`local_addr`, `port`): its reservation is there and its own (made again if the LRU
/// table evicted it). The lookup also keeps the reservation recent in that table. The key
/// and value are built in the per-CPU scratch entry, off the stack (this function's frame
/// and the balancer's must fit in 512 bytes together).
#[inline(always)]
// Keys by reference: a copy would take the stack the scratch entry saves.
#[allow(clippy::needless_borrows_for_generic_args)]
fn holds(flow: &FlowKey, real: &RealInfo, local_addr: &[u8; 16], port: [u8; 2]) -> bool {
    let Some(scratch) = FNAT_SCRATCH.get_ptr_mut(0) else {
        return false;
    };
    // SAFETY: this CPU's entry; nothing else runs on this CPU during the program.
    let scratch = unsafe { &mut *scratch };
    let reply = &mut scratch.reply;
    reply.src = real.addr;
    reply.dst = *local_addr;
    reply.sport = real.port;
    reply.dport = port;
    reply.proto = flow.proto;
    reply.family = flow.family;
    reply._pad = [0; 2];
    if let Some(held) = NAT_REVERSE.get_ptr(&scratch.reply) {
        // SAFETY: a live LRU element, read in place.
        let held = unsafe { &*held };
        return held.client == flow.src
            && held.client_port == flow.sport
            && held.vip == flow.dst
            && held.vport == flow.dport;
    }
    scratch.origin = origin_of(flow, now_ms());
    NAT_REVERSE
        .insert(&scratch.reply, &scratch.origin, u64::from(BPF_NOEXIST))
        .is_ok()
}

/// `lb_fnat_forward`'s answer when the flow has no local end or lost it.
const LOST: u32 = 1;
