//! Maglev lookup tables (Eisenbud et al., NSDI 2016) of `MAGLEV_TABLE_SIZE` (65537, a
//! prime) entries, for `mh`.
//!
//! Each real has a preference list over the slots, a permutation given by an offset and a
//! skip derived from a hash of its address and port, so it is the same in every table and
//! on every director. Reals take turns claiming their next preferred free slot. Removing a
//! real frees only its own slots plus the few that change owner as the others refill them:
//! most clients keep their real.
//!
//! Weights: each real's number of slots is its share of the weights (largest remainder),
//! exact to the slot, and turns go to the real furthest behind its share (stride
//! scheduling), so the table is balanced at every point of its filling. IPVS instead
//! shifts weights down to at most 6 bits and claims in whole rounds, which coarsens ratios
//! such as 100:1. A real whose weight dropped to 0 keeps the slots of its last weight, as
//! in IPVS: the data plane refuses it (or falls back, with `mh-fallback`).

use std::{cmp::Ordering, collections::BinaryHeap, net::IpAddr};

use lb_common::sched::MAGLEV_TABLE_SIZE;

use super::{TableReal, buckets::proportional};

const SIZE: u64 = MAGLEV_TABLE_SIZE as u64;

/// The identity a real's permutation is derived from: address (16 bytes, IPv4 in the
/// first 4), port (network order), address family.
pub fn permutation_key(addr: IpAddr, port: u16) -> [u8; 19] {
    let mut key = [0; 19];
    match addr {
        IpAddr::V4(v4) => {
            key[..4].copy_from_slice(&v4.octets());
            key[18] = 4;
        }
        IpAddr::V6(v6) => {
            key[..16].copy_from_slice(&v6.octets());
            key[18] = 6;
        }
    }
    key[16..18].copy_from_slice(&port.to_be_bytes());
    key
}

/// The table: positions into `reals`; empty when no real has (had) a positive weight.
pub fn table(reals: &[TableReal]) -> Vec<usize> {
    let weights: Vec<u32> = reals.iter().map(|real| real.last_weight).collect();
    let total: u64 = weights.iter().map(|&w| u64::from(w)).sum();
    if total == 0 {
        return Vec::new();
    }
    let members: Vec<usize> = (0..reals.len()).filter(|&i| weights[i] > 0).collect();
    let member_weights: Vec<u32> = members.iter().map(|&i| weights[i]).collect();
    let targets = proportional(&member_weights, SIZE as usize, total);

    let mut owner = vec![usize::MAX; SIZE as usize];
    let mut next = vec![0u64; members.len()];
    let (offsets, skips): (Vec<u64>, Vec<u64>) = members
        .iter()
        .map(|&i| {
            let h = hash64(&reals[i].key);
            let h2 = hash64(&h.to_le_bytes());
            (h % SIZE, h2 % (SIZE - 1) + 1)
        })
        .unzip();
    let mut heap: BinaryHeap<Turn> = (0..members.len())
        .filter(|&m| targets[m] > 0)
        .map(|m| Turn {
            member: m,
            claimed: 0,
            target: targets[m] as u64,
        })
        .collect();
    let mut filled = 0;
    while let Some(mut turn) = heap.pop() {
        let m = turn.member;
        loop {
            let slot = ((offsets[m] + next[m] * skips[m]) % SIZE) as usize;
            next[m] += 1;
            if owner[slot] == usize::MAX {
                owner[slot] = members[m];
                break;
            }
        }
        filled += 1;
        turn.claimed += 1;
        if turn.claimed < turn.target {
            heap.push(turn);
        }
    }
    debug_assert_eq!(filled, SIZE);
    owner
}

/// A real's next turn: the one with the smallest `(claimed + 1) / target` goes first
/// (ties to the earlier real).
#[derive(PartialEq, Eq)]
struct Turn {
    member: usize,
    claimed: u64,
    target: u64,
}

