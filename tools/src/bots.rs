//! Simulated players for the demo and the load generator.
//!
//! A bot walks its avatar (movement datagrams at `rate_hz`), trades a coin with
//! another player now and then while declaring the version of its avatar it read
//! (optimistic concurrency: its own in-flight moves make some trades conflict, and
//! it retries with the versions the conflict reports), puts critical map markers,
//! optionally sprays bulk decals, and, if it is a cheater, teleports, fires off
//! cooldown and floods its movement lane. It checks that every channel's sequence
//! numbers arrive exactly once and in order, and keeps hdrhistogram latencies of
//! its action round trips (corrected for coordinated omission at the bot's own
//! pace) and the SDK's event-propagation histograms.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering as AtOrd};
use std::sync::Arc;
use std::time::Duration;

use hdrhistogram::Histogram;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use skylane_client::{Client, ClientEvent, ClientStats};
use skylane_origin::{ArenaAction, ArenaEvent};
use skylane_origin::{Item, Player};
use skylane_proto::{ChannelId, EntityId, EntityVersion, EventClass, Outcome, RejectCode};
use tokio::sync::watch;
use tokio::time::Instant;

/// Highest latency recorded (60 s), microseconds.
pub const MAX_US: u64 = 60_000_000;

/// A new latency histogram (1 µs to 60 s, 2 significant digits: about 20 KB).
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_US, 2).expect("constant, valid bounds")
}

/// Histograms per event class, each created at its first sample (thousands of
/// bots each keep a few).
pub type ByClass = [Option<Histogram<u64>>; EventClass::COUNT];

/// Records `us` in a lazily created histogram; with `interval`, corrected for
/// coordinated omission (missing samples at that pace are filled in).
pub fn record(h: &mut Option<Histogram<u64>>, us: u64, interval: Option<u64>) {
    let h = h.get_or_insert_with(histogram);
    let us = us.clamp(1, MAX_US);
    let _ = match interval {
        Some(i) => h.record_correct(us, i.max(1)),
        None => h.record(us),
    };
}

/// What a bot does and how often.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BotPlan {
    /// Movement updates per second; 0: the bot does not move (it steps once a
    /// second for its other actions).
    pub rate_hz: f64,
    /// Fraction of the map's speed limit the bot walks at (0..1).
    pub speed: f32,
    /// A coin trade every this many steps (0: never).
    pub trade_every: u32,
    /// A critical map marker every this many steps (0: never).
    pub mark_every: u32,
    /// A bulk spray every this many steps (0: never).
    pub spray_every: u32,
    /// Spray size in bytes.
    pub spray_bytes: usize,
    /// A cheat attempt every this many steps (0: an honest bot).
    pub cheat_every: u32,
    /// An origin ping every this many steps (0: never).
    pub ping_every: u32,
    /// Map size (the arena's width and height).
    pub map: (f32, f32),
    /// The arena's speed limit, units per second.
    pub max_speed: f32,
    /// A cheater's sustained flood: this many messages per second of this class
    /// for the whole run, on top of its cheats (`loadgen --flood`).
    pub flood: Option<(EventClass, f64)>,
}

impl Default for BotPlan {
    fn default() -> Self {
        Self {
            rate_hz: 10.0,
            speed: 0.5,
            trade_every: 20,
            mark_every: 50,
            spray_every: 0,
            spray_bytes: 2048,
            cheat_every: 0,
            ping_every: 0,
            map: (400.0, 400.0),
            max_speed: 10.0,
            flood: None,
        }
    }
}

impl BotPlan {
    /// Steps per second: the movement rate, or 1 for a bot that does not move.
    pub fn step_hz(&self) -> f64 {
        if self.rate_hz > 0.0 {
            self.rate_hz.max(0.1)
        } else {
            1.0
        }
    }
}

/// Counters every bot updates as it goes (for progress displays).
#[derive(Debug, Default)]
pub struct Live {
    /// Bots whose avatar spawned.
    pub playing: AtomicU64,
    /// Events received.
    pub events: AtomicU64,
    /// Actions answered.
    pub actions: AtomicU64,
    /// Conflicts answered.
    pub conflicts: AtomicU64,
    /// Cheat attempts refused.
    pub cheats_caught: AtomicU64,
    /// Sequence gaps and duplicates seen.
    pub lost: AtomicU64,
}

