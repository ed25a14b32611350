//! The origin's network shell: relays connect over QUIC with mutual TLS and carry
//! all their sessions over one connection.
//!
//! Link layout (relay ↔ origin, protocol `skylane/1`, [`LinkMsg`] frames):
//! * The relay opens one bidirectional **control** stream and sends `LinkHello`.
//!   Upstream it carries session lifecycle (`SessionOpen`, `SessionClose`) and
//!   pings; downstream it is lane 0: hello, subscription changes, action results,
//!   resume replays, errors (highest stream priority).
//! * The relay sends actions on unidirectional streams of its choosing (it shards
//!   them by class and session to limit head-of-line blocking) or as datagrams.
//!   Every incoming stream is read the same way. The origin acknowledges a session
//!   by its first `Subscriptions` message; the relay forwards the session's actions
//!   only after that acknowledgement.
//! * Downstream batches and keyframes go on `lanes` unidirectional streams sharded
//!   by channel, so one channel's batches stay in order (its hash chain needs that)
//!   while a stalled stream holds up only the channels that hash to it. Each batch is
//!   encoded once and sent once per relay that has subscribers of the channel.
//!
//! The world itself runs in one actor task that owns the engine ([`Core`]): the
//! single writer. Readers and writers are separate tasks joined by queues. A link's
//! lanes share one byte budget ([`ServerConfig::link_queue_bytes`]): a relay that
//! falls briefly behind (a burst of thousands of session opens, a CPU stall) is
//! carried through it, session pongs are shed once the control lane holds more than
//! [`ServerConfig::pong_shed_bytes`], and only a relay that falls the whole budget
//! behind is disconnected (once, with one warning; its sessions wait for it or for
//! another relay within the grace period) instead of growing memory.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use quinn::{Connection, Endpoint};
use serde::de::DeserializeOwned;
use serde::Serialize;
use skylane_proto::{
    encode_frame_to_bytes, Action, ChannelCursor, ChannelId, DecodeError, EntityId, ErrorCode,
    ErrorMsg, EventBatch, FrameDecoder, Keyframe, LinkMsg, Pong, RelayId, Role, SessionId, TeamId,
    WorldId, DEFAULT_MAX_FRAME, PROTOCOL_VERSION,
};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::engine::{Engine, JoinError, Output, ResumeError};
use crate::journal::JournalError;
use crate::metrics::OriginMetrics;
use crate::persist::Persistent;
use crate::world::World;

/// What the shell needs from a world engine (an [`Engine`], or a [`Persistent`] one).
pub trait Core: Send + 'static {
    /// The world's id.
    fn world_id(&self) -> WorldId;
    /// See [`Engine::handle_join`].
    fn handle_join(
        &mut self,
        s: SessionId,
        player: &str,
        role: Role,
        team: Option<TeamId>,
    ) -> Result<Option<EntityId>, JoinError>;
    /// See [`Engine::handle_leave`].
    fn handle_leave(&mut self, s: SessionId);
    /// See [`Engine::handle_action`].
    fn handle_action(&mut self, s: SessionId, a: Action);
    /// See [`Engine::handle_timeout`].
    fn handle_timeout(&mut self, now_us: u64) -> Result<(), JournalError>;
    /// See [`Engine::poll_output`].
    fn poll_output(&mut self) -> Option<Output>;
    /// See [`Engine::poll_timeout`].
    fn poll_timeout(&self) -> u64;
    /// See [`Engine::channels_of`].
    fn channels_of(&self, s: SessionId) -> Vec<ChannelId>;
    /// See [`Engine::history_since`].
    fn history_since(&self, c: ChannelCursor) -> Result<Vec<Arc<EventBatch>>, ResumeError>;
    /// See [`Engine::keyframe_now`].
    fn keyframe_now(&self, c: ChannelId) -> Keyframe;
    /// See [`Engine::has_session`].
    fn has_session(&self, s: SessionId) -> bool;
    /// See [`Engine::channel_seq`].
    fn channel_seq(&self, c: ChannelId) -> u64;
    /// Writes anything buffered (graceful shutdown).
    fn flush(&mut self) -> Result<(), JournalError>;
    /// See [`Engine::set_feed`].
    fn set_feed(&mut self, on: bool, now_us: u64);
}

