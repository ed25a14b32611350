//! The relay's network shell: quinn and tokio around the pure cores.
//!
//! Tasks:
//! * **accept loop**: [`Admission`] (connections per IP, handshakes per second)
//!   before any cryptography; refused peers get a QUIC `CONNECTION_REFUSED`.
//! * **one task per client connection**: reads the first message on the client's
//!   control stream (`Hello`, or `Directory` which needs no token), verifies the
//!   token and resume ticket offline (in parallel across connections), asks the
//!   actor for a session, then reads the client's streams and datagrams through
//!   the session's [`EdgeGuard`] and answers pings itself.
//! * **one writer per client connection** (`writer.rs`): the connection's
//!   [`crate::Scheduler`] feeding one QUIC stream per event class (stream priority
//!   from the class), all polled by that one task; a class whose stream is
//!   blocked is skipped, so bulk never holds back critical.
//! * **one link task per origin**: connects with mutual TLS, reconnects with
//!   exponential backoff and jitter, reads the origin's lanes, writes actions on
//!   per-class streams (movement as datagrams), reports RTT to the routing table.
//! * **the actor**: owns the [`SessionTable`], [`Hub`], [`RoutingTable`] and the
//!   connection and link handles; everything stateful happens here, in order.
//!
//! Bounds: a client's outgoing queue is its scheduler (the writer's `Outbox` (`writer.rs`)),
//! bounded per class; when a reliable class overflows the client is
//! disconnected and resumes (its missed events are replayed), so a slow client
//! costs bounded memory and never slows others down.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::net::{IpAddr, SocketAddr};
use std::pin::pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use prometheus_client::metrics::counter::Counter;
use quinn::{Connection, Endpoint};
use rustc_hash::FxHashMap as HashMap;
use serde::Serialize;
use skylane_proto::{
    decode_datagram, decode_message, encode_frame_to_bytes, link_events_to_client_frame, Action,
    ActionResult, ChannelCursor, ClientMsg, ErrorCode, ErrorMsg, EventBatch, EventClass,
    FrameDecoder, GoAway, Hello, LinkMsg, Outcome, Ping, Pong, Refusal, RefusalCode, RejectCode,
    RelayInfo, Role, ServerMsg, SessionId, SpectatorSubscribe, TokenError, TokenVerifier, Welcome,
    WorldId, DEFAULT_MAX_FRAME, MAX_DATAGRAM, PROTOCOL_VERSION,
};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::admission::{Admission, AdmissionConfig};
use crate::edge::{EdgeConfig, EdgeGuard, Verdict};
use crate::geo::{Directory, GeoDb};
use crate::hub::{BatchFrame, Hub, HubConfig};
use crate::metrics::RelayMetrics;
use crate::peer::{connect_via, peer_task, serve_peer, PeerSpec};
use crate::routing::{Link, OriginId, Path, RoutingConfig, RoutingTable};
use crate::scheduler::{Outgoing, SchedulerConfig};
use crate::session::{AttachError, ConnId, Presence, SessionTable, TicketClaims, TicketKey};
use crate::spectate::{Audience, AudienceConfig};
use crate::writer::{close_too_slow, Outbox, Refused, Writer};

/// An origin this relay links to.
#[derive(Debug, Clone)]
pub struct OriginSpec {
    /// Its id in this relay's routing table.
    pub id: OriginId,
    /// Address (QUIC, mutual TLS).
    pub addr: SocketAddr,
    /// TLS server name in its certificate.
    pub server_name: String,
    /// Worlds it hosts.
    pub worlds: Vec<WorldId>,
}

/// Limits and timers.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Connection admission.
    pub admission: AdmissionConfig,
    /// Sessions held (connected and detached).
    pub max_sessions: usize,
    /// Largest frame accepted from a client.
    pub max_client_frame: usize,
    /// Actions buffered for a session until the origin acknowledges it.
    pub pending_actions: usize,
    /// How long a disconnected session is kept for a resume.
    pub session_grace: Duration,
    /// How long a resume ticket is valid.
    pub ticket_ttl: Duration,
    /// Time a new connection has to send its first message.
    pub hello_timeout: Duration,
    /// Longest a drain waits for clients to leave.
    pub drain_deadline: Duration,
    /// Spectator feed bounds (longest delay, buffered bytes, filter size).
    pub spectators: AudienceConfig,
    /// Frames queued for one spectator before it skips to the next keyframe.
    pub spectator_queue: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            admission: AdmissionConfig::default(),
            max_sessions: 50_000,
            max_client_frame: 16 * 1024,
            pending_actions: 64,
            session_grace: Duration::from_secs(30),
            ticket_ttl: Duration::from_secs(3600),
            hello_timeout: Duration::from_secs(5),
            drain_deadline: Duration::from_secs(30),
            spectators: AudienceConfig::default(),
            spectator_queue: 64,
        }
    }
}

/// Everything a relay needs besides its endpoint.
#[derive(Debug, Clone)]
pub struct RelaySettings {
    /// This relay.
    pub info: RelayInfo,
    /// Every relay of the deployment (this one included), for GeoIP answers.
    pub directory: Directory,
    /// GeoIP database, if configured.
    pub geo: Option<Arc<GeoDb>>,
    /// Origins and the worlds they host.
    pub origins: Vec<OriginSpec>,
    /// Client configuration for origin links (mutual TLS).
    pub link_tls: quinn::ClientConfig,
    /// Token verification (public key, audience).
    pub tokens: TokenVerifier,
    /// Deployment-wide resume ticket key.
    pub tickets: TicketKey,
    /// Limits and timers.
    pub limits: Limits,
    /// Edge anti-cheat.
    pub edge: EdgeConfig,
    /// Per-connection scheduler bounds.
    pub scheduler: SchedulerConfig,
    /// Fan-out ring and hole timeout.
    pub hub: HubConfig,
    /// Path selection.
    pub routing: RoutingConfig,
    /// Peer relays to measure and forward through (see [`crate::peer`]).
    pub peers: Vec<PeerSpec>,
    /// Client configuration for peer links (mutual TLS, ALPN `skylane-peer/1`);
    /// `None` disables outgoing peer links.
    pub peer_tls: Option<quinn::ClientConfig>,
}

/// Transport settings for the client-facing endpoint: bounded per-connection
/// memory (stream and connection windows, a few streams per client), idle
/// detection, keep-alive.
pub fn client_transport() -> quinn::TransportConfig {
    let mut t = quinn::TransportConfig::default();
    t.max_idle_timeout(Duration::from_secs(10).try_into().ok())
        // Only fires when the client has been silent this long (any packet
        // received resets it): the SDK keeps its own connection alive at a
        // quarter of its idle timeout, so with SDK clients the relay sends no
        // keep-alives of its own; at 2 s it doubled the idle chatter of every
        // client configured for longer idle periods.
        .keep_alive_interval(Some(Duration::from_secs(4)))
        .max_concurrent_uni_streams(16u32.into())
        .max_concurrent_bidi_streams(2u32.into())
        .stream_receive_window((64u32 * 1024).into())
        .receive_window((256u32 * 1024).into())
        // Unacknowledged bytes a connection may hold. Large on purpose: when it
        // fills, every stream's writes block, critical included, so bulk must
        // never be able to fill it. What it holds are shared frames (written
        // without a copy) that the scheduler's per-class bounds already limit.
        .send_window(8 * 1024 * 1024)
        .datagram_receive_buffer_size(Some(64 * 1024))
        .datagram_send_buffer_size(64 * 1024)
        // No segmentation offload: with it, every connection keeps a transmit
        // buffer sized for a 10-packet burst (~14 KiB) for its whole life; without,
        // one packet (~1.5 KiB). A game client's traffic is small frames, one or two
        // packets per flush, so GSO saves little CPU here and the memory is
        // multiplied by every idle player (docs/benchmarks.md, memory per session).
        .enable_segmentation_offload(false);
    t
}

/// Transport settings for origin links (mutual TLS, many sessions multiplexed).
pub fn link_transport() -> quinn::TransportConfig {
    let mut t = quinn::TransportConfig::default();
    t.max_idle_timeout(Duration::from_secs(5).try_into().ok())
        .keep_alive_interval(Some(Duration::from_millis(500)))
        .max_concurrent_uni_streams(64u32.into());
    t
}

/// Microseconds since the Unix epoch, advancing with tokio's clock (so paused
/// simulations see consistent times).
#[derive(Debug, Clone, Copy)]
struct Clock {
    base_unix_us: u64,
    base: Instant,
}

impl Clock {
    fn new() -> Self {
        let base_unix_us = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as u64);
        Self {
            base_unix_us,
            base: Instant::now(),
        }
    }
    fn unix_us(&self) -> u64 {
        self.base_unix_us + self.base.elapsed().as_micros() as u64
    }
    fn unix_secs(&self) -> u64 {
        self.unix_us() / 1_000_000
    }
}

/// A relay's state as `/status` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct RelayStatus {
    /// Relay id.
    pub relay: u32,
    /// Region.
    pub region: String,
    /// Whether it is draining.
    pub draining: bool,
    /// Client connections.
    pub connections: usize,
    /// Sessions with a live connection.
    pub sessions_connected: usize,
    /// Sessions waiting for a resume.
    pub sessions_detached: usize,
    /// Origin links.
    pub origins: Vec<OriginStatus>,
    /// Chosen path per world.
    pub routes: Vec<RouteStatus>,
    /// Batches received from origins.
    pub batches_in: u64,
    /// Frames handed to clients.
    pub frames_out: u64,
}

/// One origin link in [`RelayStatus`].
#[derive(Debug, Clone, Serialize)]
pub struct OriginStatus {
    /// Origin id.
    pub id: u32,
    /// Address.
    pub addr: String,
    /// Whether the link is up.
    pub up: bool,
    /// Smoothed RTT in milliseconds (quinn's estimate).
    pub rtt_ms: Option<f64>,
}

/// One world's route in [`RelayStatus`].
#[derive(Debug, Clone, Serialize)]
pub struct RouteStatus {
    /// World.
    pub world: u64,
    /// `direct:<origin>`, `via:<relay>:<origin>` or `unreachable`.
    pub path: String,
}

