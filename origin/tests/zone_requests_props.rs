//! Property test of cross-zone requests over random schedules: two zones'
//! engines, a player in zone 0 whose actions each ask zone 1 to apply
//! something (`Emit::remote`), a network that loses, duplicates and
//! reorders, and crashes of either zone (it restarts from what was durable:
//! its state at its last tick, and every request record it journaled).
//! Whatever happens, once the network heals: every request the asking zone
//! still knows of (its action was durable) was applied exactly once by the
//! owner and answered exactly once at the asker, with the owner's answer;
//! a request lost with its action in a crash was never applied. Each
//! request applied in zone 1 emits a world event there, which zone 1
//! forwards to the home zone (zone 0, the world channel's one writer): the
//! home publishes every one exactly once, in the order zone 1 emitted them.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;
use serde::{Deserialize, Serialize};
use skylane_origin::{
    Core, Ctx, Emit, Engine, EngineConfig, EngineSnapshot, Grid, Observation, Output, Rejection,
    Validator, World, ZoneSetup,
};
use skylane_proto::zones::{ZoneIdx, ZoneLayout, ZoneMsg, ZoneRect};
use skylane_proto::{
    Action, ChainSigner, ChannelId, EntityId, EventClass, Hash32, Payload, RejectCode, Role,
    SessionId, TeamId, WorldId,
};

const W: WorldId = WorldId(5);

/// A world that only counts: in zone 0 an action `tag` asks zone 1 to
/// apply `tag`; zone 1 counts what it applied; zone 0 keeps each answer.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Tally {
    next: u64,
    /// Actions applied here (their requests exist from then on).
    fired: BTreeSet<u64>,
    /// Requests applied here, by tag: how many times.
    applied: BTreeMap<u64, u32>,
    /// Answers to this zone's requests, by tag (`None`: not sent anywhere).
    answers: BTreeMap<u64, Vec<Option<Vec<u8>>>>,
    /// World events emitted here (tags), in order.
    emitted: Vec<u64>,
}

impl World for Tally {
    type Action = u64;

    fn name(&self) -> &str {
        "tally"
    }
    fn decode_action(&self, _class: EventClass, payload: &[u8]) -> Result<u64, Rejection> {
        let b: [u8; 8] = payload
            .try_into()
            .map_err(|_| Rejection::new(RejectCode::Malformed, "8 bytes"))?;
        Ok(u64::from_le_bytes(b))
    }
    fn validators(&self) -> Vec<(&'static str, Validator<Self>)> {
        Vec::new()
    }
    fn version(&self, _entity: EntityId) -> Option<u64> {
        None
    }
    fn join(
        &mut self,
        _player: &str,
        _team: Option<TeamId>,
        _tick: u64,
        _out: &mut Emit,
    ) -> EntityId {
        self.next += 1;
        EntityId(self.next)
    }
    fn leave(&mut self, _avatar: EntityId, _tick: u64, _out: &mut Emit) {}
    fn apply(&mut self, _ctx: &Ctx, tag: &u64, out: &mut Emit) -> Observation {
        self.fired.insert(*tag);
        // A point in zone 1.
        out.remote((150.0, 50.0), 0.0, tag.to_le_bytes().to_vec());
        Observation::default()
    }
    fn apply_remote(&mut self, _from: ZoneIdx, op: &[u8], _tick: u64, out: &mut Emit) -> Payload {
        let tag = u64::from_le_bytes(op.try_into().unwrap_or_default());
        let n = self.applied.entry(tag).or_default();
        *n += 1;
        // A world event: this zone is not its channel's writer, so it goes
        // to the home zone.
        self.emitted.push(tag);
        out.push(
            ChannelId::World,
            EventClass::State,
            None,
            tag.to_le_bytes().to_vec(),
        );
        Payload::from(n.to_le_bytes().to_vec())
    }
    fn remote_answered(
        &mut self,
        op: &[u8],
        answer: Option<&[u8]>,
        _tick: u64,
        _out: &mut Emit,
    ) -> Result<(), Rejection> {
        let tag = u64::from_le_bytes(op.try_into().unwrap_or_default());
        self.answers
            .entry(tag)
            .or_default()
            .push(answer.map(<[u8]>::to_vec));
        Ok(())
    }
    fn describe(&self, _entities: &[EntityId]) -> Payload {
        Payload::default()
    }
    fn position(&self, _entity: EntityId) -> Option<(f32, f32)> {
        Some((10.0, 50.0))
    }
    fn team(&self, _entity: EntityId) -> Option<TeamId> {
        None
    }
    fn channel_state(&self, _channel: ChannelId, _grid: &Grid) -> Payload {
        Payload::default()
    }
    fn state_hash(&self) -> Hash32 {
        Hash32::default()
    }
    fn enter_zone(
        &mut self,
        _cells: &ZoneRect,
        _keep: &dyn Fn(f32, f32) -> bool,
        _id_base: u64,
    ) -> Result<(), String> {
        Ok(())
    }
    fn diff(&self, _other: &Self) -> Vec<EntityId> {
        Vec::new()
    }
}

