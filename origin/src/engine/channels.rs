//! The engine's output side: each channel's batches (sequenced, sealed, kept in
//! a bounded history for resumes), its keyframes, and the spectator feed.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use rustc_hash::FxHashMap as HashMap;
use skylane_proto::movement::MAX_FRAME_ENTRIES;
use skylane_proto::{
    BatchEvent, ChannelCursor, ChannelId, EntityId, EventBatch, EventClass, FeedEvent, FeedFrame,
    Hash32, Keyframe, MoveEntry, MovementFrame, Payload, SessionId,
};

use crate::world::{Emitted, World};

use super::{Engine, Output, ResumeError, IDLE_KEYFRAME_PERIODS};

#[derive(Debug, Default)]
pub(super) struct ChannelLog {
    pub(super) next_seq: u64,
    pub(super) last_hash: Hash32,
    pub(super) history: VecDeque<Arc<EventBatch>>,
    /// Estimated bytes held in `history`.
    pub(super) history_bytes: usize,
    pub(super) subscribers: u32,
    /// The sequence number of the channel's last periodic keyframe.
    pub(super) keyframed: Option<u64>,
    /// Keyframe periods skipped since then because nothing changed.
    pub(super) skipped: u64,
}

/// What a batch costs the history: its payloads plus 64 bytes per event.
pub(super) fn batch_bytes(b: &EventBatch) -> usize {
    b.events.iter().map(|e| e.payload.len() + 64).sum::<usize>() + 128
}

impl<W: World> Engine<W> {
    /// Turns the public spectator feed on or off. Turning it on emits a keyframe of
    /// it at once (so a relay's spectators can start), then one frame per tick with
    /// events and a keyframe every keyframe interval.
    pub fn set_feed(&mut self, on: bool, now_us: u64) {
        let was = self.feed;
        self.feed = on;
        if on && !was {
            self.feed_keyframe(now_us);
        }
        if !on {
            self.clear_feed_parts();
        }
    }

    /// Whether the spectator feed is on.
    pub fn feed(&self) -> bool {
        self.feed
    }

    pub(super) fn tag(
        &self,
        class: EventClass,
        entity: Option<EntityId>,
        payload: Payload,
    ) -> FeedEvent {
        FeedEvent {
            class,
            entity,
            team: entity.and_then(|e| self.world.team(e)),
            pos: entity.and_then(|e| self.world.position(e)),
            payload,
        }
    }

    pub(super) fn feed_keyframe(&mut self, now_us: u64) {
        let mut events: Vec<FeedEvent> = self
            .world
            .spectator_keyframe()
            .into_iter()
            .map(|(entity, payload)| self.tag(EventClass::State, Some(entity), payload))
            .collect();
        // A zoned world's home zone: every other zone's last keyframe too.
        events.extend(self.take_feed_parts(true));
        self.push_feed(FeedFrame {
            world: self.cfg.world,
            tick: self.tick,
            origin_time_us: now_us,
            keyframe: true,
            events,
            proofs: Vec::new(),
        });
    }

    /// Signs a feed frame (every event's hash, the tick and time: relays can
    /// filter and coalesce it, never forge it) and outputs it.
    fn push_feed(&mut self, mut frame: FeedFrame) {
        if self.feeds_home() {
            // A zone's part goes to the home zone, which signs the world's
            // frames (one feed per world, whatever its zones).
            let from = self.zone().unwrap_or_default();
            self.outputs.push_back(Output::ToZone {
                to: skylane_proto::zones::ZoneIdx::HOME,
                msg: skylane_proto::zones::ZoneMsg::FeedPart {
                    world: self.cfg.world,
                    from,
                    keyframe: frame.keyframe,
                    events: frame.events,
                },
            });
            return;
        }
        frame.proofs = vec![self.signer.sign_feed(&frame)];
        self.outputs.push_back(Output::Feed(Arc::new(frame)));
    }

    /// The public part of a tick's events, as one feed frame.
    pub(super) fn feed_frame(&mut self, pending: &[Emitted], now_us: u64) {
        let mut events: Vec<FeedEvent> = pending
            .iter()
            .filter_map(|e| {
                let payload = self.world.spectator_event(e)?;
                Some(self.tag(e.class, e.entity, payload))
            })
            .collect();
        // A zoned world's home zone: the other zones' events since.
        events.extend(self.take_feed_parts(false));
        if events.is_empty() {
            return;
        }
        self.push_feed(FeedFrame {
            world: self.cfg.world,
            tick: self.tick,
            origin_time_us: now_us,
            keyframe: false,
            events,
            proofs: Vec::new(),
        });
    }

