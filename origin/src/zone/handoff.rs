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

use skylane_proto::zones::{EntityTransfer, HandoffId, ZoneIdx, ZoneMsg, MAX_ZONE_STATE};
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

/// A journaled step of a handoff: the durable record both sides keep.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ZoneRecord {
    /// Source: the entity leaves towards `id.to`, frozen from now on.
    Out {
        /// The handoff.
        id: HandoffId,
        /// The entity as it leaves.
        transfer: EntityTransfer,
    },
    /// Source: the target owns it; it is removed here.
    Commit {
        /// The handoff.
        id: HandoffId,
        /// The entity that left.
        entity: EntityId,
    },
    /// Source: the target refused it; it is active here again.
    Abort {
        /// The handoff.
        id: HandoffId,
        /// The entity that stays.
        entity: EntityId,
    },
    /// Target: the entity is imported and owned here.
    In {
        /// The handoff.
        id: HandoffId,
        /// The entity as it arrived.
        transfer: EntityTransfer,
    },
    /// Target: refused.
    Refused {
        /// The handoff.
        id: HandoffId,
        /// Why.
        reason: String,
    },
    /// Target: the source will never re-send ids from `from` below `low`.
    Low {
        /// The source zone.
        from: ZoneIdx,
        /// Its watermark.
        low: u64,
    },
}

/// What applying a [`ZoneRecord`] does to the zone's world.
#[derive(Debug, Clone, PartialEq)]
pub enum ZoneEffect<'a> {
    /// Freeze the entity: no action applies to it.
    Freeze(EntityId),
    /// Add the entity (state, position, version, and its player's session).
    Import(&'a EntityTransfer),
    /// Remove the entity (its frozen copy).
    Remove(EntityId),
    /// Unfreeze the entity: it stays.
    Unfreeze(EntityId),
    /// Nothing in the world changes.
    None,
}

impl ZoneRecord {
    /// What the engine does to its world when it applies this record.
    pub fn effect(&self) -> ZoneEffect<'_> {
        match self {
            Self::Out { transfer, .. } => ZoneEffect::Freeze(transfer.entity),
            Self::In { transfer, .. } => ZoneEffect::Import(transfer),
            Self::Commit { entity, .. } => ZoneEffect::Remove(*entity),
            Self::Abort { entity, .. } => ZoneEffect::Unfreeze(*entity),
            Self::Refused { .. } | Self::Low { .. } => ZoneEffect::None,
        }
    }
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

/// A handoff out and unanswered.
#[derive(Debug, Clone)]
struct Leaving {
    transfer: EntityTransfer,
    /// When it is re-sent next (ms).
    due: u64,
    /// Re-sends so far.
    attempts: u32,
}

/// The target's memory of one source zone.
#[derive(Debug, Clone, Default)]
struct Answered {
    /// Ids below this are never re-sent.
    low: u64,
    /// seq → the verdict given (true: `In`), for answering duplicates.
    ids: BTreeMap<u64, Verdict>,
}

#[derive(Debug, Clone, PartialEq)]
enum Verdict {
    In,
    Refused(String),
}

/// The handoff state of one zone.
#[derive(Debug, Clone)]
pub struct Handoffs {
    world: WorldId,
    me: ZoneIdx,
    cfg: HandoffConfig,
    next_seq: BTreeMap<ZoneIdx, u64>,
    leaving: BTreeMap<HandoffId, Leaving>,
    by_entity: HashMap<EntityId, HandoffId>,
    answered: BTreeMap<ZoneIdx, Answered>,
    out: VecDeque<ZoneOutput>,
    stats: HandoffStats,
}

impl Handoffs {
    /// A zone with no handoff history.
    pub fn new(world: WorldId, me: ZoneIdx, cfg: HandoffConfig) -> Self {
        Self {
            world,
            me,
            cfg,
            next_seq: BTreeMap::new(),
            leaving: BTreeMap::new(),
            by_entity: HashMap::new(),
            answered: BTreeMap::new(),
            out: VecDeque::new(),
            stats: HandoffStats::default(),
        }
    }

