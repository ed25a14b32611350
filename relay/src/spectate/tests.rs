//! Unit tests of the spectator audience (delays, filters, modes, bounds).
use super::*;
use skylane_proto::{decode_message, Area, ClassSet, FrameDecoder, Payload, TeamId};

const W: WorldId = WorldId(1);
const S: u64 = 1_000_000;

fn ev(entity: u64, team: u16, x: f32, class: EventClass) -> FeedEvent {
    FeedEvent {
        class,
        entity: Some(EntityId(entity)),
        team: Some(TeamId(team)),
        pos: Some((x, 0.0)),
        payload: Payload::from(vec![0u8; 20]),
    }
}

/// The test origin's feed key.
fn origin_key() -> skylane_proto::ChainSigner {
    skylane_proto::ChainSigner::from_bytes(&[11; 32])
}

/// A frame at tick `tick`, origin time `tick` × 100 ms, signed as the origin
/// signs it.
fn frame(tick: u64, keyframe: bool) -> Arc<FeedFrame> {
    let mut f = FeedFrame {
        world: W,
        tick,
        origin_time_us: tick * 100_000,
        keyframe,
        events: vec![
            ev(1, 1, 5.0, EventClass::Movement),
            ev(2, 2, 50.0, EventClass::Movement),
            ev(1, 1, 5.0, EventClass::Critical),
        ],
        proofs: Vec::new(),
    };
    f.proofs = vec![origin_key().sign_feed(&f)];
    Arc::new(f)
}

/// Whatever a spectator's delay and filter, every frame of the full and
/// keyframes-only modes (and every keyframe of the reduced mode) carries
/// proofs its events check against, and an event the relay made up would not.
/// The reduced mode's coalesced deltas are unsigned (documented).
#[test]
fn every_derived_frame_verifies_against_the_origins_key() {
    let mut a = Audience::new(W, AudienceConfig::default());
    a.handle_clock(0, 0);
    let team1 = SpectatorFilter {
        teams: vec![TeamId(1)],
        ..SpectatorFilter::all()
    };
    let subs = [
        sub(0, SpectatorFilter::all(), BandwidthMode::Full),
        sub(0, team1.clone(), BandwidthMode::Full),
        sub(300, team1, BandwidthMode::Reduced { hz: 2 }),
        sub(0, SpectatorFilter::all(), BandwidthMode::KeyframesOnly),
    ];
    for (i, s) in subs.iter().enumerate() {
        a.handle_subscribe(0, SessionId(i as u64 + 1), s, 0)
            .unwrap();
    }
    for t in 0..40 {
        a.handle_frame(t * 100_000, frame(t, t % 10 == 0));
    }
    a.handle_timeout(50 * S);
    let key = origin_key().verifying_key();
    let delivered = drain(&mut a);
    assert!(delivered.len() > 40, "{}", delivered.len());
    let mut seen = [0; 4];
    for d in &delivered {
        let f = decode(d);
        seen[d.spectator.0 as usize - 1] += 1;
        if d.spectator == SessionId(3) && !f.keyframe {
            assert!(f.proofs.is_empty(), "reduced deltas are unsigned");
            continue;
        }
        assert_eq!(skylane_proto::verify_feed(&key, &f), Ok(()), "{f:?}");
        // A relay that adds an event is caught.
        let mut forged = f.clone();
        forged.events.push(ev(9, 1, 5.0, EventClass::Critical));
        assert!(skylane_proto::verify_feed(&key, &forged).is_err());
    }
    assert!(seen.iter().all(|n| *n > 0), "{seen:?}");
}

fn sub(delay_ms: u32, filter: SpectatorFilter, mode: BandwidthMode) -> SpectatorSubscribe {
    SpectatorSubscribe {
        world: W,
        filter,
        delay_ms,
        mode,
    }
}

