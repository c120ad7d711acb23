//! Helpers shared by the fuzz targets: the snapshot (loaded once per
//! process), the source address and health view an input selects, and the
//! checks every response must pass.
//!
//! An input is a raw DNS query, exactly as it would arrive in a UDP
//! datagram (or a TCP message without its length prefix), so every seed and
//! every crash file is a packet that can be replayed as it is. The query ID
//! does not change how a query is answered, so the targets read their own
//! choices from it: the low three bits of the first ID byte pick the source
//! address, the second ID byte picks the health of the datacenters.

pub mod opt_query;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;
use std::sync::LazyLock;

use hickory_proto::op::{Edns, Message};
use hickory_proto::rr::rdata::opt::{ClientSubnet, EdnsCode, EdnsOption};
use meridian::dns::Transport;
use meridian::health::{DcHealth, HealthView, Observed, Override};
use meridian::snapshot::Snapshot;

/// The repository's own configuration (`meridian.toml`, `zones/`, the
/// shipped GeoIP database), found from this crate's directory so the
/// targets work from any working directory.
pub const CONFIG: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../meridian.toml");

/// The shipped snapshot under 256 health views, indexed by the second byte
/// of the query ID (0: every datacenter up, as shipped).
static VIEWS: LazyLock<Vec<Snapshot>> = LazyLock::new(|| {
    let (_, base) =
        meridian::load(Path::new(CONFIG)).unwrap_or_else(|e| panic!("cannot load {CONFIG}: {e}"));
    (0..=255u8).map(|h| health_variant(&base, h)).collect()
});

/// The health states a datacenter can be in, as one base-5 digit.
const STATES: [DcHealth; 5] = [
    DcHealth::UP,
    DcHealth {
        observed: Observed::Down,
        forced: None,
        capacity: 100,
        down_addresses: 0,
        rtt_us: 0,
        congested: false,
    },
    DcHealth {
        observed: Observed::Unknown,
        forced: None,
        capacity: 100,
        down_addresses: 0,
        rtt_us: 0,
        congested: false,
    },
    DcHealth {
        observed: Observed::Up,
        forced: Some(Override::Drain),
        capacity: 100,
        down_addresses: 0,
        rtt_us: 0,
        congested: false,
    },
    DcHealth {
        observed: Observed::Down,
        forced: Some(Override::ForceUp),
        capacity: 40,
        down_addresses: 1,
        rtt_us: 20_000,
        congested: true,
    },
];

/// `base` with the datacenters' health spelled by `selector` in base 5,
/// least significant digit first, across every zone's datacenters in
/// order (three datacenters get every combination; the rest stay up).
fn health_variant(base: &Snapshot, selector: u8) -> Snapshot {
    if selector == 0 {
        return base.clone();
    }
    let mut rest = usize::from(selector);
    let zones = base
        .zones()
        .iter()
        .map(|z| {
            z.config
                .datacenters
                .iter()
                .map(|_| {
                    let state = STATES[rest % STATES.len()];
                    rest /= STATES.len();
                    state
                })
                .collect()
        })
        .collect();
    base.with_health(HealthView::new(zones))
}

/// The snapshot (and health view) the query's ID selects.
pub fn snapshot_for(packet: &[u8]) -> &'static Snapshot {
    let views = &*VIEWS;
    &views[usize::from(packet.get(1).copied().unwrap_or(0))]
}

/// Source addresses: loopback, addresses the GeoIP database places on
/// different continents, an IPv4-mapped one (dual-stack sockets) and a
/// documentation one it does not know.
const SOURCES: [IpAddr; 8] = [
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1)),
    IpAddr::V6(Ipv6Addr::LOCALHOST),
    IpAddr::V4(Ipv4Addr::new(8, 8, 8, 8)),
    IpAddr::V4(Ipv4Addr::new(81, 2, 69, 142)),
    IpAddr::V4(Ipv4Addr::new(1, 0, 16, 1)),
    IpAddr::V6(Ipv6Addr::new(0x2a00, 0x1450, 0x4001, 0, 0, 0, 0, 1)),
    IpAddr::V6(Ipv6Addr::new(0, 0, 0, 0, 0, 0xffff, 0xcb00, 0x7107)),
    IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1)),
];

/// The source address the query's ID selects.
pub fn source(packet: &[u8]) -> IpAddr {
    SOURCES[usize::from(packet.first().copied().unwrap_or(0) & 7)]
}

/// Lower-case hex, for messages.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

fn be16(p: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([
        *p.get(at)?,
        *p.get(at.checked_add(1)?)?,
    ]))
}

/// The end of the (possibly compressed) name at `at`.
fn skip_name(p: &[u8], mut at: usize) -> Option<usize> {
    loop {
        let len = *p.get(at)?;
        match len & 0xc0 {
            0xc0 => {
                p.get(at + 1)?;
                return Some(at + 2);
            }
            0 if len == 0 => return Some(at + 1),
            0 => at += 1 + usize::from(len),
            _ => return None,
        }
    }
}

/// The end of the resource record at `at`.
fn skip_record(p: &[u8], at: usize) -> Option<usize> {
    let fixed = skip_name(p, at)?;
    let rdlen = usize::from(be16(p, fixed + 8)?);
    let end = fixed + 10 + rdlen;
    (end <= p.len()).then_some(end)
}

