//! Routing policies and policy chains, end to end: the shipped example
//! zones in `zones/examples` served by the real server, asked over real
//! UDP (and some TCP), with drains through the real admin API.
//!
//! Statistics. `weighted` draws from per-query randomness (a per-process
//! seed mixed with the query ID and source), so its shares are binomial:
//! with `n` queries and a true share `p`, the count has standard deviation
//! `sqrt(n p (1 - p))`. [`assert_share`] accepts counts within
//! [`SIGMAS`] standard deviations of `n p`; by the normal approximation a
//! correct server fails one such check with probability about 7 in a
//! million, and the whole file (about 25 random checks) fewer than 2 runs
//! in 10,000. A wrong weighting is still caught: at 4,000 queries the
//! bound for a 75 % share is ±3.1 points (2/3 or 4/5 would fail). Checks
//! with a share of 1 have no tolerance. `sticky` has no randomness at all
//! (a fixed hash of fixed networks), so its share checks are
//! deterministic.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::RecordType;
use ipnet::IpNet;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UdpSocket;

use crate::harness::{
    EXCHANGE_TIMEOUT, Setup, TestServer, a_answers, ecs_of, query, repo, write_config,
};

/// Tolerance of every share check, in standard deviations (see the module
/// docs).
const SIGMAS: f64 = 4.5;

/// The example zone files and the policy (chain) of their `www` service.
const EXAMPLES: &[(&str, &str)] = &[
    ("weighted.example.toml", "weighted"),
    ("sticky.example.toml", "sticky"),
    ("round-robin.example.toml", "failover"),
    (
        "chain-nearest-weighted.example.toml",
        "geo > nearest 2 > weighted",
    ),
    (
        "chain-continent.example.toml",
        "geo > same continent > weighted",
    ),
    (
        "chain-primary-secondary.example.toml",
        "prefer 2 datacenters > weighted",
    ),
    (
        "chain-sticky-country.example.toml",
        "geo > same country > sticky",
    ),
    ("latency.example.toml", "latency"),
    ("zonefile.example.toml", "geo"),
];

fn examples_dir() -> PathBuf {
    repo().join("zones/examples")
}

/// An example zone file, as text.
fn example(file: &str) -> String {
    std::fs::read_to_string(examples_dir().join(file))
        .unwrap_or_else(|e| panic!("zones/examples/{file}: {e}"))
}

/// `text` with `from` replaced by `to`, which must occur.
fn edit(text: &str, from: &str, to: &str) -> String {
    assert!(text.contains(from), "{from:?} not in the zone text");
    text.replacen(from, to, 1)
}

/// `n` of `total` within [`SIGMAS`] standard deviations of `total * p`.
#[track_caller]
fn assert_share(what: &str, n: usize, total: usize, p: f64) {
    let (t, x) = (total as f64, n as f64);
    let sd = (t * p * (1.0 - p)).sqrt();
    let (lo, hi) = (t * p - SIGMAS * sd, t * p + SIGMAS * sd);
    assert!(
        (lo..=hi).contains(&x),
        "{what}: {n} of {total}, expected {:.0} (share {p:.3}), bound {lo:.0}..={hi:.0}",
        t * p
    );
}

/// Address → datacenter name, for one zone's text.
fn address_map(zone_text: &str) -> HashMap<String, String> {
    let zone = meridian::config::parse_zone(Path::new("zone.toml"), zone_text)
        .unwrap_or_else(|e| panic!("{e}"));
    let mut map = HashMap::new();
    for dc in &zone.datacenters {
        for a in &dc.v4 {
            map.insert(a.to_string(), dc.name.clone());
        }
        for a in &dc.v6 {
            map.insert(a.to_string(), dc.name.clone());
        }
    }
    map
}

/// One answer, read: the datacenters behind its addresses (each once, in
/// order of first appearance), its TTL and ECS scope.
#[derive(Debug)]
struct Reply {
    dcs: Vec<String>,
    addrs: Vec<String>,
    ttl: u32,
    scope: Option<u8>,
}

impl Reply {
    /// The one datacenter of a single-datacenter answer.
    #[track_caller]
    fn dc(&self) -> &str {
        assert_eq!(self.dcs.len(), 1, "{self:?}");
        &self.dcs[0]
    }
}

/// A DNS client for one zone of a test server: one UDP socket, query IDs
/// counting up from 1 (distinct IDs, so distinct per-query randomness),
/// addresses mapped back to datacenter names.
struct Client<'a> {
    s: &'a TestServer,
    sock: UdpSocket,
    id: u16,
    map: HashMap<String, String>,
}

impl<'a> Client<'a> {
    async fn new(s: &'a TestServer, zone_text: &str) -> Self {
        let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        sock.connect(s.addr).await.unwrap();
        Self {
            s,
            sock,
            id: 0,
            map: address_map(zone_text),
        }
    }

    fn next_query(&mut self, name: &str, qtype: RecordType, ecs: Option<&str>) -> Message {
        self.id = self.id.wrapping_add(1);
        let mut q = query(name, qtype, ecs);
        q.metadata.id = self.id;
        q
    }

    /// A query over UDP; the response must match the ID.
    async fn udp_message(&mut self, name: &str, qtype: RecordType, ecs: Option<&str>) -> Message {
        let q = self.next_query(name, qtype, ecs);
        self.sock.send(&q.to_vec().unwrap()).await.unwrap();
        let mut buf = vec![0u8; 65_535];
        loop {
            let n = tokio::time::timeout(EXCHANGE_TIMEOUT, self.sock.recv(&mut buf))
                .await
                .expect("UDP response within the timeout")
                .unwrap();
            let m = Message::from_vec(&buf[..n]).expect("response decodes");
            // A late answer to an earlier query is skipped.
            if m.metadata.id == q.metadata.id {
                return m;
            }
        }
    }

    async fn tcp_message(&mut self, name: &str, qtype: RecordType, ecs: Option<&str>) -> Message {
        let q = self.next_query(name, qtype, ecs);
        let m = self.s.tcp(&q).await;
        assert_eq!(m.metadata.id, q.metadata.id);
        m
    }

