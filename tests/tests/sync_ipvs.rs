//! Connection sync against the kernel's own sync daemon (`ipvsadm --start-daemon`), both
//! ways, in the DR lab with two directors: how an operator migrates a keepalived + IPVS
//! pair to lbd one director at a time.
//!
//! - The kernel's IPVS master (its VRRP from `lbd -P`, as keepalived's VRRP would give it)
//!   with an lbd backup on XDP: the kernel's messages, read off the segment, decode and
//!   encode back to the same bytes, and `lbctl -Lnc` on the backup lists the connections
//!   and the persistence template `ipvsadm -Lnc` lists on the master, on the same reals.
//! - An lbd master on XDP with the kernel's IPVS backup: `ipvsadm -Lnc` on the backup lists
//!   the connections and the template `lbctl -Lnc` lists on the master.
//!
//! In these two the service is persistent (`persistence_timeout`, `ipvsadm -p`), so that
//! templates travel too: every connection of the one client is on one real.
//! - Two lbd directors on IPVS: lbd drives the kernel's own daemons as keepalived does,
//!   master on the VRRP master and backup on the backup; the kernels sync the
//!   connections, and after a failover the new master runs the master daemon.
//!
//! Needs IPVS, which the project's machines lack: `cargo xtask test` runs this in a VM with
//! Debian's kernel.

use std::{
    collections::BTreeSet,
    net::IpAddr,
    path::Path,
    time::{Duration, Instant},
};

use lb_sync::wire::Message;
use lb_tests::{
    http::KeepAlive,
    lbd::{Lbd, lbctl_ok_in},
    netns::Netns,
    privilege::require_ipvs,
    topology::{HTTP_PORT, Topology, VIP, holds_vip, vip_http},
    wait::wait_until,
};
use lb_userspace::sync::socket::SyncSockets;

const LAB: &str = env!("CARGO_BIN_EXE_lab");
const SYNCID: u8 = 51;
const CONNECTIONS: usize = 6;

/// The VRRP instance both sides follow (VRRPv3, 100 ms adverts), with priority `priority`.
fn vrrp(priority: u8) -> String {
    format!(
        "vrrp_instance VI_1 {{\n    state BACKUP\n    interface eth0\n    virtual_router_id 51\n    priority {priority}\n    version 3\n    advert_int 0.1\n    virtual_ipaddress {{\n        {VIP}/32\n    }}\n}}\n"
    )
}

/// lbd's configuration: sync on eth0 following VI_1, and the lab's DR service, persistent
/// for 300 s when `persistent`.
fn lbd_config(lab: &Topology, priority: u8, persistent: bool) -> String {
    let reals: Vec<(&str, u32)> = lab.reals.iter().map(|r| (r.name.as_str(), 1)).collect();
    let keywords: &[&str] = if persistent {
        &["persistence_timeout 300"]
    } else {
        &[]
    };
    format!(
        "global_defs {{\n    lvs_sync_daemon eth0 VI_1 id {SYNCID}\n}}\n{}{}",
        vrrp(priority),
        lab.keepalived_conf_with("rr", "DR", keywords, &reals)
    )
}

fn run(ns: &Netns, command: &[&str]) -> String {
    ns.exec(command)
        .unwrap_or_else(|e| panic!("{}: {e:#}", command.join(" ")))
}

/// The lab's DR service in the kernel's IPVS of `ns`, persistent for 300 s, and its sync
/// daemon in `role`.
fn kernel_ipvs(lab: &Topology, ns: &Netns, role: &str) {
    let service = format!("{VIP}:{HTTP_PORT}");
    run(
        ns,
        &["ipvsadm", "-A", "-t", &service, "-s", "rr", "-p", "300"],
    );
    for real in &lab.reals {
        let dest = format!("{}:{HTTP_PORT}", real.addr);
        run(
            ns,
            &[
                "ipvsadm", "-a", "-t", &service, "-r", &dest, "-g", "-w", "1",
            ],
        );
    }
    let syncid = SYNCID.to_string();
    run(
        ns,
        &[
            "ipvsadm",
            "--start-daemon",
            role,
            "--mcast-interface",
            "eth0",
            "--syncid",
            &syncid,
        ],
    );
    eprintln!("{}", run(ns, &["ipvsadm", "-L", "--daemon"]));
}

/// The ESTABLISHED connections of an `ipvsadm -Lnc` listing (lbctl's has the same
/// layout): source, virtual, destination.
fn established(listing: &str) -> BTreeSet<(String, String, String)> {
    entries(listing, |state, _| state == "ESTABLISHED")
}

/// The persistence templates of a listing: client port 0, state ASSURED (kept for the
/// whole timeout, as every pin of lbd's is).
fn templates(listing: &str) -> BTreeSet<(String, String, String)> {
    entries(listing, |state, source| {
        state == "ASSURED" && source.ends_with(":0")
    })
}