pub(crate) enum Cmd {
    Hello {
        conn_id: ConnId,
        ip: IpAddr,
        player: String,
        role: Role,
        world: WorldId,
        resume: Option<SessionId>,
        last_seen: Vec<ChannelCursor>,
        out: Arc<Outbox>,
        conn: Connection,
        reply: oneshot::Sender<Result<Welcome, Refusal>>,
    },
    Action {
        session: SessionId,
        action: Action,
    },
    OriginPing {
        session: SessionId,
        ping: Ping,
    },
    Bye {
        session: SessionId,
    },
    Spectate {
        session: SessionId,
        sub: SpectatorSubscribe,
        tx: mpsc::Sender<Bytes>,
    },
    Gone {
        conn_id: ConnId,
    },
    LinkUp {
        origin: OriginId,
        path: Path,
        link: LinkTx,
    },
    /// A link ended (`failed`) or was closed to follow a route change.
    LinkDown {
        origin: OriginId,
        path: Path,
        failed: bool,
    },
    /// A measurement of the direct path (link RTT, or a probe while forwarded).
    DirectRtt {
        origin: OriginId,
        rtt: Duration,
    },
    PeerReport {
        peer: skylane_proto::RelayId,
        rtt: Duration,
        reports: Vec<(OriginId, Duration)>,
    },
    PeerDown {
        peer: skylane_proto::RelayId,
    },
    FromOrigin {
        origin: OriginId,
        body: Bytes,
    },
    Drain,
    Status(oneshot::Sender<RelayStatus>),
}

/// Handle to a running relay.
#[derive(Debug, Clone)]
pub struct Relay {
    cmd: mpsc::Sender<Cmd>,
    done: watch::Receiver<bool>,
    addr: SocketAddr,
    clock: Clock,
}

impl Relay {
    /// Serves clients on `endpoint` (configured with the relay's client-facing
    /// server config) and links to the configured origins through it. Must be
    /// called inside a tokio runtime.
    pub fn spawn(endpoint: Endpoint, settings: RelaySettings, metrics: RelayMetrics) -> Self {
        let (cmd_tx, cmd_rx) = mpsc::channel(65_536);
        let (done_tx, done) = watch::channel(false);
        let addr = endpoint
            .local_addr()
            .unwrap_or_else(|_| ([0, 0, 0, 0], 0).into());
        let clock = Clock::new();
        let shared = Arc::new(Shared {
            settings: settings.clone(),
            metrics: metrics.clone(),
            cmd: cmd_tx.clone(),
            admission: Mutex::new(Admission::new(settings.limits.admission)),
            clock,
            endpoint: endpoint.clone(),
            direct: Mutex::new(HashMap::default()),
        });
        let mut routing = RoutingTable::new(settings.routing);
        for o in &settings.origins {
            for w in &o.worlds {
                routing.handle_world(*w, o.id);
            }
        }
        let mut links = HashMap::default();
        for o in &settings.origins {
            let (route, route_rx) = watch::channel(None);
            let task = tokio::spawn(link_task(shared.clone(), o.clone(), route_rx));
            links.insert(
                o.id,
                LinkState {
                    spec: o.clone(),
                    tx: None,
                    path: None,
                    rtt: None,
                    route,
                    task,
                },
            );
        }
        let mut peer_tasks = Vec::new();
        if settings.peer_tls.is_some() {
            for p in &settings.peers {
                if p.id != settings.info.id {
                    peer_tasks.push(tokio::spawn(peer_task(shared.clone(), p.clone())));
                }
            }
        }
        let accept = tokio::spawn(accept_loop(shared.clone(), endpoint.clone()));
        let actor = Actor {
            sessions: SessionTable::new(
                settings.info.id,
                settings.limits.session_grace,
                settings.limits.max_sessions,
            ),
            hub: Hub::new(settings.hub),
            routing,
            links,
            conns: HashMap::default(),
            feeds: HashMap::default(),
            audiences: HashMap::default(),
            spectators: HashMap::default(),
            offsets: HashMap::default(),
            draining: None,
            peer_tasks,
            shared,
        };
        tokio::spawn(async move {
            actor.run(cmd_rx, endpoint).await;
            accept.abort();
            let _ = done_tx.send(true);
        });
        Self {
            cmd: cmd_tx,
            done,
            addr,
            clock,
        }
    }

    /// The relay's clock now, microseconds since the Unix epoch: what its pongs
    /// and welcome carry (clients synchronise to it).
    pub fn unix_us(&self) -> u64 {
        self.clock.unix_us()
    }

    /// The address clients connect to.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Starts a drain: every client gets a go-away naming other relays; the relay
    /// exits when its clients have left or the drain deadline passes.
    pub fn drain(&self) {
        let _ = self.cmd.try_send(Cmd::Drain);
    }

    /// The relay's state now (`None` once it has exited).
    pub async fn status(&self) -> Option<RelayStatus> {
        let (tx, rx) = oneshot::channel();
        self.cmd.send(Cmd::Status(tx)).await.ok()?;
        rx.await.ok()
    }

    /// Resolves when the relay has exited (after a drain).
    pub async fn closed(&self) {
        let mut done = self.done.clone();
        let _ = done.wait_for(|d| *d).await;
    }
}

pub(crate) struct Shared {
    pub(crate) settings: RelaySettings,
    pub(crate) metrics: RelayMetrics,
    pub(crate) cmd: mpsc::Sender<Cmd>,
    admission: Mutex<Admission>,
    clock: Clock,
    endpoint: Endpoint,
    /// RTT of each direct origin link that is up (what peers are told).
    direct: Mutex<HashMap<OriginId, Duration>>,
}

impl Shared {
    /// Direct origin links that are up, with their RTT, by origin address.
    pub(crate) fn direct_rtts(&self) -> Vec<(SocketAddr, Duration)> {
        let Ok(d) = self.direct.lock() else {
            return Vec::new();
        };
        self.settings
            .origins
            .iter()
            .filter_map(|o| d.get(&o.id).map(|rtt| (o.addr, *rtt)))
            .collect()
    }

    fn set_direct(&self, origin: OriginId, rtt: Option<Duration>) {
        if let Ok(mut d) = self.direct.lock() {
            match rtt {
                Some(r) => d.insert(origin, r),
                None => d.remove(&origin),
            };
        }
    }

    /// A QUIC connection from this relay's endpoint (handshake within 5 s).
    pub(crate) async fn dial(
        &self,
        tls: quinn::ClientConfig,
        addr: SocketAddr,
        server_name: &str,
    ) -> Result<Connection, String> {
        let connecting = self
            .endpoint
            .connect_with(tls, addr, server_name)
            .map_err(|e| e.to_string())?;
        tokio::time::timeout(Duration::from_secs(5), connecting)
            .await
            .map_err(|_| "handshake timeout".to_string())?
            .map_err(|e| e.to_string())
    }

    /// A mutual-TLS connection straight to an origin (no link protocol yet).
    pub(crate) async fn connect_origin_direct(
        &self,
        spec: &OriginSpec,
    ) -> Result<Connection, String> {
        self.dial(self.settings.link_tls.clone(), spec.addr, &spec.server_name)
            .await
    }

    fn now(&self) -> std::time::Instant {
        Instant::now().into_std()
    }

    /// The `count` relays nearest to a client at `ip` (GeoIP), or the directory
    /// order when it cannot be placed; an undecodable record is counted.
    fn nearest_relays(&self, ip: IpAddr, count: usize) -> Vec<RelayInfo> {
        let location = match self.settings.geo.as_deref().map(|g| g.lookup(ip)) {
            Some(Ok(l)) => l,
            Some(Err(e)) => {
                self.metrics.geoip_undecodable.inc();
                debug!(cause = %e, "GeoIP lookup failed");
                None
            }
            None => None,
        };
        self.settings.directory.for_location(location, count)
    }

    fn alternatives(&self, ip: IpAddr, count: usize) -> Vec<RelayInfo> {
        let me = self.settings.info.id;
        self.nearest_relays(ip, count + 1)
            .into_iter()
            .filter(|r| r.id != me)
            .take(count)
            .collect()
    }
}

async fn accept_loop(shared: Arc<Shared>, endpoint: Endpoint) {
    let mut next: u64 = 1;
    while let Some(incoming) = endpoint.accept().await {
        let ip = incoming.remote_address().ip();
        let verdict = shared
            .admission
            .lock()
            .map_or(Ok(()), |mut a| a.handle_incoming(shared.now(), ip));
        if let Err(why) = verdict {
            RelayMetrics::count(&shared.metrics.admission_refused, why.label());
            incoming.refuse();
            continue;
        }
        let conn_id: ConnId = next;
        next += 1;
        let shared = shared.clone();
        tokio::spawn(async move {
            shared.metrics.connections.inc();
            match incoming.await {
                // Boxed: a task's future is sized for its largest state, and
                // thousands of these live as long as their connections.
                Ok(conn) if is_peer(&conn) => Box::pin(serve_peer(shared.clone(), conn)).await,
                Ok(conn) => serve_client(&shared, conn, conn_id).await,
                Err(e) => debug!(cause = %e, "client handshake failed"),
            }
            shared.metrics.connections.dec();
            if let Ok(mut a) = shared.admission.lock() {
                a.handle_closed(ip);
            }
        });
    }
}

/// Whether a connection negotiated the peer-relay ALPN.
fn is_peer(conn: &Connection) -> bool {
    conn.handshake_data()
        .and_then(|h| h.downcast::<quinn::crypto::rustls::HandshakeData>().ok())
        .and_then(|h| h.protocol)
        .is_some_and(|p| p == skylane_proto::PEER_ALPN)
}

fn refusal_of(e: &TokenError) -> RefusalCode {
    match e {
        TokenError::Expired { .. } | TokenError::NotYetValid { .. } => RefusalCode::TokenExpired,
        TokenError::WrongRole { .. } => RefusalCode::WrongRole,
        TokenError::WorldNotAllowed { .. } => RefusalCode::WorldNotAllowed,
        _ => RefusalCode::BadToken,
    }
}

fn frame(msg: &ServerMsg) -> Bytes {
    encode_frame_to_bytes(msg, DEFAULT_MAX_FRAME).unwrap_or_default()
}

/// Writes one message on the control stream, finishes it, waits (briefly) for the
/// peer to have it, and closes the connection.
async fn answer_and_close(conn: &Connection, mut send: quinn::SendStream, msg: &ServerMsg) {
    let _ = send.write_all(&frame(msg)).await;
    let _ = send.finish();
    let _ = tokio::time::timeout(Duration::from_secs(2), send.stopped()).await;
    conn.close(0u32.into(), b"done");
}

pub use skylane_proto::MAX_PROBE_PINGS;

