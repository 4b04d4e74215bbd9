//! The XDP backend: loads the programs of `lb-ebpf`, attaches them, and keeps the maps equal
//! to the desired state.
//!
//! Maps are pinned under `/sys/fs/bpf/<instance>/` and reused on the next start, so
//! established flows survive a restart of lbd. `apply` writes each real's entry (egress
//! interface, destination and source MAC, weight) first, then the service's new scheduling
//! table into free space of the `LB_TABLES` arena, and points the service entry at it last
//! (one map update): a packet sees either the old table or the new one, never a mix (see
//! `arena`). `sweep` removes expired flows and recounts each real's connections.

mod arena;
mod counters;
mod decap;
pub mod dump;
pub mod flows;
mod keys;
mod layout;
mod local_addrs;
mod slots;

use std::{
    collections::{BTreeMap, BTreeSet, HashMap as StdHashMap},
    net::IpAddr,
    path::PathBuf,
    time::Instant,
};

use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, HashMap, MapData, MapError, PerCpuArray, PerCpuValues},
    programs::{Xdp, XdpMode, xdp::XdpLinkId},
};
use lb_common::{
    ConnCounts, FEATURE_NAT, FNAT_PORTS_DEFAULT, FWD_DR, FWD_FNAT, FWD_NAT, FWD_TUN, FlowKey,
    FlowState, LocalAddr, NatOrigin, PersistKey, PersistState, RealInfo, ServiceInfo, ServiceKey,
    Settings, TrafficStats, VipKey,
    conn::{Timeouts, is_active},
    map_names as names, mask_prefix, program_names,
};

use arena::{Arena, Region};
use counters::MapSource;
pub use counters::{PinnedMaps, read as read_counters, read_pinned as read_pinned_counters};
pub use decap::Decap;
use keys::vip_key;
pub use keys::{addr_bytes, addr_from, service_key};
pub use layout::{BPFFS_ROOT, ensure_bpffs, pin_dir};
use local_addrs::LocalAddrs;
use slots::{RealKey, Slots};

use super::{
    ApplyReport, Counters, Dataplane, DataplaneError, DesiredState, ServiceSpec, SweepReport,
};
use crate::{
    model::{ForwardMethod, TunnelType},
    nexthop::{NextHop, NextHopResolver},
    sched::{self, TableReal},
};

/// The compiled XDP programs (built by `build.rs` with aya-build).
pub static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/lb-ebpf"));

/// Create the maps (reusing pinned ones) and the programs, not yet loaded into the
/// kernel; with the warnings about replaced pins.
pub fn load_object(options: &XdpOptions) -> Result<(Ebpf, Vec<String>), DataplaneError> {
    let mut loader = EbpfLoader::new();
    loader.map_max_entries(names::FLOWS, options.flow_table_size);
    loader.map_max_entries(names::NAT_REVERSE, options.flow_table_size);
    loader.map_max_entries(names::PERSIST, options.persist_table_size);
    loader.map_max_entries(names::TABLES, options.sched_table_entries);
    // The maps are declared pinned; aya pins them even without a directory (into
    // /sys/fs/bpf). Private maps are pinned into a fresh directory that is removed right
    // after loading: the maps live on through their file descriptors.
    let private_dir = options.pin_dir.is_none().then(layout::private_pin_dir);
    let dir = options
        .pin_dir
        .as_ref()
        .or(private_dir.as_ref())
        .expect("one of them is set");
    let prepared = layout::prepare_pin_dir(dir, options);
    let loaded = prepared.as_ref().ok().map(|_| {
        loader.default_map_pin_directory(dir);
        loader.load(EBPF_OBJECT)
    });
    if let Some(private_dir) = &private_dir {
        std::fs::remove_dir_all(private_dir).map_err(|e| DataplaneError::Pins {
            path: private_dir.display().to_string(),
            reason: format!("cannot remove the private pin directory: {e}"),
        })?;
    }
    let warnings = prepared?;
    let loaded = loaded.expect("loaded when the pin directory was prepared");
    let ebpf = loaded.map_err(|source| DataplaneError::Load { source })?;
    Ok((ebpf, warnings))
}

/// A free `LB_REALS` entry.
const FREE_REAL: RealInfo = RealInfo {
    addr: [0; 16],
    ifindex: 0,
    service_id: 0,
    mac: [0; 6],
    src_mac: [0; 6],
    port: [0; 2],
    family: 0,
    flags: 0,
    vlan: 0,
    weight: 0,
    last_weight: 0,
    mtu: 0,
    fwd: 0,
    _pad: [0; 3],
    tunnel_src: [0; 16],
};

/// How to load the programs.
#[derive(Clone, Debug)]
pub struct XdpOptions {
    /// Directory for pinned maps; `None` keeps them private to this process (tests).
    pub pin_dir: Option<PathBuf>,
    /// Entries of the LRU flow table.
    pub flow_table_size: u32,
    /// Entries of `LB_TABLES`, the arena of scheduling tables.
    pub sched_table_entries: u32,
    /// Entries of `LB_PERSIST`, the persistence pins.
    pub persist_table_size: u32,
    /// FullNAT: the local ports handed out (first, last).
    pub fnat_ports: (u16, u16),
    /// Answer echo requests to VIPs in XDP (`FEATURE_ANSWER_ECHO`).
    pub answer_echo: bool,
}

impl XdpOptions {
    /// Private maps of the default sizes (tests, benchmarks).
    pub fn private() -> Self {
        Self {
            pin_dir: None,
            flow_table_size: lb_common::DEFAULT_FLOW_TABLE_SIZE,
            sched_table_entries: lb_common::DEFAULT_SCHED_TABLE_ENTRIES,
            persist_table_size: lb_common::PERSIST_TABLE_SIZE,
            fnat_ports: FNAT_PORTS_DEFAULT,
            answer_echo: false,
        }
    }

