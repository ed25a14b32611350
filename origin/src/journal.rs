//! Persistence: an append-only log of engine inputs and periodic snapshots, in redb.
//!
//! The log records exactly what the engine was fed (joins, leaves, actions in
//! arrival order, and each tick with its time and state hash), so re-feeding it
//! reproduces the world bit for bit. Snapshots (the whole [`EngineSnapshot`]) bound
//! restart time: a restart loads the latest snapshot and replays the inputs after
//! it. [`replay`] re-executes a whole log from its first snapshot, checks the state
//! hash tick by tick, and names the first divergent tick and the entities that
//! differ.
//!
//! One redb write transaction per tick holds that tick's inputs, so a crash loses at
//! most the tick in progress.

use std::path::Path;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use skylane_proto::{ChainSigner, EntityId, Hash32, SessionId, WorldId};

use crate::engine::{Engine, EngineConfig, EngineSnapshot};
use crate::interest::Grid;
use crate::world::World;

const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const INPUTS: TableDefinition<u64, &[u8]> = TableDefinition::new("inputs");
const SNAPSHOTS: TableDefinition<u64, &[u8]> = TableDefinition::new("snapshots");

/// Why the journal could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// The database failed.
    #[error("journal storage: {0}")]
    Storage(#[from] redb::Error),
    /// A record could not be decoded.
    #[error("journal record {what} is corrupt: {source}")]
    Corrupt {
        /// Which record.
        what: String,
        /// Decoder error.
        source: postcard::Error,
    },
    /// The journal holds no snapshot to start from.
    #[error("journal has no snapshot")]
    NoSnapshot,
    /// Re-executing the journal gave another state than it recorded: the world
    /// is not served from it (`journal_recover` restarts from the last tick
    /// that matched).
    #[error(
        "journal diverges at tick {tick}: recorded state hash {expected}, re-executed {found}"
    )]
    Diverged {
        /// The first tick (or snapshot) whose hash differs.
        tick: u64,
        /// The hash the journal recorded.
        expected: String,
        /// The hash re-execution gave.
        found: String,
    },
    /// The file failed redb's integrity check (checksums, tree structure).
    /// `repaired`: redb rolled it back to its last intact commit; opening it
    /// again uses what remains (inputs after that commit are gone).
    #[error("journal {path} is damaged{}", if *repaired { " (repaired to its last intact commit: open it again to use what remains)" } else { " beyond repair" })]
    Damaged {
        /// The file.
        path: std::path::PathBuf,
        /// Whether redb could repair it.
        repaired: bool,
    },
    /// The journal is for another kind of world.
    #[error("journal is for world kind {found:?}, not {expected:?}")]
    WrongWorld {
        /// Kind expected by the caller.
        expected: String,
        /// Kind recorded.
        found: String,
    },
}

fn storage<E: Into<redb::Error>>(e: E) -> JournalError {
    JournalError::Storage(e.into())
}

fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    // Serializing plain data into a Vec cannot fail.
    postcard::to_stdvec(v).unwrap_or_default()
}

fn decode<T: DeserializeOwned>(what: impl Into<String>, bytes: &[u8]) -> Result<T, JournalError> {
    postcard::from_bytes(bytes).map_err(|source| JournalError::Corrupt {
        what: what.into(),
        source,
    })
}

/// What the journal says about its world.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JournalMeta {
    /// Kind of world (`arena`): which `World` type reads it.
    pub world_kind: String,
    /// World id.
    pub world: WorldId,
    /// Engine settings.
    pub engine: EngineConfig,
    /// Interest grid.
    pub grid: Grid,
}

/// One engine input (the journal's records are the replication log's entries).
pub use skylane_proto::Input;

/// A stored snapshot.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct SnapshotRecord {
    /// Index of the first input after the snapshot.
    next_input: u64,
    hash: Hash32,
    engine: Vec<u8>,
}

/// The log and snapshots of one world.
pub struct Journal {
    db: Database,
    next_input: u64,
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal")
            .field("next_input", &self.next_input)
            .finish_non_exhaustive()
    }
}

impl Journal {
    /// Creates a journal at `path` (replacing nothing: the file must not hold one).
    pub fn create(path: &Path, meta: &JournalMeta) -> Result<Self, JournalError> {
        let db = Database::create(path).map_err(storage)?;
        let txn = db.begin_write().map_err(storage)?;
        {
            let mut t = txn.open_table(META).map_err(storage)?;
            t.insert("meta", encode(meta).as_slice()).map_err(storage)?;
            txn.open_table(INPUTS).map_err(storage)?;
            txn.open_table(SNAPSHOTS).map_err(storage)?;
        }
        txn.commit().map_err(storage)?;
        Ok(Self { db, next_input: 0 })
    }

