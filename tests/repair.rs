//! Seed 002's repair across the endpoint kinds: a record the target refuses
//! because of a wrong mapping blocks the queue under `on_error = "block"`;
//! the mapping fixed, the site reloaded and the transaction retried, it is
//! delivered — and what queued behind it follows, in order. PostgreSQL,
//! MariaDB and an HTTP API each refuse it their own way.

mod common;
mod sql;

use axum::http::StatusCode;
use common::*;
use serde_json::json;
use sql::*;

/// A webhook flow `contacts` into `dst`, its `map` sending the text field
/// `qty_text` as `qty`: wrong for a table whose `qty` is an integer.
fn site(dst: &str) -> String {
    format!(
        r#"
[sites.S.endpoints.web]
kind = "webhook"

[sites.S.endpoints.dst]
{dst}

[sites.S.integrations.sync]
on_error = "block"

[[sites.S.integrations.sync.flows]]
name = "contacts"
source = "web"
target = "dst"
key = "id"
map = {{ id = "id", name = "name", qty = "qty_text" }}
"#
    )
}

/// Posts three records, waits for the queue to block at the first, fixes
/// the map, reloads, retries, and waits until all three are delivered
/// (`delivered` counts them).
async fn refuse_then_repair<F, Fut>(daemon: &Daemon, delivered: F, refusal: &str)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = i64>,
{
    for id in 1..=3 {
        let record = json!({"id": id, "name": format!("n{id}"), "qty": id * 10, "qty_text": "ten"});
        let (status, _) = daemon.hook("S", "sync", "contacts", record).await;
        assert_eq!(status, StatusCode::ACCEPTED);
    }
    let error = blocked_at(daemon, 1).await;
    assert!(error.contains(refusal), "{error}");
    assert_eq!(delivered().await, 0, "nothing passes the blocked record");
    let integration = daemon.integration("S", "sync").await;
    assert_eq!(integration["queued"], 2, "{integration}");

    let text = std::fs::read_to_string(&daemon.config).unwrap();
    std::fs::write(
        &daemon.config,
        text.replace("qty = \"qty_text\"", "qty = \"qty\""),
    )
    .unwrap();
    let out = daemon.cli(&["site", "reload", "S"]);
    assert!(out.status.success(), "{out:?}");
    let out = daemon.cli(&["tx", "retry", "S", "sync", "1"]);
    assert!(out.status.success(), "{out:?}");
    eventually(20, "all three delivered after the repair", || async {
        delivered().await == 3 && daemon.integration("S", "sync").await["queued"] == 0
    })
    .await;
    assert!(daemon.integration("S", "sync").await["blocked"].is_null());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_refuses_a_wrongly_mapped_row_until_the_map_is_fixed() {
    let db = PgDb::new().await;
    db.exec("CREATE TABLE contacts (id bigint PRIMARY KEY, name text NOT NULL, qty integer)")
        .await;
    let dir = tempfile::tempdir().unwrap();
    let dst = format!(
        "kind = \"postgres\"\nurl = \"{}\"\ntable = \"contacts\"\nkey = [\"id\"]\nmode = \"upsert\"",
        db.url
    );
    let daemon = Daemon::start(dir.path(), &site(&dst)).await;
    refuse_then_repair(&daemon, || db.count("SELECT * FROM contacts"), "integer").await;
    let rows = db.json("SELECT id, qty FROM contacts ORDER BY id").await;
    assert_eq!(
        rows,
        [
            json!({"id": 1, "qty": 10}),
            json!({"id": 2, "qty": 20}),
            json!({"id": 3, "qty": 30})
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_refuses_a_wrongly_mapped_row_until_the_map_is_fixed() {
    let db = MyDb::new().await;
    db.exec("CREATE TABLE contacts (id BIGINT PRIMARY KEY, name TEXT NOT NULL, qty INT)")
        .await;
    let dir = tempfile::tempdir().unwrap();
    let dst = format!(
        "kind = \"mysql\"\nurl = \"{}\"\ntable = \"contacts\"\nkey = [\"id\"]\nmode = \"upsert\"",
        db.url
    );
    let daemon = Daemon::start(dir.path(), &site(&dst)).await;
    refuse_then_repair(&daemon, || db.count("SELECT * FROM contacts"), "qty").await;
    let qty = db.column("SELECT qty FROM contacts ORDER BY id").await;
    assert_eq!(
        qty,
        [Some("10".into()), Some("20".into()), Some("30".into())]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_refuses_a_wrongly_mapped_record_until_the_map_is_fixed() {
    // The test target refuses a record with 422 while it has "reject".
    let target = Target::start().await;
    let dir = tempfile::tempdir().unwrap();
    let dst = format!("kind = \"http\"\nurl = \"{}\"", target.url());
    let toml = site(&dst).replace(
        "qty = \"qty_text\"",
        "qty = \"qty_text\", reject = { value = true }",
    );
    let daemon = Daemon::start(dir.path(), &toml).await;
    let count = || async { target.count() as i64 };
    for id in 1..=3 {
        let record = json!({"id": id, "name": format!("n{id}"), "qty": id * 10, "qty_text": "ten"});
        daemon.hook("S", "sync", "contacts", record).await;
    }
    blocked_at(&daemon, 1).await;
    assert_eq!(count().await, 0);
    // The fix maps the right field and drops the constant the API refuses.
    let text = std::fs::read_to_string(&daemon.config).unwrap();
    let fixed = text.replace(
        "qty = \"qty_text\", reject = { value = true }",
        "qty = \"qty\"",
    );
    assert_ne!(fixed, text);
    std::fs::write(&daemon.config, fixed).unwrap();
    let out = daemon.cli(&["site", "reload", "S"]);
    assert!(out.status.success(), "{out:?}");
    let out = daemon.cli(&["tx", "retry", "S", "sync", "1"]);
    assert!(out.status.success(), "{out:?}");
    eventually(20, "all three delivered after the repair", || async {
        count().await == 3
    })
    .await;
    assert_eq!(target.field("qty"), [json!(10), json!(20), json!(30)]);
}
