//! Which relay carries each session, and which channels each relay must be sent
//! (pure: no I/O, no clock; time is an argument).
//!
//! A relay must receive a channel's batches while at least one session attached
//! to it receives the channel. The engine announces each session's channels (its
//! `Subscriptions` outputs); [`Routes`] keeps those announced sets per session,
//! whether or not the session is attached right now, and keeps each relay's
//! per-channel count equal to the sum of the announced sets of its attached
//! sessions, whatever order joins, moves between relays, resumes and kicks come
//! in. So a relay is never dropped from a channel one of its sessions still
//! receives, and never kept on one none of them does (property-tested).
//!
//! A relay whose link drops leaves its sessions *orphaned*: they keep their
//! state in the engine for a grace period, during which any relay may resume
//! them; [`Routes::poll_expired`] names those whose grace ran out.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use skylane_proto::{ChannelCursor, ChannelId, SessionId};

/// A relay link's id in the origin (one per connection).
pub type LinkId = u64;

#[derive(Debug, Default)]
struct RelayRoutes {
    /// Attached sessions receiving each channel.
    channels: HashMap<ChannelId, u32>,
    sessions: HashSet<SessionId>,
    /// The relay asked for the world's spectator feed.
    feed: bool,
}

/// Sessions, relays and channels; see the module header.
#[derive(Debug, Default)]
pub struct Routes {
    relays: HashMap<LinkId, RelayRoutes>,
    session_relay: HashMap<SessionId, LinkId>,
    orphans: HashMap<SessionId, Instant>,
    /// Each session's channels, with the sequence number its subscription
    /// started after (what a resuming session is owed at least).
    announced: HashMap<SessionId, HashMap<ChannelId, u64>>,
}

impl Routes {
    /// No relays, no sessions.
    pub fn new() -> Self {
        Self::default()
    }

    /// A relay link came up.
    pub fn handle_relay_up(&mut self, id: LinkId) {
        self.relays.entry(id).or_default();
    }

    /// A relay link went down at `now`: its sessions are orphaned (returned).
    pub fn handle_relay_down(&mut self, now: Instant, id: LinkId) -> Vec<SessionId> {
        let Some(r) = self.relays.remove(&id) else {
            return Vec::new();
        };
        let mut orphaned: Vec<SessionId> = r.sessions.into_iter().collect();
        orphaned.sort_unstable();
        for s in &orphaned {
            self.session_relay.remove(s);
            self.orphans.insert(*s, now);
        }
        orphaned
    }

    /// Binds `session` to relay `id` (a join, a resume, a move from another
    /// relay), counting its announced channels there. A relay whose link is
    /// already down (its last messages arrive after it) cannot carry it: the
    /// session is orphaned from `now`, so it expires unless resumed elsewhere.
    pub fn attach(&mut self, now: Instant, session: SessionId, id: LinkId) {
        if !self.relays.contains_key(&id) {
            self.detach(session);
            self.orphans.insert(session, now);
            return;
        }
        self.orphans.remove(&session);
        match self.session_relay.insert(session, id) {
            Some(old) if old == id => return,
            Some(old) => self.count(old, session, false),
            None => {}
        }
        self.count(id, session, true);
    }

    /// Unbinds `session` from its relay (it left, was kicked, or closed there).
    pub fn detach(&mut self, session: SessionId) {
        if let Some(id) = self.session_relay.remove(&session) {
            self.count(id, session, false);
        }
        self.orphans.remove(&session);
    }

    fn count(&mut self, id: LinkId, session: SessionId, add: bool) {
        let Some(r) = self.relays.get_mut(&id) else {
            return;
        };
        let channels = self.announced.get(&session);
        if add {
            r.sessions.insert(session);
            for c in channels.into_iter().flat_map(|m| m.keys()) {
                *r.channels.entry(*c).or_insert(0) += 1;
            }
        } else {
            r.sessions.remove(&session);
            for c in channels.into_iter().flat_map(|m| m.keys()) {
                dec(&mut r.channels, *c);
            }
        }
    }

    /// The engine announced channel changes for `session`. Returns the relay to
    /// tell, when the session is attached.
    pub fn handle_subscriptions(
        &mut self,
        session: SessionId,
        added: &[ChannelCursor],
        removed: &[ChannelId],
    ) -> Option<LinkId> {
        // Kept even while the session has no relay (orphaned, or kicked and
        // leaving): a resume re-counts it.
        let set = self.announced.entry(session).or_default();
        let mut gained: Vec<ChannelId> = Vec::new();
        for c in added {
            if let Entry::Vacant(v) = set.entry(c.channel) {
                v.insert(c.seq);
                gained.push(c.channel);
            }
        }
        let lost: Vec<ChannelId> = removed
            .iter()
            .copied()
            .filter(|c| set.remove(c).is_some())
            .collect();
        if set.is_empty() {
            self.announced.remove(&session);
        }
        let id = *self.session_relay.get(&session)?;
        if let Some(r) = self.relays.get_mut(&id) {
            for c in gained {
                *r.channels.entry(c).or_insert(0) += 1;
            }
            for c in lost {
                dec(&mut r.channels, c);
            }
        }
        Some(id)
    }

    /// The relay carrying `session`, if it is attached.
    pub fn relay_of(&self, session: SessionId) -> Option<LinkId> {
        self.session_relay.get(&session).copied()
    }

