//! lbd's VRRP against keepalived 2.2.7 on the wire: two namespaces joined by a veth, lbd
//! (`-P`, VRRP only) in one, keepalived in the other. Scenarios: lbd master with a
//! keepalived backup and the reverse, preemption both ways, `nopreempt`, unicast peers,
//! VRRPv2 with a password (a wrong one is ignored and logged), VRRPv3 over IPv6, a
//! graceful stop handing over at once and SIGKILL handing over after the master-down
//! interval, `use_vmac` over IPv4 and (with a keepalived backup) IPv6. Needs root and
//! keepalived.

use std::{
    path::PathBuf,
    time::{Duration, Instant},
};

use lb_tests::{
    keepalived::{self, Keepalived},
    lbd::Lbd,
    netns::Netns,
    privilege::require_root,
};

/// Two namespaces with `eth0` each, joined; lbd's side is `.1`, keepalived's `.2`.
struct Pair {
    lbd: Netns,
    peer: Netns,
    dir: PathBuf,
}

fn pair(prefix: &str) -> Pair {
    let lbd = Netns::create(&format!("{prefix}-l")).expect("netns");
    let peer = Netns::create(&format!("{prefix}-k")).expect("netns");
    lbd.ip(&[
        "link",
        "add",
        "eth0",
        "type",
        "veth",
        "peer",
        "name",
        "eth0",
        "netns",
        peer.name(),
    ])
    .expect("veth");
    for (ns, last) in [(&lbd, 1), (&peer, 2)] {
        ns.ip(&["addr", "add", &format!("10.9.0.{last}/24"), "dev", "eth0"])
            .expect("v4");
        ns.ip(&[
            "addr",
            "add",
            &format!("2001:db8:9::{last}/64"),
            "dev",
            "eth0",
            "nodad",
        ])
        .expect("v6");
        ns.ip(&["link", "set", "eth0", "up"]).expect("up");
    }
    let dir = std::env::temp_dir().join(prefix);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    Pair { lbd, peer, dir }
}

/// A vrrp_instance for VIP `vip` with `priority` and extra lines.
fn instance(priority: u8, vip: &str, extra: &str) -> String {
    format!(
        "vrrp_instance VI_1 {{\n    state BACKUP\n    interface eth0\n    virtual_router_id 42\n    priority {priority}\n    advert_int 1\n{extra}    virtual_ipaddress {{\n        {vip}\n    }}\n}}\n"
    )
}

const PASS: &str =
    "    authentication {\n        auth_type PASS\n        auth_pass s3cret\n    }\n";

impl Pair {
    fn lbd(&self, config: &str) -> Lbd {
        let path = self.dir.join("lbd.conf");
        std::fs::write(&path, config).expect("config");
        let name = format!("{}-lbd", self.lbd.name());
        Lbd::start_like_keepalived(
            &self.lbd,
            &path,
            &name,
            &self.dir.join("lbd.log"),
            &["-P", "-p", &self.dir.join("lbd.pid").display().to_string()],
        )
        .expect("lbd")
    }

    fn keepalived(&self, config: &str) -> Keepalived {
        Keepalived::start(&self.peer, &self.dir.join("keepalived"), config).expect("keepalived")
    }

    /// VRRPv3 for `vip`: keepalived at priority 100, then lbd at 150 (with `extra` lines),
    /// once lbd is master.
    fn v3_lbd_master(&self, vip: &str, extra: &str) -> (Keepalived, Lbd) {
        let v3 = "global_defs {\n    vrrp_version 3\n}\n";
        let keepalived = self.keepalived(&format!("{v3}{}", instance(100, vip, "")));
        let mut lbd = self.lbd(&format!("{v3}{}", instance(150, vip, extra)));
        lbd.wait_for("Entering MASTER STATE", 1, Duration::from_secs(10))
            .expect("lbd master");
        (keepalived, lbd)
    }

    /// Whether `ns` holds `vip` now.
    fn holds(ns: &Netns, vip: &str) -> bool {
        let address = vip.split('/').next().unwrap_or(vip);
        ns.ip(&["addr", "show", "dev", "eth0"])
            .map(|out| out.contains(&format!("{address}/")))
            .unwrap_or(false)
    }

