//! Movement as latest-wins state: what an origin publishes per cell and tick
//! ([`MovementFrame`], on the link), what a relay sends a client per datagram
//! ([`MovementDatagram`]: the newest state of the entities it sees, grouped by
//! the origin frame each state comes from), and the signatures that keep a
//! relay honest.
//!
//! Movement is not in the hash chain: a chained, exactly-once batch is the
//! wrong shape for a position that the next tick supersedes. Tamper evidence
//! comes from a signature per origin frame instead: the origin signs, per cell
//! and tick, the digest of the world, channel, tick, time and the *sorted set*
//! of its entries' hashes ([`frame_digest`]). A relay hands a client, with the
//! entries it picked from a frame, the hashes of the frame's other entries
//! ([`MoveGroup::others`]) and the signature; the client recomputes the digest
//! and checks it ([`verify_group`]).
//!
//! What a relay (or anyone on the path) can do: drop, delay or repeat a
//! signed state, and pick which of a frame's entries a client gets. What it
//! cannot: invent a state, change one, or move it to another cell, tick or
//! time; a client holding the origin's key detects each of those. An origin
//! that does not sign (no key) sends empty signatures, and clients that were
//! not given a key do not check (as with the chain).

use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::ids::{ChannelId, EntityId, WorldId};
use crate::message::Hash32;
use crate::payload::Payload;

/// Largest game-encoded movement state of one entity, bytes. An origin refuses a
/// larger one when the world emits it (it could never fit a datagram with its
/// framing and proof).
pub const MAX_MOVE_STATE: usize = 256;

/// Most entries in one origin frame: a cell with more movers is published as
/// several frames (each signed), so a relay that gives a client only some of a
/// frame's entries never has to send more than this many hashes with them.
pub const MAX_FRAME_ENTRIES: usize = 32;

/// A movement entry's hash as carried for the entries a client did not get
/// (128 bits: second preimages stay out of reach, at half the bytes).
pub type EntryHash = [u8; 16];

/// One entity's movement state at a tick.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MoveEntry {
    /// The entity.
    pub entity: EntityId,
    /// Where it is, in world units (relays send the nearest first).
    pub pos: (f32, f32),
    /// The game's encoding of its state (position, velocity, heading...).
    pub payload: Payload,
}

/// Origin → relay: the movement of one cell in one tick (one entry per entity
/// that moved, sorted by entity), signed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MovementFrame {
    /// World.
    pub world: WorldId,
    /// The cell's channel.
    pub channel: ChannelId,
    /// The tick the states were true at.
    pub tick: u64,
    /// The origin's clock then, microseconds since the Unix epoch.
    pub origin_time_us: u64,
    /// The entries, sorted by entity.
    pub entries: Vec<MoveEntry>,
    /// Ed25519 over [`frame_digest`] (64 bytes; empty when the origin does not
    /// sign).
    pub sig: Payload,
}

/// Entries of one origin frame as a relay hands them to a client, with what the
/// client needs to check them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MoveGroup {
    /// The cell's channel.
    pub channel: ChannelId,
    /// The origin frame's tick.
    pub tick: u64,
    /// The origin frame's time, microseconds since the Unix epoch.
    pub origin_time_us: u64,
    /// The entries the client gets from that frame.
    pub entries: Vec<MoveEntry>,
    /// The hashes of the frame's other entries (empty when all are here).
    pub others: Vec<EntryHash>,
    /// The origin frame's signature (empty when it was unsigned).
    pub sig: Payload,
}

/// Relay → client, one QUIC datagram: the newest movement states of the entities
/// the client sees that it has not acknowledged, nearest first. Unreliable: a lost
/// datagram is superseded by the next one, which carries the newest state of
/// whatever is still unacknowledged.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MovementDatagram {
    /// World.
    pub world: WorldId,
    /// The datagram's number, acknowledged by [`crate::ClientMsg::MovementAck`].
    pub seq: u64,
    /// The entries, grouped by origin frame.
    pub groups: Vec<MoveGroup>,
}

/// Why a movement group failed verification.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MovementError {
    /// The group carries no signature but the client expects one.
    #[error("movement for {channel} at tick {tick} is unsigned")]
    Unsigned {
        /// Channel.
        channel: ChannelId,
        /// Tick.
        tick: u64,
    },
    /// The signature does not match: a state was forged or altered.
    #[error("movement for {channel} at tick {tick} does not match the origin's signature")]
    BadSignature {
        /// Channel.
        channel: ChannelId,
        /// Tick.
        tick: u64,
    },
}

/// One entry's hash (covers the entity, its position and its state).
pub fn entry_hash(e: &MoveEntry) -> EntryHash {
    let mut h = Sha256::new();
    h.update(b"skylane-move-entry/1");
    h.update(e.entity.0.to_le_bytes());
    h.update(e.pos.0.to_le_bytes());
    h.update(e.pos.1.to_le_bytes());
    h.update((e.payload.len() as u64).to_le_bytes());
    h.update(&e.payload[..]);
    let full = h.finalize();
    let mut out = [0u8; 16];
    out.copy_from_slice(&full[..16]);
    out
}

