//! `/api/v1/sites/{site}/integrations`: list, show, pause, resume, start, stop.

use std::sync::Arc;

use axum::extract::State;
use axum::Json;
use serde::{Deserialize, Serialize};

use super::auth::Caller;
use super::flows::{flow_view, FlowView};
use super::openapi::{actions_schema, ErrorBody, IntegrationPath, SitePath};
use super::{rfc3339, site, Actor, ApiResult, JsonBody, PathParams};
use crate::config::OnError;
use crate::engine::integration::ResumeProgress;
use crate::engine::{Daemon, Integration, Site};
use crate::model::{
    actions, derive_status, Action, ConnectionStatus, FlowRunOutcome, HoldKind, IntegrationEvent,
    IntegrationState, Role,
};

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct HoldView {
    pub kind: HoldKind,
    pub by: String,
    pub since: String,
    pub reason: String,
}

/// An integration as the API answers it, and as the CLI reads it.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct IntegrationView {
    pub name: String,
    pub site: String,
    /// What a person set: `active`, `paused`, `stopped`.
    pub state: IntegrationState,
    /// Seed 001's status: Running, Failed, Idle, …
    pub status: ConnectionStatus,
    /// It sends only while this is empty (and it is active).
    pub holds: Vec<HoldView>,
    /// Transactions waiting to be sent.
    pub queued: i64,
    #[schema(value_type = OnError)]
    pub on_error: String,
    /// The drain a resume started, while it goes on; else null.
    pub resume: Option<ResumeView>,
    /// Why sending makes no progress although nothing holds it: set when
    /// deliveries have failed for the site's `stall_after`; else null.
    pub stalled: Option<String>,
    /// Under `on_error = "block"`: the failed transaction the queue waits
    /// behind until it is retried or ignored, and why it failed; else null.
    pub blocked: Option<BlockedView>,
    pub flows: Vec<FlowView>,
    /// `pause`, `resume`, `start`, `stop`: what the caller may do to it now.
    #[schema(schema_with = integration_actions)]
    pub actions: Vec<String>,
    /// On a cluster (`store = "postgres"`): the node that sends it, as of
    /// its last heartbeat, with its lease; null when no node holds the
    /// lease, and always on a single node.
    pub owner: Option<crate::engine::cluster::OwnerView>,
}

fn integration_actions() -> utoipa::openapi::schema::Array {
    actions_schema(&Action::INTEGRATION)
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct BlockedView {
    pub seq: i64,
    pub error: String,
}

/// The progress of the drain a resume started.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ResumeView {
    pub done: i64,
    pub total: i64,
    /// Transactions per second since the resume.
    pub rate: f64,
    /// Estimated seconds left, once a rate is known.
    pub eta_s: Option<f64>,
}

impl From<ResumeProgress> for ResumeView {
    fn from(p: ResumeProgress) -> ResumeView {
        ResumeView {
            done: p.done,
            total: p.total,
            rate: p.rate,
            eta_s: p.eta_s,
        }
    }
}

/// The integration as `role` sees it: what it may do depends on the state.
pub async fn view(
    site: &Site,
    integration: &Integration,
    role: Role,
) -> ApiResult<IntegrationView> {
    let record = integration.record();
    let mut flows = Vec::new();
    let mut outcomes = Vec::new();
    for flow in &integration.config.flows {
        let view = flow_view(site, &integration.name, flow, role).await?;
        let push = site
            .endpoint(&flow.source)
            .is_ok_and(|e| e.kind.is_push_source() || e.kind.is_stream_source());
        if flow.enabled {
            outcomes.push(if push {
                FlowRunOutcome::Push
            } else {
                let runs = site.runs(&flow.name, 50).await?;
                FlowRunOutcome::of_runs(runs.into_iter().map(|r| r.result))
            });
        }
        flows.push(view);
    }
    Ok(IntegrationView {
        name: integration.name.clone(),
        site: site.name.clone(),
        state: record.state,
        status: derive_status(
            record.state,
            site.reinitializing(),
            integration.starting(),
            &outcomes,
        ),
        holds: record
            .holds
            .iter()
            .map(|h| HoldView {
                kind: h.kind,
                by: h.by.clone(),
                since: rfc3339(h.since),
                reason: h.reason.clone(),
            })
            .collect(),
        queued: site.queued(&integration.name).await?,
        on_error: match integration.config.on_error {
            crate::config::OnError::Block => "block",
            crate::config::OnError::Skip => "skip",
        }
        .to_string(),
        resume: integration.resume_progress().map(ResumeView::from),
        stalled: integration.stalled(site.config.stall_after),
        blocked: integration
            .blocked()
            .map(|(seq, error)| BlockedView { seq, error }),
        flows,
        actions: actions::names(&actions::integration(record.state, role)),
        owner: site.owner(&integration.name),
    })
}