impl Ord for Turn {
    fn cmp(&self, other: &Self) -> Ordering {
        // BinaryHeap pops the greatest: reverse both comparisons.
        let mine = u128::from(self.claimed + 1) * u128::from(other.target);
        let theirs = u128::from(other.claimed + 1) * u128::from(self.target);
        theirs
            .cmp(&mine)
            .then_with(|| other.member.cmp(&self.member))
    }
}

impl PartialOrd for Turn {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// FNV-1a over `bytes`, finished with splitmix64's mixer: stable across builds and hosts.
fn hash64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn real(n: u32, weight: u32) -> TableReal {
        let addr = IpAddr::from([10, 1, (n >> 8) as u8, n as u8]);
        TableReal {
            weight,
            last_weight: weight,
            key: permutation_key(addr, 80),
        }
    }

    fn shares(table: &[usize], reals: usize) -> Vec<f64> {
        let mut counts = vec![0usize; reals];
        for &r in table {
            counts[r] += 1;
        }
        counts
            .iter()
            .map(|&c| c as f64 / table.len() as f64)
            .collect()
    }

    #[test]
    fn balance_is_within_one_percent_of_the_weights() {
        for weights in [
            vec![1, 1, 1],
            vec![3, 1],
            vec![100, 1],
            vec![5, 10, 20, 40, 80],
            (1..=64).collect::<Vec<u32>>(),
            vec![65535, 1, 300],
        ] {
            let reals: Vec<TableReal> = weights
                .iter()
                .enumerate()
                .map(|(i, &w)| real(i as u32, w))
                .collect();
            let table = table(&reals);
            assert_eq!(table.len(), SIZE as usize);
            let total: u32 = weights.iter().sum();
            for (i, share) in shares(&table, reals.len()).into_iter().enumerate() {
                let expected = f64::from(weights[i]) / f64::from(total);
                assert!(
                    // 1% of the weight's share, or one slot for a share below one slot.
                    (share - expected).abs() <= (0.01 * expected).max(1.0 / SIZE as f64),
                    "{weights:?}: real {i} has {share}, expected {expected}"
                );
            }
        }
    }

    #[test]
    fn removing_one_of_n_moves_at_most_one_nth_plus_one_percent() {
        for n in [3u32, 5, 10, 32, 100] {
            let reals: Vec<TableReal> = (0..n).map(|i| real(i, 1)).collect();
            let before = table(&reals);
            for removed in [0, n / 2, n - 1] {
                let rest: Vec<TableReal> = reals
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| *i as u32 != removed)
                    .map(|(_, r)| r.clone())
                    .collect();
                // Positions in `rest` back to positions in `reals`.
                let after: Vec<usize> = table(&rest)
                    .into_iter()
                    .map(|p| if p as u32 >= removed { p + 1 } else { p })
                    .collect();
                let moved = before.iter().zip(&after).filter(|(a, b)| a != b).count();
                let moved = moved as f64 / SIZE as f64;
                assert!(
                    moved <= 1.0 / f64::from(n) + 0.01,
                    "n={n}, removed {removed}: {:.4} of the table moved",
                    moved
                );
            }
        }
    }

    #[test]
    fn a_real_at_weight_zero_keeps_its_slots_and_a_new_one_gets_none() {
        let mut reals = vec![real(0, 1), real(1, 1), real(2, 1)];
        let before = table(&reals);
        reals[1].weight = 0; // last_weight stays 1
        assert_eq!(table(&reals), before);
        reals.push(TableReal {
            weight: 0,
            last_weight: 0,
            key: permutation_key(IpAddr::from([10, 9, 9, 9]), 80),
        });
        assert_eq!(table(&reals), before);
        assert!(table(&[real(0, 0)]).is_empty());
    }

    #[test]
    fn tables_are_deterministic() {
        let reals: Vec<TableReal> = (0..7).map(|i| real(i, i + 1)).collect();
        assert_eq!(table(&reals), table(&reals));
        assert_ne!(
            permutation_key(IpAddr::from([10, 0, 0, 1]), 80),
            permutation_key(IpAddr::from([10, 0, 0, 1]), 81)
        );
    }
}
