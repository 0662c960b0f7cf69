//! What sluice reads from and delivers to: the [`Source`] and [`Target`]
//! traits and one file per endpoint kind.
//!
//! Adding a kind is adding one file here (its configuration, its validation,
//! its `Source` and/or `Target`) and one arm in [`EndpointKind`].
//!
//! [`email`] is not an endpoint kind but the email alert channel, laid out
//! the same way (settings, their validation, its sender).

pub mod amqp;
pub mod broker;
pub mod email;
pub mod file;
pub mod generator;
pub mod http;
pub mod http_auth;
pub mod http_poll;
pub mod mqtt;
pub mod nats;
pub mod sql;
pub mod template;
pub mod webhook;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::Deserialize;

pub use crate::model::FailureClass;
use crate::model::RunMode;

/// An endpoint's kind and its kind-specific settings, as configured.
// One value per configured endpoint, built once: the size of the largest
// variant (http's settings) costs nothing worth a box.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum EndpointKind {
    Webhook(webhook::WebhookConfig),
    File(file::FileConfig),
    Http(http::HttpConfig),
    Generator(generator::GeneratorConfig),
    HttpPoll(http_poll::HttpPollConfig),
    Postgres(sql::SqlConfig),
    Mysql(sql::SqlConfig),
    Amqp(broker::BrokerConfig),
    Nats(broker::BrokerConfig),
    Mqtt(broker::BrokerConfig),
}

/// A problem with one key of an endpoint's settings: the key (relative to
/// the endpoint's table) and what is wrong with it.
pub type KeyProblem = (String, String);

impl EndpointKind {
    /// The kinds, as written in `kind = "…"`.
    pub const NAMES: [&'static str; 10] = [
        "webhook",
        "file",
        "http",
        "generator",
        "http_poll",
        "postgres",
        "mysql",
        "amqp",
        "nats",
        "mqtt",
    ];

    /// Reads the settings of kind `kind` from the endpoint's table (without
    /// its `kind` key). `None` for an unknown kind.
    pub fn from_table(
        kind: &str,
        table: toml::Table,
    ) -> Option<Result<EndpointKind, toml::de::Error>> {
        fn de<T: for<'de> Deserialize<'de>>(t: toml::Table) -> Result<T, toml::de::Error> {
            T::deserialize(t)
        }
        Some(match kind {
            "webhook" => de(table).map(EndpointKind::Webhook),
            "file" => de(table).map(EndpointKind::File),
            "http" => de(table).map(EndpointKind::Http),
            "generator" => de(table).map(EndpointKind::Generator),
            "http_poll" => de(table).map(EndpointKind::HttpPoll),
            "postgres" => de(table).map(EndpointKind::Postgres),
            "mysql" => de(table).map(EndpointKind::Mysql),
            "amqp" => de(table).map(EndpointKind::Amqp),
            "nats" => de(table).map(EndpointKind::Nats),
            "mqtt" => de(table).map(EndpointKind::Mqtt),
            _ => return None,
        })
    }

