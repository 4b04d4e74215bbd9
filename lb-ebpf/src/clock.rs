//! The flow table's clock: `CLOCK_MONOTONIC` at jiffy resolution, enough for timeouts in
//! seconds. Read from the kernel's jiffies, which the kernel turns into a plain load,
//! scaled by the calibration userspace wrote into `Settings` (`lb_clock` gives it the
//! samples); until then, from the coarse-clock helper, which costs ~10 ns more a packet.

use aya_ebpf::{
    bindings::xdp_action,
    helpers::generated::{bpf_jiffies64, bpf_ktime_get_coarse_ns},
    programs::XdpContext,
};
use lb_common::ClockSample;

use crate::{maps::SETTINGS, packet::ptr_at_mut};

/// Now, in nanoseconds of `CLOCK_MONOTONIC`, as of the last tick.
#[inline(always)]
pub fn now_ns() -> u64 {
    if let Some(settings) = SETTINGS.get(0)
        && settings.clock_tick_ns != 0
    {
        // SAFETY: helper without arguments.
        let jiffies = unsafe { bpf_jiffies64() };
        return jiffies
            .wrapping_mul(settings.clock_tick_ns)
            .wrapping_add(settings.clock_offset_ns);
    }
    // SAFETY: helper without arguments.
    unsafe { bpf_ktime_get_coarse_ns() }
}

/// `lb_clock`: write a `ClockSample` over the start of the frame.
#[inline(always)]
pub fn sample(ctx: &XdpContext) -> u32 {
    let Some(at) = ptr_at_mut::<[u8; size_of::<ClockSample>()]>(ctx, 0) else {
        return xdp_action::XDP_ABORTED;
    };
    // SAFETY: helpers without arguments.
    let sample = unsafe {
        ClockSample {
            coarse_before_ns: bpf_ktime_get_coarse_ns(),
            jiffies: bpf_jiffies64(),
            coarse_after_ns: bpf_ktime_get_coarse_ns(),
        }
    };
    let mut bytes = [0u8; size_of::<ClockSample>()];
    bytes[0..8].copy_from_slice(&sample.coarse_before_ns.to_ne_bytes());
    bytes[8..16].copy_from_slice(&sample.jiffies.to_ne_bytes());
    bytes[16..24].copy_from_slice(&sample.coarse_after_ns.to_ne_bytes());
    // SAFETY: ptr_at_mut checked the bounds; nothing else refers to these bytes.
    unsafe { *at = bytes };
    xdp_action::XDP_PASS
}
