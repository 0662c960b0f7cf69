//! `/api/v1/sites/{site}/log` (text), `…/log/stream` (server-sent events)
//! and `…/audit` (JSON).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::header;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::stream::{self, Stream, StreamExt};
use serde::{Deserialize, Serialize};
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;
use tokio_stream::wrappers::BroadcastStream;

use super::openapi::{ErrorBody, SitePath};
use super::{rfc3339, site, ApiError, ApiResult, PathParams, QueryParams};
use crate::engine::Daemon;
use crate::log::format_entry;
use crate::model::Millis;

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct LogQuery {
    /// Only lines at this level or more important (a lower number).
    #[param(minimum = 0, maximum = 255)]
    pub level: Option<u8>,
    /// Only lines from this time on: RFC 3339, or milliseconds since the epoch.
    #[param(example = "2026-11-24T15:04:05Z")]
    pub since: Option<String>,
    /// At most this many lines (the newest); default 1000. 0 counts as 1
    /// and more than 10000 as 10000.
    #[param(minimum = 0, maximum = 18446744073709551615_u64)]
    pub limit: Option<usize>,
    /// Only lines after this log entry id.
    #[param(minimum = -9223372036854775808_i64, maximum = 9223372036854775807_i64)]
    pub after: Option<i64>,
}

pub(super) fn parse_since(s: &str) -> ApiResult<Millis> {
    if let Ok(ms) = s.parse::<i64>() {
        return Ok(ms);
    }
    chrono::DateTime::parse_from_rfc3339(s)
        .map(|t| t.timestamp_millis())
        .map_err(|_| {
            ApiError::BadRequest(format!(
                "since '{s}' is neither RFC 3339 (2026-11-24T15:04:05Z) nor milliseconds"
            ))
        })
}

/// The site's log as text, one line an entry, oldest first.
#[utoipa::path(get, path = "/api/v1/sites/{site}/log", tag = "log", params(SitePath, LogQuery),
    responses(
        (status = 200, description = "The log lines", body = String, content_type = "text/plain"),
        (status = 400, description = "A bad path or query", body = ErrorBody),
        (status = 404, description = "No such site", body = ErrorBody),
    ))]
pub async fn text(
    State(daemon): State<Arc<Daemon>>,
    PathParams(name): PathParams<String>,
    QueryParams(q): QueryParams<LogQuery>,
) -> ApiResult<Response> {
    let site = site(&daemon, &name)?;
    let since = q.since.as_deref().map(parse_since).transpose()?;
    let limit = q.limit.unwrap_or(1000).clamp(1, 10_000);
    let entries = site
        .log_entries(q.after.unwrap_or(0), since, q.level.unwrap_or(9), limit)
        .await?;
    let mut body = String::new();
    for e in &entries {
        body.push_str(&format_entry(e));
        body.push('\n');
    }
    Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], body).into_response())
}

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct StreamQuery {
    /// Only lines at this level or more important (a lower number).
    #[param(minimum = 0, maximum = 255)]
    pub level: Option<u8>,
    /// How many recent lines to send first (default 20; more than 1000
    /// counts as 1000).
    #[param(minimum = 0, maximum = 18446744073709551615_u64)]
    pub tail: Option<usize>,
}

/// Recent lines, then each new line as it is written, as server-sent
/// events whose data is the formatted line and whose id is the entry id.
#[utoipa::path(get, path = "/api/v1/sites/{site}/log/stream", tag = "log",
    params(SitePath, StreamQuery),
    responses(
        (status = 200, description = "Server-sent events: `id` is the entry id, `data` the formatted line; \
            it goes on until the client or the daemon closes it",
            body = String, content_type = "text/event-stream"),
        (status = 400, description = "A bad path or query", body = ErrorBody),
        (status = 404, description = "No such site", body = ErrorBody),
    ))]
pub async fn stream(
    State(daemon): State<Arc<Daemon>>,
    PathParams(name): PathParams<String>,
    QueryParams(q): QueryParams<StreamQuery>,
) -> ApiResult<Sse<impl Stream<Item = Result<Event, Infallible>>>> {
    let site = site(&daemon, &name)?;
    let max_level = q.level.unwrap_or(9);
    // Subscribe before reading the backlog, so no line falls in between.
    let live = BroadcastStream::new(site.log.subscribe());
    let tail = q.tail.unwrap_or(20).min(1000);
    let backlog = if tail == 0 {
        Vec::new()
    } else {
        site.log_entries(0, None, max_level, tail).await?
    };
    let last_id = backlog.last().map_or(0, |e| e.id);
    let event =
        |e: &crate::store::LogEntry| Event::default().id(e.id.to_string()).data(format_entry(e));
    let first: Vec<Result<Event, Infallible>> = backlog.iter().map(|e| Ok(event(e))).collect();
    let live = live.filter_map(move |item| {
        let out = match item {
            Ok(e) if e.level <= max_level && (e.id > last_id || e.id == 0) => Some(Ok(event(&e))),
            Ok(_) => None,
            Err(BroadcastStreamRecvError::Lagged(n)) => Some(Ok(
                Event::default().comment(format!("{n} lines skipped: the reader was too slow"))
            )),
        };
        std::future::ready(out)
    });
    let shutdown = daemon.shutdown_token();
    let events = stream::iter(first)
        .chain(live)
        .take_until(async move { shutdown.cancelled().await });
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// At most this many entries (the newest); default 100. 0 counts as 1
    /// and more than 10000 as 10000.
    #[param(minimum = 0, maximum = 18446744073709551615_u64)]
    pub limit: Option<usize>,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AuditView {
    pub id: i64,
    pub at: String,
    pub actor: String,
    pub action: String,
    pub subject: String,
    pub reason: Option<String>,
    pub outcome: String,
    /// On a cluster, the node that wrote it; null on a single node.
    pub node: Option<String>,
}

/// Who did what to the site, newest first.
#[utoipa::path(get, path = "/api/v1/sites/{site}/audit", tag = "log", params(SitePath, AuditQuery),
    responses(
        (status = 200, description = "The audit trail, newest first", body = Vec<AuditView>),
        (status = 400, description = "A bad path or query", body = ErrorBody),
        (status = 404, description = "No such site", body = ErrorBody),
    ))]
pub async fn audit(
    State(daemon): State<Arc<Daemon>>,
    PathParams(name): PathParams<String>,
    QueryParams(q): QueryParams<AuditQuery>,
) -> ApiResult<Json<Vec<AuditView>>> {
    let site = site(&daemon, &name)?;
    let entries = site
        .audit_entries(q.limit.unwrap_or(100).clamp(1, 10_000))
        .await?;
    Ok(Json(entries.into_iter().map(AuditView::from).collect()))
}

impl From<crate::store::AuditEntry> for AuditView {
    fn from(a: crate::store::AuditEntry) -> AuditView {
        AuditView {
            id: a.id,
            at: rfc3339(a.ts),
            actor: a.actor,
            action: a.action,
            subject: a.subject,
            reason: a.reason,
            outcome: a.outcome,
            node: a.node,
        }
    }
}
