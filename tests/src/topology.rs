//! The DR lab: a client, a director and real servers on one L2 segment (a bridge in a
//! namespace of its own), every host in its own namespace, nothing in the host's.
//!
//! ```text
//!   client 10.0.0.2 ─┐
//!   director 10.0.0.1 (+ VIP 10.0.0.100, as VRRP would add it) ─┤ br0 (ns <prefix>-sw)
//!   r1 10.0.0.11, r2 10.0.0.12, ... (VIP on lo, arp_ignore=1, arp_announce=2) ─┘
//! ```
//!
//! Two things make veths behave like the physical NICs the balancer is meant for:
//! - every host's `eth0` has TX checksum offload off. A veth otherwise leaves TCP/UDP
//!   checksums partial, to be finished by "hardware" that never runs; the skb carries that
//!   fact, but XDP_TX sends only the bytes, so the real would drop the frame.
//! - the director's port on the bridge runs an XDP_PASS program: frames sent with XDP_TX
//!   in native mode are dropped by a veth whose peer has no XDP program. Its link is pinned
//!   under `/sys/fs/bpf/<prefix>-links/`, so it survives `lab --keep`.

use std::{
    collections::BTreeMap,
    io::{BufRead, BufReader},
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    path::{Path, PathBuf},
    process::{Child, Stdio},
    sync::mpsc,
    time::Duration,
};

use anyhow::{Context as _, bail};
use aya::programs::{Xdp, XdpMode, links::FdLink};
use lb_common::program_names;
use lb_userspace::dataplane::xdp::{BPFFS_ROOT, XdpOptions, ensure_bpffs, load_object};

use crate::netns::{self, Netns};

pub const DIRECTOR_ADDR: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
pub const CLIENT_ADDR: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
pub const VIP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 100);
pub const HTTP_PORT: u16 = 80;
/// The UDP echo service of the reals (`echo`), balanced as a second virtual server.
pub const ECHO_PORT: u16 = 7;
const PREFIX_LEN: &str = "24";
/// The same hosts over IPv6 (every host is dual stack).
pub const DIRECTOR_ADDR6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xab, 0, 0, 0, 0, 1);
/// A second director (`Topology::add_director`), for failover.
pub const DIRECTOR2_ADDR: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 3);
pub const DIRECTOR2_ADDR6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xab, 0, 0, 0, 0, 3);
pub const CLIENT_ADDR6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xab, 0, 0, 0, 0, 2);
pub const VIP6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xab, 0, 0, 0, 0, 0x100);
pub const NAT_GATEWAY6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xac, 0, 0, 0, 0, 1);

pub fn real_addr6(index: usize) -> Ipv6Addr {
    Ipv6Addr::new(0x2001, 0xdb8, 0xab, 0, 0, 0, 0, 0x11 + index as u16)
}

pub fn nat_real_addr6(index: usize) -> Ipv6Addr {
    Ipv6Addr::new(0x2001, 0xdb8, 0xac, 0, 0, 0, 0, 0x11 + index as u16)
}

/// The VIP's HTTP address in `family`.
pub fn vip_http_in(ipv6: bool) -> SocketAddr {
    let vip: IpAddr = if ipv6 { VIP6.into() } else { VIP.into() };
    SocketAddr::new(vip, HTTP_PORT)
}

pub fn real_addr(index: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 0, 0, 11 + index as u8)
}

/// NAT: the reals' network (on the same segment, but a subnet the client has no route to)
/// and the director's address in it, the reals' gateway.
pub fn nat_real_addr(index: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 1, 0, 11 + index as u8)
}
pub const NAT_GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 1);

/// NAT with two directors (`Topology::add_director`): director `index`'s own address in
/// the reals' subnet (the gateway floats between them).
pub fn nat_director_addr(index: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 1, 0, 2 + index as u8)
}
/// FullNAT: the director's local addresses in the reals' subnet (the reals reply to them).
pub const FNAT_LOCAL_ADDR: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 250);
pub const FNAT_LOCAL_ADDR6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xac, 0, 0, 0, 0, 0x250);

