//! What resolvers and dig expect from an authoritative server.

use hickory_proto::op::{Message, OpCode, ResponseCode};
use hickory_proto::rr::{RData, RecordType};

use crate::harness::{TestServer, a_answers, plain_query, query, read_framed, write_framed};

/// A second zone with the edge cases: a delegation with glue, a large RRset
/// for truncation, a CNAME chain and a loop.
pub const EDGE_ZONE: &str = r#"
origin = "edge.test."
ns = ["ns1.edge.test."]
[soa]
rname = "hostmaster.edge.test."
serial = 7
ttl = 300
minimum = 900
[records]
ns1 = [{ type = "A", value = "192.0.2.53" }]
child = [{ type = "NS", value = "ns.child" }, { type = "NS", value = "ns.elsewhere.example." }]
"ns.child" = [{ type = "A", value = "192.0.2.54" }]
big = [
  { type = "TXT", value = "0000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000" },
  { type = "TXT", value = "1111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111" },
  { type = "TXT", value = "2222222222222222222222222222222222222222222222222222222222222222222222222222222222222222222222222222222222222222222222222222222222222222222222222222222222222222222222222222222222222222222222222222222222222222222222222222222222222222222222222222222" },
  { type = "TXT", value = "3333333333333333333333333333333333333333333333333333333333333333333333333333333333333333333333333333333333333333333333333333333333333333333333333333333333333333333333333333333333333333333333333333333333333333333333333333333333333333333333333333333" },
  { type = "TXT", value = "4444444444444444444444444444444444444444444444444444444444444444444444444444444444444444444444444444444444444444444444444444444444444444444444444444444444444444444444444444444444444444444444444444444444444444444444444444444444444444444444444444444" },
  { type = "TXT", value = "5555555555555555555555555555555555555555555555555555555555555555555555555555555555555555555555555555555555555555555555555555555555555555555555555555555555555555555555555555555555555555555555555555555555555555555555555555555555555555555555555555555" },
]
a = [{ type = "CNAME", value = "b" }]
b = [{ type = "CNAME", value = "c" }]
c = [{ type = "A", value = "192.0.2.99" }]
dangling = [{ type = "CNAME", value = "nothing-here" }]
tosub = [{ type = "CNAME", value = "www.child" }]
"#;

async fn both() -> TestServer {
    let example = crate::harness::example_zone();
    TestServer::start(&[
        ("gslb.example.com.toml", &example),
        ("edge.test.toml", EDGE_ZONE),
    ])
    .await
}

fn types(records: &[hickory_proto::rr::Record]) -> Vec<RecordType> {
    records.iter().map(|r| r.record_type()).collect()
}

#[tokio::test]
async fn apex_soa_and_ns_are_authoritative_with_glue() {
    let s = both().await;
    let r = s.ask("gslb.example.com.", RecordType::SOA, None).await;
    assert_eq!(r.metadata.response_code, ResponseCode::NoError);
    assert!(r.metadata.authoritative);
    assert!(!r.metadata.recursion_available);
    assert_eq!(types(&r.answers), [RecordType::SOA]);
    match &r.answers[0].data {
        RData::SOA(soa) => {
            assert_eq!(soa.serial, 2026112501);
            assert_eq!(soa.mname.to_ascii(), "ns1.gslb.example.com.");
        }
        other => panic!("{other:?}"),
    }
    let r = s.ask("gslb.example.com.", RecordType::NS, None).await;
    assert!(r.metadata.authoritative);
    assert_eq!(types(&r.answers), [RecordType::NS, RecordType::NS]);
    // Glue for in-zone name servers goes to the additional section.
    let glue: Vec<_> = r
        .additionals
        .iter()
        .filter(|a| a.record_type() == RecordType::A)
        .map(|a| a.name.to_ascii())
        .collect();
    assert!(
        glue.contains(&"ns1.gslb.example.com.".to_string()),
        "{glue:?}"
    );
    assert!(
        glue.contains(&"ns2.gslb.example.com.".to_string()),
        "{glue:?}"
    );
}

