//! Each player session's feed towards its origin (pure: no I/O, no clock).
//!
//! A session is *opened* on its origin's link and *acknowledged* by the origin's
//! first `Subscriptions` for it. Until then its actions wait here (at most
//! `limit`, oldest first); a full buffer refuses the newest. Once acknowledged,
//! actions are forwarded at once, and each reliable one (every class but
//! movement) is remembered until its outcome arrives, so that when the link fails
//! the client can be told that those outcomes are unknown, each exactly once.
//! A link coming up re-opens every session of its origin (their acknowledgement
//! is owed again).
//!
//! The shell asks [`Upstream::handle_action`] what to do with an action and acts
//! on the answer; it reports what it did with [`Upstream::handle_forwarded`].
//!
//! Zoned worlds: a feed names the world *record* it is open on (the world,
//! or the zone holding the player's avatar). While an avatar moves to another
//! zone, the old zone answers the session's actions `Moved` (nothing
//! applied): [`Upstream::handle_result`] keeps each such action (that is why
//! actions in flight are kept whole) and holds the feed, so newer actions wait
//! behind it; when the origin says where the session went
//! ([`Upstream::handle_zone_moved`]) the feed re-opens there and, once
//! acknowledged, sends what it held, in order. The new zone carries the
//! session's replay window, so each is applied there at most once; the client
//! sees one outcome per action.

use std::collections::VecDeque;

use rustc_hash::FxHashMap as HashMap;
use skylane_proto::{Action, ActionResult, EventClass, Outcome, RejectCode, SessionId, WorldId};

use crate::routing::OriginId;

/// What to do with a player's action.
#[derive(Debug, Clone, PartialEq)]
pub enum Route {
    /// Send it on the origin link now (then call [`Upstream::handle_forwarded`]).
    Forward(Action),
    /// Kept until the origin acknowledges the session.
    Buffered,
    /// The buffer is full: refuse it (its sequence number).
    Refused(u64),
    /// The session is not a player session held here: drop it.
    Unknown,
}

/// What to do with an action's outcome from the origin.
#[derive(Debug, Clone, PartialEq)]
pub enum ResultFate {
    /// To the client.
    Deliver,
    /// The avatar is moving between zones: the action is held until the
    /// session is open where it went (nothing to tell the client yet).
    Held,
    /// The avatar moved and the feed is open where it went: send the action
    /// there now.
    Resend(Action),
}

/// What a zone move means for a feed.
#[derive(Debug, Clone, PartialEq)]
pub enum ZoneMove {
    /// Open the session on the record's owner (the held actions go once it
    /// acknowledges).
    Reopen,
    /// The session stays where it is (its avatar came back): send the held
    /// actions there now, in order.
    Release(Vec<Action>),
    /// The record has no owner right now: the feed waits for one (a world
    /// move re-opens it).
    Wait,
}

#[derive(Debug)]
struct Feed {
    origin: OriginId,
    /// The world record the session is open on.
    record: WorldId,
    acked: bool,
    pending: VecDeque<Action>,
    /// Told to go away (drain): its leaving is a move, not a disconnect.
    sent_away: bool,
    /// Reliable actions forwarded and not yet answered, with the record
    /// each went to.
    in_flight: VecDeque<(WorldId, Action)>,
    /// An action came back `Moved`: hold newer ones until the session is
    /// open where its avatar went.
    moving: bool,
}

/// Every player session's feed towards its origin.
#[derive(Debug)]
pub struct Upstream {
    limit: usize,
    feeds: HashMap<SessionId, Feed>,
}

impl Upstream {
    /// Feeds that buffer and remember at most `limit` actions each
    /// (`Limits::pending_actions`).
    pub fn new(limit: usize) -> Self {
        Self {
            limit: limit.max(1),
            feeds: HashMap::default(),
        }
    }

    /// A player session (new, or resumed on a new connection) towards
    /// `origin`, open on world record `record`: a fresh feed, not
    /// acknowledged yet (a resumed session's client re-sends what it has no
    /// outcome for).
    pub fn handle_open(&mut self, session: SessionId, origin: OriginId, record: WorldId) {
        self.feeds.insert(
            session,
            Feed {
                origin,
                record,
                acked: false,
                pending: VecDeque::new(),
                sent_away: false,
                in_flight: VecDeque::new(),
                moving: false,
            },
        );
    }

    /// The world record a session is open on.
    pub fn record_of(&self, session: SessionId) -> Option<WorldId> {
        self.feeds.get(&session).map(|f| f.record)
    }

