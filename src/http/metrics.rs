//! Prometheus metrics: the request layer that counts every answer by its route template,
//! and `GET /metrics`, served on its own listener (`METRICS_BIND_ADDR`) so that it is never
//! reachable on the API port. What is recorded, and the names, live in
//! [`crate::app::telemetry`].

use std::sync::{Arc, OnceLock};

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::error::AuditFailure;
use super::state::AppState;
use crate::app::Services;

/// Where the policy layer writes the matched route's template, for the request counter
/// outside it to read (it runs before routing, and still answers when a timeout dropped the
/// inner future).
#[derive(Clone, Default)]
pub struct RouteSlot(Arc<OnceLock<&'static str>>);

impl RouteSlot {
    pub fn set(&self, template: &'static str) {
        let _ = self.0.set(template);
    }
}

/// Count the answer by route template, method and status; note a 503 `Audit log
/// unavailable`.
pub async fn count_request(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    if !state.metrics.is_exported() {
        return next.run(request).await;
    }
    let slot = RouteSlot::default();
    request.extensions_mut().insert(slot.clone());
    let method = method_label(request.method());
    let response = next.run(request).await;
    let route = slot.0.get().copied().unwrap_or("unmatched");
    state
        .metrics
        .request(route, method, response.status().as_u16());
    if response.extensions().get::<AuditFailure>().is_some() {
        state.metrics.audit_append_failed();
    }
    response
}

/// A method as a label: the standard ones by name, anything else as `other` (a client may
/// send any token as a method, and each would be a new series).
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// The metrics listener's whole service: `GET /metrics`, 404 elsewhere.
pub fn router(services: &Services) -> Router {
    Router::new()
        .route("/metrics", get(scrape))
        .with_state(services.clone())
}

/// `GET /metrics`: the Prometheus text exposition (version 0.0.4).
async fn scrape(State(services): State<Services>) -> Response {
    let snapshot = services.metrics_snapshot().await;
    match services.metrics().render(&snapshot) {
        Some(text) => (
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_methods_share_one_label() {
        let custom = Method::from_bytes(b"TOKENLEDGER").expect("method");
        assert_eq!(method_label(&custom), "other");
        assert_eq!(method_label(&Method::POST), "POST");
    }
}
