//! The relay's actor: the one task that owns the cores ([`SessionTable`],
//! [`Hub`], [`RoutingTable`], [`Upstream`], [`Spectators`]) and the handles of
//! client connections and origin links. Every message of the mailbox is one
//! line of [`Actor::handle`] into a method here or in
//! `from_origin.rs` (the link's messages); the decisions are the cores'.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use quinn::{Connection, Endpoint};
use rustc_hash::FxHashMap as HashMap;
use skylane_proto::{
    Action, ActionResult, ChannelCursor, EventClass, GoAway, LinkMsg, Outcome, Ping, Refusal,
    RefusalCode, RejectCode, RelayId, Role, ServerMsg, SessionId, SpectatorSubscribe, Welcome,
    WorldId,
};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tracing::{debug, info};

use crate::hello::Admitted;
use crate::hub::Hub;
use crate::routing::{Link, OriginId, Path, RoutingTable};
use crate::scheduler::Outgoing;
use crate::session::{AttachError, ConnId, Presence, SessionTable, TicketClaims};
use crate::settings::OriginSpec;
use crate::status::{OriginStatus, RelayStatus, RouteStatus};
use crate::upstream::{Route, Upstream};

use super::lanes::LinkTx;
use super::mailbox::{Cmd, Shared};
use super::spectators::Spectators;
use super::writer::{frame, Outbox};

/// One origin's link as the actor sees it.
pub(crate) struct LinkState {
    pub(crate) spec: OriginSpec,
    /// The lanes of the connected link.
    pub(crate) tx: Option<LinkTx>,
    /// The path of the connected link.
    pub(crate) path: Option<Path>,
    /// Direct RTT (link or probe).
    pub(crate) rtt: Option<Duration>,
    /// The routing table's choice, which the link task follows.
    pub(crate) route: watch::Sender<Option<Path>>,
    pub(crate) task: tokio::task::JoinHandle<()>,
}

/// A client connection as the actor sees it.
pub(crate) struct ConnState {
    pub(crate) out: Arc<Outbox>,
    pub(crate) conn: Connection,
    ip: IpAddr,
}

/// The relay's state; see the module header.
pub(crate) struct Actor {
    pub(crate) shared: Arc<Shared>,
    pub(crate) sessions: SessionTable,
    pub(crate) hub: Hub,
    /// The newest movement state per entity per cell (what a client that
    /// starts seeing a cell gets first).
    pub(crate) cells: crate::movement::CellStates,
    pub(crate) routing: RoutingTable,
    pub(crate) upstream: Upstream,
    pub(crate) spectators: Spectators,
    pub(crate) links: HashMap<OriginId, LinkState>,
    pub(crate) conns: HashMap<ConnId, ConnState>,
    pub(crate) draining: Option<Instant>,
    pub(crate) peer_tasks: Vec<tokio::task::JoinHandle<()>>,
    /// One line per origin and error code every 10 s (with a count).
    pub(crate) error_logs: skylane_ops::LogLimiter<(OriginId, skylane_proto::ErrorCode)>,
    /// What the control plane says, and the epoch fence.
    pub(crate) directory: crate::directory::WorldDirectory,
    /// Hellos waiting for a world being placed.
    pub(crate) parked: Vec<super::cluster::Parked>,
    /// Following a control plane (worlds come and go at run time).
    pub(crate) clustered: bool,
    /// Each world's last lifecycle state, from its origin.
    pub(crate) world_states: HashMap<WorldId, skylane_proto::WorldState>,
    /// Sessions as the analytics rows tell them.
    pub(crate) session_log: super::analytics::SessionLog,
}

