//! `meridian explain`: why a client gets the answer it gets.
//!
//! The answer and ECS scope come from the real query handler, fed a real
//! query packet carrying the client as EDNS Client Subnet. The steps come
//! from the service's [`crate::policy::Plan::decide`], replayed with the
//! handler's inputs and a tracer: the same pure call the handler made.

use std::fmt::Write as _;
use std::net::IpAddr;

use serde::Serialize;

use crate::dns::envelope::Envelope;
use crate::dns::{self, Transport};
use crate::geo::distance::distance_km;
use crate::model::{Coord, DcId};
use crate::policy::geo::Rule;
use crate::policy::{Client, Outcome, Trace};
use crate::snapshot::Snapshot;

/// Parses `IP` or `IP/PREFIX`. A bare IPv4 address means /24 and a bare
/// IPv6 address /56, the prefixes resolvers commonly send.
///
/// ```
/// use meridian::explain::parse_client;
///
/// assert_eq!(parse_client("192.0.2.7").unwrap(), ("192.0.2.7".parse().unwrap(), 24));
/// assert_eq!(parse_client("2001:db8::/48").unwrap().1, 48);
/// assert!(parse_client("192.0.2.0/40").is_err());
/// ```
pub fn parse_client(text: &str) -> Result<(IpAddr, u8), String> {
    let (ip, prefix) = match text.split_once('/') {
        Some((ip, p)) => (ip, Some(p)),
        None => (text, None),
    };
    let ip: IpAddr = ip
        .parse()
        .map_err(|_| format!("{text:?} is not an IP address or IP/PREFIX"))?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let prefix = match prefix {
        Some(p) => p
            .parse::<u8>()
            .ok()
            .filter(|&p| p <= max)
            .ok_or_else(|| format!("prefix in {text:?} must be 0 to {max}"))?,
        None if ip.is_ipv4() => 24,
        None => 56,
    };
    Ok((ip, prefix))
}

fn fmt_coord(c: Coord) -> String {
    format!("{:.2},{:.2}", c.lat, c.lon)
}

/// Why a client gets its answer: the real decision with its trace, and
/// the real response. Serialised as JSON by the admin API's `/explain`.
#[derive(Clone, Debug, Serialize)]
pub struct Explanation {
    /// `NAME TYPE`.
    pub query: String,
    /// The client network.
    pub client: String,
    /// Whether the client was sent as EDNS Client Subnet; a private
    /// address is sent as the query's source instead (RFC 7871 §10).
    pub sent_as_ecs: bool,
    /// Where the GeoIP database places the client.
    pub location: Option<Place>,
    /// The service behind the name, when one decides the answer.
    pub service: Option<ServiceTrace>,
    /// The response as a resolver sees it.
    pub answer: dns::Summary,
}

/// A GeoIP location.
#[derive(Clone, Debug, Serialize)]
pub struct Place {
    /// ISO country code.
    pub country: Option<String>,
    /// Continent code.
    pub continent: Option<String>,
    /// `lat,lon`.
    pub coordinates: Option<String>,
    /// Whether the coordinates are the country centroid.
    pub country_centroid: bool,
    /// The database network that matched.
    pub network: Option<String>,
}

/// A service's decision and how it was reached.
#[derive(Clone, Debug, Serialize)]
pub struct ServiceTrace {
    /// Service name (key under `[services]`).
    pub name: String,
    /// Zone origin.
    pub zone: String,
    /// The policy chain.
    pub policy: String,
    /// For geo chains: the rule that set the geo order.
    pub geo_rule: Option<String>,
    /// Every stage, in order.
    pub stages: Vec<StageTrace>,
    /// The chosen datacenters.
    pub chosen: Vec<String>,
    /// `answer`, `nodata`, `servfail` or `fallback`.
    pub outcome: String,
    /// Whether the answer differs from the all-healthy one.
    pub degraded: bool,
    /// TTL of the answer.
    pub ttl: u32,
    /// ECS scope, in the client's family.
    pub scope: u8,
}

/// One stage of a decision.
#[derive(Clone, Debug, Serialize)]
pub struct StageTrace {
    /// Step name.
    pub step: String,
    /// Candidates after it, best first, with distance from the client.
    pub candidates: Vec<Candidate>,
    /// How many candidates form the first tier.
    pub first_tier: usize,
    /// ECS scope so far.
    pub scope: u8,
    /// What the step looked at.
    pub note: String,
}

