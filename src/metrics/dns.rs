//! DNS query counters: one [`Shard`] per UDP thread (and one for TCP),
//! added up at scrape time.
//!
//! A shard's counters are plain `u64`s behind a mutex that its thread
//! takes once per `recvmmsg` batch, uncontended except while a scrape
//! reads that shard. They are indexed by the snapshot's numeric ids
//! through a [`Layout`] (zone position, service position, datacenter id),
//! so counting never hashes, compares names or allocates. A reload makes
//! a new zone list: the first batch that sees it sets the old arrays
//! aside (a move, no naming) and starts new ones; the next scrape, off the
//! query path, folds what was set aside into totals kept by name. Series
//! therefore stay monotonic across reloads, and a removed zone's series
//! keep their last value until restart. A scrape holds a shard's lock only
//! to copy its arrays: naming 10,000 services' slots happens outside it.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use super::{Family, Kind, Labels};
use crate::dns::handler::{Seen, Transport};
use crate::dns::zone::Zone;
use crate::policy::Outcome;
use crate::snapshot::Snapshot;

//------------ Label tables ----------------------------------------------------

/// Query types counted by name; every other type is `other`.
const QTYPES: [&str; 16] = [
    "A", "AAAA", "CNAME", "NS", "SOA", "MX", "TXT", "SRV", "PTR", "CAA", "HTTPS", "SVCB", "DS",
    "DNSKEY", "ANY", "other",
];

/// The slot of a QTYPE in [`QTYPES`].
fn qtype_slot(qtype: u16) -> usize {
    match qtype {
        1 => 0,
        28 => 1,
        5 => 2,
        2 => 3,
        6 => 4,
        15 => 5,
        16 => 6,
        33 => 7,
        12 => 8,
        257 => 9,
        65 => 10,
        64 => 11,
        43 => 12,
        48 => 13,
        255 => 14,
        _ => 15,
    }
}

/// RCODE names: the header's 16, then BADVERS and BADCOOKIE (extended).
const RCODES: [&str; 18] = [
    "NOERROR",
    "FORMERR",
    "SERVFAIL",
    "NXDOMAIN",
    "NOTIMP",
    "REFUSED",
    "YXDOMAIN",
    "YXRRSET",
    "NXRRSET",
    "NOTAUTH",
    "NOTZONE",
    "DSOTYPENI",
    "RCODE12",
    "RCODE13",
    "RCODE14",
    "RCODE15",
    "BADVERS",
    "BADCOOKIE",
];

/// An RCODE's name (extended ones included), e.g. `NXDOMAIN`.
pub fn rcode_name(code: u16) -> std::borrow::Cow<'static, str> {
    match code {
        0..=15 => RCODES[usize::from(code)].into(),
        16 => "BADVERS".into(),
        23 => "BADCOOKIE".into(),
        n => format!("RCODE{n}").into(),
    }
}

/// The `zone` label of queries for names in no zone of ours.
pub const NO_ZONE_LABEL: &str = "none";

/// Decision slots per service before its policy steps.
const STEP_ALL_DOWN: usize = 0;
const STEP_HEALTH: usize = 1;
const STEP_FIRST: usize = 2;

/// The `step` label of a decision where no datacenter was usable.
pub const ALL_DOWN: &str = "all_down";
/// The `step` label of a decision the health filter changed (failover).
pub const HEALTH: &str = "health";

//------------ Layout ---------------------------------------------------------

/// Where a snapshot's counters go: per zone, per service, the first
/// answer slot (one per datacenter of the zone) and the first decision
/// slot (all-down, health, then one per policy step).
#[derive(Debug)]
pub struct Layout {
    zones: Arc<[Arc<Zone>]>,
    /// Per zone, per service.
    bases: Box<[Box<[Bases]>]>,
    answers: usize,
    decisions: usize,
}

impl Layout {
    fn new(zones: &Arc<[Arc<Zone>]>) -> Self {
        let (mut answers, mut decisions) = (0usize, 0usize);
        let bases = zones
            .iter()
            .map(|z| {
                let dcs = z.config.datacenters.len();
                (0..z.config.services.len())
                    .map(|s| {
                        let steps = z.service(s).plan.step_count().max(1);
                        let b = (
                            u32::try_from(answers).unwrap_or(u32::MAX),
                            u32::try_from(decisions).unwrap_or(u32::MAX),
                            u16::try_from(steps).unwrap_or(u16::MAX),
                        );
                        answers += dcs;
                        decisions += STEP_FIRST + steps;
                        b
                    })
                    .collect()
            })
            .collect();
        Self {
            zones: Arc::clone(zones),
            bases,
            answers,
            decisions,
        }
    }

