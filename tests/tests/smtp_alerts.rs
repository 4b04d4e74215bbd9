//! SMTP alerts against a real SMTP server (Debian's python3-aiosmtpd) in the director's
//! namespace: lbd mails VRRP transitions and checker ups and downs in keepalived's words
//! to every `notification_email`, and a server that never answers delays neither VRRP
//! nor lbctl. Needs root.

use std::{
    net::SocketAddr,
    path::Path,
    time::{Duration, Instant},
};

use lb_tests::{
    lbd::{Lbd, lbctl_ok_in},
    netns::Netns,
    privilege::require_root,
    smtp::{self, SmtpSink, StalledSmtp},
    topology::{Topology, VIP},
};

const LAB: &str = env!("CARGO_BIN_EXE_lab");

/// Fast checks: every 0.5 s, one retry 0.2 s later, 1 s to connect.
const TCP_CHECK: &str = "TCP_CHECK {\n            connect_timeout 1\n            delay_loop 0.5\n            retry 1\n            delay_before_retry 0.2\n            warmup 0\n        }\n";

fn ready(test: &str) -> bool {
    require_root(test) && smtp::available(test)
}

#[test]
fn vrrp_and_checker_alerts_arrive_in_keepalived_words() {
    if !ready("vrrp_and_checker_alerts_arrive_in_keepalived_words") {
        return;
    }
    let mut lab = Topology::create("lbt-mail", 2).expect("topology");
    lab.start_http_servers(Path::new(LAB))
        .expect("HTTP servers");
    let dir = lab.scratch_dir();
    let server: SocketAddr = "127.0.0.1:2525".parse().unwrap();
    let sink = SmtpSink::start(&lab.director, server, &dir.join("mail")).expect("aiosmtpd");
    let reals: Vec<(&str, u32)> = lab.reals.iter().map(|r| (r.name.as_str(), 1)).collect();
    let config = format!(
        "global_defs {{\n    router_id LBT\n    notification_email {{\n        ops@example.org\n        noc@example.org\n    }}\n    notification_email_from lb@example.org\n    smtp_server 127.0.0.1 2525\n    smtp_connect_timeout 5\n}}\n{}vrrp_instance VI_1 {{\n    state BACKUP\n    interface eth0\n    virtual_router_id 61\n    priority 150\n    advert_int 1\n    smtp_alert\n    virtual_ipaddress {{\n        10.0.0.161/32\n    }}\n}}\n",
        lab.keepalived_conf("rr", &reals).replace(
            "        weight 1\n    }",
            &format!("        weight 1\n        {TCP_CHECK}    }}")
        )
    );
    let mut lbd = lab.start_lbd(&config).expect("lbd");

    // VRRP: BACKUP first, MASTER once no other master speaks.
    let backup = sink
        .wait_for(
            "[LBT] VRRP Instance VI_1 - Entering BACKUP state",
            Duration::from_secs(10),
        )
        .expect("BACKUP mail");
    assert!(backup.contains("=> VRRP Instance is no longer owning VRRP VIPs <="));
    assert!(backup.contains("From: lb@example.org"), "{backup}");
    assert!(
        backup.contains("To: ops@example.org, noc@example.org"),
        "{backup}"
    );
    assert!(
        backup.contains("X-RcptTo: ops@example.org, noc@example.org"),
        "{backup}"
    );
    let master = sink
        .wait_for(
            "[LBT] VRRP Instance VI_1 - Entering MASTER state",
            Duration::from_secs(10),
        )
        .expect("MASTER mail");
    assert!(master.contains("=> VRRP Instance is now owning VRRP VIPs <="));

    // A checker goes down, then up again (reals alert by default).
    let (real, addr) = (lab.reals[1].name.clone(), lab.reals[1].addr);
    let subject = |state: &str| {
        format!("[LBT] Realserver [{addr}]:tcp:80 of virtual server [{VIP}]:tcp:80 - {state}")
    };
    lab.stop_http_server(&real);
    let down = sink
        .wait_for(&subject("DOWN"), Duration::from_secs(10))
        .expect("DOWN mail");
    assert!(down.contains("=> TCP CHECK failed on service <="), "{down}");
    lab.start_http_servers(Path::new(LAB))
        .expect("HTTP servers");
    let up = sink
        .wait_for(&subject("UP"), Duration::from_secs(10))
        .expect("UP mail");
    assert!(up.contains("=> TCP CHECK succeed on service <="), "{up}");

    // Stopping mails STOP.
    lbd.stop().expect("stop");
    let stop = sink
        .wait_for(
            "[LBT] VRRP Instance VI_1 - Stopping",
            Duration::from_secs(5),
        )
        .expect("STOP mail");
    assert!(stop.contains("=> VRRP Instance stopping <="));
}

#[test]
fn a_server_that_never_answers_delays_neither_vrrp_nor_lbctl() {
    if !require_root("a_server_that_never_answers_delays_neither_vrrp_nor_lbctl") {
        return;
    }
    let ns = Netns::create("lbt-mailstall").expect("netns");
    ns.ip(&[
        "link", "add", "eth0", "type", "veth", "peer", "name", "eth1",
    ])
    .expect("veth");
    for interface in ["eth0", "eth1", "lo"] {
        ns.ip(&["link", "set", interface, "up"]).expect("up");
    }
    ns.ip(&["addr", "add", "10.9.5.1/24", "dev", "eth0"])
        .expect("address");
    let server: SocketAddr = "127.0.0.1:2526".parse().unwrap();
    let stalled = StalledSmtp::start(&ns, server).expect("stalled server");
    // Every transition of two instances mails; the first mail waits 30 s for a reply.
    let instance = |name: &str, vrid: u8, vip: &str| {
        format!(
            "vrrp_instance {name} {{\n    state BACKUP\n    interface eth0\n    virtual_router_id {vrid}\n    priority 150\n    version 3\n    advert_int 0.1\n    virtual_ipaddress {{\n        {vip}\n    }}\n}}\n"
        )
    };
    let config = format!(
        "global_defs {{\n    vrrp_version 3\n    notification_email {{\n        ops@example.org\n    }}\n    smtp_server 127.0.0.1 2526\n    smtp_connect_timeout 30\n    smtp_alert\n}}\n{}{}",
        instance("VI_1", 71, "10.9.5.100/24"),
        instance("VI_2", 72, "10.9.5.101/24")
    );
    let name = "lbt-mailstall-lbd";
    let started = Instant::now();
    let mut lbd = Lbd::start_vrrp_only(&ns, &config).expect("lbd");
    // Both become master at VRRP's pace (about 0.4 s here), not the mail's.
    lbd.wait_for("Entering MASTER STATE", 2, Duration::from_secs(5))
        .expect("both instances master while the first mail waits");
    let to_master = started.elapsed();
    let deadline = Instant::now() + Duration::from_secs(5);
    while stalled.accepted() == 0 {
        assert!(
            Instant::now() < deadline,
            "lbd never connected to the SMTP server"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let asked = Instant::now();
    let status = lbctl_ok_in(Some(&ns), name, &["vrrp"]);
    let answered = asked.elapsed();
    assert!(status.contains("VI_1"), "{status}");
    assert!(
        to_master < Duration::from_secs(5) && answered < Duration::from_secs(5),
        "VRRP took {to_master:?}, lbctl {answered:?}, with the SMTP server stalled for 30 s"
    );
    // Stopping gives the stalled queue a few seconds, not 30 per mail.
    let stopping = Instant::now();
    lbd.stop().expect("stop");
    assert!(
        stopping.elapsed() < Duration::from_secs(15),
        "stopping took {:?}",
        stopping.elapsed()
    );
}
