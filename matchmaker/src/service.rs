//! The matchmaker service (tokio shell around [`Coordinator`]): one process
//! per instance, several instances per queue.
//!
//! Every instance serves the HTTP API (`api.rs`), registers itself in
//! the control plane under a lease, keeps its own rating book up to date
//! from the results of the worlds its queue's matches created, and
//! campaigns to lead the queue. The leader (one per queue, by lease) runs
//! the [`Coordinator`]: it places worlds and writes tickets as matched,
//! every write fenced on still leading. Tickets live in the control plane,
//! so a standby that wins the campaign after the leader's lease lapsed
//! takes the queue over with every ticket and its waiting time.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use skylane_control::{
    ClusterView, ControlError, LeaseKeeper, NodeInfo, NodeKind, Phase, RecordWrite, SharedControl,
};
use skylane_proto::matchmaking::{ApiError, ErrorKind};
use skylane_proto::token::{TokenSigner, TokenVerifier};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::book::{ranks_from_winner, RatingBook};
use crate::coordinator::{Action, Coordinator, CoordinatorStats, GameConfig, Placed};
use crate::matcher::Windows;
use crate::records::{decode, leader_role, matches_prefix, MatchRecord};

/// Looks a client's address up (GeoIP): its latitude and longitude.
pub type Locate = Arc<dyn Fn(IpAddr) -> Option<(f64, f64)> + Send + Sync>;

/// How long a placement waits for the chosen origin to claim the world.
pub const PLACE_WAIT: Duration = Duration::from_secs(5);

/// What an instance runs with.
#[derive(Clone)]
pub struct ServiceConfig {
    /// This instance's node id (unique in the cluster).
    pub node_id: String,
    /// The queue it serves (instances of one queue elect one leader).
    pub queue: String,
    /// Its region (informational, in its node record).
    pub region: String,
    /// The games it queues.
    pub games: Vec<GameConfig>,
    /// The matcher's windows.
    pub windows: Windows,
    /// Verifies players' tokens.
    pub verifier: TokenVerifier,
    /// Signs the per-world tokens of matched players (relays trust its key).
    pub signer: Arc<TokenSigner>,
    /// The audience of the tokens it issues.
    pub audience: String,
    /// How long an issued world token is valid.
    pub token_ttl: Duration,
    /// The lease TTL (leadership lapses this long after a crash).
    pub lease_ttl: Duration,
    /// The rating book's file (`None`: in a temporary file, lost on exit).
    pub ratings_db: Option<PathBuf>,
    /// GeoIP for tickets that carry neither measurements nor coordinates.
    pub locate: Option<Locate>,
    /// How long a placement waits for the world's owner.
    pub place_wait: Duration,
    /// Analytics rows (tickets settled, matches placed) go here.
    pub analytics: skylane_analytics::Emitter,
}

impl std::fmt::Debug for ServiceConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceConfig")
            .field("node_id", &self.node_id)
            .field("queue", &self.queue)
            .field("games", &self.games)
            .finish_non_exhaustive()
    }
}

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The control plane refused or is unreachable.
    #[error("control plane: {0}")]
    Control(#[from] ControlError),
    /// The rating book could not be opened.
    #[error("{0}")]
    Book(#[from] crate::book::BookError),
    /// The HTTP address could not be bound.
    #[error("binding {addr}: {source}")]
    Bind {
        /// Address.
        addr: SocketAddr,
        /// Cause.
        source: std::io::Error,
    },
    /// A bad configuration.
    #[error("{0}")]
    Config(String),
}

/// The service's metrics (`skylane_match_*`).
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    /// Tickets by outcome at the API (`queued`, or the refusal's kind).
    pub tickets: Family<skylane_ops::KindLabel, Counter>,
    /// Matches whose world became ready (this instance leading).
    pub matches: Counter,
    /// Placement attempts that failed.
    pub placement_failures: Counter,
    /// 1 while this instance leads its queue.
    pub leader: Gauge,
    /// Tickets waiting in the leader's matcher.
    pub waiting: Gauge,
    /// Match results applied to this instance's rating book.
    pub ratings_applied: Counter,
    /// World tokens issued to matched players.
    pub tokens_issued: Counter,
}

