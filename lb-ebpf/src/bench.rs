//! Support of the benchmark programs (`lb_bench_*`, loaded only by `cargo xtask bench`):
//! putting the frame of `LB_BENCH_FRAME` back before each run.

use aya_ebpf::{
    helpers::{bpf_xdp_adjust_head, bpf_xdp_get_buff_len},
    programs::XdpContext,
};
use lb_common::BENCH_FRAME_LEN;

use crate::{
    maps::{BENCH_COUNTER, BENCH_FRAME},
    packet::ptr_at_mut,
};

/// Give the frame the template's length (undoing a tunnel header the last run added) and
/// bytes, and with `client_at` set a new client. Whether it could. (Not inlined: its
/// frame is gone before the balancer's starts.)
#[inline(never)]
pub fn restore(ctx: &XdpContext) -> bool {
    let Some(template) = BENCH_FRAME.get(0) else {
        return false;
    };
    // The length from the helper: arithmetic on packet pointers (a difference narrowed to
    // 32 bits) is refused by the verifier.
    // SAFETY: helper on this program's context.
    let len = unsafe { bpf_xdp_get_buff_len(ctx.ctx) } as i64;
    let grown = (len - i64::from(template.len)) as i32;
    // SAFETY: helper on this program's context; packet pointers are derived afresh below.
    if grown != 0 && unsafe { bpf_xdp_adjust_head(ctx.ctx, grown) } != 0 {
        return false;
    }
    // Whole 8-byte words, then the last 8 bytes again, for a length that is no multiple
    // of 8.
    for i in 0..BENCH_FRAME_LEN / 8 {
        let Some(at) = ptr_at_mut::<[u8; 8]>(ctx, i * 8) else {
            break;
        };
        let mut word = [0; 8];
        word.copy_from_slice(&template.bytes[i * 8..i * 8 + 8]);
        // SAFETY: ptr_at_mut checked the bounds; nothing else refers to these bytes.
        unsafe { *at = word };
    }
    let last = usize::from(template.len).saturating_sub(8) & (BENCH_FRAME_LEN - 1);
    if last + 8 <= BENCH_FRAME_LEN
        && let Some(at) = ptr_at_mut::<[u8; 8]>(ctx, last)
    {
        let mut word = [0; 8];
        word.copy_from_slice(&template.bytes[last..last + 8]);
        // SAFETY: as above.
        unsafe { *at = word };
    }
    if template.client_at != 0 {
        let Some(counter) = BENCH_COUNTER.get_ptr_mut(0) else {
            return false;
        };
        // SAFETY: this CPU's slot.
        let n = unsafe {
            *counter = (*counter).wrapping_add(1);
            *counter
        };
        let client = ptr_at_mut::<[u8; 4]>(ctx, usize::from(template.client_at & 0x7F));
        let port = ptr_at_mut::<[u8; 2]>(ctx, usize::from(template.sport_at & 0x7F));
        let (Some(client), Some(port)) = (client, port) else {
            return false;
        };
        // SAFETY: as above.
        unsafe {
            *client = n.to_be_bytes();
            *port = (1024 + (n % 60000) as u16).to_be_bytes();
        }
    }
    true
}
