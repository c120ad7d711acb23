//! Differential test: the template fast path against the general path
//! (hickory parses and encodes), over thousands of generated queries.
//!
//! Lower-case queries must produce identical bytes. Mixed-case ones must
//! decode to the same message: hickory compresses names case-sensitively,
//! so the general path may spell out a suffix that the fast path points at.
//!
//! The same generated queries are then broken on the wire: malformed OPT
//! and ECS (FORMERR, byte-identical on both paths), a trailing byte, an
//! extra additional record. Every UDP response must fit the UDP limit.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::IpAddr;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query};
use hickory_proto::rr::rdata::opt::{ClientSubnet, EdnsOption};
use hickory_proto::rr::{Name, RecordType};
use meridian::dns::Transport;

use crate::harness::{handle_fast, handle_slow};

use meridian::snapshot::Snapshot;

use meridian::health::{DcHealth, HealthView, Observed, Override};

use crate::harness::{Rng, Setup, ecs_of, example_zone, write_config};

/// Services with every health behaviour: failover, several answers per
/// response, each all-down choice, warm-up.
pub const HEALTH_ZONE: &str = r#"
origin = "hc.test."
ns = ["ns1.hc.test."]
[soa]
rname = "hostmaster.hc.test."
serial = 1
[records]
ns1 = [{ type = "A", value = "192.0.2.53" }]
alias = [{ type = "CNAME", value = "fo" }]
[datacenters.a]
location = [0.0, 0.0]
addresses = ["192.0.2.1", "2001:db8::1"]
[datacenters.b]
location = [50.0, 10.0]
addresses = ["192.0.2.2"]
[datacenters.c]
location = [-30.0, 150.0]
addresses = ["192.0.2.3", "2001:db8::3"]
[services.fo]
policy = "failover"
datacenters = ["a", "b", "c"]
ttl = 60
when_all_down = "none"
[services.multi]
policy = "geo"
datacenters = ["a", "b", "c"]
max_answers = 2
when_all_down = "servfail"
[services.sorry]
policy = "failover"
datacenters = ["b", "c"]
when_all_down = "fallback"
fallback = ["192.0.2.99"]
warmup = "assume_down"
[services.sorrycname]
policy = "failover"
datacenters = ["c"]
when_all_down = "fallback"
fallback_cname = "sorry.example.net."
[services.open]
policy = "geo"
datacenters = ["a", "c"]
degraded_ttl = 5
"#;

/// The zone store's cases: plain names of every type the fast index
/// encodes directly and of the types it asks the general path for,
/// names above and below the SOA's RNAME (whose negative answers compress
/// against them), mixed-case owners, empty non-terminals, very deep names, a
/// delegation, and a more specific zone served beside this one.
pub const STORE_ZONE: &str = r#"
origin = "store.test."
ns = ["ns1.store.test."]
[soa]
rname = "hostmaster.admins.store.test."
serial = 1
[records]
ns1 = [{ type = "A", value = "192.0.2.53" }]
admins = [{ type = "TXT", value = "above the rname" }]
"hostmaster.admins" = [{ type = "A", value = "192.0.2.60" }]
"below.hostmaster.admins" = [{ type = "TXT", value = "below the rname" }]
Mixed = [
  { type = "A", value = "192.0.2.61" },
  { type = "A", value = "192.0.2.62" },
  { type = "AAAA", value = "2001:db8::61" },
  { type = "TXT", value = "one" },
  { type = "TXT", value = "two" },
  { type = "CAA", value = "0 issue \"ca.example.net\"" },
  { type = "SSHFP", value = "1 1 0123456789abcdef0123456789abcdef01234567" },
  { type = "TLSA", value = "3 1 1 0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef" },
  { type = "MX", value = "10 mx" },
  { type = "SRV", value = "0 5 443 ns1" },
]
mx = [{ type = "A", value = "192.0.2.25" }, { type = "AAAA", value = "2001:db8::25" }]
"a.b.c.d.e" = [{ type = "TXT", value = "deep" }]
"l0.l1.l2.l3.l4.l5.l6.l7.l8.l9.l10.l11.l12.l13.l14.l15.l16.l17.l18.l19.l20.l21.l22.l23.l24.l25.l26.l27.l28.l29.l30.l31.l32.l33.l34.l35.l36.l37.l38.l39.l40.l41.l42.l43.l44.l45.l46.l47.l48.l49" = [{ type = "AAAA", value = "2001:db8::99" }]
ptr = [{ type = "PTR", value = "host.example.net." }]
deleg = [{ type = "NS", value = "ns.deleg" }]
"ns.deleg" = [{ type = "A", value = "192.0.2.70" }]
"x.sub" = [{ type = "A", value = "192.0.2.71" }]
"#;

/// Served beside `STORE_ZONE`: its names belong here, not there.
pub const STORE_SUB_ZONE: &str = r#"
origin = "sub.store.test."
ns = ["ns1.store.test."]
[soa]
rname = "hostmaster.store.test."
serial = 1
[records]
x = [{ type = "A", value = "192.0.2.72" }]
"#;

/// Wildcards (RFC 4592) of every kind: plain ones at the apex and below
/// it, one with a type whose data compresses against the name, CNAMEs in
/// and out of the zone, services, and the names that block them (an
/// empty non-terminal, an existing name, the SOA's RNAME).
pub const WILD_ZONE: &str = r#"
origin = "wild.test."
ns = ["ns1.wild.test."]
[soa]
rname = "hostmaster.wild.test."
serial = 1
[records]
ns1 = [{ type = "A", value = "192.0.2.53" }]
"*" = [{ type = "A", value = "192.0.2.80" }, { type = "TXT", value = "apex wildcard" }]
"a.ent" = [{ type = "TXT", value = "below an empty non-terminal" }]
"*.w" = [{ type = "AAAA", value = "2001:db8::80" }, { type = "CAA", value = "0 issue \"ca.example.net\"" }]
"exists.w" = [{ type = "TXT", value = "not synthesized" }]
"*.mx" = [{ type = "MX", value = "10 mail.mx" }, { type = "TXT", value = "mx" }]
"mail.mx" = [{ type = "A", value = "192.0.2.25" }]
"*.alias" = [{ type = "CNAME", value = "x.cdn" }]
"*.out" = [{ type = "CNAME", value = "target.example.net." }]
[datacenters.a]
location = [0.0, 0.0]
addresses = ["192.0.2.1", "2001:db8::1"]
[datacenters.b]
location = [50.0, 10.0]
addresses = ["192.0.2.2"]
[services."*.cdn"]
policy = "geo"
datacenters = ["a", "b"]
[services."*.sorry"]
policy = "failover"
datacenters = ["b"]
when_all_down = "fallback"
fallback = ["192.0.2.99"]
"#;

