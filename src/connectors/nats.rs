//! `kind = "nats"`: NATS JetStream through async-nats, as a target (publish
//! to `subject`) and as a broker source (a durable pull consumer on
//! `stream`). See [`super::broker`] for the keys and how a broker source
//! hands messages to the engine.
//!
//! # What the broker confirms
//! - **Target.** Every record of a batch is published through JetStream
//!   with the header `Nats-Msg-Id` = the transaction's key
//!   (`{site}:{integration}:{seq}`); then every publish acknowledgement is
//!   awaited (all within `timeout`) before the batch counts as delivered.
//!   A batch sent again after a failure (or a crash) within the stream's
//!   duplicate window is stored once: JetStream drops the repeats and
//!   answers `duplicate`, which is success. No stream takes the subject
//!   (no responders): Rejected with the server's words; sluice declares
//!   no stream.
//! - **Source.** A durable pull consumer named `consumer` (default
//!   `sluice`) on `stream`: taken as it is when it exists, else made with
//!   deliver policy All (it starts at the beginning of the stream) and
//!   explicit acks. `ack` acknowledges every message `receive` gave: all
//!   but the last by a plain ack, the last by a double ack whose answer
//!   comes once the server has handled it and (acks of one connection being
//!   handled in order) every ack before it. What is not acknowledged comes
//!   again after the consumer's `ack_wait`, with a delivery count above 1:
//!   `redelivered`. The count alone is not a sure sign: for a delivery to
//!   a client that has gone (a pull request of a killed sluice still
//!   waiting on the server) the server lowers the count again, and the
//!   message comes with a count of 1 though that sluice may have queued
//!   it (the consumer's own "last delivered" goes back with it). So a
//!   message that was in the stream when the subscription began, within
//!   two pull requests (2000 messages) above the consumer's acknowledgement
//!   floor, is `redelivered` too when the consumer had messages waiting
//!   for their acknowledgement: what an earlier sluice queued and did not
//!   acknowledge is one batch of its one request. Messages are pulled by requests of sluice's own
//!   ([`Pull`]: up to 1000 at a time, one request waiting at a time, a
//!   heartbeat every 5 s while it waits).
//!
//! # Connections
//! One connection per target, made on first use and kept; one per
//! subscription. The client does not reconnect by itself
//! (`max_reconnects(1)`: the first connection is its only attempt): a lost
//! connection fails the delivery or `receive` in progress (Unreachable),
//! the target drops it and the next batch connects anew, and the engine
//! subscribes anew. So a connection is never silently reconnecting behind
//! a batch that waits for its acknowledgements, and none keeps trying in
//! the background after sluice let it go.

use std::error::Error as StdError;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_nats::jetstream::context::{PublishError, PublishErrorKind};
use async_nats::jetstream::{self, consumer::pull};
use async_nats::{Client, ConnectErrorKind, ConnectOptions};
use async_trait::async_trait;
use futures_util::{FutureExt, StreamExt};

use super::broker::{
    record_of, BrokerConfig, BrokerKind, Login, Received, Subscribe, Subscription,
};
use super::template::FieldTemplate;
use super::{Credentials, Delivered, Delivery, DeliveryError, FailureClass, Target};
use crate::redact;
use crate::tls;

const KIND: BrokerKind = BrokerKind::Nats;

/// The header JetStream deduplicates by.
const MSG_ID: &str = "Nats-Msg-Id";

fn failure(class: FailureClass, shown: &str, message: impl std::fmt::Display) -> DeliveryError {
    DeliveryError {
        class,
        message: format!("nats {shown}: {message}"),
        retry_after: None,
    }
}

/// Opens a connection with the user and password of `login` (a
/// reauthorization's, else the configuration's).
async fn connect(
    config: &BrokerConfig,
    base: &Path,
    login: &Login,
) -> Result<Client, DeliveryError> {
    let shown = redact::url(&config.url);
    let (user, password) = login.get(config)?;
    let mut options = ConnectOptions::new()
        .name("sluice")
        .connection_timeout(config.timeout())
        .request_timeout(Some(config.timeout()))
        .max_reconnects(1)
        .ignore_discovered_servers();
    if let Some(user) = user {
        options = options.user_and_password(user, password.unwrap_or_default());
    }
    if config.uses_tls(KIND) {
        let tls = config
            .tls(base)
            .map_err(|e| failure(FailureClass::Untrusted, &shown, e))?;
        options = options.tls_client_config(tls).require_tls(true);
    }
    options
        .connect(config.url.as_str())
        .await
        .map_err(|e| connect_failure(&shown, config.uses_tls(KIND), &e))
}

/// Why a connection could not be made: TLS refused either way, the
/// credentials refused, or no connection at all. `tls_url`: whether the
/// url is `tls://`; with `nats://` the client still takes up TLS when the
/// server requires it (its own settings: the platform's roots, no client
/// certificate), and the TLS keys are refused with such a url.
fn connect_failure(shown: &str, tls_url: bool, e: &async_nats::ConnectError) -> DeliveryError {
    if let Some(tls) = tls::failure(e) {
        let hint = match tls_url {
            false => {
                " (the server requires TLS: use a tls:// url, with which ca_file, client_cert \
                 and client_key apply)"
            }
            true => tls.hint(),
        };
        return failure(FailureClass::Untrusted, shown, format!("{tls}{hint}"));
    }
    let class = match e.kind() {
        ConnectErrorKind::AuthorizationViolation | ConnectErrorKind::Authentication => {
            FailureClass::Unauthorized
        }
        ConnectErrorKind::Tls => FailureClass::Untrusted,
        _ => FailureClass::Unreachable,
    };
    failure(class, shown, e)
}

/// The class of a JetStream API error code (an HTTP-like status).
fn api_class(code: usize) -> FailureClass {
    match code {
        401 | 403 => FailureClass::Unauthorized,
        408 | 429 | 500..=599 => FailureClass::Intermittent,
        _ => FailureClass::Rejected,
    }
}

