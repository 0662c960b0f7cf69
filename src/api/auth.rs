//! Who may call the API: tokens, the dashboard's cookie session, CSRF, and
//! the role each route needs.
//!
//! - A request names its token as `Authorization: Bearer TOKEN`, or carries
//!   the dashboard's `sluice_session` cookie (HttpOnly, SameSite=Strict),
//!   set by `POST /api/v1/session`.
//! - A write (any method but GET/HEAD/OPTIONS) carried by the cookie must
//!   also send `X-CSRF-Token` with the value `GET /api/v1/session` gave;
//!   and a write whose `Origin` is another site than the daemon is refused
//!   whatever it carries (this also guards open mode on loopback).
//! - 401 without a valid token, 403 when the role may not (each route's
//!   role is in the route table, [`super::routes`]); both JSON, through
//!   [`ApiError`]. A refusal for the role is audited in the site's trail
//!   under the route's action.
//! - Open mode (no token exists, loopback only): everyone is admin.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};

use super::log::{AuditQuery, AuditView};
use super::openapi::ErrorBody;
use super::routes::Audited;
use super::{ApiError, ApiResult, ApiState, JsonBody, PathParams, QueryParams};
use crate::auth::{csrf, AuthError, Principal, Role, TokenInfo, Tokens};
use crate::model::{actions, Action};

pub const COOKIE: &str = "sluice_session";
/// How long the dashboard's cookie lasts: a working day.
const COOKIE_MAX_AGE_S: u64 = 12 * 3600;

/// In every request's extensions when the daemon itself serves HTTPS
/// (`tls_cert`, `tls_key`): the session cookie is then `Secure`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServedOverTls;

/// How the caller proved who it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    Bearer,
    /// The dashboard's session cookie (a session id, not a token).
    Cookie,
    /// No token exists and the daemon listens on loopback only.
    Open,
}

/// The caller of a request that passed [`require`].
#[derive(Debug, Clone)]
pub struct Caller {
    pub principal: Principal,
    pub via: Via,
    /// The secret presented: the token, or the cookie's session id (the
    /// CSRF value derives from it); empty in open mode.
    token: String,
}

impl Caller {
    /// What the answers to this caller offer depends on it.
    pub fn role(&self) -> Role {
        self.principal.role
    }
}

/// The caller, for a handler behind [`require`] (every route that takes a
/// token): [`require`] put it in the request.
impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Caller, ApiError> {
        parts.extensions.get::<Caller>().cloned().ok_or_else(|| {
            ApiError::Internal("a handler asks for its caller on a route without auth".into())
        })
    }
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> ApiError {
        match e {
            AuthError::Exists(_) => ApiError::Conflict(e.to_string()),
            AuthError::NoSuchToken(_) => ApiError::NotFound(e.to_string()),
            AuthError::Invalid(_) => ApiError::BadRequest(e.to_string()),
            AuthError::DiskFull { file } => ApiError::DiskFull { file },
            AuthError::Store { .. }
            | AuthError::Unavailable(_)
            | AuthError::Postgres(_)
            | AuthError::NoStoreUrl(_) => ApiError::Internal(e.to_string()),
        }
    }
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

fn cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v.trim())
        .filter(|v| !v.is_empty())
}

/// Who the request comes from, or 401.
pub async fn identify(state: &ApiState, headers: &HeaderMap) -> ApiResult<Caller> {
    let presented = match (bearer(headers), cookie(headers)) {
        (Some(t), _) => Some((t.to_string(), Via::Bearer)),
        (None, Some(t)) => Some((t.to_string(), Via::Cookie)),
        (None, None) => None,
    };
    resolve(state, presented).await
}

