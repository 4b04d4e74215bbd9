//! Health checkers of real servers (`TCP_CHECK`, `HTTP_GET`, `SSL_GET`, `MISC_CHECK`,
//! `SMTP_CHECK`, `DNS_CHECK`, `UDP_CHECK`, `PING_CHECK`, `FILE_CHECK`), with keepalived's
//! defaults; the timing settings a checker leaves out come from its real server, then its
//! virtual server.

use std::{net::IpAddr, time::Duration};

use serde::Serialize;

/// One checker of a real server.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Checker {
    pub kind: CheckKind,
    /// Where the check connects (default: the real's address and port).
    pub connect_ip: Option<IpAddr>,
    pub connect_port: Option<u16>,
    pub bindto: Option<IpAddr>,
    pub bind_port: Option<u16>,
    pub bind_if: Option<String>,
    pub fwmark: Option<u32>,
    /// `connect_timeout` (default 5 s).
    pub connect_timeout: Duration,
    /// `retry` (and the deprecated `nb_get_retry`): failures after the first before the
    /// real is down (default 1; MISC_CHECK 0; DNS_CHECK 3).
    pub retry: u32,
    /// `delay_before_retry` (default 1 s; HTTP_GET and SSL_GET 3 s; DNS_CHECK the
    /// delay_loop).
    pub delay_before_retry: Duration,
    /// `warmup`: at most this long a random wait before the first check (default: up to
    /// the delay_loop).
    pub warmup: Option<Duration>,
    /// `delay_loop`: between checks (default the virtual server's, 60 s).
    pub delay_loop: Duration,
    pub log_all_failures: bool,
    /// `alpha` in the checker: it starts failing until its first pass (the virtual
    /// server's `alpha` does so for all its checkers).
    pub alpha: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub enum CheckKind {
    Tcp,
    /// `HTTP_GET` (`tls` false) and `SSL_GET` (`tls` true).
    Http(HttpCheck),
    Misc(MiscCheck),
    Smtp {
        /// `helo_name` (default `smtpchecker.keepalived.org`).
        helo_name: String,
    },
    Dns {
        /// `type` (default SOA).
        query_type: String,
        /// `name` (default `.`).
        name: String,
    },
    Udp(UdpCheck),
    Ping,
    File {
        track_file: String,
        weight: Option<i32>,
        reverse: bool,
    },
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct HttpCheck {
    pub tls: bool,
    pub urls: Vec<Url>,
    pub virtualhost: Option<String>,
    /// `http_protocol` 1.0, 1.0C or 1.1 (default 1.0).
    pub http_protocol: Option<String>,
    pub enable_sni: bool,
    pub sni_name: Option<String>,
    pub fast_recovery: bool,
}

/// `url { path ... digest ... status_code ... }`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Url {
    pub path: String,
    /// The MD5 of the body, hex.
    pub digest: Option<String>,
    /// Accepted status codes as ranges (default 200-299).
    pub status_code: Vec<(u16, u16)>,
    pub virtualhost: Option<String>,
    pub regex: Option<String>,
    pub regex_no_match: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct MiscCheck {
    /// `misc_path`: the command line.
    pub path: String,
    /// `misc_timeout` (default the delay_loop).
    pub timeout: Option<Duration>,
    /// `misc_dynamic`: the exit code sets the weight (2..=255 → weight - 2).
    pub dynamic: bool,
    pub user: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct UdpCheck {
    /// `payload`, hex.
    pub payload: Option<String>,
    pub require_reply: Option<String>,
    /// `min_reply_length` (default 0) and `max_reply_length` (default 255).
    pub min_reply_length: u32,
    pub max_reply_length: u32,
}

/// A `track_file NAME { file PATH; weight W [reverse] }` block: a file holding a number,
/// which FILE_CHECK turns into a real's weight (keepalived's `vrrp_track_file` is the
/// deprecated spelling).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TrackFile {
    pub name: String,
    pub file: String,
    /// The multiplier of the value read (default 1); 0 makes any non-zero value a failure.
    pub weight: i32,
    pub reverse: bool,
}
