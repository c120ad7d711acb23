//! `[latency]` in `meridian.toml`: how latency estimates are gathered,
//! kept and compared. See README, "Routing by latency".

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::ConfigError;
use super::probe::duration;
use super::validate::check_range;

/// `[latency]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLatency {
    publish_interval: Option<String>,
    min_samples: Option<i64>,
    half_life: Option<String>,
    ipv4_prefix_length: Option<i64>,
    ipv6_prefix_length: Option<i64>,
    coarse: Option<String>,
    coarse_ipv4_prefix_length: Option<i64>,
    coarse_ipv6_prefix_length: Option<i64>,
    asn_database: Option<String>,
    map: Option<String>,
    margin_ms: Option<f64>,
    margin_percent: Option<f64>,
    fibre_km_per_ms: Option<f64>,
    path_stretch: Option<f64>,
    base_rtt_ms: Option<f64>,
    max_rtt_ms: Option<f64>,
    max_keys: Option<i64>,
    state_file: Option<String>,
    save_interval: Option<String>,
    congestion_factor: Option<f64>,
    congestion_penalty_ms: Option<f64>,
}

/// The coarser RUM level's key.
#[derive(Clone, Debug, PartialEq)]
pub enum Coarse {
    /// The client's network at these prefix lengths (IPv4, IPv6).
    Prefix(u8, u8),
    /// The client's autonomous system, from this MMDB.
    Asn(PathBuf),
}

/// Validated `[latency]`.
#[derive(Clone, Debug, PartialEq)]
pub struct LatencyConfig {
    /// How often RUM aggregates and probe RTTs reach the query path.
    pub publish_interval: Duration,
    /// Decayed sample weight a level needs for a datacenter.
    pub min_samples: u16,
    /// Half-life of a RUM sample's weight.
    pub half_life: Duration,
    /// Prefix lengths of the finest RUM level (IPv4, IPv6).
    pub fine: (u8, u8),
    /// The coarser RUM level.
    pub coarse: Coarse,
    /// The static latency map file, if any.
    pub map: Option<PathBuf>,
    /// Hysteresis: a datacenter replaces the one a client network is
    /// assigned only when better by more than this many milliseconds...
    pub margin_ms: f64,
    /// ... and by more than this percentage of the assigned one's RTT.
    pub margin_percent: f64,
    /// Distance model: kilometres of fibre light covers per millisecond.
    pub fibre_km_per_ms: f64,
    /// Distance model: fibre path length over great-circle distance.
    pub path_stretch: f64,
    /// Distance model: fixed RTT added to every estimate (last mile,
    /// processing), milliseconds.
    pub base_rtt_ms: f64,
    /// RTTs above this are rejected as impossible, milliseconds.
    pub max_rtt_ms: f64,
    /// Aggregated client networks kept, over both levels.
    pub max_keys: usize,
    /// Where the aggregates persist (`None`: nowhere).
    pub state_file: Option<PathBuf>,
    /// How often they are saved (and at shutdown).
    pub save_interval: Duration,
    /// A datacenter whose probe RTT exceeds this many times its baseline
    /// is congested.
    pub congestion_factor: f64,
    /// Added to a congested datacenter's estimate, milliseconds.
    pub congestion_penalty_ms: f64,
}

impl Default for LatencyConfig {
    fn default() -> Self {
        Self {
            publish_interval: Duration::from_secs(10),
            min_samples: 5,
            half_life: Duration::from_secs(3600),
            fine: (24, 48),
            coarse: Coarse::Prefix(16, 32),
            map: None,
            margin_ms: 10.0,
            margin_percent: 10.0,
            fibre_km_per_ms: 200.0,
            path_stretch: 1.3,
            base_rtt_ms: 5.0,
            max_rtt_ms: 5000.0,
            max_keys: 1_000_000,
            state_file: Some(PathBuf::from(DEFAULT_LATENCY_STATE_FILE)),
            save_interval: Duration::from_secs(60),
            congestion_factor: 2.0,
            congestion_penalty_ms: 50.0,
        }
    }
}

/// `[latency] state_file`, relative to the config file.
pub const DEFAULT_LATENCY_STATE_FILE: &str = "meridian-latency.bin";

/// Largest RTT a table can hold (0.1 ms units in a `u16`), rounded down.
pub const MAX_RTT_MS: f64 = 6000.0;

