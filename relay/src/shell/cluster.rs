//! Following the control plane: the relay registers itself under a lease,
//! watches the cluster, and the actor applies what the [`WorldDirectory`](crate::WorldDirectory) derives
//! (links to new origins, worlds routed, removed, or pending). Hellos for a
//! world that exists but has no owner yet wait here, briefly, instead of
//! failing.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use skylane_control::{ClusterView, ControlError, LeaseKeeper, NodeInfo, SharedControl};
use skylane_proto::{LinkMsg, Refusal, RefusalCode, ServerMsg, Welcome, WorldId, WorldState};
use std::time::Instant;
use tokio::sync::{oneshot, watch};
use tracing::{info, warn};

use crate::directory::DirectoryChange;
use crate::hello::Admitted;
use crate::metrics::RelayMetrics;
use crate::routing::OriginId;
use crate::session::ConnId;
use crate::settings::OriginSpec;

use super::actor::{now, Actor, ConnState, LinkState};
use super::link::link_task;
use super::mailbox::{Cmd, Shared};

/// How long a hello for a world that is being placed waits for its owner.
pub(crate) const PENDING_WORLD_WAIT: Duration = Duration::from_secs(3);

/// Most hellos waiting for worlds being placed; more are refused at once.
pub(crate) const MAX_PARKED: usize = 4096;

/// A hello waiting for its world's owner.
pub(crate) struct Parked {
    conn_id: ConnId,
    ip: IpAddr,
    hello: Admitted,
    conn: ConnState,
    reply: oneshot::Sender<Result<Welcome, Refusal>>,
    until: Instant,
}

impl Actor {
    /// A new cluster view from the control plane.
    pub(crate) fn cluster(&mut self, view: &ClusterView) {
        self.clustered = true;
        let bans = crate::revocation::Revocations::from_bans(&view.bans);
        let old = self.shared.settings.bans.current();
        if *old != bans {
            info!(bans = bans.len(), "bans from the control plane");
            // A ban an operator lifted lifts the origins' sanctions that
            // went with it (a kick's cool-down is a ban on the list too).
            let now = self.shared.clock.unix_secs();
            let lifted: Vec<&str> = old
                .subjects(now)
                .filter(|s| !bans.names_subject(s))
                .collect();
            if let Ok(mut p) = self.shared.penalties.lock() {
                for s in lifted {
                    p.lift(s);
                }
            }
            self.shared.settings.bans.replace(bans);
            self.revoked();
        }
        for change in self.directory.handle_view(view) {
            match change {
                DirectoryChange::OriginAdded(o) => {
                    info!(origin = %o.id, addr = %o.addr, name = %o.tls_name, "origin learnt from the control plane");
                    let spec = OriginSpec {
                        id: o.id,
                        addr: o.addr,
                        server_name: o.tls_name,
                        worlds: Vec::new(),
                    };
                    self.shared.set_origin(o.id, Some(spec.clone()));
                    let (route, route_rx) = watch::channel(None);
                    let task = tokio::spawn(link_task(self.shared.clone(), spec.clone(), route_rx));
                    self.links.insert(
                        o.id,
                        LinkState {
                            spec,
                            tx: None,
                            path: None,
                            rtt: None,
                            route,
                            task,
                        },
                    );
                }
                DirectoryChange::OriginRemoved(id) => self.drop_origin(id),
                DirectoryChange::WorldOwned {
                    world,
                    origin,
                    epoch,
                } => {
                    info!(%world, %origin, epoch, "world owner");
                    self.routing.handle_world(world, origin);
                    self.move_world(world, origin);
                }
                DirectoryChange::WorldPending(world) => {
                    info!(%world, "world pending (no owner yet)");
                    self.routing.forget_world(world);
                }
                DirectoryChange::WorldRemoved(world) => {
                    info!(%world, "world removed");
                    self.routing.forget_world(world);
                    self.world_states.remove(&world);
                    self.world_states.retain(|_, ws| ws.world != world);
                    self.cells.forget_world(world);
                }
            }
        }
        if let (Some(content), Some(record)) = (
            &self.shared.content,
            view.records.get(skylane_content::MANIFEST_RECORD),
        ) {
            content.offer_record(record);
        }
        self.learn_peers(view);
        self.learn_directory(view);
        self.shared
            .metrics
            .worlds_known
            .set(view.worlds.len() as i64);
        self.retry_parked();
    }

