//! The brokers' benchmark: the real daemon against RabbitMQ, NATS JetStream
//! and Mosquitto on 127.0.0.1, each against the broker's own client doing
//! the same in the same run (the physical limit), as ratios.
//!
//! ```sh
//! cargo bench --bench brokers                          # N = 100,000
//! SLUICE_BENCH_N=20000 cargo bench --bench brokers     # what CI runs
//! SLUICE_BENCH_ONLY=mqtt cargo bench --bench brokers   # one kind: amqp, nats or mqtt
//! ```
//!
//! Per kind:
//! - **target**: N records posted to a webhook while the integration is
//!   paused, then drained to the broker (`batch = 100`, every message
//!   confirmed) — against the client publishing the same records 100 at a
//!   time, each hundred's confirmations awaited before the next. MQTT runs
//!   on a Mosquitto of the bench's own (`max_queued_messages 0`: the
//!   shared one drops what a reader behind has past 1000) and both sides
//!   are timed to their last PUBACK (sluice: its queue empty); a reader
//!   subscribed to each topic (the broker forwards in both) must then
//!   count every message once.
//! - **source**: N messages waiting in the queue or stream, consumed by
//!   sluice (queued durably, then acknowledged) into a `file` target on
//!   local disk — against the client consuming and acknowledging them.
//!
//! MQTT's source cannot have N messages waiting: Mosquitto keeps at most
//! `max_queued_messages` (1000 by default) for a session and drops the rest.
//! Both sides are subscribed (a persistent session, QoS 1) before the first
//! publish, and the publisher keeps at most 500 messages ahead of what the
//! side measured counted (sluice: the lines of its file; the client: the
//! messages it received), from the first publish to the Nth counted.
//!
//! It reports; it fails only on a wrong count.

#[path = "../tests/common/mod.rs"]
mod common;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer::pull, stream};
use common::Daemon;
use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde_json::Value;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

const BATCH: usize = 100;

