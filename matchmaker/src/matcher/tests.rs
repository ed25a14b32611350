//! The matcher in simulated time: windows are never exceeded, everyone is
//! matched by the last window's deadline, parties stay together, teams are
//! balanced, and bad tickets get typed errors.

use std::collections::{BTreeMap, HashMap};

use proptest::prelude::*;

use super::*;

/// Four origins and the RTT (ms) from each of four regions to each.
const ORIGINS: [&str; 4] = ["eu", "us", "asia", "sa"];
const RTT: [[u32; 4]; 4] = [
    // eu    us  asia  sa
    [15, 90, 220, 200],  // a player in europe
    [90, 20, 160, 130],  // north america
    [220, 150, 25, 300], // asia
    [200, 120, 300, 30], // south america
];

fn duel() -> GameRules {
    GameRules {
        name: "duel".into(),
        teams: 2,
        team_size: 1,
    }
}

fn squads() -> GameRules {
    GameRules {
        name: "squads".into(),
        teams: 2,
        team_size: 3,
    }
}

fn ticket(id: u64, game: &str, region: usize, mus: &[f64], jitter: u32) -> Ticket {
    Ticket {
        id: TicketId(id),
        game: game.into(),
        members: mus
            .iter()
            .enumerate()
            .map(|(i, mu)| Member {
                player: format!("p{id}-{i}"),
                rating: Rating {
                    mu: *mu,
                    sigma: 3.0,
                },
            })
            .collect(),
        rtt_ms: ORIGINS
            .iter()
            .enumerate()
            .map(|(o, name)| ((*name).to_owned(), RTT[region][o] + jitter))
            .collect(),
    }
}

/// Runs rounds every ROUND_MS from `from` to `to`, collecting matches.
fn run(m: &mut Matcher, from: u64, to: u64, out: &mut Vec<(u64, Match)>) {
    let mut t = from;
    while t <= to {
        m.handle_timeout(t);
        while let Some(x) = m.poll_match() {
            out.push((t, x));
        }
        t += ROUND_MS;
    }
}

/// Every member's RTT to the chosen origin and the match's spread fit the
/// member's own window at the moment the match formed.
fn within_windows(w: &Windows, x: &Match) {
    for (k, waited) in x.tickets().zip(&x.waited_ms) {
        let step = w.at(*waited);
        let rtt = k.rtt_ms[&x.origin];
        assert!(rtt <= step.rtt_ms, "{k:?} at {rtt} ms > {step:?}");
        assert!(x.skill_spread <= step.skill, "{x:?} spread > {step:?}");
    }
}

#[test]
fn close_players_meet_at_once_on_their_nearest_origin() {
    let mut m = Matcher::new([duel()], Windows::default());
    m.handle_ticket(0, ticket(1, "duel", 0, &[25.0], 0))
        .unwrap();
    m.handle_ticket(0, ticket(2, "duel", 0, &[26.0], 3))
        .unwrap();
    m.handle_timeout(0);
    let x = m.poll_match().expect("a match");
    assert_eq!((x.origin.as_str(), x.worst_rtt_ms), ("eu", 18));
    let by_origin = x.worst_rtt_by_origin();
    assert_eq!(by_origin["eu"], 18);
    assert_eq!(by_origin["us"], 93, "the placement's fallback ranking");
    assert_eq!(x.team_players().len(), 2);
    assert_eq!(m.waiting(), 0);
    assert_eq!(m.poll_timeout(), None, "nothing waits");
}

#[test]
fn far_apart_players_wait_for_the_wider_windows() {
    let w = Windows::default();
    let mut m = Matcher::new([duel()], w.clone());
    // Europe and North America: 90 ms apart through either origin.
    m.handle_ticket(0, ticket(1, "duel", 0, &[25.0], 0))
        .unwrap();
    m.handle_ticket(0, ticket(2, "duel", 1, &[25.0], 0))
        .unwrap();
    let mut out = Vec::new();
    run(&mut m, 0, 9_750, &mut out);
    assert!(out.is_empty(), "not within 50 ms: {out:?}");
    run(&mut m, 10_000, 10_000, &mut out);
    let (_, x) = &out[0];
    assert_eq!(x.worst_rtt_ms, 90, "the better of two 90 ms origins");
    within_windows(&w, x);
}

#[test]
fn parties_stay_together_and_teams_balance() {
    let mut m = Matcher::new([squads()], Windows::default());
    m.handle_ticket(0, ticket(1, "squads", 0, &[30.0, 28.0, 29.0], 0))
        .unwrap();
    m.handle_ticket(0, ticket(2, "squads", 0, &[27.0], 1))
        .unwrap();
    m.handle_ticket(0, ticket(3, "squads", 0, &[26.0, 27.0], 2))
        .unwrap();
    m.handle_timeout(0);
    let x = m.poll_match().expect("3 + 1 + 2 make two teams of 3");
    let sizes: Vec<usize> = x
        .teams
        .iter()
        .map(|t| t.iter().map(|k| k.members.len()).sum())
        .collect();
    assert_eq!(sizes, vec![3, 3]);
    let team_of = |id: u64| x.teams.iter().position(|t| t.iter().any(|k| k.id.0 == id));
    assert_ne!(team_of(1), team_of(2), "the party of three fills a team");
    assert_eq!(team_of(2), team_of(3));
}

