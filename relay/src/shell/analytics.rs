//! The relay's analytics rows (see `docs/analytics.md`): sessions started
//! and ended (with their length, reconnects and round-trip time) and
//! spectator joins. [`SessionLog`] is the pure part (what a session's rows
//! say); the actor's hooks below emit them. Emitting never waits (the spool
//! drops its oldest rows when full) and nothing here changes what the relay
//! does with a session.

use std::collections::HashMap;
use std::time::Duration;

use skylane_analytics::schema::{SessionEnded, SessionStarted, SpectatorJoined};
use skylane_proto::{BandwidthMode, Role, SessionId, SpectatorSubscribe, WorldId};
use tokio::time::Instant;

use super::actor::Actor;

/// What the relay remembers of a session for its `session_ended` row.
#[derive(Debug, Clone)]
struct Open {
    started: Instant,
    player: String,
    world: WorldId,
    role: Role,
    reconnects: u32,
    rtt_ms: f64,
}

/// Sessions held for their rows, bounded (a session beyond the bound gets
/// no `session_ended` row; the relay's own session bound keeps it far).
#[derive(Debug)]
pub(crate) struct SessionLog {
    open: HashMap<SessionId, Open>,
    max: usize,
}

fn role_name(r: Role) -> String {
    format!("{r:?}").to_lowercase()
}

fn mode_name(m: &BandwidthMode) -> String {
    match m {
        BandwidthMode::Full => "full".into(),
        BandwidthMode::Reduced { hz } => format!("reduced_{hz}hz"),
        BandwidthMode::KeyframesOnly => "keyframes_only".into(),
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The labels every relay row carries.
pub(crate) struct Labels<'a> {
    pub(crate) at_ms: u64,
    pub(crate) node: &'a str,
    pub(crate) region: &'a str,
}

impl<'a> Labels<'a> {
    fn of(at_ms: u64, node: &'a str, region: &'a str) -> Self {
        Self {
            at_ms,
            node,
            region,
        }
    }
}

impl SessionLog {
    pub(crate) fn new(max: usize) -> Self {
        Self {
            open: HashMap::new(),
            max: max.max(1),
        }
    }

    /// A session attached (new, or resumed: a reconnect when this relay
    /// held it).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn handle_start(
        &mut self,
        now: Instant,
        l: &Labels<'_>,
        session: SessionId,
        player: &str,
        world: WorldId,
        role: Role,
        resumed: bool,
        rtt: Duration,
    ) -> SessionStarted {
        let room = self.open.len() < self.max;
        match self.open.get_mut(&session) {
            Some(o) => {
                o.reconnects += 1;
                o.rtt_ms = ms(rtt);
            }
            None if room => {
                self.open.insert(
                    session,
                    Open {
                        started: now,
                        player: player.to_owned(),
                        world,
                        role,
                        reconnects: u32::from(resumed),
                        rtt_ms: ms(rtt),
                    },
                );
            }
            None => {}
        }
        SessionStarted {
            at_ms: l.at_ms,
            node: l.node.to_owned(),
            region: l.region.to_owned(),
            session: session.0,
            player: player.to_owned(),
            world: world.0,
            role: role_name(role),
            resumed,
            rtt_ms: ms(rtt),
        }
    }

    /// The session's connection measured `rtt`.
    pub(crate) fn handle_rtt(&mut self, session: SessionId, rtt: Duration) {
        if let Some(o) = self.open.get_mut(&session) {
            o.rtt_ms = ms(rtt);
        }
    }

    /// The session ended here: its row (none for a session never started
    /// here or beyond the bound).
    pub(crate) fn handle_end(
        &mut self,
        now: Instant,
        l: &Labels<'_>,
        session: SessionId,
        reason: &str,
    ) -> Option<SessionEnded> {
        let o = self.open.remove(&session)?;
        Some(SessionEnded {
            at_ms: l.at_ms,
            node: l.node.to_owned(),
            region: l.region.to_owned(),
            session: session.0,
            player: o.player,
            world: o.world.0,
            role: role_name(o.role),
            duration_ms: now.saturating_duration_since(o.started).as_millis() as u64,
            reconnects: o.reconnects,
            rtt_ms: o.rtt_ms,
            reason: reason.to_owned(),
        })
    }

    /// The relay stops: a row for every session still held here (connected,
    /// or within its grace), in session order, with `reason`. The log is
    /// empty afterwards.
    pub(crate) fn handle_stop(
        &mut self,
        now: Instant,
        l: &Labels<'_>,
        reason: &str,
    ) -> Vec<SessionEnded> {
        let mut open: Vec<SessionId> = self.open.keys().copied().collect();
        open.sort_unstable();
        open.into_iter()
            .filter_map(|s| self.handle_end(now, l, s, reason))
            .collect()
    }
}

impl Actor {
    fn labels(&self) -> (u64, String, String) {
        let info = &self.shared.settings.info;
        (
            self.shared.clock.unix_us() / 1000,
            format!("relay-{}", info.id.0),
            info.region.clone(),
        )
    }

    /// A session of `(player, world, role)` attached (`rtt`: its
    /// connection's now).
    pub(crate) fn analytics_started(
        &mut self,
        session: SessionId,
        (player, world, role): (String, WorldId, Role),
        resumed: bool,
        rtt: Duration,
    ) {
        let emitter = &self.shared.settings.analytics;
        if !emitter.enabled() {
            return;
        }
        let (at_ms, node, region) = self.labels();
        let l = Labels::of(at_ms, &node, &region);
        let row = self.session_log.handle_start(
            Instant::now(),
            &l,
            session,
            &player,
            world,
            role,
            resumed,
            rtt,
        );
        self.shared.settings.analytics.emit(row);
    }

