//! The writer of one player connection: the connection's [`Outbox`] (its
//! [`Scheduler`] behind a lock, filled by the relay's actor and the connection's
//! reader) and the per-class QUIC streams it drains into, polled by the
//! connection's own task.
//!
//! Each event class writes its own unidirectional stream (opened on first use, its
//! QUIC priority taken from the class), so a stream blocked by flow control holds
//! back only its own class: the scheduler hands a class a frame only when that
//! class's stream has nothing left to write. Writes use quinn's cancel-safe
//! `write_chunks`, polled in place, so the shared frame bytes go to quinn without
//! a copy and without one task per stream. Producers push straight into the
//! scheduler (no channel in front of it: a message waits in one place, and an idle
//! session holds no channel blocks), so an idle session's whole writer is one small
//! allocation and a few hundred bytes of its connection task.
//!
//! Movement is not in the scheduler: the outbox also holds the client's
//! [`ClientMovement`] view (made at its first movement state), and the writer
//! sends its datagrams, newest state per entity, nearest first, within the
//! view's byte budget, and only while quinn holds at most two of them unsent
//! (so a congested path never queues stale positions: what is not sent now is
//! superseded by the next tick's state).

use std::future::Future;
use std::pin::{pin, Pin};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use atomic_waker::AtomicWaker;
use bytes::Bytes;
use quinn::{Connection, SendStream};
use skylane_proto::{EventClass, SessionId};
use tokio::time::{Instant, Sleep};
use tracing::warn;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

use skylane_proto::{
    encode_datagram, encode_frame_to_bytes, ServerMsg, DEFAULT_MAX_FRAME, MAX_DATAGRAM,
};

use crate::metrics::{KindLabel, RelayMetrics};
use crate::movement::{ClientMovement, EntityState, MovementConfig};
use crate::scheduler::{Outgoing, Scheduler, SchedulerConfig, SchedulerStats};
use crate::settings::DATAGRAM_SEND_BUFFER;

/// A message to a client as one frame (empty if it cannot be encoded: only an
/// oversized message, which the relay never builds).
pub(crate) fn frame(msg: &ServerMsg) -> Bytes {
    encode_frame_to_bytes(msg, DEFAULT_MAX_FRAME).unwrap_or_default()
}

/// Why a message was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Refused {
    /// A reliable class is full: the client is too slow (it is being closed).
    #[error("the client's queue is full")]
    Full,
    /// The connection's writer has stopped.
    #[error("the connection is closed")]
    Closed,
}

struct OutboxState {
    sched: Scheduler,
    /// The client's movement view, made at the first movement state.
    movement: Option<Box<ClientMovement>>,
    movement_cfg: MovementConfig,
    /// Why nothing more is queued: the client was too slow ([`Refused::Full`]) or
    /// the connection ended ([`Refused::Closed`]).
    stopped: Option<Refused>,
}

/// What waits to be written to one client connection: its [`Scheduler`] behind a
/// lock, shared by the producers (the actor's fan-out, the reader's replies) and
/// the writer that drains it. Bounded by the scheduler's per-class capacities.
pub(crate) struct Outbox {
    state: Mutex<OutboxState>,
    /// The writer's task, woken when a message arrives or the outbox closes.
    waker: AtomicWaker,
}

