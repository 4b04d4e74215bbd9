//! ICMP messages the balancer sends itself: "fragmentation needed" (ICMP type 3 code 4)
//! and "packet too big" (ICMPv6 type 2) back to a client whose packet would not fit the
//! tunnel to its real, with the MTU that would (as IPVS does for TUN). The frame becomes
//! the answer in place: room for a new IP header and the ICMP header is made in front of
//! the client's IP packet, which stays where it is as the quote (its header and 8 bytes;
//! the rest is cut off), and the Ethernet addresses are swapped so that it goes back where
//! it came from. Tagged frames are not answered (they are dropped and counted). Unlike the
//! kernel's `icmp_send`, answers are not rate-limited; each is smaller than the packet it
//! answers.

use aya_ebpf::{
    helpers::{bpf_xdp_adjust_head, bpf_xdp_adjust_tail},
    programs::XdpContext,
};
use lb_common::{FAMILY_IPV6, Outcome};

use crate::{
    headers::{ETH_P_IPV4, ETH_P_IPV6, EthHdr, Ipv4Hdr, Ipv6Hdr},
    packet::{ptr_at, ptr_at_mut},
    parse::Flow,
};

const ETH_LEN: usize = core::mem::size_of::<EthHdr>();
const IPV4_LEN: usize = core::mem::size_of::<Ipv4Hdr>();
const IPV6_LEN: usize = core::mem::size_of::<Ipv6Hdr>();
const ICMP_LEN: usize = 8;

/// Answer the client's too-big packet (`frame_len` bytes) with an ICMP error carrying
/// `mtu`: `Ok(TunnelTooBigAnswered)`, or why not.
#[inline(always)]
pub fn too_big(
    ctx: &XdpContext,
    flow: &Flow,
    frame_len: usize,
    mtu: u16,
) -> Result<Outcome, Outcome> {
    match answer_too_big(ctx, flow, frame_len, mtu) {
        Outcome::TunnelTooBigAnswered => Ok(Outcome::TunnelTooBigAnswered),
        failed => Err(failed),
    }
}

/// `too_big` as a function of its own, not inlined, so its locals stay off the balancer's
/// stack; it returns one `Outcome` (a two-value result would come back through a pointer
/// into its stack, which the verifier refuses).
#[inline(never)]
fn answer_too_big(ctx: &XdpContext, flow: &Flow, frame_len: usize, mtu: u16) -> Outcome {
    match build(ctx, flow, frame_len, mtu) {
        Ok(()) => Outcome::TunnelTooBigAnswered,
        // The frame may be half rewritten: never pass it on.
        Err(failed) if failed.xdp_action() == aya_ebpf::bindings::xdp_action::XDP_PASS => {
            Outcome::NoHeadroom
        }
        Err(failed) => failed,
    }
}

