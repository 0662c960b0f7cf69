//! `kind = "mysql"` against a real MariaDB/MySQL (`SLUICE_TEST_MYSQL_URL`,
//! default mysql://root@127.0.0.1:3306/test), and PostgreSQL to MySQL:
//! each test makes a database of its own and drops it.

mod common;
mod sql;

use common::*;
use serde_json::{json, Value};
use sql::*;

const SRC: &str = "CREATE TABLE src (
    id BIGINT PRIMARY KEY,
    name VARCHAR(100) NOT NULL,
    qty INT,
    price DECIMAL(14,4),
    ratio DOUBLE,
    active BOOLEAN,
    born DATE,
    updated_at DATETIME(6) NOT NULL,
    doc JSON,
    bin VARBINARY(16),
    INDEX (updated_at)
)";

/// 0 to 9, for numbers up to 9999.
const DIGITS: &str = "(SELECT 0 d UNION ALL SELECT 1 UNION ALL SELECT 2 UNION ALL SELECT 3 \
    UNION ALL SELECT 4 UNION ALL SELECT 5 UNION ALL SELECT 6 UNION ALL SELECT 7 \
    UNION ALL SELECT 8 UNION ALL SELECT 9)";

/// Rows `from..=to`, three to a timestamp (runs of equal cursors).
fn fill(from: i64, to: i64) -> String {
    format!(
        "INSERT INTO src SELECT g, CONCAT('name ', g), g % 100, g * 1.2345, g / 7, g % 2 = 0,
            DATE_ADD('2024-01-01', INTERVAL g DAY),
            TIMESTAMPADD(MICROSECOND, (g DIV 3) * 1000001, '2024-01-01 00:00:00.000001'),
            JSON_OBJECT('g', g, 'list', JSON_ARRAY(1, 'two', NULL)), UNHEX('DEADBEEF')
         FROM (SELECT a.d + 10 * b.d + 100 * c.d + 1000 * e.d AS g
               FROM {DIGITS} a, {DIGITS} b, {DIGITS} c, {DIGITS} e) AS n
         WHERE g BETWEEN {from} AND {to}"
    )
}

fn endpoint(url: &str, table: &str, extra: &str) -> String {
    format!("kind = \"mysql\"\nurl = \"{url}\"\ntable = \"{table}\"\n{extra}")
}