fn decode(d: &SpectatorDelivery) -> FeedFrame {
    let mut dec = FrameDecoder::default();
    dec.push(&d.frame);
    match dec.poll_message::<ServerMsg>() {
        Ok(Some(ServerMsg::Spectate(f))) => f,
        other => panic!("not a spectator frame: {other:?}"),
    }
}

fn drain(a: &mut Audience) -> Vec<SpectatorDelivery> {
    std::iter::from_fn(|| a.poll_delivery()).collect()
}

#[test]
fn frames_wait_for_their_delay_and_share_bytes_within_a_group() {
    let mut a = Audience::new(W, AudienceConfig::default());
    a.handle_clock(0, 0);
    let full = sub(1000, SpectatorFilter::all(), BandwidthMode::Full);
    a.handle_subscribe(0, SessionId(1), &full, 0).unwrap();
    a.handle_subscribe(0, SessionId(2), &full, 0).unwrap();
    a.handle_frame(0, frame(0, true));
    a.handle_frame(100_000, frame(1, false));
    assert!(drain(&mut a).is_empty(), "nothing before the delay");
    assert_eq!(a.poll_timeout(), Some(S));
    a.handle_timeout(S - 1);
    assert!(drain(&mut a).is_empty());
    a.handle_timeout(S);
    let d = drain(&mut a);
    assert_eq!(d.len(), 2, "the keyframe to both");
    assert!(d.iter().all(|x| x.keyframe));
    assert_eq!(
        d[0].frame.as_ptr(),
        d[1].frame.as_ptr(),
        "one encoding, shared"
    );
    assert_eq!(a.poll_timeout(), Some(S + 100_000));
    a.handle_timeout(S + 100_000);
    let d = drain(&mut a);
    assert_eq!(d.len(), 2);
    assert_eq!(decode(&d[0]).tick, 1);
    assert_eq!(a.stats().encoded, 2);
}

#[test]
fn a_clock_offset_moves_releases_and_nothing_is_released_before_one_is_known() {
    let mut a = Audience::new(W, AudienceConfig::default());
    a.handle_subscribe(
        0,
        SessionId(1),
        &sub(0, SpectatorFilter::all(), BandwidthMode::Full),
        0,
    )
    .unwrap();
    a.handle_frame(0, frame(0, true));
    a.handle_timeout(10 * S);
    assert!(drain(&mut a).is_empty(), "no offset, no release");
    // The origin's clock is 5 s behind the relay's.
    a.handle_clock(10 * S, -5 * S as i64);
    assert_eq!(drain(&mut a).len(), 1);
    a.handle_frame(10 * S, frame(51, false)); // origin 5.1 s → relay 10.1 s
    assert!(drain(&mut a).is_empty());
    assert_eq!(a.poll_timeout(), Some(10 * S + 100_000));
}

#[test]
fn several_delays_share_one_history() {
    let mut a = Audience::new(W, AudienceConfig::default());
    a.handle_clock(0, 0);
    for (s, d) in [(1, 0), (2, 2000), (3, 2000)] {
        a.handle_subscribe(
            0,
            SessionId(s),
            &sub(d, SpectatorFilter::all(), BandwidthMode::Full),
            0,
        )
        .unwrap();
    }
    assert_eq!(a.delays(), vec![0, 2000]);
    for t in 0..30 {
        let now = t * 100_000;
        a.handle_frame(now, frame(t, t % 10 == 0));
        a.handle_timeout(now);
    }
    let d = drain(&mut a);
    let count = |s| d.iter().filter(|x| x.spectator == SessionId(s)).count();
    assert_eq!(count(1), 30, "live lane has everything");
    assert_eq!(count(2), 10, "2 s lane has released ticks 0..=9");
    assert_eq!(count(3), 10);
    assert_eq!(a.buffered_frames(), 30, "one history for both lanes");
    a.handle_leave(SessionId(1));
    assert_eq!(a.delays(), vec![2000]);
}

