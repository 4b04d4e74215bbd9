//! Every checker kind against real services in a network namespace of its own (on its
//! loopback): an HTTP server with a selectable status and body, the same behind TLS
//! (a self-signed certificate from rcgen), an SMTP greeter, a DNS responder with a
//! selectable response code, a UDP echo server, and ICMP. For each: up, down, and a
//! server that does not answer in time; for HTTP also a flap within the retry budget,
//! which changes no verdict. Needs root (the namespace, raw ICMP).

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{IpAddr, Shutdown, TcpListener, TcpStream, UdpSocket},
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU8, AtomicU16, Ordering},
    },
    time::{Duration, Instant},
};

use lb_tests::{netns::Netns, privilege::require_root};
use lb_userspace::{
    check::{
        probe::{RealContext, probe, probe_with},
        schedule::{CheckerState, Outcome, Timing},
        script::Policy,
    },
    model::check::{Checker, TrackFile},
};

const LOCALHOST: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

/// How a test server behaves now.
#[derive(Default)]
struct Mode {
    /// HTTP status (0: 200), DNS response code.
    status: AtomicU16,
    rcode: AtomicU8,
    /// Accept (or receive) and never answer.
    silent: AtomicBool,
}

/// The first checker of `real_server 127.0.0.1 PORT { CHECK }`, with a 0.5 s timeout.
fn checker(port: u16, check: &str) -> Checker {
    let text = format!(
        "virtual_server 192.0.2.1 {port} {{\n lb_kind NAT\n protocol TCP\n real_server 127.0.0.1 {port} {{\n  {check}\n }}\n}}\n"
    );
    let loaded = lb_userspace::config::parse(&text, Path::new("probe.conf")).expect("config");
    let mut checker = loaded.config.virtual_servers[0].reals[0].checkers[0].clone();
    checker.connect_timeout = Duration::from_millis(500);
    checker
}

fn run(checker: &Checker, port: u16) -> Outcome {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(probe(checker, (LOCALHOST, port)))
}

fn is_up(outcome: &Outcome) -> bool {
    matches!(outcome, Outcome::Up { .. })
}

/// Serve each accepted connection with `serve` on a thread of its own.
fn tcp_server(serve: impl Fn(TcpStream, &Mode) + Send + Sync + 'static) -> (u16, Arc<Mode>) {
    let listener = TcpListener::bind((LOCALHOST, 0)).expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let mode = Arc::new(Mode::default());
    let shared = mode.clone();
    let serve = Arc::new(serve);
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let (mode, serve) = (shared.clone(), serve.clone());
            std::thread::spawn(move || {
                if mode.silent.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_secs(3));
                    return;
                }
                serve(stream, &mode)
            });
        }
    });
    (port, mode)
}

