//! `kind = "mqtt"` against the real Mosquitto (`SLUICE_TEST_MQTT_URL`,
//! default mqtt://127.0.0.1:1883): each test uses topics and client ids of
//! its own and removes its sessions. The daemon reaches the broker through
//! a TCP proxy the test can shut.

mod common;

use std::time::Duration;

use common::proxy::Proxy;
use common::*;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde_json::{json, Value};
use tokio::sync::mpsc;

fn mqtt_port() -> u16 {
    let url =
        std::env::var("SLUICE_TEST_MQTT_URL").unwrap_or_else(|_| "mqtt://127.0.0.1:1883".into());
    reqwest::Url::parse(&url).unwrap().port().unwrap_or(1883)
}

fn mqtt_url() -> String {
    format!("mqtt://127.0.0.1:{}", mqtt_port())
}

fn via(proxy: &Proxy) -> String {
    format!("mqtt://127.0.0.1:{}", proxy.port)
}

/// A client of the test's own on the broker: it publishes, and reads what
/// arrives on the topics it subscribed to.
struct Client {
    client: AsyncClient,
    got: mpsc::UnboundedReceiver<Value>,
}

impl Client {
    async fn new(id: &str, subscribe: Option<&str>) -> Client {
        let mut options = MqttOptions::new(id, "127.0.0.1", mqtt_port());
        options.set_clean_session(true);
        let (client, mut events) = AsyncClient::new(options, 1000);
        let (tx, got) = mpsc::unbounded_channel();
        let (ready_tx, mut ready) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            loop {
                match events.poll().await {
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        if let Ok(v) = serde_json::from_slice::<Value>(&p.payload) {
                            tx.send(v).ok();
                        }
                    }
                    Ok(Event::Incoming(Packet::SubAck(_) | Packet::ConnAck(_))) => {
                        ready_tx.send(()).ok();
                    }
                    Ok(_) => {}
                    // The test's own connection, straight to the broker:
                    // lost, the test fails on what it no longer receives.
                    Err(_) => break,
                }
            }
        });
        ready.recv().await;
        if let Some(topic) = subscribe {
            client.subscribe(topic, QoS::AtLeastOnce).await.unwrap();
            ready.recv().await;
        }
        Client { client, got }
    }

    /// Publishes records `from..=to` ({"id": i, "line": …}) to `topic`.
    async fn publish(&self, topic: &str, from: i64, to: i64) {
        for i in from..=to {
            let body = json!({ "id": i, "n": i, "line": format!("l{}", i % 2) }).to_string();
            self.client
                .publish(topic, QoS::AtLeastOnce, false, body)
                .await
                .unwrap();
        }
    }

    /// The ids of the next `n` records that arrive (waiting up to `secs`).
    async fn ids(&mut self, n: usize, secs: u64) -> Vec<i64> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
        let mut ids = Vec::new();
        while ids.len() < n {
            match tokio::time::timeout_at(deadline, self.got.recv()).await {
                Ok(Some(v)) => ids.push(v["id"].as_i64().unwrap()),
                _ => break,
            }
        }
        ids
    }

    /// Nothing more arrives within `ms`.
    async fn quiet(&mut self, ms: u64) -> bool {
        tokio::time::timeout(Duration::from_millis(ms), self.got.recv())
            .await
            .is_err()
    }
}

/// Waits until the daemon's consumer of endpoint `input` subscribed: what
/// is published before that is not in its session yet.
async fn subscribed(daemon: &Daemon) {
    daemon
        .await_log("S", "consumes from endpoint input", 10)
        .await;
}

/// Removes a persistent session: a clean connection under its client id.
async fn forget(client_id: &str) {
    let mut options = MqttOptions::new(client_id, "127.0.0.1", mqtt_port());
    options.set_clean_session(true);
    let (client, mut events) = AsyncClient::new(options, 10);
    for _ in 0..3 {
        if let Ok(Event::Incoming(Packet::ConnAck(_))) = events.poll().await {
            break;
        }
    }
    client.disconnect().await.ok();
    // The disconnect is written by the event loop; its answer is not awaited.
    tokio::time::timeout(Duration::from_millis(200), events.poll())
        .await
        .ok();
}

