//! Rows written through the spool and the writer thread come back from the
//! Parquet files exactly; files rotate; a damaged file is skipped by name.

use std::path::Path;

use proptest::prelude::*;
use skylane_analytics::schema::{
    ActionSampled, Economy, Match, SessionEnded, SessionStarted, SpectatorJoined, Ticket,
    Violation, WorldPhase,
};
use skylane_analytics::{
    parquet_files, read_table, Analytics, AnalyticsConfig, AnalyticsMetrics, Event, Summary,
};

const HOUR_MS: u64 = 3_600_000;
const T0: u64 = 1_796_601_600_000; // 2026-12-07T00:00:00Z

fn started(at_ms: u64, session: u64, region: &str, resumed: bool) -> SessionStarted {
    SessionStarted {
        at_ms,
        node: "relay-1".into(),
        region: region.into(),
        session,
        player: format!("p{session}"),
        world: 1,
        role: "player".into(),
        resumed,
        rtt_ms: 12.5,
    }
}

fn ended(at_ms: u64, session: u64, region: &str, duration_ms: u64) -> SessionEnded {
    SessionEnded {
        at_ms,
        node: "relay-1".into(),
        region: region.into(),
        session,
        player: format!("p{session}"),
        world: 1,
        role: "player".into(),
        duration_ms,
        reconnects: 1,
        rtt_ms: 10.0,
        reason: "closed".into(),
    }
}

fn action(at_ms: u64, class: &str, outcome: &str) -> ActionSampled {
    ActionSampled {
        at_ms,
        node: "origin-1".into(),
        world: 1,
        session: 3,
        class: class.into(),
        outcome: outcome.into(),
        latency_us: 40_000,
        sample_every: 10,
    }
}

fn violation(at_ms: u64, kind: &str) -> Violation {
    Violation {
        at_ms,
        node: "origin-1".into(),
        world: 1,
        session: 3,
        player: "p3".into(),
        source: "origin".into(),
        kind: kind.into(),
        evidence: "9 moves in 1 tick".into(),
        value: Some(9.0),
        threshold: None,
        enforcement: "kicked".into(),
    }
}

fn world(at_ms: u64, id: u64, phase: &str, winner: Option<&str>) -> WorldPhase {
    WorldPhase {
        at_ms,
        node: "origin-1".into(),
        world: id,
        host: id,
        game: "arena".into(),
        phase: phase.into(),
        players: 4,
        tick: 10,
        winner: winner.map(Into::into),
        result: winner.map(|_| "win".into()),
    }
}

fn config(dir: &Path) -> AnalyticsConfig {
    AnalyticsConfig {
        dir: Some(dir.to_owned()),
        ..AnalyticsConfig::default()
    }
}

