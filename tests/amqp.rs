//! `kind = "amqp"` against the real RabbitMQ (`SLUICE_TEST_AMQP_URL`,
//! default amqp://127.0.0.1:5672/%2f, guest/guest): each test uses queues
//! of its own, deleted after it. The daemon reaches the broker through a
//! TCP proxy the test can shut.

mod common;

use std::time::Duration;

use common::proxy::Proxy;
use common::*;
use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicRecoverOptions,
    QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use serde_json::{json, Value};

fn amqp_url() -> String {
    std::env::var("SLUICE_TEST_AMQP_URL").unwrap_or_else(|_| "amqp://127.0.0.1:5672/%2f".into())
}

/// The url of the broker through `proxy`.
fn via(proxy: &Proxy) -> String {
    let mut url = reqwest::Url::parse(&amqp_url()).unwrap();
    url.set_port(Some(proxy.port)).unwrap();
    url.to_string()
}

/// The test's own client of the broker, and the queues it made (deleted
/// when it is dropped).
struct Rabbit {
    _connection: Connection,
    channel: Channel,
    queues: Vec<String>,
}

impl Rabbit {
    async fn new() -> Rabbit {
        let connection = Connection::connect(&amqp_url(), ConnectionProperties::default())
            .await
            .expect("RabbitMQ on SLUICE_TEST_AMQP_URL");
        let channel = connection.create_channel().await.unwrap();
        Rabbit {
            _connection: connection,
            channel,
            queues: Vec::new(),
        }
    }

    /// A durable queue of a unique name.
    async fn queue(&mut self, prefix: &str) -> String {
        let name = pg::unique(prefix);
        let durable = QueueDeclareOptions {
            durable: true,
            ..Default::default()
        };
        self.channel
            .queue_declare(name.as_str().into(), durable, FieldTable::default())
            .await
            .unwrap();
        self.queues.push(name.clone());
        name
    }

    /// Publishes records `from..=to` ({"id": i}) to `queue`, confirmed.
    async fn publish(&self, queue: &str, from: i64, to: i64) {
        self.channel.confirm_select(Default::default()).await.ok();
        for i in from..=to {
            let body = json!({ "id": i, "n": i }).to_string();
            self.channel
                .basic_publish(
                    "".into(),
                    queue.into(),
                    BasicPublishOptions::default(),
                    body.as_bytes(),
                    BasicProperties::default().with_delivery_mode(2),
                )
                .await
                .unwrap()
                .await
                .unwrap();
        }
    }

