//! `skylane demo`: the whole network on loopback, played by bots, with a report.

use std::time::Duration;

use clap::Args;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use skylane_tools::bots::Live;
use skylane_tools::demo::{self, DemoOptions};
use skylane_tools::fleet::Phase;
use std::sync::atomic::Ordering;

#[derive(Debug, Args)]
pub(crate) struct DemoCmd {
    /// How long the bots play (e.g. 20s, 1m). Ctrl-C ends the run early.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Bot players.
    #[arg(long, default_value_t = 200)]
    players: usize,
    /// Of the players, cheaters (teleports, shots inside the cooldown, floods).
    #[arg(long, default_value_t = 10)]
    cheaters: usize,
    /// Movement updates per second per player.
    #[arg(long, default_value_t = 10.0)]
    rate: f64,
    /// Origin tick rate.
    #[arg(long, default_value_t = 30)]
    tick_hz: u32,
    /// Spectators (half live, half --spectator-delay behind, 10 Hz each).
    #[arg(long, default_value_t = 50)]
    spectators: usize,
    /// The public spectators' delay (e.g. 2s, 30s; at most 120s).
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    spectator_delay: Duration,
    /// One player in N verifies every batch's signature and hash chain.
    #[arg(long, default_value_t = 10)]
    verify_every: usize,
    /// Tic-tac-toe rooms created on the control plane while the demo runs (two
    /// bots each, played to the end).
    #[arg(long, default_value_t = 10)]
    rooms: usize,
    /// Arena rooms created while it runs (four bots each, ended at the end).
    #[arg(long, default_value_t = 2)]
    arena_rooms: usize,
    /// Kill a primary this far into the run (e.g. 10s): the demo runs two
    /// origins, rooms get a standby on the other one, and the report shows
    /// the failover time and what was lost (must be nothing).
    #[arg(long, value_parser = humantime::parse_duration)]
    kill_primary_at: Option<Duration>,
    /// Also run one arena world split into zones, COLSxROWS (e.g. 2x2),
    /// spread over two origins (each zone with a standby on the other),
    /// played by --zone-players bots walking across borders; the report
    /// shows handoffs, their latency, and what was lost (must be nothing).
    #[arg(long, value_parser = parse_zones)]
    zones: Option<(u16, u16)>,
    /// Bots in the zoned world.
    #[arg(long, default_value_t = 100)]
    zone_players: usize,
    /// Write analytics rows as Parquet files under DIR (read them with
    /// `skylane analytics summary DIR`, DuckDB, pyarrow...); the report
    /// checks them against the network's own counts.
    #[arg(long, value_name = "DIR")]
    analytics: Option<std::path::PathBuf>,
    /// With --analytics: one action outcome in this many is written.
    #[arg(long, default_value_t = 10)]
    sample_actions: u32,
    /// Print the report as one JSON object on stdout.
    #[arg(long)]
    json: bool,
}

/// Runs `f` on a multi-threaded runtime with a progress bar (cleared at the
/// end); `f` gets the bar to draw on.
pub(crate) fn with_progress<T, E, Fut>(f: impl FnOnce(ProgressBar) -> Fut) -> anyhow::Result<T>
where
    Fut: std::future::Future<Output = Result<T, E>>,
    anyhow::Error: From<E>,
{
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let pb = bar();
    let r = rt.block_on(f(pb.clone()));
    pb.finish_and_clear();
    Ok(r?)
}

/// Resolves on Ctrl-C: the interrupt of a demo or load run.
pub(crate) async fn ctrl_c() {
    let _ = tokio::signal::ctrl_c().await;
}

