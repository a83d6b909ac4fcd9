//! The OpenAPI 3.1 document: its paths come from the route table (each route's
//! `#[utoipa::path]` annotation), its schemas from the response types and its error codes
//! from [`crate::error::ApiError`], so it cannot drift from what the service does.

use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::path::{ParameterBuilder, ParameterIn, Paths};
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::openapi::security::{
    ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme,
};
use utoipa::openapi::RefOr;
use utoipa::{Modify, OpenApi};

use super::table::Schemas;

/// What the document says beyond its paths.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "floodgate",
        description = "An HTTP compute service with a bounded worker pool, rate limiting, Prometheus metrics and OTLP traces. Every response carries `X-Request-ID`; every error is the JSON envelope `Envelope`.",
        license(name = "MIT", identifier = "MIT"),
    ),
    components(schemas(super::error::Envelope)),
    tags(
        (name = "compute", description = "The compute API: rate limited, timed out and, when configured, authenticated."),
        (name = "jobs", description = "API v2: durable jobs, committed to a database before they are acknowledged; admitted like the compute API. With authentication on, a job belongs to the principal that submitted it: its idempotency key, its reading, cancelling, listing and events are that principal's alone, and another principal's job is 404 `NOT_FOUND` as if it did not exist; a token with the `jobs:admin` scope, or a principal listed in `auth.admin_principals`, sees every job. With authentication off, every job is visible."),
        (name = "streams", description = "API v2: live statistics and job progress over WebSocket (and server-sent events); at most `streams.max_connections` open at once, and apart from them `streams.max_operational_connections` of the status page's."),
        (name = "health", description = "Liveness, readiness and health checks."),
        (name = "metrics", description = "Request statistics and the Prometheus exposition."),
        (name = "docs", description = "This document and its browser view."),
        (name = "status", description = "A live status page for a browser, served with the operational routes."),
    ),
)]
pub struct ApiDoc;

