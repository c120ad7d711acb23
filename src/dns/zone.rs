//! The zone store: one zone's records and services in wire form, and the
//! lookup that turns a question into answer, authority and additional
//! sections.
//!
//! Built from a validated [`ZoneConfig`] whenever config changes; read-only
//! afterwards, so queries share it without locks.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::rdata::{A, AAAA, CNAME, NS, SOA};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use hickory_proto::serialize::binary::{
    BinDecodable, BinDecoder, BinEncodable, BinEncoder, NameEncoding, Restrict,
};

use crate::dnssec::ZoneSigner;
use crate::dnssec::sign::{Batch, OverBudget};
use crate::model::{AllDown, Fallback, ZoneConfig};
use crate::policy::{Decision, Outcome, Plan};

/// Longest CNAME chain followed inside a zone before giving up.
const MAX_CNAME_CHAIN: usize = 8;

/// The leftmost label of a wildcard owner's key: `*`, length 1.
pub(crate) const WILDCARD_LABEL: &[u8] = b"\x01*";

/// A service ready to answer: how it selects. Its address records are
/// made from the zone's datacenters when an answer needs them.
#[derive(Clone, Debug)]
pub(crate) struct ServiceAnswers {
    pub(crate) plan: Arc<Plan>,
    all_down: AllDown,
}

/// A name in lower-cased wire form: how the zone store and the fast index
/// key their names.
pub(crate) type NameKey = Box<[u8]>;

/// `name`'s key, or `None` if it cannot be encoded.
pub(crate) fn name_key(name: &Name) -> Option<NameKey> {
    name.to_lowercase()
        .to_bytes()
        .ok()
        .map(Vec::into_boxed_slice)
}

/// Whether the wire-form name `key` is `origin` or below it.
pub(crate) fn key_in(key: &[u8], origin: &[u8]) -> bool {
    let mut at = 0;
    while at < key.len() {
        if key.len() - at == origin.len() {
            return key[at..] == *origin;
        }
        at += 1 + usize::from(key[at]);
    }
    false
}

/// One RRset of a node, read from the node's wire-form data: what a
/// static RRset costs to keep is its RDATA and a few bytes, not a decoded
/// record per RR.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RrSet<'a> {
    rtype: RecordType,
    ttl: u32,
    /// Each record's RDATA after its 2-byte length; names uncompressed,
    /// spelled as configured.
    rdata: &'a [u8],
}

impl<'a> RrSet<'a> {
    /// The RRset's type.
    pub(crate) fn rtype(&self) -> RecordType {
        self.rtype
    }

    /// The TTL, the same for every record (RFC 2181 §5.2).
    pub(crate) fn ttl(&self) -> u32 {
        self.ttl
    }

    /// Each record's RDATA in wire form.
    pub(crate) fn wire(&self) -> impl Iterator<Item = &'a [u8]> + use<'a> {
        let rdata = self.rdata;
        let mut at = 0;
        std::iter::from_fn(move || {
            let len = rdata.get(at..at + 2)?;
            let len = usize::from(u16::from_be_bytes([len[0], len[1]]));
            let data = rdata.get(at + 2..at + 2 + len)?;
            at += 2 + len;
            Some(data)
        })
    }

    /// The records decoded (the slow path's view).
    fn rdatas(&self) -> impl Iterator<Item = RData> + use<'a> {
        let rtype = self.rtype;
        self.wire().filter_map(move |w| {
            let len = u16::try_from(w.len()).ok()?;
            RData::read(&mut BinDecoder::new(w), rtype, Restrict::new(len)).ok()
        })
    }

    /// The records with `owner` as their name.
    fn records<'n>(&self, owner: &'n Name) -> impl Iterator<Item = Record> + use<'a, 'n> {
        let ttl = self.ttl;
        self.rdatas()
            .map(move |d| Record::from_rdata(owner.clone(), ttl, d))
    }
}

/// Appends `data`'s wire form, after its length, to an RRset being built.
fn push_rdata(out: &mut Vec<u8>, data: &RData) -> Option<()> {
    let mut wire = Vec::new();
    let mut encoder = BinEncoder::new(&mut wire);
    encoder.set_name_encoding(NameEncoding::Uncompressed);
    data.emit(&mut encoder).ok()?;
    out.extend_from_slice(&u16::try_from(wire.len()).ok()?.to_be_bytes());
    out.extend_from_slice(&wire);
    Some(())
}

/// RRsets under construction: type, TTL, RDATA so far.
type Sets = Vec<(RecordType, u32, Vec<u8>)>;

/// The store under construction: per name, its RRsets and its service.
#[derive(Default)]
struct Building(HashMap<NameKey, (Sets, Option<u32>)>);

impl Building {
    /// Creates the node at `key` and every empty non-terminal above it
    /// up to `origin`, so that names between the apex and a record answer
    /// NODATA, not NXDOMAIN (RFC 8020).
    fn touch(&mut self, key: &[u8], origin: &[u8]) {
        let mut at = 0;
        while key.len() - at > origin.len() {
            let above = &key[at..];
            if self.0.contains_key(above) {
                return;
            }
            self.0.insert(above.into(), Default::default());
            at += 1 + usize::from(key[at]);
        }
        self.0.entry(origin.into()).or_default();
    }

    /// Adds `r` to its RRset at `key` (touched before).
    fn add(&mut self, key: &[u8], r: &Record) {
        let Some((sets, _)) = self.0.get_mut(key) else {
            return;
        };
        let t = r.record_type();
        let at = match sets.iter().position(|s| s.0 == t) {
            Some(i) => i,
            None => {
                sets.push((t, r.ttl, Vec::new()));
                sets.len() - 1
            }
        };
        if push_rdata(&mut sets[at].2, &r.data).is_none() {
            tracing::warn!(name = %r.name, rtype = %t, "record cannot be encoded; left out");
        }
    }
}