/// Who presents this token (bearer) or session id (cookie), or the
/// open-mode caller, or 401.
async fn resolve(state: &ApiState, presented: Option<(String, Via)>) -> ApiResult<Caller> {
    let open_allowed = state.loopback_only;
    let tokens = &state.tokens;
    // A valid token or session settles it; only without one does it matter
    // whether any token exists (open mode).
    let found = match &presented {
        Some((t, Via::Cookie)) => tokens.verify_session(t).await?,
        Some((t, _)) => tokens.verify(t).await?,
        None => None,
    };
    let any = found.is_some() || tokens.any().await?;
    match (presented, found) {
        (Some((token, via)), Some(principal)) => Ok(Caller {
            principal,
            via,
            token,
        }),
        (Some((_, Via::Cookie)), None) if any => Err(ApiError::Unauthorized(
            "the session has ended (signed out, expired, or its token revoked); sign in again"
                .into(),
        )),
        (Some(_), None) if any => Err(ApiError::Unauthorized(
            "the token is not valid (revoked, mistyped or from another daemon)".into(),
        )),
        // No token exists: open mode on loopback, whatever was presented.
        _ if !any && open_allowed => Ok(Caller {
            principal: Principal {
                name: "anonymous".into(),
                role: Role::Admin,
            },
            via: Via::Open,
            token: String::new(),
        }),
        _ if !any => Err(ApiError::Unauthorized(
            "no API token exists and the daemon listens beyond loopback; create one with \
             `sluice token create --config FILE --role admin --name NAME`"
                .into(),
        )),
        _ => Err(ApiError::Unauthorized(
            "sign in: send `Authorization: Bearer TOKEN` (tokens come from `sluice token create`)"
                .into(),
        )),
    }
}

/// Equal in time that does not depend on where they differ (`subtle`, as
/// the webhooks' secrets are compared).
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    subtle::ConstantTimeEq::ct_eq(a, b).into()
}

/// A write from a page of another origin is refused: browsers send
/// `Origin` on cross-site requests; the CLI and scripts send none.
fn same_origin(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return true;
    };
    let Some(host) = headers.get(header::HOST).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    origin
        .split_once("://")
        .is_some_and(|(_, authority)| authority.trim_end_matches('/') == host)
}

/// Any method but GET, HEAD and OPTIONS.
pub(super) fn is_write(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// What the auth layer knows of the route it guards: the API's state, the
/// role the route needs, and how a refusal is audited (from the route
/// table).
#[derive(Clone)]
pub struct Guard {
    pub state: ApiState,
    pub role: Role,
    /// The route's path in full, as its table entry has it.
    pub path: Arc<str>,
    pub audited: Option<Audited>,
}

/// The layer on every route that takes a token: identifies the caller,
/// checks CSRF and the route's role, and hands the caller to the handler
/// (see [`super::Actor`]).
pub async fn require(State(guard): State<Guard>, mut request: Request, next: Next) -> Response {
    let method = request.method().clone();
    let caller = match identify(&guard.state, request.headers()).await {
        Ok(caller) => caller,
        Err(e) => return e.into_response(),
    };
    if is_write(&method) {
        if !same_origin(request.headers()) {
            return ApiError::Forbidden("a write from another origin is refused".into())
                .into_response();
        }
        if caller.via == Via::Cookie {
            let sent = request
                .headers()
                .get("x-csrf-token")
                .map(|v| v.as_bytes())
                .unwrap_or_default();
            if !constant_time_eq(sent, csrf(&caller.token).as_bytes()) {
                return ApiError::Forbidden(
                    "missing or wrong X-CSRF-Token: a write from the dashboard's session \
                     must send the value GET /api/v1/session gives"
                        .into(),
                )
                .into_response();
            }
        }
    }
    let role = guard.role;
    if !caller.principal.role.may(role) {
        let named = guard
            .audited
            .and_then(|a| a.name(&guard.path, request.uri().path()));
        if let Some((site, action, subject)) = named {
            if let Ok(site) = guard.state.daemon.site(&site) {
                let outcome = format!(
                    "refused: forbidden (role {}, needs {role})",
                    caller.principal.role
                );
                site.audit(&caller.principal.name, &action, &subject, None, &outcome)
                    .await;
            }
        }
        return ApiError::Forbidden(format!(
            "{} has the role {}; this needs {}",
            caller.principal.name, caller.principal.role, role
        ))
        .into_response();
    }
    request.extensions_mut().insert(caller);
    next.run(request).await
}

/// The actor name recorded in audit trails for a caller: the token's name;
/// in open mode what the client states (`X-Sluice-Actor`) or its address.
pub fn actor_name(
    caller: Option<&Caller>,
    headers: &HeaderMap,
    peer: Option<SocketAddr>,
) -> String {
    if let Some(c) = caller.filter(|c| c.via != Via::Open) {
        return c.principal.name.clone();
    }
    let stated = headers
        .get("x-sluice-actor")
        .and_then(|v| v.to_str().ok())
        .map(|s| {
            s.chars()
                .filter(|c| !c.is_control())
                .take(64)
                .collect::<String>()
        })
        .filter(|s| !s.trim().is_empty());
    stated.unwrap_or_else(|| match peer {
        Some(addr) => format!("anonymous@{}", addr.ip()),
        None => "anonymous".into(),
    })
}

/// What `GET/POST /api/v1/session` answer.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SessionView {
    pub name: String,
    pub role: Role,
    /// Send as `X-CSRF-Token` with every write made with the cookie.
    pub csrf: String,
    /// `token`, or `open` when no token exists (loopback only).
    #[schema(value_type = String, pattern = "^(token|open)$")]
    pub auth: &'static str,
    /// What the caller may do beyond one site: `manage-tokens` (admins).
    #[schema(schema_with = daemon_actions_schema)]
    pub actions: Vec<String>,
}

