//! The pin directory and what is pinned in it.
//!
//! aya reuses a pinned map whatever its layout, so before loading we compare every pinned
//! map with the layout this build expects (type, key and value size, entries, flags). The
//! maps refer to each other by id (flows → reals → services → tables), so if any differs
//! all pins are removed, with a warning, and recreated empty: an upgrade that changes a
//! map, or a new `--flow-table-size` or `--sched-table-entries`, starts afresh instead of misreading old state.

use std::{
    ffi::CString,
    io,
    os::unix::ffi::OsStrExt,
    path::{Path, PathBuf},
};

use aya::maps::{MapInfo, MapType};
use lb_common::{
    BPF_F_MMAPABLE, BPF_F_NO_PREALLOC, ConnCounts, DecapSource, FlowKey, FlowState, LocalAddr,
    MAX_DECAP_SOURCES, MAX_LOCAL_ADDRS, MAX_REALS, MAX_SERVICES, NatOrigin, Outcome, PersistKey,
    PersistState, RealInfo, ServiceInfo, ServiceKey, Settings, TrafficStats, VipKey,
    conn::Timeouts, map_names as names,
};

use super::XdpOptions;
use crate::dataplane::DataplaneError;

/// Where pins live unless told otherwise: `/sys/fs/bpf/<instance>`.
pub const BPFFS_ROOT: &str = "/sys/fs/bpf";
const BPF_FS_MAGIC: i64 = 0xcafe4a11;

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MapLayout {
    pub name: &'static str,
    pub kind: MapType,
    pub key_size: u32,
    pub value_size: u32,
    pub max_entries: u32,
    pub flags: u32,
}

/// The maps of this build, with the flow table and the table arena sized as configured.
pub fn expected_layouts(options: &XdpOptions) -> [MapLayout; 18] {
    const fn layout<K, V>(name: &'static str, kind: MapType, max_entries: u32) -> MapLayout {
        MapLayout {
            name,
            kind,
            key_size: size_of::<K>() as u32,
            value_size: size_of::<V>() as u32,
            max_entries,
            flags: 0,
        }
    }
    [
        MapLayout {
            flags: BPF_F_NO_PREALLOC,
            ..layout::<ServiceKey, ServiceInfo>(names::SERVICES, MapType::Hash, MAX_SERVICES)
        },
        layout::<u32, RealInfo>(names::REALS, MapType::Array, MAX_REALS),
        layout::<u32, u32>(names::TABLES, MapType::Array, options.sched_table_entries),
        layout::<u32, u32>(names::RR_CURSORS, MapType::PerCpuArray, MAX_SERVICES),
        layout::<FlowKey, FlowState>(names::FLOWS, MapType::LruHash, options.flow_table_size),
        MapLayout {
            flags: BPF_F_MMAPABLE,
            ..layout::<u32, ConnCounts>(names::REAL_CONNS, MapType::Array, MAX_REALS)
        },
        layout::<FlowKey, NatOrigin>(
            names::NAT_REVERSE,
            MapType::LruHash,
            options.flow_table_size,
        ),
        layout::<PersistKey, PersistState>(
            names::PERSIST,
            MapType::LruHash,
            options.persist_table_size,
        ),
        layout::<u32, Timeouts>(names::TIMEOUTS, MapType::Array, 1),
        layout::<u32, Settings>(names::SETTINGS, MapType::Array, 1),
        layout::<u32, LocalAddr>(names::LOCAL_ADDRS, MapType::Array, MAX_LOCAL_ADDRS),
        layout::<VipKey, u8>(names::DECAP_VIPS, MapType::Hash, MAX_SERVICES),
        MapLayout {
            flags: BPF_F_NO_PREALLOC,
            ..layout::<aya::maps::lpm_trie::Key<DecapSource>, u8>(
                names::DECAP_SOURCES,
                MapType::LpmTrie,
                MAX_DECAP_SOURCES,
            )
        },
        layout::<VipKey, u8>(names::VIPS, MapType::Hash, MAX_SERVICES),
        layout::<u32, u64>(
            names::DECAP_STATS,
            MapType::PerCpuArray,
            lb_common::decap_stats::COUNT,
        ),
        layout::<u32, TrafficStats>(names::SERVICE_STATS, MapType::PerCpuArray, MAX_SERVICES),
        layout::<u32, TrafficStats>(names::REAL_STATS, MapType::PerCpuArray, MAX_REALS),
        layout::<u32, u64>(names::OUTCOMES, MapType::PerCpuArray, Outcome::COUNT),
    ]
}

