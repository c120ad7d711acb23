//! The limiter's logic with injected time: no sockets, no clock.

use std::net::IpAddr;
use std::time::Duration;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::{A, NS, SOA};
use hickory_proto::rr::{Name, RData, Record, RecordType};

use super::*;

fn config() -> RrlConfig {
    RrlConfig {
        responses_per_second: 10,
        nxdomains_per_second: 5,
        referrals_per_second: 4,
        errors_per_second: 3,
        window: 5,
        slip: 2,
        ..RrlConfig::default()
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn response(name: &str, qtype: RecordType, build: impl FnOnce(&mut Message)) -> Vec<u8> {
    let mut m = Message::new(7, MessageType::Response, OpCode::Query);
    m.queries
        .push(Query::query(Name::from_ascii(name).unwrap(), qtype));
    let mut edns = Edns::new();
    edns.set_max_payload(1232);
    m.edns = Some(edns);
    build(&mut m);
    m.to_vec().unwrap()
}

fn soa() -> Record {
    let n = Name::from_ascii("t.example.").unwrap();
    Record::from_rdata(
        n.clone(),
        60,
        RData::SOA(SOA::new(n.clone(), n, 1, 2, 3, 4, 5)),
    )
}

fn answer(name: &str) -> Vec<u8> {
    response(name, RecordType::A, |m| {
        m.metadata.authoritative = true;
        m.answers.push(Record::from_rdata(
            Name::from_ascii(name).unwrap(),
            30,
            RData::A(A::new(192, 0, 2, 1)),
        ));
    })
}

fn nodata(name: &str) -> Vec<u8> {
    response(name, RecordType::MX, |m| {
        m.metadata.authoritative = true;
        m.authorities.push(soa());
    })
}

fn nxdomain(name: &str) -> Vec<u8> {
    response(name, RecordType::A, |m| {
        m.metadata.authoritative = true;
        m.metadata.response_code = ResponseCode::NXDomain;
        m.authorities.push(soa());
    })
}

fn referral(name: &str) -> Vec<u8> {
    response(name, RecordType::A, |m| {
        m.authorities.push(Record::from_rdata(
            Name::from_ascii("child.t.example.").unwrap(),
            3600,
            RData::NS(NS(Name::from_ascii("ns.child.t.example.").unwrap())),
        ));
        m.additionals.push(Record::from_rdata(
            Name::from_ascii("ns.child.t.example.").unwrap(),
            3600,
            RData::A(A::new(192, 0, 2, 53)),
        ));
    })
}

fn error(code: ResponseCode) -> Vec<u8> {
    response("x.example.", RecordType::A, |m| {
        m.metadata.response_code = code;
    })
}

/// Sends `n` copies of `packet` from `client` at `at` and tallies the
/// verdicts: (sent whole, slipped, dropped).
fn burst(
    l: &Limiter,
    at: Duration,
    client: &str,
    packet: &[u8],
    n: usize,
) -> (usize, usize, usize) {
    let batch = l.batch_at(at).expect("enabled");
    let mut tally = (0, 0, 0);
    for _ in 0..n {
        let before = l.stats().slipped;
        let mut out = packet.to_vec();
        if !batch.check(ip(client), &mut out, false) {
            tally.2 += 1;
        } else if l.stats().slipped == before {
            assert_eq!(out, packet, "sent whole");
            tally.0 += 1;
        } else {
            tally.1 += 1;
        }
    }
    tally
}

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s)
}

#[test]
fn lower8_folds_ascii_letters_only() {
    for b in 0..=255u8 {
        for pos in 0..8 {
            let mut bytes = *b"Ab.Z-z0\xff";
            bytes[pos] = b;
            let want: Vec<u8> = bytes.iter().map(u8::to_ascii_lowercase).collect();
            let got = lower8(u64::from_le_bytes(bytes)).to_le_bytes();
            assert_eq!(got.as_slice(), want.as_slice(), "byte {b:#x} at {pos}");
        }
    }
}

