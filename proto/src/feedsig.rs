//! Signed spectator feed frames: the origin signs, per frame, the hash of
//! every event it holds (with the world, tick, time and kind); relays filter,
//! thin and coalesce frames per spectator and hand on, with each frame they
//! derive, the proofs of the origin frames its events come from (a proof's
//! hash list is left out when the frame carries exactly the origin frame's
//! events: the receiver recomputes it). A spectator with the origin's key
//! checks every proof's signature and that every event it got is one the
//! origin signed.
//!
//! What a relay (or a re-streamer) can do: drop events or frames, hold them
//! back, repeat a signed frame. What it cannot: invent an event, change one,
//! or move one to another world or tick time (the signature covers those).
//! The reduced bandwidth mode's coalesced deltas (events of several frames,
//! thinned) are unsigned: proving them would cost every constituent frame's
//! signature and the hashes of the events thinned out, more than the mode
//! saves; its keyframes are signed, and a client knows it asked for it.

use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::ids::WorldId;
use crate::message::{FeedEvent, FeedFrame, Hash32};
use crate::payload::Payload;

/// The origin's signature over one feed frame.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeedProof {
    /// The frame's tick.
    pub tick: u64,
    /// Its origin time (microseconds since the Unix epoch).
    pub origin_time_us: u64,
    /// Whether it was a keyframe.
    pub keyframe: bool,
    /// The hash of each of its events, in order; empty when the frame carrying
    /// the proof holds exactly those events (the receiver recomputes them).
    pub hashes: Vec<Hash32>,
    /// Ed25519 over the digest of all the above and the world (64 bytes).
    pub sig: Payload,
}

/// Why a feed frame failed verification.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FeedError {
    /// The frame carries no proof.
    #[error("feed frame at tick {tick} is unsigned")]
    Unsigned {
        /// Tick.
        tick: u64,
    },
    /// A proof's signature does not match (forged or altered).
    #[error("feed proof for tick {tick} has an invalid signature")]
    BadSignature {
        /// The proof's tick.
        tick: u64,
    },
    /// An event is not one the origin signed.
    #[error("feed frame at tick {tick} holds an event the origin did not sign")]
    Forged {
        /// The frame's tick.
        tick: u64,
    },
}

/// The hash of one feed event.
pub fn feed_event_hash(e: &FeedEvent) -> Hash32 {
    let mut h = Sha256::new();
    h.update(b"skylane/feed-event/1");
    h.update(postcard::to_stdvec(e).unwrap_or_default());
    Hash32(h.finalize().into())
}

fn digest(world: WorldId, p: &FeedProof, hashes: &[Hash32]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"skylane/feed/1");
    h.update(world.0.to_le_bytes());
    h.update(p.tick.to_le_bytes());
    h.update(p.origin_time_us.to_le_bytes());
    h.update([u8::from(p.keyframe)]);
    h.update((hashes.len() as u64).to_le_bytes());
    for x in hashes {
        h.update(x.0);
    }
    h.finalize().into()
}

/// Signs `frame` (its events as they are): the proof it carries from the origin.
pub fn sign_feed(key: &SigningKey, frame: &FeedFrame) -> FeedProof {
    let mut p = FeedProof {
        tick: frame.tick,
        origin_time_us: frame.origin_time_us,
        keyframe: frame.keyframe,
        hashes: frame.events.iter().map(feed_event_hash).collect(),
        sig: Payload::default(),
    };
    let sig = key.sign(&digest(frame.world, &p, &p.hashes));
    p.sig = Payload::from(sig.to_bytes().to_vec());
    p
}