#[tokio::test]
async fn nxdomain_and_nodata_carry_soa_with_negative_ttl() {
    let s = both().await;
    // NXDOMAIN: name does not exist. Negative TTL = min(SOA TTL 3600, minimum 60).
    let r = s.ask("nope.gslb.example.com.", RecordType::A, None).await;
    assert_eq!(r.metadata.response_code, ResponseCode::NXDomain);
    assert!(r.metadata.authoritative);
    assert!(r.answers.is_empty());
    assert_eq!(types(&r.authorities), [RecordType::SOA]);
    assert_eq!(r.authorities[0].ttl, 60);
    // The other zone: SOA TTL 300 < minimum 900.
    let r = s.ask("nope.edge.test.", RecordType::A, None).await;
    assert_eq!(r.authorities[0].ttl, 300);

    // NODATA: the name exists, the type does not.
    let r = s
        .ask("mail.gslb.example.com.", RecordType::AAAA, None)
        .await;
    assert_eq!(r.metadata.response_code, ResponseCode::NoError);
    assert!(r.metadata.authoritative);
    assert!(r.answers.is_empty());
    assert_eq!(types(&r.authorities), [RecordType::SOA]);

    // An empty non-terminal (_tcp exists because _sip._tcp does) is NODATA.
    let r = s.ask("_tcp.gslb.example.com.", RecordType::A, None).await;
    assert_eq!(r.metadata.response_code, ResponseCode::NoError);
    assert_eq!(types(&r.authorities), [RecordType::SOA]);

    // A service name asked for a type it has no data for: NODATA, and the
    // negative TTL is capped by the service TTL (30).
    let r = s.ask("www.gslb.example.com.", RecordType::MX, None).await;
    assert_eq!(r.metadata.response_code, ResponseCode::NoError);
    assert!(r.answers.is_empty());
    assert!(r.authorities[0].ttl <= 30);
}

#[tokio::test]
async fn names_outside_every_zone_are_refused() {
    let s = both().await;
    for name in [
        "example.org.",
        "example.com.",
        "gslb.example.com.evil.",
        ".",
    ] {
        let r = s.ask(name, RecordType::A, None).await;
        assert_eq!(r.metadata.response_code, ResponseCode::Refused, "{name}");
        assert!(!r.metadata.authoritative, "{name}");
        assert!(r.answers.is_empty());
    }
    // Other classes are not served either.
    let mut q = query("gslb.example.com.", RecordType::TXT, None);
    q.queries[0].set_query_class(hickory_proto::rr::DNSClass::CH);
    assert_eq!(
        s.udp(&q).await.metadata.response_code,
        ResponseCode::Refused
    );
}

#[tokio::test]
async fn other_opcodes_get_notimp() {
    let s = both().await;
    for op in [OpCode::Status, OpCode::Notify, OpCode::Update] {
        let mut q = query("gslb.example.com.", RecordType::SOA, None);
        q.metadata.op_code = op;
        let r = s.udp(&q).await;
        assert_eq!(r.metadata.response_code, ResponseCode::NotImp, "{op:?}");
        assert_eq!(r.metadata.id, q.metadata.id);
    }
}

#[tokio::test]
async fn zone_transfers_are_refused() {
    let s = both().await;
    let r = s
        .tcp(&query("gslb.example.com.", RecordType::AXFR, None))
        .await;
    assert_eq!(r.metadata.response_code, ResponseCode::Refused);
}

#[tokio::test]
async fn any_is_answered_minimally() {
    let s = both().await;
    // RFC 8482: one RRset, not everything at the name.
    let r = s.ask("gslb.example.com.", RecordType::ANY, None).await;
    assert_eq!(r.metadata.response_code, ResponseCode::NoError);
    assert!(!r.answers.is_empty());
    let t = r.answers[0].record_type();
    assert!(
        r.answers.iter().all(|a| a.record_type() == t),
        "{:?}",
        types(&r.answers)
    );
    // For a service, the A answer.
    let r = s
        .ask(
            "www.gslb.example.com.",
            RecordType::ANY,
            Some("11.2.0.0/24"),
        )
        .await;
    assert_eq!(a_answers(&r), ["198.51.100.10"]);
}

