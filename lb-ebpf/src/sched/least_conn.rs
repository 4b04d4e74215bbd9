//! lc, wlc, sed, nq and ovf over the service's list of reals (at most
//! `LEAST_CONN_MAX_REALS`, a bounded loop), with IPVS's formulas (`ip_vs_lc.c`,
//! `ip_vs_wlc.c`, `ip_vs_sed.c`, `ip_vs_nq.c`, `ip_vs_ovf.c`) and the connection counts in
//! `LB_REAL_CONNS`:
//! - lc: least `active * 256 + inactive`;
//! - wlc: least `(active * 256 + inactive) / weight`;
//! - sed: least `(active + 1) / weight`;
//! - nq: the first real without active connections, else as sed;
//! - ovf: least `1 / weight` (the highest weight) among the reals whose active
//!   connections do not exceed their weight.
//!
//! Ratios are compared by cross-multiplying; ties go to the earlier real. Reals with weight
//! 0 or retired are skipped.
//!
//! Verifier budget: the loop is a global BPF function (`lb_sched_least_conn`), checked
//! once on its own rather than for every path of the balancer that reaches scheduling,
//! and the four formulas are one formula whose coefficients are read from a table, so the
//! loop body does not branch on the scheduler (every such branch would multiply the
//! states the verifier walks through 256 iterations).

use lb_common::{
    ConnCounts, ServiceInfo,
    sched::{KIND_LC, LEAST_CONN_MAX_REALS},
};

use super::{NO_REAL, available_weight, table_entry};
use crate::maps::REAL_CONNS;

/// Per scheduler (lc, wlc, sed, nq, ovf): overhead = `active * ACTIVE + inactive *
/// INACTIVE + CONSTANT`, divided by the weight if `WEIGHTED` (else by 1); `IDLE_FIRST`
/// takes the first real without active connections; `CAPPED` passes over a real with
/// more active connections than its weight.
struct Formula {
    active: i64,
    inactive: i64,
    constant: i64,
    weighted: i64,
    idle_first: i64,
    capped: i64,
}

static FORMULAS: [Formula; 5] = [
    // lc
    Formula {
        active: 256,
        inactive: 1,
        constant: 0,
        weighted: 0,
        idle_first: 0,
        capped: 0,
    },
    // wlc
    Formula {
        active: 256,
        inactive: 1,
        constant: 0,
        weighted: 1,
        idle_first: 0,
        capped: 0,
    },
    // sed
    Formula {
        active: 1,
        inactive: 0,
        constant: 1,
        weighted: 1,
        idle_first: 0,
        capped: 0,
    },
    // nq
    Formula {
        active: 1,
        inactive: 0,
        constant: 1,
        weighted: 1,
        idle_first: 1,
        capped: 0,
    },
    // ovf
    Formula {
        active: 0,
        inactive: 0,
        constant: 1,
        weighted: 1,
        idle_first: 0,
        capped: 1,
    },
];

/// An overhead above any real one (counts are below 2^31, so overheads below 2^40), small
/// enough that multiplied by a weight (below 2^16) it stays within i64.
const NO_OVERHEAD: i64 = 1 << 46;

#[inline(always)]
pub fn pick(service: &ServiceInfo) -> Option<u32> {
    let id = lb_sched_least_conn(
        service.id,
        service.table_offset,
        service.table_len,
        u32::from(service.sched),
    );
    (id != NO_REAL).then_some(id)
}

/// The choice for service `service_id` with the table at `table_offset`/`table_len` and
/// scheduler `kind` (`KIND_LC` ..= `KIND_OVF`); `NO_REAL` if no real is available.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn lb_sched_least_conn(
    service_id: u32,
    table_offset: u32,
    table_len: u32,
    kind: u32,
) -> u32 {
    let Some(formula) = FORMULAS.get(kind.wrapping_sub(u32::from(KIND_LC)) as usize) else {
        return NO_REAL;
    };
    // Read once: from here on they are plain numbers to the verifier.
    // SAFETY: reads of a static.
    let (a, i, c, weighted, idle_first, capped) = unsafe {
        (
            core::ptr::read_volatile(&formula.active),
            core::ptr::read_volatile(&formula.inactive),
            core::ptr::read_volatile(&formula.constant),
            core::ptr::read_volatile(&formula.weighted),
            core::ptr::read_volatile(&formula.idle_first),
            core::ptr::read_volatile(&formula.capped),
        )
    };
    let service = ServiceInfo::table_only(service_id, table_offset, table_len, kind as u8);
    let (mut best, mut best_overhead, mut best_weight) = (NO_REAL, NO_OVERHEAD, 1i64);
    for pos in 0..LEAST_CONN_MAX_REALS {
        let Some(id) = table_entry(&service, pos) else {
            break;
        };
        let Some(weight) = available_weight(&service, id) else {
            continue;
        };
        let counts = REAL_CONNS.get(id).copied().unwrap_or(ConnCounts::new(0, 0));
        // Signed: a count a race took below zero reads as slightly negative (until the
        // next sweep) rather than huge, without a branch to clamp it.
        let active = i64::from(counts.active as i32);
        let inactive = i64::from(counts.inactive as i32);
        // nq: an idle real wins at once (one comparison on a computed value).
        if (active.max(0) | (idle_first ^ 1)) == 0 {
            return id;
        }
        // ovf: a real over its weight gets the overhead no real beats, by arithmetic
        // rather than a branch (each branch in this loop multiplies the verifier's work).
        let over = i64::from(active > i64::from(weight)) & capped;
        let overhead = active * a + inactive * i + c;
        let weight = i64::from(weight) * weighted + (1 - weighted);
        let overhead = overhead + over * (NO_OVERHEAD - overhead);
        let weight = weight - over * (weight - 1);
        if best_overhead * weight > overhead * best_weight {
            (best, best_overhead, best_weight) = (id, overhead, weight);
        }
    }
    best
}