    /// Wait until `ns` holds `vip` (or not); how long it took.
    fn wait_holds(ns: &Netns, vip: &str, want: bool, timeout: Duration) -> Duration {
        let started = Instant::now();
        while Pair::holds(ns, vip) != want {
            assert!(
                started.elapsed() < timeout,
                "{} {} {vip} after {timeout:?}",
                ns.name(),
                if want { "does not hold" } else { "still holds" }
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        started.elapsed()
    }
}

fn ready(test: &str) -> bool {
    require_root(test) && keepalived::available(test)
}

#[test]
fn lbd_master_keepalived_backup_and_graceful_handover() {
    if !ready("lbd_master_keepalived_backup_and_graceful_handover") {
        return;
    }
    let pair = pair("lbt-vi1");
    let vip = "10.9.0.100/24";
    let keepalived = pair.keepalived(&instance(100, vip, PASS));
    let mut lbd = pair.lbd(&instance(150, vip, PASS));
    lbd.wait_for("Entering MASTER STATE", 1, Duration::from_secs(10))
        .expect("lbd master");
    Pair::wait_holds(&pair.lbd, vip, true, Duration::from_secs(2));
    keepalived
        .wait_for("Entering BACKUP STATE", 1, Duration::from_secs(5))
        .expect("keepalived backup");
    // Some adverts later keepalived is still backup: it takes lbd's packets.
    std::thread::sleep(Duration::from_secs(3));
    assert!(!keepalived.log().contains("Entering MASTER STATE"));
    assert!(!Pair::holds(&pair.peer, vip));
    // A graceful stop: priority 0, keepalived takes over at once.
    let stop = Instant::now();
    lbd.stop().expect("stop");
    let took = Pair::wait_holds(&pair.peer, vip, true, Duration::from_secs(3));
    eprintln!(
        "graceful stop: keepalived holds the VIP {:?} after SIGTERM",
        stop.elapsed().max(took)
    );
    assert!(!Pair::holds(&pair.lbd, vip));
}

#[test]
fn keepalived_master_lbd_backup_and_sigkill_takeover() {
    if !ready("keepalived_master_lbd_backup_and_sigkill_takeover") {
        return;
    }
    let pair = pair("lbt-vi2");
    let vip = "10.9.0.101/24";
    let v3 = "global_defs {\n    vrrp_version 3\n}\n";
    let mut keepalived = pair.keepalived(&format!("{v3}{}", instance(150, vip, "")));
    keepalived
        .wait_for("Entering MASTER STATE", 1, Duration::from_secs(10))
        .expect("keepalived master");
    let lbd = pair.lbd(&format!("{v3}{}", instance(100, vip, "")));
    lbd_stays_backup(&lbd, &pair, vip);
    // A crash: lbd takes over after the master-down interval (3.61 s at priority 100).
    let killed = Instant::now();
    keepalived.kill();
    Pair::wait_holds(&pair.lbd, vip, true, Duration::from_secs(6));
    let took = killed.elapsed();
    eprintln!("SIGKILL of keepalived: lbd holds the VIP after {took:?}");
    assert!(took >= Duration::from_secs(3), "{took:?}");
}

/// lbd waits as backup for 5 s: no MASTER, no VIP.
fn lbd_stays_backup(lbd: &Lbd, pair: &Pair, vip: &str) {
    std::thread::sleep(Duration::from_secs(5));
    let log = lbd.log().join("\n");
    assert!(log.contains("Entering BACKUP STATE"), "{log}");
    assert!(!log.contains("Entering MASTER STATE"), "{log}");
    assert!(!Pair::holds(&pair.lbd, vip));
}

#[test]
fn preemption_both_ways_and_nopreempt() {
    if !ready("preemption_both_ways_and_nopreempt") {
        return;
    }
    let pair = pair("lbt-vi3");
    let vip = "10.9.0.102/24";
    // keepalived master at 100; lbd at 150 preempts it.
    let keepalived = pair.keepalived(&instance(100, vip, ""));
    keepalived
        .wait_for("Entering MASTER STATE", 1, Duration::from_secs(10))
        .expect("keepalived master");
    let mut lbd = pair.lbd(&instance(150, vip, ""));
    lbd.wait_for("Entering MASTER STATE", 1, Duration::from_secs(10))
        .expect("lbd preempts");
    keepalived
        .wait_for("Entering BACKUP STATE", 2, Duration::from_secs(5))
        .expect("keepalived yields");
    lbd.stop().expect("stop");
    drop(keepalived);

    // lbd master at 100; keepalived at 150 preempts it.
    let mut lbd = pair.lbd(&instance(100, vip, ""));
    lbd.wait_for("Entering MASTER STATE", 1, Duration::from_secs(10))
        .expect("lbd master");
    let keepalived = pair.keepalived(&instance(150, vip, ""));
    lbd.wait_for("Entering BACKUP STATE", 2, Duration::from_secs(10))
        .expect("lbd yields to keepalived");
    Pair::wait_holds(&pair.peer, vip, true, Duration::from_secs(3));
    lbd.stop().expect("stop");
    drop(keepalived);

    // nopreempt: lbd at 150 does not take over from keepalived at 100.
    let keepalived = pair.keepalived(&instance(100, vip, ""));
    keepalived
        .wait_for("Entering MASTER STATE", 1, Duration::from_secs(10))
        .expect("keepalived master");
    let lbd = pair.lbd(&instance(150, vip, "    nopreempt\n"));
    lbd_stays_backup(&lbd, &pair, vip);
    drop(keepalived);
}

#[test]
fn unicast_peers_and_a_wrong_password() {
    if !ready("unicast_peers_and_a_wrong_password") {
        return;
    }
    let pair = pair("lbt-vi4");
    let vip = "10.9.0.103/24";
    let unicast = |local: u8, peer: u8| {
        format!(
            "    unicast_src_ip 10.9.0.{local}\n    unicast_peer {{\n        10.9.0.{peer}\n    }}\n{PASS}"
        )
    };
    let keepalived = pair.keepalived(&instance(150, vip, &unicast(2, 1)));
    keepalived
        .wait_for("Entering MASTER STATE", 1, Duration::from_secs(10))
        .expect("keepalived master");
    let lbd = pair.lbd(&instance(100, vip, &unicast(1, 2)));
    lbd_stays_backup(&lbd, &pair, vip);
    drop(lbd);

    // Another password: keepalived's adverts are ignored (and logged); lbd takes over.
    let wrong = unicast(1, 2).replace("s3cret", "other");
    let mut lbd = pair.lbd(&instance(100, vip, &wrong));
    lbd.wait_for("wrong password; ignored", 1, Duration::from_secs(5))
        .expect("wrong password logged");
    lbd.wait_for("Entering MASTER STATE", 1, Duration::from_secs(10))
        .expect("lbd master on its own");
    drop(keepalived);
}

#[test]
fn vrrpv3_over_ipv6() {
    if !ready("vrrpv3_over_ipv6") {
        return;
    }
    let pair = pair("lbt-vi5");
    let vip = "2001:db8:9::100/64";
    let (keepalived, mut lbd) = pair.v3_lbd_master(vip, "");
    Pair::wait_holds(&pair.lbd, vip, true, Duration::from_secs(2));
    keepalived
        .wait_for("Entering BACKUP STATE", 1, Duration::from_secs(5))
        .expect("keepalived backup");
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        !keepalived.log().contains("Entering MASTER STATE"),
        "{}",
        keepalived.log()
    );
    lbd.stop().expect("stop");
    Pair::wait_holds(&pair.peer, vip, true, Duration::from_secs(3));
}

#[test]
fn two_lbd_directors_follow_track_script_and_track_interface() {
    if !require_root("two_lbd_directors_follow_track_script_and_track_interface") {
        return;
    }
    let pair = pair("lbt-vi6");
    let vip = "10.9.0.104/24";
    // A tracked interface of its own in the first director's namespace.
    pair.lbd
        .ip(&[
            "link", "add", "trk0", "type", "veth", "peer", "name", "trk1",
        ])
        .expect("veth");
    for dev in ["trk0", "trk1"] {
        pair.lbd.ip(&["link", "set", dev, "up"]).expect("up");
    }
    let flag = pair.dir.join("healthy");
    std::fs::write(&flag, "").expect("flag");
    let first = format!(
        "vrrp_script chk {{\n    script \"test -e {}\"\n    interval 0.2\n    weight -100\n    fall 1\n    rise 1\n}}\n{}",
        flag.display(),
        instance(
            150,
            vip,
            "    track_script {\n        chk\n    }\n    track_interface {\n        trk0\n    }\n",
        )
    );
    let mut a = pair.lbd(&first);
    let path = pair.dir.join("second.conf");
    std::fs::write(&path, instance(100, vip, "")).expect("config");
    let mut b = Lbd::start_like_keepalived(
        &pair.peer,
        &path,
        "lbt-vi6-second",
        &pair.dir.join("second.log"),
        &[
            "-P",
            "-p",
            &pair.dir.join("second.pid").display().to_string(),
        ],
    )
    .expect("second lbd");
    a.wait_for("Entering MASTER STATE", 1, Duration::from_secs(10))
        .expect("first master");
    Pair::wait_holds(&pair.lbd, vip, true, Duration::from_secs(2));

    // The script fails: 150 - 100 = 50 < 100, the second director preempts.
    std::fs::remove_file(&flag).expect("remove flag");
    a.wait_for("priority 150 -> 50", 1, Duration::from_secs(5))
        .expect("priority lowered");
    b.wait_for("Entering MASTER STATE", 1, Duration::from_secs(10))
        .expect("second master");
    Pair::wait_holds(&pair.peer, vip, true, Duration::from_secs(3));
    a.wait_for("Entering BACKUP STATE", 2, Duration::from_secs(5))
        .expect("first backup");

    // Back to health: the first preempts again.
    std::fs::write(&flag, "").expect("flag");
    a.wait_for("Entering MASTER STATE", 2, Duration::from_secs(10))
        .expect("first master again");
    Pair::wait_holds(&pair.lbd, vip, true, Duration::from_secs(3));

    // Its tracked interface goes down: FAULT, the second takes over at once (priority 0).
    pair.lbd.ip(&["link", "set", "trk0", "down"]).expect("down");
    a.wait_for("Entering FAULT STATE", 1, Duration::from_secs(5))
        .expect("fault");
    Pair::wait_holds(&pair.peer, vip, true, Duration::from_secs(3));
    assert!(!Pair::holds(&pair.lbd, vip));
    pair.lbd.ip(&["link", "set", "trk0", "up"]).expect("up");
    a.wait_for("Entering MASTER STATE", 3, Duration::from_secs(10))
        .expect("first master after the fault");
}

#[test]
fn a_reload_restarts_only_the_instances_that_changed() {
    if !require_root("a_reload_restarts_only_the_instances_that_changed") {
        return;
    }
    let pair = pair("lbt-vi7");
    let two = |second_priority: u8| {
        format!(
            "{}{}",
            instance(150, "10.9.0.105/24", ""),
            instance(second_priority, "10.9.0.106/24", "")
                .replace("VI_1", "VI_2")
                .replace("virtual_router_id 42", "virtual_router_id 43")
        )
    };
    let mut lbd = pair.lbd(&two(100));
    lbd.wait_for("(VI_2) Entering MASTER STATE", 1, Duration::from_secs(10))
        .expect("both master");
    lbd.wait_for("(VI_1) Entering MASTER STATE", 1, Duration::from_secs(10))
        .expect("both master");
    std::fs::write(pair.dir.join("lbd.conf"), two(120)).expect("config");
    lbd.reload().expect("reload");
    let log = lbd.log().join("\n");
    assert!(log.contains("reload: VRRP instance VI_2"), "{log}");
    assert!(!log.contains("reload: VRRP instance VI_1"), "{log}");
    lbd.wait_for("(VI_2) Entering MASTER STATE", 2, Duration::from_secs(10))
        .expect("VI_2 master again");
    // VI_1 kept its state and its address all along.
    let log = lbd.log().join("\n");
    assert_eq!(log.matches("(VI_1) Entering").count(), 2, "{log}");
    assert!(Pair::holds(&pair.lbd, "10.9.0.105/24"));
}

#[test]
fn a_sync_group_moves_together() {
    if !require_root("a_sync_group_moves_together") {
        return;
    }
    let pair = pair("lbt-vi8");
    let (vip1, vip2) = ("10.9.0.107/24", "10.9.0.108/24");
    let flag = pair.dir.join("healthy");
    std::fs::write(&flag, "").expect("flag");
    // Two instances in a sync group on each director; only VI_1 tracks the script.
    let group = |priority: u8, track: &str| {
        format!(
            "{}{}vrrp_sync_group VG {{\n    group {{\n        VI_1\n        VI_2\n    }}\n}}\n",
            instance(priority, vip1, track),
            instance(priority, vip2, "")
                .replace("VI_1", "VI_2")
                .replace("virtual_router_id 42", "virtual_router_id 43")
        )
    };
    let script = format!(
        "vrrp_script chk {{\n    script \"test -e {}\"\n    interval 0.2\n    fall 1\n    rise 1\n}}\n",
        flag.display()
    );
    let mut a = pair.lbd(&format!(
        "{script}{}",
        group(150, "    track_script {\n        chk\n    }\n")
    ));
    let path = pair.dir.join("second.conf");
    std::fs::write(&path, group(100, "")).expect("config");
    let _b = Lbd::start_like_keepalived(
        &pair.peer,
        &path,
        "lbt-vi8-second",
        &pair.dir.join("second.log"),
        &[
            "-P",
            "-p",
            &pair.dir.join("second.pid").display().to_string(),
        ],
    )
    .expect("second lbd");
    for vip in [vip1, vip2] {
        Pair::wait_holds(&pair.lbd, vip, true, Duration::from_secs(10));
    }
    // VI_1's script fails: VI_1 goes to FAULT, and VI_2 with it, though nothing it
    // tracks failed; the other director takes both.
    std::fs::remove_file(&flag).expect("remove flag");
    a.wait_for("(VI_2) Entering FAULT STATE", 1, Duration::from_secs(5))
        .expect("VI_2 follows VI_1 into FAULT");
    for vip in [vip1, vip2] {
        Pair::wait_holds(&pair.peer, vip, true, Duration::from_secs(3));
        assert!(!Pair::holds(&pair.lbd, vip));
    }
    // Recovery: both come back together and preempt.
    std::fs::write(&flag, "").expect("flag");
    for vip in [vip1, vip2] {
        Pair::wait_holds(&pair.lbd, vip, true, Duration::from_secs(10));
    }
}

/// Gratuitous ARP frames for `vip` seen on `ns`'s eth0 during `window`.
fn count_garps(ns: &Netns, vip: std::net::Ipv4Addr, window: Duration) -> usize {
    ns.run(move || {
        const ETH_P_ARP: u16 = 0x0806;
        // SAFETY: plain socket(2), closed below.
        let fd = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW,
                i32::from(ETH_P_ARP.to_be()),
            )
        };
        anyhow::ensure!(
            fd >= 0,
            "packet socket: {}",
            std::io::Error::last_os_error()
        );
        let timeout = libc::timeval {
            tv_sec: 0,
            tv_usec: 100_000,
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
        let deadline = Instant::now() + window;
        let mut count = 0;
        let mut frame = [0u8; 128];
        while Instant::now() < deadline {
            // SAFETY: recv into a live buffer.
            let read = unsafe { libc::recv(fd, frame.as_mut_ptr().cast(), frame.len(), 0) };
            // Sender and target protocol addresses both the VIP: gratuitous.
            if read >= 42 && frame[28..32] == vip.octets() && frame[38..42] == vip.octets() {
                count += 1;
            }
        }
        // SAFETY: closing the socket opened above.
        unsafe { libc::close(fd) };
        Ok(count)
    })
    .expect("count ARP frames")
}

