//! `kind = "http"`: sends JSON records to an API (`POST` by default, or
//! `PUT`/`PATCH` with `method`).
//!
//! With `batch = 1`, `url` may take values of the record
//! (`/customers/{id}`, `/{customer.id}`), each percent-encoded as a path
//! segment; a record without the field fails for good (Rejected). Record
//! links (`link`, `update_url`, `update_method`): a record that has no
//! link yet is a create, and the id at the JSON pointer `link` in its
//! answer is given back ([`Delivered::links`]); one that has a link goes
//! to `update_url` with `{link}` filled in (and the link is given back
//! unchanged). Credentials come from [`super::http_auth`].
//!
//! With `batch = 1` the body is the record itself; with `batch > 1` it is a
//! JSON array of records. Every request carries `Idempotency-Key`: the
//! transaction's key `{site}:{integration}:{seq}` for one record, and for a
//! batch the first record's key followed by `+N` for the N records in it;
//! `X-Sluice-Keys` then lists the key of every record, comma-separated, in
//! body order. sluice adds no envelope around a record.
//!
//! `https://` URLs are verified against the platform's trust roots plus the
//! certificates of `ca_file`; `client_cert` and `client_key` add mutual TLS.
//! A certificate that is not trusted is a failure of its own class
//! ([`FailureClass::Untrusted`]), not a retry. Every URL in a message is
//! shown without its user-info ([`crate::redact::url`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use async_trait::async_trait;
use serde::Deserialize;

use super::http_auth::{percent_encode, AuthSettings, Authorizer};
use super::template::{FieldTemplate, Part};
use super::{Credentials, Delivered, Delivery, DeliveryError, FailureClass, KeyProblem, Target};
use crate::duration::duration_opt;
use crate::redact;
use crate::tls;

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    pub url: String,
    /// Records per request; more than 1 sends a JSON array.
    #[serde(default = "default_batch")]
    pub batch: usize,
    /// How long one request may take.
    #[serde(default, deserialize_with = "duration_opt::deserialize")]
    pub timeout: Option<Duration>,
    /// Extra headers sent with every request.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// `POST` (default), `PUT` or `PATCH`.
    pub method: Option<String>,
    /// Record links: a JSON pointer to the id in the answer to a create
    /// (e.g. `/id`); needs `update_url` and `batch = 1`.
    pub link: Option<String>,
    /// Where a record that has a link goes (may hold `{link}` and record
    /// fields), with `update_method` (default `PATCH`).
    pub update_url: Option<String>,
    pub update_method: Option<String>,
    /// The auth keys (see [`super::http_auth`]): `auth`, and per kind
    /// `token_env`; `username`, `password_env`; `header`, `key_env`;
    /// `token_url`, `client_id`, `client_secret_env`, `scope`. Each names
    /// an environment variable for a secret, never the secret itself.
    pub auth: Option<String>,
    pub token_env: Option<String>,
    pub username: Option<String>,
    pub password_env: Option<String>,
    pub header: Option<String>,
    pub key_env: Option<String>,
    pub token_url: Option<String>,
    pub client_id: Option<String>,
    pub client_secret_env: Option<String>,
    pub scope: Option<String>,
    /// The health test: this method on this path (default: `GET` on `url`).
    pub health_method: Option<String>,
    pub health_path: Option<String>,
    /// This many requests without an answer (time-outs, resets) within
    /// `offline_window` make the endpoint Offline; a refused connection
    /// does at once.
    #[serde(default = "default_offline_after")]
    pub offline_after: u32,
    #[serde(default, deserialize_with = "duration_opt::deserialize")]
    pub offline_window: Option<Duration>,
    /// The longest wait between two tests of an Offline endpoint (the first
    /// comes within a second, then the wait doubles up to this), and the
    /// wait between tests of an Unauthorized one or one whose certificate
    /// is not trusted. Seed 003: hourly.
    #[serde(default, deserialize_with = "duration_opt::deserialize")]
    pub probe_every: Option<Duration>,
    /// PEM certificates of more authorities to trust for `https://` (a
    /// private CA), besides the platform's; relative to the configuration
    /// file's folder.
    pub ca_file: Option<PathBuf>,
    /// Mutual TLS: our PEM certificate chain and its PEM private key; both
    /// or neither.
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
}

