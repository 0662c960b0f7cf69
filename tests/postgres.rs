//! `kind = "postgres"` against a real PostgreSQL (`SLUICE_TEST_PG_URL`,
//! default postgres://postgres@127.0.0.1:5432/test): each test makes a
//! database of its own and drops it.

mod common;
mod sql;

use common::*;
use serde_json::json;
use sql::*;

/// A source table of a dozen column types, and a target table like it.
const TABLES: &str = "
CREATE TABLE src (
    id bigint PRIMARY KEY,
    name text NOT NULL,
    qty integer,
    price numeric(14,4),
    ratio double precision,
    active boolean,
    born date,
    updated_at timestamptz NOT NULL,
    doc jsonb,
    tags text[],
    blob bytea,
    uid uuid
);
CREATE TABLE dst (LIKE src INCLUDING ALL);
";

/// Rows `from..=to`, three to a timestamp (runs of equal cursors).
fn fill(from: i64, to: i64) -> String {
    format!(
        "INSERT INTO src SELECT g, 'name ' || g, g % 100, (g * 1.2345)::numeric(14,4), g / 7.0,
            g % 2 = 0, date '2024-01-01' + g::int,
            timestamptz '2024-01-01 00:00:00.000001+00' + (g / 3) * interval '1.000001 second',
            jsonb_build_object('g', g, 'list', jsonb_build_array(1, 'two', null)),
            ARRAY['a', 'b ' || g], decode('deadbeef', 'hex'), md5(g::text)::uuid
         FROM generate_series({from}, {to}) g"
    )
}

fn endpoint(url: &str, table: &str, extra: &str) -> String {
    format!("kind = \"postgres\"\nurl = \"{url}\"\ntable = \"{table}\"\n{extra}")
}