impl Outbox {
    /// An empty outbox with the connection's scheduler limits.
    pub(crate) fn new(cfg: SchedulerConfig, movement: MovementConfig) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(OutboxState {
                sched: Scheduler::new(cfg),
                movement: None,
                movement_cfg: movement,
                stopped: None,
            }),
            waker: AtomicWaker::new(),
        })
    }

    /// Queues a message for the writer. [`Refused::Full`] when a reliable class
    /// overflowed: the outbox stops then, and its writer closes the connection as
    /// too slow (the client resumes and gets what it missed replayed).
    pub(crate) fn push(&self, msg: Outgoing) -> Result<(), Refused> {
        let now = Instant::now().into_std();
        let result = match self.state.lock() {
            Err(_) => return Err(Refused::Closed),
            Ok(mut st) => match st.stopped {
                Some(r) => return Err(r),
                None => st.sched.handle_enqueue(now, msg).map_err(|_| {
                    st.stopped = Some(Refused::Full);
                    Refused::Full
                }),
            },
        };
        self.waker.wake();
        result
    }

    /// New movement states of entities the client sees (latest wins).
    pub(crate) fn push_movement(&self, states: &[EntityState]) {
        if states.is_empty() {
            return;
        }
        if let Ok(mut st) = self.state.lock() {
            if st.stopped.is_some() {
                return;
            }
            let cfg = st.movement_cfg;
            let view = st
                .movement
                .get_or_insert_with(|| Box::new(ClientMovement::new(cfg)));
            for s in states {
                // Sizes were checked by the origin and the link decoder.
                let _ = view.handle_update(s.clone());
            }
        }
        self.waker.wake();
    }

    /// The client acknowledged movement datagram `seq` (and says where it
    /// looks from).
    pub(crate) fn movement_ack(&self, seq: u64, viewpoint: Option<(f32, f32)>) {
        if let Ok(mut st) = self.state.lock() {
            if let Some(view) = st.movement.as_mut() {
                view.handle_ack(seq);
                if let Some(p) = viewpoint {
                    view.handle_viewer(p);
                }
            }
        }
        self.waker.wake();
    }

    /// The client stopped seeing `channels`: their entities leave its view.
    pub(crate) fn movement_unsubscribed(&self, channels: &[skylane_proto::ChannelId]) {
        if let Ok(mut st) = self.state.lock() {
            if let Some(view) = st.movement.as_mut() {
                for c in channels {
                    view.handle_unsubscribed(*c);
                }
            }
        }
    }

    /// Stops the writer (the connection ended); later pushes are refused.
    pub(crate) fn close(&self) {
        if let Ok(mut st) = self.state.lock() {
            st.stopped.get_or_insert(Refused::Closed);
        }
        self.waker.wake();
    }

    /// The next message to write, registering `cx` to be woken for the next one.
    /// `Ready(Err(why))` once stopped.
    pub(crate) fn poll_next(&self, cx: &mut Context<'_>) -> Poll<Result<Outgoing, Refused>> {
        self.waker.register(cx.waker());
        let Ok(mut st) = self.state.lock() else {
            return Poll::Ready(Err(Refused::Closed));
        };
        if let Some(r) = st.stopped {
            return Poll::Ready(Err(r));
        }
        match st.sched.poll_next(Instant::now().into_std()) {
            Some(o) => Poll::Ready(Ok(o)),
            None => Poll::Pending,
        }
    }
}

/// Closes a client connection whose outbox overflowed, and counts it.
pub(crate) fn close_too_slow(conn: &Connection, slow_clients: &Counter, session: SessionId) {
    slow_clients.inc();
    warn!(%session, "client too slow; disconnecting (it will resume)");
    conn.close(4u32.into(), b"too slow");
}

/// The path's recent packet loss from quinn's counters: the fraction of the
/// packets sent since the last sample that were declared lost, sampled at most
/// every 500 ms and once at least 20 packets went. Loss on a path whose round
/// trip has grown well past its lowest (a queue builds: congestion) counts as
/// none: repeating datagrams there would take the bandwidth the next state
/// needs (a 40 kbit/s netsim link aged movement from 445 to 611 ms at p99
/// before this rule).
#[derive(Default)]
struct LossMeter {
    /// Packets sent and lost at the last sample, and when.
    at: Option<(std::time::Instant, u64, u64)>,
    /// The lowest smoothed round trip seen.
    min_rtt: Option<std::time::Duration>,
}

