//! Byte fixtures of the IPVS protocol: every request kind against bytes written out by
//! hand from the kernel's layouts (`include/uapi/linux/ip_vs.h`, the policies and
//! `ip_vs_genl_parse_*` / `ip_vs_genl_fill_*` of `ip_vs_ctl.c`) and ipvsadm's libipvs
//! (attribute order, flags mask `~0`, NUL-terminated scheduler name), and the kernel's
//! replies decoded into typed values. Host byte order is little-endian here (the module is
//! compiled for little-endian targets only).
//!
//! DERIVED, NOT CAPTURED: every fixture below; they are to be checked against captures
//! (`nlmon` + tcpdump, or strace of ipvsadm) in the VM with Debian's 6.1 kernel. Where
//! ipvsadm differs on purpose: it sends the full service nest (scheduler, flags, timeout,
//! netmask) with every command, lbd only for NEW/SET_SERVICE (the kernel parses no more
//! than AF, PROTOCOL, ADDR, PORT for the others); it asks for dumps with NLM_F_ACK too
//! (libnl's auto-ack), lbd with NLM_F_REQUEST|NLM_F_DUMP only.

use std::net::{IpAddr, Ipv4Addr};

use super::{
    error::DecodeError,
    genl::{self, tests::hex},
    messages::*,
    replies::*,
};

/// The family id the fixtures use (nlctrl hands out ids from 0x10 up at run time).
const FAMILY: u16 = 0x24;

fn tcp_service() -> ServiceKey {
    ServiceKey {
        protocol: 6,
        addr: "10.0.0.1".parse().unwrap(),
        port: 80,
    }
}

fn wlc() -> ServiceSettings {
    ServiceSettings {
        scheduler: "wlc".into(),
        flags: 0,
        timeout_secs: 0,
        netmask: Netmask::V4(Ipv4Addr::BROADCAST),
    }
}

fn real() -> DestKey {
    DestKey {
        addr: "10.0.1.2".parse().unwrap(),
        port: 80,
    }
}

fn route(weight: u32) -> DestSettings {
    DestSettings {
        forward: fwd::DROUTE,
        weight,
        upper_threshold: 0,
        lower_threshold: 0,
        tunnel: Tunnel::default(),
    }
}

/// The service nest's identifying attributes of `tcp_service()` (44 bytes).
const TCP_SERVICE_ID: &str = "
    0600 0100 0200 0000                              # AF: AF_INET (u16)
    0600 0200 0600 0000                              # PROTOCOL: TCP (u16)
    1400 0300 0a000001 00000000 00000000 00000000    # ADDR: nf_inet_addr, 10.0.0.1
    0600 0400 0050 0000                              # PORT: 80, network order
";

/// The dest nest's identifying attributes of `real()` (36 bytes), in ipvsadm's order.
const REAL_ID: &str = "
    0600 0b00 0200 0000                              # ADDR_FAMILY: AF_INET
    1400 0100 0a000102 00000000 00000000 00000000    # ADDR: 10.0.1.2
    0600 0200 0050 0000                              # PORT: 80
";

fn encoded(request: Request, sequence: u32) -> Vec<u8> {
    request.encode(FAMILY, sequence)
}

#[test]
fn new_service() {
    let expected = hex(&format!(
        "
        68000000 2400 0500 01000000 00000000   # nlmsghdr: 104 bytes, IPVS, REQUEST|ACK, seq 1
        01 01 0000                             # genlmsghdr: NEW_SERVICE, version 1
        5400 0180                              # CMD_ATTR_SERVICE | NLA_F_NESTED, 84 bytes
        {TCP_SERVICE_ID}
        0800 0600 776c6300                     # SCHED_NAME: \"wlc\\0\"
        0c00 0700 00000000 ffffffff            # FLAGS: ip_vs_flags {{ flags 0, mask ~0 }}
        0800 0800 00000000                     # TIMEOUT: 0 s
        0800 0900 ffffffff                     # NETMASK: 255.255.255.255, network order
        "
    ));
    assert_eq!(
        encoded(Request::NewService(tcp_service(), wlc()), 1),
        expected
    );
}

