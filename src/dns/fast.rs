//! The fast path: answers the common queries without building a `Message`.
//!
//! When a snapshot is built, every name in every zone gets pre-encoded
//! response *templates*: the answer, authority and additional sections as
//! hickory encodes them for that name and type (one per datacenter where a
//! service decides). A query is then: parse the header, the question and
//! the OPT record by hand; look the lower-cased name up; copy the header,
//! the query's own question bytes and the template; append OPT with the
//! ECS scope. No allocation, no name parsing into hickory types.
//!
//! Anything unusual (more than one question, compression in the question,
//! EDNS versions other than 0, malformed or NSID options, classes other than
//! IN, zone transfers, non-QUERY opcodes) is declined and goes to the slow
//! path in `handler`, which is the reference. The differential test in
//! `tests/integration/fast_path.rs` checks that both produce the same bytes
//! for lower-case queries and the same messages for mixed-case ones.
//!
//! Templates refer back to the question with compression pointers. For an
//! exact name match the question has the template's length, so they hold
//! as they are. Names that do not exist are answered from their closest
//! existing ancestor's "miss" template, built for a stand-in child name;
//! its pointers are found by encoding it for two stand-ins of different
//! lengths and are shifted at query time by the length difference.

use std::collections::HashMap;
use std::net::IpAddr;

use hickory_proto::op::{Message, MessageType, OpCode, Query};
use hickory_proto::rr::{LowerName, Name, RecordType};
use hickory_proto::serialize::binary::BinEncodable;

use super::handler::{Transport, canonical, fill, scope_in_family};
use super::zone::{Resolution, Selector, Zone};
use crate::health::HealthView;
use crate::model::{AllDown, DcId};
use crate::policy::{Choice, Client};

/// A pre-encoded response body; see the module docs.
#[derive(Debug)]
struct Template {
    /// Answer, authority and additional sections.
    body: Box<[u8]>,
    /// Offsets in `body` of compression pointers to shift for misses.
    fixups: Box<[u16]>,
    /// Wire length of the QNAME the template was encoded for.
    qname_len: usize,
    /// Answer, authority and additional counts.
    counts: [u16; 3],
    authoritative: bool,
    rcode: u8,
}

#[derive(Debug)]
enum Response {
    /// The same for every client.
    Static(Template),
    /// Decided by a service: per datacenter of the zone, the template
    /// with the normal and with the degraded TTL; and the all-down answer
    /// for services that do not fail open.
    Dynamic {
        zone: usize,
        selector: Selector,
        per_dc: Box<[[Template; 2]]>,
        all_down: Option<Template>,
    },
}

#[derive(Debug)]
struct NameEntry {
    /// Responses by query type.
    by_type: Vec<(u16, Response)>,
    /// Every other type (NODATA, or a CNAME chain ending in NODATA).
    other: Response,
    /// Names below this one that do not exist: NXDOMAIN or a referral.
    miss: Option<Template>,
}

/// Templates for every name the snapshot serves.
#[derive(Debug, Default)]
pub struct FastIndex {
    names: HashMap<Box<[u8]>, NameEntry>,
}

/// The private-use type standing for "any type without data here".
const OTHER_TYPE: RecordType = RecordType::Unknown(65_534);

fn wire_lower(name: &Name) -> Option<Box<[u8]>> {
    name.to_lowercase()
        .to_bytes()
        .ok()
        .map(Vec::into_boxed_slice)
}

/// Encodes `res` as the response to `qname`/`qtype` and cuts it into a
/// template. `None` if hickory cannot encode it.
fn template(qname: &Name, qtype: RecordType, res: Resolution) -> Option<Template> {
    let mut m = Message::new(0, MessageType::Response, OpCode::Query);
    m.queries.push(Query::query(qname.clone(), qtype));
    fill(&mut m, res);
    let bytes = m.to_vec().ok()?;
    let qname_len = qname.to_bytes().ok()?.len();
    let body = bytes.get(12 + qname_len + 4..)?.into();
    let count = |i: usize| u16::from_be_bytes([bytes[i], bytes[i + 1]]);
    Some(Template {
        body,
        fixups: Box::new([]),
        qname_len,
        counts: [count(6), count(8), count(10)],
        authoritative: bytes[2] & 0x04 != 0,
        rcode: bytes[3] & 0x0f,
    })
}

fn no_choice(_: &super::zone::ServiceAnswers) -> (Choice, u8) {
    (Choice::of(&[], false, false), 0)
}

