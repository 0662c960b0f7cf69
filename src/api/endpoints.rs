//! `/api/v1/sites/{site}/endpoints`: what is observed of each endpoint.

use std::sync::Arc;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::Json;
use serde::{Deserialize, Serialize};

use super::auth::Caller;
use super::openapi::{
    actions_schema, endpoint_kind_schema, json_schema, EndpointPath, ErrorBody, SitePath,
};
use super::{rfc3339, site, Actor, ApiError, ApiResult, JsonBody, PathParams};
use crate::connectors::{Credentials, EndpointKind};
use crate::engine::endpoint::{Endpoint, EndpointState};
use crate::engine::{Daemon, Site};
use crate::model::{actions, Action, Role};

/// An endpoint as the API answers it, and as the CLI reads it.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct EndpointView {
    pub name: String,
    #[schema(schema_with = endpoint_kind_schema)]
    pub kind: String,
    /// `online`, `offline`, `unauthorized`, `disabled`.
    #[schema(value_type = EndpointState)]
    pub state: String,
    pub since: String,
    pub last_error: Option<String>,
    /// The latest probe or test (by the Monitor, a person, or a
    /// reauthorization); null until there was one.
    pub last_test: Option<LastTestView>,
    /// `test`, `reauthorize`: what the caller may do to it now.
    #[schema(schema_with = endpoint_actions)]
    pub actions: Vec<String>,
}

fn endpoint_actions() -> utoipa::openapi::schema::Array {
    actions_schema(&Action::ENDPOINT)
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LastTestView {
    pub at: String,
    /// Whether it reached the endpoint.
    pub ok: bool,
    /// What the endpoint answered, or why it could not be reached.
    pub detail: String,
}

/// The endpoint as `role` sees it: what it may do depends on its kind.
pub fn view(e: &Endpoint, role: Role) -> EndpointView {
    let h = e.observed();
    EndpointView {
        name: e.name.clone(),
        kind: e.kind.name().to_string(),
        state: h.state.as_str().to_string(),
        since: rfc3339(h.since),
        last_error: h.last_error,
        last_test: h.last_test.map(|t| LastTestView {
            at: rfc3339(t.at),
            ok: t.ok,
            detail: t.detail,
        }),
        actions: actions::names(&actions::endpoint(e.kind.takes_credentials(), role)),
    }
}

#[utoipa::path(get, path = "/api/v1/sites/{site}/endpoints", tag = "endpoints", params(SitePath),
    responses(
        (status = 200, description = "The site's endpoints", body = Vec<EndpointView>),
        (status = 400, description = "A bad path", body = ErrorBody),
        (status = 404, description = "No such site", body = ErrorBody),
    ))]
pub async fn list(
    State(daemon): State<Arc<Daemon>>,
    PathParams(name): PathParams<String>,
    caller: Caller,
) -> ApiResult<Json<Vec<EndpointView>>> {
    let site = site(&daemon, &name)?;
    Ok(Json(
        site.endpoints().map(|e| view(e, caller.role())).collect(),
    ))
}

#[utoipa::path(get, path = "/api/v1/sites/{site}/endpoints/{name}", tag = "endpoints",
    params(EndpointPath),
    responses(
        (status = 200, description = "The endpoint", body = EndpointView),
        (status = 400, description = "A bad path", body = ErrorBody),
        (status = 404, description = "No such site or endpoint", body = ErrorBody),
    ))]
pub async fn show(
    State(daemon): State<Arc<Daemon>>,
    PathParams((site_name, name)): PathParams<(String, String)>,
    caller: Caller,
) -> ApiResult<Json<EndpointView>> {
    let site = site(&daemon, &site_name)?;
    Ok(Json(view(site.endpoint(&name)?, caller.role())))
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TestAnswer {
    #[serde(flatten)]
    pub endpoint: EndpointView,
    /// Whether it could be reached.
    pub ok: bool,
    pub latency_ms: f64,
    /// What it answered, or why it could not be reached.
    pub detail: String,
}

/// Calls the endpoint now (HTTP: `GET` on its URL; file: the file or its
/// folder) and answers with what was found and the endpoint's state.
#[utoipa::path(post, path = "/api/v1/sites/{site}/endpoints/{name}/test", tag = "endpoints",
    params(EndpointPath),
    responses(
        (status = 200, description = "What the test found", body = TestAnswer),
        (status = 400, description = "A bad path", body = ErrorBody),
        (status = 404, description = "No such site or endpoint", body = ErrorBody),
    ))]
