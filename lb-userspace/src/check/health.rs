//! What the checkers' verdicts mean for the services, sans IO, with keepalived's rules:
//! a real is alive when all its checkers pass (one without checkers always is); a dead
//! real leaves the service, or stays with weight 0 under `inhibit_on_failure`; a service
//! whose alive reals weigh less than `quorum - hysteresis` loses its quorum (its reals
//! leave and the `sorry_server` takes the traffic) and gets it back at `quorum +
//! hysteresis`. Verdicts in; the scripts to run and the overlay the controller applies
//! out.

use std::{collections::BTreeMap, net::IpAddr};

use super::schedule::Verdict;
use crate::{
    dataplane::diff::ServiceId,
    model::{Config, RealServer},
};

/// One real of one service.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct RealKey {
    pub service: ServiceId,
    pub addr: IpAddr,
    pub port: u16,
}

impl RealKey {
    /// Real `real` of service `service`.
    pub fn of(service: ServiceId, real: &RealServer) -> Self {
        Self {
            service,
            addr: real.addr,
            port: real.port,
        }
    }
}

/// How the health of the reals changes what the configuration says.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Overlay {
    /// Reals whose weight differs from the configured one (`None`: not in the service).
    pub reals: BTreeMap<RealKey, Option<u32>>,
    /// Sorry servers in a service, with their weight.
    pub sorry: BTreeMap<ServiceId, (IpAddr, u16, u32)>,
}

/// A script to run because something changed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Script {
    pub command: String,
    pub why: String,
}

#[derive(Clone, Debug)]
struct RealHealth {
    /// Per checker: passing, and a dynamic weight it set.
    checkers: Vec<(bool, Option<u32>)>,
    weight: u32,
    inhibit: bool,
    notify_up: Option<String>,
    notify_down: Option<String>,
}

impl RealHealth {
    fn alive(&self) -> bool {
        self.checkers.iter().all(|(up, _)| *up)
    }

    /// The weight the real serves with while alive: the last dynamic weight a checker
    /// set, else the configured one.
    fn weight(&self) -> u32 {
        self.checkers
            .iter()
            .find_map(|(_, weight)| *weight)
            .unwrap_or(self.weight)
    }
}

#[derive(Clone, Debug)]
struct ServiceHealth {
    quorum: u32,
    hysteresis: u32,
    quorum_up: bool,
    up_script: Option<String>,
    down_script: Option<String>,
    sorry: Option<(IpAddr, u16)>,
    sorry_inhibit: bool,
}

#[derive(Clone, Debug, Default)]
pub struct Health {
    reals: BTreeMap<RealKey, RealHealth>,
    services: BTreeMap<ServiceId, ServiceHealth>,
}

impl Health {
    /// The health of `config`'s reals, keeping what `previous` knew of a real whose
    /// checkers did not change (a reload does not reset them). New checkers start passing,
    /// or failing under `alpha`.
    pub fn new(config: &Config, previous: Option<(&Health, &Config)>) -> Self {
        let mut health = Self::default();
        for vs in &config.virtual_servers {
            let service = ServiceId::of(vs);
            let old_vs = previous.and_then(|(_, old)| {
                old.virtual_servers
                    .iter()
                    .find(|old| ServiceId::of(old) == service)
            });
            for real in &vs.reals {
                let key = RealKey::of(service, real);
                let unchanged = |old_real: &&RealServer| {
                    old_real.addr == real.addr
                        && old_real.port == real.port
                        && old_real.checkers == real.checkers
                };
                let kept = previous
                    .zip(old_vs)
                    .filter(|(_, old_vs)| old_vs.extras.alpha == vs.extras.alpha)
                    .and_then(|((old, _), old_vs)| {
                        old_vs.reals.iter().find(unchanged)?;
                        old.reals.get(&key).map(|h| h.checkers.clone())
                    });
                let checkers = kept.unwrap_or_else(|| {
                    real.checkers
                        .iter()
                        .map(|checker| (!(vs.extras.alpha || checker.alpha), None))
                        .collect()
                });
                health.reals.insert(
                    key,
                    RealHealth {
                        checkers,
                        weight: real.weight,
                        inhibit: real.inhibit_on_failure || vs.extras.inhibit_on_failure,
                        notify_up: real.notify_up.clone(),
                        notify_down: real.notify_down.clone(),
                    },
                );
            }
            let quorum_up = previous
                .and_then(|(old, _)| old.services.get(&service))
                .is_none_or(|s| s.quorum_up);
            health.services.insert(
                service,
                ServiceHealth {
                    quorum: vs.extras.quorum,
                    hysteresis: vs.extras.hysteresis,
                    quorum_up,
                    up_script: vs.extras.quorum_up.clone(),
                    down_script: vs.extras.quorum_down.clone(),
                    sorry: vs.extras.sorry_server.map(|s| (s.addr, s.port)),
                    sorry_inhibit: vs.extras.sorry_server_inhibit,
                },
            );
        }
        // A quorum computed from what is known now (a reload may change it); the scripts of
        // a change here are not run: nothing was observed to change.
        let services: Vec<ServiceId> = health.services.keys().copied().collect();
        for service in services {
            let _ = health.evaluate_quorum(service);
        }
        health
    }

