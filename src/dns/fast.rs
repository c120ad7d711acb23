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
//!
//! Names a wildcard synthesizes (RFC 4592) are found on that same walk: a
//! wildcard's entry is kept under its closest encloser and built for two
//! stand-ins; what comes out the same for both holds for every name.

use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::Arc;

use hickory_proto::op::{Message, MessageType, OpCode, Query};
use hickory_proto::rr::{Name, RecordType};
use hickory_proto::serialize::binary::{BinDecodable, BinEncodable};

use super::envelope::{Envelope, Header, OptOut, Question, Transport, echo_ecs};
use super::zone::{Node, Resolution, WILDCARD_LABEL, Zone, key_in};
use crate::health::HealthView;
use crate::model::DcId;
use crate::policy::{Client, Decision, Latency, Outcome, Plan};

/// A pre-encoded response body; see the module docs.
#[derive(Clone, Debug, PartialEq)]
struct Template {
    /// Answer, authority and additional sections.
    body: Box<[u8]>,
    /// Offsets in `body` of compression pointers to shift for misses.
    fixups: Box<[u16]>,
    /// Wire length of the QNAME the template was encoded for.
    qname_len: u16,
    /// Answer, authority and additional counts.
    counts: [u16; 3],
    authoritative: bool,
    rcode: u8,
    /// For a service's answer: where its address records start in
    /// `body` (they run to the end, all of one size) and how many there
    /// are. `None` where the answer has none, or other records follow.
    addresses: Option<Addresses>,
    /// Where the additional section starts in `body` when it may be left
    /// out of a response that does not fit (RFC 2181 §9); `None` when
    /// there is none, or it holds a referral's glue (RFC 9471).
    optional_at: Option<u16>,
}

/// What a response copies from a template, or from a packed name.
#[derive(Clone, Copy, Debug)]
struct Body<'a> {
    header: Header,
    /// Answer, authority and additional sections.
    body: &'a [u8],
    /// Offsets in `body` of compression pointers to shift.
    fixups: &'a [u16],
    /// Where the additional section starts, if it may be left out.
    optional_at: Option<u16>,
}

impl Template {
    /// The parts a response copies.
    fn view(&self) -> Body<'_> {
        Body {
            header: self.header(),
            body: &self.body,
            fixups: &self.fixups,
            optional_at: self.optional_at,
        }
    }

    /// Whether `self` and `other` make the same response whatever the
    /// question's length (they may have been built for different names).
    fn same_bytes(&self, other: &Self) -> bool {
        self.body == other.body
            && self.fixups.is_empty()
            && other.fixups.is_empty()
            && self.counts == other.counts
            && self.authoritative == other.authoritative
            && self.rcode == other.rcode
            && self.addresses == other.addresses
            && self.optional_at == other.optional_at
    }

    /// The response header for this template as it is.
    fn header(&self) -> Header {
        Header {
            aa: self.authoritative,
            tc: false,
            rcode: self.rcode,
            question: true,
            counts: self.counts,
        }
    }
}

/// The address records at the end of a service answer's template.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Addresses {
    at: u16,
    count: u16,
    size: u16,
}

impl Addresses {
    fn at(self) -> usize {
        usize::from(self.at)
    }

    fn count(self) -> usize {
        usize::from(self.count)
    }

    fn size(self) -> usize {
        usize::from(self.size)
    }
}

#[derive(Debug)]
enum Response {
    /// The same for every client.
    Static(Template),
    /// Decided by a service.
    Dynamic(Box<Dynamic>),
    /// The general path answers: a wildcard's response whose bytes
    /// depend on the name it is synthesized for.
    Defer,
}

/// Whether `a` and `b`, built for two names, answer both alike.
fn same_response(a: &Response, b: &Response) -> bool {
    match (a, b) {
        (Response::Static(a), Response::Static(b)) => a.same_bytes(b),
        (Response::Dynamic(a), Response::Dynamic(b)) => {
            let same = |a: &Option<Template>, b: &Option<Template>| match (a, b) {
                (Some(a), Some(b)) => a.same_bytes(b),
                (a, b) => a.is_none() && b.is_none(),
            };
            Arc::ptr_eq(&a.plan, &b.plan)
                && a.per_dc.slots == b.per_dc.slots
                && a.per_dc.templates.len() == b.per_dc.templates.len()
                && (a.per_dc.templates.iter().flatten())
                    .zip(b.per_dc.templates.iter().flatten())
                    .all(|(a, b)| a.same_bytes(b))
                && same(&a.all_down, &b.all_down)
                && same(&a.first_cname, &b.first_cname)
        }
        _ => false,
    }
}

/// A service's answers: per datacenter of the service, the template with
/// the normal and with the degraded TTL; and the all-down answer for
/// services that do not fail open.
#[derive(Debug)]
struct Dynamic {
    plan: Arc<Plan>,
    /// The service's position in its zone (for metrics).
    service: u16,
    per_dc: PerDc,
    all_down: Option<Template>,
    /// The name is a CNAME (chain) to the service: with ECS in the query,
    /// the answer is this first CNAME alone (RFC 7871 §7.2.1).
    first_cname: Option<Template>,
}

