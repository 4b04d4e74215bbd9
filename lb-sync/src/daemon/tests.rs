use std::time::{Duration, Instant};

use super::*;
use crate::{test_conns::tcp_conn, wire::SkipReason};

const SETTINGS: Settings = Settings {
    syncid: 7,
    maxlen: 1472,
    flush_after: Duration::from_secs(1),
};

/// Connection `n`: its own client address.
fn conn(n: u16) -> SyncConn {
    tcp_conn([198, 51, (n >> 8) as u8, n as u8], 40000)
}

fn decoded(datagram: &[u8]) -> Message {
    Message::decode(datagram).expect("decodes").message
}

#[test]
fn a_master_sends_full_messages_at_once_and_the_rest_after_flush_after() {
    let start = Instant::now();
    let mut daemon = Daemon::new(SETTINGS);
    assert!(daemon.set_role(Role::Master).is_empty());
    // 40 records of 36 bytes fill a 1472-byte message; the 41st closes it.
    let mut sent = Vec::new();
    for n in 0..41 {
        sent.extend(daemon.send(conn(n), start + Duration::from_millis(u64::from(n))));
    }
    assert_eq!(sent.len(), 1);
    let first = decoded(&sent[0]);
    assert_eq!(first.syncid, 7);
    assert_eq!(first.conns, (0..40).map(conn).collect::<Vec<_>>());
    // The 41st waits from when it came (40 ms) for one second.
    let deadline = daemon.deadline().expect("a record waits");
    assert_eq!(deadline, start + Duration::from_millis(1040));
    assert!(daemon.poll(deadline - Duration::from_millis(1)).is_empty());
    let rest = daemon.poll(deadline);
    assert_eq!(decoded(&rest[0]).conns, vec![conn(40)]);
    assert_eq!(daemon.deadline(), None);
    assert_eq!(daemon.counters().messages_sent, 2);
    assert_eq!(daemon.counters().conns_sent, 41);
}

#[test]
fn only_a_master_sends_and_one_stepping_down_sends_what_it_holds() {
    let now = Instant::now();
    let mut daemon = Daemon::new(SETTINGS);
    assert!(daemon.send(conn(1), now).is_empty());
    assert_eq!(daemon.deadline(), None, "idle: nothing is queued");
    daemon.set_role(Role::Master);
    assert!(daemon.send(conn(2), now).is_empty());
    let handed_over = daemon.set_role(Role::Backup);
    assert_eq!(decoded(&handed_over[0]).conns, vec![conn(2)]);
    assert_eq!(daemon.deadline(), None);
    assert!(daemon.send(conn(3), now).is_empty());
    assert_eq!(daemon.counters().conns_sent, 1);
}

#[test]
fn a_backup_takes_its_sync_id_and_counts_the_rest() {
    let mut master = Daemon::new(SETTINGS);
    master.set_role(Role::Master);
    let now = Instant::now();
    master.send(conn(1), now);
    let ours = master.poll(now + SETTINGS.flush_after).remove(0);
    let mut other = ours.clone();
    other[1] = 8;

    let mut backup = Daemon::new(SETTINGS);
    assert!(backup.receive(&ours).is_empty(), "not yet a backup");
    backup.set_role(Role::Backup);
    assert_eq!(backup.receive(&ours), vec![conn(1)]);
    assert!(backup.receive(&other).is_empty());
    assert!(backup.receive(&ours[..10]).is_empty());
    // Sync id 0 takes every id.
    let mut any = Daemon::new(Settings {
        syncid: 0,
        ..SETTINGS
    });
    any.set_role(Role::Backup);
    assert_eq!(any.receive(&other), vec![conn(1)]);

    let counters = backup.counters();
    assert_eq!(counters.not_backup, 1);
    assert_eq!(counters.messages_received, 1);
    assert_eq!(counters.conns_received, 1);
    assert_eq!(counters.other_syncid, 1);
    assert_eq!(counters.malformed, 1);
    assert!(matches!(
        counters.last_malformed,
        Some(DecodeError::SizeMismatch { .. })
    ));
}

#[test]
fn a_backup_counts_records_skipped_alone() {
    let icmp = SyncConn {
        protocol: 1,
        ..conn(2)
    };
    let datagram = Message {
        syncid: 7,
        conns: vec![conn(1), icmp],
    }
    .encode();
    let mut backup = Daemon::new(SETTINGS);
    backup.set_role(Role::Backup);
    assert_eq!(backup.receive(&datagram), vec![conn(1)]);
    assert_eq!(backup.counters().skipped_conns, 1);
    assert_eq!(
        Message::decode(&datagram).expect("decodes").skipped[0].reason,
        SkipReason::Protocol { protocol: 1 }
    );
}

#[test]
fn master_and_backup_at_once_sends_and_takes() {
    let now = Instant::now();
    let mut one = Daemon::new(SETTINGS);
    let mut other = Daemon::new(SETTINGS);
    one.set_role(Role::MasterBackup);
    other.set_role(Role::MasterBackup);
    one.send(conn(1), now);
    let from_one = one.poll(now + SETTINGS.flush_after).remove(0);
    other.send(conn(2), now);
    let from_other = other.poll(now + SETTINGS.flush_after).remove(0);
    assert_eq!(other.receive(&from_one), vec![conn(1)]);
    assert_eq!(one.receive(&from_other), vec![conn(2)]);
    // Leaving the sending role hands over what waits.
    one.send(conn(3), now);
    assert_eq!(decoded(&one.set_role(Role::Backup)[0]).conns, vec![conn(3)]);
    assert!(Role::MasterBackup.sends() && Role::MasterBackup.receives());
    assert!(!Role::Idle.sends() && !Role::Idle.receives());
}
