//! `/api/v1/sites/{site}/integrations/{name}/transactions`.

use axum::extract::State;
use axum::Json;
use serde::{Deserialize, Serialize};

use super::{rfc3339, site, ApiError, ApiResult, AppState, PathParams, QueryParams};
use crate::model::TxState;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TxQuery {
    /// queued, sending, sent, error, ignored.
    pub state: Option<String>,
    /// Only transactions with a smaller sequence number (paging back).
    pub before: Option<i64>,
    /// Default 100, at most 1000.
    pub limit: Option<usize>,
}

#[derive(Debug, Serialize)]
pub struct TxView {
    pub seq: i64,
    pub flow: String,
    pub key: Option<String>,
    pub state: &'static str,
    pub created_at: String,
    pub updated_at: String,
    pub attempts: i64,
    /// The target's answer or the error of the last failed attempt.
    pub last_error: Option<String>,
    pub record: serde_json::Value,
}

/// Newest first.
pub async fn list(
    State(daemon): State<AppState>,
    PathParams((site_name, name)): PathParams<(String, String)>,
    QueryParams(q): QueryParams<TxQuery>,
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
    // Sending is not stored: it is the Queued part in flight right now.
    let in_flight = integration.in_flight();
    let is_sending = |seq: i64| in_flight.is_some_and(|(a, b)| a <= seq && seq <= b);
    let stored_state = match wanted {
        Some(TxState::Sending) => Some(TxState::Queued),
        other => other,
    };
    let rows = site
        .store
        .transactions(&name, stored_state, q.before, limit)
        .await?;
    let views = rows
        .into_iter()
        .map(|t| {
            let state = if t.state == TxState::Queued && is_sending(t.seq) {
                TxState::Sending
            } else {
                t.state
            };
            (state, t)
        })
        .filter(|(state, _)| match wanted {
            Some(TxState::Sending) => *state == TxState::Sending,
            Some(TxState::Queued) => *state == TxState::Queued,
            _ => true,
        })
        .map(|(state, t)| TxView {
            seq: t.seq,
            flow: t.flow,
            key: t.key,
            state: state.as_str(),
            created_at: rfc3339(t.created_at),
            updated_at: rfc3339(t.updated_at),
            attempts: t.attempts,
            last_error: t.last_error,
            record: t.record,
        })
        .collect();
    Ok(Json(views))
}
