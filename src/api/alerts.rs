//! `/api/v1/alerts/{name}/test`: a test alert to a channel, now.

use std::sync::Arc;

use axum::extract::State;
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::IntoParams;

use super::openapi::ErrorBody;
use super::{Actor, ApiResult, PathParams};
use crate::engine::Daemon;
use crate::model::alert::Document;
use crate::model::now_millis;

/// An alert channel in the path.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
pub struct AlertPath {
    /// The channel's name: `[alerts.NAME]` in the configuration file.
    #[param(example = "ops")]
    pub name: String,
}

/// What a test alert found.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AlertTestAnswer {
    pub channel: String,
    /// Whether the channel took it.
    pub ok: bool,
    /// What was sent, or why it could not be.
    pub detail: String,
    /// The document sent.
    pub document: Document,
}

/// Sends a document with `"alert": "test"` to the channel now (not through
/// the outbox: the answer says whether it went through).
#[utoipa::path(post, path = "/api/v1/alerts/{name}/test", tag = "alerts",
    params(AlertPath),
    responses(
        (status = 200, description = "Whether the channel took the test alert", body = AlertTestAnswer),
        (status = 400, description = "A bad path", body = ErrorBody),
        (status = 404, description = "No such alert channel", body = ErrorBody),
    ))]
pub async fn test(
    State(daemon): State<Arc<Daemon>>,
    PathParams(name): PathParams<String>,
    actor: Actor,
) -> ApiResult<Json<AlertTestAnswer>> {
    let channel = daemon.alert_channel(&name)?;
    let at = now_millis();
    let document = Document::test(&name, &actor.0, at);
    let key = format!("sluice-alert-test:{name}:{at}");
    let (ok, detail) = match channel.send(&key, &document).await {
        Ok(()) => (true, format!("sent: {}", document.text)),
        Err(e) => (false, e.message),
    };
    tracing::info!(channel = %name, by = %actor.0, ok, "test alert: {detail}");
    Ok(Json(AlertTestAnswer {
        channel: name,
        ok,
        detail,
        document,
    }))
}
