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

use super::{duration_opt, Delivery, DeliveryError, FailureClass, KeyProblem, Target};

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
}

pub struct HttpTarget {
    url: String,
    batch: usize,
    headers: reqwest::header::HeaderMap,
    client: reqwest::Client,
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
        HttpTarget {
            url: config.url.clone(),
            batch: config.batch,
            headers,
            client,
        }
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
        let response = request.body(body).send().await.map_err(|e| DeliveryError {
            class: FailureClass::Intermittent,
            message: format!("POST {}: {}", self.url, describe(&e)),
            retry_after: None,
        })?;
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
}

/// `GET` on the endpoint's URL: any answer but a 5xx, 401 or 403 means it
/// can be reached.
pub async fn probe(config: &HttpConfig) -> Result<String, DeliveryError> {
    let client = reqwest::Client::builder()
        .timeout(config.timeout())
        .build()
        .map_err(|e| DeliveryError {
            class: FailureClass::Intermittent,
            message: e.to_string(),
            retry_after: None,
        })?;
    let response = client
        .get(&config.url)
        .send()
        .await
        .map_err(|e| DeliveryError {
            class: FailureClass::Intermittent,
            message: format!("GET {}: {}", config.url, describe(&e)),
            retry_after: None,
        })?;
    let status = response.status();
    match classify(status) {
        Some(class @ (FailureClass::Intermittent | FailureClass::Unauthorized))
            if status != reqwest::StatusCode::REQUEST_TIMEOUT
                && status != reqwest::StatusCode::TOO_MANY_REQUESTS =>
        {
            Err(DeliveryError {
                class,
                message: format!("GET {}: {}", config.url, status),
                retry_after: None,
            })
        }
        _ => Ok(format!("GET {}: {}", config.url, status)),
    }
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
        let c = HttpConfig {
            url: "ftp://x".into(),
            batch: 0,
            timeout: None,
            headers: BTreeMap::new(),
        };
        let keys: Vec<_> = c.validate().into_iter().map(|(k, _)| k).collect();
        assert_eq!(keys, ["url", "batch"]);
    }
}
