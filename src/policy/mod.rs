//! Routing: given a client and the health of a zone's datacenters, decide
//! which datacenters answer, with what TTL and for how wide a network.
//!
//! One pure function makes the whole decision, [`Plan::decide`]; both DNS
//! paths only render the [`Decision`] it returns, and `explain` prints the
//! trace of that same call. It runs in three stages:
//!
//! 1. **Rank.** The service's policy is a chain of steps ([`Step`]). Each
//!    works on the *first tier* of the candidates, which starts as all of
//!    the service's datacenters in config order:
//!    - ordering steps (`geo`, `failover`, `weighted`, `sticky`) reorder
//!      the first tier;
//!    - narrowing steps (`nearest`, `within_km`, `same`, `prefer`) keep
//!      part of the first tier as the first tier and move the rest behind
//!      it, in their current order.
//!
//!    The ranking is the first tier followed by what earlier narrowing
//!    steps moved behind it.
//! 2. **Filter.** Datacenters that are down or drained (by health, with
//!    the service's warm-up rule) are skipped.
//! 3. **Pick.** The first `max_answers` usable ones answer. If none is
//!    usable, `when_all_down` decides ([`Outcome`]).
//!
//! The ECS scope of a decision is the narrowest (longest) prefix any step
//! depended on: the GeoIP table block for `geo` and `same`, the hashed
//! prefix for `sticky`, nothing (0) for `failover`, `weighted` and the
//! narrowing steps, whose input is already covered. Every client inside
//! the scope therefore gets the same answer distribution.
//!
//! Deciding never allocates and never locks: candidates live in a fixed
//! buffer of [`MAX_CANDIDATES`], and per-query randomness (`weighted`,
//! address rotation) comes from the caller as `entropy`, so a decision is
//! a pure function of its inputs.

pub mod geo;
pub mod sticky;
pub mod weighted;

use std::net::IpAddr;
use std::sync::Arc;

use crate::geo::distance::distance_km;
use crate::health::DcHealth;
use crate::latency::{Estimate, LatencyView};
use crate::model::LatencySource;
use crate::model::{
    AllDown, Attribute, Continent, CountryCode, CountryTable, DcId, Service, Step, Warmup,
    ZoneConfig,
};
use geo::GeoPolicy;

/// A zone's latency data, as a `latency` step reads it.
#[derive(Clone, Copy, Debug)]
pub struct Latency<'a> {
    /// The snapshot's latency view.
    pub view: &'a LatencyView,
    /// The zone's position in the snapshot.
    pub zone: usize,
}

#[cfg(test)]
impl Latency<'_> {
    /// No latency data: a `latency` step has only the distance model.
    pub(crate) fn none() -> Latency<'static> {
        static EMPTY: std::sync::LazyLock<LatencyView> =
            std::sync::LazyLock::new(LatencyView::default);
        Latency {
            view: &EMPTY,
            zone: usize::MAX,
        }
    }
}

/// Who is asking: the address a policy routes on (the ECS address when the
/// query carried one, else the packet's source), already truncated to the
/// ECS source prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Client {
    /// Address to route on. IPv4-mapped IPv6 is converted to IPv4.
    pub addr: IpAddr,
}

/// Most datacenters in one answer (`max_answers` is 1 to 8).
pub const MAX_ANSWERS: usize = 8;

/// Most datacenters in one service.
pub const MAX_CANDIDATES: usize = 64;

//------------ Choice ---------------------------------------------------------

/// The datacenters whose records form an answer: the result of filtering a
/// ranking by health and taking the first `max_answers`. Fixed capacity,
/// so choosing never allocates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Choice {
    dcs: [DcId; MAX_ANSWERS],
    len: u8,
    /// The answer differs from the one every datacenter being up would
    /// give (a failover happened, or nothing is up): answers carry the
    /// service's `degraded_ttl`.
    pub degraded: bool,
    /// No candidate is up; `dcs` then holds the healthy-state choice, for
    /// services that fail open.
    pub all_down: bool,
}

