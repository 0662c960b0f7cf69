//! `/api/v1/nodes`: the nodes of the cluster, with the integrations each
//! sends.

use std::sync::Arc;

use axum::extract::State;
use axum::Json;

use super::ApiResult;
pub use crate::engine::cluster::NodeView;
use crate::engine::Daemon;

#[utoipa::path(get, path = "/api/v1/nodes", tag = "nodes",
    responses((status = 200, description = "Every node that registered on the store, by name, \
        with the integrations whose leases it holds (one node, holding them all, with \
        store = \"sqlite\")", body = Vec<NodeView>)))]
pub async fn list(State(daemon): State<Arc<Daemon>>) -> ApiResult<Json<Vec<NodeView>>> {
    Ok(Json(daemon.nodes().await?))
}
