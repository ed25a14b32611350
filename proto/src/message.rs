//! The messages of protocol `skylane/1`, grouped by direction.
//!
//! * [`ClientMsg`]: client → relay (players and spectators).
//! * [`ServerMsg`]: relay → client.
//! * [`LinkMsg`]: relay ↔ origin and relay ↔ relay, carrying many sessions over
//!   one connection.
//!
//! Field types are chosen for size on the wire (postcard varints, numeric ids) and
//! for zero-copy forwarding ([`Payload`]). `docs/protocol.md` explains each message
//! and the streams that carry it.

use serde::{Deserialize, Serialize};

use crate::class::{ClassSet, EventClass};
use crate::ids::{ChannelId, EntityId, RelayId, SessionId, TeamId, WorldId};
use crate::payload::Payload;
use crate::token::Role;

/// Version of the message set; carried in every frame and in [`Hello`].
pub const PROTOCOL_VERSION: u8 = 7;

/// QUIC ALPN identifier of this protocol version.
pub const ALPN: &[u8] = b"skylane/1";

/// A 32-byte hash (SHA-256), encoded as one byte string rather than 32 fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Hash32(pub [u8; 32]);

impl std::fmt::Display for Hash32 {
    /// Lower-case hex, as logs and `/status` show it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl Serialize for Hash32 {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for Hash32 {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Hash32;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("32 bytes")
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Hash32, E> {
                <[u8; 32]>::try_from(v)
                    .map(Hash32)
                    .map_err(|_| E::invalid_length(v.len(), &self))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Hash32, A::Error> {
                let mut out = [0u8; 32];
                for (i, b) in out.iter_mut().enumerate() {
                    *b = seq
                        .next_element()?
                        .ok_or_else(|| serde::de::Error::invalid_length(i, &self))?;
                }
                Ok(Hash32(out))
            }
        }
        deserializer.deserialize_bytes(V)
    }
}

/// An opaque, relay-issued ticket that lets a session resume on any relay.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResumeTicket(pub Payload);

/// The last sequence number a client has seen on one channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelCursor {
    /// The channel.
    pub channel: ChannelId,
    /// Last sequence number received (events up to and including it were seen).
    pub seq: u64,
}

/// An entity and the version of it that an action read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct EntityVersion {
    /// The entity.
    pub entity: EntityId,
    /// Its version when read; every committed change increments it.
    pub version: u64,
}

/// A relay as advertised to clients (in welcome, go-away and directory answers).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RelayInfo {
    /// Relay id.
    pub id: RelayId,
    /// Region name (for example `eu-west`).
    pub region: String,
    /// Addresses clients may connect to, as `host:port` strings.
    pub addrs: Vec<String>,
    /// Latitude in degrees.
    pub lat: f32,
    /// Longitude in degrees.
    pub lon: f32,
}

/// First message of a client connection, on its control stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hello {
    /// [`PROTOCOL_VERSION`] the client speaks.
    pub version: u8,
    /// Signed JWT (see [`crate::token`]).
    pub token: String,
    /// World to join (must be allowed by the token).
    pub world: WorldId,
    /// Present when resuming an earlier session.
    pub resume: Option<ResumeTicket>,
    /// Last sequence seen per channel, so exactly the missed events are replayed.
    pub last_seen: Vec<ChannelCursor>,
}

/// Accepts a [`Hello`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Welcome {
    /// The session (the same one when resuming).
    pub session: SessionId,
    /// Ticket for a later resume.
    pub resume_ticket: ResumeTicket,
    /// Relay's clock, microseconds since the Unix epoch.
    pub server_time_us: u64,
    /// Other relays the client may probe, nearest first.
    pub suggested_relays: Vec<RelayInfo>,
}

