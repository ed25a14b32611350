//! The per-connection priority scheduler (pure: no I/O, no clock).
//!
//! Everything a relay sends to one client passes through a [`Scheduler`]:
//! * **strict priority between classes**: critical, then state, movement, chat, bulk
//!   ([`EventClass::rank`]);
//! * **fairness between sessions within a class**: sessions with pending messages
//!   take turns (round robin), so one busy session cannot starve another sharing the
//!   connection (spectator fan-in, relay-to-relay links);
//! * **coalescing**: an unsent droppable movement message for the same (session,
//!   entity) is replaced by the newer one in place (latest wins, no queue growth);
//! * **deadlines**: a droppable message older than its class's deadline
//!   ([`EventClass::deadline`]) is dropped instead of sent;
//! * **bounds**: each class holds at most its configured number of messages. When a
//!   class with a deadline (movement, chat, bulk) is full, its oldest droppable
//!   message is dropped; when nothing in it may be dropped, or the class is
//!   reliable (critical, state), enqueueing fails with [`Overflow`] so the shell
//!   can move the client to a resume instead of growing memory.
//!
//! Whether a message may be dropped is the producer's call ([`Outgoing::droppable`]),
//! not only its class's: a channel's event batch is never droppable, whatever its
//! class, because the client's ordering and hash chain need every batch (a dropped
//! one would leave a hole the client waits on, then skips).
//!
//! Inputs are `handle_enqueue(now, ..)`, outputs `poll_next(now)`; `poll_timeout`
//! gives the earliest deadline so a shell can purge stale messages while the
//! connection is blocked.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rustc_hash::FxHashMap as HashMap;
use skylane_proto::{Coalescing, EntityId, EventClass, SessionId};

/// One message waiting to be sent.
#[derive(Debug, Clone, PartialEq)]
pub struct Outgoing {
    /// Class: decides priority, deadline and coalescing.
    pub class: EventClass,
    /// The session it belongs to (fairness unit).
    pub session: SessionId,
    /// The entity it is about (droppable movement coalesces per entity).
    pub entity: Option<EntityId>,
    /// Whether its class's deadline, coalescing and eviction may drop it. False
    /// for anything the client must receive (channel batches, keyframes, replies):
    /// those wait, and a full class fails with [`Overflow`].
    pub droppable: bool,
    /// Encoded frame or datagram, shared with every other receiver.
    pub bytes: Bytes,
}

/// Scheduler limits. Defaults: 4,096 critical, 4,096 state, 1,024 movement,
/// 512 chat, 256 bulk messages per connection; deadlines from
/// [`EventClass::deadline`] (movement 150 ms, chat 10 s, bulk 30 s; critical and
/// state never expire).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SchedulerConfig {
    /// Most messages held per class, indexed by [`EventClass::rank`].
    pub capacity: [usize; EventClass::COUNT],
    /// Age after which a droppable message of a class is dropped unsent, indexed
    /// by [`EventClass::rank`]; `None`: never (its full queue is an overflow).
    pub deadline: [Option<Duration>; EventClass::COUNT],
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        Self {
            capacity: [4096, 4096, 1024, 512, 256],
            deadline: EventClass::ALL.map(EventClass::deadline),
        }
    }
}

/// A reliable class is full: the receiver is too slow for the stream it must get
/// without loss.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{class} queue full ({capacity} messages): the receiver is too slow")]
pub struct Overflow {
    /// Class that overflowed.
    pub class: EventClass,
    /// Its capacity.
    pub capacity: usize,
}

/// Counters, per class (indexed by rank).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SchedulerStats {
    /// Messages accepted.
    pub enqueued: [u64; EventClass::COUNT],
    /// Messages handed out for sending.
    pub sent: [u64; EventClass::COUNT],
    /// Messages replaced by a newer one for the same entity.
    pub coalesced: [u64; EventClass::COUNT],
    /// Messages dropped past their deadline.
    pub expired: [u64; EventClass::COUNT],
    /// Messages dropped because their class was full.
    pub evicted: [u64; EventClass::COUNT],
}

#[derive(Debug)]
struct Entry {
    msg: Outgoing,
    deadline: Option<Instant>,
}

#[derive(Debug, Default)]
struct ClassQueue {
    per_session: HashMap<SessionId, VecDeque<Entry>>,
    ring: VecDeque<SessionId>,
    len: usize,
}

impl ClassQueue {
    fn push(&mut self, e: Entry) {
        let q = self.per_session.entry(e.msg.session).or_default();
        if q.is_empty() {
            self.ring.push_back(e.msg.session);
        }
        q.push_back(e);
        self.len += 1;
    }

