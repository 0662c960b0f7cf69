//! Bad input gets a clear JSON error with a 4xx status, never a 500 or a
//! dropped connection, on every route.

mod common;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_a_json_4xx_everywhere() {
    let dir = tempfile::tempdir().unwrap();
    let target = Target::start().await;
    let daemon = Daemon::start(dir.path(), &webhook_site(&target, 1)).await;
    let http = reqwest::Client::new();
    let posts = [
        "/api/v1/sites/LIVE/stop",
        "/api/v1/sites/LIVE/start",
        "/api/v1/sites/LIVE/integrations/orders/pause",
        "/api/v1/sites/LIVE/integrations/orders/resume",
        "/api/v1/sites/LIVE/flows/web/run",
        "/api/v1/sites/LIVE/integrations/orders/transactions/1/retry",
        "/api/v1/sites/LIVE/integrations/orders/transactions/x/retry",
        "/api/v1/sites/LIVE/endpoints/nope/test",
        "/hooks/LIVE/orders/web",
        "/hooks/LIVE/orders/nope",
        "/hooks/NOPE/orders/web",
        "/api/v1/nothing/here",
    ];
    let bodies: [&[u8]; 6] = [
        b"{",
        b"[1,2",
        b"\"just a string\"",
        b"{\"reason\": 42, \"mode\": []}",
        b"\xff\xfe not utf-8",
        b"[{\"id\": 1}, 7]",
    ];
    for path in posts {
        for body in bodies {
            if path == "/hooks/LIVE/orders/web" && body.starts_with(b"{\"reason\"") {
                continue; // a valid record for a webhook
            }
            let r = http
                .post(daemon.url(path))
                .header("content-type", "application/json")
                .body(body.to_vec())
                .send()
                .await
                .unwrap();
            let status = r.status();
            let text = r.text().await.unwrap();
            assert!(status.is_client_error(), "{path} {body:?}: {status} {text}");
            let v: serde_json::Value = serde_json::from_str(&text)
                .unwrap_or_else(|_| panic!("{path} {body:?}: not JSON: {text}"));
            assert!(
                v["error"].as_str().is_some_and(|e| !e.is_empty()),
                "{path}: {v}"
            );
        }
    }
    let gets = [
        "/api/v1/sites/LIVE/log?level=abc",
        "/api/v1/sites/LIVE/log?since=yesterday",
        "/api/v1/sites/LIVE/log/stream?tail=-1",
        "/api/v1/sites/LIVE/audit?limit=many",
        "/api/v1/sites/LIVE/integrations/orders/transactions?state=lost",
        "/api/v1/sites/LIVE/integrations/orders/transactions?before=x",
        "/api/v1/sites/LIVE/integrations/orders/transactions/999",
        "/api/v1/sites/NOPE/integrations",
        "/api/v1/sites/LIVE/flows/nope",
        "/api/v1/sites/LIVE/endpoints/nope",
        "/api/v1/sites/%FF",
    ];
    for path in gets {
        let r = http.get(daemon.url(path)).send().await.unwrap();
        let status = r.status();
        let text = r.text().await.unwrap();
        assert!(status.is_client_error(), "{path}: {status} {text}");
        let v: serde_json::Value =
            serde_json::from_str(&text).unwrap_or_else(|_| panic!("{path}: not JSON: {text}"));
        assert!(v["error"].is_string(), "{path}: {v}");
    }
    // And the daemon is still there and answering.
    let (status, _) = daemon.get("/api/v1/sites").await;
    assert_eq!(status, axum::http::StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_method_is_a_json_405() {
    let dir = tempfile::tempdir().unwrap();
    let target = Target::start().await;
    let daemon = Daemon::start(dir.path(), &webhook_site(&target, 1)).await;
    let http = reqwest::Client::new();
    for (method, path) in [
        (reqwest::Method::POST, "/api/v1/sites"),
        (
            reqwest::Method::DELETE,
            "/api/v1/sites/LIVE/integrations/orders",
        ),
        (reqwest::Method::GET, "/api/v1/sites/LIVE/stop"),
        (reqwest::Method::GET, "/hooks/LIVE/orders/web"),
        (reqwest::Method::POST, "/metrics"),
    ] {
        let r = http
            .request(method.clone(), daemon.url(path))
            .send()
            .await
            .unwrap();
        assert_eq!(
            r.status(),
            reqwest::StatusCode::METHOD_NOT_ALLOWED,
            "{method} {path}"
        );
        let v: serde_json::Value = r.json().await.unwrap();
        assert!(v["error"].as_str().unwrap().contains(path), "{v}");
    }
}

#[tokio::test]
async fn a_reason_longer_than_4_kib_is_refused_and_kept_nowhere() {
    let dir = tempfile::tempdir().unwrap();
    let target = Target::start().await;
    let daemon = Daemon::start(dir.path(), &webhook_site(&target, 1)).await;
    let long = "r".repeat(5000);
    for path in [
        "/api/v1/sites/LIVE/stop",
        "/api/v1/sites/LIVE/integrations/orders/pause",
    ] {
        let (status, v) = daemon
            .post(path, serde_json::json!({ "reason": long }))
            .await;
        assert_eq!(status, reqwest::StatusCode::BAD_REQUEST, "{path}: {v}");
        assert!(v["error"].as_str().unwrap().contains("4096"), "{v}");
    }
    // Nothing changed, and no answer carries the reason.
    let sites = daemon.get_text("/api/v1/sites").await;
    assert!(sites.contains("\"running\""), "{sites}");
    let integration = daemon.integration("LIVE", "orders").await;
    assert_eq!(integration["state"], "active");
    for path in [
        "/api/v1/sites",
        "/api/v1/sites/LIVE/integrations",
        "/api/v1/sites/LIVE/audit",
        "/api/v1/sites/LIVE/log",
    ] {
        let text = daemon.get_text(path).await;
        assert!(!text.contains(&long[..4097]), "{path} keeps the reason");
        assert!(text.len() < 20_000, "{path}: {} bytes", text.len());
    }
    // A reason of 4096 bytes is fine.
    let (status, v) = daemon
        .post(
            "/api/v1/sites/LIVE/stop",
            serde_json::json!({ "reason": "r".repeat(4096) }),
        )
        .await;
    assert_eq!(status, reqwest::StatusCode::OK, "{v}");
}
