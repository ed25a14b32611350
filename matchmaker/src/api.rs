//! The matchmaker's HTTP/JSON API (axum handlers over [`crate::service`]'s
//! shared state); the request and response types are
//! [`skylane_proto::matchmaking`]'s.
//!
//! * `GET /relays`: the relays to measure.
//! * `POST /tickets` (`Authorization: Bearer <token>`, a `QueueRequest`):
//!   checks every token of the party, the game, the party's size, that none
//!   of its players is queued already, and that the ticket has an RTT
//!   estimate (measured, else coordinates, else GeoIP of the caller); stores
//!   the ticket in the control plane (any instance may take it: the leader
//!   picks it up). `201` with the ticket.
//! * `GET /tickets/{id}?wait_secs=N`: the ticket as the caller (one of its
//!   players) sees it; long-polls while queued. A matched ticket carries a
//!   world token for the caller, signed by the matchmaker's key, and the
//!   relays nearest the caller on the way to the world's origin.
//! * `DELETE /tickets/{id}`: asks the leader to cancel it (`202`; the
//!   ticket shows `cancelled` once done, or keeps its match if too late).
//! * `GET /status`, `GET /ratings/{player}`, `GET /metrics`.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::rejection::JsonRejection;
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use skylane_control::{ClusterView, RecordWrite};
use skylane_proto::matchmaking::{
    ApiError, ErrorKind, MatchFound, QueueRequest, RelayEntry, TicketState, TicketStatus,
    MAX_PARTY, MAX_RELAY_RTTS, MAX_WAIT_SECS,
};
use skylane_proto::token::{Claims, Role, TokenError};

use crate::matcher::{Member, Ticket, TicketId};
use crate::records::{
    cancel_key, decode, encode, leader_role, parse_ticket_name, ticket_key, ticket_name,
    tickets_prefix, Stored, TicketRecord,
};
use crate::service::{now_ms, Shared};

/// How long queueing waits for the ticket to show in this instance's view.
const VISIBLE_WAIT: Duration = Duration::from_secs(2);

/// Relays a matched player is given.
pub(crate) const RELAYS_PER_PLAYER: usize = 3;

type S = State<Arc<Shared>>;

fn fail(s: &Shared, kind: ErrorKind, message: impl Into<String>) -> Response {
    skylane_ops::count(&s.metrics.tickets, format!("{kind:?}"));
    let code = StatusCode::from_u16(kind.status()).unwrap_or(StatusCode::BAD_REQUEST);
    (code, Json(ApiError::new(kind, message))).into_response()
}

fn token_error(s: &Shared, e: &TokenError) -> Response {
    let kind = match e {
        TokenError::Expired { .. } => ErrorKind::ExpiredToken,
        _ => ErrorKind::BadToken,
    };
    fail(s, kind, e.to_string())
}

fn now_secs() -> u64 {
    now_ms() / 1000
}

/// The caller's verified claims.
fn auth(s: &Shared, headers: &HeaderMap) -> Result<Claims, Box<Response>> {
    let Some(token) = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    else {
        return Err(Box::new(fail(
            s,
            ErrorKind::BadToken,
            "no `Authorization: Bearer <token>` header",
        )));
    };
    s.cfg
        .verifier
        .verify_role(token.trim(), now_secs(), &[Role::Player])
        .map_err(|e| Box::new(token_error(s, &e)))
}

/// The router.
pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/relays", get(relays))
        .route("/tickets", post(queue))
        .route("/tickets/{id}", get(poll).delete(cancel))
        .route("/status", get(status))
        .route("/ratings/{player}", get(rating))
        .with_state(shared)
}

async fn relays(State(s): S) -> Response {
    let v = s.view.borrow();
    let list: Vec<RelayEntry> = v
        .relays()
        .map(|r| RelayEntry {
            id: r.id.clone(),
            addr: r.addr.clone(),
            tls_name: r.tls_name.clone(),
            region: r.region.clone(),
            estimated_rtt_ms: None,
        })
        .collect();
    Json(list).into_response()
}