fn response(zone: &Zone, zone_index: usize, name: &Name, qtype: RecordType) -> Option<Response> {
    let probe = zone.resolve_with(name, qtype, &mut no_choice);
    match probe.service {
        None => Some(Response::Static(template(name, qtype, probe)?)),
        Some(service) => {
            let forced = |dcs: &[DcId], degraded: bool, all_down: bool| {
                let choice = Choice::of(dcs, degraded, all_down);
                template(
                    name,
                    qtype,
                    zone.resolve_with(name, qtype, &mut |_| (choice, 0)),
                )
            };
            let per_dc = (0..zone.datacenter_count())
                .map(|dc| {
                    let dc = [DcId(u16::try_from(dc).ok()?)];
                    Some([forced(&dc, false, false)?, forced(&dc, true, false)?])
                })
                .collect::<Option<Vec<_>>>()?;
            let svc = zone.service(service);
            let all_down = match svc.all_down {
                AllDown::All => None,
                _ => Some(forced(&[], true, true)?),
            };
            Some(Response::Dynamic {
                zone: zone_index,
                selector: svc.selector.clone(),
                per_dc: per_dc.into_boxed_slice(),
                all_down,
            })
        }
    }
}

/// The template for names below `name` that do not exist, with pointer
/// fixups, or `None` where that cannot be built safely.
fn miss_template(zone: &Zone, name: &Name) -> Option<Template> {
    // Two stand-in children that do not exist, one byte apart in length.
    let (short, long) = [("x", "xx"), ("-m-", "-mm-"), ("_meridian_", "_meridian__")]
        .into_iter()
        .map(|(a, b)| (name.prepend_label(a).ok(), name.prepend_label(b).ok()))
        .find_map(|pair| match pair {
            (Some(a), Some(b))
                if !zone.has_node(&LowerName::from(&a)) && !zone.has_node(&LowerName::from(&b)) =>
            {
                Some((a, b))
            }
            _ => None,
        })?;
    let res_short = zone.resolve_with(&short, RecordType::A, &mut no_choice);
    let res_long = zone.resolve_with(&long, RecordType::A, &mut no_choice);
    if res_short.service.is_some() || res_long.service.is_some() {
        return None;
    }
    let mut t = template(&short, RecordType::A, res_short)?;
    let t_long = template(&long, RecordType::A, res_long)?;
    if t.body.len() != t_long.body.len() || t.counts != t_long.counts {
        return None;
    }
    // Every byte that differs belongs to a compression pointer whose
    // target moved by one.
    let mut fixups = Vec::new();
    let mut i = 0;
    while i < t.body.len() {
        if t.body[i] == t_long.body[i] {
            i += 1;
            continue;
        }
        // The pointer starts here if this is its high byte (a carry), else
        // one byte earlier.
        let start = if t.body[i] & 0xc0 == 0xc0 {
            i
        } else {
            i.checked_sub(1)?
        };
        fixups.push(u16::try_from(start).ok()?);
        i = start + 2;
    }
    t.fixups = fixups.into_boxed_slice();
    let mut check = t.body.to_vec();
    relocate(&mut check, &t.fixups, 1)?;
    (check[..] == t_long.body[..]).then_some(t)
}

/// Shifts the compression pointers at `fixups` by `delta` bytes.
fn relocate(body: &mut [u8], fixups: &[u16], delta: usize) -> Option<()> {
    for &at in fixups {
        let at = usize::from(at);
        let p = body.get(at..at + 2)?;
        let ptr = u16::from_be_bytes([p[0], p[1]]);
        let target = usize::from(ptr & 0x3fff) + delta;
        if target > 0x3fff {
            return None;
        }
        let new = 0xc000 | u16::try_from(target).ok()?;
        body[at..at + 2].copy_from_slice(&new.to_be_bytes());
    }
    Some(())
}

