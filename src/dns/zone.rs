//! The zone store: one zone's records and services in wire form, and the
//! lookup that turns a question into answer, authority and additional
//! sections.
//!
//! Built from a validated [`ZoneConfig`] whenever config changes; read-only
//! afterwards, so queries share it without locks.

use std::collections::HashMap;
use std::sync::Arc;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::rdata::{A, AAAA, CNAME, NS, SOA};
use hickory_proto::rr::{LowerName, Name, RData, Record, RecordType};

use crate::model::{AllDown, Fallback, ZoneConfig};
use crate::policy::{Decision, Outcome, Plan};

/// Longest CNAME chain followed inside a zone before giving up.
const MAX_CNAME_CHAIN: usize = 8;

/// A service ready to answer: how it selects and precomputed records per
/// datacenter.
#[derive(Debug)]
pub(crate) struct ServiceAnswers {
    pub(crate) plan: Arc<Plan>,
    all_down: AllDown,
    /// A records per datacenter (indexed by `DcId`), owner = service name.
    a: Vec<Vec<Record>>,
    /// AAAA records per datacenter.
    aaaa: Vec<Vec<Record>>,
}

impl ServiceAnswers {
    /// How many addresses datacenter `dc` answers `qtype` with (ANY is
    /// answered as A).
    pub(crate) fn addresses(&self, dc: crate::model::DcId, qtype: RecordType) -> usize {
        let per_dc = if qtype == RecordType::AAAA {
            &self.aaaa
        } else {
            &self.a
        };
        per_dc.get(dc.index()).map_or(0, Vec::len)
    }
}

#[derive(Debug, Default)]
struct Node {
    /// RRsets in config order, each non-empty and of one type.
    rrsets: Vec<Vec<Record>>,
    /// Index into `Zone::services`.
    service: Option<usize>,
    /// NS records here delegate a child zone.
    cut: bool,
}

impl Node {
    fn rrset(&self, t: RecordType) -> Option<&[Record]> {
        self.rrsets
            .iter()
            .find(|s| s[0].record_type() == t)
            .map(Vec::as_slice)
    }
}

/// One zone, ready for queries.
#[derive(Debug)]
pub struct Zone {
    origin: Name,
    origin_labels: u8,
    /// SOA with the negative-caching TTL, for authority sections.
    negative_soa: Record,
    negative_ttl: u32,
    nodes: HashMap<LowerName, Node>,
    services: Vec<ServiceAnswers>,
    /// The validated config this was built from (for `explain`).
    pub config: Arc<ZoneConfig>,
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

fn with_owner(r: &Record, owner: &Name) -> Record {
    let mut r = r.clone();
    r.name = owner.clone();
    r
}

impl Zone {
    /// Builds the store. `plans[i]` answers `config.services[i]`.
    pub fn build(config: Arc<ZoneConfig>, plans: Vec<Arc<Plan>>) -> Self {
        let z = &*config;
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

        let mut nodes: HashMap<LowerName, Node> = HashMap::new();
        let mut touch = |name: &Name| -> LowerName {
            // Create the node and every empty non-terminal above it, so that
            // names between the apex and a record answer NODATA, not
            // NXDOMAIN (RFC 8020).
            let mut n = name.clone();
            while n.num_labels() > origin.num_labels() {
                nodes.entry(LowerName::from(&n)).or_default();
                n = n.base_name();
            }
            nodes.entry(LowerName::from(&origin)).or_default();
            LowerName::from(name)
        };
        let apex = touch(&origin);
        let ns: Vec<Record> =
            z.ns.iter()
                .map(|n| Record::from_rdata(origin.clone(), z.ns_ttl, RData::NS(NS(n.clone()))))
                .collect();
        let mut pending: Vec<(LowerName, Record)> = vec![(apex.clone(), soa)];
        pending.extend(ns.into_iter().map(|r| (apex.clone(), r)));
        for r in &z.records {
            let key = touch(&r.0.name);
            pending.push((key, r.0.clone()));
        }
        let mut service_keys = Vec::new();
        for s in &z.services {
            service_keys.push(touch(&s.fqdn));
        }
        for (key, record) in pending {
            let Some(node) = nodes.get_mut(&key) else {
                continue; // every key was touched above
            };
            let t = record.record_type();
            if t == RecordType::NS && key != apex {
                node.cut = true;
            }
            match node.rrsets.iter_mut().find(|s| s[0].record_type() == t) {
                Some(set) => set.push(record),
                None => node.rrsets.push(vec![record]),
            }
        }
        let mut services = Vec::with_capacity(z.services.len());
        for (i, (s, plan)) in z.services.iter().zip(plans).enumerate() {
            if let Some(node) = nodes.get_mut(&service_keys[i]) {
                node.service = Some(i); // touched above
            }
            let a = z
                .datacenters
                .iter()
                .map(|dc| {
                    dc.v4
                        .iter()
                        .map(|&ip| Record::from_rdata(s.fqdn.clone(), s.ttl, RData::A(A(ip))))
                        .collect()
                })
                .collect();
            let aaaa = z
                .datacenters
                .iter()
                .map(|dc| {
                    dc.v6
                        .iter()
                        .map(|&ip| Record::from_rdata(s.fqdn.clone(), s.ttl, RData::AAAA(AAAA(ip))))
                        .collect()
                })
                .collect();
            services.push(ServiceAnswers {
                plan,
                all_down: s.when_all_down.clone(),
                a,
                aaaa,
            });
        }
        Self {
            origin_labels: origin.num_labels(),
            origin,
            negative_soa,
            negative_ttl,
            nodes,
            services,
            config,
        }
    }

