//! Fan-out and per-session ordering (pure: no I/O, no clock).
//!
//! The origin sends each channel's batch once to the relay; the hub hands the same
//! encoded frame (shared [`Bytes`], never re-encoded) to every local subscriber of
//! the channel. It also keeps each session's stream exactly-once and in order
//! across resumes: per (session, channel) it remembers the last sequence number
//! handed to the client, so
//!
//! * a batch at or below that cursor is a duplicate (a replay overlapping live
//!   traffic) and is skipped;
//! * a batch that would leave a hole is held back: the origin's replay for a
//!   resuming session travels on a different stream than live batches, so live
//!   batches can overtake it. When the replay arrives it is delivered, then the
//!   held-back live batches from the channel's recent-batch ring;
//! * a session stuck behind a hole that nothing fills for `gap_timeout`
//!   resynchronises from the channel's next keyframe.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rustc_hash::{FxHashMap as HashMap, FxHashSet as HashSet};
use skylane_proto::{ChannelCursor, ChannelId, EventClass, SessionId, WorldId};

/// Hub settings.
#[derive(Debug, Clone, Copy)]
pub struct HubConfig {
    /// Recent batches kept per channel to fill holes after a resume.
    pub ring: usize,
    /// How long a session may wait for a hole to fill before a keyframe resyncs it.
    pub gap_timeout: Duration,
}

impl Default for HubConfig {
    fn default() -> Self {
        Self {
            ring: 256,
            gap_timeout: Duration::from_secs(1),
        }
    }
}

/// A batch as the hub sees it: its sequence range, class and client frame.
#[derive(Debug, Clone)]
pub struct BatchFrame {
    /// World.
    pub world: WorldId,
    /// Channel.
    pub channel: ChannelId,
    /// First event sequence number in the batch.
    pub first: u64,
    /// Last event sequence number in the batch.
    pub last: u64,
    /// Most urgent class among the batch's events (decides its priority).
    pub class: EventClass,
    /// The complete `ServerMsg::Events` frame.
    pub frame: Bytes,
}

/// A frame for one session's client.
#[derive(Debug, Clone)]
pub struct FanoutDelivery {
    /// Session.
    pub session: SessionId,
    /// Class (for the connection's scheduler).
    pub class: EventClass,
    /// Encoded `ServerMsg` frame.
    pub frame: Bytes,
}

/// Counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HubStats {
    /// Batches received from origins.
    pub batches_in: u64,
    /// Frames handed to sessions.
    pub delivered: u64,
    /// Batches skipped as already delivered.
    pub duplicates: u64,
    /// Batches held back behind a hole.
    pub held: u64,
    /// Sessions resynchronised from a keyframe after an unfilled hole.
    pub resyncs: u64,
}

#[derive(Debug, Default)]
struct Channel {
    subscribers: Vec<SessionId>,
    ring: VecDeque<BatchFrame>,
}

#[derive(Debug, Clone, Copy, Default)]
struct Cursor {
    last: Option<u64>,
    gap_since: Option<Instant>,
}

#[derive(Debug)]
struct Feed {
    world: WorldId,
    cursors: HashMap<ChannelId, Cursor>,
    channels: HashSet<ChannelId>,
}

/// What to do with a batch for one session.
enum Step {
    Deliver,
    Duplicate,
    Hole,
}

fn step(c: &Cursor, first: u64, last: u64) -> Step {
    match c.last {
        None => Step::Deliver,
        Some(l) if last <= l => Step::Duplicate,
        Some(l) if first <= l + 1 => Step::Deliver,
        Some(_) => Step::Hole,
    }
}

/// The relay's fan-out state.
#[derive(Debug, Default)]
pub struct Hub {
    cfg: HubConfig,
    channels: HashMap<(WorldId, ChannelId), Channel>,
    feeds: HashMap<SessionId, Feed>,
    out: VecDeque<FanoutDelivery>,
    stats: HubStats,
}

impl Hub {
    /// An empty hub.
    pub fn new(cfg: HubConfig) -> Self {
        Self {
            cfg,
            ..Self::default()
        }
    }

    /// Counters.
    pub fn stats(&self) -> HubStats {
        self.stats
    }

    /// Sessions with a feed.
    pub fn sessions(&self) -> usize {
        self.feeds.len()
    }

    /// Channels with at least one local subscriber or recent batch.
    pub fn channels(&self) -> usize {
        self.channels.len()
    }

    /// Local subscribers of a channel.
    pub fn subscribers(&self, world: WorldId, channel: ChannelId) -> usize {
        self.channels
            .get(&(world, channel))
            .map_or(0, |c| c.subscribers.len())
    }

