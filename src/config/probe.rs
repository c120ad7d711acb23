//! `[datacenters.NAME.probe]`: health probe settings.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use super::ConfigError;
use super::raw::RawProbe;
use crate::dns::records::parse_name;
use crate::model::{
    DnsProbe, ExecProbe, GrpcProbe, HttpMethod, HttpProbe, IcmpProbe, ProbeKind, ProbeSpec,
    ProbeTls,
};

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
/// Largest `min_cert_days` accepted (about ten years).
pub const MAX_CERT_DAYS: u32 = 3650;
/// Most arguments (program included) an exec probe's command may have.
pub const MAX_COMMAND_ARGS: usize = 256;

/// Reads an exec probe's `command`: an array of strings, the program
/// first. A string is refused: the command never runs through a shell,
/// so splitting and quoting would be guesswork.
fn command(
    file: &Path,
    key: &str,
    value: Option<&toml::Value>,
) -> Result<Vec<String>, ConfigError> {
    let err = |reason: String| ConfigError::new(file, key, reason);
    let items = match value {
        None => return Err(err("required for exec probes".into())),
        Some(toml::Value::String(s)) => {
            return Err(err(format!(
                "{s:?} is a string; give an array of the program and its arguments, \
                 such as [\"/usr/local/bin/check\", \"--quick\"] (no shell runs it)"
            )));
        }
        Some(toml::Value::Array(items)) => items,
        Some(_) => {
            return Err(err(
                "an array of the program and its arguments, such as [\"/usr/local/bin/check\"]"
                    .into(),
            ));
        }
    };
    if items.is_empty() {
        return Err(err("empty; give at least the program".into()));
    }
    if items.len() > MAX_COMMAND_ARGS {
        return Err(err(format!(
            "{} arguments; at most {MAX_COMMAND_ARGS}",
            items.len()
        )));
    }
    let mut argv = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let toml::Value::String(s) = item else {
            return Err(ConfigError::new(
                file,
                format!("{key}[{i}]"),
                "must be a string",
            ));
        };
        if s.contains('\0') {
            return Err(ConfigError::new(
                file,
                format!("{key}[{i}]"),
                "contains a NUL byte",
            ));
        }
        argv.push(s.clone());
    }
    let program = &argv[0];
    if program.is_empty() {
        return Err(ConfigError::new(
            file,
            format!("{key}[0]"),
            "the program is empty",
        ));
    }
    // A path is checked now; a bare name is looked up in PATH when run.
    if program.contains('/') {
        use std::os::unix::fs::PermissionsExt;
        match std::fs::metadata(program) {
            Err(e) => {
                return Err(ConfigError::new(
                    file,
                    format!("{key}[0]"),
                    format!("{program}: {e}"),
                ));
            }
            Ok(m) if !m.is_file() || m.permissions().mode() & 0o111 == 0 => {
                return Err(ConfigError::new(
                    file,
                    format!("{key}[0]"),
                    format!("{program} is not an executable file"),
                ));
            }
            Ok(_) => {}
        }
    }
    Ok(argv)
}

