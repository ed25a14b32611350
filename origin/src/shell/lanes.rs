//! The downstream lanes of one relay link, each drained into its own QUIC
//! stream by its own writer task, and class-aware: lane 0 (control, results,
//! subscriptions, replays; priority 10), `lanes` lanes for batches whose most
//! urgent event is critical or state and for keyframes, sharded by channel
//! (priority 8), then one lane for movement (frames, and batches of chained
//! movement events; 6), one for chat (4) and one for bulk (2). QUIC sends a
//! higher-priority stream's data first, so a burst of movement or bulk from the
//! origin never delays a critical event of another channel towards the relay;
//! within a channel the chain's order holds (the relay's hub puts a channel's
//! batches back in sequence). A link's lanes share one byte budget.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use quinn::Connection;
use skylane_proto::{ChannelId, EventClass};
use tokio::sync::mpsc;

/// One downstream lane of a relay link: frames waiting for the lane's writer task.
/// The lanes of a link count their queued bytes in one shared budget, so a link
/// costs at most [`ServerConfig::link_queue_bytes`] however its traffic is spread.
#[derive(Clone)]
pub(crate) struct DownLane {
    tx: mpsc::UnboundedSender<Bytes>,
    /// Bytes queued on all lanes of this link.
    link: Arc<AtomicUsize>,
    /// Bytes queued on this lane.
    own: Arc<AtomicUsize>,
}

/// Why a lane did not take a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LaneRefused {
    /// The link's byte budget is spent.
    Full,
    /// The lane's writer has stopped (the connection is closing).
    Closed,
}

impl DownLane {
    /// A lane sharing the `link` budget, and the receiving end for its writer.
    pub(crate) fn new(link: Arc<AtomicUsize>) -> (Self, DownLaneQueue) {
        let (tx, rx) = mpsc::unbounded_channel();
        let own = Arc::new(AtomicUsize::new(0));
        let queue = DownLaneQueue {
            rx,
            link: link.clone(),
            own: own.clone(),
        };
        (Self { tx, link, own }, queue)
    }

    /// Queues `frame` unless the link would then hold more than `limit` bytes.
    pub(crate) fn push(&self, frame: Bytes, limit: usize) -> Result<(), LaneRefused> {
        let len = frame.len();
        if self.link.fetch_add(len, Ordering::AcqRel) + len > limit {
            self.link.fetch_sub(len, Ordering::AcqRel);
            return Err(LaneRefused::Full);
        }
        self.own.fetch_add(len, Ordering::AcqRel);
        self.tx.send(frame).map_err(|_| {
            self.link.fetch_sub(len, Ordering::AcqRel);
            self.own.fetch_sub(len, Ordering::AcqRel);
            LaneRefused::Closed
        })
    }

    /// Bytes queued on this lane.
    pub(crate) fn queued(&self) -> usize {
        self.own.load(Ordering::Acquire)
    }

    /// Bytes queued on the whole link.
    pub(crate) fn link_queued(&self) -> usize {
        self.link.load(Ordering::Acquire)
    }
}

/// The writer's end of a [`DownLane`]: releases each frame's bytes from the budget
/// once quinn has taken it.
pub(crate) struct DownLaneQueue {
    rx: mpsc::UnboundedReceiver<Bytes>,
    link: Arc<AtomicUsize>,
    own: Arc<AtomicUsize>,
}

impl DownLaneQueue {
    async fn recv(&mut self) -> Option<Bytes> {
        self.rx.recv().await
    }

    fn written(&self, len: usize) {
        self.link.fetch_sub(len, Ordering::AcqRel);
        self.own.fetch_sub(len, Ordering::AcqRel);
    }
}

/// Lanes of a link with `lanes` critical/state shards: control, the shards,
/// movement, chat, bulk.
pub(crate) fn lane_count(lanes: usize) -> usize {
    lanes.max(1) + 4
}

/// The QUIC stream priority of lane `lane` of a link with `lanes` shards.
pub(crate) fn lane_priority(lane: usize, lanes: usize) -> i32 {
    let lanes = lanes.max(1);
    match lane {
        0 => 10,
        l if l <= lanes => 8,
        l if l == lanes + 1 => 6,
        l if l == lanes + 2 => 4,
        _ => 2,
    }
}

