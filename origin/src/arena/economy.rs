//! The arena's economy: gifts, trades with consent (offer → accept, decline or
//! expiry), and what the origin's ledger is told.
//!
//! Nothing is ever taken from a player without its consent: a gift only
//! gives; an offer moves nothing until its partner accepts it, and the accept
//! checks both sides' holdings again (so an offer cannot spend what its
//! offerer gave away meanwhile). The exchange itself is one atomic step that
//! emits `Traded` and one ledger transaction with both players' before and
//! after wallets. An offer's id is its offerer's, so `(offerer, id)` is the
//! trade's idempotent transaction id: a resent accept finds the offer closed
//! as accepted and is answered `AlreadyApplied`, never applied twice.
//! Bounded: [`MAX_OPEN_OFFERS`] open offers per player, [`MAX_OFFER_TICKS`]
//! of life, and the last [`CLOSED_KEPT`] closed offers remembered.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use skylane_proto::{ChannelId, EntityId, EventClass, RejectCode};

use crate::ledger::{LedgerEntry, LedgerTx, TxKind, Wallet};
use crate::world::{Ctx, Emit, Rejection, TickCtx};

use super::messages::{ArenaAction, ArenaEvent};
use super::state::Arena;

/// Open offers one player may have made at once.
pub const MAX_OPEN_OFFERS: usize = 16;
/// Longest an offer stays open, in ticks (a minute at 30 Hz).
pub const MAX_OFFER_TICKS: u32 = 1800;
/// Closed offers remembered (answers to resent accepts and declines).
pub const CLOSED_KEPT: usize = 4096;
/// Ticks between sweeps of expired offers (an expired offer is refused at
/// once; the sweep closes it and tells everyone).
const SWEEP_EVERY: u64 = 30;
/// An offer unknown to the world (never made, or forgotten long ago).
pub const UNKNOWN_OFFER: RejectCode = RejectCode::Game(20);
/// An offer that closed without an exchange (declined, withdrawn, expired,
/// a side left).
pub const OFFER_CLOSED: RejectCode = RejectCode::Game(21);

/// An open offer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Offer {
    /// The offerer.
    pub from: EntityId,
    /// The offerer's id for it.
    pub id: u64,
    /// The partner.
    pub to: EntityId,
    /// Coins the offerer gives.
    pub give_coins: u64,
    /// Items the offerer gives.
    pub give_items: Vec<EntityId>,
    /// Coins the partner gives.
    pub get_coins: u64,
    /// Items the partner gives.
    pub get_items: Vec<EntityId>,
    /// The tick after which it is closed as expired.
    pub expires: u64,
}

/// How an offer closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum OfferEnd {
    /// The partner accepted: the exchange happened.
    Accepted,
    /// The partner declined.
    Declined,
    /// The offerer withdrew it.
    Withdrawn,
    /// Its time ran out.
    Expired,
    /// Its offerer or partner left the world.
    Left,
}

/// What one side gives in an exchange.
struct Side<'a> {
    coins: u64,
    items: &'a [EntityId],
}

fn holds(w: &Arena, who: EntityId, side: &Side<'_>) -> Result<(), Rejection> {
    let Some(p) = w.players.get(&who) else {
        return Err(w.absent(who, "is not in this world"));
    };
    if p.coins < side.coins {
        return Err(Rejection::new(
            RejectCode::Resources,
            format!("{who} has {} coins < {}", p.coins, side.coins),
        ));
    }
    let distinct: BTreeSet<&EntityId> = side.items.iter().collect();
    if distinct.len() != side.items.len() {
        return Err(Rejection::new(
            RejectCode::Malformed,
            "an item listed twice",
        ));
    }
    if let Some(i) = side.items.iter().find(|i| !p.items.contains(i)) {
        return Err(Rejection::new(
            RejectCode::NotOwner,
            format!("{who} does not hold {i}"),
        ));
    }
    Ok(())
}

