//! `sluice store copy`: a stopped site moved from its SQLite file into the
//! PostgreSQL store, and a daemon on PostgreSQL carrying on where the one on
//! SQLite left off. Needs PostgreSQL (`SLUICE_TEST_PG_URL`).

mod common;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Instant;

use axum::http::StatusCode;
use common::pg::PgDb;
use common::*;
use serde_json::{json, Value};

/// The site of [`webhook_site`] (batch 1) kept in SQLite, with `orders`
/// skipping what the target refuses.
fn sqlite_site(target: &Target) -> String {
    "store = \"sqlite\"\n".to_string()
        + &webhook_site(target, 1).replace(
            "[sites.LIVE.integrations.orders]\n",
            "[sites.LIVE.integrations.orders]\non_error = \"skip\"\n",
        )
}

/// `url` with a password (trust authentication takes any): one to look
/// for in what is printed.
fn with_password(url: &str, password: &str) -> String {
    let mut u = reqwest::Url::parse(url).unwrap();
    u.set_username("postgres").unwrap();
    u.set_password(Some(password)).unwrap();
    u.to_string()
}

/// `sluice store copy --config CONFIG --site SITE --to postgres`, with the
/// environment variables `env` set (and `SLUICE_STORE_URL` only if given).
fn store_copy(config: &Path, site: &str, env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.args(["store", "copy", "--config"])
        .arg(config)
        .args(["--site", site, "--to", "postgres"])
        .env_remove("SLUICE_STORE_URL")
        .stdin(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("the sluice CLI runs")
}

fn said(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Every transaction of the integration, as the API shows them, oldest
/// first.
async fn transactions(daemon: &Daemon, integration: &str) -> Vec<Value> {
    let (status, v) = daemon
        .get(&format!(
            "/api/v1/sites/LIVE/integrations/{integration}/transactions?limit=1000"
        ))
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let mut list = v.as_array().unwrap().clone();
    list.reverse();
    list
}

/// The site's audit trail, newest first, without the ids (PostgreSQL gives
/// new ones).
async fn audit(daemon: &Daemon) -> Vec<Value> {
    let (status, v) = daemon.get("/api/v1/sites/LIVE/audit?limit=1000").await;
    assert_eq!(status, StatusCode::OK, "{v}");
    v.as_array()
        .unwrap()
        .iter()
        .map(|a| {
            let mut a = a.clone();
            a.as_object_mut().unwrap().remove("id");
            a
        })
        .collect()
}

/// What an operator sees of an integration that a store keeps.
async fn kept(daemon: &Daemon, name: &str) -> Value {
    let v = daemon.integration("LIVE", name).await;
    json!({"state": v["state"], "queued": v["queued"], "holds": v["holds"]})
}

/// The whole way: a site on SQLite with a paused integration, an Error
/// and a pruned Ignored transaction, stopped and copied; a daemon on
/// PostgreSQL brings it back stopped with the same queue, states, log and
/// audit trail, delivers the queue in order with the same sequence numbers
/// when started and resumed, and gives a new record the next number.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_site_copied_to_postgresql_carries_on_where_it_stopped() {
    let db = PgDb::new().await;
    let target = Target::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut daemon = Daemon::start(dir.path(), &sqlite_site(&target)).await;

    // seqs 1, 2, 4 sent; 3 refused by the target: Error (skipped).
    for n in 1..=4 {
        let mut record = order(n);
        if n == 3 {
            record["reject"] = json!(true);
        }
        let (status, _) = daemon.hook("LIVE", "orders", "web", record).await;
        assert_eq!(status, StatusCode::ACCEPTED);
    }
    eventually(20, "1, 2 and 4 delivered, 3 in error", || async {
        target.count() == 3
            && transactions(&daemon, "orders")
                .await
                .iter()
                .any(|t| t["seq"] == 3 && t["state"] == "error")
    })
    .await;
    // Paused: 5..=12 queued; 12 ignored, the highest number given out.
    let (status, v) = daemon
        .post(
            "/api/v1/sites/LIVE/integrations/orders/pause",
            json!({"reason": "moving to PostgreSQL"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    for n in 5..=12 {
        let (status, _) = daemon.hook("LIVE", "orders", "web", order(n)).await;
        assert_eq!(status, StatusCode::ACCEPTED);
    }
    let (status, v) = daemon
        .post(
            "/api/v1/sites/LIVE/integrations/orders/transactions/12/ignore",
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let (status, v) = daemon
        .post("/api/v1/sites/LIVE/stop", json!({"reason": "moving"}))
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["state"], "stopped");

    let before_tx = transactions(&daemon, "orders").await;
    let before_audit = audit(&daemon).await;
    let before_log = daemon.log("LIVE").await;
    let before_orders = kept(&daemon, "orders").await;
    assert_eq!(before_orders["queued"], 7, "{before_orders}");
    daemon.kill();

    // What the hourly prune does: Sent and Ignored gone, 12 with them.
    {
        use sluice::store::Store;
        let file = dir.path().join("data").join("LIVE.db");
        let store = sluice::store::SqliteStore::open(&file).unwrap();
        assert_eq!(store.prune(i64::MAX).await.unwrap(), 4);
    }
    let left: Vec<Value> = before_tx
        .iter()
        .filter(|t| t["state"] == "queued" || t["state"] == "error")
        .cloned()
        .collect();
    assert_eq!(left.len(), 8);

    // The configuration on PostgreSQL: its URL from the variable it names.
    let var = format!("SLUICE_T_COPY_URL_{}", std::process::id());
    let secret = format!("pw-{}", std::process::id());
    let url = with_password(&db.url, &secret);
    let sqlite_config = std::fs::read_to_string(dir.path().join("sluice.toml")).unwrap();
    let pg_config = dir.path().join("sluice-pg.toml");
    std::fs::write(
        &pg_config,
        sqlite_config.replace(
            "store = \"sqlite\"\n",
            &format!("store = \"postgres\"\nstore_url_env = \"{var}\"\n"),
        ),
    )
    .unwrap();

    let out = store_copy(&pg_config, "LIVE", &[(&var, &url)]);
    assert!(out.status.success(), "{}", said(&out));
    let printed = said(&out);
    assert!(!printed.contains(&secret), "{printed}");
    let line = String::from_utf8_lossy(&out.stdout);
    eprintln!("{line}");
    assert!(
        line.starts_with(
            "copied site LIVE: 8 transactions (7 queued, 0 sent, 1 error, 0 ignored), 1 sequence,"
        ),
        "{line}"
    );
    assert!(
        line.lines().count() == 1 && line.trim_end().ends_with(" audit entries"),
        "one line, every kind: {line}"
    );
    assert_eq!(
        db.json("SELECT integration, last_seq FROM sluice_sequences WHERE site = 'LIVE'")
            .await,
        [json!({"integration": "orders", "last_seq": 12})],
        "the highest number given out, though pruned"
    );

    // A daemon on PostgreSQL, same files otherwise.
    std::env::set_var(&var, &url);
    let daemon = Daemon::start_file(dir.path(), &pg_config, Options::default()).await;
    let (_, site) = daemon.get("/api/v1/sites/LIVE").await;
    assert_eq!(site["state"], "stopped", "{site}");
    assert_eq!(site["stop_reason"], "moving", "{site}");
    assert_eq!(kept(&daemon, "orders").await, before_orders);
    assert_eq!(transactions(&daemon, "orders").await, left);
    let log = daemon.log("LIVE").await;
    assert!(
        log.starts_with(&before_log),
        "the log goes on after the copied lines:\n{before_log}\n---\n{log}"
    );
    let after_audit = audit(&daemon).await;
    let copy_at = after_audit
        .iter()
        .position(|a| a["action"] == "store.copy")
        .expect("the copy is audited");
    let entry = &after_audit[copy_at];
    assert_eq!(entry["subject"], "LIVE", "{entry}");
    assert_eq!(entry["outcome"], "ok", "{entry}");
    assert!(
        entry["actor"].as_str().unwrap().ends_with("@cli"),
        "{entry}"
    );
    assert_eq!(after_audit[copy_at + 1..], before_audit[..]);
    assert!(!log.contains(&secret) && !entry.to_string().contains(&secret));

    // Started and resumed: 5..=11 in order, with the numbers they had.
    let (status, v) = daemon.post("/api/v1/sites/LIVE/start", json!({})).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let (status, v) = daemon
        .post("/api/v1/sites/LIVE/integrations/orders/resume", json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    eventually(20, "the queue delivered", || async { target.count() >= 10 }).await;
    let delivered: Vec<(String, Value)> = target.received()[3..]
        .iter()
        .map(|r| (r.key.clone(), r.record["n"].clone()))
        .collect();
    let expected: Vec<(String, Value)> = (5..=11)
        .map(|n| (format!("LIVE:orders:{n}"), json!(n)))
        .collect();
    assert_eq!(delivered, expected);

    // A new record: the next number, not the pruned 12.
    let (status, _) = daemon.hook("LIVE", "orders", "web", order(13)).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    eventually(20, "the new record delivered", || async {
        target.count() == 11
    })
    .await;
    assert_eq!(target.received()[10].key, "LIVE:orders:13");
    // What may be done to it follows the integration's state, now active.
    let without_actions = |t: &Value| {
        let mut t = t.clone();
        t.as_object_mut().unwrap().remove("actions");
        t
    };
    let (_, error) = daemon
        .get("/api/v1/sites/LIVE/integrations/orders/transactions/3")
        .await;
    assert_eq!(
        without_actions(&error),
        without_actions(&left[0]),
        "the Error transaction as it was"
    );
}

/// What is refused, with nothing written: a daemon running on the data, a
/// site not stopped, an unknown site, no URL, and a second copy; and the
/// URL's password is in no output, whatever happens.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_is_refused_unless_the_site_is_stopped_and_new_to_postgresql() {
    let db = PgDb::new().await;
    let target = Target::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut daemon = Daemon::start(dir.path(), &sqlite_site(&target)).await;
    let config = daemon.config.clone();
    let secret = format!("pw-{}", std::process::id());
    let url = with_password(&db.url, &secret);
    let env = [("SLUICE_STORE_URL", url.as_str())];
    let (status, _) = daemon.hook("LIVE", "orders", "web", order(1)).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    eventually(20, "1 delivered", || async { target.count() == 1 }).await;
    let no_sluice_tables = || async {
        db.count(
            "SELECT 1 FROM information_schema.tables \
             WHERE table_schema = current_schema() AND table_name LIKE 'sluice%'",
        )
        .await
            == 0
    };

    // The daemon runs on the data directory.
    let out = store_copy(&config, "LIVE", &env);
    assert_eq!(out.status.code(), Some(1), "{}", said(&out));
    let err = said(&out);
    assert!(
        err.contains("in use by a running sluice daemon") && err.contains("stop the daemon"),
        "{err}"
    );

    // The daemon is gone, but it left the site running.
    daemon.kill();
    let out = store_copy(&config, "LIVE", &env);
    assert_eq!(out.status.code(), Some(1), "{}", said(&out));
    let err = said(&out);
    assert!(
        err.contains("site LIVE is running")
            && err.contains("stop it first: sluice site stop LIVE"),
        "{err}"
    );
    assert!(no_sluice_tables().await, "PostgreSQL untouched");

    // No such site; no URL.
    let out = store_copy(&config, "NOPE", &env);
    assert_eq!(out.status.code(), Some(1), "{}", said(&out));
    assert!(said(&out).contains("no site 'NOPE'"), "{}", said(&out));
    let out = store_copy(&config, "LIVE", &[]);
    assert_eq!(out.status.code(), Some(2), "{}", said(&out));
    assert!(
        said(&out).contains("SLUICE_STORE_URL") && said(&out).contains("not set"),
        "{}",
        said(&out)
    );
    assert!(no_sluice_tables().await, "PostgreSQL untouched");

    // Stopped now.
    daemon.restart().await;
    let (status, v) = daemon
        .post("/api/v1/sites/LIVE/stop", json!({"reason": "moving"}))
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    daemon.kill();

    // A server that is not there: named, without the password.
    let nowhere = format!("postgres://sluice:{secret}@127.0.0.1:1/nowhere");
    let out = store_copy(&config, "LIVE", &[("SLUICE_STORE_URL", &nowhere)]);
    assert_eq!(out.status.code(), Some(1), "{}", said(&out));
    assert!(said(&out).contains("127.0.0.1:1"), "{}", said(&out));
    assert!(!said(&out).contains(&secret), "{}", said(&out));

    let out = store_copy(&config, "LIVE", &env);
    assert!(out.status.success(), "{}", said(&out));
    assert!(!said(&out).contains(&secret), "{}", said(&out));
    assert!(
        said(&out).starts_with("copied site LIVE: 1 transaction (0 queued, 1 sent"),
        "{}",
        said(&out)
    );
    let rows = "SELECT 'tx', count(*) FROM sluice_transactions WHERE site = 'LIVE'
                UNION ALL SELECT 'audit', count(*) FROM sluice_audit WHERE site = 'LIVE'
                UNION ALL SELECT 'log', count(*) FROM sluice_log WHERE site = 'LIVE'";
    let copied = db.json(rows).await;

    // Twice: refused, nothing added.
    let out = store_copy(&config, "LIVE", &env);
    assert_eq!(out.status.code(), Some(1), "{}", said(&out));
    let err = said(&out);
    assert!(
        err.contains("PostgreSQL already holds rows of site LIVE") && err.contains("never merges"),
        "{err}"
    );
    assert!(!err.contains(&secret), "{err}");
    assert_eq!(db.json(rows).await, copied);
}

/// A long queue: copied by the chunk, every row and number as it was, in
/// seconds. `SLUICE_TEST_COPY_ROWS` sets its length (default 30000; the
/// README's figure is for 1000000).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_queue_is_copied_whole_and_in_order() {
    use sluice::model::{now_millis, Hold, HoldKind};
    use sluice::store::{AuditEntry, NewRecord, SqliteStore, Store};

    let rows: i64 = std::env::var("SLUICE_TEST_COPY_ROWS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(30_000);
    let db = PgDb::new().await;
    let target = Target::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("sluice.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:0\"\ndata_dir = \"{}\"\n{}",
            dir.path().join("data").display(),
            sqlite_site(&target)
        ),
    )
    .unwrap();

    // The site's file as a daemon would leave it: a long queue, its last
    // 10 sent and pruned, a long log, stopped.
    {
        let data = dir.path().join("data");
        std::fs::create_dir_all(&data).unwrap();
        let store = SqliteStore::open(&data.join("LIVE.db")).unwrap();
        let mut seq = 0;
        while seq < rows {
            let n = (rows - seq).min(10_000);
            let records = (seq + 1..=seq + n)
                .map(|i| NewRecord {
                    key: Some(format!("o{i}")),
                    payload: json!({"id": format!("o{i}"), "n": i, "note": "tab\there"})
                        .to_string(),
                })
                .collect();
            store
                .enqueue("orders", "web", records, None, None)
                .await
                .unwrap();
            seq += n;
        }
        store
            .ack_sent("orders", rows - 9, rows, Vec::new())
            .await
            .unwrap();
        assert_eq!(store.prune(i64::MAX).await.unwrap(), 10);
        for i in 0..2500 {
            store
                .append_log(now_millis(), 4, &format!("line {i}"))
                .await
                .unwrap();
        }
        let stop = AuditEntry {
            id: 0,
            ts: now_millis(),
            actor: "tester".into(),
            action: "site.stop".into(),
            subject: "LIVE".into(),
            reason: Some("moving".into()),
            outcome: "ok".into(),
            node: None,
        };
        let hold = Hold {
            kind: HoldKind::SiteStopped,
            by: "tester".into(),
            since: now_millis(),
            reason: "moving".into(),
        };
        store
            .set_site_stopped(hold, vec!["orders".into()], stop)
            .await
            .unwrap();
    }

    let url = db.url.clone();
    let started = Instant::now();
    let out = store_copy(&config, "LIVE", &[("SLUICE_STORE_URL", &url)]);
    let took = started.elapsed();
    assert!(out.status.success(), "{}", said(&out));
    eprintln!("copied {rows} transactions in {took:?}");
    let queued = rows - 10;
    assert!(
        said(&out).starts_with(&format!(
            "copied site LIVE: {queued} transactions ({queued} queued"
        )),
        "{}",
        said(&out)
    );
    let summary = db
        .json(
            "SELECT count(*) AS n, min(seq) AS first, max(seq) AS last,
                    count(*) FILTER (WHERE key = 'o' || seq
                                       AND payload::jsonb ->> 'n' = seq::text
                                       AND payload::jsonb ->> 'note' = E'tab\\there') AS intact
               FROM sluice_transactions WHERE site = 'LIVE' AND state = 0",
        )
        .await;
    assert_eq!(
        summary,
        [json!({"n": queued, "first": 1, "last": queued, "intact": queued})]
    );
    assert_eq!(
        db.json("SELECT last_seq FROM sluice_sequences WHERE site = 'LIVE'")
            .await,
        [json!({"last_seq": rows})]
    );
    // The log in its order: new ids, increasing with the old ones.
    let out_of_order = db
        .count(
            "SELECT 1 FROM (SELECT message, lag(message) OVER (ORDER BY id) AS before
                              FROM sluice_log WHERE site = 'LIVE') t
              WHERE substr(before, 6)::int + 1 <> substr(message, 6)::int",
        )
        .await;
    assert_eq!(out_of_order, 0);
    assert_eq!(
        db.count("SELECT 1 FROM sluice_log WHERE site = 'LIVE'")
            .await,
        2500
    );
}
