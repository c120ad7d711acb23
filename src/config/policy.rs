//! `policy` of a service: one step name, or a chain of steps, and the
//! keys that only some steps use (`weights`, `sticky_prefix_v4/v6`, the
//! geo overrides). Checked here into a [`PolicySpec`].

use std::path::Path;

use super::ConfigError;
use super::raw::RawService;
use super::validate::{check_range, key_part, parse_country, resolve_dcs, validate_networks};
use crate::model::{
    Attribute, Continent, DcId, GeoSpec, LatencySource, PolicySpec, Step, ZoneConfig,
};

/// Most datacenters in one service: a query ranks them in a fixed-size
/// buffer, so it never allocates.
pub const MAX_SERVICE_DATACENTERS: usize = crate::policy::MAX_CANDIDATES;

/// Default prefix lengths that `sticky` hashes (IPv4, IPv6).
pub const DEFAULT_STICKY_PREFIX: (u8, u8) = (24, 56);

/// Largest weight.
pub const MAX_WEIGHT: u32 = 1_000_000;

const STEP_NAMES: &str = "\"geo\", \"latency\", \"failover\", \"weighted\", \"sticky\"";
const STEP_TABLES: &str = "{ nearest = N }, { within_km = KM }, { same = \"continent\" | \"country\" }, { prefer = [datacenters] }";

