//! One connection to an MQTT 3.1.1 broker: rumqttc's packet codec
//! (`rumqttc::mqttbytes::v4`) over a socket of ours, read and written by a
//! task of its own once it is set up.
//!
//! Why not rumqttc's event loop: its socket is out of reach. A broker with
//! Nagle's algorithm on (Mosquitto's default: `set_tcp_nodelay false`)
//! sends the first PUBACKs of a batch and holds the rest until we
//! acknowledge that segment, which Linux delays by up to 40 ms when we have
//! nothing to send back: every batch waited ~40 ms (2,650 records/s with
//! batches of 100). Here the socket asks for an immediate ACK
//! (`TCP_QUICKACK`, which Linux forgets on its own) before each read, and
//! a request's packets (a batch's publishes, a batch's PUBACKs) leave in
//! one write.

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::BytesMut;
use rumqttc::mqttbytes::v4::{Connect, Login, Packet, PubAck, Publish, Subscribe};
use rumqttc::mqttbytes::{Error as CodecError, QoS};
use rumqttc::{ConnAck, ConnectReturnCode, SubscribeReasonCode};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_rustls::rustls::pki_types::ServerName;

use super::{fail, refused, MAX_PACKET};
use crate::connectors::{DeliveryError, FailureClass};
use crate::{redact, tls};

/// How a connection is opened.
pub(super) struct Options {
    pub host: String,
    pub port: u16,
    /// For `mqtts://`: our TLS settings.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    pub client_id: String,
    pub clean_session: bool,
    pub login: Option<(String, String)>,
    pub keep_alive: Duration,
}

/// The socket: TCP, or TLS over TCP.
trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

/// A TCP stream that asks the kernel for an immediate ACK of what comes
/// next before each read (see the module's documentation).
struct QuickAck(TcpStream);