impl Actor {
    /// Runs until the mailbox closes or a drain finishes.
    pub(crate) async fn run(mut self, mut rx: mpsc::Receiver<Cmd>, endpoint: Endpoint) {
        let mut sweep = tokio::time::interval(Duration::from_millis(250));
        loop {
            let release = self.next_release();
            tokio::select! {
                cmd = rx.recv() => match cmd {
                    Some(cmd) => {
                        self.handle(cmd);
                        self.apply_route_changes();
                    }
                    None => break,
                },
                _ = sweep.tick() => {
                    if self.sweep() {
                        break;
                    }
                }
                () = async {
                    match release {
                        Some(t) => tokio::time::sleep_until(t).await,
                        None => std::future::pending().await,
                    }
                } => self.spectators.handle_timeout(self.shared.clock.unix_us()),
            }
            self.flush();
        }
        info!(relay = %self.shared.settings.info.id, "relay stopped");
        self.analytics_stopped();
        for t in &self.peer_tasks {
            t.abort();
        }
        for l in self.links.values() {
            l.task.abort();
            if let Some(tx) = &l.tx {
                tx.conn.close(0u32.into(), b"relay stopped");
            }
        }
        endpoint.close(0u32.into(), b"relay stopped");
    }

    /// One line per message.
    fn handle(&mut self, cmd: Cmd) {
        match cmd {
            Cmd::Hello {
                conn_id,
                ip,
                hello,
                out,
                conn,
                reply,
            } => self.hello(conn_id, ip, hello, ConnState { out, conn, ip }, reply),
            Cmd::Action { session, action } => self.action(session, action),
            Cmd::OriginPing { session, ping } => self.origin_ping(session, ping),
            Cmd::Bye { session } => self.bye(session),
            Cmd::Spectate { session, sub, tx } => self.spectate(session, &sub, tx),
            Cmd::Gone { conn_id } => self.gone(conn_id),
            Cmd::LinkUp { origin, path, link } => self.link_up(origin, path, link),
            Cmd::LinkDown {
                origin,
                path,
                failed,
            } => self.link_down(origin, path, failed),
            Cmd::FromOrigin { origin, body } => self.handle_origin_frame(origin, body),
            Cmd::DirectRtt { origin, rtt } => self.direct_rtt(origin, rtt),
            Cmd::PeerReport { peer, rtt, reports } => self.peer_report(peer, rtt, &reports),
            Cmd::PeerDown { peer } => self.routing.handle_link_down(now(), Link::Peer(peer)),
            Cmd::Drain => self.drain(),
            Cmd::Status(tx) => drop(tx.send(self.status())),
            Cmd::Cluster(view) => self.cluster(&view),
            Cmd::Revoked => self.revoked(),
            Cmd::EdgeCut {
                session,
                rule,
                evidence,
            } => self.edge_cut(session, rule, evidence),
        }
    }

    /// Hands the routing table's decisions to the link tasks.
    fn apply_route_changes(&mut self) {
        while let Some(change) = self.routing.poll_change() {
            info!(origin = %change.origin, from = ?change.from, to = ?change.to, "route change");
            self.shared.metrics.route_changes.inc();
            if let Some(l) = self.links.get(&change.origin) {
                l.route.send_replace(change.to);
            }
        }
    }

    /// Link pings, expiries and the drain; `true` when the relay should exit.
    fn sweep(&mut self) -> bool {
        self.retry_parked();
        let now = now();
        // Link pings: the origins' clock offsets (spectator delays).
        let sent_us = self.shared.clock.unix_us();
        for l in self.links.values() {
            if let Some(tx) = &l.tx {
                tx.send_control(&LinkMsg::Ping(Ping {
                    nonce: sent_us,
                    sent_us,
                }));
            }
        }
        self.sessions.handle_timeout(now);
        while let Some((s, _)) = self.sessions.poll_expired() {
            debug!(session = %s, "session grace expired");
            self.end_session(s, true, "expired");
        }
        self.routing.handle_timeout(now);
        self.apply_route_changes();
        self.shared.metrics.sessions.set(self.sessions.len() as i64);
        if let Some(deadline) = self.draining {
            let connected = self.conns.len();
            if connected == 0 || Instant::now() >= deadline {
                info!(left = connected, "drain finished");
                return true;
            }
        }
        false
    }

