//! The one route table: every route of the daemon, declared once with its
//! handler, who may call it and the name a refused call is audited under.
//! The router, the OpenAPI document, the role each call needs and the
//! refusals' audit entries are all derived from [`table`]; nothing else
//! lists routes.
//!
//! # Invariants
//! - A route's method, path and OpenAPI operation come from its handler's
//!   `#[utoipa::path]` (through `utoipa_axum::routes!`), written once there;
//!   paths are written in full (`/api/v1/…`). Those under [`API_PREFIX`]
//!   are served by the nested API router (bodies read first, its own
//!   fallbacks), the others at the top.
//! - A route that names no [`Access`] is for viewers when it reads and for
//!   admins when it writes: a new write is safe until it is placed.
//! - A route that performs one of the model's [`Action`]s needs the role
//!   the model gives that action ([`Route::performs`]), so what an answer's
//!   `actions` offers and what the route lets through cannot disagree.
//! - The auth layer ([`super::auth::require`]) is put on each guarded route
//!   with that route's rule, so the role is the route's own, not guessed
//!   from the URL. A method a path does not take answers 405 before any
//!   token is asked for, as a path that does not exist answers 404.
//! - The document says of each operation what its access implies: open
//!   ones need no token (`security: [{}]`); the others document 401, and
//!   403 when a role is checked.

use std::sync::Arc;

use axum::http::Method;
use axum::routing::MethodRouter;
use axum::Router;
use utoipa::openapi::path::{Operation, PathItem};
use utoipa::openapi::security::SecurityRequirement;
use utoipa::openapi::{RefOr, Schema};
use utoipa_axum::router::UtoipaMethodRouter;
use utoipa_axum::routes;

use super::auth::{self, is_write, Guard};
use super::{
    alerts, body, dashboard, endpoints, errors, flows, history, hooks, integrations, links, log,
    nodes, openapi, sites, transactions, ApiState,
};
use crate::model::{Action, Role};

/// Where the REST API lives; what is under it is served by the nested API
/// router.
pub const API_PREFIX: &str = "/api/v1";

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone, without a token: the dashboard's files, the OpenAPI
    /// document, the session (it is how one signs in) and the webhooks
    /// (each checks its own secret).
    Open,
    /// Any valid token (or open mode), whatever its role; refused with 401
    /// only: `/metrics`, whose scrapers know no roles.
    SignedIn,
    /// A valid token whose role is at least this one: 401 without a valid
    /// token, 403 when the role may not (or a write fails the CSRF or
    /// origin check).
    Role(Role),
}

/// How a refused call is named in its site's audit trail: as the engine
/// names the action when it is carried out. `{param}` in either is the
/// path's parameter, as the request's path has it; the site is `{site}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Audited {
    /// e.g. `integration.pause`, `tx.{action}`.
    pub action: &'static str,
    /// e.g. `integration/{name}`.
    pub subject: &'static str,
}

/// An entry of the table.
pub struct Route {
    pub method: Method,
    /// In full, as the handler's `#[utoipa::path]` has it.
    pub path: String,
    pub access: Access,
    pub audited: Option<Audited>,
    /// The model's actions it performs (several when a parameter picks
    /// one: a run's mode, a transaction's action).
    pub performs: &'static [Action],
    item: PathItem,
    schemas: Vec<(String, RefOr<Schema>)>,
    handler: MethodRouter<ApiState>,
}