/// Every routing policy and chain, with multi-address datacenters and
/// several answers, so the templates are concatenated and rotated.
pub const POLICY_ZONE: &str = r#"
origin = "pol.test."
ns = ["ns1.pol.test."]
[soa]
rname = "hostmaster.pol.test."
serial = 1
[records]
ns1 = [{ type = "A", value = "192.0.2.53" }]
alias = [{ type = "CNAME", value = "rr" }]
[datacenters.us]
location = [39.0, -77.5]
country = "US"
addresses = ["192.0.2.1", "192.0.2.2", "192.0.2.3", "2001:db8::1"]
[datacenters.de]
location = [50.1, 8.7]
country = "DE"
addresses = ["198.51.100.1", "2001:db8:1::1", "2001:db8:1::2"]
[datacenters.fr]
location = [48.9, 2.3]
country = "FR"
addresses = ["198.51.100.2"]
[datacenters.jp]
location = [35.7, 139.7]
country = "JP"
addresses = ["203.0.113.1", "203.0.113.2"]
[services.w]
policy = "weighted"
datacenters = ["us", "de", "fr", "jp"]
weights = { us = 3, de = 2, fr = 1, jp = 0 }
[services.w2]
policy = "weighted"
datacenters = ["us", "de", "jp"]
max_answers = 2
when_all_down = "none"
[services.st]
policy = "sticky"
datacenters = ["us", "de", "fr", "jp"]
sticky_prefix_v4 = 20
[services.rr]
policy = "failover"
datacenters = ["us", "jp", "de"]
max_answers = 3
[services.norr]
policy = "failover"
datacenters = ["us", "jp"]
rotate = false
max_answers = 2
[services.near]
policy = ["geo", { within_km = 1000 }, "weighted"]
datacenters = ["us", "de", "fr", "jp"]
[services.cont]
policy = ["geo", { same = "continent" }, "weighted"]
datacenters = ["us", "de", "fr", "jp"]
max_answers = 2
[services.prim]
policy = [{ prefer = ["de", "fr"] }, "weighted"]
datacenters = ["us", "de", "fr", "jp"]
when_all_down = "servfail"
[services.cc]
policy = ["geo", { same = "country" }, "sticky"]
datacenters = ["us", "de", "fr", "jp"]
[services.lat]
policy = "latency"
datacenters = ["us", "de", "fr", "jp"]
max_answers = 2
[services.latc]
policy = ["latency", { nearest = 2 }, "weighted"]
datacenters = ["us", "de", "fr", "jp"]
"#;

/// Random RUM tables over the datacenters of [`POLICY_ZONE`] (and a name
/// no zone has), with rows for some of the fixture's client networks at
/// both levels and random assignments.
fn random_latency(rng: &mut Rng, snap: &Snapshot) -> Snapshot {
    use meridian::latency::table::{Cell, KeyTableBuilder, RowMeta, key_for};
    use meridian::latency::{Rum, Sources};
    let names: Vec<String> = ["jp", "gone", "fr", "de", "us"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let mut level = |nets: &[&str], prefix: (u8, u8)| {
        let mut b = KeyTableBuilder::new(names.len());
        for net in nets {
            if rng.below(3) == 0 {
                continue;
            }
            let ip: IpAddr = net.parse().unwrap();
            let cells: Vec<Cell> = (0..names.len())
                .map(|_| match rng.below(4) {
                    0 => Cell::default(),
                    _ => Cell::of(
                        1.0 + rng.below(3000) as f64 / 10.0,
                        5.0 + rng.below(50) as f64,
                    ),
                })
                .collect();
            let meta = RowMeta {
                incumbent: match rng.below(3) {
                    0 => u16::MAX,
                    _ => rng.below(names.len()) as u16,
                },
                since: 1_000,
                last_seen: 2_000,
            };
            b.push(key_for(ip, prefix.0, prefix.1), &cells, meta);
        }
        b.finish()
    };
    let fine = level(
        &[
            "11.1.0.0",
            "11.2.3.0",
            "11.3.5.0",
            "11.6.0.0",
            "11.1.2.0",
            "127.0.0.0",
            "2001:db8:2::",
            "2001:db8:3::",
        ],
        (24, 48),
    );
    let coarse = level(
        &[
            "11.1.0.0",
            "11.3.0.0",
            "11.8.0.0",
            "127.0.0.0",
            "2001:db8::",
        ],
        (16, 32),
    );
    let sources = Sources {
        rum: std::sync::Arc::new(Rum {
            fine,
            coarse,
            names: names.clone().into(),
        }),
        ..snap.latency.sources()
    };
    snap.with_latency(sources, Box::default())
}

/// A random health view for every datacenter of the snapshot.
fn random_health(rng: &mut Rng, snap: &Snapshot) -> HealthView {
    let observed = [
        Observed::Up,
        Observed::Up,
        Observed::Down,
        Observed::Unknown,
    ];
    let forced = [
        None,
        None,
        None,
        Some(Override::Drain),
        Some(Override::ForceUp),
    ];
    // The measured-latency fields from their own sequence, seeded from
    // the main one without advancing it: drawing them from `rng` would
    // change every scenario the other fields make.
    let mut latency = Rng(rng.0 ^ 0x1a7e_0c7e_5eed);
    HealthView::new(
        snap.zones()
            .iter()
            .map(|z| {
                z.config
                    .datacenters
                    .iter()
                    .map(|_| DcHealth {
                        observed: *rng.pick(&observed),
                        forced: *rng.pick(&forced),
                        // Load-aware weights: reported spare capacity.
                        capacity: *rng.pick(&[100, 100, 60, 0]),
                        // Per-address health: some addresses' targets down.
                        down_addresses: *rng.pick(&[0, 0, 1, 2, 1 << 32, 0b101 | 1 << 33]),
                        // Measured probe RTT and congestion.
                        rtt_us: *latency.pick(&[0, 0, 800, 20_000, 150_000]),
                        congested: *latency.pick(&[false, false, true]),
                    })
                    .collect()
            })
            .collect(),
    )
}
use crate::protocol::EDGE_ZONE;

fn mixed_case(rng: &mut Rng, name: &str) -> String {
    name.chars()
        .map(|c| {
            if rng.below(2) == 0 {
                c.to_ascii_uppercase()
            } else {
                c
            }
        })
        .collect()
}

/// The zones, health views and query ingredients both differential tests
/// draw from.
struct Fixture {
    /// Holds the config files for as long as the snapshots live.
    _dir: tempfile::TempDir,
    /// The loaded snapshot and random health views of it.
    views: Vec<Snapshot>,
    /// Every owner and service name, their parents, children that do not
    /// exist, and names outside every zone.
    names: Vec<String>,
    subnets: Vec<(IpAddr, u8)>,
    sources: Vec<IpAddr>,
    /// Every zone is signed, and queries with EDNS mostly set DO.
    signed: bool,
}

const TYPES: [RecordType; 15] = [
    RecordType::A,
    RecordType::AAAA,
    RecordType::ANY,
    RecordType::CNAME,
    RecordType::SOA,
    RecordType::NS,
    RecordType::MX,
    RecordType::TXT,
    RecordType::SRV,
    RecordType::CAA,
    RecordType::DS,
    RecordType::PTR,
    RecordType::SSHFP,
    RecordType::TLSA,
    RecordType::Unknown(65_000),
];

fn fixture(rng: &mut Rng) -> Fixture {
    fixture_with(rng, false)
}

/// [`fixture`], with every zone signed by a fresh ECDSA P-256 CSK
/// (`meridian dnssec keygen`'s own function) when `signed`.
fn fixture_with(rng: &mut Rng, signed: bool) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let example = example_zone();
    let tuned = crate::geo_routing::TUNED;
    let zones = [
        ("gslb.example.com.toml", example.as_str()),
        ("edge.test.toml", EDGE_ZONE),
        ("tuned.test.toml", tuned),
        ("hc.test.toml", HEALTH_ZONE),
        ("pol.test.toml", POLICY_ZONE),
        ("store.test.toml", STORE_ZONE),
        ("sub.store.test.toml", STORE_SUB_ZONE),
        ("wild.test.toml", WILD_ZONE),
    ];
    let texts: Vec<(&str, String)> = zones
        .iter()
        .map(|&(file, text)| match signed {
            false => (file, text.to_string()),
            true => (file, format!("{text}\n{}", sign_zone(dir.path(), file))),
        })
        .collect();
    let zones: Vec<(&str, &str)> = texts.iter().map(|(f, t)| (*f, t.as_str())).collect();
    let path = write_config(
        dir.path(),
        &Setup {
            zones: &zones,
            ..Setup::default()
        },
    );
    let (_, base) = meridian::load(&path).unwrap();
    // The snapshot keeps the static records; the config as loaded lists
    // them.
    let config = meridian::config::load(&path).unwrap();
    let mut views = vec![base.clone()];
    views.extend((0..15).map(|_| base.with_health(random_health(rng, &base))));
    let mut own = Rng(0x1a7e);
    for _ in 0..8 {
        let with_rum = random_latency(&mut own, &base);
        views.push(with_rum.with_health(random_health(&mut own, &with_rum)));
    }

    let mut names: Vec<String> = Vec::new();
    for zone in &config.zones {
        names.push(zone.origin.to_ascii());
        for r in &zone.records {
            names.push(r.owner().to_ascii());
        }
        for s in &zone.services {
            names.push(s.fqdn.to_ascii());
        }
    }
    let existing = names.clone();
    for n in &existing {
        names.push(format!("nope.{n}"));
        names.push(format!("a.b.c.{n}"));
    }
    names.extend([
        "example.org.".into(),
        "com.".into(),
        ".".into(),
        "x.child.edge.test.".into(),
    ]);
    // Names the wildcards of WILD_ZONE synthesize, of several lengths and
    // depths, and names they must not (below existing names).
    for stem in [
        "",
        "w.",
        "mx.",
        "alias.",
        "out.",
        "cdn.",
        "sorry.",
        "ent.",
        "exists.w.",
    ] {
        for label in ["q", "another-name", "a.b", "x.y.z.deeper-still"] {
            names.push(format!("{label}.{stem}wild.test."));
        }
    }
    names.push("hostmaster.wild.test.".into());
    names.push("x.hostmaster.wild.test.".into());

    let subnets = [
        ("11.1.0.0", 24),
        ("11.2.3.0", 24),
        ("11.3.5.0", 24),
        ("11.3.0.0", 16),
        ("11.6.0.0", 24),
        ("11.8.0.0", 15),
        ("11.11.0.0", 24),
        ("127.0.0.0", 8),
        ("192.168.0.0", 16),
        ("0.0.0.0", 0),
        ("11.1.2.3", 32),
        ("2001:db8:2::", 48),
        ("2001:db8:3:1::", 64),
        ("2001:db8:3::", 56),
        ("::ffff:11.3.0.0", 112),
        ("::", 0),
    ]
    .iter()
    .map(|(a, p)| (a.parse().unwrap(), *p))
    .collect();
    let sources = ["127.0.0.1", "::1", "11.3.1.1"]
        .iter()
        .map(|a| a.parse().unwrap())
        .collect();
    Fixture {
        _dir: dir,
        views,
        names,
        subnets,
        sources,
        signed,
    }
}

