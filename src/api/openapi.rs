//! `GET /api/v1/openapi.json`: the OpenAPI 3.1 document of the whole HTTP
//! surface, generated from the route table ([`super::routes`]) — each
//! handler's `#[utoipa::path]` and the views' `ToSchema` derives — so it
//! cannot drift from the router, which is built from the same table.
//!
//! Paths in the document are written in full (`/api/v1/...`, `/hooks/...`),
//! with no `servers` prefix: a client joins them to the daemon's address.
//! What a route's access implies is said from the table, in one place: an
//! open route needs no token; the others document 401, and 403 when a role
//! is checked. Here are the shapes the derive cannot express and the
//! finishing touches every operation gets (`finish`).

use std::sync::LazyLock;

use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::openapi::path::Operation;
use utoipa::openapi::schema::{Array, ArrayBuilder, ObjectBuilder, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, RefOr, ResponseBuilder, Schema};
use utoipa::{IntoParams, Modify, OpenApi, ToSchema};

use super::endpoints;
use crate::model::{Action, FlowStatus, RunMode, RunResult};

/// Every error answer: `{"error": "…"}`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    /// What went wrong, for a person to read.
    pub error: String,
}

/// The site in the path.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
pub struct SitePath {
    /// The site's name, as in the configuration file.
    #[param(example = "LIVE")]
    pub site: String,
}

/// A site and one of its integrations.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
pub struct IntegrationPath {
    #[param(example = "LIVE")]
    pub site: String,
    /// The integration's name.
    #[param(example = "orders")]
    pub name: String,
}

/// A site and one of its endpoints.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
pub struct EndpointPath {
    #[param(example = "LIVE")]
    pub site: String,
    /// The endpoint's name.
    #[param(example = "receiver")]
    pub name: String,
}

/// A site and one of its flows.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
pub struct FlowPath {
    #[param(example = "LIVE")]
    pub site: String,
    /// The flow's name (unique in its site).
    #[param(example = "generated-orders")]
    pub flow: String,
}

/// One transaction of an integration.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
pub struct TxPath {
    #[param(example = "LIVE")]
    pub site: String,
    /// The integration's name.
    #[param(example = "orders")]
    pub name: String,
    /// The transaction's sequence number in the integration's queue.
    #[param(example = 1, minimum = -9223372036854775808_i64, maximum = 9223372036854775807_i64)]
    pub seq: i64,
}

/// One transaction of an integration and what to do to it.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
pub struct TxActionPath {
    #[param(example = "LIVE")]
    pub site: String,
    /// The integration's name.
    #[param(example = "orders")]
    pub name: String,
    /// The transaction's sequence number in the integration's queue.
    #[param(example = 1, minimum = -9223372036854775808_i64, maximum = 9223372036854775807_i64)]
    pub seq: i64,
    /// `retry` (an Error goes back to Queued, in its place), `replay` (a
    /// copy is queued at the end) or `ignore` (the queue moves on).
    #[param(value_type = TxActionName, example = "retry")]
    pub action: String,
}

/// What an operator can do to one transaction.
#[derive(ToSchema)]
#[schema(rename_all = "lowercase")]
pub enum TxActionName {
    Retry,
    Replay,
    Ignore,
}

/// A group of an integration's errors and what to do to all of it.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
pub struct ErrorGroupActionPath {
    #[param(example = "LIVE")]
    pub site: String,
    /// The integration's name.
    #[param(example = "orders")]
    pub name: String,
    /// The group's id, as `GET …/errors` gives it (12 hex digits).
    #[param(example = "3fa2c91b07de")]
    pub group: String,
    /// `retry` (each back to Queued, in its place) or `ignore` (the queue
    /// moves on without them).
    #[param(value_type = ErrorGroupActionName, example = "retry")]
    pub action: String,
}

/// What an operator can do to a whole group of errors.
#[derive(ToSchema)]
#[schema(rename_all = "lowercase")]
pub enum ErrorGroupActionName {
    Retry,
    Ignore,
}

/// The webhook a record is posted to.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
pub struct HookPath {
    #[param(example = "LIVE")]
    pub site: String,
    #[param(example = "orders")]
    pub integration: String,
    /// A flow whose source is a webhook endpoint.
    #[param(example = "web-orders")]
    pub flow: String,
}

