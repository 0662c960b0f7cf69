//! Webhooks under attack and under load: bodies bounded before they are
//! read, secrets and signatures, content types, and API bodies read before
//! the answer. Raw sockets where a client library would hide what is sent.

mod common;

use std::time::Duration;

use common::{order, Daemon, Target};
use reqwest::StatusCode;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A site whose webhook flow `web` (integration `orders`) has these extra
/// settings, delivering to `target`, under these top-level settings.
fn site(target: &Target, webhook: &str, top: &str) -> String {
    format!(
        "{top}\n{}",
        common::webhook_site_with(&target.url(), webhook, "")
    )
}

/// Reads one HTTP/1.1 answer (headers and a body of `Content-Length`):
/// its status, its headers as lowercase text, and its body.
async fn read_answer(stream: &mut (impl AsyncReadExt + Unpin)) -> (u16, String, String) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = tokio::time::timeout(Duration::from_secs(20), stream.read(&mut chunk))
            .await
            .expect("an answer within 20 s")
            .expect("the connection stays readable");
        assert!(n > 0, "the connection closed without an answer");
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let status: u16 = head[9..12].parse().unwrap();
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .map(|v| v.trim().parse().unwrap())
        .unwrap_or(0);
    while buf.len() < head_end + length {
        let n = stream.read(&mut chunk).await.unwrap();
        assert!(n > 0, "the connection closed in the middle of an answer");
        buf.extend_from_slice(&chunk[..n]);
    }
    let body = String::from_utf8_lossy(&buf[head_end..head_end + length]).into_owned();
    (status, head, body)
}

fn is_json_error(body: &str) -> bool {
    serde_json::from_str::<Value>(body).is_ok_and(|v| v["error"].is_string())
}

async fn queued(daemon: &Daemon) -> i64 {
    daemon.integration("LIVE", "orders").await["queued"]
        .as_i64()
        .unwrap()
}

#[tokio::test]
async fn an_oversized_body_is_refused_from_its_length_before_a_byte_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let target = Target::start().await;
    let daemon = Daemon::start(dir.path(), &site(&target, "max_body = 1024", "")).await;
    // Lengths under and over the old 64 MiB cap: both refused from the
    // headers alone, with JSON; the body is never sent.
    for length in [10_000_000u64, 100_000_000] {
        let mut s = TcpStream::connect(daemon.addr).await.unwrap();
        let head = format!(
            "POST /hooks/LIVE/orders/web HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n\
             content-length: {length}\r\n\r\n"
        );
        s.write_all(head.as_bytes()).await.unwrap();
        let (status, _, body) = read_answer(&mut s).await;
        assert_eq!(status, 413, "{body}");
        assert!(is_json_error(&body), "{body}");
        assert!(body.contains("1024"), "{body}");
    }
    assert_eq!(queued(&daemon).await, 0);
}

#[tokio::test]
async fn a_chunked_body_is_cut_off_once_it_passes_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    let target = Target::start().await;
    let daemon = Daemon::start(dir.path(), &site(&target, "max_body = 100000", "")).await;
    let s = TcpStream::connect(daemon.addr).await.unwrap();
    let (mut read, mut write) = s.into_split();
    let sender = tokio::spawn(async move {
        write
            .write_all(
                b"POST /hooks/LIVE/orders/web HTTP/1.1\r\nhost: x\r\n\
                  transfer-encoding: chunked\r\n\r\n",
            )
            .await
            .unwrap();
        // Sends without end, 10 KiB a chunk, until the daemon hangs up:
        // the answer must come long before a gigabyte.
        let chunk = format!("2800\r\n{}\r\n", "x".repeat(0x2800));
        let mut sent = 0usize;
        while sent < 1 << 30 {
            if write.write_all(chunk.as_bytes()).await.is_err() {
                break;
            }
            sent += 0x2800;
        }
        sent
    });
    let (status, _, body) = read_answer(&mut read).await;
    assert_eq!(status, 413, "{body}");
    assert!(is_json_error(&body), "{body}");
    drop(read);
    // What the client got to write: the limit, and what the sockets'
    // buffers took on both sides; far from the old 64 MiB.
    let sent = sender.await.unwrap();
    assert!(
        sent < 16 << 20,
        "the daemon read {sent} bytes past a 100000-byte limit"
    );
    assert_eq!(queued(&daemon).await, 0);
}