/// Counts of one bot (summable).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct BotCounts {
    /// Movement updates sent.
    pub moves_sent: u64,
    /// Reliable actions sent (trades, retries, markers, sprays, cheats).
    pub actions_sent: u64,
    /// Reliable actions answered with an outcome (applied, conflict, rejected).
    pub answered: u64,
    /// Actions applied.
    pub applied: u64,
    /// Conflict answers received.
    pub conflicts: u64,
    /// Trades applied after at least one conflict (resolved by retrying with the
    /// versions the conflict reported).
    pub conflicts_resolved: u64,
    /// Trades given up after the retry limit.
    pub conflicts_unresolved: u64,
    /// Honest actions refused by a game rule that is not anti-cheat (no coins...).
    pub rejected_rules: u64,
    /// Honest actions refused by an anti-cheat check (false positives; must be 0).
    pub false_positives: u64,
    /// Cheat attempts made at the origin (teleports, shots off cooldown).
    pub cheats_attempted: u64,
    /// Cheat attempts refused by the origin's validators.
    pub cheats_caught: u64,
    /// Flood messages sent past the edge rate limit (the relay counts the refusals).
    pub flood_sent: u64,
    /// Actions whose outcome is unknown (link failure) or that failed locally.
    pub unknown: u64,
    /// Events received.
    pub events: u64,
    /// Movement states received (latest wins; not events).
    pub movement_updates: u64,
    /// Events missing from a channel's sequence (must be 0).
    pub gaps: u64,
    /// Events the SDK skipped by resynchronising from a keyframe (must be 0).
    pub skipped: u64,
    /// Resynchronisations.
    pub resyncs: u64,
    /// Events received twice (must be 0).
    pub duplicates: u64,
    /// Reconnections.
    pub reconnects: u64,
    /// Resumes the origin could not make exact (the session had expired).
    pub resumes_incomplete: u64,
    /// Events those resumes lost (honest players: a loss).
    pub lost_on_resume: u64,
    /// Events a kicked cheater missed before it joined again (not owed).
    pub kicked_rejoined: u64,
    /// Cheaters the network kept out after a kick (refused as sanctioned on
    /// reconnecting: the run ends for them, not as an error).
    pub kept_out: u64,
    /// Offers made (and opened by the origin).
    pub offers_made: u64,
    /// Offers this bot accepted (the exchange happened).
    pub offers_accepted: u64,
    /// Offers this bot declined.
    pub offers_declined: u64,
    /// Reliable actions sent, by class rank.
    pub sent_by_class: [u64; EventClass::COUNT],
    /// Actions applied, by class rank.
    pub applied_by_class: [u64; EventClass::COUNT],
}

impl std::ops::AddAssign for BotCounts {
    fn add_assign(&mut self, o: Self) {
        self.moves_sent += o.moves_sent;
        self.resumes_incomplete += o.resumes_incomplete;
        self.lost_on_resume += o.lost_on_resume;
        self.kicked_rejoined += o.kicked_rejoined;
        self.kept_out += o.kept_out;
        self.offers_made += o.offers_made;
        self.offers_accepted += o.offers_accepted;
        self.offers_declined += o.offers_declined;
        for r in 0..EventClass::COUNT {
            self.sent_by_class[r] += o.sent_by_class[r];
            self.applied_by_class[r] += o.applied_by_class[r];
        }
        self.actions_sent += o.actions_sent;
        self.answered += o.answered;
        self.applied += o.applied;
        self.conflicts += o.conflicts;
        self.conflicts_resolved += o.conflicts_resolved;
        self.conflicts_unresolved += o.conflicts_unresolved;
        self.rejected_rules += o.rejected_rules;
        self.false_positives += o.false_positives;
        self.cheats_attempted += o.cheats_attempted;
        self.cheats_caught += o.cheats_caught;
        self.flood_sent += o.flood_sent;
        self.unknown += o.unknown;
        self.events += o.events;
        self.movement_updates += o.movement_updates;
        self.gaps += o.gaps;
        self.skipped += o.skipped;
        self.resyncs += o.resyncs;
        self.duplicates += o.duplicates;
        self.reconnects += o.reconnects;
    }
}