    fn read(&self, m: &Message) -> Reply {
        assert_eq!(m.metadata.response_code, ResponseCode::NoError, "{m:?}");
        let addrs = a_answers(m);
        assert!(!addrs.is_empty(), "no addresses: {m:?}");
        let mut dcs: Vec<String> = Vec::new();
        for a in &addrs {
            let dc = self
                .map
                .get(a)
                .unwrap_or_else(|| panic!("{a} is no datacenter's address"));
            if !dcs.contains(dc) {
                dcs.push(dc.clone());
            }
        }
        let ttl = m.answers[0].ttl;
        assert!(m.answers.iter().all(|r| r.ttl == ttl), "one TTL: {m:?}");
        Reply {
            dcs,
            addrs,
            ttl,
            scope: ecs_of(m).map(|e| e.2),
        }
    }

    /// An A (or AAAA) query over UDP, read.
    async fn ask(&mut self, name: &str, qtype: RecordType, ecs: Option<&str>) -> Reply {
        let m = self.udp_message(name, qtype, ecs).await;
        self.read(&m)
    }

    /// The same over TCP.
    async fn ask_tcp(&mut self, name: &str, qtype: RecordType, ecs: Option<&str>) -> Reply {
        let m = self.tcp_message(name, qtype, ecs).await;
        self.read(&m)
    }

    /// `n` A queries for `name` from `ecs` (every 25th over TCP): how often
    /// each datacenter answered (single-datacenter answers). Every answer
    /// must satisfy `check`.
    async fn tally(
        &mut self,
        name: &str,
        ecs: Option<&str>,
        n: usize,
        check: impl Fn(&Reply),
    ) -> BTreeMap<String, usize> {
        let mut counts = BTreeMap::new();
        for i in 0..n {
            let r = if i % 25 == 24 {
                self.ask_tcp(name, RecordType::A, ecs).await
            } else {
                self.ask(name, RecordType::A, ecs).await
            };
            check(&r);
            *counts.entry(r.dc().to_string()).or_insert(0) += 1;
        }
        counts
    }
}

/// The datacenters of a tally.
fn seen(counts: &BTreeMap<String, usize>) -> BTreeSet<&str> {
    counts.keys().map(String::as_str).collect()
}

fn set<'a>(names: &[&'a str]) -> BTreeSet<&'a str> {
    names.iter().copied().collect()
}

/// POSTs to the admin API (raw HTTP/1.1) and expects 200.
async fn admin(s: &TestServer, path: &str) {
    let addr: SocketAddr = s.server.admin_addr().expect("admin API");
    let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    conn.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    tokio::time::timeout(EXCHANGE_TIMEOUT, conn.read_to_string(&mut response))
        .await
        .expect("the admin API answers")
        .unwrap();
    assert!(
        response.starts_with("HTTP/1.1 200"),
        "POST {path}: {response}"
    );
}

async fn drain(s: &TestServer, zone: &str, dc: &str) {
    admin(s, &format!("/datacenters/{zone}/{dc}/drain")).await;
}

async fn undrain(s: &TestServer, zone: &str, dc: &str) {
    admin(s, &format!("/datacenters/{zone}/{dc}/undrain")).await;
}

/// A server for one zone file (name in the zones directory, text).
async fn serve(file: &str, text: &str) -> TestServer {
    TestServer::start_with(Setup {
        zones: &[(file, text)],
        ..Setup::default()
    })
    .await
}

/// `text` with a plain `geo` service over `datacenters` added, whose ECS
/// scopes are the GeoIP blocks the chains are compared with.
fn with_geo_reference(text: &str, datacenters: &str) -> String {
    format!("{text}\n[services.geo-ref]\npolicy = \"geo\"\ndatacenters = {datacenters}\nttl = 30\n")
}

/// Whether `a` is in a range reserved for documentation (RFC 5737, 3849).
fn is_documentation_address(a: IpAddr) -> bool {
    let nets = [
        "192.0.2.0/24",
        "198.51.100.0/24",
        "203.0.113.0/24",
        "2001:db8::/32",
    ];
    nets.iter()
        .any(|n| n.parse::<IpNet>().unwrap().contains(&a))
}

/// Every string in a TOML document that parses as an IP address.
fn ip_strings(v: &toml::Value, out: &mut Vec<IpAddr>) {
    match v {
        toml::Value::String(s) => out.extend(s.parse::<IpAddr>()),
        toml::Value::Array(a) => a.iter().for_each(|x| ip_strings(x, out)),
        toml::Value::Table(t) => t.values().for_each(|x| ip_strings(x, out)),
        _ => {}
    }
}

//------------ The example files ------------------------------------------------

