//! Prometheus metrics (text exposition format 0.0.4) on `lbd --metrics-address`: traffic
//! per virtual service and per real, packets per outcome (drops by reason), VRRP state
//! and counters, checker results and probe latency. Names follow Prometheus conventions:
//! `lbd_` prefix, base units, `_total` for counters. Also the XDP flow table's upkeep:
//! live flows, scans, expiries, count corrections, and the time and CPU of the last scan.
//! The connection sync's are in `sync`.
//!
//! Each scrape reads the pinned maps and the status tables anew, on a blocking thread (a
//! scrape reads thousands of map entries; the control plane's tasks must not wait behind
//! it); the server answers `GET /metrics` only.

mod sync;

use std::{fmt::Write as _, net::SocketAddr, path::PathBuf};

use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpListener, TcpStream},
};
use tracing::{info, warn};

pub use sync::render_sync;

use crate::{
    dataplane::{Counters, Traffic, UpkeepStats},
    status::{CheckStatus, CheckTable, LATENCY_BUCKETS, UpkeepTable, VrrpStatus, VrrpTable},
};

/// A label value with `\`, `"` and newlines escaped.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Writes metric families: each `# HELP`/`# TYPE` once, before its first sample.
struct Exposition {
    text: String,
    declared: std::collections::BTreeSet<&'static str>,
}

impl Exposition {
    fn new() -> Self {
        Self {
            text: String::new(),
            declared: Default::default(),
        }
    }

    fn sample(
        &mut self,
        name: &'static str,
        kind: &str,
        help: &str,
        labels: &[(&str, &str)],
        value: impl std::fmt::Display,
    ) {
        self.sample_as(name, name, kind, help, labels, value);
    }

    /// A sample of family `family` under the series name `series` (histogram parts).
    fn sample_as(
        &mut self,
        family: &'static str,
        series: &str,
        kind: &str,
        help: &str,
        labels: &[(&str, &str)],
        value: impl std::fmt::Display,
    ) {
        if self.declared.insert(family) {
            let _ = writeln!(self.text, "# HELP {family} {help}\n# TYPE {family} {kind}");
        }
        self.text.push_str(series);
        if !labels.is_empty() {
            self.text.push('{');
            for (i, (key, value)) in labels.iter().enumerate() {
                if i > 0 {
                    self.text.push(',');
                }
                let _ = write!(self.text, "{key}=\"{}\"", escape(value));
            }
            self.text.push('}');
        }
        let _ = writeln!(self.text, " {value}");
    }
}

fn traffic(out: &mut Exposition, prefix: Prefix, labels: &[(&str, &str)], t: &Traffic) {
    let with = |direction: &'static str| {
        let mut all = labels.to_vec();
        all.push(("direction", direction));
        all
    };
    out.sample(
        prefix.packets,
        "counter",
        "Packets forwarded: in from clients, out the translated replies (NAT, FNAT).",
        &with("in"),
        t.packets,
    );
    out.sample(prefix.packets, "counter", "", &with("out"), t.out_packets);
    out.sample(
        prefix.bytes,
        "counter",
        "Bytes forwarded, as the packets.",
        &with("in"),
        t.bytes,
    );
    out.sample(prefix.bytes, "counter", "", &with("out"), t.out_bytes);
    out.sample(
        prefix.connections,
        "counter",
        "Connections scheduled.",
        labels,
        t.new_flows,
    );
}

#[derive(Clone, Copy)]
struct Prefix {
    packets: &'static str,
    bytes: &'static str,
    connections: &'static str,
}

const SERVICE: Prefix = Prefix {
    packets: "lbd_service_packets_total",
    bytes: "lbd_service_bytes_total",
    connections: "lbd_service_connections_total",
};

const REAL: Prefix = Prefix {
    packets: "lbd_real_packets_total",
    bytes: "lbd_real_bytes_total",
    connections: "lbd_real_connections_total",
};

