//! `skylane-tools`: the library behind the `skylane` command-line tool.
//!
//! * [`geoip`]: MaxMind-format GeoIP databases built from a CSV (demo and tests).
//! * [`local`]: a whole deployment (origin, relays in three regions) in one process
//!   on loopback over real QUIC.
//! * [`bots`]: simulated players that move, trade, mark, spray and (some) cheat,
//!   and count what they see.
//! * [`report`]: the demo's and loadgen's report (text and JSON).
//! * [`audience`]: spectators that watch through the SDK and measure the delay.
//! * [`fleet`]: connects bots, lets them play, collects their outcomes.
//! * [`fanout`]: the raw quinn fan-out baseline of the spectator benchmark.
//! * [`loadgen`]: drives a running network and checks the origin's counts.
//! * [`demo`]: the demo run on [`local`].
//! * [`matchmaking`]: a matchmaker on [`local`] (the demo's rooms queue through it).
//! * [`rooms`]: worlds created while the demo runs, filled and played by bots.
//! * [`probe`]: RTT and clock offset to a relay.
//!
//! The binary (`src/main.rs`) is a thin clap shell over these modules.

pub mod analytics;
pub mod audience;
pub mod bots;
pub mod demo;
pub mod fanout;
pub mod fleet;
pub mod geoip;
pub mod loadgen;
pub mod local;
pub mod matchmaking;
pub mod probe;
pub mod report;
pub mod rooms;
pub mod zoned;