impl FastIndex {
    /// Builds templates for every name of `zones` (most specific zone
    /// first, as the snapshot orders them).
    pub(crate) fn build(zones: &[Zone]) -> Self {
        let mut names = HashMap::new();
        for (zi, zone) in zones.iter().enumerate() {
            for lower in zone.names() {
                let name = Name::from(lower.clone());
                // A name inside a more specific zone we also serve belongs
                // to that zone (the slow path picks the same one).
                if zones[..zi].iter().any(|z| z.origin().zone_of(&name)) {
                    continue;
                }
                let Some(key) = wire_lower(&name) else {
                    continue;
                };
                if names.contains_key(&key) {
                    continue;
                }
                let mut types = zone.types_along(&name);
                types.extend([
                    RecordType::A,
                    RecordType::AAAA,
                    RecordType::CNAME,
                    RecordType::SOA,
                    RecordType::NS,
                    RecordType::DS,
                    RecordType::ANY,
                ]);
                types.sort_unstable_by_key(|t| u16::from(*t));
                types.dedup();
                let by_type: Option<Vec<(u16, Response)>> = types
                    .into_iter()
                    .map(|t| Some((u16::from(t), response(zone, zi, &name, t)?)))
                    .collect();
                let (Some(by_type), Some(other)) = (by_type, response(zone, zi, &name, OTHER_TYPE))
                else {
                    continue; // unencodable: the slow path will say so
                };
                let miss = miss_template(zone, &name);
                names.insert(
                    key,
                    NameEntry {
                        by_type,
                        other,
                        miss,
                    },
                );
            }
        }
        Self { names }
    }

    /// Answers `packet` into `out` if it is a query the fast path handles;
    /// returns `false` (and leaves `out` unspecified) to defer to the slow
    /// path.
    pub(crate) fn answer(
        &self,
        health: &HealthView,
        packet: &[u8],
        src: IpAddr,
        transport: Transport,
        max_udp_payload: u16,
        out: &mut Vec<u8>,
    ) -> bool {
        let Some(q) = parse(packet) else { return false };
        let question = &packet[12..q.question_end];
        if q.bad_ecs {
            // FORMERR with the question and OPT, as the general path sends
            // for ECS it rejects.
            out.clear();
            write_header(out, &q, false, false, 1, [0, 0, 0], q.edns.is_some());
            out.extend_from_slice(question);
            if let Some(e) = &q.edns {
                write_opt(out, max_udp_payload, e.dnssec_ok, None);
            }
            return true;
        }
        let name = &q.lower[..q.name_len];

        // Exact match, else the closest existing ancestor's miss template.
        let (template, scope, delta) = match self.names.get(name) {
            Some(entry) => {
                let resp = entry
                    .by_type
                    .iter()
                    .find(|(t, _)| *t == q.qtype)
                    .map_or(&entry.other, |(_, r)| r);
                match resp {
                    Response::Static(t) => (Some(t), None, 0),
                    Response::Dynamic {
                        zone,
                        selector,
                        per_dc,
                        all_down,
                    } => {
                        let routed = q.ecs.filter(|e| e.source > 0);
                        let addr = canonical(routed.map_or(src, |e| e.addr));
                        let (choice, ranked_scope) =
                            selector.select(&Client { addr }, health, *zone);
                        let t = match (choice.all_down, all_down, choice.dcs()) {
                            (true, Some(t), _) => t,
                            // One datacenter: its template. Several: the
                            // general path assembles the answer.
                            (_, _, [dc]) => match per_dc.get(dc.index()) {
                                Some(pair) => &pair[usize::from(choice.degraded)],
                                None => return false,
                            },
                            _ => return false,
                        };
                        let scope = routed.map(|e| scope_in_family(e.addr, addr, ranked_scope));
                        (Some(t), scope, 0)
                    }
                }
            }
            None => {
                let mut at = 0;
                let mut found = None;
                while let Some(&len) = name.get(at) {
                    if len == 0 {
                        break;
                    }
                    at += 1 + usize::from(len);
                    if let Some(entry) = name.get(at..).and_then(|n| self.names.get(n)) {
                        found = Some(entry);
                        break;
                    }
                }
                match found {
                    // A miss below an existing name: NXDOMAIN or referral.
                    Some(entry) => match &entry.miss {
                        Some(t) => {
                            // Shift pointers by how much longer this name is
                            // than the stand-in the template was built for.
                            let Some(delta) = q.name_len.checked_sub(t.qname_len) else {
                                return false;
                            };
                            (Some(t), None, delta)
                        }
                        None => return false,
                    },
                    // Outside every zone: REFUSED.
                    None => (None, None, 0),
                }
            }
        };

        out.clear();
        let (counts, aa, rcode) = match template {
            Some(t) => (t.counts, t.authoritative, t.rcode),
            None => ([0, 0, 0], false, 5),
        };
        let has_opt = q.edns.is_some();
        write_header(out, &q, aa, false, rcode, counts, has_opt);
        out.extend_from_slice(question);
        if let Some(t) = template {
            let start = out.len();
            out.extend_from_slice(&t.body);
            if delta > 0 && relocate(&mut out[start..], &t.fixups, delta).is_none() {
                return false;
            }
        }
        // REFUSED carries no ECS (as in the slow path); answers do.
        let ecs = q.ecs.filter(|_| template.is_some());
        if let Some(edns) = &q.edns {
            let ecs = ecs.map(|e| (e, scope.unwrap_or(0)));
            write_opt(out, max_udp_payload, edns.dnssec_ok, ecs);
            let limit = match transport {
                Transport::Udp => usize::from(edns.payload.clamp(512, max_udp_payload)),
                Transport::Tcp => usize::from(u16::MAX),
            };
            if out.len() > limit {
                out.clear();
                write_header(out, &q, aa, true, rcode, [0, 0, 0], true);
                out.extend_from_slice(question);
                write_opt(out, max_udp_payload, edns.dnssec_ok, ecs);
                return out.len() <= limit;
            }
        } else if transport == Transport::Udp && out.len() > 512 {
            out.clear();
            write_header(out, &q, aa, true, rcode, [0, 0, 0], false);
            out.extend_from_slice(question);
        }
        out.len() <= usize::from(u16::MAX)
    }
}

