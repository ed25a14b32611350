//! The economy ledger: every player's wallet (coins and items held) across
//! sessions and worlds, and every transaction with its before and after
//! balances, in an embedded database (redb) owned by the origin.
//!
//! Worlds report what their economy did as [`LedgerTx`]s (a grant to a new
//! player, a pick-up from the ground, a trade between two players); the origin
//! commits each tick's in one database transaction, once the tick is durable.
//! A player joining a world later starts with the wallet the ledger holds
//! (`Input::Endow`, journaled and replicated like any input). The ledger keeps
//! running totals, so conservation is checked in constant time: coins and
//! items held in wallets equal what was minted (granted, picked up), whatever
//! the trades.

use std::path::{Path, PathBuf};

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

const WALLETS: TableDefinition<&str, &[u8]> = TableDefinition::new("wallets");
const TXLOG: TableDefinition<u64, &[u8]> = TableDefinition::new("txlog");
const APPLIED: TableDefinition<&str, u64> = TableDefinition::new("applied");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");

/// Most transactions the log keeps (the oldest go; totals and wallets stay).
/// Idempotence covers the same window: an id older than the last million
/// transactions is no longer recognised.
pub const MAX_TXLOG: u64 = 1_000_000;

/// What a player holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Wallet {
    /// Coins.
    pub coins: u64,
    /// Items held.
    pub items: u32,
}

/// Why coins or items changed hands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TxKind {
    /// A new player's starting coins (a declared source).
    Grant,
    /// An item taken from a world's ground (a declared source).
    PickUp,
    /// Two players exchanged coins and items (conserves both).
    Trade,
}

/// One player's side of a transaction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerEntry {
    /// The player.
    pub player: String,
    /// Its wallet before.
    pub before: Wallet,
    /// Its wallet after.
    pub after: Wallet,
}

/// One transaction as a world reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerTx {
    /// Idempotent id (a trade: `trade:<world>:<offerer entity>:<offer id>`):
    /// committed at most once, however often it is reported.
    pub id: String,
    /// What it was.
    pub kind: TxKind,
    /// Every wallet it changed.
    pub entries: Vec<LedgerEntry>,
}

/// A transaction as the log keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxRecord {
    /// Position in the log.
    pub seq: u64,
    /// The world.
    pub world: u64,
    /// Its tick.
    pub tick: u64,
    /// When committed, milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// The transaction.
    pub tx: LedgerTx,
}

/// Running totals.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Totals {
    /// Coins in every wallet.
    pub coins_held: u64,
    /// Coins ever granted.
    pub coins_minted: u64,
    /// Items in every wallet.
    pub items_held: u64,
    /// Items ever picked up.
    pub items_minted: u64,
    /// Transactions committed.
    pub transactions: u64,
    /// Transactions reported again and not applied (idempotence at work).
    pub duplicates: u64,
    /// Transactions refused because a before balance was not the ledger's
    /// (the player's wallet changed elsewhere meanwhile: a double spend).
    pub refused: u64,
    /// Wallets.
    pub wallets: u64,
}

impl Totals {
    /// Whether nothing was created or destroyed but by the declared sources.
    pub fn conserved(&self) -> bool {
        self.coins_held == self.coins_minted && self.items_held == self.items_minted
    }
}

/// Why the ledger failed.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// The database failed.
    #[error("ledger: {0}")]
    Storage(#[from] redb::Error),
    /// A record could not be decoded.
    #[error("ledger record {0} is corrupt")]
    Corrupt(String),
    /// The file failed redb's integrity check.
    #[error("ledger {0} is damaged")]
    Damaged(PathBuf),
}

fn storage<E: Into<redb::Error>>(e: E) -> LedgerError {
    LedgerError::Storage(e.into())
}

fn decode<T: serde::de::DeserializeOwned>(what: &str, b: &[u8]) -> Result<T, LedgerError> {
    postcard::from_bytes(b).map_err(|_| LedgerError::Corrupt(what.to_owned()))
}

fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    // Plain structs of integers and strings: postcard cannot fail on them.
    postcard::to_stdvec(v).unwrap_or_default()
}

/// The ledger.
#[derive(Debug)]
pub struct Ledger {
    db: Database,
    totals: Totals,
    next_seq: u64,
}

impl Ledger {
    /// Opens `path`, creating it if missing. A damaged file is refused.
    pub fn open(path: &Path) -> Result<Self, LedgerError> {
        crate::redb_file::open_checked(
            path,
            || LedgerError::Damaged(path.to_owned()),
            LedgerError::Storage,
            Self::start,
        )
    }

    fn start(db: Database) -> Result<Self, LedgerError> {
        let txn = db.begin_write().map_err(storage)?;
        let (totals, next_seq) = {
            txn.open_table(WALLETS).map_err(storage)?;
            txn.open_table(APPLIED).map_err(storage)?;
            let log = txn.open_table(TXLOG).map_err(storage)?;
            let meta = txn.open_table(META).map_err(storage)?;
            let totals = match meta.get("totals").map_err(storage)? {
                Some(raw) => decode("totals", raw.value())?,
                None => Totals::default(),
            };
            let next = log
                .last()
                .map_err(storage)?
                .map_or(1, |(k, _)| k.value() + 1);
            (totals, next)
        };
        txn.commit().map_err(storage)?;
        Ok(Self {
            db,
            totals,
            next_seq,
        })
    }

    /// `player`'s wallet (`None`: never seen).
    pub fn wallet(&self, player: &str) -> Result<Option<Wallet>, LedgerError> {
        let txn = self.db.begin_read().map_err(storage)?;
        let t = txn.open_table(WALLETS).map_err(storage)?;
        t.get(player)
            .map_err(storage)?
            .map(|raw| decode(player, raw.value()))
            .transpose()
    }

    /// The running totals.
    pub fn totals(&self) -> Totals {
        self.totals
    }

    /// Commits one tick's transactions of `world` in one database transaction
    /// and returns how many were applied: each at most once (by id), whole or
    /// not at all. One whose before balances are not the ledger's (a wallet
    /// changed elsewhere meanwhile) is refused and counted
    /// ([`Totals::refused`]); a player's first entry teaches the ledger its
    /// wallet.
    pub fn commit(
        &mut self,
        world: u64,
        tick: u64,
        at_ms: u64,
        txs: &[LedgerTx],
    ) -> Result<u64, LedgerError> {
        if txs.is_empty() {
            return Ok(0);
        }
        let mut totals = self.totals;
        let mut seq = self.next_seq;
        let txn = self.db.begin_write().map_err(storage)?;
        let mut applied_now = 0;
        {
            let mut wallets = txn.open_table(WALLETS).map_err(storage)?;
            let mut applied = txn.open_table(APPLIED).map_err(storage)?;
            let mut log = txn.open_table(TXLOG).map_err(storage)?;
            for tx in txs {
                if applied.get(tx.id.as_str()).map_err(storage)?.is_some() {
                    totals.duplicates += 1;
                    continue;
                }
                let mut held = Vec::with_capacity(tx.entries.len());
                for e in &tx.entries {
                    held.push(match wallets.get(e.player.as_str()).map_err(storage)? {
                        Some(raw) => Some(decode::<Wallet>(&e.player, raw.value())?),
                        None => None,
                    });
                }
                let stale = tx
                    .entries
                    .iter()
                    .zip(&held)
                    .any(|(e, h)| h.is_some_and(|h| h != e.before));
                if stale {
                    totals.refused += 1;
                    continue;
                }
                for (e, h) in tx.entries.iter().zip(held) {
                    match h {
                        Some(_) => {}
                        None => {
                            totals.wallets += 1;
                            totals.coins_held += e.before.coins;
                            totals.items_held += u64::from(e.before.items);
                        }
                    }
                    totals.coins_held = totals.coins_held - e.before.coins + e.after.coins;
                    totals.items_held =
                        totals.items_held - u64::from(e.before.items) + u64::from(e.after.items);
                    wallets
                        .insert(e.player.as_str(), encode(&e.after).as_slice())
                        .map_err(storage)?;
                }
                match tx.kind {
                    TxKind::Grant => {
                        totals.coins_minted += tx
                            .entries
                            .iter()
                            .map(|e| e.after.coins.saturating_sub(e.before.coins))
                            .sum::<u64>();
                    }
                    TxKind::PickUp => {
                        totals.items_minted += tx
                            .entries
                            .iter()
                            .map(|e| u64::from(e.after.items.saturating_sub(e.before.items)))
                            .sum::<u64>();
                    }
                    TxKind::Trade => {}
                }
                applied.insert(tx.id.as_str(), seq).map_err(storage)?;
                let rec = TxRecord {
                    seq,
                    world,
                    tick,
                    at_ms,
                    tx: tx.clone(),
                };
                log.insert(seq, encode(&rec).as_slice()).map_err(storage)?;
                if seq > MAX_TXLOG {
                    // The log and the idempotence it gives are bounded
                    // together: the oldest transaction's id goes with it.
                    let old = log.remove(seq - MAX_TXLOG).map_err(storage)?;
                    if let Some(raw) = old {
                        let rec: TxRecord = decode("pruned tx", raw.value())?;
                        applied.remove(rec.tx.id.as_str()).map_err(storage)?;
                    }
                }
                seq += 1;
                totals.transactions += 1;
                applied_now += 1;
            }
            let mut meta = txn.open_table(META).map_err(storage)?;
            meta.insert("totals", encode(&totals).as_slice())
                .map_err(storage)?;
        }
        txn.commit().map_err(storage)?;
        self.totals = totals;
        self.next_seq = seq;
        Ok(applied_now)
    }

