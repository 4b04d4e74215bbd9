//! VRRP in lbd: one task per `vrrp_instance` (`instance`) around the sans-IO machine of
//! `lb-vrrp`, with its socket (`socket`), addresses (`addresses`, rtnetlink) and
//! announcements (`announce`) and tracking (`track`). `Vrrp` starts them, updates them on
//! reload (only changed instances restart), and stops them, handing over with priority 0.

pub mod addresses;
pub mod announce;
pub mod instance;
pub mod link;
pub mod socket;
pub mod track;
pub mod vmac;

use std::{
    collections::{BTreeMap, BTreeSet},
    time::Duration,
};

use tokio::{
    sync::{mpsc, watch},
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
    /// States of the instance's sync group to follow.
    sync: mpsc::UnboundedSender<lb_vrrp::machine::State>,
    task: JoinHandle<()>,
}

pub struct Vrrp {
    running: BTreeMap<String, Running>,
    /// The members of each `vrrp_sync_group`.
    groups: Vec<Vec<String>>,
    /// Instances whose own tracking fails (their groups are in FAULT).
    failing: BTreeSet<String>,
    sender: mpsc::UnboundedSender<StateChange>,
    /// Each instance's state and counters, kept by the instances.
    table: VrrpTable,
    /// State changes of every instance.
    pub changes: mpsc::UnboundedReceiver<StateChange>,
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
    /// Start every instance of `config` (inside a tokio runtime).
    pub fn start(config: &Config) -> Self {
        let (sender, changes) = mpsc::unbounded_channel();
        let mut vrrp = Self {
            running: BTreeMap::new(),
            groups: groups(config),
            failing: BTreeSet::new(),
            sender,
            table: VrrpTable::default(),
            changes,
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
        let Spec {
            instance,
            scripts,
            policy,
        } = spec.clone();
        let task = tokio::spawn(async move {
            let name = instance.name.clone();
            let context = instance::Context {
                stop: stopped,
                sync: synced,
                changes: sender,
                table: table.clone(),
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
        self.running.insert(
            name,
            Running {
                spec,
                stop,
                sync,
                task,
            },
        );
    }

    /// Run `config`'s instances: the unchanged ones go on undisturbed (their state and
    /// addresses stay), removed ones stop (handing over), changed and new ones (re)start.
    /// The names of those stopped or started.
    pub async fn update(&mut self, config: &Config) -> Vec<String> {
        self.groups = groups(config);
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

    /// The next state change (never, without instances). Sync groups move together:
    /// a member's own MASTER or BACKUP is passed to the others; a group is in FAULT
    /// while any member's own tracking fails, and leaves it when none does.
    pub async fn next_change(&mut self) -> StateChange {
        use lb_vrrp::machine::State;
        let change = match self.changes.recv().await {
            Some(change) => change,
            None => std::future::pending().await,
        };
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
        change
    }

    fn group_failing(&self, group: &[String]) -> bool {
        group.iter().any(|m| self.failing.contains(m))
    }

    fn send(&self, member: &str, state: lb_vrrp::machine::State) {
        if let Some(running) = self.running.get(member) {
            let _ = running.sync.send(state);
        }
    }

    /// Stop every instance: masters send priority 0 and give up their addresses.
    pub async fn stop(mut self) {
        let all = std::mem::take(&mut self.running).into_values().collect();
        stop_all(all).await;
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
