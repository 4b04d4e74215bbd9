//! `use_vmac`: the instance's virtual MAC (RFC 5798 section 7.3: 00-00-5E-00-01-{VRID}
//! for IPv4, 00-00-5E-00-02-{VRID} for IPv6) on a macvlan over its interface, as
//! keepalived makes it: named `vrrp.VRID` unless named, in private mode, up; the
//! virtual addresses go on it, so that their ARP/ND answers carry the virtual MAC
//! (the parent interface answers ARP only for its own addresses, `arp_ignore` 1, and
//! asks with its own, `arp_announce` 2).
//!
//! For IPv6 the macvlan makes no link-local address of its own (`addr_gen_mode none`):
//! one made from the virtual MAC would be the same on every router of the VRID and fail
//! duplicate address detection. As keepalived does, it gets a copy of the parent's
//! link-local address instead (without DAD), the source of its adverts (RFC 5798
//! section 5.1.2.1: the link-local address of the interface sending).

use std::net::IpAddr;

use netlink_packet_route::{
    RouteNetlinkMessage,
    link::{
        AfSpecInet6, AfSpecUnspec, In6AddrGenMode, InfoData, InfoKind, InfoMacVlan, LinkAttribute,
        LinkFlags, LinkInfo, LinkMessage, MacVlanMode,
    },
};

use super::{addresses, link};
use crate::{
    model::vrrp::IpAddress,
    rtnl::{Answer, RouteSocket, RtnlError},
};

/// The virtual MAC of `vrid`.
pub fn mac(vrid: u8, ipv6: bool) -> [u8; 6] {
    [0x00, 0x00, 0x5e, 0x00, if ipv6 { 0x02 } else { 0x01 }, vrid]
}

/// The macvlan's name: `name`, else keepalived's `vrrp.VRID`.
pub fn name(configured: &str, vrid: u8) -> String {
    if configured.is_empty() {
        format!("vrrp.{vrid}")
    } else {
        configured.to_owned()
    }
}

fn delete_named(rtnl: &mut RouteSocket, name: &str) -> Result<(), RtnlError> {
    let Ok(index) = link::index(name) else {
        return Ok(());
    };
    let mut message = LinkMessage::default();
    message.header.index = index;
    rtnl.ask(
        "delete vmac",
        RouteNetlinkMessage::DelLink(message),
        Answer::Ack,
    )
    .map(drop)
}

/// Change link `index` with `attributes` and `flags` (`ip link set`).
fn set_link(
    rtnl: &mut RouteSocket,
    what: &'static str,
    index: u32,
    flags: LinkFlags,
    attributes: Vec<LinkAttribute>,
) -> Result<(), String> {
    let mut message = LinkMessage::default();
    message.header.index = index;
    message.header.flags = flags;
    message.header.change_mask = flags;
    message.attributes = attributes;
    rtnl.ask(what, RouteNetlinkMessage::SetLink(message), Answer::Ack)
        .map(drop)
        .map_err(|e| e.to_string())
}

/// Create the macvlan `name` with `mac` over interface `parent` (replacing a leftover of
/// a crashed run), bring it up; its index. For an `ipv6` instance it carries a copy of
/// the parent's link-local address instead of one of its own.
pub fn create(
    rtnl: &mut RouteSocket,
    name: &str,
    parent: &str,
    mac: [u8; 6],
    ipv6: bool,
) -> Result<u32, String> {
    let parent_index = link::index(parent).map_err(|e| e.to_string())?;
    delete_named(rtnl, name).map_err(|e| e.to_string())?;
    // Created down: the address generation mode must be set before it comes up.
    let mut message = LinkMessage::default();
    message.attributes = vec![
        LinkAttribute::IfName(name.to_owned()),
        LinkAttribute::Link(parent_index),
        LinkAttribute::Address(mac.to_vec()),
        LinkAttribute::LinkInfo(vec![
            LinkInfo::Kind(InfoKind::MacVlan),
            LinkInfo::Data(InfoData::MacVlan(vec![InfoMacVlan::Mode(
                MacVlanMode::Private,
            )])),
        ]),
    ];
    rtnl.ask(
        "create vmac",
        RouteNetlinkMessage::NewLink(message),
        Answer::Replace,
    )
    .map_err(|e| e.to_string())?;
    let index = link::index(name).map_err(|e| e.to_string())?;
    if ipv6 {
        set_link(
            rtnl,
            "vmac addr_gen_mode none",
            index,
            LinkFlags::empty(),
            vec![LinkAttribute::AfSpecUnspec(vec![AfSpecUnspec::Inet6(
                vec![AfSpecInet6::AddrGenMode(In6AddrGenMode::None)],
            )])],
        )?;
    }
    set_link(rtnl, "vmac up", index, LinkFlags::Up, Vec::new())?;
    if ipv6 {
        let link_local = link::primary(parent, true, &[]).map_err(|e| e.to_string())?;
        addresses::add(rtnl, &link_local_copy(link_local), index)
            .map_err(|e| format!("link-local address {link_local}: {e}"))?;
        return Ok(index);
    }
    // The parent answers ARP only for its own addresses, not the vmac's, and asks with
    // its own address as the sender: otherwise a request sent with a VIP as sender
    // (answering a client of the VIP) teaches the segment the parent's MAC for the VIP.
    for (setting, value) in [("arp_ignore", "1"), ("arp_announce", "2")] {
        let path = format!("/proc/sys/net/ipv4/conf/{parent}/{setting}");
        if let Err(e) = std::fs::write(&path, value) {
            return Err(format!("{path}: {e}"));
        }
    }
    Ok(index)
}

/// The parent's link-local address as the vmac carries it: fe80::/64, link scope, and
/// (as every IPv6 address `addresses` adds) no DAD.
fn link_local_copy(addr: IpAddr) -> IpAddress {
    IpAddress {
        addr,
        prefix_len: 64,
        broadcast: None,
        dev: None,
        scope: Some("link".to_owned()),
        label: None,
        no_track: true,
    }
}

/// Remove the macvlan `name`.
pub fn delete(rtnl: &mut RouteSocket, name: &str) -> Result<(), RtnlError> {
    delete_named(rtnl, name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn virtual_macs_follow_rfc_5798() {
        assert_eq!(mac(42, false), [0, 0, 0x5e, 0, 1, 42]);
        assert_eq!(mac(7, true), [0, 0, 0x5e, 0, 2, 7]);
        assert_eq!(name("", 42), "vrrp.42");
        assert_eq!(name("vmac0", 42), "vmac0");
    }
}