#[test]
fn every_example_zone_loads_and_check_accepts_them_all() {
    let mut files: Vec<String> = std::fs::read_dir(examples_dir())
        .expect("zones/examples")
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".toml"))
        .collect();
    files.sort();
    let mut wanted: Vec<String> = EXAMPLES.iter().map(|(f, _)| f.to_string()).collect();
    wanted.sort();
    assert_eq!(files, wanted, "one example per policy, nothing else");

    let mut origins = BTreeSet::new();
    let mut texts = Vec::new();
    for &(file, www_policy) in EXAMPLES {
        let path = examples_dir().join(file);
        let zone = meridian::config::load_zone(&path).unwrap_or_else(|e| panic!("{e}"));
        assert!(
            origins.insert(zone.origin.to_string()),
            "{file}: origin {} used twice",
            zone.origin
        );
        assert!(
            zone.origin.to_string().ends_with(".example.com."),
            "{file}: {}",
            zone.origin
        );
        let www = zone
            .services
            .iter()
            .find(|s| s.name == "www")
            .unwrap_or_else(|| panic!("{file}: no www service"));
        assert_eq!(www.policy.name(), www_policy, "{file}");
        let text = example(file);
        assert!(
            text.starts_with("# ") && text.contains("ECS scope"),
            "{file}: commented for operators, including the ECS scope"
        );
        let mut ips = Vec::new();
        ip_strings(&toml::from_str(&text).unwrap(), &mut ips);
        assert!(!ips.is_empty());
        for ip in ips {
            assert!(
                is_documentation_address(ip),
                "{file}: {ip} is not a documentation address"
            );
        }
        texts.push((file, text));
    }
    // What each policy's example must show.
    let weighted = meridian::config::load_zone(&examples_dir().join("weighted.example.toml"))
        .expect("weighted");
    assert!(
        weighted
            .services
            .iter()
            .any(|s| s.policy.weights.contains(&0) && s.policy.weights.iter().any(|&w| w > 1)),
        "weighted: weights including a weight-0 standby"
    );
    let rr = meridian::config::load_zone(&examples_dir().join("round-robin.example.toml"))
        .expect("round-robin");
    assert!(rr.datacenters.iter().any(|d| d.v4.len() >= 4));
    assert!(rr.services.iter().any(|s| s.max_answers > 1));
    assert!(rr.services.iter().any(|s| !s.rotate));
    let nearest =
        meridian::config::load_zone(&examples_dir().join("chain-nearest-weighted.example.toml"))
            .expect("nearest");
    assert!(
        nearest
            .services
            .iter()
            .any(|s| s.policy.name() == "geo > within_km 1200 > weighted")
    );

    // `meridian check` accepts a zones directory holding all of them.
    let dir = tempfile::tempdir().unwrap();
    let zones: Vec<(&str, &str)> = texts.iter().map(|(f, t)| (*f, t.as_str())).collect();
    let config = write_config(
        dir.path(),
        &Setup {
            zones: &zones,
            ..Setup::default()
        },
    );
    // The master files the examples name in `records_file`.
    for entry in std::fs::read_dir(examples_dir()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|x| x == "zone") {
            std::fs::copy(
                &path,
                dir.path().join("zones").join(path.file_name().unwrap()),
            )
            .unwrap();
        }
    }
    let out = Command::new(env!("CARGO_BIN_EXE_meridian"))
        .args(["check", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!("OK: {} zone(s)", EXAMPLES.len())),
        "{stderr}"
    );
}

//------------ weighted ------------------------------------------------------

const WEIGHTED: &str = "weighted.example.toml";
const WEIGHTED_ZONE: &str = "weighted.example.com";
const WEIGHTED_WWW: &str = "www.weighted.example.com.";

#[tokio::test]
async fn weighted_splits_by_weight_and_the_standby_waits_for_both() {
    let text = example(WEIGHTED);
    let s = serve(WEIGHTED, &text).await;
    let mut c = Client::new(&s, &text).await;

    // fra 3, ams 1, lon 0: 4,000 queries from varying clients (the answer
    // does not depend on them) and with distinct query IDs.
    let clients = [
        Some("11.2.0.0/24"),
        Some("11.1.7.0/24"),
        Some("192.0.2.0/24"),
        Some("2001:db8:3::/56"),
        None,
    ];
    let n = 4_000;
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for i in 0..n {
        let ecs = clients[i % clients.len()];
        let r = if i % 40 == 39 {
            c.ask_tcp(WEIGHTED_WWW, RecordType::A, ecs).await
        } else {
            c.ask(WEIGHTED_WWW, RecordType::A, ecs).await
        };
        assert_eq!(r.addrs.len(), 1, "max_answers 1: {r:?}");
        assert_eq!(r.ttl, 30, "healthy answers carry the service TTL");
        if ecs.is_some() {
            assert_eq!(r.scope, Some(0), "weighted does not depend on the client");
        }
        *counts.entry(r.dc().to_string()).or_insert(0) += 1;
    }
    assert_eq!(
        counts.get("lon"),
        None,
        "the standby never answers: {counts:?}"
    );
    let fra = counts.get("fra").copied().unwrap_or(0);
    let ams = counts.get("ams").copied().unwrap_or(0);
    assert_eq!(fra + ams, n);
    assert_share("fra (weight 3 of 4)", fra, n, 0.75);
    // AAAA comes from the same weighted choice.
    let r = c.ask(WEIGHTED_WWW, RecordType::AAAA, None).await;
    assert!(["fra", "ams"].contains(&r.dc()), "{r:?}");
    assert!(r.addrs[0].starts_with("2001:db8:"), "{r:?}");

    // fra drained: ams takes everything; the standby still waits.
    drain(&s, WEIGHTED_ZONE, "fra").await;
    let only = c.tally(WEIGHTED_WWW, None, 200, |_| {}).await;
    assert_eq!(seen(&only), set(&["ams"]), "{only:?}");

    // Both weighted ones drained: only the standby, with the degraded TTL.
    drain(&s, WEIGHTED_ZONE, "ams").await;
    let standby = c
        .tally(WEIGHTED_WWW, Some("11.2.0.0/24"), 200, |r| {
            assert_eq!(r.ttl, 15, "degraded_ttl: {r:?}");
            assert_eq!(r.scope, Some(0));
        })
        .await;
    assert_eq!(seen(&standby), set(&["lon"]), "{standby:?}");

    // Undrained: back to the weighted pair at the normal TTL.
    undrain(&s, WEIGHTED_ZONE, "fra").await;
    undrain(&s, WEIGHTED_ZONE, "ams").await;
    let back = c
        .tally(WEIGHTED_WWW, None, 400, |r| assert_eq!(r.ttl, 30))
        .await;
    assert_eq!(seen(&back), set(&["fra", "ams"]), "{back:?}");
    assert_share("fra after undrain", back["fra"], 400, 0.75);
}

