//! Replication costs and failover time on loopback (docs/benchmarks.md,
//! "Replicated worlds"), over real UDP, TLS and tokens: two origins on an
//! embedded control plane, one relay following it, arena rooms at 240 Hz.
//!
//! 1. Action round trip with 0 and with 1 standby, same run: `players` walkers
//!    step every 50 ms for `seconds` in a room created with `standbys: 0`, then
//!    in one created with `standbys: 1` (an applied outcome then waits for the
//!    standby's acknowledgement of its tick).
//! 2. Failover time over `kills` kills: a room with one standby and one
//!    player; the primary crashes (tasks aborted, sockets closed, lease no
//!    longer renewed); the time from the crash to the player's first world
//!    state from the new owner; a fresh origin replaces the dead one.
//!
//! Run: `cargo run --release -p skylane-tests --example replication -- [players] [seconds] [kills]`

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;
use prometheus_client::registry::Registry;
use skylane_certs::{client_config, relay_server_config, LocalPki};
use skylane_client::{Client, ClientEvent};
use skylane_control::{Embedded, NodeInfo, PlacementHints, SharedControl, WorldRecord, WorldSpec};
use skylane_origin::{ClusterAgent, ClusterNode, Games, OriginMetrics, OriginServer, ServerConfig};
use skylane_proto::{ChainSigner, Claims, Outcome, Role, TokenKeyPair, TokenSigner, WorldId};
use skylane_relay::{
    client_transport, link_transport, Relay, RelayConfig, RelayMaterial, RelayMetrics,
    RelaySettings, TicketKey,
};
use skylane_tests::Walker;

const TTL: Duration = Duration::from_secs(2);
const KEY: [u8; 32] = [42; 32];

fn loopback() -> SocketAddr {
    ([127, 0, 0, 1], 0).into()
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_micros() as u64
}

struct Origin {
    server: OriginServer,
    agent: Option<ClusterAgent>,
    registry: Registry,
}

/// `(sum, count)` of a histogram in a registry's text exposition.
fn histogram(registry: &Registry, name: &str) -> (f64, f64) {
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, registry).expect("encode");
    let value = |suffix: &str| {
        text.lines()
            .find(|l| l.starts_with(&format!("{name}{suffix} ")))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (value("_sum"), value("_count"))
}

struct Bench {
    pki: LocalPki,
    tokens: TokenSigner,
    control: SharedControl,
    relay: SocketAddr,
    origins: BTreeMap<String, Origin>,
    next: usize,
}

impl Bench {
    async fn add_origin(&mut self) {
        self.next += 1;
        let name = format!("origin-{}", self.next);
        let mut sc =
            skylane_certs::origin_server_config(&self.pki.origin, self.pki.roots().expect("roots"))
                .expect("tls");
        sc.transport_config(Arc::new(link_transport()));
        let ep = quinn::Endpoint::server(sc, loopback()).expect("bind");
        let addr = ep.local_addr().expect("addr");
        let mut registry = Registry::default();
        let mut server = OriginServer::host(
            ep,
            ServerConfig::new(now_us()),
            OriginMetrics::new(&mut registry),
        );
        let mut repl =
            skylane_certs::repl_client_config(self.pki.roots().expect("roots"), &self.pki.origin)
                .expect("tls");
        repl.transport_config(Arc::new(link_transport()));
        let node = ClusterNode {
            id: name.clone(),
            addr: addr.to_string(),
            tls_name: "localhost".into(),
            admin: None,
            region: "local".into(),
            capacity: 64,
            coords: None,
            lease_ttl: TTL,
            removal_grace: Duration::from_secs(1),
            journal_dir: None,
            replication: Some(repl),
            zones: None,
            attestation: None,
        };
        let agent = server
            .join_cluster(
                self.control.clone(),
                node,
                Games::builtin(),
                ChainSigner::from_bytes(&KEY),
            )
            .await
            .expect("joins");
        self.origins.insert(
            name,
            Origin {
                server,
                agent: Some(agent),
                registry,
            },
        );
    }

