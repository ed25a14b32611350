//! `skylane loadgen`: drives a running network with bot players and reports what
//! they measured, checked against what the origin counted.
//!
//! Players connect through one relay address (`--relay`: the relay itself, or its
//! directory when `--directory` is set), with tokens minted from the deployment's
//! token key. Each moves at `rate` Hz (datagrams) and sends reliable actions at the
//! per-second rates of the mix (state: coin trades with declared reads, critical:
//! markers, bulk: sprays). With `--origin-admin`, the origin's
//! `skylane_origin_actions_total` counters are read before and after: every answer a
//! player received must have been counted there, and the rest of the origin's
//! outcomes are the players' moves (datagrams: some may be lost, none invented).
//!
//! With `spectators`, that many spectators watch the world through the same
//! relay (they connect first, like a broadcast audience waiting for the match).
//! With `relay_admin`, the relay's `process_cpu_seconds_total` and
//! `skylane_relay_spectator_frames_total` are read over the players' steady
//! phase: the relay's CPU per delivered spectator frame. With `baseline`, the
//! same number of connections then gets frames of the same size at the same
//! rate from a bare quinn server ([`crate::fanout`]): the comparison the
//! spectator benchmark asks for, measured in the same run.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use skylane_client::Client;
use skylane_proto::ed25519_dalek::VerifyingKey;
use skylane_proto::{BandwidthMode, Claims, EventClass, Role, TokenSigner, WorldId};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

use crate::audience::{self, Watcher};
use crate::bots::{BotPlan, Live};
use crate::fanout::{self, EchoReport, FanoutOptions, FanoutReport};
use crate::fleet::{self, FleetOptions, Phase, Recruit};
use crate::report::{by_class, merge, RelayLine, Report};

/// Reliable actions per player per second, by class; movement is `rate_hz`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Mix {
    /// Movement updates per second (0: players do not move; their other actions
    /// are paced on one step a second).
    pub movement: f64,
    /// Coin trades per second (state).
    pub state: f64,
    /// Map markers per second (critical).
    pub critical: f64,
    /// Sprays per second (bulk).
    pub bulk: f64,
    /// Origin pings per second (the client → relay → origin → relay → client
    /// round trip, answered at once: the path without the tick).
    pub ping: f64,
}

impl Default for Mix {
    fn default() -> Self {
        Self {
            movement: 10.0,
            state: 0.5,
            critical: 0.2,
            bulk: 0.0,
            ping: 1.0,
        }
    }
}

/// Most actions per second one bot sends of a class (bots are honest players;
/// cheaters flood their movement lane once on top, see `--cheaters`).
pub const MAX_MIX_RATE: f64 = 60.0;

/// Why a mix could not be parsed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MixError {
    /// Not `CLASS=RATE` pairs of known classes.
    #[error("mix {0:?}: expected CLASS=RATE[,CLASS=RATE...] with classes movement, state, critical, bulk, ping and rates per player per second")]
    Syntax(String),
    /// A rate above the cap.
    #[error("mix {mix:?}: {class}={rate} is above the cap of {MAX_MIX_RATE} per player per second (bots play honestly; for a flood use --cheaters, whose bots flood their movement lane)")]
    AboveCap {
        /// The mix.
        mix: String,
        /// The class.
        class: String,
        /// The rate asked for.
        rate: f64,
    },
}

impl std::str::FromStr for Mix {
    type Err = MixError;
    fn from_str(s: &str) -> Result<Self, MixError> {
        let mut mix = Self::default();
        for part in s.split(',').filter(|p| !p.trim().is_empty()) {
            let syntax = || MixError::Syntax(s.into());
            let (k, v) = part.split_once('=').ok_or_else(syntax)?;
            let v: f64 = v.trim().parse().map_err(|_| syntax())?;
            if v < 0.0 || v.is_nan() {
                return Err(syntax());
            }
            if v > MAX_MIX_RATE {
                return Err(MixError::AboveCap {
                    mix: s.into(),
                    class: k.trim().into(),
                    rate: v,
                });
            }
            match k.trim() {
                "movement" => mix.movement = v,
                "state" => mix.state = v,
                "critical" => mix.critical = v,
                "bulk" => mix.bulk = v,
                "ping" => mix.ping = v,
                _ => return Err(syntax()),
            }
        }
        Ok(mix)
    }
}

impl Mix {
    /// The bot plan for this mix on a map.
    pub fn plan(&self, map: (f32, f32), max_speed: f32) -> BotPlan {
        let step_hz = if self.movement > 0.0 {
            self.movement
        } else {
            1.0
        };
        let every = |r: f64| {
            if r <= 0.0 {
                0
            } else {
                (step_hz / r).round().max(1.0) as u32
            }
        };
        BotPlan {
            rate_hz: self.movement,
            trade_every: every(self.state),
            mark_every: every(self.critical),
            spray_every: every(self.bulk),
            ping_every: every(self.ping),
            map,
            max_speed,
            ..BotPlan::default()
        }
    }
}