    /// The local subscribers of a channel.
    pub fn subscriber_ids(&self, world: WorldId, channel: ChannelId) -> &[SessionId] {
        self.channels
            .get(&(world, channel))
            .map_or(&[], |c| &c.subscribers[..])
    }

    /// The world a session receives (while it is open here).
    pub fn world_of(&self, session: SessionId) -> Option<WorldId> {
        self.feeds.get(&session).map(|f| f.world)
    }

    /// A session opens or resumes here. `resume_from` is what its client last
    /// received per channel; its subscriptions start empty until the origin's
    /// `Subscriptions` arrive.
    pub fn handle_open(
        &mut self,
        session: SessionId,
        world: WorldId,
        resume_from: &[ChannelCursor],
    ) {
        self.handle_close(session);
        let cursors = resume_from
            .iter()
            .map(|c| {
                (
                    c.channel,
                    Cursor {
                        last: Some(c.seq),
                        gap_since: None,
                    },
                )
            })
            .collect();
        self.feeds.insert(
            session,
            Feed {
                world,
                cursors,
                channels: HashSet::default(),
            },
        );
    }

    /// What the relay has handed to a session's client, per channel (to resume the
    /// session upstream after a link failure).
    pub fn cursors(&self, session: SessionId) -> Vec<ChannelCursor> {
        let Some(f) = self.feeds.get(&session) else {
            return Vec::new();
        };
        let mut v: Vec<ChannelCursor> = f
            .cursors
            .iter()
            .filter_map(|(ch, c)| c.last.map(|seq| ChannelCursor { channel: *ch, seq }))
            .collect();
        v.sort_by_key(|c| c.channel);
        v
    }

    /// The channels a session receives changed (origin's interest management).
    /// Each added channel names the last sequence number before the session's
    /// first event on it; a session that already has a cursor there (a resume)
    /// keeps its own unless the added one is later.
    pub fn handle_subscriptions(
        &mut self,
        now: Instant,
        session: SessionId,
        added: &[ChannelCursor],
        removed: &[ChannelId],
    ) {
        let Some(feed) = self.feeds.get_mut(&session) else {
            return;
        };
        let world = feed.world;
        for ch in removed {
            feed.cursors.remove(ch);
            if feed.channels.remove(ch) {
                if let Some(c) = self.channels.get_mut(&(world, *ch)) {
                    c.subscribers.retain(|s| *s != session);
                }
            }
        }
        for a in added {
            let c = feed.cursors.entry(a.channel).or_default();
            // A resume keeps its own cursor, unless the origin says the session is
            // owed events only from later (its client missed a removal and a
            // re-add while away).
            if c.last.is_none_or(|l| l < a.seq) {
                c.last = Some(a.seq);
                c.gap_since = None;
            }
            if feed.channels.insert(a.channel) {
                self.channels
                    .entry((world, a.channel))
                    .or_default()
                    .subscribers
                    .push(session);
            }
        }
        for a in added {
            self.fill_from_ring(now, session, world, a.channel);
        }
    }

    /// A session left this relay (closed, expired or moved).
    pub fn handle_close(&mut self, session: SessionId) {
        let Some(feed) = self.feeds.remove(&session) else {
            return;
        };
        for ch in feed.channels {
            if let Some(c) = self.channels.get_mut(&(feed.world, ch)) {
                c.subscribers.retain(|s| *s != session);
            }
        }
    }

    /// A live batch from the origin: every subscriber gets the same frame.
    pub fn handle_batch(&mut self, now: Instant, batch: BatchFrame) {
        self.stats.batches_in += 1;
        let key = (batch.world, batch.channel);
        let ch = self.channels.entry(key).or_default();
        ch.ring.push_back(batch.clone());
        while ch.ring.len() > self.cfg.ring {
            ch.ring.pop_front();
        }
        for &s in &ch.subscribers {
            let Some(feed) = self.feeds.get_mut(&s) else {
                continue;
            };
            let c = feed.cursors.entry(batch.channel).or_default();
            match step(c, batch.first, batch.last) {
                Step::Deliver => {
                    c.last = Some(batch.last);
                    c.gap_since = None;
                    self.stats.delivered += 1;
                    self.out.push_back(FanoutDelivery {
                        session: s,
                        class: batch.class,
                        frame: batch.frame.clone(),
                    });
                }
                Step::Duplicate => self.stats.duplicates += 1,
                Step::Hole => {
                    self.stats.held += 1;
                    c.gap_since.get_or_insert(now);
                }
            }
        }
    }

    /// Batches a resuming session missed (the origin's replay), in order.
    pub fn handle_replay(&mut self, now: Instant, session: SessionId, batches: Vec<BatchFrame>) {
        let mut touched: Vec<(WorldId, ChannelId)> = Vec::new();
        for b in batches {
            if !touched.contains(&(b.world, b.channel)) {
                touched.push((b.world, b.channel));
            }
            self.offer(now, session, &b);
        }
        for (w, ch) in touched {
            self.fill_from_ring(now, session, w, ch);
        }
    }

