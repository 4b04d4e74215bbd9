//! VRRP in lbd: one task per `vrrp_instance` (`instance`) around the sans-IO machine of
//! `lb-vrrp`, with its socket (`socket`), addresses (`addresses`, rtnetlink) and
//! announcements (`announce`) and tracking (`track`). `Vrrp` starts them, updates them on
//! reload (only changed instances restart), and stops them, handing over with priority 0.
//!
//! The instances and the sync groups' coordination run on a thread and runtime of their
//! own (`VrrpThread`), where nothing else lbd does (data-plane work, checkers, the control
//! socket, a slow metrics scrape) can delay an advert. The thread runs at real-time
//! priority (`SCHED_RR`, keepalived's `vrrp_rt_priority`, 1 by default), so that busy
//! CPUs do not delay it either; scripts it starts run at normal priority. lbd's main loop
//! only hears of the state changes, after the sync groups have followed them.
//!
//! Every instance reads the connection sync's `hold::PreemptionHold` before it handles an
//! advert: a director that is not yet resynced accepts a lower-priority master.

mod absent;
pub mod addresses;
pub mod announce;
pub mod hold;
pub mod instance;
pub mod link;
mod published;
pub mod socket;
pub mod timer;
pub mod track;
pub mod vmac;

use std::{
    collections::{BTreeMap, BTreeSet},
    time::Duration,
};

use tokio::{
    runtime::Handle,
    sync::{mpsc, oneshot, watch},
    task::JoinHandle,
};
use tracing::{error, warn};

use crate::{
    check::script::Policy,
    model::{
        Config,
        vrrp::{VrrpInstance, VrrpScript},
    },
    status::VrrpTable,
};
pub use hold::PreemptionHold;
pub use instance::{StateChange, state_name};

/// How long stopping waits for the instances' last adverts and scripts.
const STOP_TIMEOUT: Duration = Duration::from_secs(35);

/// What an instance runs with: a change of any of it restarts the instance.
#[derive(Clone, Debug, PartialEq)]
struct Spec {
    instance: VrrpInstance,
    /// The vrrp_scripts it tracks.
    scripts: Vec<VrrpScript>,
    policy: Policy,
}

