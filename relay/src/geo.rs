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
    /// The database holds no location data (an ASN or ISP database, say): it
    /// would place nobody.
    #[error("GeoIP database {path} ({kind}) has no location records in its first {scanned} networks; a City database (location.latitude, location.longitude) is needed")]
    NoLocations {
        /// File.
        path: PathBuf,
        /// The database type from its metadata.
        kind: String,
        /// Networks looked at.
        scanned: usize,
    },
    /// A record exists for the address but does not decode as a location.
    #[error("GeoIP record for {ip} cannot be decoded: {message}")]
    Undecodable {
        /// The address looked up.
        ip: IpAddr,
        /// The decoder's message.
        message: String,
    },
}

/// Networks [`GeoDb::from_bytes`] looks at for a location before refusing the
/// database (a City database has one in its first few; an ASN database has none
/// in any).
const LOCATION_SCAN: usize = 100_000;

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
            GeoError::NoLocations { kind, scanned, .. } => GeoError::NoLocations {
                path: path.to_owned(),
                kind,
                scanned,
            },
            other => other,
        })
    }

    /// Uses a database already in memory. Refuses one without location records.
    pub fn from_bytes(bytes: Vec<u8>) -> Result<Self, GeoError> {
        let reader = maxminddb::Reader::from_source(bytes).map_err(|e| GeoError::Open {
            path: PathBuf::from("<memory>"),
            message: e.to_string(),
        })?;
        let db = Self { reader };
        db.check_locations()?;
        Ok(db)
    }

    /// Looks for one network whose record has a latitude and a longitude.
    fn check_locations(&self) -> Result<(), GeoError> {
        let no_locations = |scanned| GeoError::NoLocations {
            path: PathBuf::from("<memory>"),
            kind: self.reader.metadata().database_type.clone(),
            scanned,
        };
        let networks = self
            .reader
            .networks(maxminddb::WithinOptions::default())
            .map_err(|e| GeoError::Open {
                path: PathBuf::from("<memory>"),
                message: e.to_string(),
            })?;
        let mut scanned = 0;
        for n in networks.take(LOCATION_SCAN) {
            scanned += 1;
            let located = n
                .ok()
                .and_then(|r| r.decode::<CityRecord>().ok().flatten())
                .and_then(|r| r.location)
                .is_some_and(|l| l.latitude.is_some() && l.longitude.is_some());
            if located {
                return Ok(());
            }
        }
        Err(no_locations(scanned))
    }

    /// Latitude and longitude of an address: `Ok(None)` when the database does
    /// not know it, an error when its record does not decode.
    pub fn lookup(&self, ip: IpAddr) -> Result<Option<(f64, f64)>, GeoError> {
        let undecodable = |e: maxminddb::MaxMindDbError| GeoError::Undecodable {
            ip,
            message: e.to_string(),
        };
        let found = self.reader.lookup(ip).map_err(undecodable)?;
        let Some(rec) = found.decode::<CityRecord>().map_err(undecodable)? else {
            return Ok(None);
        };
        Ok(rec.location.and_then(|l| Some((l.latitude?, l.longitude?))))
    }

    /// Latitude and longitude of an address, if the database knows it (an
    /// undecodable record counts as unknown; [`GeoDb::lookup`] tells them apart).
    pub fn locate(&self, ip: IpAddr) -> Option<(f64, f64)> {
        self.lookup(ip).ok().flatten()
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
        self.for_location(geo.and_then(|g| g.locate(ip)), k)
    }

    /// The `k` relays nearest to `location`, or the directory order without one.
    pub fn for_location(&self, location: Option<(f64, f64)>, k: usize) -> Vec<RelayInfo> {
        match location {
            Some((lat, lon)) => self.nearest(lat, lon, k),
            None => self.relays.iter().take(k).cloned().collect(),
        }
    }

    /// This (configured) directory with the relays `learnt` from the control
    /// plane after its own, in id order: a relay already listed keeps its
    /// configured entry; at most 1,024 are added. A learnt
    /// relay is one that holds a live lease, so one that stops leaves the
    /// directory with its next view.
    pub fn with_learnt(&self, learnt: impl IntoIterator<Item = RelayInfo>) -> Self {
        let mut extra: Vec<RelayInfo> = learnt
            .into_iter()
            .filter(|r| !self.relays.iter().any(|c| c.id == r.id))
            .collect();
        extra.sort_by_key(|r| r.id);
        extra.dedup_by_key(|r| r.id);
        extra.truncate(MAX_LEARNT_RELAYS);
        let mut relays = self.relays.clone();
        relays.extend(extra);
        Self { relays }
    }
}

