//! Routing by measured latency: the estimates a `latency` policy step
//! ranks datacenters by, where they come from, and how they reach the
//! query path.
//!
//! A `latency` step orders its candidates by the estimated round-trip time
//! (RTT) from the client, lowest first. With `source = "clients"` (the
//! default) each datacenter's estimate comes from the most specific level
//! that has one:
//!
//! 1. real-user measurements (RUM) aggregated for the client's network
//!    (`[latency] ipv4_prefix_length`, default /24; IPv6 /48);
//! 2. the same aggregated for a coarser key: a shorter prefix (/16, /32)
//!    or the client's autonomous system;
//! 3. the static latency map file (CIDR → per-datacenter RTT);
//! 4. the distance model: `base_rtt_ms + 2 × km × path_stretch /
//!    fibre_km_per_ms`, from the client's GeoIP location.
//!
//! A RUM level counts for a datacenter only with at least `min_samples`
//! of decayed sample weight ([`rum`]). With `source = "probes"` the
//! estimate is this instance's smoothed probe RTT to the datacenter. From
//! either source, a datacenter whose probe RTT is well above its own
//! baseline (congested) gets `congestion_penalty_ms` added.
//!
//! **Stability.** Each RUM row remembers the datacenter its client
//! network was assigned at the last publication (its *incumbent*); at
//! query time the incumbent stays first unless the best candidate beats
//! it by more than `margin_ms` *and* `margin_percent`.
//!
//! **ECS scope.** The answer depends only on the levels consulted, so the
//! scope is the longest prefix over them: a level's prefix where the
//! client's key has a row, the widest block around the client without a
//! row of that level where it has none ([`table::KeyTable::lookup_prefix`]),
//! and the table block for the ASN, map and distance levels. Every client
//! inside the scope therefore gets the same answer.
//!
//! **The query path** reads one [`LatencyView`] from the snapshot: sorted
//! tables rebuilt at each publication (every `publish_interval`, 10 s by
//! default), never a lock or a mutable map.

pub mod asn;
pub mod beacon;
pub mod hub;
pub mod map;
pub mod rum;
pub mod table;

use std::net::IpAddr;
use std::sync::Arc;

use crate::config::{Coarse, LatencyConfig};
use crate::health::DcHealth;
use crate::model::{DcId, LatencySource};
use table::{Cell, KeyTable, NO_INCUMBENT, key_for};

/// The wall clock in unix seconds, as the latency code's `now`.
pub fn unix_now() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u32::try_from(d.as_secs()).unwrap_or(u32::MAX))
}

/// Hysteresis: whether an RTT of `challenger` beats the assigned
/// datacenter's `incumbent` by more than `margin_ms` and by more than
/// `margin_percent` % of it. The one rule for RUM rows at publication,
/// the query path, and probe assignments.
pub fn beats(challenger: f64, incumbent: f64, margin_ms: f64, margin_percent: f64) -> bool {
    let gain = incumbent - challenger;
    gain > margin_ms && gain > incumbent * margin_percent / 100.0
}

/// No estimate: sorts last.
pub const NONE_MS: f32 = f32::INFINITY;

/// Which level gave a datacenter's estimate.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Level {
    /// None has one.
    #[default]
    None,
    /// RUM for the client's network.
    Fine,
    /// RUM for the coarser key (prefix or AS).
    Coarse,
    /// The static latency map.
    Map,
    /// The distance model.
    Distance,
    /// This instance's probe RTT.
    Probes,
}

impl Level {
    /// The name `explain` shows.
    pub fn name(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Fine => "rum",
            Self::Coarse => "rum-coarse",
            Self::Map => "map",
            Self::Distance => "distance",
            Self::Probes => "probes",
        }
    }
}

/// One candidate's estimate.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Estimate {
    /// Milliseconds, penalty included; [`NONE_MS`] when unknown.
    pub rtt_ms: f32,
    /// Where it came from.
    pub level: Level,
    /// Decayed RUM sample weight behind it (0 for other levels).
    pub samples: u16,
    /// `congestion_penalty_ms` was added.
    pub penalised: bool,
}

impl Estimate {
    /// No estimate.
    pub const NONE: Self = Self {
        rtt_ms: NONE_MS,
        level: Level::None,
        samples: 0,
        penalised: false,
    };
}

/// What estimating found besides the per-candidate figures.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Estimated {
    /// The ECS scope the estimates allow.
    pub scope: u8,
    /// The level of the most specific row consulted that decided.
    pub level: Level,
    /// The client network's assigned datacenter, as an index into the
    /// candidates, and since when (unix seconds).
    pub incumbent: Option<(usize, u32)>,
    /// Unix seconds of the newest sample of the deciding RUM row.
    pub last_seen: u32,
}

/// The parts of `[latency]` the query path uses.
#[derive(Clone, Debug, PartialEq)]
pub struct Model {
    fine: (u8, u8),
    coarse: Option<(u8, u8)>,
    margin_ms: f64,
    margin_percent: f64,
    penalty_ms: f32,
    /// Milliseconds of RTT per km of great-circle distance.
    ms_per_km: f64,
    base_ms: f64,
}

