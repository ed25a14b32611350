//! The origin's world administration over HTTP, on the control plane:
//!
//! * `POST /worlds` with a [`WorldSpec`] as JSON: validated, placed on an origin
//!   with room (any in the cluster), and answered once its owner has claimed it
//!   (`201` with the record, owner and epoch included), or `202` with the record
//!   if no owner showed up within [`CREATE_WAIT`].
//! * `GET /worlds`: every world the control plane knows, with owner and status.
//! * `GET /worlds/{id}`: one of them (`404` if unknown).
//! * `DELETE /worlds/{id}`: ends it (`202`): its owner ends the game, publishes the
//!   result, and removes it after its grace.
//! * `GET /worlds/{id}/status`: the record, its owner's admin address, and the
//!   replication state (standbys, lag, last verified tick) when this origin
//!   owns it ([`hosted_router`]; elsewhere ask the owner's admin).
//! * `POST /worlds/{id}/handover` (on the owner's admin): moves the world to its
//!   standby on purpose: ticks stop, the standby acknowledges the last one, the
//!   owner releases the world, the standby claims it. Answers once the new
//!   owner holds it, with the gap.
//!
//! * `GET /bans`: every subject banned from the cluster's relays, with until
//!   when and why. `POST /bans` with `{"sub", "for_secs", "reason"}`: bans a
//!   subject (every relay refuses its hellos and closes its sessions within a
//!   view change). `DELETE /bans/{sub}`: lifts it.
//!
//! * `GET /content/manifest`: the signed content manifest announced on the
//!   control plane (`404` if none). `POST /content/manifest` with a
//!   `manifest.signed` file's bytes: puts it there (`201`), where every
//!   relay takes it from its next view; `400` if it does not parse, `413`
//!   beyond a record (16 KiB), `409` if its serial is not newer than the
//!   announced one. The signature is checked by the relays.
//!
//! * `GET /violations?player=P&since_secs=S&limit=N` ([`violations_router`],
//!   on every origin, control plane or not): the violations the origin's store
//!   kept (its own and the edge's, as relays report them), the most recent `N`
//!   (default 100, at most 10,000) of player `P` (default: everyone's) in the
//!   last `S` seconds (default: all), oldest first; `404` without a store.
//!
//! * `GET /ledger` ([`ledger_router`], on every origin with a ledger): the
//!   economy's running totals (coins and items held and minted, transactions,
//!   duplicates, refused) and `conserved`. `GET /ledger/history?player=P&limit=N`:
//!   `P`'s wallet and the most recent `N` transactions touching it (or
//!   anyone's), each with its before and after balances; `404` without a
//!   ledger.
//!
//! Errors answer with a status code and `{"error": kind, "message": text}`:
//! `400` for a bad spec, `404` for an unknown world, `409` when no origin can
//! take it, `503` when the control plane is unreachable.

use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use skylane_content::{SignedManifest, MANIFEST_RECORD};
use skylane_control::{
    ControlError, PlacementHints, RecordWrite, SharedControl, WorldRecord, WorldSpec,
    MAX_RECORD_LEN,
};
use skylane_proto::WorldId;

/// How long `POST /worlds` waits for the chosen origin to claim the world.
pub const CREATE_WAIT: Duration = Duration::from_secs(5);

fn error(e: &ControlError) -> Response {
    let code = match e {
        ControlError::Spec(_) | ControlError::Invalid(_) => StatusCode::BAD_REQUEST,
        ControlError::UnknownWorld(_) => StatusCode::NOT_FOUND,
        ControlError::Placement(_)
        | ControlError::Owned { .. }
        | ControlError::Contention(_)
        | ControlError::NotLeader { .. } => StatusCode::CONFLICT,
        ControlError::Unavailable(_)
        | ControlError::LeaseLost(_)
        | ControlError::Fenced { .. }
        | ControlError::Corrupt { .. } => StatusCode::SERVICE_UNAVAILABLE,
    };
    (
        code,
        Json(serde_json::json!({ "error": e.label(), "message": e.to_string() })),
    )
        .into_response()
}