#[tokio::test]
async fn edns_is_echoed_and_bad_versions_rejected() {
    let s = both().await;
    let r = s.ask("gslb.example.com.", RecordType::SOA, None).await;
    let edns = r
        .edns
        .as_ref()
        .expect("OPT in the response to an EDNS query");
    assert_eq!(edns.max_payload(), 1232);
    assert_eq!(edns.version(), 0);

    let r = s
        .udp(&plain_query("gslb.example.com.", RecordType::SOA))
        .await;
    assert!(
        r.edns.is_none(),
        "no OPT in a response to a query without one"
    );
    assert!(r.metadata.authoritative);

    // RFC 3225 §3: DO is copied into the response.
    let mut q = query("www.gslb.example.com.", RecordType::A, Some("11.2.0.0/24"));
    q.edns.as_mut().unwrap().set_dnssec_ok(true);
    for r in [s.udp(&q).await, s.tcp(&q).await] {
        assert!(r.edns.as_ref().unwrap().flags().dnssec_ok);
        assert!(!r.metadata.authentic_data);
    }

    let mut q = query("gslb.example.com.", RecordType::SOA, None);
    q.edns.as_mut().unwrap().set_version(1);
    let r = s.udp(&q).await;
    // BADVERS is extended rcode 16 (hickory decodes 16 as BADSIG: same code).
    assert_eq!(u16::from(r.metadata.response_code), 16);
    assert_eq!(r.edns.as_ref().expect("OPT carries BADVERS").version(), 0);
}

#[tokio::test]
async fn static_records_of_common_types() {
    let s = both().await;
    let r = s.ask("gslb.example.com.", RecordType::MX, None).await;
    match &r.answers[0].data {
        RData::MX(mx) => assert_eq!(mx.exchange.to_ascii(), "mail.gslb.example.com."),
        other => panic!("{other:?}"),
    }
    // The MX target's address rides along in the additional section.
    assert!(
        r.additionals
            .iter()
            .any(|a| a.record_type() == RecordType::A)
    );
    let r = s.ask("gslb.example.com.", RecordType::TXT, None).await;
    assert_eq!(r.answers[0].data.to_string(), "v=spf1 -all");
    let r = s.ask("gslb.example.com.", RecordType::CAA, None).await;
    assert_eq!(types(&r.answers), [RecordType::CAA]);
    let r = s
        .ask("_sip._tcp.gslb.example.com.", RecordType::SRV, None)
        .await;
    assert_eq!(
        r.answers[0].data.to_string(),
        "10 5 5060 mail.gslb.example.com."
    );
    let r = s.ask("ns1.gslb.example.com.", RecordType::AAAA, None).await;
    assert_eq!(a_answers(&r), ["2001:db8::53"]);
}

#[tokio::test]
async fn names_match_case_insensitively_and_keep_the_query_case() {
    let s = both().await;
    let r = s.ask("MaIl.GsLb.ExAmPlE.cOm.", RecordType::A, None).await;
    assert_eq!(a_answers(&r), ["192.0.2.25"]);
    assert_eq!(r.queries[0].name().to_ascii(), "MaIl.GsLb.ExAmPlE.cOm.");
    assert_eq!(r.answers[0].name.to_ascii(), "MaIl.GsLb.ExAmPlE.cOm.");
    let r = s
        .ask("WWW.GSLB.EXAMPLE.COM.", RecordType::A, Some("11.3.0.0/24"))
        .await;
    assert_eq!(r.answers[0].name.to_ascii(), "WWW.GSLB.EXAMPLE.COM.");
    assert_eq!(a_answers(&r), ["203.0.113.10"]);
}

