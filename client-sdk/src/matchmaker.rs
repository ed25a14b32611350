//! Queueing for a match through a Skylane matchmaker (`skylane-match`):
//! measure the relays, queue a ticket, wait for the match, connect.
//!
//! ```no_run
//! # async fn demo(token: String, ca_pem: String) -> Result<(), Box<dyn std::error::Error>> {
//! use skylane_client::{Client, Matchmaker};
//!
//! let mm = Matchmaker::new(["http://mm-1.example:7700", "http://mm-2.example:7700"])
//!     .ca_pem(ca_pem.clone());
//! let mut ticket = mm.queue(&token, "duel", Vec::new()).await?;
//! let found = ticket.wait().await?;
//! let client = Client::builder().matched(&found).ca_pem(ca_pem).connect().await?;
//! # let _ = client; Ok(()) }
//! ```
//!
//! HTTP runs on tokio's blocking pool (`ureq`); every request is bounded
//! in time. Several matchmaker addresses may be given: a request that cannot
//! reach one (or that it answers "unavailable") goes to the next, so a queue
//! keeps working through a matchmaker failover (tickets live in the control
//! plane, not in the instance).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use skylane_proto::matchmaking::{
    ApiError, ErrorKind, MatchFound, QueueRequest, RelayEntry, TicketState, TicketStatus,
};

/// How long one long poll asks the matchmaker to wait, seconds.
pub const POLL_SECS: u64 = 20;
/// Most consecutive failed requests (every address tried) before giving up.
const MAX_FAILURES: u32 = 20;

/// Why queueing failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MatchError {
    /// The matchmaker refused (typed: unknown game, party too large, bad or
    /// expired token, duplicate, no estimate...).
    #[error("matchmaker refused: {0}")]
    Refused(ApiError),
    /// No matchmaker address answered.
    #[error("no matchmaker reachable: {0}")]
    Unreachable(String),
    /// An answer that is not the API's.
    #[error("unexpected answer: {0}")]
    Protocol(String),
    /// The ticket was cancelled before a match.
    #[error("the ticket was cancelled")]
    Cancelled,
}

impl MatchError {
    /// The refusal's kind, if the matchmaker refused.
    pub fn kind(&self) -> Option<ErrorKind> {
        match self {
            Self::Refused(e) => Some(e.kind),
            _ => None,
        }
    }
}

/// A matchmaker client (cheap to clone).
#[derive(Debug, Clone)]
pub struct Matchmaker {
    urls: Vec<String>,
    ca_pem: Option<String>,
    coords: Option<(f64, f64)>,
    probe_pings: usize,
}

enum Method {
    Get,
    Post(String),
    Delete,
}

impl Matchmaker {
    /// A client of the matchmaker(s) at `urls` (`http://host:port`).
    pub fn new<I, S>(urls: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self {
            urls: urls
                .into_iter()
                .map(|u| u.into().trim_end_matches('/').to_owned())
                .collect(),
            ca_pem: None,
            coords: None,
            probe_pings: 3,
        }
    }

    /// The relays' CA: with it, [`Matchmaker::queue`] measures the relays
    /// before queueing (without it, the matchmaker estimates from the
    /// client's location).
    #[must_use]
    pub fn ca_pem(mut self, pem: impl Into<String>) -> Self {
        self.ca_pem = Some(pem.into());
        self
    }

    /// Where the player is (latitude, longitude), sent with every ticket:
    /// the matchmaker estimates from it when no relay could be measured.
    #[must_use]
    pub fn coords(mut self, lat: f64, lon: f64) -> Self {
        self.coords = Some((lat, lon));
        self
    }

