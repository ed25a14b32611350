//! [`Client`]: a connected game client, the handle the game holds; it talks to
//! its driver task through a command queue and reads shared counters.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;
use skylane_proto::{
    EntityVersion, EventClass, Outcome, Payload, SessionId, SpectatorSubscribe, WorldState,
};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::{ClientError, ClientEvent, ClientStats, LatencySummary};

/// A connected game client. Dropping it ends the session without a goodbye (the
/// relay keeps it for its grace period); [`Client::close`] ends it for good.
#[derive(Debug)]
pub struct Client {
    pub(crate) cmd: mpsc::Sender<Cmd>,
    pub(crate) events: mpsc::Receiver<ClientEvent>,
    pub(crate) shared: Arc<Mutex<SharedState>>,
    pub(crate) clock: UnixClock,
    /// The operator's content key ([`Client::fetch_content`]).
    pub(crate) content_key: Option<skylane_proto::ed25519_dalek::VerifyingKey>,
    /// One content download at a time per client.
    pub(crate) content_lock: tokio::sync::Mutex<()>,
}

/// Origin pings a client keeps waiting at once; more fail at once.
pub(crate) const MAX_ORIGIN_PINGS_IN_FLIGHT: usize = 16;

#[derive(Debug)]
pub(crate) enum Cmd {
    Act {
        class: EventClass,
        reads: Vec<EntityVersion>,
        payload: Payload,
        reply: Option<oneshot::Sender<Result<Outcome, ClientError>>>,
    },
    Spectate(SpectatorSubscribe),
    OriginPing(oneshot::Sender<Duration>),
    /// A content request; its answers go to `reply` until the connection
    /// changes (then `reply` is dropped: the caller resumes).
    Content {
        msg: skylane_proto::ClientMsg,
        reply: mpsc::Sender<skylane_proto::ServerMsg>,
    },
    Bye(oneshot::Sender<()>),
}

#[derive(Debug, Default)]
pub(crate) struct SharedState {
    pub(crate) session: Option<SessionId>,
    pub(crate) relay: Option<SocketAddr>,
    pub(crate) stats: ClientStats,
    /// Per class, created at its first sample (2 significant digits: ~20 KB each).
    pub(crate) latency: [Option<Histogram<u64>>; EventClass::COUNT],
    /// The world's last lifecycle state.
    pub(crate) world: Option<WorldState>,
    /// The latest movement state of every entity heard of.
    pub(crate) entities: crate::movement::Entities,
    /// Where the game looks from, for the next movement acknowledgement.
    pub(crate) viewpoint: Option<(f32, f32)>,
}

impl Client {
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

    /// `e`'s latest movement state and the one before it (with their ticks
    /// and origin times), from the movement-class events naming it; latest
    /// wins. [`crate::movement::Track::at`] interpolates for rendering.
    pub fn entity(&self, e: skylane_proto::EntityId) -> Option<crate::movement::Track> {
        self.shared
            .lock()
            .ok()
            .and_then(|s| s.entities.get(e).cloned())
    }

    /// Tells the relay where this client looks from (its avatar, its camera):
    /// when the movement budget is short, the nearest entities come first.
    /// Sent with the next movement acknowledgement.
    pub fn set_viewpoint(&self, x: f32, y: f32) {
        if let Ok(mut s) = self.shared.lock() {
            s.viewpoint = Some((x, y));
        }
    }

    /// Every entity's movement track (a snapshot).
    pub fn entities(&self) -> Vec<(skylane_proto::EntityId, crate::movement::Track)> {
        self.shared.lock().map_or_else(
            |_| Vec::new(),
            |s| s.entities.iter().map(|(e, t)| (e, t.clone())).collect(),
        )
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

    /// The world's last lifecycle state (phase, players, result), if the relay
    /// has sent one.
    pub fn world_state(&self) -> Option<WorldState> {
        self.shared.lock().ok().and_then(|s| s.world.clone())
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

    pub(crate) async fn command(&self, cmd: Cmd) -> Result<(), ClientError> {
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
pub(crate) struct UnixClock {
    pub(crate) base_unix_us: u64,
    pub(crate) base: Instant,
}

impl UnixClock {
    pub(crate) fn new() -> Self {
        Self {
            base_unix_us: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_micros() as u64),
            base: Instant::now(),
        }
    }
    pub(crate) fn now_us(&self) -> u64 {
        self.base_unix_us + self.base.elapsed().as_micros() as u64
    }
}