impl<W: World> Core for Engine<W> {
    fn world_id(&self) -> WorldId {
        self.config().world
    }
    fn handle_join(
        &mut self,
        s: SessionId,
        p: &str,
        r: Role,
        t: Option<TeamId>,
    ) -> Result<Option<EntityId>, JoinError> {
        Self::handle_join(self, s, p, r, t)
    }
    fn handle_leave(&mut self, s: SessionId) {
        Self::handle_leave(self, s);
    }
    fn handle_action(&mut self, s: SessionId, a: Action) {
        Self::handle_action(self, s, a);
    }
    fn handle_timeout(&mut self, now_us: u64) -> Result<(), JournalError> {
        Self::handle_timeout(self, now_us);
        Ok(())
    }
    fn poll_output(&mut self) -> Option<Output> {
        Self::poll_output(self)
    }
    fn poll_timeout(&self) -> u64 {
        Self::poll_timeout(self)
    }
    fn channels_of(&self, s: SessionId) -> Vec<ChannelId> {
        Self::channels_of(self, s)
    }
    fn history_since(&self, c: ChannelCursor) -> Result<Vec<Arc<EventBatch>>, ResumeError> {
        Self::history_since(self, c)
    }
    fn keyframe_now(&self, c: ChannelId) -> Keyframe {
        Self::keyframe_now(self, c)
    }
    fn has_session(&self, s: SessionId) -> bool {
        Self::has_session(self, s)
    }
    fn channel_seq(&self, c: ChannelId) -> u64 {
        Self::channel_seq(self, c)
    }
    fn flush(&mut self) -> Result<(), JournalError> {
        Ok(())
    }
    fn set_feed(&mut self, on: bool, now_us: u64) {
        Self::set_feed(self, on, now_us);
    }
}

impl<W: World + Clone + Serialize + DeserializeOwned> Core for Persistent<W> {
    fn world_id(&self) -> WorldId {
        self.engine().config().world
    }
    fn handle_join(
        &mut self,
        s: SessionId,
        p: &str,
        r: Role,
        t: Option<TeamId>,
    ) -> Result<Option<EntityId>, JoinError> {
        Self::handle_join(self, s, p, r, t)
    }
    fn handle_leave(&mut self, s: SessionId) {
        Self::handle_leave(self, s);
    }
    fn handle_action(&mut self, s: SessionId, a: Action) {
        Self::handle_action(self, s, a);
    }
    fn handle_timeout(&mut self, now_us: u64) -> Result<(), JournalError> {
        Self::handle_timeout(self, now_us)
    }
    fn poll_output(&mut self) -> Option<Output> {
        Self::poll_output(self)
    }
    fn poll_timeout(&self) -> u64 {
        Self::poll_timeout(self)
    }
    fn channels_of(&self, s: SessionId) -> Vec<ChannelId> {
        self.engine().channels_of(s)
    }
    fn history_since(&self, c: ChannelCursor) -> Result<Vec<Arc<EventBatch>>, ResumeError> {
        self.engine().history_since(c)
    }
    fn keyframe_now(&self, c: ChannelId) -> Keyframe {
        self.engine().keyframe_now(c)
    }
    fn has_session(&self, s: SessionId) -> bool {
        self.engine().has_session(s)
    }
    fn channel_seq(&self, c: ChannelId) -> u64 {
        self.engine().channel_seq(c)
    }
    fn flush(&mut self) -> Result<(), JournalError> {
        Self::flush(self)
    }
    fn set_feed(&mut self, on: bool, now_us: u64) {
        Self::set_feed(self, on, now_us);
    }
}

/// Shell settings.
#[derive(Debug, Clone, Copy)]
pub struct ServerConfig {
    /// Downstream batch streams per relay (sharded by channel). Defaults to 8.
    pub lanes: usize,
    /// Bytes queued for one relay link (all its lanes together) before the relay
    /// counts as too slow and its link is closed. Defaults to 32 MiB.
    pub link_queue_bytes: usize,
    /// Bytes queued on a link's control lane above which session pongs are dropped
    /// (a pong stuck behind a queue measures the queue). Defaults to 256 KiB.
    pub pong_shed_bytes: usize,
    /// How long a session whose relay disconnected waits to be resumed elsewhere.
    /// Defaults to 30 s.
    pub session_grace: Duration,
    /// Largest frame accepted from a relay. Defaults to 64 KiB.
    pub max_frame: usize,
    /// The clock's epoch: microseconds since the Unix epoch at the moment the server
    /// starts (the engine must have been created with the same `now_us`).
    pub base_unix_us: u64,
}

impl ServerConfig {
    /// Defaults with the given epoch.
    pub fn new(base_unix_us: u64) -> Self {
        Self {
            lanes: 8,
            link_queue_bytes: 32 << 20,
            pong_shed_bytes: 256 << 10,
            session_grace: Duration::from_secs(30),
            max_frame: DEFAULT_MAX_FRAME,
            base_unix_us,
        }
    }
}

/// One downstream lane of a relay link: frames waiting for the lane's writer task.
/// The lanes of a link count their queued bytes in one shared budget, so a link
/// costs at most [`ServerConfig::link_queue_bytes`] however its traffic is spread.
#[derive(Clone)]
struct Lane {
    tx: mpsc::UnboundedSender<Bytes>,
    /// Bytes queued on all lanes of this link.
    link: Arc<AtomicUsize>,
    /// Bytes queued on this lane.
    own: Arc<AtomicUsize>,
}

/// Why a lane did not take a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LaneRefused {
    /// The link's byte budget is spent.
    Full,
    /// The lane's writer has stopped (the connection is closing).
    Closed,
}

