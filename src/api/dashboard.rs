//! The operator's dashboard: one HTML page, its stylesheet and its script
//! modules, written by hand (no build step, nothing fetched from elsewhere)
//! and built into the binary. The page drives the same REST API as the CLI.
//!
//! # Invariants
//! - The page loads `/assets/app.js` as a module; it and the modules it
//!   imports (`./api.js`, `./sites.js`, …) are the files of [`ASSETS`],
//!   each served with its type under `/assets/{file}` (a test holds every
//!   file of `assets/dashboard/` and every import to the table).
//! - Files of others are vendored, unchanged, in `assets/dashboard/vendor/`
//!   (its README says from where, which version, and their checksums) and
//!   served beside ours under their own names: uPlot, which draws the
//!   charts, is loaded by the page as a classic script (`window.uPlot`).
//! - The page's CSP lets scripts come from this daemon only (`script-src
//!   'self'`, which module scripts and their imports satisfy); nothing
//!   inline runs.

use axum::http::header;
use axum::response::{IntoResponse, Response};
use utoipa::openapi::path::{Parameter, ParameterBuilder, ParameterIn};
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::openapi::Required;

use super::openapi::ErrorBody;
use super::{ApiError, PathParams};

const INDEX_HTML: &str = include_str!("../../assets/dashboard/index.html");

/// The files under `/assets/`: the stylesheet and the script modules.
pub const ASSETS: &[(&str, &str)] = &[
    ("app.css", include_str!("../../assets/dashboard/app.css")),
    ("app.js", include_str!("../../assets/dashboard/app.js")),
    ("api.js", include_str!("../../assets/dashboard/api.js")),
    ("audit.js", include_str!("../../assets/dashboard/audit.js")),
    (
        "charts.css",
        include_str!("../../assets/dashboard/charts.css"),
    ),
    (
        "charts.js",
        include_str!("../../assets/dashboard/charts.js"),
    ),
    ("dom.js", include_str!("../../assets/dashboard/dom.js")),
    (
        "endpoints.js",
        include_str!("../../assets/dashboard/endpoints.js"),
    ),
    (
        "errors.js",
        include_str!("../../assets/dashboard/errors.js"),
    ),
    ("flows.js", include_str!("../../assets/dashboard/flows.js")),
    (
        "integrations.js",
        include_str!("../../assets/dashboard/integrations.js"),
    ),
    ("log.js", include_str!("../../assets/dashboard/log.js")),
    ("modal.js", include_str!("../../assets/dashboard/modal.js")),
    (
        "notice.js",
        include_str!("../../assets/dashboard/notice.js"),
    ),
    (
        "session.js",
        include_str!("../../assets/dashboard/session.js"),
    ),
    ("sites.js", include_str!("../../assets/dashboard/sites.js")),
    ("state.js", include_str!("../../assets/dashboard/state.js")),
    (
        "tokens.js",
        include_str!("../../assets/dashboard/tokens.js"),
    ),
    (
        "transactions.js",
        include_str!("../../assets/dashboard/transactions.js"),
    ),
    // Vendored: assets/dashboard/vendor/README.md.
    (
        "uPlot.iife.min.js",
        include_str!("../../assets/dashboard/vendor/uPlot.iife.min.js"),
    ),
    (
        "uPlot.min.css",
        include_str!("../../assets/dashboard/vendor/uPlot.min.css"),
    ),
];

/// Everything the page needs comes from this daemon; nothing inline runs.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
                   img-src 'self' data:; connect-src 'self'; form-action 'self'; \
                   base-uri 'none'; frame-ancestors 'none'";

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body,
    )
        .into_response()
}

/// The type a file is served with, by its name (module scripts must come
/// as JavaScript, or the browser refuses them).
fn content_type(name: &str) -> &'static str {
    if name.ends_with(".css") {
        "text/css; charset=utf-8"
    } else {
        "text/javascript; charset=utf-8"
    }
}

/// The dashboard (`assets/dashboard/index.html`, built into the binary).
#[utoipa::path(get, path = "/", tag = "meta",
    responses((status = 200, description = "The dashboard's page", body = String,
        content_type = "text/html")))]
pub async fn index() -> Response {
    let mut response = asset("text/html; charset=utf-8", INDEX_HTML);
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        header::HeaderValue::from_static(CSP),
    );
    headers.insert(
        header::X_FRAME_OPTIONS,
        header::HeaderValue::from_static("DENY"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        header::HeaderValue::from_static("no-referrer"),
    );
    response
}

/// A file of the dashboard, in the path: one of [`ASSETS`].
pub struct AssetPath;

/// Written by hand: the derive drops `required` (and the example) from a
/// parameter whose schema is made by a function, as this list is.
impl utoipa::IntoParams for AssetPath {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        let names = ObjectBuilder::new()
            .schema_type(Type::String)
            .enum_values(Some(ASSETS.iter().map(|(name, _)| *name)));
        vec![ParameterBuilder::new()
            .name("file")
            .parameter_in(ParameterIn::Path)
            .required(Required::True)
            .description(Some("A script module or the stylesheet"))
            .schema(Some(names))
            .example(Some("app.js".into()))
            .build()]
    }
}

/// The dashboard's stylesheet and script modules.
#[utoipa::path(get, path = "/assets/{file}", tag = "meta", params(AssetPath),
    responses(
        (status = 200, description = "A script module (JavaScript) or the stylesheet (CSS)",
            content((String = "text/javascript"), (String = "text/css"))),
        (status = 400, description = "A bad path", body = ErrorBody),
        (status = 404, description = "No such file", body = ErrorBody),
    ))]
