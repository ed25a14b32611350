//! `skylane replay`: re-execute a world's journal and check it tick by tick.

use std::path::PathBuf;

use anyhow::{bail, Context as _};
use clap::Args;
use skylane_origin::{replay, Arena, Journal, TicTacToe};

/// Options of `skylane replay`.
#[derive(Debug, Args)]
pub(crate) struct ReplayCmd {
    /// The world's journal (a redb file written by the origin).
    #[arg(long)]
    log: PathBuf,
    /// Refuse the journal unless it belongs to this world id.
    #[arg(long)]
    world: Option<u64>,
    /// Print the report as one JSON object.
    #[arg(long)]
    json: bool,
}

fn hex(h: &skylane_proto::Hash32) -> String {
    h.0.iter().map(|b| format!("{b:02x}")).collect()
}

impl ReplayCmd {
    pub(crate) fn run(self) -> anyhow::Result<()> {
        let (journal, meta) = Journal::open(&self.log)
            .with_context(|| format!("opening journal {}", self.log.display()))?;
        if let Some(w) = self.world {
            if meta.world.0 != w {
                bail!("{} holds {}, not world-{w}", self.log.display(), meta.world);
            }
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
