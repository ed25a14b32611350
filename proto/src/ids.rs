//! Identifiers that travel on the wire: worlds, sessions, entities, relays, channels.
//!
//! All are small copyable newtypes so that a `SessionId` can never be passed where an
//! `EntityId` is meant. Numeric ids keep every frame short: they are repeated in every
//! event, while names live in configuration and the directory.

use std::fmt;

use serde::{Deserialize, Serialize};

macro_rules! numeric_id {
    ($(#[$doc:meta])* $name:ident($inner:ty), $prefix:literal) => {
        $(#[$doc])*
        #[derive(
            Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Default,
        )]
        #[serde(transparent)]
        pub struct $name(pub $inner);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!($prefix, "{}"), self.0)
            }
        }

        impl From<$inner> for $name {
            fn from(v: $inner) -> Self {
                Self(v)
            }
        }
    };
}

numeric_id!(
    /// A world hosted by exactly one origin at a time.
    WorldId(u64),
    "world-"
);
numeric_id!(
    /// A player's or spectator's session; survives reconnects and relay changes.
    SessionId(u64),
    "session-"
);
numeric_id!(
    /// An entity in a world (player avatar, item, projectile...).
    EntityId(u64),
    "entity-"
);
numeric_id!(
    /// A relay node in the directory.
    RelayId(u32),
    "relay-"
);
numeric_id!(
    /// A team inside a world.
    TeamId(u16),
    "team-"
);

/// The unit of publish/subscribe inside a world.
///
/// A session receives the world-global channel, its team's channel, and the
/// area-of-interest cells around it. The origin decides which channels a session
/// receives; the relay copies each channel's events to its local subscribers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum ChannelId {
    /// Everything every member of the world must see.
    World,
    /// Events only one team sees (team chat, hidden team state).
    Team(TeamId),
    /// An area-of-interest cell of the world's grid.
    Cell {
        /// Column of the cell in the grid.
        x: u16,
        /// Row of the cell in the grid.
        y: u16,
    },
}

impl fmt::Display for ChannelId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::World => f.write_str("world"),
            Self::Team(t) => write!(f, "{t}"),
            Self::Cell { x, y } => write!(f, "cell-{x}-{y}"),
        }
    }
}
