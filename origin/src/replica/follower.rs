//! [`Follower`]: the standby's side of replication, pure.

use skylane_proto::ed25519_dalek::{Signer, SigningKey};
use skylane_proto::{attestation, cosign, CoSig, Evidence, Input, Payload, ReplMsg, WorldId};

use crate::core::Core;
use crate::journal::JournalError;

/// Inputs of one tick kept as divergence evidence; a tick with more keeps the
/// first ones (the evidence says how many there were by its hashes alone).
pub(crate) const MAX_EVIDENCE_INPUTS: usize = 4096;

/// Why a follower refused entries.
#[derive(Debug, thiserror::Error)]
pub enum FollowError {
    /// The entries come from an owner older than one already followed.
    #[error("entries at epoch {found} refused: epoch {highest} was already followed")]
    Fenced {
        /// The epoch on the entries.
        found: u64,
        /// The highest epoch seen.
        highest: u64,
    },
    /// The primary's state to compare with is not at this follower's tick
    /// (entries lost or reordered): the entities cannot be named.
    #[error("asked to compare at tick {theirs}, but the diverged copy is at tick {mine}")]
    CompareAt {
        /// The follower's tick.
        mine: u64,
        /// The snapshot's tick.
        theirs: u64,
    },
    /// The primary's snapshot did not decode as this game's engine.
    #[error("the primary's snapshot to compare with is unreadable: {0}")]
    Snapshot(#[from] postcard::Error),
    /// The standby's own journal failed.
    #[error(transparent)]
    Journal(#[from] JournalError),
}

/// A standby's copy of one world (see the module docs).
pub struct Follower {
    world: WorldId,
    node: String,
    epoch: u64,
    core: Box<dyn Core>,
    key: SigningKey,
    tick_inputs: Vec<Input>,
    /// Co-signatures of the tick being re-executed's checkpoints.
    cosigs: Vec<CoSig>,
    diverged: Option<u64>,
    /// The evidence sent at the divergence, completed once compared.
    evidence: Option<Evidence>,
    /// The re-executed ticks' economy transactions, for this process's ledger
    /// (the standby's ledger mirrors the primary's; at most [`MAX_LEDGER_TICKS`]
    /// ticks wait to be taken).
    ledger: std::collections::VecDeque<(u64, Vec<crate::ledger::LedgerTx>)>,
}

/// Ticks of ledger transactions a follower keeps until they are taken.
const MAX_LEDGER_TICKS: usize = 4096;

impl std::fmt::Debug for Follower {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Follower")
            .field("world", &self.world)
            .field("epoch", &self.epoch)
            .field("tick", &self.core.tick())
            .finish_non_exhaustive()
    }
}

impl Follower {
    /// Follows `core` (built from the primary's snapshot at `epoch`) as `node`,
    /// attesting with `key`.
    pub fn new(node: &str, epoch: u64, core: Box<dyn Core>, key: SigningKey) -> Self {
        Self {
            world: core.world_id(),
            node: node.to_owned(),
            epoch,
            core,
            key,
            tick_inputs: Vec::new(),
            cosigs: Vec::new(),
            ledger: std::collections::VecDeque::new(),
            diverged: None,
            evidence: None,
        }
    }

    /// The last re-executed tick.
    pub fn tick(&self) -> u64 {
        self.core.tick()
    }

    /// The epoch followed.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The tick it diverged at, if it did.
    pub fn diverged(&self) -> Option<u64> {
        self.diverged
    }

    /// Whether it diverged and its evidence was completed by a comparison
    /// (or could not be): there is nothing more for it to do.
    pub fn compared(&self) -> bool {
        self.evidence
            .as_ref()
            .is_some_and(|e| e.compared_at.is_some())
    }

    /// The engine, to serve the world as its new primary.
    pub fn into_core(self) -> Box<dyn Core> {
        self.core
    }