/// Length of an RRset's header in [`Node::data`]: type, TTL, and the
/// length of its records.
const SET_HEADER: usize = 10;

/// A name in the store: its key, its RRsets, its service. Hashed and
/// compared by key, so the store is a set of nodes looked up by key.
#[derive(Debug)]
pub(crate) struct Node {
    /// The key, then the RRsets in config order, one after the other:
    /// type (2 bytes), TTL (4), length of the records (4), then each
    /// record's RDATA after its length (2). One allocation per name,
    /// whatever it holds.
    data: Box<[u8]>,
    /// Length of the key at the start of `data`.
    key_len: u8,
    /// Index into `Zone::services`, or `NO_SERVICE`.
    service: u32,
    /// NS records here delegate a child zone.
    cut: bool,
}

/// [`Node::service`] of a name without one.
const NO_SERVICE: u32 = u32::MAX;

impl std::borrow::Borrow<[u8]> for Node {
    fn borrow(&self) -> &[u8] {
        self.key()
    }
}

impl std::hash::Hash for Node {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.key().hash(state);
    }
}

impl PartialEq for Node {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key()
    }
}

impl Eq for Node {}

impl Node {
    /// Lays `sets` out after `key`; `None` if the key is not a name.
    fn new(key: &[u8], sets: Sets, service: Option<u32>, cut: bool) -> Option<Self> {
        let key_len = u8::try_from(key.len()).ok()?;
        let mut data = Vec::with_capacity(
            key.len()
                + sets
                    .iter()
                    .map(|(_, _, r)| SET_HEADER + r.len())
                    .sum::<usize>(),
        );
        data.extend_from_slice(key);
        for (rtype, ttl, rdata) in sets {
            let Ok(len) = u32::try_from(rdata.len()) else {
                continue;
            };
            data.extend_from_slice(&u16::from(rtype).to_be_bytes());
            data.extend_from_slice(&ttl.to_be_bytes());
            data.extend_from_slice(&len.to_be_bytes());
            data.extend_from_slice(&rdata);
        }
        Some(Self {
            data: data.into_boxed_slice(),
            key_len,
            service: service.unwrap_or(NO_SERVICE),
            cut,
        })
    }

    /// The name's key.
    pub(crate) fn key(&self) -> &[u8] {
        &self.data[..usize::from(self.key_len)]
    }

    fn rrset(&self, t: RecordType) -> Option<RrSet<'_>> {
        self.rrsets().find(|s| s.rtype == t)
    }

    /// RRsets in config order.
    pub(crate) fn rrsets(&self) -> impl Iterator<Item = RrSet<'_>> {
        let data = &self.data[usize::from(self.key_len)..];
        let mut at = 0;
        std::iter::from_fn(move || {
            let h = data.get(at..at + SET_HEADER)?;
            let rtype = RecordType::from(u16::from_be_bytes([h[0], h[1]]));
            let ttl = u32::from_be_bytes([h[2], h[3], h[4], h[5]]);
            let len = usize::try_from(u32::from_be_bytes([h[6], h[7], h[8], h[9]])).ok()?;
            let rdata = data.get(at + SET_HEADER..at + SET_HEADER + len)?;
            at += SET_HEADER + len;
            Some(RrSet { rtype, ttl, rdata })
        })
    }

    /// The service answering here.
    fn service(&self) -> Option<usize> {
        (self.service != NO_SERVICE).then_some(self.service as usize)
    }
}

/// One zone, ready for queries.
#[derive(Debug)]
pub struct Zone {
    origin: Name,
    origin_key: NameKey,
    origin_labels: u8,
    /// SOA with the negative-caching TTL, for authority sections.
    negative_soa: Record,
    negative_ttl: u32,
    /// Shared with the zone a background re-sign makes from this one.
    nodes: Arc<HashSet<Node>>,
    /// Some node delegates (so `find_cut` has something to find).
    has_cuts: bool,
    /// Some owner is a wildcard (so `wildcard_for` has something to find).
    has_wildcards: bool,
    /// The SOA's MNAME and RNAME: the NODATA and NXDOMAIN answers point
    /// at them, so names above them are not plain.
    soa_names: [NameKey; 2],
    services: Vec<ServiceAnswers>,
    /// The validated config this was built from (for `explain`), without
    /// its static records: those live in `nodes`.
    pub config: Arc<ZoneConfig>,
    /// The fast path's templates for this zone's names.
    fast: super::fast::ZoneIndex,
    /// Identifies the files the zone was built from (a hash of their
    /// contents): a reload keeps the zone while they stay the same.
    pub fingerprint: u64,
    /// The keys and signatures, when the zone is signed (`[dnssec]`).
    signer: Option<ZoneSigner>,
}

/// What a lookup produced; the handler turns it into a message.
#[derive(Debug, Default)]
pub(crate) struct Resolution {
    pub(crate) rcode: ResponseCode,
    pub(crate) authoritative: bool,
    pub(crate) answers: Vec<Record>,
    pub(crate) authorities: Vec<Record>,
    pub(crate) additionals: Vec<Record>,
    /// ECS scope when a policy decided the answer; `None` means the answer
    /// is the same for every client (scope 0).
    pub(crate) scope: Option<u8>,
    /// The service whose choice decided the answer, if any.
    pub(crate) service: Option<usize>,
    /// The answer starts with an in-zone CNAME chain that was followed
    /// (not a service's own fallback CNAME).
    pub(crate) followed_cname: bool,
    /// Signing made a name that does not exist a NOERROR answer (RFC 9824
    /// compact denial: its NSEC lists NXNAME); counted as NXDOMAIN.
    pub(crate) nxname: bool,
}