#[test]
fn cells_round_trip() {
    for (t, bal, slips) in [
        (0, 0, 0),
        (T_MASK, BAL_MAX, 15),
        (12345, -BAL_MAX, 9),
        (7, -16, 1),
        (1 << 21, 160, 0),
    ] {
        let cell = encode(1023, t, bal, slips);
        assert_eq!((cell >> FP_SHIFT) & FP_MASK, 1023);
        assert_eq!(decode(cell), (t, bal, slips));
    }
}

#[test]
fn a_burst_of_rate_then_drops_and_slips() {
    let l = Limiter::new(&config());
    let a = answer("www.t.example.");
    // The balance starts at one second's credit (10 responses): 10 pass;
    // of the 10 limited, every 2nd slips.
    assert_eq!(burst(&l, secs(1.0), "192.0.2.1", &a, 20), (10, 5, 5));
    assert_eq!(
        l.stats(),
        RrlStats {
            dropped: 5,
            slipped: 5
        }
    );
}

#[test]
fn debt_of_a_flood_lasts_one_window() {
    let mut c = config();
    c.slip = 0;
    let a = answer("www.t.example.");
    let l = Limiter::new(&c);
    // A flood of 100 at t=0: 10 pass, and the debt stops at
    // window x rate = 50 responses.
    assert_eq!(burst(&l, secs(0.0), "192.0.2.1", &a, 100), (10, 0, 90));
    // Credit comes back at 10/s: after 4.9 s (78 ticks of 1/16 s, 48.75
    // responses) the balance is still negative.
    assert_eq!(burst(&l, secs(4.9), "192.0.2.1", &a, 1), (0, 0, 1));

    let l = Limiter::new(&c);
    assert_eq!(burst(&l, secs(0.0), "192.0.2.1", &a, 100), (10, 0, 90));
    // The whole window plus a little: the debt is paid, and the 1.9
    // responses' credit beyond it buys exactly one.
    assert_eq!(burst(&l, secs(5.2), "192.0.2.1", &a, 2), (1, 0, 1));
    // After a long quiet spell the balance is capped at one second.
    assert_eq!(burst(&l, secs(60.0), "192.0.2.1", &a, 20), (10, 0, 10));
}

#[test]
fn partial_seconds_credit_partial_responses() {
    let mut c = config();
    c.slip = 0;
    c.responses_per_second = 16;
    let l = Limiter::new(&c);
    let a = answer("www.t.example.");
    assert_eq!(burst(&l, secs(0.0), "192.0.2.1", &a, 17), (16, 0, 1));
    // The 17th left a debt of 1; 1/4 s at 16/s credits 4: 3 pass.
    assert_eq!(burst(&l, secs(0.25), "192.0.2.1", &a, 6), (3, 0, 3));
}

#[test]
fn slip_cadence_follows_the_setting() {
    let a = answer("www.t.example.");
    for (slip, want) in [(0u8, (10, 0, 30)), (1, (10, 30, 0)), (3, (10, 10, 20))] {
        let mut c = config();
        c.slip = slip;
        let l = Limiter::new(&c);
        assert_eq!(
            burst(&l, secs(0.0), "192.0.2.1", &a, 40),
            want,
            "slip {slip}"
        );
    }
}

#[test]
fn kinds_have_separate_budgets() {
    let l = Limiter::new(&config());
    let c = "192.0.2.1";
    let t = secs(0.0);
    let (sent, _, _) = burst(&l, t, c, &answer("www.t.example."), 50);
    assert_eq!(sent, 10);
    // Each other kind still has its own full budget.
    assert_eq!(burst(&l, t, c, &nxdomain("a.t.example."), 50).0, 5);
    assert_eq!(burst(&l, t, c, &referral("a.child.t.example."), 50).0, 4);
    assert_eq!(burst(&l, t, c, &error(ResponseCode::Refused), 50).0, 3);
    // Errors of any rcode share one budget.
    assert_eq!(burst(&l, t, c, &error(ResponseCode::FormErr), 5).0, 0);
}

