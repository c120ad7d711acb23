//! `meridian diff`: which client networks a config change would move to
//! another datacenter, before it is made.
//!
//! Both configs are loaded exactly as `check` loads them, then every
//! network of the GeoIP database is answered under each, by the real
//! routing code ([`crate::policy::Plan::decide_with`]) with every datacenter up. A
//! network *moves* when the set of datacenters in its answer differs.
//!
//! The answer of a deterministic plan (no `weighted`, `sticky` or
//! `latency` step) depends on the client only through its class: its
//! location in the database and the innermost `networks` override around
//! it. The address space is cut at every boundary of either database and
//! of every override of either config; the pieces with the same (new
//! location, old location, override) are one *key*, decided once at one
//! of its addresses and counted with the size of all of its pieces. The
//! counts are therefore exact, not sampled.
//!
//! Counting units: IPv4 in /24 equivalents (addresses / 256) and IPv6 in
//! /48 equivalents. Only networks the database places are counted (the
//! rest of the address space is not a client population); the IPv4
//! ranges inside IPv6 (`::/96`, `::ffff:0:0/96`) are IPv4's.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;
use serde::Serialize;

use crate::config::Config;
use crate::geo::Location;
use crate::geo::locations::LocationTable;
use crate::geo::table::addr_bits;
use crate::model::{Step, ZoneConfig};
use crate::policy::{Client, Latency};
use crate::snapshot::Snapshot;

/// Addresses in an IPv4 /24, and in an IPv6 /48.
const V4_UNIT: f64 = 256.0;
const V6_UNIT: f64 = (1u128 << 80) as f64;

//------------ Report ---------------------------------------------------------

/// IPv4 /24 and IPv6 /48 equivalents.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Size {
    /// IPv4, in /24 equivalents.
    pub v4_24s: f64,
    /// IPv6, in /48 equivalents.
    pub v6_48s: f64,
}

impl Size {
    fn add(&mut self, other: Self) {
        self.v4_24s += other.v4_24s;
        self.v6_48s += other.v6_48s;
    }
}

/// A part of a total, with percentages of it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Share {
    /// What moves.
    pub moved: Size,
    /// All of it (every placed network of the group).
    pub total: Size,
    /// `moved.v4_24s` as a percentage of `total.v4_24s` (0 when empty).
    pub v4_percent: f64,
    /// `moved.v6_48s` as a percentage of `total.v6_48s` (0 when empty).
    pub v6_percent: f64,
}

impl Share {
    fn of(moved: Size, total: Size) -> Self {
        let pct = |m: f64, t: f64| if t > 0.0 { 100.0 * m / t } else { 0.0 };
        Self {
            v4_percent: pct(moved.v4_24s, total.v4_24s),
            v6_percent: pct(moved.v6_48s, total.v6_48s),
            moved,
            total,
        }
    }
}

/// Networks moving from one answer to another.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Move {
    /// Datacenters answering under the old config, sorted by name.
    pub from: Vec<String>,
    /// Datacenters answering under the new config, sorted by name.
    pub to: Vec<String>,
    /// How much moves this way.
    pub size: Size,
}

/// One country's moves.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CountryMoves {
    /// ISO 3166-1 alpha-2 code, or `"??"` for networks placed without
    /// a country.
    pub country: String,
    /// The country's continent code, or `"??"`.
    pub continent: String,
    /// Moved and total of the country.
    #[serde(flatten)]
    pub share: Share,
    /// Per (from, to) pair, largest first.
    pub moves: Vec<Move>,
}

/// One continent's share.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ContinentShare {
    /// Continent code (AF, AN, AS, EU, NA, OC, SA), or `"??"`.
    pub continent: String,
    /// Moved and total of the continent.
    #[serde(flatten)]
    pub share: Share,
}

/// How a service was compared.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// In both configs, compared network by network.
    Compared,
    /// Only in the new config.
    Added,
    /// Only in the old config.
    Removed,
    /// In both, but its answer is not a function of the client network
    /// alone (`weighted`, `sticky` or `latency` steps); see `reason`.
    NotCompared,
}

/// A datacenter's share of a `weighted` or `sticky` service.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct WeightShare {
    /// Datacenter name.
    pub datacenter: String,
    /// Percentage of the weights under the old config (absent: 0).
    pub old_percent: f64,
    /// Percentage under the new config.
    pub new_percent: f64,
}

