//! `kind = "nats"` against the real NATS server with JetStream
//! (`SLUICE_TEST_NATS_URL`, default nats://127.0.0.1:4222): each test
//! makes streams of its own and deletes them. The daemon reaches the server
//! through a TCP proxy the test can shut.

mod common;

use std::time::Duration;

use async_nats::jetstream::{self, consumer::pull, stream};
use common::proxy::Proxy;
use common::*;
use futures_util::StreamExt;
use serde_json::{json, Value};

fn nats_url() -> String {
    std::env::var("SLUICE_TEST_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into())
}

fn via(proxy: &Proxy) -> String {
    format!("nats://127.0.0.1:{}", proxy.port)
}

/// The test's client, and the streams it made (deleted when dropped).
struct Nats {
    js: jetstream::Context,
    streams: Vec<String>,
}

impl Nats {
    async fn new() -> Nats {
        let client = async_nats::connect(nats_url())
            .await
            .expect("NATS on SLUICE_TEST_NATS_URL");
        Nats {
            js: jetstream::new(client),
            streams: Vec::new(),
        }
    }

    /// A stream of a unique name taking the subjects `NAME.>`.
    async fn stream(&mut self, prefix: &str) -> String {
        let name = pg::unique(prefix).to_uppercase();
        self.js
            .create_stream(stream::Config {
                name: name.clone(),
                subjects: vec![format!("{name}.>")],
                ..Default::default()
            })
            .await
            .unwrap();
        self.streams.push(name.clone());
        name
    }

    /// The durable consumer `sluice` on `stream`, made beforehand with an
    /// ack wait of `ack_wait`, so the server sends again soon what was not
    /// acknowledged (sluice uses an existing consumer as it is).
    async fn durable(&self, stream: &str, ack_wait: Duration) -> jetstream::consumer::PullConsumer {
        self.js
            .get_stream(stream)
            .await
            .unwrap()
            .create_consumer(pull::Config {
                durable_name: Some("sluice".into()),
                ack_policy: jetstream::consumer::AckPolicy::Explicit,
                ack_wait,
                ..Default::default()
            })
            .await
            .unwrap()
    }

    /// Publishes records `from..=to` ({"id": i}) to `STREAM.orders`.
    async fn publish(&self, stream: &str, from: i64, to: i64) {
        for i in from..=to {
            let body = json!({ "id": i, "n": i }).to_string();
            self.js
                .publish(format!("{stream}.orders"), body.into())
                .await
                .unwrap()
                .await
                .unwrap();
        }
    }

    /// How many messages `stream` holds.
    async fn count(&self, stream: &str) -> u64 {
        let mut s = self.js.get_stream(stream).await.unwrap();
        s.info().await.unwrap().state.messages
    }

    /// The ids of `stream`'s messages, in stream order (waiting up to
    /// `secs` for `n` of them).
    async fn ids(&self, stream: &str, n: usize, secs: u64) -> Vec<i64> {
        eventually(secs, &format!("{n} messages in {stream}"), || async {
            self.count(stream).await as usize >= n
        })
        .await;
        let s = self.js.get_stream(stream).await.unwrap();
        let consumer = s.create_consumer(pull::Config::default()).await.unwrap();
        let mut messages = consumer
            .fetch()
            .max_messages(n.max(1))
            .expires(Duration::from_secs(1))
            .messages()
            .await
            .unwrap();
        let mut ids = Vec::new();
        while let Some(Ok(m)) = messages.next().await {
            let v: Value = serde_json::from_slice(&m.payload).unwrap();
            ids.push(v["id"].as_i64().unwrap());
        }
        ids
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        let streams = std::mem::take(&mut self.streams);
        pg::block_on_aside(async move {
            let Ok(client) = async_nats::connect(nats_url()).await else {
                return;
            };
            let js = jetstream::new(client);
            for s in streams {
                js.delete_stream(&s).await.ok();
            }
        });
    }
}

/// Site `S`: flow `orders` from stream `input` (through `source_url`) to
/// subject `OUTPUT.orders.{region}` (through `target_url`), keyed by `id`.
fn site(source_url: &str, input: &str, target_url: &str, output: &str, extra: &str) -> String {
    format!(
        r#"
[sites.S.endpoints.input]
kind = "nats"
url = "{source_url}"
stream = "{input}"
consumer = "sluice"

[sites.S.endpoints.output]
kind = "nats"
url = "{target_url}"
subject = "{output}.orders.{{region}}"
batch = 20
timeout = "2s"

[sites.S.integrations.sync]
{extra}

[[sites.S.integrations.sync.flows]]
name = "orders"
source = "input"
target = "output"
key = "id"
map = {{ id = "id", n = "n", region = {{ default = "eu" }} }}
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_flow_from_a_stream_to_a_subject_in_order() {
    let mut nats = Nats::new().await;
    let (input, output) = (nats.stream("in").await, nats.stream("out").await);
    // Published before sluice ever ran: a new durable consumer starts at
    // the beginning of the stream.
    nats.publish(&input, 1, 100).await;
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(
        dir.path(),
        &site(&nats_url(), &input, &nats_url(), &output, ""),
    )
    .await;
    assert_eq!(
        nats.ids(&output, 100, 30).await,
        (1..=100).collect::<Vec<_>>()
    );
    nats.publish(&input, 101, 110).await;
    assert_eq!(
        nats.ids(&output, 110, 30).await,
        (1..=110).collect::<Vec<_>>(),
        "in order, each once"
    );
    eventually(10, "nothing left to send", || async {
        daemon.integration("S", "sync").await["queued"] == 0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_of_the_server_holds_the_integration_and_it_drains_in_order() {
    let mut nats = Nats::new().await;
    let (input, output) = (nats.stream("in").await, nats.stream("out").await);
    let target = Proxy::start(&nats_url()).await;
    let dir = tempfile::tempdir().unwrap();
    let toml = site(&nats_url(), &input, &via(&target), &output, "");
    let daemon = Daemon::start(dir.path(), &toml).await;
    nats.publish(&input, 1, 20).await;
    assert_eq!(
        nats.ids(&output, 20, 30).await,
        (1..=20).collect::<Vec<_>>()
    );

    target.stop().await;
    nats.publish(&input, 21, 60).await;
    eventually(20, "the endpoint-offline hold", || async {
        hold_kinds(&daemon.integration("S", "sync").await) == ["endpoint-offline"]
    })
    .await;
    eventually(20, "everything queued", || async {
        daemon.integration("S", "sync").await["queued"].as_i64() >= Some(1)
    })
    .await;
    target.restart().await;
    eventually(30, "drained", || async {
        daemon.integration("S", "sync").await["queued"] == 0
    })
    .await;
    // A batch cut off by the outage is sent again with the same
    // Nats-Msg-Id: JetStream stores it once.
    assert_eq!(
        nats.ids(&output, 60, 30).await,
        (1..=60).collect::<Vec<_>>()
    );
    assert!(hold_kinds(&daemon.integration("S", "sync").await).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_queued_but_not_acknowledged_at_a_kill_is_queued_once() {
    let mut nats = Nats::new().await;
    let (input, output) = (nats.stream("in").await, nats.stream("out").await);
    // What the killed daemon did not acknowledge comes again soon.
    nats.durable(&input, Duration::from_secs(2)).await;
    let dir = tempfile::tempdir().unwrap();
    let toml = site(&nats_url(), &input, &nats_url(), &output, "");
    let mut daemon = Daemon::start_opts(
        dir.path(),
        &toml,
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
    nats.publish(&input, 1, 20).await;
    daemon
        .await_log("S", "Stalled before the acknowledgement", 20)
        .await;
    daemon.kill();
    daemon
        .options_mut()
        .env
        .retain(|(k, _)| k != "SLUICE_TEST_STALL_BEFORE_ACK");
    daemon.restart().await;
    eventually_seen(
        30,
        "all 20 queued",
        || async { daemon.queued_keys("S", "sync").await },
        |keys| keys.len() >= 20,
    )
    .await;
    eventually(10, "the redelivery recognised", || async {
        daemon.log("S").await.contains("were queued already")
    })
    .await;
    let expected: Vec<String> = (1..=20).map(|i| i.to_string()).collect();
    assert_eq!(
        daemon.queued_keys("S", "sync").await,
        expected,
        "each message once, in order"
    );
    let (status, _) = daemon
        .post("/api/v1/sites/S/integrations/sync/resume", json!({}))
        .await;
    assert!(status.is_success());
    assert_eq!(
        nats.ids(&output, 20, 30).await,
        (1..=20).collect::<Vec<_>>()
    );
    // Counted sent once the store has it, a moment after the stream did.
    eventually(10, "nothing left queued", || async {
        daemon.integration("S", "sync").await["queued"] == 0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_sent_again_while_the_store_is_slow_is_queued_once() {
    let mut nats = Nats::new().await;
    let (input, output) = (nats.stream("in").await, nats.stream("out").await);
    let consumer = nats.durable(&input, Duration::from_secs(1)).await;
    let dir = tempfile::tempdir().unwrap();
    let toml = site(&nats_url(), &input, &nats_url(), &output, "");
    // A daemon on a PostgreSQL store (a cluster of one): the test can hold
    // its queue still.
    let nodes = cluster(
        dir.path(),
        &toml,
        1,
        Duration::from_secs(5),
        Options::default(),
    )
    .await;
    let daemon = &nodes[0];
    let (status, _) = daemon
        .post("/api/v1/sites/S/integrations/sync/pause", json!({}))
        .await;
    assert!(status.is_success());
    daemon
        .await_log("S", "consumes from endpoint input", 20)
        .await;
    let store = daemon.store_db();
    let mut holder = pg::pg_connect(&store.url).await;
    let held = holder.transaction().await.unwrap();
    held.batch_execute("LOCK TABLE sluice_transactions IN EXCLUSIVE MODE")
        .await
        .unwrap();
    nats.publish(&input, 1, 1).await;
    eventually(20, "message 1 received, its write waiting", || async {
        store
            .count(
                "SELECT 1 FROM pg_locks WHERE NOT granted \
                 AND relation = 'sluice_transactions'::regclass",
            )
            .await
            == 1
    })
    .await;
    // Message 2 waits behind it, unacknowledged past the ack wait: the
    // server sends both again.
    nats.publish(&input, 2, 2).await;
    eventually(20, "both messages sent again", || async {
        let mut consumer = consumer.clone();
        consumer.info().await.unwrap().num_redelivered >= 2
    })
    .await;
    held.commit().await.unwrap();
    eventually(20, "everything acknowledged", || async {
        let mut consumer = consumer.clone();
        let info = consumer.info().await.unwrap();
        info.num_ack_pending == 0 && info.num_pending == 0
    })
    .await;
    assert_eq!(
        daemon.queued_keys("S", "sync").await,
        ["1", "2"],
        "each message once"
    );
    assert!(daemon.log("S").await.contains("were queued already"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operators_pause_stays_while_the_server_flaps() {
    let mut nats = Nats::new().await;
    let (input, output) = (nats.stream("in").await, nats.stream("out").await);
    let target = Proxy::start(&nats_url()).await;
    let dir = tempfile::tempdir().unwrap();
    let toml = site(&nats_url(), &input, &via(&target), &output, "");
    let daemon = Daemon::start(dir.path(), &toml).await;
    let (status, _) = daemon
        .post(
            "/api/v1/sites/S/integrations/sync/pause",
            json!({"reason": "stock take"}),
        )
        .await;
    assert!(status.is_success());
    nats.publish(&input, 1, 10).await;
    eventually(20, "queued while paused", || async {
        daemon.integration("S", "sync").await["queued"] == 10
    })
    .await;
    flap_while_paused(&daemon, &target, "output").await;
    assert_eq!(nats.count(&output).await, 0, "nothing sent while paused");
    let (status, _) = daemon
        .post("/api/v1/sites/S/integrations/sync/resume", json!({}))
        .await;
    assert!(status.is_success());
    assert_eq!(
        first_seen(nats.ids(&output, 10, 30).await),
        (1..=10).collect::<Vec<_>>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subject_no_stream_takes_blocks_the_queue_under_on_error_block() {
    let mut nats = Nats::new().await;
    let input = nats.stream("in").await;
    let dir = tempfile::tempdir().unwrap();
    let nowhere = pg::unique("NOWHERE").to_uppercase();
    let toml = site(
        &nats_url(),
        &input,
        &nats_url(),
        &nowhere,
        "on_error = \"block\"",
    );
    let daemon = Daemon::start(dir.path(), &toml).await;
    nats.publish(&input, 1, 3).await;
    eventually(20, "blocked behind the first record", || async {
        daemon.integration("S", "sync").await["blocked"]["seq"] == 1
    })
    .await;
    let integration = daemon.integration("S", "sync").await;
    let why = integration["blocked"]["error"].as_str().unwrap_or_default();
    assert!(why.contains(&nowhere), "{integration}");
    assert_eq!(integration["queued"], 2, "{integration}");
    assert!(hold_kinds(&integration).is_empty(), "{integration}");
}
