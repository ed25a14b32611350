//! Movement as latest-wins state (pure: no I/O, no clock): what one client
//! has of each entity's movement, and the datagrams that bring it up to date
//! (issue 24's relay core; the shell does not drive it yet).
//!
//! The relay keeps, per client, the latest movement state of every entity the
//! client sees ([`ClientMovement::handle_update`]: an older tick never
//! replaces a newer one) and what the client acknowledged. Each
//! [`ClientMovement::poll_datagram`] packs the entities whose latest state
//! the client does not have yet, **nearest to the client's own avatar first**,
//! into one datagram of at most `mtu` bytes, within a byte budget that refills
//! at `bytes_per_sec`. Entries carry an entity's *whole* current state, never
//! a difference, so a lost datagram is simply superseded: the next one carries
//! the newest state of whatever is still not acknowledged, and a client that
//! missed many updates gets the current state, not the queue of stale ones.
//! A datagram not acknowledged within `resend_after` counts as lost; what it
//! carried is eligible again (at its newest state).
//!
//! Bounds: at most [`MAX_ENTITIES`] entities per client (the farthest beyond
//! it are dropped: a client sees the nearest), [`MAX_IN_FLIGHT`] datagrams
//! awaiting acknowledgement (the oldest is declared lost to make room), and
//! [`MAX_STATE_BYTES`] per entity state (larger is refused: the origin must
//! refuse it first, with a typed error).

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use bytes::Bytes;
use skylane_proto::EntityId;

/// Most entities one client's movement view holds.
pub const MAX_ENTITIES: usize = 4096;
/// Most datagrams awaiting acknowledgement per client.
pub const MAX_IN_FLIGHT: usize = 64;
/// Largest movement state of one entity, bytes.
pub const MAX_STATE_BYTES: usize = 256;
/// Framing of one entry in a datagram (entity id, tick, origin time, length).
pub const ENTRY_OVERHEAD: usize = 8 + 8 + 8 + 2;
/// Framing of a datagram (sequence number, entry count).
pub const DATAGRAM_OVERHEAD: usize = 8 + 2;

/// One entity's movement state as the origin produced it.
#[derive(Debug, Clone, PartialEq)]
pub struct EntityState {
    /// The entity.
    pub entity: EntityId,
    /// The world tick it was true at.
    pub tick: u64,
    /// The origin's clock then, microseconds since the Unix epoch.
    pub origin_time_us: u64,
    /// Where it is (for nearest-first ordering).
    pub pos: (f32, f32),
    /// The game's encoding of its state (position, velocity...).
    pub body: Bytes,
}

impl EntityState {
    fn wire_len(&self) -> usize {
        ENTRY_OVERHEAD + self.body.len()
    }
}

/// A datagram's worth of movement for one client.
#[derive(Debug, Clone, PartialEq)]
pub struct MovementDatagram {
    /// Its sequence number (what the client acknowledges).
    pub seq: u64,
    /// The entities' latest states, nearest first.
    pub entries: Vec<EntityState>,
}

impl MovementDatagram {
    /// Its size on the wire.
    pub fn wire_len(&self) -> usize {
        DATAGRAM_OVERHEAD
            + self
                .entries
                .iter()
                .map(EntityState::wire_len)
                .sum::<usize>()
    }
}

/// Why an update was not taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum MovementError {
    /// The state is larger than [`MAX_STATE_BYTES`].
    #[error("movement state of {0} bytes is over {MAX_STATE_BYTES}")]
    TooLarge(usize),
}

/// Tuning.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MovementConfig {
    /// Largest datagram, bytes (the path MTU's payload).
    pub mtu: usize,
    /// Movement bytes per second this client may receive.
    pub bytes_per_sec: u64,
    /// Most bytes the budget may hold (a burst).
    pub burst_bytes: u64,
    /// An unacknowledged datagram counts as lost after this.
    pub resend_after: Duration,
}

impl Default for MovementConfig {
    fn default() -> Self {
        Self {
            mtu: 1200,
            bytes_per_sec: 64 * 1024,
            burst_bytes: 16 * 1024,
            resend_after: Duration::from_millis(250),
        }
    }
}

/// Counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MovementStats {
    /// Updates taken (newer than what was held).
    pub updates: u64,
    /// Updates ignored (older than what was held: latest wins).
    pub stale: u64,
    /// States superseded before the client had them (never sent, or sent
    /// and replaced by a newer one before acknowledgement).
    pub superseded: u64,
    /// Datagrams built.
    pub datagrams: u64,
    /// Datagrams declared lost (unacknowledged past `resend_after`).
    pub lost: u64,
    /// Entities dropped because the view was full (the farthest).
    pub dropped: u64,
}

#[derive(Debug)]
struct Sent {
    seq: u64,
    at: Instant,
    /// What it carried: entity and tick.
    carried: Vec<(EntityId, u64)>,
}

/// One client's movement view.
#[derive(Debug)]
pub struct ClientMovement {
    cfg: MovementConfig,
    viewer: (f32, f32),
    latest: HashMap<EntityId, EntityState>,
    /// Newest tick per entity the client acknowledged.
    acked: HashMap<EntityId, u64>,
    /// Newest tick per entity in a datagram not yet acknowledged.
    sending: HashMap<EntityId, u64>,
    in_flight: VecDeque<Sent>,
    next_seq: u64,
    budget: f64,
    refilled: Option<Instant>,
    stats: MovementStats,
}

fn dist2(a: (f32, f32), b: (f32, f32)) -> f32 {
    let (dx, dy) = (a.0 - b.0, a.1 - b.1);
    dx * dx + dy * dy
}

impl ClientMovement {
    /// An empty view.
    pub fn new(cfg: MovementConfig) -> Self {
        Self {
            cfg,
            viewer: (0.0, 0.0),
            latest: HashMap::new(),
            acked: HashMap::new(),
            sending: HashMap::new(),
            in_flight: VecDeque::new(),
            next_seq: 1,
            budget: cfg.burst_bytes as f64,
            refilled: None,
            stats: MovementStats::default(),
        }
    }

    /// Counters.
    pub fn stats(&self) -> MovementStats {
        self.stats
    }

    /// Entities held.
    pub fn len(&self) -> usize {
        self.latest.len()
    }

    /// Whether it holds nothing.
    pub fn is_empty(&self) -> bool {
        self.latest.is_empty()
    }

    /// Where the client's own avatar is (nearest first is measured from it).
    pub fn handle_viewer(&mut self, pos: (f32, f32)) {
        self.viewer = pos;
    }

    /// An entity's new state: taken if newer than what is held.
    pub fn handle_update(&mut self, s: EntityState) -> Result<(), MovementError> {
        if s.body.len() > MAX_STATE_BYTES {
            return Err(MovementError::TooLarge(s.body.len()));
        }
        if let Some(old) = self.latest.get(&s.entity) {
            if old.tick >= s.tick {
                self.stats.stale += 1;
                return Ok(());
            }
            if self.acked.get(&s.entity).is_none_or(|a| *a < old.tick) {
                self.stats.superseded += 1;
            }
        }
        self.stats.updates += 1;
        self.latest.insert(s.entity, s);
        if self.latest.len() > MAX_ENTITIES {
            self.drop_farthest();
        }
        Ok(())
    }

    fn drop_farthest(&mut self) {
        let viewer = self.viewer;
        if let Some(far) = self
            .latest
            .values()
            .max_by(|a, b| dist2(a.pos, viewer).total_cmp(&dist2(b.pos, viewer)))
            .map(|s| s.entity)
        {
            self.forget(far);
            self.stats.dropped += 1;
        }
    }

    fn forget(&mut self, e: EntityId) {
        self.latest.remove(&e);
        self.acked.remove(&e);
        self.sending.remove(&e);
    }

    /// An entity left the client's view (out of interest, or gone).
    pub fn handle_remove(&mut self, e: EntityId) {
        self.forget(e);
    }

    /// The client acknowledged datagram `seq`: what it carried is the
    /// client's.
    pub fn handle_ack(&mut self, seq: u64) {
        let Some(i) = self.in_flight.iter().position(|s| s.seq == seq) else {
            return;
        };
        let Some(sent) = self.in_flight.remove(i) else {
            return;
        };
        for (e, tick) in sent.carried {
            if !self.latest.contains_key(&e) {
                continue;
            }
            let a = self.acked.entry(e).or_insert(0);
            *a = (*a).max(tick);
            if self.sending.get(&e).is_some_and(|t| *t <= *a) {
                self.sending.remove(&e);
            }
        }
    }

