//! The matching core (pure, no clock: `now_ms` comes from the caller).
//!
//! Every [`ROUND_MS`] the matcher forms what matches it can, per game, oldest
//! ticket first: around that anchor, for each origin the anchor may play on,
//! it takes the waiting tickets closest in skill whose estimated RTT to that
//! origin fits *their own* current window, as long as the group's skill
//! spread fits every member's skill window and the parties pack into the
//! game's teams; of the origins where a full match forms, the one with the
//! smallest worst-case RTT hosts it. Teams are balanced by rating (parties
//! stay whole, strongest party first into the weakest team that has room).
//! Windows widen with waiting time ([`Windows`]); the last one accepts any
//! RTT and skill, so a ticket is matched as soon as enough players of its game
//! wait. Bounded: at most [`MAX_QUEUED`] tickets.

use std::collections::{BTreeMap, HashSet, VecDeque};

use serde::{Deserialize, Serialize};

use crate::ratings::Rating;

/// How often matches are formed, ms.
pub const ROUND_MS: u64 = 250;
/// Most tickets waiting at once.
pub const MAX_QUEUED: usize = 100_000;

/// A ticket's id (unique per matcher).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct TicketId(pub u64);

/// A game as the matcher fills it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GameRules {
    /// The game's name (`tictactoe`, `arena`...).
    pub name: String,
    /// Teams per match.
    pub teams: u8,
    /// Players per team.
    pub team_size: u8,
}

impl GameRules {
    fn players(&self) -> usize {
        usize::from(self.teams) * usize::from(self.team_size)
    }
}

/// One window: from `after_ms` of waiting, at most `rtt_ms` to the origin and
/// `skill` of rating spread (mu) in the match.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Step {
    /// Waiting time from which it applies, ms.
    pub after_ms: u64,
    /// Worst estimated RTT to the origin allowed, ms.
    pub rtt_ms: u32,
    /// Widest rating spread (highest mu minus lowest) allowed.
    pub skill: f64,
}

/// The windows, widening with waiting time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Windows {
    /// In order of `after_ms`; the first applies from 0.
    pub steps: Vec<Step>,
}

impl Default for Windows {
    /// 50 ms and 4 points of skill at once; 100 ms and 8 after 10 s; 200 ms
    /// and 16 after 20 s; anything after 30 s.
    fn default() -> Self {
        let step = |after_s: u64, rtt_ms, skill| Step {
            after_ms: after_s * 1000,
            rtt_ms,
            skill,
        };
        Self {
            steps: vec![
                step(0, 50, 4.0),
                step(10, 100, 8.0),
                step(20, 200, 16.0),
                step(30, u32::MAX, f64::INFINITY),
            ],
        }
    }
}

impl Windows {
    /// The window after waiting `waited_ms`.
    pub fn at(&self, waited_ms: u64) -> Step {
        self.steps
            .iter()
            .rev()
            .find(|s| s.after_ms <= waited_ms)
            .or(self.steps.first())
            .copied()
            .unwrap_or(Step {
                after_ms: 0,
                rtt_ms: u32::MAX,
                skill: f64::INFINITY,
            })
    }

    /// When the last (widest) window opens, ms of waiting.
    pub fn last_ms(&self) -> u64 {
        self.steps.last().map_or(0, |s| s.after_ms)
    }
}

/// A player of a ticket's party.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Member {
    /// Player id (its token's subject).
    pub player: String,
    /// Its rating.
    pub rating: Rating,
}

/// A request to play: one party (one or more players who play together, on
/// one team), its game, and its estimated RTT to each origin.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ticket {
    /// Its id.
    pub id: TicketId,
    /// The game.
    pub game: String,
    /// The party.
    pub members: Vec<Member>,
    /// Estimated RTT to each origin, ms ([`crate::estimate`]).
    pub rtt_ms: BTreeMap<String, u32>,
}

