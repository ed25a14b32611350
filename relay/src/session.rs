//! The session table and resume tickets (pure: no I/O, no clock).
//!
//! A session outlives its connection. When a client's connection drops, its session
//! is *detached* and kept for a grace period; the client reconnects (to this relay
//! or another) with its [`ResumeTicket`] and the last sequence it saw per channel,
//! and the origin replays exactly what it missed. Tickets are HMAC-SHA256 tagged
//! with a secret shared by the deployment's relays, so any relay can check a ticket
//! issued by another. Expired sessions come out of [`SessionTable::poll_expired`]
//! after one sweep (`handle_timeout`), not from a timer per session.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use ring::hmac;
use rustc_hash::FxHashMap as HashMap;
use serde::{Deserialize, Serialize};
use skylane_proto::{Payload, RelayId, ResumeTicket, Role, SessionId, WorldId};

/// What a resume ticket proves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TicketClaims {
    /// Session.
    pub session: SessionId,
    /// Player id (token subject).
    pub player: String,
    /// World.
    pub world: WorldId,
    /// Role.
    pub role: Role,
    /// Expiry, seconds since the Unix epoch.
    pub expires: u64,
}

/// Why a ticket was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TicketError {
    /// Not a ticket.
    #[error("malformed resume ticket")]
    Malformed,
    /// The tag does not match: forged, altered, or from another deployment.
    #[error("resume ticket is not authentic")]
    BadTag,
    /// Past its expiry.
    #[error("resume ticket expired")]
    Expired,
}

const TAG_LEN: usize = 32;

/// Issues and checks resume tickets with a deployment-wide secret.
#[derive(Clone)]
pub struct TicketKey(hmac::Key);

impl std::fmt::Debug for TicketKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TicketKey(..)")
    }
}

impl TicketKey {
    /// A key from a secret (at least 32 random bytes, the same on every relay).
    pub fn new(secret: &[u8]) -> Self {
        Self(hmac::Key::new(hmac::HMAC_SHA256, secret))
    }

    /// A ticket for `claims`.
    pub fn issue(&self, claims: &TicketClaims) -> ResumeTicket {
        let mut body = postcard::to_stdvec(claims).unwrap_or_default();
        let tag = hmac::sign(&self.0, &body);
        body.extend_from_slice(tag.as_ref());
        ResumeTicket(Payload::from(body))
    }

    /// Checks a ticket at `now_unix` (seconds).
    pub fn verify(
        &self,
        ticket: &ResumeTicket,
        now_unix: u64,
    ) -> Result<TicketClaims, TicketError> {
        let raw = &ticket.0;
        if raw.len() <= TAG_LEN {
            return Err(TicketError::Malformed);
        }
        let (body, tag) = raw.split_at(raw.len() - TAG_LEN);
        hmac::verify(&self.0, body, tag).map_err(|_| TicketError::BadTag)?;
        let claims: TicketClaims =
            postcard::from_bytes(body).map_err(|_| TicketError::Malformed)?;
        if now_unix > claims.expires {
            return Err(TicketError::Expired);
        }
        Ok(claims)
    }
}

/// A connection id assigned by the shell.
pub type ConnId = u64;

/// Where a session is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Presence {
    /// Attached to a connection.
    Connected(ConnId),
    /// Its connection dropped at the given time; waiting for a resume.
    Detached(Instant),
}

/// A session known to this relay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionEntry {
    /// Player id.
    pub player: String,
    /// World.
    pub world: WorldId,
    /// Role.
    pub role: Role,
    /// Where it is.
    pub presence: Presence,
}

/// Why a session could not be attached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AttachError {
    /// The relay holds its maximum number of sessions.
    #[error("relay full ({0} sessions)")]
    Full(usize),
}

/// Sessions of one relay.
#[derive(Debug)]
pub struct SessionTable {
    relay: RelayId,
    grace: Duration,
    max_sessions: usize,
    next: u64,
    sessions: HashMap<SessionId, SessionEntry>,
    by_conn: HashMap<ConnId, Vec<SessionId>>,
    expired: VecDeque<(SessionId, SessionEntry)>,
}

