//! `kind = "amqp"`: RabbitMQ (AMQP 0-9-1) through lapin.
//!
//! - **TLS** (`amqps://host:5671/%2f`): the handshake is done by
//!   tokio-rustls with sluice's own ClientConfig (ring; platform roots plus
//!   `ca_file`, `client_cert`/`client_key` for mutual TLS), never lapin's;
//!   see [`wire`]. A certificate not trusted is `Untrusted` with rustls's
//!   reason.
//! - **As a target** every record of a batch is published to `exchange`
//!   with its `routing_key` (which may take record fields), persistent
//!   (delivery mode 2), `mandatory` unless configured off, its idempotency
//!   key as `message_id`, on a channel in confirm mode; the batch counts as
//!   sent only once the broker confirmed every message. A message the
//!   broker returns (unroutable under `mandatory`) or a channel the broker
//!   closes (no such exchange, access refused) is a failure for good with
//!   the broker's words; a nack, a lost connection or no confirmation within
//!   `timeout` is retried.
//! - **As a source** the queue is consumed with manual acknowledgements and
//!   at most `prefetch` messages unacknowledged (declared durable if it does
//!   not exist). The engine acknowledges received messages only once it has
//!   queued them durably, with one `basic.ack` (multiple) up to the last.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures_util::{FutureExt, StreamExt};
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, ExchangeDeclareOptions, QueueDeclareOptions,
};
use lapin::protocol::{AMQPErrorKind, AMQPHardError, AMQPSoftError};
use lapin::types::FieldTable;
use lapin::Confirmation;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};

use super::broker::{BrokerConfig, BrokerKind, Login, Received, Subscribe, Subscription};
use super::template::FieldTemplate;
use super::{Credentials, Delivered, Delivery, DeliveryError, FailureClass, Target};
use crate::{redact, tls};

const KIND: BrokerKind = BrokerKind::Amqp;

fn error(class: FailureClass, message: impl Into<String>) -> DeliveryError {
    DeliveryError {
        class,
        message: message.into(),
        retry_after: None,
    }
}

/// What a lapin error means for sluice, in the broker's words.
fn failure(url: &str, e: &lapin::Error) -> DeliveryError {
    let url = redact::url(url);
    if let Some(tls) = tls::failure(e) {
        let hint = tls.hint();
        return error(
            FailureClass::Untrusted,
            format!("RabbitMQ at {url}: {tls}{hint}"),
        );
    }
    match e.kind() {
        lapin::ErrorKind::ProtocolError(amqp) => {
            let words = format!("RabbitMQ at {url}: {}", amqp.get_message());
            let class = match amqp.kind() {
                // A refused login, or a user without the right on this
                // exchange or queue: new credentials mend it.
                AMQPErrorKind::Soft(AMQPSoftError::ACCESSREFUSED) => FailureClass::Unauthorized,
                AMQPErrorKind::Soft(
                    AMQPSoftError::NOTFOUND
                    | AMQPSoftError::PRECONDITIONFAILED
                    | AMQPSoftError::CONTENTTOOLARGE
                    | AMQPSoftError::NOROUTE
                    | AMQPSoftError::RESOURCELOCKED,
                ) => FailureClass::Rejected,
                AMQPErrorKind::Hard(AMQPHardError::NOTALLOWED | AMQPHardError::INVALIDPATH) => {
                    FailureClass::Unauthorized
                }
                AMQPErrorKind::Hard(AMQPHardError::CONNECTIONFORCED) => FailureClass::Unreachable,
                _ => FailureClass::Intermittent,
            };
            error(class, words)
        }
        lapin::ErrorKind::IOError(io) => error(
            FailureClass::Unreachable,
            format!("RabbitMQ at {url}: {io}"),
        ),
        lapin::ErrorKind::AuthProviderError(why) => error(
            FailureClass::Unauthorized,
            format!("RabbitMQ at {url} refused the login: {why}"),
        ),
        other => {
            let text = format!("{other:?}");
            // RabbitMQ closes the connection of a refused login (403
            // ACCESS_REFUSED) during the handshake.
            if text.contains("ACCESS_REFUSED") || text.contains("ACCESSREFUSED") {
                error(
                    FailureClass::Unauthorized,
                    format!("RabbitMQ at {url} refused the login"),
                )
            } else {
                error(FailureClass::Unreachable, format!("RabbitMQ at {url}: {e}"))
            }
        }
    }
}