    /// The most recent `limit` transactions touching `player` (or anyone's),
    /// oldest first, from the last [`MAX_TXLOG`].
    pub fn history(
        &self,
        player: Option<&str>,
        limit: usize,
    ) -> Result<Vec<TxRecord>, LedgerError> {
        let txn = self.db.begin_read().map_err(storage)?;
        let log = txn.open_table(TXLOG).map_err(storage)?;
        let mut out = Vec::new();
        for e in log.iter().map_err(storage)?.rev() {
            if out.len() >= limit.clamp(1, 10_000) {
                break;
            }
            let (k, v) = e.map_err(storage)?;
            let rec: TxRecord = decode(&format!("tx {}", k.value()), v.value())?;
            if player.is_none_or(|p| rec.tx.entries.iter().any(|e| e.player == p)) {
                out.push(rec);
            }
        }
        out.reverse();
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn w(coins: u64, items: u32) -> Wallet {
        Wallet { coins, items }
    }

    fn entry(p: &str, before: Wallet, after: Wallet) -> LedgerEntry {
        LedgerEntry {
            player: p.into(),
            before,
            after,
        }
    }

    fn grant(p: &str, coins: u64) -> LedgerTx {
        LedgerTx {
            id: format!("grant:{p}"),
            kind: TxKind::Grant,
            entries: vec![entry(p, w(0, 0), w(coins, 0))],
        }
    }

    #[test]
    fn trades_conserve_grants_mint_and_a_resent_trade_applies_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("l.redb");
        let mut l = Ledger::open(&path).unwrap();
        l.commit(1, 1, 0, &[grant("a", 100), grant("b", 100)])
            .unwrap();
        let trade = LedgerTx {
            id: "trade:1:5:1".into(),
            kind: TxKind::Trade,
            entries: vec![
                entry("a", w(100, 0), w(90, 0)),
                entry("b", w(100, 0), w(110, 0)),
            ],
        };
        assert_eq!(l.commit(1, 2, 0, std::slice::from_ref(&trade)).unwrap(), 1);
        for _ in 0..3 {
            assert_eq!(
                l.commit(1, 3, 0, std::slice::from_ref(&trade)).unwrap(),
                0,
                "once"
            );
        }
        let t = l.totals();
        assert!(t.conserved(), "{t:?}");
        assert_eq!((t.coins_held, t.transactions, t.duplicates), (200, 3, 3));
        drop(l);
        // A restart keeps wallets, totals and the applied ids.
        let mut l = Ledger::open(&path).unwrap();
        assert_eq!(l.wallet("a").unwrap(), Some(w(90, 0)));
        assert_eq!(l.wallet("b").unwrap(), Some(w(110, 0)));
        assert_eq!(l.commit(1, 4, 0, &[trade]).unwrap(), 0);
        assert_eq!(l.totals().coins_held, 200);
        assert_eq!(l.history(Some("a"), 10).unwrap().len(), 2);
        assert_eq!(l.history(None, 10).unwrap().len(), 3);
    }

