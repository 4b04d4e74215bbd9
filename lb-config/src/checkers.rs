//! The checker blocks of a `real_server` into the model, with keepalived's defaults: the
//! timing settings (`connect_timeout`, `retry`, `delay_before_retry`, `warmup`,
//! `delay_loop`) a checker leaves out come from its real server, then its virtual server,
//! then keepalived's defaults for the checker's kind.

use std::{net::IpAddr, time::Duration};

use super::{
    Diagnostic,
    keywords::{Block, not_used},
    tree::Statement,
    values::{
        addr_arg, no_value, parse_in_range, parse_seconds, parse_seconds_or_zero, port_arg,
        rest_of_line, single_arg, weight_args,
    },
};
use crate::model::check::{CheckKind, Checker, HttpCheck, MiscCheck, TrackFile, UdpCheck, Url};

/// The checker keywords of a real server.
pub const CHECKERS: [&str; 9] = [
    "TCP_CHECK",
    "HTTP_GET",
    "SSL_GET",
    "MISC_CHECK",
    "SMTP_CHECK",
    "DNS_CHECK",
    "UDP_CHECK",
    "PING_CHECK",
    "FILE_CHECK",
];

/// Timing settings written at one level (virtual server, real server, checker); `None`
/// where that level leaves it to the next one out.
#[derive(Clone, Copy, Debug, Default)]
pub struct Timing {
    pub connect_timeout: Option<Duration>,
    pub retry: Option<u32>,
    pub delay_before_retry: Option<Duration>,
    pub warmup: Option<Duration>,
    pub delay_loop: Option<Duration>,
}

impl Timing {
    /// `self`, with what it leaves out taken from `outer`.
    pub fn or(self, outer: Timing) -> Timing {
        Timing {
            connect_timeout: self.connect_timeout.or(outer.connect_timeout),
            retry: self.retry.or(outer.retry),
            delay_before_retry: self.delay_before_retry.or(outer.delay_before_retry),
            warmup: self.warmup.or(outer.warmup),
            delay_loop: self.delay_loop.or(outer.delay_loop),
        }
    }

    /// Read a timing keyword into `self`; whether `item` was one (its value may have been
    /// wrong, reported).
    pub fn read(&mut self, item: &Statement, diagnostics: &mut Vec<Diagnostic>) -> bool {
        let at = item.location();
        let seconds = |diagnostics: &mut Vec<Diagnostic>| {
            single_arg(item, diagnostics).and_then(|v| parse_seconds(v, at, diagnostics))
        };
        // keepalived allows 0 for these two.
        let zero_or_more = |diagnostics: &mut Vec<Diagnostic>| {
            single_arg(item, diagnostics).and_then(|v| parse_seconds_or_zero(v, at, diagnostics))
        };
        match item.name() {
            "connect_timeout" => self.connect_timeout = seconds(diagnostics),
            "delay_before_retry" => self.delay_before_retry = zero_or_more(diagnostics),
            "warmup" => self.warmup = zero_or_more(diagnostics),
            "delay_loop" => self.delay_loop = seconds(diagnostics),
            "retry" => self.retry = parse_in_range(item, 0..=u32::MAX, diagnostics),
            _ => return false,
        }
        true
    }
}

/// keepalived's defaults.
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const DEFAULT_DELAY_LOOP: Duration = Duration::from_secs(60);

/// A checker block; `outer` is the timing of its real server and virtual server. One
/// block is one checker, except SMTP_CHECK with keepalived's deprecated `host { ... }`
/// blocks: each host is a checker of its own, with the block's settings and the host's
/// connection; the block's own connection is checked too only when it sets any
/// connection setting (else the first host takes its place), as keepalived does.
pub fn checker(item: &Statement, outer: Timing, diagnostics: &mut Vec<Diagnostic>) -> Vec<Checker> {
    let mut hosts = Vec::new();
    let Some((main, own_connection)) = one_checker(item, outer, &mut hosts, diagnostics) else {
        return Vec::new();
    };
    let mut checkers = Vec::new();
    if own_connection || hosts.is_empty() {
        checkers.push(main.clone());
    }
    for host in hosts {
        let mut checker = main.clone();
        host.apply(&mut checker);
        checkers.push(checker);
    }
    checkers
}

