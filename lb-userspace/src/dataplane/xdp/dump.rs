//! Raw views of the pinned maps for debugging (`lbctl map list`, `lbctl map dump NAME`):
//! what each map is, and its entries decoded field by field (addresses as addresses,
//! ports in host order). Array entries that are all zero are left out.

use std::{collections::BTreeMap, path::Path};

use aya::maps::{Array, HashMap, LpmTrie, Map, MapData, MapInfo, PerCpuArray};
use lb_common::{
    ConnCounts, DecapSource, FlowKey, FlowState, LocalAddr, NatOrigin, PersistKey, PersistState,
    RealInfo, ServiceInfo, ServiceKey, Settings, TrafficStats, VipKey,
    conn::Timeouts,
    map_names as names,
    sched::{LocalityEntry, LocalityKey},
};
use serde::Serialize;
use serde_json::{Value, json};

use super::keys::addr_from;
use crate::dataplane::DataplaneError;

/// What `lbctl map list` shows of one map.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct MapSummary {
    pub name: String,
    /// The kernel's map type, as aya names it.
    pub kind: String,
    pub key_size: u32,
    pub value_size: u32,
    pub max_entries: u32,
}

/// One decoded entry.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Entry {
    pub key: Value,
    pub value: Value,
}

/// Name, type and sizes of the map `name` pinned under `dir`.
pub fn summary(dir: &Path, name: &str) -> Result<MapSummary, DataplaneError> {
    let info = MapInfo::from_pin(dir.join(name)).map_err(|source| DataplaneError::Map {
        what: format!("reading the info of {name}"),
        source,
    })?;
    Ok(MapSummary {
        name: name.to_owned(),
        kind: info
            .map_type()
            .map_or_else(|_| "unknown".to_owned(), |t| format!("{t:?}")),
        key_size: info.key_size(),
        value_size: info.value_size(),
        max_entries: info.max_entries(),
    })
}

/// Name, type and sizes of each map pinned under `dir`.
pub fn list(dir: &Path, maps: &BTreeMap<String, Map>) -> Result<Vec<MapSummary>, DataplaneError> {
    maps.keys().map(|name| summary(dir, name)).collect()
}

fn read_error(name: &str) -> impl Fn(aya::maps::MapError) -> DataplaneError + '_ {
    move |source| DataplaneError::Map {
        what: format!("reading {name}"),
        source,
    }
}

fn addr(bytes: [u8; 16], family: u8) -> Value {
    addr_from(bytes, family).map_or(Value::Null, |a| json!(a.to_string()))
}

fn port(bytes: [u8; 2]) -> u16 {
    u16::from_be_bytes(bytes)
}