impl AsyncRead for QuickAck {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        #[cfg(target_os = "linux")]
        {
            // Only a hint: a socket that refuses it reads as before.
            socket2::SockRef::from(&self.0).set_tcp_quickack(true).ok();
        }
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for QuickAck {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

/// A connection being set up: the broker has sent its CONNACK.
pub(super) struct Link {
    socket: Box<dyn Io>,
    read: BytesMut,
    what: String,
    keep_alive: Duration,
    /// The next packet id (1..=65535; 0 is not one).
    next_pkid: u16,
}

/// A socket error as a failure: a TLS failure named by [`tls::failure`]
/// (with what to check), anything else a lost connection.
fn io_failure(what: &str, e: &io::Error) -> DeliveryError {
    if let Some(failure) = tls::failure(e) {
        let hint = failure.hint();
        return fail(FailureClass::Untrusted, format!("{what}: {failure}{hint}"));
    }
    fail(
        FailureClass::Unreachable,
        format!(
            "{what}: connection failed or lost: {}",
            redact::urls_in(&e.to_string())
        ),
    )
}

fn closed(what: &str) -> DeliveryError {
    fail(
        FailureClass::Unreachable,
        format!("{what}: connection failed or lost: the broker closed it"),
    )
}

fn protocol(what: &str, e: CodecError) -> DeliveryError {
    fail(
        FailureClass::Intermittent,
        format!("{what}: protocol error: {e}"),
    )
}

impl Link {
    /// Connects (TCP, then TLS for `mqtts://`), sends CONNECT and reads the
    /// CONNACK; a refusal is this call's error. The caller bounds the time.
    pub async fn open(what: &str, options: Options) -> Result<(Link, ConnAck), DeliveryError> {
        let tcp = TcpStream::connect((options.host.as_str(), options.port))
            .await
            .map_err(|e| io_failure(what, &e))?;
        // A batch's last packet leaves at once, not after the broker's ACK
        // of the one before.
        tcp.set_nodelay(true).map_err(|e| io_failure(what, &e))?;
        let tcp = QuickAck(tcp);
        let socket: Box<dyn Io> = match options.tls {
            None => Box::new(tcp),
            Some(config) => {
                let name = ServerName::try_from(options.host.clone()).map_err(|e| {
                    fail(
                        FailureClass::Rejected,
                        format!("{what}: {e}: not a host name TLS can check"),
                    )
                })?;
                let tls = tokio_rustls::TlsConnector::from(config)
                    .connect(name, tcp)
                    .await
                    .map_err(|e| io_failure(what, &e))?;
                Box::new(tls)
            }
        };
        let mut link = Link {
            socket,
            read: BytesMut::with_capacity(64 * 1024),
            what: what.to_owned(),
            keep_alive: options.keep_alive,
            next_pkid: 1,
        };
        let mut connect = Connect::new(options.client_id);
        connect.keep_alive = options.keep_alive.as_secs().min(u64::from(u16::MAX)) as u16;
        connect.clean_session = options.clean_session;
        connect.login = options.login.map(|(u, p)| Login::new(u, p));
        link.write(&[Packet::Connect(connect)]).await?;
        match link.read().await? {
            Packet::ConnAck(ack) if ack.code == ConnectReturnCode::Success => Ok((link, ack)),
            Packet::ConnAck(ack) => {
                let (class, why) = refused(ack.code);
                Err(fail(class, format!("{what}: {why}")))
            }
            other => Err(fail(
                FailureClass::Rejected,
                format!(
                    "{what}: answered {other:?} instead of CONNACK: is this an MQTT 3.1.1 broker?"
                ),
            )),
        }
    }

    fn pkid(&mut self) -> u16 {
        let pkid = self.next_pkid;
        self.next_pkid = self.next_pkid.checked_add(1).unwrap_or(1);
        pkid
    }

    /// Writes `packets` in one write.
    async fn write(&mut self, packets: &[Packet]) -> Result<(), DeliveryError> {
        let mut out = BytesMut::with_capacity(packets.iter().map(Packet::size).sum());
        for p in packets {
            p.write(&mut out, MAX_PACKET)
                .map_err(|e| protocol(&self.what, e))?;
        }
        self.socket
            .write_all(&out)
            .await
            .map_err(|e| io_failure(&self.what, &e))?;
        self.socket
            .flush()
            .await
            .map_err(|e| io_failure(&self.what, &e))
    }

    /// The next packet from the broker.
    async fn read(&mut self) -> Result<Packet, DeliveryError> {
        loop {
            if let Some(packet) = self.parse()? {
                return Ok(packet);
            }
            self.fill().await?;
        }
    }

    /// A whole packet from what has been read, if there is one.
    fn parse(&mut self) -> Result<Option<Packet>, DeliveryError> {
        match Packet::read(&mut self.read, MAX_PACKET) {
            Ok(packet) => Ok(Some(packet)),
            Err(CodecError::InsufficientBytes(_)) => Ok(None),
            Err(e) => Err(protocol(&self.what, e)),
        }
    }

    /// Reads more from the socket; the broker closing it is an error.
    async fn fill(&mut self) -> Result<(), DeliveryError> {
        match self.socket.read_buf(&mut self.read).await {
            Ok(0) => Err(closed(&self.what)),
            Ok(_) => Ok(()),
            Err(e) => Err(io_failure(&self.what, &e)),
        }
    }

    /// Subscribes to `topic` with QoS 1 and reads until the SUBACK: the QoS
    /// granted (`None`: refused), and the publishes that came before it (a
    /// persistent session's messages come right after the CONNACK).
    pub async fn subscribe(
        &mut self,
        topic: &str,
    ) -> Result<(Option<SubscribeReasonCode>, VecDeque<Publish>), DeliveryError> {
        let mut subscribe = Subscribe::new(topic, QoS::AtLeastOnce);
        subscribe.pkid = self.pkid();
        self.write(&[Packet::Subscribe(subscribe)]).await?;
        let mut early = VecDeque::new();
        loop {
            match self.read().await? {
                Packet::SubAck(ack) => return Ok((ack.return_codes.first().copied(), early)),
                Packet::Publish(p) => early.push_back(p),
                _ => {}
            }
        }
    }

    /// A clean goodbye: the broker logs a disconnection, not a lost client.
    pub async fn disconnect(mut self) {
        if self.write(&[Packet::Disconnect]).await.is_ok() {
            self.socket.shutdown().await.ok();
        }
    }

    /// Hands the connection to a task of its own, which writes what
    /// [`Connection`] asks, pings the broker every keep-alive, counts
    /// PUBACKs, and gives every incoming publish to `publishes` (a
    /// source's), the error that ends it last.
    pub fn run(
        self,
        publishes: Option<mpsc::Sender<Result<Publish, DeliveryError>>>,
    ) -> Connection {
        let (progress, watched) = watch::channel(Progress::default());
        let (requests, asked) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            let what = self.what.clone();
            let result = self.serve(asked, &progress, publishes.as_ref()).await;
            if let Err(e) = result {
                tracing::debug!("{}", e.message);
                progress.send_modify(|p| p.lost = Some(e.clone()));
                if let Some(to) = &publishes {
                    to.send(Err(e)).await.ok();
                }
            } else {
                progress.send_modify(|p| p.lost = Some(gone(&what)));
            }
        });
        Connection {
            requests,
            progress: watched,
            task,
        }
    }

