//! Cross-zone requests, the engine's side: an action that touches what
//! another zone owns (a shot across the border, a gift to a player there:
//! [`Emit::remote`], [`Emit::remote_entity`]) makes a request, engine state
//! made deterministically by the action (routing reads only replicated
//! state, never mirrors), sent once its tick is durable
//! ([`Output::ToZone`]); the owner applies it once (a journaled `Served`
//! record, [`World::apply_remote`]) and answers every copy from that record;
//! the asker takes the answer once (a journaled `Answered` record,
//! [`World::remote_answered`], which answers an action that waited). A zone
//! other than the home forwards its world and team events to the home zone
//! the same way (kind `Events`). The shell re-sends what is unanswered.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use skylane_proto::zones::{RequestId, RequestKind, ZoneIdx, ZoneMsg, MAX_FORWARD, MAX_REQUEST};
use skylane_proto::{ActionResult, ChannelId, Outcome, Payload, SessionId};

use crate::world::{Emit, Emitted, RemoteOp, World};

use super::{Engine, Output};

/// A request of this zone's awaiting its answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(super) struct Asked {
    kind: RequestKind,
    op: Payload,
    /// The tick that made it (re-sent once that tick is durable).
    tick: u64,
    /// The action whose outcome is the answer's: session and sequence.
    answers: Option<(SessionId, u64)>,
}

impl Asked {
    /// Whether it answers an action of `session`.
    pub(super) fn answers_session(&self, session: SessionId) -> bool {
        self.answers.is_some_and(|(s, _)| s == session)
    }
}

/// A batch of another zone's world and team events forwarded to the home
/// zone, after the batch of its request `prev` (this zone's previous
/// forwarded batch): the home applies a batch only once its predecessor is
/// applied ([`forward_ready`]), so it publishes them in the order they were
/// emitted however the network reorders, loses or repeats requests.
#[derive(Debug, Serialize, Deserialize)]
struct Forwarded {
    prev: Option<u64>,
    events: Vec<Emitted>,
}

/// Whether the forwarded-events request `id` (its `op`) may be applied now:
/// it names no predecessor, or its predecessor is applied here (or answered
/// and forgotten). Not yet: it is neither journaled nor answered, and the
/// asker's next re-send (after its predecessor's) finds it ready. `served`
/// is what this zone knows of a request ([`Engine::zone_served`]).
pub(crate) fn forward_ready(
    op: &[u8],
    id: RequestId,
    served: impl Fn(RequestId) -> Served,
) -> bool {
    match postcard::from_bytes::<Forwarded>(op) {
        Ok(Forwarded {
            prev: Some(seq), ..
        }) => served(RequestId { seq, ..id }) != Served::New,
        // Nothing before it, or undecodable (applied as nothing).
        _ => true,
    }
}

/// A zone's requests unanswered at once, at most (beyond, a request is
/// answered `None` at once: the game treats it like a miss).
pub(super) const MAX_ASKED: usize = 4_096;

/// Answers a zone remembers, at most (beyond, the oldest are forgotten: an
/// asker re-sending one of those after so many later requests gets nothing).
pub(super) const MAX_SERVED: usize = 65_536;

/// What a zone knows of another zone's request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Served {
    /// Applied here: its answer.
    Answer(Payload),
    /// Below the asker's watermark: it has its answer (a stale copy).
    Forgotten,
    /// Not seen: to journal and apply.
    New,
}

impl<W: World> Engine<W> {
    /// Applies another zone's request (a journaled `Served` record): once,
    /// its answer kept until the asker's watermark passes it.
    pub(super) fn serve(&mut self, id: RequestId, low: u64, kind: RequestKind, op: &[u8]) {
        let Some(zone) = self.zone.as_mut() else {
            return;
        };
        let low_now = zone.served_low.entry(id.from).or_default();
        *low_now = (*low_now).max(low);
        let cut = *low_now;
        zone.served.retain(|k, _| k.from != id.from || k.seq >= cut);
        if id.seq < cut || zone.served.contains_key(&id) {
            return;
        }
        let answer = match kind {
            RequestKind::Game => {
                let mut emit = Emit::default();
                let answer = self
                    .world
                    .apply_remote(id.from, op, self.tick + 1, &mut emit);
                self.stage(emit);
                answer
            }
            RequestKind::Events => {
                // Another zone's world and team events: published here,
                // their one writer, with the next tick's.
                let events = postcard::from_bytes::<Forwarded>(op)
                    .map(|f| f.events)
                    .unwrap_or_default();
                self.stats.events_forwarded_in += events.len() as u64;
                self.staged.extend(events.into_iter().filter(|e| {
                    matches!(e.channel, ChannelId::World | ChannelId::Team(_)) && e.pos.is_none()
                }));
                Payload::default()
            }
        };
        self.stats.requests_served += 1;
        let Some(zone) = self.zone.as_mut() else {
            return;
        };
        zone.served.insert(id, answer);
        while zone.served.len() > MAX_SERVED {
            zone.served.pop_first();
        }
    }

