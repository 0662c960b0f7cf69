//! `sluice.toml` → a typed, validated [`Config`].
//!
//! # How a file is read
//! [`Config::parse`] is one pure step from text to a validated value. The
//! text is parsed once into a syntax tree that keeps where every key stands
//! (`toml_edit`), and that tree is walked table by table: every value is
//! checked where it stands, unknown keys are reported (with the closest known
//! key when one is close), an endpoint's settings are handed to its kind
//! ([`EndpointKind::from_table`], then [`EndpointKind::validate`]), and the
//! references between flows and endpoints are checked.
//!
//! # Invariants
//! - Every problem becomes a [`ConfigError`] naming the file, the 1-based
//!   line (of the key; of its table's header when the key is missing) and
//!   the dotted key path, e.g. `sites.LIVE.integrations.orders.flows[1].source`.
//!   All of them come back at once, in line order.
//! - A [`Config`] exists only for a file without a single problem: names are
//!   valid URL segments, flow names are unique within a site, every flow's
//!   source and target name endpoints of the site that can play that part.
//! - Relative paths in the file resolve against the file's folder
//!   ([`Config::base_dir`]); a data directory given on the command line is
//!   taken as given.
//! - The PEM files the file names are read while it is checked: a
//!   [`Config`] names only certificates and keys that could be used then.
//!
//! # Files
//! - `mod.rs`: the validated configuration's types and [`Config::load`] /
//!   [`Config::parse`], the one entry.
//! - `reader.rs`: the walk of the syntax tree, table by table, and the
//!   "did you mean" of unknown keys and kinds.
//! - `schedule.rs`: [`Schedule`], a flow's `every …` or cron expression.
//! - `error.rs`: [`ConfigError`] and [`ConfigErrors`], how a problem is
//!   named and shown.
//! - `tests.rs`: files as an operator writes them, and what they answer.
//!
//! Durations (`30s`, `7d`) are read with [`crate::duration`], a leaf both
//! this module and the endpoint kinds' settings use.

mod error;
mod reader;
mod schedule;
#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::connectors::EndpointKind;
use crate::mapping::Mapping;

pub use error::{ConfigError, ConfigErrors};
use reader::Reader;
pub use schedule::Schedule;

/// Where the REST API and the webhooks listen unless the file or `--listen`
/// says otherwise.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7070";

/// Where each site's data file and log file live, relative to the file.
pub const DEFAULT_DATA_DIR: &str = "./data";

/// What the request bodies being read may hold in memory at once, over
/// every webhook and API request, unless the file says otherwise.
pub const DEFAULT_BODY_MEMORY: usize = 16 * 1024 * 1024;

/// Seed 000's verbosity a site keeps unless it says otherwise.
pub const DEFAULT_LOG_LEVEL: u8 = 4;

/// Sent transactions are kept a week unless the site says otherwise.
pub const DEFAULT_KEEP_SENT: Duration = Duration::from_secs(7 * 86_400);
/// How long an integration's history (its charts) is kept by default.
pub const DEFAULT_KEEP_HISTORY: Duration = Duration::from_secs(7 * 86_400);

/// A run or a drain without progress this long is flagged as stalled.
pub const DEFAULT_STALL_AFTER: Duration = Duration::from_secs(300);

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The file it was read from.
    pub file: PathBuf,
    /// That file's folder: relative paths in it resolve against this.
    pub base_dir: PathBuf,
    pub listen: SocketAddr,
    /// `tls_cert` and `tls_key`: the daemon serves HTTPS with them.
    pub tls: Option<ServerTls>,
    /// `behind_proxy = true`: a TLS proxy is in front of the daemon, so
    /// plain HTTP on a non-loopback address is not worth a warning.
    pub behind_proxy: bool,
    /// The file's `data_dir` resolved against `base_dir`, or the command
    /// line's as given.
    pub data_dir: PathBuf,
    /// In file order; names are unique (they are keys of one table).
    pub sites: Vec<SiteConfig>,
    /// The bytes of request bodies held in memory at once, over every
    /// webhook and API request (see `api::body`); no webhook's `max_body`
    /// is larger.
    pub max_body_memory: usize,
    /// `store` and `store_url_env`: where the sites' state is kept.
    pub store: StoreConfig,
    /// `lease`: with `store = "postgres"`, how long a node's lease of an
    /// integration lasts unless renewed (its heartbeat renews it every
    /// third of it); a node that dies is replaced after at most this long.
    pub lease: std::time::Duration,
    /// This node's name in a cluster: `sluice serve --node`, by default the
    /// host's name. Not a key of the file, which every node shares.
    pub node: String,
    /// `[alerts.NAME]`: where alerts go, in file order.
    pub alerts: Vec<AlertConfig>,
}

