//! `/api/v1/sites`: list, show, start, stop.

use axum::extract::State;
use axum::Json;
use serde::{Deserialize, Serialize};

use super::{rfc3339, site, Actor, ApiResult, AppState, JsonBody, PathParams};
use crate::engine::Site;

#[derive(Debug, Serialize)]
pub struct SiteView {
    pub name: String,
    /// `running`, `stopped`, `starting`, `stopping`.
    pub state: &'static str,
    /// When it entered that state.
    pub since: String,
    /// The reason given for the last stop, who gave it and when.
    pub stop_reason: Option<String>,
    pub stopped_by: Option<String>,
    pub stopped_at: Option<String>,
    pub log_level: u8,
    pub integrations: Vec<String>,
    pub endpoints: Vec<String>,
}

pub fn view(site: &Site) -> SiteView {
    let status = site.status();
    let stop = status.last_stop;
    SiteView {
        name: site.name.clone(),
        state: status.state.as_str(),
        since: rfc3339(status.since),
        stop_reason: stop.as_ref().map(|s| s.reason.clone()),
        stopped_by: stop.as_ref().map(|s| s.by.clone()),
        stopped_at: stop.as_ref().map(|s| rfc3339(s.at)),
        log_level: site.log.keep_level(),
        integrations: site.integrations().map(|i| i.name.clone()).collect(),
        endpoints: site.endpoints().map(|e| e.name.clone()).collect(),
    }
}

pub async fn list(State(daemon): State<AppState>) -> Json<Vec<SiteView>> {
    Json(daemon.sites().iter().map(|s| view(s)).collect())
}

/// Reads the configuration file again and applies the site's part.
pub async fn reload(
    State(daemon): State<AppState>,
    PathParams(name): PathParams<String>,
    actor: Actor,
) -> ApiResult<Json<SiteView>> {
    daemon.reload_site(&name, &actor.0).await?;
    Ok(Json(view(&*site(&daemon, &name)?)))
}

pub async fn show(
    State(daemon): State<AppState>,
    PathParams(name): PathParams<String>,
) -> ApiResult<Json<SiteView>> {
    Ok(Json(view(&*site(&daemon, &name)?)))
}

pub async fn start(
    State(daemon): State<AppState>,
    PathParams(name): PathParams<String>,
    actor: Actor,
) -> ApiResult<Json<SiteView>> {
    let site = site(&daemon, &name)?;
    site.start(&actor.0).await?;
    Ok(Json(view(&site)))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StopBody {
    #[serde(default)]
    pub reason: Option<String>,
}

pub async fn stop(
    State(daemon): State<AppState>,
    PathParams(name): PathParams<String>,
    actor: Actor,
    JsonBody(body): JsonBody<StopBody>,
) -> ApiResult<Json<SiteView>> {
    let site = site(&daemon, &name)?;
    site.stop(body.reason.as_deref().unwrap_or(""), &actor.0)
        .await?;
    Ok(Json(view(&site)))
}
