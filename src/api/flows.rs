//! `/api/v1/sites/{site}/flows`: list, show, and 'Send All' / 'Send Changed'.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};

use super::auth::Caller;
use super::openapi::{actions_schema, flow_status_schema, ErrorBody, FlowPath, SitePath};
use super::{rfc3339, site, Actor, ApiError, ApiResult, JsonBody, PathParams};
use crate::config::{FlowConfig, Schedule};
use crate::engine::{Daemon, Site};
use crate::model::actions;
use crate::model::{Action, Role, RunMode, RunResult};
use crate::store::RunRecord;

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RunView {
    pub id: i64,
    pub mode: RunMode,
    pub started_at: String,
    pub finished_at: Option<String>,
    /// `success`, `failed`, `halted`; null while it runs.
    pub result: Option<RunResult>,
    /// Records queued by the run.
    pub captured: i64,
    /// Of those, the ones not failed: delivered or on their way.
    pub succeeded: i64,
    /// Of those, the ones that failed for good (Error; see transactions).
    pub failed: i64,
    /// Pages read from the source.
    pub pages: i64,
    pub error: Option<String>,
}

impl RunView {
    /// The run as shown; its failures are counted in the store now.
    pub async fn of(site: &Site, integration: &str, r: &RunRecord) -> ApiResult<RunView> {
        let failed = site.run_failures(integration, r).await?;
        Ok(RunView {
            id: r.id,
            mode: r.mode,
            started_at: rfc3339(r.started_at),
            finished_at: r.finished_at.map(rfc3339),
            result: r.result,
            captured: r.captured,
            succeeded: r.captured - failed,
            failed,
            pages: r.pages,
            error: r.error.clone(),
        })
    }
}

/// A flow as the API answers it, and as the CLI reads it.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct FlowView {
    pub name: String,
    pub integration: String,
    pub source: String,
    pub target: String,
    pub schedule: Option<String>,
    pub enabled: bool,
    /// Blank, `Pending All`, `Pending Changed`, `Running`, or the last
    /// result (`Success`, `Failed`, `Halted`).
    #[schema(schema_with = flow_status_schema)]
    pub status: String,
    /// The cursor value 'Send Changed' continues after.
    pub checkpoint: Option<serde_json::Value>,
    pub last_run: Option<RunView>,
    /// Why the run in progress makes no progress, after the site's
    /// `stall_after`; else null.
    pub stalled: Option<String>,
    /// `run-all`, `run-changed` ('Send All', 'Send Changed'): what the
    /// caller may do to it now.
    #[schema(schema_with = flow_actions)]
    pub actions: Vec<String>,
}

fn flow_actions() -> utoipa::openapi::schema::Array {
    actions_schema(&[Action::FlowRunAll, Action::FlowRunChanged])
}

pub fn schedule_text(s: &Schedule) -> String {
    match s {
        Schedule::Every(d) => format!("every {}", humantime(*d)),
        Schedule::Cron { expr, .. } => expr.clone(),
    }
}

fn humantime(d: std::time::Duration) -> String {
    let ms = d.as_millis();
    if ms.is_multiple_of(3_600_000) {
        format!("{}h", ms / 3_600_000)
    } else if ms.is_multiple_of(60_000) {
        format!("{}m", ms / 60_000)
    } else if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

/// The flow as `role` sees it: what it may do depends on the flow's
/// status, its source and its integration.
pub async fn flow_view(
    site: &Site,
    integration: &str,
    flow: &FlowConfig,
    role: Role,
) -> ApiResult<FlowView> {
    let record = site.flow_record(&flow.name).await?;
    let last_run = site.runs(&flow.name, 1).await?;
    let facts = site.flow_facts(&flow.name, record.status)?;
    Ok(FlowView {
        name: flow.name.clone(),
        integration: integration.to_string(),
        source: flow.source.clone(),
        target: flow.target.clone(),
        schedule: flow.schedule.as_ref().map(schedule_text),
        enabled: flow.enabled,
        status: record.status.label().to_string(),
        checkpoint: record
            .checkpoint
            .as_deref()
            .and_then(|c| serde_json::from_str(c).ok()),
        last_run: match last_run.first() {
            Some(r) => Some(RunView::of(site, integration, r).await?),
            None => None,
        },
        stalled: site.run_stalled(&flow.name),
        actions: actions::names(&actions::flow(facts, role)),
    })
}

#[utoipa::path(get, path = "/api/v1/sites/{site}/flows", tag = "flows", params(SitePath),
    responses(
        (status = 200, description = "Every flow of the site", body = Vec<FlowView>),
        (status = 400, description = "A bad path", body = ErrorBody),
        (status = 404, description = "No such site", body = ErrorBody),
    ))]