/// A route of one handler (`routes!(module::handler)`); its access is the
/// default until [`Route::open`], [`Route::signed_in`] or [`Route::role`]
/// says otherwise.
///
/// Panics unless the handler's annotation names exactly one method and
/// one path: a bug in the table, which every test that builds the router
/// finds.
pub fn route((schemas, paths, handler): UtoipaMethodRouter<ApiState>) -> Route {
    let mut entries = paths.paths.into_iter();
    let (Some((path, item)), None) = (entries.next(), entries.next()) else {
        panic!("a route of the table is one handler with one path");
    };
    let methods = [
        (Method::GET, item.get.is_some()),
        (Method::PUT, item.put.is_some()),
        (Method::POST, item.post.is_some()),
        (Method::DELETE, item.delete.is_some()),
        (Method::PATCH, item.patch.is_some()),
        (Method::HEAD, item.head.is_some()),
        (Method::OPTIONS, item.options.is_some()),
        (Method::TRACE, item.trace.is_some()),
    ];
    let mut present = methods.into_iter().filter(|(_, p)| *p);
    let (Some((method, _)), None) = (present.next(), present.next()) else {
        panic!("{path}: a route of the table is one handler with one method");
    };
    let access = Access::Role(if is_write(&method) {
        Role::Admin
    } else {
        Role::Viewer
    });
    Route {
        method,
        path,
        access,
        audited: None,
        performs: &[],
        item,
        schemas,
        handler,
    }
}

impl Route {
    /// Anyone may call it, without a token.
    pub fn open(self) -> Route {
        Route {
            access: Access::Open,
            ..self
        }
    }

    /// Any valid token may call it, whatever its role.
    pub fn signed_in(self) -> Route {
        Route {
            access: Access::SignedIn,
            ..self
        }
    }

    /// A token of this role or above may call it.
    pub fn role(self, role: Role) -> Route {
        Route {
            access: Access::Role(role),
            ..self
        }
    }

    /// It performs these actions of the model, and needs the role they
    /// need ([`Action::role`]).
    ///
    /// Panics if they need different roles: a bug in the table, which
    /// every test that builds the router finds.
    pub fn performs(self, actions: &'static [Action]) -> Route {
        let Some(first) = actions.first() else {
            panic!("{}: a route performs at least one action", self.path);
        };
        let role = first.role();
        if let Some(other) = actions.iter().find(|a| a.role() != role) {
            panic!(
                "{}: {first:?} needs {role} but {other:?} needs {}",
                self.path,
                other.role()
            );
        }
        Route {
            performs: actions,
            ..self.role(role)
        }
    }

    /// A refused call is audited in its site's trail under this action and
    /// subject.
    pub fn audited(self, action: &'static str, subject: &'static str) -> Route {
        Route {
            audited: Some(Audited { action, subject }),
            ..self
        }
    }

    /// The role the auth layer asks for, or `None` when it is not on the
    /// route.
    pub fn needs(&self) -> Option<Role> {
        match self.access {
            Access::Open => None,
            Access::SignedIn => Some(Role::Viewer),
            Access::Role(role) => Some(role),
        }
    }

    /// Its one operation in the document.
    fn operation(&mut self) -> &mut Operation {
        match openapi::operations(&mut self.item).next() {
            Some(operation) => operation,
            None => unreachable!("route() took a path item with one operation"),
        }
    }
}