    pub fn name(&self) -> &'static str {
        match self {
            EndpointKind::Webhook(_) => "webhook",
            EndpointKind::File(_) => "file",
            EndpointKind::Http(_) => "http",
            EndpointKind::Generator(_) => "generator",
            EndpointKind::HttpPoll(_) => "http_poll",
            EndpointKind::Postgres(_) => "postgres",
            EndpointKind::Mysql(_) => "mysql",
            EndpointKind::Amqp(_) => "amqp",
            EndpointKind::Nats(_) => "nats",
            EndpointKind::Mqtt(_) => "mqtt",
        }
    }

    /// Problems with the values (each naming its key); empty when valid.
    /// Files the settings name (TLS certificates) are read relative to
    /// `base`, the configuration file's folder.
    pub fn validate(&self, base: &std::path::Path) -> Vec<KeyProblem> {
        match self {
            EndpointKind::Webhook(c) => c.validate(),
            EndpointKind::File(c) => c.validate(),
            EndpointKind::Http(c) => c.validate(base),
            EndpointKind::Generator(c) => c.validate(),
            EndpointKind::HttpPoll(c) => c.validate(base),
            EndpointKind::Postgres(c) => c.validate(sql::Dialect::Postgres),
            EndpointKind::Mysql(c) => c.validate(sql::Dialect::Mysql),
            EndpointKind::Amqp(c) => c.validate(broker::BrokerKind::Amqp, base),
            EndpointKind::Nats(c) => c.validate(broker::BrokerKind::Nats, base),
            EndpointKind::Mqtt(c) => c.validate(broker::BrokerKind::Mqtt, base),
        }
    }

    /// Whether records come from it by a run of a flow (a pull source).
    pub fn is_pull_source(&self) -> bool {
        matches!(
            self,
            EndpointKind::File(_)
                | EndpointKind::Generator(_)
                | EndpointKind::HttpPoll(_)
                | EndpointKind::Postgres(_)
                | EndpointKind::Mysql(_)
        )
    }

    /// Whether records are pushed to sluice (the webhook).
    pub fn is_push_source(&self) -> bool {
        matches!(self, EndpointKind::Webhook(_))
    }

    /// Whether records are consumed from it while the site runs (a broker's
    /// queue, stream or topic): see [`broker`].
    pub fn is_stream_source(&self) -> bool {
        match self {
            EndpointKind::Amqp(c) => c.is_source(broker::BrokerKind::Amqp),
            EndpointKind::Nats(c) => c.is_source(broker::BrokerKind::Nats),
            EndpointKind::Mqtt(c) => c.is_source(broker::BrokerKind::Mqtt),
            _ => false,
        }
    }

    /// Builds what consumes from this endpoint, if it is a broker source.
    /// Relative paths are resolved against `base`.
    pub fn subscriber(&self, base: &std::path::Path) -> Option<Arc<dyn broker::Subscribe>> {
        match self {
            EndpointKind::Amqp(c) if c.is_source(broker::BrokerKind::Amqp) => {
                Some(Arc::new(amqp::AmqpSource::new(c, base)))
            }
            EndpointKind::Nats(c) if c.is_source(broker::BrokerKind::Nats) => {
                Some(Arc::new(nats::NatsSource::new(c, base)))
            }
            EndpointKind::Mqtt(c) if c.is_source(broker::BrokerKind::Mqtt) => {
                Some(Arc::new(mqtt::MqttSource::new(c, base)))
            }
            EndpointKind::Webhook(_)
            | EndpointKind::File(_)
            | EndpointKind::Http(_)
            | EndpointKind::Generator(_)
            | EndpointKind::HttpPoll(_)
            | EndpointKind::Postgres(_)
            | EndpointKind::Mysql(_)
            | EndpointKind::Amqp(_)
            | EndpointKind::Nats(_)
            | EndpointKind::Mqtt(_) => None,
        }
    }

    /// Whether it takes new credentials (a reauthorization): the kinds
    /// whose target overrides [`Target::set_credentials`].
    pub fn takes_credentials(&self) -> bool {
        matches!(
            self,
            EndpointKind::Http(_)
                | EndpointKind::Amqp(_)
                | EndpointKind::Nats(_)
                | EndpointKind::Mqtt(_)
        )
    }

    pub fn is_target(&self) -> bool {
        match self {
            EndpointKind::File(_) | EndpointKind::Http(_) => true,
            // A query is only read from.
            EndpointKind::Postgres(c) | EndpointKind::Mysql(c) => c.table.is_some(),
            EndpointKind::Amqp(c) => c.is_target(broker::BrokerKind::Amqp),
            EndpointKind::Nats(c) => c.is_target(broker::BrokerKind::Nats),
            EndpointKind::Mqtt(c) => c.is_target(broker::BrokerKind::Mqtt),
            EndpointKind::Webhook(_) | EndpointKind::Generator(_) | EndpointKind::HttpPoll(_) => {
                false
            }
        }
    }

    /// A real call to the endpoint, to tell whether it can be reached: what
    /// it answered, or why not.
    pub async fn probe(&self, base: &std::path::Path) -> Result<String, DeliveryError> {
        match self {
            EndpointKind::Http(c) => http::probe(c, base).await,
            EndpointKind::File(c) => file::probe(c, base).await,
            EndpointKind::HttpPoll(c) => http_poll::probe(c, base).await,
            EndpointKind::Webhook(_) => Ok("records arrive by POST; nothing to call".into()),
            EndpointKind::Generator(_) => Ok("records are made up; nothing to call".into()),
            EndpointKind::Postgres(c) => sql::postgres::probe(c).await,
            EndpointKind::Mysql(c) => sql::mysql::probe(c).await,
            EndpointKind::Amqp(c) => amqp::probe(c, base).await,
            EndpointKind::Nats(c) => nats::probe(c, base).await,
            EndpointKind::Mqtt(c) => mqtt::probe(c, base).await,
        }
    }

    /// Builds the source reading from this endpoint, if it is a pull source.
    /// Relative paths are resolved against `base`.
    pub fn source(&self, base: &std::path::Path) -> Option<Arc<dyn Source>> {
        match self {
            EndpointKind::File(c) => Some(Arc::new(file::FileSource::new(c, base))),
            EndpointKind::Generator(c) => Some(Arc::new(generator::GeneratorSource::new(c))),
            EndpointKind::HttpPoll(c) => Some(Arc::new(http_poll::HttpPollSource::new(c, base))),
            EndpointKind::Postgres(c) => {
                Some(Arc::new(sql::SqlSource::new(c, sql::Dialect::Postgres)))
            }
            EndpointKind::Mysql(c) => Some(Arc::new(sql::SqlSource::new(c, sql::Dialect::Mysql))),
            EndpointKind::Webhook(_)
            | EndpointKind::Http(_)
            | EndpointKind::Amqp(_)
            | EndpointKind::Nats(_)
            | EndpointKind::Mqtt(_) => None,
        }
    }

    /// Builds the target delivering to this endpoint, if it is one.
    /// Relative paths are resolved against `base`.
    pub fn target(&self, base: &std::path::Path) -> Option<Arc<dyn Target>> {
        match self {
            EndpointKind::File(c) => Some(Arc::new(file::FileTarget::new(c, base))),
            EndpointKind::Http(c) => Some(Arc::new(http::HttpTarget::new(c, base))),
            EndpointKind::Postgres(c) if c.table.is_some() => {
                Some(Arc::new(sql::postgres::PgTarget::new(c)))
            }
            EndpointKind::Mysql(c) if c.table.is_some() => {
                Some(Arc::new(sql::mysql::MysqlTarget::new(c)))
            }
            EndpointKind::Amqp(c) if c.is_target(broker::BrokerKind::Amqp) => {
                Some(Arc::new(amqp::AmqpTarget::new(c, base)))
            }
            EndpointKind::Nats(c) if c.is_target(broker::BrokerKind::Nats) => {
                Some(Arc::new(nats::NatsTarget::new(c, base)))
            }
            EndpointKind::Mqtt(c) if c.is_target(broker::BrokerKind::Mqtt) => {
                Some(Arc::new(mqtt::MqttTarget::new(c, base)))
            }
            EndpointKind::Webhook(_)
            | EndpointKind::Generator(_)
            | EndpointKind::HttpPoll(_)
            | EndpointKind::Postgres(_)
            | EndpointKind::Mysql(_)
            | EndpointKind::Amqp(_)
            | EndpointKind::Nats(_)
            | EndpointKind::Mqtt(_) => None,
        }
    }
}

