//! BPF_PROG_TEST_RUN harness: the XDP backend with private maps and next hops from a
//! table instead of the kernel, and frames run through the loaded balancer program.

use std::{collections::HashMap, net::IpAddr, path::Path, time::Duration};

use anyhow::{Context as _, bail};
use aya::{
    Pod, TestRun as _,
    maps::{Array, HashMap as BpfHashMap, MapData},
    programs::{TestRunOptions, Xdp},
};
use lb_common::{
    ConnCounts, FlowKey, FlowState, NatOrigin, RealInfo, Settings, map_names,
    sched::{LocalityEntry, LocalityKey},
};
use lb_userspace::{
    config,
    controller::desired_state,
    dataplane::{
        ApplyReport, Dataplane,
        xdp::{XdpDataplane, XdpOptions, addr_from},
    },
    nexthop::{NextHop, NextHopError, NextHopResolver},
};

/// Loopback: exists in every namespace, so test runs can name it as the ingress interface.
pub const INGRESS: u32 = 1;

/// Next hops from a table.
pub struct StaticNextHops(pub HashMap<IpAddr, NextHop>);

impl StaticNextHops {
    /// The table of (address literal, next hop) pairs.
    pub fn of<'a>(entries: impl IntoIterator<Item = (&'a str, NextHop)>) -> Self {
        Self(
            entries
                .into_iter()
                .map(|(addr, hop)| (addr.parse().expect("address literal"), hop))
                .collect(),
        )
    }
}

impl NextHopResolver for StaticNextHops {
    fn resolve(&mut self, addrs: &[IpAddr]) -> Vec<Result<NextHop, NextHopError>> {
        addrs
            .iter()
            .map(|&addr| {
                self.0
                    .get(&addr)
                    .copied()
                    .ok_or(NextHopError::NoRoute { addr })
            })
            .collect()
    }
}

/// What one run of a frame gave.
pub struct Run {
    pub action: u32,
    pub output: Vec<u8>,
    /// The kernel's time per repetition.
    pub duration: Duration,
}

pub struct TestBalancer {
    pub dataplane: XdpDataplane<StaticNextHops>,
}

impl TestBalancer {
    /// Load the balancer with a flow table of `flow_table_size` entries. Pins this thread
    /// to CPU 0 so that per-CPU state (rr cursors) is one sequence.
    pub fn load(next_hops: StaticNextHops, flow_table_size: u32) -> anyhow::Result<Self> {
        Self::load_with(
            next_hops,
            XdpOptions {
                flow_table_size,
                ..XdpOptions::private()
            },
        )
    }

    /// Load the balancer with `options` (pinned to CPU 0 as `load`).
    pub fn load_with(next_hops: StaticNextHops, options: XdpOptions) -> anyhow::Result<Self> {
        pin_to_cpu0()?;
        let dataplane = XdpDataplane::load(&options, next_hops).context("load XDP")?;
        Ok(Self { dataplane })
    }

    /// Parse `text` as keepalived.conf and apply it; every real must resolve.
    pub fn apply_config(&mut self, text: &str) -> anyhow::Result<ApplyReport> {
        let loaded = config::parse(text, Path::new("test.conf")).context("config")?;
        let report = self.dataplane.apply(&desired_state(&loaded.config))?;
        if !report.unresolved.is_empty() {
            bail!("unresolved reals: {:?}", report.unresolved);
        }
        Ok(report)
    }

    /// The real a frame went to (the last byte of its new destination MAC, which the
    /// tests' next hops make the real's number), or `None` if it went to the kernel.
    pub fn real_of(&self, frame: &[u8]) -> Option<u8> {
        let run = self.run(frame).expect("test run");
        match run.action {
            lb_common::xdp_action::XDP_TX => Some(run.output[5]),
            lb_common::xdp_action::XDP_PASS => None,
            other => panic!("action {other}"),
        }
    }

    /// Run `input` once, arriving on `INGRESS`.
    pub fn run(&self, input: &[u8]) -> anyhow::Result<Run> {
        self.run_repeat(input, 1)
    }

    /// Run `input` `repeat` times in one test run (the output is the last run's).
    pub fn run_repeat(&self, input: &[u8], repeat: u32) -> anyhow::Result<Run> {
        run_program(self.dataplane.balancer()?, input, repeat)
    }

