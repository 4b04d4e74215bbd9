//! sh and dh bucket tables (`SH_TABLE_SIZE` = 256 buckets, IPVS's default).
//!
//! dh fills the buckets exactly as IPVS's `ip_vs_dh_reassign`: the reals in turn, one
//! bucket each, weights ignored.
//!
//! sh follows IPVS in what matters to operators and improves the shares: every real owns
//! buckets, a real with weight 0 exactly one (IPVS gives it one too), so its flows are
//! refused or, with `sh-fallback`, probe on, and nobody else's move; the other buckets go
//! to the reals with positive weights in proportion to them (largest remainder), in blocks
//! in configuration order. IPVS instead hands out `weight` consecutive buckets per real in
//! turn until 256 are full, which skews the shares whenever the weights do not divide 256
//! (weights 100 and 50 give 78% / 22%).

use lb_common::sched::SH_TABLE_SIZE;

const SIZE: usize = SH_TABLE_SIZE as usize;

/// dh: real `i % n` in bucket `i` (the reals beyond 256 get none, as in IPVS).
pub fn dest_hash(reals: usize) -> Vec<usize> {
    if reals == 0 {
        return Vec::new();
    }
    (0..SIZE).map(|bucket| bucket % reals).collect()
}

/// sh: buckets per real as described above, laid out in blocks.
pub fn source_hash(weights: &[u32]) -> Vec<usize> {
    let reals = weights.len().min(SIZE);
    if reals == 0 {
        return Vec::new();
    }
    let weights = &weights[..reals];
    let zero = weights.iter().filter(|&&w| w == 0).count();
    let total: u64 = weights.iter().map(|&w| u64::from(w)).sum();
    let counts: Vec<usize> = if total == 0 {
        // Nobody can take flows: the reals in turn, so each keeps its place.
        return dest_hash(reals);
    } else {
        proportional(weights, SIZE - zero, total)
    };
    let mut table = Vec::with_capacity(SIZE);
    for (real, &count) in counts.iter().enumerate() {
        table.extend(std::iter::repeat_n(real, count));
    }
    debug_assert_eq!(table.len(), SIZE);
    table
}

/// `slots` shared by the positive weights in proportion (largest remainder, ties to the
/// earlier real), each at least 1 while slots last; weight 0 gets exactly 1.
pub(super) fn proportional(weights: &[u32], slots: usize, total: u64) -> Vec<usize> {
    let slots_u = slots as u64;
    let mut counts: Vec<usize> = weights
        .iter()
        .map(|&w| match w {
            0 => 1,
            w => (u64::from(w) * slots_u / total) as usize,
        })
        .collect();
    let given: usize = weights
        .iter()
        .zip(&counts)
        .filter(|(w, _)| **w > 0)
        .map(|(_, c)| c)
        .sum();
    let mut by_remainder: Vec<usize> = (0..weights.len()).filter(|&i| weights[i] > 0).collect();
    by_remainder.sort_by_key(|&i| std::cmp::Reverse(u64::from(weights[i]) * slots_u % total));
    for &i in by_remainder
        .iter()
        .cycle()
        .take(slots.saturating_sub(given))
    {
        counts[i] += 1;
    }
    // A tiny weight may have rounded to nothing: give it one slot from the largest.
    for i in 0..weights.len() {
        if weights[i] > 0 && counts[i] == 0 {
            let largest = (0..counts.len())
                .max_by_key(|&j| counts[j])
                .expect("non-empty");
            if counts[largest] > 1 {
                counts[largest] -= 1;
                counts[i] = 1;
            }
        }
    }
    counts
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shares(table: &[usize], reals: usize) -> Vec<usize> {
        let mut counts = vec![0; reals];
        for &real in table {
            counts[real] += 1;
        }
        counts
    }

    #[test]
    fn dh_is_round_robin_over_the_buckets() {
        let table = dest_hash(3);
        assert_eq!(&table[..6], &[0, 1, 2, 0, 1, 2]);
        assert_eq!(shares(&table, 3), vec![86, 85, 85]);
        assert!(dest_hash(0).is_empty());
    }

    #[test]
    fn sh_shares_follow_weights_and_weight_zero_keeps_one_bucket() {
        assert_eq!(shares(&source_hash(&[100, 50]), 2), vec![171, 85]);
        assert_eq!(shares(&source_hash(&[1, 1, 0, 2]), 4), vec![64, 64, 1, 127]);
        assert_eq!(shares(&source_hash(&[0, 0]), 2), vec![128, 128]);
        let table = source_hash(&[3, 1]);
        assert_eq!(table.len(), 256);
        assert_eq!(shares(&table, 2), vec![192, 64]);
    }

    #[test]
    fn sh_is_deterministic_and_caps_at_256_reals() {
        let weights: Vec<u32> = (1..=300).collect();
        let table = source_hash(&weights);
        assert_eq!(table, source_hash(&weights));
        assert_eq!(table.len(), 256);
        assert!(table.iter().all(|&r| r < 256));
        // Every one of the first 256 reals keeps at least one bucket.
        assert!(shares(&table, 256).iter().all(|&n| n >= 1));
    }
}
