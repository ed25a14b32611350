//! The routing table (pure: no I/O, no clock): the best path from this relay to the
//! origin hosting each world.
//!
//! Inputs are measurements: RTT and loss of this relay's links to origins and peer
//! relays (`handle_rtt`, `handle_loss`, `handle_link_down`), peers' reports of their
//! own RTT to origins (`handle_peer_report`), and which origin hosts which world
//! (`handle_world`). A path is direct, or through one peer relay when the sum is
//! lower (cost routing over measured link costs; loss adds a penalty).
//!
//! Switching has hysteresis, as Steam Datagram Relay and iroh do: a challenger must
//! beat the current path by `margin` (ratio) and by `min_gain`, continuously for
//! `hold`, before traffic moves. A path whose link is down is replaced at once.
//! Changes come out of [`RoutingTable::poll_change`], so the shell can move
//! sessions without dropping them.

use std::collections::VecDeque;
use std::fmt;
use std::time::{Duration, Instant};

use rustc_hash::FxHashMap as HashMap;
use skylane_proto::{RelayId, WorldId};

/// An origin server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OriginId(pub u32);

impl fmt::Display for OriginId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "origin-{}", self.0)
    }
}

/// A link this relay measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Link {
    /// The relay's own connection to an origin.
    Origin(OriginId),
    /// The relay's connection to a peer relay.
    Peer(RelayId),
}

/// A way to reach an origin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Path {
    /// Straight to the origin.
    Direct(OriginId),
    /// Through a peer relay.
    Via(RelayId, OriginId),
}

/// A change of path for an origin (sessions of its worlds should follow).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteChange {
    /// The origin.
    pub origin: OriginId,
    /// Previous path (`None` if there was none).
    pub from: Option<Path>,
    /// New path (`None` if the origin is unreachable).
    pub to: Option<Path>,
}

/// Routing settings. Defaults: a challenger must be at most 80% of the current cost
/// and at least 5 ms better, for 2 s; each 1% of loss counts as 2 ms; a link with no
/// measurement for 10 s is considered down.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RoutingConfig {
    /// Challenger cost must be below `margin × current`.
    pub margin: f64,
    /// And at least this much lower.
    pub min_gain: Duration,
    /// For this long without interruption.
    pub hold: Duration,
    /// Cost added per 1% of loss.
    pub loss_penalty_per_pct: Duration,
    /// A link without measurements for this long is down.
    pub stale_after: Duration,
}

