//! HTTP_GET and SSL_GET: `GET path HTTP/1.0` for every `url`, the status code in the
//! accepted ranges and, with `digest`, the MD5 of the body; SSL_GET over TLS without
//! verifying the certificate (keepalived's default), with SNI when `enable_sni` asks.

use std::net::SocketAddr;

use md5::{Digest, Md5};
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt},
    time::timeout,
};

use super::{connect, tls};
use crate::model::check::{Checker, HttpCheck};

/// keepalived's HTTP_GET reads at most this much of a body.
const MAX_BODY: usize = 1 << 20;

/// Every url of an HTTP_GET, in order; the first failure is the outcome.
pub async fn http_get(
    checker: &Checker,
    http: &HttpCheck,
    target: SocketAddr,
) -> Result<(), String> {
    for url in &http.urls {
        let host = url
            .virtualhost
            .as_deref()
            .or(http.virtualhost.as_deref())
            .map_or_else(|| target.ip().to_string(), str::to_owned);
        let stream = connect(checker, target).await?;
        let request = format!(
            "GET {} HTTP/1.0\r\nUser-Agent: KeepAliveClient\r\nHost: {host}\r\n\r\n",
            url.path
        );
        let exchange = async {
            if http.tls {
                let sni = http
                    .enable_sni
                    .then(|| http.sni_name.clone().unwrap_or_else(|| host.clone()));
                let mut stream = tls::handshake(stream, sni.as_deref(), target.ip())
                    .await
                    .map_err(std::io::Error::other)?;
                ask(&mut stream, &request).await
            } else {
                let mut stream = stream;
                ask(&mut stream, &request).await
            }
        };
        let response = timeout(checker.connect_timeout, exchange)
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
    Ok(())
}

/// Send `request` and read the answer.
async fn ask<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    request: &str,
) -> std::io::Result<Vec<u8>> {
    stream.write_all(request.as_bytes()).await?;
    read_response(stream).await
}

/// An HTTP answer: up to the end of its body when it gives a Content-Length (a server
/// may keep the connection open), else up to the end of the connection.
async fn read_response<S: AsyncRead + Unpin>(stream: &mut S) -> std::io::Result<Vec<u8>> {
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
