//! Flows put into a running lbd's table the way traffic puts them there, without sending
//! packets: frames run through the XDP program lbd attached (BPF_PROG_TEST_RUN on that very
//! program, found by the interface it is attached to), one client address per flow. The
//! tests of the control plane under load and the bench fill the table with a million
//! flows, or keep it churning, this way.

use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr},
    path::Path,
};

use anyhow::{Context as _, bail};
use aya::{
    maps::{Array, Map, MapData},
    programs::{ProgramInfo, Xdp, loaded_programs},
};
use aya_obj::programs::XdpAttachType;
use lb_common::{ConnCounts, RealInfo, conn, conn::Timeouts, map_names};
use lb_userspace::dataplane::xdp::{PinnedMaps, addr_from, flows};

use crate::{
    netns::Netns,
    packet::{Frame, TCP_ACK, TCP_FIN, TCP_SYN, v4},
    testrun::run_program,
};

/// The balancer program lbd attached to an interface.
pub struct AttachedBalancer {
    program: Xdp,
}

impl AttachedBalancer {
    /// The XDP program attached to `interface` in `ns` (as `ip -d link` names it).
    pub fn of(ns: &Netns, interface: &str) -> anyhow::Result<Self> {
        let text = ns.ip(&["-j", "-d", "link", "show", "dev", interface])?;
        let json: serde_json::Value = serde_json::from_str(&text).context("ip -j link")?;
        let xdp = &json[0]["xdp"];
        let id = xdp["prog"]["id"]
            .as_u64()
            .or_else(|| xdp["attached"][0]["prog"]["id"].as_u64())
            .with_context(|| format!("no XDP program on {interface}: {text}"))?;
        let info: ProgramInfo = loaded_programs()
            .filter_map(Result::ok)
            .find(|program| u64::from(program.id()) == id)
            .with_context(|| format!("program {id} is not loaded"))?;
        let program = Xdp::from_program_info(info, "lb_xdp".into(), XdpAttachType::Interface)
            .context("open the attached program")?;
        Ok(Self { program })
    }

    /// Run `frame` through the program once; the XDP action.
    pub fn run(&self, frame: &[u8]) -> anyhow::Result<u32> {
        Ok(run_program(&self.program, frame, 1)?.action)
    }

    /// Open `count` TCP flows to `vip:port` with a SYN each, from clients `first..`
    /// (`client`). Fails unless every SYN was forwarded.
    pub fn open_flows(
        &self,
        vip: Ipv4Addr,
        port: u16,
        first: u32,
        count: u32,
    ) -> anyhow::Result<()> {
        let mut frame = Frame::tcp(v4(client(first).octets(), vip.octets()), CLIENT_PORT, port)
            .with_tcp_flags(TCP_SYN)
            .bytes();
        for n in first..first + count {
            set_ipv4_source(&mut frame, client(n));
            let action = self.run(&frame)?;
            if !forwarded(action) {
                bail!("the SYN of client {} got XDP action {action}", client(n));
            }
        }
        Ok(())
    }

    /// One connection of client `n` to `vip:port` as the director sees it in DR: SYN, then
    /// ACK (ESTABLISHED, active), then with `close` a FIN (FIN_WAIT, inactive).
    pub fn connection(&self, vip: Ipv4Addr, port: u16, n: u32, close: bool) -> anyhow::Result<()> {
        let network = v4(client(n).octets(), vip.octets());
        let flags: &[u8] = if close {
            &[TCP_SYN, TCP_ACK, TCP_FIN | TCP_ACK]
        } else {
            &[TCP_SYN, TCP_ACK]
        };
        for &flags in flags {
            let frame = Frame::tcp(network.clone(), CLIENT_PORT, port)
                .with_tcp_flags(flags)
                .bytes();
            let action = self.run(&frame)?;
            if !forwarded(action) {
                bail!(
                    "client {}: flags {flags:#x} got XDP action {action}",
                    client(n)
                );
            }
        }
        Ok(())
    }
}

/// The source port of every client.
pub const CLIENT_PORT: u16 = 40000;

/// Client `n`: 10.128.0.0 + n (a /9 holds 8 million of them).
pub fn client(n: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 128, 0, 0)) + n)
}

/// Whether an XDP action sends the frame on (XDP_TX or XDP_REDIRECT).
fn forwarded(action: u32) -> bool {
    const XDP_TX: u32 = 3;
    const XDP_REDIRECT: u32 = 4;
    action == XDP_TX || action == XDP_REDIRECT
}

/// Put `addr` as the source of the IPv4 frame `frame` (untagged), with the header checksum
/// updated; TCP's checksum is left alone (the balancer does not check it).
fn set_ipv4_source(frame: &mut [u8], addr: Ipv4Addr) {
    const IP: usize = 14;
    frame[IP + 12..IP + 16].copy_from_slice(&addr.octets());
    frame[IP + 10..IP + 12].copy_from_slice(&[0, 0]);
    let checksum = crate::packet::checksum(&frame[IP..IP + 20], 0);
    frame[IP + 10..IP + 12].copy_from_slice(&checksum.to_be_bytes());
}

/// The live flows of lbd's table pinned under `pins`, per real id: (active, inactive) by
/// IPVS's rules, flows timed out at the time of reading left out; with that time.
pub fn census(pins: &Path) -> anyhow::Result<(BTreeMap<u32, ConnCounts>, u64)> {
    let timeouts: Array<MapData, Timeouts> = Array::try_from(pinned(pins, map_names::TIMEOUTS)?)?;
    let timeouts = timeouts.get(&0, 0)?;
    let entries = flows::entries(&PinnedMaps::open(pins)?, usize::MAX)?;
    let now = monotonic_coarse_ns();
    let mut live: BTreeMap<u32, ConnCounts> = BTreeMap::new();
    for (_, state) in entries {
        if timeouts.expired(state.state, state.last_seen_ns, now) {
            continue;
        }
        let counts = live.entry(state.real_id).or_default();
        if conn::is_active(state.state) {
            counts.active += 1;
        } else {
            counts.inactive += 1;
        }
    }
    Ok((live, now))
}

/// The connection counts lbd's data plane keeps for real `id` (what lc/wlc/sed/nq read and
/// `lbctl -Ln` shows).
pub fn conn_counts(pins: &Path, id: u32) -> anyhow::Result<ConnCounts> {
    let conns: Array<MapData, ConnCounts> = Array::try_from(pinned(pins, map_names::REAL_CONNS)?)?;
    Ok(conns.get(&id, 0)?)
}

/// The id of each real in use, by address.
pub fn real_ids(pins: &Path) -> anyhow::Result<BTreeMap<IpAddr, u32>> {
    let reals: Array<MapData, RealInfo> = Array::try_from(pinned(pins, map_names::REALS)?)?;
    let mut ids = BTreeMap::new();
    for id in 0..lb_common::MAX_REALS {
        let real = reals.get(&id, 0)?;
        if let Some(addr) = addr_from(real.addr, real.family)
            && real.flags & lb_common::REAL_FLAG_RETIRED == 0
        {
            ids.insert(addr, id);
        }
    }
    Ok(ids)
}

fn pinned(pins: &Path, name: &str) -> anyhow::Result<Map> {
    let path = pins.join(name);
    MapData::from_pin(&path)
        .and_then(Map::from_map_data)
        .with_context(|| format!("open {}", path.display()))
}

/// `CLOCK_MONOTONIC_COARSE` in nanoseconds, the clock of the flows' timestamps.
pub fn monotonic_coarse_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid timespec pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}
