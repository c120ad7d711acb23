//! A DNSSEC key pair written as `meridian dnssec keygen` and BIND write
//! it, for the test and example binaries that include this file with
//! `#[path]` (tests/integration/harness.rs, bench/dnssec_sign.rs,
//! examples/resign_cost.rs).

use std::path::{Path, PathBuf};

use hickory_proto::rr::Name;

/// A DNSSEC key pair for `origin` written in BIND's format into `dir`
/// (the `.private` file mode 0600); returns its base path and DNSKEY.
pub(crate) fn write_dnssec_key(
    dir: &Path,
    origin: &str,
    alg: meridian::dnssec::keys::KeyAlgorithm,
    flags: u16,
) -> (PathBuf, hickory_proto::dnssec::rdata::DNSKEY) {
    use meridian::dnssec::keys;
    let zone = Name::from_ascii(origin).unwrap();
    let (dnskey, private) = keys::generate(alg, flags).unwrap();
    let tag = dnskey.calculate_key_tag().unwrap();
    let base = dir.join(keys::file_base(&zone, alg, tag));
    keys::write_new(
        &keys::key_path(&base),
        &keys::dnskey_text(&zone, &dnskey),
        0o644,
    )
    .unwrap();
    keys::write_new(
        &keys::private_path(&base),
        &keys::private_text(alg, &private, "20260101000000"),
        0o600,
    )
    .unwrap();
    (base, dnskey)
}