    /// A keyframe of a channel. Subscribers that have nothing yet start from it;
    /// subscribers stuck behind an unfilled hole for `gap_timeout` resync from it;
    /// subscribers in step receive it as a checkpoint.
    pub fn handle_keyframe(
        &mut self,
        now: Instant,
        world: WorldId,
        channel: ChannelId,
        seq: u64,
        frame: Bytes,
    ) {
        let Some(ch) = self.channels.get(&(world, channel)) else {
            return;
        };
        for &s in &ch.subscribers {
            let Some(feed) = self.feeds.get_mut(&s) else {
                continue;
            };
            let c = feed.cursors.entry(channel).or_default();
            let take = match (c.last, c.gap_since) {
                (None, _) => true,
                (Some(_), Some(since))
                    if now.saturating_duration_since(since) >= self.cfg.gap_timeout =>
                {
                    self.stats.resyncs += 1;
                    true
                }
                (Some(l), None) => l == seq,
                (Some(_), Some(_)) => false,
            };
            if take {
                // A keyframe past this session's position skips events: tell the
                // client it is a resync, not a checkpoint.
                let skips = c.last.is_some_and(|l| l != seq);
                c.last = Some(seq);
                c.gap_since = None;
                self.stats.delivered += 1;
                let frame = if skips {
                    skylane_proto::keyframe_frame_as_resync(&frame).unwrap_or_else(|| frame.clone())
                } else {
                    frame.clone()
                };
                self.out.push_back(FanoutDelivery {
                    session: s,
                    class: EventClass::State,
                    frame,
                });
            }
        }
    }

    /// The next frame to hand to a session's connection.
    pub fn poll_delivery(&mut self) -> Option<FanoutDelivery> {
        self.out.pop_front()
    }

    fn offer(&mut self, now: Instant, session: SessionId, b: &BatchFrame) -> bool {
        let Some(feed) = self.feeds.get_mut(&session) else {
            return false;
        };
        let c = feed.cursors.entry(b.channel).or_default();
        match step(c, b.first, b.last) {
            Step::Deliver => {
                c.last = Some(b.last);
                c.gap_since = None;
                self.stats.delivered += 1;
                self.out.push_back(FanoutDelivery {
                    session,
                    class: b.class,
                    frame: b.frame.clone(),
                });
                true
            }
            Step::Duplicate => {
                self.stats.duplicates += 1;
                false
            }
            Step::Hole => {
                c.gap_since.get_or_insert(now);
                false
            }
        }
    }