/// What is in `src` and not, the same, in `dst`.
const MISSING: &str = "SELECT * FROM src EXCEPT SELECT * FROM dst";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_all_copies_the_table_and_send_changed_only_the_changed_rows() {
    let db = PgDb::new().await;
    db.exec(TABLES).await;
    db.exec(&fill(1, 200)).await;
    let dir = tempfile::tempdir().unwrap();
    let toml = site(
        &endpoint(&db.url, "src", "page_size = 40"),
        &endpoint(&db.url, "dst", "key = [\"id\"]\nbatch = 50"),
    );
    let daemon = Daemon::start(dir.path(), &toml).await;

    let all = run(&daemon, "all").await;
    assert_eq!(all["captured"], 200, "{all}");
    assert_eq!(db.count("SELECT * FROM dst").await, 200);
    assert_eq!(db.count(MISSING).await, 0, "every row arrives the same");

    db.exec(
        "UPDATE src SET name = 'changed ' || id, price = price + 1, updated_at = now()
         WHERE id IN (3, 50, 99, 150, 200)",
    )
    .await;
    let changed = run(&daemon, "changed").await;
    assert_eq!(changed["captured"], 5, "only the changed rows: {changed}");
    assert_eq!(db.count(MISSING).await, 0);
    assert_eq!(db.count("SELECT * FROM dst").await, 200);

    let again = run(&daemon, "changed").await;
    assert_eq!(again["captured"], 0, "nothing changed since: {again}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn types_round_trip_and_read_as_documented_json() {
    let db = PgDb::new().await;
    db.exec(
        "CREATE TABLE src (
            id int PRIMARY KEY, updated_at timestamptz, price numeric(20,6), doc json,
            docb jsonb, flag boolean, born date, local timestamp, blob bytea, uid uuid,
            tags int[], note text, ratio float8, big bigint
         );
         CREATE TABLE dst (LIKE src INCLUDING ALL);
         INSERT INTO src VALUES (1, '2024-05-06 07:08:09.123456+02', 12345678901234.000001,
            '{\"a\":[1,2]}', '{\"b\":null}', true, '2024-02-29', '2024-01-01 10:00:00.5',
            '\\xdeadbeef', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '{1,NULL,3}', NULL, 0.25,
            9007199254740993);
         INSERT INTO src (id, updated_at, flag) VALUES (2, '2024-05-06 07:08:09.123457+02', false);",
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let toml = site(
        &endpoint(&db.url, "src", ""),
        &endpoint(&db.url, "dst", "key = [\"id\"]"),
    );
    let daemon = Daemon::start(dir.path(), &toml).await;
    run(&daemon, "all").await;

    let (_, tx) = daemon
        .get("/api/v1/sites/S/integrations/sync/transactions/1")
        .await;
    assert_eq!(
        tx["record"],
        json!({
            "id": 1,
            "updated_at": "2024-05-06T05:08:09.123456Z",
            "price": "12345678901234.000001",
            "doc": {"a": [1, 2]},
            "docb": {"b": null},
            "flag": true,
            "born": "2024-02-29",
            "local": "2024-01-01T10:00:00.500000Z",
            "blob": "\\xdeadbeef",
            "uid": "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
            "tags": [1, null, 3],
            "note": null,
            "ratio": 0.25,
            "big": 9007199254740993_i64,
        }),
        "{tx}"
    );
    // json has no equality: compared as jsonb.
    let cols = "id, updated_at, price, doc::jsonb, docb, flag, born, local, blob, uid, tags, \
                note, ratio, big";
    assert_eq!(
        db.count(&format!(
            "SELECT {cols} FROM src EXCEPT SELECT {cols} FROM dst"
        ))
        .await,
        0
    );
    assert_eq!(db.count("SELECT * FROM dst").await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_halted_by_a_site_stop_is_resumed_by_the_next_without_loss_or_repeat() {
    let db = PgDb::new().await;
    db.exec(TABLES).await;
    db.exec(&fill(1, 3000)).await;
    let dir = tempfile::tempdir().unwrap();
    let toml = site(
        &endpoint(&db.url, "src", "page_size = 50\npace = \"30ms\""),
        &endpoint(&db.url, "dst", "key = [\"id\"]\nbatch = 100"),
    );
    let daemon = Daemon::start(dir.path(), &toml).await;

    start_run(&daemon, "changed").await;
    eventually_seen(
        20,
        "the run has queued some pages",
        || async { daemon.flow("S", "rows").await },
        |flow| flow["last_run"]["captured"].as_i64() >= Some(200),
    )
    .await;
    let (status, site) = daemon
        .post("/api/v1/sites/S/stop", json!({"reason": "stocktake"}))
        .await;
    assert_eq!(status.as_u16(), 200, "{site}");
    let flow = daemon.flow("S", "rows").await;
    assert_eq!(flow["last_run"]["result"], "halted", "{flow}");
    let first = flow["last_run"]["captured"].as_i64().unwrap();
    assert!((200..3000).contains(&first), "halted mid-run: {first}");

    let (status, _) = daemon.post("/api/v1/sites/S/start", json!({})).await;
    assert_eq!(status.as_u16(), 200);
    let second = run(&daemon, "changed").await["captured"].as_i64().unwrap();
    assert_eq!(first + second, 3000, "no row read twice or skipped");
    assert_eq!(db.count("SELECT * FROM dst").await, 3000);
    assert_eq!(db.count(MISSING).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_target_holds_the_integration_and_is_drained_in_order_when_back() {
    let db = PgDb::new().await;
    db.exec(TABLES).await;
    db.exec("ALTER TABLE dst ADD COLUMN arrival bigserial")
        .await;
    db.exec(&fill(1, 20)).await;
    let proxy = Proxy::start(&db.url).await;
    let dir = tempfile::tempdir().unwrap();
    let toml = site(
        &endpoint(&db.url, "src", "page_size = 10"),
        &endpoint(
            &with_port(&db.url, proxy.port),
            "dst",
            "key = [\"id\"]\nbatch = 5",
        ),
    );
    let daemon = Daemon::start(dir.path(), &toml).await;
    run(&daemon, "all").await;
    assert_eq!(db.count("SELECT * FROM dst").await, 20);

    proxy.stop().await;
    db.exec(&fill(21, 60)).await;
    start_run(&daemon, "changed").await;
    eventually(20, "the endpoint-offline hold", || async {
        hold_kinds(&daemon.integration("S", "sync").await) == ["endpoint-offline"]
    })
    .await;
    let (_, dst) = daemon.get("/api/v1/sites/S/endpoints/dst").await;
    assert_eq!(dst["state"], "offline", "{dst}");
    eventually(20, "the run queued everything", || async {
        daemon.flow("S", "rows").await["last_run"]["captured"] == 40
    })
    .await;
    assert_eq!(db.count("SELECT * FROM dst").await, 20, "nothing passes");

    proxy.restart().await;
    eventually(30, "all 60 rows there", || async {
        daemon.integration("S", "sync").await["queued"] == 0
    })
    .await;
    let ids: Vec<i64> = db
        .json("SELECT id FROM dst ORDER BY arrival")
        .await
        .iter()
        .map(|r| r["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, (1..=60).collect::<Vec<_>>(), "in order, none lost");
    let (_, dst) = daemon.get("/api/v1/sites/S/endpoints/dst").await;
    assert_eq!(dst["state"], "online", "{dst}");
    assert!(hold_kinds(&daemon.integration("S", "sync").await).is_empty());
}

/// Tables without an array column are written by COPY: every value must
/// arrive as the JSON statement writes it, upserts must update, and a
/// column added to both tables meanwhile must be written too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_copied_into_the_table_arrive_the_same_and_upserts_update_them() {
    let db = PgDb::new().await;
    db.exec(
        "CREATE TABLE src (
            id bigint PRIMARY KEY, name text NOT NULL, qty int, price numeric(30,10),
            ratio float8, flag boolean, born date, updated_at timestamptz NOT NULL, local timestamp,
            doc jsonb, raw json, blob bytea, uid uuid, note varchar(40)
         );
         CREATE TABLE dst (LIKE src INCLUDING ALL);
         INSERT INTO src SELECT g, E'tab\\there\\\\back\\nline é ' || g, g,
            12345678901234567890.0123456789 + g, g / 3.0, g % 2 = 0, date '2024-02-29' + g,
            timestamptz '2024-01-01 00:00:00.000001+00' + g * interval '1 second',
            timestamp '2024-01-01 10:00:00.5', jsonb_build_object('g', g, 's', E'a\\tb'),
            '[1, \"two\", null]', decode('00ff5c0a', 'hex'), md5(g::text)::uuid,
            CASE WHEN g % 3 = 0 THEN NULL ELSE 'n' || g END
         FROM generate_series(1, 120) g;",
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let toml = site(
        &endpoint(&db.url, "src", "page_size = 50"),
        &endpoint(&db.url, "dst", "key = [\"id\"]\nbatch = 40"),
    );
    let daemon = Daemon::start(dir.path(), &toml).await;
    let all = run(&daemon, "all").await;
    assert_eq!(all["captured"], 120, "{all}");
    // json has no equality: compared as jsonb.
    let missing =
        "SELECT id, name, qty, price, ratio, flag, born, updated_at, local, doc, raw::jsonb,
                   blob, uid, note FROM src
                   EXCEPT SELECT id, name, qty, price, ratio, flag, born, updated_at, local, doc,
                   raw::jsonb, blob, uid, note FROM dst";
    assert_eq!(db.count(missing).await, 0, "every value arrives the same");
    // A first load goes by COPY straight into the table: none through the
    // session's staging table (a backend reports the statistics of all its
    // tables at once, when its connection is idle, within ten seconds).
    let inserted = |table: &'static str| {
        let db = &db;
        async move {
            let sql = format!("SELECT n_tup_ins FROM pg_stat_all_tables WHERE relname = '{table}'");
            db.json(&sql)
                .await
                .first()
                .map(|r| r["n_tup_ins"].to_string())
        }
    };
    eventually(30, "the first load's statistics", || async {
        inserted("dst").await.as_deref() == Some("120")
    })
    .await;
    assert_eq!(inserted("sluice_stage").await.as_deref(), Some("0"));

    db.exec(
        "ALTER TABLE src ADD COLUMN extra text; ALTER TABLE dst ADD COLUMN extra text;
         UPDATE src SET qty = -qty, extra = 'x' || id, updated_at = now() WHERE id % 10 = 0;
         INSERT INTO src (id, name, updated_at, extra) SELECT g, 'new', now(), 'x' || g
            FROM generate_series(121, 125) g",
    )
    .await;
    // Changed rows and new ones in one batch: the COPY straight into the
    // table meets a key already there, so the batch is upserted instead.
    let changed = run(&daemon, "changed").await;
    assert_eq!(changed["captured"], 17, "{changed}");
    // The staging table was made anew for the column added since.
    eventually(30, "17 rows through the staging table", || async {
        inserted("sluice_stage").await.as_deref() == Some("17")
    })
    .await;
    assert_eq!(
        db.count(missing).await,
        0,
        "the changed and new rows are written"
    );
    assert_eq!(
        db.count("SELECT * FROM dst WHERE extra = 'x' || id AND qty < 0")
            .await,
        12,
        "the column added since is written"
    );
    assert_eq!(db.count("SELECT * FROM dst").await, 125);
}

/// `mode = "insert"` copies the rows straight into the table; a row sent
/// again (a second 'Send All') violates the key and is refused for good
/// with the database's message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn insert_mode_writes_new_rows_and_a_repeated_key_is_refused() {
    let db = PgDb::new().await;
    db.exec(
        "CREATE TABLE src (id int PRIMARY KEY, name text, updated_at int NOT NULL);
         CREATE TABLE dst (LIKE src INCLUDING ALL);
         INSERT INTO src SELECT g, E'n\\t' || g, g FROM generate_series(1, 30) g;",
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let toml = site(
        &endpoint(&db.url, "src", ""),
        &endpoint(&db.url, "dst", "mode = \"insert\"\nbatch = 10"),
    );
    let daemon = Daemon::start(dir.path(), &toml).await;
    run(&daemon, "all").await;
    assert_eq!(
        db.count("SELECT * FROM src EXCEPT SELECT * FROM dst").await,
        0
    );
    assert_eq!(db.count("SELECT * FROM dst").await, 30);

    start_run(&daemon, "all").await;
    let error = blocked_at(&daemon, 31).await;
    assert!(
        error.contains("duplicate key") && error.contains("23505"),
        "the database's own message: {error}"
    );
    assert_eq!(db.count("SELECT * FROM dst").await, 30, "nothing twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_row_blocks_the_queue_until_the_table_is_fixed_and_it_is_retried() {
    let db = PgDb::new().await;
    db.exec(
        "CREATE TABLE src (id int PRIMARY KEY, qty text, updated_at int NOT NULL);
         CREATE TABLE dst (id int PRIMARY KEY, qty integer, updated_at int NOT NULL);
         INSERT INTO src VALUES (1, '1', 1), (2, 'lots', 2), (3, '3', 3);",
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let toml = site(
        &endpoint(&db.url, "src", ""),
        &endpoint(&db.url, "dst", "key = [\"id\"]\nbatch = 10"),
    );
    let daemon = Daemon::start(dir.path(), &toml).await;
    start_run(&daemon, "all").await;
    let error = blocked_at(&daemon, 2).await;
    assert!(
        error.contains("invalid input syntax for type integer") && error.contains("22P02"),
        "the database's own message: {error}"
    );
    assert_eq!(
        db.json("SELECT id FROM dst").await,
        [json!({"id": 1})],
        "the row after it waits"
    );

    db.exec("ALTER TABLE dst ALTER COLUMN qty TYPE text").await;
    let out = daemon.cli(&["tx", "retry", "S", "sync", "2"]);
    assert!(out.status.success(), "{out:?}");
    eventually(20, "all three rows there", || async {
        daemon.integration("S", "sync").await["queued"] == 0
    })
    .await;
    assert_eq!(db.count("SELECT * FROM dst").await, 3);
    assert!(daemon.integration("S", "sync").await["blocked"].is_null());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_password_comes_from_password_env_and_is_never_shown() {
    let db = PgDb::new().await;
    let role = unique("sluice_r");
    let secret = format!("pg-s3cret-{}", std::process::id());
    db.exec(&format!(
        "CREATE ROLE {role} LOGIN PASSWORD '{secret}';
         CREATE TABLE src (id int PRIMARY KEY, updated_at int NOT NULL);
         CREATE TABLE dst (LIKE src INCLUDING ALL);
         GRANT ALL ON src, dst TO {role};
         INSERT INTO src SELECT g, g FROM generate_series(1, 10) g;"
    ))
    .await;
    let var = format!("SLUICE_T_PG_PW_{}", std::process::id());
    // Only this test reads or writes this variable.
    std::env::set_var(&var, &secret);
    let mut url = reqwest::Url::parse(&db.url).unwrap();
    url.set_username(&role).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let toml = site(
        &endpoint(url.as_str(), "src", &format!("password_env = \"{var}\"")),
        &endpoint(
            url.as_str(),
            "dst",
            &format!("key = [\"id\"]\npassword_env = \"{var}\""),
        ),
    ) + &format!(
        "\n[sites.S.endpoints.unset]\n{}",
        endpoint(
            url.as_str(),
            "dst",
            "password_env = \"SLUICE_T_NO_SUCH_VARIABLE\""
        )
    );
    let daemon = Daemon::start_opts(
        dir.path(),
        &toml,
        Options {
            capture: true,
            ..Options::default()
        },
    )
    .await;
    run(&daemon, "all").await;
    assert_eq!(db.count("SELECT * FROM dst").await, 10);

    let (_, unset) = daemon
        .post("/api/v1/sites/S/endpoints/unset/test", json!({}))
        .await;
    assert!(
        unset.to_string().contains("SLUICE_T_NO_SUCH_VARIABLE"),
        "names the variable: {unset}"
    );
    let (_, dst) = daemon
        .post("/api/v1/sites/S/endpoints/dst/test", json!({}))
        .await;
    assert!(dst.to_string().contains("SELECT 1"), "{dst}");

    let mut seen = String::new();
    for path in [
        "/api/v1/sites/S",
        "/api/v1/sites/S/endpoints",
        "/api/v1/sites/S/endpoints/src",
        "/api/v1/sites/S/endpoints/dst",
        "/api/v1/sites/S/endpoints/unset",
        "/api/v1/sites/S/flows/rows",
        "/api/v1/sites/S/integrations/sync",
        "/api/v1/sites/S/audit",
    ] {
        seen.push_str(&daemon.get(path).await.1.to_string());
    }
    seen.push_str(&daemon.log("S").await);
    seen.push_str(&daemon.output());
    assert!(!seen.contains(&secret), "the password shows somewhere");

    // A password in the url is refused at the start, and not repeated.
    let bad = dir.path().join("bad.toml");
    let mut with_pw = reqwest::Url::parse(&db.url).unwrap();
    with_pw.set_password(Some(&secret)).unwrap();
    std::fs::write(
        &bad,
        format!(
            "listen = \"127.0.0.1:0\"\ndata_dir = \"{}\"\n{}",
            dir.path().join("data2").display(),
            site(
                &endpoint(with_pw.as_str(), "src", ""),
                &endpoint(&db.url, "dst", "key = [\"id\"]")
            )
        ),
    )
    .unwrap();
    let out = std::process::Command::new(BIN)
        .args(["serve", "--config"])
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("password_env"), "{err}");
    assert!(!err.contains(&secret), "{err}");
    db.exec(&format!("DROP OWNED BY {role}; DROP ROLE {role}"))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_source_gets_the_checkpoint_as_cursor_null_before_the_first() {
    let db = PgDb::new().await;
    db.exec(TABLES).await;
    db.exec(&fill(1, 30)).await;
    let dir = tempfile::tempdir().unwrap();
    let query = "SELECT id, name, updated_at FROM src \
                 WHERE id % 2 = 0 AND ($cursor IS NULL OR updated_at > $cursor)";
    let toml = site(
        &format!(
            "kind = \"postgres\"\nurl = \"{}\"\nquery = \"{query}\"\npage_size = 4",
            db.url
        ),
        &endpoint(&db.url, "dst", "key = [\"id\"]"),
    );
    let daemon = Daemon::start(dir.path(), &toml).await;
    db.exec("ALTER TABLE dst ALTER COLUMN name DROP NOT NULL")
        .await;
    let first = run(&daemon, "changed").await;
    assert_eq!(first["captured"], 15, "{first}");
    db.exec("UPDATE src SET name = 'again', updated_at = now() WHERE id IN (4, 5, 6)")
        .await;
    let second = run(&daemon, "changed").await;
    assert_eq!(
        second["captured"], 2,
        "only the even changed rows: {second}"
    );
    assert_eq!(db.count("SELECT * FROM dst WHERE name = 'again'").await, 2);
    let all = run(&daemon, "all").await;
    assert_eq!(all["captured"], 15, "'Send All': the checkpoint is NULL");
}
