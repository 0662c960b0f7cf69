//! What the database tests share: a database of their own on the test
//! servers (PostgreSQL, MariaDB/MySQL), dropped after the test, and a TCP
//! proxy the test can shut to make a server unreachable.
#![allow(dead_code)]

use mysql_async::prelude::Queryable;
use serde_json::{json, Value};

pub use crate::common::pg::{block_on_aside, unique, with_db, PgDb};
#[allow(unused_imports)]
pub use crate::common::proxy::Proxy;
use crate::common::{eventually, eventually_seen, Daemon};

pub fn mysql_url() -> String {
    std::env::var("SLUICE_TEST_MYSQL_URL")
        .unwrap_or_else(|_| "mysql://root@127.0.0.1:3306/test".into())
}

/// A name no other test (of this or another process) uses.
/// `url` through `port` on 127.0.0.1 (the proxy).
pub fn with_port(url: &str, port: u16) -> String {
    let mut u = reqwest::Url::parse(url).unwrap();
    u.set_host(Some("127.0.0.1")).unwrap();
    u.set_port(Some(port)).unwrap();
    u.to_string()
}

/// A MariaDB/MySQL database of the test's own.
pub struct MyDb {
    pub name: String,
    pub url: String,
    pub conn: tokio::sync::Mutex<mysql_async::Conn>,
}

async fn my_connect(url: &str) -> mysql_async::Conn {
    mysql_async::Conn::from_url(url)
        .await
        .unwrap_or_else(|e| panic!("MySQL at {url}: {e}"))
}

impl MyDb {
    pub async fn new() -> MyDb {
        let name = unique("sluice_t");
        let mut admin = my_connect(&mysql_url()).await;
        admin
            .query_drop(format!("CREATE DATABASE {name}"))
            .await
            .unwrap();
        let url = with_db(&mysql_url(), &name);
        let mut conn = my_connect(&url).await;
        conn.query_drop("SET time_zone = '+00:00'").await.unwrap();
        MyDb {
            name,
            url,
            conn: tokio::sync::Mutex::new(conn),
        }
    }

    pub async fn exec(&self, sql: &str) {
        self.conn
            .lock()
            .await
            .query_drop(sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e:?}"));
    }

    /// The first column of each row of `sql`, as text (NULL as None).
    pub async fn column(&self, sql: &str) -> Vec<Option<String>> {
        self.conn
            .lock()
            .await
            .query::<Option<String>, _>(sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e:?}"))
    }

    pub async fn count(&self, sql: &str) -> i64 {
        let v = self
            .conn
            .lock()
            .await
            .query_first::<i64, _>(format!("SELECT count(*) FROM ({sql}) t"))
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e:?}"));
        v.unwrap_or(0)
    }
}

impl Drop for MyDb {
    fn drop(&mut self) {
        let name = self.name.clone();
        block_on_aside(async move {
            let mut admin = my_connect(&mysql_url()).await;
            admin
                .query_drop(format!("DROP DATABASE IF EXISTS {name}"))
                .await
                .ok();
        });
    }
}

/// The configuration of site `S`: endpoint `src` (a source) and `dst` (a
/// target), given as TOML bodies, and integration `sync` with flow `rows`
/// (key `id`, cursor `updated_at`).
pub fn site(src: &str, dst: &str) -> String {
    format!(
        r#"
[sites.S]

[sites.S.endpoints.src]
{src}

[sites.S.endpoints.dst]
{dst}

[sites.S.integrations.sync]

[[sites.S.integrations.sync.flows]]
name = "rows"
source = "src"
target = "dst"
key = "id"
cursor = "updated_at"
"#
    )
}

/// Waits until integration `sync` of site `S` is blocked behind
/// transaction `seq` (a record refused for good under `on_error =
/// "block"`) and returns the error it is blocked by.
pub async fn blocked_at(daemon: &Daemon, seq: i64) -> String {
    eventually(
        20,
        &format!("the queue blocked at transaction {seq}"),
        || async { daemon.integration("S", "sync").await["blocked"]["seq"] == seq },
    )
    .await;
    daemon.integration("S", "sync").await["blocked"]["error"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// Asks for a run of flow `rows` in `mode` ("all" or "changed"), without
/// waiting for it.
pub async fn start_run(daemon: &Daemon, mode: &str) -> Value {
    let before = daemon.flow("S", "rows").await["last_run"]["id"].clone();
    let (status, answer) = daemon
        .post("/api/v1/sites/S/flows/rows/run", json!({ "mode": mode }))
        .await;
    assert_eq!(status.as_u16(), 202, "{answer}");
    before
}

/// Runs flow `rows` in `mode` and waits until the run is over and what it
/// queued is sent: its last run.
pub async fn run(daemon: &Daemon, mode: &str) -> Value {
    let before = start_run(daemon, mode).await;
    let (flow, _) = eventually_seen(
        60,
        &format!("the '{mode}' run over and sent"),
        || async {
            let flow = daemon.flow("S", "rows").await;
            (flow, daemon.integration("S", "sync").await)
        },
        |(flow, integration)| {
            flow["last_run"]["id"] != before
                && flow["status"] != "Running"
                && integration["queued"] == 0
        },
    )
    .await;
    assert_eq!(flow["last_run"]["result"], "success", "{flow}");
    flow["last_run"].clone()
}