/// A fresh CSK for the zone of the file `file` (`<origin>toml`), written
/// into `dir/keys/<origin>`; returns the zone's `[dnssec]` table.
fn sign_zone(dir: &std::path::Path, file: &str) -> String {
    let zone = file.trim_end_matches("toml");
    let keys = dir.join("keys").join(zone);
    std::fs::create_dir_all(&keys).unwrap();
    let alg = meridian::dnssec::keys::KeyAlgorithm::EcdsaP256Sha256;
    let (base, _) = crate::harness::write_dnssec_key(&keys, zone, alg, 257);
    format!(
        "[dnssec]\nkeys = [{{ file = {:?} }}]\n",
        base.display().to_string()
    )
}

/// One generated query and how it is sent.
struct Generated<'a> {
    qname: String,
    qtype: RecordType,
    /// The name is spelt in lower case (else in random case).
    lower_only: bool,
    /// The query as hickory encodes it.
    message: Message,
    packet: Vec<u8>,
    /// The OPT record's payload size, if the query has EDNS.
    payload: Option<u16>,
    src: IpAddr,
    snap: &'a Snapshot,
    transport: Transport,
}

impl Generated<'_> {
    fn describe(&self, packet: &[u8]) -> String {
        format!(
            "{} {} via {:?} from {}\nquery: {}",
            self.qname,
            self.qtype,
            self.transport,
            self.src,
            hex(packet)
        )
    }
}

