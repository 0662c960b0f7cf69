//! Tokens and roles against the real binary: 401 without a valid token,
//! 403 for a role that may not, the dashboard's cookie session and its CSRF
//! value, tokens created on the command line kept only as hashes, revoked
//! at once, every change in the audit trail; and the daemon refuses to
//! listen beyond loopback without tokens.

mod common;

use std::process::{Command, Stdio};

use common::*;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

/// Requests to the daemon with the same headers each time: who asks.
struct As<'a> {
    daemon: &'a Daemon,
    headers: Vec<(String, String)>,
}

impl<'a> As<'a> {
    fn headers(daemon: &'a Daemon, headers: &[(&str, &str)]) -> As<'a> {
        As {
            daemon,
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    fn nobody(daemon: &'a Daemon) -> As<'a> {
        As::headers(daemon, &[])
    }

    fn bearer(daemon: &'a Daemon, token: &str) -> As<'a> {
        As::headers(daemon, &[("authorization", &format!("Bearer {token}"))])
    }

    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let mut r = reqwest::Client::new().request(method, self.daemon.url(path));
        for (k, v) in &self.headers {
            r = r.header(k, v);
        }
        if let Some(body) = body {
            r = r.json(&body);
        }
        let r = r.send().await.unwrap();
        let status = r.status();
        let text = r.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.call(Method::GET, path, None).await
    }

    async fn post(&self, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        self.call(Method::POST, path, body).await
    }

    async fn delete(&self, path: &str) -> (StatusCode, Value) {
        self.call(Method::DELETE, path, None).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_roles_and_the_cookie_session() {
    let dir = tempfile::tempdir().unwrap();
    let target = Target::start().await;
    let mut daemon = Daemon::start(dir.path(), &webhook_site(&target, 1)).await;
    let pause = "/api/v1/sites/LIVE/integrations/orders/pause";
    let resume = "/api/v1/sites/LIVE/integrations/orders/resume";

    // Open mode: no token exists, loopback, everyone is admin.
    let (status, v) = As::nobody(&daemon).get("/api/v1/session").await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["auth"], "open");

    let admin = daemon.create_token("admin", "alice");
    let operator = daemon.create_token("operator", "oscar");
    let viewer = daemon.create_token("viewer", "vera");

    // No clear-text token in the store. On PostgreSQL the tokens are in the
    // database, none beside the daemon (tests/cluster_tokens.rs reads it).
    let file = dir.path().join("data").join("tokens.db");
    if on_postgres() {
        assert!(!file.exists(), "tokens.db with store = \"postgres\"");
    } else {
        let store = String::from_utf8_lossy(&std::fs::read(file).unwrap()).into_owned();
        for t in [&admin, &operator, &viewer] {
            assert!(!store.contains(&t[7..]), "the token store holds a token");
        }
    }

    // From now on a token is needed: missing or wrong is 401, JSON.
    for headers in [
        vec![],
        vec![("authorization", "Bearer sluice_wrong")],
        vec![("authorization", "Basic YWxpY2U6eA==")],
    ] {
        let who = As::headers(&daemon, &headers);
        let (status, v) = who.get("/api/v1/sites").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{headers:?}: {v}");
        assert!(v["error"].as_str().is_some_and(|e| !e.is_empty()), "{v}");
        let (status, _) = who.post(pause, None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }

    // A viewer reads but may not pause: 403, JSON, and nothing changed.
    let vera = As::bearer(&daemon, &viewer);
    let (status, v) = vera.get("/api/v1/sites").await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let (status, v) = vera.post(pause, None).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{v}");
    assert!(v["error"].as_str().unwrap().contains("viewer"), "{v}");
    let (_, i) = vera.get("/api/v1/sites/LIVE/integrations/orders").await;
    assert_eq!(i["state"], "active");

    // An operator pauses and resumes but may not stop the site.
    let oscar = As::bearer(&daemon, &operator);
    let (status, v) = oscar.post(pause, None).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let (status, v) = oscar.post(resume, None).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let (status, _) = oscar
        .post("/api/v1/sites/LIVE/stop", Some(json!({"reason": "no"})))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = oscar.get("/api/v1/tokens").await;
    assert_eq!(status, StatusCode::FORBIDDEN, "tokens are for admins");

    // An admin stops and starts the site; the audit names the token.
    let alice = As::bearer(&daemon, &admin);
    let (status, v) = alice
        .post(
            "/api/v1/sites/LIVE/stop",
            Some(json!({"reason": "stocktake"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let (status, _) = alice.post("/api/v1/sites/LIVE/start", None).await;
    assert_eq!(status, StatusCode::OK);
    let (_, audit) = vera.get("/api/v1/sites/LIVE/audit").await;
    let entries = audit.as_array().unwrap();
    let by = |action: &str| {
        entries
            .iter()
            .find(|e| e["action"] == action)
            .map(|e| e["actor"].as_str().unwrap().to_string())
    };
    assert_eq!(by("site.stop").as_deref(), Some("alice"), "{audit}");
    assert_eq!(by("integration.pause").as_deref(), Some("oscar"), "{audit}");
    let refused = entries
        .iter()
        .find(|e| e["action"] == "integration.pause" && e["actor"] == "vera")
        .expect("the viewer's refused pause is in the audit trail");
    assert_eq!(
        refused["outcome"], "refused: forbidden (role viewer, needs operator)",
        "{refused}"
    );

    // The dashboard's session: an HttpOnly cookie, and CSRF on writes.
    let (status, _) = As::nobody(&daemon)
        .post("/api/v1/session", Some(json!({"token": "sluice_wrong"})))
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let r = reqwest::Client::new()
        .post(daemon.url("/api/v1/session"))
        .json(&json!({"token": operator}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let set_cookie = r.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(set_cookie.contains("HttpOnly"), "{set_cookie}");
    assert!(set_cookie.contains("SameSite=Strict"), "{set_cookie}");
    let session: Value = r.json().await.unwrap();
    assert_eq!(session["name"], "oscar");
    assert_eq!(session["role"], "operator");
    let csrf = session["csrf"].as_str().unwrap().to_string();
    assert!(!csrf.is_empty());
    let cookie = set_cookie.split(';').next().unwrap().to_string();
    let browser = As::headers(&daemon, &[("cookie", &cookie)]);
    let (status, v) = browser.get("/api/v1/session").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(v["csrf"], csrf.as_str());
    let (status, v) = browser.post(pause, None).await;
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "a cookie write without CSRF: {v}"
    );
    let (status, _) = As::headers(&daemon, &[("cookie", &cookie), ("x-csrf-token", "0000")])
        .post(pause, None)
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, v) = As::headers(
        &daemon,
        &[
            ("cookie", &cookie),
            ("x-csrf-token", &csrf),
            ("origin", "https://evil.example"),
        ],
    )
    .post(pause, None)
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "another origin: {v}");
    let origin = daemon.server();
    let (status, v) = As::headers(
        &daemon,
        &[
            ("cookie", &cookie),
            ("x-csrf-token", &csrf),
            ("origin", &origin),
        ],
    )
    .post(pause, None)
    .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let (status, _) = browser.delete("/api/v1/session").await;
    assert_eq!(status, StatusCode::NO_CONTENT);

    // Tokens over the API (admin): created, listed without secrets,
    // revoked and refused at once; every change audited.
    let (status, v) = alice
        .post(
            "/api/v1/tokens",
            Some(json!({"name": "grafana", "role": "viewer"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    let grafana = v["token"].as_str().unwrap().to_string();
    let scraper = As::bearer(&daemon, &grafana);
    let (status, _) = scraper.get("/api/v1/sites").await;
    assert_eq!(status, StatusCode::OK);
    let (_, list) = alice.get("/api/v1/tokens").await;
    let text = list.to_string();
    assert!(
        text.contains("grafana") && !text.contains(&grafana[7..]),
        "{text}"
    );
    let (status, _) = alice
        .post("/api/v1/tokens", Some(json!({"name": "x", "role": "root"})))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = alice.delete("/api/v1/tokens/grafana").await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = scraper.get("/api/v1/sites").await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "a revoked token is refused at once"
    );
    let (_, audit) = vera.get("/api/v1/audit").await;
    let actions: Vec<(String, String)> = audit
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["action"].as_str().unwrap().into(),
                e["actor"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        actions[0],
        ("token.revoke".to_string(), "alice".to_string()),
        "{audit}"
    );
    assert_eq!(
        actions[1],
        ("token.create".to_string(), "alice".to_string()),
        "{audit}"
    );
    assert_eq!(
        actions.len(),
        5,
        "three from the CLI, two over the API: {audit}"
    );

    // The CLI with --token, and without.
    let out = daemon.cli(&["--token", &viewer, "site", "list"]);
    assert!(out.status.success(), "{out:?}");
    let out = daemon.cli(&["site", "list"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("HTTP 401"),
        "{out:?}"
    );
    let out = daemon.cli(&["--token", &viewer, "integration", "pause", "LIVE", "orders"]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("HTTP 403"),
        "{out:?}"
    );

    // Both audit trails and the tokens survive a restart (SIGKILL).
    let site_before = As::bearer(&daemon, &viewer)
        .get("/api/v1/sites/LIVE/audit")
        .await
        .1;
    daemon.restart().await;
    let vera = As::bearer(&daemon, &viewer);
    let (status, site_after) = vera.get("/api/v1/sites/LIVE/audit").await;
    assert_eq!(status, StatusCode::OK, "the viewer's token still works");
    // Newest first: the restart adds its own start in front.
    let (after, before) = (
        site_after.as_array().unwrap(),
        site_before.as_array().unwrap(),
    );
    assert_eq!(after[after.len() - before.len()..], before[..]);
    let (_, tokens_after) = vera.get("/api/v1/audit").await;
    assert_eq!(tokens_after, audit);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_listening_beyond_loopback_without_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("sluice.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = \"{}\"\n[sites.LIVE.endpoints.f]\nkind = \"webhook\"\n",
            dir.path().join("data").display()
        ),
    )
    .unwrap();
    // A documentation address (TEST-NET-1): not loopback, and never bound
    // even if the refusal were missing (the bind would fail differently).
    let out = Command::new(BIN)
        .args(["serve", "--listen", "192.0.2.1:7070", "--config"])
        .arg(&config)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("refusing to listen on 192.0.2.1:7070 without API tokens"),
        "{err}"
    );
}

/// Signs in with `token`; the cookie (`sluice_session=…`) and the CSRF value.
async fn sign_in(daemon: &Daemon, token: &str) -> (String, String) {
    let r = reqwest::Client::new()
        .post(daemon.url("/api/v1/session"))
        .json(&json!({ "token": token }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let set_cookie = r.headers()["set-cookie"].to_str().unwrap().to_string();
    let cookie = set_cookie.split(';').next().unwrap().to_string();
    let session: Value = r.json().await.unwrap();
    (cookie, session["csrf"].as_str().unwrap().to_string())
}

#[tokio::test]
async fn signing_out_ends_the_session_and_the_cookie_never_holds_the_token() {
    let dir = tempfile::tempdir().unwrap();
    let target = Target::start().await;
    let daemon = Daemon::start(dir.path(), &webhook_site(&target, 1)).await;
    let operator = daemon.create_token("operator", "oscar");
    let admin = daemon.create_token("admin", "alice");

    let (cookie, _) = sign_in(&daemon, &operator).await;
    assert!(
        !cookie.contains(&operator[7..]),
        "the cookie carries the token"
    );
    let page = As::headers(&daemon, &[("cookie", &cookie)]);
    assert_eq!(page.get("/api/v1/sites").await.0, StatusCode::OK);
    // Signing out ends the session on the daemon: the same cookie, kept or
    // copied elsewhere, is refused from now on.
    let (status, _) = page.delete("/api/v1/session").await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, v) = page.get("/api/v1/sites").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{v}");
    assert_eq!(
        page.get("/api/v1/session").await.0,
        StatusCode::UNAUTHORIZED
    );
    // The token itself still works, and opens new sessions.
    assert_eq!(
        As::bearer(&daemon, &operator).get("/api/v1/sites").await.0,
        StatusCode::OK
    );

    // Revoking the token ends every session it opened.
    let (first, _) = sign_in(&daemon, &operator).await;
    let (second, csrf) = sign_in(&daemon, &operator).await;
    assert_ne!(first, second);
    let (status, _) = As::bearer(&daemon, &admin)
        .delete("/api/v1/tokens/oscar")
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    for cookie in [&first, &second] {
        let (status, _) = As::headers(&daemon, &[("cookie", cookie)])
            .get("/api/v1/sites")
            .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    let (status, _) = As::headers(&daemon, &[("cookie", &second), ("x-csrf-token", &csrf)])
        .post("/api/v1/sites/LIVE/integrations/orders/pause", None)
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}
