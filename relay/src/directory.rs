//! What a relay learns from the control plane, and the epochs it fences links
//! with. Pure: the shell feeds it cluster views and link hellos.
//!
//! From each [`ClusterView`] it derives which origin owns each world (address,
//! certificate name, epoch), numbers origins it has not seen before (after the
//! statically configured ones), and reports the changes the shell must make:
//! open a link, route a world, forget a world, close a link nobody needs.
//!
//! Zoned worlds: each zone has its own record (owner, epoch), routed like a
//! world under the record's id; the world's own id routes to its home zone's
//! owner (where a hello opens the session), and [`WorldDirectory::home_of`]
//! names that record.
//!
//! Fencing: every world record (a world, or one zone of a zoned world) has
//! the highest owner epoch the relay knows (from the control plane, or from
//! an origin's [`WorldState`](skylane_proto::WorldState), which names the
//! record it reports for). A link that declared a lower epoch for a record is
//! an old owner: its frames for the record's world are refused (frames name
//! the world: an origin that is an old owner of one zone has its frames for
//! the whole world refused until it steps down, at most a lease later). A
//! link that has not declared one yet is not refused (its hello travels on
//! the control lane and a batch may overtake it on another lane).

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;

use skylane_control::ClusterView;
use skylane_proto::zones::{zone_record_id, ZoneIdx};
use skylane_proto::WorldId;

use crate::routing::OriginId;

/// An origin the relay links to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OriginEntry {
    /// Its id in the routing table.
    pub id: OriginId,
    /// QUIC address.
    pub addr: SocketAddr,
    /// Certificate name.
    pub tls_name: String,
}

/// What the shell must do after a view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DirectoryChange {
    /// A new origin: open a link to it.
    OriginAdded(OriginEntry),
    /// An origin no world needs any more (and not statically configured): close
    /// its link.
    OriginRemoved(OriginId),
    /// `world` is owned by `origin` at `epoch` (new, or moved).
    WorldOwned {
        /// World.
        world: WorldId,
        /// Owner.
        origin: OriginId,
        /// Epoch.
        epoch: u64,
    },
    /// `world` exists but has no owner right now (being placed, or failing over):
    /// sessions for it wait.
    WorldPending(WorldId),
    /// `world` is gone from the control plane.
    WorldRemoved(WorldId),
}

/// The relay's control-plane directory and epoch fence.
#[derive(Debug, Default)]
pub struct WorldDirectory {
    origins: HashMap<(SocketAddr, String), OriginId>,
    static_origins: HashSet<OriginId>,
    next_id: u32,
    /// World record → (owner, epoch) as last applied; `None` while pending.
    worlds: HashMap<WorldId, Option<(OriginId, u64)>>,
    /// A zoned world's home zone record, by world.
    homes: HashMap<WorldId, WorldId>,
    /// A zone record's world, by record.
    parents: HashMap<WorldId, WorldId>,
    /// The highest epoch known per world record.
    highest: HashMap<WorldId, u64>,
    /// Per (link, world): the records it declared, with their epochs.
    declared: HashMap<(OriginId, WorldId), Vec<(WorldId, u64)>>,
}

impl WorldDirectory {
    /// A directory that knows the statically configured origins (they are never
    /// removed).
    pub fn new(static_origins: impl IntoIterator<Item = OriginEntry>) -> Self {
        let mut d = Self::default();
        for o in static_origins {
            d.next_id = d.next_id.max(o.id.0);
            d.static_origins.insert(o.id);
            d.origins.insert((o.addr, o.tls_name), o.id);
        }
        d
    }

    /// Does the control plane know `world` (owned or pending)?
    pub fn knows(&self, world: WorldId) -> bool {
        self.worlds.contains_key(&world)
    }

    /// The record a session for `world` opens on: the world itself, or its
    /// home zone's record if it is zoned.
    pub fn home_of(&self, world: WorldId) -> WorldId {
        self.homes.get(&world).copied().unwrap_or(world)
    }

    /// The world a record belongs to (itself, unless it is a zone's).
    pub fn world_of(&self, record: WorldId) -> WorldId {
        self.parents.get(&record).copied().unwrap_or(record)
    }

    /// Is `world` known but without an owner right now?
    pub fn pending(&self, world: WorldId) -> bool {
        matches!(self.worlds.get(&world), Some(None))
    }

    /// The id of the origin at `addr` named `tls_name`, numbering (and
    /// announcing in `out`) one not seen before.
    fn origin_id(
        &mut self,
        addr: SocketAddr,
        tls_name: &str,
        out: &mut Vec<DirectoryChange>,
    ) -> OriginId {
        let key = (addr, tls_name.to_owned());
        if let Some(id) = self.origins.get(&key) {
            return *id;
        }
        self.next_id += 1;
        let id = OriginId(self.next_id);
        self.origins.insert(key, id);
        out.push(DirectoryChange::OriginAdded(OriginEntry {
            id,
            addr,
            tls_name: tls_name.to_owned(),
        }));
        id
    }