    /// A client passed the offline checks: a session for it (new or resumed),
    /// or a wait if its world is being placed.
    pub(crate) fn hello(
        &mut self,
        conn_id: ConnId,
        ip: IpAddr,
        hello: Admitted,
        conn: ConnState,
        reply: oneshot::Sender<Result<Welcome, Refusal>>,
    ) {
        if self.should_park(hello.world) {
            self.park(conn_id, ip, hello, conn, reply);
            return;
        }
        let who = (hello.player.clone(), hello.world, hello.role);
        let resumed = hello.resume.is_some();
        let r = self.attach(conn_id, ip, hello);
        if let Ok(w) = &r {
            self.analytics_started(w.session, who, resumed, conn.conn.rtt());
            self.conns.insert(conn_id, conn);
        }
        let _ = reply.send(r);
    }

    fn attach(&mut self, conn_id: ConnId, ip: IpAddr, h: Admitted) -> Result<Welcome, Refusal> {
        let refusal = |code, reason: String| Refusal { code, reason };
        if self.draining.is_some() {
            return Err(refusal(RefusalCode::Draining, "relay is draining".into()));
        }
        let Some(origin) = self.routing.origin_of(h.world) else {
            return Err(refusal(
                RefusalCode::UnknownWorld,
                format!("no origin hosts {}", h.world),
            ));
        };
        let session = match h.resume {
            Some(s) => {
                self.shared.metrics.resumes.inc();
                s
            }
            None => {
                self.shared.metrics.sessions_opened.inc();
                self.sessions.new_session_id()
            }
        };
        match self
            .sessions
            .handle_attach(session, &h.player, h.world, h.role, conn_id)
        {
            Ok(None) => {}
            Ok(Some(stale)) => {
                // The client came back before the relay noticed its old connection
                // die: newest wins, the old connection is closed.
                self.shared.metrics.takeovers.inc();
                debug!(%session, stale, "resume took the session over from a stale connection");
                if let Some(cs) = self.conns.get(&stale) {
                    cs.conn
                        .close(5u32.into(), b"session resumed on another connection");
                }
            }
            Err(AttachError::Full(n)) => {
                return Err(refusal(
                    RefusalCode::Overloaded,
                    format!("relay holds its maximum of {n} sessions"),
                ))
            }
        }
        if h.role == Role::Spectator {
            self.spectators.set_tier(session, h.min_delay_ms);
        }
        if h.role == Role::Player {
            self.hub.handle_open(session, h.world, &h.last_seen);
            // A zoned world's session opens at its home zone (which sends it
            // on to its avatar's zone), unless this relay still holds it and
            // knows where it is.
            let held = self
                .upstream
                .record_of(session)
                .filter(|r| self.directory.world_of(*r) == h.world)
                .and_then(|r| Some((r, self.routing.origin_of(r)?)));
            let (record, origin) = held.unwrap_or((self.directory.home_of(h.world), origin));
            self.upstream.handle_open(session, origin, record);
            self.open_upstream(session, h.last_seen);
        }
        // Spectators stay on the relay: the origin never hears of them, they are
        // served from the world's one feed (see `spectate`).
        Ok(Welcome {
            session,
            resume_ticket: self.ticket(session, &h.player, h.world, h.role),
            server_time_us: self.shared.clock.unix_us(),
            suggested_relays: self.shared.alternatives(ip, 3),
        })
    }

    /// A resume ticket for a session, valid for the configured time.
    fn ticket(
        &self,
        session: SessionId,
        player: &str,
        world: WorldId,
        role: Role,
    ) -> skylane_proto::ResumeTicket {
        let s = &self.shared.settings;
        s.tickets.issue(&TicketClaims {
            session,
            player: player.to_owned(),
            world,
            role,
            expires: self.shared.clock.unix_secs() + s.limits.ticket_ttl.as_secs(),
        })
    }

    /// The lanes of `origin`'s link, when it is connected.
    pub(crate) fn link(&self, origin: OriginId) -> Option<&LinkTx> {
        self.links.get(&origin).and_then(|l| l.tx.as_ref())
    }