/// The document as served at `/openapi.json`, with `paths` from the route table: security
/// requirements and the 401/403 responses appear only when authentication is on, so the
/// document describes this deployment exactly.
pub fn document(
    (paths, schemas): (Paths, Schemas),
    auth_enabled: bool,
) -> utoipa::openapi::OpenApi {
    let mut doc = ApiDoc::openapi();
    doc.paths = paths;
    let components = doc.components.get_or_insert_with(Default::default);
    components.schemas.extend(schemas);
    Common.modify(&mut doc);
    for item in doc.paths.paths.values_mut() {
        for op in [&mut item.get, &mut item.post, &mut item.delete]
            .into_iter()
            .flatten()
        {
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

/// The document as served: JSON, with `max_rounds` as the documented bound of a job's rounds.
pub fn document_json(
    (paths, schemas): (Paths, Schemas),
    auth_enabled: bool,
    max_rounds: u64,
) -> bytes::Bytes {
    let doc = document((paths, schemas), auth_enabled);
    let mut value = serde_json::to_value(&doc).expect("the document serializes");
    for item in value["paths"]
        .as_object_mut()
        .into_iter()
        .flat_map(|p| p.values_mut())
    {
        for op in item
            .as_object_mut()
            .into_iter()
            .flat_map(|o| o.values_mut())
        {
            let responses = op.get_mut("responses").and_then(|r| r.as_object_mut());
            for response in responses.into_iter().flat_map(|r| r.values_mut()) {
                let links = response.get_mut("links").and_then(|l| l.as_object_mut());
                for link in links.into_iter().flat_map(|l| l.values_mut()) {
                    rename_link_fields(link);
                }
            }
        }
    }
    for schema in ["SubmitJob", "BatchJob"] {
        let Some(job) = value.pointer_mut(&format!("/components/schemas/{schema}")) else {
            continue;
        };
        if let Some(rounds) = job.pointer_mut("/properties/rounds") {
            rounds["maximum"] = max_rounds.into();
        }
        // One of `run_at` and `delay`: utoipa has no attribute for a rule across fields.
        job["not"] = serde_json::json!({
            "required": ["run_at", "delay"],
            "properties": {"run_at": {"type": "string"}, "delay": {"type": "string"}},
        });
    }
    serde_json::to_vec(&value)
        .expect("the document serializes")
        .into()
}

/// utoipa writes a link's fields in Rust's spelling; OpenAPI spells them in camel case.
fn rename_link_fields(link: &mut serde_json::Value) {
    let Some(fields) = link.as_object_mut() else {
        return;
    };
    for (from, to) in [
        ("operation_id", "operationId"),
        ("operation_ref", "operationRef"),
        ("request_body", "requestBody"),
    ] {
        if let Some(v) = fields.remove(from) {
            fields.insert(to.to_owned(), v);
        }
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
    use std::collections::BTreeSet;

    use super::*;
    use crate::http::routes;
    use crate::http::table::{RouteTable, Surface, UNMATCHED};

    fn doc(auth: bool) -> utoipa::openapi::OpenApi {
        document(RouteTable::new(&routes::builtin()).paths(), auth)
    }

    #[test]
    fn every_route_but_profiling_is_documented_and_nothing_else() {
        let specs = routes::builtin();
        let table = RouteTable::new(&specs);
        let d = doc(false);
        let documented: Vec<&str> = d.paths.paths.keys().map(String::as_str).collect();
        for spec in &specs {
            if spec.surface != Surface::Admin && spec.path == spec.label {
                assert!(
                    documented.contains(&spec.path),
                    "{} is not in the document",
                    spec.path
                );
            }
        }
        for path in documented {
            let label = table.label(table.classify(path));
            assert_ne!(label.template, UNMATCHED, "{path} is not a route");
        }
    }

    #[test]
    fn every_operation_is_documented_at_its_routes_method_and_path() {
        let specs = routes::builtin();
        let served: BTreeSet<(String, &str)> = specs
            .iter()
            .filter(|spec| spec.doc.is_some())
            .map(|spec| (spec.method.as_str().to_lowercase(), spec.path))
            .collect();
        let d = serde_json::to_value(doc(false)).unwrap();
        let documented: BTreeSet<(String, &str)> = d["paths"]
            .as_object()
            .unwrap()
            .iter()
            .flat_map(|(path, item)| {
                let methods = item.as_object().unwrap().keys();
                methods.map(move |method| (method.clone(), path.as_str()))
            })
            .collect();
        assert_eq!(documented, served);
    }

    #[test]
    fn every_operation_carries_a_declared_tag() {
        let d = serde_json::to_value(doc(false)).unwrap();
        let declared: Vec<&str> = d["tags"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["name"].as_str().unwrap())
            .collect();
        for (path, item) in d["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                let tags = op["tags"].as_array();
                let tag = tags.and_then(|t| t.first()).and_then(|t| t.as_str());
                assert!(
                    tag.is_some_and(|t| declared.contains(&t)),
                    "{method} {path} has tags {:?}",
                    op["tags"]
                );
            }
        }
        assert_eq!(
            d["paths"]["/api/v2/stats/stream"]["get"]["tags"][0],
            "streams"
        );
    }

    #[test]
    fn links_use_the_specification_field_names() {
        let json: serde_json::Value = serde_json::from_slice(&document_json(
            RouteTable::new(&routes::builtin()).paths(),
            false,
            77,
        ))
        .unwrap();
        let link = &json["paths"]["/api/v2/jobs"]["post"]["responses"]["202"]["links"]["GetJob"];
        assert_eq!(link["operationId"], "get_job", "{link}");
        assert!(link.get("operation_id").is_none());
        let rounds = &json["components"]["schemas"]["SubmitJob"]["properties"]["rounds"];
        assert_eq!(rounds["maximum"], 77, "{rounds}");
    }

    #[test]
    fn security_is_documented_only_when_authentication_is_on() {
        let off = serde_json::to_value(doc(false)).unwrap();
        let op = &off["paths"]["/api/v1/compute/fast"]["post"];
        assert!(op.get("security").is_none());
        assert!(op["responses"].get("401").is_none());
        let on = serde_json::to_value(doc(true)).unwrap();
        let op = &on["paths"]["/api/v1/compute/fast"]["post"];
        assert_eq!(op["security"].as_array().unwrap().len(), 2, "{op}");
        assert!(on["components"]["securitySchemes"].get("bearer").is_some());
        assert!(on["paths"]["/health"]["get"].get("security").is_none());
    }

    #[test]
    fn compute_routes_document_every_error_with_its_headers() {
        let json = serde_json::to_value(doc(true)).unwrap();
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
        assert_eq!(
            codes.as_array().unwrap().len(),
            crate::error::ErrorCode::all().count()
        );
    }
}
