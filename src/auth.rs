//! API tokens and roles: who may do what, and the rules of tokens and
//! sessions. Their SQL is the token store's ([`crate::store::tokens`]).
//!
//! # Design constraints
//! - A token is shown once, when it is created, and stored only as its
//!   SHA-256 hash: the token store (`tokens.db` in the daemon's data
//!   directory) holds no clear-text token. Tokens are 32 random bytes, so a
//!   fast hash is enough (nothing to brute-force, unlike a password).
//! - Roles are ordered: a viewer reads everything; an operator also runs
//!   flows, pauses and resumes, tests endpoints and acts on transactions; an
//!   admin also starts and stops sites and integrations, reauthorizes
//!   endpoints and manages tokens. They are the model's ([`Role::may`];
//!   what each action needs is `model::Action::role`), re-exported here.
//! - Open mode: while the store holds no live token the API asks for none
//!   and everyone is admin — but only on a loopback address; the daemon
//!   refuses to listen anywhere else without tokens.
//! - The store is a small SQLite file of its own, shared by the daemon and
//!   `sluice token …` run beside it: a token created on the command line
//!   is accepted at once, a revoked one refused at once (every request reads
//!   the store; a lookup by primary key is microseconds).
//! - The dashboard's cookie carries a session id of its own, never the
//!   token: 32 random bytes, stored as a hash with its token's name and an
//!   expiry. Signing out deletes it; revoking the token deletes all of its
//!   sessions in the same transaction; an expired one is refused (and swept
//!   when the next session opens).
//! - Token changes are kept in the store's own audit trail (`GET
//!   /api/v1/audit`, entries as a site's), whoever made them (the API or
//!   the command line).
//! - A change the disk has no space for is [`AuthError::DiskFull`] and
//!   leaves nothing behind (a change and its audit entry are one
//!   transaction). The daemon's log says so once, and once when a change
//!   goes through again.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::log::rfc3339;
use crate::store::tokens::TokenStore;
use crate::store::{AuditEntry, StoreError};

pub use crate::model::Role;
pub use crate::store::tokens::FILE_NAME;

/// Who a valid token belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Principal {
    pub name: String,
    pub role: Role,
}

/// A token as listed: never the token itself.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TokenInfo {
    pub name: String,
    pub role: Role,
    pub created_at: String,
    pub created_by: String,
    pub last_used_at: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("a token named '{0}' exists already; revoke it first or choose another name")]
    Exists(String),
    #[error("no token named '{0}'")]
    NoSuchToken(String),
    #[error("{0}")]
    Invalid(String),
    #[error("the token store {file}: {source}")]
    Store {
        file: PathBuf,
        source: rusqlite::Error,
    },
    #[error("the token store: {0}")]
    Unavailable(String),
    /// The disk holding the token store is full: nothing was changed.
    #[error("the disk holding {} is full", file.display())]
    DiskFull { file: PathBuf },
}

pub type Result<T> = std::result::Result<T, AuthError>;

/// The tokens of one daemon: the rules of tokens and sessions over the
/// token store, which keeps only their hashes.
#[derive(Clone)]
pub struct Tokens {
    store: TokenStore,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokens")
            .field("file", &self.store.file())
            .finish()
    }
}

/// The SHA-256 of a token, as lowercase hex: what the store keeps.
pub fn hash(token: &str) -> String {
    hex(&Sha256::digest(token.as_bytes()))
}

/// The CSRF value of a cookie session: derived from the token, so it needs
/// no server-side session, and unknowable to a page that cannot read the
/// session answer (the cookie itself is HttpOnly).
pub fn csrf(token: &str) -> String {
    hex(&Sha256::digest(format!("sluice-csrf:{token}").as_bytes()))[..32].to_string()
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::with_capacity(64), |mut s, b| {
        let _infallible = write!(s, "{b:02x}");
        s
    })
}

/// 64 hex digits of the operating system's randomness.
fn random_hex() -> Result<String> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)
        .map_err(|e| AuthError::Unavailable(format!("no randomness for a secret: {e}")))?;
    Ok(hex(&bytes))
}

/// A new token: `sluice_` and 64 random hex digits.
fn fresh_token() -> Result<String> {
    Ok(format!("sluice_{}", random_hex()?))
}

