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

use std::collections::VecDeque;

use rustc_hash::FxHashMap as HashMap;
use skylane_proto::{Action, EventClass, SessionId};

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

#[derive(Debug)]
struct Feed {
    origin: OriginId,
    acked: bool,
    pending: VecDeque<Action>,
    /// Told to go away (drain): its leaving is a move, not a disconnect.
    sent_away: bool,
    /// Reliable actions forwarded on the current link and not yet answered.
    in_flight: VecDeque<u64>,
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

    /// A player session (new, or resumed on a new connection) towards `origin`:
    /// a fresh feed, not acknowledged yet (a resumed session's client re-sends
    /// what it has no outcome for).
    pub fn handle_open(&mut self, session: SessionId, origin: OriginId) {
        self.feeds.insert(
            session,
            Feed {
                origin,
                acked: false,
                pending: VecDeque::new(),
                sent_away: false,
                in_flight: VecDeque::new(),
            },
        );
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
        if feed.acked && link_up {
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
    pub fn handle_forwarded(&mut self, session: SessionId, class: EventClass, seq: u64) {
        let Some(feed) = self.feeds.get_mut(&session) else {
            return;
        };
        if class == EventClass::Movement {
            return;
        }
        if feed.in_flight.len() >= self.limit {
            feed.in_flight.pop_front();
        }
        feed.in_flight.push_back(seq);
    }

    /// Has the origin acknowledged the session?
    pub fn is_acked(&self, session: SessionId) -> bool {
        self.feeds.get(&session).is_some_and(|f| f.acked)
    }

    /// The origin acknowledged the session: the buffered actions to forward, in
    /// order (empty when it was already acknowledged).
    pub fn handle_acked(&mut self, session: SessionId) -> Vec<Action> {
        match self.feeds.get_mut(&session) {
            Some(f) if !f.acked => {
                f.acked = true;
                f.pending.drain(..).collect()
            }
            _ => Vec::new(),
        }
    }

    /// An action's outcome arrived.
    pub fn handle_result(&mut self, session: SessionId, seq: u64) {
        if let Some(f) = self.feeds.get_mut(&session) {
            if let Some(i) = f.in_flight.iter().position(|s| *s == seq) {
                f.in_flight.remove(i);
            }
        }
    }

    /// `origin`'s link failed: its sessions wait for the next link, and the
    /// actions in flight on it have unknown outcomes (returned once each).
    pub fn handle_link_down(&mut self, origin: OriginId) -> Vec<(SessionId, u64)> {
        let mut unknown = Vec::new();
        for (s, f) in &mut self.feeds {
            if f.origin == origin {
                f.acked = false;
                unknown.extend(f.in_flight.drain(..).map(|seq| (*s, seq)));
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
        f.in_flight.drain(..).collect()
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
    const S: SessionId = SessionId(7);

    #[test]
    fn actions_wait_for_the_acknowledgement_then_go_in_order() {
        let mut u = Upstream::new(2);
        u.handle_open(S, O);
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
        u.handle_open(S, O);
        u.handle_open(SessionId(8), OriginId(2));
        u.handle_acked(S);
        u.handle_forwarded(S, EventClass::State, 1);
        u.handle_forwarded(S, EventClass::Movement, 2);
        u.handle_forwarded(S, EventClass::Critical, 3);
        u.handle_result(S, 1);
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
        u.handle_open(S, O);
        assert!(!u.sent_away(S));
        u.handle_sent_away(S);
        assert!(u.sent_away(S));
        u.handle_open(S, O);
        assert!(!u.sent_away(S));
    }
}