/// How the reals are set up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RealSetup {
    /// DR and TUN: the VIP on `lo`, ARP for it ignored.
    Direct,
    /// NAT: in their own subnet, routed through the director.
    Nat,
    /// FullNAT: in their own subnet without any route out of it; the director has local
    /// addresses in it.
    FullNat,
}

/// Whether `ns` holds the IPv4 VIP on its `eth0` (as VRRP's master does).
pub fn holds_vip(ns: &Netns) -> bool {
    ns.ip(&["-4", "addr", "show", "dev", "eth0"])
        .is_ok_and(|out| out.contains(&format!("{VIP}/32")))
}

pub fn vip_http() -> SocketAddr {
    SocketAddr::new(VIP.into(), HTTP_PORT)
}

pub struct Real {
    pub name: String,
    pub addr: Ipv4Addr,
    pub addr6: Ipv6Addr,
    pub ns: Netns,
}

impl Real {
    /// Take tunnelled packets on the kernel's own fallback tunnel `devices` (tunl0, gre0,
    /// ip6gre0: they catch any tunnel to this host's addresses): bring them up, and turn
    /// off the reverse-path filter, which would drop the inner packets (their source, the
    /// client, is not reached through the tunnel).
    pub fn take_tunnels_on(&self, devices: &[&str]) -> anyhow::Result<()> {
        for device in devices {
            self.ns.ip(&["link", "set", device, "up"])?;
        }
        for scope in std::iter::once(&"all").chain(devices) {
            self.ns
                .sysctl(&format!("net.ipv4.conf.{scope}.rp_filter"), "0")?;
        }
        Ok(())
    }
}

pub struct Topology {
    prefix: String,
    setup: RealSetup,
    /// Server processes by the name they answer with; killed first on drop.
    servers: Vec<(String, Child)>,
    pub reals: Vec<Real>,
    pub client: Netns,
    pub director: Netns,
    pub switch: Netns,
}

impl Topology {
    /// Build the lab with `reals` real servers, after removing leftovers of `prefix`.
    pub fn create(prefix: &str, reals: usize) -> anyhow::Result<Self> {
        Self::create_with(prefix, reals, RealSetup::Direct)
    }

    /// As `create`, with the reals set up for `setup`.
    pub fn create_with(prefix: &str, reals: usize, setup: RealSetup) -> anyhow::Result<Self> {
        remove_leftovers(prefix)?;
        let scratch = scratch_dir(prefix);
        std::fs::create_dir_all(&scratch)
            .with_context(|| format!("create {}", scratch.display()))?;
        let switch = Netns::create(&format!("{prefix}-sw"))?;
        switch.ip(&["link", "add", "br0", "type", "bridge"])?;
        switch.ip(&["link", "set", "br0", "up"])?;
        let client = host(
            &switch,
            &format!("{prefix}-client"),
            "client",
            CLIENT_ADDR,
            CLIENT_ADDR6,
        )?;
        let director = host(
            &switch,
            &format!("{prefix}-dir"),
            "dir",
            DIRECTOR_ADDR,
            DIRECTOR_ADDR6,
        )?;
        director.ip(&[
            "-6",
            "addr",
            "add",
            &format!("{VIP6}/128"),
            "dev",
            "eth0",
            "nodad",
        ])?;
        // The director owns the VIP (keepalived's VRRP would add it): it answers ARP for
        // it and gets the traffic.
        director.ip(&["addr", "add", &format!("{VIP}/32"), "dev", "eth0"])?;
        if setup != RealSetup::Direct {
            // NAT: the reals' gateway; FullNAT: the local addresses the reals reply to.
            let (addr, addr6) = if setup == RealSetup::Nat {
                (NAT_GATEWAY, NAT_GATEWAY6)
            } else {
                (FNAT_LOCAL_ADDR, FNAT_LOCAL_ADDR6)
            };
            director.ip(&[
                "addr",
                "add",
                &format!("{addr}/{PREFIX_LEN}"),
                "dev",
                "eth0",
            ])?;
            director.ip(&[
                "-6",
                "addr",
                "add",
                &format!("{addr6}/64"),
                "dev",
                "eth0",
                "nodad",
            ])?;
            forward_for_reals(&director)?;
        }
        pin_pass_program(prefix, &switch, "dir")?;
        let mut topology = Self {
            prefix: prefix.to_owned(),
            setup,
            servers: Vec::new(),
            reals: Vec::new(),
            client,
            director,
            switch,
        };
        for _ in 0..reals {
            topology.add_real()?;
        }
        Ok(topology)
    }