    /// Private maps at their smallest, for loading one of the other programs of the
    /// object (decap, pass, benchmark baselines) without the balancer's tables.
    pub fn minimal() -> Self {
        Self {
            flow_table_size: 1,
            sched_table_entries: 1,
            persist_table_size: 1,
            ..Self::private()
        }
    }
}

/// How to attach to an interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum AttachMode {
    /// Native (driver) mode, falling back to generic mode with a warning.
    Auto,
    /// Native (driver) mode only.
    Native,
    /// Generic (skb) mode only.
    Generic,
}

pub struct XdpDataplane<R> {
    ebpf: Ebpf,
    resolver: R,
    slots: Slots,
    arena: Arena,
    /// The timeouts last written (`None`: not yet, by this process).
    timeouts: Option<Timeouts>,
    /// The settings last written.
    settings: Option<Settings>,
    /// FullNAT local ports (`XdpOptions::fnat_ports`).
    fnat_ports: (u16, u16),
    /// `XdpOptions::answer_echo`.
    answer_echo: bool,
    /// The VIP addresses in `LB_VIPS`.
    vips: BTreeSet<IpAddr>,
    local_addrs: LocalAddrs,
    /// Per real, how far its connection counts were from the flow table at the last sweep.
    conn_drift: BTreeMap<u32, (i64, i64)>,
    /// Links of the interfaces the balancer is attached to.
    links: Vec<XdpLinkId>,
    /// Possible CPUs: the number of values of a per-CPU map slot.
    cpus: usize,
    /// Warnings from loading (stale pins replaced), for the caller to log.
    pub load_warnings: Vec<String>,
}

fn map_error(what: impl Into<String>) -> impl FnOnce(MapError) -> DataplaneError {
    let what = what.into();
    move |source| DataplaneError::Map { what, source }
}

impl<R: NextHopResolver> XdpDataplane<R> {
    /// Load the programs and maps (reusing pinned maps) and rebuild the id state from them.
    pub fn load(options: &XdpOptions, resolver: R) -> Result<Self, DataplaneError> {
        let (mut ebpf, load_warnings) = load_object(options)?;
        program_mut(&mut ebpf, program_names::BALANCER)?
            .load()
            .map_err(|source| DataplaneError::Program {
                program: program_names::BALANCER,
                source,
            })?;
        let mut slots = rebuild_slots(&ebpf)?;
        let local_addrs = rebuild_local_addrs(&ebpf)?;
        let vips = rebuild_vips(&ebpf)?;
        let mut arena = Arena::new(options.sched_table_entries);
        for slot in slots.services.values_mut() {
            let Some(info) = slot.info else { continue };
            if !arena.reserve(table_region(&info)) {
                // Overlapping or out of range: publish a new table before anything else.
                slot.info = None;
            }
        }
        let cpus = aya::util::nr_cpus().map_err(|(_, source)| DataplaneError::Cpus { source })?;
        Ok(Self {
            ebpf,
            resolver,
            slots,
            arena,
            timeouts: None,
            settings: None,
            fnat_ports: options.fnat_ports,
            answer_echo: options.answer_echo,
            vips,
            local_addrs,
            conn_drift: BTreeMap::new(),
            links: Vec::new(),
            cpus,
            load_warnings,
        })
    }

    /// Attach the balancer to `interface`. Returns whether native mode is in use; with
    /// `AttachMode::Auto` a failed native attach falls back to generic mode and the
    /// native error is returned alongside for the caller to warn about.
    pub fn attach(
        &mut self,
        interface: &str,
        mode: AttachMode,
    ) -> Result<(bool, Option<String>), DataplaneError> {
        let program = program_mut(&mut self.ebpf, program_names::BALANCER)?;
        let (link, native, fallback) = attach_program(program, interface, mode)?;
        self.links.push(link);
        Ok((native, fallback))
    }

    /// Detach from every interface (the maps stay pinned).
    pub fn detach_all(&mut self) -> Result<(), DataplaneError> {
        let program = program_mut(&mut self.ebpf, program_names::BALANCER)?;
        detach_links(program, program_names::BALANCER, &mut self.links)
    }

    /// The names of the interfaces the configured reals are reached through (where the
    /// balancer goes when no interface is named).
    pub fn egress_interfaces(&self) -> Result<Vec<String>, DataplaneError> {
        let ifindexes: BTreeSet<u32> = self
            .slots
            .entries
            .values()
            .filter(|real| real.flags & lb_common::REAL_FLAG_RETIRED == 0)
            .map(|real| real.ifindex)
            .collect();
        ifindexes
            .into_iter()
            .map(|index| {
                let mut name = [0 as libc::c_char; libc::IF_NAMESIZE];
                // SAFETY: the buffer has IF_NAMESIZE bytes, as if_indextoname requires.
                let found = unsafe { libc::if_indextoname(index, name.as_mut_ptr()) };
                if found.is_null() {
                    return Err(DataplaneError::Attach {
                        interface: format!("interface {index}"),
                        reason: format!("no name: {}", std::io::Error::last_os_error()),
                    });
                }
                // SAFETY: if_indextoname wrote a NUL-terminated name into the buffer.
                let name = unsafe { std::ffi::CStr::from_ptr(name.as_ptr()) };
                Ok(name.to_string_lossy().into_owned())
            })
            .collect()
    }

