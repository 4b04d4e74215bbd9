use proptest::prelude::*;

use super::*;
use crate::test_conns::tcp_conn;

/// `conns` in as few messages as `Batch` makes of them.
fn pack(syncid: u8, conns: &[SyncConn], maxlen: usize) -> Vec<Message> {
    let mut batch = Batch::new(syncid, maxlen);
    let mut messages: Vec<Message> = conns.iter().filter_map(|c| batch.push(c.clone())).collect();
    messages.extend(batch.take());
    messages
}

/// A message laid out by hand as the kernel's `ip_vs_sync_conn` writes it: header, then
/// one IPv4 TCP record, ESTABLISHED, direct routing, 900 s left.
const KERNEL_LAYOUT: [u8; 44] = [
    0, 7, 0, 44, 1, 1, 0, 0, // reserved, syncid 7, size 44, 1 record, version 1, spare
    0, 6, 0, 36, // IPv4, TCP, version 0 and size 36
    0, 0, 0, 3, // flags: IP_VS_CONN_F_DROUTE
    0, 1, 0x9c, 0x40, // state ESTABLISHED, client port 40000
    0, 80, 0x1f, 0x90, // VIP port 80, real port 8080
    0, 0, 0, 0, // fwmark
    0, 0, 3, 0x84, // 900 s
    198, 51, 100, 7, // client
    192, 0, 2, 10, // VIP
    10, 0, 0, 2, // real
];

#[test]
fn the_kernels_layout_reads_field_by_field() {
    let decoded = Message::decode(&KERNEL_LAYOUT).expect("decodes");
    assert!(decoded.skipped.is_empty());
    assert_eq!(decoded.message.syncid, 7);
    let expected = SyncConn {
        client_port: 40000,
        real_port: 8080,
        ends: Ends::V4 {
            client: [198, 51, 100, 7].into(),
            vip: [192, 0, 2, 10].into(),
            real: [10, 0, 0, 2].into(),
        },
        ..tcp_conn([0; 4], 0)
    };
    assert_eq!(decoded.message.conns, vec![expected]);
    assert_eq!(decoded.message.encode(), KERNEL_LAYOUT.to_vec());
}

#[test]
fn ipv6_templates_options_and_padding_round_trip() {
    let v6 = SyncConn {
        protocol: PROTO_UDP,
        flags: flags::TUNNEL | flags::INACTIVE,
        state: 0,
        ends: Ends::V6 {
            client: "2001:db8::7".parse().expect("address"),
            vip: "2001:db8::10".parse().expect("address"),
            real: "2001:db8:1::2".parse().expect("address"),
        },
        timeout_secs: 300,
        ..tcp_conn([0; 4], 5353)
    };
    let template = SyncConn {
        flags: flags::TEMPLATE | flags::MASQ,
        state: 0,
        client_port: 0,
        pe_data: b"call-id-12".to_vec(),
        pe_name: b"sip".to_vec(),
        ..tcp_conn([198, 51, 100, 8], 0)
    };
    let sequenced = SyncConn {
        flags: flags::MASQ | flags::SEQ_MASK,
        seq: Some((
            SeqAdjust {
                init_seq: 1,
                delta: 2,
                previous_delta: 3,
            },
            SeqAdjust {
                init_seq: 4,
                delta: 5,
                previous_delta: 6,
            },
        )),
        ..tcp_conn([198, 51, 100, 9], 40001)
    };
    let message = Message {
        syncid: 0,
        conns: vec![template.clone(), v6, sequenced, template],
    };
    let bytes = message.encode();
    // The template's record is 36 + 2 + 10 + 2 + 3 = 53 bytes; the next starts aligned.
    assert_eq!(bytes.len() % 4, 1, "the last record is not padded");
    let decoded = Message::decode(&bytes).expect("decodes");
    assert!(decoded.skipped.is_empty());
    assert_eq!(decoded.message, message);
}