/// Why a ticket was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TicketError {
    /// No such game.
    #[error("unknown game {0:?}")]
    UnknownGame(String),
    /// A party with no one in it.
    #[error("a ticket needs at least one player")]
    EmptyParty,
    /// A party larger than one team of the game.
    #[error("a party of {size} does not fit the game's teams of {max}")]
    PartyTooLarge {
        /// The party's size.
        size: usize,
        /// The game's team size.
        max: usize,
    },
    /// The ticket (or one of its players) is queued already.
    #[error("{0} is queued already")]
    Duplicate(String),
    /// No RTT estimate to any origin (and no coordinates to make one).
    #[error("no round-trip estimate to any origin")]
    NoEstimate,
    /// The queue is full.
    #[error("the queue is full ({MAX_QUEUED} tickets)")]
    Full,
}

/// A match formed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Match {
    /// Its id (unique per matcher).
    pub id: u64,
    /// The game.
    pub game: String,
    /// The origin to host it.
    pub origin: String,
    /// The teams: each a list of whole parties (tickets).
    pub teams: Vec<Vec<Ticket>>,
    /// The worst estimated RTT to the origin among its players, ms.
    pub worst_rtt_ms: u32,
    /// Highest mu minus lowest among its players.
    pub skill_spread: f64,
    /// How long each ticket waited, ms, in the order of `teams` flattened.
    pub waited_ms: Vec<u64>,
}

impl Match {
    /// Every ticket, team by team.
    pub fn tickets(&self) -> impl Iterator<Item = &Ticket> {
        self.teams.iter().flatten()
    }

    /// The group's worst-case RTT to every origin all its players have an
    /// estimate for, ms: what the control plane's placement ranks origins by
    /// (`PlacementHints::rtt_us`), should the chosen one have no room.
    pub fn worst_rtt_by_origin(&self) -> BTreeMap<String, u32> {
        let mut out: BTreeMap<String, u32> = BTreeMap::new();
        let tickets: Vec<&Ticket> = self.tickets().collect();
        if let Some(first) = tickets.first() {
            for origin in first.rtt_ms.keys() {
                let worst = tickets
                    .iter()
                    .map(|t| t.rtt_ms.get(origin).copied())
                    .collect::<Option<Vec<u32>>>()
                    .and_then(|v| v.into_iter().max());
                if let Some(w) = worst {
                    out.insert(origin.clone(), w);
                }
            }
        }
        out
    }

    /// Each team's players, as the rating book takes them.
    pub fn team_players(&self) -> Vec<Vec<String>> {
        self.teams
            .iter()
            .map(|t| {
                t.iter()
                    .flat_map(|k| &k.members)
                    .map(|m| m.player.clone())
                    .collect()
            })
            .collect()
    }

    /// Each team's total mu.
    pub fn team_ratings(&self) -> Vec<f64> {
        self.teams
            .iter()
            .map(|t| t.iter().flat_map(|k| &k.members).map(|m| m.rating.mu).sum())
            .collect()
    }
}

/// Counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MatcherStats {
    /// Tickets accepted.
    pub queued: u64,
    /// Tickets refused.
    pub refused: u64,
    /// Tickets cancelled.
    pub cancelled: u64,
    /// Matches formed.
    pub matches: u64,
}

#[derive(Debug, Clone)]
struct Waiting {
    ticket: Ticket,
    since_ms: u64,
}

/// The matcher.
#[derive(Debug)]
pub struct Matcher {
    games: BTreeMap<String, GameRules>,
    windows: Windows,
    /// Waiting tickets per game, oldest first.
    queues: BTreeMap<String, Vec<Waiting>>,
    players: HashSet<String>,
    ids: HashSet<TicketId>,
    out: VecDeque<Match>,
    next_round_ms: u64,
    next_match: u64,
    stats: MatcherStats,
}

impl Matcher {
    /// A matcher for `games` with `windows`.
    pub fn new(games: impl IntoIterator<Item = GameRules>, windows: Windows) -> Self {
        Self {
            games: games.into_iter().map(|g| (g.name.clone(), g)).collect(),
            windows,
            queues: BTreeMap::new(),
            players: HashSet::new(),
            ids: HashSet::new(),
            out: VecDeque::new(),
            next_round_ms: 0,
            next_match: 1,
            stats: MatcherStats::default(),
        }
    }

    /// Counters.
    pub fn stats(&self) -> MatcherStats {
        self.stats
    }

