//! Property tests for the codec: every message round-trips through frames and
//! datagrams, and arbitrary bytes never make a decoder panic.

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;
use skylane_proto::*;

fn payload() -> impl Strategy<Value = Payload> {
    prop::collection::vec(any::<u8>(), 0..200).prop_map(Payload::from)
}

fn class() -> impl Strategy<Value = EventClass> {
    prop::sample::select(EventClass::ALL.to_vec())
}

fn channel() -> impl Strategy<Value = ChannelId> {
    prop_oneof![
        Just(ChannelId::World),
        any::<u16>().prop_map(|t| ChannelId::Team(TeamId(t))),
        (any::<u16>(), any::<u16>()).prop_map(|(x, y)| ChannelId::Cell { x, y }),
    ]
}

fn cursor() -> impl Strategy<Value = ChannelCursor> {
    (channel(), any::<u64>()).prop_map(|(channel, seq)| ChannelCursor { channel, seq })
}

fn versions() -> impl Strategy<Value = Vec<EntityVersion>> {
    prop::collection::vec(
        (any::<u64>(), any::<u64>()).prop_map(|(e, version)| EntityVersion {
            entity: EntityId(e),
            version,
        }),
        0..5,
    )
}

fn relay_info() -> impl Strategy<Value = RelayInfo> {
    (
        any::<u32>(),
        "[a-z-]{0,12}",
        prop::collection::vec("[0-9.:]{1,21}", 0..3),
        -90f32..90.0,
        -180f32..180.0,
    )
        .prop_map(|(id, region, addrs, lat, lon)| RelayInfo {
            id: RelayId(id),
            region,
            addrs,
            lat,
            lon,
        })
}

fn ticket() -> impl Strategy<Value = ResumeTicket> {
    payload().prop_map(ResumeTicket)
}

fn ping() -> impl Strategy<Value = Ping> {
    (any::<u64>(), any::<u64>()).prop_map(|(nonce, sent_us)| Ping { nonce, sent_us })
}

fn pong() -> impl Strategy<Value = Pong> {
    (any::<u64>(), any::<u64>(), any::<u64>(), any::<u64>()).prop_map(
        |(nonce, sent_us, received_us, replied_us)| Pong {
            nonce,
            sent_us,
            received_us,
            replied_us,
        },
    )
}

fn action() -> impl Strategy<Value = Action> {
    (class(), any::<u64>(), any::<u64>(), versions(), payload()).prop_map(
        |(class, seq, client_time_us, reads, payload)| Action {
            class,
            seq,
            client_time_us,
            reads,
            payload,
        },
    )
}

fn reject_code() -> impl Strategy<Value = RejectCode> {
    prop_oneof![
        Just(RejectCode::Malformed),
        Just(RejectCode::Replayed),
        Just(RejectCode::Speed),
        Just(RejectCode::Resources),
        any::<u16>().prop_map(RejectCode::Game),
    ]
}

fn action_result() -> impl Strategy<Value = ActionResult> {
    let outcome = prop_oneof![
        any::<u64>().prop_map(|tick| Outcome::Applied { tick }),
        (versions(), payload()).prop_map(|(current, state)| Outcome::Conflict { current, state }),
        (reject_code(), ".{0,20}").prop_map(|(code, detail)| Outcome::Rejected { code, detail }),
        ".{0,20}".prop_map(|detail| Outcome::Unknown { detail }),
    ];
    (any::<u64>(), outcome).prop_map(|(seq, outcome)| ActionResult { seq, outcome })
}

fn batch() -> impl Strategy<Value = EventBatch> {
    let event = (
        any::<u64>(),
        class(),
        prop::option::of(any::<u64>()),
        payload(),
    )
        .prop_map(|(seq, class, entity, payload)| BatchEvent {
            seq,
            class,
            entity: entity.map(EntityId),
            payload,
        });
    (
        any::<u64>(),
        channel(),
        any::<u64>(),
        any::<u64>(),
        prop::collection::vec(event, 0..6),
        any::<[u8; 32]>().prop_map(Hash32),
        payload(),
    )
        .prop_map(
            |(world, channel, tick, origin_time_us, events, prev_hash, signature)| EventBatch {
                world: WorldId(world),
                channel,
                tick,
                origin_time_us,
                events,
                prev_hash,
                signature,
                cosignature: Default::default(),
            },
        )
}

fn keyframe() -> impl Strategy<Value = Keyframe> {
    (
        any::<u64>(),
        channel(),
        any::<u64>(),
        any::<u64>(),
        payload(),
    )
        .prop_map(|(w, channel, tick, seq, state)| Keyframe {
            world: WorldId(w),
            channel,
            tick,
            seq,
            state,
        })
}

fn delta() -> impl Strategy<Value = Delta> {
    (
        any::<u64>(),
        channel(),
        any::<u64>(),
        any::<u64>(),
        any::<u64>(),
        payload(),
    )
        .prop_map(|(w, channel, tick, base_tick, seq, payload)| Delta {
            world: WorldId(w),
            channel,
            tick,
            base_tick,
            seq,
            payload,
        })
}

