//! "arena": the reference game used by the demo, the load generator and the tests.
//!
//! Players move on a 2-D map under a maximum speed, pick up items, trade items and
//! coins with each other, and fire at points on the map (a shot hits the nearest
//! living player within a small radius of the aim point, if in range and off
//! cooldown). Dying respawns the player at a position derived from the tick, with
//! full hit points. Every entity carries a version bumped on each change.
//!
//! Actions and events are postcard-encoded [`ArenaAction`] and [`ArenaEvent`].

mod config;
mod economy;
mod messages;
mod rules;
mod state;

use std::collections::BTreeSet;

use serde::Serialize;
use sha2::{Digest, Sha256};
use skylane_proto::zones::ZoneRect;
use skylane_proto::{ChannelId, EntityId, EventClass, Hash32, Payload, RejectCode, TeamId};

use crate::interest::Grid;
use crate::ledger::{LedgerTx, TxKind, Wallet};
use crate::world::{Ctx, Emit, Observation, Rejection, TickCtx, Validator, World};

use economy::check_economy;

pub use config::{ArenaConfig, Roster};
pub use economy::{
    Offer, OfferEnd, CLOSED_KEPT, MAX_OFFER_TICKS, MAX_OPEN_OFFERS, OFFER_CLOSED, UNKNOWN_OFFER,
};
pub use messages::{ArenaAction, ArenaAnswer, ArenaEvent, ArenaRemote};
pub use state::{Arena, Item, Player};

use rules::{check_cooldown, check_ownership, check_range, check_resources, check_speed};
use state::scatter;

/// Ticks an avatar arriving from another zone may have moved for (the
/// handoff's frozen time: about 2 ticks and two round trips; half a second at
/// 30 Hz, so at most `max_speed / 2` more map units than a whole world would
/// allow on that one move).
pub(crate) const HANDOFF_MOVE_CREDIT: u64 = 15;

impl Arena {
    /// A hit on `target` by `shooter` at `tick`: its damage, and its death
    /// and respawn when its hit points run out. Its hit points and version
    /// after it (`None`: no such player here).
    fn strike(
        &mut self,
        shooter: EntityId,
        target: EntityId,
        tick: u64,
        out: &mut Emit,
    ) -> Option<(u32, u64)> {
        let grid = self.grid();
        let me = shooter;
        let mut hit = None;
        let (roster, w, h, start_hp, dmg) = (
            self.cfg.roster,
            self.cfg.width,
            self.cfg.height,
            self.cfg.start_hp,
            self.cfg.damage,
        );
        if let Some(t) = self.players.get_mut(&target) {
            t.hp = t.hp.saturating_sub(dmg);
            t.version += 1;
            out.push(
                grid.channel_of(t.x, t.y),
                EventClass::Critical,
                Some(target),
                ArenaEvent::Hit {
                    shooter: me,
                    target,
                    hp: t.hp,
                    version: t.version,
                }
                .payload(),
            );
            hit = Some((t.hp, t.version));
            if t.hp == 0 {
                let died_in = grid.channel_of(t.x, t.y);
                let (nx, ny) = scatter(target.0 ^ tick.rotate_left(29), w, h);
                t.x = nx;
                t.y = ny;
                t.hp = start_hp;
                t.last_move_tick = tick;
                t.move_credit = 0.0;
                // A second change (the respawn): a second version, so receivers
                // that see the hit after the death keep the respawn.
                t.version += 1;
                let died = ArenaEvent::Died {
                    entity: target,
                    by: me,
                    x: nx,
                    y: ny,
                    hp: start_hp,
                    version: t.version,
                }
                .payload();
                // With a spatial roster, both where it died and where it
                // respawns hear of it.
                let channels = match roster {
                    Roster::World => vec![ChannelId::World],
                    Roster::Cells => {
                        let respawn = grid.channel_of(nx, ny);
                        let mut c = vec![died_in];
                        if respawn != died_in {
                            c.push(respawn);
                        }
                        c
                    }
                };
                for c in channels {
                    out.push(c, EventClass::Critical, Some(target), died.clone());
                }
            }
        }
        hit
    }
}

impl World for Arena {
    type Action = ArenaAction;

    fn name(&self) -> &str {
        "arena"
    }

