//! Between the flow table and IPVS's sync records. A flow of this director (an
//! `LB_SYNC_EVENTS` event with its real's entry) becomes the record the backups take; a
//! received record becomes a flow for this director's table, with the state and the time
//! left that the master gave it.
//!
//! A persistence pin (`LB_PERSIST`) becomes IPVS's persistence template and back: the
//! client's network (its masked address) with port 0, the service's address and port, the
//! real, and the time the pin has left.
//!
//! What IPVS's records cannot carry is left out: FullNAT flows and their pins (no room
//! for the local address and port; such a flow is scheduled anew after a failover),
//! protocols other than TCP and UDP, and firewall-mark templates.

use std::net::IpAddr;

use lb_common::{
    FWD_DR, FWD_NAT, FWD_TUN, FlowKey, PROTO_TCP, PROTO_UDP, RealInfo, ServiceKey, SyncEvent,
    conn::{STATE_ESTABLISHED, STATE_SYNACK, STATE_UDP, Timeouts},
};
use lb_sync::wire::{Ends, SyncConn, flags};

use crate::dataplane::xdp::keys::{addr_bytes, addr_from};

/// IPVS's one UDP state (`IP_VS_UDP_S_NORMAL`).
const IPVS_UDP_NORMAL: u16 = 0;

/// A template's state once a connection through it has been established
/// (`IP_VS_CTPL_S_ASSURED`): the kernel then keeps it for the whole persistence timeout,
/// as this director keeps every pin.
const IPVS_TEMPLATE_ASSURED: u16 = 1;

/// The record of flow `event` on `real` (its `LB_REALS` entry), with the timeout of its
/// state (`timeouts`) as IPVS sends it; `None` for what IPVS's records cannot carry.
pub fn record(event: &SyncEvent, real: &RealInfo, timeouts: &Timeouts) -> Option<SyncConn> {
    let forward = forward_flags(real)?;
    let key = &event.key;
    let state = match key.proto {
        PROTO_TCP if event.state <= STATE_SYNACK => u16::from(event.state),
        PROTO_UDP => IPVS_UDP_NORMAL,
        _ => return None,
    };
    // IPVS counts a TCP connection active only while ESTABLISHED, and UDP never.
    let inactive = if key.proto == PROTO_TCP && event.state == STATE_ESTABLISHED {
        0
    } else {
        flags::INACTIVE
    };
    let ends = match (
        addr_from(key.src, key.family)?,
        addr_from(key.dst, key.family)?,
        addr_from(real.addr, real.family)?,
    ) {
        (IpAddr::V4(client), IpAddr::V4(vip), IpAddr::V4(real)) => Ends::V4 { client, vip, real },
        (IpAddr::V6(client), IpAddr::V6(vip), IpAddr::V6(real)) => Ends::V6 { client, vip, real },
        // A real of another family than the flow's.
        _ => return None,
    };
    Some(SyncConn {
        protocol: key.proto,
        flags: forward | inactive,
        state,
        ends,
        client_port: u16::from_be_bytes(key.sport),
        vip_port: u16::from_be_bytes(key.dport),
        real_port: u16::from_be_bytes(real.port),
        fwmark: 0,
        timeout_secs: timeouts
            .secs
            .get(usize::from(event.state))
            .copied()
            .unwrap_or(0),
        seq: None,
        pe_data: Vec::new(),
        pe_name: Vec::new(),
    })
}

/// IPVS's forwarding flags for `real`'s method; `None` for FullNAT, which IPVS lacks.
fn forward_flags(real: &RealInfo) -> Option<u32> {
    match real.fwd {
        FWD_DR => Some(flags::DROUTE),
        FWD_TUN => Some(flags::TUNNEL),
        FWD_NAT => Some(flags::MASQ),
        _ => None,
    }
}

