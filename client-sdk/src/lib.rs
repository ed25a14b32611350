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
//!   is clearly faster for a sustained time ([`choice`], hysteresis), resuming
//!   the session without loss.
//! * **Typed send and receive:** [`Client::act`] returns the origin's
//!   [`Outcome`] (applied, conflict with the current state, or rejected with a
//!   reason); [`Client::next_event`] (or the [`Client::events`] stream) yields
//!   events exactly once, in order per channel (see [`order`]).
//! * **Reconnect and resume:** on a lost connection it reconnects with exponential
//!   backoff and jitter and resumes its session with the last sequence number per
//!   channel, so nothing is lost or repeated; it follows a relay's go-away.
//! * **Clock sync:** NTP-style offset against the relay clock with an error
//!   bound ([`clock`]), used for per-class latency statistics (hdrhistogram).
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

pub mod choice;
pub mod order;
pub mod probe;
pub mod spectator;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use hdrhistogram::Histogram;
use quinn::{Connection, Endpoint};
use skylane_proto::ed25519_dalek::VerifyingKey;
use skylane_proto::{
    decode_datagram, encode_datagram, encode_frame_to_bytes, Action, ChainError, ChainVerifier,
    ChannelCursor, ChannelId, ClientMsg, EntityVersion, ErrorCode, Event, EventClass, FeedFrame,
    FrameDecoder, Hello, Keyframe, Outcome, Payload, Ping, RefusalCode, RelayInfo, ResumeTicket,
    ServerMsg, SessionId, SpectatorSubscribe, WorldId, DEFAULT_MAX_FRAME, MAX_DATAGRAM,
    PROTOCOL_VERSION,
};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tracing::{debug, info};

pub use choice::{ChoiceConfig, RelayChoice};
pub use skylane_proto::clock::{self, ClockSync, Estimate, Sample};

/// Samples a client takes at one per second before it slows to its configured
/// ping interval.
pub const WARM_UP_SAMPLES: usize = 8;
pub use order::{OrderStats, Ordering, Released};
pub use spectator::Spectator;

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
    /// The builder is missing something or was given something unusable.
    #[error("configuration: {0}")]
    Config(String),
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
    /// A non-retryable error; the client stopped.
    Error(ClientError),
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
    /// Connections made after the first.
    pub reconnects: u64,
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
}

/// Builds a [`Client`]. Cloning a builder gives another client the same
/// settings (and, with [`ClientBuilder::endpoint`], the same socket).
#[derive(Debug, Default, Clone)]
pub struct ClientBuilder {
    token: Option<String>,
    world: Option<WorldId>,
    relays: Vec<SocketAddr>,
    directory: Option<SocketAddr>,
    server_name: Option<String>,
    ca_pem: Option<String>,
    endpoint: Option<Endpoint>,
    origin_key: Option<VerifyingKey>,
    probe: Option<usize>,
    idle_timeout: Option<Duration>,
    ping_interval: Option<Duration>,
    reprobe: Option<Option<ChoiceConfig>>,
    event_buffer: Option<usize>,
    spectate: Option<SpectatorSubscribe>,
}

impl ClientBuilder {
    /// The signed token (from the game's auth service or `skylane token issue`).
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// The world to join.
    pub fn world(mut self, world: WorldId) -> Self {
        self.world = Some(world);
        self
    }

    /// Bootstrap relays to probe.
    pub fn relays(mut self, relays: impl IntoIterator<Item = SocketAddr>) -> Self {
        self.relays = relays.into_iter().collect();
        self
    }

    /// A relay to ask which relays suit this client (GeoIP); its answer is probed.
    pub fn directory(mut self, relay: SocketAddr) -> Self {
        self.directory = Some(relay);
        self
    }

    /// TLS server name of the relays (default `localhost`).
    pub fn server_name(mut self, name: impl Into<String>) -> Self {
        self.server_name = Some(name.into());
        self
    }

    /// PEM of the CA the relays' certificates chain to.
    pub fn ca_pem(mut self, pem: impl Into<String>) -> Self {
        self.ca_pem = Some(pem.into());
        self
    }

    /// A quinn endpoint to use (for example a simulated one); by default the client
    /// binds a UDP socket on an ephemeral port.
    pub fn endpoint(mut self, endpoint: Endpoint) -> Self {
        self.endpoint = Some(endpoint);
        self
    }

    /// The origin's batch-signing public key: every batch is then verified.
    pub fn origin_key(mut self, key: VerifyingKey) -> Self {
        self.origin_key = Some(key);
        self
    }

    /// How many candidate relays to probe in parallel (default 3).
    pub fn probe(mut self, k: usize) -> Self {
        self.probe = Some(k.max(1));
        self
    }

    /// Idle time after which a silent connection counts as lost (default 3 s; a
    /// keep-alive runs at a quarter of it). QUIC uses the smaller of the two
    /// sides' idle timeouts and the relay's is 10 s; the relay sends keep-alives
    /// of its own after 4 s of silence, so above 16 s here they take over.
    pub fn idle_timeout(mut self, d: Duration) -> Self {
        self.idle_timeout = Some(d);
        self
    }