fn daemon_actions_schema() -> utoipa::openapi::schema::Array {
    super::openapi::actions_schema(&Action::DAEMON)
}

fn session_view(caller: &Caller) -> SessionView {
    SessionView {
        name: caller.principal.name.clone(),
        role: caller.principal.role,
        csrf: if caller.token.is_empty() {
            String::new()
        } else {
            csrf(&caller.token)
        },
        auth: if caller.via == Via::Open {
            "open"
        } else {
            "token"
        },
        actions: actions::names(&actions::daemon(caller.principal.role)),
    }
}

/// `GET /api/v1/session`: who the dashboard is signed in as.
#[utoipa::path(get, path = "/api/v1/session", tag = "auth",
    responses(
        (status = 200, description = "Who the caller is (by bearer token or the dashboard's cookie)", body = SessionView),
        (status = 401, description = "Nobody: no valid token", body = ErrorBody),
    ))]
pub async fn session_show(
    State(state): State<ApiState>,
    headers: HeaderMap,
) -> ApiResult<Json<SessionView>> {
    let caller = identify(&state, &headers).await?;
    Ok(Json(session_view(&caller)))
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SignIn {
    #[serde(default)]
    pub token: String,
}

/// Whether the caller reached the daemon over HTTPS: served so by the
/// daemon itself, or through a proxy that says so (`X-Forwarded-Proto:
/// https`).
fn over_https(tls: Option<Extension<ServedOverTls>>, headers: &HeaderMap) -> bool {
    tls.is_some()
        || headers
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|p| p.eq_ignore_ascii_case("https"))
}

/// The session cookie; `Secure` when the caller came over HTTPS.
fn session_cookie(value: &str, max_age: u64, https: bool) -> HeaderValue {
    HeaderValue::from_str(&format!(
        "{COOKIE}={value}; HttpOnly; SameSite=Strict; Path=/; Max-Age={max_age}{}",
        if https { "; Secure" } else { "" }
    ))
    .unwrap_or_else(|_| HeaderValue::from_static("sluice_session=; Path=/; Max-Age=0"))
}

