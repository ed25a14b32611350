//! `skylane loadgen`: drive a running network with bot players.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;

use super::resolve;
use skylane_proto::ed25519_dalek::pkcs8::DecodePublicKey as _;
use skylane_proto::ed25519_dalek::VerifyingKey;
use skylane_proto::{BandwidthMode, EventClass, TokenSigner, WorldId};
use skylane_tools::fanout::Host;
use skylane_tools::loadgen::{self, LoadgenOptions, Mix};

use super::demo::{ctrl_c, show, with_progress};

#[derive(Debug, Args)]
pub(crate) struct LoadgenCmd {
    /// The relay players connect to (host:port).
    #[arg(long, env = "SKYLANE_LOADGEN_RELAY")]
    relay: String,
    /// Treat --relay as a directory: players ask it for the nearest relays and
    /// probe them.
    #[arg(long)]
    directory: bool,
    /// CA certificate the relays' certificates chain to (PEM).
    #[arg(long, env = "SKYLANE_CA")]
    ca: PathBuf,
    /// Name the relays' certificates are checked against.
    #[arg(long, default_value = "localhost")]
    server_name: String,
    /// Token signing key (PEM, `skylane token keygen`): players' tokens are minted
    /// with it.
    #[arg(long, env = "SKYLANE_TOKEN_KEY")]
    token_key: PathBuf,
    /// Token audience.
    #[arg(long, default_value = "skylane", env = "SKYLANE_TOKEN_AUDIENCE")]
    audience: String,
    /// World to play.
    #[arg(long, default_value_t = 1)]
    world: u64,
    /// Bot players.
    #[arg(long, default_value_t = 100)]
    players: usize,
    /// Of them, cheaters (teleports, shots inside the cooldown, one flood each).
    #[arg(long, default_value_t = 0)]
    cheaters: usize,
    /// Movement updates per second per player (same as movement= in --mix).
    #[arg(long)]
    rate: Option<f64>,
    /// Per-player rates per second: movement=10,state=0.5,critical=0.2,bulk=0,ping=1 (ping: origin pings, the whole path without the tick).
    #[arg(
        long,
        default_value = "movement=10,state=0.5,critical=0.2,bulk=0,ping=1"
    )]
    mix: Mix,
    /// Steady-state duration after the ramp.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Connections are spread evenly over this time.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    ramp: Duration,
    /// Connections in progress at once.
    #[arg(long, default_value_t = 64)]
    connect_parallel: usize,
    /// Side of the world's square map (moves stay on it).
    #[arg(long, default_value_t = 1000.0)]
    map_size: f32,
    /// The world's speed limit, units per second (bots walk at half of it).
    #[arg(long, default_value_t = 10.0)]
    max_speed: f32,
    /// The origin's batch-signing public key (PEM): every player verifies every
    /// batch's signature and hash chain.
    #[arg(long)]
    origin_key: Option<PathBuf>,
    /// The origin's admin address (e.g. http://127.0.0.1:9500): its action counts
    /// are compared with what the players were answered.
    #[arg(long)]
    origin_admin: Option<String>,
    /// Local address the players bind (the relay's connections-per-IP limit
    /// applies to it).
    #[arg(long, default_value = "0.0.0.0")]
    bind: IpAddr,
    /// Players sharing one UDP socket (each socket's receive buffers cost about
    /// 2 MB).
    #[arg(long, default_value_t = 32)]
    players_per_socket: usize,
    /// The players' clock-sync ping interval (default: the SDK's, 1 s). Every
    /// ping is a round trip the relay answers; lengthen it to drive many more
    /// idle players from one machine.
    #[arg(long, value_parser = humantime::parse_duration)]
    ping_interval: Option<Duration>,
    /// The players' QUIC idle timeout (default: the SDK's, 3 s); their
    /// keep-alive runs at a quarter of it.
    #[arg(long, value_parser = humantime::parse_duration)]
    idle_timeout: Option<Duration>,
    /// Spectators watching the world through the relay (they connect first).
    #[arg(long, default_value_t = 0)]
    spectators: usize,
    /// Their delay behind live play.
    #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
    spectator_delay: Duration,
    /// Their bandwidth mode: full, keyframes or reduced=HZ.
    #[arg(long, default_value = "reduced=10", value_parser = skylane_tools::audience::parse_mode)]
    spectator_mode: BandwidthMode,
    /// The relay's admin address (e.g. http://127.0.0.1:9433): its CPU time,
    /// resident memory and spectator frames are read over the steady phase.
    #[arg(long)]
    relay_admin: Option<String>,
    /// Raw baselines from a bare quinn server (a `skylane fanout-server`
    /// process): raw UDP and quinn datagram echo round trips while the players
    /// play; with --spectators and --relay-admin, after the run, fan-out to as
    /// many connections at the same frame rate and size (CPU per frame).
    #[arg(long)]
    baseline: bool,
    /// Each cheater also floods one class for the whole run at this rate,
    /// `CLASS=RATE` (messages per second, no cap: `--duration` bounds it), e.g.
    /// `--cheaters 2 --flood chat=500` to watch the edge guard cut them.
    #[arg(long, value_parser = skylane_tools::loadgen::parse_flood)]
    flood: Option<(EventClass, f64)>,
    /// Fail (exit 2) when any class's event-latency p99 exceeds this many ms.
    #[arg(long)]
    max_p99: Option<f64>,
    /// Print the report as one JSON object.
    #[arg(long)]
    json: bool,
}