/// The class of a failed JetStream API request, from its chain of causes:
/// the server's error code, or how the request itself failed.
fn request_class(e: &(dyn StdError + 'static)) -> FailureClass {
    let mut next = Some(e);
    while let Some(link) = next {
        if let Some(api) = link.downcast_ref::<jetstream::Error>() {
            return api_class(api.code());
        }
        if let Some(r) = link.downcast_ref::<jetstream::context::RequestError>() {
            use jetstream::context::RequestErrorKind as K;
            match r.kind() {
                K::TimedOut => return FailureClass::NoAnswer,
                // JetStream is not enabled, or not yet up.
                K::NoResponders => return FailureClass::Intermittent,
                K::InvalidSubject => return FailureClass::Rejected,
                K::Other => {}
            }
        }
        if let Some(r) = link.downcast_ref::<async_nats::RequestError>() {
            use async_nats::RequestErrorKind as K;
            match r.kind() {
                K::TimedOut => return FailureClass::NoAnswer,
                K::NoResponders => return FailureClass::Intermittent,
                K::InvalidSubject | K::MaxPayloadExceeded => return FailureClass::Rejected,
                // The request could not be sent: the connection is gone.
                K::Other => return FailureClass::Unreachable,
            }
        }
        next = link.source();
    }
    FailureClass::Intermittent
}

/// The stream `name`, or why not (a missing stream is Rejected: sluice
/// makes none).
async fn stream(
    js: &jetstream::Context,
    name: &str,
    shown: &str,
) -> Result<jetstream::stream::Stream, DeliveryError> {
    use jetstream::context::GetStreamErrorKind as K;
    js.get_stream(name).await.map_err(|e| {
        let class = match e.kind() {
            K::JetStream(api) => api_class(api.code()),
            K::EmptyName | K::InvalidStreamName => FailureClass::Rejected,
            K::Request => request_class(&e),
        };
        failure(class, shown, format!("stream '{name}': {e}"))
    })
}

/// A health test: connects and authenticates; for a source, the stream
/// must exist; for a target with a fixed subject, a stream must take it.
pub async fn probe(config: &BrokerConfig, base: &Path) -> Result<String, DeliveryError> {
    check(config, base, &Login::default()).await
}

async fn check(config: &BrokerConfig, base: &Path, login: &Login) -> Result<String, DeliveryError> {
    let shown = redact::url(&config.url);
    let client = connect(config, base, login).await?;
    let info = client.server_info();
    let mut said = vec![format!(
        "{shown}: NATS {} ({})",
        info.version, info.server_name
    )];
    let js = jetstream::new(client);
    if let Some(name) = config.stream.as_deref().filter(|_| config.is_source(KIND)) {
        let mut s = stream(&js, name, &shown).await?;
        let state = s
            .info()
            .await
            .map(|i| i.state.messages)
            .map_err(|e| failure(request_class(&e), &shown, format!("stream '{name}': {e}")))?;
        said.push(format!("stream '{name}' holds {state} messages"));
    }
    if config.is_target(KIND) {
        let template = config.publish_template(KIND);
        if template.has_placeholders() {
            // The subject depends on the record: connecting and logging in
            // is the test (the account's details are not asked for: a 2.9
            // server answers in a shape this client does not read).
            said.push(format!(
                "subjects '{}' are made per record",
                config.subject.as_deref().unwrap_or_default()
            ));
        } else {
            let subject = template.sample();
            use jetstream::context::GetStreamByNameErrorKind as K;
            // Reached and logged in: the endpoint is up. No stream for the
            // subject is said, not failed: each publish to it fails for
            // good, with the server's words, and `on_error` decides.
            match js.stream_by_subject(subject.as_str()).await {
                Ok(name) => said.push(format!("subject '{subject}' goes to stream '{name}'")),
                Err(e) if matches!(e.kind(), K::NotFound | K::InvalidSubject) => {
                    said.push(format!(
                        "no stream takes subject '{subject}': publishing to it fails \
                         (sluice declares no stream)"
                    ))
                }
                Err(e) => {
                    let class = match e.kind() {
                        K::JetStream(api) => api_class(api.code()),
                        _ => request_class(&e),
                    };
                    return Err(failure(class, &shown, format!("subject '{subject}': {e}")));
                }
            }
        }
    }
    Ok(said.join("; "))
}

/// Publishes to `subject` through JetStream.
pub struct NatsTarget {
    config: BrokerConfig,
    base: PathBuf,
    shown: String,
    template: FieldTemplate,
    login: Login,
    /// Bumped by each reauthorization: a connection made before it is
    /// dropped at the next batch.
    login_generation: AtomicU64,
    /// The connection, kept between batches; dropped after a connection
    /// error, and made again by the next batch. Held for the whole of a
    /// batch, so batches are published one after another, in order.
    conn: tokio::sync::Mutex<Option<Conn>>,
}

struct Conn {
    js: jetstream::Context,
    /// The `login_generation` it was made with.
    generation: u64,
}

impl NatsTarget {
    pub fn new(config: &BrokerConfig, base: &Path) -> NatsTarget {
        NatsTarget {
            config: config.clone(),
            base: base.to_path_buf(),
            shown: redact::url(&config.url),
            template: config.publish_template(KIND),
            login: Login::default(),
            login_generation: AtomicU64::new(0),
            conn: tokio::sync::Mutex::new(None),
        }
    }

    /// The connection kept, or a new one.
    async fn connection<'a>(
        &self,
        slot: &'a mut Option<Conn>,
    ) -> Result<&'a mut Conn, DeliveryError> {
        let generation = self.login_generation.load(Ordering::SeqCst);
        let kept = slot.take().filter(|c| {
            c.generation == generation
                && c.js.client().connection_state() != async_nats::connection::State::Disconnected
        });
        let conn = match kept {
            Some(conn) => conn,
            None => {
                let client = connect(&self.config, &self.base, &self.login).await?;
                let timeout = self.config.timeout();
                // Room for a whole batch's acknowledgements in flight, and
                // for those of a batch given up on (their permits are held
                // until the acknowledgement or `timeout`).
                let js = jetstream::ContextBuilder::new()
                    .timeout(timeout)
                    .ack_timeout(timeout)
                    .max_ack_inflight(self.config.batch.max(1) * 2)
                    .build(client);
                Conn { js, generation }
            }
        };
        Ok(slot.insert(conn))
    }

    /// The subject of each record; the first record it cannot be made for
    /// fails the batch (for good) before anything is published.
    fn subjects(&self, batch: &[Delivery<'_>]) -> Result<Vec<String>, DeliveryError> {
        batch
            .iter()
            .map(|d| {
                let record = if self.template.has_fields() {
                    Some(
                        serde_json::from_str::<serde_json::Value>(d.payload).map_err(|_| {
                            failure(
                                FailureClass::Rejected,
                                &self.shown,
                                format!("{}: the record is not JSON", d.key),
                            )
                        })?,
                    )
                } else {
                    None
                };
                self.config
                    .publish_name(KIND, &self.template, record.as_ref())
                    .map_err(|e| {
                        failure(
                            FailureClass::Rejected,
                            &self.shown,
                            format!("{}: {e}", d.key),
                        )
                    })
            })
            .collect()
    }

    /// Publishes every record, then awaits every acknowledgement.
    async fn publish(
        &self,
        js: &jetstream::Context,
        batch: &[Delivery<'_>],
        subjects: &[String],
    ) -> Result<(), DeliveryError> {
        let mut acks = Vec::with_capacity(batch.len());
        for (d, subject) in batch.iter().zip(subjects) {
            let mut headers = async_nats::HeaderMap::new();
            headers.insert(MSG_ID, d.key);
            let ack = js
                .publish_with_headers(subject.clone(), headers, d.payload.to_string().into())
                .await
                .map_err(|e| self.publish_failure(subject, &e))?;
            acks.push((subject, ack));
        }
        for (subject, ack) in acks {
            ack.await.map_err(|e| self.publish_failure(subject, &e))?;
        }
        Ok(())
    }

    fn publish_failure(&self, subject: &str, e: &PublishError) -> DeliveryError {
        let class = match e.kind() {
            PublishErrorKind::StreamNotFound => {
                return failure(
                    FailureClass::Rejected,
                    &self.shown,
                    format!(
                        "no stream takes subject '{subject}' ({e}: the server had no responders); \
                         sluice declares no stream"
                    ),
                )
            }
            PublishErrorKind::TimedOut => FailureClass::NoAnswer,
            // The acknowledgement's channel closed: the connection is gone.
            PublishErrorKind::BrokenPipe => FailureClass::Unreachable,
            PublishErrorKind::MaxPayloadExceeded => FailureClass::Rejected,
            PublishErrorKind::MaxAckPending => FailureClass::Intermittent,
            PublishErrorKind::WrongLastMessageId
            | PublishErrorKind::WrongLastSequence
            | PublishErrorKind::Other => match e.source() {
                Some(source) => match source.downcast_ref::<jetstream::Error>() {
                    Some(api) => api_class(api.code()),
                    // Not sent: the client's connection task has ended.
                    None => FailureClass::Unreachable,
                },
                None => FailureClass::Intermittent,
            },
        };
        failure(class, &self.shown, format!("publish to '{subject}': {e}"))
    }
}

#[async_trait]
impl Target for NatsTarget {
    fn batch_size(&self) -> usize {
        self.config.batch
    }

    async fn deliver(&self, batch: &[Delivery<'_>]) -> Result<Delivered, DeliveryError> {
        if batch.is_empty() {
            return Ok(Delivered::default());
        }
        let subjects = self.subjects(batch)?;
        let mut slot = self.conn.lock().await;
        let conn = self.connection(&mut slot).await?;
        let timeout = self.config.timeout();
        let result =
            match tokio::time::timeout(timeout, self.publish(&conn.js, batch, &subjects)).await {
                Ok(result) => result,
                Err(_) => Err(failure(
                    FailureClass::NoAnswer,
                    &self.shown,
                    format!(
                        "the {} acknowledgements did not all come within {timeout:?}",
                        batch.len()
                    ),
                )),
            };
        if let Err(e) = &result {
            if matches!(e.class, FailureClass::Unreachable | FailureClass::NoAnswer) {
                *slot = None;
            }
        }
        result.map(|()| Delivered::default())
    }

    async fn probe(&self) -> Result<String, DeliveryError> {
        check(&self.config, &self.base, &self.login).await
    }

    fn set_credentials(&self, credentials: Credentials) -> Result<(), String> {
        self.login.set(credentials)?;
        self.login_generation.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

/// Reads `stream` through a durable pull consumer.
pub struct NatsSource {
    config: BrokerConfig,
    base: PathBuf,
    login: Login,
}

impl NatsSource {
    pub fn new(config: &BrokerConfig, base: &Path) -> NatsSource {
        NatsSource {
            config: config.clone(),
            base: base.to_path_buf(),
            login: Login::default(),
        }
    }
}

#[async_trait]
impl Subscribe for NatsSource {
    async fn probe(&self) -> Result<String, DeliveryError> {
        check(&self.config, &self.base, &self.login).await
    }

    async fn subscribe(&self) -> Result<Box<dyn Subscription>, DeliveryError> {
        let shown = redact::url(&self.config.url);
        let name = self.config.stream.as_deref().unwrap_or_default();
        let durable = self.config.consumer();
        let client = connect(&self.config, &self.base, &self.login).await?;
        let js = jetstream::new(client);
        let stream = stream(&js, name, &shown).await?;
        let stream_last = stream.cached_info().state.last_sequence;
        let consumer: jetstream::consumer::PullConsumer = stream
            .get_or_create_consumer(
                durable,
                pull::Config {
                    durable_name: Some(durable.to_string()),
                    deliver_policy: jetstream::consumer::DeliverPolicy::All,
                    ack_policy: jetstream::consumer::AckPolicy::Explicit,
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| {
                use jetstream::stream::ConsumerErrorKind as K;
                let class = match e.kind() {
                    K::JetStream(api) => api_class(api.code()),
                    K::InvalidConsumerType | K::InvalidName => FailureClass::Rejected,
                    K::TimedOut => FailureClass::NoAnswer,
                    K::Request | K::Other => request_class(&e),
                };
                failure(
                    class,
                    &shown,
                    format!("consumer '{durable}' of stream '{name}': {e}"),
                )
            })?;
        let pull = Pull::open(&js, &consumer, &shown).await?;
        // What an earlier subscription (a sluice since killed, the node
        // that sent before) may have queued without acknowledging it: one
        // batch, taken from its one pull request, so within two requests
        // above the acknowledgement floor, and in the stream already; and
        // nothing when no message waits for its acknowledgement.
        let info = consumer.cached_info();
        let seen_before = match info.num_ack_pending {
            0 => 0,
            _ => stream_last.min(info.ack_floor.stream_sequence + 2 * PULL_BATCH as u64),
        };
        Ok(Box::new(NatsSubscription {
            consumer,
            pull,
            seen_before,
            unacked: Vec::new(),
            failed: None,
            timeout: self.config.timeout(),
            shown,
        }))
    }

    fn set_credentials(&self, credentials: Credentials) -> Result<(), String> {
        self.login.set(credentials)
    }
}

/// Messages of a pull request at most.
const PULL_BATCH: usize = 1000;

/// How long a pull request waits on the server for messages (then it ends
/// with a 408 and the next is sent).
const PULL_EXPIRES: Duration = Duration::from_secs(30);

/// How often the server says a waiting pull request is alive; two without
/// a word and the subscription fails (NoAnswer).
const PULL_HEARTBEAT: Duration = Duration::from_secs(5);

/// A durable pull consumer's messages, by pull requests of our own on one
/// inbox: one request outstanding at a time, the next sent once the server
/// has delivered all it asked for or ended it (a 408 when it expires, a
/// 409 when it is cut short).
///
/// async-nats's `messages()` keeps two requests in flight and counts what
/// it still expects; a message that arrives before the answer of the
/// request it belongs to is seen (a loaded machine) is not counted, the
/// count drifts up, and it stops asking while the server has nothing
/// waiting: 30 s of silence, then "missed idle heartbeat" (seen at 100,000
/// messages, one run in two: the consumer said 0 pull requests waiting, 0
/// acknowledgements pending, 70,000 messages not delivered).
struct Pull {
    context: jetstream::Context,
    /// `$JS.API.CONSUMER.MSG.NEXT.{stream}.{consumer}`.
    next: String,
    inbox: String,
    messages: async_nats::Subscriber,
    /// Messages the outstanding request may still bring; 0: none is.
    outstanding: usize,
    /// [`PULL_EXPIRES`] and [`PULL_HEARTBEAT`] (shorter in tests).
    expires: Duration,
    heartbeat: Duration,
    shown: String,
}

impl Pull {
    async fn open(
        js: &jetstream::Context,
        consumer: &jetstream::consumer::PullConsumer,
        shown: &str,
    ) -> Result<Pull, DeliveryError> {
        let info = consumer.cached_info();
        let client = js.client();
        let inbox = client.new_inbox();
        let messages = client.subscribe(inbox.clone()).await.map_err(|e| {
            failure(
                FailureClass::Unreachable,
                shown,
                format!("consumer '{}': {e}", info.name),
            )
        })?;
        Ok(Pull {
            context: js.clone(),
            next: format!(
                "$JS.API.CONSUMER.MSG.NEXT.{}.{}",
                info.stream_name, info.name
            ),
            inbox,
            messages,
            outstanding: 0,
            expires: PULL_EXPIRES,
            heartbeat: PULL_HEARTBEAT,
            shown: shown.to_owned(),
        })
    }

    /// Asks the server for up to [`PULL_BATCH`] messages.
    async fn request(&mut self) -> Result<(), DeliveryError> {
        let request = serde_json::json!({
            "batch": PULL_BATCH,
            "expires": self.expires.as_nanos() as u64,
            "idle_heartbeat": self.heartbeat.as_nanos() as u64,
        });
        self.context
            .client()
            .publish_with_reply(
                self.next.clone(),
                self.inbox.clone(),
                request.to_string().into(),
            )
            .await
            .map_err(|e| {
                // The client's connection task has ended: the connection
                // is lost.
                failure(
                    FailureClass::Unreachable,
                    &self.shown,
                    format!("pull request: {e}"),
                )
            })?;
        self.outstanding = PULL_BATCH;
        Ok(())
    }

    /// The next message: waits for one as long as the server's heartbeats
    /// say the request waits.
    async fn next(&mut self) -> Result<jetstream::Message, DeliveryError> {
        loop {
            if self.outstanding == 0 {
                self.request().await?;
            }
            let silence = 2 * self.heartbeat;
            let message = tokio::time::timeout(silence, self.messages.next())
                .await
                .map_err(|_| {
                    failure(
                        FailureClass::NoAnswer,
                        &self.shown,
                        format!(
                            "no message and no heartbeat for {silence:?} while a pull request \
                             waits"
                        ),
                    )
                })?;
            if let Some(message) = self.take(message)? {
                return Ok(message);
            }
        }
    }

    /// A message already arrived, without waiting (nor asking for more).
    fn ready(&mut self) -> Option<Result<jetstream::Message, DeliveryError>> {
        while self.outstanding > 0 {
            let arrived = self.messages.next().now_or_never()?;
            match self.take(arrived) {
                Ok(Some(message)) => return Some(Ok(message)),
                Ok(None) => {}
                Err(e) => return Some(Err(e)),
            }
        }
        None
    }

    /// What arrived on the inbox: a message, or `None` for a heartbeat or
    /// the end of the request; `Err` for the end of the subscription.
    fn take(
        &mut self,
        arrived: Option<async_nats::Message>,
    ) -> Result<Option<jetstream::Message>, DeliveryError> {
        use async_nats::StatusCode;
        let Some(message) = arrived else {
            return Err(failure(
                FailureClass::Unreachable,
                &self.shown,
                "the connection was lost",
            ));
        };
        let status = match message.status {
            None | Some(StatusCode::OK) => {
                self.outstanding = self.outstanding.saturating_sub(1);
                return Ok(Some(jetstream::Message {
                    message,
                    context: self.context.clone(),
                }));
            }
            Some(StatusCode::IDLE_HEARTBEAT) => return Ok(None),
            Some(status) => status,
        };
        let why = message.description.as_deref().unwrap_or_default();
        // Made anew, a consumer would start at the beginning of the stream:
        // a person decides. A request the consumer's limits refuse is
        // refused again.
        let refused = why == "Consumer Deleted"
            || why == "Consumer is push based"
            || why.starts_with("Exceeded MaxRequest");
        let class = match status {
            _ if refused => FailureClass::Rejected,
            // Too many requests waiting on the consumer (other clients'):
            // tried again after a back-off, not at once.
            _ if why.starts_with("Exceeded MaxWaiting") => FailureClass::Intermittent,
            // The request expired or was ended (its batch completed, or cut
            // short): the next one is sent.
            StatusCode::TIMEOUT | StatusCode::REQUEST_TERMINATED => {
                self.outstanding = 0;
                return Ok(None);
            }
            _ => FailureClass::Intermittent,
        };
        Err(failure(
            class,
            &self.shown,
            format!("pull request answered {status}: {why}"),
        ))
    }
}

/// An open pull consumer. Dropping it closes its connection; what it did
/// not acknowledge comes again after the consumer's `ack_wait`.
struct NatsSubscription {
    /// Asked for its state when the messages stop.
    consumer: jetstream::consumer::PullConsumer,
    pull: Pull,
    /// A message up to this stream sequence may have been queued by an
    /// earlier subscription without being acknowledged.
    seen_before: u64,
    /// Given by `receive`, not acknowledged yet, in order.
    unacked: Vec<jetstream::Message>,
    /// An error met after `receive` had messages to give: given by the
    /// next `receive`.
    failed: Option<DeliveryError>,
    timeout: Duration,
    shown: String,
}

impl NatsSubscription {
    /// `e` with the consumer's state as the server tells it, when it
    /// answers within a second: why messages stopped coming.
    async fn with_state(&mut self, mut e: DeliveryError) -> DeliveryError {
        let info = tokio::time::timeout(Duration::from_secs(1), self.consumer.info()).await;
        if let Ok(Ok(info)) = info {
            e.message.push_str(&format!(
                " (consumer '{}': {} delivered and not acknowledged, {} pull requests \
                 waiting, {} messages not yet delivered)",
                info.name, info.num_ack_pending, info.num_waiting, info.num_pending
            ));
        }
        e
    }

    fn received(&self, message: &jetstream::Message) -> Received {
        // A message whose info cannot be read is looked for in the queue.
        let redelivered = message.info().map_or(true, |i| {
            i.delivered > 1 || i.stream_sequence <= self.seen_before
        });
        Received {
            payload: record_of(&message.payload),
            redelivered,
        }
    }
}

#[async_trait]
impl Subscription for NatsSubscription {
    async fn receive(&mut self, max: usize) -> Result<Vec<Received>, DeliveryError> {
        if let Some(e) = self.failed.take() {
            return Err(self.with_state(e).await);
        }
        let first = match self.pull.next().await {
            Ok(first) => first,
            Err(e) => return Err(self.with_state(e).await),
        };
        let mut out = vec![self.received(&first)];
        self.unacked.push(first);
        while out.len() < max {
            // What has already arrived, without waiting.
            let Some(next) = self.pull.ready() else {
                break;
            };
            match next {
                Ok(message) => {
                    out.push(self.received(&message));
                    self.unacked.push(message);
                }
                Err(e) => {
                    self.failed = Some(e);
                    break;
                }
            }
        }
        Ok(out)
    }

    async fn ack(&mut self) -> Result<(), DeliveryError> {
        let Some(last) = self.unacked.pop() else {
            return Ok(());
        };
        let earlier = std::mem::take(&mut self.unacked);
        let acked = async {
            for message in &earlier {
                message.ack().await?;
            }
            // Answered once the server handled it, and so every ack
            // before it on this connection.
            last.double_ack().await
        };
        match tokio::time::timeout(self.timeout, acked).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(failure(
                FailureClass::Unreachable,
                &self.shown,
                format!("acknowledgement: {e}"),
            )),
            Err(_) => Err(failure(
                FailureClass::NoAnswer,
                &self.shown,
                format!(
                    "the acknowledgement was not confirmed within {:?}",
                    self.timeout
                ),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    //! Against the NATS server at `SLUICE_TEST_NATS_URL` (default
    //! `nats://127.0.0.1:4222`, with JetStream). Each test makes its own
    //! stream, named for the test and this run, and removes it.

    use std::sync::atomic::AtomicUsize;
    use std::time::{SystemTime, UNIX_EPOCH};

    use serde_json::json;

    use super::*;
    use crate::tls::test_ca::TestCa;

    fn url() -> String {
        std::env::var("SLUICE_TEST_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into())
    }

    /// A stream name no other test or run uses.
    fn unique(prefix: &str) -> String {
        static N: AtomicUsize = AtomicUsize::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let n = N.fetch_add(1, Ordering::SeqCst);
        format!("SLUICE_{prefix}_{}_{nanos}_{n}", std::process::id())
    }

    fn config_at(url: &str, keys: &str) -> BrokerConfig {
        let c: BrokerConfig =
            toml::from_str(&format!("url = \"{url}\"\ntimeout = \"5s\"\n{keys}")).unwrap();
        assert!(c.validate(KIND, Path::new(".")).is_empty());
        c
    }

    fn config(keys: &str) -> BrokerConfig {
        config_at(&url(), keys)
    }

    /// A stream taking the subjects `{name}.>`, made with the broker's own
    /// client.
    struct TestStream {
        js: jetstream::Context,
        name: String,
    }

    impl TestStream {
        async fn new(prefix: &str) -> TestStream {
            let client = async_nats::connect(url()).await.unwrap();
            let js = jetstream::new(client);
            let name = unique(prefix);
            js.create_stream(jetstream::stream::Config {
                name: name.clone(),
                subjects: vec![format!("{name}.>")],
                ..Default::default()
            })
            .await
            .unwrap();
            TestStream { js, name }
        }

        async fn publish(&self, bodies: &[&str]) {
            for body in bodies {
                let subject = format!("{}.in", self.name);
                let ack = self.js.publish(subject, body.to_string().into());
                ack.await.unwrap().await.unwrap();
            }
        }

        async fn consumer_info(&self, name: &str) -> jetstream::consumer::Info {
            let stream = self.js.get_stream(&self.name).await.unwrap();
            let mut consumer: jetstream::consumer::PullConsumer =
                stream.get_consumer(name).await.unwrap();
            consumer.info().await.unwrap().clone()
        }

        async fn remove(self) {
            self.js.delete_stream(&self.name).await.unwrap();
        }
    }

    /// `n` messages from `receive`, however they come in.
    async fn receive(sub: &mut Box<dyn Subscription>, n: usize) -> Vec<Received> {
        let mut got = Vec::new();
        while got.len() < n {
            let more = tokio::time::timeout(Duration::from_secs(15), sub.receive(n - got.len()))
                .await
                .expect("messages within 15 s")
                .unwrap();
            assert!(!more.is_empty() && more.len() <= n - got.len());
            got.extend(more);
        }
        got
    }

    fn payloads(got: &[Received]) -> Vec<&str> {
        got.iter().map(|r| r.payload.as_str()).collect()
    }

    #[tokio::test]
    async fn a_batch_is_stored_in_order_with_its_key_and_once_when_sent_twice() {
        let s = TestStream::new("TARGET").await;
        let c = config(&format!("subject = \"{}.orders.{{region}}\"", s.name));
        let target = NatsTarget::new(&c, Path::new("."));
        assert_eq!(target.batch_size(), 100);
        let keys: Vec<String> = (1..=5).map(|i| format!("site:orders:{i}")).collect();
        let records: Vec<String> = (1..=5)
            .map(|i| json!({"n": i, "region": if i % 2 == 0 { "eu" } else { "us" }}).to_string())
            .collect();
        let batch: Vec<Delivery> = keys
            .iter()
            .zip(&records)
            .map(|(k, p)| Delivery::new(k, p))
            .collect();
        target.deliver(&batch).await.unwrap();

        let stream = s.js.get_stream(&s.name).await.unwrap();
        for (i, (key, record)) in keys.iter().zip(&records).enumerate() {
            let m = stream.get_raw_message(i as u64 + 1).await.unwrap();
            assert_eq!(m.payload, record.as_bytes());
            let region = if (i + 1) % 2 == 0 { "eu" } else { "us" };
            assert_eq!(m.subject.as_str(), format!("{}.orders.{region}", s.name));
            let id = m.headers.get(MSG_ID).map(|v| v.to_string());
            assert_eq!(id.as_deref(), Some(key.as_str()));
        }

        // Sent again (a retry after a lost acknowledgement): JetStream
        // answers duplicate, which is success, and stores nothing more.
        target.deliver(&batch).await.unwrap();
        let mut stream = s.js.get_stream(&s.name).await.unwrap();
        assert_eq!(stream.info().await.unwrap().state.messages, 5);
        s.remove().await;
    }

    #[tokio::test]
    async fn a_record_without_the_subject_field_is_rejected_before_anything_is_published() {
        let s = TestStream::new("NOFIELD").await;
        let c = config(&format!("subject = \"{}.{{region}}\"", s.name));
        let target = NatsTarget::new(&c, Path::new("."));
        let batch = [
            Delivery::new("s:i:1", "{\"region\": \"eu\"}"),
            Delivery::new("s:i:2", "{\"other\": 1}"),
        ];
        let e = target.deliver(&batch).await.unwrap_err();
        assert_eq!(e.class, FailureClass::Rejected, "{e}");
        assert!(
            e.message.contains("s:i:2") && e.message.contains("'region'"),
            "{e}"
        );
        let mut stream = s.js.get_stream(&s.name).await.unwrap();
        assert_eq!(stream.info().await.unwrap().state.messages, 0);
        s.remove().await;
    }

    #[tokio::test]
    async fn a_subject_no_stream_takes_is_rejected_naming_it() {
        let subject = format!("{}.nowhere", unique("NOSTREAM"));
        let target = NatsTarget::new(&config(&format!("subject = \"{subject}\"")), Path::new("."));
        let e = target
            .deliver(&[Delivery::new("s:i:1", "{}")])
            .await
            .unwrap_err();
        assert_eq!(e.class, FailureClass::Rejected, "{e}");
        assert!(e.message.contains(&subject), "{e}");
        // The connection is kept: the next batch fails the same way.
        let e = target
            .deliver(&[Delivery::new("s:i:1", "{}")])
            .await
            .unwrap_err();
        assert_eq!(e.class, FailureClass::Rejected, "{e}");
    }

    #[tokio::test]
    async fn messages_come_in_order_and_acknowledged_ones_do_not_come_again() {
        let s = TestStream::new("SOURCE").await;
        s.publish(&["{\"n\": 1}", "{\"n\": 2}", "plain text"]).await;
        let source = NatsSource::new(&config(&format!("stream = \"{}\"", s.name)), Path::new("."));

        // The consumer is made, and starts at the beginning of the stream.
        let mut sub = source.subscribe().await.unwrap();
        let got = receive(&mut sub, 3).await;
        assert_eq!(
            payloads(&got),
            ["{\"n\": 1}", "{\"n\": 2}", "\"plain text\""]
        );
        assert!(got.iter().all(|r| !r.redelivered), "{got:?}");
        sub.ack().await.unwrap();
        // ack() returns once the broker has taken every acknowledgement.
        let info = s.consumer_info("sluice").await;
        assert_eq!(info.num_ack_pending, 0, "{info:?}");
        assert_eq!(info.ack_floor.stream_sequence, 3, "{info:?}");
        assert_eq!(
            info.config.deliver_policy,
            jetstream::consumer::DeliverPolicy::All
        );
        assert_eq!(
            info.config.ack_policy,
            jetstream::consumer::AckPolicy::Explicit
        );
        drop(sub);
        // The dropped subscription's pull request is gone from the server
        // before the next message: else the server hands it to the closed
        // connection and gives it again only after `ack_wait`.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let waiting = s.consumer_info("sluice").await.num_waiting;
            if waiting == 0 {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{waiting} pull requests stay"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }

        s.publish(&["{\"n\": 4}"]).await;
        let mut sub = source.subscribe().await.unwrap();
        let got = sub.receive(10).await.unwrap();
        assert_eq!(payloads(&got), ["{\"n\": 4}"]);
        assert!(!got[0].redelivered);
        sub.ack().await.unwrap();
        drop(sub);
        s.remove().await;
    }

    #[tokio::test]
    async fn messages_not_acknowledged_come_again_marked_redelivered() {
        let s = TestStream::new("REDELIVER").await;
        // An existing consumer is used as it is: one that gives back
        // unacknowledged messages after 1 s rather than 30.
        let stream = s.js.get_stream(&s.name).await.unwrap();
        stream
            .create_consumer(pull::Config {
                durable_name: Some("quick".into()),
                ack_wait: Duration::from_secs(1),
                ..Default::default()
            })
            .await
            .unwrap();
        s.publish(&["{\"n\": 1}", "{\"n\": 2}"]).await;
        let source = NatsSource::new(
            &config(&format!("stream = \"{}\"\nconsumer = \"quick\"", s.name)),
            Path::new("."),
        );

        let mut sub = source.subscribe().await.unwrap();
        let got = receive(&mut sub, 2).await;
        assert_eq!(payloads(&got), ["{\"n\": 1}", "{\"n\": 2}"]);
        assert!(got.iter().all(|r| !r.redelivered));
        drop(sub);

        let mut sub = source.subscribe().await.unwrap();
        let got = receive(&mut sub, 2).await;
        assert_eq!(payloads(&got), ["{\"n\": 1}", "{\"n\": 2}"]);
        assert!(got.iter().all(|r| r.redelivered), "{got:?}");
        sub.ack().await.unwrap();
        assert_eq!(s.consumer_info("quick").await.num_ack_pending, 0);
        drop(sub);
        s.remove().await;
    }

    #[tokio::test]
    async fn pull_requests_expire_and_are_renewed_through_a_quiet_time_with_heartbeats() {
        let s = TestStream::new("quiet").await;
        s.publish(&["{\"n\": 1}"]).await;
        let stream = s.js.get_stream(&s.name).await.unwrap();
        let consumer: jetstream::consumer::PullConsumer = stream
            .create_consumer(pull::Config {
                durable_name: Some("quiet".into()),
                ack_policy: jetstream::consumer::AckPolicy::Explicit,
                ..Default::default()
            })
            .await
            .unwrap();
        let mut pull = Pull::open(&s.js, &consumer, "nats test").await.unwrap();
        pull.expires = Duration::from_millis(600);
        pull.heartbeat = Duration::from_millis(200);
        let first = pull.next().await.unwrap();
        assert_eq!(&first.payload[..], b"{\"n\": 1}");
        first.double_ack().await.unwrap();

        // Three expiries go by with nothing to deliver: heartbeats keep the
        // wait alive, each 408 sends the next request, and what is
        // published then comes, in order.
        let later = async {
            tokio::time::sleep(Duration::from_millis(2000)).await;
            s.publish(&["{\"n\": 2}", "{\"n\": 3}"]).await;
        };
        let (second, ()) = tokio::join!(pull.next(), later);
        let second = second.unwrap();
        assert_eq!(&second.payload[..], b"{\"n\": 2}");
        let third = match pull.ready() {
            Some(third) => third.unwrap(),
            None => pull.next().await.unwrap(),
        };
        assert_eq!(&third.payload[..], b"{\"n\": 3}");
        second.double_ack().await.unwrap();
        third.double_ack().await.unwrap();
        let info = s.consumer_info("quiet").await;
        assert!(info.num_waiting <= 1, "one request at a time: {info:?}");
        assert_eq!(info.num_pending, 0);
        drop(pull);
        s.remove().await;
    }

    #[tokio::test]
    async fn a_port_nothing_listens_on_is_unreachable() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let c = config_at(
            &format!("nats://127.0.0.1:{port}"),
            "stream = \"S\"\nsubject = \"s.x\"",
        );
        let target = NatsTarget::new(&c, Path::new("."));
        let e = target
            .deliver(&[Delivery::new("s:i:1", "{}")])
            .await
            .unwrap_err();
        assert_eq!(e.class, FailureClass::Unreachable, "{e}");
        assert!(e.message.contains(&port.to_string()), "{e}");
        let e = probe(&c, Path::new(".")).await.unwrap_err();
        assert_eq!(e.class, FailureClass::Unreachable, "{e}");
        let e = NatsSource::new(&c, Path::new("."))
            .subscribe()
            .await
            .err()
            .unwrap();
        assert_eq!(e.class, FailureClass::Unreachable, "{e}");
    }

    /// A NATS server of this test's own (JetStream on, a free port, its
    /// store in a temporary folder), to stop, start again or give a
    /// password.
    struct OwnServer {
        port: u16,
        store: tempfile::TempDir,
        args: Vec<String>,
        child: Option<std::process::Child>,
    }

    impl OwnServer {
        async fn start(args: &[&str]) -> Option<OwnServer> {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let port = listener.local_addr().unwrap().port();
            drop(listener);
            let mut server = OwnServer {
                port,
                store: tempfile::tempdir().unwrap(),
                args: args.iter().map(|a| a.to_string()).collect(),
                child: None,
            };
            server.restart().await.then_some(server)
        }

        fn url(&self) -> String {
            format!("nats://127.0.0.1:{}", self.port)
        }

        /// Starts it (again), and waits until it takes connections.
        async fn restart(&mut self) -> bool {
            // Debian puts it in /usr/sbin, not on every user's PATH.
            let program = ["/usr/sbin/nats-server", "/usr/bin/nats-server"]
                .into_iter()
                .find(|p| Path::new(p).exists())
                .unwrap_or("nats-server");
            let child = std::process::Command::new(program)
                .args([
                    "-a",
                    "127.0.0.1",
                    "-p",
                    &self.port.to_string(),
                    "-js",
                    "-sd",
                ])
                .arg(self.store.path())
                .args(&self.args)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn();
            let child = child.unwrap_or_else(|e| {
                panic!("nats-server (JetStream's server, as on every machine of this project): {e}")
            });
            self.child = Some(child);
            for _ in 0..100 {
                if tokio::net::TcpStream::connect(("127.0.0.1", self.port))
                    .await
                    .is_ok()
                {
                    return true;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            panic!("nats-server did not listen on {}", self.port);
        }

        fn stop(&mut self) {
            if let Some(mut child) = self.child.take() {
                child.kill().ok();
                child.wait().ok();
            }
        }

        /// Stops it as a service manager does (SIGTERM), and waits until
        /// it has ended: its clients lose their connections all the same,
        /// and JetStream first writes down what it holds in memory. Killed
        /// ([`OwnServer::stop`]), it may lose a consumer's last deliveries,
        /// and then gives those messages again as if for the first time.
        async fn shut_down(&mut self) {
            let Some(mut child) = self.child.take() else {
                return;
            };
            let sent = std::process::Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            assert!(
                sent.as_ref().is_ok_and(|s| s.success()),
                "kill -TERM: {sent:?}"
            );
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            while child.try_wait().unwrap().is_none() {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "nats-server did not end within 10 s of SIGTERM"
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }

    impl Drop for OwnServer {
        fn drop(&mut self) {
            self.stop();
        }
    }

    #[tokio::test]
    async fn a_lost_connection_fails_the_batch_and_the_next_one_connects_anew() {
        let Some(mut server) = OwnServer::start(&[]).await else {
            return;
        };
        let client = async_nats::connect(server.url()).await.unwrap();
        let stream = jetstream::new(client)
            .create_stream(jetstream::stream::Config {
                name: "LOST".into(),
                subjects: vec!["lost.>".into()],
                ..Default::default()
            })
            .await
            .unwrap();
        stream
            .create_consumer(pull::Config {
                durable_name: Some("quick".into()),
                ack_wait: Duration::from_secs(1),
                ..Default::default()
            })
            .await
            .unwrap();
        let c = config_at(
            &server.url(),
            "subject = \"lost.x\"\nstream = \"LOST\"\nconsumer = \"quick\"",
        );
        let target = NatsTarget::new(&c, Path::new("."));
        target
            .deliver(&[Delivery::new("s:i:1", "{\"n\": 1}")])
            .await
            .unwrap();
        let source = NatsSource::new(&c, Path::new("."));
        let mut sub = source.subscribe().await.unwrap();
        assert_eq!(payloads(&receive(&mut sub, 1).await), ["{\"n\": 1}"]);

        // Stopped, not killed: the consumer's count of deliveries is kept,
        // so what it gave before the loss comes again marked.
        server.shut_down().await;
        let e = target
            .deliver(&[Delivery::new("s:i:2", "{\"n\": 2}")])
            .await
            .unwrap_err();
        assert_eq!(e.class, FailureClass::Unreachable, "{e}");
        let e = tokio::time::timeout(Duration::from_secs(10), sub.receive(10))
            .await
            .expect("receive ends when the connection is lost")
            .unwrap_err();
        assert_eq!(e.class, FailureClass::Unreachable, "{e}");
        drop(sub);

        assert!(server.restart().await);
        target
            .deliver(&[Delivery::new("s:i:2", "{\"n\": 2}")])
            .await
            .unwrap();
        // The new record, and the one received but not acknowledged before
        // the loss, again. Both were in the stream as the subscription
        // began, with a message waiting for its acknowledgement: both are
        // looked for in the queue (the server's count is not a sure sign).
        let mut sub = source.subscribe().await.unwrap();
        let mut got = receive(&mut sub, 2).await;
        got.sort_by(|a, b| a.payload.cmp(&b.payload));
        assert_eq!(payloads(&got), ["{\"n\": 1}", "{\"n\": 2}"]);
        assert!(got.iter().all(|r| r.redelivered), "{got:?}");
        sub.ack().await.unwrap();
        // What comes after the subscription began is new.
        target
            .deliver(&[Delivery::new("s:i:3", "{\"n\": 3}")])
            .await
            .unwrap();
        let got = receive(&mut sub, 1).await;
        assert_eq!(payloads(&got), ["{\"n\": 3}"]);
        assert!(!got[0].redelivered, "{got:?}");
        sub.ack().await.unwrap();
    }

    #[tokio::test]
    async fn refused_credentials_are_unauthorized_until_new_ones_are_given() {
        let Some(server) = OwnServer::start(&["--user", "sluice", "--pass", "s3cret-pw"]).await
        else {
            return;
        };
        let c = config_at(
            &server.url(),
            "subject = \"creds.x\"\nusername = \"sluice\"",
        );
        let e = probe(&c, Path::new(".")).await.unwrap_err();
        assert_eq!(e.class, FailureClass::Unauthorized, "{e}");
        let target = NatsTarget::new(&c, Path::new("."));
        let e = target
            .deliver(&[Delivery::new("s:i:1", "{}")])
            .await
            .unwrap_err();
        assert_eq!(e.class, FailureClass::Unauthorized, "{e}");

        target
            .set_credentials(Credentials::Basic {
                username: "sluice".into(),
                password: "s3cret-pw".into(),
            })
            .unwrap();
        // Connected now: JetStream answers that no stream takes the subject.
        let e = target
            .deliver(&[Delivery::new("s:i:1", "{}")])
            .await
            .unwrap_err();
        assert_eq!(e.class, FailureClass::Rejected, "{e}");
        assert!(!e.message.contains("s3cret-pw"), "{e}");
        assert!(target
            .set_credentials(Credentials::Bearer("t".into()))
            .is_err());
    }

    #[tokio::test]
    async fn probe_answers_for_a_stream_and_a_subject_and_rejects_a_missing_stream() {
        let s = TestStream::new("PROBE").await;
        s.publish(&["{}"]).await;
        let c = config(&format!("stream = \"{0}\"\nsubject = \"{0}.out\"", s.name));
        let said = probe(&c, Path::new(".")).await.unwrap();
        assert!(said.contains("NATS"), "{said}");
        assert!(
            said.contains(&format!("stream '{}' holds 1 messages", s.name)),
            "{said}"
        );
        assert!(said.contains("goes to stream"), "{said}");
        assert!(!said.contains('\n'), "{said}");
        let target = NatsTarget::new(&c, Path::new("."));
        target.probe().await.unwrap();

        let missing = unique("MISSING");
        let e = probe(&config(&format!("stream = \"{missing}\"")), Path::new("."))
            .await
            .unwrap_err();
        assert_eq!(e.class, FailureClass::Rejected, "{e}");
        assert!(
            e.message.contains(&missing) && e.message.contains("not found"),
            "{e}"
        );
        let e = NatsSource::new(&config(&format!("stream = \"{missing}\"")), Path::new("."))
            .subscribe()
            .await
            .err()
            .unwrap();
        assert_eq!(e.class, FailureClass::Rejected, "{e}");
        s.remove().await;
    }

    /// A NATS server of the test's own that speaks only TLS, with a
    /// certificate of a test CA whose files are in `dir` (`ca.pem`, and
    /// `client.pem`/`client-key.pem` for mutual TLS); with `mutual` it
    /// requires a client certificate of that CA. `extra`: more arguments.
    async fn tls_server(dir: &Path, mutual: bool, extra: &[&str]) -> OwnServer {
        let ca = TestCa::new(dir);
        let (cert, key) = ca.issue("server", false);
        ca.issue("client", true);
        let (cert, key, ca_file) = (
            cert.display().to_string(),
            key.display().to_string(),
            dir.join("ca.pem").display().to_string(),
        );
        let mut args = vec!["--tls", "--tlscert", &cert, "--tlskey", &key];
        if mutual {
            args.extend(["--tlsverify", "--tlscacert", &ca_file]);
        }
        args.extend(extra);
        OwnServer::start(&args).await.expect("nats-server with TLS")
    }

    /// The settings of an endpoint on the TLS server at `host`; the TLS
    /// files are relative to `dir` (the configuration's folder), as
    /// configured.
    fn tls_config(server: &OwnServer, host: &str, dir: &Path, keys: &str) -> BrokerConfig {
        let c: BrokerConfig = toml::from_str(&format!(
            "url = \"tls://{host}:{}\"\ntimeout = \"5s\"\n{keys}",
            server.port
        ))
        .unwrap();
        assert_eq!(c.validate(KIND, dir), []);
        c
    }

    /// Makes the stream `name` taking `{subjects}` on a server, through a
    /// connection sluice makes with `c`.
    async fn make_stream(c: &BrokerConfig, dir: &Path, name: &str, subjects: &str) {
        let client = connect(c, dir, &Login::default()).await.unwrap();
        jetstream::new(client)
            .create_stream(jetstream::stream::Config {
                name: name.into(),
                subjects: vec![subjects.into()],
                ..Default::default()
            })
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn over_tls_with_ca_file_a_target_publishes_and_a_source_receives() {
        let dir = tempfile::tempdir().unwrap();
        let server = tls_server(dir.path(), false, &[]).await;
        let c = tls_config(
            &server,
            "127.0.0.1",
            dir.path(),
            "ca_file = \"ca.pem\"\nstream = \"TLS\"\nsubject = \"tls.in\"",
        );
        make_stream(&c, dir.path(), "TLS", "tls.>").await;

        let target = NatsTarget::new(&c, dir.path());
        target
            .deliver(&[Delivery::new("s:i:1", "{\"n\": 1}")])
            .await
            .unwrap();
        let said = probe(&c, dir.path()).await.unwrap();
        assert!(
            said.starts_with(&format!("tls://127.0.0.1:{}: NATS 2.", server.port))
                && said.contains("stream 'TLS' holds 1 messages")
                && said.contains("subject 'tls.in' goes to stream 'TLS'"),
            "{said}"
        );
        Target::probe(&target).await.unwrap();

        let source = NatsSource::new(&c, dir.path());
        Subscribe::probe(&source).await.unwrap();
        let mut sub = source.subscribe().await.unwrap();
        let got = receive(&mut sub, 1).await;
        assert_eq!(payloads(&got), ["{\"n\": 1}"]);
        assert!(!got[0].redelivered);
        sub.ack().await.unwrap();
    }

    #[tokio::test]
    async fn over_tls_without_ca_file_the_test_ca_is_untrusted_and_ca_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let server = tls_server(dir.path(), false, &[]).await;
        let c = tls_config(
            &server,
            "127.0.0.1",
            dir.path(),
            "stream = \"TLS\"\nsubject = \"tls.in\"",
        );
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
        let target = NatsTarget::new(&c, dir.path());
        untrusted(
            target
                .deliver(&[Delivery::new("s:i:1", "{}")])
                .await
                .unwrap_err(),
        );
        untrusted(
            NatsSource::new(&c, dir.path())
                .subscribe()
                .await
                .err()
                .unwrap(),
        );

        // A nats:// url to a server that requires TLS: the client takes up
        // TLS all the same, and fails the same way; but ca_file is refused
        // with a nats:// url, so the way out is the tls:// url.
        let plain = config_at(
            &format!("nats://127.0.0.1:{}", server.port),
            "subject = \"tls.in\"",
        );
        let e = probe(&plain, dir.path()).await.unwrap_err();
        assert_eq!(e.class, FailureClass::Untrusted, "{e:?}");
        assert!(
            e.message.contains("unknown issuer")
                && e.message
                    .contains("the server requires TLS: use a tls:// url"),
            "{e:?}"
        );
    }

    #[tokio::test]
    async fn mutual_tls_presents_client_cert_and_client_key_and_without_them_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let server = tls_server(dir.path(), true, &[]).await;
        // A DNS name this time.
        let c = |keys: &str| {
            tls_config(
                &server,
                "localhost",
                dir.path(),
                &format!("ca_file = \"ca.pem\"\nstream = \"MTLS\"\nsubject = \"mtls.in\"\n{keys}"),
            )
        };
        let mutual = c("client_cert = \"client.pem\"\nclient_key = \"client-key.pem\"");
        make_stream(&mutual, dir.path(), "MTLS", "mtls.>").await;
        let target = NatsTarget::new(&mutual, dir.path());
        target
            .deliver(&[Delivery::new("s:i:1", "{\"n\": 1}")])
            .await
            .unwrap();
        let mut sub = NatsSource::new(&mutual, dir.path())
            .subscribe()
            .await
            .unwrap();
        assert_eq!(payloads(&receive(&mut sub, 1).await), ["{\"n\": 1}"]);
        sub.ack().await.unwrap();

        // Without our certificate the server refuses the connection.
        let without = c("");
        let refused = |e: DeliveryError| {
            assert_eq!(e.class, FailureClass::Untrusted, "{e:?}");
            assert!(e.message.contains("client_cert and client_key"), "{e:?}");
        };
        refused(probe(&without, dir.path()).await.unwrap_err());
        refused(
            NatsTarget::new(&without, dir.path())
                .deliver(&[Delivery::new("s:i:2", "{}")])
                .await
                .unwrap_err(),
        );
        refused(
            NatsSource::new(&without, dir.path())
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
        let server = tls_server(dir.path(), true, &["--user", "sluice", "--pass", SECRET]).await;
        let var = format!("SLUICE_TEST_NATS_TLS_PASSWORD_{}", std::process::id());
        std::env::set_var(&var, SECRET);
        let c = |keys: &str| {
            tls_config(
                &server,
                "127.0.0.1",
                dir.path(),
                &format!(
                    "subject = \"s.in\"\nusername = \"sluice\"\npassword_env = \"{var}\"\n{keys}"
                ),
            )
        };
        let hidden = |e: DeliveryError, class: FailureClass, says: &str| {
            assert_eq!(e.class, class, "{e:?}");
            assert!(e.message.contains(says), "{e:?}");
            assert!(!format!("{e:?}").contains(SECRET), "{e:?}");
        };
        // The server's certificate not trusted.
        let untrusted = c("");
        hidden(
            probe(&untrusted, dir.path()).await.unwrap_err(),
            FailureClass::Untrusted,
            "ca_file",
        );
        hidden(
            NatsTarget::new(&untrusted, dir.path())
                .deliver(&[Delivery::new("s:i:1", "{}")])
                .await
                .unwrap_err(),
            FailureClass::Untrusted,
            "ca_file",
        );
        // Ours refused.
        let no_cert = c("ca_file = \"ca.pem\"");
        hidden(
            probe(&no_cert, dir.path()).await.unwrap_err(),
            FailureClass::Untrusted,
            "client_cert and client_key",
        );
        // TLS passes, the password does not: refused by the server.
        let mutual = c(
            "ca_file = \"ca.pem\"\nclient_cert = \"client.pem\"\nclient_key = \"client-key.pem\"",
        );
        let target = NatsTarget::new(&mutual, dir.path());
        target
            .set_credentials(Credentials::Basic {
                username: "sluice".into(),
                password: format!("not-{SECRET}"),
            })
            .unwrap();
        let e = target
            .deliver(&[Delivery::new("s:i:1", "{}")])
            .await
            .unwrap_err();
        assert!(!e.message.contains(&format!("not-{SECRET}")), "{e:?}");
        hidden(e, FailureClass::Unauthorized, "tls://127.0.0.1");
        // The right one: connected, and JetStream answers that no stream
        // takes the subject.
        let said = probe(&mutual, dir.path()).await.unwrap();
        assert!(said.contains("no stream takes subject 's.in'"), "{said}");
        assert!(!said.contains(SECRET), "{said}");
    }
}
