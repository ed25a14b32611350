//! A matchmaker (`skylane-match`'s service) on a [`LocalNet`]: its world
//! tokens are signed by the deployment's matchmaker key (which the relays
//! trust), GeoIP from the demo database; the demo's rooms and the tests
//! queue through it.

use std::net::SocketAddr;
use std::time::Duration;

use prometheus_client::registry::Registry;
use skylane_match::coordinator::GameConfig;
use skylane_match::service::{MatchService, ServiceConfig, ServiceError, PLACE_WAIT};
use skylane_match::Windows;

use crate::local::{LocalNet, AUDIENCE};

/// The games the demo queues: tic-tac-toe duels and arena matches of two
/// teams of two.
pub fn demo_games() -> Vec<GameConfig> {
    vec![
        GameConfig {
            tick_hz: 10,
            ..GameConfig::new("tictactoe", 2, 1)
        },
        GameConfig::new("arena", 2, 2),
    ]
}

/// A matchmaker instance `node_id` for `games` on `net`'s control plane,
/// serving on a free loopback port; `ratings_db` as in [`ServiceConfig`].
pub async fn start(
    net: &LocalNet,
    node_id: &str,
    games: Vec<GameConfig>,
    lease_ttl: Duration,
    ratings_db: Option<std::path::PathBuf>,
) -> Result<MatchService, ServiceError> {
    let geo = net.geo.clone();
    let cfg = ServiceConfig {
        node_id: node_id.into(),
        queue: "default".into(),
        region: "local".into(),
        games,
        windows: Windows::default(),
        verifier: net.tokens.verifier(AUDIENCE),
        signer: net.matchmaker_tokens.clone(),
        audience: AUDIENCE.into(),
        token_ttl: Duration::from_secs(600),
        lease_ttl,
        ratings_db,
        locate: Some(std::sync::Arc::new(move |ip| geo.locate(ip))),
        place_wait: PLACE_WAIT,
        analytics: net.analytics.clone(),
    };
    let listen = SocketAddr::from(([127, 0, 0, 1], 0));
    MatchService::start(cfg, net.control.clone(), listen, Registry::default()).await
}
