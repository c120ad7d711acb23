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
//! The client networks come from the shared [`LocationTable`] (one GeoIP
//! walk per database load, whatever the number of services). A service
//! ranks each distinct location once and keeps a location → class map
//! plus one bit per location set of the table's trie, tens of KB at most;
//! a query is one binary search in the shared table and a short walk up
//! its trie, and the prefix found is the ECS scope: the widest prefix
//! over which the class (the ranking and the kept attributes, so the
//! answer whatever the health state) is the same. Services with
//! `networks` overrides keep per-service [`PrefixTable`]s, built from the
//! location table's blocks (not from the database); identical specs
//! still share one (the snapshot's cache).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use ipnet::IpNet;

use crate::geo::Location;
use crate::geo::distance::distance_km;
use crate::geo::locations::{IPV4_COMPATIBLE, IPV4_MAPPED, LocationTable};
use crate::geo::table::{IPV4_IN_IPV6, PrefixTable, TableBuilder, Uniform, addr_bits, family_bits};
use crate::model::{Coord, Datacenter, DcId, GeoSpec};
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
    table: Table,
}

/// Where a policy finds the class of a client network.
#[derive(Debug)]
enum Table {
    /// The shared location table, through the class of each location.
    Shared {
        locations: Arc<LocationTable>,
        /// Class id by location id.
        class_of: Box<[u32]>,
        /// Which location sets of the table's trie are of one class.
        uniform: Uniform,
    },
    /// Tables of its own (services with `networks` overrides).
    Own { v4: PrefixTable, v6: PrefixTable },
}

/// Walks client networks in address order for [`GeoPolicy::fill`]:
/// `(family is IPv6, visit(network, location key, location))`.
type Walk<'a> = dyn FnMut(bool, &mut dyn FnMut(IpNet, usize, &dyn Fn() -> Option<Location>)) + 'a;

/// Km from each location of a [`LocationTable`] (by id) to a datacenter,
/// by the datacenter's coordinates (as bits).
type DistanceMemo = HashMap<(u64, u64), Box<[f64]>>;

/// One service's request to [`GeoPolicy::build_all`].
#[derive(Clone, Copy, Debug)]
pub struct GeoRequest<'a> {
    /// The service's geo settings.
    pub spec: &'a GeoSpec,
    /// The service's datacenters; those without a location are not
    /// ranked by distance.
    pub candidates: &'a [DcId],
    /// The zone's datacenters, indexed by [`DcId`].
    pub dcs: &'a [Datacenter],
    /// The client attributes kept beside the ranking.
    pub keep: Keep,
}

impl GeoPolicy {
    /// Builds the policy of one service; see [`Self::build_all`].
    #[cfg(test)]
    pub fn build(
        spec: &GeoSpec,
        candidates: &[DcId],
        dcs: &[Datacenter],
        locations: &Arc<LocationTable>,
        keep: Keep,
    ) -> Self {
        let request = GeoRequest {
            spec,
            candidates,
            dcs,
            keep,
        };
        Self::build_all(locations, &[request])
            .pop()
            .unwrap_or_else(|| Self::empty(spec, candidates, dcs, keep))
    }

