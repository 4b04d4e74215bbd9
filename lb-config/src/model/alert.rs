//! SMTP alerts as keepalived configures them: where mail goes (global_defs
//! `notification_email`, `notification_email_from`, `smtp_server`, `smtp_helo_name`,
//! `smtp_connect_timeout`) and which events send one (`smtp_alert` globally and per
//! block, `smtp_alert_vrrp`, `smtp_alert_checker`, `no_email_faults`). The rule that
//! decides whether a block alerts lives here, once.

use std::time::Duration;

use serde::Serialize;

/// keepalived's `smtp_connect_timeout` default.
pub const DEFAULT_SMTP_CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// keepalived's SMTP port.
pub const DEFAULT_SMTP_PORT: u16 = 25;

/// The global SMTP settings.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SmtpAlerts {
    /// `notification_email { ADDR ... }`: the recipients, in file order.
    pub notification_email: Vec<String>,
    /// `notification_email_from ADDR` (keepalived's default: `USER@HOSTNAME`).
    pub notification_email_from: Option<String>,
    /// `smtp_server ADDR|NAME [PORT]`.
    pub smtp_server: Option<SmtpServer>,
    /// `smtp_helo_name NAME` (keepalived's default: the host's name).
    pub smtp_helo_name: Option<String>,
    /// `smtp_connect_timeout SECS`: for the connection and for each reply.
    pub smtp_connect_timeout: Duration,
    /// `smtp_alert [BOOL]`: the default of every block.
    pub smtp_alert: Option<bool>,
    /// `smtp_alert_vrrp [BOOL]`: the default of VRRP instances and sync groups.
    pub smtp_alert_vrrp: Option<bool>,
    /// `smtp_alert_checker [BOOL]`: the default of virtual and real servers.
    pub smtp_alert_checker: Option<bool>,
    /// `no_email_faults`: no mail when a VRRP instance or group enters FAULT.
    pub no_email_faults: bool,
}

impl Default for SmtpAlerts {
    fn default() -> Self {
        Self {
            notification_email: Vec::new(),
            notification_email_from: None,
            smtp_server: None,
            smtp_helo_name: None,
            smtp_connect_timeout: DEFAULT_SMTP_CONNECT_TIMEOUT,
            smtp_alert: None,
            smtp_alert_vrrp: None,
            smtp_alert_checker: None,
            no_email_faults: false,
        }
    }
}

/// `smtp_server`: an address or a host name, resolved when a mail is sent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SmtpServer {
    pub host: String,
    pub port: u16,
}

impl SmtpAlerts {
    /// Whether mail can go anywhere: keepalived sends nothing without recipients or a
    /// server.
    pub fn configured(&self) -> bool {
        !self.notification_email.is_empty() && self.smtp_server.is_some()
    }

    /// Whether a VRRP instance or sync group with its own `smtp_alert` (if any) alerts:
    /// its own, else `smtp_alert_vrrp`, else `smtp_alert`, else not.
    pub fn vrrp(&self, own: Option<bool>) -> bool {
        own.or(self.smtp_alert_vrrp)
            .or(self.smtp_alert)
            .unwrap_or(false)
    }

    /// Whether a virtual server alerts (its quorum): its own, else `smtp_alert_checker`,
    /// else `smtp_alert`, else not.
    pub fn virtual_server(&self, own: Option<bool>) -> bool {
        own.or(self.smtp_alert_checker)
            .or(self.smtp_alert)
            .unwrap_or(false)
    }

    /// Whether a real server alerts (its checks): as a virtual server, but on unless
    /// something says otherwise (keepalived keeps this default for compatibility).
    pub fn real_server(&self, own: Option<bool>) -> bool {
        own.or(self.smtp_alert_checker)
            .or(self.smtp_alert)
            .unwrap_or(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_nearest_setting_decides_and_reals_alert_by_default() {
        let mut alerts = SmtpAlerts::default();
        assert!(!alerts.vrrp(None));
        assert!(!alerts.virtual_server(None));
        assert!(alerts.real_server(None));
        assert!(alerts.vrrp(Some(true)));
        alerts.smtp_alert = Some(true);
        assert!(alerts.vrrp(None) && alerts.virtual_server(None));
        alerts.smtp_alert_vrrp = Some(false);
        assert!(!alerts.vrrp(None));
        assert!(alerts.vrrp(Some(true)));
        alerts.smtp_alert_checker = Some(false);
        assert!(!alerts.real_server(None) && !alerts.virtual_server(None));
        assert!(alerts.real_server(Some(true)));
    }
}
