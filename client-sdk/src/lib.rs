//! `skylane-client`: the library games link against to play through Skylane relays.
//!
//! ```no_run
//! # async fn demo(token: String, ca_pem: &str) -> Result<(), skylane_client::ClientError> {
//! use skylane_client::{Client, ClientEvent};
//! use skylane_proto::{EventClass, WorldId};
//!
//! let mut client = Client::builder()
//!     .token(token)
//!     .world(WorldId(1))
//!     .relays(["127.0.0.1:4433".parse().unwrap()])
//!     .ca_pem(ca_pem)
//!     .connect()
//!     .await?;
//! let outcome = client.act(EventClass::State, vec![], vec![1, 2, 3].into()).await?;
//! println!("{outcome:?}");
//! while let Some(ev) = client.next_event().await {
//!     if let ClientEvent::Event(e) = ev {
//!         println!("{} #{}: {} bytes", e.channel, e.seq, e.payload.len());
//!     }
//! }
//! # Ok(()) }
//! ```
//!
//! What it does for the game:
//! * **Relay choice:** probes the candidate relays (a bootstrap list, or a relay's
//!   GeoIP directory answer) in parallel with QUIC handshakes and keeps the one
//!   with the lowest RTT; while connected, re-probes them and moves to one that
//!   is clearly faster for a sustained time ([`RelayChoice`], hysteresis), resuming
//!   the session without loss.
//! * **Typed send and receive:** [`Client::act`] returns the origin's
//!   [`Outcome`](skylane_proto::Outcome) (applied, conflict with the current state, or rejected with a
//!   reason); [`Client::next_event`] (or the [`Client::events`] stream) yields
//!   events exactly once, in order per channel (see [`Ordering`]).
//! * **Reconnect and resume:** on a lost connection it reconnects with exponential
//!   backoff and jitter and resumes its session with the last sequence number per
//!   channel, so nothing is lost or repeated; it follows a relay's go-away.
//! * **Clock sync:** NTP-style offset against the relay clock with an error
//!   bound ([`clock`]), used for per-class latency statistics (hdrhistogram).
//! * **Movement as state:** [`Client::entity`] gives each entity's latest
//!   movement state and the one before (latest wins), and
//!   [`movement::Track::at`] interpolates between them for rendering.
//! * **Matchmaking:** [`Matchmaker`] measures the relays, queues a ticket
//!   and waits for the match; [`ClientBuilder::matched`] connects to it.
//! * **Spectators:** [`Spectator`] watches a delayed, filtered feed with the
//!   same reconnect behaviour.
//!
//! Runnable examples: `client-sdk/examples/bot.rs` (a player) and
//! `client-sdk/examples/spectator.rs`; the README shows how to run them against
//! a local origin and relay.
//! * **Tamper evidence:** with the origin's public key it verifies every batch's
//!   hash chain and signature; a broken chain is reported as
//!   [`ClientError::Chain`].

#![cfg_attr(not(test), warn(clippy::unwrap_used))]

mod builder;
mod choice;
mod client;
mod content;
mod driver;
pub mod matchmaker;
pub mod movement;
mod order;
mod probe;
mod spectator;

use std::net::SocketAddr;

use skylane_proto::{
    ChainError, ChannelCursor, ChannelId, ErrorCode, Event, EventClass, FeedFrame, Keyframe,
    RefusalCode, SessionId, SkippedRange, WorldState,
};

pub use builder::{ClientBuilder, TokenFuture, TokenProvider};

/// A token expiring within this much is replaced (from the
/// [`ClientBuilder::token_provider`]) before a hello.
pub const TOKEN_REFRESH_MARGIN: std::time::Duration = std::time::Duration::from_secs(30);
pub use choice::{ChoiceConfig, RelayChoice};
pub use client::{Client, Events};
pub use content::ContentFetchError;
pub use skylane_proto::clock::{self, ClockSync, Estimate, Sample};

