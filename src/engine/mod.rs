//! The daemon's moving parts.
//!
//! - [`Daemon`]: every configured site, opened from its store and restored to
//!   the state it was last left in.
//! - [`site`]: per site a supervisor that starts and stops its workers, named
//!   as in seed 000: [`all_others`] (sends queued transactions), [`get_data`]
//!   (runs flows, on schedule and on request), [`trigger`] (takes ad-hoc
//!   commands), [`monitor`] (endpoint health).
//! - [`integration`]: an integration's desired state and holds, and the gate
//!   that makes a pause take effect before it returns.
//! - [`sender`]: the per-integration delivery loop.
//! - [`backoff`]: the one back-off (first wait, doubling, cap, jitter)
//!   of the sender's retries and the health probes.
//! - [`flow_run`]: one run of a flow, page by page, checkpoint with each page.
//! - [`scheduler`]: when scheduled flows are due.
//! - [`endpoint`]: what is observed of each endpoint.
//! - [`counters`]: what is counted as it happens (deliveries, latency,
//!   probes), for `/metrics`.
//! - [`snapshot`]: every site's state at one moment, as plain data, for
//!   readers outside the engine (the `/metrics` gauges).
//! - [`health`]: endpoint states from deliveries and probes (the model
//!   decides them; here the time: windows, probes, their pace), and the
//!   system's holds (`endpoint-offline`, `unauthorized`) they place and lift.
//! - [`Daemon::reload_site`]: a site's configuration applied again.
//! - [`errors`]: what an error's cause is (the rule that groups an
//!   integration's transactions in Error), and the grouping; the site reads
//!   and acts on the groups (`site/errors.rs`).

pub mod alerts;
pub mod all_others;
pub mod backoff;
pub mod cluster;
pub mod consume;
pub mod counters;
pub mod endpoint;
pub mod errors;
pub mod flow_run;
pub mod get_data;
pub mod health;
pub mod history;
pub mod integration;
pub mod monitor;
pub mod scheduler;
pub mod sender;
pub mod site;
pub mod snapshot;
pub mod trigger;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, StoreConfig};
use crate::model::Refusal;
use crate::store::{SqliteStore, Store, StoreError};

pub use integration::Integration;
pub use site::Site;
pub use snapshot::Snapshot;