/// Options of a load-generator run.
#[derive(Debug, Clone)]
pub struct LoadgenOptions {
    /// Relay (or directory) address.
    pub relay: SocketAddr,
    /// Ask the relay's directory and probe the relays it proposes.
    pub directory: bool,
    /// Name the relays' certificates are checked against.
    pub server_name: String,
    /// CA the relays' certificates chain to (PEM).
    pub ca_pem: String,
    /// Mints the players' tokens.
    pub tokens: Arc<TokenSigner>,
    /// Token audience.
    pub audience: String,
    /// World to play.
    pub world: WorldId,
    /// Players.
    pub players: usize,
    /// Of them, cheaters.
    pub cheaters: usize,
    /// Traffic mix.
    pub mix: Mix,
    /// Connections are spread over this time.
    pub ramp: Duration,
    /// Steady-state duration after the ramp.
    pub duration: Duration,
    /// Connections in progress at once.
    pub connect_parallel: usize,
    /// Map size of the world (moves must stay on it).
    pub map: (f32, f32),
    /// Speed limit of the world.
    pub max_speed: f32,
    /// The origin's batch-signing key: every player verifies every batch.
    pub origin_key: Option<VerifyingKey>,
    /// The origin's admin address (`http://host:port`) to compare counts.
    pub origin_admin: Option<String>,
    /// Local address the players bind.
    pub bind: IpAddr,
    /// Players sharing one UDP socket (quinn endpoint). An endpoint's receive
    /// buffers cost about 2 MB, so thousands of players need to share.
    pub players_per_socket: usize,
    /// The players' clock-sync ping interval (the SDK's default, 1 s, when
    /// `None`). Each ping is a round trip the relay answers: at 10,000 players
    /// the default is 10,000 pings a second.
    pub ping_interval: Option<Duration>,
    /// The players' QUIC idle timeout (the SDK's default, 3 s, when `None`);
    /// their keep-alive runs at a quarter of it.
    pub idle_timeout: Option<Duration>,
    /// Spectators watching the world through the relay.
    pub spectators: usize,
    /// Their delay behind live play.
    pub spectator_delay: Duration,
    /// Their bandwidth mode.
    pub spectator_mode: BandwidthMode,
    /// The relay's admin address (`http://host:port`): its CPU time, memory and
    /// spectator frames are read over the steady phase.
    pub relay_admin: Option<String>,
    /// The raw baselines, hosted there: during the players' steady phase, raw
    /// UDP and raw quinn datagram echo round trips (the path's floor); after the
    /// run, with spectators and `relay_admin`, the raw quinn fan-out to as many
    /// connections as spectators watched.
    pub baseline: Option<fanout::Host>,
    /// The cheaters' sustained flood (class, messages per second), if any.
    pub flood: Option<(EventClass, f64)>,
}

/// Parses `--flood CLASS=RATE`: a cheater's sustained flood, any rate (it lasts
/// the run: `--duration` bounds it).
pub fn parse_flood(s: &str) -> Result<(EventClass, f64), String> {
    let bad = || {
        format!(
            "flood {s:?}: expected CLASS=RATE, e.g. movement=500 (messages per second per cheater)"
        )
    };
    let (class, rate) = s.split_once('=').ok_or_else(bad)?;
    let class: EventClass = class.trim().parse().map_err(|_| bad())?;
    let rate: f64 = rate.trim().parse().map_err(|_| bad())?;
    if !(rate > 0.0 && rate.is_finite()) {
        return Err(bad());
    }
    Ok((class, rate))
}

/// What the relay spent, from its `/metrics`, over the players' steady phase.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct RelayCost {
    /// Measured time, seconds.
    pub elapsed_s: f64,
    /// Relay CPU time over it, seconds.
    pub cpu_s: f64,
    /// Spectator frames the relay queued to spectators over it.
    pub spectator_frames: u64,
    /// Relay CPU per delivered spectator frame, microseconds (players' traffic
    /// included: keep players few when measuring this); none without spectator
    /// frames.
    pub cpu_us_per_frame: Option<f64>,
    /// Resident memory before any load generator connection, bytes.
    pub resident_before: u64,
    /// Resident memory with everyone connected, bytes.
    pub resident_loaded: u64,
    /// (loaded - before) / connections, bytes.
    pub bytes_per_connection: f64,
}

/// The relay against a bare quinn server holding as many connections, same run:
/// with spectators, fanning frames of their size and rate out; without, idle
/// player connections (memory only).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct FanoutComparison {
    /// The bare quinn server's figures.
    pub raw_quinn: FanoutReport,
    /// Relay CPU per frame / raw quinn CPU per frame (with spectators).
    pub ratio: Option<f64>,
    /// Relay resident bytes per connection / raw quinn's.
    pub memory_ratio: f64,
}