#[tokio::test]
async fn max_answers_two_gives_two_distinct_datacenters() {
    // pool: fra 2, ams 1, lon 1, two datacenters per answer, drawn without
    // replacement: {ams, lon} = 1/4 * 1/3 + 1/4 * 1/3 = 1/6 of answers,
    // {fra, ams} and {fra, lon} 5/12 each.
    let text = example(WEIGHTED);
    let s = serve(WEIGHTED, &text).await;
    let mut c = Client::new(&s, &text).await;
    let n = 1_200;
    let mut pairs: BTreeMap<Vec<String>, usize> = BTreeMap::new();
    for i in 0..n {
        let name = "pool.weighted.example.com.";
        let r = if i % 25 == 0 {
            c.ask_tcp(name, RecordType::A, Some("11.3.0.0/24")).await
        } else {
            c.ask(name, RecordType::A, Some("11.3.0.0/24")).await
        };
        assert_eq!(r.addrs.len(), 2, "{r:?}");
        assert_eq!(r.dcs.len(), 2, "two distinct datacenters: {r:?}");
        assert_eq!(r.scope, Some(0));
        let mut pair = r.dcs.clone();
        pair.sort();
        *pairs.entry(pair).or_insert(0) += 1;
    }
    assert_eq!(pairs.len(), 3, "every pair occurs: {pairs:?}");
    let pair = |a: &str, b: &str| pairs[&vec![a.to_string(), b.to_string()]];
    assert_share("{ams, lon}", pair("ams", "lon"), n, 1.0 / 6.0);
    assert_share("{ams, fra}", pair("ams", "fra"), n, 5.0 / 12.0);
}

#[tokio::test]
async fn weights_follow_a_reload_and_a_bad_policy_keeps_the_old_ones() {
    let text = example(WEIGHTED);
    let s = serve(WEIGHTED, &text).await;
    let zone_file = s.dir.path().join("zones").join(WEIGHTED);
    let mut c = Client::new(&s, &text).await;
    let n = 1_000;
    let before = c.tally(WEIGHTED_WWW, None, n, |_| {}).await;
    assert_share("fra before reload", before["fra"], n, 0.75);

    // Weights swapped: ams now has 3 of 4.
    let swapped = edit(
        &text,
        "weights = { fra = 3, ams = 1, lon = 0 }",
        "weights = { fra = 1, ams = 3, lon = 0 }",
    );
    std::fs::write(&zone_file, &swapped).unwrap();
    s.server.reload().expect("a good reload");
    let after = c.tally(WEIGHTED_WWW, None, n, |_| {}).await;
    assert!(!after.contains_key("lon"), "{after:?}");
    assert_share("ams after reload", after["ams"], n, 0.75);

    // A chain with an unknown step, and an unknown policy name: each is
    // rejected naming the file, the key and the reason.
    let cases = [
        (
            "policy = [\"weighted\", { closest = 2 }]",
            "services.www.policy[1]",
            "unknown step \"closest\"",
        ),
        (
            "policy = \"roundrobin\"",
            "services.www.policy",
            "unknown policy \"roundrobin\"",
        ),
    ];
    for (policy, key, reason) in cases {
        let broken = edit(&swapped, "policy = \"weighted\"", policy);
        std::fs::write(&zone_file, broken).unwrap();
        let err = s.server.reload().expect_err("bad policy rejected");
        let msg = err.to_string();
        assert!(
            msg.contains(&format!("{WEIGHTED}: {key}: {reason}")),
            "file, key and reason: {msg}"
        );
    }
    // The last good config (ams 3) keeps answering.
    let kept = c.tally(WEIGHTED_WWW, None, n, |_| {}).await;
    assert!(!kept.contains_key("lon"), "{kept:?}");
    assert_share("ams after the rejected reloads", kept["ams"], n, 0.75);
}

//------------ sticky -----------------------------------------------------------

#[tokio::test]
async fn sticky_networks_keep_their_datacenter_and_only_a_drained_ones_move() {
    const FILE: &str = "sticky.example.toml";
    const WWW: &str = "www.sticky.example.com.";
    let text = example(FILE);
    let s = serve(FILE, &text).await;
    let mut c = Client::new(&s, &text).await;

    // 300 client /24s, each asked three times: as a /24 over UDP, as one
    // host of it (/32) over UDP, and as the /24 over TCP.
    let nets: Vec<(String, String)> = (0..300)
        .map(|i| {
            let (b, c) = (64 + i / 256, i % 256);
            (format!("101.{b}.{c}.0/24"), format!("101.{b}.{c}.77/32"))
        })
        .collect();
    let mut first = Vec::new();
    for (net, host) in &nets {
        let r = c.ask(WWW, RecordType::A, Some(net)).await;
        assert_eq!(r.scope, Some(24), "scope: the hashed /24 ({net})");
        assert_eq!(r.ttl, 300);
        let dc = r.dc().to_string();
        let again = c.ask(WWW, RecordType::A, Some(host)).await;
        assert_eq!(again.dc(), dc, "{host} is inside {net}");
        assert_eq!(again.scope, Some(24));
        let tcp = c.ask_tcp(WWW, RecordType::A, Some(net)).await;
        assert_eq!(tcp.dc(), dc, "{net} over TCP");
        first.push(dc);
    }
    // Even shares over networks: 5 datacenters of weight 1.
    let mut shares: BTreeMap<&str, usize> = BTreeMap::new();
    for dc in &first {
        *shares.entry(dc).or_insert(0) += 1;
    }
    assert_eq!(shares.len(), 5, "{shares:?}");
    for (dc, &k) in &shares {
        assert_share(&format!("networks on {dc}"), k, nets.len(), 0.2);
    }

    // IPv6 clients: hashed by /56, so two /64s of one /56 agree.
    for i in 0..20 {
        let net = format!("2001:db8:{:x}:{:x}00::/56", 0x100 + i, i);
        let inside = format!("2001:db8:{:x}:{:x}42::/64", 0x100 + i, i);
        let r = c.ask(WWW, RecordType::A, Some(&net)).await;
        assert_eq!(r.scope, Some(56), "{net}");
        let r2 = c.ask(WWW, RecordType::AAAA, Some(&inside)).await;
        assert_eq!(r2.dc(), r.dc(), "{inside} is inside {net}");
        assert_eq!(r2.scope, Some(56), "{inside}");
    }

    // An IPv4 client sent as IPv4-mapped IPv6 is the same network; the
    // scope is the /24 in IPv6 terms.
    for ((net, _), dc) in nets.iter().zip(&first).step_by(30) {
        let v4: IpNet = net.parse().unwrap();
        let mapped = match v4.network() {
            IpAddr::V4(a) => format!("{}/120", a.to_ipv6_mapped()),
            IpAddr::V6(_) => unreachable!(),
        };
        let r = c.ask(WWW, RecordType::A, Some(&mapped)).await;
        assert_eq!(r.dc(), dc, "{mapped} is {net}");
        assert_eq!(r.scope, Some(120), "{mapped}: /24 + 96");
    }

    // Drain the datacenter with the most networks: exactly its networks
    // move, to every other datacenter (each network to its own second
    // choice), with the degraded TTL; every other network stays.
    let (&victim, _) = shares.iter().max_by_key(|(_, k)| **k).unwrap();
    drain(&s, "sticky.example.com", victim).await;
    let mut moved_to = BTreeSet::new();
    let mut during = Vec::new();
    for ((net, _), was) in nets.iter().zip(&first) {
        let r = c.ask(WWW, RecordType::A, Some(net)).await;
        assert_eq!(r.scope, Some(24));
        if was == victim {
            assert_ne!(r.dc(), victim, "{net}: drained");
            assert_eq!(r.ttl, 150, "{net}: moved, so degraded (ttl / 2)");
            moved_to.insert(r.dc().to_string());
        } else {
            assert_eq!(r.dc(), was, "{net} did not have {victim}: it stays");
            assert_eq!(r.ttl, 300, "{net}");
        }
        during.push(r.dc().to_string());
    }
    assert_eq!(
        moved_to.len(),
        4,
        "{victim}'s networks spread: {moved_to:?}"
    );
    // Stable while drained, too.
    for ((net, _), dc) in nets.iter().zip(&during).step_by(7) {
        assert_eq!(c.ask_tcp(WWW, RecordType::A, Some(net)).await.dc(), dc);
    }

    // Undrained: every network is back where it was.
    undrain(&s, "sticky.example.com", victim).await;
    for ((net, _), was) in nets.iter().zip(&first) {
        let r = c.ask(WWW, RecordType::A, Some(net)).await;
        assert_eq!(r.dc(), was, "{net} returns");
        assert_eq!(r.ttl, 300);
    }
}

