//! The backup's side of connection sync on the XDP data plane: a received connection
//! (`sync::convert::Incoming`) becomes an entry of the flow table, on the real of this
//! director that has the master's real's address and port in the same service, counted
//! in that real's connections as every writer of the table counts, with the time left the
//! master gave it; a NAT flow gets its reply translation too, so that the real's replies
//! are translated from the first after a failover. A received persistence template
//! becomes a pin of `LB_PERSIST` the same way; the master reads its pins here too.
//!
//! It works on descriptors of its own, on the sync daemon's thread, and never waits for
//! the data-plane thread. Which id each real has is read from `LB_SERVICES` and
//! `LB_REALS`, again when a connection names a real it does not know (at most once a
//! second).

use std::{
    cell::RefCell,
    collections::HashMap,
    io,
    net::IpAddr,
    os::fd::{AsFd, OwnedFd},
    time::{Duration, Instant},
};

use lb_common::{
    FWD_NAT, FlowKey, FlowState, MAX_REALS, NatOrigin, PersistKey, PersistState, RealInfo,
    ServiceInfo, ServiceKey, SyncEvent, conn::is_active, mask_prefix,
};

use super::{
    conns::ConnTable,
    keys::{addr_bytes, addr_from},
    sweep, sys,
};
use crate::sync::convert::{Incoming, IncomingPin, Pin};

/// How often the real ids may be read again for a connection that names an unknown real.
const REINDEX_INTERVAL: Duration = Duration::from_secs(1);

/// Why a connection was not installed.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error("no virtual service {addr} port {port} protocol {proto} here")]
    NoService { addr: IpAddr, port: u16, proto: u8 },
    #[error("virtual service {addr} port {port} protocol {proto} has no persistence here")]
    NotPersistent { addr: IpAddr, port: u16, proto: u8 },
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
        source: io::Error,
    },
}

/// The maps the backup writes and reads, on descriptors of its own.
pub struct SyncTable {
    maps: SyncMaps,
    /// Each real's id and entry, by `RealAt`.
    index: HashMap<RealAt, (u32, RealInfo)>,
    indexed_at: Option<Instant>,
    /// The master's services, as read at most `SERVICE_CACHE_TIME` ago: every event asks
    /// whether its service persists, and a map call each would double the master's cost.
    services: RefCell<HashMap<ServiceAt, (Option<ServiceInfo>, Instant)>>,
}

/// How long the master trusts a service entry it read (a reload that turns persistence on
/// sends pins from then on).
const SERVICE_CACHE_TIME: Duration = Duration::from_secs(1);

/// A service's key as bytes (`ServiceKey` has no `Hash`).
type ServiceAt = ([u8; 16], [u8; 2], u8, u8);

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
    pub nat_reverse: OwnedFd,
    pub services: OwnedFd,
    pub reals: OwnedFd,
    pub persist: OwnedFd,
    pub conns: ConnTable,
}

/// A service key's address, port and protocol, for messages.
fn describe(key: &ServiceKey) -> (IpAddr, u16, u8) {
    (
        addr_from(key.addr, key.family).unwrap_or(IpAddr::from([0u8; 4])),
        u16::from_be_bytes(key.port),
        key.proto,
    )
}

/// Whether writing `entry` over `old` would change nothing but make the flow look older:
/// the same real, generation and state, seen no later.
fn carries_no_news(old: &FlowState, entry: &FlowState) -> bool {
    old.real_id == entry.real_id
        && old.real_generation == entry.real_generation
        && old.state == entry.state
        && old.last_seen_ns >= entry.last_seen_ns
}

fn map_error(what: &'static str) -> impl Fn(io::Error) -> InstallError {
    move |source| InstallError::Map { what, source }
}

