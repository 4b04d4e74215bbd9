//! The one bounds-checked accessor to packet memory. Every header read or write goes
//! through `ptr_at` / `ptr_at_mut`, which prove to the verifier that `[offset, offset +
//! size_of::<T>())` lies inside the frame.

use aya_ebpf::programs::XdpContext;

/// A pointer to a `T` at `offset` bytes into the frame, or `None` if the frame is too short.
///
/// # Safety contract for callers
/// The pointer is valid for reads of `size_of::<T>()` bytes until the frame is resized
/// (`bpf_xdp_adjust_head/tail`), which invalidates it. `T` must have alignment 1 (all
/// header types in `headers` are byte arrays), because packet data has no alignment
/// guarantee.
#[inline(always)]
pub fn ptr_at<T>(ctx: &XdpContext, offset: usize) -> Option<*const T> {
    let start = ctx.data();
    let end = ctx.data_end();
    if start + offset + core::mem::size_of::<T>() > end {
        return None;
    }
    Some((start + offset) as *const T)
}

/// Like [`ptr_at`], for writing. The same contract applies, and the caller must not hold
/// another reference to the same bytes while writing.
#[inline(always)]
pub fn ptr_at_mut<T>(ctx: &XdpContext, offset: usize) -> Option<*mut T> {
    ptr_at::<T>(ctx, offset).map(|p| p as *mut T)
}
