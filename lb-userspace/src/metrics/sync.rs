//! The exposition of the connection sync's counters (`lbd_sync_*`): the sync daemon's
//! role and traffic, and the failback's resyncs.

use super::Exposition;
use crate::status::SyncView;

/// The exposition of connection sync's counters.
pub fn render_sync(view: &SyncView) -> String {
    let mut out = Exposition::new();
    for (role, label) in [
        ("MASTER", "master"),
        ("BACKUP", "backup"),
        ("IDLE", "idle"),
        ("MASTER+BACKUP", "master_backup"),
    ] {
        out.sample(
            "lbd_sync_role",
            "gauge",
            "1 for the role the sync daemon has (master sends, backup receives, master_backup both: no VRRP instance), 0 for the others.",
            &[("role", label)],
            u8::from(view.role == role),
        );
    }
    for (name, help, value) in [
        (
            "lbd_sync_messages_sent_total",
            "Sync messages sent.",
            view.messages_sent,
        ),
        (
            "lbd_sync_connections_sent_total",
            "Connection records sent.",
            view.conns_sent,
        ),
        (
            "lbd_sync_messages_received_total",
            "Sync messages taken.",
            view.messages_received,
        ),
        (
            "lbd_sync_connections_received_total",
            "Connection records taken.",
            view.conns_received,
        ),
        (
            "lbd_sync_connections_installed_total",
            "Received connections written into the flow table.",
            view.installed,
        ),
        (
            "lbd_sync_connections_refused_total",
            "Received connections for a service or real this director lacks.",
            view.install_errors,
        ),
        (
            "lbd_sync_messages_other_syncid_total",
            "Messages of another sync id, dropped.",
            view.other_syncid,
        ),
        (
            "lbd_sync_messages_malformed_total",
            "Malformed messages, dropped.",
            view.malformed,
        ),
        (
            "lbd_sync_connections_resent_total",
            "Flows resent by the master's walks of its table.",
            view.refreshed,
        ),
        (
            "lbd_sync_send_errors_total",
            "Messages the socket would not take.",
            view.send_errors,
        ),
        (
            "lbd_sync_resync_requests_sent_total",
            "Resync requests this director sent, coming back as backup (again included).",
            view.resync_requests_sent,
        ),
        (
            "lbd_sync_resync_requests_served_total",
            "Resync requests this director answered as master.",
            view.resync_requests_served,
        ),
        (
            "lbd_sync_resync_connections_served_total",
            "Connections sent in answer to resync requests.",
            view.resync_conns_served,
        ),
        (
            "lbd_sync_resync_messages_dropped_total",
            "Resync messages dropped: malformed, another sync id, or not for this director.",
            view.resync_dropped,
        ),
    ] {
        out.sample(name, "counter", help, &[], value);
    }
    for (outcome, value) in [
        ("complete", view.resyncs_completed),
        ("timed_out", view.resyncs_timed_out),
    ] {
        out.sample(
            "lbd_sync_resyncs_total",
            "counter",
            "Resyncs this director asked for, by how they ended: the master's connections in, or the wait over.",
            &[("outcome", outcome)],
            value,
        );
    }
    out.sample(
        "lbd_sync_preemption_held",
        "gauge",
        "1 while VRRP preemption is held until the master's connections are in.",
        &[],
        u8::from(view.holds_preemption),
    );
    out.text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sync_shows_its_role_and_counters() {
        let view = SyncView {
            role: "BACKUP".into(),
            conns_received: 40,
            installed: 38,
            install_errors: 2,
            holds_preemption: true,
            resyncs_completed: 3,
            resync_conns_served: 7,
            ..Default::default()
        };
        let text = render_sync(&view);
        assert!(
            text.contains("lbd_sync_role{role=\"backup\"} 1\n"),
            "{text}"
        );
        assert!(text.contains("lbd_sync_role{role=\"master\"} 0\n"));
        assert!(text.contains("lbd_sync_connections_received_total 40\n"));
        assert!(text.contains("lbd_sync_connections_installed_total 38\n"));
        assert!(text.contains("lbd_sync_connections_refused_total 2\n"));
        assert!(text.contains("lbd_sync_preemption_held 1\n"));
        assert!(text.contains("lbd_sync_resyncs_total{outcome=\"complete\"} 3\n"));
        assert!(text.contains("lbd_sync_resync_connections_served_total 7\n"));
    }
}