/// What a bot measured.
#[derive(Debug)]
pub struct BotOutcome {
    /// Counters.
    pub counts: BotCounts,
    /// Action round trip (send → outcome) per class of the action, microseconds.
    pub action_rtt: ByClass,
    /// Origin ping round trip (client → relay → origin → relay → client),
    /// microseconds.
    pub origin_rtt: Option<Histogram<u64>>,
    /// Time to learn of a conflict (send → conflict answer), microseconds.
    pub conflict_rtt: Option<Histogram<u64>>,
    /// Time from a trade's first send to its applied outcome when it conflicted
    /// first, microseconds.
    pub resolution: Option<Histogram<u64>>,
    /// Event propagation per event class (from the SDK), microseconds.
    pub propagation: Vec<Option<Histogram<u64>>>,
    /// The SDK's counters.
    pub stats: ClientStats,
    /// Relay the bot ended on.
    pub relay: Option<SocketAddr>,
    /// Why it stopped early, if it did.
    pub error: Option<String>,
}

/// Per-channel exactly-once check over the SDK's event stream.
#[derive(Debug, Default)]
pub struct SeqCheck {
    last: HashMap<ChannelId, u64>,
    /// Missing sequence numbers.
    pub gaps: u64,
    /// Repeated sequence numbers.
    pub duplicates: u64,
}

impl SeqCheck {
    /// A subscription (re)started after `seq`: a resume re-announces channels it
    /// already tracks, so a known cursor is kept, unless the subscription starts
    /// later (the client missed a removal and a re-add while it was away, and is
    /// owed nothing before `seq`).
    pub fn start(&mut self, channel: ChannelId, seq: u64) {
        let l = self.last.entry(channel).or_insert(seq);
        *l = (*l).max(seq);
    }

    /// A keyframe at `seq` (checkpoint or resync; a resync's skipped events are
    /// counted by the SDK): events continue after it.
    pub fn keyframe(&mut self, channel: ChannelId, seq: u64) {
        let l = self.last.entry(channel).or_insert(seq);
        *l = (*l).max(seq);
    }

    /// The channel is no longer received: a later subscription starts afresh.
    pub fn stop(&mut self, channel: ChannelId) {
        self.last.remove(&channel);
    }

    /// An event; returns whether it was in order.
    pub fn event(&mut self, channel: ChannelId, seq: u64) -> bool {
        match self.last.get(&channel).copied() {
            Some(l) if seq <= l => {
                self.duplicates += 1;
                false
            }
            Some(l) => {
                self.gaps += seq - l - 1;
                self.last.insert(channel, seq);
                seq == l + 1
            }
            None => {
                self.last.insert(channel, seq);
                true
            }
        }
    }
}

/// A simulated player.
pub struct Bot {
    client: Client,
    name: String,
    plan: BotPlan,
    rng: StdRng,
    live: Arc<Live>,
    avatar: Option<EntityId>,
    version: u64,
    pos: (f32, f32),
    /// When the avatar last moved (or was learned): a step covers the time since.
    moved_at: Option<Instant>,
    heading: f32,
    others: Vec<EntityId>,
    /// Offers made to this bot, waiting for its answer (a bound: at most
    /// [`MAX_PENDING_OFFERS`]; more are left to expire).
    offered: Vec<(EntityId, u64)>,
    /// Ids of this bot's own offers.
    next_offer: u64,
    check: SeqCheck,
    flooded: bool,
    counts: BotCounts,
    action_rtt: ByClass,
    origin_rtt: Option<Histogram<u64>>,
    conflict_rtt: Option<Histogram<u64>>,
    resolution: Option<Histogram<u64>>,
}

impl std::fmt::Debug for Bot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bot")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// Offers a bot keeps waiting for its answer.
const MAX_PENDING_OFFERS: usize = 8;

fn cheat_code(code: &RejectCode) -> bool {
    matches!(
        code,
        RejectCode::Speed
            | RejectCode::Cooldown
            | RejectCode::Range
            | RejectCode::RateLimited
            | RejectCode::Replayed
            | RejectCode::BadTimestamp
            | RejectCode::Banned
    )
}

impl Bot {
    /// A bot driving `client` as player `name` (the token's subject).
    pub fn new(client: Client, name: &str, plan: BotPlan, seed: u64, live: Arc<Live>) -> Self {
        Self {
            client,
            name: name.to_owned(),
            plan,
            rng: StdRng::seed_from_u64(seed),
            live,
            avatar: None,
            version: 0,
            pos: (0.0, 0.0),
            moved_at: None,
            heading: 0.0,
            others: Vec::new(),
            offered: Vec::new(),
            next_offer: 0,
            check: SeqCheck::default(),
            flooded: false,
            counts: BotCounts::default(),
            action_rtt: Default::default(),
            origin_rtt: None,
            conflict_rtt: None,
            resolution: None,
        }
    }

