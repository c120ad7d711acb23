//! Third-party DNSSEC validators (Unbound, `delv`, DNSViz) against signed
//! zones, through the harness in `tests/validators/mod.rs`.
//!
//! First a reference: a zone signed by BIND's `dnssec-signzone` and
//! served by NSD. These tests prove that the harness tells a valid zone
//! from a bogus one, so that the same checks against Meridian mean
//! something.
//!
//! The ECS tests need an authoritative server that answers per subnet: a
//! small UDP responder in this file, unsigned, behind an Unbound that
//! treats its zone as insecure; and, signed, two NSDs serving two versions
//! of the zone signed under one key, behind a splitter that picks one by
//! the client's ECS subnet (what Meridian does with one server).
//!
//! Then Meridian itself (`meridian run`, the binary under test, with keys
//! from `meridian dnssec keygen` and the DS from `meridian dnssec ds`):
//! the same validators for clients in several regions, compact denial,
//! NODATA, a CNAME chain, DNSKEY and a failover; and the README's ZSK
//! pre-publish and CSK algorithm rollovers, with Unbound validating
//! before, after and between every step.
//!
//! Its own test binary: it drives system packages (unbound, nsd,
//! bind9-utils, bind9-dnsutils, dnsviz; `scripts/test.sh` installs them),
//! and fails, naming the package, when one is missing.

#![allow(unreachable_pub, missing_docs)]

mod validators;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

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

/// A UDP server on 127.0.0.1 that records each query's name, type and
/// ECS option in the returned [`Seen`], then sends what `respond` makes
/// of the query (its bytes, the message and its ECS), if anything.
async fn udp_responder<F, Fut>(what: &str, respond: F) -> (SocketAddr, Seen, JoinHandle<()>)
where
    F: Fn(Vec<u8>, Message, Option<(IpAddr, u8)>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Option<Message>> + Send,
{
    let sock = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))
        .await
        .unwrap_or_else(|e| panic!("bind {what}: {e}"));
    let addr = sock
        .local_addr()
        .unwrap_or_else(|e| panic!("{what} addr: {e}"));
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
            let Some(r) = respond(buf[..n].to_vec(), q, ecs).await else {
                continue;
            };
            if let Ok(bytes) = r.to_vec() {
                let _ = sock.send_to(&bytes, peer).await;
            }
        }
    });
    (addr, seen, task)
}

/// An authoritative server for `ecs.example.` on 127.0.0.1 that answers
/// `www` A per client subnet with scope /24, unsigned: 198.51.100.0/24 gets
/// 192.0.2.1, 203.0.113.0/24 gets 192.0.2.2, anything else 192.0.2.99.
/// Every query is recorded.
async fn ecs_responder() -> (SocketAddr, Seen, JoinHandle<()>) {
    udp_responder("responder", |_, q, ecs| async move {
        let query = q.queries.first().cloned()?;
        let qname = query.name().to_ascii();
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
        Some(r)
    })
    .await
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

    let (addr, seen, task) = udp_responder("splitter", move |packet, _, ecs| async move {
        let backend = match ecs {
            Some((IpAddr::V4(a), _)) if a.octets()[..3] == [203, 0, 113] => ap_addr,
            _ => eu_addr,
        };
        let mut r = validators::exchange(backend, &packet, validators::QUERY_TIMEOUT).await?;
        if let (Some((ip, source)), Some(edns)) = (ecs, r.edns.as_mut()) {
            // RFC 7871 7.2.1: the answer is good for the client's /24.
            edns.options_mut()
                .insert(EdnsOption::Subnet(ClientSubnet::new(ip, source, 24)));
        }
        Some(r)
    })
    .await;
    (addr, anchor, seen, (eu, ap, dir, task))
}

/// The issue's "ECS and DNSSEC together": Unbound, validating and caching
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

//============ Meridian ========================================================
//
// The same validators against Meridian's own online signing: the real
// binary (`meridian run`), keys made by `meridian dnssec keygen`, the DS
// given to the validators from `meridian dnssec ds`, a GeoIP database
// written here so that ECS subnets (and loopback source addresses, for
// `delv -b`) fall in different regions.

const MZONE: &str = "val.example.";

/// US, Germany, Japan; loopback split so that `delv -b` can ask from
/// Japan (127.0.0.0/25) or Germany (127.0.0.128/25).
fn geo_db() -> Vec<u8> {
    #[derive(serde::Serialize)]
    struct Flat {
        country_code: &'static str,
    }
    let mut w = mmdb_writer::Writer::new("Meridian-Test-Flat");
    for (net, cc) in [
        ("11.1.0.0/16", "US"),
        ("11.2.0.0/16", "DE"),
        ("11.3.0.0/16", "JP"),
        ("127.0.0.0/25", "JP"),
        ("127.0.0.128/25", "DE"),
    ] {
        let net: ipnet::IpNet = net.parse().expect("net");
        w.insert(net, &Flat { country_code: cc }).expect("insert");
    }
    w.to_bytes().expect("mmdb")
}

/// The address each region gets from the `www` geo service.
const US: &str = "192.0.2.10";
const EU: &str = "198.51.100.10";
const AP: &str = "203.0.113.10";
/// Clients in each region, as ECS subnets.
const REGIONS: [(&str, &str); 3] = [
    ("11.1.0.0/24", US),
    ("11.2.0.0/24", EU),
    ("11.3.0.0/24", AP),
];

