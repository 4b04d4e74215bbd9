//! Hashes of the hashing schedulers and of the tunnels' flow label, shared so that
//! userspace and tests compute exactly what the data plane computes.

/// IPVS's fold of an address to 32 bits (`ip_vs_sh_hashkey`): the IPv4 address, or the
/// XOR of the four words of an IPv6 address; in host order.
#[inline(always)]
pub const fn fold(addr: &[u8; 16], ipv6: bool) -> u32 {
    let w0 = u32::from_be_bytes([addr[0], addr[1], addr[2], addr[3]]);
    if !ipv6 {
        return w0;
    }
    let w1 = u32::from_be_bytes([addr[4], addr[5], addr[6], addr[7]]);
    let w2 = u32::from_be_bytes([addr[8], addr[9], addr[10], addr[11]]);
    let w3 = u32::from_be_bytes([addr[12], addr[13], addr[14], addr[15]]);
    w0 ^ w1 ^ w2 ^ w3
}

/// Bucket of the sh table (`IP_VS_SH_TAB_SIZE` = 256) for a folded address, a port (0
/// unless `sh-port`) and a probe offset: IPVS's `hash_32(port + addr, 8) + offset`
/// (`ip_vs_sh_hashkey`; `hash_32` multiplies by `GOLDEN_RATIO_32` and keeps the top bits).
#[inline(always)]
pub const fn bucket(folded: u32, port: u16, offset: u32) -> u32 {
    let hash = (folded.wrapping_add(port as u32)).wrapping_mul(0x61C8_8647) >> 24;
    (hash + offset) & 0xFF
}

/// Bucket of the dh table for a folded destination address: IPVS's
/// `(addr * 2654435761) & 255` (`ip_vs_dh_hashkey`), which keeps the low bits, so the
/// bucket depends only on the address's last byte.
#[inline(always)]
pub const fn dh_bucket(folded: u32) -> u32 {
    folded.wrapping_mul(2_654_435_761) & 0xFF
}

/// Slot of the Maglev table (`MAGLEV_TABLE_SIZE` entries) for a folded address and a port
/// (0 unless `mh-port`): a full-avalanche 32-bit mix (murmur3's finaliser), so that
/// neighbouring addresses land far apart.
#[inline(always)]
pub const fn maglev_slot(folded: u32, port: u16) -> u32 {
    let mut h = folded ^ ((port as u32) << 16 | port as u32).rotate_left(7);
    h ^= h >> 16;
    h = h.wrapping_mul(0x85EB_CA6B);
    h ^= h >> 13;
    h = h.wrapping_mul(0xC2B2_AE35);
    h ^= h >> 16;
    h % crate::sched::MAGLEV_TABLE_SIZE
}

/// The bit of an address in `Settings::nat_sources` (0..512): its fold, mixed.
#[inline(always)]
pub const fn nat_source_bit(addr: &[u8; 16], ipv6: bool) -> u32 {
    fold(addr, ipv6).wrapping_mul(0x9E37_79B1) >> (32 - 9)
}

/// The bit of a virtual service in `Settings::services` (0..1024): its address's fold,
/// port (network order, as in the packet) and protocol, mixed. The address is folded
/// without asking its family (an IPv4 address's other words are zero), so that the
/// balancer takes no branch on it here.
#[inline(always)]
pub const fn service_bit(addr: &[u8; 16], port: [u8; 2], proto: u8) -> u32 {
    let ports = u32::from_be_bytes([port[0], port[1], proto, 0]);
    (fold(addr, true) ^ ports.rotate_left(13)).wrapping_mul(0x9E37_79B1) >> (32 - 10)
}

