//! The downstream lanes of one relay link: lane 0 (control, results,
//! subscriptions, replays; highest priority) and `lanes` batch lanes sharded by
//! channel, each drained into its own QUIC stream by its own writer task. A
//! link's lanes share one byte budget.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use quinn::Connection;
use skylane_proto::ChannelId;
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

fn lane_priority(lane: usize) -> i32 {
    if lane == 0 {
        10
    } else {
        5
    }
}

pub(crate) async fn write_lane(
    conn: Connection,
    lane: usize,
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
        let _ = s.set_priority(lane_priority(lane));
        if s.write_all(&frame).await.is_err() {
            return;
        }
        rx.written(len);
    }
}

pub(crate) fn lane_of(channel: ChannelId, lanes: usize) -> usize {
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

    #[tokio::test]
    async fn a_lane_whose_writer_stopped_refuses_without_spending_budget() {
        let budget = Arc::new(AtomicUsize::new(0));
        let (a, qa) = DownLane::new(budget.clone());
        drop(qa);
        assert_eq!(a.push(bytes(10), 1000), Err(LaneRefused::Closed));
        assert_eq!((a.queued(), a.link_queued()), (0, 0));
    }
}
