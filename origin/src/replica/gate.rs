//! [`Gate`]: the primary's side of replication, pure.
//!
//! Every output the world produces is held with the tick it belongs to and
//! released once that tick is *durable*: acknowledged by `min_acks` of the
//! standbys following the world (all of them if fewer follow; none if none
//! does, and then the world runs unreplicated). Standbys named for the world
//! and not following yet ([`Gate::expect_standbys`]) count as following
//! until a deadline tick: a new world's first outputs wait for its standby
//! to connect rather than leave unreplicated (and be lost to a failover). Each acknowledgement carries
//! the standby's own state hash, compared with the primary's: a mismatch marks
//! the world suspect, and from then on outputs flagged critical are released
//! as [`Released::Unconfirmed`] (the shell answers them "unknown") while the
//! rest of the world keeps flowing.

use std::collections::{BTreeMap, VecDeque};

use skylane_proto::Hash32;

/// Gate settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GateConfig {
    /// Standbys that must acknowledge a tick before its outputs leave.
    pub min_acks: usize,
    /// A standby whose acknowledgements trail the primary's tick by more than
    /// this is named by [`Gate::poll_lagging`] (the shell disconnects it; it
    /// comes back from a snapshot). Also bounds the primary's hash memory.
    pub max_lag_ticks: u64,
}

impl Default for GateConfig {
    fn default() -> Self {
        Self {
            min_acks: 1,
            max_lag_ticks: 300,
        }
    }
}

/// What an acknowledgement showed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckVerdict {
    /// The standby reached the primary's state.
    Agreed,
    /// The standby reached another state at `tick`.
    Diverged {
        /// Tick.
        tick: u64,
        /// The primary's hash.
        primary: Hash32,
        /// The standby's hash.
        standby: Hash32,
    },
    /// For a tick the primary no longer remembers, or from an unknown standby:
    /// counted, not compared.
    Unchecked,
}

/// An output leaving the gate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Released<T> {
    /// Durable (and verified, if a standby follows).
    Confirmed(T),
    /// A critical output of a suspect world: it must not be confirmed.
    Unconfirmed(T),
}

#[derive(Debug, Clone)]
struct Standby {
    node: String,
    acked: u64,
}

/// The primary's replication bookkeeping for one world (see the module docs).
#[derive(Debug)]
pub struct Gate<T> {
    cfg: GateConfig,
    standbys: BTreeMap<u64, Standby>,
    held: VecDeque<(u64, bool, T)>,
    /// The primary's hash of recent ticks, oldest first.
    hashes: VecDeque<(u64, Hash32)>,
    tick: u64,
    verified: u64,
    suspect: Option<(u64, String)>,
    /// Standbys named and counted as following until tick `.1`; the tick
    /// the expectation began at (`.2`: nothing after it is durable while
    /// they are awaited).
    expected: Option<(usize, u64, u64)>,
}

impl<T> Gate<T> {
    /// A gate at `tick` (the world's current tick) with no standby yet.
    pub fn new(cfg: GateConfig, tick: u64) -> Self {
        Self {
            cfg,
            standbys: BTreeMap::new(),
            held: VecDeque::new(),
            hashes: VecDeque::new(),
            tick,
            verified: 0,
            suspect: None,
            expected: None,
        }
    }

    /// `n` standbys are named for the world: until tick `until` they count
    /// as following whether or not they do yet, so ticks wait for their
    /// acknowledgements; from `until` on, only those following count (a
    /// standby that never came does not stop the world).
    pub fn expect_standbys(&mut self, n: usize, until: u64) {
        self.expected = (n > 0).then_some((n, until, self.tick));
    }

    /// Whether named standbys are still awaited (see
    /// [`Gate::expect_standbys`]).
    pub fn awaiting(&self) -> bool {
        self.expected
            .is_some_and(|(n, until, _)| self.tick < until && self.standbys.len() < n)
    }

