//! The OpenAPI 3.1 document of the JSON API: served at `GET /openapi.json`, printed by
//! `tokenledger openapi`, committed as `docs/openapi.json`.
//!
//! Operations come from `#[utoipa::path]` beside each handler, and schemas from the very types
//! the handlers answer with. Who may call an operation is not repeated there: its security and
//! the refusals that access brings (400, 401, 403, 429, 503, and 404 while a switch is off) are
//! added here from the route policy table, the one place access is declared, so the document
//! cannot say something the router does not do. Pages that answer HTML are left out.

use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::path::Operation;
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::openapi::security::{
    ApiKey, ApiKeyValue, Http, HttpAuthScheme, SecurityRequirement, SecurityScheme,
};
use utoipa::openapi::{ContentBuilder, Ref, RefOr, ResponseBuilder};
use utoipa::{Modify, OpenApi};

use super::error::ErrorBody;
use super::policy::{self, Access, Route};
use super::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new().route(policy::path::OPENAPI, get(openapi_json))
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "tokenledger",
        description = "Event-sourced, audit-first machine-to-machine API tokens. Every error \
            answer is `{\"error\": \"...\"}`; every answer carries an `x-request-id`."
    ),
    paths(
        super::admin_page::index,
        super::health::healthz,
        super::health::readyz,
        super::checkpoint::latest,
        openapi_json,
        super::console::console,
        super::verify::verify,
        super::rotate_self::rotate_self,
        super::leaks::github,
        super::leaks::report,
        super::admin_api::list,
        super::admin_api::create,
        super::admin_api::stale,
        super::admin_api::revoke,
        super::admin_api::rotate,
        super::admin_api::timeline,
        super::admin_api::incident,
        super::admin_api::audit,
    ),
    // Types named only by parameters are not collected on their own.
    components(schemas(ErrorBody, Environment, Order)),
    modifiers(&FromPolicy)
)]
struct ApiDoc;

/// The document as served and committed: pretty JSON and a final newline.
pub fn document() -> String {
    let mut text = ApiDoc::openapi()
        .to_pretty_json()
        .unwrap_or_else(|e| unreachable!("the document is plain data: {e}"));
    text.push('\n');
    text
}

/// This document (OpenAPI 3.1).
#[utoipa::path(get, path = policy::path::OPENAPI, operation_id = "openapi_document", tag = "health",
    responses((status = 200, description = "the OpenAPI 3.1 document", content_type = "application/json", body = Object)))]
pub(super) async fn openapi_json() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], document())
}

/// A token environment, as the list's `environment` parameter takes it.
#[derive(utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
#[expect(
    dead_code,
    reason = "a schema only: the parameter is parsed by the extractor"
)]
pub(super) enum Environment {
    Live,
    Test,
}

/// A page's order, as the `order` parameters take it.
#[derive(utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
#[expect(
    dead_code,
    reason = "a schema only: the parameter is parsed by the extractor"
)]
pub(super) enum Order {
    NewestFirst,
    OldestFirst,
}

/// Security and access refusals, from the route policy table.
struct FromPolicy;

const API_TOKEN: &str = "api_token";
const SESSION_BEARER: &str = "admin_session";
const SESSION_COOKIE: &str = "admin_session_cookie";

impl Modify for FromPolicy {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            API_TOKEN,
            SecurityScheme::Http(
                Http::builder()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "An API token (`tl_test_...`) in `Authorization: Bearer <token>`, \
                         holding the scopes the operation names; exactly one Authorization header.",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            SESSION_BEARER,
            SecurityScheme::Http(
                Http::builder()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some(
                        "An admin's Clerk session JWT in `Authorization: Bearer <session JWT>` \
                         (`tokenledger dev-session --sub you --role admin` makes a development \
                         one). API tokens are refused.",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            SESSION_COOKIE,
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::with_description(
                "__session",
                "The same session in the `__session` cookie; a state-changing request must \
                 then carry a same-origin `Origin` header.",
            ))),
        );
        for (path, item) in doc.paths.paths.iter_mut() {
            let Some(route) = policy::route(path) else {
                // The test of the document names such a path; the router would answer 500.
                continue;
            };
            let operations = [
                &mut item.get,
                &mut item.post,
                &mut item.put,
                &mut item.delete,
                &mut item.patch,
            ];
            for operation in operations.into_iter().flatten() {
                apply(route, operation);
            }
        }
    }
}