impl Metrics {
    /// Registers the metrics in `registry`.
    pub fn new(registry: &mut Registry) -> Self {
        let m = Self::default();
        let r = registry.sub_registry_with_prefix("skylane_match");
        r.register(
            "tickets",
            "Tickets by outcome at the API",
            m.tickets.clone(),
        );
        r.register(
            "matches",
            "Matches whose world became ready",
            m.matches.clone(),
        );
        r.register(
            "placement_failures",
            "World placements that failed (retried elsewhere up to 3 times)",
            m.placement_failures.clone(),
        );
        r.register(
            "leader",
            "1 while this instance leads its queue",
            m.leader.clone(),
        );
        r.register(
            "waiting",
            "Tickets waiting in the leader's matcher",
            m.waiting.clone(),
        );
        r.register(
            "ratings_applied",
            "Match results applied to the rating book",
            m.ratings_applied.clone(),
        );
        r.register(
            "tokens_issued",
            "World tokens issued to matched players",
            m.tokens_issued.clone(),
        );
        m
    }
}

/// What the API handlers and the tasks share.
pub(crate) struct Shared {
    pub(crate) cfg: ServiceConfig,
    pub(crate) control: SharedControl,
    pub(crate) view: watch::Receiver<ClusterView>,
    pub(crate) book: Arc<RatingBook>,
    pub(crate) metrics: Metrics,
    pub(crate) leading: AtomicBool,
    pub(crate) stats: Mutex<CoordinatorStats>,
}

/// A running instance.
#[derive(Debug)]
pub struct MatchService {
    addr: SocketAddr,
    shared: Arc<SharedHandle>,
    tasks: Vec<JoinHandle<()>>,
    keeper: Option<LeaseKeeper>,
    _tmp: Option<tempfile::TempDir>,
}

/// Read access to an instance's state.
pub(crate) struct SharedHandle(pub(crate) Arc<Shared>);

impl std::fmt::Debug for SharedHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("node", &self.0.cfg.node_id)
            .finish_non_exhaustive()
    }
}

