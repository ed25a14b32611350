//! The origin → relay hop is class-aware (netsim, seeded): a burst of bulk
//! from the origin, larger than the link, does not delay critical events of
//! another channel (critical p99 within 2x of the same path idle), and
//! everything still arrives exactly once.

use std::time::Duration;

use skylane_netsim::{run, LinkPatch};
use skylane_origin::ArenaAction;
use skylane_proto::EventClass;
use skylane_tests::{assert_exactly_once, watch_marks, Net, NetOptions, Walker};

fn p99(v: &mut [u64]) -> u64 {
    v.sort_unstable();
    v[(v.len() * 99 / 100).min(v.len() - 1)]
}

#[test]
fn a_bulk_burst_from_the_origin_does_not_delay_critical_events() {
    run(|| async {
        let net = Net::start(NetOptions::default());
        let ams = net.relays[0].clone();
        let (_, b) = net.client_builder("paris", "viewer");
        let viewer = b.relays([ams.addr]).connect().await.unwrap();
        let (_, b) = net.client_builder("paris", "marker");
        let mut marker = Walker::new(b.relays([ams.addr]).connect().await.unwrap(), "marker");
        let mut sprayers = Vec::new();
        for i in 0..8 {
            let name = format!("sprayer{i}");
            let (_, b) = net.client_builder("paris", &name);
            sprayers.push(Walker::new(
                b.relays([ams.addr]).connect().await.unwrap(),
                &name,
            ));
        }
        marker.wait_spawn().await;
        for s in &mut sprayers {
            s.wait_spawn().await;
        }
        let (viewed, reader) = watch_marks(viewer);
        // The origin → relay link: 5 Mbit/s with a shallow queue (6 ms at line
        // rate, about three full packets; what waits beyond it waits in the
        // origin, where QUIC priority orders it).
        net.sim.patch_link(
            net.origin_host,
            ams.host,
            LinkPatch {
                bandwidth_bps: Some(Some(5_000_000)),
                queue_budget: Some(Duration::from_millis(6)),
                ..LinkPatch::default()
            },
        );
        let mark = |phase: f32| ArenaAction::Mark { x: phase, y: 1.0 }.encode();
        // Phase 1: marks alone (world channel), 10 a second for 4 s.
        for _ in 0..40 {
            marker.client.send(EventClass::Critical, mark(1.0)).unwrap();
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // Phase 2: eight sprayers each send 8 KB ten times a second (bulk
        // events on their cells: about 5.2 Mbit/s from the origin to the relay,
        // more than the link) for 4 s, marks continuing.
        let spray = ArenaAction::Spray {
            data: vec![7; 8 * 1024],
        }
        .encode();
        for _ in 0..40 {
            marker.client.send(EventClass::Critical, mark(2.0)).unwrap();
            for s in &sprayers {
                s.client.send(EventClass::Bulk, spray.clone()).unwrap();
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // The burst drains.
        net.sim.patch_link(
            net.origin_host,
            ams.host,
            LinkPatch {
                bandwidth_bps: Some(None),
                ..LinkPatch::default()
            },
        );
        tokio::time::sleep(Duration::from_secs(5)).await;
        reader.abort();
        let v = std::mem::take(&mut *viewed.lock().unwrap());
        let mut idle: Vec<u64> = v.marks.iter().filter(|m| m.0 == 1).map(|m| m.1).collect();
        let mut loaded: Vec<u64> = v.marks.iter().filter(|m| m.0 == 2).map(|m| m.1).collect();
        assert_eq!((idle.len(), loaded.len()), (40, 40), "every mark arrived");
        assert_eq!(v.sprays, 320, "every spray arrived in the end");
        let (quiet, busy) = (p99(&mut idle), p99(&mut loaded));
        eprintln!("critical p99: idle {quiet} us, under a bulk burst {busy} us");
        assert!(
            busy <= 2 * quiet,
            "critical p99 under a bulk burst {busy} us vs {quiet} us idle"
        );
        assert_exactly_once(&v.seen);
    });
}