fn data_plane(out: &mut Exposition, counters: &Counters) {
    for (outcome, n) in &counters.outcomes {
        let action = match outcome.xdp_action() {
            lb_common::xdp_action::XDP_DROP => "drop",
            lb_common::xdp_action::XDP_PASS => "pass",
            lb_common::xdp_action::XDP_TX => "tx",
            lb_common::xdp_action::XDP_REDIRECT => "redirect",
            _ => "aborted",
        };
        out.sample(
            "lbd_xdp_packets_total",
            "counter",
            "Packets seen by the XDP balancer, by outcome and XDP action.",
            &[("outcome", outcome.name()), ("action", action)],
            n,
        );
    }
    for (outcome, n) in &counters.outcomes {
        if outcome.xdp_action() == lb_common::xdp_action::XDP_DROP {
            out.sample(
                "lbd_dropped_packets_total",
                "counter",
                "Packets the XDP balancer dropped, by reason.",
                &[("reason", outcome.name())],
                n,
            );
        }
    }
    for service in &counters.services {
        let (vip, port) = (service.addr.to_string(), service.port.to_string());
        let mark = service.fwmark.map(|m| m.to_string());
        let mut labels = vec![
            ("protocol", service.protocol.name()),
            ("vip", vip.as_str()),
            ("port", port.as_str()),
        ];
        // A firewall-mark service: its mark (its vip is the family's unspecified
        // address, its port 0).
        if let Some(mark) = &mark {
            labels.push(("fwmark", mark));
        }
        traffic(out, SERVICE, &labels, &service.traffic);
        for real in service.reals.iter().filter(|r| !r.retired) {
            let real_addr = real.addr.to_string();
            let real_port = real.port.to_string();
            let mut labels = labels.clone();
            labels.push(("real", &real_addr));
            labels.push(("real_port", &real_port));
            traffic(out, REAL, &labels, &real.traffic);
            out.sample(
                "lbd_real_active_connections",
                "gauge",
                "Connections in an active state (ipvsadm's ActiveConn).",
                &labels,
                real.active_conns,
            );
            out.sample(
                "lbd_real_inactive_connections",
                "gauge",
                "Connections in another state (ipvsadm's InActConn).",
                &labels,
                real.inactive_conns,
            );
            out.sample(
                "lbd_real_weight",
                "gauge",
                "The weight the data plane schedules with (0: no new connections).",
                &labels,
                real.weight,
            );
        }
    }
}

fn vrrp(out: &mut Exposition, instances: &[VrrpStatus]) {
    for i in instances {
        let instance = [("instance", i.name.as_str())];
        for state in ["INIT", "BACKUP", "MASTER", "FAULT"] {
            out.sample(
                "lbd_vrrp_state",
                "gauge",
                "1 for the state the VRRP instance is in, 0 for the others.",
                &[("instance", &i.name), ("state", &state.to_lowercase())],
                u8::from(i.state == state),
            );
        }
        out.sample(
            "lbd_vrrp_priority",
            "gauge",
            "The VRRP priority in effect (tracking applied).",
            &instance,
            i.priority,
        );
        let c = &i.counters;
        for (name, help, value) in [
            (
                "lbd_vrrp_transitions_total",
                "VRRP state changes.",
                c.transitions,
            ),
            (
                "lbd_vrrp_adverts_received_total",
                "VRRP adverts received and accepted.",
                c.adverts_received,
            ),
            (
                "lbd_vrrp_adverts_sent_total",
                "VRRP adverts sent.",
                c.adverts_sent,
            ),
            (
                "lbd_vrrp_became_master_total",
                "Transitions to MASTER.",
                c.became_master,
            ),
            (
                "lbd_vrrp_released_master_total",
                "Transitions out of MASTER.",
                c.released_master,
            ),
            (
                "lbd_vrrp_priority_zero_received_total",
                "Adverts of priority 0 (a master leaving) received.",
                c.priority_zero_received,
            ),
            (
                "lbd_vrrp_priority_zero_sent_total",
                "Adverts of priority 0 sent.",
                c.priority_zero_sent,
            ),
        ] {
            out.sample(name, "counter", help, &instance, value);
        }
        for (reason, value) in [
            ("invalid", c.invalid_packets),
            ("ttl", c.ttl_errors),
            ("version", c.version_errors),
            ("auth", c.auth_errors),
        ] {
            out.sample(
                "lbd_vrrp_rejected_packets_total",
                "counter",
                "VRRP packets refused, by reason.",
                &[("instance", &i.name), ("reason", reason)],
                value,
            );
        }
    }
}

