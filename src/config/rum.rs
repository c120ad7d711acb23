//! `[rum]`: the real-user measurement (RUM) beacon listener, off by
//! default. Browsers on the internet call it, so every limit is checked
//! here and the listener trusts nothing it does not have to.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;

use ipnet::IpNet;
use serde::Deserialize;

use super::validate::{check_range, network_list};
use super::{AdminConfig, ConfigError};

/// `[rum] listen`: loopback, next to the admin API's 5380. Put a reverse
/// proxy in front (and list it in `trusted_proxies`), or listen publicly.
pub const DEFAULT_RUM_LISTEN: &str = "127.0.0.1:5381";
/// `[rum] beacons_per_minute`, per client network.
pub const DEFAULT_RUM_BEACONS_PER_MINUTE: u32 = 30;
/// Highest `[rum] beacons_per_minute`.
pub const MAX_RUM_BEACONS_PER_MINUTE: u32 = 10_000;
/// `[rum] max_measurements`, per beacon.
pub const DEFAULT_RUM_MAX_MEASUREMENTS: u16 = 32;
/// Highest `[rum] max_measurements`.
pub const MAX_RUM_MAX_MEASUREMENTS: u16 = 256;
/// `[rum] max_connections`.
pub const DEFAULT_RUM_MAX_CONNECTIONS: u32 = 256;
/// Highest `[rum] max_connections`.
pub const MAX_RUM_MAX_CONNECTIONS: u32 = 65_535;
/// Longest datacenter name in `[rum.objects]`, bytes.
const MAX_NAME: usize = 255;

/// `[rum]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRum {
    enabled: Option<bool>,
    listen: Option<String>,
    trusted_proxies: Option<Vec<String>>,
    allowed_origins: Option<Vec<String>>,
    beacons_per_minute: Option<i64>,
    max_measurements: Option<i64>,
    max_connections: Option<i64>,
    objects: Option<BTreeMap<String, String>>,
}

/// Which web pages may send beacons (`[rum] allowed_origins`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AllowedOrigins {
    /// `["*"]`: any page.
    Any,
    /// Only these origins, each as browsers send it in `Origin`
    /// (`https://www.example.com`, lower case, default port left out).
    Only(Vec<String>),
}

impl AllowedOrigins {
    /// Whether a request with this `Origin` header may send beacons.
    pub fn allows(&self, origin: &str) -> bool {
        match self {
            Self::Any => true,
            Self::Only(list) => list.iter().any(|o| o == origin),
        }
    }
}

/// Validated `[rum]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RumConfig {
    /// Run the beacon listener at all.
    pub enabled: bool,
    /// Its address.
    pub listen: SocketAddr,
    /// Peers whose `X-Forwarded-For` is believed (reverse proxies, load
    /// balancers); a bare address in the file is a one-address network.
    pub trusted_proxies: Vec<IpNet>,
    /// `Access-Control-Allow-Origin`, and which `Origin`s may post.
    pub allowed_origins: AllowedOrigins,
    /// Beacons per minute per client network (the `[latency]` fine key);
    /// a burst of this many is allowed.
    pub beacons_per_minute: u32,
    /// Measurements in one beacon.
    pub max_measurements: u16,
    /// Connections served at once; more are answered 503 and closed.
    pub max_connections: u32,
    /// Datacenter name -> absolute http(s) URL of a small object the
    /// snippet times, sorted by name.
    pub objects: BTreeMap<String, String>,
}

impl Default for RumConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            listen: SocketAddr::from(([127, 0, 0, 1], 5381)),
            trusted_proxies: Vec::new(),
            allowed_origins: AllowedOrigins::Any,
            beacons_per_minute: DEFAULT_RUM_BEACONS_PER_MINUTE,
            max_measurements: DEFAULT_RUM_MAX_MEASUREMENTS,
            max_connections: DEFAULT_RUM_MAX_CONNECTIONS,
            objects: BTreeMap::new(),
        }
    }
}

