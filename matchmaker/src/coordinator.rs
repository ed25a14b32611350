//! The leader's core (sans-IO): turns the tickets the control plane holds
//! into matches and the matches into placement requests and record writes.
//!
//! The leader of a queue feeds it every view ([`Coordinator::handle_view`]:
//! new queued tickets enter the [`Matcher`] with the time they were queued,
//! so a ticket keeps its place and its windows across a failover;
//! cancellation requests take tickets out), runs rounds
//! ([`Coordinator::handle_timeout`]), and carries out its
//! [`Action`]s: placing a world for each match and, once its owner holds
//! it ([`Coordinator::handle_placed`]), writing every ticket of the match
//! as matched in one fenced write. A placement that fails is retried on
//! another origin, [`PLACE_ATTEMPTS`] times in all, then its tickets fail
//! (typed, retryable). Settled tickets and old matches are deleted after
//! [`RETAIN_MS`].

use std::collections::{BTreeMap, HashMap, VecDeque};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use skylane_control::{ClusterView, PlacementHints, WorldSpec, MAX_RECORD_OPS};
use skylane_proto::matchmaking::{ApiError, ErrorKind};
use skylane_proto::WorldId;

use crate::matcher::{GameRules, Match, Matcher, TicketError, TicketId, Windows};
use crate::records::{
    cancels_prefix, decode, encode, leader_role, match_key, matches_prefix, ticket_key,
    tickets_prefix, MatchRecord, Stored, TicketRecord,
};

/// Placement attempts per match (each on an origin not tried before).
pub const PLACE_ATTEMPTS: u32 = 3;
/// How long settled tickets (matched, cancelled, failed) and matches whose
/// world is gone stay readable, ms.
pub const RETAIN_MS: u64 = 600_000;
/// How long a world this queue created may go without a match record
/// before it counts as orphaned (a leader died between placing it and
/// handing it out) and is ended, ms. Far longer than a placement takes.
pub const ORPHAN_MS: u64 = 30_000;
/// Most players one match may have (its tickets are written in one
/// transaction).
pub const MAX_MATCH_PLAYERS: usize = 64;

/// A game the matchmaker queues, and the world it creates for a match.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GameConfig {
    /// The game (origins register `World` implementations by this name).
    pub name: String,
    /// Teams per match.
    pub teams: u8,
    /// Players per team (the largest party).
    pub team_size: u8,
    /// The world's tick rate.
    #[serde(default = "default_tick_hz")]
    pub tick_hz: u32,
    /// The map (empty: the game's default).
    #[serde(default)]
    pub map: String,
    /// Standby origins per world (`None`: the control plane's default).
    #[serde(default)]
    pub standbys: Option<u32>,
}

fn default_tick_hz() -> u32 {
    20
}

impl GameConfig {
    /// A game of `teams` teams of `team_size`.
    pub fn new(name: impl Into<String>, teams: u8, team_size: u8) -> Self {
        Self {
            name: name.into(),
            teams,
            team_size,
            tick_hz: default_tick_hz(),
            map: String::new(),
            standbys: None,
        }
    }

    /// What the matcher needs.
    pub fn rules(&self) -> GameRules {
        GameRules {
            name: self.name.clone(),
            teams: self.teams,
            team_size: self.team_size,
        }
    }

    /// Players per match.
    pub fn players(&self) -> usize {
        usize::from(self.teams) * usize::from(self.team_size)
    }

    /// The world a match of this game gets: it starts when everyone
    /// joined; `role` (the queue's) marks it as the matchmaker's.
    pub fn spec(&self, role: &str) -> WorldSpec {
        let n = self.players() as u32;
        WorldSpec {
            map: self.map.clone(),
            standbys: self.standbys,
            created_by: Some(role.to_owned()),
            ..WorldSpec::new(self.name.clone(), self.tick_hz, n)
        }
    }