/// One operation's summary, security and access refusals.
fn apply(route: &Route, operation: &mut Operation) {
    operation.summary = Some(route.summary.to_owned());
    // The timeout layer is around every route.
    refusal(
        operation,
        408,
        "the request was not answered within REQUEST_TIMEOUT (a slow body, most likely)",
    );
    if let Some(switch) = route.switch {
        refusal(
            operation,
            404,
            &format!("the route is off: {}", switch.when_off()),
        );
    }
    match route.access {
        Access::Public => {}
        Access::ApiToken {
            any_of,
            tokens_switch,
        } => {
            operation.security = Some(vec![SecurityRequirement::new(
                API_TOKEN,
                Vec::<String>::new(),
            )]);
            refusal(
                operation,
                400,
                "more than one Authorization header, or one that is not text",
            );
            let disabled = tokens_switch
                .map(|s| {
                    format!(
                        ", API token authentication is disabled ({} is not true)",
                        s.variable()
                    )
                })
                .unwrap_or_default();
            refusal(
                operation,
                401,
                &format!(
                    "missing credentials, a malformed, unknown, revoked or expired token, one of the other environment, or a scheme other than Bearer{disabled}"
                ),
            );
            refusal(
                operation,
                403,
                &format!(
                    "the token lacks every one of {}, or the client address is outside its allowlist",
                    crate::scope::Scope::alternatives(any_of)
                ),
            );
            too_many(operation);
            refusal(
                operation,
                503,
                "the audit log is unavailable: the use could not be recorded, so nothing ran",
            );
        }
        Access::SessionOrApiToken { any_of } => {
            operation.security = Some(vec![
                SecurityRequirement::new(SESSION_BEARER, Vec::<String>::new()),
                SecurityRequirement::new(SESSION_COOKIE, Vec::<String>::new()),
                SecurityRequirement::new(API_TOKEN, Vec::<String>::new()),
            ]);
            refusal(
                operation,
                400,
                "more than one Authorization header, or one that is not text",
            );
            refusal(
                operation,
                401,
                "no credentials; an invalid or expired session; a malformed, unknown, revoked or expired token, or one of the other environment",
            );
            refusal(
                operation,
                403,
                &format!(
                    "the session is not an admin's, or a cookie-authenticated change without a same-origin Origin; or the token lacks every one of {}, or the client address is outside its allowlist",
                    crate::scope::Scope::alternatives(any_of)
                ),
            );
            too_many(operation);
            if let Some(RefOr::T(r)) = operation.responses.responses.get_mut("429") {
                r.description = format!("{}, or too many calls from this caller", r.description);
            }
            refusal(
                operation,
                503,
                "admin sign-in is not configured or its keys cannot be fetched, or the audit log is unavailable: nothing was recorded",
            );
        }
        Access::Session => {
            operation.security = Some(vec![
                SecurityRequirement::new(SESSION_BEARER, Vec::<String>::new()),
                SecurityRequirement::new(SESSION_COOKIE, Vec::<String>::new()),
            ]);
            refusal(
                operation,
                400,
                "more than one Authorization header, or one that is not text",
            );
            refusal(
                operation,
                401,
                "no session, an invalid or expired one, or an API token (not accepted here)",
            );
            refusal(
                operation,
                403,
                "the session is not an admin's, or a cookie-authenticated change without a same-origin Origin",
            );
            too_many(operation);
            refusal(
                operation,
                503,
                "admin sign-in is not configured, its keys cannot be fetched, or the log or a view is unavailable",
            );
        }
    }
}

/// Add `status` with an `ErrorBody`, or widen the description of the one the handler names.
fn refusal(operation: &mut Operation, status: u16, why: &str) {
    let responses = &mut operation.responses.responses;
    let key = status.to_string();
    if let Some(RefOr::T(existing)) = responses.get_mut(&key) {
        existing.description = format!("{}; or {why}", existing.description);
        return;
    }
    let response = ResponseBuilder::new()
        .description(why)
        .content(
            "application/json",
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("ErrorBody")))
                .build(),
        )
        .build();
    responses.insert(key, RefOr::T(response));
}

/// 429 with `Retry-After`.
fn too_many(operation: &mut Operation) {
    let response = ResponseBuilder::new()
        .description("too many failed authentications from this client address")
        .header(
            "Retry-After",
            HeaderBuilder::new()
                .schema(ObjectBuilder::new().schema_type(Type::Integer))
                .description(Some("seconds until the next attempt may succeed"))
                .build(),
        )
        .content(
            "application/json",
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("ErrorBody")))
                .build(),
        )
        .build();
    operation
        .responses
        .responses
        .insert("429".into(), RefOr::T(response));
}

/// The documented operations as `(METHOD, path)`, for tests.
pub fn operations() -> Vec<(String, String)> {
    let doc: serde_json::Value =
        serde_json::from_str(&document()).unwrap_or_else(|e| unreachable!("our own JSON: {e}"));
    let mut out = Vec::new();
    if let Some(paths) = doc["paths"].as_object() {
        for (path, item) in paths {
            for method in item.as_object().into_iter().flat_map(|m| m.keys()) {
                out.push((method.to_uppercase(), path.clone()));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_documented_path_has_a_policy_row_and_is_openapi_3_1() {
        let doc: serde_json::Value = serde_json::from_str(&document()).expect("JSON");
        assert_eq!(doc["openapi"], "3.1.0");
        let mut ids: Vec<&str> = doc["paths"]
            .as_object()
            .expect("paths")
            .values()
            .flat_map(|item| item.as_object().expect("path item").values())
            .map(|op| {
                op["operationId"]
                    .as_str()
                    .expect("every operation has an id")
            })
            .collect();
        let all = ids.len();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), all, "operation ids are unique");
        for (method, path) in operations() {
            let route = policy::route(&path)
                .unwrap_or_else(|| panic!("{method} {path} is documented but has no policy row"));
            assert!(
                route.methods.split(',').any(|m| m == method),
                "{method} {path} is documented, but the policy table answers {}",
                route.methods
            );
        }
    }

    #[test]
    fn every_reference_names_a_schema_of_the_document() {
        fn walk(value: &serde_json::Value, refs: &mut Vec<String>) {
            match value {
                serde_json::Value::Object(map) => {
                    if let Some(serde_json::Value::String(r)) = map.get("$ref") {
                        refs.push(r.clone());
                    }
                    map.values().for_each(|v| walk(v, refs));
                }
                serde_json::Value::Array(items) => items.iter().for_each(|v| walk(v, refs)),
                _ => {}
            }
        }
        let doc: serde_json::Value = serde_json::from_str(&document()).expect("JSON");
        let mut refs = Vec::new();
        walk(&doc, &mut refs);
        assert!(!refs.is_empty());
        for r in refs {
            let name = r
                .strip_prefix("#/components/schemas/")
                .unwrap_or_else(|| panic!("{r} is not a schema reference"));
            assert!(
                doc["components"]["schemas"].get(name).is_some(),
                "{r} is referenced but not in components.schemas"
            );
        }
    }
}
