//! Which mails the checkers make, with keepalived's rules and words (sans IO): a real with
//! `smtp_alert` (else global `smtp_alert_checker`, else `smtp_alert`, else on) mails
//! when one of its checkers goes down or comes back, the subject saying whether the real
//! is up as a whole; a virtual server with `smtp_alert` (default off) mails when it loses
//! or regains its quorum.

use std::{collections::BTreeMap, net::IpAddr};

use super::Mail;
use crate::{
    check::health::RealKey,
    dataplane::diff::ServiceId,
    model::{Config, Protocol, VirtualServer, check::CheckKind},
};

/// What a real's mails say.
#[derive(Clone, Debug)]
struct RealAlert {
    real: String,
    service: String,
    /// Per checker, its kind's words.
    checkers: Vec<CheckWords>,
}

/// A checker kind's words in keepalived's bodies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum CheckWords {
    Tcp,
    Udp,
    Icmp,
    /// HTTP_GET, SSL_GET.
    Http,
    Dns,
    /// SMTP_CHECK: its failure's reason is in the body.
    Smtp,
    Misc,
    File,
}

impl CheckWords {
    fn of(kind: &CheckKind) -> Self {
        match kind {
            CheckKind::Tcp => Self::Tcp,
            CheckKind::Udp(_) => Self::Udp,
            CheckKind::Ping => Self::Icmp,
            CheckKind::Http(_) => Self::Http,
            CheckKind::Dns { .. } => Self::Dns,
            CheckKind::Smtp { .. } => Self::Smtp,
            CheckKind::Misc(_) => Self::Misc,
            CheckKind::File { .. } => Self::File,
        }
    }

    fn body(self, up: bool, reason: &str) -> String {
        let outcome = if up { "succeed" } else { "failed" };
        match self {
            Self::Tcp => format!("=> TCP CHECK {outcome} on service <="),
            Self::Udp => format!("=> UDP CHECK {outcome} on service <="),
            Self::Icmp => format!("=> ICMP CHECK {outcome} on service <="),
            Self::Http if up => "=> CHECK succeed on service <=".into(),
            Self::Http => "=> CHECK failed on service : HTTP request failed <=".into(),
            Self::Dns => format!("=> DNS_CHECK: {outcome} on service <="),
            Self::Smtp if up => "=> CHECK succeed on service <=".into(),
            Self::Smtp => format!("=> CHECK failed on service : {reason} <="),
            Self::Misc => format!(
                "=> MISC CHECK {} on service <=",
                if up { "succeeded" } else { "failed" }
            ),
            Self::File => format!(
                "=> FILE CHECK {} on service <=",
                if up { "succeeded" } else { "failed" }
            ),
        }
    }
}

/// What a virtual server's quorum mails say.
#[derive(Clone, Debug)]
struct ServiceAlert {
    service: String,
    quorum: u32,
    hysteresis: u32,
}

#[derive(Clone, Debug, Default)]
pub struct CheckAlerts {
    reals: BTreeMap<RealKey, RealAlert>,
    services: BTreeMap<ServiceId, ServiceAlert>,
}

impl CheckAlerts {
    /// The alerting reals and services of `config`.
    pub fn of(config: &Config) -> Self {
        let alerts = &config.alerts;
        let mut built = Self::default();
        for vs in &config.virtual_servers {
            let id = ServiceId::of(vs);
            let service = service_text(vs);
            if alerts.virtual_server(vs.extras.smtp_alert) {
                built.services.insert(
                    id,
                    ServiceAlert {
                        service: service.clone(),
                        quorum: vs.extras.quorum,
                        hysteresis: vs.extras.hysteresis,
                    },
                );
            }
            for real in vs.reals.iter().filter(|r| alerts.real_server(r.smtp_alert)) {
                let key = RealKey::of(id, real);
                let alert = RealAlert {
                    real: address_text(real.addr, vs.protocol, real.port),
                    service: service.clone(),
                    checkers: real
                        .checkers
                        .iter()
                        .map(|c| CheckWords::of(&c.kind))
                        .collect(),
                };
                built.reals.insert(key, alert);
            }
        }
        built
    }