fn generate<'a>(rng: &mut Rng, fx: &'a Fixture, lower_only: bool) -> Generated<'a> {
    let base = rng.pick(&fx.names).clone();
    let qname = if lower_only {
        base
    } else {
        mixed_case(rng, &base)
    };
    let qtype = *rng.pick(&TYPES);
    let mut m = Message::new(rng.next() as u16, MessageType::Query, OpCode::Query);
    m.metadata.recursion_desired = rng.below(2) == 0;
    m.metadata.checking_disabled = rng.below(4) == 0;
    m.queries
        .push(Query::query(Name::from_ascii(&qname).unwrap(), qtype));
    let mut payload = None;
    if rng.below(5) != 0 {
        let mut e = Edns::new();
        let size = *rng.pick(&[512u16, 600, 1232, 1400, 4096]);
        e.set_max_payload(size);
        payload = Some(size);
        if rng.below(4) != 0 {
            let (addr, prefix) = *rng.pick(&fx.subnets);
            e.options_mut()
                .insert(EdnsOption::Subnet(ClientSubnet::new(addr, prefix, 0)));
        }
        if rng.below(4) == 0 {
            e.options_mut()
                .insert(EdnsOption::Unknown(10, vec![1, 2, 3, 4, 5, 6, 7, 8]));
        }
        // Signed zones: DO on most queries (drawn only then, so the
        // unsigned cases stay as they were).
        if fx.signed && rng.below(8) != 0 {
            e.set_dnssec_ok(true);
        }
        m.edns = Some(e);
    }
    let packet = m.to_vec().unwrap();
    let src = *rng.pick(&fx.sources);
    let snap = rng.pick(&fx.views);
    let transport = if rng.below(3) == 0 {
        Transport::Tcp
    } else {
        Transport::Udp
    };
    Generated {
        qname,
        qtype,
        lower_only,
        message: m,
        packet,
        payload,
        src,
        snap,
        transport,
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// Every response over UDP fits the limit: 512 bytes without EDNS, else
/// the query's payload size within [512, max_udp_payload].
fn assert_fits_udp(
    response: &[u8],
    payload: Option<u16>,
    g: &Generated<'_>,
    packet: &[u8],
    checks: &mut usize,
) {
    if g.transport != Transport::Udp {
        return;
    }
    let limit = payload.map_or(512, |p| p.clamp(512, g.snap.max_udp_payload));
    assert!(
        response.len() <= usize::from(limit),
        "{} bytes over UDP with a limit of {limit} for {}\nresponse: {}",
        response.len(),
        g.describe(packet),
        hex(response)
    );
    *checks += 1;
}

#[test]
fn fast_path_matches_the_general_path() {
    let mut rng = Rng(0x5eed);
    let fx = fixture(&mut rng);
    let (fast_hits, total, udp_checks) = compare_paths(&mut rng, &fx, 16_000);
    assert!(
        fast_hits * 10 >= total * 8,
        "the fast path answered only {fast_hits} of {total}"
    );
    assert!(udp_checks > 5_000, "only {udp_checks} UDP size checks");
}

/// The same over signed zones, most queries with DO: the DO=1 templates
/// (RRSIGs, NSECs) give the general path's bytes, signatures included
/// (both copy them from the zone's store).
#[test]
fn signed_fast_path_matches_the_general_path() {
    let mut rng = Rng(0x51_9ed);
    let fx = fixture_with(&mut rng, true);
    let (fast_hits, total, udp_checks) = compare_paths(&mut rng, &fx, 16_000);
    // Two names in three do not exist, and a name that does not exist is
    // signed on demand (its NSEC is its own): the general path answers.
    assert!(
        fast_hits * 10 >= total * 4,
        "the fast path answered only {fast_hits} of {total}"
    );
    assert!(udp_checks > 5_000, "only {udp_checks} UDP size checks");
}

/// Sends `n` generated queries to both paths; where the fast path
/// answers, the general path's answer must be the same (bytes for
/// lower-case names, messages otherwise) and both must fit UDP. Returns
/// the fast path's answers, the queries, and the UDP size checks.
fn compare_paths(rng: &mut Rng, fx: &Fixture, n: usize) -> (usize, usize, usize) {
    let (mut fast_hits, mut total, mut udp_checks) = (0, 0, 0);
    let mut signed_answers = 0;
    let mut out = Vec::new();
    for i in 0..n {
        let g = generate(rng, fx, i % 2 == 0);
        let (qname, qtype, transport, src) = (&g.qname, g.qtype, g.transport, g.src);
        total += 1;
        if !handle_fast(g.snap, &g.packet, src, transport, &mut out) {
            continue;
        }
        fast_hits += 1;
        let slow =
            handle_slow(g.snap, &g.packet, src, transport).expect("the general path answers");
        assert_fits_udp(&out, g.payload, &g, &g.packet, &mut udp_checks);
        assert_fits_udp(&slow, g.payload, &g, &g.packet, &mut udp_checks);
        if g.lower_only {
            assert_eq!(
                out,
                slow,
                "bytes differ for {qname} {qtype} via {transport:?} from {src}\nfast: {:?}\nslow: {:?}",
                Message::from_vec(&out),
                Message::from_vec(&slow)
            );
        } else {
            let (f, s) = (
                Message::from_vec(&out).unwrap(),
                Message::from_vec(&slow).unwrap(),
            );
            // hickory compresses names case-sensitively, so the general
            // path's encoding of a mixed-case query can be longer, and a
            // (signed) answer that fits from the templates may not fit
            // from it: it truncates, and the client retries over TCP.
            let longer = s.metadata.truncation && !f.metadata.truncation && slow.len() <= out.len();
            if longer {
                continue;
            }
            assert_eq!(
                f, s,
                "messages differ for {qname} {qtype} via {transport:?}"
            );
            // Owners that repeat the question keep its case.
            for r in f.answers.iter().filter(|r| r.name == *f.queries[0].name()) {
                assert_eq!(&r.name.to_ascii(), qname, "case of the answer owner");
            }
        }
        let m = Message::from_vec(&out).unwrap();
        let dnssec_ok = g.message.edns.as_ref().is_some_and(|e| e.flags().dnssec_ok);
        let rrsigs = (m.answers.iter().chain(&m.authorities))
            .filter(|r| r.record_type() == RecordType::RRSIG)
            .count();
        if !(fx.signed && dnssec_ok) {
            assert_eq!(rrsigs, 0, "RRSIG without DO for {qname} {qtype}");
        } else if rrsigs > 0 {
            signed_answers += 1;
        }
    }
    if fx.signed {
        assert!(
            signed_answers * 3 >= fast_hits,
            "only {signed_answers} of {fast_hits} fast answers carry RRSIGs"
        );
    }
    (fast_hits, total, udp_checks)
}

/// Ways to break the OPT record that RFC 7871 §6 and RFC 6891 §6.1.1
/// answer with FORMERR.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum BadOpt {
    /// More address octets than the source prefix needs.
    TooManyOctets,
    /// Fewer address octets than the source prefix needs.
    TooFewOctets,
    /// Source prefix longer than the family's addresses (> 32, > 128).
    PrefixTooLong,
    /// Address bits set beyond the source prefix.
    BitsBeyondPrefix,
    /// A family other than IPv4 (1) and IPv6 (2).
    UnknownFamily,
    /// Two ECS options, each valid.
    TwoEcs,
    /// An option whose length runs past the end of the OPT RDATA.
    Overrun,
    /// Two OPT records.
    TwoOpts,
}

const BAD_OPTS: [BadOpt; 8] = [
    BadOpt::TooManyOctets,
    BadOpt::TooFewOctets,
    BadOpt::PrefixTooLong,
    BadOpt::BitsBeyondPrefix,
    BadOpt::UnknownFamily,
    BadOpt::TwoEcs,
    BadOpt::Overrun,
    BadOpt::TwoOpts,
];

const OPTION_ECS: u16 = 8;
const OPTION_COOKIE: u16 = 10;

/// One EDNS option: code, length, data.
fn edns_option(code: u16, data: &[u8]) -> Vec<u8> {
    let mut o = code.to_be_bytes().to_vec();
    o.extend_from_slice(&u16::try_from(data.len()).unwrap().to_be_bytes());
    o.extend_from_slice(data);
    o
}

/// ECS option data (RFC 7871 §6) with scope 0.
fn ecs_data(family: u16, source: u8, address: &[u8]) -> Vec<u8> {
    let mut d = family.to_be_bytes().to_vec();
    d.extend_from_slice(&[source, 0]);
    d.extend_from_slice(address);
    d
}

/// A valid ECS option's data for `addr`/`prefix`.
fn valid_ecs(addr: IpAddr, prefix: u8) -> Vec<u8> {
    let (family, octets) = family_octets(addr);
    ecs_data(family, prefix, &octets[..usize::from(prefix).div_ceil(8)])
}

/// The ECS family of `addr` and its octets, zero-padded to 32 bytes.
fn family_octets(addr: IpAddr) -> (u16, [u8; 32]) {
    let mut o = [0u8; 32];
    match addr {
        IpAddr::V4(a) => {
            o[..4].copy_from_slice(&a.octets());
            (1, o)
        }
        IpAddr::V6(a) => {
            o[..16].copy_from_slice(&a.octets());
            (2, o)
        }
    }
}