/// Whether any of `players` is in a queued ticket of `view`.
fn queued_already<'a>(s: &Shared, view: &ClusterView, players: &'a [String]) -> Option<&'a str> {
    view.records_under(&tickets_prefix(&s.cfg.queue))
        .filter_map(|(_, b)| decode::<TicketRecord>(b))
        .filter(|r| r.state == Stored::Queued)
        .find_map(|r| {
            players
                .iter()
                .find(|p| r.ticket.members.iter().any(|m| &m.player == *p))
                .map(String::as_str)
        })
}

async fn queue(
    State(s): S,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Result<Json<QueueRequest>, JsonRejection>,
) -> Response {
    let claims = match auth(&s, &headers) {
        Ok(c) => c,
        Err(r) => return *r,
    };
    let req = match body {
        Ok(Json(r)) => r,
        Err(e) => return fail(&s, ErrorKind::BadRequest, e.body_text()),
    };
    if req.relay_rtt_ms.len() > MAX_RELAY_RTTS {
        return fail(
            &s,
            ErrorKind::BadRequest,
            format!("at most {MAX_RELAY_RTTS} relay measurements"),
        );
    }
    let Some(game) = s.cfg.games.iter().find(|g| g.name == req.game) else {
        return fail(
            &s,
            ErrorKind::UnknownGame,
            format!("unknown game {:?}", req.game),
        );
    };
    let size = 1 + req.party.len();
    if size > usize::from(game.team_size) || size > MAX_PARTY {
        return fail(
            &s,
            ErrorKind::PartyTooLarge,
            format!(
                "a party of {size} does not fit {}'s teams of {}",
                game.name, game.team_size
            ),
        );
    }
    let mut players = vec![claims.sub.clone()];
    for t in &req.party {
        match s.cfg.verifier.verify_role(t, now_secs(), &[Role::Player]) {
            Ok(c) if players.contains(&c.sub) => {
                return fail(
                    &s,
                    ErrorKind::Duplicate,
                    format!("{} is in the party twice", c.sub),
                )
            }
            Ok(c) => players.push(c.sub),
            Err(e) => return token_error(&s, &e),
        }
    }
    let coords = req
        .coords
        .or_else(|| s.cfg.locate.as_ref().and_then(|l| l(peer.ip())));
    let estimate = {
        let v = s.view.borrow();
        if let Some(p) = queued_already(&s, &v, &players) {
            let p = p.to_owned();
            drop(v);
            return fail(&s, ErrorKind::Duplicate, format!("{p} is queued already"));
        }
        crate::estimate::for_ticket(&v, &game.name, &req.relay_rtt_ms, coords)
    };
    let Some(rtt_ms) = estimate else {
        return fail(
            &s,
            ErrorKind::NoEstimate,
            "no round-trip estimate to any origin that runs the game: measure the relays, or send coordinates",
        );
    };
    let mut members = Vec::with_capacity(players.len());
    for p in &players {
        match s.book.rating(p) {
            Ok(rating) => members.push(Member {
                player: p.clone(),
                rating,
            }),
            Err(e) => return fail(&s, ErrorKind::Unavailable, e.to_string()),
        }
    }
    let now = now_ms();
    let id = TicketId(rand::random::<u64>() >> 1);
    let rec = TicketRecord {
        ticket: Ticket {
            id,
            game: game.name.clone(),
            members,
            rtt_ms,
        },
        relay_rtt_ms: req.relay_rtt_ms,
        coords,
        since_ms: now,
        changed_ms: now,
        state: Stored::Queued,
    };
    let w = RecordWrite {
        puts: vec![(ticket_key(&s.cfg.queue, id), encode(&rec))],
        ..RecordWrite::default()
    };
    if let Err(e) = s.control.write_records(w).await {
        return fail(&s, ErrorKind::Unavailable, e.to_string());
    }
    skylane_ops::count(&s.metrics.tickets, "queued");
    // Read your writes: answer once this instance's view has the ticket (a
    // store like etcd shows it a moment after the write).
    let key = ticket_key(&s.cfg.queue, id);
    let mut view = s.view.clone();
    let _ = tokio::time::timeout(VISIBLE_WAIT, async {
        while !view.borrow_and_update().records.contains_key(&key) {
            if view.changed().await.is_err() {
                return;
            }
        }
    })
    .await;
    let view = nodes_of(&s.view.borrow());
    (
        StatusCode::CREATED,
        Json(status_of(&s, &view, &rec, &claims.sub)),
    )
        .into_response()
}

