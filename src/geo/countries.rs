//! The per-country table: continent and IP-weighted centroid of each
//! country, used when the GeoIP database has countries but no coordinates.
//!
//! The built-in table is `geoip/countries.csv`, compiled into the binary so
//! that `check` and `explain` work from any directory; `countries` in
//! `meridian.toml` points at a replacement with the same columns.

use std::path::Path;

use crate::model::{Continent, Coord, CountryCode, CountryInfo, CountryTable};

/// `geoip/countries.csv` as shipped.
pub const BUILTIN_CSV: &str = include_str!("../../geoip/countries.csv");

/// Parses the built-in table.
pub fn builtin() -> CountryTable {
    // Compiled in and checked by a unit test; an empty table would only
    // place no country by its centroid.
    parse(BUILTIN_CSV).unwrap_or_default()
}

/// Parses the bytes of the file at `path` (read by the caller, which
/// also hashes them to tell a changed table; `path` names it in errors).
pub fn from_file_bytes(path: &Path, bytes: &[u8]) -> Result<CountryTable, String> {
    let text = std::str::from_utf8(bytes)
        .map_err(|e| format!("{}: cannot read: not UTF-8: {e}", path.display()))?;
    parse(text).map_err(|e| format!("{}: {e}", path.display()))
}

/// Parses CSV with the header
/// `country_code,continent_code,latitude,longitude[,...]`. Empty latitude and
/// longitude mean "no coordinates"; extra columns are ignored.
pub fn parse(text: &str) -> Result<CountryTable, String> {
    let mut lines = text.lines().enumerate();
    let header = lines.next().map(|(_, l)| l).unwrap_or_default();
    if !header.starts_with("country_code,continent_code,latitude,longitude") {
        return Err(
            "line 1: header must start with country_code,continent_code,latitude,longitude".into(),
        );
    }
    let mut table = CountryTable::new();
    for (i, line) in lines {
        if line.trim().is_empty() {
            continue;
        }
        let n = i + 1;
        let mut cols = line.splitn(5, ',');
        let mut col = || cols.next().unwrap_or("").trim();
        let (cc, cont, lat, lon) = (col(), col(), col(), col());
        let code = CountryCode::parse(cc).ok_or(format!("line {n}: bad country code {cc:?}"))?;
        let continent = if cont.is_empty() {
            None
        } else {
            Some(Continent::parse(cont).ok_or(format!("line {n}: bad continent {cont:?}"))?)
        };
        let coord = if lat.is_empty() && lon.is_empty() {
            None
        } else {
            let lat: f64 = lat
                .parse()
                .map_err(|_| format!("line {n}: bad latitude {lat:?}"))?;
            let lon: f64 = lon
                .parse()
                .map_err(|_| format!("line {n}: bad longitude {lon:?}"))?;
            if !(-90.0..=90.0).contains(&lat) || !(-180.0..=180.0).contains(&lon) {
                return Err(format!("line {n}: coordinates out of range"));
            }
            Some(Coord { lat, lon })
        };
        if table
            .insert(code, CountryInfo { continent, coord })
            .is_some()
        {
            return Err(format!("line {n}: {code} appears twice"));
        }
    }
    Ok(table)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_table_is_complete_enough() {
        let t = builtin();
        assert!(t.len() >= 240, "{} countries", t.len());
        for cc in ["US", "DE", "JP", "IN", "AU", "BR", "SG", "ZA"] {
            let info = t[&CountryCode::parse(cc).unwrap()];
            assert!(info.coord.is_some(), "{cc} has no coordinates");
            assert!(info.continent.is_some(), "{cc} has no continent");
        }
        let au = t[&CountryCode::parse("AU").unwrap()];
        assert_eq!(au.continent, Some(Continent::OC));
    }

    #[test]
    fn rejects_bad_rows() {
        let h = "country_code,continent_code,latitude,longitude\n";
        assert!(parse(&format!("{h}XX,EU,1,2\nXX,EU,1,2\n")).is_err());
        assert!(parse(&format!("{h}XX,ZZ,1,2\n")).is_err());
        assert!(parse(&format!("{h}XX,EU,100,2\n")).is_err());
        assert!(parse("bad header\n").is_err());
        assert!(
            parse(&format!("{h}XX,EU,,\n")).unwrap()[&CountryCode(*b"XX")]
                .coord
                .is_none()
        );
    }
}
