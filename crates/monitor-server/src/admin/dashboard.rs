//! The dashboard: `GET /`, a live page of the hosts that report `host.health`
//! (`docs/dashboard.md`), and its script and style sheet.
//!
//! Everything is compiled into the binary (`include_str!` of `assets/`): the page works
//! offline and loads nothing from elsewhere. Its data comes from `GET /ws` (the reports)
//! and `GET /api/status` (the header's figures), which check the token themselves; the
//! page and its assets hold nothing secret and are served without one, so that the page
//! can ask for it.
//!
//! Every answer says `Cache-Control: no-cache` (a browser checks again after an upgrade)
//! and carries a strict `Content-Security-Policy`: scripts, styles and connections to this
//! origin only, no inline script or style, no framing, no form posts.

use axum::http::{header, HeaderName, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

/// The page.
const HTML: &str = include_str!("../../assets/dashboard.html");
/// Its script.
const JS: &str = include_str!("../../assets/dashboard.js");
/// Its style sheet.
const CSS: &str = include_str!("../../assets/dashboard.css");

/// Where the page loads its script from.
pub(crate) const SCRIPT_PATH: &str = "/assets/dashboard.js";
/// Where the page loads its style sheet from.
pub(crate) const STYLE_PATH: &str = "/assets/dashboard.css";

/// What the page may load and do. `connect-src 'self'` covers `ws://` and `wss://` to this
/// host and port (CSP level 3), the page's WebSocket.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
                   connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The dashboard's routes: `/` and its assets, stateless (merged into the admin router).
pub(crate) fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(page))
        .route(SCRIPT_PATH, get(script))
        .route(STYLE_PATH, get(style))
}

/// `GET /`: the page.
async fn page() -> Response {
    asset("text/html; charset=utf-8", HTML)
}

/// `GET /assets/dashboard.js`.
async fn script() -> Response {
    asset("text/javascript; charset=utf-8", JS)
}

/// `GET /assets/dashboard.css`.
async fn style() -> Response {
    asset("text/css; charset=utf-8", CSS)
}

/// An embedded file with its type and the dashboard's headers.
fn asset(content_type: &'static str, body: &'static str) -> Response {
    let headers: [(HeaderName, HeaderValue); 6] = [
        (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
        (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        (
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CSP),
        ),
        (
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ),
        (
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        ),
        (header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
    ];
    (headers, body).into_response()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use axum::body::Body;
    use axum::http::{Request, StatusCode};

    /// A request through the router, as the admin listener would serve it:
    /// the status, the headers and the body as text.
    async fn get(path: &str) -> (StatusCode, axum::http::HeaderMap, String) {
        let app: Router = routes();
        let request = Request::get(path).body(Body::empty()).unwrap();
        let response = tower::ServiceExt::oneshot(app, request).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let body = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        (status, headers, String::from_utf8(body.to_vec()).unwrap())
    }

    /// Whether `html` has an attribute such as ` onclick=`.
    fn has_event_handler(html: &str) -> bool {
        html.match_indices(" on").any(|(at, _)| {
            let rest = &html[at + 3..];
            let name_len = rest.find(|c: char| !c.is_ascii_alphabetic()).unwrap_or(0);
            name_len > 0 && rest[name_len..].starts_with('=')
        })
    }

    #[tokio::test]
    async fn the_page_and_its_assets_are_served_with_their_types() {
        for (path, content_type, contains) in [
            ("/", "text/html; charset=utf-8", "<!DOCTYPE html>"),
            (
                SCRIPT_PATH,
                "text/javascript; charset=utf-8",
                "STALE_INTERVALS",
            ),
            (STYLE_PATH, "text/css; charset=utf-8", ".host"),
        ] {
            let (status, headers, body) = get(path).await;
            assert_eq!(status, StatusCode::OK, "{path}");
            assert_eq!(headers[header::CONTENT_TYPE], content_type, "{path}");
            assert_eq!(headers[header::CACHE_CONTROL], "no-cache", "{path}");
            assert_eq!(headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff", "{path}");
            let csp = headers[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
            assert!(csp.starts_with("default-src 'none'"), "{path}: {csp}");
            assert!(!csp.contains("unsafe"), "{path}: {csp}");
            assert!(body.contains(contains), "{path} lacks {contains:?}");
        }
        let (status, _, _) = get("/assets/nope.js").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    }

    #[tokio::test]
    async fn the_page_loads_only_its_own_assets() {
        let (_, _, html) = get("/").await;
        assert!(html.contains(&format!(r#"<script src="{SCRIPT_PATH}""#)));
        assert!(html.contains(&format!(r#"<link rel="stylesheet" href="{STYLE_PATH}">"#)));
        assert!(html.contains(r#"<meta name="viewport""#));
        // Nothing from elsewhere, no inline script or style (the CSP would refuse them).
        for text in [&html, JS, CSS] {
            assert!(!text.contains("http://"), "an absolute URL");
            assert!(!text.contains("https://"), "an absolute URL");
            assert!(!text.contains("@import"), "an import");
        }
        assert_eq!(html.matches("<script").count(), 1, "one script, external");
        assert!(!html.contains("<style"), "no inline style");
        assert!(!html.contains(" style="), "no style attribute");
        assert!(!has_event_handler(&html), "no inline event handler");
        assert!(
            has_event_handler(r#"<a onclick="x()">"#),
            "the check can fail"
        );
        // Report data goes in as text only.
        assert!(!JS.contains("innerHTML"));
        assert!(!JS.contains("outerHTML"));
        assert!(!JS.contains("insertAdjacentHTML"));
        assert!(!JS.contains("document.write"));
        assert!(!JS.contains("eval("));
    }
}