impl Choice {
    /// The chosen datacenters, best first.
    #[inline]
    pub fn dcs(&self) -> &[DcId] {
        &self.dcs[..usize::from(self.len)]
    }

    /// A choice of exactly `dcs` (at most [`MAX_ANSWERS`]).
    pub fn of(dcs: &[DcId], degraded: bool, all_down: bool) -> Self {
        let mut c = Self {
            dcs: [DcId(0); MAX_ANSWERS],
            len: 0,
            degraded,
            all_down,
        };
        for &d in dcs.iter().take(MAX_ANSWERS) {
            c.push(d);
        }
        c
    }

    fn push(&mut self, dc: DcId) {
        self.dcs[usize::from(self.len)] = dc;
        self.len += 1;
    }
}

/// Filters `order` by `up` and takes the first `max` (stage two and three
/// of answering). Pure: the same inputs always give the same choice.
pub fn choose(order: &[DcId], max: usize, up: impl Fn(DcId) -> bool) -> Choice {
    let max = max.clamp(1, MAX_ANSWERS);
    let mut chosen = Choice::of(&[], false, false);
    for &dc in order {
        if usize::from(chosen.len) == max {
            break;
        }
        if up(dc) {
            chosen.push(dc);
        }
    }
    let healthy = &order[..order.len().min(max)];
    if chosen.len == 0 {
        return Choice::of(healthy, true, true);
    }
    chosen.degraded = chosen.dcs() != healthy;
    chosen
}

//------------ Decision -------------------------------------------------------

/// What the answer holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The records of the chosen datacenters (also when all are down and
    /// the service fails open).
    Answer,
    /// All down, `when_all_down = "none"`: NODATA.
    NoData,
    /// All down, `when_all_down = "servfail"`.
    ServFail,
    /// All down, `when_all_down = "fallback"`: the fallback records.
    Fallback,
}

/// A routing decision: everything a DNS path needs to render the answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    /// The chosen datacenters and whether the answer is degraded.
    pub choice: Choice,
    /// What the answer holds.
    pub outcome: Outcome,
    /// TTL of the answer records: `ttl`, or `degraded_ttl` when degraded.
    pub ttl: u32,
    /// ECS scope, in the client address's family.
    pub scope: u8,
    /// Per chosen datacenter, the addresses to leave out of the answer
    /// (see [`DcHealth::down_addresses`]); never every address of a
    /// family, so a usable datacenter always answers with its addresses.
    pub left_out: [u64; MAX_ANSWERS],
    /// How far to rotate the answer's addresses, as a fraction of 2^32:
    /// the renderer rotates `n` addresses by `rotation * n >> 32`. Zero for
    /// services that do not rotate.
    pub rotation: u32,
    /// The step that decided the ranking's first candidate (its position
    /// in the plan, see [`Plan::step_name`]): the last step that changed
    /// it, or the first step when none did. For metrics and query logs.
    pub step: u8,
}

impl Decision {
    /// No datacenter, no scope: what a service's static parts are
    /// resolved with.
    pub fn empty() -> Self {
        Self {
            choice: Choice::of(&[], false, false),
            outcome: Outcome::Answer,
            ttl: 0,
            scope: 0,
            left_out: [0; MAX_ANSWERS],
            rotation: 0,
            step: 0,
        }
    }

    /// The chosen datacenters, best first.
    pub fn dcs(&self) -> &[DcId] {
        self.choice.dcs()
    }

    /// Whether the `index`-th address (of the family `v6`) of the `k`-th
    /// chosen datacenter is left out.
    pub fn leaves_out(&self, k: usize, v6: bool, index: usize) -> bool {
        crate::health::address_bit(v6, index)
            .is_some_and(|bit| self.left_out.get(k).is_some_and(|m| m & (1 << bit) != 0))
    }

    /// Where an answer of `n` addresses starts, for round robin.
    pub fn rotate_by(&self, n: usize) -> usize {
        ((u64::from(self.rotation) * n as u64) >> 32) as usize
    }
}

