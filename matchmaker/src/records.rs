//! What the matchmaker keeps in the control plane, so that any instance can
//! answer for a ticket and a standby can take the queue over: tickets (with
//! their state), cancellation requests, and the matches whose results update
//! ratings. JSON under `mm/{queue}/...` (operators read them with
//! `etcdctl get --prefix`).

use std::collections::BTreeMap;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use skylane_proto::matchmaking::ApiError;
use skylane_proto::WorldId;

use crate::matcher::{Ticket, TicketId};

/// The role a queue's leader campaigns for.
pub fn leader_role(queue: &str) -> String {
    format!("matchmaker/{queue}")
}

/// Prefix of a queue's tickets.
pub fn tickets_prefix(queue: &str) -> String {
    format!("mm/{queue}/tickets/")
}

/// A ticket's key.
pub fn ticket_key(queue: &str, id: TicketId) -> String {
    format!("mm/{queue}/tickets/{:016x}", id.0)
}

/// Prefix of a queue's cancellation requests.
pub fn cancels_prefix(queue: &str) -> String {
    format!("mm/{queue}/cancels/")
}

/// A cancellation request's key.
pub fn cancel_key(queue: &str, id: TicketId) -> String {
    format!("mm/{queue}/cancels/{:016x}", id.0)
}

/// Prefix of a queue's matches.
pub fn matches_prefix(queue: &str) -> String {
    format!("mm/{queue}/matches/")
}

/// A match's key (by its world).
pub fn match_key(queue: &str, world: WorldId) -> String {
    format!("mm/{queue}/matches/{}", world.0)
}

/// A ticket id as the API shows it.
pub fn ticket_name(id: TicketId) -> String {
    format!("{:016x}", id.0)
}

/// The id in an API path (`None`: not one).
pub fn parse_ticket_name(s: &str) -> Option<TicketId> {
    (s.len() == 16)
        .then(|| u64::from_str_radix(s, 16).ok())
        .flatten()
        .map(TicketId)
}

/// A ticket's state as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Stored {
    /// Waiting.
    Queued,
    /// Matched; its world is owned and ready.
    Matched {
        /// The world.
        world: WorldId,
        /// Its origin.
        origin: String,
        /// The teams' players.
        teams: Vec<Vec<String>>,
        /// The match's worst estimated RTT, ms.
        worst_rtt_ms: u32,
        /// How long the ticket waited, ms.
        waited_ms: u64,
    },
    /// Cancelled.
    Cancelled,
    /// Given up.
    Failed {
        /// Why.
        error: ApiError,
    },
}

/// A ticket as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TicketRecord {
    /// The ticket (party with ratings, estimates per origin).
    pub ticket: Ticket,
    /// The client's measured RTT to each relay, ms (to pick its relays).
    #[serde(default)]
    pub relay_rtt_ms: BTreeMap<String, u32>,
    /// The client's coordinates, when it measured nothing.
    #[serde(default)]
    pub coords: Option<(f64, f64)>,
    /// Queued at, Unix ms.
    pub since_ms: u64,
    /// Last state change, Unix ms.
    pub changed_ms: u64,
    /// State.
    #[serde(flatten)]
    pub state: Stored,
}

/// A match whose world's result updates ratings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MatchRecord {
    /// The world.
    pub world: WorldId,
    /// The game.
    pub game: String,
    /// The teams' players.
    pub teams: Vec<Vec<String>>,
    /// Created at, Unix ms.
    pub created_ms: u64,
}

/// Encodes a record.
pub fn encode<T: Serialize>(v: &T) -> Bytes {
    Bytes::from(serde_json::to_vec(v).unwrap_or_default())
}

/// Decodes a record (`None`: not one of ours, or damaged; skipped).
pub fn decode<T: for<'de> Deserialize<'de>>(b: &[u8]) -> Option<T> {
    serde_json::from_slice(b).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::matcher::Member;
    use crate::ratings::Rating;

    #[test]
    fn records_round_trip_and_ids_parse() {
        let r = TicketRecord {
            ticket: Ticket {
                id: TicketId(0xab),
                game: "duel".into(),
                members: vec![Member {
                    player: "ann".into(),
                    rating: Rating::default(),
                }],
                rtt_ms: BTreeMap::from([("origin-1".into(), 20)]),
            },
            relay_rtt_ms: BTreeMap::from([("relay-1".into(), 5)]),
            coords: None,
            since_ms: 1,
            changed_ms: 2,
            state: Stored::Matched {
                world: WorldId(1000),
                origin: "origin-1".into(),
                teams: vec![vec!["ann".into()], vec!["bob".into()]],
                worst_rtt_ms: 20,
                waited_ms: 1,
            },
        };
        assert_eq!(decode::<TicketRecord>(&encode(&r)), Some(r));
        assert_eq!(decode::<TicketRecord>(b"{}"), None);
        assert_eq!(
            ticket_key("q", TicketId(0xab)),
            "mm/q/tickets/00000000000000ab"
        );
        assert_eq!(parse_ticket_name("00000000000000ab"), Some(TicketId(0xab)));
        assert_eq!(parse_ticket_name("ab"), None);
        assert_eq!(parse_ticket_name("zz000000000000ab"), None);
    }
}
