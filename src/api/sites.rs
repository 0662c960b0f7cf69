//! `/api/v1/sites`: list, show, start, stop.

use std::sync::Arc;

use axum::extract::State;
use axum::Json;
use serde::{Deserialize, Serialize};

use super::auth::Caller;
use super::openapi::{actions_schema, ErrorBody, SitePath};
use super::{rfc3339, site, Actor, ApiResult, JsonBody, PathParams};
use crate::engine::{Daemon, Site};
use crate::model::{actions, Action, Role, SiteState};

/// A site as the API answers it, and as the CLI reads it.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SiteView {
    pub name: String,
    /// `running`, `stopped`, `starting`, `stopping`.
    pub state: SiteState,
    /// When it entered that state.
    pub since: String,
    /// The reason given for the last stop, who gave it and when.
    pub stop_reason: Option<String>,
    pub stopped_by: Option<String>,
    pub stopped_at: Option<String>,
    pub log_level: u8,
    pub integrations: Vec<String>,
    pub endpoints: Vec<String>,
    /// `start`, `stop`, `reload`: what the caller may do to it now.
    #[schema(schema_with = site_actions)]
    pub actions: Vec<String>,
}

fn site_actions() -> utoipa::openapi::schema::Array {
    actions_schema(&Action::SITE)
}

/// The site as `role` sees it: what it may do depends on the state.
pub fn view(site: &Site, role: Role) -> SiteView {
    let status = site.status();
    let stop = status.last_stop;
    SiteView {
        name: site.name.clone(),
        state: status.state,
        since: rfc3339(status.since),
        stop_reason: stop.as_ref().map(|s| s.reason.clone()),
        stopped_by: stop.as_ref().map(|s| s.by.clone()),
        stopped_at: stop.as_ref().map(|s| rfc3339(s.at)),
        log_level: site.log.keep_level(),
        integrations: site.integrations().map(|i| i.name.clone()).collect(),
        endpoints: site.endpoints().map(|e| e.name.clone()).collect(),
        actions: actions::names(&actions::site(status.state, role)),
    }
}

#[utoipa::path(get, path = "/api/v1/sites", tag = "sites",
    responses((status = 200, description = "Every site", body = Vec<SiteView>)))]
pub async fn list(State(daemon): State<Arc<Daemon>>, caller: Caller) -> Json<Vec<SiteView>> {
    Json(
        daemon
            .sites()
            .iter()
            .map(|s| view(s, caller.role()))
            .collect(),
    )
}

/// Reads the configuration file again and applies the site's part.
#[utoipa::path(post, path = "/api/v1/sites/{site}/reload", tag = "sites", params(SitePath),
    responses(
        (status = 200, description = "The site after the reload", body = SiteView),
        (status = 400, description = "The configuration is not valid; nothing changed", body = ErrorBody),
        (status = 404, description = "No such site", body = ErrorBody),
        (status = 409, description = "The site is no longer in the configuration", body = ErrorBody),
    ))]
pub async fn reload(
    State(daemon): State<Arc<Daemon>>,
    PathParams(name): PathParams<String>,
    actor: Actor,
    caller: Caller,
) -> ApiResult<Json<SiteView>> {
    daemon.reload_site(&name, &actor.0).await?;
    Ok(Json(view(&*site(&daemon, &name)?, caller.role())))
}

#[utoipa::path(get, path = "/api/v1/sites/{site}", tag = "sites", params(SitePath),
    responses(
        (status = 200, description = "The site", body = SiteView),
        (status = 400, description = "A bad path", body = ErrorBody),
        (status = 404, description = "No such site", body = ErrorBody),
    ))]
pub async fn show(
    State(daemon): State<Arc<Daemon>>,
    PathParams(name): PathParams<String>,
    caller: Caller,
) -> ApiResult<Json<SiteView>> {
    Ok(Json(view(&*site(&daemon, &name)?, caller.role())))
}

#[utoipa::path(post, path = "/api/v1/sites/{site}/start", tag = "sites", params(SitePath),
    responses(
        (status = 200, description = "The site, starting or running", body = SiteView),
        (status = 400, description = "A bad path", body = ErrorBody),
        (status = 404, description = "No such site", body = ErrorBody),
        (status = 409, description = "The site is not stopped", body = ErrorBody),
        (status = 507, description = "The disk is full: nothing was taken and nothing changed; try again after `Retry-After` seconds",
            body = ErrorBody, headers(("Retry-After" = u64, description = "Seconds to wait"))),
    ))]
pub async fn start(
    State(daemon): State<Arc<Daemon>>,
    PathParams(name): PathParams<String>,
    actor: Actor,
    caller: Caller,
) -> ApiResult<Json<SiteView>> {
    let site = site(&daemon, &name)?;
    site.start(&actor.0).await?;
    Ok(Json(view(&site, caller.role())))
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StopBody {
    /// Why the site stops (required, not blank); recorded with who stopped
    /// it and when.
    #[schema(value_type = String, pattern = r"\S", example = "stocktake")]
    #[serde(default)]
    pub reason: Option<String>,
}

#[utoipa::path(post, path = "/api/v1/sites/{site}/stop", tag = "sites", params(SitePath),
    request_body = StopBody,
    responses(
        (status = 200, description = "The site, stopped", body = SiteView),
        (status = 400, description = "A bad path or body, or a reason that is blank or over 4096 bytes", body = ErrorBody),
        (status = 404, description = "No such site", body = ErrorBody),
        (status = 409, description = "The site is not running", body = ErrorBody),
        (status = 413, description = "The body cannot be read", body = ErrorBody),
        (status = 507, description = "The disk is full: nothing was taken and nothing changed; try again after `Retry-After` seconds",
            body = ErrorBody, headers(("Retry-After" = u64, description = "Seconds to wait"))),
    ))]
pub async fn stop(
    State(daemon): State<Arc<Daemon>>,
    PathParams(name): PathParams<String>,
    actor: Actor,
    caller: Caller,
    JsonBody(body): JsonBody<StopBody>,
) -> ApiResult<Json<SiteView>> {
    let site = site(&daemon, &name)?;
    site.stop(body.reason.as_deref().unwrap_or(""), &actor.0)
        .await?;
    Ok(Json(view(&site, caller.role())))
}