fn write_header(
    out: &mut Vec<u8>,
    q: &Parsed,
    aa: bool,
    tc: bool,
    rcode: u8,
    counts: [u16; 3],
    has_opt: bool,
) {
    out.extend_from_slice(&q.id);
    out.push(0x80 | (u8::from(aa) << 2) | (u8::from(tc) << 1) | (q.flags0 & 0x01));
    out.push((q.flags1 & 0x10) | rcode);
    out.extend_from_slice(&1u16.to_be_bytes());
    out.extend_from_slice(&counts[0].to_be_bytes());
    out.extend_from_slice(&counts[1].to_be_bytes());
    out.extend_from_slice(&(counts[2] + u16::from(has_opt)).to_be_bytes());
}

fn write_opt(out: &mut Vec<u8>, payload: u16, dnssec_ok: bool, ecs: Option<(Ecs, u8)>) {
    out.push(0); // root
    out.extend_from_slice(&41u16.to_be_bytes());
    out.extend_from_slice(&payload.max(512).to_be_bytes());
    // Extended rcode 0, version 0, flags: DO copied.
    out.extend_from_slice(&[0, 0, if dnssec_ok { 0x80 } else { 0 }, 0]);
    match ecs {
        None => out.extend_from_slice(&[0, 0]),
        Some((e, scope)) => {
            let addr_len = usize::from(e.source).div_ceil(8);
            let opt_len = 4 + addr_len;
            out.extend_from_slice(&u16::try_from(4 + opt_len).unwrap_or(0).to_be_bytes());
            out.extend_from_slice(&8u16.to_be_bytes());
            out.extend_from_slice(&u16::try_from(opt_len).unwrap_or(0).to_be_bytes());
            let (family, octets): (u16, [u8; 16]) = match e.addr {
                IpAddr::V4(a) => {
                    let mut o = [0u8; 16];
                    o[..4].copy_from_slice(&a.octets());
                    (1, o)
                }
                IpAddr::V6(a) => (2, a.octets()),
            };
            out.extend_from_slice(&family.to_be_bytes());
            out.push(e.source);
            out.push(scope);
            out.extend_from_slice(&octets[..addr_len]);
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Ecs {
    addr: IpAddr,
    source: u8,
}

#[derive(Clone, Copy, Debug)]
struct Edns {
    payload: u16,
    /// The DO bit, copied to the response (RFC 3225 §3).
    dnssec_ok: bool,
}

/// A query the fast path can answer, parsed without allocation.
struct Parsed {
    id: [u8; 2],
    flags0: u8,
    flags1: u8,
    /// Lower-cased wire-format QNAME.
    lower: [u8; 255],
    name_len: usize,
    qtype: u16,
    /// End of the question in the packet.
    question_end: usize,
    edns: Option<Edns>,
    ecs: Option<Ecs>,
    /// An ECS option RFC 7871 §6 says to answer with FORMERR.
    bad_ecs: bool,
}

fn be16(p: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*p.get(at)?, *p.get(at + 1)?]))
}

