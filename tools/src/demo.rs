//! `skylane demo`: a whole network in one process, played by bots, with a report.
//!
//! Starts a [`LocalNet`] (origin hosting the arena, relays in three regions on
//! loopback QUIC, generated certificates and GeoIP database), connects the bots
//! through the client SDK (each asks the first relay's directory, which places it
//! by GeoIP), lets them play for the duration, then merges what they measured with
//! what the origin and relays counted into a [`Report`]. Meanwhile rooms are
//! created on the embedded control plane, filled by bots and played to the end
//! ([`crate::rooms`]).

use std::sync::Arc;
use std::time::Duration;

use skylane_proto::{BandwidthMode, Role};

use crate::audience::{self, Watcher};
use crate::bots::{BotPlan, Live};
use crate::fleet::{self, FleetOptions, Phase, Recruit};
use crate::local::{LocalError, LocalNet, LocalOptions};
use crate::report::{by_class, merge, RelayLine, Report};

/// Options of a demo run.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// How long the bots play.
    pub duration: Duration,
    /// Bot players.
    pub players: usize,
    /// Of them, cheaters.
    pub cheaters: usize,
    /// What honest bots do (cheaters add cheat attempts).
    pub plan: BotPlan,
    /// One player in this many verifies every batch's signature and chain (the
    /// others skip it to leave CPU for the servers sharing the machine).
    pub verify_every: usize,
    /// Players connecting at once.
    pub connect_parallel: usize,
    /// Spectators: half watch live (casters, 0 s), half `spectator_delay` behind.
    pub spectators: usize,
    /// The public audience's delay.
    pub spectator_delay: Duration,
    /// Tic-tac-toe rooms created while the demo runs (two bots each).
    pub rooms: usize,
    /// Arena rooms created while it runs (four bots each; ended at the end).
    pub arena_rooms: usize,
    /// Kill the primary of the rooms on `origin-2` this far into the run (the
    /// deployment then has two origins; rooms have a standby on the other).
    pub kill_primary_at: Option<Duration>,
    /// One arena world split into `(cols, rows)` zones, spread over two
    /// origins, played by `zone_players` more bots walking across borders
    /// (`None`: no zoned world).
    pub zones: Option<(u16, u16)>,
    /// Bots in the zoned world.
    pub zone_players: usize,
    /// Write analytics rows (sessions, worlds, sampled actions, violations,
    /// economy, spectators) as Parquet files under this directory; the
    /// report reads them back and checks them against the network's counts.
    pub analytics: Option<std::path::PathBuf>,
    /// One action outcome in this many is written.
    pub sample_actions: u32,
    /// The deployment.
    pub net: LocalOptions,
}

impl Default for DemoOptions {
    fn default() -> Self {
        let net = LocalOptions::default();
        Self {
            duration: Duration::from_secs(30),
            players: 200,
            cheaters: 10,
            plan: BotPlan {
                map: (net.arena.width, net.arena.height),
                max_speed: net.arena.max_speed,
                spray_every: 100,
                ..BotPlan::default()
            },
            verify_every: 10,
            connect_parallel: 32,
            spectators: 50,
            spectator_delay: Duration::from_secs(2),
            rooms: 10,
            arena_rooms: 2,
            kill_primary_at: None,
            zones: None,
            zone_players: 100,
            analytics: None,
            sample_actions: 10,
            net,
        }
    }
}

