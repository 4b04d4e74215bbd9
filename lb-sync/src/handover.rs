//! The failback's order, sans IO: a director that comes back holds its VRRP preemption
//! until it has the master's connections. On becoming backup from no role (at start, or
//! out of FAULT) it asks the master for a bulk resync (`resync::Resync::Request`, sent
//! again every `retry_every`), and lets VRRP preempt once the master's `Done` for that
//! request came, or once `wait_at_most` has passed, or once it became master anyway (no
//! master answered VRRP either). A master stepping down to backup does not hold: its
//! table is the current one. Waiting for a role (no VRRP state yet, or FAULT) holds at
//! most `wait_at_most` too, so that an instance stuck in FAULT cannot keep the others
//! from preempting; the request then goes out when the role comes.
//!
//! The master's side is `serve`: a request with a matching sync id, while master, is to
//! be answered by a walk of the whole table and a `Done`.

use std::time::{Duration, Instant};

use crate::{
    daemon::Role,
    resync::{Resync, ResyncError},
};

/// How the last resync this director asked for ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The master's `Done` came: it sent `conns` connections.
    Complete { conns: u32 },
    /// No `Done` within `wait_at_most`.
    TimedOut,
    /// This director became master before an answer came.
    BecameMaster,
}

/// The last resync this director asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LastResync {
    pub outcome: Outcome,
    pub took: Duration,
    pub ended: Instant,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Preemption held since `since`; nothing asked yet (no role yet, or FAULT).
    Holding { since: Instant },
    /// Preemption free, but a request is due when the role comes (a hold that ran out
    /// before it did).
    Due,
    /// Preemption held; asked with `nonce` at `asked`, last sent at `sent`.
    Asking {
        nonce: u32,
        asked: Instant,
        sent: Instant,
    },
    /// Preemption free.
    Free,
}

/// The counters `lbctl sync` and the metrics show.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HandoverCounters {
    /// Requests sent (again included), and `Done`s that ended one.
    pub requests_sent: u64,
    pub resyncs_completed: u64,
    pub resyncs_timed_out: u64,
    /// Requests this director answered as master.
    pub requests_served: u64,
    /// Datagrams on the resync port: not resync messages, with the last reason; with
    /// another sync id; not for this director (another's `Done`, a request while not
    /// master).
    pub malformed: u64,
    pub last_malformed: Option<ResyncError>,
    pub other_syncid: u64,
    pub ignored: u64,
}

/// What a datagram on the resync port asks of the caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Received {
    /// Walk the whole table to the backups, then send `done(syncid, nonce, conns)`.
    Serve { syncid: u8, nonce: u32 },
    /// The resync this director asked for is complete: preemption is free.
    Complete { conns: u32 },
    /// Nothing to do.
    Nothing,
}

pub struct Handover {
    syncid: u8,
    retry_every: Duration,
    wait_at_most: Duration,
    state: State,
    next_nonce: u32,
    last: Option<LastResync>,
    counters: HandoverCounters,
}

impl Handover {
    /// Holding preemption from `now` when `holds` (the daemon follows a VRRP instance);
    /// `nonce_seed` makes this run's requests differ from an earlier run's.
    pub fn new(
        syncid: u8,
        holds: bool,
        retry_every: Duration,
        wait_at_most: Duration,
        nonce_seed: u32,
        now: Instant,
    ) -> Self {
        Self {
            syncid,
            retry_every,
            wait_at_most,
            state: if holds {
                State::Holding { since: now }
            } else {
                State::Free
            },
            next_nonce: nonce_seed,
            last: None,
            counters: HandoverCounters::default(),
        }
    }

    /// Whether VRRP must not preempt now.
    pub fn holds_preemption(&self) -> bool {
        matches!(self.state, State::Holding { .. } | State::Asking { .. })
    }

    /// Whether a request is out, unanswered.
    pub fn asking(&self) -> bool {
        matches!(self.state, State::Asking { .. })
    }

    pub fn last(&self) -> Option<LastResync> {
        self.last
    }

    pub fn counters(&self) -> &HandoverCounters {
        &self.counters
    }

    /// The daemon took `role`: the request to send, if this starts one.
    pub fn set_role(&mut self, role: Role, now: Instant) -> Option<[u8; crate::resync::LEN]> {
        match (role, self.state) {
            (Role::Master | Role::MasterBackup, State::Asking { asked, .. }) => {
                self.end(Outcome::BecameMaster, asked, now);
                None
            }
            (Role::Master | Role::MasterBackup, _) => {
                self.state = State::Free;
                None
            }
            (Role::Idle, State::Holding { .. }) => None,
            (Role::Idle, _) => {
                self.state = State::Holding { since: now };
                None
            }
            (Role::Backup, State::Holding { .. } | State::Due) => {
                let nonce = self.next_nonce;
                self.next_nonce = self.next_nonce.wrapping_add(1);
                self.state = State::Asking {
                    nonce,
                    asked: now,
                    sent: now,
                };
                Some(self.request(nonce))
            }
            (Role::Backup, _) => None,
        }
    }

