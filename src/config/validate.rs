//! Cross-reference and range checks; raw TOML → domain types.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use ipnet::IpNet;

use super::raw::{RawAdmin, RawRrl, RawServer, RawService, RawZone};
use super::records::{Loc, Records, toml_key};
use super::{
    ConfigError, DEFAULT_LISTEN, DEFAULT_MAX_UDP_PAYLOAD, DEFAULT_RECORD_TTL, DEFAULT_SERVICE_TTL,
    DEFAULT_TCP_BUSY_IDLE_TIMEOUT_SECS, DEFAULT_TCP_IDLE_TIMEOUT_SECS, DEFAULT_TCP_MAX_CONNECTIONS,
    DEFAULT_TCP_MAX_CONNECTIONS_PER_CLIENT, DEFAULT_ZONES_DIR, MAX_THREADS, MAX_TTL, ServerConfig,
};
use crate::dns::records::{DomainName, parse_name, parse_record};
use crate::model::{
    AllDown, Coord, CountryCode, Datacenter, DcId, Fallback, Service, Soa, Warmup, ZoneConfig,
};

/// Most datacenters in one zone (indices are u16; far beyond any real use).
const MAX_DATACENTERS: usize = 1024;

pub(super) fn check_range<T: PartialOrd + std::fmt::Display + Copy>(
    file: &Path,
    key: &str,
    value: T,
    min: T,
    max: T,
) -> Result<T, ConfigError> {
    if value < min || value > max {
        Err(ConfigError::new(
            file,
            key,
            format!("{value} is out of range ({min} to {max})"),
        ))
    } else {
        Ok(value)
    }
}