/// The economy's rules: offers, accepts, declines, and gifts that would take
/// from the partner.
pub(super) fn check_economy(w: &Arena, ctx: &Ctx, a: &ArenaAction) -> Result<(), Rejection> {
    let me = ctx.avatar;
    match a {
        ArenaAction::Trade {
            get_coins,
            get_items,
            ..
        } if *get_coins > 0 || !get_items.is_empty() => Err(Rejection::new(
            RejectCode::Forbidden,
            "taking from a partner needs its consent: make an Offer, the partner Accepts",
        )),
        ArenaAction::Offer {
            id,
            partner,
            give_coins,
            give_items,
            get_coins,
            get_items,
            ttl_ticks,
        } => {
            if *partner == me {
                return Err(Rejection::new(RejectCode::NotOwner, "an offer to yourself"));
            }
            if *ttl_ticks == 0 || *ttl_ticks > MAX_OFFER_TICKS {
                return Err(Rejection::new(
                    RejectCode::Malformed,
                    format!("ttl {ttl_ticks} ticks (1..={MAX_OFFER_TICKS})"),
                ));
            }
            if w.offers.contains_key(&(me, *id)) || w.closed.contains_key(&(me, *id)) {
                return Err(Rejection::new(
                    RejectCode::AlreadyApplied,
                    format!("offer {id} was made already"),
                ));
            }
            let open = w
                .offers
                .range((me, 0)..=(me, u64::MAX))
                .filter(|(_, o)| o.expires > ctx.tick)
                .count();
            if open >= MAX_OPEN_OFFERS {
                return Err(Rejection::new(
                    RejectCode::Resources,
                    format!("{MAX_OPEN_OFFERS} offers open already"),
                ));
            }
            holds(
                w,
                me,
                &Side {
                    coins: *give_coins,
                    items: give_items,
                },
            )?;
            // The partner must be here; what it holds is checked at accept.
            let _ = (get_coins, get_items);
            if !w.players.contains_key(partner) {
                return Err(w.absent(*partner, "is not in this world"));
            }
            Ok(())
        }
        ArenaAction::Accept { from, id } => {
            let Some(o) = w.offers.get(&(*from, *id)) else {
                return Err(closed_answer(w, *from, *id));
            };
            if o.expires <= ctx.tick {
                // Past its time (closed at the next sweep).
                return Err(Rejection::benign(
                    OFFER_CLOSED,
                    format!("offer {id} of {from} expired at tick {}", o.expires),
                ));
            }
            if o.to != me {
                return Err(Rejection::new(
                    RejectCode::Forbidden,
                    format!("offer {id} of {from} is not made to you"),
                ));
            }
            holds(
                w,
                o.from,
                &Side {
                    coins: o.give_coins,
                    items: &o.give_items,
                },
            )?;
            holds(
                w,
                me,
                &Side {
                    coins: o.get_coins,
                    items: &o.get_items,
                },
            )
        }
        ArenaAction::Decline { from, id } => {
            let Some(o) = w.offers.get(&(*from, *id)) else {
                return Err(closed_answer(w, *from, *id));
            };
            if o.to != me && o.from != me {
                return Err(Rejection::new(
                    RejectCode::Forbidden,
                    format!("offer {id} of {from} is neither yours nor made to you"),
                ));
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// Why an offer that is not open cannot be accepted or declined.
fn closed_answer(w: &Arena, from: EntityId, id: u64) -> Rejection {
    match w.closed.get(&(from, id)) {
        Some((tick, OfferEnd::Accepted)) => Rejection::benign(
            RejectCode::AlreadyApplied,
            format!("offer {id} of {from} was accepted at tick {tick}"),
        ),
        Some((tick, why)) => Rejection::benign(
            OFFER_CLOSED,
            format!("offer {id} of {from} closed at tick {tick}: {why:?}"),
        ),
        None => Rejection::benign(UNKNOWN_OFFER, format!("no offer {id} of {from}")),
    }
}

impl Arena {
    /// `who`'s wallet as the ledger counts it.
    pub(super) fn wallet_of(&self, who: EntityId) -> Option<Wallet> {
        self.players.get(&who).map(|p| Wallet {
            coins: p.coins,
            items: u32::try_from(p.items.len()).unwrap_or(u32::MAX),
        })
    }

    /// Reports a transaction to the ledger (drained by the engine each tick).
    pub(super) fn record(&mut self, id: String, kind: TxKind, changes: Vec<(EntityId, Wallet)>) {
        let entries = changes
            .into_iter()
            .filter_map(|(who, before)| {
                let after = self.wallet_of(who)?;
                let player = self.players.get(&who)?.name.clone();
                Some(LedgerEntry {
                    player,
                    before,
                    after,
                })
            })
            .collect();
        self.ledger.push(LedgerTx { id, kind, entries });
    }

    /// Moves coins and items between `a` and `b` (both already checked) and
    /// reports it: `Traded` on the world channel and one ledger transaction.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn exchange(
        &mut self,
        tx: String,
        a: EntityId,
        b: EntityId,
        give_coins: u64,
        give_items: &[EntityId],
        get_coins: u64,
        get_items: &[EntityId],
        out: &mut Emit,
    ) {
        let (Some(wa), Some(wb)) = (self.wallet_of(a), self.wallet_of(b)) else {
            return;
        };
        let (Some(mut pa), Some(mut pb)) = (self.players.remove(&a), self.players.remove(&b))
        else {
            return;
        };
        pa.coins = pa.coins - give_coins + get_coins;
        pb.coins = pb.coins - get_coins + give_coins;
        for i in give_items {
            pa.items.remove(i);
            pb.items.insert(*i);
        }
        for i in get_items {
            pb.items.remove(i);
            pa.items.insert(*i);
        }
        for i in give_items.iter().chain(get_items) {
            if let Some(item) = self.items.get_mut(i) {
                item.holder = Some(if give_items.contains(i) { b } else { a });
                item.version += 1;
            }
        }
        pa.version += 1;
        pb.version += 1;
        let event = ArenaEvent::Traded {
            a,
            b,
            coins_a_to_b: give_coins,
            coins_b_to_a: get_coins,
            items_a_to_b: give_items.to_vec(),
            items_b_to_a: get_items.to_vec(),
            a_coins: pa.coins,
            b_coins: pb.coins,
            a_version: pa.version,
            b_version: pb.version,
        };
        self.players.insert(a, pa);
        self.players.insert(b, pb);
        out.push(
            ChannelId::World,
            EventClass::State,
            Some(a),
            event.payload(),
        );
        self.record(tx, TxKind::Trade, vec![(a, wa), (b, wb)]);
    }

    /// Opens an offer (checked by [`check_economy`]).
    pub(super) fn offer(&mut self, ctx: &Ctx, a: &ArenaAction, out: &mut Emit) {
        let ArenaAction::Offer {
            id,
            partner,
            give_coins,
            give_items,
            get_coins,
            get_items,
            ttl_ticks,
        } = a
        else {
            return;
        };
        let offer = Offer {
            from: ctx.avatar,
            id: *id,
            to: *partner,
            give_coins: *give_coins,
            give_items: give_items.clone(),
            get_coins: *get_coins,
            get_items: get_items.clone(),
            expires: ctx.tick + u64::from(*ttl_ticks),
        };
        self.offers.insert((ctx.avatar, *id), offer.clone());
        out.push(
            ChannelId::World,
            EventClass::State,
            Some(ctx.avatar),
            ArenaEvent::Offered { offer }.payload(),
        );
    }

    /// Accepts an open offer made to the acting player (checked).
    pub(super) fn accept(&mut self, ctx: &Ctx, from: EntityId, id: u64, out: &mut Emit) {
        let Some(o) = self.offers.remove(&(from, id)) else {
            return;
        };
        let tx = format!("trade:{}:{id}", from.0);
        self.exchange(
            tx,
            o.from,
            o.to,
            o.give_coins,
            &o.give_items,
            o.get_coins,
            &o.get_items,
            out,
        );
        self.close(ctx.tick, from, id, OfferEnd::Accepted, out);
    }

    /// Declines (or withdraws) an open offer (checked).
    pub(super) fn decline(&mut self, ctx: &Ctx, from: EntityId, id: u64, out: &mut Emit) {
        if self.offers.remove(&(from, id)).is_some() {
            let why = if from == ctx.avatar {
                OfferEnd::Withdrawn
            } else {
                OfferEnd::Declined
            };
            self.close(ctx.tick, from, id, why, out);
        }
    }

    fn close(&mut self, tick: u64, from: EntityId, id: u64, why: OfferEnd, out: &mut Emit) {
        self.closed.insert((from, id), (tick, why));
        self.closed_order.push_back((from, id));
        while self.closed_order.len() > CLOSED_KEPT {
            if let Some(k) = self.closed_order.pop_front() {
                self.closed.remove(&k);
            }
        }
        out.push(
            ChannelId::World,
            EventClass::State,
            Some(from),
            ArenaEvent::OfferClosed { from, id, why }.payload(),
        );
    }

    /// Closes the offers past their time (every [`SWEEP_EVERY`] ticks: a
    /// sweep costs every open offer).
    pub(super) fn expire_offers(&mut self, ctx: &TickCtx, out: &mut Emit) {
        if ctx.tick % SWEEP_EVERY != 0 {
            return;
        }
        let due: Vec<(EntityId, u64)> = self
            .offers
            .iter()
            .filter(|(_, o)| o.expires <= ctx.tick)
            .map(|(k, _)| *k)
            .collect();
        for (from, id) in due {
            self.offers.remove(&(from, id));
            self.close(ctx.tick, from, id, OfferEnd::Expired, out);
        }
    }

    /// Closes the offers `who` made or was made (it leaves).
    pub(super) fn close_offers_of(&mut self, who: EntityId, tick: u64, out: &mut Emit) {
        let gone: Vec<(EntityId, u64)> = self
            .offers
            .iter()
            .filter(|(_, o)| o.from == who || o.to == who)
            .map(|(k, _)| *k)
            .collect();
        for (from, id) in gone {
            self.offers.remove(&(from, id));
            self.close(tick, from, id, OfferEnd::Left, out);
        }
    }
}

/// Gifts to players in other zones (a cross-zone request whose answer is the
/// gift action's outcome): the giver's side leaves at once, the receiver's
/// zone takes it or says the receiver is not there, and the giver gets it
/// back then.
impl Arena {
    /// Takes what `from` gives to `to` (in another zone) out of this zone:
    /// the request that carries it.
    pub(super) fn give_away(
        &mut self,
        from: EntityId,
        to: EntityId,
        coins: u64,
        items: &[EntityId],
    ) -> super::ArenaRemote {
        if let Some(p) = self.players.get_mut(&from) {
            p.coins = p.coins.saturating_sub(coins);
            for i in items {
                p.items.remove(i);
            }
            p.version += 1;
        }
        let items = items
            .iter()
            .filter_map(|i| self.items.remove(i).map(|it| (*i, it)))
            .collect();
        super::ArenaRemote::Gift {
            from,
            to,
            coins,
            items,
        }
    }

    /// Another zone's gift to `to`, if it is here.
    pub(super) fn take_gift(
        &mut self,
        to: EntityId,
        coins: u64,
        items: Vec<(EntityId, super::Item)>,
    ) -> super::ArenaAnswer {
        let Some(p) = self.players.get_mut(&to) else {
            return super::ArenaAnswer::NotHere;
        };
        p.coins += coins;
        for (i, _) in &items {
            p.items.insert(*i);
        }
        p.version += 1;
        let answer = super::ArenaAnswer::Taken {
            coins: p.coins,
            version: p.version,
        };
        for (i, mut it) in items {
            it.holder = Some(to);
            it.version += 1;
            self.items.insert(i, it);
        }
        answer
    }

    /// What came of a gift of `from`'s to another zone: told to everyone
    /// (`Traded`) when taken, given back (and the action refused) when not.
    pub(super) fn gift_answered(
        &mut self,
        gift: (EntityId, EntityId, u64, Vec<(EntityId, super::Item)>),
        answer: Option<super::ArenaAnswer>,
        out: &mut Emit,
    ) -> Result<(), Rejection> {
        let (from, to, coins, items) = gift;
        if let Some(super::ArenaAnswer::Taken {
            coins: b_coins,
            version: b_version,
        }) = answer
        {
            let (a_coins, a_version) = self
                .players
                .get(&from)
                .map_or((0, 0), |p| (p.coins, p.version));
            let event = ArenaEvent::Traded {
                a: from,
                b: to,
                coins_a_to_b: coins,
                coins_b_to_a: 0,
                items_a_to_b: items.iter().map(|(i, _)| *i).collect(),
                items_b_to_a: Vec::new(),
                a_coins,
                b_coins,
                a_version,
                b_version,
            };
            out.push(
                ChannelId::World,
                EventClass::State,
                Some(from),
                event.payload(),
            );
            return Ok(());
        }
        // Not taken: back to the giver (still here: the engine keeps an
        // avatar whose action waits for another zone's answer in its zone;
        // a player who left the world meanwhile took its wallet, and what
        // it gave is lost with it).
        if let Some(p) = self.players.get_mut(&from) {
            p.coins += coins;
            for (i, _) in &items {
                p.items.insert(*i);
            }
            p.version += 1;
            self.items.extend(items);
        }
        Err(Rejection::benign(
            RejectCode::NotOwner,
            format!("{to} is not near this zone's border (the gift came back)"),
        ))
    }
}