    /// When `poll` has something to do.
    pub fn deadline(&self) -> Option<Instant> {
        match self.state {
            State::Asking { asked, sent, .. } => {
                Some((sent + self.retry_every).min(self.until(asked)))
            }
            State::Holding { since } => Some(self.until(since)),
            _ => None,
        }
    }

    /// `wait_at_most` after `from` (the far future if that overflows).
    fn until(&self, from: Instant) -> Instant {
        from.checked_add(self.wait_at_most)
            .unwrap_or(from + Duration::from_secs(86_400 * 365))
    }

    /// At `now`: the request to send again, if its time came; gives up (preemption
    /// free) once `wait_at_most` has passed.
    pub fn poll(&mut self, now: Instant) -> Option<[u8; crate::resync::LEN]> {
        if let State::Holding { since } = self.state {
            if now >= self.until(since) {
                // No role came: preemption goes free; the request waits for the role.
                self.state = State::Due;
            }
            return None;
        }
        let State::Asking { nonce, asked, sent } = self.state else {
            return None;
        };
        if now >= self.until(asked) {
            self.end(Outcome::TimedOut, asked, now);
            return None;
        }
        if now < sent + self.retry_every {
            return None;
        }
        self.state = State::Asking {
            nonce,
            asked,
            sent: now,
        };
        Some(self.request(nonce))
    }

    /// A datagram on the resync port, while in `role`.
    pub fn receive(&mut self, datagram: &[u8], role: Role, now: Instant) -> Received {
        let message = match Resync::decode(datagram) {
            Ok(message) => message,
            Err(error) => {
                self.counters.malformed += 1;
                self.counters.last_malformed = Some(error);
                return Received::Nothing;
            }
        };
        if self.syncid != 0 && message.syncid() != self.syncid {
            self.counters.other_syncid += 1;
            return Received::Nothing;
        }
        match (message, self.state) {
            (Resync::Request { nonce, syncid }, _) if role.sends() => {
                self.counters.requests_served += 1;
                Received::Serve { syncid, nonce }
            }
            (
                Resync::Done { nonce, conns, .. },
                State::Asking {
                    nonce: ours, asked, ..
                },
            ) if nonce == ours => {
                self.end(Outcome::Complete { conns }, asked, now);
                Received::Complete { conns }
            }
            _ => {
                self.counters.ignored += 1;
                Received::Nothing
            }
        }
    }

    /// The `Done` a master sends once it has sent `conns` connections for the request
    /// `nonce` of sync id `syncid` (the request's: a master with id 0 serves every id).
    pub fn done(syncid: u8, nonce: u32, conns: u32) -> [u8; crate::resync::LEN] {
        Resync::Done {
            syncid,
            nonce,
            conns,
        }
        .encode()
    }

    fn request(&mut self, nonce: u32) -> [u8; crate::resync::LEN] {
        self.counters.requests_sent += 1;
        Resync::Request {
            syncid: self.syncid,
            nonce,
        }
        .encode()
    }

