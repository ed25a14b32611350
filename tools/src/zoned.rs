//! The demo's zoned world: one arena world split into zones spread over the
//! deployment's origins, played by bots that spawn anywhere (a join opens at
//! the home zone and is handed to the spawn's zone) and walk across borders;
//! and what the report says of it: handoffs and their latency, sessions
//! moved by the relays, actions held through a move, every player in exactly
//! one zone, events lost or duplicated.

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use skylane_control::{PlacementHints, WorldSpec, ZoneSpec};
use skylane_origin::OriginMetrics;
use skylane_proto::zones::ZoneLayout;
use skylane_proto::{Role, WorldId};

use crate::bots::{BotPlan, Live};
use crate::fleet::{self, FleetOptions};
use crate::local::LocalNet;
use crate::report::merge;

/// What the zoned part of a demo runs.
#[derive(Debug, Clone, Copy)]
pub struct ZonedPlan {
    /// Zones across the map.
    pub cols: u16,
    /// Zones down the map.
    pub rows: u16,
    /// Bots in the zoned world.
    pub players: usize,
    /// How long they play.
    pub duration: Duration,
    /// Standbys per zone (each zone is replicated like a world).
    pub standbys: u8,
    /// Connections in progress at once.
    pub connect_parallel: usize,
    /// What the bots do.
    pub plan: BotPlan,
    /// The world's tick rate.
    pub tick_hz: u32,
}

/// The map of an arena the control plane places (its default rules): the
/// layout cuts its grid, and the bots walk it.
fn map() -> (f32, f32, f32) {
    let a = skylane_origin::ArenaConfig::default();
    (a.width, a.height, a.cell)
}

/// Percentiles of a latency, milliseconds.
pub type LatencyMs = skylane_origin::LatencyMs;

/// What the zoned world's run showed.
#[derive(Debug, Clone, Serialize)]
pub struct ZoneReport {
    /// Zones.
    pub zones: usize,
    /// Origins owning them.
    pub origins: usize,
    /// Bots started.
    pub players: usize,
    /// Bots that played.
    pub playing: usize,
    /// Handoffs committed (avatars handed to another zone), summed over
    /// origins.
    pub handoffs: u64,
    /// Handoffs started and not committed by the end (in flight, or
    /// refused and aborted).
    pub handoffs_open: u64,
    /// Crossing → commit at the source.
    pub handoff_ms: LatencyMs,
    /// Sessions the relays re-opened on another zone's owner.
    pub sessions_moved: u64,
    /// Actions answered `Moved` held by a relay until their session was open
    /// where the avatar went, and those sent on at once.
    pub actions_held: u64,
    /// See `actions_held`.
    pub actions_resent: u64,
    /// Reliable actions the bots sent, and outcomes they got (equal: none
    /// lost, none answered twice).
    pub actions_sent: u64,
    /// See `actions_sent`.
    pub actions_answered: u64,
    /// Outcomes the bots were told are unknown.
    pub actions_unknown: u64,
    /// Events the bots received.
    pub events: u64,
    /// Events lost or duplicated (sequence gaps + duplicates + skipped).
    pub events_lost: u64,
    /// Reconnections.
    pub reconnects: u64,
    /// Movement updates the bots sent per second (over the whole run).
    pub moves_sent_per_s: f64,
    /// Events delivered to the bots per second.
    pub events_per_s: f64,
    /// Event propagation origin → player per class.
    pub latency: std::collections::BTreeMap<String, crate::report::Percentiles>,
    /// Per origin (`origin-1` first): the share of one core its world
    /// ticks took during the run, and its standbys' re-execution (every
    /// world on it: the zones, and the demo's other worlds).
    pub origin_cpu: Vec<(f64, f64)>,
    /// Border mirror messages the zones sent their neighbours, and those
    /// received (each shows the other side's players near a border).
    pub mirrors_sent: u64,
    /// See `mirrors_sent`.
    pub mirrors_received: u64,
    /// Cross-zone requests the zones sent: the game's (shots across a
    /// border), and batches of a tick's world and team events forwarded to
    /// the home zone; and the answers they got back (every request is
    /// answered once).
    pub requests_sent: u64,
    /// See `requests_sent`.
    pub events_forwarded: u64,
    /// See `requests_sent`.
    pub requests_answered: u64,
    /// Standby divergences the origins saw during the run (any: a zone's
    /// standby re-executed its inputs to another state; the run fails).
    pub divergences: u64,
    /// Players per zone at the end, from each zone's owner.
    pub players_per_zone: Vec<u64>,
    /// Whether the zones held every playing bot exactly once at the end
    /// (their players added up to the bots playing, with no handoff open).
    pub each_in_one_zone: bool,
}