impl Model {
    /// From validated settings.
    pub fn new(c: &LatencyConfig) -> Self {
        Self {
            fine: c.fine,
            coarse: match c.coarse {
                Coarse::Prefix(v4, v6) => Some((v4, v6)),
                Coarse::Asn(_) => None,
            },
            margin_ms: c.margin_ms,
            margin_percent: c.margin_percent,
            penalty_ms: c.congestion_penalty_ms as f32,
            ms_per_km: 2.0 * c.path_stretch / c.fibre_km_per_ms,
            base_ms: c.base_rtt_ms,
        }
    }

    /// The distance model's RTT for `km`, in milliseconds.
    pub fn distance_rtt(&self, km: f64) -> f64 {
        self.base_ms + km * self.ms_per_km
    }

    /// Whether `challenger` beats `incumbent` by more than both margins.
    pub fn beats(&self, challenger: f32, incumbent: f32) -> bool {
        beats(
            f64::from(challenger),
            f64::from(incumbent),
            self.margin_ms,
            self.margin_percent,
        )
    }
}

impl Default for Model {
    fn default() -> Self {
        Self::new(&LatencyConfig::default())
    }
}

/// Published RUM aggregates.
#[derive(Debug, Default)]
pub struct Rum {
    /// Per client network at the fine prefix.
    pub fine: KeyTable,
    /// Per coarse prefix or AS number.
    pub coarse: KeyTable,
    /// Column names: datacenter names.
    pub names: Arc<[String]>,
}

/// The probe-RTT assignment of one zone, kept with hysteresis by the
/// publisher: the datacenter ranked first and since when.
pub type ProbeIncumbent = Option<(DcId, u32)>;

/// Columns of one datacenter in the RUM and map tables.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Columns {
    rum: u16,
    map: u16,
}

/// Everything the query path knows about latency, frozen; see the module
/// docs.
#[derive(Debug, Default)]
pub struct LatencyView {
    model: Model,
    rum: Arc<Rum>,
    map: Option<Arc<map::LatencyMap>>,
    asn: Option<Arc<asn::AsnTable>>,
    /// Per zone (snapshot order), per `DcId`.
    columns: Box<[Box<[Columns]>]>,
    /// Per zone.
    probes: Box<[ProbeIncumbent]>,
}

/// The tables a view is built from.
#[derive(Clone, Debug, Default)]
pub struct Sources {
    /// `[latency]` for the query path.
    pub model: Model,
    /// The latest RUM publication.
    pub rum: Arc<Rum>,
    /// The static map.
    pub map: Option<Arc<map::LatencyMap>>,
    /// The ASN table.
    pub asn: Option<Arc<asn::AsnTable>>,
}