    /// `world` has a new owner: its sessions held here re-open on it from
    /// what their clients have been given (the resume path), and actions in
    /// flight towards the old owner are answered "unknown".
    fn move_world(&mut self, world: WorldId, origin: OriginId) {
        let moving: Vec<skylane_proto::SessionId> = self
            .upstream
            .sessions()
            .filter(|s| self.upstream.origin_of(*s) != Some(origin))
            .filter(|s| self.upstream.record_of(*s) == Some(world))
            .collect();
        if !moving.is_empty() {
            info!(%world, %origin, sessions = moving.len(), "world moved: sessions re-open on its new owner");
        }
        for s in moving {
            for seq in self.upstream.handle_moved(s, origin) {
                self.shared.metrics.actions_unknown.inc();
                self.send_to_client(
                    s,
                    skylane_proto::EventClass::Critical,
                    &ServerMsg::ActionResult(skylane_proto::ActionResult {
                        seq,
                        outcome: skylane_proto::Outcome::Unknown {
                            detail: "the world moved to another origin before the outcome".into(),
                        },
                    }),
                );
            }
            let cursors = self.hub.cursors(s);
            self.open_upstream(s, cursors);
        }
    }

    /// The relays clients are offered: the configured ones and every relay
    /// registered with the control plane (with a location to place it by).
    fn learn_directory(&self, view: &ClusterView) {
        let learnt = view.nodes.values().filter_map(relay_info);
        let d = self.shared.settings.directory.with_learnt(learnt);
        let now = self.shared.directory.current();
        if now.relays() != d.relays() {
            info!(
                relays = d.relays().len(),
                "relay directory from the control plane"
            );
            self.shared
                .metrics
                .directory_relays
                .set(d.relays().len() as i64);
            self.shared.directory.replace(d);
        }
    }

    /// Peer relays registered with the control plane (as `relay-<id>`) that this
    /// relay does not measure yet: measured from now on, and usable as a
    /// forwarded path. A relay that leaves keeps its task, backing off (its
    /// routes are withdrawn as soon as its link fails).
    fn learn_peers(&mut self, view: &ClusterView) {
        if self.shared.settings.peer_tls.is_none() {
            return;
        }
        let me = self.shared.settings.info.id;
        for n in view.relays() {
            let Some(id) =
                n.id.strip_prefix("relay-")
                    .and_then(|i| i.parse::<u32>().ok())
            else {
                continue;
            };
            let Ok(addr) = n.addr.parse() else { continue };
            if id == me.0 || n.tls_name.is_empty() {
                continue;
            }
            let spec = crate::settings::PeerSpec {
                id: skylane_proto::RelayId(id),
                addr,
                server_name: n.tls_name.clone(),
            };
            if self.shared.add_peer(spec.clone()) {
                info!(peer = %spec.id, addr = %spec.addr, "peer relay learnt from the control plane");
                self.peer_tasks.push(tokio::spawn(super::peer::peer_task(
                    self.shared.clone(),
                    spec,
                )));
            }
        }
    }

    fn drop_origin(&mut self, id: OriginId) {
        self.shared.set_origin(id, None);
        if let Some(l) = self.links.remove(&id) {
            info!(origin = %id, "origin no longer needed; link closed");
            l.task.abort();
            if let Some(tx) = &l.tx {
                tx.conn.close(0u32.into(), b"origin no longer needed");
            }
        }
        self.directory.handle_link_down(id);
    }

    /// Should this hello wait for its world's owner?
    pub(crate) fn should_park(&self, world: WorldId) -> bool {
        // A world this relay has not heard of yet may just have been created
        // (a matchmaker hands out its id as soon as the control plane placed
        // it; this relay's watch can be a moment behind): wait for it too.
        self.routing.origin_of(world).is_none()
            && (self.directory.pending(world) || (self.clustered && !self.directory.knows(world)))
    }

    /// Parks a hello until its world has an owner or [`PENDING_WORLD_WAIT`] passes.
    pub(crate) fn park(
        &mut self,
        conn_id: ConnId,
        ip: IpAddr,
        hello: Admitted,
        conn: ConnState,
        reply: oneshot::Sender<Result<Welcome, Refusal>>,
    ) {
        if self.parked.len() >= MAX_PARKED {
            let _ = reply.send(Err(Refusal {
                code: RefusalCode::Overloaded,
                reason: "too many sessions waiting for worlds being placed".into(),
            }));
            return;
        }
        self.shared.metrics.hellos_parked.inc();
        self.parked.push(Parked {
            conn_id,
            ip,
            hello,
            conn,
            reply,
            until: now() + PENDING_WORLD_WAIT,
        });
    }

