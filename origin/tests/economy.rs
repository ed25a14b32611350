//! The arena's economy through the engine: trades need the partner's consent,
//! an accept applies once however often it is sent, offers expire and close
//! when a side leaves, and what moved is reported to the ledger, which keeps
//! wallets across worlds and restarts and conserves every total.

use proptest::prelude::*;
use skylane_origin::*;
use skylane_proto::{
    Action, ChainSigner, EntityId, EventClass, Outcome, RejectCode, Role, SessionId, WorldId,
};

fn engine(world: u64) -> Engine<Arena> {
    let arena = Arena::new(ArenaConfig::default());
    let grid = arena.grid();
    Engine::new(
        arena,
        grid,
        EngineConfig::new(WorldId(world)),
        ChainSigner::from_bytes(&[7; 32]),
        0,
    )
}

fn join(e: &mut Engine<Arena>, s: u64) -> EntityId {
    e.handle_join(SessionId(s), &format!("p{s}"), Role::Player, None)
        .unwrap()
        .unwrap()
}

fn act(seq: u64, a: &ArenaAction) -> Action {
    Action {
        class: EventClass::State,
        seq,
        client_time_us: seq * 1000,
        reads: vec![],
        payload: a.encode(),
    }
}

/// Runs a tick: the results, and the ledger's transactions of the tick.
fn tick(e: &mut Engine<Arena>) -> (Vec<(SessionId, Outcome)>, Vec<LedgerTx>) {
    let now = e.poll_timeout();
    e.handle_timeout(now);
    let (mut results, mut txs) = (Vec::new(), Vec::new());
    while let Some(o) = e.poll_output() {
        match o {
            Output::Result { session, result } => results.push((session, result.outcome)),
            Output::Ledger { txs: t, .. } => txs.extend(t),
            _ => {}
        }
    }
    (results, txs)
}

fn coins(e: &Engine<Arena>, who: EntityId) -> u64 {
    e.world().player(who).unwrap().coins
}

#[track_caller]
fn rejected(o: &Outcome, code: RejectCode) {
    assert!(
        matches!(o, Outcome::Rejected { code: c, .. } if *c == code),
        "expected {code:?}, got {o:?}"
    );
}

fn offer(id: u64, partner: EntityId, give: u64, get: u64) -> ArenaAction {
    ArenaAction::Offer {
        id,
        partner,
        give_coins: give,
        give_items: vec![],
        get_coins: get,
        get_items: vec![],
        ttl_ticks: 30,
    }
}

#[test]
fn nothing_moves_without_the_partners_acceptance() {
    let mut e = engine(1);
    let (a, b) = (join(&mut e, 1), join(&mut e, 2));
    tick(&mut e);
    // Taking from the partner directly is refused.
    let take = ArenaAction::Trade {
        partner: b,
        give_coins: 0,
        give_items: vec![],
        get_coins: 50,
        get_items: vec![],
    };
    e.handle_action(SessionId(1), act(1, &take));
    // An offer moves nothing by itself, however many ticks pass.
    e.handle_action(SessionId(1), act(2, &offer(1, b, 10, 40)));
    let mut results = Vec::new();
    for _ in 0..10 {
        results.extend(tick(&mut e).0);
    }
    rejected(&results[0].1, RejectCode::Forbidden);
    assert!(
        matches!(results[1].1, Outcome::Applied { .. }),
        "{results:?}"
    );
    assert_eq!((coins(&e, a), coins(&e, b)), (100, 100));
    // Only the partner may accept it; the offerer cannot.
    e.handle_action(
        SessionId(1),
        act(3, &ArenaAction::Accept { from: a, id: 1 }),
    );
    let (r, _) = tick(&mut e);
    rejected(&r[0].1, RejectCode::Forbidden);
    assert_eq!((coins(&e, a), coins(&e, b)), (100, 100));
}

#[test]
fn an_accept_sent_three_times_applies_once_and_reports_one_transaction() {
    let mut e = engine(1);
    let (a, b) = (join(&mut e, 1), join(&mut e, 2));
    let (_, grants) = tick(&mut e);
    assert_eq!(grants.len(), 2, "two new players granted: {grants:?}");
    e.handle_action(SessionId(1), act(1, &offer(7, b, 10, 40)));
    tick(&mut e);
    let accept = ArenaAction::Accept { from: a, id: 7 };
    for seq in 1..=3 {
        e.handle_action(SessionId(2), act(seq, &accept));
    }
    // Rejections are answered on arrival, the applied one at the tick's end.
    let (r, txs) = tick(&mut e);
    assert_eq!(r.len(), 3, "{r:?}");
    rejected(&r[0].1, RejectCode::AlreadyApplied);
    rejected(&r[1].1, RejectCode::AlreadyApplied);
    assert!(matches!(r[2].1, Outcome::Applied { .. }), "{r:?}");
    assert_eq!((coins(&e, a), coins(&e, b)), (130, 70));
    assert_eq!(e.stats().violations, 0, "answers, not rules broken");
    assert_eq!(txs.len(), 1, "{txs:?}");
    let t = &txs[0];
    assert_eq!(
        (t.kind, t.id.clone()),
        (TxKind::Trade, format!("1:trade:{}:7", a.0))
    );
    assert_eq!(t.entries[0].player, "p1");
    assert_eq!(t.entries[0].before.coins, 100);
    assert_eq!(t.entries[0].after.coins, 130);
    assert_eq!(t.entries[1].after.coins, 70);
    // A later resend is still answered from the closed offer.
    e.handle_action(SessionId(2), act(4, &accept));
    rejected(&tick(&mut e).0[0].1, RejectCode::AlreadyApplied);
    // The same offer id cannot be made again.
    e.handle_action(SessionId(1), act(2, &offer(7, b, 1, 1)));
    rejected(&tick(&mut e).0[0].1, RejectCode::AlreadyApplied);
}

