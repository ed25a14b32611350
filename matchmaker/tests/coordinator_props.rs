//! The leader's core against a store whose view lags its writes by a random
//! number of steps (as etcd's watch does), with random arrivals, cancels and
//! placement failures: a ticket is matched at most once and only into one
//! world, never both cancelled and matched, every world placed is handed to
//! exactly its match's tickets, and once arrivals stop and placements
//! succeed, every ticket ends settled or still waits for a partner.

use std::collections::{BTreeMap, HashMap, VecDeque};

use proptest::prelude::*;
use skylane_control::ClusterView;
use skylane_match::coordinator::{Action, Coordinator, GameConfig, Placed};
use skylane_match::records::{cancel_key, decode, encode, ticket_key, Stored, TicketRecord};
use skylane_match::{Member, Rating, Ticket, TicketId, Windows};
use skylane_proto::matchmaking::{ApiError, ErrorKind};
use skylane_proto::WorldId;

const Q: &str = "default";

#[derive(Debug, Clone)]
enum Op {
    /// A ticket for a new player with this RTT to the one origin.
    Queue(u32),
    /// Cancel the ticket queued `n` tickets ago.
    Cancel(usize),
    /// Time passes (ms).
    Wait(u64),
    /// The oldest placement in flight completes (true) or fails.
    Place(bool),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (5u32..250).prop_map(Op::Queue),
        1 => (0usize..8).prop_map(Op::Cancel),
        3 => (1u64..3_000).prop_map(Op::Wait),
        3 => any::<bool>().prop_map(Op::Place),
    ]
}

struct Store {
    /// Every state the store went through; the coordinator sees one `lag`
    /// steps old.
    history: Vec<ClusterView>,
}