    /// Admits parked hellos whose world now has an owner; refuses those whose
    /// wait is over.
    pub(crate) fn retry_parked(&mut self) {
        if self.parked.is_empty() {
            return;
        }
        let t = now();
        for p in std::mem::take(&mut self.parked) {
            let world = p.hello.world;
            if self.routing.origin_of(world).is_some() {
                self.hello(p.conn_id, p.ip, p.hello, p.conn, p.reply);
            } else if t >= p.until {
                let _ = p.reply.send(Err(Refusal {
                    code: RefusalCode::UnknownWorld,
                    reason: format!("{world} has no owner yet; try again"),
                }));
            } else {
                self.parked.push(p);
            }
        }
    }

    /// An origin's lifecycle report for a world (and its epoch): fenced, kept,
    /// and told to the world's sessions.
    pub(crate) fn world_state(&mut self, origin: OriginId, ws: WorldState) {
        if !self
            .directory
            .handle_declared(origin, ws.world, ws.host, ws.epoch)
        {
            RelayMetrics::count(&self.shared.metrics.fenced_frames, "world_state");
            warn!(%origin, world = %ws.world, epoch = ws.epoch, "world state from an old owner refused");
            return;
        }
        let world = ws.world;
        // The owner of the world's feed record (its home zone when zoned):
        // spectators here are fed from it from now on.
        if self.directory.home_of(world) == ws.host {
            self.move_feed(world, origin);
        }
        let before = self.world_state_of(world);
        self.world_states.insert(ws.host, ws);
        let Some(now) = self.world_state_of(world) else {
            return;
        };
        // A new owner (a higher epoch) is news too: a client told the old
        // owner's state at its re-open must learn the new one's.
        let changed = before.is_none_or(|old| {
            old.phase != now.phase || old.players != now.players || old.epoch != now.epoch
        });
        if changed {
            let msg = ServerMsg::World(now);
            for s in self.sessions.in_world(world) {
                self.send_to_client(s, skylane_proto::EventClass::Critical, &msg);
            }
        }
    }

    /// `origin` declared itself the owner of `world`'s feed record: if this
    /// relay's spectators of the world were fed by another origin (the world
    /// failed over or was handed over), the feed moves. Done on the owner's
    /// own declaration, not on the control plane's word, so the world runs
    /// there before it is asked for the feed.
    fn move_feed(&mut self, world: WorldId, origin: OriginId) {
        let now = self.shared.clock.unix_us();
        let Some(old) = self.spectators.rebind(now, world, origin) else {
            return;
        };
        info!(%world, from = %old, to = %origin, "spectator feed moved to the world's new owner");
        let feed = self.directory.home_of(world);
        if let Some(link) = self.link(old) {
            link.send_control(&LinkMsg::FeedUnsubscribe { world: feed });
        }
        if let Some(link) = self.link(origin) {
            link.send_control(&LinkMsg::FeedSubscribe { world: feed });
        }
    }

    /// What clients are told of `world`: its owner's last report, or for a
    /// zoned world its home zone's with the players of every zone (clients
    /// never see zones).
    fn world_state_of(&self, world: WorldId) -> Option<WorldState> {
        let home = self.directory.home_of(world);
        let mut ws = self.world_states.get(&home)?.clone();
        if home != world {
            ws.players = self
                .world_states
                .values()
                .filter(|s| s.world == world)
                .map(|s| s.players)
                .sum();
            ws.host = world;
        }
        Some(ws)
    }

    /// The world's last state, to a session the origin just acknowledged.
    pub(crate) fn tell_world_state(&mut self, session: skylane_proto::SessionId) {
        let Some(world) = self.sessions.get(session).map(|e| e.world) else {
            return;
        };
        if let Some(ws) = self.world_state_of(world) {
            self.send_to_client(
                session,
                skylane_proto::EventClass::Critical,
                &ServerMsg::World(ws),
            );
        }
    }
}

/// A registered relay as clients are told of it (`relay-<id>`, with its
/// coordinates; `None` for another kind, another name or no location).
fn relay_info(node: &NodeInfo) -> Option<skylane_proto::RelayInfo> {
    if node.kind != skylane_control::NodeKind::Relay {
        return None;
    }
    let id = node.id.strip_prefix("relay-")?.parse().ok()?;
    let (lat, lon) = node.coords?;
    Some(skylane_proto::RelayInfo {
        id: skylane_proto::RelayId(id),
        region: node.region.clone(),
        addrs: vec![node.addr.clone()],
        lat: lat as f32,
        lon: lon as f32,
    })
}

