//! The coordinator's tests: records in, actions and records out.

use super::*;
use crate::matcher::{Member, Ticket};
use crate::ratings::Rating;
use crate::records::cancel_key;

const Q: &str = "default";

fn record(id: u64, player: &str, since_ms: u64, rtt: &[(&str, u32)]) -> TicketRecord {
    TicketRecord {
        ticket: Ticket {
            id: TicketId(id),
            game: "duel".into(),
            members: vec![Member {
                player: player.into(),
                rating: Rating::default(),
            }],
            rtt_ms: rtt.iter().map(|(o, ms)| ((*o).to_owned(), *ms)).collect(),
        },
        relay_rtt_ms: BTreeMap::new(),
        coords: None,
        since_ms,
        changed_ms: since_ms,
        state: Stored::Queued,
    }
}

fn put(view: &mut ClusterView, r: &TicketRecord) {
    view.records_mut()
        .insert(ticket_key(Q, r.ticket.id), encode(r));
}

/// Applies the coordinator's writes to `view`; returns the placements.
fn run(c: &mut Coordinator, view: &mut ClusterView) -> Vec<(u64, WorldSpec, PlacementHints)> {
    let mut placements = Vec::new();
    while let Some(a) = c.poll_action() {
        match a {
            Action::Place { id, spec, hints } => placements.push((id, spec, hints)),
            Action::End { .. } => {}
            Action::Write { puts, deletes } => {
                for (k, v) in puts {
                    view.records_mut().insert(k, v);
                }
                for k in deletes {
                    view.records_mut().remove(&k);
                }
            }
        }
    }
    placements
}

fn state(view: &ClusterView, id: u64) -> Stored {
    decode::<TicketRecord>(&view.records[&ticket_key(Q, TicketId(id))])
        .unwrap()
        .state
}

#[test]
fn a_match_is_placed_near_its_players_and_written_once_ready() {
    let mut c = Coordinator::new(Q, &[GameConfig::new("duel", 2, 1)], Windows::default());
    let mut view = ClusterView::default();
    let t0 = 1_700_000_000_000;
    put(&mut view, &record(1, "ann", t0, &[("eu", 20), ("us", 90)]));
    put(
        &mut view,
        &record(2, "bob", t0 + 5, &[("eu", 30), ("us", 80)]),
    );
    c.handle_view(t0 + 10, &view);
    assert_eq!(c.waiting(), 2);
    // A view seen again does not queue the tickets twice.
    c.handle_view(t0 + 20, &view);
    assert_eq!(c.waiting(), 2);
    c.handle_timeout(t0 + 20);
    let placements = run(&mut c, &mut view);
    assert_eq!(placements.len(), 1);
    let (id, spec, hints) = &placements[0];
    assert_eq!(
        (spec.game.as_str(), spec.capacity, spec.min_players),
        ("duel", 2, 2)
    );
    assert_eq!(hints.rtt_us["eu"], 30_000, "the worst of the two to eu");
    assert_eq!(hints.rtt_us["us"], 90_000);
    assert_eq!(
        state(&view, 1),
        Stored::Queued,
        "nothing written before it is ready"
    );
    c.handle_placed(
        t0 + 500,
        *id,
        Placed::Ready {
            world: WorldId(1000),
            origin: "eu".into(),
        },
    );
    run(&mut c, &mut view);
    match state(&view, 2) {
        Stored::Matched {
            world,
            origin,
            teams,
            waited_ms,
            ..
        } => {
            assert_eq!(
                (world, origin.as_str(), waited_ms),
                (WorldId(1000), "eu", 495)
            );
            assert_eq!(teams.len(), 2);
        }
        other => panic!("{other:?}"),
    }
    assert!(view.records.contains_key(&match_key(Q, WorldId(1000))));
    assert_eq!(c.stats().placed, 1);
    // Analytics: both tickets matched with their waits, then the match.
    let settled: Vec<Settled> = std::iter::from_fn(|| c.poll_settled()).collect();
    assert_eq!(settled.len(), 3, "{settled:?}");
    let mut waits: Vec<(String, u64)> = settled[..2]
        .iter()
        .map(|s| match s {
            Settled::Ticket {
                outcome: "matched",
                waited_ms,
                players,
                ..
            } => (players.join(","), *waited_ms),
            other => panic!("{other:?}"),
        })
        .collect();
    waits.sort();
    assert_eq!(waits, vec![("ann".into(), 500), ("bob".into(), 495)]);
    assert!(matches!(
        &settled[2],
        Settled::Match {
            world: WorldId(1000),
            players: 2,
            worst_rtt_ms: 30,
            ..
        }
    ));
    // Settled tickets and gone worlds' matches are deleted after RETAIN_MS.
    c.handle_view(t0 + 500 + RETAIN_MS + 1, &view);
    run(&mut c, &mut view);
    assert!(view.records.is_empty(), "{:?}", view.records.keys());
}