fn grid() -> Grid {
    Grid {
        width: 200.0,
        height: 100.0,
        cell: 100.0,
        radius: 1,
        margin: 10.0,
        clip: None,
    }
}

fn cfg() -> EngineConfig {
    EngineConfig::new(W)
}

fn signer() -> ChainSigner {
    ChainSigner::from_bytes(&[3; 32])
}

/// One zone: its engine and what of it is durable.
struct Zone {
    engine: Engine<Tally>,
    durable: EngineSnapshot<Tally>,
}

impl Zone {
    fn new(z: u8) -> Self {
        let layout = ZoneLayout::even(2, 1, 100.0, 2, 1).unwrap();
        let mut engine = Engine::new(Tally::default(), grid(), cfg(), signer(), 0);
        engine
            .enter_zone(ZoneSetup {
                layout,
                zone: ZoneIdx(z),
                hysteresis: 10.0,
                margin: 20.0,
            })
            .unwrap();
        let durable = engine.snapshot();
        Self { engine, durable }
    }
}

#[derive(Debug, Clone)]
enum Step {
    /// The player in zone 0 acts (its request is made).
    Fire,
    /// A zone's tick ends: its messages leave, its state is durable, and
    /// its unanswered requests go again.
    Tick(u8),
    /// The message at this index (mod the wire's length) arrives.
    Deliver(usize),
    /// It arrives and stays on the wire (a duplicate).
    Dup(usize),
    /// It is lost.
    Lose(usize),
    /// A zone crashes and restarts from what was durable.
    Crash(u8),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => Just(Step::Fire),
        4 => (0u8..2).prop_map(Step::Tick),
        5 => any::<usize>().prop_map(Step::Deliver),
        1 => any::<usize>().prop_map(Step::Dup),
        1 => any::<usize>().prop_map(Step::Lose),
        1 => (0u8..2).prop_map(Step::Crash),
    ]
}

struct Sim {
    zones: Vec<Zone>,
    /// World events the home zone published (tags), in order.
    published: Vec<u64>,
    wire: Vec<(u8, ZoneMsg)>,
    now_us: u64,
    seq: u64,
    tag: u64,
}

impl Sim {
    fn new() -> Self {
        let mut zones = vec![Zone::new(0), Zone::new(1)];
        let s = SessionId(1);
        zones[0]
            .engine
            .handle_join(s, "p", Role::Player, None)
            .unwrap();
        let mut sim = Self {
            zones,
            published: Vec::new(),
            wire: Vec::new(),
            now_us: 0,
            seq: 0,
            tag: 0,
        };
        sim.tick(0);
        sim
    }

