//! The checkers as lbd runs them: the health state, the tasks, and the channel between
//! them. lbd waits on `next`, hands each report to `record` (which logs it, starts its
//! scripts and queues its SMTP alerts) and applies the new overlay; on reload it asks for
//! the health of the new configuration (`health_for`) and, once the data plane took it,
//! `adopt`s it.

use std::time::Duration;

use tokio::sync::mpsc;
use tracing::{info, warn};

use super::{
    health::{Health, Overlay, Script},
    runner::{Report, Runner},
    schedule::Verdict,
    script::Policy,
};
use crate::{
    alert::{Mailer, check::CheckAlerts},
    model::Config,
};

/// How long a notify or quorum script may run.
pub const SCRIPT_TIMEOUT: Duration = Duration::from_secs(30);

pub struct Checks {
    health: Health,
    policy: Policy,
    runner: Runner,
    reports: mpsc::UnboundedReceiver<Report>,
    alerts: CheckAlerts,
    mailer: Mailer,
}

impl Checks {
    /// The checkers of `config`, started (inside a tokio runtime); their alerts go to
    /// `mailer`.
    pub fn start(config: &Config, mailer: Mailer) -> Self {
        let (sender, reports) = mpsc::unbounded_channel();
        let health = Health::new(config, None);
        let mut runner = Runner::new(sender);
        // ha_suspend from the first check on.
        let local = crate::vrrp::link::all_addresses().unwrap_or_default();
        runner.suspend(suspended_services(config, &local));
        runner.update(config, &health);
        if !runner.is_empty() {
            info!("health checks: {} checker(s) running", runner.len());
        }
        Self {
            health,
            policy: Policy::of(config),
            runner,
            reports,
            alerts: CheckAlerts::of(config),
            mailer,
        }
    }

    /// Each checker's results (shared: it stays current).
    pub fn table(&self) -> crate::status::CheckTable {
        self.runner.table()
    }

    pub fn overlay(&self) -> Overlay {
        self.health.overlay()
    }

    /// The next verdict change.
    pub async fn next(&mut self) -> Report {
        match self.reports.recv().await {
            Some(report) => report,
            // The runner holds a sender for as long as `self` lives.
            None => std::future::pending().await,
        }
    }

    /// Take `report`: logs it and starts the scripts it calls for; `overlay` then says
    /// what the services carry.
    pub fn record(&mut self, report: Report) {
        let Report {
            real,
            index,
            verdict,
        } = report;
        let before = self.health.alive(&real);
        let checker_before = self.health.checker_up(&real, index);
        let quorum_before = self.health.quorum_up(&real.service);
        let reason = match &verdict {
            Verdict::Down { reason } => reason.clone(),
            _ => String::new(),
        };
        match &verdict {
            Verdict::Down { reason } => info!(
                "check {index} of real {} {} of {} failed: {reason}",
                real.addr, real.port, real.service
            ),
            Verdict::Up { .. } => info!(
                "check {index} of real {} {} of {} passes",
                real.addr, real.port, real.service
            ),
            Verdict::Weight(weight) => info!(
                "check {index} of real {} {} of {} sets weight {weight}",
                real.addr, real.port, real.service
            ),
        }
        let scripts = self.health.record(real, index, verdict);
        let after = self.health.alive(&real);
        let checker_after = self.health.checker_up(&real, index);
        if let (Some(was), Some(up)) = (checker_before, checker_after)
            && was != up
            && let Some(mail) = self
                .alerts
                .checker(&real, index, up, &reason, after == Some(true))
        {
            self.mailer.send(mail);
        }
        if before != after {
            let state = if after == Some(true) { "UP" } else { "DOWN" };
            info!(
                "real {} {} of {} is {state}",
                real.addr, real.port, real.service
            );
        }
        let quorum_after = self.health.quorum_up(&real.service);
        match (quorum_before, quorum_after) {
            (Some(true), Some(false)) => info!(
                "{} lost its quorum: its reals leave, a sorry server serves if it has one",
                real.service
            ),
            (Some(false), Some(true)) => info!("{} regained its quorum", real.service),
            _ => {}
        }
        if let (Some(was), Some(up)) = (quorum_before, quorum_after)
            && was != up
            && let Some(mail) =
                self.alerts
                    .quorum(&real.service, up, self.health.alive_weight(real.service))
        {
            self.mailer.send(mail);
        }
        run_scripts(scripts, &self.policy);
    }

