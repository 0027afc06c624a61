//! The HTTP edge (axum). Data flows one way: tower-http layers (request id, trace span) ->
//! the policy layer (the route's switch and access, from [`policy`]) -> an extractor ->
//! a handler that makes one call into [`crate::app`] and maps the result. Nothing here
//! touches the store, and nothing but the composition root (`crate::server`) imports it.
//!
//! # Layout
//!
//! - `policy`: the route table, its access and switches, and the console commands.
//! - `extract`: `AppJson`, `Bearer`, `ClientIp`, `ApiCaller`, `AdminSession`; the policy layer.
//! - `error`: the one `ApiError`, its statuses and texts.
//! - `state`: `AppState`.
//! - `health`, `console`, `verify`, `leaks`, `admin_api`, `admin_page`: the handlers, each
//!   module with its own `router()`.
//! - `metrics`: the request counter layer, and `GET /metrics` for the metrics listener.
//! - `openapi`: the OpenAPI document of the JSON routes, from the handlers' annotations and
//!   the policy table.

mod admin_api;
mod admin_page;
mod checkpoint;
pub mod console;
pub mod error;
pub mod extract;
mod guard;
mod health;
pub mod leaks;
pub mod metrics;
pub mod openapi;
pub mod policy;
pub mod rotate_self;
pub mod state;
pub mod verify;

use axum::Router;
use axum::body::HttpBody as _;
use axum::extract::{DefaultBodyLimit, Request};
use axum::http::{HeaderName, StatusCode};
use axum::response::{IntoResponse as _, Response};
use tower_http::request_id::{
    MakeRequestId, PropagateRequestIdLayer, RequestId, SetRequestIdLayer,
};
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::{DefaultOnResponse, TraceLayer};
use tracing::Level;

pub use admin_page::incident_document;
pub use error::{ApiError, BODY_LIMIT};
pub use state::AppState;

use crate::app::Services;

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The whole service: every module's routes behind the policy layer, then the request id,
/// trace span and body limit that every answer shares.
pub fn router(services: &Services) -> Router {
    let state = AppState::new(services);
    Router::new()
        .merge(health::router())
        .merge(checkpoint::router())
        .merge(openapi::router())
        .merge(console::router())
        .merge(verify::router())
        .merge(rotate_self::router())
        .merge(leaks::router())
        .merge(admin_api::router())
        .merge(admin_page::router())
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            extract::apply_policy,
        ))
        .fallback(|| async { ApiError::NotFound })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        // Inside the request id, so that a 408 carries one. Handlers read bodies inside their
        // futures, so this bounds a slow body too.
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            services.request_timeout,
        ))
        .layer(axum::middleware::map_response(timeout_as_json))
        // Outside the timeout, so that a 408 is counted too (under the route it matched).
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            metrics::count_request,
        ))
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(|request: &Request| {
                    let id = request
                        .extensions()
                        .get::<RequestId>()
                        .and_then(|id| id.header_value().to_str().ok())
                        .unwrap_or_default();
                    tracing::info_span!(
                        "request",
                        request_id = id,
                        method = %request.method(),
                        path = ?crate::token::redact(request.uri().path()),
                    )
                })
                .on_request(())
                .on_response(DefaultOnResponse::new().level(Level::INFO)),
        )
        .layer(SetRequestIdLayer::new(REQUEST_ID, NewRequestId))
        // The id is ours: one a client sent would be logged as if it were.
        .layer(axum::middleware::map_request(
            |mut request: Request| async move {
                request.headers_mut().remove(REQUEST_ID);
                request
            },
        ))
        .with_state(state)
}

/// tower-http's timeout answers 408 with an empty body; every error here is JSON.
async fn timeout_as_json(response: Response) -> Response {
    if response.status() == StatusCode::REQUEST_TIMEOUT
        && response.body().size_hint().exact() == Some(0)
    {
        return ApiError::RequestTimeout.into_response();
    }
    response
}

/// A UUIDv7 per request: unique across nodes and sortable by time.
#[derive(Clone, Copy)]
struct NewRequestId;

impl MakeRequestId for NewRequestId {
    fn make_request_id<B>(&mut self, _: &axum::http::Request<B>) -> Option<RequestId> {
        uuid::Uuid::now_v7()
            .to_string()
            .parse()
            .ok()
            .map(RequestId::new)
    }
}
