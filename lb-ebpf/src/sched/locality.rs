//! lblc and lblcr (IPVS's locality-based least-connection schedulers, `ip_vs_lblc.c` and
//! `ip_vs_lblcr.c`): a destination address keeps going to the real it went to, so that a
//! cache cluster keeps each destination's objects on one cache.
//!
//! `LB_LOCALITY` remembers, per service and destination address, the real (lblc) or the
//! set of reals (lblcr, at most `LOCALITY_SET_MAX`). With IPVS's rules:
//! - a real is *overloaded* when its active connections exceed its weight while some real
//!   of the service is at less than half of its own (`lb_sched_below_half`);
//! - lblc: the remembered real while it is available and not overloaded, else the `wlc`
//!   choice, which is remembered instead;
//! - lblcr: the least loaded available member of the set (by wlc's overhead per weight)
//!   while it is not overloaded, else the `wlc` choice, which joins the set; a set unchanged
//!   for `LOCALITY_EXPIRATION_NS` loses its most loaded member;
//! - an entry unused for `LOCALITY_EXPIRATION_NS` (or `Settings::locality_expiration_ns`)
//!   is forgotten (IPVS's `lblc_expiration`),
//!   and the LRU map drops the least recently used when it is full (IPVS collects entries
//!   unused for 6 minutes when its table is over its size).
//!
//! `lb_sched_locality` returns the remembered real, or says to schedule by wlc; the
//! balancer then calls wlc and `lb_sched_locality_remember` itself, as a global function
//! calling another would take the stack past BPF's 512 bytes.
//!
//! Writes to an entry are plain stores: two CPUs scheduling the same destination at once
//! may each keep their own choice, as IPVS's unlocked reads of its cache may.

use lb_common::{
    ConnCounts, ServiceInfo,
    sched::{
        KIND_LBLCR, KIND_WLC, LEAST_CONN_MAX_REALS, LOCALITY_EXPIRATION_NS, LOCALITY_SET_MAX,
        LocalityEntry, LocalityKey,
    },
};

use super::{NO_REAL, available_weight, least_conn::lb_sched_least_conn, table_entry};
use crate::{
    maps::{LOCALITY, REAL_CONNS, SETTINGS},
    parse::Flow,
};

#[inline(always)]
pub fn pick(service: &ServiceInfo, flow: &Flow, now: u64) -> Option<u32> {
    let dst = flow.key.dst;
    let high = u64::from_ne_bytes([
        dst[0], dst[1], dst[2], dst[3], dst[4], dst[5], dst[6], dst[7],
    ]);
    let low = u64::from_ne_bytes([
        dst[8], dst[9], dst[10], dst[11], dst[12], dst[13], dst[14], dst[15],
    ]);
    let packed_service = (u64::from(service.id) << 8) | u64::from(service.sched);
    let packed_table = (u64::from(service.table_offset) << 32) | u64::from(service.table_len);
    let id = lb_sched_locality(packed_service, packed_table, high, low, now);
    if id != SCHEDULE {
        return Some(id);
    }
    // wlc, called from here rather than from `lb_sched_locality`: three frames deep the
    // balancer's stack would pass BPF's 512 bytes.
    let id = least_loaded(service);
    if id == NO_REAL {
        return None;
    }
    lb_sched_locality_remember(packed_service, high, low, id, now);
    Some(id)
}

/// What `lb_sched_locality` returns when the flow is to be scheduled by wlc and the
/// choice remembered (`lb_sched_locality_remember`).
const SCHEDULE: u32 = u32::MAX - 1;

