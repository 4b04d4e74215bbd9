//! `lvs_sync_daemon` on the IPVS data plane: the kernel's own sync daemon, started and
//! switched as keepalived switches it (`ipvs_syncd_master` and `ipvs_syncd_backup` in
//! keepalived's `check/ipvswrapper.c`): leftovers of an earlier run are stopped first;
//! following a VRRP instance, MASTER runs the master daemon alone and any other state the
//! backup daemon alone; without an instance both run. Stopping lbd stops them.
//!
//! The netlink calls start and stop kernel threads, which can take milliseconds, so they
//! run on a thread of their own: lbd's loop only hands it the role (`set_role`).

use std::{
    sync::{
        Arc, Mutex,
        mpsc::{self, Receiver, Sender},
    },
    thread::JoinHandle,
};

use lb_sync::daemon::Role;
use tracing::{info, warn};

use super::status::{KernelSyncStatus, SyncStatus};
use crate::dataplane::{
    DataplaneError,
    ipvs::{
        IpvsDataplane, IpvsError,
        daemon::{DaemonConfig, DaemonState},
    },
};

enum Command {
    Role(Role),
    Stop,
}

pub struct KernelSync {
    commands: Sender<Command>,
    status: Arc<Mutex<SyncStatus>>,
    thread: Option<JoinHandle<()>>,
}

/// Why the kernel's daemon could not be driven.
#[derive(Debug, thiserror::Error)]
pub enum KernelSyncError {
    #[error("{source}")]
    Ipvs { source: DataplaneError },
    #[error("starting the sync thread: {source}")]
    Thread { source: std::io::Error },
}

impl KernelSync {
    /// Stop the kernel's daemons left by an earlier run, and start both when no VRRP
    /// instance is followed (`follows_instance` false); else wait for the role.
    pub fn start(config: DaemonConfig, follows_instance: bool) -> Result<Self, KernelSyncError> {
        let ipvs = IpvsDataplane::open().map_err(|source| KernelSyncError::Ipvs { source })?;
        let status = Arc::new(Mutex::new(SyncStatus {
            kernel: Some(KernelSyncStatus::default()),
            ..SyncStatus::default()
        }));
        let (commands, inbox) = mpsc::channel();
        let shared = Arc::clone(&status);
        let thread = std::thread::Builder::new()
            .name("sync".into())
            .spawn(move || run(ipvs, config, follows_instance, inbox, shared))
            .map_err(|source| KernelSyncError::Thread { source })?;
        Ok(Self {
            commands,
            status,
            thread: Some(thread),
        })
    }

    /// Follow the VRRP instance: MASTER runs the master daemon, the rest the backup one.
    pub fn set_role(&self, role: Role) {
        let _ = self.commands.send(Command::Role(role));
    }

    /// Where the thread keeps its status, for readers on other threads.
    pub fn status_source(&self) -> Arc<Mutex<SyncStatus>> {
        Arc::clone(&self.status)
    }
}

impl Drop for KernelSync {
    /// Stop the kernel's daemons.
    fn drop(&mut self) {
        let _ = self.commands.send(Command::Stop);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The daemons to run in `role`.
fn wanted(role: Role) -> &'static [DaemonState] {
    match role {
        Role::Master => &[DaemonState::Master],
        Role::Backup | Role::Idle => &[DaemonState::Backup],
        Role::MasterBackup => &[DaemonState::Master, DaemonState::Backup],
    }
}

fn run(
    ipvs: IpvsDataplane,
    config: DaemonConfig,
    follows_instance: bool,
    inbox: Receiver<Command>,
    shared: Arc<Mutex<SyncStatus>>,
) {
    let mut running: Vec<DaemonState> = Vec::new();
    let mut last_error = None;
    // An earlier lbd (or keepalived) may have left them running.
    for state in [DaemonState::Master, DaemonState::Backup] {
        note(ipvs.stop_daemon(state).map(|_| ()), &mut last_error);
    }
    let mut role = if follows_instance {
        Role::Idle
    } else {
        Role::MasterBackup
    };
    if !follows_instance {
        let both = [DaemonState::Master, DaemonState::Backup];
        switch(&ipvs, &config, &both, &mut running, &mut last_error);
    }
    loop {
        let daemons = ipvs.daemons().unwrap_or_else(|error| {
            last_error = Some(error.to_string());
            Vec::new()
        });
        if let Ok(mut status) = shared.lock() {
            status.role = role;
            status.kernel = Some(KernelSyncStatus {
                daemons,
                last_error: last_error.clone(),
            });
        }
        match inbox.recv() {
            Ok(Command::Role(new)) => {
                role = new;
                if follows_instance {
                    switch(&ipvs, &config, wanted(role), &mut running, &mut last_error);
                }
            }
            Ok(Command::Stop) | Err(_) => {
                switch(&ipvs, &config, &[], &mut running, &mut last_error);
                return;
            }
        }
    }
}

/// Stop the daemons `running` that are not in `want`, then start those of `want` not
/// running.
fn switch(
    ipvs: &IpvsDataplane,
    config: &DaemonConfig,
    want: &[DaemonState],
    running: &mut Vec<DaemonState>,
    last_error: &mut Option<String>,
) {
    for state in running.clone() {
        if !want.contains(&state) {
            note(ipvs.stop_daemon(state).map(|_| ()), last_error);
            running.retain(|s| *s != state);
        }
    }
    for &state in want {
        if running.contains(&state) {
            continue;
        }
        let started = ipvs.start_daemon(state, config);
        if started.is_ok() {
            info!(
                "the kernel's {} sync daemon runs on {} (sync id {})",
                state.name(),
                config.interface,
                config.syncid
            );
            running.push(state);
        }
        note(started, last_error);
    }
}

/// Log a failure and keep it for lbctl.
fn note(result: Result<(), IpvsError>, last_error: &mut Option<String>) {
    if let Err(error) = result {
        warn!("lvs_sync_daemon: {error}");
        *last_error = Some(error.to_string());
    }
}
