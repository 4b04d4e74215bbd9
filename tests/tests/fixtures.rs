//! BPF_PROG_TEST_RUN fixture table: each input frame, fed to the loaded balancer program
//! after the XDP backend applied a keepalived.conf, must produce the expected XDP action
//! and exactly the expected output bytes, and be counted under the expected outcome.
//! Needs root (BPF); see `lb_tests::privilege`.

use std::net::IpAddr;

use lb_common::{Outcome, xdp_action};
use lb_tests::{
    packet::{
        ETH_P_8021AD, ETH_P_8021Q, Frame, Network, TCP_ACK, Transport, arp_request, hex, v4, v6,
    },
    privilege::require_root,
    testrun::{INGRESS, StaticNextHops, TestBalancer},
};
use lb_userspace::{dataplane::Dataplane, nexthop::NextHop};
/// An interface other than the ingress one (frames to reals there are redirected).
const OTHER_IF: u32 = 7;
const INGRESS_MAC: [u8; 6] = [0x02, 0xd1, 0, 0, 0, 0x01];
const OTHER_IF_MAC: [u8; 6] = [0x02, 0xd1, 0, 0, 0, 0x07];

struct Real {
    addr: &'static str,
    mac: [u8; 6],
    ifindex: u32,
    /// Reached through a VLAN device with this id on `ifindex` (0: untagged).
    vlan: u16,
}

const R1: Real = real("10.0.0.1", 0x01, INGRESS);
const R2: Real = real("10.0.0.2", 0x02, INGRESS);
const R3: Real = real("10.0.0.3", 0x03, INGRESS);
const R4: Real = real("10.0.1.4", 0x04, OTHER_IF);
const R5: Real = real("10.0.0.5", 0x05, INGRESS);
const R6A: Real = real("2001:db8:1::1", 0x61, INGRESS);
const R6B: Real = real("2001:db8:1::2", 0x62, INGRESS);
const R6C: Real = real("2001:db8:1::3", 0x63, INGRESS);
const R7: Real = Real {
    vlan: 100,
    ..real("10.0.7.7", 0x07, INGRESS)
};
const ALL_REALS: [&Real; 9] = [&R1, &R2, &R3, &R4, &R5, &R6A, &R6B, &R6C, &R7];

const fn real(addr: &'static str, last: u8, ifindex: u32) -> Real {
    Real {
        addr,
        mac: [0x02, 0xaa, 0, 0, 0, last],
        ifindex,
        vlan: 0,
    }
}

const CLIENT: [u8; 4] = [198, 51, 100, 7];
const CLIENT6: &str = "2001:db8:c::7";
const VIP10: [u8; 4] = [192, 0, 2, 10];
const VIP20: [u8; 4] = [192, 0, 2, 20];
const VIP30: [u8; 4] = [192, 0, 2, 30];
const VIP40: [u8; 4] = [192, 0, 2, 40];
const VIP50: [u8; 4] = [192, 0, 2, 50];
const VIP6: &str = "2001:db8::10";

const CONFIG: &str = "
virtual_server 192.0.2.10 80 {
    lb_algo rr
    lb_kind DR
    protocol TCP
    real_server 10.0.0.1 80 {}
    real_server 10.0.0.2 80 {}
}
virtual_server 192.0.2.10 53 {
    lb_algo rr
    lb_kind DR
    protocol UDP
    real_server 10.0.0.3 53 {}
}
virtual_server 2001:db8::10 80 {
    lb_algo rr
    lb_kind DR
    protocol TCP
    real_server 2001:db8:1::1 80 {}
    real_server 2001:db8:1::2 80 {}
}
virtual_server 2001:db8::10 53 {
    lb_algo rr
    lb_kind DR
    protocol UDP
    real_server 2001:db8:1::3 53 {}
}
virtual_server 192.0.2.20 80 {
    lb_algo rr
    lb_kind DR
    protocol TCP
    real_server 10.0.1.4 80 {}
}
virtual_server 192.0.2.30 80 {
    lb_algo wrr
    lb_kind DR
    protocol TCP
    real_server 10.0.0.1 80 {
        weight 0
    }
}
virtual_server 192.0.2.40 80 {
    lb_algo wrr
    lb_kind DR
    protocol TCP
    real_server 10.0.0.1 80 {
        weight 3
    }
    real_server 10.0.0.2 80 {
        weight 1
    }
}
virtual_server 192.0.2.50 80 {
    lb_algo rr
    lb_kind DR
    protocol TCP
    real_server 10.0.7.7 80 {}
}
";

