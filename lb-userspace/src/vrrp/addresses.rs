//! The virtual addresses on their interface, through rtnetlink: added as `ip addr replace`
//! would (so that an address left by a crashed run is taken over), with keepalived's
//! defaults (/32 and /128, no duplicate address detection for IPv6, `label`, `scope`,
//! `brd`), and removed when the instance stops being master; `virtual_routes` likewise
//! (`ip route replace` and `ip route del`, with via, src, dev, table and metric).

use std::net::IpAddr;

use netlink_packet_route::{
    AddressFamily, RouteNetlinkMessage,
    address::{AddressAttribute, AddressFlags, AddressHeaderFlags, AddressMessage, AddressScope},
    route::{
        RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope,
        RouteType,
    },
};

use crate::{
    model::vrrp::{IpAddress, Route},
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

/// The rtnetlink message of `route` (its interface `ifindex` unless `dev` names one).
fn route_message(route: &Route, ifindex: u32) -> RouteMessage {
    let mut message = RouteMessage::default();
    message.header.address_family = match route.destination {
        IpAddr::V4(_) => AddressFamily::Inet,
        IpAddr::V6(_) => AddressFamily::Inet6,
    };
    message.header.destination_prefix_length = route.prefix_len;
    message.header.protocol = RouteProtocol::Static;
    message.header.kind = RouteType::Unicast;
    // Through a gateway: universe; on the link: link scope.
    message.header.scope = if route.via.is_some() {
        RouteScope::Universe
    } else {
        RouteScope::Link
    };
    let table = route
        .table
        .as_deref()
        .and_then(|t| match t {
            "main" => Some(u32::from(RouteHeader::RT_TABLE_MAIN)),
            "local" => Some(255),
            other => other.parse().ok(),
        })
        .unwrap_or(u32::from(RouteHeader::RT_TABLE_MAIN));
    message.header.table = u8::try_from(table).unwrap_or(RouteHeader::RT_TABLE_UNSPEC);
    message.attributes.push(RouteAttribute::Table(table));
    message
        .attributes
        .push(RouteAttribute::Destination(RouteAddress::from(
            route.destination,
        )));
    if let Some(via) = route.via {
        message
            .attributes
            .push(RouteAttribute::Gateway(RouteAddress::from(via)));
    }
    if let Some(src) = route.src {
        message
            .attributes
            .push(RouteAttribute::PrefSource(RouteAddress::from(src)));
    }
    message.attributes.push(RouteAttribute::Oif(ifindex));
    if let Some(metric) = route.metric {
        message.attributes.push(RouteAttribute::Priority(metric));
    }
    message
}

/// Add `route` (`ip route replace`).
pub fn add_route(rtnl: &mut RouteSocket, route: &Route, ifindex: u32) -> Result<(), RtnlError> {
    rtnl.ask(
        "add route",
        RouteNetlinkMessage::NewRoute(route_message(route, ifindex)),
        Answer::Replace,
    )
    .map(drop)
}

/// Remove `route`; one already gone is fine.
pub fn remove_route(rtnl: &mut RouteSocket, route: &Route, ifindex: u32) -> Result<(), RtnlError> {
    match rtnl.ask(
        "remove route",
        RouteNetlinkMessage::DelRoute(route_message(route, ifindex)),
        Answer::Ack,
    ) {
        Err(error) if error.errno() == Some(libc::ESRCH) => Ok(()),
        other => other.map(drop),
    }
}
