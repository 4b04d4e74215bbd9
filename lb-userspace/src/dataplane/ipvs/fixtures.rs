//! Byte fixtures of the IPVS protocol, CAPTURED: the generic netlink messages that
//! ipvsadm 1.31 (libnl 3.7) and this backend exchanged with Debian's 6.1 kernel in
//! `cargo xtask vm`, recorded on an nlmon device (`captured/`: `ipvsadm.txt`, `ours.txt`,
//! how they were made in `captured/README.md`). Host byte order is little-endian here (the
//! module is compiled for little-endian targets only; the captures are x86-64's).
//!
//! - Replies: every kernel answer in the captures decodes, with `replies::decode_*`, into
//!   the services, reals, timeouts and version the capture made (the expected values
//!   agree with ipvsadm's own listing, `captured/ipvsadm-listing.txt`), and the socket's
//!   `Exchange` ends each answer where the kernel ended it.
//! - Requests: for every step, `Request::encode` is compared with ipvsadm's request (see
//!   `assert_like_ipvsadm` for the differences, all by design), and every request the
//!   backend sent (`ours.txt`) is exactly `Request::encode`'s bytes, which the kernel
//!   acknowledged.
//! - Every captured message, request or reply, decodes without error.
//!
//! Firewall-mark services have their own pair of captures (`ipvsadm-fwmark.txt`,
//! `ours-fwmark.txt`), checked the same ways.
//!
//! DERIVED, NOT CAPTURED (no capture has them): a STATS nest whose 32-bit packet counter
//! wrapped, PAD attributes (architectures without efficient unaligned access); written by
//! hand from `ip_vs_genl_fill_*` in `ip_vs_ctl.c`. The rest are malformed inputs made from
//! the captured messages.

mod vm_capture;

use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr},
};

use super::{
    error::DecodeError,
    genl::{self, NLA_F_NESTED, NLM_F_ACK, NLM_F_DUMP, Reply, tests::hex},
    messages::*,
    replies::*,
    socket::{Exchange, ExchangeError, Progress},
};

/// ipvsadm's steps (`captured/capture.sh ipvsadm`).
const IPVSADM: &str = include_str!("captured/ipvsadm.txt");
/// The same steps through `IpvsDataplane` (`captured/capture.sh ours`).
const OURS: &str = include_str!("captured/ours.txt");
/// Firewall-mark services, by ipvsadm (`captured/capture.sh ipvsadm-fwmark`) and through
/// `IpvsDataplane` (`captured/capture.sh ours-fwmark`).
const IPVSADM_FWMARK: &str = include_str!("captured/ipvsadm-fwmark.txt");
const OURS_FWMARK: &str = include_str!("captured/ours-fwmark.txt");

/// A host service's netmask (no persistence granularity).
const HOST_V4: Netmask = Netmask::V4(Ipv4Addr::BROADCAST);

fn settings(scheduler: &str, flags: u32, timeout_secs: u32, netmask: Netmask) -> ServiceSettings {
    ServiceSettings {
        scheduler: scheduler.into(),
        flags,
        timeout_secs,
        netmask,
    }
}

// The captures' services and reals (capture.sh, vm_capture.rs).

fn key(protocol: u16, addr: &str, port: u16) -> ServiceKey {
    ServiceKey {
        protocol,
        addr: addr.parse().unwrap(),
        port,
        fwmark: None,
    }
}

/// TCP 10.0.0.100:80, rr then wlc, DR.
fn s1() -> ServiceKey {
    key(6, "10.0.0.100", 80)
}

/// UDP 10.0.0.100:53, sh with sh-fallback and sh-port, TUN.
fn s2() -> ServiceKey {
    key(17, "10.0.0.100", 53)
}

/// TCP 10.0.0.101:443, wlc, persistent 300 s per /24, NAT.
fn s3() -> ServiceKey {
    key(6, "10.0.0.101", 443)
}

/// TCP [2001:db8::100]:80, wrr, persistent 120 s per /64, DR.
fn s4() -> ServiceKey {
    key(6, "2001:db8::100", 80)
}

fn s1_settings(scheduler: &str) -> ServiceSettings {
    settings(scheduler, 0, 0, HOST_V4)
}

fn s2_settings() -> ServiceSettings {
    settings("sh", svc_flag::SCHED1 | svc_flag::SCHED2, 0, HOST_V4)
}

fn s3_settings() -> ServiceSettings {
    let mask = Netmask::V4(Ipv4Addr::new(255, 255, 255, 0));
    settings("wlc", svc_flag::PERSISTENT, 300, mask)
}

fn s4_settings() -> ServiceSettings {
    settings(
        "wrr",
        svc_flag::PERSISTENT,
        120,
        Netmask::V6 { prefix_len: 64 },
    )
}

fn dest(addr: &str, port: u16) -> DestKey {
    DestKey {
        addr: addr.parse().unwrap(),
        port,
    }
}

fn forward(forward: u32, weight: u32) -> DestSettings {
    DestSettings {
        forward,
        weight,
        upper_threshold: 0,
        lower_threshold: 0,
        tunnel: Tunnel::default(),
    }
}

fn masq_with_thresholds() -> DestSettings {
    DestSettings {
        upper_threshold: 100,
        lower_threshold: 10,
        ..forward(fwd::MASQ, 2)
    }
}

/// `-i --tun-type gue --tun-port 6080 --tun-csum -w 1`.
fn gue() -> DestSettings {
    DestSettings {
        tunnel: Tunnel {
            kind: 1,
            port: 6080,
            flags: 1,
        },
        ..forward(fwd::TUNNEL, 1)
    }
}

/// FWM 7 (IPv4), rr, DR to 10.0.0.11 (port 0: the packet's).
fn f4() -> ServiceKey {
    ServiceKey::fwmark(AF_INET, 7)
}

/// FWM 7 IPv6, wlc, NAT to [2001:db8::11]:8080.
fn f6() -> ServiceKey {
    ServiceKey::fwmark(AF_INET6, 7)
}

