//! DNSSEC signing cost (issue 13's closing note): RRsets signed per
//! second on one core for algorithms 13 and 15, and the example config's
//! load (GeoIP tables, zone build and, when signed, its precomputed
//! signatures) unsigned and signed, with the signature store's size.
//!
//! `cargo run --release --example dnssec_sign -- [RRSETS]`

#![allow(clippy::print_stdout)]

use std::path::Path;
use std::time::{Duration, Instant};

use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{Name, RData, Record};
use meridian::dnssec::keys::{self, FLAGS_KSK, KeyAlgorithm};
use meridian::dnssec::{DnssecConfig, KeyState, ZoneKey, ZoneSigner};

#[path = "../tests/support/dnssec_key.rs"]
mod dnssec_key;
#[path = "../tests/support/signed_example.rs"]
mod signed_example;

fn throughput(dir: &Path, alg: KeyAlgorithm, n: u32) {
    let zone = Name::from_ascii("example.com.").expect("name");
    let cfg = DnssecConfig {
        keys: vec![ZoneKey {
            pair: keys::load(&dnssec_key::write_dnssec_key(dir, "example.com.", alg, FLAGS_KSK).0)
                .expect("load"),
            state: KeyState::Active,
        }],
        signature_validity: Duration::from_secs(14 * 86_400),
        refresh_margin: Duration::from_secs(5 * 86_400),
        jitter: Duration::from_secs(12 * 3600),
        inception_offset: Duration::from_secs(3600),
        dnskey_ttl: 3600,
        online_signing_rate: 1_000_000,
        clock: meridian::dnssec::Clock::System,
    };
    let mut signer = ZoneSigner::new(&zone, &cfg);
    let sets: Vec<[Record; 1]> = (0..n)
        .map(|i| {
            [Record::from_rdata(
                Name::from_ascii(format!("n{i}.example.com.")).expect("name"),
                30,
                RData::A(A::from(std::net::Ipv4Addr::from(0xc000_0200 + i))),
            )]
        })
        .collect();
    let now = 1_800_000_000;
    let t = Instant::now();
    for s in &sets {
        signer.precompute(s, now);
    }
    let secs = t.elapsed().as_secs_f64();
    println!(
        "algorithm {:>2} ({:<15}): {n} RRsets in {:.3} s = {:.0} RRsets/s on one core ({:.1} us each)",
        alg.number(),
        alg.mnemonic(),
        secs,
        f64::from(n) / secs,
        secs * 1e6 / f64::from(n)
    );
}

/// The example config copied to `dir`, its zone signed when `signed`.
fn example(dir: &Path, signed: bool) -> std::path::PathBuf {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    if signed {
        signed_example::write_signed_example_zone(repo, dir);
    } else {
        std::fs::create_dir_all(dir.join("zones")).expect("dir");
        std::fs::copy(
            repo.join("zones/gslb.example.com.toml"),
            dir.join("zones/gslb.example.com.toml"),
        )
        .expect("copy the zone");
    }
    std::fs::copy(repo.join("meridian.toml"), dir.join("meridian.toml")).expect("copy");
    dir.join("meridian.toml")
}

fn main() {
    let n: u32 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(20_000);
    let dir = tempfile::tempdir().expect("tempdir");
    for alg in [KeyAlgorithm::EcdsaP256Sha256, KeyAlgorithm::Ed25519] {
        throughput(dir.path(), alg, n);
    }
    for signed in [false, true, false, true] {
        let d = dir.path().join(format!("example-{signed}"));
        let config = example(&d, signed);
        let t = Instant::now();
        let (_, snap) = meridian::load(&config).expect("load");
        let elapsed = t.elapsed();
        let zone = &snap.zones()[0];
        let store = zone.signer().map(|s| {
            format!(
                "{} RRsets precomputed, ~{} KiB",
                s.precomputed(),
                s.store_bytes() / 1024
            )
        });
        println!(
            "example config {}: loaded in {} ms{}",
            if signed { "signed  " } else { "unsigned" },
            elapsed.as_millis(),
            store.map(|s| format!("; {s}")).unwrap_or_default()
        );
        let _ = std::fs::remove_dir_all(&d);
    }
}