    /// The data-plane id of every real in use: (address, port, service id) → id.
    pub fn real_ids(&mut self) -> anyhow::Result<HashMap<(IpAddr, u16, u32), u32>> {
        let reals: Array<&MapData, RealInfo> = Array::try_from(
            self.dataplane
                .ebpf_mut()
                .map(map_names::REALS)
                .context("LB_REALS")?,
        )?;
        let mut ids = HashMap::new();
        for id in 0..lb_common::MAX_REALS {
            let real = reals.get(&id, 0)?;
            if let Some(addr) = addr_from(real.addr, real.family) {
                ids.insert((addr, u16::from_be_bytes(real.port), real.service_id), id);
            }
        }
        Ok(ids)
    }

    /// The connection counts of real `id`.
    pub fn conns(&mut self, id: u32) -> anyhow::Result<ConnCounts> {
        let conns: Array<&MapData, ConnCounts> = Array::try_from(
            self.dataplane
                .ebpf_mut()
                .map(map_names::REAL_CONNS)
                .context("LB_REAL_CONNS")?,
        )?;
        Ok(conns.get(&id, 0)?)
    }

    /// Every entry of hash map `name`.
    fn hash_entries<K: Pod, V: Pod>(&mut self, name: &str) -> anyhow::Result<Vec<(K, V)>> {
        let map: BpfHashMap<&MapData, K, V> = BpfHashMap::try_from(
            self.dataplane
                .ebpf_mut()
                .map(name)
                .with_context(|| name.to_owned())?,
        )?;
        Ok(map.iter().collect::<Result<_, _>>()?)
    }

    /// Write every entry of hash map `name` again, as `change` makes it.
    fn rewrite_entries<K: Pod, V: Pod>(
        &mut self,
        name: &str,
        change: impl Fn(V) -> V,
    ) -> anyhow::Result<()> {
        let entries: Vec<(K, V)> = self.hash_entries(name)?;
        let mut map: BpfHashMap<&mut MapData, K, V> = BpfHashMap::try_from(
            self.dataplane
                .ebpf_mut()
                .map_mut(name)
                .with_context(|| name.to_owned())?,
        )?;
        for (key, value) in entries {
            map.insert(key, change(value), 0)?;
        }
        Ok(())
    }

    /// Change the data plane's `Settings` (one entry). Call after the last apply: an
    /// apply writes its own.
    fn change_settings(&mut self, change: impl FnOnce(&mut Settings)) -> anyhow::Result<()> {
        let map = self
            .dataplane
            .ebpf_mut()
            .map_mut(map_names::SETTINGS)
            .context("LB_SETTINGS")?;
        let mut settings: Array<&mut MapData, Settings> = Array::try_from(map)?;
        let mut value = settings.get(&0, 0)?;
        change(&mut value);
        settings.set(0, value, 0)?;
        Ok(())
    }

    /// Make every flow's last packet `idle` old (relative to now: see `ago`).
    pub fn age_flows(&mut self, idle: Duration) -> anyhow::Result<()> {
        let last_seen_ns = ago(idle);
        self.rewrite_entries::<FlowKey, _>(map_names::FLOWS, |state: FlowState| FlowState {
            last_seen_ns,
            ..state
        })
    }

    /// Split FullNAT's port range into `shares` CPU shares (`Settings::cpus`), whatever
    /// the machine has: test runs happen on CPU 0, which then draws `first`, `first +
    /// shares`, ... Call after the last apply (an apply writes the machine's number).
    pub fn set_port_shares(&mut self, shares: u16) -> anyhow::Result<()> {
        self.change_settings(|settings| settings.cpus = shares)
    }

    /// Make every FullNAT reservation 10 s old (past the grace in which it is never
    /// taken over).
    pub fn age_reservations(&mut self) -> anyhow::Result<()> {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: valid timespec pointer.
        unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
        let now_ms = (ts.tv_sec as u64 * 1000 + ts.tv_nsec as u64 / 1_000_000) as u32;
        self.rewrite_entries::<FlowKey, _>(map_names::NAT_REVERSE, |origin: NatOrigin| NatOrigin {
            reserved_ms: now_ms.wrapping_sub(10_000),
            ..origin
        })
    }

    /// The reply translations (`LB_NAT_REVERSE`): reply 5-tuple → what to put back.
    pub fn reply_translations(&mut self) -> anyhow::Result<Vec<(FlowKey, NatOrigin)>> {
        self.hash_entries(map_names::NAT_REVERSE)
    }

    /// lblc/lblcr's expiration (`Settings::locality_expiration_ns`). Call after the last
    /// apply (an apply writes the default).
    pub fn set_locality_expiration(&mut self, expiration: Duration) -> anyhow::Result<()> {
        self.change_settings(|settings| {
            settings.locality_expiration_ns = expiration.as_nanos() as u64;
        })
    }

