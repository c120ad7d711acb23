//! `meridian geoip update`: replace the GeoIP database a config uses with
//! a newer one, safely.
//!
//! 1. Get the file: the operator's (`--file`, `.mmdb` or `.mmdb.gz`), or
//!    DB-IP's monthly lite database ([`dbip_url`]).
//! 2. Verify it ([`verify`]): it opens as a MaxMind DB, has at least
//!    [`MIN_NETWORKS`] networks, at least [`MIN_PLACED_PERCENT`] % of them
//!    with a country Meridian can read, a build date between 2015 and
//!    tomorrow, and (unless forced) not older than the installed one.
//! 3. Install it atomically ([`install`]): a temporary file in the target's
//!    directory, synced, renamed over the target, directory synced. A
//!    running server that reads the target meanwhile sees the old file or
//!    the new one, never a part.
//!
//! The target is the config's `geoip` path; without one, `geoip.mmdb`
//! beside the config (the operator then sets `geoip`). Reloading is the
//! caller's (`main.rs`): POST /reload on the admin API, or SIGHUP.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use crate::config::ServerConfig;
use crate::geo::{GeoDb, countries, iso_date};

/// Fewest networks a database must have: a real one has over a million;
/// a truncated download or the wrong file has far fewer.
pub const MIN_NETWORKS: u64 = 10_000;

/// Least share of networks, in percent, whose record names a country
/// Meridian can read (`country_code`, `country.iso_code` or
/// `registered_country.iso_code`).
pub const MIN_PLACED_PERCENT: f64 = 90.0;

/// Largest decompressed database accepted (DB-IP's city lite is about
/// 130 MB): a bound for a hostile or corrupt `.gz`.
pub const MAX_BYTES: u64 = 1 << 30;

/// 2015-01-01T00:00:00Z: no usable database is older.
const OLDEST_BUILD: u64 = 1_420_070_400;

/// The file name used beside the config when `geoip` is not set.
pub const DEFAULT_FILE_NAME: &str = "geoip.mmdb";

/// DB-IP's free monthly database of `edition` (`country` or `city`) for
/// `month` (`YYYY-MM`), CC BY 4.0 ("IP Geolocation by DB-IP").
pub fn dbip_url(edition: &str, month: &str) -> String {
    format!("https://download.db-ip.com/free/dbip-{edition}-lite-{month}.mmdb.gz")
}

/// `YYYY-MM` of a Unix time.
pub fn month_of(epoch: u64) -> String {
    iso_date(epoch)[..7].to_string()
}

/// Where the database goes: the config's `geoip`, else
/// [`DEFAULT_FILE_NAME`] beside the config. The flag says whether the
/// config already points there.
pub fn target(server: &ServerConfig) -> (PathBuf, bool) {
    match &server.geoip {
        Some(p) => (p.clone(), true),
        None => {
            let dir = server.path.parent().unwrap_or(Path::new("."));
            (dir.join(DEFAULT_FILE_NAME), false)
        }
    }
}

/// The bytes of a database, gunzipped when they start with the gzip magic
/// number; at most [`MAX_BYTES`].
pub fn decompress(bytes: Vec<u8>) -> Result<Vec<u8>, String> {
    if !bytes.starts_with(&[0x1f, 0x8b]) {
        return Ok(bytes);
    }
    let mut out = Vec::new();
    flate2::read::MultiGzDecoder::new(&bytes[..])
        .take(MAX_BYTES + 1)
        .read_to_end(&mut out)
        .map_err(|e| format!("not a valid gzip file: {e}"))?;
    if out.len() as u64 > MAX_BYTES {
        return Err(format!("larger than {MAX_BYTES} bytes once decompressed"));
    }
    Ok(out)
}

/// What [`verify`] found.
#[derive(Clone, Debug, PartialEq)]
pub struct Summary {
    /// `database_type` metadata.
    pub database_type: String,
    /// Build time, Unix seconds.
    pub build_epoch: u64,
    /// IPv4 and IPv6 networks.
    pub networks: (u64, u64),
    /// Percentage of the networks placed in a country.
    pub placed_percent: f64,
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "type {}, built {}, {} IPv4 and {} IPv6 networks, {:.1} % with a country",
            self.database_type,
            iso_date(self.build_epoch),
            self.networks.0,
            self.networks.1,
            self.placed_percent
        )
    }
}

