//! Zones at the engine level: one arena world split over zones, each a
//! journaled (`Persistent`) engine with its own handoff core, wired by an
//! in-memory link with latency, loss and partitions in simulated time. What
//! this proves: avatars that cross a border (with hysteresis) move to the
//! neighbouring zone exactly once, with their session (replay window,
//! channels); a crash of either side at each step of the handoff leaves each
//! avatar in exactly one zone after recovery; a partition freezes the avatar
//! at its source until it heals; actions sent while it moves are answered
//! `Moved` and applied once at the new zone.

use std::collections::BTreeMap;
use std::path::PathBuf;

use skylane_origin::*;
use skylane_proto::zones::{HandoffId, ZoneIdx, ZoneLayout, ZoneMsg, ZoneRecord};
use skylane_proto::{
    Action, ChainSigner, ChannelId, EntityId, EventClass, Outcome, RejectCode, Role, SessionId,
    WorldId,
};

const KEY: [u8; 32] = [9; 32];
const W: WorldId = WorldId(77);
const TICK_US: u64 = 1_000_000 / 30;
/// Hysteresis of the handoff (map units).
const H: f32 = 10.0;

fn arena_cfg() -> ArenaConfig {
    ArenaConfig {
        // Fast walkers: 20 units a tick.
        max_speed: 600.0,
        items: 40,
        ..ArenaConfig::default()
    }
}

/// A step of the handoff to crash a zone at.
#[derive(Debug, Clone, Copy, PartialEq)]
enum CrashAt {
    /// The source, right after journaling `Out` (before sending it).
    SourceAfterOut,
    /// The target, right after journaling `In` (before answering).
    TargetAfterIn,
    /// The source, with the answer in hand, before journaling `Commit`.
    SourceBeforeCommit,
    /// The source, right after journaling `Commit` (before telling the target).
    SourceAfterCommit,
}

struct Zone {
    dir: PathBuf,
    /// `None` only for the instant of a crash.
    core: Option<Persistent<Arena>>,
    handoffs: Handoffs,
}

impl Zone {
    fn core(&self) -> &Persistent<Arena> {
        self.core.as_ref().expect("running")
    }

    fn core_mut(&mut self) -> &mut Persistent<Arena> {
        self.core.as_mut().expect("running")
    }

    fn engine(&self) -> &Engine<Arena> {
        self.core().engine()
    }
}

struct Net {
    _tmp: tempfile::TempDir,
    layout: ZoneLayout,
    zones: Vec<Zone>,
    /// (deliver at ms, to, message)
    wire: Vec<(u64, ZoneIdx, ZoneMsg)>,
    now_ms: u64,
    latency_ms: u64,
    partitioned: bool,
    crash: Option<CrashAt>,
    crashes: u32,
    /// When each handoff's `Out` was journaled (ms).
    outs: BTreeMap<HandoffId, u64>,
    /// Out journaled → In journaled at the target, per handoff (ms).
    latencies: Vec<u64>,
    /// Handoffs started per entity.
    handoffs_of: BTreeMap<EntityId, u32>,
    /// Answers to actions, in order.
    results: Vec<(SessionId, u64, Outcome)>,
    /// Sessions that moved: (session, to).
    moved: Vec<(SessionId, ZoneIdx)>,
    /// Cell writes seen (each checked to be its zone's).
    cell_writes: u64,
    /// Violations the zones recorded.
    violations: u64,
    /// Every (zone, entity) a zone published a movement state of.
    shown: std::collections::BTreeSet<(usize, EntityId)>,
    /// Every cross-zone request delivered twice.
    dup_requests: bool,
    /// Answers to drop on the wire (lost), this many more.
    drop_answers: u32,
    /// Crash the zone that journals the next `Served`, before it answers.
    crash_after_served: bool,
    /// Arena events published, per zone: (zone, event).
    events: Vec<(usize, ArenaEvent)>,
    /// Spectator feed frames the zones output: (zone, frame).
    feeds: Vec<(usize, std::sync::Arc<skylane_proto::FeedFrame>)>,
}

fn handoff_cfg() -> HandoffConfig {
    HandoffConfig {
        resend_ms: 20,
        ..HandoffConfig::default()
    }
}

