//! The daemon on the network: the engine and the API listener, over plain
//! HTTP or HTTPS.
//!
//! # Invariants
//! - Shutdown is a parameter of [`Server::run`]: `sluice serve` passes
//!   Ctrl-C or SIGTERM ([`shutdown_signal`]); whoever embeds the daemon
//!   passes their own. The engine's own shutdown token ends it too.
//! - Nothing listens before the daemon is known to be allowed to
//!   ([`Server::open`] refuses beyond loopback without API tokens).
//! - With `tls_cert` and `tls_key` every connection speaks TLS, and each
//!   handshake runs in a task of its own bounded by [`HANDSHAKE_TIMEOUT`]:
//!   a client that never finishes its handshake holds up no other.
//! - The line `sluice listening on http://ADDR` (or `https://`) on standard
//!   output is an interface: tests and scripts read the port from it.
//! - Plain HTTP beyond loopback, without `behind_proxy = true`, is said
//!   out loud: tokens would travel in clear text.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::serve::ListenerExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use crate::api::body::BodyBudget;
use crate::api::ApiState;
use crate::auth::Tokens;
use crate::config::{Config, StoreConfig};
use crate::engine::Daemon;

/// How long a client may take over its TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Connections whose handshake is done, waiting for axum to take them.
const READY_QUEUE: usize = 64;

/// `sluice serve` as the command line gave it: the configuration loaded
/// (exit 2 on any error in it), then [`serve`] (exit 1 if it fails).
pub async fn command(args: crate::cli::serve::ServeArgs) -> Result<(), crate::cli::CliError> {
    serve(args.config()?)
        .await
        .map_err(|e| crate::cli::CliError::Failed(format!("{e:#}")))
}

/// `sluice serve`: sets up the process's log output (standard error),
/// opens the daemon, listens on `config.listen` and serves until Ctrl-C or
/// SIGTERM.
pub async fn serve(config: Config) -> anyhow::Result<()> {
    let _already = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SLUICE_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .try_init();
    let listen = config.listen;
    let server = Server::open(config).await?;
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    server.run(listener, shutdown_signal()).await
}

/// A daemon ready to serve: its sites opened, its API tokens and its
/// certificate loaded.
pub struct Server {
    config: Config,
    api: ApiState,
    tls: Option<Arc<rustls::ServerConfig>>,
}

impl Server {
    /// Opens every site's store and loads the daemon's certificate. Refused
    /// when it would listen beyond loopback without API tokens: nothing
    /// listens yet, so nothing is exposed by the refusal.
    pub async fn open(config: Config) -> anyhow::Result<Server> {
        crate::metrics::install();
        let tls = match &config.tls {
            Some(files) => Some(Arc::new(
                crate::tls::server_config(&files.cert, &files.key)
                    .context("the daemon's certificate cannot be used")?,
            )),
            None => None,
        };
        // First: it takes the data directory's lock, which guards the
        // tokens' file too (with `store = "sqlite"`), and says which
        // variable is missing (with `store = "postgres"`).
        let daemon = Daemon::open(&config).await?;
        let tokens = Tokens::open_configured(&config, Some(&config.node))
            .await
            .with_context(|| match &config.store {
                StoreConfig::Sqlite => format!(
                    "cannot open the API tokens in {}",
                    config.data_dir.display()
                ),
                StoreConfig::Postgres { .. } => {
                    "cannot open the API tokens in PostgreSQL".to_string()
                }
            })?;
        let loopback_only = config.listen.ip().is_loopback();
        if !loopback_only && !tokens.any().await.context("cannot read the API tokens")? {
            anyhow::bail!(
                "refusing to listen on {} without API tokens: anyone who reaches it could stop \
                 your sites. Create one first: sluice token create --config {} --role admin \
                 --name NAME (or listen on 127.0.0.1)",
                config.listen,
                config.file.display()
            );
        }
        let api = ApiState {
            daemon,
            tokens,
            loopback_only,
            budget: BodyBudget::new(config.max_body_memory),
        };
        Ok(Server { config, api, tls })
    }