#[tokio::test]
async fn in_zone_cnames_are_followed() {
    let s = both().await;
    // app -> www (a geo service): the chain plus the geo answer.
    let r = s.ask("app.gslb.example.com.", RecordType::A, None).await;
    assert_eq!(types(&r.answers), [RecordType::CNAME, RecordType::A]);
    // With ECS, RFC 7871 §7.2.1: only the first CNAME, with its own
    // scope (0, the same for every client), so a resolver caches it once
    // and asks for the tailored target itself.
    let r = s
        .ask("app.gslb.example.com.", RecordType::A, Some("11.2.0.0/24"))
        .await;
    assert_eq!(types(&r.answers), [RecordType::CNAME]);
    assert_eq!(r.metadata.response_code, ResponseCode::NoError);
    assert!(r.metadata.authoritative);
    assert_eq!(crate::harness::ecs_of(&r).unwrap().2, 0);
    // The target, asked for directly, is tailored.
    let r = s
        .ask("www.gslb.example.com.", RecordType::A, Some("11.2.0.0/24"))
        .await;
    assert_eq!(a_answers(&r), ["198.51.100.10"]);
    assert!(crate::harness::ecs_of(&r).unwrap().2 > 0);

    let r = s.ask("a.edge.test.", RecordType::A, None).await;
    assert_eq!(
        types(&r.answers),
        [RecordType::CNAME, RecordType::CNAME, RecordType::A]
    );
    // Asking for the CNAME itself does not follow it.
    let r = s.ask("a.edge.test.", RecordType::CNAME, None).await;
    assert_eq!(types(&r.answers), [RecordType::CNAME]);
    // Out of zone: only the CNAME; the resolver continues.
    let r = s.ask("status.gslb.example.com.", RecordType::A, None).await;
    assert_eq!(types(&r.answers), [RecordType::CNAME]);
    assert_eq!(r.answers[0].ttl, 300);
    // RFC 6604: the rcode describes the end of the chain.
    let r = s.ask("dangling.edge.test.", RecordType::A, None).await;
    assert_eq!(r.metadata.response_code, ResponseCode::NXDomain);
    assert_eq!(types(&r.answers), [RecordType::CNAME]);
    // Into a delegation: the CNAME is ours (AA), then the referral.
    let r = s.ask("tosub.edge.test.", RecordType::A, None).await;
    assert!(r.metadata.authoritative, "AA covers the in-zone CNAME");
    assert_eq!(types(&r.answers), [RecordType::CNAME]);
    assert_eq!(types(&r.authorities), [RecordType::NS, RecordType::NS]);
}

#[tokio::test]
async fn delegations_get_referrals_with_glue() {
    let s = both().await;
    for name in ["child.edge.test.", "www.child.edge.test."] {
        let r = s.ask(name, RecordType::A, None).await;
        assert_eq!(r.metadata.response_code, ResponseCode::NoError, "{name}");
        assert!(!r.metadata.authoritative, "a referral is not authoritative");
        assert!(r.answers.is_empty());
        assert_eq!(types(&r.authorities), [RecordType::NS, RecordType::NS]);
        let glue: Vec<_> = r.additionals.iter().map(|a| a.name.to_ascii()).collect();
        assert_eq!(glue, ["ns.child.edge.test."]);
    }
}

#[tokio::test]
async fn large_answers_truncate_over_udp_and_arrive_whole_over_tcp() {
    let s = both().await;
    // Without EDNS the limit is 512 bytes.
    let r = s.udp(&plain_query("big.edge.test.", RecordType::TXT)).await;
    assert!(r.metadata.truncation, "TC set");
    assert!(r.answers.is_empty());
    assert_eq!(r.queries.len(), 1, "the question is kept");
    // With EDNS and a small advertised size, the client's size is honoured.
    let mut q = query("big.edge.test.", RecordType::TXT, None);
    q.edns.as_mut().unwrap().set_max_payload(1000);
    let bytes = crate::harness::udp_exchange(s.addr, &q.to_vec().unwrap()).await;
    assert!(bytes.len() <= 1000);
    let r = Message::from_vec(&bytes).unwrap();
    assert!(r.metadata.truncation);
    assert!(r.edns.is_some(), "the OPT survives truncation");
    // With a large advertised size, answers still stop at our 1232.
    let mut q = query("big.edge.test.", RecordType::TXT, None);
    q.edns.as_mut().unwrap().set_max_payload(4096);
    let bytes = crate::harness::udp_exchange(s.addr, &q.to_vec().unwrap()).await;
    assert!(bytes.len() <= 1232);
    assert!(Message::from_vec(&bytes).unwrap().metadata.truncation);
    // The retry over TCP gets everything.
    let r = s.tcp(&plain_query("big.edge.test.", RecordType::TXT)).await;
    assert!(!r.metadata.truncation);
    assert_eq!(r.answers.len(), 6);
}