/// The requests of each step other than the reads (`version` and `list` have only reads),
/// as `Request`s: what ipvsadm's are compared with, and what the backend sent.
fn step_requests(label: &str) -> Vec<Request> {
    use Request::*;
    match label {
        "version" => vec![GetInfo],
        "add-service-tcp-rr" | "add-service-exists" => vec![NewService(s1(), s1_settings("rr"))],
        "add-service-udp-sh" => vec![NewService(s2(), s2_settings())],
        "add-service-tcp-wlc-persistent" => vec![NewService(s3(), s3_settings())],
        "add-service-ipv6-persistent" => vec![NewService(s4(), s4_settings())],
        "add-dest-dr" => vec![NewDest(
            s1(),
            dest("10.0.0.11", 80),
            forward(fwd::DROUTE, 3),
        )],
        "add-dest-dr-2" => vec![NewDest(
            s1(),
            dest("10.0.0.12", 80),
            forward(fwd::DROUTE, 1),
        )],
        "add-dest-tun" => vec![NewDest(
            s2(),
            dest("10.0.0.21", 53),
            forward(fwd::TUNNEL, 1),
        )],
        "add-dest-masq-thresholds" => {
            vec![NewDest(
                s3(),
                dest("10.0.0.13", 8443),
                masq_with_thresholds(),
            )]
        }
        "add-dest-ipv6" => vec![NewDest(
            s4(),
            dest("2001:db8::11", 80),
            forward(fwd::DROUTE, 1),
        )],
        "traffic" => vec![],
        "edit-service" => vec![SetService(s1(), s1_settings("wlc"))],
        "edit-dest" => vec![SetDest(
            s1(),
            dest("10.0.0.11", 80),
            forward(fwd::DROUTE, 5),
        )],
        "set-timeouts" => vec![SetConfig(TimeoutUpdate {
            tcp: Some(7200),
            tcp_fin: Some(30),
            udp: Some(60),
        })],
        "get-timeouts" => vec![GetConfig],
        "add-dest-gue" => vec![NewDest(s2(), dest("10.0.0.22", 53), gue())],
        "list" => [s1(), s2(), s3(), s4()]
            .into_iter()
            .map(GetDests)
            .chain([GetServices])
            .collect(),
        "zero-service" => vec![Zero(Some(s1()))],
        "zero-all" => vec![Zero(None)],
        "del-service" => vec![DelService(s2())],
        "del-dest" => vec![DelDest(s1(), dest("10.0.0.12", 80))],
        "del-dest-missing" => vec![DelDest(s1(), dest("10.0.0.99", 80))],
        "stop" => vec![DelService(s1()), DelService(s3()), DelService(s4())],
        "fwmark-add-service" => vec![NewService(f4(), settings("rr", 0, 0, HOST_V4))],
        "fwmark-add-service-ipv6" => vec![NewService(
            f6(),
            settings("wlc", 0, 0, Netmask::V6 { prefix_len: 128 }),
        )],
        "fwmark-add-dest" => vec![NewDest(f4(), dest("10.0.0.11", 0), forward(fwd::DROUTE, 2))],
        "fwmark-add-dest-ipv6" => vec![NewDest(
            f6(),
            dest("2001:db8::11", 8080),
            forward(fwd::MASQ, 1),
        )],
        "fwmark-list" => vec![GetServices, GetDests(f4()), GetDests(f6())],
        "fwmark-zero" => vec![Zero(Some(f4()))],
        "fwmark-del-service-ipv6" => vec![DelService(f6())],
        "fwmark-stop" => vec![DelService(f4())],
        other => panic!("no requests known for step {other}"),
    }
}

/// The steps that fail on purpose, with the errno.
fn refused(label: &str) -> Option<i32> {
    match label {
        "add-service-exists" => Some(libc::EEXIST),
        "del-dest-missing" => Some(libc::ENOENT),
        _ => None,
    }
}

// Reading the capture files.

/// One step of a capture: its label and its messages, in order.
struct Step {
    label: String,
    /// (to the kernel, the whole message).
    messages: Vec<(bool, Vec<u8>)>,
}

/// A request with the kernel's answer to it.
struct Captured<'a> {
    request: &'a [u8],
    replies: Vec<&'a [u8]>,
}

fn steps(text: &str) -> Vec<Step> {
    let mut steps: Vec<Step> = Vec::new();
    for line in text.lines().filter(|line| !line.is_empty()) {
        let (to_kernel, bytes) = match line.split_at(2) {
            ("@ ", label) => {
                steps.push(Step {
                    label: label.to_owned(),
                    messages: Vec::new(),
                });
                continue;
            }
            ("> ", bytes) => (true, hex(bytes)),
            ("< ", bytes) => (false, hex(bytes)),
            _ if line.starts_with('#') => continue,
            _ => panic!("not a fixture line: {line}"),
        };
        steps
            .last_mut()
            .expect("a message before the first step")
            .messages
            .push((to_kernel, bytes));
    }
    steps
}

fn step<'a>(steps: &'a [Step], label: &str) -> &'a Step {
    steps
        .iter()
        .find(|step| step.label == label)
        .unwrap_or_else(|| panic!("no step {label}"))
}

impl Step {
    fn exchanges(&self) -> Vec<Captured<'_>> {
        let mut exchanges: Vec<Captured<'_>> = Vec::new();
        for (to_kernel, message) in &self.messages {
            if *to_kernel {
                exchanges.push(Captured {
                    request: message,
                    replies: Vec::new(),
                });
            } else {
                exchanges
                    .last_mut()
                    .unwrap_or_else(|| panic!("{}: a reply before any request", self.label))
                    .replies
                    .push(message);
            }
        }
        exchanges
    }

    /// The exchanges of IPVS requests (not nlctrl's).
    fn ipvs_exchanges(&self, family: u16) -> Vec<Captured<'_>> {
        self.exchanges()
            .into_iter()
            .filter(|exchange| header(exchange.request).kind == family)
            .collect()
    }
}

/// `nlmsghdr`.
#[derive(Debug)]
struct Header {
    len: u32,
    kind: u16,
    flags: u16,
    sequence: u32,
    port: u32,
}

fn header(message: &[u8]) -> Header {
    let u32_at = |at: usize| u32::from_ne_bytes(message[at..at + 4].try_into().unwrap());
    let u16_at = |at: usize| u16::from_ne_bytes(message[at..at + 2].try_into().unwrap());
    Header {
        len: u32_at(0),
        kind: u16_at(4),
        flags: u16_at(6),
        sequence: u32_at(8),
        port: u32_at(12),
    }
}

/// The generic netlink command and attributes of a message.
fn data(message: &[u8]) -> (u8, &[u8]) {
    let parsed = genl::messages(message).next().unwrap().unwrap();
    match parsed.reply().unwrap() {
        Reply::Data { command, attrs } => (command, attrs),
        other => panic!("not data: {other:?}"),
    }
}

