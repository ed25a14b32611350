//! Spectators on this relay: each world's [`Audience`] (the delay buffer, fed
//! by the world's one feed from its origin), each spectator's queue and the
//! task writing it, and each origin's clock as seen from here (delays are world
//! time, so the relay must know the origin's clock).
//!
//! The actor owns one [`Spectators`]; its methods say which feed subscriptions
//! to send, and the actor sends them.

use std::future::poll_fn;
use std::sync::Arc;

use bytes::Bytes;
use quinn::Connection;
use rustc_hash::FxHashMap as HashMap;
use skylane_proto::{
    ClockSync, ErrorCode, EventClass, FeedFrame, Pong, SessionId, SpectatorSubscribe, WorldId,
};
use tokio::sync::mpsc;

use crate::metrics::RelayMetrics;
use crate::routing::OriginId;
use crate::spectate::{Audience, AudienceConfig};

use super::writer::{close_too_slow, Outbox, Refused};

/// Samples kept per origin clock.
const CLOCK_WINDOW: usize = 32;

/// A subscription refused: what the spectator is told, and the metric label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Refusal {
    pub(crate) code: ErrorCode,
    pub(crate) label: &'static str,
    pub(crate) message: String,
}

/// Every audience on this relay.
pub(crate) struct Spectators {
    config: AudienceConfig,
    metrics: RelayMetrics,
    /// Audiences per world, with the origin whose feed fills each.
    audiences: HashMap<WorldId, (OriginId, Audience)>,
    /// Each spectator's world and queue.
    queues: HashMap<SessionId, (WorldId, mpsc::Sender<Bytes>)>,
    /// Each origin's clock (from link pings).
    clocks: HashMap<OriginId, ClockSync>,
    /// Each spectator session's tier: the shortest delay it may watch with
    /// (ms), from its token or the configured default; set at every
    /// admission (a resume brings its token again), dropped with the session.
    tiers: HashMap<SessionId, u32>,
}

impl Spectators {
    pub(crate) fn new(config: AudienceConfig, metrics: RelayMetrics) -> Self {
        Self {
            config,
            metrics,
            audiences: HashMap::default(),
            queues: HashMap::default(),
            clocks: HashMap::default(),
            tiers: HashMap::default(),
        }
    }

    /// A spectator session was admitted with `min_delay_ms` from its token
    /// (`None`: the configured default applies).
    pub(crate) fn set_tier(&mut self, session: SessionId, min_delay_ms: Option<u32>) {
        let default = u32::try_from(self.config.default_min_delay.as_millis()).unwrap_or(u32::MAX);
        self.tiers.insert(session, min_delay_ms.unwrap_or(default));
    }

    /// The session ended: its tier goes.
    pub(crate) fn forget_tier(&mut self, session: SessionId) {
        self.tiers.remove(&session);
    }

    /// A spectator of `world` (hosted by `origin`) subscribes, or changes its
    /// subscription. `Ok(Some(origin))`: the world's feed must be opened on that
    /// origin's link (its first spectator here).
    pub(crate) fn subscribe(
        &mut self,
        now_us: u64,
        session: SessionId,
        world: WorldId,
        origin: OriginId,
        sub: &SpectatorSubscribe,
        tx: mpsc::Sender<Bytes>,
    ) -> Result<Option<OriginId>, Refusal> {
        if sub.world != world {
            return Err(Refusal {
                code: ErrorCode::UnknownWorld,
                label: "wrong_world",
                message: format!("the session watches {world}, not {}", sub.world),
            });
        }
        let new = !self.audiences.contains_key(&world);
        let (_, audience) = self.audiences.entry(world).or_insert_with(|| {
            let mut a = Audience::new(world, self.config);
            if let Some(e) = self.clocks.get(&origin).and_then(ClockSync::estimate) {
                a.handle_clock(now_us, e.offset_us);
            }
            (origin, a)
        });
        // A session admitted without a tier (never: set at admission) gets
        // the configured default rather than live play.
        let tier = self.tiers.get(&session).copied().unwrap_or_else(|| {
            u32::try_from(self.config.default_min_delay.as_millis()).unwrap_or(u32::MAX)
        });
        let result = audience.handle_subscribe(now_us, session, sub, tier);
        match result {
            Ok(served) => {
                if served != sub.delay_ms {
                    self.metrics.spectator_delays_raised.inc();
                }
                self.queues.insert(session, (world, tx));
                self.deliver(world);
                self.metrics.spectators.set(self.queues.len() as i64);
                Ok(new.then_some(origin))
            }
            Err(e) => {
                if new {
                    // Never fed: nothing to unsubscribe.
                    self.audiences.remove(&world);
                }
                Err(Refusal {
                    code: ErrorCode::Unsupported,
                    label: e.label(),
                    message: e.to_string(),
                })
            }
        }
    }

