//! `cargo xtask bench`: packets per second through a director in a network namespace,
//! driven by an ordinary packet socket instead of live frames (which some machines' root
//! is refused: EPERM). A generator writes batches of one frame (`sendmmsg` on an
//! `AF_PACKET` socket, bypassing the qdisc) out of one end of a veth; the director's XDP
//! program on the other end forwards them (XDP_TX) back into a program that drops and
//! counts them (the veth's `xdp_drops`). Everything runs on one CPU (the veth's NAPI runs
//! on the sender's), so the rate is the generator's, the director's and the sink's cost
//! together. Next to it, measured the same way in the same run: the generator's own
//! ceiling (a director that drops every frame), and the MAC-swap program as the director.

use std::{
    mem::{size_of, zeroed},
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    time::Instant,
};

use anyhow::Context as _;
use aya::{
    Ebpf,
    programs::{Xdp, XdpMode},
};
use lb_common::program_names;
use lb_userspace::dataplane::xdp::{AttachMode, XdpOptions, load_object};
use serde::Serialize;

use crate::{netns::Netns, testrun::TestBalancer};

/// One mode's established flow through the balancer.
#[derive(Serialize)]
pub struct SocketRow {
    pub mode: &'static str,
    pub family: &'static str,
    /// Frames the director forwarded per second (median run).
    pub pps: f64,
    /// `pps` divided by the MAC-swap director's.
    pub ratio_to_swap: f64,
    /// Time per frame above the generator's ceiling (1/pps − 1/ceiling): what the
    /// director, its XDP_TX and the sink add.
    pub ns_over_generator: f64,
}

#[derive(Serialize)]
pub struct SocketReport {
    /// Frames per second the generator sends when the director only drops them: the
    /// method's ceiling.
    pub generator_pps: f64,
    /// Frames per second forwarded by the MAC-swap program as the director.
    pub macswap_pps: f64,
    /// The MAC-swap director's time per frame above the generator's ceiling.
    pub macswap_ns_over_generator: f64,
    pub rows: Vec<SocketRow>,
}

/// A benchmark flow: mode, family, its first packet (SYN) and a packet of it once
/// established (ACK).
pub struct BenchFlow {
    pub mode: &'static str,
    pub family: &'static str,
    pub first: Vec<u8>,
    pub established: Vec<u8>,
}

/// Measure in a namespace `ns_name` (replaced if left over): `packets` frames per run,
/// the median of `runs` runs, for the generator's ceiling, the MAC-swap director, and the
/// balancer (`balancer`, given the director interface's index) on each of `flows`.
pub fn measure(
    ns_name: &str,
    packets: u32,
    runs: usize,
    balancer: impl FnOnce(u32) -> anyhow::Result<TestBalancer> + Send + 'static,
    flows: Vec<BenchFlow>,
) -> anyhow::Result<SocketReport> {
    let ns = veth_netns(ns_name)?;
    ns.run(move || {
        crate::testrun::pin_to_cpu0()?;
        let generator = PacketSocket::bound_to("gen")?;
        let mut sink = Program::load(program_names::BENCH_DROP)?;
        sink.attach("gen")?;
        let rate = |frame: &[u8], interface: &str| -> anyhow::Result<f64> {
            let mut rates = Vec::with_capacity(runs);
            for _ in 0..runs {
                let before = xdp_drops(interface)?;
                let started = Instant::now();
                generator.send(frame, packets)?;
                let elapsed = started.elapsed().as_secs_f64();
                let arrived = xdp_drops(interface)? - before;
                anyhow::ensure!(
                    arrived * 10 >= u64::from(packets) * 9,
                    "{arrived} of {packets} frames arrived at {interface}"
                );
                rates.push(arrived as f64 / elapsed);
            }
            rates.sort_by(f64::total_cmp);
            Ok(rates[rates.len() / 2])
        };
        let Some(probe) = flows.first() else {
            anyhow::bail!("no benchmark flow");
        };
        // The generator's ceiling: the director drops every frame (counted on `dir`).
        let mut drop = Program::load(program_names::BENCH_DROP)?;
        drop.attach("dir")?;
        let generator_pps = rate(&probe.established, "dir")?;
        drop.detach()?;
        let mut swap = Program::load(program_names::BENCH_MACSWAP)?;
        swap.attach("dir")?;
        let macswap_pps = rate(&probe.established, "gen")?;
        swap.detach()?;

        let over = |pps: f64| 1e9 / pps - 1e9 / generator_pps;
        let mut balancer = balancer(interface_index("dir")?)?;
        balancer.dataplane.attach("dir", AttachMode::Native)?;
        let mut rows = Vec::new();
        for flow in &flows {
            generator.send(&flow.first, 1)?;
            let pps = rate(&flow.established, "gen").context(flow.mode)?;
            rows.push(SocketRow {
                mode: flow.mode,
                family: flow.family,
                pps,
                ratio_to_swap: pps / macswap_pps,
                ns_over_generator: over(pps),
            });
        }
        balancer.dataplane.detach_all()?;
        Ok(SocketReport {
            generator_pps,
            macswap_pps,
            macswap_ns_over_generator: over(macswap_pps),
            rows,
        })
    })
}

/// Namespace `name` (replaced if left over) with a veth pair up: `gen`, the generator's
/// end, and `dir`, the director's.
pub fn veth_netns(name: &str) -> anyhow::Result<Netns> {
    let ns = Netns::create(name)?;
    ns.ip(&[
        "link", "add", "name", "gen", "type", "veth", "peer", "name", "dir",
    ])?;
    ns.ip(&["link", "set", "gen", "up"])?;
    ns.ip(&["link", "set", "dir", "up"])?;
    Ok(ns)
}