/// What a ticket answer needs of the view: the nodes (relays and their
/// RTTs), not the records.
fn nodes_of(v: &ClusterView) -> ClusterView {
    ClusterView {
        nodes: v.nodes.clone(),
        ..ClusterView::default()
    }
}

/// The ticket as `sub` sees it (a matched one with `sub`'s world token).
fn status_of(s: &Shared, view: &ClusterView, rec: &TicketRecord, sub: &str) -> TicketStatus {
    let now = now_ms();
    let (waited_ms, state) = match &rec.state {
        Stored::Queued => (now.saturating_sub(rec.since_ms), TicketState::Queued),
        Stored::Cancelled => (
            rec.changed_ms.saturating_sub(rec.since_ms),
            TicketState::Cancelled,
        ),
        Stored::Failed { error } => (
            rec.changed_ms.saturating_sub(rec.since_ms),
            TicketState::Failed {
                error: error.clone(),
            },
        ),
        Stored::Matched {
            world,
            origin,
            teams,
            worst_rtt_ms,
            waited_ms,
        } => {
            let claims = Claims::new(
                sub,
                Role::Player,
                vec![*world],
                s.cfg.audience.clone(),
                now_secs(),
                s.cfg.token_ttl.as_secs(),
            )
            .with_id(format!("mm-{:016x}", rand::random::<u64>()));
            let token = match s.cfg.signer.issue(&claims) {
                Ok(t) => t,
                Err(e) => {
                    return TicketStatus {
                        ticket: ticket_name(rec.ticket.id),
                        game: rec.ticket.game.clone(),
                        players: players(rec),
                        waited_ms: *waited_ms,
                        state: TicketState::Failed {
                            error: ApiError::new(ErrorKind::Unavailable, e.to_string()),
                        },
                    }
                }
            };
            s.metrics.tokens_issued.inc();
            let relays = crate::estimate::relays_for(
                view,
                origin,
                &rec.relay_rtt_ms,
                rec.coords,
                RELAYS_PER_PLAYER,
            );
            (
                *waited_ms,
                TicketState::Matched(MatchFound {
                    world: *world,
                    origin: origin.clone(),
                    token,
                    relays,
                    teams: teams.clone(),
                    team: teams
                        .iter()
                        .position(|t| t.iter().any(|p| p == sub))
                        .unwrap_or(0),
                    worst_rtt_ms: *worst_rtt_ms,
                }),
            )
        }
    };
    TicketStatus {
        ticket: ticket_name(rec.ticket.id),
        game: rec.ticket.game.clone(),
        players: players(rec),
        waited_ms,
        state,
    }
}