async fn create(State(control): State<SharedControl>, Json(spec): Json<WorldSpec>) -> Response {
    // A zoned world is never claimed itself: it is ready once every zone
    // has an owner.
    let zoned = spec.is_zoned();
    if let Err(message) = crate::games::check_zoning(&spec) {
        return (
            StatusCode::BAD_REQUEST,
            Json(serde_json::json!({ "error": "spec", "message": message })),
        )
            .into_response();
    }
    let rec = match control.create_world(spec, &PlacementHints::default()).await {
        Ok(r) => r,
        Err(e) => return error(&e),
    };
    let id = rec.id;
    let owned = async {
        let mut rx = control.watch().await.ok()?;
        loop {
            {
                let v = rx.borrow_and_update();
                if let Some(r) = v.worlds.get(&id) {
                    let zones = v.zones_of(id);
                    let ready = if zoned {
                        !zones.is_empty() && zones.iter().all(|z| z.owner.is_some())
                    } else {
                        r.owner.is_some()
                    };
                    if ready {
                        return Some(r.clone());
                    }
                }
            }
            rx.changed().await.ok()?;
        }
    };
    match tokio::time::timeout(CREATE_WAIT, owned).await {
        Ok(Some(r)) => (StatusCode::CREATED, Json(r)).into_response(),
        _ => (StatusCode::ACCEPTED, Json(rec)).into_response(),
    }
}

async fn list(State(control): State<SharedControl>) -> Response {
    match control.view().await {
        Ok(v) => Json(v.worlds.into_values().collect::<Vec<WorldRecord>>()).into_response(),
        Err(e) => error(&e),
    }
}

async fn one(State(control): State<SharedControl>, Path(id): Path<u64>) -> Response {
    match control.view().await {
        Ok(v) => match v.worlds.get(&WorldId(id)) {
            Some(r) => Json(r.clone()).into_response(),
            None => error(&ControlError::UnknownWorld(WorldId(id))),
        },
        Err(e) => error(&e),
    }
}

async fn end(State(control): State<SharedControl>, Path(id): Path<u64>) -> Response {
    match control.end_world(WorldId(id)).await {
        Ok(()) => (
            StatusCode::ACCEPTED,
            Json(serde_json::json!({ "world": id, "ending": true })),
        )
            .into_response(),
        Err(e) => error(&e),
    }
}

#[derive(Clone)]
struct Hosted {
    control: SharedControl,
    handle: crate::OriginHandle,
}

async fn status(State(h): State<Hosted>, Path(id): Path<u64>) -> Response {
    let w = WorldId(id);
    let v = match h.control.view().await {
        Ok(v) => v,
        Err(e) => return error(&e),
    };
    let Some(rec) = v.worlds.get(&w) else {
        return error(&ControlError::UnknownWorld(w));
    };
    let owner_admin = rec
        .owner
        .as_ref()
        .and_then(|o| v.nodes.get(&o.node))
        .and_then(|n| n.admin.clone());
    let replication = h.handle.world_status(w).await;
    // The keys a player needs to check that two servers attested its events.
    let attestation_keys: std::collections::BTreeMap<&str, Option<&str>> = rec
        .owner
        .iter()
        .map(|o| o.node.as_str())
        .chain(rec.standbys.iter().map(String::as_str))
        .map(|n| {
            let key = v.nodes.get(n).and_then(|i| i.attestation_key.as_deref());
            (n, key)
        })
        .collect();
    Json(serde_json::json!({
        "record": rec,
        "owner_admin": owner_admin,
        "replication": replication,
        "attestation_keys": attestation_keys,
    }))
    .into_response()
}