#[test]
fn virtual_routes_and_garp_refresh_follow_the_master() {
    if !require_root("virtual_routes_and_garp_refresh_follow_the_master") {
        return;
    }
    let pair = pair("lbt-vi9");
    let vip = "10.9.0.109/24";
    let extra = "    garp_master_delay 0\n    garp_master_repeat 1\n    garp_master_refresh 1\n    virtual_routes {\n        10.30.0.0/16 via 10.9.0.254 dev eth0\n    }\n";
    let mut lbd = pair.lbd(&instance(150, vip, extra));
    lbd.wait_for("Entering MASTER STATE", 1, Duration::from_secs(10))
        .expect("master");
    let routes = pair
        .lbd
        .ip(&["route", "show", "10.30.0.0/16"])
        .expect("routes");
    assert!(routes.contains("via 10.9.0.254"), "{routes}");
    // After the first announcement, one a second (0 without garp_master_refresh: the
    // test was checked to fail so).
    std::thread::sleep(Duration::from_millis(500));
    let seen = count_garps(
        &pair.peer,
        "10.9.0.109".parse().unwrap(),
        Duration::from_millis(3200),
    );
    assert!((3..=4).contains(&seen), "{seen} refreshes in 3.2 s");
    lbd.stop().expect("stop");
    let routes = pair
        .lbd
        .ip(&["route", "show", "10.30.0.0/16"])
        .expect("routes");
    assert!(routes.trim().is_empty(), "{routes}");
}

