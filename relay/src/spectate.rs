//! Spectators of one world: the delay buffer and the audience it serves (pure: no
//! I/O, no clock).
//!
//! The relay takes a world's public spectator feed once from the origin
//! ([`FeedFrame`]s, one per tick plus periodic keyframes) and serves every
//! spectator of that world from one [`Audience`]:
//!
//! * **One buffer, one cursor per delay.** Frames are kept once, in tick order, in
//!   a history as long as the longest delay served ([`AudienceConfig::max_delay`]);
//!   each distinct delay is a *lane*, a release cursor into that history. A frame
//!   is released on a lane when `origin_time + delay ≤ origin_now`, where
//!   `origin_now` is the relay's clock plus the origin's clock offset as the shell
//!   measures it (NTP-style link pings, lowest-RTT sample: exact on a symmetric
//!   path, off by at most half the RTT's asymmetry). Given an offset that does not
//!   overestimate, no frame is released early (property-tested). Memory is the longest delay × the feed's rate (plus one
//!   keyframe interval), whatever the number of delays and spectators, and never
//!   more than [`AudienceConfig::max_buffer_bytes`].
//! * **Groups share bytes.** Spectators with the same delay, filter and bandwidth
//!   mode form a group; each released frame is filtered, thinned and encoded once
//!   per group and the same bytes go to every member.
//! * **Late joiners** start from the lane's latest released keyframe and the
//!   frames released after it; a spectator joining before any keyframe was
//!   released waits for the first one.
//! * **Slow spectators skip.** The shell hands deliveries to a bounded queue per
//!   spectator; when it is full it calls [`Audience::handle_overflow`] and the
//!   spectator receives nothing but the next keyframe, after which it continues
//!   from there. A slow spectator costs its bounded queue, never a growing one.
//!
//! Bandwidth modes: [`BandwidthMode::Full`] (every event that passes the filter),
//! [`BandwidthMode::Reduced`] (at most `hz` frames per second of world time: the
//! latest movement and state event per entity, other events kept in order), and
//! [`BandwidthMode::KeyframesOnly`].

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rustc_hash::FxHashMap as HashMap;
use skylane_proto::{
    encode_frame_to_bytes, BandwidthMode, EntityId, EventClass, FeedEvent, FeedFrame, FeedProof,
    ServerMsg, SessionId, SpectatorFilter, SpectatorSubscribe, WorldId, DEFAULT_MAX_FRAME,
};

/// Bounds of an [`Audience`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AudienceConfig {
    /// Longest delay served. Default 120 s.
    pub max_delay: Duration,
    /// Most bytes of feed kept for a world; past it the oldest frames go and the
    /// lanes that had not released them skip to the next keyframe. Default 64 MiB.
    pub max_buffer_bytes: usize,
    /// Most teams plus entities one filter may list. Default 256.
    pub max_filter_items: usize,
    /// Highest rate of the reduced mode. Default 60 Hz.
    pub max_reduced_hz: u16,
    /// The shortest delay a spectator whose token names no tier may watch
    /// with (a token's `min_delay_secs` overrides it). Default 0.
    pub default_min_delay: Duration,
    /// Events without an entity a reduced-rate group holds between two frames;
    /// past it the oldest are dropped. Default 1,024.
    pub max_reduced_pending: usize,
}

impl Default for AudienceConfig {
    fn default() -> Self {
        Self {
            max_delay: Duration::from_secs(120),
            max_buffer_bytes: 64 << 20,
            max_filter_items: 256,
            max_reduced_hz: 60,
            default_min_delay: Duration::ZERO,
            max_reduced_pending: 1024,
        }
    }
}

/// Why a spectator subscription was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpectateError {
    /// The delay is longer than the relay buffers.
    #[error("delay {requested_ms} ms is longer than this relay serves ({max_ms} ms)")]
    DelayTooLong {
        /// Asked for.
        requested_ms: u32,
        /// Served at most.
        max_ms: u64,
    },
    /// The filter lists too many teams and entities.
    #[error("filter lists {found} teams and entities (at most {max})")]
    FilterTooLarge {
        /// Listed.
        found: usize,
        /// Allowed.
        max: usize,
    },
    /// A reduced rate of zero or above the maximum.
    #[error("reduced rate {requested} Hz is outside 1..={max} Hz")]
    BadRate {
        /// Asked for.
        requested: u16,
        /// Allowed at most.
        max: u16,
    },
    /// The subscription names another world than the spectator's session.
    #[error("this audience is {expected}, not {found}")]
    WrongWorld {
        /// The audience's world.
        expected: WorldId,
        /// Asked for.
        found: WorldId,
    },
}