/// TTLs of a test zone: `ttl` for static records, the SOA minimum and
/// the services, `dnskey` for the DNSKEY RRset.
#[derive(Clone, Copy)]
struct Ttls {
    ttl: u32,
    dnskey: u32,
}

/// The zone: an in-zone NS host at 127.0.0.1 (dnsviz queries it), a
/// static A, a CNAME chain into a geo service (`alias` → `app` → `www`),
/// a wildcard, a failover service `api` (TTL 1: a failover reaches a
/// resolver's clients within a second), and `[dnssec]` with `keys`
/// (file, state).
fn meridian_zone(t: Ttls, keys: &[(&str, &str)]) -> String {
    let keys: Vec<String> = keys
        .iter()
        .map(|(file, state)| format!("{{ file = \"{file}\", state = \"{state}\" }}"))
        .collect();
    format!(
        r#"origin = "{MZONE}"
ttl = {ttl}
ns = ["ns1.{MZONE}"]

[soa]
rname = "hostmaster.{MZONE}"
serial = 1
minimum = {ttl}

[records]
ns1 = [{{ type = "A", value = "127.0.0.1" }}]
mail = [{{ type = "A", value = "192.0.2.25" }}]
app = [{{ type = "CNAME", value = "www" }}]
alias = [{{ type = "CNAME", value = "app" }}]
"*.wild" = [{{ type = "A", value = "192.0.2.77" }}]

[datacenters.us-east]
location = [39.04, -77.49]
addresses = ["{US}", "2001:db8:10::10"]

[datacenters.eu-west]
location = [53.35, -6.26]
addresses = ["{EU}", "2001:db8:20::10"]

[datacenters.ap-southeast]
location = [1.35, 103.82]
addresses = ["{AP}", "2001:db8:30::10"]

[services.www]
policy = "geo"
datacenters = ["us-east", "eu-west", "ap-southeast"]
ttl = {ttl}

[services.api]
policy = "failover"
datacenters = ["eu-west", "us-east"]
ttl = 1

[dnssec]
dnskey_ttl = {dnskey}
keys = [{keys}]
"#,
        ttl = t.ttl,
        dnskey = t.dnskey,
        keys = keys.join(", "),
    )
}

/// `meridian ARGS...` (the binary under test), which must exit 0.
async fn meridian_cli(args: &[&str]) -> validators::Output {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_meridian"));
    cmd.args(args);
    validators::run_ok(cmd).await
}

/// A key made by `meridian dnssec keygen` in a config directory's
/// `zones/keys`.
#[derive(Clone, Debug)]
struct Key {
    /// As the zone file names it: `keys/Kval.example.+013+12345`.
    file: String,
    /// The DNSKEY record (`.key` file).
    dnskey: String,
    tag: u16,
    algorithm: u8,
}

/// `meridian dnssec keygen val.example. --algorithm ALG --role ROLE --dir
/// DIR/zones/keys`.
async fn keygen(dir: &std::path::Path, algorithm: &str, role: &str) -> Key {
    let keys = dir.join("zones/keys");
    let out = meridian_cli(&[
        "dnssec",
        "keygen",
        MZONE,
        "--algorithm",
        algorithm,
        "--role",
        role,
        "--dir",
        keys.to_str().expect("utf-8 path"),
    ])
    .await;
    // "wrote DIR/Kval.example.+013+12345.key and ..."
    let key_path = out
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("wrote "))
        .and_then(|l| l.split_once(".key and "))
        .map(|(p, _)| p.to_owned())
        .unwrap_or_else(|| panic!("keygen output without the files written:\n{}", out.stdout));
    let base = std::path::Path::new(&key_path)
        .file_name()
        .expect("key file name")
        .to_string_lossy()
        .into_owned();
    let dnskey = std::fs::read_to_string(format!("{key_path}.key")).expect("read .key");
    let mut parts = base.rsplit('+');
    let tag = parts.next().and_then(|t| t.parse().ok()).expect("key tag");
    let algorithm = parts
        .next()
        .and_then(|a| a.parse().ok())
        .expect("algorithm");
    Key {
        file: format!("keys/{base}"),
        dnskey,
        tag,
        algorithm,
    }
}

/// The trust anchor of the SEP keys among `keys` (flags 257).
fn sep_anchor(keys: &[&Key]) -> TrustAnchor {
    let text: Vec<&str> = keys
        .iter()
        .flat_map(|k| k.dnskey.lines())
        .filter(|l| !l.starts_with(';') && l.contains(" 257 "))
        .collect();
    TrustAnchor::from_dnskeys(MZONE, &text.join("\n"))
}

/// DS lines compared whitespace- and case-insensitively.
fn normalized(ds: &[String]) -> Vec<String> {
    let mut v: Vec<String> = ds
        .iter()
        .map(|l| {
            l.split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
                .to_ascii_uppercase()
        })
        .collect();
    v.sort();
    v
}

/// The algorithm field of a DS line.
fn ds_algorithm(line: &str) -> Option<u8> {
    let w: Vec<&str> = line.split_whitespace().collect();
    let at = w.iter().position(|x| *x == "DS")?;
    w.get(at + 2)?.parse().ok()
}

/// The real server: `meridian run` on a free loopback port, its admin API
/// on another, in its own config directory, ended by PID on drop.
struct Meridian {
    addr: SocketAddr,
    admin: SocketAddr,
    dir: TempDir,
    daemon: validators::Daemon,
}