#[test]
fn a_bad_header_or_record_drops_the_message() {
    let good = KERNEL_LAYOUT;
    assert_eq!(
        Message::decode(&good[..3]),
        Err(DecodeError::ShortHeader { len: 3 })
    );
    assert_eq!(
        Message::decode(&good[..40]),
        Err(DecodeError::SizeMismatch { said: 44, len: 40 })
    );
    let mut v0 = good;
    v0[5] = 0;
    assert!(matches!(
        Message::decode(&v0),
        Err(DecodeError::Version { version: 0, .. })
    ));
    let record = |bytes: &[u8]| match Message::decode(bytes) {
        Err(DecodeError::Record {
            index: 0,
            at: 8,
            reason,
        }) => reason,
        other => panic!("{other:?}"),
    };
    let mut two_records = good;
    two_records[4] = 2;
    assert!(matches!(
        Message::decode(&two_records),
        Err(DecodeError::Record {
            index: 1,
            reason: RecordError::Truncated,
            ..
        })
    ));
    let mut versioned = good;
    versioned[10] = 0x10;
    assert_eq!(record(&versioned), RecordError::Version { version: 1 });
    let mut typed = good;
    typed[8] = 2;
    assert_eq!(record(&typed), RecordError::Type { kind: 2 });
    let mut ipv6_in_ipv4_room = good;
    ipv6_in_ipv4_room[8] = TYPE_INET6;
    assert_eq!(
        record(&ipv6_in_ipv4_room),
        RecordError::Undersized { size: 36 }
    );
    let mut empty = good;
    empty[10..12].copy_from_slice(&[0, 0]);
    assert_eq!(record(&empty), RecordError::Undersized { size: 0 });
}

/// `KERNEL_LAYOUT`'s record with `option` appended (and the sizes fixed up).
fn with_option(option: &[u8]) -> Vec<u8> {
    let mut bytes = KERNEL_LAYOUT.to_vec();
    bytes.extend_from_slice(option);
    let record = (36 + option.len()) as u16;
    bytes[10..12].copy_from_slice(&record.to_be_bytes());
    let total = bytes.len() as u16;
    bytes[2..4].copy_from_slice(&total.to_be_bytes());
    bytes
}

#[test]
fn options_are_checked_as_the_kernel_checks_them() {
    let reason = |bytes: &[u8]| match Message::decode(bytes) {
        Err(DecodeError::Record { reason, .. }) => Some(reason),
        Err(other) => panic!("{other}"),
        Ok(_) => None,
    };
    assert_eq!(
        reason(&with_option(&[OPT_SEQ_DATA, 4, 0, 0, 0, 0])),
        Some(RecordError::OptionLength {
            option: OPT_SEQ_DATA,
            len: 4
        })
    );
    assert_eq!(
        reason(&with_option(&[OPT_PE_NAME, 0])),
        Some(RecordError::OptionOverrun {
            option: OPT_PE_NAME
        })
    );
    assert_eq!(
        reason(&with_option(&[OPT_PE_NAME, 9, b's'])),
        Some(RecordError::OptionOverrun {
            option: OPT_PE_NAME
        })
    );
    assert_eq!(
        reason(&with_option(&[OPT_PE_NAME, 1, b's', OPT_PE_NAME, 1, b'x'])),
        Some(RecordError::OptionTwice {
            option: OPT_PE_NAME
        })
    );
    let long_name = [&[OPT_PE_NAME, 17][..], &[b'n'; 17]].concat();
    assert_eq!(
        reason(&with_option(&long_name)),
        Some(RecordError::OptionLength {
            option: OPT_PE_NAME,
            len: 17
        })
    );
    // Persistence-engine data needs its engine's name; a name alone is ignored.
    let unnamed = Message::decode(&with_option(&[OPT_PE_DATA, 2, 1, 2])).expect("decodes");
    assert_eq!(unnamed.skipped[0].reason, SkipReason::PeDataWithoutName);
    let name_alone =
        Message::decode(&with_option(&[OPT_PE_NAME, 3, b's', b'i', b'p'])).expect("decodes");
    assert!(name_alone.message.conns[0].pe_name.is_empty());
    // An unknown option marked skippable is skipped; the record stands.
    let optional = Message::decode(&with_option(&[OPT_F_PARAM | 9, 2, 0, 0])).expect("decodes");
    assert_eq!(optional.message.conns.len(), 1);
    // An unknown mandatory one skips the record alone, before options after it are read.
    let mandatory = Message::decode(&with_option(&[9, 1, 0, OPT_SEQ_DATA, 1, 0])).expect("decodes");
    assert!(mandatory.message.conns.is_empty());
    assert_eq!(
        mandatory.skipped,
        vec![Skipped {
            index: 0,
            reason: SkipReason::MandatoryOption { option: 9 }
        }]
    );
}