    /// Checks the bounds.
    pub fn validate(&self) -> Result<(), String> {
        if self.teams == 0 || self.team_size == 0 {
            return Err(format!("{}: teams and team_size must be >= 1", self.name));
        }
        if self.players() > MAX_MATCH_PLAYERS {
            return Err(format!(
                "{}: {} players per match (at most {MAX_MATCH_PLAYERS})",
                self.name,
                self.players()
            ));
        }
        self.spec("matchmaker/check")
            .validate()
            .map_err(|e| format!("{}: {e}", self.name))
    }
}

/// The error a refused ticket answers with.
pub fn ticket_error(e: &TicketError) -> ApiError {
    let kind = match e {
        TicketError::UnknownGame(_) => ErrorKind::UnknownGame,
        TicketError::EmptyParty => ErrorKind::EmptyParty,
        TicketError::PartyTooLarge { .. } => ErrorKind::PartyTooLarge,
        TicketError::Duplicate(_) => ErrorKind::Duplicate,
        TicketError::NoEstimate => ErrorKind::NoEstimate,
        TicketError::Full => ErrorKind::QueueFull,
    };
    ApiError::new(kind, e.to_string())
}

/// What the leader must do.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Create a world for match `id` and wait for its owner.
    Place {
        /// The match (placement) id, for [`Coordinator::handle_placed`].
        id: u64,
        /// The world.
        spec: WorldSpec,
        /// The players' worst RTT per origin, and origins tried already.
        hints: PlacementHints,
    },
    /// End a world this queue placed that no match holds (orphaned).
    End {
        /// The world.
        world: WorldId,
    },
    /// Write these records (fenced on leading the queue).
    Write {
        /// Puts.
        puts: Vec<(String, Bytes)>,
        /// Deletes.
        deletes: Vec<String>,
    },
}

/// A placement's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placed {
    /// The world is owned and ready.
    Ready {
        /// The world.
        world: WorldId,
        /// Its origin.
        origin: String,
    },
    /// It failed (on `origin`, when one was chosen).
    Failed {
        /// The origin that did not claim it in time.
        origin: Option<String>,
        /// Why.
        error: ApiError,
    },
}

/// Counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct CoordinatorStats {
    /// Matches formed.
    pub matches: u64,
    /// Matches whose world became ready.
    pub placed: u64,
    /// Placement attempts that failed.
    pub placement_failures: u64,
    /// Tickets given up (placement failed every attempt, or refused).
    pub tickets_failed: u64,
    /// Tickets cancelled.
    pub cancelled: u64,
    /// Orphaned worlds ended.
    pub orphans_ended: u64,
}

#[derive(Debug)]
struct Placing {
    m: Match,
    attempts: u32,
    exclude: Vec<String>,
}

/// The leader's core.
#[derive(Debug)]
pub struct Coordinator {
    queue: String,
    games: BTreeMap<String, GameConfig>,
    matcher: Matcher,
    /// Tickets this leader took (waiting or being placed).
    taken: HashMap<TicketId, TicketRecord>,
    /// Tickets this leader settled (matched, cancelled, failed) whose new
    /// state its view may not show yet (a store's watch lags its writes):
    /// never queued again; forgotten once the view shows them settled.
    settled: HashMap<TicketId, u64>,
    placing: BTreeMap<u64, Placing>,
    /// Worlds of this queue without a match record, since when (ms).
    unclaimed: HashMap<WorldId, u64>,
    next_place: u64,
    actions: VecDeque<Action>,
    stats: CoordinatorStats,
}

impl Coordinator {
    /// A coordinator for `queue` with `games` and `windows`.
    pub fn new(queue: &str, games: &[GameConfig], windows: Windows) -> Self {
        Self {
            queue: queue.to_owned(),
            games: games.iter().map(|g| (g.name.clone(), g.clone())).collect(),
            matcher: Matcher::new(games.iter().map(GameConfig::rules), windows),
            taken: HashMap::new(),
            settled: HashMap::new(),
            placing: BTreeMap::new(),
            unclaimed: HashMap::new(),
            next_place: 1,
            actions: VecDeque::new(),
            stats: CoordinatorStats::default(),
        }
    }

