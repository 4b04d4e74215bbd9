//! One rtnetlink request at a time over a blocking socket with a receive timeout: the
//! next-hop resolver asks routes, links and neighbours; VRRP adds and removes addresses.

use std::{io, os::fd::AsRawFd, time::Duration};

use netlink_packet_core::{
    NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_REPLACE, NLM_F_REQUEST, NetlinkBuffer,
    NetlinkHeader, NetlinkMessage, NetlinkPayload,
};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::{Socket, SocketAddr as NetlinkAddr, protocols::NETLINK_ROUTE};

/// How long one request may wait for its answer.
const TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
#[error("rtnetlink {request}: {source}")]
pub struct RtnlError {
    pub request: &'static str,
    pub source: io::Error,
}

impl RtnlError {
    /// The errno of the failure, if the kernel gave one.
    pub fn errno(&self) -> Option<i32> {
        self.source.raw_os_error()
    }
}

pub struct RouteSocket {
    socket: Socket,
    sequence: u32,
}

/// How a request is answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answer {
    /// One message.
    One,
    /// All parts of a dump.
    Dump,
    /// Only an acknowledgement (a deletion).
    Ack,
    /// Only an acknowledgement, creating or replacing (`ip addr replace`).
    Replace,
}

impl RouteSocket {
    pub fn new() -> Result<Self, RtnlError> {
        let error = |source| RtnlError {
            request: "socket",
            source,
        };
        let mut socket = Socket::new(NETLINK_ROUTE).map_err(error)?;
        socket.bind_auto().map_err(error)?;
        socket.connect(&NetlinkAddr::new(0, 0)).map_err(error)?;
        set_receive_timeout(&socket, TIMEOUT).map_err(error)?;
        Ok(Self {
            socket,
            sequence: 0,
        })
    }

    /// Send `message`; collect the replies (all parts of a dump, the single answer, or
    /// nothing but the acknowledgement).
    pub fn request(
        &mut self,
        name: &'static str,
        message: RouteNetlinkMessage,
        dump: bool,
    ) -> Result<Vec<RouteNetlinkMessage>, RtnlError> {
        self.ask(name, message, if dump { Answer::Dump } else { Answer::One })
    }

    /// As `request`, with the kind of answer said.
    pub fn ask(
        &mut self,
        name: &'static str,
        message: RouteNetlinkMessage,
        answer: Answer,
    ) -> Result<Vec<RouteNetlinkMessage>, RtnlError> {
        let error = |source| RtnlError {
            request: name,
            source,
        };
        self.sequence = self.sequence.wrapping_add(1);
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST
            | match answer {
                Answer::One => 0,
                Answer::Dump => NLM_F_DUMP,
                Answer::Ack => NLM_F_ACK,
                Answer::Replace => NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE,
            };
        header.sequence_number = self.sequence;
        let mut packet = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(message));
        packet.finalize();
        let mut buffer = vec![0; packet.buffer_len()];
        packet.serialize(&mut buffer);
        self.socket.send(&buffer, 0).map_err(error)?;

        let mut replies = Vec::new();
        loop {
            let (data, _) = self.socket.recv_from_full().map_err(error)?;
            let mut offset = 0;
            while offset < data.len() {
                let bytes = &data[offset..];
                let length = NetlinkBuffer::new_checked(bytes)
                    .map_err(|e| error(io::Error::new(io::ErrorKind::InvalidData, e)))?
                    .length() as usize;
                let reply = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&bytes[..length])
                    .map_err(|e| error(io::Error::new(io::ErrorKind::InvalidData, e)))?;
                offset += length.max(1).next_multiple_of(4);
                if reply.header.sequence_number != self.sequence {
                    continue;
                }
                match reply.payload {
                    NetlinkPayload::InnerMessage(inner) => {
                        replies.push(inner);
                        if answer == Answer::One {
                            return Ok(replies);
                        }
                    }
                    NetlinkPayload::Done(_) => return Ok(replies),
                    NetlinkPayload::Error(failure) => {
                        return match failure.code {
                            Some(code) => Err(error(io::Error::from_raw_os_error(-code.get()))),
                            None => Ok(replies),
                        };
                    }
                    _ => {}
                }
            }
        }
    }
}

/// Make `recv` on a netlink `socket` give up after `timeout` (SO_RCVTIMEO).
pub fn set_receive_timeout(socket: &Socket, timeout: Duration) -> io::Result<()> {
    let value = libc::timeval {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_usec: timeout.subsec_micros() as libc::suseconds_t,
    };
    // SAFETY: `value` is a live timeval and its size is passed with it.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&value as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}
