//! Opening the embedded databases an origin owns besides its journals (the
//! violation store, the ledger): created when missing, checked with redb's
//! integrity check when not, and a panic of redb's on a malformed file (redb
//! 4.5 still has a few, see `journal.rs`) contained and reported as damage.

use std::path::Path;

use redb::Database;

/// Opens (or creates) `path` and hands the database to `then`; `damaged` is
/// the error of a file that failed its check (or made redb panic), `storage`
/// that of any other failure.
pub(crate) fn open_checked<T, E>(
    path: &Path,
    damaged: impl Fn() -> E,
    storage: impl Fn(redb::Error) -> E,
    then: impl FnOnce(Database) -> Result<T, E>,
) -> Result<T, E> {
    let run = || {
        let existed = path.exists();
        let mut db = Database::create(path).map_err(|e| match e {
            redb::DatabaseError::Storage(redb::StorageError::Corrupted(_)) => damaged(),
            e => storage(e.into()),
        })?;
        if existed {
            match db.check_integrity() {
                Ok(true) => {}
                Ok(false) | Err(redb::DatabaseError::Storage(redb::StorageError::Corrupted(_))) => {
                    return Err(damaged())
                }
                Err(e) => return Err(storage(e.into())),
            }
        }
        then(db)
    };
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(run)).unwrap_or_else(|_| Err(damaged()))
}