    fn decode_action(&self, _class: EventClass, payload: &[u8]) -> Result<ArenaAction, Rejection> {
        postcard::from_bytes(payload)
            .map_err(|e| Rejection::new(RejectCode::Malformed, e.to_string()))
    }

    fn validators(&self) -> Vec<(&'static str, Validator<Self>)> {
        vec![
            ("ownership", check_ownership),
            ("speed", check_speed),
            ("cooldown", check_cooldown),
            ("range", check_range),
            ("resources", check_resources),
            ("economy", check_economy),
        ]
    }

    fn version(&self, entity: EntityId) -> Option<u64> {
        self.players
            .get(&entity)
            .map(|p| p.version)
            .or_else(|| self.items.get(&entity).map(|i| i.version))
    }

    fn join(&mut self, player: &str, team: Option<TeamId>, tick: u64, out: &mut Emit) -> EntityId {
        self.join_with(player, team, tick, out, None)
    }

    fn join_with(
        &mut self,
        player: &str,
        team: Option<TeamId>,
        tick: u64,
        out: &mut Emit,
        wallet: Option<Wallet>,
    ) -> EntityId {
        let id = self.fresh_id();
        let (x, y) = scatter(id.0 ^ tick.rotate_left(17), self.cfg.width, self.cfg.height);
        let team = team.unwrap_or(TeamId((id.0 % u64::from(self.cfg.teams.max(1))) as u16));
        // A returning player brings its wallet: its items are made here, held.
        let mut items = BTreeSet::new();
        for _ in 0..wallet.map_or(0, |w| w.items) {
            let item = self.fresh_id();
            self.items.insert(
                item,
                Item {
                    version: 1,
                    x,
                    y,
                    holder: Some(id),
                },
            );
            items.insert(item);
        }
        let coins = wallet.map_or(self.cfg.start_coins, |w| w.coins);
        self.players.insert(
            id,
            Player {
                version: 1,
                name: player.to_owned(),
                team,
                x,
                y,
                hp: self.cfg.start_hp,
                coins,
                items,
                last_move_tick: tick,
                move_credit: 0.0,
                last_fire_tick: None,
            },
        );
        if wallet.is_none() {
            // A new player: its starting coins are minted (once per player).
            self.record(
                format!("grant:{player}"),
                TxKind::Grant,
                vec![(id, Wallet::default())],
            );
        }
        let channel = self.announce_on(x, y);
        out.push(
            channel,
            EventClass::State,
            Some(id),
            ArenaEvent::Spawned {
                entity: id,
                player: player.to_owned(),
                x,
                y,
                team,
                hp: self.cfg.start_hp,
                coins,
                version: 1,
                items: self
                    .players
                    .get(&id)
                    .map(|p| p.items.iter().copied().collect())
                    .unwrap_or_default(),
            }
            .payload(),
        );
        id
    }

    fn leave(&mut self, avatar: EntityId, tick: u64, out: &mut Emit) {
        self.close_offers_of(avatar, tick, out);
        if let Some(p) = self.players.remove(&avatar) {
            // Held items leave with the player: they stay in its wallet (the
            // ledger's), and come back with it in its next world.
            for item in &p.items {
                self.items.remove(item);
            }
            let channel = self.announce_on(p.x, p.y);
            out.push(
                channel,
                EventClass::State,
                Some(avatar),
                ArenaEvent::Left { entity: avatar }.payload(),
            );
        }
    }

    fn take_ledger(&mut self) -> Vec<LedgerTx> {
        std::mem::take(&mut self.ledger)
    }

    fn on_tick(&mut self, ctx: &TickCtx, out: &mut Emit) {
        self.expire_offers(ctx, out);
    }