    /// Replaces the unsent message for the same (session, entity), if any.
    fn coalesce(&mut self, msg: &Outgoing, deadline: Option<Instant>) -> Option<Outgoing> {
        let entity = msg.entity?;
        let q = self.per_session.get_mut(&msg.session)?;
        let slot = q
            .iter_mut()
            .find(|e| e.msg.droppable && e.msg.entity == Some(entity))?;
        let old = std::mem::replace(&mut slot.msg, msg.clone());
        slot.deadline = deadline;
        Some(old)
    }

    /// Next message in round-robin order among sessions.
    fn pop(&mut self) -> Option<Entry> {
        let session = self.ring.pop_front()?;
        let q = self.per_session.get_mut(&session)?;
        let e = q.pop_front();
        if q.is_empty() {
            self.per_session.remove(&session);
        } else {
            self.ring.push_back(session);
        }
        if e.is_some() {
            self.len -= 1;
        }
        e
    }

    /// Drops the oldest droppable message (the earliest deadline: one class's
    /// deadlines are its messages' arrival times plus the same delay).
    fn evict_one(&mut self) -> bool {
        let Some((session, i)) = self
            .per_session
            .iter()
            .flat_map(|(s, q)| {
                q.iter()
                    .enumerate()
                    .filter_map(move |(i, e)| e.deadline.map(|d| (d, *s, i)))
            })
            .min_by_key(|(d, _, _)| *d)
            .map(|(_, s, i)| (s, i))
        else {
            return false;
        };
        if let Some(q) = self.per_session.get_mut(&session) {
            q.remove(i);
            self.len -= 1;
            if q.is_empty() {
                self.per_session.remove(&session);
                self.ring.retain(|s| *s != session);
            }
        }
        true
    }

    fn earliest_deadline(&self) -> Option<Instant> {
        self.per_session
            .values()
            .filter_map(|q| q.front().and_then(|e| e.deadline))
            .min()
    }

    fn purge_expired(&mut self, now: Instant) -> u64 {
        let mut dropped = 0;
        for q in self.per_session.values_mut() {
            let before = q.len();
            q.retain(|e| e.deadline.is_none_or(|d| d > now));
            dropped += (before - q.len()) as u64;
        }
        self.len -= dropped as usize;
        self.per_session.retain(|_, q| !q.is_empty());
        let live = &self.per_session;
        self.ring.retain(|s| live.contains_key(s));
        dropped
    }
}

/// One connection's outgoing queues.
#[derive(Debug)]
pub struct Scheduler {
    cfg: SchedulerConfig,
    classes: [ClassQueue; EventClass::COUNT],
    stats: SchedulerStats,
}

impl Scheduler {
    /// An empty scheduler.
    pub fn new(cfg: SchedulerConfig) -> Self {
        Self {
            cfg,
            classes: Default::default(),
            stats: SchedulerStats::default(),
        }
    }

    /// Counters.
    pub fn stats(&self) -> &SchedulerStats {
        &self.stats
    }

    /// Messages waiting, all classes.
    pub fn len(&self) -> usize {
        self.classes.iter().map(|c| c.len).sum()
    }

    /// Whether nothing is waiting.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Messages waiting in one class.
    pub fn len_of(&self, class: EventClass) -> usize {
        self.classes[class.rank()].len
    }

    /// Queues a message received at `now`.
    pub fn handle_enqueue(&mut self, now: Instant, msg: Outgoing) -> Result<(), Overflow> {
        let class = msg.class;
        let r = class.rank();
        let deadline = self.cfg.deadline[r]
            .filter(|_| msg.droppable)
            .map(|d: Duration| now + d);
        let q = &mut self.classes[r];
        if msg.droppable
            && class.coalescing() == Coalescing::LatestPerEntity
            && q.coalesce(&msg, deadline).is_some()
        {
            self.stats.coalesced[r] += 1;
            self.stats.enqueued[r] += 1;
            return Ok(());
        }
        if q.len >= self.cfg.capacity[r] {
            if self.cfg.deadline[r].is_none() || !q.evict_one() {
                return Err(Overflow {
                    class,
                    capacity: self.cfg.capacity[r],
                });
            }
            self.stats.evicted[r] += 1;
        }
        q.push(Entry { msg, deadline });
        self.stats.enqueued[r] += 1;
        Ok(())
    }

    /// The next message to send at `now`: the most urgent class first, sessions in
    /// turn within a class, stale messages dropped on the way.
    pub fn poll_next(&mut self, now: Instant) -> Option<Outgoing> {
        self.poll_next_ready(now, |_| true)
    }

