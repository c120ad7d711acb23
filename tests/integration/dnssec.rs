//! DNSSEC (issue 13): keys and `meridian dnssec keygen|ds`, and signed
//! answers from a real server, each checked twice: in Rust with
//! hickory's verifier over the RRset against the zone's DNSKEY, and by
//! BIND's `delv` with the zone's own trust anchor ("; fully validated").
//!
//! `delv` and `dnssec-dsfromkey`/`dnssec-keygen` (Debian bind9-dnsutils
//! and bind9-utils, installed by scripts/test.sh) must be present: the
//! tests fail, naming the tool, when they are not.

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use hickory_proto::dnssec::rdata::{DNSKEY, DNSSECRData};
use hickory_proto::dnssec::{PublicKey, Verifier};
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use ipnet::IpNet;
use mmdb_writer::Writer;
use serde::Serialize;

use crate::harness::{
    Setup, TestServer, do_query, query, tcp_exchange, udp_exchange, verify_rrsigs,
    write_dnssec_key, zone_head,
};

const ORIGIN: &str = "sec.test.";

/// A key pair for the test zone written in BIND's format into `dir`;
/// returns its base path.
fn make_key(dir: &Path, alg: meridian::dnssec::keys::KeyAlgorithm, flags: u16) -> PathBuf {
    write_dnssec_key(dir, ORIGIN, alg, flags).0
}

/// The test zone: static records, a CNAME chain, a wildcard, an empty
/// non-terminal, an insecure and a secure delegation, a big TXT RRset,
/// and three services (geo, failover, two answers per query).
fn zone_text(dnssec: &str) -> String {
    let big: Vec<String> = (0..3)
        .map(|i| format!("{{ type = \"TXT\", value = \"{}{i}\" }}", "x".repeat(120)))
        .collect();
    format!(
        r#"{head}static = [{{ type = "A", value = "192.0.2.1" }}, {{ type = "A", value = "192.0.2.2" }}]
app = [{{ type = "CNAME", value = "alias" }}]
alias = [{{ type = "CNAME", value = "www" }}]
tosub = [{{ type = "CNAME", value = "host.sub" }}]
dangling = [{{ type = "CNAME", value = "gone" }}]
"*.wild" = [{{ type = "A", value = "192.0.2.77" }}]
"a.ent" = [{{ type = "A", value = "192.0.2.8" }}]
sub = [{{ type = "NS", value = "ns.sub" }}]
"ns.sub" = [{{ type = "A", value = "192.0.2.60" }}]
secure = [
  {{ type = "NS", value = "ns.elsewhere.example." }},
  {{ type = "DS", value = "12345 13 2 {ds}" }},
]
big = [{big}]

[datacenters.us-east]
location = [39.04, -77.49]
addresses = ["192.0.2.10", "2001:db8:10::10"]

[datacenters.eu-west]
location = [53.35, -6.26]
addresses = ["198.51.100.10", "2001:db8:20::10"]

[datacenters.ap-southeast]
location = [1.35, 103.82]
addresses = ["203.0.113.10", "2001:db8:30::10"]

[services.www]
policy = "geo"
datacenters = ["us-east", "eu-west", "ap-southeast"]
ttl = 30

[services.api]
policy = "failover"
datacenters = ["eu-west", "us-east"]
ttl = 30

[services.pair]
policy = "failover"
datacenters = ["eu-west", "us-east", "ap-southeast"]
max_answers = 2
ttl = 30

{dnssec}
"#,
        head = zone_head(ORIGIN),
        ds = "AB".repeat(32),
        big = big.join(", "),
    )
}

/// A flat-schema GeoIP record.
#[derive(Serialize)]
struct Flat {
    country_code: &'static str,
}

/// The harness's test networks, with loopback split: 127.0.0.0/25 in
/// Japan, 127.0.0.128/25 in Germany, so `delv -b` can ask from either.
fn geo_db() -> Vec<u8> {
    let mut w = Writer::new("Meridian-Test-Flat");
    for (net, cc) in [
        ("11.1.0.0/16", "US"),
        ("11.2.0.0/16", "DE"),
        ("11.3.0.0/16", "JP"),
        ("127.0.0.0/25", "JP"),
        ("127.0.0.128/25", "DE"),
    ] {
        w.insert(net.parse::<IpNet>().unwrap(), &Flat { country_code: cc })
            .unwrap();
    }
    w.to_bytes().unwrap()
}

/// A signed server with one key of each kind listed in `keys`.
struct Signed {
    server: TestServer,
    dnskeys: Vec<DNSKEY>,
    anchor: PathBuf,
    _keys: tempfile::TempDir,
}

impl Signed {
    /// One UDP query with DO set, no ECS.
    async fn ask(&self, name: &str, qtype: RecordType) -> Message {
        self.server.udp(&do_query(name, qtype, None)).await
    }
}