/// Why a connection or request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum RefusalCode {
    /// The token is malformed, forged or signed by an unknown key.
    BadToken,
    /// The token has expired or is not valid yet.
    TokenExpired,
    /// The token's role may not do this (for example a spectator sending actions).
    WrongRole,
    /// No origin hosts the requested world.
    UnknownWorld,
    /// The token does not allow the requested world.
    WorldNotAllowed,
    /// The client speaks a protocol version the relay does not.
    VersionMismatch,
    /// Too many connections or handshakes; try another relay or later.
    Overloaded,
    /// The resume ticket is unknown, expired or for another player.
    ResumeRejected,
    /// The relay is draining; go to one of the suggested relays.
    Draining,
    /// The first message was not a hello.
    ProtocolViolation,
    /// The subject is sanctioned: cooling down after a kick or an edge cut,
    /// or banned; the reason says until when. Not worth retrying before then.
    Sanctioned,
}

/// Refuses a [`Hello`]; the relay closes the connection after sending it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Refusal {
    /// Machine-readable cause.
    pub code: RefusalCode,
    /// Human-readable detail.
    pub reason: String,
}

/// A player's request to change the world.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Action {
    /// Class: decides delivery and priority.
    pub class: EventClass,
    /// Per-session sequence number, strictly increasing; replays are rejected.
    pub seq: u64,
    /// Client clock, microseconds (for timestamp sanity and reaction-time checks).
    pub client_time_us: u64,
    /// Entity versions the action was based on (optimistic concurrency).
    pub reads: Vec<EntityVersion>,
    /// Game-defined parameters.
    pub payload: Payload,
}

/// Why an action was rejected (not a conflict: the action itself is not acceptable).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum RejectCode {
    /// The payload could not be decoded by the game.
    Malformed,
    /// The payload exceeds the class's size limit.
    TooLarge,
    /// The sequence number was already used (replay) or went backwards.
    Replayed,
    /// The client timestamp is implausible.
    BadTimestamp,
    /// The session sent more than its class's rate limit.
    RateLimited,
    /// The world is unknown to this origin.
    UnknownWorld,
    /// The player does not own the entity it acted on.
    NotOwner,
    /// Moved faster than the game allows.
    Speed,
    /// Acted before its cooldown expired.
    Cooldown,
    /// Target out of range.
    Range,
    /// Not enough currency or items.
    Resources,
    /// The session's role may not act (spectators).
    Forbidden,
    /// The player is banned from the world.
    Banned,
    /// A game-specific rule, numbered by the game.
    Game(u16),
    /// A movement older than one already applied for the session (datagrams
    /// arrive out of order): not applied, because the newer position wins. Not a
    /// violation.
    Superseded,
    /// The world is not playing (still waiting for players, or ended).
    NotPlaying,
    /// The action's effect was applied already (a resent accept of a trade
    /// that went through): nothing was applied again. Clients treat it as the
    /// success it was.
    AlreadyApplied,
    /// The acting avatar is being handed to another zone of a zoned world:
    /// nothing was applied (its sequence number is not used up), and the
    /// relay sends the action on to the avatar's new zone. Not a violation.
    Moved,
}

/// The outcome of an [`Action`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Outcome {
    /// Committed at `tick`.
    Applied {
        /// World tick that applied the action.
        tick: u64,
    },
    /// Another action committed first; nothing was applied. The client reconciles
    /// from `current` and `state`.
    Conflict {
        /// Current versions of the entities the action read.
        current: Vec<EntityVersion>,
        /// Game-encoded current state of those entities.
        state: Payload,
    },
    /// Not acceptable; nothing was applied.
    Rejected {
        /// Machine-readable cause.
        code: RejectCode,
        /// Human-readable detail.
        detail: String,
    },
    /// The relay lost its path to the origin after forwarding the action and before
    /// the outcome came back: it may or may not have been applied. The client
    /// learns which from the world's events (or resends it with a new sequence
    /// number after checking).
    Unknown {
        /// Human-readable detail.
        detail: String,
    },
}

/// Answers one [`Action`], matched by its sequence number.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActionResult {
    /// The action's sequence number.
    pub seq: u64,
    /// What happened.
    pub outcome: Outcome,
}

/// One event inside an [`EventBatch`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BatchEvent {
    /// Per-channel sequence number; consecutive within a channel.
    pub seq: u64,
    /// Class (the relay schedules by it).
    pub class: EventClass,
    /// Entity the event is about, when there is one (movement coalesces by it).
    pub entity: Option<EntityId>,
    /// Game-defined body.
    pub payload: Payload,
}

