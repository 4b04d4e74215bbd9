//! Echo requests (ping) to a VIP answered in XDP, when userspace turns it on
//! (`FEATURE_ANSWER_ECHO`, `lbd --answer-ping`): for VIPs that are routed to the director
//! but not assigned to it, which the kernel would not answer. The request becomes the
//! reply in place: Ethernet and IP addresses swapped, TTL/hop limit 64, type echo reply,
//! checksums updated (the ICMPv6 pseudo-header's sum does not change when its addresses
//! swap). The reply leaves where the request came in, with its VLAN tags.

use aya_ebpf::{bindings::xdp_md, programs::XdpContext};
use lb_common::{FEATURE_ANSWER_ECHO, Outcome, VipKey};

use crate::{
    edit,
    maps::{SETTINGS, VIPS},
    packet::{ptr_at, ptr_at_mut},
    parse::Flow,
};

/// Answer the echo request `flow` if answering is on and it is for a VIP; otherwise the
/// kernel gets it (`NotTcpUdp`, as any other ICMP).
#[inline(always)]
pub fn reply(ctx: &XdpContext, flow: &Flow) -> Result<Outcome, Outcome> {
    match answer(ctx, flow) {
        Outcome::EchoAnswered => Ok(Outcome::EchoAnswered),
        not_answered => Err(not_answered),
    }
}

/// `reply` as a function of its own, not inlined, so its locals stay off the balancer's
/// stack; it returns one `Outcome` (a two-value result would come back through a pointer
/// into its stack, which the verifier refuses).
#[inline(never)]
fn answer(ctx: &XdpContext, flow: &Flow) -> Outcome {
    let features = SETTINGS.get(0).map_or(0, |s| s.features);
    let vip = VipKey {
        addr: flow.key.dst,
        family: flow.key.family,
        _pad: [0; 3],
    };
    // SAFETY: only whether the key is there is read.
    if features & FEATURE_ANSWER_ECHO == 0 || unsafe { VIPS.get(vip) }.is_none() {
        return Outcome::NotTcpUdp;
    }
    if lb_echo_reply(ctx.ctx, edit::shape(flow)) == ANSWERED {
        Outcome::EchoAnswered
    } else {
        Outcome::TruncatedL4
    }
}

const ANSWERED: u32 = 0;
const FAILED: u32 = 1;
/// TTL / hop limit of the replies (Linux's default).
const REPLY_TTL: u8 = 64;
/// Type of an ICMP and of an ICMPv6 echo reply.
const ECHO_REPLY: u8 = 0;
const ECHOV6_REPLY: u8 = 129;

/// The reply built in place, as a global BPF function (checked once by the verifier).
/// Every field it writes is checked to be in the frame before the first write, so a
/// short request goes to the kernel as it came.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn lb_echo_reply(ctx: *mut xdp_md, shape: u32) -> u32 {
    let ctx = XdpContext::new(ctx);
    let l3 = edit::l3_offset(shape);
    let ipv6 = shape & edit::SHAPE_IPV6 != 0;
    let (ip_len, _) = edit::ip_layout(shape);
    // The ICMP type, code and checksum are the last bytes written.
    if ptr_at::<[u8; 4]>(&ctx, l3 + ip_len).is_none() {
        return FAILED;
    }
    let Some(macs) = ptr_at_mut::<[[u8; 6]; 2]>(&ctx, 0) else {
        return FAILED;
    };
    // SAFETY: checked by ptr_at_mut; nothing else refers to these bytes.
    unsafe { (*macs).swap(0, 1) };
    let answered = if ipv6 {
        swap_addresses::<16>(&ctx, l3 + 8)
            .and_then(|()| edit::set_word(&ctx, l3 + 6, [next_header(&ctx, l3)?, REPLY_TTL]))
    } else {
        swap_addresses::<4>(&ctx, l3 + 12).and_then(|()| {
            // TTL shares a 16-bit word with the protocol.
            let ttl = edit::set_word(&ctx, l3 + 8, [REPLY_TTL, PROTO_ICMP])?;
            edit::update_check(&ctx, l3 + 10, ttl)
        })
    };
    let kind = if ipv6 { ECHOV6_REPLY } else { ECHO_REPLY };
    // The type shares a word with the code, which stays (0).
    let replied = answered
        .and_then(|_| edit::set_word(&ctx, l3 + ip_len, [kind, 0]))
        .and_then(|change| edit::update_check(&ctx, l3 + ip_len + 2, change));
    if replied.is_some() { ANSWERED } else { FAILED }
}

const PROTO_ICMP: u8 = 1;

/// Swap the source and destination addresses (`N` bytes each) at `at`: both checksums
/// that cover them (IPv4 header, ICMPv6 pseudo-header) keep their sum.
#[inline(always)]
fn swap_addresses<const N: usize>(ctx: &XdpContext, at: usize) -> Option<()> {
    let addrs = ptr_at_mut::<[[u8; N]; 2]>(ctx, at)?;
    // SAFETY: checked by ptr_at_mut; nothing else refers to these bytes.
    unsafe { (*addrs).swap(0, 1) };
    Some(())
}

/// The IPv6 next header field (ICMPv6 here), which shares a word with the hop limit.
#[inline(always)]
fn next_header(ctx: &XdpContext, l3: usize) -> Option<u8> {
    // SAFETY: checked by ptr_at; read once.
    ptr_at::<u8>(ctx, l3 + 6).map(|p| unsafe { *p })
}
