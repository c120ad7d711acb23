//! The `geo` policy: nearest datacenter first, by great-circle distance
//! from the client's GeoIP location, with explicit overrides.
//!
//! Precedence, highest first:
//! 1. `networks`: the longest client-network override that contains the
//!    client address;
//! 2. `countries`: the client's country;
//! 3. `continents`: the client's continent;
//! 4. distance from the client's coordinates (database record, else the
//!    country centroid), ties broken by config order;
//! 5. `default`, for clients the database does not place.
//!
//! Building walks every network of the GeoIP database once per address
//! family, ranks each distinct location once, and stores the result as a
//! [`PrefixTable`] of ranking ids. A query is then one binary search, and
//! the block found is the ECS scope: the widest prefix over which the
//! ranking (and so the answer, whatever the health state) is the same.

use std::collections::HashMap;
use std::net::IpAddr;

use crate::geo::distance::distance_km;
use crate::geo::table::{PrefixTable, TableBuilder, addr_bits, family_bits};
use crate::geo::{GeoDb, Location};
use crate::model::{Datacenter, DcId, GeoSpec};
use crate::policy::{Classes, GeoClass};

/// Why a client got its ranking (for `explain`).
#[derive(Clone, Debug, PartialEq)]
pub enum Rule {
    /// A `networks` override matched.
    Network(ipnet::IpNet),
    /// A `countries` override matched.
    Country(crate::model::CountryCode),
    /// A `continents` override matched.
    Continent(crate::model::Continent),
    /// Ranked by distance.
    Distance,
    /// The location is unknown: `default`.
    Default,
}

/// Which client attributes a table keeps beside the ranking, for the
/// `same` steps of a chain. Tables that keep none merge more blocks, so
/// their ECS scopes are wider.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Keep {
    /// The client's country.
    pub country: bool,
    /// The client's continent.
    pub continent: bool,
    /// The client's distance to each candidate (for a `latency` step's
    /// distance model). Classes then differ per location, so blocks merge
    /// less.
    pub distance: bool,
}

/// A built geo table: the class (ranking and kept attributes) of every
/// client network.
#[derive(Debug)]
pub struct GeoPolicy {
    spec: GeoSpec,
    candidates: Vec<(DcId, crate::model::Coord)>,
    /// Every datacenter the table was built for, in order, with its
    /// location (for [`GeoClass::km`]).
    all: Vec<Option<crate::model::Coord>>,
    keep: Keep,
    rankings: Classes,
    v4: PrefixTable,
    v6: PrefixTable,
}

impl GeoPolicy {
    /// Builds the tables for a service over `candidates` (the service's
    /// datacenters; those without a location are not ranked by distance).
    pub fn build(
        spec: &GeoSpec,
        candidates: &[DcId],
        dcs: &[Datacenter],
        geo: &GeoDb,
        keep: Keep,
    ) -> Self {
        let all = candidates
            .iter()
            .map(|&id| dcs[id.index()].location)
            .collect();
        let candidates: Vec<_> = candidates
            .iter()
            .filter_map(|&id| dcs[id.index()].location.map(|c| (id, c)))
            .collect();
        let mut this = Self {
            spec: spec.clone(),
            candidates,
            all,
            keep,
            rankings: Classes::default(),
            v4: TableBuilder::new(32, 0).finish(&[]),
            v6: TableBuilder::new(128, 0).finish(&[]),
        };
        let default_id = this.rankings.intern(GeoClass::of(&spec.default));
        let mut tables = [None, None];
        for v6 in [false, true] {
            let bits = family_bits(v6);
            let mut builder = TableBuilder::new(bits, default_id);
            let mut per_record: HashMap<usize, u32> = HashMap::new();
            // Network overrides set the order, but a `same` step still
            // needs the client's country and continent: where the table
            // keeps them, each override is refined along the database's
            // networks (painted after, so it wins over the plain override).
            let refine = this.keep != Keep::default();
            let family_overrides: Vec<&(ipnet::IpNet, Vec<DcId>)> = spec
                .networks
                .iter()
                .filter(|(n, _)| n.addr().is_ipv6() == v6)
                .collect();
            let mut refined: Vec<(u128, u8, u32)> = Vec::new();
            geo.for_each_network(v6, |net, key, decode| {
                let id = *per_record.entry(key).or_insert_with(|| {
                    let loc = decode();
                    let order = this.rank_location(loc.as_ref()).0;
                    let class = this.class(order, loc.as_ref());
                    this.rankings.intern(class)
                });
                let (s, e) =
                    crate::geo::table::prefix_range(bits, addr_bits(net.addr()), net.prefix_len());
                builder.push(s, e, id);
                if refine {
                    // CIDR blocks either nest or are disjoint: the longest
                    // override holding this network applies to all of it,
                    // and every override inside it to its own block.
                    let holding = family_overrides
                        .iter()
                        .filter(|(o, _)| o.contains(&net))
                        .max_by_key(|(o, _)| o.prefix_len())
                        .map(|(_, order)| (net, order));
                    let inside = family_overrides
                        .iter()
                        .filter(|(o, _)| net.contains(o) && *o != net)
                        .map(|(o, order)| (*o, order));
                    let mut loc = None;
                    for (block, order) in holding.into_iter().chain(inside) {
                        let loc = loc.get_or_insert_with(decode);
                        let class = this.class(order.clone(), loc.as_ref());
                        let id = this.rankings.intern(class);
                        refined.push((addr_bits(block.addr()), block.prefix_len(), id));
                    }
                }
            });
            let mut overrides: Vec<(u128, u8, u32)> = spec
                .networks
                .iter()
                .filter(|(net, _)| net.addr().is_ipv6() == v6)
                .map(|(net, order)| {
                    (
                        addr_bits(net.addr()),
                        net.prefix_len(),
                        this.rankings.intern(GeoClass::of(order)),
                    )
                })
                .collect();
            // Longer prefixes win; at equal prefixes the later entry does.
            overrides.extend(refined);
            if v6 {
                // The IPv4-mapped (::ffff:0:0/96) and IPv4-compatible
                // (::/96) ranges hold IPv4 clients, routed by the IPv4
                // table; the IPv6 walk sees them as gaps. Give each a
                // ranking of its own so no IPv6 block (and so no ECS scope)
                // spans them.
                for base in [0xffff_u128 << 32, 0] {
                    let id = this.rankings.distinct(GeoClass::of(&spec.default));
                    overrides.push((base, 96, id));
                }
            }
            tables[usize::from(v6)] = Some(builder.finish(&overrides));
        }
        let [v4, v6] = tables;
        // Both are built by the loop above; `None` would leave the family's
        // default (empty) table.
        if let Some(v4) = v4 {
            this.v4 = v4;
        }
        if let Some(v6) = v6 {
            this.v6 = v6;
        }
        this
    }

