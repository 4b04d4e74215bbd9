//! A real server's own forwarding method (`real_server { lvs_method ... }`) in the XDP
//! data plane. Through BPF_PROG_TEST_RUN: in one DR virtual server, a DR real gets the
//! frame with only its MAC changed, a TUN real gets it inside IPIP, and a NAT real gets it
//! with its own address and port, and that real's replies are translated back. With real
//! traffic in network namespaces: a DR real and a TUN real (running `lbd --decap`) of one
//! service both answer. Needs root.

use std::path::Path;

use lb_common::xdp_action;
use lb_tests::{
    lbd::Lbd,
    packet::{DIRECTOR_MAC, Frame, TCP_ACK, TCP_SYN, v4},
    privilege::require_root,
    testrun::{StaticNextHops, TestBalancer, next_hop},
    topology::{self, DIRECTOR_ADDR, HTTP_PORT, Topology},
};

const VIP: [u8; 4] = [192, 0, 2, 70];
const TUNNEL_SRC: [u8; 4] = [10, 0, 0, 254];
const MACS: [[u8; 6]; 3] = [
    [0x02, 0xaa, 0, 0, 0, 1],
    [0x02, 0xaa, 0, 0, 0, 2],
    [0x02, 0xaa, 0, 0, 0, 3],
];

const CONFIG: &str = "
virtual_server 192.0.2.70 80 {
    lb_algo rr
    lb_kind DR
    protocol TCP
    real_server 10.0.0.1 80 {}
    real_server 10.0.0.2 80 {
        lvs_method TUN
    }
    real_server 10.0.0.3 8080 {
        lvs_method NAT
    }
}
";

fn next_hops() -> StaticNextHops {
    StaticNextHops::of([
        ("10.0.0.1", next_hop(MACS[0], Some(TUNNEL_SRC.into()))),
        ("10.0.0.2", next_hop(MACS[1], Some(TUNNEL_SRC.into()))),
        ("10.0.0.3", next_hop(MACS[2], Some(TUNNEL_SRC.into()))),
    ])
}

#[test]
fn each_real_gets_the_frame_by_its_own_method() {
    if !require_root("each_real_gets_the_frame_by_its_own_method") {
        return;
    }
    let mut balancer = TestBalancer::load(next_hops(), 1 << 12).expect("load");
    balancer.apply_config(CONFIG).expect("apply");
    let mut seen = [false; 3];
    for n in 1..=6u8 {
        let client = [198, 51, 100, n];
        let request = Frame::tcp(v4(client, VIP), 40000, 80);
        let input = request.bytes();
        let run = balancer.run(&input).expect("test run");
        assert_eq!(run.action, xdp_action::XDP_TX, "client {n}");
        let out = &run.output;
        let real = MACS
            .iter()
            .position(|mac| out[..6] == *mac)
            .unwrap_or_else(|| panic!("client {n}: to no real's MAC: {:02x?}", &out[..6]));
        seen[real] = true;
        assert_eq!(out[6..12], DIRECTOR_MAC);
        match real {
            // DR: the client's IP packet untouched.
            0 => assert_eq!(out[14..], input[14..], "DR"),
            // TUN: an IPIP header from the tunnel source to the real, then the packet.
            1 => {
                assert_eq!((out[14 + 9], &out[14 + 12..14 + 16]), (4, &TUNNEL_SRC[..]));
                assert_eq!(out[14 + 16..14 + 20], [10, 0, 0, 2]);
                assert_eq!(out[34..], input[14..], "TUN: the inner packet");
            }
            // NAT: the real's address and port.
            _ => {
                let expected = Frame {
                    dst_mac: MACS[2],
                    src_mac: DIRECTOR_MAC,
                    ..Frame::tcp(v4(client, [10, 0, 0, 3]), 40000, 8080)
                };
                assert_eq!(*out, expected.bytes(), "NAT");
                // Its reply goes back with the VIP's address and port.
                let reply = Frame {
                    dst_mac: DIRECTOR_MAC,
                    src_mac: MACS[2],
                    ..Frame::tcp(v4([10, 0, 0, 3], client), 8080, 40000)
                        .with_tcp_flags(TCP_SYN | TCP_ACK)
                };
                let run = balancer.run(&reply.bytes()).expect("test run");
                assert_eq!(run.action, xdp_action::XDP_PASS, "NAT reply");
                let want = Frame {
                    dst_mac: DIRECTOR_MAC,
                    src_mac: MACS[2],
                    ..Frame::tcp(v4(VIP, client), 80, 40000).with_tcp_flags(TCP_SYN | TCP_ACK)
                };
                assert_eq!(run.output, want.bytes(), "NAT reply");
            }
        }
    }
    assert_eq!(seen, [true; 3], "rr reaches every real");
}

#[test]
fn a_dr_real_and_a_tun_real_of_one_service_both_answer() {
    if !require_root("a_dr_real_and_a_tun_real_of_one_service_both_answer") {
        return;
    }
    let mut lab = Topology::create("lbt-mix", 2).expect("lab");
    lab.start_http_servers(Path::new(env!("CARGO_BIN_EXE_lab")))
        .expect("servers");
    // r2 strips the tunnel itself (lbd --decap), from the director's address only.
    let config = format!(
        "virtual_server {} {HTTP_PORT} {{\n    lb_algo rr\n    lb_kind DR\n    protocol TCP\n    tun_source {DIRECTOR_ADDR}\n    real_server {} {HTTP_PORT} {{\n    }}\n    real_server {} {HTTP_PORT} {{\n        lvs_method TUN\n    }}\n}}\n",
        topology::VIP,
        lab.reals[0].addr,
        lab.reals[1].addr
    );
    let dir = lab.scratch_dir();
    let path = dir.join("keepalived.conf");
    std::fs::write(&path, config).expect("config");
    let decap = Lbd::start_decap(
        &lab.reals[1].ns,
        &path,
        "eth0",
        "lbt-mix-r2",
        &dir.join("decap.log"),
    )
    .expect("decap on r2");
    let lbd = Lbd::start(
        &lab.director,
        &path,
        "eth0",
        lab.prefix(),
        &dir.join("lbd.log"),
        &[],
    )
    .expect("lbd");
    let answers = lab.spread(20).expect("requests through the VIP");
    // rr's cursor is per CPU: about half each.
    let answered = |name: &str| answers.get(name).copied().unwrap_or(0);
    assert!(
        answered("r1") > 0 && answered("r2") > 0 && answered("r1") + answered("r2") == 20,
        "{answers:?}\n{}",
        lbd.log().join("\n")
    );
    drop(decap);
}