//------------ round robin -------------------------------------------------------

#[tokio::test]
async fn round_robin_rotates_over_every_address_unless_told_not_to() {
    const FILE: &str = "round-robin.example.toml";
    let text = example(FILE);
    let s = serve(FILE, &text).await;
    let mut c = Client::new(&s, &text).await;
    let east = ["192.0.2.21", "192.0.2.22", "192.0.2.23", "192.0.2.24"];
    let west = ["198.51.100.31", "198.51.100.32"];

    // www: east's four addresses in every answer, starting anywhere; the
    // order is config order rotated.
    let is_rotation = |got: &[String], of: &[&str]| {
        (0..of.len()).any(|k| {
            got.iter()
                .enumerate()
                .all(|(i, a)| a == of[(i + k) % of.len()])
        }) && got.len() == of.len()
    };
    let n = 400;
    let mut firsts: BTreeMap<String, usize> = BTreeMap::new();
    for i in 0..n {
        let r = if i % 20 == 0 {
            c.ask_tcp("www.rr.example.com.", RecordType::A, None).await
        } else {
            c.ask("www.rr.example.com.", RecordType::A, Some("11.1.0.0/24"))
                .await
        };
        assert!(is_rotation(&r.addrs, &east), "{:?}", r.addrs);
        *firsts.entry(r.addrs[0].clone()).or_insert(0) += 1;
    }
    assert_eq!(firsts.len(), 4, "every address comes first: {firsts:?}");
    for (a, &k) in &firsts {
        assert_share(&format!("{a} first"), k, n, 0.25);
    }
    // AAAA: east's two IPv6 addresses, rotated too.
    let mut v6_firsts = BTreeSet::new();
    for _ in 0..100 {
        let r = c.ask("www.rr.example.com.", RecordType::AAAA, None).await;
        assert_eq!(r.addrs.len(), 2, "{r:?}");
        v6_firsts.insert(r.addrs[0].clone());
    }
    assert_eq!(v6_firsts.len(), 2, "{v6_firsts:?}");

    // ordered: rotate = false, always config order.
    for i in 0..100 {
        let r = if i % 10 == 0 {
            c.ask_tcp("ordered.rr.example.com.", RecordType::A, None)
                .await
        } else {
            c.ask("ordered.rr.example.com.", RecordType::A, None).await
        };
        assert_eq!(r.addrs, east, "config order");
    }

    // all: max_answers = 2, both datacenters' six addresses rotated as one
    // list.
    let both: Vec<&str> = east.iter().chain(&west).copied().collect();
    let mut all_firsts = BTreeSet::new();
    for _ in 0..200 {
        let r = c.ask("all.rr.example.com.", RecordType::A, None).await;
        assert!(is_rotation(&r.addrs, &both), "{:?}", r.addrs);
        assert_eq!(r.dcs.len(), 2);
        all_firsts.insert(r.addrs[0].clone());
    }
    assert_eq!(all_firsts.len(), 6, "{all_firsts:?}");
}

//------------ chains ----------------------------------------------------------

