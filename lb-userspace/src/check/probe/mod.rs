//! The probes: one check of one real by one checker, as keepalived does it. TCP_CHECK
//! connects; HTTP_GET and SSL_GET (`http`, `tls`) check the status and body of every
//! `url`; SMTP_CHECK (`smtp`) greets the server; DNS_CHECK (`dns`) asks a question;
//! UDP_CHECK (`udp`) sends a datagram; PING_CHECK (`ping`) sends an ICMP echo;
//! MISC_CHECK runs a command (exit 0 up, 1 down, 2..=255 up, with weight code - 2 under
//! `misc_dynamic`); FILE_CHECK (`file`) reads a number from a `track_file`.

mod dns;
mod file;
mod http;
mod ping;
mod smtp;
mod tls;
mod udp;

use std::{
    hash::{BuildHasher, Hasher},
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use tokio::{
    net::{TcpSocket, TcpStream},
    time::timeout,
};

use super::{schedule::Outcome, script};
use crate::model::check::{CheckKind, Checker, MiscCheck, TrackFile};

/// What a probe needs to know of its real beyond the address: its configured weight and,
/// for FILE_CHECK, its track_file block.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RealContext {
    pub weight: u32,
    pub track_file: Option<TrackFile>,
}

/// Check `real` (its address and port) with `checker`, scripts running as root.
pub async fn probe(checker: &Checker, real: (IpAddr, u16)) -> Outcome {
    probe_with(
        checker,
        real,
        &RealContext::default(),
        &script::Policy::default(),
    )
    .await
}

/// Check `real` (its address and port) with `checker`, scripts running under `policy`.
pub async fn probe_with(
    checker: &Checker,
    real: (IpAddr, u16),
    context: &RealContext,
    policy: &script::Policy,
) -> Outcome {
    let target = SocketAddr::new(
        checker.connect_ip.unwrap_or(real.0),
        checker.connect_port.unwrap_or(real.1),
    );
    let limit = checker.connect_timeout;
    let result = match &checker.kind {
        // Closed with a reset: no FIN exchange, and no TIME_WAIT socket left per check
        // (at thousands of checks a second they would exhaust the local ports).
        CheckKind::Tcp => connect(checker, target).await.map(close_with_reset),
        CheckKind::Http(check) => http::http_get(checker, check, target).await,
        CheckKind::Smtp { helo_name } => match connect(checker, target).await {
            Ok(stream) => smtp::smtp_check(stream, helo_name, limit).await,
            Err(reason) => Err(reason),
        },
        CheckKind::Dns { query_type, name } => {
            dns::dns_check(target, name, query_type, limit, checker).await
        }
        CheckKind::Udp(check) => udp::udp_check(target, check, limit, checker).await,
        CheckKind::Ping => ping::ping_check(target.ip(), limit).await,
        CheckKind::Misc(misc) => return misc_check(misc, checker.delay_loop, policy).await,
        CheckKind::File {
            track_file,
            weight,
            reverse,
        } => {
            let Some(track) = &context.track_file else {
                return Outcome::Down {
                    reason: format!("FILE_CHECK: no track_file `{track_file}`"),
                };
            };
            let (weight, reverse) = match weight {
                Some(weight) => (*weight, *reverse),
                None => (track.weight, track.reverse),
            };
            return file::file_check(&track.file, weight, reverse, context.weight).await;
        }
    };
    match result {
        Ok(()) => Outcome::Up { weight: None },
        Err(reason) => Outcome::Down { reason },
    }
}

/// A random 16-bit value (query ids, echo ids).
fn random_u16() -> u16 {
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(0);
    hasher.finish() as u16
}

/// A TCP connection to `target` within `connect_timeout`, from `bindto`:`bind_port`.
async fn connect(checker: &Checker, target: SocketAddr) -> Result<TcpStream, String> {
    let socket = if target.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    }
    .map_err(|e| format!("socket: {e}"))?;
    {
        use std::os::fd::AsRawFd as _;
        mark_and_bind(socket.as_raw_fd(), checker)?;
    }
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

/// A UDP socket connected to `target`, with the checker's `fwmark` and `bind_if`; errors
/// start with `what` (the checker's kind).
async fn connected_udp(
    checker: &Checker,
    target: SocketAddr,
    what: &str,
) -> Result<tokio::net::UdpSocket, String> {
    let local: SocketAddr = if target.is_ipv4() {
        ([0u8; 4], 0).into()
    } else {
        ([0u16; 8], 0).into()
    };
    let socket = tokio::net::UdpSocket::bind(local)
        .await
        .map_err(|e| format!("{what}: {e}"))?;
    {
        use std::os::fd::AsRawFd as _;
        mark_and_bind(socket.as_raw_fd(), checker)?;
    }
    socket
        .connect(target)
        .await
        .map_err(|e| format!("{what}: {e}"))?;
    Ok(socket)
}

/// A checker's `fwmark` (SO_MARK) and `bind_if` (SO_BINDTODEVICE) on socket `fd`.
fn mark_and_bind(fd: std::os::fd::RawFd, checker: &Checker) -> Result<(), String> {
    if let Some(mark) = checker.fwmark {
        crate::sockopt::set(fd, libc::SOL_SOCKET, libc::SO_MARK, &mark)
            .map_err(|e| format!("fwmark {mark}: {e}"))?;
    }
    if let Some(interface) = &checker.bind_if {
        crate::sockopt::bind_to_device(fd, interface)
            .map_err(|e| format!("bind_if {interface}: {e}"))?;
    }
    Ok(())
}

/// Close `stream` with a reset (SO_LINGER 0: the close does not wait, it sends RST).
fn close_with_reset(stream: TcpStream) {
    use std::os::fd::AsRawFd as _;
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: setsockopt on the stream's own descriptor with a valid linger struct.
    unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    drop(stream);
}

/// MISC_CHECK: the command's exit code is the verdict.
async fn misc_check(misc: &MiscCheck, delay_loop: Duration, policy: &script::Policy) -> Outcome {
    let limit = misc.timeout.unwrap_or(delay_loop);
    match script::run_with(&misc.path, limit, policy, misc.user.as_deref()).await {
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
