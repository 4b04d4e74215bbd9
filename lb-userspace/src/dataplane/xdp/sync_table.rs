//! The backup's side of connection sync on the XDP data plane: a received connection
//! (`sync::convert::Incoming`) becomes an entry of the flow table, on the real of this
//! director that has the master's real's address and port in the same service, counted
//! in that real's connections as every writer of the table counts, with the time left the
//! master gave it; a NAT flow gets its reply translation too, so that the real's replies
//! are translated from the first after a failover.
//!
//! It works on descriptors of its own, on the sync daemon's thread, and never waits for
//! the data-plane thread. Which id each real has is read from `LB_SERVICES` and
//! `LB_REALS`, again when a connection names a real it does not know (at most once a
//! second).

use std::{
    collections::HashMap,
    net::IpAddr,
    os::fd::{AsFd, OwnedFd},
    time::{Duration, Instant},
};

use aya::maps::{Array, HashMap as BpfHashMap, Map, MapData, MapError};
use lb_common::{
    FAMILY_IPV6, FWD_NAT, FlowKey, FlowState, MAX_REALS, NatOrigin, RealInfo, ServiceInfo,
    ServiceKey, SyncEvent, conn::is_active,
};

use super::{conns::ConnTable, sys};
use crate::sync::convert::Incoming;

/// How often the real ids may be read again for a connection that names an unknown real.
const REINDEX_INTERVAL: Duration = Duration::from_secs(1);

/// Why a connection was not installed.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error("no virtual service {addr} port {port} protocol {proto} here")]
    NoService { addr: IpAddr, port: u16, proto: u8 },
    #[error("service {addr} port {port} has no real {real} port {real_port} here")]
    NoReal {
        addr: IpAddr,
        port: u16,
        real: IpAddr,
        real_port: u16,
    },
    #[error("{what}: {source}")]
    Map {
        what: &'static str,
        source: MapError,
    },
    #[error("reading the flow table: {source}")]
    Walk { source: std::io::Error },
}

/// The maps the backup writes and reads, on descriptors of its own.
pub struct SyncTable {
    flows: BpfHashMap<MapData, FlowKey, FlowState>,
    /// The flow table again, for the master's walks in batches.
    flows_walk: OwnedFd,
    nat_reverse: BpfHashMap<MapData, FlowKey, NatOrigin>,
    services: BpfHashMap<MapData, ServiceKey, ServiceInfo>,
    reals: Array<MapData, RealInfo>,
    conns: ConnTable,
    /// Each real's id and entry, by `RealAt`.
    index: HashMap<RealAt, (u32, RealInfo)>,
    indexed_at: Option<Instant>,
}

/// Flows read per slice of a walk.
const WALK_SLICE: usize = 4096;

/// Where a walk of the flow table stands.
pub struct FlowWalk {
    cursor: sys::BatchCursor,
    keys: Vec<FlowKey>,
    values: Vec<FlowState>,
}

impl Default for FlowWalk {
    fn default() -> Self {
        Self {
            cursor: sys::BatchCursor::default(),
            keys: vec![bytemuck::Zeroable::zeroed(); WALK_SLICE],
            values: vec![bytemuck::Zeroable::zeroed(); WALK_SLICE],
        }
    }
}

impl FlowWalk {
    /// Whether the whole table has been read.
    pub fn done(&self) -> bool {
        self.cursor.done()
    }
}

/// Where a real is: its service's id, its address and port (as `LB_REALS` holds them).
type RealAt = (u32, [u8; 16], [u8; 2]);

/// Descriptors of the loaded object's maps, for `SyncTable::open`.
pub struct SyncMaps {
    pub flows: OwnedFd,
    pub flows_walk: OwnedFd,
    pub nat_reverse: OwnedFd,
    pub services: OwnedFd,
    pub reals: OwnedFd,
    pub conns: ConnTable,
}

fn map_error(what: &'static str) -> impl Fn(MapError) -> InstallError {
    move |source| InstallError::Map { what, source }
}

impl SyncTable {
    pub fn open(maps: SyncMaps) -> Result<Self, InstallError> {
        let data = |fd, what| MapData::from_fd(fd).map_err(map_error(what));
        Ok(Self {
            flows: BpfHashMap::try_from(Map::LruHashMap(data(maps.flows, "LB_FLOWS")?))
                .map_err(map_error("LB_FLOWS"))?,
            flows_walk: maps.flows_walk,
            nat_reverse: BpfHashMap::try_from(Map::LruHashMap(data(
                maps.nat_reverse,
                "LB_NAT_REVERSE",
            )?))
            .map_err(map_error("LB_NAT_REVERSE"))?,
            services: BpfHashMap::try_from(Map::HashMap(data(maps.services, "LB_SERVICES")?))
                .map_err(map_error("LB_SERVICES"))?,
            reals: Array::try_from(Map::Array(data(maps.reals, "LB_REALS")?))
                .map_err(map_error("LB_REALS"))?,
            conns: maps.conns,
            index: HashMap::new(),
            indexed_at: None,
        })
    }

