//! IPVS's sync messages, version 1, as the kernel's sync daemon sends and reads them
//! (`net/netfilter/ipvs/ip_vs_sync.c`). A UDP datagram, multicast to 224.0.0.81:8848 by
//! default, holds one message: a header, then up to 255 connection records, each padded
//! to 32 bits. Everything is in network order.
//!
//! `Message::decode` accepts what the kernel's backup accepts and refuses what it drops:
//! a bad header or a record that does not fit loses the whole message (`DecodeError`); a
//! record the kernel would skip alone (an unknown protocol, a state out of range, an
//! unknown mandatory option) is skipped and reported (`Skipped`), and the rest is read.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The message header.
pub const HEADER_LEN: usize = 8;
/// A record's fixed part with IPv4 and with IPv6 addresses.
const CONN_V4_LEN: usize = 36;
const CONN_V6_LEN: usize = 72;
/// The version a message header carries.
const SYNC_PROTO_VER: u8 = 1;
/// A record's `type` bit: IPv6 addresses.
const TYPE_INET6: u8 = 1;
/// A record's `ver_size`: the version in the top 4 bits, the size in the rest.
const SIZE_MASK: u16 = 0x0fff;
const VERSION_SHIFT: u16 = 12;
/// Most records in one message (the count is one byte).
pub const MAX_CONNS: usize = 255;

/// Option types, and the bit that makes an unknown option skippable.
const OPT_SEQ_DATA: u8 = 1;
const OPT_PE_DATA: u8 = 2;
const OPT_PE_NAME: u8 = 3;
const OPT_F_PARAM: u8 = 1 << 6;
/// `OPT_SEQ_DATA`'s length: two `ip_vs_seq` of three 32-bit words.
const SEQ_DATA_LEN: usize = 24;
/// The kernel's limits on persistence-engine data and name.
const PE_DATA_MAX: usize = 255;
const PE_NAME_MAX: usize = 16;

/// IPVS's connection flags (`IP_VS_CONN_F_*` of `linux/ip_vs.h`) that sync carries.
pub mod flags {
    /// The forwarding method, in the low 3 bits.
    pub const FWD_MASK: u32 = 0x0007;
    pub const MASQ: u32 = 0x0000;
    pub const LOCALNODE: u32 = 0x0001;
    pub const TUNNEL: u32 = 0x0002;
    pub const DROUTE: u32 = 0x0003;
    pub const BYPASS: u32 = 0x0004;
    /// Created by sync (set by the receiver).
    pub const SYNC: u32 = 0x0020;
    /// Hashed into the table (never sent).
    pub const HASHED: u32 = 0x0040;
    pub const NOOUTPUT: u32 = 0x0080;
    /// Not established: counted in InActConn.
    pub const INACTIVE: u32 = 0x0100;
    pub const OUT_SEQ: u32 = 0x0200;
    pub const IN_SEQ: u32 = 0x0400;
    pub const SEQ_MASK: u32 = 0x0600;
    pub const NO_CPORT: u32 = 0x0800;
    /// A persistence template, not a connection.
    pub const TEMPLATE: u32 = 0x1000;
    pub const ONE_PACKET: u32 = 0x2000;
    /// What a backup keeps of a received record's flags.
    pub const BACKUP_MASK: u32 = FWD_MASK | NOOUTPUT | INACTIVE | SEQ_MASK | NO_CPORT | TEMPLATE;
}

/// IP protocols the kernel syncs, with the number of states it has for each.
const PROTO_TCP: u8 = 6;
const PROTO_UDP: u8 = 17;
const PROTO_SCTP: u8 = 132;

/// The states of a protocol (`IP_VS_*_S_LAST`): a record with a state at or past it is
/// skipped, as the kernel skips it.
fn state_count(protocol: u8) -> Option<u16> {
    match protocol {
        PROTO_TCP => Some(11),
        PROTO_UDP => Some(1),
        PROTO_SCTP => Some(10),
        _ => None,
    }
}

