//! A built-in world topology calibrated on measured inter-region round-trip times.
//!
//! Region locations and the measured RTTs below come from Microsoft Azure's
//! "network round-trip latency statistics" (MicrosoftDocs/azure-docs,
//! `articles/networking/azure-network-latency.md`, monthly median RTT), licensed
//! CC BY 4.0. Pairs without a measurement are estimated with the rule of thumb
//! those rows follow: `rtt ≈ 1.5 × fiber_ideal + 4 ms`, where `fiber_ideal` is the
//! round trip at 2/3 of the speed of light over the great-circle distance (about
//! 1 ms per 100 km there and back).

use std::time::Duration;

/// A region of the built-in topology.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RegionInfo {
    /// Name (a city; used as the region id in scenarios).
    pub name: &'static str,
    /// Latitude in degrees.
    pub lat: f64,
    /// Longitude in degrees.
    pub lon: f64,
}

/// Regions of the built-in topology.
pub const REGIONS: &[RegionInfo] = &[
    RegionInfo {
        name: "virginia",
        lat: 37.37,
        lon: -79.82,
    },
    RegionInfo {
        name: "california",
        lat: 37.78,
        lon: -122.42,
    },
    RegionInfo {
        name: "sao-paulo",
        lat: -23.55,
        lon: -46.63,
    },
    RegionInfo {
        name: "london",
        lat: 51.51,
        lon: -0.13,
    },
    RegionInfo {
        name: "amsterdam",
        lat: 52.37,
        lon: 4.90,
    },
    RegionInfo {
        name: "paris",
        lat: 48.86,
        lon: 2.35,
    },
    RegionInfo {
        name: "frankfurt",
        lat: 50.11,
        lon: 8.68,
    },
    RegionInfo {
        name: "tokyo",
        lat: 35.68,
        lon: 139.69,
    },
    RegionInfo {
        name: "hong-kong",
        lat: 22.32,
        lon: 114.17,
    },
    RegionInfo {
        name: "singapore",
        lat: 1.35,
        lon: 103.82,
    },
    RegionInfo {
        name: "sydney",
        lat: -33.87,
        lon: 151.21,
    },
];

/// Measured median RTTs in milliseconds (source above).
const MEASURED_RTT_MS: &[(&str, &str, u32)] = &[
    ("virginia", "amsterdam", 84),
    ("virginia", "london", 78),
    ("virginia", "california", 68),
    ("virginia", "sao-paulo", 117),
    ("california", "tokyo", 107),
    ("california", "sydney", 140),
    ("singapore", "tokyo", 72),
    ("singapore", "sydney", 95),
    ("singapore", "amsterdam", 169),
    ("hong-kong", "tokyo", 49),
    ("paris", "amsterdam", 13),
    ("frankfurt", "amsterdam", 11),
];

/// Round trip between two hosts of the same region.
pub const INTRA_REGION_RTT: Duration = Duration::from_millis(2);

/// Looks a region up by name.
pub fn region(name: &str) -> Option<&'static RegionInfo> {
    REGIONS.iter().find(|r| r.name == name)
}

pub use skylane_proto::geo::distance_km;

/// Round-trip time between two regions: measured where known, estimated otherwise.
/// `None` if a name is unknown.
pub fn rtt(a: &str, b: &str) -> Option<Duration> {
    if a == b {
        return region(a).map(|_| INTRA_REGION_RTT);
    }
    if let Some((_, _, ms)) = MEASURED_RTT_MS
        .iter()
        .find(|(x, y, _)| (*x == a && *y == b) || (*x == b && *y == a))
    {
        return Some(Duration::from_millis(u64::from(*ms)));
    }
    let (ra, rb) = (region(a)?, region(b)?);
    let fiber_ideal_ms = distance_km(ra.lat, ra.lon, rb.lat, rb.lon) / 100.0;
    Some(Duration::from_secs_f64(
        (1.5 * fiber_ideal_ms + 4.0) / 1000.0,
    ))
}

/// One-way latency between two regions (half the round trip).
pub fn one_way(a: &str, b: &str) -> Option<Duration> {
    rtt(a, b).map(|d| d / 2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn measured_pairs_are_used_both_ways() {
        assert_eq!(rtt("virginia", "london"), Some(Duration::from_millis(78)));
        assert_eq!(rtt("london", "virginia"), Some(Duration::from_millis(78)));
        assert_eq!(
            one_way("paris", "amsterdam"),
            Some(Duration::from_micros(6500))
        );
        assert_eq!(rtt("tokyo", "tokyo"), Some(INTRA_REGION_RTT));
        assert_eq!(rtt("tokyo", "atlantis"), None);
    }

    #[test]
    fn estimates_follow_the_calibration_rule() {
        // The estimate reproduces measured rows within ~25%.
        for (a, b, ms) in MEASURED_RTT_MS {
            let (ra, rb) = (region(a).unwrap(), region(b).unwrap());
            let est = 1.5 * distance_km(ra.lat, ra.lon, rb.lat, rb.lon) / 100.0 + 4.0;
            let ratio = est / f64::from(*ms);
            assert!(
                (0.75..1.35).contains(&ratio),
                "{a}-{b}: est {est:.0} vs {ms}"
            );
        }
        // An unmeasured pair gets the rule's figure: london-tokyo is ~9,560 km.
        let lon_tokyo = rtt("london", "tokyo").unwrap().as_millis();
        assert!((140..160).contains(&lon_tokyo), "{lon_tokyo}");
    }

    #[test]
    fn distance_matches_the_data_file() {
        // virginia-amsterdam is 6,483 km in the source data. (Some rows' km are
        // approximate: paris-amsterdam is listed as 691 km, 430 km great-circle.)
        let (a, b) = (region("virginia").unwrap(), region("amsterdam").unwrap());
        assert!((distance_km(a.lat, a.lon, b.lat, b.lon) - 6483.0).abs() < 5.0);
    }
}