fn entries(
    listing: &str,
    wanted: impl Fn(&str, &str) -> bool,
) -> BTreeSet<(String, String, String)> {
    listing
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            match fields.as_slice() {
                ["TCP", _, state, source, virtual_, destination] if wanted(state, source) => {
                    Some((
                        source.to_string(),
                        virtual_.to_string(),
                        destination.to_string(),
                    ))
                }
                _ => None,
            }
        })
        .collect()
}

/// Every connection is on one real, and the one template pins the client there.
fn assert_pinned(
    conns: &BTreeSet<(String, String, String)>,
    pins: &BTreeSet<(String, String, String)>,
) {
    let reals: BTreeSet<&String> = conns.iter().map(|(_, _, real)| real).collect();
    assert_eq!(
        reals.len(),
        1,
        "persistence keeps the client on one real: {conns:?}"
    );
    assert_eq!(pins.len(), 1, "{pins:?}");
    let (client, vip, real) = pins.iter().next().expect("a template");
    assert_eq!(client, "10.0.0.2:0");
    assert_eq!(vip, &format!("{VIP}:{HTTP_PORT}"));
    assert!(reals.contains(real), "{pins:?} {conns:?}");
}

/// `CONNECTIONS` connections from the client through the VIP, each answered once, kept
/// open until the returned thread is told to stop (by dropping its sender).
fn client_connections(
    lab: &Topology,
) -> (
    std::sync::mpsc::Sender<()>,
    std::thread::JoinHandle<anyhow::Result<()>>,
) {
    let (stop, stopped) = std::sync::mpsc::channel::<()>();
    let (ready, is_ready) = std::sync::mpsc::channel();
    let thread = lab
        .client
        .spawn(move || {
            let mut connections = Vec::new();
            for _ in 0..CONNECTIONS {
                let mut connection = KeepAlive::connect(vip_http())?;
                connection.request()?;
                connections.push(connection);
            }
            let _ = ready.send(());
            let _ = stopped.recv();
            Ok(())
        })
        .expect("client");
    is_ready
        .recv_timeout(Duration::from_secs(10))
        .expect("the client connects");
    (stop, thread)
}

#[test]
fn an_lbd_backup_takes_the_kernel_masters_connections() {
    if !require_ipvs("an_lbd_backup_takes_the_kernel_masters_connections") {
        return;
    }
    let mut lab = Topology::create("lbt-sik", 2).expect("lab");
    lab.start_http_servers(Path::new(LAB)).expect("servers");
    let second = lab.add_director().expect("second director");
    // The first director: keepalived's part, VRRP (lbd -P) and the kernel's IPVS master.
    let _vrrp = Lbd::start_vrrp_only(&lab.director, &vrrp(150)).expect("lbd -P");
    wait_until(
        "the first director takes the VIP",
        Duration::from_secs(10),
        || holds_vip(&lab.director),
    );
    kernel_ipvs(&lab, &lab.director, "master");
    // The second: lbd on XDP, VRRP backup, so its sync daemon receives.
    let dir = lab.scratch_dir();
    let config = dir.join("backup.conf");
    std::fs::write(&config, lbd_config(&lab, 100, true)).expect("config");
    let name = "lbt-sik-lbd";
    let mut lbd =
        Lbd::start(&second, &config, "eth0", name, &dir.join("lbd.log"), &[]).expect("lbd");
    lbd.wait_for("VRRP: VI_1 is BACKUP", 1, Duration::from_secs(10))
        .expect("backup");
    // What the kernel's daemon sends, read off the segment next to lbd's own socket.
    let capture = second
        .run(|| {
            Ok(SyncSockets::open(
                "eth0",
                IpAddr::from([224, 0, 0, 81]),
                8848,
                1,
            )?)
        })
        .expect("capture socket");

    let (stop, client) = client_connections(&lab);
    let (mut master_conns, mut master_pins) = (BTreeSet::new(), BTreeSet::new());
    wait_until(
        "the kernel's connections reach lbd",
        Duration::from_secs(15),
        || {
            let master = run(&lab.director, &["ipvsadm", "-Lnc"]);
            let backup = lbctl_ok_in(Some(&second), name, &["-Lnc"]);
            (master_conns, master_pins) = (established(&master), templates(&master));
            master_conns.len() == CONNECTIONS
                && established(&backup) == master_conns
                && templates(&backup) == master_pins
        },
    );
    eprintln!("kernel master and lbd backup list: {master_conns:#?} {master_pins:#?}");
    assert_pinned(&master_conns, &master_pins);

    // The kernel's messages, byte for byte.
    let mut buffer = [0u8; 65536];
    let mut records = 0;
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline && records < CONNECTIONS {
        let Ok(len) = capture.receive.recv(&mut buffer) else {
            std::thread::sleep(Duration::from_millis(20));
            continue;
        };
        let datagram = &buffer[..len];
        let decoded = Message::decode(datagram).expect("the kernel's message decodes");
        assert!(decoded.skipped.is_empty(), "{:?}", decoded.skipped);
        assert_eq!(decoded.message.syncid, SYNCID);
        assert_eq!(
            decoded.message.encode(),
            datagram,
            "encodes back to the kernel's bytes"
        );
        eprintln!("kernel message: {}", hex(datagram));
        records += decoded.message.conns.len();
    }
    assert!(records > 0, "no message from the kernel's daemon was read");
    drop(stop);
    client.join().expect("client").expect("connections");
}

