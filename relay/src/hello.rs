//! Admission of a client's `Hello` (pure: no I/O, no clock; time is an argument).
//!
//! Checks, in order: the protocol version, the token (signature, expiry,
//! audience), the role (operators do not join worlds), the world (the token must
//! allow it) and, when resuming, the ticket (signed by this deployment, not
//! expired, and issued to the same player, world and role). Each failure is a
//! [`Refusal`] with its own code; the shell sends it and closes the connection
//! in one place. What the relay still decides after this (draining, a known
//! world, room for the session) is the actor's.

use skylane_proto::{
    ChannelCursor, Hello, Refusal, RefusalCode, Role, SessionId, TokenError, TokenVerifier,
    WorldId, PROTOCOL_VERSION,
};

use crate::revocation::Revocations;
use crate::session::TicketKey;

/// A hello that passed every offline check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Admitted {
    /// The token's subject.
    pub(crate) player: String,
    /// The token's role (player or spectator).
    pub(crate) role: Role,
    /// The world to join.
    pub(crate) world: WorldId,
    /// The session to resume, from a valid ticket.
    pub(crate) resume: Option<SessionId>,
    /// The client's cursors, for an exact replay.
    pub(crate) last_seen: Vec<ChannelCursor>,
    /// The token's spectator tier (shortest delay, ms), if it names one.
    pub(crate) min_delay_ms: Option<u32>,
}

/// Checks a hello at `now_unix` (seconds since the Unix epoch).
pub(crate) fn check_hello(
    hello: Hello,
    tokens: &TokenVerifier,
    revoked: &[&Revocations],
    tickets: &TicketKey,
    now_unix: u64,
) -> Result<Admitted, Refusal> {
    let refuse = |code, reason: String| Refusal { code, reason };
    if hello.version != PROTOCOL_VERSION {
        return Err(refuse(
            RefusalCode::VersionMismatch,
            format!(
                "relay speaks version {PROTOCOL_VERSION}, not {}",
                hello.version
            ),
        ));
    }
    let claims = tokens
        .verify(&hello.token, now_unix)
        .map_err(|e| refuse(refusal_of(&e), e.to_string()))?;
    if let Some(r) = revoked.iter().find_map(|l| l.find(&claims, now_unix)) {
        // An entry naming the subject is a sanction on the player (a ban);
        // one naming the token, that token's revocation.
        return Err(match &r.sub {
            Some(_) => refuse(
                RefusalCode::Sanctioned,
                format!("banned until {} (Unix time): {}", r.until, r.reason),
            ),
            None => refuse(
                RefusalCode::BadToken,
                format!("token revoked until {} (Unix time): {}", r.until, r.reason),
            ),
        });
    }
    if claims.role == Role::Operator {
        return Err(refuse(
            RefusalCode::WrongRole,
            "operators cannot join worlds".into(),
        ));
    }
    if !claims.allows_world(hello.world) {
        return Err(refuse(
            RefusalCode::WorldNotAllowed,
            format!("token does not allow {}", hello.world),
        ));
    }
    let resume = match &hello.resume {
        None => None,
        Some(t) => {
            let tc = tickets
                .verify(t, now_unix)
                .map_err(|e| refuse(RefusalCode::ResumeRejected, e.to_string()))?;
            if tc.player != claims.sub || tc.world != hello.world || tc.role != claims.role {
                return Err(refuse(
                    RefusalCode::ResumeRejected,
                    "ticket belongs to another player or world".into(),
                ));
            }
            Some(tc.session)
        }
    };
    Ok(Admitted {
        player: claims.sub,
        role: claims.role,
        world: hello.world,
        resume,
        last_seen: hello.last_seen,
        min_delay_ms: claims.min_delay_secs.map(|s| s.saturating_mul(1000)),
    })
}