/// Opens a connection with the user and password of `login`, within the
/// endpoint's time-out; `amqps://` through TLS with the endpoint's
/// `ca_file`, `client_cert` and `client_key` (`base`: the configuration
/// file's folder).
async fn connect(
    config: &BrokerConfig,
    base: &Path,
    login: &Login,
) -> Result<Connection, DeliveryError> {
    let mut uri: lapin::uri::AMQPUri = config.url.parse().map_err(|e: String| {
        error(
            FailureClass::Rejected,
            format!("{} is not an AMQP url: {e}", redact::url(&config.url)),
        )
    })?;
    let tls = if config.uses_tls(KIND) {
        let tls = config.tls(base).map_err(|e| {
            error(
                FailureClass::Untrusted,
                format!("RabbitMQ at {}: {e}", redact::url(&config.url)),
            )
        })?;
        Some(Arc::new(tls))
    } else {
        None
    };
    let (username, password) = login.get(config)?;
    if let Some(u) = username {
        uri.authority.userinfo.username = u;
    }
    if let Some(p) = password {
        uri.authority.userinfo.password = p;
    }
    let properties = ConnectionProperties::default().with_connection_name("sluice".into());
    let connecting = async {
        match tls {
            None => Connection::connect_uri(uri, properties).await,
            Some(tls) => wire::connect_tls(uri, properties, tls).await,
        }
    };
    match tokio::time::timeout(config.timeout(), connecting).await {
        Ok(Ok(connection)) => Ok(connection),
        Ok(Err(e)) => Err(failure(&config.url, &e)),
        Err(_) => Err(error(
            FailureClass::NoAnswer,
            format!(
                "RabbitMQ at {} did not complete the connection within {:?}",
                redact::url(&config.url),
                config.timeout()
            ),
        )),
    }
}

/// amqps://. lapin's own TLS (tcp-stream with rustls-connector) would build
/// its own rustls configuration (aws-lc, PKCS#12 identities); instead lapin
/// is handed a closure that dials TCP and does the handshake with
/// tokio-rustls and sluice's ClientConfig. lapin wants the closure's socket
/// to be its runtime's socket type, so the runtime here is tokio's with a
/// reactor whose socket is plain TCP or TLS ([`wire::Socket`]).
mod wire {
    use std::future::Future;
    use std::io::{self, Read, Write};
    use std::net::SocketAddr;
    use std::os::fd::{AsFd, AsRawFd};
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use async_rs::traits::Reactor;
    use async_rs::util::RuntimeParts;
    use async_rs::{Runtime, Tokio};
    use futures_io::{AsyncRead, AsyncWrite};
    use futures_util::Stream;
    use lapin::uri::AMQPUri;
    use lapin::{AsyncTcpStream, Connection, ConnectionProperties};
    use rustls::pki_types::ServerName;
    use tokio::net::TcpStream;
    use tokio_rustls::client::TlsStream;
    use tokio_util::compat::{Compat, TokioAsyncReadCompatExt};
    use tokio_util::either::Either;

    /// What lapin reads and writes: TCP, or TLS over it.
    pub type Socket = Compat<Either<TcpStream, TlsStream<TcpStream>>>;

    /// tokio's reactor with [`Socket`] for its sockets (timers and the
    /// rest are tokio's).
    #[derive(Debug, Clone)]
    pub struct TlsReactor(Tokio);

    impl Reactor for TlsReactor {
        type TcpStream = Socket;
        type Sleep = <Tokio as Reactor>::Sleep;

