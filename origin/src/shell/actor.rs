//! The world's one task: owns the engine ([`Core`]) and the [`Routes`], turns
//! relay messages into engine inputs and engine outputs into lane frames.

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use quinn::Connection;
use skylane_proto::{
    encode_frame_to_bytes, ChannelId, ErrorCode, ErrorMsg, EventClass, LinkMsg, RelayId, SessionId,
    WorldPhase, DEFAULT_MAX_FRAME,
};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use skylane_ops::LogLimiter;

use crate::anticheat::AnomalyKind;
use crate::core::Core;
use crate::engine::{JoinError, Output};
use crate::journal::JournalError;
use crate::metrics::OriginMetrics;
use crate::replica::{AckVerdict, Gate, GateConfig, Recorder, Released};
use crate::routes::{LinkId, Routes};

use super::host::SharedDir;
use super::lanes::{lane_for, DownLane, LaneRefused};
use super::mailbox::{Clock, Cmd, WorldEvent};
use super::replication::StandbyLink;

mod economy;
mod replica;
mod resume;
mod sanctions;
mod status;
mod tap;
mod zone;
use super::ServerConfig;

/// Co-signatures held for batches not yet sent (a bound; more means they
/// belong to batches that left already).
const MAX_COSIGS: usize = 65_536;

type Reply = tokio::sync::oneshot::Sender<Result<u64, String>>;

/// A relay link as the actor sees it: where to write.
struct RelayState {
    relay: RelayId,
    conn: Connection,
    lanes: Vec<DownLane>,
    /// The link was closed as too slow: nothing more is queued for it.
    cut: bool,
}

/// What a world's task is started with besides its engine.
pub(crate) struct WorldEnv {
    pub(crate) cfg: ServerConfig,
    pub(crate) metrics: OriginMetrics,
    pub(crate) clock: Clock,
    pub(crate) dir: SharedDir,
    /// The id it is hosted under: the world's, or for a zone of a zoned
    /// world its record's (the engine signs as the world it is a zone of).
    pub(crate) host: skylane_proto::WorldId,
    /// The owner epoch (0 outside a control plane).
    pub(crate) epoch: u64,
    /// Lifecycle reports (a handful per world: bounded by the worlds hosted).
    pub(crate) events: super::mailbox::Events,
    /// Whether this origin may write (its control-plane lease cannot have lapsed).
    pub(crate) writable: watch::Receiver<super::WriteUntil>,
    /// The process's violation store.
    pub(crate) evidence: std::sync::Arc<super::evidence::Evidence>,
    /// The process's economy ledger.
    pub(crate) ledger: std::sync::Arc<super::ledger::Ledgers>,
    /// The zone link, when this origin has one (a zone's handoffs use it).
    pub(crate) zones: Option<super::zones::ZoneSender>,
    /// Standbys named for the world: its first ticks wait for them (at most
    /// [`STANDBY_WAIT`]) instead of leaving unreplicated.
    pub(crate) standbys: usize,
    /// The process's analytics rows.
    pub(crate) analytics: super::analytics::SharedTap,
}

/// How long a new world's outputs wait for the standbys named for it to
/// follow before it runs with fewer (unreplicated, if none came).
pub(crate) const STANDBY_WAIT: Duration = Duration::from_secs(3);