/// The events of one channel for one world tick, signed by the origin.
///
/// A batch is the unit of fan-out: the origin sends it once per relay, and the relay
/// forwards its bytes unchanged to every local subscriber of the channel. The hash
/// chain (`prev_hash`) and the origin's Ed25519 `signature` let any receiver detect a
/// forged, dropped or reordered batch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventBatch {
    /// World.
    pub world: WorldId,
    /// Channel.
    pub channel: ChannelId,
    /// World tick that produced the events.
    pub tick: u64,
    /// Origin clock when the tick ran, microseconds since the Unix epoch.
    pub origin_time_us: u64,
    /// The events, in sequence order.
    pub events: Vec<BatchEvent>,
    /// Hash of the previous batch of this channel (all zero for the first).
    pub prev_hash: Hash32,
    /// Origin's Ed25519 signature (64 bytes; empty when the origin does not sign).
    pub signature: Payload,
    /// A standby's Ed25519 co-signature of a signed batch (a checkpoint): the
    /// standby re-executed the tick and produced this very batch
    /// ([`crate::chain::cosign`]). Empty when no standby attested it. Not
    /// covered by the batch hash.
    pub cosignature: Payload,
}

/// A single event, with its full context (as the client SDK hands it to a game).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// World.
    pub world: WorldId,
    /// Channel.
    pub channel: ChannelId,
    /// World tick.
    pub tick: u64,
    /// Per-channel sequence number.
    pub seq: u64,
    /// Origin clock, microseconds since the Unix epoch.
    pub origin_time_us: u64,
    /// Class.
    pub class: EventClass,
    /// Entity the event is about, if any.
    pub entity: Option<EntityId>,
    /// Game-defined body.
    pub payload: Payload,
}

#[cfg(test)]
mod filter_tests {
    use super::*;

    fn ev(
        class: EventClass,
        team: Option<u16>,
        entity: Option<u64>,
        pos: Option<(f32, f32)>,
    ) -> FeedEvent {
        FeedEvent {
            class,
            entity: entity.map(EntityId),
            team: team.map(TeamId),
            pos,
            payload: Payload::default(),
        }
    }

    #[test]
    fn filters_by_class_team_entity_and_area() {
        let all = SpectatorFilter::all();
        assert!(all.admits(&ev(EventClass::Bulk, Some(1), Some(1), Some((5.0, 5.0)))));
        let f = SpectatorFilter {
            classes: [EventClass::Critical, EventClass::Movement]
                .into_iter()
                .collect(),
            teams: vec![TeamId(1)],
            entities: Vec::new(),
            area: Some(Area {
                min_x: 0.0,
                min_y: 0.0,
                max_x: 10.0,
                max_y: 10.0,
            }),
        };
        assert!(f.admits(&ev(
            EventClass::Movement,
            Some(1),
            Some(3),
            Some((10.0, 0.0))
        )));
        assert!(
            !f.admits(&ev(EventClass::Chat, Some(1), Some(3), Some((1.0, 1.0)))),
            "class"
        );
        assert!(
            !f.admits(&ev(
                EventClass::Movement,
                Some(2),
                Some(3),
                Some((1.0, 1.0))
            )),
            "team"
        );
        assert!(
            !f.admits(&ev(
                EventClass::Movement,
                Some(1),
                Some(3),
                Some((11.0, 1.0))
            )),
            "area"
        );
        assert!(
            f.admits(&ev(EventClass::Critical, None, None, None)),
            "untagged passes"
        );
        let one = SpectatorFilter {
            entities: vec![EntityId(7)],
            ..SpectatorFilter::all()
        };
        assert!(one.admits(&ev(EventClass::State, None, Some(7), None)));
        assert!(!one.admits(&ev(EventClass::State, None, Some(8), None)));
    }
}

impl EventBatch {
    /// The batch's events with their full context.
    pub fn iter_events(&self) -> impl Iterator<Item = Event> + '_ {
        self.events.iter().map(move |e| Event {
            world: self.world,
            channel: self.channel,
            tick: self.tick,
            seq: e.seq,
            origin_time_us: self.origin_time_us,
            class: e.class,
            entity: e.entity,
            payload: e.payload.clone(),
        })
    }
}