    fn zone_label(&self, z: usize) -> String {
        self.zones
            .get(z)
            .map_or_else(|| NO_ZONE_LABEL.to_string(), |z| z.origin().to_ascii())
    }

    /// Names every answer slot that `wanted`: (zone, service, datacenter).
    fn answer_labels(
        &self,
        wanted: impl Fn(usize) -> bool,
        mut each: impl FnMut(usize, [String; 3]),
    ) {
        for (z, bases) in self.zones.iter().zip(&self.bases[..]) {
            let origin = z.origin().to_ascii();
            for (s, &(base, _, _)) in z.config.services.iter().zip(&bases[..]) {
                for (d, dc) in z.config.datacenters.iter().enumerate() {
                    let slot = base as usize + d;
                    if wanted(slot) {
                        each(slot, [origin.clone(), s.name.clone(), dc.name.clone()]);
                    }
                }
            }
        }
    }

    /// Names every decision slot that `wanted`: (zone, service, step).
    fn decision_labels(
        &self,
        wanted: impl Fn(usize) -> bool,
        mut each: impl FnMut(usize, [String; 3]),
    ) {
        for (z, bases) in self.zones.iter().zip(&self.bases[..]) {
            let origin = z.origin().to_ascii();
            for (si, (s, &(_, base, steps))) in z.config.services.iter().zip(&bases[..]).enumerate()
            {
                let base = base as usize;
                let mut name = |slot: usize, step: &str| {
                    if wanted(base + slot) {
                        each(
                            base + slot,
                            [origin.clone(), s.name.clone(), step.to_string()],
                        );
                    }
                };
                name(STEP_ALL_DOWN, ALL_DOWN);
                name(STEP_HEALTH, HEALTH);
                let plan = &z.service(si).plan;
                for i in 0..usize::from(steps) {
                    name(STEP_FIRST + i, plan.step_name(i).unwrap_or("order"));
                }
            }
        }
    }
}

/// A service's first answer slot, first decision slot and step count.
type Bases = (u32, u32, u16);

/// The layout of the zone list in service, shared by every shard.
#[derive(Debug, Default)]
struct Layouts {
    current: Mutex<Option<Arc<Layout>>>,
}

impl Layouts {
    fn for_zones(&self, zones: &Arc<[Arc<Zone>]>) -> Arc<Layout> {
        let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        match &*current {
            Some(l) if Arc::ptr_eq(&l.zones, zones) => Arc::clone(l),
            _ => {
                let l = Arc::new(Layout::new(zones));
                *current = Some(Arc::clone(&l));
                l
            }
        }
    }
}

//------------ Shards ---------------------------------------------------------

/// Which family a retired count belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Fam {
    Requests,
    Responses,
    Answers,
    Decisions,
}

/// The counters of one layout: a shard's current ones, or those a reload
/// set aside until the next scrape names them.
#[derive(Clone, Debug)]
struct Slots {
    layout: Option<Arc<Layout>>,
    zones: usize,
    /// (zones + 1) × QTYPES; the last zone row is "no zone".
    requests: Box<[u64]>,
    /// (zones + 1) × RCODES.
    responses: Box<[u64]>,
    answers: Box<[u64]>,
    decisions: Box<[u64]>,
}

impl Slots {
    /// Zeroed counters for `layout` (none: before the first snapshot).
    fn new(layout: Option<Arc<Layout>>) -> Self {
        let zones = layout.as_ref().map_or(0, |l| l.zones.len());
        let (answers, decisions) = layout.as_ref().map_or((0, 0), |l| (l.answers, l.decisions));
        Self {
            layout,
            zones,
            requests: vec![0; (zones + 1) * QTYPES.len()].into(),
            responses: vec![0; (zones + 1) * RCODES.len()].into(),
            answers: vec![0; answers].into(),
            decisions: vec![0; decisions].into(),
        }
    }