    /// Relays that must be sent `channel`, sorted.
    pub fn relays_for(&self, channel: ChannelId) -> Vec<LinkId> {
        let mut ids: Vec<LinkId> = self
            .relays
            .iter()
            .filter(|(_, r)| r.channels.get(&channel).is_some_and(|n| *n > 0))
            .map(|(id, _)| *id)
            .collect();
        ids.sort_unstable();
        ids
    }

    /// How many of relay `id`'s attached sessions receive `channel`.
    pub fn channel_count(&self, id: LinkId, channel: ChannelId) -> u32 {
        self.relays
            .get(&id)
            .and_then(|r| r.channels.get(&channel))
            .copied()
            .unwrap_or(0)
    }

    /// A session's announced channels with their subscription starts, sorted.
    pub fn announced(&self, session: SessionId) -> Vec<(ChannelId, u64)> {
        let mut v: Vec<(ChannelId, u64)> = self
            .announced
            .get(&session)
            .map(|m| m.iter().map(|(c, s)| (*c, *s)).collect())
            .unwrap_or_default();
        v.sort();
        v
    }

    /// Relay `id` wants the spectator feed (or no longer); returns whether it
    /// wanted it before.
    pub fn set_feed(&mut self, id: LinkId, on: bool) -> bool {
        self.relays
            .get_mut(&id)
            .map(|r| std::mem::replace(&mut r.feed, on))
            .unwrap_or(false)
    }

    /// Whether any relay wants the spectator feed.
    pub fn feed_wanted(&self) -> bool {
        self.relays.values().any(|r| r.feed)
    }

    /// Relays that want the spectator feed, sorted.
    pub fn feed_relays(&self) -> Vec<LinkId> {
        let mut ids: Vec<LinkId> = self
            .relays
            .iter()
            .filter(|(_, r)| r.feed)
            .map(|(id, _)| *id)
            .collect();
        ids.sort_unstable();
        ids
    }

    /// Orphans whose `grace` ran out at `now`: forgotten here (the caller
    /// removes them from the engine), returned sorted.
    pub fn poll_expired(&mut self, now: Instant, grace: Duration) -> Vec<SessionId> {
        let mut expired: Vec<SessionId> = self
            .orphans
            .iter()
            .filter(|(_, t)| now.saturating_duration_since(**t) >= grace)
            .map(|(s, _)| *s)
            .collect();
        expired.sort_unstable();
        for s in &expired {
            self.orphans.remove(s);
        }
        expired
    }

    /// Sessions attached to a relay or waiting for one.
    pub fn sessions(&self) -> usize {
        self.session_relay.len() + self.orphans.len()
    }

    /// Relay links up.
    pub fn relays(&self) -> usize {
        self.relays.len()
    }
}

fn dec(map: &mut HashMap<ChannelId, u32>, c: ChannelId) {
    if let Some(n) = map.get_mut(&c) {
        *n = n.saturating_sub(1);
        if *n == 0 {
            map.remove(&c);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cur(channel: ChannelId, seq: u64) -> ChannelCursor {
        ChannelCursor { channel, seq }
    }

    #[test]
    fn a_moved_session_takes_its_channels_along() {
        let t0 = Instant::now();
        let (s, cell) = (SessionId(1), ChannelId::Cell { x: 1, y: 2 });
        let mut r = Routes::new();
        r.handle_relay_up(10);
        r.handle_relay_up(20);
        r.attach(t0, s, 10);
        assert_eq!(
            r.handle_subscriptions(s, &[cur(ChannelId::World, 5), cur(cell, 7)], &[]),
            Some(10)
        );
        assert_eq!(r.relays_for(cell), vec![10]);
        r.attach(t0, s, 20);
        assert_eq!(r.relays_for(cell), vec![20]);
        assert_eq!(r.channel_count(10, ChannelId::World), 0);
        assert_eq!(r.announced(s), vec![(ChannelId::World, 5), (cell, 7)]);
        // Its relay drops: orphaned, then resumed elsewhere within the grace.
        assert_eq!(r.handle_relay_down(t0, 20), vec![s]);
        assert!(r.relays_for(cell).is_empty());
        assert_eq!(r.sessions(), 1);
        assert!(r
            .poll_expired(t0 + Duration::from_secs(1), Duration::from_secs(30))
            .is_empty());
        r.attach(t0, s, 10);
        assert_eq!(r.relays_for(cell), vec![10]);
        assert!(r
            .poll_expired(t0 + Duration::from_secs(60), Duration::from_secs(30))
            .is_empty());
    }

    #[test]
    fn orphans_expire_after_the_grace_and_leavers_are_forgotten() {
        let t0 = Instant::now();
        let mut r = Routes::new();
        r.handle_relay_up(1);
        r.attach(t0, SessionId(1), 1);
        r.attach(t0, SessionId(2), 1);
        r.handle_subscriptions(SessionId(2), &[cur(ChannelId::World, 0)], &[]);
        r.detach(SessionId(1));
        assert_eq!(r.sessions(), 1);
        r.handle_relay_down(t0, 1);
        let grace = Duration::from_secs(30);
        assert_eq!(r.poll_expired(t0 + grace, grace), vec![SessionId(2)]);
        assert_eq!(r.sessions(), 0);
        assert!(!r.set_feed(1, true), "gone relays want nothing");
        // A join that arrives after its relay's link went down is orphaned.
        r.attach(t0, SessionId(3), 1);
        assert_eq!(r.relay_of(SessionId(3)), None);
        assert_eq!(r.poll_expired(t0 + grace, grace), vec![SessionId(3)]);
        assert!(!r.feed_wanted());
    }
}
