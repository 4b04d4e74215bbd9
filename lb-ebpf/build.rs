//! Rebuild this crate when the `bpf-linker` binary changes: cargo does not know that linking
//! the eBPF object depends on it (the same trick as aya-template).
use which::which;

fn main() {
    match which("bpf-linker") {
        Ok(path) => println!("cargo:rerun-if-changed={}", path.display()),
        Err(err) => println!("cargo:warning=bpf-linker not found ({err}); run `cargo xtask setup`"),
    }
}