/// A candidate datacenter at a stage.
#[derive(Clone, Debug, Serialize)]
pub struct Candidate {
    /// Datacenter name.
    pub name: String,
    /// Great-circle distance from the client, when both are located.
    pub km: Option<f64>,
    /// Health stage only: whether answers may use it.
    pub usable: Option<bool>,
}

/// Explains `name`/`qtype` as seen from `client`: sends the real handler
/// a real query carrying the client as ECS, and replays the service's
/// decision with the same inputs (client, health, per-query randomness)
/// and a tracer, so the trace is of the decision that was answered.
pub fn explain_decision(
    snap: &Snapshot,
    name: &str,
    qtype: &str,
    client: (IpAddr, u8),
) -> Result<Explanation, String> {
    let (ip, prefix) = client;
    let net = ipnet::IpNet::new(ip, prefix).map_err(|e| e.to_string())?;
    let fqdn = if name.ends_with('.') {
        name.to_string()
    } else {
        format!("{name}.")
    };
    let qtype = qtype.to_ascii_uppercase();
    let (db_net, loc) = snap.geo.lookup(net.network());
    let location = loc.map(|l| Place {
        country: l.country.map(|c| c.to_string()),
        continent: l.continent.map(|c| c.to_string()),
        coordinates: l.coord.map(fmt_coord),
        country_centroid: !l.coord_from_db,
        network: db_net.map(|n| n.to_string()),
    });

    // A private address in ECS is not routed on (RFC 7871 §10): explain
    // such a client as the source of the query instead, as when it asks
    // Meridian directly.
    let (src, ecs) = if crate::dns::envelope::private(ip) {
        (ip, None)
    } else {
        (dns::EXPLAIN_SOURCE.ip(), Some((net.network(), prefix)))
    };
    let packet = dns::build_query(&fqdn, &qtype, ecs, 0x4d45)?;
    let response =
        dns::handle(snap, &packet, src, Transport::Tcp).ok_or("the handler sent no response")?;
    let summary = dns::summarize(&response)?;
    let env = Envelope::scan(&packet).ok_or("unreadable query")?;
    let entropy = env.entropy(snap.seed, src);
    // The address the handler routed on (the ECS address, or the source
    // for a private one or a /0 prefix).
    let routed = env.client_addr(src);

    // The service behind the name (directly or through an in-zone CNAME).
    let lower = fqdn.to_ascii_lowercase();
    let mut service = None;
    'zones: for (zi, zone) in snap.zones().iter().enumerate() {
        let zc = &zone.config;
        // The service whose name answers, wildcards included.
        let answering = zone.service_at(&fqdn);
        for (si, svc) in zc.services.iter().enumerate() {
            let svc_name = svc.fqdn.to_ascii().to_ascii_lowercase();
            if answering != Some(si)
                && svc_name != lower
                && !summary.cname_targets.contains(&svc_name)
            {
                continue;
            }
            let Some(plan) = snap.plan(zi, si) else {
                continue;
            };
            let mut trace = Trace::default();
            let client = Client { addr: routed };
            let latency = crate::policy::Latency {
                view: &snap.latency,
                zone: zi,
            };
            let d = plan.decide_with(&client, snap.health.zone(zi), latency, entropy, &mut trace);
            let names = |ids: &[DcId]| ids.iter().map(|&i| zc.dc(i).name.clone()).collect();
            let km = |id: DcId| match (loc.and_then(|l| l.coord), zc.dc(id).location) {
                (Some(a), Some(b)) => Some((distance_km(a, b)).round()),
                _ => None,
            };
            let geo_rule = plan
                .geo()
                .filter(|_| svc.policy.steps.contains(&crate::model::Step::Geo))
                .map(|g| {
                    match g
                        .network_override(net.network())
                        .map(Rule::Network)
                        .unwrap_or_else(|| g.rank_location(loc.as_ref()).1)
                    {
                        Rule::Network(n) => format!("network override {n}"),
                        Rule::Country(c) => format!("country override {c}"),
                        Rule::Continent(c) => format!("continent override {c}"),
                        Rule::Distance => "nearest first by great-circle distance".into(),
                        Rule::Default => "location unknown: the service's default order".into(),
                    }
                });
            service = Some(ServiceTrace {
                name: svc.name.clone(),
                zone: zc.origin.to_string(),
                policy: svc.policy.name(),
                geo_rule,
                stages: trace
                    .stages
                    .iter()
                    .map(|s| StageTrace {
                        step: s.name.clone(),
                        candidates: s
                            .order
                            .iter()
                            .enumerate()
                            .map(|(i, &id)| Candidate {
                                name: zc.dc(id).name.clone(),
                                km: km(id),
                                usable: s.usable.get(i).copied(),
                            })
                            .collect(),
                        first_tier: s.first_tier,
                        scope: s.scope,
                        note: s.note.clone(),
                    })
                    .collect(),
                chosen: names(d.dcs()),
                outcome: match d.outcome {
                    Outcome::Answer => "answer",
                    Outcome::NoData => "nodata",
                    Outcome::ServFail => "servfail",
                    Outcome::Fallback => "fallback",
                }
                .into(),
                degraded: d.choice.degraded,
                ttl: d.ttl,
                scope: d.scope,
            });
            break 'zones;
        }
    }
    Ok(Explanation {
        query: format!("{fqdn} {qtype}"),
        client: net.trunc().to_string(),
        sent_as_ecs: ecs.is_some(),
        location,
        service,
        answer: summary,
    })
}

