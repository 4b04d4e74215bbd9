//! VRRP adverts as a peer sees them: a packet socket in the peer's namespace records the
//! kernel's receive time of every advert from one sender, so that the intervals measure
//! the sender's timing and not this process's scheduling.

use std::{
    ffi::CString,
    io,
    net::Ipv4Addr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::Duration,
};

use anyhow::{Context as _, bail};

use crate::netns::Netns;

/// IP protocol number of VRRP.
const IPPROTO_VRRP: u8 = 112;

/// Adverts being recorded until `finish`.
pub struct AdvertCapture {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<anyhow::Result<Vec<Duration>>>,
}

impl AdvertCapture {
    /// Record the IPv4 VRRP adverts from `sender` arriving on `interface` in `ns`.
    pub fn start(ns: &Netns, interface: &str, sender: Ipv4Addr) -> anyhow::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let interface = interface.to_owned();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let thread = ns.spawn(move || {
            let socket = match PacketSocket::open(&interface) {
                Ok(socket) => {
                    let _ = ready_tx.send(Ok(()));
                    socket
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e.to_string()));
                    return Err(e);
                }
            };
            let mut times = Vec::new();
            while !stopped.load(Ordering::Relaxed) {
                if let Some((at, packet)) = socket.receive()?
                    && packet.len() >= 20
                    && packet[9] == IPPROTO_VRRP
                    && packet[12..16] == sender.octets()
                {
                    times.push(at);
                }
            }
            Ok(times)
        })?;
        match ready_rx.recv_timeout(Duration::from_secs(5)) {
            Ok(Ok(())) => Ok(Self { stop, thread }),
            Ok(Err(e)) => bail!("advert capture: {e}"),
            Err(_) => bail!("advert capture did not start"),
        }
    }

    /// Stop; the receive times (the kernel's clock) of the adverts seen.
    pub fn finish(self) -> anyhow::Result<Vec<Duration>> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .join()
            .map_err(|_| anyhow::anyhow!("advert capture panicked"))?
    }
}

/// The gaps between consecutive times.
pub fn intervals(times: &[Duration]) -> Vec<Duration> {
    times
        .windows(2)
        .map(|w| w[1].saturating_sub(w[0]))
        .collect()
}

/// Percentiles of a set of intervals.
#[derive(Clone, Copy, Debug, serde::Serialize)]
pub struct IntervalStats {
    pub count: usize,
    pub min_ms: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl IntervalStats {
    pub fn of(intervals: &[Duration]) -> Option<Self> {
        if intervals.is_empty() {
            return None;
        }
        let mut sorted: Vec<f64> = intervals.iter().map(|d| d.as_secs_f64() * 1e3).collect();
        sorted.sort_by(f64::total_cmp);
        let at = |q: f64| sorted[((sorted.len() - 1) as f64 * q).round() as usize];
        Some(Self {
            count: sorted.len(),
            min_ms: sorted[0],
            p50_ms: at(0.5),
            p99_ms: at(0.99),
            max_ms: sorted[sorted.len() - 1],
        })
    }
}

/// An `AF_PACKET` socket for IPv4 on one interface, with kernel receive timestamps.
struct PacketSocket {
    fd: libc::c_int,
}

impl PacketSocket {
    fn open(interface: &str) -> anyhow::Result<Self> {
        let name = CString::new(interface)?;
        // SAFETY: a NUL-terminated name.
        let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
        if ifindex == 0 {
            bail!("no interface {interface}: {}", io::Error::last_os_error());
        }
        let protocol = (libc::ETH_P_IP as u16).to_be();
        // SAFETY: plain syscall.
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_DGRAM, i32::from(protocol)) };
        if fd < 0 {
            return Err(io::Error::last_os_error()).context("packet socket");
        }
        let socket = Self { fd };
        // SAFETY: a zeroed sockaddr_ll is valid; its size is passed with it.
        let rc = unsafe {
            let mut addr: libc::sockaddr_ll = std::mem::zeroed();
            addr.sll_family = libc::AF_PACKET as u16;
            addr.sll_protocol = protocol;
            addr.sll_ifindex = ifindex as i32;
            libc::bind(
                fd,
                (&raw const addr).cast(),
                size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error()).context("bind the packet socket");
        }
        socket.option(libc::SO_TIMESTAMPNS, &1i32)?;
        let timeout = libc::timeval {
            tv_sec: 0,
            tv_usec: 100_000,
        };
        socket.option(libc::SO_RCVTIMEO, &timeout)?;
        Ok(socket)
    }

    fn option<T>(&self, name: libc::c_int, value: &T) -> anyhow::Result<()> {
        // SAFETY: `value` is live and its size is passed with it.
        let rc = unsafe {
            libc::setsockopt(
                self.fd,
                libc::SOL_SOCKET,
                name,
                (value as *const T).cast(),
                size_of::<T>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error()).context("setsockopt");
        }
        Ok(())
    }

    /// The next packet with its kernel receive time (`CLOCK_REALTIME`); `None` after the
    /// receive timeout.
    fn receive(&self) -> anyhow::Result<Option<(Duration, Vec<u8>)>> {
        let mut buffer = vec![0u8; 2048];
        let mut control = [0u64; 16];
        let mut iov = libc::iovec {
            iov_base: buffer.as_mut_ptr().cast(),
            iov_len: buffer.len(),
        };
        // SAFETY: a zeroed msghdr is valid; every pointer set below outlives the call.
        let mut message: libc::msghdr = unsafe { std::mem::zeroed() };
        message.msg_iov = &raw mut iov;
        message.msg_iovlen = 1;
        message.msg_control = control.as_mut_ptr().cast();
        message.msg_controllen = size_of_val(&control);
        // SAFETY: `message` describes buffers we own.
        let n = unsafe { libc::recvmsg(self.fd, &raw mut message, 0) };
        if n < 0 {
            let error = io::Error::last_os_error();
            return match error.kind() {
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => Ok(None),
                _ => Err(error).context("recvmsg"),
            };
        }
        buffer.truncate(n as usize);
        let mut at = None;
        // SAFETY: walking the control messages the kernel wrote into `control`.
        unsafe {
            let mut cmsg = libc::CMSG_FIRSTHDR(&raw const message);
            while !cmsg.is_null() {
                if (*cmsg).cmsg_level == libc::SOL_SOCKET
                    && (*cmsg).cmsg_type == libc::SCM_TIMESTAMPNS
                {
                    let ts: libc::timespec = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast());
                    at = Some(Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32));
                }
                cmsg = libc::CMSG_NXTHDR(&raw const message, cmsg);
            }
        }
        let at = at.context("no receive timestamp")?;
        Ok(Some((at, buffer)))
    }
}

impl Drop for PacketSocket {
    fn drop(&mut self) {
        // SAFETY: our own descriptor, closed once.
        unsafe { libc::close(self.fd) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interval_percentiles() {
        let times: Vec<Duration> = [0, 100, 200, 310, 400]
            .iter()
            .map(|&ms| Duration::from_millis(ms))
            .collect();
        let stats = IntervalStats::of(&intervals(&times)).expect("intervals");
        assert_eq!(stats.count, 4);
        assert_eq!((stats.min_ms, stats.max_ms), (90.0, 110.0));
        assert!(IntervalStats::of(&[]).is_none());
    }
}