pub(super) fn validate_server(file: &Path, raw: RawServer) -> Result<ServerConfig, ConfigError> {
    let base = file.parent().unwrap_or(Path::new("."));
    let listen_text: Vec<String> = raw
        .listen
        .unwrap_or_else(|| DEFAULT_LISTEN.iter().map(|s| s.to_string()).collect());
    if listen_text.is_empty() {
        return Err(ConfigError::new(
            file,
            "listen",
            "needs at least one address",
        ));
    }
    let mut listen = Vec::with_capacity(listen_text.len());
    for (i, text) in listen_text.iter().enumerate() {
        let addr: SocketAddr = text.parse().map_err(|_| {
            ConfigError::new(
                file,
                format!("listen[{i}]"),
                format!("{text:?} is not ADDRESS:PORT (IPv6 as [::1]:5300)"),
            )
        })?;
        if listen.contains(&addr) {
            return Err(ConfigError::new(
                file,
                format!("listen[{i}]"),
                format!("{addr} is listed twice"),
            ));
        }
        listen.push(addr);
    }
    let path_key = |key: &str, value: Option<String>, default: &str| {
        let value = value.unwrap_or_else(|| default.to_string());
        if value.trim().is_empty() {
            Err(ConfigError::new(file, key, "empty path"))
        } else {
            Ok(base.join(value))
        }
    };
    let zones_dir = path_key("zones", raw.zones, DEFAULT_ZONES_DIR)?;
    // Not set: the database compiled into the binary.
    let geoip = match raw.geoip {
        Some(p) => Some(path_key("geoip", Some(p), "")?),
        None => None,
    };
    let countries = match raw.countries {
        Some(p) => Some(path_key("countries", Some(p), "")?),
        None => None,
    };
    let max_udp_payload = check_range(
        file,
        "max_udp_payload",
        raw.max_udp_payload.unwrap_or(DEFAULT_MAX_UDP_PAYLOAD),
        512,
        4096,
    )?;
    let idle = check_range(
        file,
        "tcp_idle_timeout",
        raw.tcp_idle_timeout
            .unwrap_or(DEFAULT_TCP_IDLE_TIMEOUT_SECS),
        1,
        3600,
    )?;
    let tcp_max_connections = check_range(
        file,
        "tcp_max_connections",
        raw.tcp_max_connections
            .unwrap_or(DEFAULT_TCP_MAX_CONNECTIONS),
        1,
        65_535,
    )?;
    let tcp_max_connections_per_client = check_range(
        file,
        "tcp_max_connections_per_client",
        raw.tcp_max_connections_per_client
            .unwrap_or(DEFAULT_TCP_MAX_CONNECTIONS_PER_CLIENT),
        1,
        65_535,
    )?;
    // Unset, it follows a short `tcp_idle_timeout` down; set, it must not
    // exceed it (a "shorter" timeout that is longer means nothing).
    let busy_idle = match raw.tcp_busy_idle_timeout {
        Some(v) => check_range(file, "tcp_busy_idle_timeout", v, 1, idle)?,
        None => DEFAULT_TCP_BUSY_IDLE_TIMEOUT_SECS.min(idle),
    };
    let state_file = path_key("state_file", raw.state_file, super::DEFAULT_STATE_FILE)?;
    let max_probes_in_flight = check_range(
        file,
        "max_probes_in_flight",
        raw.max_probes_in_flight
            .unwrap_or(super::DEFAULT_MAX_PROBES_IN_FLIGHT),
        1,
        65_535,
    )?;
    let admin = validate_admin(file, base, raw.admin.unwrap_or_default())?;
    let nsid = super::protocol::validate_nsid(file, raw.nsid)?;
    let cookies = super::protocol::validate_cookies(file, base, raw.cookies.unwrap_or_default())?;
    let rrl = validate_rrl(file, raw.rrl.unwrap_or_default())?;
    let latency = super::latency::validate_latency(file, base, raw.latency.unwrap_or_default())?;
    let rum = super::rum::validate_rum(file, raw.rum, &listen, admin.as_ref())?;
    let log_format = match raw.log_format.as_deref() {
        None | Some("text") => super::LogFormat::Text,
        Some("json") => super::LogFormat::Json,
        Some(other) => {
            return Err(ConfigError::new(
                file,
                "log_format",
                format!("{other:?}: \"text\" or \"json\""),
            ));
        }
    };
    let query_log = match raw.query_log {
        None => None,
        Some(q) => {
            let Some(path) = q.path else {
                return Err(ConfigError::new(
                    file,
                    "query_log.path",
                    "missing: the file to write the query log to (remove [query_log] to turn it off)",
                ));
            };
            let sample = check_range(
                file,
                "query_log.sample",
                q.sample
                    .unwrap_or(i64::from(super::DEFAULT_QUERY_LOG_SAMPLE)),
                1,
                i64::from(super::MAX_QUERY_LOG_SAMPLE),
            )?;
            let queue = check_range(
                file,
                "query_log.queue",
                q.queue.unwrap_or(super::DEFAULT_QUERY_LOG_QUEUE as i64),
                1,
                super::MAX_QUERY_LOG_QUEUE as i64,
            )?;
            Some(super::QueryLogConfig {
                path: path_key("query_log.path", Some(path), "")?,
                sample: sample as u32,
                queue: queue as usize,
            })
        }
    };
    let cluster = super::cluster::validate_cluster(file, base, raw.cluster)?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads = match raw.threads {
        Some(n) => check_range(file, "threads", n, 1, MAX_THREADS)? as usize,
        None => cores.min(MAX_THREADS as usize),
    };
    Ok(ServerConfig {
        path: file.to_path_buf(),
        threads,
        state_file,
        wait_for_probes: raw.wait_for_probes.unwrap_or(true),
        max_probes_in_flight,
        admin,
        nsid,
        cookies,
        rrl,
        latency,
        rum,
        log_format,
        query_log,
        cluster,
        listen,
        zones_dir,
        geoip,
        countries,
        max_udp_payload,
        tcp_idle_timeout: Duration::from_secs(idle),
        tcp_max_connections,
        tcp_max_connections_per_client,
        tcp_busy_idle_timeout: Duration::from_secs(busy_idle),
    })
}

