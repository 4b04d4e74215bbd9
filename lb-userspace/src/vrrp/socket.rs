//! The VRRP socket of one instance: a raw IP socket for protocol 112 bound to the
//! instance's interface and source address, sending with TTL / hop limit 255 (RFC 5798
//! section 5.1.1.3), joined to the multicast group (224.0.0.18, ff02::12, or keepalived's
//! `vrrp_mcast_group4/6`) unless the instance talks to unicast peers only, and telling
//! for each received packet its source, destination and TTL.

use std::{
    io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
};

use lb_vrrp::packet::IPPROTO_VRRP;

use crate::sockopt::{bind_to_device, check, ip_mreqn, ipv6_mreq, set, sockaddr};
use tokio::io::unix::AsyncFd;

/// VRRP's IPv4 multicast group.
pub const GROUP4: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 18);
/// VRRP's IPv6 multicast group.
pub const GROUP6: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 0x12);

/// A packet as received.
#[derive(Debug)]
pub struct Received {
    pub src: IpAddr,
    pub dst: IpAddr,
    /// TTL (IPv4) or hop limit (IPv6).
    pub ttl: u8,
    pub payload: Vec<u8>,
}

pub struct VrrpSocket {
    fd: AsyncFd<OwnedFd>,
    ipv6: bool,
    /// The source of sent packets, given with each (a bound raw socket would receive
    /// only packets to that address, not the group's).
    source: IpAddr,
}

impl VrrpSocket {
    /// A socket on `interface` (index `ifindex`) sending from `source`, joined to
    /// `group` if given (a unicast instance receives only what is sent to it). Must be
    /// called inside a tokio runtime.
    pub fn open(
        interface: &str,
        ifindex: u32,
        source: IpAddr,
        group: Option<IpAddr>,
    ) -> io::Result<Self> {
        let ipv6 = source.is_ipv6();
        let domain = if ipv6 { libc::AF_INET6 } else { libc::AF_INET };
        // SAFETY: plain socket(2); owned at once.
        let raw = unsafe {
            libc::socket(
                domain,
                libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                i32::from(IPPROTO_VRRP),
            )
        };
        check(raw)?;
        // SAFETY: a new descriptor nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let raw = fd.as_raw_fd();
        bind_to_device(raw, interface)?;
        let hops: libc::c_int = 255;
        let off: libc::c_int = 0;
        let on: libc::c_int = 1;
        if ipv6 {
            set(raw, libc::IPPROTO_IPV6, libc::IPV6_UNICAST_HOPS, &hops)?;
            set(raw, libc::IPPROTO_IPV6, libc::IPV6_MULTICAST_HOPS, &hops)?;
            set(raw, libc::IPPROTO_IPV6, libc::IPV6_MULTICAST_LOOP, &off)?;
            set(
                raw,
                libc::IPPROTO_IPV6,
                libc::IPV6_MULTICAST_IF,
                &(ifindex as libc::c_int),
            )?;
            set(raw, libc::IPPROTO_IPV6, libc::IPV6_RECVHOPLIMIT, &on)?;
            set(raw, libc::IPPROTO_IPV6, libc::IPV6_RECVPKTINFO, &on)?;
            if let Some(IpAddr::V6(group)) = group {
                let request = ipv6_mreq(group, ifindex);
                set(raw, libc::IPPROTO_IPV6, libc::IPV6_ADD_MEMBERSHIP, &request)?;
            }
        } else {
            set(raw, libc::IPPROTO_IP, libc::IP_TTL, &hops)?;
            set(raw, libc::IPPROTO_IP, libc::IP_MULTICAST_TTL, &hops)?;
            set(raw, libc::IPPROTO_IP, libc::IP_MULTICAST_LOOP, &off)?;
            let interface_request = ip_mreqn(Ipv4Addr::UNSPECIFIED, ifindex);
            set(
                raw,
                libc::IPPROTO_IP,
                libc::IP_MULTICAST_IF,
                &interface_request,
            )?;
            if let Some(IpAddr::V4(group)) = group {
                let request = ip_mreqn(group, ifindex);
                set(raw, libc::IPPROTO_IP, libc::IP_ADD_MEMBERSHIP, &request)?;
            }
        }
        // SAFETY: the AsyncFd owns `fd`, which stays open and the same until dropped.
        let fd = unsafe { AsyncFd::register(fd) }.map_err(|e| io::Error::other(e.to_string()))?;
        Ok(Self { fd, ipv6, source })
    }