//------------ Tracing ---------------------------------------------------------

/// Receives each stage of a decision, for `explain`. The query path uses
/// `()`, which drops everything without building it.
pub trait Tracer {
    /// Records a stage; `f` is called only by tracers that keep stages.
    fn stage(&mut self, f: impl FnOnce() -> Stage);
}

impl Tracer for () {
    fn stage(&mut self, _: impl FnOnce() -> Stage) {}
}

/// One stage of a decision, as `explain` prints it.
#[derive(Clone, Debug, PartialEq)]
pub struct Stage {
    /// The step or stage (`geo`, `weighted`, `health`, ...).
    pub name: String,
    /// The candidates after it, best first.
    pub order: Vec<DcId>,
    /// How many of `order` form the first tier.
    pub first_tier: usize,
    /// The ECS scope so far.
    pub scope: u8,
    /// What it looked at: the client's class, the hashed network.
    pub note: String,
    /// For the health stage: whether each of `order` is usable.
    pub usable: Vec<bool>,
}

/// A tracer that keeps every stage.
#[derive(Clone, Debug, Default)]
pub struct Trace {
    /// The stages, in order.
    pub stages: Vec<Stage>,
}

impl Tracer for Trace {
    fn stage(&mut self, f: impl FnOnce() -> Stage) {
        self.stages.push(f());
    }
}

//------------ Candidates ------------------------------------------------------

/// The candidates during ranking, as positions in the service's
/// datacenter list, with the length of the first tier. Fixed capacity.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Candidates {
    at: [u8; MAX_CANDIDATES],
    len: usize,
    first: usize,
}

impl Candidates {
    fn all(n: usize) -> Self {
        let n = n.min(MAX_CANDIDATES);
        let mut at = [0u8; MAX_CANDIDATES];
        for (i, slot) in at.iter_mut().enumerate().take(n) {
            *slot = i as u8;
        }
        Self {
            at,
            len: n,
            first: n,
        }
    }

    fn ranked(&self) -> &[u8] {
        &self.at[..self.len]
    }

    fn first_tier(&mut self) -> &mut [u8] {
        &mut self.at[..self.first]
    }

    /// Keeps the first-tier members for which `keep(position in tier,
    /// candidate)` holds as the first tier, the others right behind.
    fn narrow(&mut self, keep: impl Fn(usize, u8) -> bool) {
        let mut kept = [0u8; MAX_CANDIDATES];
        let mut rest = [0u8; MAX_CANDIDATES];
        let (mut k, mut r) = (0, 0);
        for (i, &c) in self.at[..self.first].iter().enumerate() {
            if keep(i, c) {
                kept[k] = c;
                k += 1;
            } else {
                rest[r] = c;
                r += 1;
            }
        }
        self.at[..k].copy_from_slice(&kept[..k]);
        self.at[k..k + r].copy_from_slice(&rest[..r]);
        self.first = k;
    }

    /// Replaces the first tier by `order` restricted to its members;
    /// members `order` leaves out are dropped.
    fn reorder_first(&mut self, order: impl Iterator<Item = u8>) {
        let mut member = 0u64;
        for &c in &self.at[..self.first] {
            member |= 1 << c;
        }
        let mut tier = [0u8; MAX_CANDIDATES];
        let mut n = 0;
        for c in order {
            if member & (1 << c) != 0 {
                member &= !(1 << c);
                tier[n] = c;
                n += 1;
            }
        }
        let behind = self.len - self.first;
        self.at.copy_within(self.first..self.len, n);
        self.at[..n].copy_from_slice(&tier[..n]);
        self.first = n;
        self.len = n + behind;
    }
}

//------------ Plan ------------------------------------------------------------

/// A step with what it needs at query time.
#[derive(Debug)]
enum Built {
    Geo,
    Failover,
    Weighted,
    Sticky,
    Nearest(usize),
    /// Distances between datacenters (row-major by position), and the
    /// bound.
    WithinKm(Box<[f32]>, f32),
    Same(Attribute),
    /// Bit set of positions.
    Prefer(u64),
    Latency(LatencySource),
}