/// A schema written as JSON, for shapes the derive cannot express (one of
/// several object forms). Panics on a malformed schema: a bug the unit
/// tests catch, as they build the document.
pub fn json_schema(schema: serde_json::Value) -> RefOr<Schema> {
    match serde_json::from_value(schema) {
        Ok(schema) => RefOr::T(schema),
        Err(e) => panic!("a hand-written schema is not valid: {e}"),
    }
}

/// What a webhook takes: one JSON object or an array of them.
pub struct HookRecords;

impl utoipa::PartialSchema for HookRecords {
    fn schema() -> RefOr<Schema> {
        json_schema(serde_json::json!({
            "description": "One record (a JSON object) or an array of records",
            "examples": [{"id": "A-1001", "total": 12.5}],
            "oneOf": [
                {"type": "object"},
                {"type": "array", "items": {"type": "object"}}
            ]
        }))
    }
}

impl ToSchema for HookRecords {}

/// A flow's status column: every label [`FlowStatus::label`] gives.
pub fn flow_status_schema() -> impl Into<RefOr<Schema>> {
    let modes = [RunMode::All, RunMode::Changed];
    let results = [RunResult::Success, RunResult::Failed, RunResult::Halted];
    let mut labels: Vec<&'static str> = std::iter::once(FlowStatus::Blank)
        .chain(modes.iter().map(|m| FlowStatus::Pending(*m)))
        .chain(modes.iter().map(|m| FlowStatus::Running(*m)))
        .chain(results.iter().map(|r| FlowStatus::Done(*r)))
        .map(FlowStatus::label)
        .collect();
    labels.dedup();
    ObjectBuilder::new()
        .schema_type(Type::String)
        .description(Some(
            "Blank, `Pending All`, `Pending Changed`, `Running`, or the last result",
        ))
        .enum_values(Some(labels))
}

/// An answer's `actions`: those of `actions` the caller may take now
/// ([`crate::model::actions`]), by name.
pub fn actions_schema(actions: &[Action]) -> Array {
    ArrayBuilder::new()
        .description(Some(
            "What the caller may do now, by its role and the state: the dashboard and the \
             CLI offer exactly these",
        ))
        .items(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .enum_values(Some(actions.iter().map(|a| a.name()))),
        )
        .unique_items(true)
        .build()
}

/// The kinds of endpoint (`EndpointKind::name`).
pub fn endpoint_kind_schema() -> impl Into<RefOr<Schema>> {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(crate::connectors::EndpointKind::NAMES))
}

/// This document.
#[utoipa::path(get, path = "/api/v1/openapi.json", tag = "meta",
    responses((status = 200, description = "The OpenAPI document", body = Object)))]
pub async fn document() -> Json<utoipa::openapi::OpenApi> {
    Json(DOCUMENT.clone())
}

static DOCUMENT: LazyLock<utoipa::openapi::OpenApi> = LazyLock::new(super::routes::document);

/// What the document says besides its routes: the title, the tags, the
/// bearer scheme and the schemas only hand-written code names;
/// [`super::routes::document`] adds every route of the table.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "sluice",
        description = "Sites, integrations, flows and a durable ordered queue under exact \
            operator control. Every error is JSON `{\"error\": \"…\"}`."
    ),
    // The route table brings every schema that bodies name, but not those
    // whose `ToSchema` is written by hand nor those parameters name.
    components(schemas(
        ErrorBody,
        HookRecords,
        endpoints::ReauthorizeBody,
        TxActionName,
        ErrorGroupActionName,
        crate::model::TxState,
    )),
    modifiers(&BearerAuth),
    tags(
        (name = "sites", description = "Start, stop and reload sites"),
        (name = "integrations", description = "Pause, resume, start and stop integrations"),
        (name = "transactions", description = "The queue of an integration"),
        (name = "errors", description = "An integration's errors grouped by cause, retried or ignored a group at a time"),
        (name = "flows", description = "Flows and their runs"),
        (name = "endpoints", description = "What is observed of each endpoint"),
        (name = "log", description = "The site's log and audit trail"),
        (name = "hooks", description = "The webhook receiver"),
        (name = "nodes", description = "The nodes of a cluster (store = \"postgres\")"),
        (name = "auth", description = "Signing in, tokens and their audit trail"),
        (name = "meta", description = "The daemon itself"),
    )
)]
pub struct ApiDoc;