#[test]
fn the_kernels_backup_takes_an_lbd_masters_connections() {
    if !require_ipvs("the_kernels_backup_takes_an_lbd_masters_connections") {
        return;
    }
    let mut lab = Topology::create("lbt-sil", 2).expect("lab");
    lab.start_http_servers(Path::new(LAB)).expect("servers");
    let second = lab.add_director().expect("second director");
    // The first director: the kernel's IPVS backup, as keepalived would start it.
    kernel_ipvs(&lab, &lab.director, "backup");
    // The second: lbd on XDP, alone in VI_1, so master.
    let dir = lab.scratch_dir();
    let config = dir.join("master.conf");
    std::fs::write(&config, lbd_config(&lab, 150, true)).expect("config");
    let name = "lbt-sil-lbd";
    let mut lbd =
        Lbd::start(&second, &config, "eth0", name, &dir.join("lbd.log"), &[]).expect("lbd");
    lbd.wait_for("VRRP: VI_1 is MASTER", 1, Duration::from_secs(10))
        .expect("master");
    wait_until("lbd holds the VIP", Duration::from_secs(5), || {
        holds_vip(&second)
    });

    let (stop, client) = client_connections(&lab);
    let (mut master_conns, mut master_pins) = (BTreeSet::new(), BTreeSet::new());
    wait_until(
        "lbd's connections reach the kernel",
        Duration::from_secs(15),
        || {
            let master = lbctl_ok_in(Some(&second), name, &["-Lnc"]);
            let backup = run(&lab.director, &["ipvsadm", "-Lnc"]);
            (master_conns, master_pins) = (established(&master), templates(&master));
            master_conns.len() == CONNECTIONS
                && established(&backup) == master_conns
                && templates(&backup) == master_pins
        },
    );
    eprintln!("lbd master and kernel backup list: {master_conns:#?} {master_pins:#?}");
    assert_pinned(&master_conns, &master_pins);
    drop(stop);
    client.join().expect("client").expect("connections");
}

#[test]
fn lbd_on_ipvs_drives_the_kernels_daemons_as_keepalived_does() {
    if !require_ipvs("lbd_on_ipvs_drives_the_kernels_daemons_as_keepalived_does") {
        return;
    }
    let mut lab = Topology::create("lbt-sid", 2).expect("lab");
    lab.start_http_servers(Path::new(LAB)).expect("servers");
    let second = lab.add_director().expect("second director");
    let dir = lab.scratch_dir();
    let mut directors = Vec::new();
    for (index, (ns, priority)) in [(&lab.director, 150), (&second, 100)]
        .into_iter()
        .enumerate()
    {
        let config = dir.join(format!("director{index}.conf"));
        std::fs::write(&config, lbd_config(&lab, priority, false)).expect("config");
        directors.push(
            Lbd::start_like_keepalived(
                ns,
                &config,
                &format!("lbt-sid-{index}"),
                &dir.join(format!("lbd{index}.log")),
                &["--dataplane", "ipvs"],
            )
            .expect("lbd"),
        );
    }
    let daemons = |ns: &Netns| run(ns, &["ipvsadm", "-L", "--daemon"]);
    let runs_only = |ns: &Netns, state: &str| {
        let listing = daemons(ns);
        let other = if state == "master" {
            "backup"
        } else {
            "master"
        };
        listing.contains(&format!("{state} sync daemon (mcast=eth0, syncid={SYNCID}"))
            && !listing.contains(&format!("{other} sync daemon"))
    };
    wait_until("master and backup daemons", Duration::from_secs(15), || {
        holds_vip(&lab.director)
            && runs_only(&lab.director, "master")
            && runs_only(&second, "backup")
    });
    eprintln!("{}{}", daemons(&lab.director), daemons(&second));
    let view = lbctl_ok_in(Some(&lab.director), "lbt-sid-0", &["sync"]);
    assert!(
        view.contains("the kernel's IPVS sync daemons: master on eth0, sync id 51"),
        "{view}"
    );

    // The kernels sync the connections between them.
    let (stop, client) = client_connections(&lab);
    let mut master_conns = BTreeSet::new();
    wait_until(
        "the connections reach the backup's kernel",
        Duration::from_secs(15),
        || {
            master_conns = established(&run(&lab.director, &["ipvsadm", "-Lnc"]));
            let backup = established(&run(&second, &["ipvsadm", "-Lnc"]));
            master_conns.len() == CONNECTIONS && backup == master_conns
        },
    );
    drop(stop);
    client.join().expect("client").expect("connections");

    // The master dies: the backup takes over and runs the master daemon.
    directors[0].kill().expect("kill the master");
    lab.director
        .ip(&["link", "set", "eth0", "down"])
        .expect("link down");
    wait_until(
        "the new master runs the master daemon",
        Duration::from_secs(10),
        || holds_vip(&second) && runs_only(&second, "master"),
    );
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