#[test]
fn an_accept_checks_both_sides_holdings_again() {
    let mut e = engine(1);
    let (a, b, c) = (join(&mut e, 1), join(&mut e, 2), join(&mut e, 3));
    tick(&mut e);
    e.handle_action(SessionId(1), act(1, &offer(1, b, 80, 0)));
    // Meanwhile a gives most of its coins away.
    let gift = ArenaAction::Trade {
        partner: c,
        give_coins: 50,
        give_items: vec![],
        get_coins: 0,
        get_items: vec![],
    };
    e.handle_action(SessionId(1), act(2, &gift));
    tick(&mut e);
    e.handle_action(
        SessionId(2),
        act(1, &ArenaAction::Accept { from: a, id: 1 }),
    );
    let (r, txs) = tick(&mut e);
    rejected(&r[0].1, RejectCode::Resources);
    assert!(txs.is_empty());
    assert_eq!(coins(&e, a) + coins(&e, b) + coins(&e, c), 300);
}

#[test]
fn offers_expire_close_when_a_side_leaves_and_can_be_declined() {
    let mut e = engine(1);
    let (a, b) = (join(&mut e, 1), join(&mut e, 2));
    let c = join(&mut e, 3);
    tick(&mut e);
    e.handle_action(SessionId(1), act(1, &offer(1, b, 10, 0)));
    e.handle_action(SessionId(1), act(2, &offer(2, c, 10, 0)));
    e.handle_action(SessionId(1), act(3, &offer(3, b, 10, 0)));
    tick(&mut e);
    e.handle_action(
        SessionId(2),
        act(1, &ArenaAction::Decline { from: a, id: 3 }),
    );
    e.handle_leave(SessionId(3));
    for _ in 0..31 {
        tick(&mut e);
    }
    for (id, seq) in [(1, 2), (3, 3)] {
        e.handle_action(SessionId(2), act(seq, &ArenaAction::Accept { from: a, id }));
        rejected(&tick(&mut e).0[0].1, OFFER_CLOSED);
    }
    e.handle_action(
        SessionId(2),
        act(4, &ArenaAction::Accept { from: a, id: 99 }),
    );
    rejected(&tick(&mut e).0[0].1, UNKNOWN_OFFER);
    assert_eq!(coins(&e, a), 100);
    // At most MAX_OPEN_OFFERS open at once.
    for id in 10..10 + MAX_OPEN_OFFERS as u64 + 1 {
        e.handle_action(SessionId(1), act(id, &offer(id, b, 1, 0)));
    }
    let (r, _) = tick(&mut e);
    rejected(&r[0].1, RejectCode::Resources);
    let applied = r
        .iter()
        .filter(|(_, o)| matches!(o, Outcome::Applied { .. }))
        .count();
    assert_eq!(applied, MAX_OPEN_OFFERS);
}

#[test]
fn wallets_follow_players_across_worlds_and_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.redb");
    let mut ledger = Ledger::open(&path).unwrap();
    let mut e = engine(1);
    let (a, b) = (join(&mut e, 1), join(&mut e, 2));
    let item = {
        let (id, it) = e
            .world()
            .items()
            .next()
            .map(|(i, it)| (*i, it.clone()))
            .unwrap();
        e.world_mut().place(a, it.x, it.y);
        id
    };
    e.handle_action(SessionId(1), act(1, &ArenaAction::PickUp { item }));
    e.handle_action(SessionId(1), act(2, &offer(1, b, 30, 0)));
    let (_, txs) = tick(&mut e);
    ledger.commit(1, 1, 0, &txs).unwrap();
    e.handle_action(
        SessionId(2),
        act(1, &ArenaAction::Accept { from: a, id: 1 }),
    );
    let (_, txs) = tick(&mut e);
    ledger.commit(1, 2, 0, &txs).unwrap();
    let t = ledger.totals();
    assert!(t.conserved(), "{t:?}");
    assert_eq!((t.coins_held, t.items_held), (200, 1));
    drop(ledger);
    // The origin restarts; p1 joins another world and brings its wallet.
    let ledger = Ledger::open(&path).unwrap();
    let w = ledger.wallet("p1").unwrap().unwrap();
    assert_eq!(
        w,
        Wallet {
            coins: 70,
            items: 1
        }
    );
    let mut other = engine(2);
    other.handle_endow("p1", w);
    let a2 = join(&mut other, 1);
    let p = other.world().player(a2).unwrap();
    assert_eq!((p.coins, p.items.len()), (70, 1));
    let (_, txs) = tick(&mut other);
    assert!(txs.is_empty(), "a returning player is not granted: {txs:?}");
    // A new player in that world is.
    join(&mut other, 5);
    let (_, txs) = tick(&mut other);
    assert_eq!(txs[0].kind, TxKind::Grant);
}