impl Net {
    /// `nx` × `ny` zones over the arena's 10 × 10 cells.
    fn new(nx: u16, ny: u16) -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let arena = Arena::new(arena_cfg());
        let grid = arena.grid();
        let layout = ZoneLayout::even(grid.cols(), grid.rows(), grid.cell, nx, ny).unwrap();
        let zones = layout
            .zones()
            .map(|z| {
                let mut engine = Engine::new(
                    Arena::new(arena_cfg()),
                    grid,
                    EngineConfig::new(W),
                    ChainSigner::from_bytes(&KEY),
                    0,
                );
                engine
                    .enter_zone(ZoneSetup {
                        layout: layout.clone(),
                        zone: z,
                        hysteresis: H,
                        margin: 20.0,
                    })
                    .unwrap();
                let dir = tmp.path().join(format!("zone-{}", z.0));
                let meta = JournalMeta {
                    world_kind: "arena".into(),
                    world: W,
                    engine: EngineConfig::new(W),
                    grid,
                };
                let core =
                    Persistent::create(&dir, &meta, engine, PersistConfig::default()).unwrap();
                Zone {
                    dir,
                    core: Some(core),
                    handoffs: Handoffs::new(W, z, handoff_cfg()),
                }
            })
            .collect();
        Self {
            _tmp: tmp,
            layout,
            zones,
            wire: Vec::new(),
            now_ms: 0,
            latency_ms: 5,
            partitioned: false,
            crash: None,
            crashes: 0,
            outs: BTreeMap::new(),
            latencies: Vec::new(),
            handoffs_of: BTreeMap::new(),
            results: Vec::new(),
            moved: Vec::new(),
            cell_writes: 0,
            violations: 0,
            shown: std::collections::BTreeSet::new(),
            dup_requests: false,
            drop_answers: 0,
            crash_after_served: false,
            events: Vec::new(),
            feeds: Vec::new(),
        }
    }

    /// Joins a player at the home zone (zone 0); the arena places it
    /// anywhere, and a handoff takes it to its zone.
    fn join(&mut self, s: u64) -> EntityId {
        let e = self.zones[0]
            .core_mut()
            .handle_join(SessionId(s), &format!("p{s}"), Role::Player, None)
            .unwrap()
            .unwrap();
        self.pump(0);
        e
    }

    /// The zone an entity is owned by now: where it is in the world, or
    /// frozen at a source whose target has not taken it. Fails the test
    /// unless exactly one.
    fn owner(&self, e: EntityId) -> ZoneIdx {
        let mut owners = Vec::new();
        for (i, z) in self.zones.iter().enumerate() {
            let engine = z.engine();
            let here = engine.world().player(e).is_some();
            let leaving = engine
                .handoff_ledger()
                .and_then(|l| l.leaving().find(|(_, t)| t.entity == e).map(|(id, _)| id));
            assert!(
                !(here && leaving.is_some()),
                "{e:?} both active and leaving in zone {i}"
            );
            let owns = here
                || leaving.is_some_and(|id| {
                    let target = self.zones[usize::from(id.to.0)].engine();
                    !target.handoff_ledger().is_some_and(|l| l.took(id))
                });
            if owns {
                owners.push(ZoneIdx(i as u8));
            }
        }
        assert_eq!(owners.len(), 1, "{e:?} owned by {owners:?}");
        owners[0]
    }

    /// The zone holding `s`'s session with its avatar active (not moving).
    fn home_of(&self, s: SessionId, e: EntityId) -> Option<usize> {
        self.zones
            .iter()
            .position(|z| z.core().has_session(s) && z.engine().world().player(e).is_some())
    }

    fn act(&mut self, zone: usize, s: SessionId, seq: u64, x: f32, y: f32) {
        self.zones[zone].core_mut().handle_action(
            s,
            Action {
                class: EventClass::Movement,
                seq,
                client_time_us: self.now_ms * 1000,
                reads: vec![],
                payload: ArenaAction::Move { x, y }.encode(),
            },
        );
        self.pump(zone);
    }

    /// Zone `i`'s process dies (its handoff core's pending outputs and its
    /// unwritten inputs with it) and restarts from its journal.
    fn crash_zone(&mut self, i: usize) {
        self.crashes += 1;
        let z = &mut self.zones[i];
        drop(z.core.take());
        let mut core = Persistent::open(
            &z.dir,
            "arena",
            ChainSigner::from_bytes(&KEY),
            PersistConfig::default(),
        )
        .unwrap_or_else(|e| panic!("zone {i} reopens: {e}"));
        core.rebase(self.now_ms * 1000);
        let ledger = core.engine().handoff_ledger().cloned().unwrap_or_default();
        z.core = Some(core);
        z.handoffs = Handoffs::recover(W, ZoneIdx(i as u8), handoff_cfg(), self.now_ms, ledger);
    }

    /// Acts on zone `i`'s outputs until none is left.
    fn pump(&mut self, i: usize) {
        loop {
            let mut busy = false;
            while let Some(out) = self.zones[i].core_mut().poll_output() {
                busy = true;
                match out {
                    Output::Crossing { transfer, to } => {
                        let e = transfer.entity;
                        let now = self.now_ms;
                        if self.zones[i].handoffs.begin(now, transfer, to).is_ok() {
                            *self.handoffs_of.entry(e).or_default() += 1;
                        }
                    }
                    Output::SessionMoved { session, to } => self.moved.push((session, to)),
                    Output::Result { session, result } => {
                        self.results.push((session, result.seq, result.outcome));
                    }
                    // Every cell channel has one writer: the zone that owns
                    // the cell (and only it subscribes sessions to it).
                    Output::Violation(_) => self.violations += 1,
                    Output::Batch(b) => {
                        self.writes(i, b.channel, false);
                        for e in &b.events {
                            if let Some(ev) = ArenaEvent::decode(&e.payload) {
                                self.events.push((i, ev));
                            }
                        }
                    }
                    Output::Movement(m) => {
                        self.writes(i, m.channel, false);
                        for e in &m.entries {
                            self.shown.insert((i, e.entity));
                        }
                    }
                    Output::ToZone { to, msg } => self.send(to, msg),
                    Output::Feed(f) => self.feeds.push((i, f)),
                    Output::Subscriptions { added, .. } => {
                        for c in added {
                            self.writes(i, c.channel, true);
                        }
                    }
                    _ => {}
                }
            }
            while let Some(out) = self.zones[i].handoffs.poll_output() {
                busy = true;
                match out {
                    ZoneOutput::Journal(rec) => {
                        let crash_before = matches!(
                            (&rec, self.crash),
                            (ZoneRecord::Commit { .. }, Some(CrashAt::SourceBeforeCommit))
                        );
                        if crash_before {
                            self.crash = None;
                            self.crash_zone(i);
                            return;
                        }
                        self.zones[i].core_mut().handle_zone(&rec).unwrap();
                        match &rec {
                            ZoneRecord::Out { id, .. } => {
                                self.outs.insert(*id, self.now_ms);
                            }
                            ZoneRecord::In { id, .. } => {
                                if let Some(t) = self.outs.get(id) {
                                    self.latencies.push(self.now_ms - t);
                                }
                            }
                            _ => {}
                        }
                        let crash_after = matches!(
                            (&rec, self.crash),
                            (ZoneRecord::Out { .. }, Some(CrashAt::SourceAfterOut))
                                | (ZoneRecord::In { .. }, Some(CrashAt::TargetAfterIn))
                                | (ZoneRecord::Commit { .. }, Some(CrashAt::SourceAfterCommit))
                        );
                        if crash_after {
                            self.crash = None;
                            self.crash_zone(i);
                            return;
                        }
                    }
                    ZoneOutput::Send { to, msg } => {
                        if !self.partitioned {
                            self.wire.push((self.now_ms + self.latency_ms, to, msg));
                        }
                    }
                }
            }
            if !busy {
                return;
            }
        }
    }

    /// Zone `i` writes `channel` (or, `subscribed`, subscribes a session to
    /// it): a cell must be its own; only the home zone subscribes anyone to
    /// the world and team channels (another zone's reach no relay).
    fn writes(&mut self, i: usize, channel: ChannelId, subscribed: bool) {
        match channel {
            ChannelId::Cell { x, y } => {
                let owner = usize::from(self.layout.zone_of_cell(x, y).0);
                assert_eq!(owner, i, "zone {i} writes {channel:?}, zone {owner}'s");
                self.cell_writes += 1;
            }
            // The world and team channels have one writer, the home zone
            // (other zones forward their events there).
            _ => assert_eq!(
                i, 0,
                "zone {i} writes {channel:?} (subscribed: {subscribed})"
            ),
        }
    }

    /// One millisecond passes.
    fn step(&mut self) {
        self.now_ms += 1;
        let now = self.now_ms;
        let (due, later): (Vec<_>, Vec<_>) = self.wire.drain(..).partition(|(at, ..)| *at <= now);
        self.wire = later;
        for (_, to, msg) in due {
            let i = usize::from(to.0);
            if matches!(msg, ZoneMsg::Request { .. } | ZoneMsg::Answer { .. }) {
                let request = matches!(msg, ZoneMsg::Request { .. });
                let reply = self.zones[i].core_mut().handle_request(&msg).unwrap();
                if request && self.crash_after_served {
                    self.crash_after_served = false;
                    self.crash_zone(i);
                    continue;
                }
                if let Some((to, reply)) = reply {
                    self.send(to, reply);
                }
                self.pump(i);
                continue;
            }
            if matches!(msg, ZoneMsg::FeedPart { .. }) {
                self.zones[i].core_mut().handle_feed_part(&msg);
                self.pump(i);
                continue;
            }
            if matches!(msg, ZoneMsg::Mirrors { .. }) {
                self.zones[i]
                    .core_mut()
                    .handle_mirrors(&msg, now * 1000)
                    .unwrap();
                self.pump(i);
                continue;
            }
            let z = &mut self.zones[i];
            let engine = z.core.as_ref().expect("running").engine();
            z.handoffs
                .handle_msg(&msg, |t| engine.can_import(t))
                .unwrap();
            self.pump(i);
        }
        for i in 0..self.zones.len() {
            let now_us = now * 1000;
            if now_us >= self.zones[i].core().poll_timeout() {
                self.zones[i].core_mut().handle_timeout(now_us).unwrap();
            }
            self.zones[i].handoffs.handle_timeout(now);
            self.pump(i);
            // Unanswered requests go again every 250 ms.
            if now % 250 == 0 {
                for (_, to, msg) in self.zones[i].core().zone_requests() {
                    self.send(to, msg);
                }
            }
        }
    }

    /// Puts a zone message on the wire (unless partitioned; a request
    /// twice when `dup_requests`; an answer lost while `drop_answers`).
    fn send(&mut self, to: ZoneIdx, msg: ZoneMsg) {
        if self.partitioned {
            return;
        }
        if matches!(msg, ZoneMsg::Answer { .. }) && self.drop_answers > 0 {
            self.drop_answers -= 1;
            return;
        }
        let at = self.now_ms + self.latency_ms;
        if self.dup_requests && matches!(msg, ZoneMsg::Request { .. }) {
            self.wire.push((at + 3, to, msg.clone()));
        }
        self.wire.push((at, to, msg));
    }

    fn run_ms(&mut self, ms: u64) {
        for _ in 0..ms {
            self.step();
        }
    }

    fn handoffs_in_flight(&self) -> usize {
        self.zones
            .iter()
            .map(|z| z.handoffs.leaving().count())
            .sum()
    }
}