/// TCP sequence adjustments (`struct ip_vs_seq`), for connections whose payload a helper
/// rewrote (IPVS's FTP helper); lbd has none and only passes them on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SeqAdjust {
    pub init_seq: u32,
    pub delta: u32,
    pub previous_delta: u32,
}

/// The three ends of a connection, all of one family.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ends {
    V4 {
        client: Ipv4Addr,
        vip: Ipv4Addr,
        real: Ipv4Addr,
    },
    V6 {
        client: Ipv6Addr,
        vip: Ipv6Addr,
        real: Ipv6Addr,
    },
}

impl Ends {
    pub fn client(&self) -> IpAddr {
        match self {
            Ends::V4 { client, .. } => IpAddr::V4(*client),
            Ends::V6 { client, .. } => IpAddr::V6(*client),
        }
    }

    pub fn vip(&self) -> IpAddr {
        match self {
            Ends::V4 { vip, .. } => IpAddr::V4(*vip),
            Ends::V6 { vip, .. } => IpAddr::V6(*vip),
        }
    }

    pub fn real(&self) -> IpAddr {
        match self {
            Ends::V4 { real, .. } => IpAddr::V4(*real),
            Ends::V6 { real, .. } => IpAddr::V6(*real),
        }
    }
}

/// One connection (or persistence template) record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyncConn {
    pub protocol: u8,
    /// `flags::*`, as sent (a sender leaves `HASHED` out, as the kernel does; a receiver
    /// keeps `BACKUP_MASK` of them).
    pub flags: u32,
    /// IPVS's state number for the protocol (TCP: `IP_VS_TCP_S_*`).
    pub state: u16,
    pub ends: Ends,
    pub client_port: u16,
    pub vip_port: u16,
    pub real_port: u16,
    pub fwmark: u32,
    /// Seconds the connection has left in its state, as the master counts them; 0 for
    /// the receiver's default of the state.
    pub timeout_secs: u32,
    /// Input and output sequence adjustments (`flags::SEQ_MASK` set).
    pub seq: Option<(SeqAdjust, SeqAdjust)>,
    /// A persistence engine's data and name (IPVS's SIP engine); both empty for none, else
    /// both set.
    pub pe_data: Vec<u8>,
    pub pe_name: Vec<u8>,
}

impl SyncConn {
    /// The bytes of the record, unpadded.
    fn encoded_len(&self) -> usize {
        let mut len = match self.ends {
            Ends::V4 { .. } => CONN_V4_LEN,
            Ends::V6 { .. } => CONN_V6_LEN,
        };
        if self.seq.is_some() {
            len += 2 + SEQ_DATA_LEN;
        }
        if !self.pe_data.is_empty() {
            len += 2 + self.pe_data.len().min(PE_DATA_MAX);
            if !self.pe_name.is_empty() {
                len += 2 + self.pe_name.len().min(PE_NAME_MAX);
            }
        }
        len
    }

    fn encode_into(&self, out: &mut Vec<u8>) {
        let start = out.len();
        let inet6 = matches!(self.ends, Ends::V6 { .. });
        out.push(if inet6 { TYPE_INET6 } else { 0 });
        out.push(self.protocol);
        out.extend_from_slice(&(self.encoded_len() as u16 & SIZE_MASK).to_be_bytes());
        out.extend_from_slice(&self.flags.to_be_bytes());
        out.extend_from_slice(&self.state.to_be_bytes());
        out.extend_from_slice(&self.client_port.to_be_bytes());
        out.extend_from_slice(&self.vip_port.to_be_bytes());
        out.extend_from_slice(&self.real_port.to_be_bytes());
        out.extend_from_slice(&self.fwmark.to_be_bytes());
        out.extend_from_slice(&self.timeout_secs.to_be_bytes());
        match self.ends {
            Ends::V4 { client, vip, real } => {
                for addr in [client, vip, real] {
                    out.extend_from_slice(&addr.octets());
                }
            }
            Ends::V6 { client, vip, real } => {
                for addr in [client, vip, real] {
                    out.extend_from_slice(&addr.octets());
                }
            }
        }
        if let Some((input, output)) = &self.seq {
            out.extend_from_slice(&[OPT_SEQ_DATA, SEQ_DATA_LEN as u8]);
            for seq in [input, output] {
                for word in [seq.init_seq, seq.delta, seq.previous_delta] {
                    out.extend_from_slice(&word.to_be_bytes());
                }
            }
        }
        if !self.pe_data.is_empty() {
            let data = &self.pe_data[..self.pe_data.len().min(PE_DATA_MAX)];
            out.extend_from_slice(&[OPT_PE_DATA, data.len() as u8]);
            out.extend_from_slice(data);
            if !self.pe_name.is_empty() {
                let name = &self.pe_name[..self.pe_name.len().min(PE_NAME_MAX)];
                out.extend_from_slice(&[OPT_PE_NAME, name.len() as u8]);
                out.extend_from_slice(name);
            }
        }
        debug_assert_eq!(out.len() - start, self.encoded_len());
    }
}

