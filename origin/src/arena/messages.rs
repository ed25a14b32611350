//! The arena's actions and events as they travel (postcard-encoded).

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use skylane_proto::{EntityId, Payload, TeamId};

/// What a player asks for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ArenaAction {
    /// Move the avatar to a point.
    Move {
        /// Target x.
        x: f32,
        /// Target y.
        y: f32,
    },
    /// Pick an item up from the ground.
    PickUp {
        /// The item.
        item: EntityId,
    },
    /// Give coins and items to another player, atomically. Taking anything
    /// from the partner (`get_coins`, `get_items`) needs its consent: such a
    /// trade is refused (`Forbidden`); make an [`ArenaAction::Offer`] instead.
    Trade {
        /// The other player's avatar.
        partner: EntityId,
        /// Coins given to the partner.
        give_coins: u64,
        /// Items given to the partner.
        give_items: Vec<EntityId>,
        /// Coins received from the partner.
        get_coins: u64,
        /// Items received from the partner.
        get_items: Vec<EntityId>,
    },
    /// Fire at a point.
    Fire {
        /// Aim x.
        x: f32,
        /// Aim y.
        y: f32,
    },
    /// Paint a spray (decal image bytes) where the avatar stands: bulk traffic to
    /// everyone who sees that cell. Size is bounded by the engine's payload limit.
    Spray {
        /// Image bytes (opaque to the server).
        data: Vec<u8>,
    },
    /// Put a map marker for everyone in the world: critical, must arrive fast.
    Mark {
        /// Marker x.
        x: f32,
        /// Marker y.
        y: f32,
    },
    /// Share a plan with the team only (a rally point): goes on the team channel,
    /// so neither the other team nor spectators ever see it.
    Plan {
        /// Rally x.
        x: f32,
        /// Rally y.
        y: f32,
    },
    /// Offer an exchange to another player: nothing moves until the partner
    /// accepts it (both sides' holdings checked again then), declines it, or
    /// it expires. `id` is the offerer's own (unique per offerer): the trade's
    /// idempotent transaction id.
    Offer {
        /// The offerer's id for it.
        id: u64,
        /// The partner's avatar.
        partner: EntityId,
        /// Coins given to the partner.
        give_coins: u64,
        /// Items given to the partner.
        give_items: Vec<EntityId>,
        /// Coins asked of the partner.
        get_coins: u64,
        /// Items asked of the partner.
        get_items: Vec<EntityId>,
        /// Ticks it stays open (at most [`super::MAX_OFFER_TICKS`]).
        ttl_ticks: u32,
    },
    /// Accept an offer made to this player: the exchange happens, atomically.
    /// Sent again after it went through, it is answered `AlreadyApplied`.
    Accept {
        /// The offerer's avatar.
        from: EntityId,
        /// The offer's id.
        id: u64,
    },
    /// Decline an offer made to this player (or withdraw one's own: `from` is
    /// then one's own avatar).
    Decline {
        /// The offerer's avatar.
        from: EntityId,
        /// The offer's id.
        id: u64,
    },
}

impl ArenaAction {
    /// Encodes the action as an action payload.
    pub fn encode(&self) -> Payload {
        encode(self)
    }
}

/// Zones: what one zone of an arena asks the zone owning what it touches
/// (a cross-zone request).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ArenaRemote {
    /// A shot at a point across the border (or at a neighbour's avatar in
    /// the hysteresis band) that hit no one in the shooter's zone.
    Shot {
        /// Shooter (in the asking zone).
        shooter: EntityId,
        /// Aim point.
        x: f32,
        /// Aim point.
        y: f32,
    },
    /// A gift to a player across the border (near it: mirrored in the
    /// giver's zone): the giver's coins and items, taken from it until the
    /// answer (given back if refused).
    Gift {
        /// Giver (in the asking zone).
        from: EntityId,
        /// Receiver (in the owning zone).
        to: EntityId,
        /// Coins.
        coins: u64,
        /// Items, with their state.
        items: Vec<(EntityId, super::Item)>,
    },
}

impl ArenaRemote {
    /// Encodes the request.
    pub fn encode(&self) -> Payload {
        encode(self)
    }

    /// Decodes a request (`None`: not one).
    pub fn decode(b: &[u8]) -> Option<Self> {
        decode(b)
    }
}

/// Zones: what came of an [`ArenaRemote`] at the owning zone.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ArenaAnswer {
    /// The shot hit.
    Hit {
        /// Who.
        target: EntityId,
        /// Its hit points after the hit (0: it died and respawned).
        hp: u32,
        /// Its version after the hit.
        version: u64,
    },
    /// Nobody there.
    Missed,
    /// The gift was taken: the receiver's coins and version after it.
    Taken {
        /// Coins.
        coins: u64,
        /// Version.
        version: u64,
    },
    /// The receiver is not in the owning zone (it left, or moved on).
    NotHere,
}