    /// Tells the session's origin about it (new, or resumed from `cursors`).
    pub(crate) fn open_upstream(&mut self, session: SessionId, cursors: Vec<ChannelCursor>) {
        let Some(e) = self.sessions.get(session) else {
            return;
        };
        let (Some(origin), Some(record)) = (
            self.upstream.origin_of(session),
            self.upstream.record_of(session),
        ) else {
            return;
        };
        self.upstream.handle_reopen(session);
        let Some(link) = self.link(origin) else {
            return; // opened when the link comes up
        };
        link.send_control(&LinkMsg::SessionOpen {
            session,
            player: e.player.clone(),
            world: record,
            role: e.role,
            team: None,
            resume_from: cursors,
        });
    }

    /// Forgets a session (expired, left, kicked, moved away: `reason`), and
    /// tells its origin when `tell_origin`.
    pub(crate) fn end_session(&mut self, session: SessionId, tell_origin: bool, reason: &str) {
        self.analytics_ended(session, reason);
        // A zoned world's home zone keeps a session whose avatar is in
        // another zone (for the world and team channels): it is told too.
        let home = self
            .sessions
            .get(session)
            .map(|e| self.directory.home_of(e.world))
            .filter(|h| Some(*h) != self.upstream.record_of(session))
            .and_then(|h| self.routing.origin_of(h));
        self.hub.handle_close(session);
        self.leave_audience(session);
        self.spectators.forget_tier(session);
        if let Some(origin) = self.upstream.handle_close(session) {
            if let Some(link) = self.link(origin).filter(|_| tell_origin) {
                link.send_control(&LinkMsg::SessionClose { session });
            }
            if let Some(link) = home
                .filter(|h| *h != origin && tell_origin)
                .and_then(|h| self.link(h))
            {
                link.send_control(&LinkMsg::SessionClose { session });
            }
        }
    }

    /// A player's action (or one held for a zone move): forwarded on its
    /// session's feed, buffered, or refused when the buffer is full.
    pub(crate) fn action(&mut self, session: SessionId, action: Action) {
        let Some(origin) = self.upstream.origin_of(session) else {
            return;
        };
        let link_up = self.link(origin).is_some();
        match self.upstream.handle_action(session, action, link_up) {
            Route::Forward(a) => self.forward(origin, session, a),
            Route::Refused(seq) => self.send_to_client(
                session,
                EventClass::Critical,
                &ServerMsg::ActionResult(ActionResult {
                    seq,
                    outcome: Outcome::Rejected {
                        code: RejectCode::RateLimited,
                        detail:
                            "origin unreachable or the avatar changing zones; action buffer full"
                                .into(),
                    },
                }),
            ),
            Route::Buffered | Route::Unknown => {}
        }
    }

    /// Sends an action on `origin`'s link and remembers it until its outcome.
    pub(crate) fn forward(&mut self, origin: OriginId, session: SessionId, action: Action) {
        // Kept whole until its outcome (a zone move sends it on).
        let kept = (action.class != EventClass::Movement).then(|| action.clone());
        let sent = self
            .link(origin)
            .is_some_and(|link| link.send_action(session, action));
        if sent {
            self.shared.metrics.actions_forwarded.inc();
            if let Some(a) = kept {
                self.upstream.handle_forwarded(session, a);
            }
        }
    }

    fn origin_ping(&mut self, session: SessionId, ping: Ping) {
        // No link right now: the ping is lost, as on any path.
        if let Some(link) = self.upstream.origin_of(session).and_then(|o| self.link(o)) {
            link.send_control(&LinkMsg::SessionPing { session, ping });
        }
    }

    /// Closes the sessions of subjects revoked now (their connections with
    /// them; a resume would be refused at hello).
    pub(crate) fn revoked(&mut self) {
        let list = self.shared.settings.revocations.current();
        let bans = self.shared.settings.bans.current();
        let now_secs = self.shared.clock.unix_secs();
        let subjects: std::collections::HashSet<&str> = list
            .subjects(now_secs)
            .chain(bans.subjects(now_secs))
            .collect();
        if subjects.is_empty() {
            return;
        }
        let n = self.close_where(|p| subjects.contains(p), b"token revoked");
        self.shared.metrics.revoked_sessions.inc_by(n);
    }

    /// Ends every session of `subject` here (and at its origin), closing its
    /// connection with `why`.
    pub(crate) fn close_subject(&mut self, subject: &str, why: &[u8]) -> u64 {
        self.close_where(|p| p == subject, why)
    }