/// A signed server with one ECDSA P-256 CSK.
async fn start_csk() -> Signed {
    start_signed(&[(meridian::dnssec::keys::KeyAlgorithm::EcdsaP256Sha256, 257)]).await
}

async fn start_signed(keys: &[(meridian::dnssec::keys::KeyAlgorithm, u16)]) -> Signed {
    let key_dir = tempfile::tempdir().unwrap();
    let bases: Vec<PathBuf> = keys
        .iter()
        .map(|&(alg, flags)| make_key(key_dir.path(), alg, flags))
        .collect();
    start_with_keys(key_dir, &bases, "").await
}

/// A signed server on the keys `bases`, with `extra` lines in `[dnssec]`.
async fn start_with_keys(key_dir: tempfile::TempDir, bases: &[PathBuf], extra: &str) -> Signed {
    let entries: Vec<String> = bases.iter().map(|b| key_entry(b, "active")).collect();
    let zone = zone_text(&format!(
        "[dnssec]\nkeys = [{}]\n{extra}",
        entries.join(", ")
    ));
    let server = TestServer::start_with(Setup {
        zones: &[("sec.test.toml", &zone)],
        geoip: geo_db(),
        ..Setup::default()
    })
    .await;
    let mut dnskeys = Vec::new();
    let mut anchors = String::from("trust-anchors {\n");
    for b in bases {
        let text = std::fs::read_to_string(meridian::dnssec::keys::key_path(b)).unwrap();
        let (_, key) = meridian::dnssec::keys::parse_key_file(&text).unwrap();
        if key.flags() == 257 {
            anchors.push_str(&format!(
                "  {ORIGIN} static-key 257 3 {} \"{}\";\n",
                u8::from(Verifier::algorithm(&key)),
                data_encoding::BASE64.encode(key.public_key().public_bytes())
            ));
        }
        dnskeys.push(key);
    }
    anchors.push_str("};\n");
    let anchor = key_dir.path().join("anchor.conf");
    std::fs::write(&anchor, anchors).unwrap();
    Signed {
        server,
        dnskeys,
        anchor,
        _keys: key_dir,
    }
}

/// A `[dnssec] keys` entry for the key at `base`.
fn key_entry(base: &Path, state: &str) -> String {
    format!(
        "{{ file = {:?}, state = \"{state}\" }}",
        base.display().to_string()
    )
}

/// Verifies every RRset of the answer and authority sections against
/// `keys` (see [`verify_rrsigs`]), now. Returns how many RRsets were
/// verified.
fn verify_sections(m: &Message, keys: &[DNSKEY]) -> usize {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    verify_rrsigs(m, keys, ORIGIN, now).len()
}

/// The path of `tool`, or a failure naming it and how to install it.
fn tool<'a>(name: &'a str, package: &str) -> &'a str {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {name}")])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        found,
        "{name} is missing: install {package} (scripts/test.sh does)"
    );
    name
}

/// Runs `cmd`, which must exit 0 (else the test fails with its stderr);
/// returns its standard output.
fn stdout_of(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `delv` against the server with the zone's trust anchor, from `source`;
/// returns its output after checking it says the answer validated.
async fn delv(s: &Signed, source: &str, name: &str, qtype: &str, tcp: bool) -> String {
    let delv = tool("delv", "bind9-dnsutils");
    let addr: SocketAddr = s.server.addr;
    let mut cmd = tokio::process::Command::new(delv);
    cmd.arg(format!("@{}", addr.ip()))
        .args(["-p", &addr.port().to_string()])
        .args(["-b", source])
        .arg("-a")
        .arg(&s.anchor)
        .arg(format!("+root={ORIGIN}"))
        .args([name, qtype]);
    if tcp {
        cmd.arg("+tcp");
    }
    let out = tokio::time::timeout(Duration::from_secs(20), cmd.output())
        .await
        .expect("delv finishes")
        .expect("delv runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("; fully validated") || text.contains("; negative response, fully validated"),
        "delv {name} {qtype} from {source} did not validate:\n{text}"
    );
    text
}

fn addresses(m: &Message) -> Vec<String> {
    let mut v: Vec<String> = m
        .answers
        .iter()
        .filter(|r| matches!(r.record_type(), RecordType::A | RecordType::AAAA))
        .map(|r| r.data.to_string())
        .collect();
    v.sort();
    v
}

/// The first RRSIG of the answer section.
fn first_rrsig(m: &Message) -> Option<Record> {
    m.answers
        .iter()
        .find(|r| r.record_type() == RecordType::RRSIG)
        .cloned()
}

/// The key tags of the answer section's RRSIGs over `covered`, sorted.
fn signer_tags(m: &Message, covered: RecordType) -> Vec<u16> {
    let mut tags: Vec<u16> = m
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::DNSSEC(DNSSECRData::RRSIG(s)) if s.input().type_covered == covered => {
                Some(s.input().key_tag)
            }
            _ => None,
        })
        .collect();
    tags.sort();
    tags
}

