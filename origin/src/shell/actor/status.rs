//! The world's state as an operator reads it (`/status`, `skylane world
//! status`): game, phase, tick, sessions, and the replication side (standbys,
//! lag, verification, divergence), and the world's state as relays are told
//! it.

use super::super::mailbox::OriginStatus;
use skylane_proto::LinkMsg;

use super::{frame, Actor, LinkId};
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

    /// Tells every relay link the world's state and this owner's epoch.
    pub(super) fn announce(&mut self, to: Option<LinkId>) {
        let mut ws = self.core.world_state();
        ws.epoch = self.epoch;
        ws.host = self.host;
        let f = frame(&LinkMsg::WorldState(ws));
        let targets: Vec<LinkId> = match to {
            Some(id) => vec![id],
            None => self.relays.keys().copied().collect(),
        };
        for id in targets {
            self.send(id, 0, f.clone());
        }
    }
}
