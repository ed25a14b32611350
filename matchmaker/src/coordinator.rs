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
    /// What was settled, for analytics (at most [`MAX_REPORTS`]).
    reports: VecDeque<Settled>,
}

/// Settled tickets and matches kept for [`Coordinator::poll_settled`], at
/// most (the oldest go: analytics never hold the queue up).
pub const MAX_REPORTS: usize = 4_096;

/// A ticket or match settled by the leader (an analytics row).
#[derive(Debug, Clone, PartialEq)]
pub enum Settled {
    /// A ticket left the queue.
    Ticket {
        /// The ticket.
        ticket: TicketId,
        /// Its game.
        game: String,
        /// Its players.
        players: Vec<String>,
        /// `matched`, `cancelled`, `refused` or `failed`.
        outcome: &'static str,
        /// How long it waited, ms.
        waited_ms: u64,
    },
    /// A match was placed.
    Match {
        /// Its world.
        world: WorldId,
        /// The game.
        game: String,
        /// Players in it.
        players: u32,
        /// The worst RTT of its players to the origin placed on, ms.
        worst_rtt_ms: u32,
        /// Highest rating minus lowest.
        skill_spread: f64,
    },
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
            reports: VecDeque::new(),
        }
    }

    /// The next settled ticket or match (for analytics).
    pub fn poll_settled(&mut self) -> Option<Settled> {
        self.reports.pop_front()
    }

    fn report_ticket(&mut self, rec: &TicketRecord, outcome: &'static str, now_ms: u64) {
        if self.reports.len() >= MAX_REPORTS {
            self.reports.pop_front();
        }
        self.reports.push_back(Settled::Ticket {
            ticket: rec.ticket.id,
            game: rec.ticket.game.clone(),
            players: rec
                .ticket
                .members
                .iter()
                .map(|m| m.player.clone())
                .collect(),
            outcome,
            waited_ms: now_ms.saturating_sub(rec.since_ms),
        });
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
                    self.report_ticket(&rec, "refused", now_ms);
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
                    self.report_ticket(&rec, "cancelled", now_ms);
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
                    self.report_ticket(&rec, "matched", now_ms);
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
                self.reports.push_back(Settled::Match {
                    world,
                    game: p.m.game.clone(),
                    players: teams.iter().map(Vec::len).sum::<usize>() as u32,
                    worst_rtt_ms,
                    skill_spread: p.m.skill_spread,
                });
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
                    self.report_ticket(&rec, "failed", now_ms);
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
mod tests;