/// The NSEC of a negative answer and its type list.
fn nsec_types(m: &Message) -> (Name, Name, Vec<u16>) {
    m.authorities
        .iter()
        .find_map(|r| match &r.data {
            RData::DNSSEC(DNSSECRData::NSEC(n)) => Some((
                r.name.clone(),
                n.next_domain_name().clone(),
                n.type_bit_maps().map(u16::from).collect(),
            )),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no NSEC in\n{m}"))
}

/// Every answer kind with DO=1, verified in Rust and by delv: static A,
/// SOA, NS, DNSKEY, a CNAME chain into a service, a wildcard name, NODATA,
/// an empty non-terminal and NXDOMAIN (compact denial).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_answer_kind_validates_in_rust_and_with_delv() {
    let s = start_csk().await;

    for (name, qtype) in [
        ("static.sec.test.", RecordType::A),
        ("sec.test.", RecordType::SOA),
        ("sec.test.", RecordType::NS),
        ("sec.test.", RecordType::DNSKEY),
        ("app.sec.test.", RecordType::A),
        ("host.wild.sec.test.", RecordType::A),
        ("www.sec.test.", RecordType::AAAA),
    ] {
        let r = s.ask(name, qtype).await;
        assert_eq!(r.metadata.response_code, ResponseCode::NoError, "{name}");
        assert!(!r.answers.is_empty(), "{name} {qtype}: {r}");
        assert!(r.edns.as_ref().unwrap().flags().dnssec_ok, "DO echoed");
        assert!(verify_sections(&r, &s.dnskeys) >= 1, "{name} {qtype}");
        delv(&s, "127.0.0.1", name, &qtype.to_string(), false).await;
    }
    // The CNAME chain: each RRset with its own RRSIG.
    let r = s.ask("app.sec.test.", RecordType::A).await;
    assert_eq!(
        verify_sections(&r, &s.dnskeys),
        3,
        "two CNAMEs and the A RRset\n{r}"
    );

    // NODATA at a name with data, and at an empty non-terminal.
    let r = s.ask("static.sec.test.", RecordType::TXT).await;
    assert_eq!(r.metadata.response_code, ResponseCode::NoError);
    assert!(r.answers.is_empty());
    let (owner, next, types) = nsec_types(&r);
    assert_eq!(owner.to_ascii(), "static.sec.test.");
    assert_eq!(next.to_ascii(), "\\000.static.sec.test.");
    assert_eq!(types, vec![1, 46, 47], "A RRSIG NSEC");
    assert_eq!(verify_sections(&r, &s.dnskeys), 2, "SOA and NSEC");
    delv(&s, "127.0.0.1", "static.sec.test.", "TXT", false).await;
    let r = s.ask("ent.sec.test.", RecordType::A).await;
    assert_eq!(nsec_types(&r).2, vec![46, 47], "an ENT has RRSIG NSEC only");
    delv(&s, "127.0.0.1", "ent.sec.test.", "A", false).await;

    // NXDOMAIN: NOERROR, NSEC with NXNAME (RFC 9824).
    for name in ["nope.sec.test.", "a.b.c.nope.sec.test."] {
        let r = s.ask(name, RecordType::A).await;
        assert_eq!(
            r.metadata.response_code,
            ResponseCode::NoError,
            "compact denial"
        );
        let (owner, next, types) = nsec_types(&r);
        assert_eq!(owner.to_ascii(), name);
        assert_eq!(next.to_ascii(), format!("\\000.{name}"));
        assert_eq!(types, vec![46, 47, 128], "RRSIG NSEC NXNAME");
        assert_eq!(verify_sections(&r, &s.dnskeys), 2);
        delv(&s, "127.0.0.1", name, "A", false).await;
    }
    // Without DO the same name is a plain NXDOMAIN, without DNSSEC records.
    let r = s
        .server
        .udp(&query("nope.sec.test.", RecordType::A, None))
        .await;
    assert_eq!(r.metadata.response_code, ResponseCode::NXDomain);
    assert!(
        r.authorities
            .iter()
            .all(|r| r.record_type() == RecordType::SOA)
    );

    // A wildcard-synthesized answer is signed on demand once, then served
    // from the cache.
    let first = s.ask("other.wild.sec.test.", RecordType::A).await;
    let second = s.ask("other.wild.sec.test.", RecordType::A).await;
    assert!(first_rrsig(&first).is_some());
    assert_eq!(
        first_rrsig(&first),
        first_rrsig(&second),
        "cached, not signed again"
    );
    assert_eq!(verify_sections(&second, &s.dnskeys), 1);

    // Wildcard NODATA: the synthesized name's NSEC lists the wildcard's
    // types, minus the one asked for.
    let r = s.ask("host.wild.sec.test.", RecordType::TXT).await;
    assert_eq!(nsec_types(&r).2, vec![1, 46, 47]);
    delv(&s, "127.0.0.1", "host.wild.sec.test.", "TXT", false).await;
    s.server.server.shutdown().await;
}

/// A query for NSEC is answered with the name's own compact NSEC (signed,
/// with DO), never a NODATA whose proof lists NSEC: at a service, at a
/// CNAME (not its target's, also when that is delegated or does not
/// exist), at the apex, at a wildcard-synthesized name and at a name that
/// does not exist (the NXNAME NSEC). A delegation
/// stays a referral. A query for NXNAME, or any other meta-type, gets
/// FORMERR (RFC 9824 §3.5), with or without DO, over UDP and TCP.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_for_nsec_get_the_names_own_nsec() {
    let s = start_csk().await;
    for (name, types) in [
        ("www.sec.test.", vec![1, 28, 46, 47]),
        ("app.sec.test.", vec![5, 46, 47]),
        ("sec.test.", vec![2, 6, 46, 47, 48]),
        ("host.wild.sec.test.", vec![1, 46, 47]),
        ("nope.sec.test.", vec![46, 47, 128]),
        ("ent.sec.test.", vec![46, 47]),
        // CNAMEs to a delegated name and to a name that does not exist.
        ("tosub.sec.test.", vec![5, 46, 47]),
        ("dangling.sec.test.", vec![5, 46, 47]),
    ] {
        let r = s.ask(name, RecordType::NSEC).await;
        assert_eq!(
            r.metadata.response_code,
            ResponseCode::NoError,
            "{name}\n{r}"
        );
        assert!(r.authorities.is_empty(), "{name}: nothing to prove\n{r}");
        let nsec: Vec<(&Name, Vec<u16>)> = r
            .answers
            .iter()
            .filter_map(|rec| match &rec.data {
                RData::DNSSEC(DNSSECRData::NSEC(n)) => {
                    assert_eq!(n.next_domain_name().to_ascii(), format!("\\000.{name}"));
                    Some((&rec.name, n.type_bit_maps().map(u16::from).collect()))
                }
                _ => None,
            })
            .collect();
        assert_eq!(nsec.len(), 1, "{name}: one NSEC\n{r}");
        assert_eq!(nsec[0].0.to_ascii(), name);
        assert_eq!(nsec[0].1, types, "{name}\n{r}");
        assert_eq!(verify_sections(&r, &s.dnskeys), 1, "{name}\n{r}");
        delv(&s, "127.0.0.1", name, "NSEC", false).await;
    }
    // Below a delegation: the referral, with the NSEC proving no DS.
    let r = s.ask("host.sub.sec.test.", RecordType::NSEC).await;
    assert!(r.answers.is_empty(), "{r}");
    assert!(
        r.authorities
            .iter()
            .any(|r| r.record_type() == RecordType::NS),
        "a referral\n{r}"
    );

    for qtype in [128u16, 200, 250] {
        for with_do in [true, false] {
            let mut q = query("www.sec.test.", RecordType::from(qtype), None);
            q.edns.as_mut().unwrap().set_dnssec_ok(with_do);
            for r in [s.server.udp(&q).await, s.server.tcp(&q).await] {
                assert_eq!(
                    r.metadata.response_code,
                    ResponseCode::FormErr,
                    "type {qtype}, DO {with_do}\n{r}"
                );
            }
        }
    }
    s.server.server.shutdown().await;
}