    /// Counters.
    pub fn stats(&self) -> CoordinatorStats {
        self.stats
    }

    /// Tickets waiting in the matcher.
    pub fn waiting(&self) -> usize {
        self.matcher.waiting()
    }

    /// Matches being placed.
    pub fn placing(&self) -> usize {
        self.placing.len()
    }

    /// Takes in the records of `view` at `now_ms` (Unix ms).
    pub fn handle_view(&mut self, now_ms: u64, view: &ClusterView) {
        let mut puts = Vec::new();
        let mut deletes = Vec::new();
        let mut present = std::collections::HashSet::new();
        for (key, value) in view.records_under(&tickets_prefix(&self.queue)) {
            let Some(mut rec) = decode::<TicketRecord>(value) else {
                continue;
            };
            present.insert(rec.ticket.id);
            if rec.state != Stored::Queued {
                self.settled.remove(&rec.ticket.id);
                if now_ms.saturating_sub(rec.changed_ms) > RETAIN_MS {
                    deletes.push(key.to_owned());
                }
                continue;
            }
            if self.taken.contains_key(&rec.ticket.id) || self.settled.contains_key(&rec.ticket.id)
            {
                continue;
            }
            match self
                .matcher
                .handle_ticket_since(now_ms, rec.since_ms, rec.ticket.clone())
            {
                Ok(()) => {
                    self.taken.insert(rec.ticket.id, rec);
                }
                Err(e) => {
                    self.stats.tickets_failed += 1;
                    self.settled.insert(rec.ticket.id, now_ms);
                    rec.state = Stored::Failed {
                        error: ticket_error(&e),
                    };
                    rec.changed_ms = now_ms;
                    puts.push((key.to_owned(), encode(&rec)));
                }
            }
        }
        // A ticket whose record went (deleted by an operator) leaves the queue.
        let gone: Vec<TicketId> = self
            .taken
            .keys()
            .filter(|id| !present.contains(id))
            .copied()
            .collect();
        for id in gone {
            if self.matcher.handle_cancel(id) {
                self.taken.remove(&id);
            }
        }
        self.settled
            .retain(|id, at| present.contains(id) && now_ms.saturating_sub(*at) <= RETAIN_MS);
        for (key, _) in view.records_under(&cancels_prefix(&self.queue)) {
            deletes.push(key.to_owned());
            let Some(id) = key
                .rsplit('/')
                .next()
                .and_then(crate::records::parse_ticket_name)
            else {
                continue;
            };
            // Too late once matched: the ticket keeps its match.
            if self.matcher.handle_cancel(id) {
                if let Some(mut rec) = self.taken.remove(&id) {
                    self.stats.cancelled += 1;
                    self.settled.insert(id, now_ms);
                    rec.state = Stored::Cancelled;
                    rec.changed_ms = now_ms;
                    puts.push((ticket_key(&self.queue, id), encode(&rec)));
                }
            }
        }
        let mut matched = std::collections::HashSet::new();
        for (key, value) in view.records_under(&matches_prefix(&self.queue)) {
            let Some(m) = decode::<MatchRecord>(value) else {
                continue;
            };
            matched.insert(m.world);
            let old = now_ms.saturating_sub(m.created_ms) > RETAIN_MS;
            if old && !view.worlds.contains_key(&m.world) {
                deletes.push(key.to_owned());
            }
        }
        // Worlds this queue placed that no match holds: a placement in
        // flight (for seconds), or one a dead leader never handed out.
        let role = leader_role(&self.queue);
        let mut mine = std::collections::HashSet::new();
        for w in view.worlds.values() {
            if w.spec.created_by.as_deref() != Some(role.as_str())
                || w.ending
                || matched.contains(&w.id)
            {
                continue;
            }
            mine.insert(w.id);
            let since = *self.unclaimed.entry(w.id).or_insert(now_ms);
            if now_ms.saturating_sub(since) > ORPHAN_MS {
                self.stats.orphans_ended += 1;
                self.actions.push_back(Action::End { world: w.id });
                self.unclaimed.remove(&w.id);
            }
        }
        self.unclaimed.retain(|w, _| mine.contains(w));
        self.write(puts, deletes);
    }

