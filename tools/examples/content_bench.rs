//! Content benchmark (docs/benchmarks.md, "Content"): on the local
//! deployment (origin, three relays, loopback QUIC), in one run:
//!
//! 1. **idle**: the critical path's latency (`ping_origin`: client → relay →
//!    origin → relay → client, critical class) of a probe client on relay 0;
//! 2. **relay**: CLIENTS SDK clients on relay 0 fetch one PACK-MiB pack at
//!    once (`fetch_content`: windows of 256 KiB, bulk class, verified), the
//!    probe measuring the critical path meanwhile; wall time, MB/s, the
//!    process's CPU per MB, and the source fetches (must be 1);
//! 3. **raw quinn**: the same clients read the same bytes from a bare quinn
//!    server (same TLS and transport settings, one unidirectional stream
//!    each, the pack as one shared `Bytes`): the floor.
//!
//! Everything runs in this process: CPU per MB counts the clients too, on
//! both sides alike.
//!
//! `cargo run --release -p skylane-tools --example content_bench -- [CLIENTS] [PACK_MIB] [CACHE_MIB]`
//!
//! (`CACHE_MIB`, default 256: the relays' cache; below the pack's size the
//! pack is streamed through, not kept, and the source fetches and ranged
//! reads say how often it was read whole.)

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rand::RngCore as _;
use skylane_client::Client;
use skylane_content::SourceDir;
use skylane_proto::ed25519_dalek::SigningKey;
use skylane_proto::Role;
use skylane_relay::ContentSettings;
use skylane_tools::local::{LocalNet, LocalOptions, WORLD};

fn cpu() -> Duration {
    cpu_time::ProcessTime::now().as_duration()
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(((v.len() as f64 - 1.0) * p).round() as usize)
        .copied()
        .unwrap_or(0.0)
}

async fn client(
    net: &LocalNet,
    key: &SigningKey,
    n: usize,
    sockets: &mut Vec<quinn::Endpoint>,
) -> Client {
    if n % 16 == 0 {
        sockets.push(quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap());
    }
    Client::builder()
        .world(WORLD)
        .ca_pem(net.pki.ca_pem.clone())
        .endpoint(sockets.last().unwrap().clone())
        .relays([net.relays[0].addr])
        .no_reprobe()
        .token(net.token_for(
            &format!("b{n}"),
            Role::Player,
            vec![WORLD],
            Duration::from_secs(3600),
        ))
        .content_key(key.verifying_key())
        .connect()
        .await
        .expect("connect")
}