impl SpectateError {
    /// A short label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Self::DelayTooLong { .. } => "delay_too_long",
            Self::FilterTooLarge { .. } => "filter_too_large",
            Self::BadRate { .. } => "bad_rate",
            Self::WrongWorld { .. } => "wrong_world",
        }
    }
}

/// One frame for one spectator.
#[derive(Debug, Clone, PartialEq)]
pub struct SpectatorDelivery {
    /// The spectator.
    pub spectator: SessionId,
    /// An encoded [`ServerMsg::Spectate`] frame (shared by the spectator's group).
    pub frame: Bytes,
    /// Whether it is a keyframe.
    pub keyframe: bool,
}

/// Counters since the audience was created.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AudienceStats {
    /// Feed frames received.
    pub frames_in: u64,
    /// Frames released on a lane (once per lane).
    pub released: u64,
    /// Deliveries produced (once per spectator).
    pub delivered: u64,
    /// Frames encoded (once per group).
    pub encoded: u64,
    /// Frames a slow (or new) spectator skipped while waiting for a keyframe.
    pub skipped: u64,
    /// Times a spectator's queue was full.
    pub overflows: u64,
    /// Frames that arrived after a later frame was released (not released there).
    pub late: u64,
    /// Frames dropped from the history because the byte bound was reached.
    pub evicted_over_bound: u64,
}

/// A release cursor into the history for one delay.
#[derive(Debug)]
struct Lane {
    delay_us: u64,
    /// Absolute index of the next frame to release.
    next: u64,
    /// Absolute index of the latest released keyframe still in the history.
    key: Option<u64>,
    groups: Vec<GroupKey>,
}

type GroupKey = Vec<u8>;

#[derive(Debug)]
struct Group {
    delay_ms: u32,
    filter: SpectatorFilter,
    mode: BandwidthMode,
    members: Vec<SessionId>,
    reduced: Reduced,
}

/// A reduced-rate group's events since its last frame.
#[derive(Debug, Default)]
struct Reduced {
    next_emit_us: u64,
    latest: BTreeMap<EntityId, FeedEvent>,
    others: VecDeque<FeedEvent>,
}

impl Reduced {
    /// Everything held since the last frame, as one delta frame at `f`'s tick
    /// (`None` when nothing is held). Unsigned: its events come from several
    /// origin frames, and proving each would cost more than the thinning saves
    /// (every constituent frame's signature and the hashes of the events left
    /// out); the mode's keyframes stay signed.
    fn flush(&mut self, f: &FeedFrame) -> Option<FeedFrame> {
        if self.latest.is_empty() && self.others.is_empty() {
            return None;
        }
        let mut events: Vec<FeedEvent> = self.others.drain(..).collect();
        events.extend(std::mem::take(&mut self.latest).into_values());
        Some(FeedFrame {
            keyframe: false,
            proofs: Vec::new(),
            ..shaped(f, events)
        })
    }
}

#[derive(Debug)]
struct Member {
    group: GroupKey,
    /// Receives nothing until the next keyframe (new, or fell behind).
    skipping: bool,
}

/// The spectators of one world on one relay and the feed they are served from.
#[derive(Debug)]
pub struct Audience {
    cfg: AudienceConfig,
    world: WorldId,
    history: VecDeque<Arc<FeedFrame>>,
    /// Absolute index of `history[0]`.
    base: u64,
    bytes: usize,
    lanes: BTreeMap<u32, Lane>,
    groups: HashMap<GroupKey, Group>,
    members: HashMap<SessionId, Member>,
    offset_us: Option<i64>,
    out: VecDeque<SpectatorDelivery>,
    stats: AudienceStats,
}

fn frame_bytes(f: &FeedFrame) -> usize {
    64 + f.events.iter().map(|e| e.payload.len() + 32).sum::<usize>()
}

fn order(f: &FeedFrame) -> (u64, bool) {
    (f.tick, f.keyframe)
}

fn encode(frame: FeedFrame) -> Bytes {
    encode_frame_to_bytes(&ServerMsg::Spectate(frame), DEFAULT_MAX_FRAME).unwrap_or_default()
}

impl Audience {
    /// An empty audience for `world`.
    pub fn new(world: WorldId, cfg: AudienceConfig) -> Self {
        Self {
            cfg,
            world,
            history: VecDeque::new(),
            base: 0,
            bytes: 0,
            lanes: BTreeMap::new(),
            groups: HashMap::default(),
            members: HashMap::default(),
            offset_us: None,
            out: VecDeque::new(),
            stats: AudienceStats::default(),
        }
    }