    fn on_event(&mut self, ev: ClientEvent) {
        match ev {
            ClientEvent::Subscriptions { added, removed } => {
                for c in removed {
                    self.check.stop(c);
                }
                for a in added {
                    self.check.start(a.channel, a.seq);
                }
            }
            // A new session (the old one could not be resumed) has a new avatar,
            // somewhere else: walking on from the old one's position would break
            // the speed rule. The avatar is learned again (spawn or keyframe).
            ClientEvent::Connected { resumed: false, .. } if self.avatar.is_some() => {
                self.avatar = None;
            }
            // Events the origin says this session will never receive (it was
            // away past the grace period): lost, whatever the channel checks see.
            // A cheater kicked by the origin comes back to a dropped session:
            // what it missed while kicked was never owed to it, so that is not
            // a loss of the network's (it is counted apart).
            ClientEvent::ResumeIncomplete { skipped } => {
                let n = skipped.iter().map(|r| r.len()).sum::<u64>();
                if self.plan.cheat_every > 0 {
                    self.counts.kicked_rejoined += n;
                } else {
                    self.counts.lost_on_resume += n;
                }
                self.counts.resumes_incomplete += 1;
            }
            // Movement is latest-wins state (datagrams), not a sequenced event.
            ClientEvent::Movement(u) => {
                self.counts.movement_updates += 1;
                if let Some(ArenaEvent::Moved {
                    entity, version, ..
                }) = ArenaEvent::decode(&u.payload)
                {
                    if Some(entity) == self.avatar {
                        self.version = self.version.max(version);
                    } else {
                        self.meet(entity);
                    }
                }
            }
            ClientEvent::Keyframe(k) => {
                self.check.keyframe(k.channel, k.seq);
                // Under load a batch may overtake the session's subscriptions at the
                // relay, and the bot then meets its avatar in a keyframe rather than
                // in its `Spawned` event.
                if self.avatar.is_none() {
                    self.find_avatar(&k.state);
                }
            }
            ClientEvent::Event(e) => {
                self.counts.events += 1;
                self.live.events.fetch_add(1, AtOrd::Relaxed);
                if !self.check.event(e.channel, e.seq) {
                    self.live.lost.fetch_add(1, AtOrd::Relaxed);
                }
                match ArenaEvent::decode(&e.payload) {
                    Some(ArenaEvent::Spawned {
                        entity,
                        player,
                        x,
                        y,
                        version,
                        ..
                    }) => {
                        if player == self.name {
                            self.adopt(entity, (x, y), version);
                        } else {
                            self.meet(entity);
                        }
                    }
                    Some(ArenaEvent::Moved {
                        entity, version, ..
                    }) => {
                        if Some(entity) == self.avatar {
                            self.version = self.version.max(version);
                        } else {
                            self.meet(entity);
                        }
                    }
                    Some(ArenaEvent::Traded {
                        a,
                        b,
                        a_version,
                        b_version,
                        ..
                    }) => {
                        if Some(a) == self.avatar {
                            self.version = self.version.max(a_version);
                        } else if Some(b) == self.avatar {
                            self.version = self.version.max(b_version);
                        }
                    }
                    // Killed: the avatar respawned elsewhere and walks on from there.
                    Some(ArenaEvent::Died {
                        entity,
                        x,
                        y,
                        version,
                        ..
                    }) if Some(entity) == self.avatar => {
                        let version = self.version.max(version);
                        self.adopt(entity, (x, y), version);
                    }
                    Some(ArenaEvent::Left { entity }) => self.others.retain(|o| *o != entity),
                    Some(ArenaEvent::Offered { offer })
                        if Some(offer.to) == self.avatar
                            && self.offered.len() < MAX_PENDING_OFFERS =>
                    {
                        self.offered.push((offer.from, offer.id));
                    }
                    _ => {}
                }
            }
            _ => {}
        }
    }

    /// Takes the bot's avatar (and its position and version) from a keyframe's
    /// state, if it is there.
    fn find_avatar(&mut self, state: &[u8]) {
        for (id, p) in keyframe_players(state) {
            if p.name == self.name {
                let version = self.version.max(p.version);
                self.adopt(id, (p.x, p.y), version);
            } else {
                self.meet(id);
            }
        }
    }