/// An `AF_PACKET` raw socket that sends whole frames out of one interface.
struct PacketSocket {
    fd: OwnedFd,
}

/// Frames per `sendmmsg` call.
const BATCH: usize = 64;

impl PacketSocket {
    fn bound_to(interface: &str) -> anyhow::Result<Self> {
        // Protocol 0: the socket receives nothing, it only sends.
        // SAFETY: plain system call; the descriptor is owned below.
        let raw = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        anyhow::ensure!(
            raw >= 0,
            "AF_PACKET socket: {}",
            std::io::Error::last_os_error()
        );
        // SAFETY: a new descriptor nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let ifindex = interface_index(interface)? as i32;
        // SAFETY: a zeroed sockaddr_ll is valid; the fields set are plain integers.
        let mut address: libc::sockaddr_ll = unsafe { zeroed() };
        address.sll_family = libc::AF_PACKET as u16;
        address.sll_ifindex = ifindex;
        // SAFETY: `address` is a sockaddr_ll of the size given.
        let bound = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&raw const address).cast(),
                size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        anyhow::ensure!(
            bound == 0,
            "bind to {interface}: {}",
            std::io::Error::last_os_error()
        );
        let one: libc::c_int = 1;
        // SAFETY: an int option of the size given.
        let set = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_PACKET,
                libc::PACKET_QDISC_BYPASS,
                (&raw const one).cast(),
                size_of::<libc::c_int>() as u32,
            )
        };
        anyhow::ensure!(
            set == 0,
            "PACKET_QDISC_BYPASS: {}",
            std::io::Error::last_os_error()
        );
        Ok(Self { fd })
    }

    /// Send `count` copies of `frame`, in batches.
    fn send(&self, frame: &[u8], count: u32) -> anyhow::Result<()> {
        let mut iovecs = [libc::iovec {
            iov_base: frame.as_ptr().cast_mut().cast(),
            iov_len: frame.len(),
        }; BATCH];
        // SAFETY: zeroed mmsghdrs are valid; each is pointed at its own iovec below.
        let mut messages: [libc::mmsghdr; BATCH] = unsafe { zeroed() };
        for (message, iovec) in messages.iter_mut().zip(iovecs.iter_mut()) {
            message.msg_hdr.msg_iov = iovec;
            message.msg_hdr.msg_iovlen = 1;
        }
        let mut left = count as usize;
        while left > 0 {
            let batch = left.min(BATCH);
            // SAFETY: `messages` holds `batch` valid headers whose buffers (the frame)
            // outlive the call; the kernel only reads them.
            let sent = unsafe {
                libc::sendmmsg(self.fd.as_raw_fd(), messages.as_mut_ptr(), batch as u32, 0)
            };
            if sent < 0 {
                let error = std::io::Error::last_os_error();
                if error.raw_os_error() == Some(libc::ENOBUFS) {
                    std::thread::yield_now();
                    continue;
                }
                anyhow::bail!("sendmmsg: {error}");
            }
            left -= sent as usize;
        }
        Ok(())
    }
}

/// An XDP program of the object, loaded, attachable to one interface at a time.
struct Program {
    ebpf: Ebpf,
    name: &'static str,
    link: Option<aya::programs::xdp::XdpLinkId>,
}

/// The balancer's object with program `name` loaded (and nothing attached).
pub fn load_alone(name: &str) -> anyhow::Result<aya::Ebpf> {
    let (mut ebpf, _) = load_object(&XdpOptions::minimal())?;
    let program: &mut Xdp = ebpf
        .program_mut(name)
        .with_context(|| format!("{name} missing"))?
        .try_into()?;
    program.load()?;
    Ok(ebpf)
}

impl Program {
    fn load(name: &'static str) -> anyhow::Result<Self> {
        Ok(Self {
            ebpf: load_alone(name)?,
            name,
            link: None,
        })
    }

    fn program(&mut self) -> anyhow::Result<&mut Xdp> {
        Ok(self
            .ebpf
            .program_mut(self.name)
            .with_context(|| format!("{} missing", self.name))?
            .try_into()?)
    }

    fn attach(&mut self, interface: &str) -> anyhow::Result<()> {
        let link = self.program()?.attach(interface, XdpMode::Driver)?;
        self.link = Some(link);
        Ok(())
    }

    fn detach(&mut self) -> anyhow::Result<()> {
        if let Some(link) = self.link.take() {
            self.program()?.detach(link)?;
        }
        Ok(())
    }
}

/// Frames the XDP program on `interface` (a veth) dropped so far, from `ethtool -S`;
/// call inside the benchmark's namespace.
pub fn xdp_drops(interface: &str) -> anyhow::Result<u64> {
    let output = std::process::Command::new("ethtool")
        .args(["-S", interface])
        .output()
        .with_context(|| format!("ethtool -S {interface}"))?;
    let text = String::from_utf8_lossy(&output.stdout);
    text.lines()
        .filter_map(|line| line.trim().strip_prefix("rx_queue_"))
        .filter_map(|rest| rest.split_once("_xdp_drops:"))
        .map(|(_, n)| n.trim().parse::<u64>().context("xdp_drops value"))
        .sum()
}

/// The index of `name` in this namespace.
pub fn interface_index(name: &str) -> anyhow::Result<u32> {
    let name = std::ffi::CString::new(name)?;
    // SAFETY: a valid NUL-terminated string.
    let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
    anyhow::ensure!(index != 0, "no interface {name:?}");
    Ok(index)
}
