//! PING_CHECK: one ICMP or ICMPv6 echo request on a raw socket (lbd runs as root); the
//! matching echo reply must come within the connect timeout.

use std::{
    io,
    net::IpAddr,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    time::Duration,
};

use tokio::{io::unix::AsyncFd, time::timeout};

const ECHO_REQUEST_V4: u8 = 8;
const ECHO_REPLY_V4: u8 = 0;
const ECHO_REQUEST_V6: u8 = 128;
const ECHO_REPLY_V6: u8 = 129;

/// The Internet checksum (RFC 1071) of `data`.
fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = data
        .chunks(2)
        .map(|pair| u32::from(u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An echo request with `id` and `sequence` (the kernel fills the ICMPv6 checksum).
pub fn echo_request(ipv6: bool, id: u16, sequence: u16) -> Vec<u8> {
    let kind = if ipv6 {
        ECHO_REQUEST_V6
    } else {
        ECHO_REQUEST_V4
    };
    let mut message = vec![kind, 0, 0, 0];
    message.extend_from_slice(&id.to_be_bytes());
    message.extend_from_slice(&sequence.to_be_bytes());
    message.extend_from_slice(b"lbd PING_CHECK..");
    if !ipv6 {
        let sum = checksum(&message);
        message[2..4].copy_from_slice(&sum.to_be_bytes());
    }
    message
}

/// Whether `packet` (with its IPv4 header; ICMPv6 comes without) is the reply to
/// `id`/`sequence`.
pub fn is_reply(ipv6: bool, packet: &[u8], id: u16, sequence: u16) -> bool {
    let icmp = if ipv6 {
        packet
    } else {
        let header = usize::from(packet.first().map_or(0, |b| b & 0x0f)) * 4;
        packet.get(header..).unwrap_or_default()
    };
    let reply = if ipv6 { ECHO_REPLY_V6 } else { ECHO_REPLY_V4 };
    icmp.len() >= 8
        && icmp[0] == reply
        && icmp[4..6] == id.to_be_bytes()
        && icmp[6..8] == sequence.to_be_bytes()
}

/// A raw ICMP socket connected to `target` (it then only receives from it).
fn raw_socket(target: IpAddr) -> io::Result<OwnedFd> {
    let (domain, protocol) = match target {
        IpAddr::V4(_) => (libc::AF_INET, libc::IPPROTO_ICMP),
        IpAddr::V6(_) => (libc::AF_INET6, libc::IPPROTO_ICMPV6),
    };
    // SAFETY: plain socket(2); the descriptor is owned at once.
    let fd = unsafe {
        libc::socket(
            domain,
            libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            protocol,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a new descriptor nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let result = match target {
        IpAddr::V4(addr) => {
            // SAFETY: an all-zero sockaddr_in is valid; the fields are set below.
            let mut sin: libc::sockaddr_in = unsafe { std::mem::zeroed() };
            sin.sin_family = libc::AF_INET as libc::sa_family_t;
            sin.sin_addr.s_addr = u32::from_ne_bytes(addr.octets());
            // SAFETY: a valid sockaddr_in of the size given.
            unsafe {
                libc::connect(
                    fd.as_raw_fd(),
                    (&sin as *const libc::sockaddr_in).cast(),
                    std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
                )
            }
        }
        IpAddr::V6(addr) => {
            // SAFETY: an all-zero sockaddr_in6 is valid; the fields are set below.
            let mut sin6: libc::sockaddr_in6 = unsafe { std::mem::zeroed() };
            sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            sin6.sin6_addr.s6_addr = addr.octets();
            // SAFETY: a valid sockaddr_in6 of the size given.
            unsafe {
                libc::connect(
                    fd.as_raw_fd(),
                    (&sin6 as *const libc::sockaddr_in6).cast(),
                    std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t,
                )
            }
        }
    };
    if result != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(fd)
}

pub async fn ping_check(target: IpAddr, limit: Duration) -> Result<(), String> {
    let ipv6 = target.is_ipv6();
    let fd = raw_socket(target).map_err(|e| format!("PING: socket: {e}"))?;
    // SAFETY: the AsyncFd owns `fd`, which stays open and the same until it is dropped.
    let socket = unsafe { AsyncFd::register(fd) }.map_err(|e| format!("PING: {e}"))?;
    let (id, sequence) = (super::random_u16(), super::random_u16());
    let request = echo_request(ipv6, id, sequence);
    // SAFETY: send(2) from a live buffer of the length given.
    let sent = unsafe {
        libc::send(
            socket.get_ref().as_raw_fd(),
            request.as_ptr().cast(),
            request.len(),
            0,
        )
    };
    if sent < 0 {
        return Err(format!("PING: send: {}", io::Error::last_os_error()));
    }
    let wait = async {
        let mut packet = [0u8; 2048];
        loop {
            let mut ready = socket.readable().await?;
            // SAFETY: recv(2) into a live buffer of the length given.
            let read = unsafe {
                libc::recv(
                    socket.get_ref().as_raw_fd(),
                    packet.as_mut_ptr().cast(),
                    packet.len(),
                    0,
                )
            };
            if read < 0 {
                let error = io::Error::last_os_error();
                if error.kind() == io::ErrorKind::WouldBlock {
                    ready.clear_ready();
                    continue;
                }
                return Err(error);
            }
            if is_reply(ipv6, &packet[..read as usize], id, sequence) {
                return Ok(());
            }
        }
    };
    timeout(limit, wait)
        .await
        .map_err(|_| format!("PING: no echo reply within {limit:?}"))?
        .map_err(|e| format!("PING: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echo_requests_carry_their_checksum_and_replies_are_matched() {
        let request = echo_request(false, 0x1234, 7);
        assert_eq!(request[..2], [8, 0]);
        assert_eq!(request[4..8], [0x12, 0x34, 0, 7]);
        // The checksum over the whole message, checksum included, is 0.
        assert_eq!(checksum(&request), 0);
        // A reply as a raw IPv4 socket gives it: a 20-byte header, then ICMP.
        let mut reply = vec![0x45; 1];
        reply.extend_from_slice(&[0; 19]);
        reply.extend_from_slice(&[ECHO_REPLY_V4, 0, 0, 0, 0x12, 0x34, 0, 7]);
        assert!(is_reply(false, &reply, 0x1234, 7));
        assert!(!is_reply(false, &reply, 0x1234, 8));
        assert!(is_reply(
            true,
            &[ECHO_REPLY_V6, 0, 0, 0, 0x12, 0x34, 0, 7],
            0x1234,
            7
        ));
        assert!(!is_reply(true, &echo_request(true, 0x1234, 7), 0x1234, 7));
    }
}
