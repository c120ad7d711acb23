//! Third-party DNSSEC validators (Unbound, `delv`, DNSViz) against a signed
//! zone, through the harness in `tests/validators/mod.rs`.
//!
//! The zone here is signed by BIND's `dnssec-signzone` and served by NSD:
//! these tests prove that the harness tells a valid zone from a bogus one,
//! so that the same checks against Meridian's own signing mean something.
//! To point them at Meridian, build `Validators::new(meridian_addr,
//! anchor)` with the zone's DNSKEY as `anchor` and run the same checks.
//!
//! The ECS tests need an authoritative server that answers per subnet: a
//! small UDP responder in this file, unsigned, behind an Unbound that
//! treats its zone as insecure; and, signed, two NSDs serving two versions
//! of the zone signed under one key, behind a splitter that picks one by
//! the client's ECS subnet (what Meridian does with one server).
//!
//! Its own test binary: it drives system packages (unbound, nsd,
//! bind9-utils, bind9-dnsutils, dnsviz; `scripts/test.sh` installs them),
//! and fails, naming the package, when one is missing.

#![allow(unreachable_pub, missing_docs)]

mod validators;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};

use hickory_proto::op::{Edns, Message, MessageType, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::rdata::opt::{ClientSubnet, EdnsOption};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use tempfile::TempDir;
use tokio::net::UdpSocket;
use tokio::task::JoinHandle;

use validators::{Nsd, SignedZone, StubZone, TrustAnchor, Unbound, Validators};

const ZONE: &str = "signed.example.";

/// A small zone with every kind of answer the validators must accept:
/// A, AAAA, an in-zone CNAME, a wildcard; NXDOMAIN (`nope.`) and NODATA
/// (`www TXT`) are the names and types it does not have.
const ZONE_TEXT: &str = "$ORIGIN signed.example.
$TTL 300
@       IN SOA   ns1 hostmaster 1 3600 600 86400 300
@       IN NS    ns1
ns1     IN A     127.0.0.1
www     IN A     192.0.2.10
www     IN AAAA  2001:db8::10
alias   IN CNAME www
*.wild  IN A     192.0.2.20
";

/// The reference server: NSD with the zone signed by BIND, and its keys'
/// directory (kept alive as long as the server).
struct Reference {
    nsd: Nsd,
    zone: SignedZone,
    _keys: TempDir,
}

async fn reference() -> Reference {
    let keys = TempDir::new().expect("temp dir");
    let zone = validators::sign_zone(keys.path(), ZONE, ZONE_TEXT).await;
    let nsd = Nsd::start(&zone.zone, &zone.file).await;
    Reference {
        nsd,
        zone,
        _keys: keys,
    }
}

/// A trust anchor for the zone that did not sign it: a fresh key.
async fn wrong_anchor() -> TrustAnchor {
    let dir = TempDir::new().expect("temp dir");
    validators::keygen(dir.path(), ZONE).await.0
}

//------------ Unbound -------------------------------------------------------

#[tokio::test]
async fn unbound_sets_ad_on_positive_nxdomain_and_nodata_answers() {
    let r = reference().await;
    // The anchor read from the server is the key that signed the zone.
    let fetched = TrustAnchor::fetch_sep(r.nsd.addr(), ZONE).await;
    assert_eq!(fetched.ds().await, r.zone.anchor.ds().await);
    let v = Validators::new(r.nsd.addr(), fetched).await;
    let unbound = v.unbound().await;
    let log = || unbound.log();

    let a = unbound
        .query("www.signed.example.", RecordType::A, None)
        .await;
    assert_eq!(a.rcode, ResponseCode::NoError, "{a:?}\n{}", log());
    assert!(a.ad, "A answer not validated: {a:?}\n{}", log());
    assert_eq!(a.rdata(RecordType::A), ["192.0.2.10"]);

    let aaaa = unbound
        .query("www.signed.example.", RecordType::AAAA, None)
        .await;
    assert!(aaaa.ad, "{aaaa:?}");
    assert_eq!(aaaa.rdata(RecordType::AAAA), ["2001:db8::10"]);

    let cname = unbound
        .query("alias.signed.example.", RecordType::A, None)
        .await;
    assert!(cname.ad, "{cname:?}");
    assert_eq!(cname.rdata(RecordType::CNAME), ["www.signed.example."]);
    assert_eq!(cname.rdata(RecordType::A), ["192.0.2.10"]);

    // A wildcard answer is validated with the NSEC proving that the name
    // itself does not exist (RFC 4035 5.3.4).
    let wild = unbound
        .query("x.wild.signed.example.", RecordType::A, None)
        .await;
    assert!(wild.ad, "{wild:?}");
    assert_eq!(wild.rdata(RecordType::A), ["192.0.2.20"]);

    let nx = unbound
        .query("nope.signed.example.", RecordType::A, None)
        .await;
    assert_eq!(nx.rcode, ResponseCode::NXDomain, "{nx:?}");
    assert!(nx.ad, "NXDOMAIN not validated: {nx:?}\n{}", log());
    assert!(nx.answers.is_empty());

    let nodata = unbound
        .query("www.signed.example.", RecordType::TXT, None)
        .await;
    assert_eq!(nodata.rcode, ResponseCode::NoError, "{nodata:?}");
    assert!(nodata.ad, "NODATA not validated: {nodata:?}\n{}", log());
    assert!(nodata.answers.is_empty(), "{nodata:?}");
}

/// The harness can tell bogus from secure from insecure: the same server,
/// the same names, three Unbounds that differ only in their anchor.
#[tokio::test]
async fn unbound_servfails_bogus_and_leaves_insecure_without_ad() {
    let r = reference().await;
    let wrong = wrong_anchor().await;
    let bogus = Unbound::start(&[StubZone {
        zone: ZONE.to_owned(),
        server: r.nsd.addr(),
        ds: Some(wrong.ds().await),
    }])
    .await;
    for (name, qtype) in [
        ("www.signed.example.", RecordType::A),
        ("nope.signed.example.", RecordType::A),
        ("www.signed.example.", RecordType::TXT),
    ] {
        let reply = bogus.query(name, qtype, None).await;
        assert_eq!(
            reply.rcode,
            ResponseCode::ServFail,
            "{name} {qtype} with a wrong trust anchor: {reply:?}"
        );
        assert!(!reply.ad, "{reply:?}");
        assert!(reply.answers.is_empty(), "{reply:?}");
    }
    let log = bogus.log();
    assert!(
        log.contains("validation failure"),
        "Unbound's log should give the reason (val-log-level 2):\n{log}"
    );

    let insecure = Unbound::start(&[StubZone {
        zone: ZONE.to_owned(),
        server: r.nsd.addr(),
        ds: None,
    }])
    .await;
    let reply = insecure
        .query("www.signed.example.", RecordType::A, None)
        .await;
    assert_eq!(reply.rcode, ResponseCode::NoError, "{reply:?}");
    assert!(
        !reply.ad,
        "an insecure zone's answer must not be AD: {reply:?}"
    );
    assert_eq!(reply.rdata(RecordType::A), ["192.0.2.10"]);
}

//------------ delv ----------------------------------------------------------

#[tokio::test]
async fn delv_fully_validates_answers_and_denials() {
    let r = reference().await;
    let v = Validators::new(r.nsd.addr(), r.zone.anchor.clone()).await;

    for (name, qtype, want) in [
        (
            "www.signed.example.",
            RecordType::A,
            "www.signed.example. A 192.0.2.10",
        ),
        (
            "www.signed.example.",
            RecordType::AAAA,
            "www.signed.example. AAAA 2001:db8::10",
        ),
        (
            "alias.signed.example.",
            RecordType::A,
            "alias.signed.example. CNAME www.signed.example.",
        ),
        (
            "x.wild.signed.example.",
            RecordType::A,
            "x.wild.signed.example. A 192.0.2.20",
        ),
    ] {
        let d = v.delv(name, qtype).await;
        assert!(d.validated && !d.negative, "{name} {qtype}:\n{}", d.output);
        assert!(
            d.records.iter().any(|r| r == want),
            "{want} in:\n{}",
            d.output
        );
    }

    let nx = v.delv("nope.signed.example.", RecordType::A).await;
    assert!(nx.validated && nx.nxdomain, "NXDOMAIN:\n{}", nx.output);
    let nodata = v.delv("www.signed.example.", RecordType::TXT).await;
    assert!(
        nodata.validated && nodata.negative && !nodata.nxdomain,
        "NODATA:\n{}",
        nodata.output
    );

    let wrong = Validators::new(r.nsd.addr(), wrong_anchor().await).await;
    let bogus = wrong.delv("www.signed.example.", RecordType::A).await;
    assert!(
        !bogus.validated,
        "validated with a wrong anchor:\n{}",
        bogus.output
    );
    assert!(bogus.records.is_empty(), "{}", bogus.output);
    assert!(
        bogus.output.contains("resolution failed"),
        "{}",
        bogus.output
    );
}

//------------ DNSViz --------------------------------------------------------

#[tokio::test]
async fn dnsviz_grok_reports_no_errors() {
    let r = reference().await;
    let names = [
        "www.signed.example.",
        "alias.signed.example.",
        "x.wild.signed.example.",
    ];
    let v = Validators::new(r.nsd.addr(), r.zone.anchor.clone()).await;
    let report = v.dnsviz(&names).await;
    assert!(
        report.problems().is_empty(),
        "dnsviz found problems: {:#?}",
        report.problems()
    );
    // The zone, its DNSKEY, each answer and the NXDOMAIN/NODATA proofs
    // dnsviz asks for on its own: far more than a handful of SECUREs.
    assert!(report.secure >= 10, "too little analysed:\n{}", report.json);

    // The same probe judged with a key that did not sign the zone.
    let wrong = Validators::new(r.nsd.addr(), wrong_anchor().await).await;
    let bad = wrong.dnsviz(&names).await;
    assert!(
        bad.errors
            .iter()
            .any(|e| e.contains("NO_TRUST_ANCHOR_SIGNING")),
        "{:#?}",
        bad.problems()
    );
    assert!(
        bad.bad_status.iter().any(|s| s.ends_with("BOGUS")),
        "{:#?}",
        bad.problems()
    );
}

//------------ ECS through Unbound --------------------------------------------

/// What the ECS responder saw: (query name, type, ECS address/source
/// prefix).
type Seen = Arc<Mutex<Vec<(String, RecordType, Option<(IpAddr, u8)>)>>>;

/// An authoritative server for `ecs.example.` on 127.0.0.1 that answers
/// `www` A per client subnet with scope /24, unsigned: 198.51.100.0/24 gets
/// 192.0.2.1, 203.0.113.0/24 gets 192.0.2.2, anything else 192.0.2.99.
/// Every query is recorded.
async fn ecs_responder() -> (SocketAddr, Seen, JoinHandle<()>) {
    let sock = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))
        .await
        .expect("bind responder");
    let addr = sock.local_addr().expect("responder addr");
    let seen: Seen = Arc::default();
    let log = seen.clone();
    let task = tokio::spawn(async move {
        let mut buf = vec![0u8; 4096];
        loop {
            let Ok((n, peer)) = sock.recv_from(&mut buf).await else {
                return;
            };
            let Ok(q) = Message::from_vec(&buf[..n]) else {
                continue;
            };
            let Some(query) = q.queries.first().cloned() else {
                continue;
            };
            let ecs = q.edns.as_ref().and_then(|e| {
                e.options().options.iter().find_map(|(_, o)| match o {
                    EdnsOption::Subnet(cs) => Some((cs.addr(), cs.source_prefix())),
                    _ => None,
                })
            });
            let qname = query.name().to_ascii();
            log.lock()
                .expect("lock")
                .push((qname.clone(), query.query_type(), ecs));
            let mut r = Message::new(q.metadata.id, MessageType::Response, q.metadata.op_code);
            r.metadata.authoritative = true;
            r.metadata.recursion_desired = q.metadata.recursion_desired;
            r.queries.push(query.clone());
            let in_zone = qname.to_ascii_lowercase().ends_with("ecs.example.");
            if !in_zone {
                r.metadata.response_code = ResponseCode::Refused;
                r.metadata.authoritative = false;
            } else if qname.eq_ignore_ascii_case("www.ecs.example.")
                && query.query_type() == RecordType::A
            {
                let ip = match ecs {
                    Some((IpAddr::V4(a), _)) if a.octets()[..3] == [198, 51, 100] => [192, 0, 2, 1],
                    Some((IpAddr::V4(a), _)) if a.octets()[..3] == [203, 0, 113] => [192, 0, 2, 2],
                    _ => [192, 0, 2, 99],
                };
                r.answers.push(Record::from_rdata(
                    Name::from_ascii("www.ecs.example.").expect("name"),
                    300,
                    RData::A(A::from(Ipv4Addr::from(ip))),
                ));
            }
            if let Some(qe) = &q.edns {
                let mut e = Edns::new();
                e.set_max_payload(1232);
                e.set_dnssec_ok(qe.flags().dnssec_ok);
                if let Some((addr, source)) = ecs {
                    // RFC 7871 7.2.1: the answer is good for the /24.
                    e.options_mut()
                        .insert(EdnsOption::Subnet(ClientSubnet::new(addr, source, 24)));
                }
                r.edns = Some(e);
            }
            if let Ok(bytes) = r.to_vec() {
                let _ = sock.send_to(&bytes, peer).await;
            }
        }
    });
    (addr, seen, task)
}