    /// Tickets waiting.
    pub fn waiting(&self) -> usize {
        self.ids.len()
    }

    /// Tickets waiting per game, and the players in them.
    pub fn queues(&self) -> BTreeMap<String, (usize, usize)> {
        self.queues
            .iter()
            .map(|(g, q)| {
                let players = q.iter().map(|w| w.ticket.members.len()).sum();
                (g.clone(), (q.len(), players))
            })
            .collect()
    }

    /// Queues `t` at `now_ms`.
    pub fn handle_ticket(&mut self, now_ms: u64, t: Ticket) -> Result<(), TicketError> {
        self.handle_ticket_since(now_ms, now_ms, t)
    }

    /// Queues `t`, which has waited since `since_ms` (a ticket a matchmaker
    /// takes over from its predecessor keeps its place and its windows).
    pub fn handle_ticket_since(
        &mut self,
        now_ms: u64,
        since_ms: u64,
        t: Ticket,
    ) -> Result<(), TicketError> {
        let since_ms = since_ms.min(now_ms);
        let checked = self.check(&t);
        if let Err(e) = checked {
            self.stats.refused += 1;
            return Err(e);
        }
        for m in &t.members {
            self.players.insert(m.player.clone());
        }
        self.ids.insert(t.id);
        self.stats.queued += 1;
        let q = self.queues.entry(t.game.clone()).or_default();
        // Oldest first: a ticket from before the newest goes in its place.
        let at = q.partition_point(|w| w.since_ms <= since_ms);
        q.insert(
            at,
            Waiting {
                ticket: t,
                since_ms,
            },
        );
        Ok(())
    }

    fn check(&self, t: &Ticket) -> Result<(), TicketError> {
        let Some(game) = self.games.get(&t.game) else {
            return Err(TicketError::UnknownGame(t.game.clone()));
        };
        if t.members.is_empty() {
            return Err(TicketError::EmptyParty);
        }
        if t.members.len() > usize::from(game.team_size) {
            return Err(TicketError::PartyTooLarge {
                size: t.members.len(),
                max: usize::from(game.team_size),
            });
        }
        if self.ids.contains(&t.id) {
            return Err(TicketError::Duplicate(format!("ticket {}", t.id.0)));
        }
        let mut seen = HashSet::new();
        if let Some(m) = t
            .members
            .iter()
            .find(|m| self.players.contains(&m.player) || !seen.insert(&m.player))
        {
            return Err(TicketError::Duplicate(format!("player {}", m.player)));
        }
        if t.rtt_ms.is_empty() {
            return Err(TicketError::NoEstimate);
        }
        if self.ids.len() >= MAX_QUEUED {
            return Err(TicketError::Full);
        }
        Ok(())
    }

    /// Takes ticket `id` out of the queue (`false`: not waiting).
    pub fn handle_cancel(&mut self, id: TicketId) -> bool {
        for q in self.queues.values_mut() {
            if let Some(i) = q.iter().position(|w| w.ticket.id == id) {
                let w = q.remove(i);
                self.forget(&w.ticket);
                self.stats.cancelled += 1;
                return true;
            }
        }
        false
    }

    fn forget(&mut self, t: &Ticket) {
        self.ids.remove(&t.id);
        for m in &t.members {
            self.players.remove(&m.player);
        }
    }

    /// When the next round is due (`None`: nothing waits).
    pub fn poll_timeout(&self) -> Option<u64> {
        (!self.ids.is_empty()).then_some(self.next_round_ms)
    }

    /// The next match formed, if any.
    pub fn poll_match(&mut self) -> Option<Match> {
        self.out.pop_front()
    }

    /// Runs a round when one is due.
    pub fn handle_timeout(&mut self, now_ms: u64) {
        if now_ms < self.next_round_ms {
            return;
        }
        self.next_round_ms = now_ms + ROUND_MS;
        let games: Vec<String> = self.queues.keys().cloned().collect();
        for g in games {
            self.round(now_ms, &g);
        }
    }