/// Everything a load-generator run produced.
#[derive(Debug, Clone)]
pub struct LoadgenRun {
    /// The players' (and spectators') report.
    pub report: Report,
    /// What the origin counted (with `origin_admin`).
    pub origin: Option<OriginCount>,
    /// The origin's ledger before and after (with `origin_admin`, when the
    /// origin keeps a ledger).
    pub ledger: Option<LedgerCheck>,
    /// What the relay spent (with `relay_admin`).
    pub relay: Option<RelayCost>,
    /// The raw quinn comparison (with `baseline`).
    pub fanout: Option<FanoutComparison>,
    /// Raw UDP and raw quinn datagram round trips measured while the players
    /// played (with `baseline`).
    pub path: Option<EchoReport>,
}

impl LoadgenRun {
    /// The run as one JSON object: the report's fields plus `origin`,
    /// `relay_cost`, `fanout` and `path_baseline`.
    pub fn json(&self) -> serde_json::Value {
        let mut v = serde_json::to_value(&self.report).unwrap_or_default();
        v["origin"] = serde_json::to_value(self.origin).unwrap_or_default();
        v["ledger"] = serde_json::to_value(self.ledger).unwrap_or_default();
        v["relay_cost"] = serde_json::to_value(self.relay).unwrap_or_default();
        v["fanout"] = serde_json::to_value(self.fanout).unwrap_or_default();
        v["path_baseline"] = serde_json::to_value(&self.path).unwrap_or_default();
        v
    }
}

/// The origin's ledger totals around the run (its `GET /ledger`): the trades
/// it committed, and whether nothing was created or destroyed meanwhile but by
/// the declared sources (grants to new players, pick-ups).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct LedgerCheck {
    /// Before the run.
    pub before: skylane_origin::Totals,
    /// After it.
    pub after: skylane_origin::Totals,
    /// Transactions committed during the run.
    pub transactions: u64,
    /// Coins held changed by exactly the coins minted, items likewise, and
    /// no transaction was refused for a balance the ledger did not hold.
    pub conserved: bool,
}

impl LedgerCheck {
    /// Compares two readings.
    pub fn of(before: skylane_origin::Totals, after: skylane_origin::Totals) -> Self {
        let d = |a: u64, b: u64| i128::from(a) - i128::from(b);
        let conserved = d(after.coins_held, before.coins_held)
            == d(after.coins_minted, before.coins_minted)
            && d(after.items_held, before.items_held) == d(after.items_minted, before.items_minted)
            && after.refused == before.refused
            && after.conserved();
        Self {
            before,
            after,
            transactions: after.transactions.saturating_sub(before.transactions),
            conserved,
        }
    }
}

/// Reads an origin's ledger totals (`None`: it keeps no ledger).
pub async fn ledger_totals(admin: &str) -> Result<Option<skylane_origin::Totals>, LoadgenError> {
    let url = format!("{}/ledger", admin.trim_end_matches('/'));
    let u = url.clone();
    let got = tokio::task::spawn_blocking(move || {
        let agent = ureq::Agent::new_with_config(
            ureq::Agent::config_builder()
                .http_status_as_error(false)
                .build(),
        );
        let mut r = agent.get(&u).call().map_err(|e| e.to_string())?;
        if r.status().as_u16() == 404 {
            return Ok(None);
        }
        r.body_mut()
            .read_to_string()
            .map(Some)
            .map_err(|e| e.to_string())
    })
    .await
    .map_err(|e| e.to_string())
    .and_then(|r| r)
    .map_err(|message| LoadgenError::Admin {
        url: url.clone(),
        message,
    })?;
    got.map(|body| {
        serde_json::from_str(&body).map_err(|e| LoadgenError::Admin {
            url,
            message: e.to_string(),
        })
    })
    .transpose()
}

/// What the origin counted during the run (from its `/metrics`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct OriginCount {
    /// Action outcomes the origin produced (applied + conflict + rejected).
    pub outcomes: u64,
    /// Of them, applied.
    pub applied: u64,
    /// Reliable actions the players got an answer for.
    pub players_answered: u64,
    /// Movement updates the players sent.
    pub moves_sent: u64,
    /// Origin outcomes that are not answers: the moves that reached it.
    pub moves_counted: u64,
    /// Whether the counts are consistent: every answer counted at the origin, and
    /// no more moves counted than were sent (never when the origin restarted).
    pub consistent: bool,
    /// The origin restarted during the run (its counters started again from 0,
    /// so its counts cannot be compared with the players').
    pub restarted: bool,
}