    fn close_where(&mut self, hit: impl Fn(&str) -> bool, why: &[u8]) -> u64 {
        let hit: Vec<(SessionId, Option<ConnId>)> = self
            .sessions
            .iter()
            .filter(|(_, e)| hit(e.player.as_str()))
            .map(|(s, e)| match e.presence {
                Presence::Connected(c) => (s, Some(c)),
                _ => (s, None),
            })
            .collect();
        let mut closed = 0;
        for (s, conn) in hit {
            if let Some(cs) = conn.and_then(|c| self.conns.get(&c)) {
                cs.conn.close(7u32.into(), why);
            }
            if self.sessions.handle_close(s).is_some() {
                self.end_session(s, true, "revoked");
                closed += 1;
            }
        }
        closed
    }

    /// The edge guard cut `session`: its subject cools down (refused at
    /// hello, a resume included) and the session ends here and at its origin.
    fn edge_cut(&mut self, session: SessionId, rule: &'static str, evidence: String) {
        let Some(player) = self.sessions.get(session).map(|e| e.player.clone()) else {
            return;
        };
        // The evidence first, for the origin's violation store.
        if let Some(link) = self.upstream.origin_of(session).and_then(|o| self.link(o)) {
            link.send_control(&LinkMsg::EdgeReport {
                session,
                player: player.clone(),
                rule: rule.to_owned(),
                evidence,
            });
        }
        let now = self.shared.clock.unix_us();
        let cool = self
            .shared
            .penalties
            .lock()
            .map(|mut p| p.handle_cut(now, &player))
            .unwrap_or_default();
        tracing::warn!(%session, %player, cool_down_s = cool.as_secs(), "subject cut at the edge: refused until its cool-down ends");
        if self.sessions.handle_close(session).is_some() {
            self.end_session(session, true, "cut");
        }
    }

    fn bye(&mut self, session: SessionId) {
        if self.sessions.handle_close(session).is_some() {
            self.end_session(session, true, "left");
        }
    }

    /// A client connection ended: its sessions wait for a resume, unless they
    /// were sent away (drain), in which case the origin follows them elsewhere.
    fn gone(&mut self, conn_id: ConnId) {
        let rtt = self.conns.remove(&conn_id).map(|c| c.conn.rtt());
        let ids = self.sessions.handle_disconnect(now(), conn_id);
        for s in &ids {
            if let Some(rtt) = rtt {
                self.session_log.handle_rtt(*s, rtt);
            }
            // A spectator resumes by subscribing again; until then it is
            // no one's audience.
            self.leave_audience(*s);
        }
        for s in ids {
            if self.upstream.sent_away(s) && self.sessions.handle_close(s).is_some() {
                self.end_session(s, false, "moved");
            }
        }
    }

    fn link_up(&mut self, origin: OriginId, path: Path, link: LinkTx) {
        self.shared.metrics.links_up.inc();
        if matches!(path, Path::Direct(_)) {
            let rtt = link.conn.rtt();
            self.routing.handle_rtt(now(), Link::Origin(origin), rtt);
            self.shared.set_direct(origin, Some(rtt));
        }
        if let Some(l) = self.links.get_mut(&origin) {
            l.tx = Some(link);
            l.path = Some(path);
        }
        // Every session of this origin resumes from what its client has been given.
        for s in self.upstream.sessions_of(origin) {
            let cursors = self.hub.cursors(s);
            self.open_upstream(s, cursors);
        }
        // And every spectator feed it carries.
        if let Some(tx) = self.link(origin) {
            for world in self.spectators.worlds_of(origin) {
                // A zoned world's feed comes from its home zone's record.
                let world = self.directory.home_of(world);
                tx.send_control(&LinkMsg::FeedSubscribe { world });
            }
        }
    }