/// The connection settings of an SMTP_CHECK `host { ... }` block (keepalived's
/// deprecated form of several SMTP checkers in one); unset ones come from the real.
#[derive(Clone, Debug, Default)]
struct HostConnection {
    connect_ip: Option<IpAddr>,
    connect_port: Option<u16>,
    bindto: Option<IpAddr>,
    bind_port: Option<u16>,
    bind_if: Option<String>,
    fwmark: Option<u32>,
    connect_timeout: Option<Duration>,
}

impl HostConnection {
    /// A connection keyword into `self`; whether it was one.
    fn read(&mut self, line: &Statement, diagnostics: &mut Vec<Diagnostic>) -> bool {
        let at = line.location();
        match line.name() {
            "connect_ip" => self.connect_ip = addr_arg(line, diagnostics),
            "connect_port" => self.connect_port = port_arg(line, diagnostics),
            "bindto" => self.bindto = addr_arg(line, diagnostics),
            "bind_port" => self.bind_port = port_arg(line, diagnostics),
            "bind_if" => self.bind_if = single_arg(line, diagnostics).map(str::to_owned),
            "fwmark" => self.fwmark = parse_in_range(line, 0..=u32::MAX, diagnostics),
            "connect_timeout" => {
                self.connect_timeout =
                    single_arg(line, diagnostics).and_then(|v| parse_seconds(v, at, diagnostics))
            }
            _ => return false,
        }
        true
    }

    fn is_set(&self) -> bool {
        self.connect_ip.is_some()
            || self.connect_port.is_some()
            || self.bindto.is_some()
            || self.bind_port.is_some()
            || self.bind_if.is_some()
            || self.fwmark.is_some()
            || self.connect_timeout.is_some()
    }

    /// This host's connection in place of the checker's.
    fn apply(self, checker: &mut Checker) {
        checker.connect_ip = self.connect_ip;
        checker.connect_port = self.connect_port;
        checker.bindto = self.bindto;
        checker.bind_port = self.bind_port;
        checker.bind_if = self.bind_if;
        checker.fwmark = self.fwmark;
        if let Some(timeout) = self.connect_timeout {
            checker.connect_timeout = timeout;
        }
    }
}

