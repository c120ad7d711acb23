//! `meridian dnssec keygen` and `meridian dnssec ds`: the work behind the
//! commands (main.rs only parses arguments and prints).

use std::path::Path;

use hickory_proto::rr::Name;

use super::keys::{self, FLAGS_KSK, FLAGS_ZSK, KeyAlgorithm};

/// What `keygen` makes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// One key for everything (flags 257): the default.
    Csk,
    /// Key-signing key (flags 257): signs the DNSKEY RRset.
    Ksk,
    /// Zone-signing key (flags 256): signs the rest.
    Zsk,
}

impl Role {
    /// The role named `text` (`csk`, `ksk`, `zsk`).
    pub fn parse(text: &str) -> Option<Self> {
        match text.to_ascii_lowercase().as_str() {
            "csk" => Some(Self::Csk),
            "ksk" => Some(Self::Ksk),
            "zsk" => Some(Self::Zsk),
            _ => None,
        }
    }
}

/// `YYYYMMDDHHMMSS` (UTC) of `secs` since the epoch, as BIND's key
/// files write times.
fn timestamp(secs: u64) -> String {
    let date: String = crate::geo::iso_date(secs).split('-').collect();
    let rem = secs % 86_400;
    format!(
        "{date}{:02}{:02}{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Makes a key pair for `zone` in `dir`; returns what to print: the files
/// written, the key tag and the `[dnssec]` lines to paste.
pub fn keygen(zone: &str, alg: KeyAlgorithm, role: Role, dir: &Path) -> Result<String, String> {
    let zone = Name::from_ascii(zone.trim())
        .map_err(|e| format!("bad zone name {zone:?}: {e}"))?
        .to_lowercase();
    let mut zone = zone;
    zone.set_fqdn(true);
    let flags = if role == Role::Zsk {
        FLAGS_ZSK
    } else {
        FLAGS_KSK
    };
    let (dnskey, private) = keys::generate(alg, flags)?;
    let tag = dnskey
        .calculate_key_tag()
        .map_err(|e| format!("cannot compute the key tag: {e}"))?;
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let base_name = keys::file_base(&zone, alg, tag);
    let base = dir.join(&base_name);
    let (kp, pp) = (keys::key_path(&base), keys::private_path(&base));
    if kp.exists() || pp.exists() {
        return Err(format!(
            "{} or {} exists; not overwriting a key",
            kp.display(),
            pp.display()
        ));
    }
    let created = timestamp(super::sign::unix_now());
    let kind = match role {
        Role::Csk => "combined signing key (CSK)",
        Role::Ksk => "key-signing key (KSK)",
        Role::Zsk => "zone-signing key (ZSK)",
    };
    let public = format!(
        "; This is a {kind}, keyid {tag}, for {zone}\n; Created: {created}\n{}\n",
        keys::dnskey_text(&zone, &dnskey)
    );
    // The private file first, with O_EXCL and mode 0600: if it cannot be
    // made, nothing is left behind.
    keys::write_new(&pp, &keys::private_text(alg, &private, &created), 0o600)?;
    if let Err(e) = keys::write_new(&kp, &public, 0o644) {
        let _ = std::fs::remove_file(&pp);
        return Err(e);
    }
    Ok(format!(
        "wrote {} and {} (mode 0600)\nkey tag {tag}, algorithm {} ({}), flags {flags}, {kind}\n\n\
         # in the zone file; `file` is relative to the zone file's directory\n\
         # (a zone in zones/ with --dir zones/keys: \"keys/{base_name}\"):\n\
         [dnssec]\nkeys = [{{ file = \"{}\", state = \"active\" }}]\n",
        kp.display(),
        pp.display(),
        alg.number(),
        alg.mnemonic(),
        base.display(),
    ))
}

/// The DS records of the zone `zone`'s published KSKs and CSKs in the
/// config `config`, one per key and digest type.
pub fn ds(zone: &str, config: &Path, digests: &[u8]) -> Result<String, String> {
    let mut name = Name::from_ascii(zone.trim())
        .map_err(|e| format!("bad zone name {zone:?}: {e}"))?
        .to_lowercase();
    name.set_fqdn(true);
    let cfg = crate::config::load(config).map_err(|e| e.to_string())?;
    let z = cfg
        .zones
        .iter()
        .find(|z| z.origin == name)
        .ok_or_else(|| format!("{}: no zone {name}", config.display()))?;
    let dnssec = z
        .dnssec
        .as_ref()
        .ok_or_else(|| format!("{}: zone {name} has no [dnssec] table", z.source))?;
    let mut out = String::new();
    for k in dnssec
        .keys
        .iter()
        .filter(|k| k.pair.is_ksk() && k.state.published())
    {
        for &d in digests {
            out.push_str(&keys::ds_text(&name, &k.pair.dnskey, d)?);
            out.push('\n');
        }
    }
    if out.is_empty() {
        return Err(format!(
            "{}: zone {name} publishes no KSK or CSK (flags 257)",
            z.source
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn timestamps_are_bind_style() {
        assert_eq!(super::timestamp(0), "19700101000000");
        assert_eq!(super::timestamp(1_709_251_199), "20240229235959");
    }
}