/// The origins' metrics (the first origin's and the others').
fn origin_metrics(net: &LocalNet) -> Vec<&OriginMetrics> {
    std::iter::once(&net.origin_metrics)
        .chain(net.more_origins.iter().map(|o| &o.metrics))
        .collect()
}

/// Creates the zoned world on the deployment's control plane and waits (at
/// most 20 s) until every zone has an owner.
pub async fn create(net: &LocalNet, plan: &ZonedPlan) -> Result<WorldId, String> {
    let (width, height, cell) = map();
    let cols = (width / cell).ceil() as u16;
    let rows = (height / cell).ceil() as u16;
    let layout = ZoneLayout::even(cols, rows, cell, plan.cols, plan.rows)
        .map_err(|e| format!("zone layout: {e}"))?;
    let capacity = u32::try_from(plan.players.saturating_mul(2))
        .unwrap_or(u32::MAX)
        .clamp(16, skylane_control::MAX_WORLD_CAPACITY);
    let spec = WorldSpec {
        zones: Some(Box::new(ZoneSpec {
            layout,
            hysteresis: cell / 10.0,
            margin: cell / 5.0,
        })),
        standbys: Some(u32::from(plan.standbys)),
        ..WorldSpec::new("arena", plan.tick_hz, capacity)
    };
    let w = net
        .control
        .create_world(spec, &PlacementHints::default())
        .await
        .map_err(|e| format!("zoned world: {e}"))?
        .id;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let v = net.control.view().await.map_err(|e| e.to_string())?;
        let z = v.zones_of(w);
        if !z.is_empty() && z.iter().all(|r| r.owner.is_some()) {
            return Ok(w);
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(format!("the zones of {w} were not all owned within 20 s"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Plays the zoned world with `plan.players` bots for `plan.duration`.
pub async fn run(net: &LocalNet, plan: &ZonedPlan, world: WorldId) -> ZoneReport {
    let regions = net.relays.len();
    let ttl = plan.duration + Duration::from_secs(600);
    let cpu = || -> Vec<(f64, f64)> {
        origin_metrics(net)
            .iter()
            .map(|m| {
                (
                    m.tick_busy_us.get() as f64 / 1e6,
                    m.standby_busy_us.get() as f64 / 1e6,
                )
            })
            .collect()
    };
    let cpu_before = cpu();
    let live = Arc::new(Live::default());
    // Sampled while the bots still play (they leave when the fleet ends).
    let sample = async {
        tokio::time::sleep(plan.duration.saturating_sub(Duration::from_secs(1))).await;
        settle(net, world, &live).await
    };
    let fleet = fleet::run(
        FleetOptions {
            players: plan.players,
            connect_parallel: plan.connect_parallel,
            ramp: Duration::ZERO,
            duration: plan.duration,
        },
        |i| {
            let name = format!("zoned{i:05}");
            // Bot indices after the main fleet's, on their own addresses.
            let j = 50_000 + i;
            let builder = net
                .player_builder(j % regions, j / regions)
                .map_err(|e| e.to_string())?
                .token(net.token_for(&name, Role::Player, vec![world], ttl))
                .world(world)
                .probe(1);
            let (w, h, _) = map();
            Ok(fleet::Recruit {
                name,
                builder,
                plan: BotPlan {
                    map: (w, h),
                    ..plan.plan
                },
            })
        },
        live.clone(),
        |_, _| {},
        std::future::pending(),
    );
    let (fleet, (players_per_zone, settled)) = tokio::join!(fleet, sample);
    let secs = fleet.elapsed.as_secs_f64().max(1e-3);
    let origin_cpu = cpu()
        .iter()
        .zip(&cpu_before)
        .map(|(a, b)| ((a.0 - b.0) / secs, (a.1 - b.1) / secs))
        .collect();
    let merged = merge(fleet.outcomes.iter().map(|(_, o)| o));
    let c = merged.counts;
    let origins = origin_metrics(net);
    let count = |k: &str| -> u64 {
        origins
            .iter()
            .map(|m| skylane_ops::counted(&m.handoffs, k))
            .sum()
    };
    let mut latency = hdrhistogram::Histogram::<u64>::new(2).ok();
    for m in &origins {
        if let (Some(h), Ok(o)) = (latency.as_mut(), m.handoff_ms.lock()) {
            let _ = h.add(&*o);
        }
    }
    let handoff_ms = latency
        .filter(|h| !h.is_empty())
        .map(|h| LatencyMs {
            count: h.len(),
            p50: h.value_at_quantile(0.5),
            p99: h.value_at_quantile(0.99),
            max: h.max(),
        })
        .unwrap_or_default();
    let relays = || net.relays.iter().map(|r| &r.metrics);
    let zone_actions = |k: &str| -> u64 {
        relays()
            .map(|m| skylane_ops::counted(&m.zone_actions, k))
            .sum()
    };
    let (committed, started) = (count("committed"), count("started"));
    let zone_msgs = |k: &str| -> u64 {
        origins
            .iter()
            .map(|m| skylane_ops::counted(&m.zone_messages, k))
            .sum()
    };
    let view = net.control.view().await.ok();
    ZoneReport {
        zones: usize::from(plan.cols * plan.rows),
        origins: view.as_ref().map_or(0, |v| {
            v.zones_of(world)
                .iter()
                .filter_map(|r| r.owner.as_ref().map(|o| o.node.clone()))
                .collect::<std::collections::BTreeSet<_>>()
                .len()
        }),
        players: plan.players,
        playing: merged.playing,
        handoffs: committed,
        handoffs_open: started.saturating_sub(committed),
        handoff_ms,
        sessions_moved: relays().map(|m| m.zone_moves.get()).sum(),
        actions_held: zone_actions("held"),
        actions_resent: zone_actions("resent"),
        actions_sent: c.actions_sent,
        actions_answered: c.answered,
        actions_unknown: c.unknown,
        events: c.events,
        events_lost: merged.events_lost(),
        reconnects: c.reconnects,
        moves_sent_per_s: c.moves_sent as f64 / secs,
        events_per_s: c.events as f64 / secs,
        latency: crate::report::by_class(&merged.propagation),
        origin_cpu,
        mirrors_sent: zone_msgs("mirrors_sent"),
        mirrors_received: zone_msgs("mirrors_received"),
        requests_sent: zone_msgs("requests_sent"),
        events_forwarded: zone_msgs("events_forwarded"),
        divergences: origins.iter().map(|m| m.divergences.get()).sum(),
        requests_answered: zone_msgs("answers_received"),
        players_per_zone,
        each_in_one_zone: settled,
    }
}

/// The players of each zone (from its owner), once they add up to the bots
/// playing (handoffs in flight count a player in two zones for a moment):
/// at most 3 s of tries; `false` if they never did.
async fn settle(net: &LocalNet, world: WorldId, live: &Live) -> (Vec<u64>, bool) {
    let mut last = Vec::new();
    for _ in 0..60 {
        let playing = live.playing.load(std::sync::atomic::Ordering::Relaxed);
        let Ok(v) = net.control.view().await else {
            break;
        };
        last.clear();
        for r in v.zones_of(world) {
            let n = match r.owner.as_ref().and_then(|o| net.origin_server(&o.node)) {
                Some(o) => o
                    .handle()
                    .world_status(r.id)
                    .await
                    .map_or(0, |s| u64::from(s.players)),
                None => 0,
            };
            last.push(n);
        }
        if last.iter().sum::<u64>() == playing && playing > 0 {
            return (last, true);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (last, false)
}

impl ZoneReport {
    /// The report's lines.
    pub fn text(&self) -> String {
        let h = &self.handoff_ms;
        let mut o = format!(
            "zones         one arena world over {} zones on {} origins: {} of {} players; {} handoffs (crossing → commit p50 {} ms, p99 {} ms, max {} ms; {} open at the end); {} sessions moved by the relays without a reconnect ({} actions held through a move, {} sent on)\n",
            self.zones,
            self.origins,
            self.playing,
            self.players,
            self.handoffs,
            h.p50,
            h.p99,
            h.max,
            self.handoffs_open,
            self.sessions_moved,
            self.actions_held,
            self.actions_resent,
        );
        o.push_str(&format!(
            "              {} border mirror messages sent, {} received; cross-zone requests: {} of the game's (shots, gifts) and {} world-event batches to the home zone, {} answered; {} standby divergences; players per zone {:?}: {}; actions {} sent, {} answered ({} unknown); events lost or duplicated {} of {}; {} reconnects\n",
            self.mirrors_sent,
            self.mirrors_received,
            self.requests_sent,
            self.events_forwarded,
            self.requests_answered,
            self.divergences,
            self.players_per_zone,
            if self.each_in_one_zone {
                "each player in exactly one zone"
            } else {
                "NOT each in exactly one zone"
            },
            self.actions_sent,
            self.actions_answered,
            self.actions_unknown,
            self.events_lost,
            self.events,
            self.reconnects,
        ));
        o.push_str(&format!(
            "              {:.0} moves sent/s, {:.0} events delivered/s; propagation origin → player p50 / p99:",
            self.moves_sent_per_s, self.events_per_s
        ));
        for (class, p) in &self.latency {
            o.push_str(&format!(
                " {class} {:.1} / {:.1} ms;",
                p.p50_us as f64 / 1000.0,
                p.p99_us as f64 / 1000.0
            ));
        }
        o.push('\n');
        o.push_str("              origin CPU in ticks (share of a core: primary + standby):");
        for (i, (p, st)) in self.origin_cpu.iter().enumerate() {
            o.push_str(&format!(" origin-{} {:.2} + {:.2};", i + 1, p, st));
        }
        o.push('\n');
        o
    }
}
