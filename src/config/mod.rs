//! Loading and validating configuration.
//!
//! `meridian.toml` holds server settings; each `*.toml` file in the zones
//! directory holds one zone. Both are parsed into the serde mirror in `raw`,
//! then checked and converted into the domain types of [`crate::model`]:
//! names are resolved to indices, unknown keys are rejected, and every error
//! names the file, the key path and the reason.
//!
//! A zone may also name an RFC 1035 master file (`records_file`, relative
//! to the zone file) whose records join `[records]`; `zonefile` reads it
//! entry by entry so that errors name the file and line, and `records`
//! checks all static records through one owner index.
//!
//! This module opens files but never sockets or GeoIP databases.

pub mod cluster;
pub mod dnssec;
pub mod latency;
pub mod policy;
pub mod probe;
mod protocol;
mod raw;
mod records;
mod rum;
mod validate;
mod zonefile;

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
use serde::de::DeserializeOwned;

pub use cluster::{ClusterConfig, Quorum};
pub use latency::{Coarse, LatencyConfig};
pub(crate) use validate::{key_part, parse_network};

pub use self::rum::{
    AllowedOrigins, DEFAULT_RUM_BEACONS_PER_MINUTE, DEFAULT_RUM_LISTEN,
    DEFAULT_RUM_MAX_CONNECTIONS, DEFAULT_RUM_MAX_MEASUREMENTS, MAX_RUM_BEACONS_PER_MINUTE,
    MAX_RUM_MAX_CONNECTIONS, MAX_RUM_MAX_MEASUREMENTS, RumConfig,
};
use crate::model::ZoneConfig;

/// Default listen addresses: loopback on an unprivileged port that does not
/// collide with mDNS (5353).
pub const DEFAULT_LISTEN: [&str; 2] = ["127.0.0.1:5300", "[::1]:5300"];
/// Default zones directory, relative to the config file.
pub const DEFAULT_ZONES_DIR: &str = "zones";
/// Largest UDP response we send by default (DNS Flag Day 2020).
pub const DEFAULT_MAX_UDP_PAYLOAD: u16 = 1232;
/// Most UDP serving threads per listen address.
pub const MAX_THREADS: u32 = 256;
/// Idle time after which a TCP connection is closed.
pub const DEFAULT_TCP_IDLE_TIMEOUT_SECS: u64 = 10;
/// Concurrent TCP connections accepted per listen address.
pub const DEFAULT_TCP_MAX_CONNECTIONS: u32 = 1024;
/// Concurrent TCP connections per client address (IPv6: per /64) and
/// listen address. A resolver needs a handful; 32 leaves room for a farm
/// behind one address, while one client can hold at most 1/32 of the
/// default 1,024 slots.
pub const DEFAULT_TCP_MAX_CONNECTIONS_PER_CLIENT: u32 = 32;
/// Idle timeout, in seconds, while a listener has more than 3/4 of its
/// TCP slots taken (RFC 7766 §6.2.3). Capped by `tcp_idle_timeout`.
pub const DEFAULT_TCP_BUSY_IDLE_TIMEOUT_SECS: u64 = 2;
/// Default TTL of static records.
pub const DEFAULT_RECORD_TTL: u32 = 3600;
/// Default TTL of service answers.
pub const DEFAULT_SERVICE_TTL: u32 = 30;
/// Largest TTL accepted anywhere (RFC 2181 §8: 2^31 - 1).
pub const MAX_TTL: u32 = 2_147_483_647;

/// A configuration problem: which file, which key, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file at fault.
    pub file: PathBuf,
    /// Dotted key path inside the file (empty for whole-file problems).
    pub key: String,
    /// What is wrong, and where possible what would be right.
    pub reason: String,
}

impl ConfigError {
    pub(crate) fn new(file: &Path, key: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            file: file.to_path_buf(),
            key: key.into(),
            reason: reason.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            write!(f, "{}: {}", self.file.display(), self.reason)
        } else {
            write!(f, "{}: {}: {}", self.file.display(), self.key, self.reason)
        }
    }
}

impl std::error::Error for ConfigError {}

