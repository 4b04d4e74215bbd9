//! The XDP backend: loads the programs of `lb-ebpf`, attaches them, and keeps the maps equal
//! to the desired state.
//!
//! Maps are pinned under `/sys/fs/bpf/<instance>/` and reused on the next start, so
//! established flows survive a restart of lbd. The parts:
//! - `object`: the compiled programs, loading them (`XdpOptions`), typed access to a map
//!   or program by name, and the id state rebuilt from pinned maps;
//! - this module: `XdpDataplane` itself, attaching and detaching, the settings, timeouts
//!   and real entries it writes, and the sweep's scheduling;
//! - `publish`: `Dataplane::apply` and the trait's other operations. Each real's entry
//!   first, then the service's new scheduling table into free space of the `LB_TABLES`
//!   arena, and the service entry last (one map update): a packet sees either the old
//!   table or the new one, never a mix (see `arena`);
//! - `sweep` removes expired flows and recounts each real's connections; `sync_table`
//!   is connection sync's side of the maps.

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
mod object;
mod publish;
mod slots;
pub mod sweep;
pub mod sync_table;
mod sys;

use std::{collections::BTreeSet, net::IpAddr, path::PathBuf, time::Duration};

use aya::{
    Ebpf,
    maps::{Array, MapData, MapError, PerCpuArray, PerCpuValues},
    programs::Xdp,
};
use lb_common::{
    FWD_FNAT, FWD_NAT, LocalAddr, RealInfo, Settings, TrafficStats, conn::Timeouts,
    map_names as names, program_names,
};

use arena::Arena;
use conns::ConnTable;
pub use counters::{PinnedMaps, read as read_counters, read_pinned as read_pinned_counters};
pub use decap::{Decap, Prefix, PrefixError, director_sources};
pub use keys::{addr_bytes, addr_from, service_key};
pub use layout::{BPFFS_ROOT, MapLayout, ensure_bpffs, expected_layouts, pin_dir};
use local_addrs::LocalAddrs;
pub use object::{AttachMode, EBPF_OBJECT, XdpOptions, load_object, load_program};
use object::{
    error_chain, fnat_port_shares, map_error, map_fd, map_mut, owned_map_fd, program, program_mut,
    rebuild_local_addrs, rebuild_slots, rebuild_vips, write_array, write_single,
};
use publish::{sync_vip_set, table_region};
use slots::Slots;
use sweep::{FlowMaps, FlowUpkeep, View};

use super::{DataplaneError, SweepReport};
use crate::{
    model::{TunnelChecksum, TunnelType},
    nexthop::NextHopResolver,
};

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
    tunnel: 0,
    generation: 0,
    tunnel_src: [0; 16],
};

/// The data plane's `TUNNEL_*` for `tunnel`; `None` for the tunnels only the kernel's IPVS
/// has: GUE, and GRE with a checksum (the checksum covers the whole packet).
pub fn tunnel_kind(tunnel: TunnelType) -> Option<u8> {
    match tunnel {
        TunnelType::Ipip => Some(lb_common::TUNNEL_IPIP),
        TunnelType::Gre {
            checksum: TunnelChecksum::None,
        } => Some(lb_common::TUNNEL_GRE),
        TunnelType::Gre { .. } | TunnelType::Gue { .. } => None,
    }
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

impl<R: NextHopResolver> XdpDataplane<R> {
    /// Load the programs and maps (reusing pinned maps) and rebuild the id state from them.
    pub fn load(options: &XdpOptions, resolver: R) -> Result<Self, DataplaneError> {
        let (mut ebpf, mut load_warnings) = load_object(options)?;
        for name in [program_names::BALANCER, program_names::CLOCK] {
            object::load_program(&mut ebpf, name)?;
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
            locality_expiration_ns: 0,
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
        let view = view_of(self.timeouts, &self.slots, &self.local_addrs, &self.conns);
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

/// What the sweep reads of the published state (fields apart, so that the upkeep can be
/// borrowed next to it).
fn view_of<'a>(
    timeouts: Option<Timeouts>,
    slots: &'a Slots,
    local_addrs: &'a LocalAddrs,
    conns: &'a ConnTable,
) -> View<'a> {
    View {
        timeouts: timeouts.unwrap_or(Timeouts::IPVS),
        services: &slots.services,
        reals: &slots.entries,
        local_addrs,
        conns,
    }
}