    /// Re-executes `inputs` from the owner at `epoch`; returns what to send
    /// back: one [`ReplMsg::Ack`] per tick that matched, or one
    /// [`ReplMsg::Diverged`] on the first that did not. A diverged follower
    /// goes on re-executing (so that its state can be compared with the
    /// primary's, [`Follower::handle_compare`]) but acknowledges nothing.
    pub fn handle_entries(
        &mut self,
        epoch: u64,
        inputs: Vec<Input>,
    ) -> Result<Vec<ReplMsg>, FollowError> {
        if epoch < self.epoch {
            return Err(FollowError::Fenced {
                found: epoch,
                highest: self.epoch,
            });
        }
        self.epoch = epoch;
        let mut out = Vec::new();
        for input in inputs {
            if self.diverged.is_none() && self.tick_inputs.len() < MAX_EVIDENCE_INPUTS {
                self.tick_inputs.push(input.clone());
            }
            match input {
                Input::Join {
                    session,
                    player,
                    role,
                    team,
                } => {
                    // A join refused by the primary is refused here too.
                    let _ = self.core.handle_join(session, &player, role, team);
                }
                Input::Leave { session } => self.core.handle_leave(session),
                Input::Action { session, action } => self.core.handle_action(session, action),
                Input::End { reason } => self.core.handle_end(&reason),
                Input::Zone(rec) => self.core.handle_zone(&rec)?,
                Input::Endow {
                    player,
                    coins,
                    items,
                } => self
                    .core
                    .handle_endow(&player, crate::ledger::Wallet { coins, items }),
                Input::Tick { at_us, .. } if self.diverged.is_some() => {
                    self.core.run_tick_at(at_us)?;
                }
                Input::Tick { tick, at_us, hash } => {
                    self.core.run_tick_at(at_us)?;
                    self.collect_cosigs();
                    let mine = self.core.state_hash();
                    let inputs = std::mem::take(&mut self.tick_inputs);
                    match hash {
                        Some(expected) if expected != mine || tick != self.core.tick() => {
                            self.diverged = Some(tick);
                            let mut e = Evidence {
                                world: self.world,
                                epoch,
                                tick,
                                expected,
                                found: mine,
                                inputs,
                                standby: self.node.clone(),
                                compared_at: None,
                                entities: Vec::new(),
                                signature: Payload::empty(),
                            };
                            self.sign(&mut e);
                            self.evidence = Some(e.clone());
                            self.cosigs.clear();
                            out.push(ReplMsg::Diverged(e));
                        }
                        _ => {
                            let attest = attestation(self.world, tick, &mine);
                            out.push(ReplMsg::Ack {
                                world: self.world,
                                epoch,
                                tick,
                                hash: mine,
                                attest: Payload::from(self.key.sign(&attest.0).to_bytes().to_vec()),
                                cosigs: std::mem::take(&mut self.cosigs),
                            });
                        }
                    }
                }
            }
            // A standby sends nothing to anyone: its engine's outputs are
            // dropped (its history keeps the batches for resumes), but for
            // the economy's transactions, which go to its own ledger.
            while let Some(o) = self.core.poll_output() {
                self.keep_ledger(o);
            }
        }
        Ok(out)
    }

    /// The primary's engine at `tick` (after a divergence): names the entities
    /// whose state differs from this follower's copy at the same tick and
    /// returns the completed, re-signed evidence. Nothing before a
    /// divergence, or once compared.
    pub fn handle_compare(
        &mut self,
        epoch: u64,
        tick: u64,
        snapshot: &[u8],
    ) -> Result<Vec<ReplMsg>, FollowError> {
        if epoch < self.epoch {
            return Err(FollowError::Fenced {
                found: epoch,
                highest: self.epoch,
            });
        }
        if self
            .evidence
            .as_ref()
            .is_none_or(|e| e.compared_at.is_some())
        {
            return Ok(Vec::new());
        }
        if self.core.tick() != tick {
            return Err(FollowError::CompareAt {
                mine: self.core.tick(),
                theirs: tick,
            });
        }
        let entities = self.core.diff_snapshot(snapshot)?;
        let mut e = self.evidence.take().unwrap_or_else(|| unreachable!());
        e.entities = entities;
        e.compared_at = Some(tick);
        self.sign(&mut e);
        self.evidence = Some(e.clone());
        Ok(vec![ReplMsg::Diverged(e)])
    }

    fn sign(&self, e: &mut Evidence) {
        e.signature = Payload::from(self.key.sign(&e.digest().0).to_bytes().to_vec());
    }

    /// The economy transactions re-executed since the last call, by tick.
    pub fn take_ledger(&mut self) -> Vec<(u64, Vec<crate::ledger::LedgerTx>)> {
        self.ledger.drain(..).collect()
    }

    fn keep_ledger(&mut self, o: crate::engine::Output) {
        // A zone's economy stays in the zoned world's state (its wallets
        // travel with avatars between origins): no process ledger takes it,
        // as on the primary.
        if self.core.zone().is_some() {
            return;
        }
        if let crate::engine::Output::Ledger { tick, txs } = o {
            if self.ledger.len() >= MAX_LEDGER_TICKS {
                self.ledger.pop_front();
            }
            self.ledger.push_back((tick, txs));
        }
    }