impl Meridian {
    /// A config directory with the GeoIP database and `zones/keys`, for
    /// [`keygen`] before [`Meridian::start`].
    fn config_dir() -> TempDir {
        let dir = TempDir::new().expect("temp dir");
        std::fs::create_dir_all(dir.path().join("zones/keys")).expect("zones/keys");
        std::fs::write(dir.path().join("test.mmdb"), geo_db()).expect("write mmdb");
        dir
    }

    /// Starts `meridian run` in `dir` with the zone `zone_text` and waits
    /// until DNS and the admin API answer.
    async fn start(dir: TempDir, zone_text: &str) -> Self {
        let port = validators::free_port();
        let admin_port = validators::free_port();
        let config = dir.path().join("meridian.toml");
        // RRL off: Unbound and dnsviz send bursts of identical queries
        // from 127.0.0.1.
        std::fs::write(
            &config,
            format!(
                "listen = [\"127.0.0.1:{port}\"]\nzones = \"zones\"\ngeoip = \"test.mmdb\"\n\
                 state_file = \"state.json\"\nthreads = 1\n\
                 [admin]\nlisten = \"127.0.0.1:{admin_port}\"\n[rrl]\nenabled = false\n"
            ),
        )
        .expect("write meridian.toml");
        std::fs::write(dir.path().join("zones/val.example.toml"), zone_text).expect("write zone");
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_meridian"));
        cmd.arg("run")
            .arg("--config")
            .arg(&config)
            .env("RUST_LOG", "info");
        let mut daemon =
            validators::Daemon::spawn_logging_to("meridian", cmd, dir.path().join("meridian.log"));
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        daemon.await_ready(addr).await;
        let admin = SocketAddr::from((Ipv4Addr::LOCALHOST, admin_port));
        let m = Self {
            addr,
            admin,
            dir,
            daemon,
        };
        let deadline = std::time::Instant::now() + validators::START_TIMEOUT;
        while m.try_http("GET", "/health").await.map(|r| r.0) != Some(200) {
            assert!(
                std::time::Instant::now() < deadline,
                "admin API not answering on {admin}; log:\n{}",
                m.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        m
    }

    fn log(&self) -> String {
        self.daemon.log_text()
    }

    fn config(&self) -> std::path::PathBuf {
        self.dir.path().join("meridian.toml")
    }

    /// One HTTP/1.1 request to the admin API: (status, body).
    async fn try_http(&self, method: &str, path: &str) -> Option<(u16, String)> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let io = async {
            let mut s = tokio::net::TcpStream::connect(self.admin).await.ok()?;
            let req = format!(
                "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Length: 0\r\n\
                 Connection: close\r\n\r\n",
                self.admin
            );
            s.write_all(req.as_bytes()).await.ok()?;
            let mut buf = Vec::new();
            s.read_to_end(&mut buf).await.ok()?;
            let text = String::from_utf8_lossy(&buf).into_owned();
            let status = text.split_whitespace().nth(1)?.parse().ok()?;
            let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned())?;
            Some((status, body))
        };
        tokio::time::timeout(validators::QUERY_TIMEOUT, io)
            .await
            .ok()
            .flatten()
    }

    /// [`Meridian::try_http`], which must answer 200.
    async fn http(&self, method: &str, path: &str) -> String {
        match self.try_http(method, path).await {
            Some((200, body)) => body,
            other => panic!("{method} {path}: {other:?}; log:\n{}", self.log()),
        }
    }

    /// Writes the zone file and `POST /reload`, which must succeed.
    async fn reload_with(&self, zone_text: &str) {
        std::fs::write(self.dir.path().join("zones/val.example.toml"), zone_text)
            .expect("write zone");
        let body = self.http("POST", "/reload").await;
        assert!(body.contains("\"ok\":true"), "reload: {body}");
    }

    /// `meridian dnssec ds val.example. --config ...`: what the parent gets.
    async fn ds(&self) -> Vec<String> {
        let config = self.config();
        let out = meridian_cli(&[
            "dnssec",
            "ds",
            MZONE,
            "--config",
            config.to_str().expect("utf-8 path"),
        ])
        .await;
        out.stdout
            .lines()
            .filter(|l| l.contains(" DS "))
            .map(str::to_owned)
            .collect()
    }

    /// `/status`'s answer counts of service `name`, summed.
    async fn answers(&self, name: &str) -> u64 {
        let body = self.http("GET", "/status").await;
        let v: serde_json::Value = serde_json::from_str(&body).expect("status JSON");
        v["zones"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|z| z["services"].as_array().into_iter().flatten())
            .filter(|s| s["name"] == name)
            .flat_map(|s| s["answers"].as_object().into_iter().flatten())
            .filter_map(|(_, n)| n.as_u64())
            .sum()
    }

    /// A query straight to Meridian, with DO when `dnssec_ok`.
    async fn ask(&self, name: &str, qtype: RecordType, dnssec_ok: bool) -> Message {
        let q = validators::build_query_do(name, qtype, false, None, dnssec_ok);
        validators::exchange(self.addr, &q, validators::QUERY_TIMEOUT)
            .await
            .unwrap_or_else(|| panic!("no answer from Meridian for {name} {qtype}"))
    }

