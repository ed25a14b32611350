//! Event classes: the one place that says how each kind of message travels.
//!
//! Every action and event carries an [`EventClass`]. The class decides the QUIC
//! delivery mode, the scheduling priority, how long a message stays worth sending,
//! and whether newer messages supersede older ones. The relay's scheduler, the
//! origin and the client SDK all read these policies from here, so they cannot drift.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The class of an action or event, in priority order (first is most urgent).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum EventClass {
    /// Hits, deaths, purchases, state-changing results. Never dropped.
    Critical,
    /// Inventory, score, object state. Never dropped; after critical.
    State,
    /// Position, aim, velocity. Latest wins per entity; stale updates are dropped.
    Movement,
    /// Text and emotes. Reliable, lowest interactive priority.
    Chat,
    /// Telemetry, content, replays. Only spare capacity.
    Bulk,
}

/// How a class travels over QUIC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// A reliable, ordered QUIC stream.
    ReliableStream,
    /// An unreliable QUIC datagram: loss is repaired by the next update.
    Datagram,
}

/// Whether a newer message may replace an older, unsent one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coalescing {
    /// Every message is delivered.
    None,
    /// Only the newest unsent message per entity is kept.
    LatestPerEntity,
}

impl EventClass {
    /// Every class, most urgent first.
    pub const ALL: [Self; 5] = [
        Self::Critical,
        Self::State,
        Self::Movement,
        Self::Chat,
        Self::Bulk,
    ];

    /// Number of classes; handy for per-class arrays.
    pub const COUNT: usize = Self::ALL.len();

    /// Scheduling rank: 0 is sent first. Strict priority between ranks.
    pub const fn rank(self) -> usize {
        self as usize
    }

    /// QUIC stream priority for quinn's `SendStream::set_priority` (higher is sent first).
    pub const fn quic_priority(self) -> i32 {
        (Self::COUNT - self.rank()) as i32
    }

    /// How the class travels.
    pub const fn delivery(self) -> Delivery {
        match self {
            Self::Movement => Delivery::Datagram,
            _ => Delivery::ReliableStream,
        }
    }

    /// Age after which an unsent message of this class is no longer worth sending.
    ///
    /// `None` means the class is never dropped (critical and state). Movement is
    /// worthless after a few ticks; chat after seconds; bulk waits for spare capacity
    /// but is eventually abandoned so a slow peer's queue stays bounded.
    pub const fn deadline(self) -> Option<Duration> {
        match self {
            Self::Critical | Self::State => None,
            Self::Movement => Some(Duration::from_millis(150)),
            Self::Chat => Some(Duration::from_secs(10)),
            Self::Bulk => Some(Duration::from_secs(30)),
        }
    }

    /// Whether a newer message supersedes an older unsent one.
    pub const fn coalescing(self) -> Coalescing {
        match self {
            Self::Movement => Coalescing::LatestPerEntity,
            _ => Coalescing::None,
        }
    }

    /// Whether the class is delivered reliably (never silently dropped by the network).
    pub const fn is_reliable(self) -> bool {
        matches!(self.delivery(), Delivery::ReliableStream)
    }

    /// Lower-case name, as used in configuration, metrics labels and CLI flags.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Critical => "critical",
            Self::State => "state",
            Self::Movement => "movement",
            Self::Chat => "chat",
            Self::Bulk => "bulk",
        }
    }
}

impl std::fmt::Display for EventClass {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Error returned when parsing an unknown class name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown event class {0:?} (expected critical, state, movement, chat or bulk)")]
pub struct UnknownClass(pub String);

impl std::str::FromStr for EventClass {
    type Err = UnknownClass;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|c| c.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| UnknownClass(s.to_owned()))
    }
}

/// A set of classes, as a bit mask (used by spectator filters).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ClassSet(u8);

impl ClassSet {
    /// No class.
    pub const EMPTY: Self = Self(0);
    /// Every class.
    pub const ALL: Self = Self((1 << EventClass::COUNT) - 1);

    /// Whether `class` is in the set.
    pub const fn contains(self, class: EventClass) -> bool {
        self.0 & (1 << class.rank()) != 0
    }

    /// The set with `class` added.
    #[must_use]
    pub const fn with(self, class: EventClass) -> Self {
        Self(self.0 | (1 << class.rank()))
    }
}

impl FromIterator<EventClass> for ClassSet {
    fn from_iter<I: IntoIterator<Item = EventClass>>(iter: I) -> Self {
        iter.into_iter().fold(Self::EMPTY, Self::with)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn priority_order_matches_the_brief() {
        let ranks: Vec<_> = EventClass::ALL.iter().map(|c| c.rank()).collect();
        assert_eq!(ranks, vec![0, 1, 2, 3, 4]);
        assert!(EventClass::Critical.quic_priority() > EventClass::State.quic_priority());
        assert!(EventClass::Chat.quic_priority() > EventClass::Bulk.quic_priority());
        assert!(EventClass::Critical < EventClass::Bulk);
    }

    #[test]
    fn only_movement_is_unreliable_and_coalesced() {
        for c in EventClass::ALL {
            let movement = c == EventClass::Movement;
            assert_eq!(c.delivery() == Delivery::Datagram, movement);
            assert_eq!(c.coalescing() == Coalescing::LatestPerEntity, movement);
            assert_eq!(c.is_reliable(), !movement);
        }
        assert_eq!(EventClass::Critical.deadline(), None);
        assert_eq!(EventClass::State.deadline(), None);
        assert!(EventClass::Movement.deadline() < EventClass::Chat.deadline());
    }

    #[test]
    fn names_round_trip_and_unknown_is_typed() {
        for c in EventClass::ALL {
            assert_eq!(c.name().parse::<EventClass>(), Ok(c));
            assert_eq!(c.to_string(), c.name());
        }
        assert_eq!("CRITICAL".parse::<EventClass>(), Ok(EventClass::Critical));
        assert_eq!(
            "loud".parse::<EventClass>(),
            Err(UnknownClass("loud".to_owned()))
        );
    }

    #[test]
    fn class_sets() {
        let set: ClassSet = [EventClass::Critical, EventClass::Chat]
            .into_iter()
            .collect();
        assert!(set.contains(EventClass::Critical));
        assert!(set.contains(EventClass::Chat));
        assert!(!set.contains(EventClass::Movement));
        assert!(EventClass::ALL.iter().all(|c| ClassSet::ALL.contains(*c)));
        assert!(EventClass::ALL
            .iter()
            .all(|c| !ClassSet::EMPTY.contains(*c)));
    }
}
