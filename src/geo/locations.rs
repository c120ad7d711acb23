//! The location table: every client network of the GeoIP database mapped
//! to a location id, built once per database load and shared by every
//! geo service.
//!
//! A service's geo ranking depends only on the client's location (its
//! country, continent and coordinates) and on the service's settings, so
//! a service needs no table of its own: it maps each location id to its
//! class ([`crate::policy::GeoClass`]), a few hundred entries for a
//! country database. What differs per service is the ECS scope, the
//! widest prefix around the client whose every address gets the same
//! class. Neighbouring locations that one service ranks alike merge into
//! one scope there but not for another service.
//!
//! The table keeps the binary trie of its blocks ([`Splits`]), each inner
//! node labelled with the set of locations below it (sets are interned:
//! a country database has a few tens of thousands). A service classifies
//! every set once (one bit each: "all its locations share a class",
//! [`Uniform`]); a query then walks up from its block while the parent's
//! set is uniform. The scope found is the widest aligned prefix whose
//! locations all share the client's class, which is exactly the block a
//! per-service table would hold (the blocks of a table whose equal
//! neighbours are merged are the widest aligned prefixes of one value).

use std::collections::HashMap;
use std::net::IpAddr;

use ipnet::IpNet;

use crate::geo::table::{
    BATCH, IPV4_IN_IPV6, PrefixTable, SetBuilder, SetDag, Splits, TableBuilder, Uniform, addr_bits,
    family_bits, prefix_range,
};
use crate::geo::{GeoDb, Location};
use crate::model::{Continent, CountryCode};

/// Location id of addresses the database does not place.
pub const UNKNOWN: u32 = 0;
/// Location id of the IPv4-mapped IPv6 range (`::ffff:0:0/96`).
pub const IPV4_MAPPED: u32 = 1;
/// Location id of the IPv4-compatible IPv6 range (`::/96`).
pub const IPV4_COMPATIBLE: u32 = 2;
/// The first id of a located record.
const FIRST_LOCATED: u32 = 3;

/// A location as a hashable value (coordinates by their bits).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct LocationKey {
    country: Option<CountryCode>,
    continent: Option<Continent>,
    coord: Option<(u64, u64)>,
    coord_from_db: bool,
}

impl LocationKey {
    fn of(l: &Location) -> Self {
        Self {
            country: l.country,
            continent: l.continent,
            coord: l.coord.map(|c| (c.lat.to_bits(), c.lon.to_bits())),
            coord_from_db: l.coord_from_db,
        }
    }
}

/// One address family's blocks and trie.
#[derive(Debug)]
struct Family {
    table: PrefixTable,
    splits: Splits,
}

/// See the module docs.
#[derive(Debug)]
pub struct LocationTable {
    /// By id; the first [`FIRST_LOCATED`] ids are `None`.
    locations: Box<[Option<Location>]>,
    v4: Family,
    v6: Family,
    sets: SetDag,
}