/// The digest an origin signs for one cell's movement in one tick: the world,
/// channel, tick, time and the entries' hashes, **sorted** (so a client can
/// recompute it from the entries it got and the others' hashes, in any order).
pub fn frame_digest(
    world: WorldId,
    channel: ChannelId,
    tick: u64,
    origin_time_us: u64,
    hashes: &mut [EntryHash],
) -> Hash32 {
    hashes.sort_unstable();
    let mut h = Sha256::new();
    h.update(b"skylane-move-frame/1");
    h.update(world.0.to_le_bytes());
    let (kind, a, b) = match channel {
        ChannelId::World => (0u8, 0u64, 0u64),
        ChannelId::Team(t) => (1, u64::from(t.0), 0),
        ChannelId::Cell { x, y } => (2, u64::from(x), u64::from(y)),
    };
    h.update([kind]);
    h.update(a.to_le_bytes());
    h.update(b.to_le_bytes());
    h.update(tick.to_le_bytes());
    h.update(origin_time_us.to_le_bytes());
    h.update((hashes.len() as u64).to_le_bytes());
    for x in hashes.iter() {
        h.update(x);
    }
    Hash32(h.finalize().into())
}

/// Signs a frame in place (its `sig`).
pub fn sign_frame(key: &SigningKey, frame: &mut MovementFrame) {
    let mut hashes: Vec<EntryHash> = frame.entries.iter().map(entry_hash).collect();
    let d = frame_digest(
        frame.world,
        frame.channel,
        frame.tick,
        frame.origin_time_us,
        &mut hashes,
    );
    frame.sig = Payload::from(key.sign(&d.0).to_bytes().to_vec());
}

/// Checks a group a relay sent against the origin's key.
pub fn verify_group(
    key: &VerifyingKey,
    world: WorldId,
    g: &MoveGroup,
) -> Result<(), MovementError> {
    let bad = MovementError::BadSignature {
        channel: g.channel,
        tick: g.tick,
    };
    if g.sig.is_empty() {
        return Err(MovementError::Unsigned {
            channel: g.channel,
            tick: g.tick,
        });
    }
    let sig = Signature::from_slice(&g.sig[..]).map_err(|_| bad.clone())?;
    let mut hashes: Vec<EntryHash> = g.entries.iter().map(entry_hash).collect();
    hashes.extend_from_slice(&g.others);
    let d = frame_digest(world, g.channel, g.tick, g.origin_time_us, &mut hashes);
    key.verify(&d.0, &sig).map_err(|_| bad)
}

/// Checks a whole origin frame against the origin's key (the group a client
/// would get holding all of its entries).
pub fn verify_frame(key: &VerifyingKey, f: &MovementFrame) -> Result<(), MovementError> {
    let g = MoveGroup {
        channel: f.channel,
        tick: f.tick,
        origin_time_us: f.origin_time_us,
        entries: f.entries.clone(),
        others: Vec::new(),
        sig: f.sig.clone(),
    };
    verify_group(key, f.world, &g)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(n: u64) -> MovementFrame {
        MovementFrame {
            world: WorldId(3),
            channel: ChannelId::Cell { x: 1, y: 2 },
            tick: 9,
            origin_time_us: 1_000,
            entries: (0..n)
                .map(|i| MoveEntry {
                    entity: EntityId(i),
                    pos: (i as f32, 0.5),
                    payload: Payload::from(vec![i as u8; 12]),
                })
                .collect(),
            sig: Payload::default(),
        }
    }

    fn group(f: &MovementFrame, keep: &[usize]) -> MoveGroup {
        let entries: Vec<MoveEntry> = keep.iter().map(|i| f.entries[*i].clone()).collect();
        let others = f
            .entries
            .iter()
            .enumerate()
            .filter(|(i, _)| !keep.contains(i))
            .map(|(_, e)| entry_hash(e))
            .collect();
        MoveGroup {
            channel: f.channel,
            tick: f.tick,
            origin_time_us: f.origin_time_us,
            entries,
            others,
            sig: f.sig.clone(),
        }
    }

    #[test]
    fn a_subset_with_the_others_hashes_verifies_and_a_change_does_not() {
        let key = SigningKey::from_bytes(&[7u8; 32]);
        let vk = key.verifying_key();
        let mut f = frame(5);
        sign_frame(&key, &mut f);
        // Any subset, in any order, verifies.
        let g = group(&f, &[3, 0]);
        assert_eq!(verify_group(&vk, f.world, &g), Ok(()));
        assert_eq!(
            verify_group(&vk, f.world, &group(&f, &[0, 1, 2, 3, 4])),
            Ok(())
        );
        // A moved position, a changed state, another tick, another world, a
        // dropped hash (claiming fewer entries): each detected.
        let mut moved = g.clone();
        moved.entries[0].pos.0 += 1.0;
        let mut changed = g.clone();
        changed.entries[1].payload = Payload::from(vec![99u8; 12]);
        let mut later = g.clone();
        later.tick += 1;
        let mut fewer = g.clone();
        fewer.others.pop();
        for bad in [&moved, &changed, &later, &fewer] {
            assert!(matches!(
                verify_group(&vk, f.world, bad),
                Err(MovementError::BadSignature { .. })
            ));
        }
        assert!(verify_group(&vk, WorldId(4), &g).is_err());
        let mut unsigned = g;
        unsigned.sig = Payload::default();
        assert!(matches!(
            verify_group(&vk, f.world, &unsigned),
            Err(MovementError::Unsigned { .. })
        ));
    }
}
