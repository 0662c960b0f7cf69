//! `kind = "http_poll"`: a flow pulls records from a real JSON API (axum on
//! 127.0.0.1, over HTTPS too) page by page into the queue, and a file
//! target receives them in order; 'Send Changed' passes the checkpoint, a
//! 429 is waited out, and a run halted mid-way resumes without losing or
//! repeating a record, even across a page boundary inside equal cursors.

mod common;

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use common::*;
use serde_json::{json, Value};

/// One request the API received: its route, its query, when.
#[derive(Debug, Clone)]
struct Seen {
    route: &'static str,
    query: HashMap<String, String>,
    at: Instant,
}

impl Seen {
    /// The offset in the record list the request asks for.
    fn offset(&self, page_size: usize) -> usize {
        offset_of(self.route, &self.query, page_size)
    }
}

fn offset_of(route: &str, query: &HashMap<String, String>, page_size: usize) -> usize {
    let number = |k: &str| query.get(k).and_then(|v| v.parse::<usize>().ok());
    match route {
        "page" => (number("page").unwrap_or(1) - 1) * page_size,
        "cursor" => number("cursor").unwrap_or(0),
        _ => number("offset").unwrap_or(0),
    }
}

#[derive(Default)]
struct ApiState {
    /// `{"id": n, "updated_at": u}`, served in `(updated_at, id)` order.
    records: Vec<Value>,
    page_size: usize,
    seen: Vec<Seen>,
    /// Answers 429 to the next request for this offset (with this
    /// `Retry-After` in seconds, if any), front first.
    busy: VecDeque<(usize, Option<u64>)>,
    /// Answers the next request for this offset with this status and body
    /// instead of the page, front first.
    broken: VecDeque<(usize, u16, &'static str)>,
    /// A request for this offset waits until `open` is set.
    block_at: Option<usize>,
    /// Pages need `Authorization: Bearer` with the token `/oauth/token`
    /// issued last (to client `sluice` with secret `s3cret`).
    oauth: bool,
    issued: Vec<String>,
    refused: usize,
}

/// A real paginated JSON API on 127.0.0.1, four ways:
/// - `/next?offset=`: `{"data": […], "links": {"next": "/next?offset=…"}}`;
/// - `/link?offset=`: a bare array, `Link: <…>; rel="next"`;
/// - `/page?page=` (from 1): `{"items": […]}`, empty past the end;
/// - `/cursor?cursor=`: `{"data": […], "meta": {"next": "…" | null}}`.
///
/// Each keeps `updated_since` (records with `updated_at >= since`, as
/// many APIs do: sluice drops what is not past its checkpoint).
#[derive(Clone)]
struct Api {
    addr: SocketAddr,
    scheme: &'static str,
    state: Arc<Mutex<ApiState>>,
    open: Arc<tokio::sync::watch::Sender<bool>>,
}

impl Api {
    async fn start(records: Vec<Value>, page_size: usize) -> Api {
        Api::start_with(records, page_size, None).await
    }

    async fn start_with(
        records: Vec<Value>,
        page_size: usize,
        tls: Option<Arc<rustls::ServerConfig>>,
    ) -> Api {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let api = Api {
            addr: listener.local_addr().unwrap(),
            scheme: if tls.is_some() { "https" } else { "http" },
            state: Arc::new(Mutex::new(ApiState {
                records,
                page_size,
                ..ApiState::default()
            })),
            open: Arc::new(tokio::sync::watch::channel(true).0),
        };
        let app = Router::new()
            .route("/next", get(|s, q, h| answer(s, q, h, "next")))
            .route("/link", get(|s, q, h| answer(s, q, h, "link")))
            .route("/page", get(|s, q, h| answer(s, q, h, "page")))
            .route("/cursor", get(|s, q, h| answer(s, q, h, "cursor")))
            .route("/oauth/token", axum::routing::post(token))
            .with_state(api.clone());
        match tls {
            None => {
                tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
            }
            Some(config) => {
                let listener = tls::TlsListener {
                    tcp: listener,
                    acceptor: tokio_rustls::TlsAcceptor::from(config),
                    connections: Arc::default(),
                };
                tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
            }
        }
        api
    }

    fn url(&self, route: &str) -> String {
        format!("{}://{}/{route}", self.scheme, self.addr)
    }

    fn seen(&self) -> Vec<Seen> {
        self.state.lock().unwrap().seen.clone()
    }