    /// Spectators held.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Whether no spectator is held.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// Bytes of feed buffered.
    pub fn buffered_bytes(&self) -> usize {
        self.bytes
    }

    /// Frames buffered.
    pub fn buffered_frames(&self) -> usize {
        self.history.len()
    }

    /// Distinct delays served.
    pub fn delays(&self) -> Vec<u32> {
        self.lanes.keys().copied().collect()
    }

    /// Counters.
    pub fn stats(&self) -> &AudienceStats {
        &self.stats
    }

    fn origin_now(&self, now_us: u64) -> Option<u64> {
        self.offset_us.map(|o| now_us.saturating_add_signed(o))
    }

    /// The origin's clock minus the relay's (microseconds), as the shell measures
    /// it from link pings. An estimate above the true offset releases early by
    /// the excess; below it, late. Releases wait until an offset is known.
    pub fn handle_clock(&mut self, now_us: u64, offset_us: i64) {
        self.offset_us = Some(offset_us);
        self.release(now_us);
    }

    /// A feed frame from the origin.
    pub fn handle_frame(&mut self, now_us: u64, frame: Arc<FeedFrame>) {
        self.stats.frames_in += 1;
        let key = order(&frame);
        // Sorted insert; almost always at the end.
        let pos = self.history.partition_point(|f| order(f) <= key);
        if pos > 0 && order(&self.history[pos - 1]) == key {
            return; // duplicate
        }
        let abs = self.base + pos as u64;
        self.bytes += frame_bytes(&frame);
        self.history.insert(pos, frame);
        for lane in self.lanes.values_mut() {
            if abs < lane.next {
                // A later frame was already released here: this one is skipped.
                lane.next += 1;
                self.stats.late += 1;
            }
            if let Some(k) = lane.key.as_mut() {
                if abs <= *k {
                    *k += 1;
                }
            }
        }
        self.release(now_us);
    }

    /// Adds a spectator, or changes its filter, delay or mode. A delay below
    /// `min_delay_ms` (the spectator's tier) is raised to it; the delay
    /// served is returned.
    pub fn handle_subscribe(
        &mut self,
        now_us: u64,
        spectator: SessionId,
        sub: &SpectatorSubscribe,
        min_delay_ms: u32,
    ) -> Result<u32, SpectateError> {
        let raised;
        let sub = if sub.delay_ms < min_delay_ms {
            raised = SpectatorSubscribe {
                delay_ms: min_delay_ms,
                ..sub.clone()
            };
            &raised
        } else {
            sub
        };
        if sub.world != self.world {
            return Err(SpectateError::WrongWorld {
                expected: self.world,
                found: sub.world,
            });
        }
        let max_ms = self.cfg.max_delay.as_millis() as u64;
        if u64::from(sub.delay_ms) > max_ms {
            return Err(SpectateError::DelayTooLong {
                requested_ms: sub.delay_ms,
                max_ms,
            });
        }
        let items = sub.filter.teams.len() + sub.filter.entities.len();
        if items > self.cfg.max_filter_items {
            return Err(SpectateError::FilterTooLarge {
                found: items,
                max: self.cfg.max_filter_items,
            });
        }
        if let BandwidthMode::Reduced { hz } = sub.mode {
            if hz == 0 || hz > self.cfg.max_reduced_hz {
                return Err(SpectateError::BadRate {
                    requested: hz,
                    max: self.cfg.max_reduced_hz,
                });
            }
        }
        self.handle_leave(spectator);
        let key: GroupKey =
            postcard::to_stdvec(&(sub.delay_ms, &sub.filter, sub.mode)).unwrap_or_default();
        if !self.lanes.contains_key(&sub.delay_ms) {
            let lane = self.new_lane(now_us, sub.delay_ms);
            self.lanes.insert(sub.delay_ms, lane);
        }
        if let Some(lane) = self.lanes.get_mut(&sub.delay_ms) {
            if !lane.groups.contains(&key) {
                lane.groups.push(key.clone());
            }
        }
        let group = self.groups.entry(key.clone()).or_insert_with(|| Group {
            delay_ms: sub.delay_ms,
            filter: sub.filter.clone(),
            mode: sub.mode,
            members: Vec::new(),
            reduced: Reduced::default(),
        });
        group.members.push(spectator);
        // Catch up from the lane's latest released keyframe.
        let catchup: Vec<Arc<FeedFrame>> = match self.lanes.get(&sub.delay_ms) {
            Some(Lane {
                key: Some(k), next, ..
            }) => (*k..*next)
                .filter_map(|i| self.history.get((i - self.base) as usize).cloned())
                .collect(),
            _ => Vec::new(),
        };
        let skipping = catchup.is_empty();
        if !skipping {
            let group = &self.groups[&key];
            for f in catchup_frames(group, &catchup) {
                self.stats.encoded += 1;
                self.stats.delivered += 1;
                self.out.push_back(SpectatorDelivery {
                    spectator,
                    keyframe: f.keyframe,
                    frame: encode(f),
                });
            }
        }
        self.members.insert(
            spectator,
            Member {
                group: key,
                skipping,
            },
        );
        self.release(now_us);
        Ok(sub.delay_ms)
    }

