//! `kind = "http_poll"`: pulls records from a JSON API, page by page.
//!
//! Each [`Pages::next`] fetches ONE page of the API (a `GET`) and gives the
//! records found at the `records` JSON pointer, sorted by cursor. The next
//! page is found one way, chosen in the configuration:
//! - `next`: a JSON pointer to the next page's URL in the answer (absolute,
//!   or relative to the page's URL), or `next = "link-header"` for the
//!   RFC 8288 `Link: <…>; rel="next"` header; no URL means the last page;
//! - `page_param`: a page number, from `page_start`; an empty page is the
//!   end;
//! - `cursor_param` + `next_cursor`: the value at `next_cursor` is passed as
//!   `cursor_param`; absent or null is the end;
//! - none of them: the API gives everything in one answer.
//!
//! # Invariants
//! - A page never ends in the middle of a run of equal cursors: the run
//!   commits the checkpoint per page, so the trailing records that share
//!   the page's last cursor are held back and given at the front of the
//!   next page (the last page gives them all). A halted 'Send Changed'
//!   therefore resumes without losing or repeating a record.
//! - 'Send Changed' passes the checkpoint as `since_param` and also drops
//!   records whose cursor is at or before it (APIs that filter with `>=`).
//! - Memory is bounded by one answer: a body over `max_page_bytes` is
//!   refused.
//! - Every request is built by [`HttpPollSource::get`]: the one place that
//!   sets headers (and, later, credentials).
//! - A next page is only fetched from the url's own origin (scheme, host,
//!   port): the headers (and credentials) of the API never go to a server
//!   an answer names.
//! - URLs in messages go through [`crate::redact::url`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::Value;

use super::http::{self, HttpConfig};
use super::http_auth::Authorizer;
use super::key_text;
use super::{
    Cursor, DeliveryError, FailureClass, KeyProblem, Pages, ReadRequest, Source, SourceError,
    SourceRecord,
};
use crate::duration::duration_opt;
use crate::model::RunMode;
use crate::redact;

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpPollConfig {
    /// The first page (without the pagination and since parameters).
    pub url: String,
    /// JSON pointer to the array of records in an answer; `""`: the answer
    /// is the array.
    #[serde(default)]
    pub records: String,
    /// JSON pointer to the next page's URL, or `"link-header"`.
    pub next: Option<String>,
    /// Pagination by page number: the query parameter, and the first page.
    pub page_param: Option<String>,
    pub page_start: Option<u64>,
    /// Pagination by cursor: the query parameter, and the JSON pointer to
    /// the value to pass for the next page.
    pub cursor_param: Option<String>,
    pub next_cursor: Option<String>,
    /// 'Send Changed' passes the checkpoint as this query parameter.
    pub since_param: Option<String>,
    /// Records per API page: `limit` passed as `limit_param`; both or
    /// neither.
    pub limit_param: Option<String>,
    pub limit: Option<u64>,
    /// The largest answer body taken; larger ones fail the run.
    #[serde(default = "default_max_page_bytes")]
    pub max_page_bytes: u64,
    /// A pause between pages, to spare the API.
    #[serde(default, deserialize_with = "duration_opt::deserialize")]
    pub pace: Option<Duration>,
    /// How long one request may take.
    #[serde(default, deserialize_with = "duration_opt::deserialize")]
    pub timeout: Option<Duration>,
    /// Extra headers sent with every request.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// As for `kind = "http"`: more authorities to trust, and mutual TLS.
    pub ca_file: Option<PathBuf>,
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
    /// Credentials, with the keys of `kind = "http"` (see
    /// [`super::http_auth`]): bearer, basic, api_key or oauth2.
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
}

fn default_max_page_bytes() -> u64 {
    32 * 1024 * 1024
}

/// The value of `next` that reads the `Link` header.
const LINK_HEADER: &str = "link-header";
/// The longest wait a `Retry-After` (or a back-off) is honoured for.
const MAX_WAIT: Duration = Duration::from_secs(300);
/// Retries of one page (429, or 503 with `Retry-After`) before the run fails.
const MAX_RETRIES: u32 = 10;
/// The largest part of an error answer kept in a message.
const MAX_ANSWER: usize = 2048;