    fn round(&mut self, now_ms: u64, game: &str) {
        let Some(rules) = self.games.get(game).cloned() else {
            return;
        };
        let Some(queue) = self.queues.remove(game) else {
            return;
        };
        let need = rules.players();
        let mut used = vec![false; queue.len()];
        let window = |w: &Waiting| self.windows.at(now_ms.saturating_sub(w.since_ms));
        // Per origin, the tickets whose own window admits it, by mean rating:
        // an anchor's candidates are its neighbours there.
        let mut by_origin: BTreeMap<&str, Vec<(f64, usize)>> = BTreeMap::new();
        for (i, w) in queue.iter().enumerate() {
            let step = window(w);
            for (origin, rtt) in &w.ticket.rtt_ms {
                if *rtt <= step.rtt_ms {
                    by_origin
                        .entry(origin.as_str())
                        .or_default()
                        .push((mean_mu(w), i));
                }
            }
        }
        for list in by_origin.values_mut() {
            list.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        }
        for anchor in 0..queue.len() {
            if used[anchor] {
                continue;
            }
            let a = &queue[anchor];
            let wa = window(a);
            let mut best: Option<(u32, Vec<usize>, String)> = None;
            for (origin, rtt) in &a.ticket.rtt_ms {
                if *rtt > wa.rtt_ms {
                    continue;
                }
                let Some(index) = by_origin.get(origin.as_str()) else {
                    continue;
                };
                let pick = Pick {
                    queue: &queue,
                    used: &used,
                    index,
                    need,
                    rules: &rules,
                    window: &window,
                };
                if let Some(group) = pick.fill(anchor) {
                    let worst = group
                        .iter()
                        .filter_map(|i| queue[*i].ticket.rtt_ms.get(origin))
                        .copied()
                        .max()
                        .unwrap_or(0);
                    if best.as_ref().is_none_or(|(w, _, _)| worst < *w) {
                        best = Some((worst, group, origin.clone()));
                    }
                }
            }
            let Some((worst, group, origin)) = best else {
                continue;
            };
            let parties: Vec<&Waiting> = group.iter().map(|i| &queue[*i]).collect();
            let Some(teams) = balance(&parties, &rules) else {
                continue;
            };
            for i in &group {
                used[*i] = true;
            }
            let mus = group
                .iter()
                .flat_map(|i| &queue[*i].ticket.members)
                .map(|m| m.rating.mu);
            let (lo, hi) = mus.fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), m| {
                (l.min(m), h.max(m))
            });
            let waited_ms = teams
                .iter()
                .flatten()
                .map(|w| now_ms.saturating_sub(w.since_ms))
                .collect();
            let m = Match {
                id: self.next_match,
                game: game.to_owned(),
                origin,
                teams: teams
                    .into_iter()
                    .map(|t| t.into_iter().map(|w| w.ticket.clone()).collect())
                    .collect(),
                worst_rtt_ms: worst,
                skill_spread: hi - lo,
                waited_ms,
            };
            self.next_match += 1;
            self.stats.matches += 1;
            self.out.push_back(m);
        }
        let mut left = Vec::with_capacity(queue.len());
        for (w, u) in queue.into_iter().zip(used) {
            if u {
                self.forget(&w.ticket);
            } else {
                left.push(w);
            }
        }
        if !left.is_empty() {
            self.queues.insert(game.to_owned(), left);
        }
    }
}

fn mean_mu(w: &Waiting) -> f64 {
    w.ticket.members.iter().map(|m| m.rating.mu).sum::<f64>() / w.ticket.members.len() as f64
}

/// Candidates an anchor considers on one origin, per party size: its nearest
/// neighbours in rating among the tickets that origin suits (so parties of
/// every size are among them: a party of three needs another, not the
/// nearest pairs).
const NEIGHBOURS: usize = 16;
/// Tickets looked at to find them (a bound on a round's cost however long
/// the queue).
const SCAN: usize = 1024;

/// What a group is picked from on one origin.
struct Pick<'a> {
    queue: &'a [Waiting],
    used: &'a [bool],
    /// The tickets the origin suits (their own RTT window), by mean rating.
    index: &'a [(f64, usize)],
    need: usize,
    rules: &'a GameRules,
    window: &'a dyn Fn(&Waiting) -> Step,
}

