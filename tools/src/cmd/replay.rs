//! `skylane replay`: re-execute a world's journal and check it tick by tick,
//! or show the world at one tick (`--at-tick`, where a violation's tick from
//! `skylane violations` leads): what went into the tick and the state after it.

use std::path::PathBuf;

use anyhow::{bail, Context as _};
use clap::Args;
use skylane_origin::{replay, situation, Arena, Journal, JournalMeta, TicTacToe};

/// Options of `skylane replay`.
#[derive(Debug, Args)]
pub(crate) struct ReplayCmd {
    /// The world's journal (a redb file written by the origin).
    #[arg(long)]
    log: PathBuf,
    /// Refuse the journal unless it belongs to this world id.
    #[arg(long)]
    world: Option<u64>,
    /// Show the world at this tick instead: the inputs applied during it
    /// (with their players) and the state after it.
    #[arg(long)]
    at_tick: Option<u64>,
    /// Print the report as one JSON object.
    #[arg(long)]
    json: bool,
}

fn hex(h: &skylane_proto::Hash32) -> String {
    h.0.iter().map(|b| format!("{b:02x}")).collect()
}

impl ReplayCmd {
    fn show(&self, journal: &Journal, meta: &JournalMeta, tick: u64) -> anyhow::Result<()> {
        let found = match meta.world_kind.as_str() {
            "arena" => situation::<Arena>(journal, meta, tick)?,
            "tictactoe" => situation::<TicTacToe>(journal, meta, tick)?,
            other => {
                bail!("journal is for world kind {other:?}; this build replays: arena, tictactoe")
            }
        };
        let Some(s) = found else {
            bail!("{} does not hold tick {tick}", self.log.display());
        };
        if self.json {
            println!("{}", serde_json::to_string(&s)?);
            return Ok(());
        }
        println!(
            "{} at tick {} ({} inputs during it):",
            meta.world,
            s.tick,
            s.inputs.len()
        );
        for (who, input) in &s.inputs {
            let who = who.as_deref().unwrap_or("?");
            match input {
                skylane_origin::Input::Action { session, action } => println!(
                    "  {who} ({session}) action seq {} {:?}, {} bytes",
                    action.seq,
                    action.class,
                    action.payload.len()
                ),
                other => println!("  {who}: {other:?}"),
            }
        }
        println!(
            "state after it:\n{}",
            serde_json::to_string_pretty(&s.state)?
        );
        Ok(())
    }

    pub(crate) fn run(self) -> anyhow::Result<()> {
        let (journal, meta) = Journal::open(&self.log)
            .with_context(|| format!("opening journal {}", self.log.display()))?;
        if let Some(w) = self.world {
            if meta.world.0 != w {
                bail!("{} holds {}, not world-{w}", self.log.display(), meta.world);
            }
        }
        if let Some(tick) = self.at_tick {
            return self.show(&journal, &meta, tick);
        }
        let report = match meta.world_kind.as_str() {
            "arena" => replay::<Arena>(&journal, &meta)?,
            "tictactoe" => replay::<TicTacToe>(&journal, &meta)?,
            other => {
                bail!("journal is for world kind {other:?}; this build replays: arena, tictactoe")
            }
        };
        if self.json {
            println!("{}", serde_json::to_string(&report)?);
        } else {
            println!(
                "{} ({}): {} inputs, {} ticks, {} hashes checked, final state {}",
                meta.world,
                report.world_kind,
                report.inputs,
                report.ticks,
                report.checked,
                hex(&report.final_hash)
            );
            match &report.divergence {
                None => println!("consistent: every recorded state hash matched"),
                Some(d) => {
                    println!(
                        "DIVERGED at tick {}: expected {}, replay gave {}",
                        d.tick,
                        hex(&d.expected),
                        hex(&d.found)
                    );
                    match d.compared_at {
                        Some(t) => println!(
                            "entities differing from the snapshot at tick {t}: {}",
                            d.entities
                                .iter()
                                .map(ToString::to_string)
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                        None => {
                            println!("no snapshot after the divergence to compare entities with")
                        }
                    }
                }
            }
        }
        if report.divergence.is_some() {
            std::process::exit(3);
        }
        Ok(())
    }
}