impl Resolution {
    /// Copies the resolution into a response message.
    pub(crate) fn fill(self, resp: &mut hickory_proto::op::Message) {
        resp.metadata.authoritative = self.authoritative;
        resp.metadata.response_code = self.rcode;
        resp.answers = self.answers;
        resp.authorities = self.authorities;
        resp.additionals = self.additionals;
    }
}

impl Resolution {
    /// Whether a service decided the answer at the end of an in-zone
    /// CNAME chain.
    pub(crate) fn tailored_via_cname(&self) -> bool {
        self.service.is_some() && self.followed_cname
    }

    /// RFC 7871 §7.2.1: with ECS in the query, an in-zone CNAME whose
    /// target's answer is tailored ([`Self::tailored_via_cname`]) is
    /// answered alone, with its own (zero) scope, and the resolver follows
    /// it. Otherwise a resolver would cache the static CNAME once per
    /// client network.
    pub(crate) fn first_cname_only(&mut self) {
        self.answers.truncate(1);
        self.authorities.clear();
        self.additionals.clear();
        self.rcode = ResponseCode::NoError;
        self.authoritative = true;
        self.scope = None;
        self.service = None;
    }
}

/// Decides a service's answer. The query path asks the service's plan;
/// the fast-path builder forces each datacenter in turn.
pub(crate) type Choose<'a> = dyn FnMut(&ServiceAnswers) -> Decision + 'a;

/// Most datacenter combinations of one service whose answers are signed
/// at build time (per TTL); beyond it only single datacenters are.
const MAX_COMBINATIONS: usize = 256;

/// n choose k.
fn binomial(n: usize, k: usize) -> usize {
    (0..k).fold(1, |acc, i| acc * (n - i) / (i + 1))
}

/// The sets of a service's `n` datacenters (bit `i` for its `i`-th)
/// whose answers are signed at build time: every combination of up to
/// `max_answers` of them when there are at most [`MAX_COMBINATIONS`],
/// else each datacenter alone (the records' order does not matter to
/// the store). The fast path's DO=1 templates keep the signatures of
/// the sets of two or more.
pub(crate) fn signed_sets(n: usize, max_answers: usize) -> Vec<u64> {
    let k = max_answers.clamp(1, n.max(1));
    if k > 1 && n <= 16 && (1..=k).map(|j| binomial(n, j)).sum::<usize>() <= MAX_COMBINATIONS {
        (1u64..(1 << n))
            .filter(|m| m.count_ones() as usize <= k)
            .collect()
    } else {
        (0..n.min(64)).map(|b| 1u64 << b).collect()
    }
}

/// `records` with each RRset's RRSIGs after it; a delegation's NS RRset
/// (NS below `origin`) is not signed: it is the child's data (RFC 4035
/// §2.2).
fn with_signatures(
    sigs: &mut Signatures<'_>,
    origin: &Name,
    records: Vec<Record>,
) -> Result<Vec<Record>, OverBudget> {
    let mut out = Vec::with_capacity(records.len() * 2);
    let mut start = 0;
    while start < records.len() {
        let first = &records[start];
        let end = records[start..]
            .iter()
            .position(|r| r.record_type() != first.record_type() || r.name != first.name)
            .map_or(records.len(), |n| start + n);
        let run = &records[start..end];
        out.extend_from_slice(run);
        if first.record_type() != RecordType::NS || first.name == *origin {
            out.extend(sigs(run)?.iter().cloned());
        }
        start = end;
    }
    Ok(out)
}

/// Where an answer's RRSIGs come from: the signer at query time, or its
/// store alone when the fast path builds its DO=1 templates.
pub(crate) type Signatures<'a> =
    dyn FnMut(&[Record]) -> Result<std::sync::Arc<[Record]>, OverBudget> + 'a;

/// The target of a CNAME RRset (its first and only record).
fn cname_target(set: RrSet<'_>) -> Option<Name> {
    match set.rdatas().next()? {
        RData::CNAME(c) => Some(c.0),
        _ => None,
    }
}

impl Zone {
    /// Builds the store from `config`, moving its static records into it
    /// (the zone's `config` keeps everything else). `plans[i]` answers
    /// `config.services[i]`.
    pub fn build(mut config: ZoneConfig, plans: Vec<Arc<Plan>>, fingerprint: u64) -> Self {
        let records = std::mem::take(&mut config.records);
        let z = &config;
        let origin = z.origin.clone();
        let soa_rdata = SOA::new(
            z.soa.mname.clone(),
            z.soa.rname.clone(),
            z.soa.serial,
            z.soa.refresh as i32,
            z.soa.retry as i32,
            z.soa.expire as i32,
            z.soa.minimum,
        );
        let soa = Record::from_rdata(origin.clone(), z.soa.ttl, RData::SOA(soa_rdata));
        // RFC 2308 §5: the negative TTL is the minimum of the SOA's TTL and
        // its MINIMUM field.
        let negative_ttl = z.soa.ttl.min(z.soa.minimum);
        let mut negative_soa = soa.clone();
        negative_soa.ttl = negative_ttl;

        let origin_key = name_key(&origin).unwrap_or_default();
        let mut nodes = Building::default();
        nodes.touch(&origin_key, &origin_key);
        nodes.add(&origin_key, &soa);
        let signer = z.dnssec.as_ref().map(|d| ZoneSigner::new(&origin, d));
        // The DNSKEY RRset lives at the apex like any other RRset.
        for r in signer.iter().flat_map(ZoneSigner::dnskey_records) {
            nodes.add(&origin_key, &r);
        }
        for n in &z.ns {
            let r = Record::from_rdata(origin.clone(), z.ns_ttl, RData::NS(NS(n.clone())));
            nodes.add(&origin_key, &r);
        }
        for r in records {
            let Some(key) = name_key(&r.0.name) else {
                continue; // validation encodes every name
            };
            nodes.touch(&key, &origin_key);
            nodes.add(&key, &r.0);
        }
        for (i, s) in z.services.iter().enumerate() {
            let Some(key) = name_key(&s.fqdn) else {
                continue;
            };
            nodes.touch(&key, &origin_key);
            if let Some(node) = nodes.0.get_mut(&key) {
                node.1 = u32::try_from(i).ok();
            }
        }
        let mut has_cuts = false;
        let mut has_wildcards = false;
        let nodes: HashSet<Node> = nodes
            .0
            .into_iter()
            .filter_map(|(key, (sets, service))| {
                let cut = key != origin_key && sets.iter().any(|s| s.0 == RecordType::NS);
                has_cuts |= cut;
                has_wildcards |= key.starts_with(WILDCARD_LABEL);
                Node::new(&key, sets, service, cut)
            })
            .collect();
        let services = z
            .services
            .iter()
            .zip(plans)
            .map(|(s, plan)| ServiceAnswers {
                plan,
                all_down: s.when_all_down.clone(),
            })
            .collect();
        let mut zone = Self {
            origin_labels: origin.num_labels(),
            origin,
            origin_key,
            negative_soa,
            negative_ttl,
            nodes: Arc::new(nodes),
            has_cuts,
            has_wildcards,
            soa_names: [
                name_key(&z.soa.mname).unwrap_or_default(),
                name_key(&z.soa.rname).unwrap_or_default(),
            ],
            services,
            config: Arc::new(config),
            fast: super::fast::ZoneIndex::default(),
            fingerprint,
            signer: None,
        };
        zone.index_and_sign(signer, None);
        zone
    }

