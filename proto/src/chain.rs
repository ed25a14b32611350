//! Tamper evidence: signed, hash-chained event batches.
//!
//! The origin signs every [`EventBatch`] with Ed25519 and chains it to the previous
//! batch of the same channel by hash. A relay cannot then forge a batch (no
//! signature), drop one (the next batch's `prev_hash` no longer matches what the
//! receiver saw) or reorder them (sequence numbers and hashes disagree) without the
//! receiver noticing. Clients, relays and replays verify with [`ChainVerifier`].
//!
//! The hash covers a canonical encoding of every field except the signature:
//! `SHA-256("skylane/batch/1" ‖ postcard(batch without signature))`.
//!
//! **Signing cadence.** Ed25519 signing costs ~20 µs; a busy world emits thousands
//! of channel batches per tick, so signing each one would dominate the tick. Every
//! batch is hash-chained, and every `sign_every`-th batch of a channel (and the
//! first) is signed. Because each batch commits to its predecessor's hash, a
//! forged, dropped or reordered batch breaks the chain at the next batch, or, if
//! the forger rewrote the chain onward, at the next signed batch, whose signature
//! covers its `prev_hash`. Receivers require a signature at least every
//! `sign_every` batches per channel ([`ChainError::MissingSignature`]), so
//! stripping signatures is caught too. Tampering is therefore detected within
//! `sign_every` batches of the channel (default [`DEFAULT_SIGN_EVERY`]: one second
//! at 30 Hz).

use std::collections::HashMap;

use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::ids::{ChannelId, WorldId};
use crate::message::{BatchEvent, EventBatch, Hash32};
use crate::payload::Payload;

const DOMAIN: &[u8] = b"skylane/batch/1";

/// Default signing cadence: every 30th batch of a channel.
pub const DEFAULT_SIGN_EVERY: u32 = 30;

#[derive(Serialize)]
struct Unsigned<'a> {
    world: WorldId,
    channel: ChannelId,
    tick: u64,
    origin_time_us: u64,
    events: &'a [BatchEvent],
    prev_hash: Hash32,
}

/// The hash of a batch (its signature excluded).
pub fn batch_hash(batch: &EventBatch) -> Hash32 {
    let unsigned = Unsigned {
        world: batch.world,
        channel: batch.channel,
        tick: batch.tick,
        origin_time_us: batch.origin_time_us,
        events: &batch.events,
        prev_hash: batch.prev_hash,
    };
    let mut h = Sha256::new();
    h.update(DOMAIN);
    // Serializing plain data into a Vec cannot fail.
    h.update(postcard::to_stdvec(&unsigned).unwrap_or_default());
    Hash32(h.finalize().into())
}

const COSIGN_DOMAIN: &[u8] = b"skylane/cosign/1";

fn cosign_message(hash: &Hash32) -> Vec<u8> {
    let mut m = COSIGN_DOMAIN.to_vec();
    m.extend_from_slice(&hash.0);
    m
}

/// A standby's co-signature of `batch` (its hash, domain-separated from the
/// origin's signature): the standby re-executed the tick and produced this
/// very batch. Goes into [`EventBatch::cosignature`].
pub fn cosign(key: &SigningKey, batch: &EventBatch) -> Payload {
    Payload::from(
        key.sign(&cosign_message(&batch_hash(batch)))
            .to_bytes()
            .to_vec(),
    )
}

/// Why a batch failed verification.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainError {
    /// The signature is missing, malformed or does not match.
    #[error("batch for {channel} at tick {tick} has an invalid signature")]
    BadSignature {
        /// Channel.
        channel: ChannelId,
        /// Tick.
        tick: u64,
    },
    /// `prev_hash` does not match the last batch seen on the channel: a batch was
    /// dropped, altered or reordered.
    #[error("broken hash chain on {channel} at tick {tick}")]
    BrokenChain {
        /// Channel.
        channel: ChannelId,
        /// Tick.
        tick: u64,
    },
    /// More unsigned batches in a row than the signing cadence allows.
    #[error("{channel}: {run} unsigned batches in a row (at most {allowed} allowed)")]
    MissingSignature {
        /// Channel.
        channel: ChannelId,
        /// Unsigned batches in a row.
        run: u32,
        /// Allowed by the cadence.
        allowed: u32,
    },
    /// Sequence numbers are not consecutive.
    #[error("sequence gap on {channel}: expected {expected}, found {found}")]
    SequenceGap {
        /// Channel.
        channel: ChannelId,
        /// Next expected sequence number.
        expected: u64,
        /// Sequence number found.
        found: u64,
    },
}