/// One service's result.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ServiceDiff {
    /// Zone origin, e.g. `gslb.example.com.`.
    pub zone: String,
    /// Service key, e.g. `www`.
    pub service: String,
    /// How it was compared.
    pub status: Status,
    /// Why it was not compared, for `not_compared`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Moved and total over every placed network (compared services).
    #[serde(flatten)]
    pub share: Share,
    /// Per (from, to) pair, largest first.
    pub moves: Vec<Move>,
    /// Countries with moves, most moved first.
    pub countries: Vec<CountryMoves>,
    /// Every continent, in code order, moved or not (so a gate can read
    /// "EU" whatever happened).
    pub continents: Vec<ContinentShare>,
    /// For `not_compared` services with weights: each datacenter's share
    /// of the weights before and after.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub weights: Vec<WeightShare>,
}

/// The whole comparison (`meridian diff --json` prints it).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Report {
    /// Schema version of this JSON; bumped on incompatible changes.
    pub version: u32,
    /// The old config file.
    pub old: String,
    /// The new config file.
    pub new: String,
    /// The GeoIP database of each side (`check`'s description).
    pub geoip: [String; 2],
    /// What was assumed: every datacenter up, overrides ignored.
    pub assumptions: String,
    /// Every placed network of the database walked.
    pub total: Size,
    /// One entry per service of either config, zone and name order.
    pub services: Vec<ServiceDiff>,
}

impl Report {
    /// The largest share moved, in percent, over every compared service,
    /// either family, and every continent: what `--fail-above` compares.
    pub fn max_percent(&self) -> f64 {
        self.services
            .iter()
            .flat_map(|s| {
                let c = s.continents.iter().map(|c| &c.share);
                std::iter::once(&s.share).chain(c)
            })
            .flat_map(|s| [s.v4_percent, s.v6_percent])
            .fold(0.0, f64::max)
    }
}

//------------ Keys -----------------------------------------------------------

/// Pieces of the address space that every deterministic plan answers
/// alike: same location in each database, same innermost override.
#[derive(Debug, Default)]
struct Keys {
    /// (v6, new location id, old location id, override index)
    /// → position in `keys`.
    index: HashMap<(bool, u32, u32, usize), usize>,
    keys: Vec<Key>,
}

#[derive(Debug)]
struct Key {
    /// An address inside it (its first piece's first address).
    addr: IpAddr,
    /// Where it is (the new database's location, else the old one's).
    location: Location,
    size: Size,
}

/// The blocks of one family as `(first address, location id)`, in order;
/// they cover the family's whole space.
fn starts(table: &LocationTable, v6: bool) -> Vec<(u128, u32)> {
    table
        .blocks(v6)
        .map(|(net, id)| (addr_bits(net.network()), id))
        .collect()
}

/// The id of the block holding `at`, advancing `cursor` (calls come in
/// address order).
fn id_at(blocks: &[(u128, u32)], cursor: &mut usize, at: u128) -> u32 {
    while blocks.get(*cursor + 1).is_some_and(|&(s, _)| s <= at) {
        *cursor += 1;
    }
    blocks.get(*cursor).map_or(0, |&(_, id)| id)
}

fn net_range(net: &IpNet) -> (u128, u128) {
    (addr_bits(net.network()), addr_bits(net.broadcast()))
}

impl Keys {
    /// Cuts one family's space at every boundary and groups the pieces.
    fn walk(&mut self, v6: bool, new: &LocationTable, old: Option<&LocationTable>, nets: &[IpNet]) {
        let new_blocks = starts(new, v6);
        let old_blocks = old.map(|t| starts(t, v6));
        let old_blocks = old_blocks.as_deref().unwrap_or(&new_blocks);
        let old_locations = old.unwrap_or(new).locations();
        // Overrides of this family, outer before inner at the same start.
        let mut overrides: Vec<(u128, u128)> = nets
            .iter()
            .filter(|n| n.addr().is_ipv6() == v6)
            .map(net_range)
            .collect();
        overrides.sort_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
        overrides.dedup();
        let mut cuts: Vec<u128> = new_blocks.iter().map(|&(s, _)| s).collect();
        if old.is_some() {
            cuts.extend(old_blocks.iter().map(|&(s, _)| s));
        }
        for &(s, e) in &overrides {
            cuts.push(s);
            cuts.extend(e.checked_add(1));
        }
        cuts.sort_unstable();
        cuts.dedup();
        let last = if v6 { u128::MAX } else { u128::from(u32::MAX) };
        let (mut at_new, mut at_old, mut next_override) = (0, 0, 0);
        let mut stack: Vec<usize> = Vec::new();
        for (i, &start) in cuts.iter().enumerate() {
            let end = cuts.get(i + 1).map_or(last, |&n| n - 1);
            let new_id = id_at(&new_blocks, &mut at_new, start);
            let old_id = id_at(old_blocks, &mut at_old, start);
            while stack.last().is_some_and(|&t| overrides[t].1 < start) {
                stack.pop();
            }
            while overrides.get(next_override).is_some_and(|o| o.0 <= start) {
                if overrides[next_override].1 >= start {
                    stack.push(next_override);
                }
                next_override += 1;
            }
            let placed = |locations: &[Option<Location>], id: u32| {
                locations.get(id as usize).copied().flatten()
            };
            let Some(location) =
                placed(new.locations(), new_id).or_else(|| placed(old_locations, old_id))
            else {
                continue;
            };
            let count = end - start + 1;
            let size = if v6 {
                Size {
                    v4_24s: 0.0,
                    v6_48s: count as f64 / V6_UNIT,
                }
            } else {
                Size {
                    v4_24s: count as f64 / V4_UNIT,
                    v6_48s: 0.0,
                }
            };
            let top = stack.last().copied().unwrap_or(usize::MAX);
            let k = *self
                .index
                .entry((v6, new_id, old_id, top))
                .or_insert_with(|| {
                    self.keys.push(Key {
                        addr: if v6 {
                            IpAddr::V6(Ipv6Addr::from(start))
                        } else {
                            IpAddr::V4(Ipv4Addr::from(start as u32))
                        },
                        location,
                        size: Size::default(),
                    });
                    self.keys.len() - 1
                });
            self.keys[k].size.add(size);
        }
    }
}

