//! Tokens and roles against the real binary: 401 without a valid token,
//! 403 for a role that may not, the dashboard's cookie session and its CSRF
//! value, tokens created on the command line kept only as hashes, revoked
//! at once, every change in the audit trail; and the daemon refuses to
//! listen beyond loopback without tokens.

mod common;

use std::process::{Command, Stdio};

use common::*;
use reqwest::StatusCode;
use serde_json::{json, Value};

/// `sluice token create` on the daemon's configuration: the token on stdout.
fn create_token(daemon: &Daemon, role: &str, name: &str) -> String {
    let out = Command::new(BIN)
        .args([
            "token", "create", "--role", role, "--name", name, "--config",
        ])
        .arg(&daemon.config)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let token = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert!(token.starts_with("sluice_"), "{token}");
    token
}

async fn call(
    daemon: &Daemon,
    method: reqwest::Method,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut r = reqwest::Client::new().request(method, daemon.url(path));
    for (k, v) in headers {
        r = r.header(*k, *v);
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

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_roles_and_the_cookie_session() {
    let dir = tempfile::tempdir().unwrap();
    let target = Target::start().await;
    let daemon = Daemon::start(dir.path(), &webhook_site(&target, 1)).await;
    let pause = "/api/v1/sites/LIVE/integrations/orders/pause";
    let resume = "/api/v1/sites/LIVE/integrations/orders/resume";

    // Open mode: no token exists, loopback, everyone is admin.
    let (status, v) = call(&daemon, reqwest::Method::GET, "/api/v1/session", &[], None).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["auth"], "open");

    let admin = create_token(&daemon, "admin", "alice");
    let operator = create_token(&daemon, "operator", "oscar");
    let viewer = create_token(&daemon, "viewer", "vera");

    // No clear-text token in the store.
    let store = std::fs::read(dir.path().join("data").join("tokens.db")).unwrap();
    let store = String::from_utf8_lossy(&store);
    for t in [&admin, &operator, &viewer] {
        assert!(!store.contains(&t[7..]), "the token store holds a token");
    }

    // From now on a token is needed: missing or wrong is 401, JSON.
    let get = reqwest::Method::GET;
    let post = reqwest::Method::POST;
    for headers in [
        vec![],
        vec![("authorization", "Bearer sluice_wrong")],
        vec![("authorization", "Basic YWxpY2U6eA==")],
    ] {
        let (status, v) = call(&daemon, get.clone(), "/api/v1/sites", &headers, None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{headers:?}: {v}");
        assert!(v["error"].as_str().is_some_and(|e| !e.is_empty()), "{v}");
        let (status, _) = call(&daemon, post.clone(), pause, &headers, None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }

    // A viewer reads but may not pause: 403, JSON, and nothing changed.
    let vh = bearer(&viewer);
    let (status, v) = call(
        &daemon,
        get.clone(),
        "/api/v1/sites",
        &[("authorization", &vh)],
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let (status, v) = call(
        &daemon,
        post.clone(),
        pause,
        &[("authorization", &vh)],
        None,
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{v}");
    assert!(v["error"].as_str().unwrap().contains("viewer"), "{v}");
    let (_, i) = call(
        &daemon,
        get.clone(),
        "/api/v1/sites/LIVE/integrations/orders",
        &[("authorization", &vh)],
        None,
    )
    .await;
    assert_eq!(i["state"], "active");

    // An operator pauses and resumes but may not stop the site.
    let oh = bearer(&operator);
    let (status, v) = call(
        &daemon,
        post.clone(),
        pause,
        &[("authorization", &oh)],
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let (status, v) = call(
        &daemon,
        post.clone(),
        resume,
        &[("authorization", &oh)],
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let (status, _) = call(
        &daemon,
        post.clone(),
        "/api/v1/sites/LIVE/stop",
        &[("authorization", &oh)],
        Some(json!({"reason": "no"})),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = call(
        &daemon,
        get.clone(),
        "/api/v1/tokens",
        &[("authorization", &oh)],
        None,
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "tokens are for admins");

    // An admin stops and starts the site; the audit names the token.
    let ah = bearer(&admin);
    let (status, v) = call(
        &daemon,
        post.clone(),
        "/api/v1/sites/LIVE/stop",
        &[("authorization", &ah)],
        Some(json!({"reason": "stocktake"})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let (status, _) = call(
        &daemon,
        post.clone(),
        "/api/v1/sites/LIVE/start",
        &[("authorization", &ah)],
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (_, audit) = call(
        &daemon,
        get.clone(),
        "/api/v1/sites/LIVE/audit",
        &[("authorization", &vh)],
        None,
    )
    .await;
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
    let (status, _) = call(
        &daemon,
        post.clone(),
        "/api/v1/session",
        &[],
        Some(json!({"token": "sluice_wrong"})),
    )
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
    let (status, v) = call(
        &daemon,
        get.clone(),
        "/api/v1/session",
        &[("cookie", &cookie)],
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(v["csrf"], csrf.as_str());
    let (status, v) = call(&daemon, post.clone(), pause, &[("cookie", &cookie)], None).await;
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "a cookie write without CSRF: {v}"
    );
    let (status, _) = call(
        &daemon,
        post.clone(),
        pause,
        &[("cookie", &cookie), ("x-csrf-token", "0000")],
        None,
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, v) = call(
        &daemon,
        post.clone(),
        pause,
        &[
            ("cookie", &cookie),
            ("x-csrf-token", &csrf),
            ("origin", "https://evil.example"),
        ],
        None,
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "another origin: {v}");
    let origin = daemon.server();
    let (status, v) = call(
        &daemon,
        post.clone(),
        pause,
        &[
            ("cookie", &cookie),
            ("x-csrf-token", &csrf),
            ("origin", &origin),
        ],
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let (status, _) = call(
        &daemon,
        reqwest::Method::DELETE,
        "/api/v1/session",
        &[("cookie", &cookie)],
        None,
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT);

    // Tokens over the API (admin): created, listed without secrets,
    // revoked and refused at once; every change audited.
    let (status, v) = call(
        &daemon,
        post.clone(),
        "/api/v1/tokens",
        &[("authorization", &ah)],
        Some(json!({"name": "grafana", "role": "viewer"})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    let grafana = v["token"].as_str().unwrap().to_string();
    let gh = bearer(&grafana);
    let (status, _) = call(
        &daemon,
        get.clone(),
        "/api/v1/sites",
        &[("authorization", &gh)],
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (_, list) = call(
        &daemon,
        get.clone(),
        "/api/v1/tokens",
        &[("authorization", &ah)],
        None,
    )
    .await;
    let text = list.to_string();
    assert!(
        text.contains("grafana") && !text.contains(&grafana[7..]),
        "{text}"
    );
    let (status, _) = call(
        &daemon,
        post.clone(),
        "/api/v1/tokens",
        &[("authorization", &ah)],
        Some(json!({"name": "x", "role": "root"})),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = call(
        &daemon,
        reqwest::Method::DELETE,
        "/api/v1/tokens/grafana",
        &[("authorization", &ah)],
        None,
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = call(
        &daemon,
        get.clone(),
        "/api/v1/sites",
        &[("authorization", &gh)],
        None,
    )
    .await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "a revoked token is refused at once"
    );
    let (_, audit) = call(
        &daemon,
        get.clone(),
        "/api/v1/audit",
        &[("authorization", &vh)],
        None,
    )
    .await;
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
