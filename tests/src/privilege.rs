//! Privileged tests run as root. Outside CI a missing privilege skips the test with a
//! printed reason; in CI (`CI` set, as every CI system does) it fails: CI runs as root, so
//! a skip there would hide a broken suite.

/// `true` if the test may run. `false` (after printing why) if it must be skipped.
pub fn require_root(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    if std::env::var_os("CI").is_some() {
        panic!("{test}: needs root (BPF, network namespaces); CI must run as root");
    }
    eprintln!("SKIPPED {test}: needs root (BPF, network namespaces); run `sudo cargo xtask test`");
    false
}
