//! UDP_CHECK: send `payload`; with `require_reply`, an answer must come (starting with
//! the given bytes, of `min_reply_length..=max_reply_length` bytes); without, the check
//! fails only if the real says the port is closed (ICMP port unreachable) in time.

use std::{net::SocketAddr, time::Duration};

use tokio::time::timeout;

use crate::model::check::UdpCheck;

/// keepalived's free-format hex: groups separated by spaces, each read two digits at a
/// time, a last odd digit being a byte of its own (`Ab12f 3` is AB 12 0F 03). With
/// `wildcards`, an `X` digit matches anything: each byte comes with its mask.
pub fn hex_masked(text: &str, wildcards: bool) -> Result<Vec<(u8, u8)>, String> {
    let digit = |c: char| -> Result<(u8, u8), String> {
        match c {
            'x' | 'X' if wildcards => Ok((0, 0)),
            _ => c
                .to_digit(16)
                .map(|d| (d as u8, 0x0f))
                .ok_or_else(|| format!("`{text}` is not hex")),
        }
    };
    let mut bytes = Vec::new();
    for group in text.split_whitespace() {
        let digits: Vec<char> = group.chars().collect();
        for pair in digits.chunks(2) {
            let byte = match pair {
                [high, low] => {
                    let ((h, hm), (l, lm)) = (digit(*high)?, digit(*low)?);
                    (h << 4 | l, hm << 4 | lm)
                }
                [only] => digit(*only)?,
                _ => unreachable!("chunks of two"),
            };
            bytes.push(byte);
        }
    }
    Ok(bytes)
}

/// The bytes of a payload in keepalived's free-format hex.
pub fn hex_bytes(text: &str) -> Result<Vec<u8>, String> {
    Ok(hex_masked(text, false)?
        .into_iter()
        .map(|(b, _)| b)
        .collect())
}

pub async fn udp_check(
    target: SocketAddr,
    udp: &UdpCheck,
    limit: Duration,
    checker: &crate::model::check::Checker,
) -> Result<(), String> {
    let payload = hex_bytes(udp.payload.as_deref().unwrap_or(""))?;
    let socket = super::connected_udp(checker, target, "UDP").await?;
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
            let expected = hex_masked(required, true)?;
            let length = u32::try_from(length).unwrap_or(u32::MAX);
            if !(udp.min_reply_length..=udp.max_reply_length).contains(&length) {
                return Err(format!(
                    "UDP: reply of {length} bytes, not {}..={}",
                    udp.min_reply_length, udp.max_reply_length
                ));
            }
            // keepalived compares up to the shorter of the two.
            let matches = reply
                .iter()
                .zip(&expected)
                .all(|(got, (want, mask))| got & mask == want & mask);
            if !matches {
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
        // keepalived's own example.
        assert_eq!(
            hex_bytes("Ab12f 3 456 546443123"),
            Ok(vec![
                0xab, 0x12, 0x0f, 0x03, 0x45, 0x06, 0x54, 0x64, 0x43, 0x12, 0x03
            ])
        );
        assert!(hex_bytes("zz").is_err());
        assert!(hex_bytes("1x").is_err());
        assert_eq!(hex_masked("1x", true), Ok(vec![(0x10, 0xf0)]));
    }
}