async fn handover(State(h): State<Hosted>, Path(id): Path<u64>) -> Response {
    let w = WorldId(id);
    let Some(st) = h.handle.world_status(w).await else {
        return (
            StatusCode::NOT_FOUND,
            Json(serde_json::json!({ "error": "not_here", "message": format!("{w} does not run on this origin: ask its owner") })),
        )
            .into_response();
    };
    let started = tokio::time::Instant::now();
    let tick = match h.handle.handover(w).await {
        Ok(t) => t,
        Err(message) => {
            return (
                StatusCode::CONFLICT,
                Json(serde_json::json!({ "error": "no_standby", "message": message })),
            )
                .into_response()
        }
    };
    if let Err(e) = h.control.release(w, st.epoch).await {
        return error(&e);
    }
    let from = st.epoch;
    let owned = async {
        let mut rx = h.control.watch().await.ok()?;
        loop {
            if let Some(o) = rx
                .borrow_and_update()
                .worlds
                .get(&w)
                .and_then(|r| r.owner.clone())
                .filter(|o| o.epoch > from)
            {
                return Some(o);
            }
            rx.changed().await.ok()?;
        }
    };
    match tokio::time::timeout(CREATE_WAIT, owned).await {
        Ok(Some(o)) => Json(serde_json::json!({
            "world": id,
            "tick": tick,
            "from_epoch": from,
            "to": o.node,
            "epoch": o.epoch,
            "gap_ms": started.elapsed().as_millis() as u64,
        }))
        .into_response(),
        _ => (
            StatusCode::ACCEPTED,
            Json(serde_json::json!({ "world": id, "tick": tick, "released": true })),
        )
            .into_response(),
    }
}

/// The routes that need the world's own origin: `GET /worlds/{id}/status` and
/// `POST /worlds/{id}/handover` (see the module docs).
pub fn hosted_router(control: SharedControl, handle: crate::OriginHandle) -> Router {
    Router::new()
        .route("/worlds/{id}/status", get(status))
        .route("/worlds/{id}/handover", axum::routing::post(handover))
        .with_state(Hosted { control, handle })
}

/// `GET /violations` (see the module docs).
pub fn violations_router(handle: crate::OriginHandle) -> Router {
    Router::new()
        .route("/violations", get(violations))
        .with_state(handle)
}

/// `GET /ledger` and `GET /ledger/history` (see the module docs).
pub fn ledger_router(handle: crate::OriginHandle) -> Router {
    Router::new()
        .route("/ledger", get(ledger_totals))
        .route("/ledger/history", get(ledger_history))
        .with_state(handle)
}

fn no_ledger() -> Response {
    (
        StatusCode::NOT_FOUND,
        Json(serde_json::json!({
            "error": "no_ledger",
            "message": "this origin keeps no ledger (set ledger_db)",
        })),
    )
        .into_response()
}

async fn ledger_totals(State(handle): State<crate::OriginHandle>) -> Response {
    match handle.ledger_totals().await {
        Some(t) => {
            let mut v = serde_json::to_value(t).unwrap_or_default();
            if let Some(o) = v.as_object_mut() {
                o.insert("conserved".into(), t.conserved().into());
            }
            Json(v).into_response()
        }
        None => no_ledger(),
    }
}

/// `GET /ledger/history`'s query.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct HistoryParams {
    player: Option<String>,
    limit: Option<usize>,
}

async fn ledger_history(
    State(handle): State<crate::OriginHandle>,
    axum::extract::Query(p): axum::extract::Query<HistoryParams>,
) -> Response {
    match handle
        .ledger_history(p.player, p.limit.unwrap_or(100))
        .await
    {
        Some(Ok((wallet, txs))) => {
            Json(serde_json::json!({ "wallet": wallet, "transactions": txs })).into_response()
        }
        Some(Err(e)) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(serde_json::json!({ "error": "storage", "message": e.to_string() })),
        )
            .into_response(),
        None => no_ledger(),
    }
}

/// `GET /violations`'s query.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ViolationParams {
    player: Option<String>,
    since_secs: Option<u64>,
    limit: Option<usize>,
}

async fn violations(
    State(handle): State<crate::OriginHandle>,
    axum::extract::Query(p): axum::extract::Query<ViolationParams>,
) -> Response {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let q = crate::evidence::ViolationQuery {
        player: p.player,
        since_ms: p
            .since_secs
            .map_or(0, |s| now_ms.saturating_sub(s.saturating_mul(1000))),
        limit: p.limit.unwrap_or(100),
    };
    match handle.violations(q).await {
        Some(Ok(v)) => Json(v).into_response(),
        Some(Err(e)) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(serde_json::json!({ "error": "storage", "message": e.to_string() })),
        )
            .into_response(),
        None => (
            StatusCode::NOT_FOUND,
            Json(serde_json::json!({
                "error": "no_store",
                "message": "this origin keeps no violation store (set violations_db)",
            })),
        )
            .into_response(),
    }
}

