//! The XDP backend: loads the programs of `lb-ebpf`, attaches them, and keeps the maps equal
//! to the desired state.
//!
//! Maps are pinned under `/sys/fs/bpf/<instance>/` and reused on the next start, so
//! established flows survive a restart of lbd. `apply` writes each real's entry (egress
//! interface, destination and source MAC) first, then the service's new scheduling ring into the inactive
//! slot, and flips the service entry last (one map update): a packet sees either the old
//! ring or the new one, never a mix. The old slot is rewritten only by a later apply; a
//! packet that read the service entry before two quick applies may pick from the ring
//! being rewritten, but every entry of either ring is a real of that same service.

mod counters;
mod keys;
mod layout;
mod slots;

use std::{
    collections::{BTreeSet, HashMap as StdHashMap},
    net::IpAddr,
    path::PathBuf,
};

use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, HashMap, MapData, MapError, PerCpuArray, PerCpuValues},
    programs::{Xdp, XdpMode, xdp::XdpLinkId},
};
use lb_common::{
    RING_SIZE, RealInfo, ServiceInfo, ServiceKey, TrafficStats, map_names as names, program_names,
    ring_index,
};

use counters::MapSource;
pub use counters::read_pinned as read_pinned_counters;
pub use keys::{addr_bytes, addr_from, service_key};
pub use layout::{BPFFS_ROOT, ensure_bpffs, pin_dir};
use slots::{RealKey, Slots};

use super::{ApplyReport, Counters, Dataplane, DataplaneError, ServiceSpec};
use crate::{
    nexthop::{NextHop, NextHopResolver},
    sched,
};

/// The compiled XDP programs (built by `build.rs` with aya-build).
pub static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/lb-ebpf"));

/// Create the maps (reusing pinned ones) and the programs, not yet loaded into the
/// kernel; with the warnings about replaced pins.
pub fn load_object(options: &XdpOptions) -> Result<(Ebpf, Vec<String>), DataplaneError> {
    let mut loader = EbpfLoader::new();
    loader.map_max_entries(names::FLOWS, options.flow_table_size);
    // The maps are declared pinned; aya pins them even without a directory (into
    // /sys/fs/bpf). Private maps are pinned into a fresh directory that is removed right
    // after loading: the maps live on through their file descriptors.
    let private_dir = options.pin_dir.is_none().then(layout::private_pin_dir);
    let dir = options
        .pin_dir
        .as_ref()
        .or(private_dir.as_ref())
        .expect("one of them is set");
    let prepared = layout::prepare_pin_dir(dir, options.flow_table_size);
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
    _pad: [0; 2],
};

