//! Property tests for the spectator delay buffer: whatever the arrival order,
//! network delays and clock offset, no frame reaches a spectator before its world
//! time plus the spectator's delay (at least its tier, whatever it asked), and no
//! spectator sees a frame twice or out of order.

use std::collections::HashMap;
use std::sync::Arc;

use proptest::prelude::*;
use skylane_proto::{
    BandwidthMode, EntityId, EventClass, FeedEvent, FeedFrame, FrameDecoder, Payload, ServerMsg,
    SessionId, SpectatorFilter, SpectatorSubscribe, WorldId,
};
use skylane_relay::{Audience, AudienceConfig};

const W: WorldId = WorldId(1);

fn frame(tick: u64, origin_time_us: u64, keyframe: bool) -> Arc<FeedFrame> {
    Arc::new(FeedFrame {
        world: W,
        tick,
        origin_time_us,
        keyframe,
        events: vec![FeedEvent {
            class: EventClass::Movement,
            entity: Some(EntityId(tick % 3)),
            team: None,
            pos: None,
            payload: Payload::from(vec![1u8; 8]),
        }],
        proofs: Vec::new(),
    })
}

fn decode(bytes: &[u8]) -> FeedFrame {
    let mut dec = FrameDecoder::default();
    dec.push(bytes);
    match dec.poll_message::<ServerMsg>() {
        Ok(Some(ServerMsg::Spectate(f))) => f,
        other => panic!("not a spectator frame: {other:?}"),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn nothing_is_released_early_duplicated_or_reordered(
        // Network delay of each frame (µs): large enough to reorder arrivals.
        net in prop::collection::vec(0..1_500_000u64, 1..60),
        // The origin's clock minus the relay's, and how much the shell's lower
        // bound of it undershoots.
        theta in -5_000_000i64..5_000_000,
        undershoot in 0..20_000i64,
        delays in prop::collection::vec(prop::sample::select(vec![0u32, 250, 1000, 3000]), 1..4),
        modes in prop::collection::vec(0..3u8, 1..4),
        // Each spectator's tier (its token's minimum delay): a request below
        // it is served at it, and checked against it.
        tiers in prop::collection::vec(prop::sample::select(vec![0u32, 500, 2000]), 1..4),
    ) {
        let mut a = Audience::new(W, AudienceConfig::default());
        let base = 10_000_000_000u64; // origin clock, µs
        let to_relay = |origin: u64| (origin as i64 - theta) as u64;
        let start = to_relay(base);
        a.handle_clock(start, theta - undershoot);
        let mut delay_of = HashMap::new();
        for (i, d) in delays.iter().enumerate() {
            let mode = match modes[i % modes.len()] {
                0 => BandwidthMode::Full,
                1 => BandwidthMode::Reduced { hz: 5 },
                _ => BandwidthMode::KeyframesOnly,
            };
            let s = SessionId(i as u64);
            let tier = tiers[i % tiers.len()];
            let served = a.handle_subscribe(start, s, &SpectatorSubscribe {
                world: W,
                filter: SpectatorFilter::all(),
                delay_ms: *d,
                mode,
            }, tier).unwrap();
            prop_assert_eq!(served, (*d).max(tier));
            delay_of.insert(s, u64::from(served) * 1000);
        }
        // Frames every 33 ms of origin time, a keyframe every 10; each arrives at
        // the relay after its own network delay.
        let mut arrivals: Vec<(u64, Arc<FeedFrame>)> = net
            .iter()
            .enumerate()
            .map(|(i, d)| {
                let t = base + i as u64 * 33_000;
                (to_relay(t) + d, frame(i as u64, t, i % 10 == 0))
            })
            .collect();
        arrivals.sort_by_key(|(at, _)| *at);
        let mut seen: HashMap<SessionId, Vec<(u64, bool)>> = HashMap::new();
        let mut check = |a: &mut Audience, now: u64| {
            while let Some(d) = a.poll_delivery() {
                let f = decode(&d.frame);
                let origin_now = (now as i64 + theta) as u64;
                prop_assert!(
                    f.origin_time_us + delay_of[&d.spectator] <= origin_now,
                    "tick {} released {} µs early", f.tick,
                    f.origin_time_us + delay_of[&d.spectator] - origin_now
                );
                let v = seen.entry(d.spectator).or_default();
                if let Some(last) = v.last() {
                    prop_assert!(*last < (f.tick, f.keyframe), "{last:?} then {:?}", (f.tick, f.keyframe));
                }
                v.push((f.tick, f.keyframe));
            }
            Ok(())
        };
        for (at, f) in arrivals {
            // Everything due before this arrival is released first.
            while let Some(due) = a.poll_timeout().filter(|d| *d <= at) {
                a.handle_timeout(due);
                check(&mut a, due)?;
            }
            a.handle_frame(at, f);
            check(&mut a, at)?;
        }
        while let Some(due) = a.poll_timeout() {
            a.handle_timeout(due);
            check(&mut a, due)?;
        }
        prop_assert!(a.stats().released > 0);
    }
}
