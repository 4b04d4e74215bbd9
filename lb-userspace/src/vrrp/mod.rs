//! VRRP in lbd: one task per `vrrp_instance` (`instance`) around the sans-IO machine of
//! `lb-vrrp`, with its socket (`socket`), addresses (`addresses`, rtnetlink) and
//! announcements (`announce`). `Vrrp` starts them all and stops them, handing over with
//! priority 0.

pub mod addresses;
pub mod announce;
pub mod instance;
pub mod link;
pub mod socket;
pub mod track;

use std::time::Duration;

use tokio::{
    sync::{mpsc, watch},
    task::JoinHandle,
};
use tracing::{error, warn};

use crate::{check::script::Policy, model::Config};
pub use instance::{StateChange, state_name};

/// How long stopping waits for the instances' last adverts and scripts.
const STOP_TIMEOUT: Duration = Duration::from_secs(35);

pub struct Vrrp {
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    /// State changes of every instance.
    pub changes: mpsc::UnboundedReceiver<StateChange>,
}

impl Vrrp {
    /// Start every instance of `config` (inside a tokio runtime).
    pub fn start(config: &Config) -> Self {
        let (stop, stopped) = watch::channel(false);
        let (sender, changes) = mpsc::unbounded_channel();
        let policy = Policy::of(config);
        let scripts = config.vrrp_scripts.clone();
        let tasks = config
            .vrrp_instances
            .iter()
            .cloned()
            .map(|instance| {
                let (policy, stopped, sender) = (policy.clone(), stopped.clone(), sender.clone());
                let scripts = scripts.clone();
                tokio::spawn(async move {
                    if let Err(e) = instance::run(instance, scripts, policy, stopped, sender).await
                    {
                        error!("{e}");
                    }
                })
            })
            .collect();
        Self {
            stop,
            tasks,
            changes,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.tasks.is_empty()
    }

    /// The next state change (never, without instances).
    pub async fn next_change(&mut self) -> StateChange {
        match self.changes.recv().await {
            Some(change) => change,
            None => std::future::pending().await,
        }
    }

    /// Stop every instance: masters send priority 0 and give up their addresses.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let all = futures_all(self.tasks);
        if tokio::time::timeout(STOP_TIMEOUT, all).await.is_err() {
            warn!("VRRP instances did not stop within {STOP_TIMEOUT:?}");
        }
    }
}

async fn futures_all(tasks: Vec<JoinHandle<()>>) {
    for task in tasks {
        let _ = task.await;
    }
}