    /// Every name with data or below which data exists (empty
    /// non-terminals), for the fast-path index.
    pub(crate) fn names(&self) -> impl Iterator<Item = &LowerName> {
        self.nodes.keys()
    }

    /// Whether a node exists at `name`.
    pub(crate) fn has_node(&self, name: &LowerName) -> bool {
        self.nodes.contains_key(name)
    }

    /// Record types present at `name` and at the names its in-zone CNAME
    /// chain leads to; with A and AAAA where a service answers.
    pub(crate) fn types_along(&self, name: &Name) -> Vec<RecordType> {
        let mut out = Vec::new();
        let mut name = name.clone();
        for _ in 0..MAX_CNAME_CHAIN {
            let Some(node) = self.nodes.get(&LowerName::from(&name)) else {
                break;
            };
            out.extend(node.rrsets.iter().map(|s| s[0].record_type()));
            if node.service.is_some() {
                out.extend([RecordType::A, RecordType::AAAA]);
            }
            match node.rrset(RecordType::CNAME) {
                Some(set) => match &set[0].data {
                    RData::CNAME(t) if self.origin.zone_of(&t.0) => name = t.0.clone(),
                    _ => break,
                },
                None => break,
            }
        }
        out.sort_unstable_by_key(|t| u16::from(*t));
        out.dedup();
        out
    }

    /// The service at index `i`.
    pub(crate) fn service(&self, i: usize) -> &ServiceAnswers {
        &self.services[i]
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
        let labels = name.num_labels();
        (self.origin_labels + 1..=labels).find_map(|n| {
            let candidate = name.trim_to(usize::from(n));
            let node = self.nodes.get(&LowerName::from(&candidate))?;
            node.cut.then_some((candidate, node))
        })
    }

    fn add_glue(&self, targets: impl Iterator<Item = Name>, out: &mut Vec<Record>) {
        for target in targets {
            if !self.origin.zone_of(&target) {
                continue;
            }
            if let Some(node) = self.nodes.get(&LowerName::from(&target)) {
                for t in [RecordType::A, RecordType::AAAA] {
                    if let Some(set) = node.rrset(t) {
                        out.extend(set.iter().cloned());
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
            let Some(node) = self.nodes.get(&LowerName::from(&name)) else {
                // RFC 6604: after a CNAME, the rcode describes the last name.
                res.rcode = ResponseCode::NXDomain;
                self.negative(&mut res, None);
                return res;
            };
            if qtype != RecordType::CNAME
                && let Some(cname) = node.rrset(RecordType::CNAME)
            {
                let rec = &cname[0];
                res.answers.push(with_owner(rec, &name));
                let RData::CNAME(target) = &rec.data else {
                    return res;
                };
                if !self.origin.zone_of(&target.0) {
                    // Out of zone: the resolver follows it.
                    return res;
                }
                name = target.0.clone();
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
        res.authorities
            .extend(ns.iter().map(|r| with_owner(r, cut)));
        let targets = ns.iter().filter_map(|r| match &r.data {
            RData::NS(n) => Some(n.0.clone()),
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
        let service = node.service.map(|i| &self.services[i]);
        // RFC 8482: answer ANY with one RRset rather than all of them.
        let qtype = if qtype == RecordType::ANY {
            match (service, node.rrsets.first()) {
                (Some(_), _) => RecordType::A,
                (None, Some(set)) => set[0].record_type(),
                (None, None) => RecordType::ANY,
            }
        } else {
            qtype
        };
        if let Some(set) = node.rrset(qtype) {
            res.answers.extend(set.iter().map(|r| with_owner(r, name)));
            let targets = set.iter().filter_map(|r| match &r.data {
                RData::NS(n) => Some(n.0.clone()),
                RData::MX(mx) => Some(mx.exchange.clone()),
                RData::SRV(srv) => Some(srv.target.clone()),
                _ => None,
            });
            self.add_glue(targets, &mut res.additionals);
            return;
        }
        if let (Some(svc), RecordType::A | RecordType::AAAA) = (service, qtype) {
            let decision = choose(svc);
            res.scope = Some(decision.scope);
            res.service = node.service;
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
            let per_dc = if qtype == RecordType::A {
                &svc.a
            } else {
                &svc.aaaa
            };
            // Answers may already hold the CNAME chain that led here.
            let before = res.answers.len();
            let v6 = qtype == RecordType::AAAA;
            for (k, dc) in decision.dcs().iter().enumerate() {
                if let Some(records) = per_dc.get(dc.index()) {
                    // Per-address health: addresses whose own targets are
                    // down are left out.
                    let kept = records
                        .iter()
                        .enumerate()
                        .filter(|&(i, _)| !decision.leaves_out(k, v6, i));
                    res.answers.extend(kept.map(|(_, r)| {
                        let mut r = with_owner(r, name);
                        r.ttl = ttl;
                        r
                    }));
                }
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
