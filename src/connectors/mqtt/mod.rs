//! `kind = "mqtt"`: an MQTT 3.1.1 broker (Mosquitto, EMQX, HiveMQ, …)
//! over TCP (`mqtt://`) or TLS (`mqtts://`, rustls with the ClientConfig
//! of [`BrokerConfig::tls`]), on rumqttc's packet codec and a connection of
//! our own ([`link`]).
//!
//! # Design constraints
//! - Everything goes with QoS 1, both ways: at least once, never lost.
//!   MQTT has no idempotency key (3.1.1 has no message properties), so a
//!   batch the broker took only in part comes again whole: what repeats is
//!   the receiver's to drop, as with every at-least-once target.
//! - A target's batch is delivered once the broker has sent a PUBACK for
//!   every publish of it. MQTT 3.1.1 acknowledges QoS 1 in order on one
//!   connection, so the target counts PUBACKs; any failure drops the
//!   connection, so no PUBACK of an earlier batch is ever counted for a
//!   later one.
//! - A source holds a persistent session (clean session off) under
//!   `client_id` and acknowledges by hand: a PUBACK is sent only by
//!   [`Subscription::ack`], after the engine queued the message durably.
//!   Whatever was not acknowledged stays in the session and is sent again
//!   with the DUP flag on the next connection ([`Received::redelivered`]).
//!   The broker keeps only so much for a session: Mosquitto drops QoS 1
//!   messages past `max_queued_messages` (1000 by default) for a client
//!   that is away or behind, and says so only in its own log ("Outgoing
//!   messages are being dropped"). A source that must lose nothing needs
//!   that limit raised (0: none) on the broker.
//! - Each connection is read and written by a task of its own, all the
//!   time: keep-alive pings, PUBACKs and incoming publishes never wait for
//!   the engine. The task ends at the first error; the connection is then
//!   made anew by the next use.
//! - Three client ids, so that none takes over another's connection (a
//!   broker drops the older of two connections with one id): the source's
//!   `client_id` (its session), the target's `{client_id}-target`, and a
//!   probe's `{client_id}-probe-{random}`; the last two with clean
//!   sessions, so they leave nothing behind on the broker.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use rumqttc::{ConnectReturnCode, Publish, QoS, SubscribeReasonCode};
use tokio::sync::{mpsc, Mutex};

use super::broker::{BrokerConfig, BrokerKind, Login, Received, Subscribe, Subscription};
use super::template::FieldTemplate;
use super::{Credentials, Delivered, Delivery, DeliveryError, FailureClass, Target};
use crate::redact;
use link::{gone, Connection, Link, Request};

mod link;

const KIND: BrokerKind = BrokerKind::Mqtt;

/// The largest packet MQTT can carry (a remaining length of four 7-bit
/// bytes); the broker enforces its own limit.
const MAX_PACKET: usize = 268_435_455;

/// Messages a source's event loop hands over ahead of `receive`. The broker
/// sends only so many unacknowledged ones (Mosquitto: 20 by
/// `max_inflight_messages`); past this the event loop waits, and a stalled
/// engine shows as a lost connection after 1.5 keep-alives.
const HANDED_OVER: usize = 1024;

/// How often an idle connection pings the broker: a connection lost
/// without a word is noticed within two of these.
const KEEP_ALIVE: Duration = Duration::from_secs(30);

fn fail(class: FailureClass, message: String) -> DeliveryError {
    DeliveryError {
        class,
        message,
        retry_after: None,
    }
}

/// How an endpoint is named in messages: `mqtt mqtt://host:1883`.
fn named(config: &BrokerConfig) -> String {
    format!("mqtt {}", redact::url(&config.url))
}

/// What a CONNACK's refusal means.
fn refused(code: ConnectReturnCode) -> (FailureClass, String) {
    let (class, why) = match code {
        ConnectReturnCode::BadUserNamePassword => (
            FailureClass::Unauthorized,
            "the broker refused the user name or password (CONNACK 4)",
        ),
        ConnectReturnCode::NotAuthorized => (
            FailureClass::Unauthorized,
            "the broker does not authorize this client (CONNACK 5)",
        ),
        // "The MQTT service is unavailable": the broker says it is busy,
        // which passes.
        ConnectReturnCode::ServiceUnavailable => (
            FailureClass::Intermittent,
            "the broker's MQTT service is unavailable (CONNACK 3)",
        ),
        ConnectReturnCode::RefusedProtocolVersion => (
            FailureClass::Rejected,
            "the broker does not speak MQTT 3.1.1 (CONNACK 1)",
        ),
        ConnectReturnCode::BadClientId => (
            FailureClass::Rejected,
            "the broker refused the client id (CONNACK 2)",
        ),
        ConnectReturnCode::Success => (FailureClass::Rejected, "the broker refused (CONNACK 0)"),
    };
    (class, why.into())
}

/// How to connect to the endpoint under `client_id`, with the login's
/// user and password and, for `mqtts://`, our TLS settings; a clean
/// session unless the caller says otherwise.
fn options(
    config: &BrokerConfig,
    base: &Path,
    login: &Login,
    client_id: String,
) -> Result<link::Options, DeliveryError> {
    let what = named(config);
    let url = reqwest::Url::parse(&config.url)
        .map_err(|e| fail(FailureClass::Rejected, format!("{what}: not a URL: {e}")))?;
    let host = url
        .host_str()
        .ok_or_else(|| fail(FailureClass::Rejected, format!("{what}: no host")))?;
    // An IPv6 literal without its brackets, as a socket address and TLS
    // take it.
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let tls = config.uses_tls(KIND);
    let port = url.port().unwrap_or(if tls { 8883 } else { 1883 });
    let tls = match tls {
        false => None,
        true => Some(Arc::new(config.tls(base).map_err(|e| {
            fail(FailureClass::Untrusted, format!("{what}: {e}"))
        })?)),
    };
    let login = match login.get(config)? {
        (Some(user), password) => Some((user, password.unwrap_or_default())),
        (None, _) => None,
    };
    Ok(link::Options {
        host,
        port,
        tls,
        client_id,
        clean_session: true,
        login,
        keep_alive: KEEP_ALIVE,
    })
}