/// Checks `[rum]`. Its keys are checked even while it is off, so that
/// turning it on never reveals old mistakes. `listen` and `admin` are the
/// DNS and admin addresses, which `rum.listen` must not take.
pub(super) fn validate_rum(
    file: &Path,
    raw: Option<RawRum>,
    dns_listen: &[SocketAddr],
    admin: Option<&AdminConfig>,
) -> Result<RumConfig, ConfigError> {
    let raw = raw.unwrap_or_default();
    let d = RumConfig::default();
    let int = |key: &str, value: Option<i64>, default: u32, max: u32| {
        let v = check_range(
            file,
            &format!("rum.{key}"),
            value.unwrap_or(i64::from(default)),
            1,
            i64::from(max),
        )?;
        Ok::<u32, ConfigError>(u32::try_from(v).unwrap_or(max))
    };
    let listen = match raw.listen.as_deref() {
        None => d.listen,
        Some(text) => text.parse().map_err(|_| {
            ConfigError::new(
                file,
                "rum.listen",
                format!("{text:?} is not ADDRESS:PORT (IPv6 as [::]:5381)"),
            )
        })?,
    };
    // Port 0 asks the kernel for a free port: it never collides.
    if listen.port() != 0
        && (dns_listen.contains(&listen) || admin.is_some_and(|a| a.listen == listen))
    {
        return Err(ConfigError::new(
            file,
            "rum.listen",
            format!(
                "{listen} is already the DNS or admin address; give the beacon listener its own port"
            ),
        ));
    }
    let trusted_proxies = network_list(
        file,
        "rum.trusted_proxies",
        raw.trusted_proxies.unwrap_or_default(),
    )?;
    let allowed_origins = origins(file, raw.allowed_origins)?;
    let beacons_per_minute = int(
        "beacons_per_minute",
        raw.beacons_per_minute,
        d.beacons_per_minute,
        MAX_RUM_BEACONS_PER_MINUTE,
    )?;
    let max_measurements = int(
        "max_measurements",
        raw.max_measurements,
        d.max_measurements.into(),
        MAX_RUM_MAX_MEASUREMENTS.into(),
    )?;
    // In range (at most 256), so it fits.
    let max_measurements = u16::try_from(max_measurements).unwrap_or(MAX_RUM_MAX_MEASUREMENTS);
    let max_connections = int(
        "max_connections",
        raw.max_connections,
        d.max_connections,
        MAX_RUM_MAX_CONNECTIONS,
    )?;
    let objects = raw.objects.unwrap_or_default();
    for (name, url) in &objects {
        let key = format!("rum.objects.{}", super::validate::key_part(name));
        object(file, &key, name, url)?;
    }
    let enabled = raw.enabled.unwrap_or(false);
    if enabled && objects.is_empty() {
        return Err(ConfigError::new(
            file,
            "rum.objects",
            "name at least one datacenter's object, such as \"eu-west\" = \"https://eu-west.example.com/meridian-rum.gif\"; without one the snippet measures nothing",
        ));
    }
    if objects.len() > usize::from(max_measurements) {
        return Err(ConfigError::new(
            file,
            "rum.objects",
            format!(
                "{} objects, but a beacon may carry only max_measurements = {max_measurements}: every beacon would be refused",
                objects.len()
            ),
        ));
    }
    Ok(RumConfig {
        enabled,
        listen,
        trusted_proxies,
        allowed_origins,
        beacons_per_minute,
        max_measurements,
        max_connections,
        objects,
    })
}

/// `allowed_origins`: `["*"]` alone, or origins in the form browsers send.
fn origins(file: &Path, raw: Option<Vec<String>>) -> Result<AllowedOrigins, ConfigError> {
    let Some(list) = raw else {
        return Ok(AllowedOrigins::Any);
    };
    if list.is_empty() {
        return Err(ConfigError::new(
            file,
            "rum.allowed_origins",
            "empty: list the sites that embed the snippet, or [\"*\"] for any",
        ));
    }
    if list.iter().any(|o| o == "*") {
        if list.len() > 1 {
            return Err(ConfigError::new(
                file,
                "rum.allowed_origins",
                "\"*\" allows every site: write it alone",
            ));
        }
        return Ok(AllowedOrigins::Any);
    }
    let mut out: Vec<String> = Vec::with_capacity(list.len());
    for (i, text) in list.iter().enumerate() {
        let key = format!("rum.allowed_origins[{i}]");
        let bad = || {
            ConfigError::new(
                file,
                key.clone(),
                format!(
                    "{text:?} is not an origin such as \"https://www.example.com\" (scheme, host, optional port; no path)"
                ),
            )
        };
        let url = reqwest::Url::parse(text).map_err(|_| bad())?;
        let origin = url.origin().ascii_serialization();
        let bare = url.path() == "/" && url.query().is_none() && url.fragment().is_none();
        if !matches!(url.scheme(), "http" | "https") || !bare || url.host().is_none() {
            return Err(bad());
        }
        if origin != text.trim_end_matches('/') {
            // Browsers send the canonical form; a mismatch would never match.
            return Err(ConfigError::new(
                file,
                key,
                format!("browsers send this origin as {origin:?}: write that"),
            ));
        }
        if out.contains(&origin) {
            return Err(ConfigError::new(file, key, "listed twice"));
        }
        out.push(origin);
    }
    Ok(AllowedOrigins::Only(out))
}

