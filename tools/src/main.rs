//! `skylane`: the Skylane command-line tool.
//!
//! Operators and developers use it to generate development certificates, manage
//! token keys and issue tokens, and to impair real UDP traffic between processes
//! (`netsim-proxy`), run the whole network on loopback with bots (`demo`), build
//! GeoIP fixtures (`geoip build`) and re-execute journals (`replay`).
//!
//! It is a thin shell: every subcommand parses its flags with clap and calls into the
//! library crates; errors are reported with `anyhow` and a non-zero exit code.

mod cmd;

use clap::{Parser, Subcommand};

/// Skylane: a QUIC edge relay network for real-time games.
#[derive(Debug, Parser)]
#[command(name = "skylane", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a whole network on loopback (origin, three relays, bot players) and
    /// print a report: latency per class, updates/s, conflicts, cheats, losses.
    Demo(cmd::demo::DemoCmd),
    /// Development certificates (CA, relay and origin leaves).
    #[command(subcommand)]
    Certs(cmd::certs::CertsCmd),
    /// Session tokens: key pairs, issuing and checking tokens.
    #[command(subcommand)]
    Token(cmd::token::TokenCmd),
    /// A UDP impairment proxy (latency, jitter, loss, bandwidth) between real
    /// processes, controllable while it runs (partition, heal, spike) from stdin.
    NetsimProxy(cmd::proxy::ProxyCmd),
    /// Re-execute a world's journal, check its state hash tick by tick, and report the
    /// first divergent tick and the entities that differ (exit code 3 if diverged).
    Replay(cmd::replay::ReplayCmd),
    /// Drive a running network with bot players; report latency per class,
    /// throughput, conflicts and losses, and compare with the origin's counts.
    Loadgen(Box<cmd::loadgen::LoadgenCmd>),
    /// The raw quinn fan-out baseline's server (run by `loadgen --baseline`).
    #[command(hide = true)]
    FanoutServer(cmd::loadgen::FanoutServerCmd),
    /// Round-trip time and clock offset to a relay (no token needed).
    Probe(cmd::probe::ProbeCmd),
    /// GeoIP fixtures: build a MaxMind-format database from a CSV.
    #[command(subcommand)]
    Geoip(cmd::geoip::GeoipCmd),
    /// A relay's or an origin's state from its admin endpoint (`/status`).
    Status(cmd::admin::StatusCmd),
    /// Drain a relay through its admin endpoint: its clients are sent to other
    /// relays and it exits.
    Drain(cmd::admin::DrainCmd),
    /// Worlds on the control plane, through an origin's admin endpoint:
    /// create, list, end.
    #[command(subcommand)]
    World(cmd::admin::WorldCmd),
    /// Bans on the control plane (every relay refuses the subject and closes
    /// its sessions), through an origin's admin endpoint: add, list, remove.
    #[command(subcommand)]
    Ban(cmd::admin::BanCmd),
    /// Violations an origin's store kept (its detectors' and the edge's),
    /// by player and time, through its admin endpoint.
    Violations(cmd::violations::ViolationsCmd),
    /// Matchmaking through a `skylane-match` service: queue a ticket, wait
    /// for the match, optionally play it.
    #[command(subcommand)]
    Match(cmd::matchmaking::MatchCmd),
    /// Analytics files (Parquet): `summary DIR` prints what they say.
    #[command(subcommand)]
    Analytics(cmd::analytics::AnalyticsCmd),
    /// Content packs: `publish DIR --version V` into a content source,
    /// `show` its verified manifest.
    #[command(subcommand)]
    Content(cmd::content::ContentCmd),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Certs(c) => c.run(),
        Command::Token(c) => c.run(),
        Command::NetsimProxy(c) => c.run(),
        Command::Replay(c) => c.run(),
        Command::Demo(c) => c.run(),
        Command::Geoip(c) => c.run(),
        Command::Status(c) => c.run(),
        Command::Drain(c) => c.run(),
        Command::World(c) => c.run(),
        Command::Ban(c) => c.run(),
        Command::Violations(c) => c.run(),
        Command::Match(c) => c.run(),
        Command::Analytics(c) => c.run(),
        Command::Content(c) => c.run(),
        Command::Probe(c) => c.run(),
        Command::Loadgen(c) => c.run(),
        Command::FanoutServer(c) => c.run(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }
}
