//! `/api/v1/sites/{site}/integrations/{name}/errors`: an integration's
//! transactions in Error grouped by cause (endpoint, status and the answer
//! with numbers, ids and quoted values masked; `engine/errors.rs` has the
//! rule), and a whole group retried or ignored at once.

use std::sync::Arc;

use axum::extract::State;
use axum::Json;
use serde::{Deserialize, Serialize};

use super::auth::Caller;
use super::openapi::{actions_schema, ErrorBody, ErrorGroupActionPath, IntegrationPath};
use super::{rfc3339, site, Actor, ApiError, ApiResult, PathParams, QueryParams};
use crate::engine::errors::ErrorGroup;
use crate::engine::Daemon;
use crate::model::{actions, Action, Role, TxAction};

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ErrorsQuery {
    /// The largest groups, at most this many: default 100; 0 counts as 1
    /// and more than 1000 as 1000.
    #[param(minimum = 0, maximum = 18446744073709551615_u64)]
    pub limit: Option<usize>,
}

/// A group of errors as the API answers it, and as the CLI reads it.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ErrorGroupView {
    /// Its id: 12 hex digits, the same on every node and after restarts.
    #[schema(example = "3fa2c91b07de")]
    pub group: String,
    /// Transactions in Error of this cause.
    pub count: i64,
    /// The lowest and highest sequence numbers among them.
    pub first_seq: i64,
    pub last_seq: i64,
    /// When the earliest and the latest of them failed.
    pub first_at: String,
    pub last_at: String,
    /// The latest answer of the group, in full.
    pub sample: String,
    /// The endpoint they failed at (their flows' target); null for a flow
    /// no longer configured.
    pub endpoint: Option<String>,
    /// The HTTP status the answers name, if they name one.
    pub status: Option<u16>,
    /// What the answers have in common: numbers `#`, ids `<id>`, quoted
    /// values `"…"`.
    pub cause: String,
    /// `retry`, `ignore`: what the caller may do to the whole group now.
    #[schema(schema_with = group_actions)]
    pub actions: Vec<String>,
}

fn group_actions() -> utoipa::openapi::schema::Array {
    actions_schema(&[Action::TxRetry, Action::TxIgnore])
}

impl ErrorGroupView {
    fn of(g: ErrorGroup, role: Role) -> ErrorGroupView {
        ErrorGroupView {
            group: g.group,
            count: g.count,
            first_seq: g.first_seq,
            last_seq: g.last_seq,
            first_at: rfc3339(g.first_at),
            last_at: rfc3339(g.last_at),
            sample: g.sample,
            endpoint: g.cause.endpoint,
            status: g.cause.status,
            cause: g.cause.masked,
            actions: actions::names(&actions::error_group(role)),
        }
    }
}

/// What a retry or ignore of a whole group did.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ErrorGroupActed {
    pub group: String,
    /// `retry` or `ignore`.
    #[schema(value_type = super::openapi::ErrorGroupActionName)]
    pub action: String,
    /// Transactions of the group in Error when the action began.
    pub count: usize,
    /// Those retried (back to Queued, in their places) or ignored, in
    /// sequence order.
    pub done: usize,
    /// Those no longer in Error when their turn came (another person's
    /// action meanwhile): left as they are.
    pub skipped: usize,
}

/// The groups, the largest first.
#[utoipa::path(get, path = "/api/v1/sites/{site}/integrations/{name}/errors",
    tag = "errors", params(IntegrationPath, ErrorsQuery),
    responses(
        (status = 200, description = "The integration's transactions in Error grouped by cause, the largest group first", body = Vec<ErrorGroupView>),
        (status = 400, description = "A bad path or query", body = ErrorBody),
        (status = 404, description = "No such site or integration", body = ErrorBody),
    ))]
pub async fn list(
    State(daemon): State<Arc<Daemon>>,
    PathParams((site_name, name)): PathParams<(String, String)>,
    QueryParams(q): QueryParams<ErrorsQuery>,
    caller: Caller,
) -> ApiResult<Json<Vec<ErrorGroupView>>> {
    let site = site(&daemon, &site_name)?;
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let groups = site.error_groups(&name).await?;
    Ok(Json(
        groups
            .into_iter()
            .take(limit)
            .map(|g| ErrorGroupView::of(g, caller.role()))
            .collect(),
    ))
}

/// `retry` (each transaction of the group back to Queued, in its place) or
/// `ignore` (the queue moves on without them): every transaction of the
/// group still in Error, in sequence order; audited once, with the count.
#[utoipa::path(post,
    path = "/api/v1/sites/{site}/integrations/{name}/errors/{group}/{action}",
    tag = "errors", params(ErrorGroupActionPath),
    responses(
        (status = 200, description = "How many were retried or ignored", body = ErrorGroupActed),
        (status = 400, description = "A bad path", body = ErrorBody),
        (status = 404, description = "No such site, integration, group (none of its transactions in Error) or action", body = ErrorBody),
        (status = 507, description = "The disk is full: what was done before it filled stays done (the audit entry says how many); try again after `Retry-After` seconds",
            body = ErrorBody, headers(("Retry-After" = u64, description = "Seconds to wait"))),
    ))]
pub async fn act(
    State(daemon): State<Arc<Daemon>>,
    PathParams((site_name, name, group, action)): PathParams<(String, String, String, String)>,
    actor: Actor,
) -> ApiResult<Json<ErrorGroupActed>> {
    let site = site(&daemon, &site_name)?;
    let action = match action.as_str() {
        "retry" => TxAction::Retry,
        "ignore" => TxAction::Ignore,
        other => {
            return Err(ApiError::NotFound(format!(
                "no action '{other}' on a group of errors: retry or ignore"
            )))
        }
    };
    let acted = site
        .act_on_error_group(&name, &group, action, &actor.0)
        .await?;
    Ok(Json(ErrorGroupActed {
        group: acted.group,
        action: acted.action.as_str().to_string(),
        count: acted.count,
        done: acted.done,
        skipped: acted.skipped,
    }))
}
