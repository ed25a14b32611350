//! The in-process control plane: one mutex-guarded store with a revision counter,
//! leases that lapse on tokio's clock (so netsim's paused time drives them), and a
//! watch that carries the latest [`ClusterView`] after every change.
//!
//! Same semantics as etcd where they matter: every write bumps the revision; an
//! owner's epoch is the revision that created its owner record (so a later owner
//! always has a higher one); records under a lease vanish when it lapses.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use skylane_proto::WorldId;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::model::{Ban, ClusterView, NodeInfo, Offer, Owner, WorldRecord, WorldSpec, WorldStatus};
use crate::placement::{place_world, PlacementHints};
use crate::{Claim, ControlError, ControlPlane, LeaseId, RecordWrite};

#[derive(Debug)]
struct Lease {
    ttl: Duration,
    deadline: Instant,
}

/// Bookkeeping beside the view: leases and what lives under them.
#[derive(Debug, Default)]
struct State {
    next_lease: LeaseId,
    next_world: u64,
    leases: HashMap<LeaseId, Lease>,
    node_leases: HashMap<String, LeaseId>,
    owner_leases: HashMap<WorldId, LeaseId>,
    offer_leases: HashMap<(WorldId, String), LeaseId>,
    leader_leases: HashMap<String, LeaseId>,
}

impl State {
    fn live(&self, lease: LeaseId) -> Result<(), ControlError> {
        if self.leases.contains_key(&lease) {
            Ok(())
        } else {
            Err(ControlError::LeaseLost(lease))
        }
    }

    /// Drops leases past their deadline and everything under them.
    fn expire(&mut self, view: &mut ClusterView, now: Instant) {
        let gone: Vec<LeaseId> = self
            .leases
            .iter()
            .filter(|(_, l)| l.deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in gone {
            self.drop_lease(view, id);
        }
    }

    fn drop_lease(&mut self, view: &mut ClusterView, id: LeaseId) {
        if self.leases.remove(&id).is_none() {
            return;
        }
        self.node_leases.retain(|node, l| {
            let keep = *l != id;
            if !keep {
                view.nodes.remove(node);
            }
            keep
        });
        self.owner_leases.retain(|w, l| {
            let keep = *l != id;
            if !keep {
                if let Some(rec) = view.worlds.get_mut(w) {
                    rec.owner = None;
                }
            }
            keep
        });
        self.leader_leases.retain(|role, l| {
            let keep = *l != id;
            if !keep {
                view.leaders.remove(role);
            }
            keep
        });
        self.offer_leases.retain(|(w, node), l| {
            let keep = *l != id;
            if !keep {
                if let Some(rec) = view.worlds.get_mut(w) {
                    rec.offers.remove(node);
                }
            }
            keep
        });
        view.revision += 1;
    }

    fn next_deadline(&self) -> Option<Instant> {
        self.leases.values().map(|l| l.deadline).min()
    }
}

#[derive(Debug)]
struct Inner {
    state: Mutex<State>,
    /// The view is the store: mutated in place under `state`'s lock, so a watcher
    /// never sees a half-applied change and nothing is copied per write.
    view: watch::Sender<ClusterView>,
    leases_changed: watch::Sender<()>,
}

/// The in-process control plane. Cheap to clone (shared state).
#[derive(Debug, Clone)]
pub struct Embedded {
    inner: Arc<Inner>,
}

impl Default for Embedded {
    fn default() -> Self {
        Self::new()
    }
}

impl Embedded {
    /// A fresh, empty store. Must be called inside a tokio runtime (a task
    /// expires leases; it ends when the last clone is dropped).
    pub fn new() -> Self {
        let (view, _) = watch::channel(ClusterView::default());
        let (leases_changed, changed_rx) = watch::channel(());
        let inner = Arc::new(Inner {
            state: Mutex::new(State::default()),
            view,
            leases_changed,
        });
        tokio::spawn(reaper(Arc::downgrade(&inner), changed_rx));
        Self { inner }
    }

