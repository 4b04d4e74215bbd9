//! lbd's bulk resync, which IPVS lacks: a director that comes back (at start, or out of
//! FAULT) asks the master for all of its connections, and preempts only once it has them
//! (or after a bounded wait), so that a failback breaks no connection made while it was
//! away.
//!
//! The two messages travel on their own port, next to the sync port (`resync_port`),
//! because a kernel backup reads any message on the sync port that is not a version 1
//! header as version 0. The master answers a request by walking its whole table into
//! ordinary sync messages on the sync port, then sends `Done` with the number of
//! connections it sent.
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                         Magic "LBRS"                          |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |  Version (1)  | Kind (1 or 2) |    Sync ID    |  Reserved (0) |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                             Nonce                             |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |             Connections sent (Done; 0 in a Request)           |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```
//!
//! All fields are in network byte order. The nonce ties a `Done` to its request.

const MAGIC: [u8; 4] = *b"LBRS";
const VERSION: u8 = 1;
const KIND_REQUEST: u8 = 1;
const KIND_DONE: u8 = 2;
/// The length of both messages.
pub const LEN: usize = 16;

/// The port resync messages use next to sync port `port`: the one above it (8849 by
/// default), or the one below for the highest port.
pub fn resync_port(port: u16) -> u16 {
    port.checked_add(1).unwrap_or(port - 1)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resync {
    /// A returning director asks the master for all its connections.
    Request { syncid: u8, nonce: u32 },
    /// The master has sent them: `conns` records in sync messages before this one.
    Done { syncid: u8, nonce: u32, conns: u32 },
}

/// Why a datagram on the resync port is not a resync message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ResyncError {
    #[error("resync message of {len} bytes, not {LEN}")]
    Length { len: usize },
    #[error("not a resync message (magic {found:02x?})")]
    Magic { found: [u8; 4] },
    #[error("resync message version {version}, not {VERSION}")]
    Version { version: u8 },
    #[error("resync message of unknown kind {kind}")]
    Kind { kind: u8 },
    #[error("resync message with reserved byte {value}, not 0")]
    Reserved { value: u8 },
    #[error("resync request carrying a connection count ({conns}), which only Done carries")]
    RequestCount { conns: u32 },
}

impl Resync {
    pub fn syncid(&self) -> u8 {
        match *self {
            Resync::Request { syncid, .. } | Resync::Done { syncid, .. } => syncid,
        }
    }

    pub fn nonce(&self) -> u32 {
        match *self {
            Resync::Request { nonce, .. } | Resync::Done { nonce, .. } => nonce,
        }
    }

    pub fn encode(&self) -> [u8; LEN] {
        let (kind, conns) = match *self {
            Resync::Request { .. } => (KIND_REQUEST, 0),
            Resync::Done { conns, .. } => (KIND_DONE, conns),
        };
        let mut bytes = [0u8; LEN];
        bytes[..4].copy_from_slice(&MAGIC);
        bytes[4] = VERSION;
        bytes[5] = kind;
        bytes[6] = self.syncid();
        bytes[8..12].copy_from_slice(&self.nonce().to_be_bytes());
        bytes[12..16].copy_from_slice(&conns.to_be_bytes());
        bytes
    }

    pub fn decode(datagram: &[u8]) -> Result<Self, ResyncError> {
        let bytes: &[u8; LEN] = datagram.try_into().map_err(|_| ResyncError::Length {
            len: datagram.len(),
        })?;
        let word = |at: usize| {
            u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
        };
        if bytes[..4] != MAGIC {
            return Err(ResyncError::Magic {
                found: [bytes[0], bytes[1], bytes[2], bytes[3]],
            });
        }
        if bytes[4] != VERSION {
            return Err(ResyncError::Version { version: bytes[4] });
        }
        if bytes[7] != 0 {
            return Err(ResyncError::Reserved { value: bytes[7] });
        }
        let (syncid, nonce, conns) = (bytes[6], word(8), word(12));
        match bytes[5] {
            KIND_REQUEST if conns != 0 => Err(ResyncError::RequestCount { conns }),
            KIND_REQUEST => Ok(Resync::Request { syncid, nonce }),
            KIND_DONE => Ok(Resync::Done {
                syncid,
                nonce,
                conns,
            }),
            kind => Err(ResyncError::Kind { kind }),
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn a_request_is_laid_out_as_the_diagram_says() {
        let bytes = Resync::Request {
            syncid: 7,
            nonce: 0x0102_0304,
        }
        .encode();
        assert_eq!(
            bytes,
            [b'L', b'B', b'R', b'S', 1, 1, 7, 0, 1, 2, 3, 4, 0, 0, 0, 0]
        );
        let done = Resync::Done {
            syncid: 0,
            nonce: 9,
            conns: 0x0a0b_0c0d,
        }
        .encode();
        assert_eq!(
            done,
            [
                b'L', b'B', b'R', b'S', 1, 2, 0, 0, 0, 0, 0, 9, 10, 11, 12, 13
            ]
        );
    }

    #[test]
    fn each_fault_has_its_error() {
        let good = Resync::Request {
            syncid: 1,
            nonce: 2,
        }
        .encode();
        let with = |at: usize, value: u8| {
            let mut bytes = good;
            bytes[at] = value;
            Resync::decode(&bytes)
        };
        assert_eq!(
            Resync::decode(&good[..15]),
            Err(ResyncError::Length { len: 15 })
        );
        assert_eq!(with(0, b'X'), Err(ResyncError::Magic { found: *b"XBRS" }));
        assert_eq!(with(4, 2), Err(ResyncError::Version { version: 2 }));
        assert_eq!(with(5, 3), Err(ResyncError::Kind { kind: 3 }));
        assert_eq!(with(7, 1), Err(ResyncError::Reserved { value: 1 }));
        assert_eq!(with(15, 5), Err(ResyncError::RequestCount { conns: 5 }));
        // A kernel sync message on this port is refused, not misread.
        let mut kernel = [0u8; LEN];
        kernel[1] = 1;
        kernel[4] = 1;
        assert!(matches!(
            Resync::decode(&kernel),
            Err(ResyncError::Magic { .. })
        ));
    }

    #[test]
    fn the_port_is_next_to_the_sync_port() {
        assert_eq!(resync_port(8848), 8849);
        assert_eq!(resync_port(u16::MAX), u16::MAX - 1);
    }

    proptest! {
        #[test]
        fn round_trips(syncid: u8, nonce: u32, conns: u32, done: bool) {
            let message = if done {
                Resync::Done { syncid, nonce, conns }
            } else {
                Resync::Request { syncid, nonce }
            };
            prop_assert_eq!(Resync::decode(&message.encode()), Ok(message));
        }
    }
}