    /// One request to every address in turn until one answers with
    /// something other than "unavailable".
    async fn request(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
    ) -> Result<(u16, String), MatchError> {
        let mut last = String::from("no matchmaker address");
        let method = std::sync::Arc::new(method);
        for url in &self.urls {
            let url = format!("{url}{path}");
            let auth = token.map(|t| format!("Bearer {t}"));
            let m = method.clone();
            let answer = tokio::task::spawn_blocking(move || {
                let config = ureq::Agent::config_builder()
                    .http_status_as_error(false)
                    .timeout_global(Some(Duration::from_secs(POLL_SECS + 10)))
                    .build();
                let agent = ureq::Agent::new_with_config(config);
                let (verb, body) = match &*m {
                    Method::Get => ("GET", String::new()),
                    Method::Delete => ("DELETE", String::new()),
                    Method::Post(body) => ("POST", body.clone()),
                };
                let mut req = ureq::http::Request::builder().method(verb).uri(&url);
                if let Some(a) = &auth {
                    req = req.header("Authorization", a);
                }
                if !body.is_empty() {
                    req = req.header("Content-Type", "application/json");
                }
                let req = req.body(body).map_err(|e| format!("{url}: {e}"))?;
                let r = agent.run(req);
                let mut r = r.map_err(|e| format!("{url}: {e}"))?;
                let status = r.status().as_u16();
                let text = r
                    .body_mut()
                    .read_to_string()
                    .map_err(|e| format!("{url}: {e}"))?;
                Ok::<_, String>((status, text))
            })
            .await
            .map_err(|e| MatchError::Unreachable(e.to_string()))?;
            match answer {
                Ok((503, text)) => last = text,
                Ok(ok) => return Ok(ok),
                Err(e) => last = e,
            }
        }
        Err(MatchError::Unreachable(last))
    }

    fn decode<T: for<'de> serde::Deserialize<'de>>(
        (status, text): (u16, String),
    ) -> Result<T, MatchError> {
        if (200..300).contains(&status) {
            return serde_json::from_str(&text)
                .map_err(|e| MatchError::Protocol(format!("{e}: {text}")));
        }
        match serde_json::from_str::<ApiError>(&text) {
            Ok(e) => Err(MatchError::Refused(e)),
            Err(_) => Err(MatchError::Protocol(format!("HTTP {status}: {text}"))),
        }
    }

    /// The relays the matchmaker wants measured.
    pub async fn relays(&self) -> Result<Vec<RelayEntry>, MatchError> {
        Self::decode(self.request(Method::Get, "/relays", None).await?)
    }

    /// Measures the round trip to each relay (tokenless probes, in
    /// parallel; unreachable relays are left out), ms by relay id. Empty
    /// without a CA ([`Matchmaker::ca_pem`]).
    pub async fn measure(&self, relays: &[RelayEntry]) -> BTreeMap<String, u32> {
        let Some(ca) = &self.ca_pem else {
            return BTreeMap::new();
        };
        let Ok(roots) = skylane_certs::roots_from_pem(ca) else {
            return BTreeMap::new();
        };
        let Ok(quic) = skylane_certs::client_config(roots, None) else {
            return BTreeMap::new();
        };
        let Ok(endpoint) = quinn::Endpoint::client(([0, 0, 0, 0], 0).into()) else {
            return BTreeMap::new();
        };
        let mut set = tokio::task::JoinSet::new();
        for r in relays {
            let Ok(addr) = r.addr.parse::<SocketAddr>() else {
                continue;
            };
            let (endpoint, quic, id, name) = (
                endpoint.clone(),
                quic.clone(),
                r.id.clone(),
                r.tls_name.clone(),
            );
            let pings = self.probe_pings;
            set.spawn(async move {
                let p = crate::probe(
                    &endpoint,
                    quic,
                    addr,
                    &name,
                    pings,
                    Duration::from_millis(20),
                    Duration::from_secs(3),
                    || 0,
                )
                .await;
                (id, p.ok().and_then(|p| p.min_rtt()))
            });
        }
        let mut out = BTreeMap::new();
        while let Some(r) = set.join_next().await {
            if let Ok((id, Some(rtt))) = r {
                out.insert(id, (rtt.as_micros() as u32).div_ceil(1000).max(1));
            }
        }
        out
    }

