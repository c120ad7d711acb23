//! GeoIP: where a client address is.
//!
//! [`GeoDb`] wraps a MaxMind DB file and understands two record schemas:
//! MaxMind GeoIP2/GeoLite2 City and Country (`country.iso_code`,
//! `continent.code`, `location.latitude/longitude` as doubles) and the flat
//! DB-IP / ip-location-db schema (`country_code`, `latitude`/`longitude` as
//! floats). Where a record has a country but no coordinates, the country
//! table supplies an IP-weighted centroid.
//!
//! It knows nothing of datacenters or health: [`locations`] maps every
//! client network to a location id once per database load, and policies
//! map those ids to their rankings (see [`crate::policy::geo`]).

pub mod countries;
pub mod distance;
pub mod locations;
pub mod table;

use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use ipnet::IpNet;
use maxminddb::{Reader, WithinOptions};
use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};

use crate::model::{Continent, Coord, CountryCode, CountryTable};

/// A client's resolved location.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Location {
    /// Country, if the database knows it.
    pub country: Option<CountryCode>,
    /// Continent: from the database, else from the country table.
    pub continent: Option<Continent>,
    /// Coordinates: from the database, else the country's centroid.
    pub coord: Option<Coord>,
    /// Whether `coord` came from the database record itself (city
    /// precision) rather than the country table.
    pub coord_from_db: bool,
}

/// Problems opening a database.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GeoError {
    /// The file could not be read or is not a MaxMind DB.
    #[error("{path}: cannot open GeoIP database: {reason}")]
    Open {
        /// The database path.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

/// An open GeoIP database plus the country table.
pub struct GeoDb {
    reader: Reader<Vec<u8>>,
    countries: CountryTable,
    path: PathBuf,
}

impl fmt::Debug for GeoDb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GeoDb")
            .field("path", &self.path)
            .field("type", &self.reader.metadata().database_type)
            .finish()
    }
}

/// A number stored as any MaxMind numeric type (the flat schema uses
/// float32, GeoIP2 uses double).
#[derive(Clone, Copy, Debug)]
struct Num(f64);

impl<'de> Deserialize<'de> for Num {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Num;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a number")
            }
            fn visit_f32<E: de::Error>(self, v: f32) -> Result<Num, E> {
                Ok(Num(f64::from(v)))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Num, E> {
                Ok(Num(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Num, E> {
                Ok(Num(v as f64))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Num, E> {
                Ok(Num(v as f64))
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Deserialize)]
struct Code<'a> {
    #[serde(borrow)]
    iso_code: Option<&'a str>,
    #[serde(borrow)]
    code: Option<&'a str>,
}

#[derive(Deserialize)]
struct LatLon {
    latitude: Option<Num>,
    longitude: Option<Num>,
}

/// Union of the fields Meridian reads from either schema; serde ignores the
/// rest.
#[derive(Deserialize)]
struct RawRecord<'a> {
    // Flat (ip-location-db) schema.
    #[serde(borrow)]
    country_code: Option<&'a str>,
    latitude: Option<Num>,
    longitude: Option<Num>,
    // GeoIP2 schema.
    #[serde(borrow)]
    country: Option<Code<'a>>,
    #[serde(borrow)]
    registered_country: Option<Code<'a>>,
    #[serde(borrow)]
    continent: Option<Code<'a>>,
    location: Option<LatLon>,
}

fn coord(lat: Option<Num>, lon: Option<Num>) -> Option<Coord> {
    let (lat, lon) = (lat?.0, lon?.0);
    ((-90.0..=90.0).contains(&lat) && (-180.0..=180.0).contains(&lon)).then_some(Coord { lat, lon })
}

impl GeoDb {
    /// Builds from the bytes of the file at `path` (read by the caller,
    /// which also hashes them to tell a changed database; `path` names it
    /// in errors).
    pub fn from_file_bytes(
        path: &Path,
        bytes: Vec<u8>,
        countries: CountryTable,
    ) -> Result<Self, GeoError> {
        let reader = Reader::from_source(bytes).map_err(|e| GeoError::Open {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        Ok(Self {
            reader,
            countries,
            path: path.to_path_buf(),
        })
    }

    /// Builds from bytes (tests, embedded databases).
    pub fn from_bytes(bytes: Vec<u8>, countries: CountryTable) -> Result<Self, GeoError> {
        Self::from_file_bytes(Path::new("<memory>"), bytes, countries)
    }

    /// The database path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `database_type` and build time from the metadata, for messages.
    pub fn describe(&self) -> String {
        let m = self.reader.metadata();
        format!(
            "{} (type {}, IPv{}, built at epoch {})",
            self.path.display(),
            m.database_type,
            m.ip_version,
            m.build_epoch
        )
    }

    /// The country table in use.
    pub fn countries(&self) -> &CountryTable {
        &self.countries
    }

    fn location_of(&self, rec: RawRecord<'_>) -> Option<Location> {
        let cc = rec
            .country_code
            .or(rec.country.as_ref().and_then(|c| c.iso_code))
            .or(rec.registered_country.as_ref().and_then(|c| c.iso_code))
            .and_then(CountryCode::parse);
        let info = cc.and_then(|c| self.countries.get(&c));
        let db_coord = coord(rec.latitude, rec.longitude).or_else(|| {
            rec.location
                .as_ref()
                .and_then(|l| coord(l.latitude, l.longitude))
        });
        let continent = rec
            .continent
            .as_ref()
            .and_then(|c| c.code)
            .and_then(Continent::parse)
            .or(info.and_then(|i| i.continent));
        let loc = Location {
            country: cc,
            continent,
            coord: db_coord.or(info.and_then(|i| i.coord)),
            coord_from_db: db_coord.is_some(),
        };
        (loc != Location::default()).then_some(loc)
    }

    /// Looks an address up: the matched network (prefix length as stored
    /// in the database) and the location, if any.
    pub fn lookup(&self, addr: IpAddr) -> (Option<IpNet>, Option<Location>) {
        let Ok(res) = self.reader.lookup(addr) else {
            return (None, None);
        };
        let net = res
            .network()
            .ok()
            .and_then(|n| IpNet::new(n.network(), n.prefix()).ok());
        let loc = match res.decode::<RawRecord<'_>>() {
            Ok(Some(rec)) => self.location_of(rec),
            _ => None,
        };
        (net, loc)
    }

    /// Walks every network of one address family in address order, calling
    /// `f(network, location_key, location)`. `location_key` identifies the
    /// record (equal keys mean equal locations), so callers can cache per
    /// record instead of per network. Networks without data are skipped.
    pub fn for_each_network(
        &self,
        v6: bool,
        mut f: impl FnMut(IpNet, usize, &dyn Fn() -> Option<Location>),
    ) {
        let root = if v6 { "::/0" } else { "0.0.0.0/0" };
        let Ok(root) = root.parse::<ipnetwork::IpNetwork>() else {
            return;
        };
        let Ok(iter) = self.reader.within(root, WithinOptions::default()) else {
            return; // e.g. IPv6 in an IPv4-only database: no data.
        };
        for item in iter {
            let Ok(res) = item else { continue };
            let Ok(n) = res.network() else { continue };
            // The IPv4 subtree of an IPv6 database is walked separately.
            if v6 != n.is_ipv6() {
                continue;
            }
            let Ok(net) = IpNet::new(n.network(), n.prefix()) else {
                continue;
            };
            let Some(key) = res.offset() else { continue };
            let decode = || match res.decode::<RawRecord<'_>>() {
                Ok(Some(rec)) => self.location_of(rec),
                _ => None,
            };
            f(net, key, &decode);
        }
    }
}