/// Samples a client takes at one per second before it slows to its configured
/// ping interval.
pub const WARM_UP_SAMPLES: usize = 8;
pub use matchmaker::{MatchError, Matchmaker, Queued};
pub use order::{OrderStats, Ordering, Released};
pub use probe::{probe, Probe, ProbeError, ProbeSample};
pub use spectator::{Spectator, SPECTATOR_PING_INTERVAL};

/// What a game programmer must handle.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ClientError {
    /// The relay refused the token or the session (bad or expired token, wrong
    /// role, world not allowed, resume rejected).
    #[error("refused ({code:?}): {reason}")]
    Refused {
        /// Machine-readable cause.
        code: RefusalCode,
        /// Detail.
        reason: String,
    },
    /// No origin hosts the world.
    #[error("unknown world: {0}")]
    UnknownWorld(String),
    /// The relay speaks another protocol version.
    #[error("protocol version mismatch: {0}")]
    VersionMismatch(String),
    /// No relay could be reached.
    #[error("no relay reachable: {0}")]
    RelayUnreachable(String),
    /// The connection was lost before the answer arrived (the action may or may
    /// not have been applied; its sequence number protects against a double
    /// apply if the game resends it).
    #[error("connection lost")]
    ConnectionLost,
    /// The client was closed.
    #[error("client closed")]
    Closed,
    /// An event batch failed verification (forged, reordered or dropped upstream).
    #[error("event chain broken: {0}")]
    Chain(#[from] ChainError),
    /// A spectator frame failed verification against the origin's key (an
    /// event the origin did not sign, or no signature at all).
    #[error("spectator feed: {0}")]
    Feed(#[from] skylane_proto::FeedError),
    /// The builder is missing something or was given something unusable.
    #[error("configuration: {0}")]
    Config(String),
    /// The token provider failed (retried like an unreachable relay).
    #[error("token provider: {0}")]
    TokenProvider(String),
    /// The relay refused a request on a live session (a spectator feed with a
    /// delay past the relay's maximum, a player token asking for the spectator
    /// feed...).
    #[error("request refused ({code:?}): {message}")]
    Request {
        /// Machine-readable cause.
        code: ErrorCode,
        /// Detail.
        message: String,
    },
}

impl ClientError {
    fn from_refusal(code: RefusalCode, reason: String) -> Self {
        match code {
            RefusalCode::UnknownWorld => Self::UnknownWorld(reason),
            RefusalCode::VersionMismatch => Self::VersionMismatch(reason),
            _ => Self::Refused { code, reason },
        }
    }

    /// Whether trying again (another relay, later) can help: unreachable
    /// relays, a lost connection, an overloaded or draining relay.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Self::RelayUnreachable(_)
                | Self::ConnectionLost
                | Self::TokenProvider(_)
                | Self::Refused {
                    code: RefusalCode::Overloaded | RefusalCode::Draining,
                    ..
                }
        )
    }
}

/// What [`Client::next_event`] yields.
#[derive(Debug, Clone, PartialEq)]
pub enum ClientEvent {
    /// A game event, exactly once and in order within its channel.
    Event(Event),
    /// A channel's full state (start, checkpoint, or resync after a gap).
    Keyframe(Keyframe),
    /// The channels this session receives changed.
    Subscriptions {
        /// Added, each with the last sequence number before its first event.
        added: Vec<ChannelCursor>,
        /// Removed.
        removed: Vec<ChannelId>,
    },
    /// Connected (first time, after a reconnect, or after moving relay).
    Connected {
        /// The relay.
        relay: SocketAddr,
        /// The session.
        session: SessionId,
        /// Whether an earlier session was resumed.
        resumed: bool,
    },
    /// The connection was lost; the client is reconnecting.
    Disconnected {
        /// Why.
        reason: String,
    },
    /// A relay asked the client to move (drain); it is moving.
    GoAway {
        /// Where it goes.
        to: Option<SocketAddr>,
    },
    /// Another relay has been clearly faster for the hysteresis window (see
    /// [`ClientBuilder::reprobe`]); the client is moving there, resuming its
    /// session without losing events.
    Switching {
        /// The relay it leaves.
        from: SocketAddr,
        /// The relay it goes to.
        to: SocketAddr,
    },
    /// A frame of the spectator feed (spectator sessions, see [`Spectator`]).
    Spectate(FeedFrame),
    /// The session was resumed but not exactly: it had expired at the origin
    /// (the client was away longer than the grace period) and was joined
    /// afresh. The events in these ranges were never delivered and never will
    /// be; a game should resynchronise from the keyframes that follow.
    ResumeIncomplete {
        /// Per channel, the sequence numbers lost.
        skipped: Vec<SkippedRange>,
    },
    /// The world's lifecycle changed (waiting for players, playing, ended with a
    /// result); also sent once after every welcome.
    World(WorldState),
    /// An entity's newer movement state (latest wins: never an older one
    /// after a newer, and a lost one is simply superseded). Also in
    /// [`Client::entity`].
    Movement(MovementUpdate),
    /// A non-retryable error; the client stopped.
    Error(ClientError),
}