    /// The ids of the first `n` messages of `queue`, in order (waiting up
    /// to `secs` for them); acknowledged.
    async fn take(&self, queue: &str, n: usize, secs: u64) -> Vec<i64> {
        let channel = self.channel.clone();
        let mut consumer = channel
            .basic_consume(
                queue.into(),
                pg::unique("t").as_str().into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .unwrap();
        let mut ids = Vec::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
        while ids.len() < n {
            let next = tokio::time::timeout_at(deadline, consumer.next()).await;
            let Ok(Some(Ok(delivery))) = next else {
                break;
            };
            let v: Value = serde_json::from_slice(&delivery.data).unwrap();
            ids.push(v["id"].as_i64().unwrap());
            delivery.ack(BasicAckOptions::default()).await.unwrap();
        }
        channel
            .basic_cancel(consumer.tag(), Default::default())
            .await
            .ok();
        // What came past the `n`th stays unacknowledged on the channel
        // (a cancel does not give it back): back to the queue, in place.
        channel
            .basic_recover(BasicRecoverOptions { requeue: true })
            .await
            .ok();
        ids
    }

    /// How many messages `queue` holds.
    async fn count(&self, queue: &str) -> u32 {
        self.state(queue).await.message_count()
    }

    /// How many consumers read `queue`.
    async fn consumers(&self, queue: &str) -> u32 {
        self.state(queue).await.consumer_count()
    }

    async fn state(&self, queue: &str) -> lapin::Queue {
        let passive = QueueDeclareOptions {
            passive: true,
            ..Default::default()
        };
        self.channel
            .queue_declare(queue.into(), passive, FieldTable::default())
            .await
            .unwrap()
    }
}

impl Drop for Rabbit {
    fn drop(&mut self) {
        let queues = std::mem::take(&mut self.queues);
        pg::block_on_aside(async move {
            let Ok(c) = Connection::connect(&amqp_url(), ConnectionProperties::default()).await
            else {
                return;
            };
            let Ok(channel) = c.create_channel().await else {
                return;
            };
            for q in queues {
                channel
                    .queue_delete(q.as_str().into(), QueueDeleteOptions::default())
                    .await
                    .ok();
            }
        });
    }
}

/// Site `S`: integration `sync`, flow `orders` from queue `input` (through
/// `source_url`) to the default exchange with routing key `output` (through
/// `target_url`), keyed by `id`.
fn site(source_url: &str, input: &str, target_url: &str, output: &str, extra: &str) -> String {
    format!(
        r#"
[sites.S.endpoints.input]
kind = "amqp"
url = "{source_url}"
username = "guest"
password_env = "TEST_RABBIT_PASSWORD"
queue = "{input}"
prefetch = 50

[sites.S.endpoints.output]
kind = "amqp"
url = "{target_url}"
username = "guest"
password_env = "TEST_RABBIT_PASSWORD"
exchange = ""
routing_key = "{output}"
batch = 20

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

fn options() -> Options {
    Options {
        env: vec![("TEST_RABBIT_PASSWORD".into(), "guest".into())],
        ..Options::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_flow_from_a_queue_to_an_exchange_in_order() {
    let mut rabbit = Rabbit::new().await;
    let (input, output) = (rabbit.queue("in").await, rabbit.queue("out").await);
    rabbit.publish(&input, 1, 150).await;
    let dir = tempfile::tempdir().unwrap();
    let toml = site(&amqp_url(), &input, &amqp_url(), &output, "");
    let daemon = Daemon::start_opts(dir.path(), &toml, options()).await;
    // Consumed while the site runs: no run is asked for.
    let ids = rabbit.take(&output, 150, 30).await;
    assert_eq!(ids, (1..=150).collect::<Vec<_>>(), "in order, none lost");
    eventually(10, "everything acknowledged to the broker", || async {
        rabbit.count(&input).await == 0
    })
    .await;
    // More while it runs.
    rabbit.publish(&input, 151, 160).await;
    assert_eq!(
        rabbit.take(&output, 10, 30).await,
        (151..=160).collect::<Vec<_>>()
    );
    let (_, flow) = daemon.get("/api/v1/sites/S/flows/orders").await;
    assert_ne!(flow["status"], "Running", "{flow}");
    // There is nothing to run.
    let (status, _) = daemon
        .post("/api/v1/sites/S/flows/orders/run", json!({"mode": "all"}))
        .await;
    assert_eq!(status.as_u16(), 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_outage_holds_the_integration_and_it_drains_in_order_when_back() {
    let mut rabbit = Rabbit::new().await;
    let (input, output) = (rabbit.queue("in").await, rabbit.queue("out").await);
    let target = Proxy::start(&amqp_url()).await;
    let dir = tempfile::tempdir().unwrap();
    let toml = site(&amqp_url(), &input, &via(&target), &output, "");
    let daemon = Daemon::start_opts(dir.path(), &toml, options()).await;
    rabbit.publish(&input, 1, 30).await;
    assert_eq!(
        rabbit.take(&output, 30, 30).await,
        (1..=30).collect::<Vec<_>>()
    );

    target.stop().await;
    rabbit.publish(&input, 31, 100).await;
    eventually(20, "the endpoint-offline hold", || async {
        hold_kinds(&daemon.integration("S", "sync").await) == ["endpoint-offline"]
    })
    .await;
    eventually(20, "everything consumed and queued", || async {
        daemon.integration("S", "sync").await["queued"].as_i64() >= Some(1)
            && rabbit.count(&input).await == 0
    })
    .await;
    assert_eq!(rabbit.count(&output).await, 0, "nothing passes");

    target.restart().await;
    // A batch cut off by the outage may be published again (at least once,
    // with its message_id); in order, and nothing lost.
    let mut ids = rabbit.take(&output, 70, 30).await;
    while first_seen(ids.clone()).len() < 70 {
        let more = rabbit.take(&output, 1, 10).await;
        assert!(!more.is_empty(), "only {:?}", first_seen(ids));
        ids.extend(more);
    }
    assert_eq!(
        first_seen(ids),
        (31..=100).collect::<Vec<_>>(),
        "in order, none lost"
    );
    eventually(20, "the hold lifted", || async {
        hold_kinds(&daemon.integration("S", "sync").await).is_empty()
            && daemon.integration("S", "sync").await["queued"] == 0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_outage_is_ridden_out_and_consumption_goes_on() {
    let mut rabbit = Rabbit::new().await;
    let (input, output) = (rabbit.queue("in").await, rabbit.queue("out").await);
    let source = Proxy::start(&amqp_url()).await;
    let dir = tempfile::tempdir().unwrap();
    let toml = site(&via(&source), &input, &amqp_url(), &output, "");
    let daemon = Daemon::start_opts(dir.path(), &toml, options()).await;
    rabbit.publish(&input, 1, 10).await;
    assert_eq!(
        rabbit.take(&output, 10, 30).await,
        (1..=10).collect::<Vec<_>>()
    );
    source.stop().await;
    eventually(20, "the source endpoint offline", || async {
        daemon.get("/api/v1/sites/S/endpoints/input").await.1["state"] == "offline"
    })
    .await;
    rabbit.publish(&input, 11, 40).await;
    source.restart().await;
    assert_eq!(
        rabbit.take(&output, 30, 30).await,
        (11..=40).collect::<Vec<_>>()
    );
    eventually(10, "the source endpoint online", || async {
        daemon.get("/api/v1/sites/S/endpoints/input").await.1["state"] == "online"
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_queued_but_not_acknowledged_at_a_kill_is_queued_once() {
    let mut rabbit = Rabbit::new().await;
    let (input, output) = (rabbit.queue("in").await, rabbit.queue("out").await);
    let dir = tempfile::tempdir().unwrap();
    // Paused, so the queue keeps what was taken.
    let toml = site(&amqp_url(), &input, &amqp_url(), &output, "");
    let mut stalled = options();
    stalled
        .env
        .push(("SLUICE_TEST_STALL_BEFORE_ACK".into(), "1".into()));
    let mut daemon = Daemon::start_opts(dir.path(), &toml, stalled).await;
    let (status, _) = daemon
        .post("/api/v1/sites/S/integrations/sync/pause", json!({}))
        .await;
    assert!(status.is_success());
    rabbit.publish(&input, 1, 20).await;
    daemon
        .await_log("S", "Stalled before the acknowledgement", 20)
        .await;
    let queued = daemon.queued_keys("S", "sync").await;
    assert!(!queued.is_empty());
    // SIGKILL between queueing and acknowledging: the broker keeps them.
    daemon.kill();
    daemon
        .options_mut()
        .env
        .retain(|(k, _)| k != "SLUICE_TEST_STALL_BEFORE_ACK");
    daemon.restart().await;
    // (The queue's count leaves out what it has handed to the consumer,
    // acknowledged or not: the redelivery is waited for in the log.)
    eventually(20, "the redelivered messages recognised", || async {
        daemon.log("S").await.contains("were queued already")
    })
    .await;
    eventually(20, "every message taken", || async {
        rabbit.count(&input).await == 0 && daemon.queued_keys("S", "sync").await.len() >= 20
    })
    .await;
    let keys = daemon.queued_keys("S", "sync").await;
    let expected: Vec<String> = (1..=20).map(|i| i.to_string()).collect();
    assert_eq!(keys, expected, "each message once, in order");
    let (status, _) = daemon
        .post("/api/v1/sites/S/integrations/sync/resume", json!({}))
        .await;
    assert!(status.is_success());
    assert_eq!(
        rabbit.take(&output, 20, 30).await,
        (1..=20).collect::<Vec<_>>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operators_pause_stays_while_the_broker_flaps() {
    let mut rabbit = Rabbit::new().await;
    let (input, output) = (rabbit.queue("in").await, rabbit.queue("out").await);
    let target = Proxy::start(&amqp_url()).await;
    let dir = tempfile::tempdir().unwrap();
    let toml = site(&amqp_url(), &input, &via(&target), &output, "");
    let daemon = Daemon::start_opts(dir.path(), &toml, options()).await;
    let (status, _) = daemon
        .post(
            "/api/v1/sites/S/integrations/sync/pause",
            json!({"reason": "month end"}),
        )
        .await;
    assert!(status.is_success());
    rabbit.publish(&input, 1, 10).await;
    eventually(20, "the records queued while paused", || async {
        daemon.integration("S", "sync").await["queued"] == 10
    })
    .await;
    flap_while_paused(&daemon, &target, "output").await;
    assert_eq!(rabbit.count(&output).await, 0, "nothing sent while paused");
    let (status, _) = daemon
        .post("/api/v1/sites/S/integrations/sync/resume", json!({}))
        .await;
    assert!(status.is_success());
    assert_eq!(
        rabbit.take(&output, 10, 30).await,
        (1..=10).collect::<Vec<_>>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unroutable_publish_blocks_the_queue_under_on_error_block() {
    let mut rabbit = Rabbit::new().await;
    let input = rabbit.queue("in").await;
    let dir = tempfile::tempdir().unwrap();
    // Nothing is bound to this routing key: `mandatory` makes the broker
    // return the message.
    let toml = site(
        &amqp_url(),
        &input,
        &amqp_url(),
        &pg::unique("nowhere"),
        "on_error = \"block\"",
    );
    let daemon = Daemon::start_opts(dir.path(), &toml, options()).await;
    rabbit.publish(&input, 1, 3).await;
    eventually(20, "blocked behind the first record", || async {
        daemon.integration("S", "sync").await["blocked"]["seq"] == 1
    })
    .await;
    let integration = daemon.integration("S", "sync").await;
    let why = integration["blocked"]["error"].as_str().unwrap_or_default();
    assert!(why.contains("NO_ROUTE"), "{integration}");
    assert_eq!(integration["queued"], 2, "{integration}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_login_holds_the_integration_until_reauthorized() {
    let mut rabbit = Rabbit::new().await;
    let (input, output) = (rabbit.queue("in").await, rabbit.queue("out").await);
    let dir = tempfile::tempdir().unwrap();
    let toml = site(&amqp_url(), &input, &amqp_url(), &output, "").replace(
        "TEST_RABBIT_PASSWORD\"\nexchange",
        "WRONG_RABBIT_PASSWORD\"\nexchange",
    );
    let mut options = options();
    options
        .env
        .push(("WRONG_RABBIT_PASSWORD".into(), "not-guest".into()));
    let daemon = Daemon::start_opts(dir.path(), &toml, options).await;
    rabbit.publish(&input, 1, 5).await;
    eventually(20, "the unauthorized hold", || async {
        hold_kinds(&daemon.integration("S", "sync").await) == ["unauthorized"]
    })
    .await;
    let (status, answer) = daemon
        .post(
            "/api/v1/sites/S/endpoints/output/reauthorize",
            json!({"username": "guest", "password": "still-wrong"}),
        )
        .await;
    assert_eq!(status.as_u16(), 409, "{answer}");
    assert!(!answer.to_string().contains("still-wrong"), "{answer}");
    let (status, answer) = daemon
        .post(
            "/api/v1/sites/S/endpoints/output/reauthorize",
            json!({"username": "guest", "password": "guest"}),
        )
        .await;
    assert_eq!(status.as_u16(), 200, "{answer}");
    assert_eq!(
        rabbit.take(&output, 5, 30).await,
        (1..=5).collect::<Vec<_>>()
    );
    assert!(hold_kinds(&daemon.integration("S", "sync").await).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_exchange_is_a_failure_for_good_in_the_brokers_words() {
    let mut rabbit = Rabbit::new().await;
    let input = rabbit.queue("in").await;
    let dir = tempfile::tempdir().unwrap();
    let missing = pg::unique("no_exchange");
    let toml = site(&amqp_url(), &input, &amqp_url(), "x", "on_error = \"skip\"")
        .replace("exchange = \"\"", &format!("exchange = \"{missing}\""));
    let daemon = Daemon::start_opts(dir.path(), &toml, options()).await;
    rabbit.publish(&input, 1, 2).await;
    eventually(20, "both in error", || async {
        let (_, errors) = daemon
            .get("/api/v1/sites/S/integrations/sync/transactions?state=error")
            .await;
        errors.as_array().is_some_and(|e| e.len() == 2)
    })
    .await;
    let (_, errors) = daemon
        .get("/api/v1/sites/S/integrations/sync/transactions?state=error")
        .await;
    let why = errors[0]["last_error"].as_str().unwrap_or_default();
    assert!(why.contains("NOT_FOUND") && why.contains(&missing), "{why}");
    // The endpoint itself is reachable: not held.
    assert!(hold_kinds(&daemon.integration("S", "sync").await).is_empty());
}

/// A cluster of two nodes on PostgreSQL: only the node that sends the
/// integration consumes its queue; when it is killed, the other takes the
/// lease, sends what was queued and consumes what follows. Nothing is lost,
/// the first deliveries keep the queue's order, and what the dead node
/// received but had not acknowledged, if anything, comes again and is not
/// queued twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_cluster_only_the_sending_node_consumes_and_the_next_takes_over_at_a_kill() {
    let mut rabbit = Rabbit::new().await;
    let (input, output) = (rabbit.queue("in").await, rabbit.queue("out").await);
    let dir = tempfile::tempdir().unwrap();
    let toml = site(&amqp_url(), &input, &amqp_url(), &output, "");
    let lease = Duration::from_secs(2);
    let mut nodes = common::cluster(dir.path(), &toml, 2, lease, options()).await;
    let owner = || async {
        nodes[1].integration("S", "sync").await["owner"]["node"]
            .as_str()
            .map(str::to_string)
    };
    eventually(20, "one node sends the integration", || async {
        owner().await.is_some()
    })
    .await;
    let first = owner().await.unwrap();
    eventually(10, "its consumer reads the queue", || async {
        rabbit.consumers(&input).await == 1
    })
    .await;

    rabbit.publish(&input, 1, 100).await;
    let ids = rabbit.take(&output, 100, 30).await;
    assert_eq!(ids, (1..=100).collect::<Vec<_>>(), "in order, none lost");
    assert_eq!(
        rabbit.consumers(&input).await,
        1,
        "one consumer in the cluster"
    );

    // The sending node dies while it consumes; the other takes the lease,
    // sends what was queued and consumes what follows.
    rabbit.publish(&input, 101, 200).await;
    let victim = if first == "n1" { 0 } else { 1 };
    nodes[victim].kill();
    let survivor = &nodes[1 - victim];
    eventually(20, "the other node sends and consumes", || async {
        let now = survivor.integration("S", "sync").await["owner"]["node"].clone();
        now.as_str().is_some_and(|n| n != first) && rabbit.consumers(&input).await == 1
    })
    .await;
    rabbit.publish(&input, 201, 250).await;
    // Repeats only of what the dead node had in flight.
    let mut seen = std::collections::HashSet::new();
    let mut firsts: Vec<i64> = ids.clone();
    seen.extend(ids.iter().copied());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while firsts.len() < 250 && tokio::time::Instant::now() < deadline {
        for id in rabbit.take(&output, 250 - firsts.len(), 5).await {
            if seen.insert(id) {
                firsts.push(id);
            }
        }
    }
    assert_eq!(firsts, (1..=250).collect::<Vec<_>>(), "in order, none lost");
    let keys = survivor.queued_keys("S", "sync").await;
    assert_eq!(keys.len(), 250, "each message queued once: {keys:?}");
    eventually(10, "everything acknowledged to the broker", || async {
        rabbit.count(&input).await == 0
    })
    .await;
}
