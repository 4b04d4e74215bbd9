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
mod clock;
mod conns;
mod counters;
mod decap;
pub mod dump;
mod expiry;
pub mod flows;
pub(crate) mod keys;
mod layout;
pub mod links;
mod local_addrs;
mod slots;
pub mod sweep;
pub mod sync_table;
mod sys;

use std::{
    collections::{BTreeSet, HashMap as StdHashMap},
    net::IpAddr,
    os::fd::{BorrowedFd, OwnedFd},
    path::PathBuf,
    time::{Duration, Instant},
};

use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, HashMap, MapData, MapError, PerCpuArray, PerCpuValues},
    programs::Xdp,
};
use lb_common::{
    FEATURE_NAT, FNAT_PORTS_DEFAULT, FWD_DR, FWD_FNAT, FWD_NAT, FWD_TUN, LocalAddr, RealInfo,
    ServiceInfo, ServiceKey, Settings, TrafficStats, VipKey, conn::Timeouts, map_names as names,
    program_names,
};

use arena::{Arena, Region};
use conns::ConnTable;
use counters::MapSource;
pub use counters::{PinnedMaps, read as read_counters, read_pinned as read_pinned_counters};
pub use decap::{Decap, Prefix, PrefixError, director_sources};
use keys::vip_key;
pub use keys::{addr_bytes, addr_from, service_key};
pub use layout::{BPFFS_ROOT, MapLayout, ensure_bpffs, expected_layouts, pin_dir};
use local_addrs::LocalAddrs;
use slots::{RealKey, Slots};
use sweep::{FlowMaps, FlowUpkeep, View};

use super::{
    ApplyReport, Counters, Dataplane, DataplaneError, DesiredState, ServiceSpec, SweepReport,
};
use crate::{
    model::{ForwardMethod, TunnelType},
    nexthop::{NextHop, NextHopError, NextHopResolver},
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
    let mut ebpf = loaded.map_err(|source| DataplaneError::Load { source })?;
    layout::write_stamps(&mut ebpf, options)?;
    Ok((ebpf, warnings))
}

/// How many shares FullNAT splits its port range into (`Settings::cpus`): one per CPU
/// that can run the program, numbered as the kernel numbers them (the highest online CPU
/// number + 1), so that machines which list many possible but absent CPUs do not waste
/// most of the range. `possible` is the fallback. (A CPU brought online later with a
/// higher number shares a lane with another, which the reservation's insert still
/// guards.)
fn fnat_port_shares(possible: usize) -> u16 {
    let shares = aya::util::online_cpus()
        .ok()
        .and_then(|cpus| cpus.into_iter().max())
        .map_or(possible, |highest| highest as usize + 1);
    u16::try_from(shares).unwrap_or(u16::MAX)
}