/// Read a request head and answer with the mode's status and a fixed body.
fn http_answer<S: Read + Write>(stream: &mut S, mode: &Mode) {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && stream.read(&mut byte).unwrap_or(0) == 1 {
        head.push(byte[0]);
    }
    let status = match mode.status.load(Ordering::Relaxed) {
        0 => 200,
        other => other,
    };
    let body = "healthy\n";
    let _ = write!(
        stream,
        "HTTP/1.0 {status} X\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
}

/// MD5 of "healthy\n".
const BODY_DIGEST: &str = "3b1fb749c971d7a2c6a517b37f735df2";

fn in_namespace(test: &'static str, f: impl FnOnce() + Send + 'static) {
    if !require_root(test) {
        return;
    }
    let ns = Netns::create(&format!("lbt-pr-{}", &test[..test.len().min(6)])).expect("netns");
    // A segment where nobody answers: 192.0.2.1 is reachable in the routing sense, but
    // ARP gets no answer, so connections and pings wait until they time out.
    ns.ip(&[
        "link", "add", "void0", "type", "veth", "peer", "name", "void1",
    ])
    .expect("veth");
    ns.ip(&["addr", "add", "192.0.2.2/24", "dev", "void0"])
        .expect("address");
    for dev in ["void0", "void1"] {
        ns.ip(&["link", "set", dev, "up"]).expect("up");
    }
    ns.run(move || {
        f();
        Ok(())
    })
    .expect("in the namespace");
}

#[test]
fn tcp_check_up_down_and_timeout() {
    in_namespace("tcp_check_up_down_and_timeout", || {
        let (port, _) = tcp_server(|_, _| {});
        assert!(is_up(&run(&checker(port, "TCP_CHECK {}"), port)));
        // Marked and bound to an interface where the OS allows; a missing one says so.
        let marked = checker(port, "TCP_CHECK {\nfwmark 7\nbind_if lo\n}");
        assert!(is_up(&run(&marked, port)), "{:?}", run(&marked, port));
        let nowhere = run(&checker(port, "TCP_CHECK {\nbind_if nosuch0\n}"), port);
        assert!(
            format!("{nowhere:?}").contains("bind_if nosuch0"),
            "{nowhere:?}"
        );
        // A closed port is refused at once.
        let closed = TcpListener::bind((LOCALHOST, 0)).unwrap();
        let closed_port = closed.local_addr().unwrap().port();
        drop(closed);
        let outcome = run(&checker(closed_port, "TCP_CHECK {}"), closed_port);
        assert!(format!("{outcome:?}").contains("refused"), "{outcome:?}");
        // A host that never answers: the connect times out.
        let mut silent = checker(80, "TCP_CHECK {\nconnect_ip 192.0.2.1\n}");
        silent.connect_timeout = Duration::from_millis(300);
        let started = Instant::now();
        let outcome = run(&silent, 80);
        assert!(
            format!("{outcome:?}").contains("no answer within"),
            "{outcome:?}"
        );
        assert!(started.elapsed() < Duration::from_secs(2));
    });
}

#[test]
fn http_get_status_digest_flap_and_timeout() {
    in_namespace("http_get_status_digest_flap_and_timeout", || {
        let (port, mode) = tcp_server(|mut stream, mode| {
            http_answer(&mut stream, mode);
            let _ = stream.shutdown(Shutdown::Both);
        });
        let url = |extra: &str| {
            checker(
                port,
                &format!("HTTP_GET {{\nurl {{\npath /health\n{extra}\n}}\n}}"),
            )
        };
        assert!(is_up(&run(&url("status_code 200"), port)));
        assert!(is_up(&run(&url(&format!("digest {BODY_DIGEST}")), port)));
        let wrong = run(&url("digest 00000000000000000000000000000000"), port);
        assert!(format!("{wrong:?}").contains("digest"), "{wrong:?}");
        mode.status.store(503, Ordering::Relaxed);
        let down = run(&url("status_code 200"), port);
        assert!(format!("{down:?}").contains("status 503"), "{down:?}");
        assert!(is_up(&run(&url("status_code 500-599"), port)));

        // Flapping within the retry budget (retry 2): 200, 503, 200, 503, ... no verdict.
        let check = url("status_code 200");
        let mut state = CheckerState::new(
            Timing {
                delay_loop: Duration::from_secs(1),
                retry: 2,
                delay_before_retry: Duration::from_secs(1),
            },
            true,
        );
        for round in 0..6 {
            let status = if round % 2 == 0 { 200 } else { 503 };
            mode.status.store(status, Ordering::Relaxed);
            assert_eq!(state.record(run(&check, port)).0, None, "round {round}");
        }

        mode.status.store(200, Ordering::Relaxed);
        mode.silent.store(true, Ordering::Relaxed);
        let late = run(&check, port);
        assert!(format!("{late:?}").contains("within"), "{late:?}");
    });
}

#[test]
fn ssl_get_over_tls_with_a_self_signed_certificate() {
    in_namespace("ssl_get_over_tls_with_a_self_signed_certificate", || {
        let certified =
            rcgen::generate_simple_self_signed(vec!["real.example".into()]).expect("cert");
        let key =
            rustls::pki_types::PrivateKeyDer::Pkcs8(certified.key_pair.serialize_der().into());
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(vec![certified.cert.der().clone()], key)
        .expect("server config");
        let config = Arc::new(config);
        let (port, mode) = tcp_server(move |stream, mode| {
            let Ok(connection) = rustls::ServerConnection::new(config.clone()) else {
                return;
            };
            let mut tls = rustls::StreamOwned::new(connection, stream);
            http_answer(&mut tls, mode);
            tls.conn.send_close_notify();
            let _ = tls.flush();
        });
        let check = checker(
            port,
            &format!("SSL_GET {{\nurl {{\npath /\ndigest {BODY_DIGEST}\n}}\n}}"),
        );
        assert!(is_up(&run(&check, port)), "{:?}", run(&check, port));
        let sni = checker(
            port,
            "SSL_GET {\nurl {\npath /\n}\nenable_sni\nsni_name real.example\n}",
        );
        assert!(is_up(&run(&sni, port)));
        mode.status.store(404, Ordering::Relaxed);
        assert!(!is_up(&run(&check, port)));
        // Plain HTTP to a TLS port is not an answer.
        mode.status.store(200, Ordering::Relaxed);
        let plain = checker(port, "HTTP_GET {\nurl {\npath /\n}\n}");
        assert!(!is_up(&run(&plain, port)));
        mode.silent.store(true, Ordering::Relaxed);
        assert!(!is_up(&run(&check, port)));
    });
}

#[test]
fn smtp_check_greets_the_server() {
    in_namespace("smtp_check_greets_the_server", || {
        let (port, mode) = tcp_server(|mut stream, mode| {
            let code = match mode.status.load(Ordering::Relaxed) {
                0 => 220,
                other => other,
            };
            let _ = write!(stream, "{code}-mx.example ESMTP\r\n{code} ready\r\n");
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            while reader.read_line(&mut line).unwrap_or(0) > 0 {
                if line.starts_with("HELO lbd.example") {
                    let _ = stream.write_all(b"250 hello\r\n");
                } else if line.starts_with("QUIT") {
                    let _ = stream.write_all(b"221 bye\r\n");
                    return;
                } else {
                    let _ = stream.write_all(b"500 what\r\n");
                }
                line.clear();
            }
        });
        let check = checker(port, "SMTP_CHECK {\nhelo_name lbd.example\n}");
        assert!(is_up(&run(&check, port)), "{:?}", run(&check, port));
        // Another HELO name is refused by this server.
        let other = checker(port, "SMTP_CHECK {\nhelo_name other\n}");
        assert!(!is_up(&run(&other, port)));
        mode.status.store(554, Ordering::Relaxed);
        assert!(!is_up(&run(&check, port)));
        mode.silent.store(true, Ordering::Relaxed);
        assert!(!is_up(&run(&check, port)));
    });
}

/// A UDP server answering each datagram with `answer(datagram, mode)`.
fn udp_server(answer: impl Fn(&[u8], &Mode) -> Vec<u8> + Send + 'static) -> (u16, Arc<Mode>) {
    let socket = UdpSocket::bind((LOCALHOST, 0)).expect("bind");
    let port = socket.local_addr().expect("addr").port();
    let mode = Arc::new(Mode::default());
    let shared = mode.clone();
    std::thread::spawn(move || {
        let mut buffer = [0u8; 2048];
        while let Ok((length, from)) = socket.recv_from(&mut buffer) {
            if shared.silent.load(Ordering::Relaxed) {
                continue;
            }
            let _ = socket.send_to(&answer(&buffer[..length], &shared), from);
        }
    });
    (port, mode)
}

#[test]
fn dns_check_asks_and_reads_the_response_code() {
    in_namespace("dns_check_asks_and_reads_the_response_code", || {
        let (port, mode) = udp_server(|query, mode| {
            let mut answer = query.to_vec();
            answer[2] |= 0x80;
            answer[3] = (answer[3] & 0xf0) | mode.rcode.load(Ordering::Relaxed);
            answer
        });
        let check = checker(port, "DNS_CHECK {\ntype A\nname example.org\n}");
        assert!(is_up(&run(&check, port)), "{:?}", run(&check, port));
        mode.rcode.store(2, Ordering::Relaxed);
        assert!(format!("{:?}", run(&check, port)).contains("response code 2"));
        mode.silent.store(true, Ordering::Relaxed);
        assert!(format!("{:?}", run(&check, port)).contains("no answer"));
    });
}

#[test]
fn udp_check_with_and_without_a_required_reply() {
    in_namespace("udp_check_with_and_without_a_required_reply", || {
        let (port, mode) = udp_server(|datagram, _| datagram.to_vec());
        let echo = checker(
            port,
            "UDP_CHECK {\npayload 68656c6c6f\nrequire_reply 68656c\n}",
        );
        assert!(is_up(&run(&echo, port)), "{:?}", run(&echo, port));
        let other = checker(
            port,
            "UDP_CHECK {\npayload 68656c6c6f\nrequire_reply 7a7a\n}",
        );
        assert!(!is_up(&run(&other, port)));
        mode.silent.store(true, Ordering::Relaxed);
        assert!(format!("{:?}", run(&echo, port)).contains("no reply"));
        // Without a required reply, silence passes; a closed port (ICMP unreachable)
        // fails.
        assert!(is_up(&run(
            &checker(port, "UDP_CHECK {\npayload 00\n}"),
            port
        )));
        let closed = UdpSocket::bind((LOCALHOST, 0)).unwrap();
        let closed_port = closed.local_addr().unwrap().port();
        drop(closed);
        let refused = run(
            &checker(closed_port, "UDP_CHECK {\npayload 00\n}"),
            closed_port,
        );
        assert!(!is_up(&refused), "{refused:?}");
    });
}

#[test]
fn ping_check_over_ipv4_and_ipv6() {
    in_namespace("ping_check_over_ipv4_and_ipv6", || {
        let v4 = checker(80, "PING_CHECK {}");
        assert!(is_up(&run(&v4, 80)), "{:?}", run(&v4, 80));
        let v6 = checker(80, "PING_CHECK {\nconnect_ip ::1\n}");
        assert!(is_up(&run(&v6, 80)), "{:?}", run(&v6, 80));
        // Nobody answers on the void segment: the ping times out.
        let nowhere = checker(80, "PING_CHECK {\nconnect_ip 192.0.2.1\n}");
        let outcome = run(&nowhere, 80);
        assert!(
            format!("{outcome:?}").contains("no echo reply within"),
            "{outcome:?}"
        );
    });
}

#[test]
fn file_check_turns_the_value_into_a_weight() {
    let dir = std::env::temp_dir().join(format!("lbd-file-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("weight");
    let context = |weight| RealContext {
        weight: 10,
        track_file: Some(TrackFile {
            name: "w".into(),
            file: path.display().to_string(),
            weight,
            reverse: false,
        }),
    };
    let text = "track_file w {\n file /unused\n}\nvirtual_server 192.0.2.1 80 {\n lb_kind DR\n protocol TCP\n real_server 127.0.0.1 80 {\n  FILE_CHECK {\n   track_file w\n  }\n }\n}\n";
    let loaded = lb_userspace::config::parse(text, Path::new("file.conf")).expect("config");
    let check = loaded.config.virtual_servers[0].reals[0].checkers[0].clone();
    let run_file = |context: &RealContext| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(probe_with(
                &check,
                (LOCALHOST, 80),
                context,
                &Policy::default(),
            ))
    };
    // Missing: down.
    assert!(format!("{:?}", run_file(&context(2))).contains("cannot read"));
    // 3 × weight 2 added to the configured 10.
    std::fs::write(&path, "3\n").unwrap();
    assert_eq!(run_file(&context(2)), Outcome::Up { weight: Some(16) });
    // Weight 0: any value but 0 fails.
    assert!(!is_up(&run_file(&context(0))));
    std::fs::write(&path, "0").unwrap();
    assert_eq!(run_file(&context(0)), Outcome::Up { weight: None });
    std::fs::write(&path, "lots").unwrap();
    assert!(format!("{:?}", run_file(&context(2))).contains("not a number"));
    std::fs::remove_dir_all(&dir).unwrap();
}
