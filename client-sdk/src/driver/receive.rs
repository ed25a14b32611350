//! What the relay sends, handled: events through the per-channel order and the
//! chain verifier, keyframes, outcomes, pongs, go-aways and errors.

use std::time::Duration;

use hdrhistogram::Histogram;
use skylane_proto::{
    encode_datagram, ClientMsg, ErrorCode, EventClass, FrameDecoder, MovementDatagram, ServerMsg,
    SkippedRange, DEFAULT_MAX_FRAME,
};
use tokio::sync::mpsc;
use tracing::{debug, warn};

use crate::{ClientError, ClientEvent, MovementUpdate, Released};

use super::{Driver, End};

pub(super) async fn pump(
    mut recv: quinn::RecvStream,
    mut dec: FrameDecoder,
    tx: mpsc::Sender<ServerMsg>,
) {
    loop {
        loop {
            match dec.poll_message::<ServerMsg>() {
                Ok(Some(m)) => {
                    if tx.send(m).await.is_err() {
                        return;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    debug!(cause = %e, "undecodable frame from relay");
                    return;
                }
            }
        }
        match recv.read_chunk(DEFAULT_MAX_FRAME, true).await {
            Ok(Some(c)) => dec.push(&c.bytes),
            _ => return,
        }
    }
}

impl Driver {
    /// A movement datagram: acknowledged (after this message), each group
    /// checked against the origin's key when the client has it, every newer
    /// state taken into [`crate::Client::entity`] and handed to the game.
    async fn movement(
        &mut self,
        d: MovementDatagram,
        events: &mpsc::Sender<ClientEvent>,
    ) -> Option<End> {
        if self.movement_acks.len() < 64 {
            self.movement_acks.push(d.seq);
        }
        let server_now = self.sync.to_server(self.clock.now_us());
        let mut updates = Vec::new();
        if let Ok(mut s) = self.shared.lock() {
            s.stats.movement_datagrams += 1;
            for g in d.groups {
                if let Some(key) = &self.feed_key {
                    if let Err(e) = skylane_proto::movement::verify_group(key, d.world, &g) {
                        warn!(error = %e, "movement refused: it does not match the origin's signature");
                        s.stats.movement_rejected += 1;
                        continue;
                    }
                }
                for e in g.entries {
                    let newer = s
                        .entities
                        .get(e.entity)
                        .is_none_or(|t| t.latest.tick < g.tick);
                    if !newer {
                        continue;
                    }
                    s.entities.handle_state(
                        e.entity,
                        g.tick,
                        g.origin_time_us,
                        e.payload.bytes().clone(),
                    );
                    s.stats.movement_updates += 1;
                    if let Some(t) = server_now {
                        let lat = t.saturating_sub(g.origin_time_us).max(1);
                        let h = s.latency[EventClass::Movement.rank()].get_or_insert_with(|| {
                            Histogram::new_with_bounds(1, 60_000_000, 2)
                                .expect("constant, valid bounds")
                        });
                        let _ = h.record(lat.min(60_000_000));
                    }
                    updates.push(MovementUpdate {
                        entity: e.entity,
                        channel: g.channel,
                        tick: g.tick,
                        origin_time_us: g.origin_time_us,
                        pos: e.pos,
                        payload: e.payload,
                    });
                }
            }
        }
        for u in updates {
            if events.send(ClientEvent::Movement(u)).await.is_err() {
                return Some(End::Bye);
            }
        }
        None
    }

    /// Acknowledges the movement datagrams received (one datagram each, with
    /// the viewpoint when the game changed it).
    pub(super) fn ack_movement(&mut self, conn: &quinn::Connection) {
        if self.movement_acks.is_empty() {
            return;
        }
        let mut viewpoint = self.shared.lock().ok().and_then(|mut s| s.viewpoint.take());
        for seq in self.movement_acks.drain(..) {
            let msg = ClientMsg::MovementAck {
                seq,
                viewpoint: viewpoint.take(),
            };
            if let Ok(d) = encode_datagram(&msg) {
                let _ = conn.send_datagram(d);
            }
        }
    }

    /// Handles one message from the relay; `Some` ends the connection.
    pub(super) async fn handle(
        &mut self,
        m: ServerMsg,
        events: &mpsc::Sender<ClientEvent>,
    ) -> Option<End> {
        let mut released = Vec::new();
        match m {
            ServerMsg::Movement(d) => return self.movement(d, events).await,
            ServerMsg::Events(b) => self.order.handle_batch(b, &mut released),
            ServerMsg::Keyframe(k) => self.order.handle_keyframe(k, &mut released),
            ServerMsg::Resync(k) => {
                let channel = k.channel;
                if self.order.handle_resync(k, &mut released) {
                    if let Some(v) = &mut self.verifier {
                        v.forget(channel);
                    }
                }
            }
            ServerMsg::ActionResult(r) => {
                if let Some(tx) = self.pending.remove(&r.seq) {
                    let _ = tx.send(Ok(r.outcome));
                }
            }
            ServerMsg::Subscriptions { added, removed } => {
                let restarted = self
                    .order
                    .handle_subscriptions(&added, &removed, &mut released);
                for c in removed.iter().chain(&restarted) {
                    if let Some(v) = &mut self.verifier {
                        v.forget(*c);
                    }
                }
                let _ = events
                    .send(ClientEvent::Subscriptions { added, removed })
                    .await;
            }
            ServerMsg::Pong(p) => {
                let sample = self.sync.handle_pong(&p, self.clock.now_us());
                if let Some(c) = &mut self.choice {
                    c.handle_current_rtt(Duration::from_micros(sample.rtt_us));
                }
                if let (Ok(mut s), Some(best), Some(e)) =
                    (self.shared.lock(), self.sync.best(), self.sync.estimate())
                {
                    s.stats.clock_offset_us = Some(e.offset_us);
                    s.stats.clock_error_us = Some(e.error_us);
                    s.stats.rtt_us = Some(best.rtt_us);
                }
            }
            m @ (ServerMsg::ContentManifest { .. }
            | ServerMsg::ContentChunk(_)
            | ServerMsg::ContentRefused(_)) => {
                // At most one window (8 pieces) is in flight: the channel
                // has room; a download that stopped reading loses its answers.
                if let Some(tx) = &self.content {
                    let _ = tx.try_send(m);
                }
            }
            ServerMsg::OriginPong(p) => {
                if let Some(tx) = self.origin_pings.remove(&p.nonce) {
                    let rtt = self.clock.now_us().saturating_sub(p.sent_us);
                    let _ = tx.send(Duration::from_micros(rtt));
                }
            }
            ServerMsg::GoAway(g) => {
                self.ticket = Some(g.resume_ticket);
                let to = g
                    .alternatives
                    .iter()
                    .filter_map(|r| r.addrs.first().and_then(|a| a.parse().ok()))
                    .collect();
                return Some(End::Moved(to));
            }
            ServerMsg::Error(e) => {
                debug!(code = ?e.code, message = %e.message, "relay reported an error");
                let spectator_refused = self.spectate.is_some()
                    && matches!(
                        e.code,
                        ErrorCode::Forbidden | ErrorCode::Unsupported | ErrorCode::UnknownWorld
                    );
                // A full or ended world will not take the player on a retry either.
                let world_refused = matches!(e.code, ErrorCode::WorldFull | ErrorCode::WorldEnded);
                if spectator_refused || world_refused {
                    return Some(End::Fatal(ClientError::Request {
                        code: e.code,
                        message: e.message,
                    }));
                }
            }
            ServerMsg::ResumeIncomplete(skipped) => {
                let lost: u64 = skipped.iter().map(SkippedRange::len).sum();
                if let Ok(mut s) = self.shared.lock() {
                    s.stats.resumes_incomplete += 1;
                    s.stats.events_lost_on_resume += lost;
                }
                if events
                    .send(ClientEvent::ResumeIncomplete { skipped })
                    .await
                    .is_err()
                {
                    return Some(End::Bye);
                }
            }
            ServerMsg::World(w) => {
                if let Ok(mut s) = self.shared.lock() {
                    s.world = Some(w.clone());
                }
                if events.send(ClientEvent::World(w)).await.is_err() {
                    return Some(End::Bye);
                }
            }
            ServerMsg::Spectate(f) => {
                // With the origin's key, every frame must carry the origin's
                // proofs of its events: a relay that made one up is left.
                // The reduced mode's coalesced deltas are unsigned (see
                // `skylane_proto::feedsig`): accepted unverified while that
                // mode is asked for, or until the first keyframe after
                // leaving it.
                let reduced = |s: &Option<skylane_proto::SpectatorSubscribe>| {
                    matches!(
                        s.as_ref().map(|s| s.mode),
                        Some(skylane_proto::BandwidthMode::Reduced { .. })
                    )
                };
                if f.keyframe {
                    self.unsigned_ok = reduced(&self.spectate);
                }
                let verified = match &self.feed_key {
                    Some(_) if f.proofs.is_empty() && !f.keyframe && self.unsigned_ok => false,
                    Some(k) => match skylane_proto::verify_feed(k, &f) {
                        Ok(()) => true,
                        Err(e) => return Some(End::Fatal(ClientError::Feed(e))),
                    },
                    None => false,
                };
                if let Ok(mut s) = self.shared.lock() {
                    s.stats.spectator_frames += 1;
                    s.stats.spectator_frames_verified += u64::from(verified);
                }
                if events.send(ClientEvent::Spectate(f)).await.is_err() {
                    return Some(End::Bye);
                }
            }
            ServerMsg::Welcome(_)
            | ServerMsg::Refusal(_)
            | ServerMsg::Delta(_)
            | ServerMsg::Directory(_) => {}
        }
        let now = self.clock.now_us();
        let server_now = self.sync.to_server(now);
        for r in released {
            match r {
                Released::Batch(b) => {
                    if let Some(v) = &mut self.verifier {
                        if let Err(e) = v.verify(&b) {
                            return Some(End::Fatal(ClientError::Chain(e)));
                        }
                    }
                    if let Ok(mut s) = self.shared.lock() {
                        if let Some(v) = &self.verifier {
                            s.stats.attested_checkpoints = v.attested();
                            s.stats.unattested_checkpoints = v.unattested();
                        }
                        s.stats.events += b.events.len() as u64;
                        for e in &b.events {
                            if let (EventClass::Movement, Some(entity)) = (e.class, e.entity) {
                                s.entities.handle_state(
                                    entity,
                                    b.tick,
                                    b.origin_time_us,
                                    e.payload.bytes().clone(),
                                );
                            }
                        }
                        s.stats.order = self.order.stats();
                        if let Some(t) = server_now {
                            let lat = t.saturating_sub(b.origin_time_us).max(1);
                            for e in &b.events {
                                let h = s.latency[e.class.rank()].get_or_insert_with(|| {
                                    Histogram::new_with_bounds(1, 60_000_000, 2)
                                        .expect("constant, valid bounds")
                                });
                                let _ = h.record(lat.min(60_000_000));
                            }
                        }
                    }
                    for e in b.iter_events() {
                        if events.send(ClientEvent::Event(e)).await.is_err() {
                            return Some(End::Bye);
                        }
                    }
                }
                Released::Keyframe(k) => {
                    if let Ok(mut s) = self.shared.lock() {
                        s.stats.keyframes += 1;
                    }
                    if events.send(ClientEvent::Keyframe(k)).await.is_err() {
                        return Some(End::Bye);
                    }
                }
            }
        }
        None
    }
}
