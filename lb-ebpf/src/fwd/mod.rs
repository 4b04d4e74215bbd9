//! Forwarding modes. The walking skeleton has DR; TUN, NAT and FullNAT follow.

pub mod dr;
