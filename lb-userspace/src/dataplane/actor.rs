//! The data plane on a thread of its own, so that lbd's control plane (VRRP, the checkers,
//! the control socket) never waits for map work: it sends commands and goes on, and the
//! answers come back over channels.
//!
//! The thread owns the controller (running configuration, health overlay, backend). Between
//! commands it runs the backend's upkeep in steps of bounded time (`Dataplane::upkeep`:
//! the XDP flow table's expiry and counts), resolves the next hops again every
//! `refresh_interval` and whenever an apply left something to retry (a neighbour being
//! probed, a table waiting for arena space), and logs what each apply could not do.
//!
//! Commands are served in the order sent, between upkeep steps: a command waits at most
//! one step (milliseconds), never a whole scan of a million flows. The answer to an
//! `Apply` that left reals whose next hop is being resolved (ARP/NDP) is held until they
//! resolve or `SETTLE` has passed, so that "applied" means their flows can go to them;
//! the thread serves other commands meanwhile.

use std::{
    sync::mpsc::{self, RecvTimeoutError},
    thread::JoinHandle,
    time::{Duration, Instant},
};

use tokio::sync::oneshot;
use tracing::{error, info, warn};

use super::{ApplyReport, Counters, Dataplane, DataplaneError, diff::ServiceId};
use crate::{check::health::Overlay, controller::Controller, model::Config, status::UpkeepTable};

type Reply<T> = oneshot::Sender<Result<T, DataplaneError>>;

/// How long the answer to an apply waits for the next hops being resolved (a probe waits
/// up to a second).
const SETTLE: Duration = Duration::from_millis(1500);

/// What the control plane asks of the data plane.
pub enum Command {
    /// Make `config`, with the checkers' `overlay` for it, the running configuration (a
    /// reload, a runtime change): the previous one stays if the data plane refuses.
    Apply {
        config: Box<Config>,
        overlay: Overlay,
        reply: Reply<ApplyReport>,
    },
    /// A checker's verdict changed: the running configuration with this overlay.
    SetOverlay { overlay: Overlay },
    /// Resolve the reals' next hops again now (a neighbour entry changed).
    Refresh,
    /// `ipvsadm -Z`: zero the traffic counters of one service, or of all.
    Zero {
        service: Option<ServiceId>,
        reply: Reply<()>,
    },
    /// The counters now.
    Counters { reply: Reply<Counters> },
    /// Stop balancing (`Dataplane::stop`), or with `leave_running` leave the data plane
    /// running for the next lbd (`Dataplane::leave`), and end the thread.
    Stop {
        leave_running: bool,
        reply: Reply<()>,
    },
}

/// The control plane's end: every method returns at once.
pub struct DataplaneHandle {
    commands: mpsc::Sender<Command>,
    thread: Option<JoinHandle<()>>,
}

/// How the thread paces its own work, and where it reports on it.
#[derive(Clone, Debug)]
pub struct Pacing {
    /// Next hops are resolved again this often (`--refresh-interval`).
    pub refresh_interval: Duration,
    /// Where the upkeep's figures go after each step (for the metrics).
    pub upkeep: UpkeepTable,
}

/// Something gone: the data-plane thread ended.
fn gone() -> DataplaneError {
    DataplaneError::Thread {
        reason: "the data-plane thread has ended".into(),
    }
}

impl DataplaneHandle {
    /// Start the thread and, on it, the data plane: `start` loads and programs it and
    /// returns its controller, the report of its first apply (already logged), and
    /// whatever else the caller needs (`S`). Resolves once started, or with `start`'s
    /// error (the thread then ends).
    pub async fn spawn<D, S, E, F>(pacing: Pacing, start: F) -> Result<(Self, S), E>
    where
        D: Dataplane + 'static,
        S: Send + 'static,
        E: Send + 'static + From<DataplaneError>,
        F: FnOnce() -> Result<(Controller<D>, ApplyReport, S), E> + Send + 'static,
    {
        let (commands, inbox) = mpsc::channel();
        let (started_tx, started) = oneshot::channel();
        let thread = std::thread::Builder::new()
            .name("lbd-dataplane".into())
            .spawn(move || match start() {
                Ok((controller, report, extra)) => {
                    let _ = started_tx.send(Ok(extra));
                    run(controller, report, inbox, pacing);
                }
                Err(e) => {
                    let _ = started_tx.send(Err(e));
                }
            })
            .map_err(|e| {
                E::from(DataplaneError::Thread {
                    reason: format!("cannot start the data-plane thread: {e}"),
                })
            })?;
        let extra = started.await.map_err(|_| E::from(gone()))??;
        Ok((
            Self {
                commands,
                thread: Some(thread),
            },
            extra,
        ))
    }

