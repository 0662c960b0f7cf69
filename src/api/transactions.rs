//! `/api/v1/sites/{site}/integrations/{name}/transactions`.

use std::sync::Arc;

use axum::extract::State;
use axum::Json;
use serde::{Deserialize, Serialize};

use super::auth::Caller;
use super::openapi::{actions_schema, ErrorBody, IntegrationPath, TxActionPath, TxPath};
use super::{rfc3339, site, Actor, ApiError, ApiResult, PathParams, QueryParams};
use crate::engine::Daemon;
use crate::model::{actions, Action, Role, TxAction, TxState};
use crate::store::TxRecord;

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct TxQuery {
    /// queued, sending, sent, error, ignored; empty or absent: any.
    #[param(schema_with = tx_state_filter_schema)]
    pub state: Option<String>,
    /// Only transactions with a smaller sequence number (paging back).
    #[param(minimum = -9223372036854775808_i64, maximum = 9223372036854775807_i64)]
    pub before: Option<i64>,
    /// Default 100. 0 counts as 1 and more than 1000 as 1000.
    #[param(minimum = 0, maximum = 18446744073709551615_u64)]
    pub limit: Option<usize>,
}

/// The `state` filter: a [`TxState`], or empty for any.
fn tx_state_filter_schema() -> utoipa::openapi::schema::Object {
    utoipa::openapi::schema::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::String)
        .description(Some(
            "queued, sending, sent, error, ignored; empty or absent: any",
        ))
        .enum_values(Some(
            std::iter::once("").chain(TxState::ALL.iter().map(|s| s.as_str())),
        ))
        .build()
}

/// A transaction as the API answers it, and as the CLI reads it.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TxView {
    pub seq: i64,
    pub flow: String,
    pub key: Option<String>,
    pub state: TxState,
    pub created_at: String,
    pub updated_at: String,
    pub attempts: i64,
    /// The target's answer or the error of the last failed attempt.
    pub last_error: Option<String>,
    pub record: serde_json::Value,
    /// `retry`, `replay`, `ignore`: what the caller may do to it now.
    #[schema(schema_with = tx_actions)]
    pub actions: Vec<String>,
}

fn tx_actions() -> utoipa::openapi::schema::Array {
    actions_schema(&Action::TRANSACTION)
}

/// Newest first.
#[utoipa::path(get, path = "/api/v1/sites/{site}/integrations/{name}/transactions",
    tag = "transactions", params(IntegrationPath, TxQuery),
    responses(
        (status = 200, description = "Transactions, newest first", body = Vec<TxView>),
        (status = 400, description = "A bad path or query", body = ErrorBody),
        (status = 404, description = "No such site or integration", body = ErrorBody),
    ))]
pub async fn list(
    State(daemon): State<Arc<Daemon>>,
    PathParams((site_name, name)): PathParams<(String, String)>,
    QueryParams(q): QueryParams<TxQuery>,
    caller: Caller,
) -> ApiResult<Json<Vec<TxView>>> {
    let site = site(&daemon, &site_name)?;
    let integration = site.integration(&name)?;
    let wanted = match q.state.as_deref() {
        None | Some("") => None,
        Some(s) => Some(TxState::parse(s).ok_or_else(|| {
            ApiError::BadRequest(format!(
                "state '{s}' is not one of queued, sending, sent, error, ignored"
            ))
        })?),
    };
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let rows = site
        .transactions(&integration.name, wanted, q.before, limit)
        .await?;
    Ok(Json(
        rows.into_iter()
            .map(|t| view(t.state, t, caller.role()))
            .collect(),
    ))
}

/// The transaction in the state it is shown in, as `role` sees it.
fn view(state: TxState, t: TxRecord, role: Role) -> TxView {
    TxView {
        seq: t.seq,
        flow: t.flow,
        key: t.key,
        state,
        created_at: rfc3339(t.created_at),
        updated_at: rfc3339(t.updated_at),
        attempts: t.attempts,
        last_error: t.last_error,
        record: t.record,
        actions: actions::names(&actions::transaction(state, role)),
    }
}

#[utoipa::path(get, path = "/api/v1/sites/{site}/integrations/{name}/transactions/{seq}",
    tag = "transactions", params(TxPath),
    responses(
        (status = 200, description = "The transaction", body = TxView),
        (status = 400, description = "A bad path", body = ErrorBody),
        (status = 404, description = "No such site, integration or transaction", body = ErrorBody),
    ))]
pub async fn show(
    State(daemon): State<Arc<Daemon>>,
    PathParams((site_name, name, seq)): PathParams<(String, String, i64)>,
    caller: Caller,
) -> ApiResult<Json<TxView>> {
    let site = site(&daemon, &site_name)?;
    let t = site.transaction(&name, seq).await?;
    Ok(Json(view(t.state, t, caller.role())))
}

/// `retry` (an Error goes back to Queued, in its place), `replay` (a copy
/// is queued at the end) or `ignore` (the queue moves on without it).
#[utoipa::path(post,
    path = "/api/v1/sites/{site}/integrations/{name}/transactions/{seq}/{action}",
    tag = "transactions", params(TxActionPath),
    responses(
        (status = 200, description = "The transaction as it now is (for a replay: the new copy)", body = TxView),
        (status = 400, description = "A bad path", body = ErrorBody),
        (status = 404, description = "No such site, integration, transaction or action", body = ErrorBody),
        (status = 409, description = "The action does not fit the transaction's state", body = ErrorBody),
        (status = 507, description = "The disk is full: nothing was taken and nothing changed; try again after `Retry-After` seconds",
            body = ErrorBody, headers(("Retry-After" = u64, description = "Seconds to wait"))),
    ))]
pub async fn act(
    State(daemon): State<Arc<Daemon>>,
    PathParams((site_name, name, seq, action)): PathParams<(String, String, i64, String)>,
    actor: Actor,
    caller: Caller,
) -> ApiResult<Json<TxView>> {
    let site = site(&daemon, &site_name)?;
    let action = match action.as_str() {
        "retry" => TxAction::Retry,
        "replay" => TxAction::Replay,
        "ignore" => TxAction::Ignore,
        other => {
            return Err(ApiError::NotFound(format!(
                "no action '{other}' on a transaction: retry, replay or ignore"
            )))
        }
    };
    let t = site
        .act_on_transaction(&name, seq, action, &actor.0)
        .await?;
    Ok(Json(view(t.state, t, caller.role())))
}