/// A tailored service answer for clients in two regions: ECS in Rust
/// (different answers, both valid, scope kept), and delv from two
/// loopback addresses the test database places in Japan and Germany.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_answers_for_two_regions_validate() {
    let s = start_csk().await;
    let us = s
        .server
        .udp(&do_query(
            "www.sec.test.",
            RecordType::A,
            Some("11.1.0.0/24"),
        ))
        .await;
    let de = s
        .server
        .udp(&do_query(
            "www.sec.test.",
            RecordType::A,
            Some("11.2.0.0/24"),
        ))
        .await;
    assert_eq!(addresses(&us), vec!["192.0.2.10"]);
    assert_eq!(addresses(&de), vec!["198.51.100.10"]);
    for r in [&us, &de] {
        assert_eq!(verify_sections(r, &s.dnskeys), 1);
        let scope = crate::harness::ecs_of(r).expect("ECS echoed").2;
        assert!(scope > 0, "the signed answer keeps its ECS scope");
    }
    // The same answers without DO have the same scopes.
    let plain = s
        .server
        .udp(&query("www.sec.test.", RecordType::A, Some("11.2.0.0/24")))
        .await;
    assert_eq!(crate::harness::ecs_of(&plain), crate::harness::ecs_of(&de));

    let jp = delv(&s, "127.0.0.1", "www.sec.test.", "A", false).await;
    let de = delv(&s, "127.0.0.200", "www.sec.test.", "A", false).await;
    assert!(
        jp.contains("203.0.113.10"),
        "Japan gets ap-southeast:\n{jp}"
    );
    assert!(de.contains("198.51.100.10"), "Germany gets eu-west:\n{de}");
    s.server.server.shutdown().await;
}