/// How the next page is found: one way at a time.
#[derive(Debug, Clone, PartialEq)]
enum Pagination {
    /// Everything comes in one answer.
    Single,
    /// A JSON pointer to the next page's URL.
    NextPointer(String),
    /// RFC 8288 `Link: <…>; rel="next"`.
    LinkHeader,
    /// `param=N`, from `start`, until an empty page.
    PageNumber { param: String, start: u64 },
    /// `param=<value at pointer>`, until the pointer gives nothing.
    CursorParam { param: String, pointer: String },
}

fn is_pointer(p: &str) -> bool {
    p.is_empty() || p.starts_with('/')
}

impl HttpPollConfig {
    /// The settings `kind = "http"` shares (URL, time-out, headers, TLS),
    /// so that they are checked and set up exactly as there.
    fn as_http(&self) -> HttpConfig {
        HttpConfig {
            url: self.url.clone(),
            batch: 1,
            timeout: self.timeout,
            headers: self.headers.clone(),
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
            method: None,
            link: None,
            update_url: None,
            update_method: None,
            health_method: None,
            health_path: None,
            offline_after: 3,
            offline_window: None,
            probe_every: None,
            ca_file: self.ca_file.clone(),
            client_cert: self.client_cert.clone(),
            client_key: self.client_key.clone(),
        }
    }

    fn pagination(&self) -> Pagination {
        if let Some(next) = &self.next {
            if next == LINK_HEADER {
                return Pagination::LinkHeader;
            }
            return Pagination::NextPointer(next.clone());
        }
        if let Some(param) = &self.page_param {
            return Pagination::PageNumber {
                param: param.clone(),
                start: self.page_start.unwrap_or(1),
            };
        }
        if let (Some(param), Some(pointer)) = (&self.cursor_param, &self.next_cursor) {
            return Pagination::CursorParam {
                param: param.clone(),
                pointer: pointer.clone(),
            };
        }
        Pagination::Single
    }

    /// Problems with the values, each naming its key; URL, time-out,
    /// headers and TLS files are checked as `kind = "http"` checks them.
    pub fn validate(&self, base: &Path) -> Vec<KeyProblem> {
        let mut problems = self.as_http().validate(base);
        let mut problem = |key: &str, message: &str| problems.push((key.into(), message.into()));
        if !is_pointer(&self.records) {
            problem(
                "records",
                "must be a JSON pointer: \"\" or starting with '/'",
            );
        }
        if let Some(next) = &self.next {
            if next != LINK_HEADER && !next.starts_with('/') {
                problem(
                    "next",
                    "must be a JSON pointer starting with '/', or \"link-header\"",
                );
            }
        }
        if let Some(p) = &self.next_cursor {
            if !is_pointer(p) {
                problem(
                    "next_cursor",
                    "must be a JSON pointer: \"\" or starting with '/'",
                );
            }
        }
        let styles = [
            self.next.is_some(),
            self.page_param.is_some(),
            self.cursor_param.is_some() || self.next_cursor.is_some(),
        ];
        if styles.iter().filter(|s| **s).count() > 1 {
            problem(
                "next",
                "give one way to paginate: next, page_param, or cursor_param with next_cursor",
            );
        }
        if self.page_start.is_some() && self.page_param.is_none() {
            problem("page_start", "is only used with page_param");
        }
        match (&self.cursor_param, &self.next_cursor) {
            (Some(_), None) => problem(
                "next_cursor",
                "missing: cursor_param needs the pointer to the next cursor",
            ),
            (None, Some(_)) => problem(
                "cursor_param",
                "missing: next_cursor needs the parameter to pass it as",
            ),
            _ => {}
        }
        match (&self.limit_param, self.limit) {
            (Some(_), None) => problem("limit", "missing: limit_param needs a limit"),
            (None, Some(_)) => problem("limit_param", "missing: limit needs a limit_param"),
            (_, Some(0)) => problem("limit", "must be at least 1"),
            _ => {}
        }
        let params = [
            ("page_param", &self.page_param),
            ("cursor_param", &self.cursor_param),
            ("since_param", &self.since_param),
            ("limit_param", &self.limit_param),
        ];
        for (key, value) in params {
            if value.as_deref().is_some_and(|v| v.trim().is_empty()) {
                problem(key, "must not be empty");
            }
        }
        if self.max_page_bytes == 0 {
            problem("max_page_bytes", "must be at least 1");
        }
        problems
    }
}