/// The UDP payload size in the first OPT record of the query's additional
/// section, found by walking the packet by hand; `None` without one (or
/// when the packet ends before it).
pub fn raw_opt_payload(p: &[u8]) -> Option<u16> {
    let (qd, an, ns, ar) = (be16(p, 4)?, be16(p, 6)?, be16(p, 8)?, be16(p, 10)?);
    let mut at = 12;
    for _ in 0..qd {
        at = skip_name(p, at)? + 4;
    }
    for _ in 0..usize::from(an) + usize::from(ns) {
        at = skip_record(p, at)?;
    }
    for _ in 0..ar {
        let fixed = skip_name(p, at)?;
        if be16(p, fixed)? == 41 {
            return be16(p, fixed + 2);
        }
        at = skip_record(p, at)?;
    }
    None
}

/// The largest UDP response allowed for `query`: 512 bytes without EDNS,
/// else the client's payload clamped to [512, `max_udp_payload`] (RFC 6891
/// §6.2.5). EDNS as hickory reads the query; for a query hickory cannot
/// parse, the first OPT record found by hand.
pub fn udp_limit(query: &[u8], max_udp_payload: u16) -> usize {
    let payload = match Message::from_vec(query) {
        Ok(m) => m.edns.map(|e| e.max_payload()),
        Err(_) => raw_opt_payload(query),
    };
    payload.map_or(512, |p| usize::from(p.clamp(512, max_udp_payload.max(512))))
}

/// Whether the question name (plain labels from offset 12) has an
/// upper-case ASCII letter; `None` if there is no readable uncompressed
/// name there.
pub fn qname_has_upper(p: &[u8]) -> Option<bool> {
    let mut at = 12;
    let mut upper = false;
    loop {
        let len = usize::from(*p.get(at)?);
        if len == 0 {
            return Some(upper);
        }
        if len > 63 {
            return None;
        }
        upper |= p
            .get(at + 1..at + 1 + len)?
            .iter()
            .any(u8::is_ascii_uppercase);
        at += 1 + len;
    }
}

/// The ECS option of an OPT record.
pub fn ecs(edns: &Edns) -> Option<&ClientSubnet> {
    match edns.options().get(EdnsCode::Subnet) {
        Some(EdnsOption::Subnet(cs)) => Some(cs),
        _ => None,
    }
}

/// Checks what the handler did with `query` over `transport`: whether it
/// answered (`answered`) and the response bytes (`out`). Panics, with
/// both packets in hex, on the first broken rule.
pub fn check_response(
    snap: &Snapshot,
    query: &[u8],
    transport: Transport,
    answered: bool,
    out: &[u8],
) {
    let fail = |what: String| -> ! {
        panic!(
            "{what}\ntransport: {transport:?}\nquery:    {}\nresponse: {}",
            hex(query),
            if answered { hex(out) } else { "(none)".into() }
        )
    };
    // Too short for an ID, or a response (QR set): nothing is sent.
    if query.len() < 12 || query[2] & 0x80 != 0 {
        if answered {
            fail("answered a packet shorter than a header or with QR set".into());
        }
        return;
    }
    if !answered {
        fail("sent nothing for a query with a full header and QR clear".into());
    }
    let resp = match Message::from_vec(out) {
        Ok(m) => m,
        Err(e) => fail(format!("the response does not decode: {e}")),
    };
    if out[..2] != query[..2] {
        fail("the response does not echo the query ID".into());
    }
    if out[2] & 0x80 == 0 {
        fail("QR is clear in the response".into());
    }
    if out[2] & 0x78 != query[2] & 0x78 {
        fail("the response does not echo the opcode".into());
    }
    if out[2] & 0x01 != query[2] & 0x01 {
        fail("the response does not echo RD".into());
    }
    let limit = match transport {
        Transport::Udp => udp_limit(query, snap.max_udp_payload),
        Transport::Tcp => usize::from(u16::MAX),
    };
    if out.len() > limit {
        fail(format!(
            "{} response bytes exceed the {limit}-byte limit",
            out.len()
        ));
    }
    // EDNS (RFC 6891 §6.1.1, §7; RFC 3225 §3; RFC 7871 §7.2.1), for
    // queries hickory can read (others get a bare FORMERR header).
    let Ok(q) = Message::from_vec(query) else {
        return;
    };
    match (&q.edns, &resp.edns) {
        (None, Some(_)) => fail("OPT in the response to a query without OPT".into()),
        // A truncated response may drop the OPT when even that is too big.
        (Some(_), None) if !resp.metadata.truncation => {
            fail("no OPT in the response to a query with OPT".into())
        }
        (Some(qe), Some(re)) => {
            if qe.flags().dnssec_ok != re.flags().dnssec_ok {
                fail("the DO bit is not copied".into());
            }
            if let Some(r) = ecs(re) {
                let Some(c) = ecs(qe) else {
                    fail("ECS in the response to a query without ECS".into())
                };
                if (r.addr(), r.source_prefix()) != (c.addr(), c.source_prefix()) {
                    fail("the response's ECS does not copy the query's address and prefix".into());
                }
                let max = if r.addr().is_ipv4() { 32 } else { 128 };
                if r.scope_prefix() > max {
                    fail(format!(
                        "ECS scope {} is longer than the address",
                        r.scope_prefix()
                    ));
                }
            }
        }
        _ => {}
    }
}
