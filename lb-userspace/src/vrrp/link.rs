//! What VRRP needs to know of an interface: its index, its Ethernet address, and the
//! address adverts go out from (the first IPv4 address, or the IPv6 link-local one, as
//! keepalived picks them).

use std::{
    ffi::{CStr, CString},
    io,
    net::{IpAddr, Ipv6Addr},
};

/// The index of interface `name`.
pub fn index(name: &str) -> io::Result<u32> {
    let c_name = CString::new(name).map_err(|_| io::Error::other("interface name with NUL"))?;
    // SAFETY: a valid NUL-terminated string.
    match unsafe { libc::if_nametoindex(c_name.as_ptr()) } {
        0 => Err(io::Error::other(format!("no interface {name}"))),
        index => Ok(index),
    }
}

/// The Ethernet address of interface `name`.
pub fn mac(name: &str) -> io::Result<[u8; 6]> {
    // SAFETY: an all-zero ifreq is valid; the name is copied in below.
    let mut request: libc::ifreq = unsafe { std::mem::zeroed() };
    for (slot, byte) in request
        .ifr_name
        .iter_mut()
        .zip(name.bytes().take(libc::IFNAMSIZ - 1))
    {
        *slot = byte as libc::c_char;
    }
    // SAFETY: a plain datagram socket for the ioctl, closed below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: SIOCGIFHWADDR with a valid ifreq.
    let rc = unsafe { libc::ioctl(fd, libc::SIOCGIFHWADDR, &mut request) };
    let error = io::Error::last_os_error();
    // SAFETY: closing the descriptor opened above.
    unsafe { libc::close(fd) };
    if rc != 0 {
        return Err(error);
    }
    // SAFETY: SIOCGIFHWADDR filled the hardware address member of the union.
    let data = unsafe { request.ifr_ifru.ifru_hwaddr.sa_data };
    Ok(std::array::from_fn(|i| data[i] as u8))
}

/// The addresses of interface `name`.
pub fn addresses(name: &str) -> io::Result<Vec<IpAddr>> {
    addresses_of(Some(name))
}

/// The addresses of every interface of this host.
pub fn all_addresses() -> io::Result<Vec<IpAddr>> {
    addresses_of(None)
}

fn addresses_of(name: Option<&str>) -> io::Result<Vec<IpAddr>> {
    let mut list: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs writes a list head on success; freed below.
    if unsafe { libc::getifaddrs(&mut list) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let mut found = Vec::new();
    let mut entry = list;
    while !entry.is_null() {
        // SAFETY: a node of the list getifaddrs returned, not yet freed.
        let node = unsafe { &*entry };
        entry = node.ifa_next;
        if node.ifa_addr.is_null() || node.ifa_name.is_null() {
            continue;
        }
        // SAFETY: a NUL-terminated name owned by the list.
        if let Some(name) = name
            && unsafe { CStr::from_ptr(node.ifa_name) }.to_bytes() != name.as_bytes()
        {
            continue;
        }
        // SAFETY: ifa_addr points to a sockaddr whose family gives its full type.
        unsafe {
            match i32::from((*node.ifa_addr).sa_family) {
                libc::AF_INET => {
                    let sin = &*(node.ifa_addr as *const libc::sockaddr_in);
                    found.push(IpAddr::from(sin.sin_addr.s_addr.to_ne_bytes()));
                }
                libc::AF_INET6 => {
                    let sin6 = &*(node.ifa_addr as *const libc::sockaddr_in6);
                    found.push(IpAddr::from(sin6.sin6_addr.s6_addr));
                }
                _ => {}
            }
        }
    }
    // SAFETY: the list getifaddrs returned, freed once.
    unsafe { libc::freeifaddrs(list) };
    Ok(found)
}

/// The source of adverts on `name` for `ipv6`: the first IPv4 address, or the IPv6
/// link-local address, leaving out `virtual` ones.
pub fn primary(name: &str, ipv6: bool, virtual_addrs: &[IpAddr]) -> io::Result<IpAddr> {
    addresses(name)?
        .into_iter()
        .filter(|addr| !virtual_addrs.contains(addr))
        .find(|addr| match addr {
            IpAddr::V4(_) => !ipv6,
            IpAddr::V6(a) => ipv6 && is_link_local(a),
        })
        .ok_or_else(|| {
            io::Error::other(format!(
                "interface {name} has no {} address to send VRRP adverts from",
                if ipv6 { "link-local IPv6" } else { "IPv4" }
            ))
        })
}

fn is_link_local(addr: &Ipv6Addr) -> bool {
    addr.segments()[0] & 0xffc0 == 0xfe80
}
