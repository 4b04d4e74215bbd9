//! One `vrrp_instance` at work: the state machine (`lb_vrrp::machine`) fed with the
//! adverts its socket receives and its own timers, and its commands carried out: adverts
//! sent to the group or each unicast peer, virtual addresses added and removed through
//! rtnetlink, announced with gratuitous ARP / unsolicited NA (`garp_master_repeat` at
//! once, again after `garp_master_delay`), notify scripts run with keepalived's
//! arguments. Received packets are checked before the machine sees them: the decoder's
//! checks, the VRID, the TTL of 255 (from unicast peers too, except that keepalived sends
//! IPv6 unicast adverts with hop limit 64, which is accepted), the version, and VRRPv2's
//! password; a refused packet is logged, never fatal.

use std::{
    net::IpAddr,
    time::{Duration, Instant},
};

use lb_vrrp::{
    machine::{Command, Event, Machine, Settings, State},
    packet::{Advertisement, Auth, Version},
};
use tokio::sync::{mpsc, watch};
use tracing::{debug, info, warn};

use super::{
    absent, addresses, announce, link,
    published::Published,
    socket::{GROUP4, GROUP6, VrrpSocket},
    timer::Timer,
    track::{self, Tracker},
    vmac,
};
use crate::{
    check::script::{self, Policy},
    model::vrrp::{AuthType, VrrpInstance, VrrpScript},
    rtnl::RouteSocket,
    status::{VrrpCounters, VrrpStatus, VrrpTable, now_unix_ms},
};

/// How long a notify script may run.
const NOTIFY_TIMEOUT: Duration = Duration::from_secs(30);

/// A state change, for lbd (ha_suspend, logs, metrics) and the sync groups.
#[derive(Clone, Debug)]
pub struct StateChange {
    pub instance: String,
    pub state: State,
    /// The change followed the instance's sync group (not to be passed on again).
    pub synced: bool,
    /// Not a transition: whether the instance's own tracking fails changed (its sync
    /// group is faulty while any member's is).
    pub own_fault: Option<bool>,
}

#[derive(Debug, thiserror::Error)]
pub enum InstanceError {
    #[error("vrrp_instance {name}: {reason}")]
    Setup { name: String, reason: String },
}

/// Everything fixed about a running instance.
struct Running {
    config: VrrpInstance,
    /// Where adverts go out.
    ifindex: u32,
    /// Where the addresses go (the vmac, else the interface), announced with `mac`.
    addr_ifindex: u32,
    mac: [u8; 6],
    source: IpAddr,
    /// Where adverts go: the unicast peers, else the group.
    destinations: Vec<IpAddr>,
    vips: Vec<IpAddr>,
    version: Version,
    auth: Auth,
    policy: Policy,
    /// The instance's state and counters, as lbctl and the metrics see them.
    status: Published,
    /// The sockets its announcements go out of (kept: see `announce`).
    announcer: std::sync::Arc<std::sync::Mutex<announce::Announcer>>,
}

/// What connects an instance to lbd.
pub struct Context {
    /// Turns true when the instance is to stop.
    pub stop: watch::Receiver<bool>,
    /// States of its sync group to follow.
    pub sync: mpsc::UnboundedReceiver<State>,
    /// Where its state changes go.
    pub changes: mpsc::UnboundedSender<StateChange>,
    /// Where it keeps its state and counters.
    pub table: VrrpTable,
    /// Preemption held (by the connection sync) while set.
    pub hold: super::PreemptionHold,
}