/// Validated server settings from `meridian.toml`.
#[derive(Clone, Debug, PartialEq)]
pub struct ServerConfig {
    /// The file these settings came from.
    pub path: PathBuf,
    /// UDP and TCP listen addresses.
    pub listen: Vec<SocketAddr>,
    /// Directory of zone files.
    pub zones_dir: PathBuf,
    /// GeoIP database (MaxMind DB format); `None` (the `geoip` key not
    /// set) uses the DB-IP country database compiled into the binary
    /// ([`crate::geo::EMBEDDED_DB`]).
    pub geoip: Option<PathBuf>,
    /// Country coordinate table; `None` uses the built-in one.
    pub countries: Option<PathBuf>,
    /// Largest UDP response, bytes (512 to 4096).
    pub max_udp_payload: u16,
    /// UDP serving threads (and sockets) per listen address.
    pub threads: usize,
    /// TCP idle timeout.
    pub tcp_idle_timeout: Duration,
    /// Concurrent TCP connections per listen address.
    pub tcp_max_connections: u32,
    /// Concurrent TCP connections per client address (IPv6: per /64), per
    /// listen address.
    pub tcp_max_connections_per_client: u32,
    /// TCP idle timeout while more than 3/4 of a listener's slots are
    /// taken; at most `tcp_idle_timeout`.
    pub tcp_busy_idle_timeout: Duration,
    /// Where operator overrides (drain, force-up) persist.
    pub state_file: PathBuf,
    /// Run the first round of probes before answering.
    pub wait_for_probes: bool,
    /// Most probes in flight at once.
    pub max_probes_in_flight: u32,
    /// Admin HTTP API; `None` when disabled.
    pub admin: Option<AdminConfig>,
    /// Name server identifier returned to queries that ask (RFC 5001).
    pub nsid: Option<Vec<u8>>,
    /// DNS cookies (RFC 7873, RFC 9018); `None` when disabled.
    pub cookies: Option<crate::dns::cookie::Cookies>,
    /// Response rate limiting on UDP (`[rrl]`).
    pub rrl: RrlConfig,
    /// Latency estimates (`[latency]`).
    pub latency: LatencyConfig,
    /// The RUM beacon listener (`[rum]`).
    pub rum: RumConfig,
    /// The format of the process's own log lines (`log_format`).
    pub log_format: LogFormat,
    /// The query log (`[query_log]`); `None` when off (the default).
    pub query_log: Option<QueryLogConfig>,
    /// Shared overrides and quorum health through etcd (`[cluster]`);
    /// `None` (the default) runs alone, with `state_file`.
    pub cluster: Option<ClusterConfig>,
}

/// The format of log lines on standard error (`log_format`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines (the default).
    #[default]
    Text,
    /// One JSON object per line (tracing-subscriber's JSON format).
    Json,
}

/// The query log (`[query_log]`): JSON lines, one per logged query.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueryLogConfig {
    /// The file records are appended to.
    pub path: PathBuf,
    /// Log one query in `sample` (per serving thread); 1 logs every one.
    pub sample: u32,
    /// Records waiting for the writer; when it is full, records are
    /// dropped (and counted), never waited for.
    pub queue: usize,
}

/// Default of `[query_log] sample`: every query.
pub const DEFAULT_QUERY_LOG_SAMPLE: u32 = 1;
/// Most of `[query_log] sample`.
pub const MAX_QUERY_LOG_SAMPLE: u32 = 1_000_000;
/// Default of `[query_log] queue`, records.
pub const DEFAULT_QUERY_LOG_QUEUE: usize = 65_536;
/// Most of `[query_log] queue`, records.
pub const MAX_QUERY_LOG_QUEUE: usize = 16_777_216;

/// Response rate limiting (`[rrl]`), as BIND, Knot and NSD do it: each
/// client prefix gets a budget of responses per second per kind of
/// response; beyond it, responses are dropped, and every `slip`-th dropped
/// one is sent truncated instead. See README, "Response rate limiting".
#[derive(Clone, Debug, PartialEq)]
pub struct RrlConfig {
    /// Limit at all.
    pub enabled: bool,
    /// Answers (NOERROR with records, and NODATA) per second per client
    /// prefix and question; 0 = no limit.
    pub responses_per_second: u32,
    /// NXDOMAIN responses per second per client prefix; 0 = no limit.
    pub nxdomains_per_second: u32,
    /// Referrals per second per client prefix; 0 = no limit.
    pub referrals_per_second: u32,
    /// Error responses (FORMERR, SERVFAIL, REFUSED, NOTIMP, ...) per
    /// second per client prefix; 0 = no limit.
    pub errors_per_second: u32,
    /// Seconds of history: a client that went over its limit is answered
    /// again after at most this long without queries.
    pub window: u32,
    /// Every `slip`-th dropped response is sent truncated; 0 = never.
    pub slip: u8,
    /// Clients are grouped by IPv4 prefixes of this length.
    pub ipv4_prefix_length: u8,
    /// Clients are grouped by IPv6 prefixes of this length.
    pub ipv6_prefix_length: u8,
    /// Client networks that are never limited.
    pub exempt: Vec<IpNet>,
    /// Entries in the shared table (a power of two; 8 bytes each).
    pub table_size: u32,
}