/// A walker: its session, avatar and next sequence number.
struct Walker {
    s: SessionId,
    e: EntityId,
    seq: u64,
}

impl Walker {
    /// One step (≤ 15 units) towards `(x, y)` on the zone holding it, if any
    /// (while it moves between zones it waits). Returns where it is.
    fn step_to(&mut self, net: &mut Net, x: f32, y: f32) -> Option<(f32, f32)> {
        let z = net.home_of(self.s, self.e)?;
        let p = net.zones[z].engine().world().player(self.e)?.clone();
        let (dx, dy) = (x - p.x, y - p.y);
        let d = (dx * dx + dy * dy).sqrt();
        let k = if d > 15.0 { 15.0 / d } else { 1.0 };
        let (nx, ny) = (p.x + dx * k, p.y + dy * k);
        self.seq += 1;
        net.act(z, self.s, self.seq, nx, ny);
        Some((nx, ny))
    }
}

/// Walks `w` to `(x, y)`, one step a tick, checking ownership every tick.
fn walk(net: &mut Net, w: &mut Walker, x: f32, y: f32) {
    for _ in 0..400 {
        let pos = net
            .home_of(w.s, w.e)
            .and_then(|z| net.zones[z].engine().world().player(w.e).cloned())
            .map(|p| (p.x, p.y));
        if let Some((px, py)) = pos {
            if (px - x).abs() < 0.01 && (py - y).abs() < 0.01 {
                return;
            }
        }
        w.step_to(net, x, y);
        net.run_ms(TICK_US / 1000 + 1);
        net.owner(w.e);
    }
    panic!("{:?} never reached ({x}, {y})", w.e);
}

fn settle(net: &mut Net) {
    for _ in 0..200 {
        net.run_ms(50);
        if net.handoffs_in_flight() == 0 && net.wire.is_empty() {
            return;
        }
    }
    panic!(
        "handoffs never settled: {} in flight",
        net.handoffs_in_flight()
    );
}

fn walker(net: &mut Net, s: u64) -> Walker {
    let e = net.join(s);
    settle(net);
    Walker {
        s: SessionId(s),
        e,
        seq: 0,
    }
}

#[test]
fn a_player_walking_back_and_forth_is_handed_over_once_per_crossing() {
    let mut net = Net::new(2, 1);
    let mut w = walker(&mut net, 1);
    // Wherever it spawned, it lives in the zone its position is in.
    let z = net.owner(w.e);
    let p = net.zones[usize::from(z.0)]
        .engine()
        .world()
        .player(w.e)
        .unwrap()
        .clone();
    assert_eq!(net.layout.zone_at(p.x, p.y), z);
    walk(&mut net, &mut w, 450.0, 300.0);
    settle(&mut net);
    assert_eq!(net.owner(w.e), ZoneIdx(0));
    let before = net.handoffs_of.get(&w.e).copied().unwrap_or(0);
    // Along the border, inside the hysteresis band: no handoff.
    for _ in 0..3 {
        walk(&mut net, &mut w, 505.0, 300.0);
        walk(&mut net, &mut w, 495.0, 300.0);
    }
    settle(&mut net);
    assert_eq!(
        net.handoffs_of.get(&w.e).copied().unwrap_or(0),
        before,
        "no bounce"
    );
    assert_eq!(net.owner(w.e), ZoneIdx(0));
    // Across it and back three times: six handoffs, one per crossing.
    for _ in 0..3 {
        walk(&mut net, &mut w, 560.0, 300.0);
        settle(&mut net);
        assert_eq!(net.owner(w.e), ZoneIdx(1));
        walk(&mut net, &mut w, 440.0, 300.0);
        settle(&mut net);
        assert_eq!(net.owner(w.e), ZoneIdx(0));
    }
    assert_eq!(net.handoffs_of[&w.e], before + 6);
    assert!(net.cell_writes > 0, "cells were written (each by its zone)");
    // Back home: zone 1 remembers it left, zone 0 (where it is) does not.
    assert_eq!(net.zones[1].engine().moved_to(w.s), Some(ZoneIdx(0)));
    assert_eq!(net.zones[0].engine().moved_to(w.s), None);
    // Every action was applied exactly once or answered `Moved` (then sent
    // again, with a new sequence number, by the walker): never applied twice,
    // never rejected otherwise.
    let mut applied = std::collections::BTreeSet::new();
    for (s, seq, o) in &net.results {
        match o {
            Outcome::Applied { .. } => assert!(applied.insert((*s, *seq)), "applied twice"),
            Outcome::Rejected {
                code: RejectCode::Moved,
                ..
            } => {}
            other => panic!("{other:?}"),
        }
    }
    let p99 = {
        let mut l = net.latencies.clone();
        l.sort_unstable();
        l[(l.len() * 99 / 100).min(l.len() - 1)]
    };
    assert!(
        p99 <= 2 * TICK_US / 1000 + 2 * net.latency_ms,
        "handoff p99 {p99} ms over 2 ticks + the zones' round trip"
    );
}