#[test]
fn bad_tickets_get_typed_errors() {
    let mut m = Matcher::new([duel(), squads()], Windows::default());
    assert_eq!(
        m.handle_ticket(0, ticket(1, "chess", 0, &[25.0], 0)),
        Err(TicketError::UnknownGame("chess".into()))
    );
    assert_eq!(
        m.handle_ticket(0, ticket(1, "duel", 0, &[25.0, 25.0], 0)),
        Err(TicketError::PartyTooLarge { size: 2, max: 1 })
    );
    assert_eq!(
        m.handle_ticket(0, ticket(1, "duel", 0, &[], 0)),
        Err(TicketError::EmptyParty)
    );
    let mut none = ticket(1, "duel", 0, &[25.0], 0);
    none.rtt_ms.clear();
    assert_eq!(m.handle_ticket(0, none), Err(TicketError::NoEstimate));
    m.handle_ticket(0, ticket(1, "duel", 0, &[25.0], 0))
        .unwrap();
    assert!(matches!(
        m.handle_ticket(0, ticket(1, "duel", 0, &[25.0], 0)),
        Err(TicketError::Duplicate(_))
    ));
    let mut same_player = ticket(2, "squads", 0, &[25.0], 0);
    same_player.members[0].player = "p1-0".into();
    assert!(matches!(
        m.handle_ticket(0, same_player),
        Err(TicketError::Duplicate(_))
    ));
    assert_eq!(m.stats().refused, 6);
    assert!(m.handle_cancel(TicketId(1)));
    assert!(!m.handle_cancel(TicketId(1)));
    // Cancelled: its player may queue again.
    m.handle_ticket(0, ticket(1, "duel", 0, &[25.0], 0))
        .unwrap();
}

#[derive(Debug, Clone)]
struct Arrival {
    at_ms: u64,
    region: usize,
    party: Vec<f64>,
    jitter: u32,
}

fn arrivals() -> impl Strategy<Value = Vec<Arrival>> {
    prop::collection::vec(
        (
            0..60_000u64,
            0..4usize,
            prop::collection::vec(10.0..40.0f64, 1..=3),
            0..20u32,
        )
            .prop_map(|(at_ms, region, party, jitter)| Arrival {
                at_ms,
                region,
                party,
                jitter,
            }),
        20..160,
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    /// A mixed population over four regions arriving over a minute: no match
    /// exceeds a member's window, parties stay whole, teams as even as their
    /// parties allow (no swap narrows the gap), and after the last window's deadline
    /// fewer players wait than make one match.
    #[test]
    fn a_population_is_matched_within_its_windows(mut arrivals in arrivals()) {
        arrivals.sort_by_key(|a| a.at_ms);
        let w = Windows::default();
        let rules = squads();
        let mut m = Matcher::new([rules.clone()], w.clone());
        let mut out = Vec::new();
        let mut t = 0;
        let mut parties: HashMap<u64, usize> = HashMap::new();
        for (i, a) in arrivals.iter().enumerate() {
            while t < a.at_ms {
                run(&mut m, t, t, &mut out);
                t += ROUND_MS;
            }
            let id = i as u64 + 1;
            m.handle_ticket(a.at_ms, ticket(id, "squads", a.region, &a.party, a.jitter)).unwrap();
            parties.insert(id, a.party.len());
        }
        let last = arrivals.last().map_or(0, |a| a.at_ms);
        run(&mut m, t, last + w.last_ms() + ROUND_MS, &mut out);
        let mut seen = BTreeMap::new();
        for (_, x) in &out {
            within_windows(&w, x);
            let mut sizes = Vec::new();
            for team in &x.teams {
                let n: usize = team.iter().map(|k| k.members.len()).sum();
                sizes.push(n);
                for k in team {
                    prop_assert_eq!(k.members.len(), parties[&k.id.0], "party whole");
                    prop_assert!(seen.insert(k.id, x.id).is_none(), "matched once");
                }
            }
            prop_assert_eq!(sizes, vec![3, 3]);
            // The teams are as even as these parties allow: no swap of two
            // parties of one size across the teams narrows the gap. (A gap
            // can exceed the strongest party when sizes force the packing:
            // a party of three against three strong singles.)
            let r = x.team_ratings();
            let gap = (r[0] - r[1]).abs();
            let total = |k: &Ticket| k.members.iter().map(|m| m.rating.mu).sum::<f64>();
            for a in &x.teams[0] {
                for b in x.teams[1].iter().filter(|b| b.members.len() == a.members.len()) {
                    let d = total(a) - total(b);
                    let swapped = ((r[0] - d) - (r[1] + d)).abs();
                    prop_assert!(swapped + 1e-9 >= gap, "{:?}: swapping {} and {} narrows it", r, a.id.0, b.id.0);
                }
            }
        }
        let waiting_players: usize = arrivals
            .iter()
            .enumerate()
            .filter(|(i, _)| !seen.contains_key(&TicketId(*i as u64 + 1)))
            .map(|(_, a)| a.party.len())
            .sum();
        prop_assert_eq!(m.waiting(), arrivals.len() - seen.len());
        // Past every window, what is left cannot make a match (the parties
        // left may also not pack: three parties of two into teams of three).
        let left: Vec<usize> = arrivals
            .iter()
            .enumerate()
            .filter(|(i, _)| !seen.contains_key(&TicketId(*i as u64 + 1)))
            .map(|(_, a)| a.party.len())
            .collect();
        prop_assert!(
            waiting_players < rules.players() || !can_fill(&left, &rules),
            "{} players left: {:?}",
            waiting_players,
            left
        );
    }
}

/// Whether some subset of parties `left` fills a match exactly.
fn can_fill(left: &[usize], rules: &GameRules) -> bool {
    let need = rules.players();
    let n = left.len().min(16);
    (1u32..(1 << n)).any(|mask| {
        let pick: Vec<usize> = (0..n)
            .filter(|i| mask & (1 << i) != 0)
            .map(|i| left[i])
            .collect();
        pick.iter().sum::<usize>() == need && packs(&pick, rules)
    })
}