/// Validates the policy keys of the service at `key`.
pub(super) fn validate_policy(
    file: &Path,
    key: &str,
    zone: &ZoneConfig,
    name: &str,
    datacenters: &[DcId],
    raw: &RawService,
) -> Result<PolicySpec, ConfigError> {
    let pkey = format!("{key}.policy");
    if datacenters.len() > MAX_SERVICE_DATACENTERS {
        return Err(ConfigError::new(
            file,
            format!("{key}.datacenters"),
            format!(
                "{} datacenters; a service may have at most {MAX_SERVICE_DATACENTERS}",
                datacenters.len()
            ),
        ));
    }
    let steps = match &raw.policy {
        toml::Value::String(s) => vec![named_step(file, &pkey, s)?],
        toml::Value::Array(items) if !items.is_empty() => items
            .iter()
            .enumerate()
            .map(|(i, v)| step(file, &format!("{pkey}[{i}]"), zone, datacenters, v))
            .collect::<Result<Vec<_>, _>>()?,
        _ => {
            return Err(ConfigError::new(
                file,
                pkey,
                format!("a step name ({STEP_NAMES}) or a non-empty array of steps"),
            ));
        }
    };
    let has = |f: fn(&Step) -> bool| steps.iter().any(f);
    let geo = has(|s| matches!(s, Step::Geo));
    let balances = has(|s| matches!(s, Step::Weighted | Step::Sticky));
    let sticky = has(|s| matches!(s, Step::Sticky));
    let latency = has(|s| matches!(s, Step::Latency));
    let only_for = |field: &str, present: bool, ok: bool, what: &str| {
        if present && !ok {
            Err(ConfigError::new(
                file,
                format!("{key}.{field}"),
                format!("only used by {what}; this service's policy has none"),
            ))
        } else {
            Ok(())
        }
    };
    for (field, present) in [
        ("default", raw.default.is_some()),
        ("countries", !raw.countries.is_empty()),
        ("continents", !raw.continents.is_empty()),
        ("networks", !raw.networks.is_empty()),
    ] {
        only_for(field, present, geo, "a \"geo\" step")?;
    }
    only_for(
        "weights",
        !raw.weights.is_empty(),
        balances,
        "\"weighted\" and \"sticky\" steps",
    )?;
    for (field, v) in [
        ("sticky_prefix_v4", raw.sticky_prefix_v4),
        ("sticky_prefix_v6", raw.sticky_prefix_v6),
    ] {
        only_for(field, v.is_some(), sticky, "a \"sticky\" step")?;
    }
    only_for(
        "source",
        raw.source.is_some(),
        latency,
        "a \"latency\" step",
    )?;
    let latency_source = match raw.source.as_deref() {
        None | Some("clients") => LatencySource::Clients,
        Some("probes") => LatencySource::Probes,
        Some(other) => {
            return Err(ConfigError::new(
                file,
                format!("{key}.source"),
                format!(
                    "{other:?}: \"clients\" (measurements and estimates of the client network's RTT) or \"probes\" (this instance's probe RTTs)"
                ),
            ));
        }
    };

    let needs_location = has(|s| matches!(s, Step::Geo | Step::WithinKm(_)))
        || (latency && latency_source == LatencySource::Clients);
    for &id in datacenters {
        let dc = zone.dc(id);
        if needs_location && dc.location.is_none() {
            return Err(ConfigError::new(
                file,
                format!("datacenters.{}.location", key_part(&dc.name)),
                format!(
                    "missing; service {name:?} ranks by distance to it (a \"latency\" step estimates RTTs from distance where nothing is measured)"
                ),
            ));
        }
        let measures = dc
            .probe
            .as_ref()
            // An exec probe's time is its command's run time, not an RTT.
            .is_some_and(|p| {
                !matches!(
                    p.kind,
                    crate::model::ProbeKind::External | crate::model::ProbeKind::Exec(_)
                )
            });
        if latency && latency_source == LatencySource::Probes && !measures {
            return Err(ConfigError::new(
                file,
                format!("datacenters.{}.probe", key_part(&dc.name)),
                format!(
                    "missing, external or exec; service {name:?} ranks by probe RTT (source = \"probes\"), which needs a tcp, http, https, dns, icmp or grpc probe"
                ),
            ));
        }
        if has(|s| matches!(s, Step::Same(_))) && dc.country.is_none() {
            return Err(ConfigError::new(
                file,
                format!("datacenters.{}.country", key_part(&dc.name)),
                format!(
                    "missing; service {name:?} has a \"same\" step, which compares it with the client's"
                ),
            ));
        }
    }

    if latency && latency_source == LatencySource::Probes {
        let kind = |id: DcId| zone.dc(id).probe.as_ref().map(|p| p.kind.type_name());
        if let Some(&first) = datacenters.first()
            && let Some(&other) = datacenters.iter().find(|&&d| kind(d) != kind(first))
        {
            return Err(ConfigError::new(
                file,
                format!("datacenters.{}.probe.type", key_part(&zone.dc(other).name)),
                format!(
                    "{:?}, but {:?} is probed with {:?}: service {name:?} compares probe RTTs \
                     (source = \"probes\"), and a tcp connect, an http request and an https \
                     handshake take different numbers of round trips; probe them alike",
                    kind(other).unwrap_or("none"),
                    zone.dc(first).name,
                    kind(first).unwrap_or("none"),
                ),
            ));
        }
    }

    let geo_spec = if geo {
        validate_geo(file, key, zone, datacenters, raw)?
    } else {
        GeoSpec {
            default: datacenters.to_vec(),
            ..GeoSpec::default()
        }
    };

    let mut weights = vec![1u32; datacenters.len()];
    for (dc, &w) in &raw.weights {
        let wkey = format!("{key}.weights.{}", key_part(dc));
        let Some(pos) = zone
            .dc_by_name(dc)
            .and_then(|id| datacenters.iter().position(|&d| d == id))
        else {
            return Err(ConfigError::new(
                file,
                wkey,
                format!("{dc:?} is not one of this service's datacenters"),
            ));
        };
        let w = check_range(file, &wkey, w, 0, i64::from(MAX_WEIGHT))?;
        weights[pos] = u32::try_from(w).unwrap_or(MAX_WEIGHT);
    }
    if balances && weights.iter().all(|&w| w == 0) {
        return Err(ConfigError::new(
            file,
            format!("{key}.weights"),
            "every weight is 0: at least one datacenter must take traffic",
        ));
    }
    let prefix = |field: &str, v: Option<i64>, default: u8, max: i64| {
        let v = check_range(
            file,
            &format!("{key}.{field}"),
            v.unwrap_or(i64::from(default)),
            0,
            max,
        )?;
        Ok::<u8, ConfigError>(u8::try_from(v).unwrap_or(default))
    };
    let sticky_prefix = (
        prefix(
            "sticky_prefix_v4",
            raw.sticky_prefix_v4,
            DEFAULT_STICKY_PREFIX.0,
            32,
        )?,
        prefix(
            "sticky_prefix_v6",
            raw.sticky_prefix_v6,
            DEFAULT_STICKY_PREFIX.1,
            128,
        )?,
    );
    Ok(PolicySpec {
        steps,
        geo: geo_spec,
        weights,
        sticky_prefix,
        latency_source,
    })
}