fn default_offline_after() -> u32 {
    3
}

fn default_batch() -> usize {
    1
}

/// The largest answer body kept with an error.
const MAX_ANSWER: usize = 2048;

impl HttpConfig {
    /// Problems with the values, each naming its key. The TLS files are
    /// read (relative to `base`) so that a missing or broken one stops the
    /// daemon at its start rather than failing every delivery.
    pub fn validate(&self, base: &Path) -> Vec<KeyProblem> {
        let mut problems = Vec::new();
        let https = match reqwest::Url::parse(&template_sample(&self.url)) {
            Ok(url) if url.scheme() == "http" => Some(false),
            Ok(url) if url.scheme() == "https" => Some(true),
            Ok(url) => {
                problems.push((
                    "url".into(),
                    format!(
                        "scheme '{}' is not supported (use http or https)",
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
        problems.extend(self.tls_keys().validate(https, "an https:// url", base));
        if self.batch == 0 || self.batch > 10_000 {
            problems.push(("batch".into(), "must be between 1 and 10000".into()));
        }
        if self.timeout == Some(Duration::ZERO) {
            problems.push(("timeout".into(), "must be more than 0".into()));
        }
        problems.extend(self.auth().validate());
        problems.extend(self.validate_targets());
        if let Some(m) = &self.health_method {
            if reqwest::Method::from_bytes(m.as_bytes()).is_err() {
                problems.push((
                    "health_method".into(),
                    format!("'{m}' is not an HTTP method"),
                ));
            }
        }
        if let Some(p) = &self.health_path {
            if !p.starts_with('/') {
                problems.push(("health_path".into(), "must start with '/'".into()));
            }
        }
        if self.offline_after == 0 {
            problems.push(("offline_after".into(), "must be at least 1".into()));
        }
        if self.probe_every == Some(Duration::ZERO) {
            problems.push(("probe_every".into(), "must be more than 0".into()));
        }
        for name in self.headers.keys() {
            if reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_err() {
                problems.push((format!("headers.{name}"), "is not a header name".into()));
            }
        }
        problems
    }

    pub fn timeout(&self) -> Duration {
        self.timeout.unwrap_or(Duration::from_secs(10))
    }

    pub fn offline_window(&self) -> Duration {
        self.offline_window.unwrap_or(Duration::from_secs(30))
    }

    pub fn probe_every(&self) -> Duration {
        self.probe_every.unwrap_or(Duration::from_secs(3600))
    }

    fn tls_keys(&self) -> tls::ClientKeys<'_> {
        tls::ClientKeys {
            ca_file: self.ca_file.as_deref(),
            client_cert: self.client_cert.as_deref(),
            client_key: self.client_key.as_deref(),
        }
    }

    /// The TLS settings of the client: the platform's roots plus `ca_file`,
    /// and `client_cert`/`client_key` for mutual TLS.
    pub fn tls(&self, base: &Path) -> Result<rustls::ClientConfig, tls::SetupError> {
        self.tls_keys().config(base)
    }

    /// The auth settings (the auth keys are fields of this config: see
    /// [`super::http_auth`]).
    pub fn auth(&self) -> AuthSettings {
        AuthSettings {
            auth: self.auth.clone(),
            token_env: self.token_env.clone(),
            username: self.username.clone(),
            password_env: self.password_env.clone(),
            header: self.header.clone(),
            key_env: self.key_env.clone(),
            token_url: self.token_url.clone(),
            client_id: self.client_id.clone(),
            client_secret_env: self.client_secret_env.clone(),
            scope: self.scope.clone(),
        }
    }

    /// Problems with where records go: `method`, the fields in `url`, and
    /// the record-link keys.
    fn validate_targets(&self) -> Vec<KeyProblem> {
        let mut problems = Vec::new();
        for (key, value) in [
            ("method", &self.method),
            ("update_method", &self.update_method),
        ] {
            if let Some(m) = value {
                if write_method(m).is_none() {
                    problems.push((key.into(), format!("'{m}' is not one of POST, PUT, PATCH")));
                }
            }
        }
        match UrlTemplate::parse(&self.url, false) {
            Err(e) => problems.push(("url".into(), e)),
            Ok(t) if t.has_placeholders() => {
                if !in_path(&self.url) {
                    problems.push((
                        "url".into(),
                        "a {field} may only stand in the path or query".into(),
                    ));
                }
                if self.batch != 1 {
                    problems.push(("url".into(), "a {field} in url needs batch = 1".into()));
                }
            }
            Ok(_) => {}
        }
        match (&self.link, &self.update_url) {
            (Some(link), update_url) => {
                if !link.starts_with('/') {
                    problems.push((
                        "link".into(),
                        "must be a JSON pointer into the answer, e.g. \"/id\"".into(),
                    ));
                }
                if self.batch != 1 {
                    problems.push(("link".into(), "needs batch = 1".into()));
                }
                match update_url {
                    None => problems.push((
                        "update_url".into(),
                        "missing: link needs the url records that have a link go to".into(),
                    )),
                    Some(u) => match UrlTemplate::parse(u, true) {
                        Err(e) => problems.push(("update_url".into(), e)),
                        Ok(_) => match reqwest::Url::parse(&template_sample(u)) {
                            Ok(url) if matches!(url.scheme(), "http" | "https") && in_path(u) => {}
                            Ok(_) => problems.push((
                                "update_url".into(),
                                "must be an http or https URL with {link} and {field}s in its path or query".into(),
                            )),
                            Err(e) => problems.push((
                                "update_url".into(),
                                format!("'{}' is not a URL: {e}", redact::url(u)),
                            )),
                        },
                    },
                }
            }
            (None, _) => {
                for (key, value) in [
                    ("update_url", self.update_url.is_some()),
                    ("update_method", self.update_method.is_some()),
                ] {
                    if value {
                        problems.push((key.into(), "is only used with link".into()));
                    }
                }
            }
        }
        problems
    }
}

/// `POST`, `PUT` or `PATCH` (in any case).
fn write_method(m: &str) -> Option<reqwest::Method> {
    match m.to_ascii_uppercase().as_str() {
        "POST" => Some(reqwest::Method::POST),
        "PUT" => Some(reqwest::Method::PUT),
        "PATCH" => Some(reqwest::Method::PATCH),
        _ => None,
    }
}

/// Whether the first `{` of a url template comes after its host.
fn in_path(url: &str) -> bool {
    let Some(brace) = url.find('{') else {
        return true;
    };
    let after_scheme = url.find("://").map_or(0, |i| i + 3);
    brace > after_scheme && url[after_scheme..brace].contains('/')
}

/// A url template with every placeholder filled with `x`: what must parse.
fn template_sample(url: &str) -> String {
    match UrlTemplate::parse(url, true) {
        Ok(t) => t.sample(),
        Err(_) => url.to_string(),
    }
}

/// A url that may take values of the record, each percent-encoded as a
/// path segment.
type UrlTemplate = FieldTemplate;

/// The url `template` gives for `record` and `link`.
fn render_url(
    template: &UrlTemplate,
    record: Option<&serde_json::Value>,
    link: Option<&str>,
) -> Result<String, String> {
    template.render_with(record, link, "the url", |v| Ok(percent_encode(v)))
}

/// The id at the JSON pointer `pointer` in the answer to a create: a
/// text, or a number as its text.
pub(crate) fn linked_id(answer: &str, pointer: &str) -> Result<String, String> {
    let value: serde_json::Value = serde_json::from_str(answer)
        .map_err(|_| format!("the answer is not JSON, so it has no id at {pointer}"))?;
    match value.pointer(pointer) {
        Some(serde_json::Value::String(s)) if !s.is_empty() => Ok(s.clone()),
        Some(serde_json::Value::Number(n)) => Ok(n.to_string()),
        _ => Err(format!("the answer has no id at {pointer}")),
    }
}

/// `text` cut to at most `max` bytes (at a character boundary), with `…`
/// when cut.
pub(crate) fn truncated(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut cut = max;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push('…');
    }
    text
}

pub struct HttpTarget {
    url: UrlTemplate,
    /// `url` as messages show it: without its user-info.
    shown: String,
    method: reqwest::Method,
    /// Record links, when `link` is set.
    links: Option<Links>,
    batch: usize,
    headers: reqwest::header::HeaderMap,
    /// The client, or why it could not be set up (a TLS file that went
    /// missing after the configuration was checked): then every delivery
    /// and test fails with that reason.
    client: Result<reqwest::Client, String>,
    /// The credentials; replaced in place by a reauthorization.
    auth: Authorizer,
    health_method: reqwest::Method,
    health_url: String,
    /// `health_url` without its user-info.
    health_shown: String,
}

/// Where a record that has a link goes, and where its id is in the answer
/// to a create.
struct Links {
    pointer: String,
    update_url: UrlTemplate,
    update_method: reqwest::Method,
}

impl HttpTarget {
    /// Relative TLS file paths resolve against `base`.
    pub fn new(config: &HttpConfig, base: &Path) -> HttpTarget {
        let mut headers = reqwest::header::HeaderMap::new();
        for (k, v) in &config.headers {
            if let (Ok(k), Ok(v)) = (
                reqwest::header::HeaderName::from_bytes(k.as_bytes()),
                reqwest::header::HeaderValue::from_str(v),
            ) {
                headers.insert(k, v);
            }
        }
        headers.insert(
            reqwest::header::CONTENT_TYPE,
            reqwest::header::HeaderValue::from_static("application/json"),
        );
        let client = config
            .tls(base)
            .map_err(|e| format!("TLS cannot be set up: {e}"))
            .and_then(|tls| {
                reqwest::Client::builder()
                    .timeout(config.timeout())
                    .connect_timeout(config.timeout().min(Duration::from_secs(5)))
                    .tcp_nodelay(true)
                    .use_preconfigured_tls(tls)
                    .build()
                    .map_err(|e| format!("the HTTP client cannot be set up: {e}"))
            });
        let shown = redact::url(&config.url);
        if let Err(e) = &client {
            tracing::error!(url = %shown, "{e}");
        }
        let auth = Authorizer::new(&config.auth(), &shown);
        // The health test: the url without its placeholders' part (up to
        // the last `/` before the first `{`), or health_path on its host.
        let base_url = match config.url.find('{') {
            Some(brace) => match config.url[..brace].rfind('/') {
                Some(slash) => config.url[..=slash].to_string(),
                None => config.url[..brace].to_string(),
            },
            None => config.url.clone(),
        };
        let health_url = match (&config.health_path, reqwest::Url::parse(&base_url)) {
            (Some(path), Ok(mut url)) => {
                url.set_path(path);
                url.set_query(None);
                url.to_string()
            }
            _ => base_url,
        };
        let template = |u: &str, link| {
            UrlTemplate::parse(u, link).unwrap_or_else(|_| UrlTemplate {
                parts: vec![Part::Text(u.to_string())],
            })
        };
        let links = match (&config.link, &config.update_url) {
            (Some(pointer), Some(update_url)) => Some(Links {
                pointer: pointer.clone(),
                update_url: template(update_url, true),
                update_method: config
                    .update_method
                    .as_deref()
                    .and_then(write_method)
                    .unwrap_or(reqwest::Method::PATCH),
            }),
            _ => None,
        };
        HttpTarget {
            url: template(&config.url, false),
            shown,
            method: config
                .method
                .as_deref()
                .and_then(write_method)
                .unwrap_or(reqwest::Method::POST),
            links,
            batch: config.batch,
            headers,
            client,
            auth,
            health_method: config
                .health_method
                .as_deref()
                .and_then(|m| reqwest::Method::from_bytes(m.as_bytes()).ok())
                .unwrap_or(reqwest::Method::GET),
            health_shown: redact::url(&health_url),
            health_url,
        }
    }

    /// The client; `what` (the request, for the message) if it could not
    /// be set up.
    fn client(&self, what: &str) -> Result<&reqwest::Client, DeliveryError> {
        self.client.as_ref().map_err(|e| DeliveryError {
            class: FailureClass::Untrusted,
            message: format!("{what}: {e}"),
            retry_after: None,
        })
    }

    /// Where one delivery goes: its method and url, and the link it
    /// updates (`None`: a create, or no record links).
    fn route<'d>(
        &self,
        d: &Delivery<'d>,
    ) -> Result<(reqwest::Method, String, Option<&'d str>), DeliveryError> {
        let (method, template, link) = match (&self.links, d.link) {
            (Some(links), Some(link)) => (&links.update_method, &links.update_url, Some(link)),
            _ => (&self.method, &self.url, None),
        };
        let rejected = |message: String| DeliveryError {
            class: FailureClass::Rejected,
            message: format!("{method} {}: {message}", self.shown),
            retry_after: None,
        };
        let record = if template.has_fields() {
            Some(
                serde_json::from_str::<serde_json::Value>(d.payload)
                    .map_err(|_| rejected("the record is not JSON".into()))?,
            )
        } else {
            None
        };
        let url = render_url(template, record.as_ref(), link).map_err(rejected)?;
        Ok((method.clone(), url, link))
    }
}

/// A transport error as a failure class: TLS refused either way, no
/// connection at all, or no answer.
pub(crate) fn transport_failure(what: &str, e: reqwest::Error) -> DeliveryError {
    if let Some(failure) = tls::failure(&e) {
        let hint = failure.hint();
        return DeliveryError {
            class: FailureClass::Untrusted,
            message: format!("{what}: {failure}{hint}"),
            retry_after: None,
        };
    }
    DeliveryError {
        class: if e.is_connect() {
            FailureClass::Unreachable
        } else {
            FailureClass::NoAnswer
        },
        message: format!("{what}: {}", describe(e)),
        retry_after: None,
    }
}

/// Reads `Retry-After` given in seconds.
fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(Duration::from_secs)
}

pub(crate) fn classify(status: reqwest::StatusCode) -> Option<FailureClass> {
    if status.is_success() {
        None
    } else if status.is_server_error()
        || status == reqwest::StatusCode::TOO_MANY_REQUESTS
        || status == reqwest::StatusCode::REQUEST_TIMEOUT
    {
        Some(FailureClass::Intermittent)
    } else if status == reqwest::StatusCode::UNAUTHORIZED
        || status == reqwest::StatusCode::FORBIDDEN
    {
        Some(FailureClass::Unauthorized)
    } else {
        Some(FailureClass::Rejected)
    }
}

#[async_trait]
impl Target for HttpTarget {
    fn batch_size(&self) -> usize {
        self.batch
    }