    /// The session is opened again on a new link: its acknowledgement is owed.
    pub fn handle_reopen(&mut self, session: SessionId) {
        if let Some(f) = self.feeds.get_mut(&session) {
            f.acked = false;
        }
    }

    /// What to do with an action; `link_up` says whether the origin's link is
    /// connected now.
    pub fn handle_action(&mut self, session: SessionId, action: Action, link_up: bool) -> Route {
        let Some(feed) = self.feeds.get_mut(&session) else {
            return Route::Unknown;
        };
        if feed.acked && link_up && !feed.moving {
            return Route::Forward(action);
        }
        if feed.pending.len() >= self.limit {
            return Route::Refused(action.seq);
        }
        feed.pending.push_back(action);
        Route::Buffered
    }

    /// An action was handed to the link: a reliable one waits for its outcome
    /// (the oldest is forgotten beyond the limit).
    pub fn handle_forwarded(&mut self, session: SessionId, action: Action) {
        let Some(feed) = self.feeds.get_mut(&session) else {
            return;
        };
        if action.class == EventClass::Movement {
            return;
        }
        if feed.in_flight.len() >= self.limit {
            feed.in_flight.pop_front();
        }
        feed.in_flight.push_back((feed.record, action));
    }

    /// Has the origin acknowledged the session?
    pub fn is_acked(&self, session: SessionId) -> bool {
        self.feeds.get(&session).is_some_and(|f| f.acked)
    }

    /// The origin acknowledged the session: the buffered actions to forward, in
    /// order (empty when it was already acknowledged, or while held for a
    /// zone move).
    pub fn handle_acked(&mut self, session: SessionId) -> Vec<Action> {
        match self.feeds.get_mut(&session) {
            Some(f) if !f.acked => {
                f.acked = true;
                if f.moving {
                    return Vec::new();
                }
                f.pending.drain(..).collect()
            }
            _ => Vec::new(),
        }
    }

    /// An action's outcome arrived: what to do with it.
    pub fn handle_result(&mut self, session: SessionId, result: &ActionResult) -> ResultFate {
        let Some(f) = self.feeds.get_mut(&session) else {
            return ResultFate::Deliver;
        };
        let Some(i) = f.in_flight.iter().position(|(_, a)| a.seq == result.seq) else {
            // Forgotten (beyond the limit) or never forwarded: the client
            // gets the outcome as it is.
            return ResultFate::Deliver;
        };
        let Some((sent_to, action)) = f.in_flight.remove(i) else {
            return ResultFate::Deliver;
        };
        let moved = matches!(
            result.outcome,
            Outcome::Rejected {
                code: RejectCode::Moved,
                ..
            }
        );
        if !moved {
            return ResultFate::Deliver;
        }
        if sent_to == f.record {
            // The first word of a move: hold this and what follows until
            // the origin says where the avatar went.
            f.moving = true;
        } else if f.acked && !f.moving {
            // Late: the feed is open where the avatar went already.
            return ResultFate::Resend(action);
        }
        let at = f.pending.partition_point(|a| a.seq < action.seq);
        f.pending.insert(at, action);
        if f.pending.len() > self.limit {
            // Bounded like any buffer: the newest waits no longer.
            f.pending.pop_back();
        }
        ResultFate::Held
    }

    /// The origin says the session's avatar is now in zone record `record`,
    /// owned by `owner` (`None`: no owner right now).
    pub fn handle_zone_moved(
        &mut self,
        session: SessionId,
        owner: Option<OriginId>,
        record: WorldId,
    ) -> ZoneMove {
        let Some(f) = self.feeds.get_mut(&session) else {
            return ZoneMove::Wait;
        };
        f.moving = false;
        if record == f.record && owner == Some(f.origin) {
            if !f.acked {
                return ZoneMove::Release(Vec::new());
            }
            return ZoneMove::Release(f.pending.drain(..).collect());
        }
        f.record = record;
        f.acked = false;
        match owner {
            Some(o) => {
                f.origin = o;
                ZoneMove::Reopen
            }
            None => ZoneMove::Wait,
        }
    }

    /// `origin`'s link failed: its sessions wait for the next link, and the
    /// actions in flight on it have unknown outcomes (returned once each).
    pub fn handle_link_down(&mut self, origin: OriginId) -> Vec<(SessionId, u64)> {
        let mut unknown = Vec::new();
        for (s, f) in &mut self.feeds {
            if f.origin == origin {
                f.acked = false;
                unknown.extend(f.in_flight.drain(..).map(|(_, a)| (*s, a.seq)));
            }
        }
        unknown.sort_unstable();
        unknown
    }

