//! Per-channel ordering and de-duplication (pure).
//!
//! The relay sends each batch on the stream of its most urgent class, so batches
//! of one channel can arrive out of order, and after a resume a replayed batch may
//! repeat one already received. [`Ordering`] releases events exactly once, in
//! sequence order per channel, holding early batches back (bounded) until the gap
//! fills; a keyframe beyond a gap resynchronises the channel.

use std::collections::BTreeMap;

use rustc_hash::FxHashMap as HashMap;
use skylane_proto::{ChannelCursor, ChannelId, EventBatch, Keyframe};

/// What [`Ordering`] releases.
#[derive(Debug, Clone, PartialEq)]
pub enum Released {
    /// A batch, next in its channel's order.
    Batch(EventBatch),
    /// A keyframe (checkpoint or resync point).
    Keyframe(Keyframe),
}

#[derive(Debug, Default)]
struct Chan {
    last: Option<u64>,
    held: BTreeMap<u64, EventBatch>,
    /// A keyframe ahead of `last`, waiting for the batches before it (they may
    /// travel on another stream) or for a second keyframe proving a real gap.
    keyframe: Option<Keyframe>,
}

/// Counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OrderStats {
    /// Batches dropped as already received.
    pub duplicates: u64,
    /// Batches held back until a gap filled.
    pub held: u64,
    /// Channels resynchronised from a keyframe past a gap (events skipped).
    pub resyncs: u64,
    /// Events skipped by resyncs.
    pub skipped_events: u64,
}

/// Per-channel reorder buffer.
#[derive(Debug)]
pub struct Ordering {
    max_held: usize,
    chans: HashMap<ChannelId, Chan>,
    stats: OrderStats,
}

impl Ordering {
    /// At most `max_held` batches are held per channel; past that the oldest gap is
    /// given up on (the channel continues from the earliest held batch).
    pub fn new(max_held: usize) -> Self {
        Self {
            max_held: max_held.max(1),
            chans: HashMap::default(),
            stats: OrderStats::default(),
        }
    }

    /// Counters.
    pub fn stats(&self) -> OrderStats {
        self.stats
    }

    /// The last sequence number released per channel (sent in a resume hello).
    pub fn cursors(&self) -> Vec<ChannelCursor> {
        let mut v: Vec<ChannelCursor> = self
            .chans
            .iter()
            .filter_map(|(c, s)| s.last.map(|seq| ChannelCursor { channel: *c, seq }))
            .collect();
        v.sort_by_key(|c| c.channel);
        v
    }

    /// The session's channels changed. A newly added channel starts after the given
    /// sequence number (batches held beyond it are released); a channel already
    /// tracked (a resume) keeps its own cursor unless the added one is later; a
    /// removed channel is forgotten. Returns the tracked channels whose cursor
    /// moved forward: their hash chain restarts with the next batch.
    pub fn handle_subscriptions(
        &mut self,
        added: &[ChannelCursor],
        removed: &[ChannelId],
        out: &mut Vec<Released>,
    ) -> Vec<ChannelId> {
        let mut restarted = Vec::new();
        for c in removed {
            self.chans.remove(c);
        }
        for a in added {
            let ch = self.chans.entry(a.channel).or_default();
            // A resume keeps its own cursor, unless the origin says the session is
            // owed events only from later (it missed a removal and a re-add while
            // it was away).
            if ch.last.is_none_or(|l| l < a.seq) {
                if ch.last.is_some() {
                    restarted.push(a.channel);
                }
                ch.last = Some(a.seq);
                ch.held
                    .retain(|_, b| b.events.last().is_some_and(|e| e.seq > a.seq));
                Self::drain_held(ch, out);
            }
        }
        restarted
    }

    /// A batch arrived; returns what can be released now, in order.
    pub fn handle_batch(&mut self, batch: EventBatch, out: &mut Vec<Released>) {
        let (Some(first), Some(last)) = (batch.events.first(), batch.events.last()) else {
            return;
        };
        let (first, last) = (first.seq, last.seq);
        let ch = self.chans.entry(batch.channel).or_default();
        match ch.last {
            Some(l) if last <= l => {
                self.stats.duplicates += 1;
                return;
            }
            Some(l) if first > l + 1 => {
                self.stats.held += 1;
                ch.held.insert(first, batch);
                if ch.held.len() > self.max_held {
                    if let Some((&k, _)) = ch.held.iter().next() {
                        if let Some(b) = ch.held.remove(&k) {
                            self.stats.resyncs += 1;
                            self.stats.skipped_events += k - l - 1;
                            ch.last = Some(k - 1);
                            Self::release(ch, b, out);
                        }
                    }
                } else {
                    return;
                }
            }
            _ => Self::release(ch, batch, out),
        }
        if ch.keyframe.as_ref().is_some_and(|k| Some(k.seq) == ch.last) {
            if let Some(k) = ch.keyframe.take() {
                out.push(Released::Keyframe(k));
            }
        }
        Self::drain_held(ch, out);
    }