    /// The loaded balancer program (for BPF_PROG_TEST_RUN).
    pub fn balancer(&self) -> Result<&Xdp, DataplaneError> {
        program(&self.ebpf, program_names::BALANCER)
    }

    /// The loaded object, for tests and benchmarks that set map contents directly (such
    /// as preloaded connection counts) or run its other programs on the same maps.
    pub fn ebpf_mut(&mut self) -> &mut Ebpf {
        &mut self.ebpf
    }

    /// The loaded object (see `ebpf_mut`).
    pub fn ebpf(&self) -> &Ebpf {
        &self.ebpf
    }

    /// Write a real's entry if it differs from what the map holds.
    fn write_real(&mut self, id: u32, info: RealInfo) -> Result<(), DataplaneError> {
        if self.slots.entries.get(&id) == Some(&info) {
            return Ok(());
        }
        let mut reals: Array<&mut MapData, RealInfo> =
            Array::try_from(map_mut(&mut self.ebpf, names::REALS)?)
                .map_err(map_error(names::REALS))?;
        reals
            .set(id, info, 0)
            .map_err(map_error("writing a real"))?;
        self.slots.entries.insert(id, info);
        Ok(())
    }

    /// Write the `FEATURE_*` bits (with `FEATURE_ANSWER_ECHO` as loaded) and the FullNAT
    /// port range if they changed.
    fn write_settings(&mut self, features: u32) -> Result<(), DataplaneError> {
        let echo = if self.answer_echo {
            lb_common::FEATURE_ANSWER_ECHO
        } else {
            0
        };
        let settings = Settings {
            features: features | echo,
            fnat_port_min: self.fnat_ports.0,
            fnat_port_max: self.fnat_ports.1,
        };
        if self.settings != Some(settings) {
            write_single(&mut self.ebpf, names::SETTINGS, settings)?;
            self.settings = Some(settings);
        }
        Ok(())
    }

    /// The `LB_LOCAL_ADDRS` ids of a FullNAT pool, writing the entries of new addresses.
    fn local_addr_ids(&mut self, pool: &[IpAddr]) -> Result<Vec<u32>, DataplaneError> {
        let mut ids = Vec::with_capacity(pool.len());
        for &addr in pool {
            let (id, new_entry) = self.local_addrs.id(addr).ok_or(DataplaneError::Capacity {
                what: "FullNAT local addresses",
                max: lb_common::MAX_LOCAL_ADDRS,
            })?;
            if let Some(entry) = new_entry {
                write_array(&mut self.ebpf, names::LOCAL_ADDRS, id, entry)?;
            }
            ids.push(id);
        }
        Ok(ids)
    }

    /// Write the connection timeouts if they changed.
    fn write_timeouts(&mut self, timeouts: Timeouts) -> Result<(), DataplaneError> {
        if self.timeouts != Some(timeouts) {
            write_single(&mut self.ebpf, names::TIMEOUTS, timeouts)?;
            self.timeouts = Some(timeouts);
        }
        Ok(())
    }

    /// Correct the data plane's connection counts towards `recount` (from the flow table).
    /// Counts move while the table is scanned, so a difference is corrected only when it
    /// is the same at two sweeps in a row (a lasting drift: flows the LRU evicted or that
    /// expired unseen, a wrapped counter), by subtracting it from the current value; a
    /// difference that comes and goes is connections changing state during the scan.
    fn reconcile_conns(
        &mut self,
        recount: &BTreeMap<u32, ConnCounts>,
    ) -> Result<(), DataplaneError> {
        let ids: Vec<u32> = self.slots.entries.keys().copied().collect();
        self.conn_drift.retain(|id, _| ids.contains(id));
        for id in ids {
            let current = self.read_conns(id)?;
            let wanted = recount.get(&id).copied().unwrap_or_default();
            let drift = (
                i64::from(current.active as i32) - i64::from(wanted.active),
                i64::from(current.inactive as i32) - i64::from(wanted.inactive),
            );
            let lasting = self.conn_drift.get(&id) == Some(&drift);
            if drift != (0, 0) && lasting {
                let now = self.read_conns(id)?;
                let fix = |count: u32, by: i64| (i64::from(count as i32) - by).max(0) as u32;
                self.write_conns(
                    id,
                    ConnCounts {
                        active: fix(now.active, drift.0),
                        inactive: fix(now.inactive, drift.1),
                    },
                )?;
                self.conn_drift.remove(&id);
            } else {
                self.conn_drift.insert(id, drift);
            }
        }
        Ok(())
    }

    fn read_conns(&self, id: u32) -> Result<ConnCounts, DataplaneError> {
        let map = self
            .ebpf
            .map(names::REAL_CONNS)
            .ok_or_else(|| counters::missing(names::REAL_CONNS))?;
        let conns: Array<&MapData, ConnCounts> =
            Array::try_from(map).map_err(map_error(names::REAL_CONNS))?;
        conns
            .get(&id, 0)
            .map_err(map_error("reading connection counts"))
    }

    /// Set the connection counts of real `id`.
    fn write_conns(&mut self, id: u32, counts: ConnCounts) -> Result<(), DataplaneError> {
        let mut conns: Array<&mut MapData, ConnCounts> =
            Array::try_from(map_mut(&mut self.ebpf, names::REAL_CONNS)?)
                .map_err(map_error(names::REAL_CONNS))?;
        conns
            .set(id, counts, 0)
            .map_err(map_error("writing connection counts"))
    }

