//! Changes of the kernel's neighbour table as they happen (the rtnetlink multicast group
//! of neighbours), so that lbd resolves the reals' next hops again as soon as one of them
//! changes (a new MAC address, an entry removed or failed) instead of at the next
//! periodic refresh.

use std::{io, net::IpAddr};

use netlink_packet_core::{NetlinkBuffer, NetlinkMessage, NetlinkPayload};
use netlink_packet_route::{
    RouteNetlinkMessage,
    neighbour::{NeighbourAddress, NeighbourAttribute, NeighbourMessage},
};
use netlink_sys::{Socket, SocketAddr as NetlinkAddr, protocols::NETLINK_ROUTE};
use tokio::io::unix::AsyncFd;

/// `RTMGRP_NEIGH`: the multicast group of neighbour table changes.
const RTMGRP_NEIGH: u32 = 4;

/// A subscription to neighbour table changes in lbd's network namespace.
pub struct NeighbourEvents {
    socket: AsyncFd<Socket>,
}

impl NeighbourEvents {
    /// Subscribe. Call inside a Tokio runtime with IO enabled (else this panics).
    pub fn subscribe() -> io::Result<Self> {
        let mut socket = Socket::new(NETLINK_ROUTE)?;
        socket.bind(&NetlinkAddr::new(0, RTMGRP_NEIGH))?;
        socket.set_non_blocking(true)?;
        // SAFETY: the socket owns its descriptor, and the AsyncFd owns the socket: the
        // descriptor stays open and the same for the AsyncFd's whole life.
        let socket =
            unsafe { AsyncFd::register(socket) }.map_err(|e| io::Error::other(e.to_string()))?;
        Ok(Self { socket })
    }

    /// Wait for changes; the addresses of the entries that changed (as many as one
    /// receive brings; an unreadable message is skipped).
    pub async fn changed(&mut self) -> io::Result<Vec<IpAddr>> {
        loop {
            let mut guard = self.socket.readable().await?;
            match guard.try_io(|socket| socket.get_ref().recv_from_full()) {
                Ok(Ok((data, _))) => return Ok(addresses(&data)),
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => continue,
            }
        }
    }
}

/// The neighbour addresses in a batch of netlink messages.
fn addresses(mut data: &[u8]) -> Vec<IpAddr> {
    let mut addrs = Vec::new();
    while let Ok(buffer) = NetlinkBuffer::new_checked(data) {
        let length = buffer.length() as usize;
        if length == 0 || length > data.len() {
            break;
        }
        if let Ok(message) = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&data[..length])
            && let NetlinkPayload::InnerMessage(
                RouteNetlinkMessage::NewNeighbour(neighbour)
                | RouteNetlinkMessage::DelNeighbour(neighbour),
            ) = message.payload
            && let Some(addr) = destination(&neighbour)
        {
            addrs.push(addr);
        }
        data = &data[length.next_multiple_of(4).min(data.len())..];
    }
    addrs
}

fn destination(neighbour: &NeighbourMessage) -> Option<IpAddr> {
    neighbour
        .attributes
        .iter()
        .find_map(|attribute| match attribute {
            NeighbourAttribute::Destination(NeighbourAddress::Inet(a)) => Some((*a).into()),
            NeighbourAttribute::Destination(NeighbourAddress::Inet6(a)) => Some((*a).into()),
            _ => None,
        })
}

#[cfg(test)]
mod tests {
    use netlink_packet_core::{NetlinkHeader, NetlinkMessage, NetlinkPayload};
    use netlink_packet_route::{
        AddressFamily, RouteNetlinkMessage,
        neighbour::{NeighbourAddress, NeighbourAttribute, NeighbourMessage},
    };

    use super::addresses;

    fn message(addr: &str, new: bool) -> Vec<u8> {
        let mut neighbour = NeighbourMessage::default();
        neighbour.header.family = AddressFamily::Inet;
        neighbour
            .attributes
            .push(NeighbourAttribute::Destination(NeighbourAddress::Inet(
                addr.parse().unwrap(),
            )));
        let inner = if new {
            RouteNetlinkMessage::NewNeighbour(neighbour)
        } else {
            RouteNetlinkMessage::DelNeighbour(neighbour)
        };
        let mut packet = NetlinkMessage::new(
            NetlinkHeader::default(),
            NetlinkPayload::InnerMessage(inner),
        );
        packet.finalize();
        let mut buffer = vec![0; packet.buffer_len()];
        packet.serialize(&mut buffer);
        buffer
    }

    #[test]
    fn every_message_of_a_batch_is_read() {
        let mut batch = message("10.0.0.11", true);
        batch.extend(message("10.0.0.12", false));
        let addrs: Vec<String> = addresses(&batch).iter().map(|a| a.to_string()).collect();
        assert_eq!(addrs, ["10.0.0.11", "10.0.0.12"]);
        assert!(
            addresses(&batch[..10]).is_empty(),
            "a truncated batch is skipped"
        );
    }
}
