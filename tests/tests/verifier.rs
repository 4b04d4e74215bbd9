//! The balancer's cost to the kernel's verifier: the number of instructions it walks to
//! accept `lb_xdp` (the limit is 1,000,000). Printed, and kept below 900,000 so that a
//! change that nears the limit fails here, with the number, rather than as a load error
//! on a kernel that counts a little differently. Needs root.

use lb_tests::{
    privilege::require_root,
    testrun::{StaticNextHops, TestBalancer},
};

/// The kernel's limit is 1,000,000; this leaves a margin.
const BUDGET: u32 = 900_000;

#[test]
fn balancer_stays_within_the_verifier_budget() {
    if !require_root("balancer_stays_within_the_verifier_budget") {
        return;
    }
    let balancer = TestBalancer::load(StaticNextHops(Default::default()), 1024).expect("load");
    let info = balancer
        .dataplane
        .balancer()
        .expect("program")
        .info()
        .expect("info");
    let verified = info
        .verified_instruction_count()
        .expect("the kernel reports verified instructions (5.16+)");
    println!("lb_xdp: the verifier walked {verified} instructions (budget {BUDGET})");
    assert!(
        verified < BUDGET,
        "lb_xdp needs {verified} verified instructions, budget {BUDGET}"
    );
}

/// Every other program of the object (the real servers' decap, the veth helper, the
/// benchmark programs) loads too: they are not loaded by the other tests, and a program
/// the verifier refuses would only show when an operator or `cargo xtask bench` needs it.
#[test]
fn every_program_of_the_object_loads() {
    if !require_root("every_program_of_the_object_loads") {
        return;
    }
    use lb_common::program_names as names;
    use lb_userspace::dataplane::xdp::{XdpOptions, load_object, load_program};
    let (mut ebpf, _) = load_object(&XdpOptions::minimal()).expect("object");
    for name in [
        names::BALANCER,
        names::PASS,
        names::DECAP,
        names::BENCH_MACSWAP,
        names::BENCH_DROP,
        names::BENCH_GENERATOR,
        names::BENCH_BALANCER,
        names::CLOCK,
    ] {
        load_program(&mut ebpf, name).unwrap_or_else(|e| panic!("{name} does not load: {e}"));
    }
    let programs = ebpf.programs().count();
    assert_eq!(programs, 8, "a program of the object is not in this list");
}

/// A signal that comes while the kernel verifies the balancer (seconds) makes the verifier
/// give up with EAGAIN; the load tries again, as libbpf does, instead of failing lbd's
/// start (or a test) because a child exited or SIGHUP came at that moment.
#[test]
fn a_signal_during_verification_does_not_fail_the_load() {
    if !require_root("a_signal_during_verification_does_not_fail_the_load") {
        return;
    }
    extern "C" fn ignore(_: libc::c_int) {}
    // SAFETY: a handler that does nothing, installed without SA_RESTART so that the
    // signal interrupts the system call it comes in.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = ignore as *const () as usize;
        libc::sigemptyset(&mut action.sa_mask);
        assert_eq!(
            libc::sigaction(libc::SIGUSR1, &action, std::ptr::null_mut()),
            0
        );
    }
    use lb_common::program_names::BALANCER;
    use lb_userspace::dataplane::xdp::{XdpOptions, load_object, load_program};
    let (mut ebpf, _) = load_object(&XdpOptions::minimal()).expect("object");
    // SAFETY: the calling thread's own id.
    let loader = unsafe { libc::pthread_self() };
    // Seven signals 20 ms apart, while the kernel verifies (hundreds of milliseconds).
    // Each makes one system call fail at most, and each attempt makes two (aya tries again
    // with the verifier's log), so a load of five attempts gets through; one attempt
    // does not.
    let signaller = std::thread::spawn(move || {
        for _ in 0..7 {
            std::thread::sleep(std::time::Duration::from_millis(20));
            // SAFETY: `loader` is alive: it joins this thread after its load.
            unsafe { libc::pthread_kill(loader, libc::SIGUSR1) };
        }
    });
    let loaded = load_program(&mut ebpf, BALANCER);
    signaller.join().expect("signaller");
    loaded.expect("the load survives signals during verification");
}