    /// A spectator left (or disconnected). `Some`: the world's last spectator
    /// here left, close its feed on that origin's link.
    pub(crate) fn leave(&mut self, session: SessionId) -> Option<(WorldId, OriginId)> {
        let (world, _) = self.queues.remove(&session)?;
        self.metrics.spectators.set(self.queues.len() as i64);
        let (origin, audience) = self.audiences.get_mut(&world)?;
        audience.handle_leave(session);
        if !audience.is_empty() {
            return None;
        }
        let origin = *origin;
        self.audiences.remove(&world);
        Some((world, origin))
    }

    /// `origin` now owns `world` (it declared the highest epoch): the world's
    /// audience, if any, is fed from it from now on, on its clock. `Some(old)`:
    /// the feed moved, close it on `old`'s link and open it on `origin`'s.
    /// The audience keeps its buffer: frames already held are released at
    /// their times, the new owner's (from the tick it goes on from) follow.
    pub(crate) fn rebind(
        &mut self,
        now_us: u64,
        world: WorldId,
        origin: OriginId,
    ) -> Option<OriginId> {
        let (bound, audience) = self.audiences.get_mut(&world)?;
        if *bound == origin {
            return None;
        }
        let old = std::mem::replace(bound, origin);
        if let Some(e) = self.clocks.get(&origin).and_then(ClockSync::estimate) {
            audience.handle_clock(now_us, e.offset_us);
        }
        self.metrics.spectator_feeds_moved.inc();
        self.deliver(world);
        Some(old)
    }

    /// A link pong from `origin`, received at `at_us` (relay clock): the
    /// origin's clock estimate moves, and so do the worlds it feeds.
    pub(crate) fn handle_pong(&mut self, origin: OriginId, pong: &Pong, at_us: u64) {
        let clock = self
            .clocks
            .entry(origin)
            .or_insert_with(|| ClockSync::new(CLOCK_WINDOW));
        clock.handle_pong(pong, at_us);
        let Some(estimate) = clock.estimate() else {
            return;
        };
        for world in self.worlds_of(origin) {
            if let Some((_, a)) = self.audiences.get_mut(&world) {
                a.handle_clock(at_us, estimate.offset_us);
            }
            self.deliver(world);
        }
    }

    /// A frame of a world's feed.
    pub(crate) fn handle_feed(&mut self, at_us: u64, frame: FeedFrame) {
        self.metrics.feed_frames_in.inc();
        let world = frame.world;
        if let Some((_, a)) = self.audiences.get_mut(&world) {
            a.handle_frame(at_us, Arc::new(frame));
            self.deliver(world);
        }
    }

    /// Worlds fed by `origin` that have spectators here, sorted.
    pub(crate) fn worlds_of(&self, origin: OriginId) -> Vec<WorldId> {
        let mut worlds: Vec<WorldId> = self
            .audiences
            .iter()
            .filter(|(_, (o, _))| *o == origin)
            .map(|(w, _)| *w)
            .collect();
        worlds.sort_unstable();
        worlds
    }

    /// When the next frame is due (relay clock, µs).
    pub(crate) fn poll_timeout(&self) -> Option<u64> {
        self.audiences
            .values()
            .filter_map(|(_, a)| a.poll_timeout())
            .min()
    }

    /// Releases every frame due at `now_us`.
    pub(crate) fn handle_timeout(&mut self, now_us: u64) {
        let worlds: Vec<WorldId> = self.audiences.keys().copied().collect();
        for w in worlds {
            if let Some((_, a)) = self.audiences.get_mut(&w) {
                a.handle_timeout(now_us);
            }
            self.deliver(w);
        }
    }

    /// Hands a world's due frames to their queues; a full queue makes that
    /// spectator skip to the next keyframe.
    fn deliver(&mut self, world: WorldId) {
        let Some((_, a)) = self.audiences.get_mut(&world) else {
            return;
        };
        let m = &self.metrics;
        while let Some(d) = a.poll_delivery() {
            let Some((_, tx)) = self.queues.get(&d.spectator) else {
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
}

/// Writes a spectator's frames, in order, on one stream of its own, with the
/// replies to its requests (replies first when both wait).
pub(crate) async fn write_spectator(
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
