//! A zone's `[dnssec]` table: its keys and signature timing.
//!
//! ```toml
//! [dnssec]
//! keys = [{ file = "keys/Kgslb.example.com.+013+12345", state = "active" }]
//! signature_validity = "14d"
//! ```
//!
//! Key files are read here, at load and at every reload (a rollover is a
//! config change and a reload), so a zone whose keys are wrong is refused
//! as a whole, with the file, key and reason.

use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use super::ConfigError;
use super::probe::duration;
use super::validate::check_range;
use crate::dns::records::DomainName;
use crate::dnssec::keys::{self, KeyAlgorithm};
use crate::dnssec::{DnssecConfig, KeyState, ZoneKey};

/// Default `signature_validity`: 14 days.
pub const DEFAULT_SIGNATURE_VALIDITY: Duration = Duration::from_secs(14 * 86_400);
/// Default `refresh_margin`: 5 days.
pub const DEFAULT_REFRESH_MARGIN: Duration = Duration::from_secs(5 * 86_400);
/// Default `jitter`: 12 hours.
pub const DEFAULT_JITTER: Duration = Duration::from_secs(12 * 3600);
/// Default `inception_offset`: 1 hour.
pub const DEFAULT_INCEPTION_OFFSET: Duration = Duration::from_secs(3600);
/// Default `dnskey_ttl`, seconds.
pub const DEFAULT_DNSKEY_TTL: u32 = 3600;
/// Default `online_signing_rate`: signatures per second made on demand.
pub const DEFAULT_ONLINE_SIGNING_RATE: u32 = 2000;

/// `[dnssec]` in a zone file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDnssec {
    #[serde(default)]
    pub(super) keys: Vec<RawKey>,
    pub(super) signature_validity: Option<String>,
    pub(super) refresh_margin: Option<String>,
    pub(super) jitter: Option<String>,
    pub(super) inception_offset: Option<String>,
    pub(super) dnskey_ttl: Option<i64>,
    pub(super) online_signing_rate: Option<i64>,
}

/// One entry of `keys`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawKey {
    pub(super) file: String,
    pub(super) state: Option<String>,
}

/// Checks `[dnssec]` and loads its keys; `file` is the zone file (key
/// paths are relative to its directory).
pub(super) fn validate(
    file: &Path,
    origin: &DomainName,
    raw: &RawDnssec,
) -> Result<DnssecConfig, ConfigError> {
    let day = Duration::from_secs(86_400);
    let validity = duration(
        file,
        "dnssec.signature_validity".into(),
        raw.signature_validity.as_deref(),
        DEFAULT_SIGNATURE_VALIDITY,
        Duration::from_secs(3600),
        365 * day,
    )?;
    let refresh_margin = duration(
        file,
        "dnssec.refresh_margin".into(),
        raw.refresh_margin.as_deref(),
        DEFAULT_REFRESH_MARGIN.min(validity / 2),
        Duration::from_secs(60),
        364 * day,
    )?;
    if refresh_margin >= validity {
        return Err(ConfigError::new(
            file,
            "dnssec.refresh_margin",
            format!(
                "{refresh_margin:?} must be shorter than signature_validity ({validity:?}): \
                 signatures would be re-made at once"
            ),
        ));
    }
    let jitter = duration(
        file,
        "dnssec.jitter".into(),
        raw.jitter.as_deref(),
        DEFAULT_JITTER.min((validity - refresh_margin) / 2),
        Duration::ZERO,
        30 * day,
    )?;
    if jitter + refresh_margin >= validity {
        return Err(ConfigError::new(
            file,
            "dnssec.jitter",
            format!(
                "jitter ({jitter:?}) plus refresh_margin ({refresh_margin:?}) must be shorter \
                 than signature_validity ({validity:?})"
            ),
        ));
    }
    let inception_offset = duration(
        file,
        "dnssec.inception_offset".into(),
        raw.inception_offset.as_deref(),
        DEFAULT_INCEPTION_OFFSET,
        Duration::ZERO,
        day,
    )?;
    let dnskey_ttl = int(
        file,
        "dnssec.dnskey_ttl",
        raw.dnskey_ttl,
        DEFAULT_DNSKEY_TTL,
        0,
        86_400,
    )?;
    let online_signing_rate = int(
        file,
        "dnssec.online_signing_rate",
        raw.online_signing_rate,
        DEFAULT_ONLINE_SIGNING_RATE,
        1,
        1_000_000,
    )?;

    if raw.keys.is_empty() {
        return Err(ConfigError::new(
            file,
            "dnssec.keys",
            "a signed zone needs at least one key (make one with `meridian dnssec keygen`)",
        ));
    }
    let dir = file.parent().unwrap_or(Path::new("."));
    let mut loaded: Vec<ZoneKey> = Vec::with_capacity(raw.keys.len());
    for (i, k) in raw.keys.iter().enumerate() {
        let key = format!("dnssec.keys[{i}]");
        let state = match k.state.as_deref().unwrap_or("active") {
            "active" => KeyState::Active,
            "published" => KeyState::Published,
            "signing" => KeyState::Signing,
            other => {
                return Err(ConfigError::new(
                    file,
                    format!("{key}.state"),
                    format!("{other:?} is not \"active\", \"published\" or \"signing\""),
                ));
            }
        };
        if k.file.trim().is_empty() {
            return Err(ConfigError::new(file, format!("{key}.file"), "empty path"));
        }
        let path = dir.join(k.file.trim());
        let pair =
            keys::load(&path).map_err(|e| ConfigError::new(file, format!("{key}.file"), e))?;
        if pair.zone != *origin {
            return Err(ConfigError::new(
                file,
                format!("{key}.file"),
                format!(
                    "key {} is for zone {}, not {origin}",
                    keys::key_path(&keys::base_path(&path)).display(),
                    pair.zone
                ),
            ));
        }
        if let Some(j) = loaded
            .iter()
            .position(|o| o.pair.tag == pair.tag && o.pair.algorithm == pair.algorithm)
        {
            return Err(ConfigError::new(
                file,
                format!("{key}.file"),
                format!(
                    "key tag {} (algorithm {}) is listed twice (also dnssec.keys[{j}])",
                    pair.tag,
                    pair.algorithm.number()
                ),
            ));
        }
        loaded.push(ZoneKey { pair, state });
    }
    check_roles(file, &loaded)?;
    Ok(DnssecConfig {
        keys: loaded,
        signature_validity: validity,
        refresh_margin,
        jitter,
        inception_offset,
        dnskey_ttl,
        online_signing_rate,
        clock: crate::dnssec::Clock::System,
    })
}

