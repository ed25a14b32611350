//! The rating book: every player's rating, kept in an embedded database
//! (redb) so it survives a matchmaker's restart, and updated from the results
//! of the worlds the matches placed (once per match, however often a result
//! is reported).

use std::path::{Path, PathBuf};

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use crate::ratings::{update, Rating};

const RATINGS: TableDefinition<&str, &[u8]> = TableDefinition::new("ratings");
const APPLIED: TableDefinition<u64, ()> = TableDefinition::new("applied_matches");

/// Why the book failed.
#[derive(Debug, thiserror::Error)]
pub enum BookError {
    /// The database failed.
    #[error("rating book: {0}")]
    Storage(#[from] redb::Error),
    /// A rating could not be decoded.
    #[error("rating of {0} is corrupt")]
    Corrupt(String),
    /// The file failed redb's integrity check.
    #[error("rating book {0} is damaged")]
    Damaged(PathBuf),
    /// A result does not fit its match (team and rank counts differ).
    #[error("{teams} teams but {ranks} ranks")]
    Shape {
        /// Teams in the match.
        teams: usize,
        /// Ranks given.
        ranks: usize,
    },
}

fn storage<E: Into<redb::Error>>(e: E) -> BookError {
    BookError::Storage(e.into())
}

/// The ranks of a match's teams from its world's result: the team with the
/// winner first (rank 1), the others second; no winner is a draw (all 1).
/// `teams` lists each team's players.
pub fn ranks_from_winner(teams: &[Vec<String>], winner: Option<&str>) -> Vec<usize> {
    let winning = winner.and_then(|w| teams.iter().position(|t| t.iter().any(|p| p == w)));
    (0..teams.len())
        .map(|i| match winning {
            Some(w) if w != i => 2,
            _ => 1,
        })
        .collect()
}

/// The rating book.
#[derive(Debug)]
pub struct RatingBook {
    db: Database,
}

impl RatingBook {
    /// Opens `path`, creating it if missing; a damaged file is refused.
    pub fn open(path: &Path) -> Result<Self, BookError> {
        let damaged = || BookError::Damaged(path.to_owned());
        let open = || -> Result<Self, BookError> {
            let existed = path.exists();
            let mut db = Database::create(path).map_err(|e| match e {
                redb::DatabaseError::Storage(redb::StorageError::Corrupted(_)) => damaged(),
                e => storage(e),
            })?;
            if existed && !db.check_integrity().map_err(|_| damaged())? {
                return Err(damaged());
            }
            let txn = db.begin_write().map_err(storage)?;
            txn.open_table(RATINGS).map_err(storage)?;
            txn.open_table(APPLIED).map_err(storage)?;
            txn.commit().map_err(storage)?;
            Ok(Self { db })
        };
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(open))
            .unwrap_or_else(|_| Err(damaged()))
    }

    /// `player`'s rating (a new player's when unknown).
    pub fn rating(&self, player: &str) -> Result<Rating, BookError> {
        let txn = self.db.begin_read().map_err(storage)?;
        let t = txn.open_table(RATINGS).map_err(storage)?;
        match t.get(player).map_err(storage)? {
            Some(raw) => {
                postcard::from_bytes(raw.value()).map_err(|_| BookError::Corrupt(player.to_owned()))
            }
            None => Ok(Rating::default()),
        }
    }

    /// Updates the ratings of match `id`'s players from its result (`ranks`
    /// per team, 1 first, equal ranks a draw), in one transaction; `false`
    /// when this match was applied already.
    pub fn apply(
        &self,
        id: u64,
        teams: &[Vec<String>],
        ranks: &[usize],
    ) -> Result<bool, BookError> {
        if teams.len() != ranks.len() || teams.len() < 2 {
            return Err(BookError::Shape {
                teams: teams.len(),
                ranks: ranks.len(),
            });
        }
        let before: Vec<Vec<Rating>> = teams
            .iter()
            .map(|t| t.iter().map(|p| self.rating(p)).collect())
            .collect::<Result<_, _>>()?;
        let after = update(&before, ranks);
        let txn = self.db.begin_write().map_err(storage)?;
        {
            let mut applied = txn.open_table(APPLIED).map_err(storage)?;
            if applied.get(id).map_err(storage)?.is_some() {
                return Ok(false);
            }
            applied.insert(id, ()).map_err(storage)?;
            let mut t = txn.open_table(RATINGS).map_err(storage)?;
            for (players, ratings) in teams.iter().zip(after) {
                for (p, r) in players.iter().zip(ratings) {
                    let bytes = postcard::to_stdvec(&r).unwrap_or_default();
                    t.insert(p.as_str(), bytes.as_slice()).map_err(storage)?;
                }
            }
        }
        txn.commit().map_err(storage)?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn teams() -> Vec<Vec<String>> {
        vec![
            vec!["ann".into(), "bob".into()],
            vec!["cid".into(), "dee".into()],
        ]
    }

    #[test]
    fn results_update_ratings_once_and_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ratings.redb");
        let book = RatingBook::open(&path).unwrap();
        let new = Rating::default();
        assert_eq!(book.rating("ann").unwrap(), new);
        let ranks = ranks_from_winner(&teams(), Some("dee"));
        assert_eq!(ranks, vec![2, 1]);
        assert!(book.apply(7, &teams(), &ranks).unwrap());
        assert!(!book.apply(7, &teams(), &ranks).unwrap(), "once");
        let (ann, dee) = (book.rating("ann").unwrap(), book.rating("dee").unwrap());
        assert!(ann.mu < new.mu && dee.mu > new.mu);
        drop(book);
        let book = RatingBook::open(&path).unwrap();
        assert_eq!(book.rating("dee").unwrap(), dee);
    }

    #[test]
    fn draws_and_bad_shapes() {
        assert_eq!(ranks_from_winner(&teams(), None), vec![1, 1]);
        assert_eq!(ranks_from_winner(&teams(), Some("nobody")), vec![1, 1]);
        let dir = tempfile::tempdir().unwrap();
        let book = RatingBook::open(&dir.path().join("r.redb")).unwrap();
        assert!(matches!(
            book.apply(1, &teams(), &[1]),
            Err(BookError::Shape { teams: 2, ranks: 1 })
        ));
        let path = dir.path().join("bad.redb");
        std::fs::write(&path, vec![0x42; 32 * 1024]).unwrap();
        assert!(RatingBook::open(&path).is_err());
    }
}