/// The client id of the target's connection.
fn target_id(config: &BrokerConfig) -> String {
    format!("{}-target", config.client_id.as_deref().unwrap_or("sluice"))
}

/// A client id of its own for each probe: two probes at once (the monitor
/// and a person's test) do not take over each other's connection.
fn probe_id(config: &BrokerConfig) -> String {
    let mut random = [0u8; 4];
    getrandom::fill(&mut random).ok();
    let suffix: String = random.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-probe-{suffix}",
        config.client_id.as_deref().unwrap_or("sluice")
    )
}

/// Opens a connection and waits for the broker's CONNACK, within the
/// endpoint's timeout: a refusal is this call's error.
async fn connect(config: &BrokerConfig, options: link::Options) -> Result<Link, DeliveryError> {
    let what = named(config);
    match tokio::time::timeout(config.timeout(), Link::open(&what, options)).await {
        Err(_) => Err(fail(
            FailureClass::NoAnswer,
            format!("{what}: no CONNACK within {:?} (timeout)", config.timeout()),
        )),
        Ok(result) => result.map(|(link, _)| link),
    }
}

/// Subscribes to `topic` with QoS 1 and reads until the SUBACK: the QoS
/// the broker grants, and the publishes that came before it (a persistent
/// session's messages come right after the CONNACK).
async fn subscribe_qos1(
    config: &BrokerConfig,
    link: &mut Link,
    topic: &str,
) -> Result<(QoS, VecDeque<Publish>), DeliveryError> {
    let what = named(config);
    if !rumqttc::valid_filter(topic) {
        return Err(fail(
            FailureClass::Rejected,
            format!("{what}: '{topic}' is not a valid topic filter"),
        ));
    }
    let (granted, early) = link.subscribe(topic).await?;
    match granted {
        Some(SubscribeReasonCode::Success(QoS::AtMostOnce)) => Err(fail(
            FailureClass::Rejected,
            format!(
                "{what}: the broker grants '{topic}' only QoS 0, which keeps nothing that was \
                 not acknowledged (its max_qos?)"
            ),
        )),
        Some(SubscribeReasonCode::Success(qos)) => Ok((qos, early)),
        Some(SubscribeReasonCode::Failure) | None => Err(fail(
            FailureClass::Rejected,
            format!(
                "{what}: the broker refused the subscription to '{topic}' (SUBACK 0x80: not \
                 authorized, or a filter it does not take)"
            ),
        )),
    }
}

/// A health test: connect and authenticate, and for a source subscribe to
/// its topic filter with QoS 1 (MQTT has no way to ask whether a topic
/// exists: a topic is any name published to). With a probe's own client
/// id and a clean session, so it disturbs neither the source's session nor
/// the target's connection.
pub async fn probe(config: &BrokerConfig, base: &Path) -> Result<String, DeliveryError> {
    probe_with(config, base, &Login::default()).await
}

async fn probe_with(
    config: &BrokerConfig,
    base: &Path,
    login: &Login,
) -> Result<String, DeliveryError> {
    let what = named(config);
    let options = options(config, base, login, probe_id(config))?;
    let test = async {
        let mut link = connect(config, options).await?;
        let mut answer = format!("{what} accepted the connection (CONNACK 0, MQTT 3.1.1)");
        // A topic that takes record fields is a target's: nothing to
        // subscribe to.
        let subscribed = config
            .topic
            .as_deref()
            .filter(|_| config.is_source(KIND) && !config.publish_template(KIND).has_fields());
        if let Some(topic) = subscribed {
            let (qos, _) = subscribe_qos1(config, &mut link, topic).await?;
            answer.push_str(&format!(
                " and granted the subscription to '{topic}' with QoS {}",
                qos as u8
            ));
        }
        // A clean goodbye: the broker logs a disconnection, not a lost
        // client. Its failure changes nothing about the answer.
        link.disconnect().await;
        Ok(answer)
    };
    tokio::time::timeout(config.timeout(), test)
        .await
        .unwrap_or_else(|_| {
            Err(fail(
                FailureClass::NoAnswer,
                format!("{what}: no answer within {:?} (timeout)", config.timeout()),
            ))
        })
}

/// Delivers to a topic (which may take record fields) of an MQTT broker.
pub struct MqttTarget {
    config: BrokerConfig,
    base: PathBuf,
    template: FieldTemplate,
    login: Login,
    /// Bumped by `set_credentials`: a kept connection made before is
    /// dropped at its next use.
    generation: AtomicU64,
    /// The kept connection and the generation of credentials it was made
    /// with; `None` until the first use and after any failure.
    connection: Mutex<Option<(u64, Connection)>>,
}

impl MqttTarget {
    pub fn new(config: &BrokerConfig, base: &Path) -> MqttTarget {
        MqttTarget {
            template: config.publish_template(KIND),
            config: config.clone(),
            base: base.to_path_buf(),
            login: Login::default(),
            generation: AtomicU64::new(0),
            connection: Mutex::new(None),
        }
    }

