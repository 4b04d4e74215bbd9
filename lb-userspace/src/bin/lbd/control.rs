//! lbd's side of lbctl: the control socket's requests carried out on the running
//! controller, the status file lbctl reads while lbd is stopped, and the runtime changes
//! not in the configuration file.

use std::path::{Path, PathBuf};

use lb_userspace::{
    api::{Change, Request, Response, runtime, server::ControlSocket},
    check::supervisor::Checks,
    controller::Controller,
    dataplane::{Dataplane, backend::DataplaneStatus},
    status::{self, CheckTable, Status, VrrpTable},
};
use tracing::{info, warn};

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
            taken_unix_ms: status::now_unix_ms(),
        }
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

    /// Carry out `request` on the running `controller` (and its checkers).
    pub fn handle<D: Dataplane>(
        &mut self,
        request: Request,
        controller: &mut Controller<D>,
        checks: &mut Checks,
    ) -> Response {
        match request {
            Request::Status => Response::Status {
                status: Box::new(self.status()),
            },
            Request::Zero { service } => {
                let id = service.map(|s| s.id());
                if let Some(id) = id
                    && !controller
                        .running()
                        .virtual_servers
                        .iter()
                        .any(|vs| id.is(vs))
                {
                    return Response::Refused {
                        error: format!("no virtual service {id}"),
                    };
                }
                match controller.dataplane_mut().zero_counters(id) {
                    Ok(()) => {
                        let what = id.map_or("all counters".to_owned(), |id| {
                            format!("the counters of {id}")
                        });
                        info!("lbctl: zeroed {what}");
                        Response::Done {
                            message: format!("zeroed {what}"),
                        }
                    }
                    Err(e) => Response::Refused {
                        error: e.to_string(),
                    },
                }
            }
            Request::Change { change } => self.change(&change, controller, checks),
        }
    }

    fn change<D: Dataplane>(
        &mut self,
        change: &Change,
        controller: &mut Controller<D>,
        checks: &mut Checks,
    ) -> Response {
        let (config, done) = match runtime::apply(controller.running(), change) {
            Ok(changed) => changed,
            Err(error) => return Response::Refused { error },
        };
        let health = checks.health_for(controller.running(), &config);
        match controller.apply_with(config, health.overlay()) {
            Ok(report) => {
                checks.adopt(controller.running(), health);
                for change in &report.changes {
                    info!("lbctl: {change}");
                }
                info!("lbctl: {done} (runtime only)");
                self.unsaved.push(done.clone());
                self.write_status();
                Response::Done {
                    message: format!(
                        "{done}\nnot persisted: {} does not have this change; a reload (SIGHUP) or a restart of lbd drops it",
                        self.config_file
                    ),
                }
            }
            Err(e) => Response::Refused {
                error: format!("the data plane refused the change, nothing changed: {e}"),
            },
        }
    }
}
