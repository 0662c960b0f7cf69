//! The REST API (under `/api/v1`), the webhook receiver (`/hooks`), the
//! dashboard (`/`) and `/metrics`.
//!
//! One file per resource. [`routes`] is the one route table: each route
//! with its handler, who may call it and how a refusal is audited; the
//! router, the OpenAPI document ([`openapi`]) and the role each call needs
//! are derived from it. [`auth`] is the layer on every route that takes a
//! token (token, CSRF, the route's role). Every error is JSON
//! `{"error": "…"}` with the right status code ([`ApiError`] is the one
//! boundary); bad input is a 4xx, never a panic or a 500. A write the disk
//! has no space for is 507 with `Retry-After`: nothing was taken, nothing
//! changed.

pub mod alerts;
pub mod auth;
pub mod body;
pub mod dashboard;
pub mod endpoints;
pub mod errors;
pub mod flows;
pub mod history;
pub mod hooks;
pub mod integrations;
pub mod links;
pub mod log;
pub mod nodes;
pub mod openapi;
pub mod routes;
pub mod sites;
pub mod transactions;

pub use routes::router;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{FromRef, FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;

use crate::auth::Tokens;
use crate::engine::{Daemon, EngineError, Site};
use crate::model::Refusal;

/// What the HTTP surface holds: the engine it asks, and what is its own —
/// who may call it and how much body it reads at once. The engine knows
/// nothing of tokens or listeners; the server (`server.rs`) builds this.
#[derive(Clone)]
pub struct ApiState {
    pub daemon: Arc<Daemon>,
    /// The API tokens (`tokens.db` in the data directory, or the shared
    /// database with `store = "postgres"`).
    pub tokens: Tokens,
    /// Whether the API listens on a loopback address only: open mode (no
    /// token exists, everyone is admin) is allowed only then.
    pub loopback_only: bool,
    /// Bounds the request bodies being read at once (see [`body`]).
    pub budget: body::BodyBudget,
}

impl FromRef<ApiState> for Arc<Daemon> {
    fn from_ref(state: &ApiState) -> Arc<Daemon> {
        state.daemon.clone()
    }
}

impl FromRef<ApiState> for Tokens {
    fn from_ref(state: &ApiState) -> Tokens {
        state.tokens.clone()
    }
}

impl FromRef<ApiState> for body::BodyBudget {
    fn from_ref(state: &ApiState) -> body::BodyBudget {
        state.budget.clone()
    }
}

/// `GET /metrics`: Prometheus text format. Needs a token (any role) once
/// tokens exist, like the rest of the API; a scraper sends it as a bearer.
#[utoipa::path(get, path = "/metrics", tag = "meta",
    responses(
        (status = 200, description = "Prometheus text exposition format", body = String,
            content_type = "text/plain; version=0.0.4; charset=utf-8"),
    ))]
pub async fn metrics(axum::extract::State(daemon): axum::extract::State<Arc<Daemon>>) -> Response {
    let text = crate::metrics::render(&daemon.snapshot().await);
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

pub(crate) async fn method_not_allowed(
    method: axum::http::Method,
    axum::extract::OriginalUri(uri): axum::extract::OriginalUri,
) -> Response {
    (
        StatusCode::METHOD_NOT_ALLOWED,
        axum::Json(serde_json::json!({
            "error": format!("{method} is not an operation of {}; see /api/v1/openapi.json", uri.path())
        })),
    )
        .into_response()
}

pub(crate) async fn not_found() -> ApiError {
    ApiError::NotFound("no such resource; the API lives under /api/v1".into())
}

/// The one HTTP error boundary.
#[derive(Debug)]
pub enum ApiError {
    BadRequest(String),
    /// No valid token.
    Unauthorized(String),
    /// A valid token whose role may not do this, or a write without CSRF.
    Forbidden(String),
    NotFound(String),
    Conflict(String),
    PayloadTooLarge(String),
    UnsupportedMediaType(String),
    Unavailable {
        message: String,
        retry_after: Duration,
    },
    /// The disk holding `file` is full: the request was refused whole
    /// (nothing queued, nothing changed). 507 Insufficient Storage.
    DiskFull {
        file: PathBuf,
    },
    Internal(String),
}

/// What a client is told to wait before it tries a write again on a full
/// disk: long enough not to hammer it, short enough to notice freed space.
pub const DISK_FULL_RETRY_AFTER: Duration = Duration::from_secs(30);

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> ApiError {
        match e {
            EngineError::NotFound(m) => ApiError::NotFound(m),
            EngineError::Refused(Refusal::Conflict(m)) => ApiError::Conflict(m),
            EngineError::Refused(Refusal::Invalid(m)) => ApiError::BadRequest(m),
            EngineError::Unavailable {
                message,
                retry_after,
            } => ApiError::Unavailable {
                message,
                retry_after,
            },
            EngineError::Store(e) => ApiError::from(e),
        }
    }
}