#[test]
fn a_lagging_view_never_queues_a_settled_ticket_again() {
    // etcd's watch shows a write a moment after it: the leader must not
    // take the still-"queued" records of a match it just wrote for new
    // tickets (found by the service benchmark on etcd: 286 matches for
    // 200 worlds' worth of tickets).
    let mut c = Coordinator::new(Q, &[GameConfig::new("duel", 2, 1)], Windows::default());
    let mut view = ClusterView::default();
    put(&mut view, &record(1, "ann", 0, &[("eu", 20)]));
    put(&mut view, &record(2, "bob", 0, &[("eu", 20)]));
    let stale = view.clone();
    c.handle_view(0, &view);
    c.handle_timeout(0);
    let (id, _, _) = run(&mut c, &mut view).remove(0);
    c.handle_placed(
        10,
        id,
        Placed::Ready {
            world: WorldId(1000),
            origin: "eu".into(),
        },
    );
    run(&mut c, &mut view);
    c.handle_view(20, &stale);
    c.handle_timeout(300);
    assert_eq!(c.waiting(), 0);
    assert!(run(&mut c, &mut view.clone()).is_empty(), "placed twice");
    // Once the view shows them matched, they are forgotten (bounded).
    c.handle_view(30, &view);
    assert!(c.settled.is_empty());
}

#[test]
fn failed_placements_try_other_origins_then_fail_the_tickets() {
    let mut c = Coordinator::new(Q, &[GameConfig::new("duel", 2, 1)], Windows::default());
    let mut view = ClusterView::default();
    put(&mut view, &record(1, "ann", 0, &[("eu", 20)]));
    put(&mut view, &record(2, "bob", 0, &[("eu", 20)]));
    c.handle_view(0, &view);
    c.handle_timeout(0);
    let mut p = run(&mut c, &mut view);
    let timeout = ApiError::new(ErrorKind::Placement, "no owner within 5 s");
    for attempt in 1..=PLACE_ATTEMPTS {
        assert_eq!(p.len(), 1, "attempt {attempt}");
        let (id, _, hints) = p.remove(0);
        assert_eq!(hints.exclude.len() as u32, attempt - 1);
        c.handle_placed(
            10,
            id,
            Placed::Failed {
                origin: Some(format!("o{attempt}")),
                error: timeout.clone(),
            },
        );
        p = run(&mut c, &mut view);
    }
    assert!(p.is_empty());
    assert_eq!(state(&view, 1), Stored::Failed { error: timeout });
    assert_eq!(c.stats().tickets_failed, 2);
    assert_eq!(c.placing(), 0);
}