/// The refusal code a client sees for a token error.
fn refusal_of(e: &TokenError) -> RefusalCode {
    match e {
        TokenError::Expired { .. } | TokenError::NotYetValid { .. } => RefusalCode::TokenExpired,
        TokenError::WrongRole { .. } => RefusalCode::WrongRole,
        TokenError::WorldNotAllowed { .. } => RefusalCode::WorldNotAllowed,
        _ => RefusalCode::BadToken,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::TicketClaims;
    use skylane_proto::{Claims, TokenKeyPair, TokenSigner};

    const NOW: u64 = 1_700_000_000;

    struct Keys {
        issuer: TokenSigner,
        verifier: TokenVerifier,
        tickets: TicketKey,
    }

    fn keys() -> Keys {
        let pair = TokenKeyPair::generate().unwrap();
        let issuer = TokenSigner::from_pem(&pair.private_pem).unwrap();
        let verifier = TokenVerifier::from_pem(&pair.public_pem, "skylane").unwrap();
        Keys {
            issuer,
            verifier,
            tickets: TicketKey::new(&[3; 32]),
        }
    }

    fn hello(k: &Keys, sub: &str, role: Role, worlds: Vec<WorldId>, ttl: u64) -> Hello {
        let token = k
            .issuer
            .issue(&Claims::new(sub, role, worlds, "skylane", NOW - 10, ttl))
            .unwrap();
        Hello {
            version: PROTOCOL_VERSION,
            token,
            world: WorldId(1),
            resume: None,
            last_seen: Vec::new(),
        }
    }

    fn code(r: Result<Admitted, Refusal>) -> RefusalCode {
        r.unwrap_err().code
    }

    #[test]
    fn a_valid_hello_is_admitted_with_its_claims() {
        let k = keys();
        let h = hello(&k, "ann", Role::Player, vec![WorldId(1)], 60);
        let a = check_hello(h, &k.verifier, &[], &k.tickets, NOW).unwrap();
        assert_eq!(a.player, "ann");
        assert_eq!(
            (a.role, a.world, a.resume),
            (Role::Player, WorldId(1), None)
        );
    }

    #[test]
    fn each_failure_has_its_own_refusal_code() {
        let k = keys();
        let mut h = hello(&k, "ann", Role::Player, vec![], 60);
        h.version = PROTOCOL_VERSION.wrapping_add(1);
        assert_eq!(
            code(check_hello(h, &k.verifier, &[], &k.tickets, NOW)),
            RefusalCode::VersionMismatch
        );
        let h = hello(&k, "ann", Role::Player, vec![], 5);
        assert_eq!(
            code(check_hello(h, &k.verifier, &[], &k.tickets, NOW + 60)),
            RefusalCode::TokenExpired
        );
        let mut h = hello(&k, "ann", Role::Player, vec![], 60);
        h.token.push('x');
        assert_eq!(
            code(check_hello(h, &k.verifier, &[], &k.tickets, NOW)),
            RefusalCode::BadToken
        );
        let h = hello(&k, "op", Role::Operator, vec![], 60);
        assert_eq!(
            code(check_hello(h, &k.verifier, &[], &k.tickets, NOW)),
            RefusalCode::WrongRole
        );
        let h = hello(&k, "ann", Role::Player, vec![WorldId(2)], 60);
        assert_eq!(
            code(check_hello(h, &k.verifier, &[], &k.tickets, NOW)),
            RefusalCode::WorldNotAllowed
        );
    }

    #[test]
    fn a_revoked_subject_or_token_is_refused_until_its_time() {
        let k = keys();
        let revoked = Revocations::parse(&format!(
            r#"[{{"sub": "alice", "until": {}, "reason": "cheating"}}]"#,
            NOW + 60
        ))
        .unwrap();
        let h = hello(&k, "alice", Role::Player, vec![WorldId(1)], 600);
        let r = check_hello(h.clone(), &k.verifier, &[&revoked], &k.tickets, NOW).unwrap_err();
        assert_eq!(
            r.code,
            RefusalCode::Sanctioned,
            "a subject's entry is a ban"
        );
        assert!(
            r.reason.contains("banned") && r.reason.contains("cheating"),
            "{r:?}"
        );
        assert!(check_hello(h, &k.verifier, &[&revoked], &k.tickets, NOW + 61).is_ok());
        let bob = hello(&k, "bob", Role::Player, vec![WorldId(1)], 600);
        assert!(check_hello(bob, &k.verifier, &[&revoked], &k.tickets, NOW).is_ok());
    }

    #[test]
    fn a_resume_needs_a_ticket_for_the_same_player_world_and_role() {
        let k = keys();
        let ticket = |player: &str, world, role, expires| {
            k.tickets.issue(&TicketClaims {
                session: SessionId(9),
                player: player.into(),
                world,
                role,
                expires,
            })
        };
        let mut h = hello(&k, "ann", Role::Player, vec![], 60);
        h.resume = Some(ticket("ann", WorldId(1), Role::Player, NOW + 60));
        let a = check_hello(h.clone(), &k.verifier, &[], &k.tickets, NOW).unwrap();
        assert_eq!(a.resume, Some(SessionId(9)));
        for (player, world, role, expires) in [
            ("bob", WorldId(1), Role::Player, NOW + 60),
            ("ann", WorldId(2), Role::Player, NOW + 60),
            ("ann", WorldId(1), Role::Spectator, NOW + 60),
            ("ann", WorldId(1), Role::Player, NOW - 1),
        ] {
            h.resume = Some(ticket(player, world, role, expires));
            assert_eq!(
                code(check_hello(h.clone(), &k.verifier, &[], &k.tickets, NOW)),
                RefusalCode::ResumeRejected,
                "{player} {world} {role:?} {expires}"
            );
        }
        let other = TicketKey::new(&[4; 32]);
        h.resume = Some(other.issue(&TicketClaims {
            session: SessionId(9),
            player: "ann".into(),
            world: WorldId(1),
            role: Role::Player,
            expires: NOW + 60,
        }));
        assert_eq!(
            code(check_hello(h, &k.verifier, &[], &k.tickets, NOW)),
            RefusalCode::ResumeRejected
        );
    }
}
