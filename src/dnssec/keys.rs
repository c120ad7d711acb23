//! DNSSEC keys in BIND's file format: `K<zone>.+<alg>+<tag>.key` holds
//! the DNSKEY record in zone-file text, `K<zone>.+<alg>+<tag>.private`
//! the private key (`Private-key-format: v1.3`). Keys made by BIND's
//! `dnssec-keygen -a ECDSAP256SHA256|ED25519` load as they are, and keys
//! made by `meridian dnssec keygen` work with BIND's tools.
//!
//! The crypto is ring's (through hickory-proto's `dnssec-ring`): ring
//! loads a P-256 key from its private scalar and public point, and an
//! Ed25519 key from its seed and public key, checking that the two
//! halves belong together. Nothing here computes a signature itself.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use data_encoding::BASE64;
use hickory_proto::dnssec::crypto::{EcdsaSigningKey, Ed25519SigningKey};
use hickory_proto::dnssec::rdata::{DNSKEY, DS};
use hickory_proto::dnssec::{Algorithm, DigestType, PublicKey, PublicKeyBuf, SigningKey, Verifier};
use hickory_proto::rr::Name;
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair, KeyPair};

/// The algorithms Meridian signs with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KeyAlgorithm {
    /// ECDSA P-256 with SHA-256, algorithm 13 (the default).
    EcdsaP256Sha256,
    /// Ed25519, algorithm 15.
    Ed25519,
}

impl KeyAlgorithm {
    /// The DNSSEC algorithm number.
    pub fn number(self) -> u8 {
        match self {
            Self::EcdsaP256Sha256 => 13,
            Self::Ed25519 => 15,
        }
    }

    /// The algorithm with this number, if Meridian signs with it.
    pub fn from_number(n: u8) -> Option<Self> {
        match n {
            13 => Some(Self::EcdsaP256Sha256),
            15 => Some(Self::Ed25519),
            _ => None,
        }
    }

    /// BIND's mnemonic, as `dnssec-keygen -a` and the private file write it.
    pub fn mnemonic(self) -> &'static str {
        match self {
            Self::EcdsaP256Sha256 => "ECDSAP256SHA256",
            Self::Ed25519 => "ED25519",
        }
    }

    /// hickory's value.
    pub(crate) fn hickory(self) -> Algorithm {
        match self {
            Self::EcdsaP256Sha256 => Algorithm::ECDSAP256SHA256,
            Self::Ed25519 => Algorithm::ED25519,
        }
    }

    /// The algorithm named by `text`: a mnemonic (any case) or a number.
    pub fn parse(text: &str) -> Option<Self> {
        match text.trim().to_ascii_lowercase().as_str() {
            "ecdsap256sha256" | "13" => Some(Self::EcdsaP256Sha256),
            "ed25519" | "15" => Some(Self::Ed25519),
            _ => None,
        }
    }
}

/// DNSKEY flags of a zone key (bit 7) with the SEP bit (bit 15): a KSK or
/// CSK (RFC 4034 §2.1.1).
pub const FLAGS_KSK: u16 = 257;
/// DNSKEY flags of a zone key without SEP: a ZSK.
pub const FLAGS_ZSK: u16 = 256;

/// A key pair loaded from its two files.
#[derive(Clone)]
pub struct KeyPairFiles {
    /// The zone (the DNSKEY's owner), lower case.
    pub zone: Name,
    /// The public half as published.
    pub dnskey: DNSKEY,
    /// RFC 4034 Appendix B key tag.
    pub tag: u16,
    /// Its algorithm.
    pub algorithm: KeyAlgorithm,
    /// The private half.
    pub signer: Arc<dyn SigningKey>,
    /// The `.private` file it came from (for messages).
    pub private_path: PathBuf,
}

impl std::fmt::Debug for KeyPairFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyPairFiles")
            .field("zone", &self.zone)
            .field("tag", &self.tag)
            .field("algorithm", &self.algorithm)
            .field("flags", &self.dnskey.flags())
            .finish_non_exhaustive()
    }
}

impl KeyPairFiles {
    /// Whether the SEP flag is set: a KSK, or a CSK.
    pub fn is_ksk(&self) -> bool {
        self.dnskey.flags() & 1 != 0
    }
}

/// `path` without a `.key`/`.private` ending: the key's base name.
pub fn base_path(path: &Path) -> PathBuf {
    let text = path.to_string_lossy();
    let base = text
        .strip_suffix(".key")
        .or_else(|| text.strip_suffix(".private"))
        .unwrap_or(&text);
    PathBuf::from(base)
}