/// The full state of one channel at a tick; receivers start or recover from it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Keyframe {
    /// World.
    pub world: WorldId,
    /// Channel.
    pub channel: ChannelId,
    /// Tick the state is taken at.
    pub tick: u64,
    /// Channel sequence number the keyframe corresponds to.
    pub seq: u64,
    /// Game-encoded state.
    pub state: Payload,
}

/// The change of one channel's state since `base_tick`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Delta {
    /// World.
    pub world: WorldId,
    /// Channel.
    pub channel: ChannelId,
    /// Tick after applying the delta.
    pub tick: u64,
    /// Tick of the keyframe or delta this applies to.
    pub base_tick: u64,
    /// Channel sequence number.
    pub seq: u64,
    /// Game-encoded change.
    pub payload: Payload,
}

/// An axis-aligned area of the world map.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Area {
    /// Minimum x.
    pub min_x: f32,
    /// Minimum y.
    pub min_y: f32,
    /// Maximum x.
    pub max_x: f32,
    /// Maximum y.
    pub max_y: f32,
}

/// What a spectator wants to see.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SpectatorFilter {
    /// Classes to receive.
    pub classes: ClassSet,
    /// Teams to follow (empty: all).
    pub teams: Vec<TeamId>,
    /// Entities to follow (empty: all).
    pub entities: Vec<EntityId>,
    /// Area to watch (`None`: the whole world).
    pub area: Option<Area>,
}

impl Area {
    /// Whether `(x, y)` is inside (edges included).
    pub fn contains(&self, x: f32, y: f32) -> bool {
        (self.min_x..=self.max_x).contains(&x) && (self.min_y..=self.max_y).contains(&y)
    }
}

impl SpectatorFilter {
    /// Everything: every class, team, entity and place.
    pub fn all() -> Self {
        Self {
            classes: ClassSet::ALL,
            teams: Vec::new(),
            entities: Vec::new(),
            area: None,
        }
    }

    /// Whether a feed event passes. An event that carries no team, entity or
    /// position (a world-wide announcement) passes the filters on those.
    pub fn admits(&self, e: &FeedEvent) -> bool {
        self.classes.contains(e.class)
            && (self.teams.is_empty() || e.team.is_none_or(|t| self.teams.contains(&t)))
            && (self.entities.is_empty() || e.entity.is_none_or(|x| self.entities.contains(&x)))
            && self
                .area
                .is_none_or(|a| e.pos.is_none_or(|(x, y)| a.contains(x, y)))
    }
}

/// How much of the feed a spectator receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum BandwidthMode {
    /// Every event.
    Full,
    /// Coalesced to `hz` updates per second, latest state per entity.
    Reduced {
        /// Updates per second.
        hz: u16,
    },
    /// Keyframes only.
    KeyframesOnly,
}

/// Starts or changes a spectator feed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SpectatorSubscribe {
    /// World to watch.
    pub world: WorldId,
    /// What to see.
    pub filter: SpectatorFilter,
    /// Delay behind live play, milliseconds.
    pub delay_ms: u32,
    /// Bandwidth mode.
    pub mode: BandwidthMode,
}

/// One event of a world's spectator feed, tagged so a relay can filter it without
/// understanding the game's encoding.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeedEvent {
    /// Class.
    pub class: EventClass,
    /// Entity the event is about, if any.
    pub entity: Option<EntityId>,
    /// That entity's team, if it has one.
    pub team: Option<TeamId>,
    /// That entity's position after the tick, if it has one (area filters).
    pub pos: Option<(f32, f32)>,
    /// Game-encoded body, with private information already removed by the origin.
    pub payload: Payload,
}