    fn send(&self, command: Command) {
        // A send fails only once the thread has ended; what was asked is then moot, and
        // the ask's reply (if any) reports it.
        let _ = self.commands.send(command);
    }

    /// Ask for `config` with `overlay`; the answer says whether it runs now.
    pub fn apply(
        &self,
        config: Config,
        overlay: Overlay,
    ) -> oneshot::Receiver<Result<ApplyReport, DataplaneError>> {
        let (reply, answer) = oneshot::channel();
        self.send(Command::Apply {
            config: Box::new(config),
            overlay,
            reply,
        });
        answer
    }

    pub fn set_overlay(&self, overlay: Overlay) {
        self.send(Command::SetOverlay { overlay });
    }

    pub fn refresh(&self) {
        self.send(Command::Refresh);
    }

    pub fn zero(
        &self,
        service: Option<ServiceId>,
    ) -> oneshot::Receiver<Result<(), DataplaneError>> {
        let (reply, answer) = oneshot::channel();
        self.send(Command::Zero { service, reply });
        answer
    }

    pub fn counters(&self) -> oneshot::Receiver<Result<Counters, DataplaneError>> {
        let (reply, answer) = oneshot::channel();
        self.send(Command::Counters { reply });
        answer
    }

    /// Stop balancing (or, with `leave_running`, leave the data plane running) and wait
    /// for the thread to end.
    pub async fn stop(mut self, leave_running: bool) -> Result<(), DataplaneError> {
        let (reply, answer) = oneshot::channel();
        self.send(Command::Stop {
            leave_running,
            reply,
        });
        let result = answer.await.unwrap_or_else(|_| Err(gone()));
        if let Some(thread) = self.thread.take() {
            // The thread has answered; it ends right after.
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
        result
    }
}

impl Drop for DataplaneHandle {
    fn drop(&mut self) {
        // Without `stop`, the thread ends when it sees the channel closed, leaving the
        // data plane as it is (XDP stays attached only as long as the process lives).
    }
}

/// The thread's loop: commands as they come, upkeep and refreshes when due.
fn run<D: Dataplane>(
    mut controller: Controller<D>,
    report: ApplyReport,
    inbox: mpsc::Receiver<Command>,
    pacing: Pacing,
) {
    let mut state = Worker {
        retry_at: report.retry_at,
        last_report: report,
        upkeep_at: Some(Instant::now()),
        refresh_at: Instant::now() + pacing.refresh_interval,
        pacing,
        held: None,
    };
    loop {
        let now = Instant::now();
        let next = state.next_at();
        let command = match inbox.recv_timeout(next.saturating_duration_since(now)) {
            Ok(command) => Some(command),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => return,
        };
        if let Some(command) = command {
            if state.handle(&mut controller, command) == Flow::Stop {
                return;
            }
            // Serve every queued command before the next step of upkeep.
            continue;
        }
        state.due_work(&mut controller);
    }
}

#[derive(PartialEq, Eq)]
enum Flow {
    Go,
    Stop,
}

struct Worker {
    last_report: ApplyReport,
    /// When the backend wants its next upkeep step (`None`: it needs none).
    upkeep_at: Option<Instant>,
    refresh_at: Instant,
    /// An apply left something to finish then (`ApplyReport::retry_at`).
    retry_at: Option<Instant>,
    pacing: Pacing,
    /// The answer to an apply whose reals are still being resolved, until when it may
    /// wait, and the apply's changes (the refreshes meanwhile have none of their own).
    held: Option<(Reply<ApplyReport>, Instant, Vec<super::diff::Change>)>,
}

impl Worker {
    fn next_at(&self) -> Instant {
        [
            self.upkeep_at,
            self.retry_at,
            Some(self.refresh_at),
            self.held.as_ref().map(|(_, until, _)| *until),
        ]
        .into_iter()
        .flatten()
        .min()
        .expect("refresh_at is always set")
    }

