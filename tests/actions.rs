//! Every answer about a site, integration, flow, endpoint and transaction
//! carries the actions its caller may take now (`"actions"`), from the
//! model and the caller's role; the session answer those beyond one site.
//! Against the real binary, for a viewer, an operator and an admin: what an
//! answer offers is taken (2xx), and what it does not offer is refused —
//! 403 when the role may not, 409 when the state does not fit.

mod common;

use common::*;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

/// LIVE: a webhook flow (nothing to run) into an HTTP target, and a
/// generator flow into a file, which a person may run.
fn config(target: &Target) -> String {
    format!(
        r#"{}
[sites.LIVE.endpoints.ticker]
kind = "generator"
count = 2

[sites.LIVE.endpoints.ledger]
kind = "file"
path = "ledger.jsonl"

[sites.LIVE.integrations.stock]

[[sites.LIVE.integrations.stock.flows]]
name = "ticks"
source = "ticker"
target = "ledger"
key = "id"
"#,
        webhook_site(target, 1)
    )
}

struct Caller<'a> {
    daemon: &'a Daemon,
    role: &'static str,
    token: String,
}

impl Caller<'_> {
    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let mut r = reqwest::Client::new()
            .request(method, self.daemon.url(&format!("/api/v1{path}")))
            .bearer_auth(&self.token);
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

    async fn get(&self, path: &str) -> Value {
        let (status, v) = self.call(Method::GET, path, None).await;
        assert_eq!(status, StatusCode::OK, "{} GET {path}: {v}", self.role);
        v
    }

    async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.call(Method::POST, path, Some(body)).await
    }

    /// The answer's `actions`.
    async fn actions(&self, path: &str) -> Vec<String> {
        actions(&self.get(path).await)
    }
}

fn actions(v: &Value) -> Vec<String> {
    v["actions"]
        .as_array()
        .unwrap_or_else(|| panic!("no actions in {v}"))
        .iter()
        .map(|a| a.as_str().unwrap().to_string())
        .collect()
}

const ORDERS: &str = "/sites/LIVE/integrations/orders";