    /// Where this run keeps its files (config, logs); removed with the topology.
    /// The prefix of this lab's namespaces and files.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    pub fn scratch_dir(&self) -> PathBuf {
        scratch_dir(&self.prefix)
    }

    /// A second director on the segment (`<prefix>-dir2`, `DIRECTOR2_ADDR`), set up as the
    /// first for XDP but without the VIP, and the VIP taken off the first: VRRP is to
    /// give it to one of them. With NAT the reals' IPv4 gateway (`NAT_GATEWAY`) moves the
    /// same way, and each director has an address of its own in the reals' subnet
    /// (`nat_director_addr`), through which it reaches them as backup; FullNAT's local
    /// addresses are each director's own, which this lab does not set up.
    pub fn add_director(&mut self) -> anyhow::Result<Netns> {
        if self.setup == RealSetup::FullNat {
            bail!("a second FullNAT director needs local addresses of its own");
        }
        let name = format!("{}-dir2", self.prefix);
        let second = host(&self.switch, &name, "dir2", DIRECTOR2_ADDR, DIRECTOR2_ADDR6)?;
        pin_pass_program(&self.prefix, &self.switch, "dir2")?;
        self.director
            .ip(&["addr", "del", &format!("{VIP}/32"), "dev", "eth0"])?;
        if self.setup == RealSetup::Nat {
            forward_for_reals(&second)?;
            // The gateway first: removing a primary address removes its secondaries.
            self.director.ip(&[
                "addr",
                "del",
                &format!("{NAT_GATEWAY}/{PREFIX_LEN}"),
                "dev",
                "eth0",
            ])?;
            for (ns, index) in [(&self.director, 0), (&second, 1)] {
                ns.ip(&[
                    "addr",
                    "add",
                    &format!("{}/{PREFIX_LEN}", nat_director_addr(index)),
                    "dev",
                    "eth0",
                ])?;
            }
        }
        Ok(second)
    }

    /// One more real server, set up for DR.
    pub fn add_real(&mut self) -> anyhow::Result<&Real> {
        let index = self.reals.len();
        let name = format!("r{}", index + 1);
        let (addr, addr6) = match self.setup {
            RealSetup::Direct => (real_addr(index), real_addr6(index)),
            RealSetup::Nat | RealSetup::FullNat => (nat_real_addr(index), nat_real_addr6(index)),
        };
        let ns = host(
            &self.switch,
            &format!("{}-{name}", self.prefix),
            &name,
            addr,
            addr6,
        )?;
        match self.setup {
            RealSetup::Direct => {
                ns.ip(&["addr", "add", &format!("{VIP}/32"), "dev", "lo"])?;
                ns.ip(&[
                    "-6",
                    "addr",
                    "add",
                    &format!("{VIP6}/128"),
                    "dev",
                    "lo",
                    "nodad",
                ])?;
                for scope in ["all", "eth0"] {
                    ns.sysctl(&format!("net.ipv4.conf.{scope}.arp_ignore"), "1")?;
                    ns.sysctl(&format!("net.ipv4.conf.{scope}.arp_announce"), "2")?;
                }
            }
            RealSetup::Nat => {
                // No route to the client but through the director.
                ns.ip(&["route", "add", "default", "via", &NAT_GATEWAY.to_string()])?;
                ns.ip(&[
                    "-6",
                    "route",
                    "add",
                    "default",
                    "via",
                    &NAT_GATEWAY6.to_string(),
                ])?;
            }
            // No route to the client at all: only the director's local addresses, which
            // are in the reals' own subnet, are reachable.
            RealSetup::FullNat => {}
        }
        self.reals.push(Real {
            name,
            addr,
            addr6,
            ns,
        });
        Ok(self.reals.last().expect("just pushed"))
    }

    /// Start an HTTP server and a UDP echo service (`ECHO_PORT`), both answering with
    /// the real's name, on every real that has none yet; `lab` is the lab binary (`lab
    /// serve`). The echo service answers on the real's addresses, and with DR and TUN on
    /// the VIPs too.
    pub fn start_http_servers(&mut self, lab: &Path) -> anyhow::Result<()> {
        for real in &self.reals {
            if self.servers.iter().any(|(name, _)| *name == real.name) {
                continue;
            }
            let mut echo: Vec<IpAddr> = vec![real.addr.into(), real.addr6.into()];
            if self.setup == RealSetup::Direct {
                echo.extend([IpAddr::from(VIP), IpAddr::from(VIP6)]);
            }
            let child = spawn_server(lab, &real.ns, &real.name, HTTP_PORT, &echo)?;
            self.servers.push((real.name.clone(), child));
        }
        Ok(())
    }

    /// `count` HTTP requests through the VIP, each on a new connection from the client:
    /// the answers per real.
    pub fn spread(&self, count: usize) -> anyhow::Result<BTreeMap<String, usize>> {
        self.client.run(move || {
            let mut answers = BTreeMap::new();
            for _ in 0..count {
                *answers.entry(crate::http::get(vip_http())?).or_insert(0) += 1;
            }
            Ok(answers)
        })
    }

    /// Stop the servers of real `name` (`start_http_servers` starts them again).
    pub fn stop_http_server(&mut self, name: &str) {
        self.servers.retain_mut(|(server, child)| {
            if server != name {
                return true;
            }
            let _ = child.kill();
            let _ = child.wait();
            false
        });
    }

    /// Start a server named `name` on `port` in the director (its own, non-VIP service).
    pub fn start_director_server(&mut self, lab: &Path, port: u16) -> anyhow::Result<()> {
        let child = spawn_server(lab, &self.director, "director", port, &[])?;
        self.servers.push(("director".into(), child));
        Ok(())
    }

    /// keepalived.conf for one DR service on VIP:80 over `reals` (name, weight).
    pub fn keepalived_conf(&self, scheduler: &str, reals: &[(&str, u32)]) -> String {
        self.keepalived_conf_with(scheduler, "DR", &[], reals)
    }

    /// As `keepalived_conf`, with another `lb_kind` and extra virtual_server keywords
    /// (such as `sh-port`).
    pub fn keepalived_conf_with(
        &self,
        scheduler: &str,
        kind: &str,
        keywords: &[&str],
        reals: &[(&str, u32)],
    ) -> String {
        self.keepalived_conf_in(false, scheduler, kind, keywords, reals)
    }

    /// As `keepalived_conf_with`, over IPv6 with `ipv6`.
    pub fn keepalived_conf_in(
        &self,
        ipv6: bool,
        scheduler: &str,
        kind: &str,
        keywords: &[&str],
        reals: &[(&str, u32)],
    ) -> String {
        let mut text = "! generated by the lab\n".to_owned();
        if kind == "FNAT" {
            text.push_str(&format!(
                "local_address_group lab_laddr {{\n    {FNAT_LOCAL_ADDR}\n    {FNAT_LOCAL_ADDR6}\n}}\n"
            ));
        }
        text.push_str(
            &self.virtual_server(ipv6, HTTP_PORT, "TCP", scheduler, kind, keywords, reals),
        );
        text
    }

    /// As `keepalived_conf_in`, plus the same service for the UDP echo (`ECHO_PORT`).
    pub fn keepalived_conf_with_echo(
        &self,
        ipv6: bool,
        scheduler: &str,
        kind: &str,
        keywords: &[&str],
        reals: &[(&str, u32)],
    ) -> String {
        let mut text = self.keepalived_conf_in(ipv6, scheduler, kind, keywords, reals);
        text.push_str(
            &self.virtual_server(ipv6, ECHO_PORT, "UDP", scheduler, kind, keywords, reals),
        );
        text
    }

    /// One `virtual_server` block on the VIP of `ipv6`'s family.
    #[allow(clippy::too_many_arguments)]
    fn virtual_server(
        &self,
        ipv6: bool,
        port: u16,
        protocol: &str,
        scheduler: &str,
        kind: &str,
        keywords: &[&str],
        reals: &[(&str, u32)],
    ) -> String {
        let vip: IpAddr = if ipv6 { VIP6.into() } else { VIP.into() };
        let mut text = format!(
            "virtual_server {vip} {port} {{\n    delay_loop 6\n    lb_algo {scheduler}\n    lb_kind {kind}\n    protocol {protocol}\n"
        );
        if kind == "FNAT" {
            text.push_str("    laddr_group_name lab_laddr\n");
        }
        for keyword in keywords {
            text.push_str(&format!("    {keyword}\n"));
        }
        for (name, weight) in reals {
            let real = self
                .reals
                .iter()
                .find(|r| r.name == *name)
                .unwrap_or_else(|| panic!("no real {name}"));
            let addr: IpAddr = if ipv6 {
                real.addr6.into()
            } else {
                real.addr.into()
            };
            text.push_str(&format!(
                "\n    real_server {addr} {port} {{\n        weight {weight}\n    }}\n"
            ));
        }
        text.push_str("}\n");
        text
    }

    /// lbd on the director's eth0 running `config` (written as keepalived.conf in the
    /// scratch directory, with lbd.log beside it), once it reports ready.
    pub fn start_lbd(&self, config: &str) -> anyhow::Result<crate::lbd::Lbd> {
        self.start_lbd_with(config, &[])
    }

    /// As `start_lbd`, with more arguments.
    pub fn start_lbd_with(&self, config: &str, args: &[&str]) -> anyhow::Result<crate::lbd::Lbd> {
        let dir = self.scratch_dir();
        let path = dir.join("keepalived.conf");
        std::fs::write(&path, config)?;
        crate::lbd::Lbd::start(
            &self.director,
            &path,
            "eth0",
            self.prefix(),
            &dir.join("lbd.log"),
            &[&["--flow-table-size", "65536"], args].concat(),
        )
    }

    /// Leave everything running (`lab --keep`): nothing of this guard is dropped, so no
    /// server is killed and no namespace deleted.
    pub fn keep(self) {
        std::mem::forget(self);
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        for (_, child) in &mut self.servers {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(links_dir(&self.prefix));
        let _ = std::fs::remove_dir_all(scratch_dir(&self.prefix));
        // The namespaces drop after this, deleting the veths and the bridge.
    }
}