/// Next hops from the table above instead of the kernel.
fn static_next_hops() -> StaticNextHops {
    StaticNextHops(
        ALL_REALS
            .iter()
            .map(|real| {
                let src_mac = if real.ifindex == INGRESS {
                    INGRESS_MAC
                } else {
                    OTHER_IF_MAC
                };
                let next_hop = NextHop {
                    ifindex: real.ifindex,
                    mac: real.mac,
                    src_mac,
                    vlan: real.vlan,
                    mtu: 1500,
                    ..NextHop::default()
                };
                (real.addr.parse().expect("address literal"), next_hop)
            })
            .collect(),
    )
}

enum Expect {
    /// Passed (or dropped) unchanged, counted under this outcome.
    Unchanged(Outcome),
    /// Rewritten for this real and sent (XDP_TX or XDP_REDIRECT by its interface).
    To(&'static Real),
}

struct Harness {
    balancer: TestBalancer,
}

impl Harness {
    /// Load the balancer and apply `config` (the harness pins this thread to CPU 0, so the
    /// per-CPU round-robin cursors see one sequence).
    fn new(config: &str) -> Self {
        let mut harness = Self {
            balancer: TestBalancer::load(static_next_hops(), 1024).expect("load XDP"),
        };
        harness.apply(config);
        harness
    }

    fn apply(&mut self, config: &str) {
        self.balancer.apply_config(config).expect("apply");
    }

    /// Run one frame; (XDP action, output frame).
    fn run(&self, input: &[u8]) -> (u32, Vec<u8>) {
        let run = self
            .balancer
            .run(input)
            .unwrap_or_else(|e| panic!("test run failed: {e:#}"));
        (run.action, run.output)
    }

    fn outcome_count(&self, outcome: Outcome) -> u64 {
        self.balancer
            .dataplane
            .counters()
            .expect("counters")
            .outcome(outcome)
    }

    fn real_packets(&self, real: &Real) -> u64 {
        let addr: IpAddr = real.addr.parse().expect("address literal");
        self.balancer
            .dataplane
            .counters()
            .expect("counters")
            .services
            .iter()
            .flat_map(|s| &s.reals)
            .filter(|r| r.addr == addr)
            .map(|r| r.traffic.packets)
            .sum()
    }