    /// Runs `f` on the store (after expiring lapsed leases); watchers wake if the
    /// revision moved.
    fn write<T>(
        &self,
        f: impl FnOnce(&mut State, &mut ClusterView) -> Result<T, ControlError>,
    ) -> Result<T, ControlError> {
        let mut st = lock(&self.inner);
        let mut out = None;
        self.inner.view.send_if_modified(|view| {
            let before = view.revision;
            st.expire(view, Instant::now());
            out = Some(f(&mut st, view));
            view.revision != before
        });
        out.unwrap_or(Err(ControlError::Invalid("store closed".into())))
    }
}

/// The record of `world` if `epoch` is its owner's: the one check every fenced
/// write makes.
fn owned(
    view: &mut ClusterView,
    world: WorldId,
    epoch: u64,
) -> Result<&mut WorldRecord, ControlError> {
    let rec = view
        .worlds
        .get_mut(&world)
        .ok_or(ControlError::UnknownWorld(world))?;
    match &rec.owner {
        Some(o) if o.epoch == epoch => Ok(rec),
        other => Err(ControlError::Fenced {
            world,
            epoch,
            current: other.as_ref().map(|o| o.epoch),
        }),
    }
}

fn lock(inner: &Inner) -> MutexGuard<'_, State> {
    // A panic while holding the lock leaves at worst a lease or record one step
    // behind; the store stays usable rather than stopping the control plane.
    inner
        .state
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

async fn reaper(inner: Weak<Inner>, mut changed: watch::Receiver<()>) {
    loop {
        let deadline = {
            let Some(inner) = inner.upgrade() else { return };
            let mut st = lock(&inner);
            inner.view.send_if_modified(|view| {
                let before = view.revision;
                st.expire(view, Instant::now());
                view.revision != before
            });
            st.next_deadline()
        };
        let far = Instant::now() + Duration::from_secs(3600);
        tokio::select! {
            _ = tokio::time::sleep_until(deadline.unwrap_or(far)) => {}
            r = changed.changed() => if r.is_err() { return },
        }
    }
}

#[async_trait::async_trait]
impl ControlPlane for Embedded {
    async fn grant(&self, ttl: Duration) -> Result<LeaseId, ControlError> {
        crate::check_ttl(ttl)?;
        // etcd counts TTLs in whole seconds; round the same way so both behave alike.
        let ttl = Duration::from_secs(ttl.as_secs_f64().ceil() as u64);
        let id = self.write(|st, _| {
            st.next_lease += 1;
            let id = st.next_lease;
            st.leases.insert(
                id,
                Lease {
                    ttl,
                    deadline: Instant::now() + ttl,
                },
            );
            Ok(id)
        })?;
        self.inner.leases_changed.send_replace(());
        Ok(id)
    }

    async fn keep_alive(&self, lease: LeaseId) -> Result<Duration, ControlError> {
        let ttl = self.write(|st, _| {
            let l = st
                .leases
                .get_mut(&lease)
                .ok_or(ControlError::LeaseLost(lease))?;
            l.deadline = Instant::now() + l.ttl;
            Ok(l.ttl)
        })?;
        self.inner.leases_changed.send_replace(());
        Ok(ttl)
    }

    async fn revoke(&self, lease: LeaseId) -> Result<(), ControlError> {
        self.write(|st, view| {
            st.drop_lease(view, lease);
            Ok(())
        })
    }

    async fn register(&self, node: &NodeInfo, lease: LeaseId) -> Result<(), ControlError> {
        if node.id.is_empty() {
            return Err(ControlError::Invalid("a node needs an id".into()));
        }
        self.write(|st, view| {
            st.live(lease)?;
            st.node_leases.insert(node.id.clone(), lease);
            view.nodes.insert(node.id.clone(), node.clone());
            view.revision += 1;
            Ok(())
        })
    }

    async fn create_world(
        &self,
        spec: WorldSpec,
        hints: &PlacementHints,
    ) -> Result<WorldRecord, ControlError> {
        spec.validate()?;
        self.write(|st, view| {
            let first = WorldId(st.next_world.max(crate::FIRST_WORLD_ID - 1) + 1);
            let recs = place_world(&spec, view, hints, first)?;
            st.next_world = first.0 + recs.len() as u64 - 1;
            let rec = recs[0].clone();
            for r in recs {
                view.worlds.insert(r.id, r);
            }
            view.revision += 1;
            Ok(rec)
        })
    }

    async fn claim(
        &self,
        world: WorldId,
        who: &Claim,
        lease: LeaseId,
    ) -> Result<u64, ControlError> {
        self.write(|st, view| {
            st.live(lease)?;
            let rec = view
                .worlds
                .get(&world)
                .ok_or(ControlError::UnknownWorld(world))?;
            if let Some(o) = &rec.owner {
                return Err(ControlError::Owned {
                    world,
                    node: o.node.clone(),
                    epoch: o.epoch,
                });
            }
            view.revision += 1;
            let epoch = view.revision;
            st.owner_leases.insert(world, lease);
            if let Some(rec) = view.worlds.get_mut(&world) {
                rec.owner = Some(Owner {
                    node: who.node.clone(),
                    addr: who.addr.clone(),
                    tls_name: who.tls_name.clone(),
                    epoch,
                });
            }
            Ok(epoch)
        })
    }