/// The health test: a `GET` of the url; any answer but a 5xx, 401 or 403
/// means the API can be reached.
pub async fn probe(config: &HttpPollConfig, base: &Path) -> Result<String, DeliveryError> {
    HttpPollSource::new(config, base).probe().await
}

pub struct HttpPollSource {
    inner: Arc<Inner>,
}

/// What a source and the pages of its runs share.
struct Inner {
    url: reqwest::Url,
    records: String,
    pagination: Pagination,
    since_param: Option<String>,
    limit: Option<(String, u64)>,
    max_page_bytes: u64,
    pace: Duration,
    headers: reqwest::header::HeaderMap,
    /// The client, or why it could not be set up (a TLS file that went
    /// missing after the configuration was checked, a URL that does not
    /// parse): then every request fails with that reason.
    client: Result<reqwest::Client, String>,
    /// The credentials every request carries (an OAuth2 token is fetched,
    /// cached and refreshed once on a 401).
    auth: Authorizer,
}

impl HttpPollSource {
    /// Relative TLS file paths resolve against `base`.
    pub fn new(config: &HttpPollConfig, base: &Path) -> HttpPollSource {
        let http = config.as_http();
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(
            reqwest::header::ACCEPT,
            reqwest::header::HeaderValue::from_static("application/json"),
        );
        for (k, v) in &config.headers {
            if let (Ok(k), Ok(v)) = (
                reqwest::header::HeaderName::from_bytes(k.as_bytes()),
                reqwest::header::HeaderValue::from_str(v),
            ) {
                headers.insert(k, v);
            }
        }
        let url = reqwest::Url::parse(&config.url);
        let client = http
            .tls(base)
            .map_err(|e| format!("TLS cannot be set up: {e}"))
            .and_then(|tls| {
                reqwest::Client::builder()
                    .timeout(http.timeout())
                    .connect_timeout(http.timeout().min(Duration::from_secs(5)))
                    .use_preconfigured_tls(tls)
                    .build()
                    .map_err(|e| format!("the HTTP client cannot be set up: {e}"))
            })
            .and_then(|client| match &url {
                Ok(_) => Ok(client),
                Err(e) => Err(format!("the url is not a URL: {e}")),
            });
        if let Err(e) = &client {
            tracing::error!(url = %redact::url(&config.url), "{e}");
        }
        HttpPollSource {
            inner: Arc::new(Inner {
                url: url.unwrap_or_else(|_| reqwest::Url::parse("http://invalid./").unwrap()),
                records: config.records.clone(),
                pagination: config.pagination(),
                since_param: config.since_param.clone(),
                limit: config.limit_param.clone().zip(config.limit),
                max_page_bytes: config.max_page_bytes,
                pace: config.pace.unwrap_or_default(),
                headers,
                client,
                auth: Authorizer::new(&http.auth(), &redact::url(&config.url)),
            }),
        }
    }

    async fn probe(&self) -> Result<String, DeliveryError> {
        let url = &self.inner.url;
        let what = format!("GET {}", redact::url(url.as_str()));
        let response = self.inner.send(url, &what).await.map_err(|e| match e {
            Ok(message) => DeliveryError {
                class: FailureClass::Untrusted,
                message: format!("{what}: {message}"),
                retry_after: None,
            },
            Err(e) => e,
        })?;
        http::probe_answer(what, response.status())
    }
}

/// One answer of the API, as far as a page needs it.
struct Answer {
    /// The records, as the API gave them.
    records: Vec<Value>,
    /// Where the next page is, if the answer says.
    next: Option<reqwest::Url>,
    /// The value for `cursor_param` on the next page.
    next_cursor: Option<String>,
}

