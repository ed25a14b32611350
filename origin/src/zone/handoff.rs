//! The two-phase handoff of entities between zones, pure (sans-IO).
//!
//! One [`Handoffs`] per zone an origin owns plays both roles:
//!
//! * **source**: [`Handoffs::begin`] journals `Out` (the entity is frozen:
//!   nobody acts on it) and sends [`ZoneMsg::Out`], re-sent with backoff until
//!   answered. An `In` answer journals `Commit` (the entity leaves this zone)
//!   and tells the target; a `Refused` answer journals `Abort` (the entity is
//!   active here again).
//! * **target**: an `Out` journals `In` (the entity is imported and owned
//!   here) or `Refused`, then answers. A duplicate `Out` (a re-send, a source
//!   that recovered) gets the same answer and is never imported twice: the
//!   answered ids are remembered until the source's low watermark passes them.
//!
//! **Ordering contract.** [`Handoffs::poll_output`] yields
//! [`ZoneOutput::Journal`] records and [`ZoneOutput::Send`] messages in the
//! order they must happen: a record is durable (in the zone's replicated
//! input log) before any later output is acted on. The record, not the
//! message, is what changes the world: [`ZoneRecord::effect`] says what the
//! engine does when it applies it (freeze, import, remove, unfreeze), so
//! replaying a zone's log (recovery, a standby) rebuilds both the world and
//! this core ([`Handoffs::recover`]).
//!
//! **Ownership.** An entity is owned by its source until the target has
//! journaled `In`, by the target from then on; the source only removes its
//! frozen copy once it learnt that. A crash of either side at any step leaves
//! it owned by exactly one zone: the source re-sends `Out` after recovery,
//! and the target answers a re-send from what it journaled.
//!
//! No abort on silence: a partition between the two owners leaves the entity
//! frozen at its source (its player waits) until the target answers; an owner
//! that died is replaced by its standby, which holds the same records.

use std::collections::{BTreeMap, HashMap, VecDeque};

use serde::{Deserialize, Serialize};
use skylane_proto::zones::{
    EntityTransfer, HandoffId, ZoneIdx, ZoneMsg, ZoneRecord, MAX_ZONE_STATE,
};
use skylane_proto::{EntityId, WorldId};

/// Limits and timers of the handoff exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HandoffConfig {
    /// First re-send of an unanswered `Out`, in milliseconds (doubling up to
    /// 8x).
    pub resend_ms: u64,
    /// Most handoffs this zone has out and unanswered at once.
    pub max_leaving: usize,
    /// Most answered ids remembered per source zone (the oldest are
    /// forgotten first; counted).
    pub max_remembered: usize,
}

impl Default for HandoffConfig {
    fn default() -> Self {
        Self {
            resend_ms: 100,
            max_leaving: 4096,
            max_remembered: 65_536,
        }
    }
}

/// Why a handoff cannot start, or a message was not taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandoffError {
    /// The entity is already leaving.
    #[error("{0:?} is already being handed off")]
    AlreadyLeaving(EntityId),
    /// The target is this zone.
    #[error("an entity cannot be handed to its own zone")]
    SameZone,
    /// The entity's state is larger than [`MAX_ZONE_STATE`].
    #[error("entity state of {0} bytes exceeds {MAX_ZONE_STATE}")]
    TooLarge(usize),
    /// [`HandoffConfig::max_leaving`] handoffs are unanswered.
    #[error("{0} handoffs are unanswered already")]
    TooMany(usize),
    /// The message is for another world.
    #[error("a zone message for {0} reached {1}")]
    WrongWorld(WorldId, WorldId),
    /// The message names another zone as its receiver.
    #[error("a zone message for {0} reached {1}")]
    WrongZone(ZoneIdx, ZoneIdx),
}

/// One output, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum ZoneOutput {
    /// Make this durable before acting on any later output.
    Journal(ZoneRecord),
    /// Send to the owner of zone `to`.
    Send {
        /// The receiving zone.
        to: ZoneIdx,
        /// The message.
        msg: ZoneMsg,
    },
}