/// Every route of the daemon.
pub fn table() -> Vec<Route> {
    use Action::*;
    use Role::Viewer;
    vec![
        // The dashboard, the daemon itself.
        route(routes!(dashboard::index)).open(),
        route(routes!(dashboard::file)).open(),
        route(routes!(super::metrics)).signed_in(),
        route(routes!(openapi::document)).open(),
        // Signing in, tokens and their audit trail.
        route(routes!(auth::session_show)).open(),
        route(routes!(auth::session_create)).open(),
        route(routes!(auth::session_delete)).open(),
        route(routes!(auth::tokens_list)).performs(&[ManageTokens]),
        route(routes!(auth::tokens_create)).performs(&[ManageTokens]),
        route(routes!(auth::tokens_revoke)).performs(&[ManageTokens]),
        route(routes!(auth::audit)).role(Viewer),
        route(routes!(alerts::test)).performs(&[AlertTest]),
        // Sites.
        route(routes!(nodes::list)).role(Viewer),
        route(routes!(sites::list)).role(Viewer),
        route(routes!(sites::show)).role(Viewer),
        route(routes!(sites::start))
            .performs(&[SiteStart])
            .audited("site.start", "{site}"),
        route(routes!(sites::stop))
            .performs(&[SiteStop])
            .audited("site.stop", "{site}"),
        route(routes!(sites::reload))
            .performs(&[SiteReload])
            .audited("site.reload", "{site}"),
        route(routes!(log::text)).role(Viewer),
        route(routes!(log::stream)).role(Viewer),
        route(routes!(log::audit)).role(Viewer),
        route(routes!(history::site_history)).role(Viewer),
        route(routes!(history::site_holds)).role(Viewer),
        // Integrations and their queues.
        route(routes!(integrations::list)).role(Viewer),
        route(routes!(integrations::show)).role(Viewer),
        route(routes!(history::integration)).role(Viewer),
        route(routes!(history::integration_holds)).role(Viewer),
        route(routes!(integrations::pause))
            .performs(&[IntegrationPause])
            .audited("integration.pause", "integration/{name}"),
        route(routes!(integrations::resume))
            .performs(&[IntegrationResume])
            .audited("integration.resume", "integration/{name}"),
        route(routes!(integrations::start))
            .performs(&[IntegrationStart])
            .audited("integration.start", "integration/{name}"),
        route(routes!(integrations::stop))
            .performs(&[IntegrationStop])
            .audited("integration.stop", "integration/{name}"),
        route(routes!(transactions::list)).role(Viewer),
        route(routes!(transactions::show)).role(Viewer),
        route(routes!(transactions::act))
            .performs(&[TxRetry, TxReplay, TxIgnore])
            .audited("tx.{action}", "integration/{name}/tx/{seq}"),
        // Errors grouped by cause, retried or ignored a group at a time.
        route(routes!(errors::list)).role(Viewer),
        route(routes!(errors::act))
            .performs(&[TxRetry, TxIgnore])
            .audited("errors.{action}", "integration/{name}/errors/{group}"),
        // Flows.
        route(routes!(flows::list)).role(Viewer),
        route(routes!(flows::show)).role(Viewer),
        route(routes!(flows::run))
            .performs(&[FlowRunAll, FlowRunChanged])
            .audited("flow.run", "flow/{flow}"),
        route(routes!(links::list_links)).role(Viewer),
        route(routes!(links::set_link))
            .performs(&[LinkEdit])
            .audited("link.set", "flow/{flow}/link/{key}"),
        route(routes!(links::delete_link))
            .performs(&[LinkEdit])
            .audited("link.delete", "flow/{flow}/link/{key}"),
        route(routes!(flows::try_mapping))
            .performs(&[FlowTry])
            .audited("flow.try", "flow/{flow}"),
        // Endpoints.
        route(routes!(endpoints::list)).role(Viewer),
        route(routes!(endpoints::show)).role(Viewer),
        route(routes!(endpoints::test))
            .performs(&[EndpointTest])
            .audited("endpoint.test", "endpoint/{name}"),
        route(routes!(endpoints::reauthorize))
            .performs(&[EndpointReauthorize])
            .audited("endpoint.reauthorize", "endpoint/{name}"),
        // The webhook receiver.
        route(routes!(hooks::receive)).open(),
    ]
}

/// Builds the whole HTTP surface of the daemon from the table.
pub fn router(state: ApiState) -> Router {
    let mut api = Router::new();
    let mut top = Router::new();
    for route in table() {
        let handler = match route.needs() {
            None => route.handler,
            Some(role) => route
                .handler
                .route_layer(axum::middleware::from_fn_with_state(
                    Guard {
                        state: state.clone(),
                        role,
                        path: Arc::from(route.path.as_str()),
                        audited: route.audited,
                    },
                    auth::require,
                )),
        };
        match route.path.strip_prefix(API_PREFIX) {
            Some(under) => api = api.route(under, handler),
            None => top = top.route(&route.path, handler),
        }
    }
    let api = api
        .fallback(super::not_found)
        .method_not_allowed_fallback(super::method_not_allowed)
        // Outermost: every body is read (bounded) before anything answers.
        .layer(axum::middleware::from_fn_with_state(
            state.budget.clone(),
            body::read_first,
        ));
    top.nest(API_PREFIX, api)
        .fallback(super::not_found)
        .method_not_allowed_fallback(super::method_not_allowed)
        .with_state(state)
}

