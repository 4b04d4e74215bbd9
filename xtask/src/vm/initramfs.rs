//! The guest's initramfs: the host's static busybox, the kernel modules the guest loads
//! before it can reach the host (with everything they depend on, in load order, resolved
//! here from `modules.dep`), `/init` (`init.sh`) and its settings.

use std::{
    collections::{HashMap, HashSet},
    fs,
    path::Path,
};

use anyhow::{Context as _, bail};

use super::{cpio::Archive, kernel::Kernel, shell_quote};

/// What the guest loads, in this order (what worked, see ENVIRONMENT.md): IPVS with its
/// schedulers, tc's ingress hook, flower and skbedit (firewall marks for the IPVS tests),
/// the tunnels (IPIP, GUE's fou, GRE), veth, macvlan, bridge, then the 9p and overlay stack for the host's root.
/// Those missing from a kernel (or built in) are skipped.
const MODULES: &[&str] = &[
    "nf_defrag_ipv4",
    "nf_defrag_ipv6",
    // libcrc32c asks the crypto API for crc32c when loaded (a soft dependency).
    "crc32c_generic",
    "libcrc32c",
    "nf_conntrack",
    "ip_vs",
    "ip_vs_rr",
    "ip_vs_wrr",
    "ip_vs_lc",
    "ip_vs_wlc",
    "ip_vs_sh",
    "ip_vs_dh",
    "ip_vs_sed",
    "ip_vs_nq",
    "ip_vs_mh",
    "sch_ingress",
    "cls_flower",
    "act_skbedit",
    "tunnel4",
    "ip_tunnel",
    "ipip",
    "fou",
    "gre",
    "ip_gre",
    "tunnel6",
    "ip6_tunnel",
    "ip6_gre",
    "veth",
    "macvlan",
    "bridge",
    "virtio_pci",
    "9pnet",
    "9pnet_virtio",
    "netfs",
    "fscache",
    "9p",
    "overlay",
];

/// Without these the guest cannot reach the host's root.
const REQUIRED: &[&str] = &["virtio_pci", "9pnet_virtio", "9p", "overlay"];

const BUSYBOX: &str = "/bin/busybox";
const INIT: &str = include_str!("init.sh");

/// The initramfs as bytes, with `extra` modules loaded after the usual ones.
pub fn build(kernel: &Kernel, extra: &[String]) -> anyhow::Result<Vec<u8>> {
    let modules = Modules::read(&kernel.modules_dir())?;
    let mut wanted: Vec<(&str, bool)> = MODULES
        .iter()
        .map(|name| (*name, REQUIRED.contains(name)))
        .collect();
    wanted.extend(extra.iter().map(|name| (name.as_str(), true)));
    let mut order = Vec::new();
    let mut absent = Vec::new();
    for (name, required) in wanted {
        let key = normalize(name);
        if modules.builtin.contains(&key) {
            continue;
        }
        if !modules.deps.contains_key(&key) {
            if required {
                bail!("kernel {} has no module {name}", kernel.release);
            }
            absent.push(name);
            continue;
        }
        modules.visit(&key, &mut order);
    }
    if !absent.is_empty() {
        eprintln!(
            "vm: not in kernel {} (skipped): {}",
            kernel.release,
            absent.join(" ")
        );
    }

    let mut archive = Archive::default();
    for dir in [
        "bin",
        "dev",
        "etc",
        "lib",
        "lib/modules",
        "modules",
        "proc",
        "sbin",
        "sys",
    ] {
        archive.dir(dir);
    }
    // The kernel opens it for init's stdin, stdout and stderr before /dev is mounted.
    archive.char_device("dev/console", 0o600, 5, 1);
    let busybox = fs::read(BUSYBOX)
        .with_context(|| format!("cannot read {BUSYBOX} (package busybox-static)"))?;
    archive.file("bin/busybox", 0o755, &busybox);
    archive.file("init", 0o755, INIT.as_bytes());
    let modules_dir = kernel.root.join("lib/modules");
    let mut conf = b"MODULES_DIR=".to_vec();
    conf.extend(shell_quote(modules_dir.as_os_str()));
    conf.push(b'\n');
    archive.file("etc/lb-vm.conf", 0o644, &conf);
    let mut list = String::new();
    for path in &order {
        let name = Path::new(path)
            .file_name()
            .context("module path")?
            .to_string_lossy();
        let file = kernel.modules_dir().join(path);
        let bytes = fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?;
        archive.file(&format!("modules/{name}"), 0o644, &bytes);
        list.push_str(&name);
        list.push('\n');
    }
    archive.file("modules/order", 0o644, list.as_bytes());
    Ok(archive.finish())
}

/// Module names use `_` and `-` alike.
fn normalize(name: &str) -> String {
    name.replace('-', "_")
}

/// `modules.dep` and `modules.builtin`, by module name.
struct Modules {
    /// Name → (path under lib/modules/<release>, paths of its dependencies).
    deps: HashMap<String, (String, Vec<String>)>,
    builtin: HashSet<String>,
}

impl Modules {
    fn read(dir: &Path) -> anyhow::Result<Self> {
        let read = |name: &str| {
            let path = dir.join(name);
            fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))
        };
        let mut deps = HashMap::new();
        for line in read("modules.dep")?.lines() {
            let Some((path, depends)) = line.split_once(':') else {
                continue;
            };
            let depends = depends.split_whitespace().map(str::to_owned).collect();
            deps.insert(name_of(path), (path.to_owned(), depends));
        }
        let builtin = read("modules.builtin")?.lines().map(name_of).collect();
        Ok(Self { deps, builtin })
    }

    /// Append `name`'s dependencies, then `name`, to `order` (each once).
    fn visit(&self, name: &str, order: &mut Vec<String>) {
        let Some((path, depends)) = self.deps.get(name) else {
            return;
        };
        if order.contains(path) {
            return;
        }
        for dependency in depends {
            self.visit(&name_of(dependency), order);
        }
        if !order.contains(path) {
            order.push(path.clone());
        }
    }
}

/// `kernel/net/netfilter/ipvs/ip_vs.ko` → `ip_vs`.
fn name_of(path: &str) -> String {
    let file = path.rsplit('/').next().unwrap_or(path);
    let stem = file.split(".ko").next().unwrap_or(file);
    normalize(stem)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dependencies_come_first() {
        let mut deps = HashMap::new();
        for (path, depends) in [
            ("k/ip_vs.ko", vec!["k/nf_conntrack.ko", "k/libcrc32c.ko"]),
            ("k/nf_conntrack.ko", vec!["k/libcrc32c.ko"]),
            ("k/libcrc32c.ko", vec![]),
        ] {
            let depends = depends.into_iter().map(str::to_owned).collect();
            deps.insert(name_of(path), (path.to_owned(), depends));
        }
        let modules = Modules {
            deps,
            builtin: HashSet::new(),
        };
        let mut order = Vec::new();
        modules.visit("ip_vs", &mut order);
        modules.visit("nf_conntrack", &mut order);
        assert_eq!(order, ["k/libcrc32c.ko", "k/nf_conntrack.ko", "k/ip_vs.ko"]);
    }

    #[test]
    fn names_from_paths() {
        assert_eq!(name_of("kernel/a/ip6_tunnel.ko"), "ip6_tunnel");
        assert_eq!(name_of("kernel/a/amd-uncore.ko.xz"), "amd_uncore");
    }
}