fn validate_admin(
    file: &Path,
    base: &Path,
    raw: RawAdmin,
) -> Result<Option<super::AdminConfig>, ConfigError> {
    if raw.enabled == Some(false) {
        return Ok(None);
    }
    let text = raw.listen.as_deref().unwrap_or(super::DEFAULT_ADMIN_LISTEN);
    let listen: SocketAddr = text.parse().map_err(|_| {
        ConfigError::new(
            file,
            "admin.listen",
            format!("{text:?} is not ADDRESS:PORT"),
        )
    })?;
    let token = match (raw.token, raw.token_file) {
        (Some(_), Some(_)) => {
            return Err(ConfigError::new(
                file,
                "admin.token_file",
                "set `token` or `token_file`, not both",
            ));
        }
        (Some(t), None) => Some(t),
        (None, Some(f)) => {
            let path = base.join(&f);
            let t = std::fs::read_to_string(&path).map_err(|e| {
                ConfigError::new(file, "admin.token_file", format!("{}: {e}", path.display()))
            })?;
            Some(t.trim().to_string())
        }
        (None, None) => None,
    };
    if token.as_deref().is_some_and(|t| t.len() < 16) {
        return Err(ConfigError::new(
            file,
            "admin.token",
            "use at least 16 characters",
        ));
    }
    if token.is_none() && !listen.ip().is_loopback() {
        return Err(ConfigError::new(
            file,
            "admin.listen",
            "a non-loopback admin address needs `token` or `token_file`",
        ));
    }
    let max_connections = check_range(
        file,
        "admin.max_connections",
        raw.max_connections
            .unwrap_or(super::DEFAULT_ADMIN_MAX_CONNECTIONS),
        1,
        super::MAX_ADMIN_CONNECTIONS,
    )?;
    let timeout = |key: &str, text: Option<&str>, default: Duration, max: Duration| {
        let min = super::MIN_ADMIN_TIMEOUT;
        super::probe::duration(file, key.to_string(), text, default, min, max)
    };
    Ok(Some(super::AdminConfig {
        listen,
        token,
        max_connections,
        header_timeout: timeout(
            "admin.header_timeout",
            raw.header_timeout.as_deref(),
            super::DEFAULT_ADMIN_HEADER_TIMEOUT,
            super::MAX_ADMIN_REQUEST_TIMEOUT,
        )?,
        idle_timeout: timeout(
            "admin.idle_timeout",
            raw.idle_timeout.as_deref(),
            super::DEFAULT_ADMIN_IDLE_TIMEOUT,
            super::MAX_ADMIN_IDLE_TIMEOUT,
        )?,
        request_timeout: timeout(
            "admin.request_timeout",
            raw.request_timeout.as_deref(),
            super::DEFAULT_ADMIN_REQUEST_TIMEOUT,
            super::MAX_ADMIN_REQUEST_TIMEOUT,
        )?,
    }))
}

/// `[rrl]`: ranges, and exempt networks in CIDR form without host bits.
fn validate_rrl(file: &Path, raw: RawRrl) -> Result<super::RrlConfig, ConfigError> {
    use super::RrlConfig;
    let d = RrlConfig::default();
    let int = |key: &str, value: Option<i64>, default: u32, min: u32, max: u32| {
        let v = check_range(
            file,
            &format!("rrl.{key}"),
            value.unwrap_or(i64::from(default)),
            i64::from(min),
            i64::from(max),
        )?;
        // In range, so it fits.
        Ok::<u32, ConfigError>(u32::try_from(v).unwrap_or(max))
    };
    let rate = |key: &str, value: Option<i64>, default: u32| {
        int(key, value, default, 0, super::MAX_RRL_RATE)
    };
    let exempt = network_list(file, "rrl.exempt", raw.exempt.unwrap_or_default())?;
    let table_size = int(
        "table_size",
        raw.table_size,
        d.table_size,
        1024,
        super::MAX_RRL_TABLE_SIZE,
    )?
    .next_power_of_two();
    Ok(RrlConfig {
        enabled: raw.enabled.unwrap_or(d.enabled),
        responses_per_second: rate(
            "responses_per_second",
            raw.responses_per_second,
            d.responses_per_second,
        )?,
        nxdomains_per_second: rate(
            "nxdomains_per_second",
            raw.nxdomains_per_second,
            d.nxdomains_per_second,
        )?,
        referrals_per_second: rate(
            "referrals_per_second",
            raw.referrals_per_second,
            d.referrals_per_second,
        )?,
        errors_per_second: rate(
            "errors_per_second",
            raw.errors_per_second,
            d.errors_per_second,
        )?,
        window: int("window", raw.window, d.window, 1, 3600)?,
        slip: int("slip", raw.slip, d.slip.into(), 0, 10)? as u8,
        ipv4_prefix_length: int(
            "ipv4_prefix_length",
            raw.ipv4_prefix_length,
            d.ipv4_prefix_length.into(),
            0,
            32,
        )? as u8,
        ipv6_prefix_length: int(
            "ipv6_prefix_length",
            raw.ipv6_prefix_length,
            d.ipv6_prefix_length.into(),
            0,
            128,
        )? as u8,
        exempt,
        table_size,
    })
}