/// Run `config` until `stop` turns true; then hand over (priority 0) and return.
pub async fn run(
    config: VrrpInstance,
    scripts: Vec<VrrpScript>,
    policy: Policy,
    context: Context,
) -> Result<(), InstanceError> {
    let Context {
        mut stop,
        mut sync,
        changes,
        table,
        hold,
    } = context;
    let name = config.name.clone();
    let status = Published::new(
        table,
        VrrpStatus {
            name: name.clone(),
            interface: config.interface.clone(),
            vrid: config.vrid,
            version: config.version,
            state: state_name(State::Initialize).to_owned(),
            priority: config.priority,
            configured_priority: config.priority,
            master: None,
            vips: config.virtual_ipaddress.iter().map(|a| a.addr).collect(),
            since_unix_ms: now_unix_ms(),
            counters: VrrpCounters::default(),
        },
    );
    if !absent::wait_for_interface(&config.interface, &name, &status, &changes, &mut stop).await {
        return Ok(());
    }
    let setup = |reason: String| InstanceError::Setup {
        name: name.clone(),
        reason,
    };
    let vips: Vec<IpAddr> = config.virtual_ipaddress.iter().map(|a| a.addr).collect();
    let ipv6 = vips.first().is_some_and(IpAddr::is_ipv6);
    let mut rtnl = RouteSocket::new().map_err(|e| setup(e.to_string()))?;
    let base_index = link::index(&config.interface).map_err(|e| setup(e.to_string()))?;
    // use_vmac: the addresses, their announcements and (unless vmac_xmit_base) the
    // adverts go through the macvlan with the virtual MAC.
    let vmac = match &config.use_vmac {
        Some(configured) => {
            let vmac_name = vmac::name(configured, config.vrid);
            let index = vmac::create(
                &mut rtnl,
                &vmac_name,
                &config.interface,
                vmac::mac(config.vrid, ipv6),
                ipv6,
            )
            .map_err(|e| setup(format!("use_vmac {vmac_name}: {e}")))?;
            Some((vmac_name, index))
        }
        None => None,
    };
    let (addr_ifindex, mac) = match &vmac {
        Some((_, index)) => (*index, vmac::mac(config.vrid, ipv6)),
        None => (
            base_index,
            link::mac(&config.interface).map_err(|e| setup(e.to_string()))?,
        ),
    };
    let (send_interface, ifindex) = match &vmac {
        Some((vmac_name, index)) if !config.vmac_xmit_base => (vmac_name.clone(), *index),
        _ => (config.interface.clone(), base_index),
    };
    let source = match config.unicast_src_ip.or(config.mcast_src_ip) {
        Some(source) => source,
        None => link::primary(&config.interface, ipv6, &vips).map_err(|e| setup(e.to_string()))?,
    };
    let group: IpAddr = if ipv6 { GROUP6.into() } else { GROUP4.into() };
    let multicast = config.unicast_peer.is_empty();
    let socket = VrrpSocket::open(&send_interface, ifindex, source, multicast.then_some(group))
        .map_err(|e| setup(format!("VRRP socket on {send_interface}: {e}")))?;
    let version = if config.version == 3 {
        Version::V3
    } else {
        Version::V2
    };
    let auth = match (&config.authentication, version) {
        (Some(a), Version::V2) if a.auth_type == AuthType::Pass => Auth::pass(&a.auth_pass),
        _ => Auth::None,
    };
    let interval_cs = (config.advert_int.as_millis() / 10).clamp(1, 0x0fff) as u16;
    let mut machine = Machine::new(Settings {
        version,
        vrid: config.vrid,
        priority: config.priority,
        advert_interval_cs: interval_cs,
        preempt: config.preempt,
        preempt_delay: config.preempt_delay,
        primary: source,
    });
    let running = Running {
        destinations: if multicast {
            vec![group]
        } else {
            config.unicast_peer.clone()
        },
        config,
        ifindex,
        addr_ifindex,
        mac,
        source,
        vips,
        version,
        auth,
        policy,
        status,
        announcer: Default::default(),
    };
    info!(
        "({}) VRRPv{} on {} from {source}, vrid {}, priority {}",
        name,
        if version == Version::V3 { 3 } else { 2 },
        running.config.interface,
        running.config.vrid,
        running.config.priority
    );
    let mut tracker = Tracker::new(&running.config, &scripts);
    let (updates_sender, mut updates) = mpsc::unbounded_channel();
    let watchers = track::watch(&running.config, &scripts, &running.policy, updates_sender);
    let _watchers = AbortOnDrop(watchers);
    let commands = machine.handle(Event::Startup, Instant::now());
    running.carry_out(commands, &machine, &socket, &mut rtnl, &changes, false);
    // garp_master_refresh: announcements again every so often while master.
    let mut refresh_at: Option<Instant> = None;
    let mut timer = Timer::new();
    loop {
        // A copy that found the table locked is made again now.
        running.status.flush();
        let deadline = machine.deadline();
        refresh_at = match (machine.state(), running.config.garp_master_refresh) {
            (State::Master, Some(every)) => refresh_at.or(Some(Instant::now() + every)),
            _ => None,
        };
        tokio::select! {
            _ = sleep_until(refresh_at) => {
                running.announce_now(running.config.garp_master_refresh_repeat);
                refresh_at = running
                    .config
                    .garp_master_refresh
                    .map(|every| Instant::now() + every);
            }
            _ = stop.changed() => {
                let commands = machine.handle(Event::Shutdown, Instant::now());
                running.carry_out(commands, &machine, &socket, &mut rtnl, &changes, false);
                if let Some(stop_script) = &running.config.notify.stop {
                    running.notify_stop(stop_script).await;
                }
                if let Some((vmac_name, _)) = &vmac
                    && let Err(e) = vmac::delete(&mut rtnl, vmac_name)
                {
                    warn!("({name}) removing {vmac_name}: {e}");
                }
                return Ok(());
            }
            received = socket.recv() => match received {
                Ok(packet) => {
                    if let Some(event) = running.check(packet) {
                        machine.hold_preemption(hold.is_held());
                        let commands = machine.handle(event, Instant::now());
                        running.carry_out(commands, &machine, &socket, &mut rtnl, &changes, false);
                    }
                }
                Err(e) => warn!("({name}) receiving: {e}"),
            },
            Some(state) = sync.recv() => {
                let commands = machine.handle(Event::Sync(state), Instant::now());
                running.carry_out(commands, &machine, &socket, &mut rtnl, &changes, true);
            }
            Some(update) = updates.recv() => {
                info!("({name}) tracking: {}", running.describe(update));
                let (fault, priority) = (tracker.fault(), tracker.priority());
                tracker.update(update);
                let now = Instant::now();
                if tracker.priority() != priority {
                    info!("({name}) priority {priority} -> {}", tracker.priority());
                    running.with_status(|s| s.priority = tracker.priority());
                    let commands = machine.handle(Event::Priority(tracker.priority()), now);
                    running.carry_out(commands, &machine, &socket, &mut rtnl, &changes, false);
                }
                if tracker.fault() != fault {
                    let commands = machine.handle(Event::Fault(tracker.fault()), now);
                    running.carry_out(commands, &machine, &socket, &mut rtnl, &changes, false);
                    let _ = changes.send(StateChange {
                        instance: name.clone(),
                        state: machine.state(),
                        synced: false,
                        own_fault: Some(tracker.fault()),
                    });
                }
            }
            _ = timer.sleep_until(deadline) => {
                let commands = machine.handle(Event::Timer, Instant::now());
                running.carry_out(commands, &machine, &socket, &mut rtnl, &changes, false);
            }
        }
    }
}

