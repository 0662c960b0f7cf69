//! API tokens on a cluster: with `store = "postgres"` the tokens, the
//! dashboard's sessions and their audit trail are in the shared database,
//! so a token made with `sluice token create --config` works on every
//! node, a role refused on one is refused on all, a revoke through one
//! node is refused by the others at their next request, and a session
//! signed in on one node is good on another.
//!
//! Every test here runs on PostgreSQL (`SLUICE_TEST_PG_URL`), whatever
//! `SLUICE_TEST_STORE` says.

mod common;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::Arc;

use common::pg::PgDb;
use common::{webhook_site, Daemon, Options, Target, BIN};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

/// The variable the configuration names for the store's URL.
const URL_ENV: &str = "SLUICE_TEST_STORE_URL";

const PAUSE: &str = "/api/v1/sites/LIVE/integrations/orders/pause";
const RESUME: &str = "/api/v1/sites/LIVE/integrations/orders/resume";

/// Two nodes `n1`, `n2` on one new database, sharing one configuration
/// file, each with a data directory of its own; and that file.
async fn two_nodes(dir: &Path, target: &Target) -> (Arc<PgDb>, std::path::PathBuf, Vec<Daemon>) {
    let lease = std::time::Duration::from_secs(2);
    let nodes = common::cluster(dir, &webhook_site(target, 1), 2, lease, Options::default()).await;
    (nodes[0].store_db(), nodes[0].config.clone(), nodes)
}

/// `sluice token ARGS --config CONFIG`, with the store's URL in its
/// variable when `url` is given (and no such variable otherwise).
fn token_cli(config: &Path, url: Option<&str>, args: &[&str]) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.arg("token").args(args).arg("--config").arg(config);
    match url {
        Some(url) => cmd.env(URL_ENV, url),
        None => cmd.env_remove(URL_ENV),
    };
    cmd.stdin(Stdio::null())
        .output()
        .expect("the sluice CLI runs")
}

/// `sluice token create`: the token it prints once.
fn create(config: &Path, url: &str, role: &str, name: &str) -> String {
    let out = token_cli(
        config,
        Some(url),
        &["create", "--role", role, "--name", name],
    );
    assert!(out.status.success(), "{out:?}");
    let token = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert!(token.starts_with("sluice_"), "{token}");
    token
}

