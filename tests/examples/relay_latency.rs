//! End-to-end latency through a relay on loopback, beside the raw quinn datagram
//! round trip measured in the same run (docs/benchmarks.md, "Relay end to end").
//!
//! One origin (arena world) and one relay on 127.0.0.1 over real UDP, TLS and
//! tokens; `players` clients each send one state action (a legal step) every
//! 50 ms and wait for its outcome. The action round trip includes waiting for the
//! origin's next tick, so the origin ticks at `tick_hz` (default 1,000 Hz: at
//! most 1 ms of wait) to expose the path itself; at a game's 30 Hz the wait alone
//! averages 17 ms. Event propagation (origin tick → client, through the
//! synchronised clock) is reported too.
//!
//! Run: `cargo run --release -p skylane-tests --example relay_latency -- [players] [seconds] [tick_hz]`

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;
use prometheus_client::registry::Registry;
use skylane_certs::{
    client_config, peer_client_config, relay_server_config, server_config, ClientAuth, LocalPki,
};
use skylane_client::Client;
use skylane_origin::{
    Arena, ArenaConfig, Engine, EngineConfig, OriginMetrics, OriginServer, ServerConfig,
};
use skylane_proto::{ChainSigner, Claims, EventClass, Outcome, Role, TokenKeyPair, TokenSigner};
use skylane_relay::{
    client_transport, link_transport, Relay, RelayConfig, RelayMaterial, RelayMetrics,
    RelaySettings, TicketKey,
};
use skylane_tests::{Walker, MAP, WORLD};

fn loopback() -> SocketAddr {
    ([127, 0, 0, 1], 0).into()
}

fn summary(name: &str, h: &Histogram<u64>) {
    println!(
        "{name:<44} n={:<7} p50 {:>8.1} µs  p99 {:>8.1} µs  p99.9 {:>8.1} µs",
        h.len(),
        h.value_at_quantile(0.5) as f64,
        h.value_at_quantile(0.99) as f64,
        h.value_at_quantile(0.999) as f64
    );
}