/// The all-down behaviour, without the fallback records (the zone keeps
/// those).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum AllDownKind {
    All,
    None,
    Servfail,
    Fallback,
}

/// A service's routing, built once per snapshot: its steps, tables and
/// answer rules. See the module docs.
#[derive(Debug)]
pub struct Plan {
    steps: Box<[Built]>,
    /// Each step as config writes it, for traces.
    step_names: Box<[String]>,
    /// The service's datacenters, by position.
    datacenters: Box<[DcId]>,
    /// Configured weight by position.
    weights: Box<[u32]>,
    /// Stable hash of each datacenter's name, by position (`sticky`).
    name_hash: Box<[u64]>,
    /// IPv4 and IPv6 address counts by position (per-address health).
    address_counts: Box<[(usize, usize)]>,
    /// Country and continent by position (`same`).
    country: Box<[Option<CountryCode>]>,
    continent: Box<[Option<Continent>]>,
    /// The GeoIP table, when a step needs the client's location.
    geo: Option<Arc<GeoPolicy>>,
    sticky_prefix: (u8, u8),
    max_answers: usize,
    warmup: Warmup,
    ttl: u32,
    degraded_ttl: u32,
    all_down: AllDownKind,
    rotate: bool,
    /// Whether a step reads `weights` (they are then scaled per query).
    uses_weights: bool,
    /// Whether a step reads the client's GeoIP class whatever happens
    /// (`geo`, `same`); a `latency` step reads it only when it reaches
    /// the distance level.
    class_upfront: bool,
    /// Datacenter names by position, for traces.
    names: Box<[String]>,
}

impl Plan {
    /// Builds the plan of `service` in `zone`, with `geo` the table its
    /// steps read (required when [`crate::model::PolicySpec::needs_location`]).
    pub fn build(
        zone: &ZoneConfig,
        service: &Service,
        geo: Option<Arc<GeoPolicy>>,
        countries: &CountryTable,
    ) -> Self {
        let spec = &service.policy;
        let dcs = &service.datacenters[..service.datacenters.len().min(MAX_CANDIDATES)];
        let position = |id: DcId| dcs.iter().position(|&d| d == id);
        let steps = spec
            .steps
            .iter()
            .map(|s| match s {
                Step::Geo => Built::Geo,
                Step::Failover => Built::Failover,
                Step::Weighted => Built::Weighted,
                Step::Sticky => Built::Sticky,
                Step::Nearest(n) => Built::Nearest(*n),
                Step::WithinKm(km) => {
                    let n = dcs.len();
                    let mut d = vec![0f32; n * n];
                    for (i, &a) in dcs.iter().enumerate() {
                        for (j, &b) in dcs.iter().enumerate() {
                            if let (Some(x), Some(y)) = (zone.dc(a).location, zone.dc(b).location) {
                                d[i * n + j] = distance_km(x, y) as f32;
                            }
                        }
                    }
                    Built::WithinKm(d.into(), *km as f32)
                }
                Step::Same(a) => Built::Same(*a),
                Step::Prefer(ids) => Built::Prefer(
                    ids.iter()
                        .filter_map(|&id| position(id))
                        .fold(0, |m, p| m | 1 << p),
                ),
                Step::Latency => Built::Latency(spec.latency_source),
            })
            .collect();
        let country: Box<[_]> = dcs.iter().map(|&d| zone.dc(d).country).collect();
        Self {
            steps,
            step_names: spec.steps.iter().map(ToString::to_string).collect(),
            datacenters: dcs.into(),
            weights: spec.weights.iter().take(dcs.len()).copied().collect(),
            name_hash: dcs
                .iter()
                .map(|&d| sticky::name_hash(&zone.dc(d).name))
                .collect(),
            continent: country
                .iter()
                .map(|c| c.and_then(|c| countries.get(&c)?.continent))
                .collect(),
            country,
            address_counts: dcs
                .iter()
                .map(|&d| (zone.dc(d).v4.len(), zone.dc(d).v6.len()))
                .collect(),
            geo,
            sticky_prefix: spec.sticky_prefix,
            max_answers: service.max_answers,
            warmup: service.warmup,
            ttl: service.ttl,
            degraded_ttl: service.degraded_ttl,
            all_down: match service.when_all_down {
                AllDown::All => AllDownKind::All,
                AllDown::None => AllDownKind::None,
                AllDown::Servfail => AllDownKind::Servfail,
                AllDown::Fallback(_) => AllDownKind::Fallback,
            },
            rotate: service.rotate,
            uses_weights: spec.uses_weights(),
            class_upfront: spec
                .steps
                .iter()
                .any(|s| matches!(s, Step::Geo | Step::Same(_))),
            names: dcs.iter().map(|&d| zone.dc(d).name.clone()).collect(),
        }
    }