    /// Interval of clock-sync pings (default 1 s; spectators 5 s). The first
    /// few come every second whatever this is, to settle the clock.
    pub fn ping_interval(mut self, d: Duration) -> Self {
        self.ping_interval = Some(d);
        self
    }

    /// How a connected client re-probes the other candidate relays and when it
    /// moves to a faster one (default [`ChoiceConfig::default`]: a round every
    /// 15 s; a relay at least 15 ms and 20% faster for 40 s wins). Moving resumes
    /// the session: nothing is lost or duplicated.
    pub fn reprobe(mut self, cfg: ChoiceConfig) -> Self {
        self.reprobe = Some(Some(cfg));
        self
    }

    /// Stays on the relay it connected to until that relay fails or asks it to
    /// move (no re-probing).
    pub fn no_reprobe(mut self) -> Self {
        self.reprobe = Some(None);
        self
    }

    /// Events buffered for the game before the client stops reading the network
    /// (default 65,536).
    pub fn event_buffer(mut self, n: usize) -> Self {
        self.event_buffer = Some(n.max(1));
        self
    }

    /// Makes the session a spectator's: after every (re)connect it asks for this
    /// feed (see [`Spectator::connect`]).
    pub(crate) fn spectate(mut self, sub: SpectatorSubscribe) -> Self {
        self.spectate = Some(sub);
        self
    }

    /// The world set so far.
    pub(crate) fn world_id(&self) -> Option<WorldId> {
        self.world
    }

    /// Chooses a relay, opens the session and starts the client.
    pub async fn connect(self) -> Result<Client, ClientError> {
        let token = self
            .token
            .ok_or_else(|| ClientError::Config("a token is required".into()))?;
        let world = self
            .world
            .ok_or_else(|| ClientError::Config("a world is required".into()))?;
        let ca = self
            .ca_pem
            .ok_or_else(|| ClientError::Config("the relays' CA (ca_pem) is required".into()))?;
        let roots = skylane_certs::roots_from_pem(&ca)
            .map_err(|e| ClientError::Config(format!("ca_pem: {e}")))?;
        let mut quic = skylane_certs::client_config(roots, None)
            .map_err(|e| ClientError::Config(e.to_string()))?;
        let idle = self.idle_timeout.unwrap_or(Duration::from_secs(3));
        let mut transport = quinn::TransportConfig::default();
        transport
            .max_idle_timeout(idle.try_into().ok())
            .keep_alive_interval(Some(idle / 4));
        quic.transport_config(Arc::new(transport));
        let endpoint = match self.endpoint {
            Some(e) => e,
            None => Endpoint::client(([0, 0, 0, 0], 0).into())
                .map_err(|e| ClientError::Config(format!("binding a UDP socket: {e}")))?,
        };
        let server_name = self.server_name.unwrap_or_else(|| "localhost".into());
        let mut candidates = self.relays;
        if let Some(dir) = self.directory {
            let listed = ask_directory(&endpoint, &quic, dir, &server_name).await?;
            candidates = listed
                .iter()
                .filter_map(|r| r.addrs.first().and_then(|a| a.parse().ok()))
                .collect();
            if candidates.is_empty() {
                candidates.push(dir);
            }
        }
        if candidates.is_empty() {
            return Err(ClientError::Config("no relays given".into()));
        }
        let clock = UnixClock::new();
        let shared = Arc::new(Mutex::new(SharedState::default()));
        let mut d = Driver {
            endpoint,
            quic,
            server_name,
            token,
            world,
            candidates,
            probe: self.probe.unwrap_or(3),
            ping_interval: self.ping_interval.unwrap_or(Duration::from_secs(1)),
            choice_cfg: self.reprobe.unwrap_or(Some(ChoiceConfig::default())),
            choice: None,
            prefer: None,
            clock,
            ticket: None,
            session: None,
            order: Ordering::new(4096),
            verifier: self.origin_key.map(ChainVerifier::new),
            sync: ClockSync::default(),
            shared: shared.clone(),
            pending: HashMap::new(),
            origin_pings: HashMap::new(),
            next_origin_ping: 0,
            next_seq: 1,
            streams: HashMap::new(),
            spectate: self.spectate,
        };
        let (events_tx, events_rx) = mpsc::channel(self.event_buffer.unwrap_or(65_536));
        let first = d.connect_best().await?;
        let (cmd_tx, cmd_rx) = mpsc::channel(4096);
        tokio::spawn(d.run(first, cmd_rx, events_tx));
        Ok(Client {
            cmd: cmd_tx,
            events: events_rx,
            shared,
            clock,
        })
    }
}