const MISSING: &str = "SELECT * FROM src EXCEPT SELECT * FROM dst";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_all_copies_the_table_and_send_changed_only_the_changed_rows() {
    let db = MyDb::new().await;
    db.exec(SRC).await;
    db.exec("CREATE TABLE dst LIKE src").await;
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
        "UPDATE src SET name = CONCAT('changed ', id), price = price + 1,
            updated_at = NOW(6) WHERE id IN (3, 50, 99, 150, 200)",
    )
    .await;
    let changed = run(&daemon, "changed").await;
    assert_eq!(changed["captured"], 5, "only the changed rows: {changed}");
    assert_eq!(db.count(MISSING).await, 0);

    let again = run(&daemon, "changed").await;
    assert_eq!(again["captured"], 0, "nothing changed since: {again}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_rows_arrive_in_mysql() {
    let pg = PgDb::new().await;
    pg.exec(
        "CREATE TABLE src (id int PRIMARY KEY, name text, price numeric(14,4), flag boolean,
            updated_at timestamptz NOT NULL, doc jsonb, bin bytea, born date);
         INSERT INTO src SELECT g, 'name ' || g, g * 1.5, g % 2 = 0,
            timestamptz '2024-03-01 12:00:00.123456+00' + g * interval '1 minute',
            jsonb_build_object('g', g), decode('00ff', 'hex'), date '2024-02-28' + g
         FROM generate_series(1, 100) g;",
    )
    .await;
    let my = MyDb::new().await;
    my.exec(
        "CREATE TABLE dst (id INT PRIMARY KEY, name TEXT, price DECIMAL(14,4), flag BOOLEAN,
            updated_at DATETIME(6) NOT NULL, doc JSON, bin VARBINARY(8), born DATE)",
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let toml = site(
        &format!(
            "kind = \"postgres\"\nurl = \"{}\"\ntable = \"src\"\npage_size = 30",
            pg.url
        ),
        &endpoint(&my.url, "dst", "key = [\"id\"]\nbatch = 25"),
    );
    let daemon = Daemon::start(dir.path(), &toml).await;
    let all = run(&daemon, "all").await;
    assert_eq!(all["captured"], 100, "{all}");
    let rows = my
        .column(
            "SELECT CONCAT_WS('|', id, name, price, flag, updated_at, JSON_EXTRACT(doc, '$.g'),
                HEX(bin), born) FROM dst ORDER BY id LIMIT 2",
        )
        .await;
    assert_eq!(
        rows,
        [
            Some("1|name 1|1.5000|0|2024-03-01 12:01:00.123456|1|00FF|2024-02-29".into()),
            Some("2|name 2|3.0000|1|2024-03-01 12:02:00.123456|2|00FF|2024-03-01".into()),
        ]
    );
    assert_eq!(my.count("SELECT * FROM dst").await, 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn types_round_trip_and_read_as_documented_json() {
    let db = MyDb::new().await;
    db.exec(
        "CREATE TABLE src (id INT PRIMARY KEY, updated_at TIMESTAMP(6) NULL, local DATETIME(6),
            price DECIMAL(20,6), doc JSON, flag BOOLEAN, born DATE, bin VARBINARY(8),
            note TEXT, ratio DOUBLE, big BIGINT UNSIGNED)",
    )
    .await;
    db.exec("CREATE TABLE dst LIKE src").await;
    db.exec("SET time_zone = '+00:00'").await;
    db.exec(
        "INSERT INTO src VALUES (1, '2024-05-06 05:08:09.123456', '2024-01-01 10:00:00.5',
            12345678901234.000001, '{\"a\": [1, 2]}', TRUE, '2024-02-29', UNHEX('DEADBEEF'),
            NULL, 0.25, 18446744073709551615),
            (2, '2024-05-06 05:08:09.123457', NULL, NULL, NULL, FALSE, NULL, NULL, NULL, NULL,
            NULL)",
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
    let record = &tx["record"];
    // MariaDB's JSON is text; MySQL's is JSON.
    let doc = match &record["doc"] {
        Value::String(s) => serde_json::from_str(s).unwrap(),
        other => other.clone(),
    };
    assert_eq!(doc, json!({"a": [1, 2]}), "{tx}");
    let mut record = record.clone();
    record.as_object_mut().unwrap().remove("doc");
    assert_eq!(
        record,
        json!({
            "id": 1,
            "updated_at": "2024-05-06T05:08:09.123456Z",
            "local": "2024-01-01T10:00:00.500000Z",
            "price": "12345678901234.000001",
            "flag": true,
            "born": "2024-02-29",
            "bin": "\\xdeadbeef",
            "note": null,
            "ratio": 0.25,
            "big": 18446744073709551615_u64,
        }),
        "{tx}"
    );
    assert_eq!(db.count(MISSING).await, 0);
    assert_eq!(db.count("SELECT * FROM dst").await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_halted_by_a_site_stop_is_resumed_by_the_next_without_loss_or_repeat() {
    let db = MyDb::new().await;
    db.exec(SRC).await;
    db.exec("CREATE TABLE dst LIKE src").await;
    db.exec(&fill(1, 3000)).await;
    let dir = tempfile::tempdir().unwrap();
    let toml = site(
        &endpoint(&db.url, "src", "page_size = 50\npace = \"30ms\""),
        &endpoint(&db.url, "dst", "key = [\"id\"]\nbatch = 100"),
    );
    let daemon = Daemon::start(dir.path(), &toml).await;

    start_run(&daemon, "changed").await;
    eventually(20, "the run has queued some pages", || async {
        daemon.flow("S", "rows").await["last_run"]["captured"].as_i64() >= Some(200)
    })
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
    let db = MyDb::new().await;
    db.exec(SRC).await;
    db.exec("CREATE TABLE dst LIKE src").await;
    db.exec("ALTER TABLE dst ADD COLUMN arrival BIGINT AUTO_INCREMENT UNIQUE")
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
    eventually(30, "the queue drained", || async {
        daemon.integration("S", "sync").await["queued"] == 0
    })
    .await;
    let ids: Vec<i64> = db
        .column("SELECT id FROM dst ORDER BY arrival")
        .await
        .into_iter()
        .map(|id| id.unwrap().parse().unwrap())
        .collect();
    assert_eq!(ids, (1..=60).collect::<Vec<_>>(), "in order, none lost");
    assert!(hold_kinds(&daemon.integration("S", "sync").await).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_row_blocks_the_queue_until_the_table_is_fixed_and_it_is_retried() {
    let db = MyDb::new().await;
    db.exec("CREATE TABLE src (id INT PRIMARY KEY, qty TEXT, updated_at INT NOT NULL)")
        .await;
    db.exec("CREATE TABLE dst (id INT PRIMARY KEY, qty INT, updated_at INT NOT NULL)")
        .await;
    db.exec("INSERT INTO src VALUES (1, '1', 1), (2, 'lots', 2), (3, '3', 3)")
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
        error.contains("Incorrect integer value") && error.contains("1366"),
        "the database's own message: {error}"
    );
    assert_eq!(db.column("SELECT id FROM dst").await, [Some("1".into())]);

    db.exec("ALTER TABLE dst MODIFY qty TEXT").await;
    let out = daemon.cli(&["tx", "retry", "S", "sync", "2"]);
    assert!(out.status.success(), "{out:?}");
    eventually(20, "all three rows there", || async {
        daemon.integration("S", "sync").await["queued"] == 0
    })
    .await;
    assert_eq!(db.count("SELECT * FROM dst").await, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_password_comes_from_password_env_is_checked_and_is_never_shown() {
    let db = MyDb::new().await;
    let user = unique("sluice_u");
    let secret = format!("my-s3cret-{}", std::process::id());
    db.exec(&format!(
        "CREATE USER '{user}'@'%' IDENTIFIED BY '{secret}'"
    ))
    .await;
    db.exec(&format!("GRANT ALL ON {}.* TO '{user}'@'%'", db.name))
        .await;
    db.exec("CREATE TABLE src (id INT PRIMARY KEY, updated_at INT NOT NULL)")
        .await;
    db.exec("CREATE TABLE dst LIKE src").await;
    db.exec("INSERT INTO src VALUES (1, 1), (2, 2), (3, 3)")
        .await;
    let var = format!("SLUICE_T_MY_PW_{}", std::process::id());
    let wrong = format!("SLUICE_T_MY_WRONG_{}", std::process::id());
    // Only this test reads or writes these variables.
    std::env::set_var(&var, &secret);
    std::env::set_var(&wrong, "not-the-password");
    let mut url = reqwest::Url::parse(&db.url).unwrap();
    url.set_username(&user).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let toml = site(
        &endpoint(url.as_str(), "src", &format!("password_env = \"{var}\"")),
        &endpoint(
            url.as_str(),
            "dst",
            &format!("key = [\"id\"]\npassword_env = \"{var}\""),
        ),
    ) + &format!(
        "\n[sites.S.endpoints.wrong]\n{}",
        endpoint(url.as_str(), "dst", &format!("password_env = \"{wrong}\""))
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
    assert_eq!(db.count("SELECT * FROM dst").await, 3);

    let (_, answer) = daemon
        .post("/api/v1/sites/S/endpoints/wrong/test", json!({}))
        .await;
    assert!(
        answer.to_string().contains("1045"),
        "access denied: {answer}"
    );
    let (_, wrong_state) = daemon.get("/api/v1/sites/S/endpoints/wrong").await;
    assert_eq!(wrong_state["state"], "unauthorized", "{wrong_state}");

    let mut seen = String::new();
    for path in [
        "/api/v1/sites/S",
        "/api/v1/sites/S/endpoints",
        "/api/v1/sites/S/endpoints/dst",
        "/api/v1/sites/S/endpoints/wrong",
        "/api/v1/sites/S/flows/rows",
        "/api/v1/sites/S/integrations/sync",
    ] {
        seen.push_str(&daemon.get(path).await.1.to_string());
    }
    seen.push_str(&daemon.log("S").await);
    seen.push_str(&daemon.output());
    assert!(!seen.contains(&secret), "the password shows somewhere");
    assert!(!seen.contains("not-the-password"));
    db.exec(&format!("DROP USER '{user}'@'%'")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_source_gets_the_checkpoint_as_each_placeholder_null_before_the_first() {
    let db = MyDb::new().await;
    db.exec(SRC).await;
    db.exec("CREATE TABLE dst LIKE src").await;
    db.exec(&fill(1, 30)).await;
    let dir = tempfile::tempdir().unwrap();
    let query = "SELECT id, name, updated_at FROM src \
                 WHERE id % 2 = 0 AND (? IS NULL OR updated_at > ?)";
    let toml = site(
        &format!(
            "kind = \"mysql\"\nurl = \"{}\"\nquery = \"{query}\"\npage_size = 4",
            db.url
        ),
        &endpoint(&db.url, "dst", "key = [\"id\"]"),
    );
    let daemon = Daemon::start(dir.path(), &toml).await;
    let first = run(&daemon, "changed").await;
    assert_eq!(first["captured"], 15, "{first}");
    db.exec("UPDATE src SET name = 'again', updated_at = NOW(6) WHERE id IN (4, 5, 6)")
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
