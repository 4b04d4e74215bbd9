//! Upkeep of the flow table, at a cost that follows the work, in steps of bounded time so
//! that the data-plane thread serves commands between them.
//!
//! - **Scans.** Every `interval` (at most `--sweep-interval`, and short enough that every
//!   flow is seen at least once before it can time out: `expiry::scan_interval`) the
//!   whole table is read with `BPF_MAP_LOOKUP_BATCH`, `SLICE` entries per step. A scan
//!   removes the flows that have timed out, queues those that time out before the scan
//!   after next can see them, recounts each real's live flows (corrections: see `conns`),
//!   keeps alive the persistence pins of live connections and finds the FullNAT local
//!   addresses still in use.
//! - **Due flows.** Between scans, each queued flow is looked at when it is due (to
//!   `expiry::DUE_GRANULARITY`) and removed if it has indeed timed out, so connection counts follow
//!   expiries within milliseconds, not within a scan interval.
//!
//! Removing a flow subtracts it from its real's counts by the state it had when it was
//! taken out of the table, and takes its NAT reply translation with it.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    os::fd::{AsFd, OwnedFd},
    time::{Duration, Instant},
};

use lb_common::{
    FWD_FNAT, FWD_NAT, FlowKey, FlowState, MAX_REALS, NatOrigin, PersistKey, PersistState,
    RealInfo, ServiceKey,
    conn::{Timeouts, is_active},
    mask_prefix,
};

use super::{
    addr_bytes,
    conns::{ConnTable, Recount, correction},
    expiry::{DueQueue, Fate, fate},
    local_addrs::LocalAddrs,
    slots::ServiceSlot,
    sys::{self, BatchCursor},
};
use crate::dataplane::{DataplaneError, SweepReport, UpkeepStats};

/// Entries read per step of a scan: under a millisecond of work in one system call, which
/// the kernel (without preemption) does not interrupt for VRRP.
pub const SLICE: usize = 2048;
/// `BPF_NOEXIST`.
const NOEXIST: u64 = 1;

/// What the data plane's own state says about flows, for one step.
pub struct View<'a> {
    pub timeouts: Timeouts,
    pub services: &'a BTreeMap<ServiceKey, ServiceSlot>,
    pub reals: &'a BTreeMap<u32, RealInfo>,
    pub local_addrs: &'a LocalAddrs,
    pub conns: &'a ConnTable,
}

impl View<'_> {
    /// The real of `state` if the flow counts on it: the real its id names now is the one
    /// it was scheduled to (same generation) and belongs to the flow's service. A flow
    /// whose real's id went to another real since is nobody's connection: the data plane
    /// schedules it anew at its next packet.
    fn counted_real(&self, key: &FlowKey, state: &FlowState) -> Option<&RealInfo> {
        let service = self.services.get(&service_key(key))?;
        let real = self.reals.get(&state.real_id)?;
        (real.service_id == service.id && real.generation == state.real_generation).then_some(real)
    }
}

/// The maps a sweep works on (descriptors of the loaded object's maps).
pub struct FlowMaps {
    pub flows: OwnedFd,
    pub nat_reverse: OwnedFd,
    pub persist: OwnedFd,
}

/// A scan in progress.
struct Scan {
    cursor: BatchCursor,
    started: Instant,
    cpu_started: Duration,
    horizon_ns: u64,
    /// Per real id.
    recount: Vec<Recount>,
    /// Pins with a live connection, and its real (id, generation).
    live_pins: BTreeMap<PersistKey, (u32, u16)>,
    local_ids_in_use: BTreeSet<u32>,
    flows: u64,
    expired: u64,
}

/// The last scan, for the log and the metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ScanStats {
    /// Entries read.
    pub entries: u64,
    /// Live flows.
    pub flows: u64,
    /// Flows removed by the scan itself (timed out).
    pub expired: u64,
    /// Reals whose counts were corrected (evictions).
    pub corrected: u32,
    /// From the first step to the last.
    pub wall: Duration,
    /// CPU time of the steps.
    pub cpu: Duration,
}

/// What a step did.
#[derive(Debug, Default)]
pub struct Step {
    /// A scan ended: its figures, and the FullNAT local address ids its live flows use.
    pub finished: Option<(ScanStats, BTreeSet<u32>)>,
    /// Flows removed when due.
    pub removed_due: u64,
}

