//! [`Persistent`]: an engine that writes every input to its journal and restarts
//! from it.
//!
//! Inputs are buffered and written in one transaction per tick; a snapshot is
//! written every `snapshot_every` ticks. [`Persistent::open`] restarts a world from
//! its latest snapshot plus the inputs logged after it, with the same state hash it
//! had when it stopped. [`Persistent::flush`] writes what is buffered (graceful
//! shutdown calls it).

use std::path::Path;

use serde::de::DeserializeOwned;
use serde::Serialize;
use skylane_proto::{Action, ChainSigner, EntityId, Role, SessionId, TeamId};

use crate::engine::{Engine, JoinError, Output};
use crate::journal::{apply_input, Input, Journal, JournalError, JournalMeta};
use crate::world::World;

/// Persistence settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PersistConfig {
    /// Ticks between snapshots. Defaults to 300 (10 s at 30 Hz).
    pub snapshot_every: u64,
    /// Ticks between recorded state hashes (1 = every tick). Defaults to 1.
    pub hash_every: u64,
}

impl Default for PersistConfig {
    fn default() -> Self {
        Self {
            snapshot_every: 300,
            hash_every: 1,
        }
    }
}

/// An engine with a journal.
#[derive(Debug)]
pub struct Persistent<W: World> {
    engine: Engine<W>,
    journal: Journal,
    pending: Vec<Input>,
    cfg: PersistConfig,
}