#[tokio::test]
async fn bodies_beyond_the_memory_budget_wait_then_get_503_with_retry_after() {
    let dir = tempfile::tempdir().unwrap();
    let target = Target::start().await;
    let toml = site(&target, "max_body = 60000", "max_body_memory = 65536");
    let daemon = Daemon::start(dir.path(), &toml).await;
    let record = json!({"id": "big", "pad": "x".repeat(50_000)}).to_string();
    // A slow client: its headers promise a body it has not sent yet, and
    // the daemon has set its share aside.
    let mut slow = TcpStream::connect(daemon.addr).await.unwrap();
    let head = format!(
        "POST /hooks/LIVE/orders/web HTTP/1.1\r\nhost: x\r\ncontent-length: {}\r\n\r\n",
        record.len()
    );
    slow.write_all(head.as_bytes()).await.unwrap();
    // Sent before the daemon read the slow one's headers, a body is taken.
    let taken_before = std::sync::atomic::AtomicUsize::new(0);
    common::eventually(10, "the slow body takes its share", || async {
        let r = reqwest::Client::new()
            .post(daemon.url("/hooks/LIVE/orders/web"))
            .body(record.clone())
            .send()
            .await
            .unwrap();
        if r.status() == StatusCode::ACCEPTED {
            taken_before.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
        r.status() == StatusCode::SERVICE_UNAVAILABLE
            && r.headers().contains_key("retry-after")
            && is_json_error(&r.text().await.unwrap())
    })
    .await;
    let taken_before = taken_before.into_inner();
    // Once the slow one is done, there is room again.
    slow.write_all(record.as_bytes()).await.unwrap();
    let (status, _, body) = read_answer(&mut slow).await;
    assert_eq!(status, 202, "{body}");
    let r = reqwest::Client::new()
        .post(daemon.url("/hooks/LIVE/orders/web"))
        .body(json!({"id": "after"}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    common::eventually_seen(
        10,
        "both delivered",
        || async { target.count() },
        |n| *n == 2 + taken_before,
    )
    .await;
}

#[tokio::test]
async fn a_webhook_with_a_bearer_secret_refuses_callers_without_it_and_queues_nothing() {
    std::env::set_var("SLUICE_TEST_SHOP_SECRET", "open-sesame-42");
    let dir = tempfile::tempdir().unwrap();
    let target = Target::start().await;
    let toml = site(&target, "secret_env = \"SLUICE_TEST_SHOP_SECRET\"", "");
    let daemon = Daemon::start(dir.path(), &toml).await;
    let http = reqwest::Client::new();
    let url = daemon.url("/hooks/LIVE/orders/web");
    for auth in [None, Some("Bearer wrong"), Some("Bearer open-sesame-4")] {
        let mut r = http.post(&url).json(&order(1));
        if let Some(a) = auth {
            r = r.header("authorization", a);
        }
        let r = r.send().await.unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{auth:?}");
        assert!(is_json_error(&r.text().await.unwrap()));
    }
    assert_eq!(queued(&daemon).await, 0);
    let r = http
        .post(&url)
        .bearer_auth("open-sesame-42")
        .json(&order(2))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    common::eventually(10, "the signed record delivered", || async {
        target.count() == 1
    })
    .await;
    assert_eq!(target.field("n"), [json!(2)]);
}

/// The hex HMAC-SHA256 of `body` under `key`, computed here with the
/// `openssl` command (independent of the code under test).
fn openssl_hmac(key: &str, body: &[u8]) -> String {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut child = Command::new("openssl")
        .args(["dgst", "-sha256", "-hmac", key, "-hex"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("openssl is installed");
    child.stdin.take().unwrap().write_all(body).unwrap();
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    text.trim().rsplit(' ').next().unwrap().to_string()
}

#[tokio::test]
async fn a_webhook_with_an_hmac_signature_takes_only_bodies_signed_with_its_secret() {
    std::env::set_var("SLUICE_TEST_HOOK_HMAC", "hmac-key-7");
    let dir = tempfile::tempdir().unwrap();
    let target = Target::start().await;
    let toml = site(
        &target,
        "secret_env = \"SLUICE_TEST_HOOK_HMAC\"\nsignature = \"hmac-sha256\"\n\
         signature_header = \"X-Hub-Signature-256\"",
        "",
    );
    let daemon = Daemon::start(dir.path(), &toml).await;
    let http = reqwest::Client::new();
    let url = daemon.url("/hooks/LIVE/orders/web");
    let body = order(7).to_string();
    let good = openssl_hmac("hmac-key-7", body.as_bytes());
    let tampered = order(8).to_string();
    for (signature, sent) in [
        (None, &body),
        (
            Some(format!("sha256={}", openssl_hmac("other", body.as_bytes()))),
            &body,
        ),
        (Some(format!("sha256={good}")), &tampered),
    ] {
        let mut r = http.post(&url).body(sent.clone());
        if let Some(s) = signature {
            r = r.header("x-hub-signature-256", s);
        }
        let r = r.send().await.unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        assert!(is_json_error(&r.text().await.unwrap()));
    }
    assert_eq!(queued(&daemon).await, 0);
    for signature in [format!("sha256={good}"), good.clone()] {
        let r = http
            .post(&url)
            .header("x-hub-signature-256", signature)
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::ACCEPTED);
    }
    common::eventually(10, "both signed posts delivered", || async {
        target.count() == 2
    })
    .await;
}

#[tokio::test]
async fn a_content_type_that_is_not_json_is_refused_and_none_is_taken_as_json() {
    let dir = tempfile::tempdir().unwrap();
    let target = Target::start().await;
    let daemon = Daemon::start(dir.path(), &site(&target, "", "")).await;
    let http = reqwest::Client::new();
    let url = daemon.url("/hooks/LIVE/orders/web");
    for ct in ["text/plain", "application/x-www-form-urlencoded"] {
        let r = http
            .post(&url)
            .header("content-type", ct)
            .body(order(1).to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE, "{ct}");
        assert!(is_json_error(&r.text().await.unwrap()));
    }
    assert_eq!(queued(&daemon).await, 0);
    // No Content-Type at all: taken as JSON.
    let r = http
        .post(&url)
        .body(order(2).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let r = http
        .post(&url)
        .header("content-type", "application/json; charset=utf-8")
        .body(order(3).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
}

#[tokio::test]
async fn an_api_body_sent_after_its_headers_is_read_before_the_answer() {
    let dir = tempfile::tempdir().unwrap();
    let target = Target::start().await;
    let daemon = Daemon::start(dir.path(), &site(&target, "", "")).await;
    let (status, _) = daemon
        .post("/api/v1/sites/LIVE/stop", json!({"reason": "test"}))
        .await;
    assert_eq!(status, StatusCode::OK);
    let mut s = TcpStream::connect(daemon.addr).await.unwrap();
    let body = b"{}";
    s.write_all(
        format!(
            "POST /api/v1/sites/LIVE/start HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n\
             content-length: {}\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    // A client that sends its body a moment after its headers, as many do
    // (e.g. after `Expect: 100-continue` times out).
    tokio::time::sleep(Duration::from_millis(300)).await;
    s.write_all(body).await.unwrap();
    let (status, head, answer) = read_answer(&mut s).await;
    assert_eq!(status, 200, "{answer}");
    assert!(!head.contains("connection: close"), "{head}");
    // The connection is still good for the next request.
    s.write_all(b"GET /api/v1/sites/LIVE HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let (status, _, answer) = read_answer(&mut s).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        serde_json::from_str::<Value>(&answer).unwrap()["state"],
        "running"
    );
}

#[tokio::test]
async fn an_api_body_over_its_limit_is_a_json_413() {
    let dir = tempfile::tempdir().unwrap();
    let target = Target::start().await;
    let daemon = Daemon::start(dir.path(), &site(&target, "", "")).await;
    let r = reqwest::Client::new()
        .post(daemon.url("/api/v1/session"))
        .header("content-type", "application/json")
        .body(json!({"token": "x".repeat(200_000)}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert!(is_json_error(&r.text().await.unwrap()));
}