    /// Opens an existing journal.
    pub fn open(path: &Path) -> Result<(Self, JournalMeta), JournalError> {
        // redb 4.5 still panics on a few malformed files inside `Database::open`
        // and its own integrity check ("Malformed allocator state", a slice
        // index out of range: 4 of 300 one-byte flips in the sweep test). A
        // damaged file is an input error, never a crash: the panic is contained
        // here and reported as damage.
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| Self::open_checked(path)))
            .unwrap_or_else(|_| {
                Err(JournalError::Damaged {
                    path: path.to_owned(),
                    repaired: false,
                })
            })
    }

    fn open_checked(path: &Path) -> Result<(Self, JournalMeta), JournalError> {
        // Checked before any read: redb's reads trust the pages they follow, and
        // one flipped byte made them panic (41 of 600 damaged copies).
        let damaged = |repaired| JournalError::Damaged {
            path: path.to_owned(),
            repaired,
        };
        let mut db = Database::open(path).map_err(|e| match e {
            redb::DatabaseError::Storage(redb::StorageError::Corrupted(_)) => damaged(false),
            e => storage(e),
        })?;
        match db.check_integrity() {
            Ok(true) => {}
            Ok(false) => return Err(damaged(true)),
            Err(redb::DatabaseError::Storage(redb::StorageError::Corrupted(_))) => {
                return Err(damaged(false))
            }
            Err(e) => return Err(storage(e)),
        }
        let (meta, next_input) = {
            let txn = db.begin_read().map_err(storage)?;
            let t = txn.open_table(META).map_err(storage)?;
            let raw = t
                .get("meta")
                .map_err(storage)?
                .ok_or(JournalError::NoSnapshot)?;
            let meta: JournalMeta = decode("meta", raw.value())?;
            let inputs = txn.open_table(INPUTS).map_err(storage)?;
            let next = inputs
                .last()
                .map_err(storage)?
                .map_or(0, |(k, _)| k.value() + 1);
            (meta, next)
        };
        Ok((Self { db, next_input }, meta))
    }

    /// Appends inputs in one transaction.
    pub fn append(&mut self, inputs: &[Input]) -> Result<(), JournalError> {
        if inputs.is_empty() {
            return Ok(());
        }
        let txn = self.db.begin_write().map_err(storage)?;
        {
            let mut t = txn.open_table(INPUTS).map_err(storage)?;
            for (i, input) in inputs.iter().enumerate() {
                t.insert(self.next_input + i as u64, encode(input).as_slice())
                    .map_err(storage)?;
            }
        }
        txn.commit().map_err(storage)?;
        self.next_input += inputs.len() as u64;
        Ok(())
    }

    /// Stores a snapshot taken after every input appended so far.
    pub fn save_snapshot<W: Serialize>(
        &mut self,
        snap: &EngineSnapshot<W>,
        hash: Hash32,
    ) -> Result<(), JournalError> {
        let rec = SnapshotRecord {
            next_input: self.next_input,
            hash,
            engine: encode(snap),
        };
        let txn = self.db.begin_write().map_err(storage)?;
        {
            let mut t = txn.open_table(SNAPSHOTS).map_err(storage)?;
            t.insert(snap.tick, encode(&rec).as_slice())
                .map_err(storage)?;
        }
        txn.commit().map_err(storage)?;
        Ok(())
    }

    fn snapshot_at<W: DeserializeOwned>(
        &self,
        which: impl FnOnce(
            &redb::ReadOnlyTable<u64, &[u8]>,
        ) -> Result<Option<(u64, Vec<u8>)>, redb::StorageError>,
    ) -> Result<Option<(EngineSnapshot<W>, Hash32, u64)>, JournalError> {
        let txn = self.db.begin_read().map_err(storage)?;
        let t = txn.open_table(SNAPSHOTS).map_err(storage)?;
        let Some((tick, raw)) = which(&t).map_err(storage)? else {
            return Ok(None);
        };
        let rec: SnapshotRecord = decode(format!("snapshot {tick}"), &raw)?;
        let snap = decode(format!("snapshot {tick}"), &rec.engine)?;
        Ok(Some((snap, rec.hash, rec.next_input)))
    }

    /// The latest snapshot, its hash and the index of the first input after it.
    pub fn latest_snapshot<W: DeserializeOwned>(
        &self,
    ) -> Result<Option<(EngineSnapshot<W>, Hash32, u64)>, JournalError> {
        self.snapshot_at(|t| Ok(t.last()?.map(|(k, v)| (k.value(), v.value().to_vec()))))
    }

    /// The first snapshot (the world as created).
    pub fn first_snapshot<W: DeserializeOwned>(
        &self,
    ) -> Result<Option<(EngineSnapshot<W>, Hash32, u64)>, JournalError> {
        self.snapshot_at(|t| Ok(t.first()?.map(|(k, v)| (k.value(), v.value().to_vec()))))
    }

    /// The snapshot taken at `tick`, if any.
    pub fn snapshot_for_tick<W: DeserializeOwned>(
        &self,
        tick: u64,
    ) -> Result<Option<EngineSnapshot<W>>, JournalError> {
        Ok(self
            .snapshot_at(|t| Ok(t.get(tick)?.map(|v| (tick, v.value().to_vec()))))?
            .map(|(s, _, _)| s))
    }

    /// Ticks that have a snapshot.
    pub fn snapshot_ticks(&self) -> Result<Vec<u64>, JournalError> {
        let txn = self.db.begin_read().map_err(storage)?;
        let t = txn.open_table(SNAPSHOTS).map_err(storage)?;
        let mut out = Vec::new();
        for row in t.iter().map_err(storage)? {
            out.push(row.map_err(storage)?.0.value());
        }
        Ok(out)
    }

    /// Inputs from index `from` on, in order.
    pub fn inputs(&self, from: u64) -> Result<Vec<(u64, Input)>, JournalError> {
        let txn = self.db.begin_read().map_err(storage)?;
        let t = txn.open_table(INPUTS).map_err(storage)?;
        let mut out = Vec::new();
        for row in t.range(from..).map_err(storage)? {
            let (k, v) = row.map_err(storage)?;
            out.push((
                k.value(),
                decode(format!("input {}", k.value()), v.value())?,
            ));
        }
        Ok(out)
    }

    /// Deletes the inputs from index `from` on (a restart from the last
    /// consistent tick drops what follows it); later inputs are appended there.
    pub fn truncate_inputs(&mut self, from: u64) -> Result<(), JournalError> {
        let txn = self.db.begin_write().map_err(storage)?;
        {
            let mut t = txn.open_table(INPUTS).map_err(storage)?;
            t.retain_in(from.., |_, _| false).map_err(storage)?;
        }
        txn.commit().map_err(storage)?;
        self.next_input = from;
        Ok(())
    }

    /// Replaces one input (for tests of tamper detection and for repair tools).
    pub fn overwrite_input(&mut self, index: u64, input: &Input) -> Result<(), JournalError> {
        let txn = self.db.begin_write().map_err(storage)?;
        {
            let mut t = txn.open_table(INPUTS).map_err(storage)?;
            t.insert(index, encode(input).as_slice()).map_err(storage)?;
        }
        txn.commit().map_err(storage)?;
        Ok(())
    }
}