    /// Whether the real is alive now (`None`: no such real).
    pub fn alive(&self, key: &RealKey) -> Option<bool> {
        self.reals.get(key).map(RealHealth::alive)
    }

    /// Whether checker `index` of the real passes now.
    pub fn checker_up(&self, key: &RealKey, index: usize) -> Option<bool> {
        self.reals.get(key)?.checkers.get(index).map(|(up, _)| *up)
    }

    /// Whether the service has its quorum.
    pub fn quorum_up(&self, service: &ServiceId) -> Option<bool> {
        self.services.get(service).map(|s| s.quorum_up)
    }

    /// Take checker `index`'s new verdict on `key`: the scripts to run (empty when the
    /// real's state did not change). Unknown reals (a verdict from before a reload) are
    /// ignored.
    pub fn record(&mut self, key: RealKey, index: usize, verdict: Verdict) -> Vec<Script> {
        let Some(real) = self.reals.get_mut(&key) else {
            return Vec::new();
        };
        let was_alive = real.alive();
        let Some(checker) = real.checkers.get_mut(index) else {
            return Vec::new();
        };
        match verdict {
            Verdict::Up { weight } => *checker = (true, weight.or(checker.1)),
            Verdict::Down { .. } => checker.0 = false,
            Verdict::Weight(weight) => checker.1 = Some(weight),
        }
        let alive = real.alive();
        let mut scripts = Vec::new();
        if alive != was_alive {
            let (script, state) = if alive {
                (&real.notify_up, "up")
            } else {
                (&real.notify_down, "down")
            };
            scripts.extend(script.as_ref().map(|command| Script {
                command: command.clone(),
                why: format!(
                    "real {} {} of {} is {state}",
                    key.addr, key.port, key.service
                ),
            }));
        }
        scripts.extend(self.evaluate_quorum(key.service));
        scripts
    }

    /// What the service's alive reals weigh together (what its quorum is measured by).
    pub fn alive_weight(&self, service: ServiceId) -> u64 {
        self.reals
            .range(range_of(service))
            .filter(|(_, real)| real.alive())
            .map(|(_, real)| u64::from(real.weight()))
            .sum()
    }

    /// Update the service's quorum state from its alive reals; the script of a change.
    fn evaluate_quorum(&mut self, service: ServiceId) -> Option<Script> {
        let weight = self.alive_weight(service);
        let state = self.services.get_mut(&service)?;
        let quorum = u64::from(state.quorum);
        let hysteresis = u64::from(state.hysteresis);
        let (script, now) = if state.quorum_up && weight < quorum.saturating_sub(hysteresis) {
            (&state.down_script, "lost")
        } else if !state.quorum_up && weight >= quorum + hysteresis {
            (&state.up_script, "regained")
        } else {
            return None;
        };
        let script = script.as_ref().map(|command| Script {
            command: command.clone(),
            why: format!("{service} {now} its quorum ({weight} of {quorum})"),
        });
        state.quorum_up = !state.quorum_up;
        script
    }

    /// The scripts `omega` runs when lbd stops: each alive real's notify_down, and the
    /// quorum_down of a service that has its quorum.
    pub fn shutdown_scripts(&self, config: &Config) -> Vec<Script> {
        let mut scripts = Vec::new();
        for vs in config.virtual_servers.iter().filter(|vs| vs.extras.omega) {
            let service = ServiceId::of(vs);
            for (key, real) in self.reals.range(range_of(service)) {
                if let (true, Some(command)) = (real.alive(), &real.notify_down) {
                    scripts.push(Script {
                        command: command.clone(),
                        why: format!(
                            "lbd stops (omega): real {} {} of {service}",
                            key.addr, key.port
                        ),
                    });
                }
            }
            if let (Some(true), Some(command)) = (self.quorum_up(&service), &vs.extras.quorum_down)
            {
                scripts.push(Script {
                    command: command.clone(),
                    why: format!("lbd stops (omega): {service}"),
                });
            }
        }
        scripts
    }