//------------ Comparing ------------------------------------------------------

/// Why a service's answer is not a function of the client network.
fn not_comparable(steps: &[Step]) -> Option<&'static str> {
    if steps.contains(&Step::Weighted) {
        Some("a weighted step picks at random per query: compare the weight shares")
    } else if steps.contains(&Step::Sticky) {
        Some("a sticky step hashes each client network: compare the weight shares")
    } else if steps.contains(&Step::Latency) {
        Some("a latency step ranks by measured round-trip times, which are not in the config")
    } else {
        None
    }
}

/// Each datacenter's share of the weights, by name.
fn weight_shares(zone: &ZoneConfig, service: usize) -> BTreeMap<String, f64> {
    let s = &zone.services[service];
    if !s.policy.uses_weights() {
        return BTreeMap::new();
    }
    let sum: f64 = s.policy.weights.iter().map(|&w| f64::from(w)).sum();
    s.datacenters
        .iter()
        .zip(&s.policy.weights)
        .map(|(&dc, &w)| {
            let pct = if sum > 0.0 {
                100.0 * f64::from(w) / sum
            } else {
                0.0
            };
            (zone.dc(dc).name.clone(), pct)
        })
        .collect()
}

fn code<T: ToString>(v: Option<T>) -> String {
    v.map_or_else(|| "??".to_string(), |v| v.to_string())
}

/// A service's place in a snapshot: zone position and service position.
fn find(snap: &Snapshot, origin: &str, name: &str) -> Option<(usize, usize)> {
    snap.zones().iter().enumerate().find_map(|(zi, z)| {
        (z.config.origin.to_string() == origin)
            .then(|| z.config.services.iter().position(|s| s.name == name))
            .flatten()
            .map(|si| (zi, si))
    })
}

/// The answer's datacenter names, sorted, for the client at `addr`, every
/// datacenter up.
fn answer(snap: &Snapshot, zone: usize, service: usize, addr: IpAddr) -> Vec<String> {
    let (Some(plan), Some(z)) = (snap.plan(zone, service), snap.zones().get(zone)) else {
        return Vec::new();
    };
    let latency = Latency {
        view: &snap.latency,
        zone,
    };
    let decision = plan.decide_with(&Client { addr }, &[], latency, 0, &mut ());
    let mut names: Vec<String> = decision
        .dcs()
        .iter()
        .map(|&d| z.config.dc(d).name.clone())
        .collect();
    names.sort();
    names
}

/// Sorts moves largest first (IPv4, then IPv6, then names).
fn sort_moves(moves: &mut [Move]) {
    moves.sort_by(|a, b| {
        b.size
            .v4_24s
            .total_cmp(&a.size.v4_24s)
            .then(b.size.v6_48s.total_cmp(&a.size.v6_48s))
            .then_with(|| (&a.from, &a.to).cmp(&(&b.from, &b.to)))
    });
}

/// Where a service is in one config: its zone and position.
type Side<'a> = (&'a ZoneConfig, usize);

