//! The token store of every node on one database: the API tokens, the
//! dashboard's sessions and the audit trail of token changes in
//! `sluice_tokens`, `sluice_sessions` and `sluice_token_audit` (migration
//! 3). A token made on one node (or by `sluice token create` against the
//! database) is accepted by all of them, and a revoke on one is refused by
//! all at their next request.
//!
//! # Design constraints
//! Those of [`crate::store::tokens`], kept so:
//! - **No cache.** A request's lookup is one statement on an index
//!   (`hash` is unique; a session is found by its primary key and joined to
//!   its token by the token's), on a small pool of this store's own, never
//!   on a tokio worker's time beyond the await. Nothing is remembered
//!   between requests, so nothing can keep a revoked token alive.
//! - **A change and its audit entry are one transaction.** A session is
//!   inserted in the transaction that finds its token and locks that row
//!   (`FOR NO KEY UPDATE`), and references it (`ON DELETE CASCADE`): a
//!   revoke on another node comes wholly before (no session) or after
//!   (the session goes with the token).
//! - **One clock.** Times are the database's (`clock_timestamp()`): a
//!   session opened on one node expires at the same moment on all of them.
//! - **Reads stay reads.** `last_used_at` is written at most once a
//!   minute, by a statement of its own whose failure only delays the note.
//! - **Space and secrets** as for the sites' store: the server's disk is
//!   not watched here, and every error passes through `said` (no password).

use std::path::Path;

use async_trait::async_trait;
use deadpool_postgres::{Object, Pool};

use super::cluster::DB_NOW;
use super::{at_server, audit_entry, get, limit_of, migrate, pool, said};
use crate::store::tokens::{Holder, StoredToken, TokenStore, NOTE_USE_EVERY_MS};
use crate::store::{AuditEntry, Result};

/// Connections this store keeps at most: each request's lookup holds one
/// for a single indexed statement.
const POOL_SIZE: usize = 4;

/// The token store in a PostgreSQL database, shared by every node on it.
pub struct PgTokenStore {
    pool: Pool,
    /// The database's URL without its password.
    place: String,
    /// The node whose API makes the changes, recorded in the audit trail;
    /// `None` for the command line.
    node: Option<String>,
}

impl PgTokenStore {
    /// Connects to the database at `url` and brings its schema up to date
    /// (the command line may make the first token before any node ran).
    /// `node`: the node making changes through it, if any.
    pub async fn open(url: &str, node: Option<&str>) -> Result<PgTokenStore> {
        let pool = pool(url, POOL_SIZE)?;
        let mut client = pool.get().await.map_err(|e| at_server(url, &e))?;
        migrate(&mut client).await?;
        drop(client);
        Ok(PgTokenStore {
            pool,
            place: crate::redact::url(url),
            node: node.map(str::to_string),
        })
    }

    async fn client(&self) -> Result<Object> {
        Ok(self.pool.get().await?)
    }

    /// One change to the tokens, in the transaction that made it.
    async fn record(
        &self,
        db: &deadpool_postgres::Transaction<'_>,
        actor: &str,
        action: &str,
        subject: &str,
        reason: Option<&str>,
        outcome: &str,
    ) -> Result<()> {
        let stmt = db
            .prepare_cached(&format!(
                "INSERT INTO sluice_token_audit (ts, actor, action, subject, reason, outcome, node)
                 VALUES ({DB_NOW}, $1, $2, $3, $4, $5, $6)"
            ))
            .await?;
        db.execute(
            &stmt,
            &[&actor, &action, &subject, &reason, &outcome, &self.node],
        )
        .await?;
        Ok(())
    }
}

#[async_trait]
impl TokenStore for PgTokenStore {
    fn place(&self) -> String {
        self.place.clone()
    }

    fn file(&self) -> Option<&Path> {
        None
    }