/// The password held by the environment variable `password_env` names, if
/// one is configured; an unset variable is Unauthorized (the endpoint waits
/// for it, or for a reauthorization).
pub fn password_from_env(password_env: Option<&str>) -> Result<Option<String>, DeliveryError> {
    match password_env {
        None => Ok(None),
        Some(var) => match std::env::var(var) {
            Ok(p) => Ok(Some(p)),
            Err(_) => Err(DeliveryError {
                class: FailureClass::Unauthorized,
                message: format!("the environment variable {var} (password_env) is not set"),
                retry_after: None,
            }),
        },
    }
}

/// The text of a key field: text as it is, anything else as JSON, null as
/// no key.
pub fn key_text(v: &serde_json::Value) -> Option<String> {
    match v {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Null => None,
        other => Some(other.to_string()),
    }
}

/// One record read from a source.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceRecord {
    pub key: Option<String>,
    /// The cursor value, compared with the flow's checkpoint.
    pub cursor: Option<Cursor>,
    /// The record as JSON text, queued as it is: a source that reads typed
    /// values (a database) writes the text directly, without building a
    /// document first.
    pub payload: String,
}

/// A cursor value: numbers compare as numbers, anything else as text (so
/// ISO-8601 timestamps compare in time order).
#[derive(Debug, Clone, PartialEq)]
pub enum Cursor {
    Number(f64),
    Text(String),
}

impl Cursor {
    pub fn from_json(v: &serde_json::Value) -> Option<Cursor> {
        match v {
            serde_json::Value::Number(n) => n.as_f64().map(Cursor::Number),
            serde_json::Value::String(s) => Some(Cursor::Text(s.clone())),
            _ => None,
        }
    }

