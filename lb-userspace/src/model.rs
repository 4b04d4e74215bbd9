//! The typed configuration model: what the operator asked for, independent of the file
//! syntax it came from and of the data plane that will carry it out.

use std::{net::IpAddr, time::Duration};

use serde::Serialize;

/// Everything lbd runs from one configuration file.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Config {
    pub virtual_servers: Vec<VirtualServer>,
}

/// keepalived `virtual_server IP PORT { ... }`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct VirtualServer {
    pub addr: IpAddr,
    pub port: u16,
    pub protocol: Protocol,
    /// `lb_algo` / `lvs_sched`.
    pub scheduler: Scheduler,
    /// `lb_kind` / `lvs_method`.
    pub forward: ForwardMethod,
    /// `delay_loop`: interval between health checks.
    pub delay_loop: Duration,
    pub reals: Vec<RealServer>,
}

/// keepalived `real_server IP PORT { ... }`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RealServer {
    pub addr: IpAddr,
    pub port: u16,
    /// 0 stops new connections to this real; established ones continue.
    pub weight: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub enum Protocol {
    Tcp,
    Udp,
}

impl Protocol {
    pub const fn ip_proto(self) -> u8 {
        match self {
            Protocol::Tcp => lb_common::PROTO_TCP,
            Protocol::Udp => lb_common::PROTO_UDP,
        }
    }

    pub const fn name(self) -> &'static str {
        match self {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
        }
    }
}

/// Scheduling algorithms, with IPVS's names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Scheduler {
    /// Round robin: each real with a non-zero weight in turn.
    Rr,
    /// Weighted round robin in IPVS's order.
    Wrr,
}

impl Scheduler {
    pub const SUPPORTED: &'static str = "rr, wrr";

    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "rr" => Some(Scheduler::Rr),
            "wrr" => Some(Scheduler::Wrr),
            _ => None,
        }
    }

    pub const fn name(self) -> &'static str {
        match self {
            Scheduler::Rr => "rr",
            Scheduler::Wrr => "wrr",
        }
    }
}

/// Forwarding methods, with keepalived's `lb_kind` names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum ForwardMethod {
    /// Direct routing: MAC rewrite on the same L2 segment.
    Dr,
}

impl ForwardMethod {
    pub const SUPPORTED: &'static str = "DR";

    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "DR" => Some(ForwardMethod::Dr),
            _ => None,
        }
    }

    pub const fn name(self) -> &'static str {
        match self {
            ForwardMethod::Dr => "DR",
        }
    }
}
