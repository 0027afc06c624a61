//! Liveness and readiness, for load balancers and orchestrators.

use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};

use super::error::ApiError;
use super::policy::path;
use super::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route(path::HEALTHZ, get(healthz))
        .route(path::READYZ, get(readyz))
}

async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// Ready when the database answers and both projections have reached the head (waiting up to
/// two seconds for them).
async fn readyz(State(state): State<AppState>) -> Result<Response, ApiError> {
    let r = state
        .queries
        .readiness(Duration::from_secs(2))
        .await
        .map_err(|e| {
            tracing::warn!(error = ?e, "not ready: database unreachable");
            ApiError::Unavailable("Database")
        })?;
    let projections = json!({"tokens": r.tokens, "audit_logs": r.audit_logs});
    Ok(if r.ready() {
        Json(json!({"status": "ready", "head": r.head, "projections": projections})).into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"error": "Projections are catching up", "head": r.head, "projections": projections})),
        )
            .into_response()
    })
}
