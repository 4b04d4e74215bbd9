//! Support for the privileged tests and the demo lab: a packet builder for BPF test-run
//! fixtures and a harness to run them, network namespaces with Drop guards, the DR lab topology, a small HTTP
//! server and client, a UDP echo service, and a handle on a running `lbd`.

pub mod adverts;
pub mod check_bench;
pub mod control_plane_bench;
pub mod echo;
pub mod failover_bench;
pub mod http;
pub mod katran_bench;
pub mod keepalived;
pub mod lbd;
pub mod netns;
pub mod packet;
pub mod privilege;
pub mod side_by_side;
pub mod smtp;
pub mod socket_bench;
pub mod sync_bench;
pub mod testrun;
pub mod topology;
pub mod traffic;
pub mod wait;