/// A world's public spectator feed for one tick, or a keyframe of it.
///
/// The origin publishes one frame per tick (when anything happened) and a keyframe
/// every keyframe interval, once per relay that asked for the feed
/// ([`LinkMsg::FeedSubscribe`]). Relays delay, filter and thin it per spectator
/// and hand the result on as [`ServerMsg::Spectate`], each derived frame with
/// the origin's proofs of the frames its events come from
/// ([`crate::feedsig`]), so a spectator with the origin's key can tell that
/// no event was invented or altered on the way.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeedFrame {
    /// World.
    pub world: WorldId,
    /// World tick.
    pub tick: u64,
    /// Origin clock when the tick ran, microseconds since the Unix epoch. No
    /// spectator receives the frame before this time plus its delay.
    pub origin_time_us: u64,
    /// `true`: `events` are the complete public state (one per entity) and replace
    /// whatever the receiver knew; `false`: what happened during the tick.
    pub keyframe: bool,
    /// The events.
    pub events: Vec<FeedEvent>,
    /// The origin's signatures over the frames these events come from (one
    /// for an origin's own frame; empty: unsigned).
    pub proofs: Vec<crate::feedsig::FeedProof>,
}

/// RTT and clock-offset probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ping {
    /// Echoed in the pong.
    pub nonce: u64,
    /// Sender's clock, microseconds.
    pub sent_us: u64,
}

/// Answers a [`Ping`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pong {
    /// The ping's nonce.
    pub nonce: u64,
    /// The ping's `sent_us`, echoed.
    pub sent_us: u64,
    /// Answerer's clock when it received the ping, microseconds.
    pub received_us: u64,
    /// Answerer's clock when it sent the pong, microseconds.
    pub replied_us: u64,
}

impl Pong {
    /// The answer to `ping`, received at `received_us` and sent at `replied_us`
    /// (the answerer's clock, microseconds).
    pub fn answer(ping: &Ping, received_us: u64, replied_us: u64) -> Self {
        Self {
            nonce: ping.nonce,
            sent_us: ping.sent_us,
            received_us,
            replied_us,
        }
    }
}

/// Tells a client to move: the relay is draining or no longer the best.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GoAway {
    /// Human-readable reason.
    pub reason: String,
    /// Where to go, best first.
    pub alternatives: Vec<RelayInfo>,
    /// Ticket to resume the session at one of them.
    pub resume_ticket: ResumeTicket,
}

/// Machine-readable error codes for [`ErrorMsg`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ErrorCode {
    /// A frame could not be decoded.
    Malformed,
    /// A frame exceeded the size limit.
    TooLarge,
    /// A message arrived in a state where it is not allowed.
    Unexpected,
    /// The peer is being rate limited.
    RateLimited,
    /// The world is unknown.
    UnknownWorld,
    /// The session is unknown.
    UnknownSession,
    /// An internal failure on the sender's side.
    Internal,
    /// The session's role may not do this (a player asking for a spectator feed).
    Forbidden,
    /// A spectator request asked for more than the relay serves (a delay past its
    /// maximum, for example).
    Unsupported,
    /// The world holds as many players as it may.
    WorldFull,
    /// The world has ended; it admits nobody.
    WorldEnded,
}

/// Where a world is in its life, as its players see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum WorldPhase {
    /// Waiting for players; actions are refused with [`RejectCode::NotPlaying`].
    Waiting,
    /// Playing.
    Playing,
    /// Over; [`WorldState::result`] says how.
    Ended,
}

/// How a game ended.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct WorldResult {
    /// The winner (player id), if there is one.
    pub winner: Option<String>,
    /// Per-player scores.
    pub scores: Vec<(String, i64)>,
    /// Why it ended (`won`, `draw`, `abandoned`, `operator`...).
    pub reason: String,
}

/// A world's lifecycle state, sent when a world attaches to a relay link (with
/// the owner's epoch: a relay refuses a link's frames for a world whose epoch is
/// below the highest it knows) and on every change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorldState {
    /// World.
    pub world: WorldId,
    /// The owner's fencing epoch (0 for a world outside any control plane).
    pub epoch: u64,
    /// The world record whose owner reports this: the world itself, or one
    /// of its zones (a zoned world's zones are owned, and fenced, apart).
    pub host: WorldId,
    /// Phase.
    pub phase: WorldPhase,
    /// Players in the world.
    pub players: u32,
    /// Most players it holds (0: unbounded).
    pub capacity: u32,
    /// The world tick of the change.
    pub tick: u64,
    /// The result, once ended.
    pub result: Option<WorldResult>,
}

