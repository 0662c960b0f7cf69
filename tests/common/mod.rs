//! What the black-box tests share: the real `sluice` binary started on a
//! temporary data directory and a free port, driven over HTTP and the CLI,
//! and a real HTTP target that records what it receives (over HTTPS too,
//! with a certificate authority made in the test: [`tls`]); a real SMTP
//! server that records the emails it takes ([`smtp`]).
#![allow(dead_code)]

pub mod pg;
pub mod proxy;
pub mod smtp;
pub mod tls;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use serde_json::{json, Value};

pub const BIN: &str = env!("CARGO_BIN_EXE_sluice");

/// The daemon `Daemon` starts: this build's, or the binary that
/// `SLUICE_TEST_BIN` names — to measure an older build with the same test
/// (e.g. `tests/resend.rs`' resends per kill, before and after a change).
pub fn daemon_bin() -> std::ffi::OsString {
    std::env::var_os("SLUICE_TEST_BIN").unwrap_or_else(|| BIN.into())
}

/// A running daemon. Killed (SIGKILL) when dropped.
pub struct Daemon {
    pub dir: PathBuf,
    pub config: PathBuf,
    pub addr: SocketAddr,
    /// `http` or `https`, as the daemon said it listens.
    pub scheme: String,
    options: Options,
    child: Option<Child>,
    http: reqwest::Client,
    /// What this process wrote to its stderr (its tracing output, at
    /// `SLUICE_LOG=warn`), line by line; also passed on to the test's.
    stderr: Arc<Mutex<Vec<String>>>,
    /// With `SLUICE_TEST_STORE=postgres`: the database holding the sites'
    /// state, kept across restarts, dropped with the daemon.
    store: Option<Arc<pg::PgDb>>,
}

/// The variable the daemon reads its store's URL from when the tests run
/// on PostgreSQL (`SLUICE_TEST_STORE=postgres`).
const STORE_URL_ENV: &str = "SLUICE_TEST_STORE_URL";

/// Whether the daemons of the tests keep their state in PostgreSQL:
/// `SLUICE_TEST_STORE=postgres` (default `sqlite`).
pub fn on_postgres() -> bool {
    std::env::var("SLUICE_TEST_STORE").is_ok_and(|s| s == "postgres")
}

/// How a test starts the daemon, beyond its configuration.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// The CA the test's HTTP client and the CLI trust (an HTTPS daemon
    /// with a certificate of a test CA).
    pub ca_file: Option<PathBuf>,
    /// Keep everything the daemon prints: standard output in
    /// `{dir}/daemon.stdout`, standard error in `{dir}/daemon.stderr`
    /// (appended across restarts); see [`Daemon::output`].
    pub capture: bool,
    /// Start the daemon under this umask (as a shell would: `umask 000;
    /// exec sluice serve …`).
    pub umask: Option<u32>,
    /// `--node NAME`: a node of a cluster.
    pub node: Option<String>,
    /// `--data-dir DIR`: nodes of a cluster share a configuration file,
    /// each with a data directory of its own.
    pub data_dir: Option<PathBuf>,
    /// More environment variables of the daemon.
    pub env: Vec<(String, String)>,
}

impl Daemon {
    /// Writes `toml` (which must not set `listen` or `data_dir`) into `dir`
    /// and starts `sluice serve` on it.
    pub async fn start(dir: &Path, toml: &str) -> Daemon {
        Daemon::start_opts(dir, toml, Options::default()).await
    }

    /// As [`Daemon::start`], with options.
    pub async fn start_opts(dir: &Path, toml: &str, options: Options) -> Daemon {
        let config = dir.join("sluice.toml");
        let data = dir.join("data");
        // A test that chooses its store itself keeps it.
        let store = match on_postgres() && !toml.contains("store =") {
            true => Some(Arc::new(pg::PgDb::new().await)),
            false => None,
        };
        let store_keys = match store {
            Some(_) => format!("store = \"postgres\"\nstore_url_env = \"{STORE_URL_ENV}\"\n"),
            None => String::new(),
        };
        let text = format!(
            "listen = \"127.0.0.1:0\"\ndata_dir = \"{}\"\n{store_keys}\n{toml}",
            data.display()
        );
        std::fs::write(&config, text).unwrap();
        Daemon::start_with(dir, &config, None, options, store).await
    }