/// An alert channel, `[alerts.NAME]`.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertConfig {
    pub name: String,
    pub channel: AlertChannel,
    /// The kinds of alert sent to it (`on`): by default all but `paused`.
    pub on: Vec<crate::model::alert::AlertKind>,
    /// Only these sites' alerts (`sites`); `None`: every site's.
    pub sites: Option<Vec<String>>,
    /// While a condition lasts, it is sent again this often; `None`: once.
    pub remind_every: Option<Duration>,
    /// `failing`: more than `failing_threshold` failed deliveries (retried
    /// or for good) of an integration within `failing_window`.
    pub failing_threshold: u64,
    pub failing_window: Duration,
}

impl AlertConfig {
    /// Whether it takes alerts of `site`.
    pub fn covers(&self, site: &str) -> bool {
        self.sites
            .as_ref()
            .is_none_or(|sites| sites.iter().any(|s| s == site))
    }
}

/// How an alert channel sends.
// One value per configured channel, read once: the size of the webhook's
// http settings costs nothing worth a box.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum AlertChannel {
    /// `kind = "webhook"`: a POST of the alert's JSON document (or, with
    /// `format = "slack"`, of `{"text": …}`), with every key of an `http`
    /// endpoint (headers, auth, TLS, timeout).
    Webhook {
        http: crate::connectors::http::HttpConfig,
        format: AlertFormat,
    },
    /// `kind = "email"`: one plain-text email per alert through an SMTP
    /// server (`smtp_url`, `username` + `password_env`, `from`, `to`, the
    /// TLS keys, `timeout`).
    Email(crate::connectors::email::EmailConfig),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlertFormat {
    /// The alert's JSON document.
    Json,
    /// `{"text": "…"}`, as Slack and Mattermost incoming webhooks take.
    Slack,
}

pub const DEFAULT_FAILING_THRESHOLD: u64 = 10;
pub const DEFAULT_FAILING_WINDOW: Duration = Duration::from_secs(300);

/// The lease when the file sets none.
pub const DEFAULT_LEASE: std::time::Duration = std::time::Duration::from_secs(5);

/// The host's name, or `sluice` when it cannot be read.
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "sluice".to_string())
}

/// Where the sites' queues, states, checkpoints, logs and audit trails are
/// kept.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum StoreConfig {
    /// `store = "sqlite"`, the default: one SQLite file per site
    /// (`data_file`).
    #[default]
    Sqlite,
    /// `store = "postgres"`: one PostgreSQL database for every site, its
    /// URL read when the daemon starts from the environment variable
    /// `url_env` (`store_url_env`, default [`DEFAULT_STORE_URL_ENV`]), so
    /// that its password is in no file.
    Postgres { url_env: String },
}

/// The variable holding the store's URL when `store_url_env` names none.
pub const DEFAULT_STORE_URL_ENV: &str = "SLUICE_STORE_URL";

