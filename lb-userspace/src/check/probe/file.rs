//! FILE_CHECK: the number in a `track_file`'s file, read at each check. With weight 0,
//! any value but 0 fails the check; otherwise the value times the weight (negated under
//! `reverse`) is added to the real's configured weight, the result kept within 0..=65535
//! (IPVS's weights), and the check passes.

use super::Outcome;

/// IPVS's largest weight.
const MAX_WEIGHT: i64 = 65_535;

pub async fn file_check(path: &str, weight: i32, reverse: bool, configured: u32) -> Outcome {
    let text = match tokio::fs::read_to_string(path).await {
        Ok(text) => text,
        Err(e) => {
            return Outcome::Down {
                reason: format!("FILE_CHECK: cannot read {path}: {e}"),
            };
        }
    };
    let Ok(value) = text.trim().parse::<i64>() else {
        return Outcome::Down {
            reason: format!("FILE_CHECK: {path} holds `{}`, not a number", text.trim()),
        };
    };
    outcome(value, weight, reverse, configured, path)
}

/// The outcome of `value` read from `path`.
fn outcome(value: i64, weight: i32, reverse: bool, configured: u32, path: &str) -> Outcome {
    let value = if reverse {
        value.saturating_neg()
    } else {
        value
    };
    if weight == 0 {
        return if value == 0 {
            Outcome::Up { weight: None }
        } else {
            Outcome::Down {
                reason: format!("FILE_CHECK: {path} holds {value}"),
            }
        };
    }
    let adjusted = i64::from(configured)
        .saturating_add(value.saturating_mul(i64::from(weight)))
        .clamp(0, MAX_WEIGHT);
    Outcome::Up {
        weight: Some(adjusted as u32),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_become_weights_or_failures() {
        let up = |w| Outcome::Up { weight: Some(w) };
        assert_eq!(outcome(3, 2, false, 10, "f"), up(16));
        assert_eq!(outcome(3, 2, true, 10, "f"), up(4));
        assert_eq!(outcome(-100, 1, false, 10, "f"), up(0));
        assert_eq!(outcome(i64::MAX, 5, false, 10, "f"), up(65_535));
        assert_eq!(outcome(i64::MIN, 5, true, 10, "f"), up(65_535));
        assert_eq!(outcome(i64::MIN, 5, false, 10, "f"), up(0));
        assert_eq!(outcome(0, 0, false, 10, "f"), Outcome::Up { weight: None });
        assert!(matches!(
            outcome(1, 0, false, 10, "f"),
            Outcome::Down { .. }
        ));
    }
}