    /// The topic of each record: filled from its fields when the topic
    /// takes some (the payload is parsed only then). `Err` (Rejected)
    /// names the first record it cannot be made for, before anything of
    /// the batch is published.
    fn topics(&self, batch: &[Delivery<'_>]) -> Result<Vec<String>, DeliveryError> {
        let rejected = |d: &Delivery<'_>, why: String| {
            fail(FailureClass::Rejected, format!("{}: {why}", d.key))
        };
        let fixed = match self.template.has_fields() {
            true => None,
            false => Some(
                self.config
                    .publish_name(KIND, &self.template, None)
                    .map_err(|why| fail(FailureClass::Rejected, why))?,
            ),
        };
        batch
            .iter()
            .map(|d| {
                let topic = match &fixed {
                    Some(topic) => topic.clone(),
                    None => {
                        let record = serde_json::from_str(d.payload).map_err(|e| {
                            rejected(d, format!("the record is not JSON ({e}) for the topic"))
                        })?;
                        self.config
                            .publish_name(KIND, &self.template, Some(&record))
                            .map_err(|why| rejected(d, why))?
                    }
                };
                // The PUBLISH's remaining length: topic length, topic,
                // packet id, payload.
                if 2 + topic.len() + 2 + d.payload.len() > MAX_PACKET {
                    return Err(rejected(
                        d,
                        format!(
                            "{} bytes are more than an MQTT message can carry",
                            d.payload.len()
                        ),
                    ));
                }
                Ok(topic)
            })
            .collect()
    }

    /// The kept connection, made anew when there is none, it is lost, or
    /// the credentials changed since it was made.
    async fn connection<'a>(
        &self,
        slot: &'a mut Option<(u64, Connection)>,
    ) -> Result<&'a mut Connection, DeliveryError> {
        let generation = self.generation.load(Ordering::SeqCst);
        if slot
            .as_ref()
            .is_some_and(|(g, c)| *g != generation || c.lost().is_some())
        {
            *slot = None;
        }
        if slot.is_none() {
            let options = options(
                &self.config,
                &self.base,
                &self.login,
                target_id(&self.config),
            )?;
            let link = connect(&self.config, options).await?;
            *slot = Some((generation, link.run(None)));
        }
        match slot {
            Some((_, connection)) => Ok(connection),
            None => Err(gone(&named(&self.config))),
        }
    }
}