    /// (key tag, algorithm) of the RRSIGs over the answer to `name`/`qtype`
    /// asked with DO, sorted.
    async fn signers(&self, name: &str, qtype: RecordType) -> Vec<(u16, u8)> {
        let m = self.ask(name, qtype, true).await;
        let mut v: Vec<(u16, u8)> = m
            .answers
            .iter()
            .filter_map(|r| match &r.data {
                RData::DNSSEC(hickory_proto::dnssec::rdata::DNSSECRData::RRSIG(sig)) => {
                    Some((sig.input().key_tag, u8::from(sig.input().algorithm)))
                }
                _ => None,
            })
            .collect();
        v.sort_unstable();
        v.dedup();
        v
    }

    /// The key tags of the DNSKEY RRset Meridian publishes, sorted.
    async fn published(&self) -> Vec<u16> {
        let m = self.ask(MZONE, RecordType::DNSKEY, false).await;
        let mut v: Vec<u16> = m
            .answers
            .iter()
            .filter_map(|r| match &r.data {
                RData::DNSSEC(hickory_proto::dnssec::rdata::DNSSECRData::DNSKEY(k)) => {
                    k.calculate_key_tag().ok()
                }
                _ => None,
            })
            .collect();
        v.sort_unstable();
        v
    }
}

/// A Meridian serving the zone signed with one fresh CSK of algorithm 13,
/// the key, and Validators given the DS that `meridian dnssec ds` prints
/// (checked against BIND's `dnssec-dsfromkey` of the same key).
async fn signed_meridian() -> (Meridian, Key, Validators) {
    let dir = Meridian::config_dir();
    let csk = keygen(dir.path(), "ecdsap256sha256", "csk").await;
    let zone = meridian_zone(
        Ttls {
            ttl: 300,
            dnskey: 3600,
        },
        &[(&csk.file, "active")],
    );
    let m = Meridian::start(dir, &zone).await;
    let ds = m.ds().await;
    let anchor = sep_anchor(&[&csk]);
    assert_eq!(
        normalized(&ds),
        normalized(&anchor.ds().await),
        "meridian dnssec ds and dnssec-dsfromkey disagree"
    );
    // The DNSKEY the server publishes is the key file's.
    assert_eq!(m.published().await, [csk.tag]);
    let v = Validators::with_ds(m.addr, anchor, ds);
    (m, csk, v)
}

