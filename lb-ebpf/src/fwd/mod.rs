//! Forwarding modes, chosen per real (`RealInfo::fwd`): DR (`dr`) and TUN (`tun`); NAT and
//! FullNAT follow. Every mode ends in `transmit`.

pub mod dr;
pub mod tun;

use aya_ebpf::{helpers::bpf_redirect, programs::XdpContext};
use lb_common::{FWD_TUN, Outcome, RealInfo};

use crate::parse::Flow;

/// Rewrite the frame for `real` by its forwarding mode and send it.
#[inline(always)]
pub fn forward(ctx: &XdpContext, flow: &Flow, real: &RealInfo) -> Result<Outcome, Outcome> {
    if real.fwd == FWD_TUN {
        tun::forward(ctx, flow, real)
    } else {
        dr::forward(ctx, flow, real)
    }
}

/// Send the rewritten frame out of the ingress interface (XDP_TX) or to the real's.
#[inline(always)]
fn transmit(ctx: &XdpContext, real: &RealInfo) -> Outcome {
    if real.ifindex == ctx.ingress_ifindex() as u32 {
        Outcome::ForwardedTx
    } else {
        // SAFETY: plain helper call; with flags 0 it returns XDP_REDIRECT.
        unsafe { bpf_redirect(real.ifindex, 0) };
        Outcome::ForwardedRedirect
    }
}
