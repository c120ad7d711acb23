//! The live status page: `GET /` (also `/ui`), with its script and style
//! sheet at `/ui/app.js` and `/ui/app.css`, all compiled into the binary.
//!
//! The page polls `/status` every second and renders zones, datacenters
//! (with their probe targets), services and recent state changes; its
//! buttons call the override endpoints. It is served without the token
//! (it holds no data: everything it shows comes from `/status`, which
//! needs the token when one is set, and the page asks for it), under a
//! Content-Security-Policy that allows nothing but these three files and
//! requests to this same origin: no inline script, no external assets,
//! no framing.

use axum::Router;
use axum::http::{HeaderName, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

/// The page itself.
const INDEX_HTML: &str = include_str!("ui/index.html");
/// Polling, rendering and the override buttons.
const APP_JS: &str = include_str!("ui/app.js");
/// Dense tables, colour for state.
const APP_CSS: &str = include_str!("ui/app.css");

/// Same-origin script, style and requests only; nothing inline, no
/// frames, no forms posted anywhere, no `<base>` rewrites.
pub(super) const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; \
     frame-ancestors 'none'";

/// The page's routes, served without the token.
pub(super) fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route(
            "/",
            get(|| async { asset("text/html; charset=utf-8", INDEX_HTML) }),
        )
        .route(
            "/ui",
            get(|| async { asset("text/html; charset=utf-8", INDEX_HTML) }),
        )
        .route(
            "/ui/app.js",
            get(|| async { asset("text/javascript; charset=utf-8", APP_JS) }),
        )
        .route(
            "/ui/app.css",
            get(|| async { asset("text/css; charset=utf-8", APP_CSS) }),
        )
}

/// One of the page's files with its headers. `no-cache`: the browser may
/// keep a copy but asks again each time, so an upgraded server never runs
/// an old script against a new `/status`.
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
    use super::*;

    #[test]
    fn the_page_loads_only_its_own_files() {
        // Everything the page references is one of our routes: no CDN,
        // no inline script or style the CSP would block.
        assert!(INDEX_HTML.contains("src=\"/ui/app.js\""));
        assert!(INDEX_HTML.contains("href=\"/ui/app.css\""));
        for text in [INDEX_HTML, APP_JS, APP_CSS] {
            assert!(!text.contains("http://") && !text.contains("https://"));
        }
        assert!(!INDEX_HTML.contains("<script>"));
        assert!(!INDEX_HTML.contains("<style"));
        assert!(!INDEX_HTML.contains(" style="));
        // No inline event handlers (` onclick=` and the like).
        let handler = INDEX_HTML.split(" on").skip(1).any(|rest| {
            let name: String = rest.chars().take_while(char::is_ascii_lowercase).collect();
            !name.is_empty() && rest[name.len()..].starts_with('=')
        });
        assert!(!handler, "inline event handler in index.html");
    }
}