/// A persistence pin of this director: the service it is in, the client's network (the
/// address masked by `persistence_granularity`), and the seconds it has left.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pin {
    pub service: ServiceKey,
    pub client: [u8; 16],
    pub remaining_secs: u32,
}

/// The template of `pin` on `real`, as IPVS sends a persistence template.
pub fn template(pin: &Pin, real: &RealInfo) -> Option<SyncConn> {
    let forward = forward_flags(real)?;
    let service = &pin.service;
    if !matches!(service.proto, PROTO_TCP | PROTO_UDP) {
        return None;
    }
    let ends = match (
        addr_from(pin.client, service.family)?,
        addr_from(service.addr, service.family)?,
        addr_from(real.addr, real.family)?,
    ) {
        (IpAddr::V4(client), IpAddr::V4(vip), IpAddr::V4(real)) => Ends::V4 { client, vip, real },
        (IpAddr::V6(client), IpAddr::V6(vip), IpAddr::V6(real)) => Ends::V6 { client, vip, real },
        _ => return None,
    };
    Some(SyncConn {
        protocol: service.proto,
        // As the kernel's: a template is never an active connection.
        flags: flags::TEMPLATE | flags::INACTIVE | forward,
        state: IPVS_TEMPLATE_ASSURED,
        ends,
        client_port: 0,
        vip_port: u16::from_be_bytes(service.port),
        real_port: u16::from_be_bytes(real.port),
        fwmark: 0,
        timeout_secs: pin.remaining_secs,
        seq: None,
        pe_data: Vec::new(),
        pe_name: Vec::new(),
    })
}

/// A received template, as a pin for this director's `LB_PERSIST`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IncomingPin {
    pub service: ServiceKey,
    /// The client's address as the master masked it (this director masks it again by its
    /// own granularity).
    pub client: [u8; 16],
    pub real: IpAddr,
    pub real_port: u16,
    /// The seconds the master's template had left; `None`: the whole timeout.
    pub remaining_secs: Option<u32>,
}

/// The pin of a received template; `None` for a connection or what this director does
/// not take (see the module's comment).
pub fn incoming_pin(conn: &SyncConn) -> Option<IncomingPin> {
    if conn.flags & flags::TEMPLATE == 0
        || conn.fwmark != 0
        || !matches!(conn.protocol, PROTO_TCP | PROTO_UDP)
    {
        return None;
    }
    let (client, family) = addr_bytes(conn.ends.client());
    let (vip, _) = addr_bytes(conn.ends.vip());
    Some(IncomingPin {
        service: ServiceKey {
            addr: vip,
            port: conn.vip_port.to_be_bytes(),
            proto: conn.protocol,
            family,
        },
        client,
        real: conn.ends.real(),
        real_port: conn.real_port,
        remaining_secs: (conn.timeout_secs != 0).then_some(conn.timeout_secs),
    })
}

/// A received connection, as a flow of this director's table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Incoming {
    pub key: FlowKey,
    /// The real it is on: the caller finds the real's id among the reals of the service
    /// (`key`'s destination, port and protocol).
    pub real: IpAddr,
    pub real_port: u16,
    /// `conn::STATE_*`.
    pub state: u8,
    /// How long ago its last packet is to count as seen: so that it times out when the
    /// master's copy would (the master's timeout for the state, when shorter than ours).
    pub idle_secs: u32,
}

/// The flow of a received record; `None` for what this director does not take (see the
/// module's comment).
pub fn incoming(conn: &SyncConn, timeouts: &Timeouts) -> Option<Incoming> {
    if conn.flags & flags::TEMPLATE != 0 {
        return None;
    }
    let state = match conn.protocol {
        PROTO_TCP => u8::try_from(conn.state)
            .ok()
            .filter(|&s| s <= STATE_SYNACK)?,
        PROTO_UDP => STATE_UDP,
        _ => return None,
    };
    let (client, family) = addr_bytes(conn.ends.client());
    let (vip, _) = addr_bytes(conn.ends.vip());
    let ours = timeouts.secs[usize::from(state)];
    let idle_secs = match conn.timeout_secs {
        0 => 0,
        theirs => ours.saturating_sub(theirs),
    };
    Some(Incoming {
        key: FlowKey {
            src: client,
            dst: vip,
            sport: conn.client_port.to_be_bytes(),
            dport: conn.vip_port.to_be_bytes(),
            proto: conn.protocol,
            family,
            _pad: [0; 2],
        },
        real: conn.ends.real(),
        real_port: conn.real_port,
        state,
        idle_secs,
    })
}

