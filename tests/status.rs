//! Seed 001: the connection statuses, and queued starts.

mod common;

use std::path::Path;
use std::time::Duration;

use axum::http::StatusCode;
use common::*;
use serde_json::json;

fn lines(n: usize) -> String {
    (1..=n)
        .map(|i| format!("{{\"id\": {i}, \"u\": {i}}}\n"))
        .collect()
}

fn file_endpoint(dir: &Path, name: &str, slow: bool) -> String {
    format!(
        "[sites.LIVE.endpoints.{name}]\nkind = \"file\"\npath = \"{}\"\n{}\n",
        dir.join(format!("{name}.jsonl")).display(),
        if slow {
            "page_size = 1\npace = \"400ms\"\n"
        } else {
            ""
        }
    )
}

fn flow(integration: &str, name: &str) -> String {
    format!(
        "[[sites.LIVE.integrations.{integration}.flows]]\nname = \"{name}\"\nsource = \"{name}\"\ntarget = \"crm\"\ncursor = \"u\"\n"
    )
}

async fn status(daemon: &Daemon, name: &str) -> String {
    daemon.integration("LIVE", name).await["status"]
        .as_str()
        .unwrap()
        .to_string()
}

async fn run_all(daemon: &Daemon, flow: &str) {
    let (code, v) = daemon
        .post(
            &format!("/api/v1/sites/LIVE/flows/{flow}/run"),
            json!({"mode": "all"}),
        )
        .await;
    assert_eq!(code, StatusCode::ACCEPTED, "{v}");
}