/// A service whose first datacenter is drained answers from the next one,
/// signed; a two-datacenter answer (every combination of up to
/// `max_answers` datacenters is signed at build) is served with the same
/// signature every time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_answers_are_signed() {
    use meridian::dnssec::keys::KeyAlgorithm;
    use meridian::health::Override;
    let s = start_signed(&[(KeyAlgorithm::Ed25519, 257)]).await;
    let before = s.ask("api.sec.test.", RecordType::A).await;
    assert_eq!(addresses(&before), vec!["198.51.100.10"]);
    s.server
        .server
        .monitor()
        .set_override("sec.test.", "eu-west", Some(Override::Drain))
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let after = loop {
        let r = s.ask("api.sec.test.", RecordType::A).await;
        if addresses(&r) == ["192.0.2.10"] || tokio::time::Instant::now() > deadline {
            break r;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(
        addresses(&after),
        vec!["192.0.2.10"],
        "failed over to us-east"
    );
    assert_eq!(after.answers[0].ttl, 15, "degraded TTL");
    assert_eq!(verify_sections(&after, &s.dnskeys), 1);
    let out = delv(&s, "127.0.0.1", "api.sec.test.", "A", false).await;
    assert!(out.contains("192.0.2.10"), "{out}");

    // us-east + ap-southeast, after the failover.
    let pair = s.ask("pair.sec.test.", RecordType::A).await;
    assert_eq!(addresses(&pair), vec!["192.0.2.10", "203.0.113.10"]);
    assert_eq!(verify_sections(&pair, &s.dnskeys), 1);
    let again = s.ask("pair.sec.test.", RecordType::A).await;
    assert_eq!(verify_sections(&again, &s.dnskeys), 1);
    // Not signed again: the stored RRSIG, byte for byte.
    assert_eq!(
        first_rrsig(&pair),
        first_rrsig(&again),
        "served from the store"
    );
    delv(&s, "127.0.0.1", "pair.sec.test.", "A", false).await;
    s.server.server.shutdown().await;
}

/// Referrals: an insecure delegation carries the NSEC at the cut (NS bit,
/// no DS bit); a secure one its signed DS RRset; glue is unsigned.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn referrals_prove_the_ds_or_its_absence() {
    let s = start_csk().await;
    let r = s.ask("host.sub.sec.test.", RecordType::A).await;
    assert!(!r.metadata.authoritative, "a referral");
    let (owner, _, types) = nsec_types(&r);
    assert_eq!(owner.to_ascii(), "sub.sec.test.");
    assert_eq!(types, vec![2, 46, 47], "NS RRSIG NSEC: no DS");
    assert_eq!(verify_sections(&r, &s.dnskeys), 1, "the NSEC");
    assert!(
        r.additionals
            .iter()
            .all(|a| a.record_type() != RecordType::RRSIG),
        "glue unsigned"
    );
    let r = s.ask("host.secure.sec.test.", RecordType::A).await;
    assert!(
        r.authorities
            .iter()
            .any(|a| a.record_type() == RecordType::DS)
    );
    assert_eq!(verify_sections(&r, &s.dnskeys), 1, "the DS RRset");
    // The DS query itself is answered by us, signed.
    let r = s.ask("secure.sec.test.", RecordType::DS).await;
    assert_eq!(verify_sections(&r, &s.dnskeys), 1);
    delv(&s, "127.0.0.1", "secure.sec.test.", "DS", false).await;
    // No DS at the insecure cut: NODATA with the cut's NSEC, validated.
    delv(&s, "127.0.0.1", "sub.sec.test.", "DS", false).await;
    s.server.server.shutdown().await;
}

/// A signed answer that does not fit a 512-byte UDP response is
/// truncated (TC, no records); over TCP it comes whole and validates.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_answers_truncate_like_unsigned_ones() {
    let s = start_csk().await;
    let mut q = do_query("big.sec.test.", RecordType::TXT, None);
    q.edns.as_mut().unwrap().set_max_payload(512);
    let plain = {
        let mut p = query("big.sec.test.", RecordType::TXT, None);
        p.edns.as_mut().unwrap().set_max_payload(512);
        p
    };
    let unsigned = udp_exchange(s.server.addr, &plain.to_vec().unwrap()).await;
    let unsigned = Message::from_vec(&unsigned).unwrap();
    assert!(!unsigned.metadata.truncation, "fits without signatures");
    let udp = Message::from_vec(&udp_exchange(s.server.addr, &q.to_vec().unwrap()).await).unwrap();
    assert!(udp.metadata.truncation, "TC with the signatures");
    assert!(udp.answers.is_empty() && udp.authorities.is_empty());
    let tcp = Message::from_vec(&tcp_exchange(s.server.addr, &q.to_vec().unwrap()).await).unwrap();
    assert!(!tcp.metadata.truncation);
    assert_eq!(tcp.answers.len(), 4, "three TXT and their RRSIG");
    assert_eq!(verify_sections(&tcp, &s.dnskeys), 1);
    delv(&s, "127.0.0.1", "big.sec.test.", "TXT", true).await;
    s.server.server.shutdown().await;
}