    /// A new cluster view: the changes to make, in order (origins before the
    /// worlds routed to them; worlds before the origins removed).
    pub fn handle_view(&mut self, view: &ClusterView) -> Vec<DirectoryChange> {
        let mut out = Vec::new();
        let mut seen = HashSet::new();
        // Every registered origin is linked (and measured: relays publish
        // their RTT to each, what a matchmaker estimates players' RTT with),
        // not only those that own a world now.
        let mut registered = HashSet::new();
        for o in view.origins() {
            let Ok(addr) = o.addr.parse::<SocketAddr>() else {
                continue;
            };
            registered.insert(self.origin_id(addr, &o.tls_name, &mut out));
        }
        self.homes.clear();
        self.parents.clear();
        for rec in view.worlds.values() {
            seen.insert(rec.id);
            // A zoned world routes to its home zone's owner; it is never
            // claimed itself (no epoch of its own to fence).
            let home = rec
                .spec
                .is_zoned()
                .then(|| view.worlds.get(&zone_record_id(rec.id, ZoneIdx::HOME)))
                .flatten();
            if let Some(z) = rec.spec.zone_of {
                self.parents.insert(rec.id, z.world);
            }
            if let Some(h) = home {
                self.homes.insert(rec.id, h.id);
            }
            let owned_by = home.unwrap_or(rec);
            let owner = owned_by.owner.as_ref().and_then(|o| {
                let addr: SocketAddr = o.addr.parse().ok()?;
                Some((addr, o.tls_name.clone(), o.epoch))
            });
            let now = match owner {
                Some((addr, name, epoch)) => {
                    let id = self.origin_id(addr, &name, &mut out);
                    if home.is_none() {
                        let h = self.highest.entry(rec.id).or_insert(0);
                        *h = (*h).max(epoch);
                    }
                    Some((id, epoch))
                }
                None => None,
            };
            if self.worlds.get(&rec.id) != Some(&now) {
                self.worlds.insert(rec.id, now);
                out.push(match now {
                    Some((origin, epoch)) => DirectoryChange::WorldOwned {
                        world: rec.id,
                        origin,
                        epoch,
                    },
                    None => DirectoryChange::WorldPending(rec.id),
                });
            }
        }
        let gone: Vec<WorldId> = self
            .worlds
            .keys()
            .filter(|w| !seen.contains(w))
            .copied()
            .collect();
        for w in gone {
            self.worlds.remove(&w);
            self.highest.remove(&w);
            self.declared.retain(|(_, x), _| *x != w);
            for records in self.declared.values_mut() {
                records.retain(|(r, _)| *r != w);
            }
            out.push(DirectoryChange::WorldRemoved(w));
        }
        let mut used: HashSet<OriginId> = self.worlds.values().flatten().map(|(o, _)| *o).collect();
        used.extend(registered);
        let unused: Vec<((SocketAddr, String), OriginId)> = self
            .origins
            .iter()
            .filter(|(_, id)| !used.contains(id) && !self.static_origins.contains(id))
            .map(|(k, id)| (k.clone(), *id))
            .collect();
        for (key, id) in unused {
            self.origins.remove(&key);
            out.push(DirectoryChange::OriginRemoved(id));
        }
        out
    }

    /// An origin's link declared its epoch for `host`, a record of `world`
    /// (the world itself, or one of its zones). Returns `false` if the
    /// declaration is older than the highest known (the link is an old
    /// owner).
    pub fn handle_declared(
        &mut self,
        origin: OriginId,
        world: WorldId,
        host: WorldId,
        epoch: u64,
    ) -> bool {
        let records = self.declared.entry((origin, world)).or_default();
        match records.iter_mut().find(|(r, _)| *r == host) {
            Some(d) => d.1 = epoch,
            None => records.push((host, epoch)),
        }
        let h = self.highest.entry(host).or_insert(0);
        *h = (*h).max(epoch);
        epoch >= *h
    }

    /// May frames for `world` from `origin`'s link be used? Not if the link
    /// declared an old epoch for any record of the world.
    pub fn admits(&self, origin: OriginId, world: WorldId) -> bool {
        self.declared.get(&(origin, world)).is_none_or(|records| {
            records
                .iter()
                .all(|(r, e)| *e >= self.highest.get(r).copied().unwrap_or(0))
        })
    }