    fn write(&mut self, mut puts: Vec<(String, Bytes)>, mut deletes: Vec<String>) {
        // One transaction holds at most MAX_RECORD_OPS operations.
        while !puts.is_empty() || !deletes.is_empty() {
            let p: Vec<_> = puts.drain(..puts.len().min(MAX_RECORD_OPS)).collect();
            let room = MAX_RECORD_OPS - p.len();
            let d: Vec<_> = deletes.drain(..deletes.len().min(room)).collect();
            self.actions.push_back(Action::Write {
                puts: p,
                deletes: d,
            });
        }
    }

    /// When a round is next due (Unix ms).
    pub fn poll_timeout(&self) -> Option<u64> {
        self.matcher.poll_timeout()
    }

    /// Runs a round if one is due; each match formed becomes a placement.
    pub fn handle_timeout(&mut self, now_ms: u64) {
        self.matcher.handle_timeout(now_ms);
        while let Some(m) = self.matcher.poll_match() {
            self.stats.matches += 1;
            let id = self.next_place;
            self.next_place += 1;
            self.placing.insert(
                id,
                Placing {
                    m,
                    attempts: 0,
                    exclude: Vec::new(),
                },
            );
            self.place(id);
        }
    }

    fn place(&mut self, id: u64) {
        let Some(p) = self.placing.get(&id) else {
            return;
        };
        let Some(game) = self.games.get(&p.m.game) else {
            return;
        };
        let hints = PlacementHints {
            rtt_us: p
                .m
                .worst_rtt_by_origin()
                .into_iter()
                .map(|(o, ms)| (o, u64::from(ms) * 1000))
                .collect(),
            exclude: p.exclude.clone(),
        };
        self.actions.push_back(Action::Place {
            id,
            spec: game.spec(&leader_role(&self.queue)),
            hints,
        });
    }

