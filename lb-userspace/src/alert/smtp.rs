//! One mail through an SMTP server, in keepalived's dialogue: the server's 220, `HELO`,
//! `MAIL FROM`, one `RCPT TO` per recipient, `DATA` with keepalived's headers (Date,
//! From, Subject, X-Mailer, To), the end of data, `QUIT`. Resolving the server, the
//! connection and each reply are bounded by the envelope's timeout.

use std::{
    net::SocketAddr,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    net::TcpStream,
    time::timeout,
};

use super::{Envelope, Mail};

/// A reply line longer than this is a broken server.
const MAX_REPLY_LINE: usize = 1024;
/// Continuation lines of one reply at most.
const MAX_REPLY_LINES: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum SmtpError {
    #[error("resolving {host}: {reason}")]
    Resolve { host: String, reason: String },
    #[error("connecting to {addr}: {reason}")]
    Connect { addr: SocketAddr, reason: String },
    #[error("{step}: no reply within {limit:?}")]
    Timeout { step: &'static str, limit: Duration },
    #[error("{step}: the server answered `{reply}` (expected {expected})")]
    Refused {
        step: &'static str,
        expected: u16,
        reply: String,
    },
    #[error("{step}: {source}")]
    Io {
        step: &'static str,
        source: std::io::Error,
    },
}

/// Deliver `mail` (its subject already prefixed) as `envelope` says, dated `date`.
pub async fn deliver(envelope: &Envelope, mail: &Mail, date: &str) -> Result<(), SmtpError> {
    let limit = envelope.timeout;
    let host = envelope.server.host.clone();
    let addr = timeout(
        limit,
        tokio::net::lookup_host((host.as_str(), envelope.server.port)),
    )
    .await
    .map_err(|_| SmtpError::Resolve {
        host: host.clone(),
        reason: format!("no answer within {limit:?}"),
    })?
    .map_err(|e| SmtpError::Resolve {
        host: host.clone(),
        reason: e.to_string(),
    })?
    .next()
    .ok_or_else(|| SmtpError::Resolve {
        host: host.clone(),
        reason: "no address".into(),
    })?;
    let stream = timeout(limit, TcpStream::connect(addr))
        .await
        .map_err(|_| SmtpError::Connect {
            addr,
            reason: format!("no answer within {limit:?}"),
        })?
        .map_err(|e| SmtpError::Connect {
            addr,
            reason: e.to_string(),
        })?;
    let mut session = Session {
        stream: BufReader::new(stream),
        limit,
    };
    session.expect("greeting", 220).await?;
    session
        .command("HELO", &format!("HELO {}\r\n", envelope.helo), 250)
        .await?;
    session
        .command("MAIL", &format!("MAIL FROM:<{}>\r\n", envelope.from), 250)
        .await?;
    for recipient in &envelope.to {
        session
            .command("RCPT", &format!("RCPT TO:<{recipient}>\r\n"), 250)
            .await?;
    }
    session.command("DATA", "DATA\r\n", 354).await?;
    session
        .command("BODY", &message(envelope, mail, date), 250)
        .await?;
    session.command("QUIT", "QUIT\r\n", 221).await
}

/// The message as keepalived writes it, ended by the lone dot. Lines of the body that
/// start with a dot are doubled (RFC 5321 section 4.5.2).
pub fn message(envelope: &Envelope, mail: &Mail, date: &str) -> String {
    let body: Vec<String> = mail
        .body
        .lines()
        .map(|line| match line.starts_with('.') {
            true => format!(".{line}"),
            false => line.to_owned(),
        })
        .collect();
    format!(
        "Date: {date}\r\nFrom: {}\r\nSubject: {}\r\nX-Mailer: Keepalived (lbd)\r\nTo: {}\r\n\r\n{}\r\n\r\n.\r\n",
        envelope.from,
        mail.subject,
        envelope.to.join(", "),
        body.join("\r\n")
    )
}

struct Session {
    stream: BufReader<TcpStream>,
    limit: Duration,
}

impl Session {
    async fn command(
        &mut self,
        step: &'static str,
        text: &str,
        expected: u16,
    ) -> Result<(), SmtpError> {
        let write = self.stream.get_mut().write_all(text.as_bytes());
        timeout(self.limit, write)
            .await
            .map_err(|_| SmtpError::Timeout {
                step,
                limit: self.limit,
            })?
            .map_err(|source| SmtpError::Io { step, source })?;
        self.expect(step, expected).await
    }

    /// Read one reply (its continuation lines `NNN-` skipped) and check its code.
    async fn expect(&mut self, step: &'static str, expected: u16) -> Result<(), SmtpError> {
        for _ in 0..MAX_REPLY_LINES {
            let mut line = String::new();
            let mut limited = (&mut self.stream).take(MAX_REPLY_LINE as u64);
            let n = timeout(self.limit, limited.read_line(&mut line))
                .await
                .map_err(|_| SmtpError::Timeout {
                    step,
                    limit: self.limit,
                })?
                .map_err(|source| SmtpError::Io { step, source })?;
            if n == 0 {
                return Err(SmtpError::Io {
                    step,
                    source: std::io::ErrorKind::UnexpectedEof.into(),
                });
            }
            let line = line.trim_end();
            if line.as_bytes().get(3) == Some(&b'-') {
                continue;
            }
            return match line.get(..3).and_then(|code| code.parse::<u16>().ok()) {
                Some(code) if code == expected => Ok(()),
                _ => Err(SmtpError::Refused {
                    step,
                    expected,
                    reply: line.to_owned(),
                }),
            };
        }
        Err(SmtpError::Refused {
            step,
            expected,
            reply: format!("more than {MAX_REPLY_LINES} lines"),
        })
    }
}

/// Now, as a mail's Date header: `Mon, 07 Dec 2026 17:08:32 +0000` (UTC).
pub fn date_now() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    date(secs)
}

