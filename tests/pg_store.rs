//! `store = "postgres"`: a daemon keeping its sites' queues and states in
//! PostgreSQL instead of SQLite files. Needs `SLUICE_TEST_PG_URL`.

mod common;
mod sql;

use common::*;
use serde_json::json;
use sql::PgDb;

/// A webhook to an HTTP target, on a store in PostgreSQL: records queue in
/// the database, a pause and its queue survive a SIGKILL, and the store's
/// password is never shown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_on_a_postgresql_store_keeps_queue_and_states_across_a_kill() {
    let db = PgDb::new().await;
    let target = Target::start().await;
    // Trust authentication takes any password: one to look for.
    let secret = format!("pw-{}", std::process::id());
    let mut url = reqwest::Url::parse(&db.url).unwrap();
    url.set_password(Some(&secret)).unwrap();
    let var = format!("SLUICE_T_STORE_URL_{}", std::process::id());
    std::env::set_var(&var, url.as_str());
    let toml =
        format!("store = \"postgres\"\nstore_url_env = \"{var}\"\n") + &webhook_site(&target, 5);
    let dir = tempfile::tempdir().unwrap();
    let mut daemon = Daemon::start_opts(
        dir.path(),
        &toml,
        Options {
            capture: true,
            ..Options::default()
        },
    )
    .await;

    for id in 1..=20 {
        let (status, _) = daemon
            .hook("LIVE", "orders", "web", json!({"id": id}))
            .await;
        assert_eq!(status.as_u16(), 202);
    }
    eventually(20, "20 records delivered", || async {
        target.received().len() == 20
    })
    .await;

    let out = daemon.cli(&["integration", "pause", "LIVE", "orders"]);
    assert!(out.status.success(), "{out:?}");
    for id in 21..=30 {
        daemon
            .hook("LIVE", "orders", "web", json!({"id": id}))
            .await;
    }
    assert_eq!(
        db.count("SELECT * FROM sluice_transactions WHERE site = 'LIVE' AND state = 0")
            .await,
        10,
        "the queue is in the database"
    );
    assert!(
        !dir.path().join("data").join("LIVE.db").exists(),
        "no SQLite file for the site"
    );

    daemon.restart().await;
    let orders = daemon.integration("LIVE", "orders").await;
    assert_eq!(orders["state"], "paused", "{orders}");
    assert_eq!(orders["queued"], 10, "{orders}");
    let out = daemon.cli(&["integration", "resume", "LIVE", "orders", "--detach"]);
    assert!(out.status.success(), "{out:?}");
    eventually(20, "all 30 delivered", || async {
        target.received().len() >= 30
    })
    .await;
    let ids: Vec<i64> = target
        .received()
        .iter()
        .map(|r| r.record["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, (1..=30).collect::<Vec<_>>(), "each once, in order");

    let mut seen = daemon.output();
    for path in [
        "/api/v1/sites/LIVE",
        "/api/v1/sites/LIVE/audit",
        "/api/v1/status",
    ] {
        seen.push_str(&daemon.get(path).await.1.to_string());
    }
    seen.push_str(&daemon.log("LIVE").await);
    assert!(!seen.contains(&secret), "the store's password shows");
}

/// A store the daemon cannot open stops the start with a message that
/// names what to fix, and no password.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unset_or_unreachable_store_url_stops_the_start_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let target = Target::start().await;
    let var = format!("SLUICE_T_NO_STORE_{}", std::process::id());
    let serve = |toml: String| {
        let config = dir.path().join("sluice.toml");
        std::fs::write(
            &config,
            format!(
                "listen = \"127.0.0.1:0\"\ndata_dir = \"{}\"\n{toml}",
                dir.path().join("data").display()
            ),
        )
        .unwrap();
        std::process::Command::new(BIN)
            .args(["serve", "--config"])
            .arg(&config)
            .output()
            .unwrap()
    };
    let site = webhook_site(&target, 1);
    let out = serve(format!(
        "store = \"postgres\"\nstore_url_env = \"{var}\"\n{site}"
    ));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&var) && err.contains("not set"), "{err}");

    std::env::set_var(&var, "postgres://sluice:hunter2@127.0.0.1:1/nowhere");
    let out = serve(format!(
        "store = \"postgres\"\nstore_url_env = \"{var}\"\n{site}"
    ));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("LIVE") && err.contains("PostgreSQL"), "{err}");
    assert!(!err.contains("hunter2"), "{err}");

    let out = serve(format!("store = \"mongo\"\n{site}"));
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("sluice.toml:3") && err.contains("store") && err.contains("mongo"),
        "file:line:key: {err}"
    );
}
