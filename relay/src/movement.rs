//! Movement as latest-wins state (pure: no I/O, no clock): what one client
//! has of each entity's movement, and the datagrams that bring it up to date.
//!
//! The relay keeps, per client, the latest movement state of every entity the
//! client sees ([`ClientMovement::handle_update`]: an older tick never
//! replaces a newer one) and what the client acknowledged. Each
//! [`ClientMovement::poll_datagram`] packs the entities whose latest state
//! the client does not have yet, **nearest to the client's viewpoint first**
//! (the client says where it looks from in its acknowledgements), into one
//! datagram of at most `mtu` bytes, within a byte budget that refills at
//! `bytes_per_sec`. Entries carry an entity's *whole* current state, never a
//! difference, so a lost datagram is simply superseded: the next one carries
//! the newest state of whatever is still not acknowledged, and a client that
//! missed many updates gets the current state, not the queue of stale ones. A
//! datagram not acknowledged within `resend_after` counts as lost; what it
//! carried is eligible again (at its newest state). On a lossy path (the
//! shell measures the loss) the newest datagram is repeated `repeat_after`
//! after it went (twice above 10% loss), unless acknowledged or superseded,
//! so a lost one rarely costs a tick.
//!
//! Each state keeps the proof of the origin frame it came from
//! ([`FrameProof`]); a datagram groups its entries by frame and carries, per
//! group, the frame's signature and the hashes of the frame's entries it does
//! not carry, so the client can check every state against the origin's key
//! (`skylane_proto::movement`). The size accounting includes that overhead.
//!
//! Bounds: at most [`MAX_ENTITIES`] entities per client (the farthest beyond
//! it are dropped: a client sees the nearest), [`MAX_IN_FLIGHT`] datagrams
//! awaiting acknowledgement (the oldest is declared lost to make room), and
//! [`MAX_MOVE_STATE`] per entity state (larger is refused: the origin refuses
//! it first, with a typed error).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use skylane_proto::movement::{entry_hash, EntryHash};
use skylane_proto::{
    ChannelId, EntityId, MoveEntry, MoveGroup, MovementDatagram, MovementFrame, Payload, WorldId,
    MAX_MOVE_STATE,
};

/// Most entities one client's movement view holds.
pub const MAX_ENTITIES: usize = 4096;
/// Most datagrams awaiting acknowledgement per client.
pub const MAX_IN_FLIGHT: usize = 64;
/// Framing of one entry in a datagram, at most (entity, position, length).
pub const ENTRY_OVERHEAD: usize = 10 + 8 + 3;
/// Framing of one group without its signature, at most (channel, tick, time,
/// counts, the signature's length).
pub const GROUP_FRAMING: usize = 11 + 10 + 10 + 3 + 3 + 1;
/// Framing of one signed group, at most.
pub const GROUP_OVERHEAD: usize = GROUP_FRAMING + 64;
/// Bytes of one other entry's hash in a group.
pub const OTHER_HASH: usize = 16;
/// Framing of a datagram, at most (version, tag, world, sequence, group count).
pub const DATAGRAM_OVERHEAD: usize = 1 + 1 + 10 + 10 + 3;

/// What a client needs to check the states of one origin frame: the frame's
/// identity, the hash of each of its entries and the origin's signature.
#[derive(Debug, PartialEq)]
pub struct FrameProof {
    /// World.
    pub world: WorldId,
    /// The cell's channel.
    pub channel: ChannelId,
    /// The frame's tick.
    pub tick: u64,
    /// The frame's origin time, microseconds since the Unix epoch.
    pub origin_time_us: u64,
    /// Each entry's entity and hash, in the frame's order.
    pub hashes: Vec<(EntityId, EntryHash)>,
    /// The origin's signature (empty: unsigned, and no hashes are sent).
    pub sig: Payload,
}

/// One entity's movement state as the origin produced it, with its frame's
/// proof.
#[derive(Debug, Clone, PartialEq)]
pub struct EntityState {
    /// The state.
    pub entry: MoveEntry,
    /// The frame it came from.
    pub frame: Arc<FrameProof>,
}

