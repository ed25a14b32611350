//! Prometheus metrics of a relay (registered under `skylane_relay_`).

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
pub(crate) use skylane_ops::KindLabel;

/// A relay's metrics. Cloning shares the same counters.
#[derive(Debug, Clone, Default)]
pub struct RelayMetrics {
    /// Client connections open.
    pub connections: Gauge,
    /// Sessions held (connected and detached).
    pub sessions: Gauge,
    /// Sessions opened afresh (resumes are counted in `resumes`).
    pub sessions_opened: Counter,
    /// Content window requests by how the cache answered (`hit`, `miss`:
    /// started a fetch, `joined`: waited on one, `refused`).
    pub content_requests: Family<KindLabel, Counter>,
    /// Fetches from the content source.
    pub content_fetches: Counter,
    /// Fetches that served nothing, by why (`hash_mismatch`, `source`,
    /// `superseded`).
    pub content_fetch_failed: Family<KindLabel, Counter>,
    /// Content requests refused, by code.
    pub content_refused: Family<KindLabel, Counter>,
    /// Content bytes sent to clients.
    pub content_bytes_served: Counter,
    /// Bytes in the pack cache.
    pub content_cache_bytes: Gauge,
    /// Manifests read from the source, by fate (`taken`, `refused`,
    /// `unreadable`).
    pub content_manifests: Family<KindLabel, Counter>,
    /// Connection attempts refused before the handshake, by reason.
    pub admission_refused: Family<KindLabel, Counter>,
    /// Hellos refused, by refusal code.
    pub refusals: Family<KindLabel, Counter>,
    /// Edge anti-cheat violations, by kind.
    pub edge_violations: Family<KindLabel, Counter>,
    /// Sessions disconnected by the edge guard.
    pub edge_disconnects: Counter,
    /// Undecodable client or link frames, by decode error.
    pub decode_errors: Family<KindLabel, Counter>,
    /// Actions forwarded to origins.
    pub actions_forwarded: Counter,
    /// Batches received from origins (one per channel per tick).
    pub batches_in: Counter,
    /// Frames handed to client connections.
    pub frames_out: Counter,
    /// Movement frames received from origins (one per cell per tick).
    pub movement_frames_in: Counter,
    /// Movement datagrams sent to clients.
    pub movement_datagrams: Counter,
    /// Movement datagrams that could not be sent (too large for the path, or
    /// datagrams refused by the peer); their states go again later.
    pub movement_datagrams_failed: Counter,
    /// Movement datagram acknowledgements received from clients.
    pub movement_acks: Counter,
    /// Movement datagrams sent a second time because the client's path loses
    /// packets (above 2%).
    pub movement_repeats: Counter,
    /// Client messages dropped by the scheduler, by reason (`expired`, `evicted`).
    pub dropped: Family<KindLabel, Counter>,
    /// Clients disconnected for falling too far behind.
    pub slow_clients: Counter,
    /// Resumed sessions.
    pub resumes: Counter,
    /// Resumes that could not be exact (the session had expired at the origin):
    /// the client was told which events it will never receive.
    pub resumes_incomplete: Counter,
    /// Worlds the control plane knows (0 without one).
    pub worlds_known: Gauge,
    /// Hellos that waited for a world being placed.
    pub hellos_parked: Counter,
    /// Frames refused from a link whose epoch for the world is older than the
    /// highest known (an old owner), by message.
    pub fenced_frames: Family<KindLabel, Counter>,
    /// Resumes that took a session over from a connection still attached to it.
    pub takeovers: Counter,
    /// Origin links up.
    pub links_up: Gauge,
    /// Origin link (re)connections.
    pub link_connects: Counter,
    /// Pings and pongs not sent because an origin link's control lane was full.
    pub link_control_dropped: Counter,
    /// Origin links closed because their control lane was full (their sessions
    /// are re-opened on the next link).
    pub link_backlog_cuts: Counter,
    /// Go-aways sent.
    pub go_aways: Counter,
    /// Origin links this relay forwards for peer relays.
    pub forwarded_links: Gauge,
    /// Path changes to an origin (direct or through a peer).
    pub route_changes: Counter,
    /// Actions answered `Unknown` because their origin link failed in flight.
    pub actions_unknown: Counter,
    /// Spectators watching a feed.
    pub spectators: Gauge,
    /// Spectator feed frames received from origins.
    pub feed_frames_in: Counter,
    /// Frames handed to spectators' queues.
    pub spectator_frames: Counter,
    /// Times a spectator's queue was full (it skips to the next keyframe).
    pub spectator_skips: Counter,
    /// Spectator subscriptions refused, by reason.
    pub spectators_refused: Family<KindLabel, Counter>,
    /// Spectator subscriptions whose delay was raised to the spectator's tier
    /// (its token's minimum delay).
    pub spectator_delays_raised: Counter,
    /// Relays in this relay's directory (configured and learnt from the
    /// control plane).
    pub directory_relays: Gauge,
    /// Watched worlds whose feed moved to a new owner (failover, handover).
    pub spectator_feeds_moved: Counter,
    /// GeoIP lookups whose record did not decode as a location (the client got
    /// the directory order).
    pub geoip_undecodable: Counter,
    /// Times the token key file changed and its key set replaced the one in
    /// use.
    pub token_key_reloads: Counter,
    /// Times the token key file changed but could not be read or parsed (the
    /// keys in use stay).
    pub token_key_errors: Counter,
    /// Times the revocation file changed and its list replaced the one in use.
    pub revocation_reloads: Counter,
    /// Times the revocation file changed but could not be read or parsed.
    pub revocation_errors: Counter,
    /// Sessions closed because their subject was revoked.
    pub revoked_sessions: Counter,
    /// Hellos refused because their subject is cooling down after an edge cut
    /// or is under an origin's sanction (a kick's cool-down, a ban).
    pub edge_cooldown_refusals: Counter,
    /// Sanctions origins sent (applied here), by kind (`kick`, `ban`).
    pub sanctions: Family<KindLabel, Counter>,
    /// Errors origins reported on their links (unknown session, unknown world,
    /// a refused join, a kick), by the origin's error code.
    pub origin_errors: Family<KindLabel, Counter>,
    /// Sessions moved to another zone's owner of a zoned world (their
    /// avatar crossed a border).
    pub zone_moves: Counter,
    /// Actions answered `Moved` by a zone their avatar was leaving, by what
    /// the relay did (`held` until the session is open where it went,
    /// `resent` there at once).
    pub zone_actions: Family<KindLabel, Counter>,
}

