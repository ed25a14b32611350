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

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use skylane_client::Client;
use skylane_proto::ed25519_dalek::VerifyingKey;
use skylane_proto::{Claims, EventClass, Role, TokenSigner, WorldId};

use crate::bots::{BotPlan, Live};
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
}

impl Default for Mix {
    fn default() -> Self {
        Self {
            movement: 10.0,
            state: 0.5,
            critical: 0.2,
            bulk: 0.0,
        }
    }
}

/// Why a mix could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("mix {0:?}: expected CLASS=RATE[,CLASS=RATE...] with classes movement, state, critical, bulk and rates per player per second")]
pub struct MixError(pub String);

impl std::str::FromStr for Mix {
    type Err = MixError;
    fn from_str(s: &str) -> Result<Self, MixError> {
        let mut mix = Self::default();
        for part in s.split(',').filter(|p| !p.trim().is_empty()) {
            let (k, v) = part.split_once('=').ok_or_else(|| MixError(s.into()))?;
            let v: f64 = v.trim().parse().map_err(|_| MixError(s.into()))?;
            if !(0.0..=60.0).contains(&v) {
                return Err(MixError(s.into()));
            }
            match k.trim() {
                "movement" => mix.movement = v,
                "state" => mix.state = v,
                "critical" => mix.critical = v,
                "bulk" => mix.bulk = v,
                _ => return Err(MixError(s.into())),
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
    /// no more moves counted than were sent.
    pub consistent: bool,
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
}

/// Reads `skylane_origin_actions_total` by kind from an origin's admin endpoint.
pub async fn origin_actions(admin: &str) -> Result<BTreeMap<String, u64>, LoadgenError> {
    let url = format!("{}/metrics", admin.trim_end_matches('/'));
    let u = url.clone();
    let body = tokio::task::spawn_blocking(move || {
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
    .map_err(|message| LoadgenError::Admin {
        url: url.clone(),
        message,
    })?;
    Ok(parse_counter(&body, "skylane_origin_actions_total"))
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

/// Runs the load; `progress` and `interrupt` as in [`fleet::run`].
pub async fn run(
    opts: LoadgenOptions,
    mut progress: impl FnMut(Phase, &Live),
    interrupt: impl std::future::Future<Output = ()>,
) -> Result<(Report, Option<OriginCount>), LoadgenError> {
    let before = match &opts.origin_admin {
        Some(a) => Some(origin_actions(a).await?),
        None => None,
    };
    let live = Arc::new(Live::default());
    let ttl = opts.ramp + opts.duration + Duration::from_secs(600);
    let plan = opts.mix.plan(opts.map, opts.max_speed);
    let now = unix_secs();
    let run_id = now % 100_000;
    let mut endpoints: Vec<quinn::Endpoint> = Vec::new();
    let per_socket = opts.players_per_socket.max(1);
    let fleet = fleet::run(
        FleetOptions {
            players: opts.players,
            connect_parallel: opts.connect_parallel,
            ramp: opts.ramp,
            duration: opts.duration,
        },
        |i| {
            let name = format!("load{run_id}-{i:06}");
            let token = opts
                .tokens
                .issue(&Claims::new(
                    &name,
                    Role::Player,
                    vec![opts.world],
                    opts.audience.clone(),
                    now,
                    ttl.as_secs(),
                ))
                .map_err(|e| e.to_string())?;
            let slot = i / per_socket;
            if endpoints.len() <= slot {
                let bind = SocketAddr::new(opts.bind, 0);
                endpoints.push(quinn::Endpoint::client(bind).map_err(|e| format!("{bind}: {e}"))?);
            }
            let endpoint = endpoints[slot].clone();
            let mut b = Client::builder()
                .token(token)
                .world(opts.world)
                .ca_pem(opts.ca_pem.clone())
                .server_name(opts.server_name.clone())
                .endpoint(endpoint);
            b = if opts.directory {
                b.directory(opts.relay)
            } else {
                b.relays([opts.relay])
            };
            if let Some(k) = opts.origin_key {
                b = b.origin_key(k);
            }
            let mut plan = plan;
            if i >= opts.players - opts.cheaters.min(opts.players) {
                plan.cheat_every = 15;
            }
            Ok(Recruit {
                name,
                builder: b,
                plan,
            })
        },
        live,
        &mut progress,
        interrupt,
    )
    .await
    .require_players()
    .map_err(LoadgenError::NoPlayers)?;
    // Let the last outcomes reach the origin's counters.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let merged = merge(fleet.outcomes.iter().map(|(_, o)| o));
    let c = merged.counts;
    let elapsed = fleet.elapsed.as_secs_f64();
    let origin = match (&opts.origin_admin, before) {
        (Some(a), Some(before)) => {
            let after = origin_actions(a).await?;
            let outcomes = total(&after).saturating_sub(total(&before));
            let applied = after.get("applied").copied().unwrap_or(0)
                - before.get("applied").copied().unwrap_or(0);
            let moves_counted = outcomes.saturating_sub(c.answered);
            Some(OriginCount {
                outcomes,
                applied,
                players_answered: c.answered,
                moves_sent: c.moves_sent + c.flood_sent,
                moves_counted,
                consistent: outcomes >= c.answered && moves_counted <= c.moves_sent + c.flood_sent,
            })
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
    let report = Report {
        mode: "loadgen".into(),
        duration_s: fleet.steady.as_secs_f64(),
        players: opts.players,
        playing: merged.playing,
        cheaters: opts.cheaters.min(opts.players),
        rate_hz: opts.mix.movement,
        spectators: 0,
        audience: None,
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
        origin_updates_per_s: origin.map(|o| o.applied as f64 / elapsed),
        moves_sent_per_s: c.moves_sent as f64 / elapsed,
        events_per_s: c.events as f64 / elapsed,
        conflicts: merged.conflicts(),
        cheats: merged.cheats(None, None),
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
    };
    Ok((report, origin))
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
    /// origin; nothing lost.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_short_load_run_matches_the_origins_counts() {
        let net = LocalNet::start(LocalOptions::default()).await.unwrap();
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
            origin_admin: None,
            bind: "127.0.0.1".parse().unwrap(),
            players_per_socket: 3,
        };
        let (r, _) = run(opts, |_, _| {}, std::future::pending()).await.unwrap();
        assert_eq!(r.playing, 8, "{:?}", r.errors);
        assert_eq!(r.events_lost, 0);
        assert!(r.counts.answered > 0 && r.counts.moves_sent > 0);
        let applied = skylane_ops::counted(&net.origin_metrics.actions, "applied");
        assert!(
            applied >= r.counts.applied,
            "{applied} < {}",
            r.counts.applied
        );
        assert!(worst_p99_us(&r) > 0);
        net.shutdown().await;
    }
}