    /// Queues for `game` with `party` (the other players' tokens): measures
    /// the relays first when it has their CA.
    pub async fn queue(
        &self,
        token: &str,
        game: &str,
        party: Vec<String>,
    ) -> Result<Queued, MatchError> {
        let relay_rtt_ms = if self.ca_pem.is_some() {
            let relays = self.relays().await?;
            self.measure(&relays).await
        } else {
            BTreeMap::new()
        };
        self.queue_request(
            token,
            QueueRequest {
                game: game.into(),
                party,
                relay_rtt_ms,
                coords: self.coords,
            },
        )
        .await
    }

    /// Queues `request` as it is.
    pub async fn queue_request(
        &self,
        token: &str,
        request: QueueRequest,
    ) -> Result<Queued, MatchError> {
        let body =
            serde_json::to_string(&request).map_err(|e| MatchError::Protocol(e.to_string()))?;
        let status: TicketStatus = Self::decode(
            self.request(Method::Post(body), "/tickets", Some(token))
                .await?,
        )?;
        Ok(Queued {
            mm: self.clone(),
            token: token.to_owned(),
            status,
        })
    }

    /// A ticket queued earlier (by id), as `token`'s player sees it: a
    /// party member follows the ticket its leader queued this way.
    pub async fn ticket(&self, token: &str, id: &str) -> Result<Queued, MatchError> {
        let status: TicketStatus = Self::decode(
            self.request(Method::Get, &format!("/tickets/{id}"), Some(token))
                .await?,
        )?;
        Ok(Queued {
            mm: self.clone(),
            token: token.to_owned(),
            status,
        })
    }
}

/// A queued ticket.
#[derive(Debug, Clone)]
pub struct Queued {
    mm: Matchmaker,
    token: String,
    status: TicketStatus,
}

impl Queued {
    /// Its id.
    pub fn id(&self) -> &str {
        &self.status.ticket
    }

    /// Its last known status.
    pub fn status(&self) -> &TicketStatus {
        &self.status
    }

    /// Waits (long polls, across matchmaker failovers) for the match.
    pub async fn wait(&mut self) -> Result<MatchFound, MatchError> {
        let mut failures = 0;
        loop {
            match &self.status.state {
                TicketState::Matched(m) => return Ok(m.clone()),
                TicketState::Cancelled => return Err(MatchError::Cancelled),
                TicketState::Failed { error } => return Err(MatchError::Refused(error.clone())),
                TicketState::Queued => {}
            }
            let path = format!("/tickets/{}?wait_secs={POLL_SECS}", self.status.ticket);
            let answer = self.mm.request(Method::Get, &path, Some(&self.token)).await;
            match answer.and_then(Matchmaker::decode::<TicketStatus>) {
                Ok(s) => {
                    failures = 0;
                    self.status = s;
                }
                Err(e @ (MatchError::Unreachable(_) | MatchError::Protocol(_))) => {
                    failures += 1;
                    if failures >= MAX_FAILURES {
                        return Err(e);
                    }
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Asks for the ticket to be cancelled; returns its status (it shows
    /// `cancelled` once the leader took it out, or its match if too late).
    pub async fn cancel(&mut self) -> Result<&TicketStatus, MatchError> {
        let path = format!("/tickets/{}", self.status.ticket);
        self.status = Matchmaker::decode(
            self.mm
                .request(Method::Delete, &path, Some(&self.token))
                .await?,
        )?;
        Ok(&self.status)
    }
}

/// Whether a refusal means the ticket may be queued again as it is.
pub fn is_retryable(e: &MatchError) -> bool {
    match e {
        MatchError::Refused(a) => a.kind.is_retryable(),
        MatchError::Unreachable(_) => true,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_decode_to_typed_refusals() {
        let body = r#"{"error":"party_too_large","message":"a party of 3"}"#;
        let e = Matchmaker::decode::<TicketStatus>((400, body.into())).unwrap_err();
        assert_eq!(e.kind(), Some(ErrorKind::PartyTooLarge));
        assert!(!is_retryable(&e));
        let e = Matchmaker::decode::<TicketStatus>((502, "bad gateway".into())).unwrap_err();
        assert!(matches!(e, MatchError::Protocol(_)));
        assert!(is_retryable(&MatchError::Unreachable("x".into())));
    }
}