/// Produces the report for `name`/`qtype` as seen from `client`, as text.
pub fn explain(
    snap: &Snapshot,
    name: &str,
    qtype: &str,
    client: (IpAddr, u8),
) -> Result<String, String> {
    let e = explain_decision(snap, name, qtype, client)?;
    let mut out = String::new();
    let _ = writeln!(out, "query:     {}", e.query);
    let how = if e.sent_as_ecs {
        "sent as EDNS Client Subnet"
    } else {
        "a private address: sent as the query's source"
    };
    let _ = writeln!(out, "client:    {} ({how})", e.client);
    let _ = match &e.location {
        Some(l) => writeln!(
            out,
            "location:  country {}, continent {}, coordinates {} ({}); database network {}",
            l.country.as_deref().unwrap_or("-"),
            l.continent.as_deref().unwrap_or("-"),
            l.coordinates.as_deref().unwrap_or("-"),
            if l.country_centroid {
                "country centroid"
            } else {
                "from the database record"
            },
            l.network.as_deref().unwrap_or("-"),
        ),
        None => writeln!(out, "location:  unknown to {}", snap.geo.describe()),
    };
    if let Some(s) = &e.service {
        let _ = writeln!(
            out,
            "service:   {} in zone {} (policy {})",
            s.name, s.zone, s.policy
        );
        if let Some(rule) = &s.geo_rule {
            let _ = writeln!(out, "rule:      {rule}");
        }
        for stage in &s.stages {
            let _ = writeln!(
                out,
                "step:      {} (scope /{}){}",
                stage.step,
                stage.scope,
                if stage.note.is_empty() {
                    String::new()
                } else {
                    format!(": {}", stage.note)
                }
            );
            for (i, c) in stage.candidates.iter().enumerate() {
                let tier = if i < stage.first_tier {
                    ""
                } else {
                    " (behind)"
                };
                let km =
                    c.km.map_or("       - km".into(), |k| format!("{k:>8.0} km"));
                let usable = match c.usable {
                    Some(true) => "  usable",
                    Some(false) => "  unusable",
                    None => "",
                };
                let _ = writeln!(
                    out,
                    "           {}. {:<16} {km}{usable}{tier}",
                    i + 1,
                    c.name
                );
            }
        }
        let _ = writeln!(
            out,
            "decision:  {} [{}], ttl {}{}, scope /{}",
            s.outcome,
            s.chosen.join(", "),
            s.ttl,
            if s.degraded { " (degraded)" } else { "" },
            s.scope
        );
    }
    let a = &e.answer;
    let _ = writeln!(
        out,
        "answer:    {}{}{}",
        a.rcode,
        if a.authoritative { " aa" } else { "" },
        if a.truncated { " tc" } else { "" }
    );
    for r in &a.answers {
        let _ = writeln!(out, "           {r}");
    }
    for r in &a.authorities {
        let _ = writeln!(out, "authority: {r}");
    }
    let _ = match a.ecs {
        Some((source, scope)) => writeln!(
            out,
            "ecs:       source /{source}, scope /{scope} (resolvers may reuse this answer for the whole /{scope})"
        ),
        None => writeln!(out, "ecs:       none in the response"),
    };
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_parsing() {
        assert_eq!(parse_client("192.0.2.1").unwrap().1, 24);
        assert_eq!(parse_client("2001:db8::1").unwrap().1, 56);
        assert_eq!(parse_client("192.0.2.0/20").unwrap().1, 20);
        assert!(parse_client("192.0.2.0/33").is_err());
        assert!(parse_client("nonsense").is_err());
    }
}