#[test]
fn filters_and_modes_shape_what_a_spectator_sees() {
    let mut a = Audience::new(W, AudienceConfig::default());
    a.handle_clock(0, 0);
    let team1 = SpectatorFilter {
        teams: vec![TeamId(1)],
        ..SpectatorFilter::all()
    };
    let crit = SpectatorFilter {
        classes: ClassSet::EMPTY.with(EventClass::Critical),
        ..SpectatorFilter::all()
    };
    let area = SpectatorFilter {
        area: Some(Area {
            min_x: 40.0,
            min_y: -1.0,
            max_x: 60.0,
            max_y: 1.0,
        }),
        ..SpectatorFilter::all()
    };
    a.handle_subscribe(0, SessionId(1), &sub(0, team1, BandwidthMode::Full), 0)
        .unwrap();
    a.handle_subscribe(0, SessionId(2), &sub(0, crit, BandwidthMode::Full), 0)
        .unwrap();
    a.handle_subscribe(0, SessionId(3), &sub(0, area, BandwidthMode::Full), 0)
        .unwrap();
    a.handle_subscribe(
        0,
        SessionId(4),
        &sub(0, SpectatorFilter::all(), BandwidthMode::Reduced { hz: 2 }),
        0,
    )
    .unwrap();
    a.handle_subscribe(
        0,
        SessionId(5),
        &sub(0, SpectatorFilter::all(), BandwidthMode::KeyframesOnly),
        0,
    )
    .unwrap();
    // 3 s of 10 Hz frames, a keyframe every second.
    for t in 0..30 {
        a.handle_frame(t * 100_000, frame(t, t % 10 == 0));
    }
    let d = drain(&mut a);
    let of = |s| -> Vec<FeedFrame> {
        d.iter()
            .filter(|x| x.spectator == SessionId(s))
            .map(decode)
            .collect()
    };
    let team = of(1);
    assert_eq!(team.len(), 30);
    assert!(team
        .iter()
        .all(|f| f.events.len() == 2 && f.events.iter().all(|e| e.team == Some(TeamId(1)))));
    assert!(of(2)
        .iter()
        .all(|f| f.events.iter().all(|e| e.class == EventClass::Critical)));
    assert!(of(3)
        .iter()
        .all(|f| f.events.iter().all(|e| e.entity == Some(EntityId(2)))));
    // Reduced to 2 Hz: keyframes plus one coalesced frame per half second,
    // each with the latest movement per entity and every critical event.
    let reduced = of(4);
    assert_eq!(reduced.iter().filter(|f| f.keyframe).count(), 3);
    let deltas: Vec<_> = reduced.iter().filter(|f| !f.keyframe).collect();
    assert_eq!(
        deltas.len(),
        3,
        "{:?}",
        deltas.iter().map(|f| f.tick).collect::<Vec<_>>()
    );
    assert_eq!(
        deltas[0]
            .events
            .iter()
            .filter(|e| e.class == EventClass::Critical)
            .count(),
        5
    );
    assert_eq!(
        deltas[0]
            .events
            .iter()
            .filter(|e| e.class == EventClass::Movement)
            .count(),
        2
    );
    let kf = of(5);
    assert_eq!(kf.len(), 3);
    assert!(kf.iter().all(|f| f.keyframe));
    let bytes = |s| {
        d.iter()
            .filter(|x| x.spectator == SessionId(s))
            .map(|x| x.frame.len())
            .sum::<usize>()
    };
    assert!(
        bytes(4) < bytes(1) * 2 && bytes(5) < bytes(4),
        "{} {} {}",
        bytes(1),
        bytes(4),
        bytes(5)
    );
}