/// One checker block, with the `host` blocks of an SMTP_CHECK put in `hosts`; and
/// whether the block sets a connection setting of its own.
fn one_checker(
    item: &Statement,
    outer: Timing,
    hosts: &mut Vec<HostConnection>,
    diagnostics: &mut Vec<Diagnostic>,
) -> Option<(Checker, bool)> {
    let mut timing = Timing::default();
    let mut checker = Checker {
        kind: CheckKind::Tcp,
        connect_ip: None,
        connect_port: None,
        bindto: None,
        bind_port: None,
        bind_if: None,
        fwmark: None,
        connect_timeout: DEFAULT_CONNECT_TIMEOUT,
        retry: 1,
        delay_before_retry: Duration::from_secs(1),
        warmup: None,
        delay_loop: DEFAULT_DELAY_LOOP,
        log_all_failures: false,
        alpha: false,
    };
    let mut kind = match item.name() {
        "TCP_CHECK" => CheckKind::Tcp,
        "PING_CHECK" => CheckKind::Ping,
        "HTTP_GET" | "SSL_GET" => CheckKind::Http(HttpCheck {
            tls: item.name() == "SSL_GET",
            urls: Vec::new(),
            virtualhost: None,
            http_protocol: None,
            enable_sni: false,
            sni_name: None,
            fast_recovery: false,
        }),
        "MISC_CHECK" => CheckKind::Misc(MiscCheck {
            path: String::new(),
            timeout: None,
            dynamic: false,
            user: None,
        }),
        "SMTP_CHECK" => CheckKind::Smtp {
            helo_name: "smtpchecker.keepalived.org".into(),
        },
        "DNS_CHECK" => CheckKind::Dns {
            query_type: "SOA".into(),
            name: ".".into(),
        },
        "UDP_CHECK" => CheckKind::Udp(UdpCheck {
            payload: None,
            require_reply: None,
            min_reply_length: 0,
            max_reply_length: 255,
        }),
        "FILE_CHECK" => CheckKind::File {
            track_file: String::new(),
            weight: None,
            reverse: false,
        },
        _ => return None,
    };
    let mut ok = true;
    let mut connection = HostConnection::default();
    // MISC_CHECK and FILE_CHECK open no connection: keepalived knows no connection
    // settings in them.
    let connectionless = matches!(kind, CheckKind::Misc(_) | CheckKind::File { .. });
    for line in item.block.as_deref().unwrap_or_default() {
        let at = line.location();
        if connectionless && CONNECTION_KEYWORDS.contains(&line.name()) {
            diagnostics.push(Diagnostic::warning(
                at,
                format!(
                    "`{}` does not apply to {} (it opens no connection); ignored",
                    line.name(),
                    item.name()
                ),
            ));
            continue;
        }
        if line.name() != "connect_timeout" && connection.read(line, diagnostics) {
            continue;
        }
        if timing.read(line, diagnostics) {
            continue;
        }
        match line.name() {
            "host" if matches!(kind, CheckKind::Smtp { .. }) => {
                let mut host = HostConnection::default();
                for setting in line.block.as_deref().unwrap_or_default() {
                    if !host.read(setting, diagnostics) {
                        not_used(setting, Block::Checker, diagnostics);
                    }
                }
                hosts.push(host);
            }
            "log_all_failures" => checker.log_all_failures = true,
            "alpha" => checker.alpha = true,
            keyword => {
                if !kind_keyword(&mut kind, &mut timing.retry, keyword, line, diagnostics) {
                    not_used(line, Block::Checker, diagnostics);
                }
            }
        }
    }
    ok &= check_kind(&kind, item, diagnostics);
    let own_connection = connection.is_set() || timing.connect_timeout.is_some();
    // Timing: this block, else the real's and virtual server's, else the kind's default.
    let timing = timing.or(outer);
    checker.delay_loop = timing.delay_loop.unwrap_or(DEFAULT_DELAY_LOOP);
    checker.connect_timeout = match connectionless {
        true => DEFAULT_CONNECT_TIMEOUT,
        false => timing.connect_timeout.unwrap_or(DEFAULT_CONNECT_TIMEOUT),
    };
    checker.retry = timing.retry.unwrap_or(match kind {
        CheckKind::Misc(_) => 0,
        CheckKind::Dns { .. } => 3,
        _ => 1,
    });
    checker.delay_before_retry = timing.delay_before_retry.unwrap_or(match kind {
        CheckKind::Http(_) => Duration::from_secs(3),
        CheckKind::Dns { .. } => checker.delay_loop,
        _ => Duration::from_secs(1),
    });
    checker.warmup = timing.warmup;
    checker.kind = kind;
    connection.connect_timeout = Some(checker.connect_timeout);
    connection.apply(&mut checker);
    ok.then_some((checker, own_connection))
}

/// The settings of checkers that connect to the real (all but MISC_CHECK and FILE_CHECK).
const CONNECTION_KEYWORDS: &[&str] = &[
    "connect_ip",
    "connect_port",
    "bindto",
    "bind_port",
    "bind_if",
    "fwmark",
    "connect_timeout",
];

