//! Wildcards (RFC 4592) on the real server over UDP and TCP: the RFC's own
//! example zone answered as §2.2.1 says, and a wildcard service whose
//! answers follow the health of real probe targets.

use std::time::Duration;

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::{RData, RecordType};
use tokio::net::TcpListener;

use crate::harness::{TestServer, a_answers, plain_query};

/// RFC 4592 §2.2.1's example zone, in Meridian's TOML.
const RFC_ZONE: &str = r#"
origin = "example."
ns = ["ns.example.com.", "ns.example.net."]
[soa]
rname = "hostmaster.example.com."
serial = 1
[records]
"*" = [
  { type = "TXT", value = "this is a wildcard" },
  { type = "MX", value = "10 host1" },
]
"sub.*" = [{ type = "TXT", value = "this is not a wildcard" }]
host1 = [{ type = "A", value = "192.0.2.1" }]
"_ssh._tcp.host1" = [{ type = "SRV", value = "0 0 22 host1" }]
"_ssh._tcp.host2" = [{ type = "SRV", value = "0 0 22 host1" }]
subdel = [
  { type = "NS", value = "ns.example.com." },
  { type = "NS", value = "ns.example.net." },
]
"#;

/// Asks over UDP and TCP; both must give the same message.
async fn ask(s: &TestServer, name: &str, qtype: RecordType) -> Message {
    let q = plain_query(name, qtype);
    let udp = s.udp(&q).await;
    let tcp = s.tcp(&q).await;
    assert_eq!(udp, tcp, "{name} {qtype}: UDP and TCP differ");
    udp
}

fn texts(m: &Message) -> Vec<String> {
    m.answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::TXT(t) => Some(t.to_string()),
            _ => None,
        })
        .collect()
}

fn nodata(m: &Message, what: &str) {
    assert_eq!(m.metadata.response_code, ResponseCode::NoError, "{what}");
    assert!(m.answers.is_empty(), "{what}: {:?}", m.answers);
    assert_eq!(m.authorities[0].record_type(), RecordType::SOA, "{what}");
}

fn nxdomain(m: &Message, what: &str) {
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain, "{what}");
    assert!(m.answers.is_empty(), "{what}: {:?}", m.answers);
}

#[tokio::test]
async fn the_rfc_4592_examples_are_answered_as_the_rfc_says() {
    let s = TestServer::start(&[("example.toml", RFC_ZONE)]).await;

    // Synthesized: the wildcard's MX, owned by the name asked for, in
    // the case it was asked in.
    let m = ask(&s, "HoSt3.example.", RecordType::MX).await;
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert!(m.metadata.authoritative);
    assert_eq!(m.answers.len(), 1, "{m:?}");
    assert_eq!(m.answers[0].name.to_ascii(), "HoSt3.example.");
    match &m.answers[0].data {
        RData::MX(mx) => assert_eq!(mx.exchange.to_ascii(), "host1.example."),
        other => panic!("not an MX: {other:?}"),
    }
    // The exchange's address, as for any MX answer.
    assert!(
        m.additionals
            .iter()
            .any(|r| r.name.to_ascii() == "host1.example." && r.record_type() == RecordType::A)
    );
    // The wildcard has no A: NODATA, not NXDOMAIN.
    nodata(&ask(&s, "host3.example.", RecordType::A).await, "host3 A");
    // Any depth below the closest encloser.
    let m = ask(&s, "foo.bar.example.", RecordType::TXT).await;
    assert_eq!(texts(&m), ["this is a wildcard"]);
    assert_eq!(m.answers[0].name.to_ascii(), "foo.bar.example.");

    // Not synthesized: names that exist, empty non-terminals below which
    // no wildcard sits, delegations, names below the wildcard itself.
    nodata(&ask(&s, "host1.example.", RecordType::MX).await, "host1 MX");
    nodata(&ask(&s, "sub.*.example.", RecordType::MX).await, "sub.* MX");
    let m = ask(&s, "sub.*.example.", RecordType::TXT).await;
    assert_eq!(texts(&m), ["this is not a wildcard"]);
    nxdomain(
        &ask(&s, "_telnet._tcp.host1.example.", RecordType::SRV).await,
        "_telnet._tcp.host1 SRV",
    );
    nxdomain(
        &ask(&s, "ghost.*.example.", RecordType::MX).await,
        "ghost.* MX",
    );
    let m = ask(&s, "host.subdel.example.", RecordType::A).await;
    assert!(!m.metadata.authoritative, "a referral: {m:?}");
    assert!(m.answers.is_empty());
    assert!(
        m.authorities
            .iter()
            .all(|r| r.record_type() == RecordType::NS && r.name.to_ascii() == "subdel.example."),
        "{m:?}"
    );

    // The wildcard's own name is an ordinary name.
    let m = ask(&s, "*.example.", RecordType::TXT).await;
    assert_eq!(m.answers[0].name.to_ascii(), "*.example.");
    assert_eq!(texts(&m), ["this is a wildcard"]);
}

/// A TCP probe target the test can stop and restart on the same port.
struct Target {
    port: u16,
    listener: Option<TcpListener>,
}

impl Target {
    async fn start(port: u16) -> Self {
        let listener = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
        let port = listener.local_addr().unwrap().port();
        Self {
            port,
            listener: Some(listener),
        }
    }
}