    /// The stored form of a checkpoint: JSON text.
    pub fn encode(&self) -> String {
        match self {
            Cursor::Number(n) => serde_json::Number::from_f64(*n)
                .map(|n| n.to_string())
                .unwrap_or_else(|| "null".into()),
            Cursor::Text(s) => serde_json::Value::String(s.clone()).to_string(),
        }
    }

    pub fn decode(s: &str) -> Option<Cursor> {
        serde_json::from_str::<serde_json::Value>(s)
            .ok()
            .and_then(|v| Cursor::from_json(&v))
    }
}

impl PartialOrd for Cursor {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        match (self, other) {
            (Cursor::Number(a), Cursor::Number(b)) => a.partial_cmp(b),
            (Cursor::Text(a), Cursor::Text(b)) => Some(a.cmp(b)),
            // Numbers sort before text: a stable, if arbitrary, total order.
            (Cursor::Number(_), Cursor::Text(_)) => Some(std::cmp::Ordering::Less),
            (Cursor::Text(_), Cursor::Number(_)) => Some(std::cmp::Ordering::Greater),
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct SourceError {
    pub message: String,
}

/// What a run reads. Owned, so that the [`Pages`] of a run can keep it.
#[derive(Debug, Clone, PartialEq)]
pub struct ReadRequest {
    pub mode: RunMode,
    pub checkpoint: Option<Cursor>,
    /// The flow's key and cursor fields.
    pub key_field: Option<String>,
    pub cursor_field: Option<String>,
}

/// The records of one run, page by page: a source reads the next page only
/// when the run asks for it, so a table of millions of rows is never in
/// memory at once.
#[async_trait]
pub trait Pages: Send {
    /// The next page, in cursor order (records without a cursor first), or
    /// `None` once everything is read. A page never splits records of equal
    /// cursor: it may run past the source's page size to keep them together,
    /// so a checkpoint never falls between two of them.
    async fn next(&mut self) -> Result<Option<Vec<SourceRecord>>, SourceError>;
}

/// An endpoint records are pulled from by a run of a flow.
#[async_trait]
pub trait Source: Send + Sync {
    /// Starts reading what a run captures. 'Send Changed' gives only records
    /// whose cursor is past the checkpoint.
    async fn open(&self, req: ReadRequest) -> Result<Box<dyn Pages>, SourceError>;
    /// A pause between pages, to spare the source system.
    fn pace(&self) -> Duration;
}

/// The pages of records read whole (a file, made-up records): sorted by
/// cursor, then cut `page_size` at a time without splitting equal cursors.
pub struct ReadWhole {
    records: std::collections::VecDeque<SourceRecord>,
    page_size: usize,
}

impl ReadWhole {
    pub fn new(mut records: Vec<SourceRecord>, page_size: usize) -> ReadWhole {
        sort_by_cursor(&mut records);
        ReadWhole {
            records: records.into(),
            page_size: page_size.max(1),
        }
    }
}

#[async_trait]
impl Pages for ReadWhole {
    async fn next(&mut self) -> Result<Option<Vec<SourceRecord>>, SourceError> {
        if self.records.is_empty() {
            return Ok(None);
        }
        let len = page_len(self.records.make_contiguous(), self.page_size);
        Ok(Some(self.records.drain(..len).collect()))
    }
}

/// Sorts records into page order: by cursor, records without a cursor
/// first. Stable: records of equal (or no) cursor keep their order.
pub fn sort_by_cursor(records: &mut [SourceRecord]) {
    records.sort_by(|a, b| match (&a.cursor, &b.cursor) {
        (None, None) => std::cmp::Ordering::Equal,
        (None, Some(_)) => std::cmp::Ordering::Less,
        (Some(_), None) => std::cmp::Ordering::Greater,
        (Some(x), Some(y)) => x.partial_cmp(y).unwrap_or(std::cmp::Ordering::Equal),
    });
}

/// The length of the next page: `page_size` records, extended while the
/// records that follow share the last one's cursor.
pub fn page_len(records: &[SourceRecord], page_size: usize) -> usize {
    let mut len = page_size.min(records.len());
    while len < records.len()
        && records[len].cursor.is_some()
        && records[len].cursor == records[len - 1].cursor
    {
        len += 1;
    }
    len
}

#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct DeliveryError {
    pub class: FailureClass,
    pub message: String,
    /// What the target asked for with `Retry-After`.
    pub retry_after: Option<Duration>,
}

impl DeliveryError {
    pub fn is_intermittent(&self) -> bool {
        matches!(
            self.class,
            FailureClass::Unreachable | FailureClass::NoAnswer | FailureClass::Intermittent
        )
    }
}

/// One transaction to deliver.
#[derive(Debug, Clone, Copy)]
pub struct Delivery<'a> {
    /// `{site}:{integration}:{seq}`.
    pub key: &'a str,
    /// The record, JSON text.
    pub payload: &'a str,
    /// The id the target gave this record's key when it was created (record
    /// links), if it has one: then the delivery is an update of it.
    pub link: Option<&'a str>,
}