impl Inner {
    /// Every request the source makes, built in one place: the headers
    /// (and, once the auth module is in, the credentials) go here.
    /// A GET of `url` with the headers and the credentials. `Err(Ok(_))`:
    /// the client could not be set up (why); `Err(Err(_))`: the request
    /// failed (a transport error or the credentials could not be had).
    async fn send(
        &self,
        url: &reqwest::Url,
        what: &str,
    ) -> Result<reqwest::Response, Result<String, DeliveryError>> {
        let client = self.client.as_ref().map_err(|e| Ok(e.clone()))?;
        self.auth
            .send(client, what, || {
                client.get(url.clone()).headers(self.headers.clone())
            })
            .await
            .map_err(Err)
    }

    /// The configured url with the since and limit parameters and `extra`
    /// (page number or cursor); parameters of those names already in the
    /// url are replaced.
    fn url_for(&self, since: Option<&str>, extra: Option<(&str, &str)>) -> reqwest::Url {
        let mut url = self.url.clone();
        let since = self.since_param.as_deref().zip(since);
        let limit = self
            .limit
            .as_ref()
            .map(|(param, n)| (param.as_str(), n.to_string()));
        let ours: Vec<(&str, String)> = since
            .map(|(p, v)| (p, v.to_string()))
            .into_iter()
            .chain(limit)
            .chain(extra.map(|(p, v)| (p, v.to_string())))
            .collect();
        if ours.is_empty() {
            return url;
        }
        let kept: Vec<(String, String)> = url
            .query_pairs()
            .filter(|(k, _)| !ours.iter().any(|(p, _)| p == k))
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        {
            let mut query = url.query_pairs_mut();
            query.clear();
            for (k, v) in &kept {
                query.append_pair(k, v);
            }
            for (k, v) in &ours {
                query.append_pair(k, v);
            }
        }
        url
    }

