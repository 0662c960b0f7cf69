//! `/api/v1/sites/{site}/history` and
//! `/api/v1/sites/{site}/integrations/{name}/history`: counts per minute,
//! hour or day, for charts.

use std::sync::Arc;

use axum::extract::State;
use axum::Json;
use serde::{Deserialize, Serialize};

use super::log::parse_since;
use super::openapi::{ErrorBody, IntegrationPath, SitePath};
use super::{rfc3339, site, ApiError, ApiResult, PathParams, QueryParams};
use crate::engine::history::{Point, Step, MAX_POINTS};
use crate::engine::{Daemon, Site};
use crate::model::now_millis;

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct HistoryQuery {
    /// From this time on: RFC 3339, or milliseconds since the epoch;
    /// default one hour ago.
    #[param(example = "2026-11-24T15:04:05Z")]
    pub since: Option<String>,
    /// `1m` (default), `1h` or `1d`; steps start on whole minutes, hours
    /// and days of UTC.
    #[param(example = "1m")]
    pub step: Option<String>,
}

/// One step of a history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct HistoryPoint {
    /// The step's start, RFC 3339 (UTC).
    pub at: String,
    /// Records queued in the step.
    pub queued: i64,
    /// Transactions delivered (Sent) in the step.
    pub delivered: i64,
    /// Transactions that failed for good (Error) in the step.
    pub failed: i64,
    /// Deliveries that failed and were tried again, in the step.
    pub retried: i64,
    /// Transactions Queued at the step's end (the latest known within it;
    /// carried over steps the site was stopped); null before anything was
    /// recorded.
    pub depth: Option<i64>,
}

impl From<Point> for HistoryPoint {
    fn from(p: Point) -> HistoryPoint {
        HistoryPoint {
            at: rfc3339(p.at),
            queued: p.counts.queued,
            delivered: p.counts.delivered,
            failed: p.counts.failed,
            retried: p.counts.retried,
            depth: p.depth,
        }
    }
}

/// The query read: from when, by which step.
fn range(site: &Site, q: &HistoryQuery) -> ApiResult<(i64, Step)> {
    if site.config.keep_history.is_zero() {
        return Err(ApiError::Conflict(format!(
            "site {} keeps no history (keep_history = \"off\")",
            site.name
        )));
    }
    let step = match q.step.as_deref() {
        None | Some("") => Step::Minute,
        Some(s) => Step::parse(s)
            .ok_or_else(|| ApiError::BadRequest(format!("step '{s}' is not one of 1m, 1h, 1d")))?,
    };
    let now = now_millis();
    let since = match q.since.as_deref() {
        None | Some("") => now - 3_600_000,
        Some(s) => parse_since(s)?,
    };
    let steps = (now - since) / step.millis();
    if steps > MAX_POINTS {
        return Err(ApiError::BadRequest(format!(
            "{steps} steps from since to now, more than {MAX_POINTS}: ask with a larger step"
        )));
    }
    Ok((since, step))
}

/// An integration's history, oldest first, every step from `since` to now
/// present (the unfinished minute included).
#[utoipa::path(get, path = "/api/v1/sites/{site}/integrations/{name}/history",
    tag = "integrations", params(IntegrationPath, HistoryQuery),
    responses(
        (status = 200, description = "One point per step, oldest first", body = Vec<HistoryPoint>),
        (status = 400, description = "A bad path or query", body = ErrorBody),
        (status = 404, description = "No such site or integration", body = ErrorBody),
        (status = 409, description = "The site keeps no history", body = ErrorBody),
    ))]
pub async fn integration(
    State(daemon): State<Arc<Daemon>>,
    PathParams((site_name, name)): PathParams<(String, String)>,
    QueryParams(q): QueryParams<HistoryQuery>,
) -> ApiResult<Json<Vec<HistoryPoint>>> {
    let site = site(&daemon, &site_name)?;
    let integration = site.integration(&name)?;
    let (since, step) = range(&site, &q)?;
    let points = site.history(Some(&integration.name), since, step).await?;
    Ok(Json(points.into_iter().map(HistoryPoint::from).collect()))
}