fn ttl(file: &Path, key: &str, value: Option<u32>, default: u32) -> Result<u32, ConfigError> {
    check_range(file, key, value.unwrap_or(default), 0, MAX_TTL)
}

/// Renders a key for a TOML table entry, quoting it when it is not bare.
pub(crate) fn key_part(k: &str) -> String {
    if !k.is_empty()
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        k.to_string()
    } else {
        format!("{k:?}")
    }
}

pub(super) fn validate_zone(file: &Path, raw: RawZone) -> Result<ZoneConfig, ConfigError> {
    let origin = parse_name(&raw.origin, None)
        .map_err(|e| ConfigError::new(file, "origin", e))?
        .to_lowercase();
    if origin.is_root() {
        return Err(ConfigError::new(
            file,
            "origin",
            "Meridian serves delegated subdomains, not the root",
        ));
    }
    let in_zone = |key: &str, name: DomainName| {
        if origin.zone_of(&name) {
            Ok(name)
        } else {
            Err(ConfigError::new(
                file,
                key,
                format!("{name} is not inside the zone {origin}"),
            ))
        }
    };
    let default_ttl = ttl(file, "ttl", raw.ttl, DEFAULT_RECORD_TTL)?;

    // SOA.
    if raw.soa.ns.is_some() {
        return Err(ConfigError::new(
            file,
            "soa.ns",
            "`ns` belongs to the zone, not the SOA: in TOML every key after `[soa]` \
             is part of that table, so move `ns = [...]` above the `[soa]` line",
        ));
    }
    if raw.ns.is_empty() {
        return Err(ConfigError::new(
            file,
            "ns",
            "a zone needs at least one name server",
        ));
    }
    let mut ns = Vec::with_capacity(raw.ns.len());
    for (i, n) in raw.ns.iter().enumerate() {
        let name = parse_name(n, Some(&origin))
            .map_err(|e| ConfigError::new(file, format!("ns[{i}]"), e))?;
        if ns.contains(&name) {
            return Err(ConfigError::new(file, format!("ns[{i}]"), "listed twice"));
        }
        ns.push(name);
    }
    let ns_ttl = ttl(file, "ns_ttl", raw.ns_ttl, default_ttl)?;
    let mname = match &raw.soa.mname {
        Some(m) => {
            parse_name(m, Some(&origin)).map_err(|e| ConfigError::new(file, "soa.mname", e))?
        }
        None => ns[0].clone(),
    };
    let rname_text = raw.soa.rname.trim();
    if rname_text.contains('@') {
        return Err(ConfigError::new(
            file,
            "soa.rname",
            format!(
                "write the mailbox as a domain name: {:?}",
                rname_text.replacen('@', ".", 1) + if rname_text.ends_with('.') { "" } else { "." }
            ),
        ));
    }
    let rname = parse_name(rname_text, Some(&origin))
        .map_err(|e| ConfigError::new(file, "soa.rname", e))?;
    let soa = Soa {
        mname,
        rname,
        serial: raw.soa.serial,
        refresh: check_range(
            file,
            "soa.refresh",
            raw.soa.refresh.unwrap_or(3600),
            1,
            MAX_TTL,
        )?,
        retry: check_range(file, "soa.retry", raw.soa.retry.unwrap_or(600), 1, MAX_TTL)?,
        expire: check_range(
            file,
            "soa.expire",
            raw.soa.expire.unwrap_or(1_209_600),
            1,
            MAX_TTL,
        )?,
        minimum: check_range(
            file,
            "soa.minimum",
            raw.soa.minimum.unwrap_or(60),
            0,
            86_400,
        )?,
        ttl: ttl(file, "soa.ttl", raw.soa.ttl, default_ttl)?,
    };

    // Static records.
    let mut static_records = Records::new(file, &origin);
    static_records.reserve(raw.records.values().map(Vec::len).sum());
    for (owner_text, list) in &raw.records {
        let okey = toml_key(owner_text);
        let owner = parse_name(owner_text, Some(&origin))
            .map_err(|e| ConfigError::new(file, okey.clone(), e))?;
        let owner = in_zone(&okey, owner)?;
        let list_no = static_records.toml_list(okey.clone());
        let g = static_records.group_for(
            &owner,
            Loc::Toml {
                list: list_no,
                item: 0,
            },
        )?;
        if list.is_empty() {
            return Err(ConfigError::new(file, okey, "empty record list"));
        }
        for (i, r) in list.iter().enumerate() {
            let rkey = format!("{okey}[{i}]");
            let rttl = ttl(file, &format!("{rkey}.ttl"), r.ttl, default_ttl)?;
            let rec = parse_record(&owner, &r.rtype, &r.value, rttl, &origin)
                .map_err(|e| ConfigError::new(file, rkey.clone(), e))?;
            if rec.is_ns() && owner == origin {
                return Err(ConfigError::new(
                    file,
                    rkey,
                    "apex NS records are set by the top-level `ns` key",
                ));
            }
            let loc = Loc::Toml {
                list: list_no,
                item: i as u32,
            };
            static_records.push(g, rec, loc);
        }
        static_records.check_group(g)?;
    }
    let mut records_file = None;
    if let Some(name) = &raw.records_file {
        if name.trim().is_empty() {
            return Err(ConfigError::new(file, "records_file", "empty path"));
        }
        let path = file.parent().unwrap_or(Path::new(".")).join(name);
        let text = std::fs::read_to_string(&path).map_err(|e| {
            ConfigError::new(
                file,
                "records_file",
                format!("cannot read {}: {e}", path.display()),
            )
        })?;
        static_records.reserve(text.bytes().filter(|&b| b == b'\n').count());
        super::zonefile::read(&mut static_records, &path, &text, &origin, default_ttl, &ns)?;
        records_file = Some((path, crate::config::fingerprint(text.as_bytes())));
    }
    static_records.check_cname_cycles()?;
    static_records.check_delegations()?;

    // Datacenters.
    if raw.datacenters.len() > MAX_DATACENTERS {
        return Err(ConfigError::new(
            file,
            "datacenters",
            format!("at most {MAX_DATACENTERS} datacenters per zone"),
        ));
    }
    let mut datacenters = Vec::with_capacity(raw.datacenters.len());
    for (name, dc) in &raw.datacenters {
        let key = format!("datacenters.{}", key_part(name));
        // Names travel in beacons, the latency map and the latency state
        // file (which stores each in at most 255 bytes).
        if name.is_empty() || name.len() > 255 || name.chars().any(char::is_control) {
            return Err(ConfigError::new(
                file,
                key,
                "a datacenter name is 1 to 255 bytes, without control characters",
            ));
        }
        let location = match dc.location {
            Some([lat, lon]) => {
                if !(-90.0..=90.0).contains(&lat) || !(-180.0..=180.0).contains(&lon) {
                    return Err(ConfigError::new(
                        file,
                        format!("{key}.location"),
                        format!(
                            "[{lat}, {lon}] is not [latitude (-90 to 90), longitude (-180 to 180)]"
                        ),
                    ));
                }
                Some(Coord { lat, lon })
            }
            None => None,
        };
        let country = match &dc.country {
            Some(cc) => Some(parse_country(file, &format!("{key}.country"), cc)?),
            None => None,
        };
        let (mut v4, mut v6) = (Vec::new(), Vec::new());
        for (i, a) in dc.addresses.iter().enumerate() {
            let akey = format!("{key}.addresses[{i}]");
            match a.trim().parse::<IpAddr>() {
                Ok(IpAddr::V4(x)) if !v4.contains(&x) => v4.push(x),
                Ok(IpAddr::V6(x)) if !v6.contains(&x) => v6.push(x),
                Ok(_) => return Err(ConfigError::new(file, akey, "listed twice")),
                Err(_) => {
                    return Err(ConfigError::new(
                        file,
                        akey,
                        format!("{a:?} is not an IPv4 or IPv6 address"),
                    ));
                }
            }
        }
        if v4.is_empty() && v6.is_empty() {
            return Err(ConfigError::new(
                file,
                format!("{key}.addresses"),
                "a datacenter needs at least one address",
            ));
        }
        let probe = match &dc.probe {
            Some(p) => Some(super::probe::validate_probe(
                file,
                &format!("{key}.probe"),
                p,
                &v4,
                &v6,
            )?),
            None => None,
        };
        datacenters.push(Datacenter {
            name: name.clone(),
            location,
            v4,
            v6,
            probe,
            country,
        });
    }

    let mut zone = ZoneConfig {
        source: file.display().to_string(),
        origin: origin.clone(),
        soa,
        ns,
        ns_ttl,
        records: Vec::new(),
        records_file,
        datacenters,
        services: Vec::new(),
        dnssec: match &raw.dnssec {
            Some(d) => Some(std::sync::Arc::new(super::dnssec::validate(
                file, &origin, d,
            )?)),
            None => None,
        },
    };

    // Services.
    let mut service_names: HashMap<DomainName, &str> = HashMap::with_capacity(raw.services.len());
    for (name, svc) in &raw.services {
        let key = format!("services.{}", key_part(name));
        let fqdn =
            parse_name(name, Some(&origin)).map_err(|e| ConfigError::new(file, key.clone(), e))?;
        let fqdn = in_zone(&key, fqdn)?;
        if let Some(prev) = service_names.insert(fqdn.clone(), name) {
            return Err(ConfigError::new(
                file,
                key,
                format!(
                    "names the same owner ({fqdn}) as services.{}",
                    key_part(prev)
                ),
            ));
        }
        if let Some(reason) = static_records.service_conflict(&fqdn) {
            return Err(ConfigError::new(file, key, reason));
        }
        let service = validate_service(file, &key, &zone, name, fqdn, svc)?;
        zone.services.push(service);
    }
    check_name_server_addresses(file, &zone, &static_records)?;
    zone.records = static_records.into_records();
    Ok(zone)
}