    /// Answer the held apply with the latest report.
    fn release(&mut self) {
        if let Some((reply, _, changes)) = self.held.take() {
            let _ = reply.send(Ok(ApplyReport {
                changes,
                ..self.last_report.clone()
            }));
        }
    }

    fn handle<D: Dataplane>(&mut self, controller: &mut Controller<D>, command: Command) -> Flow {
        match command {
            Command::Apply {
                config,
                overlay,
                reply,
            } => {
                // Answers go in order: one held for an earlier apply goes first.
                self.release();
                match controller.apply_with(*config, overlay) {
                    Ok(report) => {
                        let settling = !report.pending.is_empty();
                        self.took(report.clone());
                        if settling {
                            self.held = Some((reply, Instant::now() + SETTLE, report.changes));
                        } else {
                            let _ = reply.send(Ok(report));
                        }
                    }
                    Err(e) => {
                        let _ = reply.send(Err(e));
                    }
                }
            }
            Command::SetOverlay { overlay } => match controller.set_overlay(overlay) {
                Ok(report) => {
                    for change in &report.changes {
                        info!("health: {change}");
                    }
                    self.took(report);
                }
                Err(e) => error!("applying a health change failed: {e}"),
            },
            Command::Refresh => self.refresh(controller),
            Command::Zero { service, reply } => {
                let _ = reply.send(controller.dataplane_mut().zero_counters(service));
            }
            Command::Counters { reply } => {
                let _ = reply.send(controller.dataplane().counters());
            }
            Command::Stop {
                leave_running,
                reply,
            } => {
                self.release();
                let dataplane = controller.dataplane_mut();
                let result = if leave_running {
                    dataplane.leave()
                } else {
                    dataplane.stop()
                };
                let _ = reply.send(result);
                return Flow::Stop;
            }
        }
        // A change may have given the backend new upkeep (new timeouts, say).
        self.upkeep_at = Some(Instant::now());
        Flow::Go
    }

    fn due_work<D: Dataplane>(&mut self, controller: &mut Controller<D>) {
        let now = Instant::now();
        if self.refresh_at <= now || self.retry_at.is_some_and(|at| at <= now) {
            self.refresh(controller);
        }
        if self
            .held
            .as_ref()
            .is_some_and(|(_, until, _)| *until <= now || self.last_report.pending.is_empty())
        {
            self.release();
        }
        if self.upkeep_at.is_some_and(|at| at <= now) {
            self.upkeep_at = match controller.upkeep(now) {
                Ok(next) => next,
                Err(e) => {
                    error!("data-plane upkeep failed: {e}");
                    // Try again later rather than spin on a persistent failure.
                    Some(now + Duration::from_secs(1))
                }
            };
            *self.pacing.upkeep.lock().unwrap_or_else(|e| e.into_inner()) =
                controller.dataplane().upkeep_stats();
        }
    }

    /// Resolve the next hops again and log what changed.
    fn refresh<D: Dataplane>(&mut self, controller: &mut Controller<D>) {
        self.refresh_at = Instant::now() + self.pacing.refresh_interval;
        self.retry_at = None;
        match controller.refresh() {
            Ok(report) => self.took(report),
            Err(e) => error!("refreshing the data plane failed: {e}"),
        }
    }

