//! A PostgreSQL database of a test's own on the test server
//! (`SLUICE_TEST_PG_URL`), dropped after the test: for the database tests,
//! and for the daemons of every test when `SLUICE_TEST_STORE=postgres`
//! keeps their state in PostgreSQL ([`super::Daemon`]).

use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::Value;

pub fn pg_url() -> String {
    std::env::var("SLUICE_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

pub fn unique(prefix: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    format!(
        "{prefix}_{}_{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    )
}

/// `url` with another database.
pub fn with_db(url: &str, db: &str) -> String {
    let mut u = reqwest::Url::parse(url).unwrap();
    u.set_path(&format!("/{db}"));
    u.to_string()
}

/// Runs `f` on a runtime of its own on another thread: for the drops.
pub fn block_on_aside<F: std::future::Future<Output = ()> + Send + 'static>(f: F) {
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(f)
    })
    .join()
    .ok();
}

/// A PostgreSQL database of the test's own.
pub struct PgDb {
    pub name: String,
    pub url: String,
    pub client: tokio_postgres::Client,
}

pub async fn pg_connect(url: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL at {url}: {e}"));
    tokio::spawn(async move { conn.await.ok() });
    client
}

impl PgDb {
    pub async fn new() -> PgDb {
        let name = unique("sluice_t");
        let admin = pg_connect(&pg_url()).await;
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .unwrap();
        let url = with_db(&pg_url(), &name);
        let client = pg_connect(&url).await;
        PgDb { name, url, client }
    }

    pub async fn exec(&self, sql: &str) {
        self.client
            .batch_execute(sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e:?}"));
    }

    /// The rows of `sql` as JSON objects (PostgreSQL's own to_jsonb).
    pub async fn json(&self, sql: &str) -> Vec<Value> {
        self.client
            .query(&format!("SELECT to_jsonb(t) FROM ({sql}) t"), &[])
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e:?}"))
            .iter()
            .map(|r| r.get::<_, Value>(0))
            .collect()
    }

    pub async fn count(&self, sql: &str) -> i64 {
        self.client
            .query_one(&format!("SELECT count(*) FROM ({sql}) t"), &[])
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e:?}"))
            .get(0)
    }
}

impl Drop for PgDb {
    fn drop(&mut self) {
        let name = self.name.clone();
        block_on_aside(async move {
            let admin = pg_connect(&pg_url()).await;
            admin
                .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .await
                .ok();
        });
    }
}
