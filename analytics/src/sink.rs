//! Where rows go: the [`Sink`] trait, and [`ParquetSink`], time-partitioned
//! zstd Parquet files rotated by size and age.
//!
//! Layout (Hive-style partitions, so DuckDB, Spark and pyarrow read the
//! date and hour as columns):
//!
//! ```text
//! DIR/<table>/date=YYYY-MM-DD/hour=HH/<node>-<opened ms>-<n>.parquet
//! ```
//!
//! A file is written as `….parquet.tmp` and renamed into place only once
//! complete (footer written), so a reader never sees half a file and a
//! crash leaves at most one `.tmp` per open file (ignored by readers). The
//! partition is the row's own time (UTC), not the writer's.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;

use crate::schema::{to_batch, Event};
use crate::spool::AnalyticsMetrics;

/// Why a sink could not take rows.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// A file or directory operation failed.
    #[error("analytics file {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// Rows could not be laid out as Arrow columns.
    #[error("analytics rows of {table}: {source}")]
    Arrow {
        /// The table.
        table: String,
        /// Cause.
        source: serde_arrow::Error,
    },
    /// The Parquet writer failed.
    #[error("analytics parquet {path}: {source}")]
    Parquet {
        /// The file.
        path: PathBuf,
        /// Cause.
        source: parquet::errors::ParquetError,
    },
}

/// A destination for analytics rows. [`ParquetSink`] is the built-in one; an
/// OTLP exporter or a message-broker producer would implement the same three
/// calls. The writer thread is the only caller (a sink may block: it never
/// runs on a game loop or the data path).
pub trait Sink: Send {
    /// Takes rows of any tables, oldest first.
    fn write(&mut self, now_ms: u64, rows: &[Event]) -> Result<(), SinkError>;
    /// Completes what is due by age (called about once a second).
    fn tick(&mut self, now_ms: u64) -> Result<(), SinkError>;
    /// Completes everything (at shutdown).
    fn close(&mut self) -> Result<(), SinkError>;
}

/// When a file is complete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rotation {
    /// Bytes (written plus buffered) that complete a file.
    pub max_bytes: u64,
    /// Age that completes a file, ms.
    pub max_age_ms: u64,
}

impl Rotation {
    /// Whether a file opened at `opened_ms` holding `bytes` is complete at
    /// `now_ms`.
    pub fn due(&self, opened_ms: u64, now_ms: u64, bytes: u64) -> bool {
        bytes >= self.max_bytes || now_ms.saturating_sub(opened_ms) >= self.max_age_ms
    }
}

/// Open files at most (one per table and hour partition in use; more means
/// rows far apart in time: the oldest file is completed).
const MAX_OPEN: usize = 64;

/// Rows buffered per row group (bounds the writer's memory).
const ROW_GROUP_ROWS: usize = 65_536;

struct Open {
    writer: ArrowWriter<File>,
    tmp: PathBuf,
    path: PathBuf,
    opened_ms: u64,
}

/// Time-partitioned, rotated, zstd-compressed Parquet files.
pub struct ParquetSink {
    dir: PathBuf,
    node: String,
    rotation: Rotation,
    props: WriterProperties,
    open: BTreeMap<(&'static str, String), Open>,
    seq: u64,
    metrics: AnalyticsMetrics,
}

impl std::fmt::Debug for ParquetSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ParquetSink")
            .field("dir", &self.dir)
            .field("node", &self.node)
            .field("open", &self.open.len())
            .finish()
    }
}

/// The partition directory of a time: `date=YYYY-MM-DD/hour=HH` (UTC).
pub fn partition(at_ms: u64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(at_ms);
    let s = humantime::format_rfc3339_seconds(t).to_string();
    // `YYYY-MM-DDTHH:MM:SSZ`
    format!("date={}/hour={}", &s[..10], &s[11..13])
}

/// A node name safe in a file name (anything but letters, digits, `-` and
/// `_` becomes `_`).
fn file_safe(node: &str) -> String {
    let s: String = node
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if s.is_empty() {
        "node".into()
    } else {
        s
    }
}

impl ParquetSink {
    /// Files under `dir` (created if missing), named after `node`.
    pub fn new(
        dir: &Path,
        node: &str,
        rotation: Rotation,
        metrics: AnalyticsMetrics,
    ) -> Result<Self, SinkError> {
        std::fs::create_dir_all(dir).map_err(|source| SinkError::Io {
            path: dir.to_owned(),
            source,
        })?;
        let props = WriterProperties::builder()
            .set_compression(Compression::ZSTD(ZstdLevel::default()))
            .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
            .build();
        Ok(Self {
            dir: dir.to_owned(),
            node: file_safe(node),
            rotation,
            props,
            open: BTreeMap::new(),
            seq: 0,
            metrics,
        })
    }

    /// Files open now.
    pub fn open_files(&self) -> usize {
        self.open.len()
    }

