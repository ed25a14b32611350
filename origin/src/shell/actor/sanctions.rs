//! Violations and sanctions in the world's task: each violation (the engine's,
//! and the edge's as relays report them) is counted, logged (rate limited)
//! and kept in the violation store; a kick or a ban closes the session and
//! sends the sanction to every relay linked to this origin (each refuses the
//! subject's hellos, a resume included, until it ends) and, through the
//! cluster agent, to the control plane's ban list (every relay of the cluster).

use skylane_proto::{ErrorCode, ErrorMsg, LinkMsg, Sanction, SanctionKind, SessionId};
use tracing::warn;

use super::super::mailbox::WorldEvent;
use super::{frame, Actor};
use crate::anticheat::{AnomalyKind, Violation};
use crate::core::Core;
use crate::evidence::{Source, ViolationRecord};
use crate::metrics::OriginMetrics;
use crate::routes::LinkId;

/// Longest edge report fields kept (a relay is trusted, but bounded anyway).
const MAX_REPORT: usize = 1024;

fn kind_label(kind: AnomalyKind) -> &'static str {
    match kind {
        AnomalyKind::Accuracy => "accuracy",
        AnomalyKind::ReactionTime => "reaction_time",
        AnomalyKind::ActionRate => "action_rate",
        AnomalyKind::Rule => "rule",
    }
}

fn truncated(mut s: String) -> String {
    if s.len() > MAX_REPORT {
        let mut end = MAX_REPORT;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}

impl Actor {
    fn now_ms(&self) -> u64 {
        self.clock.now_us() / 1000
    }

    /// The engine recorded a violation.
    pub(super) fn violation(&mut self, v: &Violation) {
        OriginMetrics::count(&self.metrics.violations, kind_label(v.kind));
        let key = (v.session, v.kind);
        if let Some(suppressed) = self
            .violation_logs
            .handle_event(tokio::time::Instant::now().into_std(), &key)
        {
            warn!(session = %v.session, player = %v.player, kind = ?v.kind, evidence = %v.evidence, suppressed, "violation");
        }
        let record = ViolationRecord {
            id: 0,
            at_ms: self.now_ms(),
            world: self.core.world_id().0,
            tick: v.tick,
            player: v.player.clone(),
            session: v.session.0,
            source: Source::Origin,
            detector: kind_label(v.kind).into(),
            evidence: v.evidence.clone(),
            value: Some(v.value),
            threshold: Some(v.threshold),
            action: format!("{:?}", v.enforcement).to_lowercase(),
            relay: None,
        };
        self.keep_violation(record);
    }

    /// A violation into the store, and its analytics row.
    fn keep_violation(&mut self, record: ViolationRecord) {
        if let Some(tap) = self.analytics.get() {
            tap.emitter
                .emit(crate::shell::analytics::violation_row(tap, &record));
        }
        self.evidence.record(record, &self.metrics);
    }

    /// A relay's edge guard cut `session` (the session's close follows).
    pub(super) fn edge_report(
        &mut self,
        id: LinkId,
        session: SessionId,
        player: String,
        rule: String,
        evidence: String,
    ) {
        let Some(relay) = self.relays.get(&id).map(|r| r.relay) else {
            return;
        };
        OriginMetrics::count(&self.metrics.violations, "edge");
        let record = ViolationRecord {
            id: 0,
            at_ms: self.now_ms(),
            world: self.core.world_id().0,
            tick: self.core.tick(),
            player: truncated(player),
            session: session.0,
            source: Source::Edge,
            detector: truncated(rule),
            evidence: truncated(evidence),
            value: None,
            threshold: None,
            action: "cut".into(),
            relay: Some(relay.to_string()),
        };
        self.keep_violation(record);
    }

    /// The engine kicked `session` (and removed it); `sanction` keeps its
    /// player out for that many seconds (0: for good).
    pub(super) fn kick(
        &mut self,
        session: SessionId,
        player: &str,
        reason: &str,
        sanction: Option<(SanctionKind, u64)>,
    ) {
        warn!(%session, %player, %reason, ?sanction, "kicking session");
        if let Some(id) = self.routes.relay_of(session) {
            self.send(
                id,
                0,
                frame(&LinkMsg::Error(ErrorMsg {
                    code: ErrorCode::Unexpected,
                    message: format!("{session} kicked: {reason}"),
                })),
            );
        }
        if let Some((kind, secs)) = sanction {
            let now = self.clock.now_us() / 1_000_000;
            let until = if secs == 0 {
                u64::MAX
            } else {
                now.saturating_add(secs)
            };
            let what = match kind {
                SanctionKind::Kick => "kick",
                SanctionKind::Ban => "ban",
            };
            OriginMetrics::count(&self.metrics.sanctions, what);
            let msg = frame(&LinkMsg::Sanction(Sanction {
                subject: player.to_owned(),
                kind,
                until,
                reason: format!("{what}: {reason}"),
            }));
            // Before the session's close, so its relay refuses the resume.
            let targets: Vec<LinkId> = self.relays.keys().copied().collect();
            for id in targets {
                self.send(id, 0, msg.clone());
            }
            // Cluster-wide through the control plane's ban list (when this
            // origin is in a cluster: its agent takes it).
            self.events.send(WorldEvent::Sanction {
                subject: player.to_owned(),
                ban: skylane_control::Ban {
                    until,
                    reason: format!("{what} in {}: {reason}", self.core.world_id()),
                },
            });
        }
        self.close_kicked(session);
    }

    fn close_kicked(&mut self, session: SessionId) {
        if let Some(id) = self.routes.relay_of(session) {
            self.send(id, 0, frame(&LinkMsg::SessionClose { session }));
        }
        // The engine already removed the session; forget its routing
        // (its channel removals, routed next, find it detached).
        self.routes.detach(session);
    }
}
