//! Bounded polling for tests: wait for a condition, and fail with its name when it does
//! not come in time.

use std::time::{Duration, Instant};

/// Poll `done` every 20 ms until it holds; panic naming `what` after `timeout`.
pub fn wait_until(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "{what}: not within {timeout:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}