    /// The avatar is `entity`, standing at `pos`: the next step starts there, and
    /// covers only the time since.
    fn adopt(&mut self, entity: EntityId, pos: (f32, f32), version: u64) {
        self.avatar = Some(entity);
        self.pos = pos;
        self.version = version;
        self.moved_at = Some(Instant::now());
    }

    fn meet(&mut self, entity: EntityId) {
        if self.others.len() < 64 && !self.others.contains(&entity) {
            self.others.push(entity);
        }
    }

    /// Handles the events waiting; `Some` when the session ended (`Ok`: a
    /// cheater kept out, the expected end of its run).
    fn absorb(&mut self) -> Option<Result<(), String>> {
        while let Some(ev) = self.client.try_next_event() {
            if let ClientEvent::Error(e) = &ev {
                return Some(self.ended(e));
            }
            self.on_event(ev);
        }
        None
    }

    /// The session ended with `e`: a cheater refused as sanctioned was kept
    /// out after its kick (the network doing its job); anything else is an
    /// error.
    fn ended(&mut self, e: &skylane_client::ClientError) -> Result<(), String> {
        let sanctioned = matches!(
            e,
            skylane_client::ClientError::Refused {
                code: skylane_proto::RefusalCode::Sanctioned,
                ..
            }
        );
        if sanctioned && self.plan.cheat_every > 0 {
            self.counts.kept_out += 1;
            return Ok(());
        }
        Err(e.to_string())
    }

    /// Sends an action, records its round trip, and returns its outcome.
    async fn act(
        &mut self,
        class: EventClass,
        reads: Vec<EntityVersion>,
        action: &ArenaAction,
        every: Duration,
    ) -> Option<Outcome> {
        self.counts.actions_sent += 1;
        self.counts.sent_by_class[class.rank()] += 1;
        let t = Instant::now();
        let r = self.client.act(class, reads, action.encode()).await;
        let us = (t.elapsed().as_micros() as u64).clamp(1, MAX_US);
        self.live.actions.fetch_add(1, AtOrd::Relaxed);
        match r {
            Ok(o) => {
                if !matches!(o, Outcome::Unknown { .. }) {
                    self.counts.answered += 1;
                }
                let interval = every.as_micros() as u64;
                record(&mut self.action_rtt[class.rank()], us, Some(interval));
                match &o {
                    Outcome::Applied { .. } => {
                        self.counts.applied += 1;
                        self.counts.applied_by_class[class.rank()] += 1;
                    }
                    Outcome::Conflict { .. } => {
                        self.counts.conflicts += 1;
                        self.live.conflicts.fetch_add(1, AtOrd::Relaxed);
                        record(&mut self.conflict_rtt, us, None);
                    }
                    Outcome::Unknown { .. } => self.counts.unknown += 1,
                    Outcome::Rejected { .. } => {}
                }
                Some(o)
            }
            Err(_) => {
                self.counts.unknown += 1;
                None
            }
        }
    }

    /// One period's walk at the plan's speed.
    fn step_len(&self) -> f32 {
        self.plan.max_speed * self.plan.speed / self.plan.step_hz() as f32
    }

    fn walk(&mut self) -> ArenaAction {
        if self.rng.gen_bool(0.1) {
            self.heading += self.rng.gen_range(-1.0..1.0);
        }
        // An honest player covers the time since its last move, at most a period
        // (the first step after a spawn may come sooner than a period).
        let now = Instant::now();
        let period = 1.0 / self.plan.step_hz() as f32;
        let since = self
            .moved_at
            .map_or(period, |t| now.duration_since(t).as_secs_f32());
        self.moved_at = Some(now);
        let d = self.step_len() * (since / period).min(1.0);
        let (w, h) = self.plan.map;
        let mut nx = self.pos.0 + self.heading.cos() * d;
        let mut ny = self.pos.1 + self.heading.sin() * d;
        if !(2.0..=w - 2.0).contains(&nx) || !(2.0..=h - 2.0).contains(&ny) {
            self.heading += std::f32::consts::PI;
            nx = self.pos.0 + self.heading.cos() * d;
            ny = self.pos.1 + self.heading.sin() * d;
        }
        self.pos = (nx.clamp(0.0, w), ny.clamp(0.0, h));
        ArenaAction::Move {
            x: self.pos.0,
            y: self.pos.1,
        }
    }

