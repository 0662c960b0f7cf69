//! The `http` target as an API client, black box: the real `sluice` binary
//! against a real HTTPS API made here (a certificate of a test CA), with
//! an OAuth2 token endpoint (client credentials) beside it. Records arrive
//! with the token; it is fetched once, reused, refreshed before it expires
//! and after the API revoked it; a wrong client secret makes the endpoint
//! Unauthorized until reauthorized. Bearer, basic and API-key credentials
//! reach the API in their headers; `method` and `{field}`s in `url` reach
//! the record's resource.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::IntoResponse;
use axum::routing::{any, post};
use axum::Router;
use common::tls::{TestCa, TlsListener};
use common::*;
use serde_json::{json, Value};

/// `app:right` in base64: the client's id and its right secret.
const RIGHT_CLIENT: &str = "Basic YXBwOnJpZ2h0";

/// One request the API took.
#[derive(Debug, Clone)]
struct Call {
    method: String,
    /// As sent: percent-encoded.
    path: String,
    authorization: Option<String>,
    api_key: Option<String>,
    body: Value,
}

#[derive(Default)]
struct ApiState {
    /// Requests to the token endpoint, each form it was sent.
    token_requests: Vec<String>,
    /// Access tokens issued and until when each is valid.
    issued: Vec<(String, Instant)>,
    /// The lifetime of the tokens it issues.
    expires_in: u64,
    /// Requests to the API refused for an unknown or expired token.
    refused: usize,
    calls: Vec<Call>,
}

/// The API and its token endpoint over HTTPS on 127.0.0.1. With `oauth`,
/// the API takes only a valid access token of its token endpoint; else it
/// takes anything and records the headers.
#[derive(Clone)]
struct Api {
    addr: std::net::SocketAddr,
    oauth: bool,
    state: Arc<Mutex<ApiState>>,
}

impl Api {
    async fn start(ca: &TestCa, oauth: bool, expires_in: u64) -> Api {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let api = Api {
            addr: listener.local_addr().unwrap(),
            oauth,
            state: Arc::new(Mutex::new(ApiState {
                expires_in,
                ..ApiState::default()
            })),
        };
        let app = Router::new()
            .route("/token", post(token))
            .route("/api/{*rest}", any(call))
            .with_state(api.clone());
        let listener = TlsListener {
            tcp: listener,
            acceptor: tokio_rustls::TlsAcceptor::from(ca.server_config("api", None)),
            connections: Arc::default(),
        };
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        api
    }

    fn url(&self, path: &str) -> String {
        format!("https://{}{path}", self.addr)
    }

    fn token_requests(&self) -> usize {
        self.state.lock().unwrap().token_requests.len()
    }

    fn calls(&self) -> Vec<Call> {
        self.state.lock().unwrap().calls.clone()
    }

    fn refused(&self) -> usize {
        self.state.lock().unwrap().refused
    }

    /// Every token issued so far is revoked.
    fn revoke(&self) {
        self.state.lock().unwrap().issued.clear();
    }

    /// Whether every token issued so far has expired.
    fn all_expired(&self) -> bool {
        let now = Instant::now();
        self.state
            .lock()
            .unwrap()
            .issued
            .iter()
            .all(|(_, until)| *until < now)
    }
}

/// `POST /token`: the client credentials grant, the client by HTTP Basic.
async fn token(State(api): State<Api>, headers: HeaderMap, form: String) -> impl IntoResponse {
    let mut s = api.state.lock().unwrap();
    s.token_requests.push(form.clone());
    let client = headers.get("authorization").and_then(|v| v.to_str().ok());
    if client != Some(RIGHT_CLIENT) {
        return (
            StatusCode::UNAUTHORIZED,
            axum::Json(json!({"error": "invalid_client"})),
        );
    }
    if !form.contains("grant_type=client_credentials") {
        return (
            StatusCode::BAD_REQUEST,
            axum::Json(json!({"error": "unsupported_grant_type"})),
        );
    }
    let token = format!("tok-{}", s.token_requests.len());
    let until = Instant::now() + Duration::from_secs(s.expires_in);
    s.issued.push((token.clone(), until));
    (
        StatusCode::OK,
        axum::Json(
            json!({"access_token": token, "token_type": "Bearer", "expires_in": s.expires_in}),
        ),
    )
}

