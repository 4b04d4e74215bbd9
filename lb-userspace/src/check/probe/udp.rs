//! UDP_CHECK: send `payload`; with `require_reply`, an answer must come (starting with
//! the given bytes, of `min_reply_length..=max_reply_length` bytes); without, the check
//! fails only if the real says the port is closed (ICMP port unreachable) in time.

use std::{net::SocketAddr, time::Duration};

use tokio::{net::UdpSocket, time::timeout};

use crate::model::check::UdpCheck;

/// Bytes of a hex string (`0a0B`, no separators).
pub fn hex_bytes(text: &str) -> Result<Vec<u8>, String> {
    if !text.len().is_multiple_of(2) {
        return Err(format!("`{text}` is not hex bytes"));
    }
    (0..text.len())
        .step_by(2)
        .map(|i| {
            u8::from_str_radix(&text[i..i + 2], 16).map_err(|_| format!("`{text}` is not hex"))
        })
        .collect()
}

pub async fn udp_check(
    target: SocketAddr,
    udp: &UdpCheck,
    limit: Duration,
    checker: &crate::model::check::Checker,
) -> Result<(), String> {
    let payload = hex_bytes(udp.payload.as_deref().unwrap_or(""))?;
    let local: SocketAddr = if target.is_ipv4() {
        ([0u8; 4], 0).into()
    } else {
        ([0u16; 8], 0).into()
    };
    let socket = UdpSocket::bind(local)
        .await
        .map_err(|e| format!("UDP: {e}"))?;
    {
        use std::os::fd::AsRawFd as _;
        super::mark_and_bind(socket.as_raw_fd(), checker)?;
    }
    socket
        .connect(target)
        .await
        .map_err(|e| format!("UDP: {e}"))?;
    socket
        .send(&payload)
        .await
        .map_err(|e| format!("UDP: {e}"))?;
    let mut reply = vec![0u8; 65536];
    match timeout(limit, socket.recv(&mut reply)).await {
        Ok(Ok(length)) => {
            let Some(required) = &udp.require_reply else {
                return Ok(());
            };
            let reply = &reply[..length];
            let expected = hex_bytes(required)?;
            let length = u32::try_from(length).unwrap_or(u32::MAX);
            if !(udp.min_reply_length..=udp.max_reply_length).contains(&length) {
                return Err(format!(
                    "UDP: reply of {length} bytes, not {}..={}",
                    udp.min_reply_length, udp.max_reply_length
                ));
            }
            if !reply.starts_with(&expected) {
                return Err("UDP: the reply is not the one required".into());
            }
            Ok(())
        }
        // ICMP port unreachable comes back as ECONNREFUSED on a connected socket.
        Ok(Err(e)) => Err(format!("UDP: {e}")),
        Err(_) if udp.require_reply.is_some() => Err(format!("UDP: no reply within {limit:?}")),
        Err(_) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_payloads_are_decoded() {
        assert_eq!(hex_bytes("0aFf00"), Ok(vec![0x0a, 0xff, 0]));
        assert_eq!(hex_bytes(""), Ok(vec![]));
        assert!(hex_bytes("abc").is_err());
        assert!(hex_bytes("zz").is_err());
    }
}
