//! Empty library target: lets `lb-userspace` declare this crate as a build dependency, so
//! cargo rebuilds the embedded XDP object when this crate changes. The programs are in
//! the `lb-ebpf` binary (`main.rs`).
#![no_std]