/// Anything under `/api/`: recorded; with OAuth, only with a valid token.
async fn call(
    State(api): State<Api>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: String,
) -> axum::response::Response {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let authorization = header("authorization");
    let mut s = api.state.lock().unwrap();
    if api.oauth {
        let now = Instant::now();
        let valid = s.issued.iter().any(|(t, until)| {
            authorization.as_deref() == Some(format!("Bearer {t}").as_str()) && *until > now
        });
        if !valid {
            s.refused += 1;
            return (
                StatusCode::UNAUTHORIZED,
                axum::Json(json!({"error": "invalid_token"})),
            )
                .into_response();
        }
    }
    if method == Method::GET {
        return StatusCode::OK.into_response();
    }
    s.calls.push(Call {
        method: method.to_string(),
        path: uri.path().to_string(),
        authorization,
        api_key: header("x-api-key"),
        body: serde_json::from_str(&body).unwrap_or(Value::Null),
    });
    let id = s.calls.len();
    (StatusCode::CREATED, axum::Json(json!({"id": id}))).into_response()
}

/// Site LIVE: webhook `shop` → http endpoint `crm` (these lines, trusting
/// the test CA), integration `orders`, errors skipped.
fn site(ca: &TestCa, url: &str, crm: &str) -> String {
    webhook_site_with(
        url,
        "",
        &format!("ca_file = \"{}\"\n{crm}", ca.ca_file().display()),
    )
    .replace(
        "[sites.LIVE.integrations.orders]\n",
        "[sites.LIVE.integrations.orders]\non_error = \"skip\"\n",
    )
}

fn oauth2(api: &Api, secret_env: &str) -> String {
    format!(
        "auth = \"oauth2\"\ntoken_url = \"{}\"\nclient_id = \"app\"\nclient_secret_env = \"{secret_env}\"\nscope = \"crm.write\"",
        api.url("/token")
    )
}

