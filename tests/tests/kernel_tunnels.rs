//! The XDP data plane's GRE tunnel against the kernel's own GRE devices: lbd (XDP) sends a
//! TUN service's packets in GRE (`lb_kind TUN type gre`), over IPv4 and IPv6, and the reals
//! take them on their kernel `gre0`/`ip6gre0` (the VIP is on their loopback), not with
//! `lbd --decap`, and answer the client directly. Needs the kernel's GRE (`ip_gre`), which the project's machines lack:
//! `cargo xtask test` runs this in the VM with Debian's kernel.

use std::path::Path;

use lb_tests::{
    http,
    lbd::Lbd,
    privilege::require_gre,
    topology::{self, DIRECTOR_ADDR, DIRECTOR_ADDR6, HTTP_PORT, Topology},
};

#[test]
fn xdp_gre_reaches_the_reals_kernel_gre_device() {
    if !require_gre("xdp_gre_reaches_the_reals_kernel_gre_device") {
        return;
    }
    let mut lab = Topology::create("lbt-xgre", 2).expect("lab");
    for real in &lab.reals {
        real.take_tunnels_on(&["gre0", "ip6gre0"]).expect("tunnels");
    }
    lab.start_http_servers(Path::new(env!("CARGO_BIN_EXE_lab")))
        .expect("servers");
    // One service per family, each to both reals through GRE.
    let service = |vip: std::net::IpAddr, source: std::net::IpAddr, ipv6: bool| {
        let reals: String = lab
            .reals
            .iter()
            .map(|r| {
                let addr: std::net::IpAddr = if ipv6 { r.addr6.into() } else { r.addr.into() };
                format!("    real_server {addr} {HTTP_PORT} {{\n    }}\n")
            })
            .collect();
        format!(
            "virtual_server {vip} {HTTP_PORT} {{\n    lb_algo rr\n    lb_kind TUN type gre\n    protocol TCP\n    tun_source {source}\n{reals}}}\n"
        )
    };
    let config = service(topology::VIP.into(), DIRECTOR_ADDR.into(), false)
        + &service(topology::VIP6.into(), DIRECTOR_ADDR6.into(), true);
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
    for ipv6 in [false, true] {
        let vip = topology::vip_http_in(ipv6);
        let answers = lab
            .client
            .run(move || {
                let mut answers = std::collections::BTreeMap::new();
                for _ in 0..20 {
                    *answers.entry(http::get(vip)?).or_insert(0) += 1;
                }
                Ok(answers)
            })
            .unwrap_or_else(|e| panic!("{vip}: {e:#}\n{}", lbd.log().join("\n")));
        eprintln!("{vip}: {answers:?}");
        for real in &lab.reals {
            assert!(
                answers.get(&real.name).is_some_and(|n: &usize| *n > 0),
                "{vip}: {answers:?}"
            );
        }
    }
}
