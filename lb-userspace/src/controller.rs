//! The controller: holds the running configuration and the health checks' overlay on it
//! (dead reals out or at weight 0, dynamic weights, sorry servers), and keeps the data
//! plane equal to the desired state derived from both. VRRP will feed in here too.
//!
//! A configuration is adopted only once the data plane accepted it: if applying a new one
//! fails, the previous one is applied again and stays the running configuration. A failed
//! first apply restores nothing: the pinned maps may still hold what an earlier lbd left,
//! and an empty configuration would wipe it.

use lb_common::conn::Timeouts;

use crate::{
    check::health::{Overlay, RealKey},
    dataplane::{
        ApplyReport, Dataplane, DataplaneError, DesiredState, RealSpec, ServiceSpec, diff,
    },
    model::Config,
};

pub struct Controller<D> {
    dataplane: D,
    running: Config,
    overlay: Overlay,
    /// Whether `running` was ever applied.
    applied: bool,
}

impl<D: Dataplane> Controller<D> {
    /// A controller whose data plane has not been programmed yet (empty configuration).
    pub fn new(dataplane: D) -> Self {
        Self {
            dataplane,
            running: Config::default(),
            overlay: Overlay::default(),
            applied: false,
        }
    }

    /// Make `config` the running configuration: the data plane reconciles with the whole
    /// desired state. The report lists the updates from the running configuration
    /// (`diff`), for the log.
    pub fn apply(&mut self, config: Config) -> Result<ApplyReport, DataplaneError> {
        self.apply_with(config, Overlay::default())
    }

    /// As `apply`, with the health checks' `overlay` for `config`.
    pub fn apply_with(
        &mut self,
        config: Config,
        overlay: Overlay,
    ) -> Result<ApplyReport, DataplaneError> {
        let desired = desired_state_with(&config, &overlay);
        match self.dataplane.apply(&desired) {
            Ok(mut report) => {
                report.changes =
                    diff::changes(&desired_state_with(&self.running, &self.overlay), &desired);
                self.running = config;
                self.overlay = overlay;
                self.applied = true;
                Ok(report)
            }
            Err(error) if !self.applied => Err(error),
            Err(error) => {
                // Put back what was serving; a failure here leaves the data plane as the
                // failed attempt left it, and the original error is what matters.
                if let Err(restore) = self
                    .dataplane
                    .apply(&desired_state_with(&self.running, &self.overlay))
                {
                    tracing::error!(%restore, "restoring the previous configuration failed");
                }
                Err(error)
            }
        }
    }

    /// Keep the running configuration with a new health `overlay` (a checker's verdict
    /// changed). The report lists the updates.
    pub fn set_overlay(&mut self, overlay: Overlay) -> Result<ApplyReport, DataplaneError> {
        self.apply_with(self.running.clone(), overlay)
    }

    /// Apply the running configuration again (next hops are resolved anew).
    pub fn refresh(&mut self) -> Result<ApplyReport, DataplaneError> {
        self.dataplane
            .apply(&desired_state_with(&self.running, &self.overlay))
    }

    /// The data plane's upkeep that is due by `now` (see `Dataplane::upkeep`).
    pub fn upkeep(
        &mut self,
        now: std::time::Instant,
    ) -> Result<Option<std::time::Instant>, DataplaneError> {
        self.dataplane.upkeep(now)
    }

    pub fn running(&self) -> &Config {
        &self.running
    }

    pub fn dataplane(&self) -> &D {
        &self.dataplane
    }

    pub fn dataplane_mut(&mut self) -> &mut D {
        &mut self.dataplane
    }
}

/// What the data plane should carry for `config` with every real healthy.
pub fn desired_state(config: &Config) -> DesiredState {
    desired_state_with(config, &Overlay::default())
}

/// What the data plane should carry for `config` with the health checks' `overlay`.
pub fn desired_state_with(config: &Config, overlay: &Overlay) -> DesiredState {
    let t = config.lvs_timeouts;
    DesiredState {
        services: services(config, overlay),
        timeouts: Timeouts::with_set(t.tcp, t.tcpfin, t.udp),
    }
}