/// The scratch directory of a run (config, logs): `/tmp/<prefix>`.
fn scratch_dir(prefix: &str) -> PathBuf {
    PathBuf::from(format!("/tmp/{prefix}"))
}

/// Remove everything a run with `prefix` may have left: namespaces (and what runs in
/// them), pinned links, the pinned maps of an lbd named `prefix`, the scratch directory.
pub fn remove_leftovers(prefix: &str) -> anyhow::Result<()> {
    netns::remove_leftovers(&format!("{prefix}-"))?;
    for dir in [
        links_dir(prefix),
        Path::new(BPFFS_ROOT).join(prefix),
        lb_userspace::status::run_dir(prefix),
        scratch_dir(prefix),
    ] {
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("remove {}", dir.display())),
        }
    }
    Ok(())
}

fn links_dir(prefix: &str) -> PathBuf {
    Path::new(BPFFS_ROOT).join(format!("{prefix}-links"))
}

/// A host namespace `name` with `eth0` (addresses `addr` and `addr6`) plugged into the
/// bridge as `port`.
/// A NAT or FullNAT director: it forwards, and replies come back with the VIP (a local
/// address) as source after translation, leaving through the interface they came in on.
fn forward_for_reals(director: &Netns) -> anyhow::Result<()> {
    director.sysctl("net.ipv4.ip_forward", "1")?;
    director.sysctl("net.ipv6.conf.all.forwarding", "1")?;
    for scope in ["all", "eth0"] {
        director.sysctl(&format!("net.ipv4.conf.{scope}.accept_local"), "1")?;
        director.sysctl(&format!("net.ipv4.conf.{scope}.send_redirects"), "0")?;
        director.sysctl(&format!("net.ipv4.conf.{scope}.rp_filter"), "0")?;
    }
    Ok(())
}