/// The IPVS family id of a capture: nlctrl's answer in the step `version`.
fn family(steps: &[Step]) -> u16 {
    let exchange = step(steps, "version")
        .exchanges()
        .into_iter()
        .find(|exchange| header(exchange.request).kind == genl::GENL_ID_CTRL)
        .expect("nlctrl's exchange");
    let (command, attrs) = data(exchange.replies[0]);
    genl::family_id(command, attrs).unwrap()
}

/// Attributes with their raw type (flags included), without error handling: for comparing
/// requests whose validity is tested elsewhere.
fn raw_attrs(bytes: &[u8]) -> Vec<(u16, &[u8])> {
    let mut attrs = Vec::new();
    let mut rest = bytes;
    while rest.len() >= 4 {
        let len = usize::from(u16::from_ne_bytes([rest[0], rest[1]]));
        let kind = u16::from_ne_bytes([rest[2], rest[3]]);
        attrs.push((kind, &rest[4..len]));
        rest = rest.get(genl::align(len)..).unwrap_or_default();
    }
    attrs
}

/// The service a request's SERVICE nest names (a GET_DEST's, say).
fn service_named_by(request: &[u8]) -> ServiceKey {
    let (_, attrs) = data(request);
    let (_, nest) = raw_attrs(attrs)
        .into_iter()
        .find(|(kind, _)| kind & !NLA_F_NESTED == 1)
        .expect("a SERVICE nest");
    let mut af = 0;
    let mut key = ServiceKey {
        protocol: 0,
        addr: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        port: 0,
        fwmark: None,
    };
    let mut addr = &[][..];
    for attr in genl::attrs(nest) {
        let attr = attr.unwrap();
        match attr.kind {
            1 => af = attr.u16("AF").unwrap(),
            2 => key.protocol = attr.u16("PROTOCOL").unwrap(),
            3 => addr = attr.payload,
            4 => key.port = attr.be16("PORT").unwrap(),
            5 => key.fwmark = Some(attr.u32("FWMARK").unwrap()),
            _ => {}
        }
    }
    if let Some(mark) = key.fwmark {
        return ServiceKey::fwmark(af, mark);
    }
    key.addr = inet_addr_from(af, addr, "ADDR").unwrap();
    key
}

// (a) The kernel's replies.

#[test]
fn captured_family_and_info_answers_decode() {
    for text in [IPVSADM, OURS] {
        let steps = steps(text);
        // IPVS registered after the other families of this kernel.
        assert_eq!(family(&steps), 0x20);
        let info = step(&steps, "version")
            .ipvs_exchanges(0x20)
            .into_iter()
            .find(|exchange| data(exchange.request).0 == cmd::GET_INFO)
            .expect("GET_INFO");
        let (command, attrs) = data(info.replies[0]);
        let info = decode_info(command, attrs).unwrap();
        assert_eq!(
            info,
            Info {
                version: 0x010201,
                conn_table_size: 4096
            }
        );
        assert_eq!(info.banner(), "IP Virtual Server version 1.2.1 (size=4096)");
        assert!(
            decode_info(cmd::SET_CONFIG, attrs).is_err(),
            "wrong command"
        );
    }
}

#[test]
fn captured_config_answer_decodes() {
    for text in [IPVSADM, OURS] {
        let steps = steps(text);
        let exchanges = step(&steps, "get-timeouts").ipvs_exchanges(family(&steps));
        let [exchange] = &exchanges[..] else {
            panic!("one GET_CONFIG");
        };
        let (command, attrs) = data(exchange.replies[0]);
        assert_eq!(
            decode_config(command, attrs),
            Ok(KernelTimeouts {
                tcp: 7200,
                tcp_fin: 30,
                udp: 60
            })
        );
    }
}

/// The `list` step's dumps: every service, and the reals of each.
fn listed(steps: &[Step]) -> (Vec<KernelService>, BTreeMap<ServiceKey, Vec<KernelDest>>) {
    listed_in(steps, "list")
}

/// The services and reals the dumps of step `label` hold.
fn listed_in(
    steps: &[Step],
    label: &str,
) -> (Vec<KernelService>, BTreeMap<ServiceKey, Vec<KernelDest>>) {
    let mut services = Vec::new();
    let mut dests = BTreeMap::new();
    for exchange in step(steps, label).ipvs_exchanges(family(steps)) {
        let entries = exchange
            .replies
            .iter()
            .filter(|reply| header(reply).kind == family(steps));
        match data(exchange.request).0 {
            cmd::GET_SERVICE => {
                for entry in entries {
                    let (command, attrs) = data(entry);
                    services.push(decode_service(command, attrs).unwrap());
                }
            }
            cmd::GET_DEST => {
                let service = service_named_by(exchange.request);
                let decoded = entries
                    .map(|entry| {
                        let (command, attrs) = data(entry);
                        decode_dest(command, attrs, service.addr).unwrap()
                    })
                    .collect::<Vec<_>>();
                dests.insert(service, decoded);
            }
            other => panic!("list sent command {other}"),
        }
    }
    (services, dests)
}

fn stats(conns: u64, packets: (u64, u64), bytes: (u64, u64), bps: (u64, u64)) -> Stats {
    Stats {
        conns,
        in_packets: packets.0,
        out_packets: packets.1,
        in_bytes: bytes.0,
        out_bytes: bytes.1,
        in_bps: bps.0,
        out_bps: bps.1,
        ..Stats::default()
    }
}

fn kernel_dest(
    key: DestKey,
    settings: DestSettings,
    conns: (u32, u32, u32),
    stats: Stats,
) -> KernelDest {
    KernelDest {
        key,
        settings,
        active_conns: conns.0,
        inactive_conns: conns.1,
        persistent_conns: conns.2,
        stats,
    }
}

