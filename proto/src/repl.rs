//! Replication between origins (`skylane-repl/2`, mutual TLS): a world's
//! primary streams its input log to its standbys, which re-execute every tick
//! and answer with their own state hash.
//!
//! One bidirectional stream per followed world, opened by the standby:
//! * standby → primary: [`ReplMsg::Follow`] first, then one [`ReplMsg::Ack`]
//!   per re-executed tick; on a disagreement one [`ReplMsg::Diverged`] at
//!   once, then, once the primary sent [`ReplMsg::Compare`], the same evidence
//!   completed with the entities whose state differs (and nothing more).
//! * primary → standby: [`ReplMsg::Start`] (the engine snapshot to start from),
//!   then [`ReplMsg::Entries`] in order: every input the primary's engine was
//!   fed, each tick's inputs ending with its [`Input::Tick`] marker and state
//!   hash. After a divergence, [`ReplMsg::Compare`]: its state to compare
//!   with. Or [`ReplMsg::Refused`] and the stream ends.
//!
//! Every message carries the world's owner epoch: a standby refuses a primary
//! whose epoch is lower than the highest it has seen for the world.
//!
//! Frames use the ordinary codec ([`crate::codec`]) with a larger limit
//! ([`REPL_MAX_FRAME`]), since a snapshot is a whole world.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::ids::{ChannelId, EntityId, SessionId, TeamId, WorldId};
use crate::message::{Action, Hash32};
use crate::payload::Payload;
use crate::token::Role;

/// QUIC ALPN of origin-to-origin replication.
pub const REPL_ALPN: &[u8] = b"skylane-repl/2";

/// Largest replication frame (a snapshot of a large world): 64 MiB.
pub const REPL_MAX_FRAME: usize = 64 << 20;

/// One engine input, exactly as the engine was fed it: the journal's records
/// and the replication log's entries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Input {
    /// A session joined.
    Join {
        /// Session.
        session: SessionId,
        /// Player id.
        player: String,
        /// Role.
        role: Role,
        /// Team.
        team: Option<TeamId>,
    },
    /// A session left.
    Leave {
        /// Session.
        session: SessionId,
    },
    /// An action, in arrival order.
    Action {
        /// Session.
        session: SessionId,
        /// The action as received.
        action: Action,
    },
    /// One tick ran at `at_us`, leaving the world with `hash` (when recorded).
    Tick {
        /// Tick number after running.
        tick: u64,
        /// Time of the tick.
        at_us: u64,
        /// State hash after the tick.
        hash: Option<Hash32>,
    },
    /// An operator (or the control plane) ended the game.
    End {
        /// Why.
        reason: String,
    },
    /// A player's wallet as the origin's ledger holds it, for its next join:
    /// the world starts the player with it instead of a new player's grant.
    Endow {
        /// The player.
        player: String,
        /// Coins.
        coins: u64,
        /// Items held.
        items: u32,
    },
    /// A step of a zone handoff (a zoned world's zone): journaled and
    /// replicated like any input, so recovery and standbys rebuild the same
    /// entities and the same handoff state.
    Zone(crate::zones::ZoneRecord),
}

/// What a standby found when its re-execution disagreed with its primary.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Evidence {
    /// World.
    pub world: WorldId,
    /// The primary's epoch.
    pub epoch: u64,
    /// The tick whose hash differs.
    pub tick: u64,
    /// The hash the primary recorded.
    pub expected: Hash32,
    /// The hash the standby's re-execution gave.
    pub found: Hash32,
    /// The inputs of that tick, as both executed them.
    pub inputs: Vec<Input>,
    /// The standby's node id.
    pub standby: String,
    /// The tick both states were compared at (`None`: not yet). The
    /// standby's diverged copy goes on re-executing until the primary sends
    /// its state ([`ReplMsg::Compare`]), so this is a few ticks after `tick`.
    pub compared_at: Option<u64>,
    /// The entities whose state differs at `compared_at` (the game's
    /// `World::diff`): empty when not compared yet, or when only the hash
    /// differs (a nondeterministic hash function).
    pub entities: Vec<EntityId>,
    /// The standby's Ed25519 signature over [`Evidence::digest`].
    pub signature: Payload,
}

impl Evidence {
    /// What the standby signs: everything but the signature.
    pub fn digest(&self) -> Hash32 {
        let mut h = Sha256::new();
        h.update(b"skylane/divergence/2");
        let unsigned = (
            self.world,
            self.epoch,
            self.tick,
            self.expected,
            self.found,
            &self.inputs,
            &self.standby,
            self.compared_at,
            &self.entities,
        );
        // Serializing plain data into a Vec cannot fail.
        h.update(postcard::to_stdvec(&unsigned).unwrap_or_default());
        Hash32(h.finalize().into())
    }
}

/// The message a standby signs to attest that it re-executed `world` up to
/// `tick` and reached `hash`.
pub fn attestation(world: WorldId, tick: u64, hash: &Hash32) -> Hash32 {
    let mut h = Sha256::new();
    h.update(b"skylane/attest/1");
    h.update(world.0.to_be_bytes());
    h.update(tick.to_be_bytes());
    h.update(hash.0);
    Hash32(h.finalize().into())
}