/// Checks `frame` against the origin's `key`: every proof signed by it, every
/// event among the hashes it signed.
pub fn verify_feed(key: &VerifyingKey, frame: &FeedFrame) -> Result<(), FeedError> {
    let tick = frame.tick;
    if frame.proofs.is_empty() {
        return Err(FeedError::Unsigned { tick });
    }
    let own: Vec<Hash32> = frame.events.iter().map(feed_event_hash).collect();
    let mut signed = std::collections::HashSet::new();
    for p in &frame.proofs {
        // An empty list stands for the frame's own events (one proof only).
        let hashes = if p.hashes.is_empty() && frame.proofs.len() == 1 {
            &own
        } else {
            &p.hashes
        };
        let sig = <[u8; 64]>::try_from(&p.sig[..])
            .map(|b| Signature::from_bytes(&b))
            .map_err(|_| FeedError::BadSignature { tick: p.tick })?;
        key.verify(&digest(frame.world, p, hashes), &sig)
            .map_err(|_| FeedError::BadSignature { tick: p.tick })?;
        signed.extend(hashes.iter().copied());
    }
    if own.iter().all(|h| signed.contains(h)) {
        Ok(())
    } else {
        Err(FeedError::Forged { tick })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::class::EventClass;
    use crate::ids::EntityId;

    fn event(n: u8) -> FeedEvent {
        FeedEvent {
            class: EventClass::Movement,
            entity: Some(EntityId(u64::from(n))),
            team: None,
            pos: Some((f32::from(n), 1.0)),
            payload: Payload::from(vec![n; 8]),
        }
    }

    fn frame(tick: u64, events: Vec<FeedEvent>) -> FeedFrame {
        FeedFrame {
            world: WorldId(1),
            tick,
            origin_time_us: tick * 33_000,
            keyframe: false,
            events,
            proofs: Vec::new(),
        }
    }

    #[test]
    fn signed_frames_verify_filtered_and_coalesced_and_forgeries_do_not() {
        let key = SigningKey::from_bytes(&[5; 32]);
        let pk = key.verifying_key();
        let mut a = frame(1, vec![event(1), event(2), event(3)]);
        let pa = sign_feed(&key, &a);
        a.proofs = vec![FeedProof {
            hashes: Vec::new(),
            ..pa.clone()
        }];
        assert_eq!(verify_feed(&pk, &a), Ok(()), "as signed, hashes recomputed");
        // Filtered: a subset, with the full list.
        let mut filtered = frame(1, vec![event(2)]);
        filtered.proofs = vec![pa.clone()];
        assert_eq!(verify_feed(&pk, &filtered), Ok(()));
        // Coalesced over two ticks.
        let b = frame(2, vec![event(4)]);
        let pb = sign_feed(&key, &b);
        let mut both = frame(2, vec![event(3), event(4)]);
        both.proofs = vec![pa.clone(), pb];
        assert_eq!(verify_feed(&pk, &both), Ok(()));
        // An invented or altered event; another key; no proof; a moved time.
        let mut forged = frame(1, vec![event(9)]);
        forged.proofs = vec![pa.clone()];
        assert_eq!(
            verify_feed(&pk, &forged),
            Err(FeedError::Forged { tick: 1 })
        );
        let mut altered = a.clone();
        altered.events[0].payload = Payload::from(vec![0; 8]);
        assert_eq!(
            verify_feed(&pk, &altered),
            Err(FeedError::BadSignature { tick: 1 })
        );
        let other = SigningKey::from_bytes(&[6; 32]).verifying_key();
        assert!(verify_feed(&other, &a).is_err());
        assert_eq!(
            verify_feed(&pk, &frame(1, vec![event(1)])),
            Err(FeedError::Unsigned { tick: 1 })
        );
        let mut moved = filtered.clone();
        moved.proofs[0].origin_time_us += 1;
        assert_eq!(
            verify_feed(&pk, &moved),
            Err(FeedError::BadSignature { tick: 1 })
        );
        let mut garbage = filtered;
        garbage.proofs[0].sig = Payload::from(vec![1, 2, 3]);
        assert_eq!(
            verify_feed(&pk, &garbage),
            Err(FeedError::BadSignature { tick: 1 })
        );
    }
}