/// Site `S`: flow `orders` from topic `{base}/in/+` (through `source_url`)
/// to `{base}/out/{line}` (through `target_url`), keyed by `id`.
fn site(source_url: &str, target_url: &str, base: &str, extra: &str) -> String {
    format!(
        r#"
[sites.S.endpoints.input]
kind = "mqtt"
url = "{source_url}"
topic = "{base}/in/+"
client_id = "{base}-sluice"

[sites.S.endpoints.output]
kind = "mqtt"
url = "{target_url}"
topic = "{base}/out/{{line}}"
client_id = "{base}-sluice"
batch = 20
timeout = "2s"

[sites.S.integrations.sync]
{extra}

[[sites.S.integrations.sync.flows]]
name = "orders"
source = "input"
target = "output"
key = "id"
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readings_flow_from_a_topic_to_a_topic_in_order() {
    let base = pg::unique("mq");
    let mut reader = Client::new(&format!("{base}-r"), Some(&format!("{base}/out/#"))).await;
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(dir.path(), &site(&mqtt_url(), &mqtt_url(), &base, "")).await;
    subscribed(&daemon).await;
    let writer = Client::new(&format!("{base}-w"), None).await;
    writer.publish(&format!("{base}/in/a"), 1, 100).await;
    assert_eq!(reader.ids(100, 30).await, (1..=100).collect::<Vec<_>>());
    eventually(10, "nothing left to send", || async {
        daemon.integration("S", "sync").await["queued"] == 0
    })
    .await;
    drop(daemon);
    forget(&format!("{base}-sluice")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_outage_holds_the_integration_and_it_drains_in_order() {
    let base = pg::unique("mq");
    let mut reader = Client::new(&format!("{base}-r"), Some(&format!("{base}/out/#"))).await;
    let target = Proxy::start(&mqtt_url()).await;
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(dir.path(), &site(&mqtt_url(), &via(&target), &base, "")).await;
    subscribed(&daemon).await;
    let writer = Client::new(&format!("{base}-w"), None).await;
    writer.publish(&format!("{base}/in/a"), 1, 20).await;
    assert_eq!(reader.ids(20, 30).await, (1..=20).collect::<Vec<_>>());

    target.stop().await;
    writer.publish(&format!("{base}/in/a"), 21, 60).await;
    eventually(20, "the endpoint-offline hold", || async {
        hold_kinds(&daemon.integration("S", "sync").await) == ["endpoint-offline"]
    })
    .await;
    target.restart().await;
    // A batch cut off by the outage (its PUBACKs lost with the
    // connection) is published again in full, MQTT 3.1.1 carrying no
    // idempotency key: at least once, in order.
    let mut ids = Vec::new();
    while first_seen(ids.clone()).iter().filter(|&&i| i > 20).count() < 40 {
        let next = reader.ids(1, 10).await;
        assert!(!next.is_empty(), "only {:?}", first_seen(ids));
        ids.extend(next);
    }
    let new: Vec<i64> = first_seen(ids.clone())
        .into_iter()
        .filter(|&i| i > 20)
        .collect();
    assert_eq!(
        new,
        (21..=60).collect::<Vec<_>>(),
        "in order, none lost: {ids:?}"
    );
    eventually(20, "drained, not held", || async {
        let i = daemon.integration("S", "sync").await;
        i["queued"] == 0 && hold_kinds(&i).is_empty()
    })
    .await;
    drop(daemon);
    forget(&format!("{base}-sluice")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_queued_but_not_acknowledged_at_a_kill_is_queued_once() {
    let base = pg::unique("mq");
    let dir = tempfile::tempdir().unwrap();
    let mut daemon = Daemon::start_opts(
        dir.path(),
        &site(&mqtt_url(), &mqtt_url(), &base, ""),
        Options {
            env: vec![("SLUICE_TEST_STALL_BEFORE_ACK".into(), "1".into())],
            ..Options::default()
        },
    )
    .await;
    let (status, _) = daemon
        .post("/api/v1/sites/S/integrations/sync/pause", json!({}))
        .await;
    assert!(status.is_success());
    subscribed(&daemon).await;
    let writer = Client::new(&format!("{base}-w"), None).await;
    writer.publish(&format!("{base}/in/a"), 1, 20).await;
    daemon
        .await_log("S", "Stalled before the acknowledgement", 20)
        .await;
    daemon.kill();
    daemon
        .options_mut()
        .env
        .retain(|(k, _)| k != "SLUICE_TEST_STALL_BEFORE_ACK");
    daemon.restart().await;
    eventually(30, "all 20 queued", || async {
        daemon.integration("S", "sync").await["queued"] == 20
    })
    .await;
    eventually(10, "the redelivery recognised", || async {
        daemon.log("S").await.contains("were queued already")
    })
    .await;
    // The redelivered ones were handled (and said so): each is queued once.
    assert_eq!(daemon.integration("S", "sync").await["queued"], 20);
    drop(daemon);
    forget(&format!("{base}-sluice")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operators_pause_stays_while_the_broker_flaps() {
    let base = pg::unique("mq");
    let mut reader = Client::new(&format!("{base}-r"), Some(&format!("{base}/out/#"))).await;
    let target = Proxy::start(&mqtt_url()).await;
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(dir.path(), &site(&mqtt_url(), &via(&target), &base, "")).await;
    let (status, _) = daemon
        .post(
            "/api/v1/sites/S/integrations/sync/pause",
            json!({"reason": "line change"}),
        )
        .await;
    assert!(status.is_success());
    subscribed(&daemon).await;
    let writer = Client::new(&format!("{base}-w"), None).await;
    writer.publish(&format!("{base}/in/a"), 1, 10).await;
    eventually(20, "queued while paused", || async {
        daemon.integration("S", "sync").await["queued"] == 10
    })
    .await;
    flap_while_paused(&daemon, &target, "output").await;
    assert!(reader.quiet(300).await, "nothing sent while paused");
    let (status, _) = daemon
        .post("/api/v1/sites/S/integrations/sync/resume", json!({}))
        .await;
    assert!(status.is_success());
    assert_eq!(reader.ids(10, 30).await, (1..=10).collect::<Vec<_>>());
    drop(daemon);
    forget(&format!("{base}-sluice")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_without_its_topic_field_blocks_the_queue_under_on_error_block() {
    // MQTT 3.1.1 has no refusal of a publish (a broker acknowledges or
    // disconnects): what a target refuses for good is a record its topic
    // cannot be made for.
    let base = pg::unique("mq");
    let dir = tempfile::tempdir().unwrap();
    let toml = site(&mqtt_url(), &mqtt_url(), &base, "on_error = \"block\"")
        .replace("{line}", "{plant.line}");
    let daemon = Daemon::start(dir.path(), &toml).await;
    subscribed(&daemon).await;
    let writer = Client::new(&format!("{base}-w"), None).await;
    writer.publish(&format!("{base}/in/a"), 1, 3).await;
    eventually(20, "blocked behind the first record", || async {
        daemon.integration("S", "sync").await["blocked"]["seq"] == 1
    })
    .await;
    let integration = daemon.integration("S", "sync").await;
    let why = integration["blocked"]["error"].as_str().unwrap_or_default();
    assert!(why.contains("'plant.line'"), "{integration}");
    assert_eq!(integration["queued"], 2, "{integration}");
    drop(daemon);
    forget(&format!("{base}-sluice")).await;
}