/// A service's templates for its own datacenters (normal and degraded
/// TTL), found by datacenter id.
#[derive(Debug)]
struct PerDc {
    /// Position in `templates` per datacenter of the zone; `u16::MAX` for
    /// those the service does not use.
    slots: Box<[u16]>,
    templates: Box<[[Template; 2]]>,
}

impl PerDc {
    fn get(&self, dc: DcId) -> Option<&[Template; 2]> {
        let slot = *self.slots.get(dc.index())?;
        self.templates.get(usize::from(slot))
    }
}

/// One name's responses. Hashed and compared by key, so the index is a
/// set of entries looked up by key.
#[derive(Debug)]
struct NameEntry {
    /// The key; for a packed name, then its answers: per RRset in config
    /// order, the type (2 bytes), the record count (2), the body's length
    /// (2) and the body. One allocation per name.
    data: Box<[u8]>,
    /// Length of the key at the start of `data`.
    key_len: u8,
    /// Templates of a name that is not packed; `None` for a packed one,
    /// which has the zone's shared NODATA and NXDOMAIN for everything
    /// else, and answers ANY with its first RRset (RFC 8482).
    general: Option<Box<General>>,
}

impl std::borrow::Borrow<[u8]> for NameEntry {
    fn borrow(&self) -> &[u8] {
        self.key()
    }
}

impl std::hash::Hash for NameEntry {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.key().hash(state);
    }
}

impl PartialEq for NameEntry {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key()
    }
}

impl Eq for NameEntry {}

impl NameEntry {
    fn key(&self) -> &[u8] {
        &self.data[..usize::from(self.key_len)]
    }

    /// The same entry under another key.
    fn rekey(self, key: &[u8]) -> Option<Self> {
        let mut data = key.to_vec();
        data.extend_from_slice(self.data.get(usize::from(self.key_len)..)?);
        Some(Self {
            data: data.into_boxed_slice(),
            key_len: u8::try_from(key.len()).ok()?,
            general: self.general,
        })
    }

    /// A packed name's answer to `qtype` (2 bytes each of count and
    /// body), or `None` for NODATA.
    fn packed(&self, qtype: u16) -> Option<(u16, &[u8])> {
        let mut rest = &self.data[usize::from(self.key_len)..];
        while let [t0, t1, c0, c1, l0, l1, tail @ ..] = rest {
            let len = usize::from(u16::from_be_bytes([*l0, *l1]));
            let body = tail.get(..len)?;
            let t = u16::from_be_bytes([*t0, *t1]);
            if t == qtype || qtype == 255 {
                return Some((u16::from_be_bytes([*c0, *c1]), body));
            }
            rest = &tail[len..];
        }
        None
    }
}

/// The templates of a name that is not packed.
#[derive(Debug)]
struct General {
    /// Responses by query type, only where they differ from `other`.
    by_type: Box<[(u16, Response)]>,
    /// Every other type (NODATA, or a CNAME chain ending in NODATA);
    /// `None`: the zone's shared NODATA.
    other: Option<Response>,
    /// Names below this one that do not exist.
    miss: Miss,
    /// ANY is answered with the first entry of `by_type` (RFC 8482;
    /// plain names, whose first RRset comes first).
    any_first: bool,
}

/// What names below an existing one that do not exist get.
#[derive(Debug)]
enum Miss {
    /// The general path answers.
    General,
    /// The zone's shared NXDOMAIN.
    Shared,
    /// NXDOMAIN or a referral of this name's own.
    Own(Box<Template>),
}

/// The NXDOMAIN the plain names of `zone` share below them (see
/// [`Zone::is_plain`]): built for a stand-in below the apex, with pointer
/// fixups. Their NODATA is the same with NOERROR.
fn shared_nxdomain(zone: &Zone) -> Option<Template> {
    miss_template(zone, zone.origin()).filter(|t| t.rcode == 3)
}

/// What the fast path reads from the snapshot besides the templates.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Serving<'a> {
    pub(crate) health: &'a HealthView,
    pub(crate) latency: &'a crate::latency::LatencyView,
    pub(crate) max_udp_payload: u16,
    /// Seed of the per-query randomness.
    pub(crate) seed: u64,
}

/// One zone's templates, built with the zone and kept with it (a reload
/// that keeps the zone keeps them).
#[derive(Debug, Default)]
pub(crate) struct ZoneIndex {
    names: HashSet<NameEntry>,
    /// The names wildcards synthesize, by closest encloser.
    wildcards: HashSet<NameEntry>,
    /// The NXDOMAIN (and, with NOERROR, the NODATA) plain names share.
    nxdomain: Option<Template>,
}

/// The snapshot's zones, most specific first, for the fast path.
#[derive(Debug, Default)]
pub struct FastIndex {
    zones: Box<[Arc<Zone>]>,
}