impl Store {
    fn now(&self) -> ClusterView {
        self.history.last().cloned().unwrap_or_default()
    }
    fn write(&mut self, f: impl FnOnce(&mut ClusterView)) {
        let mut v = self.now();
        f(&mut v);
        self.history.push(v);
    }
    fn seen(&self, lag: usize) -> ClusterView {
        let i = self.history.len().saturating_sub(1 + lag);
        self.history.get(i).cloned().unwrap_or_default()
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]
    #[test]
    fn tickets_are_matched_once_whatever_the_views_lag(
        ops in prop::collection::vec(op(), 1..120),
        lag in 0usize..4,
    ) {
        let mut c = Coordinator::new(Q, &[GameConfig::new("duel", 2, 1)], Windows::default());
        let mut store = Store { history: vec![ClusterView::default()] };
        let mut now = 1_000u64;
        let mut queued: Vec<TicketId> = Vec::new();
        let mut inflight: VecDeque<(u64, usize)> = VecDeque::new();
        let mut next_world = 1000u64;
        // world → the tickets written matched into it.
        let mut handed: BTreeMap<WorldId, Vec<TicketId>> = BTreeMap::new();
        let mut matched_into: HashMap<TicketId, WorldId> = HashMap::new();
        let mut placed_players: BTreeMap<u64, usize> = BTreeMap::new();
        let drain = |c: &mut Coordinator,
                         store: &mut Store,
                         inflight: &mut VecDeque<(u64, usize)>,
                         placed_players: &mut BTreeMap<u64, usize>,
                         handed: &mut BTreeMap<WorldId, Vec<TicketId>>,
                         matched_into: &mut HashMap<TicketId, WorldId>|
         -> Result<(), TestCaseError> {
            while let Some(a) = c.poll_action() {
                match a {
                    Action::Place { id, spec, .. } => {
                        inflight.push_back((id, spec.capacity as usize));
                        placed_players.insert(id, spec.capacity as usize);
                    }
                    Action::End { .. } => {}
                    Action::Write { puts, deletes } => {
                        for (k, v) in &puts {
                            if let Some(r) = decode::<TicketRecord>(v) {
                                if let Stored::Matched { world, .. } = r.state {
                                    let before = matched_into.insert(r.ticket.id, world);
                                    prop_assert!(
                                        before.is_none() || before == Some(world),
                                        "{:?} matched into {:?} and {:?}", r.ticket.id, before, world
                                    );
                                    if before.is_none() {
                                        handed.entry(world).or_default().push(r.ticket.id);
                                    }
                                }
                                if r.state == Stored::Cancelled {
                                    prop_assert!(!matched_into.contains_key(&r.ticket.id), "cancelled after its match");
                                }
                                let _ = k;
                            }
                        }
                        store.write(|v| {
                            for (k, val) in puts {
                                // A write never turns a matched ticket back.
                                if let Some(old) = v.records.get(&k).and_then(|b| decode::<TicketRecord>(b)) {
                                    if matches!(old.state, Stored::Matched { .. }) {
                                        if let Some(new) = decode::<TicketRecord>(&val) {
                                            assert!(matches!(new.state, Stored::Matched { .. }), "matched ticket rewritten: {:?}", new.state);
                                        }
                                    }
                                }
                                v.records_mut().insert(k, val);
                            }
                            for k in deletes {
                                v.records_mut().remove(&k);
                            }
                        });
                    }
                }
            }
            Ok(())
        };
        for op in ops {
            match op {
                Op::Queue(rtt) => {
                    let id = TicketId(queued.len() as u64 + 1);
                    let rec = TicketRecord {
                        ticket: Ticket {
                            id,
                            game: "duel".into(),
                            members: vec![Member { player: format!("p{}", id.0), rating: Rating::default() }],
                            rtt_ms: BTreeMap::from([("o".to_owned(), rtt)]),
                        },
                        relay_rtt_ms: BTreeMap::new(),
                        coords: None,
                        since_ms: now,
                        changed_ms: now,
                        state: Stored::Queued,
                    };
                    queued.push(id);
                    store.write(|v| { v.records_mut().insert(ticket_key(Q, id), encode(&rec)); });
                }
                Op::Cancel(n) => {
                    if let Some(id) = queued.iter().rev().nth(n).copied() {
                        store.write(|v| { v.records_mut().insert(cancel_key(Q, id), bytes::Bytes::new()); });
                    }
                }
                Op::Wait(ms) => now += ms,
                Op::Place(ok) => {
                    if let Some((id, _)) = inflight.pop_front() {
                        let r = if ok {
                            next_world += 1;
                            Placed::Ready { world: WorldId(next_world), origin: "o".into() }
                        } else {
                            Placed::Failed { origin: Some("o".into()), error: ApiError::new(ErrorKind::Placement, "x") }
                        };
                        c.handle_placed(now, id, r);
                    }
                }
            }
            let seen = store.seen(lag);
            c.handle_view(now, &seen);
            c.handle_timeout(now);
            drain(&mut c, &mut store, &mut inflight, &mut placed_players, &mut handed, &mut matched_into)?;
        }
        // Quiesce: no arrivals, every placement succeeds, the view catches up,
        // time passes to the last window.
        for _ in 0..10 {
            now += 31_000;
            while let Some((id, _)) = inflight.pop_front() {
                next_world += 1;
                c.handle_placed(now, id, Placed::Ready { world: WorldId(next_world), origin: "o".into() });
            }
            let v = store.now();
            c.handle_view(now, &v);
            c.handle_timeout(now);
            drain(&mut c, &mut store, &mut inflight, &mut placed_players, &mut handed, &mut matched_into)?;
        }
        // Every world holds exactly one match's two players.
        for (w, ts) in &handed {
            prop_assert_eq!(ts.len(), 2, "{:?} got {:?}", w, ts);
        }
        // Whatever still waits cannot form a match (fewer than two).
        let v = store.now();
        let waiting = queued
            .iter()
            .filter(|id| {
                v.records
                    .get(&ticket_key(Q, **id))
                    .and_then(|b| decode::<TicketRecord>(b))
                    .is_some_and(|r| r.state == Stored::Queued)
            })
            .count();
        prop_assert!(waiting <= 1, "{} tickets still queued at the end", waiting);
        prop_assert_eq!(c.waiting(), waiting);
    }
}
