//! The actor's mailbox and the origin's clock.

use quinn::Connection;
use skylane_proto::{LinkMsg, RelayId};
use tokio::time::Instant;

use super::lanes::DownLane;

/// What the link tasks tell the actor.
pub(crate) enum Cmd {
    RelayUp {
        id: u64,
        relay: RelayId,
        conn: Connection,
        lanes: Vec<DownLane>,
    },
    RelayDown {
        id: u64,
    },
    Msg {
        id: u64,
        msg: LinkMsg,
    },
    BadFrame {
        id: u64,
        label: &'static str,
    },
    /// An operator asks for the world's state.
    Status(tokio::sync::oneshot::Sender<OriginStatus>),
}

/// An origin's state as `/status` shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct OriginStatus {
    /// The world.
    pub world: u64,
    /// The last completed tick.
    pub tick: u64,
    /// The world's state hash now (hex).
    pub state_hash: String,
    /// Sessions attached to a relay or waiting for one.
    pub sessions: usize,
    /// Relay links up.
    pub relays: usize,
    /// When this process started serving, microseconds since the Unix epoch:
    /// counters reset when it changes (a restart).
    pub started_unix_us: u64,
}

/// The origin's clock: microseconds since the Unix epoch, read from a monotonic
/// instant so that netsim's paused time drives it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Clock {
    pub(crate) base_unix_us: u64,
    pub(crate) start: Instant,
}

impl Clock {
    pub(crate) fn now_us(&self) -> u64 {
        self.base_unix_us + self.start.elapsed().as_micros() as u64
    }
}
