//! The probes: one check of one real by one checker, as keepalived does it. TCP_CHECK
//! connects; HTTP_GET sends `GET path HTTP/1.0` and checks the status code and the MD5
//! of the body for every `url`; MISC_CHECK runs a command (exit 0 up, 1 down, 2..=255 up
//! with weight code - 2 under `misc_dynamic`). Kinds not built yet say so as their
//! outcome (down), so a configuration using them is never silently trusted.

use std::{
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use md5::{Digest, Md5};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpSocket, TcpStream},
    time::timeout,
};

use super::{schedule::Outcome, script};
use crate::model::check::{CheckKind, Checker, HttpCheck, MiscCheck};

/// keepalived's HTTP_GET reads at most this much of a body.
const MAX_BODY: usize = 1 << 20;

/// Check `real` (its address and port) with `checker`.
pub async fn probe(checker: &Checker, real: (IpAddr, u16)) -> Outcome {
    let target = SocketAddr::new(
        checker.connect_ip.unwrap_or(real.0),
        checker.connect_port.unwrap_or(real.1),
    );
    let result = match &checker.kind {
        CheckKind::Tcp => connect(checker, target).await.map(|_| None),
        CheckKind::Http(http) if !http.tls => http_get(checker, http, target).await,
        CheckKind::Misc(misc) => return misc_check(misc, checker.delay_loop).await,
        other => Err(format!("{} is not built yet", kind_name(other))),
    };
    match result {
        Ok(weight) => Outcome::Up { weight },
        Err(reason) => Outcome::Down { reason },
    }
}

fn kind_name(kind: &CheckKind) -> &'static str {
    match kind {
        CheckKind::Tcp => "TCP_CHECK",
        CheckKind::Http(http) if http.tls => "SSL_GET",
        CheckKind::Http(_) => "HTTP_GET",
        CheckKind::Misc(_) => "MISC_CHECK",
        CheckKind::Smtp { .. } => "SMTP_CHECK",
        CheckKind::Dns { .. } => "DNS_CHECK",
        CheckKind::Udp(_) => "UDP_CHECK",
        CheckKind::Ping => "PING_CHECK",
        CheckKind::File { .. } => "FILE_CHECK",
    }
}

/// A TCP connection to `target` within `connect_timeout`, from `bindto`:`bind_port`.
async fn connect(checker: &Checker, target: SocketAddr) -> Result<TcpStream, String> {
    let socket = if target.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    }
    .map_err(|e| format!("socket: {e}"))?;
    if checker.bindto.is_some() || checker.bind_port.is_some() {
        let unspecified = if target.is_ipv4() {
            IpAddr::from([0u8; 4])
        } else {
            IpAddr::from([0u8; 16])
        };
        let local = SocketAddr::new(
            checker.bindto.unwrap_or(unspecified),
            checker.bind_port.unwrap_or(0),
        );
        socket
            .bind(local)
            .map_err(|e| format!("bind {local}: {e}"))?;
    }
    match timeout(checker.connect_timeout, socket.connect(target)).await {
        Ok(Ok(stream)) => Ok(stream),
        Ok(Err(e)) => Err(format!("connect {target}: {e}")),
        Err(_) => Err(format!(
            "connect {target}: no answer within {:?}",
            checker.connect_timeout
        )),
    }
}