/// Walks every walker to its target at once, one step a tick each,
/// checking every avatar's ownership every tick.
fn walk_all(net: &mut Net, walkers: &mut [Walker], targets: &[(f32, f32)]) {
    for _ in 0..400 {
        let mut arrived = true;
        for (w, &(x, y)) in walkers.iter_mut().zip(targets) {
            let at = net
                .home_of(w.s, w.e)
                .and_then(|z| net.zones[z].engine().world().player(w.e).cloned())
                .is_some_and(|p| (p.x - x).abs() < 0.01 && (p.y - y).abs() < 0.01);
            if !at {
                arrived = false;
                w.step_to(net, x, y);
            }
        }
        if arrived {
            return;
        }
        net.run_ms(TICK_US / 1000 + 1);
        for w in walkers.iter() {
            net.owner(w.e);
        }
    }
    panic!("not everyone arrived");
}

#[test]
fn two_hundred_players_crossing_at_once_each_land_once() {
    let mut net = Net::new(2, 1);
    let n = 200u64;
    let mut walkers: Vec<Walker> = (1..=n)
        .map(|s| Walker {
            s: SessionId(s),
            e: net.join(s),
            seq: 0,
        })
        .collect();
    settle(&mut net);
    // Joined at the home zone, spawned anywhere, handed to their zones.
    let per_zone: Vec<usize> = net
        .zones
        .iter()
        .map(|z| z.engine().world().players().count())
        .collect();
    assert_eq!(per_zone.iter().sum::<usize>(), n as usize, "{per_zone:?}");
    assert!(
        per_zone.iter().all(|c| *c > 50),
        "spread over the zones: {per_zone:?}"
    );
    // Everyone lines up just west of the border...
    let line: Vec<(f32, f32)> = (0..n).map(|i| (485.0, 5.0 + 4.9 * i as f32)).collect();
    walk_all(&mut net, &mut walkers, &line);
    settle(&mut net);
    let before: BTreeMap<EntityId, u32> = net.handoffs_of.clone();
    let measured_from = net.latencies.len();
    // ... and all cross it in the same tick.
    let across: Vec<(f32, f32)> = line.iter().map(|(_, y)| (515.0, *y)).collect();
    walk_all(&mut net, &mut walkers, &across);
    settle(&mut net);
    for w in &walkers {
        assert_eq!(net.owner(w.e), ZoneIdx(1));
        assert_eq!(
            net.handoffs_of.get(&w.e).copied().unwrap_or(0),
            before.get(&w.e).copied().unwrap_or(0) + 1,
            "one handoff for one crossing"
        );
    }
    assert_eq!(net.zones[1].engine().world().players().count(), n as usize);
    let total_coins: u64 = net
        .zones
        .iter()
        .map(|z| z.engine().world().total_coins())
        .sum();
    assert_eq!(
        total_coins,
        n * arena_cfg().start_coins,
        "nothing minted or lost"
    );
    let mut l = net.latencies[measured_from..].to_vec();
    assert_eq!(l.len(), n as usize);
    l.sort_unstable();
    let (p50, p99) = (l[l.len() / 2], l[(l.len() * 99 / 100).min(l.len() - 1)]);
    println!(
        "200 players crossing at once: Out -> In p50 {p50} ms, p99 {p99} ms (link {} ms one way, {} Hz)",
        net.latency_ms,
        1_000_000 / TICK_US
    );
    assert!(
        p99 <= 2 * TICK_US / 1000 + 2 * net.latency_ms,
        "p99 {p99} ms"
    );
}

fn crash_scenario(at: CrashAt) {
    let mut net = Net::new(2, 1);
    let mut w = walker(&mut net, 1);
    walk(&mut net, &mut w, 470.0, 500.0);
    settle(&mut net);
    assert_eq!(net.owner(w.e), ZoneIdx(0));
    let seq_before = w.seq;
    net.crash = Some(at);
    // Step over the border until the crash happened.
    for _ in 0..100 {
        if net.crash.is_none() {
            break;
        }
        w.step_to(&mut net, 560.0, 500.0);
        net.run_ms(TICK_US / 1000 + 1);
    }
    assert!(net.crash.is_none(), "{at:?}: crashed");
    // Whatever happened, once the zones recovered and talked, the avatar is
    // in exactly one zone, with its session and its items.
    settle(&mut net);
    let owner = net.owner(w.e);
    for (i, z) in net.zones.iter().enumerate() {
        // The home zone (0) keeps the session away for the world channel.
        assert_eq!(
            z.core().has_session(w.s),
            i == usize::from(owner.0) || i == 0,
            "{at:?}: the session came along, once"
        );
    }
    assert_eq!(net.home_of(w.s, w.e), Some(usize::from(owner.0)));
    if owner != ZoneIdx::HOME {
        assert_eq!(net.zones[0].engine().moved_to(w.s), Some(owner), "{at:?}");
    }
    // The replay window came along: an old sequence number is refused.
    let zi = usize::from(owner.0);
    net.act(zi, w.s, seq_before, 470.0, 500.0);
    let last = net.results.last().unwrap();
    assert!(
        matches!(
            last.2,
            Outcome::Rejected {
                code: RejectCode::Replayed,
                ..
            }
        ),
        "{at:?}: {last:?}"
    );
    // And it walks on.
    walk(&mut net, &mut w, 560.0, 500.0);
    settle(&mut net);
    assert_eq!(net.owner(w.e), ZoneIdx(1), "{at:?}");
    assert_eq!(net.crashes, 1);
    // The source remembers where the session went (through its crash and
    // journal): a relay re-opening it there (a resume at the home zone) is
    // sent after it, never given a second avatar; a late action is
    // answered `Moved`, nothing applied.
    assert_eq!(
        net.zones[0].engine().moved_to(w.s),
        Some(ZoneIdx(1)),
        "{at:?}"
    );
    let again = net.zones[0]
        .core_mut()
        .handle_join(w.s, "p1", Role::Player, None);
    assert_eq!(again, Err(JoinError::Moved(ZoneIdx(1))), "{at:?}");
    net.act(0, w.s, w.seq + 100, 560.0, 500.0);
    let last = net.results.last().unwrap();
    assert!(
        matches!(
            last.2,
            Outcome::Rejected {
                code: RejectCode::Moved,
                ..
            }
        ),
        "{at:?}: {last:?}"
    );
    assert_eq!(net.owner(w.e), ZoneIdx(1), "{at:?}");
}