pub struct FlowUpkeep {
    maps: FlowMaps,
    next_scan: Instant,
    scan: Option<Scan>,
    due: DueQueue,
    keys: Vec<FlowKey>,
    values: Vec<FlowState>,
    last_scan: Option<ScanStats>,
    /// Since the start.
    scans: u64,
    expired: u64,
    corrections: u64,
}

impl FlowUpkeep {
    pub fn new(maps: FlowMaps) -> Self {
        Self {
            maps,
            next_scan: Instant::now(),
            scan: None,
            due: DueQueue::default(),
            keys: vec![zeroed_key(); SLICE],
            values: vec![zeroed_state(); SLICE],
            last_scan: None,
            scans: 0,
            expired: 0,
            corrections: 0,
        }
    }

    /// How long the last scan took (zero before the first).
    pub fn last_scan_duration(&self) -> Duration {
        self.last_scan.map_or(Duration::ZERO, |scan| scan.wall)
    }

    /// The figures the metrics show.
    pub fn stats(&self) -> UpkeepStats {
        let last = self.last_scan.unwrap_or_default();
        UpkeepStats {
            scans: self.scans,
            flows: last.flows,
            expired: self.expired,
            corrections: self.corrections,
            queued: self.due.len() as u64,
            last_scan_seconds: last.wall.as_secs_f64(),
            last_scan_cpu_seconds: last.cpu.as_secs_f64(),
        }
    }

    /// When the next step is wanted (now while a scan is under way).
    pub fn next_at(&self, now: Instant, now_ns: u64) -> Instant {
        if self.scan.is_some() {
            return now;
        }
        let due = self
            .due
            .next_ns()
            .map(|ns| now + Duration::from_nanos(ns.saturating_sub(now_ns)));
        due.map_or(self.next_scan, |due| due.min(self.next_scan))
    }

    /// One step: remove the flows due by now, then read one slice of the scan in progress
    /// (starting one when it is time).
    pub fn step(
        &mut self,
        view: &View,
        interval: Duration,
        now: Instant,
        now_ns: u64,
    ) -> Result<Step, DataplaneError> {
        let mut step = Step::default();
        for key in self.due.take_due(now_ns) {
            let Some(seen) = sys::lookup::<FlowKey, FlowState>(self.maps.flows.as_fd(), &key)
                .map_err(sys_error("reading a flow"))?
            else {
                continue;
            };
            if view.timeouts.expired(seen.state, seen.last_seen_ns, now_ns)
                && self.remove(view, &key, now_ns)?
            {
                step.removed_due += 1;
                self.expired += 1;
            }
        }
        if self.scan.is_none() && now >= self.next_scan {
            self.scan = Some(Scan {
                cursor: BatchCursor::default(),
                started: now,
                cpu_started: thread_cpu_time(),
                horizon_ns: now_ns + 2 * interval.as_nanos() as u64,
                recount: (0..MAX_REALS)
                    .map(|id| Recount {
                        changes_before: view.conns.load(id).changes,
                        ..Recount::default()
                    })
                    .collect(),
                live_pins: BTreeMap::new(),
                local_ids_in_use: BTreeSet::new(),
                flows: 0,
                expired: 0,
            });
        }
        if self.scan.is_some() {
            step.finished = self.scan_slice(view, interval, now_ns)?;
        }
        Ok(step)
    }

    /// A whole scan now, and the flows it left (for tests and `lbctl`-free checks).
    pub fn sweep_now(
        &mut self,
        view: &View,
        interval: Duration,
    ) -> Result<(SweepReport, BTreeSet<u32>), DataplaneError> {
        self.scan = None;
        self.next_scan = Instant::now();
        loop {
            let now_ns = monotonic_coarse_ns();
            let step = self.step(view, interval, Instant::now(), now_ns)?;
            if let Some((stats, in_use)) = step.finished {
                return Ok((
                    SweepReport {
                        flows: stats.flows,
                        expired: stats.expired,
                    },
                    in_use,
                ));
            }
        }
    }

