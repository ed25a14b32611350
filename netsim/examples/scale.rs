//! Measures the simulator itself: N quinn clients in 4 regions each send datagrams
//! at a fixed rate to one server for a stretch of simulated time.
//!
//! `cargo run --release -p skylane-netsim --example scale -- --clients 1000 --seconds 60`
//!
//! Prints one JSON line: clients, simulated_s, wall_s, datagrams (received by the
//! server), sent, packets (UDP packets the simulator carried), trace_hash.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use quinn::TransportConfig;
use skylane_certs::{client_config, server_config, ClientAuth, LocalPki};
use skylane_netsim::{run, Sim};

/// Simulator scale benchmark.
#[derive(Debug, Parser)]
struct Args {
    /// Number of clients.
    #[arg(long, default_value_t = 1000)]
    clients: usize,
    /// Simulated seconds of sending.
    #[arg(long, default_value_t = 60)]
    seconds: u64,
    /// Datagrams per second per client.
    #[arg(long, default_value_t = 20)]
    rate: u32,
    /// Seed.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Ask peers to acknowledge every N ack-eliciting packets (QUIC ACK-frequency
    /// extension) instead of quinn's default of every 2; 0 keeps the default.
    #[arg(long, default_value_t = 0)]
    ack_every: u32,
}

const REGIONS: [&str; 4] = ["virginia", "london", "tokyo", "sao-paulo"];

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let wall = std::time::Instant::now();
    let pki = LocalPki::generate(&["server".to_owned()])?;
    let out = run(|| async move {
        let sim = Sim::new(args.seed);
        let server_host = sim.add_host("server", "london");

        let mut transport = TransportConfig::default();
        transport
            .max_idle_timeout(Some(Duration::from_secs(30).try_into()?))
            .max_concurrent_bidi_streams(4u32.into())
            .max_concurrent_uni_streams(4u32.into());
        if args.ack_every > 0 {
            let mut ack = quinn::AckFrequencyConfig::default();
            ack.ack_eliciting_threshold(args.ack_every.into())
                .max_ack_delay(Some(Duration::from_millis(100)));
            transport.ack_frequency_config(Some(ack));
        }
        let transport = Arc::new(transport);
        let mut sc = server_config(&pki.relay, ClientAuth::None)?;
        sc.transport_config(transport.clone());
        let mut cc = client_config(pki.roots()?, None)?;
        cc.transport_config(transport);

        let server = sim.endpoint(server_host, 4433, Some(sc))?;
        let server_addr = server.local_addr()?;
        let received = Arc::new(AtomicU64::new(0));
        {
            let received = received.clone();
            tokio::spawn(async move {
                while let Some(inc) = server.accept().await {
                    let received = received.clone();
                    tokio::spawn(async move {
                        let Ok(conn) = inc.await else { return };
                        while conn.read_datagram().await.is_ok() {
                            received.fetch_add(1, Ordering::Relaxed);
                        }
                    });
                }
            });
        }

        let sent = Arc::new(AtomicU64::new(0));
        let interval = Duration::from_secs(1) / args.rate;
        let mut tasks = Vec::with_capacity(args.clients);
        for i in 0..args.clients {
            let host = sim.add_host(format!("client-{i}"), REGIONS[i % REGIONS.len()]);
            let mut ep = sim.endpoint(host, 0, None)?;
            ep.set_default_client_config(cc.clone());
            let sent = sent.clone();
            let seconds = args.seconds;
            tasks.push(tokio::spawn(async move {
                // Spread connection starts over the first second.
                tokio::time::sleep(interval * (i as u32 % args.rate)).await;
                let conn = ep.connect(server_addr, "server")?.await?;
                let mut tick = tokio::time::interval(interval);
                let payload = bytes::Bytes::from(vec![0u8; 100]);
                for _ in 0..u64::from(args.rate) * seconds {
                    tick.tick().await;
                    if conn.send_datagram(payload.clone()).is_ok() {
                        sent.fetch_add(1, Ordering::Relaxed);
                    }
                }
                // Let the last datagrams arrive before closing.
                tokio::time::sleep(Duration::from_millis(500)).await;
                conn.close(0u32.into(), b"done");
                ep.wait_idle().await;
                anyhow::Ok(())
            }));
        }
        for t in tasks {
            t.await??;
        }
        let counts = sim.counts();
        anyhow::Ok(serde_json::json!({
            "clients": args.clients,
            "rate_hz": args.rate,
            "ack_every": args.ack_every,
            "simulated_s": sim.elapsed().as_secs_f64(),
            "datagrams": received.load(Ordering::Relaxed),
            "sent": sent.load(Ordering::Relaxed),
            "packets": counts.sent,
            "trace_hash": format!("{:016x}", sim.trace_hash()),
        }))
    })?;
    let mut out = out;
    out["wall_s"] = serde_json::json!(wall.elapsed().as_secs_f64());
    println!("{out}");
    Ok(())
}
