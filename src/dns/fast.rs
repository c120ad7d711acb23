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
//!
//! A signed zone has a second index for queries with DO set, built after
//! its signer's store is filled: the general path's signed answers (with
//! RRSIGs and the name's NSEC), signatures taken from the store alone, so
//! the templates copy them as they copy records. A service's addresses are
//! followed by their RRSIGs, which rotation leaves in place; an answer of
//! several datacenters takes the RRSIGs rendered for that combination.
//! Everything that needs a signature made on demand (a name that does not
//! exist, a wildcard's names, addresses left out by per-address health) is
//! left out of it and goes to the general path, as does every DO query once
//! the earliest signature in the templates is within the refresh margin.

use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::Arc;

use hickory_proto::op::{Message, MessageType, OpCode, Query};
use hickory_proto::rr::{Name, RecordType};
use hickory_proto::serialize::binary::{BinDecodable, BinEncodable};

use super::envelope::{Envelope, Header, OptOut, Question, Transport, echo_ecs};
use super::zone::{NameKey, Node, Resolution, WILDCARD_LABEL, Zone, key_in, signed_sets};
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

/// The address records at the end of a service answer's template; in a
/// DO=1 template, followed by their RRSIGs (`sigs` records), which end
/// the body.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Addresses {
    at: u16,
    count: u16,
    size: u16,
    sigs: u16,
}

impl Addresses {
    fn at(self) -> usize {
        usize::from(self.at)
    }

    /// Where the addresses end (and their RRSIGs, if any, start).
    fn end(self) -> usize {
        self.at() + self.count() * self.size()
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
    /// DO=1 templates only: the RRSIGs of answers of several datacenters
    /// (normal and degraded TTL); `None` without any.
    combos: Option<Box<[Combos; 2]>>,
}

/// The signatures of a service's answers of several datacenters, as they
/// follow the addresses in a DO=1 response, by the set of datacenters.
/// An RRSIG covers the RRset whatever the order of its records, so one
/// suffix serves every ranking and rotation of the set.
#[derive(Debug, Default)]
struct Combos(Box<[Combo]>);

#[derive(Debug)]
struct Combo {
    /// The datacenters: bit `i` for the service's `i`-th one (its slot
    /// in [`PerDc`]).
    mask: u32,
    /// Records in `suffix`.
    sigs: u16,
    suffix: Box<[u8]>,
}

impl Combos {
    fn get(&self, mask: u32) -> Option<&Combo> {
        let i = self.0.binary_search_by_key(&mask, |c| c.mask).ok()?;
        self.0.get(i)
    }
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
    /// A signed zone's templates for queries with DO set.
    signed: Option<Box<SignedIndex>>,
}

/// A signed zone's DO=1 templates: the slow path's signed answers, their
/// RRSIGs copied from the signer's store, for every name the store signs
/// ahead (see [`ZoneIndex::build_signed`]). Answers that need a signature
/// made on demand are not here, and go to the slow path.
#[derive(Debug)]
pub(crate) struct SignedIndex {
    /// Only general entries (a NODATA's NSEC is the name's own), no
    /// wildcards, no miss templates.
    index: ZoneIndex,
    /// The templates are served while the clock (seconds since the epoch)
    /// is before this: the earliest expiration among their signatures
    /// less the refresh margin, when the background re-signer is due
    /// (it rebuilds the zone, with new templates, before then). If it is
    /// late, the slow path answers: it serves stored signatures until
    /// half the margin is left, then renews them (its safety net).
    serve_until: u64,
    /// The signer's refresh margin: see `serve_until`.
    margin: u64,
    /// Compact NXDOMAIN answers the slow path has signed on demand.
    denials: Denials,
}

/// Most compact NXDOMAIN answers a signed zone keeps for the fast path.
/// Past it, names that do not exist are answered by the slow path (from
/// its own cache of signatures, or signed within the online budget), so a
/// flood of random names cannot grow it.
const MAX_DENIALS: usize = 16_384;

/// Compact NXDOMAIN answers (RFC 9824) that the slow path signed on demand,
/// by lower-cased name: NOERROR with the SOA, the NSEC owned by the name
/// (it lists NXNAME) and their RRSIGs; the same for every query type. Each
/// is kept with the time until which its signatures may be served, like
/// [`SignedIndex::serve_until`]. The slow path fills it; the fast path
/// answers a name's next queries from it. Lives with the zone, so a
/// rebuilt or re-signed zone starts empty.
#[derive(Debug, Default)]
struct Denials(std::sync::RwLock<std::collections::HashMap<NameKey, Denial>>);

/// A kept compact NXDOMAIN and the time its signatures may be served until.
type Denial = (Template, u64);

/// How DO=1 templates are rendered: the slow path's signing, with
/// signatures from the store alone, and the earliest expiration among
/// those used.
struct Signing<'a> {
    signer: &'a crate::dnssec::ZoneSigner,
    now: u64,
    earliest: std::cell::Cell<u64>,
}

