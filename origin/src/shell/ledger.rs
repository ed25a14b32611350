//! The economy ledger's shell: one per process, shared by its worlds. A
//! world's task reads a returning player's wallet as it joins and commits each
//! tick's transactions once the tick is released (durable on the standbys),
//! one database transaction per tick; the admin endpoint reads totals and
//! history off the async threads.

use std::sync::{Arc, Mutex, OnceLock};

use crate::ledger::{Ledger, LedgerError, LedgerTx, Totals, TxRecord, Wallet};

/// The process's ledger, once attached.
#[derive(Default)]
pub(crate) struct Ledgers {
    ledger: OnceLock<Arc<Mutex<Ledger>>>,
}

impl Ledgers {
    pub(crate) fn attach(&self, ledger: Ledger) {
        let _ = self.ledger.set(Arc::new(Mutex::new(ledger)));
    }

    fn lock(&self) -> Option<std::sync::MutexGuard<'_, Ledger>> {
        let l = self.ledger.get()?;
        Some(l.lock().unwrap_or_else(std::sync::PoisonError::into_inner))
    }

    /// Whether a ledger is attached.
    pub(crate) fn attached(&self) -> bool {
        self.ledger.get().is_some()
    }

    /// `player`'s wallet (`Ok(None)`: a new player, or no ledger).
    pub(crate) fn wallet(&self, player: &str) -> Result<Option<Wallet>, LedgerError> {
        match self.lock() {
            Some(l) => l.wallet(player),
            None => Ok(None),
        }
    }

    /// Commits a tick's transactions; how many were applied (0 without a ledger).
    pub(crate) fn commit(
        &self,
        world: u64,
        tick: u64,
        at_ms: u64,
        txs: &[LedgerTx],
    ) -> Result<(u64, Totals), LedgerError> {
        match self.lock() {
            Some(mut l) => {
                let n = l.commit(world, tick, at_ms, txs)?;
                Ok((n, l.totals()))
            }
            None => Ok((0, Totals::default())),
        }
    }

    pub(crate) fn totals(&self) -> Option<Totals> {
        self.lock().map(|l| l.totals())
    }

    pub(crate) async fn history(
        &self,
        player: Option<String>,
        limit: usize,
    ) -> Option<Result<(Option<Wallet>, Vec<TxRecord>), LedgerError>> {
        let l = self.ledger.get()?.clone();
        let read = tokio::task::spawn_blocking(move || {
            let l = l.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let wallet = match &player {
                Some(p) => l.wallet(p)?,
                None => None,
            };
            Ok((wallet, l.history(player.as_deref(), limit)?))
        })
        .await;
        Some(read.unwrap_or_else(|e| {
            Err(LedgerError::Storage(redb::Error::Io(
                std::io::Error::other(e.to_string()),
            )))
        }))
    }
}