#[test]
fn set_service_ipv6_persistent() {
    let key = ServiceKey {
        protocol: 17,
        addr: "2001:db8::1".parse().unwrap(),
        port: 53,
    };
    let settings = ServiceSettings {
        scheduler: "sh".into(),
        flags: svc_flag::PERSISTENT | svc_flag::SCHED1 | svc_flag::SCHED2,
        timeout_secs: 300,
        netmask: Netmask::V6 { prefix_len: 64 },
    };
    let expected = hex("
        68000000 2400 0500 02000000 00000000   # 104 bytes, seq 2
        02 01 0000                             # SET_SERVICE
        5400 0180                              # SERVICE nest, 84 bytes
        0600 0100 0a00 0000                    # AF: AF_INET6
        0600 0200 1100 0000                    # PROTOCOL: UDP
        1400 0300 20010db8 00000000 00000000 00000001  # ADDR: 2001:db8::1
        0600 0400 0035 0000                    # PORT: 53
        0700 0600 736800 00                    # SCHED_NAME: \"sh\\0\" (7 bytes, padded)
        0c00 0700 19000000 ffffffff            # FLAGS: PERSISTENT|SCHED1|SCHED2, mask ~0
        0800 0800 2c010000                     # TIMEOUT: 300 s
        0800 0900 40000000                     # NETMASK: prefix length 64, host order
    ");
    assert_eq!(encoded(Request::SetService(key, settings), 2), expected);
}

#[test]
fn del_service_get_dests_and_zero_one() {
    let body = |command: &str, flags: &str| {
        hex(&format!(
            "
            44000000 2400 {flags} 03000000 00000000   # 68 bytes, seq 3
            {command} 01 0000
            3000 0180                                 # SERVICE nest, 48 bytes
            {TCP_SERVICE_ID}
            "
        ))
    };
    assert_eq!(
        encoded(Request::DelService(tcp_service()), 3),
        body("03", "0500")
    );
    // A dump: REQUEST|DUMP (0x301).
    assert_eq!(
        encoded(Request::GetDests(tcp_service()), 3),
        body("08", "0103")
    );
    assert_eq!(
        encoded(Request::Zero(Some(tcp_service())), 3),
        body("10", "0500")
    );
}

#[test]
fn requests_without_attributes() {
    let bare = |command: &str, flags: &str| {
        hex(&format!(
            "14000000 2400 {flags} 04000000 00000000 {command} 01 0000"
        ))
    };
    assert_eq!(encoded(Request::GetServices, 4), bare("04", "0103"));
    assert_eq!(encoded(Request::GetConfig, 4), bare("0d", "0500"));
    assert_eq!(encoded(Request::GetInfo, 4), bare("0f", "0500"));
    assert_eq!(encoded(Request::Zero(None), 4), bare("10", "0500"));
}

#[test]
fn new_dest() {
    let expected = hex(&format!(
        "
        8c000000 2400 0500 05000000 00000000   # 140 bytes, seq 5
        05 01 0000                             # NEW_DEST
        3000 0180                              # SERVICE nest, 48 bytes
        {TCP_SERVICE_ID}
        4800 0280                              # CMD_ATTR_DEST | NLA_F_NESTED, 72 bytes
        {REAL_ID}
        0800 0300 03000000                     # FWD_METHOD: IP_VS_CONN_F_DROUTE
        0800 0400 05000000                     # WEIGHT: 5
        0800 0500 00000000                     # U_THRESH: 0
        0800 0600 00000000                     # L_THRESH: 0
        "
    ));
    assert_eq!(
        encoded(Request::NewDest(tcp_service(), real(), route(5)), 5),
        expected
    );
}

#[test]
fn set_dest_with_a_gue_tunnel() {
    let settings = DestSettings {
        forward: fwd::TUNNEL,
        weight: 1,
        tunnel: Tunnel {
            kind: 1,
            port: 6080,
            flags: 1,
        },
        ..route(1)
    };
    let expected = hex(&format!(
        "
        a4000000 2400 0500 06000000 00000000   # 164 bytes, seq 6
        06 01 0000                             # SET_DEST
        3000 0180
        {TCP_SERVICE_ID}
        6000 0280                              # DEST nest, 96 bytes
        {REAL_ID}
        0800 0300 02000000                     # FWD_METHOD: IP_VS_CONN_F_TUNNEL
        0800 0400 01000000                     # WEIGHT: 1
        0800 0500 00000000
        0800 0600 00000000
        0500 0d00 01 000000                    # TUN_TYPE: GUE (u8, padded)
        0600 0e00 17c0 0000                    # TUN_PORT: 6080, network order
        0600 0f00 0100 0000                    # TUN_FLAGS: CSUM
        "
    ));
    assert_eq!(
        encoded(Request::SetDest(tcp_service(), real(), settings), 6),
        expected
    );
}

#[test]
fn del_dest() {
    let expected = hex(&format!(
        "
        6c000000 2400 0500 07000000 00000000   # 108 bytes, seq 7
        07 01 0000                             # DEL_DEST
        3000 0180
        {TCP_SERVICE_ID}
        2800 0280                              # DEST nest, 40 bytes: identity only
        {REAL_ID}
        "
    ));
    assert_eq!(
        encoded(Request::DelDest(tcp_service(), real()), 7),
        expected
    );
}

#[test]
fn set_config() {
    let update = TimeoutUpdate {
        tcp: Some(3600),
        tcp_fin: Some(120),
        udp: Some(60),
    };
    let expected = hex("
        2c000000 2400 0500 08000000 00000000   # 44 bytes, seq 8
        0c 01 0000                             # SET_CONFIG
        0800 0400 100e0000                     # CMD_ATTR_TIMEOUT_TCP: 3600
        0800 0500 78000000                     # CMD_ATTR_TIMEOUT_TCP_FIN: 120
        0800 0600 3c000000                     # CMD_ATTR_TIMEOUT_UDP: 60
    ");
    assert_eq!(encoded(Request::SetConfig(update), 8), expected);
    let only_udp = TimeoutUpdate {
        udp: Some(60),
        ..TimeoutUpdate::default()
    };
    assert_eq!(encoded(Request::SetConfig(only_udp), 8).len(), 28);
}

/// A GET_SERVICE dump entry as `ip_vs_genl_fill_service` writes it on x86-64 (no PAD
/// attributes: efficient unaligned access): a persistent wlc service whose 32-bit STATS
/// have the packet counter wrapped and whose STATS64 does not.
const SERVICE_REPLY: &str = "
    40010000 2400 0200 05000000 a0860100   # nlmsghdr: 320 bytes, NLM_F_MULTI, seq 5, port 100000
    01 01 0000                             # NEW_SERVICE (dumps answer with it)
    2c01 0100                              # CMD_ATTR_SERVICE without NLA_F_NESTED, 300 bytes
    0600 0100 0200 0000                    # AF_INET
    0600 0200 0600 0000                    # TCP
    1400 0300 0a000001 00000000 00000000 00000000
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

/// A GET_DEST dump entry in `ip_vs_genl_fill_dest`'s order.
const DEST_REPLY: &str = "
    64010000 2400 0200 06000000 a0860100   # 356 bytes, NLM_F_MULTI, seq 6
    05 01 0000                             # NEW_DEST
    5001 0200                              # CMD_ATTR_DEST, 336 bytes
    1400 0100 0a000102 00000000 00000000 00000000   # 10.0.1.2
    0600 0200 0050 0000                    # port 80
    0800 0300 03000000                     # DROUTE
    0800 0400 05000000                     # weight 5
    0500 0d00 00 000000                    # TUN_TYPE IPIP
    0600 0e00 0000 0000                    # TUN_PORT 0
    0600 0f00 0000 0000                    # TUN_FLAGS 0
    0800 0500 00000000                     # U_THRESH
    0800 0600 00000000                     # L_THRESH
    0800 0700 02000000                     # ACTIVE_CONNS 2
    0800 0800 07000000                     # INACT_CONNS 7
    0800 0900 01000000                     # PERSIST_CONNS 1
    0600 0b00 0200 0000                    # ADDR_FAMILY AF_INET
    5c00 0a00                              # STATS
      0800 0100 09000000
      0800 0200 5a000000
      0800 0300 00000000
      0c00 0400 18150000 00000000
      0c00 0500 00000000 00000000
      0800 0600 00000000
      0800 0700 00000000
      0800 0800 00000000
      0800 0900 00000000
      0800 0a00 00000000
    7c00 0c00                              # STATS64
      0c00 0100 09000000 00000000          # conns 9
      0c00 0200 5a000000 00000000          # inpkts 90
      0c00 0300 00000000 00000000
      0c00 0400 18150000 00000000          # inbytes 5400
      0c00 0500 00000000 00000000
      0c00 0600 00000000 00000000
      0c00 0700 00000000 00000000
      0c00 0800 00000000 00000000
      0c00 0900 00000000 00000000
      0c00 0a00 00000000 00000000
";

/// The generic netlink command and attributes of a one-message fixture.
fn data(bytes: &[u8]) -> (u8, &[u8]) {
    let message = genl::messages(bytes).next().unwrap().unwrap();
    match message.reply().unwrap() {
        genl::Reply::Data { command, attrs } => (command, attrs),
        other => panic!("not data: {other:?}"),
    }
}

#[test]
fn a_service_dump_entry_decodes_with_stats64_preferred() {
    let bytes = hex(SERVICE_REPLY);
    assert_eq!(bytes.len(), 320);
    let (command, attrs) = data(&bytes);
    let service = decode_service(command, attrs).unwrap();
    assert_eq!(service.target, ServiceTarget::Address(tcp_service()));
    assert_eq!(
        service.settings,
        ServiceSettings {
            scheduler: "wlc".into(),
            flags: svc_flag::PERSISTENT,
            timeout_secs: 360,
            netmask: Netmask::V4(Ipv4Addr::new(255, 255, 255, 0)),
        }
    );
    assert_eq!(service.settings.netmask.prefix_len(), 24);
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
fn a_dest_dump_entry_decodes() {
    let bytes = hex(DEST_REPLY);
    assert_eq!(bytes.len(), 356);
    let (command, attrs) = data(&bytes);
    let dest = decode_dest(command, attrs, tcp_service().addr).unwrap();
    assert_eq!(
        dest,
        KernelDest {
            key: real(),
            settings: route(5),
            active_conns: 2,
            inactive_conns: 7,
            persistent_conns: 1,
            stats: Stats {
                conns: 9,
                in_packets: 90,
                in_bytes: 5400,
                ..Stats::default()
            },
        }
    );
}

#[test]
fn config_and_info_answers_decode() {
    let config = hex("
        2c000000 2400 0000 09000000 a0860100   # 44 bytes, a doit answer
        0c 01 0000                             # SET_CONFIG answers GET_CONFIG
        0800 0400 84030000                     # tcp 900
        0800 0500 78000000                     # tcp_fin 120
        0800 0600 2c010000                     # udp 300
    ");
    let (command, attrs) = data(&config);
    assert_eq!(
        decode_config(command, attrs),
        Ok(KernelTimeouts {
            tcp: 900,
            tcp_fin: 120,
            udp: 300
        })
    );
    let info = hex("
        24000000 2400 0000 0a000000 a0860100   # 36 bytes
        0e 01 0000                             # SET_INFO answers GET_INFO
        0800 0100 01020100                     # version 0x010201
        0800 0200 00100000                     # conn table size 4096
    ");
    let (command, attrs) = data(&info);
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

#[test]
fn stats_padding_on_strict_alignment_architectures_is_skipped() {
    // nla_put_u64_64bit puts an empty IPVS_STATS_ATTR_PAD (11) before a u64 whose payload
    // would not be 8-aligned.
    let mut service = hex(&format!(
        "
        {TCP_SERVICE_ID}
        0700 0600 727200 00                    # rr
        0c00 0700 02000000 ffffffff
        0800 0800 00000000
        0800 0900 ffffffff
        2000 0c00                              # STATS64, 32 bytes
          0400 0b00                            # PAD
          0c00 0100 07000000 00000000          # conns 7
          0400 0b00                            # PAD
          0800 0200 01000000                   # (a 32-bit counter is taken too)
        "
    ));
    let mut attrs = genl::AttrWriter::new();
    attrs.bytes(1, &std::mem::take(&mut service));
    let decoded = decode_service(cmd::NEW_SERVICE, attrs.as_bytes()).unwrap();
    assert_eq!(decoded.stats.conns, 7);
    assert_eq!(decoded.stats.in_packets, 1);
    assert_eq!(decoded.settings.scheduler, "rr");
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
    };
    let bytes = encoded(Request::NewService(key, settings.clone()), 11);
    let (command, attrs) = data(&bytes);
    let service = decode_service(command, attrs).unwrap();
    assert_eq!(service.target, ServiceTarget::Address(key));
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
    let bytes = encoded(Request::NewDest(tcp_service(), dest, dest_settings), 12);
    let (command, attrs) = data(&bytes);
    let decoded = decode_dest(command, attrs, tcp_service().addr).unwrap();
    assert_eq!((decoded.key, decoded.settings), (dest, dest_settings));
}

#[test]
fn truncated_and_corrupted_replies_are_errors_never_panics() {
    let bytes = hex(SERVICE_REPLY);
    let (_, attrs) = data(&bytes);
    // Every prefix of the attributes: the nest then overruns the buffer.
    for cut in 0..attrs.len() {
        assert!(decode_service(cmd::NEW_SERVICE, &attrs[..cut]).is_err());
    }
    // Every prefix of the nest's content, re-wrapped: an error until the required
    // attributes (through NETMASK, 80 bytes) are whole; never a panic.
    let content = &attrs[4..];
    for cut in 0..content.len() {
        let mut nest = genl::AttrWriter::new();
        nest.bytes(1, &content[..cut]);
        let result = decode_service(cmd::NEW_SERVICE, nest.as_bytes());
        if cut < 80 {
            assert!(result.is_err(), "cut at {cut} decoded");
        }
    }
    // Every byte set to 0xff in turn, and every datagram prefix.
    for index in 0..bytes.len() {
        let mut corrupt = bytes.clone();
        corrupt[index] = 0xff;
        for message in genl::messages(&corrupt) {
            if let Ok(genl::Reply::Data { command, attrs }) = message.and_then(|m| m.reply()) {
                let _ = decode_service(command, attrs);
            }
        }
        let _ = genl::messages(&bytes[..index]).count();
    }
    let dest = hex(DEST_REPLY);
    let (_, attrs) = data(&dest);
    for cut in 0..attrs.len() {
        let _ = decode_dest(cmd::NEW_DEST, &attrs[..cut], tcp_service().addr);
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
    // The nest declares more than the buffer holds.
    let mut bytes = hex(SERVICE_REPLY);
    bytes[20] = 0xff;
    bytes[21] = 0x01;
    let attrs = &bytes[20..];
    assert!(matches!(
        decode_service(cmd::NEW_SERVICE, attrs),
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
fn a_fwmark_service_decodes_as_such() {
    let mut nest = genl::AttrWriter::new();
    nest.u16(1, 2)
        .u32(5, 42)
        .string(6, "wrr")
        .bytes(7, &[2, 0, 0, 0, 0xff, 0xff, 0xff, 0xff])
        .u32(8, 0)
        .bytes(9, &[0xff; 4]);
    let mut attrs = genl::AttrWriter::new();
    attrs.nested(1, &nest);
    let service = decode_service(cmd::NEW_SERVICE, attrs.as_bytes()).unwrap();
    assert_eq!(
        service.target,
        ServiceTarget::Fwmark {
            family: 2,
            mark: 42
        }
    );
}