/// Counters, for metrics and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HandoffStats {
    /// Handoffs started here.
    pub started: u64,
    /// Handoffs committed here (the entity left).
    pub committed: u64,
    /// Handoffs the target refused.
    pub aborted: u64,
    /// Entities imported here.
    pub imported: u64,
    /// Handoffs refused here.
    pub refused: u64,
    /// `Out` messages re-sent.
    pub resent: u64,
    /// Duplicate `Out`s answered from the record (never imported twice).
    pub duplicates: u64,
    /// Stale messages ignored (ids already forgotten or unknown).
    pub stale: u64,
    /// Answered ids forgotten early ([`HandoffConfig::max_remembered`]).
    pub forgotten_early: u64,
}

/// What a zone's handoff records add up to: everything [`Handoffs`] needs
/// to recover (the engine keeps one, applying each record it is fed, so its
/// snapshots carry it; [`Handoffs::recover`] starts from it).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HandoffLedger {
    /// The next sequence number towards each target.
    next_seq: BTreeMap<ZoneIdx, u64>,
    /// Handoffs out and unanswered.
    leaving: BTreeMap<HandoffId, EntityTransfer>,
    /// What this zone answered each source, for duplicates.
    answered: BTreeMap<ZoneIdx, Answered>,
    /// Answered ids remembered per source at most (0: unbounded); the oldest
    /// go first.
    #[serde(default)]
    max_remembered: usize,
    /// Answered ids forgotten early because of that bound.
    #[serde(default)]
    forgotten_early: u64,
}

/// The target's memory of one source zone.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct Answered {
    /// Ids below this are never re-sent.
    low: u64,
    /// seq → the verdict given, for answering duplicates.
    ids: BTreeMap<u64, Verdict>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Verdict {
    In,
    Refused(String),
}

impl HandoffLedger {
    /// An empty ledger remembering at most `max_remembered` answered ids per
    /// source.
    pub fn new(max_remembered: usize) -> Self {
        Self {
            max_remembered,
            ..Self::default()
        }
    }

    /// Applies one record (in journal order).
    pub fn apply(&mut self, r: &ZoneRecord) {
        match r {
            ZoneRecord::Out { id, transfer } => {
                let next = self.next_seq.entry(id.to).or_default();
                *next = (*next).max(id.seq + 1);
                self.leaving.insert(*id, transfer.clone());
            }
            ZoneRecord::Commit { id, .. } | ZoneRecord::Abort { id, .. } => {
                self.leaving.remove(id);
            }
            ZoneRecord::In { id, .. } => self.remember(*id, Verdict::In),
            ZoneRecord::Refused { id, reason } => {
                self.remember(*id, Verdict::Refused(reason.clone()));
            }
            ZoneRecord::Served { .. } | ZoneRecord::Answered { .. } => {}
            ZoneRecord::Low { from, low } => {
                let a = self.answered.entry(*from).or_default();
                a.low = a.low.max(*low);
                a.ids = a.ids.split_off(&a.low);
            }
        }
    }

    fn remember(&mut self, id: HandoffId, v: Verdict) {
        let a = self.answered.entry(id.from).or_default();
        if id.seq < a.low {
            return;
        }
        a.ids.insert(id.seq, v);
        while self.max_remembered > 0 && a.ids.len() > self.max_remembered {
            a.ids.pop_first();
            self.forgotten_early += 1;
        }
    }

    /// The entity of an unanswered handoff out of this zone.
    pub fn leaving(&self) -> impl Iterator<Item = (HandoffId, &EntityTransfer)> {
        self.leaving.iter().map(|(id, t)| (*id, t))
    }

    /// Whether this zone journaled `In` for `id` (it took the entity), as
    /// long as it remembers the id (until the source's watermark passes it,
    /// which it only does once it committed).
    pub fn took(&self, id: HandoffId) -> bool {
        self.verdict(id) == Some(&Verdict::In)
    }