    fn scan_slice(
        &mut self,
        view: &View,
        interval: Duration,
        now_ns: u64,
    ) -> Result<Option<(ScanStats, BTreeSet<u32>)>, DataplaneError> {
        let scan = self.scan.as_mut().expect("a scan is under way");
        let count = sys::lookup_batch(
            self.maps.flows.as_fd(),
            &mut scan.cursor,
            &mut self.keys,
            &mut self.values,
        )
        .map_err(sys_error("reading the flow table"))?;
        let mut expired = Vec::new();
        for (key, state) in self.keys[..count].iter().zip(&self.values[..count]) {
            match fate(state, &view.timeouts, now_ns, scan.horizon_ns) {
                Fate::Expired => {
                    expired.push(*key);
                    continue;
                }
                Fate::DueAt(due) => self.due.push(due, *key),
                Fate::Live => {}
            }
            scan.flows += 1;
            let Some(real) = view.counted_real(key, state) else {
                continue;
            };
            let recount = &mut scan.recount[state.real_id as usize];
            if is_active(state.state) {
                recount.active += 1;
            } else {
                recount.inactive += 1;
            }
            if real.fwd == FWD_FNAT {
                scan.local_ids_in_use.insert(state.local_addr);
            }
            if let Some(info) = view
                .services
                .get(&service_key(key))
                .and_then(|slot| slot.info)
                .filter(|info| info.persist_timeout != 0)
            {
                let pin = PersistKey {
                    service_id: info.id,
                    client: mask_prefix(key.src, info.persist_prefix),
                };
                scan.live_pins
                    .insert(pin, (state.real_id, state.real_generation));
            }
        }
        for key in expired {
            if self.remove(view, &key, now_ns)? {
                let scan = self.scan.as_mut().expect("a scan is under way");
                scan.expired += 1;
            }
        }
        let scan = self.scan.as_mut().expect("a scan is under way");
        if !scan.cursor.done() {
            return Ok(None);
        }
        let scan = self.scan.take().expect("a scan is under way");
        let mut corrected = 0;
        for &id in view.reals.keys() {
            let recount = &scan.recount[id as usize];
            let counted = view.conns.load(id);
            if let Some((active, inactive)) = correction(recount, counted) {
                tracing::debug!(
                    "real {id}: counts {}/{} corrected by {active}/{inactive} (the scan saw {}/{}, {} changes and {} removals while it ran)",
                    counted.active,
                    counted.inactive,
                    recount.active,
                    recount.inactive,
                    counted.changes.wrapping_sub(recount.changes_before),
                    recount.removed_during
                );
                view.conns.add(id, active, inactive);
                corrected += 1;
            }
        }
        self.refresh_pins(&scan.live_pins, interval, now_ns)?;
        self.scans += 1;
        self.expired += scan.expired;
        self.corrections += u64::from(corrected);
        let stats = ScanStats {
            entries: scan.flows + scan.expired,
            flows: scan.flows,
            expired: scan.expired,
            corrected,
            wall: scan.started.elapsed(),
            cpu: thread_cpu_time().saturating_sub(scan.cpu_started),
        };
        self.last_scan = Some(stats);
        self.next_scan = scan.started + interval;
        Ok(Some((stats, scan.local_ids_in_use)))
    }

    /// Take timed-out flow `key` out of the table, count it out of its real and remove its
    /// NAT reply translation; whether it was removed (a packet may have brought it back).
    fn remove(&mut self, view: &View, key: &FlowKey, now_ns: u64) -> Result<bool, DataplaneError> {
        let flows = self.maps.flows.as_fd();
        let Some(taken) = sys::lookup_and_delete::<FlowKey, FlowState>(flows, key)
            .map_err(sys_error("removing a timed-out flow"))?
        else {
            return Ok(false);
        };
        if !view
            .timeouts
            .expired(taken.state, taken.last_seen_ns, now_ns)
            && sys::update(flows, key, &taken, NOEXIST).map_err(sys_error("putting back a flow"))?
        {
            // A packet came between the look and the removal: the flow lives on.
            return Ok(false);
        }
        let Some(real) = view.counted_real(key, &taken) else {
            return Ok(true);
        };
        view.conns.flow_removed(taken.real_id, taken.state);
        if let Some(scan) = &mut self.scan {
            scan.recount[taken.real_id as usize].removed_during += 1;
        }
        // The reply's destination: the client (NAT) or the flow's local end (FullNAT).
        let reply_to = match real.fwd {
            FWD_NAT => Some((key.src, key.sport)),
            FWD_FNAT => view
                .local_addrs
                .addr(taken.local_addr)
                .map(|addr| (addr_bytes(addr).0, taken.local_port)),
            _ => None,
        };
        if let Some((dst, dport)) = reply_to {
            let reply = FlowKey {
                src: real.addr,
                dst,
                sport: real.port,
                dport,
                proto: key.proto,
                family: key.family,
                _pad: [0; 2],
            };
            // Unless a new flow holds it now (FullNAT reuses the local port of a flow that
            // timed out). A pair taken over between the read and the removal loses its
            // reservation; the new flow's next packet makes it again (`fnat::hold`).
            let replies = self.maps.nat_reverse.as_fd();
            let origin = sys::lookup::<FlowKey, NatOrigin>(replies, &reply)
                .map_err(sys_error("reading a NAT reply translation"))?;
            if origin.is_some_and(|o| o.client_flow(key.proto, key.family) == *key) {
                sys::delete(replies, &reply)
                    .map_err(sys_error("removing a NAT reply translation"))?;
            }
        }
        Ok(true)
    }