async fn ask_directory(
    endpoint: &Endpoint,
    quic: &quinn::ClientConfig,
    relay: SocketAddr,
    server_name: &str,
) -> Result<Vec<RelayInfo>, ClientError> {
    let unreachable = |e: String| ClientError::RelayUnreachable(format!("{relay}: {e}"));
    let conn = endpoint
        .connect_with(quic.clone(), relay, server_name)
        .map_err(|e| unreachable(e.to_string()))?
        .await
        .map_err(|e| unreachable(e.to_string()))?;
    let (mut send, mut recv) = conn
        .open_bi()
        .await
        .map_err(|e| unreachable(e.to_string()))?;
    let req = ClientMsg::Directory {
        addr: None,
        count: 4,
    };
    send.write_all(&encode_frame_to_bytes(&req, DEFAULT_MAX_FRAME).unwrap_or_default())
        .await
        .map_err(|e| unreachable(e.to_string()))?;
    let mut dec = FrameDecoder::default();
    loop {
        match dec.poll_message::<ServerMsg>() {
            Ok(Some(ServerMsg::Directory(list))) => {
                conn.close(0u32.into(), b"thanks");
                return Ok(list);
            }
            Ok(Some(_)) | Err(_) => return Err(unreachable("unexpected directory answer".into())),
            Ok(None) => {}
        }
        match recv.read_chunk(DEFAULT_MAX_FRAME, true).await {
            Ok(Some(c)) => dec.push(&c.bytes),
            _ => return Err(unreachable("closed before answering".into())),
        }
    }
}

/// A connected game client. Dropping it ends the session without a goodbye (the
/// relay keeps it for its grace period); [`Client::close`] ends it for good.
#[derive(Debug)]
pub struct Client {
    cmd: mpsc::Sender<Cmd>,
    events: mpsc::Receiver<ClientEvent>,
    shared: Arc<Mutex<SharedState>>,
    clock: UnixClock,
}

/// Origin pings a client keeps waiting at once; more fail at once.
const MAX_ORIGIN_PINGS_IN_FLIGHT: usize = 16;

#[derive(Debug)]
enum Cmd {
    Act {
        class: EventClass,
        reads: Vec<EntityVersion>,
        payload: Payload,
        reply: Option<oneshot::Sender<Result<Outcome, ClientError>>>,
    },
    Spectate(SpectatorSubscribe),
    OriginPing(oneshot::Sender<Duration>),
    Bye(oneshot::Sender<()>),
}

#[derive(Debug, Default)]
struct SharedState {
    session: Option<SessionId>,
    relay: Option<SocketAddr>,
    stats: ClientStats,
    /// Per class, created at its first sample (2 significant digits: ~20 KB each).
    latency: [Option<Histogram<u64>>; EventClass::COUNT],
}

impl Client {
    /// Starts building a client.
    pub fn builder() -> ClientBuilder {
        ClientBuilder::default()
    }

    /// Sends an action and waits for the origin's outcome.
    pub async fn act(
        &self,
        class: EventClass,
        reads: Vec<EntityVersion>,
        payload: Payload,
    ) -> Result<Outcome, ClientError> {
        let (tx, rx) = oneshot::channel();
        self.cmd
            .send(Cmd::Act {
                class,
                reads,
                payload,
                reply: Some(tx),
            })
            .await
            .map_err(|_| ClientError::Closed)?;
        rx.await.map_err(|_| ClientError::Closed)?
    }

    /// The round trip to the origin hosting this world, through the relay: client
    /// → relay → origin → relay → client, answered by the origin on arrival (not
    /// at its next tick). What a player would see as "ping to the game server".
    /// [`ClientError::ConnectionLost`] when no answer comes within 5 s (the path
    /// broke, or the relay dropped it: it allows 10 a second per session).
    pub async fn ping_origin(&self) -> Result<Duration, ClientError> {
        let (tx, rx) = oneshot::channel();
        self.cmd
            .send(Cmd::OriginPing(tx))
            .await
            .map_err(|_| ClientError::Closed)?;
        match tokio::time::timeout(Duration::from_secs(5), rx).await {
            Ok(Ok(rtt)) => Ok(rtt),
            _ => Err(ClientError::ConnectionLost),
        }
    }

    /// Sends an action without waiting for its outcome (movement, chat).
    pub fn send(&self, class: EventClass, payload: Payload) -> Result<(), ClientError> {
        self.cmd
            .try_send(Cmd::Act {
                class,
                reads: Vec::new(),
                payload,
                reply: None,
            })
            .map_err(|_| ClientError::Closed)
    }

    /// The next event, in order per channel; `None` once the client has stopped.
    pub async fn next_event(&mut self) -> Option<ClientEvent> {
        self.events.recv().await
    }

