//! What the message brokers share: `kind = "amqp"` (RabbitMQ), `"nats"`
//! (NATS JetStream) and `"mqtt"` — one set of keys ([`BrokerConfig`],
//! each kind taking its own), the names that take record fields (routing
//! key, subject, topic), and how a broker source hands messages to the
//! engine ([`Subscribe`], [`Subscription`]).
//!
//! A broker source is not run by a flow: while the site runs and the
//! integration captures, the engine keeps a subscription open, queues what
//! it receives durably and only then acknowledges it to the broker. A crash
//! between the two leaves the messages unacknowledged: the broker delivers
//! them again, marked as redelivered, and the engine drops each that its
//! flow already queued (see `engine::consume`).

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use serde::Deserialize;

use super::template::FieldTemplate;
use super::{Credentials, DeliveryError, KeyProblem};
use crate::duration::duration_opt;
use crate::redact;
use crate::tls;

/// The broker kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BrokerKind {
    Amqp,
    Nats,
    Mqtt,
}

impl BrokerKind {
    pub fn name(self) -> &'static str {
        match self {
            BrokerKind::Amqp => "amqp",
            BrokerKind::Nats => "nats",
            BrokerKind::Mqtt => "mqtt",
        }
    }

    /// The url schemes: without TLS, with TLS.
    fn schemes(self) -> (&'static str, &'static str) {
        match self {
            BrokerKind::Amqp => ("amqp", "amqps"),
            BrokerKind::Nats => ("nats", "tls"),
            BrokerKind::Mqtt => ("mqtt", "mqtts"),
        }
    }

    /// The keys only this kind takes (the others take none of them).
    fn own_keys(self) -> &'static [&'static str] {
        match self {
            BrokerKind::Amqp => &["queue", "prefetch", "exchange", "routing_key", "mandatory"],
            BrokerKind::Nats => &["stream", "consumer", "subject"],
            BrokerKind::Mqtt => &["topic", "client_id"],
        }
    }
}

/// The settings of a broker endpoint, of any of the three kinds; each kind
/// refuses the keys of the others.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BrokerConfig {
    /// `amqp://host:5672/%2f` (`amqps://host:5671/%2f` with TLS), `nats://host:4222` (`tls://`),
    /// `mqtt://host:1883` (`mqtts://`); no user-info: `username` and
    /// `password_env`.
    pub url: String,
    pub username: Option<String>,
    /// The environment variable holding the password.
    pub password_env: Option<String>,

    /// amqp, as a source: the queue consumed (declared durable if missing).
    pub queue: Option<String>,
    /// amqp, as a source: messages delivered and not yet acknowledged.
    pub prefetch: Option<u16>,
    /// amqp, as a target: the exchange published to (`""`: the default
    /// exchange, which routes by queue name).
    pub exchange: Option<String>,
    /// amqp, as a target: the routing key (may take record fields).
    pub routing_key: Option<String>,
    /// amqp, as a target: an unroutable message is returned by the broker
    /// and is a failure for good (default true).
    pub mandatory: Option<bool>,

    /// nats, as a source: the stream read by a durable pull consumer.
    pub stream: Option<String>,
    /// nats, as a source: the durable consumer's name (default `sluice`).
    pub consumer: Option<String>,
    /// nats, as a target: the subject published to (may take record fields).
    pub subject: Option<String>,

    /// mqtt: as a source, the topic filter subscribed to; as a target, the
    /// topic published to (may take record fields).
    pub topic: Option<String>,
    /// mqtt: the client id; with a persistent session, the broker keeps
    /// what a source has not acknowledged under it.
    pub client_id: Option<String>,

    /// Records per delivery: published together, then their confirmations
    /// awaited together.
    #[serde(default = "default_batch")]
    pub batch: usize,
    /// How long a connection, a publish's confirmation or a health test
    /// may take.
    #[serde(default, deserialize_with = "duration_opt::deserialize")]
    pub timeout: Option<Duration>,
    /// The longest wait between two tests of an Offline endpoint.
    #[serde(default, deserialize_with = "duration_opt::deserialize")]
    pub probe_every: Option<Duration>,
    /// TLS (with an `amqps://`, `tls://` or `mqtts://` url): more
    /// authorities to trust, and our certificate for mutual TLS.
    pub ca_file: Option<PathBuf>,
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
}

