//! lc, wlc, sed and nq over the service's list of reals (at most `LEAST_CONN_MAX_REALS`,
//! a bounded loop), with IPVS's formulas (`ip_vs_lc.c`, `ip_vs_wlc.c`, `ip_vs_sed.c`,
//! `ip_vs_nq.c`) and the connection counts in `LB_REAL_CONNS`:
//! - lc: least `active * 256 + inactive`;
//! - wlc: least `(active * 256 + inactive) / weight`;
//! - sed: least `(active + 1) / weight`;
//! - nq: the first real without active connections, else as sed.
//!
//! Ratios are compared by cross-multiplying; ties go to the earlier real. Reals with weight
//! 0 or retired are skipped.
//!
//! The loop is a global BPF function (`lb_sched_least_conn`): the verifier checks it once,
//! on its own, instead of once for every path of the balancer that reaches scheduling,
//! which would exceed its budget.

use lb_common::{
    ConnCounts, ServiceInfo,
    sched::{KIND_LC, KIND_NQ, KIND_SED, LEAST_CONN_MAX_REALS},
};

use super::{NO_REAL, available_weight, table_entry};
use crate::maps::REAL_CONNS;

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

/// The least-connection choice for service `service_id` with the table at
/// `table_offset`/`table_len` and scheduler `kind`; `NO_REAL` if no real is available.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn lb_sched_least_conn(
    service_id: u32,
    table_offset: u32,
    table_len: u32,
    kind: u32,
) -> u32 {
    let service = ServiceInfo {
        id: service_id,
        table_offset,
        table_len,
        sched: kind as u8,
        sched_flags: 0,
        _pad: [0; 2],
    };
    least_conn(&service).unwrap_or(NO_REAL)
}

#[inline(always)]
fn least_conn(service: &ServiceInfo) -> Option<u32> {
    let kind = service.sched;
    let mut best: Option<(u32, u64, u64)> = None;
    for pos in 0..LEAST_CONN_MAX_REALS {
        let Some(id) = table_entry(service, pos) else {
            break;
        };
        let Some(weight) = available_weight(service, id) else {
            continue;
        };
        let counts = REAL_CONNS.get(id).copied().unwrap_or(ConnCounts {
            active: 0,
            inactive: 0,
        });
        if kind == KIND_NQ && counts.active == 0 {
            return Some(id);
        }
        let (active, inactive) = (u64::from(counts.active), u64::from(counts.inactive));
        let overhead = if kind == KIND_SED || kind == KIND_NQ {
            active + 1
        } else {
            (active << 8) + inactive
        };
        let weight = u64::from(weight);
        let better = match best {
            None => true,
            Some((_, best_overhead, _)) if kind == KIND_LC => overhead < best_overhead,
            Some((_, best_overhead, best_weight)) => {
                best_overhead * weight > overhead * best_weight
            }
        };
        if better {
            best = Some((id, overhead, weight));
        }
    }
    best.map(|(id, _, _)| id)
}
