//! The violation store's shell: worlds hand records to a bounded queue
//! (never waiting: a full queue drops the record and counts it), one blocking
//! thread appends them in batches, and the admin endpoint queries the store
//! off the async threads.

use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, OnceLock};

use tracing::warn;

use crate::evidence::{EvidenceError, ViolationQuery, ViolationRecord, ViolationStore};
use crate::metrics::OriginMetrics;

/// Records waiting for the writer (a bound: a flood of violations costs at
/// most this many records of memory).
pub(crate) const QUEUE: usize = 4096;
/// Most records one transaction appends.
const BATCH: usize = 512;

/// The process's violation store, once attached ([`Evidence::attach`]).
#[derive(Default)]
pub(crate) struct Evidence {
    tx: OnceLock<SyncSender<ViolationRecord>>,
    store: OnceLock<Arc<Mutex<ViolationStore>>>,
}

impl Evidence {
    /// Starts writing to `store` (once; a second store is refused).
    pub(crate) fn attach(
        &self,
        store: ViolationStore,
        metrics: OriginMetrics,
    ) -> Result<(), EvidenceError> {
        let store = Arc::new(Mutex::new(store));
        let (tx, rx) = sync_channel(QUEUE);
        if self.store.set(store.clone()).is_err() || self.tx.set(tx).is_err() {
            return Ok(());
        }
        std::thread::Builder::new()
            .name("skylane-violations".into())
            .spawn(move || write_loop(&rx, &store, &metrics))
            .map(drop)
            .map_err(|e| EvidenceError::Storage(redb::Error::Io(e)))
    }

    /// Queues `record` for the store (a full queue drops it and counts it;
    /// without a store there is nothing to keep it in).
    pub(crate) fn record(&self, record: ViolationRecord, metrics: &OriginMetrics) {
        let Some(tx) = self.tx.get() else {
            return;
        };
        match tx.try_send(record) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                OriginMetrics::count(&metrics.violations_dropped, "queue_full");
            }
            Err(TrySendError::Disconnected(_)) => {
                OriginMetrics::count(&metrics.violations_dropped, "writer_gone");
            }
        }
    }

    /// Answers `q` from the store (on a blocking thread); `None` without one.
    pub(crate) async fn query(
        &self,
        q: ViolationQuery,
    ) -> Option<Result<Vec<ViolationRecord>, EvidenceError>> {
        let store = self.store.get()?.clone();
        let answer = tokio::task::spawn_blocking(move || match store.lock() {
            Ok(s) => s.query(&q),
            Err(p) => p.into_inner().query(&q),
        })
        .await;
        Some(answer.unwrap_or_else(|e| {
            Err(EvidenceError::Storage(redb::Error::Io(
                std::io::Error::other(e.to_string()),
            )))
        }))
    }
}

fn write_loop(
    rx: &Receiver<ViolationRecord>,
    store: &Mutex<ViolationStore>,
    metrics: &OriginMetrics,
) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < BATCH {
            match rx.try_recv() {
                Ok(r) => batch.push(r),
                Err(_) => break,
            }
        }
        let n = batch.len() as u64;
        let result = match store.lock() {
            Ok(mut s) => s.append(&mut batch),
            Err(p) => p.into_inner().append(&mut batch),
        };
        match result {
            Ok(pruned) => {
                metrics.violations_stored.inc_by(n);
                metrics.violations_pruned.inc_by(pruned);
            }
            Err(e) => {
                metrics
                    .violations_dropped
                    .get_or_create(&crate::metrics::KindLabel {
                        kind: "storage".into(),
                    })
                    .inc_by(n);
                warn!(error = %e, records = n, "violation store: append failed");
            }
        }
    }
}
