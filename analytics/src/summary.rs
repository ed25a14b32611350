//! `skylane analytics summary DIR`: a few aggregates an operator can read
//! without a warehouse: sessions per region, median session length,
//! actions per class and outcome (scaled by their sampling), conflicts and
//! violations per hour, worlds per game, economy volume, spectators and
//! matches.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::read::{read_table, ReadError, TableRead};
use crate::schema::{
    ActionSampled, Economy, Match, SessionEnded, SessionStarted, SpectatorJoined, Ticket,
    Violation, WorldPhase,
};

/// Sessions of one region.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct RegionSessions {
    /// Sessions started (not counting resumes).
    pub started: u64,
    /// Resumes (reconnects).
    pub resumed: u64,
    /// Sessions ended.
    pub ended: u64,
    /// Median length of the ended ones, seconds.
    pub median_length_s: Option<f64>,
}

/// One hour's trouble.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct HourCounts {
    /// Conflicts (estimated from the sampled actions).
    pub conflicts: u64,
    /// Violations recorded.
    pub violations: u64,
}

/// What the files say.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Summary {
    /// Files read.
    pub files: usize,
    /// Files skipped (not Parquet, truncated, another shape), with why.
    pub unreadable: Vec<(PathBuf, String)>,
    /// Sessions by relay region.
    pub sessions: BTreeMap<String, RegionSessions>,
    /// Median session length over every region, seconds.
    pub median_session_s: Option<f64>,
    /// Actions by class, then outcome (each sampled row counts for its
    /// `sample_every`).
    pub actions: BTreeMap<String, BTreeMap<String, u64>>,
    /// Sampled actions' origin latency, median µs, by class.
    pub action_latency_us: BTreeMap<String, u64>,
    /// Conflicts and violations by hour (`YYYY-MM-DD HH:00`, UTC).
    pub per_hour: BTreeMap<String, HourCounts>,
    /// Violations by kind.
    pub violations: BTreeMap<String, u64>,
    /// Worlds started on an origin, by game.
    pub worlds_created: BTreeMap<String, u64>,
    /// Worlds ended, by game (each world once, however many zones).
    pub worlds_ended: BTreeMap<String, u64>,
    /// Economy rows (wallet changes) and their coins moved in.
    pub economy_rows: u64,
    /// Coins added to wallets (positive changes).
    pub coins_in: i64,
    /// Spectator joins by mode.
    pub spectators: BTreeMap<String, u64>,
    /// Matchmaking tickets by outcome.
    pub tickets: BTreeMap<String, u64>,
    /// Median ticket wait, ms.
    pub median_wait_ms: Option<u64>,
    /// Matches formed.
    pub matches: u64,
}

fn hour_of(at_ms: u64) -> String {
    let p = crate::sink::partition(at_ms);
    // `date=YYYY-MM-DD/hour=HH`
    format!("{} {}:00", &p[5..15], &p[21..23])
}

fn median<T: Copy + Ord>(v: &mut [T]) -> Option<T> {
    v.sort_unstable();
    v.get(v.len() / 2).copied()
}

impl Summary {
    fn take<T>(&mut self, r: TableRead<T>) -> Vec<T> {
        self.files += r.files;
        self.unreadable.extend(r.unreadable);
        r.rows
    }