/// The remembered choice for a new flow to the destination `addr_high`/`addr_low` (its
/// address's bytes in memory order) of the service in `service` (id << 8 | `KIND_LBLC` or
/// `KIND_LBLCR`) with the table in `table` (offset << 32 | length), at `now`; `SCHEDULE`
/// if there is none to keep. A global BPF function, checked once by the verifier (see
/// `least_conn`); five arguments are all a BPF call takes, hence the packing.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn lb_sched_locality(
    service: u64,
    table: u64,
    addr_high: u64,
    addr_low: u64,
    now: u64,
) -> u32 {
    let replicated = service as u8 == KIND_LBLCR;
    let key = locality_key(service, addr_high, addr_low);
    let service =
        ServiceInfo::table_only(key.service_id, (table >> 32) as u32, table as u32, KIND_WLC);
    let Some(entry) = LOCALITY.get_ptr_mut(key) else {
        return SCHEDULE;
    };
    // SAFETY: a live element of the map (see the module's note on races).
    let entry = unsafe { &mut *entry };
    let expiration = expiration_ns();
    if now.saturating_sub(entry.last_use_ns) > expiration {
        return SCHEDULE;
    }
    entry.last_use_ns = now;
    let (chosen, weight) = if replicated {
        let load = set_load(&service, entry);
        if entry.len > 1 && now.saturating_sub(entry.last_change_ns) > expiration {
            remove_member(entry, load.most);
            entry.last_change_ns = now;
        }
        (load.least, load.least_weight)
    } else {
        let current = entry.reals[0];
        match available_weight(&service, current) {
            Some(weight) if entry.len != 0 => (current, weight),
            _ => (NO_REAL, 0),
        }
    };
    if chosen == NO_REAL || overloaded(&service, chosen, weight) {
        return SCHEDULE;
    }
    chosen
}

/// Remember that wlc sent a new flow to the destination `addr_high`/`addr_low` of the
/// service in `service` (as for `lb_sched_locality`) to real `id` at `now`: lblc's real
/// becomes `id`; `id` joins lblcr's set. A global BPF function; it returns 0 because the
/// kernel's verifier takes only global functions that return a number.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn lb_sched_locality_remember(
    service: u64,
    addr_high: u64,
    addr_low: u64,
    id: u32,
    now: u64,
) -> u32 {
    let replicated = service as u8 == KIND_LBLCR;
    let key = locality_key(service, addr_high, addr_low);
    if let Some(entry) = LOCALITY.get_ptr_mut(key) {
        // SAFETY: a live element of the map (see the module's note on races).
        let entry = unsafe { &mut *entry };
        if now.saturating_sub(entry.last_use_ns) <= expiration_ns() {
            entry.last_use_ns = now;
            if !replicated {
                entry.reals[0] = id;
                entry.len = 1;
                entry.last_change_ns = now;
            } else if !contains(entry, id) {
                let len = entry.len as usize;
                if let Some(slot) = entry.reals.get_mut(len) {
                    *slot = id;
                    entry.len += 1;
                    entry.last_change_ns = now;
                } else {
                    // A full set (IPVS's have no bound; see LOCALITY_SET_MAX) gives the
                    // place of a member that can no longer take flows (drained,
                    // removed), else keeps its members.
                    let service = ServiceInfo::table_only(key.service_id, 0, 0, KIND_WLC);
                    for slot in entry.reals.iter_mut() {
                        if available_weight(&service, *slot).is_none() {
                            *slot = id;
                            entry.last_change_ns = now;
                            break;
                        }
                    }
                }
            }
            return 0;
        }
    }
    let mut reals = [0; LOCALITY_SET_MAX];
    reals[0] = id;
    let entry = LocalityEntry {
        reals,
        len: 1,
        _pad: 0,
        last_use_ns: now,
        last_change_ns: now,
    };
    let _ = LOCALITY.insert(key, entry, 0);
    0
}

/// `Settings::locality_expiration_ns`, or IPVS's default.
#[inline(always)]
fn expiration_ns() -> u64 {
    match SETTINGS
        .get(0)
        .map_or(0, |settings| settings.locality_expiration_ns)
    {
        0 => LOCALITY_EXPIRATION_NS,
        configured => configured,
    }
}

#[inline(always)]
fn locality_key(service: u64, addr_high: u64, addr_low: u64) -> LocalityKey {
    let mut addr = [0u8; 16];
    addr[..8].copy_from_slice(&addr_high.to_ne_bytes());
    addr[8..].copy_from_slice(&addr_low.to_ne_bytes());
    LocalityKey {
        service_id: (service >> 8) as u32,
        addr,
    }
}