impl LatencyView {
    /// A view over `sources` for zones whose datacenter names are
    /// `zones` (snapshot order), with each zone's probe assignment.
    pub fn new<'a>(
        sources: Sources,
        zones: impl Iterator<Item = &'a [crate::model::Datacenter]>,
        probes: Box<[ProbeIncumbent]>,
    ) -> Self {
        let index = |names: &[String], name: &str| {
            names
                .iter()
                .position(|n| n == name)
                .and_then(|i| u16::try_from(i).ok())
                .unwrap_or(NO_INCUMBENT)
        };
        let map_names = sources.map.as_ref().map_or(&[][..], |m| m.names());
        let columns = zones
            .map(|dcs| {
                dcs.iter()
                    .map(|dc| Columns {
                        rum: index(&sources.rum.names, &dc.name),
                        map: index(map_names, &dc.name),
                    })
                    .collect()
            })
            .collect();
        Self {
            model: sources.model,
            rum: sources.rum,
            map: sources.map,
            asn: sources.asn,
            columns,
            probes,
        }
    }

    /// The sources this view reads, to build the next one.
    pub fn sources(&self) -> Sources {
        Sources {
            model: self.model.clone(),
            rum: Arc::clone(&self.rum),
            map: self.map.clone(),
            asn: self.asn.clone(),
        }
    }

    /// The settings.
    pub fn model(&self) -> &Model {
        &self.model
    }

    /// The published RUM tables.
    pub fn rum(&self) -> &Rum {
        &self.rum
    }

    /// Each zone's probe assignment.
    pub fn probe_incumbents(&self) -> &[ProbeIncumbent] {
        &self.probes
    }

    /// Estimates the RTT to each of `dcs` (datacenters of the zone at
    /// `zone`) into `out[..dcs.len()]`. `distance` gives, when the
    /// distance level is reached, the client's distance in km to each of
    /// `dcs` (`None` where unknown) and the block it holds over. Pure,
    /// allocation-free.
    #[allow(clippy::too_many_arguments)]
    pub fn estimate(
        &self,
        zone: usize,
        source: LatencySource,
        addr: IpAddr,
        dcs: &[DcId],
        health: &[DcHealth],
        distance: impl FnOnce(&mut [Option<f32>]) -> u8,
        out: &mut [Estimate],
    ) -> Estimated {
        let n = dcs.len().min(out.len());
        let out = &mut out[..n];
        out.fill(Estimate::NONE);
        let state = |dc: DcId| health.get(dc.index()).copied().unwrap_or(DcHealth::UP);
        let mut found = Estimated::default();
        match source {
            LatencySource::Probes => {
                for (e, &dc) in out.iter_mut().zip(dcs) {
                    let rtt = state(dc).rtt_us;
                    if rtt != 0 {
                        *e = Estimate {
                            rtt_ms: rtt as f32 / 1000.0,
                            level: Level::Probes,
                            ..Estimate::NONE
                        };
                    }
                }
                found.level = Level::Probes;
                if let Some(Some((dc, since))) = self.probes.get(zone) {
                    found.incumbent = dcs.iter().position(|d| d == dc).map(|i| (i, *since));
                }
            }
            LatencySource::Clients => self.clients(zone, addr, dcs, distance, out, &mut found),
        }
        if self.model.penalty_ms > 0.0 {
            for (e, &dc) in out.iter_mut().zip(dcs) {
                if e.rtt_ms.is_finite() && state(dc).congested {
                    e.rtt_ms += self.model.penalty_ms;
                    e.penalised = true;
                }
            }
        }
        found
    }

    fn clients(
        &self,
        zone: usize,
        addr: IpAddr,
        dcs: &[DcId],
        distance: impl FnOnce(&mut [Option<f32>]) -> u8,
        out: &mut [Estimate],
        found: &mut Estimated,
    ) {
        let columns = self.columns.get(zone).map_or(&[][..], |c| &c[..]);
        let column = |dc: DcId| {
            columns.get(dc.index()).copied().unwrap_or(Columns {
                rum: NO_INCUMBENT,
                map: NO_INCUMBENT,
            })
        };
        let mut missing = out.len();
        // Fills the candidates still without an estimate from `cells`.
        let mut fill =
            |cells: &[Cell], level: Level, col: fn(Columns) -> u16, out: &mut [Estimate]| {
                for (e, &dc) in out.iter_mut().zip(dcs) {
                    if e.level != Level::None {
                        continue;
                    }
                    if let Some(&c) = cells.get(usize::from(col(column(dc))))
                        && c.is_some()
                    {
                        *e = Estimate {
                            rtt_ms: c.rtt_ms(),
                            level,
                            samples: if level == Level::Map { 0 } else { c.samples },
                            penalised: false,
                        };
                        missing -= 1;
                    }
                }
                missing
            };
        let v4 = addr.is_ipv4();
        let mut rum_row = |cells: &[Cell],
                           meta: table::RowMeta,
                           level: Level,
                           found: &mut Estimated,
                           out: &mut [Estimate]| {
            if found.level == Level::None {
                found.level = level;
                found.last_seen = meta.last_seen;
                if meta.incumbent != NO_INCUMBENT {
                    found.incumbent = dcs
                        .iter()
                        .position(|&dc| column(dc).rum == meta.incumbent)
                        .map(|i| (i, meta.since));
                }
            }
            fill(cells, level, |c| c.rum, out)
        };

        // 1. The client's own network.
        let (p4, p6) = self.model.fine;
        let prefix = if v4 { p4 } else { p6 };
        let (row, scope) = self.rum.fine.lookup_prefix(key_for(addr, p4, p6), prefix);
        found.scope = scope;
        if let Some((cells, meta)) = row
            && rum_row(cells, meta, Level::Fine, found, out) == 0
        {
            return;
        }
        // 2. The coarser key.
        let coarse = match (self.model.coarse, &self.asn) {
            (Some((c4, c6)), _) => {
                let prefix = if v4 { c4 } else { c6 };
                self.rum.coarse.lookup_prefix(key_for(addr, c4, c6), prefix)
            }
            (None, Some(asn)) => {
                let (number, block) = asn.lookup(addr);
                (
                    number.and_then(|n| self.rum.coarse.get(u64::from(n))),
                    block,
                )
            }
            (None, None) => (None, 0),
        };
        found.scope = found.scope.max(coarse.1);
        if let Some((cells, meta)) = coarse.0
            && rum_row(cells, meta, Level::Coarse, found, out) == 0
        {
            return;
        }
        // 3. The static map.
        if let Some(map) = &self.map {
            let (row, scope) = map.lookup(addr);
            found.scope = found.scope.max(scope);
            if let Some(cells) = row {
                if found.level == Level::None {
                    found.level = Level::Map;
                }
                if fill(cells, Level::Map, |c| c.map, out) == 0 {
                    return;
                }
            }
        }
        // 4. Distance.
        let mut km = [None; crate::policy::MAX_CANDIDATES];
        let km = &mut km[..out.len()];
        let scope = distance(km);
        found.scope = found.scope.max(scope);
        let mut any = false;
        for (e, km) in out.iter_mut().zip(km.iter()) {
            if e.level == Level::None
                && let Some(km) = km
            {
                *e = Estimate {
                    rtt_ms: self.model.distance_rtt(f64::from(*km)) as f32,
                    level: Level::Distance,
                    ..Estimate::NONE
                };
                any = true;
            }
        }
        if any && found.level == Level::None {
            found.level = Level::Distance;
        }
    }
}