    fn page_size(&self) -> usize {
        self.state.lock().unwrap().page_size
    }

    /// Holds requests for `offset` until [`Api::release`].
    fn block_at(&self, offset: usize) {
        self.state.lock().unwrap().block_at = Some(offset);
        self.open.send_replace(false);
    }

    fn release(&self) {
        self.state.lock().unwrap().block_at = None;
        self.open.send_replace(true);
    }

    fn busy(&self, offset: usize, retry_after: Option<u64>) {
        self.state
            .lock()
            .unwrap()
            .busy
            .push_back((offset, retry_after));
    }

    fn broken(&self, offset: usize, status: u16, body: &'static str) {
        self.state
            .lock()
            .unwrap()
            .broken
            .push_back((offset, status, body));
    }

    /// Sets `updated_at` of record `id` (adding the record if new).
    fn update(&self, id: i64, updated_at: i64) {
        let mut state = self.state.lock().unwrap();
        match state.records.iter_mut().find(|r| r["id"] == id) {
            Some(r) => r["updated_at"] = json!(updated_at),
            None => state
                .records
                .push(json!({"id": id, "updated_at": updated_at})),
        }
    }
}

/// OAuth2 client credentials: client `sluice`, secret `s3cret` by HTTP
/// Basic; a new token each time, valid for an hour.
async fn token(State(api): State<Api>, headers: HeaderMap, body: String) -> Response {
    let expected = format!("Basic {}", base64_basic::encode("sluice:s3cret"));
    let basic = headers.get("authorization").and_then(|v| v.to_str().ok());
    if basic != Some(expected.as_str()) || !body.contains("grant_type=client_credentials") {
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({"error": "invalid_client"})),
        )
            .into_response();
    }
    let mut state = api.state.lock().unwrap();
    let token = format!("tok-{}", state.issued.len() + 1);
    state.issued.push(token.clone());
    Json(json!({"access_token": token, "token_type": "Bearer", "expires_in": 3600})).into_response()
}

/// Base64 of HTTP Basic credentials, written out (no crate for a test).
mod base64_basic {
    pub fn encode(s: &str) -> String {
        const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let b = s.as_bytes();
        let mut out = String::new();
        for chunk in b.chunks(3) {
            let n = chunk
                .iter()
                .enumerate()
                .fold(0u32, |n, (i, &c)| n | (c as u32) << (16 - 8 * i));
            for i in 0..4 {
                if i <= chunk.len() {
                    out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
                } else {
                    out.push('=');
                }
            }
        }
        out
    }
}

async fn answer(
    State(api): State<Api>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    route: &'static str,
) -> Response {
    let (page, next, blocked) = {
        let mut state = api.state.lock().unwrap();
        if state.oauth {
            let given = headers.get("authorization").and_then(|v| v.to_str().ok());
            let fresh = state.issued.last().map(|t| format!("Bearer {t}"));
            if given.is_none() || given.map(str::to_string) != fresh {
                state.refused += 1;
                return (StatusCode::UNAUTHORIZED, "token required").into_response();
            }
        }
        state.seen.push(Seen {
            route,
            query: query.clone(),
            at: Instant::now(),
        });
        let size = state.page_size;
        let offset = offset_of(route, &query, size);
        if state.busy.front().is_some_and(|(o, _)| *o == offset) {
            let (_, retry_after) = state.busy.pop_front().unwrap();
            let mut response = StatusCode::TOO_MANY_REQUESTS.into_response();
            if let Some(secs) = retry_after {
                response
                    .headers_mut()
                    .insert("retry-after", secs.to_string().parse().unwrap());
            }
            return response;
        }
        if state.broken.front().is_some_and(|(o, _, _)| *o == offset) {
            let (_, status, body) = state.broken.pop_front().unwrap();
            return (StatusCode::from_u16(status).unwrap(), body).into_response();
        }
        let since = query
            .get("updated_since")
            .map(|s| s.parse::<i64>().expect("a number since"));
        let mut records: Vec<Value> = state
            .records
            .iter()
            .filter(|r| since.is_none_or(|s| r["updated_at"].as_i64().unwrap() >= s))
            .cloned()
            .collect();
        records.sort_by_key(|r| (r["updated_at"].as_i64(), r["id"].as_i64()));
        let page: Vec<Value> = records.iter().skip(offset).take(size).cloned().collect();
        let next = (offset + size < records.len()).then_some(offset + size);
        (page, next, state.block_at == Some(offset))
    };
    if blocked {
        let mut open = api.open.subscribe();
        open.wait_for(|open| *open).await.ok();
    }
    // The next page keeps the query but its position.
    let next_query = |key: &str, value: String| {
        let mut q = query.clone();
        q.insert(key.into(), value);
        serde_urlencoded::to_string(q).unwrap()
    };
    match route {
        "next" => Json(json!({
            "data": page,
            "links": {"next": next.map(|o| format!("/next?{}", next_query("offset", o.to_string())))},
        }))
        .into_response(),
        "link" => {
            let mut headers = HeaderMap::new();
            headers.insert(
                "link",
                format!("<{}>; rel=\"first\"", api.url("link")).parse().unwrap(),
            );
            if let Some(o) = next {
                let url = format!("{}?{}", api.url("link"), next_query("offset", o.to_string()));
                headers.append("link", format!("<{url}>; rel=\"next\"").parse().unwrap());
            }
            (headers, Json(json!(page))).into_response()
        }
        "page" => Json(json!({"items": page})).into_response(),
        _ => Json(json!({
            "data": page,
            "meta": {"next": next.map(|o| o.to_string())},
        }))
        .into_response(),
    }
}