#[cfg(test)]
mod tests {
    use lb_common::{
        FWD_FNAT,
        conn::{STATE_FIN_WAIT, STATE_SYN_RECV},
    };

    use std::net::Ipv4Addr;

    use super::*;

    fn real(fwd: u8, addr: IpAddr) -> RealInfo {
        let mut info: RealInfo = bytemuck::Zeroable::zeroed();
        (info.addr, info.family) = addr_bytes(addr);
        info.port = 8080u16.to_be_bytes();
        info.fwd = fwd;
        info
    }

    fn event(proto: u8, client: IpAddr, vip: IpAddr, state: u8) -> SyncEvent {
        let (src, family) = addr_bytes(client);
        let (dst, _) = addr_bytes(vip);
        SyncEvent {
            key: FlowKey {
                src,
                dst,
                sport: 40000u16.to_be_bytes(),
                dport: 80u16.to_be_bytes(),
                proto,
                family,
                _pad: [0; 2],
            },
            real_id: 3,
            state,
            _pad: [0; 3],
        }
    }

    const CLIENT: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 7));
    const VIP: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 10));
    const REAL: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2));

    #[test]
    fn a_flow_becomes_the_record_ipvs_sends() {
        let dr = record(
            &event(PROTO_TCP, CLIENT, VIP, STATE_ESTABLISHED),
            &real(FWD_DR, REAL),
            &Timeouts::IPVS,
        )
        .expect("a record");
        assert_eq!(dr.flags, flags::DROUTE);
        assert_eq!(
            (dr.protocol, dr.state, dr.timeout_secs),
            (PROTO_TCP, 1, 900)
        );
        assert_eq!(
            (dr.ends.client(), dr.ends.vip(), dr.ends.real()),
            (CLIENT, VIP, REAL)
        );
        assert_eq!(
            (dr.client_port, dr.vip_port, dr.real_port),
            (40000, 80, 8080)
        );
        // Not established: inactive, with its state's timeout.
        let nat = record(
            &event(PROTO_TCP, CLIENT, VIP, STATE_SYN_RECV),
            &real(FWD_NAT, REAL),
            &Timeouts::IPVS,
        )
        .expect("a record");
        assert_eq!(nat.flags, flags::MASQ | flags::INACTIVE);
        assert_eq!((nat.state, nat.timeout_secs), (3, 60));
        let udp = record(
            &event(PROTO_UDP, CLIENT, VIP, STATE_UDP),
            &real(FWD_TUN, REAL),
            &Timeouts::IPVS,
        )
        .expect("a record");
        assert_eq!(udp.flags, flags::TUNNEL | flags::INACTIVE);
        assert_eq!((udp.state, udp.timeout_secs), (0, 300));
        // FullNAT's local end has no room in the record.
        let fnat = event(PROTO_TCP, CLIENT, VIP, STATE_ESTABLISHED);
        assert_eq!(record(&fnat, &real(FWD_FNAT, REAL), &Timeouts::IPVS), None);
    }

    #[test]
    fn a_record_becomes_the_same_flow_with_the_masters_time_left() {
        let client: IpAddr = "2001:db8::7".parse().expect("address");
        let vip: IpAddr = "2001:db8::10".parse().expect("address");
        let real_addr: IpAddr = "2001:db8:1::2".parse().expect("address");
        for (proto, state, client, vip, real_addr) in [
            (PROTO_TCP, STATE_ESTABLISHED, CLIENT, VIP, REAL),
            (PROTO_TCP, STATE_FIN_WAIT, client, vip, real_addr),
            (PROTO_UDP, STATE_UDP, CLIENT, VIP, REAL),
        ] {
            let flow = event(proto, client, vip, state);
            let sent = record(&flow, &real(FWD_DR, real_addr), &Timeouts::IPVS).expect("record");
            let got = incoming(&sent, &Timeouts::IPVS).expect("a flow");
            assert_eq!(got.key, flow.key);
            assert_eq!((got.real, got.real_port), (real_addr, 8080));
            assert_eq!((got.state, got.idle_secs), (state, 0));
        }
        // The master's ESTABLISHED timeout is 600 s, ours 900 s: 300 s count as gone.
        let mut shorter = record(
            &event(PROTO_TCP, CLIENT, VIP, STATE_ESTABLISHED),
            &real(FWD_DR, REAL),
            &Timeouts::IPVS,
        )
        .expect("record");
        shorter.timeout_secs = 600;
        assert_eq!(
            incoming(&shorter, &Timeouts::IPVS).map(|f| f.idle_secs),
            Some(300)
        );
        // Templates and other protocols are not flows here.
        let template = SyncConn {
            flags: flags::TEMPLATE,
            ..shorter.clone()
        };
        assert_eq!(incoming(&template, &Timeouts::IPVS), None);
        let sctp = SyncConn {
            protocol: 132,
            ..shorter
        };
        assert_eq!(incoming(&sctp, &Timeouts::IPVS), None);
    }

    #[test]
    fn a_pin_becomes_ipvs_template_and_back() {
        let (vip, family) = addr_bytes(VIP);
        let pin = Pin {
            service: ServiceKey {
                addr: vip,
                port: 443u16.to_be_bytes(),
                proto: PROTO_TCP,
                family,
            },
            client: addr_bytes("198.51.100.0".parse().expect("address")).0,
            remaining_secs: 250,
        };
        let sent = template(&pin, &real(FWD_DR, REAL)).expect("a template");
        assert_eq!(
            sent.flags,
            flags::TEMPLATE | flags::INACTIVE | flags::DROUTE
        );
        assert_eq!(
            (sent.protocol, sent.state, sent.timeout_secs),
            (PROTO_TCP, IPVS_TEMPLATE_ASSURED, 250)
        );
        assert_eq!(
            (sent.client_port, sent.vip_port, sent.real_port),
            (0, 443, 8080)
        );
        assert_eq!(
            (sent.ends.client(), sent.ends.vip(), sent.ends.real()),
            ("198.51.100.0".parse().expect("address"), VIP, REAL)
        );
        // A template is not a flow, and a flow is not a pin.
        assert_eq!(incoming(&sent, &Timeouts::IPVS), None);
        let got = incoming_pin(&sent).expect("a pin");
        assert_eq!((got.service, got.client), (pin.service, pin.client));
        assert_eq!(
            (got.real, got.real_port, got.remaining_secs),
            (REAL, 8080, Some(250))
        );
        let flow = record(
            &event(PROTO_TCP, CLIENT, VIP, STATE_ESTABLISHED),
            &real(FWD_DR, REAL),
            &Timeouts::IPVS,
        )
        .expect("record");
        assert_eq!(incoming_pin(&flow), None);
        // FullNAT pins and firewall-mark templates are not carried.
        assert_eq!(template(&pin, &real(FWD_FNAT, REAL)), None);
        let marked = SyncConn {
            fwmark: 7,
            ..sent.clone()
        };
        assert_eq!(incoming_pin(&marked), None);
        // No time left given: the whole timeout.
        let whole = SyncConn {
            timeout_secs: 0,
            ..sent
        };
        assert_eq!(incoming_pin(&whole).map(|p| p.remaining_secs), Some(None));
    }
}
