//! The OpenAPI 3.1 document: generated from the handlers' `#[utoipa::path]` annotations, the
//! response types' schemas and [`ApiError`], so it cannot drift from what the service does.

use std::collections::BTreeMap;
use std::time::Duration;

use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::path::{ParameterBuilder, ParameterIn};
use utoipa::openapi::response::ResponseBuilder;
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::openapi::security::{
    ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme,
};
use utoipa::openapi::{ContentBuilder, RefOr, Response};
use utoipa::{IntoResponses, Modify, OpenApi};

use crate::error::ApiError;
use crate::routes::{compute, docs, health, metrics};

/// The document's source: every route and the schemas they use.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "floodgate",
        description = "An HTTP compute service with a bounded worker pool, rate limiting, Prometheus metrics and OTLP traces. Every response carries `X-Request-ID`; every error is the JSON envelope `Envelope`.",
        license(name = "MIT", identifier = "MIT"),
    ),
    paths(
        compute::fast,
        compute::compute,
        compute::intensive,
        health::health,
        health::live,
        health::ready,
        metrics::metrics,
        metrics::prometheus,
        metrics::stats,
        docs::openapi_json,
        docs::docs,
    ),
    components(schemas(crate::error::Envelope)),
    modifiers(&Common),
    tags(
        (name = "compute", description = "The compute API: rate limited, timed out and, when configured, authenticated."),
        (name = "health", description = "Liveness, readiness and health checks."),
        (name = "metrics", description = "Request statistics and the Prometheus exposition."),
        (name = "docs", description = "This document and its browser view."),
    ),
)]
pub struct ApiDoc;

/// The document as served at `/openapi.json`: security requirements and the 401/403
/// responses appear only when authentication is on, so the document describes this
/// deployment exactly.
pub fn document(auth_enabled: bool) -> utoipa::openapi::OpenApi {
    let mut doc = ApiDoc::openapi();
    for item in doc.paths.paths.values_mut() {
        for op in [&mut item.get, &mut item.post].into_iter().flatten() {
            if auth_enabled {
                // Required: drop the empty alternative the annotations carry.
                if let Some(requirements) = &mut op.security {
                    requirements.retain(|r| *r != SecurityRequirement::default());
                }
            } else {
                op.security = None;
                op.responses
                    .responses
                    .retain(|status, _| status != "401" && status != "403");
            }
        }
    }
    if !auth_enabled {
        if let Some(components) = &mut doc.components {
            components.security_schemes.clear();
        }
    }
    doc
}

/// The error responses of the compute routes, each with the envelope and its headers.
pub struct ComputeErrors;

impl IntoResponses for ComputeErrors {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        let retry = Duration::from_secs(1);
        let errors = [
            (
                ApiError::InvalidRequest(String::new()),
                "the body is not `{\"number\": n}` with `n` an integer in 0..=1000000",
            ),
            (
                ApiError::Unauthorized {
                    reason: "",
                    invalid: false,
                },
                "authentication is on and the credential is missing or invalid",
            ),
            (
                ApiError::Forbidden(String::new()),
                "the token lacks the required scope",
            ),
            (
                ApiError::Timeout,
                "the request took longer than the request timeout",
            ),
            (
                ApiError::PayloadTooLarge(0),
                "the body is larger than the limit",
            ),
            (
                ApiError::UnsupportedMediaType,
                "`Content-Type` is not `application/json`",
            ),
            (
                ApiError::RateLimited { retry_after: retry },
                "over the rate limit; retry after `Retry-After` seconds",
            ),
            (
                ApiError::Overloaded { retry_after: retry },
                "the job queue is full; retry after `Retry-After` seconds",
            ),
            (
                ApiError::Processing(String::new()),
                "the job failed (`PROCESSING_ERROR`) or the service hit a bug (`INTERNAL_ERROR`)",
            ),
        ];
        errors
            .iter()
            .map(|(err, why)| {
                let status = err.status();
                let mut response = ResponseBuilder::new()
                    .description(format!("`{}`: {why}.", err.code()))
                    .content(
                        "application/json",
                        ContentBuilder::new()
                            .schema(Some(RefOr::Ref(utoipa::openapi::Ref::from_schema_name(
                                "Envelope",
                            ))))
                            .build(),
                    );
                if matches!(status.as_u16(), 429 | 503) {
                    response = response.header(
                        "Retry-After",
                        HeaderBuilder::new()
                            .schema(
                                ObjectBuilder::new()
                                    .schema_type(Type::Integer)
                                    .minimum(Some(1)),
                            )
                            .description(Some("Seconds to wait before retrying."))
                            .build(),
                    );
                }
                if matches!(status.as_u16(), 401 | 403) {
                    response = response.header(
                        "WWW-Authenticate",
                        HeaderBuilder::new()
                            .schema(ObjectBuilder::new().schema_type(Type::String))
                            .description(Some("The RFC 6750 Bearer challenge."))
                            .build(),
                    );
                }
                (status.as_str().to_owned(), RefOr::T(response.build()))
            })
            .collect()
    }
}