fn valid_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.@".contains(c));
    if ok {
        Ok(())
    } else {
        Err(AuthError::Invalid(format!(
            "token name '{name}': use 1 to 64 letters, digits, '-', '_', '.' or '@'"
        )))
    }
}

/// A token store's error, as auth says it.
fn store_error(file: &Path, e: StoreError) -> AuthError {
    match e {
        StoreError::Full { file } => AuthError::DiskFull { file },
        StoreError::Sqlite(source) => AuthError::Store {
            file: file.to_path_buf(),
            source,
        },
        // Only opening touches the file system: it creates the file.
        StoreError::Io(e) => {
            AuthError::Unavailable(format!("cannot create {}: {e}", file.display()))
        }
        other => AuthError::Unavailable(other.to_string()),
    }
}

/// Who holds a token, from what the store keeps of it.
fn principal((name, role): (String, String)) -> Option<Principal> {
    Role::parse(&role).map(|role| Principal { name, role })
}

impl Tokens {
    /// Opens (creating if needed) the token store in `data_dir`.
    pub fn open(data_dir: &Path) -> Result<Tokens> {
        TokenStore::open(data_dir)
            .map(|store| Tokens { store })
            .map_err(|e| store_error(&data_dir.join(FILE_NAME), e))
    }

    fn err(&self, e: StoreError) -> AuthError {
        store_error(self.store.file(), e)
    }

    /// Whether any token exists (if none, the API is open on loopback).
    pub fn any(&self) -> Result<bool> {
        self.store.any().map_err(|e| self.err(e))
    }

    /// Creates a token and returns it: the only time it is ever shown.
    pub fn create(&self, name: &str, role: Role, actor: &str) -> Result<String> {
        valid_name(name)?;
        let token = fresh_token()?;
        let created = self
            .store
            .create(name, role.as_str(), &hash(&token), actor)
            .map_err(|e| self.err(e))?;
        if !created {
            return Err(AuthError::Exists(name.to_string()));
        }
        Ok(token)
    }

    /// Revokes a token by name: refused at once from then on.
    pub fn revoke(&self, name: &str, actor: &str) -> Result<()> {
        if !self.store.revoke(name, actor).map_err(|e| self.err(e))? {
            return Err(AuthError::NoSuchToken(name.to_string()));
        }
        Ok(())
    }

    /// Every token, by name; never the tokens themselves.
    pub fn list(&self) -> Result<Vec<TokenInfo>> {
        let stored = self.store.list().map_err(|e| self.err(e))?;
        Ok(stored
            .into_iter()
            .map(|t| TokenInfo {
                role: Role::parse(&t.role).unwrap_or(Role::Viewer),
                name: t.name,
                created_at: rfc3339(t.created_at),
                created_by: t.created_by,
                last_used_at: t.last_used_at.map(rfc3339),
            })
            .collect())
    }

    /// Who holds `token`, if it is valid. Notes the time it was last used
    /// (at most once a minute, so reads do not turn into writes).
    pub fn verify(&self, token: &str) -> Result<Option<Principal>> {
        let holder = self.store.holder(&hash(token)).map_err(|e| self.err(e))?;
        Ok(holder.and_then(principal))
    }

    /// Opens a dashboard session for the holder of `token` (checked here),
    /// lasting `ttl_ms`: returns the session id the cookie carries — never
    /// the token itself — or `None` if the token is not valid. Only the
    /// id's hash is kept. Expired sessions are swept on the way.
    pub fn open_session(&self, token: &str, ttl_ms: i64) -> Result<Option<(String, Principal)>> {
        let Some(principal) = self.verify(token)? else {
            return Ok(None);
        };
        let id = random_hex()?;
        self.store
            .open_session(&hash(&id), &principal.name, ttl_ms)
            .map_err(|e| self.err(e))?;
        Ok(Some((id, principal)))
    }

    /// Who a dashboard session belongs to, while it is open, unexpired and
    /// its token is not revoked.
    pub fn verify_session(&self, id: &str) -> Result<Option<Principal>> {
        let holder = self
            .store
            .session_holder(&hash(id))
            .map_err(|e| self.err(e))?;
        Ok(holder.and_then(principal))
    }

