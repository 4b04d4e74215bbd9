//! Support for the privileged tests and the demo lab: a packet builder for BPF test-run
//! fixtures, network namespaces with Drop guards, the DR lab topology, a small HTTP
//! server and client, and a handle on a running `lbd`.

pub mod http;
pub mod lbd;
pub mod netns;
pub mod packet;
pub mod privilege;
pub mod topology;