    /// lblc/lblcr's remembered destinations (`LB_LOCALITY`).
    pub fn locality(&mut self) -> anyhow::Result<Vec<(LocalityKey, LocalityEntry)>> {
        self.hash_entries(map_names::LOCALITY)
    }

    /// Make every remembered destination last used `unused` ago and last changed
    /// `unchanged` ago (relative to now: see `ago`).
    pub fn age_locality(&mut self, unused: Duration, unchanged: Duration) -> anyhow::Result<()> {
        let (last_use_ns, last_change_ns) = (ago(unused), ago(unchanged));
        self.rewrite_entries::<LocalityKey, _>(map_names::LOCALITY, |entry: LocalityEntry| {
            LocalityEntry {
                last_use_ns,
                last_change_ns,
                ..entry
            }
        })
    }

    /// Preload the connection counts of real `id`.
    pub fn set_conns(&mut self, id: u32, counts: ConnCounts) -> anyhow::Result<()> {
        let mut conns: Array<&mut MapData, ConnCounts> = Array::try_from(
            self.dataplane
                .ebpf_mut()
                .map_mut(map_names::REAL_CONNS)
                .context("LB_REAL_CONNS")?,
        )?;
        conns.set(id, counts, 0)?;
        Ok(())
    }
}

/// Run XDP `program` on `input`, arriving on `INGRESS`, `repeat` times in one test run.
pub fn run_program(program: &Xdp, input: &[u8], repeat: u32) -> anyhow::Result<Run> {
    // struct xdp_md: data, data_end, data_meta, ingress_ifindex, rx_queue_index,
    // egress_ifindex.
    let ctx: Vec<u8> = [0, input.len() as u32, 0, INGRESS, 0, 0]
        .iter()
        .flat_map(|v: &u32| v.to_ne_bytes())
        .collect();
    let mut output = vec![0; input.len() + 256];
    let result = program.test_run(TestRunOptions {
        data_in: Some(input),
        data_out: Some(&mut output),
        ctx_in: Some(&ctx),
        repeat,
        ..TestRunOptions::default()
    })?;
    output.truncate(result.data_size_out as usize);
    Ok(Run {
        action: result.return_value,
        output,
        duration: result.duration,
    })
}

/// A next hop on `INGRESS` to Ethernet address `mac`, from the director's
/// (`packet::DIRECTOR_MAC`), with source address `src` and an MTU of 1500.
/// ipvsadm's OutPkts/OutBytes: `replies` translated replies (NAT, FullNAT), counted on
/// their services and on their reals, each at least as long as Ethernet, IPv4 and UDP
/// headers.
pub fn assert_replies_counted(counters: &lb_userspace::dataplane::Counters, replies: u64) {
    let out: u64 = counters
        .services
        .iter()
        .map(|s| s.traffic.out_packets)
        .sum();
    let out_reals: u64 = counters
        .services
        .iter()
        .flat_map(|s| &s.reals)
        .map(|r| r.traffic.out_packets)
        .sum();
    assert_eq!((out, out_reals), (replies, replies));
    for s in &counters.services {
        assert!(
            s.traffic.out_bytes >= 42 * s.traffic.out_packets,
            "{:?}",
            s.traffic
        );
    }
}

pub fn next_hop(mac: [u8; 6], src: Option<IpAddr>) -> NextHop {
    NextHop {
        ifindex: INGRESS,
        mac,
        src_mac: crate::packet::DIRECTOR_MAC,
        vlan: 0,
        src,
        mtu: 1500,
    }
}

/// The data plane's clock (`CLOCK_MONOTONIC_COARSE`, ns) `idle` ago. Tests age entries
/// relative to now, never to the clock's origin, so that they pass on a machine booted
/// moments earlier; an `idle` longer than the machine has been up cannot be written, and
/// says so.
pub fn ago(idle: Duration) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid timespec pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    let now = ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64;
    let idle = idle.as_nanos() as u64;
    assert!(
        now > idle,
        "the machine has been up for {now} ns, less than the {idle} ns a test ages an entry by"
    );
    now - idle
}

/// Pin the calling thread to CPU 0.
pub fn pin_to_cpu0() -> anyhow::Result<()> {
    // SAFETY: a zeroed cpu_set_t is valid; the calls only read/write it.
    let rc = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(0, &mut set);
        libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set)
    };
    if rc != 0 {
        bail!("sched_setaffinity: {}", std::io::Error::last_os_error());
    }
    Ok(())
}
