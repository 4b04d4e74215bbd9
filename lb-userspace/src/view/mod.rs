//! What lbctl prints: pure functions from data to text, golden-tested on a fixed
//! dataset (`tests/views.rs`). JSON output is the serde form of the same data.

pub mod ipvsadm;
pub mod status;