    /// TTL of healthy answers.
    pub fn ttl(&self) -> u32 {
        self.ttl
    }

    /// The GeoIP table the plan reads, if any.
    pub fn geo(&self) -> Option<&GeoPolicy> {
        self.geo.as_deref()
    }

    /// Decides the answer for `client` without latency data (a `latency`
    /// step then has only the distance model); see [`Self::decide_with`].
    #[cfg(test)]
    pub(crate) fn decide(
        &self,
        client: &Client,
        health: &[DcHealth],
        entropy: u64,
        trace: &mut impl Tracer,
    ) -> Decision {
        self.decide_with(client, health, Latency::none(), entropy, trace)
    }

    /// Decides the answer for `client`, with `health` the zone's
    /// datacenter states (indexed by `DcId`; missing entries count as up),
    /// `latency` the zone's latency data, and `entropy` the per-query
    /// randomness. Pure.
    pub fn decide_with(
        &self,
        client: &Client,
        health: &[DcHealth],
        latency: Latency<'_>,
        entropy: u64,
        trace: &mut impl Tracer,
    ) -> Decision {
        let mut c = Candidates::all(self.datacenters.len());
        let state = |dc: DcId| health.get(dc.index()).copied().unwrap_or(DcHealth::UP);
        // Weights scaled by the capacity each datacenter reports (100 %
        // when it reports none): load-aware balancing.
        let scaled;
        let weights: &[u32] = if self.uses_weights {
            let mut w = [0u32; MAX_CANDIDATES];
            for ((w, &configured), &dc) in
                w.iter_mut().zip(&self.weights).zip(&self.datacenters[..])
            {
                *w = configured * u32::from(state(dc).capacity.min(100));
            }
            scaled = w;
            &scaled[..self.datacenters.len()]
        } else {
            &self.weights
        };
        let class = if self.class_upfront {
            self.geo.as_ref().map(|g| g.lookup(client.addr))
        } else {
            None
        };
        let mut scope = class.map_or(0, |(_, s)| s);
        let mut rng = entropy;
        // The step that last changed the leading candidate.
        let (mut lead, mut decider) = (c.ranked().first().copied(), 0usize);
        for (i, step) in self.steps.iter().enumerate() {
            let now = c.ranked().first().copied();
            if now != lead {
                (lead, decider) = (now, i.saturating_sub(1));
            }
            match step {
                Built::Geo => {
                    let Some((class, _)) = class else { continue };
                    c.reorder_first(class.order.iter().filter_map(|&d| self.position(d)));
                    trace.stage(|| Stage {
                        note: format!("GeoIP class covers /{scope}"),
                        ..self.stage(i, &c, scope)
                    });
                    continue;
                }
                Built::Failover => {
                    c.first_tier().sort_unstable();
                }
                Built::Weighted => {
                    rng = weighted::mix(rng.wrapping_add(i as u64));
                    weighted::order(c.first_tier(), weights, rng);
                }
                Built::Sticky => {
                    let (v4, v6) = self.sticky_prefix;
                    let prefix = if client.addr.is_ipv4() { v4 } else { v6 };
                    scope = scope.max(prefix);
                    let key = sticky::client_key(client.addr, prefix);
                    sticky::order(c.first_tier(), weights, &self.name_hash, key);
                    trace.stage(|| Stage {
                        note: format!("hashed {}/{prefix}", sticky::masked(client.addr, prefix)),
                        ..self.stage(i, &c, scope)
                    });
                    continue;
                }
                Built::Nearest(n) => c.narrow(|pos, _| pos < *n),
                Built::WithinKm(dist, km) => {
                    let n = self.datacenters.len();
                    let lead = c.ranked().first().map(|&l| usize::from(l));
                    c.narrow(|_, x| lead.is_some_and(|l| dist[l * n + usize::from(x)] <= *km));
                }
                Built::Same(attr) => {
                    let class = class.map(|(c, _)| c);
                    c.narrow(|_, x| match attr {
                        Attribute::Country => class
                            .and_then(|k| k.country)
                            .is_some_and(|k| self.country[usize::from(x)] == Some(k)),
                        Attribute::Continent => class
                            .and_then(|k| k.continent)
                            .is_some_and(|k| self.continent[usize::from(x)] == Some(k)),
                    });
                }
                Built::Prefer(set) => c.narrow(|_, x| set & (1 << x) != 0),
                Built::Latency(source) => {
                    self.by_latency(
                        *source, client, health, latency, &mut c, &mut scope, i, trace,
                    );
                    continue;
                }
            }
            trace.stage(|| self.stage(i, &c, scope));
        }
        if c.ranked().first().copied() != lead {
            decider = self.steps.len().saturating_sub(1);
        }

        let mut order = [DcId(0); MAX_CANDIDATES];
        for (slot, &p) in order.iter_mut().zip(c.ranked()) {
            *slot = self.datacenters[usize::from(p)];
        }
        let order = &order[..c.len];
        let usable = |dc: DcId| state(dc).usable(self.warmup);
        let choice = choose(order, self.max_answers, usable);
        let rotation = if self.rotate {
            (weighted::mix(entropy ^ 0x526f_7461_7465) >> 32) as u32
        } else {
            0
        };
        let mut decision = self.conclude(choice, scope, rotation);
        decision.step = u8::try_from(decider).unwrap_or(u8::MAX);
        if decision.outcome == Outcome::Answer {
            for (slot, &dc) in decision.left_out.iter_mut().zip(decision.choice.dcs()) {
                let down = state(dc).down_addresses;
                if down != 0 {
                    *slot = self.left_out(dc, down);
                }
            }
        }
        trace.stage(|| Stage {
            name: "health".into(),
            order: order.to_vec(),
            first_tier: order.len(),
            scope,
            note: String::new(),
            usable: order.iter().map(|&d| usable(d)).collect(),
        });
        decision
    }