    /// Answered ids remembered, in all.
    pub fn remembered(&self) -> usize {
        self.answered.values().map(|a| a.ids.len()).sum()
    }

    fn low_of(&self, from: ZoneIdx) -> u64 {
        self.answered.get(&from).map_or(0, |a| a.low)
    }

    fn verdict(&self, id: HandoffId) -> Option<&Verdict> {
        self.answered.get(&id.from)?.ids.get(&id.seq)
    }
}

/// Re-send timing of an unanswered handoff (not journaled: a recovered zone
/// re-sends at once).
#[derive(Debug, Clone, Copy)]
struct Timer {
    /// When it is re-sent next (ms).
    due: u64,
    /// Re-sends so far.
    attempts: u32,
}

/// The handoff state of one zone.
#[derive(Debug, Clone)]
pub struct Handoffs {
    world: WorldId,
    me: ZoneIdx,
    cfg: HandoffConfig,
    ledger: HandoffLedger,
    timers: BTreeMap<HandoffId, Timer>,
    by_entity: HashMap<EntityId, HandoffId>,
    out: VecDeque<ZoneOutput>,
    stats: HandoffStats,
}

impl Handoffs {
    /// A zone with no handoff history.
    pub fn new(world: WorldId, me: ZoneIdx, cfg: HandoffConfig) -> Self {
        Self::recover(world, me, cfg, 0, HandoffLedger::new(cfg.max_remembered))
    }

    /// A zone's state rebuilt from what its records added up to (after a
    /// crash, or on a standby taking the zone over). Unanswered handoffs are
    /// re-sent at once.
    pub fn recover(
        world: WorldId,
        me: ZoneIdx,
        cfg: HandoffConfig,
        now_ms: u64,
        mut ledger: HandoffLedger,
    ) -> Self {
        ledger.max_remembered = cfg.max_remembered;
        let timers = ledger
            .leaving
            .keys()
            .map(|id| {
                (
                    *id,
                    Timer {
                        due: now_ms,
                        attempts: 0,
                    },
                )
            })
            .collect();
        let by_entity = ledger
            .leaving
            .iter()
            .map(|(id, t)| (t.entity, *id))
            .collect();
        Self {
            world,
            me,
            cfg,
            ledger,
            timers,
            by_entity,
            out: VecDeque::new(),
            stats: HandoffStats::default(),
        }
    }

    /// This zone.
    pub fn zone(&self) -> ZoneIdx {
        self.me
    }

    /// Counters so far.
    pub fn stats(&self) -> HandoffStats {
        HandoffStats {
            forgotten_early: self.ledger.forgotten_early,
            ..self.stats
        }
    }

    /// Whether `entity` is frozen here (leaving, unanswered).
    pub fn is_leaving(&self, entity: EntityId) -> bool {
        self.by_entity.contains_key(&entity)
    }

    /// The handoffs out and unanswered.
    pub fn leaving(&self) -> impl Iterator<Item = (HandoffId, &EntityTransfer)> {
        self.ledger.leaving()
    }

    /// Journals `rec`: it is applied here and output, in order.
    fn journal(&mut self, rec: ZoneRecord) {
        self.ledger.apply(&rec);
        self.out.push_back(ZoneOutput::Journal(rec));
    }

    /// Starts handing `transfer` to zone `to`: journals `Out` (the entity is
    /// frozen from then on) and sends it.
    pub fn begin(
        &mut self,
        now_ms: u64,
        transfer: EntityTransfer,
        to: ZoneIdx,
    ) -> Result<HandoffId, HandoffError> {
        if to == self.me {
            return Err(HandoffError::SameZone);
        }
        if self.by_entity.contains_key(&transfer.entity) {
            return Err(HandoffError::AlreadyLeaving(transfer.entity));
        }
        if transfer.state.len() > MAX_ZONE_STATE {
            return Err(HandoffError::TooLarge(transfer.state.len()));
        }
        if self.ledger.leaving.len() >= self.cfg.max_leaving {
            return Err(HandoffError::TooMany(self.ledger.leaving.len()));
        }
        let id = HandoffId {
            from: self.me,
            to,
            seq: self.ledger.next_seq.get(&to).copied().unwrap_or(0),
        };
        self.by_entity.insert(transfer.entity, id);
        self.timers.insert(
            id,
            Timer {
                due: now_ms + self.cfg.resend_ms,
                attempts: 0,
            },
        );
        self.journal(ZoneRecord::Out { id, transfer });
        self.send_out(id);
        self.stats.started += 1;
        Ok(id)
    }