pub async fn list(
    State(daemon): State<Arc<Daemon>>,
    PathParams(name): PathParams<String>,
    caller: Caller,
) -> ApiResult<Json<Vec<FlowView>>> {
    let site = site(&daemon, &name)?;
    let mut out = Vec::new();
    for (ic, fc) in site.flows() {
        out.push(flow_view(&site, &ic.name, fc, caller.role()).await?);
    }
    Ok(Json(out))
}

#[utoipa::path(get, path = "/api/v1/sites/{site}/flows/{flow}", tag = "flows", params(FlowPath),
    responses(
        (status = 200, description = "The flow", body = FlowView),
        (status = 400, description = "A bad path", body = ErrorBody),
        (status = 404, description = "No such site or flow", body = ErrorBody),
    ))]
pub async fn show(
    State(daemon): State<Arc<Daemon>>,
    PathParams((site_name, flow)): PathParams<(String, String)>,
    caller: Caller,
) -> ApiResult<Json<FlowView>> {
    let site = site(&daemon, &site_name)?;
    let (ic, fc) = site.flow(&flow)?;
    Ok(Json(flow_view(&site, &ic.name, fc, caller.role()).await?))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RunBody {
    /// 'Send All' or 'Send Changed'. Required.
    #[schema(value_type = RunMode)]
    pub mode: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RunAnswer {
    pub flow: String,
    pub mode: RunMode,
    /// `Running`, or `Pending All` / `Pending Changed` while the site is
    /// stopped (the request will not run).
    #[schema(schema_with = flow_status_schema)]
    pub status: String,
}

/// 'Send All' or 'Send Changed': starts a run of the flow now.
#[utoipa::path(post, path = "/api/v1/sites/{site}/flows/{flow}/run", tag = "flows", params(FlowPath),
    request_body = RunBody,
    responses(
        (status = 202, description = "The run is requested", body = RunAnswer),
        (status = 400, description = "A bad path or body, a mode that is not all or changed, \
            or a flow fed by a webhook (nothing to run)", body = ErrorBody),
        (status = 404, description = "No such site or flow", body = ErrorBody),
        (status = 409, description = "The flow cannot run now", body = ErrorBody),
        (status = 413, description = "The body cannot be read", body = ErrorBody),
        (status = 507, description = "The disk is full: nothing was taken and nothing changed; try again after `Retry-After` seconds",
            body = ErrorBody, headers(("Retry-After" = u64, description = "Seconds to wait"))),
    ))]
pub async fn run(
    State(daemon): State<Arc<Daemon>>,
    PathParams((site_name, flow)): PathParams<(String, String)>,
    actor: Actor,
    JsonBody(body): JsonBody<RunBody>,
) -> ApiResult<(StatusCode, Json<RunAnswer>)> {
    let site = site(&daemon, &site_name)?;
    let mode = body
        .mode
        .as_deref()
        .and_then(RunMode::parse)
        .ok_or_else(|| ApiError::BadRequest("\"mode\" must be \"all\" or \"changed\"".into()))?;
    let status = site.request_run(&flow, mode, &actor.0).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(RunAnswer {
            flow,
            mode,
            status: status.label().to_string(),
        }),
    ))
}

/// What to try a flow's mapping on.
#[derive(Debug, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TryBody {
    /// The record, as its source would give it. Without it (or with an
    /// empty body) the flow's source is read now: the first record past
    /// the checkpoint ('Send Changed'), else the first of all.
    #[schema(value_type = Option<Object>)]
    pub record: Option<serde_json::Value>,
}