#[inline(always)]
fn build(ctx: &XdpContext, flow: &Flow, frame_len: usize, mtu: u16) -> Result<(), Outcome> {
    if flow.l3_offset != ETH_LEN {
        return Err(Outcome::TunnelTooBig);
    }
    let ipv6 = flow.key.family == FAMILY_IPV6;
    let (ip_len, quote_len) = if ipv6 {
        (IPV6_LEN, IPV6_LEN + 8)
    } else {
        (IPV4_LEN, IPV4_LEN + 8)
    };
    let eth = ptr_at::<EthHdr>(ctx, 0).ok_or(Outcome::TruncatedL2)?;
    // SAFETY: checked by ptr_at; copied before the frame moves.
    let (dst, src) = unsafe { ((*eth).dst, (*eth).src) };
    let grow = (ip_len + ICMP_LEN) as i32;
    // SAFETY: helper on this program's context; packet pointers are re-derived below.
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, -grow) } != 0 {
        return Err(Outcome::NoHeadroom);
    }
    let eth = ptr_at_mut::<EthHdr>(ctx, 0).ok_or(Outcome::TruncatedL2)?;
    // SAFETY: checked by ptr_at_mut; nothing else refers to these bytes.
    unsafe {
        (*eth).dst = src;
        (*eth).src = dst;
        (*eth).ether_type = if ipv6 { ETH_P_IPV6 } else { ETH_P_IPV4 };
    }
    let ip_at = ETH_LEN;
    let icmp_at = ip_at + ip_len;
    let quote_at = icmp_at + ICMP_LEN;
    // The ICMP checksum: the ICMP header and the quote (and for ICMPv6 a pseudo-header).
    let mut sum = quote_sum(ctx, quote_at, quote_len)?;
    // The new header goes from the VIP (the quote's destination) to the client (its
    // source): addresses copied within the packet, summed on the way.
    let (src_at, dst_at, addr_len) = if ipv6 {
        (ip_at + 8, ip_at + 24, 16)
    } else {
        (ip_at + 12, ip_at + 16, 4)
    };
    let (quoted_src, quoted_dst) = if ipv6 {
        (quote_at + 8, quote_at + 24)
    } else {
        (quote_at + 12, quote_at + 16)
    };
    let addresses = copy_summed(ctx, quoted_dst, src_at, addr_len)?
        + copy_summed(ctx, quoted_src, dst_at, addr_len)?;
    if ipv6 {
        let mtu = u32::from(mtu).to_be_bytes();
        let payload = ((ICMP_LEN + quote_len) as u16).to_be_bytes();
        sum += addresses + u32::from(u16::from_be_bytes(payload)) + 58;
        sum += (2u32 << 8)
            + u32::from(u16::from_be_bytes([mtu[0], mtu[1]]))
            + u32::from(u16::from_be_bytes([mtu[2], mtu[3]]));
        let check = fold(sum);
        write(
            ctx,
            icmp_at,
            [2, 0, check[0], check[1], mtu[0], mtu[1], mtu[2], mtu[3]],
        )?;
        // Version, no traffic class or flow label; payload length, next header, hops.
        write(
            ctx,
            ip_at,
            [0x60u8, 0, 0, 0, payload[0], payload[1], 58, 64],
        )?;
    } else {
        let mtu = mtu.to_be_bytes();
        sum += (3u32 << 8) + 4 + u32::from(u16::from_be_bytes(mtu));
        let check = fold(sum);
        write(
            ctx,
            icmp_at,
            [3, 4, check[0], check[1], 0, 0, mtu[0], mtu[1]],
        )?;
        let total = ((IPV4_LEN + ICMP_LEN + quote_len) as u16).to_be_bytes();
        let header_sum = 0x4500 + u32::from(u16::from_be_bytes(total)) + (64 << 8) + 1;
        let check = fold(header_sum + addresses);
        // Version and length, TOS, total length, id, no fragmentation, TTL, ICMP, checksum.
        write(
            ctx,
            ip_at,
            [
                0x45u8, 0, total[0], total[1], 0, 0, 0, 0, 64, 1, check[0], check[1],
            ],
        )?;
    }
    // From the length known before the frame grew (the verifier does not allow
    // arithmetic on the end pointer that re-reading the length here would compile to).
    let cut = (frame_len + ip_len + ICMP_LEN) as i32 - (quote_at + quote_len) as i32;
    // SAFETY: helper on this program's context; nothing is read after it.
    if cut > 0 && unsafe { bpf_xdp_adjust_tail(ctx.ctx, -cut) } != 0 {
        return Err(Outcome::NoHeadroom);
    }
    Ok(())
}

/// Sum of the 16-bit words of the quote (48 bytes at most), read from the packet.
#[inline(always)]
fn quote_sum(ctx: &XdpContext, at: usize, len: usize) -> Result<u32, Outcome> {
    let mut sum = 0u32;
    for i in 0..(IPV6_LEN + 8) / 2 {
        if 2 * i >= len {
            break;
        }
        let word = read::<[u8; 2]>(ctx, at + 2 * i)?;
        sum += u32::from(u16::from_be_bytes(word));
    }
    Ok(sum)
}

/// Copy `len` (4 or 16) bytes within the packet; the sum of their 16-bit words.
#[inline(always)]
fn copy_summed(ctx: &XdpContext, from: usize, to: usize, len: usize) -> Result<u32, Outcome> {
    let mut sum = 0u32;
    for i in 0..4 {
        if 4 * i >= len {
            break;
        }
        let word = read::<[u8; 4]>(ctx, from + 4 * i)?;
        write(ctx, to + 4 * i, word)?;
        sum += u32::from(u16::from_be_bytes([word[0], word[1]]))
            + u32::from(u16::from_be_bytes([word[2], word[3]]));
    }
    Ok(sum)
}

#[inline(always)]
fn fold(mut sum: u32) -> [u8; 2] {
    sum = (sum & 0xFFFF) + (sum >> 16);
    sum = (sum & 0xFFFF) + (sum >> 16);
    (!(sum as u16)).to_be_bytes()
}

#[inline(always)]
fn read<T: Copy>(ctx: &XdpContext, offset: usize) -> Result<T, Outcome> {
    let at = ptr_at::<T>(ctx, offset).ok_or(Outcome::TruncatedL4)?;
    // SAFETY: checked by ptr_at; `T` is a byte array (alignment 1).
    Ok(unsafe { at.read_unaligned() })
}

#[inline(always)]
fn write<T>(ctx: &XdpContext, offset: usize, value: T) -> Result<(), Outcome> {
    let at = ptr_at_mut::<T>(ctx, offset).ok_or(Outcome::TruncatedL4)?;
    // SAFETY: checked by ptr_at_mut; `T` is a byte array or a header of byte fields
    // (alignment 1); nothing else refers to these bytes.
    unsafe { at.write_unaligned(value) };
    Ok(())
}