/// A channel's chain as the signer left it.
#[derive(Debug, Clone, Copy)]
struct Chained {
    /// The last batch's hash.
    hash: Hash32,
    /// Batches since the last signed one, counting it (0: none yet, sign next).
    since: u64,
    /// The sequence block (`seq / sign_every`) of the last signed batch.
    block: Option<u64>,
}

/// Signs batches and keeps each channel's chain (origin side).
pub struct ChainSigner {
    key: SigningKey,
    sign_every: u32,
    last: HashMap<ChannelId, Chained>,
}

impl std::fmt::Debug for ChainSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChainSigner")
            .field("channels", &self.last.len())
            .finish_non_exhaustive()
    }
}

impl ChainSigner {
    /// A signer with the same key and signing interval and no chain state (what
    /// a restarted engine is given; it restores its chains from its snapshot).
    pub fn same_key(&self) -> Self {
        Self {
            key: self.key.clone(),
            sign_every: self.sign_every,
            last: HashMap::new(),
        }
    }
    /// A signer with `key`.
    pub fn new(key: SigningKey) -> Self {
        Self {
            key,
            sign_every: DEFAULT_SIGN_EVERY,
            last: HashMap::new(),
        }
    }

    /// Signs every `n`-th batch of a channel (1 signs every batch). Defaults to
    /// [`DEFAULT_SIGN_EVERY`].
    pub fn set_sign_every(&mut self, n: u32) -> &mut Self {
        self.sign_every = n.max(1);
        self
    }

    /// A signer from 32 secret-key bytes.
    pub fn from_bytes(secret: &[u8; 32]) -> Self {
        Self::new(SigningKey::from_bytes(secret))
    }

    /// Signs a spectator feed frame with this key ([`crate::feedsig`]).
    pub fn sign_feed(&self, frame: &crate::message::FeedFrame) -> crate::feedsig::FeedProof {
        crate::feedsig::sign_feed(&self.key, frame)
    }

    /// Signs a movement frame in place with this key ([`crate::movement`]).
    pub fn sign_movement(&self, frame: &mut crate::movement::MovementFrame) {
        crate::movement::sign_frame(&self.key, frame);
    }

    /// The public key receivers verify with.
    pub fn verifying_key(&self) -> VerifyingKey {
        self.key.verifying_key()
    }

    /// Continues the chain from `hash` on `channel` (after a restart from a log).
    /// The next batch on the channel is signed (so receivers can re-anchor).
    pub fn resume(&mut self, channel: ChannelId, hash: Hash32) {
        self.last.insert(
            channel,
            Chained {
                hash,
                since: 0,
                block: None,
            },
        );
    }

    /// Sets `prev_hash`, signs `batch` when the cadence says so, and records it as
    /// the channel's last batch. Returns the batch's hash.
    pub fn seal(&mut self, batch: &mut EventBatch) -> Hash32 {
        let every = u64::from(self.sign_every.max(1));
        let block = batch.events.first().map(|e| e.seq / every);
        let (prev, since, signed_block) = match self.last.get(&batch.channel) {
            Some(l) => (l.hash, l.since, l.block),
            None => (Hash32::default(), 0, None),
        };
        batch.prev_hash = prev;
        let hash = batch_hash(batch);
        // Signed: the first batch after a (re)start, the first batch to reach a
        // new block of `sign_every` sequence numbers, and any batch that would
        // make the unsigned run too long. The block rule depends only on the
        // sequence numbers, so two engines that re-execute the same inputs sign
        // the same batches (a standby's history matches its primary's).
        let sign = since == 0 || (block.is_some() && block != signed_block) || since >= every;
        batch.signature = if sign {
            Payload::from(self.key.sign(&hash.0).to_bytes().to_vec())
        } else {
            Payload::empty()
        };
        let entry = if sign {
            Chained {
                hash,
                since: 1,
                block: block.or(signed_block),
            }
        } else {
            Chained {
                hash,
                since: since + 1,
                block: signed_block,
            }
        };
        self.last.insert(batch.channel, entry);
        hash
    }
}

#[derive(Debug, Clone, Copy)]
struct ChannelState {
    hash: Hash32,
    next_seq: u64,
    unsigned_run: u32,
}

/// Verifies batches and their chains (relay, client and replay side).
#[derive(Debug, Clone)]
pub struct ChainVerifier {
    key: VerifyingKey,
    max_unsigned: u32,
    channels: HashMap<ChannelId, ChannelState>,
    cosigners: Vec<VerifyingKey>,
    attested: u64,
    unattested: u64,
}