/// An OPT record (RFC 6891 §6.1.2): version 0, extended RCODE 0.
fn opt_record(payload: u16, dnssec_ok: bool, rdata: &[u8]) -> Vec<u8> {
    let mut r = vec![0, 0, 41];
    r.extend_from_slice(&payload.to_be_bytes());
    r.extend_from_slice(&[0, 0, if dnssec_ok { 0x80 } else { 0 }, 0]);
    r.extend_from_slice(&u16::try_from(rdata.len()).unwrap().to_be_bytes());
    r.extend_from_slice(rdata);
    r
}

/// An A record owned by the root: the extra additional record.
fn root_a_record(rng: &mut Rng) -> Vec<u8> {
    let mut r = vec![0, 0, 1, 0, 1];
    r.extend_from_slice(&(rng.next() as u32 % 86_400).to_be_bytes());
    r.extend_from_slice(&[0, 4]);
    r.extend_from_slice(&(rng.next() as u32).to_be_bytes());
    r
}

/// `header_and_question` (ARCOUNT 0) with `additionals` as the additional
/// section and `trailing` after it.
fn assemble(header_and_question: &[u8], additionals: &[&[u8]], trailing: &[u8]) -> Vec<u8> {
    let mut p = header_and_question.to_vec();
    p[10..12].copy_from_slice(&u16::try_from(additionals.len()).unwrap().to_be_bytes());
    for r in additionals {
        p.extend_from_slice(r);
    }
    p.extend_from_slice(trailing);
    p
}

/// The OPT record(s) of a query broken in the way `bad`, and the payload
/// size of the first (the one the response follows).
fn bad_opts(
    rng: &mut Rng,
    bad: BadOpt,
    g: &Generated<'_>,
    subnets: &[(IpAddr, u8)],
) -> (Vec<Vec<u8>>, u16) {
    // Start from the query's own ECS subnet when it has one.
    let (addr, prefix) = g
        .message
        .edns
        .as_ref()
        .and_then(|e| {
            e.options().options.iter().find_map(|(_, o)| match o {
                EdnsOption::Subnet(cs) => Some((cs.addr(), cs.source_prefix())),
                _ => None,
            })
        })
        .unwrap_or_else(|| *rng.pick(subnets));
    let (family, octets) = family_octets(addr);
    let max_prefix: u8 = if family == 1 { 32 } else { 128 };
    let need = usize::from(prefix).div_ceil(8);
    let ecs = match bad {
        BadOpt::TooManyOctets => {
            let n = need + 1 + rng.below(3);
            edns_option(OPTION_ECS, &ecs_data(family, prefix, &octets[..n]))
        }
        BadOpt::TooFewOctets => {
            // A prefix that needs at least one octet.
            let (prefix, need) = if need == 0 {
                let octets = 1 + rng.below(usize::from(max_prefix / 8));
                (u8::try_from(8 * octets).unwrap(), octets)
            } else {
                (prefix, need)
            };
            let n = need - 1 - rng.below(need);
            edns_option(OPTION_ECS, &ecs_data(family, prefix, &octets[..n]))
        }
        BadOpt::PrefixTooLong => {
            let long =
                max_prefix + 1 + u8::try_from(rng.below(usize::from(255 - max_prefix))).unwrap();
            // As many octets as the prefix would need, or a full address.
            let n = if rng.below(2) == 0 {
                usize::from(long).div_ceil(8)
            } else {
                usize::from(max_prefix / 8)
            };
            edns_option(OPTION_ECS, &ecs_data(family, long, &octets[..n]))
        }
        BadOpt::BitsBeyondPrefix => {
            // A prefix that ends inside an octet, and one bit set after it
            // in that octet.
            let source = loop {
                let s = 1 + u8::try_from(rng.below(usize::from(max_prefix - 1))).unwrap();
                if s % 8 != 0 {
                    break s;
                }
            };
            let n = usize::from(source).div_ceil(8);
            let net = ipnet::IpNet::new(addr, source).unwrap().network();
            let (_, mut o) = family_octets(net);
            o[n - 1] |= 1 << rng.below(usize::from(8 - source % 8));
            edns_option(OPTION_ECS, &ecs_data(family, source, &o[..n]))
        }
        BadOpt::UnknownFamily => {
            let family = *rng.pick(&[3u16, 3, 3, 0, 4, 0xffff]);
            edns_option(OPTION_ECS, &ecs_data(family, prefix, &octets[..need]))
        }
        BadOpt::TwoEcs => {
            let (addr2, prefix2) = if rng.below(2) == 0 {
                (addr, prefix)
            } else {
                *rng.pick(subnets)
            };
            let mut two = edns_option(OPTION_ECS, &valid_ecs(addr, prefix));
            two.extend(edns_option(OPTION_ECS, &valid_ecs(addr2, prefix2)));
            two
        }
        BadOpt::Overrun => {
            let (code, data) = if rng.below(2) == 0 {
                (OPTION_ECS, valid_ecs(addr, prefix))
            } else {
                (OPTION_COOKIE, vec![7; 8])
            };
            let mut o = edns_option(code, &data);
            match rng.below(3) {
                // Only part of the option header.
                0 => o.truncate(1 + rng.below(3)),
                // The length says more than the record holds.
                _ => {
                    let most = if rng.below(2) == 0 { 4 } else { 600 };
                    let len = data.len() + 1 + rng.below(most);
                    o[2..4].copy_from_slice(&u16::try_from(len).unwrap().to_be_bytes());
                }
            }
            o
        }
        BadOpt::TwoOpts => {
            if rng.below(2) == 0 {
                edns_option(OPTION_ECS, &valid_ecs(addr, prefix))
            } else {
                Vec::new()
            }
        }
    };
    // A valid cookie option before the bad one, or after it (except where
    // the bad one must end the record).
    let cookie = edns_option(OPTION_COOKIE, &[1, 2, 3, 4, 5, 6, 7, 8]);
    let mut rdata = Vec::new();
    let where_cookie = rng.below(3);
    if where_cookie == 0 {
        rdata.extend_from_slice(&cookie);
    }
    rdata.extend_from_slice(&ecs);
    if where_cookie == 1 && bad != BadOpt::Overrun {
        rdata.extend_from_slice(&cookie);
    }
    let payload = *rng.pick(&[0u16, 100, 511, 512, 600, 1232, 1233, 1400, 4096, 65_535]);
    let mut opts = vec![opt_record(payload, rng.below(2) == 0, &rdata)];
    if bad == BadOpt::TwoOpts {
        let second = *rng.pick(&[512u16, 1232, 4096]);
        opts.push(opt_record(second, rng.below(2) == 0, &[]));
    }
    (opts, payload)
}

/// A FORMERR as RFC 6891 and RFC 7871 want it: the ID, QR, RCODE 1, the
/// query's question as sent and an OPT record without options.
fn assert_formerr(resp: &[u8], query: &[u8], question_len: usize, what: &str) {
    let ctx = || format!("{what}\nquery: {}\nresponse: {}", hex(query), hex(resp));
    assert!(resp.len() >= 12 + question_len, "{}", ctx());
    assert_eq!(resp[..2], query[..2], "ID; {}", ctx());
    assert_eq!(resp[2] & 0x80, 0x80, "QR; {}", ctx());
    assert_eq!(resp[3] & 0x0f, 1, "RCODE; {}", ctx());
    assert_eq!(resp[4..12], [0, 1, 0, 0, 0, 0, 0, 1], "counts; {}", ctx());
    assert_eq!(
        resp[12..12 + question_len],
        query[12..12 + question_len],
        "question; {}",
        ctx()
    );
    let opt = &resp[12 + question_len..];
    assert!(
        opt.len() == 11 && opt[..3] == [0, 0, 41] && opt[9..] == [0, 0],
        "one OPT record without options; {}",
        ctx()
    );
    let m = Message::from_vec(resp).unwrap_or_else(|e| panic!("{e}; {}", ctx()));
    assert!(
        m.edns.is_some() && ecs_of(&m).is_none() && m.additionals.is_empty(),
        "{}",
        ctx()
    );
}