    fn apply(&mut self, ctx: &Ctx, action: &ArenaAction, out: &mut Emit) -> Observation {
        let grid = self.grid();
        let me = ctx.avatar;
        match action {
            ArenaAction::Move { x, y } => {
                let budget = self
                    .players
                    .get(&me)
                    .map_or(0.0, |p| self.move_budget(p, ctx.tick, ctx.tick_hz));
                if let Some(p) = self.players.get_mut(&me) {
                    let d = state::dist((p.x, p.y), (*x, *y));
                    p.move_credit = (budget - d).max(0.0);
                    p.x = *x;
                    p.y = *y;
                    p.last_move_tick = ctx.tick;
                    p.version += 1;
                    // Movement is state (latest wins), not an event; a Moved
                    // state is a few dozen bytes, never over the limit.
                    let _ = out.moved(
                        grid.channel_of(*x, *y),
                        me,
                        (*x, *y),
                        ArenaEvent::Moved {
                            entity: me,
                            x: *x,
                            y: *y,
                            version: p.version,
                        }
                        .payload(),
                    );
                }
                Observation::default()
            }
            ArenaAction::PickUp { item } => {
                let before = self.wallet_of(me);
                if let (Some(i), Some(p)) = (self.items.get_mut(item), self.players.get_mut(&me)) {
                    i.holder = Some(me);
                    i.version += 1;
                    p.items.insert(*item);
                    p.version += 1;
                    out.push(
                        grid.channel_of(i.x, i.y),
                        EventClass::Critical,
                        Some(*item),
                        ArenaEvent::PickedUp {
                            item: *item,
                            by: me,
                            version: i.version,
                        }
                        .payload(),
                    );
                    let tx = format!("pickup:{}:{}", item.0, i.version);
                    if let Some(before) = before {
                        self.record(tx, TxKind::PickUp, vec![(me, before)]);
                    }
                }
                Observation::default()
            }
            ArenaAction::Trade {
                partner,
                give_coins,
                give_items,
                ..
            } => {
                // A gift (checked: it takes nothing from the partner).
                if !self.players.contains_key(partner) {
                    // In another zone: what is given leaves now, and the
                    // action's outcome is that zone's answer.
                    let gift = self.give_away(me, *partner, *give_coins, give_items);
                    out.remote_entity(*partner, gift.encode());
                    return Observation::default();
                }
                self.gifts += 1;
                let tx = format!("gift:{}", self.gifts);
                self.exchange(tx, me, *partner, *give_coins, give_items, 0, &[], out);
                Observation::default()
            }
            ArenaAction::Offer { .. } => {
                self.offer(ctx, action, out);
                Observation::default()
            }
            ArenaAction::Accept { from, id } => {
                self.accept(ctx, *from, *id, out);
                Observation::default()
            }
            ArenaAction::Decline { from, id } => {
                self.decline(ctx, *from, *id, out);
                Observation::default()
            }
            ArenaAction::Spray { data } => {
                if let Some(p) = self.players.get(&me) {
                    let (x, y) = (p.x, p.y);
                    out.push(
                        grid.channel_of(x, y),
                        EventClass::Bulk,
                        Some(me),
                        ArenaEvent::Sprayed {
                            by: me,
                            x,
                            y,
                            data: data.clone(),
                        }
                        .payload(),
                    );
                }
                Observation::default()
            }
            ArenaAction::Mark { x, y } => {
                out.push(
                    ChannelId::World,
                    EventClass::Critical,
                    Some(me),
                    ArenaEvent::Marked {
                        by: me,
                        x: *x,
                        y: *y,
                    }
                    .payload(),
                );
                Observation::default()
            }
            ArenaAction::Plan { x, y } => {
                if let Some(team) = self.players.get(&me).map(|p| p.team) {
                    out.push(
                        ChannelId::Team(team),
                        EventClass::Critical,
                        Some(me),
                        ArenaEvent::Planned {
                            by: me,
                            x: *x,
                            y: *y,
                        }
                        .payload(),
                    );
                }
                Observation::default()
            }
            ArenaAction::Fire { x, y } => {
                let target = self.nearest_target(me, *x, *y);
                if let Some(p) = self.players.get_mut(&me) {
                    p.last_fire_tick = Some(ctx.tick);
                    p.version += 1;
                }
                let Some(target) = target else {
                    if self.zone.is_some() {
                        // Nobody here: the zone owning the aim point (or a
                        // neighbour's avatar near it) decides, once.
                        let shot = ArenaRemote::Shot {
                            shooter: me,
                            x: *x,
                            y: *y,
                        };
                        out.remote((*x, *y), self.cfg.hit_radius, shot.encode());
                        return Observation {
                            attack: true,
                            hit: false,
                            reaction_us: None,
                        };
                    }
                    out.push(
                        grid.channel_of(*x, *y),
                        EventClass::Critical,
                        Some(me),
                        ArenaEvent::Missed { shooter: me }.payload(),
                    );
                    return Observation {
                        attack: true,
                        hit: false,
                        reaction_us: None,
                    };
                };
                self.strike(me, target, ctx.tick, out);
                // No reaction time: arena has no visibility model, and "time since the
                // target last moved" is near zero for any target that keeps moving,
                // which flagged honest players in tests.
                Observation {
                    attack: true,
                    hit: true,
                    reaction_us: None,
                }
            }
        }
    }