/// DO=0 answers of a signed zone carry no DNSSEC records and are the ones
/// the unsigned zone gives, byte for byte.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_do_a_signed_zone_answers_as_an_unsigned_one() {
    let s = start_csk().await;
    let unsigned = TestServer::start_with(Setup {
        zones: &[("sec.test.toml", &zone_text(""))],
        geoip: geo_db(),
        ..Setup::default()
    })
    .await;
    for (name, qtype) in [
        ("static.sec.test.", RecordType::A),
        ("www.sec.test.", RecordType::A),
        ("nope.sec.test.", RecordType::A),
        ("static.sec.test.", RecordType::TXT),
        ("host.sub.sec.test.", RecordType::A),
        ("app.sec.test.", RecordType::A),
    ] {
        let q = query(name, qtype, Some("11.2.0.0/24")).to_vec().unwrap();
        let a = udp_exchange(s.server.addr, &q).await;
        let b = udp_exchange(unsigned.addr, &q).await;
        assert_eq!(a, b, "{name} {qtype}");
    }
    unsigned.server.shutdown().await;
    s.server.server.shutdown().await;
}

/// A KSK + ZSK pair of one algorithm, and two algorithms at once (an
/// algorithm rollover's middle state): every RRset carries a signature of
/// each algorithm, DNSKEY by the KSK only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ksk_zsk_and_two_algorithms_validate() {
    use meridian::dnssec::keys::KeyAlgorithm;
    let s = start_signed(&[
        (KeyAlgorithm::EcdsaP256Sha256, 257),
        (KeyAlgorithm::EcdsaP256Sha256, 256),
        (KeyAlgorithm::Ed25519, 257),
    ])
    .await;
    let tags: Vec<u16> = s
        .dnskeys
        .iter()
        .map(|k| k.calculate_key_tag().unwrap())
        .collect();
    let r = s.ask("static.sec.test.", RecordType::A).await;
    verify_sections(&r, &s.dnskeys);
    let mut want = vec![tags[1], tags[2]];
    want.sort();
    assert_eq!(
        signer_tags(&r, RecordType::A),
        want,
        "ZSK (13) and CSK (15)"
    );
    let r = s.ask("sec.test.", RecordType::DNSKEY).await;
    verify_sections(&r, &s.dnskeys);
    let mut want = vec![tags[0], tags[2]];
    want.sort();
    assert_eq!(signer_tags(&r, RecordType::DNSKEY), want, "the two KSKs");
    delv(&s, "127.0.0.1", "static.sec.test.", "A", false).await;
    delv(&s, "127.0.0.1", "nope.sec.test.", "A", false).await;
    s.server.server.shutdown().await;
}

/// Keys made by BIND's dnssec-keygen load as they are and sign answers
/// delv validates.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_made_by_bind_dnssec_keygen_work() {
    let keygen = tool("dnssec-keygen", "bind9-utils");
    let dir = tempfile::tempdir().unwrap();
    let mut bases = Vec::new();
    for alg in ["ECDSAP256SHA256", "ED25519"] {
        let base = stdout_of(
            Command::new(keygen)
                .args(["-q", "-a", alg, "-f", "KSK", "-K"])
                .arg(dir.path())
                .arg(ORIGIN),
        );
        let base = dir.path().join(base.trim());
        // BIND may leave the private file group-readable under a loose
        // umask; Meridian refuses that, so tighten it as an operator would.
        std::fs::set_permissions(
            meridian::dnssec::keys::private_path(&base),
            std::fs::Permissions::from_mode(0o600),
        )
        .unwrap();
        bases.push(base);
    }
    let s = start_with_keys(dir, &bases, "").await;
    let r = s.ask("www.sec.test.", RecordType::A).await;
    verify_sections(&r, &s.dnskeys);
    delv(&s, "127.0.0.1", "www.sec.test.", "A", false).await;
    delv(&s, "127.0.0.1", "nope.sec.test.", "A", false).await;
    s.server.server.shutdown().await;
}