fn named_step(file: &Path, key: &str, name: &str) -> Result<Step, ConfigError> {
    Ok(match name {
        "geo" => Step::Geo,
        "failover" => Step::Failover,
        "weighted" => Step::Weighted,
        "sticky" => Step::Sticky,
        "latency" => Step::Latency,
        other => {
            return Err(ConfigError::new(
                file,
                key,
                format!("unknown policy {other:?} (available: {STEP_NAMES}, or a chain of steps)"),
            ));
        }
    })
}

fn step(
    file: &Path,
    key: &str,
    zone: &ZoneConfig,
    datacenters: &[DcId],
    value: &toml::Value,
) -> Result<Step, ConfigError> {
    let entry = match value {
        toml::Value::String(s) => return named_step(file, key, s),
        toml::Value::Table(t) if t.len() == 1 => t.iter().next(),
        _ => None,
    };
    let Some((k, v)) = entry else {
        return Err(ConfigError::new(
            file,
            key,
            format!("a step is a name ({STEP_NAMES}) or a table with one key ({STEP_TABLES})"),
        ));
    };
    let skey = format!("{key}.{k}");
    let bad = |what: &str| Err(ConfigError::new(file, skey.clone(), what.to_string()));
    match (k.as_str(), v) {
        ("nearest", toml::Value::Integer(n)) => {
            let n = check_range(file, &skey, *n, 1, MAX_SERVICE_DATACENTERS as i64)?;
            Ok(Step::Nearest(n as usize))
        }
        ("nearest", _) => bad("a whole number of datacenters, at least 1"),
        ("within_km", toml::Value::Integer(_) | toml::Value::Float(_)) => {
            let km = v
                .as_float()
                .or(v.as_integer().map(|i| i as f64))
                .unwrap_or(-1.0);
            if !(0.0..=20_100.0).contains(&km) {
                return bad("a distance in km from 0 to 20100");
            }
            Ok(Step::WithinKm(km))
        }
        ("within_km", _) => bad("a distance in km from 0 to 20100"),
        ("same", toml::Value::String(s)) if s == "continent" => {
            Ok(Step::Same(Attribute::Continent))
        }
        ("same", toml::Value::String(s)) if s == "country" => Ok(Step::Same(Attribute::Country)),
        ("same", _) => bad("\"continent\" or \"country\""),
        ("prefer", toml::Value::Array(items)) => {
            let names = items
                .iter()
                .map(|i| i.as_str().map(str::to_string))
                .collect::<Option<Vec<_>>>();
            match names {
                Some(names) => Ok(Step::Prefer(resolve_dcs(
                    file,
                    &skey,
                    zone,
                    &names,
                    Some(datacenters),
                )?)),
                None => bad("an array of datacenter names"),
            }
        }
        ("prefer", _) => bad("an array of datacenter names"),
        (other, _) => Err(ConfigError::new(
            file,
            key,
            format!("unknown step {other:?} (available: {STEP_TABLES})"),
        )),
    }
}

fn validate_geo(
    file: &Path,
    key: &str,
    zone: &ZoneConfig,
    datacenters: &[DcId],
    raw: &RawService,
) -> Result<GeoSpec, ConfigError> {
    let allowed = Some(datacenters);
    let default = match &raw.default {
        Some(list) => resolve_dcs(file, &format!("{key}.default"), zone, list, allowed)?,
        None => datacenters.to_vec(),
    };
    let mut countries = Vec::new();
    for (cc, list) in &raw.countries {
        let ckey = format!("{key}.countries.{}", key_part(cc));
        let code = parse_country(file, &ckey, cc)?;
        countries.push((code, resolve_dcs(file, &ckey, zone, list, allowed)?));
    }
    let mut continents = Vec::new();
    for (cc, list) in &raw.continents {
        let ckey = format!("{key}.continents.{}", key_part(cc));
        let code = Continent::parse(cc)
            .filter(|c| c.code() == cc)
            .ok_or_else(|| {
                ConfigError::new(
                    file,
                    ckey.clone(),
                    "not a continent code (AF, AN, AS, EU, NA, OC, SA)",
                )
            })?;
        continents.push((code, resolve_dcs(file, &ckey, zone, list, allowed)?));
    }
    let networks = validate_networks(file, key, zone, &raw.networks, allowed)?;
    Ok(GeoSpec {
        countries,
        continents,
        networks,
        default,
    })
}