    /// `Dataplane::zero_counters`.
    fn zero(&mut self, service: Option<super::diff::ServiceId>) -> Result<(), DataplaneError> {
        let wanted = service.map(|id| service_key(id.addr, id.port, id.protocol));
        let service_ids: Vec<u32> = self
            .slots
            .services
            .iter()
            .filter(|(key, _)| wanted.is_none_or(|w| w == **key))
            .map(|(_, slot)| slot.id)
            .collect();
        let real_ids: Vec<u32> = self
            .slots
            .entries
            .iter()
            .filter(|(_, entry)| service_ids.contains(&entry.service_id))
            .map(|(id, _)| *id)
            .collect();
        for id in service_ids {
            self.reset_per_cpu::<TrafficStats>(names::SERVICE_STATS, id)?;
        }
        for id in real_ids {
            self.reset_per_cpu::<TrafficStats>(names::REAL_STATS, id)?;
        }
        if service.is_none() {
            for outcome in lb_common::Outcome::ALL {
                self.reset_per_cpu::<u64>(names::OUTCOMES, outcome as u32)?;
            }
        }
        Ok(())
    }

    /// Zero slot `id` of per-CPU array `map` (counters or cursor of a newly allocated id).
    fn reset_per_cpu<V: aya::Pod + Default>(
        &mut self,
        map: &'static str,
        id: u32,
    ) -> Result<(), DataplaneError> {
        let zero = PerCpuValues::try_from(vec![V::default(); self.cpus])
            .map_err(|source| DataplaneError::Cpus { source })?;
        let mut array: PerCpuArray<&mut MapData, V> =
            PerCpuArray::try_from(map_mut(&mut self.ebpf, map)?).map_err(map_error(map))?;
        array.set(id, zero, 0).map_err(map_error(map))
    }

    /// Whether service `wanted.key` already runs with this entry (apart from where its
    /// table is) and this table.
    fn is_published(&self, wanted: &DesiredService) -> bool {
        self.slots.services.get(&wanted.key).is_some_and(|slot| {
            slot.info.is_some_and(|info| {
                ServiceInfo {
                    table_offset: 0,
                    table_len: 0,
                    ..info
                } == wanted.info
            }) && slot.table.as_ref() == Some(&wanted.table)
        })
    }

    /// Write the wanted table (real ids) into free space of the arena and point the
    /// service entry at it; the old range is released after the arena's grace period.
    fn publish(&mut self, wanted: DesiredService) -> Result<(), DataplaneError> {
        if self.is_published(&wanted) {
            return Ok(());
        }
        let old = self
            .slots
            .services
            .get(&wanted.key)
            .and_then(|slot| slot.info);
        let region = self.allocate_table(wanted.table.len() as u32)?;
        let mut tables: Array<&mut MapData, u32> =
            Array::try_from(map_mut(&mut self.ebpf, names::TABLES)?)
                .map_err(map_error(names::TABLES))?;
        for (pos, &real_id) in wanted.table.iter().enumerate() {
            tables
                .set(region.offset + pos as u32, real_id, 0)
                .map_err(map_error("writing a scheduling table"))?;
        }
        // The FullNAT pool follows the scheduling table in the same range.
        let info = ServiceInfo {
            table_offset: region.offset,
            table_len: region.len - wanted.info.laddr_len,
            ..wanted.info
        };
        let mut services: HashMap<&mut MapData, ServiceKey, ServiceInfo> =
            HashMap::try_from(map_mut(&mut self.ebpf, names::SERVICES)?)
                .map_err(map_error(names::SERVICES))?;
        services
            .insert(wanted.key, info, 0)
            .map_err(map_error("writing a service"))?;
        if let Some(old) = old {
            self.arena.release(table_region(&old), Instant::now());
        }
        let slot = self
            .slots
            .services
            .get_mut(&wanted.key)
            .expect("service allocated before publish");
        slot.info = Some(info);
        slot.table = Some(wanted.table);
        Ok(())
    }

    /// Fail before anything is published if the changed tables cannot all fit in the
    /// arena, even once released ranges are free again (a partly applied configuration
    /// would mix old and new tables).
    fn check_table_room(&self, wanted: &[DesiredService]) -> Result<(), DataplaneError> {
        let needed: u64 = wanted
            .iter()
            .filter(|w| !self.is_published(w))
            .map(|w| w.table.len() as u64)
            .sum();
        if needed > self.arena.eventually_free() {
            return Err(DataplaneError::Capacity {
                what: "scheduling table entries (--sched-table-entries)",
                max: self.arena.size(),
            });
        }
        Ok(())
    }

    /// Space for a table of `len` entries, waiting for released ranges to come out of
    /// their grace period if that is what it takes.
    fn allocate_table(&mut self, len: u32) -> Result<Region, DataplaneError> {
        loop {
            let now = Instant::now();
            if let Some(region) = self.arena.allocate(len, now) {
                return Ok(region);
            }
            match self.arena.next_free_at() {
                Some(at) => std::thread::sleep(at.saturating_duration_since(now)),
                None => {
                    return Err(DataplaneError::Capacity {
                        what: "scheduling table entries (--sched-table-entries)",
                        max: self.arena.size(),
                    });
                }
            }
        }
    }

    /// Remove service `key` and free its reals: without the service no packet uses them.
    fn remove_service(&mut self, key: ServiceKey) -> Result<(), DataplaneError> {
        let mut services: HashMap<&mut MapData, ServiceKey, ServiceInfo> =
            HashMap::try_from(map_mut(&mut self.ebpf, names::SERVICES)?)
                .map_err(map_error(names::SERVICES))?;
        removed(services.remove(&key)).map_err(map_error("removing a service"))?;
        let Some(slot) = self.slots.services.remove(&key) else {
            return Ok(());
        };
        if let Some(info) = slot.info {
            self.arena.release(table_region(&info), Instant::now());
        }
        let mut reals: Array<&mut MapData, RealInfo> =
            Array::try_from(map_mut(&mut self.ebpf, names::REALS)?)
                .map_err(map_error(names::REALS))?;
        for id in self.slots.release_service(slot.id) {
            reals
                .set(id, FREE_REAL, 0)
                .map_err(map_error("freeing a real"))?;
        }
        Ok(())
    }

