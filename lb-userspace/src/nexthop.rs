//! Next hops of real servers: through which interface and to which Ethernet address the
//! data plane sends a real's frames.
//!
//! [`KernelNextHops`] asks the kernel over rtnetlink, so the answer matches what the
//! kernel itself would do: `RTM_GETROUTE` for the egress interface (the real must be
//! on-link: DR rewrites only MACs), `RTM_GETNEIGH` for its MAC, `RTM_GETLINK` for the
//! egress interface's own MAC. A real missing from the neighbour table is probed by sending one
//! UDP datagram to its discard port (9) from the egress interface, which makes the kernel
//! resolve it with ARP/NDP; the table is then polled for a bounded time.

use std::{
    io,
    net::{IpAddr, SocketAddr, UdpSocket},
    os::fd::AsRawFd,
    time::{Duration, Instant},
};

use netlink_packet_core::{
    NLM_F_DUMP, NLM_F_REQUEST, NetlinkBuffer, NetlinkHeader, NetlinkMessage, NetlinkPayload,
};
use netlink_packet_route::{
    AddressFamily, RouteNetlinkMessage,
    link::{LinkAttribute, LinkMessage},
    neighbour::{NeighbourAddress, NeighbourAttribute, NeighbourMessage, NeighbourState},
    route::{RouteAddress, RouteAttribute, RouteMessage, RouteType},
};
use netlink_sys::{Socket, SocketAddr as NetlinkAddr, protocols::NETLINK_ROUTE};

/// Where and how to send a real's frames.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NextHop {
    /// Egress interface.
    pub ifindex: u32,
    /// The real's Ethernet address (destination).
    pub mac: [u8; 6],
    /// The egress interface's Ethernet address (source).
    pub src_mac: [u8; 6],
}

#[derive(Debug, thiserror::Error)]
pub enum NextHopError {
    #[error("rtnetlink {request}: {source}")]
    Netlink {
        request: &'static str,
        source: io::Error,
    },
    #[error("no route to {addr}")]
    NoRoute { addr: IpAddr },
    #[error("{addr} is a local address of this host")]
    Local { addr: IpAddr },
    #[error(
        "{addr} is not on a directly connected network (route via {gateway}); DR needs the real on the director's L2 segment"
    )]
    NotOnLink { addr: IpAddr, gateway: IpAddr },
    #[error("no ARP/NDP answer from {addr} on interface {ifindex} within {waited:?}")]
    Unresolved {
        addr: IpAddr,
        ifindex: u32,
        waited: Duration,
    },
    #[error("interface {ifindex} has no Ethernet address")]
    NoMac { ifindex: u32 },
}

/// Resolves next hops; the XDP backend uses it for every real it programs.
pub trait NextHopResolver {
    fn resolve(&mut self, addr: IpAddr) -> Result<NextHop, NextHopError>;
}

/// The kernel's routing and neighbour tables, in the network namespace lbd runs in.
pub struct KernelNextHops {
    socket: Socket,
    sequence: u32,
    /// How long to wait for an ARP/NDP answer after probing.
    probe_timeout: Duration,
}

const PROBE_PORT: u16 = 9;
const POLL_INTERVAL: Duration = Duration::from_millis(20);
const NETLINK_TIMEOUT: Duration = Duration::from_secs(2);

impl KernelNextHops {
    pub fn new(probe_timeout: Duration) -> Result<Self, NextHopError> {
        let netlink = |source| NextHopError::Netlink {
            request: "socket",
            source,
        };
        let mut socket = Socket::new(NETLINK_ROUTE).map_err(netlink)?;
        socket.bind_auto().map_err(netlink)?;
        socket.connect(&NetlinkAddr::new(0, 0)).map_err(netlink)?;
        set_receive_timeout(&socket, NETLINK_TIMEOUT).map_err(netlink)?;
        Ok(Self {
            socket,
            sequence: 0,
            probe_timeout,
        })
    }

    /// Send `message`; collect the replies (all parts of a dump, or the single answer).
    fn request(
        &mut self,
        name: &'static str,
        message: RouteNetlinkMessage,
        dump: bool,
    ) -> Result<Vec<RouteNetlinkMessage>, NextHopError> {
        let netlink = |source| NextHopError::Netlink {
            request: name,
            source,
        };
        self.sequence = self.sequence.wrapping_add(1);
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | if dump { NLM_F_DUMP } else { 0 };
        header.sequence_number = self.sequence;
        let mut packet = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(message));
        packet.finalize();
        let mut buffer = vec![0; packet.buffer_len()];
        packet.serialize(&mut buffer);
        self.socket.send(&buffer, 0).map_err(netlink)?;