/// Every answer as a validating resolver with an ECS cache sees it.
#[tokio::test]
async fn meridian_unbound_validates_regions_denials_cname_dnskey_and_failover() {
    let (m, _csk, v) = signed_meridian().await;
    let unbound = v.unbound().await;
    let log = || format!("unbound:\n{}\nmeridian:\n{}", unbound.log(), m.log());

    // Three regions, each its own datacenter's address, validated; the
    // second round comes from Unbound's subnet cache (Meridian counts no
    // new www answer) and is still AD with each region's own address.
    let mut counted = 0;
    for round in 0..2 {
        for (subnet, want) in REGIONS {
            let r = unbound
                .query("www.val.example.", RecordType::A, Some(subnet))
                .await;
            assert_eq!(r.rcode, ResponseCode::NoError, "{subnet}: {r:?}\n{}", log());
            assert!(
                r.ad,
                "round {round}, {subnet}: not validated: {r:?}\n{}",
                log()
            );
            assert_eq!(
                r.rdata(RecordType::A),
                [want],
                "round {round}, {subnet}: {r:?}"
            );
            let net: ipnet::IpNet = subnet.parse().expect("subnet");
            let (addr, source, scope) = r.ecs.unwrap_or_else(|| panic!("no ECS: {r:?}"));
            assert_eq!((addr, source), (net.addr(), 24), "{r:?}");
            assert!((1..=24).contains(&scope), "scope {scope}: {r:?}");
        }
        let n = m.answers("www").await;
        if round == 0 {
            assert!(n >= 3, "Meridian counted {n} www answers for 3 regions");
            counted = n;
        } else {
            assert_eq!(n, counted, "round 1 should come from Unbound's cache");
        }
    }
    let aaaa = unbound
        .query("www.val.example.", RecordType::AAAA, Some("11.2.0.0/24"))
        .await;
    assert!(aaaa.ad, "{aaaa:?}\n{}", log());
    assert_eq!(
        aaaa.rdata(RecordType::AAAA),
        ["2001:db8:20::10"],
        "{aaaa:?}"
    );

    // A CNAME chain into a service: every link and the geo answer.
    let chain = unbound
        .query("alias.val.example.", RecordType::A, Some("11.3.0.0/24"))
        .await;
    assert!(chain.ad, "{chain:?}\n{}", log());
    assert_eq!(
        chain.rdata(RecordType::CNAME),
        ["app.val.example.", "www.val.example."]
    );
    assert_eq!(chain.rdata(RecordType::A), [AP], "{chain:?}");

    // Compact denial: NOERROR, AD, and the NSEC owned by the name with
    // next name \000.name and NXNAME (128) in its bitmap.
    let nx = unbound
        .query_do("nope.val.example.", RecordType::A, None, true)
        .await;
    assert_eq!(nx.rcode, ResponseCode::NoError, "{nx:?}");
    assert!(nx.ad, "compact NXDOMAIN not validated: {nx:?}\n{}", log());
    assert!(nx.answers.is_empty(), "{nx:?}");
    let (owner, next, types) = nx
        .nsecs
        .first()
        .unwrap_or_else(|| panic!("no NSEC: {nx:?}"))
        .clone();
    assert_eq!(owner, "nope.val.example.", "{nx:?}");
    assert_eq!(next, "\\000.nope.val.example.", "{nx:?}");
    assert_eq!(types, [46, 47, 128], "RRSIG NSEC NXNAME: {nx:?}");
    // Straight from Meridian: NXDOMAIN without DO, NOERROR with.
    let plain = m.ask("nope.val.example.", RecordType::A, false).await;
    assert_eq!(plain.metadata.response_code, ResponseCode::NXDomain);

    // NODATA: the NSEC at www lists what is there, not TXT, not NXNAME.
    let nodata = unbound
        .query_do(
            "www.val.example.",
            RecordType::TXT,
            Some("11.1.0.0/24"),
            true,
        )
        .await;
    assert_eq!(nodata.rcode, ResponseCode::NoError, "{nodata:?}");
    assert!(nodata.ad, "NODATA not validated: {nodata:?}\n{}", log());
    assert!(nodata.answers.is_empty(), "{nodata:?}");
    let types = &nodata
        .nsecs
        .first()
        .unwrap_or_else(|| panic!("no NSEC: {nodata:?}"))
        .2;
    assert!(
        types.contains(&1) && !types.contains(&16) && !types.contains(&128),
        "{nodata:?}"
    );

    let dnskey = unbound.query(MZONE, RecordType::DNSKEY, None).await;
    assert!(dnskey.ad, "{dnskey:?}\n{}", log());
    assert_eq!(dnskey.rdata(RecordType::DNSKEY).len(), 1, "{dnskey:?}");

    let mail = unbound
        .query("mail.val.example.", RecordType::A, None)
        .await;
    assert!(mail.ad, "{mail:?}");
    assert_eq!(mail.rdata(RecordType::A), ["192.0.2.25"]);
    let wild = unbound
        .query("x.wild.val.example.", RecordType::A, None)
        .await;
    assert!(wild.ad, "wildcard: {wild:?}\n{}", log());
    assert_eq!(wild.rdata(RecordType::A), ["192.0.2.77"]);

    // Failover: api is eu-west's; drained through the admin API, the
    // answer becomes us-east's, signed and validated, once Unbound's copy
    // (TTL 1) has expired.
    let api = unbound.query("api.val.example.", RecordType::A, None).await;
    assert!(api.ad, "{api:?}\n{}", log());
    assert_eq!(api.rdata(RecordType::A), [EU], "{api:?}");
    m.http("POST", "/datacenters/val.example/eu-west/drain")
        .await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let api = unbound.query("api.val.example.", RecordType::A, None).await;
        assert_eq!(api.rcode, ResponseCode::NoError, "{api:?}\n{}", log());
        assert!(api.ad, "failover answer not validated: {api:?}\n{}", log());
        if api.rdata(RecordType::A) == [US] {
            break;
        }
        assert_eq!(api.rdata(RecordType::A), [EU], "{api:?}");
        assert!(
            std::time::Instant::now() < deadline,
            "still eu-west 10 s after the drain: {api:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // The checks mean something: the same server with a DS of another key
    // is bogus to Unbound.
    let other = Meridian::config_dir();
    let wrong = sep_anchor(&[&keygen(other.path(), "ecdsap256sha256", "csk").await]);
    let bogus = Unbound::start(&[StubZone {
        zone: MZONE.to_owned(),
        server: m.addr,
        ds: Some(wrong.ds().await),
    }])
    .await;
    for (name, qtype) in [
        ("www.val.example.", RecordType::A),
        ("nope.val.example.", RecordType::A),
        ("www.val.example.", RecordType::TXT),
    ] {
        let r = bogus.query(name, qtype, Some("11.1.0.0/24")).await;
        assert_eq!(r.rcode, ResponseCode::ServFail, "{name} {qtype}: {r:?}");
        assert!(!r.ad && r.answers.is_empty(), "{r:?}");
    }
}

/// `delv` fully validates Meridian's answers for clients in two regions
/// (two loopback source addresses), the CNAME chain, DNSKEY, the compact
/// NXDOMAIN (a NOERROR to delv: "negative response"), NODATA, queries for
/// NSEC and a failover answer; and fails with a wrong anchor.
#[tokio::test]
async fn meridian_delv_fully_validates() {
    let (m, _csk, v) = signed_meridian().await;
    let ip = |s: &str| s.parse::<IpAddr>().expect("ip");
    for (source, name, qtype, want) in [
        (
            "127.0.0.1",
            "www.val.example.",
            RecordType::A,
            format!("www.val.example. A {AP}"),
        ),
        (
            "127.0.0.200",
            "www.val.example.",
            RecordType::A,
            format!("www.val.example. A {EU}"),
        ),
        (
            "127.0.0.200",
            "www.val.example.",
            RecordType::AAAA,
            "www.val.example. AAAA 2001:db8:20::10".to_owned(),
        ),
        (
            "127.0.0.200",
            "alias.val.example.",
            RecordType::A,
            "alias.val.example. CNAME app.val.example.".to_owned(),
        ),
        (
            "127.0.0.1",
            "alias.val.example.",
            RecordType::A,
            format!("www.val.example. A {AP}"),
        ),
        (
            "127.0.0.1",
            "api.val.example.",
            RecordType::A,
            format!("api.val.example. A {EU}"),
        ),
        (
            "127.0.0.1",
            "x.wild.val.example.",
            RecordType::A,
            "x.wild.val.example. A 192.0.2.77".to_owned(),
        ),
    ] {
        let d = v.delv_from(name, qtype, ip(source)).await;
        assert!(
            d.validated && !d.negative,
            "{source} {name} {qtype}:\n{}",
            d.output
        );
        assert!(
            d.records.contains(&want),
            "{want} from {source}:\n{}",
            d.output
        );
    }
    let dnskey = v.delv(MZONE, RecordType::DNSKEY).await;
    assert!(dnskey.validated, "{}", dnskey.output);

    // Compact denial: NOERROR with an NXNAME NSEC, which BIND 9.18 reads as
    // a validated NODATA.
    let nx = v.delv("nope.val.example.", RecordType::A).await;
    assert!(
        nx.validated && nx.negative,
        "compact NXDOMAIN:\n{}",
        nx.output
    );
    let nodata = v.delv("www.val.example.", RecordType::TXT).await;
    assert!(
        nodata.validated && nodata.negative && !nodata.nxdomain,
        "{}",
        nodata.output
    );
    // A query for NSEC gets the name's own NSEC as the answer: at a
    // service, at a CNAME (not its target's), and at a name that does not
    // exist (the NXNAME NSEC).
    for (name, bitmap) in [
        ("www.val.example.", "A AAAA RRSIG NSEC"),
        ("alias.val.example.", "CNAME RRSIG NSEC"),
        ("nope.val.example.", "RRSIG NSEC TYPE128"),
    ] {
        let d = v.delv(name, RecordType::NSEC).await;
        let want = format!("{name} NSEC \\000.{name} {bitmap}");
        assert!(d.validated && !d.negative, "{name} NSEC:\n{}", d.output);
        assert!(d.records.contains(&want), "{want}:\n{}", d.output);
    }

    m.http("POST", "/datacenters/val.example/eu-west/drain")
        .await;
    let api = v.delv("api.val.example.", RecordType::A).await;
    assert!(api.validated, "failover answer:\n{}", api.output);
    assert!(
        api.records.contains(&format!("api.val.example. A {US}")),
        "{}",
        api.output
    );

    let other = Meridian::config_dir();
    let wrong = sep_anchor(&[&keygen(other.path(), "ecdsap256sha256", "csk").await]);
    let wrong = Validators::new(m.addr, wrong).await;
    let bogus = wrong.delv("www.val.example.", RecordType::A).await;
    assert!(
        !bogus.validated && bogus.records.is_empty(),
        "{}",
        bogus.output
    );
}

/// `dnsviz probe` + `grok` of Meridian's zone.
#[tokio::test]
async fn meridian_dnsviz_reports_no_errors() {
    let (m, _csk, v) = signed_meridian().await;
    let names = [
        "www.val.example.",
        "alias.val.example.",
        "api.val.example.",
        "mail.val.example.",
        "x.wild.val.example.",
    ];
    let report = v.dnsviz(&names).await;
    assert!(
        report.problems().is_empty(),
        "dnsviz found problems: {:#?}\nmeridian:\n{}",
        report.problems(),
        m.log()
    );
    assert!(report.secure >= 10, "too little analysed:\n{}", report.json);

    // dnsviz 0.9.4 predates RFC 9824, and probes a random name of its own
    // for an NXDOMAIN. Meridian's compact answer (NOERROR, an NSEC at the
    // name listing RRSIG NSEC NXNAME) is judged what it is to a validator
    // that does not know NXNAME: a secure NODATA proof; no error, no
    // warning (asserted above).
    let grok: serde_json::Value = serde_json::from_str(&report.json).expect("grok JSON");
    let queries = grok[MZONE]["queries"]
        .as_object()
        .unwrap_or_else(|| panic!("no queries in:\n{}", report.json));
    let probed: Vec<&serde_json::Value> = queries
        .iter()
        .filter(|(k, _)| {
            let name = k.split('/').next().unwrap_or("");
            name != MZONE && !names.contains(&name)
        })
        .map(|(_, q)| q)
        .collect();
    assert!(
        !probed.is_empty(),
        "dnsviz probed no NXDOMAIN:\n{}",
        report.json
    );
    for q in probed {
        let nsec = &q["nodata"][0]["proof"][0]["nsec"][0];
        assert_eq!(nsec["status"], "SECURE", "{q:#}");
        let rdata = nsec["rdata"][0].as_str().unwrap_or("");
        assert!(
            rdata.starts_with("\\000.") && rdata.ends_with("RRSIG NSEC TYPE128"),
            "{q:#}"
        );
    }
}

//------------ Rollovers through a validating resolver -------------------------

/// The rollover zone's TTLs: every record, the negative TTL and the
/// DNSKEY RRset 2 s, so that each wait of the procedure (a TTL) is short.
const ROLL: Ttls = Ttls { ttl: 2, dnskey: 2 };

/// A wait of the procedure: the TTL that governs it, and a second for
/// the resolver's clock.
fn ttl_wait(ttl: u32) -> Duration {
    Duration::from_secs(u64::from(ttl) + 1)
}

/// Each resolver answers every kind of question AD=1 with the right data:
/// a geo answer in two regions, a compact NXDOMAIN, a NODATA, DNSKEY and
/// a static A.
async fn assert_green(resolvers: &[&Unbound], step: &str, m: &Meridian) {
    for (i, u) in resolvers.iter().enumerate() {
        let ctx = || {
            format!(
                "{step}, resolver {i}\nunbound:\n{}\nmeridian:\n{}",
                u.log(),
                m.log()
            )
        };
        for (subnet, want) in &REGIONS[..2] {
            let r = u
                .query("www.val.example.", RecordType::A, Some(subnet))
                .await;
            assert!(
                r.rcode == ResponseCode::NoError && r.ad && r.rdata(RecordType::A) == [*want],
                "www A {subnet}: {r:?}\n{}",
                ctx()
            );
        }
        for (name, qtype) in [
            ("nope.val.example.", RecordType::A),
            ("www.val.example.", RecordType::TXT),
            (MZONE, RecordType::DNSKEY),
            ("mail.val.example.", RecordType::A),
        ] {
            let r = u.query(name, qtype, None).await;
            assert!(
                r.rcode == ResponseCode::NoError && r.ad,
                "{name} {qtype}: {r:?}\n{}",
                ctx()
            );
        }
    }
}

/// [`assert_green`] again and again for `wait` (the wait between two
/// steps of the procedure): the resolvers stay green while their cached
/// records expire and are fetched again.
async fn hold_green(resolvers: &[&Unbound], step: &str, m: &Meridian, wait: Duration) {
    let end = std::time::Instant::now() + wait;
    loop {
        assert_green(resolvers, step, m).await;
        if std::time::Instant::now() >= end {
            return;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn sorted<T: Ord>(mut v: Vec<T>) -> Vec<T> {
    v.sort();
    v
}

/// README "Rollover", ZSK pre-publish, step by step through the zone file
/// and `POST /reload`, with Unbound validating before and after each
/// change and all through each wait.
#[tokio::test]
async fn meridian_zsk_prepublish_rollover_keeps_unbound_green() {
    let dir = Meridian::config_dir();
    let ksk = keygen(dir.path(), "ecdsap256sha256", "ksk").await;
    let old = keygen(dir.path(), "ecdsap256sha256", "zsk").await;
    let new = keygen(dir.path(), "ecdsap256sha256", "zsk").await;
    let zone = |keys: &[(&str, &str)]| meridian_zone(ROLL, keys);
    let m = Meridian::start(dir, &zone(&[(&ksk.file, "active"), (&old.file, "active")])).await;
    let v = Validators::with_ds(m.addr, sep_anchor(&[&ksk]), m.ds().await);
    let u = v.unbound().await;
    let www = "www.val.example.";
    assert_eq!(m.published().await, sorted(vec![ksk.tag, old.tag]));
    assert_eq!(m.signers(www, RecordType::A).await, [(old.tag, 13)]);
    assert_eq!(m.signers(MZONE, RecordType::DNSKEY).await, [(ksk.tag, 13)]);
    hold_green(&[&u], "start", &m, ttl_wait(ROLL.ttl)).await;

    // 1. Publish the new ZSK; wait the DNSKEY TTL so that every cached
    //    DNSKEY RRset has it.
    m.reload_with(&zone(&[
        (&ksk.file, "active"),
        (&old.file, "active"),
        (&new.file, "published"),
    ]))
    .await;
    assert_eq!(m.published().await, sorted(vec![ksk.tag, old.tag, new.tag]));
    assert_eq!(m.signers(www, RecordType::A).await, [(old.tag, 13)]);
    hold_green(&[&u], "1: new ZSK published", &m, ttl_wait(ROLL.dnskey)).await;

    // 2. Switch: the new ZSK signs, the old one stays published until the
    //    signatures it made have left caches (the zone's longest TTL).
    m.reload_with(&zone(&[
        (&ksk.file, "active"),
        (&old.file, "published"),
        (&new.file, "active"),
    ]))
    .await;
    assert_eq!(m.published().await, sorted(vec![ksk.tag, old.tag, new.tag]));
    assert_eq!(m.signers(www, RecordType::A).await, [(new.tag, 13)]);
    hold_green(
        &[&u],
        "2: new ZSK active, old published",
        &m,
        ttl_wait(ROLL.ttl),
    )
    .await;

    // 3. Retire the old ZSK.
    m.reload_with(&zone(&[(&ksk.file, "active"), (&new.file, "active")]))
        .await;
    assert_eq!(m.published().await, sorted(vec![ksk.tag, new.tag]));
    assert_eq!(m.signers(www, RecordType::A).await, [(new.tag, 13)]);
    hold_green(&[&u], "3: old ZSK removed", &m, ttl_wait(ROLL.dnskey)).await;
}

/// README "Rollover", CSK algorithm rollover 13 → 15 (RFC 6781 §4.1.4,
/// conservative): new signatures first, then the new key, then the DS at
/// the parent (here: the trust anchor a resolver is started with), then
/// the old key, then its signatures. Resolvers that hold the old DS, both
/// DS and the new DS stay green while each applies.
#[tokio::test]
async fn meridian_csk_algorithm_rollover_keeps_unbound_green() {
    let dir = Meridian::config_dir();
    let c13 = keygen(dir.path(), "ecdsap256sha256", "csk").await;
    let c15 = keygen(dir.path(), "ed25519", "csk").await;
    assert_eq!((c13.algorithm, c15.algorithm), (13, 15));
    let zone = |keys: &[(&str, &str)]| meridian_zone(ROLL, keys);
    let m = Meridian::start(dir, &zone(&[(&c13.file, "active")])).await;
    let ds13 = m.ds().await;
    let old_ds = Validators::with_ds(m.addr, sep_anchor(&[&c13]), ds13.clone())
        .unbound()
        .await;
    let www = "www.val.example.";
    hold_green(&[&old_ds], "start", &m, ttl_wait(ROLL.ttl)).await;

    // 1. The new algorithm signs every RRset but is not in DNSKEY yet; wait
    //    the zone's longest TTL so that cached RRsets carry both.
    m.reload_with(&zone(&[(&c13.file, "active"), (&c15.file, "signing")]))
        .await;
    assert_eq!(m.published().await, [c13.tag]);
    assert_eq!(
        m.signers(www, RecordType::A).await,
        sorted(vec![(c13.tag, 13), (c15.tag, 15)])
    );
    hold_green(&[&old_ds], "1: new key signing", &m, ttl_wait(ROLL.ttl)).await;

    // 2. Publish the new key; wait the DNSKEY TTL.
    m.reload_with(&zone(&[(&c13.file, "active"), (&c15.file, "active")]))
        .await;
    assert_eq!(m.published().await, sorted(vec![c13.tag, c15.tag]));
    hold_green(&[&old_ds], "2: both keys active", &m, ttl_wait(ROLL.dnskey)).await;

    // 3. The parent's DS changes to the new key's. Resolvers that fetched
    //    the DS before keep the old one until the DS TTL (`old_ds`), ones
    //    that fetch it now get the new one (`new_ds`); `both` stands for a
    //    parent that publishes both for a while.
    let ds = m.ds().await;
    let ds15: Vec<String> = ds
        .iter()
        .filter(|l| ds_algorithm(l) == Some(15))
        .cloned()
        .collect();
    assert_eq!(ds.len(), ds13.len() + ds15.len(), "{ds:?}");
    assert!(!ds15.is_empty(), "no DS for the new key: {ds:?}");
    let new_ds = Validators::with_ds(m.addr, sep_anchor(&[&c15]), ds15)
        .unbound()
        .await;
    let both = Unbound::start(&[StubZone {
        zone: MZONE.to_owned(),
        server: m.addr,
        ds: Some(ds.clone()),
    }])
    .await;
    hold_green(
        &[&old_ds, &both, &new_ds],
        "3: DS changed at the parent",
        &m,
        ttl_wait(ROLL.ttl),
    )
    .await;
    // The DS TTL has passed: no resolver holds the old DS any more.
    drop(old_ds);
    drop(both);

    // 4. The old key leaves DNSKEY but still signs; wait the DNSKEY TTL.
    m.reload_with(&zone(&[(&c13.file, "signing"), (&c15.file, "active")]))
        .await;
    assert_eq!(m.published().await, [c15.tag]);
    assert_eq!(
        m.signers(www, RecordType::A).await,
        sorted(vec![(c13.tag, 13), (c15.tag, 15)])
    );
    hold_green(
        &[&new_ds],
        "4: old key signing only",
        &m,
        ttl_wait(ROLL.dnskey),
    )
    .await;

    // 5. Its signatures go.
    m.reload_with(&zone(&[(&c15.file, "active")])).await;
    assert_eq!(m.published().await, [c15.tag]);
    assert_eq!(m.signers(www, RecordType::A).await, [(c15.tag, 15)]);
    assert_eq!(m.signers(MZONE, RecordType::DNSKEY).await, [(c15.tag, 15)]);
    hold_green(&[&new_ds], "5: old key removed", &m, ttl_wait(ROLL.ttl)).await;
}

/// The waits are what keeps resolvers green, and the test above would see
/// a step that skips one: a ZSK that signs before its DNSKEY has reached
/// the caches (no pre-publish, DNSKEY TTL 60 s) is bogus to Unbound,
/// which still holds the DNSKEY RRset without it.
#[tokio::test]
async fn meridian_zsk_switch_without_prepublish_is_bogus_to_unbound() {
    let dir = Meridian::config_dir();
    let ksk = keygen(dir.path(), "ecdsap256sha256", "ksk").await;
    let old = keygen(dir.path(), "ecdsap256sha256", "zsk").await;
    let new = keygen(dir.path(), "ecdsap256sha256", "zsk").await;
    let t = Ttls { ttl: 1, dnskey: 60 };
    let m = Meridian::start(
        dir,
        &meridian_zone(t, &[(&ksk.file, "active"), (&old.file, "active")]),
    )
    .await;
    let v = Validators::with_ds(m.addr, sep_anchor(&[&ksk]), m.ds().await);
    let u = v.unbound().await;
    assert_green(&[&u], "start", &m).await;
    m.reload_with(&meridian_zone(
        t,
        &[
            (&ksk.file, "active"),
            (&old.file, "published"),
            (&new.file, "active"),
        ],
    ))
    .await;
    assert_eq!(
        m.signers("mail.val.example.", RecordType::A).await,
        [(new.tag, 13)]
    );
    // mail's A (TTL 1) leaves Unbound's cache; the DNSKEY RRset (60 s)
    // does not.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let r = u.query("mail.val.example.", RecordType::A, None).await;
        if r.rcode == ResponseCode::ServFail {
            break;
        }
        assert!(r.ad, "{r:?}");
        assert!(
            std::time::Instant::now() < deadline,
            "still validated 10 s after the switch: {r:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        u.log().contains("signatures from unknown keys"),
        "{}",
        u.log()
    );
}