/// Critical-path round trips (ms) until `stop` says so.
async fn probe(c: Arc<Client>, stop: Arc<std::sync::atomic::AtomicBool>) -> Vec<f64> {
    let mut ms = Vec::new();
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        if let Ok(rtt) = c.ping_origin().await {
            ms.push(rtt.as_secs_f64() * 1000.0);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    ms
}

async fn raw_quinn(net: &LocalNet, pack: Bytes, clients: usize) -> (Duration, Duration) {
    let roots = || net.pki.roots().expect("roots");
    let mut sc = skylane_certs::server_config(&net.pki.relay, skylane_certs::ClientAuth::None)
        .expect("server config");
    sc.transport_config(Arc::new(skylane_relay::client_transport()));
    let server = quinn::Endpoint::server(sc, "127.0.0.1:0".parse().unwrap()).expect("bind");
    let addr = server.local_addr().unwrap();
    let accept = tokio::spawn(async move {
        while let Some(inc) = server.accept().await {
            let pack = pack.clone();
            tokio::spawn(async move {
                let Ok(conn) = inc.await else { return };
                if let Ok(mut s) = conn.open_uni().await {
                    let _ = s.write_chunk(pack).await;
                    let _ = s.finish();
                    let _ = conn.closed().await;
                }
            });
        }
    });
    let mut cc = skylane_certs::client_config(roots(), None).expect("client config");
    cc.transport_config(Arc::new(skylane_relay::client_transport()));
    let mut conns = Vec::new();
    let mut eps: Vec<quinn::Endpoint> = Vec::new();
    for n in 0..clients {
        if n % 16 == 0 {
            let mut e = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
            e.set_default_client_config(cc.clone());
            eps.push(e);
        }
        let conn = eps
            .last()
            .unwrap()
            .connect(addr, "localhost")
            .unwrap()
            .await
            .expect("raw connect");
        conns.push(conn);
    }
    let (t0, c0) = (Instant::now(), cpu());
    let mut tasks = Vec::new();
    for conn in conns {
        tasks.push(tokio::spawn(async move {
            let mut s = conn.accept_uni().await.expect("stream");
            let b = s.read_to_end(64 << 20).await.expect("read");
            conn.close(0u32.into(), b"done");
            b.len()
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let r = (t0.elapsed(), cpu() - c0);
    accept.abort();
    r
}

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let clients = args.first().copied().unwrap_or(500);
    let mib = args.get(1).copied().unwrap_or(5);
    let cache_mib = args.get(2).copied().unwrap_or(256);
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async move {
            let source = tempfile::tempdir().unwrap();
            let files = tempfile::tempdir().unwrap();
            let mut pack = vec![0u8; mib << 20];
            rand::thread_rng().fill_bytes(&mut pack);
            std::fs::write(files.path().join("level.pak"), &pack).unwrap();
            let key = SigningKey::from_bytes(&rand::random::<[u8; 32]>());
            SourceDir::new(source.path())
                .publish(files.path(), "1", &key, 0)
                .unwrap();
            let net = LocalNet::start(LocalOptions {
                content: Some(ContentSettings {
                    source: source.path().to_owned(),
                    key: key.verifying_key(),
                    cache_bytes: (cache_mib as u64) << 20,
                    refresh: Duration::from_millis(200),
                }),
                ..LocalOptions::default()
            })
            .await
            .expect("local net");
            tokio::time::sleep(Duration::from_millis(500)).await;
            let mut sockets = Vec::new();
            let prober = Arc::new(client(&net, &key, 0, &mut sockets).await);
            let mut cs = Vec::new();
            for n in 1..=clients {
                cs.push(client(&net, &key, n, &mut sockets).await);
            }
            // Idle critical path.
            let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
            let p = tokio::spawn(probe(prober.clone(), stop.clone()));
            tokio::time::sleep(Duration::from_secs(3)).await;
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            let mut idle = p.await.unwrap();
            // Downloads through the relay, the probe running.
            let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
            let p = tokio::spawn(probe(prober.clone(), stop.clone()));
            let (t0, c0) = (Instant::now(), cpu());
            let mut tasks = Vec::new();
            for c in cs {
                let want = pack.len();
                tasks.push(tokio::spawn(async move {
                    let b = c.fetch_content("level.pak", "1", |_, _| {}).await.expect("fetch");
                    assert_eq!(b.len(), want);
                    c
                }));
            }
            let mut done = Vec::new();
            for t in tasks {
                done.push(t.await.unwrap());
            }
            let (relay_wall, relay_cpu) = (t0.elapsed(), cpu() - c0);
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            let mut busy = p.await.unwrap();
            let fetches: u64 = net.relays.iter().map(|r| r.metrics.content_fetches.get()).sum();
            let ranged: u64 = net
                .relays
                .iter()
                .map(|r| skylane_ops::counted(&r.metrics.content_requests, "ranged"))
                .sum();
            drop(done);
            let (raw_wall, raw_cpu) = raw_quinn(&net, Bytes::from(pack.clone()), clients).await;
            let mb = (clients * pack.len()) as f64 / 1e6;
            println!(
                "clients {clients}, pack {mib} MiB, cache {cache_mib} MiB, {:.0} MB delivered each way; source fetches {fetches}, windows read as ranges {ranged}",
                mb
            );
            println!(
                "relay (fetch_content): wall {:.2} s, {:.0} MB/s, CPU {:.2} s = {:.2} ms per MB",
                relay_wall.as_secs_f64(),
                mb / relay_wall.as_secs_f64(),
                relay_cpu.as_secs_f64(),
                relay_cpu.as_secs_f64() * 1000.0 / mb
            );
            println!(
                "raw quinn stream:      wall {:.2} s, {:.0} MB/s, CPU {:.2} s = {:.2} ms per MB",
                raw_wall.as_secs_f64(),
                mb / raw_wall.as_secs_f64(),
                raw_cpu.as_secs_f64(),
                raw_cpu.as_secs_f64() * 1000.0 / mb
            );
            println!(
                "critical path (ping_origin) idle: n {} p50 {:.2} ms p99 {:.2} ms; during downloads: n {} p50 {:.2} ms p99 {:.2} ms",
                idle.len(),
                pct(&mut idle, 0.5),
                pct(&mut idle, 0.99),
                busy.len(),
                pct(&mut busy, 0.5),
                pct(&mut busy, 0.99)
            );
            net.shutdown().await;
        });
}