/// The daemon's own certificate: both PEM files were readable and usable
/// when the file was checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerTls {
    /// `tls_cert`, resolved against the file's folder: the certificate
    /// chain, the daemon's own first.
    pub cert: PathBuf,
    /// `tls_key`, resolved against the file's folder: its private key.
    pub key: PathBuf,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SiteConfig {
    pub name: String,
    /// Seed 000's verbosity, 0..=9: lines with a higher number are not kept.
    pub log_level: u8,
    /// The site's SQLite file; no other site's data or log file.
    pub data_file: PathBuf,
    /// The site's plain-text log; no other site's data or log file.
    pub log_file: PathBuf,
    /// How long sent and ignored transactions are kept (for listing and
    /// replay) before they are deleted.
    pub keep_sent: Duration,
    /// How long each integration's history (counts per minute, rolled into
    /// hours after two days) is kept; zero (`keep_history = "off"`): no
    /// history is written.
    pub keep_history: Duration,
    /// A run or a drain that makes no progress this long is flagged as
    /// stalled, with the reason, in its status.
    pub stall_after: Duration,
    /// In file order.
    pub endpoints: Vec<EndpointConfig>,
    /// In file order.
    pub integrations: Vec<IntegrationConfig>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct EndpointConfig {
    pub name: String,
    /// Its settings, already validated by the kind.
    pub kind: EndpointKind,
}

#[derive(Debug, Clone, PartialEq)]
pub struct IntegrationConfig {
    pub name: String,
    pub on_error: OnError,
    /// In file order; may be empty (the integration is then Idle).
    pub flows: Vec<FlowConfig>,
}

/// What a record the target rejects does to the queue behind it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, utoipa::ToSchema)]
#[schema(rename_all = "lowercase")]
pub enum OnError {
    /// The queue waits behind it (strict order).
    Block,
    /// It is marked Error and the rest goes on.
    Skip,
}

#[derive(Debug, Clone, PartialEq)]
pub struct FlowConfig {
    /// Unique within the site, across its integrations: the API addresses a
    /// flow as `/sites/{site}/flows/{flow}`.
    pub name: String,
    /// An endpoint of the same site that is a pull or a push source.
    pub source: String,
    /// An endpoint of the same site that is a target.
    pub target: String,
    /// None for a flow from a webhook (its records arrive by POST).
    pub schedule: Option<Schedule>,
    pub key: Option<String>,
    /// Always set for a flow from a `file` endpoint.
    pub cursor: Option<String>,
    pub enabled: bool,
    /// Whether intermittent failures (busy, no answer) are retried by
    /// themselves (seed 003's auto-resolve). Off, the first one counts as a
    /// failure for good and `on_error` decides.
    pub auto_resolve: bool,
    /// Attempts after which an intermittent failure counts as one for good;
    /// 0: no limit.
    pub retry_limit: u32,
    /// `map` and `transform`, checked (the jq program compiled): what a
    /// record becomes when its transaction is sent. The identity when the
    /// flow has neither.
    pub mapping: Mapping,
}

impl Config {
    /// Reads and validates the file. `data_dir_override` (a command-line
    /// flag) wins over the file's `data_dir` and is taken as given.
    pub fn load(path: &Path, data_dir_override: Option<&Path>) -> Result<Config, ConfigErrors> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigErrors(vec![ConfigError {
                file: path.to_path_buf(),
                line: None,
                key: String::new(),
                message: format!("cannot read the file: {e}"),
            }])
        })?;
        Config::parse(&text, path, data_dir_override)
    }

    /// Validates `text` as if read from `file` (which names it in errors and
    /// whose folder relative paths resolve against). Nothing is read but the
    /// TLS files it names (`tls_cert`, `tls_key`, an endpoint's `ca_file`,
    /// `client_cert`, `client_key`): a certificate that cannot be used is a
    /// problem of the configuration, found before anything starts.
    pub fn parse(
        text: &str,
        file: &Path,
        data_dir_override: Option<&Path>,
    ) -> Result<Config, ConfigErrors> {
        let mut reader = Reader::new(file, text);
        let config = match toml_edit::ImDocument::parse(text) {
            Ok(doc) => Some(reader.config(doc.as_table(), data_dir_override)),
            Err(e) => {
                let line = reader.line(e.span());
                reader.error(line, "", format!("not valid TOML: {}", e.message().trim()));
                None
            }
        };
        let mut errors = reader.errors;
        match config {
            Some(config) if errors.is_empty() => Ok(config),
            _ => {
                errors.sort_by_key(|e| e.line.unwrap_or(0));
                Err(ConfigErrors(errors))
            }
        }
    }

    pub fn site(&self, name: &str) -> Option<&SiteConfig> {
        self.sites.iter().find(|s| s.name == name)
    }
}

impl SiteConfig {
    pub fn endpoint(&self, name: &str) -> Option<&EndpointConfig> {
        self.endpoints.iter().find(|e| e.name == name)
    }

    pub fn integration(&self, name: &str) -> Option<&IntegrationConfig> {
        self.integrations.iter().find(|i| i.name == name)
    }

    /// The flow and its integration.
    pub fn flow(&self, name: &str) -> Option<(&IntegrationConfig, &FlowConfig)> {
        self.integrations
            .iter()
            .find_map(|i| i.flows.iter().find(|f| f.name == name).map(|f| (i, f)))
    }
}