    /// The tail of [`Self::build`] and [`Self::resigned`]: the fast
    /// path's templates and, for a signed zone, its precomputed
    /// signatures. `previous` is the signer of the zone being re-signed.
    fn index_and_sign(&mut self, signer: Option<ZoneSigner>, previous: Option<&ZoneSigner>) {
        self.fast = super::fast::ZoneIndex::build(self);
        if let Some(mut signer) = signer {
            let started = std::time::Instant::now();
            let now = signer.now();
            signer.begin(now, previous);
            let mut batch = Batch::new(&mut signer);
            self.precompute(&mut batch);
            batch.finish();
            tracing::info!(
                zone = %self.origin,
                rrsets = signer.precomputed(),
                failed = signer.failed(),
                elapsed_ms = started.elapsed().as_millis() as u64,
                "signed the zone"
            );
            self.signer = Some(signer);
            // The DO=1 templates copy the store's signatures: built after
            // it is filled, so a re-signed zone gets fresh ones.
            let signed = super::fast::ZoneIndex::build_signed(self);
            self.fast.set_signed(signed);
        }
    }

    /// The same zone with every precomputed signature made again, now:
    /// what the background re-signer publishes in this one's place. It
    /// shares the names and services; only the signatures and the fast
    /// path's templates are made anew. `None` for an unsigned zone.
    ///
    /// # Errors
    ///
    /// The number of RRsets that could not be signed (each was logged);
    /// the caller keeps this zone.
    pub fn resigned(&self) -> Option<Result<Self, usize>> {
        let previous = self.signer.as_ref()?;
        let cfg = self.config.dnssec.as_ref()?;
        let mut zone = Self {
            origin: self.origin.clone(),
            origin_key: self.origin_key.clone(),
            origin_labels: self.origin_labels,
            negative_soa: self.negative_soa.clone(),
            negative_ttl: self.negative_ttl,
            nodes: Arc::clone(&self.nodes),
            has_cuts: self.has_cuts,
            has_wildcards: self.has_wildcards,
            soa_names: self.soa_names.clone(),
            services: self.services.clone(),
            config: Arc::clone(&self.config),
            fast: super::fast::ZoneIndex::default(),
            fingerprint: self.fingerprint,
            signer: None,
        };
        zone.index_and_sign(Some(ZoneSigner::new(&self.origin, cfg)), Some(previous));
        let failed = zone.signer.as_ref().map_or(0, ZoneSigner::failed);
        Some(if failed == 0 { Ok(zone) } else { Err(failed) })
    }

    /// Whether the zone is signed.
    pub fn is_signed(&self) -> bool {
        self.signer.is_some()
    }

    /// The signer, when the zone is signed.
    pub fn signer(&self) -> Option<&ZoneSigner> {
        self.signer.as_ref()
    }

    /// The types at `node` as an NSEC lists them: its RRsets, and A and
    /// AAAA where a service answers.
    fn node_types(&self, node: &Node) -> Vec<RecordType> {
        let mut types: Vec<RecordType> = node.rrsets().map(|s| s.rtype).collect();
        if node.service().is_some() {
            types.extend([RecordType::A, RecordType::AAAA]);
        }
        types
    }