impl Pick<'_> {
    /// The group for `anchor`: `need` players in whole parties, each within
    /// its own RTT window to the origin, the spread within every member's
    /// skill window, packable into the game's teams. Candidates closest in
    /// rating to the anchor go first.
    fn fill(&self, anchor: usize) -> Option<Vec<usize>> {
        let a = &self.queue[anchor];
        let anchor_mu = mean_mu(a);
        let at = self
            .index
            .binary_search_by(|(mu, i)| mu.total_cmp(&anchor_mu).then(i.cmp(&anchor)))
            .ok()?;
        // Walk outwards from the anchor, nearest rating first.
        let sizes = usize::from(self.rules.team_size);
        let mut per_size = vec![0usize; sizes + 1];
        let mut cands = Vec::with_capacity(NEIGHBOURS * sizes);
        let (mut below, mut above) = (at, at + 1);
        for _ in 0..SCAN {
            if per_size[1..].iter().all(|n| *n >= NEIGHBOURS) {
                break;
            }
            let down = below
                .checked_sub(1)
                .map(|k| (k, anchor_mu - self.index[k].0));
            let up = (above < self.index.len()).then(|| (above, self.index[above].0 - anchor_mu));
            let k = match (down, up) {
                (Some(d), Some(u)) if d.1 <= u.1 => {
                    below -= 1;
                    d.0
                }
                (_, Some(u)) => {
                    above += 1;
                    u.0
                }
                (Some(d), None) => {
                    below -= 1;
                    d.0
                }
                (None, None) => break,
            };
            let i = self.index[k].1;
            let n = self.queue[i].ticket.members.len().min(sizes);
            if !self.used[i] && per_size[n] < NEIGHBOURS {
                per_size[n] += 1;
                cands.push(i);
            }
        }
        let mut lo = f64::INFINITY;
        let mut hi = f64::NEG_INFINITY;
        for m in &a.ticket.members {
            lo = lo.min(m.rating.mu);
            hi = hi.max(m.rating.mu);
        }
        let skill = (self.window)(a).skill;
        if hi - lo > skill {
            return None;
        }
        let mut search = Search {
            queue: self.queue,
            cands: &cands,
            need: self.need,
            rules: self.rules,
            window: self.window,
            group: vec![anchor],
            sizes: vec![a.ticket.members.len()],
            budget: SEARCH_BUDGET,
        };
        search
            .extend(0, a.ticket.members.len(), lo, hi, skill)
            .then_some(search.group)
    }
}

/// Partial groups tried per anchor and origin before giving up (bounds a
/// round's cost however the parties' sizes fall).
const SEARCH_BUDGET: u32 = 500;

/// A depth-first search for a group: candidates in order of skill distance
/// to the anchor, so the first group found is the closest-knit greedy one,
/// and a party that cannot complete a group is stepped over, not kept.
struct Search<'a> {
    queue: &'a [Waiting],
    cands: &'a [usize],
    need: usize,
    rules: &'a GameRules,
    window: &'a dyn Fn(&Waiting) -> Step,
    group: Vec<usize>,
    sizes: Vec<usize>,
    budget: u32,
}

impl Search<'_> {
    fn extend(&mut self, from: usize, count: usize, lo: f64, hi: f64, skill: f64) -> bool {
        if count == self.need {
            return true;
        }
        for k in from..self.cands.len() {
            if self.budget == 0 {
                return false;
            }
            self.budget -= 1;
            let i = self.cands[k];
            let w = &self.queue[i];
            let n = w.ticket.members.len();
            if count + n > self.need {
                continue;
            }
            let (mut l, mut h) = (lo, hi);
            for m in &w.ticket.members {
                l = l.min(m.rating.mu);
                h = h.max(m.rating.mu);
            }
            let s = skill.min((self.window)(w).skill);
            if h - l > s {
                continue;
            }
            self.sizes.push(n);
            if packs(&self.sizes, self.rules) {
                self.group.push(i);
                if self.extend(k + 1, count + n, l, h, s) {
                    return true;
                }
                self.group.pop();
            }
            self.sizes.pop();
        }
        false
    }
}