fn bar() -> ProgressBar {
    let pb = ProgressBar::with_draw_target(Some(1000), ProgressDrawTarget::stderr());
    pb.set_style(
        ProgressStyle::with_template("{spinner} {prefix:>10} [{bar:30}] {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    pb
}

fn status(live: &Live) -> String {
    format!(
        "{} playing · {} events · {} actions · {} conflicts · {} cheats caught · {} lost",
        live.playing.load(Ordering::Relaxed),
        live.events.load(Ordering::Relaxed),
        live.actions.load(Ordering::Relaxed),
        live.conflicts.load(Ordering::Relaxed),
        live.cheats_caught.load(Ordering::Relaxed),
        live.lost.load(Ordering::Relaxed),
    )
}

fn connecting(pb: &ProgressBar, n: usize, total: usize, who: &str) {
    pb.set_prefix("connecting");
    pb.set_position((n * 1000 / total.max(1)) as u64);
    pb.set_message(format!("{n}/{total} {who}"));
}

/// Shows a run's phase on the progress bar.
pub(crate) fn show(pb: &ProgressBar, phase: Phase, live: &Live) {
    match phase {
        Phase::Connecting(n, total) => connecting(pb, n, total, "players"),
        Phase::Watching(n, total) => connecting(pb, n, total, "spectators"),
        Phase::Playing(t, total) => {
            pb.set_prefix("playing");
            pb.set_position((t.as_millis() * 1000 / total.as_millis().max(1)).min(1000) as u64);
            pb.set_message(status(live));
        }
        Phase::Finishing => {
            pb.set_prefix("finishing");
            pb.set_message(status(live));
        }
    }
}

impl DemoCmd {
    pub(crate) fn run(self) -> anyhow::Result<()> {
        // The demo draws a progress bar; its servers' logs go to stderr only
        // when asked for (`RUST_LOG=info`).
        if std::env::var_os("RUST_LOG").is_some() {
            skylane_ops::init_logging();
        }
        anyhow::ensure!(self.players > 0, "--players must be at least 1");
        anyhow::ensure!(
            self.rate > 0.0 && self.rate <= 60.0,
            "--rate must be in (0, 60] (the relay's movement limit is 60/s)"
        );
        anyhow::ensure!(self.tick_hz > 0, "--tick-hz must be at least 1");
        let mut opts = DemoOptions {
            duration: self.duration,
            players: self.players,
            cheaters: self.cheaters.min(self.players),
            verify_every: self.verify_every.max(1),
            spectators: self.spectators,
            spectator_delay: self.spectator_delay,
            rooms: self.rooms,
            arena_rooms: self.arena_rooms,
            kill_primary_at: self.kill_primary_at,
            zones: self.zones,
            zone_players: self.zone_players,
            analytics: self.analytics,
            sample_actions: self.sample_actions,
            ..DemoOptions::default()
        };
        opts.plan.rate_hz = self.rate;
        opts.net.tick_hz = self.tick_hz;
        let report = with_progress(|pb| {
            demo::run(opts, move |phase, live| show(&pb, phase, live), ctrl_c())
        })?;
        if self.json {
            println!("{}", serde_json::to_string(&report)?);
        } else {
            print!("{}", report.text());
        }
        anyhow::ensure!(
            report.events_lost == 0,
            "{} events were lost or duplicated",
            report.events_lost
        );
        if let Some(z) = &report.zones {
            anyhow::ensure!(
                z.each_in_one_zone
                    && z.events_lost == 0
                    && z.divergences == 0
                    && z.actions_answered + z.actions_unknown == z.actions_sent,
                "zones: players per zone {:?} ({}), {} events lost, {} standby divergences, {} of {} actions answered",
                z.players_per_zone,
                if z.each_in_one_zone {
                    "each in one zone"
                } else {
                    "not each in one zone"
                },
                z.events_lost,
                z.divergences,
                z.actions_answered + z.actions_unknown,
                z.actions_sent
            );
        }
        if let Some(a) = &report.analytics {
            anyhow::ensure!(
                a.consistent(),
                "analytics: the files do not hold what the network counted: {}",
                a.text().trim()
            );
        }
        if let Some(a) = &report.audience {
            anyhow::ensure!(
                a.early() == 0,
                "{} spectator frames arrived before their delay",
                a.early()
            );
        }
        if let Some(w) = &report.worlds {
            anyhow::ensure!(
                w.unfinished == 0 && w.moves_refused == 0 && w.errors.is_empty(),
                "rooms: {} unfinished, {} moves refused, errors: {:?}",
                w.unfinished,
                w.moves_refused,
                w.errors
            );
            anyhow::ensure!(
                w.events_lost == 0,
                "rooms: {} events lost or repeated",
                w.events_lost
            );
            if let Some(f) = &w.failover {
                anyhow::ensure!(
                    f.taken_over == f.worlds,
                    "failover: only {} of the {} worlds {} owned were taken over",
                    f.taken_over,
                    f.worlds,
                    f.killed
                );
            }
        }
        Ok(())
    }
}

/// `COLSxROWS` (e.g. `2x2`).
fn parse_zones(s: &str) -> Result<(u16, u16), String> {
    let (c, r) = s
        .split_once(['x', 'X'])
        .ok_or_else(|| format!("{s:?}: expected COLSxROWS, e.g. 2x2"))?;
    let n = |v: &str| {
        v.trim()
            .parse::<u16>()
            .ok()
            .filter(|n| (1..=8).contains(n))
            .ok_or_else(|| format!("{v:?}: 1 to 8 zones per side"))
    };
    Ok((n(c)?, n(r)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bar_names_who_is_connecting() {
        let pb = ProgressBar::hidden();
        pb.set_length(1000);
        let live = Live::default();
        show(&pb, Phase::Connecting(50, 200), &live);
        assert_eq!(pb.message(), "50/200 players");
        assert_eq!(pb.position(), 250);
        show(&pb, Phase::Watching(5, 50), &live);
        assert_eq!(pb.prefix(), "connecting");
        assert_eq!(pb.message(), "5/50 spectators");
        assert_eq!(pb.position(), 100);
        show(
            &pb,
            Phase::Playing(Duration::from_secs(5), Duration::from_secs(20)),
            &live,
        );
        assert_eq!(pb.prefix(), "playing");
        assert_eq!(pb.position(), 250);
    }

    #[test]
    fn zones_are_cols_by_rows() {
        assert_eq!(parse_zones("2x2"), Ok((2, 2)));
        assert_eq!(parse_zones("4X1"), Ok((4, 1)));
        assert!(parse_zones("2").is_err());
        assert!(parse_zones("0x2").is_err());
        assert!(parse_zones("9x1").is_err());
    }
}
