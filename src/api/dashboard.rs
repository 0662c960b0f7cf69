//! The operator's dashboard: one HTML page, its stylesheet and its script,
//! written by hand (no build step, nothing fetched from elsewhere) and
//! built into the binary. The page drives the same REST API as the CLI.

use axum::http::header;
use axum::response::{IntoResponse, Response};

const INDEX_HTML: &str = include_str!("../../assets/dashboard/index.html");
const APP_JS: &str = include_str!("../../assets/dashboard/app.js");
const APP_CSS: &str = include_str!("../../assets/dashboard/app.css");

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

/// The dashboard's script.
#[utoipa::path(get, path = "/assets/app.js", tag = "meta",
    responses((status = 200, description = "JavaScript", body = String,
        content_type = "text/javascript")))]
pub async fn script() -> Response {
    asset("text/javascript; charset=utf-8", APP_JS)
}

/// The dashboard's stylesheet.
#[utoipa::path(get, path = "/assets/app.css", tag = "meta",
    responses((status = 200, description = "CSS", body = String,
        content_type = "text/css")))]
pub async fn stylesheet() -> Response {
    asset("text/css; charset=utf-8", APP_CSS)
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn body(response: Response) -> String {
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    fn header(response: &Response, name: header::HeaderName) -> &str {
        response.headers()[name].to_str().unwrap()
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
        assert!(html.contains(r#"<script src="/assets/app.js" defer></script>"#));
        assert!(html.contains(r#"<link rel="stylesheet" href="/assets/app.css">"#));

        let js = script().await;
        assert_eq!(
            header(&js, header::CONTENT_TYPE),
            "text/javascript; charset=utf-8"
        );
        assert_eq!(header(&js, header::CACHE_CONTROL), "no-cache");
        assert_eq!(body(js).await, APP_JS);

        let css = stylesheet().await;
        assert_eq!(
            header(&css, header::CONTENT_TYPE),
            "text/css; charset=utf-8"
        );
        assert_eq!(header(&css, header::CACHE_CONTROL), "no-cache");
        assert_eq!(body(css).await, APP_CSS);
    }

    /// Server text goes into the page only as text: no HTML parsing of
    /// strings, no inline script (the CSP forbids it anyway), nothing from
    /// another origin.
    #[test]
    fn the_page_inserts_no_html_and_loads_nothing_from_elsewhere() {
        for sink in [
            "innerHTML",
            "outerHTML",
            "insertAdjacentHTML",
            "document.write",
            "eval(",
            "new Function",
        ] {
            assert!(!APP_JS.contains(sink), "app.js uses {sink}");
        }
        for text in [INDEX_HTML, APP_JS, APP_CSS] {
            assert!(!text.contains("http://") && !text.contains("https://"));
            assert!(!text.contains("//cdn"));
        }
        assert!(!INDEX_HTML.contains("<script>") && !INDEX_HTML.contains(" onclick="));
    }
}
