//! Next hops of real servers: through which interface and to which Ethernet address the
//! data plane sends a real's frames.
//!
//! [`KernelNextHops`] asks the kernel over rtnetlink, so the answer matches what the
//! kernel itself would do: `RTM_GETROUTE` for the egress interface (the real must be
//! on-link: DR rewrites only MACs), `RTM_GETLINK` for that interface's MAC and, for a VLAN
//! device, its parent and VLAN id (frames leave through the parent, tagged), `RTM_GETNEIGH`
//! for the real's MAC. Reals missing from the neighbour table are probed all at once, by
//! sending one UDP datagram to each one's discard port (9) from its egress interface, which
//! makes the kernel resolve them with ARP/NDP. Nothing here waits: such a real is
//! `Pending` with the time to ask again (every `POLL_INTERVAL`, for `probe_timeout` after
//! the probe), then `Unresolved`. A real is probed again only after `PROBE_BACKOFF`, so a
//! dead one is not probed at every refresh.

use std::{
    collections::HashMap,
    io,
    net::{IpAddr, SocketAddr, UdpSocket},
    os::fd::AsRawFd,
    time::{Duration, Instant},
};

use netlink_packet_route::{
    AddressFamily, RouteNetlinkMessage,
    link::{InfoData, InfoVlan, LinkAttribute, LinkInfo, LinkMessage},
    neighbour::{NeighbourAddress, NeighbourAttribute, NeighbourMessage, NeighbourState},
    route::{RouteAddress, RouteAttribute, RouteMessage, RouteType},
};

use crate::rtnl::{RouteSocket, RtnlError};

/// Where and how to send a real's frames.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NextHop {
    /// Egress interface.
    pub ifindex: u32,
    /// The real's Ethernet address (destination).
    pub mac: [u8; 6],
    /// The egress interface's Ethernet address (source).
    pub src_mac: [u8; 6],
    /// VLAN id when the route's interface is a VLAN device (`ifindex` is then its
    /// parent); 0 otherwise.
    pub vlan: u16,
    /// The director's own address towards the real (the route's preferred source): the
    /// outer source of TUN packets.
    pub src: Option<IpAddr>,
    /// MTU of the route's interface.
    pub mtu: u16,
}

#[derive(Debug, thiserror::Error)]
pub enum NextHopError {
    #[error(transparent)]
    Netlink(#[from] RtnlError),
    #[error("no route to {addr}")]
    NoRoute { addr: IpAddr },
    #[error("{addr} is a local address of this host")]
    Local { addr: IpAddr },
    #[error(
        "{addr} is not on a directly connected network (route via {gateway}); reals must be on one of the director's networks (routed reals are not supported yet)"
    )]
    NotOnLink { addr: IpAddr, gateway: IpAddr },
    #[error("{addr} is being resolved (ARP/NDP probe sent)")]
    Pending { addr: IpAddr, retry_at: Instant },
    #[error("no ARP/NDP answer from {addr} on interface {ifindex} within {waited:?}")]
    Unresolved {
        addr: IpAddr,
        ifindex: u32,
        waited: Duration,
    },
    #[error("interface {ifindex} has no Ethernet address")]
    NoMac { ifindex: u32 },
    #[error("interface {ifindex} is a VLAN device on another VLAN device; not supported")]
    StackedVlan { ifindex: u32 },
}

/// Resolves next hops; the XDP backend uses it for every real it programs.
pub trait NextHopResolver {
    /// The next hop of each of `addrs`, in order, or why there is none.
    fn resolve(&mut self, addrs: &[IpAddr]) -> Vec<Result<NextHop, NextHopError>>;
}

/// The kernel's routing and neighbour tables, in the network namespace lbd runs in.
pub struct KernelNextHops {
    rtnl: RouteSocket,
    /// How long a probed address counts as being resolved.
    probe_timeout: Duration,
    /// When each address was last probed.
    probed: HashMap<IpAddr, Instant>,
}

/// An interface as the data plane sends on it.
#[derive(Clone, Copy)]
struct Link {
    mac: [u8; 6],
    /// (parent ifindex, VLAN id) of a VLAN device.
    vlan: Option<(u32, u16)>,
    mtu: u16,
}

const PROBE_PORT: u16 = 9;
/// Minimum time between two probes of the same address.
const PROBE_BACKOFF: Duration = Duration::from_secs(30);
const POLL_INTERVAL: Duration = Duration::from_millis(20);

impl KernelNextHops {
    pub fn new(probe_timeout: Duration) -> Result<Self, NextHopError> {
        Ok(Self {
            rtnl: RouteSocket::new()?,
            probe_timeout,
            probed: HashMap::new(),
        })
    }

    fn request(
        &mut self,
        name: &'static str,
        message: RouteNetlinkMessage,
        dump: bool,
    ) -> Result<Vec<RouteNetlinkMessage>, NextHopError> {
        Ok(self.rtnl.request(name, message, dump)?)
    }

