//! Serde mirror of the TOML files. Private to `config/`: everything here is
//! checked and converted by `validate` before the rest of the program sees it.

use std::collections::BTreeMap;

use serde::Deserialize;

/// `meridian.toml`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawServer {
    pub(super) listen: Option<Vec<String>>,
    pub(super) zones: Option<String>,
    pub(super) geoip: Option<String>,
    pub(super) countries: Option<String>,
    pub(super) max_udp_payload: Option<u16>,
    pub(super) threads: Option<u32>,
    pub(super) tcp_idle_timeout: Option<u64>,
    pub(super) tcp_max_connections: Option<u32>,
    pub(super) tcp_max_connections_per_client: Option<u32>,
    pub(super) tcp_busy_idle_timeout: Option<u64>,
    pub(super) state_file: Option<String>,
    pub(super) wait_for_probes: Option<bool>,
    pub(super) max_probes_in_flight: Option<u32>,
    pub(super) admin: Option<RawAdmin>,
    pub(super) nsid: Option<String>,
    pub(super) cookies: Option<RawCookies>,
    pub(super) rrl: Option<RawRrl>,
    pub(super) latency: Option<super::latency::RawLatency>,
    pub(super) rum: Option<super::rum::RawRum>,
    pub(super) log_format: Option<String>,
    pub(super) query_log: Option<RawQueryLog>,
    pub(super) cluster: Option<super::cluster::RawCluster>,
}

/// `[query_log]` in `meridian.toml`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawQueryLog {
    pub(super) path: Option<String>,
    pub(super) sample: Option<i64>,
    pub(super) queue: Option<i64>,
}

/// `[cookies]` in `meridian.toml`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCookies {
    pub(super) enabled: Option<bool>,
    pub(super) secret: Option<String>,
    pub(super) secret_file: Option<String>,
    pub(super) rotate: Option<String>,
    pub(super) require: Option<bool>,
}

/// `[rrl]` in `meridian.toml`. Integers are read wide so that an
/// out-of-range value gets a range error, not a serde overflow message.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRrl {
    pub(super) enabled: Option<bool>,
    pub(super) responses_per_second: Option<i64>,
    pub(super) nxdomains_per_second: Option<i64>,
    pub(super) referrals_per_second: Option<i64>,
    pub(super) errors_per_second: Option<i64>,
    pub(super) window: Option<i64>,
    pub(super) slip: Option<i64>,
    pub(super) ipv4_prefix_length: Option<i64>,
    pub(super) ipv6_prefix_length: Option<i64>,
    pub(super) exempt: Option<Vec<String>>,
    pub(super) table_size: Option<i64>,
}

/// `[admin]` in `meridian.toml`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAdmin {
    pub(super) enabled: Option<bool>,
    pub(super) listen: Option<String>,
    pub(super) token: Option<String>,
    pub(super) token_file: Option<String>,
    pub(super) max_connections: Option<u32>,
    pub(super) header_timeout: Option<String>,
    pub(super) idle_timeout: Option<String>,
    pub(super) request_timeout: Option<String>,
}

/// One file in the zones directory.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawZone {
    pub(super) origin: String,
    pub(super) ttl: Option<u32>,
    pub(super) soa: RawSoa,
    #[serde(default)]
    pub(super) ns: Vec<String>,
    pub(super) ns_ttl: Option<u32>,
    #[serde(default)]
    pub(super) records: BTreeMap<String, Vec<RawRecord>>,
    /// An RFC 1035 master file with more static records, relative to the
    /// zone file's directory.
    pub(super) records_file: Option<String>,
    #[serde(default)]
    pub(super) datacenters: BTreeMap<String, RawDatacenter>,
    #[serde(default)]
    pub(super) services: BTreeMap<String, RawService>,
    /// `[dnssec]`: sign the zone.
    pub(super) dnssec: Option<super::dnssec::RawDnssec>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSoa {
    pub(super) mname: Option<String>,
    pub(super) rname: String,
    pub(super) serial: u32,
    pub(super) refresh: Option<u32>,
    pub(super) retry: Option<u32>,
    pub(super) expire: Option<u32>,
    pub(super) minimum: Option<u32>,
    pub(super) ttl: Option<u32>,
    /// Not a SOA field: caught to explain TOML's table scoping.
    pub(super) ns: Option<toml::Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRecord {
    #[serde(rename = "type")]
    pub(super) rtype: String,
    pub(super) value: String,
    pub(super) ttl: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDatacenter {
    pub(super) location: Option<[f64; 2]>,
    pub(super) country: Option<String>,
    pub(super) addresses: Vec<String>,
    pub(super) probe: Option<RawProbe>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawProbe {
    #[serde(rename = "type")]
    pub(super) kind: String,
    pub(super) port: Option<u16>,
    pub(super) targets: Option<Vec<String>>,
    pub(super) interval: Option<String>,
    pub(super) timeout: Option<String>,
    pub(super) rise: Option<u32>,
    pub(super) fall: Option<u32>,
    pub(super) jitter: Option<f64>,
    pub(super) min_up: Option<u32>,
    // http / https
    pub(super) method: Option<String>,
    pub(super) path: Option<String>,
    pub(super) host: Option<String>,
    pub(super) expect_status: Option<Vec<toml::Value>>,
    pub(super) expect_body: Option<String>,
    pub(super) tls_verify: Option<bool>,
    pub(super) capacity_hold: Option<String>,
    // https / grpc with TLS
    pub(super) min_cert_days: Option<i64>,
    // grpc
    pub(super) service: Option<String>,
    pub(super) tls: Option<bool>,
    // exec: an argv array (a string is rejected with a hint)
    pub(super) command: Option<toml::Value>,
    // dns
    pub(super) name: Option<String>,
    pub(super) qtype: Option<String>,
    pub(super) rcode: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawService {
    /// A step name, or an array of steps (names or one-key tables).
    pub(super) policy: toml::Value,
    #[serde(default)]
    pub(super) weights: BTreeMap<String, i64>,
    pub(super) sticky_prefix_v4: Option<i64>,
    pub(super) sticky_prefix_v6: Option<i64>,
    pub(super) rotate: Option<bool>,
    pub(super) datacenters: Vec<String>,
    pub(super) ttl: Option<u32>,
    pub(super) default: Option<Vec<String>>,
    #[serde(default)]
    pub(super) countries: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    pub(super) continents: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    pub(super) networks: BTreeMap<String, Vec<String>>,
    pub(super) max_answers: Option<u32>,
    pub(super) degraded_ttl: Option<u32>,
    pub(super) when_all_down: Option<String>,
    pub(super) fallback: Option<Vec<String>>,
    pub(super) fallback_cname: Option<String>,
    pub(super) warmup: Option<String>,
    /// Where a `latency` step's estimates come from.
    pub(super) source: Option<String>,
}
