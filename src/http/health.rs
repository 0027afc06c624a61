//! Liveness and readiness, for load balancers and orchestrators.

use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;

use super::error::ApiError;
use super::policy::path;
use super::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route(path::HEALTHZ, get(healthz))
        .route(path::READYZ, get(readyz))
}

/// `{"status": "ok"}`.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Liveness {
    /// Always `ok`.
    status: &'static str,
}

/// Where each projection stands: the last position folded into it.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ProjectionHeads {
    tokens: u64,
    audit_logs: u64,
}

/// Ready: the database answers and both projections are at the head.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Ready {
    /// Always `ready`.
    status: &'static str,
    head: u64,
    projections: ProjectionHeads,
}

/// Not ready: `error` says why; `head` and `projections` when the database answered.
#[derive(Serialize, utoipa::ToSchema)]
pub struct NotReady {
    error: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    head: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    projections: Option<ProjectionHeads>,
}

/// Liveness: the process answers.
#[utoipa::path(get, path = path::HEALTHZ, tag = "health",
    responses((status = 200, description = "the process answers", body = Liveness)))]
pub(super) async fn healthz() -> Json<Liveness> {
    Json(Liveness { status: "ok" })
}

/// Ready when the database answers and both projections have reached the head (waiting up to
/// two seconds for them).
#[utoipa::path(get, path = path::READYZ, tag = "health", responses(
    (status = 200, description = "ready", body = Ready),
    (status = 503, description = "the database does not answer, or the projections are catching up", body = NotReady),
))]
pub(super) async fn readyz(State(state): State<AppState>) -> Result<Response, ApiError> {
    let r = state
        .queries
        .readiness(Duration::from_secs(2))
        .await
        .map_err(|e| {
            tracing::warn!(error = ?e, "not ready: database unreachable");
            ApiError::Unavailable("Database")
        })?;
    let projections = ProjectionHeads {
        tokens: r.tokens,
        audit_logs: r.audit_logs,
    };
    Ok(if r.ready() {
        Json(Ready {
            status: "ready",
            head: r.head,
            projections,
        })
        .into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(NotReady {
                error: "Projections are catching up".into(),
                head: Some(r.head),
                projections: Some(projections),
            }),
        )
            .into_response()
    })
}