/// The `/worlds` routes on `control`.
pub fn worlds_router(control: SharedControl) -> Router {
    Router::new()
        .route("/worlds", get(list).post(create))
        .route("/worlds/{id}", get(one).delete(end))
        .route("/bans", get(bans).post(ban))
        .route("/bans/{sub}", axum::routing::delete(unban))
        .route(
            "/content/manifest",
            get(content_manifest).post(announce_content),
        )
        .with_state(control)
}

fn refused(status: StatusCode, kind: &str, message: String) -> Response {
    (
        status,
        Json(serde_json::json!({ "error": kind, "message": message })),
    )
        .into_response()
}

/// The content manifest announced on the control plane (its file form).
async fn content_manifest(State(control): State<SharedControl>) -> Response {
    match control.view().await {
        Ok(v) => match v.records.get(MANIFEST_RECORD) {
            Some(b) => (
                [(axum::http::header::CONTENT_TYPE, "application/json")],
                b.clone(),
            )
                .into_response(),
            None => refused(
                StatusCode::NOT_FOUND,
                "no_manifest",
                "no content manifest was announced".into(),
            ),
        },
        Err(e) => error(&e),
    }
}

/// Puts a signed content manifest (its file form, as `skylane content
/// publish` writes `manifest.signed`) on the control plane, where every
/// relay of the cluster takes it from its next view. Its signature is the
/// relays' to check (they hold the operator's key); here it must parse, fit
/// a control-plane record and not go back in serial.
async fn announce_content(
    State(control): State<SharedControl>,
    body: axum::body::Bytes,
) -> Response {
    if body.len() > MAX_RECORD_LEN {
        return refused(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!(
                "a manifest record holds at most {MAX_RECORD_LEN} bytes, this is {}",
                body.len()
            ),
        );
    }
    let m = match SignedManifest::from_file(&body).and_then(|s| s.unverified()) {
        Ok(m) => m,
        Err(e) => return refused(StatusCode::BAD_REQUEST, "bad_manifest", e.to_string()),
    };
    let view = match control.view().await {
        Ok(v) => v,
        Err(e) => return error(&e),
    };
    let announced = view
        .records
        .get(MANIFEST_RECORD)
        .and_then(|b| SignedManifest::from_file(b).ok())
        .and_then(|s| s.unverified().ok())
        .map_or(0, |m| m.serial);
    if m.serial <= announced && announced > 0 {
        return refused(
            StatusCode::CONFLICT,
            "stale",
            format!(
                "serial {} is not newer than the announced {announced}",
                m.serial
            ),
        );
    }
    let write = RecordWrite {
        puts: vec![(MANIFEST_RECORD.to_owned(), body)],
        deletes: Vec::new(),
        leader: None,
    };
    match control.write_records(write).await {
        Ok(()) => (
            StatusCode::CREATED,
            Json(serde_json::json!({ "serial": m.serial, "packs": m.packs.len() })),
        )
            .into_response(),
        Err(e) => error(&e),
    }
}

/// A ban as `POST /bans` takes it.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct BanRequest {
    sub: String,
    for_secs: u64,
    #[serde(default)]
    reason: String,
}

async fn bans(State(control): State<SharedControl>) -> Response {
    match control.view().await {
        Ok(v) => Json(v.bans).into_response(),
        Err(e) => error(&e),
    }
}

async fn ban(State(control): State<SharedControl>, Json(b): Json<BanRequest>) -> Response {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let ban = skylane_control::Ban {
        until: now.saturating_add(b.for_secs),
        reason: b.reason,
    };
    match control.ban(&b.sub, &ban).await {
        Ok(()) => (
            StatusCode::CREATED,
            Json(serde_json::json!({ "sub": b.sub, "until": ban.until, "reason": ban.reason })),
        )
            .into_response(),
        Err(e) => error(&e),
    }
}

async fn unban(State(control): State<SharedControl>, Path(sub): Path<String>) -> Response {
    match control.unban(&sub).await {
        Ok(()) => Json(serde_json::json!({ "sub": sub, "lifted": true })).into_response(),
        Err(e) => error(&e),
    }
}