/// `POST /api/v1/session {"token"}`: signs the dashboard in. The token
/// opens a session of its own; the HttpOnly cookie, which page scripts
/// cannot read, carries the session's id, never the token.
#[utoipa::path(post, path = "/api/v1/session", tag = "auth",
    request_body = SignIn,
    responses(
        (status = 200, description = "Signed in; the cookie `sluice_session` is set", body = SessionView),
        (status = 400, description = "The body is not valid JSON for this request", body = ErrorBody),
        (status = 401, description = "The token is not valid", body = ErrorBody),
        (status = 413, description = "The body could not be read", body = ErrorBody),
    ))]
pub async fn session_create(
    State(tokens): State<Tokens>,
    tls: Option<Extension<ServedOverTls>>,
    request_headers: HeaderMap,
    JsonBody(body): JsonBody<SignIn>,
) -> ApiResult<Response> {
    let token = body.token.trim().to_string();
    // Only a valid token reaches the cookie; this spares the lookup for
    // what cannot be one.
    let valid = token.len() <= 256 && token.bytes().all(|b| b.is_ascii_graphic());
    if token.is_empty() || !valid {
        return Err(ApiError::Unauthorized("give a token to sign in".into()));
    }
    let ttl_ms = COOKIE_MAX_AGE_S as i64 * 1000;
    if !tokens.any().await? {
        return Err(ApiError::Unauthorized(
            "no API token exists: the daemon is open on loopback and needs no sign-in".into(),
        ));
    }
    let (id, principal) = tokens.open_session(&token, ttl_ms).await?.ok_or_else(|| {
        ApiError::Unauthorized(
            "the token is not valid (revoked, mistyped or from another daemon)".into(),
        )
    })?;
    let caller = Caller {
        principal,
        via: Via::Cookie,
        token: id,
    };
    let mut response = Json(session_view(&caller)).into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        session_cookie(
            &caller.token,
            COOKIE_MAX_AGE_S,
            over_https(tls, &request_headers),
        ),
    );
    Ok(response)
}

/// `DELETE /api/v1/session`: signs out: the session ends on the daemon (its
/// cookie is refused from now on, wherever it was copied) and the cookie
/// is dropped.
#[utoipa::path(delete, path = "/api/v1/session", tag = "auth",
    responses((status = 204, description = "Signed out; the session has ended and the cookie is dropped")))]
pub async fn session_delete(
    State(tokens): State<Tokens>,
    tls: Option<Extension<ServedOverTls>>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    if let Some(id) = cookie(&headers) {
        tokens.close_session(id).await?;
    }
    let mut response = StatusCode::NO_CONTENT.into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        session_cookie("", 0, over_https(tls, &headers)),
    );
    Ok(response)
}

/// `GET /api/v1/tokens` (admin): every token, never the secret.
#[utoipa::path(get, path = "/api/v1/tokens", tag = "auth",
    responses((status = 200, description = "Every token (never the token itself)", body = Vec<TokenInfo>)))]
pub async fn tokens_list(State(tokens): State<Tokens>) -> ApiResult<Json<Vec<TokenInfo>>> {
    Ok(Json(tokens.list().await?))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewToken {
    /// 1 to 64 letters, digits, `-`, `_`, `.` or `@`.
    #[schema(example = "grafana")]
    pub name: String,
    /// `viewer`, `operator` or `admin`.
    #[schema(example = "viewer")]
    pub role: String,
}

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CreatedToken {
    pub name: String,
    pub role: Role,
    /// Shown this once; only its hash is kept.
    pub token: String,
}

/// `POST /api/v1/tokens {"name", "role"}` (admin): 201 with the token.
#[utoipa::path(post, path = "/api/v1/tokens", tag = "auth", request_body = NewToken,
    responses(
        (status = 201, description = "The token, shown this once", body = CreatedToken),
        (status = 400, description = "A bad name or role, or a body that is not valid JSON", body = ErrorBody),
        (status = 409, description = "A token of that name exists", body = ErrorBody),
        (status = 413, description = "The body could not be read", body = ErrorBody),
        (status = 507, description = "The disk is full: nothing was taken and nothing changed; try again after `Retry-After` seconds",
            body = ErrorBody, headers(("Retry-After" = u64, description = "Seconds to wait"))),
    ))]
