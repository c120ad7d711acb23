//! Geo services over many datacenter subsets share one location table
//! (issue 9): on the shipped GeoIP database, every service's answers and
//! ECS scopes are those the per-service tables gave, and every address
//! inside a returned scope gets the same answer.

use std::net::IpAddr;

use hickory_proto::rr::RecordType;
use ipnet::IpNet;
use meridian::policy::geo::{GeoPolicy, Keep};

use crate::harness::{Rng, Setup, TestServer, a_answers, ecs_of, repo, write_config};

const DATACENTERS: usize = 12;

/// The subsets of the 12 datacenters the services use: distinct, of
/// several sizes, overlapping.
const SUBSETS: &[&[usize]] = &[
    &[0, 5, 7, 8],
    &[0, 3, 6, 8],
    &[1, 2, 9, 11],
    &[2, 4, 5, 10],
    &[3, 7, 11],
    &[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11],
    &[6, 9],
];

/// A zone with `DATACENTERS` datacenters spread over the globe (as
/// bench/gen_load.py places them) and one geo service per subset; the
/// last service also has a network override (its own table) and a
/// `same country` step.
fn zone() -> String {
    let mut z = String::from(
        "origin = \"scale.test.\"\nns = [\"ns.scale.test.\"]\n[soa]\nrname = \"h.scale.test.\"\n\
         serial = 1\n[records]\nns = [{ type = \"A\", value = \"192.0.2.53\" }]\n",
    );
    let golden = (1.0 + 5f64.sqrt()) / 2.0;
    for k in 0..DATACENTERS {
        let zc = 1.0 - 2.0 * (k as f64 + 0.5) / DATACENTERS as f64;
        let lat = zc.asin().to_degrees() * 0.8;
        let lon = ((k as f64 / golden) % 1.0) * 360.0 - 180.0;
        // Countries for the `same` step (any known codes will do).
        let country = ["US", "DE", "JP", "BR", "AU", "IN"][k % 6];
        z.push_str(&format!(
            "[datacenters.dc{k}]\nlocation = [{lat:.2}, {lon:.2}]\ncountry = \"{country}\"\n\
             addresses = [\"198.18.0.{}\", \"2001:db8:{k:x}::1\"]\n",
            k + 1
        ));
    }
    for (i, subset) in SUBSETS.iter().enumerate() {
        let dcs: Vec<String> = subset.iter().map(|k| format!("\"dc{k}\"")).collect();
        z.push_str(&format!(
            "[services.s{i}]\npolicy = \"geo\"\ndatacenters = [{}]\n",
            dcs.join(", ")
        ));
    }
    z.push_str(
        "[services.over]\npolicy = [\"geo\", { same = \"country\" }]\n\
         datacenters = [\"dc0\", \"dc4\", \"dc8\"]\n\
         [services.over.networks]\n\"1.0.0.0/8\" = [\"dc8\", \"dc0\"]\n",
    );
    z
}

fn shipped_db() -> Vec<u8> {
    std::fs::read(repo().join("geoip/dbip-country.mmdb")).expect("the shipped database")
}

/// Client /24s: spread over the IPv4 space, from a fixed seed.
fn clients(n: usize) -> Vec<IpNet> {
    let mut rng = Rng(0x5ca1e);
    (0..n)
        .map(|_| {
            let a = (rng.next() as u32) & 0xffff_ff00;
            IpNet::new(IpAddr::V4(a.into()), 24).unwrap()
        })
        .collect()
}

/// For services over different subsets (and one with overrides), the
/// shared table gives every sampled client the class the old
/// per-service walk of the database gives it, a scope at least as wide
/// (here: the same), and a scope inside which the old table has one
/// class only.
#[test]
fn scopes_match_the_per_service_walk_on_the_shipped_database() {
    let dir = tempfile::tempdir().unwrap();
    let zone = zone();
    let path = write_config(
        dir.path(),
        &Setup {
            zones: &[("scale.test.toml", &zone)],
            geoip: shipped_db(),
            ..Setup::default()
        },
    );
    let (config, snap) = meridian::load(&path).unwrap_or_else(|e| panic!("{e}"));
    let zc = &config.zones[0];
    let mut addrs: Vec<IpAddr> = clients(300).iter().map(|n| n.network()).collect();
    let mut rng = Rng(7);
    addrs.extend((0..300).map(|_| {
        // Populated IPv6: 2000::/4.
        let hi = (rng.next() & 0x0fff_ffff_ffff_ffff) | 0x2000_0000_0000_0000;
        IpAddr::V6((u128::from(hi) << 64).into())
    }));
    // Three plain services over different subsets and the one with
    // overrides: each reference walk takes seconds in a debug build.
    for name in ["s0", "s2", "s4", "over"] {
        let i = zc
            .services
            .iter()
            .position(|s| s.name == name)
            .expect("service");
        let service = &zc.services[i];
        let plan = snap.plan(0, i).expect("plan");
        let new = plan.geo().expect("a geo table");
        let keep = Keep {
            country: name == "over",
            ..Keep::default()
        };
        let old = GeoPolicy::build_by_walk(
            &service.policy.geo,
            &service.datacenters,
            &zc.datacenters,
            &snap.geo,
            keep,
        );
        for &addr in &addrs {
            let (class, scope) = new.lookup(addr);
            let (want, old_scope) = old.lookup(addr);
            assert_eq!(class, want, "{} for {addr}", service.name);
            assert!(
                scope <= old_scope,
                "{} for {addr}: /{scope} is narrower than /{old_scope}",
                service.name
            );
            let net = IpNet::new(addr, scope).unwrap().trunc();
            assert!(
                old.same_class_over(net),
                "{}: {net} holds several classes",
                service.name
            );
            assert_eq!(scope, old_scope, "{} for {addr}", service.name);
        }
    }
}

/// On the real server: for every service, the first, last and middle
/// /24 of each returned scope get the answer the client got.
#[tokio::test]
async fn every_address_in_a_scope_gets_the_same_answer_for_every_service() {
    let zone = zone();
    let s = TestServer::start_with(Setup {
        zones: &[("scale.test.toml", &zone)],
        geoip: shipped_db(),
        ..Setup::default()
    })
    .await;
    let names: Vec<String> = (0..SUBSETS.len())
        .map(|i| format!("s{i}.scale.test."))
        .chain(["over.scale.test.".to_string()])
        .collect();
    let mut wide = 0;
    for name in &names {
        for subnet in clients(12) {
            let r = s.ask(name, RecordType::A, Some(&subnet.to_string())).await;
            let answer = a_answers(&r);
            assert!(!answer.is_empty(), "{name} for {subnet}");
            let scope = ecs_of(&r).expect("ECS echoed").2;
            assert!(scope <= 24, "{name} for {subnet}: /{scope}");
            wide += usize::from(scope < 16);
            let block = IpNet::new(subnet.network(), scope).unwrap().trunc();
            let (lo, hi) = match block {
                IpNet::V4(n) => (u32::from(n.network()), u32::from(n.broadcast())),
                IpNet::V6(_) => unreachable!("IPv4 clients"),
            };
            for probe in [lo, hi, lo + (hi - lo) / 2] {
                let probe_net = IpNet::new(IpAddr::V4(probe.into()), 24).unwrap().trunc();
                let r2 = s
                    .ask(name, RecordType::A, Some(&probe_net.to_string()))
                    .await;
                assert_eq!(
                    a_answers(&r2),
                    answer,
                    "{name}: {probe_net} inside {block} (scope of {subnet})"
                );
            }
        }
    }
    assert!(wide > 0, "no scope wider than /16 among the samples");
}
