//! The pin directory and what is pinned in it.
//!
//! aya reuses a pinned map whatever its layout, so before loading we compare every pinned
//! map with the layout this build expects: its shape (type, key and value size, entries,
//! flags) and its version (`PinnedMap::version`, bumped when what a map's bytes mean
//! changes without its sizes changing), stamped by the build that created it in
//! `LB_LAYOUT`. A map that differs is removed and recreated empty, and so is every map
//! that holds its ids (`PinnedMap::holds_ids_of`: flows name reals, reals name services,
//! ...), transitively; the others keep their state. So an upgrade that changes a counter
//! map, or a new `--flow-table-size`, keeps the established flows where it can, and never
//! misreads old state.

use std::{
    ffi::CString,
    io,
    os::unix::ffi::OsStrExt,
    path::{Path, PathBuf},
};

use aya::maps::{HashMap, Map, MapData, MapInfo, MapType};
use lb_common::{
    BPF_F_MMAPABLE, BPF_F_NO_PREALLOC, ConnCounts, DecapSource, FlowKey, FlowState, LocalAddr,
    MAX_DECAP_SOURCES, MAX_LOCAL_ADDRS, MAX_REALS, MAX_SERVICES, NatOrigin, Outcome, PersistKey,
    PersistState, RealInfo, ServiceInfo, ServiceKey, Settings, TrafficStats, VipKey,
    conn::Timeouts,
    map_names as names,
    sched::{LOCALITY_TABLE_SIZE, LocalityEntry, LocalityKey},
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

/// A pinned map of this build: its shape, its version, and the maps whose ids (or table
/// offsets) its entries hold, which it must be recreated with.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PinnedMap {
    pub layout: MapLayout,
    pub version: u32,
    pub holds_ids_of: &'static [&'static str],
}

/// The version a map has when `LB_LAYOUT` does not say (pinned by a build before stamps).
const UNSTAMPED_VERSION: u32 = 1;

/// Where each build stamps the versions of its maps: map name (NUL-padded) → version. Its
/// own layout never changes.
const STAMPS: MapLayout = MapLayout {
    name: names::LAYOUT,
    kind: MapType::Hash,
    key_size: STAMP_KEY_LEN as u32,
    value_size: 4,
    max_entries: lb_common::MAX_LAYOUT_STAMPS,
    flags: 0,
};
const STAMP_KEY_LEN: usize = 16;

/// The maps of this build, with their versions and what they depend on. Bump a map's
/// version when the meaning of its key or value changes while its sizes stay the same.
pub fn pinned_maps(options: &XdpOptions) -> Vec<PinnedMap> {
    let depends = |name: &str| -> &'static [&'static str] {
        match name {
            // Flows name reals and FullNAT local addresses; pins and counts name reals.
            names::FLOWS => &[names::REALS, names::LOCAL_ADDRS],
            names::PERSIST | names::REAL_STATS | names::LOCALITY => &[names::REALS],
            // The connection counts count the flow table's flows, per real.
            names::REAL_CONNS => &[names::REALS, names::FLOWS],
            // Reals name their service; a service names its range of the arena; tables
            // name reals and local addresses.
            names::REALS => &[names::SERVICES],
            names::SERVICES => &[names::TABLES],
            names::TABLES => &[names::REALS, names::LOCAL_ADDRS],
            names::RR_CURSORS | names::SERVICE_STATS => &[names::SERVICES],
            _ => &[],
        }
    };
    expected_layouts(options)
        .into_iter()
        .map(|layout| PinnedMap {
            layout,
            // Every map is at its first version (the generations that took the place of
            // padding in reals, flows and pins read 0 in older entries, which matches).
            // A map whose meaning changes gets its own version here.
            version: UNSTAMPED_VERSION,
            holds_ids_of: depends(layout.name),
        })
        .collect()
}

