//! Differential test: the template fast path against the general path
//! (hickory parses and encodes), over thousands of generated queries.
//!
//! Lower-case queries must produce identical bytes. Mixed-case ones must
//! decode to the same message: hickory compresses names case-sensitively,
//! so the general path may spell out a suffix that the fast path points at.

use std::net::IpAddr;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query};
use hickory_proto::rr::rdata::opt::{ClientSubnet, EdnsOption};
use hickory_proto::rr::{Name, RecordType};
use meridian::dns::{Transport, handle_fast, handle_slow};

use meridian::health::{DcHealth, HealthView, Observed, Override};

use crate::harness::{Rng, Setup, example_zone, write_config};

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

/// A random health view for every datacenter of the snapshot.
fn random_health(rng: &mut Rng, snap: &meridian::snapshot::Snapshot) -> HealthView {
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

#[test]
fn fast_path_matches_the_general_path() {
    let dir = tempfile::tempdir().unwrap();
    let example = example_zone();
    let tuned = crate::geo_routing::TUNED;
    let path = write_config(
        dir.path(),
        &Setup {
            zones: &[
                ("gslb.example.com.toml", &example),
                ("edge.test.toml", EDGE_ZONE),
                ("tuned.test.toml", tuned),
                ("hc.test.toml", HEALTH_ZONE),
            ],
            ..Setup::default()
        },
    );
    let (config, base) = meridian::load(&path).unwrap();
    let mut rng = Rng(0x5eed);
    let mut views = vec![base.clone()];
    views.extend((0..15).map(|_| base.with_health(random_health(&mut rng, &base))));

    // Every owner and service name, their parents, children that do not
    // exist, and names outside every zone.
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

    let types = [
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
        RecordType::Unknown(65_000),
    ];
    let subnets: Vec<(IpAddr, u8)> = [
        ("10.1.0.0", 24),
        ("10.2.3.0", 24),
        ("10.3.5.0", 24),
        ("10.3.0.0", 16),
        ("10.6.0.0", 24),
        ("10.8.0.0", 15),
        ("10.11.0.0", 24),
        ("127.0.0.0", 8),
        ("192.168.0.0", 16),
        ("0.0.0.0", 0),
        ("10.1.2.3", 32),
        ("2001:db8:2::", 48),
        ("2001:db8:3:1::", 64),
        ("2001:db8:3::", 56),
        ("::ffff:10.3.0.0", 112),
        ("::", 0),
    ]
    .iter()
    .map(|(a, p)| (a.parse().unwrap(), *p))
    .collect();
    let sources: [IpAddr; 3] = [
        "127.0.0.1".parse().unwrap(),
        "::1".parse().unwrap(),
        "10.3.1.1".parse().unwrap(),
    ];

    let (mut fast_hits, mut total) = (0, 0);
    let mut out = Vec::new();
    for i in 0..16_000 {
        let base = rng.pick(&names).clone();
        let lower_only = i % 2 == 0;
        let qname = if lower_only {
            base.clone()
        } else {
            mixed_case(&mut rng, &base)
        };
        let qtype = *rng.pick(&types);
        let mut m = Message::new(rng.next() as u16, MessageType::Query, OpCode::Query);
        m.metadata.recursion_desired = rng.below(2) == 0;
        m.metadata.checking_disabled = rng.below(4) == 0;
        m.queries
            .push(Query::query(Name::from_ascii(&qname).unwrap(), qtype));
        if rng.below(5) != 0 {
            let mut e = Edns::new();
            e.set_max_payload(*rng.pick(&[512u16, 600, 1232, 1400, 4096]));
            if rng.below(4) != 0 {
                let (addr, prefix) = *rng.pick(&subnets);
                e.options_mut()
                    .insert(EdnsOption::Subnet(ClientSubnet::new(addr, prefix, 0)));
            }
            if rng.below(4) == 0 {
                e.options_mut()
                    .insert(EdnsOption::Unknown(10, vec![1, 2, 3, 4, 5, 6, 7, 8]));
            }
            m.edns = Some(e);
        }
        let packet = m.to_vec().unwrap();
        let src = *rng.pick(&sources);
        let snap = rng.pick(&views);
        let transport = if rng.below(3) == 0 {
            Transport::Tcp
        } else {
            Transport::Udp
        };
        total += 1;
        if !handle_fast(snap, &packet, src, transport, &mut out) {
            continue;
        }
        fast_hits += 1;
        let slow = handle_slow(snap, &packet, src, transport).expect("the general path answers");
        if lower_only {
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
            assert_eq!(
                f, s,
                "messages differ for {qname} {qtype} via {transport:?}"
            );
            // Owners that repeat the question keep its case.
            for r in f.answers.iter().filter(|r| r.name == *f.queries[0].name()) {
                assert_eq!(r.name.to_ascii(), qname, "case of the answer owner");
            }
        }
    }
    assert!(
        fast_hits * 10 >= total * 8,
        "the fast path answered only {fast_hits} of {total}"
    );
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
        q(&|m| {
            m.edns.as_mut().unwrap().set_version(1);
        }),
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