#[test]
fn captured_service_dump_decodes_into_the_services_ipvsadm_made() {
    let (services, _) = listed(&steps(IPVSADM));
    // The kernel's dump order; HASHED, which the kernel sets, is dropped. Counters as in
    // `ipvsadm -Ln --stats` and `--rate` (ipvsadm-listing.txt): 3 SYNs to s1 (3 ICMP
    // errors back), 2 datagrams to s2, a SYN each to s3 and s4.
    let expected = [
        (s2(), s2_settings(), stats(2, (2, 0), (68, 0), (6, 0))),
        (
            s1(),
            s1_settings("wlc"),
            stats(3, (3, 3), (180, 264), (15, 33)),
        ),
        (s4(), s4_settings(), stats(1, (1, 0), (80, 0), (10, 0))),
        (s3(), s3_settings(), stats(1, (1, 0), (60, 0), (6, 0))),
    ];
    let expected: Vec<_> = expected
        .into_iter()
        .map(|(key, settings, stats)| KernelService {
            key,
            settings,
            stats,
        })
        .collect();
    assert_eq!(services, expected);
    assert_eq!(services[3].settings.netmask.prefix_len(), 24);
    assert_eq!(services[2].settings.netmask.prefix_len(), 64);
}

#[test]
fn captured_dest_dumps_decode_into_the_reals_ipvsadm_made() {
    let (_, dests) = listed(&steps(IPVSADM));
    let expected = BTreeMap::from([
        (
            s1(),
            vec![
                kernel_dest(
                    dest("10.0.0.12", 80),
                    forward(fwd::DROUTE, 1),
                    (2, 0, 0),
                    stats(2, (2, 2), (120, 176), (10, 22)),
                ),
                kernel_dest(
                    dest("10.0.0.11", 80),
                    forward(fwd::DROUTE, 5),
                    (1, 0, 0),
                    stats(1, (1, 1), (60, 88), (6, 11)),
                ),
            ],
        ),
        (
            s2(),
            vec![
                kernel_dest(dest("10.0.0.22", 53), gue(), (0, 0, 0), Stats::default()),
                kernel_dest(
                    dest("10.0.0.21", 53),
                    forward(fwd::TUNNEL, 1),
                    (0, 2, 0),
                    stats(2, (2, 0), (68, 0), (6, 0)),
                ),
            ],
        ),
        (
            s3(),
            // The persistence template counts as a persistent connection.
            vec![kernel_dest(
                dest("10.0.0.13", 8443),
                masq_with_thresholds(),
                (1, 0, 1),
                stats(1, (1, 0), (60, 0), (6, 0)),
            )],
        ),
        (
            s4(),
            vec![kernel_dest(
                dest("2001:db8::11", 80),
                forward(fwd::DROUTE, 1),
                (1, 0, 1),
                stats(1, (1, 0), (80, 0), (10, 0)),
            )],
        ),
    ]);
    assert_eq!(dests, expected);
}

#[test]
fn captured_dumps_of_our_run_decode_into_what_the_backend_made() {
    let (services, dests) = listed(&steps(OURS));
    let settings: BTreeMap<_, _> = services
        .iter()
        .map(|service| (service.key, service.settings.clone()))
        .collect();
    let expected = BTreeMap::from([
        (s1(), s1_settings("wlc")),
        (s2(), s2_settings()),
        (s3(), s3_settings()),
        (s4(), s4_settings()),
    ]);
    assert_eq!(settings, expected);
    let reals = |key: ServiceKey| -> BTreeMap<DestKey, DestSettings> {
        dests[&key]
            .iter()
            .map(|dest| (dest.key, dest.settings))
            .collect()
    };
    assert_eq!(
        reals(s1()),
        BTreeMap::from([
            (dest("10.0.0.11", 80), forward(fwd::DROUTE, 5)),
            (dest("10.0.0.12", 80), forward(fwd::DROUTE, 1)),
        ])
    );
    assert_eq!(
        reals(s2()),
        BTreeMap::from([
            (dest("10.0.0.21", 53), forward(fwd::TUNNEL, 1)),
            (dest("10.0.0.22", 53), gue()),
        ])
    );
    assert_eq!(
        reals(s3()),
        BTreeMap::from([(dest("10.0.0.13", 8443), masq_with_thresholds())])
    );
    assert_eq!(
        reals(s4()),
        BTreeMap::from([(dest("2001:db8::11", 80), forward(fwd::DROUTE, 1))])
    );
    // The backend's own SYNs: three to s1, spread over its two reals.
    let s1_stats = services
        .iter()
        .find(|service| service.key == s1())
        .unwrap()
        .stats;
    assert_eq!((s1_stats.conns, s1_stats.in_packets), (3, 3));
    let conns: u64 = dests[&s1()].iter().map(|dest| dest.stats.conns).sum();
    assert_eq!(conns, 3);
}

/// Every exchange of both captures ends where the socket's `Exchange` says it ends: the
/// ACK (or, for a dump, DONE) is the last reply, a refusal carries its errno, and each
/// data message reaches the decoder.
#[test]
fn the_socket_reads_every_captured_answer_to_its_end() {
    for text in [IPVSADM, OURS] {
        for step in steps(text) {
            for exchange in step.exchanges() {
                let request = header(exchange.request);
                let state = Exchange {
                    sequence: request.sequence,
                    dump: request.flags & NLM_F_DUMP == NLM_F_DUMP,
                };
                let mut data = 0;
                let Some((last, before)) = exchange.replies.split_last() else {
                    // Only the reads of ours.txt's `edit-service` are kept without replies.
                    assert_eq!(step.label, "edit-service");
                    continue;
                };
                for reply in before {
                    let progress = state.absorb(reply, &mut |_, _| {
                        data += 1;
                        Ok(())
                    });
                    assert_eq!(progress, Ok(Progress::Continue), "{}", step.label);
                }
                let end = state.absorb(last, &mut |_, _| Ok(()));
                match refused(&step.label) {
                    Some(errno) => assert_eq!(end, Err(ExchangeError::Kernel { errno })),
                    None => assert_eq!(end, Ok(Progress::Finished), "{}", step.label),
                }
                assert_eq!(data, before.len(), "{}", step.label);
                // A reply to another request is skipped.
                let other = Exchange {
                    sequence: request.sequence.wrapping_add(1000),
                    ..state
                };
                assert_eq!(
                    other.absorb(last, &mut |_, _| Ok(())),
                    Ok(Progress::Continue)
                );
            }
        }
    }
}

// (b) Requests.