/// The shapes of the maps of this build, with the flow table and the table arena sized as
/// configured.
pub fn expected_layouts(options: &XdpOptions) -> [MapLayout; 20] {
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
        layout::<LocalityKey, LocalityEntry>(
            names::LOCALITY,
            MapType::LruHash,
            LOCALITY_TABLE_SIZE,
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
        MapLayout {
            key_size: 0,
            value_size: 0,
            ..layout::<(), ()>(
                names::SYNC_EVENTS,
                MapType::RingBuf,
                lb_common::SYNC_EVENTS_BYTES,
            )
        },
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
    let maps = pinned_maps(options);
    let mut warnings = Vec::new();
    // Maps an older build pinned and this one no longer has (such as LB_RINGS).
    let entries = std::fs::read_dir(dir).map_err(|e| error(format!("cannot list: {e}")))?;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("LB_")
            && name != STAMPS.name
            && !maps.iter().any(|m| m.layout.name == name)
        {
            std::fs::remove_file(entry.path())
                .map_err(|e| error(format!("cannot remove {name}: {e}")))?;
            warnings.push(format!(
                "removed pinned map {name} under {}: this build does not use it",
                dir.display()
            ));
        }
    }
    let stamps = read_stamps(dir).map_err(error)?;
    let mut pinned = Vec::new();
    for map in &maps {
        let path = dir.join(map.layout.name);
        if !path.exists() {
            continue;
        }
        let found = pinned_layout(&path, map.layout.name).map_err(error)?;
        let stamp = stamps
            .as_ref()
            .map_or(Some(UNSTAMPED_VERSION), |s| s.get(map.layout.name).copied());
        pinned.push((map.layout.name, found, stamp));
    }
    let stale = stale_maps(&maps, &pinned);
    if !stale.is_empty() {
        for (name, _) in &stale {
            match std::fs::remove_file(dir.join(name)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(error(format!("cannot remove {name}: {e}"))),
            }
        }
        let flows = if stale.iter().any(|(name, _)| *name == names::FLOWS) {
            "established flows are not kept"
        } else {
            "established flows are kept"
        };
        let list: Vec<String> = stale
            .iter()
            .map(|(name, why)| format!("{name} ({why})"))
            .collect();
        warnings.push(format!(
            "pinned maps under {} recreated empty: {}; the others keep their state, and {flows}",
            dir.display(),
            list.join("; ")
        ));
    }
    Ok(warnings)
}