#[test]
fn every_table_round_trips_and_the_summary_counts_it() {
    let tmp = tempfile::tempdir().unwrap();
    let a = Analytics::start(&config(tmp.path()), "relay-1", AnalyticsMetrics::default())
        .unwrap()
        .unwrap();
    let e = a.emitter();
    e.emit(started(T0, 1, "eu", false));
    e.emit(started(T0 + 1, 2, "eu", false));
    e.emit(started(T0 + 2, 1, "eu", true));
    e.emit(started(T0 + 3, 3, "us", false));
    e.emit(ended(T0 + 10, 1, "eu", 4_000));
    e.emit(ended(T0 + 11, 2, "eu", 6_000));
    e.emit(ended(T0 + 12, 3, "us", 1_000));
    e.emit(action(T0, "state", "applied"));
    e.emit(action(T0, "state", "conflict"));
    // The next hour: its own partition.
    e.emit(action(T0 + HOUR_MS, "critical", "conflict"));
    e.emit(violation(T0 + HOUR_MS + 5, "speed"));
    e.emit(violation(T0 + 5, "flood"));
    e.emit(world(T0, 7, "created", None));
    e.emit(world(T0 + 1, 7, "ended", Some("p1")));
    e.emit(world(T0 + 2, 7, "ended", Some("p1"))); // a second zone's report
    e.emit(Economy {
        at_ms: T0,
        node: "origin-1".into(),
        world: 7,
        tick: 3,
        tx: "trade:1".into(),
        kind: "trade".into(),
        player: "p1".into(),
        coins: -5,
        items: 1,
    });
    e.emit(Economy {
        at_ms: T0,
        node: "origin-1".into(),
        world: 7,
        tick: 3,
        tx: "trade:1".into(),
        kind: "trade".into(),
        player: "p2".into(),
        coins: 5,
        items: -1,
    });
    e.emit(SpectatorJoined {
        at_ms: T0,
        node: "relay-1".into(),
        region: "eu".into(),
        session: 9,
        world: 7,
        delay_ms: 2_000,
        mode: "delayed".into(),
    });
    e.emit(Ticket {
        at_ms: T0,
        node: "matchmaker".into(),
        ticket: "t1".into(),
        player: "p1".into(),
        queue: "duel".into(),
        outcome: "matched".into(),
        wait_ms: 800,
    });
    e.emit(Match {
        at_ms: T0,
        node: "matchmaker".into(),
        match_id: "m1".into(),
        queue: "duel".into(),
        world: 7,
        players: 2,
        worst_rtt_ms: 30.0,
        rating_spread: 12.0,
    });
    a.shutdown().unwrap();

    let s = read_table::<SessionStarted>(tmp.path(), "session_started").unwrap();
    assert_eq!(s.rows.len(), 4);
    assert_eq!(s.rows[3], started(T0 + 3, 3, "us", false));
    let w = read_table::<WorldPhase>(tmp.path(), "world_phase").unwrap();
    assert_eq!(w.rows[1], world(T0 + 1, 7, "ended", Some("p1")));
    assert_eq!(w.rows[0].winner, None, "a null stays a null");
    // Two hours of actions: two partitions, two files.
    let a = read_table::<ActionSampled>(tmp.path(), "action").unwrap();
    assert_eq!(a.files, 2);
    assert!(tmp.path().join("action/date=2026-12-07/hour=01").is_dir());

    let sum = Summary::of_dir(tmp.path()).unwrap();
    assert!(sum.unreadable.is_empty());
    assert_eq!(sum.sessions["eu"].started, 2);
    assert_eq!(sum.sessions["eu"].resumed, 1);
    assert_eq!(sum.sessions["eu"].median_length_s, Some(6.0));
    assert_eq!(sum.sessions["us"].ended, 1);
    assert_eq!(sum.median_session_s, Some(4.0));
    assert_eq!(sum.actions["state"]["applied"], 10, "scaled by sampling");
    assert_eq!(sum.per_hour["2026-12-07 00:00"].conflicts, 10);
    assert_eq!(sum.per_hour["2026-12-07 00:00"].violations, 1);
    assert_eq!(sum.per_hour["2026-12-07 01:00"].conflicts, 10);
    assert_eq!(sum.per_hour["2026-12-07 01:00"].violations, 1);
    assert_eq!(sum.worlds_created["arena"], 1);
    assert_eq!(
        sum.worlds_ended["arena"], 1,
        "one world, however many zones"
    );
    assert_eq!(sum.coins_in, 5);
    assert_eq!(sum.spectators["delayed"], 1);
    assert_eq!(sum.tickets["matched"], 1);
    assert_eq!(sum.matches, 1);
    let text = sum.to_string();
    assert!(text.contains("median session length: 4.0 s"), "{text}");
}

#[test]
fn files_rotate_by_size_and_every_row_survives() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = AnalyticsConfig {
        rotate_mb: 1,
        ..config(tmp.path())
    };
    let a = Analytics::start(&cfg, "origin-1", AnalyticsMetrics::default())
        .unwrap()
        .unwrap();
    let e = a.emitter();
    // Hardly compressible evidence strings: ~3 MB in all.
    let mut x: u64 = 1;
    for n in 0..3_000u64 {
        let mut v = violation(T0 + n, "aimbot");
        v.evidence = (0..1024)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                char::from(b'a' + (x % 26) as u8)
            })
            .collect();
        e.emit(v);
        if n % 500 == 0 {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
    a.shutdown().unwrap();
    let r = read_table::<Violation>(tmp.path(), "violation").unwrap();
    assert_eq!(r.rows.len(), 3_000);
    let times: Vec<u64> = r.rows.iter().map(|v| v.at_ms).collect();
    let mut sorted = times.clone();
    sorted.sort_unstable();
    assert_eq!(times, sorted, "files and rows in order");
    assert!(r.files >= 2, "rotated at 1 MiB: {} files", r.files);
    for f in parquet_files(tmp.path()).unwrap() {
        assert!(!f.to_string_lossy().ends_with(".tmp"));
    }
}