    /// The next hop of every real address in `services`, each asked for once.
    fn resolve_all(
        &mut self,
        services: &[ServiceSpec],
    ) -> StdHashMap<IpAddr, Result<NextHop, String>> {
        let mut addrs: Vec<IpAddr> = services
            .iter()
            .flat_map(|spec| spec.reals.iter().map(|real| real.addr))
            .collect();
        addrs.sort();
        addrs.dedup();
        let results = self.resolver.resolve(&addrs);
        addrs
            .into_iter()
            .zip(results.into_iter().map(|r| r.map_err(|e| e.to_string())))
            .collect()
    }
}

impl<R: NextHopResolver> Dataplane for XdpDataplane<R> {
    fn apply(&mut self, desired: &DesiredState) -> Result<ApplyReport, DataplaneError> {
        let services = &desired.services;
        // Refused before anything changes: marks are set after XDP has run.
        if let Some(mark) = services.iter().find_map(|spec| spec.fwmark) {
            return Err(DataplaneError::FirewallMark {
                backend: "XDP",
                mark,
            });
        }
        if let Some(spec) = services
            .iter()
            .find(|spec| spec.forward == ForwardMethod::Tun && spec.tunnel != TunnelType::Ipip)
        {
            return Err(DataplaneError::TunnelType {
                backend: "XDP",
                tunnel: spec.tunnel.keepalived_words(),
            });
        }
        self.write_timeouts(desired.timeouts)?;
        let mut report = ApplyReport::default();
        let next_hops = self.resolve_all(services);
        let mut wanted_services = BTreeSet::new();
        let mut wanted_reals = BTreeSet::new();
        let mut wanted_local_addrs = BTreeSet::new();
        let mut tables = Vec::new();

        for spec in services {
            let key = service_key(spec.addr, spec.port, spec.protocol);
            wanted_services.insert(key);
            let (service_id, new) = self.slots.service(key)?;
            if new {
                self.reset_per_cpu::<TrafficStats>(names::SERVICE_STATS, service_id)?;
                self.reset_per_cpu::<u32>(names::RR_CURSORS, service_id)?;
            }
            // Real ids and what the table is built from, for the reals with a next hop.
            let mut members = Vec::new();
            let mut table_reals = Vec::new();
            for real in &spec.reals {
                let (addr, family) = addr_bytes(real.addr);
                let fwd = match spec.forward {
                    ForwardMethod::Dr => FWD_DR,
                    ForwardMethod::Tun => FWD_TUN,
                    ForwardMethod::Nat => FWD_NAT,
                    ForwardMethod::FullNat => FWD_FNAT,
                };
                let real_key = RealKey {
                    service_id,
                    addr,
                    port: real.port.to_be_bytes(),
                    family,
                    fwd,
                };
                wanted_reals.insert(real_key);
                let weight = real.weight.min(u32::from(u16::MAX));
                let tunnel_src = match (spec.forward, &next_hops[&real.addr]) {
                    (ForwardMethod::Tun, Ok(next_hop)) => {
                        let configured = spec
                            .tun_sources
                            .iter()
                            .find(|s| s.is_ipv4() == real.addr.is_ipv4());
                        match configured.copied().or(next_hop.src) {
                            Some(src) if src.is_ipv4() == real.addr.is_ipv4() => {
                                Ok(addr_bytes(src).0)
                            }
                            _ => Err(format!(
                                "no local address of its family towards {} for the tunnel (set tun_source)",
                                real.addr
                            )),
                        }
                    }
                    _ => Ok([0; 16]),
                };
                let next_hop = match (&next_hops[&real.addr], tunnel_src.as_ref()) {
                    (Ok(next_hop), Ok(_)) => *next_hop,
                    (Err(reason), _) | (_, Err(reason)) => {
                        // Any existing entry stays as it is: its established flows go on.
                        if !report.unresolved.iter().any(|(a, _)| *a == real.addr) {
                            report.unresolved.push((real.addr, reason.clone()));
                        }
                        continue;
                    }
                };
                let (real_id, new) = self.slots.real(real_key)?;
                if new {
                    self.reset_per_cpu::<TrafficStats>(names::REAL_STATS, real_id)?;
                    self.write_conns(real_id, ConnCounts::default())?;
                }
                let last_weight = match (weight, self.slots.entries.get(&real_id)) {
                    (0, Some(entry)) if !new => u32::from(entry.last_weight),
                    _ => weight,
                };
                self.write_real(
                    real_id,
                    RealInfo {
                        addr,
                        ifindex: next_hop.ifindex,
                        service_id,
                        mac: next_hop.mac,
                        src_mac: next_hop.src_mac,
                        port: real_key.port,
                        family,
                        flags: 0,
                        vlan: next_hop.vlan,
                        weight: weight as u16,
                        last_weight: last_weight as u16,
                        mtu: next_hop.mtu,
                        fwd,
                        _pad: [0; 3],
                        tunnel_src: tunnel_src.unwrap_or_default(),
                    },
                )?;
                members.push(real_id);
                table_reals.push(TableReal {
                    weight,
                    last_weight,
                    key: sched::permutation_key(real.addr, real.port),
                });
            }
            let table = sched::build(spec.scheduler, &table_reals);
            let pool = if spec.forward == ForwardMethod::FullNat {
                wanted_local_addrs.extend(spec.local_addresses.iter().copied());
                self.local_addr_ids(&spec.local_addresses)?
            } else {
                Vec::new()
            };
            if table.scaled {
                report.scaled.push((spec.addr, spec.port));
            }
            let full_prefix = if spec.addr.is_ipv4() { 32 } else { 128 };
            tables.push(DesiredService {
                key,
                info: ServiceInfo {
                    id: service_id,
                    table_offset: 0,
                    table_len: 0,
                    sched: sched::kind(spec.scheduler),
                    sched_flags: sched::flag_bits(spec.sched_flags),
                    persist_prefix: spec.persistence.map_or(full_prefix, |p| p.prefix_len),
                    flags: if spec.one_packet {
                        lb_common::SERVICE_FLAG_OPS
                    } else {
                        0
                    },
                    persist_timeout: spec.persistence.map_or(0, |p| p.timeout_secs),
                    laddr_len: pool.len() as u32,
                    scheduler: sched::name_index(spec.scheduler),
                    _pad: [0; 3],
                },
                table: table
                    .entries
                    .iter()
                    .map(|&i| members[i])
                    .chain(pool)
                    .collect(),
            });
        }

        self.check_table_room(&tables)?;
        // Retired reals keep their entry (flagged) for their established flows.
        for (key, _) in self.slots.reals_not_in(&wanted_reals) {
            if let Some((id, Some(entry))) = self.slots.retire(&key) {
                self.write_real(id, entry)?;
            }
        }
        for wanted in tables {
            self.publish(wanted)?;
        }
        let nat = services.iter().any(|s| s.forward.translates_replies());
        self.write_settings(if nat { FEATURE_NAT } else { 0 })?;
        self.local_addrs.retain(&wanted_local_addrs);
        let vips = services.iter().map(|s| s.addr).collect();
        sync_vip_set(&mut self.ebpf, names::VIPS, &mut self.vips, vips)?;
        let stale: Vec<ServiceKey> = self
            .slots
            .services
            .keys()
            .filter(|key| !wanted_services.contains(key))
            .copied()
            .collect();
        for key in stale {
            self.remove_service(key)?;
        }
        Ok(report)
    }