#[tokio::test]
async fn tcp_connections_carry_many_queries() {
    let s = both().await;
    let mut conn = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    // Pipelined: three queries written before any response is read.
    let names = [
        "mail.gslb.example.com.",
        "ns1.gslb.example.com.",
        "c.edge.test.",
    ];
    let queries: Vec<Message> = names
        .iter()
        .map(|n| query(n, RecordType::A, None))
        .collect();
    for q in &queries {
        write_framed(&mut conn, &q.to_vec().unwrap()).await;
    }
    let mut ids = Vec::new();
    for _ in &queries {
        let r = Message::from_vec(&read_framed(&mut conn).await).unwrap();
        assert_eq!(r.answers.len(), 1);
        ids.push(r.metadata.id);
    }
    let mut want: Vec<u16> = queries.iter().map(|q| q.metadata.id).collect();
    want.sort_unstable();
    ids.sort_unstable();
    assert_eq!(ids, want);
}

#[tokio::test]
async fn hickory_client_over_udp_and_tcp() {
    use hickory_net::client::{Client, ClientHandle};
    use hickory_net::runtime::TokioRuntimeProvider;
    use hickory_net::tcp::TcpClientStream;
    use hickory_net::udp::UdpClientStream;
    use hickory_proto::rr::{DNSClass, Name};

    let s = both().await;
    let name = Name::from_ascii("mail.gslb.example.com.").unwrap();

    let conn = UdpClientStream::builder(s.addr, TokioRuntimeProvider::default()).build();
    let (mut client, bg) = Client::<TokioRuntimeProvider>::from_sender(conn);
    tokio::spawn(bg);
    let r = client
        .query(name.clone(), DNSClass::IN, RecordType::A)
        .await
        .unwrap();
    assert_eq!(crate::harness::a_answers(&r), ["192.0.2.25"]);
    assert!(r.metadata.authoritative);

    let (stream, sender) = TcpClientStream::new(s.addr, None, None, TokioRuntimeProvider::new());
    let (mut client, bg) = Client::<TokioRuntimeProvider>::new(stream.await.unwrap(), sender);
    tokio::spawn(bg);
    let r = client
        .query(name, DNSClass::IN, RecordType::A)
        .await
        .unwrap();
    assert_eq!(crate::harness::a_answers(&r), ["192.0.2.25"]);
}

#[tokio::test]
async fn serves_ipv6_listeners() {
    // Skip quietly only where the machine has no IPv6 loopback at all.
    if std::net::UdpSocket::bind("[::1]:0").is_err() {
        eprintln!("no IPv6 loopback here; skipping");
        return;
    }
    let example = crate::harness::example_zone();
    let s = TestServer::start_with(crate::harness::Setup {
        zones: &[("gslb.example.com.toml", &example)],
        listen: "[::1]:0",
        ..crate::harness::Setup::default()
    })
    .await;
    assert!(s.addr.is_ipv6());
    // From ::1 without ECS the client is unknown to the test database:
    // the service's first datacenter (us-east).
    let r = s.ask("www.gslb.example.com.", RecordType::AAAA, None).await;
    assert_eq!(a_answers(&r), ["2001:db8:10::10"]);
    let r = s
        .tcp(&query(
            "www.gslb.example.com.",
            RecordType::AAAA,
            Some("2001:db8:3::/56"),
        ))
        .await;
    assert_eq!(a_answers(&r), ["2001:db8:30::10"]);
}

#[tokio::test]
async fn a_second_server_on_the_same_port_is_an_error() {
    let s = TestServer::example().await;
    let dir = tempfile::tempdir().unwrap();
    let example = crate::harness::example_zone();
    let path = crate::harness::write_config(
        dir.path(),
        &crate::harness::Setup {
            zones: &[("gslb.example.com.toml", &example)],
            server_toml: "threads = 2",
            ..crate::harness::Setup::default()
        },
    );
    let err = meridian::Server::start(&path, Some(vec![s.addr]))
        .await
        .expect_err("the port is taken");
    assert!(err.to_string().contains(&s.addr.to_string()), "{err}");
    // The first server is undisturbed.
    let r = s.ask("mail.gslb.example.com.", RecordType::A, None).await;
    assert_eq!(a_answers(&r), ["192.0.2.25"]);
}
