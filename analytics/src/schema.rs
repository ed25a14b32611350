//! The typed event schema: one row type per table (documented, column by
//! column, in `docs/analytics.md`). Every row carries when it happened
//! (`at_ms`, milliseconds since the Unix epoch) and which process saw it
//! (`node`, e.g. `relay-1`, `origin-2`, `matchmaker`).
//!
//! Columns are plain types (integers, strings, booleans, optional values)
//! so the files open as they are in the tools analysts use (DuckDB,
//! pandas/pyarrow, Spark).

use serde::{Deserialize, Serialize};

/// A player or spectator session opened (or resumed) on a relay.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionStarted {
    /// When, ms since the Unix epoch.
    pub at_ms: u64,
    /// The relay (`relay-<id>`).
    pub node: String,
    /// The relay's region.
    pub region: String,
    /// The session id.
    pub session: u64,
    /// The player (the token's subject).
    pub player: String,
    /// The world.
    pub world: u64,
    /// `player` or `spectator`.
    pub role: String,
    /// A resume of a session held on this relay (a reconnect).
    pub resumed: bool,
    /// The connection's round-trip time when it was admitted, ms.
    pub rtt_ms: f64,
}

/// A session ended on a relay (left, expired after its grace, or cut).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionEnded {
    /// When, ms since the Unix epoch.
    pub at_ms: u64,
    /// The relay.
    pub node: String,
    /// The relay's region.
    pub region: String,
    /// The session id.
    pub session: u64,
    /// The player.
    pub player: String,
    /// The world.
    pub world: u64,
    /// `player` or `spectator`.
    pub role: String,
    /// From its first start on this relay to its end, ms.
    pub duration_ms: u64,
    /// Times it was resumed on this relay.
    pub reconnects: u32,
    /// The last round-trip time measured on its connection, ms.
    pub rtt_ms: f64,
    /// Why: `expired` (no reconnect within the grace), `closed` (left or
    /// was cut), `moved` (went to another relay).
    pub reason: String,
}

/// A world (or room) changed phase on its origin.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorldPhase {
    /// When, ms since the Unix epoch.
    pub at_ms: u64,
    /// The origin.
    pub node: String,
    /// The world.
    pub world: u64,
    /// The world record reporting it (the world, or one of its zones).
    pub host: u64,
    /// The game (`arena`, `tictactoe`, ...).
    pub game: String,
    /// `created` (started on this origin), `waiting`, `playing`, `ended`.
    pub phase: String,
    /// Players in it.
    pub players: u32,
    /// The world tick.
    pub tick: u64,
    /// The winner, once ended with one.
    pub winner: Option<String>,
    /// How it ended (`win`, `draw`, `abandoned`, ...), once ended.
    pub result: Option<String>,
}

/// An action's outcome, sampled (one in `sample_every`) on the origin.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActionSampled {
    /// When the outcome left, ms since the Unix epoch.
    pub at_ms: u64,
    /// The origin.
    pub node: String,
    /// The world.
    pub world: u64,
    /// The session.
    pub session: u64,
    /// The action's class (`critical`, `state`, `movement`, `chat`, `bulk`).
    pub class: String,
    /// `applied`, `conflict`, `rejected_<code>`, `unknown`.
    pub outcome: String,
    /// From the action's arrival at the origin to its outcome leaving, µs
    /// (the tick wait, the game's rules and the standbys' confirmation).
    pub latency_us: u64,
    /// The sampling rate: each row stands for this many actions.
    pub sample_every: u32,
}

/// A violation recorded by an origin's detectors or rules, or by a relay's
/// edge checks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Violation {
    /// When, ms since the Unix epoch.
    pub at_ms: u64,
    /// The origin or relay.
    pub node: String,
    /// The world (0 at the edge when not known).
    pub world: u64,
    /// The session.
    pub session: u64,
    /// The player.
    pub player: String,
    /// Who saw it: `origin` (detectors, game rules) or `edge` (a relay's
    /// guard).
    pub source: String,
    /// The detector or rule (`accuracy`, `rule`, `rate_limited`, ...).
    pub kind: String,
    /// What was measured, in words and numbers.
    pub evidence: String,
    /// The measured value (none at the edge).
    pub value: Option<f64>,
    /// The threshold it crossed (none at the edge).
    pub threshold: Option<f64>,
    /// What was done (`logged`, `kicked`, `banned`, ...).
    pub enforcement: String,
}

/// One wallet change of an economy transaction (a transaction touching two
/// wallets is two rows with the same `tx`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Economy {
    /// When, ms since the Unix epoch.
    pub at_ms: u64,
    /// The origin.
    pub node: String,
    /// The world.
    pub world: u64,
    /// The world tick.
    pub tick: u64,
    /// The transaction's idempotent id.
    pub tx: String,
    /// `grant`, `pickup`, `trade`, `gift`, ...
    pub kind: String,
    /// The wallet's player.
    pub player: String,
    /// Coins added (negative: taken).
    pub coins: i64,
    /// Items added (negative: taken).
    pub items: i64,
}