#[test]
fn cancels_and_refusals_are_written_back() {
    let mut c = Coordinator::new(Q, &[GameConfig::new("duel", 2, 1)], Windows::default());
    let mut view = ClusterView::default();
    put(&mut view, &record(1, "ann", 0, &[("eu", 20)]));
    let mut unknown = record(2, "cat", 0, &[("eu", 20)]);
    unknown.ticket.game = "chess".into();
    put(&mut view, &unknown);
    let mut twice = record(3, "ann", 0, &[("eu", 20)]);
    twice.ticket.id = TicketId(3);
    put(&mut view, &twice);
    c.handle_view(0, &view);
    run(&mut c, &mut view);
    assert!(
        matches!(state(&view, 2), Stored::Failed { error } if error.kind == ErrorKind::UnknownGame)
    );
    assert!(
        matches!(state(&view, 3), Stored::Failed { error } if error.kind == ErrorKind::Duplicate)
    );
    view.records_mut()
        .insert(cancel_key(Q, TicketId(1)), Bytes::new());
    c.handle_view(5, &view);
    run(&mut c, &mut view);
    assert_eq!(state(&view, 1), Stored::Cancelled);
    assert!(!view.records.contains_key(&cancel_key(Q, TicketId(1))));
    assert_eq!(c.waiting(), 0);
    let outcomes: Vec<&str> = std::iter::from_fn(|| c.poll_settled())
        .map(|s| match s {
            Settled::Ticket { outcome, .. } => outcome,
            Settled::Match { .. } => "match",
        })
        .collect();
    assert_eq!(outcomes, vec!["refused", "refused", "cancelled"]);
}

#[test]
fn a_new_leader_keeps_each_tickets_wait() {
    // Queued 25 s ago under the previous leader: the third window (200 ms)
    // applies at once, so a pair 150 ms apart matches in the first round.
    let mut c = Coordinator::new(Q, &[GameConfig::new("duel", 2, 1)], Windows::default());
    let mut view = ClusterView::default();
    let now = 100_000;
    put(&mut view, &record(1, "ann", now - 25_000, &[("eu", 150)]));
    put(&mut view, &record(2, "bob", now - 25_000, &[("eu", 140)]));
    c.handle_view(now, &view);
    c.handle_timeout(now);
    assert_eq!(run(&mut c, &mut view).len(), 1);
    // A fresh pair with the same RTTs waits.
    let mut fresh = Coordinator::new(Q, &[GameConfig::new("duel", 2, 1)], Windows::default());
    let mut v2 = ClusterView::default();
    put(&mut v2, &record(1, "ann", now, &[("eu", 150)]));
    put(&mut v2, &record(2, "bob", now, &[("eu", 140)]));
    fresh.handle_view(now, &v2);
    fresh.handle_timeout(now);
    assert!(run(&mut fresh, &mut v2).is_empty());
}

#[test]
fn a_world_a_dead_leader_never_handed_out_is_ended() {
    use skylane_control::{WorldRecord, WorldStatus};
    let mut c = Coordinator::new(Q, &[GameConfig::new("duel", 2, 1)], Windows::default());
    let mut view = ClusterView::default();
    let world = |id: u64, by: Option<&str>| WorldRecord {
        id: WorldId(id),
        spec: WorldSpec {
            created_by: by.map(str::to_owned),
            ..WorldSpec::new("duel", 20, 2)
        },
        placed_on: "eu".into(),
        standbys: Vec::new(),
        ending: false,
        owner: None,
        status: WorldStatus::default(),
        offers: BTreeMap::new(),
    };
    view.worlds
        .insert(WorldId(1), world(1, Some("matchmaker/default")));
    view.worlds.insert(WorldId(2), world(2, None));
    view.worlds
        .insert(WorldId(3), world(3, Some("matchmaker/default")));
    let m = MatchRecord {
        world: WorldId(3),
        game: "duel".into(),
        teams: vec![],
        created_ms: 0,
    };
    view.records_mut()
        .insert(match_key(Q, WorldId(3)), encode(&m));
    c.handle_view(0, &view);
    assert!(
        run(&mut c, &mut view).is_empty(),
        "a placement may be in flight"
    );
    c.handle_view(ORPHAN_MS + 1, &view);
    let mut ended = Vec::new();
    while let Some(a) = c.poll_action() {
        if let Action::End { world } = a {
            ended.push(world);
        }
    }
    assert_eq!(
        ended,
        [WorldId(1)],
        "not the operator's, not the matched one"
    );
    assert_eq!(c.stats().orphans_ended, 1);
}

#[test]
fn game_configs_are_bounded() {
    assert!(GameConfig::new("duel", 2, 1).validate().is_ok());
    assert!(GameConfig::new("duel", 0, 1).validate().is_err());
    assert!(GameConfig::new("huge", 8, 9).validate().is_err());
}