        let mut replies = Vec::new();
        loop {
            let (data, _) = self.socket.recv_from_full().map_err(netlink)?;
            let mut offset = 0;
            while offset < data.len() {
                let bytes = &data[offset..];
                let length = NetlinkBuffer::new_checked(bytes)
                    .map_err(|e| netlink(io::Error::new(io::ErrorKind::InvalidData, e)))?
                    .length() as usize;
                let reply = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&bytes[..length])
                    .map_err(|e| netlink(io::Error::new(io::ErrorKind::InvalidData, e)))?;
                offset += length.max(1).next_multiple_of(4);
                if reply.header.sequence_number != self.sequence {
                    continue;
                }
                match reply.payload {
                    NetlinkPayload::InnerMessage(inner) => {
                        replies.push(inner);
                        if !dump {
                            return Ok(replies);
                        }
                    }
                    NetlinkPayload::Done(_) => return Ok(replies),
                    NetlinkPayload::Error(error) => {
                        return match error.code {
                            Some(code) => Err(netlink(io::Error::from_raw_os_error(-code.get()))),
                            None => Ok(replies),
                        };
                    }
                    _ => {}
                }
            }
        }
    }

    /// Egress interface of `addr`; an error if it is not on-link.
    fn route(&mut self, addr: IpAddr) -> Result<u32, NextHopError> {
        let mut message = RouteMessage::default();
        message.header.address_family = family(addr);
        message.header.destination_prefix_length = if addr.is_ipv4() { 32 } else { 128 };
        message
            .attributes
            .push(RouteAttribute::Destination(RouteAddress::from(addr)));
        let replies = match self.request("get route", RouteNetlinkMessage::GetRoute(message), false)
        {
            Err(NextHopError::Netlink { source, .. })
                if matches!(
                    source.raw_os_error(),
                    Some(libc::ENETUNREACH | libc::EHOSTUNREACH)
                ) =>
            {
                return Err(NextHopError::NoRoute { addr });
            }
            other => other?,
        };
        let Some(RouteNetlinkMessage::NewRoute(route)) = replies.into_iter().next() else {
            return Err(NextHopError::NoRoute { addr });
        };
        if route.header.kind == RouteType::Local {
            return Err(NextHopError::Local { addr });
        }
        let mut oif = None;
        for attribute in &route.attributes {
            match attribute {
                RouteAttribute::Oif(index) => oif = Some(*index),
                RouteAttribute::Gateway(RouteAddress::Inet(gateway)) => {
                    return Err(NextHopError::NotOnLink {
                        addr,
                        gateway: (*gateway).into(),
                    });
                }
                RouteAttribute::Gateway(RouteAddress::Inet6(gateway)) => {
                    return Err(NextHopError::NotOnLink {
                        addr,
                        gateway: (*gateway).into(),
                    });
                }
                _ => {}
            }
        }
        oif.ok_or(NextHopError::NoRoute { addr })
    }

    /// The usable MAC of `addr` on `ifindex`, if the neighbour table has one.
    fn neighbour(&mut self, addr: IpAddr, ifindex: u32) -> Result<Option<[u8; 6]>, NextHopError> {
        let mut message = NeighbourMessage::default();
        message.header.family = family(addr);
        message.header.ifindex = ifindex;
        message
            .attributes
            .push(NeighbourAttribute::Destination(match addr {
                IpAddr::V4(a) => NeighbourAddress::Inet(a),
                IpAddr::V6(a) => NeighbourAddress::Inet6(a),
            }));
        let replies = match self.request(
            "get neighbour",
            RouteNetlinkMessage::GetNeighbour(message),
            false,
        ) {
            Err(NextHopError::Netlink { source, .. })
                if source.raw_os_error() == Some(libc::ENOENT) =>
            {
                return Ok(None);
            }
            other => other?,
        };
        for reply in replies {
            let RouteNetlinkMessage::NewNeighbour(neighbour) = reply else {
                continue;
            };
            let usable = matches!(
                neighbour.header.state,
                NeighbourState::Reachable
                    | NeighbourState::Stale
                    | NeighbourState::Delay
                    | NeighbourState::Probe
                    | NeighbourState::Permanent
                    | NeighbourState::Noarp
            );
            if !usable || neighbour.header.ifindex != ifindex {
                continue;
            }
            for attribute in &neighbour.attributes {
                if let NeighbourAttribute::LinkLayerAddress(bytes) = attribute
                    && let Ok(mac) = <[u8; 6]>::try_from(bytes.as_slice())
                {
                    return Ok(Some(mac));
                }
            }
        }
        Ok(None)
    }

    /// Make the kernel resolve `addr`: one datagram to its discard port, sent out of
    /// `ifindex`.
    fn probe(&self, addr: IpAddr, ifindex: u32) -> io::Result<()> {
        let bind: SocketAddr = match addr {
            IpAddr::V4(_) => "0.0.0.0:0".parse().expect("literal"),
            IpAddr::V6(_) => "[::]:0".parse().expect("literal"),
        };
        let socket = UdpSocket::bind(bind)?;
        bind_to_device(&socket, ifindex)?;
        socket.send_to(&[0], SocketAddr::new(addr, PROBE_PORT))?;
        Ok(())
    }
}