/// A protocol error report; the connection may stay open.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorMsg {
    /// Cause.
    pub code: ErrorCode,
    /// Detail for logs.
    pub message: String,
}

/// Client → relay.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ClientMsg {
    /// Opens or resumes a session.
    Hello(Hello),
    /// A player action.
    Action(Action),
    /// Asks for extra channels (the origin decides what is granted).
    Subscribe(Vec<ChannelId>),
    /// Drops channels.
    Unsubscribe(Vec<ChannelId>),
    /// Starts or changes a spectator feed.
    SpectatorSubscribe(SpectatorSubscribe),
    /// RTT / clock probe.
    Ping(Ping),
    /// Ends the session for good (no resume).
    Bye,
    /// Which relays suit this client? Allowed as the first message instead of
    /// [`Hello`] (no token needed): the relay answers [`ServerMsg::Directory`] with
    /// the relays nearest to `addr` (or to the connection's address) and closes.
    Directory {
        /// The address to place (`None`: the connection's source address).
        addr: Option<String>,
        /// How many relays to return (capped by the relay).
        count: u8,
    },
    /// A ping answered by the origin hosting the session's world, through the
    /// relay and its link: the client → relay → origin → relay → client round
    /// trip (the relay answers [`ClientMsg::Ping`] itself).
    OriginPing(Ping),
    /// The client got movement datagram `seq` ([`ServerMsg::Movement`]); sent as
    /// a datagram. Its states are the client's: the relay sends them again only
    /// when they change.
    MovementAck {
        /// The datagram's number.
        seq: u64,
        /// Where the client looks from (its avatar, its camera): the relay sends
        /// the nearest entities first. `None`: unchanged.
        viewpoint: Option<(f32, f32)>,
    },
    /// Asks for the signed content manifest ([`ServerMsg::ContentManifest`]).
    ContentManifest,
    /// Asks for a window of a content pack ([`ServerMsg::ContentChunk`]s).
    ContentGet(crate::content::ContentGet),
}

/// Relay → client.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ServerMsg {
    /// Session accepted.
    Welcome(Welcome),
    /// Session refused.
    Refusal(Refusal),
    /// Result of an action.
    ActionResult(ActionResult),
    /// A channel's events for a tick.
    Events(EventBatch),
    /// A channel's full state.
    Keyframe(Keyframe),
    /// A channel's change.
    Delta(Delta),
    /// The channels the session now receives changed.
    Subscriptions {
        /// Channels added, each with the last sequence number before the session's
        /// first event on it.
        added: Vec<ChannelCursor>,
        /// Channels removed.
        removed: Vec<ChannelId>,
    },
    /// Answer to a ping.
    Pong(Pong),
    /// Move to another relay.
    GoAway(GoAway),
    /// A protocol error.
    Error(ErrorMsg),
    /// Answer to [`ClientMsg::Directory`]: relays nearest first.
    Directory(Vec<RelayInfo>),
    /// The relay gave up a hole in this channel (the missing batches are no
    /// longer available): continue from this keyframe. A plain
    /// [`ServerMsg::Keyframe`] is a checkpoint and never skips events.
    Resync(Keyframe),
    /// A spectator's delayed, filtered feed (answers
    /// [`ClientMsg::SpectatorSubscribe`]). The first frame after a subscribe,
    /// and the first after the relay skipped frames for a slow spectator, is a
    /// keyframe.
    Spectate(FeedFrame),
    /// The origin's answer to [`ClientMsg::OriginPing`].
    OriginPong(Pong),
    /// A resume could not be exact: the events in these ranges were never
    /// delivered and never will be (the session had expired at the origin, so it
    /// was joined afresh). The client must treat them as lost.
    ResumeIncomplete(Vec<SkippedRange>),
    /// The world's lifecycle: sent after the welcome and on every change.
    World(WorldState),
    /// Movement as latest-wins state, in a QUIC datagram (never on a stream):
    /// see [`crate::movement`].
    Movement(crate::movement::MovementDatagram),
    /// The signed content manifest, as the operator published it (the
    /// client checks the signature with the operator's key).
    ContentManifest {
        /// The manifest's bytes.
        body: bytes::Bytes,
        /// Their Ed25519 signature.
        signature: bytes::Bytes,
    },
    /// A piece of a content pack.
    ContentChunk(crate::content::ContentChunk),
    /// A content request refused.
    ContentRefused(crate::content::ContentRefusal),
}

