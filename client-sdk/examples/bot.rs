//! A bot player: connects through the fastest of the given relays, walks its
//! avatar around the arena, trades a coin now and then, and prints what it saw.
//!
//! Against a local origin and relay (see the README, "Client SDK examples"):
//!
//! ```sh
//! TOKEN=$(cargo run -q --bin skylane -- token issue --key pki/token.key --sub alice --world 1)
//! cargo run -p skylane-client --example bot -- \
//!     --relay 127.0.0.1:4433 --ca pki/ca.pem --token "$TOKEN" --name alice --seconds 10
//! ```
//!
//! Options: `--relay ADDR` (repeatable: the client probes them and picks the
//! fastest), `--ca FILE`, `--token TOKEN`, `--name NAME` (the token's subject:
//! how the bot finds its avatar), `--world ID` (default 1),
//! `--origin-key FILE` (verify every batch's signature and hash chain),
//! `--seconds N` (default 10).

use std::net::SocketAddr;
use std::time::Duration;

use skylane_client::{Client, ClientEvent};
use skylane_origin::{ArenaAction, ArenaEvent};
use skylane_proto::ed25519_dalek::pkcs8::DecodePublicKey as _;
use skylane_proto::ed25519_dalek::VerifyingKey;
use skylane_proto::{EventClass, Outcome, WorldId};

struct Args {
    relays: Vec<SocketAddr>,
    ca: String,
    token: String,
    name: String,
    world: u64,
    origin_key: Option<String>,
    seconds: u64,
}

fn args() -> Result<Args, String> {
    let mut a = Args {
        relays: Vec::new(),
        ca: String::new(),
        token: String::new(),
        name: String::new(),
        world: 1,
        origin_key: None,
        seconds: 10,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--relay" => a
                .relays
                .push(value()?.parse().map_err(|e| format!("--relay: {e}"))?),
            "--ca" => a.ca = value()?,
            "--token" => a.token = value()?,
            "--name" => a.name = value()?,
            "--world" => a.world = value()?.parse().map_err(|e| format!("--world: {e}"))?,
            "--origin-key" => a.origin_key = Some(value()?),
            "--seconds" => a.seconds = value()?.parse().map_err(|e| format!("--seconds: {e}"))?,
            other => return Err(format!("unknown option {other}")),
        }
    }
    if a.relays.is_empty() || a.ca.is_empty() || a.token.is_empty() || a.name.is_empty() {
        return Err("usage: bot --relay ADDR --ca FILE --token TOKEN --name NAME [--world ID] [--origin-key FILE] [--seconds N]".into());
    }
    Ok(a)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let a = args()?;
    let mut b = Client::builder()
        .token(a.token)
        .world(WorldId(a.world))
        .relays(a.relays)
        .ca_pem(std::fs::read_to_string(&a.ca)?);
    if let Some(path) = &a.origin_key {
        let pem = std::fs::read_to_string(path)?;
        b = b.origin_key(
            VerifyingKey::from_public_key_pem(&pem).map_err(|e| format!("{path}: {e}"))?,
        );
    }
    let mut client = b.connect().await?;
    println!(
        "connected to {:?}, session {:?}",
        client.relay(),
        client.session()
    );

    let me = client.session();
    let mut avatar = None;
    let mut pos = (0.0f32, 0.0f32);
    let (mut events, mut applied, mut conflicts, mut rejected) = (0u64, 0u64, 0u64, 0u64);
    let mut moves = 0u64;
    let mut step = tokio::time::interval(Duration::from_millis(100));
    let end = tokio::time::Instant::now() + Duration::from_secs(a.seconds);
    let mut n = 0u64;
    loop {
        tokio::select! {
            () = tokio::time::sleep_until(end) => break,
            ev = client.next_event() => match ev {
                Some(ClientEvent::Event(e)) => {
                    events += 1;
                    match ArenaEvent::decode(&e.payload) {
                        // The origin names the player in its spawn event.
                        Some(ArenaEvent::Spawned { entity, player, x, y, .. }) if player == a.name => {
                            avatar = Some(entity);
                            pos = (x, y);
                        }
                        _ => {}
                    }
                }
                // Movement is latest-wins state (the newest per entity), not events.
                Some(ClientEvent::Movement(_)) => moves += 1,
                Some(ClientEvent::Error(e)) => return Err(e.into()),
                Some(ClientEvent::Connected { relay, resumed, .. }) => {
                    println!("on relay {relay} (resumed: {resumed})");
                }
                Some(_) => {}
                None => break,
            },
            _ = step.tick(), if avatar.is_some() => {
                n += 1;
                // Walk a small square; every second, a state action with its outcome.
                let dir = [(0.5, 0.0), (0.0, 0.5), (-0.5, 0.0), (0.0, -0.5)][(n / 20 % 4) as usize];
                pos = (pos.0 + dir.0, pos.1 + dir.1);
                let walk = ArenaAction::Move { x: pos.0, y: pos.1 }.encode();
                if n % 10 == 0 {
                    match client.act(EventClass::State, vec![], walk).await? {
                        Outcome::Applied { .. } => applied += 1,
                        Outcome::Conflict { .. } => conflicts += 1,
                        Outcome::Rejected { .. } | Outcome::Unknown { .. } => rejected += 1,
                    }
                } else {
                    client.send(EventClass::Movement, walk)?;
                }
            }
        }
    }
    let st = client.stats();
    println!("session {me:?}: {events} events, {moves} movement states, {applied} applied, {conflicts} conflicts, {rejected} rejected");
    println!(
        "duplicates dropped {}, resyncs {} ({} events skipped); reconnects {}, relay switches {}",
        st.order.duplicates, st.order.resyncs, st.order.skipped_events, st.reconnects, st.switches
    );
    println!(
        "clock offset {:?} µs (± {:?} µs), rtt {:?} µs",
        st.clock_offset_us, st.clock_error_us, st.rtt_us
    );
    for (i, l) in st.latency.iter().enumerate() {
        if l.count > 0 {
            println!(
                "latency {:<9} {:>6} events  p50 {:>6} µs  p99 {:>6} µs",
                EventClass::ALL[i].name(),
                l.count,
                l.p50_us,
                l.p99_us
            );
        }
    }
    client.close().await;
    Ok(())
}