/// What every operation shares: the request-ID header both ways, and the security schemes.
struct Common;

impl Modify for Common {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("An API key, or a JWT (HS256, RS256 or ES256)."))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "api_key",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("X-API-Key"))),
        );
        for item in doc.paths.paths.values_mut() {
            let operations = [
                &mut item.get,
                &mut item.post,
                &mut item.put,
                &mut item.delete,
                &mut item.patch,
            ];
            for op in operations.into_iter().flatten() {
                op.parameters.get_or_insert_with(Vec::new).push(
                    ParameterBuilder::new()
                        .name("X-Request-ID")
                        .parameter_in(ParameterIn::Header)
                        .description(Some(
                            "Echoed when 1-128 visible ASCII characters; otherwise replaced by a UUID.",
                        ))
                        .schema(Some(ObjectBuilder::new().schema_type(Type::String)))
                        .build(),
                );
                for response in op.responses.responses.values_mut() {
                    if let RefOr::T(response) = response {
                        response.headers.insert(
                            "X-Request-ID".to_owned(),
                            HeaderBuilder::new()
                                .schema(ObjectBuilder::new().schema_type(Type::String))
                                .description(Some("The request's ID."))
                                .build(),
                        );
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routes::Route;

    #[test]
    fn every_route_is_documented_and_nothing_else() {
        let doc = document(false);
        let documented: Vec<&str> = doc.paths.paths.keys().map(String::as_str).collect();
        for route in Route::ALL {
            if route.documented() {
                assert!(
                    documented.contains(&route.template()),
                    "{} is not in the document",
                    route.template()
                );
            }
        }
        for path in documented {
            assert_ne!(
                Route::from_path(path),
                Route::Unmatched,
                "{path} is not a route"
            );
        }
    }

    #[test]
    fn security_is_documented_only_when_authentication_is_on() {
        let off = serde_json::to_value(document(false)).unwrap();
        let op = &off["paths"]["/api/v1/compute/fast"]["post"];
        assert!(op.get("security").is_none());
        assert!(op["responses"].get("401").is_none());
        let on = serde_json::to_value(document(true)).unwrap();
        let op = &on["paths"]["/api/v1/compute/fast"]["post"];
        assert_eq!(op["security"].as_array().unwrap().len(), 2, "{op}");
        assert!(on["components"]["securitySchemes"].get("bearer").is_some());
        assert!(on["paths"]["/health"]["get"].get("security").is_none());
    }

    #[test]
    fn compute_routes_document_every_error_with_its_headers() {
        let json = serde_json::to_value(document(true)).unwrap();
        let responses = &json["paths"]["/api/v1/compute/intensive"]["post"]["responses"];
        for status in [
            "200", "400", "401", "403", "408", "413", "415", "429", "500", "503",
        ] {
            assert!(responses.get(status).is_some(), "{status} missing");
            assert!(responses[status]["headers"].get("X-Request-ID").is_some());
        }
        assert!(responses["429"]["headers"].get("Retry-After").is_some());
        assert!(responses["401"]["headers"]
            .get("WWW-Authenticate")
            .is_some());
        let codes = &json["components"]["schemas"]["Envelope"]["properties"]["code"]["enum"];
        assert_eq!(codes.as_array().unwrap().len(), ApiError::CODES.len());
    }
}