struct Running {
    spec: Spec,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

/// What the sync groups' coordination needs, owned by the coordinator task on the VRRP
/// thread; `Vrrp` sends it the changes (a lock shared with the main thread could make the
/// real-time VRRP thread wait for a thread of normal priority).
#[derive(Default)]
struct Members {
    /// The members of each `vrrp_sync_group`.
    groups: Vec<Vec<String>>,
    /// Instances whose own tracking fails (their groups are in FAULT).
    failing: BTreeSet<String>,
    /// Each running instance's channel for the states of its group to follow.
    sync: BTreeMap<String, mpsc::UnboundedSender<lb_vrrp::machine::State>>,
}

/// A change of the sync groups' membership, for the coordinator.
enum MemberUpdate {
    Groups(Vec<Vec<String>>),
    Join(String, mpsc::UnboundedSender<lb_vrrp::machine::State>),
    Leave(String),
}

pub struct Vrrp {
    thread: VrrpThread,
    running: BTreeMap<String, Running>,
    members: mpsc::UnboundedSender<MemberUpdate>,
    /// Where the instances send their state changes (to the coordinator).
    sender: mpsc::UnboundedSender<StateChange>,
    /// Each instance's state and counters, kept by the instances.
    table: VrrpTable,
    /// State changes of every instance, once the sync groups followed them.
    changes: mpsc::UnboundedReceiver<StateChange>,
    /// Read by every instance before it handles an advert.
    hold: PreemptionHold,
}

/// A thread running a current-thread tokio runtime until dropped.
struct VrrpThread {
    handle: Handle,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// The real-time priority VRRP runs at when the configuration sets none.
const DEFAULT_RT_PRIORITY: u8 = 1;

/// Run the calling thread at real-time priority `priority` (`SCHED_RR`); threads and
/// processes it starts run at normal priority (`SCHED_RESET_ON_FORK`).
fn set_realtime(priority: u8) -> std::io::Result<()> {
    let param = libc::sched_param {
        sched_priority: i32::from(priority),
    };
    // SAFETY: plain syscall on the calling thread (pid 0) with a valid sched_param.
    let rc =
        unsafe { libc::sched_setscheduler(0, libc::SCHED_RR | libc::SCHED_RESET_ON_FORK, &param) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

impl VrrpThread {
    fn start(rt_priority: u8) -> Self {
        let (handle_tx, handle_rx) = std::sync::mpsc::channel();
        let (stop, stopped) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("lbd-vrrp".into())
            .spawn(move || {
                if let Err(e) = set_realtime(rt_priority) {
                    warn!(
                        "VRRP runs without real-time priority {rt_priority} ({e}): its adverts may be late while the CPUs are busy"
                    );
                }
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime,
                    Err(e) => {
                        let _ = handle_tx.send(Err(e));
                        return;
                    }
                };
                let _ = handle_tx.send(Ok(runtime.handle().clone()));
                runtime.block_on(async {
                    let _ = stopped.await;
                });
            });
        // Without a thread of its own (it cannot start: out of threads or memory), VRRP
        // runs on the caller's runtime, as it did before it had one.
        let started = thread.ok().and_then(|thread| match handle_rx.recv() {
            Ok(Ok(handle)) => Some((handle, thread)),
            Ok(Err(e)) => {
                error!("VRRP: no runtime of its own ({e}); sharing lbd's");
                None
            }
            Err(_) => None,
        });
        match started {
            Some((handle, thread)) => Self {
                handle,
                stop: Some(stop),
                thread: Some(thread),
            },
            None => Self {
                handle: Handle::current(),
                stop: None,
                thread: None,
            },
        }
    }
}

impl Drop for VrrpThread {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The members of each sync group.
fn groups(config: &Config) -> Vec<Vec<String>> {
    config
        .vrrp_sync_groups
        .iter()
        .map(|g| g.group.clone())
        .collect()
}

fn specs(config: &Config) -> BTreeMap<String, Spec> {
    let policy = Policy::of(config);
    config
        .vrrp_instances
        .iter()
        .map(|instance| {
            let scripts = config
                .vrrp_scripts
                .iter()
                .filter(|s| instance.track_script.iter().any(|t| t.name == s.name))
                .cloned()
                .collect();
            let spec = Spec {
                instance: instance.clone(),
                scripts,
                policy: policy.clone(),
            };
            (instance.name.clone(), spec)
        })
        .collect()
}

impl Vrrp {
    /// Start every instance of `config` on the VRRP thread (called inside a tokio
    /// runtime), preempting only while `hold` is not held.
    pub fn start(config: &Config, hold: PreemptionHold) -> Self {
        let thread = VrrpThread::start(config.vrrp_rt_priority.unwrap_or(DEFAULT_RT_PRIORITY));
        let (sender, from_instances) = mpsc::unbounded_channel();
        let (to_lbd, changes) = mpsc::unbounded_channel();
        let (members, updates) = mpsc::unbounded_channel();
        let _ = members.send(MemberUpdate::Groups(groups(config)));
        thread
            .handle
            .spawn(coordinate(from_instances, updates, to_lbd));
        let mut vrrp = Self {
            thread,
            running: BTreeMap::new(),
            members,
            sender,
            table: VrrpTable::default(),
            changes,
            hold,
        };
        for (name, spec) in specs(config) {
            vrrp.launch(name, spec);
        }
        vrrp
    }

    fn launch(&mut self, name: String, spec: Spec) {
        let (stop, stopped) = watch::channel(false);
        let (sync, synced) = mpsc::unbounded_channel();
        let sender = self.sender.clone();
        let table = self.table.clone();
        let hold = self.hold.clone();
        let Spec {
            instance,
            scripts,
            policy,
        } = spec.clone();
        let task = self.thread.handle.spawn(async move {
            let name = instance.name.clone();
            let context = instance::Context {
                stop: stopped,
                sync: synced,
                changes: sender,
                table: table.clone(),
                hold,
            };
            if let Err(e) = instance::run(instance, scripts, policy, context).await {
                error!("{e}");
                if let Some(status) = table
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .get_mut(&name)
                {
                    status.state = "FAULT".to_owned();
                }
            }
        });
        let _ = self.members.send(MemberUpdate::Join(name.clone(), sync));
        self.running.insert(name, Running { spec, stop, task });
    }

    /// Run `config`'s instances: the unchanged ones go on undisturbed (their state and
    /// addresses stay), removed ones stop (handing over), changed and new ones (re)start.
    /// The names of those stopped or started.
    pub async fn update(&mut self, config: &Config) -> Vec<String> {
        let _ = self.members.send(MemberUpdate::Groups(groups(config)));
        let wanted = specs(config);
        let stale: Vec<String> = self
            .running
            .iter()
            .filter(|(name, running)| wanted.get(*name) != Some(&running.spec))
            .map(|(name, _)| name.clone())
            .collect();
        let mut touched = stale.clone();
        let stopping: Vec<Running> = stale
            .iter()
            .filter_map(|name| self.running.remove(name))
            .collect();
        for name in &stale {
            let _ = self.members.send(MemberUpdate::Leave(name.clone()));
        }
        stop_all(stopping).await;
        self.table
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|name, _| wanted.contains_key(name));
        for (name, spec) in wanted {
            if !self.running.contains_key(&name) {
                if !touched.contains(&name) {
                    touched.push(name.clone());
                }
                self.launch(name, spec);
            }
        }
        touched.sort();
        touched
    }

    pub fn is_empty(&self) -> bool {
        self.running.is_empty()
    }

    /// Each instance's state and counters (shared: it stays current).
    pub fn table(&self) -> VrrpTable {
        self.table.clone()
    }

    /// The next state change (never, without instances), after the sync groups followed
    /// it.
    pub async fn next_change(&mut self) -> StateChange {
        match self.changes.recv().await {
            Some(change) => change,
            None => std::future::pending().await,
        }
    }

    /// Stop every instance: masters send priority 0 and give up their addresses.
    pub async fn stop(mut self) {
        let all = std::mem::take(&mut self.running).into_values().collect();
        stop_all(all).await;
    }
}

/// The sync groups, on the VRRP thread: each instance's change is passed to the members
/// of its groups, then to lbd. A member's own MASTER or BACKUP is passed to the others; a
/// group is in FAULT while any member's own tracking fails, and leaves it when none does.
async fn coordinate(
    mut from_instances: mpsc::UnboundedReceiver<StateChange>,
    mut updates: mpsc::UnboundedReceiver<MemberUpdate>,
    to_lbd: mpsc::UnboundedSender<StateChange>,
) {
    let mut members = Members::default();
    loop {
        tokio::select! {
            // Membership first: an instance joins before its first change is followed.
            biased;
            Some(update) = updates.recv() => match update {
                MemberUpdate::Groups(groups) => members.groups = groups,
                MemberUpdate::Join(name, sync) => {
                    members.sync.insert(name, sync);
                }
                MemberUpdate::Leave(name) => {
                    members.sync.remove(&name);
                }
            },
            change = from_instances.recv() => {
                let Some(change) = change else { return };
                members.follow(&change);
                if to_lbd.send(change).is_err() {
                    return;
                }
            }
        }
    }
}

impl Members {
    fn follow(&mut self, change: &StateChange) {
        use lb_vrrp::machine::State;
        let groups: Vec<Vec<String>> = self
            .groups
            .iter()
            .filter(|g| g.contains(&change.instance))
            .cloned()
            .collect();
        match change.own_fault {
            Some(failing) => {
                let was: Vec<bool> = groups.iter().map(|g| self.group_failing(g)).collect();
                if failing {
                    self.failing.insert(change.instance.clone());
                } else {
                    self.failing.remove(&change.instance);
                }
                for (group, was) in groups.iter().zip(was) {
                    let now = self.group_failing(group);
                    if now == was {
                        continue;
                    }
                    // The members not failing themselves follow the group.
                    let state = if now { State::Fault } else { State::Backup };
                    for member in group.iter().filter(|m| !self.failing.contains(*m)) {
                        self.send(member, state);
                    }
                }
            }
            None if !change.synced && matches!(change.state, State::Master | State::Backup) => {
                for group in &groups {
                    for member in group.iter().filter(|m| **m != change.instance) {
                        self.send(member, change.state);
                    }
                }
            }
            None => {}
        }
    }

    fn group_failing(&self, group: &[String]) -> bool {
        group.iter().any(|m| self.failing.contains(m))
    }

    fn send(&self, member: &str, state: lb_vrrp::machine::State) {
        if let Some(sync) = self.sync.get(member) {
            let _ = sync.send(state);
        }
    }
}

async fn stop_all(running: Vec<Running>) {
    let mut tasks = Vec::new();
    for instance in running {
        let _ = instance.stop.send(true);
        tasks.push(instance.task);
    }
    if tokio::time::timeout(STOP_TIMEOUT, futures_all(tasks))
        .await
        .is_err()
    {
        warn!("VRRP instances did not stop within {STOP_TIMEOUT:?}");
    }
}

async fn futures_all(tasks: Vec<JoinHandle<()>>) {
    for task in tasks {
        let _ = task.await;
    }
}
