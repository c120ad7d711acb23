//! `meridian explain`: why a client gets the answer it gets.
//!
//! The answer and ECS scope come from the real query handler, fed a real
//! query packet carrying the client as EDNS Client Subnet; the location and
//! ranking lines come from the same GeoIP database and policy tables.

use std::fmt::Write as _;
use std::net::IpAddr;

use crate::dns::{self, Transport};
use crate::geo::distance::distance_km;
use crate::model::{Coord, DcId};
use crate::policy::geo::Rule;
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

/// Produces the report for `name`/`qtype` as seen from `client`.
pub fn explain(
    snap: &Snapshot,
    name: &str,
    qtype: &str,
    client: (IpAddr, u8),
) -> Result<String, String> {
    let (ip, prefix) = client;
    let net = ipnet::IpNet::new(ip, prefix).map_err(|e| e.to_string())?;
    let mut out = String::new();
    let fqdn = if name.ends_with('.') {
        name.to_string()
    } else {
        format!("{name}.")
    };
    let qtype = qtype.to_ascii_uppercase();
    let _ = writeln!(out, "query:     {fqdn} {qtype}");
    let _ = writeln!(
        out,
        "client:    {} (sent as EDNS Client Subnet)",
        net.trunc()
    );

    let (db_net, loc) = snap.geo.lookup(net.network());
    let _ = match (&db_net, &loc) {
        (_, Some(l)) => writeln!(
            out,
            "location:  country {}, continent {}, coordinates {} ({}); database network {}",
            l.country.map_or("-".into(), |c| c.to_string()),
            l.continent.map_or("-".into(), |c| c.to_string()),
            l.coord.map_or("-".into(), fmt_coord),
            if l.coord_from_db {
                "from the database record"
            } else {
                "country centroid"
            },
            db_net.map_or("-".into(), |n| n.to_string()),
        ),
        (_, None) => writeln!(out, "location:  unknown to {}", snap.geo.describe()),
    };

    let packet = dns::build_query(&fqdn, &qtype, Some((net.network(), prefix)), 0x4d45)?;
    let response = dns::handle(snap, &packet, dns::EXPLAIN_SOURCE.ip(), Transport::Tcp)
        .ok_or("the handler sent no response")?;
    let summary = dns::summarize(&response)?;

    // The service behind the name (directly or through an in-zone CNAME).
    let lower = fqdn.to_ascii_lowercase();
    for (zi, zone) in snap.zones().iter().enumerate() {
        let zc = &zone.config;
        for (si, svc) in zc.services.iter().enumerate() {
            let svc_name = svc.fqdn.to_ascii().to_ascii_lowercase();
            if svc_name != lower && !summary.cname_targets.contains(&svc_name) {
                continue;
            }
            let _ = writeln!(
                out,
                "service:   {} in zone {} (policy {}, ttl {})",
                svc.name,
                zc.origin,
                svc.policy.name(),
                svc.ttl
            );
            let Some(policy) = snap.geo_policy(zi, si) else {
                continue;
            };
            let (order, rule) = match policy.network_override(net.network()) {
                Some(n) => {
                    let order = crate::policy::Policy::rank(
                        policy,
                        &crate::policy::Client {
                            addr: net.network(),
                        },
                    )
                    .order
                    .to_vec();
                    (order, Rule::Network(n))
                }
                None => policy.rank_location(loc.as_ref()),
            };
            let rule_text = match rule {
                Rule::Network(n) => format!("network override {n}"),
                Rule::Country(c) => format!("country override {c}"),
                Rule::Continent(c) => format!("continent override {c}"),
                Rule::Distance => "nearest first by great-circle distance".into(),
                Rule::Default => "location unknown: the service's default order".into(),
            };
            let _ = writeln!(out, "rule:      {rule_text}");
            for (i, id) in order.iter().enumerate() {
                let dc = zc.dc(DcId(id.0));
                let dist = match (loc.and_then(|l| l.coord), dc.location) {
                    (Some(a), Some(b)) => format!("{:>8.0} km", distance_km(a, b)),
                    _ => "       - km".into(),
                };
                let _ = writeln!(
                    out,
                    "{}{}. {:<16} {dist}",
                    if i == 0 { "ranking:   " } else { "           " },
                    i + 1,
                    dc.name
                );
            }
        }
    }
    let _ = writeln!(
        out,
        "answer:    {}{}{}",
        summary.rcode,
        if summary.authoritative { " aa" } else { "" },
        if summary.truncated { " tc" } else { "" }
    );
    for a in &summary.answers {
        let _ = writeln!(out, "           {a}");
    }
    for a in &summary.authorities {
        let _ = writeln!(out, "authority: {a}");
    }
    let _ = match summary.ecs {
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