/// Every url of an HTTP_GET, in order; the first failure is the outcome.
async fn http_get(
    checker: &Checker,
    http: &HttpCheck,
    target: SocketAddr,
) -> Result<Option<u32>, String> {
    for url in &http.urls {
        let host = url
            .virtualhost
            .as_deref()
            .or(http.virtualhost.as_deref())
            .map_or_else(|| target.ip().to_string(), str::to_owned);
        let mut stream = connect(checker, target).await?;
        let request = format!(
            "GET {} HTTP/1.0\r\nUser-Agent: KeepAliveClient\r\nHost: {host}\r\n\r\n",
            url.path
        );
        let response = timeout(checker.connect_timeout, async {
            stream.write_all(request.as_bytes()).await?;
            read_response(&mut stream).await
        })
        .await
        .map_err(|_| {
            format!(
                "GET {}: no full answer within {:?}",
                url.path, checker.connect_timeout
            )
        })?
        .map_err(|e| format!("GET {}: {e}", url.path))?;
        let (status, body) = parse_response(&response)
            .ok_or_else(|| format!("GET {}: not an HTTP answer", url.path))?;
        let accepted = if url.status_code.is_empty() {
            (200..=299).contains(&status)
        } else {
            url.status_code
                .iter()
                .any(|(low, high)| (*low..=*high).contains(&status))
        };
        if !accepted {
            return Err(format!("GET {}: status {status}", url.path));
        }
        if let Some(want) = &url.digest {
            let got: String = Md5::digest(body)
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            if !got.eq_ignore_ascii_case(want) {
                return Err(format!("GET {}: body digest {got}, not {want}", url.path));
            }
        }
    }
    Ok(None)
}

/// An HTTP answer: up to the end of its body when it gives a Content-Length (a server
/// may keep the connection open), else up to the end of the connection.
async fn read_response(stream: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut response = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        let read = stream.read(&mut chunk).await?;
        if read == 0 {
            return Ok(response);
        }
        response.extend_from_slice(&chunk[..read]);
        if response.len() > MAX_BODY + chunk.len() {
            return Ok(response);
        }
        if let Some(end) = response.windows(4).position(|w| w == b"\r\n\r\n")
            && let Some(length) = content_length(&response[..end])
            && response.len() >= end + 4 + length
        {
            response.truncate(end + 4 + length);
            return Ok(response);
        }
    }
}

/// The Content-Length of a header block.
fn content_length(head: &[u8]) -> Option<usize> {
    let head = std::str::from_utf8(head).ok()?;
    head.lines().skip(1).find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.trim()
            .eq_ignore_ascii_case("content-length")
            .then(|| value.trim().parse().ok())?
    })
}

/// The status code and body of an HTTP/1.x answer.
fn parse_response(response: &[u8]) -> Option<(u16, &[u8])> {
    let end = response.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&response[..end]).ok()?;
    let status_line = head.lines().next()?;
    let mut words = status_line.split_whitespace();
    if !words.next()?.starts_with("HTTP/") {
        return None;
    }
    let status = words.next()?.parse().ok()?;
    Some((status, &response[end + 4..]))
}

/// MISC_CHECK: the command's exit code is the verdict.
async fn misc_check(misc: &MiscCheck, delay_loop: Duration) -> Outcome {
    let limit = misc.timeout.unwrap_or(delay_loop);
    match script::run(&misc.path, limit).await {
        Ok(0) => Outcome::Up { weight: None },
        Ok(1) => Outcome::Down {
            reason: format!("`{}` exited with 1", misc.path),
        },
        Ok(code @ 2..=255) if misc.dynamic => Outcome::Up {
            weight: Some(u32::from(code) - 2),
        },
        Ok(_) => Outcome::Up { weight: None },
        Err(reason) => Outcome::Down { reason },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_read_for_status_and_body() {
        assert_eq!(
            parse_response(b"HTTP/1.1 503 Busy\r\nA: b\r\n\r\nbody"),
            Some((503, &b"body"[..]))
        );
        assert_eq!(parse_response(b"SSH-2.0-x\r\n\r\n"), None);
        assert_eq!(parse_response(b"HTTP/1.0 200 OK\r\n"), None);
        assert_eq!(
            content_length(b"HTTP/1.1 200 OK\r\ncontent-length: 12\r\nX: y"),
            Some(12)
        );
        assert_eq!(content_length(b"HTTP/1.1 200 OK\r\nX: y"), None);
    }
}
