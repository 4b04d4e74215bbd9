//! Echo requests (ping) to a VIP answered in XDP, when userspace turns it on
//! (`FEATURE_ANSWER_ECHO`, `lbd --answer-ping`): for VIPs that are routed to the director
//! but not assigned to it, which the kernel would not answer. The request becomes the
//! reply in place: Ethernet and IP addresses swapped, TTL/hop limit 64, type echo reply,
//! checksums updated (the ICMPv6 pseudo-header's sum does not change when its addresses
//! swap). The reply leaves where the request came in, with its VLAN tags.

use aya_ebpf::{bindings::xdp_md, programs::XdpContext};
use lb_common::{FAMILY_IPV6, FEATURE_ANSWER_ECHO, Outcome, VipKey};

use crate::{
    csum::Delta,
    maps::{SETTINGS, VIPS},
    packet::ptr_at_mut,
    parse::Flow,
};

/// Answer the echo request `flow` if answering is on and it is for a VIP; otherwise the
/// kernel gets it (`NotTcpUdp`, as any other ICMP).
#[inline(always)]
pub fn reply(ctx: &XdpContext, flow: &Flow) -> Result<Outcome, Outcome> {
    let features = SETTINGS.get(0).map_or(0, |s| s.features);
    let vip = VipKey {
        addr: flow.key.dst,
        family: flow.key.family,
        _pad: [0; 3],
    };
    // SAFETY: only whether the key is there is read.
    if features & FEATURE_ANSWER_ECHO == 0 || unsafe { VIPS.get(vip) }.is_none() {
        return Err(Outcome::NotTcpUdp);
    }
    let mut how = flow.l3_offset as u32 & L3_OFFSET_MASK;
    if flow.key.family == FAMILY_IPV6 {
        how |= IPV6;
    }
    if lb_echo_reply(ctx.ctx, how) == ANSWERED {
        Ok(Outcome::EchoAnswered)
    } else {
        Err(Outcome::TruncatedL4)
    }
}

const ANSWERED: u32 = 0;
const FAILED: u32 = 1;
const L3_OFFSET_MASK: u32 = 0x3F;
const IPV6: u32 = 1 << 8;
/// TTL / hop limit of the replies (Linux's default).
const REPLY_TTL: u8 = 64;

/// The reply built in place, as a global BPF function (checked once by the verifier).
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn lb_echo_reply(ctx: *mut xdp_md, how: u32) -> u32 {
    let ctx = XdpContext::new(ctx);
    let l3 = (how & L3_OFFSET_MASK) as usize;
    let Some(macs) = ptr_at_mut::<[[u8; 6]; 2]>(&ctx, 0) else {
        return FAILED;
    };
    // SAFETY: checked by ptr_at_mut; nothing else refers to these bytes.
    unsafe { (*macs).swap(0, 1) };
    let answered = if how & IPV6 != 0 {
        reply_v6(&ctx, l3)
    } else {
        reply_v4(&ctx, l3)
    };
    if answered.is_some() { ANSWERED } else { FAILED }
}

#[inline(always)]
fn reply_v4(ctx: &XdpContext, l3: usize) -> Option<()> {
    let addrs = ptr_at_mut::<[[u8; 4]; 2]>(ctx, l3 + 12)?;
    // SAFETY: checked by ptr_at_mut; a swap keeps the header checksum.
    unsafe { (*addrs).swap(0, 1) };
    // TTL shares a 16-bit word with the protocol.
    let ttl = ptr_at_mut::<[u8; 2]>(ctx, l3 + 8)?;
    let check = ptr_at_mut::<[u8; 2]>(ctx, l3 + 10)?;
    // SAFETY: as above; the fields do not overlap.
    unsafe {
        let new = [REPLY_TTL, (*ttl)[1]];
        let mut delta = Delta::new();
        delta.replace(&*ttl, &new);
        *ttl = new;
        *check = delta.apply(*check);
    }
    set_type(ctx, l3 + 20, 0)
}

#[inline(always)]
fn reply_v6(ctx: &XdpContext, l3: usize) -> Option<()> {
    let addrs = ptr_at_mut::<[[u8; 16]; 2]>(ctx, l3 + 8)?;
    let hop_limit = ptr_at_mut::<u8>(ctx, l3 + 7)?;
    // SAFETY: checked by ptr_at_mut; the fields do not overlap.
    unsafe {
        (*addrs).swap(0, 1);
        *hop_limit = REPLY_TTL;
    }
    set_type(ctx, l3 + 40, 129)
}

/// Set the ICMP type at `at` (its code stays), with the checksum.
#[inline(always)]
fn set_type(ctx: &XdpContext, at: usize, kind: u8) -> Option<()> {
    let word = ptr_at_mut::<[u8; 2]>(ctx, at)?;
    let check = ptr_at_mut::<[u8; 2]>(ctx, at + 2)?;
    // SAFETY: checked by ptr_at_mut; the fields do not overlap.
    unsafe {
        let new = [kind, (*word)[1]];
        let mut delta = Delta::new();
        delta.replace(&*word, &new);
        *word = new;
        *check = delta.apply(*check);
    }
    Some(())
}
