//! `POST /hooks/{site}/{integration}/{flow}`: the webhook source.
//!
//! Takes one JSON object or an array of them and answers 202 once they are
//! durably queued (in the array's order); 503 with `Retry-After` while the
//! site or the integration is stopped; a paused integration still takes
//! records (they queue).
//!
//! What a request must pass before anything is queued, cheapest first, so
//! that a caller who may not post costs no memory: the webhook exists (404);
//! its `Content-Type`, when given, is JSON (415); a bearer secret, when the
//! webhook has one (401); the body's length against the webhook's
//! `max_body`, from `Content-Length` before reading, else while reading
//! (413); its share of the daemon's body budget (503, see `api::body`); an
//! HMAC signature over the body, when the webhook asks for one (401); then
//! the body must be JSON objects (400).

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::Json;
use serde::Serialize;
use serde_json::Value;

use super::body::BodyBudget;
use super::openapi::{ErrorBody, HookPath, HookRecords};
use super::{site, ApiError, ApiResult, PathParams};
use crate::connectors::webhook::{Refused, WebhookConfig};
use crate::connectors::EndpointKind;
use crate::engine::{Daemon, Site};

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Accepted {
    /// How many records were queued.
    pub queued: usize,
    pub first_seq: Option<i64>,
    pub last_seq: Option<i64>,
}

/// Takes one JSON object or an array of them, queued in the array's order.
#[utoipa::path(post, path = "/hooks/{site}/{integration}/{flow}", tag = "hooks", params(HookPath),
    request_body = HookRecords,
    responses(
        (status = 202, description = "The records are durably queued", body = Accepted),
        (status = 400, description = "A bad path; the body is not an object or an array of objects", body = ErrorBody),
        (status = 401, description = "The webhook has a secret and the request does not prove it knows it", body = ErrorBody),
        (status = 404, description = "No such site, integration or webhook flow", body = ErrorBody),
        (status = 413, description = "The body is larger than the webhook takes", body = ErrorBody),
        (status = 415, description = "The Content-Type is given and is not JSON", body = ErrorBody),
        (status = 503, description = "The site or the integration is stopped, or too many bodies are being read at once; try again after `Retry-After` seconds",
            body = ErrorBody, headers(("Retry-After" = u64, description = "Seconds to wait"))),
        (status = 507, description = "The disk is full: nothing was taken and nothing changed; try again after `Retry-After` seconds",
            body = ErrorBody, headers(("Retry-After" = u64, description = "Seconds to wait"))),
    ))]
pub async fn receive(
    State(daemon): State<Arc<Daemon>>,
    State(budget): State<BodyBudget>,
    PathParams((site_name, integration, flow)): PathParams<(String, String, String)>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<(StatusCode, Json<Accepted>)> {
    let site = site(&daemon, &site_name)?;
    let webhook = webhook(&site, &integration, &flow)?;
    json_content_type(&headers)?;
    webhook.verify_headers(&headers).map_err(refused)?;
    let read = budget
        .read(&headers, body, webhook.max_body, "this webhook")
        .await?;
    webhook
        .verify_body(&headers, &read.bytes)
        .map_err(refused)?;
    let value: Value = serde_json::from_slice(&read.bytes)
        .map_err(|e| ApiError::BadRequest(format!("the body is not JSON: {e}")))?;
    drop(read);
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

/// The settings of the webhook endpoint `flow` of `integration` takes its
/// records from, or 404.
fn webhook<'a>(site: &'a Site, integration: &str, flow: &str) -> ApiResult<&'a WebhookConfig> {
    let not_found = || {
        ApiError::NotFound(format!(
            "site {} has no webhook flow '{flow}' in integration '{integration}'",
            site.name
        ))
    };
    let (ic, fc) = site.config.flow(flow).ok_or_else(not_found)?;
    if ic.name != integration {
        return Err(not_found());
    }
    match site.config.endpoint(&fc.source).map(|e| &e.kind) {
        Some(EndpointKind::Webhook(c)) => Ok(c),
        _ => Err(ApiError::NotFound(format!(
            "flow {flow} does not take records by webhook (its source is {})",
            fc.source
        ))),
    }
}

/// A `Content-Type` that is given must be JSON (`application/json` or a
/// `+json` type, any parameters); none at all is taken as JSON.
fn json_content_type(headers: &HeaderMap) -> ApiResult<()> {
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return Ok(());
    };
    let essence = value
        .to_str()
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let json = essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"));
    if json {
        Ok(())
    } else {
        Err(ApiError::UnsupportedMediaType(format!(
            "Content-Type '{}' is not JSON: send application/json (or no Content-Type)",
            String::from_utf8_lossy(value.as_bytes())
        )))
    }
}

fn refused(r: Refused) -> ApiError {
    match r {
        Refused::Unauthorized(m) => ApiError::Unauthorized(m),
        Refused::NoSecret(m) => {
            tracing::error!("{m}");
            ApiError::Unavailable {
                message: "this webhook cannot check its callers' secret now; try again later"
                    .into(),
                retry_after: std::time::Duration::from_secs(60),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn content_types() {
        let check = |ct: Option<&'static str>| {
            let mut h = HeaderMap::new();
            if let Some(ct) = ct {
                h.insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
            }
            json_content_type(&h).is_ok()
        };
        assert!(check(None));
        assert!(check(Some("application/json")));
        assert!(check(Some("Application/JSON; charset=utf-8")));
        assert!(check(Some("application/vnd.shop.order+json")));
        assert!(!check(Some("text/plain")));
        assert!(!check(Some("application/x-www-form-urlencoded")));
        assert!(!check(Some("multipart/form-data; boundary=x")));
    }
}