/// One sync message: the records of one datagram.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// The sync id (`lvs_sync_daemon ... id N`): a backup with a non-zero id takes only
    /// messages with that id.
    pub syncid: u8,
    pub conns: Vec<SyncConn>,
}

/// A record the kernel would skip on its own, the rest of its message being read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Skipped {
    /// The record's index in the message.
    pub index: usize,
    pub reason: SkipReason,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SkipReason {
    #[error("protocol {protocol} is not synced (TCP, UDP and SCTP are)")]
    Protocol { protocol: u8 },
    #[error("state {state} is out of range for protocol {protocol}")]
    State { protocol: u8, state: u16 },
    #[error("unknown mandatory option {option}")]
    MandatoryOption { option: u8 },
    #[error("persistence-engine data without the engine's name")]
    PeDataWithoutName,
}

/// Why a whole message is dropped, with the byte offset where it went wrong.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("{len} bytes are shorter than a message header")]
    ShortHeader { len: usize },
    #[error("the header says {said} bytes, the datagram has {len}")]
    SizeMismatch { said: usize, len: usize },
    #[error("version {version} (reserved {reserved}, spare {spare}) is not sync version 1")]
    Version {
        version: u8,
        reserved: u8,
        spare: u16,
    },
    #[error("record {index} at byte {at}: {reason}")]
    Record {
        index: usize,
        at: usize,
        reason: RecordError,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("the message ends inside the record")]
    Truncated,
    #[error("record version {version} (only 0 is known)")]
    Version { version: u16 },
    #[error("record type {kind} (0: IPv4, 1: IPv6)")]
    Type { kind: u8 },
    #[error("the record's size {size} is smaller than its addresses need")]
    Undersized { size: usize },
    #[error("option {option} overruns the record")]
    OptionOverrun { option: u8 },
    #[error("option {option} has length {len}")]
    OptionLength { option: u8, len: usize },
    #[error("option {option} appears twice")]
    OptionTwice { option: u8 },
}

/// A decoded message and the records skipped in it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decoded {
    pub message: Message,
    pub skipped: Vec<Skipped>,
}

impl Message {
    /// The datagram of this message. At most `MAX_CONNS` records; `Batch` splits longer
    /// lists.
    pub fn encode(&self) -> Vec<u8> {
        let conns = &self.conns[..self.conns.len().min(MAX_CONNS)];
        let mut out = Vec::with_capacity(HEADER_LEN + conns.len() * CONN_V6_LEN);
        out.extend_from_slice(&[
            0,
            self.syncid,
            0,
            0,
            conns.len() as u8,
            SYNC_PROTO_VER,
            0,
            0,
        ]);
        for conn in conns {
            while out.len() % 4 != 0 {
                out.push(0);
            }
            conn.encode_into(&mut out);
        }
        let size = out.len() as u16;
        out[2..4].copy_from_slice(&size.to_be_bytes());
        out
    }