#[test]
fn a_source_crash_after_out_hands_over_after_recovery() {
    crash_scenario(CrashAt::SourceAfterOut);
}

#[test]
fn a_target_crash_after_in_keeps_the_entity_it_journaled() {
    crash_scenario(CrashAt::TargetAfterIn);
}

#[test]
fn a_source_crash_before_commit_commits_after_recovery() {
    crash_scenario(CrashAt::SourceBeforeCommit);
}

#[test]
fn a_source_crash_after_commit_leaves_the_entity_at_the_target() {
    crash_scenario(CrashAt::SourceAfterCommit);
}

#[test]
fn a_partition_freezes_the_player_at_its_source_until_it_heals() {
    let mut net = Net::new(2, 1);
    let mut w = walker(&mut net, 1);
    walk(&mut net, &mut w, 480.0, 200.0);
    settle(&mut net);
    net.partitioned = true;
    for _ in 0..5 {
        if w.step_to(&mut net, 540.0, 200.0).is_none() {
            break;
        }
        net.run_ms(TICK_US / 1000 + 1);
    }
    // Out went nowhere: frozen at its source, owned there, for as long as the
    // partition lasts; its actions meanwhile are answered `Moved`.
    net.run_ms(2_000);
    assert_eq!(net.owner(w.e), ZoneIdx(0));
    assert!(net.zones[0].engine().is_leaving(w.e));
    net.act(0, w.s, w.seq + 1, 540.0, 200.0);
    assert!(matches!(
        net.results.last().unwrap().2,
        Outcome::Rejected {
            code: RejectCode::Moved,
            ..
        }
    ));
    net.partitioned = false;
    settle(&mut net);
    assert_eq!(net.owner(w.e), ZoneIdx(1));
    // The action answered `Moved` goes to the new zone and applies there,
    // once: its sequence number was not used up at the source.
    net.act(1, w.s, w.seq + 1, 540.0, 200.0);
    net.run_ms(TICK_US / 1000 + 1);
    let applied = |net: &Net| {
        net.results
            .iter()
            .filter(|(s, q, o)| {
                *s == w.s && *q == w.seq + 1 && matches!(o, Outcome::Applied { .. })
            })
            .count()
    };
    assert_eq!(applied(&net), 1);
    net.act(1, w.s, w.seq + 1, 540.0, 200.0);
    net.run_ms(TICK_US / 1000 + 1);
    assert!(matches!(
        net.results.last().unwrap().2,
        Outcome::Rejected {
            code: RejectCode::Replayed,
            ..
        }
    ));
    assert_eq!(applied(&net), 1, "never twice");
}

/// Zones count ticks apart: a player's last move and shot travel relative to
/// the source's tick, so the target's speed and cooldown checks see the time
/// that really passed, whatever its own tick count.
#[test]
fn tick_stamps_travel_relative_to_the_zones_clocks() {
    let mut from = Arena::new(arena_cfg());
    let mut emit = Emit::default();
    let e = from.join("p", None, 100, &mut emit);
    from.place(e, 400.0, 400.0);
    let state = from.export_entity(e, 130).expect("exports");
    // The target zone is 90 ticks behind (started later, or caught up
    // after a failover): the player last moved 30 ticks ago there too.
    let mut to = Arena::new(ArenaConfig {
        items: 0,
        ..arena_cfg()
    });
    to.enter_zone(
        &skylane_proto::zones::ZoneRect {
            x0: 0,
            y0: 0,
            x1: 10,
            y1: 10,
        },
        &|_, _| true,
        1 << 48,
    )
    .unwrap();
    to.check_import(e, &state).unwrap();
    to.import_entity(e, &state, 40, &mut Emit::default())
        .unwrap();
    assert_eq!(to.player(e).unwrap().last_move_tick, 10);
    // A target ahead of the source does not grant extra allowance either.
    let mut ahead = Arena::new(ArenaConfig {
        items: 0,
        ..arena_cfg()
    });
    ahead
        .import_entity(e, &state, 5_000, &mut Emit::default())
        .unwrap();
    assert_eq!(ahead.player(e).unwrap().last_move_tick, 4_970);
    // The same state twice is refused the second time (it exists).
    assert!(to.check_import(e, &state).is_err());
}

/// A gift to a player in another zone far from the border (no copy of it
/// here) is refused at once without counting against the player: it broke
/// no rule.
#[test]
fn a_gift_to_a_player_far_in_another_zone_is_refused_as_no_violation() {
    let mut net = Net::new(2, 1);
    let mut a = walker(&mut net, 1);
    let mut b = walker(&mut net, 2);
    walk(&mut net, &mut a, 400.0, 300.0);
    walk(&mut net, &mut b, 600.0, 300.0);
    settle(&mut net);
    assert_eq!((net.owner(a.e), net.owner(b.e)), (ZoneIdx(0), ZoneIdx(1)));
    let seq = give(&mut net, &mut a, b.e, 1);
    net.run_ms(100);
    refused_not_owner(&net, a.s, seq);
    assert_eq!(net.violations, 0);
}