/// The world's task: the engine, the routes, the relay links.
pub(crate) struct Actor {
    core: Recorder,
    /// Outputs wait here until their tick is durable on the standbys.
    gate: Gate<Output>,
    standbys: HashMap<u64, StandbyLink>,
    /// Standbys that diverged, sent this origin's state to compare with, and
    /// not yet answered with the entities that differ (no longer fed).
    comparing: HashMap<u64, StandbyLink>,
    /// The evidence of the first divergence, completed with the entities.
    divergence: Option<Box<skylane_proto::Evidence>>,
    /// Replication frames sent and not yet acknowledged by every standby:
    /// the last tick each carries and its size (bounded by [`MAX_UNACKED`]).
    unacked: std::collections::VecDeque<(u64, u64)>,
    /// The lag (ticks, bytes) this world added to the process's gauges.
    lag_counted: (i64, i64),
    /// A tick ran since the last routing.
    ticked: bool,
    /// The world's suspicion was reported.
    suspect_reported: bool,
    /// Relay messages that arrived while writing was not safe (or while the
    /// world is being handed over).
    deferred: Vec<Cmd>,
    /// Standbys' co-signatures of checkpoints not sent yet, by channel and
    /// first sequence number.
    cosigs: HashMap<(ChannelId, u64), skylane_proto::Payload>,
    /// Being handed over: the last tick, and who waits for a standby to
    /// acknowledge it. No tick runs meanwhile.
    handover: Option<(u64, Option<Reply>)>,
    dir: SharedDir,
    host: skylane_proto::WorldId,
    epoch: u64,
    events: super::mailbox::Events,
    writable: watch::Receiver<super::WriteUntil>,
    /// Sessions this world last added to the origin-wide gauge.
    sessions_counted: i64,
    cfg: ServerConfig,
    metrics: OriginMetrics,
    clock: Clock,
    relays: HashMap<LinkId, RelayState>,
    routes: Routes,
    /// One violation line per session and kind every 10 s (with a count).
    violation_logs: LogLimiter<(SessionId, AnomalyKind)>,
    evidence: std::sync::Arc<super::evidence::Evidence>,
    ledger: std::sync::Arc<super::ledger::Ledgers>,
    /// A zone's handoffs (`None` for a world that is not a zone).
    zone: Option<zone::ZoneDriver>,
    analytics: super::analytics::SharedTap,
    /// Sampled actions waiting for their outcome (analytics).
    sampler: super::analytics::Sampler,
}

pub(crate) fn frame(msg: &LinkMsg) -> Option<Bytes> {
    encode_frame_to_bytes(msg, DEFAULT_MAX_FRAME).ok()
}

impl Actor {
    pub(crate) fn new(core: Box<dyn Core>, env: WorldEnv) -> Self {
        let tick = core.tick();
        let mut gate = Gate::new(
            GateConfig {
                min_acks: env.cfg.min_acks,
                ..GateConfig::default()
            },
            tick,
        );
        let wait = STANDBY_WAIT.as_secs() * u64::from(core.tick_hz().max(1));
        gate.expect_standbys(env.standbys, tick + wait);
        let zone = zone::ZoneDriver::new(&*core, env.zones.clone(), env.clock.now_us() / 1000);
        Self {
            core: Recorder::new(core),
            gate,
            standbys: HashMap::new(),
            comparing: HashMap::new(),
            unacked: std::collections::VecDeque::new(),
            lag_counted: (0, 0),
            divergence: None,
            ticked: false,
            deferred: Vec::new(),
            suspect_reported: false,
            handover: None,
            cosigs: HashMap::new(),
            zone,
            host: env.host,
            dir: env.dir,
            epoch: env.epoch,
            events: env.events,
            writable: env.writable,
            sessions_counted: 0,
            cfg: env.cfg,
            metrics: env.metrics,
            clock: env.clock,
            relays: HashMap::new(),
            routes: Routes::new(),
            violation_logs: LogLimiter::new(Duration::from_secs(10), 10_000),
            evidence: env.evidence,
            ledger: env.ledger,
            analytics: env.analytics,
            sampler: Default::default(),
        }
    }

    /// Whether this origin may still write (its lease cannot have lapsed).
    fn may_write(&self) -> bool {
        self.writable
            .borrow()
            .is_none_or(|until| Instant::now() < until)
    }