    /// Checker `index` of `real` went up or down (`reason`: why it failed); the real is
    /// `alive` as a whole now.
    pub fn checker(
        &self,
        real: &RealKey,
        index: usize,
        up: bool,
        reason: &str,
        alive: bool,
    ) -> Option<Mail> {
        let alert = self.reals.get(real)?;
        let words = alert.checkers.get(index)?;
        Some(Mail {
            subject: format!(
                "Realserver {} of virtual server {} - {}",
                alert.real,
                alert.service,
                if alive { "UP" } else { "DOWN" }
            ),
            body: words.body(up, reason),
        })
    }

    /// `service` gained (`up`) or lost its quorum, its alive reals weighing `weight`.
    pub fn quorum(&self, service: &ServiceId, up: bool, weight: u64) -> Option<Mail> {
        let alert = self.services.get(service)?;
        // keepalived prints the threshold crossed after a plus sign either way.
        let threshold = if up {
            u64::from(alert.quorum) + u64::from(alert.hysteresis)
        } else {
            u64::from(alert.quorum).saturating_sub(u64::from(alert.hysteresis))
        };
        Some(Mail {
            subject: format!(
                "Virtualserver {} - {}",
                alert.service,
                if up { "UP" } else { "DOWN" }
            ),
            body: format!(
                "=> {} {}+{}={threshold} <= {weight} <=",
                if up { "Gained quorum" } else { "Lost quorum" },
                alert.quorum,
                alert.hysteresis
            ),
        })
    }
}

/// keepalived's `[ADDRESS]:PROTO:PORT`.
pub fn address_text(addr: IpAddr, protocol: Protocol, port: u16) -> String {
    let protocol = match protocol {
        Protocol::Tcp => "tcp",
        Protocol::Udp => "udp",
    };
    format!("[{addr}]:{protocol}:{port}")
}

/// keepalived's name of a virtual server in mails: `FWM N`, else its address.
pub fn service_text(vs: &VirtualServer) -> String {
    match vs.fwmark {
        Some(mark) => format!("FWM {mark}"),
        None => address_text(vs.addr, vs.protocol, vs.port),
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    const CONFIG: &str = "virtual_server 192.0.2.10 80 {\n lb_kind DR\n protocol TCP\n quorum 2\n hysteresis 1\n smtp_alert\n real_server 198.51.100.1 80 {\n  weight 2\n  TCP_CHECK {\n  }\n  HTTP_GET {\n   url {\n    path /\n   }\n  }\n }\n real_server 198.51.100.2 80 {\n  smtp_alert no\n  TCP_CHECK {\n  }\n }\n}\n";

    #[test]
    fn reals_alert_by_default_with_keepalived_words() {
        let config = lb_config::parse(CONFIG, Path::new("t.conf"))
            .unwrap()
            .config;
        let alerts = CheckAlerts::of(&config);
        let vs = &config.virtual_servers[0];
        let key = |n: usize| RealKey::of(ServiceId::of(vs), &vs.reals[n]);
        let mail = alerts.checker(&key(0), 0, false, "refused", false).unwrap();
        assert_eq!(
            mail.subject,
            "Realserver [198.51.100.1]:tcp:80 of virtual server [192.0.2.10]:tcp:80 - DOWN"
        );
        assert_eq!(mail.body, "=> TCP CHECK failed on service <=");
        let mail = alerts.checker(&key(0), 1, true, "", true).unwrap();
        assert_eq!(mail.body, "=> CHECK succeed on service <=");
        assert!(alerts.checker(&key(1), 0, false, "x", false).is_none());
        let mail = alerts.quorum(&ServiceId::of(vs), false, 0).unwrap();
        assert_eq!(mail.subject, "Virtualserver [192.0.2.10]:tcp:80 - DOWN");
        assert_eq!(mail.body, "=> Lost quorum 2+1=1 <= 0 <=");
    }
}