#[tokio::test]
async fn chain_nearest_two_then_weighted() {
    const FILE: &str = "chain-nearest-weighted.example.toml";
    const WWW: &str = "www.nearest.example.com.";
    const API: &str = "api.nearest.example.com.";
    let text = with_geo_reference(
        &example(FILE),
        r#"["us-east", "us-west", "eu-central", "eu-south", "eu-west", "ap-northeast", "ap-southeast"]"#,
    );
    let s = serve(FILE, &text).await;
    let mut c = Client::new(&s, &text).await;

    // www = geo > nearest 2 > weighted (eu-central 3, others 1). The scope
    // is the geo block: that of the plain geo service over the same
    // datacenters.
    let cases: [(&str, &str, &[&str]); 4] = [
        ("Germany", "11.2.0.0/24", &["eu-central", "eu-south"]),
        ("United States", "11.1.0.0/24", &["us-east", "us-west"]),
        ("Japan", "11.3.0.0/24", &["ap-northeast", "ap-southeast"]),
        (
            "Germany over IPv6",
            "2001:db8:2::/56",
            &["eu-central", "eu-south"],
        ),
    ];
    for (who, ecs, want) in cases {
        let geo_scope = c
            .ask("geo-ref.nearest.example.com.", RecordType::A, Some(ecs))
            .await
            .scope;
        assert!(geo_scope.is_some_and(|s| s > 0), "{who}: {geo_scope:?}");
        let n = 400;
        let counts = c
            .tally(WWW, Some(ecs), n, |r| {
                assert_eq!(r.scope, geo_scope, "{who}: the geo block");
                assert_eq!(r.ttl, 30);
            })
            .await;
        assert_eq!(seen(&counts), set(want), "{who}: {counts:?}");
        if want[0] == "eu-central" {
            assert_share(
                &format!("{who}: eu-central (3 of 4)"),
                counts["eu-central"],
                n,
                0.75,
            );
        } else {
            assert_share(
                &format!("{who}: {} (1 of 2)", want[0]),
                counts[want[0]],
                n,
                0.5,
            );
        }
    }
    // Both nearest drained: the next nearest (eu-west, 1130 km from the
    // German centroid), as the others stay behind in distance order.
    drain(&s, "nearest.example.com", "eu-central").await;
    drain(&s, "nearest.example.com", "eu-south").await;
    let fallback = c
        .tally(WWW, Some("11.2.0.0/24"), 100, |r| assert_eq!(r.ttl, 15))
        .await;
    assert_eq!(seen(&fallback), set(&["eu-west"]), "{fallback:?}");
    drain(&s, "nearest.example.com", "eu-west").await;
    let next = c.tally(WWW, Some("11.2.0.0/24"), 50, |_| {}).await;
    assert_eq!(seen(&next), set(&["us-east"]), "then us-east (6591 km)");
    for dc in ["eu-central", "eu-south", "eu-west"] {
        undrain(&s, "nearest.example.com", dc).await;
    }

    // api = geo > within_km 1200 > weighted: within 1200 km of the
    // *nearest datacenter*, not of the client.
    let cases: [(&str, &str, &[&str]); 4] = [
        // eu-south 518 km and eu-west 1088 km from eu-central.
        (
            "Germany",
            "11.2.0.0/24",
            &["eu-central", "eu-south", "eu-west"],
        ),
        // Lisbon: nearest eu-west; eu-central is 1088 km from it, eu-south
        // 1416 km (though nearer Lisbon than eu-central is).
        ("Portugal", "11.7.0.0/24", &["eu-west", "eu-central"]),
        ("United States", "11.1.0.0/24", &["us-east"]),
        ("Japan", "11.3.0.0/24", &["ap-northeast"]),
    ];
    for (who, ecs, want) in cases {
        let geo_scope = c
            .ask("geo-ref.nearest.example.com.", RecordType::A, Some(ecs))
            .await
            .scope;
        let n = 300;
        let counts = c
            .tally(API, Some(ecs), n, |r| {
                assert_eq!(r.scope, geo_scope, "{who}")
            })
            .await;
        assert_eq!(seen(&counts), set(want), "{who}: {counts:?}");
        for dc in want {
            assert_share(
                &format!("{who}: {dc}"),
                counts[*dc],
                n,
                1.0 / want.len() as f64,
            );
        }
    }
}

#[tokio::test]
async fn chain_same_continent_then_weighted_else_nearest() {
    const FILE: &str = "chain-continent.example.toml";
    const WWW: &str = "www.continent.example.com.";
    const ZONE: &str = "continent.example.com";
    let text = with_geo_reference(
        &example(FILE),
        r#"["us-east", "us-west", "eu-central", "eu-west", "ap-southeast"]"#,
    );
    let s = serve(FILE, &text).await;
    let mut c = Client::new(&s, &text).await;

    // (who, client, datacenters that answer, share of the first).
    let cases: [(&str, &str, &[&str], f64); 9] = [
        // Two datacenters in Europe, weight 1 each: both, evenly, though
        // eu-central is far nearer Germany and eu-west nearer Lisbon.
        ("Germany", "11.2.0.0/24", &["eu-central", "eu-west"], 0.5),
        ("Portugal", "11.7.0.0/24", &["eu-central", "eu-west"], 0.5),
        (
            "Germany over IPv6",
            "2001:db8:2::/56",
            &["eu-central", "eu-west"],
            0.5,
        ),
        // North America: us-east 2, us-west 1.
        (
            "United States",
            "11.1.0.0/24",
            &["us-east", "us-west"],
            2.0 / 3.0,
        ),
        // Asia: the one datacenter there, also for India.
        ("Japan", "11.3.0.0/24", &["ap-southeast"], 1.0),
        ("India", "11.4.0.0/24", &["ap-southeast"], 1.0),
        // No datacenter on the continent: the nearest, every time (not
        // weighted among the North American ones for Brazil).
        ("Australia", "11.5.0.0/24", &["ap-southeast"], 1.0),
        ("Brazil", "11.6.0.0/24", &["us-east"], 1.0),
        // Not in the GeoIP database: no continent; geo's default order
        // (config order).
        ("unknown", "198.18.1.0/24", &["us-east"], 1.0),
    ];
    for (who, ecs, want, share) in cases {
        let geo_scope = c
            .ask("geo-ref.continent.example.com.", RecordType::A, Some(ecs))
            .await
            .scope
            .expect("scope");
        let n = if want.len() > 1 { 300 } else { 60 };
        let counts = c
            .tally(WWW, Some(ecs), n, |r| {
                let scope = r.scope.expect("ECS echoed");
                assert!(
                    scope >= geo_scope,
                    "{who}: scope /{scope}, the geo block is /{geo_scope}"
                );
                assert_eq!(r.ttl, 30);
            })
            .await;
        assert_eq!(seen(&counts), set(want), "{who}: {counts:?}");
        assert_share(&format!("{who}: {}", want[0]), counts[want[0]], n, share);
    }

    // Europe down: Germany goes to the nearest datacenter elsewhere
    // (us-east, 6591 km), degraded.
    drain(&s, ZONE, "eu-central").await;
    let one = c.tally(WWW, Some("11.2.0.0/24"), 100, |_| {}).await;
    assert_eq!(seen(&one), set(&["eu-west"]), "{one:?}");
    drain(&s, ZONE, "eu-west").await;
    let away = c
        .tally(WWW, Some("11.2.0.0/24"), 100, |r| assert_eq!(r.ttl, 15))
        .await;
    assert_eq!(seen(&away), set(&["us-east"]), "{away:?}");
    undrain(&s, ZONE, "eu-central").await;
    undrain(&s, ZONE, "eu-west").await;
    let back = c.tally(WWW, Some("11.2.0.0/24"), 100, |_| {}).await;
    assert_eq!(seen(&back), set(&["eu-central", "eu-west"]), "{back:?}");
}

