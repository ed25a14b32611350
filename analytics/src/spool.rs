//! The in-process spool between the processes' hot paths and the writer:
//! bounded, never waits. [`Emitter::emit`] takes a lock held only for a
//! push (the writer swaps the whole queue out in O(1)), so a game loop or a
//! relay's data path never waits on analytics; when the writer falls behind
//! (a slow disk, a burst) the spool drops its *oldest* rows and counts them
//! (`analytics_dropped_total`), so memory stays bounded and the newest
//! picture survives.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

use crate::schema::Event;

/// A metric label: the table.
#[derive(Debug, Clone, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
pub struct TableLabel {
    /// The table.
    pub table: String,
}

/// Analytics metrics (registered under the process's registry).
#[derive(Debug, Clone, Default)]
pub struct AnalyticsMetrics {
    /// Rows emitted into the spool, by table.
    pub emitted: Family<TableLabel, Counter>,
    /// Rows dropped because the spool was full (the oldest go).
    pub dropped: Counter,
    /// Rows written to the sink.
    pub written: Counter,
    /// Files completed (closed and renamed into place).
    pub files: Counter,
    /// Writes or file operations that failed (their rows are counted in
    /// `lost`).
    pub write_errors: Counter,
    /// Rows lost to a failed write.
    pub lost: Counter,
}

impl AnalyticsMetrics {
    /// Metrics registered as `analytics_*`.
    pub fn new(registry: &mut Registry) -> Self {
        let m = Self::default();
        registry.register(
            "analytics_events",
            "Analytics rows emitted into the spool, by table",
            m.emitted.clone(),
        );
        registry.register(
            "analytics_dropped",
            "Analytics rows dropped because the spool was full (oldest first)",
            m.dropped.clone(),
        );
        registry.register(
            "analytics_written",
            "Analytics rows written to the sink",
            m.written.clone(),
        );
        registry.register(
            "analytics_files",
            "Analytics files completed",
            m.files.clone(),
        );
        registry.register(
            "analytics_write_errors",
            "Analytics writes or file operations that failed",
            m.write_errors.clone(),
        );
        registry.register(
            "analytics_lost",
            "Analytics rows lost to a failed write",
            m.lost.clone(),
        );
        m
    }
}

/// The bounded queue itself (shared by the emitters and the writer).
#[derive(Debug)]
pub(crate) struct Spool {
    queue: Mutex<Queue>,
    ready: Condvar,
    capacity: usize,
    pub(crate) metrics: AnalyticsMetrics,
}

#[derive(Debug, Default)]
struct Queue {
    rows: VecDeque<Event>,
    closed: bool,
}

impl Spool {
    pub(crate) fn new(capacity: usize, metrics: AnalyticsMetrics) -> Self {
        Self {
            queue: Mutex::new(Queue::default()),
            ready: Condvar::new(),
            capacity: capacity.max(1),
            metrics,
        }
    }

    fn push(&self, e: Event) {
        let table = e.table();
        let mut q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        if q.closed {
            return;
        }
        if q.rows.len() >= self.capacity {
            q.rows.pop_front();
            self.metrics.dropped.inc();
        }
        q.rows.push_back(e);
        let wake = q.rows.len() == 1;
        drop(q);
        self.metrics
            .emitted
            .get_or_create(&TableLabel {
                table: table.to_owned(),
            })
            .inc();
        if wake {
            self.ready.notify_one();
        }
    }

    /// Everything queued (swapped out with `spare`, which comes back
    /// empty), after waiting at most `wait` for something; `None` once
    /// closed and empty.
    pub(crate) fn take(&self, spare: &mut VecDeque<Event>, wait: Duration) -> Option<()> {
        let mut q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        if q.rows.is_empty() && !q.closed {
            q = self
                .ready
                .wait_timeout(q, wait)
                .map(|(q, _)| q)
                .unwrap_or_else(|p| p.into_inner().0);
        }
        if q.rows.is_empty() && q.closed {
            return None;
        }
        debug_assert!(spare.is_empty());
        std::mem::swap(&mut q.rows, spare);
        Some(())
    }

    /// No more rows are taken in; the writer drains what is queued.
    pub(crate) fn close(&self) {
        self.queue.lock().unwrap_or_else(|p| p.into_inner()).closed = true;
        self.ready.notify_all();
    }
}

/// A cheap, cloneable handle the hot paths emit through. A disabled one
/// (analytics off) does nothing.
#[derive(Debug, Clone, Default)]
pub struct Emitter {
    spool: Option<Arc<Spool>>,
}

impl Emitter {
    pub(crate) fn new(spool: Arc<Spool>) -> Self {
        Self { spool: Some(spool) }
    }

    /// An emitter that discards everything (analytics off).
    pub fn disabled() -> Self {
        Self::default()
    }

    /// Whether rows go anywhere (callers may skip building them).
    pub fn enabled(&self) -> bool {
        self.spool.is_some()
    }

    /// Queues a row; never waits for the writer (a full spool drops its
    /// oldest row and counts it).
    pub fn emit(&self, e: impl Into<Event>) {
        if let Some(s) = &self.spool {
            s.push(e.into());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::Ticket;

    fn ticket(n: u64) -> Event {
        Event::Ticket(Ticket {
            at_ms: n,
            node: "m".into(),
            ticket: n.to_string(),
            player: "p".into(),
            queue: "q".into(),
            outcome: "matched".into(),
            wait_ms: 1,
        })
    }

    #[test]
    fn a_full_spool_drops_the_oldest_and_counts_them() {
        let spool = Arc::new(Spool::new(3, AnalyticsMetrics::default()));
        let e = Emitter::new(spool.clone());
        for n in 0..5 {
            e.emit(ticket(n));
        }
        let mut out = VecDeque::new();
        spool.take(&mut out, Duration::ZERO).unwrap();
        let kept: Vec<u64> = out.iter().map(Event::at_ms).collect();
        assert_eq!(kept, vec![2, 3, 4], "the newest survive");
        assert_eq!(spool.metrics.dropped.get(), 2);
        let label = TableLabel {
            table: "ticket".into(),
        };
        assert_eq!(spool.metrics.emitted.get_or_create(&label).get(), 5);
    }

    #[test]
    fn a_closed_spool_drains_then_ends_and_takes_nothing_more() {
        let spool = Arc::new(Spool::new(8, AnalyticsMetrics::default()));
        let e = Emitter::new(spool.clone());
        e.emit(ticket(1));
        spool.close();
        e.emit(ticket(2));
        let mut out = VecDeque::new();
        assert!(spool.take(&mut out, Duration::from_secs(5)).is_some());
        assert_eq!(out.len(), 1);
        out.clear();
        assert!(spool.take(&mut out, Duration::from_secs(5)).is_none());
    }

    #[test]
    fn a_disabled_emitter_goes_nowhere() {
        let e = Emitter::disabled();
        assert!(!e.enabled());
        e.emit(ticket(1));
    }
}
