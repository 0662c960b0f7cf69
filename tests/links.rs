//! Record links (Unifi's bonds): a key created once at an API that gives
//! its own ids, then changed twice, arrives as one create and two updates
//! of the id the API gave — across a restart of the daemon; links listed
//! and repaired by hand, audited.

mod common;

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{Method, StatusCode};
use axum::routing::{patch, post};
use axum::{Json, Router};
use common::*;
use parking_lot::Mutex;
use serde_json::{json, Value};

/// A CRM that assigns ids: `POST /api/contacts` creates (answers `{"id"}`),
/// `PATCH /api/contacts/{id}` updates. Every call is kept.
#[derive(Default)]
struct Crm {
    calls: Mutex<Vec<(Method, String, Value)>>,
    next: Mutex<u64>,
    /// Answer creates without an id.
    no_id: Mutex<bool>,
}

async fn create(State(crm): State<Arc<Crm>>, Json(body): Json<Value>) -> (StatusCode, Json<Value>) {
    crm.calls
        .lock()
        .push((Method::POST, "/api/contacts".into(), body));
    if *crm.no_id.lock() {
        return (StatusCode::CREATED, Json(json!({"ok": true})));
    }
    let mut next = crm.next.lock();
    *next += 1;
    (
        StatusCode::CREATED,
        Json(json!({"id": format!("c-{next}")})),
    )
}

async fn update(
    State(crm): State<Arc<Crm>>,
    Path(id): Path<String>,
    Json(body): Json<Value>,
) -> StatusCode {
    crm.calls
        .lock()
        .push((Method::PATCH, format!("/api/contacts/{id}"), body));
    StatusCode::OK
}