/// `meridian dnssec keygen` writes the two files (private: mode 0600)
/// and prints the tag and the `[dnssec]` lines; `meridian dnssec ds`
/// prints the DS record dnssec-dsfromkey computes from the .key file,
/// and SHA-256 over owner and DNSKEY RDATA computed here agrees.
#[test]
fn keygen_and_ds_commands() {
    let bin = env!("CARGO_BIN_EXE_meridian");
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("zones/keys");
    let printed = stdout_of(
        Command::new(bin)
            .args(["dnssec", "keygen", "sec.test", "--dir"])
            .arg(&keys),
    );
    assert!(
        printed.contains("[dnssec]") && printed.contains("key tag"),
        "{printed}"
    );
    let mut files: Vec<PathBuf> = std::fs::read_dir(&keys)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert_eq!(files.len(), 2);
    let (key_file, private) = (&files[0], &files[1]);
    assert!(key_file.to_string_lossy().ends_with(".key"));
    let mode = std::fs::metadata(private).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "private key readable by its owner only");
    // A second key never replaces the first.
    stdout_of(
        Command::new(bin)
            .args([
                "dnssec",
                "keygen",
                "sec.test",
                "--algorithm",
                "ed25519",
                "--role",
                "zsk",
                "--dir",
            ])
            .arg(&keys),
    );
    assert_eq!(std::fs::read_dir(&keys).unwrap().count(), 4);

    // A zone using the first key, and `ds` from its config.
    let base = meridian::dnssec::keys::base_path(key_file);
    let zone = zone_text(&format!(
        "[dnssec]\nkeys = [{{ file = \"keys/{}\" }}]\n",
        base.file_name().unwrap().to_string_lossy()
    ));
    let config = crate::harness::write_config(
        dir.path(),
        &Setup {
            zones: &[("sec.test.toml", &zone)],
            ..Setup::default()
        },
    );
    let ours = stdout_of(
        Command::new(bin)
            .args(["dnssec", "ds", "sec.test", "--config"])
            .arg(&config),
    );
    let ours = ours.trim();

    let dsfromkey = tool("dnssec-dsfromkey", "bind9-utils");
    let bind = stdout_of(Command::new(dsfromkey).args(["-2"]).arg(key_file));
    let bind = bind.trim();
    let fields = |s: &str| {
        s.split_whitespace()
            .map(str::to_ascii_uppercase)
            .collect::<Vec<_>>()
    };
    assert_eq!(fields(ours), fields(bind), "ours: {ours}\nBIND: {bind}");

    // Independently: SHA-256(owner in wire form | DNSKEY RDATA).
    let (_, dnskey) =
        meridian::dnssec::keys::parse_key_file(&std::fs::read_to_string(key_file).unwrap())
            .unwrap();
    let mut data = vec![3u8];
    data.extend_from_slice(b"sec\x04test\x00");
    data.extend_from_slice(&dnskey.flags().to_be_bytes());
    data.extend_from_slice(&[3, 13]);
    data.extend_from_slice(dnskey.public_key().public_bytes());
    let digest = ring::digest::digest(&ring::digest::SHA256, &data);
    let hex = data_encoding::HEXUPPER.encode(digest.as_ref());
    assert!(ours.ends_with(&hex), "{ours} vs {hex}");
}