    /// The events as an async [`Stream`](futures_core::Stream) (the same
    /// sequence [`Client::next_event`] yields), for games built on stream
    /// combinators.
    pub fn events(&mut self) -> Events<'_> {
        Events {
            rx: &mut self.events,
        }
    }

    /// An event if one is waiting.
    pub fn try_next_event(&mut self) -> Option<ClientEvent> {
        self.events.try_recv().ok()
    }

    /// The session id (stable across reconnects and relay moves).
    pub fn session(&self) -> Option<SessionId> {
        self.shared.lock().ok().and_then(|s| s.session)
    }

    /// The relay currently connected.
    pub fn relay(&self) -> Option<SocketAddr> {
        self.shared.lock().ok().and_then(|s| s.relay)
    }

    /// The deployment's clock now (microseconds since the Unix epoch), through the
    /// synchronised offset; `None` before the first pong. Compare with an event's
    /// `origin_time_us` for its age, or use it to interpolate world time.
    pub fn server_time_us(&self) -> Option<u64> {
        let offset = self.shared.lock().ok()?.stats.clock_offset_us?;
        Some(self.clock.now_us().saturating_add_signed(offset))
    }

    /// Counters, clock estimate and latency percentiles.
    pub fn stats(&self) -> ClientStats {
        let Ok(s) = self.shared.lock() else {
            return ClientStats::default();
        };
        let mut st = s.stats.clone();
        for (i, h) in s.latency.iter().enumerate() {
            if let Some(h) = h {
                st.latency[i] = LatencySummary {
                    count: h.len(),
                    p50_us: h.value_at_quantile(0.5),
                    p99_us: h.value_at_quantile(0.99),
                    p999_us: h.value_at_quantile(0.999),
                    max_us: h.max(),
                };
            }
        }
        st
    }

    /// The full latency histograms (microseconds, origin tick to receipt through
    /// the synchronised clock, 2 significant digits), indexed by
    /// [`EventClass::rank`]; `None` for a class not received yet. For merging many
    /// clients' figures (loadgen, demo); [`Client::stats`] has the percentiles of one.
    pub fn latency_histograms(&self) -> Vec<Option<Histogram<u64>>> {
        self.shared
            .lock()
            .map(|s| s.latency.to_vec())
            .unwrap_or_default()
    }

    async fn command(&self, cmd: Cmd) -> Result<(), ClientError> {
        self.cmd.send(cmd).await.map_err(|_| ClientError::Closed)
    }

    /// Ends the session for good.
    pub async fn close(self) {
        let (tx, rx) = oneshot::channel();
        if self.cmd.send(Cmd::Bye(tx)).await.is_ok() {
            let _ = tokio::time::timeout(Duration::from_secs(2), rx).await;
        }
    }
}

/// A client's events as a [`Stream`](futures_core::Stream); see
/// [`Client::events`]. It ends when the client stops.
#[derive(Debug)]
pub struct Events<'a> {
    rx: &'a mut mpsc::Receiver<ClientEvent>,
}

impl futures_core::Stream for Events<'_> {
    type Item = ClientEvent;

    fn poll_next(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<ClientEvent>> {
        self.get_mut().rx.poll_recv(cx)
    }
}

/// Microseconds since the Unix epoch, advancing with tokio's clock.
#[derive(Debug, Clone, Copy)]
struct UnixClock {
    base_unix_us: u64,
    base: Instant,
}

impl UnixClock {
    fn new() -> Self {
        Self {
            base_unix_us: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_micros() as u64),
            base: Instant::now(),
        }
    }
    fn now_us(&self) -> u64 {
        self.base_unix_us + self.base.elapsed().as_micros() as u64
    }
}

/// A live connection with its session opened.
struct Live {
    conn: Connection,
    relay: SocketAddr,
    rx: mpsc::Receiver<ServerMsg>,
    control: quinn::SendStream,
}

/// A probe round's answers: each challenger's smallest round trip.
type RoundResults = Vec<(SocketAddr, Option<Duration>)>;

enum End {
    Bye,
    Lost(String),
    Moved(Vec<SocketAddr>),
    Switch { from: SocketAddr, to: SocketAddr },
    Fatal(ClientError),
}

struct Driver {
    endpoint: Endpoint,
    quic: quinn::ClientConfig,
    server_name: String,
    token: String,
    world: WorldId,
    candidates: Vec<SocketAddr>,
    probe: usize,
    ping_interval: Duration,
    /// Re-probing settings (`None`: never switch on speed).
    choice_cfg: Option<ChoiceConfig>,
    choice: Option<RelayChoice>,
    /// The relay to connect to first on the next connect (a switch).
    prefer: Option<SocketAddr>,
    clock: UnixClock,
    ticket: Option<ResumeTicket>,
    session: Option<SessionId>,
    order: Ordering,
    verifier: Option<ChainVerifier>,
    sync: ClockSync,
    shared: Arc<Mutex<SharedState>>,
    pending: HashMap<u64, oneshot::Sender<Result<Outcome, ClientError>>>,
    /// Origin pings waiting for their pong, by nonce (at most
    /// `MAX_ORIGIN_PINGS_IN_FLIGHT`).
    origin_pings: HashMap<u64, oneshot::Sender<Duration>>,
    next_origin_ping: u64,
    next_seq: u64,
    streams: HashMap<EventClass, quinn::SendStream>,
    /// The spectator feed to ask for after every (re)connect.
    spectate: Option<SpectatorSubscribe>,
}

