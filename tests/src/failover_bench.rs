//! The failover rows of `cargo xtask bench`: two directors (the lab's first two reals,
//! each serving HTTP) share a VIP with VRRP, lbd or keepalived on both; the master
//! "dies" (its daemon SIGKILLed and its link taken down at once, as a crashed host); the
//! row gives the time until the backup holds the VIP and until a client's HTTP request
//! through the VIP is answered.

use std::{
    net::{SocketAddr, TcpStream},
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use serde::Serialize;

use crate::{keepalived::Keepalived, lbd::Lbd, netns::Netns, topology::Topology};

/// The shared address.
const VIP: &str = "10.0.0.200";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Daemon {
    Lbd,
    Keepalived,
}

#[derive(Debug, Serialize)]
pub struct FailoverRow {
    pub daemon: Daemon,
    pub version: u8,
    pub advert_int: String,
    /// From the kill to the VIP on the backup.
    pub to_vip_ms: f64,
    /// From the kill to the first HTTP answer through the VIP.
    pub to_http_ms: f64,
}

fn config(version: u8, advert_int: &str, priority: u8) -> String {
    format!(
        "global_defs {{\n    vrrp_version {version}\n}}\nvrrp_instance VI_1 {{\n    state BACKUP\n    interface eth0\n    virtual_router_id 77\n    priority {priority}\n    advert_int {advert_int}\n    virtual_ipaddress {{\n        {VIP}/24\n    }}\n}}\n"
    )
}

fn holds(ns: &Netns) -> bool {
    ns.ip(&["-4", "addr", "show", "dev", "eth0"])
        .is_ok_and(|out| out.contains(&format!("{VIP}/")))
}

/// One HTTP request through the VIP, quickly given up: the connect timeout (a handshake in
/// the lab takes well under a millisecond) bounds how late a working path is noticed, so
/// it is kept short against the 50 ms target.
fn answered() -> bool {
    use std::io::{Read as _, Write as _};
    let addr: SocketAddr = (VIP.parse::<std::net::Ipv4Addr>().expect("VIP"), 80).into();
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(10)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(200)));
    let request = format!("GET / HTTP/1.1\r\nHost: {VIP}\r\nConnection: close\r\n\r\n");
    let mut answer = String::new();
    stream.write_all(request.as_bytes()).is_ok()
        && stream.read_to_string(&mut answer).is_ok()
        && answer.starts_with("HTTP/1.")
}

enum Running {
    Lbd(Lbd),
    Keepalived(Keepalived),
}

impl Running {
    fn kill(&mut self) -> anyhow::Result<()> {
        match self {
            Running::Lbd(lbd) => lbd.kill(),
            Running::Keepalived(keepalived) => {
                keepalived.kill();
                Ok(())
            }
        }
    }
}

/// One failover with `daemon` on both directors.
pub fn measure(
    lab_binary: &Path,
    daemon: Daemon,
    version: u8,
    advert_int: &str,
) -> anyhow::Result<FailoverRow> {
    let prefix = match daemon {
        Daemon::Lbd => "lbt-bfl",
        Daemon::Keepalived => "lbt-bfk",
    };
    let mut lab = Topology::create(prefix, 2)?;
    lab.start_http_servers(lab_binary)?;
    let dir = lab.scratch_dir();
    let mut running = Vec::new();
    for (index, priority) in [(0, 150), (1, 100)] {
        let ns = &lab.reals[index].ns;
        let text = config(version, advert_int, priority);
        let side = dir.join(format!("director{index}"));
        std::fs::create_dir_all(&side)?;
        running.push(match daemon {
            Daemon::Lbd => {
                let path = side.join("lbd.conf");
                std::fs::write(&path, text)?;
                Running::Lbd(Lbd::start_like_keepalived(
                    ns,
                    &path,
                    &format!("{prefix}-{index}"),
                    &side.join("lbd.log"),
                    &["-P", "-p", &side.join("lbd.pid").display().to_string()],
                )?)
            }
            Daemon::Keepalived => Running::Keepalived(Keepalived::start(ns, &side, &text)?),
        });
    }
    // The first director is master, and the VIP answers.
    let deadline = Instant::now() + Duration::from_secs(15);
    while !holds(&lab.reals[0].ns) || holds(&lab.reals[1].ns) {
        if Instant::now() > deadline {
            bail!("{daemon:?}: the first director did not become master");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(500));
    if !lab.client.run(|| Ok(answered()))? {
        bail!("{daemon:?}: the VIP does not answer before the failover");
    }

    // The master dies.
    let killed = Instant::now();
    running[0].kill()?;
    lab.reals[0].ns.ip(&["link", "set", "eth0", "down"])?;
    let client = lab.client.spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if answered() {
                return Ok(killed.elapsed());
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        bail!("no answer through the VIP within 20 s of the failover")
    })?;
    // Watched from inside the backup's namespace, without spawning `ip` each time.
    let vip: std::net::IpAddr = VIP.parse()?;
    let to_vip = lab.reals[1].ns.run(move || {
        let deadline = killed + Duration::from_secs(20);
        loop {
            if lb_userspace::vrrp::link::addresses("eth0")?.contains(&vip) {
                return Ok(killed.elapsed());
            }
            if Instant::now() > deadline {
                bail!("the backup did not take the VIP within 20 s");
            }
            std::thread::sleep(Duration::from_micros(200));
        }
    })?;
    let to_http = client
        .join()
        .map_err(|_| anyhow::anyhow!("client thread panicked"))?
        .context("client")?;
    drop(running);
    Ok(FailoverRow {
        daemon,
        version,
        advert_int: advert_int.to_owned(),
        to_vip_ms: to_vip.as_secs_f64() * 1e3,
        to_http_ms: to_http.as_secs_f64() * 1e3,
    })
}