fn error_msg() -> impl Strategy<Value = ErrorMsg> {
    (
        prop::sample::select(vec![
            ErrorCode::Malformed,
            ErrorCode::TooLarge,
            ErrorCode::Internal,
        ]),
        ".{0,30}",
    )
        .prop_map(|(code, message)| ErrorMsg { code, message })
}

fn channels() -> impl Strategy<Value = Vec<ChannelId>> {
    prop::collection::vec(channel(), 0..5)
}

fn client_msg() -> impl Strategy<Value = ClientMsg> {
    let hello = (
        any::<u8>(),
        ".{0,40}",
        any::<u64>(),
        prop::option::of(ticket()),
        prop::collection::vec(cursor(), 0..4),
    )
        .prop_map(|(version, token, w, resume, last_seen)| {
            ClientMsg::Hello(Hello {
                version,
                token,
                world: WorldId(w),
                resume,
                last_seen,
            })
        });
    let spectate = (
        any::<u64>(),
        any::<u8>(),
        prop::collection::vec(any::<u16>(), 0..3),
        prop::collection::vec(any::<u64>(), 0..3),
        prop::option::of((-1e4f32..1e4, -1e4f32..1e4, -1e4f32..1e4, -1e4f32..1e4)),
        any::<u32>(),
        prop_oneof![
            Just(BandwidthMode::Full),
            any::<u16>().prop_map(|hz| BandwidthMode::Reduced { hz }),
            Just(BandwidthMode::KeyframesOnly)
        ],
    )
        .prop_map(|(w, bits, teams, entities, area, delay_ms, mode)| {
            let classes = EventClass::ALL
                .into_iter()
                .filter(|c| bits & (1 << c.rank()) != 0)
                .collect();
            ClientMsg::SpectatorSubscribe(SpectatorSubscribe {
                world: WorldId(w),
                filter: SpectatorFilter {
                    classes,
                    teams: teams.into_iter().map(TeamId).collect(),
                    entities: entities.into_iter().map(EntityId).collect(),
                    area: area.map(|(min_x, min_y, max_x, max_y)| Area {
                        min_x,
                        min_y,
                        max_x,
                        max_y,
                    }),
                },
                delay_ms,
                mode,
            })
        });
    prop_oneof![
        hello,
        action().prop_map(ClientMsg::Action),
        channels().prop_map(ClientMsg::Subscribe),
        channels().prop_map(ClientMsg::Unsubscribe),
        spectate,
        ping().prop_map(ClientMsg::Ping),
        Just(ClientMsg::Bye),
    ]
}

fn server_msg() -> impl Strategy<Value = ServerMsg> {
    let welcome = (
        any::<u64>(),
        ticket(),
        any::<u64>(),
        prop::collection::vec(relay_info(), 0..3),
    )
        .prop_map(|(s, resume_ticket, server_time_us, suggested_relays)| {
            ServerMsg::Welcome(Welcome {
                session: SessionId(s),
                resume_ticket,
                server_time_us,
                suggested_relays,
            })
        });
    let refusal = (
        prop::sample::select(vec![
            RefusalCode::BadToken,
            RefusalCode::Draining,
            RefusalCode::UnknownWorld,
        ]),
        ".{0,30}",
    )
        .prop_map(|(code, reason)| ServerMsg::Refusal(Refusal { code, reason }));
    let go_away = (
        ".{0,20}",
        prop::collection::vec(relay_info(), 0..3),
        ticket(),
    )
        .prop_map(|(reason, alternatives, resume_ticket)| {
            ServerMsg::GoAway(GoAway {
                reason,
                alternatives,
                resume_ticket,
            })
        });
    prop_oneof![
        welcome,
        refusal,
        action_result().prop_map(ServerMsg::ActionResult),
        batch().prop_map(ServerMsg::Events),
        keyframe().prop_map(ServerMsg::Keyframe),
        keyframe().prop_map(ServerMsg::Resync),
        delta().prop_map(ServerMsg::Delta),
        (channels(), channels()).prop_map(|(added, removed)| ServerMsg::Subscriptions {
            added: added
                .into_iter()
                .map(|channel| ChannelCursor { channel, seq: 1 })
                .collect(),
            removed,
        }),
        pong().prop_map(ServerMsg::Pong),
        go_away,
        error_msg().prop_map(ServerMsg::Error),
    ]
}