    /// Ends a dashboard session (signing out); nothing if it is unknown.
    pub fn close_session(&self, id: &str) -> Result<()> {
        self.store.close_session(&hash(id)).map_err(|e| self.err(e))
    }

    /// The token changes, newest first.
    pub fn audit(&self, limit: usize) -> Result<Vec<AuditEntry>> {
        self.store.audit(limit).map_err(|e| self.err(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_kept_only_as_hashes() {
        let dir = tempfile::tempdir().unwrap();
        let tokens = Tokens::open(dir.path()).unwrap();
        assert!(!tokens.any().unwrap());
        let t = tokens.create("alice", Role::Admin, "test").unwrap();
        assert!(t.starts_with("sluice_") && t.len() == 7 + 64);
        assert!(tokens.any().unwrap());
        assert_eq!(
            tokens.verify(&t).unwrap(),
            Some(Principal {
                name: "alice".into(),
                role: Role::Admin
            })
        );
        assert_eq!(tokens.verify("sluice_nope").unwrap(), None);
        assert!(matches!(
            tokens.create("alice", Role::Viewer, "test"),
            Err(AuthError::Exists(_))
        ));
        assert!(matches!(
            tokens.create("no spaces", Role::Viewer, "test"),
            Err(AuthError::Invalid(_))
        ));
        drop(tokens);
        let bytes = std::fs::read(dir.path().join(FILE_NAME)).unwrap();
        let text = String::from_utf8_lossy(&bytes);
        assert!(!text.contains(&t[7..]), "no clear-text token on disk");
        let tokens = Tokens::open(dir.path()).unwrap();
        tokens.revoke("alice", "test").unwrap();
        assert_eq!(tokens.verify(&t).unwrap(), None);
        assert!(matches!(
            tokens.revoke("alice", "test"),
            Err(AuthError::NoSuchToken(_))
        ));
        let audit = tokens.audit(10).unwrap();
        let actions: Vec<_> = audit
            .iter()
            .map(|a| (a.action.as_str(), a.outcome.as_str()))
            .collect();
        assert_eq!(
            actions,
            [
                ("token.revoke", "refused: no such token"),
                ("token.revoke", "ok"),
                ("token.create", "refused: exists"),
                ("token.create", "ok"),
            ]
        );
    }

    #[test]
    fn sessions_end_when_closed_when_expired_and_when_their_token_is_revoked() {
        let dir = tempfile::tempdir().unwrap();
        let tokens = Tokens::open(dir.path()).unwrap();
        let t = tokens.create("oscar", Role::Operator, "test").unwrap();
        assert_eq!(tokens.open_session("sluice_wrong", 60_000).unwrap(), None);
        let (id, who) = tokens.open_session(&t, 60_000).unwrap().unwrap();
        assert_eq!(who.name, "oscar");
        assert_ne!(id, t);
        assert_eq!(tokens.verify_session(&id).unwrap(), Some(who.clone()));
        assert_eq!(
            tokens.verify_session(&t).unwrap(),
            None,
            "a token is no session"
        );
        tokens.close_session(&id).unwrap();
        assert_eq!(tokens.verify_session(&id).unwrap(), None);

        let (expired, _) = tokens.open_session(&t, -1).unwrap().unwrap();
        assert_eq!(tokens.verify_session(&expired).unwrap(), None);

        let (a, _) = tokens.open_session(&t, 60_000).unwrap().unwrap();
        let (b, _) = tokens.open_session(&t, 60_000).unwrap().unwrap();
        tokens.revoke("oscar", "test").unwrap();
        assert_eq!(tokens.verify_session(&a).unwrap(), None);
        assert_eq!(tokens.verify_session(&b).unwrap(), None);
        // A new token of the same name does not revive them.
        tokens.create("oscar", Role::Operator, "test").unwrap();
        assert_eq!(tokens.verify_session(&a).unwrap(), None);
        drop(tokens);
        let bytes = std::fs::read(dir.path().join(FILE_NAME)).unwrap();
        assert!(
            !String::from_utf8_lossy(&bytes).contains(&b),
            "no clear-text session id on disk"
        );
    }

    #[test]
    fn csrf_depends_on_the_token() {
        assert_ne!(csrf("a"), csrf("b"));
        assert_eq!(csrf("a"), csrf("a"));
        assert_ne!(csrf("a"), hash("a")[..32]);
    }
}