/// How to load the programs.
#[derive(Clone, Debug)]
pub struct XdpOptions {
    /// Directory for pinned maps; `None` keeps them private to this process (tests).
    pub pin_dir: Option<PathBuf>,
    /// Entries of the LRU flow table.
    pub flow_table_size: u32,
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
        let slots = rebuild_slots(&ebpf)?;
        let cpus = aya::util::nr_cpus().map_err(|(_, source)| DataplaneError::Cpus { source })?;
        Ok(Self {
            ebpf,
            resolver,
            slots,
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
        let attach = |program: &mut Xdp, mode| {
            program
                .attach(interface, mode)
                .map_err(|e| DataplaneError::Attach {
                    interface: interface.to_owned(),
                    reason: error_chain(&e),
                })
        };
        let (link, native, fallback) = match mode {
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
        };
        self.links.push(link);
        Ok((native, fallback))
    }

    /// Detach from every interface (the maps stay pinned).
    pub fn detach_all(&mut self) -> Result<(), DataplaneError> {
        let program = program_mut(&mut self.ebpf, program_names::BALANCER)?;
        for link in self.links.drain(..) {
            program
                .detach(link)
                .map_err(|source| DataplaneError::Program {
                    program: program_names::BALANCER,
                    source,
                })?;
        }
        Ok(())
    }

    /// The loaded balancer program (for BPF_PROG_TEST_RUN).
    pub fn balancer(&self) -> Result<&Xdp, DataplaneError> {
        program(&self.ebpf, program_names::BALANCER)
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

    /// Write `ring` into the inactive slot of service `key` and flip the service entry.
    fn publish_ring(&mut self, key: ServiceKey, ring: Vec<u32>) -> Result<(), DataplaneError> {
        let slot = self
            .slots
            .services
            .get(&key)
            .expect("service allocated before publish");
        if slot.ring.as_ref() == Some(&ring) {
            return Ok(());
        }
        let (id, next_slot) = (slot.id, slot.ring_slot ^ 1);
        let mut rings: Array<&mut MapData, u32> =
            Array::try_from(map_mut(&mut self.ebpf, names::RINGS)?)
                .map_err(map_error(names::RINGS))?;
        for (pos, &real_id) in ring.iter().enumerate() {
            rings
                .set(ring_index(id, next_slot, pos as u32), real_id, 0)
                .map_err(map_error("writing a ring"))?;
        }
        let mut services: HashMap<&mut MapData, ServiceKey, ServiceInfo> =
            HashMap::try_from(map_mut(&mut self.ebpf, names::SERVICES)?)
                .map_err(map_error(names::SERVICES))?;
        let info = ServiceInfo {
            id,
            ring_len: ring.len() as u32,
            ring_slot: next_slot,
        };
        services
            .insert(key, info, 0)
            .map_err(map_error("writing a service"))?;
        let slot = self.slots.services.get_mut(&key).expect("checked above");
        slot.ring_slot = next_slot;
        slot.ring = Some(ring);
        Ok(())
    }

    /// Remove service `key` and free its reals: without the service no packet uses them.
    fn remove_service(&mut self, key: ServiceKey) -> Result<(), DataplaneError> {
        let mut services: HashMap<&mut MapData, ServiceKey, ServiceInfo> =
            HashMap::try_from(map_mut(&mut self.ebpf, names::SERVICES)?)
                .map_err(map_error(names::SERVICES))?;
        match services.remove(&key) {
            Ok(()) | Err(MapError::KeyNotFound) => {}
            Err(e) => return Err(map_error("removing a service")(e)),
        }
        let Some(slot) = self.slots.services.remove(&key) else {
            return Ok(());
        };
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
    fn apply(&mut self, services: &[ServiceSpec]) -> Result<ApplyReport, DataplaneError> {
        let mut report = ApplyReport::default();
        let next_hops = self.resolve_all(services);
        let mut wanted_services = BTreeSet::new();
        let mut wanted_reals = BTreeSet::new();
        let mut rings = Vec::new();

        for spec in services {
            if spec.reals.len() > RING_SIZE as usize {
                return Err(DataplaneError::Capacity {
                    what: "real servers in one virtual service",
                    max: RING_SIZE,
                });
            }
            let key = service_key(spec.addr, spec.port, spec.protocol);
            wanted_services.insert(key);
            let (service_id, new) = self.slots.service(key)?;
            if new {
                self.reset_per_cpu::<TrafficStats>(names::SERVICE_STATS, service_id)?;
                self.reset_per_cpu::<u32>(names::RR_CURSORS, service_id)?;
            }
            // (real id, weight) of the reals that can take new flows.
            let mut members = Vec::new();
            for real in &spec.reals {
                let (addr, family) = addr_bytes(real.addr);
                let real_key = RealKey {
                    service_id,
                    addr,
                    port: real.port.to_be_bytes(),
                    family,
                };
                wanted_reals.insert(real_key);
                let next_hop = match &next_hops[&real.addr] {
                    Ok(next_hop) => *next_hop,
                    Err(reason) => {
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
                }
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
                        _pad: [0; 2],
                    },
                )?;
                members.push((real_id, real.weight));
            }
            let weights: Vec<u32> = members.iter().map(|&(_, w)| w).collect();
            let sequence = sched::sequence(spec.scheduler, &weights, RING_SIZE as usize);
            if sequence.scaled {
                report.scaled.push((spec.addr, spec.port));
            }
            rings.push((key, sequence.order.iter().map(|&i| members[i].0).collect()));
        }

        // Retired reals keep their entry (flagged) for their established flows.
        for (key, _) in self.slots.reals_not_in(&wanted_reals) {
            if let Some((id, Some(entry))) = self.slots.retire(&key) {
                self.write_real(id, entry)?;
            }
        }
        for (key, ring) in rings {
            self.publish_ring(key, ring)?;
        }
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

    fn counters(&self) -> Result<Counters, DataplaneError> {
        counters::read(&self.ebpf)
    }
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
