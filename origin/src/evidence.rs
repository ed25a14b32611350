//! The violation store: every violation an origin detects or a relay's edge
//! guard reports, with its evidence, in an embedded database (redb), queryable
//! by player and time.
//!
//! Records are keyed by an id that only grows; two indexes (player, time, id)
//! and (time, id) answer "what did P do since T" and "what happened since T"
//! with a range scan, however large the store. The store is bounded: past
//! `max_records` the oldest go first, in the same transaction as the append.
//! Blocking (redb); the origin writes through [`crate::shell`]'s sink task, so
//! the game loop never waits on a disk.

use std::path::{Path, PathBuf};

use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use serde::{Deserialize, Serialize};

const RECORDS: TableDefinition<u64, &[u8]> = TableDefinition::new("violations");
const BY_PLAYER: TableDefinition<(&str, u64, u64), ()> = TableDefinition::new("by_player");
const BY_TIME: TableDefinition<(u64, u64), ()> = TableDefinition::new("by_time");

/// Most records one query returns.
pub const MAX_QUERY: usize = 10_000;

/// Where a violation was detected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// The origin: a rule validator or the anomaly detector.
    Origin,
    /// A relay's edge guard (rate, replay, size, timestamp).
    Edge,
}

/// One violation as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ViolationRecord {
    /// Assigned by the store (grows with every append).
    #[serde(default)]
    pub id: u64,
    /// When it was recorded, milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// The world.
    pub world: u64,
    /// The world's tick it belongs to (an origin violation's action tick; an
    /// edge report's arrival tick): `skylane replay JOURNAL --until-tick` shows
    /// the situation.
    pub tick: u64,
    /// The player (the token's subject).
    pub player: String,
    /// The session.
    pub session: u64,
    /// Origin or edge.
    pub source: Source,
    /// The detector or rule: `accuracy`, `reaction_time`, `action_rate`,
    /// `rule`, or the edge's `rate_limited`, `replayed`, `too_large`,
    /// `bad_timestamp`.
    pub detector: String,
    /// What was measured, in words and numbers.
    pub evidence: String,
    /// The measured value (when the detector has one).
    pub value: Option<f64>,
    /// The threshold it crossed (when the detector has one).
    pub threshold: Option<f64>,
    /// What was done: `flag`, `kick`, `ban` (the edge: `cut`).
    pub action: String,
    /// The relay that reported it (edge violations).
    pub relay: Option<String>,
}

/// A query: by player or not, from a time on.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ViolationQuery {
    /// Only this player's.
    pub player: Option<String>,
    /// Recorded at or after this time (ms since the Unix epoch).
    pub since_ms: u64,
    /// At most this many, the most recent (capped by [`MAX_QUERY`]).
    pub limit: usize,
}

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
pub enum EvidenceError {
    /// The database failed.
    #[error("violation store: {0}")]
    Storage(#[from] redb::Error),
    /// A record could not be decoded.
    #[error("violation record {id} is corrupt: {source}")]
    Corrupt {
        /// Its id.
        id: u64,
        /// Decoder error.
        source: postcard::Error,
    },
    /// The file failed redb's integrity check; move it away to start afresh.
    #[error("violation store {0} is damaged")]
    Damaged(PathBuf),
}

fn storage<E: Into<redb::Error>>(e: E) -> EvidenceError {
    EvidenceError::Storage(e.into())
}

/// The store.
#[derive(Debug)]
pub struct ViolationStore {
    db: Database,
    max_records: u64,
    next_id: u64,
}

impl ViolationStore {
    /// Opens `path`, creating it if missing, keeping at most `max_records`
    /// (at least 1). A damaged file is refused, never half-read.
    pub fn open(path: &Path, max_records: u64) -> Result<Self, EvidenceError> {
        crate::redb_file::open_checked(
            path,
            || EvidenceError::Damaged(path.to_owned()),
            EvidenceError::Storage,
            |db| Self::start(db, max_records),
        )
    }