/// The bearer token scheme, required everywhere by default: operations the
/// route table says are open opt out (`security: [{}]`).
struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearerAuth",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        doc.security = Some(vec![utoipa::openapi::security::SecurityRequirement::new(
            "bearerAuth",
            Vec::<String>::new(),
        )]);
    }
}

/// An operation that takes a token answers 401 without a valid one.
pub(super) fn document_unauthorized(op: &mut Operation) {
    add_error(op, "401", "No token, or a token that is not valid");
}

/// An operation whose role is checked answers 403 when it may not.
pub(super) fn document_forbidden(op: &mut Operation) {
    add_error(op, "403", "The token's role may not do this");
}

/// What the derive cannot say by itself, said of every operation:
/// - operation ids unique in the document (`sites_list`, not `list`): the
///   tag, then the handler's name;
/// - a body given as `Option<T>` may be left out, but is never `null`.
pub(super) fn finish(op: &mut Operation) {
    if let (Some(tag), Some(id)) = (
        op.tags.as_ref().and_then(|t| t.first()),
        op.operation_id.as_mut(),
    ) {
        *id = format!("{tag}_{id}");
    }
    if let Some(body) = op.request_body.as_mut() {
        optional_not_null(body);
    }
}

/// `oneOf: [null, X]` as a body's schema becomes `X`, not required.
fn optional_not_null(body: &mut utoipa::openapi::request_body::RequestBody) {
    for content in body.content.values_mut() {
        let Some(RefOr::T(Schema::OneOf(one_of))) = content.schema.as_ref() else {
            continue;
        };
        let is_null = |s: &RefOr<Schema>| {
            matches!(s, RefOr::T(Schema::Object(o))
                if o.schema_type == utoipa::openapi::schema::SchemaType::Type(Type::Null))
        };
        let rest: Vec<_> = one_of.items.iter().filter(|s| !is_null(s)).collect();
        if rest.len() == 1 && one_of.items.len() == 2 {
            content.schema = Some(rest[0].clone());
            body.required = Some(utoipa::openapi::Required::False);
        }
    }
}

fn add_error(op: &mut Operation, status: &str, description: &str) {
    let response = ResponseBuilder::new()
        .description(description)
        .content(
            "application/json",
            ContentBuilder::new()
                .schema(Some(RefOr::Ref(utoipa::openapi::Ref::from_schema_name(
                    "ErrorBody",
                ))))
                .build(),
        )
        .build();
    op.responses
        .responses
        .insert(status.to_string(), RefOr::T(response));
}