    /// The answer to a request of this zone's (a journaled `Answered`
    /// record): the game learns what came of it, once; an action waiting
    /// for it is answered.
    pub(super) fn answered(&mut self, id: RequestId, answer: &[u8]) {
        let Some(asked) = self.zone.as_mut().and_then(|z| z.asked.remove(&id)) else {
            return;
        };
        if asked.kind != RequestKind::Game {
            return;
        }
        let tick = self.tick + 1;
        let mut emit = Emit::default();
        let verdict = self
            .world
            .remote_answered(&asked.op, Some(answer), tick, &mut emit);
        self.stage(emit);
        if let Some((session, seq)) = asked.answers {
            self.answer_action(session, seq, tick, verdict);
        }
    }

    /// An action's cross-zone requests: each sent to the zone owning what
    /// lies at its point (a neighbour's copy within its radius, mirrored
    /// here, names the zone when the point is this zone's), or answered
    /// `None` at once when there is none (or too many are unanswered).
    ///
    /// A request for another zone's entity ([`Emit::remote_entity`]) answers
    /// the action `(session, seq)`: `Some(outcome)` when it is answered at
    /// once (refused: nowhere to send it), else the action waits (and
    /// `self.waiting` says so) for [`Self::answer_action`].
    pub(super) fn route_remote(
        &mut self,
        ops: Vec<RemoteOp>,
        tick: u64,
        pending: &mut Vec<Emitted>,
        action: (SessionId, u64),
    ) -> Option<Outcome> {
        let mut outcome = None;
        let mut answering = false;
        for RemoteOp {
            entity,
            point,
            radius,
            op,
        } in ops
        {
            // One request per action answers it.
            let answers = entity.is_some() && !std::mem::replace(&mut answering, true);
            // Routing reads only replicated state (the layout, positions in
            // this zone's world): a standby re-executing the action makes
            // the same request (mirrors are not replicated).
            let to = match entity {
                Some(_) => self.entity_target(action.0),
                None => self.remote_target(point, radius),
            };
            let sent = match to {
                Some(to) if op.len() <= MAX_REQUEST => self.ask(
                    to,
                    RequestKind::Game,
                    op.clone(),
                    tick,
                    answers.then_some(action),
                ),
                _ => false,
            };
            if sent {
                self.waiting |= answers;
                continue;
            }
            self.stats.requests_unrouted += 1;
            let mut emit = Emit::default();
            let verdict = self.world.remote_answered(&op, None, tick, &mut emit);
            pending.append(&mut emit.events);
            if answers {
                if let Err(r) = verdict {
                    outcome = Some(Outcome::Rejected {
                        code: r.code,
                        detail: r.detail,
                    });
                }
            }
        }
        outcome
    }

    /// The answer to an action that waited for another zone: applied (its
    /// result with the tick being built's) or refused (at once).
    fn answer_action(
        &mut self,
        session: SessionId,
        seq: u64,
        tick: u64,
        verdict: Result<(), crate::world::Rejection>,
    ) {
        let outcome = match verdict {
            Ok(()) => Outcome::Applied { tick },
            Err(r) => Outcome::Rejected {
                code: r.code,
                detail: r.detail,
            },
        };
        let result = ActionResult { seq, outcome };
        if matches!(result.outcome, Outcome::Applied { .. }) {
            self.stats.applied += 1;
            self.applied.push((session, result));
        } else {
            self.stats.rejected += 1;
            self.outputs.push_back(Output::Result { session, result });
        }
    }

    /// Makes a request of zone `to` (false: too many are unanswered).
    fn ask(
        &mut self,
        to: ZoneIdx,
        kind: RequestKind,
        op: Payload,
        tick: u64,
        answers: Option<(SessionId, u64)>,
    ) -> bool {
        let Some(zone) = self.zone.as_mut() else {
            return false;
        };
        if zone.asked.len() >= MAX_ASKED {
            return false;
        }
        let me = zone.setup.zone;
        let next = zone.next_ask.entry(to).or_default();
        let id = RequestId {
            from: me,
            to,
            seq: *next,
        };
        *next += 1;
        zone.asked.insert(
            id,
            Asked {
                kind,
                op: op.clone(),
                tick,
                answers,
            },
        );
        let low = ask_low(&zone.asked, &zone.next_ask, to);
        self.stats.requests_sent += 1;
        self.outputs.push_back(Output::ToZone {
            to,
            msg: ZoneMsg::Request {
                world: self.cfg.world,
                id,
                low,
                kind,
                op,
            },
        });
        true
    }