fn checks(out: &mut Exposition, checks: &[CheckStatus]) {
    for c in checks {
        let real = c.real.to_string();
        let port = c.port.to_string();
        let index = c.index.to_string();
        let labels = [
            ("service", c.service.as_str()),
            ("real", &real),
            ("real_port", &port),
            ("check", &c.kind),
            ("index", &index),
        ];
        out.sample(
            "lbd_check_up",
            "gauge",
            "1 while the checker passes (its retries not spent), 0 once it failed.",
            &labels,
            u8::from(c.up),
        );
        out.sample(
            "lbd_check_probes_total",
            "counter",
            "Probes run by the checker.",
            &labels,
            c.probes,
        );
        out.sample(
            "lbd_check_failures_total",
            "counter",
            "Probes that failed.",
            &labels,
            c.failures,
        );
        let mut cumulative = 0;
        for (i, bound) in LATENCY_BUCKETS.iter().enumerate() {
            cumulative += c.latency_buckets.get(i).copied().unwrap_or(0);
            let le = bound.to_string();
            let mut with = labels.to_vec();
            with.push(("le", &le));
            out.sample_as(
                "lbd_check_duration_seconds",
                "lbd_check_duration_seconds_bucket",
                "histogram",
                "How long probes took.",
                &with,
                cumulative,
            );
        }
        let mut with = labels.to_vec();
        with.push(("le", "+Inf"));
        out.sample_as(
            "lbd_check_duration_seconds",
            "lbd_check_duration_seconds_bucket",
            "histogram",
            "",
            &with,
            c.probes,
        );
        out.sample_as(
            "lbd_check_duration_seconds",
            "lbd_check_duration_seconds_sum",
            "histogram",
            "",
            &labels,
            c.latency_sum_seconds,
        );
        out.sample_as(
            "lbd_check_duration_seconds",
            "lbd_check_duration_seconds_count",
            "histogram",
            "",
            &labels,
            c.probes,
        );
    }
}

/// The exposition of everything given.
pub fn render(
    counters: Option<&Counters>,
    instances: &[VrrpStatus],
    checkers: &[CheckStatus],
) -> String {
    let mut out = Exposition::new();
    if let Some(counters) = counters {
        data_plane(&mut out, counters);
    }
    vrrp(&mut out, instances);
    checks(&mut out, checkers);
    out.text
}

/// The exposition of the XDP flow table's upkeep.
pub fn render_upkeep(stats: &UpkeepStats) -> String {
    let mut out = Exposition::new();
    let rows: [(&'static str, &str, &str, f64); 7] = [
        (
            "lbd_flow_table_flows",
            "gauge",
            "Live flows in the XDP flow table at its last scan.",
            stats.flows as f64,
        ),
        (
            "lbd_flow_table_scans_total",
            "counter",
            "Full scans of the flow table.",
            stats.scans as f64,
        ),
        (
            "lbd_flow_table_expired_total",
            "counter",
            "Flows removed from the flow table because they timed out.",
            stats.expired as f64,
        ),
        (
            "lbd_conn_count_corrections_total",
            "counter",
            "Times a real's connection counts were corrected against a scan (flows the LRU evicted).",
            stats.corrections as f64,
        ),
        (
            "lbd_flow_table_queued_flows",
            "gauge",
            "Flows waiting to be removed at the moment they time out.",
            stats.queued as f64,
        ),
        (
            "lbd_flow_table_last_scan_seconds",
            "gauge",
            "Wall time of the last full scan of the flow table, from its first step to its last.",
            stats.last_scan_seconds,
        ),
        (
            "lbd_flow_table_last_scan_cpu_seconds",
            "gauge",
            "CPU time the last full scan of the flow table used.",
            stats.last_scan_cpu_seconds,
        ),
    ];
    for (name, kind, help, value) in rows {
        out.sample(name, kind, help, &[], value);
    }
    out.text
}

/// Where a scrape reads the data plane's counters.
#[derive(Clone, Debug)]
pub enum CounterSource {
    /// No data plane (lbd -P).
    None,
    /// The XDP data plane's maps, pinned in this directory.
    Pinned(PathBuf),
    /// The kernel's IPVS.
    Ipvs,
}

/// Where a scrape reads from.
#[derive(Clone)]
pub struct Sources {
    pub counters: CounterSource,
    pub vrrp: VrrpTable,
    pub checks: CheckTable,
    pub upkeep: UpkeepTable,
    /// Connection sync, when it runs.
    pub sync: Option<crate::sync::SyncSource>,
}

impl Sources {
    fn scrape(&self) -> String {
        let counters = match &self.counters {
            CounterSource::None => None,
            CounterSource::Pinned(dir) => Some(crate::dataplane::xdp::read_pinned_counters(dir)),
            CounterSource::Ipvs => Some(
                crate::dataplane::ipvs::IpvsDataplane::open()
                    .and_then(|ipvs| crate::dataplane::Dataplane::counters(&ipvs)),
            ),
        }
        .and_then(|counters| counters.map_err(|e| warn!("metrics: {e}")).ok());
        let mut text = render(
            counters.as_ref(),
            &crate::status::rows(&self.vrrp),
            &crate::status::rows(&self.checks),
        );
        let upkeep = *self.upkeep.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(stats) = upkeep {
            text.push_str(&render_upkeep(&stats));
        }
        if let Some(sync) = &self.sync {
            text.push_str(&render_sync(&sync.view()));
        }
        text
    }
}

/// Longest request head read.
const MAX_HEAD: usize = 8192;

/// Serve `GET /metrics` on `addr` until the task is aborted.
pub async fn serve(listener: TcpListener, sources: Sources) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let sources = sources.clone();
                tokio::spawn(async move {
                    if let Err(e) = answer(stream, &sources).await {
                        tracing::debug!("metrics: {e}");
                    }
                });
            }
            Err(e) => {
                warn!("metrics: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    }
}

/// Listen on `addr` for `serve`.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let listener = TcpListener::bind(addr).await?;
    info!("metrics on http://{addr}/metrics");
    Ok(listener)
}