impl<W> Persistent<W>
where
    W: World + Clone + Serialize + DeserializeOwned,
{
    /// Starts a new journal at `path` for `engine` (a fresh world), writing its
    /// initial snapshot.
    pub fn create(
        path: &Path,
        meta: &JournalMeta,
        engine: Engine<W>,
        cfg: PersistConfig,
    ) -> Result<Self, JournalError> {
        let mut journal = Journal::create(path, meta)?;
        journal.save_snapshot(&engine.snapshot(), engine.state_hash())?;
        Ok(Self {
            engine,
            journal,
            pending: Vec::new(),
            cfg,
        })
    }

    /// Restarts the world recorded at `path`: latest snapshot, then the inputs after
    /// it, checking the snapshot's hash and every replayed tick's recorded hash.
    /// Outputs of the catch-up are discarded (they were sent before the stop). A
    /// journal whose replay diverges is refused ([`JournalError::Diverged`]); see
    /// [`Persistent::open_recovering`].
    pub fn open(
        path: &Path,
        kind: &str,
        signer: ChainSigner,
        cfg: PersistConfig,
    ) -> Result<Self, JournalError> {
        Self::open_with(path, kind, signer, cfg, false)
    }

    /// Like [`Persistent::open`], but a divergence restarts the world from the
    /// last tick whose hash matched and deletes the journal's inputs after it
    /// (they cannot be trusted). The operator's explicit choice.
    pub fn open_recovering(
        path: &Path,
        kind: &str,
        signer: ChainSigner,
        cfg: PersistConfig,
    ) -> Result<Self, JournalError> {
        Self::open_with(path, kind, signer, cfg, true)
    }

    fn open_with(
        path: &Path,
        kind: &str,
        signer: ChainSigner,
        cfg: PersistConfig,
        recover: bool,
    ) -> Result<Self, JournalError> {
        let (mut journal, meta) = Journal::open(path)?;
        if meta.world_kind != kind {
            return Err(JournalError::WrongWorld {
                expected: kind.to_owned(),
                found: meta.world_kind,
            });
        }
        let (snap, snap_hash, from) = journal
            .latest_snapshot::<W>()?
            .ok_or(JournalError::NoSnapshot)?;
        let snap_tick = snap.tick;
        let restore = |snap| Engine::restore(snap, meta.grid, meta.engine, signer.same_key());
        let mut engine = restore(snap);
        if engine.state_hash() != snap_hash {
            return Err(JournalError::Diverged {
                tick: snap_tick,
                expected: snap_hash.to_string(),
                found: engine.state_hash().to_string(),
            });
        }
        let inputs = journal.inputs(from)?;
        // Index (into the journal) after the last input known consistent.
        let mut consistent_until = from;
        let mut diverged = None;
        for (index, input) in &inputs {
            apply_input(&mut engine, input);
            if let Input::Tick {
                tick,
                hash: Some(h),
                ..
            } = input
            {
                if engine.state_hash() != *h {
                    diverged = Some((*tick, *h, engine.state_hash()));
                    break;
                }
                consistent_until = index + 1;
            }
        }
        if let Some((tick, expected, found)) = diverged {
            if !recover {
                return Err(JournalError::Diverged {
                    tick,
                    expected: expected.to_string(),
                    found: found.to_string(),
                });
            }
            let (snap, _, _) = journal
                .latest_snapshot::<W>()?
                .ok_or(JournalError::NoSnapshot)?;
            engine = restore(snap);
            for (_, input) in inputs.iter().take_while(|(i, _)| *i < consistent_until) {
                apply_input(&mut engine, input);
            }
            journal.truncate_inputs(consistent_until)?;
            tracing::warn!(
                diverged_at = tick,
                restarted_at = engine.tick(),
                "journal diverged: the world restarts from its last consistent tick"
            );
        }
        Ok(Self {
            engine,
            journal,
            pending: Vec::new(),
            cfg,
        })
    }

    /// See [`Engine::handle_end`] (journaled, so a restart or a standby ends
    /// the game at the same point).
    pub fn handle_end(&mut self, reason: &str) {
        self.pending.push(Input::End {
            reason: reason.to_owned(),
        });
        self.engine.handle_end(reason);
    }

    /// The engine (read-only; inputs must go through this wrapper to be recorded).
    pub fn engine(&self) -> &Engine<W> {
        &self.engine
    }

    /// See [`Engine::handle_join`].
    pub fn handle_join(
        &mut self,
        session: SessionId,
        player: &str,
        role: Role,
        team: Option<TeamId>,
    ) -> Result<Option<EntityId>, JoinError> {
        self.pending.push(Input::Join {
            session,
            player: player.to_owned(),
            role,
            team,
        });
        self.engine.handle_join(session, player, role, team)
    }

    /// See [`Engine::set_feed`] (output only: not journaled, a restarted origin
    /// starts without the feed until relays ask again).
    pub fn set_feed(&mut self, on: bool, now_us: u64) {
        self.engine.set_feed(on, now_us);
    }

    /// See [`Engine::handle_endow`] (journaled).
    pub fn handle_endow(&mut self, player: &str, wallet: crate::ledger::Wallet) {
        self.pending.push(Input::Endow {
            player: player.to_owned(),
            coins: wallet.coins,
            items: wallet.items,
        });
        self.engine.handle_endow(player, wallet);
    }

    /// See [`Engine::handle_zone`]; the record is written at once (a
    /// handoff's next step may only happen once it is durable).
    pub fn handle_zone(
        &mut self,
        rec: &skylane_proto::zones::ZoneRecord,
    ) -> Result<(), JournalError> {
        self.pending.push(Input::Zone(rec.clone()));
        self.engine.handle_zone(rec);
        self.flush()
    }

    /// A neighbour's border mirrors: presentation only, never journaled
    /// (see [`Engine::handle_mirrors`]).
    pub fn handle_mirrors(
        &mut self,
        msg: &skylane_proto::zones::ZoneMsg,
        now_us: u64,
    ) -> Result<(), crate::zone::MirrorError> {
        self.engine.handle_mirrors(msg, now_us)
    }

    /// Another zone's part of the spectator feed: presentation only, never
    /// journaled (see [`Engine::handle_feed_part`]).
    pub fn handle_feed_part(&mut self, msg: &skylane_proto::zones::ZoneMsg) {
        self.engine.handle_feed_part(msg);
    }

    /// See [`Engine::handle_leave`].
    pub fn handle_leave(&mut self, session: SessionId) {
        self.pending.push(Input::Leave { session });
        self.engine.handle_leave(session);
    }

    /// See [`Engine::handle_action`].
    pub fn handle_action(&mut self, session: SessionId, action: Action) {
        self.pending.push(Input::Action {
            session,
            action: action.clone(),
        });
        self.engine.handle_action(session, action);
    }

    /// Runs every tick due at `now_us`, writing each tick's inputs in one transaction.
    pub fn handle_timeout(&mut self, now_us: u64) -> Result<(), JournalError> {
        while now_us >= self.engine.poll_timeout() {
            let at = self.engine.poll_timeout();
            self.run_tick_at(at)?;
        }
        Ok(())
    }

    /// Runs exactly the next tick at `at_us` (a standby re-executing its
    /// primary's log), writing its inputs in one transaction.
    pub fn run_tick_at(&mut self, at: u64) -> Result<(), JournalError> {
        self.engine.run_tick_at(at);
        let tick = self.engine.tick();
        let hash = (self.cfg.hash_every > 0 && tick % self.cfg.hash_every == 0)
            .then(|| self.engine.state_hash());
        self.pending.push(Input::Tick {
            tick,
            at_us: at,
            hash,
        });
        self.flush()?;
        if self.cfg.snapshot_every > 0 && tick % self.cfg.snapshot_every == 0 {
            self.journal
                .save_snapshot(&self.engine.snapshot(), self.engine.state_hash())?;
        }
        Ok(())
    }

    /// See [`Engine::rebase`].
    pub fn rebase(&mut self, now_us: u64) {
        self.engine.rebase(now_us);
    }

    /// When the next tick is due.
    pub fn poll_timeout(&self) -> u64 {
        self.engine.poll_timeout()
    }

    /// The next output.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.engine.poll_output()
    }

    /// Writes buffered inputs.
    pub fn flush(&mut self) -> Result<(), JournalError> {
        self.journal.append(&self.pending)?;
        self.pending.clear();
        Ok(())
    }

    /// The journal.
    pub fn journal(&self) -> &Journal {
        &self.journal
    }

    /// The journal, mutably (repair tools and tests).
    pub fn journal_mut(&mut self) -> &mut Journal {
        &mut self.journal
    }
}
