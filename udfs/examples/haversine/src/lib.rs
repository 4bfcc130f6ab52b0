//! Great-circle distance between two points given in degrees, in kilometres (mean Earth radius
//! 6371.0088 km), as a rivulet WASM scalar function:
//!
//! ```sql
//! SELECT haversine_km(lat, lon, 52.52, 13.405) AS km_from_berlin FROM source
//! ```

/// Mean Earth radius in kilometres (IUGG).
pub const EARTH_RADIUS_KM: f64 = 6371.0088;

/// The distance in kilometres between (`lat1`, `lon1`) and (`lat2`, `lon2`), in degrees.
pub fn haversine_km(lat1: f64, lon1: f64, lat2: f64, lon2: f64) -> f64 {
    let (p1, p2) = (lat1.to_radians(), lat2.to_radians());
    let dp = (lat2 - lat1).to_radians();
    let dl = (lon2 - lon1).to_radians();
    let a = (dp / 2.0).sin().powi(2) + p1.cos() * p2.cos() * (dl / 2.0).sin().powi(2);
    2.0 * EARTH_RADIUS_KM * a.sqrt().asin()
}

rivulet_udf::export! {
    fn haversine_km(lat1: f64, lon1: f64, lat2: f64, lon2: f64) -> f64;
}