/// Publishes each record with QoS 1 (retain off), then waits for as many
/// PUBACKs.
async fn publish_all(
    connection: &mut Connection,
    batch: &[Delivery<'_>],
    topics: Vec<String>,
    what: &str,
) -> Result<(), DeliveryError> {
    let before = connection.progress.borrow().acks;
    let publishes = batch
        .iter()
        .zip(topics)
        .map(|(d, topic)| Publish::new(topic, QoS::AtLeastOnce, d.payload.as_bytes()))
        .collect();
    connection.ask(Request::Publish(publishes), what)?;
    connection.acks(before + batch.len() as u64, what).await
}

#[async_trait]
impl Target for MqttTarget {
    fn batch_size(&self) -> usize {
        self.config.batch
    }

    async fn deliver(&self, batch: &[Delivery<'_>]) -> Result<Delivered, DeliveryError> {
        if batch.is_empty() {
            return Ok(Delivered::default());
        }
        let topics = self.topics(batch)?;
        let what = named(&self.config);
        let mut slot = self.connection.lock().await;
        let connection = self.connection(&mut slot).await?;
        let timeout = self.config.timeout();
        let result = match tokio::time::timeout(
            timeout,
            publish_all(connection, batch, topics, &what),
        )
        .await
        {
            Ok(result) => result,
            Err(_) => Err(fail(
                FailureClass::NoAnswer,
                format!(
                    "{what}: the broker did not acknowledge all {} messages within {timeout:?} \
                         (timeout)",
                    batch.len()
                ),
            )),
        };
        if result.is_err() {
            // Unacknowledged publishes would be counted for the next batch.
            *slot = None;
        }
        result.map(|()| Delivered::default())
    }

    async fn probe(&self) -> Result<String, DeliveryError> {
        probe_with(&self.config, &self.base, &self.login).await
    }

    fn set_credentials(&self, credentials: Credentials) -> Result<(), String> {
        self.login.set(credentials)?;
        self.generation.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

/// Consumes a topic filter of an MQTT broker through a persistent session.
pub struct MqttSource {
    config: BrokerConfig,
    base: PathBuf,
    login: Login,
}

impl MqttSource {
    pub fn new(config: &BrokerConfig, base: &Path) -> MqttSource {
        MqttSource {
            config: config.clone(),
            base: base.to_path_buf(),
            login: Login::default(),
        }
    }
}

#[async_trait]
impl Subscribe for MqttSource {
    async fn probe(&self) -> Result<String, DeliveryError> {
        probe_with(&self.config, &self.base, &self.login).await
    }

    async fn subscribe(&self) -> Result<Box<dyn Subscription>, DeliveryError> {
        let config = &self.config;
        let what = named(config);
        let topic = config.topic.as_deref().unwrap_or_default();
        let client_id = config.client_id.clone().unwrap_or_else(|| "sluice".into());
        let mut options = options(config, &self.base, &self.login, client_id)?;
        options.clean_session = false;
        let open = async {
            let mut link = connect(config, options).await?;
            let (_, early) = subscribe_qos1(config, &mut link, topic).await?;
            Ok::<_, DeliveryError>((link, early))
        };
        let (link, early) = tokio::time::timeout(config.timeout(), open)
            .await
            .unwrap_or_else(|_| {
                Err(fail(
                    FailureClass::NoAnswer,
                    format!(
                        "{what}: no CONNACK or SUBACK within {:?} (timeout)",
                        config.timeout()
                    ),
                ))
            })?;
        let (to, handed) = mpsc::channel(HANDED_OVER);
        Ok(Box::new(MqttSubscription {
            connection: link.run(Some(to)),
            early,
            handed,
            lost: None,
            unacked: Vec::new(),
            acks_sent: 0,
            timeout: config.timeout(),
            what,
        }))
    }

    fn set_credentials(&self, credentials: Credentials) -> Result<(), String> {
        self.login.set(credentials)
    }
}

/// An open subscription: publishes come from the event loop's task and are
/// acknowledged by hand, in the order they came.
struct MqttSubscription {
    connection: Connection,
    /// Publishes that came before the SUBACK.
    early: VecDeque<Publish>,
    /// Publishes from the event loop's task, and last why it ended.
    handed: mpsc::Receiver<Result<Publish, DeliveryError>>,
    /// Why the connection ended, taken from `handed` while a `receive`
    /// still had messages to give.
    lost: Option<DeliveryError>,
    /// Given by `receive`, not yet acknowledged, in the order received.
    unacked: Vec<Publish>,
    /// PUBACKs handed to the event loop so far (QoS 1 publishes only: a
    /// QoS 0 one has nothing to acknowledge).
    acks_sent: u64,
    timeout: Duration,
    what: String,
}

impl MqttSubscription {
    /// The next publish already there, without waiting.
    fn ready(&mut self) -> Option<Publish> {
        if let Some(p) = self.early.pop_front() {
            return Some(p);
        }
        if self.lost.is_some() {
            return None;
        }
        match self.handed.try_recv() {
            Ok(Ok(p)) => Some(p),
            Ok(Err(e)) => {
                self.lost = Some(e);
                None
            }
            Err(_) => None,
        }
    }

    fn take(&mut self, p: Publish, out: &mut Vec<Received>) {
        out.push(Received {
            payload: super::broker::record_of(&p.payload),
            redelivered: p.dup,
        });
        self.unacked.push(p);
    }
}

#[async_trait]
impl Subscription for MqttSubscription {
    async fn receive(&mut self, max: usize) -> Result<Vec<Received>, DeliveryError> {
        let first = match self.ready() {
            Some(p) => p,
            None => {
                if let Some(lost) = &self.lost {
                    return Err(lost.clone());
                }
                match self.handed.recv().await {
                    Some(Ok(p)) => p,
                    Some(Err(e)) => {
                        self.lost = Some(e.clone());
                        return Err(e);
                    }
                    None => return Err(self.connection.lost().unwrap_or_else(|| gone(&self.what))),
                }
            }
        };
        let mut out = Vec::with_capacity(max.clamp(1, HANDED_OVER));
        self.take(first, &mut out);
        while out.len() < max {
            match self.ready() {
                Some(p) => self.take(p, &mut out),
                None => break,
            }
        }
        Ok(out)
    }

    async fn ack(&mut self) -> Result<(), DeliveryError> {
        let pkids: Vec<u16> = self
            .unacked
            .drain(..)
            .filter(|p| p.qos != QoS::AtMostOnce)
            .map(|p| p.pkid)
            .collect();
        if !pkids.is_empty() {
            self.acks_sent += pkids.len() as u64;
            self.connection.ask(Request::Ack(pkids), &self.what)?;
        }
        // Written to the broker, not only queued: a subscription dropped
        // right after would otherwise take its PUBACKs with it.
        let (acks, what, timeout) = (self.acks_sent, self.what.clone(), self.timeout);
        tokio::time::timeout(timeout, self.connection.acks(acks, &what))
            .await
            .unwrap_or_else(|_| {
                Err(fail(
                    FailureClass::NoAnswer,
                    format!("{what}: the acknowledgements were not written within {timeout:?}"),
                ))
            })
    }
}

#[cfg(test)]
mod tests {
    //! Against a real broker: `SLUICE_TEST_MQTT_URL` (default
    //! `mqtt://127.0.0.1:1883`), read and written with the broker's own
    //! clients (`mosquitto_pub`, `mosquitto_sub`). Each test takes topics
    //! and client ids of its own and removes the sessions it made.

    use super::*;
    use crate::tls::test_ca::TestCa;
    use serde_json::json;
    use std::process::Stdio;
    use std::sync::atomic::AtomicUsize;
    use tokio::io::AsyncWriteExt;
    use tokio::process::Command;

    fn url() -> String {
        std::env::var("SLUICE_TEST_MQTT_URL").unwrap_or_else(|_| "mqtt://127.0.0.1:1883".into())
    }

    /// A name no other test or run uses.
    fn unique(what: &str) -> String {
        static N: AtomicUsize = AtomicUsize::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .subsec_nanos();
        format!(
            "sluice-test-{what}-{}-{nanos:x}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        )
    }

    fn config(url: &str, topic: &str, client_id: &str) -> BrokerConfig {
        let mut c: BrokerConfig = toml::from_str(&format!(
            "url = \"{url}\"\ntopic = \"{topic}\"\nclient_id = \"{client_id}\""
        ))
        .unwrap();
        c.timeout = Some(Duration::from_secs(5));
        assert_eq!(c.validate(KIND, Path::new(".")), []);
        c
    }

    /// The broker's own client `tool` (`mosquitto_pub`, `mosquitto_sub`)
    /// against the test broker, given `input`: what it printed.
    async fn mosquitto(tool: &str, args: &[&str], input: Option<String>) -> String {
        let url = reqwest::Url::parse(&url()).unwrap();
        let (host, port) = (url.host_str().unwrap(), url.port().unwrap_or(1883));
        let mut child = Command::new(tool)
            .args(["-h", host, "-p", &port.to_string(), "-V", "mqttv311"])
            .args(args)
            .stdin(match input {
                Some(_) => Stdio::piped(),
                None => Stdio::null(),
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("{tool}: {e}"));
        if let Some(input) = input {
            let mut stdin = child.stdin.take().unwrap();
            stdin.write_all(input.as_bytes()).await.unwrap();
        }
        let out = tokio::time::timeout(Duration::from_secs(20), child.wait_with_output())
            .await
            .expect("the broker's client ends")
            .unwrap();
        assert!(
            out.status.success(),
            "{tool} {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Publishes each line as a message with QoS 1, in order.
    async fn publish(topic: &str, lines: &[&str]) {
        let input = lines.iter().map(|l| format!("{l}\n")).collect();
        mosquitto(
            "mosquitto_pub",
            &["-i", &unique("pub"), "-q", "1", "-t", topic, "-l"],
            Some(input),
        )
        .await;
    }

    /// A persistent session on the test broker, removed when dropped (also
    /// when the test fails): a connection with its client id and a clean
    /// session makes the broker forget it.
    struct Session {
        client_id: String,
        topic: String,
    }

    impl Drop for Session {
        fn drop(&mut self) {
            let url = reqwest::Url::parse(&url()).unwrap();
            let port = url.port().unwrap_or(1883).to_string();
            let status = std::process::Command::new("mosquitto_sub")
                .args(["-h", url.host_str().unwrap(), "-p", &port])
                .args(["-i", &self.client_id, "-t", &self.topic, "-E"])
                .stdout(Stdio::null())
                .status();
            if !status.is_ok_and(|s| s.success()) {
                eprintln!("the session {} was not removed", self.client_id);
            }
        }
    }

    /// `n` messages from the subscription, received as they come.
    async fn take(s: &mut dyn Subscription, n: usize) -> Vec<Received> {
        let mut got = Vec::new();
        while got.len() < n {
            let more = tokio::time::timeout(Duration::from_secs(10), s.receive(n - got.len()))
                .await
                .unwrap_or_else(|_| panic!("only {} of {n} messages: {got:?}", got.len()))
                .unwrap();
            assert!(!more.is_empty() && more.len() <= n - got.len(), "{more:?}");
            got.extend(more);
        }
        got
    }

    fn payloads(received: &[Received]) -> Vec<&str> {
        received.iter().map(|r| r.payload.as_str()).collect()
    }

    #[tokio::test]
    async fn a_batch_reaches_the_broker_in_order_with_qos_1() {
        let id = unique("target");
        let filter = format!("{id}/#");
        let reader = Session {
            client_id: format!("{id}-reader"),
            topic: filter.clone(),
        };
        // The reader's session first: it keeps what is published until read.
        let read = ["-c", "-i", &reader.client_id, "-q", "1", "-t", &filter];
        mosquitto("mosquitto_sub", &[&read[..], &["-E"]].concat(), None).await;

        let target = MqttTarget::new(
            &config(&url(), &format!("{id}/{{line}}"), &id),
            Path::new("."),
        );
        let line = |n: usize| ["a", "b"][n % 2];
        let payloads: Vec<String> = (0..5)
            .map(|n| json!({"line": line(n), "n": n}).to_string())
            .collect();
        let keys: Vec<String> = (0..5).map(|n| format!("s:i:{n}")).collect();
        let batch: Vec<Delivery> = keys
            .iter()
            .zip(&payloads)
            .map(|(k, p)| Delivery::new(k, p))
            .collect();
        target.deliver(&batch).await.unwrap();

        // A record its topic cannot be made for: nothing of its batch goes.
        let bad = json!({"line": "x/y"}).to_string();
        let e = target
            .deliver(&[batch[0], Delivery::new("s:i:9", &bad)])
            .await
            .unwrap_err();
        assert_eq!(e.class, FailureClass::Rejected, "{e:?}");
        assert!(
            e.message.contains("s:i:9") && e.message.contains("'line'"),
            "{e:?}"
        );
        // A wildcard in a topic to publish to (the broker would drop the
        // connection): refused the same way, naming the record.
        let wild = json!({"line": "a+"}).to_string();
        let e = target
            .deliver(&[batch[0], Delivery::new("s:i:10", &wild)])
            .await
            .unwrap_err();
        assert_eq!(e.class, FailureClass::Rejected, "{e:?}");
        assert!(
            e.message.contains("s:i:10") && e.message.contains("'+'"),
            "{e:?}"
        );

        // Another batch on the same connection: only its own PUBACKs count.
        target.deliver(&batch[..2]).await.unwrap();

        let got = mosquitto(
            "mosquitto_sub",
            &[&read[..], &["-C", "7", "-W", "10", "-F", "%q %t %p"]].concat(),
            None,
        )
        .await;
        let expected: Vec<String> = (0..5)
            .chain(0..2)
            .map(|n| format!("1 {id}/{} {}", line(n), payloads[n]))
            .collect();
        assert_eq!(got.lines().collect::<Vec<_>>(), expected);
    }

    #[tokio::test]
    async fn a_source_receives_in_order_and_gets_again_what_it_did_not_acknowledge() {
        let id = unique("source");
        let topic = format!("{id}/in");
        let _session = Session {
            client_id: id.clone(),
            topic: topic.clone(),
        };
        let source = MqttSource::new(&config(&url(), &topic, &id), Path::new("."));

        let mut s = source.subscribe().await.unwrap();
        publish(&topic, &[r#"{"n":1}"#, r#"{"n":2}"#, "plain"]).await;
        let got = take(&mut *s, 3).await;
        assert_eq!(payloads(&got), [r#"{"n":1}"#, r#"{"n":2}"#, r#""plain""#]);
        assert!(got.iter().all(|r| !r.redelivered), "{got:?}");
        s.ack().await.unwrap();
        drop(s);

        // Published while nobody is connected: the session keeps them. (Not
        // checked: that they come unmarked; the broker may not yet have
        // seen the last connection close, and sent them to it.)
        publish(&topic, &["4", "5"]).await;
        let mut s = source.subscribe().await.unwrap();
        assert_eq!(payloads(&take(&mut *s, 2).await), ["4", "5"]);
        drop(s);

        // Received but not acknowledged: they come again, marked.
        let mut s = source.subscribe().await.unwrap();
        let got = take(&mut *s, 2).await;
        assert_eq!(payloads(&got), ["4", "5"]);
        assert!(got.iter().all(|r| r.redelivered), "{got:?}");
        s.ack().await.unwrap();
        drop(s);

        // Acknowledged: nothing comes again before a new message.
        let mut s = source.subscribe().await.unwrap();
        publish(&topic, &["6"]).await;
        let got = take(&mut *s, 1).await;
        assert_eq!(payloads(&got), ["6"]);
        assert!(!got[0].redelivered);
        s.ack().await.unwrap();
    }

    #[tokio::test]
    async fn a_port_nobody_listens_on_is_unreachable() {
        let port = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().port()
        };
        let c = config(&format!("mqtt://127.0.0.1:{port}"), "t", "c");
        let e = probe(&c, Path::new(".")).await.unwrap_err();
        assert_eq!(e.class, FailureClass::Unreachable, "{e:?}");
        let target = MqttTarget::new(&c, Path::new("."));
        let e = target
            .deliver(&[Delivery::new("k", "{}")])
            .await
            .unwrap_err();
        assert_eq!(e.class, FailureClass::Unreachable, "{e:?}");
        let e = MqttSource::new(&c, Path::new("."))
            .subscribe()
            .await
            .err()
            .unwrap();
        assert_eq!(e.class, FailureClass::Unreachable, "{e:?}");
    }

    /// A broker of the test's own that takes only `sluice`/`right` (the
    /// shared one may take anyone): `None` when Mosquitto is not installed.
    struct PrivateBroker {
        url: String,
        _dir: tempfile::TempDir,
        _broker: tokio::process::Child,
    }

    async fn private_broker() -> Option<PrivateBroker> {
        let program = ["/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto"]
            .into_iter()
            .find(|p| Path::new(p).exists())?;
        let dir = tempfile::tempdir().unwrap();
        let passwords = dir.path().join("passwords");
        let made = std::process::Command::new("mosquitto_passwd")
            .arg("-c")
            .arg("-b")
            .arg(&passwords)
            .args(["sluice", "right"])
            .status()
            .ok()?;
        assert!(made.success());
        let port = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().port()
        };
        let conf = dir.path().join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!(
                "listener {port} 127.0.0.1\nallow_anonymous false\npassword_file {}\n\
                 persistence false\nlog_dest none\n",
                passwords.display()
            ),
        )
        .unwrap();
        let broker = Command::new(program)
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        // Ready once it takes connections.
        let address = format!("127.0.0.1:{port}");
        tokio::time::timeout(Duration::from_secs(10), async {
            while tokio::net::TcpStream::connect(&address).await.is_err() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .expect("the private broker listens");
        Some(PrivateBroker {
            url: format!("mqtt://{address}"),
            _dir: dir,
            _broker: broker,
        })
    }

    #[tokio::test]
    async fn refused_credentials_are_unauthorized_until_a_reauthorization() {
        // The shared broker allows anonymous access: there a wrong
        // password is accepted, so refusals are tested on a broker of our own.
        let Some(broker) = private_broker().await else {
            panic!(
                "mosquitto (the MQTT broker, on every machine of this project) is not installed"
            );
        };
        let id = unique("auth");
        let var = format!("SLUICE_TEST_MQTT_PASSWORD_{}", std::process::id());
        std::env::set_var(&var, "wrong-secret");
        let mut c = config(&broker.url, &format!("{id}/in"), &id);
        c.username = Some("sluice".into());
        c.password_env = Some(var);

        // Mosquitto 2.0 answers a wrong password with CONNACK 5.
        let e = probe(&c, Path::new(".")).await.unwrap_err();
        assert_eq!(e.class, FailureClass::Unauthorized, "{e:?}");
        assert!(!e.message.contains("wrong-secret"), "{e:?}");

        let right = || Credentials::Basic {
            username: "sluice".into(),
            password: "right".into(),
        };
        let target = MqttTarget::new(&c, Path::new("."));
        let e = target
            .deliver(&[Delivery::new("k", "{}")])
            .await
            .unwrap_err();
        assert_eq!(e.class, FailureClass::Unauthorized, "{e:?}");
        target.set_credentials(right()).unwrap();
        target.deliver(&[Delivery::new("k", "{}")]).await.unwrap();
        assert!(target.probe().await.is_ok());

        let source = MqttSource::new(&c, Path::new("."));
        let e = source.subscribe().await.err().unwrap();
        assert_eq!(e.class, FailureClass::Unauthorized, "{e:?}");
        source.set_credentials(right()).unwrap();
        assert!(source.subscribe().await.is_ok());
        assert!(source
            .set_credentials(Credentials::Bearer("t".into()))
            .is_err());
    }

    #[tokio::test]
    async fn probe_connects_subscribes_and_says_so() {
        let id = unique("probe");
        let c = config(&url(), &format!("{id}/+/in"), &id);
        let answer = probe(&c, Path::new(".")).await.unwrap();
        assert!(answer.contains("CONNACK 0"), "{answer}");
        assert!(
            answer.contains(&format!("'{id}/+/in' with QoS 1")),
            "{answer}"
        );

        // A target's topic that takes record fields: connected, nothing
        // subscribed.
        let answer = probe(
            &config(&url(), &format!("{id}/{{line}}"), &id),
            Path::new("."),
        )
        .await
        .unwrap();
        assert!(!answer.contains("subscription"), "{answer}");

        // A filter no broker takes (the configuration refuses it too): its
        // failure for good, before anything is sent.
        let mut bad = c.clone();
        bad.topic = Some(format!("{id}/#/in"));
        let e = probe(&bad, Path::new(".")).await.unwrap_err();
        assert_eq!(e.class, FailureClass::Rejected, "{e:?}");

        // A password whose variable is not set.
        let mut c = c;
        c.username = Some("sluice".into());
        c.password_env = Some(format!("SLUICE_TEST_{}", std::process::id()));
        let e = probe(&c, Path::new(".")).await.unwrap_err();
        assert_eq!(e.class, FailureClass::Unauthorized, "{e:?}");
    }

    /// A Mosquitto of the test's own that speaks only TLS (stopped when
    /// dropped).
    struct TlsBroker {
        port: u16,
        child: std::process::Child,
    }

    impl Drop for TlsBroker {
        fn drop(&mut self) {
            self.child.kill().ok();
            self.child.wait().ok();
        }
    }

    /// Starts a [`TlsBroker`] with a certificate of a test CA whose files
    /// are in `dir` (`ca.pem`, and `client.pem`/`client-key.pem` for
    /// mutual TLS); with `mutual` it requires a client certificate of that
    /// CA; with `password` it takes only `sluice` with that password.
    /// Returns once it takes connections.
    async fn tls_broker(dir: &Path, mutual: bool, password: Option<&str>) -> TlsBroker {
        let program = ["/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .unwrap_or_else(|| {
                panic!(
                    "mosquitto (the MQTT broker, on every machine of this project) is not \
                     installed in /usr/sbin or /usr/local/sbin: the mqtts tests need it"
                )
            });
        let ca = TestCa::new(dir);
        let (cert, key) = ca.issue("server", false);
        ca.issue("client", true);
        let port = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().port()
        };
        let log = dir.join("mosquitto.log");
        // Started by root, Mosquitto runs as the user `mosquitto`, which
        // could not read the files in this folder: `user root` keeps it
        // (for anyone else it changes nothing).
        let mut conf = format!(
            "listener {port} 127.0.0.1\ncafile {}\ncertfile {}\nkeyfile {}\n\
             persistence false\nlog_dest file {}\nuser root\n",
            dir.join("ca.pem").display(),
            cert.display(),
            key.display(),
            log.display()
        );
        if mutual {
            conf.push_str("require_certificate true\n");
        }
        match password {
            None => conf.push_str("allow_anonymous true\n"),
            Some(password) => {
                let file = dir.join("passwords");
                let made = std::process::Command::new("mosquitto_passwd")
                    .arg("-c")
                    .arg("-b")
                    .arg(&file)
                    .args(["sluice", password])
                    .status()
                    .unwrap_or_else(|e| panic!("mosquitto_passwd (Mosquitto's own): {e}"));
                assert!(made.success(), "mosquitto_passwd: {made}");
                conf.push_str(&format!(
                    "allow_anonymous false\npassword_file {}\n",
                    file.display()
                ));
            }
        }
        let path = dir.join("mosquitto.conf");
        std::fs::write(&path, conf).unwrap();
        let child = std::process::Command::new(program)
            .arg("-c")
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{program}: {e}"));
        let mut broker = TlsBroker { port, child };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Some(status)) = broker.child.try_wait() {
                panic!(
                    "{program} ended ({status}): {}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                return broker;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{program} did not listen on {port} within 10 s"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The settings of an endpoint on the TLS broker at `host`; the TLS
    /// files are relative to `dir` (the configuration's folder), as
    /// configured.
    fn tls_config(
        broker: &TlsBroker,
        host: &str,
        dir: &Path,
        id: &str,
        keys: &str,
    ) -> BrokerConfig {
        let c: BrokerConfig = toml::from_str(&format!(
            "url = \"mqtts://{host}:{}\"\ntopic = \"{id}/in\"\nclient_id = \"{id}\"\n\
             timeout = \"5s\"\n{keys}",
            broker.port
        ))
        .unwrap();
        assert_eq!(c.validate(KIND, dir), []);
        c
    }

    /// One message through the broker: a source subscribed, a target's
    /// publish acknowledged (PUBACK), the source receiving and
    /// acknowledging it.
    async fn round_trip(c: &BrokerConfig, dir: &Path) {
        let source = MqttSource::new(c, dir);
        let mut s = source.subscribe().await.unwrap();
        let target = MqttTarget::new(c, dir);
        target
            .deliver(&[Delivery::new("s:i:1", r#"{"n":1}"#)])
            .await
            .unwrap();
        let got = take(&mut *s, 1).await;
        assert_eq!(payloads(&got), [r#"{"n":1}"#]);
        assert!(!got[0].redelivered, "{got:?}");
        s.ack().await.unwrap();
    }

    #[tokio::test]
    async fn over_tls_with_ca_file_a_target_gets_its_puback_and_a_source_receives() {
        let dir = tempfile::tempdir().unwrap();
        let broker = tls_broker(dir.path(), false, None).await;
        let id = unique("tls");
        let c = tls_config(
            &broker,
            "127.0.0.1",
            dir.path(),
            &id,
            "ca_file = \"ca.pem\"",
        );
        let said = probe(&c, dir.path()).await.unwrap();
        assert!(
            said.starts_with(&format!("mqtt mqtts://127.0.0.1:{} accepted", broker.port))
                && said.contains(&format!("granted the subscription to '{id}/in' with QoS 1")),
            "{said}"
        );
        round_trip(&c, dir.path()).await;
        Target::probe(&MqttTarget::new(&c, dir.path()))
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn over_tls_without_ca_file_the_test_ca_is_untrusted_and_ca_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let broker = tls_broker(dir.path(), false, None).await;
        let c = tls_config(&broker, "127.0.0.1", dir.path(), &unique("untrusted"), "");
        let untrusted = |e: DeliveryError| {
            assert_eq!(e.class, FailureClass::Untrusted, "{e:?}");
            assert!(
                e.message.contains("the certificate is not trusted")
                    && e.message.contains("unknown issuer")
                    && e.message.contains("ca_file"),
                "{e:?}"
            );
        };
        untrusted(probe(&c, dir.path()).await.unwrap_err());
        untrusted(
            MqttTarget::new(&c, dir.path())
                .deliver(&[Delivery::new("s:i:1", "{}")])
                .await
                .unwrap_err(),
        );
        untrusted(
            MqttSource::new(&c, dir.path())
                .subscribe()
                .await
                .err()
                .unwrap(),
        );
    }

    #[tokio::test]
    async fn mutual_tls_presents_client_cert_and_client_key_and_without_them_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let broker = tls_broker(dir.path(), true, None).await;
        let id = unique("mutual");
        // A DNS name this time.
        let c = |keys: &str| {
            tls_config(
                &broker,
                "localhost",
                dir.path(),
                &id,
                &format!("ca_file = \"ca.pem\"\n{keys}"),
            )
        };
        let mutual = c("client_cert = \"client.pem\"\nclient_key = \"client-key.pem\"");
        probe(&mutual, dir.path()).await.unwrap();
        round_trip(&mutual, dir.path()).await;

        // Without our certificate the broker refuses the connection.
        let without = c("");
        let refused = |e: DeliveryError| {
            assert_eq!(e.class, FailureClass::Untrusted, "{e:?}");
            assert!(e.message.contains("client_cert and client_key"), "{e:?}");
        };
        refused(probe(&without, dir.path()).await.unwrap_err());
        refused(
            MqttTarget::new(&without, dir.path())
                .deliver(&[Delivery::new("s:i:2", "{}")])
                .await
                .unwrap_err(),
        );
        refused(
            MqttSource::new(&without, dir.path())
                .subscribe()
                .await
                .err()
                .unwrap(),
        );
    }

    #[tokio::test]
    async fn no_tls_failure_shows_the_password() {
        const SECRET: &str = "tls-s3cret-pw";
        let dir = tempfile::tempdir().unwrap();
        let broker = tls_broker(dir.path(), true, Some(SECRET)).await;
        let var = format!("SLUICE_TEST_MQTT_TLS_PASSWORD_{}", std::process::id());
        std::env::set_var(&var, SECRET);
        let id = unique("secret");
        let c = |keys: &str| {
            tls_config(
                &broker,
                "127.0.0.1",
                dir.path(),
                &id,
                &format!("username = \"sluice\"\npassword_env = \"{var}\"\n{keys}"),
            )
        };
        let hidden = |e: DeliveryError, class: FailureClass, says: &str| {
            assert_eq!(e.class, class, "{e:?}");
            assert!(e.message.contains(says), "{e:?}");
            assert!(!format!("{e:?}").contains(SECRET), "{e:?}");
        };
        // The broker's certificate not trusted.
        let untrusted = c("");
        hidden(
            probe(&untrusted, dir.path()).await.unwrap_err(),
            FailureClass::Untrusted,
            "ca_file",
        );
        hidden(
            MqttTarget::new(&untrusted, dir.path())
                .deliver(&[Delivery::new("s:i:1", "{}")])
                .await
                .unwrap_err(),
            FailureClass::Untrusted,
            "ca_file",
        );
        // Ours refused.
        hidden(
            probe(&c("ca_file = \"ca.pem\""), dir.path())
                .await
                .unwrap_err(),
            FailureClass::Untrusted,
            "client_cert and client_key",
        );
        // TLS passes, the password does not: refused by the broker.
        let mutual = c(
            "ca_file = \"ca.pem\"\nclient_cert = \"client.pem\"\nclient_key = \"client-key.pem\"",
        );
        let target = MqttTarget::new(&mutual, dir.path());
        let wrong = format!("not-{SECRET}");
        target
            .set_credentials(Credentials::Basic {
                username: "sluice".into(),
                password: wrong.clone(),
            })
            .unwrap();
        let e = target
            .deliver(&[Delivery::new("s:i:1", "{}")])
            .await
            .unwrap_err();
        assert!(!e.message.contains(&wrong), "{e:?}");
        hidden(e, FailureClass::Unauthorized, "mqtts://127.0.0.1");
        // The right one (the configuration's).
        let said = probe(&mutual, dir.path()).await.unwrap();
        assert!(!said.contains(SECRET), "{said}");
        round_trip(&mutual, dir.path()).await;
    }
}