    /// When writing must stop (far away without a lease).
    fn write_deadline(&self) -> Instant {
        self.writable
            .borrow()
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600))
    }

    fn now_us(&self) -> u64 {
        self.clock.now_us()
    }

    fn deadline(&self) -> Instant {
        let due = self
            .core
            .poll_timeout()
            .saturating_sub(self.cfg.base_unix_us);
        self.clock.start + Duration::from_micros(due)
    }

    pub(crate) async fn run(
        mut self,
        mut rx: mpsc::Receiver<Cmd>,
        mut shutdown: watch::Receiver<bool>,
    ) -> Result<(), JournalError> {
        let world = self.host;
        let result = self.serve(&mut rx, &mut shutdown).await;
        let result = result.and_then(|()| self.core.flush());
        self.metrics.sessions.dec_by(self.sessions_counted);
        self.metrics.standbys.dec_by(self.standbys.len() as i64);
        self.metrics
            .replication_lag_ticks
            .dec_by(self.lag_counted.0);
        self.metrics
            .replication_lag_bytes
            .dec_by(self.lag_counted.1);
        self.events.send(WorldEvent::Stopped {
            world,
            error: result.as_ref().err().map(ToString::to_string),
        });
        info!(%world, "world stopped; journal flushed");
        result
    }

    async fn serve(
        &mut self,
        rx: &mut mpsc::Receiver<Cmd>,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<(), JournalError> {
        let mut sweep = tokio::time::interval(Duration::from_secs(1));
        loop {
            if !self.may_write() {
                // The lease may have lapsed: another origin may own the world by
                // now, so this one neither ticks nor answers until it can tell.
                warn!(world = %self.host, "lease unsure: world paused");
                if !self.paused(rx, shutdown).await {
                    return Ok(());
                }
                info!(world = %self.host, "lease renewed: world resumed");
                // Do not replay the paused time as a burst of ticks.
                let now = self.now_us();
                self.core.rebase(now);
                for cmd in std::mem::take(&mut self.deferred) {
                    self.handle(cmd);
                }
                continue;
            }
            // An empty waiting room sleeps until someone comes (no ticks: an
            // idle room costs nothing but its memory).
            let idle = self.core.idle();
            let deadline = if idle {
                Instant::now() + Duration::from_secs(3600)
            } else {
                self.deadline()
            };
            let write_deadline = self.write_deadline();
            tokio::select! {
                biased;
                _ = shutdown.changed() => return Ok(()),
                _ = self.writable.changed() => continue,
                () = tokio::time::sleep_until(write_deadline) => continue,
                () = tokio::time::sleep_until(deadline), if !idle && self.handover.is_none() => {
                    if !self.may_write() {
                        continue;
                    }
                    let t = std::time::Instant::now();
                    let now = self.now_us();
                    self.core.handle_timeout(now)?;
                    self.metrics.ticks.inc();
                    let took = t.elapsed();
                    self.metrics.tick_seconds.observe(took.as_secs_f64());
                    self.metrics.tick_busy_us.inc_by(took.as_micros() as u64);
                    self.replicate();
                    self.ticked = true;
                }
                cmd = rx.recv() => match cmd {
                    Some(Cmd::Stop) | None => return Ok(()),
                    Some(cmd) => {
                        if idle {
                            // Ticks resume one tick from now, not from when the
                            // room went idle.
                            let now = self.now_us();
                            self.core.rebase(now);
                        }
                        self.handle(cmd);
                    }
                },
                _ = sweep.tick(), if !idle => self.sweep_orphans(),
            }
            self.route();
            // After every change: sessions leave as well as arrive.
            let now = self.routes.sessions() as i64;
            self.metrics.sessions.inc_by(now - self.sessions_counted);
            self.sessions_counted = now;
        }
    }

    /// Waits, fenced, until writing is safe again (`false`: stop the world).
    /// Only what changes nothing in the world is handled meanwhile (status,
    /// links and standbys coming and going); relay messages wait, bounded by
    /// the mailbox size, and are handled on resuming (or dropped with the
    /// world if it was taken over elsewhere).
    async fn paused(
        &mut self,
        rx: &mut mpsc::Receiver<Cmd>,
        shutdown: &mut watch::Receiver<bool>,
    ) -> bool {
        while !self.may_write() {
            tokio::select! {
                _ = shutdown.changed() => return false,
                r = self.writable.changed() => if r.is_err() { return false },
                cmd = rx.recv() => match cmd {
                    None | Some(Cmd::Stop) => return false,
                    Some(cmd @ (Cmd::Msg { .. } | Cmd::End(_))) => {
                        if self.deferred.len() < self.cfg.mailbox {
                            self.deferred.push(cmd);
                        } else {
                            OriginMetrics::count(&self.metrics.link_errors, "dropped_while_fenced");
                        }
                    }
                    Some(cmd) => self.handle(cmd),
                },
            }
        }
        true
    }

    fn handle(&mut self, cmd: Cmd) {
        match cmd {
            Cmd::RelayUp {
                id,
                relay,
                conn,
                lanes,
            } => {
                self.relays.insert(
                    id,
                    RelayState {
                        relay,
                        conn,
                        lanes,
                        cut: false,
                    },
                );
                self.routes.handle_relay_up(id);
                self.announce(Some(id));
            }
            Cmd::RelayDown { id } => {
                self.relays.remove(&id);
                self.routes.handle_relay_down(Instant::now().into_std(), id);
                self.update_feed();
            }
            Cmd::Epoch(epoch) => {
                self.epoch = epoch;
                self.announce(None);
            }
            Cmd::End(reason) => self.core.handle_end(&reason),
            // Handled by the loop.
            Cmd::Stop => {}
            Cmd::Msg { id, msg } if self.handover.is_some() => {
                // Leaving: what arrives now is for the next owner (relays
                // re-open the sessions there; unanswered actions are
                // answered "unknown" by them).
                if self.deferred.len() < self.cfg.mailbox {
                    self.deferred.push(Cmd::Msg { id, msg });
                }
            }
            Cmd::Msg { id, msg } => self.handle_msg(id, msg),
            Cmd::Zone(msg) => self.zone_msg(&msg),
            Cmd::Handover(reply) => {
                self.replicate();
                if self.standbys.is_empty() {
                    let _ = reply.send(Err(format!(
                        "no standby follows {}: nowhere to hand it over to",
                        self.host
                    )));
                    return;
                }
                info!(world = %self.host, tick = self.core.tick(), "handing over: ticks stop");
                self.handover = Some((self.core.tick(), Some(reply)));
                self.check_handover();
            }
            Cmd::StandbyUp {
                id,
                node,
                epoch,
                link,
            } => self.standby_up(id, node, epoch, link),
            Cmd::StandbyAck {
                id,
                tick,
                hash,
                epoch,
                cosigs,
            } => {
                if epoch != self.epoch {
                    return;
                }
                if self.cosigs.len() + cosigs.len() > MAX_COSIGS {
                    // Acknowledgements of batches already sent: nothing to attach.
                    self.cosigs.clear();
                }
                for c in cosigs {
                    self.cosigs.insert((c.channel, c.seq), c.signature);
                }
                self.metrics.standby_acks.inc();
                if let AckVerdict::Diverged {
                    tick,
                    primary,
                    standby,
                } = self.gate.handle_ack(id, tick, hash)
                {
                    self.metrics.divergences.inc();
                    warn!(world = %self.host, tick, %primary, %standby, "standby disagrees: critical outcomes of this world are no longer confirmed");
                    self.report_suspect();
                }
                self.check_handover();
            }
            Cmd::StandbyDiverged { id, evidence } => self.standby_diverged(id, evidence),
            Cmd::StandbyDown { id } => {
                self.comparing.remove(&id);
                if self.standbys.contains_key(&id) {
                    self.gate.handle_standby_down(id);
                    self.standbys.remove(&id);
                    self.metrics.standbys.dec();
                }
            }
            Cmd::Status(reply) => drop(reply.send(self.status())),
        }
    }

    fn error(&mut self, id: LinkId, code: ErrorCode, message: String) {
        warn!(?code, %message, "link error");
        self.send(id, 0, frame(&LinkMsg::Error(ErrorMsg { code, message })));
    }

    fn handle_msg(&mut self, id: LinkId, msg: LinkMsg) {
        match msg {
            LinkMsg::SessionOpen {
                session,
                player,
                world,
                role,
                team,
                resume_from,
            } => {
                if world != self.host {
                    OriginMetrics::count(&self.metrics.link_errors, "unknown_world");
                    let msg = format!("{session}: this origin hosts {}, not {world}", self.host);
                    return self.error(id, ErrorCode::UnknownWorld, msg);
                }
                if self.core.has_session(session) {
                    self.resume(id, session, &resume_from);
                    if let Some(to) = self.core.moved_to(session) {
                        // Away from the home zone: its world and team
                        // channels resume here, the rest where its avatar is.
                        self.tell_away(id, session, to);
                    }
                } else {
                    if role == skylane_proto::Role::Player {
                        self.endow(&player);
                    }
                    match self.core.handle_join(session, &player, role, team) {
                        Ok(_) => {
                            self.routes.attach(Instant::now().into_std(), session, id);
                            if !resume_from.is_empty() {
                                self.resume_expired(id, session, &resume_from);
                            }
                        }
                        Err(e @ (JoinError::Full | JoinError::Ended)) => {
                            let code = if e == JoinError::Full {
                                ErrorCode::WorldFull
                            } else {
                                ErrorCode::WorldEnded
                            };
                            OriginMetrics::count(&self.metrics.link_errors, "join_refused");
                            self.dir.forget_session(session);
                            let reason = format!("{session}: {e}");
                            self.send(
                                id,
                                0,
                                frame(&LinkMsg::SessionRefused {
                                    session,
                                    code,
                                    reason,
                                }),
                            );
                        }
                        Err(JoinError::Moved(to)) => self.tell_moved(id, session, to),
                        Err(e) => {
                            OriginMetrics::count(&self.metrics.link_errors, "join_refused");
                            self.dir.forget_session(session);
                            self.error(id, ErrorCode::Unexpected, format!("{session}: {e}"));
                            self.send(id, 0, frame(&LinkMsg::SessionClose { session }));
                        }
                    }
                }
            }
            LinkMsg::EdgeReport {
                session,
                player,
                rule,
                evidence,
            } => self.edge_report(id, session, player, rule, evidence),
            LinkMsg::SessionClose { session } => {
                if self.routes.relay_of(session) == Some(id) {
                    self.routes.detach(session);
                    self.core.handle_leave(session);
                    self.dir.forget_session(session);
                }
            }
            LinkMsg::Action { session, action } => {
                if self.routes.relay_of(session) == Some(id) {
                    self.tap_action(session, &action);
                    self.core.handle_action(session, action);
                } else if self.core.moved_to(session).is_some() {
                    self.moved_action(id, session, action.seq);
                } else {
                    OriginMetrics::count(&self.metrics.link_errors, "unknown_session");
                    self.error(
                        id,
                        ErrorCode::UnknownSession,
                        format!("{session} is not open on this link"),
                    );
                }
            }
            LinkMsg::FeedSubscribe { .. } => {
                if self.routes.set_feed(id, true) {
                    // Asked again (the relay lost track): a keyframe to restart from.
                    let now = self.now_us();
                    self.core.set_feed(false, now);
                }
                self.update_feed();
            }
            LinkMsg::FeedUnsubscribe { .. } => {
                self.routes.set_feed(id, false);
                self.update_feed();
            }
            other => {
                OriginMetrics::count(&self.metrics.link_errors, "unexpected");
                self.error(
                    id,
                    ErrorCode::Unexpected,
                    format!("unexpected message {}", super::link::variant(&other)),
                );
            }
        }
    }

    /// The engine produces the spectator feed while any relay wants it.
    fn update_feed(&mut self) {
        let now = self.now_us();
        // A zone other than the home feeds the home zone while it asks.
        let on = self.routes.feed_wanted() || self.zone_feed_wanted(now / 1000);
        self.core.set_feed(on, now);
        self.route();
        self.tell_zones_feed(now / 1000);
    }

    fn sweep_orphans(&mut self) {
        let now = Instant::now().into_std();
        for s in self.routes.poll_expired(now, self.cfg.session_grace) {
            self.core.handle_leave(s);
            self.dir.forget_session(s);
            debug!(session = %s, "session grace expired");
        }
    }

    fn send(&mut self, id: LinkId, lane: usize, frame: Option<Bytes>) {
        let Some(frame) = frame else { return };
        let Some(r) = self.relays.get_mut(&id) else {
            return;
        };
        if r.cut {
            return;
        }
        let Some(l) = r.lanes.get(lane) else { return };
        // A closed lane means the connection is going; `RelayDown` follows.
        if l.push(frame, self.cfg.link_queue_bytes) == Err(LaneRefused::Full) {
            // The whole budget behind: drop the relay once; its sessions can resume.
            r.cut = true;
            self.metrics.slow_relays.inc();
            warn!(
                relay = %r.relay,
                lane,
                lane_bytes = l.queued(),
                link_bytes = l.link_queued(),
                "relay too slow: its link queue is full; disconnecting"
            );
            r.conn.close(2u32.into(), b"too slow");
        }
    }

    /// Engine outputs through the gate: a conflict or a rejection leaves at
    /// once (nothing was kept), everything else when its tick is durable
    /// (outputs between ticks belong to the next one).
    fn route(&mut self) {
        // Outputs of the tick that just ran belong to it; outputs of an input
        // between ticks to the next one.
        let tag = self.core.tick() + u64::from(!std::mem::take(&mut self.ticked));
        while let Some(out) = self.core.poll_output() {
            // A crossing starts its handoff now, from the state it reports:
            // held back, the entity could change (a move applied) before its
            // `Out` is journaled, and the target would get a stale copy. The
            // `Out` message itself waits for its tick's durability.
            let out = match out {
                Output::Crossing { transfer, to } => {
                    self.crossing(transfer, to);
                    continue;
                }
                other => other,
            };
            let kept = match &out {
                Output::Result { result, .. } => {
                    matches!(result.outcome, skylane_proto::Outcome::Applied { .. })
                }
                _ => true,
            };
            if !kept {
                self.emit(out);
                continue;
            }
            // An applied result of a tick that already ran belongs to it.
            let tick = match &out {
                Output::Result { result, .. } => match result.outcome {
                    skylane_proto::Outcome::Applied { tick } => tick,
                    _ => tag,
                },
                Output::Batch(b) => b.tick,
                Output::Movement(m) => m.tick,
                _ => tag,
            };
            let critical = matches!(out, Output::Result { .. });
            self.gate.hold(tick, critical, out);
        }
        while let Some(r) = self.gate.poll_released() {
            match r {
                Released::Confirmed(Output::Batch(b)) => {
                    let key = b.events.first().map(|e| (b.channel, e.seq));
                    match key.and_then(|k| self.cosigs.remove(&k)) {
                        Some(sig) => {
                            let mut cosigned = (*b).clone();
                            cosigned.cosignature = sig;
                            self.emit(Output::Batch(std::sync::Arc::new(cosigned)));
                        }
                        None => self.emit(Output::Batch(b)),
                    }
                }
                Released::Confirmed(o) => self.emit(o),
                Released::Unconfirmed(Output::Result { session, result }) => {
                    OriginMetrics::count(&self.metrics.actions, "unconfirmed");
                    let result = skylane_proto::ActionResult {
                        seq: result.seq,
                        outcome: skylane_proto::Outcome::Unknown {
                            detail:
                                "a standby disagreed with this world's state: outcome not confirmed"
                                    .into(),
                        },
                    };
                    self.emit(Output::Result { session, result });
                }
                Released::Unconfirmed(o) => self.emit(o),
            }
        }
        while let Some(id) = self.gate.poll_lagging() {
            self.cut_standby(id, "standby lags too far behind");
        }
        self.count_lag();
        self.zone_pump();
    }

    fn emit(&mut self, out: Output) {
        {
            match out {
                Output::Result { session, result } => {
                    self.result_out(session, &result);
                    if let Some(id) = self.routes.relay_of(session) {
                        self.send(id, 0, frame(&LinkMsg::ActionResult { session, result }));
                    }
                }
                Output::Batch(batch) => {
                    let channel = batch.channel;
                    let targets = self.routes.relays_for(channel);
                    if targets.is_empty() {
                        return;
                    }
                    let bytes = frame(&LinkMsg::Events((*batch).clone()));
                    let top = batch
                        .events
                        .iter()
                        .map(|e| e.class)
                        .min_by_key(|c| c.rank())
                        .unwrap_or(EventClass::State);
                    let lane = lane_for(channel, top, self.cfg.lanes);
                    for id in targets {
                        self.metrics.batches_sent.inc();
                        self.send(id, lane, bytes.clone());
                    }
                }
                Output::Movement(m) => {
                    let channel = m.channel;
                    let targets = self.routes.relays_for(channel);
                    if targets.is_empty() {
                        return;
                    }
                    let bytes = frame(&LinkMsg::Movement((*m).clone()));
                    let lane = lane_for(channel, EventClass::Movement, self.cfg.lanes);
                    for id in targets {
                        self.metrics.movement_frames_sent.inc();
                        self.send(id, lane, bytes.clone());
                    }
                }
                Output::Keyframe(kf) => {
                    let channel = kf.channel;
                    let targets = self.routes.relays_for(channel);
                    let bytes = frame(&LinkMsg::Keyframe(kf));
                    let lane = lane_for(channel, EventClass::State, self.cfg.lanes);
                    for id in targets {
                        self.send(id, lane, bytes.clone());
                    }
                }
                Output::Subscriptions {
                    session,
                    added,
                    removed,
                } => {
                    let Some(id) = self.routes.handle_subscriptions(session, &added, &removed)
                    else {
                        return;
                    };
                    self.send(
                        id,
                        0,
                        frame(&LinkMsg::Subscriptions {
                            session,
                            added,
                            removed,
                        }),
                    );
                }
                Output::Feed(f) => {
                    let targets = self.routes.feed_relays();
                    if targets.is_empty() {
                        return;
                    }
                    let bytes = frame(&LinkMsg::Feed((*f).clone()));
                    // One lane for the whole feed keeps its frames in order.
                    let lane = self.cfg.lanes.max(1);
                    for id in targets {
                        self.metrics.feed_frames_sent.inc();
                        self.send(id, lane, bytes.clone());
                    }
                }
                Output::Violation(v) => self.violation(&v),
                Output::Ledger { tick, txs } => self.ledger(tick, &txs),
                Output::Crossing { transfer, to } => self.crossing(transfer, to),
                Output::SessionMoved { session, to } => self.session_moved(session, to),
                Output::ToZone { to, msg } => self.send_to_zone(to, msg),
                Output::Phase(mut ws) => {
                    ws.epoch = self.epoch;
                    ws.host = self.host;
                    info!(world = %ws.world, phase = ?ws.phase, players = ws.players, result = ?ws.result, "world phase");
                    if ws.phase == WorldPhase::Ended {
                        self.metrics.worlds_ended.inc();
                    }
                    self.tap_phase(&ws);
                    let f = frame(&LinkMsg::WorldState(ws.clone()));
                    let targets: Vec<LinkId> = self.relays.keys().copied().collect();
                    for id in targets {
                        self.send(id, 0, f.clone());
                    }
                    self.events.send(WorldEvent::Phase(ws));
                }
                Output::Kick {
                    session,
                    player,
                    reason,
                    sanction,
                } => self.kick(session, &player, &reason, sanction),
            }
        }
    }
}