/// `Request::encode` against ipvsadm's captured request, with the sequence number of the
/// capture. The differences, all by design (the kernel treats both alike):
/// - the port id: libnl puts its socket's, lbd 0 (the kernel knows the sender);
/// - dumps: ipvsadm asks with NLM_F_ACK too (libnl's auto-ack), lbd with REQUEST|DUMP
///   only; the kernel ends both with DONE and no ACK (captured);
/// - the SERVICE nest of DEL_SERVICE, ZERO and the dest commands: ipvsadm sends the whole
///   service (SCHED_NAME, FLAGS, TIMEOUT, NETMASK, an empty scheduler name for the dest
///   commands), lbd its identity (AF, PROTOCOL, ADDR, PORT): the kernel parses the rest
///   only for NEW_SERVICE and SET_SERVICE (`ip_vs_genl_parse_service`'s `full_entry`);
/// - the DEST nest of DEL_DEST: ipvsadm sends the whole real, lbd its identity
///   (ADDR_FAMILY, ADDR, PORT): `ip_vs_genl_parse_dest` reads more only for NEW and SET;
/// - NEW_DEST and SET_DEST: ipvsadm always sends TUN_TYPE, TUN_PORT and TUN_FLAGS, lbd
///   only for a tunnel other than IPIP; absent, the kernel takes 0 for all three, which is
///   what ipvsadm sends for IPIP. Otherwise the same attributes in the same order.
///
/// Everything else is byte for byte: NEW_SERVICE and SET_SERVICE (IPv4 and IPv6 netmasks,
/// flags with mask ~0, the scheduler's NUL), SET_CONFIG, GET_CONFIG, GET_INFO,
/// GET_SERVICE, GET_DEST, ZERO of everything, and NLA_F_NESTED on every nest.
fn assert_like_ipvsadm(label: &str, theirs: &[u8], ours: &Request, family: u16) {
    let their_header = header(theirs);
    let mine = ours.encode(family, their_header.sequence);
    let my_header = header(&mine);
    assert_eq!(their_header.kind, my_header.kind, "{label}: family");
    assert_ne!(their_header.port, 0, "{label}: libnl's port id");
    assert_eq!(my_header.port, 0, "{label}: our port id");
    if ours.is_dump() {
        assert_eq!(my_header.flags, genl::NLM_F_REQUEST | NLM_F_DUMP);
        assert_eq!(their_header.flags, my_header.flags | NLM_F_ACK, "{label}");
    } else {
        assert_eq!(their_header.flags, my_header.flags, "{label}: flags");
    }
    assert_eq!(theirs[16..20], mine[16..20], "{label}: command, version 1");
    // The requests whose nests lbd cuts to what the kernel reads.
    let identity_only = matches!(
        ours,
        Request::DelService(_)
            | Request::Zero(Some(_))
            | Request::NewDest(..)
            | Request::SetDest(..)
            | Request::DelDest(..)
    );
    if !identity_only {
        assert_eq!(theirs[20..], mine[20..], "{label}: attributes");
        assert_eq!(their_header.len, my_header.len);
        return;
    }
    let (their_top, my_top) = (raw_attrs(&theirs[20..]), raw_attrs(&mine[20..]));
    let kinds = |attrs: &[(u16, &[u8])]| attrs.iter().map(|(kind, _)| *kind).collect::<Vec<_>>();
    assert_eq!(kinds(&their_top), kinds(&my_top), "{label}: nests");
    for ((kind, their_nest), (_, my_nest)) in their_top.iter().zip(&my_top) {
        assert_ne!(kind & NLA_F_NESTED, 0, "{label}: NLA_F_NESTED");
        use {dest_attr as d, svc_attr as s};
        let (extra, extra_is_zero): (&[u16], bool) = match (kind & !NLA_F_NESTED, ours) {
            (1, _) => (&[s::SCHED_NAME, s::FLAGS, s::TIMEOUT, s::NETMASK], false),
            (2, Request::DelDest(..)) => (
                &[
                    d::FWD_METHOD,
                    d::WEIGHT,
                    d::TUN_TYPE,
                    d::TUN_PORT,
                    d::TUN_FLAGS,
                    d::U_THRESH,
                    d::L_THRESH,
                ],
                false,
            ),
            (2, _) => (&[d::TUN_TYPE, d::TUN_PORT, d::TUN_FLAGS], true),
            (other, _) => panic!("{label}: top-level attribute {other}"),
        };
        assert_nest_extends(label, their_nest, my_nest, extra, extra_is_zero);
    }
}

/// `mine` is `theirs` without some of the attributes `extra` (all zero if `extra_is_zero`).
fn assert_nest_extends(label: &str, theirs: &[u8], mine: &[u8], extra: &[u16], zero: bool) {
    let mine = raw_attrs(mine);
    let kept: Vec<_> = raw_attrs(theirs)
        .into_iter()
        .filter(|(kind, payload)| {
            let left_out = extra.contains(kind) && !mine.iter().any(|(k, _)| k == kind);
            if left_out && zero {
                assert!(payload.iter().all(|&b| b == 0), "{label}: attribute {kind}");
            }
            !left_out
        })
        .collect();
    assert_eq!(kept, mine, "{label}");
}

/// Compare every IPVS request of ipvsadm's capture `text` with ours; how many there were.
fn compare_with_ipvsadm(text: &str) -> usize {
    let steps = steps(text);
    let family = family(&steps);
    let mut compared = 0;
    for step in &steps {
        let captured: Vec<&[u8]> = step
            .ipvs_exchanges(family)
            .iter()
            .map(|exchange| exchange.request)
            .collect();
        let mut expected = step_requests(&step.label);
        assert_eq!(captured.len(), expected.len(), "{}", step.label);
        for theirs in captured {
            // `list`'s GET_DESTs go in ipvsadm's order, by service.
            let at = expected
                .iter()
                .position(|request| match request {
                    Request::GetDests(key) => {
                        data(theirs).0 == cmd::GET_DEST && service_named_by(theirs) == *key
                    }
                    request => request.command() == data(theirs).0,
                })
                .unwrap_or_else(|| panic!("{}: unexpected request", step.label));
            assert_like_ipvsadm(&step.label, theirs, &expected.remove(at), family);
            compared += 1;
        }
    }
    compared
}

#[test]
fn our_requests_are_ipvsadms_but_for_the_documented_differences() {
    assert_eq!(compare_with_ipvsadm(IPVSADM), 29);
    assert_eq!(compare_with_ipvsadm(IPVSADM_FWMARK), 11);
}

