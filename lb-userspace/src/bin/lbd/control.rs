//! lbd's side of lbctl: the control socket's requests turned into what the data plane must
//! do (the main loop sends it and answers when the data plane has done it), the status
//! file lbctl reads while lbd is stopped, and the runtime changes not in the
//! configuration file.

use std::path::{Path, PathBuf};

use lb_userspace::{
    api::{Request, Response, runtime, server::ControlSocket},
    check::{health::Health, supervisor::Checks},
    dataplane::{backend::DataplaneStatus, diff::ServiceId},
    model::Config,
    status::{self, CheckTable, Status, VrrpTable},
    sync::SyncSource,
};
use tracing::{info, warn};

/// What a request needs done.
pub enum Prepared {
    /// Nothing of the data plane: this is the answer.
    Answer(Response),
    /// Zero the counters of a service of the running configuration, or all of them.
    Zero { service: Option<ServiceId> },
    /// Run `config` (the running one with the change made), with the checkers' `health`
    /// for it; `done` says what changed.
    Change {
        config: Box<Config>,
        health: Health,
        done: String,
    },
}

pub struct Control {
    socket: Option<ControlSocket>,
    status_path: PathBuf,
    instance: String,
    config_file: String,
    /// The backend running (none with lbd -P).
    dataplane: Option<DataplaneStatus>,
    /// Runtime changes since the configuration was last read.
    unsaved: Vec<String>,
    vrrp: VrrpTable,
    checks: CheckTable,
    /// Connection sync, when it runs.
    sync: Option<SyncSource>,
}

impl Control {
    /// Listen under `run_dir` (without a socket, lbd goes on: lbctl's read-only views
    /// need only the pinned maps).
    pub fn start(
        run_dir: &Path,
        instance: &str,
        config_file: &Path,
        dataplane: Option<DataplaneStatus>,
        vrrp: VrrpTable,
        checks: CheckTable,
    ) -> Self {
        let path = lb_userspace::api::socket_path(run_dir);
        let socket = match ControlSocket::bind(&path) {
            Ok(socket) => {
                info!("control socket {}", path.display());
                Some(socket)
            }
            Err(e) => {
                warn!(
                    "no control socket ({}: {e}); lbctl can read the maps but not change anything",
                    path.display()
                );
                None
            }
        };
        let control = Self {
            socket,
            status_path: status::status_file(run_dir),
            instance: instance.to_owned(),
            config_file: config_file.display().to_string(),
            dataplane,
            unsaved: Vec::new(),
            vrrp,
            checks,
            sync: None,
        };
        control.write_status();
        control
    }

    /// The next request from lbctl (never, without a socket).
    pub async fn next(&mut self) -> lb_userspace::api::server::Call {
        match &mut self.socket {
            Some(socket) => socket.next().await,
            None => std::future::pending().await,
        }
    }

    pub fn status(&self) -> Status {
        Status {
            pid: std::process::id(),
            instance: self.instance.clone(),
            config_file: self.config_file.clone(),
            dataplane: self.dataplane.clone(),
            unsaved_changes: self.unsaved.clone(),
            vrrp: status::rows(&self.vrrp),
            checks: status::rows(&self.checks),
            sync: self.sync.as_ref().map(SyncSource::view),
            taken_unix_ms: status::now_unix_ms(),
        }
    }

    /// Report connection sync's status from now on.
    pub fn follow_sync(&mut self, sync: SyncSource) {
        self.sync = Some(sync);
        self.write_status();
    }

    /// Write the status file (for lbctl while lbd is stopped).
    pub fn write_status(&self) {
        if let Err(e) = status::write_status(&self.status_path, &self.status()) {
            tracing::debug!("status file {}: {e}", self.status_path.display());
        }
    }

    /// The configuration file was read again: runtime changes are gone.
    pub fn reloaded(&mut self) {
        if !self.unsaved.is_empty() {
            warn!(
                "reload: {} runtime change(s) made with lbctl are dropped (not in {})",
                self.unsaved.len(),
                self.config_file
            );
            self.unsaved.clear();
        }
        self.write_status();
    }

    /// A request without a data plane (lbd -P): only the status.
    pub fn handle_status_only(&self, request: Request) -> Response {
        match request {
            Request::Status => Response::Status {
                status: Box::new(self.status()),
            },
            _ => Response::Refused {
                error: "lbd runs VRRP only (-P): there are no virtual services to change".into(),
            },
        }
    }

    /// What `request` needs done, given the `running` configuration and the `checks`.
    pub fn prepare(&self, request: Request, running: &Config, checks: &Checks) -> Prepared {
        match request {
            Request::Status => Prepared::Answer(Response::Status {
                status: Box::new(self.status()),
            }),
            Request::Zero { service } => {
                let id = service.map(|s| s.id());
                match id {
                    Some(id) if !running.virtual_servers.iter().any(|vs| id.is(vs)) => {
                        Prepared::Answer(Response::Refused {
                            error: format!("no virtual service {id}"),
                        })
                    }
                    _ => Prepared::Zero { service: id },
                }
            }
            Request::Change { change } => match runtime::apply(running, &change) {
                Ok((config, done)) => Prepared::Change {
                    health: checks.health_for(running, &config),
                    config: Box::new(config),
                    done,
                },
                Err(error) => Prepared::Answer(Response::Refused { error }),
            },
        }
    }

    /// The answer to a zeroing the data plane did (or refused).
    pub fn zeroed(service: Option<ServiceId>, result: Result<(), String>) -> Response {
        match result {
            Ok(()) => {
                let what = service.map_or("all counters".to_owned(), |id| {
                    format!("the counters of {id}")
                });
                info!("lbctl: zeroed {what}");
                Response::Done {
                    message: format!("zeroed {what}"),
                }
            }
            Err(error) => Response::Refused { error },
        }
    }

    /// The data plane runs the change `done`: it is runtime-only until the next reload.
    pub fn changed(&mut self, done: &str) -> Response {
        info!("lbctl: {done} (runtime only)");
        self.unsaved.push(done.to_owned());
        self.write_status();
        Response::Done {
            message: format!(
                "{done}\nnot persisted: {} does not have this change; a reload (SIGHUP) or a restart of lbd drops it",
                self.config_file
            ),
        }
    }
}