    fn complete(&mut self, key: &(&'static str, String)) -> Result<(), SinkError> {
        let Some(o) = self.open.remove(key) else {
            return Ok(());
        };
        let r = o
            .writer
            .close()
            .map_err(|source| SinkError::Parquet {
                path: o.tmp.clone(),
                source,
            })
            .and_then(|_| {
                std::fs::rename(&o.tmp, &o.path).map_err(|source| SinkError::Io {
                    path: o.path.clone(),
                    source,
                })
            });
        match r {
            Ok(()) => self.metrics.files.inc(),
            Err(_) => self.metrics.write_errors.inc(),
        };
        r
    }

    fn writer_for(
        &mut self,
        now_ms: u64,
        table: &'static str,
        part: &str,
        schema: arrow_schema::SchemaRef,
    ) -> Result<&mut Open, SinkError> {
        let key = (table, part.to_owned());
        if !self.open.contains_key(&key) {
            if self.open.len() >= MAX_OPEN {
                let oldest = self
                    .open
                    .iter()
                    .min_by_key(|(_, o)| o.opened_ms)
                    .map(|(k, _)| k.clone());
                if let Some(k) = oldest {
                    self.complete(&k)?;
                }
            }
            let dir = self.dir.join(table).join(part);
            std::fs::create_dir_all(&dir).map_err(|source| SinkError::Io {
                path: dir.clone(),
                source,
            })?;
            self.seq += 1;
            let name = format!("{}-{}-{}.parquet", self.node, now_ms, self.seq);
            let path = dir.join(&name);
            let tmp = dir.join(format!("{name}.tmp"));
            let file = File::create(&tmp).map_err(|source| SinkError::Io {
                path: tmp.clone(),
                source,
            })?;
            let writer =
                ArrowWriter::try_new(file, schema, Some(self.props.clone())).map_err(|source| {
                    SinkError::Parquet {
                        path: tmp.clone(),
                        source,
                    }
                })?;
            self.open.insert(
                key.clone(),
                Open {
                    writer,
                    tmp,
                    path,
                    opened_ms: now_ms,
                },
            );
        }
        Ok(self.open.get_mut(&key).expect("inserted above"))
    }

    fn write_group(
        &mut self,
        now_ms: u64,
        table: &'static str,
        part: &str,
        rows: &[&Event],
    ) -> Result<(), SinkError> {
        let Some(batch) = to_batch(table, rows) else {
            return Ok(()); // every `Event` names a table that exists
        };
        let batch = batch.map_err(|source| SinkError::Arrow {
            table: table.into(),
            source,
        })?;
        let rotation = self.rotation;
        let o = self.writer_for(now_ms, table, part, batch.schema())?;
        o.writer
            .write(&batch)
            .map_err(|source| SinkError::Parquet {
                path: o.tmp.clone(),
                source,
            })?;
        let bytes = o.writer.bytes_written() as u64 + o.writer.in_progress_size() as u64;
        if rotation.due(o.opened_ms, now_ms, bytes) {
            self.complete(&(table, part.to_owned()))?;
        }
        Ok(())
    }
}

impl Sink for ParquetSink {
    fn write(&mut self, now_ms: u64, rows: &[Event]) -> Result<(), SinkError> {
        // Rows grouped by table and hour, each group in its arrival order.
        let mut groups: BTreeMap<(&'static str, String), Vec<&Event>> = BTreeMap::new();
        for e in rows {
            groups
                .entry((e.table(), partition(e.at_ms())))
                .or_default()
                .push(e);
        }
        let mut first_err = None;
        for ((table, part), rows) in groups {
            let n = rows.len() as u64;
            match self.write_group(now_ms, table, &part, &rows) {
                Ok(()) => {
                    self.metrics.written.inc_by(n);
                }
                Err(e) => {
                    // Other tables still get theirs; the failed file is
                    // abandoned (its rows are lost, and counted).
                    self.metrics.write_errors.inc();
                    self.metrics.lost.inc_by(n);
                    if let Some(o) = self.open.remove(&(table, part)) {
                        let _ = std::fs::remove_file(&o.tmp);
                    }
                    first_err.get_or_insert(e);
                }
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    fn tick(&mut self, now_ms: u64) -> Result<(), SinkError> {
        let due: Vec<_> = self
            .open
            .iter()
            .filter(|(_, o)| self.rotation.due(o.opened_ms, now_ms, 0))
            .map(|(k, _)| k.clone())
            .collect();
        let mut first_err = None;
        for k in due {
            if let Err(e) = self.complete(&k) {
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    fn close(&mut self) -> Result<(), SinkError> {
        let keys: Vec<_> = self.open.keys().cloned().collect();
        let mut first_err = None;
        for k in keys {
            if let Err(e) = self.complete(&k) {
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_are_utc_date_and_hour() {
        assert_eq!(partition(0), "date=1970-01-01/hour=00");
        // 2026-12-07T01:24:25Z
        assert_eq!(partition(1_796_606_665_000), "date=2026-12-07/hour=01");
    }

    #[test]
    fn rotation_by_size_or_age() {
        let r = Rotation {
            max_bytes: 100,
            max_age_ms: 1_000,
        };
        assert!(!r.due(0, 999, 99));
        assert!(r.due(0, 1_000, 0));
        assert!(r.due(0, 0, 100));
        assert!(!r.due(5_000, 0, 0), "a clock going back does not rotate");
    }

    #[test]
    fn node_names_are_made_file_safe() {
        assert_eq!(file_safe("relay-1"), "relay-1");
        assert_eq!(file_safe("../x y"), "___x_y");
        assert_eq!(file_safe(""), "node");
    }
}
