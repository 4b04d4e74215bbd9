//! The userspace half of the load balancer: the controller that turns the configuration's
//! model (`config`, `model`: the lb-config crate) into the data plane's desired state, and
//! the data-plane backends, and the health checkers that change what the services carry.
//! The `lbd` binary runs them.

pub use lb_config as config;
pub use lb_config::model;

pub mod alert;
pub mod api;
pub mod calendar;
pub mod check;
pub mod controller;
pub mod daemon;
pub mod dataplane;
pub mod docs;
pub mod dump;
pub mod metrics;
pub mod neighbour_events;
pub mod nexthop;
pub mod rtnl;
pub mod sched;
pub mod sockopt;
pub mod status;
pub mod sync;
pub mod view;
pub mod vrrp;
