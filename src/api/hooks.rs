//! `POST /hooks/{site}/{integration}/{flow}`: the webhook source.
//!
//! Takes one JSON object or an array of them and answers 202 once they are
//! durably queued (in the array's order); 503 with `Retry-After` while the
//! site or the integration is stopped; a paused integration still takes
//! records (they queue).

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::Serialize;
use serde_json::Value;

use super::openapi::{ErrorBody, HookPath, HookRecords};
use super::{site, ApiError, ApiResult, AppState, PathParams};
use crate::connectors::EndpointKind;

/// The largest body the route reads at all; each webhook endpoint's
/// `max_body` is checked below it.
pub const MAX_BODY: usize = 64 * 1024 * 1024;

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Accepted {
    /// How many records were queued.
    pub queued: usize,
    pub first_seq: Option<i64>,
    pub last_seq: Option<i64>,
}

/// Takes one JSON object or an array of them, queued in the array's order.
#[utoipa::path(post, path = "/hooks/{site}/{integration}/{flow}", tag = "hooks", params(HookPath),
    security(()),
    request_body = HookRecords,
    responses(
        (status = 202, description = "The records are durably queued", body = Accepted),
        (status = 400, description = "A bad path; the body is not an object or an array of objects", body = ErrorBody),
        (status = 404, description = "No such site, integration or webhook flow", body = ErrorBody),
        (status = 413, description = "The body is larger than the webhook takes", body = ErrorBody),
        (status = 503, description = "The site or the integration is stopped; try again after `Retry-After` seconds",
            body = ErrorBody, headers(("Retry-After" = u64, description = "Seconds to wait"))),
        (status = 507, description = "The disk is full: nothing was taken and nothing changed; try again after `Retry-After` seconds",
            body = ErrorBody, headers(("Retry-After" = u64, description = "Seconds to wait"))),
    ))]
pub async fn receive(
    State(daemon): State<AppState>,
    PathParams((site_name, integration, flow)): PathParams<(String, String, String)>,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<Accepted>)> {
    let site = site(&daemon, &site_name)?;
    let max_body = site
        .config
        .flow(&flow)
        .and_then(|(_, f)| site.config.endpoint(&f.source))
        .map(|e| match &e.kind {
            EndpointKind::Webhook(c) => c.max_body,
            _ => MAX_BODY,
        })
        .unwrap_or(MAX_BODY);
    if body.len() > max_body {
        return Err(ApiError::PayloadTooLarge(format!(
            "the body has {} bytes; this webhook takes at most {max_body}",
            body.len()
        )));
    }
    let value: Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError::BadRequest(format!("the body is not JSON: {e}")))?;
    let records = match value {
        Value::Array(items) => items,
        other => vec![other],
    };
    if let Some(i) = records.iter().position(|r| !r.is_object()) {
        return Err(ApiError::BadRequest(format!(
            "record {i} is not a JSON object; send one object or an array of objects"
        )));
    }
    let queued = records.len();
    let range = site.accept_pushed(&integration, &flow, records).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(Accepted {
            queued,
            first_seq: range.map(|r| r.0),
            last_seq: range.map(|r| r.1),
        }),
    ))
}