/// A tokenless RTT and clock probe (`skylane probe`): a connection whose first
/// message is a ping gets a pong for it and for every further ping, up to
/// [`MAX_PROBE_PINGS`], each within the hello timeout; then it is closed. No
/// session, no world, nothing kept.
async fn serve_probe(
    shared: &Arc<Shared>,
    conn: &Connection,
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    mut dec: FrameDecoder,
    first: Ping,
) {
    let mut ping = first;
    let mut received_us = shared.clock.unix_us();
    for _ in 0..MAX_PROBE_PINGS {
        let pong = ServerMsg::Pong(Pong {
            nonce: ping.nonce,
            sent_us: ping.sent_us,
            received_us,
            replied_us: shared.clock.unix_us(),
        });
        if send.write_all(&frame(&pong)).await.is_err() {
            return;
        }
        let next = tokio::time::timeout(
            shared.settings.limits.hello_timeout,
            read_first(&mut recv, &mut dec),
        )
        .await;
        received_us = shared.clock.unix_us();
        match next {
            Ok(Ok(ClientMsg::Ping(p))) => ping = p,
            _ => break,
        }
    }
    let _ = send.finish();
    conn.close(0u32.into(), b"probe done");
}

async fn read_first(
    recv: &mut quinn::RecvStream,
    dec: &mut FrameDecoder,
) -> Result<ClientMsg, &'static str> {
    loop {
        match dec.poll_message::<ClientMsg>() {
            Ok(Some(m)) => return Ok(m),
            Ok(None) => {}
            Err(e) => return Err(e.label()),
        }
        match recv.read_chunk(DEFAULT_MAX_FRAME, true).await {
            Ok(Some(c)) => dec.push(&c.bytes),
            _ => return Err("closed"),
        }
    }
}

/// An admitted connection: its control stream and its reader.
struct Admitted {
    send: quinn::SendStream,
    recv: quinn::RecvStream,
    dec: FrameDecoder,
    reader: Arc<ClientReader>,
}

/// Serves one client connection: admission, then its reads until it closes.
async fn serve_client(shared: &Arc<Shared>, conn: Connection, conn_id: ConnId) {
    // Admission's many locals live in their own (freed) allocation, not in the
    // connection task's future for the connection's whole life.
    let Some(Admitted {
        send,
        recv,
        dec,
        reader,
    }) = Box::pin(admit(shared, &conn, conn_id)).await
    else {
        return;
    };
    // This task reads the control stream, datagrams and the streams the client
    // opens (at most one per class, bounded by the transport's stream limit) and
    // drives a player's writer: one task per connection. `send` stays open for the
    // connection's life.
    let mut writer = (reader.role == Role::Player).then(|| {
        Writer::new(
            conn.clone(),
            reader.out.clone(),
            &shared.metrics,
            reader.session,
        )
    });
    let mut timer = pin!(tokio::time::sleep_until(Instant::now()));
    let max = shared.settings.limits.max_client_frame;
    let (mut recv, mut dec) = (recv, dec);
    // Whatever followed the hello in the same chunk first.
    let mut control = Box::pin(reader.drain(&mut recv, &mut dec))
        .await
        .ok()
        .map(|()| (recv, dec));
    let mut streams = ClientStreams::default();
    loop {
        // Only the waits are raced (each is cancel safe); messages are handled
        // outside the race so none is dropped half-handled. Handling is boxed: it
        // is short-lived, and its futures would otherwise size this task (which
        // lives as long as the connection) for their largest state.
        let input = tokio::select! {
            c = async {
                match control.as_mut() {
                    Some((recv, _)) => recv.read_chunk(DEFAULT_MAX_FRAME, true).await,
                    None => std::future::pending().await,
                }
            } => Input::Control(c.ok().flatten().map(|c| c.bytes)),
            r = conn.accept_uni() => Input::Stream(r),
            i = poll_fn(|cx| streams.poll_read(cx)) => Input::StreamData(i),
            d = conn.read_datagram() => Input::Datagram(d),
            () = poll_fn(|cx| match writer.as_mut() {
                Some(w) => w.poll(cx, timer.as_mut()),
                None => Poll::Pending,
            }) => Input::WriterDone,
        };
        match input {
            Input::Control(Some(bytes)) => {
                if let Some((recv, dec)) = control.as_mut() {
                    dec.push(&bytes);
                    if Box::pin(reader.drain(recv, dec)).await.is_err() {
                        control = None;
                    }
                }
            }
            Input::Control(None) => control = None,
            Input::Stream(Ok(r)) => streams.add(r, FrameDecoder::new(max)),
            Input::StreamData(Ok(i)) => {
                let (recv, dec) = &mut streams.open[i];
                if Box::pin(reader.drain(recv, dec)).await.is_err() {
                    streams.open.swap_remove(i);
                }
            }
            Input::StreamData(Err(i)) => {
                streams.open.swap_remove(i);
            }
            Input::Datagram(Ok(d)) => match decode_datagram::<ClientMsg>(d) {
                Ok(m) => Box::pin(reader.handle(m)).await,
                Err(e) => RelayMetrics::count(&shared.metrics.decode_errors, e.label()),
            },
            Input::Stream(Err(_)) | Input::Datagram(Err(_)) | Input::WriterDone => break,
        }
    }
    reader.out.close();
    drop(send);
    let _ = Box::pin(shared.cmd.send(Cmd::Gone { conn_id })).await;
}

/// Reads the hello, checks token and ticket, gets a session from the actor, sends
/// the welcome and starts the writer. `None` when the client was refused or left.
async fn admit(shared: &Arc<Shared>, conn: &Connection, conn_id: ConnId) -> Option<Admitted> {
    let s = &shared.settings;
    let ip = conn.remote_address().ip();
    let Ok(Ok((send, mut recv))) =
        tokio::time::timeout(s.limits.hello_timeout, conn.accept_bi()).await
    else {
        conn.close(1u32.into(), b"no control stream");
        return None;
    };
    let mut dec = FrameDecoder::new(s.limits.max_client_frame);
    let first =
        match tokio::time::timeout(s.limits.hello_timeout, read_first(&mut recv, &mut dec)).await {
            Ok(Ok(m)) => m,
            Ok(Err(label)) => {
                RelayMetrics::count(&shared.metrics.decode_errors, label);
                conn.close(1u32.into(), b"bad first message");
                return None;
            }
            Err(_) => {
                conn.close(1u32.into(), b"hello timeout");
                return None;
            }
        };
    let refuse = |code: RefusalCode, reason: String| {
        RelayMetrics::count(&shared.metrics.refusals, format!("{code:?}").to_lowercase());
        debug!(?code, %reason, "refusing client");
        ServerMsg::Refusal(Refusal { code, reason })
    };
    let hello: Hello = match first {
        ClientMsg::Hello(h) => h,
        ClientMsg::Directory { addr, count } => {
            let target = addr.and_then(|a| a.parse::<IpAddr>().ok()).unwrap_or(ip);
            let relays = shared.nearest_relays(target, usize::from(count.clamp(1, 16)));
            answer_and_close(conn, send, &ServerMsg::Directory(relays)).await;
            return None;
        }
        ClientMsg::Ping(p) => {
            serve_probe(shared, conn, send, recv, dec, p).await;
            return None;
        }
        _ => {
            let msg = refuse(RefusalCode::ProtocolViolation, "expected hello".into());
            {
                answer_and_close(conn, send, &msg).await;
                return None;
            }
        }
    };
    if hello.version != PROTOCOL_VERSION {
        let msg = refuse(
            RefusalCode::VersionMismatch,
            format!(
                "relay speaks version {PROTOCOL_VERSION}, not {}",
                hello.version
            ),
        );
        {
            answer_and_close(conn, send, &msg).await;
            return None;
        }
    }
    let now_unix = shared.clock.unix_secs();
    let claims = match s.tokens.verify(&hello.token, now_unix) {
        Ok(c) => c,
        Err(e) => {
            let msg = refuse(refusal_of(&e), e.to_string());
            {
                answer_and_close(conn, send, &msg).await;
                return None;
            }
        }
    };
    if claims.role == Role::Operator {
        let msg = refuse(
            RefusalCode::WrongRole,
            "operators cannot join worlds".into(),
        );
        {
            answer_and_close(conn, send, &msg).await;
            return None;
        }
    }
    if !claims.allows_world(hello.world) {
        let msg = refuse(
            RefusalCode::WorldNotAllowed,
            format!("token does not allow {}", hello.world),
        );
        {
            answer_and_close(conn, send, &msg).await;
            return None;
        }
    }
    let resume = match &hello.resume {
        None => None,
        Some(t) => match s.tickets.verify(t, now_unix) {
            Ok(tc)
                if tc.player == claims.sub && tc.world == hello.world && tc.role == claims.role =>
            {
                Some(tc.session)
            }
            Ok(_) => {
                let msg = refuse(
                    RefusalCode::ResumeRejected,
                    "ticket belongs to another player or world".into(),
                );
                {
                    answer_and_close(conn, send, &msg).await;
                    return None;
                }
            }
            Err(e) => {
                let msg = refuse(RefusalCode::ResumeRejected, e.to_string());
                {
                    answer_and_close(conn, send, &msg).await;
                    return None;
                }
            }
        },
    };
    let outbox = Outbox::new(s.scheduler);
    let (reply_tx, reply_rx) = oneshot::channel();
    let role = claims.role;
    let cmd = Cmd::Hello {
        conn_id,
        ip,
        player: claims.sub,
        role,
        world: hello.world,
        resume,
        last_seen: hello.last_seen,
        out: outbox.clone(),
        conn: conn.clone(),
        reply: reply_tx,
    };
    if shared.cmd.send(cmd).await.is_err() {
        return None;
    }
    let welcome = match reply_rx.await {
        Ok(Ok(w)) => w,
        Ok(Err(r)) => {
            let msg = refuse(r.code, r.reason);
            {
                answer_and_close(conn, send, &msg).await;
                return None;
            }
        }
        Err(_) => return None,
    };
    let session = welcome.session;
    let mut send = send;
    if send
        .write_all(&frame(&ServerMsg::Welcome(welcome)))
        .await
        .is_err()
    {
        let _ = shared.cmd.send(Cmd::Gone { conn_id }).await;
        return None;
    }
    // A spectator's feed: one ordered stream fed from a short queue; when the queue
    // is full the audience makes it skip to the next keyframe. The few replies a
    // spectator gets (pongs, errors, go-away) come from its outbox and share that
    // stream, ahead of the feed.
    let spectate = if role == Role::Spectator {
        let (tx, rx) = mpsc::channel(s.limits.spectator_queue.max(1));
        tokio::spawn(write_spectator(
            conn.clone(),
            rx,
            outbox.clone(),
            shared.metrics.clone(),
            session,
        ));
        Some(tx)
    } else {
        // A player's writer is polled by its connection's task (see `serve_client`).
        None
    };
    let reader = Arc::new(ClientReader {
        shared: shared.clone(),
        conn: conn.clone(),
        session,
        role,
        spectate,
        out: outbox,
        guard: Mutex::new(EdgeGuard::new(s.edge, shared.now())),
        origin_pings: Mutex::new((Instant::now(), 0)),
    });
    Some(Admitted {
        send,
        recv,
        dec,
        reader,
    })
}

