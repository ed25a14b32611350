//! Prometheus metrics of an origin.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

pub use skylane_ops::KindLabel;

/// An origin's metrics.
#[derive(Debug, Clone)]
pub struct OriginMetrics {
    /// Actions by outcome (`applied`, `conflict`, `rejected_<code>`).
    pub actions: Family<KindLabel, Counter>,
    /// Violations by kind.
    pub violations: Family<KindLabel, Counter>,
    /// Link protocol errors by kind (decode errors, unknown sessions, unknown worlds).
    pub link_errors: Family<KindLabel, Counter>,
    /// Zone link messages by outcome (`sent`, `received`, `dropped`,
    /// `failed`, `unreachable`, `no_owner`, `unknown_zone`, `malformed`,
    /// `too_large`).
    pub zone_messages: Family<KindLabel, Counter>,
    /// New worlds whose named standbys did not follow within 3 s (they ran
    /// with fewer; unreplicated if none came).
    pub standby_waits_lapsed: Counter,
    /// Zone handoff steps by kind (`started`, `committed`, `aborted`,
    /// `imported`, `refused`, `failed`).
    pub handoffs: Family<KindLabel, Counter>,
    /// Time from a zone handoff's start (the crossing) to its commit at the
    /// source, seconds.
    pub handoff_seconds: Histogram,
    /// The same, in milliseconds, exact (what a demo or load report reads
    /// its percentiles from; 1 ms to 1 h).
    pub handoff_ms: std::sync::Arc<std::sync::Mutex<hdrhistogram::Histogram<u64>>>,
    /// Relays connected.
    pub relays: Gauge,
    /// Sessions in the world.
    pub sessions: Gauge,
    /// Ticks run.
    pub ticks: Counter,
    /// Batches sent to relays (one per relay per channel batch).
    pub batches_sent: Counter,
    /// Spectator feed frames sent to relays (one per relay per frame).
    pub feed_frames_sent: Counter,
    /// Movement frames sent to relays (one per relay per cell and tick).
    pub movement_frames_sent: Counter,
    /// Relays disconnected for falling too far behind.
    pub slow_relays: Counter,
    /// Sessions opened with cursors for a session that had expired: joined
    /// afresh, their client told what it will never receive.
    pub resumes_incomplete: Counter,
    /// Tick duration in seconds.
    pub tick_seconds: Histogram,
    /// Time spent ticking worlds, microseconds (summed over worlds: the
    /// share of a core the ticks take is its rate).
    pub tick_busy_us: Counter,
    /// Time standbys spent re-executing their primaries' ticks,
    /// microseconds.
    pub standby_busy_us: Counter,
    /// Time a standby spends re-executing one of its primary's ticks (with
    /// its hash check and attestation): the standby's cost per tick, to set
    /// beside the primary's `tick_seconds`.
    pub standby_tick_seconds: Histogram,
    /// Worlds running on this origin.
    pub worlds: Gauge,
    /// Worlds started on this origin.
    pub worlds_started: Counter,
    /// Worlds whose game ended here.
    pub worlds_ended: Counter,
    /// Control-plane operations that failed, by error kind.
    pub control_errors: Family<KindLabel, Counter>,
    /// 1 while this origin's control-plane lease is certainly alive (worlds
    /// tick), 0 while it may have lapsed (worlds paused).
    pub lease_writable: Gauge,
    /// Acknowledgements received from standbys (ticks re-executed elsewhere and agreed or not).
    pub standby_acks: Counter,
    /// Ticks whose state hash a standby's re-execution disagreed with (seen on either side).
    pub divergences: Counter,
    /// Worlds this origin took over as a standby (owner lease lapsed) or by handover.
    pub failovers: Counter,
    /// Standbys following worlds hosted here (connected).
    pub standbys: Gauge,
    /// Worlds this origin follows as a standby.
    pub following: Gauge,
    /// Ticks the slowest standby of each hosted world is behind, summed over
    /// the worlds (0 when every standby is caught up).
    pub replication_lag_ticks: Gauge,
    /// Replication log bytes sent to standbys and not yet acknowledged by all
    /// of them, summed over the hosted worlds.
    pub replication_lag_bytes: Gauge,
    /// Violations written to the violation store.
    pub violations_stored: Counter,
    /// Violations the store removed to stay within its bound (the oldest).
    pub violations_pruned: Counter,
    /// Violations not stored, by cause (`queue_full`, `writer_gone`, `storage`).
    pub violations_dropped: Family<KindLabel, Counter>,
    /// Sanctions (kicks with a cool-down, bans) sent to relays.
    pub sanctions: Family<KindLabel, Counter>,
    /// Economy transactions committed to the ledger.
    pub ledger_transactions: Counter,
    /// Transactions the ledger refused because a before balance was not its
    /// own (a wallet changed elsewhere meanwhile), since it was created.
    pub ledger_refused: Gauge,
    /// 1 while the ledger's totals are conserved (coins and items held equal
    /// what was minted), 0 otherwise.
    pub ledger_conserved: Gauge,
    /// Ledger failures by kind (`read`, `commit`, `skipped`).
    pub ledger_errors: Family<KindLabel, Counter>,
}