#[test]
fn a_late_joiner_starts_from_the_latest_released_keyframe() {
    let mut a = Audience::new(W, AudienceConfig::default());
    a.handle_clock(0, 0);
    a.handle_subscribe(
        0,
        SessionId(1),
        &sub(1000, SpectatorFilter::all(), BandwidthMode::Full),
        0,
    )
    .unwrap();
    for t in 0..40 {
        a.handle_frame(t * 100_000, frame(t, t % 10 == 0));
    }
    drain(&mut a);
    // At 3.95 s a 1 s lane has released ticks up to 29; its last keyframe is 20.
    a.handle_subscribe(
        3_950_000,
        SessionId(2),
        &sub(1000, SpectatorFilter::all(), BandwidthMode::Full),
        0,
    )
    .unwrap();
    let d: Vec<FeedFrame> = drain(&mut a).iter().map(decode).collect();
    assert_eq!(d.first().map(|f| (f.tick, f.keyframe)), Some((20, true)));
    assert_eq!(d.last().map(|f| f.tick), Some(29));
    assert_eq!(d.len(), 10);
    // A new delay with history to serve starts the same way: 3 s lane at
    // 3.95 s has released ticks 0..=9.
    a.handle_subscribe(
        3_950_000,
        SessionId(3),
        &sub(3000, SpectatorFilter::all(), BandwidthMode::Full),
        0,
    )
    .unwrap();
    let d: Vec<FeedFrame> = drain(&mut a).iter().map(decode).collect();
    assert_eq!(d.first().map(|f| (f.tick, f.keyframe)), Some((0, true)));
    assert_eq!(d.len(), 10);
}

#[test]
fn a_slow_spectator_skips_to_the_next_keyframe() {
    let mut a = Audience::new(W, AudienceConfig::default());
    a.handle_clock(0, 0);
    a.handle_subscribe(
        0,
        SessionId(1),
        &sub(0, SpectatorFilter::all(), BandwidthMode::Full),
        0,
    )
    .unwrap();
    a.handle_frame(0, frame(0, true));
    a.handle_frame(100_000, frame(1, false));
    assert_eq!(drain(&mut a).len(), 2);
    a.handle_overflow(SessionId(1));
    for t in 2..10 {
        a.handle_frame(t * 100_000, frame(t, false));
    }
    assert!(drain(&mut a).is_empty(), "nothing while skipping");
    assert_eq!(a.stats().skipped, 8);
    a.handle_frame(S, frame(10, true));
    a.handle_frame(S + 100_000, frame(11, false));
    let d: Vec<_> = drain(&mut a).iter().map(decode).collect();
    assert_eq!(
        d.iter().map(|f| (f.tick, f.keyframe)).collect::<Vec<_>>(),
        vec![(10, true), (11, false)]
    );
}

#[test]
fn memory_is_bounded_by_the_longest_delay_and_by_bytes() {
    let cfg = AudienceConfig {
        max_delay: Duration::from_secs(2),
        ..AudienceConfig::default()
    };
    let mut a = Audience::new(W, cfg);
    a.handle_clock(0, 0);
    a.handle_subscribe(
        0,
        SessionId(1),
        &sub(2000, SpectatorFilter::all(), BandwidthMode::Full),
        0,
    )
    .unwrap();
    for t in 0..600 {
        a.handle_frame(t * 100_000, frame(t, t % 10 == 0));
    }
    // 2 s of frames plus up to one keyframe interval.
    assert!(a.buffered_frames() <= 31, "{}", a.buffered_frames());
    let cfg = AudienceConfig {
        max_buffer_bytes: 2_000,
        ..AudienceConfig::default()
    };
    let mut a = Audience::new(W, cfg);
    a.handle_clock(0, 0);
    a.handle_subscribe(
        0,
        SessionId(1),
        &sub(60_000, SpectatorFilter::all(), BandwidthMode::Full),
        0,
    )
    .unwrap();
    for t in 0..100 {
        a.handle_frame(t * 100_000, frame(t, t % 10 == 0));
    }
    assert!(a.buffered_bytes() <= 2_000);
    assert!(a.stats().evicted_over_bound > 0);
}