    /// The lowest sequence towards `to` not yet answered (or the next one).
    fn low(&self, to: ZoneIdx) -> u64 {
        let first = HandoffId {
            from: self.me,
            to,
            seq: 0,
        };
        let last = HandoffId {
            seq: u64::MAX,
            ..first
        };
        self.ledger.leaving.range(first..=last).next().map_or_else(
            || self.ledger.next_seq.get(&to).copied().unwrap_or(0),
            |(id, _)| id.seq,
        )
    }

    fn send_out(&mut self, id: HandoffId) {
        let Some(t) = self.ledger.leaving.get(&id) else {
            return;
        };
        let msg = ZoneMsg::Out {
            world: self.world,
            id,
            low: self.low(id.to),
            transfer: t.clone(),
        };
        self.out.push_back(ZoneOutput::Send { to: id.to, msg });
    }

    /// A message from another zone's owner. `admit` decides, for an `Out`
    /// not seen before, whether this zone takes the entity (`Err(reason)`:
    /// refused); it must be deterministic in the zone's state, as the verdict
    /// is journaled and replayed.
    pub fn handle_msg(
        &mut self,
        msg: &ZoneMsg,
        admit: impl FnOnce(&EntityTransfer) -> Result<(), String>,
    ) -> Result<(), HandoffError> {
        let (world, to) = match msg {
            ZoneMsg::Out { world, id, .. } => (*world, id.to),
            ZoneMsg::In { world, id } | ZoneMsg::Refused { world, id, .. } => (*world, id.from),
            ZoneMsg::Commit { world, id, .. } => (*world, id.to),
            ZoneMsg::Mirrors { world, .. }
            | ZoneMsg::Request { world, .. }
            | ZoneMsg::Answer { world, .. }
            | ZoneMsg::FeedWanted { world, .. }
            | ZoneMsg::FeedPart { world, .. } => (*world, self.me),
        };
        if world != self.world {
            return Err(HandoffError::WrongWorld(world, self.world));
        }
        if to != self.me {
            return Err(HandoffError::WrongZone(to, self.me));
        }
        match msg {
            ZoneMsg::Out {
                id, low, transfer, ..
            } => self.on_out(*id, *low, transfer, admit),
            ZoneMsg::In { id, .. } => self.on_answer(*id, None),
            ZoneMsg::Refused { id, reason, .. } => self.on_answer(*id, Some(reason)),
            // The id itself stays remembered until the watermark passes it:
            // a straggling copy of its `Out` must be answered, not imported.
            ZoneMsg::Commit { id, low, .. } => self.raise_low(id.from, *low),
            // Not the handoff's: the engine's (mirrors, requests).
            ZoneMsg::Mirrors { .. }
            | ZoneMsg::Request { .. }
            | ZoneMsg::Answer { .. }
            | ZoneMsg::FeedWanted { .. }
            | ZoneMsg::FeedPart { .. } => {}
        }
        Ok(())
    }