fn default_batch() -> usize {
    100
}

/// What a template of a broker name may not take from a record, per kind:
/// the separators and wildcards of its names.
fn name_value(kind: BrokerKind, value: &str) -> Result<String, String> {
    let bad: &[char] = match kind {
        // A routing key is any text; a topic exchange matches its words.
        BrokerKind::Amqp => &[],
        BrokerKind::Nats => &['.', '*', '>', ' ', '\t', '\r', '\n'],
        BrokerKind::Mqtt => &['/', '+', '#', '\0'],
    };
    match value.chars().find(|c| bad.contains(c)) {
        Some(c) => Err(format!("holds {c:?}, which would change the name's levels")),
        None => Ok(value.to_string()),
    }
}

impl BrokerConfig {
    pub fn timeout(&self) -> Duration {
        self.timeout.unwrap_or(Duration::from_secs(10))
    }

    pub fn probe_every(&self) -> Duration {
        self.probe_every.unwrap_or(Duration::from_secs(3600))
    }

    pub fn prefetch(&self) -> u16 {
        self.prefetch.unwrap_or(500)
    }

    pub fn consumer(&self) -> &str {
        self.consumer.as_deref().unwrap_or("sluice")
    }

    pub fn mandatory(&self) -> bool {
        self.mandatory.unwrap_or(true)
    }

    /// Whether it is read from (a queue, a stream, a topic filter).
    pub fn is_source(&self, kind: BrokerKind) -> bool {
        match kind {
            BrokerKind::Amqp => self.queue.is_some(),
            BrokerKind::Nats => self.stream.is_some(),
            BrokerKind::Mqtt => self.topic.is_some(),
        }
    }

    /// Whether it is published to (an exchange, a subject, a topic without
    /// wildcards).
    pub fn is_target(&self, kind: BrokerKind) -> bool {
        match kind {
            BrokerKind::Amqp => self.exchange.is_some(),
            BrokerKind::Nats => self.subject.is_some(),
            BrokerKind::Mqtt => self
                .topic
                .as_deref()
                .is_some_and(|t| !t.contains(['+', '#'])),
        }
    }

    /// The name a target publishes to, as configured (routing key,
    /// subject, topic).
    fn target_name(&self, kind: BrokerKind) -> Option<(&'static str, &str)> {
        match kind {
            BrokerKind::Amqp => Some(("routing_key", self.routing_key.as_deref().unwrap_or(""))),
            BrokerKind::Nats => self.subject.as_deref().map(|s| ("subject", s)),
            BrokerKind::Mqtt => self.topic.as_deref().map(|t| ("topic", t)),
        }
    }

    /// The name a record is published to, with its fields filled in; `Err`
    /// (a failure for good of that record) when the record lacks a field
    /// or a value would change the name's levels.
    pub fn publish_name(
        &self,
        kind: BrokerKind,
        template: &FieldTemplate,
        record: Option<&serde_json::Value>,
    ) -> Result<String, String> {
        let what = match kind {
            BrokerKind::Amqp => "the routing key",
            BrokerKind::Nats => "the subject",
            BrokerKind::Mqtt => "the topic",
        };
        template.render_with(record, None, what, |v| name_value(kind, v))
    }

    /// The template of the name a target publishes to (routing key,
    /// subject, topic); checked by `validate`.
    pub fn publish_template(&self, kind: BrokerKind) -> FieldTemplate {
        let text = self.target_name(kind).map(|(_, t)| t).unwrap_or_default();
        FieldTemplate::parse(text, false).unwrap_or_else(|_| FieldTemplate {
            parts: vec![super::template::Part::Text(text.to_string())],
        })
    }