    /// Log what `report` says that the previous one did not, and keep it.
    fn took(&mut self, report: ApplyReport) {
        log_report(&report, &self.last_report);
        self.retry_at = report.retry_at;
        self.last_report = report;
    }
}

/// Log what `report` says that `previous` did not.
pub fn log_report(report: &ApplyReport, previous: &ApplyReport) {
    for (addr, reason) in &report.unresolved {
        if !previous
            .unresolved
            .iter()
            .any(|(a, r)| a == addr && r == reason)
        {
            warn!("real {addr} takes no new flows until its next hop resolves: {reason}");
        }
    }
    for (addr, _) in &previous.unresolved {
        if !report.unresolved.iter().any(|(a, _)| a == addr) {
            info!("real {addr} resolved; it takes new flows");
        }
    }
    for (addr, port) in &report.scaled {
        if !previous.scaled.contains(&(*addr, *port)) {
            warn!(
                "virtual_server {addr} {port}: wrr weights scaled down to fit the longest sequence"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{
        path::Path,
        sync::{Arc, Mutex},
    };

    use super::*;
    use crate::{config, dataplane::fake::FakeDataplane};

    fn config(text: &str) -> Config {
        config::parse(text, Path::new("test.conf")).unwrap().config
    }

    const SERVICE: &str = "virtual_server 192.0.2.1 80 {\n lb_algo rr\n lb_kind DR\n protocol TCP\n real_server 10.0.0.1 80 { }\n}\n";

    fn pacing() -> Pacing {
        Pacing {
            refresh_interval: Duration::from_secs(3600),
            upkeep: UpkeepTable::default(),
        }
    }

    /// The data-plane thread over `fake`, started with `SERVICE`; the fake's journal.
    async fn start(fake: FakeDataplane) -> (DataplaneHandle, Arc<Mutex<Vec<&'static str>>>) {
        let journal = fake.journal.clone();
        let (handle, ()) = DataplaneHandle::spawn(pacing(), move || {
            let mut controller = Controller::new(fake);
            let report = controller.apply(config(SERVICE))?;
            Ok::<_, DataplaneError>((controller, report, ()))
        })
        .await
        .expect("started");
        (handle, journal)
    }

    fn entries(journal: &Mutex<Vec<&'static str>>) -> Vec<&'static str> {
        journal.lock().unwrap().clone()
    }

    #[tokio::test]
    async fn commands_are_served_between_steps_of_upkeep() {
        // 500 steps of 2 ms: a second of upkeep.
        let fake = FakeDataplane {
            upkeep_steps: 500,
            upkeep_step: Duration::from_millis(2),
            ..FakeDataplane::default()
        };
        let (handle, journal) = start(fake).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
        let report = handle
            .apply(
                config(&SERVICE.replace("192.0.2.1", "192.0.2.2")),
                Overlay::default(),
            )
            .await
            .expect("answered");
        assert!(report.is_ok());
        handle.zero(None).await.expect("answered").expect("zeroed");
        let seen = entries(&journal);
        // The start's apply, some upkeep, the two commands (each served after at most
        // one step), and upkeep still to come.
        let commands: Vec<&str> = seen.iter().copied().filter(|e| *e != "upkeep").collect();
        assert_eq!(commands, ["apply", "apply", "zero"], "{seen:?}");
        let upkeeps = seen.iter().filter(|e| **e == "upkeep").count();
        assert!((1..500).contains(&upkeeps), "{seen:?}");
        handle.stop(false).await.expect("stopped");
        assert_eq!(entries(&journal).last(), Some(&"stop"));
    }

    #[tokio::test]
    async fn an_apply_that_leaves_work_is_repeated_when_asked() {
        let retry_at = Instant::now() + Duration::from_millis(30);
        let fake = FakeDataplane {
            report: ApplyReport {
                retry_at: Some(retry_at),
                ..ApplyReport::default()
            },
            ..FakeDataplane::default()
        };
        let (handle, journal) = start(fake).await;
        let deadline = Instant::now() + Duration::from_secs(10);
        // Each apply asks again 30 ms later: applies keep coming.
        while entries(&journal).iter().filter(|e| **e == "apply").count() < 3 {
            assert!(Instant::now() < deadline, "{:?}", entries(&journal));
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(Instant::now() >= retry_at);
        handle.stop(false).await.expect("stopped");
    }

    #[tokio::test]
    async fn a_refused_configuration_is_answered_and_the_thread_goes_on() {
        let (handle, journal) = start(FakeDataplane::default()).await;
        // The fake refuses nothing; a start that fails is reported instead.
        let failed = DataplaneHandle::spawn(pacing(), || {
            Err::<(Controller<FakeDataplane>, ApplyReport, ()), _>(DataplaneError::Capacity {
                what: "virtual services",
                max: 0,
            })
        })
        .await;
        assert!(matches!(failed, Err(DataplaneError::Capacity { .. })));
        handle
            .counters()
            .await
            .expect("answered")
            .expect("counters");
        handle.stop(false).await.expect("stopped");
        assert_eq!(entries(&journal), ["apply", "stop"]);
    }
}
