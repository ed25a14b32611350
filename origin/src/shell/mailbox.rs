//! The actor's mailbox and the origin's clock.

use quinn::Connection;
use skylane_proto::{LinkMsg, RelayId, WorldId, WorldState};
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
    /// An operator asks for the world's state.
    Status(tokio::sync::oneshot::Sender<OriginStatus>),
    /// The world's owner epoch changed (re-claimed under a new lease): tell
    /// every relay.
    Epoch(u64),
    /// End the game now (an operator, or the control plane).
    End(String),
    /// Stop the world's task (flushing its journal).
    Stop,
    /// A standby connected and asks to follow (it knows `epoch`).
    StandbyUp {
        id: u64,
        node: String,
        epoch: u64,
        link: super::replication::StandbyLink,
    },
    /// A standby re-executed `tick` to `hash`.
    StandbyAck {
        id: u64,
        tick: u64,
        hash: skylane_proto::Hash32,
        epoch: u64,
        cosigs: Vec<skylane_proto::CoSig>,
    },
    /// A standby's re-execution disagreed.
    StandbyDiverged {
        id: u64,
        evidence: Box<skylane_proto::Evidence>,
    },
    /// A standby's connection ended.
    StandbyDown {
        id: u64,
    },
    /// A message from another zone's owner (zone link).
    Zone(Box<skylane_proto::zones::ZoneMsg>),
    /// Stop ticking and answer once a standby acknowledged the last tick
    /// (its tick), so the world can move there without a gap.
    Handover(tokio::sync::oneshot::Sender<Result<u64, String>>),
}

/// What a world's task reports to whoever runs the origin (the cluster agent).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WorldEvent {
    /// The world's lifecycle changed (epoch filled in).
    Phase(WorldState),
    /// A standby disagreed with the world's state at `tick`: it is suspect.
    Suspect {
        /// The world's state now.
        state: WorldState,
        /// The first tick a standby disagreed on.
        tick: u64,
    },
    /// A player was kicked with a cool-down or banned: the cluster agent puts
    /// it on the control plane's ban list (every relay refuses it).
    Sanction {
        /// The player (the token's subject).
        subject: String,
        /// Until when and why.
        ban: skylane_control::Ban,
    },
    /// The world's task stopped (removed, or failed with the error).
    Stopped {
        /// World.
        world: WorldId,
        /// Its failure, if it failed.
        error: Option<String>,
    },
}

/// Where worlds report lifecycle events: the cluster agent once one joined.
/// Before that nobody listens, and nothing is kept (a static origin's joins
/// and leaves would otherwise pile up forever).
#[derive(Clone, Default)]
pub(crate) struct Events(
    std::sync::Arc<std::sync::OnceLock<tokio::sync::mpsc::UnboundedSender<WorldEvent>>>,
);

impl Events {
    /// Reports `e` to the listener, if there is one.
    pub(crate) fn send(&self, e: WorldEvent) {
        if let Some(tx) = self.0.get() {
            let _ = tx.send(e);
        }
    }

    /// Whether someone listens.
    pub(crate) fn listened(&self) -> bool {
        self.0.get().is_some()
    }

    /// Starts listening (once: `None` when someone already does).
    pub(crate) fn listen(&self) -> Option<tokio::sync::mpsc::UnboundedReceiver<WorldEvent>> {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        self.0.set(tx).ok()?;
        Some(rx)
    }
}

/// An origin's state as `/status` shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct OriginStatus {
    /// The world.
    pub world: u64,
    /// Its game.
    pub game: String,
    /// Its phase (`waiting`, `playing`, `ended`).
    pub phase: String,
    /// Players in it.
    pub players: u32,
    /// Most players it holds (0: unbounded).
    pub capacity: u32,
    /// The owner epoch this origin holds it at (0 outside a control plane).
    pub epoch: u64,
    /// The last completed tick.
    pub tick: u64,
    /// The world's state hash now (hex).
    pub state_hash: String,
    /// Sessions attached to a relay or waiting for one.
    pub sessions: usize,
    /// Relay links up.
    pub relays: usize,
    /// Standbys following the world, each `node@acked-tick`.
    pub standbys: Vec<String>,
    /// Acknowledgements each tick needs before its outputs leave.
    pub min_acks: usize,
    /// Ticks the slowest following standby is behind the world (0 without
    /// standbys).
    pub lag_ticks: u64,
    /// Replication log bytes sent and not yet acknowledged by every standby.
    #[serde(default)]
    pub lag_bytes: u64,
    /// The highest tick a standby re-executed to this origin's hash.
    pub verified_tick: u64,
    /// The first tick a standby disagreed on, if any (the world is suspect).
    pub diverged_at: Option<u64>,
    /// The entities whose state differed from the standby's copy (raw
    /// entity ids), once the standby compared both states: empty before, or
    /// when only the state hash differed.
    #[serde(default)]
    pub diverged_entities: Vec<u64>,
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
