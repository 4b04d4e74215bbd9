//! The checker tasks: one tokio task per checker of each real, probing on its own schedule
//! (`schedule`) and reporting verdict changes on a channel. The first check waits a random
//! part of `warmup` (without one, of a second) so that checks do not all start together;
//! at most `MAX_CONCURRENT_PROBES` probes run at once. A reload keeps the task of every
//! checker whose configuration did not change.

use std::{
    collections::{BTreeMap, BTreeSet},
    hash::{BuildHasher, Hasher},
    sync::{
        Arc, RwLock,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use tokio::{
    sync::{Semaphore, mpsc},
    task::JoinHandle,
};

use super::{
    health::{Health, RealKey},
    probe::{RealContext, probe_with},
    schedule::{CheckerState, Outcome, Timing, Verdict},
    script::Policy,
};
use crate::dataplane::diff::ServiceId;
use crate::model::{
    Config,
    check::{CheckKind, Checker},
};
use crate::status::{CheckStatus, CheckTable, now_unix_ms};

/// Probes in flight at once, whatever the number of checkers.
pub const MAX_CONCURRENT_PROBES: usize = 512;

/// Probes run by this process so far (for metrics and the bench).
pub static PROBES: AtomicU64 = AtomicU64::new(0);

/// A checker's verdict changed.
#[derive(Clone, Debug)]
pub struct Report {
    pub real: RealKey,
    /// Which of the real's checkers.
    pub index: usize,
    pub verdict: Verdict,
}

/// One checker of one real: what its task runs.
#[derive(Clone, Debug, PartialEq)]
struct Job {
    checker: Checker,
    context: RealContext,
}

/// What every task shares.
#[derive(Clone)]
struct Shared {
    reports: mpsc::UnboundedSender<Report>,
    permits: Arc<Semaphore>,
    /// Who runs MISC_CHECK commands; read at each run, so a reload changes it at once.
    policy: Arc<RwLock<Policy>>,
    /// Services whose checks are paused (`ha_suspend` while this director is not the
    /// VRRP master of their address).
    suspended: Arc<RwLock<BTreeSet<ServiceId>>>,
    /// Each checker's results, for lbctl and metrics.
    table: CheckTable,
}

pub struct Runner {
    tasks: BTreeMap<(RealKey, usize), (Job, JoinHandle<()>)>,
    shared: Shared,
}

impl Runner {
    /// A runner with no checkers; verdict changes go to `reports`.
    pub fn new(reports: mpsc::UnboundedSender<Report>) -> Self {
        Self {
            tasks: BTreeMap::new(),
            shared: Shared {
                reports,
                permits: Arc::new(Semaphore::new(MAX_CONCURRENT_PROBES)),
                policy: Arc::default(),
                suspended: Arc::default(),
                table: CheckTable::default(),
            },
        }
    }

    /// The table of each checker's results (shared: it stays current).
    pub fn table(&self) -> CheckTable {
        self.shared.table.clone()
    }

    /// Run the checkers of `config`, starting each new one in the state `health` gives it.
    /// Must run inside a tokio runtime.
    pub fn update(&mut self, config: &Config, health: &Health) {
        if let Ok(mut policy) = self.shared.policy.write() {
            *policy = Policy::of(config);
        }
        let mut wanted = BTreeMap::new();
        for vs in &config.virtual_servers {
            for real in &vs.reals {
                let key = RealKey {
                    service: ServiceId::of(vs),
                    addr: real.addr,
                    port: real.port,
                };
                for (index, checker) in real.checkers.iter().enumerate() {
                    let track_file = match &checker.kind {
                        CheckKind::File { track_file, .. } => config
                            .track_files
                            .iter()
                            .find(|t| t.name == *track_file)
                            .cloned(),
                        _ => None,
                    };
                    let context = RealContext {
                        weight: real.weight,
                        track_file,
                    };
                    let job = Job {
                        checker: checker.clone(),
                        context,
                    };
                    wanted.insert((key, index), job);
                }
            }
        }
        let mut table = self.shared.table.lock().unwrap_or_else(|e| e.into_inner());
        self.tasks.retain(|id, (job, task)| {
            let keep = wanted.get(id) == Some(job);
            if !keep {
                task.abort();
                table.remove(&table_key(id));
            }
            keep
        });
        for (id, job) in wanted {
            if self.tasks.contains_key(&id) {
                continue;
            }
            let up = health.checker_up(&id.0, id.1).unwrap_or(true);
            table.insert(
                table_key(&id),
                CheckStatus {
                    service: id.0.service.to_string(),
                    real: id.0.addr,
                    port: id.0.port,
                    index: id.1,
                    kind: kind_name(&job.checker.kind).to_owned(),
                    up,
                    since_unix_ms: now_unix_ms(),
                    ..CheckStatus::default()
                },
            );
            let task = tokio::spawn(run_checker(id, job.clone(), up, self.shared.clone()));
            self.tasks.insert(id, (job, task));
        }
    }

    /// Pause the checks of exactly `services` (the others run); a paused checker keeps
    /// its state and resumes on its schedule.
    pub fn suspend(&self, services: BTreeSet<ServiceId>) {
        if let Ok(mut suspended) = self.shared.suspended.write() {
            *suspended = services;
        }
    }

    /// How many checkers run.
    pub fn len(&self) -> usize {
        self.tasks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tasks.is_empty()
    }
}

/// A checker's key in the `CheckTable`.
fn table_key((real, index): &(RealKey, usize)) -> (String, std::net::IpAddr, u16, usize) {
    (real.service.to_string(), real.addr, real.port, *index)
}

/// keepalived's keyword for a checker.
pub fn kind_name(kind: &CheckKind) -> &'static str {
    match kind {
        CheckKind::Tcp => "TCP_CHECK",
        CheckKind::Http(http) if http.tls => "SSL_GET",
        CheckKind::Http(_) => "HTTP_GET",
        CheckKind::Misc(_) => "MISC_CHECK",
        CheckKind::Smtp { .. } => "SMTP_CHECK",
        CheckKind::Dns { .. } => "DNS_CHECK",
        CheckKind::Udp(_) => "UDP_CHECK",
        CheckKind::Ping => "PING_CHECK",
        CheckKind::File { .. } => "FILE_CHECK",
    }
}

impl Drop for Runner {
    fn drop(&mut self) {
        for (_, task) in self.tasks.values() {
            task.abort();
        }
    }
}

/// A random duration in `[0, limit)`.
fn jitter(limit: Duration) -> Duration {
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(limit.as_nanos());
    let fraction = (hasher.finish() >> 11) as f64 / (1u64 << 53) as f64;
    limit.mul_f64(fraction)
}

async fn run_checker((real, index): (RealKey, usize), job: Job, up: bool, shared: Shared) {
    let Job { checker, context } = job;
    let Shared {
        reports,
        permits,
        policy,
        suspended,
        table,
    } = shared;
    let key = table_key(&(real, index));
    let timing = Timing {
        delay_loop: checker.delay_loop,
        retry: checker.retry,
        delay_before_retry: checker.delay_before_retry,
    };
    let mut state = CheckerState::new(timing, up);
    tokio::time::sleep(jitter(checker.warmup.unwrap_or(Duration::from_secs(1)))).await;
    loop {
        let paused = suspended
            .read()
            .map(|s| s.contains(&real.service))
            .unwrap_or(false);
        if paused {
            tokio::time::sleep(checker.delay_loop).await;
            continue;
        }
        let outcome = {
            let Ok(_permit) = permits.acquire().await else {
                return;
            };
            PROBES.fetch_add(1, Ordering::Relaxed);
            let policy = policy.read().map(|p| p.clone()).unwrap_or_default();
            let started = std::time::Instant::now();
            let outcome = probe_with(&checker, (real.addr, real.port), &context, &policy).await;
            let failure = match &outcome {
                Outcome::Down { reason } => Some(reason.as_str()),
                Outcome::Up { .. } => None,
            };
            if let Some(status) = table
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get_mut(&key)
            {
                status.record_probe(started.elapsed(), failure, now_unix_ms());
            }
            outcome
        };
        if let Outcome::Down { reason } = &outcome
            && (checker.log_all_failures || state.is_up())
        {
            tracing::debug!(
                "check of real {} {} of {}: {reason}",
                real.addr,
                real.port,
                real.service
            );
        }
        let (verdict, wait) = state.record(outcome);
        if verdict.is_some()
            && let Some(status) = table
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get_mut(&key)
        {
            status.record_verdict(state.is_up(), now_unix_ms());
        }
        if let Some(verdict) = verdict
            && reports
                .send(Report {
                    real,
                    index,
                    verdict,
                })
                .is_err()
        {
            return;
        }
        tokio::time::sleep(wait).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suspended_services_are_not_checked_until_resumed() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            // A closed local port: the check fails at once (retry 0).
            let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let port = closed.local_addr().unwrap().port();
            drop(closed);
            let text = format!(
                "virtual_server 192.0.2.1 80 {{\n lb_kind NAT\n protocol TCP\n ha_suspend\n real_server 127.0.0.1 {port} {{\n  TCP_CHECK {{\n   retry 0\n   delay_loop 0.05\n   warmup 0\n  }}\n }}\n}}\n"
            );
            let config = crate::config::parse(&text, std::path::Path::new("t.conf"))
                .unwrap()
                .config;
            let service = ServiceId::of(&config.virtual_servers[0]);
            let (sender, mut reports) = mpsc::unbounded_channel();
            let mut runner = Runner::new(sender);
            runner.suspend([service].into());
            runner.update(&config, &Health::new(&config, None));
            let quiet =
                tokio::time::timeout(Duration::from_millis(400), reports.recv()).await;
            assert!(quiet.is_err(), "a suspended service was checked: {quiet:?}");
            runner.suspend(BTreeSet::new());
            let report = tokio::time::timeout(Duration::from_secs(2), reports.recv())
                .await
                .expect("checked once resumed")
                .unwrap();
            assert!(matches!(report.verdict, Verdict::Down { .. }));
        });
    }

    #[test]
    fn jitter_stays_below_its_limit_and_varies() {
        let limit = Duration::from_secs(1);
        let draws: Vec<Duration> = (0..64).map(|_| jitter(limit)).collect();
        assert!(draws.iter().all(|d| *d < limit));
        assert!(draws.iter().any(|d| *d != draws[0]));
    }
}