    /// Calls `each` with every non-zero counter, by name.
    fn named(&self, mut each: impl FnMut(Fam, [String; 3], u64)) {
        let zone = |z: usize| {
            self.layout
                .as_ref()
                .map_or_else(|| NO_ZONE_LABEL.to_string(), |l| l.zone_label(z))
        };
        for (i, &v) in self.requests.iter().enumerate() {
            if v > 0 {
                let (z, q) = (i / QTYPES.len(), i % QTYPES.len());
                each(Fam::Requests, [zone(z), QTYPES[q].into(), String::new()], v);
            }
        }
        for (i, &v) in self.responses.iter().enumerate() {
            if v > 0 {
                let (z, r) = (i / RCODES.len(), i % RCODES.len());
                each(
                    Fam::Responses,
                    [zone(z), RCODES[r].into(), String::new()],
                    v,
                );
            }
        }
        if let Some(l) = &self.layout {
            let value = |slots: &[u64], slot: usize| slots.get(slot).copied().unwrap_or(0);
            l.answer_labels(
                |slot| value(&self.answers, slot) > 0,
                |slot, labels| each(Fam::Answers, labels, value(&self.answers, slot)),
            );
            l.decision_labels(
                |slot| value(&self.decisions, slot) > 0,
                |slot, labels| each(Fam::Decisions, labels, value(&self.decisions, slot)),
            );
        }
    }
}

/// One thread's counters.
#[derive(Debug)]
struct Counts {
    slots: Slots,
    /// The counters of layouts a reload replaced, until a scrape names
    /// them (at most one per reload between two scrapes).
    stale: Vec<Slots>,
    ecs_absent: u64,
    ecs_v4: [u64; 33],
    ecs_v6: [u64; 129],
    truncated: u64,
}

impl Counts {
    fn new() -> Self {
        Self {
            slots: Slots::new(None),
            stale: Vec::new(),
            ecs_absent: 0,
            ecs_v4: [0; 33],
            ecs_v6: [0; 129],
            truncated: 0,
        }
    }

    /// Switches to `layout`, setting the old counters aside for the next
    /// scrape: a move and zeroed arrays, on the query path, nothing named.
    fn relayout(&mut self, layout: Arc<Layout>) {
        let old = std::mem::replace(&mut self.slots, Slots::new(Some(layout)));
        self.stale.push(old);
    }
}

/// The counters of one serving thread (UDP) or of every TCP connection.
#[derive(Debug)]
pub struct Shard {
    transport: Transport,
    counts: Mutex<Counts>,
    layouts: Arc<Layouts>,
}

impl Shard {
    /// Locks the counters for a batch of queries answered from `snap`
    /// (re-indexing them first if `snap` comes from a reload).
    pub fn tally(&self, snap: &Snapshot) -> Tally<'_> {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        let zones = snap.zones_shared();
        let current = counts
            .slots
            .layout
            .as_ref()
            .is_some_and(|l| Arc::ptr_eq(&l.zones, zones));
        if !current {
            counts.relayout(self.layouts.for_zones(zones));
        }
        Tally { counts }
    }
}

/// A shard's counters, locked for a batch.
#[derive(Debug)]
pub struct Tally<'a> {
    counts: MutexGuard<'a, Counts>,
}

