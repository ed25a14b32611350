//! Rooms benchmark (docs/benchmarks.md): on the local deployment (origin, three
//! relays, loopback QUIC),
//!
//! 1. **world creation**: time from `POST /worlds` (a tic-tac-toe room, the
//!    origin's admin route as the binary serves it) to its first player's
//!    welcome through a relay (the relay must learn the room and its owner by
//!    watching), for the embedded control plane and, in a build with
//!    `--features etcd`, a real etcd (same run);
//! 2. **idle rooms**: CPU and resident memory one origin process spends per
//!    idle 2-player room at 10 Hz, from the difference between the process
//!    with no rooms and with `--rooms N`.
//!
//! `cargo run --release -p skylane-tools --example rooms_bench [--features etcd] -- [ROOMS] [CREATIONS]`

#[cfg(feature = "etcd")]
use std::sync::Arc;
use std::time::{Duration, Instant};

use skylane_control::{PlacementHints, SharedControl, WorldSpec};
use skylane_ops::ProcessMetrics;
use skylane_proto::Role;
use skylane_tools::local::{LocalNet, LocalOptions};

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(((v.len() as f64 - 1.0) * p).round() as usize)
        .copied()
        .unwrap_or(0.0)
}

/// Creation → first welcome, `n` times on `control`.
async fn creation(name: &str, control: Option<SharedControl>, n: usize) {
    let opts = LocalOptions {
        control,
        ..LocalOptions::default()
    };
    let net = LocalNet::start(opts).await.expect("local net");
    // The origin's `/worlds` routes, as the binary serves them.
    let admin = skylane_ops::serve_admin(
        "127.0.0.1:0".parse().expect("addr"),
        skylane_origin::worlds_router(net.control.clone()),
    )
    .await
    .expect("admin");
    let url = format!("http://{admin}/worlds");
    let mut ms = Vec::new();
    for i in 0..n {
        let t = Instant::now();
        let u = url.clone();
        let body = tokio::task::spawn_blocking(move || {
            ureq::post(&u)
                .header("Content-Type", "application/json")
                .send(r#"{"game":"tictactoe","tick_hz":10,"capacity":2}"#)
                .expect("POST /worlds")
                .body_mut()
                .read_to_string()
                .expect("body")
        })
        .await
        .expect("blocking");
        let rec: serde_json::Value = serde_json::from_str(&body).expect("json");
        let w = skylane_proto::WorldId(rec["id"].as_u64().expect("id"));
        let c = net
            .player_builder(i % 3, i)
            .expect("builder")
            .token(net.token_for("p", Role::Player, vec![w], Duration::from_secs(600)))
            .probe(1)
            .world(w)
            .connect()
            .await
            .expect("welcome");
        ms.push(t.elapsed().as_secs_f64() * 1000.0);
        c.close().await;
    }
    println!(
        "creation→welcome {name:<9} n={n}: p50 {:.1} ms, p90 {:.1} ms, max {:.1} ms",
        pct(&mut ms, 0.5),
        pct(&mut ms, 0.9),
        pct(&mut ms, 1.0)
    );
    net.shutdown().await;
}

/// CPU seconds per second and resident bytes over `window`.
async fn sample(window: Duration) -> (f64, u64) {
    let c0 = ProcessMetrics::cpu_seconds();
    tokio::time::sleep(window).await;
    let c1 = ProcessMetrics::cpu_seconds();
    (
        (c1 - c0) / window.as_secs_f64(),
        ProcessMetrics::resident_bytes(),
    )
}

async fn idle(rooms: usize) {
    let opts = LocalOptions {
        max_worlds: rooms as u32 + 10,
        ..LocalOptions::default()
    };
    let net = LocalNet::start(opts).await.expect("local net");
    let window = Duration::from_secs(10);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (cpu0, rss0) = sample(window).await;
    let t = Instant::now();
    for _ in 0..rooms {
        net.control
            .create_world(
                WorldSpec::new("tictactoe", 10, 2),
                &PlacementHints::default(),
            )
            .await
            .expect("created");
    }
    // Wait until the origin runs them all.
    loop {
        let running = net.origin_metrics.worlds.get() as usize;
        // The static arena world and the rooms.
        if running > rooms {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let created_in = t.elapsed();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (cpu1, rss1) = sample(window).await;
    let per_room_cpu_ms = (cpu1 - cpu0) * 1000.0 / rooms as f64;
    let per_room_kib = (rss1.saturating_sub(rss0)) as f64 / 1024.0 / rooms as f64;
    println!(
        "idle rooms: {rooms} 2-player tic-tac-toe rooms at 10 Hz started in {:.2} s; process CPU {:.3} → {:.3} cores; RSS {:.1} → {:.1} MiB",
        created_in.as_secs_f64(),
        cpu0,
        cpu1,
        rss0 as f64 / 1048576.0,
        rss1 as f64 / 1048576.0
    );
    println!(
        "idle room cost: {per_room_cpu_ms:.4} ms of CPU per second, {per_room_kib:.1} KiB resident (targets: ≤ 0.01 ms/s, ≤ 64 KiB)"
    );
    net.shutdown().await;
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let rooms: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(1000);
    let creations: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(50);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        creation("embedded", None, creations).await;
        #[cfg(feature = "etcd")]
        {
            let etcd = skylane_control::LocalEtcd::start().await.expect("etcd");
            let control: SharedControl = Arc::new(
                skylane_control::Etcd::connect(etcd.config("/skylane/bench"))
                    .await
                    .expect("connect"),
            );
            creation("etcd", Some(control), creations).await;
        }
        idle(rooms).await;
    });
}