#[test]
fn answers_are_keyed_by_question_case_insensitively() {
    let l = Limiter::new(&config());
    let t = secs(0.0);
    let c = "192.0.2.1";
    assert_eq!(burst(&l, t, c, &answer("www.t.example."), 10).0, 10);
    // The same question in another case (0x20 randomisation) is the same
    // key: over the limit.
    assert_eq!(burst(&l, t, c, &answer("WwW.T.eXample."), 1).0, 0);
    // Another name or another type is a new key.
    assert_eq!(burst(&l, t, c, &answer("api.t.example."), 10).0, 10);
    assert_eq!(burst(&l, t, c, &nodata("www.t.example."), 10).0, 10);
    // NXDOMAIN is keyed by prefix only: random names do not escape.
    assert_eq!(burst(&l, t, c, &nxdomain("r1.t.example."), 5).0, 5);
    assert_eq!(burst(&l, t, c, &nxdomain("r2.t.example."), 1).0, 0);
}

#[test]
fn clients_are_grouped_by_prefix() {
    let l = Limiter::new(&config());
    let t = secs(0.0);
    let a = answer("www.t.example.");
    assert_eq!(burst(&l, t, "192.0.2.1", &a, 10).0, 10);
    // Same /24: same budget, already spent.
    assert_eq!(burst(&l, t, "192.0.2.200", &a, 1).0, 0);
    // Next /24: its own.
    assert_eq!(burst(&l, t, "192.0.3.1", &a, 10).0, 10);
    // IPv6: /56 by default.
    assert_eq!(burst(&l, t, "2001:db8:0:100::1", &a, 10).0, 10);
    assert_eq!(burst(&l, t, "2001:db8:0:1ff::2", &a, 1).0, 0);
    assert_eq!(burst(&l, t, "2001:db8:0:200::1", &a, 10).0, 10);
    // IPv4-mapped IPv6 is IPv4: grouped by /24, not by a /56 that would
    // cover every IPv4 client.
    assert_eq!(burst(&l, t, "::ffff:192.0.2.9", &a, 1).0, 0);
    assert_eq!(burst(&l, t, "::ffff:192.0.4.1", &a, 10).0, 10);

    let mut c = config();
    c.ipv4_prefix_length = 32;
    c.ipv6_prefix_length = 128;
    let l = Limiter::new(&c);
    assert_eq!(burst(&l, t, "192.0.2.1", &a, 10).0, 10);
    assert_eq!(burst(&l, t, "192.0.2.2", &a, 10).0, 10);
    assert_eq!(burst(&l, t, "2001:db8::1", &a, 10).0, 10);
    assert_eq!(burst(&l, t, "2001:db8::2", &a, 10).0, 10);
}

#[test]
fn exempt_clients_are_never_limited() {
    let mut c = config();
    c.exempt = vec!["198.51.100.0/24".parse().unwrap()];
    let l = Limiter::new(&c);
    let a = answer("www.t.example.");
    assert_eq!(burst(&l, secs(0.0), "198.51.100.9", &a, 100), (100, 0, 0));
    assert_eq!(burst(&l, secs(0.0), "198.51.101.9", &a, 100).0, 10);
    // A client with a valid cookie (`exempt` input) likewise.
    let batch = l.batch_at(secs(0.0)).unwrap();
    for _ in 0..100 {
        let mut out = a.clone();
        assert!(batch.check(ip("198.51.101.9"), &mut out, true));
        assert_eq!(out, a);
    }
}

#[test]
fn off_or_zero_rate_means_no_limit() {
    let mut c = config();
    c.enabled = false;
    assert!(Limiter::new(&c).batch_at(secs(0.0)).is_none());
    let mut c = config();
    c.responses_per_second = 0;
    let l = Limiter::new(&c);
    assert_eq!(
        burst(&l, secs(0.0), "192.0.2.1", &answer("w.t.example."), 1000).0,
        1000
    );
    assert_eq!(
        burst(&l, secs(0.0), "192.0.2.1", &nxdomain("n.t.example."), 100).0,
        5
    );
    // A reload applies new limits to the same table.
    c.enabled = false;
    l.configure(&c);
    assert!(l.batch_at(secs(0.0)).is_none());
}

#[test]
fn clock_skew_between_threads_does_not_refill_or_go_back() {
    let mut c = config();
    c.slip = 0;
    let l = Limiter::new(&c);
    let a = answer("www.t.example.");
    assert_eq!(burst(&l, secs(10.0), "192.0.2.1", &a, 10).0, 10);
    // A thread whose batch started a little earlier: no credit, no reset.
    assert_eq!(burst(&l, secs(9.5), "192.0.2.1", &a, 1).0, 0);
    // A key idle for longer than half the clock's wrap (36 h) is treated
    // as idle, not as being in the future: full credit.
    assert_eq!(
        burst(&l, secs(10.0 + 40.0 * 3600.0), "192.0.2.1", &a, 12).0,
        10
    );
}

