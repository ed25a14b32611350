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
    /// This follower already diverged: it re-executes nothing more.
    #[error("the follower diverged at tick {0}")]
    Diverged(u64),
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
}

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
            diverged: None,
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

    /// The engine, to serve the world as its new primary.
    pub fn into_core(self) -> Box<dyn Core> {
        self.core
    }

    /// Re-executes `inputs` from the owner at `epoch`; returns what to send
    /// back: one [`ReplMsg::Ack`] per tick that matched, or one
    /// [`ReplMsg::Diverged`] (and the follower stops).
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
        if let Some(t) = self.diverged {
            return Err(FollowError::Diverged(t));
        }
        self.epoch = epoch;
        let mut out = Vec::new();
        for input in inputs {
            if self.tick_inputs.len() < MAX_EVIDENCE_INPUTS {
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
                                signature: Payload::empty(),
                            };
                            e.signature =
                                Payload::from(self.key.sign(&e.digest().0).to_bytes().to_vec());
                            out.push(ReplMsg::Diverged(e));
                            while self.core.poll_output().is_some() {}
                            return Ok(out);
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
            // dropped (its history keeps the batches for resumes).
            while self.core.poll_output().is_some() {}
        }
        Ok(out)
    }

    /// Co-signs the checkpoints (signed batches) the tick just produced;
    /// drops every other output.
    fn collect_cosigs(&mut self) {
        while let Some(o) = self.core.poll_output() {
            if let crate::engine::Output::Batch(b) = o {
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
    /// the players' spawn points.
    type Recorded = (Vec<u8>, Vec<Vec<Input>>, Vec<Hash32>, Vec<(f32, f32)>);

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
            spawn.push(crate::world::World::position(e.world(), avatar).unwrap());
        }
        e.run_tick_at(TICK_US);
        let snap = Core::snapshot(&e);
        let mut rec = Recorder::new(Box::new(e));
        let mut log = Vec::new();
        let mut hashes = Vec::new();
        for t in 1..=ticks {
            for (s, (x, y)) in [1u64, 2].into_iter().zip(spawn.iter().copied()) {
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
                let (x, y) = spawn[session.0 as usize - 1];
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
            let stopped = matches!(f.handle_entries(1, Vec::new()), Err(FollowError::Diverged(_)));
            prop_assert!(stopped, "a diverged follower re-executes nothing more");
        }
    }
}