/// Percentiles of a latency, milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct LatencyMs {
    /// Samples.
    pub count: u64,
    /// Median.
    pub p50: u64,
    /// 99th percentile.
    pub p99: u64,
    /// Largest.
    pub max: u64,
}

impl OriginMetrics {
    /// The handoff latencies recorded so far (crossing → commit).
    pub fn handoff_latency(&self) -> LatencyMs {
        let Ok(h) = self.handoff_ms.lock() else {
            return LatencyMs::default();
        };
        LatencyMs {
            count: h.len(),
            p50: h.value_at_quantile(0.5),
            p99: h.value_at_quantile(0.99),
            max: h.max(),
        }
    }

    /// Records one handoff's latency.
    pub fn record_handoff(&self, ms: u64) {
        self.handoff_seconds.observe(ms as f64 / 1000.0);
        if let Ok(mut h) = self.handoff_ms.lock() {
            let _ = h.record(ms.max(1));
        }
    }

    /// Creates the metrics and registers them in `registry` under `skylane_origin_`.
    pub fn new(registry: &mut Registry) -> Self {
        let m = Self {
            actions: Family::default(),
            violations: Family::default(),
            link_errors: Family::default(),
            zone_messages: Family::default(),
            standby_waits_lapsed: Counter::default(),
            handoffs: Family::default(),
            handoff_seconds: Histogram::new(exponential_buckets(0.001, 2.0, 16)),
            handoff_ms: std::sync::Arc::new(std::sync::Mutex::new(
                hdrhistogram::Histogram::new_with_bounds(1, 3_600_000, 2)
                    .unwrap_or_else(|_| hdrhistogram::Histogram::new(2).expect("2 digits")),
            )),
            relays: Gauge::default(),
            sessions: Gauge::default(),
            ticks: Counter::default(),
            batches_sent: Counter::default(),
            feed_frames_sent: Counter::default(),
            movement_frames_sent: Counter::default(),
            slow_relays: Counter::default(),
            resumes_incomplete: Counter::default(),
            tick_seconds: Histogram::new(exponential_buckets(0.000_05, 2.0, 14)),
            tick_busy_us: Counter::default(),
            standby_busy_us: Counter::default(),
            standby_tick_seconds: Histogram::new(exponential_buckets(0.000_05, 2.0, 14)),
            worlds: Gauge::default(),
            worlds_started: Counter::default(),
            worlds_ended: Counter::default(),
            control_errors: Family::default(),
            lease_writable: Gauge::default(),
            standby_acks: Counter::default(),
            divergences: Counter::default(),
            failovers: Counter::default(),
            standbys: Gauge::default(),
            following: Gauge::default(),
            replication_lag_ticks: Gauge::default(),
            replication_lag_bytes: Gauge::default(),
            violations_stored: Counter::default(),
            violations_pruned: Counter::default(),
            violations_dropped: Family::default(),
            sanctions: Family::default(),
            ledger_transactions: Counter::default(),
            ledger_refused: Gauge::default(),
            ledger_conserved: Gauge::default(),
            ledger_errors: Family::default(),
        };
        let r = registry.sub_registry_with_prefix("skylane_origin");
        r.register("actions", "Actions by outcome", m.actions.clone());
        r.register(
            "violations",
            "Anti-cheat violations by kind",
            m.violations.clone(),
        );
        r.register(
            "link_errors",
            "Link protocol errors by kind",
            m.link_errors.clone(),
        );
        r.register(
            "zone_messages",
            "Zone link messages by outcome",
            m.zone_messages.clone(),
        );
        r.register("handoffs", "Zone handoff steps by kind", m.handoffs.clone());
        r.register(
            "standby_waits_lapsed",
            "New worlds whose named standbys did not follow within 3 s",
            m.standby_waits_lapsed.clone(),
        );
        r.register("relays", "Relays connected", m.relays.clone());
        r.register(
            "sessions",
            "Sessions in the worlds here",
            m.sessions.clone(),
        );
        r.register("ticks", "Ticks run", m.ticks.clone());
        r.register(
            "batches_sent",
            "Channel batches sent to relays",
            m.batches_sent.clone(),
        );
        r.register(
            "movement_frames_sent",
            "Movement frames (a cell's latest-wins states of a tick) sent to relays",
            m.movement_frames_sent.clone(),
        );
        r.register(
            "feed_frames_sent",
            "Spectator feed frames sent to relays",
            m.feed_frames_sent.clone(),
        );
        r.register(
            "slow_relays",
            "Relays dropped for falling behind",
            m.slow_relays.clone(),
        );
        r.register(
            "resumes_incomplete",
            "Resumes of expired sessions, joined afresh with a loss report",
            m.resumes_incomplete.clone(),
        );
        r.register("tick_seconds", "Tick duration", m.tick_seconds.clone());
        r.register(
            "tick_busy_us",
            "Microseconds spent ticking worlds",
            m.tick_busy_us.clone(),
        );
        r.register(
            "standby_busy_us",
            "Microseconds standbys spent re-executing ticks",
            m.standby_busy_us.clone(),
        );
        r.register(
            "handoff_seconds",
            "Zone handoffs from the crossing to the commit at the source",
            m.handoff_seconds.clone(),
        );
        r.register(
            "standby_tick_seconds",
            "Re-execution of one primary tick on a standby",
            m.standby_tick_seconds.clone(),
        );
        r.register("worlds", "Worlds running here", m.worlds.clone());
        r.register(
            "worlds_started",
            "Worlds started here",
            m.worlds_started.clone(),
        );
        r.register(
            "worlds_ended",
            "Worlds whose game ended here",
            m.worlds_ended.clone(),
        );
        r.register(
            "control_errors",
            "Control-plane operations that failed, by kind",
            m.control_errors.clone(),
        );
        r.register(
            "lease_writable",
            "1 while the control-plane lease is certainly alive",
            m.lease_writable.clone(),
        );
        r.register(
            "standby_acks",
            "Acknowledgements received from standbys",
            m.standby_acks.clone(),
        );
        r.register(
            "divergences",
            "Divergences between a primary and a standby",
            m.divergences.clone(),
        );
        r.register(
            "failovers",
            "Worlds taken over from a failed or handing-over primary",
            m.failovers.clone(),
        );
        r.register(
            "standbys",
            "Standbys following worlds hosted here",
            m.standbys.clone(),
        );
        r.register(
            "following",
            "Worlds followed here as a standby",
            m.following.clone(),
        );
        r.register(
            "replication_lag_ticks",
            "Replication lag of the hosted worlds, in ticks (summed)",
            m.replication_lag_ticks.clone(),
        );
        r.register(
            "replication_lag_bytes",
            "Replication log bytes not yet acknowledged by every standby (summed over worlds)",
            m.replication_lag_bytes.clone(),
        );
        r.register(
            "violations_stored",
            "Violations written to the violation store",
            m.violations_stored.clone(),
        );
        r.register(
            "violations_pruned",
            "Violations removed from the store to stay within its bound",
            m.violations_pruned.clone(),
        );
        r.register(
            "violations_dropped",
            "Violations not stored, by cause",
            m.violations_dropped.clone(),
        );
        r.register(
            "sanctions",
            "Sanctions sent to relays, by kind (kick, ban)",
            m.sanctions.clone(),
        );
        r.register(
            "ledger_transactions",
            "Economy transactions committed to the ledger",
            m.ledger_transactions.clone(),
        );
        r.register(
            "ledger_refused",
            "Ledger transactions refused for before balances that were not the ledger's",
            m.ledger_refused.clone(),
        );
        r.register(
            "ledger_conserved",
            "1 while the ledger's coins and items held equal what was minted",
            m.ledger_conserved.clone(),
        );
        r.register(
            "ledger_errors",
            "Ledger failures by kind",
            m.ledger_errors.clone(),
        );
        m
    }

    /// Counts one `kind` in `family`.
    pub fn count(family: &Family<KindLabel, Counter>, kind: impl Into<String>) {
        skylane_ops::count(family, kind);
    }
}