/// Checks a database (`name` names it in errors) as the module docs say;
/// `now` is the current Unix time, `installed` the build time of the
/// database it would replace (None: none, or `--force`).
pub fn verify(
    name: &Path,
    bytes: Vec<u8>,
    now: u64,
    installed: Option<u64>,
) -> Result<Summary, String> {
    let db =
        GeoDb::from_file_bytes(name, bytes, countries::builtin()).map_err(|e| e.to_string())?;
    let build = db.build_epoch();
    if build < OLDEST_BUILD || build > now + 86_400 {
        return Err(format!(
            "{}: build date {} is not plausible (2015 to tomorrow)",
            name.display(),
            iso_date(build)
        ));
    }
    if let Some(old) = installed
        && build < old
    {
        return Err(format!(
            "{}: built {}, older than the installed database (built {}); --force installs it anyway",
            name.display(),
            iso_date(build),
            iso_date(old)
        ));
    }
    let mut networks = (0u64, 0u64);
    let mut placed = 0u64;
    // Records are shared by many networks: decode each once.
    let mut seen: std::collections::HashMap<usize, bool> = std::collections::HashMap::new();
    for v6 in [false, true] {
        db.for_each_network(v6, |_, key, decode| {
            if v6 {
                networks.1 += 1;
            } else {
                networks.0 += 1;
            }
            if *seen
                .entry(key)
                .or_insert_with(|| decode().is_some_and(|l| l.country.is_some()))
            {
                placed += 1;
            }
        });
    }
    let total = networks.0 + networks.1;
    if total < MIN_NETWORKS {
        return Err(format!(
            "{}: only {total} networks (at least {MIN_NETWORKS} expected): truncated, or not a GeoIP database",
            name.display()
        ));
    }
    let placed_percent = 100.0 * placed as f64 / total as f64;
    if placed_percent < MIN_PLACED_PERCENT {
        return Err(format!(
            "{}: only {placed_percent:.1} % of the networks have a country Meridian reads \
             (country_code or country.iso_code; at least {MIN_PLACED_PERCENT} % expected)",
            name.display()
        ));
    }
    Ok(Summary {
        database_type: db.database_type().to_string(),
        build_epoch: build,
        networks,
        placed_percent,
    })
}

/// The build time of the database at `path`, if one is there and opens.
pub fn installed_build(path: &Path) -> Option<u64> {
    let bytes = std::fs::read(path).ok()?;
    GeoDb::from_file_bytes(path, bytes, Default::default())
        .ok()
        .map(|db| db.build_epoch())
}