#[test]
fn a_damaged_file_is_skipped_by_name_and_the_rest_still_read() {
    let tmp = tempfile::tempdir().unwrap();
    let a = Analytics::start(&config(tmp.path()), "relay-1", AnalyticsMetrics::default())
        .unwrap()
        .unwrap();
    a.emitter().emit(started(T0, 1, "eu", false));
    a.shutdown().unwrap();
    let good = parquet_files(tmp.path()).unwrap();
    assert_eq!(good.len(), 1);
    let dir = good[0].parent().unwrap();
    std::fs::write(dir.join("junk.parquet"), b"not parquet at all").unwrap();
    let bytes = std::fs::read(&good[0]).unwrap();
    std::fs::write(dir.join("cut.parquet"), &bytes[..bytes.len() / 2]).unwrap();
    // An in-progress file is not a file yet.
    std::fs::write(dir.join("x.parquet.tmp"), b"half").unwrap();
    let r = read_table::<SessionStarted>(tmp.path(), "session_started").unwrap();
    assert_eq!(r.rows.len(), 1);
    assert_eq!(r.unreadable.len(), 2, "{:?}", r.unreadable);
    let s = Summary::of_dir(tmp.path()).unwrap();
    assert_eq!(s.unreadable.len(), 2);
    assert!(s.to_string().contains("skipped"));
    assert!(Summary::of_dir(&tmp.path().join("missing")).is_err());
}

#[test]
fn analytics_off_starts_nothing_and_bad_bounds_are_named() {
    assert!(Analytics::start(
        &AnalyticsConfig::default(),
        "x",
        AnalyticsMetrics::default()
    )
    .unwrap()
    .is_none());
    let bad = AnalyticsConfig {
        spool_rows: 0,
        ..AnalyticsConfig::default()
    };
    assert_eq!(bad.validate().unwrap_err().key, "spool_rows");
    let bad = AnalyticsConfig {
        rotate_secs: 0,
        ..AnalyticsConfig::default()
    };
    assert_eq!(bad.validate().unwrap_err().key, "rotate_secs");
    assert!(AnalyticsConfig::default().validate().is_ok());
    let all = AnalyticsConfig {
        sample_actions: 1,
        ..AnalyticsConfig::default()
    };
    assert!(all.samples(0) && all.samples(7));
    let none = AnalyticsConfig {
        sample_actions: 0,
        ..AnalyticsConfig::default()
    };
    assert!(!none.samples(0));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(16))]
    /// Any rows of a table, with any strings and numbers, come back equal
    /// and in order.
    #[test]
    fn any_rows_round_trip(rows in prop::collection::vec(
        (0..4 * HOUR_MS, any::<u64>(), ".{0,12}", any::<u32>(), any::<bool>()), 1..60)
    ) {
        let tmp = tempfile::tempdir().unwrap();
        let a = Analytics::start(&config(tmp.path()), "p", AnalyticsMetrics::default())
            .unwrap()
            .unwrap();
        let e = a.emitter();
        let want: Vec<Ticket> = rows
            .iter()
            .map(|(t, w, s, n, b)| Ticket {
                at_ms: T0 + t,
                node: s.clone(),
                ticket: n.to_string(),
                player: format!("{b}"),
                queue: s.clone(),
                outcome: "expired".into(),
                wait_ms: *w,
            })
            .collect();
        for t in &want {
            e.emit(Event::Ticket(t.clone()));
        }
        a.shutdown().unwrap();
        let mut got = read_table::<Ticket>(tmp.path(), "ticket").unwrap().rows;
        let mut want = want;
        // Files are per hour partition: order holds within each hour.
        let key = |t: &Ticket| (t.at_ms / HOUR_MS, t.ticket.clone(), t.at_ms, t.wait_ms, t.node.clone());
        got.sort_by_key(key);
        want.sort_by_key(key);
        prop_assert_eq!(got, want);
    }
}