/// Why the engine did not do what it was asked.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("{0}")]
    NotFound(String),
    #[error(transparent)]
    Refused(#[from] Refusal),
    /// Not now: the site or integration does not take this while it is in
    /// its current state; try again after the given time.
    #[error("{message}")]
    Unavailable {
        message: String,
        retry_after: Duration,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl EngineError {
    /// Whether it failed only for lack of space on the disk: nothing was
    /// done, and the same request succeeds once space is freed.
    pub fn is_disk_full(&self) -> bool {
        matches!(self, EngineError::Store(e) if e.is_disk_full())
    }
}

pub type Result<T> = std::result::Result<T, EngineError>;

fn join(names: &[&String]) -> String {
    names
        .iter()
        .map(|s| s.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Every site of the configuration, each with its store, log and workers.
pub struct Daemon {
    /// Replaced one site at a time by a reload.
    sites: parking_lot::RwLock<BTreeMap<String, Arc<Site>>>,
    /// Cancelled when the daemon shuts down; every site's token is a child.
    shutdown: CancellationToken,
    /// What a reload reads again.
    config_file: std::path::PathBuf,
    data_dir: std::path::PathBuf,
    /// One reload at a time.
    reloading: tokio::sync::Mutex<()>,
    /// This daemon's hold on its data directory: no second daemon shares
    /// it while this one lives.
    _lock: crate::data_dir::Lock,
    /// With `store = "postgres"`: this node of the cluster of every daemon
    /// on that database.
    cluster: Option<Arc<cluster::Cluster>>,
    /// This node's name, and when it started.
    node: String,
    started_at: crate::model::Millis,
    /// Where its API listens, once it does.
    address: std::sync::OnceLock<String>,
    /// The daemon's own certificate chain (`tls_cert`): trusted, beside
    /// the platform's roots, when it calls the other nodes of its cluster.
    tls_cert: Option<std::path::PathBuf>,
    /// `[alerts.NAME]`, as read at start.
    alerts: Arc<Vec<alerts::Channel>>,
}

impl Daemon {
    /// Opens every site's store. Nothing runs yet: see [`Daemon::restore`].
    pub async fn open(config: &Config) -> anyhow::Result<Arc<Daemon>> {
        // First: a second daemon on the same files would deliver every
        // record twice.
        let lock = crate::data_dir::Lock::take(&config.data_dir)?;
        let shutdown = CancellationToken::new();
        let mut sites = BTreeMap::new();
        let store_url = match &config.store {
            StoreConfig::Sqlite => None,
            StoreConfig::Postgres { url_env } => Some(std::env::var(url_env).map_err(|_| {
                anyhow::anyhow!(
                    "store = \"postgres\": the environment variable {url_env} (store_url_env) \
                     is not set; it holds the database's URL, postgres://USER:PASSWORD@HOST:5432/DB"
                )
            })?),
        };
        let (cluster, fences) = match &store_url {
            None => (None, None),
            Some(url) => {
                let fences =
                    crate::store::postgres::cluster::Fences::new(&config.node, config.lease);
                let db = crate::store::postgres::cluster::ClusterDb::open(url)
                    .context("cannot open the cluster's tables in PostgreSQL")?;
                (
                    Some(cluster::Cluster::new(
                        &config.node,
                        config.lease,
                        db,
                        fences.clone(),
                    )),
                    Some(fences),
                )
            }
        };
        for site_config in &config.sites {
            let store: Arc<dyn Store> = match store_url.as_ref().zip(fences.as_ref()) {
                None => Arc::new(SqliteStore::open(&site_config.data_file).with_context(|| {
                    format!(
                        "site {}: cannot open its data file {}",
                        site_config.name,
                        site_config.data_file.display()
                    )
                })?),
                Some((url, fences)) => Arc::new(
                    crate::store::PgStore::open(url, &site_config.name)
                        .await
                        .with_context(|| {
                            format!(
                                "site {}: cannot open its store in PostgreSQL",
                                site_config.name
                            )
                        })?
                        .fenced(fences.clone()),
                ),
            };
            let site = Site::open(
                site_config.clone(),
                &config.base_dir,
                store,
                shutdown.child_token(),
                cluster.clone(),
            )
            .await
            .with_context(|| format!("site {}: cannot restore its state", site_config.name))?;
            sites.insert(site_config.name.clone(), site);
        }
        Ok(Arc::new(Daemon {
            _lock: lock,
            sites: parking_lot::RwLock::new(sites),
            shutdown,
            config_file: config.file.clone(),
            data_dir: config.data_dir.clone(),
            reloading: tokio::sync::Mutex::new(()),
            cluster,
            node: config.node.clone(),
            started_at: crate::model::now_millis(),
            address: std::sync::OnceLock::new(),
            tls_cert: config.tls.as_ref().map(|t| t.cert.clone()),
            alerts: Arc::new(
                config
                    .alerts
                    .iter()
                    .map(|a| alerts::Channel::new(a.clone(), &config.base_dir))
                    .collect(),
            ),
        }))
    }

    /// On a node of a cluster: registers it (its API at `address`) and
    /// starts its heartbeat, which takes the leases of its share of the
    /// integrations. Nothing on a single node.
    pub fn join_cluster(self: &Arc<Self>, address: String) {
        let _first = self.address.set(address.clone());
        if let Some(cluster) = &self.cluster {
            tokio::spawn(
                cluster
                    .clone()
                    .run(self.clone(), address, self.shutdown.child_token()),
            );
        }
    }

    /// Every node of the cluster; on a single node, this one, which sends
    /// every integration.
    pub async fn nodes(&self) -> Result<Vec<cluster::NodeView>> {
        if let Some(cluster) = &self.cluster {
            return cluster.nodes().await;
        }
        let now = crate::model::now_millis();
        Ok(vec![cluster::NodeView {
            name: self.node.clone(),
            address: self.address.get().cloned().unwrap_or_default(),
            started_at: cluster::rfc3339(self.started_at),
            heartbeat_at: cluster::rfc3339(now),
            alive: true,
            integrations: self
                .sites()
                .iter()
                .flat_map(|s| {
                    s.integrations()
                        .map(|i| format!("{}/{}", s.name, i.name))
                        .collect::<Vec<_>>()
                })
                .collect(),
        }])
    }

    /// An HTTP client for the other nodes' APIs: it trusts the platform's
    /// roots and this node's own certificate chain (the nodes of a cluster
    /// share one, or certificates of one authority).
    pub fn peer_client(&self) -> anyhow::Result<reqwest::Client> {
        let tls = crate::tls::client_config(crate::tls::ClientFiles {
            ca_file: self.tls_cert.as_deref(),
            identity: None,
        })
        .map_err(|e| anyhow::anyhow!("tls_cert: {}", e.message))?;
        Ok(reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .use_preconfigured_tls(tls)
            .build()?)
    }

    /// The cluster this daemon is a node of, if any.
    pub fn cluster(&self) -> Option<&Arc<cluster::Cluster>> {
        self.cluster.as_ref()
    }

    /// Brings each site up in the state it was last left in; a site never
    /// stopped before starts Running.
    pub async fn restore(self: &Arc<Self>) -> anyhow::Result<()> {
        for site in self.sites() {
            site.restore().await?;
        }
        tokio::spawn(alerts::run(
            self.clone(),
            self.alerts.clone(),
            self.shutdown.child_token(),
        ));
        Ok(())
    }

    /// The alert channel `name`.
    pub fn alert_channel(&self, name: &str) -> Result<&alerts::Channel> {
        self.alerts
            .iter()
            .find(|c| c.config.name == name)
            .ok_or_else(|| EngineError::NotFound(format!("no alert channel '{name}'")))
    }

    /// Every site, in name order.
    pub fn sites(&self) -> Vec<Arc<Site>> {
        self.sites.read().values().cloned().collect()
    }

    /// Reads the configuration file again and applies the site's part of it:
    /// while it applies, the site's integrations show Server Reinitializing;
    /// states, holds, queues and checkpoints stay (they live in the site's
    /// store). Refused, with every error, if the file is invalid.
    pub async fn reload_site(&self, name: &str, actor: &str) -> Result<()> {
        self.reload_site_as(name, actor, true).await
    }

    /// A reload; `asked` when a person (or SIGHUP) asked this node, not
    /// when it follows another node's.
    async fn reload_site_as(&self, name: &str, actor: &str, asked: bool) -> Result<()> {
        let _one = self.reloading.lock().await;
        let old = self.site(name)?;
        let config =
            crate::config::Config::load(&self.config_file, Some(&self.data_dir)).map_err(|e| {
                EngineError::Refused(Refusal::Invalid(format!(
                    "the configuration is not valid; nothing was changed:\n{e}"
                )))
            })?;
        let Some(fresh) = config.site(name).cloned() else {
            return Err(EngineError::Refused(Refusal::Conflict(format!(
                "site {name} is no longer in {}; restart the daemon to remove it",
                self.config_file.display()
            ))));
        };
        old.set_reinitializing(true);
        old.log
            .write(
                crate::log::level::INFO,
                format!("Reloading the configuration of site {name} ({actor})"),
            )
            .await;
        // Deliveries in flight end normally (a reload is not a stop).
        for integration in old.integrations() {
            integration.suspend().await;
        }
        old.halt_workers().await;
        old.log.set_keep_level(fresh.log_level);
        let before: Vec<crate::config::IntegrationConfig> =
            old.integrations().map(|i| i.config.clone()).collect();
        let site = match Site::open_with_log(
            fresh,
            &config.base_dir,
            old.store.clone(),
            self.shutdown.child_token(),
            Some(old.log.clone()),
            self.cluster.clone(),
        )
        .await
        {
            Ok(site) => site,
            Err(e) => {
                // Back to what ran before.
                old.set_reinitializing(false);
                for integration in old.integrations() {
                    integration.unsuspend();
                }
                let _restarted = old.restore().await;
                return Err(e);
            }
        };
        // Restored (its state read, its workers started) before the API
        // sees it: until then the old one answers, and takes records, as it
        // did (a hook is not refused because the new one has not read that
        // the site runs).
        let restored = site.restore().await;
        self.sites.write().insert(name.to_string(), site.clone());
        restored?;
        let after: Vec<String> = site.integrations().map(|i| i.name.clone()).collect();
        let was = |n: &String| before.iter().find(|c| &c.name == n);
        let added: Vec<&String> = after.iter().filter(|n| was(n).is_none()).collect();
        let removed: Vec<&String> = before
            .iter()
            .map(|c| &c.name)
            .filter(|n| !after.contains(n))
            .collect();
        // A new or changed integration restarts (seed 001: Restarting until
        // its first sync); an unchanged one goes on as it was.
        for integration in site.integrations() {
            let changed = was(&integration.name).is_none_or(|c| *c != integration.config);
            if asked
                && changed
                && integration.captures()
                && site.state() == crate::model::SiteState::Running
            {
                site.queue_start(integration.clone());
            }
        }
        site.log
            .write(
                crate::log::level::INFO,
                format!(
                    "Configuration of site {name} reloaded{}{}",
                    if added.is_empty() {
                        String::new()
                    } else {
                        format!("; new: {}", join(&added))
                    },
                    if removed.is_empty() {
                        String::new()
                    } else {
                        format!(
                            "; no longer configured (their queues stay in the data file): {}",
                            join(&removed)
                        )
                    }
                ),
            )
            .await;
        if !asked {
            return Ok(());
        }
        site.audit(actor, "site.reload", name, None, "ok").await;
        if let Some(cluster) = &self.cluster {
            // Every node reads the same file: the others reload it too.
            cluster.reloaded(name).await;
        }
        Ok(())
    }

    /// A reload made on another node of the cluster: this node reads the
    /// file again too (audited by the node that was asked).
    pub(crate) async fn follow_reload(&self, name: &str, node: &str) {
        if let Err(e) = self
            .reload_site_as(name, &format!("node {node}"), false)
            .await
        {
            if let Ok(site) = self.site(name) {
                site.log
                    .write(
                        crate::log::level::ERROR,
                        format!("Reload made on node {node} refused here: {e}"),
                    )
                    .await;
            }
        }
    }

    /// Reloads every site (SIGHUP); errors are logged, not fatal.
    pub async fn reload_all(&self, actor: &str) {
        for site in self.sites() {
            if let Err(e) = self.reload_site(&site.name, actor).await {
                site.log
                    .write(crate::log::level::ERROR, format!("Reload refused: {e}"))
                    .await;
            }
        }
    }

    /// Cancelled when the daemon shuts down: long answers (log streams)
    /// end with it.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    pub fn site(&self, name: &str) -> Result<Arc<Site>> {
        self.sites
            .read()
            .get(name)
            .cloned()
            .ok_or_else(|| EngineError::NotFound(format!("no site named '{name}'")))
    }

    /// Stops every site's workers (without recording the sites as stopped:
    /// they come back as they were at the next start of the daemon).
    pub async fn shutdown(&self) {
        self.shutdown.cancel();
        for site in self.sites() {
            site.halt_workers().await;
        }
        if let Some(cluster) = &self.cluster {
            cluster.leave().await;
        }
    }
}