/// A keyword of the checker's own kind into `kind`; whether it was one.
fn kind_keyword(
    kind: &mut CheckKind,
    retry: &mut Option<u32>,
    keyword: &str,
    line: &Statement,
    diagnostics: &mut Vec<Diagnostic>,
) -> bool {
    let text = |diagnostics: &mut Vec<Diagnostic>| single_arg(line, diagnostics).map(str::to_owned);
    match (kind, keyword) {
        (CheckKind::Http(http), "url") => http.urls.extend(url(line, diagnostics)),
        (CheckKind::Http(http), "virtualhost") => http.virtualhost = text(diagnostics),
        (CheckKind::Http(http), "http_protocol") => http.http_protocol = text(diagnostics),
        (CheckKind::Http(http), "enable_sni") => http.enable_sni = no_value(line, diagnostics),
        (CheckKind::Http(http), "sni_name") => http.sni_name = text(diagnostics),
        (CheckKind::Http(http), "fast_recovery") => http.fast_recovery = true,
        // Only HTTP_GET and SSL_GET know it, as in keepalived.
        (CheckKind::Http(_), "nb_get_retry") => {
            diagnostics.push(Diagnostic::warning(
                line.location(),
                "`nb_get_retry` is deprecated; use `retry` (read as retry, as keepalived does)",
            ));
            *retry = parse_in_range(line, 0..=u32::MAX, diagnostics);
        }
        (CheckKind::Misc(misc), "misc_path") => {
            misc.path = rest_of_line(line, diagnostics).unwrap_or_default()
        }
        (CheckKind::Misc(misc), "misc_timeout") => {
            misc.timeout = single_arg(line, diagnostics)
                .and_then(|v| parse_seconds(v, line.location(), diagnostics))
        }
        (CheckKind::Misc(misc), "misc_dynamic") => misc.dynamic = true,
        (CheckKind::Misc(misc), "user") => misc.user = line.args.first().map(|t| t.text.clone()),
        (CheckKind::Smtp { helo_name }, "helo_name") => {
            *helo_name = text(diagnostics).unwrap_or_default()
        }
        (CheckKind::Dns { query_type, .. }, "type") => match single_arg(line, diagnostics) {
            Some(t @ ("A" | "NS" | "CNAME" | "SOA" | "MX" | "TXT" | "AAAA")) => {
                *query_type = t.to_owned()
            }
            Some(other) => diagnostics.push(Diagnostic::error(
                line.location(),
                format!("DNS_CHECK type `{other}` is not one of A, NS, CNAME, SOA, MX, TXT, AAAA"),
            )),
            None => {}
        },
        (CheckKind::Dns { name, .. }, "name") => *name = text(diagnostics).unwrap_or_default(),
        // keepalived's free-format hex: groups separated by spaces.
        (CheckKind::Udp(udp), "payload") => {
            udp.payload = rest_of_line(line, diagnostics).map(|hex| hex.trim().to_owned())
        }
        // Without a value: a reply is required, whatever it holds.
        (CheckKind::Udp(udp), "require_reply") => {
            udp.require_reply = Some(
                line.args
                    .iter()
                    .map(|t| t.text.as_str())
                    .collect::<Vec<_>>()
                    .join(" "),
            )
        }
        (CheckKind::Udp(udp), "min_reply_length") => {
            udp.min_reply_length = parse_in_range(line, 0..=65_535, diagnostics).unwrap_or(0)
        }
        (CheckKind::Udp(udp), "max_reply_length") => {
            udp.max_reply_length = parse_in_range(line, 0..=65_535, diagnostics).unwrap_or(255)
        }
        (CheckKind::File { track_file, .. }, "track_file") => {
            *track_file = text(diagnostics).unwrap_or_default()
        }
        (
            CheckKind::File {
                weight, reverse, ..
            },
            "weight",
        ) => {
            if let Some((w, r)) = weight_args(line, diagnostics) {
                (*weight, *reverse) = (Some(w), r);
            }
        }
        _ => return false,
    }
    true
}

