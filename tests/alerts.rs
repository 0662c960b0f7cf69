//! Alerts at a webhook channel: one alert when a condition starts and one
//! when it is over, not one per record; kept and sent once a channel that
//! was down is back; a test alert on demand.

mod common;

use axum::http::StatusCode;
use common::*;
use serde_json::{json, Value};

/// The site of [`webhook_site`] with an alert channel `ops` at `alerts`.
fn alerting_site(target: &Target, alerts: &Target, more: &str) -> String {
    format!(
        "{}\n[alerts.ops]\nkind = \"webhook\"\nurl = \"{}\"\n{more}",
        webhook_site(target, 1),
        alerts.url()
    )
}

/// (alert, state) of each alert received, in arrival order.
fn kinds(alerts: &Target) -> Vec<(String, String)> {
    alerts
        .received()
        .iter()
        .map(|r| {
            (
                r.record["alert"].as_str().unwrap_or("?").to_string(),
                r.record["state"].as_str().unwrap_or("?").to_string(),
            )
        })
        .collect()
}

fn pair(alert: &str, state: &str) -> (String, String) {
    (alert.to_string(), state.to_string())
}

fn time(v: &Value) -> chrono::DateTime<chrono::FixedOffset> {
    chrono::DateTime::parse_from_rfc3339(v.as_str().unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_is_one_held_alert_and_one_resolved() {
    let dir = tempfile::tempdir().unwrap();
    let target = Target::start().await;
    let alerts = Target::start().await;
    let daemon = Daemon::start(dir.path(), &alerting_site(&target, &alerts, "")).await;

    daemon.hook("LIVE", "orders", "web", order(1)).await;
    eventually(10, "delivered", || async { target.count() == 1 }).await;
    let before = chrono::Utc::now();

    // The target goes away while records keep coming.
    target.stop().await;
    for n in 2..=20 {
        daemon.hook("LIVE", "orders", "web", order(n)).await;
    }
    eventually(15, "a held alert", || async {
        !alerts.received().is_empty()
    })
    .await;
    let held = alerts.received()[0].record.clone();
    assert_eq!(held["alert"], "held", "{held}");
    assert_eq!(held["state"], "firing");
    assert_eq!(held["site"], "LIVE");
    assert_eq!(held["integration"], "orders");
    assert_eq!(held["endpoint"], "crm");
    assert_eq!(held["by"], "sluice");
    assert_eq!(held["resolved_at"], Value::Null);
    assert_eq!(held["duration_s"], Value::Null);
    let reason = held["reason"].as_str().unwrap();
    assert!(reason.contains("crm"), "{held}");
    let text = held["text"].as_str().unwrap();
    assert!(text.contains("LIVE") && text.contains("orders"), "{held}");
    assert!(time(&held["since"]) >= before - chrono::Duration::seconds(1));

    // Back: one "resolved", with how long it lasted.
    target.restart().await;
    eventually(20, "the resolved alert", || async { alerts.count() >= 2 }).await;
    let resolved = alerts.received()[1].record.clone();
    assert_eq!(
        (&resolved["alert"], &resolved["state"]),
        (&json!("held"), &json!("resolved")),
        "{resolved}"
    );
    assert_eq!(resolved["since"], held["since"]);
    assert_eq!(resolved["endpoint"], "crm");
    let lasted = time(&resolved["resolved_at"]) - time(&resolved["since"]);
    assert_eq!(
        resolved["duration_s"],
        json!(lasted.num_seconds()),
        "{resolved}"
    );
    eventually(20, "all delivered", || async {
        target.deduplicated().len() == 20
    })
    .await;

    // A stop is alerted after them: had the outage been alerted more than
    // once, it would show before this.
    let (status, v) = daemon
        .post("/api/v1/sites/LIVE/stop", json!({"reason": "stocktake"}))
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    eventually(10, "the site-stopped alert", || async {
        alerts.count() >= 3
    })
    .await;
    assert_eq!(
        kinds(&alerts),
        [
            pair("held", "firing"),
            pair("held", "resolved"),
            pair("site-stopped", "firing")
        ]
    );
    let stopped = alerts.received()[2].record.clone();
    assert_eq!(stopped["by"], "tester");
    assert_eq!(stopped["reason"], "stocktake");
    assert_eq!(stopped["integration"], Value::Null);

    // Each alert sent is in the site's audit trail.
    let (_, audit) = daemon.get("/api/v1/sites/LIVE/audit").await;
    let sent = audit
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["action"] == "alert.sent" && a["subject"] == "alert/ops")
        .count();
    assert_eq!(sent, 3, "{audit}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alert_waits_for_a_channel_that_is_down_and_holds_up_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let target = Target::start().await;
    let alerts = Target::start().await;
    let toml = alerting_site(&target, &alerts, "format = \"slack\"\non = [\"paused\"]\n");
    let daemon = Daemon::start(dir.path(), &toml).await;
    alerts.stop().await;

    let (status, v) = daemon
        .post(
            "/api/v1/sites/LIVE/integrations/orders/pause",
            json!({"reason": "month end"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    eventually(10, "the site log says the channel is down", || async {
        daemon
            .log("LIVE")
            .await
            .contains("Alert channel ops cannot be reached")
    })
    .await;
    // The integration is not held up by the channel: it resumes and sends.
    let (status, v) = daemon
        .post("/api/v1/sites/LIVE/integrations/orders/resume", json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    daemon.hook("LIVE", "orders", "web", order(1)).await;
    eventually(10, "delivered", || async { target.count() == 1 }).await;

    // Back, the channel gets the alert and its "resolved", Slack's way.
    alerts.restart().await;
    eventually(30, "both alerts", || async { alerts.count() >= 2 }).await;
    let texts: Vec<String> = alerts
        .received()
        .iter()
        .map(|r| r.record["text"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(texts.len(), 2, "{texts:?}");
    assert!(
        texts[0].starts_with("[sluice ALERT]") && texts[0].contains("paused by tester"),
        "{texts:?}"
    );
    assert!(texts[0].contains("month end"), "{texts:?}");
    assert!(texts[1].starts_with("[sluice RESOLVED]"), "{texts:?}");
    assert!(
        alerts.received()[0].record.get("alert").is_none(),
        "only text"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_test_alert_is_sent_on_demand() {
    let dir = tempfile::tempdir().unwrap();
    let target = Target::start().await;
    let alerts = Target::start().await;
    let daemon = Daemon::start(dir.path(), &alerting_site(&target, &alerts, "")).await;

    let out = daemon.cli(&["alert", "test", "ops"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(alerts.count(), 1);
    let test = alerts.received()[0].record.clone();
    assert_eq!(test["alert"], "test", "{test}");
    assert_eq!(test["state"], "firing");
    assert_eq!(test["site"], Value::Null);

    let (status, v) = daemon.post("/api/v1/alerts/nothing/test", json!({})).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{v}");
    assert!(v["error"].as_str().unwrap().contains("nothing"), "{v}");

    alerts.stop().await;
    let out = daemon.cli(&["alert", "test", "ops"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("did not take the test alert"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
