//! XDP programs of the load balancer.
//!
//! `lb_xdp` balances: parse the frame; skip every lookup for most packets of no virtual
//! service (`vip::may_serve`); find the flow's real in the flow table, or on a miss look
//! the virtual service up and schedule one; track the connection's state, rewrite and
//! send. Everything that is not for a virtual service passes to the kernel untouched
//! (except NAT replies, translated back). Each concern has its own module; every outcome
//! is counted and mapped to an XDP action in one place (`lb_common::Outcome::xdp_action`).
#![no_std]
#![no_main]
// Atomic add on map values (`conns`): core has no atomic read-modify-write types for BPF.
#![feature(core_intrinsics)]
#![allow(internal_features)]

mod bench;
mod clock;
mod conns;
mod conntrack;
mod csum;
mod decap;
mod echo;
mod edit;
mod fwd;
mod headers;
mod icmp;
mod local_end;
mod maps;
mod packet;
mod parse;
mod persist;
mod sched;
mod stats;
mod sync;
mod vip;

use aya_ebpf::{bindings::xdp_action, macros::xdp, programs::XdpContext};
use fwd::fnat;
use lb_common::{
    FWD_DR, FWD_FNAT, FWD_NAT, FWD_TUN, Outcome, PROTO_TCP, REAL_FLAG_RETIRED, RealInfo,
    SERVICE_FLAG_OPS, ServiceInfo,
    conn::{self, TCP_RST},
    sched::schedules_mid_stream,
};
use local_end::LocalEnd;
use parse::Flow;

/// The load balancer.
#[xdp]
pub fn lb_xdp(ctx: XdpContext) -> u32 {
    balance_counted(&ctx)
}

/// Balance the frame; count and map the outcome.
#[inline(always)]
fn balance_counted(ctx: &XdpContext) -> u32 {
    let outcome = match balance(ctx) {
        Ok(forwarded) => forwarded,
        Err(not_forwarded) => not_forwarded,
    };
    stats::count_outcome(outcome);
    outcome.xdp_action()
}

/// Clock calibration for userspace (BPF_PROG_TEST_RUN only): see `clock`.
#[xdp]
pub fn lb_clock(ctx: XdpContext) -> u32 {
    clock::sample(&ctx)
}

/// On a real server in TUN mode: strips the tunnel header of packets for a VIP.
#[xdp]
pub fn lb_decap(ctx: XdpContext) -> u32 {
    decap::decap(&ctx)
}

/// Benchmark baseline (`cargo xtask bench`): swaps the Ethernet addresses and sends the
/// frame back (XDP_TX), the least work a forwarding XDP program does. Never attached.
#[xdp]
pub fn lb_bench_macswap(ctx: XdpContext) -> u32 {
    match packet::ptr_at_mut::<headers::EthHdr>(&ctx, 0) {
        Some(eth) => {
            // SAFETY: ptr_at_mut checked the bounds; nothing else refers to these bytes.
            unsafe { core::mem::swap(&mut (*eth).dst, &mut (*eth).src) };
            xdp_action::XDP_TX
        }
        None => xdp_action::XDP_PASS,
    }
}

/// Benchmark generator (`cargo xtask bench`): puts the frame of `LB_BENCH_FRAME` back and
/// sends it (XDP_TX). With live frames, into a veth whose other end runs the balancer;
/// repeated in place, the cost of putting the frame back, which `lb_bench_balancer` pays
/// too.
#[xdp]
pub fn lb_bench_generator(ctx: XdpContext) -> u32 {
    if bench::restore(&ctx) {
        xdp_action::XDP_TX
    } else {
        xdp_action::XDP_ABORTED
    }
}

/// Benchmark harness (`cargo xtask bench`): puts the frame of `LB_BENCH_FRAME` back, then
/// balances it as `lb_xdp` does, so a test run repeated a million times sees the same
/// frame (or a new client) every time.
#[xdp]
pub fn lb_bench_balancer(ctx: XdpContext) -> u32 {
    if !bench::restore(&ctx) {
        return xdp_action::XDP_ABORTED;
    }
    balance_counted(&ctx)
}