    /// A lane for `delay_ms` whose cursor starts at the first frame not yet due.
    fn new_lane(&self, now_us: u64, delay_ms: u32) -> Lane {
        let delay_us = u64::from(delay_ms) * 1000;
        let next_rel = match self.origin_now(now_us) {
            Some(o) => self
                .history
                .partition_point(|f| f.origin_time_us.saturating_add(delay_us) <= o),
            None => 0,
        };
        let key_rel = self.history.range(..next_rel).rposition(|f| f.keyframe);
        Lane {
            delay_us,
            next: self.base + next_rel as u64,
            key: key_rel.map(|k| self.base + k as u64),
            groups: Vec::new(),
        }
    }

    /// Removes a spectator (gone, or changing its subscription).
    pub fn handle_leave(&mut self, spectator: SessionId) {
        let Some(m) = self.members.remove(&spectator) else {
            return;
        };
        let Some(g) = self.groups.get_mut(&m.group) else {
            return;
        };
        g.members.retain(|s| *s != spectator);
        if !g.members.is_empty() {
            return;
        }
        let delay = g.delay_ms;
        self.groups.remove(&m.group);
        if let Some(lane) = self.lanes.get_mut(&delay) {
            lane.groups.retain(|k| *k != m.group);
            if lane.groups.is_empty() {
                self.lanes.remove(&delay);
            }
        }
    }

    /// The spectator's queue was full: it gets nothing until the next keyframe.
    pub fn handle_overflow(&mut self, spectator: SessionId) {
        if let Some(m) = self.members.get_mut(&spectator) {
            self.stats.overflows += 1;
            m.skipping = true;
        }
    }

    /// Releases what is due at `now_us` (relay clock, microseconds).
    pub fn handle_timeout(&mut self, now_us: u64) {
        self.release(now_us);
    }

    /// When the next frame is due (relay clock, microseconds).
    pub fn poll_timeout(&self) -> Option<u64> {
        let offset = self.offset_us?;
        self.lanes
            .values()
            .filter_map(|l| {
                let f = self.history.get((l.next - self.base) as usize)?;
                Some(
                    f.origin_time_us
                        .saturating_add(l.delay_us)
                        .saturating_add_signed(-offset),
                )
            })
            .min()
    }

    /// The next delivery.
    pub fn poll_delivery(&mut self) -> Option<SpectatorDelivery> {
        self.out.pop_front()
    }

    fn release(&mut self, now_us: u64) {
        let Some(origin_now) = self.origin_now(now_us) else {
            return;
        };
        let delays: Vec<u32> = self.lanes.keys().copied().collect();
        for delay in delays {
            while let Some(lane) = self.lanes.get_mut(&delay) {
                let rel = (lane.next - self.base) as usize;
                let Some(f) = self.history.get(rel).cloned() else {
                    break;
                };
                if f.origin_time_us.saturating_add(lane.delay_us) > origin_now {
                    break;
                }
                lane.next += 1;
                if f.keyframe {
                    lane.key = Some(lane.next - 1);
                }
                let groups = lane.groups.clone();
                self.stats.released += 1;
                for g in groups {
                    self.serve(&g, &f);
                }
            }
        }
        self.evict(origin_now);
    }

    /// Hands one released frame to one group.
    fn serve(&mut self, key: &GroupKey, f: &FeedFrame) {
        let Some(group) = self.groups.get_mut(key) else {
            return;
        };
        let max_pending = self.cfg.max_reduced_pending;
        let Some(out) = thin(group, f, max_pending) else {
            return;
        };
        let keyframe = out.keyframe;
        let bytes = encode(out);
        self.stats.encoded += 1;
        for s in &group.members {
            let Some(m) = self.members.get_mut(s) else {
                continue;
            };
            if m.skipping && !keyframe {
                self.stats.skipped += 1;
                continue;
            }
            m.skipping = false;
            self.stats.delivered += 1;
            self.out.push_back(SpectatorDelivery {
                spectator: *s,
                frame: bytes.clone(),
                keyframe,
            });
        }
    }