/// A request to `node` with these headers: its status and JSON answer.
async fn call(
    node: &Daemon,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
) -> (StatusCode, Value) {
    let mut r = reqwest::Client::new().request(method.clone(), node.url(path));
    for (k, v) in headers {
        r = r.header(*k, *v);
    }
    if method == Method::POST {
        r = r.json(&json!({}));
    }
    let r = r.send().await.unwrap();
    let status = r.status();
    let text = r.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_and_sessions_hold_on_every_node_of_one_database() {
    let dir = tempfile::tempdir().unwrap();
    let target = Target::start().await;
    let (db, config, nodes) = two_nodes(dir.path(), &target).await;
    let (n1, n2) = (&nodes[0], &nodes[1]);

    // The command line writes to the database the configuration names.
    let admin = create(&config, &db.url, "admin", "alice");
    let viewer = create(&config, &db.url, "viewer", "vera");
    let stored = db
        .json("SELECT name, role, hash FROM sluice_tokens ORDER BY name")
        .await;
    assert_eq!(stored.len(), 2, "{stored:?}");
    let text = serde_json::to_string(&stored).unwrap();
    for t in [&admin, &viewer] {
        assert!(!text.contains(&t[7..]), "the database holds a token");
    }
    for node in &nodes {
        assert!(
            !node.dir.join("data").join("tokens.db").exists(),
            "no tokens.db beside a node with store = \"postgres\""
        );
    }

    // Both nodes ask for a token now (no restart), and take alice's.
    for node in &nodes {
        let (status, v) = call(node, Method::GET, "/api/v1/sites", &[]).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{v}");
        let alice = bearer(&admin);
        let (status, v) = call(
            node,
            Method::GET,
            "/api/v1/sites",
            &[("authorization", &alice)],
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{v}");
        let (status, v) = call(
            node,
            Method::GET,
            "/api/v1/session",
            &[("authorization", &alice)],
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{v}");
        assert_eq!(v["name"], "alice");
        assert_eq!(v["role"], "admin");
    }

    // A viewer reads on either node, and may write on neither.
    let vera = bearer(&viewer);
    for node in &nodes {
        let (status, v) = call(
            node,
            Method::GET,
            "/api/v1/sites",
            &[("authorization", &vera)],
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{v}");
        let (status, v) = call(node, Method::POST, PAUSE, &[("authorization", &vera)]).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{v}");
        assert!(v["error"].as_str().unwrap().contains("viewer"), "{v}");
    }

    // A token made through node 2's API works on node 1.
    let r = reqwest::Client::new()
        .post(n2.url("/api/v1/tokens"))
        .header("authorization", bearer(&admin))
        .json(&json!({"name": "oscar", "role": "operator"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let created: Value = r.json().await.unwrap();
    let operator = created["token"].as_str().unwrap().to_string();
    let oscar = bearer(&operator);
    let (status, v) = call(n1, Method::POST, PAUSE, &[("authorization", &oscar)]).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let (status, v) = call(n2, Method::POST, RESUME, &[("authorization", &oscar)]).await;
    assert_eq!(status, StatusCode::OK, "{v}");

    // The dashboard signs in on node 1; its cookie (and CSRF value) are
    // good on node 2, for reads and writes.
    let r = reqwest::Client::new()
        .post(n1.url("/api/v1/session"))
        .json(&json!({ "token": operator }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let set_cookie = r.headers()["set-cookie"].to_str().unwrap().to_string();
    let cookie = set_cookie.split(';').next().unwrap().to_string();
    let session: Value = r.json().await.unwrap();
    let csrf = session["csrf"].as_str().unwrap().to_string();
    let (status, v) = call(n2, Method::GET, "/api/v1/session", &[("cookie", &cookie)]).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["name"], "oscar");
    assert_eq!(v["csrf"], csrf.as_str());
    let (status, v) = call(
        n2,
        Method::POST,
        PAUSE,
        &[("cookie", &cookie), ("x-csrf-token", &csrf)],
    )
    .await;
    assert_eq!(
        status,
        StatusCode::OK,
        "a write with node 1's cookie on node 2: {v}"
    );
    let (status, _) = call(n2, Method::POST, PAUSE, &[("cookie", &cookie)]).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "a cookie write without CSRF");

    // Revoked through node 1's API: node 2 refuses the token and its
    // session at its very next request.
    let (status, v) = call(
        n1,
        Method::DELETE,
        "/api/v1/tokens/oscar",
        &[("authorization", &bearer(&admin))],
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{v}");
    let (status, v) = call(
        n2,
        Method::GET,
        "/api/v1/sites",
        &[("authorization", &oscar)],
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{v}");
    let (status, v) = call(n2, Method::GET, "/api/v1/sites", &[("cookie", &cookie)]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{v}");
    let (status, _) = call(
        n2,
        Method::POST,
        RESUME,
        &[("cookie", &cookie), ("x-csrf-token", &csrf)],
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(db.count("SELECT 1 FROM sluice_sessions").await, 0);

    // One audit trail of token changes, the same from either node, with
    // each change's maker: the command line's two, the API's two.
    let (_, from_n1) = call(
        n1,
        Method::GET,
        "/api/v1/audit",
        &[("authorization", &vera)],
    )
    .await;
    let (_, from_n2) = call(
        n2,
        Method::GET,
        "/api/v1/audit",
        &[("authorization", &vera)],
    )
    .await;
    assert_eq!(from_n1, from_n2);
    let seen: Vec<(&str, &str, &str)> = from_n1
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["action"].as_str().unwrap(),
                e["subject"].as_str().unwrap(),
                e["actor"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        seen[..2],
        [
            ("token.revoke", "oscar", "alice"),
            ("token.create", "oscar", "alice")
        ],
        "{from_n1}"
    );
    assert_eq!(seen.len(), 4, "{from_n1}");
    let nodes_of = db
        .json("SELECT node FROM sluice_token_audit ORDER BY id")
        .await;
    assert_eq!(
        nodes_of,
        [
            json!({"node": null}),
            json!({"node": null}),
            json!({"node": "n2"}),
            json!({"node": "n1"}),
        ]
    );

    // The command line lists and revokes in the database too.
    let out = token_cli(&config, Some(&db.url), &["list"]);
    assert!(out.status.success(), "{out:?}");
    let listed = String::from_utf8_lossy(&out.stdout);
    assert!(
        listed.contains("alice") && listed.contains("vera"),
        "{listed}"
    );
    assert!(!listed.contains("oscar"), "{listed}");
    let out = token_cli(&config, Some(&db.url), &["revoke", "vera"]);
    assert!(out.status.success(), "{out:?}");
    for node in &nodes {
        let (status, _) = call(
            node,
            Method::GET,
            "/api/v1/sites",
            &[("authorization", &vera)],
        )
        .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_command_line_names_a_missing_url_and_never_prints_a_password() {
    let dir = tempfile::tempdir().unwrap();
    let config = postgres_config(dir.path());
    let out = token_cli(&config, None, &["create", "--role", "admin", "--name", "a"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(URL_ENV) && err.contains("store_url_env"),
        "{err}"
    );
    assert!(out.stdout.is_empty(), "{out:?}");

    // A server that is not there (nothing listens on port 1).
    let out = token_cli(
        &config,
        Some("postgres://sluice:s3cret-pw@127.0.0.1:1/nowhere"),
        &["list"],
    );
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(said.contains("127.0.0.1:1"), "{said}");
    assert!(!said.contains("s3cret-pw"), "{said}");
    assert!(
        !dir.path().join("data").join("tokens.db").exists(),
        "no tokens.db made on the way"
    );
}

/// `sluice serve` beyond loopback reads the database for tokens: refused
/// while it holds none, past that check once the command line made one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_listening_beyond_loopback_until_the_database_holds_a_token() {
    let dir = tempfile::tempdir().unwrap();
    let db = PgDb::new().await;
    let config = postgres_config(dir.path());
    // A documentation address (TEST-NET-1): never bound.
    let serve = || {
        Command::new(BIN)
            .args(["serve", "--listen", "192.0.2.1:7070", "--config"])
            .arg(&config)
            .env(URL_ENV, &db.url)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let out = serve();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("refusing to listen on 192.0.2.1:7070 without API tokens"),
        "{err}"
    );
    create(&config, &db.url, "admin", "alice");
    let out = serve();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("without API tokens"), "{err}");
    assert!(err.contains("cannot listen on 192.0.2.1:7070"), "{err}");
}

/// A configuration of one webhook site on PostgreSQL, its URL in
/// `URL_ENV`, written into `dir`.
fn postgres_config(dir: &std::path::Path) -> std::path::PathBuf {
    let config = dir.join("sluice.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = \"{}\"\nstore = \"postgres\"\nstore_url_env = \"{URL_ENV}\"\n\
             [sites.LIVE.endpoints.f]\nkind = \"webhook\"\n",
            dir.join("data").display()
        ),
    )
    .unwrap();
    config
}