pub async fn test(
    State(daemon): State<Arc<Daemon>>,
    PathParams((site_name, name)): PathParams<(String, String)>,
    actor: Actor,
    caller: Caller,
) -> ApiResult<Json<TestAnswer>> {
    let site = site(&daemon, &site_name)?;
    let found = site.test_endpoint(&name, &actor.0).await?;
    Ok(Json(TestAnswer {
        endpoint: view(site.endpoint(&name)?, caller.role()),
        ok: found.ok,
        latency_ms: (found.latency_ms * 100.0).round() / 100.0,
        detail: found.detail,
    }))
}

/// Names the node that passed a reauthorization on to the others of its
/// cluster: they do not pass it on again.
pub const PASSED_ON_BY: &str = "x-sluice-passed-on-by";

/// What a reauthorization passed on carries of the request it came with:
/// who asks (their token, or their session and its CSRF value).
const CARRIED: [&str; 4] = ["authorization", "cookie", "x-csrf-token", "x-sluice-actor"];

/// On a node of a cluster: the new credentials, which work, go to every
/// other live node too (each sends some of the site's integrations, and
/// keeps credentials in its memory only), as the caller's own request, over
/// each node's API. What each answered is in the site log. The credentials
/// are in no log, store or notification.
async fn pass_on(
    daemon: &Daemon,
    site: &Site,
    endpoint: &str,
    headers: &HeaderMap,
    body: &ReauthorizeBody,
) {
    let Some(cluster) = daemon.cluster() else {
        return;
    };
    let said = |text: String| async move { site.log.write(crate::log::level::ERROR, text).await };
    let nodes = match daemon.nodes().await {
        Ok(nodes) => nodes,
        Err(e) => {
            return said(format!(
                "The new credentials of endpoint {endpoint} work here, but the other nodes \
                 cannot be listed: {e}; reauthorize it on each of them"
            ))
            .await
        }
    };
    let client = match daemon.peer_client() {
        Ok(client) => client,
        Err(e) => return said(format!("Cannot reach the other nodes: {e}")).await,
    };
    for node in nodes
        .iter()
        .filter(|n| n.alive && n.name != cluster.node && !n.address.is_empty())
    {
        let url = format!(
            "{}/api/v1/sites/{}/endpoints/{endpoint}/reauthorize",
            node.address.trim_end_matches('/'),
            site.name
        );
        let mut request = client
            .post(url)
            .json(body)
            .header(PASSED_ON_BY, cluster.node.as_str())
            .timeout(std::time::Duration::from_secs(30));
        for name in CARRIED {
            if let Some(value) = headers.get(name) {
                request = request.header(name, value);
            }
        }
        let (level, outcome) = match request.send().await {
            Ok(answer) if answer.status().is_success() => {
                (crate::log::level::INFO, "took them".to_string())
            }
            Ok(answer) => {
                let status = answer.status();
                let text = answer.text().await.unwrap_or_default();
                (
                    crate::log::level::ERROR,
                    format!("refused them ({status}): {}", crate::redact::urls_in(&text)),
                )
            }
            Err(e) => (
                crate::log::level::ERROR,
                format!(
                    "could not be reached: {}",
                    crate::redact::urls_in(&e.to_string())
                ),
            ),
        };
        site.log
            .write(
                level,
                format!("Endpoint {endpoint}: node {} {outcome}", node.name),
            )
            .await;
    }
}

/// New credentials, of the endpoint's kind of auth: a bearer token, a user
/// name and password, an API key, or an OAuth2 client secret. Never
/// logged, stored or echoed.
#[derive(Clone, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct ReauthorizeBody {
    pub token: Option<String>,
    pub username: Option<String>,
    pub password: Option<String>,
    pub key: Option<String>,
    pub client_secret: Option<String>,
}