/// wlc over every real of the service.
#[inline(always)]
fn least_loaded(service: &ServiceInfo) -> u32 {
    lb_sched_least_conn(
        service.id,
        service.table_offset,
        service.table_len,
        u32::from(KIND_WLC),
    )
}

/// IPVS's `is_overloaded`: more active connections than its weight while some real of
/// the service is at less than half of its own.
#[inline(always)]
fn overloaded(service: &ServiceInfo, id: u32, weight: u16) -> bool {
    active(id) > i64::from(weight)
        && lb_sched_below_half(service.id, service.table_offset, service.table_len) != 0
}

/// 1 if some available real of the service has fewer than half as many active connections
/// as its weight, else 0. A global BPF function (see `least_conn`).
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn lb_sched_below_half(service_id: u32, table_offset: u32, table_len: u32) -> u32 {
    let service = ServiceInfo::table_only(service_id, table_offset, table_len, KIND_WLC);
    for pos in 0..LEAST_CONN_MAX_REALS {
        let Some(id) = table_entry(&service, pos) else {
            break;
        };
        let Some(weight) = available_weight(&service, id) else {
            continue;
        };
        if active(id) * 2 < i64::from(weight) {
            return 1;
        }
    }
    0
}

/// Where an lblcr set's load lies, among its available members (by wlc's overhead per
/// weight, the first on a tie).
struct SetLoad {
    /// The least loaded member and its weight; `NO_REAL` if none is available.
    least: u32,
    least_weight: u16,
    /// The index of the most loaded member; `LOCALITY_SET_MAX` if none is available.
    most: usize,
}

#[inline(always)]
fn set_load(service: &ServiceInfo, entry: &LocalityEntry) -> SetLoad {
    let (mut least, mut least_overhead, mut least_weight) = (NO_REAL, 0i64, 0u16);
    let (mut most, mut most_overhead, mut most_weight) = (LOCALITY_SET_MAX, 0i64, 0u16);
    for i in 0..LOCALITY_SET_MAX {
        if i >= entry.len as usize {
            break;
        }
        let id = entry.reals[i];
        let Some(weight) = available_weight(service, id) else {
            continue;
        };
        let overhead = overhead(id);
        let ratio = i64::from(weight);
        if least == NO_REAL || least_overhead * ratio > overhead * i64::from(least_weight) {
            (least, least_overhead, least_weight) = (id, overhead, weight);
        }
        if most == LOCALITY_SET_MAX || most_overhead * ratio < overhead * i64::from(most_weight) {
            (most, most_overhead, most_weight) = (i, overhead, weight);
        }
    }
    SetLoad {
        least,
        least_weight,
        most,
    }
}

/// Remove the member at `index` (nothing if it is `LOCALITY_SET_MAX`), keeping the others
/// in order.
#[inline(always)]
fn remove_member(entry: &mut LocalityEntry, index: usize) {
    if index >= LOCALITY_SET_MAX {
        return;
    }
    for i in 0..LOCALITY_SET_MAX - 1 {
        if i >= index && i + 1 < entry.len as usize {
            entry.reals[i] = entry.reals[i + 1];
        }
    }
    // Saturating: CPUs shrinking the same set at once must not wrap it.
    entry.len = entry.len.saturating_sub(1);
}

#[inline(always)]
fn contains(entry: &LocalityEntry, id: u32) -> bool {
    for i in 0..LOCALITY_SET_MAX {
        if i >= entry.len as usize {
            break;
        }
        if entry.reals[i] == id {
            return true;
        }
    }
    false
}

/// Real `id`'s counts (signed, as in `least_conn`).
#[inline(always)]
fn counts(id: u32) -> (i64, i64) {
    let counts = REAL_CONNS.get(id).copied().unwrap_or(ConnCounts::new(0, 0));
    (
        i64::from(counts.active as i32),
        i64::from(counts.inactive as i32),
    )
}

#[inline(always)]
fn active(id: u32) -> i64 {
    counts(id).0
}

/// IPVS's `ip_vs_dest_conn_overhead`, as wlc counts.
#[inline(always)]
fn overhead(id: u32) -> i64 {
    let (active, inactive) = counts(id);
    active * 256 + inactive
}