/// Border mirrors: a player near a border sees the other side's players
/// near it (their movement, on its own zone's cells: one writer per cell),
/// a mirror is never an entity of the zone that holds it, and it goes when
/// its entity walks away or crosses (then it is the zone's own).
#[test]
fn players_near_a_border_see_each_other_through_mirrors() {
    let mut net = Net::new(2, 1);
    let mut a = walker(&mut net, 1);
    let mut b = walker(&mut net, 2);
    walk(&mut net, &mut a, 400.0, 300.0);
    walk(&mut net, &mut b, 700.0, 300.0);
    settle(&mut net);
    net.run_ms(100);
    assert_eq!((net.owner(a.e), net.owner(b.e)), (ZoneIdx(0), ZoneIdx(1)));
    assert_eq!(net.zones[0].engine().mirror_of(b.e), None, "far: no mirror");
    net.shown.clear();
    // Both come within the margin (20) of the border, on their own sides.
    walk(&mut net, &mut a, 490.0, 300.0);
    walk(&mut net, &mut b, 508.0, 310.0);
    net.run_ms(200);
    let held = net.zones[0].engine().mirror_of(b.e);
    assert_eq!(held, Some((ZoneIdx(1), (508.0, 310.0))), "zone 0 holds b");
    assert_eq!(
        net.zones[1].engine().mirror_of(a.e),
        Some((ZoneIdx(0), (490.0, 300.0)))
    );
    assert!(
        net.shown.contains(&(0, b.e)),
        "zone 0 shows b to its players"
    );
    assert!(
        net.shown.contains(&(1, a.e)),
        "zone 1 shows a to its players"
    );
    // A mirror is read-only: zone 0's world never has b.
    assert!(net.zones[0].engine().world().player(b.e).is_none());
    // b walks deep into its zone: the copy goes.
    walk(&mut net, &mut b, 800.0, 310.0);
    net.run_ms(200);
    assert_eq!(net.zones[0].engine().mirror_of(b.e), None);
    assert_eq!(net.zones[0].engine().mirrors_held(), 0);
    // a crosses into zone 1: zone 1 owns it, and holds no copy of it.
    walk(&mut net, &mut a, 560.0, 300.0);
    settle(&mut net);
    net.run_ms(200);
    assert_eq!(net.owner(a.e), ZoneIdx(1));
    assert_eq!(net.zones[1].engine().mirror_of(a.e), None);
    assert!(net.zones[1].engine().world().player(a.e).is_some());
    replays_exactly(&mut net);
}

/// A lost removal never leaves a ghost: copies not refreshed expire.
#[test]
fn a_mirror_whose_removal_is_lost_expires() {
    let mut net = Net::new(2, 1);
    let mut b = walker(&mut net, 2);
    walk(&mut net, &mut b, 700.0, 300.0);
    walk(&mut net, &mut b, 505.0, 300.0);
    net.run_ms(200);
    assert!(net.zones[0].engine().mirror_of(b.e).is_some());
    // The link drops everything while b walks away (the removal is lost).
    net.partitioned = true;
    walk(&mut net, &mut b, 800.0, 300.0);
    net.run_ms(200);
    net.partitioned = false;
    assert!(
        net.zones[0].engine().mirror_of(b.e).is_some(),
        "still held: the removal was lost"
    );
    // Within three refreshes (2 s each) of zone 1's ticks it is gone.
    net.run_ms(7_000);
    assert_eq!(net.zones[0].engine().mirror_of(b.e), None);
}

/// Every zone's journal re-executes to the same state, tick by tick (what a
/// standby does): nothing a zone decided depended on what is not
/// replicated (mirrors, the feed).
fn replays_exactly(net: &mut Net) {
    for i in 0..net.zones.len() {
        net.zones[i].core_mut().flush().unwrap();
        let z = &net.zones[i];
        let meta = JournalMeta {
            world_kind: "arena".into(),
            world: W,
            engine: EngineConfig::new(W),
            grid: Arena::new(arena_cfg()).grid(),
        };
        let report = replay::<Arena>(z.core().journal(), &meta).unwrap();
        assert!(report.checked > 0, "zone {i}: no tick checked");
        assert!(
            report.divergence.is_none(),
            "zone {i} diverged on replay: {:?}",
            report.divergence
        );
    }
}

/// `w` acts (`a`) on the zone holding it: the action's sequence number.
fn act_as(net: &mut Net, w: &mut Walker, class: EventClass, a: ArenaAction) -> u64 {
    let z = net.home_of(w.s, w.e).expect("in a zone");
    w.seq += 1;
    net.zones[z].core_mut().handle_action(
        w.s,
        Action {
            class,
            seq: w.seq,
            client_time_us: net.now_ms * 1000,
            reads: vec![],
            payload: a.encode(),
        },
    );
    net.pump(z);
    w.seq
}

/// `w` fires at `(x, y)` from the zone holding it.
fn shoot(net: &mut Net, w: &mut Walker, x: f32, y: f32) {
    act_as(net, w, EventClass::Critical, ArenaAction::Fire { x, y });
}

fn hp(net: &Net, e: EntityId) -> u32 {
    let z = net.owner(e);
    net.zones[usize::from(z.0)]
        .engine()
        .world()
        .player(e)
        .expect("owned there")
        .hp
}

/// Two players on either side of the border between zones 0 and 1 (a at
/// x 490, b at x 508), mirrors exchanged.
fn duel() -> (Net, Walker, Walker) {
    let mut net = Net::new(2, 1);
    let mut a = walker(&mut net, 1);
    let mut b = walker(&mut net, 2);
    walk(&mut net, &mut a, 400.0, 300.0);
    walk(&mut net, &mut b, 600.0, 300.0);
    settle(&mut net);
    walk(&mut net, &mut a, 490.0, 300.0);
    walk(&mut net, &mut b, 508.0, 300.0);
    net.run_ms(200);
    assert_eq!((net.owner(a.e), net.owner(b.e)), (ZoneIdx(0), ZoneIdx(1)));
    net.events.clear();
    (net, a, b)
}

/// The hits zone 0 (the shooter's) told its players of, and its misses.
fn told(net: &Net, shooter: EntityId) -> (usize, usize) {
    let hits = net
        .events
        .iter()
        .filter(|(z, e)| {
            *z == 0 && matches!(e, ArenaEvent::Hit { shooter: s, .. } if *s == shooter)
        })
        .count();
    let misses = net
        .events
        .iter()
        .filter(|(z, e)| *z == 0 && matches!(e, ArenaEvent::Missed { shooter: s } if *s == shooter))
        .count();
    (hits, misses)
}