    fn sweep(&mut self) -> Result<SweepReport, DataplaneError> {
        let now = monotonic_coarse_ns();
        let timeouts = self.timeouts.unwrap_or(Timeouts::IPVS);
        let mut counts: BTreeMap<u32, ConnCounts> = BTreeMap::new();
        let mut expired = Vec::new();
        let mut flows = 0u64;
        let services: BTreeMap<ServiceKey, (u32, Option<ServiceInfo>)> = self
            .slots
            .services
            .iter()
            .map(|(key, slot)| (*key, (slot.id, slot.info)))
            .collect();
        // Persistence pins with a live connection, and the real it is on.
        let mut live_pins: BTreeMap<PersistKey, u32> = BTreeMap::new();
        // Local address ids of the live FullNAT flows.
        let mut local_ids_in_use = BTreeSet::new();
        {
            let table: HashMap<&MapData, FlowKey, FlowState> = HashMap::try_from(
                self.ebpf
                    .map(names::FLOWS)
                    .ok_or_else(|| counters::missing(names::FLOWS))?,
            )
            .map_err(map_error(names::FLOWS))?;
            for entry in table.iter() {
                let (key, state) = match entry {
                    Ok(entry) => entry,
                    // Evicted between listing and reading: nothing to count.
                    Err(MapError::KeyNotFound) => continue,
                    Err(e) => return Err(map_error("reading the flow table")(e)),
                };
                if timeouts.expired(state.state, state.last_seen_ns, now) {
                    expired.push((key, state));
                    continue;
                }
                // A flow of a removed service whose real id was reused is not the new
                // real's connection (the data plane ignores such entries too).
                let service = services.get(&flow_service_key(&key)).copied();
                let real_service = self.slots.entries.get(&state.real_id).map(|e| e.service_id);
                let Some((service_id, info)) = service else {
                    continue;
                };
                if Some(service_id) != real_service {
                    continue;
                }
                if let Some(info) = info.filter(|i| i.persist_timeout != 0) {
                    let pin = PersistKey {
                        service_id,
                        client: mask_prefix(key.src, info.persist_prefix),
                    };
                    live_pins.insert(pin, state.real_id);
                }
                flows += 1;
                if self.slots.entries.get(&state.real_id).map(|r| r.fwd) == Some(FWD_FNAT) {
                    local_ids_in_use.insert(state.local_addr);
                }
                let count = counts.entry(state.real_id).or_default();
                if is_active(state.state) {
                    count.active += 1;
                } else {
                    count.inactive += 1;
                }
            }
        }
        let mut table: HashMap<&mut MapData, FlowKey, FlowState> =
            HashMap::try_from(map_mut(&mut self.ebpf, names::FLOWS)?)
                .map_err(map_error(names::FLOWS))?;
        let mut expired_count = 0u64;
        let mut reverse = Vec::new();
        for (key, seen) in &expired {
            // A packet may have brought the flow back (rescheduled) since the scan: only
            // an entry that is still the one seen goes.
            match table.get(key, 0) {
                Ok(now_there) if now_there == *seen => {}
                Ok(_) | Err(MapError::KeyNotFound) => continue,
                Err(e) => return Err(map_error("reading the flow table")(e)),
            }
            if removed(table.remove(key)).map_err(map_error("removing an expired flow"))? {
                expired_count += 1;
            }
            let Some(real) = self.slots.entries.get(&seen.real_id) else {
                continue;
            };
            // The reply's destination: the client (NAT) or the flow's local end (FullNAT).
            let reply_to = match real.fwd {
                FWD_NAT => Some((key.src, key.sport)),
                FWD_FNAT => self
                    .local_addrs
                    .addr(seen.local_addr)
                    .map(|addr| (addr_bytes(addr).0, seen.local_port)),
                _ => None,
            };
            if let Some((dst, dport)) = reply_to {
                let reply = FlowKey {
                    src: real.addr,
                    dst,
                    sport: real.port,
                    dport,
                    proto: key.proto,
                    family: key.family,
                    _pad: [0; 2],
                };
                reverse.push((reply, *key));
            }
        }
        // The reply translations of the removed flows (FullNAT: their local ports) go with
        // them, unless a new flow holds one now (FullNAT reuses the local port of a flow
        // that timed out). A pair taken over between the read and the removal loses its
        // reservation; the new flow's next packet makes it again (`fnat::hold`).
        let mut replies: HashMap<&mut MapData, FlowKey, NatOrigin> =
            HashMap::try_from(map_mut(&mut self.ebpf, names::NAT_REVERSE)?)
                .map_err(map_error(names::NAT_REVERSE))?;
        for (reply, client) in &reverse {
            match replies.get(reply, 0) {
                Ok(origin) if origin.client_flow(client.proto, client.family) == *client => {}
                Ok(_) | Err(MapError::KeyNotFound) => continue,
                Err(e) => return Err(map_error("reading a NAT reply translation")(e)),
            }
            removed(replies.remove(reply))
                .map_err(map_error("removing a NAT reply translation"))?;
        }
        self.reconcile_conns(&counts)?;
        // Local addresses no pool has and no flow uses any more give their ids up.
        for id in self.local_addrs.release_unused(&local_ids_in_use) {
            write_array(&mut self.ebpf, names::LOCAL_ADDRS, id, LocalAddr::default())?;
        }
        // A pin lasts for its timeout after the last connection it directed ended (IPVS
        // keeps a template while it controls connections).
        let mut pins: HashMap<&mut MapData, PersistKey, PersistState> =
            HashMap::try_from(map_mut(&mut self.ebpf, names::PERSIST)?)
                .map_err(map_error(names::PERSIST))?;
        for (key, real_id) in live_pins {
            match pins.get(&key, 0) {
                Ok(pin) if pin.real_id == real_id && pin.last_seen_ns < now => {
                    let refreshed = PersistState {
                        last_seen_ns: now,
                        ..pin
                    };
                    pins.insert(key, refreshed, 0)
                        .map_err(map_error("refreshing a persistence pin"))?;
                }
                Ok(_) | Err(MapError::KeyNotFound) => {}
                Err(e) => return Err(map_error("reading a persistence pin")(e)),
            }
        }
        Ok(SweepReport {
            flows,
            expired: expired_count,
        })
    }