/// Name servers inside the zone need addresses here (glue), or resolvers
/// cannot reach them.
fn check_name_server_addresses(
    file: &Path,
    zone: &ZoneConfig,
    records: &Records,
) -> Result<(), ConfigError> {
    for (i, ns) in zone.ns.iter().enumerate() {
        if zone.origin.zone_of(ns) && !records.has_address(ns) {
            return Err(ConfigError::new(
                file,
                format!("ns[{i}]"),
                format!("{ns} is inside the zone but has no A or AAAA record in [records]"),
            ));
        }
    }
    records.check_delegation_glue()
}

/// An upper-case ISO 3166-1 alpha-2 code.
pub(super) fn parse_country(file: &Path, key: &str, cc: &str) -> Result<CountryCode, ConfigError> {
    CountryCode::parse(cc)
        .filter(|c| c.to_string() == *cc)
        .ok_or_else(|| {
            ConfigError::new(
                file,
                key,
                "not an upper-case ISO 3166-1 alpha-2 country code such as \"JP\"",
            )
        })
}

pub(super) fn resolve_dcs(
    file: &Path,
    key: &str,
    zone: &ZoneConfig,
    names: &[String],
    allowed: Option<&[DcId]>,
) -> Result<Vec<DcId>, ConfigError> {
    if names.is_empty() {
        return Err(ConfigError::new(file, key, "empty datacenter list"));
    }
    let mut ids = Vec::with_capacity(names.len());
    for (i, n) in names.iter().enumerate() {
        let ikey = format!("{key}[{i}]");
        let id = zone.dc_by_name(n).ok_or_else(|| {
            let known: Vec<&str> = zone.datacenters.iter().map(|d| d.name.as_str()).collect();
            ConfigError::new(
                file,
                ikey.clone(),
                format!(
                    "unknown datacenter {n:?} (defined: {})",
                    if known.is_empty() {
                        "none".to_string()
                    } else {
                        known.join(", ")
                    }
                ),
            )
        })?;
        if ids.contains(&id) {
            return Err(ConfigError::new(
                file,
                ikey,
                format!("{n:?} is listed twice"),
            ));
        }
        if let Some(allowed) = allowed
            && !allowed.contains(&id)
        {
            return Err(ConfigError::new(
                file,
                ikey,
                format!("{n:?} is not one of this service's datacenters"),
            ));
        }
        ids.push(id);
    }
    Ok(ids)
}

