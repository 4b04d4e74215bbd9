//! The hashing schedulers, with IPVS's semantics:
//! - sh: bucket = hash of the source address (and source port with `sh-port`);
//! - dh: bucket = hash of the destination address (IPVS's hash: its last byte);
//! - mh: Maglev slot = hash of the source address (and source port with `mh-port`).
//!
//! A bucket whose real cannot take new flows (weight 0, retired) gives no real, unless the
//! service has `sh-fallback`/`mh-fallback`: then the following buckets are probed, at most
//! `FALLBACK_PROBES` (all of an sh table; for Maglev the next 255 slots, where IPVS would
//! go on through the whole table), and the first available real takes the flow. dh has no
//! fallback.
//! The probing loop is a global BPF function (`lb_sched_probe`), checked once by the
//! verifier (see `least_conn`).

use lb_common::{
    FAMILY_IPV6, ServiceInfo,
    hash::{bucket, dh_bucket, fold, maglev_slot},
    sched::{FALLBACK_PROBES, FLAG_FALLBACK, FLAG_HASH_PORT, MAGLEV_TABLE_SIZE, SH_TABLE_SIZE},
};

use super::{NO_REAL, available_weight, table_entry};
use crate::parse::Flow;

#[inline(always)]
pub fn source_hash(service: &ServiceInfo, flow: &Flow) -> Option<u32> {
    if service.table_len != SH_TABLE_SIZE {
        return None;
    }
    let folded = fold(&flow.key.src, flow.key.family == FAMILY_IPV6);
    let first = bucket(folded, hashed_port(service, flow), 0);
    probe(service, first)
}

#[inline(always)]
pub fn dest_hash(service: &ServiceInfo, flow: &Flow) -> Option<u32> {
    if service.table_len != SH_TABLE_SIZE {
        return None;
    }
    let folded = fold(&flow.key.dst, flow.key.family == FAMILY_IPV6);
    let id = table_entry(service, dh_bucket(folded))?;
    available_weight(service, id).map(|_| id)
}

#[inline(always)]
pub fn maglev(service: &ServiceInfo, flow: &Flow) -> Option<u32> {
    if service.table_len != MAGLEV_TABLE_SIZE {
        return None;
    }
    let folded = fold(&flow.key.src, flow.key.family == FAMILY_IPV6);
    let first = maglev_slot(folded, hashed_port(service, flow));
    probe(service, first)
}

/// The source port in host order with `FLAG_HASH_PORT`, else 0.
#[inline(always)]
fn hashed_port(service: &ServiceInfo, flow: &Flow) -> u16 {
    if service.sched_flags & FLAG_HASH_PORT != 0 {
        u16::from_be_bytes(flow.key.sport)
    } else {
        0
    }
}

/// The real at `first` if available; with fallback, the first available one after it.
#[inline(always)]
fn probe(service: &ServiceInfo, first: u32) -> Option<u32> {
    let id = lb_sched_probe(
        service.id,
        service.table_offset,
        service.table_len,
        first,
        u32::from(service.sched_flags & FLAG_FALLBACK != 0),
    );
    (id != NO_REAL).then_some(id)
}

/// Probing of a hash table (`table_len` entries at `table_offset`) of service
/// `service_id` from position `first`; `NO_REAL` if nothing is available.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn lb_sched_probe(
    service_id: u32,
    table_offset: u32,
    table_len: u32,
    first: u32,
    fallback: u32,
) -> u32 {
    let service = ServiceInfo::table_only(service_id, table_offset, table_len, 0);
    let probes = if fallback != 0 { FALLBACK_PROBES } else { 1 };
    for step in 0..FALLBACK_PROBES {
        if step >= probes {
            break;
        }
        let mut pos = first.wrapping_add(step);
        if pos >= table_len {
            pos = pos.wrapping_sub(table_len);
        }
        let Some(id) = table_entry(&service, pos) else {
            break;
        };
        if available_weight(&service, id).is_some() {
            return id;
        }
    }
    NO_REAL
}