    /// Declares datagrams unacknowledged past `resend_after` lost: what they
    /// carried may be sent again (at its newest state).
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(first) = self.in_flight.front() {
            if now.saturating_duration_since(first.at) < self.cfg.resend_after {
                break;
            }
            self.lose_oldest();
        }
    }

    fn lose_oldest(&mut self) {
        let Some(sent) = self.in_flight.pop_front() else {
            return;
        };
        self.stats.lost += 1;
        for (e, tick) in sent.carried {
            // Only if no later datagram carries it.
            if self.sending.get(&e) == Some(&tick) {
                self.sending.remove(&e);
            }
        }
    }

    /// When [`ClientMovement::handle_timeout`] has something to do.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.in_flight.front().map(|s| s.at + self.cfg.resend_after)
    }

    fn refill(&mut self, now: Instant) {
        if let Some(last) = self.refilled {
            let secs = now.saturating_duration_since(last).as_secs_f64();
            self.budget = (self.budget + secs * self.cfg.bytes_per_sec as f64)
                .min(self.cfg.burst_bytes as f64);
        }
        self.refilled = Some(now);
    }

    /// Whether an entity's latest state is one the client neither has nor
    /// has on its way.
    fn pending(&self, s: &EntityState) -> bool {
        self.acked.get(&s.entity).is_none_or(|a| *a < s.tick)
            && self.sending.get(&s.entity).is_none_or(|t| *t < s.tick)
    }

    /// The next datagram: the pending entities nearest first, up to `mtu`
    /// bytes and the budget (`None`: nothing pending, or no budget).
    pub fn poll_datagram(&mut self, now: Instant) -> Option<MovementDatagram> {
        self.refill(now);
        let room = (self.cfg.mtu as f64).min(self.budget);
        if room < (DATAGRAM_OVERHEAD + ENTRY_OVERHEAD) as f64 {
            return None;
        }
        let viewer = self.viewer;
        let mut pending: Vec<&EntityState> =
            self.latest.values().filter(|s| self.pending(s)).collect();
        if pending.is_empty() {
            return None;
        }
        pending.sort_by(|a, b| {
            dist2(a.pos, viewer)
                .total_cmp(&dist2(b.pos, viewer))
                .then(a.entity.0.cmp(&b.entity.0))
        });
        let mut size = DATAGRAM_OVERHEAD;
        let mut entries = Vec::new();
        for s in pending {
            let len = s.wire_len();
            if (size + len) as f64 > room {
                continue;
            }
            size += len;
            entries.push(s.clone());
        }
        if entries.is_empty() {
            return None;
        }
        if self.in_flight.len() >= MAX_IN_FLIGHT {
            self.lose_oldest();
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        for s in &entries {
            self.sending.insert(s.entity, s.tick);
        }
        self.in_flight.push_back(Sent {
            seq,
            at: now,
            carried: entries.iter().map(|s| (s.entity, s.tick)).collect(),
        });
        self.budget -= size as f64;
        self.stats.datagrams += 1;
        Some(MovementDatagram { seq, entries })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn st(e: u64, tick: u64, pos: (f32, f32)) -> EntityState {
        EntityState {
            entity: EntityId(e),
            tick,
            origin_time_us: tick * 50_000,
            pos,
            body: Bytes::from_static(&[0u8; 16]),
        }
    }

    #[test]
    fn the_nearest_go_first_and_a_datagram_fits_the_mtu() {
        let mut m = ClientMovement::new(MovementConfig {
            mtu: DATAGRAM_OVERHEAD + 3 * (ENTRY_OVERHEAD + 16),
            ..MovementConfig::default()
        });
        m.handle_viewer((0.0, 0.0));
        for e in 0..10u64 {
            m.handle_update(st(e, 1, (10.0 * (10 - e) as f32, 0.0)))
                .unwrap();
        }
        let t = Instant::now();
        let d = m.poll_datagram(t).unwrap();
        let ids: Vec<u64> = d.entries.iter().map(|s| s.entity.0).collect();
        assert_eq!(ids, [9, 8, 7], "nearest first");
        assert!(d.wire_len() <= DATAGRAM_OVERHEAD + 3 * (ENTRY_OVERHEAD + 16));
        let d2 = m.poll_datagram(t).unwrap();
        assert_eq!(
            d2.entries[0].entity.0, 6,
            "the next nearest, not the same again"
        );
    }

    #[test]
    fn a_lost_datagram_is_superseded_by_the_newest_state() {
        let mut m = ClientMovement::new(MovementConfig::default());
        let t0 = Instant::now();
        m.handle_update(st(1, 1, (1.0, 0.0))).unwrap();
        let d = m.poll_datagram(t0).unwrap();
        assert_eq!(d.entries[0].tick, 1);
        // Lost; meanwhile two newer states, the first never sent.
        m.handle_update(st(1, 2, (2.0, 0.0))).unwrap();
        m.handle_update(st(1, 3, (3.0, 0.0))).unwrap();
        let d = m.poll_datagram(t0).unwrap();
        assert_eq!(d.entries[0].tick, 3, "only the newest");
        // An older update arriving late changes nothing.
        m.handle_update(st(1, 2, (2.0, 0.0))).unwrap();
        assert_eq!(m.stats().stale, 1);
        m.handle_ack(d.seq);
        assert!(m.poll_datagram(t0).is_none(), "the client has the newest");
        // Unacknowledged past resend_after: sent again at the newest state.
        m.handle_update(st(1, 4, (4.0, 0.0))).unwrap();
        let d = m.poll_datagram(t0).unwrap();
        assert!(m.poll_datagram(t0).is_none(), "in flight: not twice");
        m.handle_timeout(t0 + Duration::from_millis(300));
        assert_eq!(m.stats().lost, 2, "the first datagram and this one");
        let again = m.poll_datagram(t0 + Duration::from_millis(300)).unwrap();
        assert_eq!((again.entries[0].tick, again.seq > d.seq), (4, true));
    }

    #[test]
    fn the_budget_limits_bytes_per_second() {
        let mut m = ClientMovement::new(MovementConfig {
            bytes_per_sec: 10_000,
            burst_bytes: 2_000,
            ..MovementConfig::default()
        });
        for e in 0..500u64 {
            m.handle_update(st(e, 1, (e as f32, 0.0))).unwrap();
        }
        let t0 = Instant::now();
        let mut sent = 0;
        let mut now = t0;
        for _ in 0..100 {
            while let Some(d) = m.poll_datagram(now) {
                sent += d.wire_len();
                m.handle_ack(d.seq);
            }
            now += Duration::from_millis(10);
        }
        // One second: the burst plus 10,000 bytes, at most.
        assert!(sent <= 2_000 + 10_000 + 1_200, "{sent}");
        assert!(sent >= 9_000, "{sent}");
    }

    #[test]
    fn bounds_hold_and_oversized_states_are_refused() {
        let mut m = ClientMovement::new(MovementConfig::default());
        let big = EntityState {
            body: Bytes::from(vec![0u8; MAX_STATE_BYTES + 1]),
            ..st(1, 1, (0.0, 0.0))
        };
        assert_eq!(
            m.handle_update(big),
            Err(MovementError::TooLarge(MAX_STATE_BYTES + 1))
        );
        for e in 0..(MAX_ENTITIES as u64 + 10) {
            m.handle_update(st(e, 1, (e as f32, 0.0))).unwrap();
        }
        assert_eq!(m.len(), MAX_ENTITIES);
        assert_eq!(m.stats().dropped, 10);
        assert!(
            !m.latest.contains_key(&EntityId(MAX_ENTITIES as u64 + 9)),
            "the farthest went"
        );
        let t = Instant::now();
        for _ in 0..(MAX_IN_FLIGHT + 5) {
            m.poll_datagram(t);
        }
        assert!(m.in_flight.len() <= MAX_IN_FLIGHT);
        m.handle_remove(EntityId(0));
        assert_eq!(m.len(), MAX_ENTITIES - 1);
    }
}