/// `secs` since the epoch as a mail's Date header, in UTC.
fn date(secs: u64) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let days = secs / 86_400;
    let (year, month, day) = civil_from_days(days as i64);
    let of_day = secs % 86_400;
    format!(
        "{}, {day:02} {} {year} {:02}:{:02}:{:02} +0000",
        DAYS[(days % 7) as usize],
        MONTHS[(month - 1) as usize],
        of_day / 3600,
        of_day / 60 % 60,
        of_day % 60
    )
}

/// The proleptic Gregorian date of a count of days since 1970-01-01 (Howard Hinnant's
/// algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * shifted_month + 2) / 5 + 1) as u32;
    let month = if shifted_month < 10 {
        shifted_month + 3
    } else {
        shifted_month - 9
    } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::alert::SmtpServer;

    #[test]
    fn dates_are_written_as_mail_wants_them() {
        assert_eq!(date(0), "Thu, 01 Jan 1970 00:00:00 +0000");
        // 2026-12-07 17:08:32 UTC, a Monday.
        assert_eq!(date(1_796_663_312), "Mon, 07 Dec 2026 17:08:32 +0000");
        // 2024-02-29, a leap day.
        assert_eq!(date(1_709_164_800), "Thu, 29 Feb 2024 00:00:00 +0000");
    }

    #[test]
    fn the_message_has_keepalived_headers_and_a_stuffed_body() {
        let envelope = Envelope {
            server: SmtpServer {
                host: "127.0.0.1".into(),
                port: 25,
            },
            from: "lb@example.org".into(),
            to: vec!["a@example.org".into(), "b@example.org".into()],
            helo: "lb1".into(),
            timeout: Duration::from_secs(1),
            router_id: "LB1".into(),
        };
        let mail = Mail {
            subject: "[LB1] VRRP Instance VI_1 - Entering MASTER state".into(),
            body: "=> VRRP Instance is now owning VRRP VIPs <=\n.hidden".into(),
        };
        assert_eq!(
            message(&envelope, &mail, "Thu, 01 Jan 1970 00:00:00 +0000"),
            "Date: Thu, 01 Jan 1970 00:00:00 +0000\r\nFrom: lb@example.org\r\nSubject: [LB1] VRRP Instance VI_1 - Entering MASTER state\r\nX-Mailer: Keepalived (lbd)\r\nTo: a@example.org, b@example.org\r\n\r\n=> VRRP Instance is now owning VRRP VIPs <=\r\n..hidden\r\n\r\n.\r\n"
        );
    }
}
