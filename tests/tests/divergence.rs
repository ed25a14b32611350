//! A nondeterministic game (a test build's bug): its state hash depends on a
//! salt each process draws for itself, so a standby that re-executes the
//! primary's ticks reaches another hash on the first tick. The standby sends
//! signed evidence; the primary marks the world suspect (its status, the
//! control plane's record, a metric) and stops confirming applied outcomes:
//! players get "unknown" instead of "applied".

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use skylane_control::{Embedded, PlacementHints, SharedControl, WorldSpec};
use skylane_netsim::run;
use skylane_origin::{
    ClusterAgent, ClusterNode, Ctx, Emit, Emitted, Engine, GameFactory, Games, Grid, NewWorld,
    Observation, Rejection, TicTacToe, TttAction, TttConfig, Validator, World, BOARD,
};
use skylane_proto::{
    ChannelId, EntityId, EventClass, Hash32, Outcome, Payload, Role, TeamId, WorldPhase,
    WorldResult,
};
use skylane_tests::{Net, NetOptions};

/// Tic-tac-toe with a nondeterministic board: every tick adds a per-instance
/// salt (not part of the snapshot) to a counter that is, so a copy restored
/// elsewhere drifts from its first tick on, and its hash and its board differ.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Salty {
    game: TicTacToe,
    #[serde(skip, default = "salt")]
    salt: u64,
    drift: u64,
}

fn salt() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

impl World for Salty {
    type Action = TttAction;
    fn name(&self) -> &str {
        "salty"
    }
    fn decode_action(&self, class: EventClass, payload: &[u8]) -> Result<TttAction, Rejection> {
        self.game.decode_action(class, payload)
    }
    fn validators(&self) -> Vec<(&'static str, Validator<Self>)> {
        Vec::new()
    }
    fn version(&self, entity: EntityId) -> Option<u64> {
        self.game.version(entity)
    }
    fn join(&mut self, player: &str, team: Option<TeamId>, tick: u64, out: &mut Emit) -> EntityId {
        self.game.join(player, team, tick, out)
    }
    fn leave(&mut self, avatar: EntityId, tick: u64, out: &mut Emit) {
        self.game.leave(avatar, tick, out);
    }
    fn apply(&mut self, ctx: &Ctx, action: &TttAction, out: &mut Emit) -> Observation {
        self.game.apply(ctx, action, out)
    }
    fn describe(&self, entities: &[EntityId]) -> Payload {
        self.game.describe(entities)
    }
    fn position(&self, entity: EntityId) -> Option<(f32, f32)> {
        self.game.position(entity)
    }
    fn team(&self, entity: EntityId) -> Option<TeamId> {
        self.game.team(entity)
    }
    fn channel_state(&self, channel: ChannelId, grid: &Grid) -> Payload {
        self.game.channel_state(channel, grid)
    }
    fn spectator_event(&self, event: &Emitted) -> Option<Payload> {
        self.game.spectator_event(event)
    }
    fn on_tick(&mut self, ctx: &skylane_origin::TickCtx, out: &mut Emit) {
        self.drift = self.drift.wrapping_add(self.salt);
        self.game.on_tick(ctx, out);
    }
    fn on_start(&mut self, ctx: &skylane_origin::TickCtx, out: &mut Emit) {
        self.game.on_start(ctx, out);
    }
    fn result(&self) -> Option<WorldResult> {
        self.game.result()
    }
    fn state_hash(&self) -> Hash32 {
        let mut h = self.game.state_hash();
        for (b, d) in h.0.iter_mut().zip(self.drift.to_le_bytes()) {
            *b ^= d;
        }
        h
    }
    fn diff(&self, other: &Self) -> Vec<EntityId> {
        let mut d = self.game.diff(&other.game);
        if self.drift != other.drift {
            d.push(BOARD);
        }
        d
    }
}

fn games() -> Games {
    let mut g = Games::builtin();
    let salty: GameFactory = Arc::new(|new: NewWorld<'_>| {
        let game = Salty {
            game: TicTacToe::new(TttConfig {
                turn_ticks: 100,
                max_timeouts: 2,
            }),
            salt: salt(),
            drift: 0,
        };
        let grid = Grid {
            width: 1.0,
            height: 1.0,
            cell: 1.0,
            radius: 0,
            margin: 0.0,
            clip: None,
        };
        let engine = Engine::new(
            game,
            grid,
            new.engine_config(),
            new.signer.same_key(),
            new.now_us,
        );
        skylane_origin::start(&new, "salty", grid, engine)
    });
    g.register("salty", salty);
    g
}

