//! GeoIP fixtures: MaxMind-format (`.mmdb`) City databases built from a CSV of
//! networks and locations.
//!
//! Relays place clients with a GeoIP2/GeoLite2 City database (`location.latitude`,
//! `location.longitude`). Production deployments use MaxMind's files; the demo,
//! the tests and private networks use a database built here from a small CSV with
//! the maintained `mmdb-writer` crate, so nothing has to be downloaded.
//!
//! CSV layout: a header `network,city,latitude,longitude`, then one row per
//! network in CIDR notation (IPv4 or IPv6). Lines starting with `#` are comments.
//! A later row wins where networks overlap.

use std::io::Read;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// The CSV the demo uses: three loopback regions (`127.0.1.0/24` amsterdam,
/// `127.0.2.0/24` virginia, `127.0.3.0/24` tokyo) and documentation ranges.
pub const DEMO_CSV: &str = include_str!("../data/geoip-demo.csv");

/// Database type written into the metadata.
pub const DATABASE_TYPE: &str = "Skylane-GeoIP-City";

/// Why a database could not be built.
#[derive(Debug, thiserror::Error)]
pub enum GeoIpBuildError {
    /// A row is unusable.
    #[error("CSV line {line}: {message}")]
    Row {
        /// Line number in the file (1-based).
        line: u64,
        /// What is wrong.
        message: String,
    },
    /// The CSV could not be read.
    #[error("reading the CSV: {0}")]
    Csv(#[from] csv::Error),
    /// The writer refused the data.
    #[error("writing the database: {0}")]
    Write(String),
    /// No network rows.
    #[error("the CSV lists no networks")]
    Empty,
}

#[derive(Debug, Deserialize)]
struct Row {
    network: String,
    city: String,
    latitude: f64,
    longitude: f64,
}

#[derive(Serialize)]
struct Names<'a> {
    en: &'a str,
}

#[derive(Serialize)]
struct CityName<'a> {
    names: Names<'a>,
}

#[derive(Serialize)]
struct Location {
    latitude: f64,
    longitude: f64,
}

#[derive(Serialize)]
struct CityRecord<'a> {
    city: CityName<'a>,
    location: Location,
}

/// A built database.
#[derive(Debug, Clone)]
pub struct Built {
    /// The `.mmdb` bytes.
    pub bytes: Vec<u8>,
    /// Networks written.
    pub networks: usize,
}

/// Builds a City database from CSV text (see the module docs for the layout).
pub fn build_mmdb(csv_text: impl Read) -> Result<Built, GeoIpBuildError> {
    let mut reader = csv::ReaderBuilder::new()
        .comment(Some(b'#'))
        .trim(csv::Trim::All)
        .from_reader(csv_text);
    let mut writer = mmdb_writer::Writer::new(DATABASE_TYPE);
    let headers = reader.headers()?.clone();
    let mut networks = 0;
    for rec in reader.records() {
        let rec = rec?;
        let line = rec.position().map_or(0, csv::Position::line);
        let row_err = |message: String| GeoIpBuildError::Row { line, message };
        let row: Row = rec
            .deserialize(Some(&headers))
            .map_err(|e| row_err(e.to_string()))?;
        let net: IpNet = row
            .network
            .parse()
            .map_err(|e| row_err(format!("network {:?}: {e}", row.network)))?;
        if !(-90.0..=90.0).contains(&row.latitude) || !(-180.0..=180.0).contains(&row.longitude) {
            return Err(row_err(format!(
                "location ({}, {}) is not a latitude and longitude",
                row.latitude, row.longitude
            )));
        }
        writer
            .insert(
                net,
                &CityRecord {
                    city: CityName {
                        names: Names { en: &row.city },
                    },
                    location: Location {
                        latitude: row.latitude,
                        longitude: row.longitude,
                    },
                },
            )
            .map_err(|e| row_err(e.to_string()))?;
        networks += 1;
    }
    if networks == 0 {
        return Err(GeoIpBuildError::Empty);
    }
    let bytes = writer
        .to_bytes()
        .map_err(|e| GeoIpBuildError::Write(e.to_string()))?;
    Ok(Built { bytes, networks })
}

/// The demo database ([`DEMO_CSV`]).
pub fn demo_mmdb() -> Result<Built, GeoIpBuildError> {
    build_mmdb(DEMO_CSV.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use skylane_relay::GeoDb;

    #[test]
    fn the_demo_database_places_the_loopback_regions() {
        let built = demo_mmdb().unwrap();
        assert_eq!(built.networks, 8);
        let db = GeoDb::from_bytes(built.bytes).unwrap();
        let at = |ip: &str| db.locate(ip.parse().unwrap());
        assert_eq!(at("127.0.1.77"), Some((52.37, 4.90)));
        assert_eq!(at("127.0.2.1"), Some((38.95, -77.45)));
        assert_eq!(at("127.0.3.200"), Some((35.68, 139.69)));
        assert_eq!(at("2001:db8:2::9"), Some((-33.87, 151.21)));
        assert_eq!(at("127.0.0.1"), None);
        assert_eq!(at("8.8.8.8"), None);
    }

    #[test]
    fn the_city_name_is_readable_by_maxminddb() {
        #[derive(Deserialize)]
        struct Rec {
            city: City,
        }
        #[derive(Deserialize)]
        struct City {
            names: std::collections::BTreeMap<String, String>,
        }
        let built = demo_mmdb().unwrap();
        let reader = maxminddb::Reader::from_source(built.bytes).unwrap();
        assert_eq!(reader.metadata().database_type, DATABASE_TYPE);
        let rec: Rec = reader
            .lookup("198.51.100.3".parse().unwrap())
            .unwrap()
            .decode()
            .unwrap()
            .unwrap();
        assert_eq!(rec.city.names["en"], "london");
    }

    #[test]
    fn bad_rows_are_reported_with_their_line() {
        let err = |csv: &str| build_mmdb(csv.as_bytes()).unwrap_err().to_string();
        let head = "network,city,latitude,longitude\n";
        let e = err(&format!("{head}10.0.0.0/8,x,1,2\nnot-a-net,y,1,2\n"));
        assert!(e.contains("line 3") && e.contains("not-a-net"), "{e}");
        let e = err(&format!("{head}10.0.0.0/8,x,91,2\n"));
        assert!(e.contains("line 2") && e.contains("latitude"), "{e}");
        let e = err(&format!("{head}10.0.0.0/8,x,north,2\n"));
        assert!(e.contains("line 2"), "{e}");
        let e = err(&format!("{head}10.0.0.0/8,x,1\n"));
        assert!(e.contains("line 2") || e.contains("CSV"), "{e}");
        assert!(err(head).contains("no networks"));
    }
}
