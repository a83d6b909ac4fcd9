//! `GET /status`: a live page for someone without a Grafana at hand. One HTML page, its
//! script, style and icon compiled into the binary (no CDN; works offline), under a
//! Content-Security-Policy that allows nothing inline and no other origin. The page reads
//! `/status/stream`, the statistics stream on the operational surface, so it works on the
//! admin listener when that is separate from the API's.

use axum::response::{IntoResponse, Response};
use http::{header, HeaderName, HeaderValue};

use crate::error::{ApiError, Missing};

/// Scripts and styles from this origin only, nothing inline, connections only back to this
/// origin (its WebSocket included), and no framing.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self'; connect-src 'self'; base-uri 'none'; \
     form-action 'none'; frame-ancestors 'none'";

const PAGE: &str = include_str!("status/index.html");
const SCRIPT: &str = include_str!("status/status.js");
const STYLE: &str = include_str!("status/status.css");
const ICON: &str = include_str!("status/icon.svg");

/// `GET /status`: the page.
#[utoipa::path(get, path = "/status", tag = "status",
    responses((status = 200, description = "A live view of the service: requests/s, error rate, p50/p99 latency and the worker pool, from `/status/stream`. Self-contained (no external resources) and served with a strict Content-Security-Policy.", body = String, content_type = "text/html"))
)]
pub async fn page() -> Response {
    serve("text/html; charset=utf-8", PAGE)
}

/// `GET /status/{file}`: the page's script, style and icon.
pub async fn asset(uri: http::Uri) -> Response {
    let file = uri.path().strip_prefix("/status/").unwrap_or("");
    match file {
        "status.js" => serve("text/javascript; charset=utf-8", SCRIPT),
        "status.css" => serve("text/css; charset=utf-8", STYLE),
        "icon.svg" => serve("image/svg+xml", ICON),
        _ => ApiError::NotFound(Missing::Route(uri.path().to_owned())).into_response(),
    }
}

fn serve(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(CONTENT_SECURITY_POLICY),
            ),
            (
                header::REFERRER_POLICY,
                HeaderValue::from_static("no-referrer"),
            ),
            (header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
            // The files change with the binary only; a browser revalidates them on reload.
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            (
                HeaderName::from_static("cross-origin-opener-policy"),
                HeaderValue::from_static("same-origin"),
            ),
        ],
        body,
    )
        .into_response()
}
