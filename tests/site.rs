//! Seed 000: starting and stopping a site, and what a stopped site does
//! with scheduled and requested runs.

mod common;

use axum::http::StatusCode;
use common::*;
use serde_json::json;

/// A site `LIVE` with a slow file flow (`customers`, 200 records in pages of
/// 10, 60 ms apart) and a scheduled generator flow (`ticks`, every 1s).
fn config(dir: &std::path::Path, target: &Target, schedule: bool) -> String {
    let mut lines = String::new();
    for i in 1..=200 {
        lines.push_str(&format!("{{\"id\": {i}, \"updated_at\": {i}}}\n"));
    }
    std::fs::write(dir.join("customers.jsonl"), lines).unwrap();
    format!(
        r#"
[sites.LIVE]
log_level = 4

[sites.LIVE.endpoints.erp]
kind = "file"
path = "{erp}"
page_size = 10
pace = "60ms"

[sites.LIVE.endpoints.ticker]
kind = "generator"
count = 2

[sites.LIVE.endpoints.crm]
kind = "http"
url = "{url}"
batch = 10

[sites.LIVE.integrations.sync]

[[sites.LIVE.integrations.sync.flows]]
name = "customers"
source = "erp"
target = "crm"
key = "id"
cursor = "updated_at"

[[sites.LIVE.integrations.sync.flows]]
name = "ticks"
source = "ticker"
target = "crm"
{schedule}
"#,
        erp = dir.join("customers.jsonl").display(),
        url = target.url(),
        schedule = if schedule {
            "schedule = \"every 1s\""
        } else {
            ""
        },
    )
}

