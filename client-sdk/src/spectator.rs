//! Watching a world: a spectator's delayed, filtered feed.
//!
//! ```no_run
//! # async fn demo(token: String, ca_pem: &str) -> Result<(), skylane_client::ClientError> {
//! use std::time::Duration;
//! use skylane_client::{Client, Spectator};
//! use skylane_proto::{BandwidthMode, SpectatorFilter, WorldId};
//!
//! let builder = Client::builder()
//!     .token(token) // a spectator token
//!     .world(WorldId(1))
//!     .relays(["127.0.0.1:4433".parse().unwrap()])
//!     .ca_pem(ca_pem);
//! let mut watch = Spectator::connect(
//!     builder,
//!     SpectatorFilter::all(),
//!     Duration::from_secs(30),
//!     BandwidthMode::Reduced { hz: 10 },
//! )
//! .await?;
//! loop {
//!     let frame = watch.next_frame().await?;
//!     // A keyframe replaces the whole view; other frames update it.
//!     println!("tick {}: {} events (keyframe: {})", frame.tick, frame.events.len(), frame.keyframe);
//! }
//! # }
//! ```
//!
//! A [`Spectator`] is a [`Client`] whose session is a spectator's: the same relay
//! choice, reconnect with backoff and jitter, resume and go-away handling. After
//! every (re)connect it asks its relay for the feed again and the relay starts it
//! from the latest keyframe the delay allows, so a spectator never needs to
//! remember where it was: each keyframe replaces its view. No frame arrives before
//! its world time plus the delay; frames are filtered (classes, teams, entities,
//! area) and thinned (bandwidth mode) by the relay.

use std::time::Duration;

use skylane_proto::{BandwidthMode, FeedFrame, SpectatorFilter, SpectatorSubscribe};

use crate::client::Cmd;
use crate::{Client, ClientBuilder, ClientError, ClientEvent};

/// Clock-sync ping interval of a spectator unless its builder sets one.
pub const SPECTATOR_PING_INTERVAL: Duration = Duration::from_secs(5);

/// A spectator's connection: a [`Client`] whose session watches a delayed, filtered
/// feed instead of playing, with the same reconnect behaviour.
#[derive(Debug)]
pub struct Spectator {
    client: Client,
    sub: SpectatorSubscribe,
}

fn subscription(
    world: skylane_proto::WorldId,
    filter: SpectatorFilter,
    delay: Duration,
    mode: BandwidthMode,
) -> Result<SpectatorSubscribe, ClientError> {
    let delay_ms = u32::try_from(delay.as_millis())
        .map_err(|_| ClientError::Config(format!("delay {delay:?} is too long")))?;
    Ok(SpectatorSubscribe {
        world,
        filter,
        delay_ms,
        mode,
    })
}

impl Spectator {
    /// Connects with `builder` (which must carry a spectator token and the world to
    /// watch) and asks for the feed: events passing `filter`, `delay` behind live
    /// play, thinned by `mode`.
    pub async fn connect(
        builder: ClientBuilder,
        filter: SpectatorFilter,
        delay: Duration,
        mode: BandwidthMode,
    ) -> Result<Self, ClientError> {
        let world = builder
            .world_id()
            .ok_or_else(|| ClientError::Config("a world is required".into()))?;
        let sub = subscription(world, filter, delay, mode)?;
        // The relay enforces the delay: a spectator's clock only maps frame times
        // to local time, so it pings less often than a player (a relay serving
        // 10,000 spectators answers 2,000 pings/s instead of 10,000).
        let builder = if builder.ping_interval.is_none() {
            builder.ping_interval(SPECTATOR_PING_INTERVAL)
        } else {
            builder
        };
        let client = builder.spectate(sub.clone()).connect().await?;
        Ok(Self { client, sub })
    }

    /// The next frame of the feed. Connection changes are handled inside; an error
    /// is returned when the spectator stopped for good (refused request, closed).
    pub async fn next_frame(&mut self) -> Result<FeedFrame, ClientError> {
        loop {
            match self.client.next_event().await {
                Some(ClientEvent::Spectate(f)) => return Ok(f),
                Some(ClientEvent::Error(e)) => return Err(e),
                Some(_) => {}
                None => return Err(ClientError::Closed),
            }
        }
    }

    /// A frame if one is waiting (`None` also when the spectator stopped).
    pub fn try_next_frame(&mut self) -> Option<FeedFrame> {
        while let Some(ev) = self.client.try_next_event() {
            if let ClientEvent::Spectate(f) = ev {
                return Some(f);
            }
        }
        None
    }

    /// Changes what is watched; the relay restarts the feed from a keyframe.
    pub async fn change(
        &mut self,
        filter: SpectatorFilter,
        delay: Duration,
        mode: BandwidthMode,
    ) -> Result<(), ClientError> {
        let sub = subscription(self.sub.world, filter, delay, mode)?;
        self.client.command(Cmd::Spectate(sub.clone())).await?;
        self.sub = sub;
        Ok(())
    }

    /// What is being watched.
    pub fn subscription(&self) -> &SpectatorSubscribe {
        &self.sub
    }

    /// How late a frame arrived against its due time (world time + delay), in
    /// microseconds through the synchronised clock: ≥ 0 means on time or late,
    /// negative would mean early (the relay never releases early; a negative
    /// figure is clock-sync error). `None` before the clock is synchronised.
    pub fn lateness_us(&self, frame: &FeedFrame) -> Option<i64> {
        let now = self.client.server_time_us()?;
        let due = frame.origin_time_us + u64::from(self.sub.delay_ms) * 1000;
        Some(now as i64 - due as i64)
    }

    /// The underlying client (session, relay, stats, clock).
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Ends the session.
    pub async fn close(self) {
        self.client.close().await;
    }
}