impl LossMeter {
    fn sample(&mut self, conn: &Connection, now: std::time::Instant) -> Option<f64> {
        if self.at.is_some_and(|(t, _, _)| {
            now.saturating_duration_since(t) < std::time::Duration::from_millis(500)
        }) {
            return None;
        }
        let path = conn.stats().path;
        let (sent, lost) = (path.sent_packets, path.lost_packets);
        let min_rtt = *self.min_rtt.get_or_insert(path.rtt);
        self.min_rtt = Some(min_rtt.min(path.rtt));
        let queueing = path.rtt > min_rtt.mul_f32(1.5) + std::time::Duration::from_millis(5);
        let Some((_, s0, l0)) = self.at else {
            self.at = Some((now, sent, lost));
            return None;
        };
        let ds = sent.saturating_sub(s0);
        if ds < 20 {
            return None;
        }
        self.at = Some((now, sent, lost));
        if queueing {
            return Some(0.0);
        }
        Some(lost.saturating_sub(l0) as f64 / ds as f64)
    }
}

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

/// A player connection's writer state, polled by the connection's task.
pub(crate) struct Writer {
    conn: Connection,
    outbox: Arc<Outbox>,
    lanes: [Lane; EventClass::ALL.len()],
    /// The three metrics a writer updates (not all of [`RelayMetrics`]: this
    /// struct lives in every player connection's task).
    frames_out: Counter,
    slow_clients: Counter,
    dropped: Family<KindLabel, Counter>,
    movement_datagrams: Counter,
    movement_failed: Counter,
    movement_repeats: Counter,
    /// The newest movement datagram sent (its number and bytes), for a repeat.
    last_movement: Option<(u64, Bytes)>,
    /// The path's packet loss, sampled from quinn's counters.
    loss: LossMeter,
    session: SessionId,
    /// Drops already counted: expired and evicted, per class.
    counted: [[u64; EventClass::COUNT]; 2],
}

impl Writer {
    fn too_slow(&self) -> Poll<()> {
        close_too_slow(&self.conn, &self.slow_clients, self.session);
        Poll::Ready(())
    }

    /// A writer for `conn`, draining `outbox`.
    pub(crate) fn new(
        conn: Connection,
        outbox: Arc<Outbox>,
        metrics: &RelayMetrics,
        session: SessionId,
    ) -> Self {
        Self {
            conn,
            outbox,
            lanes: Default::default(),
            frames_out: metrics.frames_out.clone(),
            slow_clients: metrics.slow_clients.clone(),
            dropped: metrics.dropped.clone(),
            movement_datagrams: metrics.movement_datagrams.clone(),
            movement_failed: metrics.movement_datagrams_failed.clone(),
            movement_repeats: metrics.movement_repeats.clone(),
            last_movement: None,
            loss: LossMeter::default(),
            session,
            counted: Default::default(),
        }
    }