/// A `host` must be a DNS name or an address: it becomes the TLS server
/// name and the request authority.
fn check_host(file: &Path, key: &str, host: &str) -> Result<(), ConfigError> {
    if host.parse::<IpAddr>().is_ok()
        || rustls::pki_types::ServerName::try_from(host.to_string()).is_ok()
    {
        Ok(())
    } else {
        Err(ConfigError::new(
            file,
            key,
            format!("{host:?} is not a host name or address"),
        ))
    }
}

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
        // ICMP has no ports; an exec command may not need one.
        "icmp" | "exec" => Some(0),
        "tcp" | "grpc" | "external" => None,
        other => {
            return Err(ConfigError::new(
                file,
                format!("{key}.type"),
                format!(
                    "unknown probe type {other:?} (available: http, https, tcp, dns, icmp, grpc, exec, external)"
                ),
            ));
        }
    };
    let is_http = matches!(kind_name, "http" | "https");
    for (field, present) in [
        ("method", raw.method.is_some()),
        ("path", raw.path.is_some()),
        ("expect_status", raw.expect_status.is_some()),
        ("expect_body", raw.expect_body.is_some()),
        ("capacity_hold", raw.capacity_hold.is_some()),
    ] {
        if !is_http {
            not_for(file, key, field, present, kind_name)?;
        }
    }
    if !matches!(kind_name, "http" | "https" | "grpc") {
        not_for(file, key, "host", raw.host.is_some(), kind_name)?;
    }
    if !matches!(kind_name, "https" | "grpc") {
        not_for(file, key, "tls_verify", raw.tls_verify.is_some(), kind_name)?;
        not_for(
            file,
            key,
            "min_cert_days",
            raw.min_cert_days.is_some(),
            kind_name,
        )?;
    }
    if kind_name != "grpc" {
        not_for(file, key, "service", raw.service.is_some(), kind_name)?;
        not_for(file, key, "tls", raw.tls.is_some(), kind_name)?;
    }
    if kind_name != "exec" {
        not_for(file, key, "command", raw.command.is_some(), kind_name)?;
    }
    if kind_name == "icmp" {
        not_for(file, key, "port", raw.port.is_some(), kind_name)?;
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
    let min_cert_days = match raw.min_cert_days {
        None => None,
        Some(d) => Some(
            u32::try_from(d)
                .ok()
                .filter(|d| *d <= MAX_CERT_DAYS)
                .ok_or_else(|| {
                    ConfigError::new(
                        file,
                        format!("{key}.min_cert_days"),
                        format!("{d} is out of range (0 to {MAX_CERT_DAYS})"),
                    )
                })?,
        ),
    };
    // https and TLS grpc: one set of certificate settings.
    let tls_settings = |min_cert_days| ProbeTls {
        verify: raw.tls_verify.unwrap_or(true),
        min_cert_days,
    };
    let kind = match kind_name {
        "tcp" => ProbeKind::Tcp,
        "external" => ProbeKind::External,
        "icmp" => {
            let socket = crate::health::probe::icmp::choose_socket(
                &crate::health::probe::icmp::Facts::read(),
            )
            .map_err(|e| ConfigError::new(file, format!("{key}.type"), e))?;
            ProbeKind::Icmp(IcmpProbe { socket })
        }
        "exec" => ProbeKind::Exec(ExecProbe {
            command: command(file, &format!("{key}.command"), raw.command.as_ref())?,
        }),
        "grpc" => {
            let tls = raw.tls.unwrap_or(false);
            let settings = tls_settings(min_cert_days);
            if !tls {
                for (field, present) in [
                    ("tls_verify", raw.tls_verify.is_some()),
                    ("min_cert_days", raw.min_cert_days.is_some()),
                ] {
                    if present {
                        return Err(ConfigError::new(
                            file,
                            format!("{key}.{field}"),
                            "applies to grpc probes with `tls = true` only",
                        ));
                    }
                }
            }
            if let Some(host) = &raw.host {
                check_host(file, &format!("{key}.host"), host)?;
            }
            ProbeKind::Grpc(GrpcProbe {
                service: raw.service.clone().unwrap_or_default(),
                host: raw.host.clone(),
                tls: tls.then_some(settings),
            })
        }
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
            if let Some(host) = &raw.host {
                check_host(file, &format!("{key}.host"), host)?;
                // The URL's host is where an HTTP client connects when it
                // is an address: the probe would bypass the target.
                if host.parse::<IpAddr>().is_ok() {
                    return Err(ConfigError::new(
                        file,
                        format!("{key}.host"),
                        format!(
                            "{host:?} is an address; `host` is a name for the Host header and TLS, \
                             the connection goes to the target address (leave `host` out to send that)"
                        ),
                    ));
                }
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
                tls: (kind_name == "https").then(|| tls_settings(min_cert_days)),
                method,
                path,
                host: raw.host.clone(),
                expect_status,
                expect_body: raw.expect_body.clone(),
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
                    (Ok(a), _, _) if kind_name == "icmp" && a.port() != 0 => {
                        return Err(ConfigError::new(
                            file,
                            k,
                            format!("{t:?}: ICMP has no ports; give the address alone"),
                        ));
                    }
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
                    format!("required for {kind_name} probes without `targets`"),
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
    use crate::model::IcmpSocket;

    /// A zone whose datacenter `a` has the probe table `p`.
    fn zone(p: &str) -> Result<crate::config::ZoneConfig, ConfigError> {
        let text = format!(
            r#"
origin = "t.example."
ns = ["ns1.t.example."]
[soa]
rname = "hostmaster.t.example."
serial = 1
[records]
ns1 = [{{ type = "A", value = "192.0.2.53" }}]
[datacenters.a]
addresses = ["192.0.2.1", "2001:db8::1"]
probe = {{ {p} }}
[services.www]
policy = "failover"
datacenters = ["a"]
"#
        );
        super::super::parse_zone(Path::new("zones/t.toml"), &text)
    }

    fn kind(p: &str) -> ProbeKind {
        zone(p).expect("valid").datacenters[0]
            .probe
            .clone()
            .expect("probe")
            .kind
    }

    /// The error for probe table `p`: its key (after `datacenters.a.probe.`)
    /// and reason.
    fn err(p: &str) -> (String, String) {
        let e = zone(p).expect_err("must be rejected");
        assert_eq!(e.file, Path::new("zones/t.toml"));
        let key = e
            .key
            .strip_prefix("datacenters.a.probe.")
            .unwrap_or(&e.key)
            .to_string();
        (key, e.reason)
    }

    #[test]
    fn exec_takes_an_argv_array_never_a_string() {
        let ProbeKind::Exec(e) = kind(r#"type = "exec", command = ["/bin/sh", "-c", "exit 0"]"#)
        else {
            panic!("exec")
        };
        assert_eq!(e.command, ["/bin/sh", "-c", "exit 0"]);
        let spec = zone(r#"type = "exec", command = ["true"]"#)
            .expect("valid")
            .datacenters[0]
            .probe
            .clone()
            .expect("probe");
        // No port needed: each answer address, port 0.
        assert_eq!(
            spec.targets,
            [
                "192.0.2.1:0".parse().unwrap(),
                "[2001:db8::1]:0".parse().unwrap()
            ]
        );

        let (key, reason) = err(r#"type = "exec", command = "/bin/check --fast""#);
        assert_eq!(key, "command");
        assert!(
            reason.contains("array") && reason.contains("shell"),
            "{reason}"
        );
        assert_eq!(err(r#"type = "exec""#).0, "command");
        assert_eq!(err(r#"type = "exec", command = []"#).0, "command");
        assert_eq!(
            err(r#"type = "exec", command = ["/bin/sh", 1]"#).0,
            "command[1]"
        );
        assert_eq!(err(r#"type = "exec", command = [""]"#).0, "command[0]");
        let (key, reason) = err(r#"type = "exec", command = ["/nonexistent/check"]"#);
        assert_eq!(key, "command[0]");
        assert!(reason.contains("/nonexistent/check"), "{reason}");
        let plain = tempfile::NamedTempFile::new().expect("temp file");
        let (key, reason) = err(&format!(
            r#"type = "exec", command = ["{}"]"#,
            plain.path().display()
        ));
        assert_eq!(key, "command[0]");
        assert!(reason.contains("not an executable"), "{reason}");
        let (key, reason) = err(r#"type = "tcp", port = 1, command = ["true"]"#);
        assert_eq!(key, "command");
        assert!(reason.contains("does not apply to tcp"), "{reason}");
    }

    #[test]
    fn min_cert_days_is_ranged_and_needs_tls() {
        let ProbeKind::Http(h) = kind(r#"type = "https", min_cert_days = 7"#) else {
            panic!("https")
        };
        assert_eq!(
            h.tls,
            Some(ProbeTls {
                verify: true,
                min_cert_days: Some(7)
            })
        );
        let ProbeKind::Http(h) = kind(r#"type = "https""#) else {
            panic!("https")
        };
        assert_eq!(h.tls.and_then(|t| t.min_cert_days), None);
        assert!(matches!(
            kind(r#"type = "https", min_cert_days = 3650"#),
            ProbeKind::Http(_)
        ));
        for bad in ["-1", "3651"] {
            let (key, reason) = err(&format!(r#"type = "https", min_cert_days = {bad}"#));
            assert_eq!(key, "min_cert_days");
            assert!(reason.contains("out of range (0 to 3650)"), "{reason}");
        }
        assert_eq!(
            err(r#"type = "http", min_cert_days = 7"#).0,
            "min_cert_days"
        );
        let (key, reason) = err(r#"type = "grpc", port = 50051, min_cert_days = 7"#);
        assert_eq!(key, "min_cert_days");
        assert!(reason.contains("tls = true"), "{reason}");
    }

    #[test]
    fn an_exec_probe_measures_no_rtt_for_latency_services() {
        let text = r#"
origin = "t.example."
ns = ["ns1.t.example."]
[soa]
rname = "hostmaster.t.example."
serial = 1
[records]
ns1 = [{ type = "A", value = "192.0.2.53" }]
[datacenters.a]
addresses = ["192.0.2.1"]
probe = { type = "exec", command = ["true"] }
[services.www]
policy = "latency"
source = "probes"
datacenters = ["a"]
"#;
        let e = super::super::parse_zone(Path::new("zones/t.toml"), text)
            .expect_err("exec times are no RTTs");
        assert_eq!(e.key, "datacenters.a.probe");
        assert!(e.reason.contains("exec"), "{e}");
        let grpc = text.replace(
            r#"{ type = "exec", command = ["true"] }"#,
            r#"{ type = "grpc", port = 50051 }"#,
        );
        super::super::parse_zone(Path::new("zones/t.toml"), &grpc).expect("grpc measures");
    }

    #[test]
    fn grpc_settings() {
        let ProbeKind::Grpc(g) = kind(r#"type = "grpc", port = 50051"#) else {
            panic!("grpc")
        };
        assert_eq!(
            (g.service.as_str(), g.host.as_deref(), g.tls),
            ("", None, None)
        );
        let ProbeKind::Grpc(g) = kind(
            r#"type = "grpc", port = 443, service = "shop.Cart", tls = true, host = "api.example", tls_verify = false, min_cert_days = 14"#,
        ) else {
            panic!("grpc")
        };
        assert_eq!(g.service, "shop.Cart");
        assert_eq!(g.host.as_deref(), Some("api.example"));
        assert_eq!(
            g.tls,
            Some(ProbeTls {
                verify: false,
                min_cert_days: Some(14)
            })
        );
        assert_eq!(err(r#"type = "grpc""#).0, "port");
        assert_eq!(err(r#"type = "grpc", port = 1, path = "/""#).0, "path");
        assert_eq!(
            err(r#"type = "grpc", port = 1, tls_verify = false"#).0,
            "tls_verify"
        );
        assert_eq!(err(r#"type = "grpc", port = 1, host = "a b""#).0, "host");
        assert_eq!(err(r#"type = "https", service = "x""#).0, "service");
        assert_eq!(err(r#"type = "https", tls = true"#).0, "tls");
        assert_eq!(err(r#"type = "tcp", port = 1, host = "x""#).0, "host");
        // http and https: a host name, never an address (the client would
        // connect there, not to the target).
        for bad in [
            "a b",
            "api.example:8443",
            "https://api.example",
            "192.0.2.9",
            "2001:db8::9",
        ] {
            for kind in ["http", "https"] {
                let (key, reason) = err(&format!(r#"type = "{kind}", host = "{bad}""#));
                assert_eq!(key, "host", "{kind} {bad}");
                assert!(reason.contains(bad), "{reason}");
            }
        }
        let ProbeKind::Http(h) = kind(r#"type = "https", host = "api.example""#) else {
            panic!("https")
        };
        assert_eq!(h.host.as_deref(), Some("api.example"));
    }

    #[test]
    fn icmp_has_no_ports_and_needs_a_socket_this_process_may_open() {
        let facts = crate::health::probe::icmp::Facts::read();
        match crate::health::probe::icmp::choose_socket(&facts) {
            Ok(socket) => {
                let spec = zone(r#"type = "icmp""#).expect("valid").datacenters[0]
                    .probe
                    .clone()
                    .expect("probe");
                assert_eq!(
                    spec.kind,
                    ProbeKind::Icmp(crate::model::IcmpProbe { socket })
                );
                assert!(matches!(socket, IcmpSocket::Datagram | IcmpSocket::Raw));
                assert_eq!(spec.targets[0], "192.0.2.1:0".parse().unwrap());
                assert_eq!(err(r#"type = "icmp", port = 7"#).0, "port");
                let (key, reason) = err(r#"type = "icmp", targets = ["127.0.0.1:80"]"#);
                assert_eq!(key, "targets[0]");
                assert!(reason.contains("no ports"), "{reason}");
            }
            Err(expected) => {
                let (key, reason) = err(r#"type = "icmp""#);
                assert_eq!(key, "type");
                assert_eq!(reason, expected);
            }
        }
    }

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
