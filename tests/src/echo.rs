//! A UDP echo service that answers every datagram with its own name (so a client can tell
//! which real answered), and a client that asks once per new socket (a new flow each).
//!
//! The server binds one socket per address it serves, so each answer leaves from the
//! address the datagram was sent to (the VIP on a DR or TUN real, where a socket bound to
//! the wildcard address would answer from the real's own address).

use std::{
    net::{IpAddr, SocketAddr, UdpSocket},
    thread,
    time::Duration,
};

use anyhow::{Context as _, bail};

/// Serve `port` on each of `addrs` until the process ends.
pub fn serve(name: &str, addrs: &[IpAddr], port: u16) -> anyhow::Result<()> {
    for &addr in addrs {
        let socket = UdpSocket::bind((addr, port))
            .with_context(|| format!("bind UDP {addr} port {port}"))?;
        let name = name.to_owned();
        thread::spawn(move || {
            let mut buf = [0; 1500];
            while let Ok((_, from)) = socket.recv_from(&mut buf) {
                let _ = socket.send_to(name.as_bytes(), from);
            }
        });
    }
    Ok(())
}

/// Attempts per question: a datagram may be lost while neighbours are resolved.
const ATTEMPTS: usize = 3;
const TIMEOUT: Duration = Duration::from_secs(1);

/// Ask `addr` from a new socket; the name that answered. Call from inside the client's
/// namespace (see `Netns::run`).
pub fn ask(addr: SocketAddr) -> anyhow::Result<String> {
    let any: SocketAddr = if addr.is_ipv4() {
        "0.0.0.0:0".parse()?
    } else {
        "[::]:0".parse()?
    };
    let socket = UdpSocket::bind(any)?;
    socket.connect(addr)?;
    socket.set_read_timeout(Some(TIMEOUT))?;
    let mut buf = [0; 256];
    for _ in 0..ATTEMPTS {
        socket.send(b"who?")?;
        match socket.recv(&mut buf) {
            Ok(n) => return Ok(String::from_utf8_lossy(&buf[..n]).into_owned()),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => return Err(e).with_context(|| format!("receive from {addr}")),
        }
    }
    bail!("no answer from {addr} (UDP) in {ATTEMPTS} attempts")
}