    /// The health of `new` (replacing `old`), keeping the state of unchanged checkers.
    pub fn health_for(&self, old: &Config, new: &Config) -> Health {
        Health::new(new, Some((&self.health, old)))
    }

    /// Pause the checks of the `ha_suspend` services whose address is not on this host
    /// (keepalived's rule: a VRRP backup does not hold the VIP), resume the others.
    /// Called when VRRP changes state and at each refresh.
    pub fn follow_addresses(&self, config: &Config) {
        let local = crate::vrrp::link::all_addresses().unwrap_or_default();
        let suspended = suspended_services(config, &local);
        if !suspended.is_empty() {
            tracing::debug!(
                "ha_suspend: checks paused for {} service(s)",
                suspended.len()
            );
        }
        self.runner.suspend(suspended);
    }

    /// `config` (with `health`) is now running: restart the checkers that changed.
    pub fn adopt(&mut self, config: &Config, health: Health) {
        self.health = health;
        self.alerts = CheckAlerts::of(config);
        self.policy = Policy::of(config);
        self.runner.update(config, &self.health);
    }
}

impl Checks {
    /// lbd stops: run what `omega` asks for in `config`, and wait for it (each script
    /// within its time limit).
    pub async fn shutdown(&self, config: &Config) {
        let scripts = self.health.shutdown_scripts(config);
        let mut running = tokio::task::JoinSet::new();
        for script in scripts {
            let policy = self.policy.clone();
            running.spawn(async move { run_one(script, policy).await });
        }
        while running.join_next().await.is_some() {}
    }
}

async fn run_one(script: Script, policy: Policy) {
    info!("running `{}` ({})", script.command, script.why);
    match super::script::run_with(&script.command, SCRIPT_TIMEOUT, &policy, None).await {
        Ok(0) => {}
        Ok(code) => warn!("`{}` exited with {code}", script.command),
        Err(reason) => warn!("{reason}"),
    }
}

/// The `ha_suspend` services of `config` whose address is not among `local`.
pub fn suspended_services(
    config: &Config,
    local: &[std::net::IpAddr],
) -> std::collections::BTreeSet<crate::dataplane::diff::ServiceId> {
    config
        .virtual_servers
        .iter()
        .filter(|vs| vs.extras.ha_suspend && !local.contains(&vs.addr))
        .map(crate::dataplane::diff::ServiceId::of)
        .collect()
}

/// Start `scripts` in the background under `policy`; their results are logged.
pub fn run_scripts(scripts: Vec<Script>, policy: &Policy) {
    for script in scripts {
        tokio::spawn(run_one(script, policy.clone()));
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    #[test]
    fn ha_suspend_pauses_services_whose_address_is_elsewhere() {
        let text = "virtual_server 10.0.0.100 80 {\n lb_kind DR\n protocol TCP\n ha_suspend\n real_server 10.0.0.11 80 {}\n}\nvirtual_server 10.0.0.101 80 {\n lb_kind DR\n protocol TCP\n real_server 10.0.0.11 80 {}\n}\n";
        let config = crate::config::parse(text, Path::new("t.conf"))
            .unwrap()
            .config;
        let away = suspended_services(&config, &[]);
        assert_eq!(
            away.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
            ["TCP 10.0.0.100:80"]
        );
        let here = suspended_services(&config, &["10.0.0.100".parse().unwrap()]);
        assert!(here.is_empty());
    }
}