    fn tls_keys(&self) -> tls::ClientKeys<'_> {
        tls::ClientKeys {
            ca_file: self.ca_file.as_deref(),
            client_cert: self.client_cert.as_deref(),
            client_key: self.client_key.as_deref(),
        }
    }

    /// Whether the url asks for TLS.
    pub fn uses_tls(&self, kind: BrokerKind) -> bool {
        self.url
            .split_once("://")
            .is_some_and(|(scheme, _)| scheme.eq_ignore_ascii_case(kind.schemes().1))
    }

    /// The client's TLS settings (for a url with TLS): the platform's roots
    /// plus `ca_file`, and `client_cert`/`client_key` for mutual TLS.
    pub fn tls(&self, base: &Path) -> Result<rustls::ClientConfig, tls::SetupError> {
        self.tls_keys().config(base)
    }

    /// The password from `password_env`, if one is configured.
    pub fn password(&self) -> Result<Option<String>, DeliveryError> {
        super::password_from_env(self.password_env.as_deref())
    }

    /// Problems with the values, each naming its key.
    pub fn validate(&self, kind: BrokerKind, base: &Path) -> Vec<KeyProblem> {
        let mut problems = Vec::new();
        let (plain, secure) = kind.schemes();
        let tls = match reqwest::Url::parse(&self.url) {
            Ok(url) if url.password().is_some() || !url.username().is_empty() => {
                problems.push((
                    "url".into(),
                    format!(
                        "'{}' carries a user: give username, and the name of an environment \
                         variable holding the password in password_env",
                        redact::url(&self.url)
                    ),
                ));
                None
            }
            Ok(url) if url.scheme() == plain => Some(false),
            Ok(url) if url.scheme() == secure => Some(true),
            Ok(url) => {
                problems.push((
                    "url".into(),
                    format!(
                        "scheme '{}' is not supported (use {plain} or {secure})",
                        url.scheme()
                    ),
                ));
                None
            }
            Err(e) => {
                problems.push((
                    "url".into(),
                    format!("'{}' is not a URL: {e}", redact::url(&self.url)),
                ));
                None
            }
        };
        let schemes = format!("a {secure}:// url");
        problems.extend(self.tls_keys().validate(tls, &schemes, base));
        for (key, value) in [
            ("password_env", &self.password_env),
            ("username", &self.username),
        ] {
            if value.as_deref().is_some_and(|v| v.trim().is_empty()) {
                problems.push((key.into(), "must not be empty".into()));
            }
        }
        let given = |key: &str| match key {
            "queue" => self.queue.is_some(),
            "prefetch" => self.prefetch.is_some(),
            "exchange" => self.exchange.is_some(),
            "routing_key" => self.routing_key.is_some(),
            "mandatory" => self.mandatory.is_some(),
            "stream" => self.stream.is_some(),
            "consumer" => self.consumer.is_some(),
            "subject" => self.subject.is_some(),
            "topic" => self.topic.is_some(),
            "client_id" => self.client_id.is_some(),
            _ => false,
        };
        for other in [BrokerKind::Amqp, BrokerKind::Nats, BrokerKind::Mqtt] {
            if other == kind {
                continue;
            }
            for key in other.own_keys().iter().filter(|k| given(k)) {
                problems.push((
                    (*key).into(),
                    format!(
                        "is a key of {} endpoints, not of {}",
                        other.name(),
                        kind.name()
                    ),
                ));
            }
        }
        let names = match kind {
            BrokerKind::Amqp => "queue (to read from it) or exchange (to publish to it)",
            BrokerKind::Nats => "stream (to read from it) or subject (to publish to it)",
            BrokerKind::Mqtt => "topic (to subscribe or publish to it)",
        };
        if !self.is_source(kind) && !self.is_target(kind) && self.topic.is_none() {
            problems.push((kind.own_keys()[0].into(), format!("missing: give {names}")));
        }
        for (key, value) in [
            ("queue", &self.queue),
            ("stream", &self.stream),
            ("consumer", &self.consumer),
            ("client_id", &self.client_id),
            ("topic", &self.topic),
            ("subject", &self.subject),
        ] {
            if value.as_deref().is_some_and(|v| v.trim().is_empty()) {
                problems.push((key.into(), "must not be empty".into()));
            }
        }
        // A filter the broker would take for a protocol error (it drops the
        // connection): + and # stand alone in a level, # only last.
        let bad_filter = self
            .topic
            .as_deref()
            .filter(|t| kind == BrokerKind::Mqtt && !t.is_empty() && !rumqttc::valid_filter(t));
        if let Some(t) = bad_filter {
            problems.push((
                "topic".into(),
                format!(
                    "'{t}' is not an MQTT topic filter: + and # stand alone in a level, # only \
                     as the last"
                ),
            ));
        }
        if kind == BrokerKind::Nats {
            for (key, value) in [("stream", &self.stream), ("consumer", &self.consumer)] {
                if let Some(v) = value
                    .as_deref()
                    .filter(|v| v.contains(['.', '*', '>', ' ']))
                {
                    problems.push((
                        key.into(),
                        format!("'{v}' may not hold '.', '*', '>' or spaces"),
                    ));
                }
            }
        }
        if kind == BrokerKind::Mqtt && self.topic.is_some() && self.client_id.is_none() {
            problems.push((
                "client_id".into(),
                "missing: the broker keeps a session (and what a source has not acknowledged) \
                 under the client id, so give one that stays the same, e.g. \"sluice-LIVE\""
                    .into(),
            ));
        }
        if self.prefetch == Some(0) {
            problems.push(("prefetch".into(), "must be at least 1".into()));
        }
        if let Some((key, text)) = self.target_name(kind) {
            if let Err(e) = FieldTemplate::parse(text, false) {
                problems.push((key.into(), e));
            }
        }
        if self.batch == 0 || self.batch > 10_000 {
            problems.push(("batch".into(), "must be between 1 and 10000".into()));
        }
        if self.timeout == Some(Duration::ZERO) {
            problems.push(("timeout".into(), "must be more than 0".into()));
        }
        problems
    }
}

