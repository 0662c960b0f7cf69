//! API tokens and roles: who may do what, and the rules of tokens and
//! sessions. Their SQL is the token store's ([`crate::store::tokens`]).
//!
//! # Design constraints
//! - A token is shown once, when it is created, and stored only as its
//!   SHA-256 hash: the token store holds no clear-text token. Tokens are 32
//!   random bytes, so a fast hash is enough (nothing to brute-force, unlike
//!   a password).
//! - Where the tokens live follows the sites' store: with `store =
//!   "sqlite"`, `tokens.db` in the daemon's data directory; with `store =
//!   "postgres"`, the shared database, so that every node of a cluster
//!   accepts the same tokens and sessions ([`Tokens::open_configured`]).
//! - Roles are ordered: a viewer reads everything; an operator also runs
//!   flows, pauses and resumes, tests endpoints and acts on transactions; an
//!   admin also starts and stops sites and integrations, reauthorizes
//!   endpoints and manages tokens. They are the model's ([`Role::may`];
//!   what each action needs is `model::Action::role`), re-exported here.
//! - Open mode: while the store holds no live token the API asks for none
//!   and everyone is admin — but only on a loopback address; the daemon
//!   refuses to listen anywhere else without tokens.
//! - The store is shared by the daemon (every node, on PostgreSQL) and
//!   `sluice token …` run beside it, and nothing of it is cached: a token
//!   created on the command line is accepted at once, a revoked one refused
//!   at once (every request reads the store, one indexed lookup). Its calls
//!   are async: SQLite's run on blocking threads, PostgreSQL's on the
//!   network, neither on a tokio worker's time.
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
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::config::{Config, StoreConfig};
use crate::log::rfc3339;
use crate::store::postgres::tokens::PgTokenStore;
use crate::store::tokens::{Holder, SqliteTokenStore, TokenStore};
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
    /// The token store in PostgreSQL failed (the server, the connection,
    /// the pool): the text has no password.
    #[error("the token store in PostgreSQL: {0}")]
    Postgres(String),
    /// `store = "postgres"` and the variable naming the database is unset.
    #[error(
        "store = \"postgres\": the environment variable {0} (store_url_env) is not set; it \
         holds the database's URL, postgres://USER:PASSWORD@HOST:5432/DB"
    )]
    NoStoreUrl(String),
    /// The disk holding the token store is full: nothing was changed.
    #[error("the disk holding {} is full", file.display())]
    DiskFull { file: PathBuf },
}

pub type Result<T> = std::result::Result<T, AuthError>;

/// The tokens of one daemon (of every node, on PostgreSQL): the rules of
/// tokens and sessions over the token store, which keeps only their hashes.
#[derive(Clone)]
pub struct Tokens {
    store: Arc<dyn TokenStore>,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokens")
            .field("store", &self.store.place())
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

/// A token store's error, as auth says it; `file` is the store's, if it is
/// one.
fn store_error(file: Option<&Path>, e: StoreError) -> AuthError {
    let file = || file.unwrap_or(Path::new(FILE_NAME)).to_path_buf();
    match e {
        StoreError::Full { file } => AuthError::DiskFull { file },
        StoreError::Sqlite(source) => AuthError::Store {
            file: file(),
            source,
        },
        StoreError::Postgres(text) => AuthError::Postgres(text),
        // Only opening touches the file system: it creates the file.
        StoreError::Io(e) => {
            AuthError::Unavailable(format!("cannot create {}: {e}", file().display()))
        }
        other => AuthError::Unavailable(other.to_string()),
    }
}

/// Who holds a token, from what the store keeps of it.
fn principal((name, role): Holder) -> Option<Principal> {
    Role::parse(&role).map(|role| Principal { name, role })
}

impl Tokens {
    /// Opens (creating if needed) the token store in `data_dir`: `tokens.db`,
    /// as with `store = "sqlite"`.
    pub fn open(data_dir: &Path) -> Result<Tokens> {
        SqliteTokenStore::open(data_dir)
            .map(|store| Tokens {
                store: Arc::new(store),
            })
            .map_err(|e| store_error(Some(&data_dir.join(FILE_NAME)), e))
    }

    /// Opens the token store in the PostgreSQL database at `url` (bringing
    /// its schema up to date); `node`: the node whose API makes changes
    /// through it, recorded in the audit trail (`None`: the command line).
    pub async fn open_postgres(url: &str, node: Option<&str>) -> Result<Tokens> {
        PgTokenStore::open(url, node)
            .await
            .map(|store| Tokens {
                store: Arc::new(store),
            })
            .map_err(|e| store_error(None, e))
    }

