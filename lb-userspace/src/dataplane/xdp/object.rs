//! The loaded object and typed access to it: the compiled programs, loading them with
//! their maps (pinned ones reused), the options that size them, and the helpers that
//! open a map or program by name; rebuilding the backend's id state from maps an earlier
//! lbd left pinned.

use std::{
    collections::BTreeSet,
    net::IpAddr,
    os::fd::{BorrowedFd, OwnedFd},
    path::PathBuf,
    time::Duration,
};

use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, HashMap, MapData, MapError},
    programs::Xdp,
};
use lb_common::{
    FNAT_PORTS_DEFAULT, LocalAddr, RealInfo, ServiceInfo, ServiceKey, VipKey, map_names as names,
};

use super::{
    counters::{self, MapSource},
    keys::addr_from,
    layout,
    local_addrs::LocalAddrs,
    slots::Slots,
    sys,
};
use crate::dataplane::DataplaneError;

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
pub(super) fn fnat_port_shares(possible: usize) -> u16 {
    let shares = aya::util::online_cpus()
        .ok()
        .and_then(|cpus| cpus.into_iter().max())
        .map_or(possible, |highest| highest as usize + 1);
    u16::try_from(shares).unwrap_or(u16::MAX)
}

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

pub(super) fn map_error(what: impl Into<String>) -> impl FnOnce(MapError) -> DataplaneError {
    let what = what.into();
    move |source| DataplaneError::Map { what, source }
}

/// Set the only entry of one-entry array `name`.
pub(super) fn write_single<V: aya::Pod>(
    ebpf: &mut Ebpf,
    name: &'static str,
    value: V,
) -> Result<(), DataplaneError> {
    write_array(ebpf, name, 0, value)
}

/// Set entry `index` of array `name`.
pub(super) fn write_array<V: aya::Pod>(
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
pub(super) fn map_fd<'a>(
    ebpf: &'a Ebpf,
    name: &'static str,
) -> Result<BorrowedFd<'a>, DataplaneError> {
    let map = ebpf.map(name).ok_or_else(|| counters::missing(name))?;
    sys::fd_of(map).ok_or(DataplaneError::Sys {
        what: name,
        source: std::io::Error::other("not a map kind the balancer uses"),
    })
}

/// A descriptor of map `name` of our own.
pub(super) fn owned_map_fd(ebpf: &Ebpf, name: &'static str) -> Result<OwnedFd, DataplaneError> {
    map_fd(ebpf, name)?
        .try_clone_to_owned()
        .map_err(|source| DataplaneError::Sys { what: name, source })
}

pub(super) fn program_mut<'a>(
    ebpf: &'a mut Ebpf,
    name: &'static str,
) -> Result<&'a mut Xdp, DataplaneError> {
    let program = ebpf.program_mut(name).ok_or_else(|| not_xdp(name))?;
    program.try_into().map_err(program_error(name))
}

pub(super) fn program<'a>(ebpf: &'a Ebpf, name: &'static str) -> Result<&'a Xdp, DataplaneError> {
    let program = ebpf.program(name).ok_or_else(|| not_xdp(name))?;
    program.try_into().map_err(program_error(name))
}

/// Times a program load is tried when the kernel's verifier gives up because a signal
/// came (`EAGAIN`), as libbpf does: verifying the balancer takes seconds, and a signal to
/// the process in that time (a child exiting, SIGHUP) must not fail a start or a test.
const LOAD_ATTEMPTS: u32 = 5;

/// Load (verify) program `name` into the kernel.
pub fn load_program(ebpf: &mut Ebpf, name: &'static str) -> Result<(), DataplaneError> {
    let program = program_mut(ebpf, name)?;
    let mut attempt = 1;
    loop {
        match program.load() {
            Err(aya::programs::ProgramError::LoadError { io_error, .. })
                if io_error.raw_os_error() == Some(libc::EAGAIN) && attempt < LOAD_ATTEMPTS =>
            {
                attempt += 1;
            }
            result => return result.map_err(program_error(name)),
        }
    }
}

/// Program `name` is missing from the object.
fn not_xdp(name: &'static str) -> DataplaneError {
    program_error(name)(aya::programs::ProgramError::UnexpectedProgramType)
}

fn program_error(name: &'static str) -> impl Fn(aya::programs::ProgramError) -> DataplaneError {
    move |source| DataplaneError::Program {
        program: name,
        source,
    }
}

pub(super) fn map_mut<'a>(
    ebpf: &'a mut Ebpf,
    name: &'static str,
) -> Result<&'a mut aya::maps::Map, DataplaneError> {
    ebpf.map_mut(name).ok_or_else(|| counters::missing(name))
}

/// Rebuild the id state from the (possibly pinned, pre-existing) maps.
pub(super) fn rebuild_slots(ebpf: &Ebpf) -> Result<Slots, DataplaneError> {
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
pub(super) fn rebuild_vips(ebpf: &Ebpf) -> Result<BTreeSet<IpAddr>, DataplaneError> {
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
pub(super) fn rebuild_local_addrs(ebpf: &Ebpf) -> Result<LocalAddrs, DataplaneError> {
    let map: Array<_, LocalAddr> = Array::try_from(ebpf.get_map(names::LOCAL_ADDRS)?)
        .map_err(map_error(names::LOCAL_ADDRS))?;
    let entries: Vec<(u32, LocalAddr)> = (0..lb_common::MAX_LOCAL_ADDRS)
        .map(|id| map.get(&id, 0).map(|entry| (id, entry)))
        .collect::<Result<_, _>>()
        .map_err(map_error(names::LOCAL_ADDRS))?;
    Ok(LocalAddrs::rebuild(entries, lb_common::MAX_LOCAL_ADDRS))
}

/// An error and its sources on one line.
pub(super) fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
