//! `[datacenters.NAME.probe]`: health probe settings.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use super::ConfigError;
use super::raw::RawProbe;
use crate::dns::records::parse_name;
use crate::model::{DnsProbe, HttpMethod, HttpProbe, ProbeKind, ProbeSpec};

/// Default time between probes of one target.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(5);
/// Default probe timeout.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);
/// Default consecutive passes to become UP.
pub const DEFAULT_RISE: u32 = 2;
/// Default consecutive failures to become DOWN.
pub const DEFAULT_FALL: u32 = 3;
/// Default interval spread.
pub const DEFAULT_JITTER: f64 = 0.1;
/// Shortest interval accepted.
pub const MIN_INTERVAL: Duration = Duration::from_millis(50);
/// Longest interval accepted.
pub const MAX_INTERVAL: Duration = Duration::from_secs(3600);
/// How long a reported capacity holds after the last report.
pub const DEFAULT_CAPACITY_HOLD: Duration = Duration::from_secs(60);
/// Shortest timeout accepted.
pub const MIN_TIMEOUT: Duration = Duration::from_millis(10);

/// Parses `"5s"`, `"500ms"`, `"1.5s"`, `"2m"`, `"1h"`, `"7d"`.
pub fn parse_duration(text: &str) -> Option<Duration> {
    let t = text.trim();
    let split = t.find(|c: char| c.is_ascii_alphabetic())?;
    let (num, unit) = t.split_at(split);
    let n: f64 = num.trim().parse().ok()?;
    if !n.is_finite() || n < 0.0 {
        return None;
    }
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        "d" => n * 86_400.0,
        _ => return None,
    };
    Duration::try_from_secs_f64(secs).ok()
}

/// Reads an optional duration key within `[min, max]`.
pub(super) fn duration(
    file: &Path,
    key: String,
    text: Option<&str>,
    default: Duration,
    min: Duration,
    max: Duration,
) -> Result<Duration, ConfigError> {
    let Some(text) = text else { return Ok(default) };
    let d = parse_duration(text).ok_or_else(|| {
        ConfigError::new(
            file,
            key.clone(),
            format!("{text:?} is not a duration such as \"500ms\", \"5s\" or \"1m\""),
        )
    })?;
    if d < min || d > max {
        return Err(ConfigError::new(
            file,
            key,
            format!("{text} is out of range ({min:?} to {max:?})"),
        ));
    }
    Ok(d)
}

fn parse_status(
    file: &Path,
    key: &str,
    values: &[toml::Value],
) -> Result<Vec<(u16, u16)>, ConfigError> {
    let mut out = Vec::with_capacity(values.len());
    for (i, v) in values.iter().enumerate() {
        let k = format!("{key}[{i}]");
        let range = match v {
            toml::Value::Integer(n) if (100..=599).contains(n) => (*n as u16, *n as u16),
            toml::Value::String(s) if s.len() == 3 && s.ends_with("xx") => match s.as_bytes()[0] {
                d @ b'1'..=b'5' => {
                    let base = u16::from(d - b'0') * 100;
                    (base, base + 99)
                }
                _ => {
                    return Err(ConfigError::new(
                        file,
                        k,
                        format!("{s:?} is not 1xx to 5xx"),
                    ));
                }
            },
            _ => {
                return Err(ConfigError::new(
                    file,
                    k,
                    "a status code (100 to 599) or a class such as \"2xx\"",
                ));
            }
        };
        out.push(range);
    }
    if out.is_empty() {
        return Err(ConfigError::new(file, key, "empty list"));
    }
    Ok(out)
}

fn not_for(
    file: &Path,
    key: &str,
    field: &str,
    present: bool,
    kind: &str,
) -> Result<(), ConfigError> {
    if present {
        return Err(ConfigError::new(
            file,
            format!("{key}.{field}"),
            format!("does not apply to {kind} probes"),
        ));
    }
    Ok(())
}