/// Events of one channel a resumed session will never receive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SkippedRange {
    /// The channel.
    pub channel: ChannelId,
    /// First sequence number skipped.
    pub from: u64,
    /// Last sequence number skipped.
    pub to: u64,
}

impl SkippedRange {
    /// Events in the range.
    pub fn len(&self) -> u64 {
        self.to.saturating_sub(self.from) + 1
    }

    /// Whether the range holds no event (never built so).
    pub fn is_empty(&self) -> bool {
        self.to < self.from
    }
}

/// Relay ↔ origin and relay ↔ relay. Session-scoped messages name their session,
/// so one connection carries every session of a relay.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum LinkMsg {
    /// First message on a link: who is speaking.
    LinkHello {
        /// [`PROTOCOL_VERSION`].
        version: u8,
        /// The relay's id (origins use their own id space for peers).
        relay: RelayId,
    },
    /// A session joined (or resumed at) the relay.
    SessionOpen {
        /// Session.
        session: SessionId,
        /// Player id from the token's subject.
        player: String,
        /// World joined.
        world: WorldId,
        /// Role from the token.
        role: Role,
        /// Team, when the game assigned one before.
        team: Option<TeamId>,
        /// Resume point per channel; empty for a new session.
        resume_from: Vec<ChannelCursor>,
    },
    /// A session left for good (or its grace period expired).
    SessionClose {
        /// Session.
        session: SessionId,
    },
    /// An action of a session.
    Action {
        /// Session.
        session: SessionId,
        /// The action.
        action: Action,
    },
    /// The result of an action of a session.
    ActionResult {
        /// Session.
        session: SessionId,
        /// Result.
        result: ActionResult,
    },
    /// A channel's events for a tick (once per relay).
    Events(EventBatch),
    /// A channel's full state (once per relay).
    Keyframe(Keyframe),
    /// A channel's change (once per relay).
    Delta(Delta),
    /// The channels one session receives changed.
    Subscriptions {
        /// Session.
        session: SessionId,
        /// Channels added, each with the last sequence number *before* the
        /// session's first event on it (so the relay delivers from exactly there).
        added: Vec<ChannelCursor>,
        /// Channels removed.
        removed: Vec<ChannelId>,
    },
    /// Events a resuming session missed, for that session only.
    Replay {
        /// Session.
        session: SessionId,
        /// Missed batches, in order.
        batches: Vec<EventBatch>,
    },
    /// Link RTT probe.
    Ping(Ping),
    /// Answer to a link ping.
    Pong(Pong),
    /// A protocol error on the link.
    Error(ErrorMsg),
    /// Relay → origin: send this world's spectator feed on this link (a keyframe
    /// first, then every tick).
    FeedSubscribe {
        /// World.
        world: WorldId,
    },
    /// Relay → origin: stop the world's spectator feed on this link.
    FeedUnsubscribe {
        /// World.
        world: WorldId,
    },
    /// Origin → relay: one frame of a world's spectator feed.
    Feed(FeedFrame),
    /// Relay → origin: a client's [`ClientMsg::OriginPing`], to answer at once
    /// (not at the next tick).
    SessionPing {
        /// Session.
        session: SessionId,
        /// The client's ping.
        ping: Ping,
    },
    /// Origin → relay: the answer, for the session's client.
    SessionPong {
        /// Session.
        session: SessionId,
        /// The origin's pong.
        pong: Pong,
    },
    /// Origin → relay: a session opened with cursors the origin could not honour
    /// (it had expired and was joined afresh): forwarded to its client as
    /// [`ServerMsg::ResumeIncomplete`].
    ResumeIncomplete {
        /// Session.
        session: SessionId,
        /// What the session will never receive.
        skipped: Vec<SkippedRange>,
    },
    /// Origin → relay: a world's lifecycle state and the owner's epoch, when the
    /// world attaches to the link and on every change.
    WorldState(WorldState),
    /// Origin → relay: a session could not join (the world is full, ended, or
    /// unknown); the relay tells its client and closes it.
    SessionRefused {
        /// Session.
        session: SessionId,
        /// Why.
        code: ErrorCode,
        /// Detail.
        reason: String,
    },
    /// Origin → relay: a subject is sanctioned (a kick's cool-down or a ban);
    /// the relay refuses its hellos, a resume included, until the sanction
    /// ends, and closes its other sessions there.
    Sanction(Sanction),
    /// Relay → origin: the edge guard cut a session for violations; the
    /// evidence, for the origin's violation store. Sent before the session's
    /// [`LinkMsg::SessionClose`].
    EdgeReport {
        /// Session.
        session: SessionId,
        /// Its player (the token's subject).
        player: String,
        /// The rule that tripped (`rate_limited`, `replayed`, `too_large`,
        /// `bad_timestamp`).
        rule: String,
        /// What was measured, in words and numbers.
        evidence: String,
    },
    /// Origin → relay: one cell's movement in one tick (latest-wins state, not
    /// chained; signed per frame, see [`crate::movement`]).
    Movement(crate::movement::MovementFrame),
    /// Origin → relay: a session's avatar was handed to another zone of a
    /// zoned world (hosted as world record `world`): the relay re-opens the
    /// session there, from its cursors, and sends there the actions the old
    /// zone answered `Moved`.
    SessionMoved {
        /// Session.
        session: SessionId,
        /// The zone's world record (what the relay opens the session on).
        world: WorldId,
    },
}

