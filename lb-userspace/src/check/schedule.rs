//! One checker's state, sans IO: results in, the verdict and the time of the next check
//! out. keepalived's rules: a check runs every `delay_loop`; a failure is retried `retry`
//! times, `delay_before_retry` apart, before the checker fails, so a flap within that
//! budget changes nothing; a success clears the failures.

use std::time::Duration;

/// What a probe found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Up {
        /// A weight the check sets (MISC_CHECK with `misc_dynamic`).
        weight: Option<u32>,
    },
    Down {
        reason: String,
    },
}

/// The timing of one checker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timing {
    pub delay_loop: Duration,
    pub retry: u32,
    pub delay_before_retry: Duration,
}

/// A change of a checker's verdict.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// It passes now (after failing, or after starting down with `alpha`).
    Up { weight: Option<u32> },
    /// It fails now: the failure and its retries all failed.
    Down { reason: String },
    /// Still up, with another dynamic weight.
    Weight(u32),
}

#[derive(Clone, Debug)]
pub struct CheckerState {
    timing: Timing,
    up: bool,
    weight: Option<u32>,
    /// Failures in a row not yet turned into a verdict.
    failures: u32,
}

impl CheckerState {
    /// A checker that starts up (keepalived's default) or down (`alpha`).
    pub fn new(timing: Timing, up: bool) -> Self {
        Self {
            timing,
            up,
            weight: None,
            failures: 0,
        }
    }

    pub fn is_up(&self) -> bool {
        self.up
    }

    /// Take a probe's outcome: the verdict if it changed, and the wait until the next
    /// probe.
    pub fn record(&mut self, outcome: Outcome) -> (Option<Verdict>, Duration) {
        match outcome {
            Outcome::Up { weight } => {
                self.failures = 0;
                let verdict = if !self.up {
                    self.up = true;
                    self.weight = weight;
                    Some(Verdict::Up { weight })
                } else if weight.is_some() && weight != self.weight {
                    self.weight = weight;
                    weight.map(Verdict::Weight)
                } else {
                    None
                };
                (verdict, self.timing.delay_loop)
            }
            Outcome::Down { reason } => {
                if self.failures < self.timing.retry {
                    self.failures += 1;
                    return (None, self.timing.delay_before_retry);
                }
                self.failures = 0;
                let verdict = self.up.then(|| {
                    self.up = false;
                    Verdict::Down { reason }
                });
                (verdict, self.timing.delay_loop)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIMING: Timing = Timing {
        delay_loop: Duration::from_secs(6),
        retry: 2,
        delay_before_retry: Duration::from_secs(1),
    };

    fn down() -> Outcome {
        Outcome::Down {
            reason: "refused".into(),
        }
    }

    fn up() -> Outcome {
        Outcome::Up { weight: None }
    }

    #[test]
    fn failures_are_retried_before_the_checker_fails() {
        let mut state = CheckerState::new(TIMING, true);
        // Two retries, a second apart, then down; the next check a delay_loop later.
        assert_eq!(state.record(down()), (None, Duration::from_secs(1)));
        assert_eq!(state.record(down()), (None, Duration::from_secs(1)));
        assert_eq!(
            state.record(down()),
            (
                Some(Verdict::Down {
                    reason: "refused".into()
                }),
                Duration::from_secs(6)
            )
        );
        assert!(!state.is_up());
        // Still failing: no new verdict.
        for _ in 0..3 {
            assert_eq!(state.record(down()).0, None);
        }
        // One success brings it back.
        assert_eq!(
            state.record(up()),
            (Some(Verdict::Up { weight: None }), Duration::from_secs(6))
        );
    }

    #[test]
    fn a_flap_within_the_retry_budget_changes_nothing() {
        let mut state = CheckerState::new(TIMING, true);
        for _ in 0..5 {
            assert_eq!(state.record(down()).0, None);
            assert_eq!(state.record(down()).0, None);
            assert_eq!(state.record(up()).0, None);
        }
        assert!(state.is_up());
    }

    #[test]
    fn alpha_starts_down_until_the_first_success() {
        let mut state = CheckerState::new(TIMING, false);
        assert!(!state.is_up());
        assert_eq!(state.record(down()).0, None);
        assert_eq!(state.record(up()).0, Some(Verdict::Up { weight: None }));
    }

    #[test]
    fn dynamic_weights_are_reported_when_they_change() {
        let mut state = CheckerState::new(TIMING, true);
        let weighted = |w| Outcome::Up { weight: Some(w) };
        assert_eq!(state.record(weighted(5)).0, Some(Verdict::Weight(5)));
        assert_eq!(state.record(weighted(5)).0, None);
        assert_eq!(state.record(weighted(7)).0, Some(Verdict::Weight(7)));
    }

    #[test]
    fn retry_zero_fails_at_once() {
        let mut state = CheckerState::new(Timing { retry: 0, ..TIMING }, true);
        assert!(matches!(state.record(down()).0, Some(Verdict::Down { .. })));
    }
}
