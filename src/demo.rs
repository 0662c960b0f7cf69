//! `sluice demo`: the embedded default that just runs.
//!
//! Runs the daemon on `examples/demo.toml` (built into the binary) with its
//! data under `./sluice-demo`, and beside it a small HTTP receiver on
//! 127.0.0.1:7071 that prints every record it gets and shows them at `/`.
//! The receiver honours `Idempotency-Key`: a record sent again after a crash
//! is counted as a duplicate, not applied twice.

use std::collections::{HashSet, VecDeque};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::Router;
use parking_lot::Mutex;

use crate::config::Config;

pub const DEMO_TOML: &str = include_str!("../examples/demo.toml");
pub const DEMO_CUSTOMERS: &str = include_str!("../examples/customers.jsonl");
pub const RECEIVER: &str = "127.0.0.1:7071";

#[derive(Default)]
struct Received {
    seen: HashSet<String>,
    recent: VecDeque<String>,
    total: u64,
    duplicates: u64,
}

type Shared = Arc<Mutex<Received>>;

/// `sluice demo` as the command line gave it.
pub async fn command(args: crate::cli::serve::DemoArgs) -> Result<(), crate::cli::CliError> {
    run(args.listen, args.data_dir)
        .await
        .map_err(|e| crate::cli::CliError::Failed(format!("{e:#}")))
}

pub async fn run(listen: Option<SocketAddr>, data_dir: Option<PathBuf>) -> anyhow::Result<()> {
    let data_dir = data_dir.unwrap_or_else(|| PathBuf::from("sluice-demo"));
    crate::data_dir::create_private_dir(&data_dir)
        .with_context(|| format!("cannot create {}", data_dir.display()))?;
    let data_dir = data_dir.canonicalize()?;
    let customers = data_dir.join("customers.jsonl");
    if !customers.exists() {
        use std::io::Write;
        crate::data_dir::private_options()
            .write(true)
            .open(&customers)?
            .write_all(DEMO_CUSTOMERS.as_bytes())?;
    }
    let file = data_dir.join("demo.toml");
    let mut config = Config::parse(DEMO_TOML, &file, Some(&data_dir))
        .map_err(|e| anyhow::anyhow!("the embedded demo configuration is invalid:\n{e}"))?;
    if let Some(listen) = listen {
        config.listen = listen;
    }
    let received: Shared = Arc::default();
    let receiver = tokio::net::TcpListener::bind(RECEIVER)
        .await
        .with_context(|| format!("the demo's receiver cannot listen on {RECEIVER}"))?;
    let app = Router::new()
        .route("/records", post(receive))
        .route("/", get(show))
        .with_state(received);
    tokio::spawn(async move {
        if let Err(e) = axum::serve(receiver, app).await {
            eprintln!("demo receiver stopped: {e}");
        }
    });
    print_banner(&config, &data_dir);
    crate::server::serve(config).await
}

fn print_banner(config: &Config, data_dir: &Path) {
    let server = format!("http://{}", config.listen);
    println!(
        "\
sluice demo — data in {data}
  sites LIVE and STAGE; records go to the receiver on http://{RECEIVER}/ (printed below as 'receiver:')
  the dashboard: {server}/   (no tokens yet: open on loopback, you are admin)
  metrics:       {server}/metrics

Try, in another terminal (add --server {server} if you changed --listen):
  sluice status
  sluice log LIVE --follow
  sluice integration pause LIVE orders --reason 'planned maintenance'
  curl -X POST {server}/hooks/LIVE/orders/web-orders -H 'content-type: application/json' -d '{{\"id\":\"W1\",\"total\":12.5}}'
  sluice integration resume LIVE orders
  sluice site stop STAGE --reason 'stocktake'
  sluice flow run STAGE customers --changed     # while stopped: Pending Changed
  sluice site start STAGE
",
        data = data_dir.display(),
    );
}

async fn receive(
    State(received): State<Shared>,
    headers: HeaderMap,
    body: Bytes,
) -> impl IntoResponse {
    let key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-")
        .to_string();
    let text = String::from_utf8_lossy(&body).to_string();
    let duplicate = {
        let mut r = received.lock();
        let duplicate = !r.seen.insert(key.clone());
        r.total += 1;
        if duplicate {
            r.duplicates += 1;
        }
        r.recent.push_back(format!("{key} {text}"));
        if r.recent.len() > 200 {
            r.recent.pop_front();
        }
        duplicate
    };
    println!(
        "receiver: {key} {text}{}",
        if duplicate {
            "   (duplicate: already applied)"
        } else {
            ""
        }
    );
    StatusCode::OK
}

async fn show(State(received): State<Shared>) -> impl IntoResponse {
    let r = received.lock();
    let mut body = format!(
        "sluice demo receiver: {} requests, {} duplicates (same Idempotency-Key)\n\n",
        r.total, r.duplicates
    );
    for line in r.recent.iter().rev() {
        body.push_str(line);
        body.push('\n');
    }
    ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], body)
}