impl Lane {
    /// A lane sharing the `link` budget, and the receiving end for its writer.
    fn new(link: Arc<AtomicUsize>) -> (Self, LaneQueue) {
        let (tx, rx) = mpsc::unbounded_channel();
        let own = Arc::new(AtomicUsize::new(0));
        let queue = LaneQueue {
            rx,
            link: link.clone(),
            own: own.clone(),
        };
        (Self { tx, link, own }, queue)
    }

    /// Queues `frame` unless the link would then hold more than `limit` bytes.
    fn push(&self, frame: Bytes, limit: usize) -> Result<(), LaneRefused> {
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
    fn queued(&self) -> usize {
        self.own.load(Ordering::Acquire)
    }

    /// Bytes queued on the whole link.
    fn link_queued(&self) -> usize {
        self.link.load(Ordering::Acquire)
    }
}

/// The writer's end of a [`Lane`]: releases each frame's bytes from the budget
/// once quinn has taken it.
struct LaneQueue {
    rx: mpsc::UnboundedReceiver<Bytes>,
    link: Arc<AtomicUsize>,
    own: Arc<AtomicUsize>,
}

impl LaneQueue {
    async fn recv(&mut self) -> Option<Bytes> {
        self.rx.recv().await
    }

    fn written(&self, len: usize) {
        self.link.fetch_sub(len, Ordering::AcqRel);
        self.own.fetch_sub(len, Ordering::AcqRel);
    }
}

enum Cmd {
    RelayUp {
        id: u64,
        relay: RelayId,
        conn: Connection,
        lanes: Vec<Lane>,
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
}

/// A running origin server.
#[derive(Debug)]
pub struct OriginServer {
    shutdown: watch::Sender<bool>,
    actor: JoinHandle<Result<(), JournalError>>,
    accept: JoinHandle<()>,
}

impl OriginServer {
    /// Serves relays on `endpoint` (configured with the origin's mTLS server config).
    /// Must be called inside a tokio runtime.
    pub fn spawn<C: Core>(
        endpoint: Endpoint,
        core: C,
        cfg: ServerConfig,
        metrics: OriginMetrics,
    ) -> Self {
        let (shutdown, shutdown_rx) = watch::channel(false);
        let (tx, rx) = mpsc::channel(65_536);
        let clock = Clock {
            base_unix_us: cfg.base_unix_us,
            start: Instant::now(),
        };
        let accept = tokio::spawn(accept_loop(
            endpoint.clone(),
            tx,
            cfg,
            clock,
            shutdown_rx.clone(),
        ));
        let actor = Actor {
            core,
            cfg,
            metrics,
            clock,
            relays: HashMap::new(),
            session_relay: HashMap::new(),
            orphans: HashMap::new(),
            announced: HashMap::new(),
        };
        let actor = tokio::spawn(actor.run(rx, shutdown_rx, endpoint));
        Self {
            shutdown,
            actor,
            accept,
        }
    }