/// What a [`Sanction`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum SanctionKind {
    /// A kick: refused until the cool-down ends.
    Kick,
    /// A ban.
    Ban,
}

/// A sanction on a subject (a token's `sub`), as origins tell relays.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sanction {
    /// The subject.
    pub subject: String,
    /// What it is.
    pub kind: SanctionKind,
    /// Until when, seconds since the Unix epoch (`u64::MAX`: permanent).
    pub until: u64,
    /// Why (shown to the refused client).
    pub reason: String,
}

/// QUIC ALPN of relay-to-relay connections (mutual TLS): peer reports and
/// forwarded origin links.
pub const PEER_ALPN: &[u8] = b"skylane-peer/1";

/// One origin as a peer relay reaches it directly.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OriginReport {
    /// The origin's address (`ip:port`), as both relays' configurations name it.
    pub addr: String,
    /// The reporting relay's smoothed RTT to it, in microseconds.
    pub rtt_us: u32,
}

/// Relay-to-relay messages (ALPN [`PEER_ALPN`]). The first message on the first
/// bidirectional stream says what the connection is for:
/// * [`PeerMsg::Hello`]: a measurement link; the accepting relay then sends a
///   [`PeerMsg::Report`] of its direct origin RTTs every half second.
/// * [`PeerMsg::Via`]: a forwarded origin link; the accepting relay connects to
///   that origin (only one it is configured for, only directly), answers
///   [`PeerMsg::ViaReady`] or [`PeerMsg::ViaRefused`], then relays every stream and
///   datagram of the connection unchanged in both directions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PeerMsg {
    /// Opens a measurement link.
    Hello {
        /// [`PROTOCOL_VERSION`].
        version: u8,
        /// The connecting relay.
        relay: RelayId,
    },
    /// The accepting relay's direct links to origins that are up.
    Report {
        /// The reporting relay.
        relay: RelayId,
        /// Origins it reaches directly.
        origins: Vec<OriginReport>,
    },
    /// Asks for a forwarded link to an origin.
    Via {
        /// [`PROTOCOL_VERSION`].
        version: u8,
        /// The connecting relay.
        relay: RelayId,
        /// The origin's address (`ip:port`).
        origin: String,
    },
    /// The forwarded link is connected; what follows is the origin's link protocol.
    ViaReady,
    /// The forwarded link could not be made.
    ViaRefused {
        /// Why.
        reason: String,
    },
}
