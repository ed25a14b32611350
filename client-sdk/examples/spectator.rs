//! A spectator: watches a world's public feed through a relay, a chosen delay
//! behind live play, and prints how many frames came and how late they were
//! against world time + delay (never early: the relay holds them back).
//!
//! Against a local origin and relay (see the README, "Client SDK examples"):
//!
//! ```sh
//! TOKEN=$(cargo run -q --bin skylane -- token issue --key pki/token.key --sub fan --role spectator --world 1)
//! cargo run -p skylane-client --example spectator -- \
//!     --relay 127.0.0.1:4433 --ca pki/ca.pem --token "$TOKEN" --delay-ms 2000 --seconds 10
//! ```
//!
//! Options: `--relay ADDR` (repeatable), `--ca FILE`, `--token TOKEN` (a
//! spectator token), `--world ID` (default 1), `--delay-ms MS` (default 0),
//! `--hz N` (reduced to N updates a second; default: every event), `--seconds N`
//! (default 10).

use std::net::SocketAddr;
use std::time::Duration;

use skylane_client::{Client, Spectator};
use skylane_proto::{BandwidthMode, SpectatorFilter, WorldId};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut relays: Vec<SocketAddr> = Vec::new();
    let (mut ca, mut token, mut world, mut delay_ms, mut hz, mut seconds) =
        (String::new(), String::new(), 1u64, 0u64, None::<u16>, 10u64);
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or(format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--relay" => relays.push(value.parse()?),
            "--ca" => ca = value,
            "--token" => token = value,
            "--world" => world = value.parse()?,
            "--delay-ms" => delay_ms = value.parse()?,
            "--hz" => hz = Some(value.parse()?),
            "--seconds" => seconds = value.parse()?,
            other => return Err(format!("unknown option {other}").into()),
        }
    }
    if relays.is_empty() || ca.is_empty() || token.is_empty() {
        return Err("usage: spectator --relay ADDR --ca FILE --token TOKEN [--world ID] [--delay-ms MS] [--hz N] [--seconds N]".into());
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let builder = Client::builder()
            .token(token)
            .world(WorldId(world))
            .relays(relays)
            .ca_pem(std::fs::read_to_string(&ca)?);
        let mode = hz.map_or(BandwidthMode::Full, |hz| BandwidthMode::Reduced { hz });
        let delay = Duration::from_millis(delay_ms);
        let mut s = Spectator::connect(builder, SpectatorFilter::all(), delay, mode).await?;
        println!("watching world {world} {delay_ms} ms behind through {:?}", s.client().relay());
        let (mut frames, mut keyframes, mut events, mut early) = (0u64, 0u64, 0u64, 0u64);
        let mut late_ms: Vec<f64> = Vec::new();
        let end = tokio::time::Instant::now() + Duration::from_secs(seconds);
        loop {
            tokio::select! {
                () = tokio::time::sleep_until(end) => break,
                f = s.next_frame() => {
                    let f = f?;
                    frames += 1;
                    keyframes += u64::from(f.keyframe);
                    events += f.events.len() as u64;
                    let bound = s.client().stats().clock_error_us.unwrap_or(0) as i64;
                    match s.lateness_us(&f) {
                        Some(l) if l < -bound => early += 1,
                        Some(l) => late_ms.push(l as f64 / 1000.0),
                        None => {}
                    }
                }
            }
        }
        late_ms.sort_by(f64::total_cmp);
        let pct = |p: f64| late_ms.get(((late_ms.len() as f64 - 1.0) * p) as usize).copied().unwrap_or(0.0);
        println!("{frames} frames ({keyframes} keyframes, {events} events), {early} early");
        println!(
            "lateness vs world time + delay: p50 {:.1} ms, p99 {:.1} ms (the first frames are the catch-up from the last keyframe)",
            pct(0.5),
            pct(0.99)
        );
        s.close().await;
        Ok(())
    })
}
