//! Movement as the latest state per entity (pure: no I/O, no clock), what a
//! game renders from: [`Entities`] keeps, for every entity the client hears
//! movement of, its newest state (an older tick never replaces a newer one:
//! latest wins) and the one before, with the tick and origin time each was
//! true at; [`Track::at`] interpolates between the two for a render time a
//! little behind the newest (never extrapolating past it).
//!
//! The client fills it from every movement-class event that names an entity
//! ([`crate::Client::entity`], [`crate::Client::entities`]); the events
//! themselves still arrive in order on [`crate::Client::next_event`]. When
//! relays send movement as latest-wins datagrams (issue 24), the same view
//! is what they update.

use std::collections::HashMap;

use bytes::Bytes;
use skylane_proto::EntityId;

/// Most entities tracked; past it the least recently updated goes.
pub const MAX_TRACKED: usize = 8192;

/// One state of an entity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sample {
    /// The world tick it was true at.
    pub tick: u64,
    /// The origin's clock then, microseconds since the Unix epoch.
    pub origin_time_us: u64,
    /// The game's encoding of the state.
    pub body: Bytes,
}

/// An entity's newest state and the one before it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Track {
    /// The newest.
    pub latest: Sample,
    /// The one before (absent until a second state arrived).
    pub previous: Option<Sample>,
}

impl Track {
    /// How old the newest state is at `now_us` (the deployment's clock,
    /// [`crate::Client::server_time_us`]): the entity's freshness.
    pub fn age_us(&self, now_us: u64) -> u64 {
        now_us.saturating_sub(self.latest.origin_time_us)
    }

    /// The state at origin time `at_us`, decoded with `decode` and blended
    /// with `lerp(a, b, t)` (`t` in 0..=1) between the previous and the
    /// newest state; at or past the newest, the newest (no extrapolation);
    /// before the previous, the previous. `None` if a body does not decode.
    pub fn at<T>(
        &self,
        at_us: u64,
        decode: impl Fn(&[u8]) -> Option<T>,
        lerp: impl Fn(&T, &T, f32) -> T,
    ) -> Option<T> {
        let b = decode(&self.latest.body)?;
        let Some(prev) = &self.previous else {
            return Some(b);
        };
        if at_us >= self.latest.origin_time_us {
            return Some(b);
        }
        let a = decode(&prev.body)?;
        if at_us <= prev.origin_time_us {
            return Some(a);
        }
        let span = self
            .latest
            .origin_time_us
            .saturating_sub(prev.origin_time_us);
        if span == 0 {
            return Some(b);
        }
        let t = (at_us - prev.origin_time_us) as f32 / span as f32;
        Some(lerp(&a, &b, t.clamp(0.0, 1.0)))
    }
}

/// Linear interpolation of two points, for [`Track::at`].
pub fn lerp_point(a: &(f32, f32), b: &(f32, f32), t: f32) -> (f32, f32) {
    (a.0 + (b.0 - a.0) * t, a.1 + (b.1 - a.1) * t)
}

/// The latest movement state of every entity heard of.
#[derive(Debug, Default, Clone)]
pub struct Entities {
    tracks: HashMap<EntityId, Track>,
    /// Updates applied (newer than what was held).
    pub applied: u64,
    /// Updates ignored (not newer: latest wins).
    pub stale: u64,
}

impl Entities {
    /// Takes `entity`'s state at `tick`; `false` if it is older than the
    /// one held. A second state at the same tick (two moves in one tick, in
    /// event order) replaces the newest and keeps the one before.
    pub fn handle_state(
        &mut self,
        entity: EntityId,
        tick: u64,
        origin_time_us: u64,
        body: Bytes,
    ) -> bool {
        let sample = Sample {
            tick,
            origin_time_us,
            body,
        };
        match self.tracks.get_mut(&entity) {
            Some(t) if t.latest.tick > tick => {
                self.stale += 1;
                false
            }
            Some(t) if t.latest.tick == tick => {
                t.latest = sample;
                self.applied += 1;
                true
            }
            Some(t) => {
                let old = std::mem::replace(&mut t.latest, sample);
                t.previous = Some(old);
                self.applied += 1;
                true
            }
            None => {
                if self.tracks.len() >= MAX_TRACKED {
                    self.evict();
                }
                self.tracks.insert(
                    entity,
                    Track {
                        latest: sample,
                        previous: None,
                    },
                );
                self.applied += 1;
                true
            }
        }
    }