    /// Rebuilds a zone's state from its journaled records, in order (after a
    /// crash, or on a standby taking the zone over). Unanswered handoffs are
    /// re-sent at once.
    pub fn recover<'a>(
        world: WorldId,
        me: ZoneIdx,
        cfg: HandoffConfig,
        now_ms: u64,
        records: impl IntoIterator<Item = &'a ZoneRecord>,
    ) -> Self {
        let mut s = Self::new(world, me, cfg);
        for r in records {
            s.replay(r, now_ms);
        }
        s
    }

    fn replay(&mut self, r: &ZoneRecord, now_ms: u64) {
        match r {
            ZoneRecord::Out { id, transfer } => {
                let next = self.next_seq.entry(id.to).or_default();
                *next = (*next).max(id.seq + 1);
                self.by_entity.insert(transfer.entity, *id);
                self.leaving.insert(
                    *id,
                    Leaving {
                        transfer: transfer.clone(),
                        due: now_ms,
                        attempts: 0,
                    },
                );
            }
            ZoneRecord::Commit { id, .. } | ZoneRecord::Abort { id, .. } => {
                if let Some(l) = self.leaving.remove(id) {
                    self.by_entity.remove(&l.transfer.entity);
                }
            }
            ZoneRecord::In { id, .. } => self.remember(*id, Verdict::In),
            ZoneRecord::Refused { id, reason } => {
                self.remember(*id, Verdict::Refused(reason.clone()));
            }
            ZoneRecord::Low { from, low } => self.advance_low(*from, *low),
        }
    }

    /// This zone.
    pub fn zone(&self) -> ZoneIdx {
        self.me
    }

    /// Counters so far.
    pub fn stats(&self) -> HandoffStats {
        self.stats
    }

    /// Whether `entity` is frozen here (leaving, unanswered).
    pub fn is_leaving(&self, entity: EntityId) -> bool {
        self.by_entity.contains_key(&entity)
    }

    /// The handoffs out and unanswered.
    pub fn leaving(&self) -> impl Iterator<Item = (HandoffId, &EntityTransfer)> {
        self.leaving.iter().map(|(id, l)| (*id, &l.transfer))
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
        if self.leaving.len() >= self.cfg.max_leaving {
            return Err(HandoffError::TooMany(self.leaving.len()));
        }
        let next = self.next_seq.entry(to).or_default();
        let id = HandoffId {
            from: self.me,
            to,
            seq: *next,
        };
        *next += 1;
        let rec = ZoneRecord::Out {
            id,
            transfer: transfer.clone(),
        };
        self.out.push_back(ZoneOutput::Journal(rec));
        self.by_entity.insert(transfer.entity, id);
        self.leaving.insert(
            id,
            Leaving {
                transfer,
                due: now_ms + self.cfg.resend_ms,
                attempts: 0,
            },
        );
        self.send_out(id);
        self.stats.started += 1;
        Ok(id)
    }

    /// The lowest sequence towards `to` not yet answered (or the next one).
    fn low(&self, to: ZoneIdx) -> u64 {
        self.leaving
            .range(
                HandoffId {
                    from: self.me,
                    to,
                    seq: 0,
                }..=HandoffId {
                    from: self.me,
                    to,
                    seq: u64::MAX,
                },
            )
            .next()
            .map_or_else(
                || self.next_seq.get(&to).copied().unwrap_or(0),
                |(id, _)| id.seq,
            )
    }

    fn send_out(&mut self, id: HandoffId) {
        let Some(l) = self.leaving.get(&id) else {
            return;
        };
        let msg = ZoneMsg::Out {
            world: self.world,
            id,
            low: self.low(id.to),
            transfer: l.transfer.clone(),
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
            ZoneMsg::Mirrors { world, .. } => (*world, self.me),
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
            ZoneMsg::Mirrors { .. } => {}
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
        let known = self
            .answered
            .get(&id.from)
            .map(|a| (a.low, a.ids.get(&id.seq).cloned()));
        let verdict = match known {
            Some((_, Some(v))) => {
                self.stats.duplicates += 1;
                v
            }
            Some((l, None)) if id.seq < l => {
                // Answered and committed long ago: the source moved on.
                self.stats.stale += 1;
                return;
            }
            _ => {
                // Only an entity's owner hands it off: a copy frozen here
                // from an earlier handoff of it is stale (that handoff was
                // taken), so it is committed before the entity comes back.
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
                self.out.push_back(ZoneOutput::Journal(rec));
                self.remember(id, v.clone());
                v
            }
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
        if !self.leaving.contains_key(&id) {
            // Answered before (a duplicate answer) or committed before a
            // crash: say so again so the target can forget it.
            self.stats.stale += 1;
            if refused.is_none() {
                self.send_commit(id);
            }
            return;
        }
        let Some(l) = self.leaving.remove(&id) else {
            return;
        };
        let entity = l.transfer.entity;
        self.by_entity.remove(&entity);
        let rec = if refused.is_some() {
            self.stats.aborted += 1;
            ZoneRecord::Abort { id, entity }
        } else {
            self.stats.committed += 1;
            ZoneRecord::Commit { id, entity }
        };
        self.out.push_back(ZoneOutput::Journal(rec));
        if refused.is_none() {
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

    fn remember(&mut self, id: HandoffId, v: Verdict) {
        let a = self.answered.entry(id.from).or_default();
        if id.seq < a.low {
            return;
        }
        a.ids.insert(id.seq, v);
        while a.ids.len() > self.cfg.max_remembered {
            a.ids.pop_first();
            self.stats.forgotten_early += 1;
        }
    }

    /// The source says it never re-sends ids below `low`: journal it (so a
    /// recovered target forgets them too) and forget them.
    fn raise_low(&mut self, from: ZoneIdx, low: u64) {
        let cur = self.answered.get(&from).map_or(0, |a| a.low);
        if low > cur {
            self.out
                .push_back(ZoneOutput::Journal(ZoneRecord::Low { from, low }));
            self.advance_low(from, low);
        }
    }

    fn advance_low(&mut self, from: ZoneIdx, low: u64) {
        let a = self.answered.entry(from).or_default();
        a.low = a.low.max(low);
        a.ids = a.ids.split_off(&a.low);
    }

    /// Re-sends `Out`s whose answer is overdue (backoff doubling to 8x).
    pub fn handle_timeout(&mut self, now_ms: u64) {
        let due: Vec<HandoffId> = self
            .leaving
            .iter()
            .filter(|(_, l)| l.due <= now_ms)
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            if let Some(l) = self.leaving.get_mut(&id) {
                l.attempts += 1;
                let backoff = self.cfg.resend_ms << l.attempts.min(3);
                l.due = now_ms + backoff;
            }
            self.stats.resent += 1;
            self.send_out(id);
        }
    }

    /// When [`Handoffs::handle_timeout`] has something to do next.
    pub fn poll_timeout(&self) -> Option<u64> {
        self.leaving.values().map(|l| l.due).min()
    }

    /// The next output, in order.
    pub fn poll_output(&mut self) -> Option<ZoneOutput> {
        self.out.pop_front()
    }

    /// Answered ids remembered (for the bound's tests and status).
    pub fn remembered(&self) -> usize {
        self.answered.values().map(|a| a.ids.len()).sum()
    }
}

#[cfg(test)]
mod tests;
