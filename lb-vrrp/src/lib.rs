//! VRRP for lbd, without I/O: `packet` encodes and decodes advertisements (VRRPv3 of
//! RFC 5798 over IPv4 and IPv6, VRRPv2 of RFC 3768 with `auth_type PASS`), checking
//! everything a receiver must check before the state machine sees them; `machine` is one
//! instance's state machine (RFC 5798 section 6), events and `now` in, commands out.

pub mod machine;
pub mod packet;
