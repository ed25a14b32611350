//! GeoIP and the relay directory: which relays are nearest to a client address.
//!
//! GeoIP is the cold-start guess: the relay looks the client's address up in a
//! MaxMind database (GeoIP2/GeoLite2 City layout: `location.latitude`,
//! `location.longitude`), computes the great-circle distance to every relay of the
//! directory, and proposes the nearest. The client then measures RTT to the
//! candidates and decides. An address the database does not know (loopback,
//! private ranges) gets the directory in its configured order.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use skylane_proto::geo::distance_km;
use skylane_proto::RelayInfo;

/// Why a GeoIP database could not be used.
#[derive(Debug, thiserror::Error)]
pub enum GeoError {
    /// The file could not be opened or is not a MaxMind database.
    #[error("GeoIP database {path}: {message}")]
    Open {
        /// File.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
}

#[derive(Deserialize)]
struct CityRecord {
    location: Option<LocationRecord>,
}

#[derive(Deserialize)]
struct LocationRecord {
    latitude: Option<f64>,
    longitude: Option<f64>,
}

/// A MaxMind database in memory.
pub struct GeoDb {
    reader: maxminddb::Reader<Vec<u8>>,
}

impl std::fmt::Debug for GeoDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GeoDb")
            .field("type", &self.reader.metadata().database_type)
            .finish()
    }
}

impl GeoDb {
    /// Reads a `.mmdb` file.
    pub fn open(path: &Path) -> Result<Self, GeoError> {
        let bytes = std::fs::read(path).map_err(|e| GeoError::Open {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        Self::from_bytes(bytes).map_err(|e| match e {
            GeoError::Open { message, .. } => GeoError::Open {
                path: path.to_owned(),
                message,
            },
        })
    }

    /// Uses a database already in memory.
    pub fn from_bytes(bytes: Vec<u8>) -> Result<Self, GeoError> {
        let reader = maxminddb::Reader::from_source(bytes).map_err(|e| GeoError::Open {
            path: PathBuf::from("<memory>"),
            message: e.to_string(),
        })?;
        Ok(Self { reader })
    }

    /// Latitude and longitude of an address, if the database knows it.
    pub fn locate(&self, ip: IpAddr) -> Option<(f64, f64)> {
        let rec: CityRecord = self.reader.lookup(ip).ok()?.decode().ok()??;
        let loc = rec.location?;
        Some((loc.latitude?, loc.longitude?))
    }
}

/// The relays clients may use.
#[derive(Debug, Clone, Default)]
pub struct Directory {
    relays: Vec<RelayInfo>,
}

impl Directory {
    /// A directory of `relays`, in their fallback order.
    pub fn new(relays: Vec<RelayInfo>) -> Self {
        Self { relays }
    }

    /// Every relay.
    pub fn relays(&self) -> &[RelayInfo] {
        &self.relays
    }

    /// The `k` relays nearest to a point, nearest first (ties keep directory order).
    pub fn nearest(&self, lat: f64, lon: f64, k: usize) -> Vec<RelayInfo> {
        let mut by_distance: Vec<(f64, usize)> = self
            .relays
            .iter()
            .enumerate()
            .map(|(i, r)| (distance_km(lat, lon, f64::from(r.lat), f64::from(r.lon)), i))
            .collect();
        by_distance.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        by_distance
            .into_iter()
            .take(k)
            .map(|(_, i)| self.relays[i].clone())
            .collect()
    }

    /// The `k` relays to propose to a client at `ip`: nearest by GeoIP, or the
    /// directory order when the address cannot be placed.
    pub fn for_client(&self, geo: Option<&GeoDb>, ip: IpAddr, k: usize) -> Vec<RelayInfo> {
        match geo.and_then(|g| g.locate(ip)) {
            Some((lat, lon)) => self.nearest(lat, lon, k),
            None => self.relays.iter().take(k).cloned().collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ipnet::IpNet;
    use serde::Serialize;
    use skylane_proto::RelayId;

    #[derive(Serialize)]
    struct Loc {
        latitude: f64,
        longitude: f64,
    }

    #[derive(Serialize)]
    struct City {
        location: Loc,
    }

    fn db() -> GeoDb {
        let mut w = mmdb_writer::Writer::new("Skylane-Test-City");
        let mut put = |net: &str, latitude, longitude| {
            w.insert(
                net.parse::<IpNet>().unwrap(),
                &City {
                    location: Loc {
                        latitude,
                        longitude,
                    },
                },
            )
            .unwrap();
        };
        put("198.51.100.0/24", 51.51, -0.13); // london
        put("203.0.113.0/24", 35.68, 139.69); // tokyo
        put("2001:db8::/32", 37.37, -79.82); // virginia
        GeoDb::from_bytes(w.to_bytes().unwrap()).unwrap()
    }

    fn relay(id: u32, region: &str, lat: f32, lon: f32) -> RelayInfo {
        RelayInfo {
            id: RelayId(id),
            region: region.into(),
            addrs: vec![format!("{region}.example:4433")],
            lat,
            lon,
        }
    }

    fn directory() -> Directory {
        Directory::new(vec![
            relay(1, "virginia", 37.37, -79.82),
            relay(2, "frankfurt", 50.11, 8.68),
            relay(3, "tokyo", 35.68, 139.69),
            relay(4, "singapore", 1.35, 103.82),
        ])
    }

    #[test]
    fn clients_get_the_nearest_relays_first() {
        let (g, d) = (db(), directory());
        let ids = |v: Vec<RelayInfo>| v.into_iter().map(|r| r.id.0).collect::<Vec<_>>();
        assert_eq!(
            ids(d.for_client(Some(&g), "198.51.100.7".parse().unwrap(), 2)),
            vec![2, 1]
        );
        assert_eq!(
            ids(d.for_client(Some(&g), "203.0.113.9".parse().unwrap(), 2)),
            vec![3, 4]
        );
        assert_eq!(
            ids(d.for_client(Some(&g), "2001:db8::1".parse().unwrap(), 1)),
            vec![1]
        );
        // Unknown addresses and no database: directory order.
        assert_eq!(
            ids(d.for_client(Some(&g), "127.0.0.1".parse().unwrap(), 3)),
            vec![1, 2, 3]
        );
        assert_eq!(
            ids(d.for_client(None, "198.51.100.7".parse().unwrap(), 1)),
            vec![1]
        );
        assert_eq!(
            g.locate("198.51.100.200".parse().unwrap()),
            Some((51.51, -0.13))
        );
    }

    #[test]
    fn unreadable_databases_are_typed_errors_naming_the_file() {
        let dir = std::env::temp_dir().join(format!("skylane-geo-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let bad = dir.join("bad.mmdb");
        std::fs::write(&bad, b"not a database").unwrap();
        let err = GeoDb::open(&bad).unwrap_err().to_string();
        assert!(err.contains("bad.mmdb"), "{err}");
        let err = GeoDb::open(&dir.join("missing.mmdb"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("missing.mmdb"), "{err}");
        std::fs::remove_dir_all(&dir).ok();
    }
}