impl ArenaAnswer {
    /// Encodes the answer.
    pub fn encode(&self) -> Payload {
        encode(self)
    }

    /// Decodes an answer (`None`: not one).
    pub fn decode(b: &[u8]) -> Option<Self> {
        decode(b)
    }
}

/// What happened, as carried in events.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ArenaEvent {
    /// A player joined.
    Spawned {
        /// Avatar.
        entity: EntityId,
        /// Player id (the token's subject), so a client can find its own avatar.
        player: String,
        /// Position.
        x: f32,
        /// Position.
        y: f32,
        /// Team.
        team: TeamId,
        /// Hit points.
        hp: u32,
        /// Coins.
        coins: u64,
        /// Entity version after the change (receivers keep the newest).
        version: u64,
        /// Items it holds (a returning player's, brought from its wallet).
        items: Vec<EntityId>,
    },
    /// A player left.
    Left {
        /// Avatar.
        entity: EntityId,
    },
    /// A player moved.
    Moved {
        /// Avatar.
        entity: EntityId,
        /// Position.
        x: f32,
        /// Position.
        y: f32,
        /// Entity version after the change.
        version: u64,
    },
    /// An item was picked up.
    PickedUp {
        /// Item.
        item: EntityId,
        /// Avatar.
        by: EntityId,
        /// Item version after the change.
        version: u64,
    },
    /// A trade completed.
    Traded {
        /// Initiator.
        a: EntityId,
        /// Partner.
        b: EntityId,
        /// Coins a → b.
        coins_a_to_b: u64,
        /// Coins b → a.
        coins_b_to_a: u64,
        /// Items a → b.
        items_a_to_b: Vec<EntityId>,
        /// Items b → a.
        items_b_to_a: Vec<EntityId>,
        /// Coins of a after the trade.
        a_coins: u64,
        /// Coins of b after the trade.
        b_coins: u64,
        /// Version of a after the trade.
        a_version: u64,
        /// Version of b after the trade.
        b_version: u64,
    },
    /// A shot hit.
    Hit {
        /// Shooter.
        shooter: EntityId,
        /// Target.
        target: EntityId,
        /// Target's hit points after the hit.
        hp: u32,
        /// Target's version after the hit.
        version: u64,
    },
    /// A shot missed.
    Missed {
        /// Shooter.
        shooter: EntityId,
    },
    /// A spray was painted (bulk, on the sprayer's cell channel).
    Sprayed {
        /// Sprayer.
        by: EntityId,
        /// Where.
        x: f32,
        /// Where.
        y: f32,
        /// Image bytes.
        data: Vec<u8>,
    },
    /// A map marker was placed (critical, on the world channel).
    Marked {
        /// Who placed it.
        by: EntityId,
        /// Marker x.
        x: f32,
        /// Marker y.
        y: f32,
    },
    /// A team-private plan (on the team's channel only).
    Planned {
        /// Who shared it.
        by: EntityId,
        /// Rally x.
        x: f32,
        /// Rally y.
        y: f32,
    },
    /// A player died and respawned.
    Died {
        /// Victim.
        entity: EntityId,
        /// Killer.
        by: EntityId,
        /// Respawn position.
        x: f32,
        /// Respawn position.
        y: f32,
        /// Hit points after respawning.
        hp: u32,
        /// Victim's version after respawning.
        version: u64,
    },
    /// An exchange was offered (on the world channel: the partner learns it).
    Offered {
        /// The offer.
        offer: super::Offer,
    },
    /// An offer closed without (or with) its exchange.
    OfferClosed {
        /// The offerer.
        from: EntityId,
        /// The offer's id.
        id: u64,
        /// Why.
        why: super::OfferEnd,
    },
}

impl ArenaEvent {
    /// A player as it stands: what spectators start from and a zone shows
    /// of a player arriving from another.
    pub(crate) fn spawned(entity: EntityId, p: &super::Player) -> Self {
        Self::Spawned {
            entity,
            player: p.name.clone(),
            x: p.x,
            y: p.y,
            team: p.team,
            hp: p.hp,
            coins: p.coins,
            version: p.version,
            items: p.items.iter().copied().collect(),
        }
    }

    /// Decodes an event payload.
    pub fn decode(payload: &[u8]) -> Option<Self> {
        decode(payload)
    }

    pub(super) fn payload(&self) -> Payload {
        encode(self)
    }
}

/// Any of the arena's messages as bytes (encoding plain data cannot fail).
fn encode<T: Serialize>(v: &T) -> Payload {
    Payload::from(postcard::to_stdvec(v).unwrap_or_default())
}

/// Any of the arena's messages from bytes (`None`: not one).
fn decode<T: DeserializeOwned>(b: &[u8]) -> Option<T> {
    postcard::from_bytes(b).ok()
}