    async fn trade(&mut self, every: Duration) {
        let (Some(me), false) = (self.avatar, self.others.is_empty()) else {
            return;
        };
        let partner = self.others[self.rng.gen_range(0..self.others.len())];
        let action = ArenaAction::Trade {
            partner,
            give_coins: 1,
            give_items: vec![],
            get_coins: 0,
            get_items: vec![],
        };
        let mut reads = vec![EntityVersion {
            entity: me,
            version: self.version,
        }];
        let start = Instant::now();
        let mut conflicted = false;
        for _ in 0..5 {
            match self
                .act(EventClass::State, reads.clone(), &action, every)
                .await
            {
                Some(Outcome::Applied { .. }) => {
                    if conflicted {
                        self.counts.conflicts_resolved += 1;
                        record(
                            &mut self.resolution,
                            start.elapsed().as_micros() as u64,
                            None,
                        );
                    }
                    return;
                }
                Some(Outcome::Conflict { current, .. }) => {
                    conflicted = true;
                    if let Some(v) = current.iter().find(|v| v.entity == me) {
                        self.version = self.version.max(v.version);
                    }
                    reads = current;
                }
                Some(Outcome::Rejected { code, .. }) => {
                    self.honest_rejection(&code);
                    return;
                }
                Some(Outcome::Unknown { .. }) | None => return,
            }
        }
        self.counts.conflicts_unresolved += 1;
    }

    /// Offers a partner an exchange (2 coins for 1): nothing moves until it
    /// accepts.
    async fn offer(&mut self, every: Duration) {
        if self.avatar.is_none() || self.others.is_empty() {
            return;
        }
        let partner = self.others[self.rng.gen_range(0..self.others.len())];
        self.next_offer += 1;
        let a = ArenaAction::Offer {
            id: self.next_offer,
            partner,
            give_coins: 2,
            give_items: vec![],
            get_coins: 1,
            get_items: vec![],
            ttl_ticks: 300,
        };
        match self.act(EventClass::State, vec![], &a, every).await {
            Some(Outcome::Applied { .. }) => self.counts.offers_made += 1,
            Some(Outcome::Rejected { code, .. }) => self.honest_rejection(&code),
            _ => {}
        }
    }

    /// Answers the offers made to it: accepts nine in ten, declines the rest.
    /// An accept may find the offer gone (expired, its offerer left or out of
    /// coins): a rule's refusal, not a cheat.
    async fn answer_offers(&mut self, every: Duration) {
        for (from, id) in std::mem::take(&mut self.offered) {
            let accept = self.rng.gen_range(0..10) > 0;
            let a = if accept {
                ArenaAction::Accept { from, id }
            } else {
                ArenaAction::Decline { from, id }
            };
            match self.act(EventClass::State, vec![], &a, every).await {
                Some(Outcome::Applied { .. }) if accept => self.counts.offers_accepted += 1,
                Some(Outcome::Applied { .. }) => self.counts.offers_declined += 1,
                Some(Outcome::Rejected { code, .. }) => self.honest_rejection(&code),
                _ => {}
            }
        }
    }

    fn honest_rejection(&mut self, code: &RejectCode) {
        if cheat_code(code) {
            self.counts.false_positives += 1;
        } else {
            self.counts.rejected_rules += 1;
        }
    }

    async fn honest(&mut self, class: EventClass, action: ArenaAction, every: Duration) {
        if let Some(Outcome::Rejected { code, .. }) = self.act(class, vec![], &action, every).await
        {
            self.honest_rejection(&code);
        }
    }

    /// Counts a cheat attempt whose outcome is known (a lost connection proves
    /// nothing either way).
    fn judge_cheat(&mut self, o: Option<Outcome>) {
        match o {
            Some(Outcome::Rejected { code, .. }) if cheat_code(&code) => {
                self.counts.cheats_attempted += 1;
                self.counts.cheats_caught += 1;
                self.live.cheats_caught.fetch_add(1, AtOrd::Relaxed);
            }
            Some(Outcome::Rejected { .. } | Outcome::Applied { .. } | Outcome::Conflict { .. }) => {
                self.counts.cheats_attempted += 1;
            }
            Some(Outcome::Unknown { .. }) | None => {}
        }
    }