async fn start_crm() -> (Arc<Crm>, String) {
    let crm = Arc::new(Crm::default());
    let app = Router::new()
        .route("/api/contacts", post(create))
        .route("/api/contacts/{id}", patch(update))
        .with_state(crm.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (crm, url)
}

fn config(url: &str) -> String {
    format!(
        r#"
[sites.LIVE.endpoints.shop]
kind = "webhook"

[sites.LIVE.endpoints.crm]
kind = "http"
url = "{url}/api/contacts"
link = "/id"
update_url = "{url}/api/contacts/{{link}}"
update_method = "PATCH"

[sites.LIVE.integrations.contacts]

[[sites.LIVE.integrations.contacts.flows]]
name = "contacts"
source = "shop"
target = "crm"
key = "email"
"#
    )
}

fn calls(crm: &Crm) -> Vec<(String, String)> {
    crm.calls
        .lock()
        .iter()
        .map(|(m, p, _)| (m.to_string(), p.clone()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_is_created_once_and_then_updated_at_its_id_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (crm, url) = start_crm().await;
    let mut daemon = Daemon::start(dir.path(), &config(&url)).await;
    let hook = |n: u32| json!({"email": "ann@example.com", "n": n});

    let (status, _) = daemon.hook("LIVE", "contacts", "contacts", hook(1)).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    eventually(10, "the create is linked", || async {
        let (_, links) = daemon.get("/api/v1/sites/LIVE/flows/contacts/links").await;
        links.as_array().is_some_and(|l| l.len() == 1)
    })
    .await;
    let (_, links) = daemon
        .get("/api/v1/sites/LIVE/flows/contacts/links?key=ann@example.com")
        .await;
    assert_eq!(links[0]["link"], "c-1", "{links}");

    // The link outlives the daemon.
    daemon.restart().await;
    for n in [2, 3] {
        let (status, _) = daemon.hook("LIVE", "contacts", "contacts", hook(n)).await;
        assert_eq!(status, StatusCode::ACCEPTED);
    }
    eventually(10, "both changes delivered", || async {
        crm.calls.lock().len() >= 3
    })
    .await;
    assert_eq!(
        calls(&crm),
        [
            ("POST".to_string(), "/api/contacts".to_string()),
            ("PATCH".to_string(), "/api/contacts/c-1".to_string()),
            ("PATCH".to_string(), "/api/contacts/c-1".to_string()),
        ]
    );
    let ns: Vec<Value> = crm
        .calls
        .lock()
        .iter()
        .map(|(_, _, b)| b["n"].clone())
        .collect();
    assert_eq!(ns, [json!(1), json!(2), json!(3)]);

    // Repaired by hand: set (the CLI), then deleted (the API); audited.
    let out = daemon.cli(&["link", "set", "LIVE", "contacts", "ann@example.com", "c-77"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    daemon.hook("LIVE", "contacts", "contacts", hook(4)).await;
    eventually(10, "the update goes to the id set by hand", || async {
        calls(&crm)
            .last()
            .is_some_and(|(_, p)| p == "/api/contacts/c-77")
    })
    .await;
    let out = daemon.cli(&["link", "list", "LIVE", "contacts"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("ann@example.com") && text.contains("c-77"),
        "{text}"
    );
    let resp = daemon
        .http()
        .delete(daemon.url("/api/v1/sites/LIVE/flows/contacts/links/ann@example.com"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    daemon.hook("LIVE", "contacts", "contacts", hook(5)).await;
    eventually(10, "a create again", || async { calls(&crm).len() >= 5 }).await;
    assert_eq!(calls(&crm)[4], ("POST".into(), "/api/contacts".into()));
    eventually(10, "the new create is linked", || async {
        let (_, links) = daemon.get("/api/v1/sites/LIVE/flows/contacts/links").await;
        links[0]["link"] == "c-2"
    })
    .await;
    let (_, audit) = daemon.get("/api/v1/sites/LIVE/audit").await;
    let actions: Vec<&str> = audit
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["action"].as_str())
        .collect();
    assert!(
        actions.contains(&"link.set") && actions.contains(&"link.delete"),
        "{actions:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_create_answered_without_an_id_is_an_error_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let (crm, url) = start_crm().await;
    *crm.no_id.lock() = true;
    let daemon = Daemon::start(dir.path(), &config(&url)).await;
    daemon
        .hook(
            "LIVE",
            "contacts",
            "contacts",
            json!({"email": "bo@example.com"}),
        )
        .await;
    eventually(10, "the transaction is in error", || async {
        let (_, errors) = daemon
            .get("/api/v1/sites/LIVE/integrations/contacts/transactions?state=error")
            .await;
        errors.as_array().is_some_and(|e| e.len() == 1)
    })
    .await;
    let (_, errors) = daemon
        .get("/api/v1/sites/LIVE/integrations/contacts/transactions?state=error")
        .await;
    let reason = errors[0]["last_error"].as_str().unwrap();
    assert!(reason.contains("/id"), "{reason}");
    // A flow whose target links nothing takes no repair.
    let (_, links) = daemon.get("/api/v1/sites/LIVE/flows/contacts/links").await;
    assert_eq!(links, json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_right_behind_its_create_goes_to_the_new_id() {
    // Both records in one post: the second is sent while the first one's
    // acknowledgement (and its link) may still be on its way to the store.
    let dir = tempfile::tempdir().unwrap();
    let (crm, url) = start_crm().await;
    let daemon = Daemon::start(dir.path(), &config(&url)).await;
    for round in 0..5 {
        let email = format!("r{round}@example.com");
        let records = json!([{"email": email, "n": 1}, {"email": email, "n": 2}]);
        let (status, _) = daemon.hook("LIVE", "contacts", "contacts", records).await;
        assert_eq!(status, StatusCode::ACCEPTED);
    }
    eventually(10, "ten deliveries", || async {
        crm.calls.lock().len() >= 10
    })
    .await;
    let calls = calls(&crm);
    for round in 0..5 {
        assert_eq!(calls[2 * round].0, "POST", "{calls:?}");
        assert_eq!(
            calls[2 * round + 1],
            (
                "PATCH".to_string(),
                format!("/api/contacts/c-{}", round + 1)
            ),
            "{calls:?}"
        );
    }
}