/// Feeds one logged input to an engine.
pub fn apply_input<W: World>(engine: &mut Engine<W>, input: &Input) {
    match input {
        Input::Join {
            session,
            player,
            role,
            team,
        } => {
            // A join refused when recorded is refused again: same outcome.
            let _ = engine.handle_join(*session, player, *role, *team);
        }
        Input::Leave { session } => engine.handle_leave(*session),
        Input::Action { session, action } => engine.handle_action(*session, action.clone()),
        Input::End { reason } => engine.handle_end(reason),
        Input::Endow {
            player,
            coins,
            items,
        } => engine.handle_endow(
            player,
            crate::ledger::Wallet {
                coins: *coins,
                items: *items,
            },
        ),
        Input::Tick { at_us, .. } => engine.run_tick_at(*at_us),
        Input::Zone(rec) => engine.handle_zone(rec),
    }
    while engine.poll_output().is_some() {}
}

/// The engine restored from `journal`'s first snapshot, and the first input
/// after it.
fn from_first_snapshot<W>(
    journal: &Journal,
    meta: &JournalMeta,
) -> Result<(Engine<W>, u64), JournalError>
where
    W: World + Clone + Serialize + DeserializeOwned,
{
    let (snap, _, from) = journal
        .first_snapshot::<W>()?
        .ok_or(JournalError::NoSnapshot)?;
    // Batches are not compared, so any key will do for signing during a replay.
    let engine = Engine::restore(
        snap,
        meta.grid,
        meta.engine,
        ChainSigner::from_bytes(&[0; 32]),
    );
    Ok((engine, from))
}

