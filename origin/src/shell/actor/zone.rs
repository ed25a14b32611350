//! A zone's actor side of the handoff: the handoff core driven by the
//! engine's crossings and the zone link's messages, its records journaled
//! and replicated through the engine (`Input::Zone`), its messages sent only
//! once the tick that recorded them is durable on the standbys (so a
//! standby that takes the zone over holds every record a peer has acted
//! on), and moved sessions told to their relay.

use std::collections::VecDeque;

use skylane_proto::zones::{zone_record_id, EntityTransfer, ZoneIdx, ZoneMsg, ZoneRecord};
use skylane_proto::{ActionResult, EntityId, LinkMsg, Outcome, RejectCode, SessionId, WorldId};
use tracing::warn;

use crate::core::Core;
use crate::metrics::OriginMetrics;
use crate::zone::{HandoffConfig, Handoffs, ZoneOutput};

use super::super::zones::ZoneSender;
use super::{frame, Actor, LinkId};

/// Messages held until their tick is durable, at most (beyond, the oldest
/// are dropped: the handoff core re-sends what matters).
const MAX_HELD: usize = 16_384;

/// The handoff side of a zone's actor.
pub(crate) struct ZoneDriver {
    handoffs: Handoffs,
    links: ZoneSender,
    /// The world the zone belongs to (what its messages name).
    world: WorldId,
    /// Messages and the tick whose durability they wait for.
    held: VecDeque<(u64, ZoneIdx, ZoneMsg)>,
    /// When each handoff in flight from here started (ms), for its latency
    /// (at most `MAX_HELD`; one started before a restart is not timed).
    started: std::collections::HashMap<EntityId, u64>,
    /// Sessions moved away still routed here (oldest first).
    routed: VecDeque<SessionId>,
    /// When unanswered requests are sent again next (ms).
    next_resend: u64,
    /// A zone other than the home: the home zone wants its feed until then
    /// (ms).
    feed_until: Option<u64>,
    /// The home zone: whether the other zones were last told the feed is
    /// wanted, and when they are told again (ms).
    feed_told: (bool, u64),
}

/// How often the home zone tells the others its feed is still wanted, and
/// how long a zone keeps feeding without hearing it again.
const FEED_WANTED_EVERY_MS: u64 = 2_000;
const FEED_WANTED_FOR_MS: u64 = 6_000;

/// How often unanswered cross-zone requests are sent again.
const REQUEST_RESEND_MS: u64 = 250;

impl ZoneDriver {
    /// Holds `msg` for zone `to` until `tick` is durable (beyond
    /// `MAX_HELD`, the oldest is dropped: what matters is sent again).
    fn hold(&mut self, tick: u64, to: ZoneIdx, msg: ZoneMsg, metrics: &OriginMetrics) {
        if self.held.len() >= MAX_HELD {
            self.held.pop_front();
            OriginMetrics::count(&metrics.zone_messages, "dropped");
        }
        self.held.push_back((tick, to, msg));
    }
}

/// Sessions moved away whose late actions are still routed to their old
/// zone, at most (beyond, the oldest are forgotten: an action of theirs
/// arriving after so many later moves gets `UnknownSession`).
const MAX_MOVED_ROUTED: usize = 4_096;

impl ZoneDriver {
    /// The driver for `core` if it runs a zone and this origin has zone
    /// links; its handoff state from what the journal's records add up to.
    pub(crate) fn new(core: &dyn Core, links: Option<ZoneSender>, now_ms: u64) -> Option<Self> {
        let zone = core.zone()?;
        let world = core.world_id();
        let ledger = core.handoff_ledger().unwrap_or_default();
        Some(Self {
            handoffs: Handoffs::recover(world, zone, HandoffConfig::default(), now_ms, ledger),
            links: links?,
            world,
            held: VecDeque::new(),
            started: std::collections::HashMap::new(),
            routed: VecDeque::new(),
            next_resend: now_ms + REQUEST_RESEND_MS,
            feed_until: None,
            feed_told: (false, 0),
        })
    }
}

impl Actor {
    /// An avatar crossed this zone's border: its handoff starts.
    pub(super) fn crossing(&mut self, transfer: EntityTransfer, to: ZoneIdx) {
        let now_ms = self.now_us() / 1000;
        let Some(z) = self.zone.as_mut() else {
            return;
        };
        // Reported every tick until the `Out` is journaled: one start.
        if z.handoffs.is_leaving(transfer.entity) {
            return;
        }
        let entity = transfer.entity;
        match z.handoffs.begin(now_ms, transfer, to) {
            Ok(_) => {
                OriginMetrics::count(&self.metrics.handoffs, "started");
                if z.started.len() < MAX_HELD {
                    z.started.insert(entity, now_ms);
                }
            }
            Err(e) => {
                OriginMetrics::count(&self.metrics.handoffs, "failed");
                warn!(world = %self.host, error = %e, "handoff not started");
            }
        }
        self.zone_pump();
    }