    /// A pin lasts for its timeout after the last connection it directed ended (IPVS keeps
    /// a template while it controls connections): the pins of live connections not
    /// refreshed within a scan interval are stamped now.
    fn refresh_pins(
        &mut self,
        live: &BTreeMap<PersistKey, (u32, u16)>,
        interval: Duration,
        now_ns: u64,
    ) -> Result<(), DataplaneError> {
        if live.is_empty() {
            return Ok(());
        }
        let persist = self.maps.persist.as_fd();
        let mut pins: HashMap<PersistKey, PersistState> = HashMap::new();
        let mut cursor = BatchCursor::default();
        let mut keys = vec![zeroed_pin(); SLICE];
        let mut values = vec![
            PersistState {
                real_id: 0,
                real_generation: 0,
                _pad: 0,
                last_seen_ns: 0,
            };
            SLICE
        ];
        while !cursor.done() {
            let count = sys::lookup_batch(persist, &mut cursor, &mut keys, &mut values)
                .map_err(sys_error("reading the persistence pins"))?;
            pins.extend(
                keys[..count]
                    .iter()
                    .copied()
                    .zip(values[..count].iter().copied()),
            );
        }
        let stale_before = now_ns.saturating_sub(interval.as_nanos() as u64);
        let (keys, values): (Vec<PersistKey>, Vec<PersistState>) = live
            .iter()
            .filter_map(|(key, &(real_id, generation))| {
                let pin = pins.get(key)?;
                (pin.real_id == real_id
                    && pin.real_generation == generation
                    && pin.last_seen_ns < stale_before)
                    .then_some((
                        *key,
                        PersistState {
                            last_seen_ns: now_ns,
                            ..*pin
                        },
                    ))
            })
            .unzip();
        if !keys.is_empty() {
            sys::update_batch(persist, &keys, &values, 0)
                .map_err(sys_error("refreshing persistence pins"))?;
        }
        Ok(())
    }
}

/// The service a flow is for: its destination address, port and protocol.
pub fn service_key(flow: &FlowKey) -> ServiceKey {
    ServiceKey {
        addr: flow.dst,
        port: flow.dport,
        proto: flow.proto,
        family: flow.family,
    }
}

fn sys_error(what: &'static str) -> impl Fn(std::io::Error) -> DataplaneError {
    move |source| DataplaneError::Sys { what, source }
}

pub(super) const fn zeroed_key() -> FlowKey {
    FlowKey {
        src: [0; 16],
        dst: [0; 16],
        sport: [0; 2],
        dport: [0; 2],
        proto: 0,
        family: 0,
        _pad: [0; 2],
    }
}

pub(super) const fn zeroed_state() -> FlowState {
    FlowState {
        real_id: 0,
        state: 0,
        _pad: [0; 3],
        last_seen_ns: 0,
        local_addr: 0,
        local_port: [0; 2],
        real_generation: 0,
    }
}

const fn zeroed_pin() -> PersistKey {
    PersistKey {
        service_id: 0,
        client: [0; 16],
    }
}

/// `CLOCK_MONOTONIC_COARSE` in nanoseconds: the clock that stamps the flows (the data
/// plane reads it as jiffies, calibrated to it; see `clock`).
pub fn monotonic_coarse_ns() -> u64 {
    clock_ns(libc::CLOCK_MONOTONIC_COARSE)
}

/// CPU time this thread has used.
fn thread_cpu_time() -> Duration {
    Duration::from_nanos(clock_ns(libc::CLOCK_THREAD_CPUTIME_ID))
}

fn clock_ns(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid pointer to a timespec; the clock ids are constants the kernel knows.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}