    /// Signs, at build time, every RRset an answer is expected to hold
    /// (see README, "DNSSEC"): each authoritative static RRset (DS but
    /// not NS at a delegation; no glue), SOA as the negative answers
    /// carry it, the DNSKEY RRset, one NODATA NSEC per name (per address
    /// type left out, for services), the insecure delegations' NSECs, and
    /// each service's answer from every combination of up to
    /// `max_answers` datacenters (see [`MAX_COMBINATIONS`]) and its
    /// fallback, at the normal and the degraded TTL.
    fn precompute(&self, batch: &mut Batch<'_>) {
        let neg = self.negative_ttl;
        let mut soa_ttls: Vec<u32> = vec![neg];
        for node in self.nodes.iter() {
            let Ok(owner) = <Name as BinDecodable>::from_bytes(node.key()) else {
                continue;
            };
            if let Some((cut, _)) = self.find_cut(&owner)
                && cut != owner
            {
                continue; // below a delegation: not ours to sign
            }
            let types = self.node_types(node);
            for set in node.rrsets() {
                if node.cut && set.rtype != RecordType::DS {
                    continue;
                }
                batch.add(set.records(&owner).collect());
            }
            let mut variants = vec![types.clone()];
            if let Some(i) = node.service() {
                for t in [RecordType::A, RecordType::AAAA] {
                    variants.push(types.iter().copied().filter(|&x| x != t).collect());
                }
                if let Some(svc) = self.config.services.get(i) {
                    let capped = [svc.ttl, svc.degraded_ttl, self.services[i].plan.ttl()];
                    soa_ttls.extend(capped.map(|t| t.min(neg)));
                    self.precompute_service(batch, &owner, i);
                }
            }
            let mut nsec_ttls = vec![neg];
            if let Some(svc) = node.service().and_then(|i| self.config.services.get(i)) {
                nsec_ttls.extend([svc.ttl, svc.degraded_ttl].map(|t| t.min(neg)));
                nsec_ttls.dedup();
            }
            for v in &variants {
                for &ttl in &nsec_ttls {
                    if let Some(nsec) = crate::dnssec::denial::nsec(&owner, v, ttl) {
                        batch.add(vec![nsec]);
                    }
                }
            }
        }
        soa_ttls.sort_unstable();
        soa_ttls.dedup();
        for ttl in soa_ttls {
            let mut soa = self.negative_soa.clone();
            soa.ttl = ttl;
            batch.add(vec![soa]);
        }
    }

    /// A service's single-datacenter answers and its fallback, at both
    /// TTLs.
    fn precompute_service(&self, batch: &mut Batch<'_>, owner: &Name, i: usize) {
        let Some(svc) = self.config.services.get(i) else {
            return;
        };
        let ttls = [svc.ttl, svc.degraded_ttl];
        let family = |v4: &[std::net::Ipv4Addr], v6: &[std::net::Ipv6Addr], ttl: u32| {
            let a: Vec<Record> = v4
                .iter()
                .map(|&ip| Record::from_rdata(owner.clone(), ttl, RData::A(A(ip))))
                .collect();
            let aaaa: Vec<Record> = v6
                .iter()
                .map(|&ip| Record::from_rdata(owner.clone(), ttl, RData::AAAA(AAAA(ip))))
                .collect();
            [a, aaaa]
        };
        let dcs: Vec<&crate::model::Datacenter> = svc
            .datacenters
            .iter()
            .filter_map(|dc| self.config.datacenters.get(dc.index()))
            .collect();
        let n = dcs.len();
        let masks = signed_sets(n, svc.max_answers);
        for &ttl in &ttls {
            for &mask in &masks {
                let chosen = || (0..n).filter(move |b| mask & (1 << b) != 0).map(|b| dcs[b]);
                let v4: Vec<std::net::Ipv4Addr> = chosen().flat_map(|d| d.v4.clone()).collect();
                let v6: Vec<std::net::Ipv6Addr> = chosen().flat_map(|d| d.v6.clone()).collect();
                for set in family(&v4, &v6, ttl) {
                    batch.add(set);
                }
            }
            if let AllDown::Fallback(fb) = &svc.when_all_down {
                for set in family(&fb.v4, &fb.v6, ttl) {
                    batch.add(set);
                }
                if let Some(target) = &fb.cname {
                    let r =
                        Record::from_rdata(owner.clone(), ttl, RData::CNAME(CNAME(target.clone())));
                    batch.add(vec![r]);
                }
            }
        }
    }

    /// Adds DNSSEC records to a resolution for a query with DO set, at
    /// the zone clock's time now: RRSIGs after each RRset of the answer and authority
    /// sections (not after a referral's NS RRset, nor in the additional
    /// section); for a negative answer the compact-denial NSEC (RFC 9824;
    /// NXDOMAIN becomes NOERROR with NXNAME); for a referral the DS RRset
    /// or the NSEC that proves there is none. `Err` when a signature had
    /// to be made and this second's budget is spent.
    pub(crate) fn sign_answer(
        &self,
        res: &mut Resolution,
        qname: &Name,
        qtype: RecordType,
    ) -> Result<(), OverBudget> {
        let Some(signer) = &self.signer else {
            return Ok(());
        };
        let now = signer.now();
        self.sign_answer_with(res, qname, qtype, &mut |rrset| {
            signer.signatures(rrset, now)
        })
    }

