//! The actor's resume side: a known session arriving on a (possibly new)
//! relay gets exactly what it missed; an expired one is told what is gone.

use skylane_proto::{
    ChannelCursor, ChannelId, EventBatch, LinkMsg, SessionId, SkippedRange, DEFAULT_MAX_FRAME,
};
use tokio::time::Instant;
use tracing::warn;

use super::{frame, Actor};
use crate::core::Core;
use crate::engine::ResumeError;
use crate::routes::LinkId;

impl Actor {
    /// A known session arrives on a (possibly new) relay: subscriptions, then exactly
    /// the batches it missed per channel (or a keyframe where history ran out).
    ///
    /// The client's cursors say what it last received per channel. One that is
    /// older than the session's current subscription to the channel is stale (the
    /// client missed a removal and a re-add while it was away): the session is owed
    /// events only from the subscription's start. Channels the client still tracks
    /// but the session no longer receives are removed.
    pub(super) fn resume(&mut self, id: LinkId, session: SessionId, cursors: &[ChannelCursor]) {
        self.routes.attach(Instant::now().into_std(), session, id);
        let mut channels = self.routes.announced(session);
        if channels.is_empty() {
            // A world taken over from a failed primary: this origin never
            // announced the session's channels, but its engine (re-executed
            // from the primary's log) knows them.
            let now: Vec<ChannelCursor> = self
                .core
                .channels_of(session)
                .into_iter()
                .map(|channel| ChannelCursor { channel, seq: 0 })
                .collect();
            self.routes.handle_subscriptions(session, &now, &[]);
            channels = self.routes.announced(session);
        }
        let mut added = Vec::with_capacity(channels.len());
        let mut keyframes = Vec::new();
        let mut batches = Vec::new();
        for &(channel, start) in &channels {
            let client = cursors.iter().find(|x| x.channel == channel).map(|x| x.seq);
            let Some(seen) = client else {
                // Nothing received yet: start from the state now.
                added.push(ChannelCursor {
                    channel,
                    seq: self.core.channel_seq(channel),
                });
                keyframes.push(self.core.keyframe_now(channel));
                continue;
            };
            let from = ChannelCursor {
                channel,
                seq: seen.max(start),
            };
            added.push(from);
            match self.core.history_since(from) {
                Ok(missed) => batches.extend(missed.iter().map(|b| (**b).clone())),
                Err(ResumeError::TooOld { .. }) => {
                    keyframes.push(self.core.keyframe_now(channel));
                }
            }
        }
        // Only channels this engine writes: a zone never removes another
        // zone's cells, nor the home zone's world and team channels.
        let removed: Vec<ChannelId> = cursors
            .iter()
            .map(|c| c.channel)
            .filter(|c| !channels.iter().any(|(x, _)| x == c))
            .filter(|c| self.core.writes_channel(*c))
            .collect();
        self.send(
            id,
            0,
            frame(&LinkMsg::Subscriptions {
                session,
                added,
                removed,
            }),
        );
        for kf in keyframes {
            self.send(id, 0, frame(&LinkMsg::Keyframe(kf)));
        }
        // Replays go in frames under the size limit.
        let mut chunk: Vec<EventBatch> = Vec::new();
        let mut size = 0;
        for b in batches {
            let len = b.events.iter().map(|e| e.payload.len() + 16).sum::<usize>() + 128;
            if size + len > DEFAULT_MAX_FRAME / 2 && !chunk.is_empty() {
                self.send(
                    id,
                    0,
                    frame(&LinkMsg::Replay {
                        session,
                        batches: std::mem::take(&mut chunk),
                    }),
                );
                size = 0;
            }
            size += len;
            chunk.push(b);
        }
        if !chunk.is_empty() {
            self.send(
                id,
                0,
                frame(&LinkMsg::Replay {
                    session,
                    batches: chunk,
                }),
            );
        }
    }

    /// A session that had expired came back with cursors: it was joined afresh,
    /// so what it missed on the channels it receives again is gone. Its client
    /// is told exactly that (a resume that silently restarted its channels used
    /// to report no loss).
    pub(super) fn resume_expired(
        &mut self,
        id: LinkId,
        session: SessionId,
        cursors: &[ChannelCursor],
    ) {
        let receives = self.core.channels_of(session);
        let skipped: Vec<SkippedRange> = cursors
            .iter()
            .filter(|c| receives.contains(&c.channel))
            .filter_map(|c| {
                let now = self.core.channel_seq(c.channel);
                (now > c.seq).then_some(SkippedRange {
                    channel: c.channel,
                    from: c.seq + 1,
                    to: now,
                })
            })
            .collect();
        self.metrics.resumes_incomplete.inc();
        warn!(%session, channels = skipped.len(), "resume of an expired session: joined afresh");
        self.send(
            id,
            0,
            frame(&LinkMsg::ResumeIncomplete { session, skipped }),
        );
    }
}