/// The general path's answer to `packet` equals `reference` (the answer
/// to the unbroken query): the same bytes for lower-case names, the same
/// message otherwise.
fn assert_same_answer(g: &Generated<'_>, packet: &[u8], slow: &[u8], reference: &[u8], what: &str) {
    let ctx = || {
        format!(
            "{what}: {}\nreference: {}\ngeneral path: {}\nreference: {:?}\ngeneral path: {:?}",
            g.describe(packet),
            hex(reference),
            hex(slow),
            Message::from_vec(reference),
            Message::from_vec(slow)
        )
    };
    if g.lower_only {
        assert!(slow == reference, "bytes differ for {}", ctx());
    } else {
        let (r, s) = (Message::from_vec(reference), Message::from_vec(slow));
        assert!(
            matches!((&r, &s), (Ok(r), Ok(s)) if r == s),
            "messages differ for {}",
            ctx()
        );
    }
}

#[test]
fn fast_path_matches_the_general_path_on_broken_envelopes() {
    let mut rng = Rng(0xb10c_5eed);
    let fx = fixture(&mut rng);
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    let mut count = |kind: String| *counts.entry(kind).or_default() += 1;
    let mut udp_checks = 0;
    let (mut fast, mut clean_fast) = (Vec::new(), Vec::new());
    for i in 0..4_800 {
        let g = generate(&mut rng, &fx, i % 2 == 0);
        let (snap, src, transport) = (g.snap, g.src, g.transport);

        // The query without its OPT record, and the OPT record alone.
        let mut plain = g.message.clone();
        plain.edns = None;
        let header_and_question = plain.to_vec().unwrap();
        assert_eq!(header_and_question[10..12], [0, 0]);
        let question_len = header_and_question.len() - 12;
        assert_eq!(
            g.packet[12..header_and_question.len()],
            header_and_question[12..],
            "hickory encodes the question alike with and without EDNS"
        );
        let opt = g.packet[header_and_question.len()..].to_vec();
        assert_eq!(opt.is_empty(), g.payload.is_none());

        // The unbroken query: the fast path's answer if it gives one, else
        // the general path's, is the reference.
        let reference = if handle_fast(snap, &g.packet, src, transport, &mut clean_fast) {
            clean_fast.clone()
        } else {
            handle_slow(snap, &g.packet, src, transport).expect("the general path answers")
        };
        assert_fits_udp(&reference, g.payload, &g, &g.packet, &mut udp_checks);

        // 1. A bad OPT record: FORMERR from the fast path, byte for byte
        // the same from the general path.
        let bad = BAD_OPTS[(i / 2) % BAD_OPTS.len()];
        let (opts, payload) = bad_opts(&mut rng, bad, &g, &fx.subnets);
        let opts: Vec<&[u8]> = opts.iter().map(Vec::as_slice).collect();
        let packet = assemble(&header_and_question, &opts, &[]);
        let what = format!("{bad:?}: {}", g.describe(&packet));
        assert!(
            handle_fast(snap, &packet, src, transport, &mut fast),
            "the fast path declined {what}"
        );
        assert_formerr(&fast, &packet, question_len, &what);
        let slow = handle_slow(snap, &packet, src, transport).expect("the general path answers");
        assert!(
            slow == fast,
            "FORMERR differs for {what}\nfast: {}\nslow: {}",
            hex(&fast),
            hex(&slow)
        );
        assert_fits_udp(&fast, Some(payload), &g, &packet, &mut udp_checks);
        count(format!("bad OPT: {bad:?}"));
        let formerr = fast.clone();

        // ...with a trailing byte, or with another additional record before
        // or after the OPT record(s): the same FORMERR.
        let trailing = [rng.next() as u8];
        let extra = root_a_record(&mut rng);
        let mut with_extra = opts.clone();
        with_extra.insert(rng.below(opts.len() + 1), extra.as_slice());
        for (packet, kind) in [
            (
                assemble(&header_and_question, &opts, &trailing),
                "bad OPT + trailing byte",
            ),
            (
                assemble(&header_and_question, &with_extra, &[]),
                "bad OPT + extra record",
            ),
        ] {
            let what = format!("{kind} ({bad:?}): {}", g.describe(&packet));
            let slow =
                handle_slow(snap, &packet, src, transport).expect("the general path answers");
            assert!(
                slow == formerr,
                "FORMERR differs for {what}\nunbroken: {}\nslow: {}",
                hex(&formerr),
                hex(&slow)
            );
            if handle_fast(snap, &packet, src, transport, &mut fast) {
                assert!(
                    fast == formerr,
                    "FORMERR differs for {what}\nunbroken: {}\nfast: {}",
                    hex(&formerr),
                    hex(&fast)
                );
                count(format!("{kind}: fast path answered"));
            } else {
                count(format!("{kind}: fast path declined"));
            }
            assert_fits_udp(&slow, Some(payload), &g, &packet, &mut udp_checks);
            count(kind.to_string());
        }

        // 2. A valid query with a trailing byte, or with another additional
        // record: the fast path declines, the general path answers as the
        // unbroken query is answered.
        let opt_only: Vec<&[u8]> = if opt.is_empty() {
            vec![]
        } else {
            vec![opt.as_slice()]
        };
        let mut with_extra = opt_only.clone();
        with_extra.insert(rng.below(opt_only.len() + 1), extra.as_slice());
        for (packet, kind) in [
            (
                assemble(&header_and_question, &opt_only, &trailing),
                "valid + trailing byte",
            ),
            (
                assemble(&header_and_question, &with_extra, &[]),
                "valid + extra record",
            ),
        ] {
            let what = format!("{kind}: {}", g.describe(&packet));
            assert!(
                !handle_fast(snap, &packet, src, transport, &mut fast),
                "the fast path answered {what}\nresponse: {}",
                hex(&fast)
            );
            let slow =
                handle_slow(snap, &packet, src, transport).expect("the general path answers");
            assert_same_answer(&g, &packet, &slow, &reference, kind);
            assert_fits_udp(&slow, g.payload, &g, &packet, &mut udp_checks);
            count(kind.to_string());
        }
    }
    eprintln!("cases: {counts:#?}\nUDP size checks: {udp_checks}");
    for bad in BAD_OPTS {
        let n = counts
            .get(&format!("bad OPT: {bad:?}"))
            .copied()
            .unwrap_or(0);
        assert!(n >= 500, "only {n} cases of {bad:?}");
    }
    for kind in [
        "bad OPT + trailing byte",
        "bad OPT + extra record",
        "valid + trailing byte",
        "valid + extra record",
    ] {
        let n = counts.get(kind).copied().unwrap_or(0);
        assert!(n >= 4_500, "only {n} cases of {kind}");
    }
    assert!(udp_checks >= 15_000, "only {udp_checks} UDP size checks");
}