impl ReauthorizeBody {
    /// The credentials of one form, non-empty; `None` for any other body.
    fn credentials(self) -> Option<Credentials> {
        let given = |v: &Option<String>| v.as_ref().is_some_and(|v| !v.is_empty());
        let forms = [
            self.token.is_some(),
            self.username.is_some() || self.password.is_some(),
            self.key.is_some(),
            self.client_secret.is_some(),
        ];
        if forms.iter().filter(|given| **given).count() != 1 {
            return None;
        }
        if given(&self.token) {
            self.token.map(Credentials::Bearer)
        } else if given(&self.username) {
            Some(Credentials::Basic {
                username: self.username.unwrap_or_default(),
                password: self.password.unwrap_or_default(),
            })
        } else if given(&self.key) {
            self.key.map(Credentials::ApiKey)
        } else if given(&self.client_secret) {
            self.client_secret.map(Credentials::ClientSecret)
        } else {
            None
        }
    }
}

/// What a reauthorization of an endpoint of `kind` takes, for a message.
fn takes(kind: &EndpointKind) -> String {
    match kind {
        EndpointKind::Http(c) => c.auth().takes(),
        _ => "no credentials".into(),
    }
}

/// One of the forms, as [`reauthorize`] takes it: which one depends on the
/// endpoint's `auth`.
impl utoipa::PartialSchema for ReauthorizeBody {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::Schema> {
        let secret = |name: &str, description: &str| {
            serde_json::json!({
                "type": "object",
                "description": description,
                "required": [name],
                "properties": {name: {"type": "string", "minLength": 1}},
                "additionalProperties": false
            })
        };
        json_schema(serde_json::json!({
            "description": "New credentials, of the form the endpoint's auth takes: a bearer token (auth = \"bearer\", or no auth), a user name and password (\"basic\", or no auth), an API key (\"api_key\"), or an OAuth2 client secret (\"oauth2\": the cached access token is dropped)",
            "oneOf": [
                secret("token", "auth = \"bearer\""),
                {
                    "type": "object",
                    "description": "auth = \"basic\"",
                    "required": ["username"],
                    "properties": {
                        "username": {"type": "string", "minLength": 1},
                        "password": {"type": "string"}
                    },
                    "additionalProperties": false
                },
                secret("key", "auth = \"api_key\""),
                secret("client_secret", "auth = \"oauth2\""),
            ]
        }))
    }
}

impl utoipa::ToSchema for ReauthorizeBody {}

/// Takes new credentials, tests them at once, and on success brings the
/// endpoint Online and lifts the system's holds. 409 if they do not work.
#[utoipa::path(post, path = "/api/v1/sites/{site}/endpoints/{name}/reauthorize", tag = "endpoints",
    params(EndpointPath),
    request_body = ReauthorizeBody,
    responses(
        (status = 200, description = "The credentials work; the endpoint is online", body = TestAnswer),
        (status = 400, description = "A bad path or body, credentials of another kind than the endpoint's auth, or an endpoint that takes no credentials; the error names what it takes", body = ErrorBody),
        (status = 404, description = "No such site or endpoint", body = ErrorBody),
        (status = 409, description = "The credentials do not work", body = ErrorBody),
        (status = 413, description = "The body cannot be read", body = ErrorBody),
    ))]
pub async fn reauthorize(
    State(daemon): State<Arc<Daemon>>,
    PathParams((site_name, name)): PathParams<(String, String)>,
    actor: Actor,
    caller: Caller,
    headers: HeaderMap,
    JsonBody(body): JsonBody<ReauthorizeBody>,
) -> ApiResult<Json<TestAnswer>> {
    let site = site(&daemon, &site_name)?;
    let passed_on = body.clone();
    let Some(credentials) = body.credentials() else {
        let endpoint = site.endpoint(&name)?;
        return Err(ApiError::BadRequest(format!(
            "endpoint {name} takes {}",
            takes(&endpoint.kind)
        )));
    };
    let found = site.reauthorize(&name, credentials, &actor.0).await?;
    if found.ok && !headers.contains_key(PASSED_ON_BY) {
        pass_on(&daemon, &site, &name, &headers, &passed_on).await;
    }
    Ok(Json(TestAnswer {
        endpoint: view(site.endpoint(&name)?, caller.role()),
        ok: found.ok,
        latency_ms: (found.latency_ms * 100.0).round() / 100.0,
        detail: found.detail,
    }))
}