    /// The task's loop; `Ok` when the connection's user is gone.
    async fn serve(
        mut self,
        mut asked: mpsc::UnboundedReceiver<Request>,
        progress: &watch::Sender<Progress>,
        publishes: Option<&mpsc::Sender<Result<Publish, DeliveryError>>>,
    ) -> Result<(), DeliveryError> {
        // Packet ids of our publishes not yet acknowledged, in order.
        let mut unacked: VecDeque<u16> = VecDeque::new();
        let mut ping = tokio::time::interval_at(
            tokio::time::Instant::now() + self.keep_alive,
            self.keep_alive,
        );
        let mut awaiting_pong = false;
        loop {
            // Whole packets already read first: a read may bring many.
            while let Some(packet) = self.parse()? {
                match packet {
                    Packet::PubAck(ack) => {
                        if let Some(at) = unacked.iter().position(|&p| p == ack.pkid) {
                            unacked.remove(at);
                            progress.send_modify(|p| p.acks += 1);
                        }
                    }
                    Packet::Publish(p) => {
                        let Some(to) = publishes else { continue };
                        if to.send(Ok(p)).await.is_err() {
                            return Ok(());
                        }
                    }
                    Packet::PingResp => awaiting_pong = false,
                    _ => {}
                }
            }
            tokio::select! {
                read = self.socket.read_buf(&mut self.read) => match read {
                    Ok(0) => return Err(closed(&self.what)),
                    Ok(_) => {}
                    Err(e) => return Err(io_failure(&self.what, &e)),
                },
                request = asked.recv() => {
                    let Some(request) = request else { return Ok(()) };
                    self.answer(request, &mut asked, &mut unacked, progress).await?;
                }
                _ = ping.tick() => {
                    if awaiting_pong {
                        return Err(fail(
                            FailureClass::NoAnswer,
                            format!("{}: the broker did not answer a keep-alive ping", self.what),
                        ));
                    }
                    self.write(&[Packet::PingReq]).await?;
                    awaiting_pong = true;
                }
            }
        }
    }

    /// Writes `request` and every request already waiting behind it, in
    /// one write.
    async fn answer(
        &mut self,
        request: Request,
        asked: &mut mpsc::UnboundedReceiver<Request>,
        unacked: &mut VecDeque<u16>,
        progress: &watch::Sender<Progress>,
    ) -> Result<(), DeliveryError> {
        let mut packets = Vec::new();
        let mut acks = 0u64;
        let mut next = Some(request);
        while let Some(request) = next {
            match request {
                Request::Publish(batch) => {
                    for mut p in batch {
                        p.pkid = self.pkid();
                        unacked.push_back(p.pkid);
                        packets.push(Packet::Publish(p));
                    }
                }
                Request::Ack(pkids) => {
                    acks += pkids.len() as u64;
                    packets.extend(pkids.into_iter().map(|p| Packet::PubAck(PubAck::new(p))));
                }
            }
            next = asked.try_recv().ok();
        }
        self.write(&packets).await?;
        if acks > 0 {
            progress.send_modify(|p| p.acks += acks);
        }
        Ok(())
    }
}

/// What a [`Connection`]'s task is asked to write.
pub(super) enum Request {
    /// QoS 1 publishes (their packet ids are the task's to give).
    Publish(Vec<Publish>),
    /// PUBACKs of incoming publishes, by packet id.
    Ack(Vec<u16>),
}

/// What a connection's task has seen, watched by its user.
#[derive(Debug, Clone, Default)]
pub(super) struct Progress {
    /// PUBACKs counted: received from the broker (a target's publishes),
    /// or written to it (a source's acknowledgements).
    pub acks: u64,
    /// Why the connection ended, once it has.
    pub lost: Option<DeliveryError>,
}

/// An open connection: its task runs until this is dropped (which closes
/// the connection) or the connection fails.
pub(super) struct Connection {
    requests: mpsc::UnboundedSender<Request>,
    pub progress: watch::Receiver<Progress>,
    task: JoinHandle<()>,
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub(super) fn gone(what: &str) -> DeliveryError {
    fail(
        FailureClass::Unreachable,
        format!("{what}: the connection is closed"),
    )
}

impl Connection {
    /// Why the connection is lost, if it is.
    pub fn lost(&self) -> Option<DeliveryError> {
        self.progress.borrow().lost.clone()
    }

    /// Asks the task to write `request`; `Err` when it has ended.
    pub fn ask(&self, request: Request, what: &str) -> Result<(), DeliveryError> {
        self.requests
            .send(request)
            .map_err(|_| self.lost().unwrap_or_else(|| gone(what)))
    }

    /// Waits until `acks` PUBACKs are counted; `Err` when the connection
    /// is lost first.
    pub async fn acks(&mut self, acks: u64, what: &str) -> Result<(), DeliveryError> {
        let seen = self
            .progress
            .wait_for(|p| p.acks >= acks || p.lost.is_some())
            .await
            .map(|p| p.lost.clone());
        match seen {
            Ok(None) => Ok(()),
            Ok(Some(lost)) => Err(lost),
            Err(_) => Err(gone(what)),
        }
    }
}