fn n() -> usize {
    std::env::var("SLUICE_BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000)
}

fn payload(i: usize) -> String {
    format!(
        "{{\"id\":\"o{i:07}\",\"n\":{i},\"amount\":{}.5,\"sku\":\"ABC-123\"}}",
        i % 1000
    )
}

fn rate(n: usize, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64()
}

fn amqp_url() -> String {
    std::env::var("SLUICE_TEST_AMQP_URL").unwrap_or_else(|_| "amqp://127.0.0.1:5672/%2f".into())
}

fn nats_url() -> String {
    std::env::var("SLUICE_TEST_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into())
}

fn unique(prefix: &str) -> String {
    format!(
        "{prefix}_{}_{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos()
    )
}

/// A site whose flow `f` goes from `source` (an endpoint body) to `target`.
fn site(source: &str, target: &str) -> String {
    format!(
        "[sites.S.endpoints.src]\n{source}\n\n[sites.S.endpoints.dst]\n{target}\n\n\
         [sites.S.integrations.sync]\n\n[[sites.S.integrations.sync.flows]]\n\
         name = \"f\"\nsource = \"src\"\ntarget = \"dst\"\nkey = \"id\"\n"
    )
}

/// Until when a drain is timed.
#[derive(Clone, Copy, PartialEq)]
enum Until {
    /// N records counted where they arrive (a queue, a stream).
    Arrived,
    /// The integration's queue empty: every record acknowledged by the
    /// broker (what the client is timed to as well). Where they arrive
    /// must count N after it, untimed.
    Acknowledged,
}

/// Posts N records to the webhook while paused, then times the drain.
async fn drain(dir: &Path, target: &str, arrived: impl AsyncCount, until: Until) -> Duration {
    let daemon = Daemon::start(dir, &site("kind = \"webhook\"", target)).await;
    let (status, _) = daemon
        .post(
            "/api/v1/sites/S/integrations/sync/pause",
            serde_json::json!({}),
        )
        .await;
    assert!(status.is_success());
    let n = n();
    for chunk in (0..n).collect::<Vec<_>>().chunks(1000) {
        let body: Vec<Value> = chunk
            .iter()
            .map(|&i| serde_json::from_str(&payload(i)).unwrap())
            .collect();
        let (status, _) = daemon.hook("S", "sync", "f", Value::Array(body)).await;
        assert_eq!(status.as_u16(), 202);
    }
    let started = Instant::now();
    let (status, _) = daemon
        .post(
            "/api/v1/sites/S/integrations/sync/resume",
            serde_json::json!({}),
        )
        .await;
    assert!(status.is_success());
    let mut took = None;
    tokio::time::timeout(Duration::from_secs(600), async {
        if until == Until::Acknowledged {
            loop {
                let sync = daemon.integration("S", "sync").await;
                if sync["queued"] == 0 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            took = Some(started.elapsed());
        }
        arrived.reach(n).await;
    })
    .await
    .expect("drain stuck");
    let took = took.unwrap_or_else(|| started.elapsed());
    assert_eq!(arrived.count().await, n, "each record once");
    took
}

/// The in-process target of the source benches: a file in `dir` (the
/// endpoint's body, and the file).
fn file_target(dir: &Path) -> (String, PathBuf) {
    let out = dir.join("out.jsonl");
    let target = format!(
        "kind = \"file\"\npath = \"{}\"\nbatch = 1000",
        out.display()
    );
    (target, out)
}

/// Times sluice consuming N waiting messages into a file.
async fn consume(dir: &Path, source: &str) -> Duration {
    let (target, out) = file_target(dir);
    let started = Instant::now();
    let _daemon = Daemon::start(dir, &site(source, &target)).await;
    let n = n();
    loop {
        let lines = std::fs::read(&out).map(|b| bytecount(&b)).unwrap_or(0);
        if lines >= n {
            assert_eq!(lines, n, "each message once");
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "consumer stuck"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    started.elapsed()
}

fn bytecount(b: &[u8]) -> usize {
    b.iter().filter(|&&c| c == b'\n').count()
}

trait AsyncCount {
    async fn count(&self) -> usize;

    /// Waits until the count is at least `n`; by default asked for every
    /// 20 ms (a queue or a stream says nothing when it grows).
    async fn reach(&self, n: usize) {
        while self.count().await < n {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

struct RabbitQueue(lapin::Channel, String);

impl AsyncCount for RabbitQueue {
    async fn count(&self) -> usize {
        let passive = QueueDeclareOptions {
            passive: true,
            ..Default::default()
        };
        self.0
            .queue_declare(self.1.as_str().into(), passive, FieldTable::default())
            .await
            .unwrap()
            .message_count() as usize
    }
}

struct NatsStream(jetstream::Context, String);

impl AsyncCount for NatsStream {
    async fn count(&self) -> usize {
        let mut s = self.0.get_stream(&self.1).await.unwrap();
        s.info().await.unwrap().state.messages as usize
    }
}

async fn amqp() {
    let n = n();
    let conn = Connection::connect(&amqp_url(), ConnectionProperties::default())
        .await
        .expect("RabbitMQ");
    let channel = conn.create_channel().await.unwrap();
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    let durable = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    let declare = |q: String| {
        let channel = channel.clone();
        async move {
            channel
                .queue_declare(q.as_str().into(), durable, FieldTable::default())
                .await
                .unwrap();
            q
        }
    };
    let publish = |q: String| {
        let channel = channel.clone();
        async move {
            let started = Instant::now();
            for chunk in (0..n).collect::<Vec<_>>().chunks(BATCH) {
                let mut confirms = Vec::with_capacity(BATCH);
                for &i in chunk {
                    confirms.push(
                        channel
                            .basic_publish(
                                "".into(),
                                q.as_str().into(),
                                BasicPublishOptions {
                                    mandatory: true,
                                    ..Default::default()
                                },
                                payload(i).as_bytes(),
                                BasicProperties::default().with_delivery_mode(2),
                            )
                            .await
                            .unwrap(),
                    );
                }
                for c in confirms {
                    c.await.unwrap();
                }
            }
            started.elapsed()
        }
    };

    // Target.
    let direct_q = declare(unique("bench_direct")).await;
    let direct = publish(direct_q.clone()).await;
    let out_q = declare(unique("bench_out")).await;
    let dir = tempfile::tempdir().unwrap();
    let target = format!(
        "kind = \"amqp\"\nurl = \"{}\"\nexchange = \"\"\nrouting_key = \"{out_q}\"\nbatch = {BATCH}",
        amqp_url()
    );
    let took = drain(
        dir.path(),
        &target,
        RabbitQueue(channel.clone(), out_q.clone()),
        Until::Arrived,
    )
    .await;
    report(
        "amqp target: webhook → RabbitMQ (confirms)",
        n,
        took,
        "client publishing",
        direct,
    );

    // Source: the direct queue holds N messages; consume them directly.
    let consumer_channel = conn.create_channel().await.unwrap();
    consumer_channel
        .basic_qos(500, BasicQosOptions::default())
        .await
        .unwrap();
    let started = Instant::now();
    let mut consumer = consumer_channel
        .basic_consume(
            direct_q.as_str().into(),
            "bench".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let mut got = 0;
    while got < n {
        let d = consumer.next().await.unwrap().unwrap();
        got += 1;
        if got % 250 == 0 || got == n {
            d.acker
                .ack(BasicAckOptions { multiple: true })
                .await
                .unwrap();
        }
    }
    let direct = started.elapsed();
    drop(consumer);
    consumer_channel.close(200, "done".into()).await.ok();
    // sluice consumes the target's output queue (N messages).
    let dir = tempfile::tempdir().unwrap();
    let source = format!(
        "kind = \"amqp\"\nurl = \"{}\"\nqueue = \"{out_q}\"\nprefetch = 500",
        amqp_url()
    );
    let took = consume(dir.path(), &source).await;
    report(
        "amqp source: RabbitMQ → file (acked once queued)",
        n,
        took,
        "client consuming",
        direct,
    );
    for q in [direct_q, out_q] {
        channel
            .queue_delete(q.as_str().into(), QueueDeleteOptions::default())
            .await
            .ok();
    }
}

async fn nats() {
    let n = n();
    let client = async_nats::connect(nats_url()).await.expect("NATS");
    let js = jetstream::new(client);
    let make = |name: String| {
        let js = js.clone();
        async move {
            js.create_stream(stream::Config {
                name: name.clone(),
                subjects: vec![format!("{name}.>")],
                ..Default::default()
            })
            .await
            .unwrap();
            name
        }
    };
    let direct_s = make(unique("BENCH_DIRECT")).await;
    let started = Instant::now();
    for chunk in (0..n).collect::<Vec<_>>().chunks(BATCH) {
        let mut acks = Vec::with_capacity(BATCH);
        for &i in chunk {
            let mut headers = async_nats::HeaderMap::new();
            headers.insert("Nats-Msg-Id", format!("S:sync:{i}").as_str());
            acks.push(
                js.publish_with_headers(format!("{direct_s}.x"), headers, payload(i).into())
                    .await
                    .unwrap(),
            );
        }
        for a in acks {
            a.await.unwrap();
        }
    }
    let direct = started.elapsed();
    let out_s = make(unique("BENCH_OUT")).await;
    let dir = tempfile::tempdir().unwrap();
    let target = format!(
        "kind = \"nats\"\nurl = \"{}\"\nsubject = \"{out_s}.orders\"\nbatch = {BATCH}",
        nats_url()
    );
    let took = drain(
        dir.path(),
        &target,
        NatsStream(js.clone(), out_s.clone()),
        Until::Arrived,
    )
    .await;
    report(
        "nats target: webhook → JetStream (acks)",
        n,
        took,
        "client publishing",
        direct,
    );

    // Source: consume the direct stream directly, then sluice the output.
    let consumer = js
        .get_stream(&direct_s)
        .await
        .unwrap()
        .create_consumer(pull::Config {
            durable_name: Some("bench".into()),
            ack_policy: jetstream::consumer::AckPolicy::All,
            ..Default::default()
        })
        .await
        .unwrap();
    let started = Instant::now();
    let mut messages = consumer.messages().await.unwrap();
    let mut got = 0;
    while got < n {
        let m = messages.next().await.unwrap().unwrap();
        got += 1;
        // AckPolicy::All: an ack covers the ones before it.
        if got % 250 == 0 || got == n {
            m.double_ack().await.unwrap();
        }
    }
    drop(messages);
    let direct = started.elapsed();
    let dir = tempfile::tempdir().unwrap();
    let source = format!(
        "kind = \"nats\"\nurl = \"{}\"\nstream = \"{out_s}\"",
        nats_url()
    );
    let took = consume(dir.path(), &source).await;
    report(
        "nats source: JetStream → file (acked once queued)",
        n,
        took,
        "client consuming",
        direct,
    );
    for s in [direct_s, out_s] {
        js.delete_stream(&s).await.ok();
    }
}

fn report(what: &str, n: usize, took: Duration, baseline: &str, base: Duration) {
    println!(
        "{what}: {n} in {:.2}s = {:.0}/s; the {baseline} directly: {:.0}/s; ratio {:.2}",
        took.as_secs_f64(),
        rate(n, took),
        rate(n, base),
        rate(n, took) / rate(n, base)
    );
}

fn mqtt_port() -> u16 {
    let url =
        std::env::var("SLUICE_TEST_MQTT_URL").unwrap_or_else(|_| "mqtt://127.0.0.1:1883".into());
    reqwest::Url::parse(&url).unwrap().port().unwrap_or(1883)
}

/// The MQTT source's publisher keeps at most this many messages published
/// and not yet counted by the side measured: Mosquitto keeps at most
/// `max_queued_messages` (1000 by default) for a session and drops the
/// rest without a word.
const WINDOW: usize = 500;

/// How long the MQTT benches wait for one more message before they fail:
/// one the broker dropped never comes.
const STALL: Duration = Duration::from_secs(30);

/// An MQTT client whose event loop runs on a task of its own, counting the
/// publishes it receives and the PUBACKs it gets; a wait on a count is
/// woken by each change (nothing polls).
struct MqttClient {
    client: AsyncClient,
    received: watch::Receiver<usize>,
    acked: watch::Receiver<usize>,
    /// One `()` per CONNACK or SUBACK.
    ready: mpsc::UnboundedReceiver<()>,
    task: JoinHandle<()>,
}

impl MqttClient {
    /// Connected under `id` (with a persistent session unless `clean`),
    /// once the CONNACK came.
    async fn connect(id: &str, clean: bool) -> MqttClient {
        MqttClient::connect_to(mqtt_port(), id, clean).await
    }

    /// Connected to the broker on `port` of 127.0.0.1.
    async fn connect_to(port: u16, id: &str, clean: bool) -> MqttClient {
        let mut options = MqttOptions::new(id, "127.0.0.1", port);
        options.set_clean_session(clean);
        options.set_inflight(BATCH as u16);
        let (client, mut events) = AsyncClient::new(options, 10 * BATCH);
        let (received_tx, received) = watch::channel(0);
        let (acked_tx, acked) = watch::channel(0);
        let (ready_tx, ready) = mpsc::unbounded_channel();
        // Ends at the first error (rumqttc would connect again and resend):
        // the counts end with it, and a wait on them fails.
        let task = tokio::spawn(async move {
            while let Ok(event) = events.poll().await {
                match event {
                    Event::Incoming(Packet::Publish(_)) => received_tx.send_modify(|c| *c += 1),
                    Event::Incoming(Packet::PubAck(_)) => acked_tx.send_modify(|c| *c += 1),
                    Event::Incoming(Packet::ConnAck(_) | Packet::SubAck(_)) => {
                        ready_tx.send(()).ok();
                    }
                    _ => {}
                }
            }
        });
        let mut c = MqttClient {
            client,
            received,
            acked,
            ready,
            task,
        };
        c.ready
            .recv()
            .await
            .expect("Mosquitto takes the connection");
        c
    }

    /// Subscribed to `topic` with QoS 1, once the SUBACK came.
    async fn subscribe(&mut self, topic: &str) {
        self.client
            .subscribe(topic, QoS::AtLeastOnce)
            .await
            .unwrap();
        self.ready.recv().await.expect("Mosquitto grants it");
    }

    /// Publishes record `i` to `topic` with QoS 1.
    async fn publish(&self, topic: &str, i: usize) {
        self.client
            .publish(topic, QoS::AtLeastOnce, false, payload(i))
            .await
            .unwrap();
    }
}

impl Drop for MqttClient {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Removes the persistent session `id` from the broker: a connection under
/// its id with a clean session.
async fn forget(id: &str) {
    let mut c = MqttClient::connect(id, true).await;
    c.client.disconnect().await.ok();
    tokio::time::timeout(Duration::from_secs(1), &mut c.task)
        .await
        .ok();
}

impl AsyncCount for watch::Receiver<usize> {
    async fn count(&self) -> usize {
        *self.borrow()
    }

    /// Woken by each message counted.
    async fn reach(&self, n: usize) {
        self.clone()
            .wait_for(|&c| c >= n)
            .await
            .expect("the counting client's connection is lost");
    }
}

/// What the side measured of the MQTT source has counted of the messages
/// published to it.
trait Seen {
    /// Waits until it counted more than `count`: how many it did.
    async fn more_than(&mut self, count: usize) -> usize;
}

/// The client's count of the publishes it received.
impl Seen for watch::Receiver<usize> {
    async fn more_than(&mut self, count: usize) -> usize {
        *self
            .wait_for(|&c| c > count)
            .await
            .expect("the consuming client's connection is lost")
    }
}

/// The lines of sluice's output file as it grows (what the AMQP and NATS
/// source benches count): only what was appended since the last look is
/// read.
struct Lines {
    path: PathBuf,
    file: Option<std::fs::File>,
    lines: usize,
}

impl Lines {
    fn new(path: &Path) -> Lines {
        Lines {
            path: path.to_path_buf(),
            file: None,
            lines: 0,
        }
    }

    fn look(&mut self) -> usize {
        if self.file.is_none() {
            self.file = std::fs::File::open(&self.path).ok();
        }
        if let Some(file) = &mut self.file {
            let mut buf = [0u8; 64 * 1024];
            loop {
                match file.read(&mut buf) {
                    Ok(0) => break,
                    Ok(read) => self.lines += bytecount(&buf[..read]),
                    Err(e) => panic!("{}: {e}", self.path.display()),
                }
            }
        }
        self.lines
    }
}

impl Seen for Lines {
    /// A file says nothing when it grows: it is looked at every millisecond
    /// (tokio's timer's step), reading only what was appended.
    async fn more_than(&mut self, count: usize) -> usize {
        loop {
            let lines = self.look();
            if lines > count {
                return lines;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
}

/// Publishes the N records to `topic` with QoS 1, never more than
/// [`WINDOW`] ahead of what `seen` counted, until it counted N: the time
/// from the first publish to then. Fails when nothing more arrives for
/// [`STALL`] (dropped by the broker).
async fn paced(publisher: &MqttClient, topic: &str, seen: &mut impl Seen) -> Duration {
    let n = n();
    let started = Instant::now();
    let (mut published, mut counted) = (0, 0);
    while counted < n {
        while published < n.min(counted + WINDOW) {
            publisher.publish(topic, published).await;
            published += 1;
        }
        counted = match tokio::time::timeout(STALL, seen.more_than(counted)).await {
            Ok(counted) => counted,
            Err(_) => panic!(
                "{counted} of {n} messages arrived ({published} published), then none for \
                 {STALL:?}: did the broker drop them (max_queued_messages)?"
            ),
        };
    }
    started.elapsed()
}

/// A Mosquitto of the bench's own on a free port of 127.0.0.1, stopped
/// when dropped.
struct Mosquitto {
    port: u16,
    _dir: tempfile::TempDir,
    process: std::process::Child,
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        self.process.kill().ok();
        self.process.wait().ok();
    }
}

impl Mosquitto {
    /// With `settings` added to its configuration; `None` without the
    /// program.
    fn start(settings: &str) -> Option<Mosquitto> {
        let program = ["/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto"]
            .into_iter()
            .find(|p| Path::new(p).exists())?;
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let conf = dir.path().join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!(
                "listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n\
                 log_dest none\n{settings}"
            ),
        )
        .unwrap();
        let process = std::process::Command::new(program)
            .arg("-c")
            .arg(&conf)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("mosquitto starts");
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "mosquitto listens"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(Mosquitto {
            port,
            _dir: dir,
            process,
        })
    }
}

async fn mqtt_target(broker: &Mosquitto, base: &str) {
    let n = n();
    let direct_topic = format!("{base}/direct");
    let mut direct_reader =
        MqttClient::connect_to(broker.port, &format!("{base}-direct-read"), true).await;
    direct_reader.subscribe(&direct_topic).await;
    let publisher = MqttClient::connect_to(broker.port, &format!("{base}-pub"), true).await;
    let mut acked = publisher.acked.clone();
    let started = Instant::now();
    for chunk in (0..n).collect::<Vec<_>>().chunks(BATCH) {
        for &i in chunk {
            publisher.publish(&direct_topic, i).await;
        }
        let until = chunk[chunk.len() - 1] + 1;
        acked
            .wait_for(|&a| a >= until)
            .await
            .expect("the publisher's connection is lost");
    }
    let direct = started.elapsed();
    assert_eq!(*acked.borrow(), n, "a PUBACK for each message");
    tokio::time::timeout(STALL, direct_reader.received.reach(n))
        .await
        .expect("each message reaches the reader");
    assert_eq!(direct_reader.received.count().await, n, "each message once");
    drop(direct_reader);
    // sluice: webhook → the broker.
    let mut reader = MqttClient::connect_to(broker.port, &format!("{base}-read"), true).await;
    reader.subscribe(&format!("{base}/out")).await;
    let dir = tempfile::tempdir().unwrap();
    let target = format!(
        "kind = \"mqtt\"\nurl = \"mqtt://127.0.0.1:{}\"\ntopic = \"{base}/out\"\n\
         client_id = \"{base}-sluice\"\nbatch = {BATCH}",
        broker.port
    );
    let took = drain(
        dir.path(),
        &target,
        reader.received.clone(),
        Until::Acknowledged,
    )
    .await;
    report(
        "mqtt target: webhook → MQTT (QoS 1, PUBACKs)",
        n,
        took,
        "client publishing",
        direct,
    );
}

async fn mqtt() {
    let n = n();
    let base = unique("bench");

    // Target, on a Mosquitto of the bench's own that queues without limit
    // for a subscriber behind (the shared one drops past 1000): the client
    // publishing directly, each hundred's PUBACKs awaited, against sluice
    // draining its queue; both timed to the last PUBACK, and a reader
    // subscribed to each topic (the broker forwards in both) must count
    // every message once.
    match Mosquitto::start("max_queued_messages 0\n") {
        None => println!("mqtt target: skipped (no mosquitto program to run a broker of its own)"),
        Some(broker) => mqtt_target(&broker, &base).await,
    }

    // Source: N records published to one topic, paced (WINDOW); first the
    // client consuming them directly, with a persistent session as sluice's
    // and rumqttc's PUBACK for each as it comes.
    let publisher = MqttClient::connect(&format!("{base}-pub"), true).await;
    let topic = format!("{base}/in");
    let id = format!("{base}-direct-consumer");
    let mut consumer = MqttClient::connect(&id, false).await;
    consumer.subscribe(&topic).await;
    let mut received = consumer.received.clone();
    let direct = paced(&publisher, &topic, &mut received).await;
    assert_eq!(*received.borrow(), n, "each message once");
    drop(consumer);
    forget(&id).await;
    // sluice consumes the same topic into a file.
    let dir = tempfile::tempdir().unwrap();
    let (target, out) = file_target(dir.path());
    let id = format!("{base}-sluice");
    let source = format!(
        "kind = \"mqtt\"\nurl = \"mqtt://127.0.0.1:{}\"\ntopic = \"{topic}\"\nclient_id = \"{id}\"",
        mqtt_port()
    );
    let daemon = Daemon::start(dir.path(), &site(&source, &target)).await;
    // Subscribed before the first publish: the broker keeps nothing for a
    // session it does not have yet.
    let logged = &daemon;
    common::eventually(30, "sluice subscribed", || async move {
        logged.log("S").await.contains("consumes from endpoint src")
    })
    .await;
    let took = paced(&publisher, &topic, &mut Lines::new(&out)).await;
    drop(daemon);
    forget(&id).await;
    let text = std::fs::read_to_string(&out).unwrap();
    let mut seen = vec![false; n];
    for line in text.lines() {
        let record: Value = serde_json::from_str(line).unwrap();
        let i = record["n"].as_u64().unwrap() as usize;
        assert!(!std::mem::replace(&mut seen[i], true), "{i} twice");
    }
    assert!(seen.iter().all(|&s| s), "each message once");
    report(
        "mqtt source: MQTT → file (QoS 1, paced, acked once queued)",
        n,
        took,
        "client consuming",
        direct,
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    // SLUICE_BENCH_ONLY=amqp|nats|mqtt runs one kind.
    let only = std::env::var("SLUICE_BENCH_ONLY").ok();
    let runs = |kind: &str| only.as_deref().is_none_or(|o| o == kind);
    if runs("amqp") {
        amqp().await;
    }
    if runs("nats") {
        nats().await;
    }
    if runs("mqtt") {
        mqtt().await;
    }
}