    /// Fetches one page, waiting out 429s (and 503s with `Retry-After`).
    async fn fetch(&self, url: &reqwest::Url) -> Result<Answer, SourceError> {
        let what = format!("GET {}", redact::url(url.as_str()));
        let failed = |message: String| SourceError {
            message: format!("{what}: {message}"),
        };
        let mut backoff = Duration::from_secs(1);
        let mut retries = 0;
        let response = loop {
            let response = self.send(url, &what).await.map_err(|e| match e {
                Ok(message) => failed(message),
                Err(e) => SourceError { message: e.message },
            })?;
            let status = response.status();
            let busy = status == reqwest::StatusCode::TOO_MANY_REQUESTS
                || status == reqwest::StatusCode::SERVICE_UNAVAILABLE;
            let wait = match retry_after(response.headers(), chrono::Utc::now()) {
                Some(wait) if busy => Some(wait),
                None if status == reqwest::StatusCode::TOO_MANY_REQUESTS => {
                    let wait = backoff;
                    backoff = (backoff * 2).min(MAX_WAIT);
                    Some(wait)
                }
                _ => None,
            };
            match wait {
                Some(wait) if retries < MAX_RETRIES => {
                    retries += 1;
                    let wait = wait.min(MAX_WAIT);
                    drop(response);
                    tracing::info!(url = %redact::url(url.as_str()), ?wait, "the API answered {status}: waiting");
                    tokio::time::sleep(wait).await;
                }
                _ if status.is_success() => break response,
                _ => {
                    let (body, _) = read_capped(response, MAX_ANSWER as u64)
                        .await
                        .unwrap_or_default();
                    let body = String::from_utf8_lossy(&body);
                    let retried = if retries > 0 {
                        format!(" (after {retries} retries)")
                    } else {
                        String::new()
                    };
                    return Err(failed(format!(
                        "{}{retried} {}",
                        status.as_u16(),
                        body.trim()
                    )));
                }
            }
        };
        let link = match self.pagination {
            Pagination::LinkHeader => next_link(response.headers(), url),
            _ => None,
        };
        let (body, over) = read_capped(response, self.max_page_bytes)
            .await
            .map_err(failed)?;
        if over {
            return Err(failed(format!(
                "the answer is over max_page_bytes ({} bytes); ask for smaller pages (limit) or raise max_page_bytes",
                self.max_page_bytes
            )));
        }
        let mut answer: Value = serde_json::from_slice(&body)
            .map_err(|e| failed(format!("the answer is not JSON: {e}")))?;
        drop(body);
        let next = match &self.pagination {
            Pagination::LinkHeader => link,
            Pagination::NextPointer(pointer) => match answer.pointer(pointer) {
                None | Some(Value::Null) => None,
                Some(Value::String(s)) if s.is_empty() => None,
                Some(Value::String(s)) => Some(url.join(s).map_err(|e| {
                    failed(format!(
                        "the next page's URL at '{pointer}' is not a URL: {e}"
                    ))
                })?),
                Some(_) => {
                    return Err(failed(format!(
                        "the next page's URL at '{pointer}' is not text"
                    )))
                }
            },
            _ => None,
        };
        let next_cursor = match &self.pagination {
            Pagination::CursorParam { pointer, .. } => match answer.pointer(pointer) {
                None | Some(Value::Null) => None,
                Some(Value::String(s)) if s.is_empty() => None,
                Some(Value::String(s)) => Some(s.clone()),
                Some(Value::Number(n)) => Some(n.to_string()),
                Some(_) => {
                    return Err(failed(format!(
                        "the next cursor at '{pointer}' is neither text nor a number"
                    )))
                }
            },
            _ => None,
        };
        let records = match answer.pointer_mut(&self.records).map(Value::take) {
            Some(Value::Array(records)) => records,
            Some(other) => {
                return Err(failed(format!(
                    "no array of records at '{}' (found {})",
                    self.records,
                    kind_of(&other)
                )))
            }
            None => {
                return Err(failed(format!(
                    "no array of records at '{}' (nothing there)",
                    self.records
                )))
            }
        };
        Ok(Answer {
            records,
            next,
            next_cursor,
        })
    }
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "text",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// The body, up to `limit` bytes; `true` with it when there was more
/// (then the rest is not read).
async fn read_capped(
    mut response: reqwest::Response,
    limit: u64,
) -> Result<(Vec<u8>, bool), String> {
    if response.content_length().is_some_and(|len| len > limit) {
        return Ok((Vec::new(), true));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| format!("the answer broke off: {}", e.without_url()))?
    {
        if (body.len() + chunk.len()) as u64 > limit {
            let room = limit as usize - body.len();
            body.extend_from_slice(&chunk[..room]);
            return Ok((body, true));
        }
        body.extend_from_slice(&chunk);
    }
    Ok((body, false))
}

/// `Retry-After` in seconds or as an HTTP date (a date in the past is no
/// wait).
fn retry_after(
    headers: &reqwest::header::HeaderMap,
    now: chrono::DateTime<chrono::Utc>,
) -> Option<Duration> {
    let value = headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    Some(
        (at.with_timezone(&chrono::Utc) - now)
            .to_std()
            .unwrap_or(Duration::ZERO),
    )
}

/// The `rel="next"` target of the RFC 8288 `Link` headers, resolved
/// against the page's URL.
fn next_link(headers: &reqwest::header::HeaderMap, base: &reqwest::Url) -> Option<reqwest::Url> {
    for value in headers.get_all(reqwest::header::LINK) {
        let Ok(value) = value.to_str() else { continue };
        let mut rest = value;
        while let Some(open) = rest.find('<') {
            let Some(close) = rest[open..].find('>') else {
                break;
            };
            let target = &rest[open + 1..open + close];
            rest = &rest[open + close + 1..];
            // The parameters run up to the next link.
            let params = &rest[..rest.find('<').unwrap_or(rest.len())];
            let is_next = params.split([';', ',']).any(|param| {
                let Some((name, value)) = param.split_once('=') else {
                    return false;
                };
                name.trim().eq_ignore_ascii_case("rel")
                    && value
                        .trim()
                        .trim_matches('"')
                        .split_ascii_whitespace()
                        .any(|rel| rel.eq_ignore_ascii_case("next"))
            });
            if is_next {
                return base.join(target).ok();
            }
        }
    }
    None
}

/// The checkpoint as `since_param` gives it: a number as its text, text as
/// it is.
fn since_text(c: &Cursor) -> String {
    match c {
        Cursor::Number(n) => n.to_string(),
        Cursor::Text(s) => s.clone(),
    }
}

/// Splits off the trailing records that share the last record's cursor:
/// they wait for the next page, so a page never ends inside a run of equal
/// cursors. Records are in cursor order.
fn hold_back(records: &mut Vec<SourceRecord>) -> Vec<SourceRecord> {
    let Some(last) = records.last().and_then(|r| r.cursor.clone()) else {
        return Vec::new();
    };
    let keep = records
        .iter()
        .rposition(|r| r.cursor.as_ref() != Some(&last))
        .map_or(0, |i| i + 1);
    records.split_off(keep)
}

#[async_trait]
impl Source for HttpPollSource {
    async fn open(&self, req: ReadRequest) -> Result<Box<dyn Pages>, SourceError> {
        let since = match (&req.mode, &req.checkpoint) {
            (RunMode::Changed, Some(c)) => Some(since_text(c)),
            _ => None,
        };
        let inner = &self.inner;
        let first = match &inner.pagination {
            Pagination::PageNumber { param, start } => {
                inner.url_for(since.as_deref(), Some((param, &start.to_string())))
            }
            _ => inner.url_for(since.as_deref(), None),
        };
        let page = match inner.pagination {
            Pagination::PageNumber { start, .. } => start,
            _ => 0,
        };
        Ok(Box::new(PollPages {
            inner: inner.clone(),
            req,
            since,
            next: Some(first),
            page,
            held: Vec::new(),
        }))
    }

