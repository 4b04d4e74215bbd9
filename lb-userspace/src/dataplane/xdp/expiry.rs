//! What becomes of a flow a scan of the flow table sees (`fate`), how often the table is
//! scanned (`scan_interval`), and the queue of flows to look at when they are due
//! (`DueQueue`): the decisions of `sweep`, without I/O.

use std::{collections::BTreeMap, time::Duration};

use lb_common::{
    FlowKey, FlowState,
    conn::{STATE_COUNT, STATE_NONE, Timeouts},
};

/// Due flows are handled in rounds this far apart.
pub const DUE_GRANULARITY: Duration = Duration::from_millis(5);
/// The shortest time between two scans, whatever the timeouts.
const MIN_INTERVAL: Duration = Duration::from_millis(250);

/// What becomes of a flow seen by a scan.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fate {
    /// Timed out: remove it now.
    Expired,
    /// Times out at this `CLOCK_MONOTONIC_COARSE` time (ns), before the horizon.
    DueAt(u64),
    /// Alive beyond the horizon: the next scan sees it again.
    Live,
}

/// What becomes of flow `state` seen at `now_ns`, with `horizon_ns` the time by which the
/// scan after next will have seen it again.
pub fn fate(state: &FlowState, timeouts: &Timeouts, now_ns: u64, horizon_ns: u64) -> Fate {
    if timeouts.expired(state.state, state.last_seen_ns, now_ns) {
        return Fate::Expired;
    }
    // `expired` holds once the idle time is strictly greater than the timeout.
    let due = state
        .last_seen_ns
        .saturating_add(timeouts.timeout_ns(state.state))
        .saturating_add(1);
    if due <= horizon_ns {
        Fate::DueAt(due)
    } else {
        Fate::Live
    }
}

/// Time between scans: `max`, and short enough that no flow or pin can time out unseen
/// between two scans: the shortest connection or persistence timeout (`persist_secs`, 0
/// without persistence) less a margin of twice the last scan's duration (`scan`), at
/// least a second. (A flow seen by a scan is removed when due; one whose state changed
/// just after a scan saw it is seen by the next one, which comes before it can time out.)
pub fn scan_interval(
    max: Duration,
    timeouts: &Timeouts,
    persist_secs: u32,
    scan: Duration,
) -> Duration {
    let shortest_flow = (0..STATE_COUNT as u8)
        .filter(|&state| state != STATE_NONE)
        .map(|state| Duration::from_nanos(timeouts.timeout_ns(state)))
        .min()
        .unwrap_or(max);
    let shortest = match persist_secs {
        0 => shortest_flow,
        secs => shortest_flow.min(Duration::from_secs(u64::from(secs))),
    };
    let margin = (2 * scan).max(Duration::from_secs(1));
    max.min(shortest.saturating_sub(margin)).max(MIN_INTERVAL)
}

/// Flows to look at when they are due, in rounds of `DUE_GRANULARITY`.
#[derive(Debug, Default)]
pub struct DueQueue {
    rounds: BTreeMap<u64, Vec<FlowKey>>,
    len: usize,
}

impl DueQueue {
    /// Look at `key` at `due_ns` (rounded up to the next round).
    pub fn push(&mut self, due_ns: u64, key: FlowKey) {
        let granularity = DUE_GRANULARITY.as_nanos() as u64;
        let round = due_ns.div_ceil(granularity) * granularity;
        self.rounds.entry(round).or_default().push(key);
        self.len += 1;
    }

    /// The time of the next round, if any.
    pub fn next_ns(&self) -> Option<u64> {
        self.rounds.keys().next().copied()
    }

    /// The flows of every round due at `now_ns`.
    pub fn take_due(&mut self, now_ns: u64) -> Vec<FlowKey> {
        let later = self.rounds.split_off(&(now_ns + 1));
        let due: Vec<FlowKey> = std::mem::replace(&mut self.rounds, later)
            .into_values()
            .flatten()
            .collect();
        self.len -= due.len();
        due
    }

