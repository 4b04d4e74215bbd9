//! The XDP data plane's GRE tunnel against the kernel's own GRE device: lbd (XDP) sends a
//! TUN service's packets in GRE (`lb_kind TUN type gre`), and the reals take them on their
//! kernel `gre0` (the VIP is on their loopback), not with `lbd --decap`, and answer the
//! client directly. Needs the kernel's GRE (`ip_gre`), which the project's machines lack:
//! `cargo xtask test` runs this in the VM with Debian's kernel.

use std::path::Path;

use lb_tests::{
    lbd::Lbd,
    privilege::{IN_VM, require_root},
    topology::{self, DIRECTOR_ADDR, HTTP_PORT, Topology},
};

/// `true` if the kernel has GRE (`ip_gre` loaded); skipped with the reason otherwise,
/// except in the VM, where it fails.
fn require_gre(test: &str) -> bool {
    if !require_root(test) {
        return false;
    }
    if Path::new("/sys/module/ip_gre").exists() {
        return true;
    }
    if std::env::var_os(IN_VM).is_some() {
        panic!("{test}: the VM's kernel has no GRE (ip_gre is not loaded)");
    }
    eprintln!(
        "SKIPPED {test}: this kernel has no GRE; `cargo xtask test` runs it in a VM with Debian's kernel"
    );
    false
}

#[test]
fn xdp_gre_reaches_the_reals_kernel_gre_device() {
    if !require_gre("xdp_gre_reaches_the_reals_kernel_gre_device") {
        return;
    }
    let mut lab = Topology::create("lbt-xgre", 2).expect("lab");
    for real in &lab.reals {
        real.ns.ip(&["link", "set", "gre0", "up"]).expect("gre0");
        for scope in ["all", "gre0"] {
            real.ns
                .sysctl(&format!("net.ipv4.conf.{scope}.rp_filter"), "0")
                .expect("rp_filter");
        }
    }
    lab.start_http_servers(Path::new(env!("CARGO_BIN_EXE_lab")))
        .expect("servers");
    let reals: String = lab
        .reals
        .iter()
        .map(|r| format!("    real_server {} {HTTP_PORT} {{\n    }}\n", r.addr))
        .collect();
    let config = format!(
        "virtual_server {} {HTTP_PORT} {{\n    lb_algo rr\n    lb_kind TUN type gre\n    protocol TCP\n    tun_source {DIRECTOR_ADDR}\n{reals}}}\n",
        topology::VIP
    );
    let dir = lab.scratch_dir();
    let path = dir.join("keepalived.conf");
    std::fs::write(&path, config).expect("config");
    let lbd = Lbd::start(
        &lab.director,
        &path,
        "eth0",
        lab.prefix(),
        &dir.join("lbd.log"),
        &["--dataplane", "xdp"],
    )
    .expect("lbd on XDP");
    let answers = lab.spread(20).expect("requests through the VIP");
    eprintln!("answers: {answers:?}");
    for real in &lab.reals {
        assert!(
            answers.get(&real.name).is_some_and(|n| *n > 0),
            "{answers:?}\n{}",
            lbd.log().join("\n")
        );
    }
}
