//! Rooms in the demo: bots queue through the matchmaker (`skylane-match`,
//! which places a world on the control plane for each match and hands out
//! world tokens and relays), connect through the relays with what the match
//! gave them, and play to the end; what the bots saw and what the control
//! plane recorded merge into a [`RoomsReport`].
//!
//! * tic-tac-toe rooms of two: each bot keeps the board from the events and,
//!   on its turn, marks the first free cell of its own preference order; the
//!   game ends with a winner or a draw.
//! * arena rooms of four that start after a short timer and run until the demo
//!   ends them as an operator would (`DELETE /worlds/{id}`); their bots stand
//!   still (the main arena world is where bots play).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;
use skylane_client::{Client, ClientBuilder, ClientEvent, Matchmaker};
use skylane_control::{Phase, SharedControl};
use skylane_origin::{TttAction, TttEvent};
use skylane_proto::{EventClass, Outcome, WorldId, WorldPhase, WorldResult};
use tokio::task::JoinSet;

/// What the rooms did.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct RoomsReport {
    /// Worlds created on the control plane, by game.
    pub created: BTreeMap<String, u64>,
    /// Worlds whose players saw them start.
    pub started: u64,
    /// Worlds whose players saw them end.
    pub ended: u64,
    /// Ended worlds by how they ended (`three_in_a_row`, `draw`, `operator`...).
    pub results: BTreeMap<String, u64>,
    /// Ended worlds whose result the control plane recorded (owner-published).
    pub results_recorded: u64,
    /// Moves the players made.
    pub moves: u64,
    /// Moves refused (must be 0: bots only play legal moves on their turn).
    pub moves_refused: u64,
    /// Moves whose outcome was unknown (in flight while their room moved to
    /// another origin); the bot plays again if the move did not land.
    pub moves_unknown: u64,
    /// Events the room bots missed or saw twice (sequence gaps, repeats, and
    /// ranges an origin said were lost): must be 0, failovers included.
    pub events_lost: u64,
    /// Rooms still running when the demo stopped waiting (must be 0 for
    /// tic-tac-toe).
    pub unfinished: u64,
    /// Queueing → first player's welcome, per room (milliseconds): p50, max.
    pub queue_to_welcome_ms: (f64, f64),
    /// What the matchmaker did for the rooms.
    pub matchmaking: MatchmakingReport,
    /// Errors (first few).
    pub errors: Vec<String>,
    /// The primary the demo killed mid-run, and how its worlds failed over.
    pub failover: Option<FailoverReport>,
}

/// The rooms' tickets through the matchmaker.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct MatchmakingReport {
    /// Tickets queued (one per bot).
    pub tickets: u64,
    /// Tickets matched (each with a world token and relays).
    pub matched: u64,
    /// Tickets refused or failed (first errors in `errors`).
    pub failed: u64,
    /// Queued → matched, per ticket (milliseconds): p50, max.
    pub queue_to_match_ms: (f64, f64),
    /// The largest worst-case estimated RTT of a match, ms.
    pub worst_rtt_ms: u32,
}

/// A primary killed mid-run (`skylane demo --kill-primary-at`).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct FailoverReport {
    /// The origin killed.
    pub killed: String,
    /// When, seconds into the run.
    pub at_s: f64,
    /// Worlds it owned then (with a standby assigned).
    pub worlds: usize,
    /// Of those, taken over by a standby under a higher epoch.
    pub taken_over: usize,
    /// Kill → new owner on the control plane, per world (milliseconds): p50, max.
    pub failover_ms: (f64, f64),
    /// The lease TTL (the failover's floor), milliseconds.
    pub lease_ttl_ms: u64,
}