    /// Builds the policies of many services on the shared location table,
    /// in request order. Does not walk the GeoIP database: each service
    /// ranks each location once, and the location sets of one class are
    /// found for many services at once ([`LocationTable::uniform_many`]).
    pub fn build_all(locations: &Arc<LocationTable>, requests: &[GeoRequest<'_>]) -> Vec<Self> {
        let mut out: Vec<Self> = Vec::with_capacity(requests.len());
        let mut shared: Vec<(usize, Box<[u32]>)> = Vec::new();
        let mut memo = DistanceMemo::new();
        for (i, r) in requests.iter().enumerate() {
            let mut this = Self::empty(r.spec, r.candidates, r.dcs, r.keep);
            if r.spec.networks.is_empty() {
                shared.push((i, this.class_map(locations, &mut memo)));
            } else {
                this.fill(&mut |v6, visit| {
                    for (net, id) in locations.blocks(v6) {
                        // Unplaced blocks are gaps to the builder, and the
                        // IPv4 ranges of the IPv6 space it carves itself.
                        if let Some(Some(loc)) = locations.locations().get(id as usize) {
                            visit(net, id as usize, &|| Some(*loc));
                        }
                    }
                });
            }
            this.rankings.seal();
            out.push(this);
        }
        let maps: Vec<&[u32]> = shared.iter().map(|(_, c)| &c[..]).collect();
        let uniform = locations.uniform_many(&maps);
        for ((i, class_of), uniform) in shared.into_iter().zip(uniform) {
            if let Some(p) = out.get_mut(i) {
                p.table = Table::Shared {
                    locations: Arc::clone(locations),
                    class_of,
                    uniform,
                };
            }
        }
        out
    }

    /// The class id of every location of the table, with distances from
    /// `memo` (datacenter coordinates → km to each location): services
    /// over the same datacenters compute each distance once.
    fn class_map(&mut self, locations: &LocationTable, memo: &mut DistanceMemo) -> Box<[u32]> {
        let default = GeoClass::of(&self.spec.default);
        // The memo's row of each candidate, in candidate order: computed
        // once per location, then borrowed.
        let key = |dc: Coord| (dc.lat.to_bits(), dc.lon.to_bits());
        for &(_, dc) in &self.candidates {
            memo.entry(key(dc)).or_insert_with(|| {
                locations
                    .locations()
                    .iter()
                    .map(|l| l.and_then(|l| l.coord).map_or(0.0, |c| distance_km(c, dc)))
                    .collect()
            });
        }
        let memo = &*memo;
        let rows: Vec<&[f64]> = self
            .candidates
            .iter()
            .map(|&(_, dc)| memo.get(&key(dc)).map_or(&[][..], |r| &r[..]))
            .collect();
        locations
            .locations()
            .iter()
            .enumerate()
            .map(|(id, loc)| match id as u32 {
                // Own classes: no IPv6 scope spans an IPv4 range.
                IPV4_MAPPED | IPV4_COMPATIBLE => self.rankings.distinct(default.clone()),
                _ => {
                    let mut distance = |i: usize, at: Coord, dc: Coord| {
                        rows.get(i)
                            .and_then(|r| r.get(id))
                            .copied()
                            .unwrap_or_else(|| distance_km(at, dc))
                    };
                    let order = self.rank_with(loc.as_ref(), &mut distance).0;
                    let class = self.class(order, loc.as_ref());
                    self.rankings.intern(class)
                }
            })
            .collect()
    }

    /// The reference builder: per-service tables from a walk of the whole
    /// database, as every service built them before the location table
    /// was shared (about 130 ms and 14 MB a service on the shipped
    /// database). Tests compare the shared tables against it.
    pub fn build_by_walk(
        spec: &GeoSpec,
        candidates: &[DcId],
        dcs: &[Datacenter],
        geo: &crate::geo::GeoDb,
        keep: Keep,
    ) -> Self {
        let mut this = Self::empty(spec, candidates, dcs, keep);
        this.fill(&mut |v6, visit| geo.for_each_network(v6, |n, k, d| visit(n, k, d)));
        this
    }

    fn empty(spec: &GeoSpec, candidates: &[DcId], dcs: &[Datacenter], keep: Keep) -> Self {
        let all = candidates
            .iter()
            .map(|&id| dcs[id.index()].location)
            .collect();
        let candidates: Vec<_> = candidates
            .iter()
            .filter_map(|&id| dcs[id.index()].location.map(|c| (id, c)))
            .collect();
        Self {
            spec: spec.clone(),
            candidates,
            all,
            keep,
            rankings: Classes::default(),
            table: Table::Own {
                v4: TableBuilder::new(32, 0).finish(&[]),
                v6: TableBuilder::new(128, 0).finish(&[]),
            },
        }
    }

    /// Builds per-service tables from the networks `walk` yields, with
    /// the `networks` overrides painted over them.
    fn fill(&mut self, walk: &mut Walk<'_>) {
        let spec = self.spec.clone();
        let default_id = self.rankings.intern(GeoClass::of(&spec.default));
        let mut tables = [None, None];
        for v6 in [false, true] {
            let bits = family_bits(v6);
            let mut builder = TableBuilder::new(bits, default_id);
            let mut per_record: HashMap<usize, u32> = HashMap::new();
            // Network overrides set the order, but a `same` step still
            // needs the client's country and continent: where the table
            // keeps them, each override is refined along the networks
            // walked (painted after, so it wins over the plain override).
            let refine = self.keep != Keep::default();
            let family_overrides: Vec<&(IpNet, Vec<DcId>)> = spec
                .networks
                .iter()
                .filter(|(n, _)| n.addr().is_ipv6() == v6)
                .collect();
            let mut refined: Vec<(u128, u8, u32)> = Vec::new();
            walk(v6, &mut |net, key, decode| {
                let id = *per_record.entry(key).or_insert_with(|| {
                    let loc = decode();
                    let order = self.rank_location(loc.as_ref()).0;
                    let class = self.class(order, loc.as_ref());
                    self.rankings.intern(class)
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
                        let class = self.class(order.clone(), loc.as_ref());
                        let id = self.rankings.intern(class);
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
                        self.rankings.intern(GeoClass::of(order)),
                    )
                })
                .collect();
            // Longer prefixes win; at equal prefixes the later entry does.
            overrides.extend(refined);
            if v6 {
                // A ranking of its own for each IPv4 range (see
                // `IPV4_IN_IPV6`).
                for (base, len) in IPV4_IN_IPV6 {
                    let id = self.rankings.distinct(GeoClass::of(&spec.default));
                    overrides.push((base, len, id));
                }
            }
            tables[usize::from(v6)] = Some(builder.finish(&overrides));
        }
        // Both are built by the loop above.
        if let [Some(v4), Some(v6)] = tables {
            self.table = Table::Own { v4, v6 };
        }
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
        let (id, scope) = match &self.table {
            Table::Shared {
                locations,
                class_of,
                uniform,
            } => {
                let (loc, scope) = locations.lookup(addr, uniform);
                // Every location id has a class; 0 (the default) otherwise.
                (class_of.get(loc as usize).copied().unwrap_or(0), scope)
            }
            Table::Own { v4, v6 } => {
                let table = if addr.is_ipv6() { v6 } else { v4 };
                table.lookup(addr_bits(addr))
            }
        };
        (self.rankings.get(id), scope)
    }

    /// Whether every address of `net` has the same class (what an ECS
    /// scope promises). Scans the blocks inside `net`: for tests and
    /// tools, not for queries.
    pub fn same_class_over(&self, net: IpNet) -> bool {
        let mut ids: Box<dyn Iterator<Item = u32> + '_> = match &self.table {
            Table::Shared {
                locations,
                class_of,
                ..
            } => Box::new(
                locations
                    .ids_within(net)
                    .map(|loc| class_of.get(loc as usize).copied().unwrap_or(0)),
            ),
            Table::Own { v4, v6 } => {
                let table = if net.addr().is_ipv6() { v6 } else { v4 };
                Box::new(table.values_within(addr_bits(net.network()), addr_bits(net.broadcast())))
            }
        };
        // Ids, not values: the IPv4 ranges of the IPv6 space have classes
        // equal in value to the default but of their own.
        let Some(first) = ids.next() else { return true };
        ids.all(|id| id == first)
    }

    /// The ranking for a location (ignoring network overrides) and why.
    pub fn rank_location(&self, loc: Option<&Location>) -> (Vec<DcId>, Rule) {
        self.rank_with(loc, &mut |_, at, dc| distance_km(at, dc))
    }

    /// [`Self::rank_location`] with `distance(client, datacenter)` in km.
    fn rank_with(
        &self,
        loc: Option<&Location>,
        distance: &mut dyn FnMut(usize, Coord, Coord) -> f64,
    ) -> (Vec<DcId>, Rule) {
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
                    .map(|(i, &(id, c))| (distance(i, at, c), i, id))
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::geo::GeoDb;
    use crate::model::{Continent, CountryCode};
    use serde::Serialize;

    /// A flat-schema record, with or without coordinates.
    #[derive(Serialize)]
    struct Flat {
        country_code: &'static str,
        #[serde(skip_serializing_if = "Option::is_none")]
        latitude: Option<f32>,
        #[serde(skip_serializing_if = "Option::is_none")]
        longitude: Option<f32>,
    }

    /// Places a network can be: some at city coordinates, some at their
    /// country's centroid, several close together so that services
    /// rank neighbours alike (what widens scopes) and some not.
    const PLACES: &[(&str, Option<(f32, f32)>)] = &[
        ("US", None),
        ("US", Some((40.7, -74.0))),
        ("US", Some((34.0, -118.2))),
        ("CA", None),
        ("MX", None),
        ("BR", None),
        ("DE", None),
        ("DE", Some((52.5, 13.4))),
        ("FR", None),
        ("NL", None),
        ("PT", Some((38.7, -9.1))),
        ("JP", None),
        ("KR", None),
        ("IN", None),
        ("AU", None),
        ("ZA", None),
        ("ZZ", None), // unknown to the country table
    ];

    fn mix(x: &mut u64) -> u64 {
        *x = crate::policy::weighted::mix(*x);
        *x
    }

    /// A database of a few thousand networks in runs of one place, with
    /// gaps, over IPv4 and part of IPv6.
    fn synthetic_db(seed: u64) -> GeoDb {
        let mut w = mmdb_writer::Writer::new("Meridian-Test-Flat");
        let mut x = seed;
        for (v6, count) in [(false, 3000), (true, 800)] {
            let (bits, base): (u32, u128) = if v6 {
                (128, 0x2a00_u128 << 112)
            } else {
                (32, 1 << 24)
            };
            let mut cursor = base;
            let mut place = 0usize;
            for _ in 0..count {
                let host = if v6 {
                    80 + mix(&mut x) % 24
                } else {
                    8 + mix(&mut x) % 16
                } as u32;
                let size = 1u128 << host;
                cursor = cursor.div_ceil(size) * size;
                if mix(&mut x).is_multiple_of(8) {
                    cursor += size; // a gap
                }
                if !mix(&mut x).is_multiple_of(3) {
                    place = (mix(&mut x) % PLACES.len() as u64) as usize;
                }
                let addr = if v6 {
                    IpAddr::V6(cursor.into())
                } else {
                    let Ok(a) = u32::try_from(cursor) else { break };
                    IpAddr::V4(a.into())
                };
                let net = IpNet::new(addr, (bits - host) as u8).unwrap();
                let (cc, coord) = PLACES[place];
                let rec = Flat {
                    country_code: cc,
                    latitude: coord.map(|c| c.0),
                    longitude: coord.map(|c| c.1),
                };
                w.insert(net, &rec).unwrap();
                cursor += size;
            }
        }
        GeoDb::from_bytes(w.to_bytes().unwrap(), crate::geo::countries::builtin()).unwrap()
    }

    fn datacenters() -> Vec<Datacenter> {
        let at = [
            (39.0, -77.5),
            (37.4, -122.1),
            (-23.5, -46.6),
            (50.1, 8.7),
            (53.3, -6.3),
            (35.7, 139.7),
            (1.3, 103.8),
            (-33.9, 151.2),
            (19.1, 72.9),
            (-26.2, 28.0),
        ];
        at.iter()
            .enumerate()
            .map(|(i, &(lat, lon))| Datacenter {
                name: format!("dc{i}"),
                location: Some(Coord { lat, lon }),
                v4: vec![std::net::Ipv4Addr::new(192, 0, 2, i as u8 + 1)],
                v6: Vec::new(),
                probe: None,
                country: None,
            })
            .collect()
    }

    fn ids(v: &[u16]) -> Vec<DcId> {
        v.iter().map(|&i| DcId(i)).collect()
    }

    /// Services over several subsets, with and without overrides and
    /// kept attributes: (datacenters, spec, keep).
    fn services() -> Vec<(Vec<DcId>, GeoSpec, Keep)> {
        let plain = |dcs: &[u16]| GeoSpec {
            default: ids(dcs),
            ..GeoSpec::default()
        };
        let mut out = Vec::new();
        for dcs in [
            &[0, 1, 2, 3][..],
            &[3, 4, 5, 6],
            &[1, 5, 7, 9],
            &[0, 3, 5, 7, 8],
            &[2, 9],
            &[4],
            &[0, 1, 2, 3, 4, 5, 6, 7, 8, 9],
        ] {
            out.push((ids(dcs), plain(dcs), Keep::default()));
        }
        let mut countries = plain(&[0, 3, 5]);
        countries.countries = vec![(CountryCode::parse("DE").unwrap(), ids(&[5, 0]))];
        countries.continents = vec![(Continent::parse("SA").unwrap(), ids(&[3]))];
        out.push((ids(&[0, 3, 5]), countries.clone(), Keep::default()));
        let keeps = [
            Keep {
                country: true,
                ..Keep::default()
            },
            Keep {
                continent: true,
                distance: true,
                ..Keep::default()
            },
        ];
        for keep in keeps {
            out.push((ids(&[0, 3, 5]), countries.clone(), keep));
        }
        let mut networks = plain(&[1, 3, 6]);
        networks.networks = vec![
            ("1.0.0.0/9".parse().unwrap(), ids(&[6])),
            ("1.2.0.0/16".parse().unwrap(), ids(&[3, 1])),
            ("2a00::/20".parse().unwrap(), ids(&[1])),
        ];
        out.push((ids(&[1, 3, 6]), networks.clone(), Keep::default()));
        out.push((
            ids(&[1, 3, 6]),
            networks,
            Keep {
                country: true,
                ..Keep::default()
            },
        ));
        out
    }

    /// Client addresses: random ones in the populated ranges, across the
    /// whole space, and at the edges of the IPv4-in-IPv6 ranges.
    fn samples(seed: u64, n: usize) -> Vec<IpAddr> {
        let mut x = seed;
        let mut out: Vec<IpAddr> = [
            "0.0.0.0",
            "255.255.255.255",
            "::",
            "::1",
            "::ffff:1.2.3.4",
            "::1:0:0",
            "::fffe:ffff:ffff",
            "2a00::",
            "ffff::1",
        ]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
        for i in 0..n {
            let r = mix(&mut x);
            out.push(match i % 4 {
                0 => IpAddr::V4(((r as u32) % (96 << 24) + (1 << 24)).into()),
                1 => IpAddr::V4((r as u32).into()),
                2 => IpAddr::V6(((0x2a00_u128 << 112) | u128::from(r) << 40).into()),
                _ => IpAddr::V6((u128::from(r) << 64 | u128::from(mix(&mut x))).into()),
            });
        }
        out
    }

    /// The shared table gives every client the class and the scope the
    /// per-service walk of the database gives it, for every service.
    #[test]
    fn shared_tables_match_the_per_service_walk() {
        let geo = synthetic_db(9);
        let dcs = datacenters();
        let locations = Arc::new(LocationTable::build(&geo));
        let services = services();
        let requests: Vec<GeoRequest<'_>> = services
            .iter()
            .map(|(c, spec, keep)| GeoRequest {
                spec,
                candidates: c,
                dcs: &dcs,
                keep: *keep,
            })
            .collect();
        let shared = GeoPolicy::build_all(&locations, &requests);
        let clients = samples(1, 4000);
        let mut widened = 0;
        for ((c, spec, keep), new) in services.iter().zip(&shared) {
            let old = GeoPolicy::build_by_walk(spec, c, &dcs, &geo, *keep);
            for &addr in &clients {
                let (class, scope) = new.lookup(addr);
                let (want, old_scope) = old.lookup(addr);
                assert_eq!(class, want, "{addr} in {spec:?} {keep:?}");
                // At least as wide: a prefix no longer than the old one.
                assert!(
                    scope <= old_scope,
                    "{addr}: /{scope} narrower than /{old_scope}"
                );
                let net = IpNet::new(addr, scope).unwrap().trunc();
                assert!(old.same_class_over(net), "{net} ({addr}) mixes classes");
                assert!(new.same_class_over(net), "{net} ({addr}) mixes classes");
                // The same prefix, found in a different way.
                assert_eq!(scope, old_scope, "{addr} in {spec:?} {keep:?}");
                widened += usize::from(scope < locations.block_prefix(addr));
            }
        }
        // Many scopes are wider than the location blocks: neighbouring
        // locations of one class merge, per service.
        assert!(widened > 1000, "only {widened} scopes widened");
    }

    /// Scopes stop at the IPv4-mapped and IPv4-compatible ranges.
    #[test]
    fn ipv6_scopes_keep_off_the_ipv4_ranges() {
        let geo = synthetic_db(3);
        let dcs = datacenters();
        let locations = Arc::new(LocationTable::build(&geo));
        let spec = GeoSpec {
            default: ids(&[0, 1]),
            ..GeoSpec::default()
        };
        let p = GeoPolicy::build(&spec, &ids(&[0, 1]), &dcs, &locations, Keep::default());
        for (addr, min) in [
            ("::", 96),
            ("::1:0:0", 96),
            ("::ffff:0:1", 96),
            ("::2:0:0", 95),
        ] {
            let (_, scope) = p.lookup(addr.parse().unwrap());
            assert!(scope >= min, "{addr}: /{scope}");
        }
    }
}