    fn links(&self) -> bool {
        self.links.is_some()
    }

    async fn deliver(&self, batch: &[Delivery<'_>]) -> Result<Delivered, DeliveryError> {
        let Some(first) = batch.first() else {
            return Ok(Delivered::default());
        };
        let mut extra = reqwest::header::HeaderMap::new();
        let single = self.batch == 1 && batch.len() == 1;
        let (method, url, updates) = if single {
            self.route(first)?
        } else {
            (
                self.method.clone(),
                render_url(&self.url, None, None).unwrap_or_default(),
                None,
            )
        };
        let what = format!("{method} {}", redact::url(&url));
        let client = self.client(&what)?;
        let header = |v: &str| reqwest::header::HeaderValue::from_str(v).ok();
        let body = if single {
            if let Some(v) = header(first.key) {
                extra.insert("idempotency-key", v);
            }
            first.payload.as_bytes().to_vec()
        } else {
            let mut body =
                Vec::with_capacity(batch.iter().map(|d| d.payload.len() + 1).sum::<usize>() + 2);
            body.push(b'[');
            let mut keys = String::with_capacity(batch.len() * (first.key.len() + 1));
            for (i, d) in batch.iter().enumerate() {
                if i > 0 {
                    body.push(b',');
                    keys.push(',');
                }
                body.extend_from_slice(d.payload.as_bytes());
                keys.push_str(d.key);
            }
            body.push(b']');
            if let Some(v) = header(&format!("{}+{}", first.key, batch.len())) {
                extra.insert("idempotency-key", v);
            }
            if let Some(v) = header(&keys) {
                extra.insert("x-sluice-keys", v);
            }
            body
        };
        // Cheap to clone: a refused access token sends it once more.
        let body = axum::body::Bytes::from(body);
        let response = self
            .auth
            .send(client, &what, || {
                client
                    .request(method.clone(), &url)
                    .headers(self.headers.clone())
                    .headers(extra.clone())
                    .body(body.clone())
            })
            .await?;
        let status = response.status();
        let Some(class) = classify(status) else {
            let Some(links) = &self.links else {
                return Ok(Delivered::default());
            };
            if let Some(link) = updates {
                return Ok(Delivered {
                    links: vec![Some(link.to_string())],
                });
            }
            let answer = response.text().await.unwrap_or_default();
            return match linked_id(&answer, &links.pointer) {
                Ok(id) => Ok(Delivered {
                    links: vec![Some(id)],
                }),
                Err(e) => Err(DeliveryError {
                    class: FailureClass::Rejected,
                    message: format!("{what}: {} but {e}", status.as_u16()),
                    retry_after: None,
                }),
            };
        };
        let retry_after = retry_after(response.headers());
        let answer = truncated(response.text().await.unwrap_or_default(), MAX_ANSWER);
        Err(DeliveryError {
            class,
            message: format!("{what}: {} {}", status.as_u16(), answer.trim()),
            retry_after,
        })
    }

    /// The health method on the health URL, with the credentials: any
    /// answer but a 5xx, 401 or 403 means it can be reached.
    async fn probe(&self) -> Result<String, DeliveryError> {
        let what = format!("{} {}", self.health_method, self.health_shown);
        let client = self.client(&what)?;
        let response = self
            .auth
            .send(client, &what, || {
                client.request(self.health_method.clone(), &self.health_url)
            })
            .await?;
        probe_answer(what, response.status())
    }

    fn set_credentials(&self, credentials: Credentials) -> Result<(), String> {
        self.auth.set_credentials(credentials)
    }
}

pub(crate) fn probe_answer(
    what: String,
    status: reqwest::StatusCode,
) -> Result<String, DeliveryError> {
    match classify(status) {
        Some(FailureClass::Unauthorized) => Err(DeliveryError {
            class: FailureClass::Unauthorized,
            message: format!("{what}: {status}"),
            retry_after: None,
        }),
        Some(_) if status.is_server_error() => Err(DeliveryError {
            class: FailureClass::Intermittent,
            message: format!("{what}: {status}"),
            retry_after: None,
        }),
        _ => Ok(format!("{what}: {status}")),
    }
}

/// The health test of an endpoint not built as a target.
pub async fn probe(config: &HttpConfig, base: &Path) -> Result<String, DeliveryError> {
    HttpTarget::new(config, base).probe().await
}

/// A short description of a transport error, without the URL (the caller
/// names the request, with the URL redacted; reqwest's own text would
/// repeat it as configured).
fn describe(e: reqwest::Error) -> String {
    if e.is_timeout() {
        "timed out".into()
    } else if e.is_connect() {
        "connection refused or unreachable".into()
    } else {
        let e = e.without_url();
        let mut msg = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            msg = format!("{msg}: {s}");
            source = s.source();
        }
        msg
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_classes() {
        use reqwest::StatusCode as S;
        assert_eq!(classify(S::OK), None);
        assert_eq!(classify(S::ACCEPTED), None);
        assert_eq!(
            classify(S::SERVICE_UNAVAILABLE),
            Some(FailureClass::Intermittent)
        );
        assert_eq!(
            classify(S::TOO_MANY_REQUESTS),
            Some(FailureClass::Intermittent)
        );
        assert_eq!(classify(S::UNAUTHORIZED), Some(FailureClass::Unauthorized));
        assert_eq!(classify(S::FORBIDDEN), Some(FailureClass::Unauthorized));
        assert_eq!(
            classify(S::UNPROCESSABLE_ENTITY),
            Some(FailureClass::Rejected)
        );
    }

    #[tokio::test]
    async fn credentials_travel_as_rfc_7617_and_6750_headers() {
        let header = |toml: &str, name: &'static str| {
            let c: HttpConfig = toml::from_str(toml).unwrap();
            async move {
                let auth = Authorizer::new(&c.auth(), "x");
                let client = reqwest::Client::new();
                let (request, _) = auth
                    .apply(&client, client.get("http://127.0.0.1/"))
                    .await
                    .unwrap();
                let request = request.build().unwrap();
                let value = request.headers()[name].clone();
                assert!(
                    value.is_sensitive(),
                    "never shown in a Debug of the request"
                );
                value.to_str().unwrap().to_string()
            }
        };
        std::env::set_var("SLUICE_UNIT_HTTP_PASS", "pass");
        std::env::set_var("SLUICE_UNIT_HTTP_TOKEN", "t0k");
        let basic =
            "url = \"http://h/\"\nusername = \"user\"\npassword_env = \"SLUICE_UNIT_HTTP_PASS\"";
        assert_eq!(header(basic, "authorization").await, "Basic dXNlcjpwYXNz");
        let bearer = "url = \"http://h/\"\ntoken_env = \"SLUICE_UNIT_HTTP_TOKEN\"";
        assert_eq!(header(bearer, "authorization").await, "Bearer t0k");
        let key = "url = \"http://h/\"\nauth = \"api_key\"\nheader = \"X-Api-Key\"\nkey_env = \"SLUICE_UNIT_HTTP_TOKEN\"";
        assert_eq!(header(key, "x-api-key").await, "t0k");
        let c: HttpConfig = toml::from_str(bearer).unwrap();
        let t = HttpTarget::new(&c, Path::new("."));
        assert!(t
            .set_credentials(Credentials::Bearer("bad\ntoken".into()))
            .is_err());
    }