    fn end(&mut self, outcome: Outcome, asked: Instant, now: Instant) {
        match outcome {
            Outcome::Complete { .. } => self.counters.resyncs_completed += 1,
            Outcome::TimedOut => self.counters.resyncs_timed_out += 1,
            Outcome::BecameMaster => {}
        }
        self.state = State::Free;
        self.last = Some(LastResync {
            outcome,
            took: now.saturating_duration_since(asked),
            ended: now,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RETRY: Duration = Duration::from_secs(1);
    const WAIT: Duration = Duration::from_secs(10);

    fn handover(holds: bool) -> Handover {
        Handover::new(3, holds, RETRY, WAIT, 100, Instant::now())
    }

    fn nonce_of(datagram: &[u8]) -> u32 {
        match Resync::decode(datagram).expect("a resync message") {
            Resync::Request { nonce, syncid } => {
                assert_eq!(syncid, 3);
                nonce
            }
            other => panic!("not a request: {other:?}"),
        }
    }

    #[test]
    fn a_returning_director_holds_until_the_masters_done() {
        let start = Instant::now();
        let mut backup = handover(true);
        assert!(backup.holds_preemption(), "held before VRRP gives a role");
        let request = backup.set_role(Role::Backup, start).expect("asks");
        let nonce = nonce_of(&request);
        assert!(backup.holds_preemption());
        assert_eq!(backup.deadline(), Some(start + RETRY));

        let mut master = handover(false);
        master.set_role(Role::Master, start);
        assert_eq!(
            master.receive(&request, Role::Master, start),
            Received::Serve { syncid: 3, nonce }
        );
        let done = Handover::done(3, nonce, 42);
        // Another request's Done does not end this one.
        let stale = Handover::done(3, nonce.wrapping_sub(1), 1);
        let later = start + Duration::from_millis(300);
        assert_eq!(
            backup.receive(&stale, Role::Backup, later),
            Received::Nothing
        );
        assert!(backup.holds_preemption());
        assert_eq!(
            backup.receive(&done, Role::Backup, later),
            Received::Complete { conns: 42 }
        );
        assert!(!backup.holds_preemption());
        assert_eq!(
            backup.last(),
            Some(LastResync {
                outcome: Outcome::Complete { conns: 42 },
                took: Duration::from_millis(300),
                ended: later,
            })
        );
        assert_eq!(backup.counters().resyncs_completed, 1);
        assert_eq!(master.counters().requests_served, 1);
    }

    #[test]
    fn the_request_goes_again_and_the_wait_is_bounded() {
        let start = Instant::now();
        let mut backup = handover(true);
        let first = nonce_of(&backup.set_role(Role::Backup, start).expect("asks"));
        assert_eq!(backup.poll(start + RETRY / 2), None);
        let again = backup.poll(start + RETRY).expect("asks again");
        assert_eq!(nonce_of(&again), first, "the same request");
        assert_eq!(backup.deadline(), Some(start + 2 * RETRY));
        let mut now = start + RETRY;
        while backup.holds_preemption() {
            now = backup.deadline().expect("a deadline while asking");
            backup.poll(now);
        }
        assert_eq!(now, start + WAIT);
        assert_eq!(backup.last().map(|l| l.outcome), Some(Outcome::TimedOut));
        assert_eq!(backup.counters().requests_sent, 10);
        assert_eq!(backup.counters().resyncs_timed_out, 1);
        assert_eq!(backup.deadline(), None);
    }

    #[test]
    fn holding_follows_the_role() {
        let now = Instant::now();
        // Master at once (no other master): free, nothing asked.
        let mut alone = handover(true);
        assert_eq!(alone.set_role(Role::Master, now), None);
        assert!(!alone.holds_preemption());
        // A master stepping down has the current table: it does not hold.
        assert_eq!(alone.set_role(Role::Backup, now), None);
        assert!(!alone.holds_preemption());
        // FAULT holds again, and leaving it asks anew with a new nonce.
        alone.set_role(Role::Idle, now);
        assert!(alone.holds_preemption());
        let first = nonce_of(&alone.set_role(Role::Backup, now).expect("asks"));
        alone.set_role(Role::Master, now);
        assert_eq!(alone.last().map(|l| l.outcome), Some(Outcome::BecameMaster));
        alone.set_role(Role::Idle, now);
        let second = nonce_of(&alone.set_role(Role::Backup, now).expect("asks"));
        assert_ne!(first, second);
        // Without a VRRP instance to follow nothing holds.
        assert!(!handover(false).holds_preemption());
    }

    #[test]
    fn waiting_for_a_role_holds_at_most_the_wait_and_asks_when_it_comes() {
        let start = Instant::now();
        let mut stuck = Handover::new(3, true, RETRY, WAIT, 7, start);
        assert_eq!(stuck.deadline(), Some(start + WAIT));
        assert_eq!(stuck.poll(start + WAIT / 2), None);
        assert!(stuck.holds_preemption());
        assert_eq!(stuck.poll(start + WAIT), None);
        assert!(
            !stuck.holds_preemption(),
            "a FAULT that lasts frees the others"
        );
        assert_eq!(stuck.deadline(), None);
        // The role comes at last: the request goes out and preemption is held again.
        let later = start + 3 * WAIT;
        assert_eq!(
            nonce_of(&stuck.set_role(Role::Backup, later).expect("asks")),
            7
        );
        assert!(stuck.holds_preemption());
        // A wait too long for the clock still ends: far away, not never.
        let forever = Handover::new(3, true, RETRY, Duration::MAX, 0, start);
        assert!(forever.deadline().is_some_and(|at| at > start));
    }

    #[test]
    fn strangers_are_counted_not_served() {
        let now = Instant::now();
        let mut director = handover(false);
        let request = Resync::Request {
            syncid: 3,
            nonce: 1,
        }
        .encode();
        assert_eq!(
            director.receive(&request, Role::Backup, now),
            Received::Nothing,
            "only a master serves"
        );
        let other = Resync::Request {
            syncid: 4,
            nonce: 1,
        }
        .encode();
        assert_eq!(
            director.receive(&other, Role::Master, now),
            Received::Nothing
        );
        assert_eq!(
            director.receive(b"junk", Role::Master, now),
            Received::Nothing
        );
        let counters = director.counters();
        assert_eq!(
            (counters.ignored, counters.other_syncid, counters.malformed),
            (1, 1, 1)
        );
        assert_eq!(
            counters.last_malformed,
            Some(ResyncError::Length { len: 4 })
        );
        // Sync id 0 serves every id, as the sync daemon takes every id.
        let mut any = Handover::new(0, false, RETRY, WAIT, 0, now);
        assert_eq!(
            any.receive(&other, Role::Master, now),
            Received::Serve {
                syncid: 4,
                nonce: 1
            }
        );
    }
}
