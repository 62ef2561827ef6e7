//! The web dashboard: one page of plain JavaScript, no build step, served
//! from the binary (the files in `gateway/assets/` are compiled in).
//!
//! | Route | What |
//! |---|---|
//! | `GET /`, `GET /dashboard` | the page (`index.html`) |
//! | `GET /assets/app.js`, `GET /assets/style.css` | its script and style sheet |
//!
//! What the page shows, one view at a time (`#/tasks`, `#/task/ID`,
//! `#/queues`, `#/workers`, `#/dlq?type=T`, so each can be linked to):
//!
//! - **Tasks**: `GET /v1/tasks`, filtered by state and type (by the API) and
//!   by the time of the last update (on the page: the list is newest update
//!   first, so that filter is a cut-off).
//! - **A task**: its summary and its receipt chain (`GET /v1/tasks/{id}`) as
//!   a timeline grouped by attempt; each receipt with its type, time (and
//!   offset from the first), worker, attempt and body fields, marked when
//!   it is a redelivery (a second `accepted` under one parent, or the
//!   broker's redelivered flag), an in-progress poll, a retry or a replay.
//! - **Queues**: `GET /v1/queues`, or its notice when the management API is
//!   not there. **Workers**: `GET /v1/workers`.
//! - **Dead letters**: the count per task type, a type's dead letters, and
//!   replay (all, or one) and purge (all, after a confirmation dialog).
//!
//! The page itself needs no key: it asks for one (kept in the tab's
//! `sessionStorage`) and sends it as `Authorization: Bearer` on every `/v1`
//! call it makes, asking again when a call answers 401. It polls the routes
//! of the view on screen every 2 s (not server-sent events: a poll is one
//! more request of the kind the page makes anyway, through any proxy), and
//! stops while the tab is hidden. Every URL in it is relative, so it works
//! at `/`, at `/dashboard` and behind a proxy that mounts the gateway under
//! a path. `tests/dashboard_browser.rs` drives it in chromium.
//!
//! Caching: every file is answered with `Cache-Control: no-cache` and an
//! `ETag` (a hash of its bytes), so a browser asks again each time and gets
//! a 304 while the binary is the same, and a new binary's files at once.
//! The page is sent with a content security policy that allows nothing but
//! its own script, styles and `/v1` calls.

use axum::Router;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use std::sync::LazyLock;

use crate::state::GatewayState;

/// One file compiled into the binary.
struct Asset {
    body: &'static [u8],
    content_type: &'static str,
    etag: HeaderValue,
}

impl Asset {
    fn new(body: &'static [u8], content_type: &'static str) -> Asset {
        let etag = HeaderValue::from_str(&format!("\"{:016x}\"", fnv1a(body)))
            .expect("hex is a valid header value");
        Asset {
            body,
            content_type,
            etag,
        }
    }
}

static INDEX: LazyLock<Asset> = LazyLock::new(|| {
    Asset::new(
        include_bytes!("../assets/index.html"),
        "text/html; charset=utf-8",
    )
});
static APP_JS: LazyLock<Asset> = LazyLock::new(|| {
    Asset::new(
        include_bytes!("../assets/app.js"),
        "text/javascript; charset=utf-8",
    )
});
static STYLE_CSS: LazyLock<Asset> = LazyLock::new(|| {
    Asset::new(
        include_bytes!("../assets/style.css"),
        "text/css; charset=utf-8",
    )
});

/// What the page may load and call: only its own files and this origin's
/// API. No inline script, so an injected string cannot run.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self' data:; connect-src 'self'; \
     base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The dashboard's routes, merged into the gateway's router.
pub(crate) fn routes() -> Router<GatewayState> {
    Router::new()
        .route("/", get(index))
        .route("/dashboard", get(index))
        .route("/assets/app.js", get(app_js))
        .route("/assets/style.css", get(style_css))
}

async fn index(headers: HeaderMap) -> Response {
    let mut response = serve(&INDEX, &headers);
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

async fn app_js(headers: HeaderMap) -> Response {
    serve(&APP_JS, &headers)
}

async fn style_css(headers: HeaderMap) -> Response {
    serve(&STYLE_CSS, &headers)
}

/// `asset`, or 304 when the request already has this version.
fn serve(asset: &Asset, request: &HeaderMap) -> Response {
    let fresh = request
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|tag| {
            let tag = tag.trim();
            tag == "*" || tag.trim_start_matches("W/") == asset.etag
        });
    let common = [
        (header::ETAG, asset.etag.clone()),
        (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        (
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ),
    ];
    if fresh {
        return (StatusCode::NOT_MODIFIED, common).into_response();
    }
    (
        common,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static(asset.content_type),
        )],
        asset.body,
    )
        .into_response()
}

/// FNV-1a, 64 bits: a version tag for the ETag, not a security measure.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(asset: &Asset, if_none_match: Option<&str>) -> Response {
        let mut headers = HeaderMap::new();
        if let Some(tag) = if_none_match {
            headers.insert(header::IF_NONE_MATCH, HeaderValue::from_str(tag).unwrap());
        }
        serve(asset, &headers)
    }

    #[test]
    fn assets_have_their_content_type_and_a_revalidated_cache_policy() {
        for (asset, ct) in [
            (&*INDEX, "text/html"),
            (&*APP_JS, "text/javascript"),
            (&*STYLE_CSS, "text/css"),
        ] {
            let r = get(asset, None);
            assert_eq!(r.status(), StatusCode::OK);
            let h = r.headers();
            assert!(h[header::CONTENT_TYPE].to_str().unwrap().starts_with(ct));
            assert_eq!(h[header::CACHE_CONTROL], "no-cache");
            assert_eq!(h[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
            assert!(h[header::ETAG].to_str().unwrap().starts_with('"'));
        }
    }

    #[test]
    fn a_matching_etag_gets_304_and_another_gets_the_file() {
        let tag = APP_JS.etag.to_str().unwrap().to_owned();
        assert_eq!(get(&APP_JS, Some(&tag)).status(), StatusCode::NOT_MODIFIED);
        assert_eq!(
            get(&APP_JS, Some(&format!("W/{tag}"))).status(),
            StatusCode::NOT_MODIFIED
        );
        assert_eq!(
            get(&APP_JS, Some(&format!("\"other\", {tag}"))).status(),
            StatusCode::NOT_MODIFIED
        );
        assert_eq!(get(&APP_JS, Some("\"other\"")).status(), StatusCode::OK);
        assert_ne!(APP_JS.etag, STYLE_CSS.etag);
    }

    #[test]
    fn the_page_loads_only_its_own_files_with_relative_urls() {
        let html = std::str::from_utf8(INDEX.body).unwrap();
        assert!(html.contains("src=\"assets/app.js\""), "{html}");
        assert!(html.contains("href=\"assets/style.css\""), "{html}");
        assert!(!html.contains("<script>"), "no inline script under the CSP");
        assert!(!html.contains("http://") && !html.contains("https://"));
        let js = std::str::from_utf8(APP_JS.body).unwrap();
        assert!(
            !js.contains("http://") && !js.contains("https://"),
            "no CDN"
        );
    }
}