/// Records `id` 1..=n with `updated_at` = 10 × id.
fn records(n: i64) -> Vec<Value> {
    (1..=n)
        .map(|id| json!({"id": id, "updated_at": id * 10}))
        .collect()
}

/// A site `LIVE`, integration `orders`: for each `(flow, endpoint
/// settings)`, an `http_poll` endpoint `{flow}_api` and a flow `flow` to
/// the file `{dir}/{flow}.jsonl` (key `id`, cursor `updated_at`).
fn site(dir: &Path, flows: &[(&str, String)]) -> String {
    let mut toml = String::from("[sites.LIVE.integrations.orders]\n");
    for (flow, api) in flows {
        toml.push_str(&format!(
            r#"
[sites.LIVE.endpoints.{flow}_api]
kind = "http_poll"
{api}

[sites.LIVE.endpoints.{flow}_out]
kind = "file"
path = "{out}"

[[sites.LIVE.integrations.orders.flows]]
name = "{flow}"
source = "{flow}_api"
target = "{flow}_out"
key = "id"
cursor = "updated_at"
"#,
            out = out(dir, flow).display()
        ));
    }
    toml
}

fn out(dir: &Path, flow: &str) -> PathBuf {
    dir.join(format!("{flow}.jsonl"))
}

/// The ids the file target of `flow` received, in order.
fn delivered(dir: &Path, flow: &str) -> Vec<i64> {
    std::fs::read_to_string(out(dir, flow))
        .unwrap_or_default()
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["id"]
                .as_i64()
                .unwrap()
        })
        .collect()
}

