//! The command line against a real daemon: status, log --follow, tx list,
//! and configuration errors.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_log_follow_and_tx_list() {
    let dir = tempfile::tempdir().unwrap();
    let target = Target::start().await;
    let daemon = Daemon::start(dir.path(), &webhook_site(&target, 1)).await;

    let out = daemon.cli(&["status"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("LIVE") && text.contains("orders") && text.contains("active"),
        "{text}"
    );

    // log --follow prints what is written after it started.
    let mut follow = Command::new(BIN)
        .args(["--server", &daemon.server(), "log", "LIVE", "--follow"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = follow.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    // The stream begins with the recent lines, and it subscribes to the
    // log before it reads them: once one is printed, every line written
    // from then on follows.
    let first = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("log --follow prints the recent lines first");
    daemon
        .post(
            "/api/v1/sites/LIVE/integrations/orders/pause",
            json!({"reason": "watch me"}),
        )
        .await;
    let mut lines = vec![first];
    let found = loop {
        match rx.recv_timeout(Duration::from_secs(10)) {
            Ok(line) => {
                let hit = line.contains("Integration orders paused by tester: watch me");
                lines.push(line);
                if hit {
                    break true;
                }
            }
            Err(_) => break false,
        }
    };
    follow.kill().unwrap();
    follow.wait().unwrap();
    assert!(found, "log --follow printed:\n{}", lines.join("\n"));
    assert!(has_log_line(
        &lines.join("\n"),
        4,
        "Integration orders paused by tester: watch me"
    ));

    daemon
        .hook("LIVE", "orders", "web", json!({"id": "a", "n": 1}))
        .await;
    let out = daemon.cli(&["tx", "list", "LIVE", "orders", "--state", "queued"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("queued") && text.contains("web"), "{text}");

    // A refusal is exit code 1 with the daemon's message.
    let out = daemon.cli(&["integration", "pause", "LIVE", "orders"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("paused"));
    // An unreachable daemon is exit code 3.
    let out = Command::new(BIN)
        .args(["--server", "http://127.0.0.1:9", "status"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
}

#[test]
fn the_daemon_refuses_to_start_on_an_invalid_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        r#"listen = "127.0.0.1:0"

[sites.LIVE.endpoints.crm]
kind = "http"
url = "http://127.0.0.1:9/x"
batch = 0

[sites.LIVE.integrations.orders]

[[sites.LIVE.integrations.orders.flows]]
name = "web"
source = "nowhere"
target = "crm"
shedule = "every 5s"
"#,
    )
    .unwrap();
    let out = Command::new(BIN)
        .arg("serve")
        .arg("--config")
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    // Every error at once, each with file, line and key.
    assert!(
        err.contains("bad.toml:6: sites.LIVE.endpoints.crm.batch"),
        "{err}"
    );
    assert!(
        err.contains("bad.toml:12: sites.LIVE.integrations.orders.flows[0].source"),
        "{err}"
    );
    assert!(
        err.contains("bad.toml:14") && err.contains("shedule"),
        "{err}"
    );
}