    /// A session ended here, for `reason`.
    pub(crate) fn analytics_ended(&mut self, session: SessionId, reason: &str) {
        if !self.shared.settings.analytics.enabled() {
            return;
        }
        if let Some(rtt) = self.connection_of(session).map(|c| c.conn.rtt()) {
            self.session_log.handle_rtt(session, rtt);
        }
        let (at_ms, node, region) = self.labels();
        let l = Labels::of(at_ms, &node, &region);
        if let Some(row) = self
            .session_log
            .handle_end(Instant::now(), &l, session, reason)
        {
            self.shared.settings.analytics.emit(row);
        }
    }

    /// The relay stops: every session still held here ends with reason
    /// `stopped` (its client resumes elsewhere, or its grace would have run
    /// out here).
    pub(crate) fn analytics_stopped(&mut self) {
        if !self.shared.settings.analytics.enabled() {
            return;
        }
        let (at_ms, node, region) = self.labels();
        let l = Labels::of(at_ms, &node, &region);
        for row in self.session_log.handle_stop(Instant::now(), &l, "stopped") {
            self.shared.settings.analytics.emit(row);
        }
    }

    /// A spectator joined `world`'s audience.
    pub(crate) fn analytics_spectator(
        &mut self,
        session: SessionId,
        world: WorldId,
        sub: &SpectatorSubscribe,
    ) {
        if !self.shared.settings.analytics.enabled() {
            return;
        }
        let (at_ms, node, region) = self.labels();
        self.shared.settings.analytics.emit(SpectatorJoined {
            at_ms,
            node,
            region,
            session: session.0,
            world: world.0,
            delay_ms: u64::from(sub.delay_ms),
            mode: mode_name(&sub.mode),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const L: Labels<'static> = Labels {
        at_ms: 5,
        node: "relay-1",
        region: "eu",
    };

    #[test]
    fn a_session_row_carries_its_length_reconnects_and_last_rtt() {
        let mut log = SessionLog::new(8);
        let t0 = Instant::now();
        let s = SessionId(3);
        let w = WorldId(1);
        let rtt = Duration::from_millis(20);
        let r = log.handle_start(t0, &L, s, "p", w, Role::Player, false, rtt);
        assert!(!r.resumed);
        assert_eq!(r.rtt_ms, 20.0);
        log.handle_start(
            t0 + Duration::from_secs(2),
            &L,
            s,
            "p",
            w,
            Role::Player,
            true,
            rtt,
        );
        log.handle_rtt(s, Duration::from_millis(35));
        let end = log
            .handle_end(t0 + Duration::from_secs(10), &L, s, "left")
            .unwrap();
        assert_eq!(end.duration_ms, 10_000, "from its first start");
        assert_eq!(end.reconnects, 1);
        assert_eq!(end.rtt_ms, 35.0);
        assert_eq!(end.reason, "left");
        assert!(log.handle_end(t0, &L, s, "left").is_none(), "once");
    }

    #[test]
    fn a_session_resumed_from_another_relay_counts_one_reconnect_and_the_log_is_bounded() {
        let mut log = SessionLog::new(2);
        let t0 = Instant::now();
        let rtt = Duration::from_millis(1);
        log.handle_start(
            t0,
            &L,
            SessionId(1),
            "a",
            WorldId(1),
            Role::Player,
            true,
            rtt,
        );
        log.handle_start(
            t0,
            &L,
            SessionId(2),
            "b",
            WorldId(1),
            Role::Spectator,
            false,
            rtt,
        );
        let r = log.handle_start(
            t0,
            &L,
            SessionId(3),
            "c",
            WorldId(1),
            Role::Player,
            false,
            rtt,
        );
        assert_eq!(r.session, 3, "its start is still told");
        assert!(log.handle_end(t0, &L, SessionId(3), "left").is_none());
        let a = log.handle_end(t0, &L, SessionId(1), "expired").unwrap();
        assert_eq!(a.reconnects, 1);
        let b = log.handle_end(t0, &L, SessionId(2), "left").unwrap();
        assert_eq!(b.role, "spectator");
    }

    #[test]
    fn a_stopping_relay_ends_every_session_it_holds_once() {
        let mut log = SessionLog::new(8);
        let t0 = Instant::now();
        let rtt = Duration::from_millis(4);
        for s in [7, 2, 5] {
            log.handle_start(
                t0,
                &L,
                SessionId(s),
                "p",
                WorldId(1),
                Role::Player,
                false,
                rtt,
            );
        }
        assert!(log.handle_end(t0, &L, SessionId(5), "left").is_some());
        let rows = log.handle_stop(t0 + Duration::from_secs(3), &L, "stopped");
        let ids: Vec<u64> = rows.iter().map(|r| r.session).collect();
        assert_eq!(ids, vec![2, 7], "the open ones, in order");
        assert!(rows
            .iter()
            .all(|r| r.reason == "stopped" && r.duration_ms == 3_000));
        assert!(log.handle_stop(t0, &L, "stopped").is_empty(), "once");
    }

    #[test]
    fn modes_are_named() {
        assert_eq!(mode_name(&BandwidthMode::Full), "full");
        assert_eq!(mode_name(&BandwidthMode::Reduced { hz: 5 }), "reduced_5hz");
    }
}