    fn counters(&self) -> Result<Counters, DataplaneError> {
        counters::read(&self.ebpf)
    }

    fn zero_counters(
        &mut self,
        service: Option<super::diff::ServiceId>,
    ) -> Result<(), DataplaneError> {
        self.zero(service)
    }
}

/// Whether a hash map `remove` removed the key; a key already gone is no error (aya
/// reports it as the syscall's ENOENT, not as `KeyNotFound`).
pub(super) fn removed(result: Result<(), MapError>) -> Result<bool, MapError> {
    match result {
        Ok(()) => Ok(true),
        Err(MapError::KeyNotFound) => Ok(false),
        Err(MapError::SyscallError(e)) if e.io_error.raw_os_error() == Some(libc::ENOENT) => {
            Ok(false)
        }
        Err(e) => Err(e),
    }
}

/// Make the set of VIP addresses `name` (a hash of `VipKey`), which holds `current`, hold
/// `wanted`.
fn sync_vip_set(
    ebpf: &mut Ebpf,
    name: &'static str,
    current: &mut BTreeSet<IpAddr>,
    wanted: BTreeSet<IpAddr>,
) -> Result<(), DataplaneError> {
    if wanted == *current {
        return Ok(());
    }
    let mut map: HashMap<&mut MapData, VipKey, u8> =
        HashMap::try_from(map_mut(ebpf, name)?).map_err(map_error(name))?;
    for vip in wanted.difference(current) {
        map.insert(vip_key(*vip), 1, 0)
            .map_err(map_error(format!("adding a VIP to {name}")))?;
    }
    for vip in current.difference(&wanted) {
        removed(map.remove(&vip_key(*vip)))
            .map_err(map_error(format!("removing a VIP from {name}")))?;
    }
    *current = wanted;
    Ok(())
}

/// Set the only entry of one-entry array `name`.
fn write_single<V: aya::Pod>(
    ebpf: &mut Ebpf,
    name: &'static str,
    value: V,
) -> Result<(), DataplaneError> {
    write_array(ebpf, name, 0, value)
}

/// Set entry `index` of array `name`.
fn write_array<V: aya::Pod>(
    ebpf: &mut Ebpf,
    name: &'static str,
    index: u32,
    value: V,
) -> Result<(), DataplaneError> {
    let mut map: Array<&mut MapData, V> =
        Array::try_from(map_mut(ebpf, name)?).map_err(map_error(name))?;
    map.set(index, value, 0).map_err(map_error(name))
}

/// Detach `program` (named `name`) from every link in `links`.
fn detach_links(
    program: &mut Xdp,
    name: &'static str,
    links: &mut Vec<XdpLinkId>,
) -> Result<(), DataplaneError> {
    for link in links.drain(..) {
        program
            .detach(link)
            .map_err(|source| DataplaneError::Program {
                program: name,
                source,
            })?;
    }
    Ok(())
}