/// Benchmark sink (`cargo xtask bench`): drops every frame. Attached to the receiving end
/// of the veth that the live-frames benchmark transmits into.
#[xdp]
pub fn lb_bench_drop(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_DROP
}

/// Passes every frame. Attached to the receiving end of a veth pair so that frames sent
/// there with XDP_TX or XDP_REDIRECT in native mode are delivered (the kernel drops them
/// when that end has no XDP program).
#[xdp]
pub fn lb_xdp_pass(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}

#[inline(always)]
fn balance(ctx: &XdpContext) -> Result<Outcome, Outcome> {
    let flow = parse::parse_flow(ctx)?;
    if flow.echo_request {
        return echo::reply(ctx, &flow);
    }
    if vip::may_serve(&flow.key)
        && let Some(served) = serve(ctx, &flow)
    {
        return served;
    }
    if flow.icmp_error {
        return Err(Outcome::NotService);
    }
    // Not for a virtual service: maybe a real's reply to a NAT client.
    match fwd::nat::origin(&flow.key) {
        Some(origin) => {
            // The reply keeps its flow alive and moves its state, as in IPVS, which sees
            // both directions.
            let real_id = fwd::nat::reply_seen(&flow.key, flow.tcp_flags, origin);
            let outcome = fwd::nat::reply(ctx, &flow, origin)?;
            stats::count_reply(real_id, ctx.data_end() - ctx.data());
            Ok(outcome)
        }
        None => Err(Outcome::NotService),
    }
}

/// A packet that may be for a virtual service: `None` if it is for none. The flow table
/// comes first, as in IPVS (which looks connections up before services): an established
/// flow's real names its service, so its packets need no service lookup.
#[inline(always)]
fn serve(ctx: &XdpContext, flow: &Flow) -> Option<Result<Outcome, Outcome>> {
    if flow.icmp_error {
        let service = vip::lookup(&flow.key)?;
        // NAT and FullNAT flows: translated here, not in `icmp_error`, so that the
        // translation's frames stack on the balancer's alone.
        let found = fwd::nat_icmp::lookup(&flow.key, service.id);
        if found != fwd::nat_icmp::NOT_NAT {
            return Some(
                fwd::nat_icmp::to_real(ctx, flow, found).map(|(real_id, outcome)| {
                    stats::count_forwarded(service.id, real_id, ctx.data_end() - ctx.data(), false);
                    outcome
                }),
            );
        }
        return Some(icmp_error(ctx, flow, &service));
    }
    let now = clock::now_ns();
    let chosen = match known_flow(flow, now) {
        Some(chosen) => chosen,
        None => {
            let service = vip::lookup(&flow.key)?;
            match schedule(flow, &service, now) {
                Ok(chosen) => chosen,
                Err(outcome) => return Some(Err(outcome)),
            }
        }
    };
    Some(send(ctx, flow, &chosen, now))
}

/// Rewrite and send the packet to the chosen real; record a new flow (and its client's
/// persistence pin) once its frame is on its way.
#[inline(always)]
fn send(ctx: &XdpContext, flow: &Flow, chosen: &Chosen, now: u64) -> Result<Outcome, Outcome> {
    let outcome = match fwd::forward(
        ctx,
        flow,
        chosen.real_id,
        chosen.real,
        chosen.local,
        !chosen.new_flow && chosen.first_in_tick,
    ) {
        Err(Outcome::FnatPortLost) if !chosen.new_flow => {
            // Another flow holds its local end now: this flow is over (its next SYN
            // starts afresh) rather than kept alive by its own retransmissions.
            conntrack::forget(&flow.key, chosen.real_id, chosen.state);
            return Err(Outcome::FnatPortLost);
        }
        result => result?,
    };
    if outcome == Outcome::TunnelTooBigAnswered {
        // Answered, not forwarded: no flow to record, nothing reached the real.
        return Ok(outcome);
    }
    if chosen.new_flow {
        if chosen.records_flow {
            record_flow(flow, chosen, now);
        }
        if chosen.pins_client {
            persist::remember(
                &persist::key(chosen.real.service_id, chosen.persist_prefix, &flow.key),
                chosen.real_id,
                chosen.real.generation,
                now,
            );
        }
    }
    if chosen.real.fwd == FWD_NAT && chosen.first_in_tick {
        fwd::nat::remember(&flow.key, chosen.real, chosen.new_flow);
    }
    let bytes = ctx.data_end() - ctx.data();
    stats::count_forwarded(
        chosen.real.service_id,
        chosen.real_id,
        bytes,
        chosen.new_flow,
    );
    Ok(outcome)
}