/// A shot across a border goes to the zone owning the target as a
/// cross-zone request, applied there once (its players see the hit on
/// their cells) and answered (the shooter's zone tells its players),
/// though every request arrives twice.
#[test]
fn a_shot_across_a_border_hits_once_at_the_zone_owning_the_target() {
    let (mut net, mut a, b) = duel();
    net.dup_requests = true;
    let before = hp(&net, b.e);
    shoot(&mut net, &mut a, 508.0, 300.0);
    net.run_ms(300);
    let damage = ArenaConfig::default().damage;
    assert_eq!(hp(&net, b.e), before - damage, "hit once");
    let at_target = net
        .events
        .iter()
        .filter(|(z, e)| *z == 1 && matches!(e, ArenaEvent::Hit { target, .. } if *target == b.e))
        .count();
    assert_eq!(at_target, 1, "zone 1 published the hit once");
    assert_eq!(
        told(&net, a.e),
        (1, 0),
        "zone 0 told the shooter's side once"
    );
    assert_eq!(net.zones[0].engine().stats().requests_sent, 1);
    assert_eq!(net.zones[1].engine().stats().requests_served, 1);
    assert!(net.zones[0].core().zone_requests().is_empty(), "answered");
    // A shot across the border at nobody: answered missed.
    net.run_ms(400);
    shoot(&mut net, &mut a, 530.0, 320.0);
    net.run_ms(300);
    assert_eq!(told(&net, a.e), (1, 1));
    assert_eq!(hp(&net, b.e), before - damage);
    assert_eq!(net.violations, 0);
    replays_exactly(&mut net);
}

/// A lost answer is made good by the re-sent request, answered from the
/// owner's record (never applied twice); a crash of the owner after it
/// journaled the request and before it answered leaves it applied once
/// after recovery.
#[test]
fn lost_answers_and_a_crash_of_the_owner_apply_a_shot_once() {
    let (mut net, mut a, b) = duel();
    let damage = ArenaConfig::default().damage;
    let before = hp(&net, b.e);
    net.drop_answers = 2;
    shoot(&mut net, &mut a, 508.0, 300.0);
    net.run_ms(1_000);
    assert_eq!(net.drop_answers, 0, "two answers were lost");
    assert_eq!(hp(&net, b.e), before - damage, "applied once");
    assert_eq!(told(&net, a.e), (1, 0));
    assert!(net.zones[0].core().zone_requests().is_empty());
    net.run_ms(400);
    net.crash_after_served = true;
    shoot(&mut net, &mut a, 508.0, 300.0);
    net.run_ms(1_000);
    assert_eq!(net.crashes, 1);
    assert_eq!(
        hp(&net, b.e),
        before - 2 * damage,
        "applied once across the crash"
    );
    assert_eq!(told(&net, a.e), (2, 0));
}

/// A crash of the shooter's zone after its shot is journaled and before
/// the request is sent: after recovery the request goes (it is engine
/// state, rebuilt from the journal) and is applied once.
#[test]
fn a_crash_of_the_asking_zone_still_sends_its_request_once() {
    let (mut net, mut a, b) = duel();
    let damage = ArenaConfig::default().damage;
    let before = hp(&net, b.e);
    net.partitioned = true;
    shoot(&mut net, &mut a, 508.0, 300.0);
    net.run_ms(100);
    net.crash_zone(0);
    net.partitioned = false;
    net.run_ms(1_000);
    assert_eq!(hp(&net, b.e), before - damage);
    assert!(net.zones[0].core().zone_requests().is_empty());
}

/// A neighbour's avatar in the hysteresis band (on this zone's side of the
/// border, still owned by its zone) is shot through its mirror: the request
/// goes to the zone that owns it.
#[test]
fn a_shot_at_a_neighbour_in_the_hysteresis_band_goes_to_its_owner() {
    let (mut net, mut a, mut b) = duel();
    let damage = ArenaConfig::default().damage;
    walk(&mut net, &mut b, 495.0, 300.0);
    net.run_ms(200);
    assert_eq!(net.owner(b.e), ZoneIdx(1), "in the band: still zone 1's");
    let before = hp(&net, b.e);
    shoot(&mut net, &mut a, 495.0, 300.0);
    net.run_ms(300);
    assert_eq!(hp(&net, b.e), before - damage);
    assert_eq!(told(&net, a.e), (1, 0));
    replays_exactly(&mut net);
}

/// The world channel has one writer, the home zone, and reaches every
/// player wherever its avatar is: a player in zone 1 is kept at the home
/// zone (away, no avatar) for it, and what zone 1's game emits on it is
/// forwarded to the home zone (a journaled request, once though every
/// request arrives twice) and published there.
#[test]
fn world_events_of_every_zone_are_published_once_by_the_home_zone() {
    let (mut net, a, mut b) = duel();
    net.dup_requests = true;
    // b's session is away at the home zone: the world channel, no cells.
    let home = net.zones[0].core().channels_of(b.s);
    assert!(home.contains(&ChannelId::World), "{home:?}");
    assert!(
        !home.iter().any(|c| matches!(c, ChannelId::Cell { .. })),
        "{home:?}"
    );
    assert!(!net.zones[1]
        .core()
        .channels_of(b.s)
        .contains(&ChannelId::World));
    assert_eq!(net.zones[0].engine().moved_to(b.s), Some(ZoneIdx(1)));
    // Zone players are counted once: where the avatar is.
    assert_eq!(net.zones[0].engine().players(), 1);
    assert_eq!(net.zones[1].engine().players(), 1);
    net.run_ms(400);
    let (out0, in0) = (
        net.zones[1].engine().stats().events_forwarded_out,
        net.zones[0].engine().stats().events_forwarded_in,
    );
    act_as(
        &mut net,
        &mut b,
        EventClass::Critical,
        ArenaAction::Mark { x: 1.0, y: 2.0 },
    );
    net.run_ms(400);
    let marked = net
        .events
        .iter()
        .filter(|(_, e)| matches!(e, ArenaEvent::Marked { by, .. } if *by == b.e))
        .map(|(z, _)| *z)
        .collect::<Vec<_>>();
    assert_eq!(marked, vec![0], "published once, by the home zone");
    assert_eq!(net.zones[1].engine().stats().events_forwarded_out, out0 + 1);
    assert_eq!(net.zones[0].engine().stats().events_forwarded_in, in0 + 1);
    assert!(net.zones[1].core().zone_requests().is_empty(), "answered");
    // a (at home) acts as before; b comes home and is one session again.
    let _ = a;
    walk(&mut net, &mut b, 440.0, 300.0);
    settle(&mut net);
    assert_eq!(net.owner(b.e), ZoneIdx(0));
    assert_eq!(net.zones[0].engine().moved_to(b.s), None);
    assert_eq!(net.zones[0].engine().players(), 2);
    let back = net.zones[0].core().channels_of(b.s);
    assert!(back.contains(&ChannelId::World));
    assert!(back.iter().any(|c| matches!(c, ChannelId::Cell { .. })));
    assert!(!net.zones[1].core().has_session(b.s));
    replays_exactly(&mut net);
}