/// Why the run could not happen.
#[derive(Debug, thiserror::Error)]
pub enum LoadgenError {
    /// Reading the origin's metrics failed.
    #[error("origin admin {url}: {message}")]
    Admin {
        /// URL.
        url: String,
        /// Cause.
        message: String,
    },
    /// No player connected.
    #[error("no player could connect: {0}")]
    NoPlayers(String),
    /// The raw quinn baseline failed.
    #[error("raw quinn baseline: {0}")]
    Baseline(#[from] fanout::FanoutError),
}

/// Fetches an admin endpoint's `/metrics` text.
pub async fn fetch_metrics(admin: &str) -> Result<String, LoadgenError> {
    fetch(admin, "/metrics").await
}

/// Fetches a path of an admin endpoint.
async fn fetch(admin: &str, path: &str) -> Result<String, LoadgenError> {
    let url = format!("{}{path}", admin.trim_end_matches('/'));
    let u = url.clone();
    tokio::task::spawn_blocking(move || {
        ureq::get(&u)
            .call()
            .map_err(|e| e.to_string())?
            .body_mut()
            .read_to_string()
            .map_err(|e| e.to_string())
    })
    .await
    .map_err(|e| e.to_string())
    .and_then(|r| r)
    .map_err(|message| LoadgenError::Admin { url, message })
}

/// What an origin counted, by kind: its `skylane_origin_actions_total` and
/// `skylane_origin_violations_total` counters.
#[derive(Debug, Clone, Default)]
pub struct OriginCounters {
    /// Action outcomes (`applied`, `conflict`, `rejected_*`).
    pub actions: BTreeMap<String, u64>,
    /// Anti-cheat violations (`rule`, anomaly kinds).
    pub violations: BTreeMap<String, u64>,
    /// When the origin process started (its `/status`), if it says.
    pub started_unix_us: Option<u64>,
}

/// Reads an origin's action and violation counters from its admin endpoint.
pub async fn origin_counters(admin: &str) -> Result<OriginCounters, LoadgenError> {
    let body = fetch_metrics(admin).await?;
    let status = fetch(admin, "/status").await?;
    let started_unix_us = serde_json::from_str::<serde_json::Value>(&status)
        .ok()
        .and_then(|v| v["started_unix_us"].as_u64());
    Ok(OriginCounters {
        actions: parse_counter(&body, "skylane_origin_actions_total"),
        violations: parse_counter(&body, "skylane_origin_violations_total"),
        started_unix_us,
    })
}

/// One reading of a relay's cost counters.
#[derive(Debug, Clone, Copy)]
struct RelaySample {
    at: tokio::time::Instant,
    cpu_s: f64,
    frames: u64,
    resident: u64,
}

async fn relay_sample(admin: &str) -> Result<RelaySample, LoadgenError> {
    let text = fetch_metrics(admin).await?;
    let get = |k: &str| skylane_ops::sample(&text, k).unwrap_or(0.0);
    Ok(RelaySample {
        at: tokio::time::Instant::now(),
        cpu_s: get("process_cpu_seconds_total"),
        frames: get("skylane_relay_spectator_frames_total") as u64,
        resident: get("process_resident_memory_bytes") as u64,
    })
}

/// Values of a counter family with a `kind` label in Prometheus/OpenMetrics text.
pub fn parse_counter(text: &str, name: &str) -> BTreeMap<String, u64> {
    let prefix = format!("{name}{{kind=\"");
    text.lines()
        .filter_map(|l| {
            let rest = l.strip_prefix(&prefix)?;
            let (kind, value) = rest.split_once("\"}")?;
            let v: f64 = value.split_whitespace().next()?.parse().ok()?;
            Some((kind.to_owned(), v as u64))
        })
        .collect()
}

fn total(m: &BTreeMap<String, u64>) -> u64 {
    m.values().sum()
}

fn unix_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Hands out client endpoints, `per_socket` connections on each.
struct Sockets {
    bind: SocketAddr,
    per_socket: usize,
    handed: usize,
    endpoints: Vec<quinn::Endpoint>,
}

impl Sockets {
    fn next(&mut self) -> Result<quinn::Endpoint, String> {
        if self.handed % self.per_socket.max(1) == 0 {
            let e =
                quinn::Endpoint::client(self.bind).map_err(|e| format!("{}: {e}", self.bind))?;
            self.endpoints.push(e);
        }
        self.handed += 1;
        self.endpoints
            .last()
            .cloned()
            .ok_or_else(|| "no endpoint".to_owned())
    }
}

/// When this run's tokens were issued and how long they last.
#[derive(Debug, Clone, Copy)]
struct Minting {
    now: u64,
    ttl: Duration,
}

/// A client builder for `name` with `role` on `endpoint`.
fn builder(
    opts: &LoadgenOptions,
    endpoint: quinn::Endpoint,
    name: &str,
    role: Role,
    Minting { now, ttl }: Minting,
) -> Result<skylane_client::ClientBuilder, String> {
    let token = opts
        .tokens
        .issue(&Claims::new(
            name,
            role,
            vec![opts.world],
            opts.audience.clone(),
            now,
            ttl.as_secs(),
        ))
        .map_err(|e| e.to_string())?;
    let mut b = Client::builder()
        .token(token)
        .world(opts.world)
        .ca_pem(opts.ca_pem.clone())
        .server_name(opts.server_name.clone())
        .endpoint(endpoint);
    if let Some(d) = opts.ping_interval {
        b = b.ping_interval(d);
    }
    if let Some(d) = opts.idle_timeout {
        b = b.idle_timeout(d);
    }
    let b = if opts.directory {
        b.directory(opts.relay)
    } else {
        b.relays([opts.relay])
    };
    Ok(match opts.origin_key {
        Some(k) => b.origin_key(k),
        None => b,
    })
}

/// Connects the spectators (bounded parallelism); they watch until `stop`.
async fn connect_spectators(
    opts: &LoadgenOptions,
    sockets: &mut Sockets,
    run_id: u64,
    mint: Minting,
    stop: watch::Receiver<bool>,
    progress: &mut impl FnMut(Phase, &Live),
    live: &Live,
) -> (Vec<Watcher>, Vec<String>) {
    let gate = Arc::new(Semaphore::new(opts.connect_parallel.max(1)));
    let mut connecting = JoinSet::new();
    let mut errors = Vec::new();
    for k in 0..opts.spectators {
        let name = format!("fan{run_id}-{k:06}");
        let b = match sockets
            .next()
            .and_then(|e| builder(opts, e, &name, Role::Spectator, mint))
        {
            Ok(b) => b.probe(1),
            Err(e) => {
                errors.push(format!("{name}: {e}"));
                continue;
            }
        };
        let (gate, stop) = (gate.clone(), stop.clone());
        let (delay, mode) = (opts.spectator_delay, opts.spectator_mode);
        connecting.spawn(async move {
            let _permit = gate.acquire_owned().await;
            fleet::retrying(|| Watcher::start(b.clone(), delay, mode, stop.clone()))
                .await
                .map_err(|e| format!("{name}: {e}"))
        });
    }
    let mut watchers = Vec::new();
    while let Some(r) = connecting.join_next().await {
        match r {
            Ok(Ok(w)) => watchers.push(w),
            Ok(Err(e)) => errors.push(e),
            Err(e) => errors.push(e.to_string()),
        }
        progress(Phase::Watching(watchers.len(), opts.spectators), live);
    }
    (watchers, errors)
}

/// Runs the load; `progress` and `interrupt` as in [`fleet::run`].
pub async fn run(
    opts: LoadgenOptions,
    mut progress: impl FnMut(Phase, &Live),
    interrupt: impl std::future::Future<Output = ()>,
) -> Result<LoadgenRun, LoadgenError> {
    let before = match &opts.origin_admin {
        Some(a) => Some(origin_counters(a).await?),
        None => None,
    };
    let ledger_before = match &opts.origin_admin {
        Some(a) => ledger_totals(a).await?,
        None => None,
    };
    let relay_before = match &opts.relay_admin {
        Some(a) => Some(relay_sample(a).await?),
        None => None,
    };
    // The baseline server runs beside the relay from the start (its echoes are
    // measured during the steady phase, its fan-out after the run).
    let baseline = match &opts.baseline {
        Some(host) => Some(fanout::Server::start(host, SocketAddr::new(opts.bind, 0)).await?),
        None => None,
    };
    let live = Arc::new(Live::default());
    let ttl = opts.ramp + opts.duration + Duration::from_secs(600);
    let plan = opts.mix.plan(opts.map, opts.max_speed);
    let now = unix_secs();
    let run_id = now % 100_000;
    let mut sockets = Sockets {
        bind: SocketAddr::new(opts.bind, 0),
        per_socket: opts.players_per_socket.max(1),
        handed: 0,
        endpoints: Vec::new(),
    };

    // The audience first, like spectators waiting for the match.
    let (stop_tx, stop_rx) = watch::channel(false);
    let (watchers, spectator_errors) = connect_spectators(
        &opts,
        &mut sockets,
        run_id,
        Minting { now, ttl },
        stop_rx,
        &mut progress,
        &live,
    )
    .await;
    let watching = tokio::time::Instant::now();
    let watchers_up = watchers.len();

    // The relay's cost is read from the players' steady phase to the fleet's end.
    let (playing_tx, mut playing_rx) = watch::channel(false);
    let (done_tx, done_rx) = watch::channel(false);
    let mut echo_playing = playing_rx.clone();
    let echo = async {
        let (_, ready) = baseline.as_ref()?;
        echo_playing.wait_for(|p| *p).await.ok()?;
        let mut done = done_rx.clone();
        let stop = async move {
            let _ = done.wait_for(|d| *d).await;
        };
        Some(fanout::echo(ready, opts.bind, Duration::from_millis(20), stop).await)
    };
    let first_sample = async {
        let admin = opts.relay_admin.as_deref()?;
        playing_rx.wait_for(|p| *p).await.ok()?;
        Some(relay_sample(admin).await)
    };
    let fleet = async {
        let f = fleet::run(
            FleetOptions {
                players: opts.players,
                connect_parallel: opts.connect_parallel,
                ramp: opts.ramp,
                duration: opts.duration,
            },
            |i| {
                let name = format!("load{run_id}-{i:06}");
                let endpoint = sockets.next()?;
                let b = builder(&opts, endpoint, &name, Role::Player, Minting { now, ttl })?;
                let mut plan = plan;
                if i >= opts.players - opts.cheaters.min(opts.players) {
                    plan.cheat_every = 15;
                    plan.flood = opts.flood;
                }
                Ok(Recruit {
                    name,
                    builder: b,
                    plan,
                })
            },
            live,
            |phase, live| {
                if matches!(phase, Phase::Playing(..)) {
                    playing_tx.send_replace(true);
                }
                progress(phase, live);
            },
            interrupt,
        )
        .await;
        done_tx.send_replace(true);
        f
    };
    let (fleet, first, path) = tokio::join!(fleet, first_sample, echo);
    let path = path.transpose()?;
    let last = match &opts.relay_admin {
        Some(a) => Some(relay_sample(a).await?),
        None => None,
    };
    let fleet = fleet.require_players().map_err(LoadgenError::NoPlayers)?;
    let _ = stop_tx.send(true);
    let watched_for = watching.elapsed();
    let mut watched = Vec::new();
    for w in watchers {
        if let Some(w) = w.finish().await {
            watched.push(w);
        }
    }
    // Let the last outcomes reach the origin's counters.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let merged = merge(fleet.outcomes.iter().map(|(_, o)| o));
    let c = merged.counts;
    let elapsed = fleet.elapsed.as_secs_f64();
    let mut rule_violations = None;
    let origin = match (&opts.origin_admin, before) {
        (Some(a), Some(before)) => {
            let after = origin_counters(a).await?;
            let delta = |m: fn(&OriginCounters) -> &BTreeMap<String, u64>, k: &str| {
                let get = |c| m(c).get(k).copied().unwrap_or(0);
                get(&after).saturating_sub(get(&before))
            };
            rule_violations = Some(delta(|c| &c.violations, "rule"));
            let outcomes = total(&after.actions).saturating_sub(total(&before.actions));
            let applied = delta(|c| &c.actions, "applied");
            let moves_counted = outcomes.saturating_sub(c.answered);
            // Counters reset when the origin restarts: an inequality over them
            // would still hold and say "consistent" about counts it never saw.
            let restarted =
                before.started_unix_us != after.started_unix_us || before.started_unix_us.is_none();
            Some(OriginCount {
                outcomes,
                applied,
                players_answered: c.answered,
                moves_sent: c.moves_sent + c.flood_sent,
                moves_counted,
                consistent: !restarted
                    && outcomes >= c.answered
                    && moves_counted <= c.moves_sent + c.flood_sent,
                restarted,
            })
        }
        _ => None,
    };
    let ledger = match (&opts.origin_admin, ledger_before) {
        (Some(a), Some(before)) => ledger_totals(a)
            .await?
            .map(|after| LedgerCheck::of(before, after)),
        _ => None,
    };
    let relay = match (relay_before, first.transpose()?, last) {
        (Some(z), Some(a), Some(b)) => {
            let frames = b.frames.saturating_sub(a.frames);
            let cpu_s = (b.cpu_s - a.cpu_s).max(0.0);
            let connections = (merged.playing + watchers_up).max(1);
            Some(RelayCost {
                elapsed_s: (b.at - a.at).as_secs_f64(),
                cpu_s,
                spectator_frames: frames,
                cpu_us_per_frame: (frames > 0).then(|| cpu_s * 1e6 / frames as f64),
                resident_before: z.resident,
                resident_loaded: a.resident,
                bytes_per_connection: a.resident.saturating_sub(z.resident) as f64
                    / connections as f64,
            })
        }
        _ => None,
    };
    let fanout = match (relay, baseline) {
        (Some(cost), Some((server, ready))) if watchers_up > 0 || merged.playing > 0 => {
            // With spectators: their frames, at their size and rate. Without: as
            // many idle connections as players (one small frame a second).
            let frames: u64 = watched.iter().map(|w| w.frames).sum();
            let bytes: u64 = watched.iter().map(|w| w.bytes).sum();
            let spectating = watchers_up > 0 && cost.spectator_frames > 0;
            let connections = if spectating {
                watchers_up
            } else {
                merged.playing + watchers_up
            };
            let fo = FanoutOptions {
                connections,
                frame_hz: if spectating {
                    cost.spectator_frames as f64 / cost.elapsed_s.max(1e-3) / watchers_up as f64
                } else {
                    1.0
                },
                frame_bytes: if spectating {
                    (bytes / frames.max(1)).max(1) as usize
                } else {
                    64
                },
                duration: opts.duration.min(Duration::from_secs(20)),
                bind: opts.bind,
                per_socket: opts.players_per_socket.max(1),
                connect_parallel: opts.connect_parallel.max(1),
            };
            let raw = fanout::fan_out(server, &ready, fo).await?;
            Some(FanoutComparison {
                ratio: cost
                    .cpu_us_per_frame
                    .filter(|_| spectating)
                    .map(|c| c / raw.cpu_us_per_frame.max(1e-9)),
                memory_ratio: cost.bytes_per_connection / raw.bytes_per_connection.max(1.0),
                raw_quinn: raw,
            })
        }
        (_, Some((server, _))) => {
            server.stop().await;
            None
        }
        _ => None,
    };
    let mut per_relay: BTreeMap<String, usize> = BTreeMap::new();
    for (_, o) in &fleet.outcomes {
        if let Some(r) = o.relay {
            *per_relay.entry(r.to_string()).or_default() += 1;
        }
    }
    let mut errors = merged.errors.clone();
    if let Some(e) = fleet.first_error {
        errors.insert(
            0,
            format!(
                "{} players could not connect; first: {e}",
                fleet.connect_failures
            ),
        );
    }
    if let Some(e) = spectator_errors.first() {
        errors.push(format!(
            "{} spectators could not connect; first: {e}",
            spectator_errors.len()
        ));
    }
    let report = Report {
        mode: "loadgen".into(),
        duration_s: fleet.steady.as_secs_f64(),
        players: opts.players,
        playing: merged.playing,
        cheaters: opts.cheaters.min(opts.players),
        rate_hz: opts.mix.movement,
        spectators: opts.spectators,
        audience: (opts.spectators > 0).then(|| audience::merge(&watched, watched_for)),
        relays: per_relay
            .into_iter()
            .map(|(addr, players)| RelayLine {
                id: 0,
                region: String::new(),
                addr,
                players,
            })
            .collect(),
        geo_placed: None,
        latency: by_class(&merged.propagation),
        action_rtt: by_class(&merged.action_rtt),
        origin_rtt: (!merged.origin_rtt.is_empty())
            .then(|| crate::report::Percentiles::of(&merged.origin_rtt)),
        origin_updates_per_s: origin.map(|o| o.applied as f64 / elapsed),
        moves_sent_per_s: c.moves_sent as f64 / elapsed,
        events_per_s: c.events as f64 / elapsed,
        conflicts: merged.conflicts(),
        cheats: merged.cheats(None, None, rule_violations),
        events_lost: merged.events_lost(),
        events_received: c.events,
        verified_players: if opts.origin_key.is_some() {
            fleet.outcomes.len()
        } else {
            0
        },
        reconnects: c.reconnects,
        relay_dropped: BTreeMap::new(),
        slow_clients: 0,
        counts: c,
        errors,
        worlds: None,
        economy: ledger
            .as_ref()
            .map(|l| crate::report::EconomyReport::of(&c, l)),
        zones: None,
        analytics: None,
    };
    Ok(LoadgenRun {
        report,
        origin,
        ledger,
        relay,
        fanout,
        path,
    })
}

/// The largest event-latency p99 over the classes, microseconds.
pub fn worst_p99_us(report: &Report) -> u64 {
    EventClass::ALL
        .iter()
        .filter_map(|c| report.latency.get(crate::report::class_name(*c)))
        .map(|p| p.p99_us)
        .max()
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::local::{LocalNet, LocalOptions, AUDIENCE, WORLD};

    #[test]
    fn floods_parse_any_rate_of_a_class() {
        assert_eq!(parse_flood("chat=500").unwrap(), (EventClass::Chat, 500.0));
        for bad in ["chat", "warp=5", "chat=-1", "chat=x"] {
            assert!(parse_flood(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn mixes_parse_and_refuse_nonsense() {
        let m: Mix = "movement=20, state=1,critical=0.5,bulk=0.1"
            .parse()
            .unwrap();
        assert_eq!(
            (m.movement, m.state, m.critical, m.bulk),
            (20.0, 1.0, 0.5, 0.1)
        );
        let p = m.plan((100.0, 100.0), 10.0);
        assert_eq!((p.trade_every, p.mark_every, p.spray_every), (20, 40, 200));
        assert_eq!("".parse::<Mix>().unwrap(), Mix::default());
        let idle: Mix = "movement=0,state=0.5".parse().unwrap();
        assert_eq!(idle.plan((1.0, 1.0), 1.0).trade_every, 2);
        for bad in ["chat=1", "state", "state=x", "state=-1", "movement=61"] {
            assert!(bad.parse::<Mix>().is_err(), "{bad}");
        }
        let err = "movement=200".parse::<Mix>().unwrap_err().to_string();
        assert!(err.contains("above the cap of 60"), "{err}");
    }

    #[test]
    fn counters_are_read_from_metrics_text() {
        let text = "# TYPE skylane_origin_actions counter\n\
            skylane_origin_actions_total{kind=\"applied\"} 41\n\
            skylane_origin_actions_total{kind=\"rejected_speed\"} 2 1700000000\n\
            skylane_origin_ticks_total 9\n";
        let m = parse_counter(text, "skylane_origin_actions_total");
        assert_eq!(m.get("applied"), Some(&41));
        assert_eq!(m.get("rejected_speed"), Some(&2));
        assert_eq!(m.len(), 2);
    }

    /// Against a running deployment: what players were answered was counted at the
    /// origin; nothing lost; spectators watched; the relay's cost was read and the
    /// raw quinn baseline ran beside it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_short_load_run_matches_the_origins_counts() {
        let dir = tempfile::tempdir().unwrap();
        let net = LocalNet::start(LocalOptions {
            admin: true,
            ledger: Some(dir.path().join("ledger.redb")),
            ..LocalOptions::default()
        })
        .await
        .unwrap();
        let http = |a: Option<SocketAddr>| a.map(|a| format!("http://{a}"));
        let opts = LoadgenOptions {
            relay: net.relays[0].addr,
            directory: false,
            server_name: "localhost".into(),
            ca_pem: net.pki.ca_pem.clone(),
            tokens: net.tokens.clone(),
            audience: AUDIENCE.into(),
            world: WORLD,
            players: 8,
            cheaters: 0,
            mix: "movement=10,state=2,critical=1".parse().unwrap(),
            ramp: Duration::from_millis(200),
            duration: Duration::from_secs(2),
            connect_parallel: 8,
            map: (400.0, 400.0),
            max_speed: 10.0,
            origin_key: Some(net.origin_key),
            origin_admin: http(net.origin_admin),
            bind: "127.0.0.1".parse().unwrap(),
            players_per_socket: 3,
            ping_interval: Some(Duration::from_secs(2)),
            idle_timeout: Some(Duration::from_secs(5)),
            spectators: 6,
            spectator_delay: Duration::ZERO,
            spectator_mode: BandwidthMode::Full,
            relay_admin: http(net.relays[0].admin),
            baseline: Some(fanout::Host::Thread),
            flood: None,
        };
        let run = run(opts, |_, _| {}, std::future::pending()).await.unwrap();
        let r = &run.report;
        assert_eq!(r.playing, 8, "{:?}", r.errors);
        assert_eq!(r.events_lost, 0);
        assert!(r.counts.answered > 0 && r.counts.moves_sent > 0);
        let applied = skylane_ops::counted(&net.origin_metrics.actions, "applied");
        assert!(
            applied >= r.counts.applied,
            "{applied} < {}",
            r.counts.applied
        );
        let origin = run.origin.expect("origin counts");
        assert!(origin.consistent, "{origin:?}");
        // The players traded (gifts, offers accepted) and the ledger kept
        // every total.
        let ledger = run.ledger.expect("the origin keeps a ledger");
        assert!(ledger.conserved, "{ledger:?}");
        assert!(ledger.transactions > 8, "grants and trades: {ledger:?}");
        assert!(r.counts.offers_made > 0, "{:?}", r.counts);
        assert!(
            !origin.restarted,
            "the origin's start time was read twice: {origin:?}"
        );
        assert!(worst_p99_us(r) > 0);
        // The audience watched, nothing early.
        let a = r.audience.as_ref().expect("audience");
        assert_eq!((a.spectators, a.failed, a.early()), (6, 0, 0), "{a:?}");
        assert!(a.delays[0].frames > 0, "{a:?}");
        // The relay's cost over the steady phase, and the baseline beside it.
        let cost = run.relay.expect("relay cost");
        assert!(cost.spectator_frames > 0 && cost.cpu_s > 0.0, "{cost:?}");
        let f = run.fanout.expect("baseline");
        assert_eq!(f.raw_quinn.connections, 6);
        assert!(
            f.raw_quinn.frames > 0 && f.ratio.is_some_and(|r| r > 0.0),
            "{f:?}"
        );
        let json = run.json();
        assert!(json["fanout"]["ratio"].as_f64().is_some(), "{json}");
        assert!(json["relay_cost"]["cpu_us_per_frame"].as_f64().is_some());
        // The path's floor was measured while the players played.
        let p = run.path.expect("path baseline");
        assert!(
            p.raw_udp_rtt.count > 10 && p.raw_quinn_rtt.count > 10,
            "{p:?}"
        );
        assert!(
            json["path_baseline"]["raw_quinn_rtt"]["p50_us"]
                .as_u64()
                .unwrap()
                > 0
        );
        net.shutdown().await;
    }
}