    /// A node of a cluster: `sluice serve --node` on a configuration file
    /// the test wrote (with `store = "postgres"` and `store_url_env =
    /// "SLUICE_TEST_STORE_URL"`), its state in `store`.
    pub async fn start_node(
        dir: &Path,
        config: &Path,
        options: Options,
        store: Arc<pg::PgDb>,
    ) -> Daemon {
        Daemon::start_with(dir, config, None, options, Some(store)).await
    }

    /// The database of this node's store (a node of a cluster).
    pub fn store_db(&self) -> Arc<pg::PgDb> {
        self.store.clone().expect("a daemon on PostgreSQL")
    }

    /// `sluice serve` on a configuration file the test wrote itself (which
    /// sets `listen` and `data_dir`).
    pub async fn start_file(dir: &Path, config: &Path, options: Options) -> Daemon {
        Daemon::start_with(dir, config, None, options, None).await
    }

    async fn start_with(
        dir: &Path,
        config: &Path,
        listen: Option<SocketAddr>,
        options: Options,
        store: Option<Arc<pg::PgDb>>,
    ) -> Daemon {
        let mut cmd = match options.umask {
            None => Command::new(daemon_bin()),
            Some(umask) => {
                let mut sh = Command::new("sh");
                sh.arg("-c")
                    .arg(format!("umask {umask:03o} && exec \"$0\" \"$@\""))
                    .arg(daemon_bin());
                sh
            }
        };
        cmd.arg("serve").arg("--config").arg(config);
        if let Some(db) = &store {
            cmd.env(STORE_URL_ENV, &db.url);
        }
        if let Some(addr) = listen {
            cmd.arg("--listen").arg(addr.to_string());
        }
        if let Some(node) = &options.node {
            cmd.arg("--node").arg(node);
        }
        if let Some(data_dir) = &options.data_dir {
            cmd.arg("--data-dir").arg(data_dir);
        }
        cmd.envs(options.env.iter().map(|(k, v)| (k, v)));
        let append = |name: &str| {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(dir.join(name))
                .unwrap()
        };
        // Standard error: with `capture`, written by the daemon itself into
        // `daemon.stderr` (so what it wrote before a stdout line is there
        // when that line is read); else kept in memory for `stderr()` and
        // echoed (shown when a test fails).
        let err_to = if options.capture {
            Stdio::from(append("daemon.stderr"))
        } else {
            Stdio::piped()
        };
        let mut child = cmd
            // SLUICE_TEST_DAEMON_LOG: the daemon's SLUICE_LOG, to look
            // into a test or a bench (warnings and worse by default).
            .env(
                "SLUICE_LOG",
                std::env::var("SLUICE_TEST_DAEMON_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdout(Stdio::piped())
            .stderr(err_to)
            .spawn()
            .expect("the sluice binary starts");
        let stdout = child.stdout.take().unwrap();
        let mut kept = options.capture.then(|| append("daemon.stdout"));
        let stderr = Arc::new(Mutex::new(Vec::new()));
        if let Some(pipe) = child.stderr.take() {
            let kept_err = stderr.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines() {
                    let Ok(line) = line else { break };
                    eprintln!("{line}");
                    kept_err.lock().unwrap().push(line);
                }
            });
        }
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::Write;
            let mut lines = BufReader::new(stdout).lines();
            let mut sent = false;
            while let Some(Ok(line)) = lines.next() {
                if let Some(file) = kept.as_mut() {
                    writeln!(file, "{line}").unwrap();
                }
                if !sent {
                    let said = line
                        .strip_prefix("sluice listening on ")
                        .and_then(|url| url.split_once("://"));
                    if let Some((scheme, addr)) = said {
                        let mut addr = addr.parse::<SocketAddr>().unwrap();
                        if addr.ip().is_unspecified() {
                            addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
                        }
                        tx.send((scheme.to_string(), addr)).ok();
                        sent = true;
                    }
                }
            }
        });
        let (scheme, addr) = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("the daemon says where it listens");
        let mut http = reqwest::Client::builder();
        if let Some(ca) = &options.ca_file {
            let pem = std::fs::read(ca).unwrap();
            http = http.add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap());
        }
        Daemon {
            dir: dir.to_path_buf(),
            config: config.to_path_buf(),
            addr,
            scheme,
            options,
            child: Some(child),
            http: http.build().unwrap(),
            stderr,
            store,
        }
    }

    /// The lines this process wrote to its stderr so far (a restart starts
    /// a new process, with none); without [`Options::capture`] (with it, see
    /// [`Daemon::output`]).
    pub fn stderr(&self) -> Vec<String> {
        self.stderr.lock().unwrap().clone()
    }

    /// Everything the daemon printed so far (with [`Options::capture`]):
    /// standard output, then standard error.
    pub fn output(&self) -> String {
        let read = |name: &str| std::fs::read_to_string(self.dir.join(name)).unwrap_or_default();
        format!("{}{}", read("daemon.stdout"), read("daemon.stderr"))
    }

    /// The test's HTTP client (it trusts [`Options::ca_file`]).
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// The daemon's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Kills the daemon with SIGKILL: no chance to clean up.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    /// The options it starts with (again, at a restart).
    pub fn options_mut(&mut self) -> &mut Options {
        &mut self.options
    }

    /// Kills it and starts it again on the same files and port.
    pub async fn restart(&mut self) {
        self.kill();
        let addr = self.addr;
        // The port may take a moment to be free again.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if std::net::TcpListener::bind(addr).is_ok() || Instant::now() > deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let options = self.options.clone();
        let store = self.store.take();
        *self = Daemon::start_with(
            &self.dir.clone(),
            &self.config.clone(),
            Some(addr),
            options,
            store,
        )
        .await;
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}://{}{path}", self.scheme, self.addr)
    }

    pub fn server(&self) -> String {
        format!("{}://{}", self.scheme, self.addr)
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        let r = self.http.get(self.url(path)).send().await.unwrap();
        let status = StatusCode::from_u16(r.status().as_u16()).unwrap();
        let text = r.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    pub async fn get_text(&self, path: &str) -> String {
        self.http
            .get(self.url(path))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    pub async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        let r = self
            .http
            .post(self.url(path))
            .header("x-sluice-actor", "tester")
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = StatusCode::from_u16(r.status().as_u16()).unwrap();
        let text = r.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// POSTs to a webhook; returns the status and the `Retry-After` header.
    pub async fn hook(
        &self,
        site: &str,
        integration: &str,
        flow: &str,
        body: Value,
    ) -> (StatusCode, Option<String>) {
        let r = self
            .http
            .post(self.url(&format!("/hooks/{site}/{integration}/{flow}")))
            .json(&body)
            .send()
            .await
            .unwrap();
        let retry = r
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap().to_string());
        (StatusCode::from_u16(r.status().as_u16()).unwrap(), retry)
    }

    pub async fn integration(&self, site: &str, name: &str) -> Value {
        let (status, v) = self
            .get(&format!("/api/v1/sites/{site}/integrations/{name}"))
            .await;
        assert_eq!(status, StatusCode::OK, "{v}");
        v
    }

    /// The keys of the integration's transactions (up to 1000), oldest
    /// first.
    pub async fn queued_keys(&self, site: &str, integration: &str) -> Vec<String> {
        let (status, list) = self
            .get(&format!(
                "/api/v1/sites/{site}/integrations/{integration}/transactions?limit=1000"
            ))
            .await;
        assert_eq!(status, StatusCode::OK, "{list}");
        let mut keys: Vec<(i64, String)> = list
            .as_array()
            .unwrap()
            .iter()
            .map(|t| {
                (
                    t["seq"].as_i64().unwrap(),
                    t["key"].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect();
        keys.sort();
        keys.into_iter().map(|(_, k)| k).collect()
    }

    pub async fn flow(&self, site: &str, name: &str) -> Value {
        let (status, v) = self
            .get(&format!("/api/v1/sites/{site}/flows/{name}"))
            .await;
        assert_eq!(status, StatusCode::OK, "{v}");
        v
    }

    /// Waits up to `secs` for the site log of `site` to hold `text`.
    pub async fn await_log(&self, site: &str, text: &str, secs: u64) {
        let what = format!("the log of site {site} to say {text:?}");
        eventually(secs, &what, || async {
            self.log(site).await.contains(text)
        })
        .await;
    }

    pub async fn log(&self, site: &str) -> String {
        self.get_text(&format!("/api/v1/sites/{site}/log")).await
    }

    /// `sluice token create` on this daemon's configuration (no daemon
    /// call): the token it prints once.
    pub fn create_token(&self, role: &str, name: &str) -> String {
        let out = Command::new(BIN)
            .args([
                "token", "create", "--role", role, "--name", name, "--config",
            ])
            .arg(&self.config)
            // With the store in PostgreSQL, the tokens are there too.
            .envs(
                self.store
                    .as_ref()
                    .map(|db| (STORE_URL_ENV, db.url.clone())),
            )
            .stdin(Stdio::null())
            .output()
            .expect("the sluice CLI runs");
        assert!(out.status.success(), "{out:?}");
        let token = String::from_utf8(out.stdout).unwrap().trim().to_string();
        assert!(token.starts_with("sluice_"), "{token}");
        token
    }

    /// Runs the CLI against this daemon (trusting [`Options::ca_file`]).
    pub fn cli(&self, args: &[&str]) -> std::process::Output {
        let mut cmd = Command::new(BIN);
        if let Some(ca) = &self.options.ca_file {
            cmd.arg("--ca-file").arg(ca);
        }
        cmd.arg("--server")
            .arg(self.server())
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("the sluice CLI runs")
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A cluster of `n` nodes `n1`… on one new PostgreSQL database, sharing
/// one configuration file (`toml`'s sites, with `lease`), each with a data
/// directory of its own under `dir/n{i}` and `options` (its `node` and
/// `data_dir` set here).
pub async fn cluster(
    dir: &Path,
    toml: &str,
    n: usize,
    lease: Duration,
    options: Options,
) -> Vec<Daemon> {
    let db = Arc::new(pg::PgDb::new().await);
    let config = dir.join("sluice.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:0\"\ndata_dir = \"{}\"\nstore = \"postgres\"\n\
             store_url_env = \"{STORE_URL_ENV}\"\nlease = \"{}s\"\n{}",
            dir.join("data").display(),
            lease.as_secs(),
            toml
        ),
    )
    .unwrap();
    let mut nodes = Vec::new();
    for i in 1..=n {
        let home = dir.join(format!("n{i}"));
        std::fs::create_dir_all(&home).unwrap();
        let options = Options {
            node: Some(format!("n{i}")),
            data_dir: Some(home.join("data")),
            ..options.clone()
        };
        nodes.push(Daemon::start_node(&home, &config, options, db.clone()).await);
    }
    nodes
}

/// Waits until `check` holds, or fails the test after `secs`.
pub async fn eventually<F, Fut>(secs: u64, what: &str, check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    eventually_seen(secs, what, check, |held| *held).await;
}

/// Waits until `check` holds of what `look` gives and returns that; fails
/// the test after `secs`, showing the last thing seen (a wait that fails
/// in CI says why).
pub async fn eventually_seen<T, L, Fut, C>(secs: u64, what: &str, mut look: L, check: C) -> T
where
    T: std::fmt::Debug,
    L: FnMut() -> Fut,
    Fut: std::future::Future<Output = T>,
    C: Fn(&T) -> bool,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let seen = look().await;
        if check(&seen) {
            return seen;
        }
        if Instant::now() > deadline {
            panic!("timed out after {secs}s waiting for: {what}; last seen: {seen:?}");
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// A scripted answer: status and `Retry-After` seconds.
type Answer = (u16, Option<u64>);

/// A running target server: how to stop it and its task.
type Running = (
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<()>,
);

/// One request the target received.
#[derive(Debug, Clone)]
pub struct Received {
    pub key: String,
    pub record: Value,
}

/// A real HTTP target on 127.0.0.1 that records every record it is sent
/// (one record, or a JSON array with `X-Sluice-Keys`), with an optional
/// delay per request to keep a drain observable.
#[derive(Clone)]
pub struct Target {
    pub addr: SocketAddr,
    received: Arc<Mutex<Vec<Received>>>,
    delay: Arc<Mutex<Duration>>,
    /// While false, a record with `"reject": true` is answered 422 (with
    /// `"reject": "TEXT"`: answered 422 with TEXT).
    accept_all: Arc<std::sync::atomic::AtomicBool>,
    /// Answers to give before any other, e.g. 503 with `Retry-After`.
    script: Arc<Mutex<std::collections::VecDeque<Answer>>>,
    /// When set, requests without `Authorization: Bearer <this>` get 401.
    token: Arc<Mutex<Option<String>>>,
    /// While false, a POST refused for its token waits for its 401 (see
    /// `hold_refusals`).
    refusals: Arc<tokio::sync::watch::Sender<bool>>,
    /// Every request that reached it, answered or not.
    pub requests: Arc<std::sync::atomic::AtomicUsize>,
    /// Served over HTTPS with these settings (see `start_tls`).
    tls: Option<Arc<rustls::ServerConfig>>,
    /// With TLS: every TCP connection it accepted, whether its handshake
    /// worked or not.
    pub connections: Arc<std::sync::atomic::AtomicUsize>,
    /// Stops the server (see `stop`).
    shutdown: Arc<Mutex<Option<Running>>>,
}

impl Target {
    pub async fn start() -> Target {
        Target::start_on(None).await
    }

    /// A target that speaks HTTPS only, with `tls` (see
    /// [`tls::TestCa::server_config`]).
    pub async fn start_tls(tls: Arc<rustls::ServerConfig>) -> Target {
        Target::start_on(Some(tls)).await
    }

    async fn start_on(tls: Option<Arc<rustls::ServerConfig>>) -> Target {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let target = Target {
            addr,
            received: Arc::default(),
            delay: Arc::default(),
            accept_all: Arc::default(),
            script: Arc::default(),
            token: Arc::default(),
            refusals: Arc::new(tokio::sync::watch::channel(true).0),
            requests: Arc::default(),
            tls,
            connections: Arc::default(),
            shutdown: Arc::default(),
        };
        target.serve(listener);
        target
    }

    fn serve(&self, listener: tokio::net::TcpListener) {
        let app = Router::new()
            .route("/records", post(receive).get(health))
            .with_state(self.clone());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let stopped = async move {
            rx.await.ok();
        };
        let task = match self.tls.clone() {
            None => tokio::spawn(async move {
                axum::serve(listener, app)
                    .with_graceful_shutdown(stopped)
                    .await
                    .unwrap()
            }),
            Some(config) => {
                let listener = tls::TlsListener {
                    tcp: listener,
                    acceptor: tokio_rustls::TlsAcceptor::from(config),
                    connections: self.connections.clone(),
                };
                tokio::spawn(async move {
                    axum::serve(listener, app)
                        .with_graceful_shutdown(stopped)
                        .await
                        .unwrap()
                })
            }
        };
        *self.shutdown.lock().unwrap() = Some((tx, task));
    }

    /// Takes the target down: the port refuses connections until `restart`.
    pub async fn stop(&self) {
        let taken = self.shutdown.lock().unwrap().take();
        if let Some((tx, task)) = taken {
            tx.send(()).ok();
            task.await.unwrap();
        }
    }

    /// Brings it back on the same port.
    pub async fn restart(&self) {
        let listener = tokio::net::TcpListener::bind(self.addr).await.unwrap();
        self.serve(listener);
    }

    /// The next answers, before any other: (status, Retry-After seconds).
    pub fn script(&self, answers: &[(u16, Option<u64>)]) {
        self.script.lock().unwrap().extend(answers.iter().copied());
    }

    /// Drops the answers `script` has left: the next requests are served.
    pub fn end_script(&self) {
        self.script.lock().unwrap().clear();
    }

    /// Requests without `Authorization: Bearer TOKEN` are answered 401.
    pub fn require_token(&self, token: &str) {
        *self.token.lock().unwrap() = Some(token.to_string());
    }

    /// A POST refused for its token gets its 401 only once
    /// `release_refusals` is called.
    pub fn hold_refusals(&self) {
        self.refusals.send_replace(false);
    }

    pub fn release_refusals(&self) {
        self.refusals.send_replace(true);
    }

    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}/records", self.addr)
    }

    /// From now on, take records marked `"reject": true` too.
    pub fn accept_all(&self) {
        self.accept_all
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }

    pub fn set_delay(&self, d: Duration) {
        *self.delay.lock().unwrap() = d;
    }

    pub fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    pub fn count(&self) -> usize {
        self.received.lock().unwrap().len()
    }

    /// The value of `field` of each record received, in arrival order.
    pub fn field(&self, field: &str) -> Vec<Value> {
        self.received()
            .into_iter()
            .map(|r| r.record[field].clone())
            .collect()
    }

    /// Arrival order with each idempotency key kept once; panics if a key
    /// came back with a different record.
    pub fn deduplicated(&self) -> Vec<Received> {
        let mut seen = std::collections::HashMap::<String, Value>::new();
        let mut out = Vec::new();
        for r in self.received() {
            match seen.get(&r.key) {
                Some(prev) => {
                    assert_eq!(prev, &r.record, "key {} resent with another record", r.key)
                }
                None => {
                    seen.insert(r.key.clone(), r.record.clone());
                    out.push(r);
                }
            }
        }
        out
    }
}

/// `GET /records`: the health test, which checks the token too.
async fn health(State(t): State<Target>, headers: HeaderMap) -> StatusCode {
    let wanted = t.token.lock().unwrap().clone();
    match wanted {
        Some(token)
            if headers.get("authorization").and_then(|v| v.to_str().ok())
                != Some(format!("Bearer {token}").as_str()) =>
        {
            StatusCode::UNAUTHORIZED
        }
        _ => StatusCode::OK,
    }
}

async fn receive(
    State(t): State<Target>,
    headers: HeaderMap,
    body: Bytes,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    t.requests.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let wanted = t.token.lock().unwrap().clone();
    if let Some(token) = wanted {
        let given = headers.get("authorization").and_then(|v| v.to_str().ok());
        if given != Some(format!("Bearer {token}").as_str()) {
            let mut released = t.refusals.subscribe();
            drop(released.wait_for(|r| *r).await);
            return (StatusCode::UNAUTHORIZED, "{\"error\": \"bad token\"}").into_response();
        }
    }
    let scripted = t.script.lock().unwrap().pop_front();
    if let Some((status, retry_after)) = scripted {
        let mut response = StatusCode::from_u16(status).unwrap().into_response();
        if let Some(secs) = retry_after {
            response
                .headers_mut()
                .insert("retry-after", secs.to_string().parse().unwrap());
        }
        return response;
    }
    let delay = *t.delay.lock().unwrap();
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let value: Value = serde_json::from_slice(&body).unwrap();
    // The answer a rejected record asks for.
    let rejected = |v: &Value| match &v["reject"] {
        Value::Bool(true) => Some("{\"error\": \"no such customer\"}".to_string()),
        Value::String(answer) => Some(answer.clone()),
        _ => None,
    };
    let refuse = match &value {
        Value::Array(items) => items.iter().find_map(rejected),
        one => rejected(one),
    };
    if let Some(answer) = refuse {
        if !t.accept_all.load(std::sync::atomic::Ordering::SeqCst) {
            return (StatusCode::UNPROCESSABLE_ENTITY, answer).into_response();
        }
    }
    let header = |name: &str| {
        headers
            .get(name)
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default()
    };
    let mut received = t.received.lock().unwrap();
    match value {
        Value::Array(items) => {
            let keys = header("x-sluice-keys");
            for (key, record) in keys.split(',').zip(items) {
                received.push(Received {
                    key: key.to_string(),
                    record,
                });
            }
        }
        record => received.push(Received {
            key: header("idempotency-key"),
            record,
        }),
    }
    StatusCode::OK.into_response()
}

/// A config with one site `LIVE`: a webhook flow `web` in integration
/// `orders` to the target.
pub fn webhook_site(target: &Target, batch: usize) -> String {
    webhook_site_with(&target.url(), "", &format!("batch = {batch}"))
}

/// The site of [`webhook_site`] delivering to `url`, with more settings for
/// its webhook endpoint `shop` and its http endpoint `crm` (TOML lines).
pub fn webhook_site_with(url: &str, shop: &str, crm: &str) -> String {
    format!(
        r#"
[sites.LIVE.endpoints.shop]
kind = "webhook"
{shop}

[sites.LIVE.endpoints.crm]
kind = "http"
url = "{url}"
{crm}

[sites.LIVE.integrations.orders]

[[sites.LIVE.integrations.orders.flows]]
name = "web"
source = "shop"
target = "crm"
key = "id"
"#
    )
}

/// An integration `marker` to add to the site of [`webhook_site`]: its
/// webhook flow `mark` (from the same endpoint `shop`) delivers to an
/// endpoint of its own, `beacon`, at `marker`. See
/// [`Daemon::marker_delivered`].
pub fn marker_integration(marker: &Target) -> String {
    format!(
        r#"
[sites.LIVE.endpoints.beacon]
kind = "http"
url = "{url}"

[sites.LIVE.integrations.marker]

[[sites.LIVE.integrations.marker.flows]]
name = "mark"
source = "shop"
target = "beacon"
"#,
        url = marker.url()
    )
}

impl Daemon {
    /// "A later record delivered": posts one record to the integration of
    /// [`marker_integration`] and waits until `marker` has it. Whatever the
    /// daemon was set to do before this was called, at once (a send woken
    /// by a queued record, a lifted hold, a pause that did not hold), it
    /// has had the time it takes this record to go all the way through
    /// webhook, queue, sender and target — so a test that then finds
    /// nothing done knows it was not done, without sleeping.
    pub async fn marker_delivered(&self, marker: &Target) {
        let before = marker.count();
        let (status, _) = self
            .hook("LIVE", "marker", "mark", json!({ "marker": before }))
            .await;
        assert_eq!(status, StatusCode::ACCEPTED, "the marker record is taken");
        eventually(30, "the marker record delivered", || async {
            marker.count() > before
        })
        .await;
    }

    /// As [`Daemon::marker_delivered`], with the marker answered 503 and
    /// `Retry-After: secs` first: it is delivered only once the daemon's
    /// own retry clock has waited `secs`. A test that then finds nothing
    /// done knows that nothing was done in the daemon's `secs` (retries,
    /// back-off), not only that the test's clock moved on.
    pub async fn marker_delivered_after_retry(&self, marker: &Target, secs: u64) {
        let asked = marker.requests.load(std::sync::atomic::Ordering::SeqCst);
        marker.script(&[(503, Some(secs))]);
        self.marker_delivered(marker).await;
        let tries = marker.requests.load(std::sync::atomic::Ordering::SeqCst) - asked;
        assert_eq!(tries, 2, "the marker answered 503 once, then taken");
    }

    /// How many lines of the site's log say `message` at `level`.
    pub async fn log_lines(&self, site: &str, level: u8, message: &str) -> usize {
        self.log(site)
            .await
            .lines()
            .filter(|line| has_log_line(line, level, message))
            .count()
    }
}

pub fn order(n: usize) -> Value {
    json!({"id": format!("o{n}"), "n": n})
}

/// The seed-000 log line format: `24-Nov-2026 15:04:46 (4) : message`.
pub fn has_log_line(log: &str, level: u8, message: &str) -> bool {
    log.lines().any(|line| {
        line.len() > 20
            && chrono::NaiveDateTime::parse_from_str(&line[..20], "%d-%b-%Y %H:%M:%S").is_ok()
            && line[20..] == format!(" ({level}) : {message}")
    })
}

/// Records a target received again, counted per kill of the daemon:
/// `marks[i]` is how many records the target had received when kill `i`
/// happened, and a record received again counts for the last kill before
/// it. Only the records `counted` picks are looked at. Panics on a record
/// received twice before any kill.
pub fn resent_per_kill(
    received: &[Received],
    marks: &[usize],
    counted: impl Fn(&Received) -> bool,
) -> Vec<usize> {
    let mut seen = std::collections::HashSet::new();
    let mut resent = vec![0; marks.len()];
    for (at, r) in received.iter().enumerate() {
        if counted(r) && !seen.insert(r.key.clone()) {
            let kills = marks.partition_point(|&m| m <= at);
            assert!(kills > 0, "key {} received twice before any kill", r.key);
            resent[kills - 1] += 1;
        }
    }
    resent
}

/// A small xorshift for the random moments of a test, seeded from the
/// clock: print `seed()` with a failure to tell the run.
pub struct Rng(u64);

impl Rng {
    pub fn from_clock() -> Rng {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64;
        Rng(nanos | 1)
    }

    pub fn seed(&self) -> u64 {
        self.0
    }

    /// A number in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}

/// The kinds of an integration's holds, as the API lists them.
pub fn hold_kinds(integration: &Value) -> Vec<String> {
    integration["holds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["kind"].as_str().unwrap().to_string())
        .collect()
}

/// Each id once, where it first came: what an at-least-once target
/// received, in the order that counts.
pub fn first_seen(ids: Vec<i64>) -> Vec<i64> {
    let mut seen = Vec::new();
    for id in ids {
        if !seen.contains(&id) {
            seen.push(id);
        }
    }
    seen
}

/// Makes endpoint `endpoint` of site `S` flap three times through `proxy`
/// (shut, tested and seen down; open, tested and seen up), then checks
/// that integration `sync`, paused by a person, is still paused with only
/// the person's hold.
pub async fn flap_while_paused(daemon: &Daemon, proxy: &Arc<proxy::Proxy>, endpoint: &str) {
    let test = format!("/api/v1/sites/S/endpoints/{endpoint}/test");
    for _ in 0..3 {
        proxy.stop().await;
        let (_, answer) = daemon.post(&test, serde_json::json!({})).await;
        assert_eq!(answer["ok"], false, "{answer}");
        proxy.restart().await;
        let (_, answer) = daemon.post(&test, serde_json::json!({})).await;
        assert_eq!(answer["ok"], true, "{answer}");
    }
    let integration = daemon.integration("S", "sync").await;
    assert_eq!(integration["state"], "paused", "{integration}");
    assert_eq!(hold_kinds(&integration), ["operator"], "{integration}");
}
