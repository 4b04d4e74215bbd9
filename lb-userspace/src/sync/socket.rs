//! The sync daemon's two UDP sockets, set up as the kernel's daemon sets up its own
//! (`make_send_sock`, `make_receive_sock` in `ip_vs_sync.c`), so that each side takes the
//! other's messages: the sender leaves by the sync interface to the group and port, with
//! the configured TTL and without looping back; the receiver is bound to the group and
//! port on the sync interface only, and joined to the group there. Both are non-blocking.

use std::{
    io,
    net::{IpAddr, SocketAddr, UdpSocket},
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
};

use crate::sockopt::{bind_to_device, check, ip_mreqn, ipv6_mreq, set, sockaddr};

pub struct SyncSockets {
    pub send: UdpSocket,
    pub receive: UdpSocket,
}

impl SyncSockets {
    /// The sockets on `interface` for `group`:`port`, sending with `ttl`. Called in the
    /// network namespace the interface is in.
    pub fn open(interface: &str, group: IpAddr, port: u16, ttl: u8) -> io::Result<Self> {
        let ifindex = ifindex(interface)?;
        let any: IpAddr = match group {
            IpAddr::V4(_) => std::net::Ipv4Addr::UNSPECIFIED.into(),
            IpAddr::V6(_) => std::net::Ipv6Addr::UNSPECIFIED.into(),
        };
        let send = UdpSocket::bind(SocketAddr::new(any, 0))?;
        let raw = send.as_raw_fd();
        match group {
            IpAddr::V4(_) => {
                let by_interface = ip_mreqn(std::net::Ipv4Addr::UNSPECIFIED, ifindex);
                set(raw, libc::IPPROTO_IP, libc::IP_MULTICAST_IF, &by_interface)?;
                send.set_multicast_loop_v4(false)?;
                send.set_multicast_ttl_v4(u32::from(ttl))?;
            }
            IpAddr::V6(_) => {
                let index = ifindex as libc::c_int;
                set(raw, libc::IPPROTO_IPV6, libc::IPV6_MULTICAST_IF, &index)?;
                send.set_multicast_loop_v6(false)?;
                let hops = libc::c_int::from(ttl);
                set(raw, libc::IPPROTO_IPV6, libc::IPV6_MULTICAST_HOPS, &hops)?;
            }
        }
        send.connect(SocketAddr::new(group, port))?;
        send.set_nonblocking(true)?;
        let receive = receiving(interface, ifindex, group, port)?;
        Ok(Self { send, receive })
    }
}

/// A UDP socket bound to `group`:`port` on `interface` alone, joined to the group there.
fn receiving(interface: &str, ifindex: u32, group: IpAddr, port: u16) -> io::Result<UdpSocket> {
    let domain = if group.is_ipv6() {
        libc::AF_INET6
    } else {
        libc::AF_INET
    };
    // SAFETY: plain socket(2); owned at once.
    let raw = unsafe {
        libc::socket(
            domain,
            libc::SOCK_DGRAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
    };
    check(raw)?;
    // SAFETY: a new descriptor nothing else owns.
    let socket = UdpSocket::from(unsafe { OwnedFd::from_raw_fd(raw) });
    let on: libc::c_int = 1;
    set(raw, libc::SOL_SOCKET, libc::SO_REUSEADDR, &on)?;
    bind_to_device(raw, interface)?;
    let (addr, len) = sockaddr(group, port, ifindex);
    // SAFETY: a valid socket address with its length.
    check(unsafe { libc::bind(raw, (&addr as *const libc::sockaddr_storage).cast(), len) })?;
    match group {
        IpAddr::V4(group) => {
            let request = ip_mreqn(group, ifindex);
            set(raw, libc::IPPROTO_IP, libc::IP_ADD_MEMBERSHIP, &request)?;
        }
        IpAddr::V6(group) => {
            let request = ipv6_mreq(group, ifindex);
            set(raw, libc::IPPROTO_IPV6, libc::IPV6_ADD_MEMBERSHIP, &request)?;
        }
    }
    Ok(socket)
}

/// The index of `interface`, or why not.
fn ifindex(interface: &str) -> io::Result<u32> {
    let name = std::ffi::CString::new(interface)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in interface name"))?;
    // SAFETY: a NUL-terminated name.
    match unsafe { libc::if_nametoindex(name.as_ptr()) } {
        0 => Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("no interface {interface}"),
        )),
        index => Ok(index),
    }
}
