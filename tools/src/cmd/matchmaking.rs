//! `skylane match queue`: queue a ticket through a matchmaker with the SDK
//! (measuring the relays when given their CA), wait for the match and print
//! it; `--play` then connects to the world with the match's token and
//! prints the world's state changes until it ends (or `--for` passes).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use skylane_client::{Client, ClientEvent, Matchmaker};
use skylane_proto::matchmaking::QueueRequest;

/// `skylane match ...`.
#[derive(Debug, Subcommand)]
pub(crate) enum MatchCmd {
    /// Queue a ticket and wait for its match.
    Queue(QueueCmd),
}

impl MatchCmd {
    pub(crate) fn run(self) -> anyhow::Result<()> {
        match self {
            Self::Queue(c) => c.run(),
        }
    }
}

/// Options of `skylane match queue`.
#[derive(Debug, Args)]
pub(crate) struct QueueCmd {
    /// Matchmaker URL (`http://host:7700`); repeat for standbys.
    #[arg(long = "matchmaker", required = true)]
    matchmakers: Vec<String>,
    /// The player's token (`skylane token issue`).
    #[arg(long, env = "SKYLANE_TOKEN")]
    token: String,
    /// The game.
    #[arg(long)]
    game: String,
    /// Another party member's token (repeat).
    #[arg(long = "party")]
    party: Vec<String>,
    /// The relays' CA certificate (PEM): relays are measured before queueing
    /// (without it the matchmaker estimates from coordinates or GeoIP).
    #[arg(long)]
    ca: Option<PathBuf>,
    /// Where the player is, `LAT,LON`, when not measuring.
    #[arg(long)]
    coords: Option<String>,
    /// Connect to the world once matched and print its state changes.
    #[arg(long)]
    play: bool,
    /// With `--play`: stop after this long (e.g. 30s).
    #[arg(long = "for", value_parser = humantime::parse_duration, default_value = "60s")]
    play_for: Duration,
    /// Print the match as JSON.
    #[arg(long)]
    json: bool,
}

fn coords(s: &str) -> anyhow::Result<(f64, f64)> {
    let (a, b) = s.split_once(',').context("--coords takes LAT,LON")?;
    Ok((a.trim().parse()?, b.trim().parse()?))
}

impl QueueCmd {
    pub(crate) fn run(self) -> anyhow::Result<()> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        rt.block_on(self.go())
    }

    async fn go(self) -> anyhow::Result<()> {
        let ca = match &self.ca {
            Some(p) => Some(
                std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?,
            ),
            None => None,
        };
        let mut mm = Matchmaker::new(self.matchmakers.clone());
        if let Some(ca) = &ca {
            mm = mm.ca_pem(ca.clone());
        }
        let relay_rtt_ms = if ca.is_some() {
            let relays = mm.relays().await?;
            let measured = mm.measure(&relays).await;
            eprintln!(
                "measured {} of {} relays: {measured:?}",
                measured.len(),
                relays.len()
            );
            measured
        } else {
            Default::default()
        };
        let request = QueueRequest {
            game: self.game.clone(),
            party: self.party.clone(),
            relay_rtt_ms,
            coords: self.coords.as_deref().map(coords).transpose()?,
        };
        let mut ticket = mm.queue_request(&self.token, request).await?;
        eprintln!("queued ticket {}", ticket.id());
        let found = ticket.wait().await?;
        if self.json {
            println!("{}", serde_json::to_string_pretty(&found)?);
        } else {
            println!(
                "matched: world {} on {} (worst estimated RTT {} ms), team {} of {:?}, waited {} ms",
                found.world,
                found.origin,
                found.worst_rtt_ms,
                found.team,
                found.teams,
                ticket.status().waited_ms
            );
            for r in &found.relays {
                println!(
                    "  relay {} {} ({}): estimated {:?} ms",
                    r.id, r.addr, r.region, r.estimated_rtt_ms
                );
            }
        }
        if !self.play {
            return Ok(());
        }
        let ca = ca.context("--play needs --ca")?;
        let mut client = Client::builder()
            .matched(&found)
            .ca_pem(ca)
            .connect()
            .await
            .context("connecting to the world")?;
        let deadline = tokio::time::Instant::now() + self.play_for;
        while let Ok(Some(ev)) = tokio::time::timeout_at(deadline, client.next_event()).await {
            match ev {
                ClientEvent::World(ws) => {
                    println!("world {}: {:?} {:?}", found.world, ws.phase, ws.result);
                    if ws.phase == skylane_proto::WorldPhase::Ended {
                        break;
                    }
                }
                ClientEvent::Error(e) => anyhow::bail!("{e}"),
                _ => {}
            }
        }
        client.close().await;
        Ok(())
    }
}
