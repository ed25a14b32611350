//! Movement on the relay → client hop (docs/benchmarks.md, "Movement as
//! state"), in netsim (seeded, paused time): a dense cell of `movers` walkers
//! stepping at 20 Hz for `seconds`, watched by one viewer through one relay,
//! with 0%, 5% random and 20% bursty loss on the relay → viewer link, and with
//! that link squeezed to 160 kbit/s (less than the cell's movement) with a
//! 50 ms queue.
//!
//! Per loss setting: the viewer's freshness (the age of the newest position
//! it holds of each mover, sampled every 50 ms after the first second, p50 and
//! p99) and the relay → viewer traffic (bytes and packets per second, from the
//! simulator's packet trace). It uses only what the SDK had before movement
//! became state (`Client::entity`), so the same file measures the previous
//! commit too (with the harness's `trace` option added there the same way).
//!
//! Run: `cargo run --release -p skylane-tests --example movement_bench -- [movers] [seconds] [seed]`

use std::time::Duration;

use skylane_netsim::{run, LinkPatch, Loss, TraceVerdict};
use skylane_proto::EventClass;
use skylane_tests::{Net, NetOptions, Walker};

struct Outcome {
    p50_us: u64,
    p99_us: u64,
    bytes_per_sec: f64,
    packets_per_sec: f64,
}

fn scenario(movers: usize, seconds: u64, seed: u64, loss: Loss, bps: Option<u64>) -> Outcome {
    run(|| async move {
        let net = Net::start(NetOptions {
            seed,
            trace: true,
            ..NetOptions::default()
        });
        let relay = net.relays[0].clone();
        let (vhost, b) = net.client_builder("paris", "viewer");
        let mut viewer = Walker::new(b.relays([relay.addr]).connect().await.unwrap(), "viewer");
        viewer.wait_spawn().await;
        let mut walkers = Vec::new();
        for i in 0..movers {
            let name = format!("mover{i}");
            let (_, b) = net.client_builder("paris", &name);
            let mut w = Walker::new(b.relays([relay.addr]).connect().await.unwrap(), &name);
            w.wait_spawn().await;
            walkers.push(w);
        }
        net.sim.patch_link(
            relay.host,
            vhost,
            LinkPatch {
                loss: Some(loss),
                bandwidth_bps: bps.map(Some),
                queue_budget: bps.map(|_| Duration::from_millis(50)),
                ..LinkPatch::default()
            },
        );
        let start_us = net.sim.elapsed().as_micros() as u64;
        let mut ages = Vec::new();
        let rounds = seconds * 20;
        for round in 0..rounds {
            for w in &mut walkers {
                w.absorb();
                let a = w.step_action();
                w.client.send(EventClass::Movement, a.encode()).unwrap();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
            viewer.absorb();
            if round >= 20 {
                let now = viewer.client.server_time_us().unwrap_or(0);
                for w in &walkers {
                    if let Some(t) = w.avatar.and_then(|a| viewer.client.entity(a)) {
                        ages.push(t.age_us(now));
                    }
                }
            }
        }
        let end_us = net.sim.elapsed().as_micros() as u64;
        let viewer_ip = net.sim.ip(vhost);
        let relay_ip = net.sim.ip(relay.host);
        let trace = net.sim.trace();
        let (mut bytes, mut packets) = (0u64, 0u64);
        for r in trace.records() {
            if r.t_us >= start_us
                && r.t_us < end_us
                && r.src.ip() == relay_ip
                && r.dst.ip() == viewer_ip
                && matches!(r.verdict, TraceVerdict::Delivered { .. })
            {
                bytes += r.size as u64;
                packets += 1;
            }
        }
        let secs = (end_us - start_us) as f64 / 1e6;
        ages.sort_unstable();
        let p = |q: usize| ages.get(ages.len() * q / 100).copied().unwrap_or(0);
        Outcome {
            p50_us: p(50),
            p99_us: p(99),
            bytes_per_sec: bytes as f64 / secs,
            packets_per_sec: packets as f64 / secs,
        }
    })
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let movers: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(50);
    let seconds: u64 = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(10);
    let seed: u64 = args.get(3).and_then(|a| a.parse().ok()).unwrap_or(7);
    println!("{movers} movers at 20 Hz for {seconds} s, one viewer, seed {seed}");
    for (name, loss, bps) in [
        ("0%", Loss::None, None),
        ("5% random", Loss::Independent(0.05), None),
        ("20% bursty", Loss::bursty(0.20, 4.0), None),
        ("0%, 160 kbit/s", Loss::None, Some(160_000)),
    ] {
        let o = scenario(movers, seconds, seed, loss, bps);
        println!(
            "{name:>15}: freshness p50 {:>6.1} ms, p99 {:>7.1} ms; relay -> viewer {:>8.0} B/s, {:>5.0} packets/s",
            o.p50_us as f64 / 1000.0,
            o.p99_us as f64 / 1000.0,
            o.bytes_per_sec,
            o.packets_per_sec
        );
    }
}