    /// The token store `config` names: `tokens.db` in its data directory
    /// with `store = "sqlite"`, its database with `store = "postgres"` (the
    /// URL read from the variable `store_url_env` names, as the sites'
    /// stores read it).
    pub async fn open_configured(config: &Config, node: Option<&str>) -> Result<Tokens> {
        match &config.store {
            StoreConfig::Sqlite => Tokens::open(&config.data_dir),
            StoreConfig::Postgres { url_env } => {
                let url =
                    std::env::var(url_env).map_err(|_| AuthError::NoStoreUrl(url_env.clone()))?;
                Tokens::open_postgres(&url, node).await
            }
        }
    }

    fn err(&self, e: StoreError) -> AuthError {
        store_error(self.store.file(), e)
    }

    /// Whether any token exists (if none, the API is open on loopback).
    pub async fn any(&self) -> Result<bool> {
        self.store.any().await.map_err(|e| self.err(e))
    }

    /// Creates a token and returns it: the only time it is ever shown.
    pub async fn create(&self, name: &str, role: Role, actor: &str) -> Result<String> {
        valid_name(name)?;
        let token = fresh_token()?;
        let created = self
            .store
            .create(name, role.as_str(), &hash(&token), actor)
            .await
            .map_err(|e| self.err(e))?;
        if !created {
            return Err(AuthError::Exists(name.to_string()));
        }
        Ok(token)
    }

    /// Revokes a token by name: refused at once from then on.
    pub async fn revoke(&self, name: &str, actor: &str) -> Result<()> {
        if !self
            .store
            .revoke(name, actor)
            .await
            .map_err(|e| self.err(e))?
        {
            return Err(AuthError::NoSuchToken(name.to_string()));
        }
        Ok(())
    }