#[test]
fn the_family_request_is_libnls() {
    // ipvsadm's (libnl's genl_ctrl_resolve) and ours: byte for byte but for the port id.
    for text in [IPVSADM, OURS] {
        let steps = steps(text);
        let exchange = step(&steps, "version")
            .exchanges()
            .into_iter()
            .find(|exchange| header(exchange.request).kind == genl::GENL_ID_CTRL)
            .expect("nlctrl's exchange");
        let request = exchange.request;
        let mine = genl::get_family_request("IPVS", header(request).sequence);
        assert_eq!(request[..12], mine[..12]);
        assert_eq!(request[16..], mine[16..]);
    }
}

/// Check that every request of our capture `text` is `Request::encode`'s bytes of a
/// step's request (or one of `reads`, `apply`'s reads before its changes) and that the
/// kernel took it; how many step requests there were.
fn check_sent(text: &str, services: &[ServiceKey]) -> usize {
    let steps = steps(text);
    let family = family(&steps);
    // The reads `apply` makes before it changes anything (kept in `edit-service`) and the
    // stop's check.
    let reads: Vec<Request> = [Request::GetConfig, Request::GetServices]
        .into_iter()
        .chain(services.iter().copied().map(Request::GetDests))
        .collect();
    let mut sent = 0;
    for step in &steps {
        let mut expected = step_requests(&step.label);
        for exchange in step.ipvs_exchanges(family) {
            let request = exchange.request;
            let sequence = header(request).sequence;
            let at = expected
                .iter()
                .position(|wanted| wanted.encode(family, sequence) == request);
            let Some(at) = at else {
                assert!(
                    reads
                        .iter()
                        .any(|read| read.encode(family, sequence) == request),
                    "{}: not a request we make: {request:02x?}",
                    step.label
                );
                continue;
            };
            let wanted = expected.remove(at);
            // The answer: an ACK (or, for a dump, DONE) unless refused on purpose.
            let last = exchange.replies.last().expect("an answer");
            let last = genl::messages(last).next().unwrap().unwrap().reply();
            match (refused(&step.label), wanted.is_dump()) {
                (Some(errno), _) => assert_eq!(last, Ok(Reply::Error { errno })),
                (None, true) => assert_eq!(last, Ok(Reply::Done)),
                (None, false) => assert_eq!(last, Ok(Reply::Ack), "{}", step.label),
            }
            sent += 1;
        }
        assert!(
            expected.is_empty(),
            "{}: not sent: {expected:?}",
            step.label
        );
    }
    sent
}

#[test]
fn what_the_backend_sent_is_encode_and_the_kernel_took_it() {
    assert_eq!(check_sent(OURS, &[s1(), s2(), s3(), s4()]), 29);
    assert_eq!(check_sent(OURS_FWMARK, &[f4(), f6()]), 11);
}

#[test]
fn captured_fwmark_dumps_decode_into_the_services_made() {
    // ipvsadm -Ln of the same moment (captured/ipvsadm-fwmark-listing.txt):
    //   FWM  7 rr
    //     -> 10.0.0.11:0                  Route   2      0          0
    //   FWM  7 IPv6 wlc
    //     -> [2001:db8::11]:8080          Masq    1      0          0
    for text in [IPVSADM_FWMARK, OURS_FWMARK] {
        let (mut services, dests) = listed_in(&steps(text), "fwmark-list");
        // The kernel dumps in its hash table's order (IPv6 first here).
        services.sort_by_key(|s| s.key);
        let keys: Vec<ServiceKey> = services.iter().map(|s| s.key).collect();
        assert_eq!(keys, [f4(), f6()]);
        assert_eq!(services[0].settings.scheduler, "rr");
        assert_eq!(services[1].settings.scheduler, "wlc");
        let reals = |key| -> Vec<(DestKey, u32, u32)> {
            dests[&key]
                .iter()
                .map(|d| (d.key, d.settings.forward, d.settings.weight))
                .collect()
        };
        assert_eq!(reals(f4()), [(dest("10.0.0.11", 0), fwd::DROUTE, 2)]);
        assert_eq!(reals(f6()), [(dest("2001:db8::11", 8080), fwd::MASQ, 1)]);
    }
}

// (c) Everything decodes.

/// Decode one captured message as far as its kind allows; nothing may fail.
fn decode_fully(message: &[u8], family: u16) {
    let parsed: Vec<_> = genl::messages(message).collect();
    let [Ok(parsed)] = &parsed[..] else {
        panic!("not one message: {parsed:?}");
    };
    assert_eq!(parsed.payload.len() + genl::NLMSG_HDRLEN, message.len());
    match parsed.reply().unwrap() {
        Reply::Data { command, attrs } if parsed.kind == family => {
            walk_ipvs_attrs(command, attrs);
            match command {
                // NEW_SERVICE and SET_SERVICE requests carry a whole service, like the
                // dump's entries (NEW_SERVICE).
                cmd::NEW_SERVICE | cmd::SET_SERVICE => {
                    decode_service(cmd::NEW_SERVICE, attrs).unwrap();
                }
                // Requests (a service nest, then the real's) and dump entries alike.
                cmd::NEW_DEST | cmd::SET_DEST => {
                    decode_dest(cmd::NEW_DEST, attrs, IpAddr::V4(Ipv4Addr::UNSPECIFIED)).unwrap();
                }
                cmd::SET_CONFIG => {
                    decode_config(command, attrs).unwrap();
                }
                cmd::SET_INFO => {
                    decode_info(command, attrs).unwrap();
                }
                _ => {}
            }
        }
        Reply::Data { command, attrs } => {
            assert_eq!(parsed.kind, genl::GENL_ID_CTRL);
            if command == genl::CTRL_CMD_NEWFAMILY {
                assert_eq!(genl::family_id(command, attrs), Ok(family));
            }
            for attr in genl::attrs(attrs) {
                attr.unwrap();
            }
        }
        // A refusal echoes the request whole: it decodes too.
        Reply::Error { .. } => decode_fully(&parsed.payload[4..], family),
        // An ACK's request header (NLM_F_CAPPED: without the payload).
        Reply::Ack => {
            let echoed = header(&parsed.payload[4..]);
            assert!(echoed.kind == family || echoed.kind == genl::GENL_ID_CTRL);
        }
        Reply::Done | Reply::Noop => {}
    }
}