    fn apply_remote(
        &mut self,
        _from: skylane_proto::zones::ZoneIdx,
        op: &[u8],
        tick: u64,
        out: &mut Emit,
    ) -> Payload {
        let answer = match ArenaRemote::decode(op) {
            Some(ArenaRemote::Gift {
                from,
                to,
                coins,
                items,
            }) => {
                let _ = from;
                self.take_gift(to, coins, items)
            }
            Some(ArenaRemote::Shot { shooter, x, y }) => match self.nearest_target(shooter, x, y) {
                Some(target) => match self.strike(shooter, target, tick, out) {
                    Some((hp, version)) => ArenaAnswer::Hit {
                        target,
                        hp,
                        version,
                    },
                    None => ArenaAnswer::Missed,
                },
                None => ArenaAnswer::Missed,
            },
            None => ArenaAnswer::Missed,
        };
        answer.encode()
    }

    fn remote_answered(
        &mut self,
        op: &[u8],
        answer: Option<&[u8]>,
        _tick: u64,
        out: &mut Emit,
    ) -> Result<(), Rejection> {
        let (shooter, x, y) = match ArenaRemote::decode(op) {
            Some(ArenaRemote::Shot { shooter, x, y }) => (shooter, x, y),
            Some(ArenaRemote::Gift {
                from,
                to,
                coins,
                items,
            }) => {
                let answer = answer.and_then(ArenaAnswer::decode);
                return self.gift_answered((from, to, coins, items), answer, out);
            }
            None => return Ok(()),
        };
        // Told on this zone's cell nearest the aim point (the shooter's
        // side of the border), where the shooter hears it.
        let channel = self.grid().channel_of(x, y);
        match answer.and_then(ArenaAnswer::decode) {
            Some(ArenaAnswer::Hit {
                target,
                hp,
                version,
            }) => out.push(
                channel,
                EventClass::Critical,
                Some(target),
                ArenaEvent::Hit {
                    shooter,
                    target,
                    hp,
                    version,
                }
                .payload(),
            ),
            _ => out.push(
                channel,
                EventClass::Critical,
                Some(shooter),
                ArenaEvent::Missed { shooter }.payload(),
            ),
        }
        Ok(())
    }

