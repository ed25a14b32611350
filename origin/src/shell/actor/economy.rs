//! The world's economy in its task: a returning player's wallet from the
//! ledger before its join (an `Endow` input, journaled and replicated), and
//! each released tick's transactions into the ledger.

use tracing::warn;

use super::Actor;
use crate::core::Core;
use crate::metrics::OriginMetrics;

impl Actor {
    /// `player` joins next: it brings its wallet, if the ledger has one.
    pub(super) fn endow(&mut self, player: &str) {
        // A zoned world's wallets travel with its avatars between origins;
        // this process's ledger cannot follow them (see `ledger`).
        if self.core.zone().is_some() {
            return;
        }
        match self.ledger.wallet(player) {
            Ok(Some(w)) => self.core.handle_endow(player, w),
            Ok(None) => {}
            Err(e) => {
                // A new player's grant then: counted, and the ledger refuses
                // the world's later transactions for this player if it does
                // hold a wallet (their before balances will not match).
                OriginMetrics::count(&self.metrics.ledger_errors, "read");
                warn!(%player, error = %e, "ledger: wallet unreadable; joining as a new player");
            }
        }
    }

    /// A released tick's transactions go into the ledger (one commit).
    pub(super) fn ledger(&mut self, tick: u64, txs: &[crate::ledger::LedgerTx]) {
        if let Some(tap) = self.analytics.get() {
            let (at_ms, world) = (self.clock.now_us() / 1000, self.core.world_id().0);
            for tx in txs {
                for row in crate::shell::analytics::economy_rows(at_ms, tap, world, tick, tx) {
                    tap.emitter.emit(row);
                }
            }
        }
        // A zone's transactions stay in the zoned world's state (journaled,
        // replicated, carried by handoffs): the process's ledger holds the
        // wallets of the worlds it runs whole, and a zone's players move to
        // other origins with theirs.
        if !self.ledger.attached() || self.core.zone().is_some() {
            return;
        }
        let at_ms = self.clock.now_us() / 1000;
        match self.ledger.commit(self.core.world_id().0, tick, at_ms, txs) {
            Ok((applied, totals)) => {
                self.metrics.ledger_transactions.inc_by(applied);
                let skipped = txs.len() as u64 - applied;
                if skipped > 0 {
                    OriginMetrics::count(&self.metrics.ledger_errors, "skipped");
                    warn!(world = %self.core.world_id(), tick, skipped, refused = totals.refused, duplicates = totals.duplicates, "ledger: transactions not applied (duplicates, or before balances that are not the ledger's)");
                }
                self.metrics.ledger_refused.set(totals.refused as i64);
                self.metrics
                    .ledger_conserved
                    .set(i64::from(totals.conserved()));
            }
            Err(e) => {
                OriginMetrics::count(&self.metrics.ledger_errors, "commit");
                warn!(world = %self.core.world_id(), tick, error = %e, "ledger: commit failed; the tick's transactions are not recorded");
            }
        }
    }
}
