//! `skylane demo`: a whole network in one process, played by bots, with a report.
//!
//! Starts a [`LocalNet`] (origin hosting the arena, relays in three regions on
//! loopback QUIC, generated certificates and GeoIP database), connects the bots
//! through the client SDK (each asks the first relay's directory, which places it
//! by GeoIP), lets them play for the duration, then merges what they measured with
//! what the origin and relays counted into a [`Report`].

use std::sync::Arc;
use std::time::Duration;

use skylane_client::ClientError;
use skylane_proto::Role;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::bots::{Bot, BotOutcome, BotPlan, Live};
use crate::local::{LocalError, LocalNet, LocalOptions};
use crate::report::{by_class, merge, CheatReport, ConflictReport, Percentiles, RelayLine, Report};

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
    NoPlayers(ClientError),
}

/// What the demo shows while it runs.
#[derive(Debug, Clone, Copy)]
pub enum Phase {
    /// Players connecting: (connected, total).
    Connecting(usize, usize),
    /// Playing: elapsed of total.
    Playing(Duration, Duration),
    /// Collecting results.
    Finishing,
}

/// Runs the demo; `progress` is called about four times a second with the phase
/// and the live counters; `interrupt` ends the run early when it resolves.
pub async fn run(
    opts: DemoOptions,
    mut progress: impl FnMut(Phase, &Live),
    interrupt: impl std::future::Future<Output = ()>,
) -> Result<Report, DemoError> {
    let net = LocalNet::start(opts.net.clone()).await?;
    let live = Arc::new(Live::default());
    let (stop_tx, stop_rx) = watch::channel(false);
    let regions = net.relays.len();
    let ttl = opts.duration + Duration::from_secs(600);

    // Connect.
    let mut connecting = JoinSet::new();
    let mut bots: Vec<(usize, Bot)> = Vec::new();
    let mut first_err = None;
    let mut next = 0;
    while next < opts.players || !connecting.is_empty() {
        while next < opts.players && connecting.len() < opts.connect_parallel.max(1) {
            let i = next;
            next += 1;
            let name = format!("bot{i:05}");
            let builder = net
                .player_builder(i % regions, i / regions)?
                .token(net.token(&name, Role::Player, ttl))
                // On loopback every relay answers as fast: one candidate, the
                // GeoIP-nearest, like a client that trusts the directory.
                .probe(1);
            let builder = if i % opts.verify_every.max(1) == 0 {
                builder.origin_key(net.origin_key)
            } else {
                builder
            };
            connecting.spawn(async move { (i, name, builder.connect().await) });
        }
        if let Some(Ok((i, name, r))) = connecting.join_next().await {
            match r {
                Ok(client) => {
                    let mut plan = opts.plan;
                    if is_cheater(i, &opts) {
                        plan.cheat_every = 15;
                    }
                    bots.push((i, Bot::new(client, &name, plan, i as u64, live.clone())));
                }
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        progress(Phase::Connecting(bots.len(), opts.players), &live);
    }
    if bots.is_empty() {
        return Err(DemoError::NoPlayers(
            first_err.unwrap_or(ClientError::Closed),
        ));
    }

    // Play.
    let verified = bots
        .iter()
        .filter(|(i, _)| i % opts.verify_every.max(1) == 0)
        .count();
    let mut playing = JoinSet::new();
    let cheaters: usize = bots.iter().filter(|(i, _)| is_cheater(*i, &opts)).count();
    for (i, bot) in bots {
        let rx = stop_rx.clone();
        playing.spawn(async move { (i, bot.run(rx).await) });
    }
    let start = Instant::now();
    let end = start + opts.duration;
    tokio::pin!(interrupt);
    let mut ui = tokio::time::interval(Duration::from_millis(250));
    loop {
        tokio::select! {
            _ = ui.tick() => {}
            () = &mut interrupt => break,
            () = tokio::time::sleep_until(end) => break,
        }
        progress(Phase::Playing(start.elapsed(), opts.duration), &live);
    }
    let elapsed = start.elapsed().as_secs_f64();
    progress(Phase::Finishing, &live);
    let _ = stop_tx.send(true);
    let mut outcomes: Vec<(usize, BotOutcome)> = Vec::new();
    while let Some(r) = playing.join_next().await {
        if let Ok(x) = r {
            outcomes.push(x);
        }
    }
    // Let the last outcomes reach the origin's counters.
    tokio::time::sleep(Duration::from_millis(200)).await;

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
    let anomalies = ["accuracy", "reactiontime", "actionrate"]
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
    let report = Report {
        mode: "demo".into(),
        duration_s: elapsed,
        players: opts.players,
        playing: merged.playing,
        cheaters,
        rate_hz: opts.plan.rate_hz,
        spectators: 0,
        relays,
        geo_placed,
        latency: by_class(&merged.propagation),
        action_rtt: by_class(&merged.action_rtt),
        origin_updates_per_s: Some(count(&om.actions, "applied") as f64 / elapsed),
        moves_sent_per_s: c.moves_sent as f64 / elapsed,
        events_per_s: c.events as f64 / elapsed,
        conflicts: ConflictReport {
            answered: c.conflicts,
            resolved: c.conflicts_resolved,
            unresolved: c.conflicts_unresolved,
            detect: Percentiles::of(&merged.conflict_rtt),
            resolve: Percentiles::of(&merged.resolution),
        },
        cheats: CheatReport {
            attempted: c.cheats_attempted,
            caught: c.cheats_caught,
            flood_sent: c.flood_sent,
            edge_rate_limited,
            false_positives: c.false_positives,
            anomalies,
        },
        events_lost: c.gaps + c.skipped + c.duplicates,
        events_received: c.events,
        verified_players: verified,
        reconnects: c.reconnects,
        relay_dropped,
        slow_clients,
        counts: c,
        errors: merged.errors,
    };
    net.shutdown().await;
    Ok(report)
}

fn is_cheater(i: usize, opts: &DemoOptions) -> bool {
    i >= opts.players - opts.cheaters.min(opts.players)
}