    /// What the controller changes in the configuration's services.
    pub fn overlay(&self) -> Overlay {
        let mut overlay = Overlay::default();
        for (key, real) in &self.reals {
            let Some(service) = self.services.get(&key.service) else {
                continue;
            };
            let weight = match (real.alive() && service.quorum_up, real.inhibit) {
                (true, _) => Some(real.weight()),
                (false, true) => Some(0),
                (false, false) => None,
            };
            // Without a sorry server, a service below its quorum keeps its alive reals
            // (keepalived only takes them out to let the sorry server serve).
            let weight = if !service.quorum_up && service.sorry.is_none() && real.alive() {
                Some(real.weight())
            } else {
                weight
            };
            if weight != Some(real.weight) {
                overlay.reals.insert(*key, weight);
            }
        }
        for (id, service) in &self.services {
            match (service.sorry, service.quorum_up, service.sorry_inhibit) {
                (Some((addr, port)), false, _) => {
                    overlay.sorry.insert(*id, (addr, port, 1));
                }
                (Some((addr, port)), true, true) => {
                    overlay.sorry.insert(*id, (addr, port, 0));
                }
                _ => {}
            }
        }
        overlay
    }
}

/// The keys of one service's reals (of either family: TUN may carry IPv4 to IPv6 reals).
fn range_of(service: ServiceId) -> std::ops::RangeInclusive<RealKey> {
    RealKey {
        service,
        addr: IpAddr::from([0u8; 4]),
        port: 0,
    }..=RealKey {
        service,
        addr: IpAddr::from([255u8; 16]),
        port: u16::MAX,
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn config(text: &str) -> Config {
        crate::config::parse(text, Path::new("t.conf"))
            .unwrap()
            .config
    }

    const THREE: &str = "
virtual_server 192.0.2.1 80 {
    lb_algo rr
    lb_kind DR
    protocol TCP
    quorum 2
    hysteresis 0
    quorum_up /bin/up.sh
    quorum_down /bin/down.sh
    sorry_server 10.0.0.9 80
    real_server 10.0.0.1 80 {
        notify_down \"/bin/real.sh down\"
        TCP_CHECK {}
    }
    real_server 10.0.0.2 80 {
        inhibit_on_failure
        TCP_CHECK {}
    }
    real_server 10.0.0.3 80 {
        TCP_CHECK {}
    }
}";

    fn key(config: &Config, host: u8) -> RealKey {
        RealKey {
            service: ServiceId::of(&config.virtual_servers[0]),
            addr: IpAddr::from([10, 0, 0, host]),
            port: 80,
        }
    }

    fn down() -> Verdict {
        Verdict::Down {
            reason: "refused".into(),
        }
    }

    #[test]
    fn dead_reals_leave_or_are_inhibited_and_quorum_brings_the_sorry_server() {
        let config = config(THREE);
        let mut health = Health::new(&config, None);
        assert_eq!(health.overlay(), Overlay::default());

        // Real 1 dies: it leaves, and its notify_down runs.
        let scripts = health.record(key(&config, 1), 0, down());
        assert_eq!(
            scripts,
            [Script {
                command: "/bin/real.sh down".into(),
                why: "real 10.0.0.1 80 of TCP 192.0.2.1:80 is down".into()
            }]
        );
        assert_eq!(health.overlay().reals, [(key(&config, 1), None)].into());

        // Real 2 dies too: weight 0 (inhibit_on_failure); one real is left, below the
        // quorum of 2: the reals leave and the sorry server serves.
        let scripts = health.record(key(&config, 2), 0, down());
        assert_eq!(scripts[0].command, "/bin/down.sh");
        let overlay = health.overlay();
        assert_eq!(
            overlay.reals,
            [
                (key(&config, 1), None),
                (key(&config, 2), Some(0)),
                (key(&config, 3), None)
            ]
            .into()
        );
        assert_eq!(
            overlay.sorry.values().collect::<Vec<_>>(),
            [&(IpAddr::from([10, 0, 0, 9]), 80, 1)]
        );

        // Real 1 returns: quorum again, the sorry server goes.
        let scripts = health.record(key(&config, 1), 0, Verdict::Up { weight: None });
        assert_eq!(scripts[0].command, "/bin/up.sh");
        let overlay = health.overlay();
        assert_eq!(overlay.reals, [(key(&config, 2), Some(0))].into());
        assert!(overlay.sorry.is_empty());
    }

    #[test]
    fn alpha_starts_reals_down_and_reloads_keep_what_is_known() {
        let text = THREE.replace("quorum 2", "quorum 1\n    alpha");
        let config = config(&text);
        let health = Health::new(&config, None);
        assert_eq!(health.alive(&key(&config, 3)), Some(false));
        // A reload that changes only real 3's checker keeps the others' state.
        let mut health = health;
        health.record(key(&config, 1), 0, Verdict::Up { weight: None });
        let changed = crate::config::parse(
            &text.replace(
                "real_server 10.0.0.3 80 {\n        TCP_CHECK {}",
                "real_server 10.0.0.3 80 {\n        TCP_CHECK { connect_port 81 }",
            ),
            Path::new("t.conf"),
        )
        .unwrap()
        .config;
        let reloaded = Health::new(&changed, Some((&health, &config)));
        assert_eq!(reloaded.alive(&key(&config, 1)), Some(true));
        assert_eq!(reloaded.alive(&key(&config, 2)), Some(false));
        assert_eq!(reloaded.alive(&key(&config, 3)), Some(false));
    }

    #[test]
    fn omega_runs_the_down_scripts_at_shutdown() {
        let config = config(&THREE.replace("quorum 2", "quorum 2\n    omega"));
        let mut health = Health::new(&config, None);
        let commands = |health: &Health| -> Vec<String> {
            health
                .shutdown_scripts(&config)
                .into_iter()
                .map(|s| s.command)
                .collect()
        };
        assert_eq!(commands(&health), ["/bin/real.sh down", "/bin/down.sh"]);
        // A real already down has had its script; without omega, nothing.
        health.record(key(&config, 1), 0, down());
        assert_eq!(commands(&health), ["/bin/down.sh"]);
        let plain = super::tests::config(THREE);
        assert!(
            Health::new(&plain, None)
                .shutdown_scripts(&plain)
                .is_empty()
        );
    }

    #[test]
    fn a_checkers_own_alpha_starts_just_it_down() {
        let text = THREE.replace(
            "real_server 10.0.0.3 80 {\n        TCP_CHECK {}",
            "real_server 10.0.0.3 80 {\n        TCP_CHECK {\n            alpha\n        }",
        );
        let config = config(&text);
        let health = Health::new(&config, None);
        assert_eq!(health.alive(&key(&config, 1)), Some(true));
        assert_eq!(health.alive(&key(&config, 3)), Some(false));
    }

    #[test]
    fn hysteresis_widens_the_quorum() {
        let text = THREE.replace("hysteresis 0", "hysteresis 1");
        let config = config(&text);
        let mut health = Health::new(&config, None);
        // 3 alive; down to 1 (< 2 - 1 is false: 1 is not below 1): quorum kept.
        health.record(key(&config, 1), 0, down());
        health.record(key(&config, 2), 0, down());
        assert_eq!(health.quorum_up(&key(&config, 1).service), Some(true));
        health.record(key(&config, 3), 0, down());
        assert_eq!(health.quorum_up(&key(&config, 1).service), Some(false));
        // Back to 2: not yet (needs 2 + 1); 3: regained.
        health.record(key(&config, 1), 0, Verdict::Up { weight: None });
        health.record(key(&config, 2), 0, Verdict::Up { weight: None });
        assert_eq!(health.quorum_up(&key(&config, 1).service), Some(false));
        health.record(key(&config, 3), 0, Verdict::Up { weight: None });
        assert_eq!(health.quorum_up(&key(&config, 1).service), Some(true));
    }

    #[test]
    fn dynamic_weights_replace_the_configured_one() {
        let config = config(THREE);
        let mut health = Health::new(&config, None);
        health.record(key(&config, 3), 0, Verdict::Weight(40));
        assert_eq!(health.overlay().reals, [(key(&config, 3), Some(40))].into());
    }
}