    async fn any(&self) -> Result<bool> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached("SELECT EXISTS (SELECT 1 FROM sluice_tokens)")
            .await?;
        get(&client.query_one(&stmt, &[]).await?, 0)
    }

    async fn create(&self, name: &str, role: &str, digest: &str, actor: &str) -> Result<bool> {
        let mut client = self.client().await?;
        let db = client.transaction().await?;
        let stmt = db
            .prepare_cached(&format!(
                "INSERT INTO sluice_tokens (name, role, hash, created_at, created_by)
                 VALUES ($1, $2, $3, {DB_NOW}, $4) ON CONFLICT (name) DO NOTHING"
            ))
            .await?;
        let n = db.execute(&stmt, &[&name, &role, &digest, &actor]).await?;
        let outcome = if n == 1 { "ok" } else { "refused: exists" };
        let reason = format!("role {role}");
        self.record(&db, actor, "token.create", name, Some(&reason), outcome)
            .await?;
        db.commit().await?;
        Ok(n == 1)
    }

    async fn revoke(&self, name: &str, actor: &str) -> Result<bool> {
        let mut client = self.client().await?;
        let db = client.transaction().await?;
        // Its dashboard sessions go with it (ON DELETE CASCADE).
        let stmt = db
            .prepare_cached("DELETE FROM sluice_tokens WHERE name = $1")
            .await?;
        let n = db.execute(&stmt, &[&name]).await?;
        let outcome = if n == 1 {
            "ok"
        } else {
            "refused: no such token"
        };
        self.record(&db, actor, "token.revoke", name, None, outcome)
            .await?;
        db.commit().await?;
        Ok(n == 1)
    }

    async fn list(&self) -> Result<Vec<StoredToken>> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(
                "SELECT name, role, created_at, created_by, last_used_at FROM sluice_tokens
                  ORDER BY name",
            )
            .await?;
        client
            .query(&stmt, &[])
            .await?
            .iter()
            .map(|r| {
                Ok(StoredToken {
                    name: get(r, 0)?,
                    role: get(r, 1)?,
                    created_at: get(r, 2)?,
                    created_by: get(r, 3)?,
                    last_used_at: get(r, 4)?,
                })
            })
            .collect()
    }

    async fn holder(&self, digest: &str) -> Result<Option<Holder>> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(&format!(
                "SELECT name, role,
                        last_used_at IS NULL OR last_used_at <= {DB_NOW} - {NOTE_USE_EVERY_MS}
                   FROM sluice_tokens WHERE hash = $1"
            ))
            .await?;
        let Some(row) = client.query_opt(&stmt, &[&digest]).await? else {
            return Ok(None);
        };
        let (name, role, stale): (String, String, bool) =
            (get(&row, 0)?, get(&row, 1)?, get(&row, 2)?);
        if stale {
            // A busy store only delays the note; the request goes on.
            let noted = client
                .execute(
                    &format!("UPDATE sluice_tokens SET last_used_at = {DB_NOW} WHERE name = $1"),
                    &[&name],
                )
                .await;
            if let Err(e) = noted {
                tracing::debug!("the token {name}'s last use is not noted: {}", said(&e));
            }
        }
        Ok(Some((name, role)))
    }

    async fn open_session(
        &self,
        session: &str,
        token: &str,
        ttl_ms: i64,
    ) -> Result<Option<Holder>> {
        let mut client = self.client().await?;
        let db = client.transaction().await?;
        // The token's row stays locked to the commit: a revoke waits for it
        // and takes the session along.
        let stmt = db
            .prepare_cached(
                "SELECT name, role FROM sluice_tokens WHERE hash = $1 FOR NO KEY UPDATE",
            )
            .await?;
        let Some(row) = db.query_opt(&stmt, &[&token]).await? else {
            return Ok(None);
        };
        let (name, role): (String, String) = (get(&row, 0)?, get(&row, 1)?);
        let sweep = db
            .prepare_cached(&format!(
                "DELETE FROM sluice_sessions WHERE expires_at <= {DB_NOW}"
            ))
            .await?;
        db.execute(&sweep, &[]).await?;
        let insert = db
            .prepare_cached(&format!(
                "INSERT INTO sluice_sessions (hash, token, created_at, expires_at)
                 VALUES ($1, $2, {DB_NOW}, {DB_NOW} + $3)"
            ))
            .await?;
        db.execute(&insert, &[&session, &name, &ttl_ms]).await?;
        let used = db
            .prepare_cached(&format!(
                "UPDATE sluice_tokens SET last_used_at = {DB_NOW} WHERE name = $1"
            ))
            .await?;
        db.execute(&used, &[&name]).await?;
        db.commit().await?;
        Ok(Some((name, role)))
    }

    async fn session_holder(&self, digest: &str) -> Result<Option<Holder>> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(&format!(
                "SELECT t.name, t.role FROM sluice_sessions s
                   JOIN sluice_tokens t ON t.name = s.token
                  WHERE s.hash = $1 AND s.expires_at > {DB_NOW}"
            ))
            .await?;
        match client.query_opt(&stmt, &[&digest]).await? {
            Some(row) => Ok(Some((get(&row, 0)?, get(&row, 1)?))),
            None => Ok(None),
        }
    }

    async fn close_session(&self, digest: &str) -> Result<()> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached("DELETE FROM sluice_sessions WHERE hash = $1")
            .await?;
        client.execute(&stmt, &[&digest]).await?;
        Ok(())
    }

    async fn audit(&self, limit: usize) -> Result<Vec<AuditEntry>> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(
                "SELECT id, ts, actor, action, subject, reason, outcome, node FROM sluice_token_audit
                  ORDER BY id DESC LIMIT $1",
            )
            .await?;
        client
            .query(&stmt, &[&limit_of(limit)])
            .await?
            .iter()
            .map(audit_entry)
            .collect()
    }
}