    /// A tick's events of a zone other than the home: those on the world
    /// and team channels (whose one writer is the home zone) go to the home
    /// zone to publish (in requests of at most [`MAX_FORWARD`] bytes); the
    /// rest stay.
    pub(super) fn forward_events(&mut self, pending: &mut Vec<Emitted>) {
        if self.zone().is_none_or(|z| z == ZoneIdx::HOME) {
            return;
        }
        let (world, stay): (Vec<Emitted>, Vec<Emitted>) =
            std::mem::take(pending).into_iter().partition(|e| {
                matches!(e.channel, ChannelId::World | ChannelId::Team(_)) && e.pos.is_none()
            });
        *pending = stay;
        if world.is_empty() {
            return;
        }
        let mut chunk: Vec<Emitted> = Vec::new();
        let mut size = 0;
        let tick = self.tick;
        let n = world.len();
        for e in world {
            let len = e.payload.len() + 64;
            if size + len > MAX_FORWARD && !chunk.is_empty() {
                self.forward_chunk(std::mem::take(&mut chunk), tick);
                size = 0;
            }
            size += len;
            chunk.push(e);
        }
        if !chunk.is_empty() {
            self.forward_chunk(chunk, tick);
        }
        self.stats.events_forwarded_out += n as u64;
    }

    fn forward_chunk(&mut self, events: Vec<Emitted>, tick: u64) {
        let n = events.len() as u64;
        let prev = self.zone.as_ref().and_then(|z| z.events_last);
        let op = postcard::to_stdvec(&Forwarded { prev, events })
            .map(Payload::from)
            .unwrap_or_default();
        if op.len() > MAX_FORWARD || !self.ask(ZoneIdx::HOME, RequestKind::Events, op, tick, None) {
            // Bounded: an event too large, or the home zone unanswering
            // for thousands of requests.
            self.stats.events_forward_dropped += n;
            return;
        }
        if let Some(z) = self.zone.as_mut() {
            z.events_last = z.next_ask.get(&ZoneIdx::HOME).map(|n| n - 1);
        }
    }

    /// The zone a request at `point` goes to: the zone holding the point,
    /// or, if that is this one, the zone of the nearest copy held within
    /// `radius` (a neighbour's avatar in the hysteresis band).
    fn remote_target(&self, point: (f32, f32), radius: f32) -> Option<ZoneIdx> {
        let zone = self.zone.as_ref()?;
        let me = zone.setup.zone;
        let at = zone.setup.layout.zone_at(point.0, point.1);
        if at != me {
            return Some(at);
        }
        // A neighbour's avatar may stand this side of the border, in the
        // hysteresis band (still its zone's).
        self.nearest_neighbour(point, radius + zone.setup.hysteresis)
    }

    /// The zone a request about another zone's entity goes to: the
    /// neighbour nearest the acting session's avatar within the mirror
    /// margin (the zone across the border it stands by).
    fn entity_target(&self, session: SessionId) -> Option<ZoneIdx> {
        let zone = self.zone.as_ref()?;
        let avatar = self.sessions.get(&session)?.avatar?;
        let pos = self.world.position(avatar)?;
        self.nearest_neighbour(pos, zone.setup.margin)
    }

    /// The other zone nearest `point` within `within` map units.
    fn nearest_neighbour(&self, point: (f32, f32), within: f32) -> Option<ZoneIdx> {
        let zone = self.zone.as_ref()?;
        let layout = &zone.setup.layout;
        layout
            .near(zone.setup.zone, point.0, point.1, within)
            .into_iter()
            .map(|z| (z, layout.distance(z, point.0, point.1)))
            .min_by(|a, b| a.1.total_cmp(&b.1).then(a.0.cmp(&b.0)))
            .map(|(z, _)| z)
    }

    /// This zone's unanswered requests, each with the tick that made it
    /// (re-sent once that tick is durable).
    pub fn zone_requests(&self) -> Vec<(u64, ZoneIdx, ZoneMsg)> {
        let Some(zone) = self.zone.as_ref() else {
            return Vec::new();
        };
        zone.asked
            .iter()
            .map(|(id, a)| {
                let msg = ZoneMsg::Request {
                    world: self.cfg.world,
                    id: *id,
                    low: ask_low(&zone.asked, &zone.next_ask, id.to),
                    kind: a.kind,
                    op: a.op.clone(),
                };
                (a.tick, id.to, msg)
            })
            .collect()
    }

    /// What this zone knows of another zone's request `id`.
    pub fn zone_served(&self, id: RequestId) -> Served {
        let Some(zone) = self.zone.as_ref() else {
            return Served::Forgotten;
        };
        if let Some(a) = zone.served.get(&id) {
            return Served::Answer(a.clone());
        }
        if id.seq < zone.served_low.get(&id.from).copied().unwrap_or(0) {
            return Served::Forgotten;
        }
        Served::New
    }

    /// Whether request `id` of this zone's awaits its answer.
    pub fn zone_asked(&self, id: RequestId) -> bool {
        self.zone
            .as_ref()
            .is_some_and(|z| z.asked.contains_key(&id))
    }
}

/// The lowest sequence towards `to` not answered yet.
fn ask_low(asked: &BTreeMap<RequestId, Asked>, next: &BTreeMap<ZoneIdx, u64>, to: ZoneIdx) -> u64 {
    asked
        .keys()
        .filter(|id| id.to == to)
        .map(|id| id.seq)
        .min()
        .unwrap_or_else(|| next.get(&to).copied().unwrap_or(0))
}
