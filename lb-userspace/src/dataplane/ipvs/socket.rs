//! A blocking generic netlink socket with a receive timeout: one request at a time, its
//! replies collected until the acknowledgement (or, for a dump, `NLMSG_DONE`, however many
//! datagrams the dump takes). A refusal comes back as `IpvsError::Kernel` with the errno
//! and the operation's name.

use std::{
    io,
    sync::atomic::{AtomicU32, Ordering},
    time::Duration,
};

use netlink_sys::{Socket, SocketAddr as NetlinkAddr, protocols::NETLINK_GENERIC};

use super::{
    error::{DecodeError, IpvsError},
    genl::{self, Reply},
};

/// How long one request may wait for each datagram of its answer.
const TIMEOUT: Duration = Duration::from_secs(5);
/// Receive buffer asked for (the kernel caps it at `net.core.rmem_max`). Dumps are flow
/// controlled by the kernel, so this is comfort, not correctness.
const RECEIVE_BUFFER: usize = 1 << 20;

/// Where one exchange stands after a datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Progress {
    /// More datagrams belong to the answer.
    Continue,
    /// The answer is complete.
    Finished,
}

/// Why an exchange failed, before the operation is named.
#[derive(Debug, PartialEq, Eq)]
pub enum ExchangeError {
    Kernel { errno: i32 },
    Decode(DecodeError),
}

impl From<DecodeError> for ExchangeError {
    fn from(error: DecodeError) -> Self {
        ExchangeError::Decode(error)
    }
}

/// What a requester does with each data message of an answer: its command, its
/// attributes.
pub type OnData<'f> = dyn FnMut(u8, &[u8]) -> Result<(), DecodeError> + 'f;

/// The state of one request's answer: which sequence number is ours and how it ends.
#[derive(Clone, Copy, Debug)]
pub struct Exchange {
    pub sequence: u32,
    /// A dump ends with `NLMSG_DONE`; anything else with the acknowledgement.
    pub dump: bool,
}

impl Exchange {
    /// Take one datagram of the answer, handing each data message (command, attributes)
    /// to `on_data`. Messages with another sequence number (late answers to an earlier
    /// request that timed out) are skipped.
    pub fn absorb(
        &self,
        datagram: &[u8],
        on_data: &mut OnData<'_>,
    ) -> Result<Progress, ExchangeError> {
        for message in genl::messages(datagram) {
            let message = message?;
            if message.sequence != self.sequence {
                continue;
            }
            match message.reply()? {
                Reply::Data { command, attrs } => on_data(command, attrs)?,
                Reply::Error { errno } => return Err(ExchangeError::Kernel { errno }),
                Reply::Ack if !self.dump => return Ok(Progress::Finished),
                Reply::Done if self.dump => return Ok(Progress::Finished),
                Reply::Ack | Reply::Done | Reply::Noop => {}
            }
        }
        Ok(Progress::Continue)
    }
}

pub struct GenlSocket {
    socket: Socket,
    sequence: AtomicU32,
}

impl GenlSocket {
    pub fn open() -> Result<Self, IpvsError> {
        let error = |action| move |source| IpvsError::Socket { action, source };
        let mut socket = Socket::new(NETLINK_GENERIC).map_err(error("opening"))?;
        socket.bind_auto().map_err(error("binding"))?;
        socket
            .connect(&NetlinkAddr::new(0, 0))
            .map_err(error("connecting to the kernel"))?;
        crate::rtnl::set_receive_timeout(&socket, TIMEOUT)
            .map_err(error("setting the receive timeout"))?;
        // Best effort: a smaller buffer only means more, smaller reads.
        let _ = socket.set_rx_buf_sz(RECEIVE_BUFFER);
        Ok(Self {
            socket,
            sequence: AtomicU32::new(0),
        })
    }

    fn next_sequence(&self) -> u32 {
        self.sequence
            .fetch_add(1, Ordering::Relaxed)
            .wrapping_add(1)
    }