/// `[rrl] enabled`: on, because an authoritative server on the internet
/// is otherwise an amplifier for spoofed queries.
pub const DEFAULT_RRL_ENABLED: bool = true;
/// `[rrl] responses_per_second`.
pub const DEFAULT_RRL_RESPONSES_PER_SECOND: u32 = 20;
/// `[rrl] nxdomains_per_second`.
pub const DEFAULT_RRL_NXDOMAINS_PER_SECOND: u32 = 10;
/// `[rrl] referrals_per_second`.
pub const DEFAULT_RRL_REFERRALS_PER_SECOND: u32 = 20;
/// `[rrl] errors_per_second`.
pub const DEFAULT_RRL_ERRORS_PER_SECOND: u32 = 10;
/// `[rrl] window`, seconds (BIND's default).
pub const DEFAULT_RRL_WINDOW: u32 = 15;
/// `[rrl] slip` (BIND's default).
pub const DEFAULT_RRL_SLIP: u8 = 2;
/// `[rrl] ipv4_prefix_length`.
pub const DEFAULT_RRL_IPV4_PREFIX_LENGTH: u8 = 24;
/// `[rrl] ipv6_prefix_length`.
pub const DEFAULT_RRL_IPV6_PREFIX_LENGTH: u8 = 56;
/// `[rrl] table_size`: 2 MiB.
pub const DEFAULT_RRL_TABLE_SIZE: u32 = 1 << 18;
/// Highest `[rrl] *_per_second`.
pub const MAX_RRL_RATE: u32 = 1_000_000;
/// Highest `[rrl] table_size` (128 MiB).
pub const MAX_RRL_TABLE_SIZE: u32 = 1 << 24;

impl Default for RrlConfig {
    fn default() -> Self {
        Self {
            enabled: DEFAULT_RRL_ENABLED,
            responses_per_second: DEFAULT_RRL_RESPONSES_PER_SECOND,
            nxdomains_per_second: DEFAULT_RRL_NXDOMAINS_PER_SECOND,
            referrals_per_second: DEFAULT_RRL_REFERRALS_PER_SECOND,
            errors_per_second: DEFAULT_RRL_ERRORS_PER_SECOND,
            window: DEFAULT_RRL_WINDOW,
            slip: DEFAULT_RRL_SLIP,
            ipv4_prefix_length: DEFAULT_RRL_IPV4_PREFIX_LENGTH,
            ipv6_prefix_length: DEFAULT_RRL_IPV6_PREFIX_LENGTH,
            exempt: Vec::new(),
            table_size: DEFAULT_RRL_TABLE_SIZE,
        }
    }
}

/// Admin HTTP API settings.
#[derive(Clone, Debug, PartialEq)]
pub struct AdminConfig {
    /// Listen address.
    pub listen: SocketAddr,
    /// Bearer token required on every request except `GET /health`.
    pub token: Option<String>,
    /// Connections served at once (`max_connections`); more are closed
    /// on accept, so an idle crowd cannot use up file descriptors.
    pub max_connections: u32,
    /// How long a client may take to send a request's head: from connect
    /// for the first request, from its first byte for later ones.
    pub header_timeout: Duration,
    /// How long a kept-alive connection may sit between requests.
    pub idle_timeout: Duration,
    /// How long one request may take once its head is in: reading the
    /// body and answering.
    pub request_timeout: Duration,
}

/// Default admin API address: loopback only.
pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:5380";
/// Default `[admin] max_connections`.
pub const DEFAULT_ADMIN_MAX_CONNECTIONS: u32 = 64;
/// Largest `[admin] max_connections`.
pub const MAX_ADMIN_CONNECTIONS: u32 = 4096;
/// Default `[admin] header_timeout`.
pub const DEFAULT_ADMIN_HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// Default `[admin] idle_timeout`.
pub const DEFAULT_ADMIN_IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Default `[admin] request_timeout`.
pub const DEFAULT_ADMIN_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Shortest admin timeout accepted (any of the three).
pub const MIN_ADMIN_TIMEOUT: Duration = Duration::from_millis(10);
/// Longest `[admin] header_timeout` and `request_timeout`.
pub const MAX_ADMIN_REQUEST_TIMEOUT: Duration = Duration::from_secs(300);
/// Longest `[admin] idle_timeout`.
pub const MAX_ADMIN_IDLE_TIMEOUT: Duration = Duration::from_secs(3600);
/// Default state file, relative to the config file.
pub const DEFAULT_STATE_FILE: &str = "meridian-state.json";
/// Default bound on probes in flight.
pub const DEFAULT_MAX_PROBES_IN_FLIGHT: u32 = 256;

/// Everything the server needs from disk, validated.
#[derive(Clone, Debug)]
pub struct Config {
    /// Server settings.
    pub server: ServerConfig,
    /// Zones, sorted by origin.
    pub zones: Vec<ZoneConfig>,
}

