//! The directory an origin's tasks share: which worlds run here (each its own
//! task and mailbox), which world each session belongs to, and the relay links
//! that are up. Link readers route every message through it; a world added
//! later is introduced to every link that is already up, and a link that comes
//! up later to every world, exactly once either way (both happen under the one
//! lock).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use quinn::Connection;
use skylane_proto::{RelayId, SessionId, WorldId};
use tokio::sync::mpsc;

use crate::routes::LinkId;

use super::lanes::DownLane;
use super::mailbox::Cmd;

/// A relay link that is up.
#[derive(Clone)]
pub(crate) struct LinkEntry {
    pub(crate) relay: RelayId,
    pub(crate) conn: Connection,
    pub(crate) lanes: Vec<DownLane>,
}

impl LinkEntry {
    pub(crate) fn up(&self, id: LinkId) -> Cmd {
        Cmd::RelayUp {
            id,
            relay: self.relay,
            conn: self.conn.clone(),
            lanes: self.lanes.clone(),
        }
    }
}

/// Worlds, sessions and links.
#[derive(Default)]
pub(crate) struct Directory {
    pub(crate) worlds: HashMap<WorldId, mpsc::Sender<Cmd>>,
    pub(crate) sessions: HashMap<SessionId, WorldId>,
    pub(crate) links: HashMap<LinkId, LinkEntry>,
}

/// The shared directory.
#[derive(Clone, Default)]
pub(crate) struct SharedDir(Arc<Mutex<Directory>>);

impl SharedDir {
    pub(crate) fn lock(&self) -> MutexGuard<'_, Directory> {
        // Nothing awaits while holding it; a panic elsewhere leaves plain maps.
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The mailbox of `world`.
    pub(crate) fn world(&self, world: WorldId) -> Option<mpsc::Sender<Cmd>> {
        self.lock().worlds.get(&world).cloned()
    }

    /// A session opens on `world`: its mailbox, with the session recorded.
    pub(crate) fn open(&self, session: SessionId, world: WorldId) -> Option<mpsc::Sender<Cmd>> {
        let mut d = self.lock();
        let tx = d.worlds.get(&world).cloned()?;
        d.sessions.insert(session, world);
        Some(tx)
    }

    /// The mailbox of the world `session` belongs to.
    pub(crate) fn of_session(&self, session: SessionId) -> Option<mpsc::Sender<Cmd>> {
        let d = self.lock();
        let w = d.sessions.get(&session)?;
        d.worlds.get(w).cloned()
    }

    /// A session is gone for good.
    pub(crate) fn forget_session(&self, session: SessionId) {
        self.lock().sessions.remove(&session);
    }

    /// Forgets `session` if it still belongs to `world` (it may have opened
    /// on another world of this origin since).
    pub(crate) fn forget_session_of(&self, session: SessionId, world: WorldId) {
        let mut d = self.lock();
        if d.sessions.get(&session) == Some(&world) {
            d.sessions.remove(&session);
        }
    }

    /// A link comes up: recorded, and the worlds to tell.
    pub(crate) fn link_up(&self, id: LinkId, entry: LinkEntry) -> Vec<mpsc::Sender<Cmd>> {
        let mut d = self.lock();
        d.links.insert(id, entry);
        d.worlds.values().cloned().collect()
    }

    /// A link went down: forgotten, and the worlds to tell.
    pub(crate) fn link_down(&self, id: LinkId) -> Vec<mpsc::Sender<Cmd>> {
        let mut d = self.lock();
        d.links.remove(&id);
        d.worlds.values().cloned().collect()
    }

    /// Links up.
    pub(crate) fn links(&self) -> usize {
        self.lock().links.len()
    }

    /// A world starts: recorded, and the links to introduce it to. `false` if
    /// a world with that id already runs here.
    pub(crate) fn add_world(
        &self,
        world: WorldId,
        tx: mpsc::Sender<Cmd>,
    ) -> Option<Vec<(LinkId, LinkEntry)>> {
        let mut d = self.lock();
        if d.worlds.contains_key(&world) {
            return None;
        }
        d.worlds.insert(world, tx);
        Some(d.links.iter().map(|(k, v)| (*k, v.clone())).collect())
    }

    /// A world is removed: its mailbox, and its sessions forgotten.
    pub(crate) fn remove_world(&self, world: WorldId) -> Option<mpsc::Sender<Cmd>> {
        let mut d = self.lock();
        let tx = d.worlds.remove(&world)?;
        d.sessions.retain(|_, w| *w != world);
        Some(tx)
    }

    /// Every world's mailbox, in id order.
    pub(crate) fn all_worlds(&self) -> Vec<(WorldId, mpsc::Sender<Cmd>)> {
        let d = self.lock();
        let mut v: Vec<_> = d.worlds.iter().map(|(k, v)| (*k, v.clone())).collect();
        v.sort_by_key(|(k, _)| *k);
        v
    }
}