        fn register<H: Read + Write + AsFd + AsRawFd + Send + 'static>(
            &self,
            socket: H,
        ) -> io::Result<impl AsyncRead + AsyncWrite + Send + Unpin + 'static> {
            self.0.register(socket)
        }

        fn sleep(&self, dur: Duration) -> Self::Sleep {
            self.0.sleep(dur)
        }

        fn interval(&self, dur: Duration) -> impl Stream<Item = Instant> + Send + 'static {
            self.0.interval(dur)
        }

        /// Plain TCP (lapin dials through `connect_tls`'s closure instead).
        fn tcp_connect_addr(
            &self,
            addr: SocketAddr,
        ) -> impl Future<Output = io::Result<Socket>> + Send + 'static {
            // Not an `async fn`: the future may not borrow the reactor.
            plain(addr)
        }
    }

    async fn plain(addr: SocketAddr) -> io::Result<Socket> {
        let tcp = TcpStream::connect(addr).await?;
        tcp.set_nodelay(true)?;
        Ok(Either::Left(tcp).compat())
    }

    /// Connects to `uri`'s host and port with TLS: the server's certificate
    /// is verified by `tls` for the url's host.
    pub async fn connect_tls(
        uri: AMQPUri,
        properties: ConnectionProperties,
        tls: Arc<rustls::ClientConfig>,
    ) -> lapin::Result<Connection> {
        let tokio = Tokio::current();
        let runtime = Runtime::new(RuntimeParts::new(tokio.clone(), TlsReactor(tokio)));
        let dial = async move |uri: AMQPUri, _runtime| {
            let host = uri.authority.host;
            let name = ServerName::try_from(host.clone())
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
            let tcp = TcpStream::connect((host.as_str(), uri.authority.port)).await?;
            tcp.set_nodelay(true)?;
            let tls = tokio_rustls::TlsConnector::from(tls.clone())
                .connect(name, tcp)
                .await?;
            Ok(AsyncTcpStream::Plain(Either::Right(tls).compat()))
        };
        Connection::connector(uri, runtime, dial, properties).await
    }
}

/// A connection and the channel used on it.
struct Link {
    /// Kept open while the channel is used.
    _connection: Connection,
    channel: Channel,
}

impl Link {
    async fn open(
        config: &BrokerConfig,
        base: &Path,
        login: &Login,
    ) -> Result<Link, DeliveryError> {
        let connection = connect(config, base, login).await?;
        let channel = connection
            .create_channel()
            .await
            .map_err(|e| failure(&config.url, &e))?;
        Ok(Link {
            _connection: connection,
            channel,
        })
    }
}

/// The health test: a connection (which authenticates), and the queue or
/// exchange looked at without changing anything.
pub async fn probe(config: &BrokerConfig, base: &Path) -> Result<String, DeliveryError> {
    check(config, base, &Login::default()).await
}

/// The health test with the credentials of `login`.
async fn check(config: &BrokerConfig, base: &Path, login: &Login) -> Result<String, DeliveryError> {
    let link = Link::open(config, base, login).await?;
    let url = redact::url(&config.url);
    if let Some(queue) = &config.queue {
        let passive = QueueDeclareOptions {
            passive: true,
            ..Default::default()
        };
        match link
            .channel
            .queue_declare(queue.as_str().into(), passive, FieldTable::default())
            .await
        {
            Ok(q) => {
                return Ok(format!(
                    "RabbitMQ at {url}: queue '{queue}' holds {} messages, {} consumers",
                    q.message_count(),
                    q.consumer_count()
                ))
            }
            Err(e) if is_not_found(&e) => {
                return Ok(format!(
                    "RabbitMQ at {url}: queue '{queue}' does not exist yet; it is declared \
                     (durable) when consumed"
                ))
            }
            Err(e) => return Err(failure(&config.url, &e)),
        }
    }
    if let Some(exchange) = config.exchange.as_deref().filter(|e| !e.is_empty()) {
        // Reached and logged in: the endpoint is up. A missing exchange is
        // said, not failed: each publish to it fails for good, with these
        // words, and `on_error` decides.
        let passive = ExchangeDeclareOptions {
            passive: true,
            ..Default::default()
        };
        return match link
            .channel
            .exchange_declare(
                exchange.into(),
                lapin::ExchangeKind::Direct,
                passive,
                FieldTable::default(),
            )
            .await
        {
            Ok(()) => Ok(format!("RabbitMQ at {url}: exchange '{exchange}' exists")),
            Err(e) if is_not_found(&e) => Ok(format!(
                "RabbitMQ at {url}: connected, but exchange '{exchange}' does not exist: \
                 publishing to it fails (sluice declares no exchange)"
            )),
            Err(e) => Err(failure(&config.url, &e)),
        };
    }
    Ok(format!("RabbitMQ at {url}: connected"))
}