    /// [`Self::sign_answer`] with the RRSIGs from `sigs` (`Err` from it
    /// fails the whole answer).
    pub(crate) fn sign_answer_with(
        &self,
        res: &mut Resolution,
        qname: &Name,
        qtype: RecordType,
        sigs: &mut Signatures<'_>,
    ) -> Result<(), OverBudget> {
        if res.rcode != ResponseCode::NoError && res.rcode != ResponseCode::NXDomain {
            return Ok(());
        }
        let soa_ttl = res
            .authorities
            .iter()
            .find(|r| r.record_type() == RecordType::SOA)
            .map(|r| r.ttl);
        let cut = res
            .authorities
            .iter()
            .find(|r| r.record_type() == RecordType::NS)
            .map(|r| r.name.clone());
        // The name the answer ends at: the last in-zone CNAME's target.
        // Lower-cased: an NSEC's next name keeps its case in canonical
        // form (RFC 6840 §5.1), so the query's spelling would make a new
        // RRset to sign on demand for every mix of case a client sends.
        let last = res
            .answers
            .iter()
            .rev()
            .find_map(|r| match &r.data {
                RData::CNAME(c) => Some(c.0.clone()),
                _ => None,
            })
            .filter(|t| self.origin.zone_of(t))
            .unwrap_or_else(|| qname.clone())
            .to_lowercase();
        // A query for NSEC asks for the name's own NSEC, which compact
        // denial makes exist at every name in the zone: it is the answer
        // (RFC 4035 §3.1.1), not a NODATA whose proof would list NSEC,
        // and not an in-zone CNAME's target (RFC 4035 §2.5: NSEC lives
        // beside a CNAME). A referral stays one: the cut's NSEC is the
        // parent's, and the referral carries it.
        // (A CNAME whose target is delegated is not a referral for the
        // CNAME's own name.) A name too long to have a successor keeps
        // the answer it had.
        let referral = cut.as_ref().is_some_and(|c| c.zone_of(qname));
        let own_nsec = (qtype == RecordType::NSEC && !referral)
            .then(|| {
                let owner = qname.to_lowercase();
                match self.node_or_wildcard(&owner) {
                    Some(node) => Some((
                        crate::dnssec::denial::nsec(
                            &owner,
                            &self.node_types(node),
                            self.negative_ttl,
                        )?,
                        false,
                    )),
                    None => Some((
                        crate::dnssec::denial::nxname(&owner, self.negative_ttl)?,
                        true,
                    )),
                }
            })
            .flatten();
        if let Some((nsec, nxname)) = own_nsec {
            res.nxname = nxname;
            res.rcode = ResponseCode::NoError;
            res.authorities.clear();
            res.additionals.clear();
            res.scope = None;
            res.service = None;
            res.followed_cname = false;
            res.answers = with_signatures(sigs, &self.origin, vec![nsec])?;
            return Ok(());
        }
        match (soa_ttl, cut) {
            (None, Some(cut)) => {
                // RFC 4035 §3.1.4: a referral carries the DS RRset, or the
                // NSEC proving there is none.
                if let Some(node) = self.node(&cut) {
                    match node.rrset(RecordType::DS) {
                        Some(ds) => res.authorities.extend(ds.records(&cut)),
                        // Lower-cased, as `last` above.
                        None => res.authorities.extend(crate::dnssec::denial::nsec(
                            &cut.to_lowercase(),
                            &self.node_types(node),
                            self.negative_ttl,
                        )),
                    }
                }
            }
            (Some(ttl), _) if res.rcode == ResponseCode::NXDomain => {
                // RFC 9824 §3.2: NOERROR, and an NSEC with NXNAME.
                res.rcode = ResponseCode::NoError;
                res.nxname = true;
                res.authorities
                    .extend(crate::dnssec::denial::nxname(&last, ttl));
            }
            (Some(ttl), _) => {
                let types: Vec<RecordType> = self
                    .node_or_wildcard(&last)
                    .map(|n| self.node_types(n))
                    .unwrap_or_default()
                    .into_iter()
                    .filter(|&t| t != qtype)
                    .collect();
                res.authorities
                    .extend(crate::dnssec::denial::nsec(&last, &types, ttl));
            }
            (None, None) => {}
        }
        let origin = &self.origin;
        res.answers = with_signatures(sigs, origin, std::mem::take(&mut res.answers))?;
        res.authorities = with_signatures(sigs, origin, std::mem::take(&mut res.authorities))?;
        Ok(())
    }

    /// The fast path's templates.
    pub(crate) fn fast_index(&self) -> &super::fast::ZoneIndex {
        &self.fast
    }

    /// Every name with data or below which data exists (empty
    /// non-terminals), with its node, for the fast-path index.
    pub(crate) fn nodes(&self) -> impl ExactSizeIterator<Item = &Node> {
        self.nodes.iter()
    }

    /// Whether a node exists at `name`.
    pub(crate) fn has_node(&self, name: &Name) -> bool {
        self.node(name).is_some()
    }

    fn node(&self, name: &Name) -> Option<&Node> {
        self.nodes.get(&*name_key(name)?)
    }

    /// The node answering for `name`: its own, or for a name that does
    /// not exist, the wildcard that synthesizes it (see
    /// [`Self::wildcard_for`]).
    fn node_or_wildcard(&self, name: &Name) -> Option<&Node> {
        let key = name_key(name)?;
        self.nodes.get(&*key).or_else(|| self.wildcard_for(&key))
    }

    /// RFC 4592 §3.3.1: for a name that does not exist, the wildcard
    /// `*` directly below its closest encloser (its longest existing
    /// ancestor), if there is one. Existing names, empty non-terminals
    /// among them, block the match: a wildcard never answers for a name
    /// below another existing name.
    pub(crate) fn wildcard_for(&self, key: &[u8]) -> Option<&Node> {
        if !self.has_wildcards {
            return None;
        }
        let mut at = 0;
        while key.len() - at > self.origin_key.len() {
            at += 1 + usize::from(key[at]);
            let encloser = key.get(at..)?;
            if self.nodes.contains(encloser) {
                let mut wildcard = Vec::with_capacity(WILDCARD_LABEL.len() + encloser.len());
                wildcard.extend_from_slice(WILDCARD_LABEL);
                wildcard.extend_from_slice(encloser);
                return self.nodes.get(&wildcard[..]);
            }
        }
        None
    }

    /// Whether some owner in the zone is a wildcard.
    pub(crate) fn has_wildcards(&self) -> bool {
        self.has_wildcards
    }

    /// The origin's key.
    pub(crate) fn origin_key(&self) -> &[u8] {
        &self.origin_key
    }