/// What woke a player connection's task.
enum Input {
    Control(Option<Bytes>),
    Stream(Result<quinn::RecvStream, quinn::ConnectionError>),
    Datagram(Result<Bytes, quinn::ConnectionError>),
    /// The writer stopped: the connection broke or the client was too slow.
    WriterDone,
    /// New bytes in the client stream at this index (`Err`: it ended or failed).
    StreamData(Result<usize, usize>),
}

/// The streams a client opened, read by its connection's task.
#[derive(Default)]
struct ClientStreams {
    open: Vec<(quinn::RecvStream, FrameDecoder)>,
    /// Where the next poll starts, so a busy stream cannot starve the others.
    next: usize,
}

impl ClientStreams {
    fn add(&mut self, recv: quinn::RecvStream, dec: FrameDecoder) {
        self.open.push((recv, dec));
    }

    /// Reads what one stream has into its decoder; `Ok(index)` when that stream
    /// has new bytes, `Err(index)` when it ended or failed.
    fn poll_read(&mut self, cx: &mut Context<'_>) -> Poll<Result<usize, usize>> {
        let n = self.open.len();
        let mut buf = [0u8; 4096];
        for k in 0..n {
            let i = (self.next + k) % n;
            let (recv, dec) = &mut self.open[i];
            match recv.poll_read(cx, &mut buf) {
                Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => return Poll::Ready(Err(i)),
                Poll::Ready(Ok(len)) => {
                    dec.push(&buf[..len]);
                    self.next = i + 1;
                    return Poll::Ready(Ok(i));
                }
                Poll::Pending => {}
            }
        }
        Poll::Pending
    }
}

struct ClientReader {
    shared: Arc<Shared>,
    conn: Connection,
    session: SessionId,
    role: Role,
    spectate: Option<mpsc::Sender<Bytes>>,
    out: Arc<Outbox>,
    guard: Mutex<EdgeGuard>,
    /// Origin pings in the current second (at most [`MAX_ORIGIN_PINGS_PER_SEC`]).
    origin_pings: Mutex<(Instant, u32)>,
}

/// Origin pings a session may send per second; more are dropped (each costs the
/// origin link a message).
pub const MAX_ORIGIN_PINGS_PER_SEC: u32 = 10;

impl ClientReader {
    /// Handles every complete message in `dec`. An undecodable frame stops the
    /// stream (the client is told why) and is an error.
    async fn drain(&self, recv: &mut quinn::RecvStream, dec: &mut FrameDecoder) -> Result<(), ()> {
        loop {
            match dec.poll_message::<ClientMsg>() {
                Ok(Some(m)) => self.handle(m).await,
                Ok(None) => return Ok(()),
                Err(e) => {
                    RelayMetrics::count(&self.shared.metrics.decode_errors, e.label());
                    self.reply(
                        EventClass::Critical,
                        &ServerMsg::Error(ErrorMsg {
                            code: ErrorCode::Malformed,
                            message: format!("undecodable frame: {e}"),
                        }),
                    );
                    let _ = recv.stop(1u32.into());
                    return Err(());
                }
            }
        }
    }

    fn reply(&self, class: EventClass, msg: &ServerMsg) {
        // A full outbox stops and its writer closes the connection as too slow.
        let _ = self.out.push(Outgoing {
            class,
            session: self.session,
            entity: None,
            droppable: false,
            bytes: frame(msg),
        });
    }

    async fn handle(&self, msg: ClientMsg) {
        let m = &self.shared.metrics;
        match msg {
            ClientMsg::Ping(p) => {
                let now = self.shared.clock.unix_us();
                self.reply(
                    EventClass::Critical,
                    &ServerMsg::Pong(Pong {
                        nonce: p.nonce,
                        sent_us: p.sent_us,
                        received_us: now,
                        replied_us: now,
                    }),
                );
            }
            ClientMsg::Action(action) => {
                if self.role != Role::Player {
                    return self.reject(&action, RejectCode::Forbidden, "spectators cannot act");
                }
                let verdict = self.guard.lock().map_or(Verdict::Pass, |mut g| {
                    g.handle_action(self.shared.now(), &action)
                });
                match verdict {
                    Verdict::Pass => {
                        let _ = self
                            .shared
                            .cmd
                            .send(Cmd::Action {
                                session: self.session,
                                action,
                            })
                            .await;
                    }
                    Verdict::Drop(v) => {
                        RelayMetrics::count(&m.edge_violations, v.label());
                        let code = match v {
                            crate::EdgeViolation::RateLimited(_) => RejectCode::RateLimited,
                            crate::EdgeViolation::Replayed { .. } => RejectCode::Replayed,
                            crate::EdgeViolation::TooLarge { .. } => RejectCode::TooLarge,
                            crate::EdgeViolation::BadTimestamp { .. } => RejectCode::BadTimestamp,
                        };
                        self.reject(&action, code, &v.to_string());
                    }
                    Verdict::Disconnect(v) => {
                        RelayMetrics::count(&m.edge_violations, v.label());
                        m.edge_disconnects.inc();
                        warn!(session = %self.session, violation = %v, "edge guard disconnects session");
                        self.end(3, b"too many violations").await;
                    }
                }
            }
            ClientMsg::OriginPing(ping) => {
                let allowed = self.origin_pings.lock().is_ok_and(|mut w| {
                    let now = Instant::now();
                    if now.duration_since(w.0) >= Duration::from_secs(1) {
                        *w = (now, 0);
                    }
                    w.1 += 1;
                    w.1 <= MAX_ORIGIN_PINGS_PER_SEC
                });
                if allowed {
                    let session = self.session;
                    let _ = self
                        .shared
                        .cmd
                        .send(Cmd::OriginPing { session, ping })
                        .await;
                } else {
                    RelayMetrics::count(&m.edge_violations, "origin_ping_rate");
                }
            }
            ClientMsg::Bye => self.end(0, b"bye").await,
            ClientMsg::Hello(_) | ClientMsg::Directory { .. } => self.reply(
                EventClass::Critical,
                &ServerMsg::Error(ErrorMsg {
                    code: ErrorCode::Unexpected,
                    message: "hello and directory are first messages only".into(),
                }),
            ),
            ClientMsg::SpectatorSubscribe(sub) => match &self.spectate {
                Some(tx) => {
                    let cmd = Cmd::Spectate {
                        session: self.session,
                        sub,
                        tx: tx.clone(),
                    };
                    let _ = self.shared.cmd.send(cmd).await;
                }
                None => {
                    RelayMetrics::count(&m.spectators_refused, "not_a_spectator");
                    self.reply(
                        EventClass::Critical,
                        &ServerMsg::Error(ErrorMsg {
                            code: ErrorCode::Forbidden,
                            message: format!(
                                "a {} token cannot watch the spectator feed",
                                self.role
                            ),
                        }),
                    );
                }
            },
            ClientMsg::Subscribe(_) | ClientMsg::Unsubscribe(_) => {
                self.reply(
                    EventClass::Critical,
                    &ServerMsg::Error(ErrorMsg {
                        code: ErrorCode::Unexpected,
                        message: "channel interest is managed by the origin".into(),
                    }),
                );
            }
        }
    }

    /// Ends the session for good and closes the connection.
    async fn end(&self, code: u32, reason: &[u8]) {
        let session = self.session;
        let _ = self.shared.cmd.send(Cmd::Bye { session }).await;
        self.conn.close(code.into(), reason);
    }

    fn reject(&self, action: &Action, code: RejectCode, detail: &str) {
        self.reply(
            EventClass::Critical,
            &ServerMsg::ActionResult(ActionResult {
                seq: action.seq,
                outcome: Outcome::Rejected {
                    code,
                    detail: detail.to_owned(),
                },
            }),
        );
    }
}

/// The clock offset of the lowest-RTT sample.
fn best_offset(window: &VecDeque<(u64, i64)>) -> Option<i64> {
    window.iter().min_by_key(|(rtt, _)| *rtt).map(|(_, o)| *o)
}

/// Writes a spectator's frames, in order, on one stream of its own, with the
/// replies to its requests (replies first when both wait).
async fn write_spectator(
    conn: Connection,
    mut feed: mpsc::Receiver<Bytes>,
    replies: Arc<Outbox>,
    metrics: RelayMetrics,
    session: SessionId,
) {
    let Ok(mut stream) = conn.open_uni().await else {
        replies.close();
        return;
    };
    let _ = stream.set_priority(EventClass::State.quic_priority());
    loop {
        let bytes = tokio::select! {
            biased;
            r = poll_fn(|cx| replies.poll_next(cx)) => match r {
                Ok(o) => o.bytes,
                Err(Refused::Full) => {
                    close_too_slow(&conn, &metrics.slow_clients, session);
                    return;
                }
                Err(Refused::Closed) => return,
            },
            f = feed.recv() => match f {
                Some(b) => b,
                None => break,
            },
        };
        if stream.write_chunk(bytes).await.is_err() {
            break;
        }
    }
    replies.close();
}

/// Control frames queued towards one origin before the link counts as stuck.
const LINK_CONTROL_QUEUE: usize = 65_536;

/// Application close code of a link the relay gave up on because its control
/// lane was full.
const LINK_BACKLOG_CODE: u32 = 2;

/// Senders into one origin link.
#[derive(Clone)]
pub(crate) struct LinkTx {
    conn: Connection,
    control: mpsc::Sender<Bytes>,
    actions: Vec<mpsc::Sender<Bytes>>,
    /// `link_control_dropped` and `link_backlog_cuts` (the rest of the metrics
    /// would make every `Cmd` as large as this).
    shed: Counter,
    cuts: Counter,
}

/// What becomes of a control message its link's lane has no room for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WhenFull {
    /// A measurement (ping, pong): lost like a datagram, counted.
    Shed,
    /// It changes what the origin knows of sessions or feeds: losing it would
    /// leave the origin wrong (a session never opened, a player never leaving),
    /// so the link is closed instead. The reconnect re-opens every session from
    /// its cursors and every spectator feed, and the origin drops the sessions
    /// nobody re-opens after its grace period.
    CutLink,
}

fn when_full(msg: &LinkMsg) -> WhenFull {
    match msg {
        LinkMsg::Ping(_) | LinkMsg::Pong(_) | LinkMsg::SessionPing { .. } => WhenFull::Shed,
        _ => WhenFull::CutLink,
    }
}