/// Compares two loaded configs; `names` are the config files, for the
/// report.
pub fn diff(old: (&Config, &Snapshot), new: (&Config, &Snapshot), names: [String; 2]) -> Report {
    let (old_cfg, old_snap) = old;
    let (new_cfg, new_snap) = new;
    let new_table = LocationTable::build(&new_snap.geo);
    let old_table = (old_snap.geo_fingerprint != new_snap.geo_fingerprint)
        .then(|| LocationTable::build(&old_snap.geo));
    let nets: Vec<IpNet> = [old_cfg, new_cfg]
        .iter()
        .flat_map(|c| &c.zones)
        .flat_map(|z| &z.services)
        .flat_map(|s| s.policy.geo.networks.iter().map(|(n, _)| *n))
        .collect();
    let mut keys = Keys::default();
    for v6 in [false, true] {
        keys.walk(v6, &new_table, old_table.as_ref(), &nets);
    }
    let keys = keys.keys;

    // Totals per country and continent, shared by every service.
    let mut total = Size::default();
    let mut country_total: BTreeMap<String, Size> = BTreeMap::new();
    let mut continent_total: BTreeMap<String, Size> = BTreeMap::new();
    for k in &keys {
        total.add(k.size);
        country_total
            .entry(code(k.location.country))
            .or_default()
            .add(k.size);
        continent_total
            .entry(code(k.location.continent))
            .or_default()
            .add(k.size);
    }

    // Every service of either config, by (origin, name).
    let mut services: BTreeMap<(String, String), [Option<Side<'_>>; 2]> = BTreeMap::new();
    for (side, cfg) in [old_cfg, new_cfg].into_iter().enumerate() {
        for z in &cfg.zones {
            for (si, s) in z.services.iter().enumerate() {
                services
                    .entry((z.origin.to_string(), s.name.clone()))
                    .or_default()[side] = Some((z, si));
            }
        }
    }

    let empty = |zone: &str, service: &str, status, reason: Option<&str>| ServiceDiff {
        zone: zone.to_string(),
        service: service.to_string(),
        status,
        reason: reason.map(str::to_string),
        share: Share::of(Size::default(), total),
        moves: Vec::new(),
        countries: Vec::new(),
        continents: continent_total
            .iter()
            .map(|(c, t)| ContinentShare {
                continent: c.clone(),
                share: Share::of(Size::default(), *t),
            })
            .collect(),
        weights: Vec::new(),
    };
    let mut out = Vec::with_capacity(services.len());
    for ((origin, name), sides) in services {
        let [Some((old_zone, old_si)), Some((new_zone, new_si))] = sides else {
            let status = if sides[0].is_some() {
                Status::Removed
            } else {
                Status::Added
            };
            out.push(empty(&origin, &name, status, None));
            continue;
        };
        let reason = not_comparable(&old_zone.services[old_si].policy.steps)
            .or_else(|| not_comparable(&new_zone.services[new_si].policy.steps));
        let (Some((oz, os)), Some((nz, ns)), None) = (
            find(old_snap, &origin, &name),
            find(new_snap, &origin, &name),
            reason,
        ) else {
            let mut d = empty(&origin, &name, Status::NotCompared, reason);
            let (before, after) = (
                weight_shares(old_zone, old_si),
                weight_shares(new_zone, new_si),
            );
            let mut dcs: Vec<&String> = before.keys().chain(after.keys()).collect();
            dcs.sort();
            dcs.dedup();
            d.weights = dcs
                .into_iter()
                .map(|dc| WeightShare {
                    datacenter: dc.clone(),
                    old_percent: before.get(dc).copied().unwrap_or(0.0),
                    new_percent: after.get(dc).copied().unwrap_or(0.0),
                })
                .collect();
            out.push(d);
            continue;
        };
        let mut moved = Size::default();
        let mut pairs: BTreeMap<(Vec<String>, Vec<String>), Size> = BTreeMap::new();
        let mut by_country: BTreeMap<String, (String, Size, BTreeMap<_, Size>)> = BTreeMap::new();
        let mut by_continent: BTreeMap<String, Size> = BTreeMap::new();
        for k in &keys {
            let from = answer(old_snap, oz, os, k.addr);
            let to = answer(new_snap, nz, ns, k.addr);
            if from == to {
                continue;
            }
            moved.add(k.size);
            let c = by_country
                .entry(code(k.location.country))
                .or_insert_with(|| (code(k.location.continent), Size::default(), BTreeMap::new()));
            c.1.add(k.size);
            c.2.entry((from.clone(), to.clone()))
                .or_default()
                .add(k.size);
            by_continent
                .entry(code(k.location.continent))
                .or_default()
                .add(k.size);
            pairs.entry((from, to)).or_default().add(k.size);
        }
        let to_moves = |pairs: BTreeMap<(Vec<String>, Vec<String>), Size>| {
            let mut v: Vec<Move> = pairs
                .into_iter()
                .map(|((from, to), size)| Move { from, to, size })
                .collect();
            sort_moves(&mut v);
            v
        };
        let mut countries: Vec<CountryMoves> = by_country
            .into_iter()
            .map(|(country, (continent, size, pairs))| CountryMoves {
                share: Share::of(
                    size,
                    country_total.get(&country).copied().unwrap_or_default(),
                ),
                country,
                continent,
                moves: to_moves(pairs),
            })
            .collect();
        countries.sort_by(|a, b| {
            b.share
                .moved
                .v4_24s
                .total_cmp(&a.share.moved.v4_24s)
                .then(b.share.moved.v6_48s.total_cmp(&a.share.moved.v6_48s))
                .then_with(|| a.country.cmp(&b.country))
        });
        let mut d = empty(&origin, &name, Status::Compared, None);
        d.share = Share::of(moved, total);
        d.moves = to_moves(pairs);
        d.countries = countries;
        for c in &mut d.continents {
            let m = by_continent.get(&c.continent).copied().unwrap_or_default();
            c.share = Share::of(m, c.share.total);
        }
        out.push(d);
    }
    Report {
        version: 1,
        old: names[0].clone(),
        new: names[1].clone(),
        geoip: [old_snap.geo.describe(), new_snap.geo.describe()],
        assumptions: "every datacenter up; drain and force-up overrides ignored; \
                      answers compared as sets of datacenter names"
            .to_string(),
        total,
        services: out,
    }
}

//------------ Text -----------------------------------------------------------

/// Whole numbers as they are, fractions with two decimals, large
/// numbers without (IPv6 counts run to 10^13).
fn num(x: f64) -> String {
    if x == x.trunc() || x.abs() >= 1000.0 {
        format!("{x:.0}")
    } else {
        format!("{x:.2}")
    }
}

fn dcs(names: &[String]) -> String {
    if names.is_empty() {
        "(none)".to_string()
    } else {
        names.join("+")
    }
}

fn size(s: &Size) -> String {
    format!("{} IPv4 /24s, {} IPv6 /48s", num(s.v4_24s), num(s.v6_48s))
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "old: {} (GeoIP {})", self.old, self.geoip[0])?;
        writeln!(f, "new: {} (GeoIP {})", self.new, self.geoip[1])?;
        writeln!(f, "assuming {}", self.assumptions)?;
        writeln!(f, "database: {}", size(&self.total))?;
        for s in &self.services {
            let label = format!("{} in {}", s.service, s.zone);
            match s.status {
                Status::Added => writeln!(f, "\n{label}: added")?,
                Status::Removed => writeln!(f, "\n{label}: removed")?,
                Status::NotCompared => {
                    writeln!(
                        f,
                        "\n{label}: not compared: {}",
                        s.reason.as_deref().unwrap_or("")
                    )?;
                    for w in &s.weights {
                        writeln!(
                            f,
                            "  weight {}: {:.1} % -> {:.1} %",
                            w.datacenter, w.old_percent, w.new_percent
                        )?;
                    }
                }
                Status::Compared if s.moves.is_empty() => writeln!(f, "\n{label}: no change")?,
                Status::Compared => {
                    writeln!(
                        f,
                        "\n{label}: {} move ({:.2} % / {:.2} %)",
                        size(&s.share.moved),
                        s.share.v4_percent,
                        s.share.v6_percent
                    )?;
                    for m in &s.moves {
                        writeln!(f, "  {} -> {}: {}", dcs(&m.from), dcs(&m.to), size(&m.size))?;
                    }
                    writeln!(f, "  by country:")?;
                    for c in &s.countries {
                        writeln!(
                            f,
                            "    {} ({}): {} of {} ({:.2} %), {} of {} IPv6 /48s ({:.2} %)",
                            c.country,
                            c.continent,
                            num(c.share.moved.v4_24s),
                            num(c.share.total.v4_24s),
                            c.share.v4_percent,
                            num(c.share.moved.v6_48s),
                            num(c.share.total.v6_48s),
                            c.share.v6_percent
                        )?;
                        for m in &c.moves {
                            writeln!(
                                f,
                                "      {} -> {}: {}",
                                dcs(&m.from),
                                dcs(&m.to),
                                size(&m.size)
                            )?;
                        }
                    }
                    write!(f, "  by continent (IPv4 % / IPv6 %):")?;
                    for c in &s.continents {
                        write!(
                            f,
                            " {} {:.2}/{:.2}",
                            c.continent, c.share.v4_percent, c.share.v6_percent
                        )?;
                    }
                    writeln!(f)?;
                }
            }
        }
        Ok(())
    }
}