    /// Whether the node at `key` and every query at it is answered from
    /// its own RRsets alone: not the apex, not a service, no CNAME or NS
    /// here, nothing delegated at or above it; and its negative answers
    /// are the zone's, encoded alike for every such name: not at or above
    /// the SOA's names, which the SOA record would compress against it.
    /// The fast index shares templates between such nodes.
    pub(crate) fn is_plain(&self, key: &[u8], node: &Node) -> bool {
        if *key == *self.origin_key || node.service().is_some() || node.cut {
            return false;
        }
        if self.near_soa_names(key) {
            return false;
        }
        if node
            .rrsets()
            .any(|s| matches!(s.rtype, RecordType::CNAME | RecordType::NS))
        {
            return false;
        }
        if self.has_cuts {
            let mut at = 0;
            while key.len() - at > self.origin_key.len() {
                if self.nodes.get(&key[at..]).is_some_and(|n| n.cut) {
                    return false;
                }
                at += 1 + usize::from(key[at]);
            }
        }
        true
    }

    /// Whether `key` is at, above or below one of the SOA's names:
    /// responses with the SOA compress those names against such a
    /// question, each in its own way.
    pub(crate) fn near_soa_names(&self, key: &[u8]) -> bool {
        self.soa_names
            .iter()
            .any(|n| key_in(n, key) || key_in(key, n))
    }

    /// Record types present at `name` and at the names its in-zone CNAME
    /// chain leads to; with A and AAAA where a service answers.
    pub(crate) fn types_along(&self, name: &Name) -> Vec<RecordType> {
        let mut out = Vec::new();
        let mut name = name.clone();
        for _ in 0..MAX_CNAME_CHAIN {
            let Some(node) = self.node_or_wildcard(&name) else {
                break;
            };
            out.extend(node.rrsets().map(|s| s.rtype));
            if node.service().is_some() {
                out.extend([RecordType::A, RecordType::AAAA]);
            }
            match node.rrset(RecordType::CNAME).and_then(cname_target) {
                Some(t) if self.origin.zone_of(&t) => name = t,
                _ => break,
            }
        }
        out.sort_unstable_by_key(|t| u16::from(*t));
        out.dedup();
        out
    }

    /// The service that answers address queries for `name` (through an
    /// in-zone CNAME chain, or a wildcard), if any.
    pub fn service_at(&self, name: &str) -> Option<usize> {
        let name = Name::from_ascii(name).ok()?;
        if !self.origin.zone_of(&name) {
            return None;
        }
        let mut no_choice = |_: &ServiceAnswers| Decision::empty();
        self.resolve_with(&name, RecordType::A, &mut no_choice)
            .service
    }

    /// The service at index `i`.
    pub(crate) fn service(&self, i: usize) -> &ServiceAnswers {
        &self.services[i]
    }

    /// How many addresses datacenter `dc` answers `qtype` with (ANY is
    /// answered as A).
    pub(crate) fn addresses(&self, dc: crate::model::DcId, qtype: RecordType) -> usize {
        self.config.datacenters.get(dc.index()).map_or(0, |d| {
            if qtype == RecordType::AAAA {
                d.v6.len()
            } else {
                d.v4.len()
            }
        })
    }

    /// Number of datacenters (for per-datacenter templates).
    pub(crate) fn datacenter_count(&self) -> usize {
        self.config.datacenters.len()
    }

    /// The zone apex.
    pub fn origin(&self) -> &Name {
        &self.origin
    }

    /// Number of labels in the apex (longest-match zone selection).
    pub(crate) fn origin_labels(&self) -> u8 {
        self.origin_labels
    }

    /// The highest delegation point at or above `name` (below the apex).
    fn find_cut(&self, name: &Name) -> Option<(Name, &Node)> {
        if !self.has_cuts {
            return None;
        }
        let labels = name.num_labels();
        (self.origin_labels + 1..=labels).find_map(|n| {
            let candidate = name.trim_to(usize::from(n));
            let node = self.node(&candidate)?;
            node.cut.then_some((candidate, node))
        })
    }

    fn add_glue(&self, targets: impl Iterator<Item = Name>, out: &mut Vec<Record>) {
        for target in targets {
            if !self.origin.zone_of(&target) {
                continue;
            }
            if let Some(node) = self.node(&target) {
                for t in [RecordType::A, RecordType::AAAA] {
                    if let Some(set) = node.rrset(t) {
                        out.extend(set.records(&target));
                    }
                }
            }
        }
    }

    fn negative(&self, res: &mut Resolution, ttl_cap: Option<u32>) {
        let mut soa = self.negative_soa.clone();
        if let Some(cap) = ttl_cap {
            soa.ttl = soa.ttl.min(cap);
        }
        res.authorities.push(soa);
    }

    /// Answers `qname`/`qtype` (in the zone), with the service choice made
    /// by `choose`: the query path ranks and filters by health; the
    /// fast-path builder forces each datacenter in turn.
    pub(crate) fn resolve_with(
        &self,
        qname: &Name,
        qtype: RecordType,
        choose: &mut Choose<'_>,
    ) -> Resolution {
        self.resolve(qname, qtype, choose, true)
    }

    /// Answers `qname`/`qtype` as if the zone had no wildcards: what a
    /// name that does not exist gets where no wildcard covers it (the
    /// fast path's miss templates).
    pub(crate) fn resolve_literally(
        &self,
        qname: &Name,
        qtype: RecordType,
        choose: &mut Choose<'_>,
    ) -> Resolution {
        self.resolve(qname, qtype, choose, false)
    }

