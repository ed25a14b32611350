//! What `/status` shows of a relay.

use serde::Serialize;

/// A relay's state as `/status` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct RelayStatus {
    /// Relay id.
    pub relay: u32,
    /// Region.
    pub region: String,
    /// Whether it is draining.
    pub draining: bool,
    /// Client connections.
    pub connections: usize,
    /// Sessions with a live connection.
    pub sessions_connected: usize,
    /// Sessions waiting for a resume.
    pub sessions_detached: usize,
    /// Origin links.
    pub origins: Vec<OriginStatus>,
    /// Chosen path per world.
    pub routes: Vec<RouteStatus>,
    /// Batches received from origins.
    pub batches_in: u64,
    /// Frames handed to clients.
    pub frames_out: u64,
}

/// One origin link in [`RelayStatus`].
#[derive(Debug, Clone, Serialize)]
pub struct OriginStatus {
    /// Origin id.
    pub id: u32,
    /// Address.
    pub addr: String,
    /// Whether the link is up.
    pub up: bool,
    /// Smoothed RTT in milliseconds (quinn's estimate).
    pub rtt_ms: Option<f64>,
}

/// One world's route in [`RelayStatus`].
#[derive(Debug, Clone, Serialize)]
pub struct RouteStatus {
    /// World.
    pub world: u64,
    /// `direct:<origin>`, `via:<relay>:<origin>` or `unreachable`.
    pub path: String,
}
