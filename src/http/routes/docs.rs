//! `/openapi.json` and the browser view of it at `/docs` (Swagger UI, its files compiled into
//! the binary so it works without network access).

use std::sync::{Arc, OnceLock};

use axum::response::{IntoResponse, Response};
use axum::Extension;
use bytes::Bytes;
use http::{header, HeaderValue};
use utoipa_swagger_ui::Config;

use crate::error::{ApiError, Missing};

/// The served OpenAPI document, serialized on first request: building it at start would add
/// its code and allocations to every instance's idle footprint.
pub struct Document {
    json: OnceLock<Bytes>,
    build: Box<dyn Fn() -> Bytes + Send + Sync>,
}

impl Document {
    /// A document that `build` makes when first asked for.
    pub fn new(build: impl Fn() -> Bytes + Send + Sync + 'static) -> Self {
        Self {
            json: OnceLock::new(),
            build: Box::new(build),
        }
    }

    fn json(&self) -> Bytes {
        self.json.get_or_init(|| (self.build)()).clone()
    }
}

/// `GET /openapi.json`.
#[utoipa::path(get, path = "/openapi.json", tag = "docs",
    responses((status = 200, description = "This OpenAPI 3.1 document.", body = Object, content_type = "application/json"))
)]
pub async fn openapi_json(Extension(document): Extension<Arc<Document>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        document.json(),
    )
        .into_response()
}

/// `GET /docs`: the API reference page.
#[utoipa::path(get, path = "/docs", tag = "docs",
    responses((status = 200, description = "The API reference (Swagger UI), served from the binary.", body = String, content_type = "text/html"))
)]
pub async fn docs() -> Response {
    serve("")
}

fn config() -> Arc<Config<'static>> {
    static CONFIG: OnceLock<Arc<Config<'static>>> = OnceLock::new();
    Arc::clone(CONFIG.get_or_init(|| Arc::new(Config::from("/openapi.json"))))
}

/// `GET /docs/{file}`: the page's scripts and styles.
pub async fn asset(uri: http::Uri) -> Response {
    serve(uri.path().strip_prefix("/docs/").unwrap_or(""))
}

fn serve(file: &str) -> Response {
    match utoipa_swagger_ui::serve(file, config()) {
        Ok(Some(found)) => {
            let mut body = found.bytes.into_owned();
            if found.content_type.starts_with("text/html") {
                // The page links its files relatively; anchor them under /docs/ so the page
                // also works at /docs (no trailing slash).
                body = String::from_utf8_lossy(&body)
                    .replacen("<head>", "<head><base href=\"/docs/\">", 1)
                    .into_bytes();
            }
            let content_type = HeaderValue::from_str(&found.content_type)
                .unwrap_or(HeaderValue::from_static("application/octet-stream"));
            ([(header::CONTENT_TYPE, content_type)], body).into_response()
        }
        Ok(None) => ApiError::NotFound(Missing::Route(format!("/docs/{file}"))).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "cannot serve the API reference page");
            ApiError::InternalError.into_response()
        }
    }
}