#[test]
fn use_vmac_answers_with_the_virtual_mac() {
    if !require_root("use_vmac_answers_with_the_virtual_mac") {
        return;
    }
    let pair = pair("lbt-via");
    let vip = "10.9.0.110/24";
    let mut lbd = pair.lbd(&instance(150, vip, "    use_vmac\n"));
    lbd.wait_for("Entering MASTER STATE", 1, Duration::from_secs(10))
        .expect("master");
    // The macvlan with RFC 5798's MAC (vrid 42 = 0x2a) holds the VIP.
    let link = pair.lbd.ip(&["link", "show", "vrrp.42"]).expect("vmac");
    assert!(link.contains("00:00:5e:00:01:2a"), "{link}");
    let addresses = pair
        .lbd
        .ip(&["addr", "show", "dev", "vrrp.42"])
        .expect("addresses");
    assert!(addresses.contains("10.9.0.110/24"), "{addresses}");
    // The peer reaches the VIP at the virtual MAC.
    pair.peer
        .exec(&["ping", "-c", "1", "-W", "2", "10.9.0.110"])
        .expect("ping the VIP");
    let neighbours = pair
        .peer
        .ip(&["neigh", "show", "10.9.0.110"])
        .expect("neigh");
    assert!(neighbours.contains("00:00:5e:00:01:2a"), "{neighbours}");
    // A graceful stop removes the macvlan.
    lbd.stop().expect("stop");
    assert!(pair.lbd.ip(&["link", "show", "vrrp.42"]).is_err());
}