    /// The next action.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// A placement's result at `now_ms`.
    pub fn handle_placed(&mut self, now_ms: u64, id: u64, result: Placed) {
        match result {
            Placed::Ready { world, origin } => {
                let Some(p) = self.placing.remove(&id) else {
                    return;
                };
                self.stats.placed += 1;
                let teams = p.m.team_players();
                // Placement may pick an origin within a step of the best
                // (to share load): the worst RTT to the one it picked.
                let worst_rtt_ms =
                    p.m.worst_rtt_by_origin()
                        .get(&origin)
                        .copied()
                        .unwrap_or(p.m.worst_rtt_ms);
                let mut puts = Vec::new();
                for t in p.m.tickets() {
                    let Some(mut rec) = self.taken.remove(&t.id) else {
                        continue;
                    };
                    self.settled.insert(t.id, now_ms);
                    rec.state = Stored::Matched {
                        world,
                        origin: origin.clone(),
                        teams: teams.clone(),
                        worst_rtt_ms,
                        waited_ms: now_ms.saturating_sub(rec.since_ms),
                    };
                    rec.changed_ms = now_ms;
                    puts.push((ticket_key(&self.queue, t.id), encode(&rec)));
                }
                let record = MatchRecord {
                    world,
                    game: p.m.game.clone(),
                    teams,
                    created_ms: now_ms,
                };
                puts.push((match_key(&self.queue, world), encode(&record)));
                self.write(puts, Vec::new());
            }
            Placed::Failed { origin, error } => {
                self.stats.placement_failures += 1;
                let Some(p) = self.placing.get_mut(&id) else {
                    return;
                };
                p.attempts += 1;
                if let Some(o) = origin {
                    p.exclude.push(o);
                }
                if p.attempts < PLACE_ATTEMPTS && error.kind.is_retryable() {
                    self.place(id);
                    return;
                }
                let Some(p) = self.placing.remove(&id) else {
                    return;
                };
                let mut puts = Vec::new();
                for t in p.m.tickets() {
                    let Some(mut rec) = self.taken.remove(&t.id) else {
                        continue;
                    };
                    self.stats.tickets_failed += 1;
                    self.settled.insert(t.id, now_ms);
                    rec.state = Stored::Failed {
                        error: error.clone(),
                    };
                    rec.changed_ms = now_ms;
                    puts.push((ticket_key(&self.queue, t.id), encode(&rec)));
                }
                self.write(puts, Vec::new());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::matcher::{Member, Ticket};
    use crate::ratings::Rating;
    use crate::records::cancel_key;

    const Q: &str = "default";

    fn record(id: u64, player: &str, since_ms: u64, rtt: &[(&str, u32)]) -> TicketRecord {
        TicketRecord {
            ticket: Ticket {
                id: TicketId(id),
                game: "duel".into(),
                members: vec![Member {
                    player: player.into(),
                    rating: Rating::default(),
                }],
                rtt_ms: rtt.iter().map(|(o, ms)| ((*o).to_owned(), *ms)).collect(),
            },
            relay_rtt_ms: BTreeMap::new(),
            coords: None,
            since_ms,
            changed_ms: since_ms,
            state: Stored::Queued,
        }
    }

    fn put(view: &mut ClusterView, r: &TicketRecord) {
        view.records_mut()
            .insert(ticket_key(Q, r.ticket.id), encode(r));
    }

    /// Applies the coordinator's writes to `view`; returns the placements.
    fn run(c: &mut Coordinator, view: &mut ClusterView) -> Vec<(u64, WorldSpec, PlacementHints)> {
        let mut placements = Vec::new();
        while let Some(a) = c.poll_action() {
            match a {
                Action::Place { id, spec, hints } => placements.push((id, spec, hints)),
                Action::End { .. } => {}
                Action::Write { puts, deletes } => {
                    for (k, v) in puts {
                        view.records_mut().insert(k, v);
                    }
                    for k in deletes {
                        view.records_mut().remove(&k);
                    }
                }
            }
        }
        placements
    }

    fn state(view: &ClusterView, id: u64) -> Stored {
        decode::<TicketRecord>(&view.records[&ticket_key(Q, TicketId(id))])
            .unwrap()
            .state
    }

    #[test]
    fn a_match_is_placed_near_its_players_and_written_once_ready() {
        let mut c = Coordinator::new(Q, &[GameConfig::new("duel", 2, 1)], Windows::default());
        let mut view = ClusterView::default();
        let t0 = 1_700_000_000_000;
        put(&mut view, &record(1, "ann", t0, &[("eu", 20), ("us", 90)]));
        put(
            &mut view,
            &record(2, "bob", t0 + 5, &[("eu", 30), ("us", 80)]),
        );
        c.handle_view(t0 + 10, &view);
        assert_eq!(c.waiting(), 2);
        // A view seen again does not queue the tickets twice.
        c.handle_view(t0 + 20, &view);
        assert_eq!(c.waiting(), 2);
        c.handle_timeout(t0 + 20);
        let placements = run(&mut c, &mut view);
        assert_eq!(placements.len(), 1);
        let (id, spec, hints) = &placements[0];
        assert_eq!(
            (spec.game.as_str(), spec.capacity, spec.min_players),
            ("duel", 2, 2)
        );
        assert_eq!(hints.rtt_us["eu"], 30_000, "the worst of the two to eu");
        assert_eq!(hints.rtt_us["us"], 90_000);
        assert_eq!(
            state(&view, 1),
            Stored::Queued,
            "nothing written before it is ready"
        );
        c.handle_placed(
            t0 + 500,
            *id,
            Placed::Ready {
                world: WorldId(1000),
                origin: "eu".into(),
            },
        );
        run(&mut c, &mut view);
        match state(&view, 2) {
            Stored::Matched {
                world,
                origin,
                teams,
                waited_ms,
                ..
            } => {
                assert_eq!(
                    (world, origin.as_str(), waited_ms),
                    (WorldId(1000), "eu", 495)
                );
                assert_eq!(teams.len(), 2);
            }
            other => panic!("{other:?}"),
        }
        assert!(view.records.contains_key(&match_key(Q, WorldId(1000))));
        assert_eq!(c.stats().placed, 1);
        // Settled tickets and gone worlds' matches are deleted after RETAIN_MS.
        c.handle_view(t0 + 500 + RETAIN_MS + 1, &view);
        run(&mut c, &mut view);
        assert!(view.records.is_empty(), "{:?}", view.records.keys());
    }

    #[test]
    fn a_lagging_view_never_queues_a_settled_ticket_again() {
        // etcd's watch shows a write a moment after it: the leader must not
        // take the still-"queued" records of a match it just wrote for new
        // tickets (found by the service benchmark on etcd: 286 matches for
        // 200 worlds' worth of tickets).
        let mut c = Coordinator::new(Q, &[GameConfig::new("duel", 2, 1)], Windows::default());
        let mut view = ClusterView::default();
        put(&mut view, &record(1, "ann", 0, &[("eu", 20)]));
        put(&mut view, &record(2, "bob", 0, &[("eu", 20)]));
        let stale = view.clone();
        c.handle_view(0, &view);
        c.handle_timeout(0);
        let (id, _, _) = run(&mut c, &mut view).remove(0);
        c.handle_placed(
            10,
            id,
            Placed::Ready {
                world: WorldId(1000),
                origin: "eu".into(),
            },
        );
        run(&mut c, &mut view);
        c.handle_view(20, &stale);
        c.handle_timeout(300);
        assert_eq!(c.waiting(), 0);
        assert!(run(&mut c, &mut view.clone()).is_empty(), "placed twice");
        // Once the view shows them matched, they are forgotten (bounded).
        c.handle_view(30, &view);
        assert!(c.settled.is_empty());
    }

    #[test]
    fn failed_placements_try_other_origins_then_fail_the_tickets() {
        let mut c = Coordinator::new(Q, &[GameConfig::new("duel", 2, 1)], Windows::default());
        let mut view = ClusterView::default();
        put(&mut view, &record(1, "ann", 0, &[("eu", 20)]));
        put(&mut view, &record(2, "bob", 0, &[("eu", 20)]));
        c.handle_view(0, &view);
        c.handle_timeout(0);
        let mut p = run(&mut c, &mut view);
        let timeout = ApiError::new(ErrorKind::Placement, "no owner within 5 s");
        for attempt in 1..=PLACE_ATTEMPTS {
            assert_eq!(p.len(), 1, "attempt {attempt}");
            let (id, _, hints) = p.remove(0);
            assert_eq!(hints.exclude.len() as u32, attempt - 1);
            c.handle_placed(
                10,
                id,
                Placed::Failed {
                    origin: Some(format!("o{attempt}")),
                    error: timeout.clone(),
                },
            );
            p = run(&mut c, &mut view);
        }
        assert!(p.is_empty());
        assert_eq!(state(&view, 1), Stored::Failed { error: timeout });
        assert_eq!(c.stats().tickets_failed, 2);
        assert_eq!(c.placing(), 0);
    }

    #[test]
    fn cancels_and_refusals_are_written_back() {
        let mut c = Coordinator::new(Q, &[GameConfig::new("duel", 2, 1)], Windows::default());
        let mut view = ClusterView::default();
        put(&mut view, &record(1, "ann", 0, &[("eu", 20)]));
        let mut unknown = record(2, "cat", 0, &[("eu", 20)]);
        unknown.ticket.game = "chess".into();
        put(&mut view, &unknown);
        let mut twice = record(3, "ann", 0, &[("eu", 20)]);
        twice.ticket.id = TicketId(3);
        put(&mut view, &twice);
        c.handle_view(0, &view);
        run(&mut c, &mut view);
        assert!(
            matches!(state(&view, 2), Stored::Failed { error } if error.kind == ErrorKind::UnknownGame)
        );
        assert!(
            matches!(state(&view, 3), Stored::Failed { error } if error.kind == ErrorKind::Duplicate)
        );
        view.records_mut()
            .insert(cancel_key(Q, TicketId(1)), Bytes::new());
        c.handle_view(5, &view);
        run(&mut c, &mut view);
        assert_eq!(state(&view, 1), Stored::Cancelled);
        assert!(!view.records.contains_key(&cancel_key(Q, TicketId(1))));
        assert_eq!(c.waiting(), 0);
    }

    #[test]
    fn a_new_leader_keeps_each_tickets_wait() {
        // Queued 25 s ago under the previous leader: the third window (200 ms)
        // applies at once, so a pair 150 ms apart matches in the first round.
        let mut c = Coordinator::new(Q, &[GameConfig::new("duel", 2, 1)], Windows::default());
        let mut view = ClusterView::default();
        let now = 100_000;
        put(&mut view, &record(1, "ann", now - 25_000, &[("eu", 150)]));
        put(&mut view, &record(2, "bob", now - 25_000, &[("eu", 140)]));
        c.handle_view(now, &view);
        c.handle_timeout(now);
        assert_eq!(run(&mut c, &mut view).len(), 1);
        // A fresh pair with the same RTTs waits.
        let mut fresh = Coordinator::new(Q, &[GameConfig::new("duel", 2, 1)], Windows::default());
        let mut v2 = ClusterView::default();
        put(&mut v2, &record(1, "ann", now, &[("eu", 150)]));
        put(&mut v2, &record(2, "bob", now, &[("eu", 140)]));
        fresh.handle_view(now, &v2);
        fresh.handle_timeout(now);
        assert!(run(&mut fresh, &mut v2).is_empty());
    }

    #[test]
    fn a_world_a_dead_leader_never_handed_out_is_ended() {
        use skylane_control::{WorldRecord, WorldStatus};
        let mut c = Coordinator::new(Q, &[GameConfig::new("duel", 2, 1)], Windows::default());
        let mut view = ClusterView::default();
        let world = |id: u64, by: Option<&str>| WorldRecord {
            id: WorldId(id),
            spec: WorldSpec {
                created_by: by.map(str::to_owned),
                ..WorldSpec::new("duel", 20, 2)
            },
            placed_on: "eu".into(),
            standbys: Vec::new(),
            ending: false,
            owner: None,
            status: WorldStatus::default(),
            offers: BTreeMap::new(),
        };
        view.worlds
            .insert(WorldId(1), world(1, Some("matchmaker/default")));
        view.worlds.insert(WorldId(2), world(2, None));
        view.worlds
            .insert(WorldId(3), world(3, Some("matchmaker/default")));
        let m = MatchRecord {
            world: WorldId(3),
            game: "duel".into(),
            teams: vec![],
            created_ms: 0,
        };
        view.records_mut()
            .insert(match_key(Q, WorldId(3)), encode(&m));
        c.handle_view(0, &view);
        assert!(
            run(&mut c, &mut view).is_empty(),
            "a placement may be in flight"
        );
        c.handle_view(ORPHAN_MS + 1, &view);
        let mut ended = Vec::new();
        while let Some(a) = c.poll_action() {
            if let Action::End { world } = a {
                ended.push(world);
            }
        }
        assert_eq!(
            ended,
            [WorldId(1)],
            "not the operator's, not the matched one"
        );
        assert_eq!(c.stats().orphans_ended, 1);
    }

    #[test]
    fn game_configs_are_bounded() {
        assert!(GameConfig::new("duel", 2, 1).validate().is_ok());
        assert!(GameConfig::new("duel", 0, 1).validate().is_err());
        assert!(GameConfig::new("huge", 8, 9).validate().is_err());
    }
}
