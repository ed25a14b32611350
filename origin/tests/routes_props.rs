//! Property test of the origin's routes over arbitrary sequences of relay links,
//! attaches, moves, subscription changes, detaches and expiries: each relay's
//! per-channel count always equals the number of its attached sessions whose
//! announced channels include that channel.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use proptest::prelude::*;
use skylane_origin::{LinkId, Routes};
use skylane_proto::{ChannelCursor, ChannelId, SessionId};

#[derive(Debug, Clone)]
enum Op {
    RelayUp(LinkId),
    RelayDown(LinkId),
    Attach(u64, LinkId),
    Detach(u64),
    Subs {
        session: u64,
        add: Vec<u8>,
        remove: Vec<u8>,
    },
    Expire(u64),
}

fn channel(c: u8) -> ChannelId {
    match c % 3 {
        0 => ChannelId::World,
        n => ChannelId::Cell {
            x: u16::from(n),
            y: u16::from(c / 3),
        },
    }
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        1 => (0..3u64).prop_map(Op::RelayUp),
        1 => (0..3u64).prop_map(Op::RelayDown),
        3 => (0..5u64, 0..3u64).prop_map(|(s, r)| Op::Attach(s, r)),
        1 => (0..5u64).prop_map(Op::Detach),
        4 => (0..5u64, prop::collection::vec(0..9u8, 0..4), prop::collection::vec(0..9u8, 0..3))
            .prop_map(|(session, add, remove)| Op::Subs { session, add, remove }),
        1 => (0..40u64).prop_map(Op::Expire),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn relay_counts_are_the_sum_of_their_sessions_channels(ops in prop::collection::vec(op(), 1..200)) {
        let t0 = Instant::now();
        let mut r = Routes::new();
        let mut up: BTreeSet<LinkId> = BTreeSet::new();
        let mut attached: BTreeMap<u64, LinkId> = BTreeMap::new();
        let mut orphans: BTreeMap<u64, u64> = BTreeMap::new();
        let mut announced: BTreeMap<u64, BTreeSet<ChannelId>> = BTreeMap::new();
        for (step, op) in ops.into_iter().enumerate() {
            let now = t0 + Duration::from_secs(step as u64);
            match op {
                Op::RelayUp(id) => { r.handle_relay_up(id); up.insert(id); }
                Op::RelayDown(id) => {
                    let orphaned = r.handle_relay_down(now, id);
                    if up.remove(&id) {
                        let mine: Vec<u64> = attached.iter().filter(|(_, l)| **l == id).map(|(s, _)| *s).collect();
                        prop_assert_eq!(orphaned.iter().map(|s| s.0).collect::<Vec<_>>(), mine.clone());
                        for s in mine { attached.remove(&s); orphans.insert(s, step as u64); }
                    } else {
                        prop_assert!(orphaned.is_empty());
                    }
                }
                Op::Attach(s, id) => {
                    r.attach(now, SessionId(s), id);
                    if up.contains(&id) {
                        attached.insert(s, id);
                        orphans.remove(&s);
                    } else {
                        attached.remove(&s);
                        orphans.insert(s, step as u64);
                    }
                }
                Op::Detach(s) => { r.detach(SessionId(s)); attached.remove(&s); orphans.remove(&s); }
                Op::Subs { session, add, remove } => {
                    let added: Vec<ChannelCursor> = add.iter().map(|c| ChannelCursor { channel: channel(*c), seq: u64::from(*c) }).collect();
                    let removed: Vec<ChannelId> = remove.iter().map(|c| channel(*c)).collect();
                    let tell = r.handle_subscriptions(SessionId(session), &added, &removed);
                    prop_assert_eq!(tell, attached.get(&session).copied());
                    let set = announced.entry(session).or_default();
                    for c in &added { set.insert(c.channel); }
                    for c in &removed { set.remove(c); }
                }
                Op::Expire(grace) => {
                    let expired = r.poll_expired(now, Duration::from_secs(grace));
                    let due: Vec<u64> = orphans.iter().filter(|(_, t)| step as u64 - **t >= grace).map(|(s, _)| *s).collect();
                    prop_assert_eq!(expired.iter().map(|s| s.0).collect::<Vec<_>>(), due.clone());
                    for s in due { orphans.remove(&s); }
                }
            }
            // The invariant.
            for c in 0..9u8 {
                let ch = channel(c);
                let mut want: Vec<LinkId> = Vec::new();
                for id in &up {
                    let n = attached.iter().filter(|(s, l)| *l == id && announced.get(s).is_some_and(|a| a.contains(&ch))).count() as u32;
                    prop_assert_eq!(r.channel_count(*id, ch), n, "relay {} channel {:?}", id, ch);
                    if n > 0 { want.push(*id); }
                }
                prop_assert_eq!(r.relays_for(ch), want);
            }
            prop_assert_eq!(r.sessions(), attached.len() + orphans.len());
        }
    }
}