fn mac(bytes: [u8; 6]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn service_key(k: &ServiceKey) -> Value {
    json!({"addr": addr(k.addr, k.family), "port": port(k.port), "proto": k.proto})
}

fn service_info(v: &ServiceInfo) -> Value {
    json!({
        "id": v.id, "table_offset": v.table_offset, "table_len": v.table_len,
        "sched": v.sched, "sched_flags": v.sched_flags, "persist_prefix": v.persist_prefix,
        "flags": v.flags, "persist_timeout": v.persist_timeout, "laddr_len": v.laddr_len,
        "scheduler": lb_common::sched::NAMES.get(usize::from(v.scheduler)),
    })
}

fn real_info(v: &RealInfo) -> Value {
    json!({
        "addr": addr(v.addr, v.family), "port": port(v.port), "ifindex": v.ifindex,
        "service_id": v.service_id, "mac": mac(v.mac), "src_mac": mac(v.src_mac),
        "flags": v.flags, "vlan": v.vlan, "weight": v.weight, "last_weight": v.last_weight,
        "mtu": v.mtu, "fwd": v.fwd, "tunnel_src": addr(v.tunnel_src, v.family),
        "generation": v.generation,
    })
}

fn flow_key(k: &FlowKey) -> Value {
    json!({
        "src": addr(k.src, k.family), "sport": port(k.sport),
        "dst": addr(k.dst, k.family), "dport": port(k.dport), "proto": k.proto,
    })
}

fn flow_state(v: &FlowState) -> Value {
    json!({
        "real_id": v.real_id, "real_generation": v.real_generation,
        "state": super::flows::state_name(v.state), "last_seen_ns": v.last_seen_ns,
        "local_addr": v.local_addr, "local_port": port(v.local_port),
    })
}

fn nat_origin(v: &NatOrigin, family: u8) -> Value {
    json!({
        "vip": addr(v.vip, family), "vport": port(v.vport),
        "client": addr(v.client, family), "client_port": port(v.client_port),
        "full_nat": v.full_nat, "reserved_ms": v.reserved_ms,
    })
}

fn traffic(v: &TrafficStats) -> Value {
    json!({
        "packets": v.packets, "bytes": v.bytes, "new_flows": v.new_flows,
        "out_packets": v.out_packets, "out_bytes": v.out_bytes,
    })
}

/// The entries of every element of a hash map, decoded.
fn hash_entries<K: aya::Pod, V: aya::Pod>(
    map: HashMap<&MapData, K, V>,
    name: &str,
    decode: impl Fn(&K, &V) -> Entry,
) -> Result<Vec<Entry>, DataplaneError> {
    map.iter()
        .map(|e| e.map(|(k, v)| decode(&k, &v)).map_err(read_error(name)))
        .collect()
}

/// The non-zero elements of an array, decoded.
fn array_entries<V: aya::Pod + PartialEq>(
    map: Array<&MapData, V>,
    name: &str,
    zero: V,
    decode: impl Fn(&V) -> Value,
) -> Result<Vec<Entry>, DataplaneError> {
    let mut entries = Vec::new();
    for index in 0..map.len() {
        let value = map.get(&index, 0).map_err(read_error(name))?;
        if value != zero {
            entries.push(Entry {
                key: json!(index),
                value: decode(&value),
            });
        }
    }
    Ok(entries)
}

/// The elements of a per-CPU array with any CPU's value non-zero: the sum and each CPU's.
fn per_cpu_entries<V: aya::Pod + PartialEq + Default>(
    map: PerCpuArray<&MapData, V>,
    name: &str,
    decode: impl Fn(&V) -> Value,
) -> Result<Vec<Entry>, DataplaneError> {
    let mut entries = Vec::new();
    for index in 0..map.len() {
        let values = map.get(&index, 0).map_err(read_error(name))?;
        if values.iter().all(|v| *v == V::default()) {
            continue;
        }
        entries.push(Entry {
            key: json!(index),
            value: Value::Array(values.iter().map(&decode).collect()),
        });
    }
    Ok(entries)
}

/// Every entry of the map `name`, decoded. Maps of another program are refused.
pub fn dump(maps: &BTreeMap<String, Map>, name: &str) -> Result<Vec<Entry>, DataplaneError> {
    let map = maps.get(name).ok_or_else(|| DataplaneError::Pins {
        path: name.to_owned(),
        reason: format!(
            "no such map; pinned: {}",
            maps.keys().cloned().collect::<Vec<_>>().join(", ")
        ),
    })?;
    let wrong = |source| DataplaneError::Map {
        what: format!("opening {name} with its layout"),
        source,
    };
    macro_rules! typed {
        ($kind:ident, $k:ty, $v:ty) => {
            $kind::<&MapData, $k, $v>::try_from(map).map_err(wrong)?
        };
        ($kind:ident, $v:ty) => {
            $kind::<&MapData, $v>::try_from(map).map_err(wrong)?
        };
    }
    match name {
        names::SERVICES => hash_entries(typed!(HashMap, ServiceKey, ServiceInfo), name, |k, v| {
            Entry {
                key: service_key(k),
                value: service_info(v),
            }
        }),
        names::VIPS | names::DECAP_VIPS => {
            hash_entries(typed!(HashMap, VipKey, u8), name, |k, v| Entry {
                key: addr(k.addr, k.family),
                value: json!(v),
            })
        }
        names::FLOWS => hash_entries(typed!(HashMap, FlowKey, FlowState), name, |k, v| Entry {
            key: flow_key(k),
            value: flow_state(v),
        }),
        names::NAT_REVERSE => {
            hash_entries(typed!(HashMap, FlowKey, NatOrigin), name, |k, v| Entry {
                key: flow_key(k),
                value: nat_origin(v, k.family),
            })
        }
        names::PERSIST => hash_entries(typed!(HashMap, PersistKey, PersistState), name, |k, v| {
            Entry {
                key: json!({"service_id": k.service_id, "client": k.client.to_vec()}),
                value: json!({
                    "real_id": v.real_id,
                    "real_generation": v.real_generation,
                    "last_seen_ns": v.last_seen_ns,
                }),
            }
        }),
        names::LOCALITY => {
            hash_entries(typed!(HashMap, LocalityKey, LocalityEntry), name, |k, v| {
                Entry {
                    key: json!({"service_id": k.service_id, "destination": k.addr.to_vec()}),
                    value: json!({
                        "reals": v.reals[..(v.len as usize).min(v.reals.len())].to_vec(),
                        "last_use_ns": v.last_use_ns,
                        "last_change_ns": v.last_change_ns,
                    }),
                }
            })
        }
        names::REALS => array_entries(typed!(Array, RealInfo), name, super::FREE_REAL, real_info),
        names::TABLES => array_entries(typed!(Array, u32), name, 0, |v| json!(v)),
        names::REAL_CONNS => array_entries(
            typed!(Array, ConnCounts),
            name,
            ConnCounts::default(),
            |v| json!({"active": v.active(), "inactive": v.inactive()}),
        ),
        names::LOCAL_ADDRS => {
            let zero = LocalAddr {
                addr: [0; 16],
                family: 0,
                _pad: [0; 3],
            };
            array_entries(typed!(Array, LocalAddr), name, zero, |v| {
                addr(v.addr, v.family)
            })
        }
        names::SETTINGS => array_entries(
            typed!(Array, Settings),
            name,
            Settings::default(),
            |v| json!({"features": v.features, "fnat_port_min": v.fnat_port_min, "fnat_port_max": v.fnat_port_max, "cpus": v.cpus}),
        ),
        names::TIMEOUTS => array_entries(
            typed!(Array, Timeouts),
            name,
            Timeouts { secs: [0; 12] },
            |v| json!(v.secs.to_vec()),
        ),
        names::SERVICE_STATS | names::REAL_STATS => {
            per_cpu_entries(typed!(PerCpuArray, TrafficStats), name, traffic)
        }
        names::LAYOUT => hash_entries(typed!(HashMap, [u8; 16], u32), name, |k, v| {
            let len = k.iter().position(|&b| b == 0).unwrap_or(k.len());
            Entry {
                key: json!(String::from_utf8_lossy(&k[..len])),
                value: json!(v),
            }
        }),
        names::DECAP_SOURCES => {
            let trie = typed!(LpmTrie, DecapSource, u8);
            trie.iter()
                .map(|entry| {
                    let (key, value) = entry.map_err(read_error(name))?;
                    let data = key.data();
                    let mut bytes = [0; 16];
                    bytes.copy_from_slice(&data[1..]);
                    let len = key.prefix_len().saturating_sub(8);
                    Ok(Entry {
                        key: match addr_from(bytes, data[0]) {
                            Some(addr) => json!(format!("{addr}/{len}")),
                            None => json!(null),
                        },
                        value: json!(value),
                    })
                })
                .collect()
        }
        names::OUTCOMES | names::DECAP_STATS => {
            per_cpu_entries(typed!(PerCpuArray, u64), name, |v| json!(v))
        }
        names::RR_CURSORS => per_cpu_entries(typed!(PerCpuArray, u32), name, |v| json!(v)),
        other => Err(DataplaneError::Pins {
            path: other.to_owned(),
            reason: "not a map of the balancer: lbctl does not know its layout".to_owned(),
        }),
    }
}
