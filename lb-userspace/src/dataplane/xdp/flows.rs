//! The flow table as `ipvsadm -Lnc` shows IPVS's connections: protocol, time left in the
//! state, state, client, virtual service, real; and the persistence pins (`LB_PERSIST`)
//! as it shows IPVS's templates (the client's network with port 0, state ASSURED: a pin
//! is kept for the whole timeout, as an assured template is; the time the pin has left). Read from the maps (pinned or loaded),
//! with batch reads: a walk key by key starts over from the first key whenever the key it
//! stands on is removed meanwhile (lbd removes flows all the time), seeing entries twice.

use std::net::SocketAddr;

use aya::maps::{Array, HashMap};
use lb_common::{
    FlowKey, FlowState, PersistKey, PersistState, RealInfo, ServiceInfo, ServiceKey,
    conn::{self, Timeouts},
    map_names as names,
};
use serde::Serialize;

use super::{
    counters::{MapSource, forward_name},
    keys::{addr_from, protocol_from},
    sweep::SLICE,
    sys::{self, BatchCursor},
};
use crate::{dataplane::DataplaneError, model::Protocol};

/// One connection (a flow table entry that has not timed out).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Connection {
    pub protocol: Protocol,
    /// Seconds until the entry times out in its state.
    pub expire_secs: u64,
    /// IPVS's name of the state (`ESTABLISHED`, `FIN_WAIT`, ..., `UDP`).
    pub state: &'static str,
    /// Counted as active (ActiveConn) rather than inactive.
    pub active: bool,
    pub client: SocketAddr,
    #[serde(rename = "virtual")]
    pub vip: SocketAddr,
    pub real: SocketAddr,
    /// ipvsadm's name of the forwarding method.
    pub forward: &'static str,
}

/// IPVS's name of a connection state (`ip_vs_state_name`).
pub fn state_name(state: u8) -> &'static str {
    match state {
        conn::STATE_NONE => "NONE",
        conn::STATE_ESTABLISHED => "ESTABLISHED",
        conn::STATE_SYN_SENT => "SYN_SENT",
        conn::STATE_SYN_RECV => "SYN_RECV",
        conn::STATE_FIN_WAIT => "FIN_WAIT",
        conn::STATE_TIME_WAIT => "TIME_WAIT",
        conn::STATE_CLOSE => "CLOSE",
        conn::STATE_CLOSE_WAIT => "CLOSE_WAIT",
        conn::STATE_LAST_ACK => "LAST_ACK",
        conn::STATE_LISTEN => "LISTEN",
        conn::STATE_SYNACK => "SYNACK",
        conn::STATE_UDP => "UDP",
        _ => "ERR!",
    }
}

/// `CLOCK_MONOTONIC` now, in nanoseconds: the data plane's clock.
pub fn monotonic_now_ns() -> u64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec it is given and nothing else.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    now.tv_sec as u64 * 1_000_000_000 + now.tv_nsec as u64
}

fn map_error(what: &'static str) -> impl Fn(aya::maps::MapError) -> DataplaneError {
    move |source| DataplaneError::Map {
        what: format!("reading {what}"),
        source,
    }
}

/// The entries of the flow table (`LB_FLOWS`), at most `limit` of them, each once.
pub fn entries(
    source: &impl MapSource,
    limit: usize,
) -> Result<Vec<(FlowKey, FlowState)>, DataplaneError> {
    let map = source.get_map(names::FLOWS)?;
    let fd = sys::fd_of(map).ok_or_else(|| DataplaneError::Sys {
        what: "reading the flow table",
        source: std::io::Error::other("LB_FLOWS is not a hash map"),
    })?;
    let mut keys = vec![super::sweep::zeroed_key(); SLICE];
    let mut values = vec![super::sweep::zeroed_state(); SLICE];
    let mut cursor = BatchCursor::default();
    let mut entries = Vec::new();
    while !cursor.done() && entries.len() < limit {
        let count =
            sys::lookup_batch(fd, &mut cursor, &mut keys, &mut values).map_err(|source| {
                DataplaneError::Sys {
                    what: "reading the flow table",
                    source,
                }
            })?;
        entries.extend(
            keys[..count]
                .iter()
                .copied()
                .zip(values[..count].iter().copied()),
        );
    }
    entries.truncate(limit);
    Ok(entries)
}