    fn link_down(&mut self, origin: OriginId, path: Path, failed: bool) {
        // Its epoch declarations go with the link; it declares again when back.
        self.directory.handle_link_down(origin);
        let now = now();
        let was_up = self.links.get_mut(&origin).is_some_and(|l| {
            l.path = None;
            l.tx.take().is_some()
        });
        if was_up {
            self.shared.metrics.links_up.dec();
        }
        self.shared.set_direct(origin, None);
        if failed {
            match path {
                Path::Direct(_) => self.routing.handle_link_down(now, Link::Origin(origin)),
                Path::Via(peer, _) => self.routing.handle_peer_withdraw(now, peer, origin),
            }
        }
        // Sessions wait for the next link; actions forwarded on this one and not
        // answered may or may not have been applied: say so instead of leaving
        // the client waiting.
        for (session, seq) in self.upstream.handle_link_down(origin) {
            self.shared.metrics.actions_unknown.inc();
            self.send_to_client(
                session,
                EventClass::Critical,
                &ServerMsg::ActionResult(ActionResult {
                    seq,
                    outcome: Outcome::Unknown {
                        detail: "the relay's link to the origin failed before the outcome".into(),
                    },
                }),
            );
        }
    }

    fn direct_rtt(&mut self, origin: OriginId, rtt: Duration) {
        if let Some(l) = self.links.get_mut(&origin) {
            l.rtt = Some(rtt);
            // Published for matchmakers whatever the route: a link carried
            // through a peer is there because it is no slower than this.
            self.shared.set_direct(origin, Some(rtt));
        }
        self.routing.handle_rtt(now(), Link::Origin(origin), rtt);
    }

    fn peer_report(&mut self, peer: RelayId, rtt: Duration, reports: &[(OriginId, Duration)]) {
        let now = now();
        self.routing.handle_rtt(now, Link::Peer(peer), rtt);
        self.routing.handle_peer_reports(now, peer, reports);
    }

    /// A spectator subscribes (or changes its subscription) to its world's feed.
    fn spectate(&mut self, session: SessionId, sub: &SpectatorSubscribe, tx: mpsc::Sender<Bytes>) {
        let Some(world) = self.sessions.get(session).map(|e| e.world) else {
            return;
        };
        let now = self.shared.clock.unix_us();
        // A zoned world's feed is its home zone's (which merges every
        // zone's into the frames it signs as the world).
        let feed = self.directory.home_of(world);
        let result = match self.routing.origin_of(feed) {
            Some(origin) => self
                .spectators
                .subscribe(now, session, world, origin, sub, tx),
            None => Err(super::spectators::Refusal {
                code: skylane_proto::ErrorCode::UnknownWorld,
                label: "unknown_world",
                message: format!("no origin hosts {world}"),
            }),
        };
        if result.is_ok() {
            self.analytics_spectator(session, world, sub);
        }
        match result {
            Ok(Some(origin)) => {
                if let Some(link) = self.link(origin) {
                    link.send_control(&LinkMsg::FeedSubscribe { world: feed });
                }
            }
            Ok(None) => {}
            Err(r) => {
                skylane_ops::count(&self.shared.metrics.spectators_refused, r.label);
                self.send_to_client(
                    session,
                    EventClass::Critical,
                    &ServerMsg::Error(skylane_proto::ErrorMsg {
                        code: r.code,
                        message: r.message,
                    }),
                );
            }
        }
    }

    fn leave_audience(&mut self, session: SessionId) {
        if let Some((world, origin)) = self.spectators.leave(session) {
            let world = self.directory.home_of(world);
            if let Some(link) = self.link(origin) {
                link.send_control(&LinkMsg::FeedUnsubscribe { world });
            }
        }
    }

    /// When the next spectator frame is due.
    fn next_release(&self) -> Option<Instant> {
        let due = self.spectators.poll_timeout()?;
        let now = self.shared.clock.unix_us();
        Some(Instant::now() + Duration::from_micros(due.saturating_sub(now)))
    }

    pub(crate) fn send_to_client(
        &mut self,
        session: SessionId,
        class: EventClass,
        msg: &ServerMsg,
    ) {
        self.send_frame(session, class, frame(msg));
    }

