//! `skylane-proto`: the Skylane wire protocol (`skylane/1`).
//!
//! This crate defines what travels between game clients, relays and origins: the
//! messages ([`ClientMsg`], [`ServerMsg`], [`LinkMsg`]), the event classes that decide
//! priority and delivery ([`EventClass`]), the framing on QUIC streams and datagrams
//! ([`codec`]), and the signed session tokens ([`token`]).
//!
//! **Contract.** No I/O, no async runtime, no clock: functions that need the time
//! take it as an argument. Decoding never panics; any byte string yields a message
//! or a typed [`DecodeError`]. Forwarded game payloads are [`Payload`]s, which share
//! the received buffer instead of copying it.
//!
//! # Layout
//! * [`ids`]: numeric identifiers and channels.
//! * [`class`]: event classes and their delivery policies.
//! * [`message`]: every message, grouped by direction.
//! * [`payload`]: zero-copy opaque game bytes.
//! * [`codec`]: frames, datagrams, size limits, decode errors.
//! * [`token`]: JWT issue and offline verification.
//! * [`chain`]: signed, hash-chained event batches (tamper evidence).
//! * [`geo`]: great-circle distances.
//! * [`repl`]: origin-to-origin replication (input log, acknowledgements).
//! * [`matchmaking`]: the matchmaker's HTTP/JSON API types.
//! * [`movement`]: movement as latest-wins state (frames, datagrams, their signatures).
//! * [`zones`]: a world split into static zones, and the zone-to-zone messages (handoffs, mirrors).

// Library code reports errors; tests may unwrap.
#![cfg_attr(not(test), warn(clippy::unwrap_used))]

/// Re-export of `ed25519_dalek`, whose keys [`ChainSigner`] and [`ChainVerifier`] use.
pub use ed25519_dalek;

/// Re-export of the `bytes` crate, whose [`bytes::Bytes`] the API uses.
pub use bytes;

pub mod chain;
pub mod class;
pub mod clock;
pub mod codec;
pub mod content;
pub mod feedsig;
pub mod geo;
pub mod ids;
pub mod matchmaking;
pub mod message;
pub mod movement;
pub mod payload;
pub mod repl;
pub mod replay;
pub mod token;
pub mod zones;

pub use chain::{batch_hash, cosign, ChainError, ChainSigner, ChainVerifier, DEFAULT_SIGN_EVERY};
pub use class::{ClassSet, Coalescing, Delivery, EventClass, UnknownClass};
pub use clock::{ClockSync, Estimate, Sample};
pub use codec::{
    decode_datagram, decode_message, encode_datagram, encode_frame, encode_frame_to_bytes,
    keyframe_frame_as_resync, link_events_to_client_frame, DecodeError, EncodeError, FrameDecoder,
    WireMessage, DEFAULT_MAX_FRAME, MAX_DATAGRAM, MAX_PROBE_PINGS,
};
pub use content::{
    ContentChunk, ContentCode, ContentGet, ContentRefusal, CONTENT_PIECE, MAX_CONTENT_WINDOW,
};
pub use feedsig::{feed_event_hash, sign_feed, verify_feed, FeedError, FeedProof};
pub use ids::{ChannelId, EntityId, RelayId, SessionId, TeamId, WorldId};
pub use message::{
    Action, ActionResult, Area, BandwidthMode, BatchEvent, ChannelCursor, ClientMsg, Delta,
    EntityVersion, ErrorCode, ErrorMsg, Event, EventBatch, FeedEvent, FeedFrame, GoAway, Hash32,
    Hello, Keyframe, LinkMsg, OriginReport, Outcome, PeerMsg, Ping, Pong, Refusal, RefusalCode,
    RejectCode, RelayInfo, ResumeTicket, Sanction, SanctionKind, ServerMsg, SkippedRange,
    SpectatorFilter, SpectatorSubscribe, Welcome, WorldPhase, WorldResult, WorldState, ALPN,
    PEER_ALPN, PROTOCOL_VERSION,
};
pub use movement::{MoveEntry, MoveGroup, MovementDatagram, MovementFrame, MAX_MOVE_STATE};
pub use payload::Payload;
pub use repl::{attestation, CoSig, Evidence, Input, ReplMsg, REPL_ALPN, REPL_MAX_FRAME};
pub use replay::{ReplayWindow, REPLAY_WINDOW};
pub use token::{
    check_pem, unverified_expiry, Claims, Role, TokenError, TokenKeyPair, TokenSigner,
    TokenVerifier,
};