impl Tally<'_> {
    /// Counts one query the handler answered with `out`, as `seen` says
    /// (before response rate limiting, which counts what it withholds
    /// itself).
    #[inline]
    pub fn count(&mut self, seen: &Seen, out: &[u8]) {
        let Counts {
            slots: c,
            ecs_absent,
            ecs_v4,
            ecs_v6,
            truncated,
            ..
        } = &mut *self.counts;
        let z = usize::from(seen.zone).min(c.zones);
        if let Some(v) = c
            .requests
            .get_mut(z * QTYPES.len() + qtype_slot(seen.qtype))
        {
            *v += 1;
        }
        let rcode = match seen.ext_rcode {
            16 => 16,
            23 => 17,
            // RFC 9824 compact denial: NOERROR on the wire, NXDOMAIN here.
            _ if seen.nxname => 3,
            _ => usize::from(out.get(3).map_or(0, |b| b & 0x0f)),
        };
        if let Some(v) = c.responses.get_mut(z * RCODES.len() + rcode) {
            *v += 1;
        }
        if out.get(2).is_some_and(|b| b & 0x02 != 0) {
            *truncated += 1;
        }
        match seen.ecs {
            0 => *ecs_absent += 1,
            4 => ecs_v4[usize::from(seen.scope).min(32)] += 1,
            _ => ecs_v6[usize::from(seen.scope).min(128)] += 1,
        }
        if seen.service == Seen::NO_SERVICE {
            return;
        }
        let Some(&(answers, decisions, steps)) = c
            .layout
            .as_ref()
            .and_then(|l| l.bases.get(z))
            .and_then(|b| b.get(usize::from(seen.service)))
        else {
            return;
        };
        let slot = if seen.choice.all_down {
            STEP_ALL_DOWN
        } else if seen.choice.degraded {
            STEP_HEALTH
        } else {
            STEP_FIRST + usize::from(seen.step).min(usize::from(steps) - 1)
        };
        if let Some(v) = c.decisions.get_mut(decisions as usize + slot) {
            *v += 1;
        }
        if seen.outcome == Outcome::Answer {
            for dc in seen.choice.dcs() {
                if let Some(v) = c.answers.get_mut(answers as usize + dc.index()) {
                    *v += 1;
                }
            }
        }
    }
}

//------------ DnsMetrics -----------------------------------------------------

/// Every shard, and what is read from them at scrape time.
#[derive(Debug, Default)]
pub struct DnsMetrics {
    shards: Mutex<Vec<Arc<Shard>>>,
    layouts: Arc<Layouts>,
    /// Counts by name from layouts no longer in service, folded in by
    /// scrapes (never under a shard's lock).
    retired: Mutex<Totals>,
}