/// Unix time, ms.
pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl MatchService {
    /// Starts an instance on `control`, serving its API on `listen`, with
    /// its metrics in `registry` (served at `/metrics`).
    pub async fn start(
        cfg: ServiceConfig,
        control: SharedControl,
        listen: SocketAddr,
        mut registry: Registry,
    ) -> Result<Self, ServiceError> {
        for g in &cfg.games {
            g.validate().map_err(ServiceError::Config)?;
        }
        if cfg.games.is_empty() {
            return Err(ServiceError::Config("no games to queue".into()));
        }
        let (book_path, tmp) = match &cfg.ratings_db {
            Some(p) => (p.clone(), None),
            None => {
                let dir = tempfile::tempdir().map_err(|e| ServiceError::Config(e.to_string()))?;
                (dir.path().join("ratings.redb"), Some(dir))
            }
        };
        let book = Arc::new(RatingBook::open(&book_path)?);
        let metrics = Metrics::new(&mut registry);
        let view = control.watch().await?;
        let keeper = LeaseKeeper::start(control.clone(), cfg.lease_ttl).await?;
        let shared = Arc::new(Shared {
            cfg,
            control: control.clone(),
            view,
            book,
            metrics,
            leading: AtomicBool::new(false),
            stats: Mutex::new(CoordinatorStats::default()),
        });
        let router =
            crate::api::router(shared.clone()).merge(skylane_ops::admin_router(Arc::new(registry)));
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .map_err(|source| ServiceError::Bind {
                addr: listen,
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| ServiceError::Bind {
            addr: listen,
            source,
        })?;
        let http = tokio::spawn(async move {
            let app = router.into_make_service_with_connect_info::<SocketAddr>();
            let _ = axum::serve(listener, app).await;
        });
        let info = NodeInfo {
            id: shared.cfg.node_id.clone(),
            kind: NodeKind::Matchmaker,
            addr: addr.to_string(),
            tls_name: String::new(),
            admin: Some(addr.to_string()),
            region: shared.cfg.region.clone(),
            coords: None,
            capacity: 0,
            games: shared.cfg.games.iter().map(|g| g.name.clone()).collect(),
            load: 0,
            attestation_key: None,
            origin_rtt_ms: Default::default(),
        };
        control.register(&info, keeper.lease()).await?;
        let lead = tokio::spawn(campaign(shared.clone(), keeper.status(), info));
        let ratings = tokio::spawn(apply_results(shared.clone()));
        info!(node = %shared.cfg.node_id, queue = %shared.cfg.queue, %addr, "matchmaker serving");
        Ok(Self {
            addr,
            shared: Arc::new(SharedHandle(shared)),
            tasks: vec![http, lead, ratings],
            keeper: Some(keeper),
            _tmp: tmp,
        })
    }

    /// Where its API listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Whether it leads its queue now.
    pub fn is_leader(&self) -> bool {
        self.shared.0.leading.load(Ordering::SeqCst)
    }

    /// The coordinator's counters in its current (or last) term as leader.
    pub fn stats(&self) -> CoordinatorStats {
        *self
            .shared
            .0
            .stats
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A player's rating in this instance's book.
    pub fn rating(&self, player: &str) -> Option<crate::Rating> {
        self.shared.0.book.rating(player).ok()
    }

    /// Stops: leadership and registration go at once (a standby takes over
    /// without waiting for the lease to lapse).
    pub async fn stop(mut self) {
        for t in &self.tasks {
            t.abort();
        }
        if let Some(k) = self.keeper.take() {
            k.stop().await;
        }
    }

    /// Stops as a crash would: nothing revoked, the lease lapses by itself.
    pub fn kill(mut self) {
        for t in &self.tasks {
            t.abort();
        }
        drop(self.keeper.take());
    }
}

impl Drop for MatchService {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Campaigns for the queue and leads while elected; re-registers after a
/// lease was lost and re-granted.
async fn campaign(
    shared: Arc<Shared>,
    lease: watch::Receiver<skylane_control::LeaseStatus>,
    info: NodeInfo,
) {
    let role = leader_role(&shared.cfg.queue);
    let node = shared.cfg.node_id.clone();
    let mut generation = lease.borrow().generation;
    let mut view = shared.view.clone();
    loop {
        let status = *lease.borrow();
        if status.generation != generation {
            generation = status.generation;
            if let Err(e) = shared.control.register(&info, status.lease).await {
                warn!(error = %e, "could not re-register");
            }
        }
        if status.writable {
            match shared.control.campaign(&role, &node, status.lease).await {
                Ok(leader) if leader == node => {
                    info!(%role, %node, "leading the queue");
                    shared.leading.store(true, Ordering::SeqCst);
                    shared.metrics.leader.set(1);
                    lead(&shared, &role, lease.clone()).await;
                    shared.leading.store(false, Ordering::SeqCst);
                    shared.metrics.leader.set(0);
                    shared.metrics.waiting.set(0);
                    info!(%role, %node, "no longer leading");
                    let _ = shared.control.resign(&role, &node).await;
                }
                Ok(_) => {}
                Err(e) => warn!(error = %e, "campaign failed"),
            }
        }
        // Campaign again once the role is free (or every second).
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            loop {
                if !view.borrow_and_update().leaders.contains_key(&role) {
                    return;
                }
                if view.changed().await.is_err() {
                    std::future::pending::<()>().await;
                }
            }
        })
        .await;
    }
}

/// Leads until the role is lost (another leader, the lease unsafe, or a
/// fenced write refused).
async fn lead(
    shared: &Arc<Shared>,
    role: &str,
    mut lease: watch::Receiver<skylane_control::LeaseStatus>,
) {
    let cfg = &shared.cfg;
    let node = cfg.node_id.as_str();
    let mut coord = Coordinator::new(&cfg.queue, &cfg.games, cfg.windows.clone());
    let (placed_tx, mut placed_rx) = mpsc::channel::<(u64, Placed)>(1024);
    let mut view = shared.view.clone();
    // The view is ordered like the store: once it shows this node leading,
    // it holds every write made before (the previous leader's included).
    // Until then it may lag the campaign; wait (bounded) rather than act on
    // an older view.
    let shown = tokio::time::timeout(cfg.lease_ttl * 2, async {
        loop {
            if view
                .borrow_and_update()
                .leaders
                .get(role)
                .map(String::as_str)
                == Some(node)
            {
                return true;
            }
            if view.changed().await.is_err() {
                return false;
            }
        }
    })
    .await;
    if !matches!(shown, Ok(true)) {
        return;
    }
    let mut dirty = true;
    let mut counted = CoordinatorStats::default();
    let far = Duration::from_secs(3600);
    loop {
        if !lease.borrow().writable {
            return;
        }
        if std::mem::take(&mut dirty) {
            let v = view.borrow_and_update();
            if v.leaders.get(role).map(String::as_str) != Some(node) {
                return;
            }
            coord.handle_view(now_ms(), &v);
        }
        coord.handle_timeout(now_ms());
        while let Some(action) = coord.poll_action() {
            match action {
                Action::Place { id, spec, hints } => {
                    let control = shared.control.clone();
                    let tx = placed_tx.clone();
                    let wait = cfg.place_wait;
                    tokio::spawn(async move {
                        let r = place(&control, spec, &hints, wait).await;
                        let _ = tx.send((id, r)).await;
                    });
                }
                Action::End { world } => {
                    warn!(%world, "ending a world this queue placed but never handed out");
                    if let Err(e) = shared.control.end_world(world).await {
                        warn!(%world, error = %e, "could not end an orphaned world");
                    }
                }
                Action::Write { puts, deletes } => {
                    let w = RecordWrite {
                        puts,
                        deletes,
                        leader: Some((role.to_owned(), node.to_owned())),
                    };
                    if !write(shared, w).await {
                        return;
                    }
                }
            }
        }
        while let Some(s) = coord.poll_settled() {
            report(cfg, s);
        }
        {
            // This term's coordinator counts from zero: the metrics take
            // what it added since the last look.
            let s = coord.stats();
            shared.metrics.matches.inc_by(s.placed - counted.placed);
            shared
                .metrics
                .placement_failures
                .inc_by(s.placement_failures - counted.placement_failures);
            counted = s;
            *shared
                .stats
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = s;
        }
        shared.metrics.waiting.set(coord.waiting() as i64);
        let next = coord
            .poll_timeout()
            .map_or(far, |t| Duration::from_millis(t.saturating_sub(now_ms())));
        tokio::select! {
            r = view.changed() => {
                if r.is_err() { return }
                dirty = true;
            }
            () = tokio::time::sleep(next) => {}
            Some((id, placed)) = placed_rx.recv() => coord.handle_placed(now_ms(), id, placed),
            r = lease.changed() => if r.is_err() { return },
        }
    }
}

/// A settled ticket's rows (one per player) or a match's row, to analytics.
fn report(cfg: &ServiceConfig, s: crate::coordinator::Settled) {
    use skylane_analytics::schema::{Match, Ticket};
    if !cfg.analytics.enabled() {
        return;
    }
    let at_ms = now_ms();
    match s {
        crate::coordinator::Settled::Ticket {
            ticket,
            game,
            players,
            outcome,
            waited_ms,
        } => {
            for player in players {
                cfg.analytics.emit(Ticket {
                    at_ms,
                    node: cfg.node_id.clone(),
                    ticket: ticket.0.to_string(),
                    player,
                    queue: format!("{}/{game}", cfg.queue),
                    outcome: outcome.into(),
                    wait_ms: waited_ms,
                });
            }
        }
        crate::coordinator::Settled::Match {
            world,
            game,
            players,
            worst_rtt_ms,
            skill_spread,
        } => cfg.analytics.emit(Match {
            at_ms,
            node: cfg.node_id.clone(),
            match_id: world.0.to_string(),
            queue: format!("{}/{game}", cfg.queue),
            world: world.0,
            players,
            worst_rtt_ms: f64::from(worst_rtt_ms),
            rating_spread: skill_spread,
        }),
    }
}

/// A fenced write, retried while the control plane is unreachable (`false`:
/// no longer leading, or unreachable for too long: step down).
async fn write(shared: &Shared, w: RecordWrite) -> bool {
    for attempt in 0..10u32 {
        match shared.control.write_records(w.clone()).await {
            Ok(()) => return true,
            Err(ControlError::NotLeader { leader, .. }) => {
                warn!(?leader, "fenced: another instance leads the queue");
                return false;
            }
            Err(e) => {
                warn!(error = %e, attempt, "writing tickets failed; retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    false
}

fn placement_error(e: &ControlError) -> ApiError {
    let kind = match e {
        ControlError::Placement(_) => ErrorKind::Placement,
        ControlError::Spec(_) | ControlError::Invalid(_) => ErrorKind::BadRequest,
        _ => ErrorKind::Unavailable,
    };
    ApiError::new(kind, e.to_string())
}

/// Creates the world and waits for its owner.
async fn place(
    control: &SharedControl,
    spec: skylane_control::WorldSpec,
    hints: &skylane_control::PlacementHints,
    wait: Duration,
) -> Placed {
    let rec = match control.create_world(spec, hints).await {
        Ok(r) => r,
        Err(e) => {
            return Placed::Failed {
                origin: None,
                error: placement_error(&e),
            }
        }
    };
    let id = rec.id;
    let owned = async {
        let mut rx = control.watch().await.ok()?;
        loop {
            if let Some(r) = rx.borrow_and_update().worlds.get(&id) {
                if let Some(o) = &r.owner {
                    return Some(o.node.clone());
                }
            }
            rx.changed().await.ok()?;
        }
    };
    match tokio::time::timeout(wait, owned).await {
        Ok(Some(origin)) => Placed::Ready { world: id, origin },
        _ => {
            // Nobody will play it: end it rather than leave it waiting.
            if let Err(e) = control.end_world(id).await {
                warn!(world = %id, error = %e, "could not end an unclaimed world");
            }
            Placed::Failed {
                error: ApiError::new(
                    ErrorKind::Placement,
                    format!("{id} was not claimed by {} within {wait:?}", rec.placed_on),
                ),
                origin: Some(rec.placed_on),
            }
        }
    }
}

/// Applies the results of ended worlds to this instance's rating book
/// (every instance: a standby's book is current when it takes over).
async fn apply_results(shared: Arc<Shared>) {
    let mut view = shared.view.clone();
    let prefix = matches_prefix(&shared.cfg.queue);
    let mut done = std::collections::HashSet::new();
    loop {
        let ended: Vec<(MatchRecord, Option<String>)> = {
            let v = view.borrow_and_update();
            v.records_under(&prefix)
                .filter_map(|(_, b)| decode::<MatchRecord>(b))
                .filter(|m| !done.contains(&m.world))
                .filter_map(|m| {
                    let w = v.worlds.get(&m.world)?;
                    let result = w.status.result.as_ref()?;
                    (w.status.phase == Phase::Ended).then(|| (m.clone(), result.winner.clone()))
                })
                .collect()
        };
        for (m, winner) in ended {
            let book = shared.book.clone();
            let ranks = ranks_from_winner(&m.teams, winner.as_deref());
            let teams = m.teams.clone();
            let world = m.world;
            let r = tokio::task::spawn_blocking(move || book.apply(world.0, &teams, &ranks)).await;
            match r {
                Ok(Ok(applied)) => {
                    done.insert(world);
                    if applied {
                        shared.metrics.ratings_applied.inc();
                    }
                }
                Ok(Err(e)) => {
                    warn!(%world, error = %e, "could not apply a result");
                    done.insert(world);
                }
                Err(_) => {}
            }
        }
        if view.changed().await.is_err() {
            return;
        }
    }
}