/// A spectator joined a world's audience on a relay.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SpectatorJoined {
    /// When, ms since the Unix epoch.
    pub at_ms: u64,
    /// The relay.
    pub node: String,
    /// The relay's region.
    pub region: String,
    /// The session.
    pub session: u64,
    /// The world watched.
    pub world: u64,
    /// The delay it watches at, ms.
    pub delay_ms: u64,
    /// `live` (the relay's audience) or `delayed` (behind its tier's delay).
    pub mode: String,
}

/// A matchmaking ticket's end: matched, cancelled or expired.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ticket {
    /// When, ms since the Unix epoch.
    pub at_ms: u64,
    /// The matchmaker.
    pub node: String,
    /// The ticket id.
    pub ticket: String,
    /// The player.
    pub player: String,
    /// The queue (game mode).
    pub queue: String,
    /// `matched`, `cancelled`, `expired`.
    pub outcome: String,
    /// Time in the queue, ms.
    pub wait_ms: u64,
}

/// A match formed by the matchmaker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Match {
    /// When, ms since the Unix epoch.
    pub at_ms: u64,
    /// The matchmaker.
    pub node: String,
    /// The match id.
    pub match_id: String,
    /// The queue.
    pub queue: String,
    /// The world created for it (0 until placed).
    pub world: u64,
    /// Players in it.
    pub players: u32,
    /// The worst estimated round trip of its players to the chosen region, ms.
    pub worst_rtt_ms: f64,
    /// The rating spread (highest minus lowest).
    pub rating_spread: f64,
}

macro_rules! tables {
    ($($variant:ident($row:ident) = $table:literal,)*) => {
        /// One analytics event: a row of one table.
        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
        pub enum Event {
            $(
                #[doc = concat!("A row of `", $table, "`.")]
                $variant($row),
            )*
        }

        /// The tables, by name (their directory names under the output
        /// directory).
        pub const TABLES: &[&str] = &[$($table),*];

        impl Event {
            /// The table this row belongs to.
            pub fn table(&self) -> &'static str {
                match self {
                    $(Self::$variant(_) => $table,)*
                }
            }

            /// When it happened, ms since the Unix epoch.
            pub fn at_ms(&self) -> u64 {
                match self {
                    $(Self::$variant(r) => r.at_ms,)*
                }
            }
        }

        $(
            impl From<$row> for Event {
                fn from(r: $row) -> Self {
                    Self::$variant(r)
                }
            }
        )*

        /// Rows of one table as an Arrow record batch (events of other
        /// tables are skipped); `None` for a table that does not exist.
        pub(crate) fn to_batch(
            table: &str,
            events: &[&Event],
        ) -> Option<Result<arrow_array::RecordBatch, serde_arrow::Error>> {
            match table {
                $($table => {
                    let rows: Vec<&$row> = events
                        .iter()
                        .filter_map(|e| match e {
                            Event::$variant(r) => Some(r),
                            #[allow(unreachable_patterns)]
                            _ => None,
                        })
                        .collect();
                    Some(fields_of::<$row>().and_then(|f| serde_arrow::to_record_batch(&f, &rows)))
                })*
                _ => None,
            }
        }
    };
}

tables! {
    SessionStarted(SessionStarted) = "session_started",
    SessionEnded(SessionEnded) = "session_ended",
    WorldPhase(WorldPhase) = "world_phase",
    Action(ActionSampled) = "action",
    Violation(Violation) = "violation",
    Economy(Economy) = "economy",
    SpectatorJoined(SpectatorJoined) = "spectator_joined",
    Ticket(Ticket) = "ticket",
    Match(Match) = "match",
}

/// The Arrow fields of a row type (traced from its serde shape).
pub(crate) fn fields_of<T: Serialize + for<'de> Deserialize<'de>>(
) -> Result<Vec<arrow_schema::FieldRef>, serde_arrow::Error> {
    use serde_arrow::schema::{SchemaLike, TracingOptions};
    Vec::<arrow_schema::FieldRef>::from_type::<T>(TracingOptions::default())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn started(at_ms: u64) -> Event {
        Event::SessionStarted(SessionStarted {
            at_ms,
            node: "relay-1".into(),
            region: "eu".into(),
            session: 7,
            player: "p".into(),
            world: 1,
            role: "player".into(),
            resumed: false,
            rtt_ms: 1.5,
        })
    }

    #[test]
    fn every_table_has_a_schema_and_its_rows_make_a_batch() {
        let e = started(5);
        assert_eq!(e.table(), "session_started");
        assert_eq!(e.at_ms(), 5);
        let b = to_batch("session_started", &[&e, &e]).unwrap().unwrap();
        assert_eq!(b.num_rows(), 2);
        assert_eq!(b.num_columns(), 9);
        // A row of another table is not written into this one.
        let b = to_batch("world_phase", &[&e]).unwrap().unwrap();
        assert_eq!(b.num_rows(), 0);
        assert!(to_batch("nope", &[&e]).is_none());
        for t in TABLES {
            assert!(to_batch(t, &[]).unwrap().is_ok(), "{t}");
        }
    }
}