    /// A `latency` step: orders the first tier by estimated RTT, lowest
    /// first (stable; no estimate sorts last), keeps the client network's
    /// assigned datacenter first unless the best beats it by both margins,
    /// and widens `scope` to what the estimates depended on.
    #[allow(clippy::too_many_arguments)]
    fn by_latency(
        &self,
        source: LatencySource,
        client: &Client,
        health: &[DcHealth],
        latency: Latency<'_>,
        c: &mut Candidates,
        scope: &mut u8,
        step: usize,
        trace: &mut impl Tracer,
    ) {
        let tier = c.first_tier();
        let n = tier.len();
        let mut ids = [DcId(0); MAX_CANDIDATES];
        for (id, &p) in ids.iter_mut().zip(tier.iter()) {
            *id = self.datacenters[usize::from(p)];
        }
        let mut est = [Estimate::NONE; MAX_CANDIDATES];
        let distance = |km: &mut [Option<f32>]| {
            let Some(geo) = &self.geo else { return 0 };
            let (class, block) = geo.lookup(client.addr);
            for (k, &p) in km.iter_mut().zip(tier.iter()) {
                *k = class
                    .km
                    .get(usize::from(p))
                    .filter(|&&d| d != u16::MAX)
                    .map(|&d| f32::from(d));
            }
            block
        };
        let found = latency.view.estimate(
            latency.zone,
            source,
            client.addr,
            &ids[..n],
            health,
            distance,
            &mut est[..n],
        );
        // Insertion sort of indices by estimate: stable, no allocation.
        let mut idx = [0u8; MAX_CANDIDATES];
        for (i, slot) in idx.iter_mut().enumerate().take(n) {
            *slot = i as u8;
        }
        let rtt = |i: u8| est[usize::from(i)].rtt_ms;
        for i in 1..n {
            let mut j = i;
            while j > 0 && rtt(idx[j]) < rtt(idx[j - 1]) {
                idx.swap(j, j - 1);
                j -= 1;
            }
        }
        let mut kept = false;
        if let Some((inc, _)) = found.incumbent {
            let inc = inc as u8;
            let best = idx[0];
            if best != inc
                && rtt(inc).is_finite()
                && !latency.view.model().beats(rtt(best), rtt(inc))
                && let Some(at) = idx[..n].iter().position(|&i| i == inc)
            {
                idx.copy_within(0..at, 1);
                idx[0] = inc;
                kept = true;
            }
        }
        let original = {
            let mut o = [0u8; MAX_CANDIDATES];
            o[..n].copy_from_slice(tier);
            o
        };
        for (slot, &i) in tier.iter_mut().zip(idx.iter()) {
            *slot = original[usize::from(i)];
        }
        *scope = (*scope).max(found.scope);
        trace.stage(|| {
            let names: Vec<String> = (0..n)
                .map(|i| {
                    let e = est[i];
                    let name = &self.names[usize::from(original[i])];
                    if e.rtt_ms.is_finite() {
                        let samples = if e.samples > 0 {
                            format!(", {} samples", e.samples)
                        } else {
                            String::new()
                        };
                        let penalty = if e.penalised { ", congested" } else { "" };
                        format!(
                            "{name} {:.1} ms ({}{samples}{penalty})",
                            e.rtt_ms,
                            e.level.name()
                        )
                    } else {
                        format!("{name} no estimate")
                    }
                })
                .collect();
            let now = crate::latency::unix_now();
            let mut note = format!("decided by {}", found.level.name());
            if found.last_seen != 0 {
                note += &format!(
                    " (newest sample {} s old)",
                    now.saturating_sub(found.last_seen)
                );
            }
            note += &format!("; {}", names.join(", "));
            if let Some((inc, since)) = found.incumbent {
                note += &format!(
                    "; assigned {} for {} s{}",
                    self.names[usize::from(original[inc])],
                    now.saturating_sub(since),
                    if kept { ", kept within the margin" } else { "" }
                );
            }
            Stage {
                note,
                ..self.stage(step, c, *scope)
            }
        });
    }