impl SyncTable {
    pub fn open(maps: SyncMaps) -> Self {
        Self {
            maps,
            index: HashMap::new(),
            indexed_at: None,
            services: RefCell::new(HashMap::new()),
        }
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
        let service_key = sweep::service_key(key);
        let service = self.service(&service_key)?;
        let (real_id, real) = self.real_at(
            &service_key,
            &service,
            incoming.real,
            incoming.real_port,
            now,
        )?;
        let flows = self.maps.flows.as_fd();
        let entry = FlowState {
            real_id,
            state: incoming.state,
            _pad: [0; 3],
            last_seen_ns: now_ns.saturating_sub(u64::from(incoming.idle_secs) * 1_000_000_000),
            local_addr: 0,
            local_port: [0; 2],
            real_generation: real.generation,
        };
        let old = sys::lookup::<_, FlowState>(flows, key).map_err(map_error("LB_FLOWS"))?;
        if let Some(old) = &old
            && carries_no_news(old, &entry)
        {
            // This director's own copy (a director in both roles hears its flows back
            // from the other's walks): nothing to change.
            return Ok(());
        }
        if let Some(old) = old
            && self.counted(&old)
        {
            self.maps.conns.flow_removed(old.real_id, old.state);
        }
        sys::update(flows, key, &entry, 0).map_err(map_error("LB_FLOWS"))?;
        if is_active(incoming.state) {
            self.maps.conns.add(real_id, 1, 0);
        } else {
            self.maps.conns.add(real_id, 0, 1);
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
            sys::update(self.maps.nat_reverse.as_fd(), &reply, &origin, 0)
                .map_err(map_error("LB_NAT_REVERSE"))?;
        }
        Ok(())
    }

    /// Write a received persistence template into `LB_PERSIST` as of `now_ns`: this
    /// director's client network (masked by its own granularity) pinned to its real with
    /// the master's address and port, with the time left the master gave it.
    pub fn install_pin(
        &mut self,
        incoming: &IncomingPin,
        now_ns: u64,
        now: Instant,
    ) -> Result<(), InstallError> {
        let service = self.service(&incoming.service)?;
        if service.persist_timeout == 0 {
            let (addr, port, proto) = describe(&incoming.service);
            return Err(InstallError::NotPersistent { addr, port, proto });
        }
        let (real_id, real) = self.real_at(
            &incoming.service,
            &service,
            incoming.real,
            incoming.real_port,
            now,
        )?;
        let timeout = u64::from(service.persist_timeout);
        let elapsed = incoming
            .remaining_secs
            .map_or(0, |left| timeout.saturating_sub(u64::from(left)));
        let key = PersistKey {
            service_id: service.id,
            client: mask_prefix(incoming.client, service.persist_prefix),
        };
        let pin = PersistState {
            real_id,
            real_generation: real.generation,
            _pad: 0,
            last_seen_ns: now_ns.saturating_sub(elapsed * 1_000_000_000),
        };
        sys::update(self.maps.persist.as_fd(), &key, &pin, 0)
            .map(|_| ())
            .map_err(map_error("LB_PERSIST"))
    }

    /// The pin that sent flow `event`'s client to its real, if its service persists and
    /// the pin is alive and on that real (for the master's templates), as of `now_ns`.
    pub fn pin_of(&self, event: &SyncEvent, now_ns: u64) -> Option<Pin> {
        let key = &event.key;
        let service_key = sweep::service_key(key);
        let service = self.cached_service(&service_key)?;
        if service.persist_timeout == 0 {
            return None;
        }
        let client = mask_prefix(key.src, service.persist_prefix);
        let persist_key = PersistKey {
            service_id: service.id,
            client,
        };
        let pin = sys::lookup::<_, PersistState>(self.maps.persist.as_fd(), &persist_key)
            .ok()
            .flatten()
            .filter(|pin| pin.real_id == event.real_id)?;
        let elapsed_secs = now_ns.saturating_sub(pin.last_seen_ns) / 1_000_000_000;
        let remaining_secs = u64::from(service.persist_timeout).checked_sub(elapsed_secs)?;
        Some(Pin {
            service: service_key,
            client,
            remaining_secs: u32::try_from(remaining_secs).ok()?.max(1),
        })
    }

