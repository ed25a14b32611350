//! The world's state as an operator reads it (`/status`, `skylane world
//! status`): game, phase, tick, sessions, and the replication side (standbys,
//! lag, verification, divergence).

use super::super::mailbox::OriginStatus;
use super::Actor;
use crate::core::Core;

impl Actor {
    /// The world's status now.
    pub(super) fn status(&self) -> OriginStatus {
        let ws = self.core.world_state();
        OriginStatus {
            world: self.host.0,
            game: self.core.game().to_string(),
            phase: format!("{:?}", ws.phase).to_lowercase(),
            players: ws.players,
            capacity: ws.capacity,
            epoch: self.epoch,
            tick: self.core.tick(),
            state_hash: self.core.state_hash().to_string(),
            sessions: self.routes.sessions(),
            relays: self.relays.len(),
            standbys: self
                .gate
                .followers()
                .into_iter()
                .map(|(n, t)| format!("{n}@{t}"))
                .collect(),
            min_acks: self.gate.required(),
            lag_ticks: self.lag_ticks(),
            lag_bytes: self.lag_bytes(),
            verified_tick: self.gate.verified(),
            diverged_at: self.gate.suspect().map(|(t, _)| *t),
            diverged_entities: self
                .divergence
                .as_ref()
                .map(|e| e.entities.iter().map(|e| e.0).collect())
                .unwrap_or_default(),
            started_unix_us: self.clock.base_unix_us,
        }
    }
}
