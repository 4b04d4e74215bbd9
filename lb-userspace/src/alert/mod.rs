//! SMTP alerts, as keepalived sends them: a mail on each VRRP instance's and sync group's
//! transition, and on each checker's up and down, to global_defs' `notification_email`
//! through `smtp_server`. `vrrp` and `check` decide which mails an event makes (sans IO);
//! `smtp` speaks to the server.
//!
//! Nothing waits for mail: `Mailer::send` puts the mail on a bounded queue, and one task
//! delivers the queue in order, each step bounded by `smtp_connect_timeout`. A full queue
//! (a server that is down, with many events) drops the new mail with a warning. VRRP,
//! the checks and the control socket never wait on the SMTP server.

pub mod check;
pub mod smtp;
pub mod vrrp;

use std::{
    sync::{Arc, RwLock},
    time::{Duration, Instant},
};

use tokio::sync::mpsc;
use tracing::{debug, warn};

use crate::model::{Config, alert::SmtpServer};

/// Mails waiting for the server at most.
pub const QUEUE: usize = 64;
/// How long a stopping lbd lets the queue drain.
const DRAIN: Duration = Duration::from_secs(3);

/// A mail's own lines: keepalived's subject (without the `[router_id]` prefix) and body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mail {
    pub subject: String,
    pub body: String,
}

/// Where mail goes and who sends it, from the configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Envelope {
    pub server: SmtpServer,
    pub from: String,
    pub to: Vec<String>,
    pub helo: String,
    /// For the connection and for each of the server's replies.
    pub timeout: Duration,
    /// The subject's `[router_id]` prefix.
    pub router_id: String,
}

impl Envelope {
    /// The envelope of `config`, with keepalived's defaults (sender `USER@HOST`, HELO
    /// and router_id the host's name); `None` when mail cannot go anywhere.
    pub fn of(config: &Config) -> Option<Self> {
        let alerts = &config.alerts;
        if !alerts.configured() {
            return None;
        }
        let host = host_name();
        Some(Self {
            server: alerts.smtp_server.clone()?,
            from: alerts
                .notification_email_from
                .clone()
                .unwrap_or_else(|| format!("{}@{host}", user_name())),
            to: alerts.notification_email.clone(),
            helo: alerts
                .smtp_helo_name
                .clone()
                .unwrap_or_else(|| host.clone()),
            timeout: alerts.smtp_connect_timeout,
            router_id: config.router_id.clone().unwrap_or(host),
        })
    }
}

/// What the delivery task is given.
enum Job {
    Deliver(Arc<Envelope>, Mail),
    /// lbd stops: end after what is queued before this.
    Finish,
}

/// The sending end: cheap to clone; every clone follows `configure`.
#[derive(Clone)]
pub struct Mailer {
    queue: mpsc::Sender<Job>,
    envelope: Arc<RwLock<Option<Arc<Envelope>>>>,
    /// The delivery task, kept to let it drain when lbd stops.
    task: Arc<std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>>,
}

impl Mailer {
    /// Start the delivery task (inside a tokio runtime) for `config`.
    pub fn start(config: &Config) -> Self {
        let (queue, mut jobs) = mpsc::channel::<Job>(QUEUE);
        let task = tokio::spawn(async move {
            while let Some(Job::Deliver(envelope, mail)) = jobs.recv().await {
                match smtp::deliver(&envelope, &mail, &smtp::date_now()).await {
                    Ok(()) => debug!("mail `{}` delivered", mail.subject),
                    Err(e) => warn!(
                        "SMTP alert `{}` not delivered through {}:{}: {e}",
                        mail.subject, envelope.server.host, envelope.server.port
                    ),
                }
            }
        });
        let mailer = Self {
            queue,
            envelope: Arc::new(RwLock::new(None)),
            task: Arc::new(std::sync::Mutex::new(Some(task))),
        };
        mailer.configure(config);
        mailer
    }

    /// Follow a (re)loaded configuration.
    pub fn configure(&self, config: &Config) {
        let envelope = Envelope::of(config).map(Arc::new);
        if let Ok(mut slot) = self.envelope.write() {
            *slot = envelope;
        }
    }

