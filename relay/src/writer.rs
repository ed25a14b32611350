//! The writer of one player connection: a single task that owns the connection's
//! [`Scheduler`] and its per-class QUIC streams.
//!
//! Each event class writes its own unidirectional stream (opened on first use, its
//! QUIC priority taken from the class), so a stream blocked by flow control holds
//! back only its own class: the scheduler hands a class a frame only when that
//! class's stream has nothing left to write. Writes use quinn's cancel-safe
//! `write_chunks`, polled in place, so the shared frame bytes go to quinn without
//! a copy and without one task per stream (an idle session costs one small task).

use std::future::{poll_fn, Future};
use std::pin::{pin, Pin};
use std::task::{Context, Poll};

use bytes::Bytes;
use quinn::{Connection, SendStream};
use skylane_proto::{EventClass, SessionId};
use tokio::sync::mpsc;
use tokio::time::{Instant, Sleep};
use tracing::warn;

use crate::metrics::{KindLabel, RelayMetrics};
use crate::scheduler::{Outgoing, Scheduler, SchedulerConfig, SchedulerStats};

/// One class's stream and the frame it is writing.
#[derive(Default)]
struct Lane {
    stream: Option<SendStream>,
    /// The rest of the frame being written (quinn takes what flow control allows).
    pending: Option<Bytes>,
}

/// Why a lane stopped for good.
struct Broken;

impl Lane {
    /// Writes as much of the pending frame as quinn takes now. `Ready(Ok)` when the
    /// lane is free for the next frame; `Pending` with the task's waker registered.
    fn poll_flush(
        &mut self,
        cx: &mut Context<'_>,
        conn: &Connection,
        class: EventClass,
    ) -> Poll<Result<(), Broken>> {
        while let Some(rest) = self.pending.take() {
            if self.stream.is_none() {
                // Opening is immediate unless the peer's stream limit is reached;
                // a dropped, unfinished open leaves nothing behind.
                match pin!(conn.open_uni()).poll(cx) {
                    Poll::Ready(Ok(s)) => {
                        let _ = s.set_priority(class.quic_priority());
                        self.stream = Some(s);
                    }
                    Poll::Ready(Err(_)) => return Poll::Ready(Err(Broken)),
                    Poll::Pending => {
                        self.pending = Some(rest);
                        return Poll::Pending;
                    }
                }
            }
            let Some(stream) = self.stream.as_mut() else {
                return Poll::Ready(Err(Broken));
            };
            let mut bufs = [rest];
            // `write_chunks` is cancel safe: when it is pending nothing was written.
            let polled = pin!(stream.write_chunks(&mut bufs)).poll(cx);
            let [left] = bufs;
            match polled {
                Poll::Ready(Ok(w)) => {
                    if w.chunks == 0 && !left.is_empty() {
                        self.pending = Some(left);
                    }
                }
                Poll::Ready(Err(_)) => return Poll::Ready(Err(Broken)),
                Poll::Pending => {
                    self.pending = Some(left);
                    return Poll::Pending;
                }
            }
        }
        Poll::Ready(Ok(()))
    }
}

/// A player connection's writer state.
struct Writer {
    conn: Connection,
    rx: mpsc::Receiver<Outgoing>,
    sched: Scheduler,
    lanes: [Lane; EventClass::ALL.len()],
    metrics: RelayMetrics,
    session: SessionId,
    last_stats: SchedulerStats,
}

impl Writer {
    fn too_slow(&self) -> Poll<()> {
        self.metrics.slow_clients.inc();
        warn!(session = %self.session, "client too slow; disconnecting (it will resume)");
        self.conn.close(4u32.into(), b"too slow");
        Poll::Ready(())
    }

    /// Drives the writer until the connection or its queue ends.
    fn poll(&mut self, cx: &mut Context<'_>, mut timer: Pin<&mut Sleep>) -> Poll<()> {
        loop {
            // Everything queued enters the scheduler before it picks.
            loop {
                match self.rx.poll_recv(cx) {
                    Poll::Ready(Some(o)) => {
                        if self
                            .sched
                            .handle_enqueue(Instant::now().into_std(), o)
                            .is_err()
                        {
                            return self.too_slow();
                        }
                    }
                    Poll::Ready(None) => return Poll::Ready(()),
                    Poll::Pending => break,
                }
            }
            let now = Instant::now().into_std();
            if self.sched.poll_timeout().is_some_and(|d| d <= now) {
                self.sched.handle_timeout(now);
            }
            for class in EventClass::ALL {
                if let Poll::Ready(Err(Broken)) =
                    self.lanes[class.rank()].poll_flush(cx, &self.conn, class)
                {
                    return Poll::Ready(());
                }
            }
            let mut handed = 0;
            while let Some(o) = self
                .sched
                .poll_next_ready(now, |c| self.lanes[c.rank()].pending.is_none())
            {
                self.metrics.frames_out.inc();
                self.lanes[o.class.rank()].pending = Some(o.bytes);
                handed += 1;
            }
            self.count_drops();
            if handed == 0 {
                break;
            }
            // Start writing what was just handed out (registers the waker if blocked).
        }
        if let Some(deadline) = self.sched.poll_timeout() {
            let deadline = Instant::from_std(deadline);
            if timer.deadline() != deadline {
                timer.as_mut().reset(deadline);
            }
            if timer.as_mut().poll(cx).is_ready() {
                // Expired while we were busy: go round again right away.
                cx.waker().wake_by_ref();
            }
        }
        Poll::Pending
    }

    /// Adds the scheduler's drops since the last call to the metrics.
    fn count_drops(&mut self) {
        let st = *self.sched.stats();
        for c in EventClass::ALL {
            let r = c.rank();
            for (reason, n) in [
                ("expired", st.expired[r] - self.last_stats.expired[r]),
                ("evicted", st.evicted[r] - self.last_stats.evicted[r]),
            ] {
                if n > 0 {
                    self.metrics
                        .dropped
                        .get_or_create(&KindLabel {
                            kind: format!("{reason}_{c}"),
                        })
                        .inc_by(n);
                }
            }
        }
        self.last_stats = st;
    }
}

/// Writes a player connection's frames: strict priority between classes, fairness
/// between sessions, per-class deadlines; one QUIC stream per class. Ends when the
/// connection breaks or `rx` closes; closes a client too slow to keep up.
pub(crate) async fn write_client(
    conn: Connection,
    rx: mpsc::Receiver<Outgoing>,
    cfg: SchedulerConfig,
    metrics: RelayMetrics,
    session: SessionId,
) {
    let sched = Scheduler::new(cfg);
    let last_stats = *sched.stats();
    let mut w = Writer {
        conn,
        rx,
        sched,
        lanes: Default::default(),
        metrics,
        session,
        last_stats,
    };
    let mut timer = pin!(tokio::time::sleep_until(Instant::now()));
    poll_fn(|cx| w.poll(cx, timer.as_mut())).await;
}