    /// A checkpoint keyframe arrived. The first one of a channel starts it; one at
    /// the channel's position is released; one ahead of it waits for the batches
    /// before it, which travel on other (slower) streams and always arrive, and
    /// is released in its place, or replaced by a newer checkpoint. Checkpoints
    /// never skip events.
    pub fn handle_keyframe(&mut self, kf: Keyframe, out: &mut Vec<Released>) {
        let ch = self.chans.entry(kf.channel).or_default();
        match ch.last {
            Some(l) if kf.seq < l => {}
            Some(l) if kf.seq > l => {
                if ch.keyframe.as_ref().is_none_or(|k| k.seq < kf.seq) {
                    ch.keyframe = Some(kf);
                }
            }
            _ => Self::jump(ch, kf, out),
        }
    }

    /// The relay gave up a hole in the channel: continue from this keyframe,
    /// skipping what lies between. Returns whether events were skipped (the
    /// caller resets the channel's hash chain).
    pub fn handle_resync(&mut self, kf: Keyframe, out: &mut Vec<Released>) -> bool {
        let ch = self.chans.entry(kf.channel).or_default();
        match ch.last {
            Some(l) if kf.seq <= l => false,
            Some(l) => {
                self.stats.resyncs += 1;
                self.stats.skipped_events += kf.seq - l;
                ch.keyframe = None;
                Self::jump(ch, kf, out);
                true
            }
            None => {
                Self::jump(ch, kf, out);
                true
            }
        }
    }

    fn jump(ch: &mut Chan, kf: Keyframe, out: &mut Vec<Released>) {
        ch.last = Some(kf.seq);
        ch.held
            .retain(|_, b| b.events.last().is_some_and(|e| e.seq > kf.seq));
        out.push(Released::Keyframe(kf));
        Self::drain_held(ch, out);
    }

    fn release(ch: &mut Chan, mut batch: EventBatch, out: &mut Vec<Released>) {
        if let Some(l) = ch.last {
            // A batch overlapping what was released (never expected): keep the new part.
            batch.events.retain(|e| e.seq > l);
        }
        if let Some(e) = batch.events.last() {
            ch.last = Some(e.seq);
        }
        out.push(Released::Batch(batch));
    }