/// A second site, `OTHER`, whose flow `beat` delivers one generated record
/// to `beats` every second: a running schedule to hold a stopped one
/// against.
fn other_site(beats: &Target) -> String {
    format!(
        r#"
[sites.OTHER.endpoints.pulse]
kind = "generator"
count = 1

[sites.OTHER.endpoints.sink]
kind = "http"
url = "{url}"

[sites.OTHER.integrations.clock]

[[sites.OTHER.integrations.clock.flows]]
name = "beat"
source = "pulse"
target = "sink"
schedule = "every 1s"
"#,
        url = beats.url()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_needs_a_reason_and_halts_a_run_mid_run() {
    let dir = tempfile::tempdir().unwrap();
    let target = Target::start().await;
    let daemon = Daemon::start(dir.path(), &config(dir.path(), &target, false)).await;

    // No reason, or a blank one: 400 with a JSON error, and the site runs on.
    for body in [json!({}), json!({"reason": ""}), json!({"reason": "   "})] {
        let (status, answer) = daemon.post("/api/v1/sites/LIVE/stop", body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(
            answer["error"].as_str().unwrap().contains("reason"),
            "{answer}"
        );
    }
    let (_, site) = daemon.get("/api/v1/sites/LIVE").await;
    assert_eq!(site["state"], "running");

    // A run of 200 records takes about 1.2 s; stop it part-way.
    let (status, answer) = daemon
        .post(
            "/api/v1/sites/LIVE/flows/customers/run",
            json!({"mode": "changed"}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    assert_eq!(answer["status"], "Running");
    eventually(10, "the run has queued a page", || async {
        daemon.flow("LIVE", "customers").await["last_run"]["captured"].as_i64() >= Some(20)
    })
    .await;
    let (status, site) = daemon
        .post(
            "/api/v1/sites/LIVE/stop",
            json!({"reason": "Stopping integration due to stocktake"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{site}");
    assert_eq!(site["state"], "stopped");
    assert_eq!(site["stop_reason"], "Stopping integration due to stocktake");
    assert_eq!(site["stopped_by"], "tester");

    let flow = daemon.flow("LIVE", "customers").await;
    assert_eq!(flow["last_run"]["result"], "halted", "{flow}");
    assert_eq!(flow["status"], "Halted");
    let captured = flow["last_run"]["captured"].as_i64().unwrap();
    assert!(
        (20..200).contains(&captured),
        "halted mid-run: {captured} captured"
    );

    let log = daemon.log("LIVE").await;
    for line in [
        "AllOthers thread stopped.",
        "GetData thread stopped.",
        "Trigger thread stopped.",
        "Monitor thread stopped.",
        "Site LIVE stopped successfully!",
    ] {
        assert!(has_log_line(&log, 4, line), "missing '{line}' in:\n{log}");
    }
    let (_, audit) = daemon.get("/api/v1/sites/LIVE/audit").await;
    let stop = audit
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["action"] == "site.stop" && a["outcome"] == "ok")
        .expect("the stop is in the audit trail");
    assert_eq!(stop["reason"], "Stopping integration due to stocktake");
    assert_eq!(stop["actor"], "tester");

    // Stopping a stopped site: 409 naming the state.
    let (status, answer) = daemon
        .post("/api/v1/sites/LIVE/stop", json!({"reason": "again"}))
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert!(
        answer["error"].as_str().unwrap().contains("stopped"),
        "{answer}"
    );

    // Started again, 'Send Changed' picks up after the last page queued:
    // every record arrives once, in order.
    let (status, _) = daemon.post("/api/v1/sites/LIVE/start", json!({})).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = daemon
        .post(
            "/api/v1/sites/LIVE/flows/customers/run",
            json!({"mode": "changed"}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    eventually(20, "all 200 records delivered", || async {
        target.deduplicated().len() >= 200
    })
    .await;
    // The run is over and what it queued is sent: nothing more is coming.
    eventually(20, "the run over and its queue sent", || async {
        daemon.flow("LIVE", "customers").await["status"] == "Success"
            && daemon.integration("LIVE", "sync").await["queued"] == 0
    })
    .await;
    let ids: Vec<i64> = target
        .deduplicated()
        .iter()
        .map(|r| r.record["id"].as_i64().unwrap())
        .collect();
    assert_eq!(
        ids,
        (1..=200).collect::<Vec<_>>(),
        "no record lost or repeated"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_site_runs_nothing_and_forgets_pending_requests_on_start() {
    let dir = tempfile::tempdir().unwrap();
    let target = Target::start().await;
    let beats = Target::start().await;
    let toml = config(dir.path(), &target, true) + &other_site(&beats);
    let daemon = Daemon::start(dir.path(), &toml).await;
    // The schedule fires while the site runs.
    eventually(10, "a scheduled run", || async {
        daemon.flow("LIVE", "ticks").await["last_run"]["result"] == "success"
    })
    .await;
    let (status, _) = daemon
        .post("/api/v1/sites/LIVE/stop", json!({"reason": "maintenance"}))
        .await;
    assert_eq!(status, StatusCode::OK);
    let runs_before = daemon.flow("LIVE", "ticks").await["last_run"]["id"].clone();
    let delivered_before = target.count();

    // Through the CLI: Send Changed and Send All only mark the flows pending.
    let out = daemon.cli(&["flow", "run", "LIVE", "customers", "--changed"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("Pending Changed"));
    assert_eq!(
        daemon.flow("LIVE", "customers").await["status"],
        "Pending Changed"
    );
    let out = daemon.cli(&["flow", "run", "LIVE", "ticks", "--all"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(daemon.flow("LIVE", "ticks").await["status"], "Pending All");

    // Three firings of the same schedule in the site that runs: two
    // intervals or more went by, and nothing ran here, nothing was sent.
    let beaten = beats.count();
    eventually(10, "three scheduled runs in the other site", || async {
        beats.count() >= beaten + 3
    })
    .await;
    assert_eq!(
        daemon.flow("LIVE", "ticks").await["last_run"]["id"],
        runs_before
    );
    assert!(daemon.flow("LIVE", "customers").await["last_run"].is_null());
    assert_eq!(target.count(), delivered_before);

    let out = daemon.cli(&["site", "start", "LIVE"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let log = daemon.log("LIVE").await;
    assert!(
        has_log_line(&log, 4, "Site LIVE started successfully!"),
        "{log}"
    );
    for line in [
        "AllOthers thread started",
        "GetData thread started",
        "Trigger thread started",
        "Monitor thread started",
    ] {
        assert!(has_log_line(&log, 4, line), "missing '{line}' in:\n{log}");
    }
    // Every status is blank again and the pending request was not commenced.
    let (_, flows) = daemon.get("/api/v1/sites/LIVE/flows").await;
    for flow in flows.as_array().unwrap() {
        assert_eq!(flow["status"], "", "{flow}");
    }
    // A run asked for now goes through the Trigger's queue after anything
    // the start handed it: once it is over, a pending request taken up at
    // the start would have begun.
    let (status, _) = daemon
        .post("/api/v1/sites/LIVE/flows/ticks/run", json!({"mode": "all"}))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    eventually(10, "the run asked after the start is over", || async {
        let run = daemon.flow("LIVE", "ticks").await["last_run"].clone();
        run["id"] != runs_before && run["mode"] == "all" && run["result"] == "success"
    })
    .await;
    assert!(
        daemon.flow("LIVE", "customers").await["last_run"].is_null(),
        "the pending request did not run"
    );
    assert!(log.contains("it is not commenced"), "{log}");
}

/// A reload is not a stop: records sent by webhook while it applies are
/// taken (by the old configuration until the new one runs), none refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_sent_during_a_reload_are_taken() {
    let dir = tempfile::tempdir().unwrap();
    let target = Target::start().await;
    let daemon = Daemon::start(dir.path(), &webhook_site(&target, 10)).await;
    let good = std::fs::read_to_string(&daemon.config).unwrap();
    let sending = std::sync::atomic::AtomicBool::new(true);
    let hooks = async {
        let mut n = 0usize;
        while sending.load(std::sync::atomic::Ordering::SeqCst) {
            let (status, answer) = daemon.hook("LIVE", "orders", "web", order(n)).await;
            assert_eq!(status, StatusCode::ACCEPTED, "record {n}: {answer:?}");
            n += 1;
        }
        n
    };
    let reloads = async {
        for i in 0..5 {
            // Each reload changes an integration, so that it restarts.
            let added = format!(
                "{good}\n[sites.LIVE.integrations.extra{i}]\n\n[[sites.LIVE.integrations.extra{i}.flows]]\n\
                 name = \"extra{i}\"\nsource = \"shop\"\ntarget = \"crm\"\n"
            );
            std::fs::write(&daemon.config, added).unwrap();
            let (status, answer) = daemon.post("/api/v1/sites/LIVE/reload", json!({})).await;
            assert_eq!(status, StatusCode::OK, "{answer}");
        }
        sending.store(false, std::sync::atomic::Ordering::SeqCst);
    };
    let (sent, ()) = tokio::join!(hooks, reloads);
    eventually(20, "every record delivered", || async {
        target.count() >= sent
    })
    .await;
    assert_eq!(
        target.field("n"),
        (0..sent).map(|n| json!(n)).collect::<Vec<_>>(),
        "each once, in order"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_applies_the_file_and_keeps_states_and_queues() {
    let dir = tempfile::tempdir().unwrap();
    let target = Target::start().await;
    let daemon = Daemon::start(dir.path(), &webhook_site(&target, 1)).await;
    daemon
        .post(
            "/api/v1/sites/LIVE/integrations/orders/pause",
            json!({"reason": "keep me"}),
        )
        .await;
    for n in 0..5 {
        daemon.hook("LIVE", "orders", "web", order(n)).await;
    }

    // An invalid file is refused with its errors, and nothing changes.
    let good = std::fs::read_to_string(&daemon.config).unwrap();
    std::fs::write(&daemon.config, good.replace("batch = 1", "batch = 0")).unwrap();
    let (status, answer) = daemon.post("/api/v1/sites/LIVE/reload", json!({})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    assert!(
        answer["error"].as_str().unwrap().contains("sluice.toml:"),
        "{answer}"
    );
    assert!(answer["error"]
        .as_str()
        .unwrap()
        .contains("sites.LIVE.endpoints.crm.batch"));

    // A new integration and a new log level: applied; the paused one keeps
    // its state, hold and queue.
    let added = format!(
        "{good}\n[sites.LIVE.integrations.extra]\n\n[[sites.LIVE.integrations.extra.flows]]\nname = \"extra-web\"\nsource = \"shop\"\ntarget = \"crm\"\n"
    );
    std::fs::write(&daemon.config, added).unwrap();
    let out = daemon.cli(&["site", "reload", "LIVE"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let orders = daemon.integration("LIVE", "orders").await;
    assert_eq!(orders["state"], "paused");
    assert_eq!(orders["holds"][0]["reason"], "keep me");
    assert_eq!(orders["queued"], 5);
    let extra = daemon.integration("LIVE", "extra").await;
    assert_eq!(extra["state"], "active");
    let (status, _) = daemon.hook("LIVE", "extra", "extra-web", order(100)).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    eventually(10, "the new integration delivers", || async {
        target.count() >= 1
    })
    .await;
    assert_eq!(target.field("n"), [json!(100)]);
    let log = daemon.log("LIVE").await;
    assert!(
        log.contains("Configuration of site LIVE reloaded; new: extra"),
        "{log}"
    );

    // SIGHUP reloads too.
    let pid = std::process::Command::new("pgrep")
        .args(["-f", &format!("serve --config {}", daemon.config.display())])
        .output()
        .unwrap();
    let pid = String::from_utf8_lossy(&pid.stdout)
        .lines()
        .next()
        .unwrap()
        .trim()
        .to_string();
    std::process::Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .unwrap();
    eventually(10, "a second reload logged", || async {
        daemon
            .log("LIVE")
            .await
            .matches("Configuration of site LIVE reloaded")
            .count()
            >= 2
    })
    .await;
    daemon
        .post("/api/v1/sites/LIVE/integrations/orders/resume", json!({}))
        .await;
    eventually(10, "the kept queue drains in order", || async {
        target.count() >= 6
    })
    .await;
    let ns: Vec<serde_json::Value> = target.field("n");
    assert_eq!(ns[1..], (0..5).map(|n| json!(n)).collect::<Vec<_>>());
}