    /// Read one datagram as the kernel's backup reads it.
    pub fn decode(bytes: &[u8]) -> Result<Decoded, DecodeError> {
        // The kernel first checks for the 4 bytes of version 0's header.
        if bytes.len() < 4 {
            return Err(DecodeError::ShortHeader { len: bytes.len() });
        }
        let said = usize::from(u16::from_be_bytes([bytes[2], bytes[3]]));
        if said != bytes.len() {
            return Err(DecodeError::SizeMismatch {
                said,
                len: bytes.len(),
            });
        }
        if bytes.len() < HEADER_LEN {
            return Err(DecodeError::ShortHeader { len: bytes.len() });
        }
        let (reserved, version) = (bytes[0], bytes[5]);
        let spare = u16::from_be_bytes([bytes[6], bytes[7]]);
        if version != SYNC_PROTO_VER || reserved != 0 || spare != 0 {
            return Err(DecodeError::Version {
                version,
                reserved,
                spare,
            });
        }
        let count = usize::from(bytes[4]);
        let mut decoded = Decoded {
            message: Message {
                syncid: bytes[1],
                conns: Vec::with_capacity(count),
            },
            skipped: Vec::new(),
        };
        let mut at = HEADER_LEN;
        for index in 0..count {
            let record_error = |at, reason| DecodeError::Record { index, at, reason };
            // The kernel wants a whole IPv4 record's room before it reads the size.
            if at + CONN_V4_LEN > bytes.len() {
                return Err(record_error(at, RecordError::Truncated));
            }
            let ver_size = u16::from_be_bytes([bytes[at + 2], bytes[at + 3]]);
            let size = usize::from(ver_size & SIZE_MASK);
            let end = at + size;
            if end > bytes.len() {
                return Err(record_error(at, RecordError::Truncated));
            }
            if ver_size >> VERSION_SHIFT != 0 {
                return Err(record_error(
                    at,
                    RecordError::Version {
                        version: ver_size >> VERSION_SHIFT,
                    },
                ));
            }
            // The type is read where the record starts, whatever its size says.
            match decode_record(bytes[at], &bytes[at..end]) {
                Ok(Ok(conn)) => decoded.message.conns.push(conn),
                Ok(Err(reason)) => decoded.skipped.push(Skipped { index, reason }),
                Err(reason) => return Err(record_error(at, reason)),
            }
            at += (size + 3) & !3;
        }
        Ok(decoded)
    }
}