#[utoipa::path(get, path = "/api/v1/sites/{site}/integrations", tag = "integrations",
    params(SitePath),
    responses(
        (status = 200, description = "The site's integrations", body = Vec<IntegrationView>),
        (status = 400, description = "A bad path", body = ErrorBody),
        (status = 404, description = "No such site", body = ErrorBody),
    ))]
pub async fn list(
    State(daemon): State<Arc<Daemon>>,
    PathParams(name): PathParams<String>,
    caller: Caller,
) -> ApiResult<Json<Vec<IntegrationView>>> {
    let site = site(&daemon, &name)?;
    let mut out = Vec::new();
    for integration in site.integrations() {
        out.push(view(&site, integration, caller.role()).await?);
    }
    Ok(Json(out))
}

#[utoipa::path(get, path = "/api/v1/sites/{site}/integrations/{name}", tag = "integrations",
    params(IntegrationPath),
    responses(
        (status = 200, description = "The integration", body = IntegrationView),
        (status = 400, description = "A bad path", body = ErrorBody),
        (status = 404, description = "No such site or integration", body = ErrorBody),
    ))]
pub async fn show(
    State(daemon): State<Arc<Daemon>>,
    PathParams((site_name, name)): PathParams<(String, String)>,
    caller: Caller,
) -> ApiResult<Json<IntegrationView>> {
    let site = site(&daemon, &site_name)?;
    let integration = site.integration(&name)?;
    Ok(Json(view(&site, integration, caller.role()).await?))
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ActionBody {
    /// Why; recorded in the audit trail and the site's log.
    #[schema(example = "maintenance window")]
    #[serde(default)]
    pub reason: Option<String>,
}

async fn act(
    daemon: Arc<Daemon>,
    site_name: String,
    name: String,
    actor: Actor,
    caller: Caller,
    body: ActionBody,
    event: IntegrationEvent,
) -> ApiResult<Json<IntegrationView>> {
    let site = site(&daemon, &site_name)?;
    let reason = body.reason.as_deref();
    // The engine does all of it: decision, durable change and audit, log
    // line, start-up.
    match event {
        IntegrationEvent::Pause => site.pause_integration(&name, &actor.0, reason).await?,
        IntegrationEvent::Resume => site.resume_integration(&name, &actor.0, reason).await?,
        IntegrationEvent::Start => site.start_integration(&name, &actor.0, reason).await?,
        IntegrationEvent::Stop => site.stop_integration(&name, &actor.0, reason).await?,
    };
    let integration = site.integration(&name)?;
    Ok(Json(view(&site, integration, caller.role()).await?))
}

macro_rules! action {
    ($name:ident, $event:expr, $path:literal, $what:literal, $refused:literal) => {
        #[doc = $what]
        #[utoipa::path(post, path = $path, tag = "integrations", params(IntegrationPath),
            request_body(content = Option<ActionBody>, description = "May be empty"),
            responses(
                (status = 200, description = "The integration after the change", body = IntegrationView),
                (status = 400, description = "A bad path or body, or a reason over 4096 bytes", body = ErrorBody),
                (status = 404, description = "No such site or integration", body = ErrorBody),
                (status = 409, description = $refused, body = ErrorBody),
                (status = 413, description = "The body cannot be read", body = ErrorBody),
                (status = 507, description = "The disk is full: nothing was taken and nothing changed; try again after `Retry-After` seconds",
                    body = ErrorBody, headers(("Retry-After" = u64, description = "Seconds to wait"))),
            ))]
        pub async fn $name(
            State(daemon): State<Arc<Daemon>>,
            PathParams((site_name, name)): PathParams<(String, String)>,
            actor: Actor,
            caller: Caller,
            JsonBody(body): JsonBody<ActionBody>,
        ) -> ApiResult<Json<IntegrationView>> {
            act(daemon, site_name, name, actor, caller, body, $event).await
        }
    };
}

action!(
    pause,
    IntegrationEvent::Pause,
    "/api/v1/sites/{site}/integrations/{name}/pause",
    "Holds sending; records still queue.",
    "The integration is not active"
);
action!(
    resume,
    IntegrationEvent::Resume,
    "/api/v1/sites/{site}/integrations/{name}/resume",
    "Lifts the operator's hold; the queue drains in order.",
    "The integration is not paused"
);
action!(
    start,
    IntegrationEvent::Start,
    "/api/v1/sites/{site}/integrations/{name}/start",
    "Activates a stopped integration.",
    "The integration is not stopped"
);
action!(
    stop,
    IntegrationEvent::Stop,
    "/api/v1/sites/{site}/integrations/{name}/stop",
    "Deactivates the integration: nothing is captured or sent.",
    "The integration is already stopped"
);
