//! In-place edits of packet words with the checksum differences they make, and the shape
//! of a packet as one scalar for the global BPF functions that edit it (they take only
//! scalars and the context). NAT, FullNAT, the translation of ICMP errors and echo replies
//! all edit packets through here.

use aya_ebpf::programs::XdpContext;
use lb_common::{FAMILY_IPV6, PROTO_TCP};

use crate::{csum::Delta, packet::ptr_at_mut, parse::Flow};

/// `shape`: the IP header's offset (at most two VLAN tags: below 64)...
const L3_OFFSET_MASK: u32 = 0x3F;
/// ...IPv6 rather than IPv4...
pub const SHAPE_IPV6: u32 = 1 << 8;
/// ...TCP rather than UDP (for the ICMP functions: the quoted packet's protocol).
pub const SHAPE_TCP: u32 = 1 << 9;
/// The first bit the callee may use for its own flags.
pub const SHAPE_FREE_BIT: u32 = 1 << 10;

/// The shape of `flow`'s packet.
#[inline(always)]
pub fn shape(flow: &Flow) -> u32 {
    let mut shape = flow.l3_offset as u32 & L3_OFFSET_MASK;
    if flow.key.family == FAMILY_IPV6 {
        shape |= SHAPE_IPV6;
    }
    if flow.key.proto == PROTO_TCP {
        shape |= SHAPE_TCP;
    }
    shape
}

/// The IP header's offset in a `shape`.
#[inline(always)]
pub fn l3_offset(shape: u32) -> usize {
    (shape & L3_OFFSET_MASK) as usize
}

/// Length of the IP header (no options, no extension headers) and 16-bit words of an
/// address, for a `shape`.
#[inline(always)]
pub fn ip_layout(shape: u32) -> (usize, usize) {
    if shape & SHAPE_IPV6 != 0 {
        (40, 8)
    } else {
        (20, 2)
    }
}

/// Offsets of the source and destination address in the IP header of a `shape`.
#[inline(always)]
pub fn address_offsets(shape: u32) -> (usize, usize) {
    if shape & SHAPE_IPV6 != 0 {
        (8, 24)
    } else {
        (12, 16)
    }
}

/// Write one 16-bit word at `at`: the change, or `None` if the frame is too short.
#[inline(always)]
pub fn set_word(ctx: &XdpContext, at: usize, new: [u8; 2]) -> Option<Delta> {
    let word = ptr_at_mut::<[u8; 2]>(ctx, at)?;
    let mut delta = Delta::new();
    // SAFETY: checked by ptr_at_mut; nothing else refers to these bytes.
    unsafe {
        delta.replace(&*word, &new);
        *word = new;
    }
    Some(delta)
}

/// Write the first `words` 16-bit words of `addr` at `at`: the change. Inlined into the
/// hot NAT and FullNAT rewrites: a call and its return cost some 20 ns where the CPU's
/// return-stack mitigation (SRSO's "safe RET") is on, more than the work. The ICMP
/// translations call `set_addr_apart` instead, to keep their frames small.
#[inline(always)]
pub fn set_addr(ctx: &XdpContext, at: usize, words: usize, addr: &[u8; 16]) -> Option<Delta> {
    if words == 8 {
        replace_bytes(ctx, at, addr)
    } else {
        replace_bytes(ctx, at, &[addr[0], addr[1], addr[2], addr[3]])
    }
}

/// Write `new` at `at` behind one bounds check: the change. Word by word, in place, and
/// volatile: LLVM otherwise copies the old bytes to the stack, or makes the copy between
/// a map value and the packet a call to a byte-loop `memmove`.
#[inline(always)]
fn replace_bytes<const N: usize>(ctx: &XdpContext, at: usize, new: &[u8; N]) -> Option<Delta> {
    let bytes = ptr_at_mut::<[u8; N]>(ctx, at)?;
    let mut delta = Delta::new();
    let mut i = 0;
    while i + 1 < N {
        // SAFETY: checked by ptr_at_mut; nothing else refers to these bytes.
        unsafe {
            let high = &raw mut (*bytes)[i];
            let low = &raw mut (*bytes)[i + 1];
            delta.replace(
                &[
                    core::ptr::read_volatile(high),
                    core::ptr::read_volatile(low),
                ],
                &[new[i], new[i + 1]],
            );
            core::ptr::write_volatile(high, new[i]);
            core::ptr::write_volatile(low, new[i + 1]);
        }
        i += 2;
    }
    Some(delta)
}

/// `set_addr` as a function of its own: one loop instead of an unrolled one per call keeps
/// the callers' frames small.
#[inline(never)]
pub fn set_addr_apart(ctx: &XdpContext, at: usize, words: usize, addr: &[u8; 16]) -> Option<Delta> {
    set_addr(ctx, at, words, addr)
}

/// Adjust the checksum at `at` by `by`: the change of the checksum field itself.
#[inline(always)]
pub fn update_check(ctx: &XdpContext, at: usize, by: Delta) -> Option<Delta> {
    let check = ptr_at_mut::<[u8; 2]>(ctx, at)?;
    // SAFETY: checked by ptr_at_mut; read once.
    let old = unsafe { *check };
    set_word(ctx, at, by.apply(old))
}

/// As `update_check` for a UDP checksum: 0 means none and stays so, and a computed 0 is
/// sent as all ones.
#[inline(always)]
pub fn update_udp_check(ctx: &XdpContext, at: usize, by: Delta) -> Option<Delta> {
    let check = ptr_at_mut::<[u8; 2]>(ctx, at)?;
    // SAFETY: checked by ptr_at_mut; read once.
    let old = unsafe { *check };
    if old == [0, 0] {
        return Some(Delta::new());
    }
    let new = by.apply(old);
    set_word(ctx, at, if new == [0, 0] { [0xFF, 0xFF] } else { new })
}