pub async fn tokens_create(
    State(tokens): State<Tokens>,
    actor: super::Actor,
    JsonBody(body): JsonBody<NewToken>,
) -> ApiResult<Response> {
    let role = Role::parse(&body.role).ok_or_else(|| {
        ApiError::BadRequest(format!(
            "role '{}': use viewer, operator or admin",
            body.role
        ))
    })?;
    let token = tokens.create(&body.name, role, &actor.0).await?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedToken {
            name: body.name,
            role,
            token,
        }),
    )
        .into_response())
}

/// `DELETE /api/v1/tokens/{name}` (admin): refused from now on.
#[utoipa::path(delete, path = "/api/v1/tokens/{name}", tag = "auth",
    params(("name" = String, Path, description = "The token's name")),
    responses(
        (status = 204, description = "Revoked"),
        (status = 400, description = "A bad path", body = ErrorBody),
        (status = 404, description = "No token of that name", body = ErrorBody),
        (status = 507, description = "The disk is full: nothing was taken and nothing changed; try again after `Retry-After` seconds",
            body = ErrorBody, headers(("Retry-After" = u64, description = "Seconds to wait"))),
    ))]
pub async fn tokens_revoke(
    State(tokens): State<Tokens>,
    PathParams(name): PathParams<String>,
    actor: super::Actor,
) -> ApiResult<StatusCode> {
    tokens.revoke(&name, &actor.0).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /api/v1/audit`: the token changes, newest first.
#[utoipa::path(get, path = "/api/v1/audit", tag = "auth", params(AuditQuery),
    responses(
        (status = 200, description = "Token changes, newest first", body = Vec<AuditView>),
        (status = 400, description = "Bad query parameters", body = ErrorBody),
    ))]
pub async fn audit(
    State(tokens): State<Tokens>,
    QueryParams(q): QueryParams<AuditQuery>,
) -> ApiResult<Json<Vec<AuditView>>> {
    let limit = q.limit.unwrap_or(100).clamp(1, 10_000);
    let list = tokens.audit(limit).await?;
    Ok(Json(list.into_iter().map(AuditView::from).collect()))
}

/// The peer address, where the server recorded it.
pub fn peer(extensions: &axum::http::Extensions) -> Option<SocketAddr> {
    extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(a)| *a)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_read_from_headers() {
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer abc "),
        );
        assert_eq!(bearer(&h), Some("abc"));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic abc"));
        assert_eq!(bearer(&h), None);
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; sluice_session=tok; b=2"),
        );
        assert_eq!(cookie(&h), Some("tok"));
    }

    #[test]
    fn the_cookie_is_secure_over_https() {
        let mut h = HeaderMap::new();
        let plain = session_cookie("t", 60, over_https(None, &h));
        assert!(plain
            .to_str()
            .unwrap()
            .contains("HttpOnly; SameSite=Strict"));
        assert!(!plain.to_str().unwrap().contains("Secure"));
        // Served over TLS by the daemon itself.
        assert!(
            session_cookie("t", 60, over_https(Some(Extension(ServedOverTls)), &h))
                .to_str()
                .unwrap()
                .ends_with("; Secure")
        );
        // Behind a TLS proxy that says so.
        h.insert("x-forwarded-proto", HeaderValue::from_static("https"));
        assert!(session_cookie("t", 60, over_https(None, &h))
            .to_str()
            .unwrap()
            .ends_with("; Secure"));
    }

    #[test]
    fn cross_origin_writes_are_spotted() {
        let mut h = HeaderMap::new();
        assert!(same_origin(&h), "no Origin: the CLI, a script");
        h.insert(header::HOST, HeaderValue::from_static("127.0.0.1:7070"));
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://127.0.0.1:7070"),
        );
        assert!(same_origin(&h));
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("https://evil.example"),
        );
        assert!(!same_origin(&h));
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