impl ChainVerifier {
    /// A verifier trusting `key`.
    pub fn new(key: VerifyingKey) -> Self {
        Self {
            key,
            max_unsigned: DEFAULT_SIGN_EVERY - 1,
            channels: HashMap::new(),
            cosigners: Vec::new(),
            attested: 0,
            unattested: 0,
        }
    }

    /// Also trusts `key` as a standby's: signed batches (checkpoints) are
    /// then counted as attested by two servers (a valid co-signature by a
    /// trusted standby) or not (none, or one this verifier cannot check: a
    /// standby it does not know, or a forgery). A co-signature never fails a
    /// batch: the origin's signature and the chain decide that.
    pub fn add_cosigner(&mut self, key: VerifyingKey) -> &mut Self {
        self.cosigners.push(key);
        self
    }

    /// Signed batches (checkpoints) that a trusted standby co-signed: two
    /// servers attested them.
    pub fn attested(&self) -> u64 {
        self.attested
    }

    /// Signed batches without a co-signature a trusted standby made, while
    /// standby keys are trusted (a world without a standby, one taken over
    /// that has none yet, or a standby this verifier does not know).
    pub fn unattested(&self) -> u64 {
        self.unattested
    }

    fn count_cosignature(&mut self, batch: &EventBatch, hash: &Hash32) {
        if self.cosigners.is_empty() || (batch.signature.is_empty() && batch.cosignature.is_empty())
        {
            return;
        }
        let ok = Signature::from_slice(&batch.cosignature).is_ok_and(|sig| {
            let m = cosign_message(hash);
            self.cosigners.iter().any(|k| k.verify(&m, &sig).is_ok())
        });
        if ok {
            self.attested += 1;
        } else {
            self.unattested += 1;
        }
    }

    /// Accepts the signing cadence `n` of [`ChainSigner::set_sign_every`]: at most
    /// `n - 1` unsigned batches in a row per channel.
    pub fn set_sign_every(&mut self, n: u32) -> &mut Self {
        self.max_unsigned = n.max(1) - 1;
        self
    }

    /// Checks the signature only (no chain state): for a relay that forwards
    /// batches without tracking every channel.
    pub fn check_signature(&self, batch: &EventBatch) -> Result<Hash32, ChainError> {
        let hash = batch_hash(batch);
        let bad = || ChainError::BadSignature {
            channel: batch.channel,
            tick: batch.tick,
        };
        let sig = Signature::from_slice(&batch.signature).map_err(|_| bad())?;
        self.key.verify(&hash.0, &sig).map_err(|_| bad())?;
        Ok(hash)
    }

    /// Starts (or restarts) a channel's chain from a trusted point, for example a
    /// keyframe or a resume: the next batch must chain to `hash` and start at
    /// `next_seq`.
    pub fn trust(&mut self, channel: ChannelId, hash: Hash32, next_seq: u64) {
        self.channels.insert(
            channel,
            ChannelState {
                hash,
                next_seq,
                unsigned_run: 0,
            },
        );
    }

    /// Forgets a channel's chain: the next batch anchors it again (after the
    /// receiver resynchronised from a keyframe).
    pub fn forget(&mut self, channel: ChannelId) {
        self.channels.remove(&channel);
    }