    /// Egress interface of `addr` and the preferred source address towards it; an error
    /// if it is not on-link.
    fn route(&mut self, addr: IpAddr) -> Result<(u32, Option<IpAddr>), NextHopError> {
        let mut message = RouteMessage::default();
        message.header.address_family = family(addr);
        message.header.destination_prefix_length = if addr.is_ipv4() { 32 } else { 128 };
        message
            .attributes
            .push(RouteAttribute::Destination(RouteAddress::from(addr)));
        let replies = match self.request("get route", RouteNetlinkMessage::GetRoute(message), false)
        {
            Err(NextHopError::Netlink(error))
                if matches!(error.errno(), Some(libc::ENETUNREACH | libc::EHOSTUNREACH)) =>
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
        let mut src = None;
        for attribute in &route.attributes {
            match attribute {
                RouteAttribute::Oif(index) => oif = Some(*index),
                RouteAttribute::PrefSource(RouteAddress::Inet(a)) => src = Some((*a).into()),
                RouteAttribute::PrefSource(RouteAddress::Inet6(a)) => src = Some((*a).into()),
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
        Ok((oif.ok_or(NextHopError::NoRoute { addr })?, src))
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
            Err(NextHopError::Netlink(error)) if error.errno() == Some(libc::ENOENT) => {
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
}

impl NextHopResolver for KernelNextHops {
    fn resolve(&mut self, addrs: &[IpAddr]) -> Vec<Result<NextHop, NextHopError>> {
        let mut links = HashMap::new();
        // Route and interface of each address, then whatever the neighbour table knows.
        let mut results: Vec<Result<(u32, NextHop), NextHopError>> = addrs
            .iter()
            .map(|&addr| {
                let (oif, src) = self.route(addr)?;
                let next_hop = self.egress(oif, &mut links)?;
                Ok((oif, NextHop { src, ..next_hop }))
            })
            .collect();
        let mut missing = Vec::new();
        for (i, result) in results.iter_mut().enumerate() {
            if let Ok((oif, next_hop)) = result {
                match self.neighbour(addrs[i], *oif) {
                    Ok(Some(mac)) => next_hop.mac = mac,
                    Ok(None) => missing.push(i),
                    Err(e) => *result = Err(e),
                }
            }
        }
        // Probe the missing ones not probed lately, all at once; the caller asks again
        // (`Pending::retry_at`) until they answer or `probe_timeout` has passed.
        let now = Instant::now();
        for i in missing {
            let addr = addrs[i];
            let Ok((oif, _)) = results[i] else {
                continue;
            };
            let since = self.probed.get(&addr).map(|t| now.duration_since(*t));
            results[i] = match since {
                Some(since) if since < self.probe_timeout => Err(NextHopError::Pending {
                    addr,
                    retry_at: now + POLL_INTERVAL.min(self.probe_timeout - since),
                }),
                Some(since) if since < PROBE_BACKOFF => Err(NextHopError::Unresolved {
                    addr,
                    ifindex: oif,
                    waited: self.probe_timeout,
                }),
                _ => {
                    self.probed.insert(addr, now);
                    if let Err(error) = probe(addr, oif) {
                        // A failed send (e.g. after a failed resolution) still starts
                        // resolution.
                        tracing::debug!(%addr, %error, "neighbour probe send failed");
                    }
                    Err(NextHopError::Pending {
                        addr,
                        retry_at: now + POLL_INTERVAL,
                    })
                }
            };
        }
        for (i, result) in results.iter().enumerate() {
            if result.is_ok() {
                self.probed.remove(&addrs[i]);
            }
        }
        results
            .into_iter()
            .map(|result| result.map(|(_, next_hop)| next_hop))
            .collect()
    }
}

impl KernelNextHops {
    /// How frames leave through route interface `oif` (the real's MAC not yet known).
    fn egress(
        &mut self,
        oif: u32,
        links: &mut HashMap<u32, Link>,
    ) -> Result<NextHop, NextHopError> {
        let link = self.cached_link(oif, links)?;
        let (ifindex, vlan) = match link.vlan {
            None => (oif, 0),
            Some((parent, vlan)) => {
                if self.cached_link(parent, links)?.vlan.is_some() {
                    return Err(NextHopError::StackedVlan { ifindex: oif });
                }
                (parent, vlan)
            }
        };
        Ok(NextHop {
            ifindex,
            mac: [0; 6],
            src_mac: link.mac,
            vlan,
            src: None,
            mtu: link.mtu,
        })
    }

    fn cached_link(
        &mut self,
        ifindex: u32,
        links: &mut HashMap<u32, Link>,
    ) -> Result<Link, NextHopError> {
        if let Some(link) = links.get(&ifindex) {
            return Ok(*link);
        }
        let link = self.link(ifindex)?;
        links.insert(ifindex, link);
        Ok(link)
    }

    /// The Ethernet address of interface `ifindex`, and its parent and VLAN id if it is a
    /// VLAN device.
    fn link(&mut self, ifindex: u32) -> Result<Link, NextHopError> {
        let mut message = LinkMessage::default();
        message.header.index = ifindex;
        let replies = self.request("get link", RouteNetlinkMessage::GetLink(message), false)?;
        replies
            .into_iter()
            .find_map(|reply| match reply {
                RouteNetlinkMessage::NewLink(link) => Some(link_of(link.attributes)),
                _ => None,
            })
            .flatten()
            .ok_or(NextHopError::NoMac { ifindex })
    }
}

/// The data plane's view of an interface from its `RTM_NEWLINK` attributes; `None` without
/// an Ethernet address.
fn link_of(attributes: Vec<LinkAttribute>) -> Option<Link> {
    let mut mac = None;
    let mut parent = None;
    let mut vlan_id = None;
    let mut mtu = 1500;
    for attribute in attributes {
        match attribute {
            LinkAttribute::Address(bytes) => mac = <[u8; 6]>::try_from(bytes).ok(),
            LinkAttribute::Mtu(value) => mtu = value.min(u32::from(u16::MAX)) as u16,
            LinkAttribute::Link(index) => parent = Some(index),
            LinkAttribute::LinkInfo(infos) => {
                for info in infos {
                    if let LinkInfo::Data(InfoData::Vlan(vlan)) = info {
                        vlan_id = vlan.iter().find_map(|v| match v {
                            InfoVlan::Id(id) => Some(*id),
                            _ => None,
                        });
                    }
                }
            }
            _ => {}
        }
    }
    Some(Link {
        mac: mac?,
        vlan: parent.zip(vlan_id),
        mtu,
    })
}

/// Make the kernel resolve `addr`: one datagram to its discard port, sent out of `ifindex`.
fn probe(addr: IpAddr, ifindex: u32) -> io::Result<()> {
    let bind: SocketAddr = match addr {
        IpAddr::V4(_) => "0.0.0.0:0".parse().expect("literal"),
        IpAddr::V6(_) => "[::]:0".parse().expect("literal"),
    };
    let socket = UdpSocket::bind(bind)?;
    bind_to_device(&socket, ifindex)?;
    socket.send_to(&[0], SocketAddr::new(addr, PROBE_PORT))?;
    Ok(())
}

fn family(addr: IpAddr) -> AddressFamily {
    match addr {
        IpAddr::V4(_) => AddressFamily::Inet,
        IpAddr::V6(_) => AddressFamily::Inet6,
    }
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

#[cfg(test)]
mod tests {
    use netlink_packet_core::{Emitable, Parseable};
    use netlink_packet_route::link::InfoKind;

    use super::*;

    /// Attributes as the kernel would send them: emitted, then parsed back.
    fn round_trip(attributes: Vec<LinkAttribute>) -> Vec<LinkAttribute> {
        let mut message = LinkMessage::default();
        message.header.index = 7;
        message.attributes = attributes;
        let mut bytes = vec![0; message.buffer_len()];
        message.emit(&mut bytes);
        LinkMessage::parse(bytes.as_slice())
            .expect("parse")
            .attributes
    }

    #[test]
    fn a_vlan_device_leads_to_its_parent_and_id() {
        let link = link_of(round_trip(vec![
            LinkAttribute::Address(vec![2, 0, 0, 0, 0, 7]),
            LinkAttribute::Mtu(9000),
            LinkAttribute::Link(3),
            LinkAttribute::LinkInfo(vec![
                LinkInfo::Kind(InfoKind::Vlan),
                LinkInfo::Data(InfoData::Vlan(vec![InfoVlan::Id(100)])),
            ]),
        ]))
        .expect("link");
        assert_eq!(link.mac, [2, 0, 0, 0, 0, 7]);
        assert_eq!(link.vlan, Some((3, 100)));
        assert_eq!(link.mtu, 9000);
    }

    #[test]
    fn a_plain_interface_has_no_vlan_and_one_without_mac_is_unusable() {
        let plain = link_of(round_trip(vec![LinkAttribute::Address(vec![
            2, 0, 0, 0, 0, 1,
        ])]));
        assert_eq!(plain.map(|l| l.vlan), Some(None));
        // A veth's IFLA_LINK names its peer, which is no VLAN parent.
        let veth = link_of(round_trip(vec![
            LinkAttribute::Address(vec![2, 0, 0, 0, 0, 1]),
            LinkAttribute::Link(9),
        ]));
        assert_eq!(veth.map(|l| l.vlan), Some(None));
        assert!(link_of(round_trip(vec![LinkAttribute::Mtu(1500)])).is_none());
    }
}
