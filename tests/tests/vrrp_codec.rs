//! The VRRP codec against keepalived itself: keepalived 2.2.7 advertises to a unicast
//! peer in a namespace, VRRPv2 with `auth_type PASS` over IPv4 and VRRPv3 over IPv4 and
//! IPv6; a raw socket on the peer's side catches the packets, which must decode (checksum
//! included) to what the configuration says, and encode back to the same bytes. Needs
//! root and keepalived.

use std::{
    net::{IpAddr, Ipv6Addr},
    path::Path,
    process::{Child, Stdio},
    time::{Duration, Instant},
};

use lb_tests::{netns::Netns, privilege::require_root};
use lb_vrrp::packet::{Advertisement, Auth, IPPROTO_VRRP, Version};

/// keepalived running in `ns` with `config`; killed on drop.
struct Keepalived(Child);

impl Drop for Keepalived {
    fn drop(&mut self) {
        // A graceful stop (SIGTERM) removes its pid files and addresses; bounded.
        if let Ok(pid) = i32::try_from(self.0.id()) {
            // SAFETY: kill(2) on our own child.
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn keepalived(ns: &Netns, dir: &Path, config: &str) -> Keepalived {
    let path = dir.join("keepalived.conf");
    std::fs::write(&path, config).expect("config");
    let mut command = ns.command(lb_tests::keepalived::BINARY).expect("command");
    command
        .args(["-n", "-l", "-D", "-P", "-f"])
        .arg(&path)
        .arg("-p")
        .arg(dir.join("k.pid"))
        .arg("-r")
        .arg(dir.join("v.pid"))
        .arg("-c")
        .arg(dir.join("c.pid"))
        .stdout(Stdio::null())
        .stderr(
            std::fs::File::create(dir.join("keepalived.log"))
                .map(Stdio::from)
                .unwrap_or_else(|_| Stdio::null()),
        );
    Keepalived(command.spawn().expect("keepalived"))
}

/// The first VRRP packet received in `ns` within 10 s: (source, TTL or hop limit,
/// payload). IPv4 raw sockets give the IP header; IPv6 ones the payload alone.
fn catch(ns: &Netns, ipv6: bool) -> (IpAddr, u8, Vec<u8>) {
    ns.run(move || {
        let domain = if ipv6 { libc::AF_INET6 } else { libc::AF_INET };
        // SAFETY: plain socket(2).
        let fd = unsafe { libc::socket(domain, libc::SOCK_RAW, i32::from(IPPROTO_VRRP)) };
        anyhow::ensure!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
        if ipv6 {
            let on: i32 = 1;
            // SAFETY: setsockopt with an int.
            unsafe {
                libc::setsockopt(
                    fd,
                    libc::IPPROTO_IPV6,
                    libc::IPV6_RECVHOPLIMIT,
                    (&on as *const i32).cast(),
                    4,
                )
            };
        }
        let timeout = libc::timeval {
            tv_sec: 10,
            tv_usec: 0,
        };
        // SAFETY: setsockopt with a timeval.
        unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&timeout as *const libc::timeval).cast(),
                std::mem::size_of::<libc::timeval>() as u32,
            )
        };
        let mut buffer = [0u8; 2048];
        let mut control = [0u8; 128];
        // SAFETY: zeroed sockaddr storage and msghdr, filled below.
        let mut from: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
        let mut iov = libc::iovec {
            iov_base: buffer.as_mut_ptr().cast(),
            iov_len: buffer.len(),
        };
        let mut message: libc::msghdr = unsafe { std::mem::zeroed() };
        message.msg_name = (&mut from as *mut libc::sockaddr_storage).cast();
        message.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as u32;
        message.msg_iov = &mut iov;
        message.msg_iovlen = 1;
        message.msg_control = control.as_mut_ptr().cast();
        message.msg_controllen = control.len();
        // SAFETY: recvmsg into the buffers set up above.
        let read = unsafe { libc::recvmsg(fd, &mut message, 0) };
        let error = std::io::Error::last_os_error();
        // SAFETY: closing the socket this closure opened.
        unsafe { libc::close(fd) };
        anyhow::ensure!(read > 0, "no VRRP packet within 10 s: {error}");
        let packet = buffer[..read as usize].to_vec();
        if ipv6 {
            // SAFETY: the kernel filled a sockaddr_in6 for an AF_INET6 socket.
            let sin6 =
                unsafe { &*(&from as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            let src = IpAddr::V6(Ipv6Addr::from(sin6.sin6_addr.s6_addr));
            // The hop limit is the int of the first control message.
            let hops = i32::from_ne_bytes(control[16..20].try_into()?);
            Ok((src, hops as u8, packet))
        } else {
            let header = usize::from(packet[0] & 0x0f) * 4;
            let src = IpAddr::from([packet[12], packet[13], packet[14], packet[15]]);
            Ok((src, packet[8], packet[header..].to_vec()))
        }
    })
    .expect("catch a VRRP packet")
}

fn instance(version: u8, peer: &str, local: &str, vip: &str, auth: &str) -> String {
    format!(
        "global_defs {{\n    vrrp_version {version}\n}}\nvrrp_instance VI_1 {{\n    state MASTER\n    interface eth0\n    virtual_router_id 42\n    priority 150\n    advert_int 1\n    unicast_src_ip {local}\n    unicast_peer {{\n        {peer}\n    }}\n{auth}    virtual_ipaddress {{\n        {vip}\n    }}\n}}\n"
    )
}

#[test]
fn keepalived_adverts_decode_as_configured() {
    if !require_root("keepalived_adverts_decode_as_configured") {
        return;
    }
    if !lb_tests::keepalived::available("keepalived_adverts_decode_as_configured") {
        return;
    }
    // keepalived in one namespace, the peer that catches its packets in another.
    let ns = Netns::create("lbt-vrrpc-k").expect("netns");
    let peer = Netns::create("lbt-vrrpc-p").expect("netns");
    ns.ip(&[
        "link",
        "add",
        "eth0",
        "type",
        "veth",
        "peer",
        "name",
        "eth1",
        "netns",
        peer.name(),
    ])
    .expect("veth");
    for (side, dev, v4, v6) in [
        (&ns, "eth0", "10.9.0.1/24", "2001:db8:9::1/64"),
        (&peer, "eth1", "10.9.0.2/24", "2001:db8:9::2/64"),
    ] {
        side.ip(&["addr", "add", v4, "dev", dev]).expect("v4");
        side.ip(&["addr", "add", v6, "dev", dev, "nodad"])
            .expect("v6");
        side.ip(&["link", "set", dev, "up"]).expect("up");
    }
    let dir = std::env::temp_dir().join("lbt-vrrpc");
    std::fs::create_dir_all(&dir).expect("dir");

    let cases = [
        (
            instance(
                2,
                "10.9.0.2",
                "10.9.0.1",
                "10.9.0.100",
                "    authentication {\n        auth_type PASS\n        auth_pass s3cret\n    }\n",
            ),
            false,
            Version::V2,
            "10.9.0.100",
            Auth::pass("s3cret"),
        ),
        (
            instance(3, "10.9.0.2", "10.9.0.1", "10.9.0.101", ""),
            false,
            Version::V3,
            "10.9.0.101",
            Auth::None,
        ),
        (
            instance(3, "2001:db8:9::2", "2001:db8:9::1", "2001:db8:9::100", ""),
            true,
            Version::V3,
            "2001:db8:9::100",
            Auth::None,
        ),
    ];
    for (config, ipv6, version, vip, auth) in cases {
        let started = Instant::now();
        eprintln!("keepalived VRRP {version:?}, IPv6 {ipv6}");
        let _keepalived = keepalived(&ns, &dir, &config);
        let (src, ttl, payload) = catch(&peer, ipv6);
        let dst: IpAddr = if ipv6 {
            "2001:db8:9::2".parse().unwrap()
        } else {
            "10.9.0.2".parse().unwrap()
        };
        let advert = Advertisement::decode(&payload, src, dst)
            .unwrap_or_else(|e| panic!("{version:?} ipv6={ipv6}: {e}: {payload:02x?}"));
        // keepalived 2.2.7 sends unicast IPv6 adverts with hop limit 64, not RFC 5798's
        // 255 (IPv4: TTL 255); a receiver talking to it must not insist on 255 from
        // unicast peers (keepalived itself does not).
        assert_eq!(ttl, if ipv6 { 64 } else { 255 }, "{version:?} ipv6={ipv6}");
        assert_eq!(advert.version, version);
        assert_eq!(advert.vrid, 42);
        assert_eq!(advert.priority, 150);
        assert_eq!(advert.interval_cs, 100);
        assert_eq!(advert.addresses, [vip.parse::<IpAddr>().unwrap()]);
        assert_eq!(advert.auth, auth);
        // And our encoding of it is byte for byte keepalived's.
        assert_eq!(advert.encode(src, dst), payload, "{version:?} ipv6={ipv6}");
        assert!(started.elapsed() < Duration::from_secs(15));
    }
    let _ = std::fs::remove_dir_all(&dir);
}
