//! The demo's analytics check: after the run, the Parquet files are read
//! back (with the `parquet` crate) and their rows set beside what the
//! network counted on its own (relays' sessions opened and resumed,
//! origins' worlds started and violations), so the report can say the files
//! hold every session, world and violation, or say which do not match.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde::Serialize;
use skylane_analytics::schema::{SessionEnded, SessionStarted, Violation, WorldPhase};
use skylane_analytics::{read_table, AnalyticsMetrics, ReadError, TABLES};

/// What the network counted itself, to check the files against.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counted {
    /// Sessions opened afresh on the relays.
    pub sessions: u64,
    /// Sessions resumed on the relays.
    pub resumes: u64,
    /// Worlds started on the origins (rooms, zones, takeovers).
    pub worlds: u64,
    /// Violations the origins recorded (detectors, rules, edge reports).
    pub violations: u64,
}

/// The analytics section of a demo report.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct AnalyticsReport {
    /// Where the files are.
    pub dir: String,
    /// Complete files read back.
    pub files: usize,
    /// Files that could not be read.
    pub unreadable: usize,
    /// Rows read back, by table.
    pub rows: BTreeMap<String, u64>,
    /// Rows emitted into the spool.
    pub emitted: u64,
    /// Rows dropped by a full spool.
    pub dropped: u64,
    /// Rows lost to failed writes.
    pub lost: u64,
    /// What the files say: fresh sessions, resumes, worlds started,
    /// violations.
    pub in_files: Counted,
    /// What the network counted.
    pub counted: Counted,
    /// Sessions a relay started (a `session_started` row) and never ended
    /// (no `session_ended` row from that relay): once every relay stopped,
    /// each session it held must have one.
    pub unended: u64,
}

impl AnalyticsReport {
    /// The files hold exactly what was counted, all of it readable, nothing
    /// dropped or lost.
    pub fn consistent(&self) -> bool {
        self.in_files == self.counted
            && self.unended == 0
            && self.unreadable == 0
            && self.dropped == 0
            && self.lost == 0
            && self.rows.values().sum::<u64>() == self.emitted
    }

    /// Reads the files under `dir` back.
    pub fn of(dir: &Path, m: &AnalyticsMetrics, counted: Counted) -> Result<Self, ReadError> {
        let sessions = read_table::<SessionStarted>(dir, "session_started")?;
        let worlds = read_table::<WorldPhase>(dir, "world_phase")?;
        let violations = read_table::<Violation>(dir, "violation")?;
        let ends = read_table::<SessionEnded>(dir, "session_ended")?;
        let ended: BTreeSet<(&str, u64)> = ends
            .rows
            .iter()
            .map(|e| (e.node.as_str(), e.session))
            .collect();
        let started: BTreeSet<(&str, u64)> = sessions
            .rows
            .iter()
            .map(|s| (s.node.as_str(), s.session))
            .collect();
        let mut r = Self {
            dir: dir.display().to_string(),
            emitted: TABLES
                .iter()
                .map(|t| {
                    m.emitted
                        .get_or_create(&skylane_analytics::TableLabel {
                            table: (*t).to_owned(),
                        })
                        .get()
                })
                .sum(),
            dropped: m.dropped.get(),
            lost: m.lost.get(),
            counted,
            in_files: Counted {
                sessions: sessions.rows.iter().filter(|s| !s.resumed).count() as u64,
                resumes: sessions.rows.iter().filter(|s| s.resumed).count() as u64,
                worlds: worlds.rows.iter().filter(|w| w.phase == "created").count() as u64,
                violations: violations.rows.len() as u64,
            },
            unended: started.difference(&ended).count() as u64,
            ..Self::default()
        };
        for t in TABLES {
            let read = skylane_analytics::count_table(dir, t)?;
            r.files += read.files;
            r.unreadable += read.unreadable.len();
            r.rows.insert((*t).to_owned(), read.rows.len() as u64);
        }
        Ok(r)
    }

    /// The report's lines.
    pub fn text(&self) -> String {
        let c = |x: &Counted| {
            format!(
                "{} sessions, {} resumes, {} worlds, {} violations",
                x.sessions, x.resumes, x.worlds, x.violations
            )
        };
        let rows: Vec<String> = self
            .rows
            .iter()
            .filter(|(_, n)| **n > 0)
            .map(|(t, n)| format!("{t} {n}"))
            .collect();
        format!(
            "analytics     {} rows in {} Parquet files ({}) under {}; {} dropped, {} lost, {} unreadable files, {} sessions without an end\n              files: {}\n              counted: {}{}\n",
            self.rows.values().sum::<u64>(),
            self.files,
            rows.join(", "),
            self.dir,
            self.dropped,
            self.lost,
            self.unreadable,
            self.unended,
            c(&self.in_files),
            c(&self.counted),
            if self.consistent() { "" } else { "  (MISMATCH)" }
        )
    }
}
