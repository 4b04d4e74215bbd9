//! The virtual addresses on their interface, through rtnetlink: added as `ip addr replace`
//! would (so that an address left by a crashed run is taken over), with keepalived's
//! defaults (/32 and /128, no duplicate address detection for IPv6, `label`, `scope`,
//! `brd`), and removed when the instance stops being master.

use std::net::IpAddr;

use netlink_packet_route::{
    AddressFamily, RouteNetlinkMessage,
    address::{AddressAttribute, AddressFlags, AddressHeaderFlags, AddressMessage, AddressScope},
};

use crate::{
    model::vrrp::IpAddress,
    rtnl::{Answer, RouteSocket, RtnlError},
};

/// The kernel's number of a `scope` name (`ip addr`'s names, or a number).
pub fn scope(name: Option<&str>) -> AddressScope {
    match name {
        None | Some("global") => AddressScope::Universe,
        Some("site") => AddressScope::Site,
        Some("link") => AddressScope::Link,
        Some("host") => AddressScope::Host,
        Some("nowhere") => AddressScope::Nowhere,
        Some(other) => other
            .parse()
            .map_or(AddressScope::Universe, AddressScope::Other),
    }
}

fn message(address: &IpAddress, ifindex: u32) -> AddressMessage {
    let mut message = AddressMessage::default();
    message.header.family = match address.addr {
        IpAddr::V4(_) => AddressFamily::Inet,
        IpAddr::V6(_) => AddressFamily::Inet6,
    };
    message.header.prefix_len = address.prefix_len;
    message.header.scope = scope(address.scope.as_deref());
    message.header.index = ifindex;
    message
        .attributes
        .push(AddressAttribute::Address(address.addr));
    match address.addr {
        IpAddr::V4(_) => {
            message
                .attributes
                .push(AddressAttribute::Local(address.addr));
            if let Some(IpAddr::V4(broadcast)) = address.broadcast {
                message
                    .attributes
                    .push(AddressAttribute::Broadcast(broadcast));
            }
            if let Some(label) = &address.label {
                message
                    .attributes
                    .push(AddressAttribute::Label(label.clone()));
            }
        }
        IpAddr::V6(_) => {
            // keepalived's: a virtual address must work at once, without DAD.
            message.header.flags = AddressHeaderFlags::Nodad;
            message
                .attributes
                .push(AddressAttribute::Flags(AddressFlags::Nodad));
        }
    }
    message
}

/// Put `address` on interface `ifindex`.
pub fn add(rtnl: &mut RouteSocket, address: &IpAddress, ifindex: u32) -> Result<(), RtnlError> {
    rtnl.ask(
        "add address",
        RouteNetlinkMessage::NewAddress(message(address, ifindex)),
        Answer::Replace,
    )
    .map(drop)
}

/// Take `address` off interface `ifindex`; an address already gone is fine.
pub fn remove(rtnl: &mut RouteSocket, address: &IpAddress, ifindex: u32) -> Result<(), RtnlError> {
    match rtnl.ask(
        "remove address",
        RouteNetlinkMessage::DelAddress(message(address, ifindex)),
        Answer::Ack,
    ) {
        Err(error) if error.errno() == Some(libc::EADDRNOTAVAIL) => Ok(()),
        other => other.map(drop),
    }
}