/// Whether parties of `sizes` fit the game's teams (first fit, largest first).
fn packs(sizes: &[usize], rules: &GameRules) -> bool {
    let mut sorted = sizes.to_vec();
    sorted.sort_unstable_by(|a, b| b.cmp(a));
    let mut room = vec![usize::from(rules.team_size); usize::from(rules.teams)];
    sorted
        .iter()
        .all(|s| match room.iter_mut().find(|r| **r >= *s) {
            Some(r) => {
                *r -= s;
                true
            }
            None => false,
        })
}

/// Teams balanced by rating: parties by size (largest first, so they fit),
/// then by total mu (strongest first), each into the team with the lowest
/// total that has room.
fn balance<'a>(parties: &[&'a Waiting], rules: &GameRules) -> Option<Vec<Vec<&'a Waiting>>> {
    let teams = usize::from(rules.teams);
    // Small matches (every match of a few teams of a few parties): the best
    // split, found by trying them all; larger ones: greedily.
    let tries = u32::try_from(parties.len())
        .ok()
        .and_then(|n| teams.checked_pow(n))
        .filter(|n| *n <= MAX_SPLITS);
    if tries.is_some() {
        return best_split(parties, rules);
    }
    greedy_split(parties, rules)
}

/// Most team assignments [`balance`] tries one by one.
const MAX_SPLITS: usize = 1 << 16;

/// The sum of a party's ratings.
fn party_total(w: &Waiting) -> f64 {
    w.ticket.members.iter().map(|m| m.rating.mu).sum()
}

/// Every assignment of parties to teams that fills them exactly; the one
/// whose strongest and weakest teams differ least (the first such, in a
/// fixed order: deterministic).
fn best_split<'a>(parties: &[&'a Waiting], rules: &GameRules) -> Option<Vec<Vec<&'a Waiting>>> {
    let teams = usize::from(rules.teams);
    let size = usize::from(rules.team_size);
    let mut pick = vec![0usize; parties.len()];
    let mut best: Option<(f64, Vec<usize>)> = None;
    loop {
        let mut fill = vec![0usize; teams];
        let mut sums = vec![0.0f64; teams];
        for (p, t) in parties.iter().zip(&pick) {
            fill[*t] += p.ticket.members.len();
            sums[*t] += party_total(p);
        }
        if fill.iter().all(|n| *n == size) {
            let hi = sums.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let lo = sums.iter().copied().fold(f64::INFINITY, f64::min);
            if best.as_ref().is_none_or(|(d, _)| hi - lo < *d) {
                best = Some((hi - lo, pick.clone()));
            }
        }
        // The next assignment (counting in base `teams`).
        let mut i = 0;
        loop {
            if i == pick.len() {
                let (_, pick) = best?;
                let mut out: Vec<Vec<&Waiting>> = (0..teams).map(|_| Vec::new()).collect();
                for (p, t) in parties.iter().zip(pick) {
                    out[t].push(p);
                }
                return Some(out);
            }
            pick[i] += 1;
            if pick[i] < teams {
                break;
            }
            pick[i] = 0;
            i += 1;
        }
    }
}

/// Largest parties first, each to the weakest team it fits in.
fn greedy_split<'a>(parties: &[&'a Waiting], rules: &GameRules) -> Option<Vec<Vec<&'a Waiting>>> {
    let total = party_total;
    let mut order: Vec<&Waiting> = parties.to_vec();
    order.sort_by(|a, b| {
        b.ticket
            .members
            .len()
            .cmp(&a.ticket.members.len())
            .then(total(b).total_cmp(&total(a)))
            .then(a.ticket.id.cmp(&b.ticket.id))
    });
    let size = usize::from(rules.team_size);
    let mut teams: Vec<(Vec<&Waiting>, usize, f64)> =
        (0..rules.teams).map(|_| (Vec::new(), 0, 0.0)).collect();
    for p in order {
        let n = p.ticket.members.len();
        let t = teams
            .iter_mut()
            .filter(|t| t.1 + n <= size)
            .min_by(|a, b| a.2.total_cmp(&b.2))?;
        t.0.push(p);
        t.1 += n;
        t.2 += total(p);
    }
    Some(teams.into_iter().map(|t| t.0).collect())
}

#[cfg(test)]
mod tests;