    fn pace(&self) -> Duration {
        self.inner.pace
    }
}

/// The pages of one run.
struct PollPages {
    inner: Arc<Inner>,
    req: ReadRequest,
    /// The checkpoint as passed in `since_param` ('Send Changed' only).
    since: Option<String>,
    /// The next page to fetch; `None` once the last one was read.
    next: Option<reqwest::Url>,
    /// The page number of `next` (page-number pagination).
    page: u64,
    /// Records held back from the previous page (sharing its last cursor).
    held: Vec<SourceRecord>,
}

impl PollPages {
    /// The API's records as the run reads them: key and cursor picked,
    /// records at or before the checkpoint dropped ('Send Changed').
    fn take(
        &self,
        records: Vec<Value>,
        url: &reqwest::Url,
    ) -> Result<Vec<SourceRecord>, SourceError> {
        let mut out = Vec::with_capacity(records.len());
        for (i, record) in records.into_iter().enumerate() {
            let key = self
                .req
                .key_field
                .as_deref()
                .and_then(|f| record.get(f))
                .and_then(key_text);
            let cursor = match self.req.cursor_field.as_deref() {
                None => None,
                Some(field) => match record.get(field).and_then(Cursor::from_json) {
                    Some(c) => Some(c),
                    None if self.req.mode == RunMode::All => None,
                    None => {
                        return Err(SourceError {
                            message: format!(
                                "GET {}: record {} has no number or text in cursor field '{field}'",
                                redact::url(url.as_str()),
                                i + 1
                            ),
                        })
                    }
                },
            };
            if self.req.mode == RunMode::Changed {
                if let (Some(checkpoint), Some(c)) = (&self.req.checkpoint, &cursor) {
                    if c <= checkpoint {
                        continue;
                    }
                }
            }
            out.push(SourceRecord {
                key,
                cursor,
                payload: record.to_string(),
            });
        }
        Ok(out)
    }

