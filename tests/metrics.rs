//! `/metrics` in Prometheus text format, parsed by an independent parser:
//! its queue depth matches the API's, and the delivery counters, latency
//! histogram, holds and endpoint state follow what happens.

mod common;

use common::*;
use reqwest::StatusCode;
use serde_json::{json, Value};

async fn scrape(daemon: &Daemon) -> prometheus_parse::Scrape {
    let r = reqwest::get(daemon.url("/metrics")).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let content_type = r.headers()["content-type"].to_str().unwrap().to_string();
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    let text = r.text().await.unwrap();
    let lines = text.lines().map(|l| Ok(l.to_string()));
    prometheus_parse::Scrape::parse(lines).unwrap_or_else(|e| panic!("{e}: {text}"))
}

/// The value of the sample `name` whose labels include `labels`.
fn value(scrape: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    scrape
        .samples
        .iter()
        .find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match &s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => *v,
            prometheus_parse::Value::Histogram(buckets) => {
                buckets.last().map(|b| b.count).unwrap_or(0.0)
            }
            prometheus_parse::Value::Summary(_) => f64::NAN,
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_follow_the_queue_and_the_deliveries() {
    let dir = tempfile::tempdir().unwrap();
    let target = Target::start().await;
    let daemon = Daemon::start(dir.path(), &webhook_site(&target, 1)).await;
    let orders = [("site", "LIVE"), ("integration", "orders")];

    let (status, v) = daemon
        .post("/api/v1/sites/LIVE/integrations/orders/pause", json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let records: Vec<Value> = (0..7).map(order).collect();
    let (status, _) = daemon.hook("LIVE", "orders", "web", json!(records)).await;
    assert_eq!(status, StatusCode::ACCEPTED);

    let api = daemon.integration("LIVE", "orders").await;
    assert_eq!(api["queued"], 7);
    let m = scrape(&daemon).await;
    assert_eq!(
        value(&m, "sluice_integration_queue_depth", &orders),
        Some(7.0)
    );
    assert_eq!(value(&m, "sluice_site_up", &[("site", "LIVE")]), Some(1.0));
    assert_eq!(
        value(
            &m,
            "sluice_site_state",
            &[("site", "LIVE"), ("state", "running")]
        ),
        Some(1.0)
    );
    let state = |s: &'static str| [("site", "LIVE"), ("integration", "orders"), ("state", s)];
    assert_eq!(
        value(&m, "sluice_integration_state", &state("paused")),
        Some(1.0)
    );
    assert_eq!(
        value(&m, "sluice_integration_state", &state("active")),
        Some(0.0)
    );
    let hold = |h: &'static str| [("site", "LIVE"), ("integration", "orders"), ("hold", h)];
    assert_eq!(
        value(&m, "sluice_integration_held", &hold("operator")),
        Some(1.0)
    );
    assert_eq!(
        value(&m, "sluice_integration_held", &hold("endpoint-offline")),
        Some(0.0)
    );
    assert_eq!(
        value(
            &m,
            "sluice_endpoint_up",
            &[("site", "LIVE"), ("endpoint", "crm")]
        ),
        Some(1.0)
    );
    eventually(10, "the Monitor's first probe is counted", || async {
        let m = scrape(&daemon).await;
        value(
            &m,
            "sluice_endpoint_probes_total",
            &[("endpoint", "crm"), ("result", "ok")],
        )
        .is_some_and(|n| n >= 1.0)
    })
    .await;
    // The same probe is the endpoint's last test in the API.
    let (_, crm) = daemon.get("/api/v1/sites/LIVE/endpoints/crm").await;
    assert_eq!(crm["last_test"]["ok"], true, "{crm}");
    assert!(crm["last_test"]["at"].as_str().is_some(), "{crm}");

    let (status, v) = daemon
        .post("/api/v1/sites/LIVE/integrations/orders/resume", json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    eventually(10, "the backlog is sent", || async {
        daemon.integration("LIVE", "orders").await["queued"] == 0
    })
    .await;
    eventually(5, "the counters show it", || async {
        let m = scrape(&daemon).await;
        value(&m, "sluice_transactions_sent_total", &orders) == Some(7.0)
    })
    .await;
    let m = scrape(&daemon).await;
    assert_eq!(
        value(&m, "sluice_integration_queue_depth", &orders),
        Some(0.0)
    );
    assert_eq!(
        value(&m, "sluice_integration_held", &hold("operator")),
        Some(0.0)
    );
    assert_eq!(
        value(&m, "sluice_send_duration_seconds", &orders),
        Some(7.0)
    );
    assert_eq!(
        value(&m, "sluice_transactions_failed_total", &orders).unwrap_or(0.0),
        0.0
    );

    // The target goes away: a retry is counted, the endpoint is down.
    target.stop().await;
    let (status, _) = daemon.hook("LIVE", "orders", "web", json!(order(8))).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    eventually(10, "the endpoint is down in /metrics", || async {
        let m = scrape(&daemon).await;
        value(
            &m,
            "sluice_endpoint_up",
            &[("site", "LIVE"), ("endpoint", "crm")],
        ) == Some(0.0)
            && value(&m, "sluice_integration_held", &hold("endpoint-offline")) == Some(1.0)
            && value(&m, "sluice_transactions_retried_total", &orders).is_some_and(|n| n >= 1.0)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_need_a_token_once_tokens_exist() {
    let dir = tempfile::tempdir().unwrap();
    let target = Target::start().await;
    let daemon = Daemon::start(dir.path(), &webhook_site(&target, 1)).await;
    let token = daemon.create_token("viewer", "prometheus");
    let r = reqwest::get(daemon.url("/metrics")).await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = reqwest::Client::new()
        .get(daemon.url("/metrics"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r
        .text()
        .await
        .unwrap()
        .contains("sluice_integration_queue_depth"));
}