    fn resolve(
        &self,
        qname: &Name,
        qtype: RecordType,
        choose: &mut Choose<'_>,
        wildcards: bool,
    ) -> Resolution {
        let mut res = Resolution {
            authoritative: true,
            ..Resolution::default()
        };
        let mut name = qname.clone();
        for _ in 0..MAX_CNAME_CHAIN {
            if let Some((cut, node)) = self.find_cut(&name) {
                // DS for the cut itself is the parent's (our) data.
                let ds_at_cut = qtype == RecordType::DS && cut == name;
                if !ds_at_cut {
                    self.referral(&cut, node, &mut res);
                    return res;
                }
            }
            let found = match wildcards {
                true => self.node_or_wildcard(&name),
                false => self.node(&name),
            };
            // A wildcard's records are synthesized with the name asked
            // for as their owner (RFC 4592 §3.3.2): `name` stays as is.
            let Some(node) = found else {
                // RFC 6604: after a CNAME, the rcode describes the last name.
                res.rcode = ResponseCode::NXDomain;
                self.negative(&mut res, None);
                return res;
            };
            if qtype != RecordType::CNAME
                && let Some(cname) = node.rrset(RecordType::CNAME)
            {
                res.answers.extend(cname.records(&name).take(1));
                let Some(target) = cname_target(cname) else {
                    return res;
                };
                if !self.origin.zone_of(&target) {
                    // Out of zone: the resolver follows it.
                    return res;
                }
                name = target;
                res.followed_cname = true;
                continue;
            }
            self.answer_node(node, &name, qtype, choose, &mut res);
            return res;
        }
        // Chain too long (or a loop): return what we have; the resolver
        // will give up on it the same way.
        res
    }

    /// The configured last-resort answer when every datacenter is down.
    fn fallback(
        &self,
        fb: &Fallback,
        name: &Name,
        qtype: RecordType,
        ttl: u32,
        res: &mut Resolution,
    ) {
        if let Some(target) = &fb.cname {
            res.answers.push(Record::from_rdata(
                name.clone(),
                ttl,
                RData::CNAME(CNAME(target.clone())),
            ));
            return;
        }
        let records: Vec<Record> = if qtype == RecordType::A {
            fb.v4
                .iter()
                .map(|&ip| Record::from_rdata(name.clone(), ttl, RData::A(A(ip))))
                .collect()
        } else {
            fb.v6
                .iter()
                .map(|&ip| Record::from_rdata(name.clone(), ttl, RData::AAAA(AAAA(ip))))
                .collect()
        };
        if records.is_empty() {
            self.negative(res, Some(ttl));
        }
        res.answers.extend(records);
    }

    fn referral(&self, cut: &Name, node: &Node, res: &mut Resolution) {
        // AA describes the answer section: an in-zone CNAME that leads
        // into a delegation is still our authoritative data (RFC 1035
        // §4.1.1); only a bare referral is non-authoritative.
        res.authoritative = !res.answers.is_empty();
        let Some(ns) = node.rrset(RecordType::NS) else {
            return;
        };
        res.authorities.extend(ns.records(cut));
        let targets = ns.rdatas().filter_map(|d| match d {
            RData::NS(n) => Some(n.0),
            _ => None,
        });
        self.add_glue(targets, &mut res.additionals);
    }

    fn answer_node(
        &self,
        node: &Node,
        name: &Name,
        qtype: RecordType,
        choose: &mut Choose<'_>,
        res: &mut Resolution,
    ) {
        let service = node.service().and_then(|i| self.services.get(i));
        // RFC 8482: answer ANY with one RRset rather than all of them.
        let qtype = if qtype == RecordType::ANY {
            match (service, node.rrsets().next()) {
                (Some(_), _) => RecordType::A,
                (None, Some(set)) => set.rtype,
                (None, None) => RecordType::ANY,
            }
        } else {
            qtype
        };
        if let Some(set) = node.rrset(qtype) {
            res.answers.extend(set.records(name));
            let targets = set.rdatas().filter_map(|d| match d {
                RData::NS(n) => Some(n.0),
                RData::MX(mx) => Some(mx.exchange),
                RData::SRV(srv) => Some(srv.target),
                _ => None,
            });
            self.add_glue(targets, &mut res.additionals);
            return;
        }
        if let (Some(svc), RecordType::A | RecordType::AAAA) = (service, qtype) {
            let decision = choose(svc);
            res.scope = Some(decision.scope);
            res.service = node.service();
            let ttl = decision.ttl;
            match (decision.outcome, &svc.all_down) {
                (Outcome::Answer, _) => {}
                (Outcome::NoData, _) => return self.negative(res, Some(ttl)),
                (Outcome::ServFail, _) => {
                    res.rcode = ResponseCode::ServFail;
                    res.authoritative = false;
                    return;
                }
                (Outcome::Fallback, AllDown::Fallback(fb)) => {
                    return self.fallback(fb, name, qtype, ttl, res);
                }
                (Outcome::Fallback, _) => return self.negative(res, Some(ttl)),
            }
            // Answers may already hold the CNAME chain that led here.
            let before = res.answers.len();
            let v6 = qtype == RecordType::AAAA;
            for (k, dc) in decision.dcs().iter().enumerate() {
                let Some(dc) = self.config.datacenters.get(dc.index()) else {
                    continue;
                };
                let data: Vec<RData> = match v6 {
                    true => dc.v6.iter().map(|&ip| RData::AAAA(AAAA(ip))).collect(),
                    false => dc.v4.iter().map(|&ip| RData::A(A(ip))).collect(),
                };
                // Per-address health: addresses whose own targets are
                // down are left out.
                let kept = data
                    .into_iter()
                    .enumerate()
                    .filter(|&(i, _)| !decision.leaves_out(k, v6, i))
                    .map(|(_, d)| Record::from_rdata(name.clone(), ttl, d));
                res.answers.extend(kept);
            }
            let added = res.answers.len() - before;
            if added == 0 {
                // The chosen datacenters have no address of this family:
                // NODATA, cached no longer than the service's answers.
                self.negative(res, Some(ttl));
            }
            // Round robin: the addresses start at a per-query offset.
            res.answers[before..].rotate_left(decision.rotate_by(added));
            return;
        }
        // NODATA. For a service name the answer to other types does not
        // depend on the client, so no scope.
        self.negative(res, service.map(|s| s.plan.ttl().min(self.negative_ttl)));
    }
}