    /// Run `input` and check action, output bytes and counters; a description of every
    /// mismatch.
    fn check(&self, input: &[u8], expect: &Expect) -> Vec<String> {
        let (outcome, action, expected_output, real) = match expect {
            Expect::Unchanged(outcome) => (*outcome, outcome.xdp_action(), input.to_vec(), None),
            Expect::To(real) => {
                let (outcome, src_mac) = if real.ifindex == INGRESS {
                    (Outcome::ForwardedTx, INGRESS_MAC)
                } else {
                    (Outcome::ForwardedRedirect, OTHER_IF_MAC)
                };
                let mut output = input.to_vec();
                output[0..6].copy_from_slice(&real.mac);
                output[6..12].copy_from_slice(&src_mac);
                (outcome, outcome.xdp_action(), output, Some(*real))
            }
        };
        let outcomes_before = self.outcome_count(outcome);
        let real_before = real.map(|r| self.real_packets(r));
        let (got_action, got_output) = self.run(input);
        let mut problems = Vec::new();
        if got_action != action {
            problems.push(format!(
                "action {} (expected {})",
                xdp_action::name(got_action),
                xdp_action::name(action)
            ));
        }
        if got_output != expected_output {
            problems.push(format!(
                "output differs:\n      got      {}\n      expected {}",
                hex(&got_output),
                hex(&expected_output)
            ));
        }
        let counted = self.outcome_count(outcome) - outcomes_before;
        if counted != 1 {
            problems.push(format!(
                "{} counted {counted} times (expected 1)",
                outcome.name()
            ));
        }
        if let (Some(real), Some(before)) = (real, real_before) {
            let counted = self.real_packets(real) - before;
            if counted != 1 {
                problems.push(format!(
                    "real {} counted {counted} packets (expected 1)",
                    real.addr
                ));
            }
        }
        problems
    }
}

fn tcp4(dst: [u8; 4], sport: u16, dport: u16) -> Frame {
    Frame::tcp(v4(CLIENT, dst), sport, dport)
}

fn ipv4_with(frag_off: u16, options: &[u8], sport: u16) -> Frame {
    Frame::tcp(
        Network::V4 {
            src: CLIENT.into(),
            dst: VIP10.into(),
            options: options.to_vec(),
            frag_off,
        },
        sport,
        80,
    )
}

fn ack(mut frame: Frame) -> Frame {
    if let Transport::Tcp { flags, .. } = &mut frame.transport {
        *flags = TCP_ACK;
    }
    frame
}

/// The table, in order: round-robin expectations depend on the flows before them.
fn table() -> Vec<(&'static str, Vec<u8>, Expect)> {
    use Expect::{To, Unchanged};
    let tcp_v4 = tcp4(VIP10, 40000, 80).bytes();
    let udp_v4 = Frame::udp(v4(CLIENT, VIP10), 5000, 53).bytes();
    let tcp_v6 = Frame::tcp(v6(CLIENT6, VIP6), 40000, 80).bytes();
    let mut ihl4 = tcp4(VIP10, 40000, 80).bytes();
    ihl4[14] = 0x44;
    let mut vlan_stub = tcp4(VIP10, 40000, 80).bytes()[..12].to_vec();
    vlan_stub.extend_from_slice(&[0x81, 0x00, 0x00]);
    vec![
        (
            "IPv4 TCP SYN to a VIP: first real (rr)",
            tcp4(VIP10, 40001, 80).bytes(),
            To(&R1),
        ),
        (
            "IPv4 TCP, a new flow: next real (rr)",
            tcp4(VIP10, 40002, 80).bytes(),
            To(&R2),
        ),
        (
            "IPv4 TCP, established flow keeps its real",
            ack(tcp4(VIP10, 40001, 80)).bytes(),
            To(&R1),
        ),
        (
            "IPv4 TCP, zero-length payload (pure ACK)",
            ack(tcp4(VIP10, 40002, 80)).with_payload(&[]).bytes(),
            To(&R2),
        ),
        (
            "IPv4 UDP to a VIP",
            Frame::udp(v4(CLIENT, VIP10), 5000, 53).bytes(),
            To(&R3),
        ),
        (
            "IPv4 UDP, zero-length payload",
            Frame::udp(v4(CLIENT, VIP10), 5001, 53)
                .with_payload(&[])
                .bytes(),
            To(&R3),
        ),
        (
            "IPv6 TCP to a VIP",
            Frame::tcp(v6(CLIENT6, VIP6), 40001, 80).bytes(),
            To(&R6A),
        ),
        (
            "IPv6 UDP to a VIP",
            Frame::udp(v6(CLIENT6, VIP6), 5000, 53).bytes(),
            To(&R6C),
        ),
        (
            "802.1Q-tagged IPv4 TCP to a real on that VLAN: tag kept",
            tcp4(VIP50, 40001, 80)
                .with_vlans(&[(ETH_P_8021Q, 100)])
                .bytes(),
            To(&R7),
        ),
        (
            "802.1ad + 802.1Q (QinQ), outer VLAN the real's: tags kept",
            tcp4(VIP50, 40002, 80)
                .with_vlans(&[(ETH_P_8021AD, 100), (ETH_P_8021Q, 200)])
                .bytes(),
            To(&R7),
        ),
        (
            "802.1Q-tagged IPv6 TCP, real untagged: passed",
            Frame::tcp(v6(CLIENT6, VIP6), 40002, 80)
                .with_vlans(&[(ETH_P_8021Q, 100)])
                .bytes(),
            Unchanged(Outcome::VlanMismatch),
        ),
        (
            "untagged frame, real on a VLAN: passed",
            tcp4(VIP50, 40003, 80).bytes(),
            Unchanged(Outcome::VlanMismatch),
        ),
        (
            "IPv4 with DF set is not a fragment",
            ipv4_with(0x4000, &[], 40004).bytes(),
            To(&R1),
        ),
        (
            "real behind another interface: XDP_REDIRECT",
            tcp4(VIP20, 40001, 80).bytes(),
            To(&R4),
        ),
        (
            "address that is no VIP: passed",
            tcp4([192, 0, 2, 99], 40001, 80).bytes(),
            Unchanged(Outcome::NotService),
        ),
        (
            "VIP, wrong port: passed",
            tcp4(VIP10, 40001, 81).bytes(),
            Unchanged(Outcome::NotService),
        ),
        (
            "VIP and port, wrong protocol: passed",
            Frame::udp(v4(CLIENT, VIP10), 40001, 80).bytes(),
            Unchanged(Outcome::NotService),
        ),
        (
            "ARP request: passed",
            arp_request(CLIENT, VIP10).bytes(),
            Unchanged(Outcome::NotIp),
        ),
        (
            "ICMP echo to a VIP: passed",
            Frame::new(
                v4(CLIENT, VIP10),
                Transport::Other {
                    proto: 1,
                    bytes: vec![8, 0, 0xf7, 0xfe, 0, 1, 0, 0],
                },
            )
            .bytes(),
            Unchanged(Outcome::NotTcpUdp),
        ),
        (
            "ICMPv6 to a VIP: passed",
            Frame::new(
                v6(CLIENT6, VIP6),
                Transport::Other {
                    proto: 58,
                    bytes: vec![128, 0, 0, 0, 0, 1, 0, 1],
                },
            )
            .bytes(),
            Unchanged(Outcome::NotTcpUdp),
        ),
        // The kernel runs XDP only on frames of at least 14 bytes (test runs refuse
        // less), so the shortest truncations are a bare Ethernet header and a cut VLAN tag.
        (
            "Ethernet header only (IPv4 type, no IP header)",
            tcp_v4[..14].to_vec(),
            Unchanged(Outcome::TruncatedL3),
        ),
        (
            "truncated 802.1Q tag",
            vlan_stub,
            Unchanged(Outcome::TruncatedL2),
        ),
        (
            "truncated IPv4 header",
            tcp_v4[..14 + 12].to_vec(),
            Unchanged(Outcome::TruncatedL3),
        ),
        (
            "truncated IPv6 header",
            tcp_v6[..14 + 30].to_vec(),
            Unchanged(Outcome::TruncatedL3),
        ),
        (
            "truncated TCP header",
            tcp_v4[..14 + 20 + 10].to_vec(),
            Unchanged(Outcome::TruncatedL4),
        ),
        (
            "truncated UDP header",
            udp_v4[..14 + 20 + 4].to_vec(),
            Unchanged(Outcome::TruncatedL4),
        ),
        (
            "IPv4 options (router alert): not balanced, passed",
            ipv4_with(0, &[0x94, 0x04, 0, 0], 40005).bytes(),
            Unchanged(Outcome::Ipv4Options),
        ),
        (
            "IPv4 first fragment (MF): passed",
            ipv4_with(0x2000, &[], 40006).bytes(),
            Unchanged(Outcome::Ipv4Fragment),
        ),
        (
            "IPv4 later fragment (offset): passed",
            ipv4_with(0x0010, &[], 40007).bytes(),
            Unchanged(Outcome::Ipv4Fragment),
        ),
        (
            "IPv6 hop-by-hop header: passed",
            Frame::tcp(
                Network::V6 {
                    src: CLIENT6.parse().expect("literal"),
                    dst: VIP6.parse().expect("literal"),
                    hop_by_hop: true,
                },
                40003,
                80,
            )
            .bytes(),
            Unchanged(Outcome::Ipv6ExtHeader),
        ),
        (
            "IPv4 IHL 4 (malformed): passed",
            ihl4,
            Unchanged(Outcome::MalformedL3),
        ),
        (
            "service whose only real has weight 0: dropped",
            tcp4(VIP30, 40001, 80).bytes(),
            Unchanged(Outcome::NoReal),
        ),
    ]
}

#[test]
fn fixture_table() {
    if !require_root("fixture_table") {
        return;
    }
    let harness = Harness::new(CONFIG);
    let table = table();
    assert!(table.len() >= 20);
    let mut failures = Vec::new();
    for (name, input, expect) in &table {
        let problems = harness.check(input, expect);
        if problems.is_empty() {
            eprintln!("ok    {name}");
        } else {
            eprintln!("FAIL  {name}");
            failures.push(format!("{name}:\n    {}", problems.join("\n    ")));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} fixtures failed:\n{}",
        failures.len(),
        table.len(),
        failures.join("\n")
    );
}

#[test]
fn wrr_new_flows_follow_ipvs_order() {
    if !require_root("wrr_new_flows_follow_ipvs_order") {
        return;
    }
    let harness = Harness::new(CONFIG);
    // Weights 3:1 — IPVS's order is A, A, A, B, then again.
    for (sport, real) in (41000..).zip([&R1, &R1, &R1, &R2, &R1, &R1, &R1, &R2]) {
        let problems = harness.check(&tcp4(VIP40, sport, 80).bytes(), &Expect::To(real));
        assert!(problems.is_empty(), "flow {sport}: {problems:?}");
    }
}

#[test]
fn established_flow_keeps_its_real_after_the_real_set_changes() {
    if !require_root("established_flow_keeps_its_real_after_the_real_set_changes") {
        return;
    }
    let mut harness = Harness::new(CONFIG);
    let flow_x = tcp4(VIP10, 42001, 80);
    let flow_y = tcp4(VIP10, 42002, 80);
    assert_eq!(
        harness.check(&flow_x.bytes(), &Expect::To(&R1)),
        Vec::<String>::new()
    );
    assert_eq!(
        harness.check(&flow_y.bytes(), &Expect::To(&R2)),
        Vec::<String>::new()
    );

    // R5 added in front, R2 removed.
    harness.apply(&CONFIG.replacen(
        "    real_server 10.0.0.1 80 {}\n    real_server 10.0.0.2 80 {}\n",
        "    real_server 10.0.0.5 80 {}\n    real_server 10.0.0.1 80 {}\n",
        1,
    ));
    for _ in 0..3 {
        assert_eq!(
            harness.check(&ack(flow_x.clone()).bytes(), &Expect::To(&R1)),
            Vec::<String>::new()
        );
        // Like IPVS with expire_nodest_conn=0: a removed real keeps its established flows.
        assert_eq!(
            harness.check(&ack(flow_y.clone()).bytes(), &Expect::To(&R2)),
            Vec::<String>::new()
        );
    }
    // New flows go round the new set, in its order, and never to the removed real.
    for (sport, real) in (42100..).zip([&R5, &R1, &R5, &R1]) {
        let problems = harness.check(&tcp4(VIP10, sport, 80).bytes(), &Expect::To(real));
        assert!(problems.is_empty(), "flow {sport}: {problems:?}");
    }
    // A new connection (SYN) reusing the 5-tuple of a flow on the removed real is
    // scheduled anew, and its flow follows; one on a configured real stays.
    for (frame, real) in [
        (flow_y.clone(), &R5),
        (ack(flow_y.clone()), &R5),
        (flow_x.clone(), &R1),
    ] {
        assert_eq!(
            harness.check(&frame.bytes(), &Expect::To(real)),
            Vec::<String>::new()
        );
    }
}