fn www_queries(seen: &Seen) -> Vec<Option<(IpAddr, u8)>> {
    seen.lock()
        .expect("lock")
        .iter()
        .filter(|(n, t, _)| n == "www.ecs.example." && *t == RecordType::A)
        .map(|(_, _, e)| *e)
        .collect()
}

/// Unbound forwards the client's ECS option to the authoritative server,
/// answers each region with its own address and scope, and keeps the two
/// subnets apart in its cache.
#[tokio::test]
async fn unbound_forwards_client_ecs_and_caches_per_subnet() {
    let (addr, seen, task) = ecs_responder().await;
    let unbound = Unbound::start(&[StubZone {
        zone: "ecs.example.".to_owned(),
        server: addr,
        ds: None,
    }])
    .await;
    let ip = |s: &str| s.parse::<IpAddr>().expect("ip");

    let eu = unbound
        .query("www.ecs.example.", RecordType::A, Some("198.51.100.0/24"))
        .await;
    assert_eq!(
        eu.rdata(RecordType::A),
        ["192.0.2.1"],
        "{eu:?}\n{}",
        unbound.log()
    );
    assert_eq!(eu.ecs, Some((ip("198.51.100.0"), 24, 24)), "{eu:?}");
    assert!(!eu.ad, "an insecure zone: {eu:?}");
    assert_eq!(www_queries(&seen), [Some((ip("198.51.100.0"), 24))]);

    let ap = unbound
        .query("www.ecs.example.", RecordType::A, Some("203.0.113.0/24"))
        .await;
    assert_eq!(ap.rdata(RecordType::A), ["192.0.2.2"], "{ap:?}");
    assert_eq!(ap.ecs, Some((ip("203.0.113.0"), 24, 24)), "{ap:?}");
    assert_eq!(
        www_queries(&seen),
        [
            Some((ip("198.51.100.0"), 24)),
            Some((ip("203.0.113.0"), 24))
        ]
    );

    // Both again, the first from one host of the cached /24: answered
    // from the subnet cache, each with its own address, no new upstream
    // query.
    let eu2 = unbound
        .query("www.ecs.example.", RecordType::A, Some("198.51.100.77/32"))
        .await;
    assert_eq!(eu2.rdata(RecordType::A), ["192.0.2.1"], "{eu2:?}");
    let ap2 = unbound
        .query("www.ecs.example.", RecordType::A, Some("203.0.113.0/24"))
        .await;
    assert_eq!(ap2.rdata(RecordType::A), ["192.0.2.2"], "{ap2:?}");
    assert_eq!(
        www_queries(&seen).len(),
        2,
        "cache miss: {:?}",
        www_queries(&seen)
    );

    // A third region is a miss and goes upstream with its own subnet.
    let other = unbound
        .query("www.ecs.example.", RecordType::A, Some("192.0.2.0/24"))
        .await;
    assert_eq!(other.rdata(RecordType::A), ["192.0.2.99"], "{other:?}");
    assert_eq!(
        www_queries(&seen).last().copied().flatten(),
        Some((ip("192.0.2.0"), 24))
    );
    // A client without ECS: Unbound sends its source address trimmed to
    // /24 (send-client-subnet lists the server), and the reply to the
    // client carries no ECS. Through Unbound on loopback, a test client
    // that sends no ECS reaches the server as 127.0.0.0/24.
    let plain = unbound.query("www.ecs.example.", RecordType::A, None).await;
    assert_eq!(plain.rdata(RecordType::A), ["192.0.2.99"], "{plain:?}");
    assert_eq!(plain.ecs, None, "{plain:?}");
    assert_eq!(
        www_queries(&seen).last().copied().flatten(),
        Some((ip("127.0.0.0"), 24))
    );
    task.abort();
}