    /// The decision for a choice: the all-down outcome and the TTL.
    fn conclude(&self, choice: Choice, scope: u8, rotation: u32) -> Decision {
        let outcome = match (choice.all_down, self.all_down) {
            (false, _) | (true, AllDownKind::All) => Outcome::Answer,
            (true, AllDownKind::None) => Outcome::NoData,
            (true, AllDownKind::Servfail) => Outcome::ServFail,
            (true, AllDownKind::Fallback) => Outcome::Fallback,
        };
        let ttl = if choice.degraded {
            self.degraded_ttl
        } else {
            self.ttl
        };
        Decision {
            choice,
            outcome,
            ttl,
            scope,
            left_out: [0; MAX_ANSWERS],
            rotation,
            step: 0,
        }
    }

    /// The decision that answers with exactly `dc`, normal or degraded:
    /// the fast path renders each ahead of time.
    pub fn forced(&self, dc: DcId, degraded: bool) -> Decision {
        self.conclude(Choice::of(&[dc], degraded, false), 0, 0)
    }

    /// The decision when nothing is usable, for services that do not fail
    /// open (`None` for those that do: they answer from the ranking).
    pub fn all_down(&self) -> Option<Decision> {
        let d = self.conclude(Choice::of(&[], true, true), 0, 0);
        (d.outcome != Outcome::Answer).then_some(d)
    }