/// The pinned maps to recreate, with why: those whose shape or version differs from this
/// build's, those missing while others are pinned (their state is gone), and every map
/// that holds the ids of one of them, transitively. `pinned`: each pinned map's name,
/// shape, and stamped version (`None`: not stamped although the build stamped others).
fn stale_maps(
    maps: &[PinnedMap],
    pinned: &[(&'static str, MapLayout, Option<u32>)],
) -> Vec<(&'static str, String)> {
    let mut stale: Vec<(&'static str, String)> = Vec::new();
    if pinned.is_empty() {
        return stale;
    }
    for map in maps {
        let name = map.layout.name;
        let Some((_, found, stamp)) = pinned.iter().find(|(n, _, _)| *n == name) else {
            stale.push((name, "not pinned".to_owned()));
            continue;
        };
        if *found != map.layout {
            stale.push((name, describe_difference(found, &map.layout)));
        } else if *stamp != Some(map.version) {
            let was = stamp.map_or("none".to_owned(), |v| v.to_string());
            stale.push((name, format!("version {was}, this build's {}", map.version)));
        }
    }
    loop {
        let more: Vec<(&'static str, String)> = maps
            .iter()
            .filter(|m| !stale.iter().any(|(n, _)| *n == m.layout.name))
            .filter_map(|m| {
                let gone = m
                    .holds_ids_of
                    .iter()
                    .find(|dep| stale.iter().any(|(n, _)| n == *dep))?;
                Some((m.layout.name, format!("holds ids of {gone}")))
            })
            .collect();
        if more.is_empty() {
            break;
        }
        stale.extend(more);
    }
    // A map that is not pinned is simply created; it is worth a mention only when others
    // depend on it (their entries were lost with it).
    stale.retain(|(name, why)| {
        why != "not pinned" || maps.iter().any(|m| m.holds_ids_of.contains(name))
    });
    stale
}

/// What differs between a pinned map's shape and this build's.
fn describe_difference(found: &MapLayout, expected: &MapLayout) -> String {
    let mut parts = Vec::new();
    if found.kind != expected.kind {
        parts.push(format!("type {:?}, now {:?}", found.kind, expected.kind));
    }
    for (what, was, now) in [
        ("key size", found.key_size, expected.key_size),
        ("value size", found.value_size, expected.value_size),
        ("entries", found.max_entries, expected.max_entries),
        ("flags", found.flags, expected.flags),
    ] {
        if was != now {
            parts.push(format!("{what} {was}, now {now}"));
        }
    }
    parts.join(", ")
}

/// The shape of the map pinned at `path`.
fn pinned_layout(path: &Path, name: &'static str) -> Result<MapLayout, String> {
    let info = MapInfo::from_pin(path).map_err(|e| format!("cannot open pinned {name}: {e}"))?;
    Ok(MapLayout {
        name,
        kind: info.map_type().map_err(|e| format!("pinned {name}: {e}"))?,
        key_size: info.key_size(),
        value_size: info.value_size(),
        max_entries: info.max_entries(),
        flags: info.map_flags(),
    })
}

/// The versions stamped in the pinned `LB_LAYOUT`, by map name; `None` when it is not
/// pinned (an older build), or has another shape (then it is removed).
fn read_stamps(dir: &Path) -> Result<Option<std::collections::HashMap<String, u32>>, String> {
    let path = dir.join(STAMPS.name);
    if !path.exists() {
        return Ok(None);
    }
    if pinned_layout(&path, STAMPS.name)? != STAMPS {
        std::fs::remove_file(&path).map_err(|e| format!("cannot remove {}: {e}", STAMPS.name))?;
        return Ok(None);
    }
    let data = MapData::from_pin(&path).map_err(|e| format!("cannot open {}: {e}", STAMPS.name))?;
    let map = Map::HashMap(data);
    let stamps: HashMap<_, [u8; STAMP_KEY_LEN], u32> =
        HashMap::try_from(map).map_err(|e| format!("{}: {e}", STAMPS.name))?;
    let mut versions = std::collections::HashMap::new();
    for entry in stamps.iter() {
        let (key, version) = entry.map_err(|e| format!("reading {}: {e}", STAMPS.name))?;
        let len = key.iter().position(|&b| b == 0).unwrap_or(STAMP_KEY_LEN);
        versions.insert(String::from_utf8_lossy(&key[..len]).into_owned(), version);
    }
    Ok(Some(versions))
}

/// Stamp the versions of this build's maps into `LB_LAYOUT` (after loading).
pub fn write_stamps(ebpf: &mut aya::Ebpf, options: &XdpOptions) -> Result<(), DataplaneError> {
    let map = ebpf
        .map_mut(STAMPS.name)
        .ok_or_else(|| DataplaneError::Pins {
            path: STAMPS.name.to_owned(),
            reason: "not in the eBPF object".to_owned(),
        })?;
    let mut stamps: HashMap<&mut MapData, [u8; STAMP_KEY_LEN], u32> =
        HashMap::try_from(map).map_err(super::map_error(STAMPS.name))?;
    for map in pinned_maps(options) {
        let mut key = [0; STAMP_KEY_LEN];
        let name = map.layout.name.as_bytes();
        key[..name.len()].copy_from_slice(name);
        stamps
            .insert(key, map.version, 0)
            .map_err(super::map_error("stamping a map's version"))?;
    }
    Ok(())
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