//------------ ECS and DNSSEC together ------------------------------------------

/// A server that tailors signed answers by ECS, as Meridian does: one zone
/// signed twice under one key (`www` is 192.0.2.1 in one version and
/// 192.0.2.2 in the other), each version served by its own NSD, and a
/// splitter on 127.0.0.1 that sends 203.0.113.0/24 to the second and
/// everything else to the first, echoing the client's ECS with scope /24.
/// Returns the splitter's address, the anchor, the ECS subnets it saw for
/// `www` A, and what must stay alive.
async fn tailored_signed_server() -> (
    SocketAddr,
    TrustAnchor,
    Seen,
    (Nsd, Nsd, TempDir, JoinHandle<()>),
) {
    let dir = TempDir::new().expect("temp dir");
    let (anchor, base) = validators::keygen(dir.path(), ZONE).await;
    let eu_text = ZONE_TEXT.replace("192.0.2.10", "192.0.2.1");
    let ap_text = ZONE_TEXT.replace("192.0.2.10", "192.0.2.2");
    let eu_file = validators::sign_with_key(dir.path(), ZONE, &eu_text, &base, "eu").await;
    let ap_file = validators::sign_with_key(dir.path(), ZONE, &ap_text, &base, "ap").await;
    let eu = Nsd::start(ZONE, &eu_file).await;
    let ap = Nsd::start(ZONE, &ap_file).await;
    let (eu_addr, ap_addr) = (eu.addr(), ap.addr());

    let sock = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))
        .await
        .expect("bind splitter");
    let addr = sock.local_addr().expect("splitter addr");
    let seen: Seen = Arc::default();
    let log = seen.clone();
    let task = tokio::spawn(async move {
        let mut buf = vec![0u8; 4096];
        loop {
            let Ok((n, peer)) = sock.recv_from(&mut buf).await else {
                return;
            };
            let Ok(q) = Message::from_vec(&buf[..n]) else {
                continue;
            };
            let ecs = q.edns.as_ref().and_then(|e| {
                e.options().options.iter().find_map(|(_, o)| match o {
                    EdnsOption::Subnet(cs) => Some((cs.addr(), cs.source_prefix())),
                    _ => None,
                })
            });
            if let Some(query) = q.queries.first() {
                log.lock()
                    .expect("lock")
                    .push((query.name().to_ascii(), query.query_type(), ecs));
            }
            let backend = match ecs {
                Some((IpAddr::V4(a), _)) if a.octets()[..3] == [203, 0, 113] => ap_addr,
                _ => eu_addr,
            };
            let Some(mut r) =
                validators::exchange(backend, &buf[..n], validators::QUERY_TIMEOUT).await
            else {
                continue;
            };
            if let (Some((ip, source)), Some(edns)) = (ecs, r.edns.as_mut()) {
                // RFC 7871 7.2.1: the answer is good for the client's /24.
                edns.options_mut()
                    .insert(EdnsOption::Subnet(ClientSubnet::new(ip, source, 24)));
            }
            if let Ok(bytes) = r.to_vec() {
                let _ = sock.send_to(&bytes, peer).await;
            }
        }
    });
    (addr, anchor, seen, (eu, ap, dir, task))
}