#[test]
fn records_the_kernel_would_skip_are_skipped_alone() {
    let icmp = SyncConn {
        protocol: 1,
        ..tcp_conn([198, 51, 100, 1], 1)
    };
    let bad_state = SyncConn {
        state: 11,
        ..tcp_conn([198, 51, 100, 2], 2)
    };
    let udp_state = SyncConn {
        protocol: PROTO_UDP,
        state: 1,
        ..tcp_conn([198, 51, 100, 3], 3)
    };
    // A template's state is not checked.
    let template = SyncConn {
        flags: flags::TEMPLATE,
        state: 40,
        ..tcp_conn([198, 51, 100, 4], 0)
    };
    let good = tcp_conn([198, 51, 100, 5], 5);
    let message = Message {
        syncid: 3,
        conns: vec![icmp, bad_state, udp_state, template.clone(), good.clone()],
    };
    let decoded = Message::decode(&message.encode()).expect("decodes");
    assert_eq!(decoded.message.conns, vec![template, good]);
    let reasons: Vec<_> = decoded
        .skipped
        .iter()
        .map(|s| (s.index, s.reason))
        .collect();
    assert_eq!(
        reasons,
        vec![
            (0, SkipReason::Protocol { protocol: 1 }),
            (
                1,
                SkipReason::State {
                    protocol: PROTO_TCP,
                    state: 11
                }
            ),
            (
                2,
                SkipReason::State {
                    protocol: PROTO_UDP,
                    state: 1
                }
            ),
        ]
    );
}

#[test]
fn pack_fills_messages_up_to_maxlen_and_255_records() {
    let conns: Vec<SyncConn> = (0..600u16)
        .map(|i| tcp_conn([198, 51, (i >> 8) as u8, i as u8], i))
        .collect();
    // 1472 bytes (a 1500-byte MTU's UDP payload): 8 + 40 records of 36.
    let messages = pack(9, &conns, 1472);
    assert!(messages.iter().all(|m| m.encode().len() <= 1472));
    assert_eq!(messages[0].conns.len(), 40);
    let again: Vec<SyncConn> = messages.iter().flat_map(|m| m.conns.clone()).collect();
    assert_eq!(again, conns);
    // A large maxlen: the record count limits.
    let messages = pack(9, &conns, 65000);
    let counts: Vec<usize> = messages.iter().map(|m| m.conns.len()).collect();
    assert_eq!(counts, vec![255, 255, 90]);
    for message in &messages {
        let bytes = message.encode();
        assert_eq!(Message::decode(&bytes).expect("decodes").message, *message);
    }
}

fn arb_ends() -> impl Strategy<Value = Ends> {
    prop_oneof![
        any::<([u8; 4], [u8; 4], [u8; 4])>().prop_map(|(c, v, r)| Ends::V4 {
            client: c.into(),
            vip: v.into(),
            real: r.into(),
        }),
        any::<([u8; 16], [u8; 16], [u8; 16])>().prop_map(|(c, v, r)| Ends::V6 {
            client: c.into(),
            vip: v.into(),
            real: r.into(),
        }),
    ]
}

fn arb_seq() -> impl Strategy<Value = SeqAdjust> {
    any::<(u32, u32, u32)>().prop_map(|(init_seq, delta, previous_delta)| SeqAdjust {
        init_seq,
        delta,
        previous_delta,
    })
}

fn arb_conn() -> impl Strategy<Value = SyncConn> {
    (
        (
            prop_oneof![Just(PROTO_TCP), Just(PROTO_UDP), Just(PROTO_SCTP)],
            any::<u32>(),
            any::<u16>(),
        ),
        arb_ends(),
        any::<(u16, u16, u16, u32, u32)>(),
        proptest::option::of((arb_seq(), arb_seq())),
        proptest::collection::vec(any::<u8>(), 0..40),
        proptest::collection::vec(any::<u8>(), 0..=16),
    )
        .prop_map(
            |(
                (protocol, flag_bits, state),
                ends,
                (cport, vport, dport, fwmark, timeout),
                seq,
                pe_data,
                pe_name,
            )| {
                let template = flag_bits & 1 == 0;
                SyncConn {
                    protocol,
                    flags: (flag_bits & !flags::TEMPLATE)
                        | if template { flags::TEMPLATE } else { 0 },
                    state: if template {
                        state
                    } else {
                        state % state_count(protocol).unwrap_or(1)
                    },
                    ends,
                    client_port: cport,
                    vip_port: vport,
                    real_port: dport,
                    fwmark,
                    timeout_secs: timeout,
                    seq,
                    // Data and name travel together.
                    pe_name: match (pe_data.is_empty(), pe_name.is_empty()) {
                        (true, _) => Vec::new(),
                        (false, true) => b"sip".to_vec(),
                        (false, false) => pe_name,
                    },
                    pe_data,
                }
            },
        )
}