/// The OpenAPI document of the table: each route's operation with what its
/// access implies, and every schema they name, over [`openapi::ApiDoc`]
/// (the title, the tags, the bearer scheme).
pub fn document() -> utoipa::openapi::OpenApi {
    let mut doc = <openapi::ApiDoc as utoipa::OpenApi>::openapi();
    for mut route in table() {
        let access = route.access;
        let operation = route.operation();
        match access {
            Access::Open => operation.security = Some(vec![SecurityRequirement::default()]),
            Access::SignedIn => openapi::document_unauthorized(operation),
            Access::Role(_) => {
                openapi::document_unauthorized(operation);
                openapi::document_forbidden(operation);
            }
        }
        openapi::finish(operation);
        match doc.paths.paths.get_mut(&route.path) {
            Some(item) => item.merge_operations(route.item),
            None => {
                doc.paths.paths.insert(route.path, route.item);
            }
        }
        doc.components
            .get_or_insert_with(Default::default)
            .schemas
            .extend(route.schemas);
    }
    doc
}

impl Audited {
    /// The site, action and subject a refused call of the route `template`
    /// (in full) at `path` is audited under; `None` when the path does not
    /// name them (a bug in the table the tests find).
    ///
    /// Parameters are read from `path` as it was sent (not percent-decoded),
    /// aligned from its end: inside the nested router it has lost its
    /// `/api/v1`.
    pub fn name(&self, template: &str, path: &str) -> Option<(String, String, String)> {
        let params: Vec<(&str, &str)> = template
            .rsplit('/')
            .zip(path.rsplit('/'))
            .filter_map(|(t, p)| {
                let name = t.strip_prefix('{')?.strip_suffix('}')?;
                Some((name, p))
            })
            .collect();
        let fill = |text: &str| -> Option<String> {
            let mut out = String::new();
            let mut rest = text;
            while let Some(open) = rest.find('{') {
                out.push_str(&rest[..open]);
                let close = open + rest[open..].find('}')?;
                let name = &rest[open + 1..close];
                let (_, value) = params.iter().find(|(n, _)| *n == name)?;
                out.push_str(value);
                rest = &rest[close + 1..];
            }
            out.push_str(rest);
            Some(out)
        };
        Some((fill("{site}")?, fill(self.action)?, fill(self.subject)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The table's route for a request: its method, and a path whose
    /// segments are the template's (a `{param}` takes any).
    fn matching(method: &Method, path: &str) -> Route {
        let fits = |template: &str| {
            let t: Vec<&str> = template.split('/').collect();
            let p: Vec<&str> = path.split('/').collect();
            t.len() == p.len()
                && t.iter()
                    .zip(&p)
                    .all(|(t, p)| t == p || (t.starts_with('{') && t.ends_with('}')))
        };
        let mut found: Vec<Route> = table()
            .into_iter()
            .filter(|r| r.method == *method && fits(&r.path))
            .collect();
        // A literal segment beats a parameter (as the router has it).
        found.sort_by_key(|r| r.path.matches('{').count());
        assert!(!found.is_empty(), "no route for {method} {path}");
        found.remove(0)
    }

    fn needed(method: &Method, path: &str) -> Option<Role> {
        matching(method, path).needs()
    }

    #[test]
    fn roles_per_route() {
        let post = Method::POST;
        let p = |s: &str| format!("/api/v1/sites/LIVE{s}");
        let viewer = Some(Role::Viewer);
        let operator = Some(Role::Operator);
        let admin = Some(Role::Admin);
        assert_eq!(needed(&Method::GET, &p("/integrations")), viewer);
        assert_eq!(needed(&Method::GET, "/api/v1/tokens"), admin);
        assert_eq!(needed(&Method::GET, "/api/v1/audit"), viewer);
        assert_eq!(needed(&post, &p("/start")), admin);
        assert_eq!(needed(&post, &p("/stop")), admin);
        assert_eq!(needed(&post, &p("/reload")), admin);
        assert_eq!(needed(&post, &p("/integrations/orders/pause")), operator);
        assert_eq!(needed(&post, &p("/integrations/orders/resume")), operator);
        assert_eq!(needed(&post, &p("/integrations/orders/stop")), admin);
        assert_eq!(needed(&post, &p("/integrations/orders/start")), admin);
        assert_eq!(needed(&post, &p("/flows/f/run")), operator);
        assert_eq!(needed(&post, &p("/flows/f/try")), operator);
        assert_eq!(needed(&post, &p("/endpoints/e/test")), operator);
        assert_eq!(needed(&post, &p("/endpoints/e/reauthorize")), admin);
        assert_eq!(
            needed(&post, &p("/integrations/orders/transactions/7/retry")),
            operator
        );
        assert_eq!(
            needed(&Method::GET, &p("/integrations/orders/errors")),
            viewer
        );
        for verb in ["retry", "ignore"] {
            assert_eq!(
                needed(
                    &post,
                    &p(&format!("/integrations/orders/errors/3fa2c91b07de/{verb}"))
                ),
                operator
            );
        }
        assert_eq!(needed(&post, "/api/v1/tokens"), admin);
        assert_eq!(needed(&Method::DELETE, "/api/v1/tokens/grafana"), admin);
        // What needs no token at all, and `/metrics`, which needs one of
        // any role.
        for (method, path) in [
            (Method::GET, "/"),
            (Method::GET, "/api/v1/openapi.json"),
            (Method::GET, "/api/v1/session"),
            (Method::POST, "/api/v1/session"),
            (Method::DELETE, "/api/v1/session"),
            (Method::POST, "/hooks/LIVE/orders/web"),
        ] {
            assert_eq!(needed(&method, path), None, "{method} {path}");
        }
        assert_eq!(needed(&Method::GET, "/metrics"), viewer);
    }

    /// Every action of the model is performed by the routes its name says,
    /// and they need the role the model gives the action: what an answer
    /// offers, the route lets through, and no more.
    #[test]
    fn every_action_has_its_route_and_the_route_its_role() {
        let post = || Method::POST;
        let site = |s: &str| format!("/api/v1/sites/LIVE{s}");
        let integration = |s: &str| site(&format!("/integrations/orders{s}"));
        let requests = |action: Action| -> Vec<(Method, String)> {
            use Action::*;
            let verb = action.name();
            match action {
                SiteStart | SiteStop | SiteReload => vec![(post(), site(&format!("/{verb}")))],
                IntegrationPause | IntegrationResume | IntegrationStart | IntegrationStop => {
                    vec![(post(), integration(&format!("/{verb}")))]
                }
                FlowRunAll | FlowRunChanged => vec![(post(), site("/flows/f/run"))],
                FlowTry => vec![(post(), site("/flows/f/try"))],
                EndpointTest | EndpointReauthorize => {
                    vec![(post(), site(&format!("/endpoints/e/{verb}")))]
                }
                TxReplay => vec![(post(), integration(&format!("/transactions/7/{verb}")))],
                // One transaction, or a whole group of errors.
                TxRetry | TxIgnore => vec![
                    (post(), integration(&format!("/transactions/7/{verb}"))),
                    (post(), integration(&format!("/errors/3fa2c91b07de/{verb}"))),
                ],
                LinkEdit => vec![
                    (Method::PUT, site("/flows/f/links/k")),
                    (Method::DELETE, site("/flows/f/links/k")),
                ],
                ManageTokens => vec![
                    (Method::GET, "/api/v1/tokens".to_string()),
                    (post(), "/api/v1/tokens".to_string()),
                    (Method::DELETE, "/api/v1/tokens/grafana".to_string()),
                ],
                AlertTest => vec![(post(), "/api/v1/alerts/ops/test".to_string())],
            }
        };
        let mut found = Vec::new();
        for &action in Action::ALL {
            for (method, p) in requests(action) {
                let route = matching(&method, &p);
                assert!(
                    route.performs.contains(&action),
                    "{action:?}: {method} {p} is {} {}, which performs {:?}",
                    route.method,
                    route.path,
                    route.performs
                );
                assert_eq!(
                    route.needs(),
                    Some(action.role()),
                    "{action:?}: {method} {p}"
                );
                found.push((action, route.method, route.path));
            }
        }
        // And no route claims an action it does not perform.
        for route in table() {
            for action in route.performs {
                assert!(
                    found.contains(&(*action, route.method.clone(), route.path.clone())),
                    "{} {} claims {action:?}",
                    route.method,
                    route.path
                );
            }
        }
    }

    #[test]
    #[should_panic(expected = "needs operator but")]
    fn a_route_cannot_perform_actions_of_different_roles() {
        let _ = route(routes!(something_new)).performs(&[Action::TxRetry, Action::SiteStop]);
    }

    #[utoipa::path(post, path = "/api/v1/something/new", responses((status = 204)))]
    async fn something_new() {}

    #[utoipa::path(get, path = "/api/v1/something", responses((status = 200)))]
    async fn something() {}

    #[test]
    fn a_route_placed_nowhere_is_for_admins_when_it_writes() {
        assert_eq!(route(routes!(something_new)).needs(), Some(Role::Admin));
        assert_eq!(route(routes!(something)).needs(), Some(Role::Viewer));
    }

    #[test]
    fn refusals_are_named_as_the_engine_names_actions() {
        let a = |p: &str| {
            let route = matching(&Method::POST, p);
            route
                .audited
                .and_then(|a| a.name(&route.path, p))
                .map(|(s, a, x)| format!("{s} {a} {x}"))
        };
        assert_eq!(
            a("/api/v1/sites/LIVE/stop").as_deref(),
            Some("LIVE site.stop LIVE")
        );
        assert_eq!(
            a("/api/v1/sites/LIVE/integrations/orders/pause").as_deref(),
            Some("LIVE integration.pause integration/orders")
        );
        assert_eq!(
            a("/api/v1/sites/LIVE/integrations/orders/transactions/7/retry").as_deref(),
            Some("LIVE tx.retry integration/orders/tx/7")
        );
        assert_eq!(
            a("/api/v1/sites/LIVE/integrations/orders/errors/3fa2c91b07de/ignore").as_deref(),
            Some("LIVE errors.ignore integration/orders/errors/3fa2c91b07de")
        );
        assert_eq!(
            a("/api/v1/sites/LIVE/flows/web/run").as_deref(),
            Some("LIVE flow.run flow/web")
        );
        assert_eq!(
            a("/api/v1/sites/LIVE/endpoints/crm/reauthorize").as_deref(),
            Some("LIVE endpoint.reauthorize endpoint/crm")
        );
        assert_eq!(a("/api/v1/tokens"), None);
        // Inside the nested router the path has lost its `/api/v1`; the
        // path is taken as it was sent.
        let route = matching(&Method::POST, "/api/v1/sites/LIVE/integrations/o/pause");
        assert_eq!(
            route
                .audited
                .and_then(|a| a.name(&route.path, "/sites/LI%56E/integrations/o%20p/pause")),
            Some((
                "LI%56E".to_string(),
                "integration.pause".to_string(),
                "integration/o%20p".to_string()
            ))
        );
    }

    /// Every write a role is checked on, but the token store's, is audited
    /// when refused; and every audited route's names can be filled.
    #[test]
    fn every_guarded_write_of_a_site_is_audited() {
        for route in table() {
            let of_a_site = route.path.starts_with("/api/v1/sites/{site}/");
            let checked = matches!(route.access, Access::Role(r) if r > Role::Viewer);
            if is_write(&route.method) && checked {
                assert_eq!(
                    route.audited.is_some(),
                    of_a_site,
                    "{} {}",
                    route.method,
                    route.path
                );
            }
            if let Some(audited) = route.audited {
                let concrete = route.path.replace(['{', '}'], "");
                assert!(
                    audited.name(&route.path, &concrete).is_some(),
                    "{} {}: {audited:?}",
                    route.method,
                    route.path
                );
            }
        }
    }
}