/// Per-name totals over every shard.
type Totals = BTreeMap<(Fam, [String; 3], &'static str), u64>;

/// Adds counters a reload set aside to `retired`, by name.
fn retire(retired: &mut Totals, proto: &'static str, stale: Vec<Slots>) {
    for old in stale {
        old.named(|fam, labels, v| *retired.entry((fam, labels, proto)).or_default() += v);
    }
}

impl DnsMetrics {
    /// A new shard for one thread (or for all TCP connections).
    pub fn shard(&self, transport: Transport) -> Arc<Shard> {
        let shard = Arc::new(Shard {
            transport,
            counts: Mutex::new(Counts::new()),
            layouts: Arc::clone(&self.layouts),
        });
        self.shards
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Arc::clone(&shard));
        shard
    }

    fn shards(&self) -> Vec<Arc<Shard>> {
        self.shards
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Names the counters that reloads set aside, off the query path:
    /// each reload calls this first, so that without scrapes they stay
    /// bounded (one layout per shard).
    pub fn fold_stale(&self) {
        let mut retired = self.retired.lock().unwrap_or_else(|e| e.into_inner());
        for shard in self.shards() {
            let proto = proto(shard.transport);
            let stale =
                std::mem::take(&mut shard.counts.lock().unwrap_or_else(|e| e.into_inner()).stale);
            retire(&mut retired, proto, stale);
        }
    }

    /// Adds every shard up, by name.
    fn totals(&self) -> (Totals, Ecs) {
        let mut totals = Totals::new();
        let mut ecs = Ecs::default();
        // One scrape folds at a time: what it takes from the shards is in
        // `retired` before another reads it.
        let mut retired = self.retired.lock().unwrap_or_else(|e| e.into_inner());
        for shard in self.shards() {
            let proto = proto(shard.transport);
            // Under the shard's lock only copies and moves: its thread
            // waits for a memcpy, never for the naming below.
            let (current, stale) = {
                let mut c = shard.counts.lock().unwrap_or_else(|e| e.into_inner());
                ecs.absent += c.ecs_absent;
                for (t, v) in ecs.v4.iter_mut().zip(&c.ecs_v4) {
                    *t += v;
                }
                for (t, v) in ecs.v6.iter_mut().zip(&c.ecs_v6) {
                    *t += v;
                }
                *ecs.truncated.entry(proto).or_default() += c.truncated;
                (c.slots.clone(), std::mem::take(&mut c.stale))
            };
            current.named(|fam, labels, v| *totals.entry((fam, labels, proto)).or_default() += v);
            retire(&mut retired, proto, stale);
        }
        for (key, v) in retired.iter() {
            *totals.entry(key.clone()).or_default() += v;
        }
        (totals, ecs)
    }

    /// Answers since start per zone and service, by datacenter name (over
    /// both transports), for `/status`.
    pub fn answers(&self) -> HashMap<(String, String), BTreeMap<String, u64>> {
        let mut out: HashMap<(String, String), BTreeMap<String, u64>> = HashMap::new();
        for ((fam, [zone, service, dc], _), v) in self.totals().0 {
            if fam == Fam::Answers {
                *out.entry((zone, service))
                    .or_default()
                    .entry(dc)
                    .or_default() += v;
            }
        }
        out
    }

    pub(super) fn families(&self, out: &mut Vec<Family>) {
        let (totals, ecs) = self.totals();
        let mut requests = Family::new(
            "meridian_dns_requests",
            "DNS queries answered, by zone (\"none\" outside every zone), query type and transport.",
            Kind::Counter,
        );
        let mut responses = Family::new(
            "meridian_dns_responses",
            "DNS responses built, by zone, RCODE and transport (before rate limiting).",
            Kind::Counter,
        );
        let mut answers = Family::new(
            "meridian_answers",
            "Service answers by datacenter answered with (each datacenter of a multi-datacenter answer counts).",
            Kind::Counter,
        );
        let mut decisions = Family::new(
            "meridian_decisions",
            "Service decisions by the step that decided: a policy step, \"health\" (failover) or \"all_down\".",
            Kind::Counter,
        );
        for ((fam, [a, b, c], proto), v) in totals {
            let (family, labels): (&mut Family, Labels) = match fam {
                Fam::Requests => (
                    &mut requests,
                    vec![("zone", a), ("type", b), ("proto", proto.into())],
                ),
                Fam::Responses => (
                    &mut responses,
                    vec![("zone", a), ("rcode", b), ("proto", proto.into())],
                ),
                Fam::Answers => (
                    &mut answers,
                    vec![("zone", a), ("service", b), ("datacenter", c)],
                ),
                Fam::Decisions => (
                    &mut decisions,
                    vec![("zone", a), ("service", b), ("step", c)],
                ),
            };
            // Answers and decisions are summed over the transports.
            match family.samples.last_mut() {
                Some((l, super::Value::Int(n))) if *l == labels => *n += v,
                _ => family.int(labels, v),
            }
        }
        out.extend([requests, responses, answers, decisions]);
        let mut f = Family::new(
            "meridian_dns_truncated",
            "Responses sent truncated (TC) so the client retries over TCP, by transport.",
            Kind::Counter,
        );
        for (proto, v) in ecs.truncated {
            f.int(vec![("proto", proto.into())], v);
        }
        out.push(f);
        let mut f = Family::new(
            "meridian_dns_ecs_requests",
            "Queries with and without an EDNS Client Subnet option.",
            Kind::Counter,
        );
        let present: u64 = ecs.v4.iter().chain(&ecs.v6).sum();
        f.int(vec![("ecs", "present".into())], present);
        f.int(vec![("ecs", "absent".into())], ecs.absent);
        out.push(f);
        let mut f = Family::new(
            "meridian_dns_ecs_scope",
            "Responses to ECS queries by the scope prefix length returned and the family.",
            Kind::Counter,
        );
        for (family, counts) in [("ipv4", &ecs.v4[..]), ("ipv6", &ecs.v6[..])] {
            for (scope, &v) in counts.iter().enumerate() {
                if v > 0 {
                    f.int(
                        vec![("family", family.into()), ("scope", scope.to_string())],
                        v,
                    );
                }
            }
        }
        out.push(f);
    }
}

#[derive(Debug)]
struct Ecs {
    absent: u64,
    v4: [u64; 33],
    v6: [u64; 129],
    truncated: BTreeMap<&'static str, u64>,
}

impl Default for Ecs {
    fn default() -> Self {
        Self {
            absent: 0,
            v4: [0; 33],
            v6: [0; 129],
            truncated: BTreeMap::new(),
        }
    }
}

fn proto(t: Transport) -> &'static str {
    match t {
        Transport::Udp => "udp",
        Transport::Tcp => "tcp",
    }
}
