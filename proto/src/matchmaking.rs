//! The matchmaker's HTTP/JSON API: what a client sends to queue, what it
//! reads back, and the typed errors (shared by the `skylane-match` service,
//! the SDK's `Matchmaker` and the `skylane match` CLI).
//!
//! * `GET /relays`: the relays a client should measure ([`RelayEntry`]s).
//! * `POST /tickets` with `Authorization: Bearer <player token>` and a
//!   [`QueueRequest`]: `201` with a [`TicketStatus`].
//! * `GET /tickets/{id}?wait_secs=N` (the same token, or a party member's):
//!   the ticket's [`TicketStatus`], answered at once if it is not queued,
//!   else when it changes or after `N` seconds (at most
//!   [`MAX_WAIT_SECS`]): a long poll.
//! * `DELETE /tickets/{id}`: cancels a queued ticket.
//!
//! Errors answer with a status code and an [`ApiError`].

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::WorldId;

/// Most players in one ticket's party.
pub const MAX_PARTY: usize = 16;
/// Most relay measurements one ticket may carry.
pub const MAX_RELAY_RTTS: usize = 64;
/// Longest a long poll waits, seconds.
pub const MAX_WAIT_SECS: u64 = 30;

/// A relay as the matchmaker lists it (to measure) and returns it (to use).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelayEntry {
    /// The relay's node id (what [`QueueRequest::relay_rtt_ms`] is keyed by).
    pub id: String,
    /// Its QUIC address (`ip:port`).
    pub addr: String,
    /// The name its certificate carries.
    pub tls_name: String,
    /// Its region.
    pub region: String,
    /// In a match: the estimated round trip from the player through this
    /// relay to the world's origin, ms (`None` in the list to measure, or
    /// when the relay was chosen by distance).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub estimated_rtt_ms: Option<u32>,
}

/// A request to play.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueRequest {
    /// The game to play.
    pub game: String,
    /// The tokens of the other players in the caller's party (the caller's
    /// own token goes in the `Authorization` header). Empty: playing alone.
    #[serde(default)]
    pub party: Vec<String>,
    /// The client's measured round trip to relays, by relay id, ms.
    #[serde(default)]
    pub relay_rtt_ms: BTreeMap<String, u32>,
    /// The client's location (latitude, longitude), used when it measured
    /// nothing; without it the service looks its address up in GeoIP.
    #[serde(default)]
    pub coords: Option<(f64, f64)>,
}

/// Where a ticket is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum TicketState {
    /// Waiting for a match.
    Queued,
    /// Matched: the world is ready; connect with the token.
    Matched(MatchFound),
    /// Cancelled before a match.
    Cancelled,
    /// Given up (a world could not be placed): queue again.
    Failed {
        /// Why.
        error: ApiError,
    },
}

/// A ticket as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TicketStatus {
    /// The ticket's id.
    pub ticket: String,
    /// The game.
    pub game: String,
    /// The party's players (token subjects).
    pub players: Vec<String>,
    /// How long it has waited (or waited until matched), ms.
    pub waited_ms: u64,
    /// Its state.
    #[serde(flatten)]
    pub state: TicketState,
}

/// A match, as one of its players sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MatchFound {
    /// The world created for it (placed, owned and ready).
    pub world: WorldId,
    /// The origin hosting it.
    pub origin: String,
    /// A token for this player and this world, signed by the matchmaker.
    pub token: String,
    /// Relays to connect through, best first.
    pub relays: Vec<RelayEntry>,
    /// The teams' players; `team` is the caller's.
    pub teams: Vec<Vec<String>>,
    /// The caller's team (index into `teams`).
    pub team: usize,
    /// The match's worst estimated round trip to the origin, ms.
    pub worst_rtt_ms: u32,
}

/// What went wrong, as a machine-readable kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The game is not one this matchmaker queues.
    UnknownGame,
    /// No players in the party (cannot happen through the SDK).
    EmptyParty,
    /// The party is larger than one team of the game.
    PartyTooLarge,
    /// The ticket or one of its players is queued already.
    Duplicate,
    /// No RTT measurement, no coordinates, no GeoIP answer.
    NoEstimate,
    /// The queue is full.
    QueueFull,
    /// A token is missing, forged, or for another audience.
    BadToken,
    /// A token has expired.
    ExpiredToken,
    /// The token's subject is not in the ticket.
    Forbidden,
    /// No such ticket.
    NotFound,
    /// The request is malformed or out of bounds.
    BadRequest,
    /// No origin could host the match.
    Placement,
    /// The control plane (or the matchmaker) cannot serve now: retry.
    Unavailable,
}

impl ErrorKind {
    /// The HTTP status this kind answers with.
    pub fn status(self) -> u16 {
        match self {
            Self::UnknownGame
            | Self::EmptyParty
            | Self::PartyTooLarge
            | Self::NoEstimate
            | Self::BadRequest => 400,
            Self::BadToken | Self::ExpiredToken => 401,
            Self::Forbidden => 403,
            Self::NotFound => 404,
            Self::Duplicate => 409,
            Self::Placement => 409,
            Self::QueueFull => 429,
            Self::Unavailable => 503,
        }
    }

    /// Whether retrying the same request later may succeed.
    pub fn is_retryable(self) -> bool {
        matches!(self, Self::QueueFull | Self::Unavailable | Self::Placement)
    }
}

/// An error body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{kind:?}: {message}")]
pub struct ApiError {
    /// Kind.
    #[serde(rename = "error")]
    pub kind: ErrorKind,
    /// Human-readable detail.
    pub message: String,
}

impl ApiError {
    /// An error of `kind`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_read_as_documented() {
        let s = TicketStatus {
            ticket: "00ab".into(),
            game: "duel".into(),
            players: vec!["ann".into()],
            waited_ms: 1200,
            state: TicketState::Queued,
        };
        let j = serde_json::to_value(&s).unwrap();
        assert_eq!(j["state"], "queued");
        assert_eq!(serde_json::from_value::<TicketStatus>(j).unwrap(), s);
        let failed = TicketState::Failed {
            error: ApiError::new(ErrorKind::Placement, "full"),
        };
        let j = serde_json::to_value(&failed).unwrap();
        assert_eq!(j["error"]["error"], "placement");
        assert_eq!(serde_json::from_value::<TicketState>(j).unwrap(), failed);
        let unknown = serde_json::from_str::<QueueRequest>(r#"{"game":"g","oops":1}"#);
        assert!(unknown.is_err(), "unknown fields are refused");
        assert_eq!(ErrorKind::ExpiredToken.status(), 401);
        assert!(ErrorKind::Unavailable.is_retryable());
        assert!(!ErrorKind::Duplicate.is_retryable());
    }
}