impl NextHopResolver for KernelNextHops {
    fn resolve(&mut self, addr: IpAddr) -> Result<NextHop, NextHopError> {
        let ifindex = self.route(addr)?;
        let src_mac = self.interface_mac(ifindex)?;
        if let Some(mac) = self.neighbour(addr, ifindex)? {
            return Ok(NextHop {
                ifindex,
                mac,
                src_mac,
            });
        }
        // A failed send (e.g. EHOSTUNREACH from an earlier failed resolution) still
        // starts resolution, so it is not an error by itself.
        if let Err(error) = self.probe(addr, ifindex) {
            tracing::debug!(%addr, %error, "neighbour probe send failed");
        }
        let started = Instant::now();
        while started.elapsed() < self.probe_timeout {
            std::thread::sleep(POLL_INTERVAL);
            if let Some(mac) = self.neighbour(addr, ifindex)? {
                return Ok(NextHop {
                    ifindex,
                    mac,
                    src_mac,
                });
            }
        }
        Err(NextHopError::Unresolved {
            addr,
            ifindex,
            waited: self.probe_timeout,
        })
    }
}

impl KernelNextHops {
    /// The Ethernet address of interface `ifindex`.
    fn interface_mac(&mut self, ifindex: u32) -> Result<[u8; 6], NextHopError> {
        let mut message = LinkMessage::default();
        message.header.index = ifindex;
        let replies = self.request("get link", RouteNetlinkMessage::GetLink(message), false)?;
        for reply in replies {
            if let RouteNetlinkMessage::NewLink(link) = reply {
                for attribute in &link.attributes {
                    if let LinkAttribute::Address(bytes) = attribute
                        && let Ok(mac) = <[u8; 6]>::try_from(bytes.as_slice())
                    {
                        return Ok(mac);
                    }
                }
            }
        }
        Err(NextHopError::NoMac { ifindex })
    }
}

fn family(addr: IpAddr) -> AddressFamily {
    match addr {
        IpAddr::V4(_) => AddressFamily::Inet,
        IpAddr::V6(_) => AddressFamily::Inet6,
    }
}

fn set_receive_timeout(socket: &Socket, timeout: Duration) -> io::Result<()> {
    let value = libc::timeval {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_usec: timeout.subsec_micros() as libc::suseconds_t,
    };
    setsockopt(socket.as_raw_fd(), libc::SO_RCVTIMEO, &value)
}

fn bind_to_device(socket: &UdpSocket, ifindex: u32) -> io::Result<()> {
    setsockopt(
        socket.as_raw_fd(),
        libc::SO_BINDTOIFINDEX,
        &(ifindex as libc::c_int),
    )
}

/// `setsockopt(fd, SOL_SOCKET, name, value)`.
fn setsockopt<T>(fd: libc::c_int, name: libc::c_int, value: &T) -> io::Result<()> {
    // SAFETY: `value` is a live reference and its size is passed with it.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            name,
            (value as *const T).cast(),
            size_of::<T>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}
