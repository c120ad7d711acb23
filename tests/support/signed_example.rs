//! The example zone signed with a fresh key, for the test and example
//! binaries that include this file with `#[path]` (tests/no_alloc.rs,
//! examples/handler_bench.rs).

use std::path::Path;

/// Writes into `dir` a fresh ECDSA P-256 CSK for gslb.example.com. (in
/// `keys/`) and `zones/gslb.example.com.toml`: `root`'s example zone with
/// a `[dnssec]` table naming that key. The caller writes the
/// `meridian.toml` it wants beside them.
pub(crate) fn write_signed_example_zone(root: &Path, dir: &Path) {
    use meridian::dnssec::cli::{Role, keygen};
    use meridian::dnssec::keys::KeyAlgorithm;
    let keys = dir.join("keys");
    keygen(
        "gslb.example.com.",
        KeyAlgorithm::EcdsaP256Sha256,
        Role::Csk,
        &keys,
    )
    .unwrap();
    let key = std::fs::read_dir(&keys)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "key"))
        .unwrap();
    let zone = std::fs::read_to_string(root.join("zones/gslb.example.com.toml")).unwrap();
    std::fs::create_dir_all(dir.join("zones")).unwrap();
    std::fs::write(
        dir.join("zones/gslb.example.com.toml"),
        format!(
            "{zone}\n[dnssec]\nkeys = [{{ file = {:?} }}]\n",
            key.display().to_string()
        ),
    )
    .unwrap();
}