    /// Every token, by name; never the tokens themselves.
    pub async fn list(&self) -> Result<Vec<TokenInfo>> {
        let stored = self.store.list().await.map_err(|e| self.err(e))?;
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
    pub async fn verify(&self, token: &str) -> Result<Option<Principal>> {
        let holder = self
            .store
            .holder(&hash(token))
            .await
            .map_err(|e| self.err(e))?;
        Ok(holder.and_then(principal))
    }

    /// Opens a dashboard session for the holder of `token`, lasting
    /// `ttl_ms`: returns the session id the cookie carries — never the
    /// token itself — or `None` if the token is not valid. The store finds
    /// the token and keeps the id's hash in one transaction, so a token
    /// revoked meanwhile opens nothing. Expired sessions are swept on the
    /// way.
    pub async fn open_session(
        &self,
        token: &str,
        ttl_ms: i64,
    ) -> Result<Option<(String, Principal)>> {
        let id = random_hex()?;
        let holder = self
            .store
            .open_session(&hash(&id), &hash(token), ttl_ms)
            .await
            .map_err(|e| self.err(e))?;
        Ok(holder.and_then(principal).map(|p| (id, p)))
    }

    /// Who a dashboard session belongs to, while it is open, unexpired and
    /// its token is not revoked.
    pub async fn verify_session(&self, id: &str) -> Result<Option<Principal>> {
        let holder = self
            .store
            .session_holder(&hash(id))
            .await
            .map_err(|e| self.err(e))?;
        Ok(holder.and_then(principal))
    }

    /// Ends a dashboard session (signing out); nothing if it is unknown.
    pub async fn close_session(&self, id: &str) -> Result<()> {
        self.store
            .close_session(&hash(id))
            .await
            .map_err(|e| self.err(e))
    }

    /// The token changes, newest first.
    pub async fn audit(&self, limit: usize) -> Result<Vec<AuditEntry>> {
        self.store.audit(limit).await.map_err(|e| self.err(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::tests::{pg_url, PgTestDb};

    /// Where a test's tokens are kept: SQLite always, PostgreSQL when
    /// `SLUICE_TEST_PG_URL` names a server.
    enum Kept {
        File(tempfile::TempDir),
        Database(PgTestDb),
    }

    impl Kept {
        async fn all() -> Vec<Kept> {
            let mut all = vec![Kept::File(tempfile::tempdir().unwrap())];
            if let Some(url) = pg_url() {
                all.push(Kept::Database(PgTestDb::new(&url).await));
            }
            all
        }

        async fn open(&self) -> Tokens {
            match self {
                Kept::File(dir) => Tokens::open(dir.path()).unwrap(),
                Kept::Database(db) => Tokens::open_postgres(&db.url, Some("n1")).await.unwrap(),
            }
        }

        /// Everything the store holds, as text.
        async fn text(&self) -> String {
            match self {
                Kept::File(dir) => {
                    String::from_utf8_lossy(&std::fs::read(dir.path().join(FILE_NAME)).unwrap())
                        .into_owned()
                }
                Kept::Database(db) => {
                    let mut text = String::new();
                    for table in ["sluice_tokens", "sluice_sessions", "sluice_token_audit"] {
                        let sql = format!("SELECT t::text FROM {table} t");
                        for row in db.client().await.query(&sql, &[]).await.unwrap() {
                            text.push_str(row.get::<_, &str>(0));
                        }
                    }
                    text
                }
            }
        }
    }

    #[tokio::test]
    async fn tokens_are_kept_only_as_hashes() {
        for kept in Kept::all().await {
            let tokens = kept.open().await;
            assert!(!tokens.any().await.unwrap());
            let t = tokens.create("alice", Role::Admin, "test").await.unwrap();
            assert!(t.starts_with("sluice_") && t.len() == 7 + 64);
            assert!(tokens.any().await.unwrap());
            assert_eq!(
                tokens.verify(&t).await.unwrap(),
                Some(Principal {
                    name: "alice".into(),
                    role: Role::Admin
                })
            );
            assert_eq!(tokens.verify("sluice_nope").await.unwrap(), None);
            assert!(matches!(
                tokens.create("alice", Role::Viewer, "test").await,
                Err(AuthError::Exists(_))
            ));
            assert!(matches!(
                tokens.create("no spaces", Role::Viewer, "test").await,
                Err(AuthError::Invalid(_))
            ));
            let listed = tokens.list().await.unwrap();
            assert_eq!(listed.len(), 1);
            assert!(listed[0].last_used_at.is_some(), "verify notes the use");
            drop(tokens);
            assert!(
                !kept.text().await.contains(&t[7..]),
                "no clear-text token in the store"
            );
            let tokens = kept.open().await;
            tokens.revoke("alice", "test").await.unwrap();
            assert_eq!(tokens.verify(&t).await.unwrap(), None);
            assert!(matches!(
                tokens.revoke("alice", "test").await,
                Err(AuthError::NoSuchToken(_))
            ));
            let audit = tokens.audit(10).await.unwrap();
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
    }

    #[tokio::test]
    async fn sessions_end_when_closed_when_expired_and_when_their_token_is_revoked() {
        for kept in Kept::all().await {
            let tokens = kept.open().await;
            let t = tokens
                .create("oscar", Role::Operator, "test")
                .await
                .unwrap();
            assert_eq!(
                tokens.open_session("sluice_wrong", 60_000).await.unwrap(),
                None
            );
            let (id, who) = tokens.open_session(&t, 60_000).await.unwrap().unwrap();
            assert_eq!(who.name, "oscar");
            assert_ne!(id, t);
            assert_eq!(tokens.verify_session(&id).await.unwrap(), Some(who.clone()));
            assert_eq!(
                tokens.verify_session(&t).await.unwrap(),
                None,
                "a token is no session"
            );
            tokens.close_session(&id).await.unwrap();
            assert_eq!(tokens.verify_session(&id).await.unwrap(), None);

            let (expired, _) = tokens.open_session(&t, -1).await.unwrap().unwrap();
            assert_eq!(tokens.verify_session(&expired).await.unwrap(), None);

            let (a, _) = tokens.open_session(&t, 60_000).await.unwrap().unwrap();
            let (b, _) = tokens.open_session(&t, 60_000).await.unwrap().unwrap();
            tokens.revoke("oscar", "test").await.unwrap();
            assert_eq!(tokens.verify_session(&a).await.unwrap(), None);
            assert_eq!(tokens.verify_session(&b).await.unwrap(), None);
            assert_eq!(
                tokens.open_session(&t, 60_000).await.unwrap(),
                None,
                "a revoked token opens none"
            );
            // A new token of the same name does not revive them.
            tokens
                .create("oscar", Role::Operator, "test")
                .await
                .unwrap();
            assert_eq!(tokens.verify_session(&a).await.unwrap(), None);
            drop(tokens);
            assert!(
                !kept.text().await.contains(&b),
                "no clear-text session id in the store"
            );
        }
    }

    #[tokio::test]
    async fn a_missing_store_url_is_named_and_a_password_never_said() {
        let dir = tempfile::tempdir().unwrap();
        let config = Config::parse(
            "listen = \"127.0.0.1:0\"\ndata_dir = \"data\"\nstore = \"postgres\"\n\
             store_url_env = \"SLUICE_TEST_NO_SUCH_VARIABLE\"\n\
             [sites.S.endpoints.f]\nkind = \"file\"\npath = \"f.jsonl\"\n",
            &dir.path().join("sluice.toml"),
            None,
        )
        .unwrap();
        let e = Tokens::open_configured(&config, None).await.unwrap_err();
        assert!(matches!(e, AuthError::NoStoreUrl(_)), "{e}");
        assert!(
            e.to_string().contains("SLUICE_TEST_NO_SUCH_VARIABLE"),
            "{e}"
        );
        // Nothing listens on port 1.
        let e = Tokens::open_postgres("postgres://sluice:s3cret@127.0.0.1:1/x", None)
            .await
            .unwrap_err();
        let said = e.to_string();
        assert!(
            said.contains("127.0.0.1") && !said.contains("s3cret"),
            "{said}"
        );
    }

    #[test]
    fn csrf_depends_on_the_token() {
        assert_ne!(csrf("a"), csrf("b"));
        assert_eq!(csrf("a"), csrf("a"));
        assert_ne!(csrf("a"), hash("a")[..32]);
    }
}
