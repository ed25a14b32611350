//! The driver: one task per client that owns the connection, the session and
//! everything stateful (ordering, clock sync, pending actions, relay choice);
//! the [`crate::Client`] handle talks to it through a queue. `connect.rs`
//! chooses a relay and opens the session, `send.rs` writes actions by class,
//! `receive.rs` handles what the relay sends.

mod connect;
mod receive;
mod send;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use quinn::{Connection, Endpoint};
use skylane_proto::{
    encode_frame_to_bytes, Action, ChainVerifier, ClientMsg, EventClass, Outcome, Ping,
    ResumeTicket, ServerMsg, SessionId, SpectatorSubscribe, WorldId, DEFAULT_MAX_FRAME,
};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tracing::info;

use crate::{
    ChoiceConfig, ClientError, ClientEvent, ClockSync, Ordering, RelayChoice, WARM_UP_SAMPLES,
};

use crate::client::{Cmd, SharedState, UnixClock, MAX_ORIGIN_PINGS_IN_FLIGHT};

use receive::pump;

/// A live connection with its session opened.
pub(crate) struct Live {
    conn: Connection,
    relay: SocketAddr,
    rx: mpsc::Receiver<ServerMsg>,
    control: quinn::SendStream,
}

/// A probe round's answers: each challenger's smallest round trip.
pub(crate) type RoundResults = Vec<(SocketAddr, Option<Duration>)>;

pub(crate) enum End {
    Bye,
    Lost(String),
    Moved(Vec<SocketAddr>),
    Switch { from: SocketAddr, to: SocketAddr },
    Fatal(ClientError),
}

pub(crate) struct Driver {
    pub(crate) endpoint: Endpoint,
    pub(crate) quic: quinn::ClientConfig,
    pub(crate) server_name: String,
    pub(crate) token: String,
    /// Where fresh tokens come from, if anywhere.
    pub(crate) provider: Option<crate::builder::TokenProvider>,
    /// A relay refused the token as expired: fetch another before the next
    /// hello.
    pub(crate) refresh_token: bool,
    /// The token in use was fetched for this very hello.
    pub(crate) token_fresh: bool,
    /// A freshly fetched token was refused as expired: retrying cannot help.
    pub(crate) token_given_up: bool,
    pub(crate) world: WorldId,
    pub(crate) candidates: Vec<SocketAddr>,
    pub(crate) probe: usize,
    pub(crate) ping_interval: Duration,
    /// Re-probing settings (`None`: never switch on speed).
    pub(crate) choice_cfg: Option<ChoiceConfig>,
    pub(crate) choice: Option<RelayChoice>,
    /// The relay to connect to first on the next connect (a switch).
    pub(crate) prefer: Option<SocketAddr>,
    pub(crate) clock: UnixClock,
    pub(crate) ticket: Option<ResumeTicket>,
    pub(crate) session: Option<SessionId>,
    pub(crate) order: Ordering,
    pub(crate) verifier: Option<ChainVerifier>,
    /// The origin's key spectator frames are checked against (with
    /// [`crate::ClientBuilder::origin_key`]).
    pub(crate) feed_key: Option<skylane_proto::ed25519_dalek::VerifyingKey>,
    /// Unsigned spectator deltas are accepted (the reduced mode was asked
    /// for, and no keyframe of another mode came since).
    pub(crate) unsigned_ok: bool,
    pub(crate) sync: ClockSync,
    pub(crate) shared: Arc<Mutex<SharedState>>,
    pub(crate) pending: HashMap<u64, oneshot::Sender<Result<Outcome, ClientError>>>,
    /// Origin pings waiting for their pong, by nonce (at most
    /// `MAX_ORIGIN_PINGS_IN_FLIGHT`).
    pub(crate) origin_pings: HashMap<u64, oneshot::Sender<Duration>>,
    /// Where content answers go (the download in progress).
    pub(crate) content: Option<mpsc::Sender<ServerMsg>>,
    pub(crate) next_origin_ping: u64,
    pub(crate) next_seq: u64,
    pub(crate) streams: HashMap<EventClass, quinn::SendStream>,
    /// The spectator feed to ask for after every (re)connect.
    pub(crate) spectate: Option<SpectatorSubscribe>,
    /// Movement datagrams received and not acknowledged yet (sent after the
    /// message that brought them).
    pub(crate) movement_acks: Vec<u64>,
}

impl Driver {
    pub(crate) async fn run(
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
                    Err(e) if self.retryable(&e) => {
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
            // sees the connection lost; a download resumes from its offset).
            self.origin_pings.clear();
            self.content = None;
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
                        self.ack_movement(&l.conn);
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
                        if matches!(sub.mode, skylane_proto::BandwidthMode::Reduced { .. }) {
                            self.unsigned_ok = true;
                        }
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
                    Some(Cmd::Content { msg, reply }) => {
                        self.content = Some(reply);
                        if let Err(e) = self.write(&l.conn, msg, EventClass::Bulk).await {
                            return End::Lost(e);
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
}