/// An ICMP error about a DR or TUN flow of `service` (such as "fragmentation needed" for
/// a reply the real sent) goes to the real that owns the flow, unchanged, so its stack
/// learns the path MTU (NAT and FullNAT flows are translated, see `fwd::nat_icmp`); flows
/// are neither created nor updated. An error about an unknown flow goes to the kernel.
#[inline(never)]
fn icmp_error(ctx: &XdpContext, flow: &Flow, service: &ServiceInfo) -> Result<Outcome, Outcome> {
    let entry = conntrack::lookup(&flow.key).ok_or(Outcome::NotService)?;
    // SAFETY: a live LRU element, read once.
    let entry = unsafe { *entry };
    let real_id = entry.real_id;
    let real = maps::real(real_id)
        .filter(|real| {
            real.service_id == service.id
                && conntrack::belongs(&entry, real)
                && (real.fwd == FWD_DR || real.fwd == FWD_TUN)
        })
        .ok_or(Outcome::NotService)?;
    let outcome = if real.fwd == FWD_TUN {
        fwd::tun::forward::<false>(ctx, flow, real)?
    } else {
        fwd::dr::forward(ctx, flow, real)?
    };
    stats::count_forwarded(service.id, real_id, ctx.data_end() - ctx.data(), false);
    Ok(outcome)
}

/// The real a packet goes to, and how it was chosen.
pub struct Chosen {
    pub real_id: u32,
    /// Its entry, which names its service.
    pub real: &'static RealInfo,
    /// Scheduled now; the caller records the flow once the frame is on its way.
    pub new_flow: bool,
    /// A new flow goes into the flow table (not for `ops` services).
    records_flow: bool,
    /// A new flow pins its client (the service is persistent), by the client's address
    /// masked to `persist_prefix` bits.
    pins_client: bool,
    persist_prefix: u8,
    /// An established flow's state after this packet (a new flow's is recorded with it).
    pub state: u8,
    /// The flow's first packet since the flow table's clock (`clock::now_ns`, a
    /// coarse one) last ticked, or a new flow: the time to make sure of a NAT flow's
    /// reply translation (`fwd::nat::remember`) and that a FullNAT flow still holds its
    /// local end (`fwd::fnat::forward`), not at every packet.
    first_in_tick: bool,
    /// FullNAT: the flow's local address and port (the caller reserves them for a new
    /// flow).
    pub local: LocalEnd,
}

