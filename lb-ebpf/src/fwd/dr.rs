//! Direct routing (LVS "DR", keepalived `lb_kind DR`): the frame keeps its IP packet and
//! its VLAN tags untouched; its destination MAC becomes the real's and its source MAC the
//! egress interface's. Sent back out of the ingress interface (XDP_TX) or redirected to the
//! interface the real sits behind. Since tags are kept, only a frame of the VLAN the real
//! is reached on (none for an untagged real) is forwarded.

use aya_ebpf::programs::XdpContext;
use lb_common::{Outcome, RealInfo};

use super::transmit;
use crate::{headers::EthHdr, packet::ptr_at_mut, parse::Flow};

#[inline(always)]
pub fn forward(ctx: &XdpContext, flow: &Flow, real: &RealInfo) -> Result<Outcome, Outcome> {
    if flow.vlan != real.vlan {
        return Err(Outcome::VlanMismatch);
    }
    let eth = ptr_at_mut::<EthHdr>(ctx, 0).ok_or(Outcome::TruncatedL2)?;
    // SAFETY: ptr_at_mut checked the bounds; no other reference to these bytes is live.
    unsafe { super::set_macs(eth, real) };
    Ok(transmit(ctx, real))
}