/// Why the demo could not run.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// The deployment did not start.
    #[error(transparent)]
    Local(#[from] LocalError),
    /// No bot could connect.
    #[error("no player could connect: {0}")]
    NoPlayers(String),
    /// The scratch directory for the origin's ledger could not be made.
    #[error("scratch directory: {0}")]
    Scratch(#[from] std::io::Error),
    /// The matchmaker did not start.
    #[error("matchmaker: {0}")]
    Matchmaker(String),
    /// The zoned world could not be created.
    #[error("zones: {0}")]
    Zones(String),
    /// The analytics files could not be written or read back.
    #[error("analytics: {0}")]
    Analytics(String),
}

/// Runs the demo; `progress` is called about four times a second with the phase
/// and the live counters; `interrupt` ends the run early when it resolves.
pub async fn run(
    opts: DemoOptions,
    mut progress: impl FnMut(Phase, &Live),
    interrupt: impl std::future::Future<Output = ()>,
) -> Result<Report, DemoError> {
    let mut net_opts = opts.net.clone();
    if opts.kill_primary_at.is_some() || opts.zones.is_some() {
        net_opts.origins = net_opts.origins.max(2);
    }
    // The origin keeps a ledger for the run (the players' wallets, every
    // trade), in a scratch directory removed afterwards.
    let scratch = tempfile::tempdir()?;
    if net_opts.ledger.is_none() {
        net_opts.ledger = Some(scratch.path().join("ledger.redb"));
    }
    let analytics_metrics = skylane_analytics::AnalyticsMetrics::default();
    let analytics = match &opts.analytics {
        Some(dir) => {
            let cfg = skylane_analytics::AnalyticsConfig {
                dir: Some(dir.clone()),
                sample_actions: opts.sample_actions,
                ..Default::default()
            };
            cfg.validate()
                .map_err(|e| DemoError::Analytics(e.to_string()))?;
            let a = skylane_analytics::Analytics::start(&cfg, "demo", analytics_metrics.clone())
                .map_err(|e| DemoError::Analytics(e.to_string()))?;
            if let Some(a) = &a {
                net_opts.analytics = Some((a.emitter(), opts.sample_actions));
            }
            a
        }
        None => None,
    };
    let net = LocalNet::start(net_opts).await?;
    let ledger_before = net
        .origin
        .handle()
        .ledger_totals()
        .await
        .unwrap_or_default();
    let live = Arc::new(Live::default());
    let regions = net.relays.len();
    let ttl = opts.duration + Duration::from_secs(600);

    // Spectators first, so they watch the whole game: casters live, the public
    // `spectator_delay` behind, all at a reduced 10 Hz.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut watchers = Vec::new();
    for k in 0..opts.spectators {
        let j = opts.players + k;
        let name = format!("fan{k:05}");
        let builder = net
            .player_builder(j % regions, j / regions)?
            .token(net.token(&name, Role::Spectator, ttl))
            .probe(1);
        let delay = if k % 2 == 0 {
            Duration::ZERO
        } else {
            opts.spectator_delay
        };
        let mode = BandwidthMode::Reduced { hz: 10 };
        match Watcher::start(builder, delay, mode, stop_rx.clone()).await {
            Ok(w) => watchers.push(w),
            Err(e) => tracing::warn!(spectator = %name, error = %e, "spectator could not connect"),
        }
    }

    let verify_every = opts.verify_every.max(1);
    let fleet_opts = FleetOptions {
        players: opts.players,
        connect_parallel: opts.connect_parallel,
        ramp: Duration::ZERO,
        duration: opts.duration,
    };
    let rooms_plan = crate::rooms::RoomsPlan {
        tictactoe: opts.rooms,
        arena: opts.arena_rooms,
        every: opts.duration / (opts.rooms + opts.arena_rooms + 1).max(1) as u32,
        duration: opts.duration,
    };
    let first_room_bot = opts.players + opts.spectators;
    // The rooms' bots queue through a matchmaker on the same control plane.
    let mm = crate::matchmaking::start(
        &net,
        "mm-1",
        crate::matchmaking::demo_games(),
        opts.net.lease_ttl,
        None,
    )
    .await
    .map_err(|e| DemoError::Matchmaker(e.to_string()))?;
    let mm_client = skylane_client::Matchmaker::new([format!("http://{}", mm.addr())])
        .ca_pem(net.pki.ca_pem.clone());
    let rooms = crate::rooms::run(net.control.clone(), mm_client, rooms_plan, |room, k| {
        let j = first_room_bot + room * 4 + k;
        let name = format!("room{room:03}-{k}");
        let builder = net
            .player_builder(j % regions, j / regions)
            .map_err(|e| e.to_string())?
            .probe(1);
        let at = &net.relays[j % regions].info;
        Ok(crate::rooms::RoomBot {
            token: net.token(&name, Role::Player, ttl),
            name,
            builder,
            coords: Some((f64::from(at.lat), f64::from(at.lon))),
        })
    });
    let fleet = fleet::run(
        fleet_opts,
        |i| {
            let name = format!("bot{i:05}");
            let builder = net
                .player_builder(i % regions, i / regions)
                .map_err(|e| e.to_string())?
                .token(net.token(&name, Role::Player, ttl))
                // On loopback every relay answers as fast: one candidate, the
                // GeoIP-nearest, like a client that trusts the directory.
                .probe(1);
            let builder = if i % verify_every == 0 {
                builder.origin_key(net.origin_key)
            } else {
                builder
            };
            let mut plan = opts.plan;
            if is_cheater(i, &opts) {
                plan.cheat_every = 15;
            }
            Ok(Recruit {
                name,
                builder,
                plan,
            })
        },
        live,
        &mut progress,
        interrupt,
    );
    let started = tokio::time::Instant::now();
    let killer = async {
        let at = opts.kill_primary_at?;
        tokio::time::sleep(at).await;
        let victim = "origin-2";
        let mut f = crate::rooms::kill_primary(
            &net.control,
            victim,
            || net.crash_origin(victim),
            opts.net.lease_ttl,
            opts.net.lease_ttl + Duration::from_secs(10),
        )
        .await;
        f.at_s = started.elapsed().as_secs_f64();
        Some(f)
    };
    let zoned = async {
        let (cols, rows) = opts.zones?;
        let plan = crate::zoned::ZonedPlan {
            cols,
            rows,
            players: opts.zone_players,
            duration: opts.duration,
            standbys: 1,
            connect_parallel: opts.connect_parallel,
            plan: opts.plan,
            tick_hz: opts.net.tick_hz,
        };
        match crate::zoned::create(&net, &plan).await {
            Ok(w) => Some(Ok(crate::zoned::run(&net, &plan, w).await)),
            Err(e) => Some(Err(e)),
        }
    };
    let (fleet, mut rooms, failover, zoned) = tokio::join!(fleet, rooms, killer, zoned);
    let zones = match zoned {
        Some(Ok(z)) => Some(z),
        Some(Err(e)) => return Err(DemoError::Zones(e)),
        None => None,
    };
    rooms.failover = failover;
    let fleet = fleet.require_players().map_err(DemoError::NoPlayers)?;
    let outcomes = &fleet.outcomes;
    let verified = outcomes
        .iter()
        .filter(|(i, _)| i % verify_every == 0)
        .count();
    let cheaters = outcomes
        .iter()
        .filter(|(i, _)| is_cheater(*i, &opts))
        .count();
    let elapsed = fleet.elapsed.as_secs_f64();
    // Let the last outcomes reach the origin's counters.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let _ = stop_tx.send(true);
    let mut watched = Vec::new();
    for w in watchers {
        watched.extend(w.finish().await);
    }
    let audience = (opts.spectators > 0).then(|| audience::merge(&watched, fleet.elapsed));

    let merged = merge(outcomes.iter().map(|(_, o)| o));
    let relays: Vec<RelayLine> = net
        .relays
        .iter()
        .map(|r| RelayLine {
            id: r.info.id.0,
            region: r.info.region.clone(),
            addr: r.addr.to_string(),
            players: outcomes
                .iter()
                .filter(|(_, o)| o.relay == Some(r.addr))
                .count(),
        })
        .collect();
    let geo_placed = net.regional_loopback.then(|| {
        outcomes
            .iter()
            .filter(|(i, o)| o.relay == Some(net.relays[i % regions].addr))
            .count()
    });
    let om = &net.origin_metrics;
    let count = |f, k: &str| skylane_ops::counted(f, k);
    let edge_rate_limited: u64 = net
        .relays
        .iter()
        .map(|r| count(&r.metrics.edge_violations, "rate_limited"))
        .sum();
    let anomalies = ["accuracy", "reaction_time", "action_rate"]
        .iter()
        .map(|k| count(&om.violations, k))
        .sum();
    let mut relay_dropped = std::collections::BTreeMap::new();
    for reason in ["expired", "evicted"] {
        for class in skylane_proto::EventClass::ALL {
            let kind = format!("{reason}_{class}");
            let n: u64 = net
                .relays
                .iter()
                .map(|r| count(&r.metrics.dropped, &kind))
                .sum();
            if n > 0 {
                relay_dropped.insert(kind, n);
            }
        }
    }
    let slow_clients = net
        .relays
        .iter()
        .map(|r| r.metrics.slow_clients.get())
        .sum();
    let c = merged.counts;
    let economy = net.origin.handle().ledger_totals().await.map(|after| {
        let check = crate::loadgen::LedgerCheck::of(ledger_before, after);
        crate::report::EconomyReport::of(&c, &check)
    });
    let mut report = Report {
        analytics: None,
        economy,
        mode: "demo".into(),
        duration_s: fleet.steady.as_secs_f64(),
        players: opts.players,
        playing: merged.playing,
        cheaters,
        rate_hz: opts.plan.rate_hz,
        spectators: opts.spectators,
        audience,
        relays,
        geo_placed,
        latency: by_class(&merged.propagation),
        action_rtt: by_class(&merged.action_rtt),
        origin_rtt: (!merged.origin_rtt.is_empty())
            .then(|| crate::report::Percentiles::of(&merged.origin_rtt)),
        origin_updates_per_s: Some(count(&om.actions, "applied") as f64 / elapsed),
        moves_sent_per_s: c.moves_sent as f64 / elapsed,
        events_per_s: c.events as f64 / elapsed,
        conflicts: merged.conflicts(),
        cheats: merged.cheats(
            Some(edge_rate_limited),
            Some(anomalies),
            Some(count(&om.violations, "rule")),
        ),
        events_lost: merged.events_lost(),
        events_received: c.events,
        verified_players: verified,
        reconnects: c.reconnects,
        relay_dropped,
        slow_clients,
        counts: c,
        errors: merged.errors,
        worlds: (opts.rooms + opts.arena_rooms > 0).then_some(rooms),
        zones,
    };
    let counted = network_counts(&net);
    // With analytics, the relays are waited for (their clients are gone by
    // now): a relay writes the end rows of the sessions it still holds as it
    // exits. One still running after this has sessions without an end row,
    // and the analytics check says so.
    let wait = if opts.analytics.is_some() {
        Duration::from_secs(10)
    } else {
        Duration::ZERO
    };
    net.stop(wait).await;
    if let (Some(a), Some(dir)) = (analytics, &opts.analytics) {
        // Every row emitted is written and every file completed before the
        // files are read back.
        a.shutdown()
            .map_err(|e| DemoError::Analytics(e.to_string()))?;
        let counted = counted();
        report.analytics = Some(
            crate::analytics::AnalyticsReport::of(dir, &analytics_metrics, counted)
                .map_err(|e| DemoError::Analytics(e.to_string()))?,
        );
    }
    Ok(report)
}

/// What the network counted on its own, read once it stopped (the closure
/// holds the metrics, not the network).
fn network_counts(net: &LocalNet) -> impl FnOnce() -> crate::analytics::Counted {
    let relays: Vec<_> = net.relays.iter().map(|r| r.metrics.clone()).collect();
    let mut origins = vec![net.origin_metrics.clone()];
    origins.extend(net.more_origins.iter().map(|o| o.metrics.clone()));
    move || {
        let violations = |m: &skylane_origin::OriginMetrics| -> u64 {
            ["accuracy", "reaction_time", "action_rate", "rule", "edge"]
                .iter()
                .map(|k| skylane_ops::counted(&m.violations, k))
                .sum()
        };
        crate::analytics::Counted {
            sessions: relays.iter().map(|m| m.sessions_opened.get()).sum(),
            resumes: relays.iter().map(|m| m.resumes.get()).sum(),
            worlds: origins.iter().map(|m| m.worlds_started.get()).sum(),
            violations: origins.iter().map(violations).sum(),
        }
    }
}

fn is_cheater(i: usize, opts: &DemoOptions) -> bool {
    i >= opts.players - opts.cheaters.min(opts.players)
}