fn peer_msg() -> impl Strategy<Value = PeerMsg> {
    let report =
        ("[0-9.:]{0,21}", any::<u32>()).prop_map(|(addr, rtt_us)| OriginReport { addr, rtt_us });
    prop_oneof![
        (any::<u8>(), any::<u32>()).prop_map(|(version, r)| PeerMsg::Hello {
            version,
            relay: RelayId(r)
        }),
        (any::<u32>(), prop::collection::vec(report, 0..4)).prop_map(|(r, origins)| {
            PeerMsg::Report {
                relay: RelayId(r),
                origins,
            }
        }),
        (any::<u8>(), any::<u32>(), "[0-9.:]{0,21}").prop_map(|(version, r, origin)| {
            PeerMsg::Via {
                version,
                relay: RelayId(r),
                origin,
            }
        }),
        Just(PeerMsg::ViaReady),
        ".{0,40}".prop_map(|reason| PeerMsg::ViaRefused { reason }),
    ]
}

fn link_msg() -> impl Strategy<Value = LinkMsg> {
    let open = (
        any::<u64>(),
        "[a-z0-9]{0,12}",
        any::<u64>(),
        prop::sample::select(vec![Role::Player, Role::Spectator, Role::Operator]),
        prop::option::of(any::<u16>()),
        prop::collection::vec(cursor(), 0..3),
    )
        .prop_map(
            |(s, player, w, role, team, resume_from)| LinkMsg::SessionOpen {
                session: SessionId(s),
                player,
                world: WorldId(w),
                role,
                team: team.map(TeamId),
                resume_from,
            },
        );
    prop_oneof![
        (any::<u8>(), any::<u32>()).prop_map(|(version, r)| LinkMsg::LinkHello {
            version,
            relay: RelayId(r)
        }),
        open,
        any::<u64>().prop_map(|s| LinkMsg::SessionClose {
            session: SessionId(s)
        }),
        (any::<u64>(), action()).prop_map(|(s, action)| LinkMsg::Action {
            session: SessionId(s),
            action
        }),
        (any::<u64>(), action_result()).prop_map(|(s, result)| LinkMsg::ActionResult {
            session: SessionId(s),
            result
        }),
        batch().prop_map(LinkMsg::Events),
        keyframe().prop_map(LinkMsg::Keyframe),
        delta().prop_map(LinkMsg::Delta),
        (any::<u64>(), channels(), channels(), any::<u64>()).prop_map(
            |(s, added, removed, seq)| {
                LinkMsg::Subscriptions {
                    session: SessionId(s),
                    added: added
                        .into_iter()
                        .map(|channel| ChannelCursor { channel, seq })
                        .collect(),
                    removed,
                }
            }
        ),
        (any::<u64>(), prop::collection::vec(batch(), 0..3)).prop_map(|(s, batches)| {
            LinkMsg::Replay {
                session: SessionId(s),
                batches,
            }
        }),
        ping().prop_map(LinkMsg::Ping),
        pong().prop_map(LinkMsg::Pong),
        error_msg().prop_map(LinkMsg::Error),
    ]
}

fn round_trip<M: WireMessage + PartialEq + std::fmt::Debug>(msg: &M) {
    let mut wire = BytesMut::new();
    encode_frame(msg, DEFAULT_MAX_FRAME, &mut wire).unwrap();
    encode_frame(msg, DEFAULT_MAX_FRAME, &mut wire).unwrap();
    let mut dec = FrameDecoder::default();
    dec.push(&wire);
    assert_eq!(dec.poll_message::<M>().unwrap().as_ref(), Some(msg));
    assert_eq!(dec.poll_message::<M>().unwrap().as_ref(), Some(msg));
    assert_eq!(dec.poll_message::<M>().unwrap(), None);
    if let Ok(dgram) = encode_datagram(msg) {
        assert!(dgram.len() <= MAX_DATAGRAM);
        assert_eq!(&decode_datagram::<M>(dgram).unwrap(), msg);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn client_messages_round_trip(msg in client_msg()) {
        round_trip(&msg);
    }

    #[test]
    fn server_messages_round_trip(msg in server_msg()) {
        round_trip(&msg);
    }

    #[test]
    fn link_messages_round_trip(msg in link_msg()) {
        round_trip(&msg);
    }

    #[test]
    fn peer_messages_round_trip(msg in peer_msg()) {
        round_trip(&msg);
    }

    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let b = Bytes::from(bytes.clone());
        let _ = decode_message::<ClientMsg>(b.clone());
        let _ = decode_message::<ServerMsg>(b.clone());
        let _ = decode_message::<PeerMsg>(b.clone());
        let _ = decode_datagram::<LinkMsg>(b);
        let mut dec = FrameDecoder::new(256);
        dec.push(&bytes);
        while let Ok(Some(_)) = dec.poll_message::<LinkMsg>() {}
    }

    #[test]
    fn mutated_frames_never_panic(msg in server_msg(), flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8)) {
        let mut wire = encode_frame_to_bytes(&msg, DEFAULT_MAX_FRAME).unwrap().to_vec();
        for (i, v) in flips {
            let at = i.index(wire.len());
            wire[at] = v;
        }
        let mut dec = FrameDecoder::default();
        dec.push(&wire);
        while let Ok(Some(_)) = dec.poll_message::<ServerMsg>() {}
    }
}