    /// Like [`poll_next`](Self::poll_next), skipping classes whose output is not
    /// `ready` (for example a stream whose send buffer is full), so a blocked bulk
    /// stream never holds back critical messages.
    pub fn poll_next_ready(
        &mut self,
        now: Instant,
        ready: impl Fn(EventClass) -> bool,
    ) -> Option<Outgoing> {
        for (r, class) in EventClass::ALL.iter().enumerate() {
            if !ready(*class) {
                continue;
            }
            while let Some(e) = self.classes[r].pop() {
                if e.deadline.is_some_and(|d| d <= now) {
                    self.stats.expired[r] += 1;
                    continue;
                }
                self.stats.sent[r] += 1;
                return Some(e.msg);
            }
        }
        None
    }

    /// The earliest deadline among waiting messages (purge with
    /// [`handle_timeout`](Self::handle_timeout) then).
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.classes
            .iter()
            .filter_map(ClassQueue::earliest_deadline)
            .min()
    }

    /// Drops every message past its deadline at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        for r in 0..EventClass::COUNT {
            let n = self.classes[r].purge_expired(now);
            self.stats.expired[r] += n;
        }
    }

    /// Forgets everything queued for a session (it left or moved away).
    pub fn handle_session_gone(&mut self, session: SessionId) {
        for c in &mut self.classes {
            if let Some(q) = c.per_session.remove(&session) {
                c.len -= q.len();
                c.ring.retain(|s| *s != session);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(class: EventClass, session: u64, entity: Option<u64>, tag: u8) -> Outgoing {
        Outgoing {
            class,
            session: SessionId(session),
            entity: entity.map(EntityId),
            droppable: true,
            bytes: Bytes::from(vec![tag]),
        }
    }

    fn drain(s: &mut Scheduler, now: Instant) -> Vec<(EventClass, u64, u8)> {
        std::iter::from_fn(|| s.poll_next(now))
            .map(|m| (m.class, m.session.0, m.bytes[0]))
            .collect()
    }

    #[test]
    fn strict_priority_between_classes() {
        let now = Instant::now();
        let mut s = Scheduler::new(SchedulerConfig::default());
        for (i, c) in [
            EventClass::Bulk,
            EventClass::Chat,
            EventClass::Movement,
            EventClass::State,
            EventClass::Critical,
        ]
        .into_iter()
        .enumerate()
        {
            s.handle_enqueue(now, msg(c, 1, None, i as u8)).unwrap();
        }
        let order: Vec<EventClass> = drain(&mut s, now).into_iter().map(|m| m.0).collect();
        assert_eq!(order, EventClass::ALL.to_vec());
    }

    #[test]
    fn sessions_take_turns_within_a_class() {
        let now = Instant::now();
        let mut s = Scheduler::new(SchedulerConfig::default());
        for i in 0..5 {
            s.handle_enqueue(now, msg(EventClass::State, 1, None, i))
                .unwrap();
        }
        s.handle_enqueue(now, msg(EventClass::State, 2, None, 100))
            .unwrap();
        s.handle_enqueue(now, msg(EventClass::State, 2, None, 101))
            .unwrap();
        let sessions: Vec<u64> = drain(&mut s, now).into_iter().map(|m| m.1).collect();
        assert_eq!(sessions, vec![1, 2, 1, 2, 1, 1, 1]);
    }

    #[test]
    fn movement_coalesces_per_entity_latest_wins() {
        let now = Instant::now();
        let mut s = Scheduler::new(SchedulerConfig::default());
        for tag in 0..10 {
            s.handle_enqueue(now, msg(EventClass::Movement, 1, Some(7), tag))
                .unwrap();
        }
        s.handle_enqueue(now, msg(EventClass::Movement, 1, Some(8), 50))
            .unwrap();
        assert_eq!(s.len_of(EventClass::Movement), 2);
        assert_eq!(
            drain(&mut s, now),
            vec![(EventClass::Movement, 1, 9), (EventClass::Movement, 1, 50)]
        );
        assert_eq!(s.stats().coalesced[EventClass::Movement.rank()], 9);
        // Reliable classes never coalesce.
        for tag in 0..3 {
            s.handle_enqueue(now, msg(EventClass::Critical, 1, Some(7), tag))
                .unwrap();
        }
        assert_eq!(s.len_of(EventClass::Critical), 3);
    }

    #[test]
    fn a_configured_deadline_replaces_the_class_default() {
        let t0 = Instant::now();
        let mut cfg = SchedulerConfig::default();
        cfg.deadline[EventClass::Movement.rank()] = Some(Duration::from_millis(40));
        let mut s = Scheduler::new(cfg);
        s.handle_enqueue(t0, msg(EventClass::Movement, 1, Some(7), 1))
            .unwrap();
        assert_eq!(s.poll_timeout(), Some(t0 + Duration::from_millis(40)));
        assert!(s.poll_next(t0 + Duration::from_millis(41)).is_none());
        assert_eq!(s.stats().expired[EventClass::Movement.rank()], 1);
    }

    #[test]
    fn a_message_that_is_not_droppable_waits_whatever_its_class() {
        let t0 = Instant::now();
        let cfg = SchedulerConfig {
            capacity: [4, 4, 3, 4, 4],
            ..SchedulerConfig::default()
        };
        let mut s = Scheduler::new(cfg);
        let batch = |tag| Outgoing {
            droppable: false,
            ..msg(EventClass::Movement, 1, Some(7), tag)
        };
        // Two channel batches about the same entity: neither replaces the other.
        s.handle_enqueue(t0, batch(1)).unwrap();
        s.handle_enqueue(t0, batch(2)).unwrap();
        // A droppable update may be evicted to make room; the batches may not.
        s.handle_enqueue(t0, msg(EventClass::Movement, 2, Some(9), 3))
            .unwrap();
        s.handle_enqueue(t0, batch(4)).unwrap();
        assert_eq!(s.stats().evicted[EventClass::Movement.rank()], 1);
        let full = s.handle_enqueue(t0, batch(5)).unwrap_err();
        assert_eq!(full.class, EventClass::Movement);
        // Long past the movement deadline, every batch still comes out, in order.
        let late = t0 + Duration::from_secs(5);
        s.handle_timeout(late);
        assert_eq!(
            drain(&mut s, late),
            vec![
                (EventClass::Movement, 1, 1),
                (EventClass::Movement, 1, 2),
                (EventClass::Movement, 1, 4)
            ]
        );
        assert_eq!(s.stats().expired[EventClass::Movement.rank()], 0);
        assert_eq!(s.stats().coalesced[EventClass::Movement.rank()], 0);
    }

    #[test]
    fn deadlines_drop_stale_messages_never_critical() {
        let t0 = Instant::now();
        let mut s = Scheduler::new(SchedulerConfig::default());
        s.handle_enqueue(t0, msg(EventClass::Movement, 1, Some(1), 1))
            .unwrap();
        s.handle_enqueue(t0, msg(EventClass::Critical, 1, None, 2))
            .unwrap();
        assert_eq!(
            s.poll_timeout(),
            Some(t0 + EventClass::Movement.deadline().unwrap())
        );
        let late = t0 + Duration::from_secs(60);
        assert_eq!(drain(&mut s, late), vec![(EventClass::Critical, 1, 2)]);
        assert_eq!(s.stats().expired[EventClass::Movement.rank()], 1);
        // Purging without sending.
        s.handle_enqueue(t0, msg(EventClass::Chat, 1, None, 3))
            .unwrap();
        s.handle_timeout(late);
        assert!(s.is_empty());
    }

    #[test]
    fn bounds_evict_droppable_and_refuse_reliable() {
        let now = Instant::now();
        let mut s = Scheduler::new(SchedulerConfig {
            capacity: [2, 2, 2, 2, 2],
            ..SchedulerConfig::default()
        });
        for tag in 0..5 {
            s.handle_enqueue(now, msg(EventClass::Bulk, 1, None, tag))
                .unwrap();
        }
        assert_eq!(s.len_of(EventClass::Bulk), 2);
        assert_eq!(s.stats().evicted[EventClass::Bulk.rank()], 3);
        assert_eq!(
            drain(&mut s, now).iter().map(|m| m.2).collect::<Vec<_>>(),
            vec![3, 4],
            "oldest evicted"
        );
        s.handle_enqueue(now, msg(EventClass::Critical, 1, None, 0))
            .unwrap();
        s.handle_enqueue(now, msg(EventClass::Critical, 1, None, 1))
            .unwrap();
        assert_eq!(
            s.handle_enqueue(now, msg(EventClass::Critical, 1, None, 2)),
            Err(Overflow {
                class: EventClass::Critical,
                capacity: 2
            })
        );
    }

    #[test]
    fn a_departed_session_is_forgotten() {
        let now = Instant::now();
        let mut s = Scheduler::new(SchedulerConfig::default());
        s.handle_enqueue(now, msg(EventClass::State, 1, None, 1))
            .unwrap();
        s.handle_enqueue(now, msg(EventClass::State, 2, None, 2))
            .unwrap();
        s.handle_session_gone(SessionId(1));
        assert_eq!(drain(&mut s, now), vec![(EventClass::State, 2, 2)]);
        assert!(s.is_empty());
    }
}
