//! What happened to a packet: the one place that maps each outcome to an XDP action.
//!
//! `LB_OUTCOMES` is a per-CPU array of packet counters indexed by `Outcome as u32`, so every
//! pass, drop and forward is counted under a name userspace can print.

/// XDP action codes (`enum xdp_action` in the kernel UAPI).
pub mod xdp_action {
    pub const XDP_ABORTED: u32 = 0;
    pub const XDP_DROP: u32 = 1;
    pub const XDP_PASS: u32 = 2;
    pub const XDP_TX: u32 = 3;
    pub const XDP_REDIRECT: u32 = 4;

    /// The kernel's name of an action code.
    pub const fn name(action: u32) -> &'static str {
        match action {
            XDP_ABORTED => "XDP_ABORTED",
            XDP_DROP => "XDP_DROP",
            XDP_PASS => "XDP_PASS",
            XDP_TX => "XDP_TX",
            XDP_REDIRECT => "XDP_REDIRECT",
            _ => "unknown",
        }
    }
}

/// Every way a frame can leave the balancer program.
#[repr(u32)]
#[derive(Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "user", derive(Debug))]
pub enum Outcome {
    /// Rewritten and sent back out of the interface it came in on.
    ForwardedTx = 0,
    /// Rewritten and redirected to another interface.
    ForwardedRedirect,
    /// Not IPv4/IPv6 (ARP, LLDP, ...): passed to the kernel.
    NotIp,
    /// IP, but neither TCP nor UDP (ICMP, ...): passed.
    NotTcpUdp,
    /// TCP/UDP to an address/port/protocol that is not a virtual service: passed.
    NotService,
    /// Frame shorter than its Ethernet/VLAN headers: passed (the kernel drops it).
    TruncatedL2,
    /// Frame shorter than its IPv4/IPv6 header: passed.
    TruncatedL3,
    /// Frame shorter than its TCP/UDP header: passed.
    TruncatedL4,
    /// IPv4 header with a bad version or length field: passed.
    MalformedL3,
    /// IPv4 header with options (IHL > 5): not balanced, passed.
    Ipv4Options,
    /// IPv4 fragment (MF set or offset non-zero): not balanced, passed.
    Ipv4Fragment,
    /// IPv6 with an extension header before TCP/UDP: not balanced, passed.
    Ipv6ExtHeader,
    /// Service has no real that can take a new flow (all weights 0 or none resolved): dropped.
    NoReal,
    /// The chosen real or its egress interface has no data-plane entry: dropped.
    NextHopUnknown,
    /// The frame's VLAN (outer tag, or none) is not the one the real is reached on; DR keeps
    /// tags, so it would land on the wrong segment: passed.
    VlanMismatch,
    /// TUN: the packet with its outer header would exceed the egress MTU and is not
    /// answered with ICMP (IPv4 without DF, a tagged frame, an IPv6 tunnel MTU below 1280):
    /// dropped. (IPVS would fragment the outer packet of IPv4 without DF.)
    TunnelTooBig,
    /// TUN: the driver gave no room in front of the frame for the outer header: dropped.
    NoHeadroom,
    /// NAT/FullNAT: a real's reply, source rewritten to the VIP (and for FullNAT the
    /// destination to the client), handed to the kernel to route to the client (the
    /// director forwards IP, as an IPVS NAT director does).
    NatReplyToKernel,
    /// TUN: the packet would exceed the egress MTU once encapsulated (IPv4 with DF, or
    /// IPv6): the client gets ICMP "fragmentation needed" / "packet too big" with the MTU
    /// that fits, sent back out (XDP_TX).
    TunnelTooBigAnswered,
    /// FullNAT: no local address and port of the service's pool was free for a new flow
    /// (after `FNAT_PORT_TRIES` random picks): dropped, the client retries.
    FnatNoPort,
    /// An echo request to a VIP answered by the balancer (`lbd --answer-ping`), sent
    /// back out (XDP_TX).
    EchoAnswered,
    /// FullNAT: an established flow found its local address and port held by another
    /// flow (its reservation was evicted from the full reply table and taken): dropped,
    /// and the flow removed (the client's next SYN starts afresh).
    FnatPortLost,
    /// A TCP segment other than a SYN of no known connection, for a service whose
    /// scheduler is not consistent (all but sh, dh, mh): passed to the kernel, as IPVS
    /// (without `sloppy_tcp`) does.
    TcpNotSyn,
}

