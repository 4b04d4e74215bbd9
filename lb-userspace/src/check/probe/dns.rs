//! DNS_CHECK: a query for `name` of `type` over UDP; the answer must carry the query's id,
//! be a response, and say NOERROR.

use std::{net::SocketAddr, time::Duration};

use tokio::time::timeout;

/// The record type number of a `type` name.
fn type_number(name: &str) -> Option<u16> {
    Some(match name {
        "A" => 1,
        "NS" => 2,
        "CNAME" => 5,
        "SOA" => 6,
        "MX" => 15,
        "TXT" => 16,
        "AAAA" => 28,
        _ => return None,
    })
}

/// The query message (RFC 1035 section 4.1): header, one question, class IN.
pub fn query(id: u16, name: &str, query_type: &str) -> Result<Vec<u8>, String> {
    let qtype = type_number(query_type).ok_or_else(|| format!("DNS type `{query_type}`"))?;
    // id, flags (RD), QDCOUNT 1, AN/NS/AR 0.
    let mut message = Vec::with_capacity(64);
    message.extend_from_slice(&id.to_be_bytes());
    message.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name
        .trim_end_matches('.')
        .split('.')
        .filter(|l| !l.is_empty())
    {
        let length = u8::try_from(label.len())
            .ok()
            .filter(|l| *l <= 63)
            .ok_or_else(|| format!("DNS name `{name}`: label `{label}` too long"))?;
        message.push(length);
        message.extend_from_slice(label.as_bytes());
    }
    message.push(0);
    message.extend_from_slice(&qtype.to_be_bytes());
    message.extend_from_slice(&1u16.to_be_bytes());
    Ok(message)
}

/// Whether `answer` answers query `id` without error; why not otherwise.
pub fn check_answer(id: u16, answer: &[u8]) -> Result<(), String> {
    if answer.len() < 12 {
        return Err(format!("DNS: answer of {} bytes", answer.len()));
    }
    if answer[..2] != id.to_be_bytes() {
        return Err("DNS: answer to another query".into());
    }
    if answer[2] & 0x80 == 0 {
        return Err("DNS: not a response".into());
    }
    match answer[3] & 0x0f {
        0 => Ok(()),
        rcode => Err(format!("DNS: response code {rcode}")),
    }
}

/// Ask `target` and check the answer, within `limit`.
pub async fn dns_check(
    target: SocketAddr,
    name: &str,
    query_type: &str,
    limit: Duration,
    checker: &crate::model::check::Checker,
) -> Result<(), String> {
    let id = super::random_u16();
    let message = query(id, name, query_type)?;
    let socket = super::connected_udp(checker, target, "DNS").await?;
    socket
        .send(&message)
        .await
        .map_err(|e| format!("DNS: {e}"))?;
    let mut answer = [0u8; 4096];
    let read = timeout(limit, socket.recv(&mut answer))
        .await
        .map_err(|_| format!("DNS: no answer within {limit:?}"))?
        .map_err(|e| format!("DNS: {e}"))?;
    check_answer(id, &answer[..read])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_follow_rfc_1035_and_answers_are_checked() {
        let message = query(0x1234, "example.org.", "AAAA").unwrap();
        assert_eq!(
            message,
            [
                0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0, 7, b'e', b'x', b'a', b'm', b'p',
                b'l', b'e', 3, b'o', b'r', b'g', 0, 0, 28, 0, 1
            ]
        );
        assert_eq!(query(1, ".", "SOA").unwrap()[12..], [0, 0, 6, 0, 1]);
        let mut answer = message.clone();
        answer[2] |= 0x80;
        assert_eq!(check_answer(0x1234, &answer), Ok(()));
        assert!(check_answer(0x1235, &answer).is_err());
        answer[3] = 3;
        assert_eq!(
            check_answer(0x1234, &answer),
            Err("DNS: response code 3".into())
        );
        assert!(check_answer(0x1234, &message).is_err());
    }
}