    /// Queue `mail` (never waits): dropped with a warning when the queue is full, and
    /// silently when no server or recipient is configured.
    pub fn send(&self, mail: Mail) {
        let Some(envelope) = self.envelope.read().ok().and_then(|slot| slot.clone()) else {
            return;
        };
        let subject = format!("[{}] {}", envelope.router_id, mail.subject);
        let mail = Mail {
            subject,
            body: mail.body,
        };
        if let Err(e) = self.queue.try_send(Job::Deliver(envelope, mail)) {
            let (mpsc::error::TrySendError::Full(job) | mpsc::error::TrySendError::Closed(job)) = e;
            if let Job::Deliver(_, mail) = job {
                warn!(
                    "SMTP alert `{}` dropped: {QUEUE} mails are waiting for the server",
                    mail.subject
                );
            }
        }
    }

    /// lbd stops: deliver what is queued, for at most a few seconds.
    pub async fn drain(self) {
        let task = self.task.lock().ok().and_then(|mut task| task.take());
        let Some(mut task) = task else {
            return;
        };
        let started = Instant::now();
        let finished = async {
            let _ = self.queue.send(Job::Finish).await;
            let _ = (&mut task).await;
        };
        if tokio::time::timeout(DRAIN, finished).await.is_err() {
            task.abort();
            warn!(
                "SMTP alerts still queued after {:?} were not sent",
                started.elapsed()
            );
        }
    }
}

/// This host's name (uname's node name), as keepalived's default router_id and HELO.
pub fn host_name() -> String {
    // SAFETY: uname fills the zeroed struct; node name is NUL-terminated.
    let mut name: libc::utsname = unsafe { std::mem::zeroed() };
    if unsafe { libc::uname(&mut name) } != 0 {
        return "[unknown]".into();
    }
    let bytes: Vec<u8> = name
        .nodename
        .iter()
        .take_while(|c| **c != 0)
        .map(|c| *c as u8)
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// The user lbd runs as, for keepalived's default sender `USER@HOST`.
fn user_name() -> String {
    // SAFETY: getpwuid returns a pointer into static storage or null; read at once.
    let entry = unsafe { libc::getpwuid(libc::getuid()) };
    if entry.is_null() {
        return "root".into();
    }
    // SAFETY: pw_name of a valid entry is a NUL-terminated string.
    unsafe { std::ffi::CStr::from_ptr((*entry).pw_name) }
        .to_string_lossy()
        .into_owned()
}

/// lbd's alerts: the mailer and what VRRP's changes mail (the checkers hold a clone of
/// the mailer and their own rules).
pub struct Alerts {
    mailer: Mailer,
    vrrp: vrrp::VrrpAlerts,
}

impl Alerts {
    /// Start mailing for `config` (inside a tokio runtime).
    pub fn start(config: &Config) -> Self {
        let mut alerts = Self {
            mailer: Mailer::start(config),
            vrrp: vrrp::VrrpAlerts::default(),
        };
        alerts.vrrp.reconfigure(config);
        alerts
    }

    /// The mailer, for the checkers.
    pub fn mailer(&self) -> Mailer {
        self.mailer.clone()
    }

    /// Follow a (re)loaded configuration.
    pub fn reconfigure(&mut self, config: &Config) {
        self.mailer.configure(config);
        self.vrrp.reconfigure(config);
    }

    /// A VRRP instance changed: queue the mails that makes.
    pub fn vrrp_change(&mut self, change: &crate::vrrp::StateChange) {
        if change.own_fault.is_some() {
            return;
        }
        for mail in self.vrrp.transition(&change.instance, change.state) {
            self.mailer.send(mail);
        }
    }

    /// lbd stops (its VRRP instances stopped): the STOP mails, and the queue drained for
    /// at most a few seconds.
    pub async fn stop(self) {
        for mail in self.vrrp.stopping() {
            self.mailer.send(mail);
        }
        self.mailer.drain().await;
    }
}