/// Parses a plain query: QR=0, QUERY, one question in class IN, no answer
/// or authority records, at most an EDNS(0) OPT with a valid (or no) ECS
/// option, nothing after it. Anything else is `None`.
fn parse(p: &[u8]) -> Option<Parsed> {
    let (flags0, flags1) = (*p.get(2)?, *p.get(3)?);
    // QR must be 0 and the opcode QUERY (0).
    if flags0 & 0xf8 != 0 {
        return None;
    }
    if be16(p, 4)? != 1 || be16(p, 6)? != 0 || be16(p, 8)? != 0 {
        return None;
    }
    let arcount = be16(p, 10)?;
    if arcount > 1 {
        return None;
    }
    let mut lower = [0u8; 255];
    let mut at = 12;
    let mut n = 0;
    loop {
        let len = usize::from(*p.get(at)?);
        if len > 63 {
            return None; // compression or extended label types
        }
        if n + 1 + len > 255 {
            return None;
        }
        lower[n] = len as u8;
        for (i, b) in p.get(at + 1..at + 1 + len)?.iter().enumerate() {
            lower[n + 1 + i] = b.to_ascii_lowercase();
        }
        n += 1 + len;
        at += 1 + len;
        if len == 0 {
            break;
        }
    }
    let qtype = be16(p, at)?;
    let qclass = be16(p, at + 2)?;
    let question_end = at + 4;
    // IN only; no zone transfers; OPT is not a question.
    if qclass != 1 || matches!(qtype, 41 | 251 | 252) {
        return None;
    }
    let mut parsed = Parsed {
        id: [p[0], p[1]],
        flags0,
        flags1,
        lower,
        name_len: n,
        qtype,
        question_end,
        edns: None,
        ecs: None,
        bad_ecs: false,
    };
    if arcount == 0 {
        return (question_end == p.len()).then_some(parsed);
    }
    // The OPT record: root owner, type 41.
    let o = question_end;
    if *p.get(o)? != 0 || be16(p, o + 1)? != 41 {
        return None;
    }
    let payload = be16(p, o + 3)?;
    let (ext_rcode, version) = (*p.get(o + 5)?, *p.get(o + 6)?);
    if ext_rcode != 0 || version != 0 {
        return None; // BADVERS and friends: the slow path answers
    }
    let rdlen = usize::from(be16(p, o + 9)?);
    let rdata = p.get(o + 11..o + 11 + rdlen)?;
    if o + 11 + rdlen != p.len() {
        return None;
    }
    let dnssec_ok = *p.get(o + 7)? & 0x80 != 0;
    parsed.edns = Some(Edns { payload, dnssec_ok });
    // Options the general path must see: decided after the loop, so a bad
    // ECS option gets FORMERR whatever else the OPT holds.
    let mut decline = false;
    let mut i = 0;
    while i < rdata.len() {
        let code = be16(rdata, i)?;
        let len = usize::from(be16(rdata, i + 2)?);
        let data = rdata.get(i + 4..i + 4 + len)?;
        match code {
            8 => {
                if parsed.ecs.is_some() {
                    return None;
                }
                match parse_ecs(data) {
                    Some(ecs) => parsed.ecs = Some(ecs),
                    None => parsed.bad_ecs = true,
                }
            }
            // NSID and DAU/DHU/N3U are decoded (and validated) by hickory.
            3 | 5..=7 => decline = true,
            _ => {}
        }
        i += 4 + len;
    }
    (parsed.bad_ecs || !decline).then_some(parsed)
}

/// RFC 7871 §6 ECS option data; `None` for anything the slow path would
/// reject (it answers FORMERR).
fn parse_ecs(d: &[u8]) -> Option<Ecs> {
    let family = be16(d, 0)?;
    let source = *d.get(2)?;
    let addr_bytes = d.get(4..)?;
    let addr_len = usize::from(source).div_ceil(8);
    if addr_bytes.len() != addr_len {
        return None;
    }
    let addr = match family {
        1 if source <= 32 => {
            let mut o = [0u8; 4];
            o[..addr_len].copy_from_slice(addr_bytes);
            IpAddr::from(o)
        }
        2 if source <= 128 => {
            let mut o = [0u8; 16];
            o[..addr_len].copy_from_slice(addr_bytes);
            IpAddr::from(o)
        }
        _ => return None,
    };
    // Bits beyond the source prefix must be zero.
    let net = ipnet::IpNet::new(addr, source).ok()?;
    (net.network() == addr).then_some(Ecs { addr, source })
}