async fn answer(mut stream: TcpStream, sources: &Sources) -> std::io::Result<()> {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    let read = tokio::time::timeout(std::time::Duration::from_secs(5), async {
        while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < MAX_HEAD {
            let n = stream.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            head.extend_from_slice(&buf[..n]);
        }
        Ok::<_, std::io::Error>(())
    })
    .await;
    if !matches!(read, Ok(Ok(()))) {
        return Ok(());
    }
    let request = String::from_utf8_lossy(&head);
    let target = request.split_whitespace().take(2).collect::<Vec<_>>();
    let (status, kind, body) = match target.as_slice() {
        ["GET", path] if *path == "/metrics" || path.starts_with("/metrics?") => {
            let sources = sources.clone();
            let body = tokio::task::spawn_blocking(move || sources.scrape())
                .await
                .map_err(std::io::Error::other)?;
            ("200 OK", "text/plain; version=0.0.4; charset=utf-8", body)
        }
        ["GET", _] => ("404 Not Found", "text/plain", "see /metrics\n".to_owned()),
        _ => (
            "405 Method Not Allowed",
            "text/plain",
            "GET /metrics\n".to_owned(),
        ),
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }

    #[test]
    fn families_are_declared_once_and_histograms_are_cumulative() {
        let check = CheckStatus {
            service: "TCP 10.0.0.100:80".into(),
            real: "10.0.1.2".parse().unwrap(),
            port: 80,
            kind: "TCP_CHECK".into(),
            up: true,
            probes: 3,
            latency_buckets: vec![1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 1],
            latency_sum_seconds: 2.5,
            ..CheckStatus::default()
        };
        let text = render(None, &[], &[check.clone(), check]);
        assert_eq!(
            text.matches("# TYPE lbd_check_duration_seconds histogram")
                .count(),
            1
        );
        assert!(text.contains("lbd_check_duration_seconds_bucket{service=\"TCP 10.0.0.100:80\",real=\"10.0.1.2\",real_port=\"80\",check=\"TCP_CHECK\",index=\"0\",le=\"0.0025\"} 2\n"));
        assert!(text.contains(",le=\"+Inf\"} 3\n"));
        assert!(text.contains("lbd_check_duration_seconds_count{service=\"TCP 10.0.0.100:80\",real=\"10.0.1.2\",real_port=\"80\",check=\"TCP_CHECK\",index=\"0\"} 3\n"));
    }
}