    /// Co-signs the checkpoints (signed batches) the tick just produced;
    /// keeps the economy's transactions; drops every other output.
    fn collect_cosigs(&mut self) {
        while let Some(o) = self.core.poll_output() {
            if let crate::engine::Output::Ledger { .. } = o {
                self.keep_ledger(o);
            } else if let crate::engine::Output::Batch(b) = o {
                if let (false, Some(first)) = (b.signature.is_empty(), b.events.first()) {
                    self.cosigs.push(CoSig {
                        channel: b.channel,
                        seq: first.seq,
                        signature: cosign(&self.key, &b),
                    });
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arena::{Arena, ArenaAction, ArenaConfig};
    use crate::engine::{Engine, EngineConfig, EngineSnapshot};
    use crate::replica::Recorder;
    use proptest::prelude::*;
    use skylane_proto::{Action, ChainSigner, EventClass, Hash32, Role, SessionId};

    const TICK_US: u64 = 33_333;

    fn engine() -> Engine<Arena> {
        let arena = Arena::new(ArenaConfig::default());
        let grid = arena.grid();
        Engine::new(
            arena,
            grid,
            EngineConfig::new(WorldId(1)),
            ChainSigner::from_bytes(&[7; 32]),
            0,
        )
    }

    fn restore(bytes: &[u8]) -> Box<dyn Core> {
        let snap: EngineSnapshot<Arena> = postcard::from_bytes(bytes).unwrap();
        let arena = Arena::new(ArenaConfig::default());
        let grid = arena.grid();
        Box::new(Engine::restore(
            snap,
            grid,
            EngineConfig::new(WorldId(1)),
            ChainSigner::from_bytes(&[7; 32]),
        ))
    }

    fn mv(seq: u64, x: f32, y: f32) -> Action {
        Action {
            class: EventClass::Critical,
            seq,
            client_time_us: seq * TICK_US,
            reads: Vec::new(),
            payload: ArenaAction::Move { x, y }.encode(),
        }
    }

    /// The snapshot, the log (one entry list per tick), each tick's hash, and
    /// the players' avatars and spawn points.
    type Recorded = (
        Vec<u8>,
        Vec<Vec<Input>>,
        Vec<Hash32>,
        Vec<(skylane_proto::EntityId, (f32, f32))>,
    );

    /// A primary running `ticks` ticks of two players stepping, recorded:
    /// the snapshot it started from and the log, one entry list per tick.
    fn recorded(ticks: u64) -> Recorded {
        let mut e = engine();
        let mut spawn = Vec::new();
        for (s, name) in [(1, "ann"), (2, "bob")] {
            let avatar = e
                .handle_join(SessionId(s), name, Role::Player, None)
                .unwrap()
                .unwrap();
            spawn.push((
                avatar,
                crate::world::World::position(e.world(), avatar).unwrap(),
            ));
        }
        e.run_tick_at(TICK_US);
        let snap = Core::snapshot(&e);
        let mut rec = Recorder::new(Box::new(e));
        let mut log = Vec::new();
        let mut hashes = Vec::new();
        for t in 1..=ticks {
            for (s, (_, (x, y))) in [1u64, 2].into_iter().zip(spawn.iter().copied()) {
                rec.handle_action(SessionId(s), mv(t, x + 0.01 * t as f32, y));
            }
            rec.handle_timeout((t + 1) * TICK_US).unwrap();
            while rec.poll_output().is_some() {}
            log.push(rec.drain().unwrap());
            hashes.push(rec.state_hash());
        }
        (snap, log, hashes, spawn)
    }

    fn key() -> SigningKey {
        SigningKey::from_bytes(&[3; 32])
    }

    #[test]
    fn a_standby_re_executes_the_log_to_the_same_state_and_attests_it() {
        let (snap, log, hashes, _) = recorded(20);
        let mut f = Follower::new("b", 4, restore(&snap), key());
        for (i, entries) in log.into_iter().enumerate() {
            let out = f.handle_entries(4, entries).unwrap();
            let [ReplMsg::Ack {
                tick, hash, attest, ..
            }] = out.as_slice()
            else {
                panic!("one ack per tick: {out:?}");
            };
            assert_eq!(*tick, i as u64 + 2);
            assert_eq!(*hash, hashes[i]);
            let sig = skylane_proto::ed25519_dalek::Signature::from_slice(attest).unwrap();
            key()
                .verifying_key()
                .verify_strict(&attestation(WorldId(1), *tick, hash).0, &sig)
                .unwrap();
        }
        assert_eq!(f.tick(), 21);
        assert!(f.diverged().is_none());
        // An older owner's entries are refused.
        assert!(matches!(
            f.handle_entries(3, Vec::new()),
            Err(FollowError::Fenced {
                found: 3,
                highest: 4
            })
        ));
    }

    /// Bob's move changed on the wire: the standby reports the divergence at
    /// once, goes on re-executing without acknowledging, and given the
    /// primary's engine at its tick names Bob's avatar alone, in re-signed
    /// evidence. (Moves here are to absolute points, so a tampered one heals
    /// at Bob's next move: the last tick's is tampered, so that the states
    /// still differ where they are compared.)
    #[test]
    fn a_diverged_standby_names_the_entities_that_differ() {
        let (snap, mut log, _, spawn) = recorded(10);
        let mut honest = Follower::new("p", 1, restore(&snap), key());
        for entries in log.clone() {
            honest.handle_entries(1, entries).unwrap();
        }
        let primary = honest.into_core();
        for i in &mut log[9] {
            if let Input::Action { session, action } = i {
                if session.0 == 2 {
                    let (_, (x, y)) = spawn[1];
                    action.payload = ArenaAction::Move { x, y: y + 0.004 }.encode();
                }
            }
        }
        let mut f = Follower::new("b", 1, restore(&snap), key());
        let mut first = None;
        for entries in log {
            let out = f.handle_entries(1, entries).unwrap();
            match (out.as_slice(), &first) {
                ([ReplMsg::Diverged(e)], None) => first = Some(e.clone()),
                (_, None) => {}
                (more, Some(_)) => assert!(more.is_empty(), "acknowledged after diverging"),
            }
        }
        let first = first.expect("detected");
        assert_eq!(first.tick, 11);
        assert!(first.entities.is_empty() && first.compared_at.is_none());
        assert_eq!(f.tick(), primary.tick(), "the diverged copy kept up");
        let wrong = f.handle_compare(1, primary.tick() - 1, &primary.snapshot());
        assert!(
            matches!(wrong, Err(FollowError::CompareAt { .. })),
            "{wrong:?}"
        );
        assert!(f.handle_compare(1, primary.tick(), b"garbage").is_err());
        let out = f
            .handle_compare(1, primary.tick(), &primary.snapshot())
            .unwrap();
        let [ReplMsg::Diverged(e)] = out.as_slice() else {
            panic!("completed evidence: {out:?}");
        };
        assert_eq!(e.tick, 11);
        assert_eq!(e.compared_at, Some(primary.tick()));
        assert_eq!(e.entities, vec![spawn[1].0], "bob's avatar alone");
        let sig = skylane_proto::ed25519_dalek::Signature::from_slice(&e.signature).unwrap();
        key()
            .verifying_key()
            .verify_strict(&e.digest().0, &sig)
            .unwrap();
        assert!(
            f.handle_compare(1, primary.tick(), &primary.snapshot())
                .unwrap()
                .is_empty(),
            "compared once"
        );
    }

    proptest! {
        /// One action's payload changed on the wire (a move to elsewhere): the
        /// standby detects the divergence on exactly that tick, every time,
        /// with signed evidence.
        #[test]
        fn a_tampered_action_is_caught_on_its_tick(at in 0usize..15, which in 0usize..2) {
            let (snap, mut log, _, spawn) = recorded(15);
            let actions: Vec<usize> = log[at]
                .iter()
                .enumerate()
                .filter(|(_, i)| matches!(i, Input::Action { .. }))
                .map(|(n, _)| n)
                .collect();
            let n = actions[which % actions.len()];
            if let Input::Action { session, action } = &mut log[at][n] {
                let (_, (x, y)) = spawn[session.0 as usize - 1];
                action.payload = ArenaAction::Move { x: x + 0.003, y }.encode();
            }
            let mut f = Follower::new("b", 1, restore(&snap), key());
            let mut found = None;
            for entries in log {
                let out = f.handle_entries(1, entries).unwrap();
                if let Some(ReplMsg::Diverged(e)) = out.last() {
                    found = Some(e.clone());
                    break;
                }
            }
            let e = found.expect("the tampered tick is detected");
            prop_assert_eq!(e.tick, at as u64 + 2);
            prop_assert_ne!(e.expected, e.found);
            let has_tick = e.inputs.iter().any(|i| matches!(i, Input::Tick { .. }));
            prop_assert!(has_tick, "the evidence holds the tick's inputs");
            let sig = skylane_proto::ed25519_dalek::Signature::from_slice(&e.signature).unwrap();
            prop_assert!(key().verifying_key().verify_strict(&e.digest().0, &sig).is_ok());
            prop_assert!(e.compared_at.is_none() && e.entities.is_empty());
            prop_assert!(f.handle_entries(1, Vec::new()).unwrap().is_empty());
        }
    }
}
