//! The userspace half of the load balancer: configuration (keepalived.conf), the model,
//! the controller that turns the model into the data plane's desired state, and the
//! data-plane backends. The `lbd` binary runs them.

pub mod config;
pub mod controller;
pub mod daemon;
pub mod dataplane;
pub mod model;
pub mod neighbour_events;
pub mod nexthop;
pub mod sched;