impl EntityState {
    /// Every state in an origin frame, sharing one proof.
    pub fn from_frame(f: &MovementFrame) -> Vec<Self> {
        let frame = Arc::new(FrameProof {
            world: f.world,
            channel: f.channel,
            tick: f.tick,
            origin_time_us: f.origin_time_us,
            hashes: if f.sig.is_empty() {
                Vec::new()
            } else {
                f.entries
                    .iter()
                    .map(|e| (e.entity, entry_hash(e)))
                    .collect()
            },
            sig: f.sig.clone(),
        });
        f.entries
            .iter()
            .map(|e| Self {
                entry: e.clone(),
                frame: frame.clone(),
            })
            .collect()
    }

    /// The entity.
    pub fn entity(&self) -> EntityId {
        self.entry.entity
    }

    /// The tick it was true at.
    pub fn tick(&self) -> u64 {
        self.frame.tick
    }

    fn wire_len(&self) -> usize {
        ENTRY_OVERHEAD + self.entry.payload.len()
    }
}

/// Why an update was not taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum MovementError {
    /// The state is larger than [`MAX_MOVE_STATE`].
    #[error("movement state of {0} bytes is over {MAX_MOVE_STATE}")]
    TooLarge(usize),
}

/// Tuning.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MovementConfig {
    /// Largest datagram, bytes (at most `skylane_proto::MAX_DATAGRAM`).
    pub mtu: usize,
    /// Movement bytes per second this client may receive.
    pub bytes_per_sec: u64,
    /// Most bytes the budget may hold (a burst).
    pub burst_bytes: u64,
    /// An unacknowledged datagram counts as lost after this.
    pub resend_after: Duration,
    /// On a lossy path, the newest datagram is sent again this long after it
    /// went (and, on a very lossy one, again as long after that), unless a
    /// newer one went since or it was acknowledged: a lost datagram's states
    /// then arrive before the next tick's instead of after.
    pub repeat_after: Duration,
    /// The path's packet loss (0..=1) above which datagrams are repeated once.
    pub repeat_above_loss: f64,
    /// ... and above which they are repeated twice.
    pub repeat_twice_above_loss: f64,
}