fn players(rec: &TicketRecord) -> Vec<String> {
    rec.ticket
        .members
        .iter()
        .map(|m| m.player.clone())
        .collect()
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct PollParams {
    wait_secs: Option<u64>,
}

/// The record of ticket `id` and the view's relays, if `sub` is one of its
/// players.
fn lookup(
    s: &Shared,
    id: TicketId,
    sub: &str,
) -> Result<(TicketRecord, ClusterView), Box<Response>> {
    let v = s.view.borrow();
    let Some(rec) = v
        .records
        .get(&ticket_key(&s.cfg.queue, id))
        .and_then(|b| decode::<TicketRecord>(b))
    else {
        drop(v);
        return Err(Box::new(fail(
            s,
            ErrorKind::NotFound,
            format!("no ticket {}", ticket_name(id)),
        )));
    };
    if !rec.ticket.members.iter().any(|m| m.player == sub) {
        drop(v);
        return Err(Box::new(fail(
            s,
            ErrorKind::Forbidden,
            format!("{sub} is not in this ticket"),
        )));
    }
    Ok((rec, nodes_of(&v)))
}

async fn poll(
    State(s): S,
    Path(id): Path<String>,
    headers: HeaderMap,
    Query(p): Query<PollParams>,
) -> Response {
    let claims = match auth(&s, &headers) {
        Ok(c) => c,
        Err(r) => return *r,
    };
    let Some(id) = parse_ticket_name(&id) else {
        return fail(&s, ErrorKind::NotFound, format!("no ticket {id}"));
    };
    let wait = Duration::from_secs(p.wait_secs.unwrap_or(0).min(MAX_WAIT_SECS));
    let deadline = tokio::time::Instant::now() + wait;
    let mut view = s.view.clone();
    let key = ticket_key(&s.cfg.queue, id);
    loop {
        let visible = view.borrow_and_update().records.contains_key(&key);
        // A ticket queued through another instance (or just now) may not be
        // in this instance's view yet: a long poll waits for it.
        if !visible && tokio::time::Instant::now() < deadline {
            if let Ok(Err(_)) = tokio::time::timeout_at(deadline, view.changed()).await {
                return fail(&s, ErrorKind::Unavailable, "shutting down");
            }
            continue;
        }
        let (rec, v) = match lookup(&s, id, &claims.sub) {
            Ok(x) => x,
            Err(r) => return *r,
        };
        if rec.state != Stored::Queued || tokio::time::Instant::now() >= deadline {
            return Json(status_of(&s, &v, &rec, &claims.sub)).into_response();
        }
        match tokio::time::timeout_at(deadline, view.changed()).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return fail(&s, ErrorKind::Unavailable, "shutting down"),
            Err(_) => {}
        }
    }
}

async fn cancel(State(s): S, Path(id): Path<String>, headers: HeaderMap) -> Response {
    let claims = match auth(&s, &headers) {
        Ok(c) => c,
        Err(r) => return *r,
    };
    let Some(id) = parse_ticket_name(&id) else {
        return fail(&s, ErrorKind::NotFound, format!("no ticket {id}"));
    };
    let (rec, v) = match lookup(&s, id, &claims.sub) {
        Ok(x) => x,
        Err(r) => return *r,
    };
    if rec.state != Stored::Queued {
        return Json(status_of(&s, &v, &rec, &claims.sub)).into_response();
    }
    let w = RecordWrite {
        puts: vec![(cancel_key(&s.cfg.queue, id), bytes::Bytes::new())],
        ..RecordWrite::default()
    };
    if let Err(e) = s.control.write_records(w).await {
        return fail(&s, ErrorKind::Unavailable, e.to_string());
    }
    (
        StatusCode::ACCEPTED,
        Json(status_of(&s, &v, &rec, &claims.sub)),
    )
        .into_response()
}

async fn status(State(s): S) -> Response {
    let stats = *s
        .stats
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let v = s.view.borrow();
    let queued = v
        .records_under(&tickets_prefix(&s.cfg.queue))
        .filter_map(|(_, b)| decode::<TicketRecord>(b))
        .filter(|r| r.state == Stored::Queued)
        .count();
    let body = serde_json::json!({
        "node": s.cfg.node_id,
        "queue": s.cfg.queue,
        "leader": v.leaders.get(&leader_role(&s.cfg.queue)),
        "leading": s.leading.load(Ordering::SeqCst),
        "queued": queued,
        "games": s.cfg.games,
        "stats": stats,
    });
    Json(body).into_response()
}

async fn rating(State(s): S, Path(player): Path<String>) -> Response {
    match s.book.rating(&player) {
        Ok(r) => Json(serde_json::json!({ "player": player, "mu": r.mu, "sigma": r.sigma }))
            .into_response(),
        Err(e) => fail(&s, ErrorKind::Unavailable, e.to_string()),
    }
}