    fn start(db: Database, max_records: u64) -> Result<Self, EvidenceError> {
        let txn = db.begin_write().map_err(storage)?;
        let next_id = {
            let t = txn.open_table(RECORDS).map_err(storage)?;
            txn.open_table(BY_PLAYER).map_err(storage)?;
            txn.open_table(BY_TIME).map_err(storage)?;
            let last = t.last().map_err(storage)?.map(|(k, _)| k.value());
            last.map_or(1, |k| k + 1)
        };
        txn.commit().map_err(storage)?;
        Ok(Self {
            db,
            max_records: max_records.max(1),
            next_id,
        })
    }

    /// Appends `records` in one transaction (their ids assigned here) and
    /// drops the oldest past the bound; returns how many were dropped.
    pub fn append(&mut self, records: &mut [ViolationRecord]) -> Result<u64, EvidenceError> {
        let txn = self.db.begin_write().map_err(storage)?;
        let mut next = self.next_id;
        let mut dropped = 0;
        {
            let mut t = txn.open_table(RECORDS).map_err(storage)?;
            let mut by_player = txn.open_table(BY_PLAYER).map_err(storage)?;
            let mut by_time = txn.open_table(BY_TIME).map_err(storage)?;
            for r in records.iter_mut() {
                r.id = next;
                next += 1;
                let bytes = postcard::to_stdvec(&*r)
                    .map_err(|source| EvidenceError::Corrupt { id: r.id, source })?;
                t.insert(r.id, bytes.as_slice()).map_err(storage)?;
                by_player
                    .insert((r.player.as_str(), r.at_ms, r.id), ())
                    .map_err(storage)?;
                by_time.insert((r.at_ms, r.id), ()).map_err(storage)?;
            }
            let len = t.len().map_err(storage)?;
            let excess = len.saturating_sub(self.max_records);
            for _ in 0..excess {
                let Some((id, raw)) = t.pop_first().map_err(storage)? else {
                    break;
                };
                let id = id.value();
                let old: ViolationRecord = postcard::from_bytes(raw.value())
                    .map_err(|source| EvidenceError::Corrupt { id, source })?;
                by_player
                    .remove((old.player.as_str(), old.at_ms, id))
                    .map_err(storage)?;
                by_time.remove((old.at_ms, id)).map_err(storage)?;
                dropped += 1;
            }
        }
        txn.commit().map_err(storage)?;
        self.next_id = next;
        Ok(dropped)
    }

    /// The most recent `q.limit` records matching `q`, oldest first.
    pub fn query(&self, q: &ViolationQuery) -> Result<Vec<ViolationRecord>, EvidenceError> {
        let limit = q.limit.clamp(1, MAX_QUERY);
        let txn = self.db.begin_read().map_err(storage)?;
        let t = txn.open_table(RECORDS).map_err(storage)?;
        let mut ids = Vec::new();
        match &q.player {
            Some(p) => {
                let idx = txn.open_table(BY_PLAYER).map_err(storage)?;
                let range = idx
                    .range((p.as_str(), q.since_ms, 0)..=(p.as_str(), u64::MAX, u64::MAX))
                    .map_err(storage)?;
                for e in range.rev().take(limit) {
                    ids.push(e.map_err(storage)?.0.value().2);
                }
            }
            None => {
                let idx = txn.open_table(BY_TIME).map_err(storage)?;
                let range = idx.range((q.since_ms, 0)..).map_err(storage)?;
                for e in range.rev().take(limit) {
                    ids.push(e.map_err(storage)?.0.value().1);
                }
            }
        }
        ids.reverse();
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(raw) = t.get(id).map_err(storage)? {
                out.push(
                    postcard::from_bytes(raw.value())
                        .map_err(|source| EvidenceError::Corrupt { id, source })?,
                );
            }
        }
        Ok(out)
    }

    /// How many records the store holds.
    pub fn len(&self) -> Result<u64, EvidenceError> {
        let txn = self.db.begin_read().map_err(storage)?;
        let t = txn.open_table(RECORDS).map_err(storage)?;
        t.len().map_err(storage)
    }

