//! The connection-sync row of `cargo xtask bench`: what one synced connection costs on one
//! core, each way. Sending: a flow's event turned into IPVS's record (`sync::convert`),
//! batched into messages of 1472 bytes and sent on a UDP socket (to a socket of this
//! process on loopback). Receiving: the messages read, decoded, and each connection
//! installed into a balancer's flow table with its count (`sync_table`), as a backup does.
//! Both run on the calling thread, one after the other; the row gives connections and
//! messages per second.

use std::{
    collections::HashMap,
    net::{IpAddr, UdpSocket},
    time::{Duration, Instant},
};

use anyhow::Context as _;
use lb_common::{FAMILY_IPV4, FlowKey, PROTO_TCP, SyncEvent, conn::Timeouts};
use lb_sync::wire::{Batch, Message};
use lb_userspace::{
    dataplane::xdp::flows::monotonic_now_ns,
    sync::convert::{incoming, record},
};
use serde::Serialize;

use crate::testrun::{StaticNextHops, TestBalancer, next_hop};

/// Connections per run.
const CONNECTIONS: u32 = 100_000;

#[derive(Debug, Serialize)]
pub struct SyncRow {
    pub connections: u32,
    pub messages: usize,
    pub send_connections_per_s: f64,
    pub send_messages_per_s: f64,
    pub receive_connections_per_s: f64,
    pub receive_messages_per_s: f64,
}

/// One run of each way.
pub fn measure() -> anyhow::Result<SyncRow> {
    let mut table = HashMap::new();
    for last in 1..=3u8 {
        table.insert(
            IpAddr::from([10, 11, 0, last]),
            next_hop([0x02, 0xbb, 0, 0, 0, last], None),
        );
    }
    let mut balancer = TestBalancer::load(StaticNextHops(table), 1 << 20)?;
    balancer.apply_config(
        "virtual_server 192.0.2.95 80 {\n lb_algo rr\n lb_kind DR\n protocol TCP\n real_server 10.11.0.1 80 { }\n real_server 10.11.0.2 80 { }\n real_server 10.11.0.3 80 { }\n}\n",
    )?;
    let mut sync_table = balancer.dataplane.sync_table()?;
    let ids: Vec<u32> = balancer.real_ids()?.into_values().collect();
    let reals: Vec<_> = ids
        .iter()
        .map(|&id| sync_table.real(id).context("a real's entry"))
        .collect::<anyhow::Result<_>>()?;

    let receiver = UdpSocket::bind("127.0.0.1:0")?;
    receiver.set_read_timeout(Some(Duration::from_secs(1)))?;
    let sender = UdpSocket::bind("127.0.0.1:0")?;
    sender.connect(receiver.local_addr()?)?;
    // Room for every message at once: the receiving half runs after the sending one.
    let big: libc::c_int = 256 << 20;
    lb_userspace::sockopt::set(
        std::os::fd::AsRawFd::as_raw_fd(&receiver),
        libc::SOL_SOCKET,
        libc::SO_RCVBUFFORCE,
        &big,
    )?;

    // Sending.
    let started = Instant::now();
    let mut batch = Batch::new(1, 1472);
    let mut messages = 0;
    for n in 0..CONNECTIONS {
        let index = n as usize % reals.len();
        let event = event(n, ids[index]);
        let Some(conn) = record(&event, &reals[index], &Timeouts::IPVS) else {
            anyhow::bail!("a DR flow has a record");
        };
        if let Some(message) = batch.push(conn) {
            sender.send(&message.encode())?;
            messages += 1;
        }
    }
    if let Some(message) = batch.take() {
        sender.send(&message.encode())?;
        messages += 1;
    }
    let sending = started.elapsed();

    // Receiving.
    let started = Instant::now();
    let mut buffer = vec![0u8; 65536];
    let mut installed = 0;
    for _ in 0..messages {
        let len = receiver.recv(&mut buffer).context("a message")?;
        let decoded = Message::decode(&buffer[..len])?;
        let now_ns = monotonic_now_ns();
        let now = Instant::now();
        for conn in decoded.message.conns {
            let flow = incoming(&conn, &Timeouts::IPVS).context("a flow")?;
            sync_table.install(&flow, now_ns, now)?;
            installed += 1;
        }
    }
    let receiving = started.elapsed();
    anyhow::ensure!(
        installed == CONNECTIONS,
        "installed {installed} of {CONNECTIONS}"
    );
    let per_s = |count: f64, time: Duration| count / time.as_secs_f64();
    Ok(SyncRow {
        connections: CONNECTIONS,
        messages,
        send_connections_per_s: per_s(f64::from(CONNECTIONS), sending),
        send_messages_per_s: per_s(messages as f64, sending),
        receive_connections_per_s: per_s(f64::from(CONNECTIONS), receiving),
        receive_messages_per_s: per_s(messages as f64, receiving),
    })
}

/// Connection `n`'s event: a client of its own, established on real `real_id`.
fn event(n: u32, real_id: u32) -> SyncEvent {
    let mut src = [0u8; 16];
    src[..4].copy_from_slice(&[198, 19, (n >> 8) as u8, n as u8]);
    let mut dst = [0u8; 16];
    dst[..4].copy_from_slice(&[192, 0, 2, 95]);
    SyncEvent {
        key: FlowKey {
            src,
            dst,
            sport: ((n >> 16) as u16 + 1024).to_be_bytes(),
            dport: 80u16.to_be_bytes(),
            proto: PROTO_TCP,
            family: FAMILY_IPV4,
            _pad: [0; 2],
        },
        real_id,
        state: lb_common::conn::STATE_ESTABLISHED,
        _pad: [0; 3],
    }
}