/// Per algorithm that signs or is published: a key that signs the DNSKEY
/// RRset (257, active or signing) and a key that signs the zone (a ZSK,
/// or a 257 key acting as CSK). RFC 4035 §2.2: "There MUST be an RRSIG
/// for each RRset using at least one DNSKEY of each algorithm in the zone
/// apex DNSKEY RRset."
fn check_roles(file: &Path, keys: &[ZoneKey]) -> Result<(), ConfigError> {
    let mut algorithms: Vec<KeyAlgorithm> = keys.iter().map(|k| k.pair.algorithm).collect();
    algorithms.sort_by_key(|a| a.number());
    algorithms.dedup();
    if !keys.iter().any(|k| k.state.published()) {
        return Err(ConfigError::new(
            file,
            "dnssec.keys",
            "no key is published (state \"active\" or \"published\"): the DNSKEY RRset would be empty",
        ));
    }
    for alg in algorithms {
        let of = || keys.iter().filter(move |k| k.pair.algorithm == alg);
        let ksk = of().any(|k| k.state.signs() && k.pair.is_ksk());
        let zone = of().any(|k| k.state.signs());
        if !ksk || !zone {
            let missing = if ksk {
                "a key that signs the zone"
            } else {
                "a KSK or CSK (flags 257) that signs the DNSKEY RRset"
            };
            return Err(ConfigError::new(
                file,
                "dnssec.keys",
                format!(
                    "algorithm {} ({}) has no active or signing {missing}; RFC 4035 §2.2 wants \
                     every algorithm of the DNSKEY RRset to sign every RRset: add one, or \
                     remove the algorithm's other keys",
                    alg.number(),
                    alg.mnemonic()
                ),
            ));
        }
    }
    Ok(())
}

fn int(
    file: &Path,
    key: &str,
    value: Option<i64>,
    default: u32,
    min: u32,
    max: u32,
) -> Result<u32, ConfigError> {
    let Some(v) = value else { return Ok(default) };
    // In range, so the cast is lossless.
    check_range(file, key, v, i64::from(min), i64::from(max)).map(|v| v as u32)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    /// Integer keys out of range (negative, too large) are refused with
    /// the key and the range, before any key file is read.
    #[test]
    fn integers_out_of_range_name_the_key_and_range() {
        let zone = "origin = \"t.example.\"\nns = [\"ns1.t.example.\"]\n\
                    [soa]\nrname = \"hostmaster.t.example.\"\nserial = 1\n\
                    [records]\nns1 = [{ type = \"A\", value = \"192.0.2.53\" }]\n[dnssec]\n";
        let cases = [
            (
                "dnskey_ttl = -1",
                "dnssec.dnskey_ttl",
                "-1 is out of range (0 to 86400)",
            ),
            (
                "dnskey_ttl = 4294967296",
                "dnssec.dnskey_ttl",
                "4294967296 is out of range (0 to 86400)",
            ),
            (
                "online_signing_rate = 0",
                "dnssec.online_signing_rate",
                "0 is out of range (1 to 1000000)",
            ),
        ];
        for (line, key, reason) in cases {
            let text = format!("{zone}{line}\n");
            let e = super::super::parse_zone(Path::new("zones/t.toml"), &text).expect_err(line);
            assert_eq!((e.key.as_str(), e.reason.as_str()), (key, reason), "{line}");
        }
    }
}