    /// Send `packet` to `dst` (the group or a unicast peer), from the socket's source.
    pub fn send(&self, packet: &[u8], dst: IpAddr, ifindex: u32) -> io::Result<()> {
        let (mut to, len) = sockaddr(dst, 0, ifindex);
        let mut iov = libc::iovec {
            iov_base: packet.as_ptr().cast_mut().cast(),
            iov_len: packet.len(),
        };
        // The source address as IP_PKTINFO / IPV6_PKTINFO.
        let mut control = [0u64; 8];
        // SAFETY: an all-zero msghdr is valid; its fields are set below.
        let mut message: libc::msghdr = unsafe { std::mem::zeroed() };
        message.msg_name = (&mut to as *mut libc::sockaddr_storage).cast();
        message.msg_namelen = len;
        message.msg_iov = &mut iov;
        message.msg_iovlen = 1;
        message.msg_control = control.as_mut_ptr().cast();
        // SAFETY: building one control message in `control`, large enough for either
        // pktinfo, with the libc macros.
        unsafe {
            let (level, kind, size) = match self.source {
                IpAddr::V4(_) => (
                    libc::IPPROTO_IP,
                    libc::IP_PKTINFO,
                    std::mem::size_of::<libc::in_pktinfo>(),
                ),
                IpAddr::V6(_) => (
                    libc::IPPROTO_IPV6,
                    libc::IPV6_PKTINFO,
                    std::mem::size_of::<libc::in6_pktinfo>(),
                ),
            };
            message.msg_controllen = libc::CMSG_SPACE(size as u32) as usize;
            let cmsg = libc::CMSG_FIRSTHDR(&message);
            (*cmsg).cmsg_level = level;
            (*cmsg).cmsg_type = kind;
            (*cmsg).cmsg_len = libc::CMSG_LEN(size as u32) as usize;
            let data = libc::CMSG_DATA(cmsg);
            match self.source {
                IpAddr::V4(source) => {
                    let info = libc::in_pktinfo {
                        ipi_ifindex: ifindex as libc::c_int,
                        ipi_spec_dst: libc::in_addr {
                            s_addr: u32::from_ne_bytes(source.octets()),
                        },
                        ipi_addr: libc::in_addr { s_addr: 0 },
                    };
                    std::ptr::write_unaligned(data.cast::<libc::in_pktinfo>(), info);
                }
                IpAddr::V6(source) => {
                    let info = libc::in6_pktinfo {
                        ipi6_addr: libc::in6_addr {
                            s6_addr: source.octets(),
                        },
                        ipi6_ifindex: ifindex,
                    };
                    std::ptr::write_unaligned(data.cast::<libc::in6_pktinfo>(), info);
                }
            }
        }
        // SAFETY: sendmsg with the buffers set up above.
        let sent = unsafe { libc::sendmsg(self.fd.get_ref().as_raw_fd(), &message, 0) };
        if sent < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// The next packet.
    pub async fn recv(&self) -> io::Result<Received> {
        loop {
            let mut ready = self.fd.readable().await?;
            match self.try_recv() {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => ready.clear_ready(),
                Ok(Some(received)) => return Ok(received),
                // Something unusable (a truncated IPv4 header): read on.
                Ok(None) => {}
                Err(e) => return Err(e),
            }
        }
    }

    fn try_recv(&self) -> io::Result<Option<Received>> {
        let mut buffer = [0u8; 2048];
        let mut control = [0u64; 16];
        // SAFETY: zeroed sockaddr storage and msghdr, set up below.
        let mut from: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
        let mut iov = libc::iovec {
            iov_base: buffer.as_mut_ptr().cast(),
            iov_len: buffer.len(),
        };
        // SAFETY: an all-zero msghdr is valid; its fields are set below.
        let mut message: libc::msghdr = unsafe { std::mem::zeroed() };
        message.msg_name = (&mut from as *mut libc::sockaddr_storage).cast();
        message.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        message.msg_iov = &mut iov;
        message.msg_iovlen = 1;
        message.msg_control = control.as_mut_ptr().cast();
        message.msg_controllen = std::mem::size_of_val(&control);
        // SAFETY: recvmsg into the buffers set up above.
        let read = unsafe { libc::recvmsg(self.fd.get_ref().as_raw_fd(), &mut message, 0) };
        if read < 0 {
            return Err(io::Error::last_os_error());
        }
        let packet = &buffer[..read as usize];
        if !self.ipv6 {
            // IPv4 raw sockets give the IP header.
            let Some(header) = packet.first().map(|b| usize::from(b & 0x0f) * 4) else {
                return Ok(None);
            };
            if header < 20 || packet.len() < header {
                return Ok(None);
            }
            return Ok(Some(Received {
                src: IpAddr::from([packet[12], packet[13], packet[14], packet[15]]),
                dst: IpAddr::from([packet[16], packet[17], packet[18], packet[19]]),
                ttl: packet[8],
                payload: packet[header..].to_vec(),
            }));
        }
        // SAFETY: the kernel filled a sockaddr_in6 for an AF_INET6 socket.
        let sin6 =
            unsafe { &*(&from as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
        let src = IpAddr::V6(Ipv6Addr::from(sin6.sin6_addr.s6_addr));
        let (mut ttl, mut dst) = (0u8, IpAddr::V6(Ipv6Addr::UNSPECIFIED));
        // SAFETY: walking the control messages recvmsg wrote, with the libc macros.
        unsafe {
            let mut cmsg = libc::CMSG_FIRSTHDR(&message);
            while !cmsg.is_null() {
                let data = libc::CMSG_DATA(cmsg);
                match ((*cmsg).cmsg_level, (*cmsg).cmsg_type) {
                    (libc::IPPROTO_IPV6, libc::IPV6_HOPLIMIT) => {
                        ttl = std::ptr::read_unaligned(data.cast::<libc::c_int>()) as u8;
                    }
                    (libc::IPPROTO_IPV6, libc::IPV6_PKTINFO) => {
                        let info = std::ptr::read_unaligned(data.cast::<libc::in6_pktinfo>());
                        dst = IpAddr::V6(Ipv6Addr::from(info.ipi6_addr.s6_addr));
                    }
                    _ => {}
                }
                cmsg = libc::CMSG_NXTHDR(&message, cmsg);
            }
        }
        Ok(Some(Received {
            src,
            dst,
            ttl,
            payload: packet.to_vec(),
        }))
    }
}