/// IPVS's attributes, with the nests a message can have (SERVICE and DEST, and their
/// STATS and STATS64) walked: replies nest without NLA_F_NESTED. (The attributes of
/// SET_INFO and SET_CONFIG are numbers.)
fn walk_ipvs_attrs(command: u8, attrs: &[u8]) {
    let has_nests = command <= cmd::GET_DEST || command == cmd::ZERO;
    for attr in genl::attrs(attrs) {
        let attr = attr.unwrap();
        if has_nests && matches!(attr.kind, 1 | 2) {
            for inner in attr.nested() {
                let inner = inner.unwrap();
                if matches!(inner.kind, 10 | 12) {
                    for counter in inner.nested() {
                        counter.unwrap().u32_or_u64("counter").unwrap();
                    }
                }
            }
        }
    }
}

#[test]
fn every_captured_message_decodes() {
    let mut count = 0;
    for text in [IPVSADM, OURS, IPVSADM_FWMARK, OURS_FWMARK] {
        let steps = steps(text);
        let family = family(&steps);
        for step in &steps {
            for (_, message) in &step.messages {
                decode_fully(message, family);
                count += 1;
            }
        }
    }
    assert!(count > 200, "{count} messages");
}

#[test]
fn truncated_and_corrupted_captured_replies_are_errors_never_panics() {
    let steps = steps(IPVSADM);
    let list = step(&steps, "list");
    let entry = |command: u8| {
        list.messages
            .iter()
            .map(|(_, message)| message)
            .find(|message| message.len() > 20 && message[16] == command && message[6] == 2)
            .expect("a dump entry")
            .clone()
    };
    let service = entry(cmd::NEW_SERVICE);
    let (_, attrs) = data(&service);
    // Every prefix of the attributes: the nest then overruns the buffer.
    for cut in 0..attrs.len() {
        assert!(decode_service(cmd::NEW_SERVICE, &attrs[..cut]).is_err());
    }
    // Every prefix of the nest's content, re-wrapped: an error until the required
    // attributes (AF through NETMASK) are whole; never a panic.
    let content = &attrs[4..];
    let required = raw_attrs(content)
        .iter()
        .take_while(|(kind, _)| *kind != svc_attr::STATS)
        .map(|(_, payload)| genl::align(4 + payload.len()))
        .sum::<usize>();
    for cut in 0..content.len() {
        let mut nest = genl::AttrWriter::new();
        nest.bytes(1, &content[..cut]);
        let result = decode_service(cmd::NEW_SERVICE, nest.as_bytes());
        if cut < required {
            assert!(result.is_err(), "cut at {cut} decoded");
        }
    }
    // Every byte set to 0xff in turn, and every datagram prefix.
    for index in 0..service.len() {
        let mut corrupt = service.clone();
        corrupt[index] = 0xff;
        for message in genl::messages(&corrupt) {
            if let Ok(Reply::Data { command, attrs }) = message.and_then(|m| m.reply()) {
                let _ = decode_service(command, attrs);
            }
        }
        let _ = genl::messages(&service[..index]).count();
    }
    let dest = entry(cmd::NEW_DEST);
    let (_, attrs) = data(&dest);
    for cut in 0..attrs.len() {
        let _ = decode_dest(cmd::NEW_DEST, &attrs[..cut], s1().addr);
    }
    for index in 0..attrs.len() {
        let mut corrupt = attrs.to_vec();
        corrupt[index] ^= 0xff;
        let _ = decode_dest(cmd::NEW_DEST, &corrupt, s1().addr);
    }
}

#[test]
fn wrong_sizes_and_lengths_are_named() {
    // PORT (a u16) with 4 bytes of payload.
    let mut nest = genl::AttrWriter::new();
    nest.u16(1, 2)
        .u16(2, 6)
        .bytes(3, &[10, 0, 0, 1])
        .u32(4, 80)
        .string(6, "rr")
        .bytes(7, &[0; 8])
        .u32(8, 0)
        .u32(9, 0);
    let mut attrs = genl::AttrWriter::new();
    attrs.nested(1, &nest);
    assert_eq!(
        decode_service(cmd::NEW_SERVICE, attrs.as_bytes()),
        Err(DecodeError::PayloadSize {
            attribute: "IPVS_SVC_ATTR_PORT",
            expected: "2",
            actual: 4
        })
    );
    // A captured entry whose nest declares more than the buffer holds.
    let steps = steps(IPVSADM);
    let (_, entry) = &step(&steps, "list").messages[1];
    let mut bytes = entry.clone();
    bytes[20] = 0xff;
    bytes[21] = 0x01;
    assert!(matches!(
        decode_service(cmd::NEW_SERVICE, &bytes[20..]),
        Err(DecodeError::AttributeLength {
            kind: 1,
            declared: 0x1ff,
            ..
        })
    ));
    // FLAGS with 4 bytes instead of struct ip_vs_flags' 8.
    let mut nest = genl::AttrWriter::new();
    nest.u16(1, 2).u32(5, 1).bytes(7, &[0; 4]);
    let mut attrs = genl::AttrWriter::new();
    attrs.nested(1, &nest);
    assert!(matches!(
        decode_service(cmd::NEW_SERVICE, attrs.as_bytes()),
        Err(DecodeError::PayloadSize {
            attribute: "IPVS_SVC_ATTR_FLAGS",
            ..
        })
    ));
    // No service nest at all.
    assert!(matches!(
        decode_service(cmd::NEW_SERVICE, &[]),
        Err(DecodeError::Missing { .. })
    ));
    // A v6 family with a 4-byte address.
    let mut nest = genl::AttrWriter::new();
    nest.bytes(1, &[10, 0, 0, 2])
        .be16(2, 80)
        .u16(11, 10)
        .u32(3, 3)
        .u32(4, 1);
    let mut attrs = genl::AttrWriter::new();
    attrs.nested(2, &nest);
    assert!(matches!(
        decode_dest(
            cmd::NEW_DEST,
            attrs.as_bytes(),
            IpAddr::V4(Ipv4Addr::LOCALHOST)
        ),
        Err(DecodeError::PayloadSize {
            attribute: "IPVS_DEST_ATTR_ADDR",
            ..
        })
    ));
}

