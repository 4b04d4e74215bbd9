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

/// Set by `cargo xtask test` for the tests it runs in the VM with Debian's kernel, where
/// the kernel features these tests need (IPVS, GRE) must be present.
pub const IN_VM: &str = "LB_IN_VM";

/// `true` if the IPVS test may run: root, and a kernel with IPVS (`/proc/net/ip_vs`).
/// Without IPVS the test is skipped with the reason, except in the VM, where it fails.
/// (The project's machines have no IPVS; `cargo xtask test` runs these tests in the VM.)
pub fn require_ipvs(test: &str) -> bool {
    require_kernel(
        test,
        &["/proc/net/ip_vs"],
        "IPVS",
        "(/proc/net/ip_vs); is ip_vs loaded?",
    )
}

/// `true` if the test of the kernel's GRE devices may run: root, and `ip_gre` and
/// `ip6_gre` loaded; as `require_ipvs` otherwise.
pub fn require_gre(test: &str) -> bool {
    require_kernel(
        test,
        &["/sys/module/ip_gre", "/sys/module/ip6_gre"],
        "GRE",
        "(ip_gre or ip6_gre is not loaded)",
    )
}

/// Root, and every one of `paths`, which show that the kernel has `what` (`detail` says
/// more in the VM's failure).
fn require_kernel(test: &str, paths: &[&str], what: &str, detail: &str) -> bool {
    if !require_root(test) {
        return false;
    }
    if paths.iter().all(|path| std::path::Path::new(path).exists()) {
        return true;
    }
    if std::env::var_os(IN_VM).is_some() {
        panic!("{test}: the VM's kernel has no {what} {detail}");
    }
    eprintln!(
        "SKIPPED {test}: this kernel has no {what}; `cargo xtask test` runs it in a VM with Debian's kernel"
    );
    false
}