/// Kills `victim` (via `crash`) once it owns a playing world with a standby
/// (waiting up to `wait` for one), then waits until every world it owned
/// (with a standby) has a new owner, or `wait` passes.
pub async fn kill_primary(
    control: &SharedControl,
    victim: &str,
    crash: impl FnOnce() -> bool,
    lease_ttl: Duration,
    wait: Duration,
) -> FailoverReport {
    let mut report = FailoverReport {
        killed: victim.into(),
        lease_ttl_ms: lease_ttl.as_millis() as u64,
        ..FailoverReport::default()
    };
    let owned_by = |v: &skylane_control::ClusterView| -> Vec<(WorldId, u64)> {
        v.worlds
            .values()
            // Playing: its standby has been following since it started.
            .filter(|w| w.status.phase == Phase::Playing && !w.standbys.is_empty())
            .filter_map(|w| {
                w.owner
                    .as_ref()
                    .filter(|o| o.node == victim)
                    .map(|o| (w.id, o.epoch))
            })
            .collect()
    };
    let give_up = tokio::time::Instant::now() + wait;
    let owned = loop {
        let Ok(v) = control.view().await else {
            return report;
        };
        let owned = owned_by(&v);
        if !owned.is_empty() || tokio::time::Instant::now() >= give_up {
            break owned;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    report.worlds = owned.len();
    let crashed = tokio::time::Instant::now();
    if !crash() {
        return report;
    }
    let Ok(mut rx) = control.watch().await else {
        return report;
    };
    let mut took: BTreeMap<WorldId, f64> = BTreeMap::new();
    let _ = tokio::time::timeout(wait, async {
        loop {
            {
                let v = rx.borrow_and_update();
                for (w, epoch) in &owned {
                    let moved = v
                        .worlds
                        .get(w)
                        .and_then(|r| r.owner.as_ref())
                        .is_some_and(|o| o.epoch > *epoch);
                    if moved && !took.contains_key(w) {
                        took.insert(*w, crashed.elapsed().as_secs_f64() * 1000.0);
                    }
                }
            }
            if took.len() == owned.len() || rx.changed().await.is_err() {
                return;
            }
        }
    })
    .await;
    let mut ms: Vec<f64> = took.into_values().collect();
    ms.sort_by(f64::total_cmp);
    report.taken_over = ms.len();
    if let (Some(mid), Some(max)) = (ms.get(ms.len() / 2), ms.last()) {
        report.failover_ms = (*mid, *max);
    }
    report
}

/// One bot's view of its room.
#[derive(Debug, Default)]
struct Seen {
    started: bool,
    result: Option<WorldResult>,
    moves: u64,
    refused: u64,
    unknown: u64,
    lost: u64,
    last: BTreeMap<skylane_proto::ChannelId, u64>,
    welcome: Option<Duration>,
}

impl Seen {
    /// Counts what an event stream says about loss: a sequence number that
    /// is not the next one on its channel, or an origin's "these are gone".
    fn check(&mut self, ev: &ClientEvent) {
        match ev {
            ClientEvent::Event(e) => {
                if let Some(last) = self.last.insert(e.channel, e.seq) {
                    if e.seq != last + 1 {
                        self.lost += 1;
                    }
                }
            }
            ClientEvent::ResumeIncomplete { .. } => self.lost += 1,
            _ => {}
        }
    }
}

/// Plays tic-tac-toe as `me` until the room ends (or `limit` passes). A move
/// whose outcome is unknown (its room moved to another origin meanwhile) is
/// played again after a second unless its mark showed up.
async fn play_tictactoe(mut c: Client, me: String, prefer: [u8; 9], limit: Duration) -> Seen {
    let mut seen = Seen::default();
    let mut board = [0u8; 9];
    let mut mine = false;
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if tokio::time::Instant::now() >= deadline {
            break;
        }
        let ev = match tokio::time::timeout(Duration::from_secs(1), c.next_event()).await {
            Ok(Some(ev)) => Some(ev),
            Ok(None) => break,
            Err(_) => None,
        };
        if let Some(ev) = ev {
            seen.check(&ev);
            match ev {
                ClientEvent::World(ws) => {
                    seen.started |= ws.phase != WorldPhase::Waiting;
                    if ws.phase == WorldPhase::Ended {
                        seen.result = ws.result;
                        break;
                    }
                }
                ClientEvent::Event(e) => match postcard::from_bytes::<TttEvent>(&e.payload) {
                    Ok(TttEvent::Started { first }) => mine = first == me,
                    Ok(TttEvent::Placed {
                        cell, mark, next, ..
                    }) => {
                        if let Some(c) = board.get_mut(usize::from(cell)) {
                            *c = mark;
                        }
                        mine = next.as_deref() == Some(me.as_str());
                    }
                    Ok(TttEvent::TimedOut { next, .. }) => mine = next == me,
                    _ => {}
                },
                ClientEvent::Error(_) => break,
                _ => continue,
            }
        }
        if !mine {
            continue;
        }
        let Some(cell) = prefer.iter().copied().find(|&i| board[usize::from(i)] == 0) else {
            continue;
        };
        let payload = postcard::to_stdvec(&TttAction::Place { cell }).unwrap_or_default();
        seen.moves += 1;
        match c.act(EventClass::State, vec![], payload.into()).await {
            // Its event says whose turn it is next.
            Ok(Outcome::Applied { .. }) => mine = false,
            // Played again unless its mark shows up first.
            Ok(Outcome::Unknown { .. }) => seen.unknown += 1,
            _ => {
                seen.refused += 1;
                mine = false;
            }
        }
    }
    c.close().await;
    seen
}

/// Holds an arena avatar in the room (standing still: these rooms show the
/// lifecycle, the main arena shows play) until the room ends.
async fn play_arena(mut c: Client, limit: Duration) -> Seen {
    let mut seen = Seen::default();
    let deadline = tokio::time::Instant::now() + limit;
    while let Ok(Some(ev)) = tokio::time::timeout_at(deadline, c.next_event()).await {
        seen.check(&ev);
        match ev {
            ClientEvent::World(ws) => {
                seen.started |= ws.phase == WorldPhase::Playing;
                if ws.phase == WorldPhase::Ended {
                    seen.result = ws.result;
                    break;
                }
            }
            ClientEvent::Error(_) => break,
            _ => {}
        }
    }
    c.close().await;
    seen
}

/// Connects the bots (`bots`: name and builder each) to `world` and plays
/// `game` with them.
async fn fill(
    world: WorldId,
    game: &'static str,
    bots: Vec<(String, ClientBuilder)>,
    created: tokio::time::Instant,
    limit: Duration,
) -> Vec<Result<Seen, String>> {
    let mut set = JoinSet::new();
    for (k, (name, b)) in bots.into_iter().enumerate() {
        let client = match b.world(world).connect().await {
            Ok(c) => c,
            Err(e) => return vec![Err(format!("{world}: {e}"))],
        };
        let welcome = created.elapsed();
        // Preference orders differ per seat and per room, so games end in wins
        // for either seat and in draws.
        const ORDERS: [[u8; 9]; 4] = [
            [4, 0, 8, 2, 6, 1, 3, 5, 7],
            [0, 1, 2, 3, 5, 6, 7, 8, 4],
            [0, 4, 8, 1, 2, 3, 5, 6, 7],
            [1, 3, 5, 7, 0, 2, 4, 6, 8],
        ];
        let prefer = ORDERS[(k + 2 * (world.0 as usize % 2)) % ORDERS.len()];
        set.spawn(async move {
            let mut s = match game {
                "tictactoe" => play_tictactoe(client, name, prefer, limit).await,
                _ => play_arena(client, limit).await,
            };
            s.welcome = Some(welcome);
            s
        });
    }
    let mut out = Vec::new();
    while let Some(r) = set.join_next().await {
        out.push(r.map_err(|e| e.to_string()));
    }
    out
}

/// How many rooms of each game the demo runs.
#[derive(Debug, Clone, Copy)]
pub struct RoomsPlan {
    /// Tic-tac-toe rooms, one created every `every`.
    pub tictactoe: usize,
    /// Arena rooms of four (ended by the demo at the end).
    pub arena: usize,
    /// Pause between creations.
    pub every: Duration,
    /// How long the demo plays.
    pub duration: Duration,
}

/// One bot of a room.
#[derive(Debug)]
pub struct RoomBot {
    /// Its name (its token's subject).
    pub name: String,
    /// The token it queues with.
    pub token: String,
    /// A builder (CA, endpoint) the match completes.
    pub builder: ClientBuilder,
    /// Where it is, for the matchmaker when its relay probes fail.
    pub coords: Option<(f64, f64)>,
}

/// Queues `bots` for `game` together and waits for their matches: the bots
/// by the world they were matched into, with what each waited.
async fn matched(
    mm: &Matchmaker,
    game: &'static str,
    bots: Vec<RoomBot>,
) -> Vec<
    Result<
        (
            String,
            ClientBuilder,
            skylane_proto::matchmaking::MatchFound,
            u64,
        ),
        String,
    >,
> {
    let mut set = JoinSet::new();
    for bot in bots {
        let RoomBot {
            name,
            token,
            builder: b,
            coords,
        } = bot;
        let mm = match coords {
            Some((lat, lon)) => mm.clone().coords(lat, lon),
            None => mm.clone(),
        };
        set.spawn(async move {
            let mut t = mm
                .queue(&token, game, Vec::new())
                .await
                .map_err(|e| format!("{name}: queue: {e}"))?;
            let found = t.wait().await.map_err(|e| format!("{name}: {e}"))?;
            Ok((name, b.matched(&found), found, t.status().waited_ms))
        });
    }
    let mut out = Vec::new();
    while let Some(r) = set.join_next().await {
        out.push(r.map_err(|e| e.to_string()).and_then(|r| r));
    }
    out
}

/// Runs the rooms: every `plan.every` the bots of one room queue through
/// `mm`; each world their matches give is filled and played; tic-tac-toe
/// games end by themselves, arena rooms are ended at `plan.duration`.
pub async fn run(
    control: SharedControl,
    mm: Matchmaker,
    plan: RoomsPlan,
    bot: impl Fn(usize, usize) -> Result<RoomBot, String>,
) -> RoomsReport {
    let mut report = RoomsReport::default();
    let mut games = JoinSet::new();
    let start = tokio::time::Instant::now();
    // The arena rooms spread among the tic-tac-toe ones.
    let mut kinds: Vec<&'static str> = vec!["tictactoe"; plan.tictactoe];
    for j in 0..plan.arena {
        let pos = ((j + 1) * kinds.len() / (plan.arena + 1)).min(kinds.len());
        kinds.insert(pos, "arena");
    }
    for (i, game) in kinds.into_iter().enumerate() {
        let players = if game == "arena" { 4 } else { 2 };
        let bots: Result<Vec<RoomBot>, String> = (0..players).map(|k| bot(i, k)).collect();
        let bots = match bots {
            Ok(b) => b,
            Err(e) => {
                report.errors.push(e);
                continue;
            }
        };
        let limit = plan.duration.saturating_sub(start.elapsed()) + Duration::from_secs(20);
        let mm = mm.clone();
        games.spawn(async move {
            let queued = tokio::time::Instant::now();
            let found = matched(&mm, game, bots).await;
            let mut by_world: BTreeMap<WorldId, Vec<(String, ClientBuilder)>> = BTreeMap::new();
            let mut tickets = Vec::new();
            let mut errors = Vec::new();
            for f in found {
                match f {
                    Ok((name, b, m, waited)) => {
                        tickets.push((waited, m.worst_rtt_ms));
                        by_world.entry(m.world).or_default().push((name, b));
                    }
                    Err(e) => errors.push(e),
                }
            }
            let mut rooms = Vec::new();
            for (world, bots) in by_world {
                rooms.push((world, fill(world, game, bots, queued, limit).await));
            }
            (game, tickets, errors, rooms)
        });
        tokio::time::sleep(plan.every).await;
    }
    // The arena rooms run until the demo's end, then an operator ends them.
    tokio::time::sleep(plan.duration.saturating_sub(start.elapsed())).await;
    let mut welcomes = Vec::new();
    let mut waits = Vec::new();
    // An operator ends every arena room (those matched late included).
    let ender = {
        let control = control.clone();
        tokio::spawn(async move {
            loop {
                if let Ok(v) = control.view().await {
                    for w in v.worlds.values() {
                        if w.spec.game == "arena" && !w.ending {
                            let _ = control.end_world(w.id).await;
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        })
    };
    while let Some(done) = games.join_next().await {
        let Ok((game, tickets, errors, rooms)) = done else {
            continue;
        };
        report.matchmaking.tickets += (tickets.len() + errors.len()) as u64;
        report.matchmaking.matched += tickets.len() as u64;
        report.matchmaking.failed += errors.len() as u64;
        for (waited, worst) in tickets {
            waits.push(waited as f64);
            report.matchmaking.worst_rtt_ms = report.matchmaking.worst_rtt_ms.max(worst);
        }
        for e in errors {
            if report.errors.len() < 5 {
                report.errors.push(e);
            }
        }
        for (_, seen) in rooms {
            *report.created.entry(game.into()).or_default() += 1;
            let mut started = false;
            let mut result = None;
            for s in seen {
                match s {
                    Ok(s) => {
                        started |= s.started;
                        report.moves += s.moves;
                        report.moves_refused += s.refused;
                        report.moves_unknown += s.unknown;
                        report.events_lost += s.lost;
                        if let Some(w) = s.welcome {
                            welcomes.push(w.as_secs_f64() * 1000.0);
                        }
                        result = result.or(s.result);
                    }
                    Err(e) if report.errors.len() < 5 => report.errors.push(e),
                    Err(_) => {}
                }
            }
            report.started += u64::from(started);
            match result {
                Some(r) => {
                    report.ended += 1;
                    *report.results.entry(r.reason).or_default() += 1;
                }
                None if game == "tictactoe" => report.unfinished += 1,
                None => {}
            }
        }
    }
    ender.abort();
    waits.sort_by(f64::total_cmp);
    if let (Some(mid), Some(max)) = (waits.get(waits.len() / 2), waits.last()) {
        report.matchmaking.queue_to_match_ms = (*mid, *max);
    }
    // What the control plane recorded (published by the owner, fenced by its
    // epoch), for rooms not yet removed.
    // The owner's write and the view's watch can trail the players' last
    // event: look for up to 5 s (what is never recorded stays uncounted).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        if let Ok(v) = control.view().await {
            report.results_recorded = v
                .worlds
                .values()
                .filter(|w| w.status.phase == Phase::Ended && w.status.result.is_some())
                .count() as u64;
        }
        if report.results_recorded >= report.ended || tokio::time::Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    welcomes.sort_by(f64::total_cmp);
    if let (Some(mid), Some(max)) = (welcomes.get(welcomes.len() / 2), welcomes.last()) {
        report.queue_to_welcome_ms = (*mid, *max);
    }
    report
}

impl RoomsReport {
    /// One line per fact, for the demo's text report.
    pub fn text(&self) -> String {
        let created: Vec<String> = self
            .created
            .iter()
            .map(|(g, n)| format!("{n} {g}"))
            .collect();
        let results: Vec<String> = self
            .results
            .iter()
            .map(|(r, n)| format!("{n} {r}"))
            .collect();
        format!(
            "matchmaking   {} tickets → {} matched ({} failed) through skylane-match; queue → match p50 {:.0} ms, max {:.0} ms; worst estimated RTT in a match {} ms\nworlds        created {} by the matchmaker on the control plane; {} started, {} ended ({}), {} results recorded; {} unfinished\n              {} moves ({} refused, {} unknown and replayed); {} events lost; queue → first welcome p50 {:.1} ms, max {:.1} ms\n",
            self.matchmaking.tickets,
            self.matchmaking.matched,
            self.matchmaking.failed,
            self.matchmaking.queue_to_match_ms.0,
            self.matchmaking.queue_to_match_ms.1,
            self.matchmaking.worst_rtt_ms,
            created.join(" + "),
            self.started,
            self.ended,
            results.join(", "),
            self.results_recorded,
            self.unfinished,
            self.moves,
            self.moves_refused,
            self.moves_unknown,
            self.events_lost,
            self.queue_to_welcome_ms.0,
            self.queue_to_welcome_ms.1,
        ) + &self.failover.as_ref().map_or(String::new(), |f| {
            format!(
                "failover      killed {} at {:.1} s: {}/{} of its worlds taken over by their standbys, kill → new owner p50 {:.0} ms, max {:.0} ms (lease TTL {} ms); room events lost {}\n",
                f.killed, f.at_s, f.taken_over, f.worlds, f.failover_ms.0, f.failover_ms.1, f.lease_ttl_ms, self.events_lost
            )
        })
    }
}