    /// Write `incoming` into the flow table as of `now_ns` (the data plane's clock), on
    /// the real of its service with its address and port. An entry there before it (a
    /// flow on another real, say) leaves its real's counts.
    pub fn install(
        &mut self,
        incoming: &Incoming,
        now_ns: u64,
        now: Instant,
    ) -> Result<(), InstallError> {
        let key = &incoming.key;
        let service_key = ServiceKey {
            addr: key.dst,
            port: key.dport,
            proto: key.proto,
            family: key.family,
        };
        let vip = address(&key.dst, key.family);
        let service = match self.services.get(&service_key, 0) {
            Ok(service) => service,
            Err(MapError::KeyNotFound) => {
                return Err(InstallError::NoService {
                    addr: vip,
                    port: u16::from_be_bytes(key.dport),
                    proto: key.proto,
                });
            }
            Err(source) => return Err(map_error("LB_SERVICES")(source)),
        };
        let real_key = (
            service.id,
            address_bytes(incoming.real),
            incoming.real_port.to_be_bytes(),
        );
        if !self.index.contains_key(&real_key)
            && self
                .indexed_at
                .is_none_or(|at| now.duration_since(at) >= REINDEX_INTERVAL)
        {
            self.reindex(now)?;
        }
        let &(real_id, real) = self.index.get(&real_key).ok_or(InstallError::NoReal {
            addr: vip,
            port: u16::from_be_bytes(key.dport),
            real: incoming.real,
            real_port: incoming.real_port,
        })?;
        if let Ok(old) = self.flows.get(key, 0)
            && self.counted(&old)
        {
            self.conns.flow_removed(old.real_id, old.state);
        }
        let entry = FlowState {
            real_id,
            state: incoming.state,
            _pad: [0; 3],
            last_seen_ns: now_ns.saturating_sub(u64::from(incoming.idle_secs) * 1_000_000_000),
            local_addr: 0,
            local_port: [0; 2],
            real_generation: real.generation,
        };
        self.flows
            .insert(key, entry, 0)
            .map_err(map_error("LB_FLOWS"))?;
        if is_active(incoming.state) {
            self.conns.add(real_id, 1, 0);
        } else {
            self.conns.add(real_id, 0, 1);
        }
        if real.fwd == FWD_NAT {
            let reply = FlowKey {
                src: real.addr,
                dst: key.src,
                sport: real.port,
                dport: key.sport,
                proto: key.proto,
                family: key.family,
                _pad: [0; 2],
            };
            let origin = NatOrigin {
                vip: key.dst,
                client: key.src,
                vport: key.dport,
                client_port: key.sport,
                full_nat: 0,
                _pad: [0; 3],
                reserved_ms: 0,
            };
            self.nat_reverse
                .insert(reply, origin, 0)
                .map_err(map_error("LB_NAT_REVERSE"))?;
        }
        Ok(())
    }

    /// The next slice of a walk of the flow table: its flows last seen at `since_ns` or
    /// later, as events (the master resends them so that the backups' copies do not time
    /// out while the flows live).
    pub fn walk_slice(
        &self,
        walk: &mut FlowWalk,
        since_ns: u64,
    ) -> Result<Vec<SyncEvent>, InstallError> {
        let count = sys::lookup_batch(
            self.flows_walk.as_fd(),
            &mut walk.cursor,
            &mut walk.keys,
            &mut walk.values,
        )
        .map_err(|source| InstallError::Walk { source })?;
        Ok(walk.keys[..count]
            .iter()
            .zip(&walk.values[..count])
            .filter(|(_, state)| state.last_seen_ns >= since_ns)
            .map(|(key, state)| SyncEvent {
                key: *key,
                real_id: state.real_id,
                state: state.state,
                _pad: [0; 3],
            })
            .collect())
    }

    /// The entry of real `id`, if it is in use (for the master's records).
    pub fn real(&self, id: u32) -> Option<RealInfo> {
        self.reals.get(&id, 0).ok().filter(|real| real.family != 0)
    }

    /// Whether flow entry `old` is in its real's counts: its real still has the
    /// generation it was scheduled at (a reused id starts its counts afresh).
    fn counted(&self, old: &FlowState) -> bool {
        self.reals
            .get(&old.real_id, 0)
            .is_ok_and(|real| real.family != 0 && real.generation == old.real_generation)
    }

    /// Read which id each real of each service has.
    fn reindex(&mut self, now: Instant) -> Result<(), InstallError> {
        self.indexed_at = Some(now);
        self.index.clear();
        for id in 0..MAX_REALS {
            let real = self.reals.get(&id, 0).map_err(map_error("LB_REALS"))?;
            if real.family != 0 {
                self.index
                    .insert((real.service_id, real.addr, real.port), (id, real));
            }
        }
        Ok(())
    }
}

/// An address as the maps hold it: IPv4 in the first 4 bytes.
fn address_bytes(addr: IpAddr) -> [u8; 16] {
    match addr {
        IpAddr::V4(v4) => {
            let mut bytes = [0; 16];
            bytes[..4].copy_from_slice(&v4.octets());
            bytes
        }
        IpAddr::V6(v6) => v6.octets(),
    }
}

/// The address of a map key of `family`.
fn address(bytes: &[u8; 16], family: u8) -> IpAddr {
    if family == FAMILY_IPV6 {
        IpAddr::from(*bytes)
    } else {
        IpAddr::from([bytes[0], bytes[1], bytes[2], bytes[3]])
    }
}