    /// Stops accepting, closes relay connections, flushes the journal, and returns
    /// the world's final error if it failed.
    pub async fn shutdown(self) -> Result<(), JournalError> {
        let _ = self.shutdown.send(true);
        self.accept.abort();
        match self.actor.await {
            Ok(r) => r,
            Err(_) => Ok(()),
        }
    }
}

async fn accept_loop(
    endpoint: Endpoint,
    tx: mpsc::Sender<Cmd>,
    cfg: ServerConfig,
    clock: Clock,
    shutdown: watch::Receiver<bool>,
) {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    while let Some(incoming) = endpoint.accept().await {
        if *shutdown.borrow() {
            incoming.refuse();
            continue;
        }
        let id = NEXT.fetch_add(1, Ordering::Relaxed);
        let tx = tx.clone();
        tokio::spawn(async move {
            match incoming.await {
                Ok(conn) => serve_relay(id, conn, tx, cfg, clock).await,
                Err(e) => debug!(cause = %e, "relay handshake failed"),
            }
        });
    }
}

fn lane_priority(lane: usize) -> i32 {
    if lane == 0 {
        10
    } else {
        5
    }
}

/// Reads one connection's streams and feeds the actor; writes its lanes.
async fn serve_relay(
    id: u64,
    conn: Connection,
    tx: mpsc::Sender<Cmd>,
    cfg: ServerConfig,
    clock: Clock,
) {
    let Ok((ctl_send, mut ctl_recv)) = conn.accept_bi().await else {
        return;
    };
    // The first control frame must be the relay's hello.
    let mut dec = FrameDecoder::new(cfg.max_frame);
    let relay = loop {
        match dec.poll_message::<LinkMsg>() {
            Ok(Some(LinkMsg::LinkHello { version, relay })) if version == PROTOCOL_VERSION => {
                break relay
            }
            Ok(Some(_)) | Err(_) => {
                conn.close(1u32.into(), b"expected link hello");
                return;
            }
            Ok(None) => match ctl_recv.read_chunk(cfg.max_frame, true).await {
                Ok(Some(chunk)) => dec.push(&chunk.bytes),
                _ => return,
            },
        }
    };
    info!(relay = %relay, remote = %conn.remote_address(), "relay connected");

    let budget = Arc::new(AtomicUsize::new(0));
    let mut lanes = Vec::with_capacity(cfg.lanes + 1);
    let (control, lane0_rx) = Lane::new(budget.clone());
    tokio::spawn(write_lane(conn.clone(), 0, Some(ctl_send), lane0_rx));
    let reader = LinkReader {
        id,
        tx: tx.clone(),
        control: control.clone(),
        clock,
        max_frame: cfg.max_frame,
        link_limit: cfg.link_queue_bytes,
        pong_shed: cfg.pong_shed_bytes,
    };
    lanes.push(control);
    for lane in 1..=cfg.lanes {
        let (ltx, lrx) = Lane::new(budget.clone());
        tokio::spawn(write_lane(conn.clone(), lane, None, lrx));
        lanes.push(ltx);
    }
    if tx
        .send(Cmd::RelayUp {
            id,
            relay,
            conn: conn.clone(),
            lanes,
        })
        .await
        .is_err()
    {
        return;
    }
    // Anything after the hello on the control stream.
    tokio::spawn(reader.clone().read_stream(dec, ctl_recv));
    {
        let (conn, reader) = (conn.clone(), reader.clone());
        tokio::spawn(async move {
            while let Ok(recv) = conn.accept_uni().await {
                let dec = FrameDecoder::new(reader.max_frame);
                tokio::spawn(reader.clone().read_stream(dec, recv));
            }
        });
    }
    {
        let conn = conn.clone();
        tokio::spawn(async move {
            while let Ok(d) = conn.read_datagram().await {
                let msg = skylane_proto::decode_datagram::<LinkMsg>(d);
                if !reader.deliver(msg).await {
                    return;
                }
            }
        });
    }
    let reason = conn.closed().await;
    info!(relay = %relay, cause = %reason, "relay disconnected");
    let _ = tx.send(Cmd::RelayDown { id }).await;
}

/// The origin's clock: microseconds since the Unix epoch, read from a monotonic
/// instant so that netsim's paused time drives it.
#[derive(Debug, Clone, Copy)]
struct Clock {
    base_unix_us: u64,
    start: Instant,
}

impl Clock {
    fn now_us(&self) -> u64 {
        self.base_unix_us + self.start.elapsed().as_micros() as u64
    }
}

/// What a task reading one relay link's streams and datagrams needs.
#[derive(Clone)]
struct LinkReader {
    id: u64,
    tx: mpsc::Sender<Cmd>,
    /// The link's control lane, for pongs answered without the actor.
    control: Lane,
    clock: Clock,
    max_frame: usize,
    /// [`ServerConfig::link_queue_bytes`].
    link_limit: usize,
    /// [`ServerConfig::pong_shed_bytes`].
    pong_shed: usize,
}

impl LinkReader {
    /// Hands one decoded message (or its decoding error) on; `false` once the actor is gone.
    ///
    /// Session pings are answered here, on arrival: they measure the path, and
    /// the actor may be in the middle of a tick. The relay authenticated itself
    /// with mTLS and answers only its own sessions' pongs, so no session check
    /// is needed (it would need the actor's state).
    async fn deliver(&self, msg: Result<LinkMsg, DecodeError>) -> bool {
        let cmd = match msg {
            Ok(LinkMsg::SessionPing { session, ping }) => {
                let now = self.clock.now_us();
                let pong = LinkMsg::SessionPong {
                    session,
                    pong: Pong::answer(&ping, now, now),
                };
                // Behind a long control queue the pong would measure the queue:
                // it is shed like a lost datagram (the relay pings again).
                if self.control.queued() <= self.pong_shed {
                    if let Some(bytes) = frame(&pong) {
                        let _ = self.control.push(bytes, self.link_limit);
                    }
                }
                return true;
            }
            Ok(msg) => Cmd::Msg { id: self.id, msg },
            Err(e) => Cmd::BadFrame {
                id: self.id,
                label: e.label(),
            },
        };
        self.tx.send(cmd).await.is_ok()
    }