/// One record of type `kind` (exactly its `size` bytes): the connection, a reason to skip
/// it, or a reason to drop the message.
fn decode_record(kind: u8, record: &[u8]) -> Result<Result<SyncConn, SkipReason>, RecordError> {
    let fixed = match kind {
        0 => CONN_V4_LEN,
        TYPE_INET6 => CONN_V6_LEN,
        kind => return Err(RecordError::Type { kind }),
    };
    if record.len() < fixed {
        return Err(RecordError::Undersized { size: record.len() });
    }
    let u16_at = |i: usize| u16::from_be_bytes([record[i], record[i + 1]]);
    let u32_at =
        |i: usize| u32::from_be_bytes([record[i], record[i + 1], record[i + 2], record[i + 3]]);
    let ends = if kind == TYPE_INET6 {
        let addr = |i: usize| {
            let mut octets = [0u8; 16];
            octets.copy_from_slice(&record[i..i + 16]);
            Ipv6Addr::from(octets)
        };
        Ends::V6 {
            client: addr(24),
            vip: addr(40),
            real: addr(56),
        }
    } else {
        let addr = |i: usize| Ipv4Addr::new(record[i], record[i + 1], record[i + 2], record[i + 3]);
        Ends::V4 {
            client: addr(24),
            vip: addr(28),
            real: addr(32),
        }
    };
    let mut conn = SyncConn {
        protocol: record[1],
        flags: u32_at(4),
        state: u16_at(8),
        ends,
        client_port: u16_at(10),
        vip_port: u16_at(12),
        real_port: u16_at(14),
        fwmark: u32_at(16),
        timeout_secs: u32_at(20),
        seq: None,
        pe_data: Vec::new(),
        pe_name: Vec::new(),
    };
    let mut at = fixed;
    while at < record.len() {
        if at + 2 > record.len() {
            return Err(RecordError::OptionOverrun { option: record[at] });
        }
        let (option, len) = (record[at], usize::from(record[at + 1]));
        at += 2;
        if len == 0 || at + len > record.len() {
            return Err(RecordError::OptionOverrun { option });
        }
        let data = &record[at..at + len];
        match option & !OPT_F_PARAM {
            OPT_SEQ_DATA => {
                if len != SEQ_DATA_LEN {
                    return Err(RecordError::OptionLength { option, len });
                }
                if conn.seq.is_some() {
                    return Err(RecordError::OptionTwice { option });
                }
                let word =
                    |i: usize| u32::from_be_bytes([data[i], data[i + 1], data[i + 2], data[i + 3]]);
                let seq = |i: usize| SeqAdjust {
                    init_seq: word(i),
                    delta: word(i + 4),
                    previous_delta: word(i + 8),
                };
                conn.seq = Some((seq(0), seq(12)));
            }
            OPT_PE_DATA | OPT_PE_NAME => {
                let (limit, field) = if option & !OPT_F_PARAM == OPT_PE_DATA {
                    (PE_DATA_MAX, &mut conn.pe_data)
                } else {
                    (PE_NAME_MAX, &mut conn.pe_name)
                };
                if len > limit {
                    return Err(RecordError::OptionLength { option, len });
                }
                if !field.is_empty() {
                    return Err(RecordError::OptionTwice { option });
                }
                field.extend_from_slice(data);
            }
            // The kernel skips the record at once, reading no further option.
            _ if option & OPT_F_PARAM == 0 => {
                return Ok(Err(SkipReason::MandatoryOption { option }));
            }
            _ => {}
        }
        at += len;
    }
    // A name goes with data; the kernel skips data without a name, and ignores a name
    // without data.
    if conn.pe_data.is_empty() {
        conn.pe_name.clear();
    } else if conn.pe_name.is_empty() {
        return Ok(Err(SkipReason::PeDataWithoutName));
    }
    if conn.flags & flags::TEMPLATE == 0 {
        let Some(states) = state_count(conn.protocol) else {
            return Ok(Err(SkipReason::Protocol {
                protocol: conn.protocol,
            }));
        };
        if conn.state >= states {
            return Ok(Err(SkipReason::State {
                protocol: conn.protocol,
                state: conn.state,
            }));
        }
    }
    Ok(Ok(conn))
}

/// Records gathered into messages of at most `maxlen` bytes (the datagram's payload; a
/// message holds at least one record whatever its size) and `MAX_CONNS` records.
#[derive(Clone, Debug)]
pub struct Batch {
    syncid: u8,
    maxlen: usize,
    conns: Vec<SyncConn>,
    /// The bytes `conns` take as one message.
    len: usize,
}

impl Batch {
    pub fn new(syncid: u8, maxlen: usize) -> Self {
        Batch {
            syncid,
            maxlen,
            conns: Vec::new(),
            len: HEADER_LEN,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.conns.is_empty()
    }

    /// Add `conn`: the message gathered before it, when `conn` did not fit in it.
    pub fn push(&mut self, conn: SyncConn) -> Option<Message> {
        let needed = ((self.len + 3) & !3) + conn.encoded_len();
        let full =
            !self.conns.is_empty() && (needed > self.maxlen || self.conns.len() == MAX_CONNS);
        let closed = if full { self.take() } else { None };
        self.len = ((self.len + 3) & !3) + conn.encoded_len();
        self.conns.push(conn);
        closed
    }

    /// The message gathered so far, if any; the batch starts again empty.
    pub fn take(&mut self) -> Option<Message> {
        self.len = HEADER_LEN;
        if self.conns.is_empty() {
            return None;
        }
        Some(Message {
            syncid: self.syncid,
            conns: std::mem::take(&mut self.conns),
        })
    }
}

#[cfg(test)]
mod tests;