#[test]
fn requests_read_back_as_what_they_carry() {
    // NEW_SERVICE and NEW_DEST share their command numbers with the dump answers, so a
    // request decodes with the reply decoders.
    let settings = ServiceSettings {
        scheduler: "mh".into(),
        flags: svc_flag::SCHED1 | svc_flag::ONEPACKET | svc_flag::PERSISTENT,
        timeout_secs: 60,
        netmask: Netmask::V6 { prefix_len: 48 },
    };
    let key = ServiceKey {
        protocol: 17,
        addr: "2001:db8::10".parse().unwrap(),
        port: 0,
        fwmark: None,
    };
    let bytes = Request::NewService(key, settings.clone()).encode(0x20, 11);
    let (command, attrs) = data(&bytes);
    let service = decode_service(command, attrs).unwrap();
    assert_eq!(service.key, key);
    assert_eq!(service.settings, settings);

    // A v4 service with a v6 real (TUN only in IPVS): the dest carries its own family.
    let dest = DestKey {
        addr: "2001:db8::2".parse().unwrap(),
        port: 8080,
    };
    let dest_settings = DestSettings {
        forward: fwd::TUNNEL,
        weight: 65_535,
        upper_threshold: 100,
        lower_threshold: 10,
        tunnel: Tunnel::default(),
    };
    let bytes = Request::NewDest(s1(), dest, dest_settings).encode(0x20, 12);
    let (command, attrs) = data(&bytes);
    let decoded = decode_dest(command, attrs, s1().addr).unwrap();
    assert_eq!((decoded.key, decoded.settings), (dest, dest_settings));
}

#[test]
fn timeouts_are_set_only_where_given() {
    // Captured: all three (`set-timeouts`). DERIVED: one of them, as apply sends when
    // only that one differs.
    let only_udp = TimeoutUpdate {
        udp: Some(60),
        ..TimeoutUpdate::default()
    };
    assert_eq!(
        Request::SetConfig(only_udp).encode(0x20, 8),
        hex("
            1c000000 2000 0500 08000000 00000000   # 28 bytes, IPVS, REQUEST|ACK, seq 8
            0c 01 0000                             # SET_CONFIG
            0800 0600 3c000000                     # CMD_ATTR_TIMEOUT_UDP: 60
        ")
    );
}

// DERIVED fixtures: what no capture has.

/// DERIVED: a GET_SERVICE dump entry as `ip_vs_genl_fill_service` writes it on x86-64
/// (the captured layout), for a service whose 32-bit STATS packet counter wrapped and
/// whose STATS64 did not.
const WRAPPED_SERVICE_REPLY: &str = "
    40010000 2000 0200 05000000 a0860100   # nlmsghdr: 320 bytes, NLM_F_MULTI, seq 5
    01 01 0000                             # NEW_SERVICE (dumps answer with it)
    2c01 0100                              # CMD_ATTR_SERVICE without NLA_F_NESTED
    0600 0100 0200 0000                    # AF_INET
    0600 0200 0600 0000                    # TCP
    1400 0300 0a000064 00000000 00000000 00000000
    0600 0400 0050 0000                    # port 80
    0800 0600 776c6300                     # wlc
    0c00 0700 03000000 ffffffff            # flags PERSISTENT|HASHED, mask ~0
    0800 0800 68010000                     # timeout 360 s
    0800 0900 ffffff00                     # netmask 255.255.255.0
    5c00 0a00                              # STATS, 92 bytes
      0800 0100 03000000                   # conns 3
      0800 0200 0a000000                   # inpkts, (u32) of 2^32 + 10
      0800 0300 00000000                   # outpkts
      0c00 0400 58020000 00000000          # inbytes 600 (u64 even here)
      0c00 0500 00000000 00000000          # outbytes
      0800 0600 00000000                   # cps
      0800 0700 00000000                   # inpps
      0800 0800 00000000                   # outpps
      0800 0900 00000000                   # inbps
      0800 0a00 00000000                   # outbps
    7c00 0c00                              # STATS64, 124 bytes
      0c00 0100 03000000 00000000          # conns 3
      0c00 0200 0a000000 01000000          # inpkts 2^32 + 10
      0c00 0300 00000000 00000000
      0c00 0400 58020000 00000000          # inbytes 600
      0c00 0500 00000000 00000000
      0c00 0600 01000000 00000000          # cps 1
      0c00 0700 02000000 00000000          # inpps 2
      0c00 0800 00000000 00000000
      0c00 0900 78000000 00000000          # inbps 120
      0c00 0a00 00000000 00000000
";

#[test]
fn stats64_is_preferred_to_wrapped_32_bit_stats() {
    let bytes = hex(WRAPPED_SERVICE_REPLY);
    assert_eq!(bytes.len(), 320);
    let (command, attrs) = data(&bytes);
    let service = decode_service(command, attrs).unwrap();
    assert_eq!(service.key, s1());
    assert_eq!(
        service.settings,
        settings(
            "wlc",
            svc_flag::PERSISTENT,
            360,
            Netmask::V4(Ipv4Addr::new(255, 255, 255, 0))
        )
    );
    assert_eq!(
        service.stats,
        Stats {
            conns: 3,
            in_packets: (1 << 32) + 10,
            in_bytes: 600,
            cps: 1,
            in_pps: 2,
            in_bps: 120,
            ..Stats::default()
        }
    );
}

#[test]
fn stats_padding_on_strict_alignment_architectures_is_skipped() {
    // DERIVED: nla_put_u64_64bit puts an empty IPVS_STATS_ATTR_PAD (11) before a u64
    // whose payload would not be 8-aligned (x86-64, captured, has none).
    let mut nest = genl::AttrWriter::new();
    nest.u16(svc_attr::AF, 2)
        .u16(svc_attr::PROTOCOL, 6)
        .bytes(svc_attr::ADDR, &[10, 0, 0, 100])
        .be16(svc_attr::PORT, 80)
        .string(svc_attr::SCHED_NAME, "rr")
        .bytes(svc_attr::FLAGS, &[2, 0, 0, 0, 0xff, 0xff, 0xff, 0xff])
        .u32(svc_attr::TIMEOUT, 0)
        .bytes(svc_attr::NETMASK, &[0xff; 4])
        .bytes(
            svc_attr::STATS64,
            &hex("
                0400 0b00                              # PAD
                0c00 0100 07000000 00000000            # conns 7
                0400 0b00                              # PAD
                0800 0200 01000000                     # (a 32-bit counter is taken too)
            "),
        );
    let mut attrs = genl::AttrWriter::new();
    attrs.bytes(1, nest.as_bytes());
    let decoded = decode_service(cmd::NEW_SERVICE, attrs.as_bytes()).unwrap();
    assert_eq!(decoded.stats.conns, 7);
    assert_eq!(decoded.stats.in_packets, 1);
    assert_eq!(decoded.settings.scheduler, "rr");
}