    pub fn len(&self) -> usize {
        self.len
    }
}

#[cfg(test)]
mod tests {
    use lb_common::conn::{STATE_CLOSE, STATE_ESTABLISHED, STATE_UDP};

    use super::*;
    use crate::dataplane::xdp::sweep::{zeroed_key, zeroed_state};

    const SECOND: u64 = 1_000_000_000;

    fn flow(state: u8, last_seen_ns: u64) -> FlowState {
        FlowState {
            state,
            last_seen_ns,
            ..zeroed_state()
        }
    }

    #[test]
    fn a_scan_removes_queues_or_leaves_each_flow() {
        let timeouts = Timeouts::with_set(Some(5), None, None);
        let now = 100 * SECOND;
        let horizon = now + 2 * SECOND;
        // Idle for more than ESTABLISHED's 5 s: gone.
        assert_eq!(
            fate(
                &flow(STATE_ESTABLISHED, now - 6 * SECOND),
                &timeouts,
                now,
                horizon
            ),
            Fate::Expired
        );
        // Times out 1 s from now, before the horizon: queued for that moment.
        assert_eq!(
            fate(
                &flow(STATE_ESTABLISHED, now - 4 * SECOND),
                &timeouts,
                now,
                horizon
            ),
            Fate::DueAt(now + SECOND + 1)
        );
        // UDP lives 300 s: left for a later scan.
        assert_eq!(
            fate(&flow(STATE_UDP, now), &timeouts, now, horizon),
            Fate::Live
        );
    }

    #[test]
    fn scans_come_often_enough_for_the_shortest_timeout() {
        let max = Duration::from_secs(30);
        let quick = Duration::from_millis(10);
        // IPVS's shortest default is CLOSE, 10 s: 9 s, or less after a long scan.
        assert_eq!(
            scan_interval(max, &Timeouts::IPVS, 0, quick),
            Duration::from_secs(9)
        );
        assert_eq!(
            scan_interval(max, &Timeouts::IPVS, 0, Duration::from_secs(2)),
            Duration::from_secs(6)
        );
        assert_eq!(
            scan_interval(Duration::from_secs(5), &Timeouts::IPVS, 0, quick),
            Duration::from_secs(5)
        );
        let short = Timeouts::with_set(Some(2), Some(2), None);
        assert_eq!(scan_interval(max, &short, 0, quick), Duration::from_secs(1));
        assert_eq!(
            scan_interval(max, &Timeouts::IPVS, 4, quick),
            Duration::from_secs(3)
        );
        let mut tiny = Timeouts::IPVS;
        tiny.secs[STATE_CLOSE as usize] = 1;
        assert_eq!(scan_interval(max, &tiny, 0, quick), MIN_INTERVAL);
        tiny.secs = [0; STATE_COUNT];
        tiny.secs[STATE_UDP as usize] = u32::MAX;
        assert!(scan_interval(max, &tiny, 0, quick) >= MIN_INTERVAL);
    }

    #[test]
    fn due_flows_come_out_in_rounds() {
        let mut queue = DueQueue::default();
        let key = |n: u8| FlowKey {
            src: [n; 16],
            ..zeroed_key()
        };
        queue.push(12_000_000, key(1));
        queue.push(10_000_001, key(2));
        queue.push(10_000_000, key(3));
        assert_eq!(queue.len(), 3);
        // Rounds of 5 ms: 10 ms, 15 ms.
        assert_eq!(queue.next_ns(), Some(10_000_000));
        assert_eq!(queue.take_due(9_999_999), Vec::<FlowKey>::new());
        assert_eq!(queue.take_due(10_000_000), vec![key(3)]);
        assert_eq!(queue.next_ns(), Some(15_000_000));
        assert_eq!(queue.take_due(20_000_000), vec![key(1), key(2)]);
        assert_eq!(queue.len(), 0);
    }
}