/// Parses TOML into `T`, turning errors into a [`ConfigError`] with the key
/// path and line.
pub(crate) fn parse_toml<T: DeserializeOwned>(file: &Path, text: &str) -> Result<T, ConfigError> {
    let line_of = |span: Option<std::ops::Range<usize>>| {
        span.map(|s| {
            let line = text[..s.start.min(text.len())].matches('\n').count() + 1;
            format!(" (line {line})")
        })
        .unwrap_or_default()
    };
    let de = toml::Deserializer::parse(text)
        .map_err(|e| ConfigError::new(file, "", format!("{}{}", e.message(), line_of(e.span()))))?;
    serde_path_to_error::deserialize(de).map_err(|e| {
        let key = key_path(e.path());
        let inner = e.into_inner();
        ConfigError::new(
            file,
            key,
            format!("{}{}", inner.message(), line_of(inner.span())),
        )
    })
}

/// Renders a serde path the way TOML writes keys: `records."@"[0].ttl`.
fn key_path(path: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    let mut out = String::new();
    for seg in path.iter() {
        match seg {
            Segment::Seq { index } => out.push_str(&format!("[{index}]")),
            Segment::Map { key } => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(&validate::key_part(key));
            }
            Segment::Enum { variant } => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(variant);
            }
            Segment::Unknown => {}
        }
    }
    out
}

/// A hash of a file's contents, to tell whether it changed.
pub fn fingerprint(bytes: &[u8]) -> u64 {
    use std::hash::{DefaultHasher, Hasher};
    let mut h = DefaultHasher::new();
    h.write(bytes);
    h.finish()
}

/// Reads a config file, naming it in the error.
pub fn read_file(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path)
        .map_err(|e| ConfigError::new(path, "", format!("cannot read: {e}")))
}

/// Loads and validates `meridian.toml` alone. Relative paths in it are
/// resolved against the file's directory.
pub fn load_server(path: &Path) -> Result<ServerConfig, ConfigError> {
    let text = read_file(path)?;
    let raw: raw::RawServer = parse_toml(path, &text)?;
    validate::validate_server(path, raw)
}

/// Loads the server config and every zone file.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let server = load_server(path)?;
    let zones = load_zones(&server.zones_dir)?;
    Ok(Config { server, zones })
}

/// Loads every `*.toml` file in `dir` as a zone; origins must be unique.
pub fn load_zones(dir: &Path) -> Result<Vec<ZoneConfig>, ConfigError> {
    let mut zones: Vec<ZoneConfig> = Vec::new();
    for file in zone_files(dir)? {
        let zone = load_zone(&file)?;
        check_unique_origin(&file, &zone, &zones)?;
        zones.push(zone);
    }
    zones.sort_by(|a, b| a.origin.cmp(&b.origin));
    Ok(zones)
}

/// The zone files of `dir` (every `*.toml` file), sorted; an error if
/// there is none.
pub fn zone_files(dir: &Path) -> Result<Vec<PathBuf>, ConfigError> {
    let entries = std::fs::read_dir(dir)
        .map_err(|e| ConfigError::new(dir, "", format!("cannot read zones directory: {e}")))?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml") && p.is_file())
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(ConfigError::new(
            dir,
            "",
            "no zone files (*.toml) in the zones directory",
        ));
    }
    Ok(files)
}

/// `zone`, from `file`, must not have the origin of one of `others`.
pub fn check_unique_origin(
    file: &Path,
    zone: &ZoneConfig,
    others: &[ZoneConfig],
) -> Result<(), ConfigError> {
    match others.iter().find(|z| z.origin == zone.origin) {
        Some(other) => Err(ConfigError::new(
            file,
            "origin",
            format!(
                "zone {} is already defined in {}",
                zone.origin, other.source
            ),
        )),
        None => Ok(()),
    }
}

/// Loads one zone file.
pub fn load_zone(file: &Path) -> Result<ZoneConfig, ConfigError> {
    let text = read_file(file)?;
    parse_zone(file, &text)
}

/// Parses and validates zone text; `file` is used in messages only.
pub fn parse_zone(file: &Path, text: &str) -> Result<ZoneConfig, ConfigError> {
    let raw: raw::RawZone = parse_toml(file, text)?;
    validate::validate_zone(file, raw)
}

/// Parses server-config text; `file` locates relative paths and names errors.
pub fn parse_server(file: &Path, text: &str) -> Result<ServerConfig, ConfigError> {
    let raw: raw::RawServer = parse_toml(file, text)?;
    validate::validate_server(file, raw)
}

#[cfg(test)]
mod tests;
