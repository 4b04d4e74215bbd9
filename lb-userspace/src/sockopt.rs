//! Socket options std does not offer, for the VRRP and sync sockets: one home for the
//! `setsockopt` calls and the multicast requests by interface index.

use std::{
    io,
    net::{Ipv4Addr, Ipv6Addr},
    os::fd::RawFd,
};

/// A libc return code as a result.
pub fn check(rc: libc::c_int) -> io::Result<()> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// `setsockopt(fd, level, name, value)`.
pub fn set<T>(fd: RawFd, level: libc::c_int, name: libc::c_int, value: &T) -> io::Result<()> {
    // SAFETY: `value` is a live reference and its size is passed with it.
    check(unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (value as *const T).cast(),
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    })
}

/// Receive only what comes in on `interface` (`SO_BINDTODEVICE`).
pub fn bind_to_device(fd: RawFd, interface: &str) -> io::Result<()> {
    // SAFETY: the interface name's bytes with their length.
    check(unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_BINDTODEVICE,
            interface.as_ptr().cast(),
            interface.len() as libc::socklen_t,
        )
    })
}

/// An IPv4 multicast request: `group` (unspecified for `IP_MULTICAST_IF`) on the
/// interface of index `ifindex`.
pub fn ip_mreqn(group: Ipv4Addr, ifindex: u32) -> libc::ip_mreqn {
    libc::ip_mreqn {
        imr_multiaddr: libc::in_addr {
            s_addr: u32::from_ne_bytes(group.octets()),
        },
        imr_address: libc::in_addr { s_addr: 0 },
        imr_ifindex: ifindex as libc::c_int,
    }
}

/// An IPv6 multicast request: `group` on the interface of index `ifindex`.
pub fn ipv6_mreq(group: Ipv6Addr, ifindex: u32) -> libc::ipv6_mreq {
    libc::ipv6_mreq {
        ipv6mr_multiaddr: libc::in6_addr {
            s6_addr: group.octets(),
        },
        ipv6mr_interface: ifindex,
    }
}