impl LinkTx {
    /// Queues a control message; see [`WhenFull`] for a full lane. A closed lane
    /// (the link is going down) needs nothing: the next link re-opens everything.
    fn send_control(&self, msg: &LinkMsg) {
        let kind = match encode_frame_to_bytes(msg, DEFAULT_MAX_FRAME) {
            Ok(b) => match self.control.try_send(b) {
                Ok(()) | Err(mpsc::error::TrySendError::Closed(_)) => return,
                Err(mpsc::error::TrySendError::Full(_)) => when_full(msg),
            },
            Err(e) => {
                // Only an oversized frame fails to encode: a bug, not a load
                // issue, and a reconnect would fail the same way.
                warn!(cause = %e, "link control message not encodable; dropped");
                return;
            }
        };
        match kind {
            WhenFull::Shed => {
                self.shed.inc();
            }
            WhenFull::CutLink => {
                if self.conn.close_reason().is_none() {
                    self.cuts.inc();
                    warn!(
                        queued = LINK_CONTROL_QUEUE,
                        "origin link control lane full: closing the link to re-open its sessions"
                    );
                    self.conn
                        .close(LINK_BACKLOG_CODE.into(), b"relay control backlog");
                }
            }
        }
    }

    fn send_action(&self, session: SessionId, action: Action) -> bool {
        let class = action.class;
        let msg = LinkMsg::Action { session, action };
        if class == EventClass::Movement {
            if let Ok(d) = skylane_proto::encode_datagram(&msg) {
                if d.len() <= MAX_DATAGRAM
                    && self.conn.max_datagram_size().is_some_and(|m| d.len() <= m)
                {
                    return self.conn.send_datagram(d).is_ok();
                }
            }
        }
        match encode_frame_to_bytes(&msg, DEFAULT_MAX_FRAME) {
            Ok(b) => self.actions[class.rank()].try_send(b).is_ok(),
            Err(_) => false,
        }
    }
}

async fn link_writer(
    conn: Connection,
    mut stream: Option<quinn::SendStream>,
    priority: i32,
    mut rx: mpsc::Receiver<Bytes>,
) {
    while let Some(b) = rx.recv().await {
        if stream.is_none() {
            match conn.open_uni().await {
                Ok(s) => stream = Some(s),
                Err(_) => return,
            }
        }
        let Some(s) = stream.as_mut() else { return };
        let _ = s.set_priority(priority);
        if s.write_all(&b).await.is_err() {
            return;
        }
    }
}