/// Attach `program` to `interface` in `mode`: the link, whether native mode is in use,
/// and with `AttachMode::Auto` the native error when it fell back to generic mode.
fn attach_program(
    program: &mut Xdp,
    interface: &str,
    mode: AttachMode,
) -> Result<(XdpLinkId, bool, Option<String>), DataplaneError> {
    let attach = |program: &mut Xdp, mode| {
        program
            .attach(interface, mode)
            .map_err(|e| DataplaneError::Attach {
                interface: interface.to_owned(),
                reason: error_chain(&e),
            })
    };
    Ok(match mode {
        AttachMode::Native => (attach(program, XdpMode::Driver)?, true, None),
        AttachMode::Generic => (attach(program, XdpMode::Skb)?, false, None),
        AttachMode::Auto => match attach(program, XdpMode::Driver) {
            Ok(link) => (link, true, None),
            Err(native_error) => (
                attach(program, XdpMode::Skb)?,
                false,
                Some(native_error.to_string()),
            ),
        },
    })
}

fn program_mut<'a>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut Xdp, DataplaneError> {
    let program = ebpf.program_mut(name).ok_or(DataplaneError::Program {
        program: name,
        source: aya::programs::ProgramError::UnexpectedProgramType,
    })?;
    program
        .try_into()
        .map_err(|source| DataplaneError::Program {
            program: name,
            source,
        })
}

fn program<'a>(ebpf: &'a Ebpf, name: &'static str) -> Result<&'a Xdp, DataplaneError> {
    let program = ebpf.program(name).ok_or(DataplaneError::Program {
        program: name,
        source: aya::programs::ProgramError::UnexpectedProgramType,
    })?;
    program
        .try_into()
        .map_err(|source| DataplaneError::Program {
            program: name,
            source,
        })
}

fn map_mut<'a>(
    ebpf: &'a mut Ebpf,
    name: &'static str,
) -> Result<&'a mut aya::maps::Map, DataplaneError> {
    ebpf.map_mut(name).ok_or_else(|| counters::missing(name))
}

/// What a service should run with: its entry (`table_offset`/`table_len` left 0) and
/// table of real ids.
struct DesiredService {
    key: ServiceKey,
    info: ServiceInfo,
    table: Vec<u32>,
}

/// The service a flow is for: its destination address, port and protocol.
fn flow_service_key(flow: &FlowKey) -> ServiceKey {
    ServiceKey {
        addr: flow.dst,
        port: flow.dport,
        proto: flow.proto,
        family: flow.family,
    }
}

/// The arena range of a published table (with the FullNAT pool after it).
fn table_region(info: &ServiceInfo) -> Region {
    Region {
        offset: info.table_offset,
        len: info.table_len + info.laddr_len,
    }
}

/// `CLOCK_MONOTONIC_COARSE` in nanoseconds: the clock of `bpf_ktime_get_coarse_ns`, which
/// stamps the flows.
fn monotonic_coarse_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid pointer to a timespec; the clock id is a constant the kernel knows.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Rebuild the id state from the (possibly pinned, pre-existing) maps.
fn rebuild_slots(ebpf: &Ebpf) -> Result<Slots, DataplaneError> {
    let services: HashMap<_, ServiceKey, ServiceInfo> =
        HashMap::try_from(ebpf.get_map(names::SERVICES)?).map_err(map_error(names::SERVICES))?;
    let services: Vec<(ServiceKey, ServiceInfo)> = services
        .iter()
        .collect::<Result<_, _>>()
        .map_err(map_error(names::SERVICES))?;
    let reals: Array<_, RealInfo> =
        Array::try_from(ebpf.get_map(names::REALS)?).map_err(map_error(names::REALS))?;
    let reals: Vec<(u32, RealInfo)> = (0..lb_common::MAX_REALS)
        .map(|id| reals.get(&id, 0).map(|info| (id, info)))
        .collect::<Result<_, _>>()
        .map_err(map_error(names::REALS))?;
    Ok(Slots::rebuild(
        lb_common::MAX_SERVICES,
        lb_common::MAX_REALS,
        services,
        reals,
    ))
}

/// The VIP addresses in the (possibly pinned, pre-existing) `LB_VIPS`.
fn rebuild_vips(ebpf: &Ebpf) -> Result<BTreeSet<IpAddr>, DataplaneError> {
    let map: HashMap<_, VipKey, u8> =
        HashMap::try_from(ebpf.get_map(names::VIPS)?).map_err(map_error(names::VIPS))?;
    let keys: Vec<VipKey> = map
        .keys()
        .collect::<Result<_, _>>()
        .map_err(map_error(names::VIPS))?;
    Ok(keys
        .into_iter()
        .filter_map(|key| addr_from(key.addr, key.family))
        .collect())
}

/// The FullNAT local address ids in the (possibly pinned, pre-existing) map.
fn rebuild_local_addrs(ebpf: &Ebpf) -> Result<LocalAddrs, DataplaneError> {
    let map: Array<_, LocalAddr> = Array::try_from(ebpf.get_map(names::LOCAL_ADDRS)?)
        .map_err(map_error(names::LOCAL_ADDRS))?;
    let entries: Vec<(u32, LocalAddr)> = (0..lb_common::MAX_LOCAL_ADDRS)
        .map(|id| map.get(&id, 0).map(|entry| (id, entry)))
        .collect::<Result<_, _>>()
        .map_err(map_error(names::LOCAL_ADDRS))?;
    Ok(LocalAddrs::rebuild(entries, lb_common::MAX_LOCAL_ADDRS))
}

/// An error and its sources on one line.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