fn validate_service(
    file: &Path,
    key: &str,
    zone: &ZoneConfig,
    name: &str,
    fqdn: DomainName,
    raw: &RawService,
) -> Result<Service, ConfigError> {
    let datacenters = resolve_dcs(
        file,
        &format!("{key}.datacenters"),
        zone,
        &raw.datacenters,
        None,
    )?;
    let ttl = ttl(file, &format!("{key}.ttl"), raw.ttl, DEFAULT_SERVICE_TTL)?;
    let policy = super::policy::validate_policy(file, key, zone, name, &datacenters, raw)?;
    let max_answers = check_range(
        file,
        &format!("{key}.max_answers"),
        raw.max_answers.unwrap_or(1),
        1,
        8,
    )? as usize;
    let degraded_ttl = check_range(
        file,
        &format!("{key}.degraded_ttl"),
        raw.degraded_ttl.unwrap_or(ttl / 2),
        0,
        ttl,
    )?;
    let has_fallback = raw.fallback.is_some() || raw.fallback_cname.is_some();
    let when_all_down = match raw.when_all_down.as_deref() {
        None | Some("all") => AllDown::All,
        Some("none") => AllDown::None,
        Some("servfail") => AllDown::Servfail,
        Some("fallback") => AllDown::Fallback(validate_fallback(file, key, zone, raw)?),
        Some(other) => {
            return Err(ConfigError::new(
                file,
                format!("{key}.when_all_down"),
                format!("{other:?}: use \"all\", \"none\", \"servfail\" or \"fallback\""),
            ));
        }
    };
    if has_fallback && !matches!(when_all_down, AllDown::Fallback(_)) {
        return Err(ConfigError::new(
            file,
            format!("{key}.fallback"),
            "only used with when_all_down = \"fallback\"",
        ));
    }
    let warmup = match raw.warmup.as_deref() {
        None | Some("assume_up") => Warmup::AssumeUp,
        Some("assume_down") => Warmup::AssumeDown,
        Some(other) => {
            return Err(ConfigError::new(
                file,
                format!("{key}.warmup"),
                format!("{other:?}: use \"assume_up\" or \"assume_down\""),
            ));
        }
    };
    Ok(Service {
        name: name.to_string(),
        fqdn,
        datacenters,
        ttl,
        policy,
        rotate: raw.rotate.unwrap_or(true),
        max_answers,
        degraded_ttl,
        when_all_down,
        warmup,
    })
}

