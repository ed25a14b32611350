//! One task per relay connection: the link hello, the downstream lanes and
//! their writers, and readers for every stream and datagram the relay sends,
//! feeding the actor. Session pings are answered here, on arrival.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use quinn::{Connection, Endpoint};
use skylane_proto::{
    DecodeError, ErrorCode, ErrorMsg, FrameDecoder, LinkMsg, Pong, RelayId, PROTOCOL_VERSION,
};
use tokio::sync::watch;
use tracing::{debug, info};

use crate::metrics::OriginMetrics;

use super::actor::frame;
use super::host::{LinkEntry, SharedDir};
use super::lanes::{lane_count, lane_priority, write_lane, DownLane};
use super::mailbox::{Clock, Cmd};
use super::ServerConfig;

/// What every relay connection's tasks share.
#[derive(Clone)]
pub(crate) struct LinkEnv {
    pub(crate) dir: SharedDir,
    pub(crate) cfg: ServerConfig,
    pub(crate) clock: Clock,
    pub(crate) metrics: OriginMetrics,
}

pub(crate) async fn accept_loop(endpoint: Endpoint, env: LinkEnv, shutdown: watch::Receiver<bool>) {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    while let Some(incoming) = endpoint.accept().await {
        if *shutdown.borrow() {
            incoming.refuse();
            continue;
        }
        let id = NEXT.fetch_add(1, Ordering::Relaxed);
        let env = env.clone();
        tokio::spawn(async move {
            match incoming.await {
                Ok(conn) if is_replication(&conn) => {
                    super::replication::serve_standby(conn, env.dir, env.metrics).await;
                }
                Ok(conn) if alpn_is(&conn, skylane_proto::zones::ZONE_ALPN) => {
                    super::zones::serve_zone(conn, env.dir, env.metrics).await;
                }
                Ok(conn) => serve_relay(id, conn, env).await,
                Err(e) => debug!(cause = %e, "relay handshake failed"),
            }
        });
    }
}

/// Whether `conn` negotiated the replication protocol (a standby origin).
fn is_replication(conn: &Connection) -> bool {
    alpn_is(conn, skylane_proto::REPL_ALPN)
}

/// Whether `conn` negotiated `alpn`.
fn alpn_is(conn: &Connection, alpn: &[u8]) -> bool {
    conn.handshake_data()
        .and_then(|d| d.downcast::<quinn::crypto::rustls::HandshakeData>().ok())
        .and_then(|d| d.protocol)
        .is_some_and(|p| p == alpn)
}

/// Reads one connection's streams and feeds the actor; writes its lanes.
async fn serve_relay(id: u64, conn: Connection, env: LinkEnv) {
    let cfg = env.cfg;
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
    let mut lanes = Vec::with_capacity(lane_count(cfg.lanes));
    let (control, lane0_rx) = DownLane::new(budget.clone());
    tokio::spawn(write_lane(
        conn.clone(),
        lane_priority(0, cfg.lanes),
        Some(ctl_send),
        lane0_rx,
    ));
    let reader = LinkReader {
        id,
        dir: env.dir.clone(),
        metrics: env.metrics.clone(),
        control: control.clone(),
        clock: env.clock,
        max_frame: cfg.max_frame,
        link_limit: cfg.link_queue_bytes,
        pong_shed: cfg.pong_shed_bytes,
    };
    // The link's hello (the worlds each add theirs, with their epochs).
    let hello = LinkMsg::LinkHello {
        version: PROTOCOL_VERSION,
        relay: RelayId(0),
    };
    if let Some(f) = frame(&hello) {
        let _ = control.push(f, cfg.link_queue_bytes);
    }
    lanes.push(control);
    for lane in 1..lane_count(cfg.lanes) {
        let (ltx, lrx) = DownLane::new(budget.clone());
        let priority = lane_priority(lane, cfg.lanes);
        tokio::spawn(write_lane(conn.clone(), priority, None, lrx));
        lanes.push(ltx);
    }
    let entry = LinkEntry {
        relay,
        conn: conn.clone(),
        lanes,
    };
    for world in env.dir.link_up(id, entry.clone()) {
        let _ = world.send(entry.up(id)).await;
    }
    env.metrics.relays.set(env.dir.links() as i64);
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
    for world in env.dir.link_down(id) {
        let _ = world.send(Cmd::RelayDown { id }).await;
    }
    env.metrics.relays.set(env.dir.links() as i64);
}