    pub(super) fn publish(&mut self, pending: Vec<Emitted>, now_us: u64) {
        self.stats.events += pending.len() as u64;
        if self.feed {
            self.feed_frame(&pending, now_us);
        }
        let (moves, pending): (Vec<Emitted>, Vec<Emitted>) =
            pending.into_iter().partition(|e| e.pos.is_some());
        self.movement(moves, now_us);
        // Group by channel, channels in order of first emission.
        let mut order: Vec<ChannelId> = Vec::new();
        let mut groups: HashMap<ChannelId, Vec<Emitted>> = HashMap::default();
        for e in pending {
            groups
                .entry(e.channel)
                .or_insert_with(|| {
                    order.push(e.channel);
                    Vec::new()
                })
                .push(e);
        }
        for channel in order {
            let Some(events) = groups.remove(&channel) else {
                continue;
            };
            let log = self.channels.entry(channel).or_default();
            // Per-event overhead on the wire: sequence, class, entity, length.
            const EVENT_OVERHEAD: usize = 24;
            let mut chunks: Vec<Vec<BatchEvent>> = vec![Vec::new()];
            let mut bytes = 0;
            for e in events {
                let size = e.payload.len() + EVENT_OVERHEAD;
                let full = chunks.last().is_some_and(|c| !c.is_empty());
                if full && bytes + size > self.cfg.max_batch_bytes {
                    chunks.push(Vec::new());
                    bytes = 0;
                }
                bytes += size;
                log.next_seq += 1;
                if let Some(c) = chunks.last_mut() {
                    c.push(BatchEvent {
                        seq: log.next_seq,
                        class: e.class,
                        entity: e.entity,
                        payload: e.payload,
                    });
                }
            }
            for events in chunks {
                let mut batch = EventBatch {
                    world: self.cfg.world,
                    channel,
                    tick: self.tick,
                    origin_time_us: now_us,
                    events,
                    prev_hash: Default::default(),
                    signature: Default::default(),
                    cosignature: Default::default(),
                };
                log.last_hash = self.signer.seal(&mut batch);
                let batch = Arc::new(batch);
                log.history_bytes += batch_bytes(&batch);
                log.history.push_back(batch.clone());
                while log.history.len() > self.cfg.history
                    || (log.history_bytes > self.cfg.history_bytes && log.history.len() > 1)
                {
                    if let Some(old) = log.history.pop_front() {
                        log.history_bytes = log.history_bytes.saturating_sub(batch_bytes(&old));
                    }
                }
                self.outputs.push_back(Output::Batch(batch));
            }
        }
    }

    /// A tick's movement states: per cell, the newest state per entity, sorted
    /// by entity, in signed frames of at most [`MAX_FRAME_ENTRIES`].
    pub(super) fn movement(&mut self, moves: Vec<Emitted>, now_us: u64) {
        if moves.is_empty() {
            return;
        }
        let mut cells: BTreeMap<ChannelId, BTreeMap<EntityId, MoveEntry>> = BTreeMap::new();
        for e in moves {
            let (Some(entity), Some(pos)) = (e.entity, e.pos) else {
                continue;
            };
            cells.entry(e.channel).or_default().insert(
                entity,
                MoveEntry {
                    entity,
                    pos,
                    payload: e.payload,
                },
            );
        }
        for (channel, entries) in cells {
            self.stats.moves += entries.len() as u64;
            let entries: Vec<MoveEntry> = entries.into_values().collect();
            for chunk in entries.chunks(MAX_FRAME_ENTRIES) {
                let mut frame = MovementFrame {
                    world: self.cfg.world,
                    channel,
                    tick: self.tick,
                    origin_time_us: now_us,
                    entries: chunk.to_vec(),
                    sig: Payload::default(),
                };
                self.signer.sign_movement(&mut frame);
                self.outputs.push_back(Output::Movement(Arc::new(frame)));
            }
        }
    }

    pub(super) fn keyframes(&mut self) {
        let mut due: Vec<(ChannelId, u64)> = Vec::new();
        for (c, l) in &mut self.channels {
            if l.subscribers == 0 {
                continue;
            }
            if l.keyframed == Some(l.next_seq) && l.skipped + 1 < IDLE_KEYFRAME_PERIODS {
                l.skipped += 1;
                continue;
            }
            l.keyframed = Some(l.next_seq);
            l.skipped = 0;
            due.push((*c, l.next_seq));
        }
        due.sort();
        for (channel, seq) in due {
            let state = self.world.channel_state(channel, &self.grid);
            self.outputs.push_back(Output::Keyframe(Keyframe {
                world: self.cfg.world,
                channel,
                tick: self.tick,
                seq,
                state,
            }));
        }
    }

    /// A keyframe of `channel` now (for a resume the history cannot serve).
    pub fn keyframe_now(&self, channel: ChannelId) -> Keyframe {
        let seq = self.channels.get(&channel).map_or(0, |l| l.next_seq);
        Keyframe {
            world: self.cfg.world,
            channel,
            tick: self.tick,
            seq,
            state: self.world.channel_state(channel, &self.grid),
        }
    }

    /// The last sequence number assigned on a channel (0 before its first event).
    pub fn channel_seq(&self, channel: ChannelId) -> u64 {
        self.channels.get(&channel).map_or(0, |l| l.next_seq)
    }

    /// Whether the session exists.
    pub fn has_session(&self, session: SessionId) -> bool {
        self.sessions.contains_key(&session)
    }

    /// The batches of `cursor.channel` after `cursor.seq`, for a resuming session.
    pub fn history_since(
        &self,
        cursor: ChannelCursor,
    ) -> Result<Vec<Arc<EventBatch>>, ResumeError> {
        let Some(log) = self.channels.get(&cursor.channel) else {
            return Ok(Vec::new());
        };
        if cursor.seq >= log.next_seq {
            return Ok(Vec::new());
        }
        let oldest = log
            .history
            .front()
            .and_then(|b| b.events.first())
            .map_or(log.next_seq + 1, |e| e.seq);
        if cursor.seq + 1 < oldest {
            return Err(ResumeError::TooOld {
                channel: cursor.channel,
                oldest,
                requested: cursor.seq + 1,
            });
        }
        Ok(log
            .history
            .iter()
            .filter(|b| b.events.last().is_some_and(|e| e.seq > cursor.seq))
            .cloned()
            .collect())
    }
}
