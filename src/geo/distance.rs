//! Great-circle distance. Pure.

use crate::model::Coord;

/// Mean Earth radius in kilometres (IUGG).
const EARTH_RADIUS_KM: f64 = 6371.0088;

/// Great-circle distance between two points in kilometres (haversine).
///
/// ```
/// use meridian::geo::distance::distance_km;
/// use meridian::model::Coord;
///
/// let ashburn = Coord { lat: 39.04, lon: -77.49 };
/// let dublin = Coord { lat: 53.35, lon: -6.26 };
/// let km = distance_km(ashburn, dublin);
/// assert!((5400.0..5560.0).contains(&km));
/// ```
pub fn distance_km(a: Coord, b: Coord) -> f64 {
    let (lat1, lat2) = (a.lat.to_radians(), b.lat.to_radians());
    let dlat = lat2 - lat1;
    let dlon = (b.lon - a.lon).to_radians();
    let h = (dlat / 2.0).sin().powi(2) + lat1.cos() * lat2.cos() * (dlon / 2.0).sin().powi(2);
    2.0 * EARTH_RADIUS_KM * h.sqrt().min(1.0).asin()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_distances() {
        let ashburn = Coord {
            lat: 39.04,
            lon: -77.49,
        };
        let dublin = Coord {
            lat: 53.35,
            lon: -6.26,
        };
        let singapore = Coord {
            lat: 1.35,
            lon: 103.82,
        };
        // Reference values from an independent great-circle calculator, ±1%.
        let d = distance_km(ashburn, dublin);
        assert!((d - 5480.0).abs() < 60.0, "{d}");
        let d = distance_km(dublin, singapore);
        assert!((d - 11_190.0).abs() < 120.0, "{d}");
        assert_eq!(distance_km(dublin, dublin), 0.0);
        // Antipodes: half the circumference, no NaN.
        let d = distance_km(
            Coord { lat: 0.0, lon: 0.0 },
            Coord {
                lat: 0.0,
                lon: 180.0,
            },
        );
        assert!((d - 20_015.0).abs() < 10.0, "{d}");
    }
}