pub async fn file(PathParams(name): PathParams<String>) -> Result<Response, ApiError> {
    ASSETS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(n, body)| asset(content_type(n), body))
        .ok_or_else(|| ApiError::NotFound(format!("the dashboard has no file '{name}'")))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The folder of `assets/dashboard/` that holds the files of others.
    const VENDOR: &str = "vendor";

    async fn body(response: Response) -> String {
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    fn header(response: &Response, name: header::HeaderName) -> &str {
        response.headers()[name].to_str().unwrap()
    }

    async fn get(name: &str) -> Response {
        file(PathParams(name.to_string())).await.unwrap()
    }

    fn scripts() -> impl Iterator<Item = (&'static str, &'static str)> {
        ASSETS.iter().copied().filter(|(n, _)| n.ends_with(".js"))
    }

    #[tokio::test]
    async fn each_file_has_its_type_and_is_revalidated() {
        let page = index().await;
        assert_eq!(
            header(&page, header::CONTENT_TYPE),
            "text/html; charset=utf-8"
        );
        assert_eq!(header(&page, header::CACHE_CONTROL), "no-cache");
        assert!(header(&page, header::CONTENT_SECURITY_POLICY).contains("script-src 'self'"));
        let html = body(page).await;
        assert!(html.contains(r#"<script type="module" src="/assets/app.js"></script>"#));
        assert!(html.contains(r#"<link rel="stylesheet" href="/assets/app.css">"#));

        for (name, text) in ASSETS {
            let response = get(name).await;
            let want = if name.ends_with(".js") {
                "text/javascript; charset=utf-8"
            } else {
                "text/css; charset=utf-8"
            };
            assert_eq!(header(&response, header::CONTENT_TYPE), want, "{name}");
            assert_eq!(header(&response, header::CACHE_CONTROL), "no-cache");
            assert_eq!(header(&response, header::X_CONTENT_TYPE_OPTIONS), "nosniff");
            assert_eq!(body(response).await, *text, "{name}");
        }
        assert!(matches!(
            file(PathParams("../Cargo.toml".into())).await,
            Err(ApiError::NotFound(_))
        ));
    }

    /// Every file of `assets/dashboard/` is served (and of its `vendor/`,
    /// but for their licences and README), and every module a script
    /// imports is one of them: a module left out of the table would break
    /// the page only in a browser.
    #[test]
    fn every_file_is_served_and_every_import_resolves() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/dashboard");
        let mut files = Vec::new();
        for entry in std::fs::read_dir(&dir).unwrap() {
            let entry = entry.unwrap();
            let name = entry.file_name().to_string_lossy().to_string();
            if name == VENDOR {
                for vendored in std::fs::read_dir(entry.path()).unwrap() {
                    let vendored = vendored.unwrap().path();
                    let name = vendored.file_name().unwrap().to_string_lossy().to_string();
                    if !name.starts_with("LICENSE") && name != "README.md" {
                        files.push((format!("{VENDOR}/{name}"), name, vendored));
                    }
                }
            } else if name != "index.html" {
                files.push((name.clone(), name, entry.path()));
            }
        }
        for (shown, name, path) in files {
            let served = ASSETS.iter().find(|(n, _)| *n == name);
            assert!(
                served.is_some(),
                "assets/dashboard/{shown} is not in ASSETS"
            );
            assert_eq!(
                served.unwrap().1,
                std::fs::read_to_string(&path).unwrap(),
                "{shown}"
            );
        }
        for (name, text) in scripts() {
            for line in text.lines().filter(|l| l.starts_with("import ")) {
                let Some(from) = line.split(" from './").nth(1) else {
                    panic!("{name}: imports only from ./ (this daemon): {line}");
                };
                let module = from.trim_end_matches("';");
                assert!(
                    scripts().any(|(n, _)| n == module),
                    "{name} imports ./{module}, which is not served"
                );
            }
        }
    }

    /// Each file served is used: the page loads it (a stylesheet, a script)
    /// or a script imports it. A file the page forgets would be missing
    /// only in a browser.
    #[test]
    fn every_file_served_is_loaded_or_imported() {
        for (name, _) in ASSETS {
            let loaded = INDEX_HTML.contains(&format!("\"/assets/{name}\""));
            let imported = scripts().any(|(_, text)| {
                text.lines()
                    .any(|l| l.starts_with("import ") && l.ends_with(&format!("'./{name}';")))
            });
            assert!(
                loaded || imported,
                "{name} is served but neither loaded by the page nor imported"
            );
        }
    }

    /// A vendored file's opening licence comment (`/*! https://… (v1.2.3) */`)
    /// says where it comes from: it loads nothing.
    fn without_banner(text: &str) -> &str {
        text.strip_prefix("/*!")
            .and_then(|rest| rest.split_once("*/"))
            .map_or(text, |(_, rest)| rest)
    }

    /// Server text goes into the page only as text: no HTML parsing of
    /// strings, no inline script (the CSP forbids it anyway), nothing from
    /// another origin.
    #[test]
    fn the_page_inserts_no_html_and_loads_nothing_from_elsewhere() {
        for (name, text) in scripts() {
            for sink in [
                "innerHTML",
                "outerHTML",
                "insertAdjacentHTML",
                "document.write",
                "eval(",
                "new Function",
                "import(",
            ] {
                assert!(!text.contains(sink), "{name} uses {sink}");
            }
        }
        for (name, text) in
            std::iter::once(("index.html", INDEX_HTML)).chain(ASSETS.iter().copied())
        {
            let text = without_banner(text);
            assert!(
                !text.contains("http://") && !text.contains("https://"),
                "{name} names another origin"
            );
            assert!(!text.contains("//cdn"), "{name} names a CDN");
        }
        assert!(!INDEX_HTML.contains("<script>") && !INDEX_HTML.contains(" onclick="));
    }
}