fn services(config: &Config, overlay: &Overlay) -> Vec<ServiceSpec> {
    config
        .virtual_servers
        .iter()
        .map(|vs| (vs, diff::ServiceId::of(vs)))
        .map(|(vs, id)| ServiceSpec {
            addr: vs.addr,
            port: vs.port,
            protocol: vs.protocol,
            fwmark: vs.fwmark,
            tunnel: vs.tunnel,
            scheduler: vs.scheduler,
            sched_flags: vs.sched_flags,
            persistence: vs.persistence,
            one_packet: vs.one_packet,
            forward: vs.forward,
            local_addresses: vs.local_addresses.clone(),
            tun_sources: vs
                .tun_sources
                .iter()
                .chain(&config.tun_sources)
                .copied()
                .collect(),
            reals: vs
                .reals
                .iter()
                .filter_map(|real| {
                    let key = RealKey::of(id, real);
                    let weight = overlay
                        .reals
                        .get(&key)
                        .copied()
                        .unwrap_or(Some(real.weight))?;
                    Some(RealSpec {
                        addr: real.addr,
                        port: real.port,
                        weight,
                        upper_threshold: real.upper_threshold,
                        lower_threshold: real.lower_threshold,
                        lvs_method: real.lvs_method,
                    })
                })
                // The sorry server, unless it is one of the reals (keepalived then uses
                // the real).
                .chain(overlay.sorry.get(&id).and_then(|&(addr, port, weight)| {
                    (!vs.reals.iter().any(|r| r.addr == addr && r.port == port)).then_some(
                        RealSpec {
                            addr,
                            port,
                            weight,
                            upper_threshold: 0,
                            lower_threshold: 0,
                            lvs_method: vs.extras.sorry_server_lvs_method,
                        },
                    )
                }))
                .collect(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::{config, dataplane::fake::FakeDataplane, model::ForwardMethod};

    fn config(text: &str) -> Config {
        config::parse(text, Path::new("test.conf")).unwrap().config
    }

    const TWO_REALS: &str = "
virtual_server 192.0.2.1 80 {
    lb_algo wrr
    lb_kind DR
    protocol TCP
    real_server 10.0.0.1 80 { weight 3 }
    real_server 10.0.0.2 80 { weight 0 }
}";

    #[test]
    fn desired_state_carries_services_reals_and_weights() {
        let mut controller = Controller::new(FakeDataplane::default());
        controller.apply(config(TWO_REALS)).unwrap();
        let services = &controller.dataplane().services;
        assert_eq!(services.len(), 1);
        assert_eq!(services[0].port, 80);
        let weights: Vec<_> = services[0]
            .reals
            .iter()
            .map(|r| (r.addr.to_string(), r.weight))
            .collect();
        assert_eq!(
            weights,
            [("10.0.0.1".to_string(), 3), ("10.0.0.2".to_string(), 0)]
        );
    }

    #[test]
    fn reals_and_the_sorry_server_carry_their_own_forwarding_method() {
        let config = config(
            "virtual_server 192.0.2.1 80 {\n lb_kind DR\n sorry_server 10.0.0.9 8080\n sorry_server_lvs_method NAT\n real_server 10.0.0.1 80 {}\n real_server 10.0.0.2 80 {\n  lvs_method TUN\n }\n}\n",
        );
        let vs = &config.virtual_servers[0];
        let mut overlay = Overlay::default();
        overlay.sorry.insert(
            diff::ServiceId::of(vs),
            ("10.0.0.9".parse().unwrap(), 8080, 1),
        );
        let state = desired_state_with(&config, &overlay);
        let spec = &state.services[0];
        let methods: Vec<_> = spec
            .reals
            .iter()
            .map(|real| (real.addr.to_string(), spec.forwarding(real).0))
            .collect();
        assert_eq!(
            methods,
            [
                ("10.0.0.1".to_owned(), ForwardMethod::Dr),
                ("10.0.0.2".to_owned(), ForwardMethod::Tun),
                ("10.0.0.9".to_owned(), ForwardMethod::Nat),
            ]
        );
    }

    #[test]
    fn lvs_timeouts_reach_the_data_plane() {
        let mut controller = Controller::new(FakeDataplane::default());
        controller
            .apply(config("global_defs {\n lvs_timeouts tcp 60 udp 30\n}\n"))
            .unwrap();
        let timeouts = controller.dataplane().timeouts.expect("applied");
        assert_eq!(timeouts, Timeouts::with_set(Some(60), None, Some(30)));
        assert_ne!(timeouts, Timeouts::IPVS);
    }

    #[test]
    fn failed_first_apply_restores_nothing() {
        let mut controller = Controller::new(FakeDataplane::default());
        controller.dataplane_mut().fail_next_apply = Some(DataplaneError::Capacity {
            what: "virtual services",
            max: 0,
        });
        assert!(controller.apply(config(TWO_REALS)).is_err());
        assert_eq!(controller.dataplane().applies, 0);
    }

    #[test]
    fn failed_apply_keeps_and_restores_the_running_config() {
        let mut controller = Controller::new(FakeDataplane::default());
        let first = config(TWO_REALS);
        controller.apply(first.clone()).unwrap();
        controller.dataplane_mut().fail_next_apply = Some(DataplaneError::Capacity {
            what: "virtual services",
            max: 0,
        });
        let second =
            config("virtual_server 192.0.2.9 53 { lb_algo rr\n lb_kind DR\n protocol UDP }");
        assert!(controller.apply(second).is_err());
        assert_eq!(controller.running(), &first);
        assert_eq!(
            controller.dataplane().services,
            desired_state(&first).services
        );
        assert_eq!(controller.dataplane().applies, 2);
    }

    /// The fake data plane's writes of the last apply, one line each.
    fn writes(controller: &Controller<FakeDataplane>) -> Vec<String> {
        use crate::dataplane::fake::{EntryKey, EntryValue, Write};
        let key = |key: &EntryKey| match key {
            EntryKey::Service(id) => format!("service {id}"),
            EntryKey::Real(id, addr, port) => format!("real {addr} {port} of {id}"),
        };
        controller
            .dataplane()
            .writes
            .iter()
            .map(|write| match write {
                Write::Delete(k) => format!("delete {}", key(k)),
                Write::Put(k, EntryValue::Weight(w)) => format!("put {} weight {w}", key(k)),
                Write::Put(k, EntryValue::Service(spec)) => {
                    format!("put {} {:?}", key(k), spec.scheduler)
                }
            })
            .collect()
    }

    #[test]
    fn reloads_apply_exactly_the_differences() {
        use crate::dataplane::diff::Change;
        let describe =
            |changes: &[Change]| -> Vec<String> { changes.iter().map(|c| c.to_string()).collect() };
        let mut controller = Controller::new(FakeDataplane::default());
        let report = controller.apply(config(TWO_REALS)).unwrap();
        assert_eq!(
            describe(&report.changes),
            [
                "add service TCP 192.0.2.1:80",
                "add real 10.0.0.1 80 to TCP 192.0.2.1:80",
                "add real 10.0.0.2 80 to TCP 192.0.2.1:80",
            ]
        );
        assert_eq!(
            writes(&controller),
            [
                "put service TCP 192.0.2.1:80 Wrr",
                "put real 10.0.0.1 80 of TCP 192.0.2.1:80 weight 3",
                "put real 10.0.0.2 80 of TCP 192.0.2.1:80 weight 0",
            ]
        );
        // A weight: one entry written.
        let weights = TWO_REALS.replace("weight 0", "weight 2");
        let report = controller.apply(config(&weights)).unwrap();
        assert_eq!(
            describe(&report.changes),
            ["weight of real 10.0.0.2 80 of TCP 192.0.2.1:80: 0 -> 2"]
        );
        assert_eq!(
            writes(&controller),
            ["put real 10.0.0.2 80 of TCP 192.0.2.1:80 weight 2"]
        );
        // A real replaced, a service added, the scheduler of the first changed.
        let more = format!(
            "{}\nvirtual_server 2001:db8::1 53 {{\n lb_algo rr\n lb_kind DR\n protocol UDP\n real_server 2001:db8:1::1 53 {{}}\n}}\n",
            weights
                .replace("10.0.0.1 80", "10.0.0.3 80")
                .replace("wrr", "rr")
        );
        let report = controller.apply(config(&more)).unwrap();
        assert_eq!(
            describe(&report.changes),
            [
                "change service TCP 192.0.2.1:80",
                "remove real 10.0.0.1 80 from TCP 192.0.2.1:80",
                "add real 10.0.0.3 80 to TCP 192.0.2.1:80",
                "add service UDP [2001:db8::1]:53",
                "add real 2001:db8:1::1 53 to UDP [2001:db8::1]:53",
            ]
        );
        assert_eq!(
            writes(&controller),
            [
                "delete real 10.0.0.1 80 of TCP 192.0.2.1:80",
                "put service TCP 192.0.2.1:80 Rr",
                "put service UDP [2001:db8::1]:53 Rr",
                "put real 10.0.0.3 80 of TCP 192.0.2.1:80 weight 3",
                "put real 2001:db8:1::1 53 of UDP [2001:db8::1]:53 weight 1",
            ]
        );
        // The same file again changes nothing; removing a service removes just it.
        assert!(controller.apply(config(&more)).unwrap().changes.is_empty());
        assert!(writes(&controller).is_empty());
        let report = controller
            .apply(config(
                &weights
                    .replace("10.0.0.1 80", "10.0.0.3 80")
                    .replace("wrr", "rr"),
            ))
            .unwrap();
        assert_eq!(
            describe(&report.changes),
            ["remove service UDP [2001:db8::1]:53"]
        );
        assert_eq!(
            writes(&controller),
            [
                "delete service UDP [2001:db8::1]:53",
                "delete real 2001:db8:1::1 53 of UDP [2001:db8::1]:53",
            ]
        );
    }

    #[test]
    fn a_broken_file_leaves_the_running_state_untouched() {
        let mut controller = Controller::new(FakeDataplane::default());
        controller.apply(config(TWO_REALS)).unwrap();
        let applies = controller.dataplane().applies;
        // A reload parses first; a file with errors never reaches the controller.
        let broken = TWO_REALS.replace("lb_algo wrr", "lb_algo nope");
        assert!(config::parse(&broken, Path::new("test.conf")).is_err());
        assert_eq!(controller.dataplane().applies, applies);
        assert_eq!(controller.running(), &config(TWO_REALS));
    }
}