async fn endpoint_state(daemon: &Daemon) -> String {
    let (_, crm) = daemon.get("/api/v1/sites/LIVE/endpoints/crm").await;
    crm["state"].as_str().unwrap_or_default().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oauth2_token_is_fetched_once_reused_refreshed_and_renewed_when_revoked() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new(dir.path(), "api");
    // Two seconds of life: used until 1.8 s, then fetched again.
    let api = Api::start(&ca, true, 2).await;
    std::env::set_var("SLUICE_HTTP_API_SECRET_RIGHT", "right");
    let toml = site(
        &ca,
        &api.url("/api/customers"),
        &oauth2(&api, "SLUICE_HTTP_API_SECRET_RIGHT"),
    );
    let daemon = Daemon::start(dir.path(), &toml).await;

    // Records arrive with the token, fetched once for all of them.
    for n in 0..5 {
        daemon.hook("LIVE", "orders", "web", order(n)).await;
    }
    eventually(10, "5 records at the API", || async {
        api.calls().len() >= 5
    })
    .await;
    let calls = api.calls();
    assert!(
        calls
            .iter()
            .all(|c| c.authorization.as_deref() == Some("Bearer tok-1") && c.method == "POST"),
        "{calls:?}"
    );
    assert_eq!(api.token_requests(), 1, "one token for all");
    let form = api.state.lock().unwrap().token_requests[0].clone();
    assert!(
        form.contains("grant_type=client_credentials") && form.contains("scope=crm.write"),
        "{form}"
    );

    // Past its life: a new one is fetched before the API could refuse it.
    eventually(5, "the token expired at the API", || async {
        api.all_expired()
    })
    .await;
    daemon.hook("LIVE", "orders", "web", order(5)).await;
    eventually(10, "record 5 at the API", || async {
        api.calls().len() >= 6
    })
    .await;
    assert_eq!(api.token_requests(), 2, "refreshed once");
    assert_eq!(api.refused(), 0, "never sent an expired token");
    assert_eq!(
        api.calls()[5].authorization.as_deref(),
        Some("Bearer tok-2")
    );

    // Revoked: the API answers 401 once; a fresh token is fetched and the
    // record delivered, and the endpoint never counts as unauthorized.
    api.revoke();
    daemon.hook("LIVE", "orders", "web", order(6)).await;
    eventually(10, "record 6 at the API", || async {
        api.calls().len() >= 7
    })
    .await;
    assert_eq!(api.refused(), 1);
    assert_eq!(api.token_requests(), 3);
    assert_eq!(
        api.calls()[6].authorization.as_deref(),
        Some("Bearer tok-3")
    );
    assert_eq!(endpoint_state(&daemon).await, "online");
    let log = daemon.log("LIVE").await;
    assert!(!log.contains("right"), "no secret in the log: {log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_client_secret_holds_until_reauthorized_with_the_right_one() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new(dir.path(), "api");
    let api = Api::start(&ca, true, 3600).await;
    std::env::set_var("SLUICE_HTTP_API_SECRET_WRONG", "wrong-S3cret");
    let toml = site(
        &ca,
        &api.url("/api/customers"),
        &oauth2(&api, "SLUICE_HTTP_API_SECRET_WRONG"),
    );
    let daemon = Daemon::start(dir.path(), &toml).await;

    for n in 0..3 {
        daemon.hook("LIVE", "orders", "web", order(n)).await;
    }
    eventually(10, "crm unauthorized", || async {
        endpoint_state(&daemon).await == "unauthorized"
    })
    .await;
    assert!(api.calls().is_empty());
    let (_, crm) = daemon.get("/api/v1/sites/LIVE/endpoints/crm").await;
    let error = crm["last_error"].as_str().unwrap_or_default();
    assert!(
        error.contains("401") && error.contains("invalid_client") && !error.contains("S3cret"),
        "{crm}"
    );

    // Credentials of another kind, or none: a 400 that says what it takes.
    for body in [
        json!({"token": "x"}),
        json!({}),
        json!({"key": "k", "client_secret": "s"}),
    ] {
        let (status, answer) = daemon
            .post("/api/v1/sites/LIVE/endpoints/crm/reauthorize", body)
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
        assert!(
            answer["error"]
                .as_str()
                .unwrap()
                .contains("{\"client_secret\"} (auth = \"oauth2\")"),
            "{answer}"
        );
    }

    // The right secret, by the CLI: Online, and the queue drains.
    let out = std::process::Command::new(BIN)
        .args([
            "--server",
            &daemon.server(),
            "endpoint",
            "reauthorize",
            "LIVE",
            "crm",
            "--client-secret",
            "--secret-env",
            "S",
        ])
        .env("S", "right")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(endpoint_state(&daemon).await, "online");
    eventually(10, "the 3 held records at the API", || async {
        api.calls().len() >= 3
    })
    .await;
    let calls = api.calls();
    let first = calls[0].authorization.clone().unwrap_or_default();
    assert!(
        first.starts_with("Bearer tok-")
            && calls
                .iter()
                .all(|c| c.authorization.as_ref() == Some(&first)),
        "{calls:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_basic_and_api_key_reach_the_api_in_their_headers() {
    std::env::set_var("SLUICE_HTTP_API_TOKEN", "t0k");
    std::env::set_var("SLUICE_HTTP_API_PASSWORD", "pass");
    std::env::set_var("SLUICE_HTTP_API_KEY", "k3y");
    let cases = [
        (
            "token_env = \"SLUICE_HTTP_API_TOKEN\"",
            Some("Bearer t0k"),
            None,
        ),
        (
            "auth = \"basic\"\nusername = \"user\"\npassword_env = \"SLUICE_HTTP_API_PASSWORD\"",
            Some("Basic dXNlcjpwYXNz"),
            None,
        ),
        (
            "auth = \"api_key\"\nheader = \"X-Api-Key\"\nkey_env = \"SLUICE_HTTP_API_KEY\"",
            None,
            Some("k3y"),
        ),
    ];
    for (crm, authorization, api_key) in cases {
        let dir = tempfile::tempdir().unwrap();
        let ca = TestCa::new(dir.path(), "api");
        let api = Api::start(&ca, false, 0).await;
        let daemon = Daemon::start(dir.path(), &site(&ca, &api.url("/api/customers"), crm)).await;
        daemon.hook("LIVE", "orders", "web", order(1)).await;
        eventually(10, "the record at the API", || async {
            !api.calls().is_empty()
        })
        .await;
        let call = &api.calls()[0];
        assert_eq!(call.authorization.as_deref(), authorization, "{crm}");
        assert_eq!(call.api_key.as_deref(), api_key, "{crm}");
        if api_key.is_some() {
            // A new key by reauthorization reaches the API too.
            let (status, answer) = daemon
                .post(
                    "/api/v1/sites/LIVE/endpoints/crm/reauthorize",
                    json!({"key": "n3w"}),
                )
                .await;
            assert_eq!(status, StatusCode::OK, "{answer}");
            daemon.hook("LIVE", "orders", "web", order(2)).await;
            eventually(10, "the second record at the API", || async {
                api.calls().len() >= 2
            })
            .await;
            assert_eq!(api.calls()[1].api_key.as_deref(), Some("n3w"));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_goes_to_the_records_own_resource() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new(dir.path(), "api");
    let api = Api::start(&ca, false, 0).await;
    let toml = site(
        &ca,
        &api.url("/api/customers/{customer.id}"),
        "method = \"PUT\"",
    );
    let daemon = Daemon::start(dir.path(), &toml).await;

    for body in [
        json!({"id": "o1", "customer": {"id": "c 1/x"}}),
        json!({"id": "o2"}),
        json!({"id": "o3", "customer": {"id": 42}}),
    ] {
        let (status, _) = daemon.hook("LIVE", "orders", "web", body).await;
        assert_eq!(status, StatusCode::ACCEPTED);
    }
    eventually(10, "two records at the API", || async {
        api.calls().len() >= 2
    })
    .await;
    let calls: Vec<_> = api
        .calls()
        .into_iter()
        .map(|c| (c.method, c.path, c.body["id"].clone()))
        .collect();
    assert_eq!(
        calls,
        [
            ("PUT".into(), "/api/customers/c%201%2Fx".into(), json!("o1")),
            ("PUT".into(), "/api/customers/42".into(), json!("o3")),
        ]
    );
    // The record without the field: failed for good, naming it.
    let (_, errors) = daemon
        .get("/api/v1/sites/LIVE/integrations/orders/transactions?state=error")
        .await;
    let errors = errors.as_array().unwrap();
    assert_eq!(errors.len(), 1, "{errors:?}");
    let error = errors[0]["last_error"].as_str().unwrap();
    assert!(error.contains("'customer.id'"), "{error}");

    // The health test calls the url without the record's part.
    let (status, answer) = daemon
        .post("/api/v1/sites/LIVE/endpoints/crm/test", json!({}))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(answer["ok"], true, "{answer}");
    assert!(
        answer["detail"]
            .as_str()
            .unwrap()
            .contains("GET https://127.0.0.1")
            && answer["detail"]
                .as_str()
                .unwrap()
                .contains("/api/customers/: "),
        "{answer}"
    );
}
