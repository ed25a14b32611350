//! Property tests for the sessions' feeds towards their origins over arbitrary
//! operation sequences: every action has exactly one fate, buffered actions go
//! once and in order, nothing is forwarded before the acknowledgement, bounds
//! hold, and a failed link reports each unanswered reliable action once.

use std::collections::{BTreeMap, HashSet, VecDeque};

use proptest::prelude::*;
use skylane_proto::{
    Action, ActionResult, EventClass, Outcome, Payload, RejectCode, SessionId, WorldId,
};
use skylane_relay::{OriginId, ResultFate, Route, Upstream, ZoneMove};

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
const W: WorldId = WorldId(1);

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
                    u.handle_open(SessionId(s), O, W);
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
                            u.handle_forwarded(SessionId(session), a);
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
                        let result = ActionResult { seq, outcome: Outcome::Applied { tick: 1 } };
                        prop_assert_eq!(u.handle_result(SessionId(session), &result), ResultFate::Deliver);
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

/// One step of a zone move's simulation.
#[derive(Debug, Clone)]
enum Step {
    /// The client sends its next action.
    Act,
    /// The old zone journals the avatar's `Out`: from now on it answers
    /// `Moved` (applies nothing).
    Out,
    /// The origin tells the relay where the session is (`true`: the other
    /// zone; `false`: the handoff was refused and it stayed).
    Told(bool),
    /// The new owner acknowledges the re-opened session.
    Ack,
    /// A zone answers the `k`-th oldest action it has unanswered (answers
    /// come in any order between zones, in order within one).
    Answer { zone: bool, k: usize },
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        5 => Just(Step::Act),
        1 => Just(Step::Out),
        1 => any::<bool>().prop_map(Step::Told),
        2 => Just(Step::Ack),
        6 => (any::<bool>(), 0..3usize).prop_map(|(zone, k)| Step::Answer { zone, k }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// A session's avatar moves between zone A (record 1, origin 1) and zone B
    /// (record 2, origin 2) while actions are in flight: every action the
    /// client sent is applied by exactly one zone at most once, and the
    /// client gets exactly one outcome for each (none of them `Moved`).
    #[test]
    fn actions_cross_a_zone_move_exactly_once(steps in prop::collection::vec(step(), 1..200)) {
        const A: WorldId = WorldId(1);
        const B: WorldId = WorldId(2);
        let (oa, ob) = (OriginId(1), OriginId(2));
        let s = SessionId(1);
        let mut u = Upstream::new(64);
        u.handle_open(s, oa, A);
        prop_assert!(u.handle_acked(s).is_empty());
        // Each zone: the actions it received and has not answered, in order.
        let mut inbox: [VecDeque<Action>; 2] = [VecDeque::new(), VecDeque::new()];
        let mut out = false; // zone A froze the avatar
        let mut told: Option<bool> = None; // what the origin said, once
        let mut owner = 0usize; // the zone that owns the avatar (and applies)
        let mut applied: BTreeMap<u64, usize> = BTreeMap::new();
        let mut outcomes: BTreeMap<u64, u32> = BTreeMap::new();
        let mut next = 1u64;
        let send = |u: &mut Upstream, inbox: &mut [VecDeque<Action>; 2], a: Action| {
            let zone = if u.record_of(s) == Some(A) { 0 } else { 1 };
            u.handle_forwarded(s, a.clone());
            inbox[zone].push_back(a);
        };
        for st in steps {
            match st {
                Step::Act => {
                    let a = Action { class: EventClass::State, seq: next, client_time_us: 0, reads: Vec::new(), payload: Payload::default() };
                    next += 1;
                    match u.handle_action(s, a, true) {
                        Route::Forward(a) => send(&mut u, &mut inbox, a),
                        Route::Buffered => {}
                        r => prop_assert!(false, "{:?}", r),
                    }
                }
                Step::Out => {
                    if told.is_none() { out = true; }
                }
                Step::Told(to_b) => {
                    if !out || told.is_some() { continue; }
                    told = Some(to_b);
                    let (o, r) = if to_b { (ob, B) } else { (oa, A) };
                    if to_b { owner = 1; } else { out = false; }
                    match u.handle_zone_moved(s, Some(o), r) {
                        ZoneMove::Reopen => prop_assert!(to_b),
                        ZoneMove::Release(held) => {
                            prop_assert!(!to_b);
                            for a in held { send(&mut u, &mut inbox, a); }
                        }
                        ZoneMove::Wait => prop_assert!(false, "the owner is known"),
                    }
                }
                Step::Ack => {
                    for a in u.handle_acked(s) { send(&mut u, &mut inbox, a); }
                }
                Step::Answer { zone, k } => {
                    let z = usize::from(zone);
                    if inbox[z].is_empty() { continue; }
                    let a = inbox[z].remove(k.min(inbox[z].len() - 1)).unwrap();
                    // The zone that owns the avatar (and is not freezing it)
                    // applies, once per sequence (the carried replay window);
                    // the other answers `Moved`.
                    let frozen = z == 0 && out && told != Some(false);
                    let outcome = if z == owner && !frozen {
                        if let std::collections::btree_map::Entry::Vacant(v) = applied.entry(a.seq) {
                            v.insert(z);
                            Outcome::Applied { tick: 1 }
                        } else {
                            Outcome::Rejected { code: RejectCode::Replayed, detail: String::new() }
                        }
                    } else {
                        Outcome::Rejected { code: RejectCode::Moved, detail: String::new() }
                    };
                    let result = ActionResult { seq: a.seq, outcome };
                    match u.handle_result(s, &result) {
                        ResultFate::Deliver => {
                            prop_assert!(!matches!(result.outcome, Outcome::Rejected { code: RejectCode::Moved, .. }), "Moved reached the client");
                            *outcomes.entry(a.seq).or_default() += 1;
                        }
                        ResultFate::Held => {}
                        ResultFate::Resend(a) => match u.handle_action(s, a, true) {
                            Route::Forward(a) => send(&mut u, &mut inbox, a),
                            Route::Buffered => {}
                            r => prop_assert!(false, "{:?}", r),
                        },
                    }
                }
            }
        }
        // Let it settle: the move completes, the new owner acknowledges,
        // and every zone answers everything.
        if out && told.is_none() {
            owner = 1;
            told = Some(true);
            prop_assert_eq!(u.handle_zone_moved(s, Some(ob), B), ZoneMove::Reopen);
        }
        let _ = told;
        for _ in 0..1000 {
            for a in u.handle_acked(s) { send(&mut u, &mut inbox, a); }
            let Some(z) = (0..2).find(|z| !inbox[*z].is_empty()) else { break };
            let a = inbox[z].pop_front().unwrap();
            let frozen = z == 0 && out && owner == 1;
            let outcome = if z == owner && !frozen && !applied.contains_key(&a.seq) {
                applied.insert(a.seq, z);
                Outcome::Applied { tick: 1 }
            } else if z == owner && !frozen {
                Outcome::Rejected { code: RejectCode::Replayed, detail: String::new() }
            } else {
                Outcome::Rejected { code: RejectCode::Moved, detail: String::new() }
            };
            let result = ActionResult { seq: a.seq, outcome };
            match u.handle_result(s, &result) {
                ResultFate::Deliver => *outcomes.entry(a.seq).or_default() += 1,
                ResultFate::Held => {}
                ResultFate::Resend(a) => if let Route::Forward(a) = u.handle_action(s, a, true) { send(&mut u, &mut inbox, a) },
            }
        }
        for seq in 1..next {
            prop_assert_eq!(outcomes.get(&seq).copied(), Some(1), "action {} has one outcome", seq);
            prop_assert!(applied.contains_key(&seq), "action {} applied", seq);
        }
        prop_assert_eq!(u.pending(s), 0);
    }
}