    /// Restores the sites and serves the REST API on `listener` (HTTPS
    /// with `tls_cert` and `tls_key`) until `shutdown` completes or the
    /// engine shuts down; then stops every site's workers.
    pub async fn run(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let Server { config, api, tls } = self;
        let daemon = api.daemon.clone();
        let addr = listener.local_addr()?;
        if !addr.ip().is_loopback() && api.loopback_only {
            // Open mode was allowed for the configured loopback address.
            anyhow::bail!(
                "given a listener on {addr}, but the configuration listens on {}",
                config.listen
            );
        }
        daemon.restore().await?;
        let scheme = if tls.is_some() { "https" } else { "http" };
        daemon.join_cluster(format!("{scheme}://{addr}"));
        if tls.is_none() && !addr.ip().is_loopback() && !config.behind_proxy {
            tracing::warn!(
                "listening on {addr} over plain HTTP: API tokens and the dashboard's session \
                 travel in clear text. Set tls_cert and tls_key, or behind_proxy = true when a \
                 TLS proxy is in front"
            );
        }
        // Tests and scripts read this line to find the port when asked for :0.
        println!("sluice listening on {scheme}://{addr}");
        tracing::info!(%addr, file = %config.file.display(), "sluice is up");
        #[cfg(unix)]
        {
            let daemon = daemon.clone();
            if let Ok(mut hup) =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            {
                tokio::spawn(async move {
                    while hup.recv().await.is_some() {
                        daemon.reload_all("SIGHUP").await;
                    }
                });
            }
        }
        let stopping = daemon.shutdown_token();
        let shutdown = async move {
            tokio::select! {
                _ = shutdown => {}
                _ = stopping.cancelled() => {}
            }
        };
        let app = crate::api::router(api);
        let served = match tls {
            None => {
                axum::serve(
                    listener,
                    app.into_make_service_with_connect_info::<SocketAddr>(),
                )
                .with_graceful_shutdown(shutdown)
                .await
            }
            Some(tls) => {
                let app = app.layer(axum::Extension(crate::api::auth::ServedOverTls));
                // A tapped listener is what axum gives `ConnectInfo<SocketAddr>`
                // for, whatever its kind; the API needs the peer's address.
                let listener = TlsListener::new(listener, tls)?.tap_io(|_| {});
                axum::serve(
                    listener,
                    app.into_make_service_with_connect_info::<SocketAddr>(),
                )
                .with_graceful_shutdown(shutdown)
                .await
            }
        };
        daemon.shutdown().await;
        served.context("the API server failed")
    }
}

/// Ctrl-C, or SIGTERM on Unix.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ignored = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ignored = ctrl_c.await;
    }
}

/// Hands axum the connections whose TLS handshake is done. The TCP accept
/// loop runs in a task of its own and starts each handshake in another, so
/// a slow or silent client delays no one; it ends (and the port closes)
/// when axum drops the listener at shutdown.
struct TlsListener {
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
}

impl TlsListener {
    fn new(tcp: TcpListener, config: Arc<rustls::ServerConfig>) -> std::io::Result<TlsListener> {
        let local = tcp.local_addr()?;
        let (sender, ready) = mpsc::channel(READY_QUEUE);
        tokio::spawn(accept_loop(tcp, TlsAcceptor::from(config), sender));
        Ok(TlsListener { ready, local })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(connection) => connection,
            // The accept loop only ends once this listener is gone.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        Ok(self.local)
    }
}

async fn accept_loop(
    tcp: TcpListener,
    acceptor: TlsAcceptor,
    ready: mpsc::Sender<(TlsStream<TcpStream>, SocketAddr)>,
) {
    loop {
        let accepted = tokio::select! {
            _ = ready.closed() => return,
            accepted = tcp.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(connection) => connection,
            Err(e) => {
                accept_failed(e).await;
                continue;
            }
        };
        let acceptor = acceptor.clone();
        let ready = ready.clone();
        tokio::spawn(async move {
            if let Err(e) = stream.set_nodelay(true) {
                tracing::debug!(%peer, "cannot set TCP_NODELAY: {e}");
            }
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => {
                    if ready.send((tls, peer)).await.is_err() {
                        tracing::debug!(%peer, "shutting down: connection dropped");
                    }
                }
                Ok(Err(e)) => tracing::debug!(%peer, "TLS handshake failed: {e}"),
                Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
            }
        });
    }
}

/// As axum does for plain TCP: a connection that failed before it was
/// accepted is nothing; anything else (out of file descriptors) is said and
/// waited out.
async fn accept_failed(e: std::io::Error) {
    use std::io::ErrorKind;
    if matches!(
        e.kind(),
        ErrorKind::ConnectionRefused | ErrorKind::ConnectionAborted | ErrorKind::ConnectionReset
    ) {
        return;
    }
    tracing::error!("cannot accept a connection: {e}");
    tokio::time::sleep(Duration::from_secs(1)).await;
}