fn is_not_found(e: &lapin::Error) -> bool {
    matches!(e.kind(), lapin::ErrorKind::ProtocolError(amqp)
        if matches!(amqp.kind(), AMQPErrorKind::Soft(AMQPSoftError::NOTFOUND)))
}

/// Publishes to an exchange with publisher confirms.
pub struct AmqpTarget {
    config: BrokerConfig,
    /// The configuration file's folder (TLS files are relative to it).
    base: PathBuf,
    routing_key: FieldTemplate,
    login: Login,
    link: tokio::sync::Mutex<Option<Link>>,
}

impl AmqpTarget {
    pub fn new(config: &BrokerConfig, base: &Path) -> AmqpTarget {
        AmqpTarget {
            config: config.clone(),
            base: base.to_path_buf(),
            routing_key: config.publish_template(KIND),
            login: Login::default(),
            link: tokio::sync::Mutex::new(None),
        }
    }

    /// The routing key of each delivery; a record it cannot be made for
    /// refuses the batch before anything is published.
    fn routing_keys(&self, batch: &[Delivery<'_>]) -> Result<Vec<String>, DeliveryError> {
        batch
            .iter()
            .map(|d| {
                let record = if self.routing_key.has_fields() {
                    Some(serde_json::from_str(d.payload).map_err(|e| {
                        error(
                            FailureClass::Rejected,
                            format!("the record is not JSON ({e}), so it has no routing key"),
                        )
                    })?)
                } else {
                    None
                };
                self.config
                    .publish_name(KIND, &self.routing_key, record.as_ref())
                    .map_err(|why| error(FailureClass::Rejected, why))
            })
            .collect()
    }

    async fn publish(
        &self,
        channel: &Channel,
        batch: &[Delivery<'_>],
        keys: Vec<String>,
    ) -> Result<(), DeliveryError> {
        let url = &self.config.url;
        let exchange = self.config.exchange.as_deref().unwrap_or_default();
        let options = BasicPublishOptions {
            mandatory: self.config.mandatory(),
            ..Default::default()
        };
        let mut confirms = Vec::with_capacity(batch.len());
        for (d, key) in batch.iter().zip(keys) {
            let properties = BasicProperties::default()
                .with_delivery_mode(2)
                .with_content_type("application/json".into())
                .with_message_id(d.key.into());
            let confirm = channel
                .basic_publish(
                    exchange.into(),
                    key.into(),
                    options,
                    d.payload.as_bytes(),
                    properties,
                )
                .await
                .map_err(|e| failure(url, &e))?;
            confirms.push(confirm);
        }
        for confirm in confirms {
            match confirm.await.map_err(|e| failure(url, &e))? {
                Confirmation::Ack(None) => {}
                Confirmation::Ack(Some(returned)) | Confirmation::Nack(Some(returned)) => {
                    return Err(error(
                        FailureClass::Rejected,
                        format!(
                            "RabbitMQ returned the message: {} {} (exchange '{exchange}', \
                             routing key '{}')",
                            returned.reply_code, returned.reply_text, returned.delivery.routing_key
                        ),
                    ))
                }
                Confirmation::Nack(None) => {
                    return Err(error(
                        FailureClass::Intermittent,
                        format!(
                            "RabbitMQ at {} did not take the message (nack)",
                            redact::url(url)
                        ),
                    ))
                }
                Confirmation::NotRequested => {
                    return Err(error(
                        FailureClass::Intermittent,
                        "the channel is not in confirm mode",
                    ))
                }
            }
        }
        Ok(())
    }
}

#[async_trait]
impl Target for AmqpTarget {
    fn batch_size(&self) -> usize {
        self.config.batch
    }

    async fn deliver(&self, batch: &[Delivery<'_>]) -> Result<Delivered, DeliveryError> {
        let keys = self.routing_keys(batch)?;
        let mut slot = self.link.lock().await;
        let link = match slot.take().filter(|l| l.channel.status().connected()) {
            Some(link) => link,
            None => {
                let link = Link::open(&self.config, &self.base, &self.login).await?;
                link.channel
                    .confirm_select(ConfirmSelectOptions::default())
                    .await
                    .map_err(|e| failure(&self.config.url, &e))?;
                link
            }
        };
        let timeout = self.config.timeout();
        let published = tokio::time::timeout(timeout, self.publish(&link.channel, batch, keys))
            .await
            .unwrap_or_else(|_| {
                Err(error(
                    FailureClass::NoAnswer,
                    format!(
                        "RabbitMQ at {} did not confirm the messages within {timeout:?}",
                        redact::url(&self.config.url)
                    ),
                ))
            });
        if published.is_ok() {
            *slot = Some(link);
        }
        // Else the link is dropped: the broker closes a channel after an
        // error, and a confirmation that never came leaves it in doubt.
        published.map(|()| Delivered::default())
    }

    async fn probe(&self) -> Result<String, DeliveryError> {
        check(&self.config, &self.base, &self.login).await
    }

    fn set_credentials(&self, credentials: Credentials) -> Result<(), String> {
        self.login.set(credentials)?;
        if let Ok(mut slot) = self.link.try_lock() {
            *slot = None;
        }
        Ok(())
    }
}

/// Consumes a queue.
pub struct AmqpSource {
    config: BrokerConfig,
    /// The configuration file's folder (TLS files are relative to it).
    base: PathBuf,
    login: Login,
}

impl AmqpSource {
    pub fn new(config: &BrokerConfig, base: &Path) -> AmqpSource {
        AmqpSource {
            config: config.clone(),
            base: base.to_path_buf(),
            login: Login::default(),
        }
    }
}

#[async_trait]
impl Subscribe for AmqpSource {
    async fn subscribe(&self) -> Result<Box<dyn Subscription>, DeliveryError> {
        let url = &self.config.url;
        let queue = self.config.queue.clone().unwrap_or_default();
        let connection = connect(&self.config, &self.base, &self.login).await?;
        let channel = connection
            .create_channel()
            .await
            .map_err(|e| failure(url, &e))?;
        // A queue that exists is used as it is (whatever its arguments); a
        // missing one is declared durable. A passive declare of a missing
        // queue closes its channel: the declaration takes a new one.
        let passive = QueueDeclareOptions {
            passive: true,
            ..Default::default()
        };
        let channel = match channel
            .queue_declare(queue.as_str().into(), passive, FieldTable::default())
            .await
        {
            Ok(_) => channel,
            Err(e) if is_not_found(&e) => {
                let channel = connection
                    .create_channel()
                    .await
                    .map_err(|e| failure(url, &e))?;
                let durable = QueueDeclareOptions {
                    durable: true,
                    ..Default::default()
                };
                channel
                    .queue_declare(queue.as_str().into(), durable, FieldTable::default())
                    .await
                    .map_err(|e| failure(url, &e))?;
                channel
            }
            Err(e) => return Err(failure(url, &e)),
        };
        channel
            .basic_qos(self.config.prefetch(), BasicQosOptions::default())
            .await
            .map_err(|e| failure(url, &e))?;
        let consumer = channel
            .basic_consume(
                queue.as_str().into(),
                "sluice".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(|e| failure(url, &e))?;
        Ok(Box::new(AmqpSubscription {
            url: url.clone(),
            queue,
            _connection: connection,
            channel,
            consumer,
            last_tag: None,
        }))
    }

    async fn probe(&self) -> Result<String, DeliveryError> {
        check(&self.config, &self.base, &self.login).await
    }

    fn set_credentials(&self, credentials: Credentials) -> Result<(), String> {
        self.login.set(credentials)
    }
}

struct AmqpSubscription {
    url: String,
    queue: String,
    _connection: Connection,
    channel: Channel,
    consumer: lapin::Consumer,
    /// The delivery tag of the last message received and not acknowledged.
    last_tag: Option<u64>,
}

impl AmqpSubscription {
    fn take(
        &mut self,
        item: Option<lapin::Result<lapin::message::Delivery>>,
    ) -> Result<Received, DeliveryError> {
        match item {
            Some(Ok(delivery)) => {
                self.last_tag = Some(delivery.delivery_tag);
                Ok(Received {
                    payload: super::broker::record_of(&delivery.data),
                    redelivered: delivery.redelivered,
                })
            }
            Some(Err(e)) => Err(failure(&self.url, &e)),
            None => Err(error(
                FailureClass::Unreachable,
                format!(
                    "RabbitMQ at {} ended the consumer of queue '{}'",
                    redact::url(&self.url),
                    self.queue
                ),
            )),
        }
    }
}

#[async_trait]
impl Subscription for AmqpSubscription {
    async fn receive(&mut self, max: usize) -> Result<Vec<Received>, DeliveryError> {
        let first = self.consumer.next().await;
        let mut received = vec![self.take(first)?];
        while received.len() < max {
            match self.consumer.next().now_or_never() {
                Some(item) => received.push(self.take(item)?),
                None => break,
            }
        }
        Ok(received)
    }

    async fn ack(&mut self) -> Result<(), DeliveryError> {
        let Some(tag) = self.last_tag else {
            return Ok(());
        };
        let multiple = BasicAckOptions { multiple: true };
        tokio::time::timeout(
            Duration::from_secs(10),
            self.channel.basic_ack(tag, multiple),
        )
        .await
        .map_err(|_| {
            error(
                FailureClass::NoAnswer,
                format!(
                    "RabbitMQ at {} took no acknowledgement",
                    redact::url(&self.url)
                ),
            )
        })?
        .map_err(|e| failure(&self.url, &e))?;
        self.last_tag = None;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::test_ca::TestCa;

    fn url() -> String {
        std::env::var("SLUICE_TEST_AMQP_URL").unwrap_or_else(|_| "amqp://127.0.0.1:5672/%2f".into())
    }

    fn config(extra: &str) -> BrokerConfig {
        toml::from_str(&format!("url = \"{}\"\n{extra}", url())).unwrap()
    }

    #[tokio::test]
    async fn a_refused_login_is_unauthorized_and_a_closed_port_unreachable() {
        let login = Login::default();
        login
            .set(Credentials::Basic {
                username: "guest".into(),
                password: "not-the-password".into(),
            })
            .unwrap();
        let e = connect(&config("exchange = \"\""), Path::new("."), &login)
            .await
            .err()
            .unwrap();
        assert_eq!(e.class, FailureClass::Unauthorized, "{e:?}");
        assert!(!e.message.contains("not-the-password"), "{e:?}");
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = closed.local_addr().unwrap().port();
        drop(closed);
        let c: BrokerConfig = toml::from_str(&format!(
            "url = \"amqp://127.0.0.1:{port}/%2f\"\nexchange = \"\""
        ))
        .unwrap();
        let e = connect(&c, Path::new("."), &Login::default())
            .await
            .err()
            .unwrap();
        assert_eq!(e.class, FailureClass::Unreachable, "{e:?}");
    }

    /// The broker's host and port (what the TLS proxy forwards to).
    fn broker_addr() -> String {
        let url = reqwest::Url::parse(&url()).unwrap();
        format!(
            "{}:{}",
            url.host_str().unwrap(),
            url.port_or_known_default().unwrap_or(5672)
        )
    }

    /// A TLS-terminating proxy in front of RabbitMQ (which has no TLS
    /// listener here): its port, and the number of handshakes that failed.
    async fn tls_proxy(
        server: Arc<rustls::ServerConfig>,
    ) -> (u16, Arc<std::sync::atomic::AtomicUsize>) {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let refused = Arc::new(AtomicUsize::new(0));
        let acceptor = tokio_rustls::TlsAcceptor::from(server);
        let count = refused.clone();
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let (acceptor, count) = (acceptor.clone(), count.clone());
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        count.fetch_add(1, Ordering::SeqCst);
                        return;
                    };
                    let mut broker = tokio::net::TcpStream::connect(broker_addr()).await.unwrap();
                    let copied = tokio::io::copy_bidirectional(&mut tls, &mut broker).await;
                    drop(copied);
                });
            }
        });
        (port, refused)
    }

    #[tokio::test]
    async fn amqps_publishes_through_tls_with_our_client_config_and_an_untrusted_certificate_says_why(
    ) {
        use std::sync::atomic::Ordering;
        let dir = tempfile::tempdir().unwrap();
        let (port, refused) = tls_proxy(TestCa::new(dir.path()).server(false)).await;
        let queue = format!("sluice-amqps-{}", std::process::id());
        let tls_config = |extra: &str| -> BrokerConfig {
            toml::from_str(&format!(
                "url = \"amqps://127.0.0.1:{port}/%2f\"\ntimeout = \"5s\"\n{extra}"
            ))
            .unwrap()
        };
        // The queue, made over plain AMQP (the default exchange routes to
        // it by name).
        let plain = Link::open(&config(""), Path::new("."), &Login::default())
            .await
            .unwrap();
        plain
            .channel
            .queue_declare(
                queue.as_str().into(),
                QueueDeclareOptions::default(),
                FieldTable::default(),
            )
            .await
            .unwrap();

        // ca_file relative to the configuration's folder, as configured.
        let trusted = tls_config(&format!(
            "exchange = \"\"\nrouting_key = \"{queue}\"\nca_file = \"ca.pem\""
        ));
        assert!(trusted.validate(KIND, dir.path()).is_empty());
        let target = AmqpTarget::new(&trusted, dir.path());
        let payloads: Vec<String> = (0..3).map(|i| format!("{{\"n\": {i}}}")).collect();
        let keys: Vec<String> = (0..3).map(|i| format!("s:i:{i}")).collect();
        let batch: Vec<Delivery<'_>> = keys
            .iter()
            .zip(&payloads)
            .map(|(k, p)| Delivery::new(k, p))
            .collect();
        target.deliver(&batch).await.unwrap();
        let said = probe(
            &tls_config(&format!("queue = \"{queue}\"\nca_file = \"ca.pem\"")),
            dir.path(),
        )
        .await
        .unwrap();
        assert!(
            said.contains(&format!("queue '{queue}' holds 3 messages")),
            "{said}"
        );
        // The target's own health test, over the same TLS settings.
        let said = Target::probe(&target).await.unwrap();
        assert!(said.ends_with(": connected"), "{said}");
        assert_eq!(refused.load(Ordering::SeqCst), 0);

        // Without ca_file the test CA is not trusted: no connection, and
        // the failure says which certificate problem.
        let e = probe(&tls_config("exchange = \"\""), dir.path())
            .await
            .unwrap_err();
        assert_eq!(e.class, FailureClass::Untrusted, "{e:?}");
        assert!(
            e.message.contains("the certificate is not trusted")
                && e.message.contains("unknown issuer")
                && e.message.contains("ca_file"),
            "{e:?}"
        );
        // The proxy saw the handshake end (the client's alert) a moment
        // after the client gave up.
        let seen = async {
            while refused.load(Ordering::SeqCst) == 0 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(5), seen)
            .await
            .expect("the proxy saw no failed handshake");

        plain
            .channel
            .queue_delete(queue.as_str().into(), Default::default())
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn amqps_presents_client_cert_and_client_key_for_mutual_tls() {
        let dir = tempfile::tempdir().unwrap();
        let ca = TestCa::new(dir.path());
        let (port, _) = tls_proxy(ca.server(true)).await;
        ca.issue("client", true);
        let c = |extra: &str| -> BrokerConfig {
            toml::from_str(&format!(
                "url = \"amqps://localhost:{port}/%2f\"\ntimeout = \"5s\"\nexchange = \"\"\n\
                 ca_file = \"ca.pem\"\n{extra}"
            ))
            .unwrap()
        };
        let mutual = c("client_cert = \"client.pem\"\nclient_key = \"client-key.pem\"");
        assert!(mutual.validate(KIND, dir.path()).is_empty());
        let said = probe(&mutual, dir.path()).await.unwrap();
        assert!(said.ends_with(": connected"), "{said}");
        // Without our certificate the server refuses the connection.
        let e = probe(&c(""), dir.path()).await.unwrap_err();
        assert_eq!(e.class, FailureClass::Untrusted, "{e:?}");
        assert!(e.message.contains("client_cert"), "{e:?}");
    }
}