/// What a record becomes when its transaction is sent; nothing is sent.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct TryAnswer {
    pub flow: String,
    /// The record tried: the one given, or the one read from the source.
    #[schema(value_type = Object)]
    pub input: serde_json::Value,
    /// The records the target would be sent, in order: none when the
    /// transform filters it out or fails, one, or several.
    #[schema(value_type = Vec<Object>)]
    pub output: Vec<serde_json::Value>,
    /// Why it would be settled Ignored (the transform yielded nothing); else
    /// null.
    pub ignored: Option<String>,
    /// Why its delivery would fail for good (a jq error at run time); else
    /// null.
    pub error: Option<String>,
}

/// The flow's `map` and `transform` applied to a record, as the sender
/// would apply them; nothing is queued or sent.
#[utoipa::path(post, path = "/api/v1/sites/{site}/flows/{flow}/try", tag = "flows", params(FlowPath),
    request_body = TryBody,
    responses(
        (status = 200, description = "What the record becomes", body = TryAnswer),
        (status = 400, description = "A bad path or body, or no record for a flow fed by a webhook",
            body = ErrorBody),
        (status = 404, description = "No such site or flow, or a source with no record now",
            body = ErrorBody),
        (status = 413, description = "The body cannot be read", body = ErrorBody),
        (status = 503, description = "The source cannot be read now", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
    ))]
pub async fn try_mapping(
    State(daemon): State<Arc<Daemon>>,
    PathParams((site_name, flow)): PathParams<(String, String)>,
    JsonBody(body): JsonBody<TryBody>,
) -> ApiResult<Json<TryAnswer>> {
    let site = site(&daemon, &site_name)?;
    let (_, fc) = site.flow(&flow)?;
    let input = match body.record {
        Some(record) => record,
        None => first_record(&site, fc).await?,
    };
    let (output, ignored, error) = match fc.mapping.apply(input.clone()) {
        Ok(output) if output.is_empty() => (
            output,
            Some(format!("flow {flow}: the transform yielded nothing")),
            None,
        ),
        Ok(output) => (output, None, None),
        Err(e) => (Vec::new(), None, Some(format!("flow {flow}: {e}"))),
    };
    Ok(Json(TryAnswer {
        flow,
        input,
        output,
        ignored,
        error,
    }))
}

/// The first record the flow's source gives now: past the checkpoint,
/// else the first of all.
async fn first_record(site: &Site, fc: &FlowConfig) -> ApiResult<serde_json::Value> {
    use crate::connectors::{Cursor, ReadRequest};
    let endpoint = site.endpoint(&fc.source)?;
    let Some(source) = endpoint.source.as_ref() else {
        return Err(ApiError::BadRequest(format!(
            "flow {} receives its records by webhook; send one as {{\"record\": …}}",
            fc.name
        )));
    };
    let checkpoint = site.flow_record(&fc.name).await?.checkpoint;
    for mode in [RunMode::Changed, RunMode::All] {
        let unreadable = |e: crate::connectors::SourceError| ApiError::Unavailable {
            message: format!("cannot read source {}: {}", fc.source, e.message),
            retry_after: std::time::Duration::from_secs(5),
        };
        let mut pages = source
            .open(ReadRequest {
                mode,
                checkpoint: checkpoint.as_deref().and_then(Cursor::decode),
                key_field: fc.key.clone(),
                cursor_field: fc.cursor.clone(),
            })
            .await
            .map_err(unreadable)?;
        while let Some(page) = pages.next().await.map_err(unreadable)? {
            if let Some(first) = page.into_iter().next() {
                return serde_json::from_str(&first.payload).map_err(|e| {
                    unreadable(crate::connectors::SourceError {
                        message: e.to_string(),
                    })
                });
            }
        }
    }
    Err(ApiError::NotFound(format!(
        "source {} of flow {} has no record now; send one as {{\"record\": …}}",
        fc.source, fc.name
    )))
}