/// Writes `bytes` to `target` atomically: a temporary file in the same
/// directory (so the rename cannot cross file systems), synced, given the
/// old file's permissions (else 0644: the server's user must read it),
/// renamed over `target`, and the directory synced.
pub fn install(target: &Path, bytes: &[u8]) -> Result<(), String> {
    let dir = match target.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let err = |what: &str, e: std::io::Error| format!("{}: {what}: {e}", target.display());
    let mode = std::fs::metadata(target)
        .map(|m| m.permissions())
        .unwrap_or_else(|_| std::os::unix::fs::PermissionsExt::from_mode(0o644));
    let mut tmp = tempfile::Builder::new()
        .prefix(".geoip-update-")
        .tempfile_in(dir)
        .map_err(|e| err("cannot create a temporary file beside it", e))?;
    tmp.write_all(bytes)
        .and_then(|()| tmp.as_file().set_permissions(mode))
        .and_then(|()| tmp.as_file().sync_all())
        .map_err(|e| err("cannot write the temporary file", e))?;
    tmp.persist(target)
        .map_err(|e| err("cannot rename the temporary file over it", e.error))?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Refuses targets inside the source tree the binary was built from, so
/// an update run from a checkout never replaces the shipped database.
pub fn check_not_source_tree(target: &Path) -> Result<(), String> {
    let source = Path::new(env!("CARGO_MANIFEST_DIR"));
    let (Ok(source), Some(Ok(dir))) = (
        source.canonicalize(),
        target.parent().map(|d| {
            if d.as_os_str().is_empty() {
                Path::new(".").canonicalize()
            } else {
                d.canonicalize()
            }
        }),
    ) else {
        return Ok(());
    };
    if dir.starts_with(&source) {
        return Err(format!(
            "{}: inside the source tree ({}); copy the config elsewhere (meridian init DIR) \
             and update that",
            target.display(),
            source.display()
        ));
    }
    Ok(())
}

/// Downloads DB-IP's `edition` database of the first of `months` that
/// exists (a 404 tries the next); returns its URL and bytes.
pub async fn download(edition: &str, months: &[String]) -> Result<(String, Vec<u8>), String> {
    crate::health::probe::install_crypto_provider();
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(600))
        .connect_timeout(std::time::Duration::from_secs(30))
        .user_agent(concat!("meridian/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| format!("HTTP client: {e}"))?;
    let mut last = String::new();
    for month in months {
        let url = dbip_url(edition, month);
        let mut resp = client
            .get(&url)
            .send()
            .await
            .map_err(|e| format!("{url}: {e}"))?;
        if resp.status() == reqwest::StatusCode::NOT_FOUND {
            last = format!("{url}: 404 Not Found");
            continue;
        }
        if !resp.status().is_success() {
            return Err(format!("{url}: HTTP {}", resp.status()));
        }
        let mut bytes = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(|e| format!("{url}: {e}"))? {
            bytes.extend_from_slice(&chunk);
            if bytes.len() as u64 > MAX_BYTES {
                return Err(format!("{url}: larger than expected; stopped"));
            }
        }
        return Ok((url, bytes));
    }
    Err(last)
}

/// Asks the server to reload: `POST /reload` on its admin API, with the
/// token when one is set; a wildcard listen address is reached on
/// loopback. Returns the response body.
pub async fn post_reload(admin: &crate::config::AdminConfig) -> Result<String, String> {
    let mut addr = admin.listen;
    if addr.port() == 0 {
        return Err(format!("[admin] listen {addr} has no fixed port to reach"));
    }
    if addr.ip().is_unspecified() {
        addr.set_ip(if addr.is_ipv4() {
            std::net::Ipv4Addr::LOCALHOST.into()
        } else {
            std::net::Ipv6Addr::LOCALHOST.into()
        });
    }
    crate::health::probe::install_crypto_provider();
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(120))
        .no_proxy()
        .build()
        .map_err(|e| format!("HTTP client: {e}"))?;
    let mut req = client.post(format!("http://{addr}/reload"));
    if let Some(token) = &admin.token {
        req = req.bearer_auth(token);
    }
    let resp = req
        .send()
        .await
        .map_err(|e| format!("POST http://{addr}/reload: {e}"))?;
    let status = resp.status();
    let body = resp.text().await.unwrap_or_default();
    if status.is_success() {
        Ok(body.trim().to_string())
    } else {
        Err(format!(
            "POST http://{addr}/reload: HTTP {status}: {}",
            body.trim()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_months() {
        assert_eq!(
            dbip_url("country", "2026-11"),
            "https://download.db-ip.com/free/dbip-country-lite-2026-11.mmdb.gz"
        );
        assert_eq!(month_of(1_780_345_978), "2026-06");
    }

    #[test]
    fn gzip_is_unpacked_and_plain_bytes_pass() {
        let plain = b"not compressed".to_vec();
        assert_eq!(decompress(plain.clone()).unwrap(), plain);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(b"hello").unwrap();
        assert_eq!(decompress(gz.finish().unwrap()).unwrap(), b"hello");
        assert!(decompress(vec![0x1f, 0x8b, 8, 0, 1, 2]).is_err());
    }

    #[test]
    fn the_shipped_database_verifies_and_an_older_one_is_refused() {
        let bytes = crate::geo::EMBEDDED_DB.to_vec();
        let now = 1_800_000_000;
        let s = verify(Path::new("x.mmdb"), bytes.clone(), now, None).unwrap();
        assert_eq!(s.build_epoch, 1_780_345_978);
        assert!(s.networks.0 > 500_000 && s.networks.1 > 500_000, "{s}");
        assert!(s.placed_percent > 99.0, "{s}");
        let e = verify(Path::new("x.mmdb"), bytes.clone(), now, Some(1_790_000_000)).unwrap_err();
        assert!(e.contains("older than the installed database"), "{e}");
        let e = verify(Path::new("x.mmdb"), bytes, 1_700_000_000, None).unwrap_err();
        assert!(e.contains("not plausible"), "{e}");
    }

    #[test]
    fn refuses_the_source_tree() {
        let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("geoip/dbip-country.mmdb");
        assert!(check_not_source_tree(&shipped).is_err());
        let dir = tempfile::tempdir().unwrap();
        assert!(check_not_source_tree(&dir.path().join("g.mmdb")).is_ok());
    }
}