/// A message taken from a broker, not yet acknowledged to it.
#[derive(Debug, Clone, PartialEq)]
pub struct Received {
    /// The record: the body when it is JSON, else the body's text as a JSON
    /// string ([`record_of`]).
    pub payload: String,
    /// Whether the broker says it delivered the message before (to sluice
    /// or to another consumer): only such a message may be queued already.
    pub redelivered: bool,
}

/// The record a message body becomes: the body itself when it is JSON
/// (one message, one record), else its text (invalid UTF-8 replaced) as a
/// JSON string, so that nothing received is lost and the transaction shows
/// what came.
pub fn record_of(body: &[u8]) -> String {
    match std::str::from_utf8(body) {
        Ok(text) if serde_json::from_str::<&serde_json::value::RawValue>(text).is_ok() => {
            text.trim().to_string()
        }
        _ => serde_json::Value::String(String::from_utf8_lossy(body).into_owned()).to_string(),
    }
}

/// An open subscription: messages are received, queued by the engine, and
/// then acknowledged.
#[async_trait]
pub trait Subscription: Send {
    /// The next messages, at least one and at most `max`: waits for the
    /// first, then takes what else has arrived without waiting. `Err`: the
    /// connection is lost or refused (its class says which). Dropping the
    /// subscription closes it; what was not acknowledged stays with the
    /// broker.
    async fn receive(&mut self, max: usize) -> Result<Vec<Received>, DeliveryError>;
    /// Acknowledges to the broker every message `receive` gave so far: the
    /// engine calls it once they are durably queued.
    async fn ack(&mut self) -> Result<(), DeliveryError>;
}

/// A broker endpoint records are read from.
#[async_trait]
pub trait Subscribe: Send + Sync {
    /// Connects and starts consuming.
    async fn subscribe(&self) -> Result<Box<dyn Subscription>, DeliveryError>;
    /// The health test, with the credentials the next subscription uses.
    async fn probe(&self) -> Result<String, DeliveryError>;
    /// Takes new credentials (a reauthorization) for the next subscription.
    fn set_credentials(&self, credentials: Credentials) -> Result<(), String>;
}

/// Credentials given by a reauthorization, replacing `username` and
/// `password_env` until the configuration is reloaded.
#[derive(Debug, Default)]
pub struct Login {
    given: Mutex<Option<(String, String)>>,
}

impl Login {
    /// Takes `Credentials::Basic` (a user and a password).
    pub fn set(&self, credentials: Credentials) -> Result<(), String> {
        match credentials {
            Credentials::Basic { username, password } => {
                *self.given.lock().unwrap_or_else(|e| e.into_inner()) = Some((username, password));
                Ok(())
            }
            _ => Err("a broker takes a username and a password".into()),
        }
    }