    fn send_frame(&mut self, session: SessionId, class: EventClass, bytes: Bytes) {
        let Some(cs) = self.connection_of(session) else {
            return;
        };
        // A full outbox stops; its writer closes the connection as too slow (the
        // client resumes and its missed events are replayed). Nothing here may be
        // dropped: channel batches and keyframes keep the client's sequence whole
        // whatever their class (a movement batch waits rather than expire).
        let _ = cs.out.push(Outgoing {
            class,
            session,
            entity: None,
            droppable: false,
            bytes,
        });
    }

    /// The connection a session is attached to now.
    pub(crate) fn connection_of(&self, session: SessionId) -> Option<&ConnState> {
        match self.sessions.get(session).map(|e| e.presence) {
            Some(Presence::Connected(c)) => self.conns.get(&c),
            _ => None,
        }
    }

    /// Closes a session's connection a little later (after its last message).
    pub(crate) fn close_later(&self, session: SessionId, reason: &'static [u8]) {
        if let Some(cs) = self.connection_of(session) {
            let conn = cs.conn.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(200)).await;
                conn.close(5u32.into(), reason);
            });
        }
    }

    /// Hands the hub's deliveries to the clients' connections.
    fn flush(&mut self) {
        while let Some(d) = self.hub.poll_delivery() {
            self.send_frame(d.session, d.class, d.frame);
        }
    }

    /// Starts a drain: every client is sent away with alternatives and a ticket.
    fn drain(&mut self) {
        if self.draining.is_some() {
            return;
        }
        self.draining = Some(Instant::now() + self.shared.settings.limits.drain_deadline);
        info!(clients = self.conns.len(), "draining");
        let conns: Vec<(ConnId, IpAddr)> = self.conns.iter().map(|(c, s)| (*c, s.ip)).collect();
        for (c, ip) in conns {
            let alternatives = self.shared.alternatives(ip, 3);
            for s in self.sessions.sessions_of(c).to_vec() {
                let Some(e) = self.sessions.get(s) else {
                    continue;
                };
                let ticket = self.ticket(s, &e.player.clone(), e.world, e.role);
                self.upstream.handle_sent_away(s);
                self.shared.metrics.go_aways.inc();
                self.send_to_client(
                    s,
                    EventClass::Critical,
                    &ServerMsg::GoAway(GoAway {
                        reason: "relay draining".into(),
                        alternatives: alternatives.clone(),
                        resume_ticket: ticket,
                    }),
                );
            }
        }
    }

    fn status(&self) -> RelayStatus {
        let mut connected = 0;
        let mut detached = 0;
        for s in self.upstream.sessions() {
            match self.sessions.get(s).map(|e| e.presence) {
                Some(Presence::Connected(_)) => connected += 1,
                Some(Presence::Detached(_)) => detached += 1,
                None => {}
            }
        }
        let mut origins: Vec<OriginStatus> = self
            .links
            .iter()
            .map(|(id, l)| OriginStatus {
                id: id.0,
                addr: l.spec.addr.to_string(),
                up: l.tx.is_some(),
                rtt_ms: l.rtt.map(|r| r.as_secs_f64() * 1000.0),
            })
            .collect();
        origins.sort_by_key(|o| o.id);
        // Every world routed, configured or learnt from the control plane.
        let mut routes: Vec<RouteStatus> = Vec::new();
        for w in self.routing.worlds() {
            let path = match self.routing.route(w) {
                Some(Path::Direct(o)) => format!("direct:{}", o.0),
                Some(Path::Via(r, o)) => format!("via:{}:{}", r.0, o.0),
                None => "unreachable".into(),
            };
            routes.push(RouteStatus { world: w.0, path });
        }
        routes.sort_by_key(|r| r.world);
        let hs = self.hub.stats();
        RelayStatus {
            relay: self.shared.settings.info.id.0,
            region: self.shared.settings.info.region.clone(),
            draining: self.draining.is_some(),
            connections: self.conns.len(),
            sessions_connected: connected,
            sessions_detached: detached,
            origins,
            routes,
            batches_in: hs.batches_in,
            frames_out: hs.delivered,
        }
    }
}

/// The cores' clock: tokio's, so paused simulations drive it.
pub(crate) fn now() -> std::time::Instant {
    Instant::now().into_std()
}
