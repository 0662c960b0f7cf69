//! `kind = "http"`: POSTs JSON to a URL.
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
    /// The environment variable holding a bearer token (never the token
    /// itself in the file).
    pub token_env: Option<String>,
    /// Basic authentication: the user name, and the environment variable
    /// holding the password.
    pub username: Option<String>,
    pub password_env: Option<String>,
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

/// A path of the configuration, against the configuration file's folder.
fn resolve(path: &Path, base: &Path) -> PathBuf {
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        base.join(path)
    }
}

impl HttpConfig {
    /// Problems with the values, each naming its key. The TLS files are
    /// read (relative to `base`) so that a missing or broken one stops the
    /// daemon at its start rather than failing every delivery.
    pub fn validate(&self, base: &Path) -> Vec<KeyProblem> {
        let mut problems = Vec::new();
        let https = match reqwest::Url::parse(&self.url) {
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
        let tls_keys = [
            ("ca_file", &self.ca_file),
            ("client_cert", &self.client_cert),
            ("client_key", &self.client_key),
        ];
        let mut tls_usable = true;
        for (key, value) in tls_keys {
            if value.is_some() && https == Some(false) {
                problems.push((key.into(), "is only used with an https:// url".into()));
                tls_usable = false;
            }
            if value.as_ref().is_some_and(|p| p.as_os_str().is_empty()) {
                problems.push((key.into(), "must not be empty".into()));
                tls_usable = false;
            }
        }
        match (&self.client_cert, &self.client_key) {
            (Some(_), None) => {
                problems.push((
                    "client_key".into(),
                    "missing: client_cert needs the key of its certificate".into(),
                ));
                tls_usable = false;
            }
            (None, Some(_)) => {
                problems.push((
                    "client_cert".into(),
                    "missing: client_key needs the certificate it is the key of".into(),
                ));
                tls_usable = false;
            }
            _ => {}
        }
        if tls_usable && tls_keys.iter().any(|(_, v)| v.is_some()) {
            // Each file on its own first, so that every broken one is named.
            let mut files_ok = true;
            for (key, path) in tls_keys {
                let Some(path) = path else { continue };
                let path = resolve(path, base);
                let read = match key {
                    "client_key" => tls::private_key(key, &path).map(drop),
                    _ => tls::certificates(key, &path).map(drop),
                };
                if let Err(e) = read {
                    problems.push((e.key.into(), e.message));
                    files_ok = false;
                }
            }
            // Then together: a key that is not the certificate's, a CA
            // certificate that cannot be a trust anchor.
            if files_ok {
                if let Err(e) = self.tls(base) {
                    problems.push((e.key.into(), e.message));
                }
            }
        }
        if self.batch == 0 || self.batch > 10_000 {
            problems.push(("batch".into(), "must be between 1 and 10000".into()));
        }
        if self.timeout == Some(Duration::ZERO) {
            problems.push(("timeout".into(), "must be more than 0".into()));
        }
        if self.token_env.is_some() && self.username.is_some() {
            problems.push((
                "token_env".into(),
                "give either token_env or username, not both".into(),
            ));
        }
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

    /// The TLS settings of the client: the platform's roots plus `ca_file`,
    /// and `client_cert`/`client_key` for mutual TLS.
    pub fn tls(&self, base: &Path) -> Result<rustls::ClientConfig, tls::SetupError> {
        let ca_file = self.ca_file.as_deref().map(|p| resolve(p, base));
        let identity = match (&self.client_cert, &self.client_key) {
            (Some(cert), Some(key)) => Some((resolve(cert, base), resolve(key, base))),
            _ => None,
        };
        tls::client_config(tls::ClientFiles {
            ca_file: ca_file.as_deref(),
            identity: identity.as_ref().map(|(c, k)| (c.as_path(), k.as_path())),
        })
    }

    /// The credentials named by the configuration, read from the
    /// environment; `Err` names a variable that is not set.
    pub fn credentials(&self) -> Result<Option<Credentials>, String> {
        let var = |name: &str| {
            std::env::var(name).map_err(|_| format!("environment variable {name} is not set"))
        };
        if let Some(name) = &self.token_env {
            return Ok(Some(Credentials::Bearer(var(name)?)));
        }
        if let Some(username) = &self.username {
            let password = match &self.password_env {
                Some(name) => var(name)?,
                None => String::new(),
            };
            return Ok(Some(Credentials::Basic {
                username: username.clone(),
                password,
            }));
        }
        Ok(None)
    }
}

pub struct HttpTarget {
    url: String,
    /// `url` as messages show it: without its user-info.
    shown: String,
    batch: usize,
    headers: reqwest::header::HeaderMap,
    /// The client, or why it could not be set up (a TLS file that went
    /// missing after the configuration was checked): then every delivery
    /// and test fails with that reason.
    client: Result<reqwest::Client, String>,
    /// The credentials, if any; replaced by a reauthorization.
    auth: parking_lot::RwLock<Option<Credentials>>,
    health_method: reqwest::Method,
    health_url: String,
    /// `health_url` without its user-info.
    health_shown: String,
}

/// Whether `c` can travel in an `Authorization` header: a bearer token of
/// visible characters only (Basic credentials are base64 by reqwest).
fn fits_a_header(c: &Credentials) -> bool {
    match c {
        Credentials::Bearer(token) => {
            reqwest::header::HeaderValue::from_str(&format!("Bearer {token}")).is_ok()
        }
        Credentials::Basic { .. } => true,
    }
}

/// `request` with the credentials in its `Authorization` header (reqwest
/// marks it sensitive: it is never shown in a `Debug` of the request).
fn authorized(
    request: reqwest::RequestBuilder,
    credentials: Option<&Credentials>,
) -> reqwest::RequestBuilder {
    match credentials {
        None => request,
        Some(Credentials::Bearer(token)) => request.bearer_auth(token),
        Some(Credentials::Basic { username, password }) => {
            request.basic_auth(username, Some(password))
        }
    }
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
        let auth = match config.credentials() {
            Ok(Some(c)) if !fits_a_header(&c) => {
                tracing::warn!(url = %shown, "the token holds characters a header cannot carry");
                None
            }
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(url = %shown, "no credentials: {e}");
                None
            }
        };
        let health_url = match (&config.health_path, reqwest::Url::parse(&config.url)) {
            (Some(path), Ok(mut url)) => {
                url.set_path(path);
                url.set_query(None);
                url.to_string()
            }
            _ => config.url.clone(),
        };
        HttpTarget {
            url: config.url.clone(),
            shown,
            batch: config.batch,
            headers,
            client,
            auth: parking_lot::RwLock::new(auth),
            health_method: config
                .health_method
                .as_deref()
                .and_then(|m| reqwest::Method::from_bytes(m.as_bytes()).ok())
                .unwrap_or(reqwest::Method::GET),
            health_shown: redact::url(&health_url),
            health_url,
        }
    }

