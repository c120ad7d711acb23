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
pub mod update;

use std::borrow::Cow;
use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use ipnet::IpNet;
use maxminddb::{Reader, WithinOptions};
use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};

use crate::model::{Continent, Coord, CountryCode, CountryTable};

/// `YYYY-MM-DD` (UTC) of a Unix time: how `check` prints a database's
/// build date, and the date part of [`crate::rfc3339`]. Civil-from-days after H. Hinnant's algorithm, so no date
/// crate is needed for one line.
pub fn iso_date(epoch: u64) -> String {
    let days = (epoch / 86_400) as i64 + 719_468;
    let era = days.div_euclid(146_097);
    let doe = days.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}

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

/// The shipped DB-IP country database (`geoip/dbip-country.mmdb`, CC BY 4.0,
/// see `geoip/README.md`), compiled in: the database used when `geoip` is
/// not set, so an installed binary runs from any directory.
pub static EMBEDDED_DB: &[u8] = include_bytes!("../../geoip/dbip-country.mmdb");

/// How [`GeoDb::path`] names the compiled-in database.
pub const EMBEDDED_NAME: &str = "<built-in dbip-country.mmdb>";

/// An open GeoIP database plus the country table.
pub struct GeoDb {
    /// Borrowed for the compiled-in database, owned for a file's bytes.
    reader: Reader<Cow<'static, [u8]>>,
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
        Self::open(path, Cow::Owned(bytes), countries)
    }

    /// Opens the compiled-in database ([`EMBEDDED_DB`]), without copying it.
    pub fn embedded(countries: CountryTable) -> Result<Self, GeoError> {
        Self::open(
            Path::new(EMBEDDED_NAME),
            Cow::Borrowed(EMBEDDED_DB),
            countries,
        )
    }

    fn open(
        path: &Path,
        bytes: Cow<'static, [u8]>,
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

    /// `database_type` and build date from the metadata, for messages.
    pub fn describe(&self) -> String {
        let m = self.reader.metadata();
        format!(
            "{} (type {}, IPv{}, built {})",
            self.path.display(),
            m.database_type,
            m.ip_version,
            iso_date(m.build_epoch)
        )
    }

    /// The database's build time, seconds since the Unix epoch.
    pub fn build_epoch(&self) -> u64 {
        self.reader.metadata().build_epoch
    }

    /// The database's `database_type` metadata.
    pub fn database_type(&self) -> &str {
        &self.reader.metadata().database_type
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso_dates() {
        assert_eq!(iso_date(0), "1970-01-01");
        // The shipped database's build_epoch (geoip/README.md).
        assert_eq!(iso_date(1_780_345_978), "2026-06-01");
        assert_eq!(iso_date(951_782_400), "2000-02-29");
        assert_eq!(iso_date(4_107_542_399), "2100-02-28");
        assert_eq!(iso_date(1_798_761_599), "2026-12-31");
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(1_780_345_978_123);
        assert_eq!(crate::rfc3339(t), "2026-06-01T20:32:58.123Z");
    }

    #[test]
    fn embedded_database_opens_and_places_addresses() {
        let db = GeoDb::embedded(countries::builtin()).unwrap();
        assert_eq!(db.path(), Path::new(EMBEDDED_NAME));
        let (_, loc) = db.lookup("193.0.6.139".parse().unwrap());
        assert_eq!(loc.unwrap().country, CountryCode::parse("NL"));
        assert!(
            db.describe().contains("built 2026-06-01"),
            "{}",
            db.describe()
        );
    }
}
