//! Files a relay watches while it runs. The token key file: when its contents
//! change, the key set it holds replaces the one admissions use (key rotation
//! without downtime: add the new public key to the file, issue tokens with the
//! new private key, later remove the old public key). The revocation file: a
//! changed list replaces the one hellos are checked against, and the sessions
//! of revoked subjects are closed. A file that cannot be read or parsed leaves
//! what is in use as it is.

use std::path::PathBuf;
use std::time::Duration;

use skylane_proto::TokenVerifier;
use tracing::{info, warn};

use tokio::sync::mpsc;

use super::mailbox::Cmd;
use crate::metrics::RelayMetrics;
use crate::revocation::Revocations;
use crate::settings::{RevocationList, TokenKeys};

/// How often the key file is read.
pub(crate) const TOKEN_KEY_POLL: Duration = Duration::from_secs(2);

/// Largest key file read (a key set is a few hundred bytes per key).
const MAX_KEY_FILE: u64 = 64 << 10;

/// Watches `path` every `every` until `keys` is no longer shared (the relay
/// is gone).
pub(crate) async fn watch_token_keys(
    path: PathBuf,
    audience: String,
    keys: TokenKeys,
    every: Duration,
    metrics: RelayMetrics,
) {
    let errors = metrics.token_key_errors.clone();
    watch_file(
        path,
        every,
        || keys.shared(),
        errors,
        |bytes| {
            let text = std::str::from_utf8(bytes).map_err(|e| e.to_string())?;
            let v = TokenVerifier::from_pem(text, audience.clone()).map_err(|e| e.to_string())?;
            if v.key_ids() != keys.current().key_ids() {
                info!(kids = ?v.key_ids(), "token keys reloaded");
                keys.replace(v);
                metrics.token_key_reloads.inc();
            }
            Ok(())
        },
    )
    .await;
}

/// Watches the revocation file: a changed list replaces the one hellos are
/// checked against, and the actor closes the sessions it revokes.
pub(crate) async fn watch_revocations(
    path: PathBuf,
    list: RevocationList,
    every: Duration,
    metrics: RelayMetrics,
    actor: mpsc::Sender<Cmd>,
) {
    let errors = metrics.revocation_errors.clone();
    watch_file(
        path,
        every,
        || list.shared(),
        errors,
        |bytes| {
            let text = std::str::from_utf8(bytes).map_err(|e| e.to_string())?;
            let r = Revocations::parse(text).map_err(|e| e.to_string())?;
            if *list.current() != r {
                info!(entries = r.len(), "revocations reloaded");
                list.replace(r);
                metrics.revocation_reloads.inc();
                // Full: the next change or hello still applies it.
                let _ = actor.try_send(Cmd::Revoked);
            }
            Ok(())
        },
    )
    .await;
}

/// Reads `path` every `every` while `alive()`, and hands `apply` its bytes
/// each time they changed; a file that cannot be read, or that `apply`
/// refuses, counts in `errors` and changes nothing.
async fn watch_file(
    path: PathBuf,
    every: Duration,
    alive: impl Fn() -> bool,
    errors: prometheus_client::metrics::counter::Counter,
    mut apply: impl FnMut(&[u8]) -> Result<(), String>,
) {
    // What was read last (nothing yet: the first read is compared with what
    // is in use, which the relay loaded from this file a moment ago).
    let mut last: Option<Vec<u8>> = None;
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if !alive() {
            return;
        }
        let now = match read(&path) {
            Ok(b) => b,
            Err(e) => {
                if last.is_some() {
                    warn!(path = %path.display(), error = %e, "watched file unreadable: keeping what is in use");
                    errors.inc();
                    last = None;
                }
                continue;
            }
        };
        if last.as_ref() == Some(&now) {
            continue;
        }
        if let Err(e) = apply(&now) {
            warn!(path = %path.display(), error = %e, "watched file invalid: keeping what is in use");
            errors.inc();
        }
        last = Some(now);
    }
}

/// Reads the (small, local) key file in place: a few hundred bytes every
/// couple of seconds, not worth the blocking pool.
fn read(path: &std::path::Path) -> Result<Vec<u8>, String> {
    let len = std::fs::metadata(path).map_err(|e| e.to_string())?.len();
    if len > MAX_KEY_FILE {
        return Err(format!("{len} bytes, more than a key set ({MAX_KEY_FILE})"));
    }
    std::fs::read(path).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::registry::Registry;
    use skylane_proto::{Claims, Role, TokenKeyPair, TokenSigner};

    fn token(pair: &TokenKeyPair) -> String {
        TokenSigner::from_pem(&pair.private_pem)
            .unwrap()
            .issue(&Claims::new(
                "ann",
                Role::Player,
                vec![],
                "skylane",
                100,
                600,
            ))
            .unwrap()
    }

    /// Waits (real time, bounded) until `f` holds.
    async fn until(what: &str, f: impl Fn() -> bool) {
        for _ in 0..500 {
            if f() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("timed out waiting for: {what}");
    }

    #[tokio::test]
    async fn a_changed_key_file_replaces_the_key_set_and_a_bad_one_is_ignored() {
        let every = Duration::from_millis(10);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token.pub");
        let (old, new) = (
            TokenKeyPair::generate().unwrap(),
            TokenKeyPair::generate().unwrap(),
        );
        std::fs::write(&path, &old.public_pem).unwrap();
        let keys = TokenKeys::new(TokenVerifier::from_pem(&old.public_pem, "skylane").unwrap());
        let metrics = RelayMetrics::new(&mut Registry::default());
        let task = tokio::spawn(watch_token_keys(
            path.clone(),
            "skylane".into(),
            keys.clone(),
            every,
            metrics.clone(),
        ));
        let accepts = |t: &str| keys.current().verify(t, 200).is_ok();
        assert!(accepts(&token(&old)) && !accepts(&token(&new)));
        // Rotation, step 1: both keys.
        std::fs::write(&path, format!("{}{}", old.public_pem, new.public_pem)).unwrap();
        until("the new key trusted", || accepts(&token(&new))).await;
        assert!(
            accepts(&token(&old)),
            "the old one too, during the rotation"
        );
        // A broken file changes nothing.
        std::fs::write(&path, "not a key").unwrap();
        until("the bad file noticed", || {
            metrics.token_key_errors.get() == 1
        })
        .await;
        assert!(accepts(&token(&old)) && accepts(&token(&new)));
        // Step 2: the old key retired.
        std::fs::write(&path, &new.public_pem).unwrap();
        until("the old key retired", || !accepts(&token(&old))).await;
        assert!(accepts(&token(&new)));
        assert_eq!(metrics.token_key_reloads.get(), 2);
        // The relay gone, the watcher stops.
        drop(keys);
        until("the watcher stopped", || task.is_finished()).await;
    }
}
