//! `skylane-analytics`: what happened in the network, for a studio's
//! analysts (Prometheus metrics are for operators).
//!
//! * [`schema`]: the typed rows (sessions, worlds, sampled actions,
//!   violations, economy, spectators, matchmaking), one table each,
//!   documented in `docs/analytics.md`.
//! * [`Emitter`]: the handle origins, relays and the matchmaker emit through,
//!   into a bounded spool that never makes them wait (full: the oldest rows
//!   go, counted).
//! * [`Analytics`]: the writer thread draining the spool into a [`Sink`];
//!   [`ParquetSink`] writes time-partitioned, size- and age-rotated, zstd
//!   Parquet files.
//! * [`read_table`] and [`Summary`]: the files read back (what `skylane
//!   analytics summary DIR` prints).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

mod read;
pub mod schema;
mod sink;
mod spool;
mod summary;
mod writer;

pub use read::{count_table, parquet_files, read_table, ReadError, TableRead};
pub use schema::{Event, TABLES};
pub use sink::{partition, ParquetSink, Rotation, Sink, SinkError};
pub use spool::{AnalyticsMetrics, Emitter, TableLabel};
pub use summary::{HourCounts, RegionSessions, Summary};
pub use writer::Analytics;

/// Most rows a spool may hold.
pub const MAX_SPOOL_ROWS: usize = 10_000_000;

/// The `[analytics]` section of an origin's, a relay's or the matchmaker's
/// configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AnalyticsConfig {
    /// Where the Parquet files go; unset: analytics off.
    pub dir: Option<PathBuf>,
    /// Rows the spool holds before it drops the oldest.
    pub spool_rows: usize,
    /// A file is completed at this size, MiB.
    pub rotate_mb: u64,
    /// ... or at this age, seconds.
    pub rotate_secs: u64,
    /// One action outcome in this many is written (1: all; 0: none).
    pub sample_actions: u32,
}

impl Default for AnalyticsConfig {
    fn default() -> Self {
        Self {
            dir: None,
            spool_rows: 65_536,
            rotate_mb: 64,
            rotate_secs: 300,
            sample_actions: 100,
        }
    }
}

/// A value of the `[analytics]` section out of range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("analytics.{key}: {why}")]
pub struct ConfigError {
    /// The key.
    pub key: &'static str,
    /// What is wrong.
    pub why: String,
}

impl AnalyticsConfig {
    /// Checks every bound.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.spool_rows == 0 || self.spool_rows > MAX_SPOOL_ROWS {
            return Err(ConfigError {
                key: "spool_rows",
                why: format!("must be 1..={MAX_SPOOL_ROWS}, is {}", self.spool_rows),
            });
        }
        if self.rotate_mb == 0 || self.rotate_mb > 4096 {
            return Err(ConfigError {
                key: "rotate_mb",
                why: format!("must be 1..=4096, is {}", self.rotate_mb),
            });
        }
        if self.rotate_secs == 0 || self.rotate_secs > 86_400 {
            return Err(ConfigError {
                key: "rotate_secs",
                why: format!("must be 1..=86400, is {}", self.rotate_secs),
            });
        }
        Ok(())
    }

    /// Whether the `n`th action outcome (any counter) is sampled.
    pub fn samples(&self, n: u64) -> bool {
        self.sample_actions != 0 && n % u64::from(self.sample_actions) == 0
    }
}