    /// Reads one stream's frames until it ends, fails or goes out of sync.
    async fn read_stream(self, mut dec: FrameDecoder, mut recv: quinn::RecvStream) {
        loop {
            loop {
                match dec.poll_message::<LinkMsg>() {
                    Ok(Some(msg)) => {
                        if !self.deliver(Ok(msg)).await {
                            return;
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        // The stream is out of sync: report and stop reading it.
                        self.deliver(Err(e)).await;
                        let _ = recv.stop(1u32.into());
                        return;
                    }
                }
            }
            match recv.read_chunk(self.max_frame, true).await {
                Ok(Some(chunk)) => dec.push(&chunk.bytes),
                _ => return,
            }
        }
    }
}

async fn write_lane(
    conn: Connection,
    lane: usize,
    stream: Option<quinn::SendStream>,
    mut rx: LaneQueue,
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

struct RelayState {
    relay: RelayId,
    conn: Connection,
    lanes: Vec<Lane>,
    /// The link was closed as too slow: nothing more is queued for it.
    cut: bool,
    channels: HashMap<ChannelId, u32>,
    sessions: HashSet<SessionId>,
    /// The relay asked for the world's spectator feed.
    feed: bool,
}

struct Actor<C> {
    core: C,
    cfg: ServerConfig,
    metrics: OriginMetrics,
    clock: Clock,
    relays: HashMap<u64, RelayState>,
    session_relay: HashMap<SessionId, u64>,
    orphans: HashMap<SessionId, Instant>,
    /// The channels announced to each session (the `Subscriptions` outputs routed
    /// so far). A relay's per-channel counts are exactly the sum of these sets
    /// over the sessions attached to it, whatever order joins, moves, resumes and
    /// kicks come in, so a relay is never dropped from a channel one of its
    /// sessions still receives. Each channel keeps the sequence number its
    /// subscription started after: what a resuming session is owed at least.
    announced: HashMap<SessionId, HashMap<ChannelId, u64>>,
}

fn lane_of(channel: ChannelId, lanes: usize) -> usize {
    let h = match channel {
        ChannelId::World => 0,
        ChannelId::Team(t) => 7919 * u64::from(t.0) + 1,
        ChannelId::Cell { x, y } => u64::from(x) * 31 + u64::from(y) * 1_000_003 + 2,
    };
    1 + (h % lanes.max(1) as u64) as usize
}

fn frame(msg: &LinkMsg) -> Option<Bytes> {
    encode_frame_to_bytes(msg, DEFAULT_MAX_FRAME).ok()
}

impl<C: Core> Actor<C> {
    fn now_us(&self) -> u64 {
        self.clock.now_us()
    }

    fn deadline(&self) -> Instant {
        let due = self
            .core
            .poll_timeout()
            .saturating_sub(self.cfg.base_unix_us);
        self.clock.start + Duration::from_micros(due)
    }

    async fn run(
        mut self,
        mut rx: mpsc::Receiver<Cmd>,
        mut shutdown: watch::Receiver<bool>,
        endpoint: Endpoint,
    ) -> Result<(), JournalError> {
        let mut sweep = tokio::time::interval(Duration::from_secs(1));
        loop {
            let deadline = self.deadline();
            tokio::select! {
                biased;
                _ = shutdown.changed() => break,
                () = tokio::time::sleep_until(deadline) => {
                    let t = std::time::Instant::now();
                    let now = self.now_us();
                    self.core.handle_timeout(now)?;
                    self.metrics.ticks.inc();
                    self.metrics.tick_seconds.observe(t.elapsed().as_secs_f64());
                }
                cmd = rx.recv() => match cmd {
                    Some(cmd) => self.handle(cmd),
                    None => break,
                },
                _ = sweep.tick() => self.sweep_orphans(),
            }
            self.route();
        }
        endpoint.close(0u32.into(), b"origin shutting down");
        self.core.flush()?;
        info!("origin stopped; journal flushed");
        Ok(())
    }

    fn handle(&mut self, cmd: Cmd) {
        match cmd {
            Cmd::RelayUp {
                id,
                relay,
                conn,
                lanes,
            } => {
                self.relays.insert(
                    id,
                    RelayState {
                        relay,
                        conn,
                        lanes,
                        cut: false,
                        channels: HashMap::new(),
                        sessions: HashSet::new(),
                        feed: false,
                    },
                );
                self.metrics.relays.set(self.relays.len() as i64);
                let hello = LinkMsg::LinkHello {
                    version: PROTOCOL_VERSION,
                    relay: RelayId(0),
                };
                self.send(id, 0, frame(&hello));
            }
            Cmd::RelayDown { id } => {
                if let Some(r) = self.relays.remove(&id) {
                    let now = Instant::now();
                    for s in r.sessions {
                        self.session_relay.remove(&s);
                        self.orphans.insert(s, now);
                    }
                }
                self.metrics.relays.set(self.relays.len() as i64);
                self.update_feed();
            }
            Cmd::BadFrame { id, label } => {
                OriginMetrics::count(&self.metrics.link_errors, label);
                self.error(
                    id,
                    ErrorCode::Malformed,
                    format!("undecodable frame: {label}"),
                );
            }
            Cmd::Msg { id, msg } => self.handle_msg(id, msg),
        }
    }

    fn error(&mut self, id: u64, code: ErrorCode, message: String) {
        warn!(?code, %message, "link error");
        self.send(id, 0, frame(&LinkMsg::Error(ErrorMsg { code, message })));
    }

    fn handle_msg(&mut self, id: u64, msg: LinkMsg) {
        match msg {
            LinkMsg::SessionOpen {
                session,
                player,
                world,
                role,
                team,
                resume_from,
            } => {
                if world != self.core.world_id() {
                    OriginMetrics::count(&self.metrics.link_errors, "unknown_world");
                    return self.error(
                        id,
                        ErrorCode::UnknownWorld,
                        format!(
                            "{session}: this origin hosts {}, not {world}",
                            self.core.world_id()
                        ),
                    );
                }
                if self.core.has_session(session) {
                    self.resume(id, session, &resume_from);
                } else {
                    match self.core.handle_join(session, &player, role, team) {
                        Ok(_) => self.attach(id, session),
                        Err(e) => {
                            OriginMetrics::count(&self.metrics.link_errors, "join_refused");
                            self.error(id, ErrorCode::Unexpected, format!("{session}: {e}"));
                            self.send(id, 0, frame(&LinkMsg::SessionClose { session }));
                        }
                    }
                }
                self.metrics
                    .sessions
                    .set(self.session_relay.len() as i64 + self.orphans.len() as i64);
            }
            LinkMsg::SessionClose { session } => {
                if self.session_relay.get(&session) == Some(&id) {
                    self.detach(session);
                    self.core.handle_leave(session);
                }
            }
            LinkMsg::Action { session, action } => {
                if self.session_relay.get(&session) == Some(&id) {
                    self.core.handle_action(session, action);
                } else {
                    OriginMetrics::count(&self.metrics.link_errors, "unknown_session");
                    self.error(
                        id,
                        ErrorCode::UnknownSession,
                        format!("{session} is not open on this link"),
                    );
                }
            }
            LinkMsg::Ping(p) => {
                let now = self.now_us();
                let pong = LinkMsg::Pong(Pong::answer(&p, now, now));
                self.send(id, 0, frame(&pong));
            }
            LinkMsg::Pong(_) => {}
            // Answered by the link's reader (`LinkReader::deliver`); never reaches here.
            LinkMsg::SessionPing { .. } => {}
            LinkMsg::FeedSubscribe { world } | LinkMsg::FeedUnsubscribe { world }
                if world != self.core.world_id() =>
            {
                OriginMetrics::count(&self.metrics.link_errors, "unknown_world");
                self.error(
                    id,
                    ErrorCode::UnknownWorld,
                    format!("this origin hosts {}, not {world}", self.core.world_id()),
                );
            }
            LinkMsg::FeedSubscribe { .. } => {
                let was = self.relays.get(&id).is_some_and(|r| r.feed);
                if let Some(r) = self.relays.get_mut(&id) {
                    r.feed = true;
                }
                if was {
                    // Asked again (the relay lost track): a keyframe to restart from.
                    let now = self.now_us();
                    self.core.set_feed(false, now);
                }
                self.update_feed();
            }
            LinkMsg::FeedUnsubscribe { .. } => {
                if let Some(r) = self.relays.get_mut(&id) {
                    r.feed = false;
                }
                self.update_feed();
            }
            other => {
                OriginMetrics::count(&self.metrics.link_errors, "unexpected");
                self.error(
                    id,
                    ErrorCode::Unexpected,
                    format!("unexpected message {}", variant(&other)),
                );
            }
        }
    }

    /// The engine produces the spectator feed while any relay wants it.
    fn update_feed(&mut self) {
        let on = self.relays.values().any(|r| r.feed);
        let now = self.now_us();
        self.core.set_feed(on, now);
        self.route();
    }

    /// Binds a session to a relay and tells the relay every channel it receives.
    fn attach(&mut self, id: u64, session: SessionId) {
        self.orphans.remove(&session);
        if let Some(old) = self.session_relay.insert(session, id) {
            if old != id {
                self.count(old, session, false);
            } else {
                return;
            }
        }
        self.count(id, session, true);
    }

    fn detach(&mut self, session: SessionId) {
        if let Some(id) = self.session_relay.remove(&session) {
            self.count(id, session, false);
        }
    }

    /// Adds (or removes) `session` and its announced channels to relay `id`'s counts.
    fn count(&mut self, id: u64, session: SessionId, add: bool) {
        let Some(r) = self.relays.get_mut(&id) else {
            return;
        };
        let channels = self.announced.get(&session);
        if add {
            r.sessions.insert(session);
            for c in channels.into_iter().flat_map(|m| m.keys()) {
                *r.channels.entry(*c).or_insert(0) += 1;
            }
        } else {
            r.sessions.remove(&session);
            for c in channels.into_iter().flat_map(|m| m.keys()) {
                dec(&mut r.channels, *c);
            }
        }
    }

    /// A known session arrives on a (possibly new) relay: subscriptions, then exactly
    /// the batches it missed per channel (or a keyframe where history ran out).
    ///
    /// The client's cursors say what it last received per channel. One that is
    /// older than the session's current subscription to the channel is stale (the
    /// client missed a removal and a re-add while it was away): the session is owed
    /// events only from the subscription's start. Channels the client still tracks
    /// but the session no longer receives are removed.
    fn resume(&mut self, id: u64, session: SessionId, cursors: &[ChannelCursor]) {
        self.attach(id, session);
        let mut channels: Vec<(ChannelId, u64)> = self
            .announced
            .get(&session)
            .map(|m| m.iter().map(|(c, s)| (*c, *s)).collect())
            .unwrap_or_default();
        channels.sort();
        let mut added = Vec::with_capacity(channels.len());
        let mut keyframes = Vec::new();
        let mut batches = Vec::new();
        for &(channel, start) in &channels {
            let client = cursors.iter().find(|x| x.channel == channel).map(|x| x.seq);
            let Some(seen) = client else {
                // Nothing received yet: start from the state now.
                added.push(ChannelCursor {
                    channel,
                    seq: self.core.channel_seq(channel),
                });
                keyframes.push(self.core.keyframe_now(channel));
                continue;
            };
            let from = ChannelCursor {
                channel,
                seq: seen.max(start),
            };
            added.push(from);
            match self.core.history_since(from) {
                Ok(missed) => batches.extend(missed.iter().map(|b| (**b).clone())),
                Err(ResumeError::TooOld { .. }) => {
                    keyframes.push(self.core.keyframe_now(channel));
                }
            }
        }
        let removed: Vec<ChannelId> = cursors
            .iter()
            .map(|c| c.channel)
            .filter(|c| !channels.iter().any(|(x, _)| x == c))
            .collect();
        self.send(
            id,
            0,
            frame(&LinkMsg::Subscriptions {
                session,
                added,
                removed,
            }),
        );
        for kf in keyframes {
            self.send(id, 0, frame(&LinkMsg::Keyframe(kf)));
        }
        // Replays go in frames under the size limit.
        let mut chunk: Vec<EventBatch> = Vec::new();
        let mut size = 0;
        for b in batches {
            let len = b.events.iter().map(|e| e.payload.len() + 16).sum::<usize>() + 128;
            if size + len > DEFAULT_MAX_FRAME / 2 && !chunk.is_empty() {
                self.send(
                    id,
                    0,
                    frame(&LinkMsg::Replay {
                        session,
                        batches: std::mem::take(&mut chunk),
                    }),
                );
                size = 0;
            }
            size += len;
            chunk.push(b);
        }
        if !chunk.is_empty() {
            self.send(
                id,
                0,
                frame(&LinkMsg::Replay {
                    session,
                    batches: chunk,
                }),
            );
        }
    }

    fn sweep_orphans(&mut self) {
        let grace = self.cfg.session_grace;
        let expired: Vec<SessionId> = self
            .orphans
            .iter()
            .filter(|(_, t)| t.elapsed() >= grace)
            .map(|(s, _)| *s)
            .collect();
        for s in expired {
            self.orphans.remove(&s);
            self.core.handle_leave(s);
            debug!(session = %s, "session grace expired");
        }
    }

    fn send(&mut self, id: u64, lane: usize, frame: Option<Bytes>) {
        let Some(frame) = frame else { return };
        let Some(r) = self.relays.get_mut(&id) else {
            return;
        };
        if r.cut {
            return;
        }
        let Some(l) = r.lanes.get(lane) else { return };
        // A closed lane means the connection is going; `RelayDown` follows.
        if l.push(frame, self.cfg.link_queue_bytes) == Err(LaneRefused::Full) {
            // The whole budget behind: drop the relay once; its sessions can resume.
            r.cut = true;
            self.metrics.slow_relays.inc();
            warn!(
                relay = %r.relay,
                lane,
                lane_bytes = l.queued(),
                link_bytes = l.link_queued(),
                "relay too slow: its link queue is full; disconnecting"
            );
            r.conn.close(2u32.into(), b"too slow");
        }
    }

    fn route(&mut self) {
        while let Some(out) = self.core.poll_output() {
            match out {
                Output::Result { session, result } => {
                    match &result.outcome {
                        skylane_proto::Outcome::Applied { .. } => {
                            OriginMetrics::count(&self.metrics.actions, "applied")
                        }
                        skylane_proto::Outcome::Conflict { .. } => {
                            OriginMetrics::count(&self.metrics.actions, "conflict")
                        }
                        skylane_proto::Outcome::Rejected { code, .. } => OriginMetrics::count(
                            &self.metrics.actions,
                            format!("rejected_{code:?}").to_lowercase(),
                        ),
                        skylane_proto::Outcome::Unknown { .. } => {}
                    }
                    if let Some(&id) = self.session_relay.get(&session) {
                        self.send(id, 0, frame(&LinkMsg::ActionResult { session, result }));
                    }
                }
                Output::Batch(batch) => {
                    let channel = batch.channel;
                    let targets: Vec<u64> = self
                        .relays
                        .iter()
                        .filter(|(_, r)| r.channels.get(&channel).is_some_and(|n| *n > 0))
                        .map(|(id, _)| *id)
                        .collect();
                    if targets.is_empty() {
                        continue;
                    }
                    let bytes = frame(&LinkMsg::Events((*batch).clone()));
                    let lane = lane_of(channel, self.cfg.lanes);
                    for id in targets {
                        self.metrics.batches_sent.inc();
                        self.send(id, lane, bytes.clone());
                    }
                }
                Output::Keyframe(kf) => {
                    let channel = kf.channel;
                    let targets: Vec<u64> = self
                        .relays
                        .iter()
                        .filter(|(_, r)| r.channels.get(&channel).is_some_and(|n| *n > 0))
                        .map(|(id, _)| *id)
                        .collect();
                    let bytes = frame(&LinkMsg::Keyframe(kf));
                    let lane = lane_of(channel, self.cfg.lanes);
                    for id in targets {
                        self.send(id, lane, bytes.clone());
                    }
                }
                Output::Subscriptions {
                    session,
                    added,
                    removed,
                } => {
                    // Keep the announced set even while the session has no relay
                    // (orphaned, or kicked and leaving): a resume re-counts it.
                    let set = self.announced.entry(session).or_default();
                    let mut gained: Vec<ChannelId> = Vec::new();
                    for c in &added {
                        if let std::collections::hash_map::Entry::Vacant(v) = set.entry(c.channel) {
                            v.insert(c.seq);
                            gained.push(c.channel);
                        }
                    }
                    let lost: Vec<ChannelId> = removed
                        .iter()
                        .copied()
                        .filter(|c| set.remove(c).is_some())
                        .collect();
                    if set.is_empty() {
                        self.announced.remove(&session);
                    }
                    let Some(&id) = self.session_relay.get(&session) else {
                        continue;
                    };
                    if let Some(r) = self.relays.get_mut(&id) {
                        for c in gained {
                            *r.channels.entry(c).or_insert(0) += 1;
                        }
                        for c in lost {
                            dec(&mut r.channels, c);
                        }
                    }
                    self.send(
                        id,
                        0,
                        frame(&LinkMsg::Subscriptions {
                            session,
                            added,
                            removed,
                        }),
                    );
                }
                Output::Feed(f) => {
                    let targets: Vec<u64> = self
                        .relays
                        .iter()
                        .filter(|(_, r)| r.feed)
                        .map(|(id, _)| *id)
                        .collect();
                    if targets.is_empty() {
                        continue;
                    }
                    let bytes = frame(&LinkMsg::Feed((*f).clone()));
                    // One lane for the whole feed keeps its frames in order.
                    let lane = self.cfg.lanes.max(1);
                    for id in targets {
                        self.metrics.feed_frames_sent.inc();
                        self.send(id, lane, bytes.clone());
                    }
                }
                Output::Violation(v) => {
                    OriginMetrics::count(
                        &self.metrics.violations,
                        format!("{:?}", v.kind).to_lowercase(),
                    );
                    warn!(session = %v.session, player = %v.player, kind = ?v.kind, evidence = %v.evidence, "violation");
                }
                Output::Kick { session, reason } => {
                    warn!(%session, %reason, "kicking session");
                    if let Some(&id) = self.session_relay.get(&session) {
                        self.send(
                            id,
                            0,
                            frame(&LinkMsg::Error(ErrorMsg {
                                code: ErrorCode::Unexpected,
                                message: format!("{session} kicked: {reason}"),
                            })),
                        );
                        self.send(id, 0, frame(&LinkMsg::SessionClose { session }));
                    }
                    // The engine already removed the session; forget its routing
                    // (its channel removals, routed next, find it detached).
                    self.detach(session);
                }
            }
        }
    }
}

fn dec(map: &mut HashMap<ChannelId, u32>, c: ChannelId) {
    if let Some(n) = map.get_mut(&c) {
        *n = n.saturating_sub(1);
        if *n == 0 {
            map.remove(&c);
        }
    }
}

fn variant(msg: &LinkMsg) -> &'static str {
    match msg {
        LinkMsg::LinkHello { .. } => "LinkHello",
        LinkMsg::SessionOpen { .. } => "SessionOpen",
        LinkMsg::SessionClose { .. } => "SessionClose",
        LinkMsg::Action { .. } => "Action",
        LinkMsg::ActionResult { .. } => "ActionResult",
        LinkMsg::Events(_) => "Events",
        LinkMsg::Keyframe(_) => "Keyframe",
        LinkMsg::Delta(_) => "Delta",
        LinkMsg::Subscriptions { .. } => "Subscriptions",
        LinkMsg::Replay { .. } => "Replay",
        LinkMsg::Ping(_) => "Ping",
        LinkMsg::Pong(_) => "Pong",
        LinkMsg::Error(_) => "Error",
        LinkMsg::FeedSubscribe { .. } => "FeedSubscribe",
        LinkMsg::FeedUnsubscribe { .. } => "FeedUnsubscribe",
        LinkMsg::Feed(_) => "Feed",
        LinkMsg::SessionPing { .. } => "SessionPing",
        LinkMsg::SessionPong { .. } => "SessionPong",
    }
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
        let (a, mut qa) = Lane::new(budget.clone());
        let (b, _qb) = Lane::new(budget.clone());
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
        let (a, qa) = Lane::new(budget.clone());
        drop(qa);
        assert_eq!(a.push(bytes(10), 1000), Err(LaneRefused::Closed));
        assert_eq!((a.queued(), a.link_queued()), (0, 0));
    }
}