    /// Verifies the chain, the sequence numbers, and the signature when present, of
    /// the next batch of its channel. The first batch seen on a channel anchors the
    /// chain; if it is unsigned, a signed batch must follow within the cadence.
    pub fn verify(&mut self, batch: &EventBatch) -> Result<(), ChainError> {
        let (hash, signed) = if batch.signature.is_empty() {
            (batch_hash(batch), false)
        } else {
            (self.check_signature(batch)?, true)
        };
        self.count_cosignature(batch, &hash);
        let run = if signed {
            0
        } else {
            self.channels
                .get(&batch.channel)
                .map_or(1, |s| s.unsigned_run + 1)
        };
        if run > self.max_unsigned {
            return Err(ChainError::MissingSignature {
                channel: batch.channel,
                run,
                allowed: self.max_unsigned,
            });
        }
        if let Some(state) = self.channels.get(&batch.channel) {
            if batch.prev_hash != state.hash {
                return Err(ChainError::BrokenChain {
                    channel: batch.channel,
                    tick: batch.tick,
                });
            }
            if let Some(first) = batch.events.first() {
                if first.seq != state.next_seq {
                    return Err(ChainError::SequenceGap {
                        channel: batch.channel,
                        expected: state.next_seq,
                        found: first.seq,
                    });
                }
            }
        }
        let mut next_seq = self
            .channels
            .get(&batch.channel)
            .map_or_else(|| batch.events.first().map_or(0, |e| e.seq), |s| s.next_seq);
        for e in &batch.events {
            if e.seq != next_seq {
                return Err(ChainError::SequenceGap {
                    channel: batch.channel,
                    expected: next_seq,
                    found: e.seq,
                });
            }
            next_seq += 1;
        }
        self.channels.insert(
            batch.channel,
            ChannelState {
                hash,
                next_seq,
                unsigned_run: run,
            },
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::EventClass;

    fn batch(tick: u64, first_seq: u64, n: u64) -> EventBatch {
        EventBatch {
            world: WorldId(1),
            channel: ChannelId::World,
            tick,
            origin_time_us: tick * 33_000,
            events: (0..n)
                .map(|i| BatchEvent {
                    seq: first_seq + i,
                    class: EventClass::Critical,
                    entity: None,
                    payload: Payload::from(vec![i as u8; 8]),
                })
                .collect(),
            prev_hash: Hash32::default(),
            signature: Payload::empty(),
            cosignature: Default::default(),
        }
    }

    fn signed_chain(len: u64) -> (ChainSigner, Vec<EventBatch>) {
        let mut signer = ChainSigner::from_bytes(&[7; 32]);
        signer.set_sign_every(1);
        let batches = (0..len)
            .map(|t| {
                let mut b = batch(t, t * 2, 2);
                signer.seal(&mut b);
                b
            })
            .collect();
        (signer, batches)
    }

    #[test]
    fn an_intact_chain_verifies() {
        let (signer, batches) = signed_chain(5);
        let mut v = ChainVerifier::new(signer.verifying_key());
        for b in &batches {
            v.verify(b).unwrap();
        }
    }

    #[test]
    fn a_forged_batch_is_caught() {
        let (signer, mut batches) = signed_chain(3);
        batches[1].events[0].payload = Payload::from_static(b"forged");
        let mut v = ChainVerifier::new(signer.verifying_key());
        v.verify(&batches[0]).unwrap();
        assert_eq!(
            v.verify(&batches[1]),
            Err(ChainError::BadSignature {
                channel: ChannelId::World,
                tick: 1
            })
        );
        // A batch signed by another key is refused too.
        let mut other = ChainSigner::from_bytes(&[9; 32]);
        other.set_sign_every(1);
        let mut b = batch(9, 0, 1);
        other.seal(&mut b);
        assert!(matches!(
            v.check_signature(&b),
            Err(ChainError::BadSignature { .. })
        ));
    }

    #[test]
    fn a_dropped_batch_breaks_the_chain() {
        let (signer, batches) = signed_chain(3);
        let mut v = ChainVerifier::new(signer.verifying_key());
        v.verify(&batches[0]).unwrap();
        assert_eq!(
            v.verify(&batches[2]),
            Err(ChainError::BrokenChain {
                channel: ChannelId::World,
                tick: 2
            })
        );
    }

    #[test]
    fn reordered_batches_are_caught() {
        let (signer, batches) = signed_chain(3);
        let mut v = ChainVerifier::new(signer.verifying_key());
        v.verify(&batches[1]).unwrap(); // first seen: trusted by signature
        assert!(v.verify(&batches[0]).is_err());
    }

    #[test]
    fn sequence_gaps_inside_a_batch_are_caught() {
        let mut signer = ChainSigner::from_bytes(&[1; 32]);
        signer.set_sign_every(1);
        let mut b = batch(0, 0, 3);
        b.events[2].seq = 5;
        signer.seal(&mut b);
        let mut v = ChainVerifier::new(signer.verifying_key());
        assert_eq!(
            v.verify(&b),
            Err(ChainError::SequenceGap {
                channel: ChannelId::World,
                expected: 2,
                found: 5
            })
        );
    }

    #[test]
    fn co_signatures_are_checked_against_the_trusted_standbys() {
        let (signer, mut batches) = signed_chain(3);
        let standby = SigningKey::from_bytes(&[5; 32]);
        let other = SigningKey::from_bytes(&[6; 32]);
        batches[0].cosignature = cosign(&standby, &batches[0]);
        let mut v = ChainVerifier::new(signer.verifying_key());
        v.add_cosigner(standby.verifying_key());
        for b in &batches {
            v.verify(b).unwrap();
        }
        assert_eq!(v.attested(), 1);
        assert_eq!(v.unattested(), 2, "the other two carry none");
        // A co-signature by a key nobody trusts, or over another batch, does
        // not count as attested (and fails nothing).
        let (_, mut forged) = signed_chain(2);
        forged[0].cosignature = cosign(&other, &forged[0]);
        forged[1].cosignature = batches[0].cosignature.clone();
        let mut v = ChainVerifier::new(signer.verifying_key());
        v.add_cosigner(standby.verifying_key());
        for b in &forged {
            v.verify(b).unwrap();
        }
        assert_eq!((v.attested(), v.unattested()), (0, 2));
        // Without standby keys, co-signatures are not looked at.
        let mut v = ChainVerifier::new(signer.verifying_key());
        v.verify(&forged[0]).unwrap();
        assert_eq!((v.attested(), v.unattested()), (0, 0));
    }

    #[test]
    fn a_signer_restored_mid_chain_signs_what_the_original_signs() {
        // A standby re-executing the same inputs restores its chain from a
        // snapshot: after its first (fresh) batch it signs exactly the batches
        // its primary signs, so a receiver switching between them mid-chain
        // never sees a longer unsigned run than the cadence allows.
        let mut primary = ChainSigner::from_bytes(&[7; 32]);
        primary.set_sign_every(4);
        let original: Vec<EventBatch> = (0..16)
            .map(|t| {
                let mut b = batch(t, t, 1);
                primary.seal(&mut b);
                b
            })
            .collect();
        let mut standby = ChainSigner::from_bytes(&[7; 32]);
        standby.set_sign_every(4);
        standby.resume(ChannelId::World, batch_hash(&original[5]));
        let again: Vec<EventBatch> = (6..16)
            .map(|t| {
                let mut b = batch(t, t, 1);
                standby.seal(&mut b);
                b
            })
            .collect();
        assert!(!again[0].signature.is_empty(), "first after a restart");
        assert_eq!(&again[2..], &original[8..], "identical from the next block");
        let mut v = ChainVerifier::new(primary.verifying_key());
        v.set_sign_every(4);
        for b in original[..7].iter().chain(&again[1..]) {
            v.verify(b).unwrap();
        }
    }

    #[test]
    fn sparse_signatures_still_catch_forgery_and_stripping() {
        let mut signer = ChainSigner::from_bytes(&[7; 32]);
        signer.set_sign_every(4);
        let mut batches: Vec<EventBatch> = (0..9)
            .map(|t| {
                let mut b = batch(t, t, 1);
                signer.seal(&mut b);
                b
            })
            .collect();
        let signed: Vec<bool> = batches.iter().map(|b| !b.signature.is_empty()).collect();
        assert_eq!(
            signed,
            [true, false, false, false, true, false, false, false, true]
        );
        let mut v = ChainVerifier::new(signer.verifying_key());
        v.set_sign_every(4);
        for b in &batches {
            v.verify(b).unwrap();
        }
        // A relay forges unsigned batch 5 and rewrites the chain after it: the next
        // signed batch (8) commits to the genuine hash of 7 and exposes it.
        let mut forged = batches.clone();
        forged[5].events[0].payload = Payload::from_static(b"forged");
        for i in 6..8 {
            forged[i].prev_hash = batch_hash(&forged[i - 1]);
        }
        let mut v = ChainVerifier::new(signer.verifying_key());
        v.set_sign_every(4);
        let results: Vec<_> = forged.iter().map(|b| v.verify(b)).collect();
        assert!(results[..8].iter().all(Result::is_ok));
        assert_eq!(
            results[8],
            Err(ChainError::BrokenChain {
                channel: ChannelId::World,
                tick: 8
            })
        );
        // Stripping the signatures is refused once the cadence is exceeded.
        for b in &mut batches {
            b.signature = Payload::empty();
        }
        let mut v = ChainVerifier::new(signer.verifying_key());
        v.set_sign_every(4);
        let results: Vec<_> = batches.iter().map(|b| v.verify(b)).collect();
        assert!(results[..3].iter().all(Result::is_ok));
        assert!(matches!(
            results[3],
            Err(ChainError::MissingSignature { run: 4, .. })
        ));
    }

    #[test]
    fn trusted_resume_point() {
        let (signer, batches) = signed_chain(4);
        let mut v = ChainVerifier::new(signer.verifying_key());
        v.trust(ChannelId::World, batch_hash(&batches[1]), 4);
        v.verify(&batches[2]).unwrap();
        v.verify(&batches[3]).unwrap();
    }
}