    /// Whether named standbys were awaited until the deadline and did not
    /// all come (the world runs with fewer than it was given).
    pub fn expectation_lapsed(&self) -> bool {
        self.expected
            .is_some_and(|(n, until, _)| self.tick >= until && self.standbys.len() < n)
    }

    /// `true` once, when the expectation lapsed (for a log line and a
    /// metric); the gate stops awaiting anyone.
    pub fn poll_lapsed(&mut self) -> bool {
        let lapsed = self.expectation_lapsed();
        if lapsed {
            self.expected = None;
        }
        lapsed
    }

    /// Acknowledgements a tick needs now.
    pub fn required(&self) -> usize {
        let following = self.standbys.len();
        let counted = match self.expected {
            Some((n, until, _)) if self.tick < until => following.max(n),
            _ => following,
        };
        self.cfg.min_acks.min(counted)
    }

    /// The highest tick that is durable.
    pub fn durable(&self) -> u64 {
        let need = self.required();
        if need == 0 {
            return u64::MAX;
        }
        let mut acked: Vec<u64> = self.standbys.values().map(|s| s.acked).collect();
        acked.sort_unstable_by(|a, b| b.cmp(a));
        match acked.get(need - 1) {
            Some(t) => *t,
            // Fewer follow than are awaited: nothing since the wait began.
            None => self.expected.map_or(0, |(_, _, from)| from),
        }
    }

    /// A standby (`id`, the shell's handle for its stream) starts following at
    /// `tick` (the snapshot it was sent).
    pub fn handle_standby_up(&mut self, id: u64, node: &str, tick: u64) {
        self.standbys.insert(
            id,
            Standby {
                node: node.to_owned(),
                acked: tick,
            },
        );
    }

    /// A standby stopped following (its stream ended, or it was cut).
    pub fn handle_standby_down(&mut self, id: u64) {
        self.standbys.remove(&id);
    }

    /// The primary finished `tick` with `hash`.
    pub fn handle_tick(&mut self, tick: u64, hash: Hash32) {
        self.tick = tick;
        self.hashes.push_back((tick, hash));
        while self.hashes.len() as u64 > self.cfg.max_lag_ticks.max(1) {
            self.hashes.pop_front();
        }
    }

    /// A standby acknowledged `tick` with `hash`.
    pub fn handle_ack(&mut self, id: u64, tick: u64, hash: Hash32) -> AckVerdict {
        let Some(s) = self.standbys.get_mut(&id) else {
            return AckVerdict::Unchecked;
        };
        s.acked = s.acked.max(tick);
        let node = s.node.clone();
        let Some(&(_, mine)) = self.hashes.iter().find(|(t, _)| *t == tick) else {
            return AckVerdict::Unchecked;
        };
        if mine == hash {
            self.verified = self.verified.max(tick);
            AckVerdict::Agreed
        } else {
            self.suspect.get_or_insert((tick, node));
            AckVerdict::Diverged {
                tick,
                primary: mine,
                standby: hash,
            }
        }
    }

    /// Marks the world suspect (a standby reported divergence evidence).
    pub fn handle_divergence(&mut self, tick: u64, standby: &str) {
        self.suspect.get_or_insert((tick, standby.to_owned()));
    }

    /// Holds `item`, produced for `tick` (`critical`: an outcome that needs a
    /// second server's agreement to be confirmed).
    pub fn hold(&mut self, tick: u64, critical: bool, item: T) {
        self.held.push_back((tick, critical, item));
    }

    /// The next output that may leave, in the order held.
    pub fn poll_released(&mut self) -> Option<Released<T>> {
        let durable = self.durable();
        let (tick, _, _) = self.held.front()?;
        if *tick > durable {
            return None;
        }
        let (tick, critical, item) = self.held.pop_front()?;
        let unverified = self.suspect.as_ref().is_some_and(|(t, _)| *t <= tick);
        Some(if critical && unverified {
            Released::Unconfirmed(item)
        } else {
            Released::Confirmed(item)
        })
    }

