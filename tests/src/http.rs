//! A small HTTP/1.1 server that answers every request with its own name (so a client can
//! tell which real answered), with keep-alive; and a client for one request per connection
//! or many on one connection.

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    thread,
    time::Duration,
};

use anyhow::{Context as _, bail};

/// Serve on IPv4 `port` (all addresses) until killed. Prints `ready` to stdout once
/// listening.
pub fn serve(name: &str, port: u16) -> anyhow::Result<()> {
    let listener =
        // Both families (IPv4-mapped on an IPv6 socket).
        TcpListener::bind(("::", port)).with_context(|| format!("bind port {port}"))?;
    println!("ready");
    std::io::stdout().flush()?;
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        let name = name.to_owned();
        thread::spawn(move || {
            let _ = handle(stream, &name);
        });
    }
    Ok(())
}

fn handle(stream: TcpStream, name: &str) -> anyhow::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut writer = stream;
    loop {
        let mut close = false;
        let mut request_line = String::new();
        if reader.read_line(&mut request_line)? == 0 {
            return Ok(());
        }
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header)? == 0 {
                return Ok(());
            }
            if header.trim_end().is_empty() {
                break;
            }
            if header.to_ascii_lowercase().starts_with("connection: close") {
                close = true;
            }
        }
        let body = format!("{name}\n");
        let response = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n{}\r\n{body}",
            body.len(),
            if close { "Connection: close\r\n" } else { "" }
        );
        // One write, one segment.
        writer.write_all(response.as_bytes())?;
        if close {
            return Ok(());
        }
    }
}

const TIMEOUT: Duration = Duration::from_secs(3);

/// `GET /` on a new connection; the body (the answering server's name), trimmed.
pub fn get(addr: SocketAddr) -> anyhow::Result<String> {
    let mut stream =
        TcpStream::connect_timeout(&addr, TIMEOUT).with_context(|| format!("connect to {addr}"))?;
    stream.set_read_timeout(Some(TIMEOUT))?;
    stream.set_write_timeout(Some(TIMEOUT))?;
    let request = format!("GET / HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes())?;
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .with_context(|| format!("read from {addr}"))?;
    body(&response)
}

fn body(response: &str) -> anyhow::Result<String> {
    let Some((head, body)) = response.split_once("\r\n\r\n") else {
        bail!("malformed response: {response:?}");
    };
    if !head.starts_with("HTTP/1.1 200") {
        bail!("unexpected response: {head:?}");
    }
    Ok(body.trim().to_owned())
}

/// One TCP connection carrying many requests (a long-lived flow).
pub struct KeepAlive {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl KeepAlive {
    /// Connect; call from inside the client's namespace (see `Netns::run`).
    pub fn connect(addr: SocketAddr) -> anyhow::Result<Self> {
        let stream = TcpStream::connect_timeout(&addr, TIMEOUT)
            .with_context(|| format!("connect to {addr}"))?;
        stream.set_read_timeout(Some(TIMEOUT))?;
        stream.set_write_timeout(Some(TIMEOUT))?;
        Ok(Self {
            reader: BufReader::new(stream.try_clone()?),
            writer: stream,
        })
    }

    /// One request on the connection; the answering server's name.
    pub fn request(&mut self) -> anyhow::Result<String> {
        self.writer
            .write_all(b"GET / HTTP/1.1\r\nHost: lab\r\n\r\n")?;
        let mut length = None;
        let mut status = String::new();
        self.reader.read_line(&mut status)?;
        if !status.starts_with("HTTP/1.1 200") {
            bail!("unexpected status line {status:?}");
        }
        loop {
            let mut header = String::new();
            if self.reader.read_line(&mut header)? == 0 {
                bail!("connection closed in the headers");
            }
            let header = header.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some(value) = header.to_ascii_lowercase().strip_prefix("content-length:") {
                length = Some(value.trim().parse::<usize>()?);
            }
        }
        let mut body = vec![0; length.context("no content-length")?];
        self.reader.read_exact(&mut body)?;
        Ok(String::from_utf8_lossy(&body).trim().to_owned())
    }
}
