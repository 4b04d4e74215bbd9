//! rr and wrr sequences: the data plane walks one cycle with a per-CPU cursor.
//!
//! A sequence is the order in which new flows are handed to reals over one cycle: for `rr`
//! every real with a non-zero weight once, for `wrr` IPVS's weighted round-robin order
//! (`ip_vs_wrr.c`: the current weight starts at the maximum, steps down by the gcd of the
//! weights each time the list wraps, and a real is chosen when its weight reaches it).
//! A real with weight 0 never appears: it takes no new flows.

use super::Table;

/// rr: each real with a non-zero weight once.
pub fn rr(weights: &[u32]) -> Table {
    Table {
        entries: (0..weights.len()).filter(|&i| weights[i] > 0).collect(),
        scaled: false,
    }
}

/// fo (IPVS's weighted failover, `ip_vs_fo.c`): the real of highest weight, the first of
/// them on a tie; none when every weight is 0. A real that fails its checks or is drained
/// leaves the table, which is then built again without it.
pub fn fo(weights: &[u32]) -> Table {
    let mut best: Option<usize> = None;
    for (i, &weight) in weights.iter().enumerate() {
        if weight > 0 && best.is_none_or(|b| weight > weights[b]) {
            best = Some(i);
        }
    }
    Table {
        entries: best.into_iter().collect(),
        scaled: false,
    }
}

/// wrr: one cycle of IPVS's order, at most `max_len` long. When the cycle is longer, the
/// weights are scaled down first (ratios kept as closely as integers allow); `scaled` in
/// the result says so.
pub fn wrr(weights: &[u32], max_len: usize) -> Table {
    if cycle_len(weights) <= max_len as u64 {
        Table {
            entries: wrr_cycle(weights),
            scaled: false,
        }
    } else {
        Table {
            entries: wrr_cycle(&scale(weights, max_len)),
            scaled: true,
        }
    }
}

pub(super) fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// Gcd of the positive weights (0 if there are none).
fn weight_gcd(weights: &[u32]) -> u32 {
    weights.iter().copied().filter(|&w| w > 0).fold(0, gcd)
}

/// Length of one wrr cycle: the sum of the weights divided by their gcd.
fn cycle_len(weights: &[u32]) -> u64 {
    match weight_gcd(weights) {
        0 => 0,
        g => weights.iter().map(|&w| u64::from(w / g)).sum(),
    }
}

/// One cycle of IPVS's weighted round robin.
fn wrr_cycle(weights: &[u32]) -> Vec<usize> {
    let step = weight_gcd(weights) as i64;
    if step == 0 {
        return Vec::new();
    }
    let max = i64::from(*weights.iter().max().unwrap_or(&0));
    // As ip_vs_wrr_init_svc: mw = max - (di - 1), cw starts at mw, position before the first.
    let top = max - (step - 1);
    let mut current = top;
    let mut position: Option<usize> = None;
    let len = cycle_len(weights) as usize;
    let mut order = Vec::with_capacity(len);
    while order.len() < len {
        let next = position.map_or(0, |p| p + 1);
        if next >= weights.len() {
            position = None;
            current -= step;
            if current <= 0 {
                current = top;
            }
            continue;
        }
        position = Some(next);
        if i64::from(weights[next]) >= current {
            order.push(next);
        }
    }
    order
}

/// Weights scaled so that one cycle fits in `max_len` entries; positive weights stay >= 1.
fn scale(weights: &[u32], max_len: usize) -> Vec<u32> {
    let positive = weights.iter().filter(|&&w| w > 0).count() as u64;
    let total: u64 = weights.iter().map(|&w| u64::from(w)).sum();
    // Each scaled weight is at most floor(w * budget / total) + 1, so the sum stays within
    // budget + positive <= max_len.
    let budget = (max_len as u64).saturating_sub(positive).max(1);
    weights
        .iter()
        .map(|&w| match w {
            0 => 0,
            w => (u64::from(w) * budget / total).max(1) as u32,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(order: &[usize], n: usize) -> Vec<usize> {
        let mut counts = vec![0; n];
        for &i in order {
            counts[i] += 1;
        }
        counts
    }

    #[test]
    fn fo_takes_the_first_real_of_highest_weight() {
        assert_eq!(fo(&[1, 3, 2, 3]).entries, vec![1]);
        assert_eq!(fo(&[0, 0, 2]).entries, vec![2]);
        assert_eq!(fo(&[0, 0]).entries, Vec::<usize>::new());
        assert_eq!(fo(&[]).entries, Vec::<usize>::new());
    }

    #[test]
    fn rr_takes_each_positive_weight_once() {
        assert_eq!(rr(&[1, 0, 5, 2]).entries, vec![0, 2, 3]);
    }

    #[test]
    fn wrr_matches_ipvs_order() {
        // 3:1 — IPVS picks A, A, A, B.
        assert_eq!(wrr(&[3, 1], 1024).entries, vec![0, 0, 0, 1]);
        // 4:3:2 — IPVS: cw 4: A; 3: A B; 2: A B C; 1: A B C.
        assert_eq!(
            wrr(&[4, 3, 2], 1024).entries,
            vec![0, 0, 1, 0, 1, 2, 0, 1, 2]
        );
    }

    #[test]
    fn wrr_cycle_matches_weights_exactly() {
        for weights in [
            vec![1, 1, 1],
            vec![5, 3, 2],
            vec![100, 50, 0, 25],
            vec![7, 13, 29, 1],
            vec![6, 4],
        ] {
            let seq = wrr(&weights, 1024);
            let g = weights.iter().copied().filter(|&w| w > 0).fold(0, gcd);
            let expected: Vec<usize> = weights.iter().map(|&w| (w / g) as usize).collect();
            assert_eq!(counts(&seq.entries, weights.len()), expected, "{weights:?}");
            assert!(!seq.scaled);
        }
    }

    #[test]
    fn all_zero_weights_give_an_empty_sequence() {
        assert!(wrr(&[0, 0], 1024).entries.is_empty());
        assert!(rr(&[0]).entries.is_empty());
    }

    #[test]
    fn long_wrr_cycles_are_scaled_to_fit() {
        let weights = [1000, 999, 1];
        let seq = wrr(&weights, 1024);
        assert!(seq.scaled);
        assert!(seq.entries.len() <= 1024);
        let c = counts(&seq.entries, 3);
        assert!(c[2] >= 1);
        let ratio = c[0] as f64 / c[1] as f64;
        assert!((ratio - 1000.0 / 999.0).abs() < 0.01, "{c:?}");
    }
}