    async fn room(&self, standbys: u32) -> WorldRecord {
        let spec = WorldSpec {
            min_players: 1,
            start_after_ms: 100,
            standbys: Some(standbys),
            ..WorldSpec::new("arena", 240, 64)
        };
        self.control
            .create_world(spec, &PlacementHints::default())
            .await
            .expect("placed")
    }

    async fn player(&self, name: &str, world: WorldId) -> Client {
        let token = self
            .tokens
            .issue(&Claims::new(
                name,
                Role::Player,
                vec![world],
                "skylane",
                now_us() / 1_000_000,
                3600,
            ))
            .expect("token");
        Client::builder()
            .token(token)
            .world(world)
            .ca_pem(self.pki.ca_pem.clone())
            .relays([self.relay])
            .origin_key(ChainSigner::from_bytes(&KEY).verifying_key())
            .connect()
            .await
            .expect("connect")
    }

    async fn following(&self, rec: &WorldRecord) {
        let h = self.origins[&rec.placed_on].server.handle();
        for _ in 0..500 {
            if h.world_status(rec.id)
                .await
                .is_some_and(|s| s.standbys.len() == rec.standbys.len())
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the standby never followed {}", rec.id);
    }
}

fn summary(name: &str, h: &Histogram<u64>) {
    println!(
        "{name:<40} n={:<6} p50 {:>8.1} µs  p99 {:>8.1} µs",
        h.len(),
        h.value_at_quantile(0.5) as f64,
        h.value_at_quantile(0.99) as f64,
    );
}

async fn round_trips(b: &Bench, standbys: u32, players: usize, seconds: u64) -> Histogram<u64> {
    let rec = b.room(standbys).await;
    let mut tasks = Vec::new();
    for i in 0..players {
        let name = format!("s{standbys}p{i}");
        let mut w = Walker::new(b.player(&name, rec.id).await, &name);
        tasks.push(tokio::spawn(async move {
            w.wait_spawn().await;
            let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram");
            let end = Instant::now() + Duration::from_secs(seconds);
            let mut tick = tokio::time::interval(Duration::from_millis(50));
            let mut n = 0;
            while Instant::now() < end {
                tick.tick().await;
                let t = Instant::now();
                let o = w.step().await;
                if matches!(o, Outcome::Applied { .. }) && n >= 10 {
                    let _ = h.record(t.elapsed().as_micros().max(1) as u64);
                }
                n += 1;
                w.absorb();
            }
            h
        }));
    }
    if standbys > 0 {
        b.following(&rec).await;
    }
    let mut all = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram");
    for t in tasks {
        all.add(t.await.expect("player")).expect("merge");
    }
    let _ = b.control.end_world(rec.id).await;
    all
}

async fn failover(b: &mut Bench, i: usize) -> Duration {
    let rec = b.room(1).await;
    let mut c = b.player(&format!("k{i}"), rec.id).await;
    b.following(&rec).await;
    let old = b.origins[&rec.placed_on]
        .server
        .handle()
        .world_status(rec.id)
        .await
        .expect("status")
        .epoch;
    while c.try_next_event().is_some() {}
    let dead = b.origins.get_mut(&rec.placed_on).expect("primary");
    dead.server.crash();
    drop(dead.agent.take());
    let crashed = Instant::now();
    let took = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            match c.next_event().await {
                Some(ClientEvent::World(ws)) if ws.epoch > old => return crashed.elapsed(),
                Some(_) => {}
                None => panic!("client closed"),
            }
        }
    })
    .await
    .expect("a new owner in time");
    b.origins.remove(&rec.placed_on);
    b.add_origin().await;
    let _ = b.control.end_world(rec.id).await;
    took
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let players: usize = args.first().and_then(|a| a.parse().ok()).unwrap_or(4);
    let seconds: u64 = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(10);
    let kills: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(20);

    let pki = LocalPki::generate(&[]).expect("pki");
    let pair = TokenKeyPair::generate().expect("token key");
    let tokens = TokenSigner::from_pem(&pair.private_pem).expect("signer");
    let control: SharedControl = Arc::new(Embedded::new());

    // The relay follows the control plane: it learns rooms and their owners.
    let mut sc = relay_server_config(&pki.relay, pki.roots().expect("roots")).expect("tls");
    sc.transport_config(Arc::new(client_transport()));
    let relay_ep = quinn::Endpoint::server(sc, loopback()).expect("bind");
    let relay_addr = relay_ep.local_addr().expect("addr");
    let mut link_tls =
        client_config(pki.roots().expect("roots"), Some(&pki.relay)).expect("link tls");
    link_tls.transport_config(Arc::new(link_transport()));
    let cfg = RelayConfig {
        listen: relay_addr,
        control: skylane_control::ControlKind::Embedded,
        ..RelayConfig::default()
    };
    let material = RelayMaterial {
        link_tls,
        peer_tls: None,
        tokens: tokens.verifier("skylane"),
        revocations: Default::default(),
        tickets: TicketKey::new(&[9; 32]),
        geo: None,
    };
    let settings = RelaySettings::from_config(&cfg, material).expect("relay settings");
    let relay = Relay::spawn(
        relay_ep,
        settings,
        RelayMetrics::new(&mut Registry::default()),
    );
    relay
        .follow(
            control.clone(),
            NodeInfo::relay(1, relay_addr, "localhost", "local"),
            TTL,
        )
        .await
        .expect("relay follows");
    let mut b = Bench {
        pki,
        tokens,
        control,
        relay: relay_addr,
        origins: BTreeMap::new(),
        next: 0,
    };
    b.add_origin().await;
    b.add_origin().await;

    let none = round_trips(&b, 0, players, seconds).await;
    let one = round_trips(&b, 1, players, seconds).await;
    println!("players {players}, {seconds} s each, arena rooms at 240 Hz, loopback, 2 origins");
    summary("action round trip, 0 standbys", &none);
    summary("action round trip, 1 standby (min_acks 1)", &one);
    let d = |q: f64| one.value_at_quantile(q) as f64 - none.value_at_quantile(q) as f64;
    println!(
        "cost of one standby: p50 {:+.0} µs (target ≤ +1,000), p99 {:+.0} µs (target ≤ +2,000)",
        d(0.5),
        d(0.99)
    );

    // Re-execution on the standby against the primary's own ticks, over the
    // whole run so far (both origins were primary and standby of rooms).
    let (mut tick, mut standby) = ((0.0, 0.0), (0.0, 0.0));
    for o in b.origins.values() {
        let t = histogram(&o.registry, "skylane_origin_tick_seconds");
        let s = histogram(&o.registry, "skylane_origin_standby_tick_seconds");
        tick = (tick.0 + t.0, tick.1 + t.1);
        standby = (standby.0 + s.0, standby.1 + s.1);
    }
    let mean = |(sum, n): (f64, f64)| sum / n.max(1.0) * 1e6;
    println!(
        "CPU per tick: primary {:.1} µs over {} ticks (rooms with and without standby), standby re-execution {:.1} µs over {} ticks ({:.2}x)",
        mean(tick),
        tick.1,
        mean(standby),
        standby.1,
        mean(standby) / mean(tick).max(f64::MIN_POSITIVE)
    );

    let mut h = Histogram::<u64>::new_with_bounds(1, 600_000, 3).expect("histogram");
    for i in 0..kills {
        let took = failover(&mut b, i).await;
        let _ = h.record(took.as_millis().max(1) as u64);
    }
    println!(
        "failover over {kills} kills (lease TTL {} ms): crash -> first state from the new owner p50 {} ms, p99 {} ms, max {} ms (target TTL + 1,000 ms)",
        TTL.as_millis(),
        h.value_at_quantile(0.5),
        h.value_at_quantile(0.99),
        h.max()
    );
}