/// Sets `orders` to `state` (as the admin).
async fn set_orders(admin: &Caller<'_>, state: &str) {
    let now = admin.get(ORDERS).await["state"]
        .as_str()
        .unwrap()
        .to_string();
    let steps: &[&str] = match (now.as_str(), state) {
        (a, b) if a == b => &[],
        ("active", "paused") => &["pause"],
        ("active", "stopped") | ("paused", "stopped") => &["stop"],
        ("paused", "active") => &["resume"],
        ("stopped", "active") => &["start"],
        ("stopped", "paused") => &["start", "pause"],
        other => panic!("no way from {other:?}"),
    };
    for step in steps {
        let (status, v) = admin.post(&format!("{ORDERS}/{step}"), json!({})).await;
        assert_eq!(status, StatusCode::OK, "{step}: {v}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_offer_what_the_caller_may_do_now_and_no_more() {
    let dir = tempfile::tempdir().unwrap();
    let target = Target::start().await;
    let daemon = Daemon::start(dir.path(), &config(&target)).await;
    let admin = Caller {
        daemon: &daemon,
        role: "admin",
        token: daemon.create_token("admin", "alice"),
    };
    let operator = Caller {
        daemon: &daemon,
        role: "operator",
        token: daemon.create_token("operator", "olga"),
    };
    let viewer = Caller {
        daemon: &daemon,
        role: "viewer",
        token: daemon.create_token("viewer", "victor"),
    };
    let callers = [&viewer, &operator, &admin];

    // Beyond one site: only an admin manages tokens; an operator may test
    // an alert channel.
    for (caller, want) in [
        (&viewer, vec![]),
        (&operator, vec!["test-alert"]),
        (&admin, vec!["manage-tokens", "test-alert"]),
    ] {
        assert_eq!(caller.actions("/session").await, want, "{}", caller.role);
    }

    // An integration in each state: what each role is offered, and that
    // the API takes exactly that.
    let every = ["pause", "resume", "start", "stop"];
    for (state, for_operator, for_admin) in [
        ("active", vec!["pause"], vec!["pause", "stop"]),
        ("paused", vec!["resume"], vec!["resume", "stop"]),
        ("stopped", vec![], vec!["start"]),
    ] {
        for caller in callers {
            set_orders(&admin, state).await;
            let offered = caller.actions(ORDERS).await;
            let want = match caller.role {
                "viewer" => vec![],
                "operator" => for_operator.clone(),
                _ => for_admin.clone(),
            };
            assert_eq!(offered, want, "{} on an {state} integration", caller.role);
            // The list says the same.
            let list = caller.get("/sites/LIVE/integrations").await;
            let listed = list
                .as_array()
                .unwrap()
                .iter()
                .find(|i| i["name"] == "orders")
                .unwrap();
            assert_eq!(actions(listed), want);
            for action in every {
                set_orders(&admin, state).await;
                let (status, v) = caller.post(&format!("{ORDERS}/{action}"), json!({})).await;
                let expected = if offered.iter().any(|a| a == action) {
                    StatusCode::OK
                } else if caller.role == "admin"
                    || (caller.role == "operator" && matches!(action, "pause" | "resume"))
                {
                    StatusCode::CONFLICT
                } else {
                    StatusCode::FORBIDDEN
                };
                assert_eq!(
                    status, expected,
                    "{} {action} on an {state} integration: {v}",
                    caller.role
                );
                if status == StatusCode::OK {
                    // The answer is the integration after the change, with
                    // what may be done now.
                    assert_ne!(actions(&v), offered, "{action}: {v}");
                }
            }
        }
    }
    set_orders(&admin, "active").await;

    // A transaction queued behind a pause: it may be ignored, nothing else.
    set_orders(&admin, "paused").await;
    let (status, _) = daemon.hook("LIVE", "orders", "web", order(1)).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let txs = operator
        .get("/sites/LIVE/integrations/orders/transactions")
        .await;
    let seq = txs[0]["seq"].as_i64().unwrap();
    assert_eq!(txs[0]["state"], "queued");
    let tx = format!("{ORDERS}/transactions/{seq}");
    assert_eq!(actions(&txs[0]), ["ignore"]);
    assert_eq!(operator.actions(&tx).await, ["ignore"]);
    assert!(viewer.actions(&tx).await.is_empty());
    let (status, v) = viewer.post(&format!("{tx}/ignore"), json!({})).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{v}");
    let (status, v) = operator.post(&format!("{tx}/retry"), json!({})).await;
    assert_eq!(status, StatusCode::CONFLICT, "{v}");
    let (status, v) = operator.post(&format!("{tx}/ignore"), json!({})).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["state"], "ignored");
    assert_eq!(actions(&v), ["replay"]);
    set_orders(&admin, "active").await;

    // Endpoints: a test for operators; new credentials only for a kind
    // that takes them, and only for admins.
    for (endpoint, for_operator, for_admin) in [
        ("crm", vec!["test"], vec!["test", "reauthorize"]),
        ("shop", vec!["test"], vec!["test"]),
        ("ledger", vec!["test"], vec!["test"]),
    ] {
        let path = format!("/sites/LIVE/endpoints/{endpoint}");
        assert!(viewer.actions(&path).await.is_empty());
        assert_eq!(operator.actions(&path).await, for_operator, "{endpoint}");
        assert_eq!(admin.actions(&path).await, for_admin, "{endpoint}");
    }
    let (status, v) = admin
        .post(
            "/sites/LIVE/endpoints/shop/reauthorize",
            json!({"token": "t"}),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "not offered, not taken: {v}"
    );

    // Flows: a webhook flow has nothing to run; a pull flow runs unless it
    // runs already or its integration is stopped.
    assert!(admin.actions("/sites/LIVE/flows/web").await.is_empty());
    let (status, v) = admin
        .post("/sites/LIVE/flows/web/run", json!({"mode": "all"}))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");
    let ticks = "/sites/LIVE/flows/ticks";
    eventually(20, "the start-up run of ticks is over", || async {
        admin.get(ticks).await["status"] != "Running"
    })
    .await;
    assert!(viewer.actions(ticks).await.is_empty());
    assert_eq!(operator.actions(ticks).await, ["run-all", "run-changed"]);
    let (status, v) = viewer
        .post(&format!("{ticks}/run"), json!({"mode": "all"}))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{v}");
    let (status, v) = admin
        .post("/sites/LIVE/integrations/stock/stop", json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert!(actions(&v["flows"][0]).is_empty(), "{v}");
    assert!(admin.actions(ticks).await.is_empty());
    let (status, v) = operator
        .post(&format!("{ticks}/run"), json!({"mode": "changed"}))
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{v}");

    // The site: stop while it runs, start while it is stopped (never stop
    // while it starts: the model refuses it), reload in any state; all
    // for admins only.
    let site = "/sites/LIVE";
    assert_eq!(admin.actions(site).await, ["stop", "reload"]);
    assert!(operator.actions(site).await.is_empty());
    assert!(viewer.actions(site).await.is_empty());
    let listed = admin.get("/sites").await;
    assert_eq!(actions(&listed[0]), ["stop", "reload"]);
    let (status, v) = operator
        .post("/sites/LIVE/stop", json!({"reason": "no"}))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{v}");
    let (status, v) = admin.post("/sites/LIVE/start", json!({})).await;
    assert_eq!(
        status,
        StatusCode::CONFLICT,
        "not offered while running: {v}"
    );
    let (status, v) = admin
        .post("/sites/LIVE/stop", json!({"reason": "stocktake"}))
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["state"], "stopped");
    assert_eq!(actions(&v), ["start", "reload"]);
    let (status, v) = admin
        .post("/sites/LIVE/stop", json!({"reason": "again"}))
        .await;
    assert_eq!(
        status,
        StatusCode::CONFLICT,
        "not offered while stopped: {v}"
    );
    let (status, v) = admin.post("/sites/LIVE/start", json!({})).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    // The answer comes once the site is starting or running; what it
    // offers fits the state it names.
    let offered = actions(&v);
    match v["state"].as_str().unwrap() {
        "running" => assert_eq!(offered, ["stop", "reload"]),
        "starting" => assert_eq!(offered, ["reload"]),
        other => panic!("a started site is {other}"),
    }
}
