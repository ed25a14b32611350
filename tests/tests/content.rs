//! Content downloads over netsim: a pack pulled through a relay on a
//! bandwidth-limited path never delays the client's critical traffic on
//! the same connection (the relay issue's priority test, with a download in
//! progress).

use std::sync::Arc;
use std::time::Duration;

use skylane_content::SourceDir;
use skylane_netsim::{run, LinkPatch};
use skylane_origin::ArenaAction;
use skylane_proto::ed25519_dalek::SigningKey;
use skylane_proto::{EventClass, Outcome};
use skylane_relay::ContentSettings;
use skylane_tests::{Net, NetOptions, Walker};

#[test]
fn critical_round_trips_keep_their_latency_while_a_download_fills_the_link() {
    let source = tempfile::tempdir().unwrap();
    let files = tempfile::tempdir().unwrap();
    // 3 MiB of incompressible bytes: about 5 s of a 5 Mbit/s path.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let pack: Vec<u8> = (0..3 << 20)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    std::fs::write(files.path().join("map.pak"), &pack).unwrap();
    let key = SigningKey::from_bytes(&[5; 32]);
    SourceDir::new(source.path())
        .publish(files.path(), "1", &key, 0)
        .unwrap();
    let content = ContentSettings {
        source: source.path().to_owned(),
        key: key.verifying_key(),
        cache_bytes: 64 << 20,
        refresh: Duration::from_millis(200),
    };
    run(move || async move {
        let net = Net::start(NetOptions {
            content: Some(content),
            ..NetOptions::default()
        });
        let ams = net.relays[0].clone();
        let (host, b) = net.client_builder("paris", "player");
        let mut walker = Walker::new(
            b.relays([ams.addr])
                .content_key(key.verifying_key())
                .connect()
                .await
                .unwrap(),
            "player",
        );
        walker.wait_spawn().await;
        let client = Arc::new(walker.client);
        // The relay → player path: 5 Mbit/s with a shallow queue.
        net.sim.patch_link(
            ams.host,
            host,
            LinkPatch {
                bandwidth_bps: Some(Some(5_000_000)),
                queue_budget: Some(Duration::from_millis(6)),
                ..LinkPatch::default()
            },
        );
        // The critical path's round trip: client → relay → origin → relay →
        // client, answered by the origin on arrival (no tick in it), critical
        // class both ways, on the connection the download fills.
        let rtt = |c: Arc<skylane_client::Client>, n: usize| async move {
            let mut us = Vec::new();
            for _ in 0..n {
                us.push(c.ping_origin().await.unwrap().as_micros() as u64);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            us.sort_unstable();
            us
        };
        // A critical action still applies while the download runs.
        let mark = ArenaAction::Mark { x: 1.0, y: 1.0 }.encode();
        // Quiet: critical round trips alone.
        let quiet = rtt(client.clone(), 30).await;
        // The download runs; critical round trips meanwhile.
        let c = client.clone();
        let started = tokio::time::Instant::now();
        let download = tokio::spawn(async move {
            let b = c.fetch_content("map.pak", "1", |_, _| {}).await;
            (b, started.elapsed())
        });
        let loaded = rtt(client.clone(), 30).await;
        let o = client.act(EventClass::Critical, Vec::new(), mark).await;
        assert!(matches!(o, Ok(Outcome::Applied { .. })), "{o:?}");
        let (bytes, took) = download.await.unwrap();
        let bytes = bytes.unwrap();
        assert!(bytes[..] == pack[..], "the pack arrived whole and verified");
        let p99 = |v: &[u64]| v[(v.len() * 99).div_ceil(100) - 1];
        eprintln!(
            "critical p99 quiet {} us, during the download {} us; download {:.1} s",
            p99(&quiet),
            p99(&loaded),
            took.as_secs_f64()
        );
        assert!(
            took > Duration::from_secs(3),
            "the download filled the path while the round trips ran ({took:?})"
        );
        assert!(
            p99(&loaded) <= 2 * p99(&quiet),
            "critical p99 during the download {} us vs {} us quiet",
            p99(&loaded),
            p99(&quiet)
        );
        assert_eq!(ams.metrics.slow_clients.get(), 0, "nobody was cut off");
        assert_eq!(ams.metrics.content_fetches.get(), 1);
    });
}