/// Aborts the watcher tasks when the instance ends.
struct AbortOnDrop(Vec<tokio::task::JoinHandle<()>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

impl Running {
    fn name(&self) -> &str {
        &self.config.name
    }

    /// Every address the instance holds while master: `virtual_ipaddress` and
    /// `virtual_ipaddress_excluded`.
    fn addresses(&self) -> impl Iterator<Item = &crate::model::vrrp::IpAddress> {
        self.config
            .virtual_ipaddress
            .iter()
            .chain(&self.config.virtual_ipaddress_excluded)
    }

    /// Update the instance's entry of the status table.
    fn with_status(&self, update: impl FnOnce(&mut VrrpStatus)) {
        self.status.update(update);
    }

    /// The event of a received packet, or why it is refused (logged).
    fn check(&self, packet: super::socket::Received) -> Option<Event> {
        if packet.src == self.source {
            return None;
        }
        let advert = match Advertisement::decode(&packet.payload, packet.src, packet.dst) {
            Ok(advert) => advert,
            Err(e) => {
                debug!("({}) packet from {} refused: {e}", self.name(), packet.src);
                self.with_status(|s| s.counters.invalid_packets += 1);
                return None;
            }
        };
        if advert.vrid != self.config.vrid {
            return None;
        }
        let from_peer = self.config.unicast_peer.contains(&packet.src);
        let keepalived_ipv6_unicast = from_peer && packet.src.is_ipv6() && packet.ttl == 64;
        if packet.ttl != 255 && !keepalived_ipv6_unicast {
            warn!(
                "({}) advert from {} with TTL {}, not 255; ignored",
                self.name(),
                packet.src,
                packet.ttl
            );
            self.with_status(|s| s.counters.ttl_errors += 1);
            return None;
        }
        if advert.version != self.version {
            warn!(
                "({}) advert from {} is of another VRRP version; ignored",
                self.name(),
                packet.src
            );
            self.with_status(|s| s.counters.version_errors += 1);
            return None;
        }
        if self.version == Version::V2 && advert.auth != self.auth {
            warn!(
                "({}) advert from {} with a wrong password; ignored",
                self.name(),
                packet.src
            );
            self.with_status(|s| s.counters.auth_errors += 1);
            return None;
        }
        if !self.config.unicast_peer.is_empty() && !from_peer {
            debug!(
                "({}) advert from {}, not a unicast peer; ignored",
                self.name(),
                packet.src
            );
            return None;
        }
        self.with_status(|s| {
            s.counters.adverts_received += 1;
            if advert.priority == 0 {
                s.counters.priority_zero_received += 1;
            }
            if s.state == state_name(State::Backup) {
                s.master = Some(packet.src);
            }
        });
        Some(Event::Advertisement {
            src: packet.src,
            advert,
        })
    }

    fn carry_out(
        &self,
        commands: Vec<Command>,
        machine: &Machine,
        socket: &VrrpSocket,
        rtnl: &mut RouteSocket,
        changes: &mpsc::UnboundedSender<StateChange>,
        synced: bool,
    ) {
        for command in commands {
            match command {
                Command::Send { priority } => {
                    let advert = Advertisement {
                        version: self.version,
                        vrid: self.config.vrid,
                        priority,
                        interval_cs: (self.config.advert_int.as_millis() / 10).clamp(1, 0x0fff)
                            as u16,
                        addresses: self.vips.clone(),
                        auth: self.auth,
                    };
                    let mut sent = 0u64;
                    for &dst in &self.destinations {
                        let packet = advert.encode(self.source, dst);
                        match socket.send(&packet, dst, self.ifindex) {
                            Ok(_) => sent += 1,
                            Err(e) => warn!("({}) sending to {dst}: {e}", self.name()),
                        }
                    }
                    self.with_status(|s| {
                        s.counters.adverts_sent += sent;
                        if priority == 0 {
                            s.counters.priority_zero_sent += sent;
                        }
                    });
                }
                Command::AddAddresses => {
                    for address in self.addresses() {
                        let ifindex = self.ifindex_of(address.dev.as_deref());
                        if let Err(e) = addresses::add(rtnl, address, ifindex) {
                            warn!("({}) adding {}: {e}", self.name(), address.addr);
                        }
                    }
                    // After the addresses: a route may use one as its source.
                    for route in &self.config.virtual_routes {
                        let ifindex = self.ifindex_of(route.dev.as_deref());
                        if let Err(e) = addresses::add_route(rtnl, route, ifindex) {
                            warn!(
                                "({}) adding route {}: {e}",
                                self.name(),
                                route.words.join(" ")
                            );
                        }
                    }
                }
                Command::RemoveAddresses => {
                    for route in &self.config.virtual_routes {
                        let ifindex = self.ifindex_of(route.dev.as_deref());
                        if let Err(e) = addresses::remove_route(rtnl, route, ifindex) {
                            warn!(
                                "({}) removing route {}: {e}",
                                self.name(),
                                route.words.join(" ")
                            );
                        }
                    }
                    for address in self.addresses() {
                        let ifindex = self.ifindex_of(address.dev.as_deref());
                        if let Err(e) = addresses::remove(rtnl, address, ifindex) {
                            warn!("({}) removing {}: {e}", self.name(), address.addr);
                        }
                    }
                }
                Command::Announce => self.announce(),
                Command::Transition { to, .. } => {
                    info!("({}) Entering {} STATE", self.name(), state_name(to));
                    self.with_status(|s| {
                        if s.state == state_name(State::Master) && to != State::Master {
                            s.counters.released_master += 1;
                        }
                        if to == State::Master {
                            s.counters.became_master += 1;
                        }
                        s.counters.transitions += 1;
                        s.state = state_name(to).to_owned();
                        s.since_unix_ms = now_unix_ms();
                        s.priority = machine.priority();
                        s.master = match to {
                            State::Master => Some(self.source),
                            _ => None,
                        };
                    });
                    let _ = changes.send(StateChange {
                        instance: self.name().to_owned(),
                        state: to,
                        synced,
                        own_fault: None,
                    });
                    self.notify_transition(to, machine.priority());
                }
            }
        }
    }

    /// An update of what the instance tracks, in words.
    fn describe(&self, update: track::Update) -> String {
        let state = |up: bool| if up { "up" } else { "down" };
        match update {
            track::Update::Interface { index, up } => {
                let name = match index {
                    None => self.config.interface.as_str(),
                    Some(i) => self
                        .config
                        .track_interface
                        .get(i)
                        .map_or("?", |t| t.name.as_str()),
                };
                format!("interface {name} is {}", state(up))
            }
            track::Update::Script { index, up } => {
                let name = self
                    .config
                    .track_script
                    .get(index)
                    .map_or("?", |t| t.name.as_str());
                format!("script {name} is {}", state(up))
            }
        }
    }

    /// The index of `dev`, else of the instance's interface.
    fn ifindex_of(&self, dev: Option<&str>) -> u32 {
        dev.and_then(|d| link::index(d).ok())
            .unwrap_or(self.addr_ifindex)
    }

    /// `repeat` announcements now.
    fn announce_now(&self, repeat: u32) {
        for _ in 0..repeat.max(1) {
            let mut announcer = self.announcer.lock().unwrap_or_else(|e| e.into_inner());
            if let Err(e) = announcer.announce(self.addr_ifindex, self.mac, &self.vips) {
                warn!("({}) announcing the addresses: {e}", self.name());
                return;
            }
        }
    }

    /// `garp_master_repeat` announcements now, and as many after `garp_master_delay`.
    fn announce(&self) {
        let (ifindex, mac, vips) = (self.addr_ifindex, self.mac, self.vips.clone());
        let repeat = self.config.garp_master_repeat.max(1);
        let delay = self.config.garp_master_delay;
        let name = self.name().to_owned();
        let announcer = self.announcer.clone();
        tokio::spawn(async move {
            for round in 0..2 {
                if round == 1 {
                    if delay.is_zero() {
                        return;
                    }
                    tokio::time::sleep(delay).await;
                }
                for _ in 0..repeat {
                    let result = announcer
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .announce(ifindex, mac, &vips);
                    if let Err(e) = result {
                        warn!("({name}) announcing the addresses: {e}");
                        return;
                    }
                }
            }
        });
    }

    /// keepalived's notify scripts for entering `state`: the state's own, and `notify`
    /// with `INSTANCE NAME STATE PRIORITY`.
    fn notify_transition(&self, state: State, priority: u8) {
        let notify = &self.config.notify;
        let own = match state {
            State::Master => notify.master.clone(),
            State::Backup => notify.backup.clone(),
            State::Fault => notify.fault.clone(),
            State::Initialize => None,
        };
        let name = state_name(state);
        let mut scripts: Vec<String> = own.into_iter().collect();
        if let (Some(any), false) = (&notify.any, state == State::Initialize) {
            scripts.push(format!("{any} INSTANCE {} {name} {priority}", self.name()));
        }
        for command in scripts {
            let policy = self.policy.clone();
            let instance = self.name().to_owned();
            tokio::spawn(async move {
                match script::run_with(&command, NOTIFY_TIMEOUT, &policy, None).await {
                    Ok(0) => {}
                    Ok(code) => warn!("({instance}) `{command}` exited with {code}"),
                    Err(reason) => warn!("({instance}) {reason}"),
                }
            });
        }
    }

    /// `notify_stop`, run to its end (lbd is stopping).
    async fn notify_stop(&self, command: &str) {
        if let Err(reason) = script::run_with(command, NOTIFY_TIMEOUT, &self.policy, None).await {
            warn!("({}) {reason}", self.name());
        }
    }
}

pub fn state_name(state: State) -> &'static str {
    match state {
        State::Initialize => "INIT",
        State::Backup => "BACKUP",
        State::Master => "MASTER",
        State::Fault => "FAULT",
    }
}
