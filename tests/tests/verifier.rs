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
    use lb_userspace::dataplane::xdp::{XdpOptions, load_object};
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
        let program: &mut aya::programs::Xdp = ebpf
            .program_mut(name)
            .unwrap_or_else(|| panic!("{name} missing"))
            .try_into()
            .expect("XDP program");
        program
            .load()
            .unwrap_or_else(|e| panic!("{name} does not load: {e}"));
    }
    let programs = ebpf.programs().count();
    assert_eq!(programs, 8, "a program of the object is not in this list");
}