/// Relays learnt from the control plane that a directory holds, at most.
pub(crate) const MAX_LEARNT_RELAYS: usize = 1_024;

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
    fn relays_learnt_from_the_control_plane_join_the_configured_ones() {
        let configured = Directory::new(vec![relay(1, "virginia", 37.37, -79.82)]);
        let learnt = vec![
            relay(3, "tokyo", 35.68, 139.69),
            relay(1, "elsewhere", 0.0, 0.0),
            relay(2, "frankfurt", 50.11, 8.68),
            relay(3, "tokyo", 35.68, 139.69),
        ];
        let d = configured.with_learnt(learnt);
        let ids: Vec<u32> = d.relays().iter().map(|r| r.id.0).collect();
        assert_eq!(
            ids,
            vec![1, 2, 3],
            "configured first, then by id, once each"
        );
        assert_eq!(
            d.relays()[0].region,
            "virginia",
            "the configured entry kept"
        );
        assert_eq!(
            d.nearest(35.0, 139.0, 1)[0].id.0,
            3,
            "placed like the others"
        );
        assert_eq!(configured.with_learnt([]).relays().len(), 1, "gone again");
        let many = (10..2_000).map(|i| relay(i, "x", 0.0, 0.0));
        assert_eq!(
            configured.with_learnt(many).relays().len(),
            1 + MAX_LEARNT_RELAYS
        );
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
    fn a_database_without_locations_is_refused_and_bad_records_are_errors() {
        #[derive(Serialize)]
        struct Asn {
            autonomous_system_number: u32,
        }
        let mut w = mmdb_writer::Writer::new("GeoLite2-ASN");
        w.insert(
            "198.51.100.0/24".parse::<IpNet>().unwrap(),
            &Asn {
                autonomous_system_number: 64500,
            },
        )
        .unwrap();
        let err = GeoDb::from_bytes(w.to_bytes().unwrap()).unwrap_err();
        assert!(matches!(err, GeoError::NoLocations { .. }), "{err}");
        assert!(err.to_string().contains("GeoLite2-ASN"), "{err}");

        // A City database whose record for one network has a location of the
        // wrong shape: that lookup is an error, not "unknown".
        #[derive(Serialize)]
        struct Odd {
            location: &'static str,
        }
        let mut w = mmdb_writer::Writer::new("Skylane-Test-City");
        w.insert(
            "198.51.100.0/24".parse::<IpNet>().unwrap(),
            &City {
                location: Loc {
                    latitude: 1.0,
                    longitude: 2.0,
                },
            },
        )
        .unwrap();
        w.insert(
            "203.0.113.0/24".parse::<IpNet>().unwrap(),
            &Odd { location: "x" },
        )
        .unwrap();
        let g = GeoDb::from_bytes(w.to_bytes().unwrap()).unwrap();
        assert_eq!(
            g.lookup("198.51.100.1".parse().unwrap()).unwrap(),
            Some((1.0, 2.0))
        );
        assert_eq!(g.lookup("192.0.2.1".parse().unwrap()).unwrap(), None);
        let err = g.lookup("203.0.113.1".parse().unwrap()).unwrap_err();
        assert!(matches!(err, GeoError::Undecodable { .. }), "{err}");
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