/// `w` gives `coins` to `to`: the action's sequence number.
fn give(net: &mut Net, w: &mut Walker, to: EntityId, coins: u64) -> u64 {
    let gift = ArenaAction::Trade {
        partner: to,
        give_coins: coins,
        give_items: vec![],
        get_coins: 0,
        get_items: vec![],
    };
    act_as(net, w, EventClass::State, gift)
}

fn coins(net: &Net, e: EntityId) -> u64 {
    let z = net.owner(e);
    net.zones[usize::from(z.0)]
        .engine()
        .world()
        .player(e)
        .unwrap()
        .coins
}

/// Action `seq` of `s` was answered once: refused, `NotOwner` (benign).
fn refused_not_owner(net: &Net, s: SessionId, seq: u64) {
    let o = outcome(net, s, seq);
    assert!(
        matches!(
            o[..],
            [Outcome::Rejected {
                code: RejectCode::NotOwner,
                ..
            }]
        ),
        "{o:?}"
    );
}

fn outcome(net: &Net, s: SessionId, seq: u64) -> Vec<Outcome> {
    net.results
        .iter()
        .filter(|(x, q, _)| *x == s && *q == seq)
        .map(|(_, _, o)| o.clone())
        .collect()
}

/// A gift to a player across the border (near it) goes to the zone that
/// owns the receiver as a cross-zone request, applied there once though
/// every request arrives twice; the gift action's outcome is that answer,
/// and everyone is told (`Traded`, on the world channel) once.
#[test]
fn a_gift_across_a_border_is_taken_once_and_answers_the_action() {
    let (mut net, mut a, b) = duel();
    net.dup_requests = true;
    let (ca, cb) = (coins(&net, a.e), coins(&net, b.e));
    let seq = give(&mut net, &mut a, b.e, 10);
    assert!(
        outcome(&net, a.s, seq).is_empty(),
        "waits for the other zone"
    );
    net.run_ms(300);
    assert!(
        matches!(outcome(&net, a.s, seq)[..], [Outcome::Applied { .. }]),
        "{:?}",
        outcome(&net, a.s, seq)
    );
    assert_eq!((coins(&net, a.e), coins(&net, b.e)), (ca - 10, cb + 10));
    let traded = net
        .events
        .iter()
        .filter(
            |(_, e)| matches!(e, ArenaEvent::Traded { a: x, b: y, .. } if *x == a.e && *y == b.e),
        )
        .count();
    assert_eq!(traded, 1);
    assert_eq!(net.violations, 0);
    replays_exactly(&mut net);
}

/// A gift whose receiver left before the request arrived comes back to the
/// giver, and the action is refused (no violation); the giver does not
/// leave its zone while its gift is out. A gift to a player nowhere near is
/// refused at once.
#[test]
fn a_gift_to_a_player_who_left_comes_back_and_the_giver_waits_for_it() {
    let (mut net, mut a, b) = duel();
    let ca = coins(&net, a.e);
    net.partitioned = true;
    let seq = give(&mut net, &mut a, b.e, 10);
    assert_eq!(coins(&net, a.e), ca - 10, "given away, in flight");
    // b leaves the world; a walks across the border meanwhile.
    net.zones[1].core_mut().handle_leave(b.s);
    net.pump(1);
    for _ in 0..8 {
        a.step_to(&mut net, 560.0, 300.0);
        net.run_ms(TICK_US / 1000 + 1);
    }
    assert_eq!(net.owner(a.e), ZoneIdx(0), "stays while its gift is out");
    net.partitioned = false;
    net.run_ms(1_000);
    refused_not_owner(&net, a.s, seq);
    assert_eq!(coins(&net, a.e), ca, "came back");
    assert_eq!(net.violations, 0);
    // Now it crosses.
    walk(&mut net, &mut a, 560.0, 300.0);
    settle(&mut net);
    assert_eq!(net.owner(a.e), ZoneIdx(1));
    // Nobody near: refused at once, nothing leaves.
    let far = give(&mut net, &mut a, EntityId(999_999), 5);
    assert!(matches!(
        outcome(&net, a.s, far)[..],
        [Outcome::Rejected { .. }]
    ));
    assert_eq!(coins(&net, a.e), ca);
    replays_exactly(&mut net);
}

/// A zoned world has one spectator feed, the home zone's: another zone
/// feeding it sends its part (a tick's public events, its keyframes) to the
/// home zone, which merges them into the frames it signs as the world; no
/// other zone outputs a feed frame of its own.
#[test]
fn the_home_zone_signs_one_feed_with_every_zones_part() {
    let (mut net, _a, mut b) = duel();
    let now = net.now_ms * 1000;
    net.zones[0].core_mut().set_feed(true, now);
    net.zones[1].core_mut().set_feed(true, now);
    net.pump(0);
    net.pump(1);
    walk(&mut net, &mut b, 700.0, 300.0);
    net.run_ms(1_500);
    assert!(
        net.feeds.iter().all(|(z, _)| *z == 0),
        "only the home zone's feed"
    );
    let of_b = |keyframe: bool| {
        net.feeds
            .iter()
            .filter(|(_, f)| f.keyframe == keyframe)
            .flat_map(|(_, f)| f.events.iter())
            .filter(|e| e.entity == Some(b.e))
            .count()
    };
    assert!(of_b(false) > 0, "zone 1's events in the home's frames");
    assert!(of_b(true) > 0, "zone 1's avatar in the home's keyframes");
    assert!(net.feeds.iter().all(|(_, f)| f.proofs.len() == 1), "signed");
    // The home's feed off: parts are not kept.
    net.zones[0].core_mut().set_feed(false, net.now_ms * 1000);
    net.feeds.clear();
    net.run_ms(500);
    assert!(net.feeds.is_empty());
}
