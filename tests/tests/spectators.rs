//! Spectator scenarios over netsim: delayed, filtered feeds through a relay;
//! private team information never reaches spectators; spectator tokens cannot
//! act; thousands of spectators at two delays on one relay keep their delay.

use std::time::Duration;

use hdrhistogram::Histogram;
use skylane_client::{ClientError, ClientEvent, Spectator};
use skylane_netsim::run;
use skylane_origin::{ArenaAction, ArenaEvent};
use skylane_proto::{
    BandwidthMode, ErrorCode, EventClass, FeedFrame, Outcome, RejectCode, Role, SpectatorFilter,
    TeamId,
};
use skylane_tests::{Net, NetOptions, Walker};

/// Two players walk, mark the map (public) and share plans (team-private).
async fn play(walkers: &mut [Walker], rounds: usize) {
    for i in 0..rounds {
        for w in walkers.iter_mut() {
            w.step().await;
            if i % 10 == 0 {
                let mark = ArenaAction::Mark { x: 1.0, y: 1.0 }.encode();
                let plan = ArenaAction::Plan { x: 2.0, y: 2.0 }.encode();
                let _ = w.client.act(EventClass::Critical, vec![], mark).await;
                let _ = w.client.act(EventClass::Critical, vec![], plan).await;
            }
            w.absorb();
        }
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
}

/// Receives a spectator's frames as they arrive, with each one's lateness
/// against its due time, until `stop` fires.
fn watch_in_background(
    mut s: Spectator,
    stop: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<(Spectator, Vec<FeedFrame>, Vec<i64>)> {
    tokio::spawn(async move {
        let mut stop = stop;
        let (mut frames, mut late) = (Vec::new(), Vec::new());
        loop {
            tokio::select! {
                f = s.next_frame() => match f {
                    Ok(f) => {
                        late.push(s.lateness_us(&f).expect("clock synced"));
                        frames.push(f);
                    }
                    Err(e) => panic!("spectator stopped: {e}"),
                },
                _ = stop.changed() => return (s, frames, late),
            }
        }
    })
}

/// The relay answers the spectator's subscription with an error of `code`.
async fn refused_with(s: &mut Spectator, code: ErrorCode) {
    let e = tokio::time::timeout(Duration::from_secs(2), s.next_frame())
        .await
        .expect("answered");
    assert!(
        matches!(&e, Err(ClientError::Request { code: c, .. }) if *c == code),
        "expected {code:?}: {e:?}"
    );
}

fn decoded(frames: &[FeedFrame]) -> Vec<ArenaEvent> {
    frames
        .iter()
        .flat_map(|f| f.events.iter())
        .filter_map(|e| ArenaEvent::decode(&e.payload))
        .collect()
}

#[test]
fn spectators_get_a_delayed_filtered_public_feed_and_cannot_act() {
    run(|| async {
        let net = Net::start(NetOptions::default());
        let relay = net.relays[0].addr;
        let mut walkers = Vec::new();
        for name in ["w1", "w2"] {
            let (_, b) = net.client_builder("paris", name);
            let mut w = Walker::new(b.relays([relay]).connect().await.unwrap(), name);
            w.wait_spawn().await;
            walkers.push(w);
        }
        let watch = |name: &str, filter, delay, mode| {
            let (_, b) = net.builder_as("paris", name, Role::Spectator);
            Spectator::connect(b.relays([relay]), filter, delay, mode)
        };
        let team0 = SpectatorFilter {
            teams: vec![TeamId(0)],
            ..SpectatorFilter::all()
        };
        let (stop_tx, stop) = tokio::sync::watch::channel(false);
        let live = watch(
            "live",
            SpectatorFilter::all(),
            Duration::ZERO,
            BandwidthMode::Full,
        )
        .await
        .unwrap();
        let delayed = watch(
            "delayed",
            SpectatorFilter::all(),
            Duration::from_secs(2),
            BandwidthMode::Full,
        )
        .await
        .unwrap();
        let team = watch("team", team0, Duration::ZERO, BandwidthMode::Full)
            .await
            .unwrap();
        let thin = watch(
            "thin",
            SpectatorFilter::all(),
            Duration::ZERO,
            BandwidthMode::KeyframesOnly,
        )
        .await
        .unwrap();
        let reduced = watch(
            "reduced",
            SpectatorFilter::all(),
            Duration::ZERO,
            BandwidthMode::Reduced { hz: 10 },
        )
        .await
        .unwrap();
        let began = tokio::time::Instant::now();
        let tasks: Vec<_> = [live, delayed, team, thin, reduced]
            .into_iter()
            .map(|s| watch_in_background(s, stop.clone()))
            .collect();
        play(&mut walkers, 150).await;
        tokio::time::sleep(Duration::from_secs(3)).await;
        stop_tx.send(true).unwrap();
        let mut results = Vec::new();
        for t in tasks {
            results.push(t.await.unwrap());
        }
        let watched = began.elapsed().as_secs_f64();
        // Every frame, whatever the delay, filter or mode, checked against the
        // origin's key (the harness gives every client that key): each event
        // one the origin signed.
        // The reduced mode's coalesced deltas are unsigned; its keyframes are not.
        for (i, (s, frames, _)) in results.iter().enumerate() {
            let st = s.client().stats();
            assert!(st.spectator_frames > 0);
            if i == 4 {
                let keyframes = frames.iter().filter(|f| f.keyframe).count() as u64;
                assert_eq!(st.spectator_frames_verified, keyframes, "reduced");
            } else {
                assert_eq!(st.spectator_frames_verified, st.spectator_frames);
                assert!(frames.iter().all(|f| !f.proofs.is_empty()));
            }
        }
        let [(_, live_f, live_late), (_, delayed_f, delayed_late), (_, team_f, _), (_, thin_f, _), (_, reduced_f, _)] =
            <[_; 5]>::try_from(results).ok().unwrap();
        for (name, frames) in [
            ("live", &live_f),
            ("delayed", &delayed_f),
            ("team", &team_f),
            ("thin", &thin_f),
        ] {
            assert!(frames.len() > 2, "{name}: {} frames", frames.len());
            assert!(frames[0].keyframe, "{name} starts from a keyframe");
            assert!(
                frames
                    .windows(2)
                    .all(|w| (w[0].tick, w[0].keyframe) < (w[1].tick, w[1].keyframe)),
                "{name} in order"
            );
            let events = decoded(frames);
            assert!(
                !events
                    .iter()
                    .any(|e| matches!(e, ArenaEvent::Planned { .. })),
                "{name}: a team's plan leaked to spectators"
            );
        }
        // Marks are public, and moves come through at full rate.
        let live_events = decoded(&live_f);
        assert!(live_events
            .iter()
            .any(|e| matches!(e, ArenaEvent::Marked { .. })));
        assert!(
            live_events
                .iter()
                .filter(|e| matches!(e, ArenaEvent::Moved { .. }))
                .count()
                > 100
        );
        // Never early (beyond clock-sync error). A live (0 s) feed is as late as
        // the path origin → relay → spectator; a delayed one is released from the
        // relay's buffer on time: p99 within 10 ms of world time + delay.
        for (name, late, bound) in [
            ("live", &live_late, 40_000),
            ("delayed", &delayed_late, 10_000),
        ] {
            let early = late.iter().filter(|l| **l < -2_000).count();
            assert_eq!(early, 0, "{name}: early frames: {late:?}");
            let mut h = Histogram::<u64>::new(2).unwrap();
            for l in late.iter() {
                h.record(l.unsigned_abs()).unwrap();
            }
            let p99 = h.value_at_quantile(0.99);
            eprintln!(
                "{name}: {} frames, lateness p50 {} µs p99 {p99} µs",
                late.len(),
                h.value_at_quantile(0.5)
            );
            assert!(p99 <= bound, "{name}: p99 {p99} µs");
        }
        // The 2 s lane lags the live one by 2 s of world time.
        let newest = |f: &[FeedFrame]| f.last().map_or(0, |f| f.origin_time_us);
        let lag = newest(&live_f) - newest(&delayed_f);
        assert!((1_800_000..=2_300_000).contains(&lag), "lag {lag} µs");
        // Team filter: only team 0 entities (or untagged events).
        assert!(team_f
            .iter()
            .flat_map(|f| &f.events)
            .all(|e| e.team.is_none_or(|t| t == TeamId(0))));
        assert!(thin_f.iter().all(|f| f.keyframe));
        // Bandwidth per spectator per mode: the frames as encoded on the wire.
        let per_s = |f: &[FeedFrame]| {
            let bytes: usize = f
                .iter()
                .map(|f| {
                    skylane_proto::encode_frame_to_bytes(
                        &skylane_proto::ServerMsg::Spectate(f.clone()),
                        skylane_proto::DEFAULT_MAX_FRAME,
                    )
                    .unwrap()
                    .len()
                })
                .sum();
            bytes as f64 / watched
        };
        let (full, reduced, keyframes) = (per_s(&live_f), per_s(&reduced_f), per_s(&thin_f));
        eprintln!(
            "bytes/s per spectator (2 players walking, marking, planning): full {full:.0}, reduced 10 Hz {reduced:.0}, keyframes only {keyframes:.0}"
        );
        assert!(
            full > reduced && reduced > keyframes,
            "{full} {reduced} {keyframes}"
        );
        let m = &net.relays[0].metrics;
        assert_eq!(m.spectators.get(), 5);

        // A spectator token cannot act, and receives no live channel.
        let (_, b) = net.builder_as("paris", "sneaky", Role::Spectator);
        let mut sneaky = b.relays([relay]).connect().await.unwrap();
        let move_ = ArenaAction::Move { x: 1.0, y: 1.0 }.encode();
        let o = sneaky.act(EventClass::State, vec![], move_).await.unwrap();
        assert!(
            matches!(
                o,
                Outcome::Rejected {
                    code: RejectCode::Forbidden,
                    ..
                }
            ),
            "{o:?}"
        );
        play(&mut walkers, 20).await;
        while let Some(ev) = sneaky.try_next_event() {
            assert!(
                !matches!(ev, ClientEvent::Event(_) | ClientEvent::Keyframe(_)),
                "a spectator token got a live channel: {ev:?}"
            );
        }
        // A player token cannot watch the spectator feed.
        let (_, b) = net.client_builder("paris", "peeker");
        let mut peeker = Spectator::connect(
            b.relays([relay]),
            SpectatorFilter::all(),
            Duration::ZERO,
            BandwidthMode::Full,
        )
        .await
        .unwrap();
        refused_with(&mut peeker, ErrorCode::Forbidden).await;
        // A delay past the relay's maximum is refused with a reason.
        let mut greedy = watch(
            "greedy",
            SpectatorFilter::all(),
            Duration::from_secs(3600),
            BandwidthMode::Full,
        )
        .await
        .unwrap();
        refused_with(&mut greedy, ErrorCode::Unsupported).await;
    });
}

#[test]
fn two_thousand_spectators_at_two_delays_keep_their_delay() {
    run(|| async {
        let net = Net::start(NetOptions::default());
        let relay = net.relays[0].addr;
        let mut walkers = Vec::new();
        for name in ["w1", "w2", "w3"] {
            let (_, b) = net.client_builder("amsterdam", name);
            let mut w = Walker::new(b.relays([relay]).connect().await.unwrap(), name);
            w.wait_spawn().await;
            walkers.push(w);
        }
        const N: usize = 2_000;
        // Spectators share hosts (and endpoints) within the relay's per-IP limit.
        const PER_HOST: usize = 16;
        let (stop_tx, stop) = tokio::sync::watch::channel(false);
        let mut tasks = Vec::new();
        for h in 0..N.div_ceil(PER_HOST) {
            let host = net.sim.add_host(format!("crowd-{h}"), "amsterdam");
            let endpoint = net.sim.endpoint(host, 0, None).unwrap();
            for n in (h * PER_HOST..(h + 1) * PER_HOST).take_while(|n| *n < N) {
                let delay = if n % 2 == 0 { 1 } else { 3 };
                let b = net
                    .builder_on(endpoint.clone(), &format!("fan{n}"), Role::Spectator)
                    .relays([relay]);
                // Public audiences at a reduced rate (10 Hz): what a stream
                // overlay needs, and a third of the frames to check.
                let s = Spectator::connect(
                    b,
                    SpectatorFilter::all(),
                    Duration::from_secs(delay),
                    BandwidthMode::Reduced { hz: 10 },
                )
                .await
                .unwrap();
                tasks.push(watch_in_background(s, stop.clone()));
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(net.relays[0].metrics.spectators.get(), N as i64);
        play(&mut walkers, 100).await;
        tokio::time::sleep(Duration::from_secs(4)).await;
        stop_tx.send(true).unwrap();
        let mut h = Histogram::<u64>::new(2).unwrap();
        let (mut early, mut frames, mut starved) = (0, 0, 0);
        for t in tasks {
            let (_, f, late) = t.await.unwrap();
            if f.len() < 10 {
                starved += 1;
            }
            frames += f.len();
            early += late.iter().filter(|l| **l < 0).count();
            for l in late {
                h.record(l.unsigned_abs()).unwrap();
            }
        }
        eprintln!(
            "{N} spectators: {frames} frames, lateness p50 {} µs p99 {} µs max {} µs, {early} early",
            h.value_at_quantile(0.5),
            h.value_at_quantile(0.99),
            h.max()
        );
        assert_eq!(starved, 0, "every spectator got its feed");
        assert_eq!(early, 0, "no frame before world time + delay");
        assert!(
            h.value_at_quantile(0.99) <= 10_000,
            "p99 {} µs",
            h.value_at_quantile(0.99)
        );
        let m = &net.relays[0].metrics;
        assert_eq!(m.spectator_skips.get(), 0, "nobody fell behind");
        // One feed from the origin served all of them: each feed frame came once.
        let feed = m.feed_frames_in.get() as usize;
        assert!(feed > 0 && feed < 1_000, "{feed} feed frames");
        assert!(frames <= feed * N, "{frames} delivered from {feed}");
    });
}

#[test]
fn a_spectator_changes_its_filter_and_mode_while_watching() {
    run(|| async {
        let net = Net::start(NetOptions::default());
        let relay = net.relays[0].addr;
        let (_, b) = net.client_builder("paris", "w1");
        let mut w = Walker::new(b.relays([relay]).connect().await.unwrap(), "w1");
        w.wait_spawn().await;
        let (_, b) = net.builder_as("paris", "fan", Role::Spectator);
        let mut s = Spectator::connect(
            b.relays([relay]),
            SpectatorFilter::all(),
            Duration::ZERO,
            BandwidthMode::Full,
        )
        .await
        .unwrap();
        let mut walkers = vec![w];
        play(&mut walkers, 40).await;
        let mut before = Vec::new();
        while let Some(f) = s.try_next_frame() {
            before.push(f);
        }
        assert!(before.iter().any(|f| !f.keyframe), "full mode has deltas");
        // Only critical events, keyframes only: the relay restarts the feed.
        let critical = SpectatorFilter {
            classes: skylane_proto::ClassSet::EMPTY.with(EventClass::Critical),
            ..SpectatorFilter::all()
        };
        s.change(critical, Duration::ZERO, BandwidthMode::KeyframesOnly)
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        while s.try_next_frame().is_some() {}
        play(&mut walkers, 80).await;
        let mut after = Vec::new();
        while let Some(f) = s.try_next_frame() {
            after.push(f);
        }
        assert!(!after.is_empty(), "keyframes keep coming");
        assert!(
            after.iter().all(|f| f.keyframe),
            "only keyframes after the change"
        );
        assert!(
            after
                .iter()
                .flat_map(|f| &f.events)
                .all(|e| e.class == EventClass::Critical),
            "only critical events after the change"
        );
        assert_eq!(s.subscription().mode, BandwidthMode::KeyframesOnly);
    });
}

/// A public-tier spectator (its token's minimum delay: 2 s here, 90 s in
/// production) asks to watch live: the relay raises the delay to its tier, so
/// no frame reaches it earlier than 2 s after the tick it shows; a caster's
/// token (tier 0) watches live on the same relay.
#[test]
fn a_tiered_spectator_token_cannot_watch_live() {
    run(|| async {
        let net = Net::start(NetOptions::default());
        let relay = net.relays[0].addr;
        let (_, b) = net.client_builder("paris", "w1");
        let mut w = Walker::new(b.relays([relay]).connect().await.unwrap(), "w1");
        w.wait_spawn().await;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let tiered = |name: &str, secs| {
            let claims =
                skylane_proto::Claims::new(name, Role::Spectator, vec![], "skylane", now, 3600)
                    .with_min_delay(secs);
            net.tokens.issue(&claims).unwrap()
        };
        // Both ask to watch live.
        let live = async |name: &str, tier| {
            let (_, b) = net.builder_as("paris", name, Role::Spectator);
            Spectator::connect(
                b.relays([relay]).token(tiered(name, tier)),
                SpectatorFilter::all(),
                Duration::ZERO,
                BandwidthMode::Full,
            )
            .await
            .unwrap()
        };
        let public = live("public", 2).await;
        let caster = live("caster", 0).await;
        let (stop_tx, stop) = tokio::sync::watch::channel(false);
        let watching = [
            watch_in_background(public, stop.clone()),
            watch_in_background(caster, stop),
        ];
        let mut walkers = vec![w];
        play(&mut walkers, 150).await;
        tokio::time::sleep(Duration::from_secs(3)).await;
        stop_tx.send(true).unwrap();
        let mut late = Vec::new();
        for h in watching {
            let (_, frames, l) = h.await.unwrap();
            assert!(frames.len() > 20, "frames arrive: {}", frames.len());
            late.push(l);
        }
        // Lateness is against the 0 s asked for: the public one's is its tier.
        let min = |l: &[i64]| l.iter().copied().min().unwrap();
        assert!(
            min(&late[0]) >= 1_950_000,
            "a public-tier frame arrived {} us after its tick",
            min(&late[0])
        );
        assert!(
            late[1].iter().all(|l| *l < 1_000_000),
            "the caster watches live: {:?}",
            late[1].iter().max()
        );
    });
}