/// The IPv6 flow label of a tunnelled flow (ip6ip6, 4in6): a 20-bit mix of the client's
/// address and both ports, never 0 (no label), so that a real's NIC spreads its
/// director's tunnels over its receive queues by flow (RSS hashes the outer header), as
/// Katran does, and every packet of a flow takes the same one.
#[inline(always)]
pub const fn tunnel_flow_label(src: &[u8; 16], ipv6: bool, sport: [u8; 2], dport: [u8; 2]) -> u32 {
    let ports = u32::from_be_bytes([sport[0], sport[1], dport[0], dport[1]]);
    let mut h = fold(src, ipv6) ^ ports.rotate_left(11);
    h ^= h >> 16;
    h = h.wrapping_mul(0x7FEB_352D);
    h ^= h >> 15;
    h = h.wrapping_mul(0x846C_A68B);
    h ^= h >> 16;
    match h & 0x000F_FFFF {
        0 => 1,
        label => label,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flow_labels_are_20_bits_never_zero_and_differ_by_flow() {
        let mut src = [0; 16];
        src[..4].copy_from_slice(&[198, 51, 100, 7]);
        let label = |port: u16| tunnel_flow_label(&src, false, port.to_be_bytes(), [0, 80]);
        let mut labels = [0u32; 1024];
        for (slot, port) in labels.iter_mut().zip(1024..) {
            *slot = label(port);
        }
        assert!(labels.iter().all(|l| *l != 0 && *l < 1 << 20));
        labels.sort_unstable();
        let distinct = 1 + labels.windows(2).filter(|w| w[0] != w[1]).count();
        assert!(distinct > 1000, "{distinct} distinct labels of 1024 flows");
        assert_eq!(label(1024), label(1024));
    }

    #[test]
    fn services_on_one_address_take_different_bits() {
        let mut vip = [0; 16];
        vip[..4].copy_from_slice(&[192, 0, 2, 10]);
        let mut bits = [0u32; 128];
        for (slot, n) in bits.iter_mut().zip(0u16..) {
            let proto = if n % 2 == 0 { 6 } else { 17 };
            *slot = service_bit(&vip, (1 + n / 2).to_be_bytes(), proto);
        }
        assert!(bits.iter().all(|bit| *bit < 1024));
        bits.sort_unstable();
        let distinct = 1 + bits.windows(2).filter(|w| w[0] != w[1]).count();
        assert!(distinct > 110, "{distinct} bits for 128 services");
    }

    #[test]
    fn ipv4_folds_to_itself_and_ipv6_xors_its_words() {
        let mut v4 = [0; 16];
        v4[..4].copy_from_slice(&[10, 0, 0, 1]);
        assert_eq!(fold(&v4, false), 0x0A00_0001);
        let mut v6 = [0; 16];
        v6[3] = 1;
        v6[15] = 3;
        assert_eq!(fold(&v6, true), 2);
    }

    #[test]
    fn buckets_and_slots_stay_in_their_tables() {
        for addr in [0, 1, 0x0A00_0001, u32::MAX] {
            for port in [0, 80, u16::MAX] {
                assert!(bucket(addr, port, 255) < 256);
                assert!(maglev_slot(addr, port) < crate::sched::MAGLEV_TABLE_SIZE);
            }
        }
        // Offsets probe consecutive buckets, wrapping.
        assert_eq!(bucket(7, 0, 1), (bucket(7, 0, 0) + 1) & 0xFF);
    }

    #[test]
    fn hashes_match_ipvs() {
        // hash_32(10.0.0.1, 8) = (0x0A000001 * 0x61C88647 mod 2^32) >> 24 = 0x27.
        assert_eq!(bucket(0x0A00_0001, 0, 0), 0x27);
        // With sh-port, the port is added to the address first.
        assert_eq!(bucket(0x0A00_0001, 80, 0), bucket(0x0A00_0051, 0, 0));
        // dh: 2654435761 = 0x9E3779B1; only the last byte counts: 0x01 * 0xB1.
        assert_eq!(dh_bucket(0x0A00_0001), 0xB1);
        assert_eq!(dh_bucket(0xC0A8_0101), 0xB1);
        assert_eq!(dh_bucket(0x0A00_0002), 0x62);
    }
}