fn with_suffix(base: &Path, suffix: &str) -> PathBuf {
    let mut s = base.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// The `.key` file of the key whose base name is `base`.
pub fn key_path(base: &Path) -> PathBuf {
    with_suffix(base, ".key")
}

/// The `.private` file of the key whose base name is `base`.
pub fn private_path(base: &Path) -> PathBuf {
    with_suffix(base, ".private")
}

/// Reads the DNSKEY record of a `.key` file: comment lines start with
/// `;`; the record is `OWNER [TTL] [IN] DNSKEY FLAGS 3 ALG BASE64...`.
pub fn parse_key_file(text: &str) -> Result<(Name, DNSKEY), String> {
    let mut found = None;
    for line in text.lines() {
        let line = line.split(';').next().unwrap_or_default().trim();
        if line.is_empty() {
            continue;
        }
        if found.is_some() {
            return Err("more than one record (a .key file holds one DNSKEY)".into());
        }
        let tokens: Vec<&str> = line.split_whitespace().collect();
        let at = tokens
            .iter()
            .position(|t| t.eq_ignore_ascii_case("DNSKEY"))
            .ok_or("no DNSKEY record")?;
        let owner = tokens.first().filter(|_| at > 0).ok_or("no owner name")?;
        let owner = Name::from_ascii(owner)
            .map_err(|e| format!("bad owner name {owner:?}: {e}"))?
            .to_lowercase();
        if !owner.is_fqdn() {
            return Err(format!("owner {owner} must end with a dot"));
        }
        let rest = &tokens[at + 1..];
        let (Some(flags), Some(protocol), Some(alg)) = (rest.first(), rest.get(1), rest.get(2))
        else {
            return Err("DNSKEY needs FLAGS PROTOCOL ALGORITHM KEY".into());
        };
        let flags: u16 = flags.parse().map_err(|_| format!("bad flags {flags:?}"))?;
        if flags != FLAGS_KSK && flags != FLAGS_ZSK {
            return Err(format!(
                "flags {flags}: Meridian uses 257 (KSK or CSK) or 256 (ZSK) keys"
            ));
        }
        if *protocol != "3" {
            return Err(format!("protocol {protocol} (must be 3)"));
        }
        let alg = alg
            .parse::<u8>()
            .ok()
            .and_then(KeyAlgorithm::from_number)
            .ok_or_else(|| {
                format!("algorithm {alg}: Meridian signs with 13 (ECDSAP256SHA256) or 15 (ED25519)")
            })?;
        let key = BASE64
            .decode(rest[3..].concat().as_bytes())
            .map_err(|e| format!("public key is not base64: {e}"))?;
        let want = match alg {
            KeyAlgorithm::EcdsaP256Sha256 => 64,
            KeyAlgorithm::Ed25519 => 32,
        };
        if key.len() != want {
            return Err(format!(
                "public key is {} bytes, {} keys have {want}",
                key.len(),
                alg.mnemonic()
            ));
        }
        found = Some((
            owner,
            DNSKEY::with_flags(flags, PublicKeyBuf::new(key, alg.hickory())),
        ));
    }
    found.ok_or_else(|| "no DNSKEY record".into())
}

/// Reads a `.private` file (`Private-key-format: v1.2` or `v1.3`):
/// the algorithm number and the private key bytes.
pub fn parse_private_file(text: &str) -> Result<(u8, Vec<u8>), String> {
    let mut format = None;
    let mut alg = None;
    let mut key = None;
    for line in text.lines() {
        let Some((field, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        match field.trim() {
            "Private-key-format" => format = Some(value.to_string()),
            "Algorithm" => {
                let n = value.split_whitespace().next().unwrap_or_default();
                alg = Some(
                    n.parse::<u8>()
                        .map_err(|_| format!("bad Algorithm {value:?}"))?,
                );
            }
            "PrivateKey" => {
                key = Some(
                    BASE64
                        .decode(value.as_bytes())
                        .map_err(|e| format!("PrivateKey is not base64: {e}"))?,
                );
            }
            _ => {}
        }
    }
    match format.as_deref() {
        Some("v1.2" | "v1.3") => {}
        Some(other) => {
            return Err(format!(
                "Private-key-format {other} (v1.2 or v1.3 expected)"
            ));
        }
        None => return Err("no Private-key-format line (not a BIND private key file)".into()),
    }
    let alg = alg.ok_or("no Algorithm line")?;
    let key = key.ok_or("no PrivateKey line")?;
    Ok((alg, key))
}

/// The signing key from a private key and the public key it must match.
fn signing_key(
    alg: KeyAlgorithm,
    private: &[u8],
    public: &[u8],
) -> Result<Arc<dyn SigningKey>, String> {
    match alg {
        KeyAlgorithm::EcdsaP256Sha256 => {
            // ring wants the public point uncompressed: 0x04 || X || Y.
            let mut point = Vec::with_capacity(65);
            point.push(4);
            point.extend_from_slice(public);
            let pair = EcdsaKeyPair::from_private_key_and_public_key(
                &ECDSA_P256_SHA256_FIXED_SIGNING,
                private,
                &point,
                &SystemRandom::new(),
            )
            .map_err(|e| format!("the private key does not match the public key ({e})"))?;
            Ok(Arc::new(EcdsaSigningKey::from_ecdsa(
                pair,
                Algorithm::ECDSAP256SHA256,
            )))
        }
        KeyAlgorithm::Ed25519 => {
            let pair = Ed25519KeyPair::from_seed_and_public_key(private, public)
                .map_err(|e| format!("the private key does not match the public key ({e})"))?;
            Ok(Arc::new(Ed25519SigningKey::from_ed25519(pair)))
        }
    }
}

/// Loads the key whose base name (or `.key`/`.private` file) is `path`.
/// Refuses a private file that its group or others may read or write.
pub fn load(path: &Path) -> Result<KeyPairFiles, String> {
    let base = base_path(path);
    let (kp, pp) = (key_path(&base), private_path(&base));
    let key_text =
        std::fs::read_to_string(&kp).map_err(|e| format!("cannot read {}: {e}", kp.display()))?;
    let (zone, dnskey) = parse_key_file(&key_text).map_err(|e| format!("{}: {e}", kp.display()))?;
    let meta = std::fs::metadata(&pp).map_err(|e| format!("cannot read {}: {e}", pp.display()))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(format!(
            "{}: private key file has mode {mode:03o}; it must be readable by its owner only \
             (chmod 600 {})",
            pp.display(),
            pp.display()
        ));
    }
    let private_text =
        std::fs::read_to_string(&pp).map_err(|e| format!("cannot read {}: {e}", pp.display()))?;
    let (alg_number, private) =
        parse_private_file(&private_text).map_err(|e| format!("{}: {e}", pp.display()))?;
    let algorithm = KeyAlgorithm::from_number(u8::from(Verifier::algorithm(&dnskey)))
        .ok_or_else(|| format!("{}: unsupported algorithm", kp.display()))?;
    if alg_number != algorithm.number() {
        return Err(format!(
            "{}: algorithm {alg_number}, but {} says {}",
            pp.display(),
            kp.display(),
            algorithm.number()
        ));
    }
    let public = dnskey.public_key().public_bytes().to_vec();
    let signer =
        signing_key(algorithm, &private, &public).map_err(|e| format!("{}: {e}", pp.display()))?;
    let tag = dnskey
        .calculate_key_tag()
        .map_err(|e| format!("{}: cannot compute the key tag: {e}", kp.display()))?;
    Ok(KeyPairFiles {
        zone,
        dnskey,
        tag,
        algorithm,
        signer,
        private_path: pp,
    })
}

/// A new key pair: the public key (DNSKEY) and the private key bytes as
/// the `.private` file stores them (P-256 scalar, or Ed25519 seed).
pub fn generate(alg: KeyAlgorithm, flags: u16) -> Result<(DNSKEY, Vec<u8>), String> {
    let rng = SystemRandom::new();
    let (public, private) = match alg {
        KeyAlgorithm::EcdsaP256Sha256 => {
            let doc = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
                .map_err(|_| "cannot generate a P-256 key")?;
            let pair =
                EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, doc.as_ref(), &rng)
                    .map_err(|e| format!("cannot read the generated key: {e}"))?;
            let point = pair.public_key().as_ref();
            let public = point.get(1..).unwrap_or_default().to_vec();
            let private = p256_scalar(doc.as_ref()).ok_or("cannot read the generated key")?;
            (public, private)
        }
        KeyAlgorithm::Ed25519 => {
            let mut seed = [0u8; 32];
            ring::rand::SecureRandom::fill(&rng, &mut seed)
                .map_err(|_| "cannot read the system random generator")?;
            let pair = Ed25519KeyPair::from_seed_unchecked(&seed)
                .map_err(|e| format!("cannot make an Ed25519 key: {e}"))?;
            (pair.public_key().as_ref().to_vec(), seed.to_vec())
        }
    };
    // Both halves load back, and match, before anything is written.
    signing_key(alg, &private, &public)?;
    Ok((
        DNSKEY::with_flags(flags, PublicKeyBuf::new(public, alg.hickory())),
        private,
    ))
}

/// The 32-byte private scalar inside ring's P-256 PKCS#8 document: the
/// ECPrivateKey's `privateKey OCTET STRING` (RFC 5915), after its
/// `version INTEGER 1`.
fn p256_scalar(pkcs8: &[u8]) -> Option<Vec<u8>> {
    const MARK: [u8; 5] = [0x02, 0x01, 0x01, 0x04, 0x20];
    let at = pkcs8.windows(MARK.len()).position(|w| w == MARK)? + MARK.len();
    pkcs8.get(at..at + 32).map(<[u8]>::to_vec)
}

/// The key's file base name, as BIND names it: `K<zone>+<alg>+<tag>`.
pub fn file_base(zone: &Name, alg: KeyAlgorithm, tag: u16) -> String {
    format!("K{}+{:03}+{:05}", zone.to_ascii(), alg.number(), tag)
}

/// The DNSKEY record in zone-file text.
pub fn dnskey_text(zone: &Name, dnskey: &DNSKEY) -> String {
    format!(
        "{} IN DNSKEY {} 3 {} {}",
        zone.to_ascii(),
        dnskey.flags(),
        u8::from(Verifier::algorithm(dnskey)),
        BASE64.encode(dnskey.public_key().public_bytes())
    )
}

/// The `.private` file's text.
pub fn private_text(alg: KeyAlgorithm, private: &[u8], created: &str) -> String {
    format!(
        "Private-key-format: v1.3\nAlgorithm: {} ({})\nPrivateKey: {}\nCreated: {created}\nPublish: {created}\nActivate: {created}\n",
        alg.number(),
        alg.mnemonic(),
        BASE64.encode(private)
    )
}

/// Writes `text` to a new file `path` with mode `mode`; never replaces an
/// existing file (O_EXCL).
pub fn write_new(path: &Path, text: &str, mode: u32) -> Result<(), String> {
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
    f.write_all(text.as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// The DS record of `dnskey` at `zone` with `digest` (2: SHA-256, 4:
/// SHA-384), in zone-file text.
pub fn ds_text(zone: &Name, dnskey: &DNSKEY, digest: u8) -> Result<String, String> {
    let dt = match digest {
        2 => DigestType::SHA256,
        4 => DigestType::SHA384,
        other => return Err(format!("digest type {other} (2 or 4)")),
    };
    let d = dnskey
        .to_digest(zone, dt)
        .map_err(|e| format!("cannot digest the key: {e}"))?;
    let tag = dnskey
        .calculate_key_tag()
        .map_err(|e| format!("cannot compute the key tag: {e}"))?;
    let ds = DS::new(tag, Verifier::algorithm(dnskey), dt, d.as_ref().to_vec());
    Ok(format!(
        "{} IN DS {} {} {} {}",
        zone.to_ascii(),
        ds.key_tag(),
        u8::from(ds.algorithm()),
        digest,
        data_encoding::HEXUPPER.encode(ds.digest())
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_load_back_for_both_algorithms() {
        let dir = tempfile::tempdir().unwrap();
        let zone = Name::from_ascii("example.com.").unwrap();
        for alg in [KeyAlgorithm::EcdsaP256Sha256, KeyAlgorithm::Ed25519] {
            let (dnskey, private) = generate(alg, FLAGS_KSK).unwrap();
            let tag = dnskey.calculate_key_tag().unwrap();
            let base = dir.path().join(file_base(&zone, alg, tag));
            write_new(
                &key_path(&base),
                &(dnskey_text(&zone, &dnskey) + "\n"),
                0o644,
            )
            .unwrap();
            write_new(
                &private_path(&base),
                &private_text(alg, &private, "20260101000000"),
                0o600,
            )
            .unwrap();
            let k = load(&base).unwrap();
            assert_eq!((k.tag, k.algorithm, k.is_ksk()), (tag, alg, true));
            assert_eq!(k.zone, zone);
            // A second write is refused.
            assert!(write_new(&private_path(&base), "x", 0o600).is_err());
        }
    }

    #[test]
    fn readable_private_files_and_mismatched_halves_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let zone = Name::from_ascii("example.com.").unwrap();
        let alg = KeyAlgorithm::EcdsaP256Sha256;
        let (dnskey, private) = generate(alg, FLAGS_ZSK).unwrap();
        let (_, other) = generate(alg, FLAGS_ZSK).unwrap();
        let base = dir.path().join("Kexample.com.+013+00001");
        write_new(&key_path(&base), &dnskey_text(&zone, &dnskey), 0o644).unwrap();
        write_new(&private_path(&base), &private_text(alg, &other, "x"), 0o640).unwrap();
        let e = load(&base).unwrap_err();
        assert!(e.contains("mode 640") && e.contains(".private"), "{e}");
        std::fs::set_permissions(private_path(&base), std::fs::Permissions::from_mode(0o600))
            .unwrap();
        let e = load(&base).unwrap_err();
        assert!(e.contains("does not match"), "{e}");
        let _ = private;
    }

    /// A key made by BIND 9.18's `dnssec-keygen -a ECDSAP256SHA256`
    /// (example from the BIND test suite format) parses.
    #[test]
    fn bind_private_file_format_parses() {
        let text = "Private-key-format: v1.3\nAlgorithm: 13 (ECDSAP256SHA256)\nPrivateKey: AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\nCreated: 20240101000000\n";
        let (alg, key) = parse_private_file(text).unwrap();
        assert_eq!((alg, key.len()), (13, 32));
    }
}