#[test]
fn use_vmac_over_ipv6_with_a_keepalived_backup() {
    if !ready("use_vmac_over_ipv6_with_a_keepalived_backup") {
        return;
    }
    let pair = pair("lbt-vib");
    let vip = "2001:db8:9::110/64";
    let (keepalived, mut lbd) = pair.v3_lbd_master(vip, "    use_vmac\n");
    // RFC 5798's IPv6 MAC (vrid 42 = 0x2a) on the macvlan, which holds the VIP and a
    // copy of eth0's link-local address, and no link-local address made from the
    // virtual MAC (that one would be the same on every router of the VRID).
    let link = pair.lbd.ip(&["link", "show", "vrrp.42"]).expect("vmac");
    assert!(link.contains("00:00:5e:00:02:2a"), "{link}");
    let parent = pair
        .lbd
        .ip(&["-6", "addr", "show", "dev", "eth0", "scope", "link"])
        .expect("eth0 addresses");
    let link_local = parent
        .split_whitespace()
        .skip_while(|word| *word != "inet6")
        .nth(1)
        .expect("eth0 has a link-local address")
        .to_owned();
    let addresses = pair
        .lbd
        .ip(&["-6", "addr", "show", "dev", "vrrp.42"])
        .expect("vmac addresses");
    assert!(addresses.contains(vip), "{addresses}");
    assert!(addresses.contains(&link_local), "{link_local}: {addresses}");
    assert!(
        !addresses.contains("fe80::200:5eff:fe00:22a"),
        "{addresses}"
    );
    // keepalived takes the adverts sent from the macvlan and stays backup.
    keepalived
        .wait_for("Entering BACKUP STATE", 1, Duration::from_secs(5))
        .expect("keepalived backup");
    // The peer reaches the VIP at the virtual MAC.
    pair.peer
        .exec(&["ping", "-6", "-c", "1", "-W", "2", "2001:db8:9::110"])
        .expect("ping the VIP");
    let neighbours = pair
        .peer
        .ip(&["-6", "neigh", "show", "2001:db8:9::110"])
        .expect("neigh");
    assert!(neighbours.contains("00:00:5e:00:02:2a"), "{neighbours}");
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        !keepalived.log().contains("Entering MASTER STATE"),
        "{}",
        keepalived.log()
    );
    // A graceful stop hands over at once and removes the macvlan.
    lbd.stop().expect("stop");
    Pair::wait_holds(&pair.peer, vip, true, Duration::from_secs(3));
    assert!(pair.lbd.ip(&["link", "show", "vrrp.42"]).is_err());
}