async fn pump(mut recv: quinn::RecvStream, mut dec: FrameDecoder, tx: mpsc::Sender<ServerMsg>) {
    loop {
        loop {
            match dec.poll_message::<ServerMsg>() {
                Ok(Some(m)) => {
                    if tx.send(m).await.is_err() {
                        return;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    debug!(cause = %e, "undecodable frame from relay");
                    return;
                }
            }
        }
        match recv.read_chunk(DEFAULT_MAX_FRAME, true).await {
            Ok(Some(c)) => dec.push(&c.bytes),
            _ => return,
        }
    }
}

impl Driver {
    /// Probes candidates in parallel and opens the session on the fastest (on
    /// the preferred relay first, after a switch).
    async fn connect_best(&mut self) -> Result<Live, ClientError> {
        if let Some(addr) = self.prefer.take() {
            let connecting = self
                .endpoint
                .connect_with(self.quic.clone(), addr, &self.server_name);
            if let Ok(connecting) = connecting {
                if let Ok(Ok(conn)) = tokio::time::timeout(Duration::from_secs(5), connecting).await
                {
                    match self.open_session(addr, conn).await {
                        Ok(live) => return Ok(live),
                        Err(e) if e.is_retryable() => {}
                        Err(e) => return Err(e),
                    }
                }
            }
        }
        let k = self.probe.min(self.candidates.len()).max(1);
        let mut probes = tokio::task::JoinSet::new();
        for addr in self.candidates.iter().take(k).copied() {
            let connecting = self
                .endpoint
                .connect_with(self.quic.clone(), addr, &self.server_name);
            probes.spawn(async move {
                let conn = tokio::time::timeout(Duration::from_secs(5), connecting.ok()?)
                    .await
                    .ok()?
                    .ok()?;
                Some((addr, conn))
            });
        }
        let mut reached: Vec<(SocketAddr, Connection)> = Vec::new();
        while let Some(r) = probes.join_next().await {
            if let Ok(Some(x)) = r {
                reached.push(x);
            }
        }
        reached.sort_by_key(|(_, c)| c.rtt());
        let mut last_err =
            ClientError::RelayUnreachable(format!("none of {:?} answered", &self.candidates[..k]));
        let mut chosen = None;
        for (addr, conn) in reached {
            if chosen.is_some() {
                conn.close(0u32.into(), b"probe");
                continue;
            }
            match self.open_session(addr, conn).await {
                Ok(live) => chosen = Some(live),
                Err(e) if e.is_retryable() => last_err = e,
                Err(e) => return Err(e),
            }
        }
        chosen.ok_or(last_err)
    }

    /// Probes up to `probe` candidates other than `current` in the background;
    /// the receiver gets each one's smallest ping round trip (`None`: no answer).
    fn probe_round(&self, current: SocketAddr) -> oneshot::Receiver<RoundResults> {
        let (tx, rx) = oneshot::channel();
        let others: Vec<SocketAddr> = self
            .candidates
            .iter()
            .copied()
            .filter(|a| *a != current)
            .take(self.probe.max(1))
            .collect();
        let (endpoint, quic, name, clock) = (
            self.endpoint.clone(),
            self.quic.clone(),
            self.server_name.clone(),
            self.clock,
        );
        tokio::spawn(async move {
            let mut probes = tokio::task::JoinSet::new();
            for addr in others {
                let (endpoint, quic, name) = (endpoint.clone(), quic.clone(), name.clone());
                probes.spawn(async move {
                    let p = probe::probe(
                        &endpoint,
                        quic,
                        addr,
                        &name,
                        3,
                        Duration::from_millis(20),
                        Duration::from_secs(2),
                        move || clock.now_us(),
                    )
                    .await;
                    (addr, p.ok().and_then(|p| p.min_rtt()))
                });
            }
            let mut results = Vec::new();
            while let Some(r) = probes.join_next().await {
                if let Ok(x) = r {
                    results.push(x);
                }
            }
            let _ = tx.send(results);
        });
        rx
    }

    async fn open_session(
        &mut self,
        relay: SocketAddr,
        conn: Connection,
    ) -> Result<Live, ClientError> {
        let lost = |e: String| ClientError::RelayUnreachable(format!("{relay}: {e}"));
        let (mut send, mut recv) = conn.open_bi().await.map_err(|e| lost(e.to_string()))?;
        let hello = ClientMsg::Hello(Hello {
            version: PROTOCOL_VERSION,
            token: self.token.clone(),
            world: self.world,
            resume: self.ticket.clone(),
            last_seen: self.order.cursors(),
        });
        let bytes = encode_frame_to_bytes(&hello, DEFAULT_MAX_FRAME)
            .map_err(|e| ClientError::Config(format!("token too large: {e}")))?;
        send.write_all(&bytes)
            .await
            .map_err(|e| lost(e.to_string()))?;
        let mut dec = FrameDecoder::default();
        let first = loop {
            match dec.poll_message::<ServerMsg>() {
                Ok(Some(m)) => break m,
                Ok(None) => {}
                Err(e) => return Err(lost(e.to_string())),
            }
            let chunk = tokio::time::timeout(
                Duration::from_secs(10),
                recv.read_chunk(DEFAULT_MAX_FRAME, true),
            )
            .await
            .map_err(|_| lost("no answer to hello".into()))?;
            match chunk {
                Ok(Some(c)) => dec.push(&c.bytes),
                Ok(None) => return Err(lost("closed".into())),
                Err(e) => return Err(lost(e.to_string())),
            }
        };
        let welcome = match first {
            ServerMsg::Welcome(w) => w,
            ServerMsg::Refusal(r) => {
                conn.close(0u32.into(), b"refused");
                return Err(ClientError::from_refusal(r.code, r.reason));
            }
            other => return Err(lost(format!("expected welcome, got {other:?}"))),
        };
        let resumed = self.session == Some(welcome.session);
        self.session = Some(welcome.session);
        self.ticket = Some(welcome.resume_ticket);
        if let Some(sub) = &self.spectate {
            // A spectator asks for its feed again on every connection; the relay
            // starts it from the latest keyframe its delay allows.
            let msg = ClientMsg::SpectatorSubscribe(sub.clone());
            if let Ok(b) = encode_frame_to_bytes(&msg, DEFAULT_MAX_FRAME) {
                send.write_all(&b).await.map_err(|e| lost(e.to_string()))?;
            }
        }
        let (tx, rx) = mpsc::channel(4096);
        tokio::spawn(pump(recv, dec, tx.clone()));
        {
            let (conn, tx) = (conn.clone(), tx.clone());
            tokio::spawn(async move {
                while let Ok(r) = conn.accept_uni().await {
                    tokio::spawn(pump(r, FrameDecoder::default(), tx.clone()));
                }
            });
        }
        {
            let conn = conn.clone();
            tokio::spawn(async move {
                while let Ok(d) = conn.read_datagram().await {
                    if let Ok(m) = decode_datagram::<ServerMsg>(d) {
                        if tx.send(m).await.is_err() {
                            return;
                        }
                    }
                }
            });
        }
        info!(%relay, session = %welcome.session, resumed, "connected");
        if let Ok(mut s) = self.shared.lock() {
            if s.relay != Some(relay) {
                // Another relay, another clock.
                self.sync.clear();
            }
            s.session = Some(welcome.session);
            s.relay = Some(relay);
        }
        self.streams.clear();
        Ok(Live {
            conn,
            relay,
            rx,
            control: send,
        })
    }

    async fn run(
        mut self,
        first: Live,
        mut cmds: mpsc::Receiver<Cmd>,
        events: mpsc::Sender<ClientEvent>,
    ) {
        let mut live = Some(first);
        let mut backoff = Duration::from_millis(100);
        let mut jitter: u64 = self.clock.now_us() | 1;
        let mut connects = 0u64;
        loop {
            let l = match live.take() {
                Some(l) => l,
                None => match self.connect_best().await {
                    Ok(l) => l,
                    Err(e) if e.is_retryable() => {
                        jitter ^= jitter << 13;
                        jitter ^= jitter >> 7;
                        jitter ^= jitter << 17;
                        let f = 0.5 + (jitter % 1000) as f64 / 1000.0;
                        tokio::time::sleep(backoff.mul_f64(f)).await;
                        backoff = (backoff * 2).min(Duration::from_secs(5));
                        continue;
                    }
                    Err(e) => {
                        let _ = events.send(ClientEvent::Error(e)).await;
                        return;
                    }
                },
            };
            backoff = Duration::from_millis(100);
            if connects > 0 {
                if let Ok(mut s) = self.shared.lock() {
                    s.stats.reconnects += 1;
                }
            }
            connects += 1;
            let _ = events
                .send(ClientEvent::Connected {
                    relay: l.relay,
                    session: self.session.unwrap_or(SessionId(0)),
                    resumed: connects > 1,
                })
                .await;
            let end = self.serve(l, &mut cmds, &events).await;
            for (_, tx) in self.pending.drain() {
                let _ = tx.send(Err(ClientError::ConnectionLost));
            }
            // Their answers would come from the old path: dropped (the caller
            // sees the connection lost).
            self.origin_pings.clear();
            match end {
                End::Bye => return,
                End::Fatal(e) => {
                    let _ = events.send(ClientEvent::Error(e)).await;
                    return;
                }
                End::Lost(reason) => {
                    let _ = events.send(ClientEvent::Disconnected { reason }).await;
                }
                End::Switch { from, to } => {
                    if let Ok(mut s) = self.shared.lock() {
                        s.stats.switches += 1;
                    }
                    info!(%from, %to, "moving to a faster relay");
                    let _ = events.send(ClientEvent::Switching { from, to }).await;
                    self.prefer = Some(to);
                }
                End::Moved(to) => {
                    if let Ok(mut s) = self.shared.lock() {
                        s.stats.moves += 1;
                    }
                    let _ = events
                        .send(ClientEvent::GoAway {
                            to: to.first().copied(),
                        })
                        .await;
                    if !to.is_empty() {
                        self.candidates = to;
                    }
                }
            }
        }
    }

    async fn serve(
        &mut self,
        mut l: Live,
        cmds: &mut mpsc::Receiver<Cmd>,
        events: &mpsc::Sender<ClientEvent>,
    ) -> End {
        // Pings start at once and come every second until the clock filter has
        // a few samples, then every `ping_interval`.
        let mut next_ping = Instant::now();
        let mut nonce = 0u64;
        // Re-probing the other candidates while connected.
        if let Some(cfg) = self.choice_cfg.filter(|_| self.candidates.len() > 1) {
            let now = Instant::now();
            match &mut self.choice {
                Some(c) => c.handle_connected(now, l.relay),
                None => self.choice = Some(RelayChoice::new(cfg, now, l.relay)),
            }
        }
        let mut round: Option<oneshot::Receiver<RoundResults>> = None;
        loop {
            let next_round = self
                .choice
                .as_ref()
                .filter(|_| round.is_none())
                .map(RelayChoice::poll_timeout);
            tokio::select! {
                biased;
                m = l.rx.recv() => match m {
                    Some(m) => {
                        if let Some(end) = self.handle(m, events).await {
                            l.conn.close(0u32.into(), b"moving");
                            return end;
                        }
                    }
                    None => {
                        let reason = l.conn.close_reason().map_or_else(|| "streams ended".to_string(), |r| r.to_string());
                        return End::Lost(reason);
                    }
                },
                c = cmds.recv() => match c {
                    Some(Cmd::Act { class, reads, payload, reply }) => {
                        let seq = self.next_seq;
                        self.next_seq += 1;
                        let action = Action { class, seq, client_time_us: self.clock.now_us(), reads, payload };
                        if let Some(r) = reply {
                            self.pending.insert(seq, r);
                        }
                        if let Err(e) = self.write(&l.conn, ClientMsg::Action(action), class).await {
                            return End::Lost(e);
                        }
                    }
                    Some(Cmd::Spectate(sub)) => {
                        let msg = ClientMsg::SpectatorSubscribe(sub.clone());
                        self.spectate = Some(sub);
                        if let Ok(b) = encode_frame_to_bytes(&msg, DEFAULT_MAX_FRAME) {
                            if let Err(e) = l.control.write_all(&b).await {
                                return End::Lost(e.to_string());
                            }
                        }
                    }
                    Some(Cmd::OriginPing(reply)) => {
                        self.origin_pings.retain(|_, tx| !tx.is_closed());
                        if self.origin_pings.len() < MAX_ORIGIN_PINGS_IN_FLIGHT {
                            self.next_origin_ping += 1;
                            let nonce = self.next_origin_ping;
                            self.origin_pings.insert(nonce, reply);
                            let p = ClientMsg::OriginPing(Ping { nonce, sent_us: self.clock.now_us() });
                            if let Err(e) = self.write(&l.conn, p, EventClass::Critical).await {
                                return End::Lost(e);
                            }
                        }
                    }
                    Some(Cmd::Bye(done)) => {
                        let _ = self.write(&l.conn, ClientMsg::Bye, EventClass::Critical).await;
                        let _ = tokio::time::timeout(Duration::from_millis(500), async {
                            for s in self.streams.values_mut() { let _ = s.finish(); }
                            l.conn.closed().await
                        }).await;
                        l.conn.close(0u32.into(), b"bye");
                        let _ = done.send(());
                        return End::Bye;
                    }
                    None => {
                        l.conn.close(0u32.into(), b"dropped");
                        return End::Bye;
                    }
                },
                r = async {
                    match round.as_mut() {
                        Some(rx) => rx.await.ok(),
                        None => std::future::pending().await,
                    }
                } => {
                    round = None;
                    let to = match (&mut self.choice, r) {
                        (Some(c), Some(results)) => c.handle_round(Instant::now(), &results),
                        _ => None,
                    };
                    if let Some(to) = to {
                        l.conn.close(0u32.into(), b"moving to a faster relay");
                        return End::Switch { from: l.relay, to };
                    }
                }
                () = async {
                    match next_round {
                        Some(t) => tokio::time::sleep_until(t).await,
                        None => std::future::pending().await,
                    }
                } => {
                    if self.choice.as_mut().is_some_and(|c| c.poll_round(Instant::now())) {
                        round = Some(self.probe_round(l.relay));
                    }
                }
                () = tokio::time::sleep_until(next_ping) => {
                    let every = if self.sync.len() < WARM_UP_SAMPLES {
                        self.ping_interval.min(Duration::from_secs(1))
                    } else {
                        self.ping_interval
                    };
                    next_ping = (next_ping + every).max(Instant::now());
                    nonce += 1;
                    let p = ClientMsg::Ping(Ping { nonce, sent_us: self.clock.now_us() });
                    if let Err(e) = self.write(&l.conn, p, EventClass::Critical).await {
                        return End::Lost(e);
                    }
                }
            }
        }
    }

    async fn write(
        &mut self,
        conn: &Connection,
        msg: ClientMsg,
        class: EventClass,
    ) -> Result<(), String> {
        if class == EventClass::Movement {
            if let Ok(d) = encode_datagram(&msg) {
                if d.len() <= MAX_DATAGRAM && conn.max_datagram_size().is_some_and(|m| d.len() <= m)
                {
                    return conn.send_datagram(d).map_err(|e| e.to_string());
                }
            }
        }
        let bytes: Bytes =
            encode_frame_to_bytes(&msg, DEFAULT_MAX_FRAME).map_err(|e| e.to_string())?;
        let s = match self.streams.entry(class) {
            std::collections::hash_map::Entry::Occupied(o) => o.into_mut(),
            std::collections::hash_map::Entry::Vacant(v) => {
                let s = conn.open_uni().await.map_err(|e| e.to_string())?;
                let _ = s.set_priority(class.quic_priority());
                v.insert(s)
            }
        };
        s.write_all(&bytes).await.map_err(|e| e.to_string())
    }

    /// Handles one message from the relay; `Some` ends the connection.
    async fn handle(&mut self, m: ServerMsg, events: &mpsc::Sender<ClientEvent>) -> Option<End> {
        let mut released = Vec::new();
        match m {
            ServerMsg::Events(b) => self.order.handle_batch(b, &mut released),
            ServerMsg::Keyframe(k) => self.order.handle_keyframe(k, &mut released),
            ServerMsg::Resync(k) => {
                let channel = k.channel;
                if self.order.handle_resync(k, &mut released) {
                    if let Some(v) = &mut self.verifier {
                        v.forget(channel);
                    }
                }
            }
            ServerMsg::ActionResult(r) => {
                if let Some(tx) = self.pending.remove(&r.seq) {
                    let _ = tx.send(Ok(r.outcome));
                }
            }
            ServerMsg::Subscriptions { added, removed } => {
                let restarted = self
                    .order
                    .handle_subscriptions(&added, &removed, &mut released);
                for c in removed.iter().chain(&restarted) {
                    if let Some(v) = &mut self.verifier {
                        v.forget(*c);
                    }
                }
                let _ = events
                    .send(ClientEvent::Subscriptions { added, removed })
                    .await;
            }
            ServerMsg::Pong(p) => {
                let sample = self.sync.handle_pong(&p, self.clock.now_us());
                if let Some(c) = &mut self.choice {
                    c.handle_current_rtt(Duration::from_micros(sample.rtt_us));
                }
                if let (Ok(mut s), Some(best), Some(e)) =
                    (self.shared.lock(), self.sync.best(), self.sync.estimate())
                {
                    s.stats.clock_offset_us = Some(e.offset_us);
                    s.stats.clock_error_us = Some(e.error_us);
                    s.stats.rtt_us = Some(best.rtt_us);
                }
            }
            ServerMsg::OriginPong(p) => {
                if let Some(tx) = self.origin_pings.remove(&p.nonce) {
                    let rtt = self.clock.now_us().saturating_sub(p.sent_us);
                    let _ = tx.send(Duration::from_micros(rtt));
                }
            }
            ServerMsg::GoAway(g) => {
                self.ticket = Some(g.resume_ticket);
                let to = g
                    .alternatives
                    .iter()
                    .filter_map(|r| r.addrs.first().and_then(|a| a.parse().ok()))
                    .collect();
                return Some(End::Moved(to));
            }
            ServerMsg::Error(e) => {
                debug!(code = ?e.code, message = %e.message, "relay reported an error");
                if self.spectate.is_some()
                    && matches!(
                        e.code,
                        ErrorCode::Forbidden | ErrorCode::Unsupported | ErrorCode::UnknownWorld
                    )
                {
                    return Some(End::Fatal(ClientError::Request {
                        code: e.code,
                        message: e.message,
                    }));
                }
            }
            ServerMsg::Spectate(f) => {
                if let Ok(mut s) = self.shared.lock() {
                    s.stats.spectator_frames += 1;
                }
                if events.send(ClientEvent::Spectate(f)).await.is_err() {
                    return Some(End::Bye);
                }
            }
            ServerMsg::Welcome(_)
            | ServerMsg::Refusal(_)
            | ServerMsg::Delta(_)
            | ServerMsg::Directory(_) => {}
        }
        let now = self.clock.now_us();
        let server_now = self.sync.to_server(now);
        for r in released {
            match r {
                Released::Batch(b) => {
                    if let Some(v) = &mut self.verifier {
                        if let Err(e) = v.verify(&b) {
                            return Some(End::Fatal(ClientError::Chain(e)));
                        }
                    }
                    if let Ok(mut s) = self.shared.lock() {
                        s.stats.events += b.events.len() as u64;
                        s.stats.order = self.order.stats();
                        if let Some(t) = server_now {
                            let lat = t.saturating_sub(b.origin_time_us).max(1);
                            for e in &b.events {
                                let h = s.latency[e.class.rank()].get_or_insert_with(|| {
                                    Histogram::new_with_bounds(1, 60_000_000, 2)
                                        .expect("constant, valid bounds")
                                });
                                let _ = h.record(lat.min(60_000_000));
                            }
                        }
                    }
                    for e in b.iter_events() {
                        if events.send(ClientEvent::Event(e)).await.is_err() {
                            return Some(End::Bye);
                        }
                    }
                }
                Released::Keyframe(k) => {
                    if let Ok(mut s) = self.shared.lock() {
                        s.stats.keyframes += 1;
                    }
                    if events.send(ClientEvent::Keyframe(k)).await.is_err() {
                        return Some(End::Bye);
                    }
                }
            }
        }
        None
    }
}
