//! The world task's analytics hooks: sampled actions in, their outcomes
//! (counted in the `actions` metric too) and the world's phases out (rows
//! built by [`crate::shell::analytics`]).

use skylane_proto::{Action, ActionResult, SessionId, WorldState};
use tokio::time::Instant;

use super::Actor;
use crate::core::Core;
use crate::shell::analytics::phase_row;

impl Actor {
    /// An action from a relay, before the engine takes it.
    pub(super) fn tap_action(&mut self, session: SessionId, action: &Action) {
        if let Some(tap) = self.analytics.get() {
            let every = tap.sample_every;
            self.sampler
                .handle_action(Instant::now(), every, session, action.seq, action.class);
        }
    }

    /// An action's outcome, as it leaves: counted, and sampled.
    pub(super) fn result_out(&mut self, session: SessionId, result: &ActionResult) {
        if !matches!(result.outcome, skylane_proto::Outcome::Unknown { .. }) {
            let name = crate::shell::analytics::outcome_name(&result.outcome);
            crate::metrics::OriginMetrics::count(&self.metrics.actions, name);
        }
        let Some(tap) = self.analytics.get() else {
            return;
        };
        let at_ms = self.clock.now_us() / 1000;
        let world = self.core.world_id().0;
        if let Some(row) =
            self.sampler
                .handle_result(Instant::now(), at_ms, tap, world, session, result)
        {
            tap.emitter.emit(row);
        }
    }

    /// The world's phase changed (as told to relays and the control plane).
    pub(super) fn tap_phase(&self, ws: &WorldState) {
        let at_ms = self.clock.now_us() / 1000;
        self.analytics.phase(phase_row(at_ms, self.core.game(), ws));
    }
}