fn validate_fallback(
    file: &Path,
    key: &str,
    zone: &ZoneConfig,
    raw: &RawService,
) -> Result<Fallback, ConfigError> {
    let mut fb = Fallback {
        v4: Vec::new(),
        v6: Vec::new(),
        cname: None,
    };
    if let Some(name) = &raw.fallback_cname {
        let fkey = format!("{key}.fallback_cname");
        fb.cname = Some(
            parse_name(name, Some(&zone.origin)).map_err(|e| ConfigError::new(file, fkey, e))?,
        );
    }
    for (i, a) in raw.fallback.iter().flatten().enumerate() {
        let fkey = format!("{key}.fallback[{i}]");
        match a.trim().parse::<IpAddr>() {
            Ok(IpAddr::V4(x)) => fb.v4.push(x),
            Ok(IpAddr::V6(x)) => fb.v6.push(x),
            Err(_) => {
                return Err(ConfigError::new(
                    file,
                    fkey,
                    format!("{a:?} is not an IP address (use fallback_cname for a name)"),
                ));
            }
        }
    }
    match (&fb.cname, fb.v4.is_empty() && fb.v6.is_empty()) {
        (Some(_), false) => Err(ConfigError::new(
            file,
            format!("{key}.fallback"),
            "set addresses (`fallback`) or a name (`fallback_cname`), not both",
        )),
        (None, true) => Err(ConfigError::new(
            file,
            format!("{key}.fallback"),
            "when_all_down = \"fallback\" needs `fallback` addresses or `fallback_cname`",
        )),
        _ => Ok(fb),
    }
}