/// The "ECS and DNSSEC together": Unbound, validating and caching
/// per subnet, gives each region its own signed answer with AD=1, also
/// from its cache.
#[tokio::test]
async fn unbound_validates_ecs_tailored_signed_answers() {
    let (addr, anchor, seen, keep) = tailored_signed_server().await;
    let v = Validators::new(addr, anchor).await;
    let unbound = v.unbound().await;
    let www = |seen: &Seen| {
        seen.lock()
            .expect("lock")
            .iter()
            .filter(|(n, t, _)| n == "www.signed.example." && *t == RecordType::A)
            .count()
    };
    for round in 0..2 {
        for (subnet, want) in [
            ("198.51.100.0/24", "192.0.2.1"),
            ("203.0.113.0/24", "192.0.2.2"),
        ] {
            let r = unbound
                .query("www.signed.example.", RecordType::A, Some(subnet))
                .await;
            assert_eq!(
                r.rcode,
                ResponseCode::NoError,
                "{subnet}: {r:?}\n{}",
                unbound.log()
            );
            assert!(
                r.ad,
                "round {round}, {subnet}: not validated: {r:?}\n{}",
                unbound.log()
            );
            assert_eq!(
                r.rdata(RecordType::A),
                [want],
                "round {round}, {subnet}: {r:?}"
            );
            let net: ipnet::IpNet = subnet.parse().expect("subnet");
            assert_eq!(r.ecs, Some((net.addr(), 24, 24)), "{r:?}");
        }
        // The first round asked the server once per subnet; the second is
        // answered from Unbound's subnet cache.
        assert_eq!(
            www(&seen),
            2,
            "round {round}: {:?}",
            seen.lock().expect("lock")
        );
    }
    keep.3.abort();
}