    /// The session's world moved to `origin` (a failover or a handover): its
    /// feed follows, unacknowledged until the new owner acknowledges it; the
    /// actions in flight towards the old owner have unknown outcomes
    /// (returned once each). Buffered actions stay buffered.
    pub fn handle_moved(&mut self, session: SessionId, origin: OriginId) -> Vec<u64> {
        let Some(f) = self.feeds.get_mut(&session) else {
            return Vec::new();
        };
        f.origin = origin;
        f.acked = false;
        f.in_flight.drain(..).map(|(_, a)| a.seq).collect()
    }

    /// The sessions of `origin` (to re-open when its link comes up), sorted.
    pub fn sessions_of(&self, origin: OriginId) -> Vec<SessionId> {
        let mut ids: Vec<SessionId> = self
            .feeds
            .iter()
            .filter(|(_, f)| f.origin == origin)
            .map(|(s, _)| *s)
            .collect();
        ids.sort_unstable();
        ids
    }

    /// The session was told to go away (drain).
    pub fn handle_sent_away(&mut self, session: SessionId) {
        if let Some(f) = self.feeds.get_mut(&session) {
            f.sent_away = true;
        }
    }

    /// Whether the session was told to go away.
    pub fn sent_away(&self, session: SessionId) -> bool {
        self.feeds.get(&session).is_some_and(|f| f.sent_away)
    }

    /// The session ended: forgets it; its origin, if it was held.
    pub fn handle_close(&mut self, session: SessionId) -> Option<OriginId> {
        self.feeds.remove(&session).map(|f| f.origin)
    }

    /// The origin of a session held here.
    pub fn origin_of(&self, session: SessionId) -> Option<OriginId> {
        self.feeds.get(&session).map(|f| f.origin)
    }

