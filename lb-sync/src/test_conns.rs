//! Records for the tests of this crate.

use crate::wire::{Ends, SyncConn, flags};

/// An established IPv4 TCP connection from `client`:`port` to 192.0.2.10:80, directly
/// routed to 10.0.0.2:80, 900 s left.
pub fn tcp_conn(client: [u8; 4], port: u16) -> SyncConn {
    SyncConn {
        protocol: 6,
        flags: flags::DROUTE,
        state: 1,
        ends: Ends::V4 {
            client: client.into(),
            vip: [192, 0, 2, 10].into(),
            real: [10, 0, 0, 2].into(),
        },
        client_port: port,
        vip_port: 80,
        real_port: 80,
        fwmark: 0,
        timeout_secs: 900,
        seq: None,
        pe_data: Vec::new(),
        pe_name: Vec::new(),
    }
}