async fn link_reader(
    shared: Arc<Shared>,
    origin: OriginId,
    mut recv: quinn::RecvStream,
    mut dec: FrameDecoder,
) {
    loop {
        loop {
            match dec.poll_frame() {
                Ok(Some(body)) => {
                    if shared
                        .cmd
                        .send(Cmd::FromOrigin { origin, body })
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    RelayMetrics::count(&shared.metrics.decode_errors, e.label());
                    let _ = recv.stop(1u32.into());
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

/// Keeps one origin link connected over the path the routing table chose:
/// straight to the origin, or forwarded by a peer relay. Reconnects with
/// exponential backoff and jitter; follows route changes by closing the link and
/// reconnecting (the actor reopens its sessions with their cursors, so nothing is
/// lost or repeated). While forwarded, it probes the direct path every two
/// seconds so the route can come back when the direct path heals.
async fn link_task(
    shared: Arc<Shared>,
    spec: OriginSpec,
    mut route: watch::Receiver<Option<Path>>,
) {
    let mut backoff =
        Backoff::new(u64::from(spec.id.0) ^ u64::from(shared.settings.info.id.0) << 32);
    loop {
        let path = route.borrow_and_update().unwrap_or(Path::Direct(spec.id));
        let conn = match path {
            Path::Direct(_) => shared.connect_origin_direct(&spec).await,
            Path::Via(peer, _) => match shared.settings.peers.iter().find(|p| p.id == peer) {
                Some(p) => connect_via(&shared, p, spec.addr).await,
                None => Err(format!("unknown peer {peer}")),
            },
        };
        let conn = match conn {
            Ok(c) => start_link(&shared, &spec, path, c).await,
            Err(e) => Err(e),
        };
        match conn {
            Ok(conn) => {
                backoff.reset();
                let failed = tokio::select! {
                    reason = conn.closed() => {
                        warn!(origin = %spec.id, ?path, cause = %reason, "origin link down");
                        true
                    }
                    () = route_moves_away(&mut route, path) => {
                        info!(origin = %spec.id, from = ?path, "origin link following a route change");
                        conn.close(0u32.into(), b"re-routed");
                        false
                    }
                    () = probe_direct(&shared, &spec, path) => false,
                };
                let _ = shared
                    .cmd
                    .send(Cmd::LinkDown {
                        origin: spec.id,
                        path,
                        failed,
                    })
                    .await;
                if !failed {
                    continue;
                }
            }
            Err(e) => {
                debug!(origin = %spec.id, ?path, cause = %e, "origin link connect failed");
                let _ = shared
                    .cmd
                    .send(Cmd::LinkDown {
                        origin: spec.id,
                        path,
                        failed: true,
                    })
                    .await;
            }
        }
        // Wait out the backoff, unless the route changes meanwhile.
        tokio::select! {
            () = tokio::time::sleep(backoff.next_wait()) => {}
            () = route_moves_away(&mut route, path) => {}
        }
    }
}

/// Resolves when the chosen route is a usable path other than `path`.
async fn route_moves_away(route: &mut watch::Receiver<Option<Path>>, path: Path) {
    loop {
        if route.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
        if route.borrow_and_update().is_some_and(|p| p != path) {
            return;
        }
    }
}

/// While `path` is forwarded, measures the direct path every two seconds with a
/// bare handshake and reports it; never resolves.
async fn probe_direct(shared: &Shared, spec: &OriginSpec, path: Path) {
    if matches!(path, Path::Direct(_)) {
        return std::future::pending().await;
    }
    let mut tick = tokio::time::interval(Duration::from_secs(2));
    tick.tick().await;
    loop {
        tick.tick().await;
        if let Ok(c) = shared.connect_origin_direct(spec).await {
            let rtt = c.rtt();
            c.close(0u32.into(), b"probe");
            let _ = shared
                .cmd
                .send(Cmd::DirectRtt {
                    origin: spec.id,
                    rtt,
                })
                .await;
        }
    }
}

/// Reconnect backoff: 100 ms doubling to 5 s, each wait scaled by a
/// deterministic jitter factor in [0.5, 1.5) (xorshift, seeded per link so relays
/// do not reconnect in lockstep).
pub(crate) struct Backoff {
    base: Duration,
    rng: u64,
}

impl Backoff {
    const FIRST: Duration = Duration::from_millis(100);
    const MAX: Duration = Duration::from_secs(5);

    pub(crate) fn new(seed: u64) -> Self {
        Self {
            base: Self::FIRST,
            rng: seed | 1,
        }
    }

    /// After a success: start again from the first wait.
    pub(crate) fn reset(&mut self) {
        self.base = Self::FIRST;
    }

    /// The next wait (jittered); the one after is twice as long, up to the cap.
    pub(crate) fn next_wait(&mut self) -> Duration {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        let factor = 0.5 + (self.rng >> 11) as f64 / (1u64 << 53) as f64;
        let wait = self.base.mul_f64(factor);
        self.base = (self.base * 2).min(Self::MAX);
        wait
    }
}

/// Starts the origin link protocol on a connection (direct or forwarded) and
/// hands the link to the actor.
async fn start_link(
    shared: &Arc<Shared>,
    spec: &OriginSpec,
    path: Path,
    conn: Connection,
) -> Result<Connection, String> {
    let (mut ctl_send, ctl_recv) = conn.open_bi().await.map_err(|e| e.to_string())?;
    let hello = LinkMsg::LinkHello {
        version: PROTOCOL_VERSION,
        relay: shared.settings.info.id,
    };
    let bytes = encode_frame_to_bytes(&hello, DEFAULT_MAX_FRAME).map_err(|e| e.to_string())?;
    ctl_send
        .write_all(&bytes)
        .await
        .map_err(|e| e.to_string())?;
    let _ = ctl_send.set_priority(10);
    let origin = spec.id;
    tokio::spawn(link_reader(
        shared.clone(),
        origin,
        ctl_recv,
        FrameDecoder::default(),
    ));
    {
        let (conn, shared) = (conn.clone(), shared.clone());
        tokio::spawn(async move {
            while let Ok(r) = conn.accept_uni().await {
                tokio::spawn(link_reader(
                    shared.clone(),
                    origin,
                    r,
                    FrameDecoder::default(),
                ));
            }
        });
    }
    let (control, crx) = mpsc::channel(LINK_CONTROL_QUEUE);
    tokio::spawn(link_writer(conn.clone(), Some(ctl_send), 10, crx));
    let mut actions = Vec::new();
    for class in EventClass::ALL {
        let (tx, rx) = mpsc::channel(16_384);
        tokio::spawn(link_writer(conn.clone(), None, class.quic_priority(), rx));
        actions.push(tx);
    }
    if matches!(path, Path::Direct(_)) {
        // quinn's smoothed RTT of a direct link is the direct path's cost.
        let (conn, shared) = (conn.clone(), shared.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(500));
            while conn.close_reason().is_none() {
                tick.tick().await;
                let rtt = conn.rtt();
                if shared
                    .cmd
                    .send(Cmd::DirectRtt { origin, rtt })
                    .await
                    .is_err()
                {
                    return;
                }
            }
        });
    }
    shared.metrics.link_connects.inc();
    info!(origin = %origin, addr = %spec.addr, ?path, "origin link up");
    let link = LinkTx {
        conn: conn.clone(),
        control,
        actions,
        shed: shared.metrics.link_control_dropped.clone(),
        cuts: shared.metrics.link_backlog_cuts.clone(),
    };
    shared
        .cmd
        .send(Cmd::LinkUp { origin, path, link })
        .await
        .map_err(|_| "relay stopped".to_string())?;
    Ok(conn)
}

struct LinkState {
    spec: OriginSpec,
    tx: Option<LinkTx>,
    /// The path of the connected link.
    path: Option<Path>,
    /// Direct RTT (link or probe).
    rtt: Option<Duration>,
    /// The routing table's choice, which the link task follows.
    route: watch::Sender<Option<Path>>,
    task: tokio::task::JoinHandle<()>,
}

struct ConnState {
    out: Arc<Outbox>,
    conn: Connection,
    ip: IpAddr,
}

/// Relay-side state of a session beyond the session table.
struct SessionFeed {
    origin: OriginId,
    /// The origin acknowledged the session on the current link.
    acked: bool,
    /// Actions waiting for the acknowledgement.
    pending: VecDeque<Action>,
    /// Told to go away (drain): leaving is not a disconnect to wait for.
    sent_away: bool,
    /// Sequence numbers of reliable actions forwarded on the current link and not
    /// yet answered (at most `Limits::pending_actions`; older ones are forgotten).
    in_flight: VecDeque<u64>,
}

impl SessionFeed {
    /// Remembers a forwarded reliable action until its outcome arrives.
    fn track(&mut self, class: EventClass, seq: u64, limit: usize) {
        if class == EventClass::Movement {
            return;
        }
        if self.in_flight.len() >= limit {
            self.in_flight.pop_front();
        }
        self.in_flight.push_back(seq);
    }
}

struct Actor {
    shared: Arc<Shared>,
    sessions: SessionTable,
    hub: Hub,
    routing: RoutingTable,
    links: HashMap<OriginId, LinkState>,
    conns: HashMap<ConnId, ConnState>,
    feeds: HashMap<SessionId, SessionFeed>,
    /// Spectator audiences per world, and each spectator's world and queue.
    audiences: HashMap<WorldId, Audience>,
    spectators: HashMap<SessionId, (WorldId, mpsc::Sender<Bytes>)>,
    /// Recent (RTT, clock offset) samples per origin from link pings (offset =
    /// origin − relay, µs).
    offsets: HashMap<OriginId, VecDeque<(u64, i64)>>,
    draining: Option<Instant>,
    peer_tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Actor {
    async fn run(mut self, mut rx: mpsc::Receiver<Cmd>, endpoint: Endpoint) {
        let mut sweep = tokio::time::interval(Duration::from_millis(250));
        loop {
            let release = self.next_release();
            tokio::select! {
                cmd = rx.recv() => match cmd {
                    Some(cmd) => {
                        self.handle(cmd);
                        self.apply_route_changes();
                    }
                    None => break,
                },
                _ = sweep.tick() => {
                    if self.sweep() {
                        break;
                    }
                }
                () = async {
                    match release {
                        Some(t) => tokio::time::sleep_until(t).await,
                        None => std::future::pending().await,
                    }
                } => self.release_spectators(),
            }
            self.flush();
        }
        info!(relay = %self.shared.settings.info.id, "relay stopped");
        for t in &self.peer_tasks {
            t.abort();
        }
        for l in self.links.values() {
            l.task.abort();
            if let Some(tx) = &l.tx {
                tx.conn.close(0u32.into(), b"relay stopped");
            }
        }
        endpoint.close(0u32.into(), b"relay stopped");
    }

    fn now(&self) -> std::time::Instant {
        Instant::now().into_std()
    }

    /// Hands the routing table's decisions to the link tasks.
    fn apply_route_changes(&mut self) {
        while let Some(change) = self.routing.poll_change() {
            info!(origin = %change.origin, from = ?change.from, to = ?change.to, "route change");
            self.shared.metrics.route_changes.inc();
            if let Some(l) = self.links.get(&change.origin) {
                l.route.send_replace(change.to);
            }
        }
    }

    /// Expiries and the drain; `true` when the relay should exit.
    fn sweep(&mut self) -> bool {
        let now = self.now();
        // Link pings: the origins' clock offsets (spectator delays).
        let sent_us = self.shared.clock.unix_us();
        for l in self.links.values() {
            if let Some(tx) = &l.tx {
                tx.send_control(&LinkMsg::Ping(Ping {
                    nonce: sent_us,
                    sent_us,
                }));
            }
        }
        self.sessions.handle_timeout(now);
        while let Some((s, e)) = self.sessions.poll_expired() {
            debug!(session = %s, "session grace expired");
            self.end_session(s, e.world, true);
        }
        self.routing.handle_timeout(now);
        self.apply_route_changes();
        self.shared.metrics.sessions.set(self.sessions.len() as i64);
        if let Some(deadline) = self.draining {
            let connected = self.conns.len();
            if connected == 0 || Instant::now() >= deadline {
                info!(left = connected, "drain finished");
                return true;
            }
        }
        false
    }

    fn handle(&mut self, cmd: Cmd) {
        match cmd {
            Cmd::Hello {
                conn_id,
                ip,
                player,
                role,
                world,
                resume,
                last_seen,
                out,
                conn,
                reply,
            } => {
                let r = self.hello(conn_id, ip, &player, role, world, resume, &last_seen);
                if r.is_ok() {
                    self.conns.insert(conn_id, ConnState { out, conn, ip });
                }
                let _ = reply.send(r);
            }
            Cmd::Action { session, action } => self.action(session, action),
            Cmd::OriginPing { session, ping } => {
                let link = self
                    .feeds
                    .get(&session)
                    .and_then(|f| self.links.get(&f.origin))
                    .and_then(|l| l.tx.as_ref());
                // No link right now: the ping is lost, as on any path.
                if let Some(link) = link {
                    link.send_control(&LinkMsg::SessionPing { session, ping });
                }
            }
            Cmd::Bye { session } => {
                if let Some(e) = self.sessions.handle_close(session) {
                    self.end_session(session, e.world, true);
                }
            }
            Cmd::Spectate { session, sub, tx } => self.spectate(session, &sub, tx),
            Cmd::Gone { conn_id } => {
                self.conns.remove(&conn_id);
                let ids = self.sessions.handle_disconnect(self.now(), conn_id);
                for s in &ids {
                    // A spectator resumes by subscribing again; until then it is
                    // no one's audience.
                    self.leave_audience(*s);
                }
                for s in ids {
                    let away = self.feeds.get(&s).is_some_and(|f| f.sent_away);
                    if away {
                        // It moved to another relay; the origin follows it there.
                        if let Some(e) = self.sessions.handle_close(s) {
                            self.end_session(s, e.world, false);
                        }
                    }
                }
            }
            Cmd::LinkUp { origin, path, link } => self.link_up(origin, path, link),
            Cmd::LinkDown {
                origin,
                path,
                failed,
            } => self.link_down(origin, path, failed),
            Cmd::FromOrigin { origin, body } => self.handle_origin_frame(origin, body),
            Cmd::DirectRtt { origin, rtt } => {
                if let Some(l) = self.links.get_mut(&origin) {
                    l.rtt = Some(rtt);
                    if l.path.is_some_and(|p| matches!(p, Path::Direct(_))) {
                        self.shared.set_direct(origin, Some(rtt));
                    }
                }
                self.routing
                    .handle_rtt(self.now(), Link::Origin(origin), rtt);
            }
            Cmd::PeerReport { peer, rtt, reports } => {
                let now = self.now();
                self.routing.handle_rtt(now, Link::Peer(peer), rtt);
                self.routing.handle_peer_reports(now, peer, &reports);
            }
            Cmd::PeerDown { peer } => {
                self.routing.handle_link_down(self.now(), Link::Peer(peer));
            }
            Cmd::Drain => self.drain(),
            Cmd::Status(tx) => {
                let _ = tx.send(self.status());
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn hello(
        &mut self,
        conn_id: ConnId,
        ip: IpAddr,
        player: &str,
        role: Role,
        world: WorldId,
        resume: Option<SessionId>,
        last_seen: &[ChannelCursor],
    ) -> Result<Welcome, Refusal> {
        let refusal = |code, reason: String| Refusal { code, reason };
        if self.draining.is_some() {
            return Err(refusal(RefusalCode::Draining, "relay is draining".into()));
        }
        let Some(origin) = self.routing.origin_of(world) else {
            return Err(refusal(
                RefusalCode::UnknownWorld,
                format!("no origin hosts {world}"),
            ));
        };
        let session = match resume {
            Some(s) => {
                self.shared.metrics.resumes.inc();
                s
            }
            None => self.sessions.new_session_id(),
        };
        match self
            .sessions
            .handle_attach(session, player, world, role, conn_id)
        {
            Ok(None) => {}
            Ok(Some(stale)) => {
                // The client came back before the relay noticed its old connection
                // die: newest wins, the old connection is closed.
                self.shared.metrics.takeovers.inc();
                debug!(%session, stale, "resume took the session over from a stale connection");
                if let Some(cs) = self.conns.get(&stale) {
                    cs.conn
                        .close(5u32.into(), b"session resumed on another connection");
                }
            }
            Err(AttachError::Full(n)) => {
                return Err(refusal(
                    RefusalCode::Overloaded,
                    format!("relay holds its maximum of {n} sessions"),
                ))
            }
        }
        if role == Role::Player {
            self.hub.handle_open(session, world, last_seen);
            self.feeds.insert(
                session,
                SessionFeed {
                    origin,
                    acked: false,
                    pending: VecDeque::new(),
                    sent_away: false,
                    in_flight: VecDeque::new(),
                },
            );
            self.open_upstream(session, last_seen.to_vec());
        }
        // Spectators stay on the relay: the origin never hears of them, they are
        // served from the world's one feed (see `spectate`).
        let s = &self.shared.settings;
        let expires = self.shared.clock.unix_secs() + s.limits.ticket_ttl.as_secs();
        let ticket = s.tickets.issue(&TicketClaims {
            session,
            player: player.to_owned(),
            world,
            role,
            expires,
        });
        Ok(Welcome {
            session,
            resume_ticket: ticket,
            server_time_us: self.shared.clock.unix_us(),
            suggested_relays: self.shared.alternatives(ip, 3),
        })
    }

    /// Tells the session's origin about it (new, or resumed from `cursors`).
    fn open_upstream(&mut self, session: SessionId, cursors: Vec<ChannelCursor>) {
        let Some(e) = self.sessions.get(session) else {
            return;
        };
        let Some(feed) = self.feeds.get_mut(&session) else {
            return;
        };
        feed.acked = false;
        let Some(link) = self.links.get(&feed.origin).and_then(|l| l.tx.as_ref()) else {
            return; // opened when the link comes up
        };
        link.send_control(&LinkMsg::SessionOpen {
            session,
            player: e.player.clone(),
            world: e.world,
            role: e.role,
            team: None,
            resume_from: cursors,
        });
    }

    fn end_session(&mut self, session: SessionId, _world: WorldId, tell_origin: bool) {
        self.hub.handle_close(session);
        self.leave_audience(session);
        if let Some(feed) = self.feeds.remove(&session) {
            if tell_origin {
                if let Some(link) = self.links.get(&feed.origin).and_then(|l| l.tx.as_ref()) {
                    link.send_control(&LinkMsg::SessionClose { session });
                }
            }
        }
    }

    fn action(&mut self, session: SessionId, action: Action) {
        let Some(feed) = self.feeds.get_mut(&session) else {
            return;
        };
        let link = self.links.get(&feed.origin).and_then(|l| l.tx.as_ref());
        match link {
            Some(link) if feed.acked => {
                let (class, seq) = (action.class, action.seq);
                if link.send_action(session, action) {
                    self.shared.metrics.actions_forwarded.inc();
                    feed.track(class, seq, self.shared.settings.limits.pending_actions);
                }
            }
            _ => {
                if feed.pending.len() >= self.shared.settings.limits.pending_actions {
                    let seq = action.seq;
                    self.send_to_client(
                        session,
                        EventClass::Critical,
                        &ServerMsg::ActionResult(ActionResult {
                            seq,
                            outcome: Outcome::Rejected {
                                code: RejectCode::RateLimited,
                                detail: "origin unreachable; action buffer full".into(),
                            },
                        }),
                    );
                } else {
                    feed.pending.push_back(action);
                }
            }
        }
    }

    fn link_up(&mut self, origin: OriginId, path: Path, link: LinkTx) {
        self.shared.metrics.links_up.inc();
        let now = self.now();
        if matches!(path, Path::Direct(_)) {
            let rtt = link.conn.rtt();
            self.routing.handle_rtt(now, Link::Origin(origin), rtt);
            self.shared.set_direct(origin, Some(rtt));
        }
        if let Some(l) = self.links.get_mut(&origin) {
            l.tx = Some(link);
            l.path = Some(path);
        }
        // Every session of this origin resumes from what its client has been given.
        let ids: Vec<SessionId> = self
            .feeds
            .iter()
            .filter(|(_, f)| f.origin == origin)
            .map(|(s, _)| *s)
            .collect();
        for s in ids {
            let cursors = self.hub.cursors(s);
            self.open_upstream(s, cursors);
        }
        // And every spectator feed it carries.
        let worlds = self.watched_worlds_of(origin);
        if let Some(tx) = self.links.get(&origin).and_then(|l| l.tx.as_ref()) {
            for world in worlds {
                tx.send_control(&LinkMsg::FeedSubscribe { world });
            }
        }
    }

    fn link_down(&mut self, origin: OriginId, path: Path, failed: bool) {
        let now = self.now();
        let was_up = match self.links.get_mut(&origin) {
            Some(l) => {
                l.path = None;
                l.tx.take().is_some()
            }
            None => false,
        };
        if was_up {
            self.shared.metrics.links_up.dec();
        }
        self.shared.set_direct(origin, None);
        if failed {
            match path {
                Path::Direct(_) => self.routing.handle_link_down(now, Link::Origin(origin)),
                Path::Via(peer, _) => self.routing.handle_peer_withdraw(now, peer, origin),
            }
        }
        // Sessions wait for the next link; actions forwarded on this one and not
        // answered may or may not have been applied: say so instead of leaving
        // the client waiting.
        let mut unknown = Vec::new();
        for (s, f) in &mut self.feeds {
            if f.origin == origin {
                f.acked = false;
                for seq in f.in_flight.drain(..) {
                    unknown.push((*s, seq));
                }
            }
        }
        for (session, seq) in unknown {
            self.shared.metrics.actions_unknown.inc();
            self.send_to_client(
                session,
                EventClass::Critical,
                &ServerMsg::ActionResult(ActionResult {
                    seq,
                    outcome: Outcome::Unknown {
                        detail: "the relay's link to the origin failed before the outcome".into(),
                    },
                }),
            );
        }
    }

    fn handle_origin_frame(&mut self, origin: OriginId, body: Bytes) {
        let now = self.now();
        // Batches are forwarded by swapping the frame's tag, not re-encoding.
        let client_frame = link_events_to_client_frame(&body);
        let msg = match decode_message::<LinkMsg>(body) {
            Ok(m) => m,
            Err(e) => {
                RelayMetrics::count(&self.shared.metrics.decode_errors, e.label());
                return;
            }
        };
        match msg {
            LinkMsg::Events(batch) => {
                self.shared.metrics.batches_in.inc();
                if let (Some(frame), Some(b)) = (client_frame, batch_frame(&batch, None)) {
                    self.hub.handle_batch(now, BatchFrame { frame, ..b });
                }
            }
            LinkMsg::Keyframe(kf) => {
                let (world, channel, seq) = (kf.world, kf.channel, kf.seq);
                let f = frame(&ServerMsg::Keyframe(kf));
                self.hub.handle_keyframe(now, world, channel, seq, f);
            }
            LinkMsg::Subscriptions {
                session,
                added,
                removed,
            } => {
                self.hub
                    .handle_subscriptions(now, session, &added, &removed);
                if let Some(feed) = self.feeds.get_mut(&session) {
                    if !feed.acked {
                        feed.acked = true;
                        let pending: Vec<Action> = feed.pending.drain(..).collect();
                        let link = self.links.get(&origin).and_then(|l| l.tx.clone());
                        if let Some(link) = link {
                            let limit = self.shared.settings.limits.pending_actions;
                            for a in pending {
                                let (class, seq) = (a.class, a.seq);
                                if link.send_action(session, a) {
                                    self.shared.metrics.actions_forwarded.inc();
                                    feed.track(class, seq, limit);
                                }
                            }
                        }
                    }
                }
                self.send_to_client(
                    session,
                    EventClass::State,
                    &ServerMsg::Subscriptions { added, removed },
                );
            }
            LinkMsg::Replay { session, batches } => {
                let frames = batches
                    .into_iter()
                    .filter_map(|b| {
                        let f = frame(&ServerMsg::Events(b.clone()));
                        batch_frame(&b, Some(f))
                    })
                    .collect();
                self.hub.handle_replay(now, session, frames);
            }
            LinkMsg::ActionResult { session, result } => {
                if let Some(f) = self.feeds.get_mut(&session) {
                    if let Some(i) = f.in_flight.iter().position(|s| *s == result.seq) {
                        f.in_flight.remove(i);
                    }
                }
                self.send_to_client(
                    session,
                    EventClass::Critical,
                    &ServerMsg::ActionResult(result),
                );
            }
            LinkMsg::SessionClose { session } => {
                // The origin ended it (kick, ban, refused join).
                self.send_to_client(
                    session,
                    EventClass::Critical,
                    &ServerMsg::Error(ErrorMsg {
                        code: ErrorCode::Unexpected,
                        message: "session closed by the origin".into(),
                    }),
                );
                if let Some(Presence::Connected(c)) = self.sessions.get(session).map(|e| e.presence)
                {
                    if let Some(cs) = self.conns.get(&c) {
                        let conn = cs.conn.clone();
                        tokio::spawn(async move {
                            tokio::time::sleep(Duration::from_millis(200)).await;
                            conn.close(5u32.into(), b"closed by origin");
                        });
                    }
                }
                if let Some(e) = self.sessions.handle_close(session) {
                    self.end_session(session, e.world, false);
                }
            }
            LinkMsg::Error(e) => {
                RelayMetrics::count(
                    &self.shared.metrics.decode_errors,
                    format!("origin_{:?}", e.code).to_lowercase(),
                );
                warn!(origin = %origin, code = ?e.code, message = %e.message, "origin reported an error");
            }
            LinkMsg::Pong(p) => {
                // NTP-style: the origin read its clock between our send and now;
                // the midpoint of the lowest-RTT recent sample is exact on a
                // symmetric path and off by at most half that RTT otherwise.
                let at = self.shared.clock.unix_us();
                let rtt = at.saturating_sub(p.sent_us);
                let sample = (rtt, p.received_us as i64 - (p.sent_us + rtt / 2) as i64);
                let window = self.offsets.entry(origin).or_default();
                if window.len() >= 32 {
                    window.pop_front();
                }
                window.push_back(sample);
                let best = best_offset(window).unwrap_or(sample.1);
                for w in self.watched_worlds_of(origin) {
                    if let Some(a) = self.audiences.get_mut(&w) {
                        a.handle_clock(at, best);
                    }
                    self.deliver_spectators(w);
                }
            }
            LinkMsg::Feed(f) => {
                self.shared.metrics.feed_frames_in.inc();
                let world = f.world;
                let at = self.shared.clock.unix_us();
                if let Some(a) = self.audiences.get_mut(&world) {
                    a.handle_frame(at, Arc::new(f));
                    self.deliver_spectators(world);
                }
            }
            LinkMsg::Ping(p) => {
                let t = self.shared.clock.unix_us();
                if let Some(link) = self.links.get(&origin).and_then(|l| l.tx.as_ref()) {
                    link.send_control(&LinkMsg::Pong(Pong {
                        nonce: p.nonce,
                        sent_us: p.sent_us,
                        received_us: t,
                        replied_us: t,
                    }));
                }
            }
            LinkMsg::SessionPong { session, pong } => {
                self.send_to_client(session, EventClass::Critical, &ServerMsg::OriginPong(pong));
            }
            LinkMsg::SessionPing { .. }
            | LinkMsg::LinkHello { .. }
            | LinkMsg::FeedSubscribe { .. }
            | LinkMsg::FeedUnsubscribe { .. }
            | LinkMsg::Delta(_)
            | LinkMsg::SessionOpen { .. }
            | LinkMsg::Action { .. } => {}
        }
    }

    /// A spectator subscribes (or changes its subscription) to its world's feed.
    fn spectate(&mut self, session: SessionId, sub: &SpectatorSubscribe, tx: mpsc::Sender<Bytes>) {
        let Some(world) = self.sessions.get(session).map(|e| e.world) else {
            return;
        };
        let refuse = |this: &mut Self, code, label: &str, message: String| {
            RelayMetrics::count(&this.shared.metrics.spectators_refused, label);
            this.send_to_client(
                session,
                EventClass::Critical,
                &ServerMsg::Error(ErrorMsg { code, message }),
            );
        };
        if sub.world != world {
            let msg = format!("the session watches {world}, not {}", sub.world);
            return refuse(self, ErrorCode::UnknownWorld, "wrong_world", msg);
        }
        let Some(origin) = self.routing.origin_of(world) else {
            let msg = format!("no origin hosts {world}");
            return refuse(self, ErrorCode::UnknownWorld, "unknown_world", msg);
        };
        let now = self.shared.clock.unix_us();
        if !self.audiences.contains_key(&world) {
            let mut a = Audience::new(world, self.shared.settings.limits.spectators);
            if let Some(best) = self.offsets.get(&origin).and_then(best_offset) {
                a.handle_clock(now, best);
            }
            self.audiences.insert(world, a);
            if let Some(tx) = self.links.get(&origin).and_then(|l| l.tx.as_ref()) {
                tx.send_control(&LinkMsg::FeedSubscribe { world });
            }
        }
        let r = self
            .audiences
            .get_mut(&world)
            .map(|a| a.handle_subscribe(now, session, sub));
        match r {
            Some(Ok(())) => {
                self.spectators.insert(session, (world, tx));
                self.deliver_spectators(world);
            }
            Some(Err(e)) => {
                let label = e.label();
                refuse(self, ErrorCode::Unsupported, label, e.to_string());
                self.drop_empty_audience(world);
            }
            None => {}
        }
        self.shared
            .metrics
            .spectators
            .set(self.spectators.len() as i64);
    }

    /// Worlds hosted by `origin` that have spectators here.
    fn watched_worlds_of(&self, origin: OriginId) -> Vec<WorldId> {
        self.audiences
            .keys()
            .copied()
            .filter(|w| self.routing.origin_of(*w) == Some(origin))
            .collect()
    }

    fn leave_audience(&mut self, session: SessionId) {
        let Some((world, _)) = self.spectators.remove(&session) else {
            return;
        };
        if let Some(a) = self.audiences.get_mut(&world) {
            a.handle_leave(session);
        }
        self.drop_empty_audience(world);
        self.shared
            .metrics
            .spectators
            .set(self.spectators.len() as i64);
    }

    /// The last spectator of a world left: stop its feed.
    fn drop_empty_audience(&mut self, world: WorldId) {
        if !self.audiences.get(&world).is_some_and(Audience::is_empty) {
            return;
        }
        self.audiences.remove(&world);
        let origin = self.routing.origin_of(world);
        if let Some(tx) = origin
            .and_then(|o| self.links.get(&o))
            .and_then(|l| l.tx.as_ref())
        {
            tx.send_control(&LinkMsg::FeedUnsubscribe { world });
        }
    }

    /// Hands a world's due spectator frames to their queues; a full queue makes
    /// that spectator skip to the next keyframe.
    fn deliver_spectators(&mut self, world: WorldId) {
        let Some(a) = self.audiences.get_mut(&world) else {
            return;
        };
        let m = &self.shared.metrics;
        while let Some(d) = a.poll_delivery() {
            let Some((_, tx)) = self.spectators.get(&d.spectator) else {
                continue;
            };
            match tx.try_send(d.frame) {
                Ok(()) => {
                    m.spectator_frames.inc();
                }
                Err(mpsc::error::TrySendError::Full(_)) => {
                    m.spectator_skips.inc();
                    a.handle_overflow(d.spectator);
                }
                Err(mpsc::error::TrySendError::Closed(_)) => {}
            }
        }
    }

    /// When the next spectator frame is due.
    fn next_release(&self) -> Option<Instant> {
        let due = self
            .audiences
            .values()
            .filter_map(Audience::poll_timeout)
            .min()?;
        let now = self.shared.clock.unix_us();
        Some(Instant::now() + Duration::from_micros(due.saturating_sub(now)))
    }

    fn release_spectators(&mut self) {
        let now = self.shared.clock.unix_us();
        let worlds: Vec<WorldId> = self.audiences.keys().copied().collect();
        for w in worlds {
            if let Some(a) = self.audiences.get_mut(&w) {
                a.handle_timeout(now);
            }
            self.deliver_spectators(w);
        }
    }

    fn send_to_client(&mut self, session: SessionId, class: EventClass, msg: &ServerMsg) {
        self.send_frame(session, class, frame(msg));
    }

    fn send_frame(&mut self, session: SessionId, class: EventClass, bytes: Bytes) {
        let Some(Presence::Connected(c)) = self.sessions.get(session).map(|e| e.presence) else {
            return;
        };
        let Some(cs) = self.conns.get(&c) else {
            return;
        };
        // A full outbox stops; its writer closes the connection as too slow (the
        // client resumes and its missed events are replayed). Nothing here may be
        // dropped: channel batches and keyframes keep the client's sequence whole
        // whatever their class (a movement batch waits rather than expire).
        let _ = cs.out.push(Outgoing {
            class,
            session,
            entity: None,
            droppable: false,
            bytes,
        });
    }

    /// Hands the hub's deliveries to the clients' connections.
    fn flush(&mut self) {
        while let Some(d) = self.hub.poll_delivery() {
            self.send_frame(d.session, d.class, d.frame);
        }
    }

    fn drain(&mut self) {
        if self.draining.is_some() {
            return;
        }
        let deadline = Instant::now() + self.shared.settings.limits.drain_deadline;
        self.draining = Some(deadline);
        info!(clients = self.conns.len(), "draining");
        let conns: Vec<(ConnId, IpAddr)> = self.conns.iter().map(|(c, s)| (*c, s.ip)).collect();
        for (c, ip) in conns {
            let alternatives = self.shared.alternatives(ip, 3);
            for s in self.sessions.sessions_of(c).to_vec() {
                let Some(e) = self.sessions.get(s) else {
                    continue;
                };
                let s_cfg = &self.shared.settings;
                let ticket = s_cfg.tickets.issue(&TicketClaims {
                    session: s,
                    player: e.player.clone(),
                    world: e.world,
                    role: e.role,
                    expires: self.shared.clock.unix_secs() + s_cfg.limits.ticket_ttl.as_secs(),
                });
                if let Some(f) = self.feeds.get_mut(&s) {
                    f.sent_away = true;
                }
                self.shared.metrics.go_aways.inc();
                self.send_to_client(
                    s,
                    EventClass::Critical,
                    &ServerMsg::GoAway(GoAway {
                        reason: "relay draining".into(),
                        alternatives: alternatives.clone(),
                        resume_ticket: ticket,
                    }),
                );
            }
        }
    }

    fn status(&self) -> RelayStatus {
        let mut connected = 0;
        let mut detached = 0;
        for s in self.feeds.keys() {
            match self.sessions.get(*s).map(|e| e.presence) {
                Some(Presence::Connected(_)) => connected += 1,
                Some(Presence::Detached(_)) => detached += 1,
                None => {}
            }
        }
        let mut origins: Vec<OriginStatus> = self
            .links
            .iter()
            .map(|(id, l)| OriginStatus {
                id: id.0,
                addr: l.spec.addr.to_string(),
                up: l.tx.is_some(),
                rtt_ms: l.rtt.map(|r| r.as_secs_f64() * 1000.0),
            })
            .collect();
        origins.sort_by_key(|o| o.id);
        let mut routes: Vec<RouteStatus> = Vec::new();
        for l in self.links.values() {
            for w in &l.spec.worlds {
                let path = match self.routing.route(*w) {
                    Some(Path::Direct(o)) => format!("direct:{}", o.0),
                    Some(Path::Via(r, o)) => format!("via:{}:{}", r.0, o.0),
                    None => "unreachable".into(),
                };
                routes.push(RouteStatus { world: w.0, path });
            }
        }
        routes.sort_by_key(|r| r.world);
        let hs = self.hub.stats();
        RelayStatus {
            relay: self.shared.settings.info.id.0,
            region: self.shared.settings.info.region.clone(),
            draining: self.draining.is_some(),
            connections: self.conns.len(),
            sessions_connected: connected,
            sessions_detached: detached,
            origins,
            routes,
            batches_in: hs.batches_in,
            frames_out: hs.delivered,
        }
    }
}

/// The hub's view of a batch (`frame` filled by the caller).
fn batch_frame(b: &EventBatch, frame: Option<Bytes>) -> Option<BatchFrame> {
    let first = b.events.first()?.seq;
    let last = b.events.last()?.seq;
    let class = b
        .events
        .iter()
        .map(|e| e.class)
        .min_by_key(|c| c.rank())
        .unwrap_or(EventClass::State);
    Some(BatchFrame {
        world: b.world,
        channel: b.channel,
        first,
        last,
        class,
        frame: frame.unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::registry::Registry;
    use skylane_certs::{client_config, server_config, ClientAuth, LocalPki};

    /// A real QUIC connection over loopback, and the server's end kept open.
    async fn connection() -> (Connection, Connection, Endpoint, Endpoint) {
        let pki = LocalPki::generate(&[]).unwrap();
        let server = Endpoint::server(
            server_config(&pki.origin, ClientAuth::None).unwrap(),
            "127.0.0.1:0".parse().unwrap(),
        )
        .unwrap();
        let mut client = Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
        client.set_default_client_config(client_config(pki.roots().unwrap(), None).unwrap());
        let addr = server.local_addr().unwrap();
        let (c, s) = tokio::join!(
            async { client.connect(addr, "localhost").unwrap().await.unwrap() },
            async { server.accept().await.unwrap().await.unwrap() },
        );
        (c, s, client, server)
    }

    fn link(conn: Connection, queue: usize) -> (LinkTx, mpsc::Receiver<Bytes>, RelayMetrics) {
        let metrics = RelayMetrics::new(&mut Registry::default());
        let (control, rx) = mpsc::channel(queue);
        let tx = LinkTx {
            conn,
            control,
            actions: Vec::new(),
            shed: metrics.link_control_dropped.clone(),
            cuts: metrics.link_backlog_cuts.clone(),
        };
        (tx, rx, metrics)
    }

    #[test]
    fn measurements_are_shed_and_session_changes_are_not() {
        let ping = Ping {
            nonce: 1,
            sent_us: 2,
        };
        assert_eq!(when_full(&LinkMsg::Ping(ping)), WhenFull::Shed);
        assert_eq!(
            when_full(&LinkMsg::SessionPing {
                session: SessionId(1),
                ping
            }),
            WhenFull::Shed
        );
        assert_eq!(
            when_full(&LinkMsg::SessionClose {
                session: SessionId(1)
            }),
            WhenFull::CutLink
        );
        assert_eq!(
            when_full(&LinkMsg::FeedSubscribe { world: WorldId(1) }),
            WhenFull::CutLink
        );
    }

    #[tokio::test]
    async fn a_full_control_lane_sheds_pings_but_closes_the_link_rather_than_lose_a_session_change()
    {
        let (conn, server_side, _c, _s) = connection().await;
        let (tx, mut rx, metrics) = link(conn.clone(), 1);
        let ping = LinkMsg::Ping(Ping {
            nonce: 1,
            sent_us: 2,
        });
        tx.send_control(&ping);
        tx.send_control(&ping);
        assert_eq!(metrics.link_control_dropped.get(), 1);
        assert!(conn.close_reason().is_none(), "a shed ping keeps the link");

        let close = LinkMsg::SessionClose {
            session: SessionId(7),
        };
        tx.send_control(&close);
        tx.send_control(&close);
        assert_eq!(
            metrics.link_backlog_cuts.get(),
            1,
            "one cut, however many follow"
        );
        assert!(conn.close_reason().is_some());
        match server_side.closed().await {
            quinn::ConnectionError::ApplicationClosed(c) => {
                assert_eq!(c.error_code, LINK_BACKLOG_CODE.into());
            }
            other => panic!("origin saw {other}"),
        }
        // What was queued before the lane filled is still there, in order.
        assert!(rx.recv().await.is_some());
        assert!(rx.try_recv().is_err());
    }

    #[tokio::test]
    async fn a_closed_control_lane_is_not_a_backlog() {
        let (conn, _server_side, _c, _s) = connection().await;
        let (tx, rx, metrics) = link(conn.clone(), 4);
        drop(rx);
        tx.send_control(&LinkMsg::SessionClose {
            session: SessionId(7),
        });
        assert_eq!(metrics.link_backlog_cuts.get(), 0);
        assert!(conn.close_reason().is_none());
    }
}