    /// Delivers the ring's batches that continue the session's cursor.
    fn fill_from_ring(&mut self, now: Instant, session: SessionId, world: WorldId, ch: ChannelId) {
        let Some(last) = self
            .feeds
            .get(&session)
            .and_then(|f| f.cursors.get(&ch))
            .and_then(|c| c.last)
        else {
            return;
        };
        let Some(channel) = self.channels.get(&(world, ch)) else {
            return;
        };
        let pending: Vec<BatchFrame> = channel
            .ring
            .iter()
            .filter(|b| b.last > last)
            .cloned()
            .collect();
        for b in pending {
            if !self.offer(now, session, &b) {
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const W: WorldId = WorldId(1);
    const CH: ChannelId = ChannelId::World;

    fn batch(first: u64, last: u64) -> BatchFrame {
        BatchFrame {
            world: W,
            channel: CH,
            first,
            last,
            class: EventClass::State,
            frame: Bytes::from(format!("{first}-{last}")),
        }
    }

    fn at(seq: u64) -> ChannelCursor {
        ChannelCursor { channel: CH, seq }
    }

    fn drain(h: &mut Hub) -> Vec<(u64, String)> {
        std::iter::from_fn(|| h.poll_delivery())
            .map(|d| (d.session.0, String::from_utf8(d.frame.to_vec()).unwrap()))
            .collect()
    }

    #[test]
    fn one_frame_fans_out_to_every_subscriber_without_copies() {
        let now = Instant::now();
        let mut h = Hub::new(HubConfig::default());
        for s in 1..=3 {
            h.handle_open(SessionId(s), W, &[]);
            h.handle_subscriptions(now, SessionId(s), &[at(0)], &[]);
        }
        let b = batch(1, 2);
        let ptr = b.frame.as_ptr();
        h.handle_batch(now, b);
        let out: Vec<FanoutDelivery> = std::iter::from_fn(|| h.poll_delivery()).collect();
        assert_eq!(out.len(), 3);
        assert!(out.iter().all(|d| d.frame.as_ptr() == ptr), "shared bytes");
        assert_eq!(h.subscribers(W, CH), 3);
        h.handle_close(SessionId(2));
        assert_eq!(h.subscribers(W, CH), 2);
    }

    #[test]
    fn replay_overtaken_by_live_batches_is_delivered_exactly_once_in_order() {
        let now = Instant::now();
        let mut h = Hub::new(HubConfig::default());
        let s = SessionId(9);
        // The client last saw seq 3; live traffic is at 6.. when it resumes here.
        h.handle_open(
            s,
            W,
            &[ChannelCursor {
                channel: CH,
                seq: 3,
            }],
        );
        h.handle_batch(now, batch(6, 7)); // before the subscription: ring only
                                          // The origin announces the resume from the client's own cursor.
        h.handle_subscriptions(now, s, &[at(3)], &[]);
        h.handle_batch(now, batch(8, 8)); // a hole (4..5 missing): held
        assert!(drain(&mut h).is_empty());
        // The replay covers 4..7 (overlapping the live 6..7).
        h.handle_replay(now, s, vec![batch(4, 5), batch(6, 7)]);
        let got: Vec<String> = drain(&mut h).into_iter().map(|x| x.1).collect();
        assert_eq!(got, ["4-5", "6-7", "8-8"]);
        h.handle_batch(now, batch(9, 9));
        h.handle_batch(now, batch(8, 8)); // duplicate
        assert_eq!(drain(&mut h), [(9, "9-9".to_string())]);
        assert_eq!(h.stats().duplicates, 1);
        assert_eq!(
            h.cursors(s),
            [ChannelCursor {
                channel: CH,
                seq: 9
            }]
        );
    }

    #[test]
    fn a_resume_announced_from_a_later_start_moves_a_stale_cursor() {
        let now = Instant::now();
        let mut h = Hub::new(HubConfig::default());
        let s = SessionId(4);
        // The client's cursor is from before it left and re-entered the channel.
        h.handle_open(
            s,
            W,
            &[ChannelCursor {
                channel: CH,
                seq: 3,
            }],
        );
        h.handle_batch(now, batch(8, 9)); // ring only
        h.handle_subscriptions(now, s, &[at(7)], &[]);
        h.handle_batch(now, batch(10, 10));
        let got: Vec<String> = drain(&mut h).into_iter().map(|x| x.1).collect();
        assert_eq!(got, ["8-9", "10-10"], "owed from 8 on, no hole at 4..7");
        assert_eq!(h.stats().held, 0);
    }

    #[test]
    fn an_unfilled_hole_resyncs_from_a_keyframe_after_the_timeout() {
        let t0 = Instant::now();
        let mut h = Hub::new(HubConfig::default());
        let s = SessionId(1);
        h.handle_open(
            s,
            W,
            &[ChannelCursor {
                channel: CH,
                seq: 1,
            }],
        );
        h.handle_subscriptions(t0, s, &[at(1)], &[]);
        h.handle_batch(t0, batch(5, 5));
        h.handle_keyframe(t0, W, CH, 5, Bytes::from_static(b"kf5"));
        assert!(drain(&mut h).is_empty(), "too early to give up on the hole");
        let t1 = t0 + Duration::from_secs(2);
        h.handle_batch(t1, batch(6, 6));
        h.handle_keyframe(t1, W, CH, 6, Bytes::from_static(b"kf6"));
        h.handle_batch(t1, batch(7, 7));
        let got: Vec<String> = drain(&mut h).into_iter().map(|x| x.1).collect();
        assert_eq!(got, ["kf6", "7-7"]);
        assert_eq!(h.stats().resyncs, 1);
    }

    #[test]
    fn new_sessions_start_at_the_origins_subscription_point() {
        let now = Instant::now();
        let mut h = Hub::new(HubConfig::default());
        let s = SessionId(1);
        h.handle_open(s, W, &[]);
        // Batches 1 and 2 arrive before the subscription, which starts after 1.
        h.handle_batch(now, batch(1, 1));
        h.handle_batch(now, batch(2, 2));
        h.handle_subscriptions(now, s, &[at(1)], &[]);
        assert_eq!(
            drain(&mut h),
            [(1, "2-2".to_string())],
            "filled from the ring"
        );
        h.handle_subscriptions(now, s, &[], &[CH]);
        h.handle_batch(now, batch(3, 3));
        assert!(drain(&mut h).is_empty(), "unsubscribed");
        assert!(h.cursors(s).is_empty());
    }

    #[test]
    fn the_ring_is_bounded() {
        let now = Instant::now();
        let mut h = Hub::new(HubConfig {
            ring: 4,
            ..HubConfig::default()
        });
        for i in 1..=100 {
            h.handle_batch(now, batch(i, i));
        }
        assert_eq!(h.channels[&(W, CH)].ring.len(), 4);
    }
}
