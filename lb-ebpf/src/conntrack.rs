//! Flow table: an LRU hash from the client 5-tuple to the real it was scheduled to, with
//! IPVS's connection state and the time of the last packet, so an established flow keeps
//! its real when weights or the set of reals change, and a flow idle for longer than its
//! state's timeout (`lb_common::conn::Timeouts`) is scheduled anew. The state moves by the
//! client's packets and, for NAT and FullNAT, by the real's replies (`reply_seen`), with
//! IPVS's tables (`lb_common::conn::tcp_next_state`).

use lb_common::{
    FWD_FNAT, FWD_NAT, FlowKey, FlowState, PROTO_TCP, RealInfo,
    conn::{STATE_NONE, STATE_UDP, TcpDirection, Timeouts, tcp_next_state},
};

use crate::{
    conns,
    local_end::LocalEnd,
    maps::{self, FLOWS, REPLACED, TIMEOUTS},
    parse::Flow,
};

/// Whether a flow last seen at `last_seen_ns` in `state` has timed out at `now_ns`, by the
/// timeouts userspace configured (`LB_TIMEOUTS`; all zero, before it wrote them, counts as
/// IPVS's defaults).
#[inline(always)]
pub fn expired(state: u8, last_seen_ns: u64, now_ns: u64) -> bool {
    match TIMEOUTS.get(0) {
        Some(timeouts) => timeouts.expired(state, last_seen_ns, now_ns),
        None => Timeouts::IPVS.expired(state, last_seen_ns, now_ns),
    }
}

/// The flow's entry, to read and update in place.
#[inline(always)]
pub fn lookup(flow: &FlowKey) -> Option<*mut FlowState> {
    FLOWS.get_ptr_mut(flow)
}

/// A real's reply to the client flow `flow` (NAT, FullNAT) went by, with TCP flags
/// `tcp_flags`: the flow is alive now, and a TCP flow moves by IPVS's output table (a
/// server's FIN or RST ends an established connection, as the client's would). Returns
/// the flow's real, or `NO_REAL` when the flow is not (or no longer) in the table, has
/// timed out, or its real id went to another real.
#[inline(always)]
pub fn reply_seen(flow: &FlowKey, tcp_flags: u8) -> u32 {
    let Some(entry) = FLOWS.get_ptr_mut(flow) else {
        return NO_REAL;
    };
    // SAFETY: a live LRU element, read by value. The reply and the client's packets of
    // one flow may run on two CPUs at once (they hash differently), and IPVS's lock has no
    // counterpart here: when both move the state in the same instant, one write is lost
    // and both transitions are counted, which leaves the real's counts off by one until
    // the next full scan corrects them (if the difference outlasts the changes made
    // during that scan). An atomic compare-and-exchange of the state would close this; it
    // needs BPF's v3 atomics.
    let old = unsafe { *entry };
    let now = crate::clock::now_ns();
    let owned = maps::real(old.real_id).is_some_and(|real| belongs(&old, real));
    if !owned || expired(old.state, old.last_seen_ns, now) {
        return NO_REAL;
    }
    let state = if flow.proto == PROTO_TCP {
        tcp_next_state(old.state, tcp_flags, TcpDirection::Output)
    } else {
        old.state
    };
    if state != old.state {
        conns::moved(old.real_id, old.state, state);
        crate::sync::flow_changed(flow, old.real_id, state);
    }
    // SAFETY: as above.
    unsafe {
        (*entry).state = state;
        (*entry).last_seen_ns = now;
    }
    old.real_id
}

/// `reply_seen`'s answer for a flow it did not find; `set_replaced`'s for no flow.
pub const NO_REAL: u32 = u32::MAX;

/// Note, for this packet, the flow of real `real_id` in `state` that the new flow is
/// about to overwrite (a timed-out one, or a 5-tuple reused by a new connection; `NO_REAL`
/// for none): it leaves its real's count when the new flow is recorded
/// (`close_replaced`; an `ops` service records none, so it closes none either). Kept in a per-CPU slot, not carried in registers to the record:
/// the verifier, which does not track what a map holds, then checks the new flow's whole
/// path once rather than once for "replaces a flow" and once for "replaces none" (which
/// doubled its work on 6.1).
#[inline(always)]
pub fn set_replaced(real_id: u32, state: u8) {
    if let Some(slot) = REPLACED.get_ptr_mut(0) {
        // SAFETY: per-CPU slot; XDP programs do not nest on one CPU.
        unsafe { *slot = (u64::from(real_id) << 8) | u64::from(state) };
    }
}

/// The new flow is recorded: the flow it overwrote (`set_replaced`, earlier in this
/// packet), if any, leaves its real's count.
#[inline(always)]
pub fn close_replaced() {
    let Some(packed) = REPLACED.get(0).copied() else {
        return;
    };
    let real_id = (packed >> 8) as u32;
    if real_id != NO_REAL {
        conns::closed(real_id, packed as u8);
    }
}

/// Forget the flow `flow` of `real_id`, in `state` (its reply translation is lost, see
/// `fwd::fnat::lb_fnat_forward`): it leaves its real's count, and its next packet is a new flow.
#[inline(never)]
pub fn forget(flow: &FlowKey, real_id: u32, state: u8) {
    if FLOWS.remove(flow).is_ok() {
        conns::closed(real_id, state);
    }
}

/// State of a flow to `real` after this packet from the client, from `state` before it:
/// where the director sees the replies (NAT, FullNAT) by IPVS's input table, and by its
/// input-only table where it does not (DR, TUN).
#[inline(always)]
pub fn next_state(state: u8, flow: &Flow, real: &RealInfo) -> u8 {
    if flow.key.proto == PROTO_TCP {
        let direction = if real.fwd == FWD_NAT || real.fwd == FWD_FNAT {
            TcpDirection::Input
        } else {
            TcpDirection::InputOnly
        };
        tcp_next_state(state, flow.tcp_flags, direction)
    } else {
        STATE_UDP
    }
}

/// State of a new flow to `real` after its first packet.
#[inline(always)]
pub fn first_state(flow: &Flow, real: &RealInfo) -> u8 {
    next_state(STATE_NONE, flow, real)
}

/// The entry of a new flow to `real` (id `real_id`), in `state` at `now_ns`, with its
/// FullNAT local end.
#[inline(always)]
pub fn entry(real_id: u32, real: &RealInfo, state: u8, now_ns: u64, local: LocalEnd) -> FlowState {
    FlowState {
        real_id,
        state,
        _pad: [0; 3],
        last_seen_ns: now_ns,
        local_addr: local.addr_id,
        local_port: local.port,
        real_generation: real.generation,
    }
}

/// Remember a new flow. A failed insert (never expected with an LRU map) only means the
/// next packet is scheduled again. (Not inlined, for the balancer's stack.)
#[inline(never)]
pub fn insert(flow: &FlowKey, entry: &FlowState) {
    let _ = FLOWS.insert(flow, *entry, 0);
}

/// Whether flow entry `entry` is a connection of `real` (whose id it names): the real's
/// id has not gone to another real since the flow was scheduled.
#[inline(always)]
pub fn belongs(entry: &FlowState, real: &RealInfo) -> bool {
    entry.real_generation == real.generation
}
