//! The simulator's acceptance tests: quinn over simulated links, loss statistics,
//! bandwidth, partitions, crashes, address changes, reproducibility, and the real-UDP
//! proxy.

use std::sync::Arc;
use std::time::Duration;

use quinn::{ClientConfig, Endpoint, ServerConfig, TransportConfig};
use skylane_certs::{client_config, server_config, ClientAuth, LocalPki};
use skylane_netsim::{run, Fault, HostId, LinkParams, Loss, Side, Sim, SimSocket, TraceMode};
use tokio::time::Instant;

fn configs(idle: Duration) -> (ServerConfig, ClientConfig) {
    let pki = LocalPki::generate(&["server".to_owned()]).unwrap();
    let mut transport = TransportConfig::default();
    transport
        .max_idle_timeout(Some(idle.try_into().unwrap()))
        .keep_alive_interval(Some(Duration::from_millis(500)));
    let transport = Arc::new(transport);
    let mut server = server_config(&pki.relay, ClientAuth::None).unwrap();
    server.transport_config(transport.clone());
    let mut client = client_config(pki.roots().unwrap(), None).unwrap();
    client.transport_config(transport);
    (server, client)
}

struct Pair {
    server: Endpoint,
    client: Endpoint,
    server_addr: std::net::SocketAddr,
}

fn pair(sim: &Sim, server_host: HostId, client_host: HostId, idle: Duration) -> Pair {
    let (sc, cc) = configs(idle);
    let server = sim.endpoint(server_host, 4433, Some(sc)).unwrap();
    let mut client = sim.endpoint(client_host, 0, None).unwrap();
    client.set_default_client_config(cc);
    let server_addr = server.local_addr().unwrap();
    Pair {
        server,
        client,
        server_addr,
    }
}

/// Accepts one connection and echoes every uni stream's bytes back on a new uni stream.
fn spawn_echo(server: Endpoint) {
    tokio::spawn(async move {
        while let Some(inc) = server.accept().await {
            tokio::spawn(async move {
                let Ok(conn) = inc.await else { return };
                while let Ok((mut send, mut recv)) = conn.accept_bi().await {
                    tokio::spawn(async move {
                        let mut buf = [0u8; 1024];
                        while let Ok(Some(n)) = recv.read(&mut buf).await {
                            if send.write_all(&buf[..n]).await.is_err() {
                                return;
                            }
                        }
                        let _ = send.finish();
                    });
                }
            });
        }
    });
}

/// Connects to the echo server and completes one 8-byte round trip on a new stream.
async fn echo_stream(p: &Pair) -> (quinn::Connection, quinn::SendStream, quinn::RecvStream) {
    let conn = p
        .client
        .connect(p.server_addr, "server")
        .unwrap()
        .await
        .unwrap();
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    let mut buf = [0u8; 8];
    send.write_all(&1u64.to_le_bytes()).await.unwrap();
    recv.read_exact(&mut buf).await.unwrap();
    assert_eq!(u64::from_le_bytes(buf), 1);
    (conn, send, recv)
}

/// An echo server on `a`, a client on `b`, and one completed round trip.
async fn connected(
    sim: &Sim,
    a: HostId,
    b: HostId,
    idle: Duration,
) -> (
    Pair,
    quinn::Connection,
    quinn::SendStream,
    quinn::RecvStream,
) {
    let p = pair(sim, a, b, idle);
    spawn_echo(p.server.clone());
    let (conn, send, recv) = echo_stream(&p).await;
    (p, conn, send, recv)
}

#[test]
fn quinn_rtt_matches_the_link_and_handshake_takes_one_rtt() {
    run(|| async {
        let sim = Sim::new(1);
        let a = sim.add_host("server", "lab");
        let b = sim.add_host("client", "lab");
        sim.set_link_both(a, b, LinkParams::with_latency(Duration::from_millis(20)));
        let p = pair(&sim, a, b, Duration::from_secs(10));
        spawn_echo(p.server.clone());

        let start = Instant::now();
        let conn = p
            .client
            .connect(p.server_addr, "server")
            .unwrap()
            .await
            .unwrap();
        let handshake = start.elapsed();
        assert!(
            handshake >= Duration::from_millis(40) && handshake <= Duration::from_millis(42),
            "handshake took {handshake:?}"
        );

        let (mut send, mut recv) = conn.open_bi().await.unwrap();
        let mut buf = [0u8; 8];
        for i in 0..20u64 {
            send.write_all(&i.to_le_bytes()).await.unwrap();
            recv.read_exact(&mut buf).await.unwrap();
            assert_eq!(u64::from_le_bytes(buf), i);
        }
        let rtt = conn.rtt();
        assert!(
            rtt >= Duration::from_millis(38) && rtt <= Duration::from_millis(42),
            "rtt {rtt:?}"
        );
    });
}