    /// The user and password to connect with: the reauthorization's, else
    /// the configuration's.
    pub fn get(
        &self,
        config: &BrokerConfig,
    ) -> Result<(Option<String>, Option<String>), DeliveryError> {
        if let Some((u, p)) = self.given.lock().unwrap_or_else(|e| e.into_inner()).clone() {
            return Ok((Some(u), Some(p)));
        }
        Ok((config.username.clone(), config.password()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(kind: BrokerKind, toml: &str) -> Vec<KeyProblem> {
        let c: BrokerConfig = toml::from_str(toml).unwrap();
        c.validate(kind, Path::new("."))
    }

    fn keys(problems: &[KeyProblem]) -> Vec<&str> {
        problems.iter().map(|(k, _)| k.as_str()).collect()
    }

    #[test]
    fn each_kind_takes_its_own_keys() {
        assert!(config(
            BrokerKind::Amqp,
            "url = \"amqp://127.0.0.1:5672/%2f\"\nqueue = \"orders\"\nprefetch = 10"
        )
        .is_empty());
        assert!(config(
            BrokerKind::Nats,
            "url = \"nats://127.0.0.1:4222\"\nstream = \"R\"\nsubject = \"a.{line}\""
        )
        .is_empty());
        assert!(config(
            BrokerKind::Mqtt,
            "url = \"mqtt://127.0.0.1:1883\"\ntopic = \"plant/+/r\"\nclient_id = \"s\""
        )
        .is_empty());
        let p = config(
            BrokerKind::Nats,
            "url = \"nats://127.0.0.1:4222\"\nstream = \"R\"\nqueue = \"q\"",
        );
        assert_eq!(keys(&p), ["queue"], "{p:?}");
        assert!(p[0].1.contains("amqp"), "{p:?}");
        let p = config(BrokerKind::Amqp, "url = \"amqp://127.0.0.1\"");
        assert_eq!(keys(&p), ["queue"], "{p:?}");
        let p = config(BrokerKind::Mqtt, "url = \"mqtt://h\"\ntopic = \"t\"");
        assert_eq!(keys(&p), ["client_id"], "{p:?}");
        let p = config(
            BrokerKind::Mqtt,
            "url = \"mqtt://h\"\ntopic = \"plant/#/r\"\nclient_id = \"s\"",
        );
        assert_eq!(keys(&p), ["topic"], "{p:?}");
        assert!(p[0].1.contains("'plant/#/r'"), "{p:?}");
    }

    #[test]
    fn a_url_with_a_user_or_another_scheme_is_refused_without_showing_a_password() {
        let p = config(
            BrokerKind::Amqp,
            "url = \"amqp://guest:secret@127.0.0.1\"\nqueue = \"q\"",
        );
        assert_eq!(keys(&p), ["url"]);
        assert!(!p[0].1.contains("secret"), "{p:?}");
        assert!(config(BrokerKind::Amqp, "url = \"amqps://h\"\nqueue = \"q\"").is_empty());
        let p = config(
            BrokerKind::Amqp,
            "url = \"amqp://h\"\nqueue = \"q\"\nca_file = \"ca.pem\"",
        );
        assert_eq!(keys(&p), ["ca_file"], "{p:?}");
        assert!(p[0].1.contains("amqps://"), "{p:?}");
        let p = config(BrokerKind::Nats, "url = \"http://h\"\nstream = \"S\"");
        assert!(p[0].1.contains("nats or tls"), "{p:?}");
        let p = config(
            BrokerKind::Mqtt,
            "url = \"mqtt://h\"\ntopic = \"t\"\nclient_id = \"c\"\nca_file = \"ca.pem\"",
        );
        assert_eq!(keys(&p), ["ca_file"], "{p:?}");
    }

    #[test]
    fn names_take_record_fields_but_not_their_separators() {
        let c: BrokerConfig =
            toml::from_str("url = \"nats://h\"\nsubject = \"plant.readings.{line}\"").unwrap();
        let t = c.publish_template(BrokerKind::Nats);
        let name = |r: serde_json::Value| c.publish_name(BrokerKind::Nats, &t, Some(&r));
        assert_eq!(
            name(serde_json::json!({"line": 4})).unwrap(),
            "plant.readings.4"
        );
        let e = name(serde_json::json!({"line": "a.b"})).unwrap_err();
        assert!(e.contains("'line'") && e.contains("subject"), "{e}");
        assert!(name(serde_json::json!({})).is_err());
    }

    #[test]
    fn a_body_that_is_not_json_becomes_a_json_string() {
        assert_eq!(record_of(b" {\"a\": 1} "), "{\"a\": 1}");
        assert_eq!(record_of(b"plain text"), "\"plain text\"");
        assert_eq!(record_of(b"\xff"), "\"\u{fffd}\"");
    }
}