#[tokio::test]
async fn chain_prefer_primaries_then_backups_in_failover_order() {
    const FILE: &str = "chain-primary-secondary.example.toml";
    const WWW: &str = "www.primary.example.com.";
    const ZONE: &str = "primary.example.com";
    let text = example(FILE);
    let s = serve(FILE, &text).await;
    let mut c = Client::new(&s, &text).await;

    let n = 400;
    let primaries = c
        .tally(WWW, Some("11.2.0.0/24"), n, |r| {
            assert_eq!(r.ttl, 60);
            assert_eq!(r.scope, Some(0), "nothing depends on the client");
        })
        .await;
    assert_eq!(seen(&primaries), set(&["fra", "ams"]), "{primaries:?}");
    assert_share("fra (1 of 2)", primaries["fra"], n, 0.5);

    // One primary drained: the other takes all. Both: the backups, in
    // `datacenters` order, with degraded_ttl.
    // With one primary drained, an answer is degraded exactly when the
    // per-query draw put the drained one first (half of them here): it
    // differs from the all-healthy answer.
    let steps: [(&str, &[&str], &[u32]); 3] = [
        ("fra", &["ams"], &[60, 10]),
        ("ams", &["lon"], &[10]),
        ("lon", &["par"], &[10]),
    ];
    for (drained, want, ttls) in steps {
        drain(&s, ZONE, drained).await;
        let counts = c
            .tally(WWW, None, 100, |r| assert!(ttls.contains(&r.ttl), "{r:?}"))
            .await;
        assert_eq!(
            seen(&counts),
            set(want),
            "after draining {drained}: {counts:?}"
        );
    }
    // Back in reverse.
    undrain(&s, ZONE, "lon").await;
    assert_eq!(c.ask(WWW, RecordType::A, None).await.dc(), "lon");
    undrain(&s, ZONE, "fra").await;
    let fra = c.tally(WWW, None, 50, |_| {}).await;
    assert_eq!(seen(&fra), set(&["fra"]), "{fra:?}");
    undrain(&s, ZONE, "ams").await;
    let both = c.tally(WWW, None, 200, |_| {}).await;
    assert_eq!(seen(&both), set(&["fra", "ams"]), "{both:?}");
}

#[tokio::test]
async fn chain_same_country_then_sticky() {
    const FILE: &str = "chain-sticky-country.example.toml";
    const WWW: &str = "www.country.example.com.";
    const ZONE: &str = "country.example.com";
    let text = example(FILE);
    let s = serve(FILE, &text).await;
    let mut c = Client::new(&s, &text).await;

    // German networks (three /16s of the test database): each sticks to
    // one of the three German datacenters; together they use all three.
    let german: Vec<String> = (0..150)
        .map(|i| format!("11.{}.{}.0/24", [2, 8, 9][i % 3], i))
        .collect();
    let mut first = Vec::new();
    for net in &german {
        let r = c.ask(WWW, RecordType::A, Some(net)).await;
        assert_eq!(
            r.scope,
            Some(24),
            "{net}: the sticky /24 is longer than the geo block"
        );
        assert_eq!(r.ttl, 300);
        assert!(r.dc().starts_with("de-"), "{net}: stays in Germany: {r:?}");
        let again = c.ask_tcp(WWW, RecordType::A, Some(net)).await;
        assert_eq!(again.dc(), r.dc(), "{net}: sticks");
        first.push(r.dc().to_string());
    }
    for dc in ["de-fra", "de-ber", "de-muc"] {
        let k = first.iter().filter(|d| *d == dc).count();
        assert_share(
            &format!("German networks on {dc}"),
            k,
            german.len(),
            1.0 / 3.0,
        );
    }
    // The United States: us-east or us-west per network, both used.
    let mut us = BTreeSet::new();
    for i in 0..40 {
        let net = format!("11.1.{i}.0/24");
        let r = c.ask(WWW, RecordType::A, Some(&net)).await;
        assert_eq!(r.scope, Some(24));
        let again = c
            .ask(WWW, RecordType::A, Some(&format!("11.1.{i}.9/32")))
            .await;
        assert_eq!(again.dc(), r.dc(), "{net}");
        us.insert(r.dc().to_string());
    }
    assert_eq!(
        us,
        ["us-east", "us-west"].map(String::from).into(),
        "{us:?}"
    );
    // One datacenter in the country, or none: the nearest, whatever the
    // network; still scoped to the /24.
    let fixed = [
        ("Japan", "11.3", "jp-tyo"),
        ("Portugal", "11.7", "de-fra"),
        ("Brazil", "11.6", "us-east"),
        ("India", "11.4", "jp-tyo"),
        ("Australia", "11.5", "jp-tyo"),
    ];
    for (who, prefix, want) in fixed {
        for i in 0..10 {
            let net = format!("{prefix}.{i}.0/24");
            let r = c.ask(WWW, RecordType::A, Some(&net)).await;
            assert_eq!(r.dc(), want, "{who} ({net})");
            assert_eq!(r.scope, Some(24), "{who}: at least the sticky prefix");
        }
    }
    // IPv6: the /56 is hashed.
    for i in 0..10 {
        let net = format!("2001:db8:2:{:x}00::/56", i);
        let r = c.ask(WWW, RecordType::AAAA, Some(&net)).await;
        assert_eq!(r.scope, Some(56), "{net}");
        assert!(r.dc().starts_with("de-"), "{net}: {r:?}");
        let inside = format!("2001:db8:2:{:x}7f::/64", i);
        assert_eq!(
            c.ask(WWW, RecordType::AAAA, Some(&inside)).await.dc(),
            r.dc()
        );
    }

    // de-fra drained: its German networks move to the other German
    // datacenters, the rest stay; Portugal goes to the next nearest (de-muc).
    drain(&s, ZONE, "de-fra").await;
    for (net, was) in german.iter().zip(&first) {
        let now = c.ask(WWW, RecordType::A, Some(net)).await;
        if was == "de-fra" {
            assert!(["de-ber", "de-muc"].contains(&now.dc()), "{net}: {now:?}");
        } else {
            assert_eq!(now.dc(), was, "{net} stays");
        }
    }
    assert_eq!(
        c.ask(WWW, RecordType::A, Some("11.7.0.0/24")).await.dc(),
        "de-muc"
    );
    undrain(&s, ZONE, "de-fra").await;
    for (net, was) in german.iter().zip(&first) {
        assert_eq!(
            c.ask(WWW, RecordType::A, Some(net)).await.dc(),
            was,
            "{net} returns"
        );
    }
}