impl LocationTable {
    /// Walks the database once per address family.
    pub fn build(geo: &GeoDb) -> Self {
        let mut locations: Vec<Option<Location>> = vec![None; FIRST_LOCATED as usize];
        // Records are interned by their offset in the database (equal
        // offsets are equal records), then by value: a record id is a
        // class input, and fewer ids mean fewer classes to map.
        let mut by_record: HashMap<usize, u32> = HashMap::new();
        let mut by_value: HashMap<LocationKey, u32> = HashMap::new();
        let mut walk = |v6: bool| {
            let bits = family_bits(v6);
            let mut builder = TableBuilder::new(bits, UNKNOWN);
            geo.for_each_network(v6, |net, key, decode| {
                let id = *by_record.entry(key).or_insert_with(|| match decode() {
                    None => UNKNOWN,
                    Some(loc) => *by_value.entry(LocationKey::of(&loc)).or_insert_with(|| {
                        locations.push(Some(loc));
                        (locations.len() - 1) as u32
                    }),
                });
                let (s, e) = prefix_range(bits, addr_bits(net.addr()), net.prefix_len());
                builder.push(s, e, id);
            });
            // The IPv6 walk sees the IPv4 ranges as gaps: ids of their own
            // keep every IPv6 scope off them.
            let [(mapped, m), (compatible, c)] = IPV4_IN_IPV6;
            let carve: &[(u128, u8, u32)] = if v6 {
                &[(mapped, m, IPV4_MAPPED), (compatible, c, IPV4_COMPATIBLE)]
            } else {
                &[]
            };
            builder.finish(carve)
        };
        let (t4, t6) = (walk(false), walk(true));
        let mut sets = SetBuilder::new(locations.len() as u32);
        let v4 = Family {
            splits: Splits::build(&t4, &mut sets),
            table: t4,
        };
        let v6 = Family {
            splits: Splits::build(&t6, &mut sets),
            table: t6,
        };
        Self {
            locations: locations.into(),
            v4,
            v6,
            sets: sets.finish(),
        }
    }

    /// Every location by id. Ids without a location ([`UNKNOWN`] and the
    /// IPv4-in-IPv6 ranges) are `None`.
    pub fn locations(&self) -> &[Option<Location>] {
        &self.locations
    }

    /// For maps from location id to class id (one entry per
    /// [`Self::locations`]), which node sets are of one class, for many
    /// maps at once, bit-parallel ([`SetDag::uniform_batch`]): what makes
    /// ten thousand services cheap to build.
    pub fn uniform_many(&self, class_of: &[&[u32]]) -> Vec<Uniform> {
        class_of
            .chunks(BATCH)
            .flat_map(|chunk| self.sets.uniform_batch(chunk))
            .collect()
    }

    fn family(&self, v6: bool) -> &Family {
        if v6 { &self.v6 } else { &self.v4 }
    }

    /// The location id of `addr` and the widest prefix around it whose
    /// every location is in the same class, as `uniform` (from
    /// [`Self::uniform`]) says. Does not allocate.
    pub fn lookup(&self, addr: IpAddr, uniform: &Uniform) -> (u32, u8) {
        let f = self.family(addr.is_ipv6());
        let leaf = f.table.find(addr_bits(addr));
        let (id, _) = f.table.block(leaf);
        let scope = f.splits.widen(&f.table, leaf, |set| uniform.contains(set));
        (id, scope)
    }

    /// The prefix length of the table's own block holding `addr` (one
    /// location; a service's scope is this or wider).
    pub fn block_prefix(&self, addr: IpAddr) -> u8 {
        let f = self.family(addr.is_ipv6());
        f.table.block(f.table.find(addr_bits(addr))).1
    }

    /// The location ids of the blocks overlapping `net`, in order.
    pub fn ids_within(&self, net: IpNet) -> impl Iterator<Item = u32> + '_ {
        let f = self.family(net.addr().is_ipv6());
        f.table
            .values_within(addr_bits(net.network()), addr_bits(net.broadcast()))
    }

    /// Every block of one family with its location id, in address order.
    pub fn blocks(&self, v6: bool) -> impl Iterator<Item = (IpNet, u32)> + '_ {
        let f = self.family(v6);
        f.table.blocks().filter_map(move |(start, prefix, id)| {
            let addr = if v6 {
                IpAddr::V6(start.into())
            } else {
                IpAddr::V4(u32::try_from(start).ok()?.into())
            };
            Some((IpNet::new(addr, prefix).ok()?, id))
        })
    }

    /// Blocks per family, inner nodes per family and distinct node sets
    /// (for logs).
    pub fn sizes(&self) -> ((usize, usize), (usize, usize), usize) {
        (
            (self.v4.table.len(), self.v6.table.len()),
            (self.v4.splits.len(), self.v6.splits.len()),
            self.sets.len(),
        )
    }
}
