//! `kind = "http"`: POSTs JSON to a URL.
//!
//! With `batch = 1` the body is the record itself; with `batch > 1` it is a
//! JSON array of records. Every request carries `Idempotency-Key`: the
//! transaction's key `{site}:{integration}:{seq}` for one record, and for a
//! batch the first record's key followed by `+N` for the N records in it;
//! `X-Sluice-Keys` then lists the key of every record, comma-separated, in
//! body order. sluice adds no envelope around a record.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use serde::Deserialize;

use super::{duration_opt, Credentials, Delivery, DeliveryError, FailureClass, KeyProblem, Target};

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
    /// wait between tests of an Unauthorized one. Seed 003: hourly.
    #[serde(default, deserialize_with = "duration_opt::deserialize")]
    pub probe_every: Option<Duration>,
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
    pub fn validate(&self) -> Vec<KeyProblem> {
        let mut problems = Vec::new();
        match reqwest::Url::parse(&self.url) {
            Ok(url) if url.scheme() == "http" => {}
            Ok(url) => problems.push((
                "url".into(),
                format!("scheme '{}' is not supported (use http)", url.scheme()),
            )),
            Err(e) => problems.push(("url".into(), format!("'{}' is not a URL: {e}", self.url))),
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
    batch: usize,
    headers: reqwest::header::HeaderMap,
    client: reqwest::Client,
    /// The `Authorization` value, if any; replaced by a reauthorization.
    auth: std::sync::RwLock<Option<reqwest::header::HeaderValue>>,
    health_method: reqwest::Method,
    health_url: String,
}

fn authorization(c: &Credentials) -> Option<reqwest::header::HeaderValue> {
    use base64_lite::encode;
    let text = match c {
        Credentials::Bearer(token) => format!("Bearer {token}"),
        Credentials::Basic { username, password } => {
            format!(
                "Basic {}",
                encode(format!("{username}:{password}").as_bytes())
            )
        }
    };
    let mut v = reqwest::header::HeaderValue::from_str(&text).ok()?;
    v.set_sensitive(true);
    Some(v)
}

/// Standard base64, for Basic authentication.
mod base64_lite {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

    pub fn encode(bytes: &[u8]) -> String {
        let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
        for chunk in bytes.chunks(3) {
            let b = [
                chunk[0],
                *chunk.get(1).unwrap_or(&0),
                *chunk.get(2).unwrap_or(&0),
            ];
            let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
            for i in 0..4 {
                if i <= chunk.len() {
                    out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
                } else {
                    out.push('=');
                }
            }
        }
        out
    }

    #[cfg(test)]
    #[test]
    fn rfc4648_vectors() {
        assert_eq!(encode(b""), "");
        assert_eq!(encode(b"f"), "Zg==");
        assert_eq!(encode(b"fo"), "Zm8=");
        assert_eq!(encode(b"foo"), "Zm9v");
        assert_eq!(encode(b"foobar"), "Zm9vYmFy");
        assert_eq!(encode(b"user:pass"), "dXNlcjpwYXNz");
    }
}

impl HttpTarget {
    pub fn new(config: &HttpConfig) -> HttpTarget {
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
        let client = reqwest::Client::builder()
            .timeout(config.timeout())
            .connect_timeout(config.timeout().min(Duration::from_secs(5)))
            .tcp_nodelay(true)
            .build()
            .expect("a client without TLS settings always builds");
        let auth = match config.credentials() {
            Ok(c) => c.as_ref().and_then(authorization),
            Err(e) => {
                tracing::warn!(url = %config.url, "no credentials: {e}");
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
            batch: config.batch,
            headers,
            client,
            auth: std::sync::RwLock::new(auth),
            health_method: config
                .health_method
                .as_deref()
                .and_then(|m| reqwest::Method::from_bytes(m.as_bytes()).ok())
                .unwrap_or(reqwest::Method::GET),
            health_url,
        }
    }

    fn auth(&self) -> Option<reqwest::header::HeaderValue> {
        self.auth.read().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// A transport error as a failure class: no connection at all, or no answer.
fn transport_failure(what: String, e: &reqwest::Error) -> DeliveryError {
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

    async fn deliver(&self, batch: &[Delivery<'_>]) -> Result<(), DeliveryError> {
        let Some(first) = batch.first() else {
            return Ok(());
        };
        let mut request = self.client.post(&self.url).headers(self.headers.clone());
        if let Some(auth) = self.auth() {
            request = request.header(reqwest::header::AUTHORIZATION, auth);
        }
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
            .map_err(|e| transport_failure(format!("POST {}", self.url), &e))?;
        let status = response.status();
        let Some(class) = classify(status) else {
            return Ok(());
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
            message: format!("POST {}: {} {}", self.url, status.as_u16(), answer.trim()),
            retry_after,
        })
    }

    /// The health method on the health URL, with the credentials: any
    /// answer but a 5xx, 401 or 403 means it can be reached.
    async fn probe(&self) -> Result<String, DeliveryError> {
        let what = format!("{} {}", self.health_method, self.health_url);
        let mut request = self
            .client
            .request(self.health_method.clone(), &self.health_url);
        if let Some(auth) = self.auth() {
            request = request.header(reqwest::header::AUTHORIZATION, auth);
        }
        let response = request
            .send()
            .await
            .map_err(|e| transport_failure(what.clone(), &e))?;
        probe_answer(what, response.status())
    }

    fn set_credentials(&self, credentials: Credentials) -> Result<(), String> {
        let value = authorization(&credentials)
            .ok_or_else(|| "the credentials hold characters a header cannot carry".to_string())?;
        *self.auth.write().unwrap_or_else(|p| p.into_inner()) = Some(value);
        Ok(())
    }
}

fn probe_answer(what: String, status: reqwest::StatusCode) -> Result<String, DeliveryError> {
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
pub async fn probe(config: &HttpConfig) -> Result<String, DeliveryError> {
    HttpTarget::new(config).probe().await
}

/// A short description of a transport error, without the URL repeated.
fn describe(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timed out".into()
    } else if e.is_connect() {
        "connection refused or unreachable".into()
    } else {
        let mut msg = e.to_string();
        let mut source = std::error::Error::source(e);
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
    fn validation_names_keys() {
        let c: HttpConfig = toml::from_str("url = \"ftp://x\"\nbatch = 0").unwrap();
        let keys: Vec<_> = c.validate().into_iter().map(|(k, _)| k).collect();
        assert_eq!(keys, ["url", "batch"]);
    }
}