/// Config errors name the file, the key and the reason.
#[test]
fn bad_dnssec_config_is_refused_with_file_key_and_reason() {
    use meridian::dnssec::keys::KeyAlgorithm;
    let dir = tempfile::tempdir().unwrap();
    let zsk = make_key(dir.path(), KeyAlgorithm::EcdsaP256Sha256, 256);
    let ksk = make_key(dir.path(), KeyAlgorithm::EcdsaP256Sha256, 257);
    let file = dir.path().join("sec.test.toml");
    let load = |dnssec: String| {
        let text = zone_text(&dnssec);
        meridian::config::parse_zone(&file, &text)
            .map(|_| ())
            .map_err(|e| e.to_string())
    };

    // A ZSK alone: nothing signs the DNSKEY RRset.
    let e = load(format!(
        "[dnssec]\nkeys = [{}]\n",
        key_entry(&zsk, "active")
    ))
    .unwrap_err();
    assert!(e.contains("dnssec.keys") && e.contains("KSK"), "{e}");
    // Both: fine.
    load(format!(
        "[dnssec]\nkeys = [{}, {}]\n",
        key_entry(&zsk, "active"),
        key_entry(&ksk, "active")
    ))
    .unwrap();
    // A bad state.
    let e = load(format!(
        "[dnssec]\nkeys = [{}]\n",
        key_entry(&ksk, "retired")
    ))
    .unwrap_err();
    assert!(e.contains("dnssec.keys[0].state"), "{e}");
    // A group-readable private key.
    std::fs::set_permissions(
        meridian::dnssec::keys::private_path(&ksk),
        std::fs::Permissions::from_mode(0o640),
    )
    .unwrap();
    let e = load(format!(
        "[dnssec]\nkeys = [{}]\n",
        key_entry(&ksk, "active")
    ))
    .unwrap_err();
    assert!(
        e.contains("dnssec.keys[0].file") && e.contains(".private") && e.contains("640"),
        "{e}"
    );
    std::fs::set_permissions(
        meridian::dnssec::keys::private_path(&ksk),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    // A key of another zone.
    let other = dir.path().join("other");
    std::fs::create_dir(&other).unwrap();
    let (base, _) = write_dnssec_key(&other, "other.test.", KeyAlgorithm::EcdsaP256Sha256, 257);
    let e = load(format!(
        "[dnssec]\nkeys = [{}]\n",
        key_entry(&base, "active")
    ))
    .unwrap_err();
    assert!(
        e.contains("other.test.") && e.contains("not sec.test."),
        "{e}"
    );
    // Timing out of range.
    let e = load(format!(
        "[dnssec]\nkeys = [{}]\nsignature_validity = \"2d\"\nrefresh_margin = \"3d\"\n",
        key_entry(&ksk, "active")
    ))
    .unwrap_err();
    assert!(e.contains("dnssec.refresh_margin"), "{e}");
    // Unknown keys are refused.
    let e = load(format!(
        "[dnssec]\nkeys = [{}]\nnsec3 = true\n",
        key_entry(&ksk, "active")
    ))
    .unwrap_err();
    assert!(e.contains("nsec3"), "{e}");
}

/// Past `online_signing_rate`, a query that needs a new signature (here
/// NXDOMAIN for random names) gets SERVFAIL; precomputed answers and
/// answers without DO are unaffected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_online_signing_budget_bounds_random_name_floods() {
    use meridian::dnssec::keys::KeyAlgorithm;
    let dir = tempfile::tempdir().unwrap();
    let base = make_key(dir.path(), KeyAlgorithm::EcdsaP256Sha256, 257);
    let s = start_with_keys(dir, &[base], "online_signing_rate = 1\n").await;
    let exhausted = meridian::dnssec::budget_exhausted_total();
    let mut servfail = 0;
    for i in 0..10 {
        let name = format!("random{i}.sec.test.");
        let r = s.ask(&name, RecordType::A).await;
        match r.metadata.response_code {
            ResponseCode::ServFail => servfail += 1,
            ResponseCode::NoError => assert_eq!(verify_sections(&r, &s.dnskeys), 2),
            other => panic!("{name}: {other}"),
        }
    }
    // Ten queries span at most a couple of seconds: at most a few signed.
    assert!(servfail >= 5, "{servfail} SERVFAIL of 10");
    assert!(meridian::dnssec::budget_exhausted_total() >= exhausted + servfail);
    let r = s.ask("static.sec.test.", RecordType::A).await;
    assert_eq!(
        verify_sections(&r, &s.dnskeys),
        1,
        "precomputed: no budget needed"
    );
    let r = s
        .server
        .udp(&query("random0.sec.test.", RecordType::A, None))
        .await;
    assert_eq!(
        r.metadata.response_code,
        ResponseCode::NXDomain,
        "DO=0 unaffected"
    );
    s.server.server.shutdown().await;
}

/// A reload reads the keys again: a ZSK added as "published" appears in
/// the DNSKEY RRset without signing, then "active" signs (the first two
/// steps of a pre-publish rollover), each validated by delv.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_publishes_then_activates_a_new_key() {
    use meridian::dnssec::keys::KeyAlgorithm;
    let dir = tempfile::tempdir().unwrap();
    let ksk = make_key(dir.path(), KeyAlgorithm::EcdsaP256Sha256, 257);
    let zsk = make_key(dir.path(), KeyAlgorithm::EcdsaP256Sha256, 256);
    let zsk_key = std::fs::read_to_string(meridian::dnssec::keys::key_path(&zsk)).unwrap();
    let (_, zsk_dnskey) = meridian::dnssec::keys::parse_key_file(&zsk_key).unwrap();
    let zsk_tag = zsk_dnskey.calculate_key_tag().unwrap();
    let mut s = start_with_keys(dir, std::slice::from_ref(&ksk), "").await;
    s.dnskeys.push(zsk_dnskey);
    let zone_file = s.server.dir.path().join("zones/sec.test.toml");
    for (state, keys_published, zsk_signs) in [("published", 2, false), ("active", 2, true)] {
        let zone = zone_text(&format!(
            "[dnssec]\nkeys = [{}, {}]\n",
            key_entry(&ksk, "active"),
            key_entry(&zsk, state)
        ));
        std::fs::write(&zone_file, zone).unwrap();
        s.server.server.reload().unwrap();
        let r = s.ask("sec.test.", RecordType::DNSKEY).await;
        let published = r
            .answers
            .iter()
            .filter(|a| a.record_type() == RecordType::DNSKEY)
            .count();
        assert_eq!(published, keys_published, "{state}");
        verify_sections(&r, &s.dnskeys);
        let r = s.ask("static.sec.test.", RecordType::A).await;
        verify_sections(&r, &s.dnskeys);
        assert_eq!(
            signer_tags(&r, RecordType::A).contains(&zsk_tag),
            zsk_signs,
            "{state}"
        );
        delv(&s, "127.0.0.1", "static.sec.test.", "A", false).await;
    }
    s.server.server.shutdown().await;
}