    fn evict(&mut self, origin_now: u64) {
        // Everything before the latest keyframe older than the longest delay has
        // been released on every lane and is no longer anyone's starting point.
        let cut = origin_now.saturating_sub(self.cfg.max_delay.as_micros() as u64);
        let old = self.history.partition_point(|f| f.origin_time_us <= cut);
        if let Some(k) = self.history.range(..old).rposition(|f| f.keyframe) {
            self.drop_front(k);
        }
        while self.bytes > self.cfg.max_buffer_bytes && self.history.len() > 1 {
            self.stats.evicted_over_bound += 1;
            self.drop_front(1);
            let base = self.base;
            let mut skip = Vec::new();
            for lane in self.lanes.values_mut() {
                if lane.next < base {
                    lane.next = base;
                    skip.extend(lane.groups.iter().cloned());
                }
            }
            for g in skip {
                let members = self.groups.get(&g).map(|g| g.members.clone());
                for s in members.unwrap_or_default() {
                    if let Some(m) = self.members.get_mut(&s) {
                        m.skipping = true;
                    }
                }
            }
        }
        let base = self.base;
        for lane in self.lanes.values_mut() {
            if lane.key.is_some_and(|k| k < base) {
                lane.key = None;
            }
        }
    }

    fn drop_front(&mut self, n: usize) {
        for _ in 0..n {
            if let Some(f) = self.history.pop_front() {
                self.bytes = self.bytes.saturating_sub(frame_bytes(&f));
                self.base += 1;
            }
        }
    }
}

fn filtered(filter: &SpectatorFilter, f: &FeedFrame) -> Vec<FeedEvent> {
    f.events
        .iter()
        .filter(|e| filter.admits(e))
        .cloned()
        .collect()
}

/// A frame derived from `f` holding `events` (a subset of `f`'s, in order),
/// with `f`'s proofs: their hash lists left out when nothing was filtered
/// out (the receiver recomputes them).
fn shaped(f: &FeedFrame, events: Vec<FeedEvent>) -> FeedFrame {
    let whole = events.len() == f.events.len();
    let proofs = f
        .proofs
        .iter()
        .map(|p| FeedProof {
            hashes: if whole { Vec::new() } else { p.hashes.clone() },
            ..p.clone()
        })
        .collect();
    FeedFrame {
        world: f.world,
        tick: f.tick,
        origin_time_us: f.origin_time_us,
        keyframe: f.keyframe,
        events,
        proofs,
    }
}

/// What a group sends for a released frame, if anything.
fn thin(group: &mut Group, f: &FeedFrame, max_pending: usize) -> Option<FeedFrame> {
    let events = filtered(&group.filter, f);
    match group.mode {
        BandwidthMode::Full => (f.keyframe || !events.is_empty()).then(|| shaped(f, events)),
        BandwidthMode::KeyframesOnly => f.keyframe.then(|| shaped(f, events)),
        BandwidthMode::Reduced { hz } => {
            let period = 1_000_000 / u64::from(hz.max(1));
            let r = &mut group.reduced;
            if f.keyframe {
                r.latest.clear();
                r.others.clear();
                r.next_emit_us = f.origin_time_us + period;
                return Some(shaped(f, events));
            }
            for e in events {
                match (e.class, e.entity) {
                    (EventClass::Movement | EventClass::State, Some(id)) => {
                        r.latest.insert(id, e);
                    }
                    _ => {
                        if r.others.len() >= max_pending {
                            r.others.pop_front();
                        }
                        r.others.push_back(e);
                    }
                }
            }
            if f.origin_time_us < r.next_emit_us {
                return None;
            }
            let out = r.flush(f)?;
            r.next_emit_us = f.origin_time_us + period;
            Some(out)
        }
    }
}

/// A late joiner's start: the keyframe, then the frames after it as its mode
/// shapes them (reduced: one coalesced frame; keyframes only: the keyframe).
fn catchup_frames(group: &Group, frames: &[Arc<FeedFrame>]) -> Vec<FeedFrame> {
    let mut shadow = Group {
        delay_ms: group.delay_ms,
        filter: group.filter.clone(),
        mode: group.mode,
        members: Vec::new(),
        reduced: Reduced::default(),
    };
    let mut out = Vec::new();
    for f in frames {
        if let Some(x) = thin(&mut shadow, f, usize::MAX) {
            out.push(x);
        }
    }
    if let (BandwidthMode::Reduced { .. }, Some(last)) = (group.mode, frames.last()) {
        // Whatever is still pending goes out now, as one frame.
        out.extend(shadow.reduced.flush(last));
    }
    out
}

#[cfg(test)]
mod tests;