/// The private-use type standing for "any type without data here".
const OTHER_TYPE: RecordType = RecordType::Unknown(65_534);

/// Encodes `res` as the response to `qname`/`qtype` and cuts it into a
/// template. `None` if hickory cannot encode it.
fn template(qname: &Name, qtype: RecordType, res: Resolution) -> Option<Template> {
    let mut m = Message::new(0, MessageType::Response, OpCode::Query);
    m.queries.push(Query::query(qname.clone(), qtype));
    res.fill(&mut m);
    let referral = m
        .authorities
        .iter()
        .any(|r| r.record_type() == RecordType::NS);
    let bytes = m.to_vec().ok()?;
    let qname_len = qname.to_bytes().ok()?.len();
    let body: Box<[u8]> = bytes.get(12 + qname_len + 4..)?.into();
    let qname_len = u16::try_from(qname_len).ok()?;
    let count = |i: usize| u16::from_be_bytes([bytes[i], bytes[i + 1]]);
    let counts = [count(6), count(8), count(10)];
    let optional_at = if counts[2] > 0 && !referral {
        Some(
            u16::try_from(super::envelope::skip_records(
                &body,
                0,
                usize::from(counts[0]) + usize::from(counts[1]),
            )?)
            .ok()?,
        )
    } else {
        None
    };
    Some(Template {
        body,
        fixups: Box::new([]),
        qname_len,
        counts,
        authoritative: bytes[2] & 0x04 != 0,
        rcode: bytes[3] & 0x0f,
        addresses: None,
        optional_at,
    })
}

/// Finds the `count` address records of type `rtype` at the end of a
/// template's body: each is a compressed owner (a 2-byte pointer), the
/// type, class IN, TTL, and RDATA of the family's length. A datacenter
/// without addresses of the family gets a count of 0: it adds nothing to
/// an answer of several datacenters.
fn find_addresses(t: &Template, rtype: RecordType, count: usize) -> Option<Addresses> {
    if count == 0 {
        return Some(Addresses {
            at: u16::try_from(t.body.len()).ok()?,
            count: 0,
            size: 1,
        });
    }
    let rdlen: usize = match rtype {
        RecordType::A => 4,
        RecordType::AAAA => 16,
        _ => return None,
    };
    let size = 12 + rdlen;
    let at = t.body.len().checked_sub(count * size)?;
    let ok = t.counts[1] == 0
        && t.counts[2] == 0
        && t.body[at..].chunks(size).all(|r| {
            r[0] & 0xc0 == 0xc0
                && r[2..4] == u16::from(rtype).to_be_bytes()
                && r[4..6] == [0, 1]
                && usize::from(u16::from_be_bytes([r[10], r[11]])) == rdlen
        });
    ok.then_some(Addresses {
        at: u16::try_from(at).ok()?,
        count: u16::try_from(count).ok()?,
        size: u16::try_from(size).ok()?,
    })
}

/// Resolves a service's static parts (the decision is not needed to know
/// which service answers, or what a miss looks like).
fn no_choice(_: &super::zone::ServiceAnswers) -> Decision {
    Decision::empty()
}

fn response(zone: &Zone, name: &Name, qtype: RecordType) -> Option<Response> {
    let mut probe = zone.resolve_with(name, qtype, &mut no_choice);
    match probe.service {
        None => Some(Response::Static(template(name, qtype, probe)?)),
        Some(service) => {
            let svc = zone.service(service);
            let plan = &svc.plan;
            let render =
                |d: Decision| template(name, qtype, zone.resolve_with(name, qtype, &mut |_| d));
            // ANY at a service name is answered as A.
            let rtype = if qtype == RecordType::AAAA {
                RecordType::AAAA
            } else {
                RecordType::A
            };
            let own = &zone.config.services.get(service)?.datacenters;
            let mut slots = vec![u16::MAX; zone.datacenter_count()];
            let mut templates = Vec::with_capacity(own.len());
            for &dc in own {
                *slots.get_mut(dc.index())? = u16::try_from(templates.len()).ok()?;
                let count = zone.addresses(dc, qtype);
                let mut pair = [
                    render(plan.forced(dc, false))?,
                    render(plan.forced(dc, true))?,
                ];
                for t in &mut pair {
                    t.addresses = find_addresses(t, rtype, count);
                }
                templates.push(pair);
            }
            let per_dc = PerDc {
                slots: slots.into_boxed_slice(),
                templates: templates.into_boxed_slice(),
            };
            let all_down = match plan.all_down() {
                None => None,
                Some(d) => Some(render(d)?),
            };
            Some(Response::Dynamic(Box::new(Dynamic {
                plan: Arc::clone(plan),
                service: u16::try_from(service).ok()?,
                per_dc,
                all_down,
                first_cname: if probe.tailored_via_cname() {
                    probe.first_cname_only();
                    Some(template(name, qtype, probe)?)
                } else {
                    None
                },
            })))
        }
    }
}