/// Registers the relay and feeds every cluster change to the actor until the
/// relay stops.
pub(crate) async fn follow(
    shared: Arc<Shared>,
    control: SharedControl,
    node: NodeInfo,
    ttl: Duration,
) -> Result<(), ControlError> {
    let keeper = LeaseKeeper::start(control.clone(), ttl).await?;
    control.register(&node, keeper.lease()).await?;
    let mut rx = control.watch().await?;
    let mut lease = keeper.status();
    let mut node = node;
    let mut publish = tokio::time::interval(RTT_PUBLISH_EVERY);
    publish.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::spawn(async move {
        let _keeper = keeper;
        let mut view = rx.borrow_and_update().clone();
        loop {
            if shared
                .cmd
                .send(Cmd::Cluster(Box::new(view.clone())))
                .await
                .is_err()
            {
                return;
            }
            loop {
                tokio::select! {
                    r = rx.changed() => {
                        if r.is_err() { return }
                        view = rx.borrow_and_update().clone();
                        break;
                    }
                    r = lease.changed() => {
                        if r.is_err() { return }
                        // A new lease after the old one lapsed: register again.
                        let st = *lease.borrow_and_update();
                        if let Err(e) = control.register(&node, st.lease).await {
                            warn!(error = %e, "could not re-register with the control plane");
                        }
                    }
                    _ = publish.tick() => {
                        // This relay's RTT to each origin, for matchmakers.
                        let rtts = origin_rtts(&shared.direct_rtts(), &view);
                        if rtts_changed(&node.origin_rtt_ms, &rtts) {
                            node.origin_rtt_ms = rtts;
                            let lease = lease.borrow().lease;
                            if let Err(e) = control.register(&node, lease).await {
                                warn!(error = %e, "could not publish origin round trips");
                            }
                        }
                    }
                }
            }
        }
    });
    Ok(())
}

/// How often the relay checks what it publishes of its origin RTTs (it
/// writes only on a real change: a new origin, or a move by more than 2 ms
/// and 10%).
const RTT_PUBLISH_EVERY: Duration = Duration::from_secs(1);

/// The direct links' RTTs by the origins' node ids (an origin is matched by
/// the address it registered), milliseconds (at least 1).
fn origin_rtts(
    direct: &[(std::net::SocketAddr, Duration)],
    view: &ClusterView,
) -> std::collections::BTreeMap<String, u32> {
    view.origins()
        .filter_map(|o| {
            let addr: std::net::SocketAddr = o.addr.parse().ok()?;
            let rtt = direct.iter().find(|(a, _)| *a == addr)?.1;
            Some((o.id.clone(), (rtt.as_millis() as u32).max(1)))
        })
        .collect()
}

/// Whether what is published should change: another set of origins, or an
/// RTT that moved by more than 2 ms and 10%.
fn rtts_changed(
    old: &std::collections::BTreeMap<String, u32>,
    new: &std::collections::BTreeMap<String, u32>,
) -> bool {
    old.len() != new.len()
        || new.iter().any(|(k, v)| match old.get(k) {
            None => true,
            Some(o) => {
                let d = v.abs_diff(*o);
                d > 2 && d * 10 > *o
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origin_rtts_are_named_by_node_and_republished_only_on_a_real_change() {
        let mut view = ClusterView::default();
        let mut o = NodeInfo::relay(9, "10.0.0.5:4500", "localhost", "eu");
        o.kind = skylane_control::NodeKind::Origin;
        o.id = "origin-eu".into();
        view.nodes.insert(o.id.clone(), o);
        let direct = [
            (
                "10.0.0.5:4500".parse().unwrap(),
                Duration::from_micros(12_400),
            ),
            ("10.0.0.6:4500".parse().unwrap(), Duration::from_millis(40)),
        ];
        let rtts = origin_rtts(&direct, &view);
        assert_eq!(rtts.len(), 1, "an unregistered origin is not named");
        assert_eq!(rtts["origin-eu"], 12);
        let mut moved = rtts.clone();
        moved.insert("origin-eu".into(), 13);
        assert!(!rtts_changed(&rtts, &moved), "1 ms is noise");
        moved.insert("origin-eu".into(), 20);
        assert!(rtts_changed(&rtts, &moved));
        assert!(rtts_changed(&std::collections::BTreeMap::new(), &rtts));
    }
}
