//! Persistence (keepalived `persistence_timeout`, an IPVS persistent service): new
//! connections of a client, or of its network with `persistence_granularity`, go to the
//! real its earlier connections went to, as long as the pin is younger than the timeout.
//! The pin is IPVS's persistence template: refreshed by every new connection it directs
//! (and by userspace's sweep while connections it directed are alive), kept for a real at
//! weight 0 (IPVS's default, `expire_quiescent_template=0`), dropped for a removed real (and for a real whose id went to another one since).

use lb_common::{FlowKey, PersistKey, PersistState, REAL_FLAG_RETIRED, ServiceInfo, mask_prefix};

use crate::maps::{self, PERSIST};

/// The persistence key of `flow`'s client for service `service_id`, whose
/// `persistence_granularity` is `prefix` bits.
#[inline(always)]
pub fn key(service_id: u32, prefix: u8, flow: &FlowKey) -> PersistKey {
    PersistKey {
        service_id,
        client: mask_prefix(flow.src, prefix),
    }
}

/// The real pinned for this client, if the pin is alive and its real can still serve.
/// (Not inlined, for the balancer's stack, as the other rarely taken paths.)
#[inline(never)]
pub fn pinned(service: &ServiceInfo, key: &PersistKey, now: u64) -> Option<u32> {
    // SAFETY: copied out at once; a racing update can only yield another real id, which
    // is validated like any other.
    let pin = unsafe { PERSIST.get(key) }.copied()?;
    let timeout = u64::from(service.persist_timeout) * 1_000_000_000;
    if now > pin.last_seen_ns && now - pin.last_seen_ns > timeout {
        return None;
    }
    let real = maps::real(pin.real_id)?;
    (real.service_id == service.id
        && real.generation == pin.real_generation
        && real.flags & REAL_FLAG_RETIRED == 0)
        .then_some(pin.real_id)
}

/// Pin (or re-pin) the client to `real_id`, of generation `generation`.
#[inline(never)]
pub fn remember(key: &PersistKey, real_id: u32, generation: u16, now: u64) {
    let pin = PersistState {
        real_id,
        real_generation: generation,
        _pad: 0,
        last_seen_ns: now,
    };
    let _ = PERSIST.insert(key, pin, 0);
}
