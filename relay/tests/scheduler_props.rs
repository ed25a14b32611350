//! Property tests for the priority scheduler over arbitrary operation sequences.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use proptest::prelude::*;
use skylane_proto::{EntityId, EventClass, SessionId};
use skylane_relay::{Outgoing, Scheduler, SchedulerConfig};

#[derive(Debug, Clone)]
enum Op {
    Enqueue {
        class: usize,
        session: u64,
        entity: Option<u64>,
        droppable: bool,
    },
    Poll,
    Advance(u64),
    Gone(u64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..5usize, 0..4u64, prop::option::of(0..3u64), any::<bool>()).prop_map(|(class, session, entity, droppable)| Op::Enqueue { class, session, entity, droppable }),
        3 => Just(Op::Poll),
        1 => (0..400u64).prop_map(Op::Advance),
        1 => (0..4u64).prop_map(Op::Gone),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn scheduler_invariants(ops in prop::collection::vec(op(), 1..300)) {
        let t0 = Instant::now();
        let mut now = t0;
        let cfg = SchedulerConfig { capacity: [8, 8, 4, 4, 4], ..SchedulerConfig::default() };
        let mut s = Scheduler::new(cfg);
        let mut counter = 0u32;
        // Messages that must be delivered (not droppable, or of a class without a
        // deadline) accepted and not yet sent, per (session, class), in order (a
        // later critical message rightly overtakes an earlier state one).
        let mut owed: HashMap<(u64, usize), Vec<u32>> = HashMap::new();
        let mut must: std::collections::HashSet<u32> = Default::default();
        let mut sent_at: HashMap<u32, Instant> = HashMap::new();
        for o in ops {
            match o {
                Op::Enqueue { class, session, entity, droppable } => {
                    let class = EventClass::ALL[class];
                    counter += 1;
                    let m = Outgoing { class, session: SessionId(session), entity: entity.map(EntityId), droppable, bytes: Bytes::copy_from_slice(&counter.to_le_bytes()) };
                    if s.handle_enqueue(now, m).is_ok() {
                        sent_at.insert(counter, now);
                        if !droppable || class.deadline().is_none() {
                            must.insert(counter);
                            owed.entry((session, class.rank())).or_default().push(counter);
                        }
                    }
                }
                Op::Poll => {
                    if let Some(m) = s.poll_next(now) {
                        let id = u32::from_le_bytes(m.bytes[..4].try_into().unwrap());
                        // Strict priority: nothing more urgent is left waiting.
                        for higher in &EventClass::ALL[..m.class.rank()] {
                            prop_assert_eq!(s.len_of(*higher), 0, "{:?} waiting while {:?} was sent", higher, m.class);
                        }
                        // A droppable message is never sent past its deadline.
                        if let (Some(d), true) = (m.class.deadline(), m.droppable) {
                            prop_assert!(now < sent_at[&id] + d);
                        }
                        // Messages that must be delivered come out once, in order per
                        // session and class.
                        if must.contains(&id) {
                            let q = owed.get_mut(&(m.session.0, m.class.rank())).expect("owed");
                            prop_assert_eq!(q.first().copied(), Some(id));
                            q.remove(0);
                        }
                    }
                }
                Op::Advance(ms) => now += Duration::from_millis(ms),
                Op::Gone(session) => {
                    s.handle_session_gone(SessionId(session));
                    owed.retain(|(sid, _), _| *sid != session);
                }
            }
            for c in EventClass::ALL {
                prop_assert!(s.len_of(c) <= cfg.capacity[c.rank()]);
            }
        }
        // Everything still owed comes out.
        while let Some(m) = s.poll_next(now + Duration::from_secs(3600)) {
            let id = u32::from_le_bytes(m.bytes[..4].try_into().unwrap());
            if must.contains(&id) {
                let q = owed.get_mut(&(m.session.0, m.class.rank())).expect("owed");
                prop_assert_eq!(q.first().copied(), Some(id));
                q.remove(0);
            }
        }
        prop_assert!(owed.values().all(Vec::is_empty), "messages that must be delivered lost: {:?}", owed);
    }
}