async fn finished(daemon: &Daemon, flow: &str) {
    eventually(15, "the run finished", || async {
        let s = daemon.flow("LIVE", flow).await["status"].clone();
        s == "Success" || s == "Failed"
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_three_cases_of_seed_001_idle_and_disabled() {
    let dir = tempfile::tempdir().unwrap();
    let target = Target::start().await;
    for (name, n) in [("ss1", 3), ("ss2", 2), ("ss3", 2)] {
        std::fs::write(dir.path().join(format!("{name}.jsonl")), lines(n)).unwrap();
    }
    let toml = format!(
        "[sites.LIVE.endpoints.crm]\nkind = \"http\"\nurl = \"{}\"\n{}{}{}[sites.LIVE.integrations.sync]\n{}{}{}[sites.LIVE.integrations.idle]\n",
        target.url(),
        file_endpoint(dir.path(), "ss1", true),
        file_endpoint(dir.path(), "ss2", false),
        file_endpoint(dir.path(), "ss3", false),
        flow("sync", "ss1"),
        flow("sync", "ss2"),
        flow("sync", "ss3"),
    );
    let daemon = Daemon::start(dir.path(), &toml).await;
    assert_eq!(status(&daemon, "idle").await, "Idle");
    assert_eq!(
        status(&daemon, "sync").await,
        "Restarting",
        "no sync-set has completed yet"
    );

    // Case 1: iteration 2 all success; iteration 3 ss1 ongoing → Running.
    for f in ["ss1", "ss2", "ss3"] {
        run_all(&daemon, f).await;
        finished(&daemon, f).await;
    }
    assert_eq!(status(&daemon, "sync").await, "Running");
    run_all(&daemon, "ss1").await;
    assert_eq!(daemon.flow("LIVE", "ss1").await["status"], "Running");
    assert_eq!(
        status(&daemon, "sync").await,
        "Running",
        "an ongoing run does not count"
    );
    finished(&daemon, "ss1").await;

    // Case 2: ss1 failed; then ss1 ongoing → Failed.
    std::fs::write(dir.path().join("ss1.jsonl"), "not json\n").unwrap();
    run_all(&daemon, "ss1").await;
    finished(&daemon, "ss1").await;
    assert_eq!(
        daemon.flow("LIVE", "ss1").await["last_run"]["result"],
        "failed"
    );
    assert_eq!(status(&daemon, "sync").await, "Failed");
    std::fs::write(dir.path().join("ss1.jsonl"), lines(3)).unwrap();
    run_all(&daemon, "ss1").await;
    assert_eq!(daemon.flow("LIVE", "ss1").await["status"], "Running");
    assert_eq!(
        status(&daemon, "sync").await,
        "Failed",
        "no subsequent iteration succeeded yet"
    );

    // Case 3: ss1 success, then ss2 ongoing → Running.
    finished(&daemon, "ss1").await;
    run_all(&daemon, "ss2").await;
    assert_eq!(status(&daemon, "sync").await, "Running");

    let (_, v) = daemon
        .post("/api/v1/sites/LIVE/integrations/idle/stop", json!({}))
        .await;
    assert_eq!(v["status"], "Disabled");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starts_are_queued_one_after_the_other() {
    let dir = tempfile::tempdir().unwrap();
    let target = Target::start().await;
    for name in ["fa", "fb"] {
        std::fs::write(dir.path().join(format!("{name}.jsonl")), lines(3)).unwrap();
    }
    let toml = format!(
        "[sites.LIVE.endpoints.crm]\nkind = \"http\"\nurl = \"{}\"\n{}{}[sites.LIVE.integrations.a]\n{}[sites.LIVE.integrations.b]\n{}",
        target.url(),
        file_endpoint(dir.path(), "fa", true),
        file_endpoint(dir.path(), "fb", true),
        flow("a", "fa"),
        flow("b", "fb"),
    );
    let daemon = Daemon::start(dir.path(), &toml).await;
    for i in ["a", "b"] {
        daemon
            .post(
                &format!("/api/v1/sites/LIVE/integrations/{i}/stop"),
                json!({}),
            )
            .await;
    }
    let (_, a) = daemon
        .post("/api/v1/sites/LIVE/integrations/a/start", json!({}))
        .await;
    let (_, b) = daemon
        .post("/api/v1/sites/LIVE/integrations/b/start", json!({}))
        .await;
    assert_eq!(a["status"], "Restarting", "{a}");
    assert_eq!(b["status"], "Restarting", "{b}");
    eventually(20, "both started", || async {
        status(&daemon, "a").await == "Running" && status(&daemon, "b").await == "Running"
    })
    .await;
    let fa = daemon.flow("LIVE", "fa").await["last_run"].clone();
    let fb = daemon.flow("LIVE", "fb").await["last_run"].clone();
    let a_done = fa["finished_at"].as_str().unwrap();
    let b_began = fb["started_at"].as_str().unwrap();
    assert!(
        b_began >= a_done,
        "b began its start-up at {b_began}, before a was Running at {a_done}"
    );
    // Both start-ups are over and their queues sent: nothing more is coming.
    eventually(10, "both queues sent", || async {
        daemon.integration("LIVE", "a").await["queued"] == 0
            && daemon.integration("LIVE", "b").await["queued"] == 0
    })
    .await;
    assert_eq!(target.count(), 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn during_a_reload_integrations_show_server_reinitializing() {
    let dir = tempfile::tempdir().unwrap();
    let target = Target::start().await;
    target.set_delay(Duration::from_millis(1500));
    let daemon = Daemon::start(dir.path(), &webhook_site(&target, 1)).await;
    daemon.hook("LIVE", "orders", "web", order(1)).await;
    eventually(10, "a delivery in flight", || async {
        target.requests.load(std::sync::atomic::Ordering::SeqCst) >= 1
    })
    .await;
    let server = daemon.server();
    let reload = std::thread::spawn(move || {
        std::process::Command::new(BIN)
            .args(["--server", &server, "site", "reload", "LIVE"])
            .output()
            .unwrap()
    });
    eventually(
        5,
        "Server Reinitializing while the reload applies",
        || async { status(&daemon, "orders").await == "Server Reinitializing" },
    )
    .await;
    let out = reload.join().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(status(&daemon, "orders").await, "Running");
    // The delivery in flight was let finish, not cut off and sent again.
    daemon.hook("LIVE", "orders", "web", order(2)).await;
    // Delivered in order: once 2 is in and the queue empty, a resend of 1
    // would have come before.
    eventually(10, "both delivered", || async {
        target.field("n").contains(&json!(2))
            && daemon.integration("LIVE", "orders").await["queued"] == 0
    })
    .await;
    assert_eq!(target.field("n"), [json!(1), json!(2)]);
}
