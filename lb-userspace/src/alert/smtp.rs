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
use crate::calendar::Utc;

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
        let limit = self.limit;
        let write = self.stream.get_mut().write_all(text.as_bytes());
        bounded(limit, step, write).await?;
        self.expect(step, expected).await
    }

    /// Read one reply (its continuation lines `NNN-` skipped) and check its code.
    async fn expect(&mut self, step: &'static str, expected: u16) -> Result<(), SmtpError> {
        for _ in 0..MAX_REPLY_LINES {
            let mut line = String::new();
            let limit = self.limit;
            let mut limited = (&mut self.stream).take(MAX_REPLY_LINE as u64);
            let n = bounded(limit, step, limited.read_line(&mut line)).await?;
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

/// `io` within `limit`: a step of the dialogue, its failure named.
async fn bounded<T>(
    limit: Duration,
    step: &'static str,
    io: impl Future<Output = std::io::Result<T>>,
) -> Result<T, SmtpError> {
    timeout(limit, io)
        .await
        .map_err(|_| SmtpError::Timeout { step, limit })?
        .map_err(|source| SmtpError::Io { step, source })
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
    let t = Utc::from_unix(secs);
    format!(
        "{}, {:02} {} {} {:02}:{:02}:{:02} +0000",
        t.weekday_name(),
        t.day,
        t.month_name(),
        t.year,
        t.hour,
        t.minute,
        t.second
    )
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