/// One `[rum.objects]` entry: a plausible datacenter name and an absolute
/// http(s) URL without a fragment (the snippet appends a query).
fn object(file: &Path, key: &str, name: &str, url: &str) -> Result<(), ConfigError> {
    if name.is_empty() || name.len() > MAX_NAME || name.chars().any(char::is_control) {
        return Err(ConfigError::new(
            file,
            key,
            format!("a datacenter name of 1 to {MAX_NAME} printable characters"),
        ));
    }
    let parsed = reqwest::Url::parse(url).ok().filter(|u| {
        matches!(u.scheme(), "http" | "https") && u.host().is_some() && u.fragment().is_none()
    });
    if parsed.is_none() || url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(ConfigError::new(
            file,
            key,
            format!(
                "{url:?} is not an absolute http(s) URL such as \"https://eu-west.example.com/meridian-rum.gif\""
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::parse_server;

    fn rum(text: &str) -> Result<RumConfig, ConfigError> {
        parse_server(Path::new("m.toml"), &format!("[rum]\n{text}")).map(|s| s.rum)
    }

    fn err(text: &str) -> ConfigError {
        rum(text).unwrap_err()
    }

    #[test]
    fn off_by_default_with_documented_defaults() {
        let s = parse_server(Path::new("m.toml"), "").unwrap();
        assert_eq!(s.rum, RumConfig::default());
        assert!(!s.rum.enabled);
        assert_eq!(s.rum.listen, DEFAULT_RUM_LISTEN.parse().unwrap());
        assert_eq!(s.rum.allowed_origins, AllowedOrigins::Any);
        assert_eq!(s.rum.beacons_per_minute, 30);
        assert_eq!(s.rum.max_measurements, 32);
        assert_eq!(s.rum.max_connections, 256);
    }

    #[test]
    fn a_full_section_loads() {
        let r = rum(r#"enabled = true
listen = "[::]:8081"
trusted_proxies = ["10.0.0.0/8", "192.0.2.7", "2001:db8::/32"]
allowed_origins = ["https://www.example.com", "http://localhost:8080"]
beacons_per_minute = 10000
max_measurements = 3
max_connections = 65535
[rum.objects]
"eu-west" = "https://eu-west.example.com/meridian-rum.gif"
"us-east" = "http://192.0.2.1:8080/o.gif?x=1"
"#)
        .unwrap();
        assert!(r.enabled);
        assert_eq!(r.trusted_proxies[1], "192.0.2.7/32".parse().unwrap());
        assert!(r.allowed_origins.allows("https://www.example.com"));
        assert!(!r.allowed_origins.allows("https://evil.example.com"));
        assert_eq!(r.objects.len(), 2);
    }

    #[test]
    fn every_key_names_itself_when_wrong() {
        let cases = [
            ("listen = \"localhost\"", "rum.listen", "ADDRESS:PORT"),
            ("listen = \"127.0.0.1:5380\"", "rum.listen", "own port"),
            (
                "trusted_proxies = [\"10.0.0.1/8\"]",
                "rum.trusted_proxies[0]",
                "host bits",
            ),
            (
                "trusted_proxies = [\"10.0.0.0/8\", \"10.0.0.0/8\"]",
                "rum.trusted_proxies[1]",
                "twice",
            ),
            ("allowed_origins = []", "rum.allowed_origins", "empty"),
            (
                "allowed_origins = [\"*\", \"https://a.example\"]",
                "rum.allowed_origins",
                "alone",
            ),
            (
                "allowed_origins = [\"https://a.example/page\"]",
                "rum.allowed_origins[0]",
                "no path",
            ),
            (
                "allowed_origins = [\"https://A.example:443\"]",
                "rum.allowed_origins[0]",
                "\"https://a.example\"",
            ),
            (
                "allowed_origins = [\"ftp://a.example\"]",
                "rum.allowed_origins[0]",
                "not an origin",
            ),
            (
                "beacons_per_minute = 0",
                "rum.beacons_per_minute",
                "1 to 10000",
            ),
            ("max_measurements = 257", "rum.max_measurements", "1 to 256"),
            ("max_connections = 0", "rum.max_connections", "1 to 65535"),
            ("enabled = true", "rum.objects", "at least one"),
            (
                "[rum.objects]\neu = \"eu.example.com/x.gif\"",
                "rum.objects.eu",
                "absolute http(s) URL",
            ),
            (
                "[rum.objects]\n\"\" = \"https://eu.example.com/x.gif\"",
                "rum.objects.\"\"",
                "datacenter name",
            ),
            (
                "max_measurements = 1\n[rum.objects]\na = \"https://a.example/o\"\nb = \"https://b.example/o\"",
                "rum.objects",
                "max_measurements = 1",
            ),
            ("bogus = 1", "rum.bogus", "unknown field"),
        ];
        for (text, key, reason) in cases {
            let e = err(text);
            assert_eq!(e.key, key, "{text}: {e}");
            assert!(e.reason.contains(reason), "{text}: {e}");
        }
    }
}