/// What only the shared token store has to show: two nodes on one database
/// see one set of tokens and sessions, a revoke on one ends a session on
/// the other, and a sign-in racing a revoke leaves no session behind. The
/// rules common to both backends are `auth`'s tests. Each test has a
/// database of its own on the server of `SLUICE_TEST_PG_URL`, and passes
/// without a word when it is not set.
#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::store::tests::{pg_url, PgTestDb};

    #[tokio::test]
    async fn two_nodes_share_tokens_sessions_and_the_audit_trail() {
        let Some(url) = pg_url() else { return };
        let db = PgTestDb::new(&url).await;
        let n1 = PgTokenStore::open(&db.url, Some("n1")).await.unwrap();
        let n2 = PgTokenStore::open(&db.url, Some("n2")).await.unwrap();
        assert!(!n2.any().await.unwrap());
        assert!(n1.create("alice", "admin", "d-alice", "cli").await.unwrap());
        assert!(!n2.create("alice", "viewer", "d-other", "x").await.unwrap());
        assert!(n2.any().await.unwrap());
        let alice = Some(("alice".to_string(), "admin".to_string()));
        assert_eq!(n2.holder("d-alice").await.unwrap(), alice);
        assert_eq!(n2.holder("d-nope").await.unwrap(), None);
        assert_eq!(
            n1.open_session("s-1", "d-alice", 60_000).await.unwrap(),
            alice
        );
        assert_eq!(n2.session_holder("s-1").await.unwrap(), alice);
        assert_eq!(
            n2.open_session("s-x", "d-nope", 60_000).await.unwrap(),
            None
        );
        assert!(n2.revoke("alice", "bob").await.unwrap());
        assert_eq!(n1.session_holder("s-1").await.unwrap(), None);
        assert_eq!(n1.holder("d-alice").await.unwrap(), None);
        assert!(!n1.revoke("alice", "bob").await.unwrap());

        let audit = n1.audit(10).await.unwrap();
        let seen: Vec<_> = audit
            .iter()
            .map(|a| (a.action.as_str(), a.actor.as_str(), a.outcome.as_str()))
            .collect();
        assert_eq!(
            seen,
            [
                ("token.revoke", "bob", "refused: no such token"),
                ("token.revoke", "bob", "ok"),
                ("token.create", "x", "refused: exists"),
                ("token.create", "cli", "ok"),
            ]
        );
        let nodes: Vec<Option<String>> = db
            .client()
            .await
            .query("SELECT node FROM sluice_token_audit ORDER BY id", &[])
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        let named = |n: &str| Some(n.to_string());
        assert_eq!(nodes, [named("n1"), named("n2"), named("n2"), named("n1")]);
    }

    /// Sign-ins on one node while another revokes the token: whatever the
    /// order, no session is left once the revoke is done.
    #[tokio::test]
    async fn a_sign_in_racing_a_revoke_leaves_no_session() {
        let Some(url) = pg_url() else { return };
        let db = PgTestDb::new(&url).await;
        let n1 = Arc::new(PgTokenStore::open(&db.url, Some("n1")).await.unwrap());
        let n2 = Arc::new(PgTokenStore::open(&db.url, Some("n2")).await.unwrap());
        let client = db.client().await;
        for round in 0..10 {
            assert!(n1
                .create("oscar", "operator", "d-oscar", "t")
                .await
                .unwrap());
            let mut signing_in = Vec::new();
            for i in 0..4 {
                let n1 = n1.clone();
                signing_in.push(tokio::spawn(async move {
                    n1.open_session(&format!("s-{round}-{i}"), "d-oscar", 60_000)
                        .await
                        .unwrap()
                }));
            }
            assert!(n2.revoke("oscar", "t").await.unwrap());
            for s in signing_in {
                s.await.unwrap();
            }
            let left: i64 = client
                .query_one("SELECT count(*) FROM sluice_sessions", &[])
                .await
                .unwrap()
                .get(0);
            assert_eq!(left, 0, "round {round}: a session outlived its token");
        }
    }
}
