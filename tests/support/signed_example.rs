//! The example zone signed with a fresh key, for the test and example
//! binaries that include this file with `#[path]` (tests/no_alloc.rs,
//! examples/handler_bench.rs, bench/dnssec_sign.rs).

use std::path::Path;

/// `query` (a DNS message with an OPT record) with the DNSSEC OK bit set.
#[allow(dead_code)] // bench/dnssec_sign.rs includes this file and sends no queries
pub(crate) fn with_do(query: &[u8]) -> Vec<u8> {
    let mut m = hickory_proto::op::Message::from_vec(query).unwrap();
    m.edns.as_mut().expect("EDNS").set_dnssec_ok(true);
    m.to_vec().unwrap()
}

/// Writes into `dir` a fresh ECDSA P-256 CSK for gslb.example.com. (in
/// `keys/`) and `zones/gslb.example.com.toml`: `root`'s example zone with
/// a `[dnssec]` table naming that key. The caller writes the
/// `meridian.toml` it wants beside them.
pub(crate) fn write_signed_example_zone(root: &Path, dir: &Path) {
    let zone = std::fs::read_to_string(root.join("zones/gslb.example.com.toml")).unwrap();
    write_signed_zone(dir, "gslb.example.com.", &zone);
}

/// Writes into `dir` a fresh ECDSA P-256 CSK for `origin` (in `keys/`)
/// and `zones/<origin>toml`: `zone` (a zone file's text) with a
/// `[dnssec]` table naming that key.
pub(crate) fn write_signed_zone(dir: &Path, origin: &str, zone: &str) {
    use meridian::dnssec::cli::{Role, keygen};
    use meridian::dnssec::keys::KeyAlgorithm;
    let keys = dir.join("keys");
    keygen(origin, KeyAlgorithm::EcdsaP256Sha256, Role::Csk, &keys).unwrap();
    let key = std::fs::read_dir(&keys)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "key"))
        .unwrap();
    std::fs::create_dir_all(dir.join("zones")).unwrap();
    std::fs::write(
        dir.join(format!("zones/{origin}toml")),
        format!(
            "{zone}\n[dnssec]\nkeys = [{{ file = {:?} }}]\n",
            key.display().to_string()
        ),
    )
    .unwrap();
}