const CDN_ZONE: &str = r#"
origin = "cdn.test."
ns = ["ns1.cdn.test."]
[soa]
rname = "hostmaster.cdn.test."
serial = 1
[records]
ns1 = [{ type = "A", value = "192.0.2.53" }]
"static.edge" = [{ type = "TXT", value = "blocks the wildcard" }]
[datacenters.a]
addresses = ["192.0.2.1"]
probe = { type = "tcp", targets = ["127.0.0.1:PORT_A"], interval = "100ms", timeout = "50ms", fall = 1, rise = 1, jitter = 0.0 }
[datacenters.b]
addresses = ["192.0.2.2", "2001:db8::2"]
[services."*.edge"]
policy = "failover"
datacenters = ["a", "b"]
ttl = 20
"#;

/// Waits (bounded) until `name` answers `want`, re-checking after every
/// health publication.
async fn until_answer(s: &TestServer, name: &str, want: &[&str]) {
    let mut changes = s.server.monitor().subscribe();
    let wait = async {
        loop {
            if a_answers(&ask(s, name, RecordType::A).await) == want {
                return;
            }
            changes.changed().await.expect("monitor alive");
        }
    };
    tokio::time::timeout(Duration::from_secs(10), wait)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {name} to answer {want:?}"));
}

#[tokio::test]
async fn a_wildcard_service_answers_every_name_below_it_by_health() {
    let mut target = Target::start(0).await;
    let zone = CDN_ZONE.replace("PORT_A", &target.port.to_string());
    let s = TestServer::start(&[("cdn.test.toml", &zone)]).await;

    for name in [
        "img.edge.cdn.test.",
        "a.b.c.edge.cdn.test.",
        "X.Edge.cdn.test.",
    ] {
        let m = ask(&s, name, RecordType::A).await;
        assert_eq!(a_answers(&m), ["192.0.2.1"], "{name}");
        assert_eq!(m.answers[0].name.to_ascii(), name);
        assert_eq!(m.answers[0].ttl, 20);
    }
    // Datacenter a has no IPv6 address; the failover order is by
    // datacenter, so AAAA is NODATA while a is up.
    nodata(
        &ask(&s, "img.edge.cdn.test.", RecordType::AAAA).await,
        "AAAA",
    );
    // Other types at a synthesized service name: NODATA.
    nodata(&ask(&s, "img.edge.cdn.test.", RecordType::TXT).await, "TXT");
    // An existing name below the encloser blocks it, and so do the
    // names below that one.
    nodata(
        &ask(&s, "static.edge.cdn.test.", RecordType::A).await,
        "static A",
    );
    nxdomain(
        &ask(&s, "x.static.edge.cdn.test.", RecordType::A).await,
        "below an existing name",
    );
    // Outside the wildcard: NXDOMAIN.
    nxdomain(&ask(&s, "img.cdn.test.", RecordType::A).await, "img");

    // `explain` names the wildcard service for a synthesized name.
    let text = meridian::explain::explain(
        &s.server.snapshot(),
        "img.edge.cdn.test",
        "A",
        ("192.0.2.9".parse().unwrap(), 32),
    )
    .unwrap();
    assert!(text.contains("*.edge"), "{text}");

    // a's target stops: every name below the wildcard moves to b.
    target.listener = None;
    until_answer(&s, "img.edge.cdn.test.", &["192.0.2.2"]).await;
    let m = ask(&s, "other.name.edge.cdn.test.", RecordType::A).await;
    assert_eq!(a_answers(&m), ["192.0.2.2"]);
    let m = ask(&s, "img.edge.cdn.test.", RecordType::AAAA).await;
    assert_eq!(m.answers.len(), 1, "{m:?}");

    // It recovers: back to a.
    let _target = Target::start(target.port).await;
    until_answer(&s, "img.edge.cdn.test.", &["192.0.2.1"]).await;
}

/// Wildcards come in from a migrated zone file as from `[records]`.
#[tokio::test]
async fn wildcards_load_from_a_records_file() {
    let toml = r#"
origin = "files.test."
ns = ["ns1.files.test."]
records_file = "files.zone"
[soa]
rname = "hostmaster.files.test."
serial = 1
"#;
    let file = "\
$TTL 300
@           IN NS   ns1
ns1         IN A    192.0.2.53
*.hosts     IN A    192.0.2.7
known.hosts IN A    192.0.2.8
*           IN TXT  \"catch-all\"
";
    let s = TestServer::start(&[("files.test.toml", toml), ("files.zone", file)]).await;
    let m = ask(&s, "anything.hosts.files.test.", RecordType::A).await;
    assert_eq!(a_answers(&m), ["192.0.2.7"]);
    let m = ask(&s, "known.hosts.files.test.", RecordType::A).await;
    assert_eq!(a_answers(&m), ["192.0.2.8"]);
    // The apex wildcard covers the rest, but not below `hosts`, whose own
    // wildcard is the closest.
    let m = ask(&s, "other.files.test.", RecordType::TXT).await;
    assert_eq!(texts(&m), ["catch-all"]);
    nodata(
        &ask(&s, "anything.hosts.files.test.", RecordType::TXT).await,
        "hosts wildcard has no TXT",
    );
}