impl RelayMetrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn new(registry: &mut Registry) -> Self {
        let m = Self::default();
        let r = registry.sub_registry_with_prefix("skylane_relay");
        r.register(
            "connections",
            "Client connections open",
            m.connections.clone(),
        );
        r.register("sessions", "Sessions held", m.sessions.clone());
        r.register(
            "content_requests",
            "Content window requests by cache answer",
            m.content_requests.clone(),
        );
        r.register(
            "content_fetches",
            "Fetches from the content source",
            m.content_fetches.clone(),
        );
        r.register(
            "content_fetch_failed",
            "Content fetches that served nothing, by why",
            m.content_fetch_failed.clone(),
        );
        r.register(
            "content_refused",
            "Content requests refused, by code",
            m.content_refused.clone(),
        );
        r.register(
            "content_bytes_served",
            "Content bytes sent to clients",
            m.content_bytes_served.clone(),
        );
        r.register(
            "content_cache_bytes",
            "Bytes in the pack cache",
            m.content_cache_bytes.clone(),
        );
        r.register(
            "content_manifests",
            "Content manifests read from the source, by fate",
            m.content_manifests.clone(),
        );
        r.register(
            "sessions_opened",
            "Sessions opened afresh (resumes are counted in resumes)",
            m.sessions_opened.clone(),
        );
        r.register(
            "zone_moves",
            "Sessions moved to another zone's owner",
            m.zone_moves.clone(),
        );
        r.register(
            "zone_actions",
            "Actions answered Moved by a zone, by what was done (held, resent)",
            m.zone_actions.clone(),
        );
        r.register(
            "origin_errors",
            "Errors origins reported on their links, by code",
            m.origin_errors.clone(),
        );
        r.register(
            "geoip_undecodable",
            "GeoIP lookups whose record did not decode as a location",
            m.geoip_undecodable.clone(),
        );
        r.register(
            "token_key_reloads",
            "Token key sets loaded from a changed key file",
            m.token_key_reloads.clone(),
        );
        r.register(
            "revocation_reloads",
            "Revocation lists loaded from a changed revocation file",
            m.revocation_reloads.clone(),
        );
        r.register(
            "revocation_errors",
            "Changed revocation files that could not be loaded (the list in use stays)",
            m.revocation_errors.clone(),
        );
        r.register(
            "edge_cooldown_refusals",
            "Hellos refused because their subject is cooling down after an edge cut or an origin's sanction",
            m.edge_cooldown_refusals.clone(),
        );
        r.register(
            "sanctions",
            "Sanctions origins sent, by kind",
            m.sanctions.clone(),
        );
        r.register(
            "revoked_sessions",
            "Sessions closed because their subject was revoked",
            m.revoked_sessions.clone(),
        );
        r.register(
            "token_key_errors",
            "Changed token key files that could not be loaded (the keys in use stay)",
            m.token_key_errors.clone(),
        );
        r.register(
            "admission_refused",
            "Connection attempts refused before the handshake",
            m.admission_refused.clone(),
        );
        r.register("refusals", "Hellos refused by code", m.refusals.clone());
        r.register(
            "edge_violations",
            "Edge anti-cheat violations by kind",
            m.edge_violations.clone(),
        );
        r.register(
            "edge_disconnects",
            "Sessions disconnected by the edge guard",
            m.edge_disconnects.clone(),
        );
        r.register(
            "decode_errors",
            "Undecodable frames by error",
            m.decode_errors.clone(),
        );
        r.register(
            "actions_forwarded",
            "Actions forwarded to origins",
            m.actions_forwarded.clone(),
        );
        r.register(
            "batches_in",
            "Batches received from origins",
            m.batches_in.clone(),
        );
        r.register(
            "frames_out",
            "Frames handed to clients",
            m.frames_out.clone(),
        );
        r.register(
            "movement_frames_in",
            "Movement frames (a cell's states of a tick) received from origins",
            m.movement_frames_in.clone(),
        );
        r.register(
            "movement_datagrams",
            "Movement datagrams sent to clients",
            m.movement_datagrams.clone(),
        );
        r.register(
            "movement_datagrams_failed",
            "Movement datagrams that could not be sent (their states go again)",
            m.movement_datagrams_failed.clone(),
        );
        r.register(
            "movement_repeats",
            "Movement datagrams sent twice on lossy paths",
            m.movement_repeats.clone(),
        );
        r.register(
            "movement_acks",
            "Movement datagram acknowledgements from clients",
            m.movement_acks.clone(),
        );
        r.register(
            "dropped",
            "Client messages dropped by reason",
            m.dropped.clone(),
        );
        r.register(
            "slow_clients",
            "Clients disconnected for falling behind",
            m.slow_clients.clone(),
        );
        r.register("resumes", "Sessions resumed", m.resumes.clone());
        r.register(
            "resumes_incomplete",
            "Resumes the origin could not make exact (expired sessions)",
            m.resumes_incomplete.clone(),
        );
        r.register(
            "worlds_known",
            "Worlds the control plane knows",
            m.worlds_known.clone(),
        );
        r.register(
            "hellos_parked",
            "Hellos that waited for a world being placed",
            m.hellos_parked.clone(),
        );
        r.register(
            "fenced_frames",
            "Frames refused from an old owner's link, by message",
            m.fenced_frames.clone(),
        );
        r.register(
            "takeovers",
            "Resumes that took a session over from a stale connection",
            m.takeovers.clone(),
        );
        r.register("links_up", "Origin links up", m.links_up.clone());
        r.register(
            "link_connects",
            "Origin link connections made",
            m.link_connects.clone(),
        );
        r.register(
            "link_control_dropped",
            "Link pings and pongs dropped behind a full control lane",
            m.link_control_dropped.clone(),
        );
        r.register(
            "link_backlog_cuts",
            "Origin links closed because their control lane was full",
            m.link_backlog_cuts.clone(),
        );
        r.register("go_aways", "Go-aways sent", m.go_aways.clone());
        r.register(
            "forwarded_links",
            "Origin links forwarded for peer relays",
            m.forwarded_links.clone(),
        );
        r.register(
            "route_changes",
            "Path changes to origins",
            m.route_changes.clone(),
        );
        r.register("spectators", "Spectators watching", m.spectators.clone());
        r.register(
            "feed_frames_in",
            "Spectator feed frames received from origins",
            m.feed_frames_in.clone(),
        );
        r.register(
            "spectator_frames",
            "Frames handed to spectators",
            m.spectator_frames.clone(),
        );
        r.register(
            "spectator_skips",
            "Spectator queues found full (skip to the next keyframe)",
            m.spectator_skips.clone(),
        );
        r.register(
            "spectators_refused",
            "Spectator subscriptions refused by reason",
            m.spectators_refused.clone(),
        );
        r.register(
            "directory_relays",
            "Relays offered to clients (configured and learnt from the control plane)",
            m.directory_relays.clone(),
        );
        r.register(
            "spectator_feeds_moved",
            "Watched worlds whose feed subscription moved to the world's new owner",
            m.spectator_feeds_moved.clone(),
        );
        r.register(
            "spectator_delays_raised",
            "Spectator subscriptions whose delay was raised to the token's minimum",
            m.spectator_delays_raised.clone(),
        );
        r.register(
            "actions_unknown",
            "Actions whose origin link failed before the outcome",
            m.actions_unknown.clone(),
        );
        m
    }

    /// Counts one `kind` in `family`.
    pub fn count(family: &Family<KindLabel, Counter>, kind: impl Into<String>) {
        skylane_ops::count(family, kind);
    }
}