    fn evict(&mut self) {
        if let Some(oldest) = self
            .tracks
            .iter()
            .min_by_key(|(_, t)| t.latest.origin_time_us)
            .map(|(e, _)| *e)
        {
            self.tracks.remove(&oldest);
        }
    }

    /// One entity's track.
    pub fn get(&self, e: EntityId) -> Option<&Track> {
        self.tracks.get(&e)
    }

    /// Forgets an entity (it left the client's view).
    pub fn remove(&mut self, e: EntityId) {
        self.tracks.remove(&e);
    }

    /// Entities tracked.
    pub fn len(&self) -> usize {
        self.tracks.len()
    }

    /// Whether none is tracked.
    pub fn is_empty(&self) -> bool {
        self.tracks.is_empty()
    }

    /// Every track.
    pub fn iter(&self) -> impl Iterator<Item = (EntityId, &Track)> {
        self.tracks.iter().map(|(e, t)| (*e, t))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(x: f32, y: f32) -> Bytes {
        let mut v = x.to_le_bytes().to_vec();
        v.extend_from_slice(&y.to_le_bytes());
        Bytes::from(v)
    }

    fn decode(b: &[u8]) -> Option<(f32, f32)> {
        Some((
            f32::from_le_bytes(b.get(0..4)?.try_into().ok()?),
            f32::from_le_bytes(b.get(4..8)?.try_into().ok()?),
        ))
    }

    #[test]
    fn latest_wins_and_the_previous_state_is_kept_for_interpolation() {
        let mut es = Entities::default();
        let e = EntityId(7);
        assert!(es.handle_state(e, 10, 1_000_000, body(0.0, 0.0)));
        assert!(es.handle_state(e, 12, 1_100_000, body(10.0, 20.0)));
        assert!(
            !es.handle_state(e, 11, 1_050_000, body(99.0, 99.0)),
            "older"
        );
        assert_eq!((es.applied, es.stale), (2, 1));
        // A second move in the same tick replaces the newest only.
        assert!(es.handle_state(e, 12, 1_100_000, body(10.0, 20.0)));
        assert_eq!(es.get(e).unwrap().previous.as_ref().unwrap().tick, 10);
        let t = es.get(e).unwrap();
        assert_eq!(t.latest.tick, 12);
        assert_eq!(t.previous.as_ref().unwrap().tick, 10);
        assert_eq!(t.at(1_050_000, decode, lerp_point), Some((5.0, 10.0)));
        assert_eq!(
            t.at(2_000_000, decode, lerp_point),
            Some((10.0, 20.0)),
            "no extrapolation"
        );
        assert_eq!(t.at(0, decode, lerp_point), Some((0.0, 0.0)));
        assert_eq!(t.age_us(1_130_000), 30_000);
        let garbled = Track {
            latest: Sample {
                tick: 1,
                origin_time_us: 1,
                body: Bytes::from_static(b"x"),
            },
            previous: None,
        };
        assert_eq!(garbled.at(1, decode, lerp_point), None);
        es.remove(e);
        assert!(es.is_empty());
    }

    #[test]
    fn the_least_recently_updated_goes_when_full() {
        let mut es = Entities::default();
        for i in 0..MAX_TRACKED as u64 + 1 {
            es.handle_state(EntityId(i), 1, 1_000 + i, Bytes::new());
        }
        assert_eq!(es.len(), MAX_TRACKED);
        assert!(es.get(EntityId(0)).is_none(), "the oldest went");
        assert!(es.get(EntityId(MAX_TRACKED as u64)).is_some());
    }
}