    /// A standby that trails by more than `max_lag_ticks`: forgotten here, and
    /// the shell should disconnect it.
    pub fn poll_lagging(&mut self) -> Option<u64> {
        let limit = self.tick.saturating_sub(self.cfg.max_lag_ticks);
        let id = self
            .standbys
            .iter()
            .find(|(_, s)| s.acked < limit)
            .map(|(id, _)| *id)?;
        self.standbys.remove(&id);
        Some(id)
    }

    /// Outputs held.
    pub fn held(&self) -> usize {
        self.held.len()
    }

    /// Standbys following.
    pub fn standbys(&self) -> usize {
        self.standbys.len()
    }

    /// Each following standby's node and last acknowledged tick.
    pub fn followers(&self) -> Vec<(String, u64)> {
        self.standbys
            .values()
            .map(|s| (s.node.clone(), s.acked))
            .collect()
    }

    /// The highest tick a standby re-executed to the primary's hash.
    pub fn verified(&self) -> u64 {
        self.verified
    }

    /// The first divergent tick and the standby that saw it, if any.
    pub fn suspect(&self) -> Option<&(u64, String)> {
        self.suspect.as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn h(n: u8) -> Hash32 {
        Hash32([n; 32])
    }

    fn drain(g: &mut Gate<u32>) -> Vec<Released<u32>> {
        std::iter::from_fn(|| g.poll_released()).collect()
    }

    #[test]
    fn without_standbys_outputs_leave_at_once() {
        let mut g = Gate::new(GateConfig::default(), 0);
        g.hold(1, true, 7);
        assert_eq!(drain(&mut g), vec![Released::Confirmed(7)]);
    }

    #[test]
    fn outputs_wait_for_a_named_standby_until_the_deadline() {
        let mut g = Gate::new(GateConfig::default(), 0);
        g.expect_standbys(1, 10);
        assert!(g.awaiting());
        g.hold(1, true, 1);
        g.handle_tick(1, h(1));
        assert!(drain(&mut g).is_empty(), "held until the standby follows");
        // It connects (from the snapshot at tick 1) and acknowledges.
        g.handle_standby_up(7, "b", 1);
        assert!(!g.awaiting());
        assert_eq!(drain(&mut g), vec![Released::Confirmed(1)]);
        g.hold(2, false, 2);
        g.handle_tick(2, h(2));
        assert!(drain(&mut g).is_empty());
        g.handle_ack(7, 2, h(2));
        assert_eq!(drain(&mut g), vec![Released::Confirmed(2)]);
        assert!(!g.expectation_lapsed());
        // A standby that never comes holds the world only until the deadline.
        let mut g = Gate::new(GateConfig::default(), 0);
        g.expect_standbys(1, 3);
        for t in 1..=2u64 {
            g.hold(t, true, t as u32);
            g.handle_tick(t, h(t as u8));
        }
        assert!(drain(&mut g).is_empty());
        g.handle_tick(3, h(3));
        assert!(g.expectation_lapsed());
        assert!(g.poll_lapsed() && !g.poll_lapsed(), "reported once");
        assert_eq!(
            drain(&mut g),
            vec![Released::Confirmed(1), Released::Confirmed(2)],
            "then the world runs unreplicated"
        );
        // Nothing named, nothing awaited.
        let mut g = Gate::<u32>::new(GateConfig::default(), 5);
        g.expect_standbys(0, 100);
        assert!(!g.awaiting() && g.required() == 0);
    }

    #[test]
    fn a_tick_leaves_when_enough_standbys_agreed() {
        let cfg = GateConfig {
            min_acks: 2,
            max_lag_ticks: 100,
        };
        let mut g = Gate::new(cfg, 0);
        g.handle_standby_up(1, "b", 0);
        g.handle_standby_up(2, "c", 0);
        g.hold(1, false, 10);
        g.hold(1, true, 11);
        g.handle_tick(1, h(1));
        g.hold(2, false, 20);
        g.handle_tick(2, h(2));
        assert!(drain(&mut g).is_empty());
        assert_eq!(g.handle_ack(1, 2, h(2)), AckVerdict::Agreed);
        assert!(drain(&mut g).is_empty(), "one of two");
        assert_eq!(g.handle_ack(2, 1, h(1)), AckVerdict::Agreed);
        assert_eq!(
            drain(&mut g),
            vec![Released::Confirmed(10), Released::Confirmed(11)]
        );
        // One standby leaves: one acknowledgement suffices now.
        g.handle_standby_down(2);
        assert_eq!(drain(&mut g), vec![Released::Confirmed(20)]);
        assert_eq!(g.verified(), 2);
    }

    #[test]
    fn a_divergence_unconfirms_critical_outputs_from_its_tick() {
        let mut g = Gate::new(GateConfig::default(), 0);
        g.handle_standby_up(1, "b", 0);
        for t in 1..=3u64 {
            g.hold(t, true, t as u32);
            g.hold(t, false, 100 + t as u32);
            g.handle_tick(t, h(t as u8));
        }
        assert_eq!(g.handle_ack(1, 1, h(1)), AckVerdict::Agreed);
        assert_eq!(
            g.handle_ack(1, 3, h(9)),
            AckVerdict::Diverged {
                tick: 3,
                primary: h(3),
                standby: h(9)
            }
        );
        assert_eq!(g.suspect(), Some(&(3, "b".to_string())));
        assert_eq!(
            drain(&mut g),
            vec![
                Released::Confirmed(1),
                Released::Confirmed(101),
                Released::Confirmed(2),
                Released::Confirmed(102),
                Released::Unconfirmed(3),
                Released::Confirmed(103),
            ]
        );
    }

    #[test]
    fn a_lagging_standby_is_named_and_stops_holding_the_world() {
        let cfg = GateConfig {
            min_acks: 1,
            max_lag_ticks: 5,
        };
        let mut g = Gate::new(cfg, 0);
        g.handle_standby_up(1, "b", 0);
        for t in 1..=10 {
            g.hold(t, false, t as u32);
            g.handle_tick(t, h(1));
        }
        assert_eq!(g.held(), 10);
        assert_eq!(g.poll_lagging(), Some(1));
        assert_eq!(g.poll_lagging(), None);
        assert_eq!(drain(&mut g).len(), 10);
        // Unknown standbys' acknowledgements change nothing.
        assert_eq!(g.handle_ack(9, 3, h(1)), AckVerdict::Unchecked);
    }

    proptest! {
        /// Nothing leaves before its tick is acknowledged by the required
        /// number of standbys, and everything leaves, in order, once all is.
        #[test]
        fn outputs_leave_in_order_and_only_when_durable(
            acks in proptest::collection::vec((0u64..3, 1u64..20), 0..60),
            min_acks in 1usize..3,
        ) {
            let cfg = GateConfig { min_acks, max_lag_ticks: 1000 };
            let mut g = Gate::new(cfg, 0);
            for id in 0..3 {
                g.handle_standby_up(id, "s", 0);
            }
            for t in 1..=20u64 {
                g.hold(t, false, t as u32);
                g.handle_tick(t, h(0));
            }
            let mut acked = [0u64; 3];
            let mut out = Vec::new();
            for (id, t) in acks {
                g.handle_ack(id, t, h(0));
                acked[id as usize] = acked[id as usize].max(t);
                let mut sorted = acked;
                sorted.sort_unstable_by(|a, b| b.cmp(a));
                let durable = sorted[min_acks - 1];
                while let Some(Released::Confirmed(x)) = g.poll_released() {
                    prop_assert!(u64::from(x) <= durable);
                    out.push(x);
                }
            }
            for id in 0..3 {
                g.handle_ack(id, 20, h(0));
            }
            while let Some(Released::Confirmed(x)) = g.poll_released() {
                out.push(x);
            }
            prop_assert_eq!(out, (1..=20).collect::<Vec<u32>>());
        }
    }
}
