//! XDP programs of the load balancer.
//!
//! `lb_xdp` balances: parse the frame, look up the virtual service, find the flow's real in
//! the flow table (or schedule one), rewrite and send. Everything that is not for a virtual
//! service passes to the kernel untouched. Each concern has its own module; every outcome is
//! counted and mapped to an XDP action in one place (`lb_common::Outcome::xdp_action`).
#![no_std]
#![no_main]

mod conntrack;
mod fwd;
mod headers;
mod maps;
mod packet;
mod parse;
mod sched;
mod stats;
mod vip;

use aya_ebpf::{bindings::xdp_action, macros::xdp, programs::XdpContext};
use lb_common::{Outcome, REAL_FLAG_RETIRED, RealInfo, ServiceInfo};
use parse::Flow;

/// The load balancer.
#[xdp]
pub fn lb_xdp(ctx: XdpContext) -> u32 {
    let outcome = match balance(&ctx) {
        Ok(forwarded) => forwarded,
        Err(not_forwarded) => not_forwarded,
    };
    stats::count_outcome(outcome);
    outcome.xdp_action()
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
    let service = vip::lookup(&flow.key).ok_or(Outcome::NotService)?;
    let (real_id, real, new_flow) = choose_real(&flow, &service)?;
    let outcome = fwd::dr::forward(ctx, &flow, real)?;
    if new_flow {
        conntrack::insert(&flow.key, real_id);
    }
    stats::count_forwarded(service.id, real_id, ctx.data_end() - ctx.data(), new_flow);
    Ok(outcome)
}

/// The real of an established flow, or a newly scheduled one (`true`: new flow). The flow
/// table's answer stands only if its real is in use, belongs to this service (ids are
/// reused), and is not retired when a new TCP connection (SYN) reuses the 5-tuple.
#[inline(always)]
fn choose_real(
    flow: &Flow,
    service: &ServiceInfo,
) -> Result<(u32, &'static RealInfo, bool), Outcome> {
    if let Some(real_id) = conntrack::lookup(&flow.key)
        && let Some(real) = maps::real(real_id)
        && real.service_id == service.id
        && !(flow.syn && real.flags & REAL_FLAG_RETIRED != 0)
    {
        return Ok((real_id, real, false));
    }
    let real_id = sched::pick(service).ok_or(Outcome::NoReal)?;
    let real = maps::real(real_id).ok_or(Outcome::NextHopUnknown)?;
    Ok((real_id, real, true))
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