    fn tick(&mut self, z: u8) {
        let i = usize::from(z);
        self.now_us += 33_333;
        let zone = &mut self.zones[i];
        zone.engine.run_tick(self.now_us);
        while let Some(o) = zone.engine.poll_output() {
            match o {
                Output::ToZone { to, msg } => self.wire.push((to.0, msg)),
                Output::Batch(b) if z == 0 && b.channel == ChannelId::World => {
                    self.published.extend(b.events.iter().filter_map(|e| {
                        let b: [u8; 8] = e.payload[..].try_into().ok()?;
                        Some(u64::from_le_bytes(b))
                    }));
                }
                _ => {}
            }
        }
        zone.durable = zone.engine.snapshot();
        for (_, to, msg) in zone.engine.zone_requests() {
            self.wire.push((to.0, msg));
        }
    }

    fn deliver(&mut self, k: usize, keep: bool) {
        if self.wire.is_empty() {
            return;
        }
        let k = k % self.wire.len();
        let (to, msg) = if keep {
            self.wire[k].clone()
        } else {
            self.wire.remove(k)
        };
        let zone = &mut self.zones[usize::from(to)];
        let reply = zone.engine.handle_request(&msg).unwrap();
        // Request records are journaled at once.
        zone.durable = zone.engine.snapshot();
        if let Some((to, reply)) = reply {
            self.wire.push((to.0, reply));
        }
    }

    fn run(&mut self, s: &Step) {
        match s {
            Step::Fire => {
                self.seq += 1;
                self.tag += 1;
                self.zones[0].engine.handle_action(
                    SessionId(1),
                    Action {
                        class: EventClass::State,
                        seq: self.seq,
                        client_time_us: 0,
                        reads: vec![],
                        payload: Payload::from(self.tag.to_le_bytes().to_vec()),
                    },
                );
            }
            Step::Tick(z) => self.tick(*z),
            Step::Deliver(k) => self.deliver(*k, false),
            Step::Dup(k) => self.deliver(*k, true),
            Step::Lose(k) => {
                if !self.wire.is_empty() {
                    let k = *k % self.wire.len();
                    self.wire.remove(k);
                }
            }
            Step::Crash(z) => {
                let zone = &mut self.zones[usize::from(*z)];
                zone.engine = Engine::restore(zone.durable.clone(), grid(), cfg(), signer());
            }
        }
    }

    /// The network heals: ticks and deliveries until nothing is left.
    fn heal(&mut self) {
        for _ in 0..200 {
            // Both zones tick (zone 1 forwards the events its last requests
            // emitted, the home publishes what it was forwarded); done when
            // neither has a request left unanswered.
            self.tick(0);
            self.tick(1);
            let quiet = self
                .zones
                .iter()
                .all(|z| z.engine.zone_requests().is_empty());
            while !self.wire.is_empty() {
                self.deliver(0, false);
            }
            if quiet {
                return;
            }
        }
        panic!("requests never answered");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]
    #[test]
    fn every_durable_request_is_applied_and_answered_exactly_once(
        steps in proptest::collection::vec(step(), 1..120)
    ) {
        let mut sim = Sim::new();
        for s in &steps {
            sim.run(s);
        }
        sim.heal();
        let asker = sim.zones[0].engine.world();
        let owner = sim.zones[1].engine.world();
        for tag in 1..=sim.tag {
            let applied = owner.applied.get(&tag).copied().unwrap_or(0);
            if asker.fired.contains(&tag) {
                prop_assert_eq!(applied, 1, "request {} applied once", tag);
                prop_assert_eq!(
                    asker.answers.get(&tag).cloned().unwrap_or_default(),
                    vec![Some(1u32.to_le_bytes().to_vec())],
                    "request {} answered once, with the owner's answer", tag
                );
            } else {
                prop_assert_eq!(applied, 0, "request {} lost with its action, never applied", tag);
                prop_assert!(!asker.answers.contains_key(&tag));
            }
        }
        // Forwarded world events: each published once, in emission order.
        prop_assert_eq!(&sim.published, &owner.emitted);
    }
}
