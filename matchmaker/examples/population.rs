//! A simulated population through the matcher: 10,000 tickets arriving over
//! 60 s from four regions (a third of them parties of two or three), for a
//! 1-v-1 game and a 3-v-3 one, rounds every 250 ms of simulated time. Prints
//! time to match (p50/p99), the worst RTT in each match against the best any
//! origin could have given its players, the skill spread per match, and
//! matches formed per second of CPU.
//!
//! Run: `cargo run --release -p skylane-match --example population [-- --tickets N --seed S]`.
#![allow(missing_docs)]

use std::time::Instant;

use hdrhistogram::Histogram;
use rand::{Rng, SeedableRng};
use skylane_match::{GameRules, Matcher, Member, Rating, Ticket, TicketId, Windows, ROUND_MS};

const ORIGINS: [&str; 4] = ["eu", "us", "asia", "sa"];
const RTT: [[u32; 4]; 4] = [
    [15, 90, 220, 200],
    [90, 20, 160, 130],
    [220, 150, 25, 300],
    [200, 120, 300, 30],
];

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let tickets = arg("--tickets", 10_000);
    let mut rng = rand::rngs::StdRng::seed_from_u64(arg("--seed", 7));
    let games = [
        GameRules {
            name: "duel".into(),
            teams: 2,
            team_size: 1,
        },
        GameRules {
            name: "squads".into(),
            teams: 2,
            team_size: 3,
        },
    ];
    let mut m = Matcher::new(games, Windows::default());
    let span_ms = 60_000u64;
    let mut arrivals: Vec<(u64, Ticket)> = (0..tickets)
        .map(|i| {
            let region = rng.gen_range(0..4);
            let squads = rng.gen_bool(0.5);
            let size = if squads { rng.gen_range(1..=3) } else { 1 };
            let ticket = Ticket {
                id: TicketId(i + 1),
                game: if squads { "squads" } else { "duel" }.into(),
                members: (0..size)
                    .map(|k| Member {
                        player: format!("p{i}-{k}"),
                        rating: Rating {
                            mu: 25.0 + rng.gen_range(-12.0..12.0),
                            sigma: 3.0,
                        },
                    })
                    .collect(),
                rtt_ms: ORIGINS
                    .iter()
                    .enumerate()
                    .map(|(o, n)| ((*n).to_owned(), RTT[region][o] + rng.gen_range(0..25)))
                    .collect(),
            };
            (rng.gen_range(0..span_ms), ticket)
        })
        .collect();
    arrivals.sort_by_key(|(t, _)| *t);
    let mut wait = Histogram::<u64>::new_with_max(600_000, 3).expect("histogram");
    let mut excess = Histogram::<u64>::new_with_max(1_000, 3).expect("histogram");
    let mut spread = Histogram::<u64>::new_with_max(10_000, 3).expect("histogram");
    let (mut matches, mut cpu) = (0u64, std::time::Duration::ZERO);
    let mut next = arrivals.into_iter().peekable();
    let mut now = 0;
    let end = span_ms + Windows::default().last_ms() + 1_000;
    while now <= end {
        while let Some((_, t)) = next.next_if(|(at, _)| *at <= now) {
            m.handle_ticket(now, t).expect("a valid ticket");
        }
        let began = Instant::now();
        m.handle_timeout(now);
        while let Some(x) = m.poll_match() {
            matches += 1;
            for w in &x.waited_ms {
                let _ = wait.record(*w);
            }
            // The best any origin could have given these players.
            let best = ORIGINS
                .iter()
                .map(|o| x.tickets().map(|k| k.rtt_ms[*o]).max().unwrap_or(0))
                .min()
                .unwrap_or(0);
            let _ = excess.record(u64::from(x.worst_rtt_ms - best));
            let _ = spread.record((x.skill_spread * 100.0) as u64);
        }
        cpu += began.elapsed();
        now += ROUND_MS;
    }
    let left = m.waiting();
    println!(
        "{tickets} tickets over 60 s, 4 regions: {matches} matches, {left} tickets left unmatched"
    );
    for (game, (t, p)) in m.queues() {
        println!("left in {game:<8} {t} tickets, {p} players");
    }
    println!(
        "time to match      p50 {:.1} s  p99 {:.1} s  max {:.1} s",
        wait.value_at_quantile(0.5) as f64 / 1000.0,
        wait.value_at_quantile(0.99) as f64 / 1000.0,
        wait.max() as f64 / 1000.0
    );
    println!(
        "worst RTT - best   p50 {} ms  p99 {} ms  max {} ms (0: the best origin for the group)",
        excess.value_at_quantile(0.5),
        excess.value_at_quantile(0.99),
        excess.max()
    );
    println!(
        "skill spread       p50 {:.2}  p99 {:.2}  max {:.2} (mu; players' mu spans 13..37)",
        spread.value_at_quantile(0.5) as f64 / 100.0,
        spread.value_at_quantile(0.99) as f64 / 100.0,
        spread.max() as f64 / 100.0
    );
    println!(
        "CPU                {:.3} s for {} rounds: {:.0} matches per second of CPU",
        cpu.as_secs_f64(),
        end / ROUND_MS + 1,
        matches as f64 / cpu.as_secs_f64().max(1e-9)
    );
}