/// The lane of what goes to `channel` with `class` as its most urgent event.
pub(crate) fn lane_for(channel: ChannelId, class: EventClass, lanes: usize) -> usize {
    let lanes = lanes.max(1);
    match class {
        EventClass::Critical | EventClass::State => lane_of(channel, lanes),
        EventClass::Movement => lanes + 1,
        EventClass::Chat => lanes + 2,
        EventClass::Bulk => lanes + 3,
    }
}

pub(crate) async fn write_lane(
    conn: Connection,
    priority: i32,
    stream: Option<quinn::SendStream>,
    mut rx: DownLaneQueue,
) {
    let mut stream = stream;
    while let Some(frame) = rx.recv().await {
        let len = frame.len();
        if stream.is_none() {
            match conn.open_uni().await {
                Ok(s) => stream = Some(s),
                Err(_) => return,
            }
        }
        let Some(s) = stream.as_mut() else { return };
        let _ = s.set_priority(priority);
        if s.write_all(&frame).await.is_err() {
            return;
        }
        rx.written(len);
    }
}

fn lane_of(channel: ChannelId, lanes: usize) -> usize {
    let h = match channel {
        ChannelId::World => 0,
        ChannelId::Team(t) => 7919 * u64::from(t.0) + 1,
        ChannelId::Cell { x, y } => u64::from(x) * 31 + u64::from(y) * 1_000_003 + 2,
    };
    1 + (h % lanes.max(1) as u64) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(n: usize) -> Bytes {
        Bytes::from(vec![0u8; n])
    }

    #[tokio::test]
    async fn lanes_share_one_byte_budget_released_as_frames_are_written() {
        let budget = Arc::new(AtomicUsize::new(0));
        let (a, mut qa) = DownLane::new(budget.clone());
        let (b, _qb) = DownLane::new(budget.clone());
        assert_eq!(a.push(bytes(600), 1000), Ok(()));
        assert_eq!(b.push(bytes(300), 1000), Ok(()));
        // 600 + 300 + 200 > 1000: refused whichever lane it is for, nothing counted.
        assert_eq!(b.push(bytes(200), 1000), Err(LaneRefused::Full));
        assert_eq!(a.push(bytes(200), 1000), Err(LaneRefused::Full));
        assert_eq!((a.queued(), b.queued(), a.link_queued()), (600, 300, 900));
        // The writer takes a frame and releases its bytes once written.
        let f = qa.recv().await.expect("queued frame");
        qa.written(f.len());
        assert_eq!((a.queued(), a.link_queued()), (0, 300));
        assert_eq!(b.push(bytes(200), 1000), Ok(()));
    }

    #[test]
    fn classes_get_their_own_lanes_in_priority_order() {
        let cell = ChannelId::Cell { x: 3, y: 4 };
        let l = |c| lane_for(cell, c, 8);
        // Critical and state share the channel's shard (their order is the chain's).
        assert_eq!(l(EventClass::Critical), l(EventClass::State));
        assert!((1..=8).contains(&l(EventClass::Critical)));
        let p = |c| lane_priority(l(c), 8);
        assert!(p(EventClass::Critical) > p(EventClass::Movement));
        assert!(p(EventClass::Movement) > p(EventClass::Chat));
        assert!(p(EventClass::Chat) > p(EventClass::Bulk));
        assert!(lane_priority(0, 8) > p(EventClass::Critical));
        assert_eq!(l(EventClass::Bulk), lane_count(8) - 1);
    }

    #[tokio::test]
    async fn a_lane_whose_writer_stopped_refuses_without_spending_budget() {
        let budget = Arc::new(AtomicUsize::new(0));
        let (a, qa) = DownLane::new(budget.clone());
        drop(qa);
        assert_eq!(a.push(bytes(10), 1000), Err(LaneRefused::Closed));
        assert_eq!((a.queued(), a.link_queued()), (0, 0));
    }
}