#[tokio::test]
async fn same_steps_see_the_country_of_clients_under_a_network_override() {
    // A `networks` override sets the geo order of a client network; the
    // client is still where the GeoIP database puts it (10.2/16: Germany),
    // and `same` keeps the datacenters of the *client's* country or
    // continent (module docs of src/policy).
    const FILE: &str = "chain-sticky-country.example.toml";
    let country = format!(
        "{}\n[services.www.networks]\n\"11.2.5.0/24\" = [\"us-east\", \"de-ber\", \"de-muc\"]\n",
        example(FILE)
    );
    let s = serve(FILE, &country).await;
    let mut c = Client::new(&s, &country).await;
    // geo: [us-east, de-ber, de-muc]; same country: [de-ber, de-muc] first,
    // us-east behind; sticky picks one of the two German ones.
    let r = c
        .ask(
            "www.country.example.com.",
            RecordType::A,
            Some("11.2.5.0/24"),
        )
        .await;
    assert!(
        ["de-ber", "de-muc"].contains(&r.dc()),
        "a German client under a network override must stay in Germany: {r:?}"
    );

    const CONTINENT: &str = "chain-continent.example.toml";
    let continent = format!(
        "{}\n[services.www.networks]\n\"11.2.5.0/24\" = [\"us-east\", \"eu-west\"]\n",
        example(CONTINENT)
    );
    let s = serve(CONTINENT, &continent).await;
    let mut c = Client::new(&s, &continent).await;
    // geo: [us-east, eu-west]; same continent: [eu-west] first.
    let counts = c
        .tally(
            "www.continent.example.com.",
            Some("11.2.5.0/24"),
            50,
            |_| {},
        )
        .await;
    assert_eq!(
        seen(&counts),
        set(&["eu-west"]),
        "a European client under a network override must stay in Europe"
    );
}

//------------ explain -------------------------------------------------------

#[test]
fn explain_prints_each_step_and_the_answered_datacenter() {
    const FILE: &str = "chain-nearest-weighted.example.toml";
    let text = example(FILE);
    let map = address_map(&text);
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &Setup {
            zones: &[(FILE, &text)],
            ..Setup::default()
        },
    );
    // Each run is a new process with a new seed: the weighted draw may
    // differ between runs, the report must always agree with itself.
    for client in ["11.2.0.0/24", "11.2.1.0/24", "11.8.0.0/24", "11.1.0.0/24"] {
        let out = Command::new(env!("CARGO_BIN_EXE_meridian"))
            .args([
                "explain",
                "www.nearest.example.com",
                "A",
                "--client",
                client,
            ])
            .arg("--config")
            .arg(&config)
            .output()
            .unwrap();
        let report = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{report}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let steps: Vec<&str> = report
            .lines()
            .filter_map(|l| l.strip_prefix("step:"))
            .map(|l| l.trim().split(" (scope").next().unwrap())
            .collect();
        assert_eq!(
            steps,
            ["geo", "nearest 2", "weighted", "health"],
            "a step: line per step, then health:\n{report}"
        );
        let decision = report
            .lines()
            .find_map(|l| l.strip_prefix("decision:"))
            .unwrap_or_else(|| panic!("no decision line:\n{report}"))
            .trim();
        let chosen = decision
            .strip_prefix("answer [")
            .and_then(|d| d.split(']').next())
            .unwrap_or_else(|| panic!("{decision}"));
        let answered: Vec<&str> = report
            .lines()
            .filter(|l| l.contains(" IN A "))
            .map(|l| l.split_whitespace().last().unwrap())
            .collect();
        assert_eq!(answered.len(), 1, "{report}");
        assert_eq!(
            map[answered[0]], chosen,
            "the decision is the answered datacenter:\n{report}"
        );
        let nearest_two = if client.starts_with("11.1.") {
            ["us-east", "us-west"]
        } else {
            ["eu-central", "eu-south"]
        };
        assert!(nearest_two.contains(&chosen), "{client}: {report}");
        // The decision's scope is the one in the response.
        let scope = decision.rsplit("scope /").next().unwrap();
        assert!(
            report.contains(&format!("source /24, scope /{scope} ")),
            "{report}"
        );
    }
}
