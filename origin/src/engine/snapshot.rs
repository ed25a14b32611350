//! The engine's state hash, and its snapshot and restore (what the journal
//! keeps and a restart starts from).

use std::collections::VecDeque;

use rustc_hash::FxHashMap as HashMap;
use skylane_proto::{ChainSigner, Hash32};

use crate::interest::Grid;
use crate::world::World;

use super::channels::ChannelLog;
use super::{Engine, EngineConfig, EngineSnapshot, EngineStats};

impl<W: World> Engine<W> {
    /// The world's state hash now.
    pub fn state_hash(&self) -> Hash32 {
        self.world.state_hash()
    }

    /// A snapshot of the whole engine (world included).
    pub fn snapshot(&self) -> EngineSnapshot<W>
    where
        W: Clone,
    {
        let mut sessions: Vec<_> = self.sessions.iter().map(|(k, v)| (*k, v.clone())).collect();
        sessions.sort_by_key(|(k, _)| *k);
        let mut banned: Vec<_> = self.banned.iter().cloned().collect();
        banned.sort();
        let mut channels: Vec<_> = self
            .channels
            .iter()
            .map(|(c, l)| (*c, l.next_seq, l.last_hash, l.subscribers))
            .collect();
        channels.sort_by_key(|(c, ..)| *c);
        EngineSnapshot {
            tick: self.tick,
            next_tick_us: self.next_tick_us,
            world: self.world.clone(),
            sessions,
            banned,
            channels,
            interest: self.interest.clone(),
            detector: self.detector.clone(),
            applied: self.applied.clone(),
            staged: self.staged.clone(),
            life: self.life.clone(),
            zone: self.zone.clone(),
        }
    }

    /// An engine restarted from `snap`, signing with `signer` (the same key, so the
    /// hash chains continue).
    pub fn restore(
        snap: EngineSnapshot<W>,
        grid: Grid,
        cfg: EngineConfig,
        mut signer: ChainSigner,
    ) -> Self {
        let validators = snap.world.validators();
        let mut channels = HashMap::default();
        for (c, next_seq, last_hash, subscribers) in snap.channels {
            signer.resume(c, last_hash);
            channels.insert(
                c,
                ChannelLog {
                    next_seq,
                    last_hash,
                    history: VecDeque::new(),
                    history_bytes: 0,
                    subscribers,
                    keyframed: None,
                    skipped: 0,
                },
            );
        }
        Self {
            endowment: None,
            world: snap.world,
            cfg,
            validators,
            signer,
            interest: snap.interest,
            detector: snap.detector,
            tick: snap.tick,
            next_tick_us: snap.next_tick_us,
            sessions: snap.sessions.into_iter().collect(),
            banned: snap.banned.into_iter().collect(),
            accepted: 0,
            applied: snap.applied,
            channels,
            outputs: VecDeque::new(),
            staged: snap.staged,
            life: snap
                .life
                .or_else(|| cfg.lifecycle.map(crate::lifecycle::Lifecycle::new)),
            border: snap
                .zone
                .as_ref()
                .map(|z| Box::new(super::border::Border::new(cfg.world, &z.setup, cfg.tick_hz))),
            grid: match snap
                .zone
                .as_ref()
                .and_then(|z| z.setup.layout.rect(z.setup.zone))
            {
                // A zone's grid is clipped to its cells (as `enter_zone` did).
                Some(cells) => Grid {
                    clip: Some(*cells),
                    ..grid
                },
                None => grid,
            },
            zone: snap.zone,
            waiting: false,
            stats: EngineStats::default(),
            feed: false,
        }
    }
}
