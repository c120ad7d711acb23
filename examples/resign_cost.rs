//! What a background re-sign costs: builds a signed zone of N failover
//! services over two datacenters (default 10,000), then times
//! `Zone::resigned` (what the re-signer runs in `spawn_blocking`).
//!
//! `cargo run --release --example resign_cost [N]`

#![allow(clippy::print_stdout)]

use std::time::Instant;

use meridian::dnssec::keys::{FLAGS_KSK, KeyAlgorithm};

#[path = "../tests/support/dnssec_key.rs"]
mod dnssec_key;

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(10_000);
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    std::fs::create_dir_all(root.join("zones")).expect("dir");
    let (base, _) = dnssec_key::write_dnssec_key(
        &root.join("zones"),
        "big.test.",
        KeyAlgorithm::EcdsaP256Sha256,
        FLAGS_KSK,
    );
    let mut z = String::from(
        r#"origin = "big.test."
ns = ["ns1.big.test."]
[soa]
rname = "hostmaster.big.test."
serial = 1
[records]
ns1 = [{ type = "A", value = "192.0.2.53" }]
[datacenters.a]
addresses = ["192.0.2.10", "2001:db8::10"]
[datacenters.b]
addresses = ["198.51.100.10", "2001:db8::20"]
"#,
    );
    for i in 0..n {
        z.push_str(&format!(
            "[services.s{i}]\npolicy = \"failover\"\ndatacenters = [\"a\", \"b\"]\n"
        ));
    }
    z.push_str(&format!(
        "[dnssec]\nkeys = [{{ file = {:?} }}]\n",
        base.display().to_string()
    ));
    std::fs::write(root.join("zones/big.test.toml"), z).expect("write");
    std::fs::write(root.join("meridian.toml"), "zones = \"zones\"\n").expect("write");
    let t = Instant::now();
    let (_, snap) = meridian::load(&root.join("meridian.toml")).expect("load");
    println!(
        "{n} services: loaded and signed in {:.2} s",
        t.elapsed().as_secs_f64()
    );
    let zone = &snap.zones()[0];
    let t = Instant::now();
    let resigned = zone
        .resigned()
        .expect("a signed zone")
        .expect("every RRset signs");
    let secs = t.elapsed().as_secs_f64();
    let signer = resigned.signer().expect("signed");
    println!(
        "re-signed in {secs:.2} s on one core: {} RRsets ({:.0}/s), store ~{} MiB",
        signer.precomputed(),
        signer.precomputed() as f64 / secs,
        signer.store_bytes() >> 20
    );
}