/// The raw quinn datagram round trip on loopback: a client sends 32 bytes, the
/// server echoes them.
async fn raw_quinn(pki: &LocalPki, samples: usize) -> Histogram<u64> {
    let sc = server_config(&pki.relay, ClientAuth::None).expect("tls");
    let server = quinn::Endpoint::server(sc, loopback()).expect("bind");
    let addr = server.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Some(inc) = server.accept().await {
            tokio::spawn(async move {
                let Ok(conn) = inc.await else { return };
                while let Ok(d) = conn.read_datagram().await {
                    let _ = conn.send_datagram(d);
                }
            });
        }
    });
    let mut client = quinn::Endpoint::client(loopback()).expect("bind");
    client
        .set_default_client_config(client_config(pki.roots().expect("roots"), None).expect("tls"));
    let conn = client
        .connect(addr, "localhost")
        .expect("connect")
        .await
        .expect("handshake");
    let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram");
    let payload = bytes_of(32);
    for i in 0..samples + 100 {
        let t = Instant::now();
        conn.send_datagram(payload.clone()).expect("send");
        conn.read_datagram().await.expect("echo");
        if i >= 100 {
            let _ = h.record(t.elapsed().as_micros().max(1) as u64);
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    h
}

fn bytes_of(n: usize) -> skylane_proto::bytes::Bytes {
    skylane_proto::bytes::Bytes::from(vec![7u8; n])
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let players: usize = args.first().and_then(|a| a.parse().ok()).unwrap_or(10);
    let seconds: u64 = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(10);
    let tick_hz: u32 = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(1000);

    let pki = LocalPki::generate(&[]).expect("pki");
    let raw = raw_quinn(&pki, 2000).await;

    // Origin.
    let now_us = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_micros() as u64;
    let mut sc = server_config(
        &pki.origin,
        ClientAuth::Required(pki.roots().expect("roots")),
    )
    .expect("tls");
    sc.transport_config(Arc::new(link_transport()));
    let origin_ep = quinn::Endpoint::server(sc, loopback()).expect("bind");
    let origin_addr = origin_ep.local_addr().expect("addr");
    let arena = Arena::new(ArenaConfig {
        width: MAP,
        height: MAP,
        ..ArenaConfig::default()
    });
    let grid = arena.grid();
    let mut ecfg = EngineConfig::new(WORLD);
    ecfg.tick_hz = tick_hz;
    ecfg.keyframe_every = u64::from(tick_hz);
    let signer = ChainSigner::from_bytes(&[42; 32]);
    let origin_key = signer.verifying_key();
    let engine = Engine::new(arena, grid, ecfg, signer, now_us);
    let _origin = OriginServer::spawn(
        origin_ep,
        engine,
        ServerConfig::new(now_us),
        OriginMetrics::new(&mut Registry::default()),
    );

    // Relay.
    let pair = TokenKeyPair::generate().expect("token key");
    let tokens = TokenSigner::from_pem(&pair.private_pem).expect("signer");
    let mut sc = relay_server_config(&pki.relay, pki.roots().expect("roots")).expect("tls");
    sc.transport_config(Arc::new(client_transport()));
    let relay_ep = quinn::Endpoint::server(sc, loopback()).expect("bind");
    let relay_addr = relay_ep.local_addr().expect("addr");
    let mut link_tls =
        client_config(pki.roots().expect("roots"), Some(&pki.relay)).expect("link tls");
    link_tls.transport_config(Arc::new(link_transport()));
    let cfg = RelayConfig {
        listen: relay_addr,
        origins: vec![format!("localhost@{origin_addr}=1")],
        ..RelayConfig::default()
    };
    let material = RelayMaterial {
        link_tls,
        peer_tls: Some(peer_client_config(pki.roots().expect("roots"), &pki.relay).expect("tls")),
        tokens: tokens.verifier("skylane"),
        revocations: Default::default(),
        tickets: TicketKey::new(&[9; 32]),
        geo: None,
    };
    let settings = RelaySettings::from_config(&cfg, material).expect("relay settings");
    let _relay = Relay::spawn(
        relay_ep,
        settings,
        RelayMetrics::new(&mut Registry::default()),
    );

    // Players.
    let secs = now_us / 1_000_000;
    let mut tasks = Vec::new();
    for i in 0..players {
        let name = format!("bench{i}");
        let token = tokens
            .issue(&Claims::new(
                &name,
                Role::Player,
                vec![WORLD],
                "skylane",
                secs,
                3600,
            ))
            .expect("token");
        let client = Client::builder()
            .token(token)
            .world(WORLD)
            .ca_pem(pki.ca_pem.clone())
            .relays([relay_addr])
            .origin_key(origin_key)
            .connect()
            .await
            .expect("connect");
        let mut w = Walker::new(client, &name);
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
            (h, w.client.stats())
        }));
    }
    let mut rtt = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram");
    let mut prop_p50 = Vec::new();
    let mut prop_p99 = Vec::new();
    for t in tasks {
        let (h, st) = t.await.expect("player");
        rtt.add(&h).expect("merge");
        let l = st.latency[EventClass::State.rank()];
        prop_p50.push(l.p50_us);
        prop_p99.push(l.p99_us);
    }
    prop_p50.sort_unstable();
    prop_p99.sort_unstable();
    println!("players {players}, {seconds} s, origin tick {tick_hz} Hz, loopback");
    summary("raw quinn datagram round trip", &raw);
    summary("action round trip client→relay→origin→client", &rtt);
    println!(
        "{:<44} median over players: p50 {} µs, p99 {} µs",
        "event propagation origin tick → client",
        prop_p50[prop_p50.len() / 2],
        prop_p99[prop_p99.len() / 2]
    );
    let ratio = |q: f64| rtt.value_at_quantile(q) as f64 / raw.value_at_quantile(q).max(1) as f64;
    println!(
        "ratio to raw quinn: p50 {:.1}x (target 3x), p99 {:.1}x (target 4x)",
        ratio(0.5),
        ratio(0.99)
    );
}
