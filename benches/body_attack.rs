//! Memory under an oversized-body attack: sixteen concurrent 100 MB posts to
//! a webhook, with no token, as an adversary would send them.
//!
//! ```sh
//! cargo bench --bench body_attack
//! ```
//!
//! It starts the real `sluice` binary (release build) on a webhook with the
//! default `max_body` (8 MiB) and `max_body_memory` (16 MiB), measures its
//! resident memory when idle, then its peak (`VmHWM`, reset between rounds
//! through `/proc/PID/clear_refs`) while sixteen clients each post 100 MB:
//! once with `Content-Length` (refused from the headers) and once chunked
//! (cut off at the limit, within the budget). The baseline, measured in the
//! same run the same way, is a plain axum server that buffers bodies up to
//! 64 MiB before looking at them — what sluice did before. Linux only.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const CLIENTS: usize = 16;
const BODY: usize = 100_000_000;
const CHUNK: usize = 64 * 1024;

/// `VmRSS` or `VmHWM` of a process, in KiB.
fn status_kib(pid: u32, field: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Resets the peak RSS (`VmHWM`) to the current RSS.
fn reset_peak(pid: u32) {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").unwrap();
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

/// One client: posts a `BODY`-byte body (declared or chunked) until the
/// server answers or hangs up; returns the status it got (0: none).
async fn post(addr: std::net::SocketAddr, path: &str, chunked: bool) -> u16 {
    let Ok(stream) = TcpStream::connect(addr).await else {
        return 0;
    };
    let (mut read, mut write) = stream.into_split();
    let head = if chunked {
        format!("POST {path} HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n")
    } else {
        format!("POST {path} HTTP/1.1\r\nhost: x\r\ncontent-length: {BODY}\r\n\r\n")
    };
    let sender = tokio::spawn(async move {
        if write.write_all(head.as_bytes()).await.is_err() {
            return;
        }
        let data = vec![b'x'; CHUNK];
        let frame = format!("{CHUNK:x}\r\n");
        let mut sent = 0;
        while sent < BODY {
            let r = if chunked {
                async {
                    write.write_all(frame.as_bytes()).await?;
                    write.write_all(&data).await?;
                    write.write_all(b"\r\n").await
                }
                .await
            } else {
                write.write_all(&data).await
            };
            if r.is_err() {
                return;
            }
            sent += CHUNK;
        }
        if chunked {
            let _ended = write.write_all(b"0\r\n\r\n").await;
        }
    });
    let mut answer = Vec::new();
    let mut buf = [0u8; 1024];
    while answer.len() < 12 {
        match tokio::time::timeout(Duration::from_secs(60), read.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => answer.extend_from_slice(&buf[..n]),
            _ => break,
        }
    }
    sender.abort();
    std::str::from_utf8(answer.get(9..12).unwrap_or_default())
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// Peak growth over idle of the process `pid` while `CLIENTS` clients post.
async fn attack(
    pid: u32,
    addr: std::net::SocketAddr,
    path: &str,
    chunked: bool,
) -> (u64, Vec<u16>) {
    tokio::time::sleep(Duration::from_millis(300)).await;
    reset_peak(pid);
    let idle = status_kib(pid, "VmRSS:");
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let path = path.to_string();
            tokio::spawn(async move { post(addr, &path, chunked).await })
        })
        .collect();
    let mut statuses = Vec::new();
    for c in clients {
        statuses.push(c.await.unwrap());
    }
    let peak = status_kib(pid, "VmHWM:");
    (peak.saturating_sub(idle), statuses)
}

/// The baseline server: buffers each body (up to 64 MiB) before it looks
/// at it, as sluice did before.
async fn naive_server() {
    use axum::routing::post;
    let app = axum::Router::new().route(
        "/hooks/LIVE/orders/web",
        post(|body: axum::body::Bytes| async move {
            if body.len() > 8 * 1024 * 1024 {
                (axum::http::StatusCode::PAYLOAD_TOO_LARGE, "too large")
            } else {
                (axum::http::StatusCode::ACCEPTED, "ok")
            }
        })
        .layer(axum::extract::DefaultBodyLimit::max(64 * 1024 * 1024)),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    println!("listening on {}", listener.local_addr().unwrap());
    axum::serve(listener, app).await.unwrap();
}

/// Starts `cmd` and reads the address it prints (`… on ADDR` or
/// `… on http://ADDR`).
fn start(mut cmd: Command) -> (Child, std::net::SocketAddr) {
    use std::io::BufRead;
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let deadline = Instant::now() + Duration::from_secs(30);
    let addr = loop {
        let line = match lines.next() {
            Some(Ok(line)) if Instant::now() < deadline => line,
            _ => {
                child.kill().ok();
                child.wait().ok();
                panic!("the server did not say where it listens");
            }
        };
        let parsed = line
            .rsplit_once(" on ")
            .and_then(|(_, a)| a.trim_start_matches("http://").trim().parse().ok());
        if let Some(addr) = parsed {
            break addr;
        }
    };
    // Keep the pipe drained so the server never blocks on it.
    std::thread::spawn(move || lines.for_each(drop));
    (child, addr)
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    if std::env::var_os("SLUICE_NAIVE_SERVER").is_some() {
        rt.block_on(naive_server());
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("sluice.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:0\"\ndata_dir = \"{}\"\n\
             [sites.LIVE.endpoints.shop]\nkind = \"webhook\"\n\
             [sites.LIVE.endpoints.out]\nkind = \"file\"\npath = \"out.jsonl\"\n\
             [sites.LIVE.integrations.orders]\n\
             [[sites.LIVE.integrations.orders.flows]]\nname = \"web\"\nsource = \"shop\"\ntarget = \"out\"\n",
            dir.path().join("data").display()
        ),
    )
    .unwrap();
    let mut sluice = Command::new(env!("CARGO_BIN_EXE_sluice"));
    sluice.arg("serve").arg("--config").arg(&config);
    let (mut daemon, addr) = start(sluice);
    let mut naive = Command::new(std::env::current_exe().unwrap());
    naive.env("SLUICE_NAIVE_SERVER", "1");
    let (mut baseline, baseline_addr) = start(naive);

    let path = "/hooks/LIVE/orders/web";
    let rows = rt.block_on(async {
        // Warm up: a few real posts, so idle includes what serving costs.
        for n in 0..20 {
            let _ok = reqwest::Client::new()
                .post(format!("http://{addr}{path}"))
                .body(format!("{{\"n\": {n}}}"))
                .send()
                .await;
        }
        let idle = status_kib(daemon.id(), "VmRSS:");
        let mut rows = Vec::new();
        for (name, chunked) in [("with Content-Length", false), ("chunked", true)] {
            let (base, _) = attack(baseline.id(), baseline_addr, path, chunked).await;
            let (grew, statuses) = attack(daemon.id(), addr, path, chunked).await;
            rows.push((name, grew, base, statuses));
        }
        (idle, rows)
    });
    let (idle, rows) = rows;
    println!(
        "sluice body attack: {CLIENTS} concurrent posts of {} MB to a webhook, no token \
         (max_body 8 MiB, max_body_memory 16 MiB)",
        BODY / 1_000_000
    );
    println!("sluice idle RSS: {}", mib(idle));
    println!();
    println!(
        "{:<22} {:>16} {:>24} {:>8}   answers",
        "", "sluice peak-idle", "baseline (buffers ≤64 MiB)", "ratio"
    );
    let mut ok = true;
    for (name, grew, base, statuses) in rows {
        let mut counts = std::collections::BTreeMap::new();
        for s in &statuses {
            *counts.entry(*s).or_insert(0) += 1;
        }
        println!(
            "{:<22} {:>16} {:>24} {:>8.3}   {:?}",
            name,
            mib(grew),
            mib(base),
            grew as f64 / base.max(1) as f64,
            counts
        );
        ok &= statuses.iter().all(|s| *s == 413 || *s == 503);
    }
    daemon.kill().ok();
    daemon.wait().ok();
    baseline.kill().ok();
    baseline.wait().ok();
    if !ok {
        eprintln!("an oversized post got an answer other than 413 or 503");
        std::process::exit(1);
    }
}