    async fn cheat(&mut self, n: u64, every: Duration) {
        match n % 3 {
            0 => {
                // Teleport: ten times the speed limit allows.
                let (w, h) = self.plan.map;
                let jump = self.plan.max_speed * 10.0;
                let x = if self.pos.0 + jump < w {
                    self.pos.0 + jump
                } else {
                    self.pos.0 - jump
                };
                let a = ArenaAction::Move {
                    x: x.clamp(0.0, w),
                    y: self.pos.1.clamp(0.0, h),
                };
                let o = self.act(EventClass::State, vec![], &a, every).await;
                self.judge_cheat(o);
            }
            1 => {
                // Two shots in consecutive ticks: the second is inside the cooldown.
                let a = ArenaAction::Fire {
                    x: self.pos.0 + 1.0,
                    y: self.pos.1,
                };
                let first = self.act(EventClass::State, vec![], &a, every).await;
                if let Some(Outcome::Rejected { code, .. }) = &first {
                    self.honest_rejection(code);
                }
                let o = self.act(EventClass::State, vec![], &a, every).await;
                self.judge_cheat(o);
            }
            _ if !self.flooded => {
                // Once: a burst of movement updates past the edge's rate limit
                // (burst 120); the relay refuses what exceeds the bucket and counts
                // the violations (below the 50 that would disconnect the session).
                self.flooded = true;
                let a = ArenaAction::Move {
                    x: self.pos.0,
                    y: self.pos.1,
                };
                for _ in 0..150 {
                    if self.client.send(EventClass::Movement, a.encode()).is_ok() {
                        self.counts.flood_sent += 1;
                    }
                }
            }
            _ => {}
        }
    }

    /// Plays until `stop` turns true; closes the session and returns what it measured.
    pub async fn run(mut self, mut stop: watch::Receiver<bool>) -> BotOutcome {
        let error = self.play(&mut stop).await.err();
        let _ = self.absorb();
        let counts = BotCounts {
            gaps: self.check.gaps,
            duplicates: self.check.duplicates,
            ..self.counts
        };
        let stats = self.client.stats();
        let counts = BotCounts {
            skipped: stats.order.skipped_events,
            resyncs: stats.order.resyncs,
            reconnects: stats.reconnects,
            ..counts
        };
        let out = BotOutcome {
            counts,
            action_rtt: self.action_rtt,
            origin_rtt: self.origin_rtt,
            conflict_rtt: self.conflict_rtt,
            resolution: self.resolution,
            propagation: self.client.latency_histograms(),
            relay: self.client.relay(),
            stats,
            error,
        };
        self.client.close().await;
        out
    }

    async fn play(&mut self, stop: &mut watch::Receiver<bool>) -> Result<(), String> {
        // Wait for the avatar.
        let deadline = Instant::now() + Duration::from_secs(15);
        while self.avatar.is_none() {
            tokio::select! {
                ev = self.client.next_event() => match ev {
                    Some(ClientEvent::Error(e)) => return self.ended(&e),
                    Some(ev) => self.on_event(ev),
                    None => return Err("client stopped".into()),
                },
                () = tokio::time::sleep_until(deadline) => return Err("avatar never spawned".into()),
                _ = stop.changed() => return Ok(()),
            }
        }
        self.live.playing.fetch_add(1, AtOrd::Relaxed);
        self.heading = self.rng.gen_range(0.0..std::f32::consts::TAU);
        let period = Duration::from_secs_f64(1.0 / self.plan.step_hz());
        let every = |k: u32| period * k.max(1);
        // Spread the bots' periodic actions over their periods.
        let phase = u64::from(self.rng.gen::<u16>());
        // Players do not step in lockstep: start at a random point of the period.
        let offset = period.mul_f64(self.rng.gen_range(0.0..1.0));
        let mut tick = tokio::time::interval_at(Instant::now() + offset, period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut n: u64 = 0;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.changed() => return Ok(()),
            }
            if *stop.borrow() {
                return Ok(());
            }
            if let Some(end) = self.absorb() {
                return end;
            }
            n += 1;
            let k = n + phase;
            if self.plan.rate_hz > 0.0 && self.avatar.is_some() {
                let mv = self.walk();
                if self.client.send(EventClass::Movement, mv.encode()).is_ok() {
                    self.counts.moves_sent += 1;
                }
            }
            let due = |e: u32| e > 0 && k % u64::from(e) == 0;
            if due(self.plan.trade_every) {
                self.trade(every(self.plan.trade_every)).await;
                self.offer(every(self.plan.trade_every)).await;
            }
            if !self.offered.is_empty() {
                self.answer_offers(every(self.plan.trade_every.max(1)))
                    .await;
            }
            if due(self.plan.mark_every) {
                let a = ArenaAction::Mark {
                    x: self.pos.0,
                    y: self.pos.1,
                };
                self.honest(EventClass::Critical, a, every(self.plan.mark_every))
                    .await;
            }
            if due(self.plan.spray_every) {
                let data: Vec<u8> = (0..self.plan.spray_bytes).map(|i| i as u8).collect();
                self.honest(
                    EventClass::Bulk,
                    ArenaAction::Spray { data },
                    every(self.plan.spray_every),
                )
                .await;
            }
            if due(self.plan.ping_every) {
                if let Ok(rtt) = self.client.ping_origin().await {
                    let interval = every(self.plan.ping_every).as_micros() as u64;
                    record(&mut self.origin_rtt, rtt.as_micros() as u64, Some(interval));
                }
            }
            if due(self.plan.cheat_every) {
                self.cheat(
                    k / u64::from(self.plan.cheat_every),
                    every(self.plan.cheat_every),
                )
                .await;
            }
            if let Some((class, rate)) = self.plan.flood.filter(|_| self.plan.cheat_every > 0) {
                self.flood_step(class, rate);
            }
        }
    }

    /// One step's share of a sustained flood: `rate / step_hz` messages, sent
    /// without waiting (the relay's edge guard refuses the excess, then cuts the
    /// session; the SDK reconnects and the flood goes on until the run ends).
    fn flood_step(&mut self, class: EventClass, rate: f64) {
        let n = (rate / self.plan.step_hz()).round().max(1.0) as u64;
        let a = ArenaAction::Move {
            x: self.pos.0,
            y: self.pos.1,
        };
        for _ in 0..n {
            if self.client.send(class, a.encode()).is_ok() {
                self.counts.flood_sent += 1;
            }
        }
    }
}