    /// Reads every table under `dir`.
    pub fn of_dir(dir: &Path) -> Result<Self, ReadError> {
        let mut s = Self::default();
        let started = s.take(read_table::<SessionStarted>(dir, "session_started")?);
        let ended = s.take(read_table::<SessionEnded>(dir, "session_ended")?);
        let actions = s.take(read_table::<ActionSampled>(dir, "action")?);
        let violations = s.take(read_table::<Violation>(dir, "violation")?);
        let worlds = s.take(read_table::<WorldPhase>(dir, "world_phase")?);
        let economy = s.take(read_table::<Economy>(dir, "economy")?);
        let spectators = s.take(read_table::<SpectatorJoined>(dir, "spectator_joined")?);
        let tickets = s.take(read_table::<Ticket>(dir, "ticket")?);
        let matches = s.take(read_table::<Match>(dir, "match")?);

        for r in &started {
            let e = s.sessions.entry(r.region.clone()).or_default();
            if r.resumed {
                e.resumed += 1;
            } else {
                e.started += 1;
            }
        }
        let mut by_region: BTreeMap<String, Vec<u64>> = BTreeMap::new();
        for r in &ended {
            s.sessions.entry(r.region.clone()).or_default().ended += 1;
            by_region
                .entry(r.region.clone())
                .or_default()
                .push(r.duration_ms);
        }
        let mut all: Vec<u64> = Vec::new();
        for (region, mut v) in by_region {
            all.extend(&v);
            if let Some(e) = s.sessions.get_mut(&region) {
                e.median_length_s = median(&mut v).map(|ms| ms as f64 / 1000.0);
            }
        }
        s.median_session_s = median(&mut all).map(|ms| ms as f64 / 1000.0);

        let mut latency: BTreeMap<String, Vec<u64>> = BTreeMap::new();
        for a in &actions {
            let n = u64::from(a.sample_every.max(1));
            *s.actions
                .entry(a.class.clone())
                .or_default()
                .entry(a.outcome.clone())
                .or_default() += n;
            latency
                .entry(a.class.clone())
                .or_default()
                .push(a.latency_us);
            if a.outcome == "conflict" {
                s.per_hour.entry(hour_of(a.at_ms)).or_default().conflicts += n;
            }
        }
        for (class, mut v) in latency {
            if let Some(m) = median(&mut v) {
                s.action_latency_us.insert(class, m);
            }
        }
        for v in &violations {
            s.per_hour.entry(hour_of(v.at_ms)).or_default().violations += 1;
            *s.violations.entry(v.kind.clone()).or_default() += 1;
        }
        let mut ended_worlds = std::collections::BTreeSet::new();
        for w in &worlds {
            match w.phase.as_str() {
                "created" => *s.worlds_created.entry(w.game.clone()).or_default() += 1,
                "ended" if ended_worlds.insert(w.world) => {
                    *s.worlds_ended.entry(w.game.clone()).or_default() += 1;
                }
                _ => {}
            }
        }
        s.economy_rows = economy.len() as u64;
        s.coins_in = economy.iter().map(|e| e.coins.max(0)).sum();
        for j in &spectators {
            *s.spectators.entry(j.mode.clone()).or_default() += 1;
        }
        let mut waits = Vec::new();
        for t in &tickets {
            *s.tickets.entry(t.outcome.clone()).or_default() += 1;
            waits.push(t.wait_ms);
        }
        s.median_wait_ms = median(&mut waits);
        s.matches = matches.len() as u64;
        Ok(s)
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "files read: {}", self.files)?;
        for (p, why) in &self.unreadable {
            writeln!(f, "  skipped {}: {why}", p.display())?;
        }
        writeln!(
            f,
            "sessions by region (started / resumed / ended, median length):"
        )?;
        for (region, r) in &self.sessions {
            let len = r
                .median_length_s
                .map_or_else(|| "-".into(), |s| format!("{s:.1} s"));
            writeln!(
                f,
                "  {region:<16} {:>7} / {:>5} / {:>7}  {len}",
                r.started, r.resumed, r.ended
            )?;
        }
        if let Some(m) = self.median_session_s {
            writeln!(f, "median session length: {m:.1} s")?;
        }
        writeln!(f, "actions by class (estimated from samples):")?;
        for (class, outcomes) in &self.actions {
            let total: u64 = outcomes.values().sum();
            let detail: Vec<String> = outcomes.iter().map(|(o, n)| format!("{o} {n}")).collect();
            let lat = self
                .action_latency_us
                .get(class)
                .map_or_else(String::new, |us| {
                    format!(", median {:.1} ms", *us as f64 / 1000.0)
                });
            writeln!(f, "  {class:<10} {total:>9}  ({}{lat})", detail.join(", "))?;
        }
        writeln!(f, "conflicts and violations per hour (UTC):")?;
        for (hour, c) in &self.per_hour {
            writeln!(
                f,
                "  {hour}  conflicts {:>7}  violations {:>5}",
                c.conflicts, c.violations
            )?;
        }
        if !self.violations.is_empty() {
            let v: Vec<String> = self
                .violations
                .iter()
                .map(|(k, n)| format!("{k} {n}"))
                .collect();
            writeln!(f, "violations by kind: {}", v.join(", "))?;
        }
        let games = |m: &BTreeMap<String, u64>| {
            m.iter()
                .map(|(g, n)| format!("{g} {n}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        writeln!(
            f,
            "worlds created: {}; ended: {}",
            games(&self.worlds_created),
            games(&self.worlds_ended)
        )?;
        writeln!(
            f,
            "economy: {} wallet changes, {} coins in",
            self.economy_rows, self.coins_in
        )?;
        writeln!(f, "spectator joins: {}", games(&self.spectators))?;
        write!(
            f,
            "matchmaking: tickets {}; matches {}",
            games(&self.tickets),
            self.matches
        )?;
        if let Some(w) = self.median_wait_ms {
            write!(f, "; median wait {w} ms")?;
        }
        writeln!(f)
    }
}