/// The established flow's real (its state and time updated), or `None` for a new flow,
/// with the flow it replaces noted (`conntrack::set_replaced`): a timed-out entry, or one
/// whose 5-tuple a new connection reuses; none for no entry, or one whose real is gone
/// or whose id went to another real. The flow table's answer stands only if the entry's real is in use and is the real
/// the flow was scheduled to (ids are reused: the generations match; a real's entry names
/// its service, so it is still a real of the flow's service), the flow has not timed out
/// in its state, and no new TCP connection (SYN) reuses the 5-tuple of a flow on a
/// retired real or of one that ended (TIME_WAIT, CLOSE: IPVS's `conn_reuse_mode` 1).
#[inline(always)]
fn known_flow(flow: &Flow, now: u64) -> Option<Chosen> {
    let Some(entry) = conntrack::lookup(&flow.key) else {
        conntrack::set_replaced(conntrack::NO_REAL, 0);
        return None;
    };
    // SAFETY: a live LRU element, read by value; a racing eviction can only hand us stale
    // values, which are validated below. The client's packets of a flow come to one CPU
    // (RSS), but a NAT/FullNAT reply may move the same entry from another CPU at the same
    // moment (`conntrack::reply_seen`): see there for what that costs.
    let old = unsafe { *entry };
    let Some(real) = maps::real(old.real_id).filter(|real| conntrack::belongs(&old, real)) else {
        conntrack::set_replaced(conntrack::NO_REAL, 0);
        return None;
    };
    let expired = conntrack::expired(old.state, old.last_seen_ns, now);
    let reused = flow.opens_connection()
        && (real.flags & REAL_FLAG_RETIRED != 0 || conn::reopens(old.state));
    if expired || reused {
        conntrack::set_replaced(old.real_id, old.state);
        return None;
    }
    let state = conntrack::next_state(old.state, flow, real);
    if state != old.state {
        conns::moved(old.real_id, old.state, state);
        sync::flow_changed(&flow.key, old.real_id, state);
    }
    let first_in_tick = now != old.last_seen_ns;
    if state != old.state || first_in_tick {
        // SAFETY: as above.
        unsafe {
            (*entry).state = state;
            (*entry).last_seen_ns = now;
        }
    }
    Some(Chosen {
        real_id: old.real_id,
        real,
        new_flow: false,
        records_flow: false,
        pins_client: false,
        persist_prefix: 0,
        state,
        first_in_tick,
        local: LocalEnd {
            addr_id: old.local_addr,
            port: old.local_port,
        },
    })
}

/// The real for a packet of `service` that no established flow takes: the one its client
/// is pinned to (persistence), or the scheduler's choice; a FullNAT flow gets its local
/// end. `ops`: every datagram is scheduled on its own and no flow is recorded (so none is
/// counted); persistence still applies and NAT still records the reply translation. A TCP
/// segment of no known connection other than a SYN is scheduled only by a scheduler that
/// sends it where its connection is (`sched::schedules_mid_stream`), and never a RST; it
/// goes to the kernel otherwise.
#[inline(always)]
fn schedule(flow: &Flow, service: &ServiceInfo, now: u64) -> Result<Chosen, Outcome> {
    let ops = service.flags & SERVICE_FLAG_OPS != 0;
    if !ops
        && flow.key.proto == PROTO_TCP
        && !flow.opens_connection()
        && (flow.tcp_flags & TCP_RST != 0 || !schedules_mid_stream(service.sched))
    {
        return Err(Outcome::TcpNotSyn);
    }
    let persists = service.persist_timeout != 0;
    let pinned = if persists {
        let key = persist::key(service.id, service.persist_prefix, &flow.key);
        persist::pinned(service, &key, now)
    } else {
        None
    };
    let real_id = match pinned {
        Some(real_id) => real_id,
        None => sched::pick(service, flow, now).ok_or(Outcome::NoReal)?,
    };
    let real = maps::real(real_id).ok_or(Outcome::NextHopUnknown)?;
    let mut local = LocalEnd::NONE;
    if real.fwd == FWD_FNAT {
        let packed = fnat::allocate(&flow.key, service, real_id);
        if packed == fnat::NO_LOCAL_PORT {
            return Err(Outcome::FnatNoPort);
        }
        local = LocalEnd::unpack(packed);
    }
    Ok(Chosen {
        real_id,
        real,
        new_flow: true,
        records_flow: !ops,
        pins_client: persists,
        persist_prefix: service.persist_prefix,
        state: 0,
        first_in_tick: true,
        local,
    })
}

/// Record a new flow (its frame is on its way) and count its connection; the flow it
/// replaced, if any, leaves its real's count.
#[inline(always)]
fn record_flow(flow: &Flow, chosen: &Chosen, now: u64) {
    let state = conntrack::first_state(flow, chosen.real);
    let entry = conntrack::entry(chosen.real_id, chosen.real, state, now, chosen.local);
    conntrack::insert(&flow.key, &entry);
    conns::opened(chosen.real_id, state);
    conntrack::close_replaced();
    sync::flow_changed(&flow.key, chosen.real_id, state);
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
