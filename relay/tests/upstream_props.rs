//! Property tests for the sessions' feeds towards their origins over arbitrary
//! operation sequences: every action has exactly one fate, buffered actions go
//! once and in order, nothing is forwarded before the acknowledgement, bounds
//! hold, and a failed link reports each unanswered reliable action once.

use std::collections::{BTreeMap, HashSet, VecDeque};

use proptest::prelude::*;
use skylane_proto::{Action, EventClass, Payload, SessionId};
use skylane_relay::{OriginId, Route, Upstream};

#[derive(Debug, Clone)]
enum Op {
    Open(u64),
    Act { session: u64, movement: bool },
    LinkUp(bool),
    Ack(u64),
    Result { session: u64, back: u64 },
    LinkDown,
    Close(u64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        1 => (0..3u64).prop_map(Op::Open),
        6 => (0..3u64, any::<bool>()).prop_map(|(session, movement)| Op::Act { session, movement }),
        1 => any::<bool>().prop_map(Op::LinkUp),
        2 => (0..3u64).prop_map(Op::Ack),
        2 => (0..3u64, 0..6u64).prop_map(|(session, back)| Op::Result { session, back }),
        1 => Just(Op::LinkDown),
        1 => (0..3u64).prop_map(Op::Close),
    ]
}

/// What the test expects of one session.
#[derive(Default)]
struct Model {
    acked: bool,
    pending: VecDeque<u64>,
    in_flight: VecDeque<u64>,
}

const LIMIT: usize = 4;
const O: OriginId = OriginId(1);

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn upstream_invariants(ops in prop::collection::vec(op(), 1..300)) {
        let mut u = Upstream::new(LIMIT);
        let mut model: BTreeMap<u64, Model> = BTreeMap::new();
        let mut link_up = false;
        let mut next_seq = 1u64;
        let mut reported: HashSet<(u64, u64)> = HashSet::new();
        for op in ops {
            match op {
                Op::Open(s) => {
                    u.handle_open(SessionId(s), O);
                    model.insert(s, Model::default());
                }
                Op::Act { session, movement } => {
                    let seq = next_seq;
                    next_seq += 1;
                    let class = if movement { EventClass::Movement } else { EventClass::State };
                    let action = Action { class, seq, client_time_us: 0, reads: Vec::new(), payload: Payload::default() };
                    let route = u.handle_action(SessionId(session), action, link_up);
                    match (model.get_mut(&session), route) {
                        (None, Route::Unknown) => {}
                        (Some(m), Route::Forward(a)) => {
                            prop_assert!(m.acked && link_up, "forwarded before the acknowledgement");
                            prop_assert_eq!(a.seq, seq);
                            u.handle_forwarded(SessionId(session), a.class, a.seq);
                            if !movement {
                                if m.in_flight.len() == LIMIT { m.in_flight.pop_front(); }
                                m.in_flight.push_back(seq);
                            }
                        }
                        (Some(m), Route::Buffered) => {
                            prop_assert!(!(m.acked && link_up));
                            prop_assert!(m.pending.len() < LIMIT);
                            m.pending.push_back(seq);
                        }
                        (Some(m), Route::Refused(s)) => {
                            prop_assert_eq!(s, seq);
                            prop_assert_eq!(m.pending.len(), LIMIT, "refused below the limit");
                        }
                        (m, r) => prop_assert!(false, "session held {} but {:?}", m.is_some(), r),
                    }
                }
                Op::LinkUp(up) => {
                    link_up = up;
                    if up {
                        for s in u.sessions_of(O) {
                            u.handle_reopen(s);
                            if let Some(m) = model.get_mut(&s.0) { m.acked = false; }
                        }
                    }
                }
                Op::Ack(s) => {
                    let flushed: Vec<u64> = u.handle_acked(SessionId(s)).iter().map(|a| a.seq).collect();
                    match model.get_mut(&s) {
                        Some(m) if !m.acked => {
                            m.acked = true;
                            let expected: Vec<u64> = m.pending.drain(..).collect();
                            prop_assert_eq!(flushed, expected, "buffered actions go once, in order");
                        }
                        _ => prop_assert!(flushed.is_empty()),
                    }
                }
                Op::Result { session, back } => {
                    if let Some(m) = model.get_mut(&session) {
                        let seq = next_seq.saturating_sub(back + 1);
                        u.handle_result(SessionId(session), seq);
                        if let Some(i) = m.in_flight.iter().position(|x| *x == seq) { m.in_flight.remove(i); }
                    }
                }
                Op::LinkDown => {
                    link_up = false;
                    let unknown = u.handle_link_down(O);
                    let mut expected = Vec::new();
                    for (s, m) in &mut model {
                        m.acked = false;
                        expected.extend(m.in_flight.drain(..).map(|seq| (SessionId(*s), seq)));
                    }
                    expected.sort_unstable();
                    for (s, seq) in &unknown {
                        prop_assert!(reported.insert((s.0, *seq)), "reported twice");
                    }
                    prop_assert_eq!(unknown, expected);
                }
                Op::Close(s) => {
                    let held = u.handle_close(SessionId(s));
                    prop_assert_eq!(held.is_some(), model.remove(&s).is_some());
                }
            }
            for (s, m) in &model {
                prop_assert_eq!(u.pending(SessionId(*s)), m.pending.len());
                prop_assert_eq!(u.in_flight(SessionId(*s)), m.in_flight.len());
                prop_assert!(m.pending.len() <= LIMIT && m.in_flight.len() <= LIMIT);
            }
        }
    }
}