#[derive(Debug, Clone)]
enum Op {
    Offer {
        from: usize,
        to: usize,
        give: u64,
        get: u64,
    },
    Accept {
        by: usize,
        nth: usize,
    },
    Decline {
        by: usize,
        nth: usize,
    },
    Gift {
        from: usize,
        to: usize,
        coins: u64,
    },
    Leave {
        who: usize,
    },
    Tick,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0..4usize, 0..4usize, 0..120u64, 0..120u64).prop_map(|(from, to, give, get)| Op::Offer {
            from,
            to,
            give,
            get
        }),
        (0..4usize, 0..8usize).prop_map(|(by, nth)| Op::Accept { by, nth }),
        (0..4usize, 0..8usize).prop_map(|(by, nth)| Op::Decline { by, nth }),
        (0..4usize, 0..4usize, 0..60u64).prop_map(|(from, to, coins)| Op::Gift { from, to, coins }),
        (0..4usize).prop_map(|who| Op::Leave { who }),
        Just(Op::Tick),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Whatever offers, accepts, declines, gifts and leaves arrive, the ledger
    /// fed each tick's transactions conserves coins, applies nothing twice,
    /// refuses nothing (the world and the ledger agree), and its wallets are
    /// the world's for every player still in it.
    #[test]
    fn the_ledger_agrees_with_the_world_and_conserves(ops in prop::collection::vec(op(), 1..120)) {
        let dir = tempfile::tempdir().unwrap();
        let mut ledger = Ledger::open(&dir.path().join("l.redb")).unwrap();
        let mut e = engine(1);
        let mut avatars: Vec<Option<EntityId>> = (1..=4).map(|s| Some(join(&mut e, s))).collect();
        let mut seqs = [0u64; 5];
        let mut made: Vec<(EntityId, u64)> = Vec::new();
        let mut t = 0;
        let mut next_id = 0;
        let mut commit = |e: &mut Engine<Arena>, ledger: &mut Ledger| {
            t += 1;
            let (_, txs) = tick(e);
            ledger.commit(1, t, 0, &txs).unwrap();
        };
        for o in ops {
            let mut send = |e: &mut Engine<Arena>, who: usize, a: &ArenaAction| {
                seqs[who + 1] += 1;
                e.handle_action(SessionId(who as u64 + 1), act(seqs[who + 1], a));
            };
            match o {
                Op::Offer { from, to, give, get } => {
                    if let (Some(_), Some(p)) = (avatars[from], avatars[to]) {
                        next_id += 1;
                        made.push((avatars[from].unwrap(), next_id));
                        send(&mut e, from, &offer(next_id, p, give, get));
                    }
                }
                Op::Accept { by, nth } | Op::Decline { by, nth } if !made.is_empty() => {
                    let (from, id) = made[nth % made.len()];
                    let a = if matches!(o, Op::Accept { .. }) {
                        ArenaAction::Accept { from, id }
                    } else {
                        ArenaAction::Decline { from, id }
                    };
                    if avatars[by].is_some() {
                        send(&mut e, by, &a);
                    }
                }
                Op::Gift { from, to, coins } => {
                    if let (Some(_), Some(p)) = (avatars[from], avatars[to]) {
                        send(&mut e, from, &ArenaAction::Trade {
                            partner: p, give_coins: coins, give_items: vec![], get_coins: 0, get_items: vec![],
                        });
                    }
                }
                Op::Leave { who } => {
                    if avatars[who].take().is_some() {
                        e.handle_leave(SessionId(who as u64 + 1));
                    }
                }
                Op::Tick | Op::Accept { .. } | Op::Decline { .. } => commit(&mut e, &mut ledger),
            }
        }
        commit(&mut e, &mut ledger);
        let totals = ledger.totals();
        prop_assert!(totals.conserved(), "{:?}", totals);
        prop_assert_eq!(totals.refused, 0);
        prop_assert_eq!(totals.coins_held, 400);
        for (i, a) in avatars.iter().enumerate() {
            if let Some(a) = a {
                let p = e.world().player(*a).unwrap();
                let w = ledger.wallet(&format!("p{}", i + 1)).unwrap().unwrap();
                prop_assert_eq!(w.coins, p.coins);
            }
        }
    }
}