    fn describe(&self, entities: &[EntityId]) -> Payload {
        #[derive(Serialize)]
        enum Described<'a> {
            Player(EntityId, &'a Player),
            Item(EntityId, &'a Item),
            Gone(EntityId),
        }
        let list: Vec<Described<'_>> = entities
            .iter()
            .map(|e| match (self.players.get(e), self.items.get(e)) {
                (Some(p), _) => Described::Player(*e, p),
                (None, Some(i)) => Described::Item(*e, i),
                (None, None) => Described::Gone(*e),
            })
            .collect();
        Payload::from(postcard::to_stdvec(&list).unwrap_or_default())
    }

    fn position(&self, entity: EntityId) -> Option<(f32, f32)> {
        self.players.get(&entity).map(|p| (p.x, p.y))
    }

    fn team(&self, entity: EntityId) -> Option<TeamId> {
        self.players.get(&entity).map(|p| p.team)
    }

    /// Spectators start from every player as a `Spawned` event (items are not part
    /// of the public view; pick-ups arrive as events).
    fn spectator_keyframe(&self) -> Vec<(EntityId, Payload)> {
        self.players
            .iter()
            .map(|(id, p)| (*id, ArenaEvent::spawned(*id, p).payload()))
            .collect()
    }

    fn channel_state(&self, channel: ChannelId, grid: &Grid) -> Payload {
        // A spatial roster keeps the world and team keyframes free of players (and
        // items): each would otherwise list the whole world to everyone.
        let spatial = self.cfg.roster == Roster::Cells;
        let in_channel = |x: f32, y: f32| match channel {
            ChannelId::World => !spatial,
            ChannelId::Cell { .. } => grid.channel_of(x, y) == channel,
            ChannelId::Team(_) => false,
        };
        let players: Vec<(&EntityId, &Player)> = self
            .players
            .iter()
            .filter(|(_, p)| match channel {
                ChannelId::Team(t) => !spatial && p.team == t,
                _ => in_channel(p.x, p.y),
            })
            .collect();
        let items: Vec<(&EntityId, &Item)> = self
            .items
            .iter()
            .filter(|(_, i)| i.holder.is_none() && in_channel(i.x, i.y))
            .collect();
        Payload::from(postcard::to_stdvec(&(players, items)).unwrap_or_default())
    }

    fn diff(&self, other: &Self) -> Vec<EntityId> {
        let mut out: BTreeSet<EntityId> = BTreeSet::new();
        for (id, p) in &self.players {
            if other.players.get(id) != Some(p) {
                out.insert(*id);
            }
        }
        out.extend(
            other
                .players
                .keys()
                .filter(|id| !self.players.contains_key(id)),
        );
        for (id, i) in &self.items {
            if other.items.get(id) != Some(i) {
                out.insert(*id);
            }
        }
        out.extend(other.items.keys().filter(|id| !self.items.contains_key(id)));
        out.into_iter().collect()
    }

    fn enter_zone(
        &mut self,
        cells: &ZoneRect,
        keep: &dyn Fn(f32, f32) -> bool,
        id_base: u64,
    ) -> Result<(), String> {
        if !self.players.is_empty() {
            return Err("a world is split into zones before anyone joins".into());
        }
        self.zone = Some(*cells);
        self.items
            .retain(|_, i| i.holder.is_some() || keep(i.x, i.y));
        self.next_entity = self.next_entity.max(id_base);
        Ok(())
    }

    /// A player leaves its zone with the items it holds. Not while it is a
    /// party to an open offer (the offer would be half here, half there):
    /// the handoff waits until the offer closes (accepted, declined or
    /// expired).
    fn export_entity(&self, entity: EntityId, tick: u64) -> Option<Payload> {
        let p = self.players.get(&entity)?;
        if self
            .offers
            .values()
            .any(|o| o.from == entity || o.to == entity)
        {
            return None;
        }
        let items: Vec<(EntityId, &Item)> = p
            .items
            .iter()
            .filter_map(|i| self.items.get(i).map(|it| (*i, it)))
            .collect();
        // The source's tick goes along: the target counts the last move and
        // shot from its own tick (zones count ticks apart), so the speed and
        // cooldown checks see the time that really passed.
        postcard::to_stdvec(&(p, items, tick))
            .ok()
            .map(Payload::from)
    }

    fn check_import(&self, entity: EntityId, state: &[u8]) -> Result<(), String> {
        self.decode_import(entity, state).map(drop)
    }

    fn import_entity(
        &mut self,
        entity: EntityId,
        state: &[u8],
        tick: u64,
        out: &mut Emit,
    ) -> Result<(), String> {
        let (mut p, items, from_tick) = self.decode_import(entity, state)?;
        // As many ticks ago here as it was there.
        let rebase = |t: u64| tick.saturating_sub(from_tick.saturating_sub(t));
        p.last_fire_tick = p.last_fire_tick.map(rebase);
        // The avatar stood frozen while it was handed over (from the
        // source's `Out` to this `In`, plus the relay moving its session),
        // which the ticks of two zones cannot measure: its first move here
        // may cover that time, up to `HANDOFF_MOVE_CREDIT` ticks.
        p.last_move_tick = rebase(p.last_move_tick).min(tick.saturating_sub(HANDOFF_MOVE_CREDIT));
        let channel = self.announce_on(p.x, p.y);
        out.push(
            channel,
            EventClass::State,
            Some(entity),
            ArenaEvent::spawned(entity, &p).payload(),
        );
        self.items.extend(items);
        self.players.insert(entity, p);
        Ok(())
    }

    fn remove_entity(&mut self, entity: EntityId) {
        if let Some(p) = self.players.remove(&entity) {
            for i in &p.items {
                self.items.remove(i);
            }
        }
    }

    fn state_hash(&self) -> Hash32 {
        let mut h = Sha256::new();
        h.update(b"skylane/arena/1");
        h.update(postcard::to_stdvec(self).unwrap_or_default());
        Hash32(h.finalize().into())
    }
}