#[test]
fn fast_path_declines_what_it_does_not_handle() {
    let (_, snap) = meridian::load(&crate::harness::repo().join("meridian.toml")).unwrap();
    let src: IpAddr = "127.0.0.1".parse().unwrap();
    let mut out = Vec::new();
    let q = |f: &dyn Fn(&mut Message)| {
        let mut m = crate::harness::query("www.gslb.example.com.", RecordType::A, None);
        f(&mut m);
        m.to_vec().unwrap()
    };
    let declined = [
        q(&|m| m.metadata.op_code = OpCode::Notify),
        q(&|m| m.queries.push(m.queries[0].clone())),
        q(&|m| {
            m.queries[0].set_query_class(hickory_proto::rr::DNSClass::CH);
        }),
        q(&|m| {
            m.queries[0].set_query_type(RecordType::AXFR);
        }),
    ];
    for packet in &declined {
        assert!(!handle_fast(&snap, packet, src, Transport::Udp, &mut out));
        // ...and the full handler still answers it.
        assert!(meridian::dns::handle(&snap, packet, src, Transport::Udp).is_some());
    }
}

/// Every policy's answers, several datacenters and rotated addresses
/// included, come from the templates: none falls back to the general path.
#[test]
fn the_fast_path_answers_every_policy() {
    let mut rng = Rng(0x0dec_1510);
    let f = fixture(&mut rng);
    let services = [
        "w", "w2", "st", "rr", "norr", "near", "cont", "prim", "cc", "alias",
    ];
    let mut answered = 0;
    for snap in &f.views {
        for name in services {
            for qtype in [RecordType::A, RecordType::AAAA] {
                for &(net, prefix) in &f.subnets {
                    let q = meridian::dns::build_query(
                        &format!("{name}.pol.test."),
                        &qtype.to_string(),
                        Some((net, prefix)),
                        7,
                    )
                    .unwrap();
                    let mut out = Vec::new();
                    assert!(
                        handle_fast(snap, &q, f.sources[0], Transport::Udp, &mut out),
                        "{name} {qtype} from {net}/{prefix} fell back to the general path"
                    );
                    answered += 1;
                }
            }
        }
    }
    assert!(answered > 1_000, "{answered}");
}

/// Names a wildcard synthesizes are answered from the templates where
/// their bytes do not depend on the name: plain wildcards (answers and
/// NODATA) and wildcard services, at any depth. Responses with the SOA
/// (a service's NODATA when a datacenter has no address of the family)
/// and names compressed against the question go to the general path,
/// which the differential tests check byte for byte.
#[test]
fn the_fast_path_answers_wildcards() {
    let mut rng = Rng(0x3c4d);
    let f = fixture(&mut rng);
    let cases = [
        ("q.wild.test.", RecordType::A),
        ("a.much.deeper.name.wild.test.", RecordType::TXT),
        ("q.wild.test.", RecordType::MX),
        ("x.w.wild.test.", RecordType::AAAA),
        ("x.y.w.wild.test.", RecordType::CAA),
        ("x.w.wild.test.", RecordType::A),
        ("img.cdn.wild.test.", RecordType::A),
        ("a.b.cdn.wild.test.", RecordType::A),
        ("down.sorry.wild.test.", RecordType::A),
        ("q.mx.wild.test.", RecordType::TXT),
    ];
    for snap in &f.views {
        for (name, qtype) in cases {
            let q = meridian::dns::build_query(name, &qtype.to_string(), None, 7).unwrap();
            let mut out = Vec::new();
            assert!(
                handle_fast(snap, &q, f.sources[0], Transport::Udp, &mut out),
                "{name} {qtype} fell back to the general path"
            );
            let slow = handle_slow(snap, &q, f.sources[0], Transport::Udp).unwrap();
            let (fast, slow) = (
                Message::from_vec(&out).unwrap(),
                Message::from_vec(&slow).unwrap(),
            );
            assert_eq!(fast.answers, slow.answers, "{name} {qtype}");
        }
    }
}

/// Every datacenter of every zone of `snap` in state `observed`, except
/// the first of each zone in state `first`.
fn uniform_health(snap: &Snapshot, first: Observed, observed: Observed) -> HealthView {
    HealthView::new(
        snap.zones()
            .iter()
            .map(|z| {
                (0..z.config.datacenters.len())
                    .map(|i| DcHealth {
                        observed: if i == 0 { first } else { observed },
                        forced: None,
                        capacity: 100,
                        down_addresses: 0,
                        rtt_us: 0,
                        congested: false,
                    })
                    .collect()
            })
            .collect(),
    )
}

/// A query for `name`/`qtype` with DO set, and ECS `subnet` (as given,
/// host bits and all) if given.
fn do_query_bytes(name: &str, qtype: RecordType, subnet: Option<(IpAddr, u8)>) -> Vec<u8> {
    let mut m = crate::harness::do_query(name, qtype, None);
    if let Some((addr, prefix)) = subnet {
        let e = m.edns.as_mut().unwrap();
        e.options_mut()
            .insert(EdnsOption::Subnet(ClientSubnet::new(addr, prefix, 0)));
    }
    m.to_vec().unwrap()
}