    #[test]
    fn url_templates_take_record_fields_as_path_segments() {
        let t =
            UrlTemplate::parse("https://h/customers/{id}/{customer.name}?v={n}", false).unwrap();
        let record = serde_json::json!({"id": "a/b c", "customer": {"name": "é"}, "n": 7});
        assert_eq!(
            render_url(&t, Some(&record), None).unwrap(),
            "https://h/customers/a%2Fb%20c/%C3%A9?v=7"
        );
        let e = render_url(&t, Some(&serde_json::json!({"id": 1, "n": 2})), None).unwrap_err();
        assert!(e.contains("'customer.name'"), "{e}");
        let u = UrlTemplate::parse("https://h/c/{link}?by={id}", true).unwrap();
        assert_eq!(
            render_url(&u, Some(&serde_json::json!({"id": 3})), Some("x/1")).unwrap(),
            "https://h/c/x%2F1?by=3"
        );
        for bad in [
            "https://h/{",
            "https://h/}",
            "https://h/{}",
            "https://h/{a..b}",
        ] {
            assert!(UrlTemplate::parse(bad, false).is_err(), "{bad}");
        }
        assert!(!in_path("https://{host}/x"));
        assert!(in_path("https://h/x/{id}"));
    }

    #[test]
    fn the_link_is_read_at_its_pointer() {
        assert_eq!(linked_id(r#"{"id": "c-1"}"#, "/id").unwrap(), "c-1");
        assert_eq!(
            linked_id(r#"{"data": {"id": 42}}"#, "/data/id").unwrap(),
            "42"
        );
        assert!(linked_id(r#"{"data": {}}"#, "/data/id")
            .unwrap_err()
            .contains("no id at /data/id"));
        assert!(linked_id("created", "/id")
            .unwrap_err()
            .contains("not JSON"));
    }

    #[test]
    fn url_fields_and_links_need_batch_1() {
        let keys = |toml: &str| -> Vec<String> {
            let c: HttpConfig = toml::from_str(toml).unwrap();
            c.validate(Path::new("."))
                .into_iter()
                .map(|(k, _)| k)
                .collect()
        };
        assert!(keys("url = \"https://h/c/{id}\"\nmethod = \"PUT\"").is_empty());
        assert_eq!(keys("url = \"https://h/c/{id}\"\nbatch = 5"), ["url"]);
        assert_eq!(keys("url = \"https://h/c\"\nmethod = \"GET\""), ["method"]);
        assert_eq!(
            keys("url = \"https://h/c\"\nlink = \"/id\""),
            ["update_url"]
        );
        assert_eq!(
            keys("url = \"https://h/c\"\nupdate_url = \"https://h/c/{link}\""),
            ["update_url"]
        );
        assert!(
            keys("url = \"https://h/c\"\nlink = \"/id\"\nupdate_url = \"https://h/c/{link}\"")
                .is_empty()
        );
        assert_eq!(
            keys("url = \"https://h/c\"\nlink = \"/id\"\nupdate_url = \"https://h/c/{link}\"\nbatch = 2"),
            ["link"]
        );
        let c: HttpConfig = toml::from_str("url = \"https://h/api/customers/{id}\"").unwrap();
        let t = HttpTarget::new(&c, Path::new("."));
        assert_eq!(t.health_url, "https://h/api/customers/");
    }

    /// A create gives back the id the API answered; a record with a link
    /// goes to update_url with update_method.
    #[tokio::test]
    async fn creates_link_and_updates_go_to_update_url() {
        use axum::routing::{patch, post};
        let seen = std::sync::Arc::new(parking_lot::Mutex::new(Vec::<String>::new()));
        let app = axum::Router::new()
            .route(
                "/customers",
                post({
                    let seen = seen.clone();
                    move |body: String| async move {
                        seen.lock().push(format!("POST /customers {body}"));
                        axum::Json(serde_json::json!({"data": {"id": 17}}))
                    }
                }),
            )
            .route(
                "/customers/{id}",
                patch({
                    let seen = seen.clone();
                    move |axum::extract::Path(id): axum::extract::Path<String>, body: String| async move {
                        seen.lock().push(format!("PATCH /customers/{id} {body}"));
                        "{}"
                    }
                }),
            )
            .route("/nolink", post(|| async { "created" }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        let config = |url: &str| -> HttpConfig {
            toml::from_str(&format!(
                "url = \"http://{addr}{url}\"\nlink = \"/data/id\"\nupdate_url = \"http://{addr}/customers/{{link}}\""
            ))
            .unwrap()
        };
        let t = HttpTarget::new(&config("/customers"), Path::new("."));
        let created = t
            .deliver(&[Delivery::new("S:i:1", r#"{"name":"a"}"#)])
            .await
            .unwrap();
        assert_eq!(created.links, [Some("17".to_string())]);
        let update = Delivery {
            link: Some("17"),
            ..Delivery::new("S:i:2", r#"{"name":"b"}"#)
        };
        let updated = t.deliver(&[update]).await.unwrap();
        assert_eq!(updated.links, [Some("17".to_string())]);
        assert_eq!(
            *seen.lock(),
            [
                r#"POST /customers {"name":"a"}"#,
                r#"PATCH /customers/17 {"name":"b"}"#
            ]
        );
        let t = HttpTarget::new(&config("/nolink"), Path::new("."));
        let e = t
            .deliver(&[Delivery::new("S:i:3", "{}")])
            .await
            .unwrap_err();
        assert_eq!(e.class, FailureClass::Rejected);
        assert!(e.message.contains("no id at /data/id"), "{}", e.message);
    }

    #[test]
    fn validation_names_keys() {
        let c: HttpConfig = toml::from_str("url = \"ftp://x\"\nbatch = 0").unwrap();
        let keys: Vec<_> = c
            .validate(Path::new("."))
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(keys, ["url", "batch"]);
    }

    #[test]
    fn tls_files_are_checked_and_named() {
        let dir = tempfile::tempdir().unwrap();
        let problems = |toml: &str| {
            let c: HttpConfig = toml::from_str(toml).unwrap();
            c.validate(dir.path())
        };
        let p = problems("url = \"https://h/x\"\nca_file = \"ca.pem\"");
        assert_eq!(p.len(), 1, "{p:?}");
        assert_eq!(p[0].0, "ca_file");
        assert!(
            p[0].1.contains("cannot read") && p[0].1.contains("ca.pem"),
            "{p:?}"
        );
        std::fs::write(dir.path().join("ca.pem"), "junk").unwrap();
        let p = problems("url = \"https://h/x\"\nca_file = \"ca.pem\"");
        assert!(p[0].1.contains("holds no certificate"), "{p:?}");
        let p = problems("url = \"https://h/x\"\nclient_cert = \"c.pem\"");
        assert_eq!(p[0].0, "client_key", "{p:?}");
        let p = problems("url = \"http://h/x\"\nca_file = \"ca.pem\"");
        assert_eq!(p[0].0, "ca_file");
        assert!(p[0].1.contains("https://"), "{p:?}");
        assert!(problems("url = \"https://h/x\"").is_empty());
    }

    #[test]
    fn messages_never_show_the_password() {
        let c: HttpConfig = toml::from_str("url = \"http://u:S3cret@h:99999/x\"").unwrap();
        let p = c.validate(Path::new("."));
        assert_eq!(p[0].0, "url");
        assert!(!p[0].1.contains("S3cret"), "{p:?}");
        let c: HttpConfig =
            toml::from_str("url = \"http://u:S3cret@127.0.0.1:9/x\"\nhealth_path = \"/h\"")
                .unwrap();
        let t = HttpTarget::new(&c, Path::new("."));
        assert_eq!(t.shown, "http://***@127.0.0.1:9/x");
        assert_eq!(t.health_shown, "http://***@127.0.0.1:9/h");
    }
}