    fn on_out(
        &mut self,
        id: HandoffId,
        low: u64,
        transfer: &EntityTransfer,
        admit: impl FnOnce(&EntityTransfer) -> Result<(), String>,
    ) {
        let verdict = if let Some(v) = self.ledger.verdict(id).cloned() {
            self.stats.duplicates += 1;
            v
        } else if id.seq < self.ledger.low_of(id.from) {
            // Answered and committed long ago: the source moved on.
            self.stats.stale += 1;
            return;
        } else {
            // Only an entity's owner hands it off: a copy frozen here from an
            // earlier handoff of it is stale (that handoff was taken), so it
            // is committed before the entity comes back.
            if let Some(old) = self.by_entity.get(&transfer.entity).copied() {
                self.on_answer(old, None);
            }
            let v = match admit(transfer) {
                Ok(()) if transfer.state.len() <= MAX_ZONE_STATE => Verdict::In,
                Ok(()) => Verdict::Refused(format!(
                    "entity state of {} bytes exceeds {MAX_ZONE_STATE}",
                    transfer.state.len()
                )),
                Err(reason) => Verdict::Refused(reason),
            };
            let rec = match &v {
                Verdict::In => {
                    self.stats.imported += 1;
                    ZoneRecord::In {
                        id,
                        transfer: transfer.clone(),
                    }
                }
                Verdict::Refused(reason) => {
                    self.stats.refused += 1;
                    ZoneRecord::Refused {
                        id,
                        reason: reason.clone(),
                    }
                }
            };
            self.journal(rec);
            v
        };
        let msg = match verdict {
            Verdict::In => ZoneMsg::In {
                world: self.world,
                id,
            },
            Verdict::Refused(reason) => ZoneMsg::Refused {
                world: self.world,
                id,
                reason,
            },
        };
        self.out.push_back(ZoneOutput::Send { to: id.from, msg });
        self.raise_low(id.from, low);
    }

    fn on_answer(&mut self, id: HandoffId, refused: Option<&String>) {
        let Some(entity) = self.ledger.leaving.get(&id).map(|t| t.entity) else {
            // Answered before (a duplicate answer) or committed before a
            // crash: say so again so the target can forget it.
            self.stats.stale += 1;
            if refused.is_none() {
                self.send_commit(id);
            }
            return;
        };
        self.by_entity.remove(&entity);
        self.timers.remove(&id);
        if refused.is_some() {
            self.stats.aborted += 1;
            self.journal(ZoneRecord::Abort { id, entity });
        } else {
            self.stats.committed += 1;
            self.journal(ZoneRecord::Commit { id, entity });
            self.send_commit(id);
        }
    }

    fn send_commit(&mut self, id: HandoffId) {
        let msg = ZoneMsg::Commit {
            world: self.world,
            id,
            low: self.low(id.to),
        };
        self.out.push_back(ZoneOutput::Send { to: id.to, msg });
    }

    /// The source says it never re-sends ids below `low`: journal it (so a
    /// recovered target forgets them too).
    fn raise_low(&mut self, from: ZoneIdx, low: u64) {
        if low > self.ledger.low_of(from) {
            self.journal(ZoneRecord::Low { from, low });
        }
    }

    /// Re-sends `Out`s whose answer is overdue (backoff doubling to 8x).
    pub fn handle_timeout(&mut self, now_ms: u64) {
        let due: Vec<HandoffId> = self
            .timers
            .iter()
            .filter(|(_, t)| t.due <= now_ms)
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            if let Some(t) = self.timers.get_mut(&id) {
                t.attempts += 1;
                t.due = now_ms + (self.cfg.resend_ms << t.attempts.min(3));
            }
            self.stats.resent += 1;
            self.send_out(id);
        }
    }

    /// When [`Handoffs::handle_timeout`] has something to do next.
    pub fn poll_timeout(&self) -> Option<u64> {
        self.timers.values().map(|t| t.due).min()
    }

    /// The next output, in order.
    pub fn poll_output(&mut self) -> Option<ZoneOutput> {
        self.out.pop_front()
    }

    /// Answered ids remembered (for the bound's tests and status).
    pub fn remembered(&self) -> usize {
        self.ledger.remembered()
    }

    /// The ledger (what the records so far add up to).
    pub fn ledger(&self) -> &HandoffLedger {
        &self.ledger
    }
}

#[cfg(test)]
mod tests;
