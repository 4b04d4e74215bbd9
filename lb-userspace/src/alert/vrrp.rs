//! Which mails VRRP's transitions make, with keepalived's rules and words (sans IO): an
//! instance with `smtp_alert` (else global `smtp_alert_vrrp`, else `smtp_alert`) mails
//! each state it enters, once per state; a sync group likewise when all its members are
//! in one state; `no_email_faults` keeps FAULT quiet; a stopping lbd mails STOP.

use std::collections::BTreeMap;

use lb_vrrp::machine::State;

use super::Mail;
use crate::model::Config;

/// One instance's or group's mail state.
#[derive(Clone, Debug, Default)]
struct Alerting {
    enabled: bool,
    /// The state last mailed (a state is mailed once until another is).
    mailed: Option<State>,
}

#[derive(Clone, Debug, Default)]
pub struct VrrpAlerts {
    instances: BTreeMap<String, Alerting>,
    /// Each instance's state now.
    states: BTreeMap<String, State>,
    /// Each group: its members and its mail state.
    groups: BTreeMap<String, (Vec<String>, Alerting)>,
    no_email_faults: bool,
}

impl VrrpAlerts {
    /// The alerts of `config`'s instances and groups, keeping what `self` knew of the
    /// same names (a reload does not mail the states again).
    pub fn reconfigure(&mut self, config: &Config) {
        let alerts = &config.alerts;
        let mailed =
            |known: &BTreeMap<String, Alerting>, name: &str| known.get(name).and_then(|a| a.mailed);
        self.instances = config
            .vrrp_instances
            .iter()
            .map(|vi| {
                let alerting = Alerting {
                    enabled: alerts.vrrp(vi.smtp_alert),
                    mailed: mailed(&self.instances, &vi.name),
                };
                (vi.name.clone(), alerting)
            })
            .collect();
        let old_groups: BTreeMap<String, Alerting> = std::mem::take(&mut self.groups)
            .into_iter()
            .map(|(name, (_, alerting))| (name, alerting))
            .collect();
        self.groups = config
            .vrrp_sync_groups
            .iter()
            .map(|group| {
                let alerting = Alerting {
                    enabled: alerts.vrrp(group.smtp_alert),
                    mailed: mailed(&old_groups, &group.name),
                };
                (group.name.clone(), (group.group.clone(), alerting))
            })
            .collect();
        self.states
            .retain(|name, _| config.vrrp_instances.iter().any(|vi| &vi.name == name));
        self.no_email_faults = alerts.no_email_faults;
    }

    /// `instance` entered `state`: the mails that makes.
    pub fn transition(&mut self, instance: &str, state: State) -> Vec<Mail> {
        if state == State::Initialize {
            return Vec::new();
        }
        self.states.insert(instance.to_owned(), state);
        let quiet = self.no_email_faults && state == State::Fault;
        let mut mails = Vec::new();
        if let Some(alerting) = self.instances.get_mut(instance)
            && alerting.enabled
            && !quiet
            && alerting.mailed != Some(state)
        {
            alerting.mailed = Some(state);
            mails.push(instance_mail(instance, Some(state)));
        }
        for (name, (members, alerting)) in &mut self.groups {
            let all_in_state = members.contains(&instance.to_owned())
                && members.iter().all(|m| self.states.get(m) == Some(&state));
            if all_in_state && alerting.enabled && !quiet && alerting.mailed != Some(state) {
                alerting.mailed = Some(state);
                mails.push(group_mail(name, Some(state)));
            }
        }
        mails
    }

    /// lbd stops: a STOP mail for each alerting instance, then each alerting group.
    pub fn stopping(&self) -> Vec<Mail> {
        let instances = self
            .instances
            .iter()
            .filter(|(_, a)| a.enabled)
            .map(|(name, _)| instance_mail(name, None));
        let groups = self
            .groups
            .iter()
            .filter(|(_, (_, a))| a.enabled)
            .map(|(name, _)| group_mail(name, None));
        instances.chain(groups).collect()
    }
}

/// keepalived's subject ending for entering `state` (`None`: stopping).
fn entering(state: Option<State>) -> &'static str {
    match state {
        Some(State::Master) => "Entering MASTER state",
        Some(State::Backup) => "Entering BACKUP state",
        Some(State::Fault) => "Entering FAULT state",
        Some(State::Initialize) | None => "Stopping",
    }
}

