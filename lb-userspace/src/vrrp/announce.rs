//! Telling the segment that the virtual addresses moved (RFC 5798 section 6.4.1): a
//! gratuitous ARP request for each IPv4 address (sender and target the address, from the
//! interface's Ethernet address, broadcast) and an unsolicited neighbour advertisement
//! for each IPv6 one (to all nodes, with the override flag and the target's link-layer
//! address, hop limit 255).
//!
//! An instance keeps its sockets (`Announcer`) for its whole life: closing a packet socket
//! waits for an RCU grace period (`synchronize_net`), tens of milliseconds on a busy host,
//! which the VRRP thread must not spend; the last close happens on a thread of its own.

use std::{
    io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
};

const ETH_P_ARP: u16 = 0x0806;
const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);

/// The Ethernet frame of a gratuitous ARP request for `addr` from `mac`.
pub fn garp_frame(mac: [u8; 6], addr: Ipv4Addr) -> Vec<u8> {
    let mut frame = Vec::with_capacity(42);
    frame.extend_from_slice(&[0xff; 6]);
    frame.extend_from_slice(&mac);
    frame.extend_from_slice(&ETH_P_ARP.to_be_bytes());
    // Ethernet, IPv4, lengths 6 and 4, request.
    frame.extend_from_slice(&[0, 1, 0x08, 0x00, 6, 4, 0, 1]);
    frame.extend_from_slice(&mac);
    frame.extend_from_slice(&addr.octets());
    frame.extend_from_slice(&[0xff; 6]);
    frame.extend_from_slice(&addr.octets());
    frame
}

/// An unsolicited neighbour advertisement for `addr` at `mac` (the kernel adds the
/// checksum of raw ICMPv6 sockets).
pub fn na_message(mac: [u8; 6], addr: Ipv6Addr) -> Vec<u8> {
    // Type 136, code 0, checksum 0, flags: override.
    let mut message = vec![136, 0, 0, 0, 0x20, 0, 0, 0];
    message.extend_from_slice(&addr.octets());
    // Target link-layer address option: type 2, length 1 (8 bytes).
    message.extend_from_slice(&[2, 1]);
    message.extend_from_slice(&mac);
    message
}

fn owned(raw: libc::c_int) -> io::Result<OwnedFd> {
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a new descriptor nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

/// The sockets announcements go out of, opened when first needed and kept.
#[derive(Default)]
pub struct Announcer {
    /// A packet socket bound to no protocol (it receives nothing).
    arp: Option<OwnedFd>,
    /// A raw ICMPv6 socket with hop limit 255.
    na: Option<OwnedFd>,
}

impl Drop for Announcer {
    fn drop(&mut self) {
        if let Some(fd) = self.arp.take() {
            // Closing it waits for an RCU grace period: not on the caller's thread.
            let _ = std::thread::Builder::new()
                .name("lbd-close".into())
                .spawn(move || drop(fd));
        }
    }
}

impl Announcer {
    /// Announce `addrs` on interface `ifindex` whose Ethernet address is `mac`.
    pub fn announce(&mut self, ifindex: u32, mac: [u8; 6], addrs: &[IpAddr]) -> io::Result<()> {
        let (v4, v6): (Vec<IpAddr>, Vec<IpAddr>) = addrs.iter().partition(|a| a.is_ipv4());
        if !v4.is_empty() {
            let fd = match &self.arp {
                Some(fd) => fd,
                // SAFETY: plain socket(2).
                None => self.arp.insert(owned(unsafe {
                    libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0)
                })?),
            };
            // SAFETY: an all-zero sockaddr_ll is valid; fields set below.
            let mut to: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
            to.sll_family = libc::AF_PACKET as u16;
            to.sll_protocol = ETH_P_ARP.to_be();
            to.sll_ifindex = ifindex as i32;
            to.sll_halen = 6;
            to.sll_addr[..6].copy_from_slice(&[0xff; 6]);
            for addr in v4 {
                let IpAddr::V4(addr) = addr else { continue };
                let frame = garp_frame(mac, addr);
                // SAFETY: sendto from a live buffer to a valid sockaddr_ll.
                let sent = unsafe {
                    libc::sendto(
                        fd.as_raw_fd(),
                        frame.as_ptr().cast(),
                        frame.len(),
                        0,
                        (&to as *const libc::sockaddr_ll).cast(),
                        std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
                    )
                };
                if sent < 0 {
                    return Err(io::Error::last_os_error());
                }
            }
        }
        if !v6.is_empty() {
            let fd = match &self.na {
                Some(fd) => fd,
                None => self.na.insert(icmpv6_socket()?),
            };
            // The interface per packet (scope id), the hop limit set once.
            // SAFETY: an all-zero sockaddr_in6 is valid; fields set below.
            let mut to: libc::sockaddr_in6 = unsafe { std::mem::zeroed() };
            to.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            to.sin6_addr.s6_addr = ALL_NODES.octets();
            to.sin6_scope_id = ifindex;
            for addr in v6 {
                let IpAddr::V6(addr) = addr else { continue };
                let message = na_message(mac, addr);
                // SAFETY: sendto from a live buffer to a valid sockaddr_in6.
                let sent = unsafe {
                    libc::sendto(
                        fd.as_raw_fd(),
                        message.as_ptr().cast(),
                        message.len(),
                        0,
                        (&to as *const libc::sockaddr_in6).cast(),
                        std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t,
                    )
                };
                if sent < 0 {
                    return Err(io::Error::last_os_error());
                }
            }
        }
        Ok(())
    }
}

/// A raw ICMPv6 socket sending with hop limit 255 (RFC 4861 7.1.2).
fn icmpv6_socket() -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2).
    let fd = owned(unsafe {
        libc::socket(
            libc::AF_INET6,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::IPPROTO_ICMPV6,
        )
    })?;
    let hops: libc::c_int = 255;
    // SAFETY: setsockopt with an int.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::IPPROTO_IPV6,
            libc::IPV6_MULTICAST_HOPS,
            (&hops as *const libc::c_int).cast(),
            4,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(fd)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_laid_out_as_the_rfcs_say() {
        let mac = [2, 0, 0, 0, 0, 1];
        let frame = garp_frame(mac, Ipv4Addr::new(10, 0, 0, 100));
        assert_eq!(frame.len(), 42);
        assert_eq!(frame[12..14], [0x08, 0x06]);
        // Sender and target protocol addresses are the virtual address.
        assert_eq!(frame[28..32], [10, 0, 0, 100]);
        assert_eq!(frame[38..42], [10, 0, 0, 100]);
        let na = na_message(mac, "2001:db8::1".parse().unwrap());
        assert_eq!(na.len(), 32);
        assert_eq!((na[0], na[4]), (136, 0x20));
        assert_eq!(na[26..], mac);
    }
}