/// The world as it was at one tick of a journal, with what went into that
/// tick: where a violation's tick (`skylane violations`) leads an operator.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Situation {
    /// The tick.
    pub tick: u64,
    /// When it ran, microseconds since the Unix epoch.
    pub at_us: u64,
    /// The inputs applied during it (after the previous tick ran), each with
    /// the player its session belongs to.
    pub inputs: Vec<(Option<String>, Input)>,
    /// The world's state after it (the game's own serialisation).
    pub state: serde_json::Value,
}

/// Re-executes `journal` up to `tick` and returns the situation there
/// (`None` when the journal does not reach it, or starts after it).
pub fn situation<W>(
    journal: &Journal,
    meta: &JournalMeta,
    tick: u64,
) -> Result<Option<Situation>, JournalError>
where
    W: World + Clone + Serialize + DeserializeOwned,
{
    let (mut engine, from) = from_first_snapshot::<W>(journal, meta)?;
    if engine.tick() >= tick {
        return Ok(None);
    }
    let mut players: std::collections::HashMap<SessionId, String> = Default::default();
    let mut during = Vec::new();
    for (_, input) in journal.inputs(from)? {
        match &input {
            Input::Join {
                session, player, ..
            } => {
                players.insert(*session, player.clone());
            }
            Input::Tick { tick: t, at_us, .. } => {
                apply_input(&mut engine, &input);
                if *t == tick {
                    return Ok(Some(Situation {
                        tick,
                        at_us: *at_us,
                        inputs: during,
                        state: serde_json::to_value(engine.world()).unwrap_or_default(),
                    }));
                }
                during.clear();
                continue;
            }
            _ => {}
        }
        let who = match &input {
            Input::Join { session, .. }
            | Input::Leave { session }
            | Input::Action { session, .. } => players.get(session).cloned(),
            _ => None,
        };
        apply_input(&mut engine, &input);
        // Bounded: what went into one tick (at most the tick's queue).
        if during.len() < 100_000 {
            during.push((who, input));
        }
    }
    Ok(None)
}

/// The first tick whose state hash differs from the log.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Divergence {
    /// First tick whose hash differs.
    pub tick: u64,
    /// Hash recorded in the log.
    pub expected: Hash32,
    /// Hash the replay produced.
    pub found: Hash32,
    /// Tick of the snapshot the replayed world was compared with, entity by entity.
    pub compared_at: Option<u64>,
    /// Entities that differ at `compared_at`.
    pub entities: Vec<EntityId>,
}

/// What a replay found.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReplayReport {
    /// Kind of world.
    pub world_kind: String,
    /// Inputs re-executed.
    pub inputs: u64,
    /// Ticks re-executed.
    pub ticks: u64,
    /// Ticks whose hash was checked.
    pub checked: u64,
    /// Final state hash.
    pub final_hash: Hash32,
    /// The first divergence, if any.
    pub divergence: Option<Divergence>,
}

/// Re-executes the whole log of `journal` from its first snapshot, checking every
/// recorded state hash.
pub fn replay<W>(journal: &Journal, meta: &JournalMeta) -> Result<ReplayReport, JournalError>
where
    W: World + Clone + Serialize + DeserializeOwned,
{
    let (mut engine, from) = from_first_snapshot::<W>(journal, meta)?;
    let inputs = journal.inputs(from)?;
    let snapshot_ticks = journal.snapshot_ticks()?;
    let mut report = ReplayReport {
        world_kind: meta.world_kind.clone(),
        inputs: inputs.len() as u64,
        ticks: 0,
        checked: 0,
        final_hash: Hash32::default(),
        divergence: None,
    };
    for (_, input) in &inputs {
        apply_input(&mut engine, input);
        let Input::Tick { tick, hash, .. } = input else {
            continue;
        };
        report.ticks += 1;
        if let Some(expected) = hash {
            let found = engine.state_hash();
            report.checked += 1;
            if found != *expected && report.divergence.is_none() {
                report.divergence = Some(Divergence {
                    tick: *tick,
                    expected: *expected,
                    found,
                    compared_at: None,
                    entities: Vec::new(),
                });
            }
        }
        // Name the entities at the first snapshot at or after the divergence.
        if let Some(d) = report
            .divergence
            .as_mut()
            .filter(|d| d.compared_at.is_none())
        {
            if snapshot_ticks.contains(tick) {
                if let Some(recorded) = journal.snapshot_for_tick::<W>(*tick)? {
                    d.compared_at = Some(*tick);
                    d.entities = engine.world().diff(&recorded.world);
                }
            }
        }
    }
    report.final_hash = engine.state_hash();
    Ok(report)
}