/// Make `dir` ready for pinning: bpffs mounted at its root (mounted here if missing), the
/// directory created, pins with another layout removed. Returns one warning per removed pin.
pub fn prepare_pin_dir(dir: &Path, options: &XdpOptions) -> Result<Vec<String>, DataplaneError> {
    let error = |reason: String| DataplaneError::Pins {
        path: dir.display().to_string(),
        reason,
    };
    if dir.starts_with(BPFFS_ROOT) {
        ensure_bpffs()?;
    }
    std::fs::create_dir_all(dir).map_err(|e| error(format!("cannot create: {e}")))?;
    if !is_bpffs(dir) {
        return Err(error("not on a bpf filesystem".into()));
    }
    let mut differences = Vec::new();
    let layouts = expected_layouts(options);
    for expected in layouts {
        let path = dir.join(expected.name);
        if !path.exists() {
            continue;
        }
        let info = MapInfo::from_pin(&path)
            .map_err(|e| error(format!("cannot open pinned {}: {e}", expected.name)))?;
        let found = MapLayout {
            name: expected.name,
            kind: info
                .map_type()
                .map_err(|e| error(format!("pinned {}: {e}", expected.name)))?,
            key_size: info.key_size(),
            value_size: info.value_size(),
            max_entries: info.max_entries(),
            flags: info.map_flags(),
        };
        if found != expected {
            differences.push(format!("{found:?}, expected {expected:?}"));
        }
    }
    let mut warnings = Vec::new();
    // Maps an older build pinned and this one no longer has (such as LB_RINGS).
    let entries = std::fs::read_dir(dir).map_err(|e| error(format!("cannot list: {e}")))?;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("LB_") && !layouts.iter().any(|l| l.name == name) {
            std::fs::remove_file(entry.path())
                .map_err(|e| error(format!("cannot remove {name}: {e}")))?;
            warnings.push(format!(
                "removed pinned map {name} under {}: this build does not use it",
                dir.display()
            ));
        }
    }
    if !differences.is_empty() {
        for expected in layouts {
            let path = dir.join(expected.name);
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(error(format!("cannot remove {}: {e}", path.display()))),
            }
        }
        warnings.push(format!(
            "pinned maps under {} have another layout ({}); all recreated empty: established flows are not kept",
            dir.display(),
            differences.join("; ")
        ));
    }
    Ok(warnings)
}

/// Mount a bpf filesystem on `/sys/fs/bpf` unless one is there (systemd normally mounts
/// it; minimal systems and containers may not).
pub fn ensure_bpffs() -> Result<(), DataplaneError> {
    let root = Path::new(BPFFS_ROOT);
    if is_bpffs(root) {
        return Ok(());
    }
    mount_bpffs(root).map_err(|e| DataplaneError::Pins {
        path: BPFFS_ROOT.into(),
        reason: format!("not a bpf filesystem, and mounting one failed: {e}"),
    })
}

/// A new, unique directory for maps that must not be shared (removed after loading).
pub fn private_pin_dir() -> PathBuf {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    Path::new(BPFFS_ROOT).join(format!("lb-private-{}-{n}", std::process::id()))
}

/// Pin directory of instance `name`.
pub fn pin_dir(instance: &str) -> PathBuf {
    Path::new(BPFFS_ROOT).join(instance)
}

fn is_bpffs(path: &Path) -> bool {
    let Ok(c_path) = CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: statfs writes into the zeroed struct we own; the path is NUL-terminated.
    unsafe {
        let mut stat: libc::statfs = std::mem::zeroed();
        libc::statfs(c_path.as_ptr(), &mut stat) == 0 && stat.f_type as i64 == BPF_FS_MAGIC
    }
}

fn mount_bpffs(path: &Path) -> io::Result<()> {
    let target = CString::new(path.as_os_str().as_bytes())?;
    // SAFETY: all pointers are valid NUL-terminated strings for the duration of the call.
    let rc = unsafe {
        libc::mount(
            c"bpf".as_ptr(),
            target.as_ptr(),
            c"bpf".as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}