/// What a task reading one relay link's streams and datagrams needs.
#[derive(Clone)]
struct LinkReader {
    id: u64,
    dir: SharedDir,
    metrics: OriginMetrics,
    /// The link's control lane, for pongs answered without the actor.
    control: DownLane,
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
        let msg = match msg {
            Ok(m) => m,
            Err(e) => {
                OriginMetrics::count(&self.metrics.link_errors, e.label());
                self.reply(&LinkMsg::Error(ErrorMsg {
                    code: ErrorCode::Malformed,
                    message: format!("undecodable frame: {}", e.label()),
                }));
                return true;
            }
        };
        let target = match &msg {
            LinkMsg::SessionPing { session, ping } => {
                let now = self.clock.now_us();
                let pong = LinkMsg::SessionPong {
                    session: *session,
                    pong: Pong::answer(ping, now, now),
                };
                // Behind a long control queue the pong would measure the queue:
                // it is shed like a lost datagram (the relay pings again).
                if self.control.queued() <= self.pong_shed {
                    self.reply(&pong);
                }
                return true;
            }
            LinkMsg::Ping(p) => {
                let now = self.clock.now_us();
                self.reply(&LinkMsg::Pong(Pong::answer(p, now, now)));
                return true;
            }
            LinkMsg::Pong(_) => return true,
            LinkMsg::SessionOpen { session, world, .. } => match self.dir.open(*session, *world) {
                Some(tx) => tx,
                None => {
                    OriginMetrics::count(&self.metrics.link_errors, "unknown_world");
                    self.reply(&LinkMsg::SessionRefused {
                        session: *session,
                        code: ErrorCode::UnknownWorld,
                        reason: format!("this origin does not host {world}"),
                    });
                    return true;
                }
            },
            LinkMsg::SessionClose { session }
            | LinkMsg::Action { session, .. }
            | LinkMsg::EdgeReport { session, .. } => match self.dir.of_session(*session) {
                Some(tx) => tx,
                None => {
                    OriginMetrics::count(&self.metrics.link_errors, "unknown_session");
                    self.reply(&LinkMsg::Error(ErrorMsg {
                        code: ErrorCode::UnknownSession,
                        message: format!("{session} is not open on this origin"),
                    }));
                    return true;
                }
            },
            LinkMsg::FeedSubscribe { world } | LinkMsg::FeedUnsubscribe { world } => {
                match self.dir.world(*world) {
                    Some(tx) => tx,
                    None => {
                        OriginMetrics::count(&self.metrics.link_errors, "unknown_world");
                        self.reply(&LinkMsg::Error(ErrorMsg {
                            code: ErrorCode::UnknownWorld,
                            message: format!("this origin does not host {world}"),
                        }));
                        return true;
                    }
                }
            }
            other => {
                OriginMetrics::count(&self.metrics.link_errors, "unexpected");
                self.reply(&LinkMsg::Error(ErrorMsg {
                    code: ErrorCode::Unexpected,
                    message: format!("unexpected message {}", variant(other)),
                }));
                return true;
            }
        };
        // A world that stopped meanwhile just drops it; the link goes on.
        let _ = target.send(Cmd::Msg { id: self.id, msg }).await;
        true
    }

    /// Answers on the link's control lane, without any world.
    fn reply(&self, msg: &LinkMsg) {
        if let Some(bytes) = frame(msg) {
            let _ = self.control.push(bytes, self.link_limit);
        }
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

/// A link message's name, for errors and logs.
pub(crate) fn variant(msg: &LinkMsg) -> &'static str {
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
        LinkMsg::ResumeIncomplete { .. } => "ResumeIncomplete",
        LinkMsg::WorldState(_) => "WorldState",
        LinkMsg::SessionRefused { .. } => "SessionRefused",
        LinkMsg::Sanction(_) => "Sanction",
        LinkMsg::EdgeReport { .. } => "EdgeReport",
        LinkMsg::Movement(_) => "Movement",
        LinkMsg::SessionMoved { .. } => "SessionMoved",
    }
}
