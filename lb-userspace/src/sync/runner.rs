//! The sync daemon's thread: `lb_sync::daemon::Daemon` on its sockets. As master it
//! turns the data plane's events (`LB_SYNC_EVENTS`) into records and sends them, and
//! walks its flow table now and then (at once on becoming master, then every
//! `refresh_interval`, one slice at a time) to resend the flows active since the last
//! walk, whole at first, so that backups that started late learn them and the backups'
//! copies of long-lived flows do not time out; as backup it installs what it receives
//! into the flow table (`sync_table`). It has its own
//! map descriptors and sockets and waits on nothing but them (poll(2)), so the control
//! plane and the data-plane thread never wait for it, nor it for them. Its role comes
//! from the VRRP instance it follows (`set_role`); its counters are read with `status`.
//!
//! A flow of a persistent service brings its client's pin along, as IPVS sends a
//! connection's template with it: once per `TEMPLATE_RESEND` per pin, and in every whole
//! walk. A backup writes received templates into `LB_PERSIST`.
//!
//! The failback (`lb_sync::handover`), on the resync port: a director that becomes backup
//! from no role asks the master for all its connections and holds VRRP's preemption
//! (`PreemptionHold`) until the master's `Done`, or `resync_wait`; a master asked walks
//! its whole table and then sends `Done`.