    /// An origin's link went down: its declarations go with it.
    pub fn handle_link_down(&mut self, origin: OriginId) {
        self.declared.retain(|(o, _), _| *o != origin);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use skylane_control::{Owner, WorldRecord, WorldSpec, WorldStatus};

    fn rec(id: u64, owner: Option<(&str, u64)>) -> WorldRecord {
        WorldRecord {
            id: WorldId(id),
            spec: WorldSpec::new("tictactoe", 10, 2),
            placed_on: "o".into(),
            standbys: Vec::new(),
            ending: false,
            owner: owner.map(|(addr, epoch)| Owner {
                node: "o".into(),
                addr: addr.into(),
                tls_name: "localhost".into(),
                epoch,
            }),
            status: WorldStatus::default(),
            offers: Default::default(),
        }
    }

    fn view(recs: Vec<WorldRecord>) -> ClusterView {
        let mut v = ClusterView::default();
        for r in recs {
            v.worlds.insert(r.id, r);
        }
        v
    }

    fn static_one() -> OriginEntry {
        OriginEntry {
            id: OriginId(1),
            addr: "127.0.0.1:5000".parse().unwrap(),
            tls_name: "localhost".into(),
        }
    }

    fn zone(id: u64, world: u64, zone: u8, owner: Option<(&str, u64)>) -> WorldRecord {
        let mut r = rec(id, owner);
        r.spec.zones = Some(Box::new(skylane_control::ZoneSpec {
            layout: skylane_proto::zones::ZoneLayout::even(2, 1, 1.0, 2, 1).unwrap(),
            hysteresis: 0.5,
            margin: 1.0,
        }));
        if world != id {
            r.spec.zone_of = Some(skylane_control::ZoneOf {
                world: WorldId(world),
                zone: ZoneIdx(zone),
            });
        }
        r
    }

    #[test]
    fn a_zoned_world_routes_to_its_home_zone_and_each_zone_to_its_owner() {
        let mut d = WorldDirectory::new([static_one()]);
        let parent = zone(10, 10, 0, None);
        let home = zone(11, 10, 0, Some(("127.0.0.1:7001", 3)));
        let other = zone(12, 10, 1, Some(("127.0.0.1:7002", 4)));
        let changes = d.handle_view(&view(vec![parent, home, other.clone()]));
        let owned = |w: u64| {
            changes.iter().find_map(|c| match c {
                DirectoryChange::WorldOwned { world, origin, .. } if *world == WorldId(w) => {
                    Some(*origin)
                }
                _ => None,
            })
        };
        assert_eq!(
            owned(10),
            owned(11),
            "the world goes to its home zone's owner"
        );
        assert!(owned(12).is_some() && owned(12) != owned(11));
        assert_eq!(d.home_of(WorldId(10)), WorldId(11));
        assert_eq!(d.home_of(WorldId(12)), WorldId(12));
        assert_eq!(d.world_of(WorldId(12)), WorldId(10));
        assert_eq!(d.world_of(WorldId(10)), WorldId(10));
        // Two zones' owners declare their own epochs under the one world:
        // neither fences the other.
        let (a, b) = (owned(11).unwrap(), owned(12).unwrap());
        assert!(d.handle_declared(a, WorldId(10), WorldId(11), 3));
        assert!(d.handle_declared(b, WorldId(10), WorldId(12), 4));
        assert!(d.admits(a, WorldId(10)) && d.admits(b, WorldId(10)));
        // Zone 1 fails over to zone 0's origin: the old owner is fenced, the
        // new one (which also owns zone 0) is not.
        let parent = zone(10, 10, 0, None);
        let home = zone(11, 10, 0, Some(("127.0.0.1:7001", 3)));
        let moved = zone(12, 10, 1, Some(("127.0.0.1:7001", 6)));
        let ch = d.handle_view(&view(vec![parent, home, moved]));
        assert!(ch.contains(&DirectoryChange::WorldOwned {
            world: WorldId(12),
            origin: a,
            epoch: 6
        }));
        assert!(!d.admits(b, WorldId(10)), "the old owner of zone 1");
        assert!(d.handle_declared(a, WorldId(10), WorldId(12), 6));
        assert!(d.admits(a, WorldId(10)));
        // The world goes: its zones with it.
        let ch = d.handle_view(&view(vec![]));
        assert_eq!(
            ch.iter()
                .filter(|c| matches!(c, DirectoryChange::WorldRemoved(_)))
                .count(),
            3
        );
        assert_eq!(d.home_of(WorldId(10)), WorldId(10));
        assert!(d.admits(b, WorldId(10)));
    }

    #[test]
    fn registered_origins_are_linked_before_they_own_a_world() {
        let mut d = WorldDirectory::new([static_one()]);
        let mut v = view(vec![]);
        let mut o = skylane_control::NodeInfo::relay(0, "127.0.0.1:7000", "localhost", "eu");
        o.id = "origin-7".into();
        o.kind = skylane_control::NodeKind::Origin;
        v.nodes.insert(o.id.clone(), o);
        let added = OriginEntry {
            id: OriginId(2),
            addr: "127.0.0.1:7000".parse().unwrap(),
            tls_name: "localhost".into(),
        };
        assert_eq!(d.handle_view(&v), vec![DirectoryChange::OriginAdded(added)]);
        assert!(d.handle_view(&v).is_empty(), "kept while registered");
        v.nodes.clear();
        assert_eq!(
            d.handle_view(&v),
            vec![DirectoryChange::OriginRemoved(OriginId(2))],
            "dropped once gone and hosting nothing"
        );
    }

    #[test]
    fn worlds_appear_move_and_go() {
        let mut d = WorldDirectory::new([static_one()]);
        // Pending first, then owned by a new origin (numbered after the static one).
        let ch = d.handle_view(&view(vec![rec(7, None)]));
        assert_eq!(ch, vec![DirectoryChange::WorldPending(WorldId(7))]);
        assert!(d.knows(WorldId(7)) && d.pending(WorldId(7)));
        let ch = d.handle_view(&view(vec![rec(7, Some(("127.0.0.1:6000", 10)))]));
        assert_eq!(
            ch,
            vec![
                DirectoryChange::OriginAdded(OriginEntry {
                    id: OriginId(2),
                    addr: "127.0.0.1:6000".parse().unwrap(),
                    tls_name: "localhost".into(),
                }),
                DirectoryChange::WorldOwned {
                    world: WorldId(7),
                    origin: OriginId(2),
                    epoch: 10
                },
            ]
        );
        // The same view again changes nothing.
        assert!(d
            .handle_view(&view(vec![rec(7, Some(("127.0.0.1:6000", 10)))]))
            .is_empty());
        // A world on the static origin's address reuses its id.
        let ch = d.handle_view(&view(vec![
            rec(7, Some(("127.0.0.1:6000", 10))),
            rec(8, Some(("127.0.0.1:5000", 11))),
        ]));
        assert_eq!(
            ch,
            vec![DirectoryChange::WorldOwned {
                world: WorldId(8),
                origin: OriginId(1),
                epoch: 11
            }]
        );
        // World 7 is removed: its origin is no longer needed; the static one stays.
        let ch = d.handle_view(&view(vec![rec(8, Some(("127.0.0.1:5000", 11)))]));
        assert_eq!(
            ch,
            vec![
                DirectoryChange::WorldRemoved(WorldId(7)),
                DirectoryChange::OriginRemoved(OriginId(2)),
            ]
        );
        let ch = d.handle_view(&view(vec![]));
        assert_eq!(ch, vec![DirectoryChange::WorldRemoved(WorldId(8))]);
        assert!(!d.knows(WorldId(8)));
    }

    #[test]
    fn a_lower_epoch_is_fenced_off() {
        let mut d = WorldDirectory::new([]);
        d.handle_view(&view(vec![rec(1, Some(("127.0.0.1:6000", 5)))]));
        let old = OriginId(1);
        assert!(d.admits(old, WorldId(1)), "no declaration yet: not refused");
        assert!(d.handle_declared(old, WorldId(1), WorldId(1), 5));
        assert!(d.admits(old, WorldId(1)));
        // Failover: a new owner at a higher epoch.
        d.handle_view(&view(vec![rec(1, Some(("127.0.0.1:7000", 9)))]));
        assert!(!d.admits(old, WorldId(1)), "the old owner's link is fenced");
        let new = OriginId(2);
        assert!(d.handle_declared(new, WorldId(1), WorldId(1), 9));
        assert!(d.admits(new, WorldId(1)));
        // The old owner wakes up and re-declares its old epoch: refused.
        assert!(!d.handle_declared(old, WorldId(1), WorldId(1), 5));
        assert!(!d.admits(old, WorldId(1)));
        // Its link going down forgets the declaration.
        d.handle_link_down(old);
        assert!(d.admits(old, WorldId(1)));
        // A hello can raise the highest epoch before the control plane does.
        assert!(d.handle_declared(new, WorldId(1), WorldId(1), 12));
        assert!(!d.handle_declared(old, WorldId(1), WorldId(1), 9));
    }

    #[test]
    fn unparsable_owner_addresses_leave_the_world_pending() {
        let mut d = WorldDirectory::new([]);
        let ch = d.handle_view(&view(vec![rec(1, Some(("not an address", 5)))]));
        assert_eq!(ch, vec![DirectoryChange::WorldPending(WorldId(1))]);
    }
}