    /// Player sessions held.
    pub fn sessions(&self) -> impl Iterator<Item = SessionId> + '_ {
        self.feeds.keys().copied()
    }

    /// Actions buffered for a session.
    pub fn pending(&self, session: SessionId) -> usize {
        self.feeds.get(&session).map_or(0, |f| f.pending.len())
    }

    /// Reliable actions in flight for a session.
    pub fn in_flight(&self, session: SessionId) -> usize {
        self.feeds.get(&session).map_or(0, |f| f.in_flight.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use skylane_proto::Payload;

    fn action(seq: u64, class: EventClass) -> Action {
        Action {
            seq,
            class,
            client_time_us: 0,
            reads: Vec::new(),
            payload: Payload::default(),
        }
    }

    const O: OriginId = OriginId(1);
    const W: WorldId = WorldId(1);

    fn applied(seq: u64) -> ActionResult {
        ActionResult {
            seq,
            outcome: Outcome::Applied { tick: 1 },
        }
    }

    fn moved(seq: u64) -> ActionResult {
        ActionResult {
            seq,
            outcome: Outcome::Rejected {
                code: RejectCode::Moved,
                detail: String::new(),
            },
        }
    }
    const S: SessionId = SessionId(7);

    #[test]
    fn actions_wait_for_the_acknowledgement_then_go_in_order() {
        let mut u = Upstream::new(2);
        u.handle_open(S, O, W);
        assert_eq!(
            u.handle_action(S, action(1, EventClass::State), true),
            Route::Buffered
        );
        assert_eq!(
            u.handle_action(S, action(2, EventClass::State), true),
            Route::Buffered
        );
        assert_eq!(
            u.handle_action(S, action(3, EventClass::State), true),
            Route::Refused(3)
        );
        let flushed: Vec<u64> = u.handle_acked(S).iter().map(|a| a.seq).collect();
        assert_eq!(flushed, vec![1, 2]);
        assert!(u.handle_acked(S).is_empty(), "acknowledged once");
        assert!(matches!(
            u.handle_action(S, action(4, EventClass::State), true),
            Route::Forward(_)
        ));
        // Link down: buffered again.
        assert_eq!(
            u.handle_action(S, action(5, EventClass::State), false),
            Route::Buffered
        );
    }

    #[test]
    fn a_failed_link_reports_each_reliable_action_in_flight_once() {
        let mut u = Upstream::new(8);
        u.handle_open(S, O, W);
        u.handle_open(SessionId(8), OriginId(2), W);
        u.handle_acked(S);
        u.handle_forwarded(S, action(1, EventClass::State));
        u.handle_forwarded(S, action(2, EventClass::Movement));
        u.handle_forwarded(S, action(3, EventClass::Critical));
        assert_eq!(u.handle_result(S, &applied(1)), ResultFate::Deliver);
        assert_eq!(u.handle_link_down(O), vec![(S, 3)]);
        assert!(u.handle_link_down(O).is_empty());
        assert_eq!(u.sessions_of(O), vec![S]);
        assert_eq!(u.handle_close(S), Some(O));
        assert_eq!(u.origin_of(S), None);
        assert_eq!(
            u.handle_action(S, action(9, EventClass::State), true),
            Route::Unknown
        );
    }

    #[test]
    fn going_away_is_remembered_until_reopened() {
        let mut u = Upstream::new(1);
        u.handle_open(S, O, W);
        assert!(!u.sent_away(S));
        u.handle_sent_away(S);
        assert!(u.sent_away(S));
        u.handle_open(S, O, W);
        assert!(!u.sent_away(S));
    }

    fn seqs(v: &[Action]) -> Vec<u64> {
        v.iter().map(|a| a.seq).collect()
    }

    const Z1: WorldId = WorldId(3);
    const O2: OriginId = OriginId(2);

    #[test]
    fn actions_answered_moved_follow_the_avatar_in_order_once() {
        let mut u = Upstream::new(8);
        u.handle_open(S, O, W);
        u.handle_acked(S);
        for seq in 1..=3 {
            u.handle_forwarded(S, action(seq, EventClass::State));
        }
        // 1 applied; 2 answered Moved: held, and 4 (new) waits behind it.
        assert_eq!(u.handle_result(S, &applied(1)), ResultFate::Deliver);
        assert_eq!(u.handle_result(S, &moved(2)), ResultFate::Held);
        assert_eq!(
            u.handle_action(S, action(4, EventClass::State), true),
            Route::Buffered
        );
        // The origin says where it went: re-open there; 3's Moved comes late
        // (before the new owner acknowledges): held too.
        assert_eq!(u.handle_zone_moved(S, Some(O2), Z1), ZoneMove::Reopen);
        assert_eq!(u.record_of(S), Some(Z1));
        assert_eq!(u.origin_of(S), Some(O2));
        assert_eq!(u.handle_result(S, &moved(3)), ResultFate::Held);
        assert_eq!(seqs(&u.handle_acked(S)), vec![2, 3, 4]);
        // An action forwarded to the old zone answered Moved after the new
        // owner acknowledged: sent on at once.
        u.handle_forwarded(S, action(5, EventClass::State));
        let mut v = Upstream::new(8);
        v.handle_open(S, O, W);
        v.handle_acked(S);
        v.handle_forwarded(S, action(7, EventClass::State));
        assert_eq!(v.handle_zone_moved(S, Some(O2), Z1), ZoneMove::Reopen);
        assert!(v.handle_acked(S).is_empty());
        assert_eq!(
            v.handle_result(S, &moved(7)),
            ResultFate::Resend(action(7, EventClass::State))
        );
        // And a result for an action it never saw goes to the client.
        assert_eq!(v.handle_result(S, &moved(70)), ResultFate::Deliver);
    }

    #[test]
    fn an_avatar_that_comes_back_releases_what_was_held_there() {
        let mut u = Upstream::new(8);
        u.handle_open(S, O, W);
        u.handle_acked(S);
        u.handle_forwarded(S, action(1, EventClass::State));
        assert_eq!(u.handle_result(S, &moved(1)), ResultFate::Held);
        assert_eq!(
            u.handle_action(S, action(2, EventClass::State), true),
            Route::Buffered
        );
        // The handoff was refused: the session is where it was.
        let released = u.handle_zone_moved(S, Some(O), W);
        assert_eq!(
            released,
            ZoneMove::Release(vec![
                action(1, EventClass::State),
                action(2, EventClass::State)
            ])
        );
        assert!(matches!(
            u.handle_action(S, action(3, EventClass::State), true),
            Route::Forward(_)
        ));
        // A zone with no owner right now: the feed waits.
        assert_eq!(u.handle_zone_moved(S, None, Z1), ZoneMove::Wait);
        assert_eq!(u.record_of(S), Some(Z1));
        assert_eq!(
            u.handle_action(S, action(4, EventClass::State), true),
            Route::Buffered
        );
    }

    #[test]
    fn held_actions_are_bounded() {
        let mut u = Upstream::new(2);
        u.handle_open(S, O, W);
        u.handle_acked(S);
        for seq in 1..=2 {
            u.handle_forwarded(S, action(seq, EventClass::State));
        }
        assert_eq!(u.handle_result(S, &moved(2)), ResultFate::Held);
        assert_eq!(u.handle_result(S, &moved(1)), ResultFate::Held);
        assert_eq!(
            u.handle_action(S, action(3, EventClass::State), true),
            Route::Refused(3)
        );
        assert_eq!(u.pending(S), 2);
    }
}