    /// `down` without the families whose every address is down: the
    /// datacenter is usable (its `min_up` holds), so it answers with all of
    /// that family rather than none.
    fn left_out(&self, dc: DcId, down: u64) -> u64 {
        let Some(p) = self.position(dc) else { return 0 };
        let (n4, n6) = self.address_counts[usize::from(p)];
        let family = |shift: u32, n: usize| {
            let all = if n >= 32 {
                u64::from(u32::MAX)
            } else {
                (1u64 << n) - 1
            };
            let m = (down >> shift) & all;
            if m == all { 0 } else { m << shift }
        };
        family(0, n4) | family(32, n6)
    }

    fn position(&self, dc: DcId) -> Option<u8> {
        self.datacenters
            .iter()
            .position(|&d| d == dc)
            .map(|p| p as u8)
    }

    /// The name of step `i` as the config writes it (`geo`, `weighted`,
    /// `nearest(2)`, ...).
    pub fn step_name(&self, i: usize) -> Option<&str> {
        self.step_names.get(i).map(String::as_str)
    }

    /// The number of steps.
    pub fn step_count(&self) -> usize {
        self.step_names.len()
    }

    /// The trace of step `i` with the candidates after it.
    fn stage(&self, i: usize, c: &Candidates, scope: u8) -> Stage {
        Stage {
            name: self.step_names[i].clone(),
            order: c
                .ranked()
                .iter()
                .map(|&p| self.datacenters[usize::from(p)])
                .collect(),
            first_tier: c.first,
            scope,
            note: String::new(),
            usable: Vec::new(),
        }
    }
}

//------------ Classes ---------------------------------------------------------

/// What a GeoIP table stores per client network: the geo ranking, and the
/// client's country and continent where a `same` step needs them.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct GeoClass {
    /// Datacenters in geo preference order; may be a subset of the
    /// service's (an override lists only some).
    pub order: Box<[DcId]>,
    /// The client's country, if kept.
    pub country: Option<CountryCode>,
    /// The client's continent, if kept.
    pub continent: Option<Continent>,
    /// The client's distance in km to each datacenter the table was built
    /// for, in their order (`u16::MAX`: unknown), if kept; else empty.
    pub km: Box<[u16]>,
}

impl GeoClass {
    /// A class with this ranking and no attributes.
    pub fn of(order: &[DcId]) -> Self {
        Self {
            order: order.into(),
            country: None,
            continent: None,
            km: Box::default(),
        }
    }
}

/// Distinct classes, interned so tables store small ids.
#[derive(Clone, Debug, Default)]
pub struct Classes {
    list: Vec<GeoClass>,
    index: std::collections::HashMap<GeoClass, u32>,
}

impl Classes {
    /// The id of `class`, adding it if new.
    pub fn intern(&mut self, class: GeoClass) -> u32 {
        if let Some(&id) = self.index.get(&class) {
            return id;
        }
        let id = self.distinct(class.clone());
        self.index.insert(class, id);
        id
    }

    /// A new id for `class` even if an equal one exists: table blocks
    /// with different ids never merge.
    pub fn distinct(&mut self, class: GeoClass) -> u32 {
        // At most one class per GeoIP network: far fewer than 2^32.
        let id = u32::try_from(self.list.len()).unwrap_or(u32::MAX);
        self.list.push(class);
        id
    }

    /// Drops the index [`Self::intern`] uses, once a table is built: the
    /// list alone answers queries, and thousands of services each keep
    /// one.
    pub fn seal(&mut self) {
        self.index = std::collections::HashMap::new();
        self.list.shrink_to_fit();
    }

    /// The class with this id.
    pub fn get(&self, id: u32) -> &GeoClass {
        &self.list[id as usize]
    }

    /// How many distinct classes exist.
    pub fn len(&self) -> usize {
        self.list.len()
    }

    /// Whether none exist.
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }
}

#[cfg(test)]
mod tests;