impl Default for MovementConfig {
    fn default() -> Self {
        Self {
            mtu: skylane_proto::MAX_DATAGRAM,
            bytes_per_sec: 64 * 1024,
            burst_bytes: 16 * 1024,
            resend_after: Duration::from_millis(250),
            repeat_after: Duration::from_millis(15),
            repeat_above_loss: 0.02,
            repeat_twice_above_loss: 0.10,
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
    /// Entries sent (in all datagrams).
    pub sent: u64,
    /// Datagrams declared lost (unacknowledged past `resend_after`).
    pub lost: u64,
    /// Datagrams sent a second time because the path is lossy.
    pub repeated: u64,
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
    /// The path's recent packet loss, as the shell measures it.
    path_loss: f64,
    /// The newest datagram: its number, when it went, how often it was
    /// repeated, its size as budgeted.
    last: Option<(u64, Instant, u32, usize)>,
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
            path_loss: 0.0,
            last: None,
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

    /// Where the client looks from (nearest first is measured from it).
    pub fn handle_viewer(&mut self, pos: (f32, f32)) {
        if pos.0.is_finite() && pos.1.is_finite() {
            self.viewer = pos;
        }
    }

    /// An entity's new state: taken if newer than what is held.
    pub fn handle_update(&mut self, s: EntityState) -> Result<(), MovementError> {
        if s.entry.payload.len() > MAX_MOVE_STATE {
            return Err(MovementError::TooLarge(s.entry.payload.len()));
        }
        let e = s.entity();
        if let Some(old) = self.latest.get(&e) {
            if old.tick() >= s.tick() {
                self.stats.stale += 1;
                return Ok(());
            }
            if self.acked.get(&e).is_none_or(|a| *a < old.tick()) {
                self.stats.superseded += 1;
            }
        }
        self.stats.updates += 1;
        self.latest.insert(e, s);
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
            .max_by(|a, b| dist2(a.entry.pos, viewer).total_cmp(&dist2(b.entry.pos, viewer)))
            .map(EntityState::entity)
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

    /// The client no longer sees `channel`: its entities leave the view.
    pub fn handle_unsubscribed(&mut self, channel: ChannelId) {
        let gone: Vec<EntityId> = self
            .latest
            .values()
            .filter(|s| s.frame.channel == channel)
            .map(EntityState::entity)
            .collect();
        for e in gone {
            self.forget(e);
        }
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

    /// The path's recent packet loss (0..=1, from the transport's counters):
    /// above `repeat_above_loss`, datagrams are repeated.
    pub fn handle_path_loss(&mut self, loss: f64) {
        if loss.is_finite() {
            self.path_loss = loss.clamp(0.0, 1.0);
        }
    }

    fn repeats(&self) -> u32 {
        if self.path_loss > self.cfg.repeat_twice_above_loss {
            2
        } else if self.path_loss > self.cfg.repeat_above_loss {
            1
        } else {
            0
        }
    }

    fn repeat_due(&self) -> Option<Instant> {
        match self.last {
            Some((_, at, done, _)) if done < self.repeats() => {
                Some(at + self.cfg.repeat_after * (done + 1))
            }
            _ => None,
        }
    }

    /// The datagram to send once more now (by number; the shell kept its bytes):
    /// on a lossy path, the newest one, once, `repeat_after` after it went,
    /// unless acknowledged already or a newer one went since. Costs budget.
    pub fn poll_repeat(&mut self, now: Instant) -> Option<u64> {
        let due = self.repeat_due()?;
        let (seq, at, done, size) = self.last?;
        if now < due {
            return None;
        }
        self.last = Some((seq, at, done + 1, size));
        self.refill(now);
        if !self.in_flight.iter().any(|s| s.seq == seq) || self.budget < size as f64 {
            return None;
        }
        self.budget -= size as f64;
        self.stats.repeated += 1;
        Some(seq)
    }

    /// When [`ClientMovement::handle_timeout`] has something to do, a repeat is
    /// due, or (with something pending but no budget) when the budget allows a
    /// datagram again.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let resend = self.in_flight.front().map(|s| s.at + self.cfg.resend_after);
        let resend = match (resend, self.repeat_due()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let refill = match self.refilled {
            Some(at) if self.budget < self.cfg.mtu as f64 && self.has_pending() => {
                let need = (self.cfg.mtu as f64 - self.budget).max(0.0);
                let secs = need / self.cfg.bytes_per_sec.max(1) as f64;
                Some(at + Duration::from_secs_f64(secs.min(1.0)))
            }
            _ => None,
        };
        match (resend, refill) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
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
        let (e, t) = (s.entity(), s.tick());
        self.acked.get(&e).is_none_or(|a| *a < t) && self.sending.get(&e).is_none_or(|x| *x < t)
    }

    fn has_pending(&self) -> bool {
        self.latest.values().any(|s| self.pending(s))
    }

    /// The next datagram: the pending entities nearest first, grouped by origin
    /// frame with their proofs, up to `mtu` bytes and the budget (`None`:
    /// nothing pending, or no budget).
    pub fn poll_datagram(&mut self, now: Instant) -> Option<MovementDatagram> {
        self.refill(now);
        let room = (self.cfg.mtu as f64).min(self.budget);
        if room < (DATAGRAM_OVERHEAD + GROUP_FRAMING + ENTRY_OVERHEAD) as f64 {
            return None;
        }
        let viewer = self.viewer;
        let mut pending: Vec<&EntityState> =
            self.latest.values().filter(|s| self.pending(s)).collect();
        if pending.is_empty() {
            return None;
        }
        pending.sort_by(|a, b| {
            dist2(a.entry.pos, viewer)
                .total_cmp(&dist2(b.entry.pos, viewer))
                .then(a.entity().0.cmp(&b.entity().0))
        });
        // Frame by frame, the frame with the nearest entity first and each
        // frame's entities nearest first: a datagram then splits at most a
        // frame or two, so it carries few hashes of left-out entries (nearest
        // first entity by entity would interleave a cell's frames and send
        // most of their hashes with every datagram).
        let mut frames: Vec<Vec<&EntityState>> = Vec::new();
        for s in pending {
            match frames
                .iter_mut()
                .find(|f| Arc::ptr_eq(&f[0].frame, &s.frame))
            {
                Some(f) => f.push(s),
                None => frames.push(vec![s]),
            }
        }
        let pending = frames.into_iter().flatten();
        let mut size = DATAGRAM_OVERHEAD;
        // Groups by frame (pointer identity), in order of their first entry.
        let mut groups: Vec<(Arc<FrameProof>, Vec<&EntityState>)> = Vec::new();
        for s in pending {
            let len = s.wire_len();
            let at = groups.iter().position(|(f, _)| Arc::ptr_eq(f, &s.frame));
            let grow = match at {
                // One of the frame's hashes is replaced by the entry itself.
                Some(_) if !s.frame.sig.is_empty() => len - OTHER_HASH.min(len),
                Some(_) => len,
                None => {
                    GROUP_FRAMING
                        + s.frame.sig.len()
                        + len
                        + OTHER_HASH * s.frame.hashes.len().saturating_sub(1)
                }
            };
            if (size + grow) as f64 > room {
                continue;
            }
            size += grow;
            match at {
                Some(i) => groups[i].1.push(s),
                None => groups.push((s.frame.clone(), vec![s])),
            }
        }
        if groups.is_empty() {
            return None;
        }
        let world = groups[0].0.world;
        let mut carried = Vec::new();
        let wire: Vec<MoveGroup> = groups
            .into_iter()
            .map(|(frame, states)| {
                for s in &states {
                    carried.push((s.entity(), s.tick()));
                }
                let others = frame
                    .hashes
                    .iter()
                    .filter(|(e, _)| !states.iter().any(|s| s.entity() == *e))
                    .map(|(_, h)| *h)
                    .collect();
                MoveGroup {
                    channel: frame.channel,
                    tick: frame.tick,
                    origin_time_us: frame.origin_time_us,
                    entries: states.into_iter().map(|s| s.entry.clone()).collect(),
                    others,
                    sig: frame.sig.clone(),
                }
            })
            .collect();
        if self.in_flight.len() >= MAX_IN_FLIGHT {
            self.lose_oldest();
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        for (e, t) in &carried {
            self.sending.insert(*e, *t);
        }
        self.stats.sent += carried.len() as u64;
        self.in_flight.push_back(Sent {
            seq,
            at: now,
            carried,
        });
        self.last = Some((seq, now, 0, size));
        self.budget -= size as f64;
        self.stats.datagrams += 1;
        Some(MovementDatagram {
            world,
            seq,
            groups: wire,
        })
    }
}

/// The newest state of every entity per cell channel of a relay's worlds: what a
/// client that starts seeing a cell is given first. Bounded: at most
/// [`MAX_ENTITIES`] entities per cell (a frame beyond it is not stored; its
/// states still reach the clients that see the cell).
#[derive(Debug, Default)]
pub struct CellStates {
    cells: HashMap<(WorldId, ChannelId), HashMap<EntityId, EntityState>>,
    /// The cell each entity's newest state is held in.
    home: HashMap<(WorldId, EntityId), ChannelId>,
}

impl CellStates {
    /// Takes a frame's states (newer than what is held; an entity that moved
    /// here leaves its previous cell); returns them.
    pub fn handle_frame(&mut self, f: &MovementFrame) -> Vec<EntityState> {
        let states = EntityState::from_frame(f);
        for s in &states {
            let e = s.entity();
            if let Some(prev) = self.home.get(&(f.world, e)).copied() {
                let held = self.cells.get(&(f.world, prev)).and_then(|c| c.get(&e));
                if held.is_some_and(|o| o.tick() >= s.tick()) {
                    continue;
                }
                if prev != f.channel {
                    if let Some(c) = self.cells.get_mut(&(f.world, prev)) {
                        c.remove(&e);
                    }
                }
            }
            let cell = self.cells.entry((f.world, f.channel)).or_default();
            if cell.len() < MAX_ENTITIES || cell.contains_key(&e) {
                cell.insert(e, s.clone());
                self.home.insert((f.world, e), f.channel);
            } else {
                self.home.remove(&(f.world, e));
            }
        }
        states
    }

    /// The newest states held for a cell.
    pub fn cell(&self, world: WorldId, channel: ChannelId) -> Vec<EntityState> {
        self.cells
            .get(&(world, channel))
            .map(|c| c.values().cloned().collect())
            .unwrap_or_default()
    }

    /// Forgets a world (it ended or moved away).
    pub fn forget_world(&mut self, world: WorldId) {
        self.cells.retain(|(w, _), _| *w != world);
        self.home.retain(|(w, _), _| *w != world);
    }

    /// Entities held, all cells.
    pub fn len(&self) -> usize {
        self.cells.values().map(HashMap::len).sum()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.cells.is_empty()
    }
}

#[cfg(test)]
mod tests;
