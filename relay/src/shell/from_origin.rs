//! What an origin sends on its link, handled by the actor: batches and
//! keyframes into the hub (forwarded without re-encoding), a session's
//! acknowledgement (its buffered actions go), replays, action outcomes, session
//! closes, sanctions, feed frames and the link's pings and pongs.

use bytes::Bytes;
use skylane_proto::{
    decode_message, link_events_to_client_frame, ActionResult, ErrorCode, ErrorMsg, EventBatch,
    EventClass, LinkMsg, MovementFrame, Pong, Sanction, ServerMsg, SessionId, WorldId,
    MAX_MOVE_STATE,
};
use tracing::warn;

use crate::hub::BatchFrame;
use crate::metrics::RelayMetrics;
use crate::routing::OriginId;
use crate::upstream::{ResultFate, ZoneMove};

use super::actor::{now, Actor};
use super::writer::frame;

impl Actor {
    /// One frame from `origin`'s link.
    pub(crate) fn handle_origin_frame(&mut self, origin: OriginId, body: Bytes) {
        // Batches are forwarded by swapping the frame's tag, not re-encoding.
        let client_frame = link_events_to_client_frame(&body);
        let msg = match decode_message::<LinkMsg>(body) {
            Ok(m) => m,
            Err(e) => {
                RelayMetrics::count(&self.shared.metrics.decode_errors, e.label());
                return;
            }
        };
        // Fencing: an old owner's frames for a world are not used.
        let world = match &msg {
            LinkMsg::Events(b) => Some(b.world),
            LinkMsg::Keyframe(k) => Some(k.world),
            LinkMsg::Feed(f) => Some(f.world),
            LinkMsg::Movement(m) => Some(m.world),
            _ => None,
        };
        if let Some(w) = world {
            if !self.directory.admits(origin, w) {
                RelayMetrics::count(&self.shared.metrics.fenced_frames, "world_frame");
                return;
            }
        }
        match msg {
            LinkMsg::Events(batch) => self.batch(&batch, client_frame),
            LinkMsg::Movement(m) => self.movement(&m),
            LinkMsg::WorldState(ws) => self.world_state(origin, ws),
            LinkMsg::SessionRefused {
                session,
                code,
                reason,
            } => self.refused_by_origin(session, code, reason),
            LinkMsg::Keyframe(kf) => {
                let (world, channel, seq) = (kf.world, kf.channel, kf.seq);
                let f = frame(&ServerMsg::Keyframe(kf));
                self.hub.handle_keyframe(now(), world, channel, seq, f);
            }
            LinkMsg::Subscriptions {
                session,
                added,
                removed,
            } => self.subscriptions(origin, session, added, removed),
            LinkMsg::Replay { session, batches } => self.replay(session, batches),
            LinkMsg::ActionResult { session, result } => self.action_result(session, result),
            LinkMsg::SessionClose { session } => self.closed_by_origin(session),
            LinkMsg::SessionMoved { session, world } => self.zone_moved(origin, session, world),
            LinkMsg::Sanction(s) => self.sanctioned(&s),
            LinkMsg::Error(e) => {
                RelayMetrics::count(
                    &self.shared.metrics.origin_errors,
                    format!("{:?}", e.code).to_lowercase(),
                );
                if let Some(suppressed) = self.error_logs.handle_event(now(), &(origin, e.code)) {
                    warn!(origin = %origin, code = ?e.code, message = %e.message, suppressed, "origin reported an error");
                }
            }
            LinkMsg::Pong(p) => {
                let at = self.shared.clock.unix_us();
                self.spectators.handle_pong(origin, &p, at);
            }
            LinkMsg::Feed(f) => {
                let at = self.shared.clock.unix_us();
                self.spectators.handle_feed(at, f);
            }
            LinkMsg::Ping(p) => {
                let t = self.shared.clock.unix_us();
                if let Some(link) = self.link(origin) {
                    link.send_control(&LinkMsg::Pong(Pong::answer(&p, t, t)));
                }
            }
            LinkMsg::SessionPong { session, pong } => {
                self.send_to_client(session, EventClass::Critical, &ServerMsg::OriginPong(pong));
            }
            LinkMsg::ResumeIncomplete { session, skipped } => {
                self.shared.metrics.resumes_incomplete.inc();
                let msg = ServerMsg::ResumeIncomplete(skipped);
                self.send_to_client(session, EventClass::Critical, &msg);
            }
            LinkMsg::SessionPing { .. }
            | LinkMsg::LinkHello { .. }
            | LinkMsg::FeedSubscribe { .. }
            | LinkMsg::FeedUnsubscribe { .. }
            | LinkMsg::Delta(_)
            | LinkMsg::SessionOpen { .. }
            | LinkMsg::EdgeReport { .. }
            | LinkMsg::Action { .. } => {}
        }
    }

    /// An action's outcome: to the client, or (answered `Moved`: its avatar
    /// is changing zones) held or sent on after the avatar.
    fn action_result(&mut self, session: SessionId, result: ActionResult) {
        match self.upstream.handle_result(session, &result) {
            ResultFate::Deliver => {
                let msg = ServerMsg::ActionResult(result);
                self.send_to_client(session, EventClass::Critical, &msg);
            }
            ResultFate::Held => RelayMetrics::count(&self.shared.metrics.zone_actions, "held"),
            ResultFate::Resend(action) => {
                RelayMetrics::count(&self.shared.metrics.zone_actions, "resent");
                self.action(session, action);
            }
        }
    }