fn instance_mail(name: &str, state: Option<State>) -> Mail {
    let body = match state {
        Some(State::Master) => "=> VRRP Instance is now owning VRRP VIPs <=",
        Some(State::Backup | State::Fault) => "=> VRRP Instance is no longer owning VRRP VIPs <=",
        Some(State::Initialize) | None => "=> VRRP Instance stopping <=",
    };
    Mail {
        subject: format!("VRRP Instance {name} - {}", entering(state)),
        body: body.into(),
    }
}

fn group_mail(name: &str, state: Option<State>) -> Mail {
    let body = match state {
        Some(State::Master) => "=> All VRRP group instances are now in MASTER state <=",
        Some(State::Backup) => "=> All VRRP group instances are now in BACKUP state <=",
        Some(State::Fault) => "=> All VRRP group instances are now in FAULT state <=",
        Some(State::Initialize) | None => "=> All VRRP group instances are now stopping <=",
    };
    Mail {
        subject: format!("VRRP Group {name} - {}", entering(state)),
        body: body.into(),
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn alerts(text: &str) -> VrrpAlerts {
        let config = lb_config::parse(text, Path::new("t.conf")).unwrap().config;
        let mut alerts = VrrpAlerts::default();
        alerts.reconfigure(&config);
        alerts
    }

    const INSTANCES: &str = "vrrp_instance A {\n interface lo\n virtual_router_id 1\n smtp_alert\n virtual_ipaddress {\n  192.0.2.1\n }\n}\nvrrp_instance B {\n interface lo\n virtual_router_id 2\n virtual_ipaddress {\n  192.0.2.2\n }\n}\nvrrp_sync_group G {\n group {\n  A\n  B\n }\n smtp_alert\n}\n";

    fn subjects(mails: &[Mail]) -> Vec<&str> {
        mails.iter().map(|m| m.subject.as_str()).collect()
    }

    #[test]
    fn each_state_is_mailed_once_and_groups_when_all_members_agree() {
        let mut alerts = alerts(INSTANCES);
        let mails = alerts.transition("A", State::Backup);
        assert_eq!(
            subjects(&mails),
            ["VRRP Instance A - Entering BACKUP state"]
        );
        assert_eq!(
            mails[0].body,
            "=> VRRP Instance is no longer owning VRRP VIPs <="
        );
        assert!(alerts.transition("A", State::Backup).is_empty());
        // B has no smtp_alert; the group is in BACKUP once B is.
        assert_eq!(
            subjects(&alerts.transition("B", State::Backup)),
            ["VRRP Group G - Entering BACKUP state"]
        );
        assert_eq!(
            subjects(&alerts.transition("A", State::Master)),
            ["VRRP Instance A - Entering MASTER state"]
        );
        let mails = alerts.transition("B", State::Master);
        assert_eq!(subjects(&mails), ["VRRP Group G - Entering MASTER state"]);
        assert_eq!(
            mails[0].body,
            "=> All VRRP group instances are now in MASTER state <="
        );
        assert_eq!(
            subjects(&alerts.stopping()),
            ["VRRP Instance A - Stopping", "VRRP Group G - Stopping"]
        );
    }

    #[test]
    fn no_email_faults_keeps_fault_quiet_and_globals_set_the_default() {
        let text = format!(
            "global_defs {{\n smtp_alert_vrrp\n no_email_faults\n}}\n{}",
            INSTANCES.replace(
                " smtp_alert\n virtual_ipaddress",
                " smtp_alert no\n virtual_ipaddress"
            )
        );
        let mut alerts = alerts(&text);
        // A says no; B follows smtp_alert_vrrp.
        assert!(alerts.transition("A", State::Master).is_empty());
        assert_eq!(
            subjects(&alerts.transition("B", State::Master)),
            [
                "VRRP Instance B - Entering MASTER state",
                "VRRP Group G - Entering MASTER state"
            ]
        );
        assert!(alerts.transition("B", State::Fault).is_empty());
        // After a quiet FAULT, BACKUP is a new state to mail.
        assert_eq!(
            subjects(&alerts.transition("B", State::Backup)),
            ["VRRP Instance B - Entering BACKUP state"]
        );
    }
}