/// Every operation of a path item.
pub(super) fn operations(
    item: &mut utoipa::openapi::PathItem,
) -> impl Iterator<Item = &mut Operation> {
    [
        item.get.as_mut(),
        item.put.as_mut(),
        item.post.as_mut(),
        item.delete.as_mut(),
        item.options.as_mut(),
        item.head.as_mut(),
        item.patch.as_mut(),
        item.trace.as_mut(),
    ]
    .into_iter()
    .flatten()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use axum::body::Body;
    use axum::http::{Method, Request, StatusCode};
    use tower::ServiceExt;

    use super::*;

    type Route = (String, String);

    /// (METHOD, path) of every operation in the document.
    fn documented() -> BTreeSet<Route> {
        let doc = super::super::routes::document();
        let mut out = BTreeSet::new();
        for (path, item) in doc.paths.paths {
            let mut item = item;
            let methods = [
                ("GET", item.get.is_some()),
                ("PUT", item.put.is_some()),
                ("POST", item.post.is_some()),
                ("DELETE", item.delete.is_some()),
                ("PATCH", item.patch.is_some()),
                ("HEAD", item.head.is_some()),
                ("OPTIONS", item.options.is_some()),
                ("TRACE", item.trace.is_some()),
            ];
            assert_eq!(
                operations(&mut item).count(),
                methods.iter().filter(|m| m.1).count()
            );
            for (method, present) in methods {
                if present {
                    out.insert((method.to_string(), path.clone()));
                }
            }
        }
        out
    }

    /// The document and the router come from one table; asked of the
    /// router itself: each documented operation reaches a handler (not the
    /// fallback, not 405).
    #[tokio::test]
    async fn every_documented_operation_reaches_a_handler() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("sluice.toml");
        let config = crate::config::Config::parse(
            "listen = \"127.0.0.1:0\"\ndata_dir = \"data\"\n\
             [sites.S.endpoints.f]\nkind = \"file\"\npath = \"f.jsonl\"\n",
            &file,
            None,
        )
        .unwrap();
        let daemon = crate::engine::Daemon::open(&config).await.unwrap();
        let app = crate::api::router(crate::api::ApiState {
            daemon: daemon.clone(),
            tokens: crate::auth::Tokens::open(&config.data_dir).unwrap(),
            loopback_only: true,
            budget: crate::api::body::BodyBudget::new(config.max_body_memory),
        });
        for (method, path) in documented() {
            let uri = path
                .replace("{seq}", "1")
                .replace("{action}", "retry")
                .replace(['{', '}'], "");
            let request = Request::builder()
                .method(Method::from_bytes(method.as_bytes()).unwrap())
                .uri(&uri)
                .body(Body::empty())
                .unwrap();
            let response = app.clone().oneshot(request).await.unwrap();
            let status = response.status();
            let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
                .await
                .unwrap();
            let text = String::from_utf8_lossy(&bytes);
            assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {uri}");
            assert!(
                !text.contains("no such resource"),
                "{method} {uri} fell through to the fallback: {text}"
            );
        }
        daemon.shutdown().await;
    }

    #[test]
    fn every_reference_resolves() {
        fn walk(v: &serde_json::Value, refs: &mut Vec<String>) {
            match v {
                serde_json::Value::Object(map) => {
                    if let Some(serde_json::Value::String(r)) = map.get("$ref") {
                        refs.push(r.clone());
                    }
                    map.values().for_each(|v| walk(v, refs));
                }
                serde_json::Value::Array(items) => items.iter().for_each(|v| walk(v, refs)),
                _ => {}
            }
        }
        let doc = serde_json::to_value(super::super::routes::document()).unwrap();
        let mut refs = Vec::new();
        walk(&doc, &mut refs);
        assert!(!refs.is_empty());
        for r in refs {
            let pointer = r.strip_prefix('#').expect("local references only");
            assert!(doc.pointer(pointer).is_some(), "{r} resolves to nothing");
        }
    }

    #[test]
    fn path_parameters_match_the_placeholders() {
        let doc = super::super::routes::document();
        for (path, mut item) in doc.paths.paths {
            let placeholders: BTreeSet<String> = path
                .split('{')
                .skip(1)
                .filter_map(|s| s.split('}').next())
                .map(str::to_string)
                .collect();
            for op in operations(&mut item) {
                let params: BTreeSet<String> = op
                    .parameters
                    .iter()
                    .flatten()
                    .filter(|p| p.parameter_in == utoipa::openapi::path::ParameterIn::Path)
                    .map(|p| p.name.clone())
                    .collect();
                assert_eq!(params, placeholders, "{path}");
            }
        }
    }

    /// Operations that take no token under `/api/v1`: a client needs them
    /// before it has one.
    const OPEN_PATHS: [&str; 2] = ["/api/v1/openapi.json", "/api/v1/session"];

    #[test]
    fn operation_ids_are_unique_and_api_operations_need_a_token() {
        let doc = super::super::routes::document();
        let mut ids = BTreeSet::new();
        for (path, mut item) in doc.paths.paths {
            for op in operations(&mut item) {
                let id = op.operation_id.clone().expect("every operation has an id");
                assert!(ids.insert(id.clone()), "operation id {id} twice");
                let open = op
                    .security
                    .as_ref()
                    .is_some_and(|s| serde_json::to_value(s).unwrap() == serde_json::json!([{}]));
                let guarded = path.starts_with("/api/v1/") && !OPEN_PATHS.contains(&path.as_str());
                // `/metrics` takes a token too, but has no roles (no 403).
                let metrics = path == "/metrics";
                assert_eq!(!open, guarded || metrics, "{path}: security");
                if guarded || metrics {
                    assert!(op.responses.responses.contains_key("401"), "{path}: 401");
                }
                assert_eq!(
                    op.responses.responses.contains_key("403"),
                    guarded,
                    "{path}: 403"
                );
                // No handler answers 500 on purpose; none documents it.
                assert!(!op.responses.responses.contains_key("500"), "{path}");
            }
        }
        let text = serde_json::to_string(&super::super::routes::document()).unwrap();
        assert!(text.contains("\"bearerAuth\""));
    }
}