    async fn release(&self, world: WorldId, epoch: u64) -> Result<(), ControlError> {
        self.write(|st, view| {
            owned(view, world, epoch)?.owner = None;
            st.owner_leases.remove(&world);
            view.revision += 1;
            Ok(())
        })
    }

    async fn offer(
        &self,
        world: WorldId,
        node: &str,
        offer: Offer,
        lease: LeaseId,
    ) -> Result<(), ControlError> {
        self.write(|st, view| {
            st.live(lease)?;
            let rec = view
                .worlds
                .get_mut(&world)
                .ok_or(ControlError::UnknownWorld(world))?;
            rec.offers.insert(node.to_owned(), offer);
            st.offer_leases.insert((world, node.to_owned()), lease);
            view.revision += 1;
            Ok(())
        })
    }

    async fn publish(
        &self,
        world: WorldId,
        epoch: u64,
        status: &WorldStatus,
    ) -> Result<(), ControlError> {
        self.write(|_, view| {
            owned(view, world, epoch)?.status = WorldStatus {
                epoch,
                ..status.clone()
            };
            view.revision += 1;
            Ok(())
        })
    }

    async fn set_standbys(
        &self,
        world: WorldId,
        epoch: u64,
        standbys: Vec<String>,
    ) -> Result<(), ControlError> {
        self.write(|_, view| {
            let rec = owned(view, world, epoch)?;
            if rec.standbys != standbys {
                rec.standbys = standbys;
                view.revision += 1;
            }
            Ok(())
        })
    }

    async fn ban(&self, subject: &str, ban: &Ban) -> Result<(), ControlError> {
        crate::check_subject(subject)?;
        self.write(|_, view| {
            view.bans.insert(subject.to_owned(), ban.clone());
            view.revision += 1;
            Ok(())
        })
    }

    async fn unban(&self, subject: &str) -> Result<(), ControlError> {
        self.write(|_, view| {
            if view.bans.remove(subject).is_some() {
                view.revision += 1;
            }
            Ok(())
        })
    }

    async fn end_world(&self, world: WorldId) -> Result<(), ControlError> {
        self.write(|_, view| {
            let rec = view
                .worlds
                .get_mut(&world)
                .ok_or(ControlError::UnknownWorld(world))?;
            if !rec.ending {
                rec.ending = true;
                view.revision += 1;
            }
            Ok(())
        })
    }

    async fn remove_world(&self, world: WorldId) -> Result<(), ControlError> {
        self.write(|st, view| {
            view.worlds
                .remove(&world)
                .ok_or(ControlError::UnknownWorld(world))?;
            st.owner_leases.remove(&world);
            st.offer_leases.retain(|(w, _), _| *w != world);
            view.revision += 1;
            Ok(())
        })
    }

    async fn campaign(
        &self,
        role: &str,
        node: &str,
        lease: LeaseId,
    ) -> Result<String, ControlError> {
        crate::check_record_key(role)?;
        crate::check_record_key(node)?;
        self.write(|st, view| {
            if let Some(leader) = view.leaders.get(role) {
                return Ok(leader.clone());
            }
            st.live(lease)?;
            view.leaders.insert(role.to_owned(), node.to_owned());
            st.leader_leases.insert(role.to_owned(), lease);
            view.revision += 1;
            Ok(node.to_owned())
        })
    }

    async fn resign(&self, role: &str, node: &str) -> Result<(), ControlError> {
        self.write(|st, view| {
            if view.leaders.get(role).is_some_and(|l| l == node) {
                view.leaders.remove(role);
                st.leader_leases.remove(role);
                view.revision += 1;
            }
            Ok(())
        })
    }

    async fn write_records(&self, w: RecordWrite) -> Result<(), ControlError> {
        crate::check_write(&w)?;
        self.write(|_, view| {
            if let Some((role, node)) = &w.leader {
                let leader = view.leaders.get(role);
                if leader != Some(node) {
                    return Err(ControlError::NotLeader {
                        role: role.clone(),
                        node: node.clone(),
                        leader: leader.cloned(),
                    });
                }
            }
            for (k, v) in w.puts {
                view.records_mut().insert(k, v);
            }
            for k in &w.deletes {
                view.records_mut().remove(k);
            }
            view.revision += 1;
            Ok(())
        })
    }

    async fn view(&self) -> Result<ClusterView, ControlError> {
        Ok(self.inner.view.borrow().clone())
    }

    async fn watch(&self) -> Result<watch::Receiver<ClusterView>, ControlError> {
        let rx = self.inner.view.subscribe();
        Ok(rx)
    }
}
