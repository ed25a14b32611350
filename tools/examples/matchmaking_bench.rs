//! Matchmaking service benchmark (docs/benchmarks.md): on the local
//! deployment (two origins, three relays, loopback QUIC, the embedded control
//! plane, or etcd in a build with `--features etcd` and `--etcd`), one
//! `skylane-match` instance; `TICKETS` players (duels) queue through the SDK
//! over `SECONDS` (each with its region's coordinates: the relays'
//! per-address admission would refuse hundreds of probes from 127.0.0.1)
//! and long-poll for their match. Reports, from the players' side, queue →
//! matched (world placed and owned) p50/p99/max, matches per second, and the
//! process's CPU per match (origins, relays and matchmaker together).
//!
//! `cargo run --release -p skylane-tools --example matchmaking_bench [--features etcd] -- [TICKETS] [SECONDS] [--etcd]`

use std::time::{Duration, Instant};

use skylane_client::Matchmaker;
use skylane_proto::Role;
use skylane_tools::local::{LocalNet, LocalOptions};

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(((v.len() as f64 - 1.0) * p).round() as usize)
        .copied()
        .unwrap_or(0.0)
}

async fn run(tickets: usize, seconds: f64, control: Option<skylane_control::SharedControl>) {
    let net = LocalNet::start(LocalOptions {
        origins: 2,
        max_worlds: 10_000,
        control,
        ..LocalOptions::default()
    })
    .await
    .expect("local net");
    let mm = skylane_tools::matchmaking::start(
        &net,
        "mm-bench",
        skylane_tools::matchmaking::demo_games(),
        Duration::from_secs(3),
        None,
    )
    .await
    .expect("matchmaker");
    let url = format!("http://{}", mm.addr());
    let cpu0 = cpu_time::ProcessTime::now();
    let t0 = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    let gap = Duration::from_secs_f64(seconds / tickets as f64);
    for i in 0..tickets {
        let region = &net.relays[i % net.relays.len()].info;
        let client =
            Matchmaker::new([url.clone()]).coords(f64::from(region.lat), f64::from(region.lon));
        let token = net.token(&format!("p{i}"), Role::Player, Duration::from_secs(600));
        set.spawn(async move {
            let queued = Instant::now();
            let mut t = client.queue(&token, "tictactoe", Vec::new()).await?;
            let m = t.wait().await?;
            Ok::<_, skylane_client::MatchError>((queued.elapsed(), m.world, m.worst_rtt_ms))
        });
        tokio::time::sleep(gap).await;
    }
    let mut waits = Vec::new();
    let mut worlds = std::collections::BTreeSet::new();
    let mut failed = 0;
    let mut worst = 0;
    while let Some(r) = set.join_next().await {
        match r.expect("task") {
            Ok((w, world, rtt)) => {
                waits.push(w.as_secs_f64() * 1000.0);
                worlds.insert(world);
                worst = worst.max(rtt);
            }
            Err(e) => {
                failed += 1;
                eprintln!("{e}");
            }
        }
    }
    let wall = t0.elapsed().as_secs_f64();
    let cpu = cpu0.elapsed().as_secs_f64();
    println!(
        "{tickets} tickets over {seconds} s: {} matched into {} worlds, {failed} failed",
        waits.len(),
        worlds.len()
    );
    println!(
        "queue → matched (world owned): p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
        pct(&mut waits, 0.5),
        pct(&mut waits, 0.99),
        pct(&mut waits, 1.0)
    );
    println!(
        "{:.1} matches/s over {wall:.1} s; process CPU {cpu:.1} s ({:.1} ms per match, origins and relays included); worst estimated RTT {worst} ms",
        worlds.len() as f64 / wall,
        cpu * 1000.0 / worlds.len().max(1) as f64
    );
    println!("leader counters: {:?}", mm.stats());
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let etcd = args.iter().any(|a| a == "--etcd");
    let nums: Vec<&String> = args.iter().filter(|a| !a.starts_with("--")).collect();
    let tickets = nums.first().and_then(|a| a.parse().ok()).unwrap_or(400);
    let seconds = nums.get(1).and_then(|a| a.parse().ok()).unwrap_or(10.0);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(tickets + 64)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        if etcd {
            #[cfg(feature = "etcd")]
            {
                let e = skylane_control::LocalEtcd::start().await.expect("etcd");
                let c = skylane_control::Etcd::connect(e.config("/skylane/mm-bench"))
                    .await
                    .expect("connect");
                println!("control plane: etcd");
                run(tickets, seconds, Some(std::sync::Arc::new(c))).await;
                return;
            }
            #[cfg(not(feature = "etcd"))]
            panic!("--etcd needs --features etcd");
        }
        println!("control plane: embedded");
        run(tickets, seconds, None).await;
    });
}
