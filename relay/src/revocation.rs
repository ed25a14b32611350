//! Revoked tokens (pure): entries naming a subject or a token id (`jti`), each
//! until a time, read from the relay's revocation file (JSON). A hello whose
//! token an entry covers is refused; sessions of a revoked subject are closed.
//! A subject revoked until a time is also how an operator bans a player from
//! the edge without a control plane.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use skylane_proto::Claims;

/// Most entries one revocation file may hold.
pub const MAX_REVOCATIONS: usize = 100_000;

/// One revocation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Revocation {
    /// Every token of this subject.
    #[serde(default)]
    pub sub: Option<String>,
    /// The token with this id.
    #[serde(default)]
    pub jti: Option<String>,
    /// Until when, seconds since the Unix epoch.
    pub until: u64,
    /// Why (shown to the refused client and in the log).
    #[serde(default)]
    pub reason: String,
}

/// Why a revocation file was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RevocationError {
    /// Not JSON of the expected shape.
    #[error("not a revocation list: {0}")]
    Malformed(String),
    /// An entry names neither a subject nor a token id.
    #[error("entry {0} names neither `sub` nor `jti`")]
    Empty(usize),
    /// Too many entries.
    #[error("{0} entries, more than {MAX_REVOCATIONS}")]
    TooMany(usize),
}

/// The revocations in force, indexed by subject and by token id (a hello is
/// checked in constant time however long the list).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Revocations {
    entries: Vec<Revocation>,
    by_sub: HashMap<String, usize>,
    by_jti: HashMap<String, usize>,
}

impl Revocations {
    /// Parses a revocation file: a JSON array of entries
    /// (`[{"sub": "alice", "until": 1767225600, "reason": "cheating"}]`).
    pub fn parse(text: &str) -> Result<Self, RevocationError> {
        let entries: Vec<Revocation> =
            serde_json::from_str(text).map_err(|e| RevocationError::Malformed(e.to_string()))?;
        if entries.len() > MAX_REVOCATIONS {
            return Err(RevocationError::TooMany(entries.len()));
        }
        if let Some(i) = entries
            .iter()
            .position(|e| e.sub.is_none() && e.jti.is_none())
        {
            return Err(RevocationError::Empty(i));
        }
        Ok(Self::indexed(entries))
    }

    /// Indexes `entries`; of two naming the same subject or token, the one
    /// that lasts longer counts.
    fn indexed(entries: Vec<Revocation>) -> Self {
        fn index(map: &mut HashMap<String, usize>, key: &str, i: usize, all: &[Revocation]) {
            let slot = map.entry(key.to_owned()).or_insert(i);
            if all[*slot].until < all[i].until {
                *slot = i;
            }
        }
        let (mut by_sub, mut by_jti) = (HashMap::new(), HashMap::new());
        for (i, e) in entries.iter().enumerate() {
            if let Some(s) = &e.sub {
                index(&mut by_sub, s, i, &entries);
            }
            if let Some(j) = &e.jti {
                index(&mut by_jti, j, i, &entries);
            }
        }
        Self {
            entries,
            by_sub,
            by_jti,
        }
    }

    /// The control plane's bans, as revocations of their subjects.
    pub fn from_bans<'a>(
        bans: impl IntoIterator<Item = (&'a String, &'a skylane_control::Ban)>,
    ) -> Self {
        Self::indexed(
            bans.into_iter()
                .map(|(sub, b)| Revocation {
                    sub: Some(sub.clone()),
                    jti: None,
                    until: b.until,
                    reason: b.reason.clone(),
                })
                .collect(),
        )
    }

    /// The entry in force at `now` covering a token with these claims.
    pub fn find(&self, claims: &Claims, now: u64) -> Option<&Revocation> {
        let by_sub = self.by_sub.get(&claims.sub);
        let by_jti = claims.jti.as_ref().and_then(|j| self.by_jti.get(j));
        [by_sub, by_jti]
            .into_iter()
            .flatten()
            .map(|i| &self.entries[*i])
            .find(|e| now < e.until)
    }

    /// Whether an entry names `subject` (in force or not).
    pub fn names_subject(&self, subject: &str) -> bool {
        self.by_sub.contains_key(subject)
    }

    /// Subjects revoked at `now` (their sessions are closed).
    pub fn subjects(&self, now: u64) -> impl Iterator<Item = &str> {
        self.entries
            .iter()
            .filter(move |e| now < e.until)
            .filter_map(|e| e.sub.as_deref())
    }

    /// Entries held (in force or not).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether it holds no entry.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use skylane_proto::{Role, WorldId};

    fn claims(sub: &str, jti: Option<&str>) -> Claims {
        let c = Claims::new(sub, Role::Player, vec![WorldId(1)], "skylane", 100, 600);
        match jti {
            Some(j) => c.with_id(j),
            None => c,
        }
    }

    #[test]
    fn subjects_and_token_ids_are_revoked_until_their_time() {
        let r = Revocations::parse(
            r#"[{"sub": "alice", "until": 200, "reason": "cheating"},
                {"jti": "t-9", "until": 300}]"#,
        )
        .unwrap();
        assert_eq!(r.len(), 2);
        assert_eq!(
            r.find(&claims("alice", None), 150)
                .map(|e| e.reason.as_str()),
            Some("cheating")
        );
        assert!(r.find(&claims("alice", None), 200).is_none(), "expired");
        assert!(r.find(&claims("bob", Some("t-9")), 250).is_some());
        assert!(r.find(&claims("bob", Some("t-8")), 250).is_none());
        assert!(
            r.find(&claims("bob", None), 250).is_none(),
            "no id, no match"
        );
        assert_eq!(r.subjects(150).collect::<Vec<_>>(), vec!["alice"]);
        assert_eq!(r.subjects(250).count(), 0);
        // Two entries for one subject: the longer one counts.
        let r = Revocations::parse(
            r#"[{"sub": "carol", "until": 300}, {"sub": "carol", "until": 100}]"#,
        )
        .unwrap();
        assert!(r.find(&claims("carol", None), 200).is_some());
    }

    #[test]
    fn a_bad_file_is_a_clear_error() {
        assert!(matches!(
            Revocations::parse("{"),
            Err(RevocationError::Malformed(_))
        ));
        assert!(matches!(
            Revocations::parse(r#"[{"until": 5}]"#),
            Err(RevocationError::Empty(0))
        ));
        assert!(matches!(
            Revocations::parse(r#"[{"sub": "a", "until": 5, "extra": 1}]"#),
            Err(RevocationError::Malformed(_))
        ));
        assert_eq!(Revocations::parse("[]").unwrap(), Revocations::default());
    }
}