    #[test]
    fn a_transaction_from_another_balance_is_refused_whole() {
        let dir = tempfile::tempdir().unwrap();
        let mut l = Ledger::open(&dir.path().join("l.redb")).unwrap();
        l.commit(1, 1, 0, &[grant("a", 100), grant("b", 100)])
            .unwrap();
        let bad = LedgerTx {
            id: "trade:x".into(),
            kind: TxKind::Trade,
            entries: vec![
                entry("a", w(100, 0), w(50, 0)),
                entry("b", w(70, 0), w(150, 0)),
            ],
        };
        assert_eq!(l.commit(1, 2, 0, &[bad]).unwrap(), 0);
        assert_eq!(l.wallet("a").unwrap(), Some(w(100, 0)), "nothing applied");
        assert_eq!(l.totals().refused, 1);
        assert!(l.totals().conserved());
    }

    #[test]
    fn a_damaged_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("l.redb");
        std::fs::write(&path, vec![0x33; 64 * 1024]).unwrap();
        assert!(Ledger::open(&path).is_err());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]
        /// Random trades between balanced wallets keep every total.
        #[test]
        fn random_trades_conserve(
            trades in prop::collection::vec((0..4usize, 0..4usize, 0..50u64, 0..3u32), 1..80),
        ) {
            let dir = tempfile::tempdir().unwrap();
            let mut l = Ledger::open(&dir.path().join("l.redb")).unwrap();
            let mut model = [w(100, 3); 4];
            let names = ["a", "b", "c", "d"];
            let grants: Vec<LedgerTx> = names
                .iter()
                .map(|p| LedgerTx {
                    id: format!("g:{p}"),
                    kind: TxKind::Grant,
                    entries: vec![entry(p, w(0, 0), w(100, 0))],
                })
                .chain(names.iter().map(|p| LedgerTx {
                    id: format!("i:{p}"),
                    kind: TxKind::PickUp,
                    entries: vec![entry(p, w(100, 0), w(100, 3))],
                }))
                .collect();
            l.commit(1, 0, 0, &grants).unwrap();
            for (n, (a, b, coins, items)) in trades.into_iter().enumerate() {
                if a == b || model[a].coins < coins || model[a].items < items {
                    continue;
                }
                let (ba, bb) = (model[a], model[b]);
                model[a] = w(ba.coins - coins, ba.items - items);
                model[b] = w(bb.coins + coins, bb.items + items);
                let tx = LedgerTx {
                    id: format!("t:{n}"),
                    kind: TxKind::Trade,
                    entries: vec![entry(names[a], ba, model[a]), entry(names[b], bb, model[b])],
                };
                l.commit(1, n as u64, 0, &[tx]).unwrap();
            }
            let t = l.totals();
            prop_assert!(t.conserved(), "{:?}", t);
            for (i, p) in names.iter().enumerate() {
                prop_assert_eq!(l.wallet(p).unwrap(), Some(model[i]));
            }
        }
    }
}
