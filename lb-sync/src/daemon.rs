//! The sync daemon as a sans-IO machine: the role the VRRP instance gives it, connections
//! to send in, datagrams out; datagrams in, connections to create out; and the counters
//! `lbctl sync` shows. Time comes in as `now`; the caller sleeps until `deadline`.
//!
//! As in IPVS: a master batches records into messages of at most `maxlen` bytes and sends
//! a message when it is full, or when its first record has waited `flush_after`; a backup
//! takes messages with its sync id (any, when its id is 0) and skips what the kernel's
//! backup skips. A director in neither role sends and takes nothing.

use std::time::{Duration, Instant};

use crate::wire::{Batch, DecodeError, Message, SyncConn};

/// What the daemon is told to be, by the VRRP instance it follows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// MASTER: send the connections of this director.
    Master,
    /// BACKUP: create the connections the master sends.
    Backup,
    /// Neither (FAULT, INIT, stopped).
    Idle,
    /// Both at once: no VRRP instance to follow (keepalived then runs both of the
    /// kernel's daemons); each director sends its own connections and creates the others'.
    MasterBackup,
}

impl Role {
    /// Whether this role sends the director's connections.
    pub fn sends(self) -> bool {
        matches!(self, Role::Master | Role::MasterBackup)
    }

    /// Whether this role creates the connections others send.
    pub fn receives(self) -> bool {
        matches!(self, Role::Backup | Role::MasterBackup)
    }
}

/// The daemon's settings (keepalived's `lvs_sync_daemon`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Settings {
    pub syncid: u8,
    /// The largest message (UDP payload), at least one record long.
    pub maxlen: usize,
    /// How long a record may wait for its message to fill (IPVS waits up to 2 s).
    pub flush_after: Duration,
}

/// The counters `lbctl sync` and the metrics show.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    pub messages_sent: u64,
    pub conns_sent: u64,
    pub messages_received: u64,
    pub conns_received: u64,
    /// Messages with another sync id.
    pub other_syncid: u64,
    /// Messages that arrived while not a backup.
    pub not_backup: u64,
    /// Messages dropped whole (`wire::DecodeError`), and the last reason.
    pub malformed: u64,
    pub last_malformed: Option<DecodeError>,
    /// Records skipped alone (`wire::SkipReason`).
    pub skipped_conns: u64,
}

pub struct Daemon {
    settings: Settings,
    role: Role,
    /// Records waiting for their message, and when the first of them came.
    batch: Batch,
    queued_since: Option<Instant>,
    counters: Counters,
}

impl Daemon {
    pub fn new(settings: Settings) -> Self {
        Daemon {
            settings,
            role: Role::Idle,
            batch: Batch::new(settings.syncid, settings.maxlen),
            queued_since: None,
            counters: Counters::default(),
        }
    }

    pub fn role(&self) -> Role {
        self.role
    }

    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// Take `role`; the datagrams to send now. A master that steps down sends what it
    /// has queued (its successor should know those connections); a new master starts
    /// with an empty queue.
    pub fn set_role(&mut self, role: Role) -> Vec<Vec<u8>> {
        let flushed = if self.role.sends() && !role.sends() {
            self.flush()
        } else {
            Vec::new()
        };
        self.role = role;
        flushed
    }

    /// A connection of this director to send: the datagrams to send now (a message it
    /// did not fit in). Ignored unless master.
    pub fn send(&mut self, conn: SyncConn, now: Instant) -> Vec<Vec<u8>> {
        if !self.role.sends() {
            return Vec::new();
        }
        let closed = self.batch.push(conn);
        // The oldest record waiting is `conn` when it starts a message.
        if closed.is_some() || self.queued_since.is_none() {
            self.queued_since = Some(now);
        }
        closed
            .map(|message| self.sent(message))
            .into_iter()
            .collect()
    }

    /// When `poll` has something to do.
    pub fn deadline(&self) -> Option<Instant> {
        self.queued_since
            .map(|since| since + self.settings.flush_after)
    }

    /// The datagrams whose time has come at `now`.
    pub fn poll(&mut self, now: Instant) -> Vec<Vec<u8>> {
        match self.deadline() {
            Some(deadline) if now >= deadline => self.flush(),
            _ => Vec::new(),
        }
    }

    /// The records waiting, as one message (none if there are none).
    pub fn flush(&mut self) -> Vec<Vec<u8>> {
        self.queued_since = None;
        self.batch
            .take()
            .map(|message| self.sent(message))
            .into_iter()
            .collect()
    }

    /// Count `message` as sent; its datagram.
    fn sent(&mut self, message: Message) -> Vec<u8> {
        self.counters.messages_sent += 1;
        self.counters.conns_sent += message.conns.len() as u64;
        message.encode()
    }

    /// A datagram from the sync group: the connections to create, if this director is a
    /// backup and the message is for it.
    pub fn receive(&mut self, datagram: &[u8]) -> Vec<SyncConn> {
        if !self.role.receives() {
            self.counters.not_backup += 1;
            return Vec::new();
        }
        // The sync id sits where both versions' headers have it; the kernel checks it
        // before anything else.
        if let Some(&syncid) = datagram.get(1)
            && self.settings.syncid != 0
            && syncid != self.settings.syncid
        {
            self.counters.other_syncid += 1;
            return Vec::new();
        }
        match Message::decode(datagram) {
            Ok(decoded) => {
                self.counters.messages_received += 1;
                self.counters.conns_received += decoded.message.conns.len() as u64;
                self.counters.skipped_conns += decoded.skipped.len() as u64;
                decoded.message.conns
            }
            Err(error) => {
                self.counters.malformed += 1;
                self.counters.last_malformed = Some(error);
                Vec::new()
            }
        }
    }
}

#[cfg(test)]
mod tests;