    /// `origin` says the session's avatar is now in zone record `record`: the
    /// session re-opens on that zone's owner from what its client has been
    /// given (or, when it never left, what was held goes again).
    fn zone_moved(&mut self, origin: OriginId, session: SessionId, record: WorldId) {
        let Some(world) = self.sessions.get(session).map(|e| e.world) else {
            return;
        };
        if self.directory.world_of(record) != world
            || self.upstream.origin_of(session) != Some(origin)
        {
            // Not this session's world, or not from where it is open.
            RelayMetrics::count(&self.shared.metrics.origin_errors, "session_moved");
            warn!(%origin, %session, %record, "a session move that does not fit refused");
            return;
        }
        let owner = self.routing.origin_of(record);
        match self.upstream.handle_zone_moved(session, owner, record) {
            ZoneMove::Reopen => {
                self.shared.metrics.zone_moves.inc();
                let cursors = self.hub.cursors(session);
                self.open_upstream(session, cursors);
            }
            ZoneMove::Release(actions) => {
                for a in actions {
                    self.action(session, a);
                }
            }
            ZoneMove::Wait => {
                self.shared.metrics.zone_moves.inc();
            }
        }
    }

    /// An origin sanctioned a subject: refused here at hello (a resume
    /// included) until the sanction ends; its sessions here end now.
    fn sanctioned(&mut self, s: &Sanction) {
        let now = self.shared.clock.unix_us();
        let until = s.until.saturating_mul(1_000_000);
        if let Ok(mut p) = self.shared.penalties.lock() {
            p.impose(now, &s.subject, until, &s.reason);
        }
        RelayMetrics::count(
            &self.shared.metrics.sanctions,
            format!("{:?}", s.kind).to_lowercase(),
        );
        warn!(subject = %s.subject, kind = ?s.kind, until = s.until, reason = %s.reason, "subject sanctioned by an origin");
        self.close_subject(&s.subject, b"sanctioned");
    }

    fn batch(&mut self, batch: &EventBatch, client_frame: Option<Bytes>) {
        self.shared.metrics.batches_in.inc();
        if let (Some(frame), Some(b)) = (client_frame, batch_frame(batch, None)) {
            self.hub.handle_batch(now(), BatchFrame { frame, ..b });
        }
    }

    /// A cell's movement states of a tick: kept as the cell's newest, and into
    /// the movement view of every local subscriber of the cell.
    fn movement(&mut self, m: &MovementFrame) {
        self.shared.metrics.movement_frames_in.inc();
        if m.entries.iter().any(|e| e.payload.len() > MAX_MOVE_STATE) {
            RelayMetrics::count(&self.shared.metrics.decode_errors, "movement_too_large");
            return;
        }
        let states = self.cells.handle_frame(m);
        for session in self.hub.subscriber_ids(m.world, m.channel) {
            if let Some(cs) = self.connection_of(*session) {
                cs.out.push_movement(&states);
            }
        }
    }

    /// The origin's subscription changes for a session; the first one
    /// acknowledges the session, and its buffered actions go.
    fn subscriptions(
        &mut self,
        origin: OriginId,
        session: SessionId,
        added: Vec<skylane_proto::ChannelCursor>,
        removed: Vec<skylane_proto::ChannelId>,
    ) {
        self.hub
            .handle_subscriptions(now(), session, &added, &removed);
        if let (Some(cs), Some(world)) = (self.connection_of(session), self.hub.world_of(session)) {
            cs.out.movement_unsubscribed(&removed);
            for c in &added {
                cs.out.push_movement(&self.cells.cell(world, c.channel));
            }
        }
        // Only the origin the session is open on acknowledges it (a zoned
        // world's home zone also tells a session away from it of its world
        // and team channels).
        let from_feed = self.upstream.origin_of(session) == Some(origin);
        let first = from_feed && !self.upstream.is_acked(session);
        if from_feed {
            for action in self.upstream.handle_acked(session) {
                self.forward(origin, session, action);
            }
        }
        self.send_to_client(
            session,
            EventClass::State,
            &ServerMsg::Subscriptions { added, removed },
        );
        if first {
            self.tell_world_state(session);
        }
    }

    fn replay(&mut self, session: SessionId, batches: Vec<EventBatch>) {
        let frames = batches
            .into_iter()
            .filter_map(|b| {
                let f = frame(&ServerMsg::Events(b.clone()));
                batch_frame(&b, Some(f))
            })
            .collect();
        self.hub.handle_replay(now(), session, frames);
    }

    /// The origin ended a session (kick, ban, refused join).
    fn closed_by_origin(&mut self, session: SessionId) {
        self.refused_by_origin(
            session,
            ErrorCode::Unexpected,
            "session closed by the origin".into(),
        );
    }

    /// The origin would not (or will no longer) hold the session: its client is
    /// told why, with the origin's code, and the session ends.
    fn refused_by_origin(&mut self, session: SessionId, code: ErrorCode, message: String) {
        self.send_to_client(
            session,
            EventClass::Critical,
            &ServerMsg::Error(ErrorMsg { code, message }),
        );
        self.close_later(session, b"closed by origin");
        if self.sessions.handle_close(session).is_some() {
            self.end_session(session, false, "refused");
        }
    }
}

/// The hub's view of a batch (`frame` filled by the caller).
fn batch_frame(b: &EventBatch, frame: Option<Bytes>) -> Option<BatchFrame> {
    let first = b.events.first()?.seq;
    let last = b.events.last()?.seq;
    let class = b
        .events
        .iter()
        .map(|e| e.class)
        .min_by_key(|c| c.rank())
        .unwrap_or(EventClass::State);
    Some(BatchFrame {
        world: b.world,
        channel: b.channel,
        first,
        last,
        class,
        frame: frame.unwrap_or_default(),
    })
}