    /// The page after `url`, given its answer. A next page that is this
    /// page again (an API that would keep a run going forever) fails.
    fn following(
        &mut self,
        url: &reqwest::Url,
        answer: &mut Answer,
        got: usize,
    ) -> Result<Option<reqwest::Url>, SourceError> {
        let inner = &self.inner;
        let next = match &inner.pagination {
            Pagination::Single => None,
            Pagination::NextPointer(_) | Pagination::LinkHeader => answer.next.take(),
            Pagination::PageNumber { param, .. } if got > 0 => {
                self.page += 1;
                Some(inner.url_for(self.since.as_deref(), Some((param, &self.page.to_string()))))
            }
            Pagination::PageNumber { .. } => None,
            Pagination::CursorParam { param, .. } => answer
                .next_cursor
                .take()
                .map(|cursor| inner.url_for(self.since.as_deref(), Some((param, &cursor)))),
        };
        if let Some(next) = &next {
            if next.origin() != inner.url.origin() {
                return Err(SourceError {
                    message: format!(
                        "GET {}: the next page {} is on another server than the url; sluice follows only the url's scheme, host and port",
                        redact::url(url.as_str()),
                        redact::url(next.as_str())
                    ),
                });
            }
        }
        if next.as_ref() == Some(url) {
            return Err(SourceError {
                message: format!(
                    "GET {}: the API gives this page's own URL as the next page",
                    redact::url(url.as_str())
                ),
            });
        }
        Ok(next)
    }
}

#[async_trait]
impl Pages for PollPages {
    async fn next(&mut self) -> Result<Option<Vec<SourceRecord>>, SourceError> {
        let Some(url) = self.next.clone() else {
            if self.held.is_empty() {
                return Ok(None);
            }
            return Ok(Some(std::mem::take(&mut self.held)));
        };
        let mut answer = self.inner.fetch(&url).await?;
        let got = answer.records.len();
        let fresh = self.take(std::mem::take(&mut answer.records), &url)?;
        self.next = self.following(&url, &mut answer, got)?;
        let mut records = std::mem::take(&mut self.held);
        records.extend(fresh);
        super::sort_by_cursor(&mut records);
        if self.next.is_some() {
            self.held = hold_back(&mut records);
        }
        Ok(Some(records))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(toml: &str) -> HttpPollConfig {
        toml::from_str(toml).unwrap()
    }

    fn keys(toml: &str) -> Vec<String> {
        config(toml)
            .validate(Path::new("."))
            .into_iter()
            .map(|(k, _)| k)
            .collect()
    }

    fn rec(c: Option<f64>) -> SourceRecord {
        SourceRecord {
            key: None,
            cursor: c.map(Cursor::Number),
            payload: "{}".into(),
        }
    }

    #[test]
    fn validation_names_keys() {
        assert!(
            keys("url = \"https://h/v1/orders\"\nrecords = \"/data\"\nnext = \"/links/next\"")
                .is_empty()
        );
        assert!(keys("url = \"http://h/x\"\nnext = \"link-header\"").is_empty());
        assert!(
            keys("url = \"http://h/x\"\ncursor_param = \"c\"\nnext_cursor = \"/m/n\"").is_empty()
        );
        assert_eq!(
            keys("url = \"ftp://h/x\"\nrecords = \"data\""),
            ["url", "records"]
        );
        assert_eq!(
            keys("url = \"http://h/x\"\nnext = \"links.next\""),
            ["next"]
        );
        assert_eq!(
            keys("url = \"http://h/x\"\nnext = \"/n\"\npage_param = \"page\""),
            ["next"]
        );
        assert_eq!(
            keys("url = \"http://h/x\"\ncursor_param = \"c\""),
            ["next_cursor"]
        );
        assert_eq!(keys("url = \"http://h/x\"\npage_start = 0"), ["page_start"]);
        assert_eq!(keys("url = \"http://h/x\"\nlimit = 5"), ["limit_param"]);
        assert_eq!(
            keys("url = \"http://h/x\"\nlimit_param = \"n\"\nlimit = 0"),
            ["limit"]
        );
        assert_eq!(
            keys("url = \"http://h/x\"\nca_file = \"ca.pem\""),
            ["ca_file"]
        );
        assert_eq!(
            keys("url = \"http://h/x\"\nmax_page_bytes = 0"),
            ["max_page_bytes"]
        );
        assert!(toml::from_str::<HttpPollConfig>("url = \"http://h/x\"\nbatch = 3").is_err());
    }

    #[test]
    fn the_url_carries_since_limit_and_page() {
        let c = config(
            "url = \"http://h/v1/orders?status=open&page=9\"\npage_param = \"page\"\nsince_param = \"updated_since\"\nlimit_param = \"per_page\"\nlimit = 50",
        );
        let source = HttpPollSource::new(&c, Path::new("."));
        let url = source
            .inner
            .url_for(Some("2024-01-01T00:00:00Z"), Some(("page", "2")));
        assert_eq!(
            url.as_str(),
            "http://h/v1/orders?status=open&updated_since=2024-01-01T00%3A00%3A00Z&per_page=50&page=2"
        );
        assert_eq!(since_text(&Cursor::Number(42.0)), "42");
        assert_eq!(since_text(&Cursor::Number(1.5)), "1.5");
        assert_eq!(since_text(&Cursor::Text("a b".into())), "a b");
    }

    #[test]
    fn link_headers_give_the_next_page() {
        let base = reqwest::Url::parse("https://api.test/v1/orders?page=1").unwrap();
        let mut headers = reqwest::header::HeaderMap::new();
        headers.append(
            reqwest::header::LINK,
            "<https://api.test/v1/orders?page=1>; rel=\"prev\", </v1/orders?page=2&x=a,b>; rel=\"next last\""
                .parse()
                .unwrap(),
        );
        assert_eq!(
            next_link(&headers, &base).unwrap().as_str(),
            "https://api.test/v1/orders?page=2&x=a,b"
        );
        let mut headers = reqwest::header::HeaderMap::new();
        headers.append(
            reqwest::header::LINK,
            "<https://api.test/a>; rel=prev".parse().unwrap(),
        );
        headers.append(
            reqwest::header::LINK,
            "<?page=3>; rel=next".parse().unwrap(),
        );
        assert_eq!(
            next_link(&headers, &base).unwrap().as_str(),
            "https://api.test/v1/orders?page=3"
        );
        headers.remove(reqwest::header::LINK);
        assert_eq!(next_link(&headers, &base), None);
    }

    #[test]
    fn retry_after_in_seconds_or_as_a_date() {
        let now = chrono::DateTime::parse_from_rfc3339("2015-10-21T07:28:00Z")
            .unwrap()
            .with_timezone(&chrono::Utc);
        let after = |v: &str| {
            let mut h = reqwest::header::HeaderMap::new();
            h.insert(reqwest::header::RETRY_AFTER, v.parse().unwrap());
            retry_after(&h, now)
        };
        assert_eq!(after("7"), Some(Duration::from_secs(7)));
        assert_eq!(
            after("Wed, 21 Oct 2015 07:28:30 GMT"),
            Some(Duration::from_secs(30))
        );
        assert_eq!(after("Wed, 21 Oct 2015 07:00:00 GMT"), Some(Duration::ZERO));
        assert_eq!(after("soon"), None);
    }

    #[tokio::test]
    async fn a_next_page_on_another_server_is_refused() {
        let c =
            config("url = \"http://127.0.0.1:9/v1/orders\"\nrecords = \"/data\"\nnext = \"/next\"");
        let source = HttpPollSource::new(&c, Path::new("."));
        let mut pages = PollPages {
            inner: source.inner.clone(),
            req: ReadRequest {
                mode: RunMode::All,
                checkpoint: None,
                key_field: None,
                cursor_field: None,
            },
            since: None,
            next: None,
            page: 0,
            held: Vec::new(),
        };
        let url = source.inner.url.clone();
        let answer = |next: &str| Answer {
            records: Vec::new(),
            next: Some(url.join(next).unwrap()),
            next_cursor: None,
        };
        let same = pages.following(&url, &mut answer("?page=2"), 1).unwrap();
        assert_eq!(
            same.unwrap().as_str(),
            "http://127.0.0.1:9/v1/orders?page=2"
        );
        for elsewhere in [
            "https://127.0.0.1:9/x",
            "http://127.0.0.1:10/x",
            "http://evil.test/x",
        ] {
            let e = pages
                .following(&url, &mut answer(elsewhere), 1)
                .unwrap_err();
            assert!(e.message.contains("another server"), "{}", e.message);
        }
        let e = pages.following(&url, &mut answer(""), 1).unwrap_err();
        assert!(e.message.contains("own URL"), "{}", e.message);
    }

    #[test]
    fn a_page_holds_back_its_trailing_equal_cursors() {
        let mut page: Vec<_> = [Some(1.0), Some(2.0), Some(2.0)]
            .into_iter()
            .map(rec)
            .collect();
        let held = hold_back(&mut page);
        assert_eq!((page.len(), held.len()), (1, 2));
        let mut page: Vec<_> = [Some(3.0), Some(3.0)].into_iter().map(rec).collect();
        let held = hold_back(&mut page);
        assert_eq!((page.len(), held.len()), (0, 2));
        let mut page: Vec<_> = [None, None].into_iter().map(rec).collect();
        assert!(hold_back(&mut page).is_empty());
    }
}