fn node(id: &str, addr: std::net::SocketAddr, net: &Net) -> ClusterNode {
    ClusterNode {
        id: id.into(),
        addr: addr.to_string(),
        tls_name: "localhost".into(),
        admin: None,
        region: "eu".into(),
        capacity: 16,
        coords: None,
        lease_ttl: Duration::from_secs(3),
        removal_grace: Duration::from_secs(2),
        journal_dir: None,
        replication: Some(net.replication_client()),
        zones: None,
        attestation: None,
    }
}

#[test]
fn a_standby_that_disagrees_marks_the_world_suspect_and_outcomes_unconfirmed() {
    run(|| async {
        let mut net = Net::start(NetOptions {
            relays: vec![(1, "amsterdam")],
            ..NetOptions::default()
        });
        let control: SharedControl = Arc::new(Embedded::new());
        let signer = net.origin_signer();
        let a = node("origin-1", net.origin.local_addr(), &net);
        let _a: ClusterAgent = net
            .origin
            .join_cluster(control.clone(), a, games(), signer.same_key())
            .await
            .expect("joins");
        let mut b = net.add_origin("origin-b", "frankfurt");
        let b_node = node("origin-2", b.addr, &net);
        let _b: ClusterAgent = b
            .server
            .join_cluster(control.clone(), b_node, games(), signer)
            .await
            .expect("joins");
        net.follow(&control, Duration::from_secs(3)).await;
        let rec = control
            .create_world(
                WorldSpec {
                    standbys: Some(1),
                    ..WorldSpec::new("salty", 10, 2)
                },
                &PlacementHints::default(),
            )
            .await
            .expect("placed");
        let w = rec.id;
        let primary = if rec.placed_on == "origin-1" {
            net.origin.handle()
        } else {
            b.server.handle()
        };
        let mut players = Vec::new();
        for name in ["xavier", "olga"] {
            let (_, builder) = net.client_builder("paris", name);
            let c = builder
                .token(net.token_for(name, Role::Player, vec![w]))
                .world(w)
                .relays([net.relays[0].addr])
                .connect()
                .await
                .expect("joins");
            players.push(c);
        }
        // The first tick the standby re-executes disagrees.
        let suspect = tokio::time::timeout(Duration::from_secs(30), async {
            loop {
                if let Some(s) = primary.world_status(w).await {
                    if let Some(t) = s.diverged_at {
                        return t;
                    }
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await
        .expect("the divergence is detected");
        assert!(suspect >= 1);
        // The control plane's record says so.
        tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                let v = control.view().await.unwrap();
                if v.worlds[&w].status.suspect.is_some() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await
        .expect("the world is marked suspect on the control plane");
        // Outcomes are no longer confirmed: the room plays, but an applied
        // move is answered "unknown".
        tokio::time::timeout(Duration::from_secs(10), async {
            while players[0]
                .world_state()
                .is_none_or(|ws| ws.phase != WorldPhase::Playing)
            {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await
        .expect("the room plays");
        let mut unknown = 0;
        for (i, cell) in [(0usize, 0u8), (1, 3), (0, 1)] {
            let payload = postcard::to_stdvec(&TttAction::Place { cell }).unwrap();
            let r = tokio::time::timeout(
                Duration::from_secs(10),
                players[i].act(EventClass::State, vec![], payload.into()),
            )
            .await
            .expect("answered")
            .expect("answer");
            assert!(
                !matches!(r, Outcome::Applied { .. }),
                "confirmed although suspect: {r:?}"
            );
            unknown += usize::from(matches!(r, Outcome::Unknown { .. }));
        }
        assert!(unknown >= 1, "moves answered unknown");
        // The standby compared its copy with the primary's state and named
        // the board, the entity whose state differs.
        let entities = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                let s = primary.world_status(w).await.expect("hosted");
                if !s.diverged_entities.is_empty() {
                    return s.diverged_entities;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await
        .expect("the evidence names entities");
        assert_eq!(entities, vec![BOARD.0]);
        drop(b);
    });
}