    /// Whether the store is empty.
    pub fn is_empty(&self) -> Result<bool, EvidenceError> {
        Ok(self.len()? == 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn rec(player: &str, at_ms: u64) -> ViolationRecord {
        ViolationRecord {
            id: 0,
            at_ms,
            world: 1,
            tick: at_ms / 33,
            player: player.into(),
            session: 7,
            source: Source::Origin,
            detector: "action_rate".into(),
            evidence: format!("{at_ms} actions/s (max 120)"),
            value: Some(at_ms as f64),
            threshold: Some(120.0),
            action: "kick".into(),
            relay: None,
        }
    }

    fn q(player: Option<&str>, since_ms: u64, limit: usize) -> ViolationQuery {
        ViolationQuery {
            player: player.map(str::to_owned),
            since_ms,
            limit,
        }
    }

    #[test]
    fn queries_by_player_and_time_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v.redb");
        let mut s = ViolationStore::open(&path, 100).unwrap();
        let mut batch = vec![rec("alice", 1000), rec("bob", 2000), rec("alice", 3000)];
        s.append(&mut batch).unwrap();
        assert_eq!(batch.iter().map(|r| r.id).collect::<Vec<_>>(), [1, 2, 3]);
        drop(s);
        let mut s = ViolationStore::open(&path, 100).unwrap();
        s.append(&mut [rec("alice", 4000)]).unwrap();
        let a = s.query(&q(Some("alice"), 0, 100)).unwrap();
        assert_eq!(
            a.iter().map(|r| (r.id, r.at_ms)).collect::<Vec<_>>(),
            [(1, 1000), (3, 3000), (4, 4000)],
            "ids go on after a reopen"
        );
        assert_eq!(s.query(&q(Some("alice"), 2500, 100)).unwrap().len(), 2);
        assert_eq!(s.query(&q(Some("alice"), 0, 1)).unwrap()[0].at_ms, 4000);
        assert_eq!(s.query(&q(None, 1500, 100)).unwrap().len(), 3);
        assert!(s.query(&q(Some("carol"), 0, 100)).unwrap().is_empty());
        assert!(s.query(&q(Some("alic"), 0, 100)).unwrap().is_empty());
    }

    #[test]
    fn the_oldest_go_past_the_bound_indexes_included() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = ViolationStore::open(&dir.path().join("v.redb"), 3).unwrap();
        let mut batch: Vec<_> = (0..5).map(|i| rec("p", i * 10)).collect();
        assert_eq!(s.append(&mut batch).unwrap(), 2);
        assert_eq!(s.len().unwrap(), 3);
        let all = s.query(&q(Some("p"), 0, 100)).unwrap();
        assert_eq!(
            all.iter().map(|r| r.at_ms).collect::<Vec<_>>(),
            [20, 30, 40]
        );
        assert_eq!(s.query(&q(None, 0, 100)).unwrap().len(), 3);
    }

    #[test]
    fn a_damaged_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v.redb");
        std::fs::write(&path, vec![0x5a; 64 * 1024]).unwrap();
        assert!(ViolationStore::open(&path, 10).is_err());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        /// Whatever is appended, a query returns exactly the matching records
        /// among the most recent `max` (a model: a vector).
        #[test]
        fn queries_match_a_model(
            ops in prop::collection::vec((0..3usize, 0..1000u64), 1..60),
            max in 1..40u64,
            who in 0..3usize,
            since in 0..1000u64,
        ) {
            let names = ["a", "b", "c"];
            let dir = tempfile::tempdir().unwrap();
            let mut s = ViolationStore::open(&dir.path().join("v.redb"), max).unwrap();
            let mut model: Vec<ViolationRecord> = Vec::new();
            for chunk in ops.chunks(7) {
                let mut batch: Vec<_> = chunk.iter().map(|(p, t)| rec(names[*p], *t)).collect();
                s.append(&mut batch).unwrap();
                model.extend(batch);
                let keep = model.len().saturating_sub(max as usize);
                model.drain(..keep);
            }
            let want: Vec<u64> = model
                .iter()
                .filter(|r| r.player == names[who] && r.at_ms >= since)
                .map(|r| (r.at_ms, r.id))
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .map(|(_, id)| id)
                .collect();
            let got: Vec<u64> = s
                .query(&q(Some(names[who]), since, 1000))
                .unwrap()
                .iter()
                .map(|r| r.id)
                .collect();
            prop_assert_eq!(got, want);
        }
    }
}
