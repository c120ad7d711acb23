//! Regression tests for what libFuzzer found on the query path (issue 15):
//! each reproducer packet goes to the real server over UDP and TCP, and
//! through both answer paths in-process, and must get the same correct
//! answer whichever path takes it.

use std::net::IpAddr;

use meridian::dns::{Transport, handle};

use crate::harness::{handle_fast, handle_slow};

use crate::harness::{Rng, TestServer, repo, tcp_exchange, udp_exchange};

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// `www.gslb.example.com A` with ECS family 1, source /24 and four address
/// octets (one too many), then one stray byte after the OPT record.
const TOO_MANY_OCTETS: &str = "abcd00000001000000000001037777770467736c62076578616d706c6503636f6d000001000100002904d000000000000c00080008000118005102450000";

/// The same with two address octets (one too few), then one stray byte.
const TOO_FEW_OCTETS: &str = "abcd00000001000000000001037777770467736c62076578616d706c6503636f6d000001000100002904d000000000000a0008000600011800510200";

/// A wire name of `total` bytes made of labels of `ch`.
fn long_name(ch: u8, labels: &[usize]) -> Vec<u8> {
    let mut n = Vec::new();
    for &len in labels {
        n.push(len as u8);
        n.extend(std::iter::repeat_n(ch, len));
    }
    n.push(0);
    n
}

/// No EDNS, ID 0x1234, two questions of 252-byte names (labels of 63, 63,
/// 63 and 58 bytes), type A, class IN.
fn two_long_questions() -> Vec<u8> {
    let mut p = vec![0x12, 0x34, 0x00, 0x00, 0, 2, 0, 0, 0, 0, 0, 0];
    for ch in [b'a', b'b'] {
        let name = long_name(ch, &[63, 63, 63, 58]);
        assert_eq!(name.len(), 252, "a 252-byte name on the wire");
        p.extend(name);
        p.extend([0, 1, 0, 1]);
    }
    p
}

/// Header fields of a response: (rcode, QDCOUNT, ANCOUNT, NSCOUNT, ARCOUNT).
fn header(r: &[u8]) -> (u8, u16, u16, u16, u16) {
    let n = |i: usize| u16::from_be_bytes([r[i], r[i + 1]]);
    (r[3] & 0x0f, n(4), n(6), n(8), n(10))
}

/// The FORMERR both paths owe a query whose ECS option is invalid: the
/// question as sent, then an empty OPT (payload 1232, no options).
fn assert_formerr_with_question_and_opt(query: &[u8], resp: &[u8]) {
    assert_eq!(resp[..2], query[..2], "ID echoed");
    assert_eq!(resp[2] & 0x80, 0x80, "QR set");
    assert_eq!(header(resp), (1, 1, 0, 0, 1), "FORMERR, question, OPT");
    let qlen = 26; // www.gslb.example.com: 22-byte name + type + class
    assert_eq!(resp[12..12 + qlen], query[12..12 + qlen], "the question");
    assert_eq!(
        &resp[12 + qlen..],
        &[0, 0, 41, 0x04, 0xd0, 0, 0, 0, 0, 0, 0],
        "an empty OPT record, no ECS"
    );
}

#[tokio::test]
async fn ecs_with_the_wrong_octet_count_gets_one_formerr_on_every_path() {
    let s = TestServer::example().await;
    let snap = s.server.snapshot();
    let src: IpAddr = "127.0.0.1".parse().unwrap();
    for reproducer in [TOO_MANY_OCTETS, TOO_FEW_OCTETS] {
        let with_stray_byte = hex(reproducer);
        let clean = &with_stray_byte[..with_stray_byte.len() - 1];
        // The clean packet is the fast path's; the stray byte sends it to
        // the general path. Both must say FORMERR, in the same bytes.
        let mut fast = Vec::new();
        assert!(handle_fast(&snap, clean, src, Transport::Udp, &mut fast));
        assert_formerr_with_question_and_opt(clean, &fast);
        let slow = handle_slow(&snap, &with_stray_byte, src, Transport::Udp).unwrap();
        assert_eq!(slow, fast, "general path, stray byte: {reproducer}");
        let slow_clean = handle_slow(&snap, clean, src, Transport::Udp).unwrap();
        assert_eq!(slow_clean, fast, "general path, clean: {reproducer}");

        // A second additional record (an A record for the root) after
        // the OPT: the same FORMERR from either path.
        let mut extra = clean.to_vec();
        extra[11] = 2;
        extra.extend([0, 0, 1, 0, 1, 0, 0, 0, 0, 0, 4, 192, 0, 2, 1]);
        let mut out = Vec::new();
        assert!(handle_fast(&snap, &extra, src, Transport::Udp, &mut out));
        assert_eq!(out, fast);
        assert_eq!(
            handle_slow(&snap, &extra, src, Transport::Udp).unwrap(),
            fast
        );

        // And over the wire, both transports.
        for packet in [clean, &with_stray_byte[..], &extra[..]] {
            let udp = udp_exchange(s.addr, packet).await;
            assert_formerr_with_question_and_opt(packet, &udp);
            let tcp = tcp_exchange(s.addr, packet).await;
            assert_formerr_with_question_and_opt(packet, &tcp);
        }
    }
}