    /// Send the request `encode(sequence)` and read its answer, handing each data message
    /// to `on_data`. `operation` names the request in errors (`adding service TCP
    /// 10.0.0.1:80`).
    pub fn exchange(
        &self,
        operation: &str,
        dump: bool,
        encode: impl FnOnce(u32) -> Vec<u8>,
        mut on_data: impl FnMut(u8, &[u8]) -> Result<(), DecodeError>,
    ) -> Result<(), IpvsError> {
        let io_error = |source| IpvsError::Io {
            operation: operation.to_owned(),
            source,
        };
        let exchange = Exchange {
            sequence: self.next_sequence(),
            dump,
        };
        self.socket
            .send(&encode(exchange.sequence), 0)
            .map_err(io_error)?;
        loop {
            let (datagram, _) = self.socket.recv_from_full().map_err(|e| {
                if e.kind() == io::ErrorKind::WouldBlock {
                    io_error(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("no answer from the kernel within {TIMEOUT:?}"),
                    ))
                } else {
                    io_error(e)
                }
            })?;
            match exchange.absorb(&datagram, &mut on_data) {
                Ok(Progress::Finished) => return Ok(()),
                Ok(Progress::Continue) => {}
                Err(ExchangeError::Kernel { errno }) => {
                    return Err(IpvsError::Kernel {
                        operation: operation.to_owned(),
                        errno,
                    });
                }
                Err(ExchangeError::Decode(source)) => {
                    return Err(IpvsError::Decode {
                        operation: operation.to_owned(),
                        source,
                    });
                }
            }
        }
    }

    /// The id of generic netlink family `name`, or `None` when the kernel has no such
    /// family (nlctrl answers ENOENT). Needs no privilege.
    pub fn resolve_family(&self, name: &str) -> Result<Option<u16>, IpvsError> {
        let operation = format!("resolving generic netlink family {name}");
        let mut id = None;
        let result = self.exchange(
            &operation,
            false,
            |sequence| genl::get_family_request(name, sequence),
            |command, attrs| {
                id = Some(genl::family_id(command, attrs)?);
                Ok(())
            },
        );
        match result {
            Err(error) if error.errno() == Some(libc::ENOENT) => Ok(None),
            Err(error) => Err(error),
            Ok(()) => id.map(Some).ok_or(IpvsError::Decode {
                operation,
                source: DecodeError::Missing {
                    attribute: "CTRL_CMD_NEWFAMILY",
                    within: "nlctrl's answer",
                },
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataplane::ipvs::genl::tests::hex;

    /// A NEW_DEST dump entry with only a marker attribute, sequence 9.
    fn dump_entry(marker: u8) -> String {
        format!("1c000000 2400 0200 09000000 00000000 05 01 0000 0500 0100 {marker:02x}000000")
    }

    const DONE: &str = "14000000 0300 0200 09000000 00000000 00000000";

    #[test]
    fn a_dump_split_over_datagrams_is_collected_until_done() {
        let exchange = Exchange {
            sequence: 9,
            dump: true,
        };
        let mut seen = Vec::new();
        let mut on_data = |command: u8, attrs: &[u8]| {
            seen.push((command, attrs[4]));
            Ok(())
        };
        let first = hex(&format!("{}{}", dump_entry(1), dump_entry(2)));
        assert_eq!(
            exchange.absorb(&first, &mut on_data),
            Ok(Progress::Continue)
        );
        let second = hex(&format!("{}{DONE}", dump_entry(3)));
        assert_eq!(
            exchange.absorb(&second, &mut on_data),
            Ok(Progress::Finished)
        );
        assert_eq!(seen, [(5, 1), (5, 2), (5, 3)]);
    }

    #[test]
    fn other_sequence_numbers_are_skipped() {
        let exchange = Exchange {
            sequence: 10,
            dump: true,
        };
        let mut count = 0;
        let stale = hex(&format!("{}{DONE}", dump_entry(1)));
        assert_eq!(
            exchange.absorb(&stale, &mut |_, _| {
                count += 1;
                Ok(())
            }),
            Ok(Progress::Continue)
        );
        assert_eq!(count, 0);
    }

    #[test]
    fn a_refusal_carries_the_errno_and_an_ack_finishes() {
        let exchange = Exchange {
            sequence: 9,
            dump: false,
        };
        // NLMSG_ERROR -17 (EEXIST) with the request's header echoed.
        let refusal = hex("24000000 0200 0000 09000000 00000000 efffffff 
                           14000000 2400 0500 09000000 00000000");
        assert_eq!(
            exchange.absorb(&refusal, &mut |_, _| Ok(())),
            Err(ExchangeError::Kernel { errno: 17 })
        );
        let ack = hex("24000000 0200 0000 09000000 00000000 00000000
                       14000000 2400 0500 09000000 00000000");
        assert_eq!(
            exchange.absorb(&ack, &mut |_, _| Ok(())),
            Ok(Progress::Finished)
        );
        // A dump that fails half way says so in its DONE.
        let dump = Exchange {
            sequence: 9,
            dump: true,
        };
        let failed = hex("14000000 0300 0200 09000000 00000000 f9ffffff");
        assert_eq!(
            dump.absorb(&failed, &mut |_, _| Ok(())),
            Err(ExchangeError::Kernel { errno: 7 })
        );
    }

    #[test]
    fn a_garbled_datagram_is_a_decode_error() {
        let exchange = Exchange {
            sequence: 9,
            dump: true,
        };
        assert!(matches!(
            exchange.absorb(&[1, 2, 3], &mut |_, _| Ok(())),
            Err(ExchangeError::Decode(DecodeError::Truncated { .. }))
        ));
    }

    #[test]
    fn nlctrl_answers_for_a_known_family_and_refuses_an_unknown_one() {
        // Needs only a netlink socket, no privilege. (Names are at most 15 bytes:
        // nlctrl refuses longer ones with EINVAL.)
        let socket = GenlSocket::open().expect("generic netlink socket");
        assert_eq!(
            socket
                .resolve_family("lbd-no-such")
                .expect("nlctrl answers"),
            None
        );
        assert_eq!(
            socket.resolve_family("nlctrl").expect("nlctrl answers"),
            Some(genl::GENL_ID_CTRL)
        );
    }
}