fn host(
    switch: &Netns,
    name: &str,
    port: &str,
    addr: Ipv4Addr,
    addr6: Ipv6Addr,
) -> anyhow::Result<Netns> {
    let ns = Netns::create(name)?;
    switch.ip(&[
        "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", name,
    ])?;
    switch.ip(&["link", "set", port, "master", "br0", "up"])?;
    ns.ip(&[
        "addr",
        "add",
        &format!("{addr}/{PREFIX_LEN}"),
        "dev",
        "eth0",
    ])?;
    // No duplicate address detection: the address is usable at once.
    ns.ip(&[
        "-6",
        "addr",
        "add",
        &format!("{addr6}/64"),
        "dev",
        "eth0",
        "nodad",
    ])?;
    ns.ip(&["link", "set", "eth0", "up"])?;
    ns.exec(&["ethtool", "-K", "eth0", "tx", "off"])?;
    Ok(ns)
}

/// Attach the pass-everything program to `port` in the switch namespace and pin the link.
fn pin_pass_program(prefix: &str, switch: &Netns, port: &str) -> anyhow::Result<()> {
    ensure_bpffs()?;
    let dir = links_dir(prefix);
    std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    let pin = dir.join(port);
    let port = port.to_owned();
    switch.run(move || {
        let (mut ebpf, _) = load_object(&XdpOptions::minimal())?;
        let program: &mut Xdp = ebpf
            .program_mut(program_names::PASS)
            .context("pass program missing")?
            .try_into()?;
        program.load()?;
        let link_id = program.attach(&port, XdpMode::Driver)?;
        let link: FdLink = program.take_link(link_id)?.try_into()?;
        link.pin(&pin)
            .with_context(|| format!("pin {}", pin.display()))?;
        Ok(())
    })
}

fn spawn_server(
    lab: &Path,
    ns: &Netns,
    name: &str,
    port: u16,
    echo: &[IpAddr],
) -> anyhow::Result<Child> {
    let mut command = ns.command(lab)?;
    command.args(["serve", "--name", name, "--port", &port.to_string()]);
    if !echo.is_empty() {
        command.args(["--echo-port", &ECHO_PORT.to_string()]);
        for addr in echo {
            command.args(["--echo-addr", &addr.to_string()]);
        }
    }
    let mut child = command
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("start {} serve", lab.display()))?;
    let stdout = child.stdout.take().context("server stdout")?;
    let (ready_tx, ready_rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = ready_tx.send(line);
    });
    match ready_rx.recv_timeout(Duration::from_secs(10)) {
        Ok(line) if line.trim() == "ready" => Ok(child),
        other => {
            let _ = child.kill();
            let _ = child.wait();
            bail!("server {name} in {} did not start: {other:?}", ns.name())
        }
    }
}
