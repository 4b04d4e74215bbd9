//! Flow table: an LRU hash from the client 5-tuple to the real it was scheduled to, with
//! IPVS's connection state and the time of the last packet, so an established flow keeps
//! its real when weights or the set of reals change, and a flow idle for longer than its
//! state's timeout (`lb_common::conn::Timeouts`) is scheduled anew.

use lb_common::{
    FlowKey, FlowState, PROTO_TCP, RealInfo,
    conn::{STATE_NONE, STATE_UDP, Timeouts, tcp_next_state},
};

use crate::{
    fwd::fnat::LocalEnd,
    maps::{FLOWS, TIMEOUTS},
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

/// `CLOCK_MONOTONIC` in nanoseconds, at jiffy resolution (enough for timeouts in seconds,
/// and cheaper than the precise clock).
#[inline(always)]
pub fn now_ns() -> u64 {
    // SAFETY: helper without arguments.
    unsafe { aya_ebpf::helpers::generated::bpf_ktime_get_coarse_ns() }
}

/// The flow's entry, to read and update in place.
#[inline(always)]
pub fn lookup(flow: &FlowKey) -> Option<*mut FlowState> {
    FLOWS.get_ptr_mut(flow)
}

/// A packet of the flow went the other way (a NAT reply): it is alive now. The flow's
/// real, or `NO_REAL` when the flow is not (or no longer) in the table.
#[inline(always)]
pub fn touch(flow: &FlowKey) -> u32 {
    match FLOWS.get_ptr_mut(flow) {
        // SAFETY: a live LRU element; one 8-byte store and one 4-byte load.
        Some(entry) => unsafe {
            (*entry).last_seen_ns = now_ns();
            (*entry).real_id
        },
        None => NO_REAL,
    }
}

/// `touch`'s answer for a flow it did not find.
pub const NO_REAL: u32 = u32::MAX;

/// State of a flow after this packet, from `state` before it.
#[inline(always)]
pub fn next_state(state: u8, flow: &Flow) -> u8 {
    if flow.key.proto == PROTO_TCP {
        tcp_next_state(state, flow.tcp_flags)
    } else {
        STATE_UDP
    }
}

/// State of a new flow after its first packet.
#[inline(always)]
pub fn first_state(flow: &Flow) -> u8 {
    next_state(STATE_NONE, flow)
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