impl<'a> Delivery<'a> {
    pub fn new(key: &'a str, payload: &'a str) -> Delivery<'a> {
        Delivery {
            key,
            payload,
            link: None,
        }
    }
}

/// What a target gives back for a batch it took.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Delivered {
    /// For each delivery, in order, the record's link after it: the id the
    /// target gave a record it created, or the one an update went to
    /// (record links); empty when the target links nothing.
    pub links: Vec<Option<String>>,
}

/// An endpoint transactions are delivered to.
#[async_trait]
pub trait Target: Send + Sync {
    /// Records per delivery: `deliver` is never given more.
    fn batch_size(&self) -> usize;
    /// Whether it links records (record links): the sender then gives each
    /// delivery the id its key was given, and keeps the ids it gives back.
    fn links(&self) -> bool {
        false
    }
    /// Delivers the batch as a whole: all of it or (on error) none of it is
    /// taken as delivered.
    async fn deliver(&self, batch: &[Delivery<'_>]) -> Result<Delivered, DeliveryError>;

    /// A real call that tells whether the endpoint can be reached (and
    /// takes the credentials): what it answered, or why not.
    async fn probe(&self) -> Result<String, DeliveryError>;

    /// Takes new credentials (from a reauthorization). The default: this
    /// endpoint takes none.
    fn set_credentials(&self, _credentials: Credentials) -> Result<(), String> {
        Err("this endpoint takes no credentials".into())
    }
}

/// Credentials for an endpoint. Never logged, shown or stored: `Debug`
/// prints no secret.
#[derive(Clone, PartialEq, Eq)]
pub enum Credentials {
    Bearer(String),
    Basic {
        username: String,
        password: String,
    },
    /// An API key, sent in the header the endpoint names.
    ApiKey(String),
    /// An OAuth2 client secret, traded for access tokens.
    ClientSecret(String),
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credentials::Bearer(_) => f.write_str("Bearer(…)"),
            Credentials::Basic { username, .. } => write!(f, "Basic({username}, …)"),
            Credentials::ApiKey(_) => f.write_str("ApiKey(…)"),
            Credentials::ClientSecret(_) => f.write_str("ClientSecret(…)"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(c: f64) -> SourceRecord {
        SourceRecord {
            key: None,
            cursor: Some(Cursor::Number(c)),
            payload: "{}".into(),
        }
    }

    #[test]
    fn a_page_never_splits_equal_cursors() {
        let r: Vec<_> = [1.0, 2.0, 2.0, 2.0, 3.0].into_iter().map(rec).collect();
        assert_eq!(page_len(&r, 2), 4);
        assert_eq!(page_len(&r, 1), 1);
        assert_eq!(page_len(&r[4..], 10), 1);
        assert_eq!(page_len(&r, 5), 5);
    }

    #[tokio::test]
    async fn whole_reads_come_in_sorted_pages() {
        let r: Vec<_> = [3.0, 1.0, 2.0, 2.0].into_iter().map(rec).collect();
        let mut pages = ReadWhole::new(r, 2);
        let mut sizes = Vec::new();
        while let Some(page) = pages.next().await.unwrap() {
            sizes.push(page.len());
        }
        assert_eq!(sizes, [3, 1]);
    }

    #[test]
    fn cursors_compare_numbers_as_numbers() {
        assert!(Cursor::Number(9.0) < Cursor::Number(10.0));
        assert!(Cursor::Text("2024-01-09".into()) < Cursor::Text("2024-01-10".into()));
        for c in [
            Cursor::Number(42.0),
            Cursor::Number(1.5),
            Cursor::Text("a\"b".into()),
        ] {
            assert_eq!(Cursor::decode(&c.encode()), Some(c));
        }
    }
}