use std::{
    collections::HashMap,
    io::{self, ErrorKind},
    os::{
        fd::{AsFd, AsRawFd},
        unix::net::UnixDatagram,
    },
    sync::{
        Arc, Mutex,
        mpsc::{self, Receiver, Sender},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use aya::maps::{MapData, RingBuf};
use lb_common::{SyncEvent, conn::Timeouts};
use lb_sync::{
    daemon::{Daemon, Role, Settings},
    handover::{Handover, LastResync, Outcome, Received},
};
use tracing::{info, warn};

use super::{
    convert::{incoming, incoming_pin, record, template},
    socket::SyncSockets,
    status::{PeerSeen, ResyncReport, SyncStatus},
};
use crate::{
    dataplane::xdp::{
        flows::monotonic_now_ns,
        sweep::monotonic_coarse_ns,
        sync_table::{FlowWalk, SyncTable},
    },
    status::now_unix_ms,
    vrrp::PreemptionHold,
};

/// How far the data plane's clock may lag this thread's (a tick at the lowest rate).
const CLOCK_SLACK: Duration = Duration::from_millis(50);

/// The longest the thread sleeps without looking at its commands.
const IDLE_WAKE: Duration = Duration::from_secs(1);

/// How long a pin sent with one flow is not sent again with the next (IPVS rate-limits
/// its templates the same way); a whole walk sends every pin again.
const TEMPLATE_RESEND: Duration = Duration::from_secs(30);

/// The most pins remembered as sent; beyond, the memory starts afresh.
const TEMPLATES_REMEMBERED: usize = 65_536;

/// How often a returning director asks again while no `Done` came.
const RESYNC_RETRY: Duration = Duration::from_secs(1);

/// The most peers `lbctl sync` lists (sources are not authenticated; the rest are
/// counted in the last entry's stead, not kept).
const MAX_PEERS: usize = 16;

/// What the daemon works with.
pub struct SyncParts {
    pub settings: Settings,
    pub sockets: SyncSockets,
    /// The sockets of the resync port.
    pub resync: SyncSockets,
    /// Held while this director waits for the master's connections; set at start when
    /// the daemon follows a VRRP instance and the wait is not zero.
    pub hold: PreemptionHold,
    /// The longest a returning director holds its preemption.
    pub resync_wait: Duration,
    pub events: RingBuf<MapData>,
    pub table: SyncTable,
    /// The timeouts of the running configuration (`lvs_timeouts`).
    pub timeouts: Timeouts,
    /// How often a master resends the flows active since its last walk.
    pub refresh_interval: Duration,
}

/// A returning director's request a walk answers, and the records sent for it so far.
#[derive(Clone, Copy)]
struct Serving {
    syncid: u8,
    nonce: u32,
    sent: u32,
}

/// A master's walk of its flow table under way: the flows seen since `since_ns`; when
/// it answers a returning director's request, the request's nonce and the connections
/// sent so far.
struct Walk {
    walk: FlowWalk,
    since_ns: u64,
    serving: Option<Serving>,
}

enum Command {
    Role(Role),
    Stop,
}

pub struct SyncRunner {
    commands: Sender<Command>,
    wake: UnixDatagram,
    status: Arc<Mutex<SyncStatus>>,
    hold: PreemptionHold,
    thread: Option<JoinHandle<()>>,
}

impl SyncRunner {
    /// Start the thread, in no role until `set_role`.
    pub fn spawn(parts: SyncParts) -> io::Result<Self> {
        let (commands, inbox) = mpsc::channel();
        let (wake, woken) = UnixDatagram::pair()?;
        woken.set_nonblocking(true)?;
        let status = Arc::new(Mutex::new(SyncStatus::default()));
        let shared = Arc::clone(&status);
        let hold = parts.hold.clone();
        let thread = std::thread::Builder::new()
            .name("sync".into())
            .spawn(move || run(parts, inbox, woken, shared))?;
        Ok(Self {
            commands,
            wake,
            status,
            hold,
            thread: Some(thread),
        })
    }

    /// Follow the VRRP instance: master sends, backup receives.
    pub fn set_role(&self, role: Role) {
        self.command(Command::Role(role));
    }

    pub fn status(&self) -> SyncStatus {
        self.status.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// The hold on VRRP's preemption this daemon sets, for the VRRP instances to read.
    pub fn preemption_hold(&self) -> PreemptionHold {
        self.hold.clone()
    }

    /// Where the thread keeps its status, for readers on other threads.
    pub fn status_source(&self) -> Arc<Mutex<SyncStatus>> {
        Arc::clone(&self.status)
    }

    fn command(&self, command: Command) {
        // The thread gone (it stops only when told) leaves nothing to tell.
        if self.commands.send(command).is_ok() {
            let _ = self.wake.send(&[1]);
        }
    }
}

impl Drop for SyncRunner {
    /// Stop the thread; a master first sends what it holds.
    fn drop(&mut self) {
        self.command(Command::Stop);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn run(
    mut parts: SyncParts,
    inbox: Receiver<Command>,
    woken: UnixDatagram,
    shared: Arc<Mutex<SyncStatus>>,
) {
    // However the thread ends (told to stop, or a panic), it holds no preemption after.
    let _release = ReleaseOnExit(parts.hold.clone());
    let mut daemon = Daemon::new(parts.settings);
    let mut handover = Handover::new(
        parts.settings.syncid,
        parts.hold.is_held(),
        RESYNC_RETRY,
        parts.resync_wait,
        nonce_seed(),
        Instant::now(),
    );
    let mut status = SyncStatus::default();
    let mut resync_reported = None;
    let mut templates = HashMap::new();
    let mut buffer = vec![0u8; 65536];
    let mut walking: Option<Walk> = None;
    // The next walk, and where it starts (0: the whole table).
    let mut next_walk = Instant::now();
    let mut walked_ns = 0;
    loop {
        let now = Instant::now();
        let mut wake_at = now + IDLE_WAKE;
        for deadline in [daemon.deadline(), handover.deadline()]
            .into_iter()
            .flatten()
        {
            wake_at = wake_at.min(deadline);
        }
        if daemon.role().sends() {
            wake_at = wake_at.min(next_walk);
        }
        let timeout = match walking {
            // A walk goes on slice by slice, between looks at everything else.
            Some(_) => Duration::ZERO,
            None => wake_at.saturating_duration_since(now),
        };
        wait(&parts, &woken, timeout);
        let mut stop = false;
        while let Ok(command) = inbox.try_recv() {
            let role = match command {
                Command::Role(role) => role,
                Command::Stop => {
                    stop = true;
                    Role::Idle
                }
            };
            if role.sends() && !daemon.role().sends() {
                // A new master sends its whole table first.
                walking = None;
                next_walk = Instant::now();
                walked_ns = 0;
            }
            let out = daemon.set_role(role);
            send_all(&parts.sockets, out, &mut status);
            if let Some(request) = handover.set_role(role, Instant::now()) {
                info!("connection sync: asking the master for its connections before preempting");
                send_all(&parts.resync, vec![request.to_vec()], &mut status);
            }
        }
        while woken.recv(&mut [0u8; 16]).is_ok() {}
        let now = Instant::now();
        // Events: sent as master, dropped otherwise (they are this director's own flows).
        loop {
            let event: SyncEvent = {
                let Some(item) = parts.events.next() else {
                    break;
                };
                if !daemon.role().sends() || item.len() < size_of::<SyncEvent>() {
                    continue;
                }
                bytemuck::pod_read_unaligned(&item[..size_of::<SyncEvent>()])
            };
            if send_flow(
                &parts,
                &mut daemon,
                &mut templates,
                &event,
                now,
                &mut status,
            ) == 0
            {
                status.not_synced += 1;
            }
        }
        receive_sync(&mut parts, &mut daemon, &mut status, &mut buffer, now);
        // Resync messages, after the sync messages: a `Done` comes after the records it
        // counts, which are installed by now.
        loop {
            let (len, from) = match parts.resync.receive.recv_from(&mut buffer) {
                Ok(received) => received,
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(_) => break,
            };
            heard_from(&mut status, from.ip());
            match handover.receive(&buffer[..len], daemon.role(), now) {
                Received::Serve { syncid, nonce } => {
                    let serving_it = walking
                        .as_ref()
                        .is_some_and(|walk| walk.serving.is_some_and(|s| s.nonce == nonce));
                    if !serving_it {
                        info!(
                            "connection sync: {} asks for all connections; sending them",
                            from.ip()
                        );
                        walking = Some(Walk {
                            walk: FlowWalk::default(),
                            since_ns: 0,
                            serving: Some(Serving {
                                syncid,
                                nonce,
                                sent: 0,
                            }),
                        });
                        templates.clear();
                    }
                }
                Received::Complete { .. } => {
                    receive_sync(&mut parts, &mut daemon, &mut status, &mut buffer, now)
                }
                Received::Nothing => {}
            }
        }
        if let Some(request) = handover.poll(now) {
            send_all(&parts.resync, vec![request.to_vec()], &mut status);
        }
        if !daemon.role().sends() {
            walking = None;
        } else if walking.is_none() && now >= next_walk && daemon.role() == Role::Master {
            // Master and backup at once (no VRRP instance) walks only to answer a
            // request: each director would otherwise send the other's flows back, and
            // keep them alive.
            walking = Some(Walk {
                walk: FlowWalk::default(),
                since_ns: walked_ns,
                serving: None,
            });
            if walked_ns == 0 {
                // A whole walk (a new master's): every pin goes again.
                templates.clear();
            }
            // The data plane's clock stands at its last tick: flows seen from a tick
            // before this walk on are the next walk's.
            walked_ns = monotonic_now_ns().saturating_sub(CLOCK_SLACK.as_nanos() as u64);
        }
        if let Some(walk) = &mut walking {
            let failed = match parts.table.walk_slice(&mut walk.walk, walk.since_ns) {
                Ok(flows) => {
                    for event in flows {
                        let records = send_flow(
                            &parts,
                            &mut daemon,
                            &mut templates,
                            &event,
                            now,
                            &mut status,
                        );
                        status.refreshed += u64::from(records.min(1));
                        if let Some(serving) = &mut walk.serving {
                            serving.sent = serving.sent.saturating_add(records);
                        }
                    }
                    false
                }
                Err(error) => {
                    status.last_walk_error = Some(error.to_string());
                    true
                }
            };
            if walk.walk.done() || failed {
                if let Some(Serving {
                    syncid,
                    nonce,
                    sent,
                }) = walk.serving
                {
                    // The records first, then the `Done` that counts them; a walk that
                    // failed part way sends no `Done` (the director asks again or waits).
                    let out = daemon.flush();
                    send_all(&parts.sockets, out, &mut status);
                    if !failed {
                        let done = Handover::done(syncid, nonce, sent);
                        send_all(&parts.resync, vec![done.to_vec()], &mut status);
                        status.resync_conns_served += u64::from(sent);
                        info!(
                            "connection sync: sent all {sent} connections to a returning director"
                        );
                    }
                } else {
                    next_walk = now + parts.refresh_interval;
                }
                walking = None;
            }
        }
        let out = daemon.poll(Instant::now());
        send_all(&parts.sockets, out, &mut status);
        parts.hold.set(handover.holds_preemption());
        report_resync(&handover, &mut resync_reported, &mut status);
        status.role = daemon.role();
        status.counters = daemon.counters().clone();
        status.holds_preemption = handover.holds_preemption();
        status.handover = handover.counters().clone();
        if let Ok(mut shared) = shared.lock() {
            *shared = status.clone();
        }
        if stop {
            return;
        }
    }
}

/// Frees VRRP's preemption when dropped: a sync thread that is gone cannot hold it.
struct ReleaseOnExit(PreemptionHold);

impl Drop for ReleaseOnExit {
    fn drop(&mut self) {
        self.0.set(false);
    }
}

/// Send flow `event`'s record, and its pin's template unless sent lately (`templates`:
/// when each pin went last); the records sent.
fn send_flow(
    parts: &SyncParts,
    daemon: &mut Daemon,
    templates: &mut HashMap<(u32, [u8; 16]), Instant>,
    event: &SyncEvent,
    now: Instant,
    status: &mut SyncStatus,
) -> u32 {
    let Some(real) = parts.table.real(event.real_id) else {
        return 0;
    };
    let Some(conn) = record(event, &real, &parts.timeouts) else {
        return 0;
    };
    let mut records = 1;
    let out = daemon.send(conn, now);
    send_all(&parts.sockets, out, status);
    if let Some(pin) = parts.table.pin_of(event, monotonic_coarse_ns()) {
        let key = (real.service_id, pin.client);
        let due = templates
            .get(&key)
            .is_none_or(|sent: &Instant| now.duration_since(*sent) >= TEMPLATE_RESEND);
        if due && let Some(conn) = template(&pin, &real) {
            if templates.len() >= TEMPLATES_REMEMBERED {
                templates.clear();
            }
            templates.insert(key, now);
            records += 1;
            let out = daemon.send(conn, now);
            send_all(&parts.sockets, out, status);
        }
    }
    records
}

/// Take the sync messages waiting: as backup, install their connections.
fn receive_sync(
    parts: &mut SyncParts,
    daemon: &mut Daemon,
    status: &mut SyncStatus,
    buffer: &mut [u8],
    now: Instant,
) {
    loop {
        let (len, from) = match parts.sockets.receive.recv_from(buffer) {
            Ok(received) => received,
            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
            // Another error (ICMP-induced, say) loses that datagram only.
            Err(_) => break,
        };
        heard_from(status, from.ip());
        // The clock the data plane stamps flows with.
        let now_ns = monotonic_coarse_ns();
        for conn in daemon.receive(&buffer[..len]) {
            let installed = if let Some(flow) = incoming(&conn, &parts.timeouts) {
                parts.table.install(&flow, now_ns, now)
            } else if let Some(pin) = incoming_pin(&conn) {
                parts.table.install_pin(&pin, now_ns, now)
            } else {
                status.not_synced += 1;
                continue;
            };
            match installed {
                Ok(()) => status.installed += 1,
                Err(error) => {
                    status.install_errors += 1;
                    status.last_install_error = Some(error.to_string());
                }
            }
        }
    }
}

/// Count a datagram from `peer`.
fn heard_from(status: &mut SyncStatus, peer: std::net::IpAddr) {
    if status.peers.len() >= MAX_PEERS && !status.peers.contains_key(&peer) {
        return;
    }
    let seen = status.peers.entry(peer).or_insert(PeerSeen {
        datagrams: 0,
        last_unix_ms: 0,
    });
    seen.datagrams += 1;
    seen.last_unix_ms = now_unix_ms();
}

/// Log the end of a resync this director asked for, once (`reported`: when the last one
/// reported ended), and keep it for lbctl.
fn report_resync(handover: &Handover, reported: &mut Option<Instant>, status: &mut SyncStatus) {
    let Some(LastResync {
        outcome,
        took,
        ended,
    }) = handover.last()
    else {
        return;
    };
    if *reported == Some(ended) {
        return;
    }
    *reported = Some(ended);
    let ended_unix_ms = now_unix_ms().saturating_sub(ended.elapsed().as_millis() as u64);
    match outcome {
        Outcome::Complete { conns } => info!(
            "connection sync: resync complete, the master sent {conns} connections in {} ms; preemption allowed",
            took.as_millis()
        ),
        Outcome::TimedOut => warn!(
            "connection sync: no resync from the master within {} s; preemption allowed without it",
            took.as_secs()
        ),
        Outcome::BecameMaster => {
            info!("connection sync: became master before a resync (no master answered)")
        }
    }
    status.last_resync = Some(ResyncReport {
        outcome,
        took,
        ended_unix_ms,
    });
}

/// Differs from one run of lbd to the next, so that a master does not take a new
/// request for one it is already answering.
fn nonce_seed() -> u32 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |t| t.subsec_nanos());
    nanos ^ std::process::id().rotate_left(16)
}

/// Sleep until the events, the socket or a command want attention, or `timeout`.
fn wait(parts: &SyncParts, woken: &UnixDatagram, timeout: Duration) {
    let mut fds = [
        parts.events.as_fd().as_raw_fd(),
        parts.sockets.receive.as_raw_fd(),
        parts.resync.receive.as_raw_fd(),
        woken.as_raw_fd(),
    ]
    .map(|fd| libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    });
    // SAFETY: an array of pollfd with its length; an error or EINTR just ends the wait.
    unsafe {
        libc::poll(
            fds.as_mut_ptr(),
            fds.len() as libc::nfds_t,
            timeout.as_millis().min(i32::MAX as u128) as libc::c_int,
        )
    };
}

fn send_all(sockets: &SyncSockets, datagrams: Vec<Vec<u8>>, status: &mut SyncStatus) {
    for datagram in datagrams {
        if sockets.send.send(&datagram).is_err() {
            status.send_errors += 1;
        }
    }
}