    /// A message of the engine's for zone `to`'s owner (its tick is
    /// durable): border mirrors, or a cross-zone request.
    pub(super) fn send_to_zone(&mut self, to: ZoneIdx, msg: ZoneMsg) {
        if let Some(z) = self.zone.as_ref() {
            let kind = match msg {
                ZoneMsg::Request {
                    kind: skylane_proto::zones::RequestKind::Events,
                    ..
                } => "events_forwarded",
                ZoneMsg::Request { .. } => "requests_sent",
                _ => "mirrors_sent",
            };
            OriginMetrics::count(&self.metrics.zone_messages, kind);
            z.links.send(zone_record_id(z.world, to), msg);
        }
    }

    /// Another zone's request (applied once, answered once the record is
    /// durable) or an answer to one of this zone's (journaled once).
    fn zone_request(&mut self, msg: &ZoneMsg) {
        let kind = match msg {
            ZoneMsg::Request { .. } => "requests_received",
            ZoneMsg::Answer { id, .. } if self.core.zone_asked(*id) => "answers_received",
            _ => "answers_repeated",
        };
        match self.core.handle_request(msg) {
            Ok(reply) => {
                OriginMetrics::count(&self.metrics.zone_messages, kind);
                let tick = self.core.tick() + 1;
                if let (Some((to, reply)), Some(z)) = (reply, self.zone.as_mut()) {
                    z.hold(tick, to, reply, &self.metrics);
                }
            }
            // Not answered: the asker re-sends, and it is tried again.
            Err(e) => warn!(world = %self.host, error = %e, "a request could not be journaled"),
        }
    }

    /// A message from another zone's owner.
    pub(super) fn zone_msg(&mut self, msg: &ZoneMsg) {
        if matches!(msg, ZoneMsg::Mirrors { .. }) {
            // Presentation: shown to this zone's players, never journaled.
            let now = self.now_us();
            OriginMetrics::count(&self.metrics.zone_messages, "mirrors_received");
            if let Err(e) = self.core.handle_mirrors(msg, now) {
                OriginMetrics::count(&self.metrics.zone_messages, "mirrors_refused");
                warn!(world = %self.host, error = %e, "mirrors refused");
            }
            return;
        }
        match msg {
            ZoneMsg::FeedPart { .. } => return self.core.handle_feed_part(msg),
            ZoneMsg::FeedWanted { on, .. } => {
                let now = self.now_us() / 1000;
                if let Some(z) = self.zone.as_mut() {
                    z.feed_until = on.then_some(now + FEED_WANTED_FOR_MS);
                }
                return self.update_feed();
            }
            _ => {}
        }
        if matches!(msg, ZoneMsg::Request { .. } | ZoneMsg::Answer { .. }) {
            self.zone_request(msg);
            self.zone_pump();
            return;
        }
        let Some(z) = self.zone.as_mut() else {
            return;
        };
        let core = &self.core;
        if let Err(e) = z.handoffs.handle_msg(msg, |t| core.can_import(t)) {
            OriginMetrics::count(&self.metrics.zone_messages, "misrouted");
            warn!(world = %self.host, error = %e, "zone message refused");
        }
        self.zone_pump();
    }

    /// A session's avatar belongs to zone `to` now: its relay re-opens it
    /// there.
    pub(super) fn session_moved(&mut self, session: SessionId, to: ZoneIdx) {
        let Some(z) = self.zone.as_ref() else {
            return;
        };
        let world = zone_record_id(z.world, to);
        if let Some(id) = self.routes.relay_of(session) {
            self.send(id, 0, frame(&LinkMsg::SessionMoved { session, world }));
        }
        if self.core.moved_to(session).is_some() && !self.core.has_session(session) {
            // Gone from here (not back after an abort; not away from the
            // home zone, which keeps it for the world and team channels). Actions its relay
            // sent before it heard are answered `Moved` (`moved_action`):
            // so the session stays in the directory, which routes them
            // here, for the last `MAX_MOVED_ROUTED` sessions moved away.
            self.routes.detach(session);
            if let Some(z) = self.zone.as_mut() {
                z.routed.push_back(session);
                if z.routed.len() > MAX_MOVED_ROUTED {
                    if let Some(old) = z.routed.pop_front() {
                        self.dir.forget_session_of(old, self.host);
                    }
                }
            }
        }
    }

    /// Whether the home zone wants this zone's feed now.
    pub(super) fn zone_feed_wanted(&self, now_ms: u64) -> bool {
        self.zone
            .as_ref()
            .and_then(|z| z.feed_until)
            .is_some_and(|t| now_ms < t)
    }