/// A free `LB_REALS` entry (with the generation of its id, which a free entry keeps).
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
    _pad: 0,
    generation: 0,
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
    /// The longest time between two scans of the flow table (`--sweep-interval`).
    pub sweep_interval: Duration,
    /// Write flows recorded and their state changes to `LB_SYNC_EVENTS`
    /// (`FEATURE_SYNC_EVENTS`), for connection sync.
    pub sync_events: bool,
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
            sweep_interval: Duration::from_secs(10),
            sync_events: false,
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
    /// How the program turns jiffies into nanoseconds (`None`: not calibrated, it reads
    /// the coarse clock).
    clock: Option<clock::JiffyClock>,
    /// FullNAT local ports (`XdpOptions::fnat_ports`).
    fnat_ports: (u16, u16),
    /// `XdpOptions::sweep_interval`.
    sweep_interval: Duration,
    /// `XdpOptions::answer_echo`.
    answer_echo: bool,
    /// `XdpOptions::sync_events`.
    sync_events: bool,
    /// The VIP addresses in `LB_VIPS`.
    vips: BTreeSet<IpAddr>,
    local_addrs: LocalAddrs,
    /// Each real's connection counts (`LB_REAL_CONNS`, mapped).
    conns: ConnTable,
    /// Expiry, recounts and pins (`sweep`).
    upkeep: FlowUpkeep,
    /// Links of the interfaces the balancer is attached to.
    attachments: Vec<links::Attachment>,
    /// Where the links are pinned (`None`: private maps, links go with the process).
    links_dir: Option<PathBuf>,
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
        let (mut ebpf, mut load_warnings) = load_object(options)?;
        for name in [program_names::BALANCER, program_names::CLOCK] {
            program_mut(&mut ebpf, name)?
                .load()
                .map_err(|source| DataplaneError::Program {
                    program: name,
                    source,
                })?;
        }
        let clock = match clock::calibrate(program(&ebpf, program_names::CLOCK)?) {
            Ok(clock) => Some(clock),
            Err(e) => {
                load_warnings.push(format!(
                    "the data plane reads the coarse clock (about 10 ns a packet more): {e}"
                ));
                None
            }
        };
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
        let conns = ConnTable::open(map_fd(&ebpf, names::REAL_CONNS)?).map_err(|source| {
            DataplaneError::Sys {
                what: "mapping LB_REAL_CONNS",
                source,
            }
        })?;
        let flow_maps = FlowMaps {
            flows: owned_map_fd(&ebpf, names::FLOWS)?,
            nat_reverse: owned_map_fd(&ebpf, names::NAT_REVERSE)?,
            persist: owned_map_fd(&ebpf, names::PERSIST)?,
        };
        Ok(Self {
            ebpf,
            resolver,
            slots,
            arena,
            timeouts: None,
            settings: None,
            clock,
            fnat_ports: options.fnat_ports,
            sweep_interval: options.sweep_interval,
            answer_echo: options.answer_echo,
            sync_events: options.sync_events,
            vips,
            local_addrs,
            conns,
            upkeep: FlowUpkeep::new(flow_maps),
            attachments: Vec::new(),
            links_dir: options.pin_dir.as_deref().map(links::links_dir),
            cpus,
            load_warnings,
        })
    }

    /// Attach the balancer to `interface` (see `links`): adopting the link an earlier lbd
    /// pinned, else anew in `mode` (with `AttachMode::Auto` a failed native attach falls
    /// back to generic mode, and the native error is returned for the caller to warn
    /// about).
    pub fn attach(
        &mut self,
        interface: &str,
        mode: AttachMode,
    ) -> Result<links::Attached, DataplaneError> {
        links::attach_kept(
            &mut self.ebpf,
            program_names::BALANCER,
            interface,
            mode,
            self.links_dir.as_deref(),
            &mut self.attachments,
        )
    }

    /// Detach from every interface (the maps stay pinned).
    pub fn detach_all(&mut self) -> Result<(), DataplaneError> {
        for attachment in self.attachments.drain(..) {
            attachment.detach()?;
        }
        Ok(())
    }

    /// Detach what an earlier lbd left attached to interfaces this one is not attached
    /// to; the interfaces.
    pub fn detach_others(&self) -> Result<Vec<String>, DataplaneError> {
        let Some(dir) = &self.links_dir else {
            return Ok(Vec::new());
        };
        let keep: Vec<String> = self
            .attachments
            .iter()
            .map(|a| a.interface.clone())
            .collect();
        links::detach_others(dir, &keep)
    }

    /// Let go of every interface, leaving the balancer attached (pinned links) to go on
    /// forwarding until another lbd adopts it.
    pub fn leave_all(&mut self) {
        for attachment in self.attachments.drain(..) {
            attachment.leave();
        }
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

    /// The maps a sync backup writes into, on descriptors of its own (see `sync_table`).
    pub fn sync_table(&self) -> Result<sync_table::SyncTable, DataplaneError> {
        let conns = ConnTable::open(map_fd(&self.ebpf, names::REAL_CONNS)?).map_err(|source| {
            DataplaneError::Sys {
                what: "mapping LB_REAL_CONNS",
                source,
            }
        })?;
        let maps = sync_table::SyncMaps {
            flows: owned_map_fd(&self.ebpf, names::FLOWS)?,
            nat_reverse: owned_map_fd(&self.ebpf, names::NAT_REVERSE)?,
            services: owned_map_fd(&self.ebpf, names::SERVICES)?,
            reals: owned_map_fd(&self.ebpf, names::REALS)?,
            persist: owned_map_fd(&self.ebpf, names::PERSIST)?,
            conns,
        };
        Ok(sync_table::SyncTable::open(maps))
    }

    /// `LB_SYNC_EVENTS`, for the sync daemon's reader (once: it is taken out of the
    /// object).
    pub fn take_sync_events(
        &mut self,
    ) -> Result<aya::maps::RingBuf<aya::maps::MapData>, DataplaneError> {
        let map = self
            .ebpf
            .take_map(names::SYNC_EVENTS)
            .ok_or_else(|| DataplaneError::Map {
                what: format!("{} (already taken)", names::SYNC_EVENTS),
                source: aya::maps::MapError::InvalidName {
                    name: names::SYNC_EVENTS.into(),
                },
            })?;
        aya::maps::RingBuf::try_from(map).map_err(map_error(names::SYNC_EVENTS))
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

    /// Write the `FEATURE_*` bits (with `FEATURE_ANSWER_ECHO` as loaded), the FullNAT port
    /// range and the number of CPUs that share it, the reply sources and the service
    /// filter, if they changed.
    fn write_settings(&mut self, features: u32) -> Result<(), DataplaneError> {
        // The reply sources: every NAT and FullNAT real in use, retired ones too (their
        // flows still get replies).
        let mut nat_sources = [0u64; lb_common::NAT_SOURCE_WORDS];
        for real in self.slots.entries.values() {
            if real.fwd == FWD_NAT || real.fwd == FWD_FNAT {
                let bit = lb_common::hash::nat_source_bit(
                    &real.addr,
                    real.family == lb_common::FAMILY_IPV6,
                );
                nat_sources[(bit / 64) as usize] |= 1 << (bit % 64);
            }
        }
        // Every service with an id: those being published and those not yet removed.
        let mut service_bits = [0u64; lb_common::SERVICE_FILTER_WORDS];
        for key in self.slots.services.keys() {
            let bit = lb_common::hash::service_bit(&key.addr, key.port, key.proto);
            service_bits[(bit / 64) as usize] |= 1 << (bit % 64);
        }
        let echo = if self.answer_echo {
            lb_common::FEATURE_ANSWER_ECHO
        } else {
            0
        };
        let sync = if self.sync_events {
            lb_common::FEATURE_SYNC_EVENTS
        } else {
            0
        };
        let settings = Settings {
            features: features | echo | sync | lb_common::FEATURE_SERVICE_FILTER,
            fnat_port_min: self.fnat_ports.0,
            fnat_port_max: self.fnat_ports.1,
            cpus: fnat_port_shares(self.cpus),
            _pad: [0; 3],
            nat_sources,
            services: service_bits,
            clock_tick_ns: self.clock.map_or(0, |c| c.tick_ns),
            clock_offset_ns: self.clock.map_or(0, |c| c.offset_ns),
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

    /// Time between scans of the flow table now (see `expiry::scan_interval`).
    fn scan_interval(&self) -> Duration {
        let persist = self
            .slots
            .services
            .values()
            .filter_map(|slot| slot.info)
            .map(|info| info.persist_timeout)
            .filter(|&secs| secs != 0)
            .min()
            .unwrap_or(0);
        expiry::scan_interval(
            self.sweep_interval,
            &self.timeouts.unwrap_or(Timeouts::IPVS),
            persist,
            self.upkeep.last_scan_duration(),
        )
    }

    /// A whole scan of the flow table now: timed-out flows removed, counts recounted (the
    /// data-plane thread does this in steps, `Dataplane::upkeep`).
    pub fn sweep(&mut self) -> Result<SweepReport, DataplaneError> {
        let interval = self.scan_interval();
        let view = View {
            timeouts: self.timeouts.unwrap_or(Timeouts::IPVS),
            services: &self.slots.services,
            reals: &self.slots.entries,
            local_addrs: &self.local_addrs,
            conns: &self.conns,
        };
        let (report, in_use) = self.upkeep.sweep_now(&view, interval)?;
        self.release_local_addrs(&in_use)?;
        Ok(report)
    }

    /// Local addresses no pool has and no flow uses (`in_use`) give their ids up.
    fn release_local_addrs(&mut self, in_use: &BTreeSet<u32>) -> Result<(), DataplaneError> {
        for id in self.local_addrs.release_unused(in_use) {
            write_array(&mut self.ebpf, names::LOCAL_ADDRS, id, LocalAddr::default())?;
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
    /// When the space is there only once released ranges come out of their grace period,
    /// nothing changes and the time to try again is returned.
    fn publish(&mut self, wanted: DesiredService) -> Result<Option<Instant>, DataplaneError> {
        if self.is_published(&wanted) {
            return Ok(None);
        }
        let old = self
            .slots
            .services
            .get(&wanted.key)
            .and_then(|slot| slot.info);
        let region = match self
            .arena
            .allocate(wanted.table.len() as u32, Instant::now())
        {
            Some(region) => region,
            None => {
                return match self.arena.next_free_at() {
                    Some(at) => Ok(Some(at)),
                    None => Err(DataplaneError::Capacity {
                        what: "scheduling table entries (--sched-table-entries)",
                        max: self.arena.size(),
                    }),
                };
            }
        };
        // One call for the whole table (a Maglev table has 65,537 entries).
        let positions: Vec<u32> =
            (region.offset..region.offset + wanted.table.len() as u32).collect();
        sys::update_batch(
            map_fd(&self.ebpf, names::TABLES)?,
            &positions,
            &wanted.table,
            0,
        )
        .map_err(|source| DataplaneError::Sys {
            what: "writing a scheduling table",
            source,
        })?;
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
        Ok(None)
    }

    /// Fail before anything is published if some changed table could never be placed.
    /// Tables are published service by service, in order (`publish`): each new table
    /// needs room next to every table in place, its own old one included, which is
    /// released once the new one is in (and free after the arena's grace period, when a
    /// later apply goes on: `ApplyReport::retry_at`). So the changes need not fit all at
    /// once, only one after the other.
    fn check_table_room(&self, wanted: &[DesiredService]) -> Result<(), DataplaneError> {
        let mut room = self.arena.eventually_free();
        for wanted in wanted.iter().filter(|w| !self.is_published(w)) {
            let new = wanted.table.len() as u64;
            if new > room {
                return Err(DataplaneError::Capacity {
                    what: "scheduling table entries (--sched-table-entries)",
                    max: self.arena.size(),
                });
            }
            let old = self
                .slots
                .services
                .get(&wanted.key)
                .and_then(|slot| slot.info)
                .map_or(0, |info| u64::from(table_region(&info).len));
            room = room - new + old;
        }
        Ok(())
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
            // The generation stays with the id, for its next real.
            let free = RealInfo {
                generation: self.slots.generation(id),
                ..FREE_REAL
            };
            reals
                .set(id, free, 0)
                .map_err(map_error("freeing a real"))?;
        }
        Ok(())
    }

    /// The next hop of every real address in `services`, each asked for once.
    fn resolve_all(
        &mut self,
        services: &[ServiceSpec],
    ) -> StdHashMap<IpAddr, Result<NextHop, NextHopError>> {
        let mut addrs: Vec<IpAddr> = services
            .iter()
            .flat_map(|spec| spec.reals.iter().map(|real| real.addr))
            .collect();
        addrs.sort();
        addrs.dedup();
        let results = self.resolver.resolve(&addrs);
        addrs.into_iter().zip(results).collect()
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
        // The least-connection loop compares so many reals; never a silent truncation.
        let max = lb_common::sched::LEAST_CONN_MAX_REALS;
        if services
            .iter()
            .any(|spec| spec.scheduler.counts_connections() && spec.reals.len() > max as usize)
        {
            return Err(DataplaneError::Capacity {
                what: "reals in an lc/wlc/sed/nq service",
                max,
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
                // Port 0 is IPVS's "the service's port" (the configuration reader gives
                // such reals the service's port already): never a destination port 0.
                let port = if real.port == 0 { spec.port } else { real.port };
                let real_key = RealKey {
                    service_id,
                    addr,
                    port: port.to_be_bytes(),
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
                // Without a next hop, any existing entry stays as it is: its established
                // flows go on.
                let next_hop = match (&next_hops[&real.addr], &tunnel_src) {
                    (Ok(next_hop), Ok(_)) => *next_hop,
                    (Err(NextHopError::Pending { retry_at, .. }), _) => {
                        if !report.pending.contains(&real.addr) {
                            report.pending.push(real.addr);
                        }
                        report.retry_at(*retry_at);
                        continue;
                    }
                    (Err(error), _) => {
                        report.unresolve(real.addr, error.to_string());
                        continue;
                    }
                    (_, Err(reason)) => {
                        report.unresolve(real.addr, reason.clone());
                        continue;
                    }
                };
                let conns = &self.conns;
                let (real_id, new) = self.slots.real(real_key, |id| {
                    let counts = conns.load(id);
                    counts.active() > 0 || counts.inactive() > 0
                })?;
                if new {
                    self.reset_per_cpu::<TrafficStats>(names::REAL_STATS, real_id)?;
                    self.conns.reset(real_id);
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
                        _pad: 0,
                        generation: self.slots.generation(real_id),
                        tunnel_src: tunnel_src.unwrap_or_default(),
                    },
                )?;
                members.push(real_id);
                table_reals.push(TableReal {
                    weight,
                    last_weight,
                    key: sched::permutation_key(real.addr, port),
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
        // The reply sources and the service filter before the tables: a new real's replies
        // may come as soon as a table sends it a flow, and a new service's packets as soon
        // as it is published.
        let nat = services.iter().any(|s| s.forward.translates_replies());
        let features = if nat { FEATURE_NAT } else { 0 };
        self.write_settings(features)?;
        // Service by service: each swap is atomic on its own. Once one waits for room,
        // the rest wait too: the room `check_table_room` counted is taken in this order.
        for wanted in tables {
            if let Some(at) = self.publish(wanted)? {
                report.retry_at(at);
                break;
            }
        }
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
        // Without the services and reals removed.
        self.write_settings(features)?;
        Ok(report)
    }

    fn upkeep(&mut self, now: Instant) -> Result<Option<Instant>, DataplaneError> {
        let now_ns = sweep::monotonic_coarse_ns();
        let interval = self.scan_interval();
        let view = View {
            timeouts: self.timeouts.unwrap_or(Timeouts::IPVS),
            services: &self.slots.services,
            reals: &self.slots.entries,
            local_addrs: &self.local_addrs,
            conns: &self.conns,
        };
        let step = self.upkeep.step(&view, interval, now, now_ns)?;
        if let Some((stats, in_use)) = step.finished {
            tracing::debug!(
                "scan of the flow table: {} live flows, {} timed out, {} reals recounted, {:.1?} ({:.1?} CPU)",
                stats.flows,
                stats.expired,
                stats.corrected,
                stats.wall,
                stats.cpu
            );
            self.release_local_addrs(&in_use)?;
        }
        Ok(Some(
            self.upkeep
                .next_at(Instant::now(), sweep::monotonic_coarse_ns()),
        ))
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

    fn stop(&mut self) -> Result<(), DataplaneError> {
        self.detach_all()
    }

    fn leave(&mut self) -> Result<(), DataplaneError> {
        self.leave_all();
        Ok(())
    }

    fn upkeep_stats(&self) -> Option<super::UpkeepStats> {
        Some(self.upkeep.stats())
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

/// The descriptor of map `name`.
fn map_fd<'a>(ebpf: &'a Ebpf, name: &'static str) -> Result<BorrowedFd<'a>, DataplaneError> {
    let map = ebpf.map(name).ok_or_else(|| counters::missing(name))?;
    sys::fd_of(map).ok_or(DataplaneError::Sys {
        what: name,
        source: std::io::Error::other("not a map kind the balancer uses"),
    })
}

/// A descriptor of map `name` of our own.
fn owned_map_fd(ebpf: &Ebpf, name: &'static str) -> Result<OwnedFd, DataplaneError> {
    map_fd(ebpf, name)?
        .try_clone_to_owned()
        .map_err(|source| DataplaneError::Sys { what: name, source })
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

/// The arena range of a published table (with the FullNAT pool after it).
fn table_region(info: &ServiceInfo) -> Region {
    Region {
        offset: info.table_offset,
        len: info.table_len + info.laddr_len,
    }
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