proptest! {
    #[test]
    fn any_records_round_trip_through_packed_messages(
        syncid in any::<u8>(),
        conns in proptest::collection::vec(arb_conn(), 0..60),
        maxlen in 200usize..3000,
    ) {
        let messages = pack(syncid, &conns, maxlen);
        let mut again = Vec::new();
        for message in &messages {
            let bytes = message.encode();
            prop_assert!(bytes.len() <= maxlen.max(HEADER_LEN + 4 + 72 + 2 * 2 + 24 + 40 + 16));
            let decoded = Message::decode(&bytes).expect("decodes");
            prop_assert!(decoded.skipped.is_empty());
            prop_assert_eq!(decoded.message.syncid, syncid);
            again.extend(decoded.message.conns);
        }
        prop_assert_eq!(again, conns);
    }
}

/// Bytes from a hex dump (whitespace ignored).
fn from_hex(text: &str) -> Vec<u8> {
    let digits: Vec<u8> = text.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    digits
        .chunks(2)
        .map(|pair| u8::from_str_radix(std::str::from_utf8(pair).expect("ascii"), 16).expect("hex"))
        .collect()
}

#[test]
fn a_message_of_the_kernels_master_reads_and_encodes_back_byte_for_byte() {
    let captured = from_hex(include_str!("captured/kernel-6.1-master-dr.hex"));
    let decoded = Message::decode(&captured).expect("decodes");
    assert!(decoded.skipped.is_empty());
    assert_eq!(decoded.message.syncid, 51);
    assert_eq!(decoded.message.conns.len(), 6);
    let mut reals = std::collections::BTreeSet::new();
    for conn in &decoded.message.conns {
        // ESTABLISHED TCP through direct routing, the kernel's NOOUTPUT flag (a DR
        // connection's replies do not pass the director), 900 s left.
        assert_eq!(conn.protocol, 6);
        assert_eq!(conn.flags, flags::DROUTE | flags::NOOUTPUT);
        assert_eq!(conn.state, 1);
        assert_eq!((conn.vip_port, conn.real_port), (80, 80));
        assert_eq!((conn.fwmark, conn.timeout_secs), (0, 900));
        assert_eq!((conn.seq, conn.pe_name.len()), (None, 0));
        let Ends::V4 { client, vip, real } = conn.ends else {
            panic!("IPv4: {conn:?}");
        };
        assert_eq!(
            (client, vip),
            ([10, 0, 0, 2].into(), [10, 0, 0, 100].into())
        );
        reals.insert(real);
    }
    assert_eq!(
        reals.into_iter().collect::<Vec<_>>(),
        [Ipv4Addr::new(10, 0, 0, 11), Ipv4Addr::new(10, 0, 0, 12)]
    );
    assert_eq!(decoded.message.encode(), captured);
}

#[test]
fn templates_of_the_kernels_master_read_and_encode_back_byte_for_byte() {
    let captured = from_hex(include_str!("captured/kernel-6.1-master-dr-persistent.hex"));
    let decoded = Message::decode(&captured).expect("decodes");
    assert!(decoded.skipped.is_empty());
    let (templates, conns): (Vec<_>, Vec<_>) = decoded
        .message
        .conns
        .iter()
        .partition(|conn| conn.flags & flags::TEMPLATE != 0);
    assert!(!templates.is_empty() && !conns.is_empty());
    for template in &templates {
        assert_eq!(
            template.flags,
            flags::TEMPLATE | flags::INACTIVE | flags::NOOUTPUT | flags::DROUTE
        );
        // NONE until a connection through it was established, then ASSURED.
        assert!(template.state <= 1, "{template:?}");
        assert_eq!((template.client_port, template.vip_port), (0, 80));
        assert_eq!(template.timeout_secs, 300);
        assert_eq!(template.ends.client(), IpAddr::from([10, 0, 0, 2]));
    }
    assert_eq!(decoded.message.encode(), captured);
}