/// A standby's co-signature of one batch, named by its channel and first
/// sequence number.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CoSig {
    /// Channel.
    pub channel: ChannelId,
    /// The batch's first sequence number.
    pub seq: u64,
    /// [`crate::chain::cosign`] of the batch.
    pub signature: Payload,
}

/// A replication message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ReplMsg {
    /// standby → primary: stream `world` to me.
    Follow {
        /// World.
        world: WorldId,
        /// The standby's node id.
        node: String,
        /// The highest owner epoch the standby has seen for the world.
        epoch: u64,
    },
    /// primary → standby: start from this engine snapshot.
    Start {
        /// World.
        world: WorldId,
        /// The primary's owner epoch.
        epoch: u64,
        /// The game (which registered `World` reads the snapshot).
        game: String,
        /// The snapshot's tick.
        tick: u64,
        /// The state hash at that tick.
        hash: Hash32,
        /// The engine snapshot (the origin's `Core::snapshot`).
        snapshot: Payload,
    },
    /// primary → standby: the next inputs, in order.
    Entries {
        /// World.
        world: WorldId,
        /// The primary's owner epoch.
        epoch: u64,
        /// The inputs.
        inputs: Vec<Input>,
    },
    /// standby → primary: `tick` re-executed and journaled, reaching `hash`.
    Ack {
        /// World.
        world: WorldId,
        /// The epoch the standby follows.
        epoch: u64,
        /// The tick.
        tick: u64,
        /// The standby's state hash after it.
        hash: Hash32,
        /// The standby's Ed25519 signature over [`attestation`]`(world, tick, hash)`.
        attest: Payload,
        /// Its co-signatures of the tick's signed batches (checkpoints), which
        /// the primary attaches before they leave ([`crate::chain::cosign`]).
        cosigs: Vec<CoSig>,
    },
    /// standby → primary: re-execution disagreed (sent at once, then again
    /// with the entities once compared); the standby verifies nothing more.
    Diverged(Evidence),
    /// primary → standby, after a divergence: the primary's engine at `tick`
    /// (every entry up to it was sent before), for the standby to name the
    /// entities that differ.
    Compare {
        /// World.
        world: WorldId,
        /// The primary's owner epoch.
        epoch: u64,
        /// The snapshot's tick.
        tick: u64,
        /// The engine snapshot (the origin's `Core::snapshot`).
        snapshot: Payload,
    },
    /// primary → standby: not served (not the owner, unknown world, lower epoch).
    Refused {
        /// World.
        world: WorldId,
        /// Why.
        reason: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{encode_frame_to_bytes, FrameDecoder};

    #[test]
    fn messages_round_trip_through_the_codec() {
        let msgs = vec![
            ReplMsg::Follow {
                world: WorldId(1000),
                node: "origin-b".into(),
                epoch: 7,
            },
            ReplMsg::Entries {
                world: WorldId(1000),
                epoch: 7,
                inputs: vec![
                    Input::Join {
                        session: SessionId(3),
                        player: "ann".into(),
                        role: Role::Player,
                        team: None,
                    },
                    Input::End {
                        reason: "operator".into(),
                    },
                    Input::Endow {
                        player: "ann".into(),
                        coins: 7,
                        items: 2,
                    },
                    Input::Tick {
                        tick: 4,
                        at_us: 99,
                        hash: Some(Hash32([9; 32])),
                    },
                ],
            },
            ReplMsg::Ack {
                world: WorldId(1000),
                epoch: 7,
                tick: 4,
                hash: Hash32([9; 32]),
                attest: Payload::from(vec![1; 64]),
                cosigs: vec![CoSig {
                    channel: ChannelId::World,
                    seq: 3,
                    signature: Payload::from(vec![2; 64]),
                }],
            },
            ReplMsg::Compare {
                world: WorldId(1000),
                epoch: 7,
                tick: 9,
                snapshot: Payload::from(vec![5; 10]),
            },
        ];
        let mut d = FrameDecoder::new(REPL_MAX_FRAME);
        for m in &msgs {
            d.push(&encode_frame_to_bytes(m, REPL_MAX_FRAME).unwrap());
        }
        for m in msgs {
            assert_eq!(d.poll_message::<ReplMsg>().unwrap(), Some(m));
        }
    }

    #[test]
    fn attestations_and_evidence_digests_bind_every_field() {
        let a = attestation(WorldId(1), 2, &Hash32([3; 32]));
        assert_ne!(a, attestation(WorldId(1), 3, &Hash32([3; 32])));
        assert_ne!(a, attestation(WorldId(2), 2, &Hash32([3; 32])));
        let e = Evidence {
            world: WorldId(1),
            epoch: 1,
            tick: 2,
            expected: Hash32([1; 32]),
            found: Hash32([2; 32]),
            inputs: Vec::new(),
            standby: "b".into(),
            compared_at: None,
            entities: Vec::new(),
            signature: Payload::empty(),
        };
        let mut f = e.clone();
        f.found = Hash32([3; 32]);
        assert_ne!(e.digest(), f.digest());
        f = e.clone();
        f.entities = vec![EntityId(4)];
        assert_ne!(e.digest(), f.digest());
        f = e.clone();
        f.compared_at = Some(5);
        assert_ne!(e.digest(), f.digest());
        f = e.clone();
        f.signature = Payload::from(vec![1; 64]);
        assert_eq!(e.digest(), f.digest(), "the signature is not signed");
    }
}