    /// The service at `key`, read again when the copy kept is older than
    /// `SERVICE_CACHE_TIME` (`None`: no such service, or it cannot be read).
    fn cached_service(&self, key: &ServiceKey) -> Option<ServiceInfo> {
        let at = (key.addr, key.port, key.proto, key.family);
        let now = Instant::now();
        let mut services = self.services.borrow_mut();
        if let Some((service, read)) = services.get(&at)
            && now.duration_since(*read) < SERVICE_CACHE_TIME
        {
            return *service;
        }
        if services.len() >= MAX_REALS as usize {
            services.clear();
        }
        let service = self.service(key).ok();
        services.insert(at, (service, now));
        service
    }

    /// The service at `key`.
    fn service(&self, key: &ServiceKey) -> Result<ServiceInfo, InstallError> {
        sys::lookup(self.maps.services.as_fd(), key)
            .map_err(map_error("LB_SERVICES"))?
            .ok_or_else(|| {
                let (addr, port, proto) = describe(key);
                InstallError::NoService { addr, port, proto }
            })
    }

    /// The id and entry of `service`'s real at `addr` and `port` (reading the ids again
    /// for one it does not know, at most once a `REINDEX_INTERVAL`).
    fn real_at(
        &mut self,
        key: &ServiceKey,
        service: &ServiceInfo,
        addr: IpAddr,
        port: u16,
        now: Instant,
    ) -> Result<(u32, RealInfo), InstallError> {
        let real_key = (service.id, addr_bytes(addr).0, port.to_be_bytes());
        if !self.index.contains_key(&real_key)
            && self
                .indexed_at
                .is_none_or(|at| now.duration_since(at) >= REINDEX_INTERVAL)
        {
            self.reindex(now)?;
        }
        self.index.get(&real_key).copied().ok_or_else(|| {
            let (vip, vport, _) = describe(key);
            InstallError::NoReal {
                addr: vip,
                port: vport,
                real: addr,
                real_port: port,
            }
        })
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
            self.maps.flows.as_fd(),
            &mut walk.cursor,
            &mut walk.keys,
            &mut walk.values,
        )
        .map_err(map_error("reading LB_FLOWS"))?;
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
        sys::lookup::<_, RealInfo>(self.maps.reals.as_fd(), &id)
            .ok()
            .flatten()
            .filter(|real| real.family != 0)
    }

    /// Whether flow entry `old` is in its real's counts: its real still has the
    /// generation it was scheduled at (a reused id starts its counts afresh).
    fn counted(&self, old: &FlowState) -> bool {
        self.real(old.real_id)
            .is_some_and(|real| real.generation == old.real_generation)
    }

    /// Read which id each real of each service has.
    fn reindex(&mut self, now: Instant) -> Result<(), InstallError> {
        self.indexed_at = Some(now);
        self.index.clear();
        for id in 0..MAX_REALS {
            let real: Option<RealInfo> =
                sys::lookup(self.maps.reals.as_fd(), &id).map_err(map_error("LB_REALS"))?;
            if let Some(real) = real.filter(|real| real.family != 0) {
                self.index
                    .insert((real.service_id, real.addr, real.port), (id, real));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_copy_that_is_no_newer_is_left_alone() {
        let old = FlowState {
            real_id: 3,
            state: 1,
            last_seen_ns: 5_000,
            real_generation: 2,
            ..bytemuck::Zeroable::zeroed()
        };
        let echo = FlowState {
            last_seen_ns: 4_000,
            ..old
        };
        assert!(carries_no_news(&old, &echo));
        assert!(carries_no_news(&old, &old));
        for news in [
            FlowState {
                last_seen_ns: 6_000,
                ..old
            },
            FlowState { state: 2, ..echo },
            FlowState { real_id: 4, ..echo },
            FlowState {
                real_generation: 3,
                ..echo
            },
        ] {
            assert!(!carries_no_news(&old, &news), "{news:?}");
        }
    }
}