#[test]
fn threads_share_one_budget() {
    let mut c = config();
    c.slip = 0;
    c.responses_per_second = 1000;
    let l = Limiter::new(&c);
    let a = answer("www.t.example.");
    let sent: usize = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|_| s.spawn(|| burst(&l, secs(3.0), "192.0.2.1", &a, 2000).0))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).sum()
    });
    assert_eq!(sent, 1000, "every compare-exchange charged exactly once");
}

#[test]
fn classification_reads_the_header() {
    let k = |r: &[u8]| classify(r).unwrap().0;
    assert_eq!(k(&answer("www.t.example.")), Kind::Answer);
    assert_eq!(k(&nodata("www.t.example.")), Kind::Answer);
    assert_eq!(k(&nxdomain("x.t.example.")), Kind::Nxdomain);
    assert_eq!(k(&referral("x.child.t.example.")), Kind::Referral);
    for code in [
        ResponseCode::FormErr,
        ResponseCode::ServFail,
        ResponseCode::Refused,
        ResponseCode::NotImp,
    ] {
        assert_eq!(k(&error(code)), Kind::Error, "{code:?}");
    }
    // BADVERS: rcode 16, whose low bits in the header are 0; no records.
    let mut badvers = error(ResponseCode::NoError);
    badvers[2] &= !FLAG_AA;
    assert_eq!(k(&badvers), Kind::Error);
    assert!(classify(&[0u8; 11]).is_none());
    // Answers to different questions hash apart; error hashes are 0.
    let h = |r: &[u8]| classify(r).unwrap().1;
    assert_ne!(h(&answer("a.t.example.")), h(&answer("b.t.example.")));
    assert_ne!(h(&answer("a.t.example.")), h(&nodata("a.t.example.")));
    assert_eq!(h(&answer("a.t.example.")), h(&answer("A.T.EXAMPLE.")));
    // Only the question counts, not what follows it, even where the
    // packet ends right after the type.
    let mut cut = answer("a.long-enough-name.t.example.");
    let whole = question_hash(&cut);
    truncate(&mut cut, true);
    assert_eq!(question_hash(&cut), whole);
    let len = cut.len();
    cut.truncate(len - 2 - 11); // no class, no OPT
    assert_eq!(question_hash(&cut), whole);
    assert_eq!(h(&error(ResponseCode::Refused)), 0);
}

#[test]
fn a_slip_keeps_header_question_and_opt_only() {
    let full = referral("a.child.t.example.");
    let mut out = full.clone();
    truncate(&mut out, true);
    assert!(out.len() < full.len());
    let m = Message::from_vec(&out).expect("a truncated response decodes");
    assert!(m.metadata.truncation);
    assert_eq!(m.metadata.id, 7);
    assert_eq!(m.queries.len(), 1);
    assert_eq!(m.queries[0].name().to_ascii(), "a.child.t.example.");
    assert!(m.answers.is_empty() && m.authorities.is_empty());
    assert!(m.additionals.is_empty(), "glue removed");
    assert_eq!(m.edns.expect("OPT kept").max_payload(), 1232);

    // Without OPT; and an error slips without TC.
    let mut plain = Message::new(9, MessageType::Response, OpCode::Query);
    plain.metadata.response_code = ResponseCode::Refused;
    plain
        .queries
        .push(Query::query(Name::from_ascii("x.").unwrap(), RecordType::A));
    let bytes = plain.to_vec().unwrap();
    let mut out = bytes.clone();
    truncate(&mut out, false);
    assert_eq!(out, bytes);

    // Garbage after the header is cut, never read past.
    let mut junk = vec![0u8; 12];
    junk[5] = 1;
    junk[7] = 3;
    junk.extend_from_slice(&[63, 1, 2]);
    truncate(&mut junk, true);
    assert_eq!(junk.len(), 12);
    assert_eq!(&junk[4..12], &[0; 8]);
}