impl Default for RoutingConfig {
    fn default() -> Self {
        Self {
            margin: 0.8,
            min_gain: Duration::from_millis(5),
            hold: Duration::from_secs(2),
            loss_penalty_per_pct: Duration::from_millis(2),
            stale_after: Duration::from_secs(10),
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct LinkStat {
    rtt: Duration,
    loss: f64,
    up: bool,
    seen: Instant,
}

#[derive(Debug, Clone, Copy)]
struct Choice {
    path: Path,
    challenger: Option<(Path, Instant)>,
}

/// This relay's view of the network.
#[derive(Debug, Default)]
pub struct RoutingTable {
    cfg: RoutingConfig,
    links: HashMap<Link, LinkStat>,
    peer_reports: HashMap<(RelayId, OriginId), (Duration, Instant)>,
    worlds: HashMap<WorldId, OriginId>,
    chosen: HashMap<OriginId, Choice>,
    changes: VecDeque<RouteChange>,
}

impl RoutingTable {
    /// An empty table.
    pub fn new(cfg: RoutingConfig) -> Self {
        Self {
            cfg,
            ..Self::default()
        }
    }

    /// Records that `origin` hosts `world`.
    pub fn handle_world(&mut self, world: WorldId, origin: OriginId) {
        self.worlds.insert(world, origin);
    }

    /// Every world routed, in no particular order.
    pub fn worlds(&self) -> impl Iterator<Item = WorldId> + '_ {
        self.worlds.keys().copied()
    }

    /// Forgets `world` (removed from the control plane).
    pub fn forget_world(&mut self, world: WorldId) {
        self.worlds.remove(&world);
    }

    /// Records a (smoothed) RTT measurement of one of this relay's links.
    pub fn handle_rtt(&mut self, now: Instant, link: Link, rtt: Duration) {
        let s = self.links.entry(link).or_insert(LinkStat {
            rtt,
            loss: 0.0,
            up: true,
            seen: now,
        });
        s.rtt = rtt;
        s.up = true;
        s.seen = now;
        self.evaluate(now);
    }

    /// Records the loss rate (0..=1) of one of this relay's links.
    pub fn handle_loss(&mut self, now: Instant, link: Link, loss: f64) {
        if let Some(s) = self.links.get_mut(&link) {
            s.loss = loss.clamp(0.0, 1.0);
            s.seen = now;
        }
        self.evaluate(now);
    }

    /// A link failed (connection lost): paths over it are replaced at once.
    pub fn handle_link_down(&mut self, now: Instant, link: Link) {
        if let Some(s) = self.links.get_mut(&link) {
            s.up = false;
        }
        self.evaluate(now);
    }

    /// A peer relay reports its RTT to an origin.
    pub fn handle_peer_report(
        &mut self,
        now: Instant,
        peer: RelayId,
        origin: OriginId,
        rtt: Duration,
    ) {
        self.peer_reports.insert((peer, origin), (rtt, now));
        self.evaluate(now);
    }

    /// A peer relay's full report: its RTT to each origin it reaches directly.
    /// Origins it no longer reports are withdrawn.
    pub fn handle_peer_reports(
        &mut self,
        now: Instant,
        peer: RelayId,
        reports: &[(OriginId, Duration)],
    ) {
        self.peer_reports
            .retain(|(p, o), _| *p != peer || reports.iter().any(|(r, _)| r == o));
        for (origin, rtt) in reports {
            self.peer_reports.insert((peer, *origin), (*rtt, now));
        }
        self.evaluate(now);
    }

    /// A path through `peer` to `origin` failed: forget the peer's report until
    /// it sends a new one.
    pub fn handle_peer_withdraw(&mut self, now: Instant, peer: RelayId, origin: OriginId) {
        self.peer_reports.remove(&(peer, origin));
        self.evaluate(now);
    }

    /// Re-evaluates with the passage of time (hold timers, stale links).
    pub fn handle_timeout(&mut self, now: Instant) {
        self.evaluate(now);
    }

    /// When a challenger's hold time ends or a link goes stale, whichever is first.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let holds = self
            .chosen
            .values()
            .filter_map(|c| c.challenger.map(|(_, since)| since + self.cfg.hold));
        let stale = self
            .links
            .values()
            .filter(|s| s.up)
            .map(|s| s.seen + self.cfg.stale_after);
        holds.chain(stale).min()
    }

    /// The next path change.
    pub fn poll_change(&mut self) -> Option<RouteChange> {
        self.changes.pop_front()
    }

    /// The current path to the origin hosting `world`.
    pub fn route(&self, world: WorldId) -> Option<Path> {
        let origin = self.worlds.get(&world)?;
        self.chosen.get(origin).map(|c| c.path)
    }

    /// The origin hosting `world`, if known.
    pub fn origin_of(&self, world: WorldId) -> Option<OriginId> {
        self.worlds.get(&world).copied()
    }

    /// The cost of a path now; `None` if it is unusable.
    pub fn cost(&self, now: Instant, path: Path) -> Option<Duration> {
        let link_cost = |l: Link| {
            let s = self.links.get(&l)?;
            let fresh = now.saturating_duration_since(s.seen) < self.cfg.stale_after;
            (s.up && fresh).then(|| s.rtt + self.cfg.loss_penalty_per_pct.mul_f64(s.loss * 100.0))
        };
        match path {
            Path::Direct(o) => link_cost(Link::Origin(o)),
            Path::Via(peer, o) => {
                let (rtt, seen) = self.peer_reports.get(&(peer, o))?;
                let fresh = now.saturating_duration_since(*seen) < self.cfg.stale_after;
                fresh.then_some(())?;
                Some(link_cost(Link::Peer(peer))? + *rtt)
            }
        }
    }

    fn candidates(&self, origin: OriginId) -> Vec<Path> {
        let mut out = vec![Path::Direct(origin)];
        let mut peers: Vec<RelayId> = self
            .peer_reports
            .keys()
            .filter(|(_, o)| *o == origin)
            .map(|(p, _)| *p)
            .collect();
        peers.sort();
        out.extend(peers.into_iter().map(|p| Path::Via(p, origin)));
        out
    }

    fn evaluate(&mut self, now: Instant) {
        let mut origins: Vec<OriginId> = self.worlds.values().copied().collect();
        origins.sort();
        origins.dedup();
        for origin in origins {
            let best = self
                .candidates(origin)
                .into_iter()
                .filter_map(|p| self.cost(now, p).map(|c| (p, c)))
                .min_by_key(|(_, c)| *c);
            let current = self.chosen.get(&origin).copied();
            let current_cost = current.and_then(|c| self.cost(now, c.path));
            match (current, current_cost, best) {
                // Nothing usable.
                (Some(c), None, None) => {
                    self.chosen.remove(&origin);
                    self.changes.push_back(RouteChange {
                        origin,
                        from: Some(c.path),
                        to: None,
                    });
                }
                // (Some, Some, None) cannot happen: a usable current path is itself
                // a candidate. Nothing to do either way.
                (None, _, None) | (Some(_), Some(_), None) => {}
                // No path yet, or the current one is down: take the best at once.
                (None, _, Some((p, _))) | (Some(_), None, Some((p, _))) => {
                    let from = current.map(|c| c.path);
                    self.chosen.insert(
                        origin,
                        Choice {
                            path: p,
                            challenger: None,
                        },
                    );
                    self.changes.push_back(RouteChange {
                        origin,
                        from,
                        to: Some(p),
                    });
                }
                (Some(mut c), Some(cur), Some((p, best_cost))) => {
                    let clearly_better = p != c.path
                        && best_cost.as_secs_f64() < cur.as_secs_f64() * self.cfg.margin
                        && cur.saturating_sub(best_cost) >= self.cfg.min_gain;
                    if !clearly_better {
                        c.challenger = None;
                    } else {
                        match c.challenger {
                            Some((q, since)) if q == p => {
                                if now.saturating_duration_since(since) >= self.cfg.hold {
                                    self.changes.push_back(RouteChange {
                                        origin,
                                        from: Some(c.path),
                                        to: Some(p),
                                    });
                                    c = Choice {
                                        path: p,
                                        challenger: None,
                                    };
                                }
                            }
                            _ => c.challenger = Some((p, now)),
                        }
                    }
                    self.chosen.insert(origin, c);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const W: WorldId = WorldId(1);
    const O: OriginId = OriginId(1);
    const P: RelayId = RelayId(9);

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn table(now: Instant) -> RoutingTable {
        let mut t = RoutingTable::new(RoutingConfig::default());
        t.handle_world(W, O);
        t.handle_rtt(now, Link::Origin(O), ms(100));
        t
    }

    #[test]
    fn direct_first_then_a_faster_peer_path_after_the_hold() {
        let t0 = Instant::now();
        let mut t = table(t0);
        assert_eq!(t.route(W), Some(Path::Direct(O)));
        assert_eq!(
            t.poll_change(),
            Some(RouteChange {
                origin: O,
                from: None,
                to: Some(Path::Direct(O))
            })
        );
        // Through the peer: 10 + 40 = 50 ms, clearly better, but must hold for 2 s.
        t.handle_rtt(t0, Link::Peer(P), ms(10));
        t.handle_peer_report(t0, P, O, ms(40));
        assert_eq!(t.route(W), Some(Path::Direct(O)));
        assert_eq!(t.poll_timeout(), Some(t0 + ms(2000)));
        t.handle_timeout(t0 + ms(1999));
        assert_eq!(t.route(W), Some(Path::Direct(O)));
        t.handle_timeout(t0 + ms(2000));
        assert_eq!(t.route(W), Some(Path::Via(P, O)));
        assert_eq!(t.poll_change().map(|c| c.to), Some(Some(Path::Via(P, O))));
    }

    #[test]
    fn a_short_improvement_does_not_switch() {
        let t0 = Instant::now();
        let mut t = table(t0);
        t.handle_rtt(t0, Link::Peer(P), ms(10));
        t.handle_peer_report(t0, P, O, ms(40));
        // The peer path gets worse before the hold ends: the challenge is dropped.
        t.handle_rtt(t0 + ms(1000), Link::Peer(P), ms(70));
        t.handle_timeout(t0 + ms(3000));
        assert_eq!(t.route(W), Some(Path::Direct(O)));
        // Small gains never switch (95 vs 100 ms).
        t.handle_rtt(t0 + ms(3000), Link::Peer(P), ms(55));
        t.handle_timeout(t0 + ms(9000));
        assert_eq!(t.route(W), Some(Path::Direct(O)));
    }

    #[test]
    fn a_failed_path_is_replaced_at_once_and_loss_counts() {
        let t0 = Instant::now();
        let mut t = table(t0);
        t.handle_rtt(t0, Link::Peer(P), ms(30));
        t.handle_peer_report(t0, P, O, ms(90));
        t.poll_change();
        t.handle_link_down(t0 + ms(10), Link::Origin(O));
        assert_eq!(
            t.route(W),
            Some(Path::Via(P, O)),
            "failover does not wait for the hold"
        );
        assert_eq!(
            t.poll_change(),
            Some(RouteChange {
                origin: O,
                from: Some(Path::Direct(O)),
                to: Some(Path::Via(P, O))
            })
        );
        // Everything down: unreachable.
        t.handle_link_down(t0 + ms(20), Link::Peer(P));
        assert_eq!(t.route(W), None);
        assert_eq!(t.poll_change().map(|c| c.to), Some(None));
        // Loss penalty: 100 ms with 20% loss costs 140 ms.
        let mut t = table(t0);
        t.handle_loss(t0, Link::Origin(O), 0.2);
        assert_eq!(t.cost(t0, Path::Direct(O)), Some(ms(140)));
    }

    #[test]
    fn stale_links_and_unknown_worlds() {
        let t0 = Instant::now();
        let mut t = table(t0);
        assert_eq!(t.route(WorldId(2)), None);
        t.handle_timeout(t0 + Duration::from_secs(11));
        assert_eq!(t.route(W), None, "no measurement for 10 s: down");
        t.handle_rtt(t0 + Duration::from_secs(12), Link::Origin(O), ms(100));
        assert_eq!(t.route(W), Some(Path::Direct(O)));
        assert_eq!(t.origin_of(W), Some(O));
    }

    #[test]
    fn a_full_report_withdraws_missing_origins_and_a_failed_via_is_forgotten() {
        let t0 = Instant::now();
        let mut t = table(t0);
        let _ = t.poll_change();
        t.handle_rtt(t0, Link::Peer(P), ms(10));
        t.handle_peer_reports(t0, P, &[(O, ms(20))]);
        // The direct link fails: through the peer at once.
        t.handle_link_down(t0, Link::Origin(O));
        assert_eq!(t.route(W), Some(Path::Via(P, O)));
        // The peer stops reaching the origin: nothing left.
        t.handle_peer_reports(t0, P, &[]);
        assert_eq!(t.route(W), None);
        // It reaches it again, then a forwarded link through it fails.
        t.handle_peer_reports(t0, P, &[(O, ms(20))]);
        assert_eq!(t.route(W), Some(Path::Via(P, O)));
        t.handle_peer_withdraw(t0, P, O);
        assert_eq!(t.route(W), None);
        let changes: Vec<_> = std::iter::from_fn(|| t.poll_change())
            .map(|c| c.to)
            .collect();
        assert_eq!(
            changes,
            vec![Some(Path::Via(P, O)), None, Some(Path::Via(P, O)), None]
        );
    }
}
