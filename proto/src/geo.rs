//! Geography helpers shared by the relay directory and the simulator's topology.

/// Great-circle distance in kilometres between two points given in degrees
/// (haversine, mean Earth radius 6,371 km).
pub fn distance_km(lat1: f64, lon1: f64, lat2: f64, lon2: f64) -> f64 {
    let (p1, p2) = (lat1.to_radians(), lat2.to_radians());
    let dp = (lat2 - lat1).to_radians();
    let dl = (lon2 - lon1).to_radians();
    let a = (dp / 2.0).sin().powi(2) + p1.cos() * p2.cos() * (dl / 2.0).sin().powi(2);
    2.0 * 6371.0 * a.sqrt().min(1.0).asin()
}

#[cfg(test)]
mod tests {
    use super::distance_km;

    #[test]
    fn known_distances() {
        // Virginia–Amsterdam, 6,483 km in the calibration data.
        assert!((distance_km(37.37, -79.82, 52.37, 4.90) - 6483.0).abs() < 5.0);
        assert_eq!(distance_km(10.0, 20.0, 10.0, 20.0), 0.0);
        // Antipodes: half the circumference.
        assert!((distance_km(0.0, 0.0, 0.0, 180.0) - 20_015.0).abs() < 1.0);
    }
}