/// The players in an arena keyframe's state (none if it does not decode).
fn keyframe_players(state: &[u8]) -> Vec<(EntityId, Player)> {
    type State = (Vec<(EntityId, Player)>, Vec<(EntityId, Item)>);
    postcard::from_bytes::<State>(state)
        .map(|(players, _)| players)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seq_check_counts_gaps_and_duplicates() {
        let c = ChannelId::World;
        let mut s = SeqCheck::default();
        s.start(c, 10);
        assert!(s.event(c, 11));
        assert!(s.event(c, 12));
        assert!(!s.event(c, 12));
        assert!(!s.event(c, 15));
        assert_eq!((s.gaps, s.duplicates), (2, 1));
        // A resume re-announces the channel from an older cursor: the known one stays.
        s.start(c, 3);
        assert!(s.event(c, 16));
        // A checkpoint keyframe at the current position changes nothing; one ahead
        // moves the cursor (the SDK counts what a resync skipped).
        s.keyframe(c, 16);
        s.keyframe(c, 20);
        assert!(s.event(c, 21));
        assert_eq!((s.gaps, s.duplicates), (2, 1));
        // Leaving a channel and coming back later starts from the new cursor.
        s.stop(c);
        s.start(c, 40);
        assert!(s.event(c, 41));
        assert_eq!((s.gaps, s.duplicates), (2, 1));
        // A resume that says the subscription restarted later (a removal and a
        // re-add missed while away) moves the cursor: nothing before it was owed.
        s.start(c, 50);
        assert!(s.event(c, 51));
        assert_eq!((s.gaps, s.duplicates), (2, 1));
    }

    #[test]
    fn a_keyframe_names_the_players_it_holds() {
        use skylane_origin::{Arena, ArenaConfig, Emit, Grid, World};
        use skylane_proto::ChannelId;

        let mut arena = Arena::new(ArenaConfig::default());
        arena.join("alice", None, 0, &mut Emit::default());
        let grid = Grid {
            width: 400.0,
            height: 400.0,
            cell: 100.0,
            radius: 1,
            margin: 5.0,
            clip: None,
        };
        let state = arena.channel_state(ChannelId::World, &grid);
        let players = keyframe_players(&state);
        assert_eq!(players.len(), 1);
        assert_eq!(players[0].1.name, "alice");
        assert!(keyframe_players(b"not a keyframe").is_empty());
    }

    #[test]
    fn counts_add_up() {
        let mut a = BotCounts {
            events: 2,
            gaps: 1,
            ..Default::default()
        };
        a += BotCounts {
            events: 3,
            cheats_caught: 4,
            ..Default::default()
        };
        assert_eq!((a.events, a.gaps, a.cheats_caught), (5, 1, 4));
    }
}
