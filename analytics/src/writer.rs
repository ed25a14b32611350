//! The writer: one OS thread per process draining the spool into the sink
//! (Parquet encoding and zstd cost CPU and the disk may stall: neither
//! belongs on a tokio worker). Stopping it ([`Analytics::shutdown`], or
//! dropping the handle) drains what is queued and completes every file.

use std::collections::VecDeque;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tracing::warn;

use crate::sink::{ParquetSink, Rotation, Sink, SinkError};
use crate::spool::{AnalyticsMetrics, Emitter, Spool};
use crate::AnalyticsConfig;

/// How often the writer wakes with nothing queued (to complete files by age).
const TICK: Duration = Duration::from_millis(500);

/// A running analytics writer and its spool.
#[derive(Debug)]
pub struct Analytics {
    spool: Arc<Spool>,
    thread: Option<JoinHandle<Result<(), SinkError>>>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Analytics {
    /// Parquet files under the configuration's directory, named after
    /// `node`; `None` when analytics are off (no directory).
    pub fn start(
        cfg: &AnalyticsConfig,
        node: &str,
        metrics: AnalyticsMetrics,
    ) -> Result<Option<Self>, SinkError> {
        let Some(dir) = &cfg.dir else {
            return Ok(None);
        };
        let sink = ParquetSink::new(
            dir,
            node,
            Rotation {
                max_bytes: cfg.rotate_mb.saturating_mul(1 << 20),
                max_age_ms: cfg.rotate_secs.saturating_mul(1_000),
            },
            metrics.clone(),
        )?;
        Ok(Some(Self::with_sink(
            Box::new(sink),
            cfg.spool_rows,
            metrics,
        )))
    }

    /// Any sink behind a spool of `spool_rows`.
    pub fn with_sink(
        mut sink: Box<dyn Sink>,
        spool_rows: usize,
        metrics: AnalyticsMetrics,
    ) -> Self {
        let spool = Arc::new(Spool::new(spool_rows, metrics.clone()));
        let s = spool.clone();
        let thread = std::thread::Builder::new()
            .name("analytics".into())
            .spawn(move || {
                let mut buf = VecDeque::new();
                while s.take(&mut buf, TICK).is_some() {
                    if !buf.is_empty() {
                        let rows: Vec<_> = buf.drain(..).collect();
                        if let Err(e) = sink.write(now_ms(), &rows) {
                            warn!(error = %e, "analytics rows not written");
                        }
                    }
                    if let Err(e) = sink.tick(now_ms()) {
                        warn!(error = %e, "analytics file not completed");
                    }
                }
                sink.close()
            })
            .ok();
        if thread.is_none() {
            // No thread, no writer: nothing is taken in (counted as dropped
            // would hide it; close the spool so emits are discarded).
            warn!("analytics writer thread could not start: analytics off");
            spool.close();
        }
        Self { spool, thread }
    }

    /// A handle the hot paths emit through.
    pub fn emitter(&self) -> Emitter {
        Emitter::new(self.spool.clone())
    }

    /// Stops taking rows, writes what is queued and completes every file.
    pub fn shutdown(mut self) -> Result<(), SinkError> {
        self.stop()
    }

    fn stop(&mut self) -> Result<(), SinkError> {
        self.spool.close();
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(r)) => r,
            Some(Err(_)) => {
                self.spool.metrics.write_errors.inc();
                warn!("analytics writer panicked");
                Ok(())
            }
            None => Ok(()),
        }
    }
}

impl Drop for Analytics {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            warn!(error = %e, "analytics files not completed at shutdown");
        }
    }
}