/// The live connections at `now_ns`, in a stable order (virtual service, client). At most
/// `limit` of them (the table may hold millions).
pub fn read(
    source: &impl MapSource,
    now_ns: u64,
    limit: usize,
) -> Result<Vec<Connection>, DataplaneError> {
    let reals: Array<_, RealInfo> =
        Array::try_from(source.get_map(names::REALS)?).map_err(map_error(names::REALS))?;
    let timeouts = match source.get_map(names::TIMEOUTS) {
        Ok(map) => Array::<_, Timeouts>::try_from(map)
            .and_then(|array| array.get(&0, 0))
            .unwrap_or(Timeouts::IPVS),
        Err(_) => Timeouts::IPVS,
    };
    let mut connections = Vec::new();
    for (key, state) in entries(source, usize::MAX)? {
        if timeouts.expired(state.state, state.last_seen_ns, now_ns) {
            continue;
        }
        // A flow whose real's id went to another real since is nobody's connection.
        let Ok(real) = reals.get(&state.real_id, 0).map_err(drop).and_then(|real| {
            (real.generation == state.real_generation)
                .then_some(real)
                .ok_or(())
        }) else {
            continue;
        };
        let (Some(client), Some(vip), Some(real_addr), Some(protocol)) = (
            addr_from(key.src, key.family),
            addr_from(key.dst, key.family),
            addr_from(real.addr, real.family),
            protocol_from(key.proto),
        ) else {
            continue;
        };
        let idle = now_ns.saturating_sub(state.last_seen_ns);
        let expire_secs = timeouts.timeout_ns(state.state).saturating_sub(idle) / 1_000_000_000;
        connections.push(Connection {
            protocol,
            expire_secs,
            state: state_name(state.state),
            active: conn::is_active(state.state),
            client: SocketAddr::new(client, u16::from_be_bytes(key.sport)),
            vip: SocketAddr::new(vip, u16::from_be_bytes(key.dport)),
            real: SocketAddr::new(real_addr, u16::from_be_bytes(real.port)),
            forward: forward_name(real.fwd),
        });
        if connections.len() >= limit {
            break;
        }
    }
    if connections.len() < limit {
        let room = limit - connections.len();
        connections.extend(templates(source, &reals, now_ns)?.into_iter().take(room));
    }
    connections.sort_by_key(|c| (c.vip, c.protocol.ip_proto(), c.client));
    Ok(connections)
}

/// The live persistence pins at `now_ns`, as IPVS's templates (none when the object has
/// no `LB_PERSIST`, as a decap-only one).
fn templates(
    source: &impl MapSource,
    reals: &Array<&aya::maps::MapData, RealInfo>,
    now_ns: u64,
) -> Result<Vec<Connection>, DataplaneError> {
    let (Ok(persist), Ok(services)) = (
        source.get_map(names::PERSIST),
        source.get_map(names::SERVICES),
    ) else {
        return Ok(Vec::new());
    };
    let persist: HashMap<_, PersistKey, PersistState> =
        HashMap::try_from(persist).map_err(map_error(names::PERSIST))?;
    let services: HashMap<_, ServiceKey, ServiceInfo> =
        HashMap::try_from(services).map_err(map_error(names::SERVICES))?;
    let by_id: std::collections::HashMap<u32, (ServiceKey, ServiceInfo)> = services
        .iter()
        .filter_map(Result::ok)
        .map(|(key, info)| (info.id, (key, info)))
        .collect();
    let mut pins = Vec::new();
    for (key, pin) in persist.iter().filter_map(Result::ok) {
        let Some((service_key, service)) = by_id.get(&key.service_id) else {
            continue;
        };
        let timeout_ns = u64::from(service.persist_timeout) * 1_000_000_000;
        let idle = now_ns.saturating_sub(pin.last_seen_ns);
        if service.persist_timeout == 0 || idle > timeout_ns {
            continue;
        }
        let Ok(real) = reals.get(&pin.real_id, 0) else {
            continue;
        };
        if real.generation != pin.real_generation || real.service_id != service.id {
            continue;
        }
        let (Some(client), Some(vip), Some(real_addr), Some(protocol)) = (
            addr_from(key.client, service_key.family),
            addr_from(service_key.addr, service_key.family),
            addr_from(real.addr, real.family),
            protocol_from(service_key.proto),
        ) else {
            continue;
        };
        pins.push(Connection {
            protocol,
            expire_secs: (timeout_ns - idle) / 1_000_000_000,
            state: "ASSURED",
            active: false,
            client: SocketAddr::new(client, 0),
            vip: SocketAddr::new(vip, u16::from_be_bytes(service_key.port)),
            real: SocketAddr::new(real_addr, u16::from_be_bytes(real.port)),
            forward: forward_name(real.fwd),
        });
    }
    Ok(pins)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_names_are_ipvs_names() {
        assert_eq!(state_name(conn::STATE_ESTABLISHED), "ESTABLISHED");
        assert_eq!(state_name(conn::STATE_SYN_RECV), "SYN_RECV");
        assert_eq!(state_name(conn::STATE_UDP), "UDP");
        assert_eq!(state_name(200), "ERR!");
    }

    #[test]
    fn the_monotonic_clock_moves_forward() {
        let a = monotonic_now_ns();
        let b = monotonic_now_ns();
        assert!(a > 0 && b >= a);
    }
}