    fn drain_held(ch: &mut Chan, out: &mut Vec<Released>) {
        while let Some(l) = ch.last {
            if ch.keyframe.as_ref().is_some_and(|k| k.seq <= l) {
                if let Some(k) = ch.keyframe.take() {
                    if k.seq == l {
                        out.push(Released::Keyframe(k));
                    }
                }
            }
            let Some((&k, _)) = ch.held.iter().next() else {
                return;
            };
            if k > l + 1 {
                return;
            }
            if let Some(b) = ch.held.remove(&k) {
                if b.events.last().is_some_and(|e| e.seq > l) {
                    Self::release(ch, b, out);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use skylane_proto::{BatchEvent, EventClass, WorldId};

    fn batch(first: u64, last: u64) -> EventBatch {
        EventBatch {
            world: WorldId(1),
            channel: ChannelId::World,
            tick: first,
            origin_time_us: 0,
            events: (first..=last)
                .map(|seq| BatchEvent {
                    seq,
                    class: EventClass::State,
                    entity: None,
                    payload: Default::default(),
                })
                .collect(),
            prev_hash: Default::default(),
            signature: Default::default(),
            cosignature: Default::default(),
        }
    }

    fn seqs(out: &[Released]) -> Vec<u64> {
        out.iter()
            .flat_map(|r| match r {
                Released::Batch(b) => b.events.iter().map(|e| e.seq).collect::<Vec<_>>(),
                Released::Keyframe(k) => vec![1000 + k.seq],
            })
            .collect()
    }

    #[test]
    fn out_of_order_and_duplicate_batches_come_out_once_in_order() {
        let mut o = Ordering::new(64);
        let mut out = Vec::new();
        o.handle_batch(batch(1, 2), &mut out);
        o.handle_batch(batch(5, 5), &mut out);
        o.handle_batch(batch(3, 4), &mut out);
        o.handle_batch(batch(3, 4), &mut out);
        o.handle_batch(batch(6, 6), &mut out);
        assert_eq!(seqs(&out), [1, 2, 3, 4, 5, 6]);
        assert_eq!(o.stats().duplicates, 1);
        assert_eq!(o.cursors()[0].seq, 6);
    }

    fn kf(seq: u64) -> Keyframe {
        Keyframe {
            world: WorldId(1),
            channel: ChannelId::World,
            tick: seq,
            seq,
            state: Default::default(),
        }
    }

    #[test]
    fn a_keyframe_overtaking_its_batches_waits_for_them() {
        let mut o = Ordering::new(64);
        let mut out = Vec::new();
        o.handle_batch(batch(1, 1), &mut out);
        o.handle_keyframe(kf(3), &mut out);
        o.handle_batch(batch(2, 3), &mut out);
        o.handle_batch(batch(4, 4), &mut out);
        assert_eq!(seqs(&out), [1, 2, 3, 1003, 4]);
        assert_eq!(o.stats().resyncs, 0);
    }

    #[test]
    fn a_resume_keeps_its_cursor_unless_the_subscription_starts_later() {
        let mut o = Ordering::new(64);
        let mut out = Vec::new();
        o.handle_batch(batch(1, 3), &mut out);
        let at = |seq| ChannelCursor {
            channel: ChannelId::World,
            seq,
        };
        // Re-announced from an older point: the known cursor stays.
        assert!(o.handle_subscriptions(&[at(1)], &[], &mut out).is_empty());
        o.handle_batch(batch(4, 4), &mut out);
        // Re-announced from a later start (a removal and re-add missed while away):
        // nothing before it is owed, so no gap and no resync.
        // Its hash chain restarts with the next batch.
        assert_eq!(
            o.handle_subscriptions(&[at(9)], &[], &mut out),
            [ChannelId::World]
        );
        o.handle_batch(batch(10, 10), &mut out);
        assert_eq!(seqs(&out), [1, 2, 3, 4, 10]);
        assert_eq!(o.stats().resyncs, 0);
        assert_eq!(o.cursors()[0].seq, 10);
    }

    #[test]
    fn checkpoints_never_skip_and_a_resync_does() {
        let mut o = Ordering::new(64);
        let mut out = Vec::new();
        o.handle_batch(batch(1, 1), &mut out);
        o.handle_batch(batch(9, 9), &mut out);
        // Checkpoints ahead of a gap wait (the newest replaces older ones).
        o.handle_keyframe(kf(5), &mut out);
        o.handle_keyframe(kf(8), &mut out);
        assert_eq!(seqs(&out), [1]);
        assert_eq!(o.stats().resyncs, 0);
        // The gap fills late (bulk on a slow stream): nothing skipped.
        o.handle_batch(batch(2, 8), &mut out);
        assert_eq!(seqs(&out), [1, 2, 3, 4, 5, 6, 7, 8, 1008, 9]);
        // The relay gives a hole up: the resync jumps over it.
        o.handle_batch(batch(15, 15), &mut out);
        assert!(o.handle_resync(kf(14), &mut out));
        assert_eq!(seqs(&out)[10..], [1014, 15]);
        assert_eq!(o.stats().skipped_events, 5);
        // A stale resync changes nothing.
        assert!(!o.handle_resync(kf(12), &mut out));
    }

    proptest! {
        #[test]
        fn any_arrival_order_with_duplicates_releases_each_event_once_in_order(
            cuts in proptest::collection::btree_set(1u64..200, 0..40),
            order in proptest::collection::vec(any::<u16>(), 0..120),
        ) {
            // Batches covering 1..=200, cut at `cuts`; delivered shuffled, some twice.
            let mut bounds: Vec<u64> = cuts.into_iter().collect();
            bounds.push(200);
            let mut batches = Vec::new();
            let mut start = 1;
            for b in bounds {
                if b >= start {
                    batches.push(batch(start, b));
                    start = b + 1;
                }
            }
            let mut arrivals: Vec<EventBatch> = batches.clone();
            for (i, k) in order.iter().enumerate() {
                let j = *k as usize % arrivals.len();
                if i % 3 == 0 {
                    arrivals.push(arrivals[j].clone());
                } else {
                    let last = arrivals.len() - 1;
                    arrivals.swap(j, i % (last + 1));
                }
            }
            let mut o = Ordering::new(1000);
            let mut out = Vec::new();
            for b in arrivals {
                o.handle_batch(b, &mut out);
            }
            let got = seqs(&out);
            // The first arrival anchors the channel; everything after it comes out once, in order.
            if let Some(&first) = got.first() {
                let want: Vec<u64> = (first..=200).collect();
                prop_assert_eq!(got, want);
            }
        }
    }
}