/// `res` signed as the slow path signs it at build time, from the store
/// alone; `None` where a signature would have to be made on demand.
fn signed(
    zone: &Zone,
    name: &Name,
    qtype: RecordType,
    mut res: Resolution,
    s: &Signing<'_>,
) -> Option<Resolution> {
    let margin = s.signer.refresh_margin();
    zone.sign_answer_with(
        &mut res,
        name,
        qtype,
        &mut |rrset| match s.signer.stored(rrset) {
            Some((sigs, expires)) if expires > s.now.saturating_add(margin) => {
                s.earliest.set(s.earliest.get().min(expires));
                Ok(sigs)
            }
            _ => Err(crate::dnssec::sign::OverBudget),
        },
    )
    .ok()?;
    Some(res)
}

/// [`template`], signed for DO=1 templates.
fn render(
    zone: &Zone,
    name: &Name,
    qtype: RecordType,
    res: Resolution,
    signing: Option<&Signing<'_>>,
) -> Option<Template> {
    match signing {
        None => template(name, qtype, res),
        Some(s) => template(name, qtype, signed(zone, name, qtype, res, s)?),
    }
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
            sigs: 0,
        });
    }
    let rdlen: usize = match rtype {
        RecordType::A => 4,
        RecordType::AAAA => 16,
        _ => return None,
    };
    let size = 12 + rdlen;
    if t.counts[1] != 0 || t.counts[2] != 0 {
        return None;
    }
    // Where each answer record starts; a DO=1 template ends with the
    // addresses' RRSIGs (each owned by a pointer, like the addresses).
    let mut starts = Vec::with_capacity(usize::from(t.counts[0]));
    let mut at = 0;
    for _ in 0..t.counts[0] {
        starts.push(at);
        at = super::envelope::skip_records(&t.body, at, 1)?;
    }
    if at != t.body.len() {
        return None;
    }
    let rrsig = u16::from(RecordType::RRSIG).to_be_bytes();
    let sigs = (starts.iter().rev())
        .take_while(|&&s| {
            t.body
                .get(s..s + 4)
                .is_some_and(|r| r[0] & 0xc0 == 0xc0 && r[2..4] == rrsig)
        })
        .count();
    let first = starts.len().checked_sub(sigs + count)?;
    let at = starts[first];
    let end = starts.get(first + count).copied().unwrap_or(t.body.len());
    let ok = end - at == count * size
        && t.body[at..end].chunks(size).all(|r| {
            r[0] & 0xc0 == 0xc0
                && r[2..4] == u16::from(rtype).to_be_bytes()
                && r[4..6] == [0, 1]
                && usize::from(u16::from_be_bytes([r[10], r[11]])) == rdlen
        });
    ok.then_some(Addresses {
        at: u16::try_from(at).ok()?,
        count: u16::try_from(count).ok()?,
        size: u16::try_from(size).ok()?,
        sigs: u16::try_from(sigs).ok()?,
    })
}

/// Resolves a service's static parts (the decision is not needed to know
/// which service answers, or what a miss looks like).
fn no_choice(_: &super::zone::ServiceAnswers) -> Decision {
    Decision::empty()
}

/// The response to `qtype` at `name`: as the slow path encodes it, or
/// with `signing`, as it signs it for DO=1 (`Defer` where a signature is
/// not in the store).
fn response(
    zone: &Zone,
    name: &Name,
    qtype: RecordType,
    signing: Option<&Signing<'_>>,
) -> Option<Response> {
    let r = response_of(zone, name, qtype, signing);
    match signing {
        None => r,
        Some(_) => Some(r.unwrap_or(Response::Defer)),
    }
}