/// A network of two hosts in one lab region with `params` on the link from a to b.
fn two_hosts(seed: u64, params: LinkParams) -> (Sim, HostId, HostId) {
    let sim = Sim::new(seed);
    let a = sim.add_host("a", "lab");
    let b = sim.add_host("b", "lab");
    sim.set_link(a, b, params);
    (sim, a, b)
}

/// Sends `n` numbered packets a→b over raw simulated UDP, 1 ms apart, and returns
/// which arrived.
async fn blast(
    sim: &Sim,
    from: HostId,
    to: HostId,
    n: u32,
    size: usize,
    gap: Duration,
) -> Vec<bool> {
    let rx = Arc::new(SimSocket::bind(sim, to, 9000).unwrap());
    let tx = SimSocket::bind(sim, from, 0).unwrap();
    let dst = rx.local_addr_for_tests();
    let got = Arc::new(std::sync::Mutex::new(vec![false; n as usize]));
    let reader = {
        let (rx, got) = (rx.clone(), got.clone());
        tokio::spawn(async move {
            let mut buf = vec![0u8; 2048];
            loop {
                let (len, _) = rx.recv_from(&mut buf).await.unwrap();
                let i = u32::from_le_bytes(buf[..4].try_into().unwrap());
                assert_eq!(len, size);
                got.lock().unwrap()[i as usize] = true;
            }
        })
    };
    let mut payload = vec![0u8; size];
    for i in 0..n {
        payload[..4].copy_from_slice(&i.to_le_bytes());
        tx.send_to(&payload, dst);
        tokio::time::sleep(gap).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    reader.abort();
    let v = got.lock().unwrap().clone();
    v
}

#[test]
fn independent_loss_is_within_three_sigma() {
    run(|| async {
        let p = 0.05;
        let (sim, a, b) = two_hosts(
            7,
            LinkParams {
                loss: Loss::Independent(p),
                ..LinkParams::default()
            },
        );
        let n = 10_000u32;
        let got = blast(&sim, a, b, n, 100, Duration::from_millis(1)).await;
        let lost = got.iter().filter(|x| !**x).count() as f64;
        let mean = f64::from(n) * p;
        let sigma = (f64::from(n) * p * (1.0 - p)).sqrt();
        assert!(
            (lost - mean).abs() <= 3.0 * sigma,
            "lost {lost}, expected {mean} ± {:.0}",
            3.0 * sigma
        );
        assert_eq!(sim.counts().lost as f64, lost);
    });
}

#[test]
fn bursty_loss_has_the_configured_mean_burst() {
    run(|| async {
        let (sim, a, b) = two_hosts(
            11,
            LinkParams {
                loss: Loss::bursty(0.05, 4.0),
                ..LinkParams::default()
            },
        );
        let got = blast(&sim, a, b, 20_000, 100, Duration::from_millis(1)).await;
        let mut bursts = Vec::new();
        let mut run_len = 0;
        for ok in got {
            if ok {
                if run_len > 0 {
                    bursts.push(run_len);
                }
                run_len = 0;
            } else {
                run_len += 1;
            }
        }
        let mean = bursts.iter().sum::<usize>() as f64 / bursts.len() as f64;
        let rate = bursts.iter().sum::<usize>() as f64 / 20_000.0;
        assert!((3.2..=4.8).contains(&mean), "mean burst {mean}");
        assert!((0.035..=0.065).contains(&rate), "loss rate {rate}");
    });
}

#[test]
fn bandwidth_caps_throughput_and_drops_past_the_queue_budget() {
    run(|| async {
        let (sim, a, b) = two_hosts(
            3,
            LinkParams {
                bandwidth_bps: Some(1_000_000),
                queue_budget: Duration::from_millis(100),
                ..LinkParams::default()
            },
        );
        // Offer 2 Mbit/s (1,000-byte packets every 4 ms) for 4 s.
        let got = blast(&sim, a, b, 1000, 1000, Duration::from_millis(4)).await;
        let delivered = got.iter().filter(|x| **x).count() as f64;
        let bits = delivered * 1000.0 * 8.0;
        // 4 s of sending, plus the 100 ms queue and the packet in service that drain
        // afterwards.
        let capacity = 1_000_000.0 * 4.1 + 8_000.0;
        assert!(bits <= capacity, "carried {bits} bits > {capacity}");
        assert!(bits >= 0.9 * 1_000_000.0 * 4.0, "carried only {bits} bits");
        assert!(sim.counts().queue > 400, "queue drops: {:?}", sim.counts());
    });
}

#[test]
fn partition_stalls_a_stream_and_heal_resumes_it() {
    run(|| async {
        let sim = Sim::new(5);
        let a = sim.add_host("server", "london");
        let b = sim.add_host("client", "amsterdam");
        let (_p, _conn, mut send, mut recv) = connected(&sim, a, b, Duration::from_secs(30)).await;
        let mut buf = [0u8; 8];

        sim.partition(a, b);
        send.write_all(&2u64.to_le_bytes()).await.unwrap();
        let stalled = tokio::time::timeout(Duration::from_secs(3), recv.read_exact(&mut buf)).await;
        assert!(stalled.is_err(), "data crossed a partition");

        let healed_at = Instant::now();
        sim.heal(a, b);
        tokio::time::timeout(Duration::from_secs(10), recv.read_exact(&mut buf))
            .await
            .expect("stream did not resume after heal")
            .unwrap();
        assert_eq!(u64::from_le_bytes(buf), 2);
        assert!(
            healed_at.elapsed() < Duration::from_secs(5),
            "resumed after {:?}",
            healed_at.elapsed()
        );
        assert!(sim.counts().partition > 0);
    });
}

#[test]
fn peers_of_a_crashed_host_time_out_per_the_idle_timeout() {
    run(|| async {
        let sim = Sim::new(9);
        let a = sim.add_host("server", "virginia");
        let b = sim.add_host("client", "california");
        let p = pair(&sim, a, b, Duration::from_secs(5));
        spawn_echo(p.server.clone());
        let conn = p
            .client
            .connect(p.server_addr, "server")
            .unwrap()
            .await
            .unwrap();
        let crashed_at = Instant::now();
        sim.apply(Fault::Crash(a));
        let err = conn.closed().await;
        let after = crashed_at.elapsed();
        assert!(matches!(err, quinn::ConnectionError::TimedOut), "{err:?}");
        assert!(
            after >= Duration::from_secs(4) && after <= Duration::from_secs(6),
            "timed out after {after:?}"
        );

        // After a restart the host can serve again on a fresh endpoint.
        sim.apply(Fault::Restart(a));
        let p2 = pair(&sim, a, b, Duration::from_secs(5));
        spawn_echo(p2.server.clone());
        p2.client
            .connect(p2.server_addr, "server")
            .unwrap()
            .await
            .unwrap();
    });
}

#[test]
fn a_client_whose_address_changes_keeps_its_connection() {
    run(|| async {
        let sim = Sim::new(13);
        let a = sim.add_host("server", "frankfurt");
        let b = sim.add_host("client", "paris");
        let (_p, _conn, mut send, mut recv) = connected(&sim, a, b, Duration::from_secs(10)).await;
        let mut buf = [0u8; 8];
        let before = sim.ip(b);
        sim.apply(Fault::ChangeAddress(b));
        assert_ne!(sim.ip(b), before);
        for i in 2..10u64 {
            send.write_all(&i.to_le_bytes()).await.unwrap();
            recv.read_exact(&mut buf).await.unwrap();
            assert_eq!(u64::from_le_bytes(buf), i);
        }
    });
}

#[test]
fn scheduled_faults_and_latency_spikes() {
    run(|| async {
        let sim = Sim::new(17);
        let a = sim.add_host("a", "tokyo");
        let b = sim.add_host("b", "tokyo");
        let rx = SimSocket::bind(&sim, b, 7000).unwrap();
        let tx = SimSocket::bind(&sim, a, 0).unwrap();
        let dst = rx.local_addr_for_tests();
        sim.schedule(
            Duration::from_millis(100),
            Fault::LatencySpike {
                from: Side::Any,
                to: Side::Any,
                extra: Duration::from_millis(300),
                duration: Duration::from_millis(200),
            },
        );
        let mut buf = [0u8; 16];
        // Before the spike: 1 ms one-way within a region.
        let t = Instant::now();
        tx.send_to(b"x", dst);
        rx.recv_from(&mut buf).await.unwrap();
        assert_eq!(t.elapsed(), Duration::from_millis(1));
        tokio::time::sleep(Duration::from_millis(150)).await;
        let t = Instant::now();
        tx.send_to(b"y", dst);
        rx.recv_from(&mut buf).await.unwrap();
        assert_eq!(t.elapsed(), Duration::from_millis(301));
        tokio::time::sleep(Duration::from_millis(300)).await;
        let t = Instant::now();
        tx.send_to(b"z", dst);
        rx.recv_from(&mut buf).await.unwrap();
        assert_eq!(t.elapsed(), Duration::from_millis(1));
    });
}

#[test]
fn mtu_drops_oversize_packets_and_regions_use_the_calibrated_topology() {
    run(|| async {
        let sim = Sim::new(19);
        let a = sim.add_host("a", "virginia");
        let b = sim.add_host("b", "london");
        assert_eq!(sim.link_params(a, b).latency, Duration::from_millis(39));
        let rx = SimSocket::bind(&sim, b, 7000).unwrap();
        let tx = SimSocket::bind(&sim, a, 0).unwrap();
        tx.send_to(&[0u8; 1473], rx.local_addr_for_tests());
        tx.send_to(&[0u8; 1472], rx.local_addr_for_tests());
        let mut buf = [0u8; 2000];
        let (n, _) = rx.recv_from(&mut buf).await.unwrap();
        assert_eq!(n, 1472);
        assert_eq!(sim.counts().mtu, 1);
    });
}

/// A small lossy, jittery scenario with quinn; returns the trace hash.
fn lossy_scenario(seed: u64) -> (u64, u64) {
    run(|| async move {
        let sim = Sim::with_trace(seed, TraceMode::Full);
        let a = sim.add_host("server", "singapore");
        let b = sim.add_host("client", "sydney");
        sim.patch_link(
            Side::Any,
            Side::Any,
            skylane_netsim::LinkPatch {
                jitter: Some(Duration::from_millis(3)),
                loss: Some(Loss::Independent(0.05)),
                reorder: Some(true),
                ..Default::default()
            },
        );
        let p = pair(&sim, a, b, Duration::from_secs(10));
        spawn_echo(p.server.clone());
        let conn = p
            .client
            .connect(p.server_addr, "server")
            .unwrap()
            .await
            .unwrap();
        let (mut send, mut recv) = conn.open_bi().await.unwrap();
        let mut buf = [0u8; 8];
        for i in 0..50u64 {
            send.write_all(&i.to_le_bytes()).await.unwrap();
            recv.read_exact(&mut buf).await.unwrap();
            conn.send_datagram(vec![i as u8; 200].into()).unwrap();
        }
        conn.close(0u32.into(), b"done");
        p.client.wait_idle().await;
        let trace = sim.trace();
        let mut jsonl = Vec::new();
        trace.write_jsonl(&mut jsonl).unwrap();
        assert_eq!(
            jsonl.iter().filter(|b| **b == b'\n').count(),
            trace.records().len()
        );
        (sim.trace_hash(), trace.counts().sent)
    })
}

#[test]
fn same_seed_same_trace_other_seed_other_trace() {
    let (h1, sent1) = lossy_scenario(42);
    let (h2, sent2) = lossy_scenario(42);
    let (h3, _) = lossy_scenario(43);
    assert!(sent1 > 100);
    assert_eq!(sent1, sent2);
    assert_eq!(h1, h2, "same seed must give the same trace");
    assert_ne!(h1, h3, "another seed should give another trace");
}