    /// The home zone tells every other zone whether its feed is wanted (at
    /// once when that changes, and every `FEED_WANTED_EVERY_MS` while it is);
    /// a zone whose ask lapsed stops feeding.
    pub(super) fn tell_zones_feed(&mut self, now_ms: u64) {
        let home = self.core.zone() == Some(ZoneIdx::HOME);
        let on = self.routes.feed_wanted();
        let zones = self.core.zones();
        let lapsed = self
            .zone
            .as_ref()
            .is_some_and(|z| z.feed_until.is_some_and(|t| now_ms >= t));
        let Some(z) = self.zone.as_mut() else {
            return;
        };
        if lapsed {
            z.feed_until = None;
            let now = self.now_us();
            let on = self.routes.feed_wanted();
            self.core.set_feed(on, now);
            return;
        }
        if !home || (on == z.feed_told.0 && (!on || now_ms < z.feed_told.1)) {
            return;
        }
        z.feed_told = (on, now_ms + FEED_WANTED_EVERY_MS);
        for to in zones.into_iter().filter(|t| *t != ZoneIdx::HOME) {
            let msg = ZoneMsg::FeedWanted {
                world: z.world,
                to,
                on,
            };
            z.links.send(zone_record_id(z.world, to), msg);
        }
    }

    /// A relay opened (or resumed) a session whose avatar this zone handed
    /// on: it is told where the session is.
    pub(super) fn tell_moved(&mut self, id: LinkId, session: SessionId, to: ZoneIdx) {
        self.dir.forget_session(session);
        let world = zone_record_id(self.core.world_id(), to);
        self.send(id, 0, frame(&LinkMsg::SessionMoved { session, world }));
    }

    /// A session away from the home zone resumed here (its world and team
    /// channels): its relay is told where its avatar is, and the session
    /// stays routed here.
    pub(super) fn tell_away(&mut self, id: LinkId, session: SessionId, to: ZoneIdx) {
        let world = zone_record_id(self.core.world_id(), to);
        self.send(id, 0, frame(&LinkMsg::SessionMoved { session, world }));
    }

    /// An action of a session handed on reached this zone late: answered
    /// `Moved` (its relay sends it after the avatar).
    pub(super) fn moved_action(&mut self, id: LinkId, session: SessionId, seq: u64) {
        OriginMetrics::count(&self.metrics.zone_messages, "late_action");
        let result = ActionResult {
            seq,
            outcome: Outcome::Rejected {
                code: RejectCode::Moved,
                detail: "the avatar moved to another zone: the action goes there".into(),
            },
        };
        self.send(id, 0, frame(&LinkMsg::ActionResult { session, result }));
    }

    /// Acts on the handoff core's outputs (records journaled now, messages
    /// held for their tick), re-sends what is overdue, and sends what is
    /// durable.
    pub(super) fn zone_pump(&mut self) {
        let now_ms = self.now_us() / 1000;
        let Some(z) = self.zone.as_mut() else {
            return;
        };
        z.handoffs.handle_timeout(now_ms);
        // A record journaled now is an input of the tick being built.
        let tick = self.core.tick() + 1;
        while let Some(out) = z.handoffs.poll_output() {
            match out {
                ZoneOutput::Journal(rec) => {
                    let kind = match &rec {
                        ZoneRecord::Commit { .. } => Some("committed"),
                        ZoneRecord::Abort { .. } => Some("aborted"),
                        ZoneRecord::In { .. } => Some("imported"),
                        ZoneRecord::Refused { .. } => Some("refused"),
                        _ => None,
                    };
                    if let Err(e) = self.core.handle_zone(&rec) {
                        // Nothing that depends on it is sent: the peer
                        // re-sends, and the step is tried again.
                        warn!(world = %self.host, error = %e, "a zone record could not be journaled");
                        OriginMetrics::count(&self.metrics.handoffs, "failed");
                        z.held.clear();
                        return;
                    }
                    if let Some(k) = kind {
                        OriginMetrics::count(&self.metrics.handoffs, k);
                    }
                    if let ZoneRecord::Commit { entity, .. } | ZoneRecord::Abort { entity, .. } =
                        &rec
                    {
                        if let Some(t) = z.started.remove(entity) {
                            if matches!(rec, ZoneRecord::Commit { .. }) {
                                self.metrics.record_handoff(now_ms.saturating_sub(t));
                            }
                        }
                    }
                }
                ZoneOutput::Send { to, msg } => z.hold(tick, to, msg, &self.metrics),
            }
        }
        let durable = if self.gate.required() == 0 {
            u64::MAX
        } else {
            self.gate.durable()
        };
        // Unanswered requests whose tick is durable go again, every
        // `REQUEST_RESEND_MS` (the owner answers a repeat from its record).
        if now_ms >= z.next_resend {
            z.next_resend = now_ms + REQUEST_RESEND_MS;
            for (t, to, msg) in self.core.zone_requests() {
                if t <= durable && t + 1 < tick {
                    OriginMetrics::count(&self.metrics.zone_messages, "requests_resent");
                    z.links.send(zone_record_id(z.world, to), msg);
                }
            }
        }
        while z.held.front().is_some_and(|(t, ..)| *t <= durable) {
            if let Some((_, to, msg)) = z.held.pop_front() {
                z.links.send(zone_record_id(z.world, to), msg);
            }
        }
        self.tell_zones_feed(now_ms);
    }
}
