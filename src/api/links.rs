//! `/api/v1/sites/{site}/flows/{flow}/links`: record links (Unifi's bonds),
//! listed, and set or deleted by hand.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};

use super::openapi::{ErrorBody, FlowPath};
use super::{rfc3339, site, Actor, ApiError, ApiResult, JsonBody, PathParams, QueryParams};
use crate::engine::Daemon;
use crate::store::Link;

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct LinkQuery {
    /// Only this key's link.
    pub key: Option<String>,
    /// Only keys after this one (paging on: the last key of a page).
    pub after: Option<String>,
    /// Default 100. 0 counts as 1 and more than 1000 as 1000.
    #[param(minimum = 0, maximum = 18446744073709551615_u64)]
    pub limit: Option<usize>,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LinkView {
    pub flow: String,
    /// The record's key (the value of the flow's `key` field).
    pub key: String,
    /// The id the target gave the record when it was created: later
    /// records of the key go to the target's `update_url` with it.
    pub link: String,
    pub updated_at: String,
}

impl From<Link> for LinkView {
    fn from(l: Link) -> LinkView {
        LinkView {
            flow: l.flow,
            key: l.key,
            link: l.link,
            updated_at: rfc3339(l.updated_at),
        }
    }
}

/// The flow's record links, by key.
#[utoipa::path(get, path = "/api/v1/sites/{site}/flows/{flow}/links", tag = "flows",
    params(FlowPath, LinkQuery),
    responses(
        (status = 200, description = "The links, in key order", body = Vec<LinkView>),
        (status = 400, description = "A bad path or query", body = ErrorBody),
        (status = 404, description = "No such site or flow", body = ErrorBody),
    ))]
pub async fn list_links(
    State(daemon): State<Arc<Daemon>>,
    PathParams((site_name, flow)): PathParams<(String, String)>,
    QueryParams(q): QueryParams<LinkQuery>,
) -> ApiResult<Json<Vec<LinkView>>> {
    let site = site(&daemon, &site_name)?;
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let links = site
        .links(&flow, q.key.as_deref(), q.after.as_deref(), limit)
        .await?;
    Ok(Json(links.into_iter().map(LinkView::from).collect()))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
pub struct LinkPath {
    #[param(example = "LIVE")]
    pub site: String,
    #[param(example = "contacts")]
    pub flow: String,
    /// The record's key.
    #[param(example = "C-1001")]
    pub key: String,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LinkBody {
    /// The target's id for the key. Required.
    pub link: Option<String>,
}

/// Sets one link by hand (a repair, audited): the key's next record is
/// sent to the target's `update_url` with this id.
#[utoipa::path(put, path = "/api/v1/sites/{site}/flows/{flow}/links/{key}", tag = "flows",
    params(LinkPath),
    request_body = LinkBody,
    responses(
        (status = 200, description = "The link as it now is", body = LinkView),
        (status = 400, description = "A bad path or body, or a flow whose target links no records", body = ErrorBody),
        (status = 404, description = "No such site or flow", body = ErrorBody),
        (status = 413, description = "The body cannot be read", body = ErrorBody),
        (status = 507, description = "The disk is full: nothing changed; try again after `Retry-After` seconds",
            body = ErrorBody, headers(("Retry-After" = u64, description = "Seconds to wait"))),
    ))]
pub async fn set_link(
    State(daemon): State<Arc<Daemon>>,
    PathParams((site_name, flow, key)): PathParams<(String, String, String)>,
    actor: Actor,
    JsonBody(body): JsonBody<LinkBody>,
) -> ApiResult<Json<LinkView>> {
    let site = site(&daemon, &site_name)?;
    let link = body
        .link
        .ok_or_else(|| ApiError::BadRequest("give {\"link\": \"…\"}".into()))?;
    Ok(Json(
        site.set_link(&flow, &key, &link, &actor.0).await?.into(),
    ))
}

/// Deletes one link by hand (a repair, audited): the key's next record is
/// a create again.
#[utoipa::path(delete, path = "/api/v1/sites/{site}/flows/{flow}/links/{key}", tag = "flows",
    params(LinkPath),
    responses(
        (status = 204, description = "Deleted"),
        (status = 400, description = "A bad path, or a flow whose target links no records", body = ErrorBody),
        (status = 404, description = "No such site, flow or link", body = ErrorBody),
        (status = 507, description = "The disk is full: nothing changed; try again after `Retry-After` seconds",
            body = ErrorBody, headers(("Retry-After" = u64, description = "Seconds to wait"))),
    ))]
pub async fn delete_link(
    State(daemon): State<Arc<Daemon>>,
    PathParams((site_name, flow, key)): PathParams<(String, String, String)>,
    actor: Actor,
) -> ApiResult<StatusCode> {
    let site = site(&daemon, &site_name)?;
    site.delete_link(&flow, &key, &actor.0).await?;
    Ok(StatusCode::NO_CONTENT)
}