/// Two stand-in children of `name` that do not exist, one byte apart in
/// length; with `typical`, also not at, above or below the SOA's names
/// (whose encoding compresses against such names in their own way).
fn stand_ins(zone: &Zone, name: &Name, typical: bool) -> Option<(Name, Name)> {
    let usable = |n: &Name| {
        !zone.has_node(n)
            && (!typical || super::zone::name_key(n).is_some_and(|key| !zone.near_soa_names(&key)))
    };
    [("x", "xx"), ("-m-", "-mm-"), ("_meridian_", "_meridian__")]
        .into_iter()
        .map(|(a, b)| (name.prepend_label(a).ok(), name.prepend_label(b).ok()))
        .find_map(|pair| match pair {
            (Some(a), Some(b)) if usable(&a) && usable(&b) => Some((a, b)),
            _ => None,
        })
}

/// The template for names below `name` that do not exist, with pointer
/// fixups, or `None` where that cannot be built safely.
fn miss_template(zone: &Zone, name: &Name) -> Option<Template> {
    let (short, long) = stand_ins(zone, name, false)?;
    // Used only where no wildcard covers the name (see `ZoneIndex::below`).
    let res_short = zone.resolve_literally(&short, RecordType::A, &mut no_choice);
    let res_long = zone.resolve_literally(&long, RecordType::A, &mut no_choice);
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

/// Record types whose answers at a plain name are their records alone:
/// no names in the RDATA to compress, no additional section.
fn direct(rtype: RecordType) -> bool {
    matches!(
        rtype,
        RecordType::A
            | RecordType::AAAA
            | RecordType::TXT
            | RecordType::CAA
            | RecordType::SSHFP
            | RecordType::TLSA
    )
}

/// The answer section for a query of `set`'s type at a plain name: the
/// records, each with its owner compressed to the question (offset 12),
/// as hickory's encoder writes them. Returns the body and the count.
fn direct_body(set: super::zone::RrSet<'_>) -> Option<(Vec<u8>, u16)> {
    let mut body = Vec::new();
    let mut count = 0u16;
    for rdata in set.wire() {
        body.extend_from_slice(&[0xc0, 0x0c]);
        body.extend_from_slice(&u16::from(set.rtype()).to_be_bytes());
        body.extend_from_slice(&1u16.to_be_bytes());
        body.extend_from_slice(&set.ttl().to_be_bytes());
        body.extend_from_slice(&u16::try_from(rdata.len()).ok()?.to_be_bytes());
        body.extend_from_slice(rdata);
        count = count.checked_add(1)?;
    }
    Some((body, count))
}

/// A plain name's entry. With only types [`direct`] encodes, the answers
/// are packed after the key; otherwise one template per RRset. The
/// zone's shared NODATA and NXDOMAIN answer everything else.
fn plain_entry(zone: &Zone, node: &Node) -> Option<NameEntry> {
    let key = node.key();
    let key_len = u8::try_from(key.len()).ok()?;
    if node.rrsets().all(|set| direct(set.rtype())) {
        let mut data = key.to_vec();
        for set in node.rrsets() {
            let (body, count) = direct_body(set)?;
            data.extend_from_slice(&u16::from(set.rtype()).to_be_bytes());
            data.extend_from_slice(&count.to_be_bytes());
            data.extend_from_slice(&u16::try_from(body.len()).ok()?.to_be_bytes());
            data.extend_from_slice(&body);
        }
        return Some(NameEntry {
            data: data.into_boxed_slice(),
            key_len,
            general: None,
        });
    }
    let mut by_type = Vec::new();
    let name = Name::from_bytes(key).ok()?;
    for set in node.rrsets() {
        let t = set.rtype();
        let template = match direct(t) {
            true => {
                let (body, count) = direct_body(set)?;
                Template {
                    body: body.into_boxed_slice(),
                    fixups: Box::new([]),
                    qname_len: u16::from(key_len),
                    counts: [count, 0, 0],
                    authoritative: true,
                    rcode: 0,
                    addresses: None,
                    optional_at: None,
                }
            }
            false => template(&name, t, zone.resolve_with(&name, t, &mut no_choice))?,
        };
        by_type.push((u16::from(t), Response::Static(template)));
    }
    Some(NameEntry {
        data: key.into(),
        key_len,
        general: Some(Box::new(General {
            any_first: !by_type.is_empty(),
            by_type: by_type.into_boxed_slice(),
            other: None,
            miss: Miss::Shared,
        })),
    })
}

/// Any other name's entry, from the general path's answers.
fn general_entry(zone: &Zone, key: &[u8]) -> Option<NameEntry> {
    let name = Name::from_bytes(key).ok()?;
    let key_len = u8::try_from(key.len()).ok()?;
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
    // Unencodable: the slow path will say so.
    let other = response(zone, &name, OTHER_TYPE)?;
    let mut by_type = Vec::with_capacity(types.len());
    for t in types {
        let r = response(zone, &name, t)?;
        let same = matches!((&r, &other), (Response::Static(a), Response::Static(b)) if a == b);
        if !same {
            by_type.push((u16::from(t), r));
        }
    }
    Some(NameEntry {
        data: key.into(),
        key_len,
        general: Some(Box::new(General {
            by_type: by_type.into_boxed_slice(),
            other: Some(other),
            miss: miss_template(zone, &name).map_or(Miss::General, |t| Miss::Own(Box::new(t))),
            any_first: false,
        })),
    })
}

/// The entry for the names that the wildcard `node` synthesizes, keyed by
/// its closest encloser (the wildcard's parent). A plain wildcard's packed
/// answers point only at the question's start, so they hold for any name.
/// Otherwise the entry is built for two stand-in names of different
/// lengths: responses that come out the same for both hold for every
/// name; the rest are left to the general path.
fn wildcard_entry(zone: &Zone, shared: bool, node: &Node) -> Option<NameEntry> {
    let encloser = node.key().get(WILDCARD_LABEL.len()..)?;
    if shared && zone.is_plain(node.key(), node) && node.rrsets().all(|s| direct(s.rtype())) {
        return plain_entry(zone, node)?.rekey(encloser);
    }
    let (short, long) = stand_ins(zone, &Name::from_bytes(encloser).ok()?, true)?;
    let short = general_entry(zone, &super::zone::name_key(&short)?)?;
    let long = general_entry(zone, &super::zone::name_key(&long)?)?;
    let (mut short, long) = (short.general?, long.general?);
    if short.by_type.len() != long.by_type.len() {
        return None;
    }
    for ((t, a), (u, b)) in short.by_type.iter_mut().zip(long.by_type.iter()) {
        if t != u {
            return None;
        }
        if !same_response(a, b) {
            *a = Response::Defer;
        }
    }
    match (&mut short.other, &long.other) {
        (Some(a), Some(b)) if !same_response(a, b) => *a = Response::Defer,
        (Some(_), Some(_)) | (None, None) => {}
        _ => return None,
    }
    // Names below a synthesized name are the wildcard's too: the walk
    // never stops at one.
    short.miss = Miss::General;
    Some(NameEntry {
        data: encloser.into(),
        key_len: u8::try_from(encloser.len()).ok()?,
        general: Some(short),
    })
}

/// A name not in the index: synthesized by a wildcard, or a miss.
enum Below<'a> {
    Wildcard(&'a NameEntry),
    /// A miss template, and the shift of its pointers.
    Miss(Body<'a>, usize),
}

impl ZoneIndex {
    /// Builds templates for every name of `zone`.
    pub(crate) fn build(zone: &Zone) -> Self {
        let nxdomain = shared_nxdomain(zone);
        let mut names = HashSet::with_capacity(zone.nodes().len());
        let mut wildcards = HashSet::new();
        for node in zone.nodes() {
            if zone.has_wildcards()
                && node.key().starts_with(WILDCARD_LABEL)
                && let Some(entry) = wildcard_entry(zone, nxdomain.is_some(), node)
            {
                wildcards.insert(entry);
            }
            let entry = match nxdomain.is_some() && zone.is_plain(node.key(), node) {
                true => plain_entry(zone, node),
                false => general_entry(zone, node.key()),
            };
            if let Some(entry) = entry {
                names.insert(entry);
            }
        }
        Self {
            names,
            wildcards,
            nxdomain,
        }
    }

    /// What answers `name` (wire length `name_len`), which is not in the
    /// index: the wildcard below its closest encloser (RFC 4592), else
    /// that encloser's miss template. `None`: the general path answers.
    fn below(&self, name: &[u8], name_len: usize, origin_len: usize) -> Option<Below<'_>> {
        // hickory's encoder remembers at most 64 names to compress
        // against; a question with that many labels fills them, and the
        // general path then spells out names the templates point at.
        // Such names are rare: leave them to the general path.
        if labels(name) > MAX_MISS_LABELS {
            return None;
        }
        // Ancestors up to the zone's apex, which always exists.
        let mut at = 0;
        let (encloser, entry) = loop {
            let len = usize::from(*name.get(at)?);
            at += 1 + len;
            if len == 0 || name.len() - at < origin_len {
                return None;
            }
            let above = name.get(at..)?;
            if let Some(entry) = self.names.get(above) {
                break (above, entry);
            }
        };
        if !self.wildcards.is_empty()
            && let Some(wildcard) = self.wildcards.get(encloser)
        {
            return Some(Below::Wildcard(wildcard));
        }
        // A miss below an existing name: NXDOMAIN or referral, its
        // pointers shifted by how much longer this name is than the
        // stand-in the template was built for.
        let t = self.miss(entry)?;
        let delta = name_len.checked_sub(usize::from(t.qname_len))?;
        Some(Below::Miss(t.view(), delta))
    }

    /// The miss template below `entry`'s name, if the fast path has one.
    fn miss<'a>(&'a self, entry: &'a NameEntry) -> Option<&'a Template> {
        const SHARED: &Miss = &Miss::Shared;
        let miss = entry.general.as_ref().map_or(SHARED, |g| &g.miss);
        match miss {
            Miss::General => None,
            Miss::Own(t) => Some(t),
            Miss::Shared => self.nxdomain.as_ref(),
        }
    }

    /// The zone's shared NODATA for a name of wire length `name_len`,
    /// with the shift of its pointers.
    fn nodata(&self, name_len: usize, name: &[u8]) -> Option<(Body<'_>, usize)> {
        let t = self.nxdomain.as_ref()?;
        // Built for a shorter name: see the miss templates.
        let delta = name_len.checked_sub(usize::from(t.qname_len))?;
        let body = Body {
            header: Header {
                rcode: 0,
                ..t.header()
            },
            ..t.view()
        };
        (delta == 0 || labels(name) <= MAX_MISS_LABELS).then_some((body, delta))
    }
}

impl FastIndex {
    /// The index over `zones` (most specific first, as the snapshot
    /// orders them).
    pub(crate) fn new(zones: &[Arc<Zone>]) -> Self {
        Self {
            zones: zones.into(),
        }
    }

    /// Answers `packet` into `out` if it is a query the fast path handles;
    /// returns `false` (and leaves `out` unspecified) to defer to the slow
    /// path.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn answer(
        &self,
        serving: Serving<'_>,
        env: &Envelope,
        packet: &[u8],
        src: IpAddr,
        transport: Transport,
        base: &OptOut<'_>,
        seen: &mut super::handler::Seen,
        out: &mut Vec<u8>,
    ) -> bool {
        let Serving {
            health,
            latency,
            max_udp_payload,
            seed,
        } = serving;
        // QUERY only, and no extended rcode in the query: the general path
        // answers the rest (NOTIMP). The handler has already answered what
        // the envelope decides alone (FORMERR for a bad OPT, BADVERS,
        // BADKEY, BADCOOKIE).
        if env.opcode() != 0 || env.opt.is_some_and(|o| o.ext_rcode != 0) {
            return false;
        }

        let Some(q) = simple_question(env) else {
            return false;
        };
        let name = q.name();

        // The most specific zone holding the name (the slow path picks the
        // same one); outside every zone: REFUSED.
        let Some((zone_at, zone)) = self
            .zones
            .iter()
            .enumerate()
            .find(|(_, z)| key_in(name, z.origin_key()))
        else {
            return self.write(
                env,
                packet,
                None,
                None,
                0,
                src,
                transport,
                (max_udp_payload, base),
                out,
            );
        };
        // DNSSEC (issue 13), until the fast path has signed templates: a
        // query with DO set to a signed zone goes to the slow path, which
        // adds the signatures and denial records. (Unsigned zones keep
        // the fast path for DO: validating resolvers set it on nearly
        // every query.)
        if zone.is_signed() && env.opt.is_some_and(|o| o.dnssec_ok) {
            return false;
        }
        let index = zone.fast_index();
        seen.zone = u16::try_from(zone_at).unwrap_or(super::handler::Seen::NO_ZONE);

        // Exact match; else the wildcard that synthesizes the name, or the
        // closest existing ancestor's miss template.
        let entry = match index.names.get(name) {
            Some(entry) => entry,
            None => match index.below(name, q.name_len, zone.origin_key().len()) {
                Some(Below::Wildcard(entry)) if !zone.near_soa_names(name) => entry,
                Some(Below::Miss(body, delta)) => {
                    return self.write(
                        env,
                        packet,
                        Some(body),
                        None,
                        delta,
                        src,
                        transport,
                        (max_udp_payload, base),
                        out,
                    );
                }
                _ => return false,
            },
        };
        let (template, scope, delta) = match &entry.general {
            None => match entry.packed(q.qtype) {
                Some((count, body)) => {
                    let header = Header {
                        aa: true,
                        tc: false,
                        rcode: 0,
                        question: true,
                        counts: [count, 0, 0],
                    };
                    let view = Body {
                        header,
                        body,
                        fixups: &[],
                        optional_at: None,
                    };
                    (Some(view), None, 0)
                }
                None => match index.nodata(q.name_len, name) {
                    Some((t, delta)) => (Some(t), None, delta),
                    None => return false,
                },
            },
            Some(general) => {
                let found = match general.any_first && q.qtype == 255 {
                    true => general.by_type.first(),
                    false => general.by_type.iter().find(|(t, _)| *t == q.qtype),
                };
                match found.map(|(_, r)| r).or(general.other.as_ref()) {
                    None => match index.nodata(q.name_len, name) {
                        Some((t, delta)) => (Some(t), None, delta),
                        None => return false,
                    },
                    Some(Response::Static(t)) => (Some(t.view()), None, 0),
                    Some(Response::Defer) => return false,
                    Some(Response::Dynamic(dynamic)) => match (&dynamic.first_cname, env.ecs) {
                        (Some(t), Some(_)) => (Some(t.view()), None, 0),
                        _ => {
                            let Dynamic {
                                plan,
                                service,
                                per_dc,
                                all_down,
                                ..
                            } = &**dynamic;
                            let addr = env.client_addr(src);
                            let entropy = env.entropy(seed, src);
                            let d = plan.decide_with(
                                &Client { addr },
                                health.zone(zone_at),
                                Latency {
                                    view: latency,
                                    zone: zone_at,
                                },
                                entropy,
                                &mut (),
                            );
                            seen.decided(usize::from(*service), &d);
                            let t = match (d.outcome, all_down) {
                                (Outcome::Answer, _) => {
                                    return self.assemble(
                                        env,
                                        packet,
                                        &d,
                                        per_dc,
                                        addr,
                                        transport,
                                        (max_udp_payload, base),
                                        out,
                                    );
                                }
                                (_, Some(t)) => t,
                                (_, None) => return false,
                            };
                            (Some(t.view()), Some((addr, d.scope)), 0)
                        }
                    },
                }
            }
        };

        self.write(
            env,
            packet,
            template,
            scope,
            delta,
            src,
            transport,
            (max_udp_payload, base),
            out,
        )
    }

    /// Writes `template` (REFUSED when `None`) as the response, its
    /// pointers shifted by `delta`, with ECS for `scope`'s address and
    /// prefix where a service decided.
    #[allow(clippy::too_many_arguments)]
    fn write(
        &self,
        env: &Envelope,
        packet: &[u8],
        template: Option<Body<'_>>,
        scope: Option<(IpAddr, u8)>,
        delta: usize,
        src: IpAddr,
        transport: Transport,
        (max_udp_payload, base): (u16, &OptOut<'_>),
        out: &mut Vec<u8>,
    ) -> bool {
        let header = match template {
            Some(t) => t.header,
            None => Header {
                rcode: 5,
                question: true,
                ..Header::default()
            },
        };
        // REFUSED carries no ECS (as in the slow path); answers do.
        let ecs = match template {
            Some(_) => echo_ecs(env, scope.map_or(src, |s| s.0), scope.map(|s| s.1)),
            None => None,
        };
        out.clear();
        env.write_header(out, header);
        out.extend_from_slice(env.question_bytes(packet));
        let mut optional_at = None;
        if let Some(t) = template {
            let start = out.len();
            out.extend_from_slice(t.body);
            if delta > 0 && relocate(&mut out[start..], t.fixups, delta).is_none() {
                return false;
            }
            optional_at = t.optional_at.map(|at| start + usize::from(at));
        }
        let opt = OptOut { ecs, ..*base };
        finish(
            env,
            packet,
            header,
            &opt,
            optional_at,
            transport,
            max_udp_payload,
            out,
        )
    }

    /// Writes a service's answer from the templates of the chosen
    /// datacenters: one template as it is, or the address records of
    /// several after the first one's CNAME chain, rotated.
    #[allow(clippy::too_many_arguments)]
    fn assemble(
        &self,
        env: &Envelope,
        packet: &[u8],
        d: &Decision,
        per_dc: &PerDc,
        routed_on: IpAddr,
        transport: Transport,
        (max_udp_payload, base): (u16, &OptOut<'_>),
        out: &mut Vec<u8>,
    ) -> bool {
        let variant = usize::from(d.choice.degraded);
        let opt = OptOut {
            ecs: echo_ecs(env, routed_on, Some(d.scope)),
            ..*base
        };
        let whole = |t: &Template, out: &mut Vec<u8>| {
            out.clear();
            env.write_header(out, t.header());
            out.extend_from_slice(env.question_bytes(packet));
            out.extend_from_slice(&t.body);
            finish(
                env,
                packet,
                t.header(),
                &opt,
                None,
                transport,
                max_udp_payload,
                out,
            )
        };
        // The common case: one datacenter, every address kept, nothing to
        // rotate. Its template is the answer as it is.
        if let [dc] = d.dcs()
            && d.left_out[0] == 0
            && let Some(t) = per_dc.get(*dc).map(|pair| &pair[variant])
            && t.addresses
                .is_some_and(|a| a.count <= 1 || d.rotate_by(a.count()) == 0)
        {
            return whole(t, out);
        }
        let mut parts = [None::<&Template>; crate::policy::MAX_ANSWERS];
        // Addresses each chosen datacenter keeps (per-address health).
        let mut kept = [0usize; crate::policy::MAX_ANSWERS];
        let mut total = 0;
        let mut first = None;
        for (k, (slot, dc)) in parts.iter_mut().zip(d.dcs()).enumerate() {
            let Some(pair) = per_dc.get(*dc) else {
                return false;
            };
            let t = &pair[variant];
            first.get_or_insert(t);
            match t.addresses {
                Some(a) if a.count > 0 => {
                    let v6 = a.size == 28;
                    kept[k] = (0..a.count()).filter(|&i| !d.leaves_out(k, v6, i)).count();
                    total += kept[k];
                    *slot = Some(t);
                }
                // No address of this family: contributes nothing.
                Some(_) => {}
                None => return false,
            }
        }
        let Some(first) = first else { return false };
        // The lead is the first datacenter with an address of the family;
        // with none, the first one's NODATA is the answer.
        let Some((lead, a)) = parts
            .iter()
            .flatten()
            .find_map(|t| Some((*t, t.addresses?)))
        else {
            return whole(first, out);
        };
        // The lead's CNAME chain: its answer records before its addresses.
        let prefix_count = lead.counts[0] - a.count;
        let header = Header {
            counts: [prefix_count + total as u16, 0, 0],
            ..lead.header()
        };
        out.clear();
        env.write_header(out, header);
        out.extend_from_slice(env.question_bytes(packet));
        out.extend_from_slice(&lead.body[..a.at()]);
        // Round robin: the answer is the chosen datacenters' kept
        // addresses in order, starting at the k-th and wrapping.
        let k = d.rotate_by(total);
        emit(out, d, &parts, &kept, k, total);
        emit(out, d, &parts, &kept, 0, k);
        finish(
            env,
            packet,
            header,
            &opt,
            None,
            transport,
            max_udp_payload,
            out,
        )
    }
}

/// Copies the kept address records `from..to` of the chosen datacenters
/// (numbered across them in order): one copy per datacenter that keeps
/// all of its addresses, one per record otherwise.
fn emit(
    out: &mut Vec<u8>,
    d: &Decision,
    parts: &[Option<&Template>],
    kept: &[usize],
    from: usize,
    to: usize,
) {
    let mut base = 0;
    for (k, part) in parts.iter().enumerate() {
        let (Some(t), Some(a)) = (part, part.and_then(|p| p.addresses)) else {
            continue;
        };
        let (lo, hi) = (from.max(base), to.min(base + kept[k]));
        if lo < hi {
            let (lo, hi) = (lo - base, hi - base);
            let (at, size) = (a.at(), a.size());
            if kept[k] == a.count() {
                out.extend_from_slice(&t.body[at + lo * size..at + hi * size]);
            } else {
                let v6 = size == 28;
                let records = (0..a.count()).filter(|&r| !d.leaves_out(k, v6, r));
                for r in records.skip(lo).take(hi - lo) {
                    let at = at + r * size;
                    out.extend_from_slice(&t.body[at..at + size]);
                }
            }
        }
        base += kept[k];
        if base >= to {
            break;
        }
    }
}

/// Appends OPT, then fits the response to the limit (RFC 2181 §9): first
/// without the additional section where that may be left out (from
/// `optional_at` in `out`), else truncated (TC, with the question and OPT
/// only, so the client retries over TCP). `false` if even that does not
/// fit.
#[allow(clippy::too_many_arguments)]
fn finish(
    env: &Envelope,
    packet: &[u8],
    header: Header,
    opt: &OptOut<'_>,
    optional_at: Option<usize>,
    transport: Transport,
    max_udp_payload: u16,
    out: &mut Vec<u8>,
) -> bool {
    env.write_opt(out, max_udp_payload, opt);
    let limit = env.limit(transport, max_udp_payload);
    if out.len() <= limit {
        return true;
    }
    if let Some(at) = optional_at {
        out.truncate(at);
        let [an, ns, _] = header.counts;
        let h = Header {
            counts: [an, ns, 0],
            ..header
        };
        out[..12].copy_from_slice(&env.header_bytes(h));
        env.write_opt(out, max_udp_payload, opt);
        if out.len() <= limit {
            return true;
        }
    }
    out.clear();
    env.write_header(out, Header { tc: true, ..header }.without_records());
    out.extend_from_slice(env.question_bytes(packet));
    env.write_opt(out, max_udp_payload, opt);
    out.len() <= limit
}

/// Most labels in a name answered from a miss template; see the caller.
const MAX_MISS_LABELS: usize = 48;

/// Labels in a lower-cased wire-format name (the root not counted).
fn labels(name: &[u8]) -> usize {
    let (mut at, mut n) = (0, 0);
    while let Some(&len) = name.get(at) {
        if len == 0 {
            break;
        }
        n += 1;
        at += 1 + usize::from(len);
    }
    n
}

/// The first question of a query the templates can answer: one question
/// in class IN, not OPT or a zone transfer; no answer or authority
/// records; at most the OPT record, without options the general path
/// decodes; nothing after it.
fn simple_question(env: &Envelope) -> Option<&Question> {
    let q = env.question.as_ref()?;
    let [qd, an, ns, ar] = env.counts;
    let shape = qd == 1 && an == 0 && ns == 0 && ar == u16::from(env.opt.is_some());
    let options = env.opt.is_none_or(|o| !o.other_known_options);
    let kind = q.qclass == 1 && !matches!(q.qtype, 41 | 251 | 252);
    (env.exact && shape && options && kind).then_some(q)
}