/// Asks for a run of `flow` in `mode`; the id of the run before it.
async fn start_run(daemon: &Daemon, flow: &str, mode: &str) -> Value {
    let before = daemon.flow("LIVE", flow).await["last_run"]["id"].clone();
    let (status, answer) = daemon
        .post(
            &format!("/api/v1/sites/LIVE/flows/{flow}/run"),
            json!({ "mode": mode }),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    before
}

/// Runs `flow` in `mode` and waits until the run is over, all it queued is
/// delivered and the file holds `total` records.
async fn run(daemon: &Daemon, dir: &Path, flow: &str, mode: &str, total: usize) {
    let before = start_run(daemon, flow, mode).await;
    eventually(
        30,
        &format!("{flow}: {total} records delivered"),
        || async {
            let f = daemon.flow("LIVE", flow).await;
            if f["last_run"]["id"] == before {
                return false;
            }
            if f["last_run"]["result"] == "failed" {
                panic!("the run failed: {f}");
            }
            f["last_run"]["result"] == "success"
                && daemon.integration("LIVE", "orders").await["queued"] == 0
                && delivered(dir, flow).len() >= total
        },
    )
    .await;
}

/// Runs `flow` in `mode`, which must fail: the run as the API shows it.
async fn run_failing(daemon: &Daemon, flow: &str, mode: &str) -> Value {
    let before = start_run(daemon, flow, mode).await;
    let last = Arc::new(Mutex::new(Value::Null));
    eventually(30, &format!("{flow}: the run over"), || async {
        let run = daemon.flow("LIVE", flow).await["last_run"].clone();
        let over = run["id"] != before && !run["result"].is_null();
        *last.lock().unwrap() = run;
        over
    })
    .await;
    let last = last.lock().unwrap().clone();
    assert_eq!(last["result"], "failed", "{last}");
    last
}

fn ids(range: std::ops::RangeInclusive<i64>) -> Vec<i64> {
    range.collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_all_reads_every_page_by_next_pointer_and_send_changed_only_what_changed() {
    let dir = tempfile::tempdir().unwrap();
    let api = Api::start(records(10), 3).await;
    let endpoint = format!(
        "url = \"{}\"\nrecords = \"/data\"\nnext = \"/links/next\"\nsince_param = \"updated_since\"",
        api.url("next")
    );
    let daemon = Daemon::start(dir.path(), &site(dir.path(), &[("pull", endpoint)])).await;

    run(&daemon, dir.path(), "pull", "all", 10).await;
    assert_eq!(delivered(dir.path(), "pull"), ids(1..=10));
    let seen = api.seen();
    assert_eq!(
        seen.iter().map(|s| s.offset(3)).collect::<Vec<_>>(),
        [0, 3, 6, 9],
        "4 pages, each once"
    );
    assert!(
        seen.iter().all(|s| !s.query.contains_key("updated_since")),
        "'Send All' passes no checkpoint: {seen:?}"
    );
    assert_eq!(
        daemon.flow("LIVE", "pull").await["last_run"]["captured"],
        10
    );

    // The API gains changed records: 4 and 7 updated, 11 new.
    api.update(4, 110);
    api.update(7, 120);
    api.update(11, 130);
    run(&daemon, dir.path(), "pull", "changed", 13).await;
    let seen = &api.seen()[4..];
    assert_eq!(
        seen[0].query.get("updated_since").map(String::as_str),
        Some("100"),
        "the checkpoint is passed: {seen:?}"
    );
    assert!(
        seen.iter().all(|s| s.query["updated_since"] == "100"),
        "every page keeps it: {seen:?}"
    );
    // Record 10 (updated_at 100, given again by the API's >=) is dropped.
    assert_eq!(delivered(dir.path(), "pull")[10..], [4, 7, 11]);
    assert_eq!(daemon.flow("LIVE", "pull").await["last_run"]["captured"], 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pagination_by_link_header_page_number_and_cursor_over_https() {
    let dir = tempfile::tempdir().unwrap();
    let ca = tls::TestCa::new(dir.path(), "api");
    let api = Api::start_with(records(7), 3, Some(ca.server_config("api", None))).await;
    let tls = format!("ca_file = \"{}\"", ca.ca_file().display());
    let flows = [
        (
            "linked",
            format!("url = \"{}\"\nnext = \"link-header\"\n{tls}", api.url("link")),
        ),
        (
            "numbered",
            format!(
                "url = \"{}\"\nrecords = \"/items\"\npage_param = \"page\"\n{tls}",
                api.url("page")
            ),
        ),
        (
            "cursored",
            format!(
                "url = \"{}\"\nrecords = \"/data\"\ncursor_param = \"cursor\"\nnext_cursor = \"/meta/next\"\n{tls}",
                api.url("cursor")
            ),
        ),
    ];
    let daemon = Daemon::start(dir.path(), &site(dir.path(), &flows)).await;

    // The health test reaches the API over HTTPS.
    let (status, answer) = daemon
        .post("/api/v1/sites/LIVE/endpoints/linked_api/test", json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["ok"], true, "{answer}");

    for (flow, _) in &flows {
        run(&daemon, dir.path(), flow, "all", 7).await;
        assert_eq!(delivered(dir.path(), flow), ids(1..=7), "{flow}");
    }
    let pages = |route: &str| {
        let mut offsets: Vec<_> = api
            .seen()
            .iter()
            .filter(|s| s.route == route)
            .map(|s| s.offset(3))
            .collect();
        offsets.sort();
        offsets
    };
    // The health test's GET of the url, then 3 pages.
    assert_eq!(pages("link"), [0, 0, 3, 6]);
    // By page number: pages 1, 2, 3, then the empty page 4 ends it.
    assert_eq!(pages("page"), [0, 3, 6, 9]);
    assert_eq!(pages("cursor"), [0, 3, 6]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_is_waited_out_and_the_same_page_fetched_again() {
    let dir = tempfile::tempdir().unwrap();
    let api = Api::start(records(8), 2).await;
    // Page 2: 429 with Retry-After: 1; page 3: 429 without (1 s back-off).
    api.busy(2, Some(1));
    api.busy(4, None);
    let endpoint = format!(
        "url = \"{}\"\nrecords = \"/data\"\nnext = \"/links/next\"",
        api.url("next")
    );
    let daemon = Daemon::start(dir.path(), &site(dir.path(), &[("pull", endpoint)])).await;
    run(&daemon, dir.path(), "pull", "all", 8).await;
    assert_eq!(
        delivered(dir.path(), "pull"),
        ids(1..=8),
        "nothing lost or repeated"
    );
    let seen = api.seen();
    assert_eq!(
        seen.iter().map(|s| s.offset(2)).collect::<Vec<_>>(),
        [0, 2, 2, 4, 4, 6],
        "each refused page asked again"
    );
    let waited = |i: usize| seen[i + 1].at - seen[i].at;
    assert!(
        waited(1).as_millis() >= 950,
        "Retry-After honoured: {:?}",
        waited(1)
    );
    assert!(waited(3).as_millis() >= 950, "backed off: {:?}", waited(3));
}

/// Starts 'Send Changed' with the API holding the request for `offset`,
/// waits until the run queued `queued` records and asked for it, and stops
/// the site; then lets the API answer, starts the site again and runs
/// 'Send Changed' to the end.
async fn halt_and_resume(
    daemon: &Daemon,
    api: &Api,
    dir: &Path,
    offset: usize,
    queued: i64,
    total: usize,
) {
    api.block_at(offset);
    let (status, answer) = daemon
        .post(
            "/api/v1/sites/LIVE/flows/pull/run",
            json!({"mode": "changed"}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    let size = api.page_size();
    eventually(30, "the run waits for the held page", || async {
        api.seen().iter().any(|s| s.offset(size) == offset)
            && daemon.flow("LIVE", "pull").await["last_run"]["captured"] == queued
    })
    .await;
    let (status, answer) = daemon
        .post(
            "/api/v1/sites/LIVE/stop",
            json!({"reason": "API maintenance"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let flow = daemon.flow("LIVE", "pull").await;
    assert_eq!(flow["last_run"]["result"], "halted", "{flow}");
    assert_eq!(flow["last_run"]["captured"], queued, "{flow}");
    api.release();

    let (status, _) = daemon.post("/api/v1/sites/LIVE/start", json!({})).await;
    assert_eq!(status, StatusCode::OK);
    run(daemon, dir, "pull", "changed", total).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_halted_by_a_site_stop_resumes_without_loss_or_repeat() {
    let dir = tempfile::tempdir().unwrap();
    let api = Api::start(records(12), 3).await;
    let endpoint = format!(
        "url = \"{}\"\nrecords = \"/data\"\nnext = \"/links/next\"\nsince_param = \"updated_since\"",
        api.url("next")
    );
    let daemon = Daemon::start(dir.path(), &site(dir.path(), &[("pull", endpoint)])).await;
    // Pages 1 and 2 are queued but for record 6, held back with the
    // cursor it ends on (it may have equals on page 3): 5 records.
    halt_and_resume(&daemon, &api, dir.path(), 6, 5, 12).await;
    assert_eq!(delivered(dir.path(), "pull"), ids(1..=12));
    let resumed: Vec<_> = api
        .seen()
        .into_iter()
        .filter_map(|s| s.query.get("updated_since").cloned())
        .collect();
    assert_eq!(
        resumed.first().map(String::as_str),
        Some("50"),
        "{resumed:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn equal_cursors_across_an_api_page_boundary_are_neither_lost_nor_repeated() {
    let dir = tempfile::tempdir().unwrap();
    // Pages of 3: [1:10 2:20 3:30] [4:30 5:30 6:40] [7:50]: the run of 30s
    // crosses the boundary.
    let updated = [10, 20, 30, 30, 30, 40, 50];
    let records = updated
        .iter()
        .enumerate()
        .map(|(i, u)| json!({"id": i as i64 + 1, "updated_at": u}))
        .collect();
    let api = Api::start(records, 3).await;
    let endpoint = format!(
        "url = \"{}\"\nrecords = \"/data\"\nnext = \"/links/next\"\nsince_param = \"updated_since\"",
        api.url("next")
    );
    let daemon = Daemon::start(dir.path(), &site(dir.path(), &[("pull", endpoint)])).await;
    // Halted before page 2: page 1 queued 1 and 2 only (checkpoint 20);
    // record 3 waited for the other 30s.
    halt_and_resume(&daemon, &api, dir.path(), 3, 2, 7).await;
    assert_eq!(delivered(dir.path(), "pull"), ids(1..=7));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_page_fails_the_run_with_a_clear_message_and_the_next_run_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let api = Api::start(records(9), 3).await;
    // A password in the url: never in a message.
    let url = api.url("next").replace("://", "://reader:S3cret@");
    let pull = format!(
        "url = \"{url}\"\nrecords = \"/data\"\nnext = \"/links/next\"\nsince_param = \"updated_since\""
    );
    let small = format!(
        "url = \"{}\"\nrecords = \"/data\"\nnext = \"/links/next\"\nmax_page_bytes = 64",
        api.url("next")
    );
    let daemon = Daemon::start(
        dir.path(),
        &site(dir.path(), &[("pull", pull), ("small", small)]),
    )
    .await;
    let shown = format!("GET http://***@{}/next", api.addr);

    api.broken(3, 200, "<html>maintenance</html>");
    let failed = run_failing(&daemon, "pull", "changed").await;
    let error = failed["error"].as_str().unwrap();
    assert!(error.contains("not JSON"), "{error}");
    assert!(error.contains(&shown), "{error}");
    assert!(!error.contains("S3cret"), "{error}");

    api.broken(3, 500, "the database is down");
    let failed = run_failing(&daemon, "pull", "changed").await;
    let error = failed["error"].as_str().unwrap();
    assert!(
        error.contains("500") && error.contains("the database is down"),
        "{error}"
    );
    assert!(!error.contains("S3cret"), "{error}");

    // The next run resumes from the checkpoint: every record once, in order.
    run(&daemon, dir.path(), "pull", "changed", 9).await;
    assert_eq!(delivered(dir.path(), "pull"), ids(1..=9));

    // An answer over max_page_bytes is refused, whole.
    let failed = run_failing(&daemon, "small", "all").await;
    let error = failed["error"].as_str().unwrap();
    assert!(error.contains("max_page_bytes"), "{error}");
    assert_eq!(failed["captured"], 0, "{failed}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_api_behind_oauth2_client_credentials_is_paged_with_one_token() {
    let dir = tempfile::tempdir().unwrap();
    let ca = tls::TestCa::new(dir.path(), "api");
    let api = Api::start_with(records(10), 3, Some(ca.server_config("api", None))).await;
    api.state.lock().unwrap().oauth = true;
    let flows = [(
        "orders",
        format!(
            "url = \"{}\"\nrecords = \"/data\"\nnext = \"/links/next\"\nsince_param = \"updated_since\"\n\
             ca_file = \"{}\"\nauth = \"oauth2\"\ntoken_url = \"{}\"\nclient_id = \"sluice\"\n\
             client_secret_env = \"POLL_TEST_SECRET\"\nscope = \"orders:read\"",
            api.url("next"),
            ca.ca_file().display(),
            api.url("oauth/token"),
        ),
    )];
    // The daemon inherits it (unique to this test: tests share the
    // process's environment).
    std::env::set_var("POLL_TEST_SECRET", "s3cret");
    let daemon = Daemon::start_opts(
        dir.path(),
        &site(dir.path(), &flows),
        Options {
            capture: true,
            ..Options::default()
        },
    )
    .await;
    run(&daemon, dir.path(), "orders", "all", 10).await;
    assert_eq!(delivered(dir.path(), "orders"), ids(1..=10));
    // A token revoked by the API: one 401, a fresh token, the run goes on.
    api.state
        .lock()
        .unwrap()
        .issued
        .push("revoked-by-the-api".into());
    api.update(11, 200);
    run(&daemon, dir.path(), "orders", "changed", 11).await;
    assert_eq!(delivered(dir.path(), "orders"), ids(1..=11));
    let (issued, refused) = {
        let state = api.state.lock().unwrap();
        (state.issued.clone(), state.refused)
    };
    assert_eq!(
        issued.len(),
        3,
        "one token for every page of the first run, one after the revocation: {issued:?}"
    );
    assert_eq!(refused, 1);
    let log = daemon.output() + &daemon.log("LIVE").await;
    assert!(!log.contains("s3cret") && !log.contains("tok-"), "{log}");
}