    fn class(&self, order: Vec<DcId>, loc: Option<&Location>) -> GeoClass {
        GeoClass {
            order: order.into(),
            country: loc.and_then(|l| l.country).filter(|_| self.keep.country),
            continent: loc
                .and_then(|l| l.continent)
                .filter(|_| self.keep.continent),
            km: match loc.and_then(|l| l.coord) {
                Some(at) if self.keep.distance => self
                    .all
                    .iter()
                    .map(|c| c.map_or(u16::MAX, |c| distance_km(at, c).round() as u16))
                    .collect(),
                _ => Box::default(),
            },
        }
    }

    /// The class of `addr` (its ranking and kept attributes) and the
    /// prefix length over which it holds: the ECS scope.
    pub fn lookup(&self, addr: IpAddr) -> (&GeoClass, u8) {
        let table = if addr.is_ipv6() { &self.v6 } else { &self.v4 };
        let (id, scope) = table.lookup(addr_bits(addr));
        (self.rankings.get(id), scope)
    }

    /// The ranking for a location (ignoring network overrides) and why.
    pub fn rank_location(&self, loc: Option<&Location>) -> (Vec<DcId>, Rule) {
        let Some(loc) = loc else {
            return (self.spec.default.clone(), Rule::Default);
        };
        if let Some(cc) = loc.country
            && let Some((_, order)) = self.spec.countries.iter().find(|(c, _)| *c == cc)
        {
            return (order.clone(), Rule::Country(cc));
        }
        if let Some(cont) = loc.continent
            && let Some((_, order)) = self.spec.continents.iter().find(|(c, _)| *c == cont)
        {
            return (order.clone(), Rule::Continent(cont));
        }
        match loc.coord {
            Some(at) => {
                let mut ranked: Vec<(f64, usize, DcId)> = self
                    .candidates
                    .iter()
                    .enumerate()
                    .map(|(i, &(id, c))| (distance_km(at, c), i, id))
                    .collect();
                ranked.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
                (ranked.into_iter().map(|r| r.2).collect(), Rule::Distance)
            }
            None => (self.spec.default.clone(), Rule::Default),
        }
    }

    /// The network override that applies to `addr`, if any.
    pub fn network_override(&self, addr: IpAddr) -> Option<ipnet::IpNet> {
        self.spec
            .networks
            .iter()
            .filter(|(n, _)| n.contains(&addr))
            .max_by_key(|(n, _)| n.prefix_len())
            .map(|(n, _)| *n)
    }

    /// Distinct classes in the tables (for logs).
    pub fn ranking_count(&self) -> usize {
        self.rankings.len()
    }

    /// Blocks in the IPv4 and IPv6 tables (for logs).
    pub fn table_sizes(&self) -> (usize, usize) {
        (self.v4.len(), self.v6.len())
    }
}