impl Outcome {
    /// Number of outcomes (size of `LB_OUTCOMES`).
    pub const COUNT: u32 = Outcome::TcpNotSyn as u32 + 1;

    /// Every outcome in counter order.
    pub const ALL: [Outcome; Outcome::COUNT as usize] = [
        Outcome::ForwardedTx,
        Outcome::ForwardedRedirect,
        Outcome::NotIp,
        Outcome::NotTcpUdp,
        Outcome::NotService,
        Outcome::TruncatedL2,
        Outcome::TruncatedL3,
        Outcome::TruncatedL4,
        Outcome::MalformedL3,
        Outcome::Ipv4Options,
        Outcome::Ipv4Fragment,
        Outcome::Ipv6ExtHeader,
        Outcome::NoReal,
        Outcome::NextHopUnknown,
        Outcome::VlanMismatch,
        Outcome::TunnelTooBig,
        Outcome::NoHeadroom,
        Outcome::NatReplyToKernel,
        Outcome::TunnelTooBigAnswered,
        Outcome::FnatNoPort,
        Outcome::EchoAnswered,
        Outcome::FnatPortLost,
        Outcome::TcpNotSyn,
    ];

    /// The XDP action for this outcome. This is the only place that decides it.
    #[inline(always)]
    pub const fn xdp_action(self) -> u32 {
        use xdp_action::*;
        match self {
            Outcome::ForwardedTx | Outcome::TunnelTooBigAnswered | Outcome::EchoAnswered => XDP_TX,
            Outcome::ForwardedRedirect => XDP_REDIRECT,
            Outcome::NotIp
            | Outcome::NotTcpUdp
            | Outcome::NotService
            | Outcome::TruncatedL2
            | Outcome::TruncatedL3
            | Outcome::TruncatedL4
            | Outcome::MalformedL3
            | Outcome::Ipv4Options
            | Outcome::Ipv4Fragment
            | Outcome::Ipv6ExtHeader
            | Outcome::VlanMismatch
            | Outcome::NatReplyToKernel
            | Outcome::TcpNotSyn => XDP_PASS,
            Outcome::NoReal
            | Outcome::NextHopUnknown
            | Outcome::TunnelTooBig
            | Outcome::NoHeadroom
            | Outcome::FnatNoPort
            | Outcome::FnatPortLost => XDP_DROP,
        }
    }

    /// Stable snake_case name, used by counters output and metrics.
    pub const fn name(self) -> &'static str {
        match self {
            Outcome::ForwardedTx => "forwarded_tx",
            Outcome::ForwardedRedirect => "forwarded_redirect",
            Outcome::NotIp => "not_ip",
            Outcome::NotTcpUdp => "not_tcp_udp",
            Outcome::NotService => "not_service",
            Outcome::TruncatedL2 => "truncated_l2",
            Outcome::TruncatedL3 => "truncated_l3",
            Outcome::TruncatedL4 => "truncated_l4",
            Outcome::MalformedL3 => "malformed_l3",
            Outcome::Ipv4Options => "ipv4_options",
            Outcome::Ipv4Fragment => "ipv4_fragment",
            Outcome::Ipv6ExtHeader => "ipv6_ext_header",
            Outcome::NoReal => "no_real",
            Outcome::NextHopUnknown => "next_hop_unknown",
            Outcome::VlanMismatch => "vlan_mismatch",
            Outcome::TunnelTooBig => "tunnel_too_big",
            Outcome::NoHeadroom => "no_headroom",
            Outcome::NatReplyToKernel => "nat_reply_to_kernel",
            Outcome::TunnelTooBigAnswered => "tunnel_too_big_answered",
            Outcome::FnatNoPort => "fnat_no_port",
            Outcome::EchoAnswered => "echo_answered",
            Outcome::FnatPortLost => "fnat_port_lost",
            Outcome::TcpNotSyn => "tcp_not_syn",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_lists_every_outcome_in_counter_order() {
        for (i, o) in Outcome::ALL.iter().enumerate() {
            assert_eq!(*o as usize, i, "{}", o.name());
        }
    }
}