/// Signed zones, DO=1: the answers the store signs ahead come from the
/// templates, byte for byte the general path's, RRSIGs included: DNSKEY,
/// SOA, NS, static RRsets, CNAME chains, NODATA with the name's NSEC, a
/// referral with its NSEC, and service answers for clients in several
/// regions: one datacenter, several (max_answers), rotated, degraded,
/// all down (NODATA, fallback, SERVFAIL), and the first CNAME alone for
/// ECS. What needs a signature made on demand (a name that does not
/// exist, a wildcard's) goes to the general path.
#[test]
fn the_signed_fast_path_answers_do_queries() {
    let mut rng = Rng(0xd0_5e);
    let f = fixture_with(&mut rng, true);
    let base = &f.views[0];
    let views = [
        (
            "up",
            base.with_health(uniform_health(base, Observed::Up, Observed::Up)),
        ),
        (
            "first down",
            base.with_health(uniform_health(base, Observed::Down, Observed::Up)),
        ),
        (
            "all down",
            base.with_health(uniform_health(base, Observed::Down, Observed::Down)),
        ),
    ];
    let mut cases: Vec<(String, RecordType)> = [
        ("gslb.example.com.", RecordType::DNSKEY),
        ("gslb.example.com.", RecordType::SOA),
        ("gslb.example.com.", RecordType::NS),
        ("gslb.example.com.", RecordType::MX),
        ("gslb.example.com.", RecordType::A),
        ("mail.gslb.example.com.", RecordType::A),
        ("mail.gslb.example.com.", RecordType::TXT),
        ("app.gslb.example.com.", RecordType::TXT),
        ("status.gslb.example.com.", RecordType::A),
        ("www.gslb.example.com.", RecordType::MX),
        ("deleg.store.test.", RecordType::A),
        ("mixed.store.test.", RecordType::MX),
        ("mixed.store.test.", RecordType::TXT),
        ("a.ent.wild.test.", RecordType::TXT),
        ("ent.wild.test.", RecordType::TXT),
    ]
    .iter()
    .map(|(n, t)| (n.to_string(), *t))
    .collect();
    let services = [
        "www.gslb.example.com.",
        "app.gslb.example.com.",
        "fo.hc.test.",
        "multi.hc.test.",
        "sorry.hc.test.",
        "sorrycname.hc.test.",
        "open.hc.test.",
        "alias.hc.test.",
    ]
    .into_iter()
    .map(String::from)
    .chain(
        [
            "w", "w2", "st", "rr", "norr", "near", "cont", "prim", "cc", "alias",
        ]
        .iter()
        .map(|s| format!("{s}.pol.test.")),
    );
    for name in services {
        cases.push((name.clone(), RecordType::A));
        cases.push((name, RecordType::AAAA));
    }
    let mut subnets: Vec<Option<(IpAddr, u8)>> = f.subnets.iter().copied().map(Some).collect();
    subnets.push(None);
    let (mut answered, mut multi, mut rotated) = (0, 0, 0);
    let mut out = Vec::new();
    for (view, snap) in &views {
        for (name, qtype) in &cases {
            for subnet in &subnets {
                let q = do_query_bytes(name, *qtype, *subnet);
                let src = f.sources[0];
                assert!(
                    handle_fast(snap, &q, src, Transport::Udp, &mut out),
                    "{name} {qtype} from {subnet:?} ({view}) fell back to the general path"
                );
                let slow = handle_slow(snap, &q, src, Transport::Udp).unwrap();
                assert_eq!(
                    out,
                    slow,
                    "bytes differ for {name} {qtype} from {subnet:?} ({view})\nfast: {:?}\nslow: {:?}",
                    Message::from_vec(&out),
                    Message::from_vec(&slow)
                );
                let m = Message::from_vec(&out).unwrap();
                if m.metadata.response_code == hickory_proto::op::ResponseCode::ServFail {
                    continue;
                }
                let sigs = |rs: &[hickory_proto::rr::Record]| {
                    rs.iter()
                        .filter(|r| r.record_type() == RecordType::RRSIG)
                        .count()
                };
                assert!(
                    sigs(&m.answers) + sigs(&m.authorities) > 0,
                    "{name} {qtype} ({view}): no RRSIG in {m:?}"
                );
                let addresses: Vec<_> = (m.answers.iter())
                    .filter(|r| r.record_type() == *qtype)
                    .map(|r| r.data.clone())
                    .collect();
                multi += usize::from(addresses.len() > 1);
                let sorted = addresses
                    .windows(2)
                    .all(|w| format!("{:?}", w[0]) <= format!("{:?}", w[1]));
                rotated += usize::from(!sorted);
                answered += 1;
            }
        }
    }
    assert!(answered > 2_000, "{answered}");
    assert!(
        multi > 100 && rotated > 10,
        "{multi} with several addresses, {rotated} rotated"
    );

    // Signed on demand, so the general path's.
    for (name, qtype) in [
        ("nope.gslb.example.com.", RecordType::A),
        ("q.wild.test.", RecordType::A),
        ("img.cdn.wild.test.", RecordType::A),
    ] {
        let q = do_query_bytes(name, qtype, None);
        assert!(
            !handle_fast(&views[0].1, &q, f.sources[0], Transport::Udp, &mut out),
            "{name} {qtype} answered by the fast path"
        );
    }
    // A name that does not exist: once the general path has signed its
    // compact NXDOMAIN, the fast path answers the name's next queries, of
    // any type, byte for byte as the general path does.
    for name in ["nope.gslb.example.com.", "a.b.nope.gslb.example.com."] {
        for qtype in [RecordType::A, RecordType::TXT, RecordType::AAAA] {
            let q = do_query_bytes(name, qtype, None);
            let slow = handle_slow(&views[0].1, &q, f.sources[0], Transport::Udp).unwrap();
            assert!(
                handle_fast(&views[0].1, &q, f.sources[0], Transport::Udp, &mut out),
                "{name} {qtype}: not kept for the fast path"
            );
            assert_eq!(
                out,
                slow,
                "{name} {qtype}\nfast: {:?}\nslow: {:?}",
                Message::from_vec(&out),
                Message::from_vec(&slow)
            );
            let m = Message::from_vec(&out).unwrap();
            assert!(
                m.authorities
                    .iter()
                    .any(|r| r.record_type() == RecordType::NSEC
                        && r.name == Name::from_ascii(name).unwrap()),
                "{m:?}"
            );
        }
    }
    // Wildcard names are never kept: the general path signs them.
    let q = do_query_bytes("q.wild.test.", RecordType::A, None);
    handle_slow(&views[0].1, &q, f.sources[0], Transport::Udp).unwrap();
    assert!(!handle_fast(
        &views[0].1,
        &q,
        f.sources[0],
        Transport::Udp,
        &mut out
    ));

    // Without DO, the plain templates, without RRSIGs.
    let q = crate::harness::query("www.gslb.example.com.", RecordType::A, None)
        .to_vec()
        .unwrap();
    assert!(handle_fast(
        &views[0].1,
        &q,
        f.sources[0],
        Transport::Udp,
        &mut out
    ));
    let m = Message::from_vec(&out).unwrap();
    assert!(
        m.answers.iter().all(|r| r.record_type() == RecordType::A),
        "{m:?}"
    );
}

/// A NODATA or insecure referral asked in mixed case carries the same
/// NSEC and RRSIG as in lower case, from the store: the NSEC's next name
/// keeps its case when signed (RFC 6840 §5.1), so spelling it as asked
/// made a new RRset to sign on demand for each spelling.
#[test]
fn mixed_case_denials_use_the_stored_signatures() {
    let mut rng = Rng(0xca5e);
    let f = fixture_with(&mut rng, true);
    let snap = &f.views[0];
    let denial = |name: &str, qtype: RecordType| {
        let q = do_query_bytes(name, qtype, None);
        let slow = handle_slow(snap, &q, f.sources[0], Transport::Udp).unwrap();
        let m = Message::from_vec(&slow).unwrap();
        use hickory_proto::dnssec::rdata::DNSSECRData;
        use hickory_proto::rr::RData;
        let nsec: Vec<_> = (m.authorities.iter())
            .filter(|r| match &r.data {
                RData::DNSSEC(DNSSECRData::NSEC(_)) => true,
                RData::DNSSEC(DNSSECRData::RRSIG(s)) => s.input().type_covered == RecordType::NSEC,
                _ => false,
            })
            .map(|r| r.data.clone())
            .collect();
        assert_eq!(nsec.len(), 2, "{name} {qtype}: {m:?}");
        nsec
    };
    for (lower, mixed, qtype) in [
        (
            "mail.gslb.example.com.",
            "MaIL.gSlb.Example.COM.",
            RecordType::TXT,
        ),
        (
            "www.gslb.example.com.",
            "WwW.gslb.example.com.",
            RecordType::MX,
        ),
        ("deleg.store.test.", "DeLeg.Store.test.", RecordType::A),
    ] {
        assert_eq!(
            denial(lower, qtype),
            denial(mixed, qtype),
            "{mixed} {qtype}"
        );
    }
}