impl SessionTable {
    /// A table for relay `relay`: detached sessions are kept for `grace`; at most
    /// `max_sessions` are held.
    pub fn new(relay: RelayId, grace: Duration, max_sessions: usize) -> Self {
        Self {
            relay,
            grace,
            max_sessions,
            next: 1,
            sessions: HashMap::default(),
            by_conn: HashMap::default(),
            expired: VecDeque::new(),
        }
    }

    /// A new session id, unique across relays (this relay's id in the top 24 bits).
    pub fn new_session_id(&mut self) -> SessionId {
        let id = SessionId((u64::from(self.relay.0) << 40) | (self.next & ((1 << 40) - 1)));
        self.next += 1;
        id
    }

    /// Sessions held.
    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    /// Whether no session is held.
    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }

    /// A session.
    pub fn get(&self, session: SessionId) -> Option<&SessionEntry> {
        self.sessions.get(&session)
    }

    /// Every session, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (SessionId, &SessionEntry)> {
        self.sessions.iter().map(|(s, e)| (*s, e))
    }

    /// Sessions of `world`, in id order.
    pub fn in_world(&self, world: WorldId) -> Vec<SessionId> {
        let mut v: Vec<SessionId> = self
            .sessions
            .iter()
            .filter(|(_, e)| e.world == world)
            .map(|(s, _)| *s)
            .collect();
        v.sort();
        v
    }

    /// Sessions attached to a connection.
    pub fn sessions_of(&self, conn: ConnId) -> &[SessionId] {
        self.by_conn.get(&conn).map_or(&[], Vec::as_slice)
    }

    /// Attaches a new or resuming session to `conn`.
    ///
    /// A resume while the session is still attached to another connection takes it
    /// over (newest wins): the client proved it holds the ticket, and the usual
    /// cause is a client that gave up on a connection the relay has not yet seen
    /// die (an overloaded path, a NAT rebinding). The old connection is returned
    /// so the shell can close it.
    pub fn handle_attach(
        &mut self,
        session: SessionId,
        player: &str,
        world: WorldId,
        role: Role,
        conn: ConnId,
    ) -> Result<Option<ConnId>, AttachError> {
        let mut stale = None;
        match self.sessions.get(&session).map(|e| e.presence) {
            Some(Presence::Connected(c)) if c != conn => {
                if let Some(list) = self.by_conn.get_mut(&c) {
                    list.retain(|s| *s != session);
                    if list.is_empty() {
                        self.by_conn.remove(&c);
                    }
                }
                stale = Some(c);
            }
            None if self.sessions.len() >= self.max_sessions => {
                return Err(AttachError::Full(self.max_sessions))
            }
            _ => {}
        }
        self.sessions.insert(
            session,
            SessionEntry {
                player: player.to_owned(),
                world,
                role,
                presence: Presence::Connected(conn),
            },
        );
        let list = self.by_conn.entry(conn).or_default();
        if !list.contains(&session) {
            list.push(session);
        }
        Ok(stale)
    }

    /// A connection dropped: its sessions wait for a resume.
    pub fn handle_disconnect(&mut self, now: Instant, conn: ConnId) -> Vec<SessionId> {
        let ids = self.by_conn.remove(&conn).unwrap_or_default();
        for id in &ids {
            if let Some(e) = self.sessions.get_mut(id) {
                e.presence = Presence::Detached(now);
            }
        }
        ids
    }

    /// A session ended for good (bye, kick, moved to another relay).
    pub fn handle_close(&mut self, session: SessionId) -> Option<SessionEntry> {
        let e = self.sessions.remove(&session)?;
        if let Presence::Connected(c) = e.presence {
            if let Some(list) = self.by_conn.get_mut(&c) {
                list.retain(|s| *s != session);
            }
        }
        Some(e)
    }

    /// Expires detached sessions past the grace period.
    pub fn handle_timeout(&mut self, now: Instant) {
        let grace = self.grace;
        let gone: Vec<SessionId> = self
            .sessions
            .iter()
            .filter(|(_, e)| matches!(e.presence, Presence::Detached(t) if now.saturating_duration_since(t) >= grace))
            .map(|(s, _)| *s)
            .collect();
        for s in gone {
            if let Some(e) = self.sessions.remove(&s) {
                self.expired.push_back((s, e));
            }
        }
    }

    /// When the next detached session expires.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.sessions
            .values()
            .filter_map(|e| match e.presence {
                Presence::Detached(t) => Some(t + self.grace),
                Presence::Connected(_) => None,
            })
            .min()
    }

    /// The next expired session (tell the origin it left).
    pub fn poll_expired(&mut self) -> Option<(SessionId, SessionEntry)> {
        self.expired.pop_front()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(expires: u64) -> TicketClaims {
        TicketClaims {
            session: SessionId(5),
            player: "alice".into(),
            world: WorldId(1),
            role: Role::Player,
            expires,
        }
    }

    #[test]
    fn tickets_verify_on_any_relay_with_the_secret_and_nowhere_else() {
        let a = TicketKey::new(&[7; 32]);
        let b = TicketKey::new(&[7; 32]);
        let t = a.issue(&claims(1000));
        assert_eq!(b.verify(&t, 999), Ok(claims(1000)));
        assert_eq!(b.verify(&t, 1001), Err(TicketError::Expired));
        assert_eq!(
            TicketKey::new(&[8; 32]).verify(&t, 0),
            Err(TicketError::BadTag)
        );
        let mut forged = t.0.to_vec();
        forged[1] ^= 1;
        assert_eq!(
            a.verify(&ResumeTicket(Payload::from(forged)), 0),
            Err(TicketError::BadTag)
        );
        assert_eq!(
            a.verify(&ResumeTicket(Payload::from_static(b"x")), 0),
            Err(TicketError::Malformed)
        );
    }

    #[test]
    fn sessions_detach_resume_and_expire_after_the_grace() {
        let t0 = Instant::now();
        let mut t = SessionTable::new(RelayId(3), Duration::from_secs(30), 100);
        let s = t.new_session_id();
        assert_eq!(s.0 >> 40, 3, "relay id in the top bits");
        assert_ne!(t.new_session_id(), s);
        t.handle_attach(s, "alice", WorldId(1), Role::Player, 10)
            .unwrap();
        assert_eq!(t.sessions_of(10), &[s]);
        assert_eq!(t.handle_disconnect(t0, 10), vec![s]);
        assert_eq!(t.get(s).unwrap().presence, Presence::Detached(t0));
        assert_eq!(t.poll_timeout(), Some(t0 + Duration::from_secs(30)));
        // Resumed on a new connection within the grace.
        t.handle_attach(s, "alice", WorldId(1), Role::Player, 11)
            .unwrap();
        assert_eq!(t.get(s).unwrap().presence, Presence::Connected(11));
        // A resume while still attached takes the session over (newest wins);
        // the stale connection's later disconnect no longer detaches it.
        assert_eq!(
            t.handle_attach(s, "alice", WorldId(1), Role::Player, 12),
            Ok(Some(11))
        );
        assert!(t.sessions_of(11).is_empty());
        assert_eq!(t.sessions_of(12), &[s]);
        assert!(t.handle_disconnect(t0, 11).is_empty());
        assert_eq!(t.get(s).unwrap().presence, Presence::Connected(12));
        // Dropped again and never resumed: expires once, after the grace.
        t.handle_disconnect(t0 + Duration::from_secs(40), 12);
        t.handle_timeout(t0 + Duration::from_secs(69));
        assert!(t.poll_expired().is_none());
        t.handle_timeout(t0 + Duration::from_secs(70));
        assert_eq!(t.poll_expired().map(|(id, _)| id), Some(s));
        assert!(t.is_empty());
    }

    #[test]
    fn bounds_and_close() {
        let mut t = SessionTable::new(RelayId(1), Duration::from_secs(1), 1);
        let a = t.new_session_id();
        let b = t.new_session_id();
        t.handle_attach(a, "a", WorldId(1), Role::Player, 1)
            .unwrap();
        assert_eq!(
            t.handle_attach(b, "b", WorldId(1), Role::Spectator, 1),
            Err(AttachError::Full(1))
        );
        assert!(t.handle_close(a).is_some());
        assert!(t.sessions_of(1).is_empty());
        t.handle_attach(b, "b", WorldId(1), Role::Spectator, 1)
            .unwrap();
        assert_eq!(t.len(), 1);
    }
}