#[tokio::test]
async fn several_questions_get_formerr_with_at_most_the_first() {
    let s = TestServer::example().await;
    let packet = two_long_questions();
    for resp in [
        udp_exchange(s.addr, &packet).await,
        tcp_exchange(s.addr, &packet).await,
    ] {
        assert!(
            resp.len() <= 512,
            "{} bytes to a client without EDNS",
            resp.len()
        );
        assert_eq!(resp[..2], [0x12, 0x34]);
        assert_eq!(header(&resp), (1, 1, 0, 0, 0), "FORMERR with one question");
        assert_eq!(resp[12..], packet[12..12 + 256], "the first question");
    }
    // No questions at all: FORMERR with none.
    let empty = [0xbe, 0xef, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    let resp = udp_exchange(s.addr, &empty).await;
    assert_eq!(header(&resp), (1, 0, 0, 0, 0));
    assert_eq!(resp.len(), 12);
}

/// The UDP limit is a property of every response: whatever the
/// questions, names and EDNS payload size, no UDP response is larger
/// than 512 bytes without EDNS or the client's payload size (at least
/// 512, at most the server's) with it.
#[test]
fn no_udp_response_exceeds_the_client_limit() {
    let (_, snap) = meridian::load(&repo().join("meridian.toml")).unwrap();
    let src: IpAddr = "127.0.0.1".parse().unwrap();
    let names: [&[u8]; 4] = [
        b"\x03www\x04gslb\x07example\x03com\x00",
        b"\x04gslb\x07example\x03com\x00",
        b"\x03www\x07example\x03org\x00",
        b"\x05nope1\x04gslb\x07example\x03com\x00",
    ];
    let mut rng = Rng(0x5eed_1234_abcd_0042);
    let mut largest = 0;
    for i in 0..20_000u32 {
        let questions = 1 + rng.below(4);
        let mut p = vec![
            (i >> 8) as u8,
            i as u8,
            0,
            0,
            0,
            questions as u8,
            0,
            0,
            0,
            0,
            0,
            0,
        ];
        for _ in 0..questions {
            if rng.below(2) == 0 {
                p.extend_from_slice(names[rng.below(names.len())]);
            } else {
                let labels: Vec<usize> = (0..1 + rng.below(4)).map(|_| 1 + rng.below(63)).collect();
                let total: usize = labels.iter().map(|l| l + 1).sum();
                let labels = if total > 254 {
                    &labels[..3]
                } else {
                    &labels[..]
                };
                p.extend(long_name(b'a' + rng.below(26) as u8, labels));
            }
            let qtype = *rng.pick(&[1u16, 28, 2, 6, 255, 15, 16]);
            p.extend(qtype.to_be_bytes());
            p.extend([0, 1]);
        }
        let payload = match rng.below(3) {
            0 => None,
            1 => Some(512u16),
            _ => Some(rng.below(4096) as u16),
        };
        if let Some(size) = payload {
            p[11] = 1;
            p.extend([0, 0, 41]);
            p.extend(size.to_be_bytes());
            p.extend([0, 0, 0, 0, 0, 0]);
        }
        let limit = payload.map_or(512, |s| usize::from(s.clamp(512, snap.max_udp_payload)));
        let resp = handle(&snap, &p, src, Transport::Udp).expect("queries are answered");
        assert!(
            resp.len() <= limit,
            "{} bytes > {limit} for {}",
            resp.len(),
            p.iter().map(|b| format!("{b:02x}")).collect::<String>()
        );
        largest = largest.max(resp.len());
    }
    // A FORMERR with one 252-byte question is 268 bytes; with every
    // question echoed it was up to 1,036.
    assert!(largest >= 260, "long questions were sent ({largest})");
}

/// Found by the `packet` fuzz target: an OPT record whose owner is a
/// compression pointer, not the root. FORMERR, with an OPT like every
/// response to a query that has one, on both paths.
#[test]
fn an_opt_record_not_owned_by_the_root_gets_formerr_with_opt() {
    let (_, snap) = meridian::load(&repo().join("meridian.toml")).unwrap();
    let src: IpAddr = "127.0.0.1".parse().unwrap();
    // www.gslb.example.com A, then OPT owned by a pointer to offset 2.
    let mut p = hex("fce300000001000000000001");
    p.extend(hex("037777770467736c62076578616d706c6503636f6d0000010001"));
    p.extend(hex("c002002904d000000000000000"));
    for transport in [Transport::Udp, Transport::Tcp] {
        let resp = handle(&snap, &p, src, transport).unwrap();
        assert_eq!(
            header(&resp),
            (1, 1, 0, 0, 1),
            "FORMERR with question and OPT"
        );
        assert_eq!(&resp[12 + 26..], &[0, 0, 41, 0x04, 0xd0, 0, 0, 0, 0, 0, 0]);
        let mut fast = Vec::new();
        if handle_fast(&snap, &p, src, transport, &mut fast) {
            assert_eq!(fast, resp);
        }
        assert_eq!(handle_slow(&snap, &p, src, transport).unwrap(), resp);
    }
}

/// Found by the `fast_vs_general` fuzz target: NXDOMAIN for a name of 63
/// or more labels. hickory's encoder keeps at most 64 names to compress
/// against, so the general path spells out the SOA names that the fast
/// path's template points at; both must send the same bytes.
#[test]
fn names_with_very_many_labels_get_the_same_nxdomain_from_both_paths() {
    let (_, snap) = meridian::load(&repo().join("meridian.toml")).unwrap();
    let src: IpAddr = "127.0.0.1".parse().unwrap();
    for n in [40usize, 62, 63, 70, 100, 110] {
        let mut p = hex("0100000000010000000000");
        p.push(1); // ARCOUNT 1
        for _ in 0..n {
            p.extend([1, b'a']);
        }
        p.extend(hex("0467736c62076578616d706c6503636f6d00"));
        p.extend(hex("00010001"));
        p.extend(hex("00002904d0000000000000"));
        let slow = handle_slow(&snap, &p, src, Transport::Udp).unwrap();
        assert_eq!(header(&slow).0, 3, "NXDOMAIN for {n} labels");
        let mut fast = Vec::new();
        if handle_fast(&snap, &p, src, Transport::Udp, &mut fast) {
            assert_eq!(fast, slow, "{n} labels");
        }
    }
}

/// Finding 1 of the `opt_ecs` fuzz target (issue 11; seed
/// `fuzz/corpus/opt_ecs/ecs4-scope-in-query.bin`): an ECS option whose
/// SCOPE PREFIX-LENGTH is not 0 in a query is answered as if it were
/// valid. RFC 7871 §6: "In queries, it MUST be set to 0"; BIND answers
/// FORMERR. Both paths must send the FORMERR the envelope writes for any
/// other invalid ECS option: the question, then an empty OPT record.
#[tokio::test]
async fn ecs_with_a_scope_in_the_query_gets_formerr() {
    // www.gslb.example.com A; OPT (payload 1232) with ECS family 1,
    // source /24, scope /24, address 8.8.8.
    let mut p = hex("021800000001000000000001");
    p.extend(hex("037777770467736c62076578616d706c6503636f6d0000010001"));
    p.extend(hex("00002904d000000000000b"));
    p.extend(hex("0008000700011818080808"));
    let s = TestServer::example().await;
    let snap = s.server.snapshot();
    let src: IpAddr = "127.0.0.1".parse().unwrap();
    for transport in [Transport::Udp, Transport::Tcp] {
        let resp = handle(&snap, &p, src, transport).unwrap();
        assert_formerr_with_question_and_opt(&p, &resp);
        assert_eq!(handle_slow(&snap, &p, src, transport).unwrap(), resp);
    }
    assert_formerr_with_question_and_opt(&p, &udp_exchange(s.addr, &p).await);
    assert_formerr_with_question_and_opt(&p, &tcp_exchange(s.addr, &p).await);
}

/// Finding 2 (packet, after the merge of issue 11's work): a question
/// whose name is compressed hid the OPT record from the envelope, so an
/// EDNS version 255 query got REFUSED without OPT instead of BADVERS.
#[test]
fn a_compressed_question_does_not_hide_the_opt_record() {
    let (_, snap) = meridian::load(&crate::harness::repo().join("meridian.toml")).unwrap();
    let src: std::net::IpAddr = "127.0.0.1".parse().unwrap();
    let p =
        hex("031a0000000100000000000103777762c0000039000100002904d0ebffffff0000000021000808080800");
    let resp = handle(&snap, &p, src, Transport::Udp).expect("answered");
    // BADVERS (16): rcode 0 in the header, 1 in the OPT's extended rcode.
    assert_eq!(resp[3] & 0x0f, 0);
    let ar = u16::from_be_bytes([resp[10], resp[11]]);
    assert_eq!(ar, 1, "the OPT record is there");
    let opt = &resp[resp.len() - 11..];
    assert_eq!(&opt[..3], &[0, 0, 41]);
    assert_eq!(opt[5], 1, "extended rcode: BADVERS");
}