    fn auth(&self) -> Option<Credentials> {
        self.auth.read().clone()
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
}

/// A transport error as a failure class: TLS refused either way, no
/// connection at all, or no answer.
pub(crate) fn transport_failure(what: &str, e: reqwest::Error) -> DeliveryError {
    if let Some(failure) = tls::failure(&e) {
        let hint = match &failure {
            tls::Failure::Untrusted {
                unknown_issuer: true,
                ..
            } => " (a private certificate authority is trusted with ca_file)",
            tls::Failure::Refused(_) => " (mutual TLS: check client_cert and client_key)",
            _ => "",
        };
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

    async fn deliver(&self, batch: &[Delivery<'_>]) -> Result<Delivered, DeliveryError> {
        let Some(first) = batch.first() else {
            return Ok(Delivered::default());
        };
        let what = format!("POST {}", self.shown);
        let mut request = authorized(
            self.client(&what)?
                .post(&self.url)
                .headers(self.headers.clone()),
            self.auth().as_ref(),
        );
        let body = if self.batch == 1 && batch.len() == 1 {
            request = request.header("Idempotency-Key", first.key);
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
            request = request
                .header("Idempotency-Key", format!("{}+{}", first.key, batch.len()))
                .header("X-Sluice-Keys", keys);
            body
        };
        let response = request
            .body(body)
            .send()
            .await
            .map_err(|e| transport_failure(&what, e))?;
        let status = response.status();
        let Some(class) = classify(status) else {
            return Ok(Delivered::default());
        };
        let retry_after = retry_after(response.headers());
        let mut answer = response.text().await.unwrap_or_default();
        if answer.len() > MAX_ANSWER {
            let mut cut = MAX_ANSWER;
            while !answer.is_char_boundary(cut) {
                cut -= 1;
            }
            answer.truncate(cut);
            answer.push('…');
        }
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
        let request = authorized(
            self.client(&what)?
                .request(self.health_method.clone(), &self.health_url),
            self.auth().as_ref(),
        );
        let response = request
            .send()
            .await
            .map_err(|e| transport_failure(&what, e))?;
        probe_answer(what, response.status())
    }

    fn set_credentials(&self, credentials: Credentials) -> Result<(), String> {
        if !fits_a_header(&credentials) {
            return Err("the credentials hold characters a header cannot carry".to_string());
        }
        *self.auth.write() = Some(credentials);
        Ok(())
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

    #[test]
    fn credentials_travel_as_rfc_7617_and_6750_headers() {
        let header = |c: Credentials| {
            let request = authorized(reqwest::Client::new().get("http://127.0.0.1/"), Some(&c))
                .build()
                .unwrap();
            let value = request.headers()[reqwest::header::AUTHORIZATION].clone();
            assert!(
                value.is_sensitive(),
                "never shown in a Debug of the request"
            );
            value.to_str().unwrap().to_string()
        };
        let basic = Credentials::Basic {
            username: "user".into(),
            password: "pass".into(),
        };
        assert_eq!(header(basic), "Basic dXNlcjpwYXNz");
        assert_eq!(header(Credentials::Bearer("t0k".into())), "Bearer t0k");
        assert!(!fits_a_header(&Credentials::Bearer("bad\ntoken".into())));
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