/// Checks `[latency]`; paths are taken relative to `base`.
pub(super) fn validate_latency(
    file: &Path,
    base: &Path,
    raw: RawLatency,
) -> Result<LatencyConfig, ConfigError> {
    let d = LatencyConfig::default();
    let key = |k: &str| format!("latency.{k}");
    let int = |k: &str, v: Option<i64>, default: i64, min: i64, max: i64| {
        check_range(file, &key(k), v.unwrap_or(default), min, max)
    };
    let num = |k: &str, v: Option<f64>, default: f64, min: f64, max: f64| {
        let v = v.unwrap_or(default);
        if !v.is_finite() {
            return Err(ConfigError::new(file, key(k), "not a finite number"));
        }
        check_range(file, &key(k), v, min, max)
    };
    let path = |k: &str, v: Option<String>| match v {
        Some(p) if p.trim().is_empty() => Err(ConfigError::new(file, key(k), "empty path")),
        Some(p) => Ok(Some(base.join(p))),
        None => Ok(None),
    };
    let fine = (
        int("ipv4_prefix_length", raw.ipv4_prefix_length, 24, 8, 32)? as u8,
        int("ipv6_prefix_length", raw.ipv6_prefix_length, 48, 16, 64)? as u8,
    );
    // Shorter than the fine level's prefix (which is at least 8).
    let coarse_prefix = |k: &str, v: Option<i64>, default: u8, finer: u8| {
        let max = i64::from(finer) - 1;
        Ok::<u8, ConfigError>(int(k, v, i64::from(default).min(max), 0, max)? as u8)
    };
    let asn_database = path("asn_database", raw.asn_database)?;
    let coarse = match raw.coarse.as_deref().unwrap_or("prefix") {
        "prefix" => {
            if asn_database.is_some() {
                return Err(ConfigError::new(
                    file,
                    key("asn_database"),
                    "only used with coarse = \"asn\"",
                ));
            }
            Coarse::Prefix(
                coarse_prefix(
                    "coarse_ipv4_prefix_length",
                    raw.coarse_ipv4_prefix_length,
                    16,
                    fine.0,
                )?,
                coarse_prefix(
                    "coarse_ipv6_prefix_length",
                    raw.coarse_ipv6_prefix_length,
                    32,
                    fine.1,
                )?,
            )
        }
        "asn" => {
            for (k, v) in [
                ("coarse_ipv4_prefix_length", raw.coarse_ipv4_prefix_length),
                ("coarse_ipv6_prefix_length", raw.coarse_ipv6_prefix_length),
            ] {
                if v.is_some() {
                    return Err(ConfigError::new(
                        file,
                        key(k),
                        "only used with coarse = \"prefix\"",
                    ));
                }
            }
            Coarse::Asn(asn_database.ok_or_else(|| {
                ConfigError::new(
                    file,
                    key("asn_database"),
                    "required with coarse = \"asn\": an MMDB with autonomous_system_number \
                     (GeoLite2-ASN, or DB-IP's ASN lite)",
                )
            })?)
        }
        other => {
            return Err(ConfigError::new(
                file,
                key("coarse"),
                format!("{other:?}: \"prefix\" or \"asn\""),
            ));
        }
    };
    let state_file = match raw.state_file {
        Some(p) if p.is_empty() => None,
        Some(p) => Some(base.join(p)),
        None => d.state_file.as_ref().map(|p| base.join(p)),
    };
    let day = Duration::from_secs(86_400);
    Ok(LatencyConfig {
        publish_interval: duration(
            file,
            key("publish_interval"),
            raw.publish_interval.as_deref(),
            d.publish_interval,
            Duration::from_millis(100),
            Duration::from_secs(3600),
        )?,
        min_samples: int("min_samples", raw.min_samples, 5, 1, 65_535)? as u16,
        half_life: duration(
            file,
            key("half_life"),
            raw.half_life.as_deref(),
            d.half_life,
            Duration::from_secs(1),
            day * 30,
        )?,
        fine,
        coarse,
        map: path("map", raw.map)?,
        margin_ms: num("margin_ms", raw.margin_ms, d.margin_ms, 0.0, 1000.0)?,
        margin_percent: num(
            "margin_percent",
            raw.margin_percent,
            d.margin_percent,
            0.0,
            100.0,
        )?,
        fibre_km_per_ms: num(
            "fibre_km_per_ms",
            raw.fibre_km_per_ms,
            d.fibre_km_per_ms,
            50.0,
            300.0,
        )?,
        path_stretch: num("path_stretch", raw.path_stretch, d.path_stretch, 1.0, 10.0)?,
        base_rtt_ms: num("base_rtt_ms", raw.base_rtt_ms, d.base_rtt_ms, 0.0, 1000.0)?,
        max_rtt_ms: num("max_rtt_ms", raw.max_rtt_ms, d.max_rtt_ms, 1.0, MAX_RTT_MS)?,
        max_keys: int("max_keys", raw.max_keys, 1_000_000, 1000, 10_000_000)? as usize,
        state_file,
        save_interval: duration(
            file,
            key("save_interval"),
            raw.save_interval.as_deref(),
            d.save_interval,
            Duration::from_secs(1),
            day,
        )?,
        congestion_factor: num(
            "congestion_factor",
            raw.congestion_factor,
            d.congestion_factor,
            1.1,
            100.0,
        )?,
        congestion_penalty_ms: num(
            "congestion_penalty_ms",
            raw.congestion_penalty_ms,
            d.congestion_penalty_ms,
            0.0,
            MAX_RTT_MS,
        )?,
    })
}
