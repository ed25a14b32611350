//! A fleet of bots: connects them (bounded parallelism, optional ramp), lets them
//! play for a duration or until interrupted, stops them and collects what each
//! measured. Shared by `skylane demo` and `skylane loadgen`.

use std::sync::Arc;
use std::time::Duration;

use skylane_client::{ClientBuilder, ClientError};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::bots::{Bot, BotOutcome, BotPlan, Live};

/// What a run shows while it goes.
#[derive(Debug, Clone, Copy)]
pub enum Phase {
    /// Players connecting: (connected, total).
    Connecting(usize, usize),
    /// Spectators connecting: (connected, total).
    Watching(usize, usize),
    /// Playing: elapsed of total.
    Playing(Duration, Duration),
    /// Collecting results.
    Finishing,
}

/// Runs `attempt` like a player pressing "retry": up to three tries, backing off,
/// while the error is retryable (a handshake times out when thousands connect at
/// once).
pub async fn retrying<T, F, Fut>(mut attempt: F) -> Result<T, ClientError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, ClientError>>,
{
    let mut tries = 0;
    loop {
        tries += 1;
        match attempt().await {
            Err(e) if tries < 3 && e.is_retryable() => {
                tokio::time::sleep(Duration::from_millis(500 * tries)).await;
            }
            r => return r,
        }
    }
}

/// One player to start.
#[derive(Debug)]
pub struct Recruit {
    /// Player name (the token's subject).
    pub name: String,
    /// A builder with token, world, trust and relays set.
    pub builder: ClientBuilder,
    /// What it does.
    pub plan: BotPlan,
}

/// Options of [`run`].
#[derive(Debug, Clone, Copy)]
pub struct FleetOptions {
    /// Players.
    pub players: usize,
    /// Connections in progress at once.
    pub connect_parallel: usize,
    /// Connections are spread evenly over this time (players play as soon as
    /// they are connected).
    pub ramp: Duration,
    /// How long everyone plays once all have connected.
    pub duration: Duration,
}

/// What a fleet run produced.
#[derive(Debug)]
pub struct Fleet {
    /// Each connected player's index and outcome.
    pub outcomes: Vec<(usize, BotOutcome)>,
    /// Time from the first connection attempt to the stop (rates are averaged
    /// over it).
    pub elapsed: Duration,
    /// Time from the last connection to the stop (everyone playing).
    pub steady: Duration,
    /// Players that could not connect or be created.
    pub connect_failures: usize,
    /// The first such failure.
    pub first_error: Option<String>,
}

impl Fleet {
    /// The fleet, or why no player played (the first connection error).
    pub fn require_players(self) -> Result<Self, String> {
        if self.outcomes.is_empty() {
            Err(self.first_error.unwrap_or_else(|| "interrupted".into()))
        } else {
            Ok(self)
        }
    }
}

/// Runs a fleet. `recruit(i)` makes player `i`; `progress` is called about four
/// times a second; `interrupt` ends the run early when it resolves.
pub async fn run(
    opts: FleetOptions,
    mut recruit: impl FnMut(usize) -> Result<Recruit, String>,
    live: Arc<Live>,
    mut progress: impl FnMut(Phase, &Live),
    interrupt: impl std::future::Future<Output = ()>,
) -> Fleet {
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut connecting: JoinSet<(usize, String, BotPlan, Result<_, ClientError>)> = JoinSet::new();
    let mut playing = JoinSet::new();
    let mut connected = 0;
    let mut failures = 0;
    let mut first_error = None;
    let start = Instant::now();
    let mut next = 0;
    tokio::pin!(interrupt);
    let mut interrupted = false;
    while !interrupted && (next < opts.players || !connecting.is_empty()) {
        while next < opts.players && connecting.len() < opts.connect_parallel.max(1) {
            let due = start + opts.ramp.mul_f64(next as f64 / opts.players.max(1) as f64);
            if Instant::now() < due && !connecting.is_empty() {
                break;
            }
            tokio::time::sleep_until(due).await;
            let i = next;
            next += 1;
            match recruit(i) {
                Ok(r) => {
                    connecting.spawn(async move {
                        (
                            i,
                            r.name,
                            r.plan,
                            retrying(|| r.builder.clone().connect()).await,
                        )
                    });
                }
                Err(e) => {
                    failures += 1;
                    first_error.get_or_insert(e);
                }
            }
        }
        let wait = start + opts.ramp.mul_f64(next as f64 / opts.players.max(1) as f64);
        tokio::select! {
            r = connecting.join_next(), if !connecting.is_empty() => {
                if let Some(Ok((i, name, plan, r))) = r {
                    match r {
                        Ok(client) => {
                            connected += 1;
                            let bot = Bot::new(client, &name, plan, i as u64, live.clone());
                            let rx = stop_rx.clone();
                            playing.spawn(async move { (i, bot.run(rx).await) });
                        }
                        Err(e) => {
                            failures += 1;
                            first_error.get_or_insert(format!("{name}: {e}"));
                        }
                    }
                }
            }
            () = tokio::time::sleep_until(wait), if next < opts.players => {}
            () = &mut interrupt => interrupted = true,
        }
        progress(Phase::Connecting(connected, opts.players), &live);
    }
    connecting.abort_all();

    let played = Instant::now();
    let end = played + opts.duration;
    let mut ui = tokio::time::interval(Duration::from_millis(250));
    if !interrupted {
        loop {
            tokio::select! {
                _ = ui.tick() => {}
                () = &mut interrupt => break,
                () = tokio::time::sleep_until(end) => break,
            }
            progress(Phase::Playing(played.elapsed(), opts.duration), &live);
        }
    }
    let steady = played.elapsed();
    let elapsed = start.elapsed();
    progress(Phase::Finishing, &live);
    let _ = stop_tx.send(true);
    let mut outcomes = Vec::new();
    while let Some(r) = playing.join_next().await {
        if let Ok(x) = r {
            outcomes.push(x);
        }
    }
    outcomes.sort_by_key(|(i, _)| *i);
    Fleet {
        outcomes,
        elapsed,
        steady,
        connect_failures: failures,
        first_error,
    }
}