#[test]
fn bad_subscriptions_are_refused_with_a_reason() {
    let mut a = Audience::new(W, AudienceConfig::default());
    let all = SpectatorFilter::all();
    assert!(matches!(
        a.handle_subscribe(
            0,
            SessionId(1),
            &sub(121_000, all.clone(), BandwidthMode::Full),
            0
        ),
        Err(SpectateError::DelayTooLong { .. })
    ));
    assert!(matches!(
        a.handle_subscribe(
            0,
            SessionId(1),
            &sub(0, all.clone(), BandwidthMode::Reduced { hz: 0 }),
            0
        ),
        Err(SpectateError::BadRate { .. })
    ));
    let big = SpectatorFilter {
        entities: (0..300).map(EntityId).collect(),
        ..all.clone()
    };
    assert_eq!(
        a.handle_subscribe(0, SessionId(1), &sub(0, big, BandwidthMode::Full), 0)
            .map_err(|e| e.label()),
        Err("filter_too_large")
    );
    let other = SpectatorSubscribe {
        world: WorldId(2),
        ..sub(0, all, BandwidthMode::Full)
    };
    assert!(matches!(
        a.handle_subscribe(0, SessionId(1), &other, 0),
        Err(SpectateError::WrongWorld { .. })
    ));
    assert!(a.is_empty());
    let _ = decode_message::<ServerMsg>;
}

#[test]
fn a_request_below_the_tier_is_raised_to_it() {
    let mut a = Audience::new(W, AudienceConfig::default());
    a.handle_clock(0, 0);
    let live = sub(0, SpectatorFilter::all(), BandwidthMode::Full);
    assert_eq!(a.handle_subscribe(0, SessionId(1), &live, 2000), Ok(2000));
    assert_eq!(a.handle_subscribe(0, SessionId(2), &live, 0), Ok(0));
    let later = sub(3000, SpectatorFilter::all(), BandwidthMode::Full);
    assert_eq!(a.handle_subscribe(0, SessionId(3), &later, 2000), Ok(3000));
    assert_eq!(a.delays(), vec![0, 2000, 3000]);
    // A tier longer than the relay buffers cannot be served.
    assert!(matches!(
        a.handle_subscribe(0, SessionId(4), &live, 500_000),
        Err(SpectateError::DelayTooLong { .. })
    ));
}

proptest::proptest! {
    /// Whatever a tiered spectator asks for and whenever it changes its
    /// subscription, it never receives a frame before the frame's world time
    /// plus its tier.
    #[test]
    fn a_tiered_spectator_never_sees_a_frame_before_its_minimum_delay(
        tier_ms in 0u32..5_000,
        asks in proptest::collection::vec((0u64..300, 0u32..6_000), 1..6),
        keyframe_every in 1u64..20,
    ) {
        let mut a = Audience::new(W, AudienceConfig::default());
        a.handle_clock(0, 0);
        let mut asks = asks;
        asks.sort_by_key(|(at, _)| *at);
        let mut next_ask = 0;
        for t in 0..300u64 {
            let now = t * 100_000;
            while next_ask < asks.len() && asks[next_ask].0 == t {
                let s = sub(asks[next_ask].1, SpectatorFilter::all(), BandwidthMode::Full);
                let served = a.handle_subscribe(now, SessionId(1), &s, tier_ms).unwrap();
                proptest::prop_assert!(served >= tier_ms);
                next_ask += 1;
            }
            a.handle_frame(now, frame(t, t % keyframe_every == 0));
            a.handle_timeout(now);
            for d in drain(&mut a) {
                let f = decode(&d);
                proptest::prop_assert!(
                    f.origin_time_us + u64::from(tier_ms) * 1000 <= now,
                    "tick {} (world time {} us) delivered at {} us with a {} ms tier",
                    f.tick, f.origin_time_us, now, tier_ms
                );
            }
        }
    }
}