/// A client network in CIDR form: no host bits, and no IPv4-mapped IPv6
/// network (such clients are handled as IPv4, so it would never match).
/// A list of networks in CIDR form without host bits, each listed once;
/// a bare address is a one-address network. `key` names the list.
pub(super) fn network_list(
    file: &Path,
    key: &str,
    list: Vec<String>,
) -> Result<Vec<IpNet>, ConfigError> {
    let mut out: Vec<IpNet> = Vec::with_capacity(list.len());
    for (i, text) in list.iter().enumerate() {
        let key = format!("{key}[{i}]");
        let text = match text.parse::<IpAddr>() {
            Ok(addr) => IpNet::from(addr).to_string(),
            Err(_) => text.clone(),
        };
        let net = parse_network(file, || key.clone(), &text)?;
        if out.contains(&net) {
            return Err(ConfigError::new(file, key, "listed twice"));
        }
        out.push(net);
    }
    Ok(out)
}

/// A client network in CIDR form: no host bits, not IPv4-mapped. `key` is
/// called only for an error (the latency map checks 100,000s of them).
pub(crate) fn parse_network(
    file: &Path,
    key: impl Fn() -> String,
    text: &str,
) -> Result<IpNet, ConfigError> {
    let net: IpNet = text.parse().map_err(|_| {
        ConfigError::new(
            file,
            key(),
            format!("{text:?} is not a network in CIDR notation such as \"192.0.2.0/24\""),
        )
    })?;
    if let IpNet::V6(v6) = net
        && let Some(v4) = v6.network().to_ipv4_mapped()
    {
        let hint = format!("{v4}/{}", v6.prefix_len().saturating_sub(96));
        return Err(ConfigError::new(
            file,
            key(),
            format!("IPv4-mapped clients are routed as IPv4: write {hint:?} instead"),
        ));
    }
    if net.trunc() != net {
        return Err(ConfigError::new(
            file,
            key(),
            format!("host bits set; did you mean \"{}\"?", net.trunc()),
        ));
    }
    Ok(net)
}

pub(super) fn validate_networks(
    file: &Path,
    key: &str,
    zone: &ZoneConfig,
    raw: &BTreeMap<String, Vec<String>>,
    allowed: Option<&[DcId]>,
) -> Result<Vec<(IpNet, Vec<DcId>)>, ConfigError> {
    let mut seen = HashSet::new();
    let mut out = Vec::with_capacity(raw.len());
    for (cidr, list) in raw {
        let nkey = format!("{key}.networks.{}", key_part(cidr));
        let net = parse_network(file, || nkey.clone(), cidr)?;
        if !seen.insert(net) {
            return Err(ConfigError::new(file, nkey, "listed twice"));
        }
        out.push((net, resolve_dcs(file, &nkey, zone, list, allowed)?));
    }
    Ok(out)
}