fn response_of(
    zone: &Zone,
    name: &Name,
    qtype: RecordType,
    signing: Option<&Signing<'_>>,
) -> Option<Response> {
    let mut probe = zone.resolve_with(name, qtype, &mut no_choice);
    match probe.service {
        None => Some(Response::Static(render(zone, name, qtype, probe, signing)?)),
        Some(service) => {
            let svc = zone.service(service);
            let plan = &svc.plan;
            let decided = |d: Decision| {
                let res = zone.resolve_with(name, qtype, &mut |_| d);
                render(zone, name, qtype, res, signing)
            };
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
                    decided(plan.forced(dc, false))?,
                    decided(plan.forced(dc, true))?,
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
                Some(d) => Some(decided(d)?),
            };
            let combos = match signing {
                None => None,
                Some(_) => combos(zone, service, qtype, rtype, &per_dc, &decided),
            };
            Some(Response::Dynamic(Box::new(Dynamic {
                plan: Arc::clone(plan),
                service: u16::try_from(service).ok()?,
                per_dc,
                all_down,
                first_cname: if probe.tailored_via_cname() {
                    probe.first_cname_only();
                    Some(render(zone, name, qtype, probe, signing)?)
                } else {
                    None
                },
                combos,
            })))
        }
    }
}

/// For a DO=1 service answer: the RRSIG suffix of every combination of
/// two to `max_answers` of the service's datacenters whose signatures the
/// store holds (those [`signed_sets`] names; the slow path renders each,
/// and the addresses' RRSIGs are cut from its end). `None` where there
/// are none.
fn combos(
    zone: &Zone,
    service: usize,
    qtype: RecordType,
    rtype: RecordType,
    per_dc: &PerDc,
    render: &dyn Fn(Decision) -> Option<Template>,
) -> Option<Box<[Combos; 2]>> {
    let svc = zone.config.services.get(service)?;
    let own = &svc.datacenters;
    let n = own.len();
    let masks: Vec<u32> = signed_sets(n, svc.max_answers)
        .into_iter()
        .filter(|m| m.count_ones() >= 2)
        .filter_map(|m| u32::try_from(m).ok())
        .collect();
    if masks.is_empty() {
        return None;
    }
    let plan = &zone.service(service).plan;
    let mut out: [Vec<Combo>; 2] = Default::default();
    for (variant, combos) in out.iter_mut().enumerate() {
        let degraded = variant == 1;
        // Every answer of the service starts alike (its CNAME chain and
        // their RRSIGs): the suffix holds after any datacenter's start.
        let Some((lead, la)) = (per_dc.templates.iter())
            .map(|pair| &pair[variant])
            .find_map(|t| Some((t, t.addresses.filter(|a| a.count > 0)?)))
        else {
            continue;
        };
        for &mask in &masks {
            let dcs: Vec<DcId> = (0..n)
                .filter(|b| mask & (1 << b) != 0)
                .map(|b| own[b])
                .collect();
            let total: usize = dcs.iter().map(|&dc| zone.addresses(dc, qtype)).sum();
            let Some(&first) = dcs.first() else { continue };
            let mut d = plan.forced(first, degraded);
            d.choice = crate::policy::Choice::of(&dcs, degraded, false);
            let Some(t) = render(d) else { continue };
            let Some(a) = find_addresses(&t, rtype, total) else {
                continue;
            };
            if a.count == 0 || t.body[..a.at()] != lead.body[..la.at()] {
                continue;
            }
            combos.push(Combo {
                mask,
                sigs: a.sigs,
                suffix: t.body[a.end()..].into(),
            });
        }
        combos.sort_unstable_by_key(|c| c.mask);
    }
    let [a, b] = out;
    Some(Box::new([Combos(a.into()), Combos(b.into())]))
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

/// Any other name's entry, from the general path's answers; with
/// `signing`, its DO=1 answers (and no miss template: a name that does
/// not exist gets an NSEC of its own, signed on demand).
fn general_entry(zone: &Zone, key: &[u8], signing: Option<&Signing<'_>>) -> Option<NameEntry> {
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
    let other = response(zone, &name, OTHER_TYPE, signing)?;
    let mut by_type = Vec::with_capacity(types.len());
    for t in types {
        let r = response(zone, &name, t, signing)?;
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
            miss: match signing {
                None => {
                    miss_template(zone, &name).map_or(Miss::General, |t| Miss::Own(Box::new(t)))
                }
                Some(_) => Miss::General,
            },
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
    let short = general_entry(zone, &super::zone::name_key(&short)?, None)?;
    let long = general_entry(zone, &super::zone::name_key(&long)?, None)?;
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
                false => general_entry(zone, node.key(), None),
            };
            if let Some(entry) = entry {
                names.insert(entry);
            }
        }
        Self {
            names,
            wildcards,
            nxdomain,
            signed: None,
        }
    }

    /// A signed zone's DO=1 templates (`None` for an unsigned zone), from
    /// the slow path's own signed answers at this time, with the signer's
    /// store filled: every name's entry (no packed names: each NODATA
    /// carries the name's own NSEC), no wildcards, no miss templates.
    pub(crate) fn build_signed(zone: &Zone) -> Option<SignedIndex> {
        let signer = zone.signer()?;
        let started = std::time::Instant::now();
        let signing = Signing {
            signer,
            now: signer.now(),
            earliest: std::cell::Cell::new(u64::MAX),
        };
        let names: HashSet<NameEntry> = zone
            .nodes()
            .filter_map(|node| general_entry(zone, node.key(), Some(&signing)))
            .collect();
        let serve_until = signing
            .earliest
            .get()
            .saturating_sub(signer.refresh_margin());
        let index = Self {
            names,
            ..Self::default()
        };
        tracing::debug!(
            zone = %zone.origin(),
            names = index.names.len(),
            bytes = index.heap_bytes(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "built the DO=1 templates"
        );
        Some(SignedIndex {
            index,
            serve_until,
            margin: signer.refresh_margin(),
            denials: Denials::default(),
        })
    }

    /// Keeps the slow path's signed compact NXDOMAIN for `name` (its
    /// `authorities`: SOA, NSEC and their RRSIGs) so that the fast path
    /// answers the name's next DO=1 queries. Only for a signed zone, an
    /// answer with nothing else, and while there is room.
    pub(crate) fn remember_denial(&self, name: &Name, authorities: &[hickory_proto::rr::Record]) {
        use hickory_proto::dnssec::rdata::DNSSECRData;
        use hickory_proto::rr::RData;
        let Some(signed) = self.signed.as_deref() else {
            return;
        };
        let name = name.to_lowercase();
        let Some(key) = super::zone::name_key(&name) else {
            return;
        };
        // Checked under the read lock the fast path shares, and again
        // under the write lock, which is taken only to insert: a flood of
        // new names past the cap never blocks the fast path's readers, nor
        // does encoding the template.
        let room = |d: &std::collections::HashMap<NameKey, Denial>| {
            d.len() < MAX_DENIALS && !d.contains_key(&key)
        };
        if !signed.denials.0.read().is_ok_and(|d| room(&d)) {
            return;
        }
        let expires = authorities
            .iter()
            .filter_map(|r| match &r.data {
                RData::DNSSEC(DNSSECRData::RRSIG(s)) => {
                    Some(u64::from(s.input().sig_expiration.get()))
                }
                _ => None,
            })
            .min();
        let Some(expires) = expires else {
            return;
        };
        let res = Resolution {
            authoritative: true,
            authorities: authorities.to_vec(),
            ..Resolution::default()
        };
        let Some(t) = template(&name, RecordType::A, res) else {
            return;
        };
        let Ok(mut denials) = signed.denials.0.write() else {
            return;
        };
        if room(&denials) {
            // As for the templates: see `serve_until`.
            denials.insert(key, (t, expires.saturating_sub(signed.margin)));
        }
    }

    /// Calls `write` with the compact NXDOMAIN kept for `name` (lower-cased
    /// wire form), while its signatures are fresh at `now`; `false` when
    /// there is none. A read lock, held while the response is written: no
    /// copy, no allocation.
    fn with_denial(&self, name: &[u8], now: u64, write: impl FnOnce(&Template) -> bool) -> bool {
        let Some(signed) = self.signed.as_deref() else {
            return false;
        };
        let Ok(denials) = signed.denials.0.read() else {
            return false;
        };
        match denials.get(name) {
            Some((t, until)) if now < *until => write(t),
            _ => false,
        }
    }

    /// Keeps `signed` as the zone's DO=1 templates.
    pub(crate) fn set_signed(&mut self, signed: Option<SignedIndex>) {
        self.signed = signed.map(Box::new);
    }

    /// The DO=1 templates, while their signatures are fresh at `now`
    /// (seconds since the epoch).
    fn signed(&self, now: u64) -> Option<&Self> {
        let s = self.signed.as_deref()?;
        (now < s.serve_until).then_some(&s.index)
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
        // DNSSEC (issue 13): a query with DO set to a signed zone is
        // answered from the DO=1 templates, which copy the store's
        // RRSIGs and NSECs as the others copy records, while those
        // signatures are fresh; what they lack (a name that does not
        // exist, a wildcard, an address left out) goes to the slow path,
        // which signs on demand. Unsigned zones, and queries without DO,
        // use the plain templates.
        let signer = zone
            .signer()
            .filter(|_| env.opt.is_some_and(|o| o.dnssec_ok));
        let dnssec = signer.is_some();
        // The zone's clock: the one its signatures were made by.
        let now = signer.map_or(0, crate::dnssec::ZoneSigner::now);
        let index = match dnssec {
            false => zone.fast_index(),
            true => match zone.fast_index().signed(now) {
                Some(index) => index,
                None => return false,
            },
        };
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
                // A signed zone's name that does not exist, answered
                // (and signed) by the slow path before.
                _ if dnssec => {
                    return zone.fast_index().with_denial(name, now, |t| {
                        // Counted as the NXDOMAIN it stands for.
                        seen.nxname = true;
                        self.write(
                            env,
                            packet,
                            Some(t.view()),
                            None,
                            0,
                            src,
                            transport,
                            (max_udp_payload, base),
                            out,
                        )
                    });
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
                                        dynamic,
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
    /// several after the first one's CNAME chain, rotated; in a DO=1
    /// answer, followed by their RRSIGs.
    #[allow(clippy::too_many_arguments)]
    fn assemble(
        &self,
        env: &Envelope,
        packet: &[u8],
        d: &Decision,
        dynamic: &Dynamic,
        routed_on: IpAddr,
        transport: Transport,
        (max_udp_payload, base): (u16, &OptOut<'_>),
        out: &mut Vec<u8>,
    ) -> bool {
        let per_dc = &dynamic.per_dc;
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
        // A DO=1 answer: the addresses' RRSIGs follow them, made for
        // exactly the addresses the answer holds.
        let (suffix, suffix_count): (&[u8], u16) = match a.sigs {
            0 => (&[], 0),
            _ => match signatures_for(d, dynamic, &parts, &kept, variant) {
                Some(s) => s,
                None => return false,
            },
        };
        // The lead's CNAME chain: its answer records before its addresses.
        let prefix_count = lead.counts[0] - a.count - a.sigs;
        let header = Header {
            counts: [prefix_count + total as u16 + suffix_count, 0, 0],
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
        out.extend_from_slice(suffix);
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

/// The RRSIGs (bytes, records) that follow a DO=1 answer's addresses: the
/// one datacenter's own, or the stored ones of the chosen combination.
/// `None` where the store has none: an address left out by per-address
/// health, or a combination not signed ahead.
fn signatures_for<'a>(
    d: &Decision,
    dynamic: &'a Dynamic,
    parts: &[Option<&'a Template>],
    kept: &[usize],
    variant: usize,
) -> Option<(&'a [u8], u16)> {
    // Every address of each datacenter that has some: a subset would be
    // another RRset, signed on demand.
    let mut lead = None;
    let mut contributing = 0;
    for (t, &k) in parts.iter().zip(kept) {
        let Some(t) = t else { continue };
        let a = t.addresses?;
        if a.count() != k {
            return None;
        }
        lead.get_or_insert((*t, a));
        contributing += 1;
    }
    let (lead, a) = lead?;
    if contributing == 1 {
        return Some((lead.body.get(a.end()..)?, a.sigs));
    }
    let mut mask = 0u32;
    for dc in d.dcs() {
        let slot = *dynamic.per_dc.slots.get(dc.index())?;
        mask |= 1u32.checked_shl(u32::from(slot))?;
    }
    let c = dynamic.combos.as_ref()?.get(variant)?.get(mask)?;
    Some((&c.suffix, c.sigs))
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
    // Not OPT, NSEC (a signed zone answers it with the name's own NSEC),
    // meta-types (FORMERR) or zone transfers: the general path's.
    let kind = q.qclass == 1 && !matches!(q.qtype, 41 | 47 | 128..=252);
    (env.exact && shape && options && kind).then_some(q)
}

//------------ Accounting ------------------------------------------------------

impl ZoneIndex {
    /// Calls `f` with every template and the name it answers (for a miss
    /// template, the stand-in's parent).
    fn each_template<'a>(&'a self, f: &mut dyn FnMut(&'a [u8], &'a Template)) {
        let mut response = |key: &'a [u8], r: &'a Response| match r {
            Response::Static(t) => f(key, t),
            Response::Dynamic(d) => {
                d.per_dc.templates.iter().flatten().for_each(|t| f(key, t));
                d.all_down
                    .iter()
                    .chain(&d.first_cname)
                    .for_each(|t| f(key, t));
            }
            Response::Defer => {}
        };
        for e in self.names.iter().chain(&self.wildcards) {
            let Some(g) = &e.general else { continue };
            for (_, r) in g.by_type.iter() {
                response(e.key(), r);
            }
            if let Some(r) = &g.other {
                response(e.key(), r);
            }
        }
    }

    /// Roughly the heap bytes the templates take: bodies, entries, and
    /// the sets' tables.
    fn heap_bytes(&self) -> usize {
        use std::mem::size_of;
        let table = |s: &HashSet<NameEntry>| s.capacity() * (size_of::<NameEntry>() + 1);
        let mut n = table(&self.names) + table(&self.wildcards);
        let template = |t: &Template| t.body.len() + 2 * t.fixups.len();
        for e in self.names.iter().chain(&self.wildcards) {
            n += e.data.len();
            let Some(g) = &e.general else { continue };
            n += size_of::<General>() + g.by_type.len() * size_of::<(u16, Response)>();
            if let Miss::Own(t) = &g.miss {
                n += size_of::<Template>() + template(t);
            }
            for r in g.by_type.iter().map(|(_, r)| r).chain(&g.other) {
                let Response::Dynamic(d) = r else { continue };
                n += size_of::<Dynamic>()
                    + 2 * d.per_dc.slots.len()
                    + d.per_dc.templates.len() * size_of::<[Template; 2]>();
                n += d.all_down.iter().chain(&d.first_cname).count() * size_of::<Template>();
                n += (d.combos.iter().flat_map(|c| c.iter()))
                    .flat_map(|c| c.0.iter())
                    .map(|c| size_of::<Combo>() + c.suffix.len())
                    .sum::<usize>();
            }
        }
        self.each_template(&mut |_, t| n += template(t));
        n + self.nxdomain.as_ref().map_or(0, template)
    }
}

impl Zone {
    /// Roughly the heap bytes of the zone's fast-path templates: the
    /// plain ones, and a signed zone's DO=1 ones (0 for an unsigned
    /// zone). For benchmarks and sizing.
    #[doc(hidden)]
    pub fn template_bytes(&self) -> (usize, usize) {
        let index = self.fast_index();
        let signed = index.signed.as_ref().map_or(0, |s| {
            std::mem::size_of::<SignedIndex>() + s.index.heap_bytes()
        });
        (index.heap_bytes(), signed)
    }
}

#[cfg(test)]
mod tests {
    use hickory_proto::dnssec::rdata::DNSSECRData;
    use hickory_proto::rr::RData;

    use super::*;

    /// The example zone signed with a fresh key; the directory holds the
    /// files for as long as the zone lives.
    fn signed_example() -> (tempfile::TempDir, Arc<Zone>) {
        let dir = tempfile::tempdir().unwrap();
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let keys = dir.path().join("keys");
        crate::dnssec::cli::keygen(
            "gslb.example.com.",
            crate::dnssec::keys::KeyAlgorithm::EcdsaP256Sha256,
            crate::dnssec::cli::Role::Csk,
            &keys,
        )
        .unwrap();
        let key = std::fs::read_dir(&keys)
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.extension().is_some_and(|e| e == "key"))
            .unwrap();
        let zone = std::fs::read_to_string(root.join("zones/gslb.example.com.toml")).unwrap();
        std::fs::create_dir_all(dir.path().join("zones")).unwrap();
        std::fs::write(
            dir.path().join("zones/gslb.example.com.toml"),
            format!(
                "{zone}\n[dnssec]\nkeys = [{{ file = {:?} }}]\n",
                key.display().to_string()
            ),
        )
        .unwrap();
        std::fs::write(dir.path().join("meridian.toml"), "zones = \"zones\"\n").unwrap();
        let (_, snap) = crate::load(&dir.path().join("meridian.toml")).unwrap();
        let zone = Arc::clone(&snap.zones()[0]);
        (dir, zone)
    }

    /// The records of a template's body, decoded after the question
    /// `key` (to which its pointers point).
    fn records(key: &[u8], counts: [u16; 3], body: &[u8]) -> Vec<hickory_proto::rr::Record> {
        let mut m = vec![0u8; 12];
        m[5] = 1;
        for (i, c) in counts.iter().enumerate() {
            m[6 + 2 * i..8 + 2 * i].copy_from_slice(&c.to_be_bytes());
        }
        m.extend_from_slice(key);
        m.extend_from_slice(&[0, 1, 0, 1]);
        m.extend_from_slice(body);
        let m = Message::from_vec(&m).unwrap();
        m.answers.into_iter().chain(m.authorities).collect()
    }

    fn expiration(r: &hickory_proto::rr::Record) -> Option<u64> {
        match &r.data {
            RData::DNSSEC(DNSSECRData::RRSIG(s)) => Some(u64::from(s.input().sig_expiration.get())),
            _ => None,
        }
    }

    /// Injected time: the DO=1 templates are served exactly while every
    /// signature they hold (combinations' included) is further than the
    /// refresh margin from expiring, as the general path serves a stored
    /// signature; from then on, not at all.
    #[test]
    fn signed_templates_never_outlive_their_signatures() {
        let (_dir, zone) = signed_example();
        let signer = zone.signer().unwrap();
        let margin = signer.refresh_margin();
        let index = zone.fast_index();
        let signed = index.signed.as_ref().expect("DO=1 templates");
        let mut earliest = u64::MAX;
        let mut sigs = 0;
        let mut count = |rs: Vec<hickory_proto::rr::Record>| {
            for e in rs.iter().filter_map(expiration) {
                earliest = earliest.min(e);
                sigs += 1;
            }
        };
        signed
            .index
            .each_template(&mut |key, t| count(records(key, t.counts, &t.body)));
        for e in &signed.index.names {
            let Some(g) = &e.general else { continue };
            for r in g.by_type.iter().map(|(_, r)| r) {
                let Response::Dynamic(d) = r else { continue };
                let Some(combos) = &d.combos else { continue };
                for (variant, combos) in combos.iter().enumerate() {
                    let lead = d.per_dc.templates.iter().map(|p| &p[variant]);
                    let Some((lead, a)) = lead
                        .filter_map(|t| Some((t, t.addresses?)))
                        .find(|(_, a)| a.count > 0)
                    else {
                        continue;
                    };
                    for c in combos.0.iter() {
                        let mut body = lead.body[..a.end()].to_vec();
                        body.extend_from_slice(&c.suffix);
                        let n = lead.counts[0] - a.sigs + c.sigs;
                        count(records(e.key(), [n, 0, 0], &body));
                    }
                }
            }
        }
        assert!(sigs > 50, "{sigs} signatures in the templates");
        assert_eq!(signed.serve_until, earliest - margin);
        let now = crate::dnssec::sign::unix_now();
        assert!(index.signed(now).is_some(), "fresh at build");
        assert!(index.signed(signed.serve_until - 1).is_some());
        assert!(
            index.signed(signed.serve_until).is_none(),
            "within the margin"
        );
        assert!(index.signed(earliest + 1).is_none(), "expired");
        // Every template was rendered at build: no name is missing.
        assert_eq!(signed.index.names.len(), zone.nodes().len());
        let (plain, signed_bytes) = zone.template_bytes();
        assert!(plain > 0 && signed_bytes > plain, "{plain} {signed_bytes}");
    }
}