/// The whole site's history: every integration's counts and depths added.
#[utoipa::path(get, path = "/api/v1/sites/{site}/history",
    tag = "sites", params(SitePath, HistoryQuery),
    responses(
        (status = 200, description = "One point per step, oldest first", body = Vec<HistoryPoint>),
        (status = 400, description = "A bad path or query", body = ErrorBody),
        (status = 404, description = "No such site", body = ErrorBody),
        (status = 409, description = "The site keeps no history", body = ErrorBody),
    ))]
pub async fn site_history(
    State(daemon): State<Arc<Daemon>>,
    PathParams(site_name): PathParams<String>,
    QueryParams(q): QueryParams<HistoryQuery>,
) -> ApiResult<Json<Vec<HistoryPoint>>> {
    let site = site(&daemon, &site_name)?;
    let (since, step) = range(&site, &q)?;
    let points = site.history(None, since, step).await?;
    Ok(Json(points.into_iter().map(HistoryPoint::from).collect()))
}

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct HoldsQuery {
    /// Holds on at this time or after: RFC 3339, or milliseconds since the
    /// epoch; default one hour ago.
    #[param(example = "2026-11-24T15:04:05Z")]
    pub since: Option<String>,
}

/// When a hold was on: the bands of a chart.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct HoldPeriodView {
    pub integration: String,
    pub kind: crate::model::HoldKind,
    /// Who placed it: a person, or `sluice`.
    pub by: String,
    pub reason: String,
    /// RFC 3339.
    pub since: String,
    /// RFC 3339; null while it lasts.
    pub until: Option<String>,
}

fn periods_since(q: &HoldsQuery) -> ApiResult<i64> {
    match q.since.as_deref() {
        None | Some("") => Ok(now_millis() - 3_600_000),
        Some(s) => parse_since(s),
    }
}

fn period_views(periods: Vec<crate::store::HoldPeriod>) -> Vec<HoldPeriodView> {
    periods
        .into_iter()
        .map(|p| HoldPeriodView {
            integration: p.integration,
            kind: p.hold.kind,
            by: p.hold.by,
            reason: p.hold.reason,
            since: rfc3339(p.hold.since),
            until: p.until.map(rfc3339),
        })
        .collect()
}

/// When the integration's holds were on (pauses, outages, stops), of those
/// on at `since` or after, oldest first.
#[utoipa::path(get, path = "/api/v1/sites/{site}/integrations/{name}/holds",
    tag = "integrations", params(IntegrationPath, HoldsQuery),
    responses(
        (status = 200, description = "Hold periods, oldest first", body = Vec<HoldPeriodView>),
        (status = 400, description = "A bad path or query", body = ErrorBody),
        (status = 404, description = "No such site or integration", body = ErrorBody),
    ))]
pub async fn integration_holds(
    State(daemon): State<Arc<Daemon>>,
    PathParams((site_name, name)): PathParams<(String, String)>,
    QueryParams(q): QueryParams<HoldsQuery>,
) -> ApiResult<Json<Vec<HoldPeriodView>>> {
    let site = site(&daemon, &site_name)?;
    let since = periods_since(&q)?;
    let periods = site.hold_periods(Some(&name), since).await?;
    Ok(Json(period_views(periods)))
}

/// When the holds of the site's integrations were on, oldest first.
#[utoipa::path(get, path = "/api/v1/sites/{site}/holds",
    tag = "sites", params(SitePath, HoldsQuery),
    responses(
        (status = 200, description = "Hold periods, oldest first", body = Vec<HoldPeriodView>),
        (status = 400, description = "A bad path or query", body = ErrorBody),
        (status = 404, description = "No such site", body = ErrorBody),
    ))]
pub async fn site_holds(
    State(daemon): State<Arc<Daemon>>,
    PathParams(site_name): PathParams<String>,
    QueryParams(q): QueryParams<HoldsQuery>,
) -> ApiResult<Json<Vec<HoldPeriodView>>> {
    let site = site(&daemon, &site_name)?;
    let since = periods_since(&q)?;
    let periods = site.hold_periods(None, since).await?;
    Ok(Json(period_views(periods)))
}