impl LoadgenCmd {
    pub(crate) fn run(self) -> anyhow::Result<()> {
        let relay = resolve(&self.relay)?;
        let ca_pem = std::fs::read_to_string(&self.ca)
            .with_context(|| format!("reading {}", self.ca.display()))?;
        let key = std::fs::read_to_string(&self.token_key)
            .with_context(|| format!("reading {}", self.token_key.display()))?;
        let tokens = TokenSigner::from_pem(&key)
            .with_context(|| format!("token key {}", self.token_key.display()))?;
        let origin_key = match &self.origin_key {
            Some(p) => {
                let pem = std::fs::read_to_string(p)
                    .with_context(|| format!("reading {}", p.display()))?;
                Some(
                    VerifyingKey::from_public_key_pem(&pem)
                        .map_err(|e| anyhow::anyhow!("origin key {}: {e}", p.display()))?,
                )
            }
            None => None,
        };
        let mut mix = self.mix;
        if let Some(r) = self.rate {
            anyhow::ensure!((0.0..=60.0).contains(&r), "--rate must be in [0, 60]");
            mix.movement = r;
        }
        anyhow::ensure!(self.players > 0, "--players must be at least 1");
        let opts = LoadgenOptions {
            relay,
            directory: self.directory,
            server_name: self.server_name,
            ca_pem,
            tokens: Arc::new(tokens),
            audience: self.audience,
            world: WorldId(self.world),
            players: self.players,
            cheaters: self.cheaters.min(self.players),
            mix,
            ramp: self.ramp,
            duration: self.duration,
            connect_parallel: self.connect_parallel.max(1),
            map: (self.map_size, self.map_size),
            max_speed: self.max_speed,
            origin_key,
            origin_admin: self.origin_admin,
            bind: self.bind,
            players_per_socket: self.players_per_socket.max(1),
            ping_interval: self.ping_interval,
            idle_timeout: self.idle_timeout,
            spectators: self.spectators,
            spectator_delay: self.spectator_delay,
            spectator_mode: self.spectator_mode,
            relay_admin: self.relay_admin,
            baseline: if self.baseline {
                Some(Host::Process(std::env::current_exe()?))
            } else {
                None
            },
            flood: self.flood,
        };

        let run = with_progress(|pb| {
            loadgen::run(opts, move |phase, live| show(&pb, phase, live), ctrl_c())
        })?;
        let (report, origin) = (&run.report, run.origin);
        if self.json {
            println!("{}", run.json());
        } else {
            print!("{}", report.text());
            if let Some(o) = origin {
                println!(
                    "origin        counted {} outcomes ({} applied): {} answers to players + {} of {} moves; {}",
                    o.outcomes,
                    o.applied,
                    o.players_answered,
                    o.moves_counted,
                    o.moves_sent,
                    if o.restarted {
                        "NOT COMPARABLE: the origin restarted during the run"
                    } else if o.consistent {
                        "consistent"
                    } else {
                        "INCONSISTENT"
                    }
                );
            }
            if let Some(r) = run.relay {
                let per_frame = match r.cpu_us_per_frame {
                    Some(c) => format!("{c:.2} µs CPU/frame"),
                    None => "no spectators".to_owned(),
                };
                println!(
                    "relay cost    {:.2} s CPU in {:.1} s; {} spectator frames: {per_frame}; resident {:.1} MiB -> {:.1} MiB ({:.1} KiB per connection)",
                    r.cpu_s,
                    r.elapsed_s,
                    r.spectator_frames,
                    r.resident_before as f64 / 1048576.0,
                    r.resident_loaded as f64 / 1048576.0,
                    r.bytes_per_connection / 1024.0
                );
            }
            if let Some(p) = &run.path {
                let ms = |us: u64| us as f64 / 1000.0;
                let q = &p.raw_quinn_rtt;
                println!(
                    "raw path      echo round trip during the run: UDP p50 {:.2} / p99 {:.2} ms; quinn datagram p50 {:.2} / p99 {:.2} ms",
                    ms(p.raw_udp_rtt.p50_us), ms(p.raw_udp_rtt.p99_us), ms(q.p50_us), ms(q.p99_us)
                );
                if let Some(r) = &report.origin_rtt {
                    println!(
                        "  origin ping (whole path, no tick) / quinn datagram round trip: p50 {:.1}x, p99 {:.1}x",
                        r.p50_us as f64 / q.p50_us.max(1) as f64,
                        r.p99_us as f64 / q.p99_us.max(1) as f64
                    );
                }
                for (class, r) in &report.action_rtt {
                    println!(
                        "  {class:<9} action round trip / quinn datagram round trip: p50 {:.1}x, p99 {:.1}x",
                        r.p50_us as f64 / q.p50_us.max(1) as f64,
                        r.p99_us as f64 / q.p99_us.max(1) as f64
                    );
                }
            }
            if let Some(f) = run.fanout {
                let q = f.raw_quinn;
                let cpu = match f.ratio {
                    Some(r) => format!(
                        "{:.2} µs CPU/frame; relay/raw = {r:.2}x",
                        q.cpu_us_per_frame
                    ),
                    None => "(idle connections)".to_owned(),
                };
                println!(
                    "raw quinn     {} connections, {:.1} frames/s of {} B each: {} frames, {:.2} s CPU: {cpu}; {:.1} KiB per connection (relay/raw = {:.2}x)",
                    q.connections, q.frame_hz, q.frame_bytes, q.frames, q.cpu_s,
                    q.bytes_per_connection / 1024.0, f.memory_ratio
                );
            }
        }
        if let (Some(l), false) = (run.ledger, self.json) {
            println!(
                "ledger        {} transactions committed; coins held {} (minted {}), items held {} (minted {}); {}",
                l.transactions,
                l.after.coins_held,
                l.after.coins_minted,
                l.after.items_held,
                l.after.items_minted,
                if l.conserved { "conserved" } else { "NOT CONSERVED" }
            );
        }
        let mut failed = Vec::new();
        if report.events_lost > 0 {
            failed.push(format!("{} events lost or duplicated", report.events_lost));
        }
        if let Some(a) = report.audience.as_ref().filter(|a| a.early() > 0) {
            failed.push(format!("{} spectator frames released early", a.early()));
        }
        match origin {
            Some(o) if o.restarted => failed.push(
                "the origin restarted during the run: its counts cannot be checked".to_owned(),
            ),
            Some(o) if !o.consistent => {
                failed.push("the origin's counts do not match the players'".to_owned());
            }
            _ => {}
        }
        if let Some(l) = run.ledger.filter(|l| !l.conserved) {
            failed.push(format!(
                "the ledger was not conserved: coins held {} -> {} with {} -> {} minted, items held {} -> {} with {} -> {} picked up, {} transactions refused",
                l.before.coins_held,
                l.after.coins_held,
                l.before.coins_minted,
                l.after.coins_minted,
                l.before.items_held,
                l.after.items_held,
                l.before.items_minted,
                l.after.items_minted,
                l.after.refused - l.before.refused,
            ));
        }
        if let Some(a) = report.audience.as_ref().filter(|a| a.failed > 0) {
            failed.push(format!("{} spectators were refused or failed", a.failed));
        }
        let c = &report.counts;
        for class in EventClass::ALL {
            let (sent, applied) = (
                c.sent_by_class[class.rank()],
                c.applied_by_class[class.rank()],
            );
            if sent > 0 && applied == 0 {
                failed.push(format!("every {class} action was refused ({sent} sent)"));
            }
        }
        if let Some(max) = self.max_p99 {
            let worst = loadgen::worst_p99_us(report) as f64 / 1000.0;
            if worst > max {
                failed.push(format!(
                    "event latency p99 {worst:.1} ms > --max-p99 {max} ms"
                ));
            }
        }
        if !failed.is_empty() {
            eprintln!("loadgen failed: {}", failed.join("; "));
            std::process::exit(2);
        }
        Ok(())
    }
}

/// `skylane fanout-server`: the raw quinn baseline's server process (started by
/// `skylane loadgen --baseline`, not by hand).
#[derive(Debug, Args)]
pub(crate) struct FanoutServerCmd {
    /// Address to bind, as JSON (e.g. "127.0.0.1:0").
    #[arg(long)]
    bind: String,
}

impl FanoutServerCmd {
    pub(crate) fn run(self) -> anyhow::Result<()> {
        let bind: std::net::SocketAddr = serde_json::from_str(&self.bind).context("--bind")?;
        // The same runtime as the relay's: multi-threaded, one worker per core.
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?;
        rt.block_on(skylane_tools::fanout::serve_stdio(bind))?;
        Ok(())
    }
}