impl From<crate::store::StoreError> for ApiError {
    fn from(e: crate::store::StoreError) -> ApiError {
        match e {
            crate::store::StoreError::Full { file } => ApiError::DiskFull { file },
            e => ApiError::Internal(e.to_string()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, message, retry_after) = match self {
            ApiError::BadRequest(m) => (StatusCode::BAD_REQUEST, m, None),
            ApiError::Unauthorized(m) => (StatusCode::UNAUTHORIZED, m, None),
            ApiError::Forbidden(m) => (StatusCode::FORBIDDEN, m, None),
            ApiError::NotFound(m) => (StatusCode::NOT_FOUND, m, None),
            ApiError::Conflict(m) => (StatusCode::CONFLICT, m, None),
            ApiError::PayloadTooLarge(m) => (StatusCode::PAYLOAD_TOO_LARGE, m, None),
            ApiError::UnsupportedMediaType(m) => (StatusCode::UNSUPPORTED_MEDIA_TYPE, m, None),
            ApiError::Unavailable {
                message,
                retry_after,
            } => (StatusCode::SERVICE_UNAVAILABLE, message, Some(retry_after)),
            // Not an internal error: the daemon's log says once that the
            // disk is full, not at each refused request. The answer names
            // the file, not where it lives.
            ApiError::DiskFull { file } => (
                StatusCode::INSUFFICIENT_STORAGE,
                format!(
                    "the disk is full: {} cannot be written. Nothing was taken and nothing \
                     changed; try again once space is freed",
                    file.file_name().map_or_else(
                        || file.display().to_string(),
                        |n| n.to_string_lossy().into_owned()
                    )
                ),
                Some(DISK_FULL_RETRY_AFTER),
            ),
            ApiError::Internal(detail) => {
                // The detail goes to the daemon's log, not to the client.
                tracing::error!("internal error: {detail}");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal error; the daemon's log has the details".to_string(),
                    None,
                )
            }
        };
        let mut response =
            (status, axum::Json(serde_json::json!({ "error": message }))).into_response();
        if let Some(after) = retry_after {
            if let Ok(v) = HeaderValue::from_str(&after.as_secs().max(1).to_string()) {
                response.headers_mut().insert(header::RETRY_AFTER, v);
            }
        }
        response
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

/// Who asks, as recorded in the audit trail: the name of the caller's
/// token; in open mode (no tokens, loopback) what the client states in
/// `X-Sluice-Actor` (the CLI sends `$USER@cli`), else `anonymous@ADDRESS`.
pub struct Actor(pub String);

impl<S: Send + Sync> FromRequestParts<S> for Actor {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Actor, ApiError> {
        let caller = parts.extensions.get::<auth::Caller>();
        Ok(Actor(auth::actor_name(
            caller,
            &parts.headers,
            auth::peer(&parts.extensions),
        )))
    }
}

/// A JSON body whose every problem is a JSON 400 (or 413), not axum's text.
/// An empty body reads as `{}`.
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<JsonBody<T>, ApiError> {
        let bytes = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(|e| ApiError::PayloadTooLarge(format!("cannot read the body: {e}")))?;
        let text: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
            b"{}"
        } else {
            &bytes
        };
        serde_json::from_slice(text).map(JsonBody).map_err(|e| {
            ApiError::BadRequest(format!("the body is not valid JSON for this request: {e}"))
        })
    }
}

/// Query parameters whose problems are JSON 400s.
pub struct QueryParams<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for QueryParams<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<QueryParams<T>, ApiError> {
        let query = parts.uri.query().unwrap_or("");
        serde_urlencoded::from_str(query)
            .map(QueryParams)
            .map_err(|e| ApiError::BadRequest(format!("bad query parameters: {e}")))
    }
}

/// Path parameters whose problems are JSON 400s.
pub struct PathParams<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for PathParams<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<PathParams<T>, ApiError> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(t)| PathParams(t))
            .map_err(|e| ApiError::BadRequest(format!("bad path: {e}")))
    }
}

/// The site named in the path.
pub(crate) fn site(daemon: &Daemon, name: &str) -> ApiResult<Arc<Site>> {
    daemon.site(name).map_err(ApiError::from)
}

/// Milliseconds since the epoch as RFC 3339.
pub(crate) use crate::log::rfc3339;