    /// Drives the writer; `Ready` when the connection broke, the outbox closed
    /// or the client was too slow (then the connection is closed).
    pub(crate) fn poll(&mut self, cx: &mut Context<'_>, mut timer: Pin<&mut Sleep>) -> Poll<()> {
        // Woken by every push; registered before looking, so none is missed.
        self.outbox.waker.register(cx.waker());
        let deadline = loop {
            // Quinn is written to without the outbox locked: producers (the relay's
            // actor among them) never wait for this connection's writes.
            for class in EventClass::ALL {
                if let Poll::Ready(Err(Broken)) =
                    self.lanes[class.rank()].poll_flush(cx, &self.conn, class)
                {
                    return Poll::Ready(());
                }
            }
            let (handed, stats, deadline, datagrams) = {
                let Ok(mut st) = self.outbox.state.lock() else {
                    return Poll::Ready(());
                };
                match st.stopped {
                    Some(Refused::Full) => {
                        drop(st);
                        return self.too_slow();
                    }
                    Some(Refused::Closed) => return Poll::Ready(()),
                    None => {}
                }
                let now = Instant::now().into_std();
                if st.sched.poll_timeout().is_some_and(|d| d <= now) {
                    st.sched.handle_timeout(now);
                }
                let lanes = &mut self.lanes;
                let mut handed = 0;
                while let Some(o) = st
                    .sched
                    .poll_next_ready(now, |c| lanes[c.rank()].pending.is_none())
                {
                    lanes[o.class.rank()].pending = Some(o.bytes);
                    handed += 1;
                }
                let mut deadline = st.sched.poll_timeout();
                let mut datagrams = Vec::new();
                let mut repeat = None;
                if let Some(view) = st.movement.as_mut() {
                    if let Some(loss) = self.loss.sample(&self.conn, now) {
                        view.handle_path_loss(loss);
                    }
                    view.handle_timeout(now);
                    // At most two datagrams waiting in quinn: beyond that the
                    // path is congested and what waits would only go stale.
                    let queued =
                        DATAGRAM_SEND_BUFFER.saturating_sub(self.conn.datagram_send_buffer_space());
                    let room = self.conn.max_datagram_size().unwrap_or(0);
                    // A repeat only on an idle path: one whose datagrams wait
                    // is congested, and its losses are the queue's (a copy
                    // would take the bandwidth the next state needs).
                    // (quinn counts a bookkeeping record as used even when
                    // empty: "nothing waits" is under 128 bytes.)
                    repeat = view.poll_repeat(now).filter(|_| queued < 128);
                    let polled = room > 0 && queued + room <= 2 * MAX_DATAGRAM;
                    if polled {
                        if let Some(d) = view.poll_datagram(now) {
                            datagrams.push(d);
                        }
                    }
                    // While quinn's queue is full the view is not polled, so a
                    // due budget refill would wake this task at once, again and
                    // again: look again in 5 ms instead (quinn has no signal
                    // for datagram room; the next tick's states wake it too).
                    let floor = now
                        + if polled {
                            std::time::Duration::from_millis(1)
                        } else {
                            std::time::Duration::from_millis(5)
                        };
                    let next = view.poll_timeout().map(|t| t.max(floor));
                    deadline = match (deadline, next) {
                        (Some(a), Some(b)) => Some(a.min(b)),
                        (a, b) => a.or(b),
                    };
                }
                (handed, *st.sched.stats(), deadline, (datagrams, repeat))
            };
            let (datagrams, repeat) = datagrams;
            let sent_datagram = !datagrams.is_empty();
            if let (Some(seq), Some((last, bytes))) = (repeat, &self.last_movement) {
                if seq == *last && self.conn.send_datagram(bytes.clone()).is_ok() {
                    self.movement_repeats.inc();
                }
            }
            for d in datagrams {
                let seq = d.seq;
                // Larger than the path allows (the view sizes for the
                // protocol's limit) or datagrams refused: counted; the states
                // go again after the resend time.
                let sent = encode_datagram(&ServerMsg::Movement(d))
                    .ok()
                    .filter(|bytes| self.conn.send_datagram(bytes.clone()).is_ok());
                if let Some(bytes) = sent {
                    self.movement_datagrams.inc();
                    self.last_movement = Some((seq, bytes));
                } else {
                    self.movement_failed.inc();
                }
            }
            self.frames_out.inc_by(handed);
            self.count_drops(&stats);
            if handed == 0 && !sent_datagram {
                break deadline;
            }
            // Go round to start writing what was just handed out (registers the
            // waker where a stream is blocked).
        };
        if let Some(deadline) = deadline {
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
    fn count_drops(&mut self, st: &SchedulerStats) {
        for c in EventClass::ALL {
            let r = c.rank();
            for (k, (reason, total)) in [("expired", st.expired[r]), ("evicted", st.evicted[r])]
                .into_iter()
                .enumerate()
            {
                let n = total - self.counted[k][r];
                if n > 0 {
                    self.dropped
                        .get_or_create(&KindLabel {
                            kind: format!("{reason}_{c}"),
                        })
                        .inc_by(n);
                    self.counted[k][r] = total;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::{Wake, Waker};

    use super::*;

    fn msg(class: EventClass, n: u8) -> Outgoing {
        Outgoing {
            class,
            session: SessionId(1),
            entity: None,
            droppable: true,
            bytes: Bytes::from(vec![n]),
        }
    }

    #[derive(Default)]
    struct CountingWaker(AtomicUsize);

    impl Wake for CountingWaker {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn pushes_wake_the_writer_and_come_out_by_priority() {
        let outbox = Outbox::new(SchedulerConfig::default(), MovementConfig::default());
        let counter = Arc::new(CountingWaker::default());
        let waker = Waker::from(counter.clone());
        let mut cx = Context::from_waker(&waker);
        assert!(outbox.poll_next(&mut cx).is_pending());
        outbox.push(msg(EventClass::Bulk, 1)).unwrap();
        outbox.push(msg(EventClass::Critical, 2)).unwrap();
        assert!(
            counter.0.load(Ordering::SeqCst) >= 1,
            "a push wakes the writer"
        );
        let Poll::Ready(Ok(first)) = outbox.poll_next(&mut cx) else {
            panic!("a message is waiting")
        };
        assert_eq!(first.bytes[..], [2], "critical before bulk");
        let Poll::Ready(Ok(second)) = outbox.poll_next(&mut cx) else {
            panic!("a message is waiting")
        };
        assert_eq!(second.bytes[..], [1]);
        assert!(outbox.poll_next(&mut cx).is_pending());
    }

    #[test]
    fn a_full_reliable_class_stops_the_outbox_as_too_slow() {
        let mut cfg = SchedulerConfig::default();
        cfg.capacity[EventClass::Critical.rank()] = 2;
        let outbox = Outbox::new(cfg, MovementConfig::default());
        outbox.push(msg(EventClass::Critical, 1)).unwrap();
        outbox.push(msg(EventClass::Critical, 2)).unwrap();
        assert_eq!(
            outbox.push(msg(EventClass::Critical, 3)),
            Err(Refused::Full)
        );
        // Everything after is refused the same way, and the writer sees why.
        assert_eq!(outbox.push(msg(EventClass::Chat, 4)), Err(Refused::Full));
        let mut cx = Context::from_waker(Waker::noop());
        assert!(matches!(
            outbox.poll_next(&mut cx),
            Poll::Ready(Err(Refused::Full))
        ));
        // Closing later does not hide the overflow.
        outbox.close();
        assert_eq!(outbox.push(msg(EventClass::Chat, 5)), Err(Refused::Full));
    }

    #[test]
    fn a_closed_outbox_refuses_and_ends_its_writer() {
        let outbox = Outbox::new(SchedulerConfig::default(), MovementConfig::default());
        outbox.push(msg(EventClass::State, 1)).unwrap();
        outbox.close();
        assert_eq!(outbox.push(msg(EventClass::State, 2)), Err(Refused::Closed));
        let mut cx = Context::from_waker(Waker::noop());
        assert!(matches!(
            outbox.poll_next(&mut cx),
            Poll::Ready(Err(Refused::Closed))
        ));
    }

    #[test]
    fn lossy_classes_evict_instead_of_overflowing() {
        let mut cfg = SchedulerConfig::default();
        cfg.capacity[EventClass::Bulk.rank()] = 1;
        let outbox = Outbox::new(cfg, MovementConfig::default());
        for n in 0..10 {
            outbox.push(msg(EventClass::Bulk, n)).unwrap();
        }
        let mut cx = Context::from_waker(Waker::noop());
        let Poll::Ready(Ok(kept)) = outbox.poll_next(&mut cx) else {
            panic!("the newest bulk message is kept")
        };
        assert_eq!(kept.bytes[..], [9]);
    }
}