/// An entity's movement state, as [`ClientEvent::Movement`] hands it over.
#[derive(Debug, Clone, PartialEq)]
pub struct MovementUpdate {
    /// The entity.
    pub entity: skylane_proto::EntityId,
    /// The cell it is in.
    pub channel: ChannelId,
    /// The world tick it was true at.
    pub tick: u64,
    /// The origin's clock then, microseconds since the Unix epoch.
    pub origin_time_us: u64,
    /// Where it is.
    pub pos: (f32, f32),
    /// The game's encoding of the state.
    pub payload: skylane_proto::Payload,
}

/// Latency percentiles of one class, in microseconds (origin tick to receipt,
/// through the synchronised clock).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LatencySummary {
    /// Events measured.
    pub count: u64,
    /// Median.
    pub p50_us: u64,
    /// 99th percentile.
    pub p99_us: u64,
    /// 99.9th percentile.
    pub p999_us: u64,
    /// Maximum.
    pub max_us: u64,
}

/// Counters and latency of a client.
#[derive(Debug, Clone, Default)]
pub struct ClientStats {
    /// Events received (after de-duplication).
    pub events: u64,
    /// Keyframes received.
    pub keyframes: u64,
    /// Movement datagrams received (each acknowledged).
    pub movement_datagrams: u64,
    /// Movement states taken (newer than the one held: latest wins).
    pub movement_updates: u64,
    /// Movement groups refused: their origin signature did not verify (a
    /// relay forged or altered a state); with [`ClientBuilder::origin_key`].
    pub movement_rejected: u64,
    /// Connections made after the first.
    pub reconnects: u64,
    /// Fresh tokens fetched from the token provider.
    pub token_refreshes: u64,
    /// Relay moves following a go-away.
    pub moves: u64,
    /// Relay moves because another relay was clearly faster (re-probing).
    pub switches: u64,
    /// Reordering and de-duplication counters.
    pub order: OrderStats,
    /// Latency per class, indexed by [`EventClass::rank`].
    pub latency: [LatencySummary; EventClass::COUNT],
    /// Current clock offset estimate (relay minus client), microseconds.
    pub clock_offset_us: Option<i64>,
    /// The clock offset is within this many microseconds of the truth.
    pub clock_error_us: Option<u64>,
    /// RTT of the fastest clock sample, microseconds.
    pub rtt_us: Option<u64>,
    /// Spectator feed frames received.
    pub spectator_frames: u64,
    /// Of those, checked against the origin's key (with
    /// [`ClientBuilder::origin_key`]): every event one the origin signed. The
    /// reduced mode's coalesced deltas are unsigned and not counted here.
    pub spectator_frames_verified: u64,
    /// Resumes that could not be exact (see [`ClientEvent::ResumeIncomplete`]).
    pub resumes_incomplete: u64,
    /// Events those resumes lost.
    pub events_lost_on_resume: u64,
    /// Signed batches (checkpoints) co-signed by a trusted standby: two servers
    /// attested them (with [`ClientBuilder::cosigner_key`]).
    pub attested_checkpoints: u64,
    /// Signed batches without a standby's co-signature while standby keys are
    /// trusted (no standby followed the world when they left its origin).
    pub unattested_checkpoints: u64,
}