/// Validates a probe table; `v4`/`v6` are the datacenter's addresses.
pub(super) fn validate_probe(
    file: &Path,
    key: &str,
    raw: &RawProbe,
    v4: &[Ipv4Addr],
    v6: &[Ipv6Addr],
) -> Result<ProbeSpec, ConfigError> {
    let kind_name = raw.kind.as_str();
    let default_port = match kind_name {
        "http" => Some(80),
        "https" => Some(443),
        "dns" => Some(53),
        "tcp" | "external" => None,
        other => {
            return Err(ConfigError::new(
                file,
                format!("{key}.type"),
                format!(
                    "unknown probe type {other:?} (available: http, https, tcp, dns, external)"
                ),
            ));
        }
    };
    let is_http = matches!(kind_name, "http" | "https");
    for (field, present) in [
        ("method", raw.method.is_some()),
        ("path", raw.path.is_some()),
        ("host", raw.host.is_some()),
        ("expect_status", raw.expect_status.is_some()),
        ("expect_body", raw.expect_body.is_some()),
        ("capacity_hold", raw.capacity_hold.is_some()),
    ] {
        if !is_http {
            not_for(file, key, field, present, kind_name)?;
        }
    }
    if kind_name != "https" {
        not_for(file, key, "tls_verify", raw.tls_verify.is_some(), kind_name)?;
    }
    if kind_name != "dns" {
        for (field, present) in [
            ("name", raw.name.is_some()),
            ("qtype", raw.qtype.is_some()),
            ("rcode", raw.rcode.is_some()),
        ] {
            not_for(file, key, field, present, kind_name)?;
        }
    }
    let kind = match kind_name {
        "tcp" => ProbeKind::Tcp,
        "external" => ProbeKind::External,
        "dns" => {
            let name = raw.name.as_deref().ok_or_else(|| {
                ConfigError::new(file, format!("{key}.name"), "required for dns probes")
            })?;
            let name = parse_name(name, None)
                .map_err(|e| ConfigError::new(file, format!("{key}.name"), e))?;
            let qtype = raw.qtype.as_deref().unwrap_or("SOA");
            let qtype = crate::dns::records::type_code(qtype).ok_or_else(|| {
                ConfigError::new(
                    file,
                    format!("{key}.qtype"),
                    format!("unknown type {qtype:?}"),
                )
            })?;
            let rcode_text = raw.rcode.as_deref().unwrap_or("NOERROR");
            let rcode = match rcode_text.to_ascii_uppercase().as_str() {
                "NOERROR" => 0,
                "FORMERR" => 1,
                "SERVFAIL" => 2,
                "NXDOMAIN" => 3,
                "NOTIMP" => 4,
                "REFUSED" => 5,
                _ => {
                    return Err(ConfigError::new(
                        file,
                        format!("{key}.rcode"),
                        "one of NOERROR, FORMERR, SERVFAIL, NXDOMAIN, NOTIMP, REFUSED",
                    ));
                }
            };
            ProbeKind::Dns(DnsProbe { name, qtype, rcode })
        }
        _ => {
            let method = match raw
                .method
                .as_deref()
                .map(str::to_ascii_uppercase)
                .as_deref()
            {
                None | Some("GET") => HttpMethod::Get,
                Some("HEAD") => HttpMethod::Head,
                Some(other) => {
                    return Err(ConfigError::new(
                        file,
                        format!("{key}.method"),
                        format!("{other:?}: use GET or HEAD"),
                    ));
                }
            };
            let path = raw.path.clone().unwrap_or_else(|| "/".into());
            if !path.starts_with('/') || path.contains(char::is_whitespace) {
                return Err(ConfigError::new(
                    file,
                    format!("{key}.path"),
                    "must start with `/` and contain no spaces",
                ));
            }
            let expect_status = match &raw.expect_status {
                Some(v) => parse_status(file, &format!("{key}.expect_status"), v)?,
                None => vec![(200, 399)],
            };
            if raw.expect_body.is_some() && method == HttpMethod::Head {
                return Err(ConfigError::new(
                    file,
                    format!("{key}.expect_body"),
                    "a HEAD response has no body; use GET",
                ));
            }
            let capacity_hold = duration(
                file,
                format!("{key}.capacity_hold"),
                raw.capacity_hold.as_deref(),
                DEFAULT_CAPACITY_HOLD,
                Duration::ZERO,
                MAX_INTERVAL,
            )?;
            ProbeKind::Http(HttpProbe {
                capacity_hold,
                tls: kind_name == "https",
                method,
                path,
                host: raw.host.clone(),
                expect_status,
                expect_body: raw.expect_body.clone(),
                tls_verify: raw.tls_verify.unwrap_or(true),
            })
        }
    };

    let targets = match &raw.targets {
        Some(list) => {
            let mut out = Vec::with_capacity(list.len());
            for (i, t) in list.iter().enumerate() {
                let k = format!("{key}.targets[{i}]");
                let addr = match (
                    t.parse::<SocketAddr>(),
                    t.parse::<IpAddr>(),
                    raw.port.or(default_port),
                ) {
                    (Ok(a), _, _) => a,
                    (_, Ok(ip), Some(port)) => SocketAddr::new(ip, port),
                    (_, Ok(_), None) => {
                        return Err(ConfigError::new(
                            file,
                            k,
                            "give ADDRESS:PORT, or set `port`",
                        ));
                    }
                    _ => {
                        return Err(ConfigError::new(
                            file,
                            k,
                            format!("{t:?} is not ADDRESS or ADDRESS:PORT (IPv6 as [::1]:80)"),
                        ));
                    }
                };
                if out.contains(&addr) {
                    return Err(ConfigError::new(file, k, "listed twice"));
                }
                out.push(addr);
            }
            out
        }
        None if kind_name == "external" => {
            // External input names targets by address; default to the
            // datacenter's addresses with port 0.
            v4.iter()
                .map(|&a| SocketAddr::new(IpAddr::V4(a), raw.port.unwrap_or(0)))
                .chain(
                    v6.iter()
                        .map(|&a| SocketAddr::new(IpAddr::V6(a), raw.port.unwrap_or(0))),
                )
                .collect()
        }
        None => {
            let port = raw.port.or(default_port).ok_or_else(|| {
                ConfigError::new(
                    file,
                    format!("{key}.port"),
                    "required for tcp probes without `targets`",
                )
            })?;
            v4.iter()
                .map(|&a| SocketAddr::new(IpAddr::V4(a), port))
                .chain(v6.iter().map(|&a| SocketAddr::new(IpAddr::V6(a), port)))
                .collect()
        }
    };
    if targets.is_empty() {
        return Err(ConfigError::new(
            file,
            format!("{key}.targets"),
            "empty list",
        ));
    }
    let interval = duration(
        file,
        format!("{key}.interval"),
        raw.interval.as_deref(),
        DEFAULT_INTERVAL,
        MIN_INTERVAL,
        MAX_INTERVAL,
    )?;
    let timeout = duration(
        file,
        format!("{key}.timeout"),
        raw.timeout.as_deref(),
        DEFAULT_TIMEOUT.min(interval.mul_f64(0.8)),
        MIN_TIMEOUT,
        MAX_INTERVAL,
    )?;
    if timeout >= interval {
        return Err(ConfigError::new(
            file,
            format!("{key}.timeout"),
            format!("{timeout:?} must be shorter than the interval ({interval:?})"),
        ));
    }
    let count = |field: &str, v: Option<u32>, default: u32| {
        let v = v.unwrap_or(default);
        if (1..=100).contains(&v) {
            Ok(v)
        } else {
            Err(ConfigError::new(
                file,
                format!("{key}.{field}"),
                format!("{v} is out of range (1 to 100)"),
            ))
        }
    };
    let rise = count("rise", raw.rise, DEFAULT_RISE)?;
    let fall = count("fall", raw.fall, DEFAULT_FALL)?;
    let jitter = raw.jitter.unwrap_or(DEFAULT_JITTER);
    if !(0.0..=0.5).contains(&jitter) {
        return Err(ConfigError::new(
            file,
            format!("{key}.jitter"),
            format!("{jitter} is out of range (0 to 0.5)"),
        ));
    }
    let min_up = raw.min_up.unwrap_or(1) as usize;
    if min_up == 0 || min_up > targets.len() {
        return Err(ConfigError::new(
            file,
            format!("{key}.min_up"),
            format!(
                "{min_up} is out of range (1 to {}, the number of targets)",
                targets.len()
            ),
        ));
    }
    Ok(ProbeSpec {
        kind,
        targets,
        interval,
        timeout,
        rise,
        fall,
        jitter,
        min_up,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("5s"), Some(Duration::from_secs(5)));
        assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_duration("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Some(Duration::from_secs(120)));
        assert_eq!(parse_duration("5"), None);
        assert_eq!(parse_duration("-1s"), None);
        assert_eq!(parse_duration("1d"), Some(Duration::from_secs(86_400)));
        assert_eq!(parse_duration("1w"), None);
    }
}