/// What a kind cannot do without.
fn check_kind(kind: &CheckKind, item: &Statement, diagnostics: &mut Vec<Diagnostic>) -> bool {
    let missing = match kind {
        CheckKind::Http(http) if http.urls.is_empty() => "a `url { path ... }`",
        CheckKind::Misc(misc) if misc.path.is_empty() => "`misc_path`",
        CheckKind::File { track_file, .. } if track_file.is_empty() => "`track_file`",
        _ => return true,
    };
    diagnostics.push(Diagnostic::error(
        item.location(),
        format!("{} needs {missing}", item.name()),
    ));
    false
}

/// `url { path P [digest D] [status_code C...] [virtualhost H] [regex R] }`.
fn url(item: &Statement, diagnostics: &mut Vec<Diagnostic>) -> Option<Url> {
    let mut url = Url {
        path: String::new(),
        digest: None,
        status_code: Vec::new(),
        virtualhost: None,
        regex: None,
        regex_no_match: false,
    };
    for line in item.block.as_deref().unwrap_or_default() {
        match line.name() {
            "path" => url.path = single_arg(line, diagnostics).unwrap_or_default().to_owned(),
            "digest" => url.digest = single_arg(line, diagnostics).map(str::to_owned),
            "status_code" => {
                for code in &line.args {
                    match status_range(&code.text) {
                        Some(range) => url.status_code.push(range),
                        None => diagnostics.push(Diagnostic::error(
                            line.location(),
                            format!(
                                "status_code `{}` is not a code or range in 100..=599",
                                code.text
                            ),
                        )),
                    }
                }
            }
            "virtualhost" => url.virtualhost = single_arg(line, diagnostics).map(str::to_owned),
            "regex" => url.regex = rest_of_line(line, diagnostics),
            "regex_no_match" => url.regex_no_match = true,
            _ => not_used(line, Block::Url, diagnostics),
        }
    }
    if url.path.is_empty() {
        diagnostics.push(Diagnostic::error(item.location(), "url needs `path`"));
        return None;
    }
    if url.status_code.is_empty() {
        url.status_code.push((200, 299));
    }
    Some(url)
}

/// `200` or `200-299`.
fn status_range(text: &str) -> Option<(u16, u16)> {
    let (low, high) = text.split_once('-').unwrap_or((text, text));
    let (low, high) = (low.parse::<u16>().ok()?, high.parse::<u16>().ok()?);
    ((100..=599).contains(&low) && (low..=599).contains(&high)).then_some((low, high))
}

/// A top-level `track_file NAME { file PATH; weight W [reverse] }` block.
pub fn track_file(statement: &Statement, diagnostics: &mut Vec<Diagnostic>) -> Option<TrackFile> {
    let location = statement.location();
    let [name] = statement.args.as_slice() else {
        diagnostics.push(Diagnostic::error(
            location,
            format!("{} needs a name: `track_file NAME {{`", statement.name()),
        ));
        return None;
    };
    if statement.name() == "vrrp_track_file" {
        diagnostics.push(Diagnostic::warning(
            location,
            "`vrrp_track_file` is deprecated; use `track_file` (read as track_file, as keepalived does)",
        ));
    }
    let mut track = TrackFile {
        name: name.text.clone(),
        file: String::new(),
        weight: 1,
        reverse: false,
    };
    for line in statement.block.as_deref().unwrap_or_default() {
        match line.name() {
            "file" => track.file = single_arg(line, diagnostics).unwrap_or_default().to_owned(),
            "weight" => {
                if let Some((weight, reverse)) = weight_args(line, diagnostics) {
                    (track.weight, track.reverse) = (weight, reverse);
                }
            }
            "init_file" => diagnostics.push(Diagnostic::warning(
                line.location(),
                "track_file `init_file` is not supported yet; ignored (create the file yourself)",
            )),
            _ => not_used(line, Block::Checker, diagnostics),
        }
    }
    if track.file.is_empty() {
        diagnostics.push(Diagnostic::error(
            location,
            format!("track_file {} needs `file PATH`", track.name),
        ));
        return None;
    }
    Some(track)
}
